//! Target selection and stickiness, end to end through the real `xalb run`:
//! weighted round robin, weighted random, least outstanding requests, lb_cookie
//! and app_cookie stickiness, a cookie for a target that is gone, HTTP/1.1
//! pipelining and HTTP/2 multiplexing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use xalb_tests::bed::{lb, HttpBed};
use xalb_tests::daemon::Daemon;
use xalb_tests::http::{expires_in, get, in_ns, raw, set_cookie, Client, Reply};

/// A balancer with one HTTP listener on port 80, extra sections appended.
/// The idle timeout (which also bounds a target's time to answer) is 10 s so
/// the slow requests below are never cut short.
fn config(extra: &str, default_action: &str) -> String {
    xalb_tests::bed::http_config("10s", extra, default_action)
}

const FORWARD_WEB: &str = r#"{ type = "forward", target_group = "web" }"#;

/// Group "web" with `targets` on port 80, `more` appended to the group's
/// table (algorithm) and `tail` after it (sub-tables). Health checks are off:
/// backends count every request they get, checks included, and checks start
/// at a random point of their interval, which would make counts flaky.
fn web(targets: &str, more: &str, tail: &str) -> String {
    format!(
        r#"
[[target_group]]
name = "web"
protocol = "HTTP"
port = 80
targets = [{targets}]
{more}

[target_group.health_check]
enabled = false
{tail}
"#
    )
}

const TWO: &str = r#"{ address = "10.231.2.11" }, { address = "10.231.2.12" }"#;

/// `n` GETs of `path` on one keep-alive connection; the answering backends.
fn names(bed: &HttpBed, n: usize, path: &'static str) -> Vec<String> {
    in_ns(&bed.client, async move || {
        let mut c = Client::connect(lb(), false).await.unwrap();
        let mut out = Vec::new();
        for _ in 0..n {
            let r = c.get(path, &[]).await.unwrap();
            assert_eq!(r.status, 200);
            out.push(r.backend());
        }
        out
    })
    .unwrap()
}

/// One GET of `/` per cookie value, each on a fresh connection; the replies.
fn get_with_cookies(bed: &HttpBed, cookies: Vec<String>) -> Vec<Reply> {
    in_ns(&bed.client, async move || {
        let mut out = Vec::new();
        for cookie in &cookies {
            out.push(
                get(lb(), "/", &[("cookie", cookie.as_str())])
                    .await
                    .unwrap(),
            );
        }
        out
    })
    .unwrap()
}

fn count(names: &[String], name: &str) -> usize {
    names.iter().filter(|n| *n == name).count()
}

fn sets(r: &Reply, name: &str) -> bool {
    r.headers
        .get_all("set-cookie")
        .iter()
        .any(|v| v.to_str().unwrap().starts_with(&format!("{name}=")))
}

// ---------------------------------------------------------------------------
// Algorithms

#[test]
fn round_robin_with_weights_3_and_1_splits_exactly() {
    let targets =
        r#"{ address = "10.231.2.11", weight = 3 }, { address = "10.231.2.12", weight = 1 }"#;
    let bed = HttpBed::new(&config(&web(targets, "", ""), FORWARD_WEB)).unwrap();
    let a = bed.backend(11, 80, "a").unwrap();
    let b = bed.backend(12, 80, "b").unwrap();
    let _d = bed.start().unwrap();
    let seq = names(&bed, 40, "/");
    assert_eq!((count(&seq, "a"), count(&seq, "b")), (30, 10), "{seq:?}");
    // Smooth, not bursty: every run of four has exactly one b.
    for (i, four) in seq.chunks(4).enumerate() {
        assert_eq!(
            count(four, "b"),
            1,
            "requests {}..{}: {seq:?}",
            4 * i,
            4 * i + 4
        );
    }
    assert_eq!((a.requests(), b.requests()), (30, 10));
}

#[test]
fn weighted_random_with_weights_1_and_3_shares_by_weight() {
    let targets =
        r#"{ address = "10.231.2.11", weight = 1 }, { address = "10.231.2.12", weight = 3 }"#;
    let tg = web(targets, r#"algorithm = "weighted_random""#, "");
    let bed = HttpBed::new(&config(&tg, FORWARD_WEB)).unwrap();
    let light = bed.backend(11, 80, "light").unwrap();
    let heavy = bed.backend(12, 80, "heavy").unwrap();
    let _d = bed.start().unwrap();
    const N: usize = 800;
    let seq = names(&bed, N, "/");
    let h = count(&seq, "heavy");
    assert_eq!(h + count(&seq, "light"), N);
    // 75% ± 7 points: 544..=656 of 800 is ±4.6 standard deviations.
    assert!(
        (544..=656).contains(&h),
        "heavy got {h} of {N}, want 75% ± 7 points"
    );
    // Random, not round robin: round robin would put exactly one light in
    // every aligned run of four (probability of that by chance: 0.42^200).
    assert!(
        seq.chunks(4).any(|four| count(four, "light") != 1),
        "looks like round robin: {seq:?}"
    );
    assert_eq!((light.requests() + heavy.requests()) as usize, N);
}

/// Polls `f` every 5 ms until it holds; panics after 30 s (a safety net)
/// naming `what` it waited for.
async fn until(what: &str, f: impl Fn() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out after 30 s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[test]
fn least_outstanding_requests_sends_new_requests_to_the_less_busy_target() {
    let tg = web(TWO, r#"algorithm = "least_outstanding_requests""#, "");
    // The held requests below stay outstanding until the test releases
    // them; the idle timeout (which bounds a target's answer) is far longer.
    let bed = HttpBed::new(&xalb_tests::bed::http_config("120s", &tg, FORWARD_WEB)).unwrap();
    let a = Arc::new(bed.backend(11, 80, "a").unwrap());
    let b = Arc::new(bed.backend(12, 80, "b").unwrap());
    let _d = bed.start().unwrap();
    let (a2, b2) = (a.clone(), b.clone());
    let out = in_ns(&bed.client, async move || {
        let total = || a2.requests() + b2.requests();
        // One held request: its target ("busy") has 1 outstanding, the other 0.
        let s1 = tokio::spawn(get(lb(), "/hold", &[]));
        until("the first held request at a target", || total() == 1).await;
        let busy = if a2.requests() == 1 { "a" } else { "b" };
        // While it is held, every new request goes to the idle target, even
        // one after another on one connection (round robin would alternate).
        let mut c = Client::connect(lb(), false).await.unwrap();
        let mut fast = Vec::new();
        for _ in 0..10 {
            fast.push(c.get("/", &[]).await.unwrap().backend());
        }
        // A second held request goes to the idle target too (1 vs 0), which
        // evens the load; the next two split between the targets.
        let s2 = tokio::spawn(get(lb(), "/hold", &[]));
        until("the second held request at a target", || total() == 12).await;
        let after_s2 = (a2.requests(), b2.requests());
        let s3 = tokio::spawn(get(lb(), "/hold", &[]));
        until("the third held request at a target", || total() == 13).await;
        let s4 = tokio::spawn(get(lb(), "/hold", &[]));
        until("the fourth held request at a target", || total() == 14).await;
        let after_s4 = (a2.requests(), b2.requests());
        let held = (a2.in_flight(), b2.in_flight());
        a2.release();
        b2.release();
        let mut slow = Vec::new();
        for s in [s1, s2, s3, s4] {
            let r = s.await.unwrap().unwrap();
            slow.push((r.status, r.backend()));
        }
        (busy, fast, after_s2, after_s4, held, slow)
    })
    .unwrap();
    let (busy, fast, after_s2, after_s4, held, slow) = out;
    let idle = if busy == "a" { "b" } else { "a" };
    assert!(
        fast.iter().all(|n| n == idle),
        "{busy} holds a request, so all go to {idle}: {fast:?}"
    );
    let split = |busy_n: u64, idle_n: u64| {
        if busy == "a" {
            (busy_n, idle_n)
        } else {
            (idle_n, busy_n)
        }
    };
    assert_eq!(after_s2, split(1, 11), "second slow request to {idle}");
    assert_eq!(after_s4, split(2, 12), "held requests balanced 2/2");
    assert_eq!(held, (2, 2), "all four held at once");
    assert_eq!(slow[0], (200, busy.to_string()));
    assert_eq!(slow[1], (200, idle.to_string()));
    assert!(slow.iter().all(|(s, _)| *s == 200), "{slow:?}");
    assert_ne!(slow[2].1, slow[3].1, "{slow:?}");
    assert_eq!(a.requests() + b.requests(), 14);
}

// ---------------------------------------------------------------------------
// Stickiness

const LB_STICKY: &str = r#"
[target_group.stickiness]
enabled = true
type = "lb_cookie"
duration = "2h"
"#;

#[test]
fn lb_cookie_pins_requests_to_one_target() {
    let bed = HttpBed::new(&config(&web(TWO, "", LB_STICKY), FORWARD_WEB)).unwrap();
    let _a = bed.backend(11, 80, "a").unwrap();
    let _b = bed.backend(12, 80, "b").unwrap();
    let _d = bed.start().unwrap();
    let (first, pinned, garbage, back) = in_ns(&bed.client, async || {
        let mut c = Client::connect(lb(), false).await.unwrap();
        let first = c.get("/", &[]).await.unwrap();
        let (pair, _) = set_cookie(&first, "AWSALB");
        let cookie = format!("lang=en; {pair}; theme=dark");
        let mut pinned = Vec::new();
        for _ in 0..10 {
            pinned.push(c.get("/", &[("cookie", cookie.as_str())]).await.unwrap());
        }
        let mut garbage = Vec::new();
        for _ in 0..2 {
            garbage.push(c.get("/", &[("cookie", "AWSALB=garbage")]).await.unwrap());
        }
        // Each fresh cookie pins to the target that issued it.
        let mut back = Vec::new();
        for r in &garbage {
            let (pair, _) = set_cookie(r, "AWSALB");
            for _ in 0..3 {
                back.push(c.get("/", &[("cookie", pair.as_str())]).await.unwrap());
            }
        }
        (first, pinned, garbage, back)
    })
    .unwrap();
    assert_eq!(first.status, 200);
    let (pair, attrs) = set_cookie(&first, "AWSALB");
    let value = pair.strip_prefix("AWSALB=").unwrap();
    assert!(!value.is_empty() && !value.contains(' '), "{pair}");
    assert!(!attrs.contains("Max-Age"), "ALB uses Expires: {attrs}");
    // xalb's documented choice (targets/mod.rs): Expires = now + the
    // configured duration, re-issued on every response. (ALB itself sets a
    // 7-day Expires and keeps the window inside the encrypted value.)
    let left = expires_in(&attrs);
    assert!(
        (7100..=7300).contains(&left),
        "duration 2h, expires in {left}s: {attrs}"
    );
    let target = first.backend();
    for r in &pinned {
        assert_eq!(r.status, 200);
        assert_eq!(r.backend(), target, "pinned by {pair}");
        assert_eq!(
            set_cookie(r, "AWSALB").0,
            pair,
            "re-issued on every response"
        );
        assert!(
            r.seen("cookie")
                .iter()
                .any(|c| c.contains("lang=en") && c.contains("theme=dark")),
            "the client's cookies reach the target: {:?}",
            r.seen("cookie")
        );
    }
    // A garbage cookie: a normal round-robin pick and a fresh valid cookie.
    let g: Vec<String> = garbage.iter().map(|r| r.backend()).collect();
    assert_ne!(g[0], g[1], "not pinned: {g:?}");
    let fresh: Vec<String> = garbage.iter().map(|r| set_cookie(r, "AWSALB").0).collect();
    assert_ne!(fresh[0], fresh[1]);
    assert!(fresh.contains(&pair), "one of them names {target} again");
    let back: Vec<String> = back.iter().map(|r| r.backend()).collect();
    assert_eq!(
        back,
        [&g[0], &g[0], &g[0], &g[1], &g[1], &g[1]].map(|s| s.clone()),
        "fresh cookies pin"
    );
}

/// HTTP/2 clients may send each cookie as its own field (RFC 9113 §8.2.3):
/// stickiness must find AWSALB among them, and a target spoken to over
/// HTTP/1.1 must get them joined into one Cookie field with "; " (a MUST of
/// the same section; HTTP/1.1 servers may read only one Cookie field).
#[test]
fn lb_cookie_over_http2_with_cookie_crumbs() {
    let bed = HttpBed::new(&config(&web(TWO, "", LB_STICKY), FORWARD_WEB)).unwrap();
    let _a = bed.backend(11, 80, "a").unwrap();
    let _b = bed.backend(12, 80, "b").unwrap();
    let _d = bed.start().unwrap();
    let (first, pinned) = in_ns(&bed.client, async || {
        let mut c = Client::connect(lb(), true).await.unwrap();
        let first = c.get("/", &[]).await.unwrap();
        let (pair, _) = set_cookie(&first, "AWSALB");
        let mut pinned = Vec::new();
        for _ in 0..6 {
            let crumbs = [("cookie", "theme=dark"), ("cookie", pair.as_str())];
            pinned.push(c.get("/", &crumbs).await.unwrap());
        }
        (first, pinned)
    })
    .unwrap();
    assert_eq!(first.status, 200);
    let (pair, _) = set_cookie(&first, "AWSALB");
    for r in &pinned {
        assert_eq!((r.status, r.backend()), (200, first.backend()), "pinned");
    }
    for r in &pinned {
        assert_eq!(
            r.seen("cookie"),
            [format!("theme=dark; {pair}")],
            "one Cookie field for the HTTP/1.1 target:\n{}",
            String::from_utf8_lossy(&r.body)
        );
    }
}

#[test]
fn app_cookie_pins_a_session_to_its_target() {
    let sticky = r#"
[target_group.stickiness]
enabled = true
type = "app_cookie"
cookie_name = "SESSION"
duration = "1h"
"#;
    let bed = HttpBed::new(&config(&web(TWO, "", sticky), FORWARD_WEB)).unwrap();
    let _a = bed.backend(11, 80, "a").unwrap();
    let _b = bed.backend(12, 80, "b").unwrap();
    let _d = bed.start().unwrap();
    let (login, pinned, anonymous) = in_ns(&bed.client, async || {
        let mut c = Client::connect(lb(), false).await.unwrap();
        let login = c.get("/cookie?name=SESSION", &[]).await.unwrap();
        let app = set_cookie(&login, "SESSION").0;
        let balancer = set_cookie(&login, "AWSALBAPP-0").0;
        let cookie = format!("{app}; {balancer}");
        let mut pinned = Vec::new();
        for _ in 0..10 {
            pinned.push(c.get("/", &[("cookie", cookie.as_str())]).await.unwrap());
        }
        let mut anonymous = Vec::new();
        for _ in 0..4 {
            anonymous.push(c.get("/", &[]).await.unwrap());
        }
        (login, pinned, anonymous)
    })
    .unwrap();
    assert_eq!(login.status, 200);
    let target = login.backend();
    // The application's cookie passes unchanged; the balancer adds its own.
    let app = set_cookie(&login, "SESSION");
    assert_eq!(
        app,
        (format!("SESSION=from-{target}"), "Path=/".to_string())
    );
    let (lb_pair, attrs) = set_cookie(&login, "AWSALBAPP-0");
    assert!(lb_pair.len() > "AWSALBAPP-0=".len(), "{lb_pair}");
    let left = expires_in(&attrs);
    assert!((3500..=3700).contains(&left), "expires in {left}s: {attrs}");
    for r in &pinned {
        assert_eq!(r.status, 200);
        assert_eq!(r.backend(), target, "session pinned");
        assert!(
            r.seen("cookie")
                .iter()
                .any(|c| c.contains(&format!("SESSION=from-{target}"))),
            "the session cookie reaches the target: {:?}",
            r.seen("cookie")
        );
        if sets(r, "AWSALBAPP-0") {
            assert_eq!(set_cookie(r, "AWSALBAPP-0").0, lb_pair);
        }
    }
    // Without the session, round robin as usual.
    let anon: Vec<String> = anonymous.iter().map(|r| r.backend()).collect();
    for pair in anon.windows(2) {
        assert_ne!(pair[0], pair[1], "not sticky without a session: {anon:?}");
    }
}

#[test]
fn a_cookie_for_a_target_that_is_gone_still_gets_an_answer() {
    let tg = web(TWO, "", LB_STICKY);
    let bed = HttpBed::new(&config(&tg, FORWARD_WEB)).unwrap();
    let a = bed.backend(11, 80, "a").unwrap();
    let b = bed.backend(12, 80, "b").unwrap();
    let d = bed.start().unwrap();
    let (a_cookie, b_cookie) = in_ns(&bed.client, async || {
        let mut c = Client::connect(lb(), false).await.unwrap();
        let mut cookies = (String::new(), String::new());
        for _ in 0..2 {
            let r = c.get("/", &[]).await.unwrap();
            let pair = set_cookie(&r, "AWSALB").0;
            if r.backend() == "a" {
                cookies.0 = pair;
            } else {
                cookies.1 = pair;
            }
        }
        cookies
    })
    .unwrap();
    assert!(
        !a_cookie.is_empty() && !b_cookie.is_empty(),
        "both targets answered"
    );

    // b stops: its cookie names a target that refuses connections now.
    drop(b);
    xalb_tests::admin::wait_for(
        "b's address to refuse connections",
        Duration::from_secs(30),
        || {
            bed.lb
                .run(|| {
                    std::net::TcpStream::connect_timeout(
                        &"10.231.2.12:80".parse().unwrap(),
                        Duration::from_secs(3),
                    )
                })
                .unwrap()
                .map_or_else(
                    |e| match e.kind() {
                        std::io::ErrorKind::ConnectionRefused => Ok(()),
                        _ => Err(format!("{e}")),
                    },
                    |_| Err("b still accepts".to_string()),
                )
        },
    );
    let replies = get_with_cookies(&bed, vec![b_cookie.clone(); 4]);
    for r in &replies {
        assert_eq!((r.status, r.backend()), (200, "a".to_string()));
        assert_eq!(
            set_cookie(r, "AWSALB").0,
            a_cookie,
            "re-pinned to the target that answered"
        );
    }

    // b leaves the configuration (a reload, so the cookie key is the same):
    // its cookie is well formed but names no target of the group any more.
    std::fs::write(
        &bed.config,
        config(
            &web(r#"{ address = "10.231.2.11" }"#, "", LB_STICKY),
            FORWARD_WEB,
        ),
    )
    .unwrap();
    let reloaded = xalb_tests::admin::admin_post(&bed, "/reload");
    assert_eq!(reloaded.status, 200, "reload: {:?}", reloaded.body);
    let before = a.requests();
    let replies = get_with_cookies(
        &bed,
        vec![b_cookie.clone(), a_cookie.clone(), b_cookie.clone()],
    );
    for r in &replies {
        assert_eq!((r.status, r.backend()), (200, "a".to_string()));
        assert_eq!(set_cookie(r, "AWSALB").0, a_cookie, "pinned to a now");
    }
    assert_eq!(a.requests() - before, 3);
    drop(d);
}

// ---------------------------------------------------------------------------
// Connections

#[test]
fn pipelined_requests_are_answered_in_order() {
    let bed = HttpBed::new(&config(&web(TWO, "", ""), FORWARD_WEB)).unwrap();
    let a = bed.backend(11, 80, "a").unwrap();
    let b = bed.backend(12, 80, "b").unwrap();
    let _d = bed.start().unwrap();
    let text = in_ns(&bed.client, async || {
        raw(
            lb(),
            b"GET /first HTTP/1.1\r\nHost: t\r\n\r\n\
              GET /second?x=2 HTTP/1.1\r\nHost: t\r\n\r\n\
              GET /third HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap()
    })
    .unwrap();
    assert_eq!(text.matches("HTTP/1.1 200 OK\r\n").count(), 3, "{text}");
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    let at = |s: &str| {
        text.find(s)
            .unwrap_or_else(|| panic!("{s:?} missing: {text}"))
    };
    let (p1, p2, p3) = (
        at("\nGET /first\n"),
        at("\nGET /second?x=2\n"),
        at("\nGET /third\n"),
    );
    assert!(p1 < p2 && p2 < p3, "responses out of order: {text}");
    // Round robin still applies to each pipelined request.
    let backends: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("x-backend: "))
        .collect();
    assert_eq!(backends, ["a", "b", "a"], "{text}");
    assert_eq!((a.requests(), b.requests()), (2, 1));
}

#[test]
fn http2_multiplexes_concurrent_requests_on_one_connection() {
    // The held requests wait for the test, not a clock: an idle timeout
    // (which bounds a target's answer) far longer than that wait.
    let bed = HttpBed::new(&xalb_tests::bed::http_config(
        "120s",
        &web(TWO, "", ""),
        FORWARD_WEB,
    ))
    .unwrap();
    let a = bed.backend(11, 80, "a").unwrap();
    let b = bed.backend(12, 80, "b").unwrap();
    let _d = bed.start().unwrap();
    let (a, b) = (Arc::new(a), Arc::new(b));
    let (a2, b2) = (a.clone(), b.clone());
    let (held, echoed) = in_ns(&bed.client, async move || {
        let Client::H2(sender) = Client::connect(lb(), true).await.unwrap() else {
            unreachable!("asked for HTTP/2")
        };
        let send = |uri: String| {
            let mut s = sender.clone();
            tokio::spawn(async move {
                let req = Request::get(uri).body(Full::new(Bytes::new())).unwrap();
                s.ready().await.unwrap();
                let resp = s.send_request(req).await.unwrap();
                let status = resp.status().as_u16();
                let body = resp.into_body().collect().await.unwrap().to_bytes();
                (status, String::from_utf8_lossy(&body).into_owned())
            })
        };
        // 20 requests the backends hold until released: all 20 are at the
        // backends at once (10 each, by round robin) only if the one
        // connection carries them concurrently.
        let tasks: Vec<_> = (0..20)
            .map(|i| send(format!("http://test/hold?i={i}")))
            .collect();
        until("10 held requests at each backend", || {
            (a2.in_flight(), b2.in_flight()) == (10, 10)
        })
        .await;
        a2.release();
        b2.release();
        let mut held = Vec::new();
        for t in tasks {
            held.push(t.await.unwrap());
        }
        // 20 concurrent requests for distinct paths: each stream gets its own answer.
        let tasks: Vec<_> = (0..20)
            .map(|i| send(format!("http://test/stream/{i}")))
            .collect();
        let mut echoed = Vec::new();
        for t in tasks {
            echoed.push(t.await.unwrap());
        }
        (held, echoed)
    })
    .unwrap();
    assert!(held.iter().all(|(s, _)| *s == 200), "{held:?}");
    let held_a = held.iter().filter(|(_, body)| body == "a\n").count();
    let held_b = held.iter().filter(|(_, body)| body == "b\n").count();
    assert_eq!((held_a, held_b), (10, 10), "{held:?}");
    assert_eq!(
        (a.peak_in_flight(), b.peak_in_flight()),
        (10, 10),
        "the most requests each backend had at once"
    );
    for (i, (status, body)) in echoed.iter().enumerate() {
        assert_eq!(*status, 200, "stream {i}: {body}");
        assert!(
            body.contains(&format!("\nGET /stream/{i}\n")),
            "stream {i} got another's answer: {body}"
        );
    }
    assert_eq!((a.requests(), b.requests()), (20, 20));
}

#[test]
fn lb_cookies_survive_a_restart_with_the_same_state_directory() {
    let bed = HttpBed::new(&config(&web(TWO, "", LB_STICKY), FORWARD_WEB)).unwrap();
    let _a = bed.backend(11, 80, "a").unwrap();
    let _b = bed.backend(12, 80, "b").unwrap();
    struct Remove(std::path::PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let state =
        Remove(std::env::temp_dir().join(format!("xalb-state-restart-{}", std::process::id())));
    let args = ["--state-dir", state.0.to_str().unwrap()];
    let d = Daemon::start(&bed.lb, &bed.config, &args).unwrap();
    let first = in_ns(&bed.client, async || get(lb(), "/", &[]).await.unwrap()).unwrap();
    let (pair, _) = set_cookie(&first, "AWSALB");
    d.stop().unwrap();
    assert!(
        state.0.join("sticky.key").exists(),
        "no key in the state directory"
    );

    let _d = Daemon::start(&bed.lb, &bed.config, &args).unwrap();
    let again = get_with_cookies(&bed, vec![pair.clone(); 6]);
    let target = first.backend();
    for r in &again {
        assert_eq!(r.status, 200);
        // With a key of its own the new process would not know the cookie,
        // and round robin would alternate.
        assert_eq!(
            r.backend(),
            target,
            "the cookie {pair} from before the restart"
        );
        assert_eq!(
            set_cookie(r, "AWSALB").0,
            pair,
            "the same value is re-issued"
        );
    }
}
