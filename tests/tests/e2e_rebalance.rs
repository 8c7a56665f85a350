//! Kept-alive connections move off a worker that gets little of its CPU.
//!
//! A test binary of its own, ignored by default: it takes one CPU away from
//! xalb's worker 1 with a busy process, which would slow any test running
//! beside it, and what it checks depends on the host. The rebalancer only
//! compares workers that serve at least 2,000 requests a second between
//! them, so the client must keep that pace beside the busy loop on a host
//! with at least two CPUs and nothing else running. Run it alone:
//! `cargo test -p xalb-tests --test e2e_rebalance -- --ignored`.
//!
//! No phase has a fixed length: each runs until the metrics show the
//! connections moved (or a generous limit says they did not).

use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use xalb_tests::admin::{admin_get, per_worker_metric, spawn_in, wait_for};
use xalb_tests::bed::{http_config, lb, HttpBed, FORWARD_WEB, WEB_GROUP};
use xalb_tests::daemon::worker_cpus;
use xalb_tests::http::Client;

/// Client connections, each sending one request after another.
const CONNECTIONS: usize = 16;

/// How long a phase may take to show the move it waits for: a safety net.
const PHASE_LIMIT: Duration = Duration::from_secs(60);

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
#[ignore = "needs the host to itself: a CPU hog, two CPUs and 2,000 requests/s beside it; run alone with --ignored"]
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
    // Every connection sends requests back to back in two phases: with the
    // busy loop on worker 1's CPU, then on worker 0's. Each phase ends when
    // the test says so; the connections stay open in between.
    let stop = [
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    ];
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let (go_tx, go_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let load = spawn_in(&bed.client, {
        let stop = stop.clone();
        async move || {
            let mut go_rx = go_rx;
            let mut conns = Vec::new();
            for _ in 0..CONNECTIONS {
                conns.push(Client::connect(lb(), false).await.unwrap());
            }
            let mut statuses = Vec::new();
            for phase in stop {
                let tasks: Vec<_> = conns
                    .drain(..)
                    .map(|mut c| {
                        let phase = phase.clone();
                        tokio::spawn(async move {
                            let mut seen = Vec::new();
                            while !phase.load(Ordering::Relaxed) {
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
        }
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
    let at = |v: &[usize], i: usize| v.get(i).copied().unwrap_or(0);

    // Worker 1, short of CPU, gives connections to worker 0 but keeps a few
    // (four) to measure its pace by.
    let hog = Hog::on(&cpu_1);
    wait_for(
        "worker 1, short of CPU, to pass connections to worker 0",
        PHASE_LIMIT,
        || {
            let (open, moved) = metrics(&bed);
            if at(&moved, 1) >= 3 && at(&open, 0) >= 2 * at(&open, 1) && at(&open, 1) >= 1 {
                Ok(())
            } else {
                Err(format!("open {open:?}, moved {moved:?}"))
            }
        },
    );
    stop[0].store(true, Ordering::Relaxed);
    done_rx.recv().expect("the load ran");
    drop(hog);
    let (open_hogged, moved_hogged) = metrics(&bed);

    // Then worker 0 is the one short of CPU: connections go the other way.
    let hog = Hog::on(&cpu_0);
    let _ = go_tx.send(());
    wait_for(
        "worker 0, now short of CPU, to pass connections back",
        PHASE_LIMIT,
        || {
            let (open, moved) = metrics(&bed);
            if at(&moved, 0) >= at(&moved_hogged, 0) + 2 && at(&open, 1) >= at(&open_hogged, 1) + 2
            {
                Ok(())
            } else {
                Err(format!(
                    "open {open:?}, moved {moved:?} (after the first phase: open \
                     {open_hogged:?}, moved {moved_hogged:?})"
                ))
            }
        },
    );
    stop[1].store(true, Ordering::Relaxed);
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
}
