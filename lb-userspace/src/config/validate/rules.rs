//! `[[rule]]`: priorities, conditions and actions (forward, redirect,
//! fixed-response), checked against the listener they run on.

use super::*;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum ActionKind {
    Forward,
    Redirect,
    FixedResponse,
}
pub(super) const ACTION_TYPES: &[(&str, ActionKind)] = &[
    ("forward", ActionKind::Forward),
    ("redirect", ActionKind::Redirect),
    ("fixed-response", ActionKind::FixedResponse),
];

impl ActionKind {
    fn name(self) -> &'static str {
        match self {
            ActionKind::Forward => "forward",
            ActionKind::Redirect => "redirect",
            ActionKind::FixedResponse => "fixed-response",
        }
    }
    /// Optional fields an action of this type may carry (besides `type`).
    fn fields(self) -> &'static [&'static str] {
        match self {
            ActionKind::Forward => &["target_group", "target_groups", "stickiness"],
            ActionKind::Redirect => &["status_code", "protocol", "host", "port", "path", "query"],
            ActionKind::FixedResponse => &["status_code", "content_type", "message_body"],
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum ConditionKind {
    HostHeader,
    PathPattern,
    HttpHeader,
    HttpRequestMethod,
    QueryString,
    SourceIp,
}
pub(super) const CONDITION_FIELDS: &[(&str, ConditionKind)] = &[
    ("host-header", ConditionKind::HostHeader),
    ("path-pattern", ConditionKind::PathPattern),
    ("http-header", ConditionKind::HttpHeader),
    ("http-request-method", ConditionKind::HttpRequestMethod),
    ("query-string", ConditionKind::QueryString),
    ("source-ip", ConditionKind::SourceIp),
];

impl Checker<'_> {
    pub(super) fn rule(
        &mut self,
        i: usize,
        r: &S<RawRule>,
        names: &Names,
        seen_priorities: &mut HashMap<(String, u32), usize>,
    ) -> Option<(String, Rule)> {
        let p = format!("rule[{i}]");
        let r = r.get_ref();
        let listener = r.listener.get_ref();
        let field = format!("{p}.listener");
        let listener_protocol = match names.listeners.get(listener) {
            None => {
                let known: HashSet<String> = names.listeners.keys().cloned().collect();
                let mut msg = unknown("listener", listener, &known);
                msg.push_str("; listeners are named \"<load_balancer>:<port>\"");
                self.err(r.listener.span(), field, msg);
                None
            }
            Some(Some(ListenerProtocol::Tcp)) => {
                self.err(
                    r.listener.span(),
                    field,
                    format!(
                        "listener {listener:?} is TCP; rules need an HTTP or HTTPS listener (a TCP listener has only its default_action)"
                    ),
                );
                None
            }
            Some(proto) => *proto,
        };

        let field = format!("{p}.priority");
        let priority = self.int(&r.priority, &field, 1, 50_000).map(|n| n as u32);
        if let Some(priority) = priority {
            let line = self.line(&r.priority.span());
            match seen_priorities.get(&(listener.clone(), priority)) {
                Some(first) => self.err(
                    r.priority.span(),
                    field,
                    format!(
                        "listener {listener:?} already has a rule with priority {priority} (line {first}); priorities must be unique per listener"
                    ),
                ),
                None => {
                    seen_priorities.insert((listener.clone(), priority), line);
                }
            }
        }

        if r.conditions.get_ref().is_empty() {
            self.err(
                r.conditions.span(),
                format!("{p}.conditions"),
                "a rule needs at least one condition, e.g. { field = \"path-pattern\", values = [\"/api/*\"] }; the listener's default_action covers everything else",
            );
        }
        let conditions: Vec<Condition> = r
            .conditions
            .get_ref()
            .iter()
            .enumerate()
            .filter_map(|(j, c)| self.condition(&format!("{p}.conditions[{j}]"), c))
            .collect();

        let action = self.action(&format!("{p}.action"), &r.action, listener_protocol, names);
        Some((
            listener.clone(),
            Rule {
                priority: priority?,
                conditions,
                action: action?,
            },
        ))
    }

    pub(super) fn condition(&mut self, p: &str, c: &S<RawCondition>) -> Option<Condition> {
        let span = c.span();
        let c = c.get_ref();
        let kind = self.choice(&c.field, &format!("{p}.field"), CONDITION_FIELDS)?;
        let name_field = format!("{p}.name");
        let header_name = match (&c.name, kind == ConditionKind::HttpHeader) {
            (Some(n), true) => {
                if let Err(msg) = check_header_name(n.get_ref()) {
                    self.err(n.span(), name_field, msg);
                }
                Some(n.get_ref().clone())
            }
            (None, true) => {
                self.err(
                    span,
                    name_field,
                    "an http-header condition needs name, the header to match, e.g. name = \"X-Env\"",
                );
                None
            }
            (Some(n), false) => {
                self.err(
                    n.span(),
                    name_field,
                    format!(
                        "name applies to http-header conditions only, not {}",
                        c.field.get_ref()
                    ),
                );
                None
            }
            (None, false) => None,
        };

        let values = c.values.get_ref();
        if values.is_empty() {
            self.err(
                c.values.span(),
                format!("{p}.values"),
                "a condition needs at least one value; it matches when any value matches",
            );
        }
        let mut strings = Vec::new();
        let mut queries = Vec::new();
        let mut nets = Vec::new();
        let mut ok = true;
        for (j, v) in values.iter().enumerate() {
            let f = format!("{p}.values[{j}]");
            let result = match (kind, v.get_ref()) {
                (ConditionKind::QueryString, ConditionValue::Query(q)) => {
                    check_query(q).map(|()| queries.push(QueryMatch {
                        key: q.key.clone(),
                        value: q.value.clone(),
                    }))
                }
                (ConditionKind::QueryString, ConditionValue::Str(_)) => Err(
                    "query-string values are tables: { key = \"version\", value = \"v2\" } or { value = \"debug\" }"
                        .to_string(),
                ),
                (_, ConditionValue::Query(_)) => Err(format!(
                    "{} values are strings; {{ key, value }} tables are for query-string only",
                    c.field.get_ref()
                )),
                (ConditionKind::SourceIp, ConditionValue::Str(s)) => parse_cidr(s).map(|n| nets.push(n)),
                (kind, ConditionValue::Str(s)) => {
                    check_condition_string(kind, s).map(|()| strings.push(s.clone()))
                }
            };
            if let Err(msg) = result {
                self.err(v.span(), f, msg);
                ok = false;
            }
        }
        // (An empty list was refused above: the file is refused, and no
        // rule of it is used.)
        if !ok {
            return None;
        }
        Some(match kind {
            ConditionKind::HostHeader => Condition::HostHeader(strings),
            ConditionKind::PathPattern => Condition::PathPattern(strings),
            ConditionKind::HttpHeader => Condition::HttpHeader {
                name: header_name?,
                values: strings,
            },
            ConditionKind::HttpRequestMethod => Condition::HttpRequestMethod(strings),
            ConditionKind::QueryString => Condition::QueryString(queries),
            ConditionKind::SourceIp => Condition::SourceIp(nets),
        })
    }

    // -- actions ------------------------------------------------------------

    /// `listener` is the protocol of the listener the action runs on, when
    /// known; it drives the compatibility checks.
    pub(super) fn action(
        &mut self,
        p: &str,
        a: &S<RawAction>,
        listener: Option<ListenerProtocol>,
        names: &Names,
    ) -> Option<Action> {
        let span = a.span();
        let a = a.get_ref();
        let kind = self.choice(&a.kind, &format!("{p}.type"), ACTION_TYPES)?;
        for (field, fspan) in a.present_fields() {
            if !kind.fields().contains(&field) {
                self.err(
                    fspan,
                    format!("{p}.{field}"),
                    format!(
                        "{field} does not belong in a {} action, which takes: {}",
                        kind.name(),
                        kind.fields().join(", ")
                    ),
                );
            }
        }
        if listener == Some(ListenerProtocol::Tcp) && kind != ActionKind::Forward {
            self.err(
                a.kind.span(),
                format!("{p}.type"),
                format!(
                    "{} actions need an HTTP or HTTPS listener; a TCP listener can only forward to TCP target groups",
                    kind.name()
                ),
            );
        }
        match kind {
            ActionKind::Forward => self.forward(p, span, a, listener, names),
            ActionKind::Redirect => self.redirect(p, span, a, listener),
            ActionKind::FixedResponse => self.fixed_response(p, span, a),
        }
    }

    pub(super) fn forward(
        &mut self,
        p: &str,
        span: Range<usize>,
        a: &RawAction,
        listener: Option<ListenerProtocol>,
        names: &Names,
    ) -> Option<Action> {
        match (&a.target_group, &a.target_groups) {
            (Some(_), Some(list)) => {
                self.err(
                    list.span(),
                    format!("{p}.target_groups"),
                    "give either target_group (one group) or target_groups (weighted), not both",
                );
                None
            }
            (None, None) => {
                self.err(
                    span,
                    p,
                    "a forward action needs target_group = \"name\", or target_groups = [{ name = \"...\", weight = N }, ...]",
                );
                None
            }
            (Some(tg), None) => {
                if let Some(st) = &a.stickiness {
                    self.err(
                        st.span(),
                        format!("{p}.stickiness"),
                        "stickiness here applies to weighted forwards (target_groups) only; a single group uses [target_group.stickiness]",
                    );
                }
                let ok = self.target_group_ref(tg, &format!("{p}.target_group"), listener, names);
                ok.then(|| Action::Forward {
                    target_group: tg.get_ref().clone(),
                })
            }
            (None, Some(list)) => {
                let field = format!("{p}.target_groups");
                let mut ok = true;
                if list.get_ref().is_empty() {
                    self.err(
                        list.span(),
                        field.clone(),
                        "target_groups must list at least one { name = \"...\", weight = N }",
                    );
                    ok = false;
                }
                if listener == Some(ListenerProtocol::Tcp) {
                    self.err(
                        list.span(),
                        field.clone(),
                        "a TCP listener forwards to one target group, as an NLB's does (the kernel hashes each flow to one of its targets); use target_group = \"...\"",
                    );
                    ok = false;
                }
                let mut groups: Vec<WeightedGroup> = Vec::new();
                for (j, g) in list.get_ref().iter().enumerate() {
                    let gp = format!("{field}[{j}]");
                    let g = g.get_ref();
                    ok &= self.target_group_ref(&g.name, &format!("{gp}.name"), listener, names);
                    let weight = match &g.weight {
                        None => Some(1),
                        Some(w) => self
                            .int(w, &format!("{gp}.weight"), 0, 999)
                            .map(|w| w as u16),
                    };
                    if groups.iter().any(|x| x.name == *g.name.get_ref()) {
                        self.err(
                            g.name.span(),
                            format!("{gp}.name"),
                            format!(
                                "target group {:?} is listed twice in this action",
                                g.name.get_ref()
                            ),
                        );
                        ok = false;
                    }
                    match weight {
                        Some(weight) => groups.push(WeightedGroup {
                            name: g.name.get_ref().clone(),
                            weight,
                        }),
                        None => ok = false,
                    }
                }
                if ok && groups.iter().all(|g| g.weight == 0) {
                    self.err(
                        list.span(),
                        field,
                        "every weight is 0, so no group would receive traffic; give at least one group a weight of 1-999",
                    );
                    ok = false;
                }
                let stickiness = match &a.stickiness {
                    None => None,
                    Some(st) => {
                        let f = format!("{p}.stickiness");
                        if listener == Some(ListenerProtocol::Tcp) {
                            self.err(
                                st.span(),
                                f.clone(),
                                "stickiness uses a cookie and needs an HTTP or HTTPS listener",
                            );
                        }
                        Some(self.checked_duration(Some(st), &f, secs(0), &STICKINESS_DURATION)?)
                    }
                };
                ok.then_some(Action::WeightedForward {
                    target_groups: groups,
                    stickiness,
                })
            }
        }
    }

    /// Checks that a forward's target group exists and fits the listener.
    pub(super) fn target_group_ref(
        &mut self,
        name: &S<String>,
        field: &str,
        listener: Option<ListenerProtocol>,
        names: &Names,
    ) -> bool {
        let n = name.get_ref();
        let Some(proto) = names.target_groups.get(n) else {
            let known: HashSet<String> = names.target_groups.keys().cloned().collect();
            let msg = unknown("target_group", n, &known);
            self.err(name.span(), field, msg);
            return false;
        };
        let (Some(proto), Some(listener)) = (*proto, listener) else {
            return true;
        };
        let tcp_group = proto == TargetProtocol::Tcp;
        let tcp_listener = listener == ListenerProtocol::Tcp;
        if tcp_listener && !tcp_group {
            self.err(
                name.span(),
                field,
                format!(
                    "target group {n:?} is {}; a TCP listener is forwarded by the kernel and needs a TCP target group",
                    protocol_name(TARGET_PROTOCOLS, proto)
                ),
            );
            return false;
        }
        if tcp_group && !tcp_listener {
            self.err(
                name.span(),
                field,
                format!(
                    "target group {n:?} is TCP, and TCP target groups serve TCP listeners only; this listener is {} (use an HTTP or HTTPS target group)",
                    protocol_name(LISTENER_PROTOCOLS, listener)
                ),
            );
            return false;
        }
        true
    }

    pub(super) fn redirect(
        &mut self,
        p: &str,
        span: Range<usize>,
        a: &RawAction,
        listener: Option<ListenerProtocol>,
    ) -> Option<Action> {
        let mut ok = true;
        let field = format!("{p}.status_code");
        let status = match &a.status_code {
            None => {
                self.err(
                    span.clone(),
                    field,
                    "a redirect needs status_code = \"HTTP_301\" (permanent) or \"HTTP_302\" (temporary)",
                );
                None
            }
            Some(v) => match v.get_ref() {
                IntOrString::Str(s) if s == "HTTP_301" => Some(RedirectStatus::Http301),
                IntOrString::Str(s) if s == "HTTP_302" => Some(RedirectStatus::Http302),
                other => {
                    self.err(
                        v.span(),
                        field,
                        format!(
                            "status_code must be \"HTTP_301\" or \"HTTP_302\", got {}",
                            show(other)
                        ),
                    );
                    None
                }
            },
        };

        let protocol = match &a.protocol {
            None => "#{protocol}".to_string(),
            Some(v) => {
                let s = v.get_ref();
                let field = format!("{p}.protocol");
                if !["HTTP", "HTTPS", "#{protocol}"].contains(&s.as_str()) {
                    self.err(
                        v.span(),
                        field,
                        format!("invalid protocol {s:?}; allowed: \"HTTP\", \"HTTPS\", \"#{{protocol}}\""),
                    );
                    ok = false;
                } else if s == "HTTP" && listener == Some(ListenerProtocol::Https) {
                    self.err(
                        v.span(),
                        field,
                        "redirecting from HTTPS to HTTP is not allowed; use \"HTTPS\" or \"#{protocol}\"",
                    );
                    ok = false;
                }
                s.clone()
            }
        };
        let port = match &a.port {
            None => "#{port}".to_string(),
            Some(v) => {
                let parsed = match v.get_ref() {
                    IntOrString::Str(s) if s == "#{port}" => Some(s.clone()),
                    IntOrString::Str(s) => digits(s).and_then(valid_port).map(|n| n.to_string()),
                    IntOrString::Int(n) => valid_port(*n).map(|n| n.to_string()),
                };
                parsed.unwrap_or_else(|| {
                    self.err(
                        v.span(),
                        format!("{p}.port"),
                        format!(
                            "port must be 1-65535 or \"#{{port}}\", got {}",
                            show(v.get_ref())
                        ),
                    );
                    ok = false;
                    String::new()
                })
            }
        };
        let mut part = |v: &Option<S<String>>,
                        name: &str,
                        default: &str,
                        check: fn(&str) -> Result<(), String>| {
            match v {
                None => default.to_string(),
                Some(v) => {
                    if let Err(msg) = check(v.get_ref()) {
                        self.err(v.span(), format!("{p}.{name}"), msg);
                        ok = false;
                    }
                    v.get_ref().clone()
                }
            }
        };
        let host = part(&a.host, "host", "#{host}", check_redirect_host);
        let path = part(&a.path, "path", "/#{path}", check_redirect_path);
        let query = part(&a.query, "query", "#{query}", check_redirect_query);
        if ok
            && protocol == "#{protocol}"
            && host == "#{host}"
            && port == "#{port}"
            && path == "/#{path}"
        {
            self.err(
                span,
                p,
                "this redirect changes none of protocol, host, port or path, so it would redirect to itself; change at least one",
            );
            ok = false;
        }
        let status = status?;
        ok.then_some(Action::Redirect {
            status,
            protocol,
            host,
            port,
            path,
            query,
        })
    }

    pub(super) fn fixed_response(
        &mut self,
        p: &str,
        span: Range<usize>,
        a: &RawAction,
    ) -> Option<Action> {
        let mut ok = true;
        let field = format!("{p}.status_code");
        let status_code = match &a.status_code {
            None => {
                self.err(
                    span,
                    field,
                    "a fixed-response needs status_code, an HTTP status 200-599, e.g. 503",
                );
                None
            }
            Some(v) => {
                let code = match v.get_ref() {
                    IntOrString::Int(n) => Some(*n),
                    IntOrString::Str(s) => digits(s),
                };
                match code {
                    Some(c @ 200..=599) => Some(c as u16),
                    _ => {
                        self.err(
                            v.span(),
                            field,
                            format!(
                                "status_code must be an HTTP status 200-599, got {}",
                                show(v.get_ref())
                            ),
                        );
                        None
                    }
                }
            }
        };
        let content_type = match &a.content_type {
            None => None,
            Some(v) => {
                ok &= self
                    .choice(v, &format!("{p}.content_type"), CONTENT_TYPES)
                    .is_some();
                Some(v.get_ref().clone())
            }
        };
        let message_body = match &a.message_body {
            None => String::new(),
            Some(v) => {
                let len = v.get_ref().len();
                if len > MAX_FIXED_BODY {
                    self.err(
                        v.span(),
                        format!("{p}.message_body"),
                        format!("message_body is {len} bytes; at most {MAX_FIXED_BODY} bytes are allowed"),
                    );
                    ok = false;
                }
                v.get_ref().clone()
            }
        };
        let status_code = status_code?;
        ok.then_some(Action::FixedResponse {
            status_code,
            content_type,
            message_body,
        })
    }
}

/// http-header condition name: an RFC 7230 token of at most 40 characters.
pub(super) fn check_header_name(s: &str) -> Result<(), String> {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if s.is_empty() || s.len() > MAX_HEADER_NAME_LEN || !s.bytes().all(token) {
        return Err(format!(
            "invalid header name {s:?}: 1-{MAX_HEADER_NAME_LEN} characters, letters, digits and !#$%&'*+-.^_`|~"
        ));
    }
    if s.eq_ignore_ascii_case("host") {
        return Err("use a host-header condition to match Host, not http-header".to_string());
    }
    Ok(())
}

pub(super) fn check_condition_string(kind: ConditionKind, s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("condition values must not be empty".to_string());
    }
    if s.len() > MAX_CONDITION_VALUE_LEN {
        return Err(format!(
            "value is {} characters long; at most {MAX_CONDITION_VALUE_LEN} are allowed",
            s.len()
        ));
    }
    match kind {
        ConditionKind::HostHeader => {
            if !s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.*?".contains(&b))
            {
                return Err(format!(
                    "invalid host-header value {s:?}: use letters, digits, '-', '.', and the wildcards '*' and '?' (no port, no scheme)"
                ));
            }
        }
        ConditionKind::PathPattern => {
            if !s.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!(
                    "invalid path-pattern {s:?}: visible ASCII characters only, no spaces"
                ));
            }
            if !s.starts_with(['/', '*', '?']) {
                return Err(format!(
                    "path-pattern {s:?} must start with \"/\" (or a wildcard): request paths always do"
                ));
            }
        }
        ConditionKind::HttpHeader => {
            if !s.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
                return Err(format!(
                    "invalid http-header value {s:?}: printable ASCII characters only"
                ));
            }
        }
        ConditionKind::HttpRequestMethod => {
            if s.len() > MAX_METHOD_LEN
                || !s
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b == b'_' || b == b'-')
            {
                return Err(format!(
                    "invalid http-request-method {s:?}: 1-{MAX_METHOD_LEN} characters from A-Z, '-' and '_' (methods are case-sensitive, e.g. \"GET\")"
                ));
            }
        }
        ConditionKind::QueryString | ConditionKind::SourceIp => {}
    }
    Ok(())
}

pub(super) fn check_query(q: &RawQueryValue) -> Result<(), String> {
    let part = |what: &str, s: &str| {
        if s.is_empty() || s.len() > MAX_CONDITION_VALUE_LEN {
            Err(format!(
                "query-string {what} must be 1-{MAX_CONDITION_VALUE_LEN} characters, got {s:?}"
            ))
        } else if !s.bytes().all(|b| b.is_ascii_graphic()) {
            Err(format!(
                "query-string {what} {s:?}: visible ASCII characters only, no spaces"
            ))
        } else {
            Ok(())
        }
    };
    if let Some(key) = &q.key {
        part("key", key)?;
    }
    part("value", &q.value)
}

/// Checks the `#{...}` keywords of a redirect part against those allowed
/// in it (ELBv2 keyword placement rules).
pub(super) fn check_placeholders(s: &str, part: &str, allowed: &[&str]) -> Result<(), String> {
    let mut rest = s;
    while let Some(start) = rest.find("#{") {
        let Some((keyword, after)) = rest[start + 2..].split_once('}') else {
            return Err(format!("unterminated \"#{{\" in {part} {s:?}"));
        };
        if !allowed.contains(&keyword) {
            let list: Vec<String> = allowed.iter().map(|k| format!("#{{{k}}}")).collect();
            return Err(format!(
                "#{{{keyword}}} is not allowed in {part}; it may use {}",
                list.join(", ")
            ));
        }
        rest = after;
    }
    Ok(())
}

pub(super) fn check_redirect_host(s: &str) -> Result<(), String> {
    if s.is_empty()
        || s.len() > MAX_REDIRECT_PART_LEN
        || !s.bytes().all(|b| b.is_ascii_graphic())
        || s.contains('/')
    {
        return Err(format!(
            "invalid redirect host {s:?}: 1-{MAX_REDIRECT_PART_LEN} visible characters, no '/', e.g. \"example.com\" or \"#{{host}}\""
        ));
    }
    check_placeholders(s, "host", &["host"])
}

pub(super) fn check_redirect_path(s: &str) -> Result<(), String> {
    if !s.starts_with('/') {
        return Err(format!(
            "redirect path {s:?} must start with \"/\", e.g. \"/#{{path}}\" (#{{path}} has no leading slash)"
        ));
    }
    if s.len() > MAX_REDIRECT_PART_LEN || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "invalid redirect path {s:?}: at most {MAX_REDIRECT_PART_LEN} visible characters"
        ));
    }
    check_placeholders(s, "path", &["host", "path", "port"])
}

pub(super) fn check_redirect_query(s: &str) -> Result<(), String> {
    if s.starts_with('?') {
        return Err(format!("redirect query {s:?} must not start with '?'"));
    }
    if s.len() > MAX_REDIRECT_PART_LEN || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "invalid redirect query {s:?}: at most {MAX_REDIRECT_PART_LEN} visible characters"
        ));
    }
    check_placeholders(s, "query", &["protocol", "host", "port", "path", "query"])
}
