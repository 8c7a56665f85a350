//! Every limit the validator holds a file to, on both sides: the value at
//! the limit is accepted, and the value one past it is refused with one
//! diagnostic that names the line, column and field, never a panic. One past
//! is as close as the value's unit allows: one character, one unit, one
//! millisecond. The files are generated from templates with `@` where the
//! value goes and, when the diagnostic points elsewhere, `^` where it does.

use super::*;

/// The file `template` makes with `value`, and the 1-based line and column
/// its diagnostic points at: the `^` if there is one (before the `@`), else
/// the `@`.
fn fill(template: &str, value: &str) -> (String, (usize, usize)) {
    let at = template.find('@').expect("a template has an @");
    let mark = match template.find('^') {
        Some(caret) => {
            assert!(caret < at, "^ goes before @");
            caret
        }
        None => at,
    };
    let before = &template[..mark];
    let line = before.matches('\n').count() + 1;
    let column = before[before.rfind('\n').map_or(0, |i| i + 1)..]
        .chars()
        .count()
        + 1;
    let text = template.replacen('^', "", 1).replacen('@', value, 1);
    (text, (line, column))
}

/// `text` refused with exactly one diagnostic, at `spot`, for `field`,
/// whose message contains `says`.
#[track_caller]
fn refused(text: &str, (line, column): (usize, usize), field: &str, says: &str) {
    let err = match parse(text) {
        Ok(_) => panic!("{field}: accepted, expected {line}:{column}: {says:?}"),
        Err(e) => e,
    };
    let ds = err.diagnostics();
    assert!(
        ds.len() == 1
            && (ds[0].line, ds[0].column) == (line, column)
            && ds[0].field == field
            && ds[0].message.contains(says),
        "expected only test.toml:{line}:{column}: {field}: ..{says}..; got:\n{err}"
    );
}

#[track_caller]
fn accepted(text: &str, what: &str) -> Config {
    parse(text).unwrap_or_else(|e| panic!("{what}: refused at the limit:\n{e}"))
}

/// The 1-based line and column where `needle` first starts in `text`.
fn spot_of(text: &str, needle: &str) -> (usize, usize) {
    let at = text.find(needle).expect("the needle is in the text");
    let before = &text[..at];
    let column = before[before.rfind('\n').map_or(0, |i| i + 1)..]
        .chars()
        .count()
        + 1;
    (before.matches('\n').count() + 1, column)
}

/// One limit: a template, the field its diagnostic names, values at the
/// limit and values one past it with a piece of the message each.
struct Limit {
    template: String,
    field: String,
    at: Vec<String>,
    past: Vec<(String, String)>,
}

impl Limit {
    fn new(template: String, field: &str) -> Self {
        Limit {
            template,
            field: field.to_string(),
            at: Vec::new(),
            past: Vec::new(),
        }
    }

    fn at(mut self, value: impl ToString) -> Self {
        self.at.push(value.to_string());
        self
    }

    fn past(mut self, value: impl ToString, says: impl ToString) -> Self {
        self.past.push((value.to_string(), says.to_string()));
        self
    }

    #[track_caller]
    fn check(&self) {
        assert!(
            !self.at.is_empty() && !self.past.is_empty(),
            "{}",
            self.field
        );
        for v in &self.at {
            accepted(&fill(&self.template, v).0, &format!("{} = {v}", self.field));
        }
        for (v, says) in &self.past {
            let (text, spot) = fill(&self.template, v);
            refused(&text, spot, &self.field, says);
        }
    }
}

/// `n` copies of `c`, quoted as a TOML string.
fn string_of(c: char, n: usize) -> String {
    quoted(&c.to_string().repeat(n))
}

/// `prefix` followed by copies of `c` up to `n` characters, quoted.
fn string_from(prefix: &str, c: char, n: usize) -> String {
    quoted(&format!(
        "{prefix}{}",
        c.to_string().repeat(n - prefix.len())
    ))
}

/// `BASE` plus one rule on the HTTP listener (`priority` 10 unless the
/// priority is the `@`).
fn rule(conditions: &str, action: &str) -> String {
    rule_with("10", conditions, action)
}

fn rule_with(priority: &str, conditions: &str, action: &str) -> String {
    base_plus(&rule_section(priority, conditions, action))
}

fn rule_section(priority: &str, conditions: &str, action: &str) -> String {
    format!(
        "[[rule]]\nlistener = \"web-alb:80\"\npriority = {priority}\nconditions = [{conditions}]\naction = {action}\n"
    )
}

const PATH: &str = "{ field = \"path-pattern\", values = [\"/x\"] }";

/// `BASE` plus a third target group, `target_group[2]`, with `lines` in it
/// and then `subtables` (its `[target_group.…]` tables).
fn group(lines: &str, subtables: &str) -> String {
    base_plus(&format!(
        "[[target_group]]\nname = \"limits\"\nprotocol = \"HTTP\"\nport = 80\n{lines}{subtables}"
    ))
}

/// `group` with a health check made of `lines`.
fn health_check(lines: &str) -> String {
    group("", &format!("[target_group.health_check]\n{lines}"))
}

/// `BASE` with `line` added to its balancer.
fn balancer_with(line: &str) -> String {
    base_with(
        "addresses = [\"10.0.0.10\"]\n",
        &format!("addresses = [\"10.0.0.10\"]\n{line}\n"),
    )
}

/// `BASE` with the HTTP listener's default action replaced.
fn default_action(action: &str) -> String {
    base_with(FORWARD_WEB, action)
}

const DEFAULT_ACTION: &str = "listener \"web-alb:80\".default_action";

#[test]
fn names_and_texts_are_accepted_at_their_longest_and_refused_one_longer() {
    let limits = [
        Limit::new(base_plus("[[security_group]]\nname = @\n"), "security_group[1].name")
            .at(string_of('s', 32))
            .past(string_of('s', 33), "use 1-32 letters"),
        Limit::new(
            base_plus("[[target_group]]\nname = @\nprotocol = \"HTTP\"\nport = 80\n"),
            "target_group[2].name",
        )
        .at(string_of('t', 32))
        .past(string_of('t', 33), "use 1-32 letters"),
        Limit::new(
            base_plus(
                "[[load_balancer]]\nname = @\ninterfaces = [\"eth0\"]\naddresses = [\"10.0.0.11\"]\nsecurity_groups = [\"web\"]\n",
            ),
            "load_balancer[1].name",
        )
        .at(string_of('l', 32))
        .past(string_of('l', 33), "use 1-32 letters"),
        Limit::new(
            base_with("interfaces = [\"eth0\"]", "interfaces = [@]"),
            "load_balancer[0].interfaces[0]",
        )
        .at(string_of('e', 15))
        .past(string_of('e', 16), "1-15 visible characters"),
        Limit::new(
            rule("{ field = \"http-header\", name = @, values = [\"x\"] }", FORWARD_WEB),
            "rule[0].conditions[0].name",
        )
        .at(string_of('H', 40))
        .past(string_of('H', 41), "1-40 characters"),
        Limit::new(
            rule("{ field = \"host-header\", values = [@] }", FORWARD_WEB),
            "rule[0].conditions[0].values[0]",
        )
        .at(string_of('h', 128))
        .past(
            string_of('h', 129),
            "value is 129 characters long; at most 128 are allowed",
        ),
        Limit::new(
            rule("{ field = \"path-pattern\", values = [@] }", FORWARD_WEB),
            "rule[0].conditions[0].values[0]",
        )
        .at(string_from("/", 'p', 128))
        .past(
            string_from("/", 'p', 129),
            "value is 129 characters long; at most 128 are allowed",
        ),
        Limit::new(
            rule(
                "{ field = \"http-header\", name = \"X-A\", values = [@] }",
                FORWARD_WEB,
            ),
            "rule[0].conditions[0].values[0]",
        )
        .at(string_of('v', 128))
        .past(
            string_of('v', 129),
            "value is 129 characters long; at most 128 are allowed",
        ),
        Limit::new(
            rule("{ field = \"http-request-method\", values = [@] }", FORWARD_WEB),
            "rule[0].conditions[0].values[0]",
        )
        .at(string_of('M', 40))
        .past(string_of('M', 41), "1-40 characters from A-Z"),
        // A query-string value is a table; the diagnostic points at it.
        Limit::new(
            rule(
                "{ field = \"query-string\", values = [^{ key = @, value = \"v\" }] }",
                FORWARD_WEB,
            ),
            "rule[0].conditions[0].values[0]",
        )
        .at(string_of('k', 128))
        .past(string_of('k', 129), "query-string key must be 1-128 characters"),
        Limit::new(
            rule(
                "{ field = \"query-string\", values = [^{ value = @ }] }",
                FORWARD_WEB,
            ),
            "rule[0].conditions[0].values[0]",
        )
        .at(string_of('q', 128))
        .past(string_of('q', 129), "query-string value must be 1-128 characters"),
        Limit::new(
            default_action("{ type = \"fixed-response\", status_code = 200, message_body = @ }"),
            &format!("{DEFAULT_ACTION}.message_body"),
        )
        .at(string_of('b', 1024))
        .past(
            string_of('b', 1025),
            "message_body is 1025 bytes; at most 1024 bytes are allowed",
        ),
        Limit::new(health_check("path = @\n"), "target_group[2].health_check.path")
            .at(string_from("/", 'c', 1024))
            .past(
                string_from("/", 'c', 1025),
                "must be at most 1024 visible ASCII characters",
            ),
        Limit::new(
            rule(PATH, "{ type = \"redirect\", status_code = \"HTTP_301\", host = @ }"),
            "rule[0].action.host",
        )
        .at(string_of('r', 128))
        .past(string_of('r', 129), "1-128 visible characters"),
        Limit::new(
            rule(PATH, "{ type = \"redirect\", status_code = \"HTTP_301\", path = @ }"),
            "rule[0].action.path",
        )
        .at(string_from("/", 'r', 128))
        .past(string_from("/", 'r', 129), "at most 128 visible characters"),
        // A new host, so that the redirect goes somewhere else.
        Limit::new(
            rule(
                PATH,
                "{ type = \"redirect\", status_code = \"HTTP_301\", host = \"example.com\", query = @ }",
            ),
            "rule[0].action.query",
        )
        .at(string_of('r', 128))
        .past(string_of('r', 129), "at most 128 visible characters"),
    ];
    for l in &limits {
        l.check();
    }
}

#[test]
fn numbers_are_accepted_at_both_ends_of_their_range_and_refused_one_past() {
    let port_message = "must be 1-65535, got";
    let limits = [
        Limit::new(
            balancer_with("max_header_bytes = @"),
            "load_balancer[0].max_header_bytes",
        )
        .at(8192)
        .at(1 << 20)
        .past(8191, "max_header_bytes must be 8192-1048576, got 8191")
        .past((1 << 20) + 1, "max_header_bytes must be 8192-1048576, got 1048577"),
        Limit::new(balancer_with("max_headers = @"), "load_balancer[0].max_headers")
            .at(16)
            .at(1000)
            .past(15, "max_headers must be 16-1000, got 15")
            .past(1001, "max_headers must be 16-1000, got 1001"),
        Limit::new(rule_with("@", PATH, FORWARD_WEB), "rule[0].priority")
            .at(1)
            .at(50_000)
            .past(0, "priority must be 1-50000, got 0")
            .past(50_001, "priority must be 1-50000, got 50001"),
        // A second group keeps a weight of 0 from being the only weight.
        Limit::new(
            base_plus(&format!(
                "{}{}",
                target_group("web2", "HTTP", 80),
                rule_section(
                    "10",
                    PATH,
                    "{ type = \"forward\", target_groups = [{ name = \"web\", weight = @ }, { name = \"web2\" }] }",
                )
            )),
            "rule[0].action.target_groups[0].weight",
        )
        .at(0)
        .at(999)
        .past(-1, "weight must be 0-999, got -1")
        .past(1000, "weight must be 0-999, got 1000"),
        Limit::new(
            base_with(
                "targets = [{ address = \"10.0.1.10\" }]",
                "targets = [{ address = \"10.0.1.10\", weight = @ }]",
            ),
            "target_group[0].targets[0].weight",
        )
        .at(1)
        .at(999)
        .past(0, "weight must be 1-999, got 0")
        .past(1000, "weight must be 1-999, got 1000"),
        Limit::new(
            health_check("healthy_threshold = @\n"),
            "target_group[2].health_check.healthy_threshold",
        )
        .at(2)
        .at(10)
        .past(1, "healthy_threshold must be 2-10, got 1")
        .past(11, "healthy_threshold must be 2-10, got 11"),
        Limit::new(
            health_check("unhealthy_threshold = @\n"),
            "target_group[2].health_check.unhealthy_threshold",
        )
        .at(2)
        .at(10)
        .past(1, "unhealthy_threshold must be 2-10, got 1")
        .past(11, "unhealthy_threshold must be 2-10, got 11"),
        // A listener is named by its port only when the port is valid.
        Limit::new(
            base_plus(&format!(
                "[[listener]]\nload_balancer = \"web-alb\"\nprotocol = \"HTTP\"\nport = @\ndefault_action = {FORWARD_WEB}\n"
            )),
            "listener[1].port",
        )
        .at(1)
        .at(65535)
        .past(0, format!("port {port_message} 0"))
        .past(65536, format!("port {port_message} 65536")),
        Limit::new(base_with("port = 80\ntargets", "port = @\ntargets"), "target_group[0].port")
            .at(1)
            .at(65535)
            .past(0, format!("port {port_message} 0"))
            .past(65536, format!("port {port_message} 65536")),
        Limit::new(
            base_with(
                "targets = [{ address = \"10.0.1.10\" }]",
                "targets = [{ address = \"10.0.1.10\", port = @ }]",
            ),
            "target_group[0].targets[0].port",
        )
        .at(1)
        .at(65535)
        .past(0, format!("port {port_message} 0"))
        .past(65536, format!("port {port_message} 65536")),
        Limit::new(health_check("port = @\n"), "target_group[2].health_check.port")
            .at(1)
            .at(65535)
            .at("\"65535\"")
            .past(0, "a port number 1-65535, got 0")
            .past(65536, "a port number 1-65535, got 65536")
            .past("\"65536\"", "a port number 1-65535, got \"65536\""),
        Limit::new(
            rule(PATH, "{ type = \"redirect\", status_code = \"HTTP_301\", port = @ }"),
            "rule[0].action.port",
        )
        .at(1)
        .at(65535)
        .at("\"65535\"")
        .past(0, "port must be 1-65535 or \"#{port}\", got 0")
        .past(65536, "port must be 1-65535 or \"#{port}\", got 65536")
        .past("\"65536\"", "port must be 1-65535 or \"#{port}\", got \"65536\""),
        Limit::new(
            base_plus(
                "[[security_group]]\nname = \"more\"\ningress = [{ protocol = \"tcp\", ports = @, source = \"0.0.0.0/0\" }]\n",
            ),
            "security_group[1].ingress[0].ports",
        )
        .at(1)
        .at(65535)
        .at("\"1\"")
        .at("\"65535\"")
        .at("\"1-65535\"")
        .past(0, "invalid port 0")
        .past(65536, "invalid port 65536")
        .past("\"0\"", "invalid ports \"0\"")
        .past("\"65536\"", "invalid ports \"65536\"")
        .past("\"0-65535\"", "invalid ports \"0-65535\"")
        .past("\"1-65536\"", "invalid ports \"1-65536\""),
        Limit::new(
            default_action("{ type = \"fixed-response\", status_code = @ }"),
            &format!("{DEFAULT_ACTION}.status_code"),
        )
        .at(200)
        .at(599)
        .at("\"599\"")
        .past(199, "status_code must be an HTTP status 200-599, got 199")
        .past(600, "status_code must be an HTTP status 200-599, got 600")
        .past("\"600\"", "status_code must be an HTTP status 200-599, got \"600\""),
        Limit::new(health_check("matcher = @\n"), "target_group[2].health_check.matcher")
            .at("\"200\"")
            .at("\"499\"")
            .at("\"200-499\"")
            .at(499)
            .past("\"199\"", "code 199 is out of range")
            .past("\"500\"", "code 500 is out of range")
            .past("\"200-500\"", "code 500 is out of range")
            .past(500, "code 500 is out of range"),
        Limit::new(
            group(
                "protocol_version = \"GRPC\"\n",
                "[target_group.health_check]\nmatcher = @\n",
            ),
            "target_group[2].health_check.matcher",
        )
        .at("\"0\"")
        .at("\"99\"")
        .at("\"0-99\"")
        .past("\"100\"", "code 100 is out of range")
        .past("\"0-100\"", "code 100 is out of range"),
    ];
    for l in &limits {
        l.check();
    }
}

#[test]
fn durations_are_accepted_at_both_ends_of_their_range_and_refused_a_millisecond_past() {
    let limits = [
        Limit::new(
            group("deregistration_delay = @\n", ""),
            "target_group[2].deregistration_delay",
        )
        .at("\"0s\"")
        .at("\"3600s\"")
        .past(
            "\"3600001ms\"",
            "deregistration_delay must be 0s-3600s, got \"3600001ms\"",
        ),
        // 0 turns slow start off; anything else is held to 30s-900s.
        Limit::new(group("slow_start = @\n", ""), "target_group[2].slow_start")
            .at("\"0s\"")
            .at("\"30s\"")
            .at("\"900s\"")
            .past(
                "\"1ms\"",
                "slow_start must be 0s (off) or 30s-900s, got \"1ms\"",
            )
            .past(
                "\"29999ms\"",
                "slow_start must be 0s (off) or 30s-900s, got \"29999ms\"",
            )
            .past(
                "\"900001ms\"",
                "slow_start must be 0s (off) or 30s-900s, got \"900001ms\"",
            ),
        Limit::new(
            balancer_with("idle_timeout = @"),
            "load_balancer[0].idle_timeout",
        )
        .at("\"1s\"")
        .at("\"4000s\"")
        .past("\"999ms\"", "idle_timeout must be 1s-4000s, got \"999ms\"")
        .past(
            "\"4000001ms\"",
            "idle_timeout must be 1s-4000s, got \"4000001ms\"",
        ),
        Limit::new(
            balancer_with("request_head_timeout = @"),
            "load_balancer[0].request_head_timeout",
        )
        .at("\"1s\"")
        .at("\"4000s\"")
        .past(
            "\"999ms\"",
            "request_head_timeout must be 1s-4000s, got \"999ms\"",
        )
        .past(
            "\"4000001ms\"",
            "request_head_timeout must be 1s-4000s, got \"4000001ms\"",
        ),
        // The shortest timeout, so that the interval is checked alone.
        Limit::new(
            health_check("timeout = \"2s\"\ninterval = @\n"),
            "target_group[2].health_check.interval",
        )
        .at("\"5s\"")
        .at("\"300s\"")
        .past("\"4999ms\"", "interval must be 5s-300s, got \"4999ms\"")
        .past("\"300001ms\"", "interval must be 5s-300s, got \"300001ms\""),
        // The longest interval, so that the timeout is checked alone.
        Limit::new(
            health_check("interval = \"300s\"\ntimeout = @\n"),
            "target_group[2].health_check.timeout",
        )
        .at("\"2s\"")
        .at("\"120s\"")
        .past("\"1999ms\"", "timeout must be 2s-120s, got \"1999ms\"")
        .past("\"120001ms\"", "timeout must be 2s-120s, got \"120001ms\""),
        Limit::new(
            group(
                "",
                "[target_group.stickiness]\nenabled = true\nduration = @\n",
            ),
            "target_group[2].stickiness.duration",
        )
        .at("\"1s\"")
        .at("\"7d\"")
        .past("\"999ms\"", "duration must be 1s-7d, got \"999ms\"")
        .past(
            "\"604800001ms\"",
            "duration must be 1s-7d, got \"604800001ms\"",
        ),
        Limit::new(
            rule(
                PATH,
                "{ type = \"forward\", target_groups = [{ name = \"web\" }], stickiness = @ }",
            ),
            "rule[0].action.stickiness",
        )
        .at("\"1s\"")
        .at("\"7d\"")
        .past("\"999ms\"", "stickiness must be 1s-7d, got \"999ms\"")
        .past(
            "\"604800001ms\"",
            "stickiness must be 1s-7d, got \"604800001ms\"",
        ),
    ];
    for l in &limits {
        l.check();
    }
}

/// `n` balancers, `lb0`.., each with its own address, behind one group.
fn balancers(n: u32) -> String {
    let mut text = String::from("[[security_group]]\nname = \"sg\"\n");
    for i in 0..n {
        let address = format!("10.9.{}.{}", i / 200, i % 200 + 1);
        let lb = load_balancer(&format!("lb{i}"), &address).set("security_groups", "[\"sg\"]");
        text.push_str(&lb.to_string());
    }
    text
}

#[test]
fn max_lbs_balancers_are_accepted_and_one_more_is_refused_at_its_header() {
    let max = lb_common::MAX_LBS;
    let cfg = accepted(&balancers(max), "MAX_LBS balancers");
    assert_eq!(cfg.load_balancers.len(), max as usize);
    let text = balancers(max + 1);
    refused(
        &text,
        spot_of(&text, &format!("[[load_balancer]]\nname = \"lb{max}\"")),
        &format!("load_balancer[{max}]"),
        &format!(
            "too many load balancers: {} defined, at most {max} are supported",
            max + 1
        ),
    );
}

/// `BASE`'s listener on port 80 and `n - 1` more, on ports 1000...
fn listeners(n: u32) -> String {
    let mut text = BASE.to_string();
    for i in 1..n {
        text.push_str(&listener("HTTP", 999 + i as u16).to_string());
    }
    text
}

#[test]
fn max_listeners_are_accepted_and_one_more_is_refused_at_its_header() {
    let max = lb_common::MAX_LISTENERS;
    let cfg = accepted(&listeners(max), "MAX_LISTENERS listeners");
    assert_eq!(cfg.listeners.len(), max as usize);
    let text = listeners(max + 1);
    let last = format!(
        "[[listener]]\nload_balancer = \"web-alb\"\nprotocol = \"HTTP\"\nport = {}\n",
        999 + max
    );
    refused(
        &text,
        spot_of(&text, &last),
        &format!("listener[{max}]"),
        &format!(
            "too many listeners: {} defined, at most {max} are supported",
            max + 1
        ),
    );
}

/// `BASE` with `n` balancer addresses of one family, over two balancers:
/// the limit is on the file's total, not on one balancer's.
fn addresses(n: u32, v6: bool) -> String {
    let list = |range: std::ops::Range<u32>| -> String {
        range
            .map(|i| {
                if v6 {
                    format!("\"fd00::{:x}\"", i + 1)
                } else {
                    format!("\"10.20.{}.{}\"", i / 200, i % 200 + 1)
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let half = n / 2;
    base_with(
        "addresses = [\"10.0.0.10\"]",
        &format!("addresses = [{}]", list(0..half)),
    ) + &load_balancer("other", "placeholder")
        .set("addresses", format!("[{}]", list(half..n)))
        .to_string()
}

#[test]
fn max_addrs_balancer_addresses_of_each_family_are_accepted_and_one_more_is_refused() {
    let max = lb_common::MAX_ADDRS;
    for (v6, family) in [(false, "IPv4"), (true, "IPv6")] {
        let cfg = accepted(&addresses(max, v6), family);
        let count: usize = cfg.load_balancers.iter().map(|lb| lb.addresses.len()).sum();
        assert_eq!(count, max as usize, "{family}");
        // Pointed at the first balancer, for want of one culprit.
        let text = addresses(max + 1, v6);
        refused(
            &text,
            spot_of(&text, "[[load_balancer]]"),
            "load_balancer",
            &format!(
                "too many {family} balancer addresses: {}, at most {max} are supported",
                max + 1
            ),
        );
    }
}
