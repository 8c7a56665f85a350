//! The live dashboard (issue point 4): the admin endpoint's page, in a real
//! headless Chromium inside the balancer's namespace, follows a target as it
//! turns unhealthy, without a reload, and says nothing on the console. Real
//! `xalb run` with XDP attached, real backends and client, each in its own
//! namespace.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use xalb_tests::admin::{targets, wait_for};
use xalb_tests::bed::{http_config, lb, HttpBed, FORWARD_WEB};
use xalb_tests::browser::Browser;
use xalb_tests::http::{get, in_ns};

/// Target group "web" (hosts 11 and 12 on port 80) with the fastest checks
/// the contract allows: every 5 s, 2 s timeout, 2 failures to turn unhealthy.
const WEB_GROUP_WITH_FAST_HEALTH_CHECK: &str = r#"
[[target_group]]
name = "web"
protocol = "HTTP"
port = 80
targets = [{ address = "10.231.2.11" }, { address = "10.231.2.12" }]

[target_group.health_check]
interval = "5s"
timeout = "2s"
healthy_threshold = 2
unhealthy_threshold = 2
"#;

const PAGE: &str = "http://127.0.0.1:9901/";
const A: &str = "10.231.2.11:80";
const B: &str = "10.231.2.12:80";

/// Every target row on the page: (target group, "address:port", state).
fn page_targets(browser: &Browser) -> Result<Vec<(String, String, String)>, String> {
    let v = browser
        .execute(
            "return Array.from(document.querySelectorAll('[data-target]')).map(function (e) {
               return [e.dataset.targetGroup, e.dataset.target, e.dataset.state];
             });",
        )
        .map_err(|e| format!("{e:#}"))?;
    let rows = v.as_array().ok_or_else(|| format!("not a list: {v}"))?;
    Ok(rows
        .iter()
        .map(|r| {
            let s = |i: usize| r[i].as_str().unwrap_or_default().to_string();
            (s(0), s(1), s(2))
        })
        .collect())
}

fn page_state(rows: &[(String, String, String)], target: &str) -> Option<String> {
    rows.iter()
        .find(|(g, t, _)| g == "web" && t == target)
        .map(|(_, _, s)| s.clone())
}

/// How many refreshes the page has completed.
fn refreshes(browser: &Browser) -> Result<u64, String> {
    let v = browser
        .execute("return document.body.dataset.refreshes || '0';")
        .map_err(|e| format!("{e:#}"))?;
    v.as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not a count: {v}"))
}

/// The text of the first element matching `selector`, if any.
fn text_of(browser: &Browser, selector: &str) -> Option<String> {
    let script = format!(
        "var e = document.querySelector({}); return e ? e.textContent : null;",
        Value::from(selector)
    );
    browser
        .execute(&script)
        .unwrap()
        .as_str()
        .map(str::to_string)
}

fn artifacts() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts")
}

#[test]
fn the_dashboard_follows_a_target_turning_unhealthy() {
    let bed = HttpBed::new(&http_config(
        "60s",
        WEB_GROUP_WITH_FAST_HEALTH_CHECK,
        FORWARD_WEB,
    ))
    .unwrap();
    let _a = bed.backend(11, 80, "a").unwrap();
    let b = bed.backend(12, 80, "b").unwrap();
    let _d = bed.start().unwrap();

    wait_for("both targets healthy", Duration::from_secs(30), || {
        let rows = targets(&bed, "");
        let healthy = rows.iter().filter(|r| r.state == "healthy").count();
        if healthy == 2 {
            Ok(())
        } else {
            Err(format!("{rows:#?}"))
        }
    });
    // Traffic, so that the charts have something to draw.
    let statuses = in_ns(&bed.client, async || {
        let mut out = Vec::new();
        for _ in 0..20 {
            out.push(get(lb(), "/", &[]).await.map(|r| r.status).ok());
        }
        out
    })
    .unwrap();
    assert!(
        statuses.iter().all(|s| *s == Some(200)),
        "requests through the balancer: {statuses:?}"
    );

    let mut browser = Browser::start(&bed.lb).unwrap();
    browser.navigate(PAGE).unwrap();
    wait_for(
        "the page showing both targets healthy",
        Duration::from_secs(30),
        || {
            let rows = page_targets(&browser)?;
            let both = [A, B]
                .iter()
                .all(|t| page_state(&rows, t).as_deref() == Some("healthy"));
            if both {
                Ok(())
            } else {
                Err(format!("{rows:?}"))
            }
        },
    );

    for (what, selector, name) in [
        ("balancer", "[data-load-balancer=\"edge\"] .name", "edge"),
        ("listener", "[data-listener=\"edge:80\"] .name", "edge:80"),
        (
            "security group",
            "[data-security-group=\"web\"] .name",
            "web",
        ),
    ] {
        assert_eq!(
            text_of(&browser, selector).as_deref(),
            Some(name),
            "the page lists the {what} {name}"
        );
    }

    drop(b);
    wait_for(
        "/targets to report .12 unhealthy",
        Duration::from_secs(60),
        || {
            let rows = targets(&bed, "");
            let unhealthy = rows
                .iter()
                .any(|r| r.address == "10.231.2.12" && r.state == "unhealthy");
            if unhealthy {
                Ok(())
            } else {
                Err(format!("{rows:#?}"))
            }
        },
    );
    // The refresh under way may have read the endpoint before the change:
    // the second one after this moment began after it.
    let r = refreshes(&browser).unwrap();
    wait_for(
        "two more refreshes of the page",
        Duration::from_secs(30),
        || match refreshes(&browser)? {
            n if n >= r + 2 => Ok(()),
            n => Err(format!("{n} refreshes, {r} at the change")),
        },
    );
    let rows = page_targets(&browser).unwrap();

    let png = browser.screenshot_png().unwrap();
    std::fs::create_dir_all(artifacts()).unwrap();
    let shot = artifacts().join("dashboard.png");
    std::fs::write(&shot, &png).unwrap();

    assert_eq!(
        page_state(&rows, B).as_deref(),
        Some("unhealthy"),
        "the stopped target, {r}+2 refreshes after /targets said so: {rows:?}"
    );
    assert_eq!(
        page_state(&rows, A).as_deref(),
        Some("healthy"),
        "the running target: {rows:?}"
    );
    let errors = browser.console_errors().unwrap();
    assert!(errors.is_empty(), "console errors:\n{}", errors.join("\n"));
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG",
        shot.display()
    );
    assert!(
        png.len() > 20_000,
        "{}: {} bytes, too small for the page",
        shot.display(),
        png.len()
    );
}
