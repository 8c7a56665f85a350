//! Names, duplicates and references between sections.

use super::*;

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
    let text = base_plus(&target_group("db", "TCP", 1).to_string());
    assert_error(
        &text,
        "name = \"db\"",
        "target_group[2].name",
        &[
            "duplicate target_group name \"db\"",
            "already defined at line 15",
        ],
    );
    let text = base_plus(&load_balancer("web-alb", "10.0.0.11").to_string());
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
    let text = base_plus(&listener("HTTP", 80).set("port", "80 # again").to_string());
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
    let text = base_plus(
        &tcp_listener()
            .set("load_balancer", "\"db-nlb\"")
            .to_string(),
    );
    assert_error(
        &text,
        "\"db-nlb\"",
        "listener \"db-nlb:5432\".load_balancer",
        &["unknown load_balancer \"db-nlb\"", "defined: \"web-alb\""],
    );
    // Without a balancer's name the listener is known by its position.
    let text = base_plus(&tcp_listener().set("load_balancer", "\"\"").to_string());
    assert_error(
        &text,
        "load_balancer = \"\"",
        "listener[1].load_balancer",
        &["unknown load_balancer \"\""],
    );
    let text = base_plus(&format!(
        "{}\n{}",
        tcp_listener(),
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
