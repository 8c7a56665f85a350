//! `[[rule]]`: priorities, conditions and the three actions.

use super::*;

/// `BASE` plus one rule on the HTTP listener.
fn rule(conditions: &str, action: &str) -> String {
    base_plus(&format!(
        "[[rule]]\nlistener = \"web-alb:80\"\npriority = 10\nconditions = [{conditions}]\naction = {action}\n"
    ))
}

const PATH: &str = "{ field = \"path-pattern\", values = [\"/x\"] }";

#[test]
fn priority_range() {
    for p in ["0", "50001"] {
        let text = rule(PATH, FORWARD_WEB).replace("priority = 10", &format!("priority = {p}"));
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
    let text = rule("", FORWARD_WEB);
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
    let text = rule("{ field = \"host-header\", values = [] }", FORWARD_WEB);
    assert_error(
        &text,
        "conditions",
        "rule[0].conditions[0].values",
        &["a condition needs at least one value"],
    );
}

#[test]
fn http_header_condition_needs_a_name() {
    let text = rule("{ field = \"http-header\", values = [\"x\"] }", FORWARD_WEB);
    assert_error(
        &text,
        "conditions",
        "rule[0].conditions[0].name",
        &["an http-header condition needs name", "name = \"X-Env\""],
    );
    let text = rule(
        "{ field = \"path-pattern\", name = \"X\", values = [\"/\"] }",
        FORWARD_WEB,
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
        (
            "{ field = \"http-header\", name = \"X-Env\", values = [\"a\\tb\"] }",
            "rule[0].conditions[0].values[0]",
            "invalid http-header value \"a\\tb\": printable ASCII characters only",
        ),
    ] {
        let text = rule(cond, FORWARD_WEB);
        assert_error(&text, "conditions", field, &[expect]);
    }
    // A space is printable; methods have '-' and '_'.
    for cond in [
        "{ field = \"http-header\", name = \"X-Env\", values = [\"blue green\"] }",
        "{ field = \"http-request-method\", values = [\"M-SEARCH\", \"VERSION_CONTROL\"] }",
    ] {
        if let Err(e) = parse(&rule(cond, FORWARD_WEB)) {
            panic!("{cond}: {e}");
        }
    }
    let long = format!("/{}", "a".repeat(128));
    let text = rule(
        &format!("{{ field = \"path-pattern\", values = [\"{long}\"] }}"),
        FORWARD_WEB,
    );
    assert_error(
        &text,
        "conditions",
        "rule[0].conditions[0].values[0]",
        &["129 characters long; at most 128"],
    );
    let text = rule(
        "{ field = \"query-string\", values = [{ key = \"a\", val = \"b\" }] }",
        FORWARD_WEB,
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
    for port in ["+80", "", "99999999999999999999"] {
        let text = redirect(&format!("status_code = \"HTTP_301\", port = {port:?}"));
        assert_error(
            &text,
            "redirect",
            "rule[0].action.port",
            &[&format!(
                "port must be 1-65535 or \"#{{port}}\", got {port:?}"
            )],
        );
    }
    let text = redirect("status_code = \"HTTP_301\", port = 0");
    assert_error(
        &text,
        "redirect",
        "rule[0].action.port",
        &["port must be 1-65535 or \"#{port}\", got 0"],
    );
    for host in ["example.com/x", "exa mple.com", ""] {
        let text = redirect(&format!("status_code = \"HTTP_301\", host = {host:?}"));
        assert_error(
            &text,
            "redirect",
            "rule[0].action.host",
            &[&format!(
                "invalid redirect host {host:?}: 1-128 visible characters"
            )],
        );
    }
    let text = redirect("status_code = \"HTTP_301\", host = \"#{path}.example.com\"");
    assert_error(
        &text,
        "redirect",
        "rule[0].action.host",
        &["#{path} is not allowed in host"],
    );
    // HTTP on an HTTP listener, the port written out or as its keyword.
    for fields in [
        "status_code = \"HTTP_301\", protocol = \"HTTP\", port = \"8080\"",
        "status_code = \"HTTP_302\", port = \"#{port}\", host = \"www.example.com\"",
    ] {
        if let Err(e) = parse(&redirect(fields)) {
            panic!("{fields}: {e}");
        }
    }
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
    let text = base_plus(
        &https_listener()
            .set(
                "default_action",
                "{ type = \"redirect\", status_code = \"HTTP_301\", protocol = \"HTTP\" }",
            )
            .to_string(),
    );
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
    // An unknown group is the one error: its weight of 0 is not judged on
    // top of it.
    let text = weighted("{ name = \"nope\", weight = 0 }");
    assert_error(
        &text,
        "target_groups",
        "rule[0].action.target_groups[0].name",
        &["unknown target_group \"nope\""],
    );
    assert_eq!(parse(&text).unwrap_err().diagnostics().len(), 1);
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
    parse(
        &weighted("{ name = \"web\", weight = 0 }, { name = \"web2\" }").replace(
            "[[target_group]]\nname = \"db\"",
            &format!(
                "{}\n[[target_group]]\nname = \"db\"",
                target_group("web2", "HTTP", 80)
            ),
        ),
    )
    .unwrap();
}
