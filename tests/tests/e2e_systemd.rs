//! systemd's side of the notify protocol, played by the test: the messages
//! a `Type=notify-reload` unit gets from `xalb run`, in their order.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use xalb_tests::admin::admin_post;
use xalb_tests::bed::{http_config, HttpBed, FORWARD_WEB, WEB_GROUP};
use xalb_tests::daemon::Daemon;

/// The next message that is not a watchdog ping; pings are counted.
fn next(sock: &UnixDatagram, pings: &mut u32) -> String {
    let mut buf = [0u8; 512];
    loop {
        let n = sock.recv(&mut buf).expect("a message from xalb");
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        if msg == "WATCHDOG=1" {
            *pings += 1;
        } else {
            return msg;
        }
    }
}

#[test]
fn ready_reloading_watchdog_and_stopping_reach_systemd_in_order() {
    let bed = HttpBed::new(&http_config("60s", WEB_GROUP, FORWARD_WEB)).unwrap();
    let _web = bed.backend(11, 80, "web-1").unwrap();
    let path = bed.config.with_extension("notify");
    let _ = std::fs::remove_file(&path);
    let sock = UnixDatagram::bind(&path).unwrap();
    // A bound on the wait for each message, so that a missing one fails by
    // name rather than hanging CI.
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let d = Daemon::spawn_with_env(
        &bed.lb,
        &bed.config,
        &["--log-format", "json"],
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            // A ping every half second.
            ("WATCHDOG_USEC", "1000000"),
        ],
    )
    .unwrap()
    .ready()
    .unwrap();
    let mut pings = 0;
    assert_eq!(
        next(&sock, &mut pings),
        format!("READY=1\nMAINPID={}\nSTATUS=serving", d.pid())
    );
    // The watchdog is pinged while it runs.
    while pings < 2 {
        let mut buf = [0u8; 64];
        let n = sock.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");
        pings += 1;
    }
    // A reload by signal and one by the admin endpoint: each announced,
    // then ready again.
    let pid = d.pid().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    let reloaded = |pings: &mut u32| {
        let reloading = next(&sock, pings);
        assert!(
            reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
            "{reloading}"
        );
        let ready = next(&sock, pings);
        assert!(ready.starts_with("READY=1\n"), "{ready}");
    };
    reloaded(&mut pings);
    assert_eq!(admin_post(&bed, "/reload").status, 200);
    reloaded(&mut pings);
    // Application logs as JSON, one object per line, as journald or a log
    // shipper takes them.
    let line = d
        .wait_stderr(Duration::from_secs(30), |l| l.contains("xalb running"))
        .unwrap();
    let log: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(log["level"], "INFO", "{line}");
    assert_eq!(log["fields"]["message"], "xalb running", "{line}");
    assert_eq!(log["fields"]["admin"], "127.0.0.1:9901", "{line}");
    d.stop().unwrap();
    assert_eq!(next(&sock, &mut pings), "STOPPING=1");
    let _ = std::fs::remove_file(&path);
}

/// `/ready` answers 200 while xalb serves and 503 from the moment a
/// shutdown begins, while the requests in flight finish.
#[test]
fn ready_turns_503_as_soon_as_a_shutdown_begins() {
    use xalb_tests::admin::wait_for;
    use xalb_tests::bed::ADMIN;
    use xalb_tests::http::{get, in_ns};
    let bed = HttpBed::new(&http_config("60s", WEB_GROUP, FORWARD_WEB)).unwrap();
    let web1 = bed.backend(11, 80, "web-1").unwrap();
    let web2 = bed.backend(12, 80, "web-2").unwrap();
    let d = Daemon::start(&bed.lb, &bed.config, &[]).unwrap();
    let ready = || {
        in_ns(&bed.lb, async || {
            get(ADMIN.parse().unwrap(), "/ready", &[])
                .await
                .map(|r| r.status)
        })
        .unwrap()
    };
    assert_eq!(ready().unwrap(), 200);
    // A request in flight keeps the shutdown going for a few seconds.
    let slow = slow_request_then_sigterm(&bed, [&web1, &web2], 3000, &d);
    wait_for(
        "/ready to say 503",
        Duration::from_secs(10),
        || match ready() {
            Ok(503) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    assert_eq!(
        slow.join().unwrap().unwrap(),
        200,
        "the request in flight finished"
    );
    let (ok, log) = d.wait_exit().unwrap();
    assert!(ok, "{log}");
}

/// logrotate's way: the file is moved, SIGUSR1 makes xalb open the path
/// again. Under a stream of requests no line is lost: every request is in
/// the old file or the new one.
#[test]
fn sigusr1_reopens_the_access_log_and_loses_no_line() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
    use std::sync::Arc;
    use xalb_tests::admin::wait_for;
    use xalb_tests::bed::lb;
    use xalb_tests::http::Client;
    let dir = std::env::temp_dir().join(format!("xalb-logrotate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("access.log");
    let rotated = dir.join("access.log.1");
    let extra = format!(
        "{WEB_GROUP}\n[access_log]\nenabled = true\npath = {:?}\n",
        log.display().to_string()
    );
    let bed = HttpBed::new(&http_config("60s", &extra, FORWARD_WEB)).unwrap();
    let _web1 = bed.backend(11, 80, "web-1").unwrap();
    let _web2 = bed.backend(12, 80, "web-2").unwrap();
    let d = Daemon::start(&bed.lb, &bed.config, &[]).unwrap();
    let (done, stop) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let (done2, stop2) = (done.clone(), stop.clone());
    // Kept-alive requests, one after another, at most 50,000.
    let load = bed
        .client
        .spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async move {
                    let mut c = Client::connect(lb(), false).await.unwrap();
                    let mut failed = 0;
                    while !stop2.load(SeqCst) && done2.load(SeqCst) < 50_000 {
                        match c.get("/rotate", &[]).await {
                            Ok(r) if r.status == 200 => {
                                done2.fetch_add(1, SeqCst);
                            }
                            _ => failed += 1,
                        }
                    }
                    failed
                })
        })
        .unwrap();
    let reach = |n: u64| {
        wait_for(&format!("{n} requests"), Duration::from_secs(60), || {
            let d = done.load(SeqCst);
            (d >= n).then_some(()).ok_or_else(|| format!("{d}"))
        })
    };
    reach(200);
    std::fs::rename(&log, &rotated).unwrap();
    assert!(std::process::Command::new("kill")
        .args(["-USR1", &d.pid().to_string()])
        .status()
        .unwrap()
        .success());
    d.wait_stderr(Duration::from_secs(30), |l| {
        l.contains("access log reopened")
    })
    .unwrap();
    reach(done.load(SeqCst) + 200);
    stop.store(true, SeqCst);
    assert_eq!(load.join().unwrap(), 0, "requests failed");
    let total = done.load(SeqCst);
    let lines = |p: &std::path::Path| {
        std::fs::read_to_string(p)
            .map(|t| t.lines().count() as u64)
            .unwrap_or(0)
    };
    wait_for("every request logged", Duration::from_secs(30), || {
        let (old, new) = (lines(&rotated), lines(&log));
        (old + new == total)
            .then_some(())
            .ok_or_else(|| format!("{old} + {new} of {total}"))
    });
    assert!(lines(&rotated) >= 200 && lines(&log) >= 200);
    d.stop().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--shutdown-grace`: a request still in flight when it ends is cut off,
/// where the default grace (10 s, the /ready test above) lets it finish.
#[test]
fn a_short_shutdown_grace_cuts_off_a_slow_request() {
    let bed = HttpBed::new(&http_config("60s", WEB_GROUP, FORWARD_WEB)).unwrap();
    let web1 = bed.backend(11, 80, "web-1").unwrap();
    let web2 = bed.backend(12, 80, "web-2").unwrap();
    let d = Daemon::start(&bed.lb, &bed.config, &["--shutdown-grace", "1"]).unwrap();
    // Five seconds at the target, four past the grace.
    let slow = slow_request_then_sigterm(&bed, [&web1, &web2], 5000, &d);
    let (ok, log) = d.wait_exit().unwrap();
    assert!(ok, "{log}");
    let cut = slow.join().unwrap();
    assert!(cut.is_err(), "the request outlived the grace: {cut:?}");
}

/// A request that takes `ms` at its target, sent from the client; once a
/// target has it, SIGTERM to `d`. Its status, or why it failed.
fn slow_request_then_sigterm(
    bed: &HttpBed,
    targets: [&xalb_tests::http::Backend; 2],
    ms: u64,
    d: &Daemon,
) -> std::thread::JoinHandle<anyhow::Result<u16>> {
    use xalb_tests::admin::wait_for;
    use xalb_tests::bed::lb;
    use xalb_tests::http::get;
    let slow = bed
        .client
        .spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async move {
                    get(lb(), &format!("/sleep?ms={ms}"), &[])
                        .await
                        .map(|r| r.status)
                })
        })
        .unwrap();
    wait_for(
        "the slow request at a target",
        Duration::from_secs(10),
        || {
            (targets.iter().map(|t| t.requests()).sum::<u64>() >= 1)
                .then_some(())
                .ok_or_else(|| "not yet".to_string())
        },
    );
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &d.pid().to_string()])
        .status()
        .unwrap()
        .success());
    slow
}
