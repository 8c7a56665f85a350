//! The per-request routing decision of one listener, with ALB semantics: rules
//! in priority order (lowest first), the first rule whose conditions all match
//! wins, otherwise the default action. Within a condition any value suffices.
//!
//! [`Router::compile`] does every parse once (wildcards, header names, CIDRs),
//! so [`Router::route`] only compares bytes: no regex, and no allocation unless
//! a query-string condition meets a percent-encoded query.

use std::borrow::Cow;
use std::net::IpAddr;

use http::header::HeaderName;
use ipnet::{IpNet, Ipv4Net};

use crate::config::model::{Action, Condition, Listener, QueryMatch, Rule};
use crate::proxy::route::wildcard::Pattern;
use crate::targets::WeightedGroups;

/// What routing needs from a request, borrowed so the caller allocates nothing.
pub struct RequestView<'a> {
    pub method: &'a http::Method,
    /// Host header (or the URI authority for HTTP/2), without the port.
    pub host: Option<&'a str>,
    /// Path only, no query.
    pub path: &'a str,
    /// Raw query string without '?'.
    pub query: Option<&'a str>,
    pub headers: &'a http::HeaderMap,
    pub source_ip: IpAddr,
}

/// The winning action and the priority that chose it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Routed<'r> {
    pub action: &'r Action,
    /// 0 for the default action (as ALB's `matched_rule_priority`).
    pub priority: u32,
    /// For a weighted forward: its groups, ready to choose among.
    pub weighted: Option<&'r WeightedGroups>,
}

/// A listener's rules, compiled for matching.
#[derive(Debug, Clone)]
pub struct Router {
    /// Sorted by priority, lowest first.
    rules: Vec<CompiledRule>,
    default_action: Action,
    default_weighted: Option<WeightedGroups>,
}

#[derive(Debug, Clone)]
struct CompiledRule {
    priority: u32,
    /// Cheapest first; the result does not depend on the order (AND).
    conditions: Vec<Cond>,
    action: Action,
    weighted: Option<WeightedGroups>,
}

/// A weighted forward's group choice, compiled once with the rule.
fn weighted(action: &Action) -> Option<WeightedGroups> {
    match action {
        Action::WeightedForward {
            target_groups,
            stickiness,
        } => Some(WeightedGroups::new(
            target_groups
                .iter()
                .enumerate()
                .map(|(i, g)| (i, g.name.as_str(), g.weight)),
            *stickiness,
        )),
        _ => None,
    }
}

#[derive(Debug, Clone)]
enum Cond {
    Method(Vec<Box<str>>),
    SourceIp(Vec<IpNet>),
    Host(Vec<Pattern>),
    Path(Vec<Pattern>),
    Header {
        /// `None` if the name is not a valid header name (the validator
        /// rejects those): such a header can never be present.
        name: Option<HeaderName>,
        values: Vec<Pattern>,
    },
    Query(Vec<QueryPattern>),
}

#[derive(Debug, Clone)]
struct QueryPattern {
    /// `None` matches the value of any pair, or a bare `?token`.
    key: Option<Pattern>,
    value: Pattern,
}

impl Cond {
    fn compile(c: &Condition) -> Cond {
        let ci = |vs: &[String]| vs.iter().map(|v| Pattern::new(v, true)).collect();
        match c {
            Condition::HttpRequestMethod(vs) => {
                Cond::Method(vs.iter().map(|v| v.as_str().into()).collect())
            }
            Condition::SourceIp(nets) => Cond::SourceIp(with_mapped_v4(nets)),
            Condition::HostHeader(vs) => Cond::Host(ci(vs)),
            Condition::PathPattern(vs) => {
                Cond::Path(vs.iter().map(|v| Pattern::new(v, false)).collect())
            }
            Condition::HttpHeader { name, values } => Cond::Header {
                name: HeaderName::from_bytes(name.as_bytes()).ok(),
                values: ci(values),
            },
            Condition::QueryString(qs) => Cond::Query(
                qs.iter()
                    .map(|QueryMatch { key, value }| QueryPattern {
                        key: key.as_deref().map(|k| Pattern::new(k, true)),
                        value: Pattern::new(value, true),
                    })
                    .collect(),
            ),
        }
    }

    /// Relative evaluation cost, so cheap conditions reject a request first
    /// and the query is only parsed when everything else already matched.
    fn cost(&self) -> u8 {
        match self {
            Cond::Method(_) => 0,
            Cond::SourceIp(_) => 1,
            Cond::Host(_) => 2,
            Cond::Path(_) => 3,
            Cond::Header { .. } => 4,
            Cond::Query(_) => 5,
        }
    }

    fn matches<'q>(&self, req: &Ctx<'q, '_>, query: &mut Option<Vec<QueryPair<'q>>>) -> bool {
        match self {
            Cond::Method(ms) => {
                let m = req.view.method.as_str();
                ms.iter().any(|v| &**v == m)
            }
            Cond::SourceIp(nets) => nets.iter().any(|n| n.contains(&req.source_ip)),
            Cond::Host(ps) => match req.host {
                Some(h) => ps.iter().any(|p| p.matches(h)),
                None => false,
            },
            Cond::Path(ps) => ps.iter().any(|p| p.matches(req.view.path)),
            Cond::Header {
                name: Some(name),
                values,
            } => req
                .view
                .headers
                .get_all(name)
                .iter()
                .any(|v| values.iter().any(|p| p.matches_bytes(v.as_bytes()))),
            Cond::Header { name: None, .. } => false,
            Cond::Query(qps) => {
                let pairs = query.get_or_insert_with(|| parse_query(req.view.query.unwrap_or("")));
                qps.iter()
                    .any(|qp| pairs.iter().any(|pair| qp.matches(pair)))
            }
        }
    }
}

impl QueryPattern {
    fn matches(&self, pair: &QueryPair<'_>) -> bool {
        match &self.key {
            Some(k) => k.matches(&pair.key) && self.value.matches(&pair.value),
            None => self.value.matches(&pair.value) || (pair.bare && self.value.matches(&pair.key)),
        }
    }
}

/// IPv4 networks written in IPv4-mapped IPv6 form (`::ffff:10.0.0.0/104`) also
/// match as IPv4, since mapped sources are normalised to IPv4 before matching.
fn with_mapped_v4(nets: &[IpNet]) -> Vec<IpNet> {
    let mut out = nets.to_vec();
    for n in nets {
        if let IpNet::V6(v6) = n {
            if let (Some(v4), true) = (v6.network().to_ipv4_mapped(), v6.prefix_len() >= 96) {
                if let Ok(net) = Ipv4Net::new(v4, v6.prefix_len() - 96) {
                    out.push(IpNet::V4(net));
                }
            }
        }
    }
    out
}

/// Per-request values derived once from the [`RequestView`].
struct Ctx<'q, 'v> {
    view: &'v RequestView<'q>,
    host: Option<&'q str>,
    source_ip: IpAddr,
}

impl Router {
    /// Compiles a validated listener. Rules are (re)sorted by priority, so a
    /// hand-built listener in any order routes the same as a loaded one.
    pub fn compile(listener: &Listener) -> Router {
        let mut rules: Vec<CompiledRule> = listener
            .rules
            .iter()
            .map(|rule: &Rule| {
                let mut conditions: Vec<Cond> = rule.conditions.iter().map(Cond::compile).collect();
                conditions.sort_by_key(Cond::cost);
                CompiledRule {
                    priority: rule.priority,
                    conditions,
                    action: rule.action.clone(),
                    weighted: weighted(&rule.action),
                }
            })
            .collect();
        rules.sort_by_key(|r| r.priority);
        Router {
            rules,
            default_action: listener.default_action.clone(),
            default_weighted: weighted(&listener.default_action),
        }
    }

    /// The action for `req`: the first rule (by priority) whose conditions all
    /// match, else the default action with priority 0.
    pub fn route<'r>(&'r self, req: &RequestView<'_>) -> Routed<'r> {
        let ctx = Ctx {
            view: req,
            host: req.host.map(strip_port).filter(|h| !h.is_empty()),
            source_ip: canonical_ip(req.source_ip),
        };
        // Parsed on first use, then shared by every later rule of this request.
        let mut query = None;
        for rule in &self.rules {
            if rule.conditions.iter().all(|c| c.matches(&ctx, &mut query)) {
                return Routed {
                    action: &rule.action,
                    priority: rule.priority,
                    weighted: rule.weighted.as_ref(),
                };
            }
        }
        Routed {
            action: &self.default_action,
            priority: 0,
            weighted: self.default_weighted.as_ref(),
        }
    }
}

/// An IPv4-mapped IPv6 peer (`::ffff:a.b.c.d`, what a dual-stack socket
/// reports for IPv4 clients) is the IPv4 client it stands for.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Drops a `:port` suffix: `host:80` → `host`, `[::1]:80` → `[::1]`. A bare
/// IPv6 literal (several colons, no brackets) is left alone.
pub(super) fn strip_port(host: &str) -> &str {
    let cut = if host.starts_with('[') {
        match host.find(']') {
            Some(end) => end + 1,
            None => return host,
        }
    } else {
        // A bare IPv6 literal's first colon is followed by more colons,
        // never by digits alone: the port check below leaves it whole.
        match host.find(':') {
            Some(colon) => colon,
            None => return host,
        }
    };
    match host[cut..].strip_prefix(':') {
        Some(port) if port.bytes().all(|b| b.is_ascii_digit()) => &host[..cut],
        _ => host,
    }
}

/// One `&`-separated query item, percent-decoded.
#[derive(Debug, PartialEq)]
struct QueryPair<'a> {
    key: Cow<'a, str>,
    /// Empty for a bare `key`.
    value: Cow<'a, str>,
    /// No `=`: the token also counts as a value for key-less conditions.
    bare: bool,
}

fn parse_query(q: &str) -> Vec<QueryPair<'_>> {
    q.split('&')
        .filter(|item| !item.is_empty())
        .map(|item| match item.split_once('=') {
            Some((k, v)) => QueryPair {
                key: decode(k),
                value: decode(v),
                bare: false,
            },
            None => QueryPair {
                key: decode(item),
                value: Cow::Borrowed(""),
                bare: true,
            },
        })
        .collect()
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a
/// byte; a malformed `%` stays literal, invalid UTF-8 becomes U+FFFD. Borrows
/// when there is nothing to decode.
fn decode(s: &str) -> Cow<'_, str> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Cow::Borrowed(s);
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => match (b.get(i + 1).and_then(hex), b.get(i + 2).and_then(hex)) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    match String::from_utf8(out) {
        Ok(s) => Cow::Owned(s),
        Err(e) => Cow::Owned(String::from_utf8_lossy(e.as_bytes()).into_owned()),
    }
}

fn hex(b: &u8) -> Option<u8> {
    (*b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::ListenerProtocol;
    use http::{HeaderMap, HeaderValue, Method};

    fn fixed(code: u16) -> Action {
        Action::FixedResponse {
            status_code: code,
            content_type: None,
            message_body: String::new(),
        }
    }

    fn listener(rules: Vec<Rule>) -> Listener {
        Listener {
            load_balancer: "lb".into(),
            protocol: ListenerProtocol::Http,
            port: 80,
            default_action: fixed(503),
            certificates: vec![],
            ssl_policy: String::new(),
            tls_policy: None,
            mutual_authentication: crate::tls::MutualAuth::Off,
            rules,
        }
    }

    /// A rule tagged by its action too: a fixed response `200 + priority % 100`.
    fn rule(priority: u32, conditions: Vec<Condition>) -> Rule {
        Rule {
            priority,
            conditions,
            action: fixed(200 + (priority % 100) as u16),
        }
    }

    fn strs(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// A request builder with defaults: GET example.com/ from 192.0.2.1.
    struct Req {
        method: Method,
        host: Option<&'static str>,
        path: &'static str,
        query: Option<&'static str>,
        headers: HeaderMap,
        ip: IpAddr,
    }

    impl Req {
        fn new() -> Req {
            Req {
                method: Method::GET,
                host: Some("example.com"),
                path: "/",
                query: None,
                headers: HeaderMap::new(),
                ip: "192.0.2.1".parse().unwrap(),
            }
        }
        fn host(mut self, h: Option<&'static str>) -> Req {
            self.host = h;
            self
        }
        fn path(mut self, p: &'static str) -> Req {
            self.path = p;
            self
        }
        fn query(mut self, q: &'static str) -> Req {
            self.query = Some(q);
            self
        }
        fn method(mut self, m: &str) -> Req {
            self.method = Method::from_bytes(m.as_bytes()).unwrap();
            self
        }
        fn header(mut self, n: &'static str, v: &'static str) -> Req {
            self.headers.append(n, HeaderValue::from_static(v));
            self
        }
        fn ip(mut self, ip: &str) -> Req {
            self.ip = ip.parse().unwrap();
            self
        }
        fn view(&self) -> RequestView<'_> {
            RequestView {
                method: &self.method,
                host: self.host,
                path: self.path,
                query: self.query,
                headers: &self.headers,
                source_ip: self.ip,
            }
        }
    }

    /// The matched priority (0 = default) for `req` against one condition.
    fn one(cond: Condition, req: Req) -> u32 {
        let r = Router::compile(&listener(vec![rule(1, vec![cond])]));
        r.route(&req.view()).priority
    }

    #[test]
    fn a_port_is_cut_only_from_a_name_or_a_bracketed_address() {
        assert_eq!(strip_port("example.com:8080"), "example.com");
        assert_eq!(strip_port("[2001:db8::1]:443"), "[2001:db8::1]");
        // A bare IPv6 literal has colons but no port.
        assert_eq!(strip_port("::1"), "::1");
        assert_eq!(strip_port("::8080"), "::8080");
        assert_eq!(strip_port("2001:db8::1"), "2001:db8::1");
    }

    #[test]
    fn a_weighted_forward_routes_with_its_groups_ready() {
        let groups = |names: &[(&str, u16)]| Action::WeightedForward {
            target_groups: names
                .iter()
                .map(|&(name, weight)| crate::config::model::WeightedGroup {
                    name: name.into(),
                    weight,
                })
                .collect(),
            stickiness: None,
        };
        let mut l = listener(vec![Rule {
            priority: 1,
            conditions: vec![Condition::PathPattern(strs(&["/w"]))],
            action: groups(&[("a", 0), ("b", 1)]),
        }]);
        l.default_action = groups(&[("c", 1), ("d", 0)]);
        let r = Router::compile(&l);
        let pick = |path| {
            let req = Req::new().path(path);
            let routed = r.route(&req.view());
            routed
                .weighted
                .expect("a weighted forward's groups")
                .pick(&HeaderMap::new())
                .expect("a group with weight")
                .group
        };
        // Only the group with weight is ever chosen: its index in the action.
        assert_eq!(pick("/w"), 1);
        assert_eq!(pick("/other"), 0);
        // Any other action has none.
        let r = Router::compile(&listener(vec![rule(1, vec![])]));
        assert!(r.route(&Req::new().view()).weighted.is_none());
    }

    #[test]
    fn default_action_when_nothing_matches() {
        let r = Router::compile(&listener(vec![rule(
            1,
            vec![Condition::PathPattern(strs(&["/api/*"]))],
        )]));
        let req = Req::new().path("/web");
        let routed = r.route(&req.view());
        assert_eq!(routed.priority, 0);
        assert_eq!(routed.action, &fixed(503));
        // No rules at all.
        let r = Router::compile(&listener(vec![]));
        assert_eq!(r.route(&Req::new().view()).priority, 0);
    }

    #[test]
    fn host_header_case_insensitive_wildcards() {
        let c = || Condition::HostHeader(strs(&["*.example.com"]));
        assert_eq!(one(c(), Req::new().host(Some("a.example.com"))), 1);
        assert_eq!(one(c(), Req::new().host(Some("A.EXAMPLE.COM"))), 1);
        assert_eq!(one(c(), Req::new().host(Some("example.com"))), 0);
        assert_eq!(one(c(), Req::new().host(None)), 0);
        let c = || Condition::HostHeader(strs(&["API.example.com"]));
        assert_eq!(one(c(), Req::new().host(Some("api.Example.com"))), 1);
        let c = || Condition::HostHeader(strs(&["api-?.example.com"]));
        assert_eq!(one(c(), Req::new().host(Some("api-1.example.com"))), 1);
        assert_eq!(one(c(), Req::new().host(Some("api-12.example.com"))), 0);
    }

    #[test]
    fn host_missing_or_empty_never_matches_even_star() {
        let c = || Condition::HostHeader(strs(&["*"]));
        assert_eq!(one(c(), Req::new().host(None)), 0);
        assert_eq!(one(c(), Req::new().host(Some(""))), 0);
        assert_eq!(one(c(), Req::new().host(Some("x"))), 1);
    }

    #[test]
    fn host_port_is_stripped() {
        let c = || Condition::HostHeader(strs(&["api.example.com"]));
        assert_eq!(one(c(), Req::new().host(Some("api.example.com:8080"))), 1);
        assert_eq!(one(c(), Req::new().host(Some("api.example.com:"))), 1);
        assert_eq!(one(c(), Req::new().host(Some("api.example.com:x"))), 0);
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
        assert_eq!(strip_port("::1"), "::1");
        assert_eq!(strip_port("2001:db8::1"), "2001:db8::1");
        assert_eq!(strip_port("a.b:443"), "a.b");
        assert_eq!(strip_port("a.b"), "a.b");
        assert_eq!(strip_port("[::1"), "[::1");
        let c = || Condition::HostHeader(strs(&["[::1]"]));
        assert_eq!(one(c(), Req::new().host(Some("[::1]:8080"))), 1);
    }

    #[test]
    fn path_pattern_case_sensitive_raw() {
        let c = || Condition::PathPattern(strs(&["/api/*", "/img/??.png"]));
        assert_eq!(one(c(), Req::new().path("/api/")), 1);
        assert_eq!(one(c(), Req::new().path("/api/v1")), 1);
        assert_eq!(one(c(), Req::new().path("/API/v1")), 0);
        assert_eq!(one(c(), Req::new().path("/api")), 0);
        assert_eq!(one(c(), Req::new().path("/img/ab.png")), 1);
        assert_eq!(one(c(), Req::new().path("/img/a.png")), 0);
        // Not percent-decoded.
        let c = || Condition::PathPattern(strs(&["/a b"]));
        assert_eq!(one(c(), Req::new().path("/a%20b")), 0);
        let c = || Condition::PathPattern(strs(&["/a%20b"]));
        assert_eq!(one(c(), Req::new().path("/a%20b")), 1);
        // The query is not part of the path.
        let c = || Condition::PathPattern(strs(&["/x"]));
        assert_eq!(one(c(), Req::new().path("/x").query("a=1")), 1);
    }

    #[test]
    fn http_header_name_and_value_case_insensitive() {
        let c = || Condition::HttpHeader {
            name: "X-Env".into(),
            values: strs(&["canary*"]),
        };
        assert_eq!(one(c(), Req::new().header("x-env", "canary-1")), 1);
        assert_eq!(one(c(), Req::new().header("x-env", "CANARY")), 1);
        assert_eq!(one(c(), Req::new().header("x-env", "prod")), 0);
        assert_eq!(one(c(), Req::new()), 0);
        assert_eq!(one(c(), Req::new().header("x-other", "canary")), 0);
    }

    #[test]
    fn http_header_repeated_any_instance() {
        let c = || Condition::HttpHeader {
            name: "x-forwarded-for".into(),
            values: strs(&["10.*"]),
        };
        let req = Req::new()
            .header("x-forwarded-for", "192.0.2.9")
            .header("x-forwarded-for", "10.1.2.3");
        assert_eq!(one(c(), req), 1);
        let req = Req::new()
            .header("x-forwarded-for", "192.0.2.9")
            .header("x-forwarded-for", "198.51.100.1");
        assert_eq!(one(c(), req), 0);
    }

    #[test]
    fn http_header_star_needs_presence() {
        let c = || Condition::HttpHeader {
            name: "X-Env".into(),
            values: strs(&["*"]),
        };
        assert_eq!(one(c(), Req::new().header("x-env", "")), 1);
        assert_eq!(one(c(), Req::new()), 0);
    }

    #[test]
    fn http_header_invalid_name_never_matches() {
        let c = Condition::HttpHeader {
            name: "bad name".into(),
            values: strs(&["*"]),
        };
        assert_eq!(one(c, Req::new().header("x-env", "1")), 0);
    }

    #[test]
    fn method_exact_case_sensitive() {
        let c = || Condition::HttpRequestMethod(strs(&["GET", "HEAD"]));
        assert_eq!(one(c(), Req::new().method("GET")), 1);
        assert_eq!(one(c(), Req::new().method("HEAD")), 1);
        assert_eq!(one(c(), Req::new().method("POST")), 0);
        assert_eq!(one(c(), Req::new().method("get")), 0);
        let c = || Condition::HttpRequestMethod(strs(&["PURGE"]));
        assert_eq!(one(c(), Req::new().method("PURGE")), 1);
        let c = || Condition::HttpRequestMethod(strs(&["G*"]));
        assert_eq!(one(c(), Req::new().method("GET")), 0, "no wildcards");
    }

    fn q(key: Option<&str>, value: &str) -> QueryMatch {
        QueryMatch {
            key: key.map(Into::into),
            value: value.into(),
        }
    }

    #[test]
    fn query_string_with_key() {
        let c = || Condition::QueryString(vec![q(Some("version"), "v2")]);
        assert_eq!(one(c(), Req::new().query("version=v2")), 1);
        assert_eq!(one(c(), Req::new().query("a=1&version=v2&b")), 1);
        assert_eq!(one(c(), Req::new().query("VERSION=V2")), 1);
        assert_eq!(one(c(), Req::new().query("version=v3")), 0);
        assert_eq!(one(c(), Req::new().query("other=v2")), 0);
        assert_eq!(one(c(), Req::new()), 0);
        assert_eq!(one(c(), Req::new().query("")), 0);
        let c = || Condition::QueryString(vec![q(Some("v*"), "?2")]);
        assert_eq!(one(c(), Req::new().query("ver=x2")), 1);
    }

    #[test]
    fn query_string_without_key() {
        let c = || Condition::QueryString(vec![q(None, "debug")]);
        assert_eq!(one(c(), Req::new().query("debug")), 1);
        assert_eq!(one(c(), Req::new().query("x=debug")), 1);
        assert_eq!(one(c(), Req::new().query("a=1&x=DEBUG")), 1);
        assert_eq!(one(c(), Req::new().query("debug=1")), 0);
        assert_eq!(one(c(), Req::new().query("x=nodebug")), 0);
    }

    #[test]
    fn query_string_bare_key_has_empty_value() {
        let c = || Condition::QueryString(vec![q(Some("debug"), "*")]);
        assert_eq!(one(c(), Req::new().query("debug")), 1);
        assert_eq!(one(c(), Req::new().query("debug=")), 1);
        assert_eq!(one(c(), Req::new().query("debug=yes")), 1);
        assert_eq!(one(c(), Req::new().query("nodebug")), 0);
    }

    #[test]
    fn query_string_percent_decoded() {
        let c = || Condition::QueryString(vec![q(Some("name"), "a b/c")]);
        assert_eq!(one(c(), Req::new().query("name=a%20b%2Fc")), 1);
        assert_eq!(one(c(), Req::new().query("name=a+b%2fc")), 1);
        assert_eq!(one(c(), Req::new().query("n%61me=a+b/c")), 1);
        let c = || Condition::QueryString(vec![q(Some("x"), "100%")]);
        assert_eq!(
            one(c(), Req::new().query("x=100%")),
            1,
            "malformed % stays literal"
        );
        assert_eq!(one(c(), Req::new().query("x=100%25")), 1);
        let c = || Condition::QueryString(vec![q(Some("x"), "é")]);
        assert_eq!(one(c(), Req::new().query("x=%C3%A9")), 1);
    }

    #[test]
    fn query_string_escaped_wildcards() {
        let c = || Condition::QueryString(vec![q(Some("x"), "a\\*")]);
        assert_eq!(one(c(), Req::new().query("x=a*")), 1);
        assert_eq!(one(c(), Req::new().query("x=a%2A")), 1);
        assert_eq!(one(c(), Req::new().query("x=ab")), 0);
    }

    #[test]
    fn query_string_values_or() {
        let c = || Condition::QueryString(vec![q(Some("version"), "v2"), q(None, "debug")]);
        assert_eq!(one(c(), Req::new().query("version=v2")), 1);
        assert_eq!(one(c(), Req::new().query("debug")), 1);
        assert_eq!(one(c(), Req::new().query("version=v1")), 0);
    }

    #[test]
    fn decode_borrows_when_nothing_to_decode() {
        assert!(matches!(decode("abc"), Cow::Borrowed("abc")));
        assert_eq!(decode("a%41+b"), "aA b");
        assert_eq!(decode("%"), "%");
        assert_eq!(decode("%4"), "%4");
        assert_eq!(decode("%zz"), "%zz");
        assert_eq!(decode("%ff"), "\u{fffd}");
        let pairs = parse_query("a=1&&b&=c&d=e=f&");
        assert_eq!(
            pairs,
            vec![
                QueryPair {
                    key: "a".into(),
                    value: "1".into(),
                    bare: false
                },
                QueryPair {
                    key: "b".into(),
                    value: "".into(),
                    bare: true
                },
                QueryPair {
                    key: "".into(),
                    value: "c".into(),
                    bare: false
                },
                QueryPair {
                    key: "d".into(),
                    value: "e=f".into(),
                    bare: false
                },
            ]
        );
        assert!(pairs.iter().all(|p| matches!(p.key, Cow::Borrowed(_))));
    }

    #[test]
    fn source_ip_v4_v6_and_mapped() {
        let c = || {
            Condition::SourceIp(vec![
                "10.0.0.0/8".parse().unwrap(),
                "2001:db8::/32".parse().unwrap(),
            ])
        };
        assert_eq!(one(c(), Req::new().ip("10.1.2.3")), 1);
        assert_eq!(one(c(), Req::new().ip("11.1.2.3")), 0);
        assert_eq!(one(c(), Req::new().ip("2001:db8::1")), 1);
        assert_eq!(one(c(), Req::new().ip("2001:db9::1")), 0);
        assert_eq!(one(c(), Req::new().ip("::ffff:10.9.8.7")), 1);
        assert_eq!(one(c(), Req::new().ip("::ffff:11.9.8.7")), 0);
        // IPv4-compatible (deprecated, not mapped) stays IPv6.
        assert_eq!(one(c(), Req::new().ip("::10.9.8.7")), 0);
        // A CIDR written in mapped form matches plain IPv4 sources too.
        let c = || Condition::SourceIp(vec!["::ffff:192.0.2.0/120".parse().unwrap()]);
        assert_eq!(one(c(), Req::new().ip("192.0.2.77")), 1);
        assert_eq!(one(c(), Req::new().ip("::ffff:192.0.2.77")), 1);
        assert_eq!(one(c(), Req::new().ip("192.0.3.1")), 0);
        let c = || Condition::SourceIp(vec!["0.0.0.0/0".parse().unwrap()]);
        assert_eq!(one(c(), Req::new().ip("::1")), 0);
    }

    #[test]
    fn the_whole_mapped_range_matches_every_ipv4_client() {
        // `::ffff:0:0/96` is every IPv4 address in mapped form: /96 is the
        // shortest mapped prefix, and it stands for IPv4's /0.
        let c = || Condition::SourceIp(vec!["::ffff:0:0/96".parse().unwrap()]);
        for v4 in ["0.0.0.0", "10.1.2.3", "192.0.2.1", "255.255.255.255"] {
            assert_eq!(one(c(), Req::new().ip(v4)), 1, "{v4}");
        }
        assert_eq!(one(c(), Req::new().ip("::ffff:203.0.113.9")), 1);
        for v6 in ["::1", "2001:db8::1", "::10.1.2.3", "::fffe:a01:203"] {
            assert_eq!(one(c(), Req::new().ip(v6)), 0, "{v6}");
        }
        // One bit longer: half of IPv4.
        let c = || Condition::SourceIp(vec!["::ffff:0:0/97".parse().unwrap()]);
        assert_eq!(one(c(), Req::new().ip("127.0.0.1")), 1);
        assert_eq!(one(c(), Req::new().ip("128.0.0.1")), 0);
    }

    #[test]
    fn conditions_and_values() {
        // Values within a condition are ORed, conditions are ANDed.
        let r = Router::compile(&listener(vec![rule(
            7,
            vec![
                Condition::HostHeader(strs(&["a.example.com", "b.example.com"])),
                Condition::PathPattern(strs(&["/api/*"])),
                Condition::HttpRequestMethod(strs(&["GET"])),
            ],
        )]));
        let p = |req: Req| r.route(&req.view()).priority;
        assert_eq!(p(Req::new().host(Some("a.example.com")).path("/api/x")), 7);
        assert_eq!(p(Req::new().host(Some("b.example.com")).path("/api/x")), 7);
        assert_eq!(p(Req::new().host(Some("c.example.com")).path("/api/x")), 0);
        assert_eq!(p(Req::new().host(Some("a.example.com")).path("/web")), 0);
        assert_eq!(
            p(Req::new()
                .host(Some("a.example.com"))
                .path("/api/x")
                .method("POST")),
            0
        );
        // Two conditions of the same kind must both match.
        let r = Router::compile(&listener(vec![rule(
            2,
            vec![
                Condition::HttpHeader {
                    name: "a".into(),
                    values: strs(&["1"]),
                },
                Condition::HttpHeader {
                    name: "b".into(),
                    values: strs(&["2"]),
                },
            ],
        )]));
        let p = |req: Req| r.route(&req.view()).priority;
        assert_eq!(p(Req::new().header("a", "1").header("b", "2")), 2);
        assert_eq!(p(Req::new().header("a", "1")), 0);
    }

    #[test]
    fn priority_order_lowest_first_in_any_listing_order() {
        let wide = |prio| rule(prio, vec![Condition::PathPattern(strs(&["*"]))]);
        let narrow = |prio| rule(prio, vec![Condition::PathPattern(strs(&["/api/*"]))]);
        // Sorted, as the loader produces.
        let r = Router::compile(&listener(vec![narrow(5), wide(10)]));
        let routed = r.route(&Req::new().path("/api/x").view());
        assert_eq!(routed.priority, 5);
        assert_eq!(routed.action, &fixed(205));
        assert_eq!(r.route(&Req::new().path("/web").view()).priority, 10);
        // Listed out of order: the lower number still wins.
        let r = Router::compile(&listener(vec![wide(10), narrow(5)]));
        assert_eq!(r.route(&Req::new().path("/api/x").view()).priority, 5);
        assert_eq!(r.route(&Req::new().path("/web").view()).priority, 10);
        // First match wins even if a later rule is more specific.
        let r = Router::compile(&listener(vec![wide(1), narrow(2)]));
        assert_eq!(r.route(&Req::new().path("/api/x").view()).priority, 1);
    }

    #[test]
    fn compiles_from_config_text() {
        let text = r#"
[[security_group]]
name = "sg"
ingress = [{ protocol = "tcp", ports = "80", source = "0.0.0.0/0" }]

[[target_group]]
name = "web"
protocol = "HTTP"
port = 8080

[[target_group]]
name = "api"
protocol = "HTTP"
port = 8081

[[load_balancer]]
name = "lb"
interfaces = ["lo"]
addresses = ["127.0.0.1"]
security_groups = ["sg"]

[[listener]]
load_balancer = "lb"
protocol = "HTTP"
port = 80
default_action = { type = "forward", target_group = "web" }

[[rule]]
listener = "lb:80"
priority = 20
conditions = [{ field = "path-pattern", values = ["/*"] }]
action = { type = "fixed-response", status_code = 404 }

[[rule]]
listener = "lb:80"
priority = 10
conditions = [
  { field = "host-header", values = ["api.example.com"] },
  { field = "query-string", values = [{ key = "v", value = "2" }] },
]
action = { type = "forward", target_group = "api" }
"#;
        let cfg = match crate::config::parse_str(text, "t.toml") {
            Ok(cfg) => cfg,
            Err(e) => panic!("{e}"),
        };
        let r = Router::compile(&cfg.listeners[0]);
        let req = Req::new()
            .host(Some("API.example.com:80"))
            .path("/x")
            .query("v=2");
        let routed = r.route(&req.view());
        assert_eq!(routed.priority, 10);
        assert_eq!(
            routed.action,
            &Action::Forward {
                target_group: "api".into()
            }
        );
        let req = Req::new()
            .host(Some("api.example.com"))
            .path("/x")
            .query("v=3");
        assert_eq!(r.route(&req.view()).priority, 20);
        let req = Req::new().path("*");
        let routed = r.route(&req.view());
        assert_eq!(routed.priority, 0);
        assert_eq!(
            routed.action,
            &Action::Forward {
                target_group: "web".into()
            }
        );
    }
}
