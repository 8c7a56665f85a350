//! Valid files: the seed example with its values and defaults, every
//! feature at once, the summary, and section order.

use super::*;

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
    // The directory itself must be there: a test that finds no input
    // would otherwise pass having checked nothing.
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for e in entries.flatten() {
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
