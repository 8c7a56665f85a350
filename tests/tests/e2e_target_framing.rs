//! How the balancer reads its targets' responses, end to end: every response
//! framing of RFC 9112 §6.3, interim responses, invalid heads, keep-alive
//! reuse of target connections, and targets that close pooled connections
//! without warning.

use bytes::Bytes;
use http_body_util::Full;
use xalb_tests::bed::{lb, HttpBed};
use xalb_tests::http::{in_ns, Client};
use xalb_tests::scripted::{Script, ScriptedTarget};

const ONE: &str = r#"
[[target_group]]
name = "web"
protocol = "HTTP"
port = 80
targets = [{ address = "10.231.2.11" }]

[target_group.health_check]
enabled = false
"#;

fn config() -> String {
    xalb_tests::bed::http_config("5s", ONE, r#"{ type = "forward", target_group = "web" }"#)
}

fn scripts() -> Vec<Script> {
    vec![
        Script::new(
            "/chunked",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n",
        ),
        Script::new("/length", "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nlength"),
        Script::new(
            "/close",
            "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the target closes",
        )
        .then_close(),
        Script::new(
            "/interim",
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal",
        ),
        Script::new("/head", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"),
        Script::new("/empty", "HTTP/1.1 204 No Content\r\n\r\n"),
        Script::new(
            "/two-lengths",
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        ),
        // The target's own fields around ones the balancer reads or removes.
        Script::new(
            "/fields",
            "HTTP/1.1 200 OK\r\nServer: scripted\r\nX-Many: 1\r\nContent-Length: 2\r\nX-Many: 2\r\nKeep-Alive: timeout=5\r\nETag:   \"v1\"  \r\nConnection: keep-alive\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\nok",
        ),
        // Connection naming a field: that field is hop-by-hop too.
        Script::new(
            "/named-hop",
            "HTTP/1.1 200 OK\r\nConnection: x-hop\r\nX-Hop: 1\r\nX-Kept: 1\r\nContent-Length: 2\r\n\r\nok",
        ),
        Script::new("/garbage", "HTTTP/9 what\r\n\r\n"),
        Script::new("/silent-close", "").then_close(),
        // Answers, then closes without `Connection: close`: the balancer's
        // pooled connection goes stale behind its back.
        Script::new("/drops", "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndrop").then_close(),
    ]
}

/// The bed, the scripted target on 10.231.2.11:80, and the balancer.
fn start() -> (HttpBed, ScriptedTarget, xalb_tests::daemon::Daemon) {
    let bed = HttpBed::new(&config()).unwrap();
    let t =
        ScriptedTarget::start(&bed.backends, "10.231.2.11:80".parse().unwrap(), scripts()).unwrap();
    let d = bed.start().unwrap();
    (bed, t, d)
}

#[test]
fn every_response_framing_is_read_and_forwarded() {
    let (bed, t, _d) = start();
    let replies = in_ns(&bed.client, async || {
        let mut c = Client::connect(lb(), false).await.unwrap();
        let mut out = Vec::new();
        for path in [
            "/chunked", "/length", "/close", "/interim", "/empty", "/length",
        ] {
            let r = c.get(path, &[]).await.unwrap();
            out.push((path, r.status, String::from_utf8_lossy(&r.body).to_string()));
        }
        let head = http::Request::head("/head")
            .header("host", "test")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let r = c.send(head).await.unwrap();
        out.push((
            "HEAD /head",
            r.status,
            String::from_utf8_lossy(&r.body).to_string(),
        ));
        // The connection still works after a HEAD: no body bytes were expected.
        let r = c.get("/length", &[]).await.unwrap();
        out.push((
            "/length",
            r.status,
            String::from_utf8_lossy(&r.body).to_string(),
        ));
        out
    })
    .unwrap();
    let expected = [
        ("/chunked", 200, "hello world"),
        ("/length", 200, "length"),
        ("/close", 200, "until the target closes"),
        ("/interim", 200, "final"),
        ("/empty", 204, ""),
        ("/length", 200, "length"),
        ("HEAD /head", 200, ""),
        ("/length", 200, "length"),
    ];
    let got: Vec<(&str, u16, &str)> = replies
        .iter()
        .map(|(p, s, b)| (*p, *s, b.as_str()))
        .collect();
    assert_eq!(got, expected);
    // Eight requests; only the close-delimited response cost its connection.
    assert_eq!(t.requests(), 8);
    assert!(
        t.connections() <= 2,
        "target connections are reused: {} for 8 requests",
        t.connections()
    );
}

#[test]
fn the_targets_own_response_fields_reach_http1_and_http2_clients() {
    let (bed, _t, _d) = start();
    let (h1, h2, hop1, hop2) = in_ns(&bed.client, async || {
        let mut h1 = Client::connect(lb(), false).await.unwrap();
        let mut h2 = Client::connect(lb(), true).await.unwrap();
        (
            h1.get("/fields", &[]).await.unwrap(),
            h2.get("/fields", &[]).await.unwrap(),
            h1.get("/named-hop", &[]).await.unwrap(),
            h2.get("/named-hop", &[]).await.unwrap(),
        )
    })
    .unwrap();
    for (r, client) in [(&h1, "HTTP/1.1"), (&h2, "HTTP/2")] {
        let h = &r.headers;
        assert_eq!((r.status, &r.body[..]), (200, &b"ok"[..]), "{client}");
        assert_eq!(h["server"], "scripted", "{client}");
        assert_eq!(h["etag"], "\"v1\"", "{client}: value without its padding");
        assert_eq!(
            h.get_all("x-many").iter().collect::<Vec<_>>(),
            ["1", "2"],
            "{client}: repeated fields in order"
        );
        assert_eq!(
            h.get_all("date").iter().collect::<Vec<_>>(),
            ["Sun, 06 Nov 1994 08:49:37 GMT"],
            "{client}: the target's Date, no second one"
        );
        assert!(
            !h.contains_key("keep-alive"),
            "{client}: hop-by-hop removed"
        );
    }
    assert!(!h1.headers.contains_key("connection"));
    for (r, client) in [(&hop1, "HTTP/1.1"), (&hop2, "HTTP/2")] {
        assert_eq!(r.status, 200, "{client}");
        assert!(
            !r.headers.contains_key("x-hop"),
            "{client}: named by Connection"
        );
        assert_eq!(r.headers["x-kept"], "1", "{client}");
    }
}

#[test]
fn invalid_or_missing_responses_get_502() {
    let (bed, _t, _d) = start();
    let statuses = in_ns(&bed.client, async || {
        let mut c = Client::connect(lb(), false).await.unwrap();
        let mut out = Vec::new();
        for path in ["/two-lengths", "/garbage", "/silent-close", "/length"] {
            out.push(c.get(path, &[]).await.unwrap().status);
        }
        out
    })
    .unwrap();
    assert_eq!(statuses, [502, 502, 502, 200]);
}

#[test]
fn connections_the_target_closed_are_never_seen_by_clients() {
    let (bed, t, _d) = start();
    let replies = in_ns(&bed.client, async || {
        let mut c = Client::connect(lb(), false).await.unwrap();
        let mut out = Vec::new();
        for i in 0..40 {
            let r = c.get("/drops", &[]).await.unwrap();
            out.push((r.status, String::from_utf8_lossy(&r.body).to_string()));
            // Sometimes give the target's FIN time to arrive, sometimes not.
            if i % 2 == 0 {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
        out
    })
    .unwrap();
    for (i, (status, body)) in replies.iter().enumerate() {
        assert_eq!((*status, body.as_str()), (200, "drop"), "request {i}");
    }
    assert_eq!(t.requests(), 40);
}
