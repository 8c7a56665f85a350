//! The HTTP path under hostile clients, end to end: raw-socket clients, a
//! target that records every byte it receives, and the real daemon. What the
//! client got and exactly what the target received are asserted, and the
//! target's health after client-side failures: no client can fail a target.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use xalb_tests::admin::{admin_get, targets, wait_for};
use xalb_tests::bed::{http_config, lb, HttpBed};
use xalb_tests::daemon::Daemon;
use xalb_tests::http::in_ns;
use xalb_tests::recording::RecordingTarget;

/// One target, health-checked, with the thresholds at their minimum so that
/// two failures counted against it would take it out.
const GROUP: &str = r#"
[[target_group]]
name = "web"
protocol = "HTTP"
port = 80
targets = [{ address = "10.231.2.11" }]

[target_group.health_check]
interval = "5s"
timeout = "2s"
healthy_threshold = 2
unhealthy_threshold = 2
"#;

const FORWARD: &str = r#"{ type = "forward", target_group = "web" }"#;

struct Setup {
    bed: HttpBed,
    target: RecordingTarget,
    daemon: Option<Daemon>,
}

/// The bed with `idle_timeout` and `extra_lb` lines in the load balancer
/// section, the recording target, and the daemon, once the target is healthy.
fn start(idle_timeout: &str, extra_lb: &str) -> Setup {
    start_with(idle_timeout, extra_lb, "")
}

/// [`start`] with `extra` sections in the configuration.
fn start_with(idle_timeout: &str, extra_lb: &str, extra: &str) -> Setup {
    let config = http_config(idle_timeout, &format!("{GROUP}\n{extra}"), FORWARD).replace(
        &format!("idle_timeout = \"{idle_timeout}\"\n"),
        &format!("idle_timeout = \"{idle_timeout}\"\n{extra_lb}\n"),
    );
    let bed = HttpBed::new(&config).unwrap();
    let target = RecordingTarget::start(&bed.backends, "10.231.2.11:80".parse().unwrap()).unwrap();
    let daemon = bed.start().unwrap();
    let s = Setup {
        bed,
        target,
        daemon: Some(daemon),
    };
    s.wait_state("healthy");
    s
}

impl Setup {
    fn state(&self) -> String {
        let rows = targets(&self.bed, "?target_group=web");
        rows[0].state.clone()
    }

    fn wait_state(&self, want: &str) {
        wait_for(
            &format!("the target to be {want}"),
            Duration::from_secs(30),
            || match self.state() {
                s if s == want => Ok(()),
                s => Err(s),
            },
        );
    }

    /// The listener's count of balancer-made 4xx responses.
    fn elb_4xx(&self) -> f64 {
        let text = String::from_utf8_lossy(&admin_get(&self.bed, "/metrics").body).into_owned();
        let series =
            r#"xalb_httpcode_elb_4xx_count_total{load_balancer="edge",listener="edge:80"} "#;
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// Sends `parts` on one connection from the client (each part written
    /// `gap` after the previous one), half-closes if `half_close`, and reads
    /// until the balancer closes the connection.
    fn exchange(&self, parts: &[&[u8]], gap: Duration, half_close: bool) -> String {
        self.exchange_until_closed(parts, gap, half_close)
            .expect("the balancer closed the connection")
    }

    /// [`Self::exchange`]; `None` if the balancer kept the connection open
    /// (for a minute, a guard against a hang far above any expected wait).
    fn exchange_until_closed(
        &self,
        parts: &[&[u8]],
        gap: Duration,
        half_close: bool,
    ) -> Option<String> {
        let parts: Vec<Vec<u8>> = parts.iter().map(|p| p.to_vec()).collect();
        in_ns(&self.bed.client, async move || {
            let mut s = TcpStream::connect(lb()).await.unwrap();
            for (i, p) in parts.iter().enumerate() {
                if i > 0 {
                    // Pacing the client, not waiting for the balancer.
                    tokio::time::sleep(gap).await;
                }
                if s.write_all(p).await.is_err() {
                    break;
                }
            }
            if half_close {
                let _ = s.shutdown().await;
            }
            let mut out = Vec::new();
            let closed = tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut out))
                .await
                .is_ok();
            closed.then(|| String::from_utf8_lossy(&out).into_owned())
        })
        .unwrap()
    }

    fn send(&self, bytes: &[u8]) -> String {
        self.exchange(&[bytes], Duration::ZERO, false)
    }

    /// A plain request still reaches the target and gets its 200.
    fn assert_target_serves(&self) {
        let reply = self.send(b"GET /after HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        assert!(reply.contains("GET /after"), "{reply}");
    }
}

const CHUNKED_POST: &[u8] =
    b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
const SMUGGLED: &[u8] = b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";

#[test]
fn malformed_chunked_bodies_get_400_and_never_fail_the_target() {
    let s = start("5s", "");
    let sixteen_digits = format!("{}\r\n", "1".repeat(16));
    let bodies: [&[u8]; 8] = [
        b"5\r\nhello, more than five\r\n0\r\n\r\n",
        b"+5\r\nhello\r\n0\r\n\r\n",
        b"0x5\r\nhello\r\n0\r\n\r\n",
        b" 5\r\nhello\r\n0\r\n\r\n",
        sixteen_digits.as_bytes(),
        b"5\nhello\r\n0\r\n\r\n",
        b"5;ext\nhello\r\n0\r\n\r\n",
        b"5\r\nhello\r\n0\r\nX-T: 1\nX-U: 2\r\n\r\n",
    ];
    for body in bodies {
        let reply = s.send(&[CHUNKED_POST, body, SMUGGLED].concat());
        let shown = String::from_utf8_lossy(body);
        assert!(reply.starts_with("HTTP/1.1 400"), "{shown}: {reply}");
        assert!(reply.contains("malformed"), "{shown}: {reply}");
        assert_eq!(reply.matches("HTTP/1.1").count(), 1, "{shown}: {reply}");
    }
    assert!(!s.target.received("/smuggled"));
    assert_eq!(
        s.state(),
        "healthy",
        "client faults counted against the target"
    );
    s.assert_target_serves();
}

#[test]
fn aborted_uploads_are_the_clients_doing_and_never_fail_the_target() {
    let log = std::env::temp_dir().join(format!("xalb-aborts-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let mut s = start_with(
        "5s",
        "",
        &format!(
            "[access_log]\nenabled = true\npath = \"{}\"\n",
            log.display()
        ),
    );
    let before = s.elb_4xx();
    for _ in 0..3 {
        // Half the declared body, then the client closes.
        let reply = s.exchange(
            &[b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789"],
            Duration::ZERO,
            true,
        );
        assert!(!reply.contains("502"), "{reply}");
    }
    // Each abort is answered (and counted) as the balancer's 400, and the
    // target sees each request end where the client's did.
    wait_for(
        "three aborts counted and seen",
        Duration::from_secs(30),
        || {
            let (counted, seen) = (s.elb_4xx() - before, s.target.requests_for("/upload").len());
            match (counted, seen) {
                (c, 3) if c >= 3.0 => Ok(()),
                other => Err(format!("{other:?} (counted, seen by the target)")),
            }
        },
    );
    let cut = s.target.requests_for("/upload");
    assert!(cut.iter().all(|r| !r.complete && r.body == b"0123456789"));
    assert_eq!(
        s.state(),
        "healthy",
        "client aborts counted against the target"
    );
    s.assert_target_serves();
    // Logged as the client's doing, with no target status.
    s.daemon.take().unwrap().stop().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    let aborts: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["request"].as_str().unwrap_or("").contains("/upload"))
        .collect();
    assert_eq!(aborts.len(), 3, "{text}");
    for e in aborts {
        assert_eq!(e["elb_status_code"], 400, "{e}");
        assert_eq!(e["target_status_code"], "-", "{e}");
        assert!(
            e["error_reason"]
                .as_str()
                .unwrap()
                .contains("client closed the connection"),
            "{e}"
        );
    }
}

#[test]
fn an_upload_slower_than_the_idle_timeout_is_not_cut() {
    let s = start("1s", "");
    let mut parts: Vec<&[u8]> = vec![
        b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\nConnection: close\r\n\r\n",
    ];
    parts.extend(std::iter::repeat_n(&b"0123456789"[..], 10));
    // 10 pieces 300 ms apart: about 3 s of upload against a 1 s timeout.
    let reply = s.exchange(&parts, Duration::from_millis(300), false);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("body-bytes: 100"), "{reply}");
}

#[test]
fn a_stalled_upload_is_closed_after_the_idle_timeout_and_fails_no_target() {
    let s = start("1s", "");
    // A tenth of the body, then nothing: the client neither sends nor
    // closes. The idle timeout between reads bounds it.
    let reply = s.exchange_until_closed(
        &[b"POST /stalled HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789"],
        Duration::ZERO,
        false,
    );
    let reply = reply.expect("the balancer closed the stalled upload");
    assert!(!reply.contains("HTTP/1.1 5"), "{reply}");
    let seen = s.target.requests_for("/stalled");
    assert!(seen.iter().all(|r| !r.complete), "{seen:?}");
    assert_eq!(
        s.state(),
        "healthy",
        "a stalled client counted against the target"
    );
    s.assert_target_serves();
}

#[test]
fn a_trickled_head_gets_408_on_both_paths() {
    let s = start("3s", r#"request_head_timeout = "1s""#);
    let trickle: Vec<&[u8]> = std::iter::once(&b"GET /slow HTTP/1.1\r\nHost: a\r\nX-Slow: "[..])
        .chain(std::iter::repeat_n(&b"a"[..], 40))
        .collect();
    // Fresh connection: the fast path.
    let reply = s.exchange(&trickle, Duration::from_millis(200), false);
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    // After a request with a body: hyper's path, behind the framing guard.
    let mut after_body: Vec<&[u8]> =
        vec![b"POST /first HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nok"];
    after_body.extend(trickle);
    let reply = s.exchange(&after_body, Duration::from_millis(200), false);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("HTTP/1.1 408"), "{reply}");
    assert!(s.target.requests_for("/slow").is_empty());
}

#[test]
fn the_framing_guard_keeps_judging_after_upgrades_and_trailers() {
    let s = start("5s", "");
    let smuggler = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    let firsts: [&[u8]; 3] = [
        // An upgrade the target declines (it answers 200).
        b"GET /declined HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
        // An upgrade the balancer does not carry.
        b"GET /h2c HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n",
        // A chunked body with trailers.
        b"POST /trailers HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n",
    ];
    for first in firsts {
        let reply = s.send(&[first, smuggler, SMUGGLED].concat());
        let shown = String::from_utf8_lossy(first);
        assert!(reply.starts_with("HTTP/1.1 200"), "{shown}: {reply}");
        assert!(reply.contains("HTTP/1.1 400"), "{shown}: {reply}");
    }
    for (head, why) in [
        (
            &b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n"
                [..],
            "Transfer-Encoding",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\na",
            "Content-Length",
        ),
    ] {
        let reply = s.send(&[b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n", head, SMUGGLED].concat());
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        assert!(reply.contains("HTTP/1.1 400"), "{why}: {reply}");
    }
    assert!(!s.target.received("/smuggled"));
    assert!(
        s.target
            .requests()
            .iter()
            .all(|r| !r.head.starts_with("POST / ")),
        "no smuggler reached the target"
    );
}

#[test]
fn host_and_request_target_hygiene() {
    let s = start("5s", "");
    // Connection naming Host never takes Host away.
    let reply =
        s.send(b"GET /named HTTP/1.1\r\nHost: named.example\r\nConnection: Host, close\r\n\r\n");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let seen = s.target.requests_for("/named");
    assert_eq!(seen[0].field("host"), ["named.example"]);
    // HTTP/1.0 without Host: the address the client reached.
    let reply = s.send(b"GET /old HTTP/1.0\r\n\r\n");
    assert!(
        reply.starts_with("HTTP/1.1 200") || reply.starts_with("HTTP/1.0 200"),
        "{reply}"
    );
    assert_eq!(
        s.target.requests_for("/old")[0].field("host"),
        ["10.231.0.10"]
    );
    // Refused before any target sees them.
    for (req, status) in [
        (
            &b"GET http://user:pw@a/userinfo HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            "400",
        ),
        (b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", "405"),
        (b"GET /empty-host HTTP/1.1\r\nHost:\r\n\r\n", "400"),
    ] {
        let reply = s.send(req);
        assert!(
            reply.starts_with(&format!("HTTP/1.1 {status}")),
            "{}: {reply}",
            String::from_utf8_lossy(req)
        );
    }
    assert!(!s.target.received("userinfo"));
    assert!(!s.target.received("CONNECT"));
    assert!(!s.target.received("/empty-host"));
    // A client's X-Request-Id is replaced (trust_request_id is off).
    s.send(b"GET /id HTTP/1.1\r\nHost: a\r\nX-Request-Id: chosen-by-client\r\nConnection: close\r\n\r\n");
    let ids = s.target.requests_for("/id")[0].field("x-request-id");
    assert_eq!(ids.len(), 1);
    assert_ne!(ids[0], "chosen-by-client");
}

#[test]
fn only_websocket_switches_and_an_unasked_101_is_502_on_every_path() {
    let s = start("5s", "");
    // h2c is stripped: the target, not asked, switches anyway: 502.
    let reply = s.send(
        b"GET /switch HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: upgrade, close\r\n\r\n",
    );
    assert!(reply.starts_with("HTTP/1.1 502"), "{reply}");
    let seen = s.target.requests_for("/switch");
    assert!(seen[0].field("upgrade").is_empty(), "{:?}", seen[0]);
    // The same on the plain path (no body) and on hyper's (a body).
    for req in [
        &b"GET /switch HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"[..],
        b"POST /switch HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
    ] {
        let reply = s.send(req);
        assert!(reply.starts_with("HTTP/1.1 502"), "{reply}");
    }
    // A WebSocket upgrade still tunnels, bytes both ways.
    let reply = s.exchange(
        &[
            b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            b"tunnelled bytes",
        ],
        Duration::from_millis(50),
        true,
    );
    assert!(reply.starts_with("HTTP/1.1 101"), "{reply}");
    assert!(reply.ends_with("tunnelled bytes"), "{reply}");
}

#[test]
fn the_response_head_limit_is_exact() {
    let s = start("5s", "");
    let at = s.send(b"GET /head?n=65536 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    assert!(
        at.starts_with("HTTP/1.1 200"),
        "{}",
        &at[..at.len().min(200)]
    );
    let over = s.send(b"GET /head?n=65537 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    assert!(
        over.starts_with("HTTP/1.1 502"),
        "{}",
        &over[..over.len().min(200)]
    );
    // The same through hyper's client (a request with a body).
    let at = s.send(b"POST /head?n=65536 HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx");
    assert!(
        at.starts_with("HTTP/1.1 200"),
        "{}",
        &at[..at.len().min(200)]
    );
    let over = s.send(b"POST /head?n=65537 HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx");
    assert!(
        over.starts_with("HTTP/1.1 502"),
        "{}",
        &over[..over.len().min(200)]
    );
}
