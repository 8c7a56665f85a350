//! `[[target_group]]`: health checks, ranges, algorithms, targets,
//! stickiness and timeouts.

use super::*;

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
        ("\"123456789\"", "invalid matcher \"123456789\": code 123456789 is out of range"),
        ("\"1234567890\"", "invalid matcher \"1234567890\": expected codes 200-499"),
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

#[test]
fn cookie_names_are_rfc_6265_tokens_and_not_the_balancers_own() {
    let sticky = |name: &str| {
        base_with(
            "targets = [{ address = \"10.0.1.10\" }]\n",
            &format!(
                "targets = [{{ address = \"10.0.1.10\" }}]\n[target_group.stickiness]\ntype = \"app_cookie\"\ncookie_name = {name:?}\n"
            ),
        )
    };
    for name in ["", "a b", "x=y", "s;t"] {
        assert_error(
            &sticky(name),
            "cookie_name",
            "target_group[0].stickiness.cookie_name",
            &[&format!(
                "invalid cookie_name {name:?}: use letters, digits"
            )],
        );
    }
    for name in ["AWSALBAPP-0", "awsalbx"] {
        assert_error(
            &sticky(name),
            "cookie_name",
            "target_group[0].stickiness.cookie_name",
            &[&format!("cookie_name {name:?} is reserved")],
        );
    }
    for name in ["JSESSIONID", "session_id", "a!#$%&'*+-.^`|~"] {
        if let Err(e) = parse(&sticky(name)) {
            panic!("{name}: {e}");
        }
    }
}

#[test]
fn preserve_client_ip_is_for_tcp_groups() {
    let text = base_with("port = 5432\n", "port = 5432\npreserve_client_ip = true\n");
    let cfg = parse(&text).unwrap();
    assert!(cfg.target_groups[1].preserve_client_ip);
    assert!(!parse(BASE).unwrap().target_groups[1].preserve_client_ip);
    let text = base_with(
        "port = 80\ntargets",
        "port = 80\npreserve_client_ip = true\ntargets",
    );
    assert_error(
        &text,
        "preserve_client_ip",
        "target_group[0].preserve_client_ip",
        &["preserve_client_ip applies to TCP target groups"],
    );
}

#[test]
fn a_matcher_range_may_be_one_code() {
    let cfg = parse(&with_health_check("matcher = \"200-200,302\"")).unwrap();
    assert_eq!(
        cfg.target_groups[0].health_check.matcher,
        Matcher(vec![(200, 200), (302, 302)])
    );
}
