//! Kept-alive connections move off a worker that gets little of its CPU.
//!
//! A test binary of its own: it takes one CPU away from xalb's worker 1 with
//! a busy process for a few seconds, which would slow any test running
//! beside it.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use xalb_tests::admin::{admin_get, per_worker_metric, spawn_in};
use xalb_tests::bed::{http_config, lb, HttpBed, FORWARD_WEB, WEB_GROUP};
use xalb_tests::daemon::worker_cpus;
use xalb_tests::http::Client;

/// Client connections, each sending one request after another.
const CONNECTIONS: usize = 16;

/// How long the load runs with the busy loop, and again without it.
const PHASE: Duration = Duration::from_secs(4);

/// A busy loop on one CPU, at a priority above xalb's; killed when dropped.
struct Hog(Child);

impl Hog {
    fn on(cpu: &str) -> Self {
        let child = Command::new("nice")
            .args([
                "-n",
                "-10",
                "taskset",
                "-c",
                cpu,
                "sh",
                "-c",
                "while :; do :; done",
            ])
            .spawn()
            .expect("start the busy loop");
        Hog(child)
    }
}

impl Drop for Hog {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn connections_move_off_whichever_worker_is_short_of_cpu_and_no_request_is_lost() {
    let bed = HttpBed::new(&http_config("3s", WEB_GROUP, FORWARD_WEB)).unwrap();
    let _a = bed.backend(11, 80, "a").unwrap();
    let _b = bed.backend(12, 80, "b").unwrap();
    let d = bed.start().unwrap();
    let cpus = worker_cpus(d.pid());
    let cpu_of = |worker: &str| {
        cpus.iter()
            .find(|(name, _)| name == worker)
            .map(|(_, cpu)| cpu.clone())
            .filter(|cpu| cpu.parse::<usize>().is_ok())
            .unwrap_or_else(|| panic!("needs two pinned workers (two CPUs): {cpus:?}"))
    };
    let (cpu_0, cpu_1) = (cpu_of("xalb-worker-0"), cpu_of("xalb-worker-1"));
    let hog = Hog::on(&cpu_1);
    // Every connection sends requests back to back: four seconds with the
    // busy loop on worker 1's CPU, four with it on worker 0's. The
    // connections stay open while the metrics are read after each phase.
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let (go_tx, go_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let load = spawn_in(&bed.client, async move || {
        let mut go_rx = go_rx;
        let mut conns = Vec::new();
        for _ in 0..CONNECTIONS {
            conns.push(Client::connect(lb(), false).await.unwrap());
        }
        let mut statuses = Vec::new();
        for _phase in 0..2 {
            let until = Instant::now() + PHASE;
            let tasks: Vec<_> = conns
                .drain(..)
                .map(|mut c| {
                    tokio::spawn(async move {
                        let mut seen = Vec::new();
                        while Instant::now() < until {
                            seen.push(c.get("/", &[]).await.map(|r| r.status).unwrap_or(0));
                        }
                        (seen, c)
                    })
                })
                .collect();
            for t in tasks {
                let (seen, c) = t.await.unwrap();
                statuses.extend(seen);
                conns.push(c);
            }
            let _ = done_tx.send(());
            let _ = go_rx.recv().await;
        }
        statuses
    });
    let text =
        |bed: &HttpBed| String::from_utf8_lossy(&admin_get(bed, "/metrics").body).into_owned();
    let metrics = |bed: &HttpBed| {
        let text = text(bed);
        (
            per_worker_metric(&text, "xalb_worker_active_connection_count", lb()),
            per_worker_metric(&text, "xalb_worker_moved_connection_count", lb()),
        )
    };
    done_rx.recv().expect("the load ran");
    drop(hog);
    let (open_hogged, moved_hogged) = metrics(&bed);
    let hog = Hog::on(&cpu_0);
    let _ = go_tx.send(());
    done_rx.recv().expect("the load ran on");
    drop(hog);
    let (open_after, moved_after) = metrics(&bed);
    // The listener's own counts: a moved connection is neither a new one
    // nor counted twice.
    let listener = text(&bed);
    let total = |name: &str| -> f64 {
        listener
            .lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let (active, new) = (
        total("xalb_active_connection_count"),
        total("xalb_new_connection_count_total"),
    );
    let _ = go_tx.send(());
    let statuses = load.join().unwrap();
    eprintln!(
        "busy loop on worker 1's CPU: open {open_hogged:?}, moved {moved_hogged:?}; \
         then on worker 0's: open {open_after:?}, moved {moved_after:?}"
    );
    let bad: Vec<&u16> = statuses.iter().filter(|&&s| s != 200).collect();
    assert!(
        bad.is_empty(),
        "{} of {} requests failed: {:?}",
        bad.len(),
        statuses.len(),
        &bad[..bad.len().min(10)]
    );
    assert_eq!((active, new), (CONNECTIONS as f64, CONNECTIONS as f64));
    // Each per-worker family's samples stand together, as the text format
    // wants, over both of the balancer's addresses.
    for name in [
        "xalb_worker_active_connection_count{",
        "xalb_worker_moved_connection_count{",
    ] {
        let at: Vec<usize> = listener
            .lines()
            .enumerate()
            .filter(|(_, l)| l.starts_with(name))
            .map(|(i, _)| i)
            .collect();
        assert!(
            at.len() >= 4 && at.windows(2).all(|w| w[1] == w[0] + 1),
            "{name} samples not together:\n{listener}"
        );
    }
    assert_eq!(open_hogged.iter().sum::<usize>(), CONNECTIONS);
    assert_eq!(open_after.iter().sum::<usize>(), CONNECTIONS);
    // Worker 1, short of CPU, gave connections to worker 0 but kept a few
    // (four) to measure its pace by.
    assert!(
        moved_hogged.get(1).is_some_and(|&n| n >= 3),
        "moved off each worker: {moved_hogged:?}, open: {open_hogged:?}"
    );
    assert!(
        open_hogged[0] >= 2 * open_hogged[1] && open_hogged[1] >= 1,
        "open per worker: {open_hogged:?}"
    );
    // Then worker 0 is the one short of CPU: worker 1's few connections are
    // served faster than its many, and connections go the other way. How
    // many depends on how the client, itself on the other CPU, keeps up.
    assert!(
        moved_after[0] >= moved_hogged[0] + 2,
        "moved off each worker: {moved_after:?}, open: {open_after:?}"
    );
    assert!(
        open_after[1] >= open_hogged[1] + 2,
        "open per worker: {open_after:?} (was {open_hogged:?})"
    );
}
