//! Target health end to end (issue 4): states and reasons as the ALB shows
//! them, `describe-target-health`, failover with no client-visible error,
//! fail-open, metrics after known traffic, and graceful shutdown; and (issue
//! 20) a new target healthy after one check, groups no listener uses left
//! unchecked as `unused`, groups with checks disabled `unavailable`. Real
//! client, real `xalb run` with XDP attached, real backends, each in its own
//! namespace.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use xalb_tests::admin::{admin_get, spawn_in, targets, wait_for, Row};
use xalb_tests::bed::{lb, HttpBed, ADMIN};
use xalb_tests::http::{get, in_ns, raw, Client, Reply};

/// A balancer with one HTTP listener on port 80, extra sections appended.
fn config(extra: &str, default_action: &str) -> String {
    xalb_tests::bed::http_config("3s", extra, default_action)
}

const FORWARD_WEB: &str = r#"{ type = "forward", target_group = "web" }"#;

/// A target group on port 80 with the fastest checks the contract allows:
/// every 5 s, 2 s timeout, 2 to turn healthy again, 2 to turn unhealthy (a new
/// target turns healthy on its first pass). Targets are 10.231.2.`host`.
fn group(name: &str, hosts: &[u8]) -> String {
    let targets: Vec<String> = hosts
        .iter()
        .map(|h| format!(r#"{{ address = "10.231.2.{h}" }}"#))
        .collect();
    format!(
        r#"
[[target_group]]
name = "{name}"
protocol = "HTTP"
port = 80
targets = [{}]

[target_group.health_check]
interval = "5s"
timeout = "2s"
healthy_threshold = 2
unhealthy_threshold = 2
"#,
        targets.join(", ")
    )
}

fn row<'a>(rows: &'a [Row], address: &str) -> &'a Row {
    rows.iter()
        .find(|r| r.address == address)
        .unwrap_or_else(|| panic!("no target {address} in {rows:#?}"))
}

fn state_of(rows: &[Row], address: &str) -> (String, String) {
    let r = row(rows, address);
    (r.state.clone(), r.reason.clone())
}

/// Waits until every (address, state) holds in `/targets`.
fn wait_states(bed: &HttpBed, limit: Duration, want: &[(&str, &str)]) -> Vec<Row> {
    wait_for("target states", limit, || {
        let rows = targets(bed, "");
        let ok = want
            .iter()
            .all(|(a, s)| rows.iter().any(|r| r.address == *a && r.state == *s));
        if ok {
            Ok(rows)
        } else {
            Err(format!("{rows:#?}"))
        }
    })
}

/// One request of a load run: when it started, how it was sent, and the
/// status and answering backend (`x-backend`), or the error.
#[derive(Debug)]
struct Sample {
    at: Instant,
    #[allow(dead_code)] // read through Debug, in failure messages
    how: &'static str,
    /// (status, x-backend, body if not 200), or the error.
    result: Result<(u16, String, String), String>,
}

/// What a load sample keeps of a reply.
fn summary(r: Result<Reply, anyhow::Error>) -> Result<(u16, String, String), String> {
    r.map(|r| {
        let body = if r.status == 200 {
            String::new()
        } else {
            String::from_utf8_lossy(&r.body).into_owned()
        };
        (r.status, backend_of(&r), body)
    })
    .map_err(|e| format!("{e:#}"))
}

fn backend_of(r: &Reply) -> String {
    r.headers
        .get("x-backend")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// Sends GET `/` alternately on a fresh connection and on one kept-alive
/// connection (reopened if it breaks, which is recorded as an error) until
/// `stop`, or for at most `limit`.
async fn load(stop: Arc<AtomicBool>, out: Arc<Mutex<Vec<Sample>>>, limit: Duration) {
    let end = Instant::now() + limit;
    let mut kept: Option<Client> = None;
    while !stop.load(Ordering::Relaxed) && Instant::now() < end {
        let at = Instant::now();
        let result = summary(get(lb(), "/", &[]).await);
        out.lock().unwrap().push(Sample {
            at,
            how: "fresh connection",
            result,
        });
        let at = Instant::now();
        let result = async {
            if kept.is_none() {
                kept = Some(Client::connect(lb(), false).await?);
            }
            kept.as_mut().unwrap().get("/", &[]).await
        }
        .await;
        let result = summary(result);
        if result.is_err() {
            kept = None;
        }
        out.lock().unwrap().push(Sample {
            at,
            how: "kept-alive connection",
            result,
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Six GETs of `/` on one kept-alive connection: each reply's status and
/// the backend that answered it.
fn six_gets(bed: &HttpBed) -> Vec<(u16, String)> {
    in_ns(&bed.client, async || {
        let mut c = Client::connect(lb(), false).await.unwrap();
        let mut out = Vec::new();
        for _ in 0..6 {
            let r = c.get("/", &[]).await.unwrap();
            out.push((r.status, backend_of(&r)));
        }
        out
    })
    .unwrap()
}

/// The value of one series (`name{labels}`) in a Prometheus text exposition.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

#[test]
fn states_and_reasons_as_the_alb_and_describe_target_health() {
    // .11 answers 200, .12 answers 500, nothing listens on .13, .14 answers
    // after 3 s (past the 2 s timeout).
    let bed = HttpBed::new(&config(&group("web", &[11, 12, 13, 14]), FORWARD_WEB)).unwrap();
    let ok = bed.backend(11, 80, "ok").unwrap();
    let fail = bed.backend(12, 80, "fail-1").unwrap();
    let slow = bed.backend(14, 80, "slow-1").unwrap();
    let d = bed.start().unwrap();
    // What a row may say given the checks its target got so far (counted on
    // arrival, so read after the rows: at least every check recorded in
    // them). A new target is healthy after one pass and unhealthy after two
    // failures (unhealthy_threshold 2); while initial, whatever its checks
    // said, its reason is the initial one. .13 has no backend to count its
    // checks: only the last rule applies to it.
    let counted: [(&str, &xalb_tests::http::Backend); 3] = [
        ("10.231.2.11", &ok),
        ("10.231.2.12", &fail),
        ("10.231.2.14", &slow),
    ];
    let consistent = |rows: &[Row]| {
        let checks: Vec<(&str, u64)> = counted.iter().map(|(a, b)| (*a, b.checks())).collect();
        for r in rows {
            let checks = checks.iter().find(|(a, _)| *a == r.address).map(|c| c.1);
            assert_eq!((r.target_group.as_str(), r.port), ("web", 80), "{r:?}");
            match (r.state.as_str(), checks) {
                ("initial", _) => {
                    assert_eq!(
                        (r.reason.as_str(), r.description.as_str()),
                        (
                            "Elb.InitialHealthChecking",
                            "Initial health checks in progress"
                        ),
                        "an initial target keeps the initial reason whatever its checks said \
                         ({checks:?} checks): {r:?}"
                    );
                }
                ("healthy", Some(n)) => assert!(
                    r.address == "10.231.2.11" && n >= 1,
                    "healthy after {n} checks: {r:?}"
                ),
                ("unhealthy", Some(n)) => assert!(
                    r.address != "10.231.2.11" && n >= 2,
                    "unhealthy after {n} checks, before two failed: {r:?}"
                ),
                ("unhealthy", None) => {}
                _ => panic!("unexpected state ({checks:?} checks): {r:?}"),
            }
        }
    };

    let rows = targets(&bed, "");
    assert_eq!(rows.len(), 4, "{rows:#?}");
    consistent(&rows);

    // One failed check leaves a new target initial, with the initial reason
    // (the ALB shows no failure reason before the state changes). Seen on
    // .14: its second check's arrival says its first (a timeout) was
    // recorded, and the second is recorded only when it times out, 2 s later.
    wait_checks(&slow, 2, Duration::from_secs(30));
    let rows = targets(&bed, "");
    consistent(&rows);
    assert_eq!(
        state_of(&rows, "10.231.2.14"),
        ("initial".into(), "Elb.InitialHealthChecking".into()),
        "one timed-out check of two; the second is still running: {rows:#?}"
    );

    // Every row stays consistent with its checks until the states settle.
    let rows = wait_for(
        "the states after two checks",
        Duration::from_secs(60),
        || {
            let rows = targets(&bed, "");
            consistent(&rows);
            let settled = [
                ("10.231.2.11", "healthy"),
                ("10.231.2.12", "unhealthy"),
                ("10.231.2.13", "unhealthy"),
                ("10.231.2.14", "unhealthy"),
            ]
            .iter()
            .all(|(a, s)| row(&rows, a).state == *s);
            if settled {
                Ok(rows)
            } else {
                Err(format!("{rows:#?}"))
            }
        },
    );
    let ok = row(&rows, "10.231.2.11");
    assert_eq!((ok.reason.as_str(), ok.description.as_str()), ("", ""));
    let fail = row(&rows, "10.231.2.12");
    assert_eq!(fail.reason, "Target.ResponseCodeMismatch", "{fail:?}");
    assert!(fail.description.contains("500"), "{fail:?}");
    assert_eq!(
        row(&rows, "10.231.2.13").reason,
        "Target.FailedHealthChecks",
        "nothing listens: {rows:#?}"
    );
    assert_eq!(
        row(&rows, "10.231.2.14").reason,
        "Target.Timeout",
        "answers after the timeout: {rows:#?}"
    );

    // Only the healthy target takes requests.
    let answered = six_gets(&bed);
    assert!(
        answered.iter().all(|a| *a == (200, "ok".to_string())),
        "{answered:?}"
    );

    // The same through the filter, and an unknown group has no rows.
    let filtered = targets(&bed, "?target_group=web");
    assert_eq!(filtered.len(), 4, "{filtered:#?}");
    assert!(targets(&bed, "?target_group=nope").is_empty());

    // describe-target-health prints it as a table.
    let out = bed
        .lb
        .command(xalb_tests::xalb_bin())
        .args(["describe-target-health", "--target-group", "web"])
        .args(["--admin", ADMIN])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{:?}: {stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 5, "a header and four targets:\n{stdout}");
    for col in ["TARGET", "PORT", "STATE", "REASON", "DESCRIPTION"] {
        assert!(lines[0].contains(col), "header: {}", lines[0]);
    }
    let now = targets(&bed, "");
    for r in &now {
        let line = lines
            .iter()
            .find(|l| l.split_whitespace().next() == Some(r.address.as_str()))
            .unwrap_or_else(|| panic!("no line for {}:\n{stdout}", r.address));
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(words[1], "80", "{line}");
        assert_eq!(words[2], r.state, "{line}");
        if !r.reason.is_empty() {
            assert_eq!(words[3], r.reason, "{line}");
        }
        assert!(line.contains(&r.description), "{line}");
    }
    for (addr, state, reason) in [
        ("10.231.2.12", "unhealthy", "Target.ResponseCodeMismatch"),
        ("10.231.2.13", "unhealthy", "Target.FailedHealthChecks"),
        ("10.231.2.14", "unhealthy", "Target.Timeout"),
    ] {
        let line = lines.iter().find(|l| l.starts_with(addr)).unwrap();
        assert!(
            line.contains(state) && line.contains(reason),
            "{line}\n{stdout}"
        );
    }
    let healthy = lines.iter().find(|l| l.starts_with("10.231.2.11")).unwrap();
    assert!(healthy.contains("healthy"), "{healthy}");

    let unknown = bed
        .lb
        .command(xalb_tests::xalb_bin())
        .args(["describe-target-health", "--target-group", "nope"])
        .args(["--admin", ADMIN])
        .output()
        .unwrap();
    assert_eq!(
        unknown.status.code(),
        Some(1),
        "unknown group: {:?} {}",
        unknown.status,
        String::from_utf8_lossy(&unknown.stdout)
    );
    let err = String::from_utf8_lossy(&unknown.stderr);
    assert!(err.contains("nope"), "names the group: {err}");
    drop(d);
}

#[test]
fn failover_without_client_visible_errors_and_recovery() {
    let bed = HttpBed::new(&config(&group("web", &[11, 12]), FORWARD_WEB)).unwrap();
    let _a = bed.backend(11, 80, "a").unwrap();
    let b = bed.backend(12, 80, "b").unwrap();
    let d = bed.start().unwrap();
    wait_states(
        &bed,
        Duration::from_secs(30),
        &[("10.231.2.11", "healthy"), ("10.231.2.12", "healthy")],
    );

    let stop = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(Mutex::new(Vec::new()));
    let client = spawn_in(&bed.client, {
        let (stop, samples) = (stop.clone(), samples.clone());
        async move || load(stop, samples, Duration::from_secs(300)).await
    });
    // Served by both, on fresh and kept-alive connections, before b fails.
    wait_for(
        "both targets to answer the load",
        Duration::from_secs(30),
        || {
            let s = samples.lock().unwrap();
            let by = |n: &str| {
                s.iter()
                    .filter(|s| matches!(&s.result, Ok((200, b, _)) if b == n))
                    .count()
            };
            if by("a") >= 10 && by("b") >= 10 {
                Ok(())
            } else {
                Err(format!("a answered {}, b {}", by("a"), by("b")))
            }
        },
    );
    // b goes away mid-load: its listener and connections close.
    drop(b);
    let dropped = Instant::now();
    let rows = wait_states(
        &bed,
        Duration::from_secs(30),
        &[("10.231.2.12", "unhealthy")],
    );
    // Failed requests count against b between checks: the passive path
    // turned it unhealthy (it logs that change; a check that does logs
    // "target health changed" instead), not two scheduled checks.
    let passive = d
        .wait_stderr(Duration::from_secs(30), |l| {
            (l.contains("target unhealthy after failed requests")
                || (l.contains("target health changed") && l.contains("unhealthy")))
                && l.contains("10.231.2.12")
        })
        .expect("a log line for b's change to unhealthy");
    assert!(
        passive.contains("target unhealthy after failed requests"),
        "b turned unhealthy by its checks, not by the failed requests: {passive}"
    );
    // The load goes on for 20 more requests after b is seen unhealthy.
    let seen_unhealthy = Instant::now();
    wait_for(
        "20 requests after b turned unhealthy",
        Duration::from_secs(30),
        || {
            let n = samples
                .lock()
                .unwrap()
                .iter()
                .filter(|s| s.at > seen_unhealthy)
                .count();
            if n >= 20 {
                Ok(())
            } else {
                Err(format!("{n} so far"))
            }
        },
    );
    stop.store(true, Ordering::Relaxed);
    client.join().unwrap();

    let samples = std::mem::take(&mut *samples.lock().unwrap());
    let failed: Vec<String> = samples
        .iter()
        .filter(|s| s.result.as_ref().map_or(true, |(st, _, _)| *st != 200))
        .map(|s| {
            let since_drop = if s.at >= dropped {
                (s.at - dropped).as_secs_f64()
            } else {
                -(dropped - s.at).as_secs_f64()
            };
            format!(
                "{since_drop:+.4}s after the drop, {}: {:?}",
                s.how, s.result
            )
        })
        .collect();
    if !failed.is_empty() {
        // The balancer's account of it (RUST_LOG=xalb=debug says more).
        let (_, log) = d.stop().unwrap_or_default();
        let log: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("target") && !l.contains("HTTP listener"))
            .collect();
        panic!(
            "{} of {} requests failed while one healthy target remained:\n{}\nbalancer log:\n{}",
            failed.len(),
            samples.len(),
            failed.join("\n"),
            log.join("\n")
        );
    }
    let before: Vec<&str> = samples
        .iter()
        .filter(|s| s.at < dropped)
        .map(|s| s.result.as_ref().unwrap().1.as_str())
        .collect();
    assert!(
        before.contains(&"a") && before.contains(&"b"),
        "both served before the failure: {before:?}"
    );
    let after: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.at > dropped + Duration::from_millis(50))
        .collect();
    assert!(after.len() >= 20, "{} requests after the drop", after.len());
    assert!(
        after.iter().all(|s| s.result.as_ref().unwrap().1 == "a"),
        "only a answers after b is gone: {after:#?}"
    );
    assert_eq!(
        state_of(&rows, "10.231.2.12"),
        ("unhealthy".into(), "Target.FailedHealthChecks".into()),
        "{rows:#?}"
    );
    assert_eq!(state_of(&rows, "10.231.2.11").0, "healthy");

    // b comes back at the same address: healthy again after two checks (the
    // healthy threshold: it is past its initial checks), and it takes
    // requests again.
    let _b = bed.backend(12, 80, "b").unwrap();
    wait_states(&bed, Duration::from_secs(30), &[("10.231.2.12", "healthy")]);
    let names = in_ns(&bed.client, async || {
        let mut c = Client::connect(lb(), false).await.unwrap();
        let mut out = Vec::new();
        for _ in 0..10 {
            let r = c.get("/", &[]).await.unwrap();
            assert_eq!(r.status, 200);
            out.push(backend_of(&r));
        }
        out
    })
    .unwrap();
    assert_eq!(
        names.iter().filter(|n| *n == "b").count(),
        5,
        "round robin over both again: {names:?}"
    );
    drop(d);
}

#[test]
fn a_group_with_every_target_unhealthy_fails_open() {
    let bed = HttpBed::new(&config(&group("web", &[11, 12]), FORWARD_WEB)).unwrap();
    let _a = bed.backend(11, 80, "fail-a").unwrap();
    let _b = bed.backend(12, 80, "fail-b").unwrap();
    let d = bed.start().unwrap();
    let rows = wait_states(
        &bed,
        Duration::from_secs(30),
        &[("10.231.2.11", "unhealthy"), ("10.231.2.12", "unhealthy")],
    );
    for r in &rows {
        assert_eq!(r.reason, "Target.ResponseCodeMismatch", "{r:?}");
    }
    let replies = in_ns(&bed.client, async || {
        let mut out = Vec::new();
        for _ in 0..6 {
            out.push(get(lb(), "/", &[]).await.unwrap());
        }
        out
    })
    .unwrap();
    let seen: Vec<(u16, String)> = replies.iter().map(|r| (r.status, backend_of(r))).collect();
    for (status, backend) in &seen {
        assert_eq!(
            *status, 500,
            "forwarded to a target (its 500), not refused by the balancer: {seen:?}"
        );
        assert!(backend.starts_with("fail-"), "{seen:?}");
    }
    assert!(
        seen.iter().any(|(_, b)| b == "fail-a") && seen.iter().any(|(_, b)| b == "fail-b"),
        "fail open routes to all targets: {seen:?}"
    );
    let text = String::from_utf8_lossy(&admin_get(&bed, "/metrics").body).into_owned();
    assert_eq!(
        metric(
            &text,
            r#"xalb_httpcode_target_5xx_count_total{load_balancer="edge",target_group="web"}"#
        ),
        Some(6.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            r#"xalb_httpcode_elb_5xx_count_total{load_balancer="edge",listener="edge:80"}"#
        ),
        Some(0.0),
        "{text}"
    );
    drop(d);
}

#[test]
fn metrics_after_known_traffic() {
    let extra = format!(
        r#"{}{}
[[target_group]]
name = "none"
protocol = "HTTP"
port = 80

[[rule]]
listener = "edge:80"
priority = 1
conditions = [{{ field = "path-pattern", values = ["/empty"] }}]
action = {{ type = "forward", target_group = "none" }}

[[rule]]
listener = "edge:80"
priority = 2
conditions = [{{ field = "path-pattern", values = ["/fixed"] }}]
action = {{ type = "fixed-response", status_code = 200, message_body = "fixed" }}

[[rule]]
listener = "edge:80"
priority = 3
conditions = [{{ field = "path-pattern", values = ["/bad"] }}]
action = {{ type = "forward", target_group = "bad" }}
"#,
        group("web", &[11]),
        group("bad", &[12]),
    );
    let bed = HttpBed::new(&config(&extra, FORWARD_WEB)).unwrap();
    let _a = bed.backend(11, 80, "a").unwrap();
    let _f = bed.backend(12, 80, "fail-f").unwrap();
    let d = bed.start().unwrap();
    wait_states(
        &bed,
        Duration::from_secs(30),
        &[("10.231.2.11", "healthy"), ("10.231.2.12", "unhealthy")],
    );

    const N: u64 = 20;
    let (statuses, empty, fixed) = in_ns(&bed.client, async || {
        // One connection for everything: exactly one new connection.
        let mut c = Client::connect(lb(), false).await.unwrap();
        let mut statuses = Vec::new();
        for i in 0..N {
            statuses.push(c.get(&format!("/n{i}"), &[]).await.unwrap().status);
        }
        let empty = c.get("/empty", &[]).await.unwrap();
        let fixed = c.get("/fixed", &[]).await.unwrap();
        (statuses, empty, fixed)
    })
    .unwrap();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(empty.status, 503);
    assert_eq!((fixed.status, &fixed.body[..]), (200, &b"fixed"[..]));

    let r = admin_get(&bed, "/metrics");
    assert_eq!(r.status, 200);
    let text = String::from_utf8_lossy(&r.body).into_owned();
    let listener = r#"{load_balancer="edge",listener="edge:80"}"#;
    let web = r#"{load_balancer="edge",target_group="web"}"#;
    let bad = r#"{load_balancer="edge",target_group="bad"}"#;
    let n = N as f64;
    let expect: Vec<(String, f64)> = vec![
        (format!("xalb_request_count_total{listener}"), n + 2.0),
        (format!("xalb_httpcode_elb_5xx_count_total{listener}"), 1.0),
        (format!("xalb_httpcode_elb_503_count_total{listener}"), 1.0),
        (format!("xalb_httpcode_elb_4xx_count_total{listener}"), 0.0),
        (
            format!("xalb_http_fixed_response_count_total{listener}"),
            1.0,
        ),
        (format!("xalb_http_redirect_count_total{listener}"), 0.0),
        (format!("xalb_new_connection_count_total{listener}"), 1.0),
        (
            format!("xalb_rejected_connection_count_total{listener}"),
            0.0,
        ),
        (format!("xalb_httpcode_target_2xx_count_total{web}"), n),
        (format!("xalb_httpcode_target_5xx_count_total{web}"), 0.0),
        (format!("xalb_target_response_time_seconds_count{web}"), n),
        (format!("xalb_healthy_host_count{web}"), 1.0),
        (format!("xalb_unhealthy_host_count{web}"), 0.0),
        (format!("xalb_healthy_host_count{bad}"), 0.0),
        (format!("xalb_unhealthy_host_count{bad}"), 1.0),
        (format!("xalb_httpcode_target_5xx_count_total{bad}"), 0.0),
    ];
    let wrong: Vec<String> = expect
        .iter()
        .filter_map(|(series, want)| {
            let got = metric(&text, series);
            (got != Some(*want)).then(|| format!("{series}: want {want}, got {got:?}"))
        })
        .collect();
    let allowed = metric(
        &text,
        r#"xalb_xdp_packets_total{load_balancer="edge",reason="pass_allowed"}"#,
    );
    let processed = metric(&text, &format!("xalb_processed_bytes_total{listener}"));
    assert!(
        wrong.is_empty(),
        "metrics after {N} forwarded requests, one 503 from an empty group and one fixed response:\n{}\n\n{text}",
        wrong.join("\n")
    );
    assert!(allowed.is_some_and(|v| v > 0.0), "{text}");
    assert!(processed.is_some_and(|v| v > 0.0), "{text}");
    assert!(
        text.contains("# TYPE xalb_target_response_time_seconds histogram"),
        "{text}"
    );
    drop(d);
}

#[test]
fn processed_bytes_count_each_byte_once_across_the_handoff_to_hyper() {
    let bed = HttpBed::new(&config(&group("web", &[11]), FORWARD_WEB)).unwrap();
    let _a = bed.backend(11, 80, "a").unwrap();
    let d = bed.start().unwrap();
    // The GET is served by the fast path; the POST behind it (read in the
    // same buffer) hands the connection, those bytes included, to hyper.
    let sent = b"GET /one HTTP/1.1\r\nHost: t\r\n\r\n\
POST /two HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc";
    let answer = in_ns(&bed.client, async || raw(lb(), sent).await.unwrap()).unwrap();
    assert_eq!(answer.matches("HTTP/1.1 200").count(), 2, "{answer}");
    let r = admin_get(&bed, "/metrics");
    let text = String::from_utf8_lossy(&r.body).into_owned();
    let listener = r#"{load_balancer="edge",listener="edge:80"}"#;
    let processed = metric(&text, &format!("xalb_processed_bytes_total{listener}"));
    assert_eq!(
        processed,
        Some((sent.len() + answer.len()) as f64),
        "bytes in and out of the one client connection\n{answer}"
    );
    drop(d);
}

#[test]
fn sigterm_finishes_in_flight_requests_and_stops_accepting() {
    // The held request waits for the test, which first waits for the
    // listener to close: an idle timeout (which bounds a target's answer)
    // far longer than that.
    let bed = HttpBed::new(&xalb_tests::bed::http_config(
        "120s",
        &group("web", &[11]),
        FORWARD_WEB,
    ))
    .unwrap();
    let a = bed.backend(11, 80, "a").unwrap();
    let d = bed.start().unwrap();
    // A request a holds until the test lets it answer.
    let held = spawn_in(&bed.client, async || {
        get(lb(), "/hold", &[])
            .await
            .map(|r| (r.status, backend_of(&r)))
            .map_err(|e| format!("{e:#}"))
    });
    wait_for(
        "the held request to reach a",
        Duration::from_secs(30),
        || {
            if a.in_flight() == 1 {
                Ok(())
            } else {
                Err(format!("{} in flight", a.in_flight()))
            }
        },
    );
    // SAFETY: kill with the pid of our own child.
    unsafe { libc::kill(d.pid() as i32, libc::SIGTERM) };
    // The listener closes: a new connection is no longer served.
    wait_for(
        "new connections to be refused after SIGTERM",
        Duration::from_secs(30),
        || {
            let fresh = in_ns(&bed.client, async || {
                get(lb(), "/", &[])
                    .await
                    .map(|r| r.status)
                    .map_err(|e| format!("{e:#}"))
            })
            .unwrap();
            match fresh {
                Err(_) => Ok(()),
                Ok(status) => Err(format!("still served: {status}")),
            }
        },
    );
    // The held request is still in flight, and finishes once a answers.
    assert!(!held.is_finished(), "the held request ended at SIGTERM");
    assert_eq!(a.in_flight(), 1, "the held request is still at a");
    a.release();
    let held = held.join().unwrap();
    let (_, stderr) = d.stop().expect("xalb exits cleanly after SIGTERM");
    let (status, backend) =
        held.unwrap_or_else(|e| panic!("the in-flight request was cut: {e}\n{stderr}"));
    assert_eq!((status, backend.as_str()), (200, "a"), "{stderr}");
}

/// Waits until `backend` has received at least `n` health checks; returns the count.
fn wait_checks(backend: &xalb_tests::http::Backend, n: u64, limit: Duration) -> u64 {
    wait_for(
        &format!("{} to receive {n} health checks", backend.name),
        limit,
        || {
            let c = backend.checks();
            if c >= n {
                Ok(c)
            } else {
                Err(format!("{c} checks"))
            }
        },
    )
}

/// `state` and `reason` of `address` in `/targets`, and its description.
fn health_of(bed: &HttpBed, address: &str) -> (String, String, String) {
    let rows = targets(bed, "");
    let r = row(&rows, address);
    (r.state.clone(), r.reason.clone(), r.description.clone())
}

const NOT_IN_USE: &str = "Target group is not configured to receive traffic from the load balancer";

#[test]
fn a_group_no_listener_uses_is_unused_and_never_checked() {
    // "web" (.11) is the default action's; "spare" (.12) is no rule's.
    let extra = format!("{}{}", group("web", &[11]), group("spare", &[12]));
    let bed = HttpBed::new(&config(&extra, FORWARD_WEB)).unwrap();
    let web = bed.backend(11, 80, "web").unwrap();
    let spare = bed.backend(12, 80, "spare").unwrap();
    let d = bed.start().unwrap();

    // Two checks of the used group: the unused one had as long to be checked.
    wait_checks(&web, 2, Duration::from_secs(30));
    assert_eq!(
        spare.checks(),
        0,
        "no check reaches an unused group's target"
    );
    assert_eq!(
        health_of(&bed, "10.231.2.12"),
        (
            "unused".to_string(),
            "Target.NotInUse".to_string(),
            NOT_IN_USE.to_string()
        )
    );
    assert_eq!(health_of(&bed, "10.231.2.11").0, "healthy");
    let text = String::from_utf8_lossy(&admin_get(&bed, "/metrics").body).into_owned();
    for (series, want) in [
        (
            r#"xalb_target_state_count{load_balancer="",target_group="spare",state="unused"}"#,
            1.0,
        ),
        (
            r#"xalb_target_state_count{load_balancer="",target_group="spare",state="initial"}"#,
            0.0,
        ),
        (
            r#"xalb_target_state_count{load_balancer="edge",target_group="web",state="healthy"}"#,
            1.0,
        ),
        (
            r#"xalb_target_state_count{load_balancer="edge",target_group="web",state="unused"}"#,
            0.0,
        ),
    ] {
        assert_eq!(metric(&text, series), Some(want), "{series}\n{text}");
    }
    let out = bed
        .lb
        .command(xalb_tests::xalb_bin())
        .args(["describe-target-health", "--target-group", "spare"])
        .args(["--admin", ADMIN])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("10.231.2.12"))
        .unwrap_or_else(|| panic!("no line for the target:\n{stdout}"));
    assert!(
        line.contains("unused") && line.contains("Target.NotInUse") && line.contains(NOT_IN_USE),
        "{line}"
    );

    // A reload swaps them: the default action forwards to "spare", and "web"
    // is no rule's. spare starts over in initial and is checked; web is no
    // longer checked and reads unused.
    std::fs::write(
        &bed.config,
        config(&extra, r#"{ type = "forward", target_group = "spare" }"#),
    )
    .unwrap();
    let out = xalb_tests::daemon::cli(&bed.lb)
        .args(["reload", "--admin", ADMIN])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (state, reason, _) = health_of(&bed, "10.231.2.12");
    if state != "healthy" || spare.checks() == 0 {
        assert_eq!(
            (state.as_str(), reason.as_str()),
            ("initial", "Elb.InitialHealthChecking"),
            "a group that becomes used starts in initial"
        );
    }
    assert_eq!(
        health_of(&bed, "10.231.2.11"),
        (
            "unused".to_string(),
            "Target.NotInUse".to_string(),
            NOT_IN_USE.to_string()
        )
    );
    // spare's first check makes it healthy (one pass for a new target). By
    // its second, 5 s later, any check of web sent before the reload has
    // landed; a full interval after that, web has received none.
    wait_checks(&spare, 1, Duration::from_secs(30));
    wait_states(&bed, Duration::from_secs(30), &[("10.231.2.12", "healthy")]);
    wait_checks(&spare, 2, Duration::from_secs(30));
    let web_checks = web.checks();
    wait_checks(&spare, 3, Duration::from_secs(30));
    assert_eq!(web.checks(), web_checks, "an unused group is not checked");
    assert_eq!(health_of(&bed, "10.231.2.11").0, "unused");
    drop(d);
}

#[test]
fn a_group_with_checks_disabled_is_unavailable_and_serves() {
    let extra = r#"
[[target_group]]
name = "web"
protocol = "HTTP"
port = 80
targets = [{ address = "10.231.2.11" }, { address = "10.231.2.12" }]

[target_group.health_check]
enabled = false
"#;
    let bed = HttpBed::new(&config(extra, FORWARD_WEB)).unwrap();
    let a = bed.backend(11, 80, "a").unwrap();
    let b = bed.backend(12, 80, "b").unwrap();
    let d = bed.start().unwrap();
    let rows = targets(&bed, "");
    assert_eq!(rows.len(), 2, "{rows:#?}");
    for r in &rows {
        assert_eq!(
            (r.state.as_str(), r.reason.as_str(), r.description.as_str()),
            (
                "unavailable",
                "Target.HealthCheckDisabled",
                "Health checks are disabled"
            ),
            "{r:?}"
        );
    }
    // Every registered target takes traffic: round robin over both.
    let names = six_gets(&bed);
    let count = |n: &str| names.iter().filter(|x| **x == (200, n.to_string())).count();
    assert_eq!((count("a"), count("b")), (3, 3), "{names:?}");
    assert_eq!((a.requests(), b.requests()), (3, 3));
    assert_eq!((a.checks(), b.checks()), (0, 0), "checks are disabled");
    let text = String::from_utf8_lossy(&admin_get(&bed, "/metrics").body).into_owned();
    assert_eq!(
        metric(
            &text,
            r#"xalb_target_state_count{load_balancer="edge",target_group="web",state="unavailable"}"#
        ),
        Some(2.0),
        "{text}"
    );
    drop(d);
}

/// One target on `hosts`, checked every 20 s with healthy_threshold 10: under
/// the old rule it took 10 passes (over three minutes) to turn healthy.
fn slow_group(hosts: &[u8]) -> String {
    let slow = group("web", hosts)
        .replacen("interval = \"5s\"", "interval = \"20s\"", 1)
        .replacen("\nhealthy_threshold = 2", "\nhealthy_threshold = 10", 1);
    assert!(slow.contains("interval = \"20s\"") && slow.contains("\nhealthy_threshold = 10"));
    slow
}

#[test]
fn a_new_target_is_healthy_after_its_first_check() {
    let bed = HttpBed::new(&config(&slow_group(&[11]), FORWARD_WEB)).unwrap();
    let a = bed.backend(11, 80, "a").unwrap();
    let b = bed.backend(12, 80, "b").unwrap();
    let d = bed.start().unwrap();
    // The first check comes somewhere in the first 20 s; the next one 20 s
    // after it, so the target is healthy while a has seen exactly one.
    wait_checks(&a, 1, Duration::from_secs(45));
    wait_states(&bed, Duration::from_secs(30), &[("10.231.2.11", "healthy")]);
    assert_eq!(a.checks(), 1, "healthy after one check");

    // The same for a target a reload adds.
    std::fs::write(&bed.config, config(&slow_group(&[11, 12]), FORWARD_WEB)).unwrap();
    let out = xalb_tests::daemon::cli(&bed.lb)
        .args(["reload", "--admin", ADMIN])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_checks(&b, 1, Duration::from_secs(45));
    let rows = wait_states(&bed, Duration::from_secs(30), &[("10.231.2.12", "healthy")]);
    assert_eq!(b.checks(), 1, "healthy after one check");
    assert_eq!(
        state_of(&rows, "10.231.2.12"),
        ("healthy".into(), "".into())
    );
    drop(d);
}
