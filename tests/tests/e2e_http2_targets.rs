//! Target groups that speak HTTP/2 (`protocol_version = "HTTP2"`: h2c on
//! HTTP groups, ALPN h2 on HTTPS groups) and gRPC (`"GRPC"`: calls carried
//! end to end with their trailers, streaming both ways; health checks that
//! judge the gRPC status).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Frame;
use xalb_tests::admin::{targets, wait_for};
use xalb_tests::bed::{lb, HttpBed};
use xalb_tests::grpc::{frame, unframe, GrpcTarget};
use xalb_tests::http::{get, in_ns};
use xalb_tests::tls::{self, certificates, Opts, Pki, TlsClient};

/// HTTP:80 forwarding to `default_group`, HTTPS:443 (with `pki`'s
/// `default` certificate) forwarding to `tls_group`, and `groups`.
fn config(pki: &Pki, default_group: &str, tls_group: &str, groups: &str) -> String {
    format!(
        r#"
[[security_group]]
name = "web"
ingress = [
  {{ protocol = "tcp", ports = "80", source = "0.0.0.0/0" }},
  {{ protocol = "tcp", ports = "443", source = "0.0.0.0/0" }},
]

[[load_balancer]]
name = "edge"
interfaces = ["eth0"]
addresses = ["10.231.0.10"]
security_groups = ["web"]

[[listener]]
load_balancer = "edge"
protocol = "HTTP"
port = 80
default_action = {{ type = "forward", target_group = "{default_group}" }}

[[listener]]
load_balancer = "edge"
protocol = "HTTPS"
port = 443
certificates = {}
default_action = {{ type = "forward", target_group = "{tls_group}" }}
{groups}
"#,
        certificates(&pki.dir, &["default"])
    )
}

/// Waits until `/targets` shows each (address, state, reason).
fn wait_states(bed: &HttpBed, want: &[(&str, &str, &str)]) {
    wait_for("target states", Duration::from_secs(60), || {
        let rows = targets(bed, "");
        for (addr, state, reason) in want {
            let row = rows.iter().find(|r| r.address == *addr).unwrap();
            if (row.state.as_str(), row.reason.as_str()) != (*state, *reason) {
                return Err(format!("{addr}: {} {}", row.state, row.reason));
            }
        }
        Ok(())
    });
}

#[test]
fn http2_groups_speak_h2c_and_alpn_h2_to_their_targets() {
    let pki = Pki::new("h2-targets").unwrap();
    pki.server("default", &["default.test"], &rcgen::PKCS_ECDSA_P256_SHA256)
        .unwrap();
    let groups = r#"
[[target_group]]
name = "h2c"
protocol = "HTTP"
port = 80
protocol_version = "HTTP2"
targets = [{ address = "10.231.2.11" }]
health_check = { interval = "5s", timeout = "2s", healthy_threshold = 2, path = "/health" }

[[target_group]]
name = "h2tls"
protocol = "HTTPS"
port = 443
protocol_version = "HTTP2"
targets = [{ address = "10.231.2.12" }]
health_check = { interval = "5s", timeout = "2s", healthy_threshold = 2, path = "/health" }
"#;
    let bed = HttpBed::new(&config(&pki, "h2c", "h2tls", groups)).unwrap();
    let _a = GrpcTarget::start(
        &bed.backends,
        "10.231.2.11:80".parse().unwrap(),
        "h2c-1",
        false,
        12,
    )
    .unwrap();
    let _b = GrpcTarget::start(
        &bed.backends,
        "10.231.2.12:443".parse().unwrap(),
        "h2tls-1",
        true,
        12,
    )
    .unwrap();
    let _d = bed.start().unwrap();
    // Their health checks (HTTP/2 GETs) pass.
    wait_states(
        &bed,
        &[
            ("10.231.2.11", "healthy", ""),
            ("10.231.2.12", "healthy", ""),
        ],
    );
    let (plain, over_tls) = in_ns(&bed.client, async || {
        let plain = get(lb(), "/page?q=1", &[]).await.unwrap();
        let client = TlsClient::new(Opts::default());
        let s = client
            .connect("10.231.0.10:443".parse().unwrap(), "default.test")
            .await
            .unwrap();
        (plain, tls::get(s, "www.test", "/secure").await.unwrap())
    })
    .unwrap();
    // An HTTP/1.1 client; the target got HTTP/2 with the Host as authority.
    assert_eq!(plain.status, 200);
    let text = String::from_utf8_lossy(&plain.body);
    assert!(
        text.starts_with("h2c-1\nGET http://test/page?q=1 HTTP/2.0\n"),
        "{text}"
    );
    assert_eq!(plain.seen("x-forwarded-proto"), ["http"]);
    let text = String::from_utf8_lossy(&over_tls.body);
    assert!(
        text.starts_with("h2tls-1\nGET https://www.test/secure HTTP/2.0\n"),
        "{text}"
    );
    assert_eq!(over_tls.seen("x-forwarded-proto"), ["https"]);
}

#[test]
fn grpc_calls_stream_both_ways_with_their_trailers() {
    let pki = Pki::new("grpc").unwrap();
    pki.server("default", &["default.test"], &rcgen::PKCS_ECDSA_P256_SHA256)
        .unwrap();
    let groups = r#"
[[target_group]]
name = "grpc"
protocol = "HTTP"
port = 50051
protocol_version = "GRPC"
targets = [{ address = "10.231.2.11" }]
"#;
    let bed = HttpBed::new(&config(&pki, "grpc", "grpc", groups)).unwrap();
    let target = GrpcTarget::start(
        &bed.backends,
        "10.231.2.11:50051".parse().unwrap(),
        "grpc-1",
        false,
        12,
    )
    .unwrap();
    let _d = bed.start().unwrap();
    let (unary, streamed) = in_ns(&bed.client, async || {
        let client = TlsClient::new(Opts {
            alpn: vec!["h2"],
            ..Opts::default()
        });
        let s = client
            .connect("10.231.0.10:443".parse().unwrap(), "default.test")
            .await
            .unwrap();
        assert_eq!(tls::alpn(&s).as_deref(), Some("h2"));
        let (mut send, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(s),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        let call = |path: &str, body| {
            http::Request::post(format!("https://default.test{path}"))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(body)
                .unwrap()
        };

        // Unary.
        let (tx, rx) =
            tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::convert::Infallible>>(4);
        tx.send(Ok(Frame::data(frame(b"hello")))).await.unwrap();
        drop(tx);
        let resp = send
            .send_request(call(
                "/test.Echo/Unary",
                http_body_util::StreamBody::new(Recv(rx)),
            ))
            .await
            .unwrap();
        let status = resp.status();
        let collected = resp.into_body().collect().await.unwrap();
        let trailers = collected.trailers().cloned();
        let mut buf = BytesMut::from(&collected.to_bytes()[..]);
        let unary = (status, unframe(&mut buf), trailers);

        // Bidirectional: each reply arrives before the next message is sent.
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let resp = send
            .send_request(call(
                "/test.Echo/Stream",
                http_body_util::StreamBody::new(Recv(rx)),
            ))
            .await
            .unwrap();
        let mut body = resp.into_body();
        let mut replies = Vec::new();
        let mut buf = BytesMut::new();
        for msg in [&b"one"[..], b"two", b"three"] {
            tx.send(Ok(Frame::data(frame(msg)))).await.unwrap();
            while replies.len() < 3 {
                let f = body.frame().await.unwrap().unwrap();
                buf.extend_from_slice(&f.into_data().unwrap());
                let got = unframe(&mut buf);
                let n = got.len();
                replies.extend(got);
                if n > 0 {
                    break;
                }
            }
        }
        drop(tx);
        let mut trailers = None;
        while let Some(f) = body.frame().await {
            if let Ok(t) = f.unwrap().into_trailers() {
                trailers = Some(t);
            }
        }
        (unary, (replies, trailers))
    })
    .unwrap();
    let (status, messages, trailers) = unary;
    assert_eq!(status, 200);
    assert_eq!(messages, [Bytes::from_static(b"grpc-1:hello")]);
    assert_eq!(trailers.unwrap()["grpc-status"], "0");
    let (replies, trailers) = streamed;
    assert_eq!(
        replies,
        [
            Bytes::from_static(b"grpc-1:one"),
            Bytes::from_static(b"grpc-1:two"),
            Bytes::from_static(b"grpc-1:three")
        ]
    );
    assert_eq!(trailers.unwrap()["grpc-status"], "0");
    assert_eq!(target.calls(), 2);
}

#[test]
fn grpc_health_checks_judge_the_grpc_status() {
    let pki = Pki::new("grpc-health").unwrap();
    pki.server("default", &["default.test"], &rcgen::PKCS_ECDSA_P256_SHA256)
        .unwrap();
    let check =
        r#"{ interval = "5s", timeout = "2s", healthy_threshold = 2, unhealthy_threshold = 2 }"#;
    let strict = r#"{ interval = "5s", timeout = "2s", healthy_threshold = 2, unhealthy_threshold = 2, matcher = "0" }"#;
    let groups = format!(
        r#"
[[target_group]]
name = "grpc"
protocol = "HTTP"
port = 50051
protocol_version = "GRPC"
targets = [{{ address = "10.231.2.11" }}, {{ address = "10.231.2.12" }}]
health_check = {check}

[[target_group]]
name = "strict"
protocol = "HTTP"
port = 50052
protocol_version = "GRPC"
targets = [{{ address = "10.231.2.13" }}, {{ address = "10.231.2.14" }}]
health_check = {strict}

[[rule]]
listener = "edge:80"
priority = 1
conditions = [{{ field = "path-pattern", values = ["/strict/*"] }}]
action = {{ type = "forward", target_group = "strict" }}
"#
    );
    let bed = HttpBed::new(&config(&pki, "grpc", "grpc", &groups)).unwrap();
    let be = &bed.backends;
    // 11: a gRPC server without the method: 12, healthy under the default
    // matcher. 12: HTTP/1 only, not gRPC at all.
    let a = GrpcTarget::start(be, "10.231.2.11:50051".parse().unwrap(), "g-11", false, 12).unwrap();
    let _b = bed.backend(12, 50051, "http1-12").unwrap();
    // The strict group wants 0: 13 answers 0, 14 answers 12.
    let _c = GrpcTarget::start(be, "10.231.2.13:50052".parse().unwrap(), "g-13", false, 0).unwrap();
    let _e =
        GrpcTarget::start(be, "10.231.2.14:50052".parse().unwrap(), "g-14", false, 12).unwrap();
    let _d = bed.start().unwrap();
    wait_states(
        &bed,
        &[
            ("10.231.2.11", "healthy", ""),
            ("10.231.2.12", "unhealthy", "Target.FailedHealthChecks"),
            ("10.231.2.13", "healthy", ""),
            ("10.231.2.14", "unhealthy", "Target.ResponseCodeMismatch"),
        ],
    );
    assert!(a.checks() >= 1, "checks went to /AWS.ALB/healthcheck");
}

/// An mpsc receiver as a stream of body frames.
struct Recv(tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, std::convert::Infallible>>);

impl futures_core::Stream for Recv {
    type Item = Result<Frame<Bytes>, std::convert::Infallible>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}
