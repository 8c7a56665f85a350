//! HTTPS target groups: the balancer speaks TLS to its targets, for requests
//! and for health checks (without validating target certificates, as the ALB).

use std::time::{Duration, Instant};

use xalb_tests::bed::{http_config, lb, HttpBed, ADMIN};
use xalb_tests::http::{get, in_ns, Backend};

const SECURE: &str = r#"
[[target_group]]
name = "secure"
protocol = "HTTPS"
port = 443
targets = [{ address = "10.231.2.11" }, { address = "10.231.2.12" }]

[target_group.health_check]
interval = "5s"
timeout = "2s"
healthy_threshold = 2
unhealthy_threshold = 2
"#;

/// The (state, reason) `/targets` reports for `address`.
fn health_of(bed: &HttpBed, address: &'static str) -> (String, String) {
    let body = in_ns(&bed.lb, async || {
        get(ADMIN.parse().unwrap(), "/targets", &[])
            .await
            .unwrap()
            .body
    })
    .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let t = v["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["address"] == address)
        .unwrap()
        .clone();
    (
        t["state"].as_str().unwrap().to_string(),
        t["reason"].as_str().unwrap().to_string(),
    )
}

#[test]
fn https_targets_are_checked_and_served_over_tls() {
    let bed = HttpBed::new(&http_config(
        "10s",
        SECURE,
        r#"{ type = "forward", target_group = "secure" }"#,
    ))
    .unwrap();
    let tls =
        Backend::start_tls(&bed.backends, "10.231.2.11:443".parse().unwrap(), "tls-a").unwrap();
    // Speaks plain HTTP on the HTTPS port: its TLS handshakes fail.
    let _plain = bed.backend(12, 443, "plain-b").unwrap();
    let _d = bed.start().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let a = health_of(&bed, "10.231.2.11");
        let b = health_of(&bed, "10.231.2.12");
        if a.0 == "healthy" && b.0 == "unhealthy" {
            assert_eq!(b.1, "Target.FailedHealthChecks");
            break;
        }
        assert!(Instant::now() < deadline, "states not reached: {a:?} {b:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
    let replies = in_ns(&bed.client, async || {
        let mut out = Vec::new();
        for _ in 0..10 {
            out.push(get(lb(), "/over-tls", &[]).await.unwrap());
        }
        out
    })
    .unwrap();
    for r in &replies {
        assert_eq!((r.status, r.backend().as_str()), (200, "tls-a"));
    }
    assert_eq!(
        tls.requests(),
        10,
        "the requests reached the target through TLS"
    );
}
