//! Reload without loss (issue 4): `xalb reload` and SIGHUP under load, invalid
//! configurations rejected with `xalb check`'s errors, draining of removed
//! targets with an in-flight request, and the kernel's healthy-backend sets
//! after health changes.

use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use xalb_tests::admin::{admin_post, spawn_in, targets, wait_for};
use xalb_tests::bed::{lb, HttpBed, ADMIN};
use xalb_tests::http::{get, in_ns, Client, Reply};

/// A balancer with one HTTP listener on port 80, extra sections appended.
fn config(extra: &str, default_action: &str) -> String {
    xalb_tests::bed::http_config("10s", extra, default_action)
}

const FORWARD_WEB: &str = r#"{ type = "forward", target_group = "web" }"#;

/// Target group "web" on port 80 with targets 10.231.2.`host`, checks every
/// 5 s (thresholds 2/2) and the given deregistration delay.
fn web(hosts: &[u8], deregistration_delay: &str) -> String {
    let targets: Vec<String> = hosts
        .iter()
        .map(|h| format!(r#"{{ address = "10.231.2.{h}" }}"#))
        .collect();
    format!(
        r#"
[[target_group]]
name = "web"
protocol = "HTTP"
port = 80
deregistration_delay = "{deregistration_delay}"
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

/// A fixed-response rule on `path`.
fn fixed_rule(priority: u32, path: &str, status: u16, body: &str) -> String {
    format!(
        r#"
[[rule]]
listener = "edge:80"
priority = {priority}
conditions = [{{ field = "path-pattern", values = ["{path}"] }}]
action = {{ type = "fixed-response", status_code = {status}, content_type = "text/plain", message_body = "{body}" }}
"#
    )
}

/// `xalb ARGS` inside the balancer's namespace.
fn xalb(bed: &HttpBed, args: &[&str]) -> Output {
    xalb_tests::daemon::cli(&bed.lb)
        .args(args)
        .output()
        .unwrap()
}

fn reload(bed: &HttpBed) -> Output {
    xalb(bed, &["reload", "--admin", ADMIN])
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn backend_of(r: &Reply) -> String {
    r.headers
        .get("x-backend")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// One request of a load run.
#[derive(Debug)]
struct Sample {
    at: Instant,
    path: &'static str,
    #[allow(dead_code)] // read through Debug, in failure messages
    how: &'static str,
    /// (status, x-backend, body), or the error.
    result: Result<(u16, String, String), String>,
}

/// GETs each of `paths` on a fresh connection and on one kept-alive
/// connection (reopened if it breaks, which is recorded as an error), over
/// and over, until `stop` or for at most `limit`.
async fn load(
    stop: Arc<AtomicBool>,
    out: Arc<Mutex<Vec<Sample>>>,
    paths: &'static [&'static str],
    limit: Duration,
) {
    let end = Instant::now() + limit;
    let mut kept: Option<Client> = None;
    let seen = |r: Result<Reply, anyhow::Error>| {
        r.map(|r| (r.status, backend_of(&r), text(&r.body)))
            .map_err(|e| format!("{e:#}"))
    };
    while !stop.load(Ordering::Relaxed) && Instant::now() < end {
        for &path in paths {
            let at = Instant::now();
            let result = seen(get(lb(), path, &[]).await);
            out.lock().unwrap().push(Sample {
                at,
                path,
                how: "fresh connection",
                result,
            });
            let at = Instant::now();
            let result = async {
                if kept.is_none() {
                    kept = Some(Client::connect(lb(), false).await?);
                }
                kept.as_mut().unwrap().get(path, &[]).await
            }
            .await;
            if result.is_err() {
                kept = None;
            }
            out.lock().unwrap().push(Sample {
                at,
                path,
                how: "kept-alive connection",
                result: seen(result),
            });
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// GET `path` once from the client namespace: (status, x-backend, body).
fn one(bed: &HttpBed, path: &'static str) -> (u16, String, String) {
    in_ns(&bed.client, async move || {
        let r = get(lb(), path, &[]).await.unwrap();
        (r.status, backend_of(&r), text(&r.body))
    })
    .unwrap()
}

const MAINT: &str = "down for maintenance";

#[test]
fn reload_under_load_adds_a_target_and_a_rule_with_no_failed_request() {
    let bed = HttpBed::new(&config(&web(&[11], "5s"), FORWARD_WEB)).unwrap();
    let _a = bed.backend(11, 80, "a").unwrap();
    let b = bed.backend(12, 80, "b").unwrap();
    let d = bed.start().unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(Mutex::new(Vec::<Sample>::new()));
    let client = spawn_in(&bed.client, {
        let (stop, samples) = (stop.clone(), samples.clone());
        async move || load(stop, samples, &["/", "/maint"], Duration::from_secs(300)).await
    });
    wait_for(
        "20 requests of the load before the reload",
        Duration::from_secs(30),
        || match samples.lock().unwrap().len() {
            n if n >= 20 => Ok(()),
            n => Err(format!("{n} so far")),
        },
    );

    std::fs::write(
        &bed.config,
        config(
            &format!(
                "{}{}",
                web(&[11, 12], "5s"),
                fixed_rule(1, "/maint", 503, MAINT)
            ),
            FORWARD_WEB,
        ),
    )
    .unwrap();
    let reload_start = Instant::now();
    let out = reload(&bed);
    let reload_done = Instant::now();
    assert!(
        out.status.success(),
        "xalb reload: {:?}\n{}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).starts_with("reloaded:"),
        "{}",
        text(&out.stdout)
    );
    // A new target starts in initial, and stays there until its first check
    // (which may already have come: one pass makes it healthy); the one that
    // stays is kept.
    let rows = targets(&bed, "?target_group=web");
    let b_row = rows.iter().find(|r| r.address == "10.231.2.12");
    let b_state = b_row.map(|r| (r.state.as_str(), r.reason.as_str()));
    if b_state != Some(("healthy", "")) || b.checks() == 0 {
        assert_eq!(
            b_state,
            Some(("initial", "Elb.InitialHealthChecking")),
            "{rows:#?}"
        );
    }
    assert!(rows.iter().any(|r| r.address == "10.231.2.11"), "{rows:#?}");

    // b takes requests (as soon as it is healthy, or at once while a is
    // still initial too) and the rule answers.
    wait_for(
        "b to answer and the new rule to apply",
        Duration::from_secs(30),
        || {
            let s = samples.lock().unwrap();
            let after = || s.iter().filter(|s| s.at > reload_done);
            let b = after().any(|s| matches!(&s.result, Ok((200, n, _)) if n == "b"));
            let rule = after().any(|s| s.path == "/maint");
            if b && rule {
                Ok(())
            } else {
                Err(format!("b answered: {b}, /maint asked: {rule}"))
            }
        },
    );
    // A few more reloads of the same file under the same load: each one
    // re-applies everything (kernel maps, routes, upstream pools).
    for _ in 0..3 {
        let out = reload(&bed);
        assert!(out.status.success(), "{}", text(&out.stderr));
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    client.join().unwrap();

    let samples = std::mem::take(&mut *samples.lock().unwrap());
    let failed: Vec<&Sample> = samples
        .iter()
        .filter(|s| match (&s.result, s.path) {
            (Err(_), _) => true,
            (Ok((200, b, _)), "/") => b != "a" && b != "b",
            (Ok(_), "/") => true,
            // Before the reload the default action forwards it; after, the rule answers.
            (Ok((200, b, _)), _) => s.at >= reload_done || b != "a",
            (Ok((503, b, body)), _) => s.at < reload_start || !b.is_empty() || body != MAINT,
            (Ok(_), _) => true,
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed or were answered wrongly across the reload (reload at +{:?}, took {:?}): {failed:#?}",
        failed.len(),
        samples.len(),
        reload_start.duration_since(samples[0].at),
        reload_done - reload_start
    );
    assert!(
        samples.iter().filter(|s| s.at < reload_start).count() >= 20,
        "load ran before the reload"
    );
    assert!(
        samples
            .iter()
            .any(|s| s.path == "/maint" && s.at > reload_done && s.result.is_ok()),
        "the rule answered after the reload"
    );

    // The new target is in the group; a's health carried over.
    let rows = targets(&bed, "?target_group=web");
    assert_eq!(rows.len(), 2, "{rows:#?}");
    for r in &rows {
        assert!(
            r.state == "initial" || r.state == "healthy",
            "a new target starts in initial: {rows:#?}"
        );
    }
    drop(d);
}

#[test]
fn an_invalid_reload_is_rejected_with_checks_errors_and_routing_stays() {
    let bed = HttpBed::new(&config(&web(&[11], "5s"), FORWARD_WEB)).unwrap();
    let _a = bed.backend(11, 80, "a").unwrap();
    let _b = bed.backend(12, 80, "b").unwrap();
    let d = bed.start().unwrap();
    assert_eq!(one(&bed, "/x").0, 200);

    // Refers to a group that does not exist, and adds b to the group.
    std::fs::write(
        &bed.config,
        config(
            &web(&[11, 12], "5s"),
            r#"{ type = "forward", target_group = "nosuch" }"#,
        ),
    )
    .unwrap();
    let out = reload(&bed);
    let reload_err = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "xalb reload of an invalid file: {}{reload_err}",
        text(&out.stdout)
    );
    let path = bed.config.to_string_lossy().into_owned();
    let check = xalb(&bed, &["check", "-c", &path]);
    assert_eq!(check.status.code(), Some(1));
    let check_err = text(&check.stderr);
    // file:line:column: field: message
    let diagnostics: Vec<&str> = check_err
        .lines()
        .filter_map(|l| l.find(path.as_str()).map(|i| &l[i..]))
        .collect();
    assert!(
        !diagnostics.is_empty() && diagnostics.iter().any(|d| d.contains("nosuch")),
        "xalb check names file:line:column and the group: {check_err}"
    );
    for diag in &diagnostics {
        let mut parts = diag[path.len()..].splitn(4, ':');
        assert_eq!(parts.next(), Some(""), "{diag}");
        assert!(
            parts.next().is_some_and(|l| l.parse::<u32>().is_ok())
                && parts.next().is_some_and(|c| c.parse::<u32>().is_ok()),
            "file:line:column: {diag}"
        );
        assert!(
            reload_err.contains(&format!("xalb: error: {diag}\n")),
            "xalb reload prints what xalb check prints.\ncheck: {check_err}\nreload: {reload_err}"
        );
    }

    // The admin endpoint answers the same refusal as JSON, one entry per
    // located problem, each the line `xalb check` printed.
    let answer = admin_post(&bed, "/reload");
    assert_eq!(answer.status, 400, "{}", text(&answer.body));
    let json: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(
        (&json["status"], &json["kind"]),
        (&"error".into(), &"config".into())
    );
    let errors = json["errors"].as_array().unwrap();
    assert_eq!(errors.len(), diagnostics.len(), "{json:#}");
    for (e, diag) in errors.iter().zip(&diagnostics) {
        let line = format!(
            "{}:{}:{}: {}: {}",
            e["file"].as_str().unwrap(),
            e["line"],
            e["column"],
            e["field"].as_str().unwrap(),
            e["message"].as_str().unwrap()
        );
        assert_eq!(&line, diag);
    }

    // Nothing of the file applied: still a alone, default action unchanged.
    let rows = targets(&bed, "");
    assert_eq!(
        rows.iter().map(|r| r.address.as_str()).collect::<Vec<_>>(),
        ["10.231.2.11"],
        "{rows:#?}"
    );
    for _ in 0..4 {
        let (status, backend, _) = one(&bed, "/x");
        assert_eq!((status, backend.as_str()), (200, "a"));
    }
    drop(d);
}

#[test]
fn a_valid_file_the_host_cannot_serve_is_refused_as_a_conflict() {
    let bed = HttpBed::new(&config(&web(&[11], "5s"), FORWARD_WEB)).unwrap();
    let _a = bed.backend(11, 80, "a").unwrap();
    let d = bed.start().unwrap();
    assert_eq!(one(&bed, "/x").1, "a");

    // A second balancer on an address no interface of the host carries.
    let extra = r#"
[[load_balancer]]
name = "elsewhere"
interfaces = ["eth0"]
addresses = ["10.231.0.99"]
security_groups = ["web"]
"#;
    std::fs::write(
        &bed.config,
        config(&format!("{}{extra}", web(&[11], "5s")), FORWARD_WEB),
    )
    .unwrap();
    let path = bed.config.to_string_lossy().into_owned();
    let check = xalb(&bed, &["check", "-c", &path]);
    assert!(check.status.success(), "{}", text(&check.stderr));

    let answer = admin_post(&bed, "/reload");
    assert_eq!(answer.status, 409, "{}", text(&answer.body));
    let json: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(json["kind"], "host", "{json:#}");
    assert_eq!(json["errors"], serde_json::json!([]), "{json:#}");
    let message = json["message"].as_str().unwrap();
    assert!(
        message.contains("address 10.231.0.99 is not configured on this host"),
        "{message}"
    );

    let out = reload(&bed);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("xalb: the configuration was not reloaded; the running one stays\n")
            && stderr.contains("xalb: error: the host does not match the configuration")
            && stderr.contains("10.231.0.99"),
        "{stderr}"
    );
    assert_eq!(one(&bed, "/x").1, "a", "the running configuration stays");
    drop(d);
}

#[test]
fn sighup_reloads_and_an_invalid_file_on_sighup_changes_nothing() {
    let bed = HttpBed::new(&config(&web(&[11], "5s"), FORWARD_WEB)).unwrap();
    let _a = bed.backend(11, 80, "a").unwrap();
    let d = bed.start().unwrap();
    let (status, backend, _) = one(&bed, "/hup");
    assert_eq!((status, backend.as_str()), (200, "a"));

    std::fs::write(
        &bed.config,
        config(
            &format!(
                "{}{}",
                web(&[11], "5s"),
                fixed_rule(1, "/hup", 200, "hup applied")
            ),
            FORWARD_WEB,
        ),
    )
    .unwrap();
    // SAFETY: kill with the pid of our own child.
    assert_eq!(unsafe { libc::kill(d.pid() as i32, libc::SIGHUP) }, 0);
    wait_for("the rule added by SIGHUP", Duration::from_secs(30), || {
        let r = one(&bed, "/hup");
        if (r.0, r.1.as_str(), r.2.as_str()) == (200, "", "hup applied") {
            Ok(())
        } else {
            Err(format!("{r:?}"))
        }
    });
    assert_eq!(one(&bed, "/other").1, "a");

    // An invalid file on SIGHUP: the running configuration stays, and so does
    // the daemon.
    std::fs::write(&bed.config, "[[listener]]\nport = \"eighty\"\n").unwrap();
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(d.pid() as i32, libc::SIGHUP) }, 0);
    d.wait_stderr(Duration::from_secs(30), |l| {
        l.contains("SIGHUP: configuration not reloaded")
    })
    .expect("xalb says the invalid file was not loaded");
    assert_eq!(one(&bed, "/hup").2, "hup applied");
    assert_eq!(one(&bed, "/other").1, "a");
    d.stop().expect("still running and exits cleanly");
}

#[test]
fn a_removed_target_drains_its_in_flight_request_and_takes_no_new_ones() {
    // A deregistration delay far longer than the test's steps until a's
    // held request is released: it ends inside the delay, as the admin rows
    // (a still listed, draining) confirm afterwards.
    let bed = HttpBed::new(&config(&web(&[11], "20s"), FORWARD_WEB)).unwrap();
    let a = bed.backend(11, 80, "a").unwrap();
    let b = bed.backend(12, 80, "b").unwrap();
    let d = bed.start().unwrap();

    let held = spawn_in(&bed.client, async || {
        get(lb(), "/hold", &[])
            .await
            .map(|r| (r.status, backend_of(&r)))
            .map_err(|e| format!("{e:#}"))
    });
    wait_for(
        "the held request to reach a",
        Duration::from_secs(30),
        || match a.in_flight() {
            1 => Ok(()),
            n => Err(format!("{n} in flight")),
        },
    );

    // a leaves the group, b joins.
    std::fs::write(&bed.config, config(&web(&[12], "20s"), FORWARD_WEB)).unwrap();
    let out = reload(&bed);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("1 targets draining"),
        "{}",
        text(&out.stdout)
    );

    let draining = |rows: &[xalb_tests::admin::Row]| {
        let a_row = rows
            .iter()
            .find(|r| r.address == "10.231.2.11")
            .unwrap_or_else(|| panic!("a is listed while draining: {rows:#?}"));
        assert_eq!(
            (a_row.state.as_str(), a_row.reason.as_str()),
            ("draining", "Target.DeregistrationInProgress")
        );
    };
    let rows = targets(&bed, "?target_group=web");
    draining(&rows);
    let b_row = rows.iter().find(|r| r.address == "10.231.2.12").unwrap();
    // Initial until its first check, which alone may make it healthy.
    if b_row.state != "healthy" || b.checks() == 0 {
        assert_eq!(b_row.state, "initial", "{rows:#?}");
    }

    // New requests go to b only, while a's held request is still running.
    let a_before = a.requests();
    let names = in_ns(&bed.client, async || {
        let mut c = Client::connect(lb(), false).await.unwrap();
        let mut out = Vec::new();
        for _ in 0..6 {
            let r = c.get("/", &[]).await.unwrap();
            out.push((r.status, backend_of(&r)));
            out.push(
                get(lb(), "/", &[])
                    .await
                    .map(|r| (r.status, backend_of(&r)))
                    .unwrap(),
            );
        }
        out
    })
    .unwrap();
    assert!(
        names.iter().all(|n| *n == (200, "b".to_string())),
        "{names:?}"
    );
    assert_eq!(a.requests(), a_before, "nothing new reaches a");
    assert!(!held.is_finished(), "the held request ended at the reload");

    // a answers: the in-flight request to the draining target completes,
    // and a is still listed as draining then, so it ended inside the delay.
    a.release();
    let held = held.join().unwrap();
    assert_eq!(
        held,
        Ok((200, "a".to_string())),
        "the in-flight request to the draining target completes"
    );
    draining(&targets(&bed, "?target_group=web"));

    // Once the delay is over the target is gone from the group.
    wait_for(
        "a to leave after the delay",
        Duration::from_secs(60),
        || {
            let rows = targets(&bed, "?target_group=web");
            if rows.iter().any(|r| r.address == "10.231.2.11") {
                Err(format!("{rows:#?}"))
            } else {
                Ok(())
            }
        },
    );
    drop(d);
}

#[test]
fn a_request_outliving_its_targets_draining_time_gets_502() {
    let bed = HttpBed::new(&config(&web(&[11], "2s"), FORWARD_WEB)).unwrap();
    let a = bed.backend(11, 80, "a").unwrap();
    let _b = bed.backend(12, 80, "b").unwrap();
    let _d = bed.start().unwrap();
    // A request a holds until the test says: longer than the draining time.
    let held = spawn_in(&bed.client, async || {
        get(lb(), "/hold", &[])
            .await
            .map(|r| (r.status, text(&r.body)))
            .map_err(|e| format!("{e:#}"))
    });
    wait_for(
        "the held request to reach a",
        Duration::from_secs(30),
        || match a.in_flight() {
            1 => Ok(()),
            n => Err(format!("{n} in flight")),
        },
    );
    let reloading = Instant::now();
    std::fs::write(&bed.config, config(&web(&[12], "2s"), FORWARD_WEB)).unwrap();
    let out = reload(&bed);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let (status, body) = held.join().unwrap().unwrap();
    let cut_after = reloading.elapsed();
    // a holds the request until released below, so it never answered: the
    // 502 is the balancer's, when the draining time ended, not before it.
    assert_eq!(status, 502, "cut when the 2 s draining time ended: {body}");
    assert!(
        cut_after >= Duration::from_millis(1900),
        "cut {cut_after:?} after the reload began, before the 2 s draining time"
    );
    a.release();
}
