//! The error format (file:line:column: field: message, all problems at
//! once, in file order) and the syntax and structure errors serde reports.

use super::*;

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
    let text = base_plus(&format!(
        "{}[target_group.health_check]\nintervall = \"5s\"\n",
        target_group("x", "HTTP", 1)
    ));
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
    let text = base_plus(&listener("HTTP", 81).without("default_action").to_string());
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
