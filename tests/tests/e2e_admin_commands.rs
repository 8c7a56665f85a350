//! The commands that mirror `aws elbv2` (issue 25), against a running xalb
//! in namespaces: each describe command's JSON parsed and checked against
//! the configuration, the table and text outputs, register-targets and
//! deregister-targets under load with no failed request, kept across a
//! file reload and a restart, and changes refused without the admin token.

use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use xalb_tests::admin::{admin_post_as, spawn_in, targets, wait_for};
use xalb_tests::bed::{lb, HttpBed};
use xalb_tests::daemon::{admin_token, cli, state_dir_of};
use xalb_tests::http::get;

/// "web" (hosts 11 and 12, port 80), a rule to "api" (host 14) on /api/*,
/// a weighted rule on POST, and a redirect.
fn config() -> String {
    xalb_tests::bed::http_config(
        "10s",
        r#"
[[target_group]]
name = "web"
protocol = "HTTP"
port = 80
deregistration_delay = "2s"
targets = [{ address = "10.231.2.11" }, { address = "10.231.2.12" }]

[target_group.health_check]
interval = "5s"
timeout = "2s"
healthy_threshold = 2
unhealthy_threshold = 2

[[target_group]]
name = "api"
protocol = "HTTP"
port = 80
targets = [{ address = "10.231.2.14" }]

[[rule]]
listener = "edge:80"
priority = 20
conditions = [{ field = "http-request-method", values = ["POST"] }]
action = { type = "forward", target_groups = [{ name = "web", weight = 90 }, { name = "api", weight = 10 }] }

[[rule]]
listener = "edge:80"
priority = 10
conditions = [{ field = "path-pattern", values = ["/api/*"] }, { field = "http-header", name = "x-env", values = ["beta"] }]
action = { type = "forward", target_group = "api" }

[[rule]]
listener = "edge:80"
priority = 30
conditions = [{ field = "host-header", values = ["old.example.com"] }]
action = { type = "redirect", protocol = "HTTPS", port = "443", status_code = "HTTP_301" }
"#,
        xalb_tests::bed::FORWARD_WEB,
    )
}

fn run(bed: &HttpBed, args: &[&str]) -> Output {
    cli(&bed.lb)
        .args(args)
        .args(["--admin", xalb_tests::bed::ADMIN])
        .output()
        .unwrap()
}

/// The command's standard output, which it must succeed with.
fn ok(bed: &HttpBed, args: &[&str]) -> String {
    let out = run(bed, args);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "xalb {args:?}: {:?}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn json(bed: &HttpBed, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["--output", "json"]);
    let text = ok(bed, &all);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The command's failure message, which it must fail with.
fn fails(bed: &HttpBed, args: &[&str]) -> String {
    let out = run(bed, args);
    assert_eq!(out.status.code(), Some(1), "xalb {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn describe_commands_answer_in_the_aws_cli_shapes() {
    let bed = HttpBed::new(&config()).unwrap();
    let _d = bed.start().unwrap();

    let lbs = json(&bed, &["describe-load-balancers"]);
    let edge = &lbs["LoadBalancers"][0];
    assert_eq!(lbs["LoadBalancers"].as_array().unwrap().len(), 1, "{lbs}");
    assert_eq!(edge["LoadBalancerName"], "edge");
    assert_eq!(edge["Scheme"], "internet-facing");
    assert_eq!(edge["State"]["Code"], "active");
    assert_eq!(edge["Type"], "application");
    assert_eq!(edge["IpAddressType"], "dualstack");
    assert_eq!(
        edge["Addresses"],
        serde_json::json!(["10.231.0.10", "fd00:231::10"])
    );
    assert_eq!(edge["SecurityGroups"], serde_json::json!(["web"]));
    assert_eq!(edge["Interfaces"], serde_json::json!(["eth0"]));
    assert!(
        fails(&bed, &["describe-load-balancers", "--names", "nope"]).contains("\"nope\" not found")
    );

    let listeners = json(&bed, &["describe-listeners", "--load-balancer", "edge"]);
    let l = &listeners["Listeners"][0];
    assert_eq!(l["ListenerName"], "edge:80");
    assert_eq!(l["Protocol"], "HTTP");
    assert_eq!(l["Port"], 80);
    assert_eq!(
        l["DefaultActions"],
        serde_json::json!([{ "Type": "forward", "TargetGroupName": "web" }])
    );
    let none = json(&bed, &["describe-listeners", "--load-balancer", "other"]);
    assert_eq!(none["Listeners"], serde_json::json!([]));

    // Rules in priority order, whatever the file's order, the default last.
    let rules = json(&bed, &["describe-rules", "--listener", "edge:80"]);
    let rules = rules["Rules"].as_array().unwrap().clone();
    let priorities: Vec<&str> = rules
        .iter()
        .map(|r| r["Priority"].as_str().unwrap())
        .collect();
    assert_eq!(priorities, ["10", "20", "30", "default"]);
    assert_eq!(
        rules[0]["Conditions"],
        serde_json::json!([
            { "Field": "path-pattern", "Values": ["/api/*"] },
            { "Field": "http-header", "HttpHeaderName": "x-env", "Values": ["beta"] }
        ])
    );
    assert_eq!(
        rules[1]["Actions"][0]["ForwardConfig"]["TargetGroups"],
        serde_json::json!([
            { "TargetGroupName": "web", "Weight": 90 },
            { "TargetGroupName": "api", "Weight": 10 }
        ])
    );
    let redirect = &rules[2]["Actions"][0]["RedirectConfig"];
    assert_eq!(redirect["Protocol"], "HTTPS");
    assert_eq!(redirect["Port"], "443");
    assert_eq!(redirect["StatusCode"], "HTTP_301");
    assert_eq!(rules[3]["IsDefault"], true);
    assert!(fails(&bed, &["describe-rules", "--listener", "edge:81"]).contains("edge:80"));

    let groups = json(&bed, &["describe-target-groups"]);
    let groups = groups["TargetGroups"].as_array().unwrap().clone();
    let names: Vec<&str> = groups
        .iter()
        .map(|g| g["TargetGroupName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["web", "api"]);
    let web = &groups[0];
    assert_eq!(web["Protocol"], "HTTP");
    assert_eq!(web["Port"], 80);
    assert_eq!(web["LoadBalancerNames"], serde_json::json!(["edge"]));
    assert_eq!(web["HealthCheckIntervalSeconds"], 5);
    assert_eq!(web["HealthyThresholdCount"], 2);
    assert_eq!(web["Matcher"]["HttpCode"], "200");
    assert_eq!(web["DeregistrationDelaySeconds"], 2);
    assert_eq!(web["RegisteredTargetCount"], 2);
    let api = json(&bed, &["describe-target-groups", "--names", "api"]);
    assert_eq!(api["TargetGroups"].as_array().unwrap().len(), 1);

    let health = json(&bed, &["describe-target-health", "--target-group", "web"]);
    let rows = health["TargetHealthDescriptions"]
        .as_array()
        .unwrap()
        .clone();
    let ids: Vec<&str> = rows
        .iter()
        .map(|r| r["Target"]["Id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["10.231.2.11", "10.231.2.12"]);
    assert!(rows
        .iter()
        .all(|r| r["Target"]["Port"] == 80 && r["Source"] == "config"));
    assert!(rows.iter().all(|r| r["TargetHealth"]["State"].is_string()));

    // The table: a box under the command's title, a row per balancer.
    let table = ok(&bed, &["describe-load-balancers", "--output", "table"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[1].contains("DescribeLoadBalancers"), "{table}");
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with('+') || l.starts_with('|')),
        "{table}"
    );
    let widths: Vec<usize> = lines.iter().map(|l| l.chars().count()).collect();
    assert!(widths.iter().all(|&w| w == widths[0]), "{table}");
    let row = lines
        .iter()
        .find(|l| l.contains("edge"))
        .expect("a row for edge");
    assert!(
        row.contains("internet-facing") && row.contains("10.231.0.10,fd00:231::10"),
        "{row}"
    );
    // Text: a header, then one line per rule.
    let text = ok(&bed, &["describe-rules", "--listener", "edge:80"]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert!(lines[0].starts_with("PRIORITY"), "{text}");
    assert!(lines[2].contains("forward web:90,api:10"), "{text}");
    assert!(
        lines[4].starts_with("default") && lines[4].contains("forward web"),
        "{text}"
    );
}

#[test]
fn changes_need_the_admin_token() {
    let bed = HttpBed::new(&config()).unwrap();
    let _d = bed.start().unwrap();
    let body = r#"{"TargetGroupName": "web", "Targets": ["10.231.2.13"]}"#;
    for auth in [None, Some("Bearer 00"), Some("Basic abc")] {
        let r = admin_post_as(&bed.lb, "/api/register-targets", body, auth);
        assert_eq!(r.status, 401, "{auth:?}");
        let r = admin_post_as(&bed.lb, "/reload", "", auth);
        assert_eq!(r.status, 401, "{auth:?}");
    }
    assert_eq!(targets(&bed, "?target_group=web").len(), 2);
    // The command without the token's directory says where it looked.
    let out = bed
        .lb
        .command(xalb_tests::xalb_bin())
        .args([
            "register-targets",
            "--target-group",
            "web",
            "--targets",
            "10.231.2.13",
        ])
        .args([
            "--admin",
            xalb_tests::bed::ADMIN,
            "--state-dir",
            "/nonexistent",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/admin.token"), "{stderr}");
    // With it: applied.
    let auth = format!("Bearer {}", admin_token(&bed.lb));
    let r = admin_post_as(&bed.lb, "/api/register-targets", body, Some(&auth));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(targets(&bed, "?target_group=web").len(), 3);
    // A bad body or target is refused, naming the problem.
    for (body, status, says) in [
        ("{", 400, "TargetGroupName"),
        (
            r#"{"TargetGroupName": "web", "Targets": ["10.231.2.x"]}"#,
            400,
            "10.231.2.x",
        ),
        (
            r#"{"TargetGroupName": "nope", "Targets": ["10.231.2.13"]}"#,
            404,
            "nope",
        ),
    ] {
        let r = admin_post_as(&bed.lb, "/api/register-targets", body, Some(&auth));
        let text = String::from_utf8_lossy(&r.body);
        assert_eq!(r.status, status, "{body}: {text}");
        assert!(text.contains(says), "{body}: {text}");
    }
}

/// Each request's (status, backend), or its error.
type Seen = Arc<Mutex<Vec<Result<(u16, String), String>>>>;

/// Requests to the balancer, each on a fresh connection, until `stop`:
/// (status, backend) or the error of each.
fn load(bed: &HttpBed, stop: Arc<AtomicBool>, seen: Seen) -> std::thread::JoinHandle<()> {
    spawn_in(&bed.client, async move || {
        while !stop.load(Ordering::Relaxed) {
            let r = get(lb(), "/", &[]).await;
            let r = r
                .map(|r| (r.status, r.backend()))
                .map_err(|e| format!("{e:#}"));
            seen.lock().unwrap().push(r);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
}

#[test]
fn registered_targets_serve_under_load_and_survive_reload_and_restart() {
    let bed = HttpBed::new(&config()).unwrap();
    let _a = bed.backend(11, 80, "a").unwrap();
    let _b = bed.backend(12, 80, "b").unwrap();
    let c = bed.backend(13, 80, "c").unwrap();
    let d = bed.start().unwrap();
    let bed = &bed;
    let healthy = |addr: &'static str| {
        move || {
            let rows = targets(bed, "?target_group=web");
            match rows.iter().find(|r| r.address == addr) {
                Some(r) if r.state == "healthy" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        }
    };
    wait_for("a healthy", Duration::from_secs(30), healthy("10.231.2.11"));

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let client = load(bed, stop.clone(), seen.clone());

    let said = ok(
        bed,
        &[
            "register-targets",
            "--target-group",
            "web",
            "--targets",
            "10.231.2.13",
        ],
    );
    assert!(said.starts_with("registered:"), "{said}");
    let rows = targets(bed, "?target_group=web");
    let row = rows
        .iter()
        .find(|r| r.address == "10.231.2.13")
        .expect("registered");
    assert_eq!(row.source, "register-targets");
    assert_eq!(row.port, 80);
    wait_for("c healthy", Duration::from_secs(30), healthy("10.231.2.13"));
    wait_for("c to serve", Duration::from_secs(30), || {
        if c.requests() > 0 {
            Ok(())
        } else {
            Err("no request yet".into())
        }
    });

    // Deregistered: drains (2 s), then is gone; a stays out of rotation.
    ok(
        bed,
        &[
            "deregister-targets",
            "--target-group",
            "web",
            "--targets",
            "10.231.2.11:80",
        ],
    );
    let state_of = |addr: &str| {
        targets(bed, "?target_group=web")
            .into_iter()
            .find(|r| r.address == addr)
            .map(|r| r.state)
    };
    assert_eq!(state_of("10.231.2.11").as_deref(), Some("draining"));
    wait_for("a gone", Duration::from_secs(30), || {
        match state_of("10.231.2.11") {
            None => Ok(()),
            s => Err(format!("{s:?}")),
        }
    });
    let mark = seen.lock().unwrap().len();
    wait_for("100 more requests", Duration::from_secs(30), || {
        let n = seen.lock().unwrap().len() - mark;
        if n >= 100 {
            Ok(())
        } else {
            Err(format!("{n}"))
        }
    });
    stop.store(true, Ordering::Relaxed);
    client.join().unwrap();
    let seen = seen.lock().unwrap();
    let failed: Vec<_> = seen.iter().filter(|r| !matches!(r, Ok((200, _)))).collect();
    assert!(
        failed.is_empty(),
        "{} of {} failed: {failed:?}",
        failed.len(),
        seen.len()
    );
    assert!(
        seen[mark..]
            .iter()
            .all(|r| !matches!(r, Ok((_, b)) if b == "a")),
        "a answered after it was gone"
    );

    // Kept in the state directory, over a file reload and a restart.
    let kept =
        std::fs::read_to_string(state_dir_of(&bed.lb).join("registered-targets.json")).unwrap();
    assert!(
        kept.contains("10.231.2.13:80") && kept.contains("10.231.2.11:80"),
        "{kept}"
    );
    let after = |bed: &HttpBed| -> Vec<(String, String)> {
        let mut v: Vec<_> = targets(bed, "?target_group=web")
            .into_iter()
            .map(|r| (r.address, r.source))
            .collect();
        v.sort();
        v
    };
    let want = vec![
        ("10.231.2.12".to_string(), "config".to_string()),
        ("10.231.2.13".to_string(), "register-targets".to_string()),
    ];
    assert!(ok(bed, &["reload"]).starts_with("reloaded:"));
    assert_eq!(after(bed), want);
    // The daemon's scratch state directory goes with it: the restart gets
    // a copy of what it kept.
    let dir = std::env::temp_dir().join(format!("xalb-registrations-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("registered-targets.json"), &kept).unwrap();
    d.stop().unwrap();
    let dir_arg = dir.to_str().unwrap();
    let _d = bed.start_with(&["--state-dir", dir_arg]).unwrap();
    assert_eq!(after(bed), want);
    assert_eq!(
        json(bed, &["describe-target-groups", "--names", "web"])["TargetGroups"][0]
            ["RegisteredTargetCount"],
        2
    );
    // Registering the file's target again undoes its deregistration;
    // deregistering one that is no target says so.
    ok(
        bed,
        &[
            "register-targets",
            "--target-group",
            "web",
            "--targets",
            "10.231.2.11",
        ],
    );
    ok(
        bed,
        &[
            "deregister-targets",
            "--target-group",
            "web",
            "--targets",
            "10.231.2.13",
        ],
    );
    assert!(fails(
        bed,
        &[
            "deregister-targets",
            "--target-group",
            "web",
            "--targets",
            "10.231.2.19"
        ]
    )
    .contains("10.231.2.19:80 is not registered"));
    assert!(fails(
        bed,
        &[
            "register-targets",
            "--target-group",
            "nope",
            "--targets",
            "10.231.2.19"
        ]
    )
    .contains("\"nope\" does not exist"));
    let kept = std::fs::read_to_string(dir.join("registered-targets.json")).unwrap();
    assert!(!kept.contains("10.231.2.1"), "nothing left to keep: {kept}");
    let _ = std::fs::remove_dir_all(&dir);
}
