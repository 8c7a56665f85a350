//! Loader tests: the seed example with its values and defaults, a file using
//! every feature, and one test per kind of mistake. Error tests assert the
//! line, the field path and the wording, because the message is the product.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

/// `examples/seed-alb.toml`, verbatim (also loaded from disk below).
const SEED: &str = r#"# The scenario the project grew from: an internet-facing Application Load Balancer
# with one HTTP:80 listener forwarding to a target group of two web servers,
# health-checked over HTTP, behind a security group that admits HTTP from anywhere.
# Addresses follow a small VPC (10.0.0.0/16): the balancer in the public subnet,
# one web server in each of two private subnets.

[[security_group]]
name = "alb-web"
description = "HTTP from anywhere"
ingress = [
  { protocol = "tcp", ports = "80", source = "0.0.0.0/0", description = "HTTP" },
  { protocol = "tcp", ports = "80", source = "::/0", description = "HTTP over IPv6" },
]

[[target_group]]
name = "web"
protocol = "HTTP"
port = 80
targets = [
  { address = "10.0.1.10" },
  { address = "10.0.2.10" },
]

[target_group.health_check]
protocol = "HTTP"
path = "/"
interval = "5s"
timeout = "2s"
healthy_threshold = 2
unhealthy_threshold = 2
matcher = "200"

[[load_balancer]]
name = "web-alb"
scheme = "internet-facing"
interfaces = ["eth0"]
addresses = ["10.0.0.10"]
security_groups = ["alb-web"]

[[listener]]
load_balancer = "web-alb"
protocol = "HTTP"
port = 80
default_action = { type = "forward", target_group = "web" }
"#;

/// A small valid file the error tests mutate: an HTTP listener, an HTTP and
/// a TCP target group. Only `[[...]]` sections may be appended to it (a bare
/// key would land in the last table).
const BASE: &str = r#"
[[security_group]]
name = "web"
ingress = [
  { protocol = "tcp", ports = "80", source = "0.0.0.0/0" },
]

[[target_group]]
name = "web"
protocol = "HTTP"
port = 80
targets = [{ address = "10.0.1.10" }]

[[target_group]]
name = "db"
protocol = "TCP"
port = 5432
targets = [{ address = "10.0.3.10" }]

[[load_balancer]]
name = "web-alb"
interfaces = ["eth0"]
addresses = ["10.0.0.10"]
security_groups = ["web"]

[[listener]]
load_balancer = "web-alb"
protocol = "HTTP"
port = 80
default_action = { type = "forward", target_group = "web" }
"#;

/// A TCP listener for `BASE`. Refused as not served yet, but the rest of it
/// is still checked, which the TCP compatibility tests rely on.
const TCP_LISTENER: &str = r#"
[[listener]]
load_balancer = "web-alb"
protocol = "TCP"
port = 5432
default_action = { type = "forward", target_group = "db" }
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    parse_str(text, "test.toml")
}

/// `BASE` with `from` replaced by `to` (which must be present).
fn base_with(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "BASE lacks {from:?}");
    BASE.replacen(from, to, 1)
}

fn base_plus(extra: &str) -> String {
    format!("{BASE}\n{extra}")
}

/// 1-based line of the last line containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.contains(needle))
        .last()
        .unwrap_or_else(|| panic!("{needle:?} not in the text"))
        .0
        + 1
}

/// Asserts that `text` is rejected with a diagnostic on the (last) line
/// containing `at`, for `field`, whose message contains every `parts`.
#[track_caller]
fn assert_error(text: &str, at: &str, field: &str, parts: &[&str]) {
    assert_error_at(text, line_of(text, at), field, parts);
}

/// [`assert_error`] with an explicit 1-based line.
#[track_caller]
fn assert_error_at(text: &str, line: usize, field: &str, parts: &[&str]) {
    let err = match parse(text) {
        Ok(_) => panic!("accepted, expected {field}: {parts:?}"),
        Err(e) => e,
    };
    let found = err
        .diagnostics()
        .iter()
        .any(|d| d.line == line && d.field == field && parts.iter().all(|p| d.message.contains(p)));
    assert!(
        found,
        "expected test.toml:{line}: {field}: ..{parts:?}..; got:\n{err}"
    );
    // The rendered form carries the same facts.
    let shown = err.to_string();
    assert!(shown.contains(&format!("test.toml:{line}:")), "{shown}");
    assert!(shown.contains(field), "{shown}");
}

/// A fresh self-signed certificate and its PKCS#8 key, both PEM.
fn self_signed() -> (String, rcgen::KeyPair) {
    let c = rcgen::generate_simple_self_signed(vec!["test.example".to_string()]).unwrap();
    (c.cert.pem(), c.key_pair)
}

/// A fresh directory with `cert.pem` and its `key.pem`, and `other.pem`
/// with its `other-key.pem`: two unrelated pairs.
fn cert_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("xalb-config-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (cert, key) in [("cert.pem", "key.pem"), ("other.pem", "other-key.pem")] {
        let (pem, key_pair) = self_signed();
        std::fs::write(dir.join(cert), pem).unwrap();
        std::fs::write(dir.join(key), key_pair.serialize_pem()).unwrap();
    }
    dir
}

/// Every diagnostic of `text`, parsed as `file`, rendered one per line.
fn diagnostics_of(text: &str, file: &Path) -> Vec<String> {
    match parse_str(text, &file.display().to_string()) {
        Ok(_) => Vec::new(),
        Err(e) => e.diagnostics().iter().map(|d| d.to_string()).collect(),
    }
}

const HTTPS_LISTENER: &str = r#"
[[listener]]
load_balancer = "web-alb"
protocol = "HTTPS"
port = 443
certificates = [{ cert = "cert.pem", key = "key.pem" }]
default_action = { type = "forward", target_group = "web" }
"#;

// ---------------------------------------------------------------------------
// Valid files.

#[test]
fn seed_example_parses_with_values_and_defaults() {
    let cfg = parse(SEED).unwrap();

    assert_eq!(cfg.security_groups.len(), 1);
    let sg = &cfg.security_groups[0];
    assert_eq!(sg.name, "alb-web");
    assert_eq!(sg.description, "HTTP from anywhere");
    assert_eq!(sg.ingress.len(), 2);
    assert_eq!(sg.ingress[0].protocol, IpProtocol::Tcp);
    assert_eq!(sg.ingress[0].ports, (80, 80));
    assert_eq!(sg.ingress[0].source, "0.0.0.0/0".parse().unwrap());
    assert_eq!(sg.ingress[0].description, "HTTP");
    assert_eq!(sg.ingress[1].source, "::/0".parse().unwrap());

    let tg = cfg.target_group("web").unwrap();
    assert_eq!(tg.protocol, TargetProtocol::Http);
    assert_eq!(tg.port, 80);
    assert_eq!(tg.algorithm, Algorithm::RoundRobin);
    assert_eq!(tg.deregistration_delay, Duration::from_secs(300));
    assert_eq!(tg.slow_start, Duration::ZERO);
    let addr = |s: &str| s.parse::<IpAddr>().unwrap();
    assert_eq!(
        tg.targets,
        vec![
            Target {
                address: addr("10.0.1.10"),
                port: 80,
                weight: 1
            },
            Target {
                address: addr("10.0.2.10"),
                port: 80,
                weight: 1
            },
        ]
    );
    let hc = &tg.health_check;
    assert!(hc.enabled);
    assert_eq!(hc.protocol, TargetProtocol::Http);
    assert_eq!(hc.port, HealthCheckPort::TrafficPort);
    assert_eq!(hc.path, "/");
    assert_eq!(hc.interval, Duration::from_secs(5));
    assert_eq!(hc.timeout, Duration::from_secs(2));
    assert_eq!(hc.healthy_threshold, 2);
    assert_eq!(hc.unhealthy_threshold, 2);
    assert_eq!(hc.matcher, Matcher(vec![(200, 200)]));
    assert_eq!(
        tg.stickiness,
        Stickiness {
            enabled: false,
            kind: StickinessType::LbCookie,
            duration: Duration::from_secs(86_400)
        }
    );

    let lb = cfg.load_balancer("web-alb").unwrap();
    assert_eq!(lb.scheme, Scheme::InternetFacing);
    assert!(lb.internal_networks.is_empty());
    assert_eq!(lb.interfaces, vec!["eth0"]);
    assert_eq!(lb.addresses, vec![addr("10.0.0.10")]);
    assert_eq!(lb.security_groups, vec!["alb-web"]);
    assert_eq!(lb.idle_timeout, Duration::from_secs(60));

    assert_eq!(cfg.listeners.len(), 1);
    let l = &cfg.listeners[0];
    assert_eq!(l.name(), "web-alb:80");
    assert_eq!(l.protocol, ListenerProtocol::Http);
    assert_eq!(
        l.default_action,
        Action::Forward {
            target_group: "web".into()
        }
    );
    assert!(l.certificates.is_empty());
    assert_eq!(l.ssl_policy, "ELBSecurityPolicy-TLS13-1-2-2021-06");
    assert!(l.rules.is_empty());

    assert_eq!(cfg.admin.listen, "127.0.0.1:9901".parse().unwrap());
    assert_eq!(
        cfg.access_log,
        AccessLog {
            enabled: false,
            path: "-".into(),
            format: "json".into()
        }
    );
}

/// The example files shipped with the project.
#[test]
fn example_files_on_disk_load() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut loaded = 0;
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "toml") {
            if let Err(e) = load(&p) {
                panic!("{}:\n{e}", p.display());
            }
            loaded += 1;
        }
    }
    assert!(loaded > 0, "no example in {}", dir.display());
}

#[test]
fn every_feature_parses_with_defaults_applied() {
    let text = r#"
[admin]
listen = "[::1]:9000"

[access_log]
enabled = true
path = "/var/log/xalb.json"

[[rule]]
listener = "public:443"
priority = 20
conditions = [
  { field = "host-header", values = ["api.example.com", "*.example.com"] },
  { field = "path-pattern", values = ["/api/*"] },
  { field = "http-header", name = "X-Env", values = ["canary*"] },
  { field = "http-request-method", values = ["GET", "HEAD"] },
  { field = "query-string", values = [{ key = "version", value = "v2" }, { value = "debug" }] },
  { field = "source-ip", values = ["10.1.2.3/8", "2001:db8::/32"] },
]
action = { type = "forward", target_groups = [{ name = "blue", weight = 90 }, { name = "green" }], stickiness = "1h" }

[[rule]]
listener = "public:443"
priority = 10
conditions = [{ field = "path-pattern", values = ["/old/*"] }]
action = { type = "redirect", status_code = "HTTP_302", path = "/new/#{path}" }

[[rule]]
listener = "public:443"
priority = 30
conditions = [{ field = "path-pattern", values = ["/down"] }]
action = { type = "fixed-response", status_code = "503", content_type = "text/plain", message_body = "down" }

[[security_group]]
name = "sg-a"
ingress = [
  { protocol = "tcp", ports = "8000-8100", source = "10.1.2.3/24" },
  { protocol = "udp", ports = 53, source = "10.0.0.0/8" },
  { protocol = "icmp", source = "10.0.0.0/8" },
  { protocol = "icmpv6", source = "fd00::/8" },
  { protocol = "all", source = "192.168.1.1/32" },
]

[[security_group]]
name = "empty"

[[target_group]]
name = "blue"
protocol = "HTTP"
port = 8080
algorithm = "least_outstanding_requests"
deregistration_delay = "0s"
slow_start = "30s"
targets = [{ address = "10.0.1.1", port = 9000, weight = 999 }, { address = "2001:db8::1" }]
[target_group.health_check]
enabled = false
port = 8081
path = "/healthz"
matcher = "200,302,400-499"
[target_group.stickiness]
enabled = true
type = "app_cookie"
cookie_name = "SESSION"
duration = "7d"

[[target_group]]
name = "green"
protocol = "HTTPS"
port = 8443
algorithm = "weighted_random"
[target_group.health_check]
port = "traffic-port"

[[target_group]]
name = "tcp-pool"
protocol = "TCP"
port = 5432
targets = [{ address = "10.0.3.1" }]

[[load_balancer]]
name = "public"
interfaces = ["eth0", "eth1"]
addresses = ["10.0.0.10", "2001:db8::10"]
security_groups = ["sg-a", "empty"]
idle_timeout = "4000s"

[[load_balancer]]
name = "private"
scheme = "internal"
internal_networks = ["10.0.0.0/16"]
interfaces = ["eth0"]
addresses = ["10.0.0.20"]
security_groups = ["sg-a"]

[[listener]]
load_balancer = "public"
protocol = "HTTP"
port = 80
default_action = { type = "redirect", status_code = "HTTP_301", protocol = "HTTPS", port = 443 }

[[listener]]
load_balancer = "public"
protocol = "HTTP"
port = 443
default_action = { type = "forward", target_group = "green" }
"#;
    let cfg = match parse(text) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };

    assert_eq!(cfg.admin.listen, "[::1]:9000".parse().unwrap());
    assert!(cfg.access_log.enabled);
    assert_eq!(cfg.access_log.path, "/var/log/xalb.json");
    assert_eq!(cfg.access_log.format, "json");

    let sg = cfg.security_group("sg-a").unwrap();
    // Host bits are cleared, as AWS does.
    assert_eq!(sg.ingress[0].source, "10.1.2.0/24".parse().unwrap());
    assert_eq!(sg.ingress[0].ports, (8000, 8100));
    assert_eq!(sg.ingress[1].ports, (53, 53));
    for r in &sg.ingress[2..] {
        assert_eq!(r.ports, (0, 65535), "{r:?}");
    }
    assert_eq!(sg.ingress[4].protocol, IpProtocol::All);
    assert!(cfg.security_group("empty").unwrap().ingress.is_empty());

    let blue = cfg.target_group("blue").unwrap();
    assert_eq!(blue.algorithm, Algorithm::LeastOutstandingRequests);
    assert_eq!(blue.deregistration_delay, Duration::ZERO);
    assert_eq!(blue.slow_start, Duration::from_secs(30));
    assert_eq!((blue.targets[0].port, blue.targets[0].weight), (9000, 999));
    assert_eq!((blue.targets[1].port, blue.targets[1].weight), (8080, 1));
    assert!(!blue.health_check.enabled);
    assert_eq!(blue.health_check.port, HealthCheckPort::Port(8081));
    assert_eq!(blue.health_check.interval, Duration::from_secs(30));
    assert_eq!(blue.health_check.timeout, Duration::from_secs(5));
    assert_eq!(blue.health_check.healthy_threshold, 5);
    assert_eq!(blue.health_check.unhealthy_threshold, 2);
    assert_eq!(
        blue.health_check.matcher,
        Matcher(vec![(200, 200), (302, 302), (400, 499)])
    );
    assert!(blue.health_check.matcher.matches(404));
    assert!(!blue.health_check.matcher.matches(301));
    assert_eq!(
        blue.stickiness,
        Stickiness {
            enabled: true,
            kind: StickinessType::AppCookie {
                cookie_name: "SESSION".into()
            },
            duration: Duration::from_secs(7 * 86_400)
        }
    );
    let green = cfg.target_group("green").unwrap();
    assert_eq!(green.health_check.protocol, TargetProtocol::Https);
    // A TCP group's health check defaults to TCP with a 10s timeout.
    let pool = cfg.target_group("tcp-pool").unwrap();
    assert_eq!(pool.health_check.protocol, TargetProtocol::Tcp);
    assert_eq!(pool.health_check.timeout, Duration::from_secs(10));

    let private = cfg.load_balancer("private").unwrap();
    assert_eq!(private.scheme, Scheme::Internal);
    assert_eq!(
        private.internal_networks,
        vec!["10.0.0.0/16".parse().unwrap()]
    );
    assert_eq!(
        cfg.load_balancer("public").unwrap().idle_timeout,
        Duration::from_secs(4000)
    );

    let http = &cfg.listeners[0];
    assert_eq!(
        http.default_action,
        Action::Redirect {
            status: RedirectStatus::Http301,
            protocol: "HTTPS".into(),
            host: "#{host}".into(),
            port: "443".into(),
            path: "/#{path}".into(),
            query: "#{query}".into(),
        }
    );
    let public = &cfg.listeners[1];
    assert_eq!(public.name(), "public:443");
    // Rules are attached to their listener, sorted by priority.
    let priorities: Vec<u32> = public.rules.iter().map(|r| r.priority).collect();
    assert_eq!(priorities, vec![10, 20, 30]);
    assert_eq!(
        public.rules[0].action,
        Action::Redirect {
            status: RedirectStatus::Http302,
            protocol: "#{protocol}".into(),
            host: "#{host}".into(),
            port: "#{port}".into(),
            path: "/new/#{path}".into(),
            query: "#{query}".into(),
        }
    );
    let r = &public.rules[1];
    assert_eq!(
        r.conditions,
        vec![
            Condition::HostHeader(vec!["api.example.com".into(), "*.example.com".into()]),
            Condition::PathPattern(vec!["/api/*".into()]),
            Condition::HttpHeader {
                name: "X-Env".into(),
                values: vec!["canary*".into()]
            },
            Condition::HttpRequestMethod(vec!["GET".into(), "HEAD".into()]),
            Condition::QueryString(vec![
                QueryMatch {
                    key: Some("version".into()),
                    value: "v2".into()
                },
                QueryMatch {
                    key: None,
                    value: "debug".into()
                },
            ]),
            Condition::SourceIp(vec![
                "10.0.0.0/8".parse().unwrap(),
                "2001:db8::/32".parse().unwrap()
            ]),
        ]
    );
    assert_eq!(
        r.action,
        Action::WeightedForward {
            target_groups: vec![
                WeightedGroup {
                    name: "blue".into(),
                    weight: 90
                },
                WeightedGroup {
                    name: "green".into(),
                    weight: 1
                },
            ],
            stickiness: Some(Duration::from_secs(3600)),
        }
    );
    assert_eq!(
        public.rules[2].action,
        Action::FixedResponse {
            status_code: 503,
            content_type: Some("text/plain".into()),
            message_body: "down".into()
        }
    );

    let summary = cfg.summary();
    assert!(
        summary.contains("security groups: 2 (5 ingress rules)"),
        "{summary}"
    );
    assert!(
        summary.contains("target groups: 3 (3 targets)"),
        "{summary}"
    );
    assert!(summary.contains("load balancers: 2"), "{summary}");
    assert!(
        summary.contains(
            "public: internet-facing, addresses 10.0.0.10 2001:db8::10, interfaces eth0 eth1"
        ),
        "{summary}"
    );
    assert!(summary.contains("private: internal"), "{summary}");
    assert!(summary.contains("listeners: 2 (3 rules)"), "{summary}");
    assert!(
        summary.contains("public:443: HTTP, 3 rules, default: forward to green"),
        "{summary}"
    );
}

#[test]
fn summary_of_the_seed() {
    let s = parse(SEED).unwrap().summary();
    assert_eq!(
        s,
        "security groups: 1 (2 ingress rules)\n\
         target groups: 1 (2 targets)\n  web: HTTP port 80, 2 targets\n\
         load balancers: 1\n  web-alb: internet-facing, addresses 10.0.0.10, interfaces eth0, security groups alb-web\n\
         listeners: 1 (0 rules)\n  web-alb:80: HTTP, 0 rules, default: forward to web"
    );
}

#[test]
fn section_order_does_not_matter() {
    // Listeners before their balancer and groups, a rule before its listener.
    let mut sections: Vec<&str> = BASE.split("\n\n").collect();
    sections.reverse();
    let rule = "[[rule]]\nlistener = \"web-alb:80\"\npriority = 1\nconditions = [{ field = \"path-pattern\", values = [\"/a\"] }]\naction = { type = \"forward\", target_group = \"web\" }";
    sections.insert(0, rule);
    let cfg = parse(&sections.join("\n\n")).unwrap();
    assert_eq!(cfg.listeners.len(), 1);
    assert_eq!(cfg.listeners[0].rules.len(), 1);
    // Model order is file order.
    assert_eq!(cfg.target_groups[0].name, "db");
}

// ---------------------------------------------------------------------------
// Error format and plumbing.

#[test]
fn display_is_file_line_column_field_message() {
    let text = SEED.replace("interval = \"5s\"", "interval = \"1s\"");
    let err = parse(&text).unwrap_err();
    let line = line_of(&text, "interval = \"1s\"");
    assert_eq!(
        err.to_string(),
        format!(
            "test.toml:{line}:12: target_group[0].health_check.interval: interval must be 5s-300s, got \"1s\""
        )
    );
    assert!(matches!(err, ConfigError::Invalid(_)));
}

#[test]
fn all_problems_are_listed_in_file_order() {
    let text = base_with("port = 80\ntargets", "port = 0\ntargets")
        .replace(
            "addresses = [\"10.0.0.10\"]",
            "addresses = [\"10.0.0.300\"]",
        )
        .replace("interfaces = [\"eth0\"]", "interfaces = []");
    let err = parse(&text).unwrap_err();
    let lines: Vec<String> = err.to_string().lines().map(String::from).collect();
    assert_eq!(lines.len(), 3, "{err}");
    assert!(
        lines[0].contains("target_group[0].port: port must be 1-65535, got 0"),
        "{err}"
    );
    assert!(
        lines[1].contains("load_balancer[0].interfaces: at least one interface"),
        "{err}"
    );
    assert!(
        lines[2].contains("load_balancer[0].addresses[0]: invalid IP address \"10.0.0.300\""),
        "{err}"
    );
    let ls: Vec<usize> = err.diagnostics().iter().map(|d| d.line).collect();
    assert!(ls.windows(2).all(|w| w[0] <= w[1]), "{ls:?}");
}

#[test]
fn load_reports_an_unreadable_file_by_name() {
    let err = load(Path::new("/nonexistent/xalb.toml")).unwrap_err();
    assert!(matches!(err, ConfigError::Io { .. }));
    let msg = err.to_string();
    assert!(
        msg.starts_with("/nonexistent/xalb.toml: cannot read"),
        "{msg}"
    );
    assert!(err.diagnostics().is_empty());
}

#[test]
fn load_names_the_file_in_diagnostics() {
    let dir = cert_dir("load");
    let file = dir.join("bad.toml");
    std::fs::write(
        &file,
        BASE.replace("port = 80\ndefault", "port = 0\ndefault"),
    )
    .unwrap();
    let msg = load(&file).unwrap_err().to_string();
    assert!(msg.starts_with(&format!("{}:", file.display())), "{msg}");
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---------------------------------------------------------------------------
// Syntax and structure (serde) errors.

#[test]
fn toml_syntax_error() {
    let err = parse("[[load_balancer]\nname = 'x'").unwrap_err();
    assert!(matches!(err, ConfigError::Syntax(_)), "{err:?}");
    let msg = err.to_string();
    assert!(msg.starts_with("test.toml:1:"), "{msg}");
    assert!(msg.contains("TOML syntax error"), "{msg}");

    let text = base_plus("[[rule]]\nlistener = \"web-alb:80\npriority = 1\n");
    let msg = parse(&text).unwrap_err().to_string();
    let line = line_of(&text, "listener = \"web-alb:80");
    assert!(msg.starts_with(&format!("test.toml:{line}:")), "{msg}");
}

#[test]
fn unknown_field() {
    let text = base_with(
        "name = \"db\"\n",
        "name = \"db\"\nalgoritm = \"round_robin\"\n",
    );
    assert_error(
        &text,
        "algoritm",
        "target_group[1].algoritm",
        &["unknown field `algoritm`", "allowed fields:", "`algorithm`"],
    );
    // Inside an inline table inside an array.
    let text = base_with("{ address = \"10.0.1.10\" }", "{ adress = \"10.0.1.10\" }");
    assert_error(
        &text,
        "adress",
        "target_group[0].targets[0].adress",
        &["unknown field `adress`", "`address`"],
    );
    // In a nested table, and in an action.
    let text = base_plus("[[target_group]]\nname = \"x\"\nprotocol = \"HTTP\"\nport = 1\n[target_group.health_check]\nintervall = \"5s\"\n");
    assert_error(
        &text,
        "intervall",
        "target_group[2].health_check.intervall",
        &["unknown field `intervall`"],
    );
    let text = base_with(
        "{ type = \"forward\", target_group = \"web\" }",
        "{ type = \"forward\", targetgroup = \"web\" }",
    );
    assert_error(
        &text,
        "targetgroup",
        "listener[0].default_action.targetgroup",
        &["unknown field `targetgroup`"],
    );
}

#[test]
fn unknown_top_level_key() {
    let text = format!("listen = \"0.0.0.0:80\"\n{BASE}");
    assert_error(
        &text,
        "listen =",
        "listen",
        &["unknown field `listen`", "`load_balancer`"],
    );
    let text = base_plus("[[listeners]]\nport = 1\n");
    assert_error(
        &text,
        "[[listeners]]",
        "listeners",
        &["unknown field `listeners`"],
    );
}

#[test]
fn wrong_type() {
    let text = base_with("port = 80\n", "port = \"80\"\n");
    assert_error(
        &text,
        "port = \"80\"",
        "target_group[0].port",
        &["invalid type: string \"80\", expected an integer"],
    );
    let text = base_with("addresses = [\"10.0.0.10\"]", "addresses = \"10.0.0.10\"");
    assert_error(
        &text,
        "addresses =",
        "load_balancer[0].addresses",
        &["expected an array"],
    );
    let text = base_plus("[access_log]\nenabled = \"yes\"\n");
    assert_error(
        &text,
        "enabled = \"yes\"",
        "access_log.enabled",
        &["expected true or false"],
    );
}

#[test]
fn single_table_instead_of_array_of_tables_gets_a_hint() {
    let text = "[load_balancer]\nname = \"x\"\n";
    assert_error(
        text,
        "[load_balancer]",
        "load_balancer",
        &["expected an array", "write each entry as [[load_balancer]]"],
    );
}

#[test]
fn missing_required_field_points_at_the_table() {
    let text =
        base_plus("[[listener]]\nload_balancer = \"web-alb\"\nprotocol = \"HTTP\"\nport = 81\n");
    assert_error(
        &text,
        "[[listener]]",
        "listener[1]",
        &["missing required field `default_action`"],
    );
    let text = base_with("{ address = \"10.0.1.10\" }", "{ port = 8080 }");
    assert_error(
        &text,
        "{ port = 8080 }",
        "target_group[0].targets[0]",
        &["missing required field `address`"],
    );
    let text = base_with(
        "{ type = \"forward\", target_group = \"web\" }",
        "{ target_group = \"web\" }",
    );
    assert_error(
        &text,
        "{ target_group = \"web\" }",
        "listener[0].default_action",
        &["missing required field `type`"],
    );
}

// ---------------------------------------------------------------------------
// Names and duplicates.

#[test]
fn duplicate_names() {
    let text = base_plus("[[security_group]]\nname = \"web\"\n");
    assert_error(
        &text,
        "name = \"web\"",
        "security_group[1].name",
        &[
            "duplicate security_group name \"web\"",
            "already defined at line 3",
        ],
    );
    let text = base_plus("[[target_group]]\nname = \"db\"\nprotocol = \"TCP\"\nport = 1\n");
    assert_error(
        &text,
        "name = \"db\"",
        "target_group[2].name",
        &[
            "duplicate target_group name \"db\"",
            "already defined at line 15",
        ],
    );
    let text = base_plus(
        "[[load_balancer]]\nname = \"web-alb\"\ninterfaces = [\"eth0\"]\naddresses = [\"10.0.0.11\"]\nsecurity_groups = [\"web\"]\n",
    );
    assert_error(
        &text,
        "name = \"web-alb\"",
        "load_balancer[1].name",
        &[
            "duplicate load_balancer name \"web-alb\"",
            "already defined at line 21",
        ],
    );
}

#[test]
fn invalid_names_say_what_is_allowed() {
    let text = base_with("name = \"db\"", "name = \"db_pool\"");
    assert_error(
        &text,
        "db_pool",
        "target_group[1].name",
        &[
            "invalid name \"db_pool\"",
            "1-32 letters, digits and hyphens",
        ],
    );
    let long = "a".repeat(33);
    let text = base_with(
        "name = \"web\"\ningress",
        &format!("name = \"{long}\"\ningress"),
    );
    assert_error(&text, &long, "security_group[0].name", &["invalid name"]);
    let text = base_with("name = \"web-alb\"", "name = \"-web-alb\"");
    assert_error(
        &text,
        "-web-alb",
        "load_balancer[0].name",
        &["not starting or ending with a hyphen"],
    );
}

#[test]
fn duplicate_listener_port_per_balancer() {
    let text = base_plus(
        "[[listener]]\nload_balancer = \"web-alb\"\nprotocol = \"HTTP\"\nport = 80 # again\ndefault_action = { type = \"forward\", target_group = \"web\" }\n",
    );
    assert_error(
        &text,
        "port = 80 # again",
        "listener \"web-alb:80\".port",
        &[
            "already has a listener on port 80 (line 29)",
            "unique per load balancer",
        ],
    );
}

#[test]
fn duplicate_rule_priority_per_listener() {
    let rule = |p: u32| {
        format!("[[rule]]\nlistener = \"web-alb:80\"\npriority = {p}\nconditions = [{{ field = \"path-pattern\", values = [\"/{p}\"] }}]\naction = {{ type = \"forward\", target_group = \"web\" }}\n")
    };
    let text = base_plus(&format!("{}\n{}\n{}", rule(5), rule(6), rule(5)));
    assert_error(
        &text,
        "priority = 5",
        "rule[2].priority",
        &[
            "listener \"web-alb:80\" already has a rule with priority 5",
            "unique per listener",
        ],
    );
}

// ---------------------------------------------------------------------------
// Security groups.

#[test]
fn bad_cidr() {
    let text = base_with("source = \"0.0.0.0/0\"", "source = \"0.0.0.0/33\"");
    assert_error(
        &text,
        "0.0.0.0/33",
        "security_group[0].ingress[0].source",
        &["invalid CIDR \"0.0.0.0/33\"", "e.g. \"10.0.0.0/16\""],
    );
    let text = base_with("source = \"0.0.0.0/0\"", "source = \"10.1.2.3\"");
    assert_error(
        &text,
        "10.1.2.3",
        "security_group[0].ingress[0].source",
        &["needs a prefix length", "\"10.1.2.3/32\""],
    );
    let text = base_with("source = \"0.0.0.0/0\"", "source = \"2001:db8::1\"");
    assert_error(
        &text,
        "2001:db8::1",
        "security_group[0].ingress[0].source",
        &["\"2001:db8::1/128\""],
    );
}

#[test]
fn bad_ports() {
    for (ports, expect) in [
        ("\"90-80\"", "invalid port range \"90-80\": the first port must not exceed the second, e.g. \"80-90\""),
        ("\"0\"", "invalid ports \"0\": expected a port \"80\" or a range \"8000-8100\", ports 1-65535"),
        ("\"70000\"", "invalid ports \"70000\""),
        ("\"80-\"", "invalid ports \"80-\""),
        ("\"http\"", "invalid ports \"http\""),
        ("0", "invalid port 0"),
    ] {
        let text = base_with("ports = \"80\"", &format!("ports = {ports}"));
        assert_error(&text, &format!("ports = {ports}"), "security_group[0].ingress[0].ports", &[expect]);
    }
}

#[test]
fn ports_required_for_tcp_and_udp() {
    let text = base_with(
        "{ protocol = \"tcp\", ports = \"80\",",
        "{ protocol = \"udp\",",
    );
    assert_error(
        &text,
        "protocol = \"udp\"",
        "security_group[0].ingress[0].ports",
        &["ports is required for udp rules", "\"8000-8100\""],
    );
}

#[test]
fn ports_absent_for_icmp_and_all() {
    for proto in ["icmp", "icmpv6", "all"] {
        let text = base_with("protocol = \"tcp\"", &format!("protocol = \"{proto}\""));
        assert_error(
            &text,
            "ports = \"80\"",
            "security_group[0].ingress[0].ports",
            &[
                &format!("ports must be absent for {proto} rules"),
                "tcp and udp only",
            ],
        );
    }
}

#[test]
fn unknown_protocol() {
    let text = base_with("protocol = \"tcp\"", "protocol = \"TCP\"");
    assert_error(
        &text,
        "protocol = \"TCP\", ports",
        "security_group[0].ingress[0].protocol",
        &[
            "unknown protocol \"TCP\"",
            "allowed: \"tcp\", \"udp\", \"icmp\", \"icmpv6\", \"all\"",
        ],
    );
    let text = base_with(
        "protocol = \"HTTP\"\nport = 80\n",
        "protocol = \"GRPC\"\nport = 80\n",
    );
    assert_error(
        &text,
        "GRPC",
        "target_group[0].protocol",
        &["unknown protocol \"GRPC\"", "\"HTTP\", \"HTTPS\", \"TCP\""],
    );
    let text = base_with(
        "protocol = \"HTTP\"\nport = 80\ndefault",
        "protocol = \"UDP\"\nport = 80\ndefault",
    );
    assert_error(
        &text,
        "UDP",
        "listener \"web-alb:80\".protocol",
        &["unknown protocol \"UDP\""],
    );
}

// ---------------------------------------------------------------------------
// References.

#[test]
fn unknown_references() {
    let text = base_with(
        "security_groups = [\"web\"]",
        "security_groups = [\"web\", \"ssh\"]",
    );
    assert_error(
        &text,
        "\"ssh\"",
        "load_balancer[0].security_groups[1]",
        &["unknown security_group \"ssh\"", "defined: \"web\""],
    );
    let text = base_with("target_group = \"web\"", "target_group = \"api\"");
    assert_error(
        &text,
        "\"api\"",
        "listener \"web-alb:80\".default_action.target_group",
        &["unknown target_group \"api\"", "defined: \"db\", \"web\""],
    );
    let text = base_plus(&TCP_LISTENER.replace("\"web-alb\"", "\"db-nlb\""));
    assert_error(
        &text,
        "\"db-nlb\"",
        "listener \"db-nlb:5432\".load_balancer",
        &["unknown load_balancer \"db-nlb\"", "defined: \"web-alb\""],
    );
    let text = base_plus(&format!(
        "{TCP_LISTENER}\n{}",
        "[[rule]]\nlistener = \"web-alb:8080\"\npriority = 1\nconditions = [{ field = \"path-pattern\", values = [\"/\"] }]\naction = { type = \"forward\", target_group = \"web\" }\n",
    ));
    assert_error(
        &text,
        "web-alb:8080",
        "rule[0].listener",
        &[
            "unknown listener \"web-alb:8080\"",
            "defined: \"web-alb:5432\", \"web-alb:80\"",
            "\"<load_balancer>:<port>\"",
        ],
    );
}

// ---------------------------------------------------------------------------
// Load balancers.

#[test]
fn internal_scheme_needs_internal_networks() {
    let text = base_with(
        "name = \"web-alb\"\n",
        "name = \"web-alb\"\nscheme = \"internal\"\n",
    );
    assert_error(
        &text,
        "[[load_balancer]]",
        "load_balancer[0].internal_networks",
        &[
            "an internal load balancer needs internal_networks",
            "\"10.0.0.0/16\"",
        ],
    );
    let text = base_with(
        "name = \"web-alb\"\n",
        "name = \"web-alb\"\nscheme = \"internal\"\ninternal_networks = []\n",
    );
    assert_error(
        &text,
        "internal_networks = []",
        "load_balancer[0].internal_networks",
        &["needs internal_networks"],
    );
}

#[test]
fn internet_facing_with_internal_networks() {
    let text = base_with(
        "name = \"web-alb\"\n",
        "name = \"web-alb\"\ninternal_networks = [\"10.0.0.0/8\"]\n",
    );
    assert_error(
        &text,
        "internal_networks",
        "load_balancer[0].internal_networks",
        &["applies to scheme = \"internal\" only"],
    );
    let text = base_with(
        "name = \"web-alb\"\n",
        "name = \"web-alb\"\nscheme = \"public\"\n",
    );
    assert_error(
        &text,
        "public",
        "load_balancer[0].scheme",
        &[
            "unknown scheme \"public\"",
            "\"internet-facing\", \"internal\"",
        ],
    );
}

#[test]
fn balancer_needs_addresses_interfaces_and_security_groups() {
    let text = base_with("addresses = [\"10.0.0.10\"]", "addresses = []");
    assert_error(
        &text,
        "addresses = []",
        "load_balancer[0].addresses",
        &["at least one address is required"],
    );
    let text = base_with("interfaces = [\"eth0\"]", "interfaces = []");
    assert_error(
        &text,
        "interfaces = []",
        "load_balancer[0].interfaces",
        &["at least one interface is required"],
    );
    let text = base_with("security_groups = [\"web\"]", "security_groups = []");
    assert_error(
        &text,
        "security_groups = []",
        "load_balancer[0].security_groups",
        &["at least one security group is required"],
    );
    let text = base_with(
        "interfaces = [\"eth0\"]",
        "interfaces = [\"eth0\", \"a/b\"]",
    );
    assert_error(
        &text,
        "a/b",
        "load_balancer[0].interfaces[1]",
        &["invalid interface name \"a/b\""],
    );
}

#[test]
fn bad_ip_addresses() {
    let text = base_with(
        "addresses = [\"10.0.0.10\"]",
        "addresses = [\"10.0.0.10/24\"]",
    );
    assert_error(
        &text,
        "10.0.0.10/24",
        "load_balancer[0].addresses[0]",
        &[
            "invalid IP address \"10.0.0.10/24\"",
            "without a prefix length",
        ],
    );
    let text = base_with("{ address = \"10.0.1.10\" }", "{ address = \"web1\" }");
    assert_error(
        &text,
        "web1",
        "target_group[0].targets[0].address",
        &[
            "invalid IP address \"web1\"",
            "IPv4 such as",
            "IPv6 such as",
        ],
    );
    let text = base_with("{ address = \"10.0.1.10\" }", "{ address = \"0.0.0.0\" }");
    assert_error(
        &text,
        "0.0.0.0\" }",
        "target_group[0].targets[0].address",
        &["cannot be a target address"],
    );
}

#[test]
fn an_address_belongs_to_one_balancer() {
    let text = base_plus(
        "[[load_balancer]]\nname = \"other\"\ninterfaces = [\"eth0\"]\naddresses = [\"10.0.0.10\"] # taken\nsecurity_groups = [\"web\"]\n",
    );
    assert_error(
        &text,
        "# taken",
        "load_balancer[1].addresses[0]",
        &["address 10.0.0.10 already belongs to load_balancer \"web-alb\" (line 23)"],
    );
}

#[test]
fn at_most_max_lbs_balancers() {
    let mut text = String::from("[[security_group]]\nname = \"sg\"\n");
    for i in 0..=lb_common::MAX_LBS {
        text.push_str(&format!(
            "[[load_balancer]]\nname = \"lb{i}\"\ninterfaces = [\"eth0\"]\naddresses = [\"10.9.{}.{}\"]\nsecurity_groups = [\"sg\"]\n",
            i / 200,
            i % 200 + 1
        ));
    }
    // The error points at the 65th [[load_balancer]] header.
    assert_error_at(
        &text,
        line_of(&text, "name = \"lb64\"") - 1,
        "load_balancer[64]",
        &["too many load balancers: 65 defined, at most 64"],
    );
}

// ---------------------------------------------------------------------------
// Listeners and actions.

#[test]
fn https_listener_needs_certificates() {
    let text = base_plus(
        "[[listener]]\nload_balancer = \"web-alb\"\nprotocol = \"HTTPS\"\nport = 443\ndefault_action = { type = \"forward\", target_group = \"web\" }\n",
    );
    assert_error(
        &text,
        "[[listener]]",
        "listener \"web-alb:443\".certificates",
        &["an HTTPS listener needs certificates", "at least one"],
    );
    let text =
        base_plus(&HTTPS_LISTENER.replace("[{ cert = \"cert.pem\", key = \"key.pem\" }]", "[]"));
    assert_error(
        &text,
        "certificates = []",
        "listener \"web-alb:443\".certificates",
        &["needs at least one certificate"],
    );
}

#[test]
fn certificate_files_must_be_readable() {
    let text = base_plus(HTTPS_LISTENER);
    // `test.toml` lives in the current directory, which has no cert.pem.
    assert_error(
        &text,
        "certificates",
        "listener \"web-alb:443\".certificates[0].cert",
        &[
            "cannot read cert.pem",
            "relative paths are resolved from the configuration file's directory",
        ],
    );
    let dir = cert_dir("https");
    let file = dir.join("x.toml");
    let key = dir.join("key.pem");
    std::fs::write(&key, "").unwrap();
    assert_eq!(
        diagnostics_of(&text, &file),
        [
            not_served(&file, &text, "HTTPS", 443),
            format!(
                "{}:{}: listener \"web-alb:443\".certificates[0].key: {} is empty; expected a PEM file (relative paths are resolved from the configuration file's directory)",
                file.display(),
                position(&text, "\"key.pem\""),
                key.display()
            ),
        ]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `LINE:COLUMN` (1-based) of `needle` on the last line that holds it.
fn position(text: &str, needle: &str) -> String {
    let line = line_of(text, needle);
    let column = text.lines().nth(line - 1).unwrap().find(needle).unwrap() + 1;
    format!("{line}:{column}")
}

/// The diagnostic refusing `BASE`'s listener of `protocol` on `port`.
fn not_served(file: &Path, text: &str, protocol: &str, port: u16) -> String {
    format!(
        "{}:{}: listener \"web-alb:{port}\".protocol: {protocol} listeners are not served yet (planned); use HTTP",
        file.display(),
        position(text, &format!("\"{protocol}\""))
    )
}

#[test]
fn https_listener_is_not_served_yet() {
    let dir = cert_dir("unserved-https");
    let file = dir.join("x.toml");
    let text = base_plus(HTTPS_LISTENER);
    // Readable, matching certificate and key: the protocol is the only problem.
    assert_eq!(
        diagnostics_of(&text, &file),
        [not_served(&file, &text, "HTTPS", 443)]
    );
    assert_error(
        &text,
        "protocol = \"HTTPS\"",
        "listener \"web-alb:443\".protocol",
        &["HTTPS listeners are not served yet (planned); use HTTP"],
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn tcp_listener_is_not_served_yet() {
    let text = base_plus(TCP_LISTENER);
    assert_eq!(
        diagnostics_of(&text, Path::new("test.toml")),
        [not_served(Path::new("test.toml"), &text, "TCP", 5432)]
    );
}

/// Everything else about HTTPS and TCP listeners is still checked and
/// passes: several certificates (relative and absolute paths), an
/// ssl_policy, rules on the HTTPS listener, a TCP listener's forward.
#[test]
fn unserved_listeners_are_otherwise_valid() {
    let dir = cert_dir("unserved-full");
    let file = dir.join("x.toml");
    let text = base_plus(&format!(
        "{}\n{TCP_LISTENER}\n{}",
        HTTPS_LISTENER
            .replace(
                "{ cert = \"cert.pem\", key = \"key.pem\" }",
                &format!(
                    "{{ cert = \"cert.pem\", key = \"key.pem\" }}, {{ cert = {:?}, key = {:?} }}",
                    dir.join("other.pem").display().to_string(),
                    dir.join("other-key.pem").display().to_string()
                ),
            )
            .replace(
                "port = 443\n",
                "port = 443\nssl_policy = \"ELBSecurityPolicy-TLS13-1-3-2021-06\"\n",
            ),
        "[[rule]]\nlistener = \"web-alb:443\"\npriority = 1\nconditions = [{ field = \"path-pattern\", values = [\"/a\"] }]\naction = { type = \"fixed-response\", status_code = 404 }\n",
    ));
    assert_eq!(
        diagnostics_of(&text, &file),
        [
            not_served(&file, &text, "HTTPS", 443),
            not_served(&file, &text, "TCP", 5432),
        ]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The certificate `text`'s first (HTTPS) listener points at, as a field.
const CERT0: &str = "listener \"web-alb:443\".certificates[0]";

#[test]
fn certificate_must_be_a_pem_certificate() {
    let dir = cert_dir("cert-not-pem");
    let file = dir.join("x.toml");
    let text = base_plus(HTTPS_LISTENER);
    let cert = dir.join("cert.pem");
    let c = cert.display();
    let expect = |message: String| {
        let want = format!(
            "{}:{}: {CERT0}.cert: {message}",
            file.display(),
            position(&text, "\"cert.pem\""),
        );
        // Nothing is said about the key: there is nothing to compare it with.
        assert_eq!(
            diagnostics_of(&text, &file),
            [not_served(&file, &text, "HTTPS", 443), want]
        );
    };
    let no_block = format!(
        "{c} is not a PEM certificate file: it has no \"-----BEGIN CERTIFICATE-----\" block"
    );

    std::fs::write(&cert, "not a certificate\n").unwrap();
    expect(no_block.clone());
    // A key is not a certificate.
    std::fs::copy(dir.join("key.pem"), &cert).unwrap();
    expect(no_block);
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nMIIB\n").unwrap();
    expect(format!(
        "{c} is not a valid PEM certificate file: a section has no \"-----END CERTIFICATE-----\" line"
    ));
    // PEM, but no X.509 inside.
    std::fs::write(
        &cert,
        "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    expect(format!(
        "{c}: the first certificate is not valid X.509 (BadEncoding)"
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn key_must_be_a_pem_private_key() {
    let dir = cert_dir("key-not-pem");
    let file = dir.join("x.toml");
    let text = base_plus(HTTPS_LISTENER);
    let key = dir.join("key.pem");
    let k = key.display();
    let expect = |message: String| {
        let want = format!(
            "{}:{}: {CERT0}.key: {message}",
            file.display(),
            position(&text, "\"key.pem\""),
        );
        assert_eq!(
            diagnostics_of(&text, &file),
            [not_served(&file, &text, "HTTPS", 443), want]
        );
    };

    // A certificate is not a key.
    std::fs::copy(dir.join("cert.pem"), &key).unwrap();
    expect(format!("{k} is not a PEM private key file: it has no \"BEGIN PRIVATE KEY\", \"BEGIN RSA PRIVATE KEY\" or \"BEGIN EC PRIVATE KEY\" block"));
    std::fs::write(&key, "-----BEGIN PRIVATE KEY-----\nMIIB\n").unwrap();
    expect(format!(
        "{k} is not a valid PEM private key file: a section has no \"-----END PRIVATE KEY-----\" line"
    ));
    // PEM, but no key inside.
    std::fs::write(
        &key,
        "-----BEGIN PRIVATE KEY-----\naGVsbG8=\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    expect(format!("{k} is not a usable private key (failed to parse private key as RSA, ECDSA, or EdDSA); RSA (2048 bits or more), ECDSA P-256/P-384 and Ed25519 keys are supported"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// PKCS#8 is not the only form: SEC1 (`BEGIN EC PRIVATE KEY`) is accepted.
#[test]
fn sec1_keys_are_accepted() {
    let dir = cert_dir("sec1");
    let file = dir.join("x.toml");
    let (pem, key_pair) = self_signed();
    std::fs::write(dir.join("cert.pem"), pem).unwrap();
    let sec1 = sec1_of_pkcs8(&key_pair.serialize_der()).to_vec();
    std::fs::write(dir.join("key.pem"), pem_block("EC PRIVATE KEY", &sec1)).unwrap();
    let text = base_plus(HTTPS_LISTENER);
    assert_eq!(
        diagnostics_of(&text, &file),
        [not_served(&file, &text, "HTTPS", 443)]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The ECPrivateKey (SEC1) inside a PKCS#8 PrivateKeyInfo:
/// SEQUENCE { INTEGER version, SEQUENCE algorithm, OCTET STRING key }.
fn sec1_of_pkcs8(der: &[u8]) -> &[u8] {
    // One DER element at the start of `d`: (tag, contents, rest).
    fn element(d: &[u8]) -> (u8, &[u8], &[u8]) {
        let (len, header) = match d[1] {
            n if n < 0x80 => (n as usize, 2),
            n => {
                let k = (n & 0x7f) as usize;
                let len = d[2..2 + k].iter().fold(0, |a, &b| a << 8 | b as usize);
                (len, 2 + k)
            }
        };
        (d[0], &d[header..header + len], &d[header + len..])
    }
    let (_, info, _) = element(der);
    let (_, _, rest) = element(info); // version
    let (_, _, rest) = element(rest); // algorithm
    let (tag, key, _) = element(rest);
    assert_eq!(tag, 0x04, "an OCTET STRING");
    key
}

/// `der` as a PEM block (base64 in lines of 64).
fn pem_block(label: &str, der: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::new();
    for chunk in der.chunks(3) {
        let n = chunk.iter().fold(0u32, |a, &b| a << 8 | b as u32) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

#[test]
fn key_must_match_its_certificate() {
    let dir = cert_dir("mismatch");
    let file = dir.join("x.toml");
    // Certificate A with key B.
    let text = base_plus(&HTTPS_LISTENER.replace("key.pem", "other-key.pem"));
    assert_eq!(
        diagnostics_of(&text, &file),
        [
            not_served(&file, &text, "HTTPS", 443),
            format!(
                "{}:{}: {CERT0}.key: key {} does not match certificate {} (the first certificate in the file)",
                file.display(),
                position(&text, "\"other-key.pem\""),
                dir.join("other-key.pem").display(),
                dir.join("cert.pem").display()
            ),
        ]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// One `xalb check` run names every certificate problem, not the first.
#[test]
fn every_certificate_problem_is_reported_at_once() {
    let dir = cert_dir("all-at-once");
    let file = dir.join("x.toml");
    std::fs::write(dir.join("junk.pem"), "junk\n").unwrap();
    let text = base_plus(&HTTPS_LISTENER.replace(
        "[{ cert = \"cert.pem\", key = \"key.pem\" }]",
        "[\n  { cert = \"missing.pem\", key = \"key.pem\" },\n  { cert = \"junk.pem\", key = \"key.pem\" },\n  { cert = \"other.pem\", key = \"key.pem\" },\n]",
    ));
    let diags = diagnostics_of(&text, &file);
    assert_eq!(diags.len(), 4, "{diags:#?}");
    let has = |needle: &str, part: &str| {
        let line = line_of(&text, needle);
        assert!(
            diags
                .iter()
                .any(|d| d.starts_with(&format!("{}:{line}:", file.display())) && d.contains(part)),
            "line {line}: {part}: {diags:#?}"
        );
    };
    has("protocol = \"HTTPS\"", "HTTPS listeners are not served yet");
    has("missing.pem", "certificates[0].cert: cannot read");
    has("junk.pem", "certificates[1].cert: ");
    has("junk.pem", "junk.pem is not a PEM certificate file");
    has("other.pem", "certificates[2].key: key ");
    has("other.pem", "does not match certificate");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn certificates_and_ssl_policy_only_on_https() {
    let text = base_with(
        "port = 80\ndefault_action",
        "port = 80\ncertificates = [{ cert = \"c.pem\", key = \"k.pem\" }]\nssl_policy = \"ELBSecurityPolicy-2016-08\"\ndefault_action",
    );
    assert_error(
        &text,
        "certificates = ",
        "listener \"web-alb:80\".certificates",
        &["certificates apply to HTTPS listeners only; this listener is HTTP"],
    );
    assert_error(
        &text,
        "ssl_policy",
        "listener \"web-alb:80\".ssl_policy",
        &["ssl_policy applies to HTTPS listeners only"],
    );
}

#[test]
fn tcp_target_group_behind_http_listener() {
    let text = base_with("target_group = \"web\"", "target_group = \"db\"");
    assert_error_at(
        &text,
        30,
        "listener \"web-alb:80\".default_action.target_group",
        &[
            "target group \"db\" is TCP",
            "TCP target groups serve TCP listeners only; this listener is HTTP",
        ],
    );
    // Also in a rule's weighted forward.
    let text = base_plus(
        "[[rule]]\nlistener = \"web-alb:80\"\npriority = 1\nconditions = [{ field = \"path-pattern\", values = [\"/\"] }]\naction = { type = \"forward\", target_groups = [{ name = \"web\" }, { name = \"db\" }] }\n",
    );
    assert_error(
        &text,
        "target_groups = [",
        "rule[0].action.target_groups[1].name",
        &["target group \"db\" is TCP"],
    );
}

#[test]
fn http_target_group_behind_tcp_listener() {
    let text = base_plus(&TCP_LISTENER.replace("target_group = \"db\"", "target_group = \"web\""));
    assert_error(
        &text,
        "target_group = \"web\"",
        "listener \"web-alb:5432\".default_action.target_group",
        &["target group \"web\" is HTTP", "needs a TCP target group"],
    );
}

#[test]
fn rules_need_an_http_listener() {
    let text = base_plus(&format!(
        "{TCP_LISTENER}\n{}",
        "[[rule]]\nlistener = \"web-alb:5432\"\npriority = 1\nconditions = [{ field = \"source-ip\", values = [\"10.0.0.0/8\"] }]\naction = { type = \"forward\", target_group = \"db\" }\n",
    ));
    assert_error(
        &text,
        "listener = \"web-alb:5432\"",
        "rule[0].listener",
        &["listener \"web-alb:5432\" is TCP; rules need an HTTP or HTTPS listener"],
    );
}

#[test]
fn redirect_and_fixed_response_need_an_http_listener() {
    let text = base_plus(&TCP_LISTENER.replace(
        "{ type = \"forward\", target_group = \"db\" }",
        "{ type = \"fixed-response\", status_code = 503 }",
    ));
    assert_error(
        &text,
        "fixed-response",
        "listener \"web-alb:5432\".default_action.type",
        &[
            "fixed-response actions need an HTTP or HTTPS listener",
            "TCP target groups",
        ],
    );
    let text = base_plus(&TCP_LISTENER.replace(
        "{ type = \"forward\", target_group = \"db\" }",
        "{ type = \"redirect\", status_code = \"HTTP_301\", protocol = \"HTTPS\" }",
    ));
    assert_error(
        &text,
        "redirect",
        "listener \"web-alb:5432\".default_action.type",
        &["redirect actions need an HTTP or HTTPS listener"],
    );
}

#[test]
fn unknown_action_type_and_misplaced_fields() {
    let text = base_with(
        "type = \"forward\", target_group = \"web\"",
        "type = \"authenticate-oidc\", target_group = \"web\"",
    );
    assert_error(
        &text,
        "authenticate-oidc",
        "listener \"web-alb:80\".default_action.type",
        &[
            "unknown type \"authenticate-oidc\"",
            "\"forward\", \"redirect\", \"fixed-response\"",
        ],
    );
    let text = base_with(
        "type = \"forward\", target_group = \"web\"",
        "type = \"forward\", target_group = \"web\", host = \"x\"",
    );
    assert_error(
        &text,
        "host = \"x\"",
        "listener \"web-alb:80\".default_action.host",
        &[
            "host does not belong in a forward action",
            "target_group, target_groups, stickiness",
        ],
    );
}

// ---------------------------------------------------------------------------
// Target groups.

fn with_health_check(lines: &str) -> String {
    base_with(
        "targets = [{ address = \"10.0.1.10\" }]\n",
        &format!(
            "targets = [{{ address = \"10.0.1.10\" }}]\n[target_group.health_check]\n{lines}\n"
        ),
    )
}

fn tcp_with_health_check(lines: &str) -> String {
    base_with(
        "targets = [{ address = \"10.0.3.10\" }]\n",
        &format!(
            "targets = [{{ address = \"10.0.3.10\" }}]\n[target_group.health_check]\n{lines}\n"
        ),
    )
}

#[test]
fn health_check_timeout_must_be_less_than_interval() {
    let text = with_health_check("interval = \"10s\"\ntimeout = \"10s\"");
    assert_error(
        &text,
        "timeout = \"10s\"",
        "target_group[0].health_check.timeout",
        &["timeout (10s) must be less than interval (10s)"],
    );
    // Against a default: a TCP check's timeout is 10s.
    let text = tcp_with_health_check("interval = \"10s\"");
    assert_error(
        &text,
        "interval = \"10s\"",
        "target_group[1].health_check.interval",
        &["timeout (10s, the default for TCP health checks) must be less than interval (10s)"],
    );
}

#[test]
fn health_check_ranges() {
    for (line, field, expect) in [
        (
            "interval = \"1s\"",
            "interval",
            "interval must be 5s-300s, got \"1s\"",
        ),
        (
            "interval = \"301s\"",
            "interval",
            "interval must be 5s-300s, got \"301s\"",
        ),
        (
            "timeout = \"1s\"",
            "timeout",
            "timeout must be 2s-120s, got \"1s\"",
        ),
        (
            "healthy_threshold = 11",
            "healthy_threshold",
            "healthy_threshold must be 2-10, got 11",
        ),
        (
            "unhealthy_threshold = 1",
            "unhealthy_threshold",
            "unhealthy_threshold must be 2-10, got 1",
        ),
        (
            "port = 0",
            "port",
            "must be \"traffic-port\" or a port number 1-65535, got 0",
        ),
        (
            "port = \"traffic\"",
            "port",
            "must be \"traffic-port\" or a port number 1-65535, got \"traffic\"",
        ),
        (
            "protocol = \"TCP\" # hc",
            "protocol",
            "HTTP/HTTPS target groups cannot use TCP health checks",
        ),
    ] {
        let text = with_health_check(line);
        assert_error(
            &text,
            line,
            &format!("target_group[0].health_check.{field}"),
            &[expect],
        );
    }
}

#[test]
fn bad_matcher() {
    for (m, expect) in [
        ("\"600\"", "invalid matcher \"600\": code 600 is out of range; expected codes 200-499"),
        ("\"199\"", "code 199 is out of range"),
        ("\"300-200\"", "invalid matcher \"300-200\": range 300-200 is reversed, write 200-300"),
        ("\"abc\"", "invalid matcher \"abc\": expected codes 200-499 as \"200\", \"200,302\" or \"200-399\""),
        ("\"200,\"", "invalid matcher \"200,\""),
    ] {
        let text = with_health_check(&format!("matcher = {m}"));
        assert_error(&text, "matcher", "target_group[0].health_check.matcher", &[expect]);
    }
    let text = tcp_with_health_check("matcher = \"200\"");
    assert_error(
        &text,
        "matcher",
        "target_group[1].health_check.matcher",
        &["matcher applies to HTTP/HTTPS health checks only"],
    );
}

#[test]
fn health_check_path() {
    let text = with_health_check("path = \"health\"");
    assert_error(
        &text,
        "path = \"health\"",
        "target_group[0].health_check.path",
        &["path \"health\" must start with \"/\""],
    );
    let text = tcp_with_health_check("path = \"/health\"");
    assert_error(
        &text,
        "path = \"/health\"",
        "target_group[1].health_check.path",
        &["path applies to HTTP/HTTPS health checks only; this health check uses TCP"],
    );
}

#[test]
fn target_group_ranges() {
    for (from, to, field, expect) in [
        (
            "port = 80\n",
            "port = 70000\n",
            "target_group[0].port",
            "port must be 1-65535, got 70000",
        ),
        (
            "port = 80\n",
            "port = 80\nslow_start = \"10s\"\n",
            "target_group[0].slow_start",
            "slow_start must be 0s (off) or 30s-900s, got \"10s\"",
        ),
        (
            "port = 80\n",
            "port = 80\nslow_start = \"901s\"\n",
            "target_group[0].slow_start",
            "got \"901s\"",
        ),
        (
            "port = 80\n",
            "port = 80\nderegistration_delay = \"3601s\"\n",
            "target_group[0].deregistration_delay",
            "deregistration_delay must be 0s-3600s, got \"3601s\"",
        ),
        (
            "port = 80\n",
            "port = 80\nalgorithm = \"random\"\n",
            "target_group[0].algorithm",
            "unknown algorithm \"random\"; allowed: \"round_robin\"",
        ),
        (
            "{ address = \"10.0.1.10\" }",
            "{ address = \"10.0.1.10\", weight = 0 }",
            "target_group[0].targets[0].weight",
            "weight must be 1-999, got 0",
        ),
        (
            "{ address = \"10.0.1.10\" }",
            "{ address = \"10.0.1.10\", weight = 1000 }",
            "target_group[0].targets[0].weight",
            "weight must be 1-999, got 1000",
        ),
        (
            "{ address = \"10.0.1.10\" }",
            "{ address = \"10.0.1.10\", port = 0 }",
            "target_group[0].targets[0].port",
            "port must be 1-65535, got 0",
        ),
    ] {
        let text = base_with(from, to);
        let at = to.trim().lines().last().unwrap();
        assert_error(&text, at, field, &[expect]);
    }
}

#[test]
fn algorithm_is_for_http_groups() {
    let text = base_with(
        "port = 5432\ntargets",
        "port = 5432\nalgorithm = \"weighted_random\"\ntargets",
    );
    assert_error(
        &text,
        "weighted_random",
        "target_group[1].algorithm",
        &["TCP groups are balanced by flow hash"],
    );
}

#[test]
fn duplicate_targets() {
    let text = base_with(
        "[{ address = \"10.0.1.10\" }]",
        "[{ address = \"10.0.1.10\" }, { address = \"10.0.1.11\" }, { address = \"10.0.1.10\", port = 80 }]",
    );
    assert_error(
        &text,
        "10.0.1.11",
        "target_group[0].targets[2]",
        &["duplicate target 10.0.1.10:80: already listed as targets[0]"],
    );
    // Same address on another port is a different target.
    let text = base_with(
        "[{ address = \"10.0.1.10\" }]",
        "[{ address = \"10.0.1.10\" }, { address = \"10.0.1.10\", port = 81 }]",
    );
    parse(&text).unwrap();
}

#[test]
fn stickiness() {
    let sticky = |lines: &str| {
        base_with(
            "targets = [{ address = \"10.0.1.10\" }]\n",
            &format!(
                "targets = [{{ address = \"10.0.1.10\" }}]\n[target_group.stickiness]\n{lines}\n"
            ),
        )
    };
    let text = sticky("enabled = true\ntype = \"app_cookie\"");
    assert_error(
        &text,
        "[target_group.stickiness]",
        "target_group[0].stickiness.cookie_name",
        &["app_cookie stickiness needs cookie_name"],
    );
    let text = sticky("duration = \"8d\"");
    assert_error(
        &text,
        "8d",
        "target_group[0].stickiness.duration",
        &["duration must be 1s-7d, got \"8d\""],
    );
    let text = sticky("duration = \"0s\"");
    assert_error(
        &text,
        "0s",
        "target_group[0].stickiness.duration",
        &["duration must be 1s-7d, got \"0s\""],
    );
    let text = sticky("cookie_name = \"S\"");
    assert_error(
        &text,
        "cookie_name",
        "target_group[0].stickiness.cookie_name",
        &["applies to type = \"app_cookie\" only"],
    );
    let text = sticky("type = \"source_ip\"");
    assert_error(
        &text,
        "source_ip",
        "target_group[0].stickiness.type",
        &[
            "unknown type \"source_ip\"",
            "\"lb_cookie\", \"app_cookie\"",
        ],
    );
    let text = base_with(
        "targets = [{ address = \"10.0.3.10\" }]\n",
        "targets = [{ address = \"10.0.3.10\" }]\n[target_group.stickiness]\nenabled = true\n",
    );
    assert_error(
        &text,
        "[target_group.stickiness]",
        "target_group[1].stickiness",
        &["needs an HTTP or HTTPS target group"],
    );
}

#[test]
fn bad_duration_string() {
    let text = base_with(
        "port = 80\n",
        "port = 80\nderegistration_delay = \"5 minutes\"\n",
    );
    assert_error(
        &text,
        "5 minutes",
        "target_group[0].deregistration_delay",
        &[
            "invalid duration \"5 minutes\"",
            "\"500ms\", \"5s\", \"5m\", \"1h\", \"1d\"",
        ],
    );
    let text = base_with(
        "name = \"web-alb\"\n",
        "name = \"web-alb\"\nidle_timeout = \"1.5s\"\n",
    );
    assert_error(
        &text,
        "1.5s",
        "load_balancer[0].idle_timeout",
        &["invalid duration \"1.5s\""],
    );
}

#[test]
fn idle_timeout_range() {
    for v in ["0s", "4001s", "500ms"] {
        let text = base_with(
            "name = \"web-alb\"\n",
            &format!("name = \"web-alb\"\nidle_timeout = \"{v}\"\n"),
        );
        assert_error(
            &text,
            "idle_timeout",
            "load_balancer[0].idle_timeout",
            &[&format!("idle_timeout must be 1s-4000s, got \"{v}\"")],
        );
    }
}

#[test]
fn request_head_timeout_defaults_to_60s_or_the_idle_timeout_and_has_its_range() {
    let lb = |text: &str| {
        parse(text)
            .unwrap()
            .load_balancer("web-alb")
            .unwrap()
            .clone()
    };
    let with = |fields: &str| {
        base_with(
            "name = \"web-alb\"\n",
            &format!("name = \"web-alb\"\n{fields}\n"),
        )
    };
    assert_eq!(lb(BASE).request_head_timeout, Duration::from_secs(60));
    assert!(!lb(BASE).trust_request_id);
    assert_eq!(
        lb(&with("idle_timeout = \"10s\"")).request_head_timeout,
        Duration::from_secs(10)
    );
    assert_eq!(
        lb(&with("idle_timeout = \"600s\"")).request_head_timeout,
        Duration::from_secs(60)
    );
    let set = lb(&with(
        "idle_timeout = \"10s\"\nrequest_head_timeout = \"30s\"\ntrust_request_id = true",
    ));
    assert_eq!(set.request_head_timeout, Duration::from_secs(30));
    assert!(set.trust_request_id);
    for v in ["0s", "4001s", "500ms"] {
        assert_error(
            &with(&format!("request_head_timeout = \"{v}\"")),
            "request_head_timeout",
            "load_balancer[0].request_head_timeout",
            &[&format!(
                "request_head_timeout must be 1s-4000s, got \"{v}\""
            )],
        );
    }
}

// ---------------------------------------------------------------------------
// Rules, conditions, actions.

/// `BASE` plus one rule on the HTTP listener.
fn rule(conditions: &str, action: &str) -> String {
    base_plus(&format!(
        "[[rule]]\nlistener = \"web-alb:80\"\npriority = 10\nconditions = [{conditions}]\naction = {action}\n"
    ))
}

const FWD: &str = "{ type = \"forward\", target_group = \"web\" }";
const PATH: &str = "{ field = \"path-pattern\", values = [\"/x\"] }";

#[test]
fn priority_range() {
    for p in ["0", "50001"] {
        let text = rule(PATH, FWD).replace("priority = 10", &format!("priority = {p}"));
        assert_error(
            &text,
            "priority",
            "rule[0].priority",
            &[&format!("priority must be 1-50000, got {p}")],
        );
    }
}

#[test]
fn rule_needs_conditions() {
    let text = rule("", FWD);
    assert_error(
        &text,
        "conditions = []",
        "rule[0].conditions",
        &[
            "a rule needs at least one condition",
            "default_action covers everything else",
        ],
    );
}

#[test]
fn condition_needs_values() {
    let text = rule("{ field = \"host-header\", values = [] }", FWD);
    assert_error(
        &text,
        "conditions",
        "rule[0].conditions[0].values",
        &["a condition needs at least one value"],
    );
}

#[test]
fn http_header_condition_needs_a_name() {
    let text = rule("{ field = \"http-header\", values = [\"x\"] }", FWD);
    assert_error(
        &text,
        "conditions",
        "rule[0].conditions[0].name",
        &["an http-header condition needs name", "name = \"X-Env\""],
    );
    let text = rule(
        "{ field = \"path-pattern\", name = \"X\", values = [\"/\"] }",
        FWD,
    );
    assert_error(
        &text,
        "conditions",
        "rule[0].conditions[0].name",
        &["name applies to http-header conditions only"],
    );
}

#[test]
fn condition_values() {
    for (cond, field, expect) in [
        (
            "{ field = \"cookie\", values = [\"x\"] }",
            "rule[0].conditions[0].field",
            "unknown field \"cookie\"; allowed: \"host-header\"",
        ),
        (
            "{ field = \"http-request-method\", values = [\"get\"] }",
            "rule[0].conditions[0].values[0]",
            "invalid http-request-method \"get\": 1-40 characters from A-Z, '-' and '_'",
        ),
        (
            "{ field = \"source-ip\", values = [\"10.0.0.1\"] }",
            "rule[0].conditions[0].values[0]",
            "needs a prefix length",
        ),
        (
            "{ field = \"source-ip\", values = [\"10.0.0.0/8\", \"nope\"] }",
            "rule[0].conditions[0].values[1]",
            "invalid CIDR \"nope\"",
        ),
        (
            "{ field = \"query-string\", values = [\"debug\"] }",
            "rule[0].conditions[0].values[0]",
            "query-string values are tables",
        ),
        (
            "{ field = \"host-header\", values = [{ value = \"x\" }] }",
            "rule[0].conditions[0].values[0]",
            "host-header values are strings",
        ),
        (
            "{ field = \"host-header\", values = [\"example.com:8080\"] }",
            "rule[0].conditions[0].values[0]",
            "invalid host-header value \"example.com:8080\"",
        ),
        (
            "{ field = \"path-pattern\", values = [\"api/*\"] }",
            "rule[0].conditions[0].values[0]",
            "must start with \"/\"",
        ),
        (
            "{ field = \"http-header\", name = \"Host\", values = [\"x\"] }",
            "rule[0].conditions[0].name",
            "use a host-header condition",
        ),
    ] {
        let text = rule(cond, FWD);
        assert_error(&text, "conditions", field, &[expect]);
    }
    let long = format!("/{}", "a".repeat(128));
    let text = rule(
        &format!("{{ field = \"path-pattern\", values = [\"{long}\"] }}"),
        FWD,
    );
    assert_error(
        &text,
        "conditions",
        "rule[0].conditions[0].values[0]",
        &["129 characters long; at most 128"],
    );
    let text = rule(
        "{ field = \"query-string\", values = [{ key = \"a\", val = \"b\" }] }",
        FWD,
    );
    assert!(parse(&text)
        .unwrap_err()
        .to_string()
        .contains("unknown field `val`"));
}

#[test]
fn fixed_response_checks() {
    let fixed = |fields: &str| rule(PATH, &format!("{{ type = \"fixed-response\", {fields} }}"));
    let body = "x".repeat(1025);
    let text = fixed(&format!("status_code = 200, message_body = \"{body}\""));
    assert_error(
        &text,
        "message_body",
        "rule[0].action.message_body",
        &["message_body is 1025 bytes; at most 1024 bytes are allowed"],
    );
    parse(&fixed(&format!(
        "status_code = 200, message_body = \"{}\"",
        &body[1..]
    )))
    .unwrap();
    for code in ["600", "199", "\"abc\"", "\"5xx\""] {
        let text = fixed(&format!("status_code = {code}"));
        assert_error(
            &text,
            "status_code",
            "rule[0].action.status_code",
            &["status_code must be an HTTP status 200-599"],
        );
    }
    let text = fixed("content_type = \"text/xml\"");
    assert_error(
        &text,
        "text/xml",
        "rule[0].action.status_code",
        &["a fixed-response needs status_code"],
    );
    assert_error(
        &text,
        "text/xml",
        "rule[0].action.content_type",
        &["unknown content_type \"text/xml\"", "\"application/json\""],
    );
}

#[test]
fn redirect_checks() {
    let redirect = |fields: &str| rule(PATH, &format!("{{ type = \"redirect\", {fields} }}"));
    for status in ["\"HTTP_307\"", "301"] {
        let text = redirect(&format!("status_code = {status}, protocol = \"HTTPS\""));
        assert_error(
            &text,
            "redirect",
            "rule[0].action.status_code",
            &["status_code must be \"HTTP_301\" or \"HTTP_302\""],
        );
    }
    let text = redirect("protocol = \"HTTPS\"");
    assert_error(
        &text,
        "redirect",
        "rule[0].action.status_code",
        &["a redirect needs status_code"],
    );
    let text = redirect("status_code = \"HTTP_301\", path = \"new\"");
    assert_error(
        &text,
        "redirect",
        "rule[0].action.path",
        &["redirect path \"new\" must start with \"/\""],
    );
    let text = redirect("status_code = \"HTTP_301\", protocol = \"ftp\"");
    assert_error(
        &text,
        "redirect",
        "rule[0].action.protocol",
        &["\"HTTP\", \"HTTPS\", \"#{protocol}\""],
    );
    let text = redirect("status_code = \"HTTP_301\", port = 0");
    assert_error(
        &text,
        "redirect",
        "rule[0].action.port",
        &["port must be 1-65535 or \"#{port}\", got 0"],
    );
    let text = redirect("status_code = \"HTTP_301\", host = \"#{path}.example.com\"");
    assert_error(
        &text,
        "redirect",
        "rule[0].action.host",
        &["#{path} is not allowed in host"],
    );
    let text = redirect("status_code = \"HTTP_301\", query = \"#{query}\"");
    assert_error(
        &text,
        "redirect",
        "rule[0].action",
        &["would redirect to itself"],
    );
}

#[test]
fn https_to_http_redirect_is_rejected() {
    let dir = cert_dir("downgrade");
    let text = base_plus(&HTTPS_LISTENER.replace(
        "{ type = \"forward\", target_group = \"web\" }",
        "{ type = \"redirect\", status_code = \"HTTP_301\", protocol = \"HTTP\" }",
    ));
    let err = parse_str(&text, &dir.join("x.toml").display().to_string()).unwrap_err();
    assert!(
        err.to_string().contains("listener \"web-alb:443\".default_action.protocol: redirecting from HTTPS to HTTP is not allowed"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn weighted_forward_checks() {
    let weighted = |groups: &str| {
        rule(
            PATH,
            &format!("{{ type = \"forward\", target_groups = [{groups}] }}"),
        )
    };
    let text = weighted("{ name = \"web\", weight = 1000 }");
    assert_error(
        &text,
        "target_groups",
        "rule[0].action.target_groups[0].weight",
        &["weight must be 0-999, got 1000"],
    );
    let text = weighted("{ name = \"web\", weight = -1 }");
    assert_error(
        &text,
        "target_groups",
        "rule[0].action.target_groups[0].weight",
        &["weight must be 0-999, got -1"],
    );
    let text = weighted("{ name = \"web\", weight = 0 }");
    assert_error(
        &text,
        "target_groups",
        "rule[0].action.target_groups",
        &["every weight is 0", "1-999"],
    );
    let text = weighted("");
    assert_error(
        &text,
        "target_groups",
        "rule[0].action.target_groups",
        &["must list at least one"],
    );
    let text = weighted("{ name = \"web\" }, { name = \"web\" }");
    assert_error(
        &text,
        "target_groups",
        "rule[0].action.target_groups[1].name",
        &["listed twice"],
    );
    let text = rule(
        PATH,
        "{ type = \"forward\", target_groups = [{ name = \"web\" }], stickiness = \"8d\" }",
    );
    assert_error(
        &text,
        "stickiness",
        "rule[0].action.stickiness",
        &["stickiness must be 1s-7d, got \"8d\""],
    );
    let text = rule(
        PATH,
        "{ type = \"forward\", target_group = \"web\", stickiness = \"1h\" }",
    );
    assert_error(
        &text,
        "stickiness",
        "rule[0].action.stickiness",
        &["applies to weighted forwards (target_groups) only"],
    );
    let text = rule(
        PATH,
        "{ type = \"forward\", target_group = \"web\", target_groups = [{ name = \"web\" }] }",
    );
    assert_error(
        &text,
        "target_groups",
        "rule[0].action.target_groups",
        &["either target_group", "not both"],
    );
    let text = rule(PATH, "{ type = \"forward\" }");
    assert_error(
        &text,
        "action =",
        "rule[0].action",
        &["a forward action needs target_group"],
    );
    // Zero weights are fine while one group still gets traffic.
    parse(&weighted("{ name = \"web\", weight = 0 }, { name = \"web2\" }").replace(
        "[[target_group]]\nname = \"db\"",
        "[[target_group]]\nname = \"web2\"\nprotocol = \"HTTP\"\nport = 80\n\n[[target_group]]\nname = \"db\"",
    ))
    .unwrap();
}

#[test]
fn admin_and_access_log() {
    let text = base_plus("[admin]\nlisten = \"localhost:9901\"\n");
    assert_error(
        &text,
        "localhost",
        "admin.listen",
        &[
            "invalid socket address \"localhost:9901\"",
            "\"127.0.0.1:9901\"",
        ],
    );
    let text = base_plus("[access_log]\nformat = \"text\"\n");
    assert_error(
        &text,
        "text",
        "access_log.format",
        &["unknown format \"text\"; allowed: \"json\""],
    );
}
