//! Listener rules and actions, end to end through the real `xalb run`: every
//! condition type, OR within a condition, AND across conditions, priority
//! order, the default action, forward (single and weighted, with group
//! stickiness), redirect and fixed-response.
//!
//! Routing tests give every route its own target group with one backend named
//! after the route, so the `x-backend` field of a response says which rule
//! (or the default action) a request took.

use std::collections::HashMap;
use std::net::SocketAddr;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use xalb_tests::bed::{lb, HttpBed};
use xalb_tests::daemon::Daemon;
use xalb_tests::http::{expires_in, get, in_ns, raw, set_cookie, Backend, Client, Reply};

const LB6: &str = "[fd00:231::10]:80";

fn lb6() -> SocketAddr {
    LB6.parse().unwrap()
}

/// A balancer with one HTTP listener on port 80, extra sections appended.
fn config(extra: &str, default_action: &str) -> String {
    xalb_tests::bed::http_config("3s", extra, default_action)
}

/// The port of route `i`'s group and backend (all on 10.231.2.11).
fn route_port(i: usize) -> u16 {
    8001 + i as u16
}

/// One target group per name, each with one target: 10.231.2.11:route_port(i).
/// Health checks are off: backends count every request, checks included, and
/// checks start at a random point of their interval.
fn groups(names: &[&str]) -> String {
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            format!(
                r#"
[[target_group]]
name = "{name}"
protocol = "HTTP"
port = {}
targets = [{{ address = "10.231.2.11" }}]

[target_group.health_check]
enabled = false
"#,
                route_port(i)
            )
        })
        .collect()
}

/// A `[[rule]]` on edge:80; `conditions` is the inside of the array.
fn rule(priority: u32, conditions: &str, action: &str) -> String {
    format!(
        r#"
[[rule]]
listener = "edge:80"
priority = {priority}
conditions = [{conditions}]
action = {action}
"#
    )
}

fn to(group: &str) -> String {
    format!(r#"{{ type = "forward", target_group = "{group}" }}"#)
}

/// A running balancer whose routes each forward to a group of one backend
/// named after the route; the default action forwards to "default".
/// Fields drop in order: the daemon, then the backends, then the namespaces.
struct Routes {
    _daemon: Daemon,
    backends: HashMap<&'static str, Backend>,
    bed: HttpBed,
}

fn routes(names: &[&'static str], rules: &str) -> Routes {
    let mut all = vec!["default"];
    all.extend_from_slice(names);
    let bed = HttpBed::new(&config(&(groups(&all) + rules), &to("default"))).unwrap();
    let backends = all
        .iter()
        .enumerate()
        .map(|(i, &name)| (name, bed.backend(11, route_port(i), name).unwrap()))
        .collect();
    let daemon = bed.start().unwrap();
    Routes {
        _daemon: daemon,
        backends,
        bed,
    }
}

/// One request of a routing table and the route it must take.
#[derive(Clone, Debug)]
struct Case {
    method: &'static str,
    path: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    want: &'static str,
}

fn case(path: &'static str, want: &'static str) -> Case {
    Case {
        method: "GET",
        path,
        headers: Vec::new(),
        want,
    }
}

impl Case {
    fn header(mut self, name: &'static str, value: &'static str) -> Case {
        self.headers.push((name, value));
        self
    }
    fn method(mut self, method: &'static str) -> Case {
        self.method = method;
        self
    }
}

/// Which backend answered (its `x-backend` field, so HEAD works too), or
/// the status and first body line when the balancer answered itself.
fn who(r: &Reply) -> String {
    match r.headers.get("x-backend") {
        Some(v) if r.status == 200 => v.to_str().unwrap().to_string(),
        _ => format!("{} {}", r.status, r.backend()),
    }
}

/// Sends every case over one HTTP/1.1 connection to `addr` and asserts the
/// route each one took. Host is "test" unless a case sets it.
fn expect_routes(r: &Routes, addr: SocketAddr, cases: &[Case]) {
    let owned = cases.to_vec();
    let got = in_ns(&r.bed.client, async move || {
        let mut c = Client::connect(addr, false).await.unwrap();
        let mut out = Vec::new();
        for case in owned {
            let mut b = Request::builder().method(case.method).uri(case.path);
            if !case
                .headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("host"))
            {
                b = b.header("host", "test");
            }
            for (k, v) in &case.headers {
                b = b.header(*k, *v);
            }
            let reply = c.send(b.body(Full::new(Bytes::new())).unwrap()).await;
            out.push(match reply {
                Ok(reply) => who(&reply),
                Err(e) => format!("error: {e:#}"),
            });
        }
        out
    })
    .unwrap();
    let show =
        |c: &Case, route: &str| format!("{} {} {:?} -> {route}", c.method, c.path, c.headers);
    let got: Vec<String> = cases.iter().zip(&got).map(|(c, g)| show(c, g)).collect();
    let want: Vec<String> = cases.iter().map(|c| show(c, c.want)).collect();
    assert_eq!(got, want);
}

// ---------------------------------------------------------------------------
// Conditions

#[test]
fn host_header_is_case_insensitive_with_wildcards() {
    let rules = [
        rule(
            1,
            r#"{ field = "host-header", values = ["*.example.com"] }"#,
            &to("wild"),
        ),
        rule(
            2,
            r#"{ field = "host-header", values = ["api-?.test.org"] }"#,
            &to("one"),
        ),
        rule(
            3,
            r#"{ field = "host-header", values = ["Exact.Example.NET"] }"#,
            &to("exact"),
        ),
    ]
    .concat();
    let r = routes(&["wild", "one", "exact"], &rules);
    expect_routes(
        &r,
        lb(),
        &[
            case("/", "wild").header("host", "a.example.com"),
            case("/", "wild").header("host", "A.EXAMPLE.COM"),
            case("/", "wild").header("host", "deep.sub.example.com"),
            case("/", "wild").header("host", "a.example.com:80"),
            case("/", "default").header("host", "example.com"),
            case("/", "default").header("host", "a.example.com.evil"),
            case("/", "default").header("host", "aexample.com"),
            case("/", "one").header("host", "api-1.test.org"),
            case("/", "one").header("host", "API-x.Test.Org"),
            case("/", "default").header("host", "api-12.test.org"),
            case("/", "default").header("host", "api-.test.org"),
            case("/", "exact").header("host", "exact.example.net"),
            case("/", "default").header("host", "exact.example.network"),
            case("/", "default"),
        ],
    );
    // HTTP/2: the :authority is the host.
    let got = in_ns(&r.bed.client, async || {
        let mut c = Client::connect(lb(), true).await.unwrap();
        let mut out = Vec::new();
        for uri in [
            "http://B.Example.Com/x",
            "http://api-7.test.org/",
            "http://test/",
        ] {
            let req = Request::get(uri).body(Full::new(Bytes::new())).unwrap();
            out.push(who(&c.send(req).await.unwrap()));
        }
        out
    })
    .unwrap();
    assert_eq!(got, ["wild", "one", "default"], "HTTP/2 authority routing");
}

#[test]
fn path_pattern_is_case_sensitive_with_wildcards_and_ignores_the_query() {
    let rules = [
        rule(
            1,
            r#"{ field = "path-pattern", values = ["/api/*"] }"#,
            &to("api"),
        ),
        rule(
            2,
            r#"{ field = "path-pattern", values = ["/img/??.png"] }"#,
            &to("img"),
        ),
        rule(
            3,
            r#"{ field = "path-pattern", values = ["/Exact"] }"#,
            &to("exact"),
        ),
        rule(
            4,
            r#"{ field = "path-pattern", values = ["*.css"] }"#,
            &to("css"),
        ),
    ]
    .concat();
    let r = routes(&["api", "img", "exact", "css"], &rules);
    expect_routes(
        &r,
        lb(),
        &[
            case("/api/", "api"),
            case("/api/v1/users", "api"),
            case("/api/v1?x=1", "api"),
            case("/API/v1", "default"),
            case("/api", "default"),
            case("/apiv1", "default"),
            case("/img/ab.png", "img"),
            case("/img/a.png", "default"),
            case("/img/abc.png", "default"),
            case("/img/ab.PNG", "default"),
            case("/Exact", "exact"),
            case("/Exact?q=/api/x", "exact"),
            case("/exact", "default"),
            case("/Exact/", "default"),
            case("/static/site.css", "css"),
            case("/static/site.css.map", "default"),
            case("/", "default"),
        ],
    );
    // The path reaches the target unchanged, query included.
    let reply = in_ns(&r.bed.client, async || {
        get(lb(), "/api/v1/Users?id=7&x", &[]).await.unwrap()
    })
    .unwrap();
    assert_eq!(reply.backend(), "api");
    assert!(
        String::from_utf8_lossy(&reply.body).contains("\nGET /api/v1/Users?id=7&x\n"),
        "{:?}",
        reply.body
    );
}

#[test]
fn http_header_name_is_case_insensitive_and_value_has_wildcards() {
    let rules = [
        rule(
            1,
            r#"{ field = "http-header", name = "X-Env", values = ["canary*"] }"#,
            &to("canary"),
        ),
        rule(
            2,
            r#"{ field = "http-header", name = "user-agent", values = ["*bot?v?"] }"#,
            &to("bot"),
        ),
    ]
    .concat();
    let r = routes(&["canary", "bot"], &rules);
    expect_routes(
        &r,
        lb(),
        &[
            case("/", "canary").header("x-env", "canary"),
            case("/", "canary").header("X-ENV", "Canary-42"),
            case("/", "default").header("x-env", "prod-canary"),
            case("/", "default").header("x-envx", "canary"),
            case("/", "default"),
            // A repeated header is tried instance by instance.
            case("/", "canary")
                .header("x-env", "prod")
                .header("x-env", "canary-2"),
            case("/", "bot").header("user-agent", "GoogleBot/v2"),
            case("/", "bot").header("User-Agent", "crawler-bot-v1"),
            case("/", "default").header("user-agent", "GoogleBot/v12"),
            case("/", "default").header("user-agent", "curl/8.0"),
        ],
    );
}

#[test]
fn http_request_method_is_exact_and_case_sensitive() {
    let rules = [
        rule(
            1,
            r#"{ field = "http-request-method", values = ["POST", "PUT"] }"#,
            &to("write"),
        ),
        rule(
            2,
            r#"{ field = "http-request-method", values = ["PURGE"] }"#,
            &to("purge"),
        ),
        rule(
            3,
            r#"{ field = "http-request-method", values = ["HEAD"] }"#,
            &to("head"),
        ),
    ]
    .concat();
    let r = routes(&["write", "purge", "head"], &rules);
    expect_routes(
        &r,
        lb(),
        &[
            case("/", "default"),
            case("/", "write").method("POST"),
            case("/", "write").method("PUT"),
            case("/", "default").method("DELETE"),
            case("/", "purge").method("PURGE"),
            case("/", "head").method("HEAD"),
            case("/", "default").method("post"),
            case("/", "default").method("PURGEALL"),
        ],
    );
}

#[test]
fn query_string_with_and_without_key_wildcards_and_percent_encoding() {
    let rules = [
        rule(
            1,
            r#"{ field = "query-string", values = [{ key = "version", value = "v2" }] }"#,
            &to("v2"),
        ),
        rule(
            2,
            r#"{ field = "query-string", values = [{ value = "debug" }] }"#,
            &to("debug"),
        ),
        rule(
            3,
            r#"{ field = "query-string", values = [{ key = "q", value = "a/b&c" }] }"#,
            &to("decoded"),
        ),
        rule(
            4,
            r#"{ field = "query-string", values = [{ key = "lang", value = "en-??" }] }"#,
            &to("lang"),
        ),
    ]
    .concat();
    let r = routes(&["v2", "debug", "decoded", "lang"], &rules);
    expect_routes(
        &r,
        lb(),
        &[
            case("/?version=v2", "v2"),
            case("/x?a=1&version=v2&b", "v2"),
            case("/?VERSION=V2", "v2"),
            case("/?version=v3", "default"),
            case("/?other=v2", "default"),
            case("/version=v2", "default"),
            case("/", "default"),
            // Without a key: any pair's value, or a bare token.
            case("/?debug", "debug"),
            case("/?x=debug", "debug"),
            case("/?a=1&mode=DEBUG", "debug"),
            case("/?debug=1", "default"),
            case("/?x=nodebug", "default"),
            // Keys and values are percent-decoded before matching.
            case("/?q=a%2Fb%26c", "decoded"),
            case("/?q=a%2fb%26c", "decoded"),
            case("/?%71=a/b%26c", "decoded"),
            case("/?q=a%2Fb", "default"),
            case("/?q=a/b&c", "default"),
            case("/?lang=en-us", "lang"),
            case("/?lang=EN-GB", "lang"),
            case("/?lang=en-usa", "default"),
            case("/?lang=en", "default"),
        ],
    );
}

#[test]
fn source_ip_matches_the_tcp_peer_v4_and_v6() {
    let rules = [
        rule(
            1,
            r#"{ field = "source-ip", values = ["10.231.0.3/32", "192.0.2.0/24", "2001:db8::/32"] }"#,
            &to("other"),
        ),
        rule(
            2,
            r#"{ field = "source-ip", values = ["10.231.0.2/32"] }"#,
            &to("me4"),
        ),
        rule(
            3,
            r#"{ field = "source-ip", values = ["fd00:231::/64"] }"#,
            &to("me6"),
        ),
    ]
    .concat();
    let r = routes(&["other", "me4", "me6"], &rules);
    // X-Forwarded-For is not the source: the TCP peer is.
    expect_routes(
        &r,
        lb(),
        &[
            case("/", "me4"),
            case("/", "me4").header("x-forwarded-for", "10.231.0.3"),
        ],
    );
    expect_routes(
        &r,
        lb6(),
        &[
            case("/", "me6"),
            case("/", "me6").header("x-forwarded-for", "2001:db8::1"),
        ],
    );
}

#[test]
fn source_ip_that_matches_no_client_falls_through() {
    let rules = rule(
        1,
        r#"{ field = "source-ip", values = ["10.231.0.0/31", "fd00:231::10/128"] }"#,
        &to("near"),
    );
    let r = routes(&["near"], &rules);
    expect_routes(&r, lb(), &[case("/", "default")]);
    expect_routes(&r, lb6(), &[case("/", "default")]);
}

/// RFC 9112 §3.2.2: a server receiving an absolute-form request-target MUST
/// ignore the Host field and use the target's host; RFC 9110 §7.2: a proxy
/// forwarding it MUST generate Host from the target URI. So the host that
/// host-header conditions see, and that the target receives, is the one in
/// the request line.
#[test]
fn absolute_form_request_target_decides_the_host() {
    let rules = rule(
        1,
        r#"{ field = "host-header", values = ["*.example.com"] }"#,
        &to("wild"),
    );
    let r = routes(&["wild"], &rules);
    let (a, b) = in_ns(&r.bed.client, async || {
        let a = raw(
            lb(),
            b"GET http://a.example.com/x HTTP/1.1\r\nHost: b.other.org\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
        let b = raw(
            lb(),
            b"GET http://b.other.org/x HTTP/1.1\r\nHost: a.example.com\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
        (a, b)
    })
    .unwrap();
    // (status line, backend, Host the backend saw)
    let view = |text: &str| {
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap_or("-")
                .to_string()
        };
        (
            text.lines().next().unwrap_or("").to_string(),
            field("x-backend: "),
            field("host: "),
        )
    };
    let ok = "HTTP/1.1 200 OK".to_string();
    assert_eq!(
        view(&b),
        (ok.clone(), "default".to_string(), "b.other.org".to_string()),
        "GET http://b.other.org/x with Host: a.example.com:\n{b}"
    );
    assert_eq!(
        view(&a),
        (ok, "wild".to_string(), "a.example.com".to_string()),
        "GET http://a.example.com/x with Host: b.other.org:\n{a}"
    );
}

// ---------------------------------------------------------------------------
// Combination, priority, default

#[test]
fn values_or_conditions_and_lowest_priority_first_then_default() {
    // Written out of priority order on purpose: 20, then 5, then 10.
    let rules = [
        rule(
            20,
            r#"{ field = "path-pattern", values = ["/shop/*", "/store/*"] }"#,
            &to("broad"),
        ),
        rule(
            5,
            r#"
  { field = "path-pattern", values = ["/shop/*"] },
  { field = "http-request-method", values = ["POST"] },
  { field = "http-header", name = "x-beta", values = ["1"] },
"#,
            &to("narrow"),
        ),
        rule(
            10,
            r#"
  { field = "host-header", values = ["shop.example.com", "store.example.com"] },
  { field = "path-pattern", values = ["/shop/*"] },
"#,
            &to("hosted"),
        ),
        // Two conditions of the same kind must both match.
        rule(
            30,
            r#"
  { field = "http-header", name = "x-a", values = ["1"] },
  { field = "http-header", name = "x-b", values = ["2"] },
"#,
            &to("both"),
        ),
    ]
    .concat();
    let r = routes(&["broad", "narrow", "hosted", "both"], &rules);
    expect_routes(
        &r,
        lb(),
        &[
            case("/shop/a", "broad"),
            case("/store/a", "broad"),
            case("/shop/a", "narrow")
                .method("POST")
                .header("x-beta", "1"),
            case("/shop/a", "broad").method("POST"),
            case("/shop/a", "broad").header("x-beta", "1"),
            case("/store/a", "broad")
                .method("POST")
                .header("x-beta", "1"),
            case("/shop/a", "hosted").header("host", "shop.example.com"),
            case("/shop/a", "hosted").header("host", "store.example.com"),
            case("/store/a", "broad").header("host", "shop.example.com"),
            case("/shop/a", "narrow")
                .method("POST")
                .header("host", "shop.example.com")
                .header("x-beta", "1"),
            case("/x", "both").header("x-a", "1").header("x-b", "2"),
            case("/x", "default").header("x-a", "1"),
            case("/x", "default").header("x-b", "2"),
            case("/other", "default"),
        ],
    );
    // Every request above reached exactly the backend its route names.
    let counts: HashMap<&str, u64> = r
        .backends
        .iter()
        .map(|(name, b)| (*name, b.requests()))
        .collect();
    let want: HashMap<&str, u64> = [
        ("broad", 6),
        ("narrow", 2),
        ("hosted", 2),
        ("both", 1),
        ("default", 3),
    ]
    .into_iter()
    .collect();
    assert_eq!(counts, want);
}

// ---------------------------------------------------------------------------
// Actions

#[test]
fn forward_to_one_group_spreads_over_its_targets_only() {
    let tgs = r#"
[[target_group]]
name = "api"
protocol = "HTTP"
port = 8080
targets = [{ address = "10.231.2.11" }, { address = "10.231.2.12" }]

[target_group.health_check]
enabled = false

[[target_group]]
name = "web"
protocol = "HTTP"
port = 80
targets = [{ address = "10.231.2.13" }]

[target_group.health_check]
enabled = false
"#;
    let rules = rule(
        1,
        r#"{ field = "path-pattern", values = ["/api/*"] }"#,
        &to("api"),
    );
    let bed = HttpBed::new(&config(&(tgs.to_string() + &rules), &to("web"))).unwrap();
    let a1 = bed.backend(11, 8080, "api-1").unwrap();
    let a2 = bed.backend(12, 8080, "api-2").unwrap();
    // Same hosts, the wrong port: must never be used by the api group.
    let wrong = bed.backend(11, 80, "wrong").unwrap();
    let w = bed.backend(13, 80, "web").unwrap();
    let _d = bed.start().unwrap();
    let names = in_ns(&bed.client, async || {
        let mut c = Client::connect(lb(), false).await.unwrap();
        let mut out = Vec::new();
        for i in 0..12 {
            let path = if i % 3 == 2 { "/home" } else { "/api/x" };
            out.push(c.get(path, &[]).await.unwrap().backend());
        }
        out
    })
    .unwrap();
    for (i, n) in names.iter().enumerate() {
        if i % 3 == 2 {
            assert_eq!(n, "web", "{names:?}");
        } else {
            assert!(n == "api-1" || n == "api-2", "{names:?}");
        }
    }
    assert_eq!(
        (a1.requests(), a2.requests(), w.requests(), wrong.requests()),
        (4, 4, 4, 0)
    );
}

const WEIGHTED_TGS: &str = r#"
[[target_group]]
name = "blue"
protocol = "HTTP"
port = 80
targets = [{ address = "10.231.2.11" }]

[target_group.health_check]
enabled = false

[[target_group]]
name = "green"
protocol = "HTTP"
port = 80
targets = [{ address = "10.231.2.12" }]

[target_group.health_check]
enabled = false

[[target_group]]
name = "retired"
protocol = "HTTP"
port = 80
targets = [{ address = "10.231.2.13" }]

[target_group.health_check]
enabled = false
"#;

#[test]
fn weighted_forward_splits_by_weight_and_never_picks_weight_zero() {
    let action = r#"{ type = "forward", target_groups = [
  { name = "blue", weight = 300 },
  { name = "green", weight = 100 },
  { name = "retired", weight = 0 },
] }"#;
    let bed = HttpBed::new(&config(WEIGHTED_TGS, action)).unwrap();
    let blue = bed.backend(11, 80, "blue").unwrap();
    let green = bed.backend(12, 80, "green").unwrap();
    let retired = bed.backend(13, 80, "retired").unwrap();
    let _d = bed.start().unwrap();
    const N: u64 = 1000;
    let replies = in_ns(&bed.client, async || {
        let mut c = Client::connect(lb(), false).await.unwrap();
        let mut out = Vec::new();
        for _ in 0..N {
            let r = c.get("/", &[]).await.unwrap();
            out.push((r.status, r.backend(), r.headers.contains_key("set-cookie")));
        }
        out
    })
    .unwrap();
    assert!(replies.iter().all(|(s, _, _)| *s == 200));
    assert!(
        replies.iter().all(|(_, _, cookie)| !cookie),
        "no group stickiness, no cookie"
    );
    let blue_n = replies.iter().filter(|(_, n, _)| n == "blue").count() as u64;
    let green_n = replies.iter().filter(|(_, n, _)| n == "green").count() as u64;
    assert_eq!(blue_n + green_n, N, "only blue and green answer");
    // 75% ± 6 points: over 1000 draws that is 4.4 standard deviations.
    assert!(
        (690..=810).contains(&blue_n),
        "blue got {blue_n} of {N}, want 75% ± 6 points"
    );
    assert_eq!(
        (blue.requests(), green.requests(), retired.requests()),
        (blue_n, green_n, 0)
    );
}

#[test]
fn weighted_forward_group_stickiness_pins_to_one_group() {
    // blue has two targets and its own lb_cookie stickiness; green one target.
    let tgs = r#"
[[target_group]]
name = "blue"
protocol = "HTTP"
port = 80
targets = [{ address = "10.231.2.11" }, { address = "10.231.2.12" }]

[target_group.health_check]
enabled = false

[target_group.stickiness]
enabled = true
type = "lb_cookie"

[[target_group]]
name = "green"
protocol = "HTTP"
port = 80
targets = [{ address = "10.231.2.13" }]

[target_group.health_check]
enabled = false
"#;
    let action = r#"{ type = "forward", target_groups = [
  { name = "blue", weight = 1 },
  { name = "green", weight = 1 },
], stickiness = "1h" }"#;
    let bed = HttpBed::new(&config(tgs, action)).unwrap();
    let _b1 = bed.backend(11, 80, "blue-1").unwrap();
    let _b2 = bed.backend(12, 80, "blue-2").unwrap();
    let _g = bed.backend(13, 80, "green").unwrap();
    let _d = bed.start().unwrap();
    let (fresh, pinned, garbage) = in_ns(&bed.client, async || {
        let mut c = Client::connect(lb(), false).await.unwrap();
        // Without cookies: both groups get traffic, each answer sets AWSALBTG.
        let mut fresh = Vec::new();
        for _ in 0..40 {
            fresh.push(c.get("/", &[]).await.unwrap());
        }
        // Pin to the group (and, for blue, the target) of a blue answer and
        // of a green answer.
        let mut pinned = Vec::new();
        for group in ["blue", "green"] {
            let first = fresh
                .iter()
                .find(|r| r.backend().starts_with(group))
                .unwrap();
            let mut cookies = vec![set_cookie(first, "AWSALBTG").0];
            if group == "blue" {
                cookies.push(set_cookie(first, "AWSALB").0);
            }
            let cookie = format!("theme=dark; {}", cookies.join("; "));
            let mut seq = Vec::new();
            for _ in 0..20 {
                let r = c.get("/", &[("cookie", cookie.as_str())]).await.unwrap();
                seq.push((r.backend(), set_cookie(&r, "AWSALBTG").0));
            }
            pinned.push((first.backend(), cookies[0].clone(), seq));
        }
        let mut garbage = Vec::new();
        for _ in 0..40 {
            garbage.push(
                c.get("/", &[("cookie", "AWSALBTG=not-a-valid-value")])
                    .await
                    .unwrap(),
            );
        }
        (fresh, pinned, garbage)
    })
    .unwrap();
    let groups = |rs: &[Reply]| -> (usize, usize) {
        let blue = rs
            .iter()
            .filter(|r| r.backend().starts_with("blue"))
            .count();
        let green = rs.iter().filter(|r| r.backend() == "green").count();
        (blue, green)
    };
    let (b, g) = groups(&fresh);
    assert!(b > 0 && g > 0 && b + g == 40, "both groups chosen: {b}/{g}");
    for r in &fresh {
        assert_eq!(r.status, 200);
        let (pair, attrs) = set_cookie(r, "AWSALBTG");
        let value = pair.strip_prefix("AWSALBTG=").unwrap();
        assert!(!value.is_empty(), "{pair}");
        assert!(attrs.contains("Path=/"), "{attrs}");
        assert!(!attrs.contains("Max-Age"), "ALB uses Expires: {attrs}");
        let left = expires_in(&attrs);
        assert!((3500..=3700).contains(&left), "expires in {left}s: {attrs}");
    }
    for (first, cookie, seq) in &pinned {
        for (backend, reissued) in seq {
            assert_eq!(backend, first, "pinned by {cookie}");
            assert_eq!(reissued, cookie, "the same group cookie is re-issued");
        }
    }
    // An unreadable cookie is ignored: a weighted pick and a fresh cookie.
    let (b, g) = groups(&garbage);
    assert!(b > 0 && g > 0 && b + g == 40, "garbage: {b}/{g}");
    for r in &garbage {
        let (pair, _) = set_cookie(r, "AWSALBTG");
        assert_ne!(pair, "AWSALBTG=not-a-valid-value");
        let group = if r.backend() == "green" { 1 } else { 0 };
        assert_eq!(pair, pinned[group].1, "fresh cookie names the chosen group");
    }
}

#[test]
fn redirects_build_location_from_the_request() {
    let rules = [
        rule(
            1,
            r#"{ field = "path-pattern", values = ["/secure/*"] }"#,
            r#"{ type = "redirect", status_code = "HTTP_301", protocol = "HTTPS", port = "443" }"#,
        ),
        rule(
            2,
            r#"{ field = "path-pattern", values = ["/moved/*"] }"#,
            r##"{ type = "redirect", status_code = "HTTP_302", host = "new.example.com", path = "/v2/#{path}", query = "#{query}&from=#{host}:#{port}" }"##,
        ),
        rule(
            3,
            r#"{ field = "path-pattern", values = ["/alt*"] }"#,
            r##"{ type = "redirect", status_code = "HTTP_302", port = "8080", path = "/#{host}/#{port}/#{path}" }"##,
        ),
    ]
    .concat();
    let r = routes(&[], &rules);
    let replies = in_ns(&r.bed.client, async || {
        let mut c = Client::connect(lb(), false).await.unwrap();
        let mut out = Vec::new();
        for (path, host) in [
            ("/secure/x?a=1&b=2", "test"),
            ("/secure/x", "test:80"),
            ("/secure/", "shop.example.com"),
            ("/moved/page?q=1", "test"),
            ("/moved/page", "old.example.com"),
            ("/alt?z", "test"),
            ("/plain", "test"),
        ] {
            out.push(c.get(path, &[("host", host)]).await.unwrap());
        }
        // HTTP/2: the :authority is #{host}.
        let mut c = Client::connect(lb(), true).await.unwrap();
        out.push(c.get("/secure/h2?v=1", &[]).await.unwrap());
        out
    })
    .unwrap();
    let got: Vec<(u16, String)> = replies
        .iter()
        .map(|r| {
            let loc = r
                .headers
                .get("location")
                .map_or("-", |v| v.to_str().unwrap());
            (r.status, loc.to_string())
        })
        .collect();
    assert_eq!(
        got,
        [
            (301, "https://test/secure/x?a=1&b=2".to_string()),
            (301, "https://test/secure/x".to_string()),
            (301, "https://shop.example.com/secure/".to_string()),
            (
                302,
                "http://new.example.com/v2/moved/page?q=1&from=test:80".to_string()
            ),
            (
                302,
                "http://new.example.com/v2/moved/page?from=old.example.com:80".to_string()
            ),
            (302, "http://test:8080/test/80/alt?z".to_string()),
            (200, "-".to_string()),
            (301, "https://test/secure/h2?v=1".to_string()),
        ]
    );
    // Redirects are answered by the balancer: only /plain reached a target.
    assert_eq!(r.backends["default"].requests(), 1);
}

#[test]
fn fixed_responses_answer_without_a_target() {
    let tgs = groups(&["web"]);
    let rules = [
        rule(
            1,
            r#"{ field = "path-pattern", values = ["/maintenance"] }"#,
            r#"{ type = "fixed-response", status_code = 503, content_type = "application/json", message_body = '{"down":true}' }"#,
        ),
        rule(
            2,
            r#"{ field = "path-pattern", values = ["/old"] }"#,
            r#"{ type = "fixed-response", status_code = "410", content_type = "text/html", message_body = "<h1>gone</h1>" }"#,
        ),
        rule(
            3,
            r#"{ field = "path-pattern", values = ["/ok"] }"#,
            r#"{ type = "fixed-response", status_code = 200 }"#,
        ),
        rule(
            4,
            r#"{ field = "path-pattern", values = ["/app/*"] }"#,
            &to("web"),
        ),
    ]
    .concat();
    let default = r#"{ type = "fixed-response", status_code = 404, content_type = "text/plain", message_body = "no route" }"#;
    let bed = HttpBed::new(&config(&(tgs + &rules), default)).unwrap();
    let web = bed.backend(11, route_port(0), "web").unwrap();
    let _d = bed.start().unwrap();
    let replies = in_ns(&bed.client, async || {
        let mut c = Client::connect(lb(), false).await.unwrap();
        let mut out = Vec::new();
        for path in [
            "/maintenance",
            "/old",
            "/ok",
            "/app/1",
            "/nothing",
            "/maintenance?x",
        ] {
            out.push(c.get(path, &[]).await.unwrap());
        }
        // HTTP/2 too.
        let mut c = Client::connect(lb(), true).await.unwrap();
        out.push(c.get("/old", &[]).await.unwrap());
        out
    })
    .unwrap();
    let view = |r: &Reply| {
        (
            r.status,
            r.headers
                .get("content-type")
                .map_or("-".to_string(), |v| v.to_str().unwrap().to_string()),
            String::from_utf8_lossy(&r.body).into_owned(),
        )
    };
    let s = |x: &str| x.to_string();
    assert_eq!(
        view(&replies[0]),
        (503, s("application/json"), s(r#"{"down":true}"#))
    );
    assert_eq!(view(&replies[1]), (410, s("text/html"), s("<h1>gone</h1>")));
    assert_eq!((replies[2].status, &replies[2].body[..]), (200, &b""[..]));
    assert_eq!(replies[3].status, 200);
    assert_eq!(replies[3].backend(), "web");
    assert_eq!(view(&replies[4]), (404, s("text/plain"), s("no route")));
    assert_eq!(
        view(&replies[5]).0,
        503,
        "the query does not affect the path"
    );
    assert_eq!(view(&replies[6]), (410, s("text/html"), s("<h1>gone</h1>")));
    assert_eq!(web.requests(), 1, "only /app/1 reached a target");
}
