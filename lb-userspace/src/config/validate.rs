//! Raw file → validated [`Config`]: defaults, ranges, names, references and
//! protocol compatibility, following ELBv2 semantics.
//!
//! The checker never stops at the first problem: every check pushes a
//! diagnostic and carries on with a placeholder value, so one `xalb check`
//! run lists everything that is wrong. The model is only returned when no
//! diagnostic was pushed, so placeholders never escape.
//!
//! Field paths use `section[index]` (0-based, the index in the file, which
//! is also the model's `Vec` index), except listeners, which are named
//! `listener "<load_balancer>:<port>"` the way rules refer to them.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::InconsistentKeys;

use super::duration::parse_duration;
use super::error::{ConfigError, Diagnostic, Locator};
use super::model::*;
use super::raw::*;

/// Validates a parsed file. `base_dir` resolves relative certificate paths.
pub(crate) fn validate(
    raw: &RawConfig,
    text: &str,
    file: &str,
    base_dir: &Path,
) -> Result<Config, ConfigError> {
    let mut c = Checker {
        loc: Locator::new(file, text),
        base_dir,
        diags: Vec::new(),
    };
    let config = c.config(raw);
    if c.diags.is_empty() {
        Ok(config)
    } else {
        // File order reads best; the sort is stable so problems on the same
        // spot keep the order they were found in.
        c.diags.sort_by_key(|d| (d.line, d.column));
        Err(ConfigError::Invalid(c.diags))
    }
}

// ---------------------------------------------------------------------------
// Limits (ELBv2 values unless noted).

/// An inclusive duration range with its human form for messages.
struct DurationRange {
    min: Duration,
    max: Duration,
    /// 0 is accepted as "off" even though it is below `min`.
    zero_is_off: bool,
    text: &'static str,
}

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

const DEREGISTRATION_DELAY: DurationRange = DurationRange {
    min: secs(0),
    max: secs(3600),
    zero_is_off: false,
    text: "0s-3600s",
};
const SLOW_START: DurationRange = DurationRange {
    min: secs(30),
    max: secs(900),
    zero_is_off: true,
    text: "0s (off) or 30s-900s",
};
const IDLE_TIMEOUT: DurationRange = DurationRange {
    min: secs(1),
    max: secs(4000),
    zero_is_off: false,
    text: "1s-4000s",
};
const HC_INTERVAL: DurationRange = DurationRange {
    min: secs(5),
    max: secs(300),
    zero_is_off: false,
    text: "5s-300s",
};
const HC_TIMEOUT: DurationRange = DurationRange {
    min: secs(2),
    max: secs(120),
    zero_is_off: false,
    text: "2s-120s",
};
const STICKINESS_DURATION: DurationRange = DurationRange {
    min: secs(1),
    max: secs(7 * 86_400),
    zero_is_off: false,
    text: "1s-7d",
};

const MAX_NAME_LEN: usize = 32;
/// Linux IFNAMSIZ minus the terminating NUL.
const MAX_IFNAME_LEN: usize = 15;
const MAX_CONDITION_VALUE_LEN: usize = 128;
const MAX_METHOD_LEN: usize = 40;
const MAX_HEADER_NAME_LEN: usize = 40;
const MAX_FIXED_BODY: usize = 1024;
const MAX_HC_PATH_LEN: usize = 1024;
const MAX_REDIRECT_PART_LEN: usize = 128;
const DEFAULT_SSL_POLICY: &str = "ELBSecurityPolicy-TLS13-1-2-2021-06";
const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9901";

const TARGET_PROTOCOLS: &[(&str, TargetProtocol)] = &[
    ("HTTP", TargetProtocol::Http),
    ("HTTPS", TargetProtocol::Https),
    ("TCP", TargetProtocol::Tcp),
];
const LISTENER_PROTOCOLS: &[(&str, ListenerProtocol)] = &[
    ("HTTP", ListenerProtocol::Http),
    ("HTTPS", ListenerProtocol::Https),
    ("TCP", ListenerProtocol::Tcp),
];
const IP_PROTOCOLS: &[(&str, IpProtocol)] = &[
    ("tcp", IpProtocol::Tcp),
    ("udp", IpProtocol::Udp),
    ("icmp", IpProtocol::Icmp),
    ("icmpv6", IpProtocol::Icmpv6),
    ("all", IpProtocol::All),
];
const ALGORITHMS: &[(&str, Algorithm)] = &[
    ("round_robin", Algorithm::RoundRobin),
    (
        "least_outstanding_requests",
        Algorithm::LeastOutstandingRequests,
    ),
    ("weighted_random", Algorithm::WeightedRandom),
];
const SCHEMES: &[(&str, Scheme)] = &[
    ("internet-facing", Scheme::InternetFacing),
    ("internal", Scheme::Internal),
];
const CONTENT_TYPES: &[(&str, ())] = &[
    ("text/plain", ()),
    ("text/css", ()),
    ("text/html", ()),
    ("application/javascript", ()),
    ("application/json", ()),
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum StickyKind {
    Lb,
    App,
}
const STICKINESS_TYPES: &[(&str, StickyKind)] = &[
    ("lb_cookie", StickyKind::Lb),
    ("app_cookie", StickyKind::App),
];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ActionKind {
    Forward,
    Redirect,
    FixedResponse,
}
const ACTION_TYPES: &[(&str, ActionKind)] = &[
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
enum ConditionKind {
    HostHeader,
    PathPattern,
    HttpHeader,
    HttpRequestMethod,
    QueryString,
    SourceIp,
}
const CONDITION_FIELDS: &[(&str, ConditionKind)] = &[
    ("host-header", ConditionKind::HostHeader),
    ("path-pattern", ConditionKind::PathPattern),
    ("http-header", ConditionKind::HttpHeader),
    ("http-request-method", ConditionKind::HttpRequestMethod),
    ("query-string", ConditionKind::QueryString),
    ("source-ip", ConditionKind::SourceIp),
];

fn protocol_name<T: PartialEq + Copy>(table: &[(&'static str, T)], value: T) -> &'static str {
    table
        .iter()
        .find(|(_, v)| *v == value)
        .map_or("?", |(n, _)| n)
}

// ---------------------------------------------------------------------------

/// Names defined in the file, for reference checks. A protocol is `None`
/// when the definition itself is invalid (already reported), so that
/// compatibility checks stay quiet instead of piling on.
#[derive(Default)]
struct Names {
    security_groups: HashSet<String>,
    target_groups: HashMap<String, Option<TargetProtocol>>,
    load_balancers: HashSet<String>,
    /// By `"<load_balancer>:<port>"`.
    listeners: HashMap<String, Option<ListenerProtocol>>,
}

struct Checker<'a> {
    loc: Locator<'a>,
    base_dir: &'a Path,
    diags: Vec<Diagnostic>,
}

impl Checker<'_> {
    fn err(&mut self, span: Range<usize>, field: impl Into<String>, msg: impl Into<String>) {
        let d = self.loc.diagnostic(span, field, msg);
        self.diags.push(d);
    }

    fn line(&self, span: &Range<usize>) -> usize {
        self.loc.line_col(span.start).0
    }

    // -- whole file ---------------------------------------------------------

    fn config(&mut self, raw: &RawConfig) -> Config {
        let mut names = Names::default();

        // Definitions first, so references can be checked whatever the order
        // of sections in the file.
        let mut seen = HashMap::new();
        for (i, g) in raw.security_group.iter().enumerate() {
            self.unique_name(&mut seen, i, &g.get_ref().name, "security_group");
        }
        names.security_groups = seen.into_keys().collect();

        let mut seen = HashMap::new();
        for (i, g) in raw.target_group.iter().enumerate() {
            self.unique_name(&mut seen, i, &g.get_ref().name, "target_group");
        }
        for g in &raw.target_group {
            let g = g.get_ref();
            let proto = TARGET_PROTOCOLS
                .iter()
                .find(|(n, _)| n == g.protocol.get_ref())
                .map(|(_, p)| *p);
            // First definition wins for duplicates (the duplicate is an error).
            names
                .target_groups
                .entry(g.name.get_ref().clone())
                .or_insert(proto);
        }

        let mut seen = HashMap::new();
        for (i, lb) in raw.load_balancer.iter().enumerate() {
            self.unique_name(&mut seen, i, &lb.get_ref().name, "load_balancer");
        }
        names.load_balancers = seen.into_keys().collect();

        let security_groups = raw
            .security_group
            .iter()
            .enumerate()
            .map(|(i, g)| self.security_group(i, g))
            .collect();
        let target_groups = raw
            .target_group
            .iter()
            .enumerate()
            .map(|(i, g)| self.target_group(i, g))
            .collect();

        if raw.load_balancer.len() > lb_common::MAX_LBS as usize {
            let extra = &raw.load_balancer[lb_common::MAX_LBS as usize];
            self.err(
                extra.span(),
                format!("load_balancer[{}]", lb_common::MAX_LBS),
                format!(
                    "too many load balancers: {} defined, at most {} are supported",
                    raw.load_balancer.len(),
                    lb_common::MAX_LBS
                ),
            );
        }
        let mut address_owner = HashMap::new();
        let load_balancers: Vec<LoadBalancer> = raw
            .load_balancer
            .iter()
            .enumerate()
            .map(|(i, lb)| self.load_balancer(i, lb, &names, &mut address_owner))
            .collect();
        self.address_limits(&load_balancers, raw);

        // Listeners: register every name first (rules may precede them).
        for l in &raw.listener {
            let l = l.get_ref();
            if let Some(port) = valid_port(*l.port.get_ref()) {
                let proto = LISTENER_PROTOCOLS
                    .iter()
                    .find(|(n, _)| n == l.protocol.get_ref())
                    .map(|(_, p)| *p);
                names
                    .listeners
                    .entry(format!("{}:{port}", l.load_balancer.get_ref()))
                    .or_insert(proto);
            }
        }
        let mut seen_ports = HashMap::new();
        let mut listeners: Vec<Listener> = raw
            .listener
            .iter()
            .enumerate()
            .map(|(i, l)| self.listener(i, l, &names, &mut seen_ports))
            .collect();

        let mut seen_priorities = HashMap::new();
        for (i, r) in raw.rule.iter().enumerate() {
            if let Some((listener, rule)) = self.rule(i, r, &names, &mut seen_priorities) {
                if let Some(l) = listeners.iter_mut().find(|l| l.name() == listener) {
                    l.rules.push(rule);
                }
            }
        }
        for l in &mut listeners {
            l.rules.sort_by_key(|r| r.priority);
        }

        Config {
            security_groups,
            target_groups,
            load_balancers,
            listeners,
            admin: self.admin(raw.admin.as_ref()),
            access_log: self.access_log(raw.access_log.as_ref()),
        }
    }

    /// Checks a definition's name: its syntax, and that it is not taken yet.
    fn unique_name(
        &mut self,
        seen: &mut HashMap<String, usize>,
        index: usize,
        name: &S<String>,
        section: &str,
    ) {
        let field = format!("{section}[{index}].name");
        if let Err(msg) = check_name(name.get_ref()) {
            self.err(name.span(), field.clone(), msg);
        }
        if let Some(first) = seen.get(name.get_ref()) {
            self.err(
                name.span(),
                field,
                format!(
                    "duplicate {section} name {:?}: already defined at line {first}; names must be unique",
                    name.get_ref()
                ),
            );
        } else {
            let line = self.line(&name.span());
            seen.insert(name.get_ref().clone(), line);
        }
    }

    // -- security groups ----------------------------------------------------

    fn security_group(&mut self, i: usize, g: &S<RawSecurityGroup>) -> SecurityGroup {
        let p = format!("security_group[{i}]");
        let g = g.get_ref();
        let ingress = g
            .ingress
            .iter()
            .enumerate()
            .filter_map(|(j, r)| self.ingress(&format!("{p}.ingress[{j}]"), r))
            .collect();
        SecurityGroup {
            name: g.name.get_ref().clone(),
            description: g.description.clone().unwrap_or_default(),
            ingress,
        }
    }

    fn ingress(&mut self, p: &str, r: &S<RawIngress>) -> Option<IngressRule> {
        let span = r.span();
        let r = r.get_ref();
        let protocol = self.choice(&r.protocol, &format!("{p}.protocol"), IP_PROTOCOLS);
        let source = self.cidr(&r.source, &format!("{p}.source"));
        let field = format!("{p}.ports");
        let ports = match (protocol, &r.ports) {
            (Some(IpProtocol::Tcp | IpProtocol::Udp), Some(ports)) => {
                match parse_port_range(ports.get_ref()) {
                    Ok(range) => Some(range),
                    Err(msg) => {
                        self.err(ports.span(), field, msg);
                        None
                    }
                }
            }
            (Some(proto @ (IpProtocol::Tcp | IpProtocol::Udp)), None) => {
                self.err(
                    span,
                    field,
                    format!(
                        "ports is required for {} rules: a port \"80\" or a range \"8000-8100\"",
                        protocol_name(IP_PROTOCOLS, proto)
                    ),
                );
                None
            }
            (Some(proto), Some(ports)) => {
                self.err(
                    ports.span(),
                    field,
                    format!(
                        "ports must be absent for {} rules (they cover every port); ports are for tcp and udp only",
                        protocol_name(IP_PROTOCOLS, proto)
                    ),
                );
                None
            }
            (Some(_), None) => Some((0, u16::MAX)),
            (None, _) => None,
        };
        Some(IngressRule {
            protocol: protocol?,
            ports: ports?,
            source: source?,
            description: r.description.clone().unwrap_or_default(),
        })
    }

    // -- target groups ------------------------------------------------------

    fn target_group(&mut self, i: usize, g: &S<RawTargetGroup>) -> TargetGroup {
        let p = format!("target_group[{i}]");
        let g = g.get_ref();
        let protocol = self.choice(&g.protocol, &format!("{p}.protocol"), TARGET_PROTOCOLS);
        let port = self.port(&g.port, &format!("{p}.port"));

        let algorithm = match &g.algorithm {
            None => Algorithm::RoundRobin,
            Some(a) => {
                let algo = self.choice(a, &format!("{p}.algorithm"), ALGORITHMS);
                if protocol == Some(TargetProtocol::Tcp)
                    && algo.is_some_and(|x| x != Algorithm::RoundRobin)
                {
                    self.err(
                        a.span(),
                        format!("{p}.algorithm"),
                        "algorithm applies to HTTP/HTTPS target groups; TCP groups are balanced by flow hash (remove it)",
                    );
                }
                algo.unwrap_or(Algorithm::RoundRobin)
            }
        };
        let deregistration_delay = self.duration(
            g.deregistration_delay.as_ref(),
            &format!("{p}.deregistration_delay"),
            secs(300),
            &DEREGISTRATION_DELAY,
        );
        let slow_start = self.duration(
            g.slow_start.as_ref(),
            &format!("{p}.slow_start"),
            secs(0),
            &SLOW_START,
        );

        let mut targets: Vec<Target> = Vec::new();
        let mut seen: HashMap<(IpAddr, u16), usize> = HashMap::new();
        for (j, t) in g.targets.iter().enumerate() {
            let tp = format!("{p}.targets[{j}]");
            let span = t.span();
            let t = t.get_ref();
            let address = self.ip(&t.address, &format!("{tp}.address"), "target");
            let tport = match &t.port {
                Some(v) => self.port(v, &format!("{tp}.port")),
                None => port,
            };
            let weight = match &t.weight {
                Some(w) => self
                    .int(w, &format!("{tp}.weight"), 1, 999)
                    .map(|w| w as u16),
                None => Some(1),
            };
            if let (Some(address), Some(tport)) = (address, tport) {
                let key = (address, tport);
                if let Some(first) = seen.get(&key) {
                    self.err(
                        span,
                        tp,
                        format!(
                            "duplicate target {}: already listed as targets[{first}]; each address and port may appear once per group",
                            SocketAddr::new(address, tport)
                        ),
                    );
                } else {
                    seen.insert(key, j);
                    if let Some(weight) = weight {
                        targets.push(Target {
                            address,
                            port: tport,
                            weight,
                        });
                    }
                }
            }
        }

        let health_check = self.health_check(&p, protocol, g.health_check.as_ref());
        let stickiness = self.stickiness(&p, protocol, g.stickiness.as_ref());
        TargetGroup {
            name: g.name.get_ref().clone(),
            protocol: protocol.unwrap_or(TargetProtocol::Http),
            port: port.unwrap_or(0),
            algorithm,
            deregistration_delay,
            slow_start,
            targets,
            health_check,
            stickiness,
        }
    }

    fn health_check(
        &mut self,
        group_path: &str,
        group: Option<TargetProtocol>,
        hc: Option<&S<RawHealthCheck>>,
    ) -> HealthCheck {
        let p = format!("{group_path}.health_check");
        let empty = RawHealthCheck::default();
        let hc = hc.map_or(&empty, |h| h.get_ref());

        let protocol = match &hc.protocol {
            None => group,
            Some(v) => {
                let proto = self.choice(v, &format!("{p}.protocol"), TARGET_PROTOCOLS);
                if proto == Some(TargetProtocol::Tcp)
                    && matches!(group, Some(TargetProtocol::Http | TargetProtocol::Https))
                {
                    self.err(
                        v.span(),
                        format!("{p}.protocol"),
                        "HTTP/HTTPS target groups cannot use TCP health checks; use \"HTTP\" or \"HTTPS\"",
                    );
                }
                proto
            }
        };
        let is_tcp = protocol == Some(TargetProtocol::Tcp);

        let port = match &hc.port {
            None => HealthCheckPort::TrafficPort,
            Some(v) => {
                let parsed = match v.get_ref() {
                    IntOrString::Str(s) if s == "traffic-port" => {
                        Some(HealthCheckPort::TrafficPort)
                    }
                    IntOrString::Int(n) => valid_port(*n).map(HealthCheckPort::Port),
                    IntOrString::Str(s) => {
                        digits(s).and_then(valid_port).map(HealthCheckPort::Port)
                    }
                };
                if parsed.is_none() {
                    self.err(
                        v.span(),
                        format!("{p}.port"),
                        format!(
                            "must be \"traffic-port\" or a port number 1-65535, got {}",
                            show(v.get_ref())
                        ),
                    );
                }
                parsed.unwrap_or(HealthCheckPort::TrafficPort)
            }
        };

        let path = match &hc.path {
            None => "/".to_string(),
            Some(v) => {
                let field = format!("{p}.path");
                if is_tcp {
                    self.err(
                        v.span(),
                        field,
                        "path applies to HTTP/HTTPS health checks only; this health check uses TCP",
                    );
                } else if let Err(msg) = check_hc_path(v.get_ref()) {
                    self.err(v.span(), field, msg);
                }
                v.get_ref().clone()
            }
        };

        let interval_field = format!("{p}.interval");
        let timeout_field = format!("{p}.timeout");
        let default_timeout = if is_tcp { secs(10) } else { secs(5) };
        let interval = self.checked_duration(
            hc.interval.as_ref(),
            &interval_field,
            secs(30),
            &HC_INTERVAL,
        );
        let timeout = self.checked_duration(
            hc.timeout.as_ref(),
            &timeout_field,
            default_timeout,
            &HC_TIMEOUT,
        );
        if let (Some(interval_d), Some(timeout_d)) = (interval, timeout) {
            if timeout_d >= interval_d {
                let describe = |v: &Option<S<String>>, d: Duration, what: &str| match v {
                    Some(s) => s.get_ref().clone(),
                    None => format!("{}, the default{what}", super::duration::format_duration(d)),
                };
                let tcp_note = if is_tcp { " for TCP health checks" } else { "" };
                let msg = format!(
                    "timeout ({}) must be less than interval ({})",
                    describe(&hc.timeout, timeout_d, tcp_note),
                    describe(&hc.interval, interval_d, "")
                );
                // Point at whichever of the two the user wrote.
                match (&hc.timeout, &hc.interval) {
                    (Some(t), _) => self.err(t.span(), timeout_field, msg),
                    (None, Some(iv)) => self.err(iv.span(), interval_field, msg),
                    (None, None) => {}
                }
            }
        }

        let mut threshold = |v: &Option<S<i64>>, name: &str, default: u32| match v {
            None => default,
            Some(v) => self
                .int(v, &format!("{p}.{name}"), 2, 10)
                .map_or(default, |n| n as u32),
        };
        let healthy_threshold = threshold(&hc.healthy_threshold, "healthy_threshold", 5);
        let unhealthy_threshold = threshold(&hc.unhealthy_threshold, "unhealthy_threshold", 2);

        let default_matcher = Matcher(vec![(200, 200)]);
        let matcher = match &hc.matcher {
            None => default_matcher,
            Some(v) => {
                let field = format!("{p}.matcher");
                if is_tcp {
                    self.err(
                        v.span(),
                        field,
                        "matcher applies to HTTP/HTTPS health checks only; this health check uses TCP",
                    );
                    default_matcher
                } else {
                    let text = match v.get_ref() {
                        IntOrString::Int(n) => n.to_string(),
                        IntOrString::Str(s) => s.clone(),
                    };
                    parse_matcher(&text).unwrap_or_else(|msg| {
                        self.err(v.span(), field, msg);
                        default_matcher
                    })
                }
            }
        };

        HealthCheck {
            enabled: hc.enabled.unwrap_or(true),
            protocol: protocol.unwrap_or(TargetProtocol::Http),
            port,
            path,
            interval: interval.unwrap_or(secs(30)),
            timeout: timeout.unwrap_or(default_timeout),
            healthy_threshold,
            unhealthy_threshold,
            matcher,
        }
    }

    fn stickiness(
        &mut self,
        group_path: &str,
        group: Option<TargetProtocol>,
        st: Option<&S<RawStickiness>>,
    ) -> Stickiness {
        let p = format!("{group_path}.stickiness");
        let default_duration = secs(86_400);
        let Some(st) = st else {
            return Stickiness {
                enabled: false,
                kind: StickinessType::LbCookie,
                duration: default_duration,
            };
        };
        let span = st.span();
        let st = st.get_ref();
        let enabled = st.enabled.unwrap_or(false);
        if enabled && group == Some(TargetProtocol::Tcp) {
            self.err(
                span.clone(),
                p.clone(),
                "cookie stickiness needs an HTTP or HTTPS target group; TCP groups are balanced by flow hash",
            );
        }
        let kind = match &st.kind {
            None => StickyKind::Lb,
            Some(k) => self
                .choice(k, &format!("{p}.type"), STICKINESS_TYPES)
                .unwrap_or(StickyKind::Lb),
        };
        let duration = self.duration(
            st.duration.as_ref(),
            &format!("{p}.duration"),
            default_duration,
            &STICKINESS_DURATION,
        );
        let field = format!("{p}.cookie_name");
        let kind = match (kind, &st.cookie_name) {
            (StickyKind::App, Some(name)) => {
                if let Err(msg) = check_cookie_name(name.get_ref()) {
                    self.err(name.span(), field, msg);
                }
                StickinessType::AppCookie {
                    cookie_name: name.get_ref().clone(),
                }
            }
            (StickyKind::App, None) => {
                self.err(
                    span,
                    field,
                    "app_cookie stickiness needs cookie_name, the name of the application's cookie",
                );
                StickinessType::LbCookie
            }
            (StickyKind::Lb, Some(name)) => {
                self.err(
                    name.span(),
                    field,
                    "cookie_name applies to type = \"app_cookie\" only; lb_cookie uses the balancer's own cookie",
                );
                StickinessType::LbCookie
            }
            (StickyKind::Lb, None) => StickinessType::LbCookie,
        };
        Stickiness {
            enabled,
            kind,
            duration,
        }
    }

    // -- load balancers -----------------------------------------------------

    fn load_balancer(
        &mut self,
        i: usize,
        lb: &S<RawLoadBalancer>,
        names: &Names,
        address_owner: &mut HashMap<IpAddr, (String, usize)>,
    ) -> LoadBalancer {
        let p = format!("load_balancer[{i}]");
        let span = lb.span();
        let lb = lb.get_ref();
        let name = lb.name.get_ref().clone();

        // `None` when the scheme is invalid (reported): skip the checks that
        // depend on it rather than guess.
        let scheme = match &lb.scheme {
            None => Some(Scheme::InternetFacing),
            Some(s) => self.choice(s, &format!("{p}.scheme"), SCHEMES),
        };
        let field = format!("{p}.internal_networks");
        let mut internal_networks = Vec::new();
        if let Some(nets) = &lb.internal_networks {
            for (j, n) in nets.get_ref().iter().enumerate() {
                if let Some(net) = self.cidr(n, &format!("{field}[{j}]")) {
                    internal_networks.push(net);
                }
            }
        }
        let networks = lb
            .internal_networks
            .as_ref()
            .filter(|n| !n.get_ref().is_empty());
        match (scheme, networks) {
            (Some(Scheme::Internal), None) => {
                let at = lb
                    .internal_networks
                    .as_ref()
                    .map_or(span.clone(), |n| n.span());
                self.err(
                    at,
                    field,
                    "an internal load balancer needs internal_networks, the client networks allowed to connect, e.g. [\"10.0.0.0/16\"]",
                );
            }
            (Some(Scheme::InternetFacing), Some(nets)) => {
                self.err(
                    nets.span(),
                    field,
                    "internal_networks applies to scheme = \"internal\" only; set the scheme to internal or remove internal_networks",
                );
            }
            _ => {}
        }
        let scheme = scheme.unwrap_or(Scheme::InternetFacing);

        let mut interfaces = Vec::new();
        let field = format!("{p}.interfaces");
        if lb.interfaces.get_ref().is_empty() {
            self.err(
                lb.interfaces.span(),
                field.clone(),
                "at least one interface is required, e.g. [\"eth0\"] (where the XDP program attaches)",
            );
        }
        for (j, itf) in lb.interfaces.get_ref().iter().enumerate() {
            let f = format!("{field}[{j}]");
            let s = itf.get_ref();
            if let Err(msg) = check_interface(s) {
                self.err(itf.span(), f, msg);
            } else if interfaces.contains(s) {
                self.err(itf.span(), f, format!("interface {s:?} is listed twice"));
            } else {
                interfaces.push(s.clone());
            }
        }

        let mut addresses = Vec::new();
        let field = format!("{p}.addresses");
        if lb.addresses.get_ref().is_empty() {
            self.err(
                lb.addresses.span(),
                field.clone(),
                "at least one address is required, e.g. [\"10.0.0.10\"] (IPv4 and/or IPv6)",
            );
        }
        for (j, a) in lb.addresses.get_ref().iter().enumerate() {
            let f = format!("{field}[{j}]");
            let Some(ip) = self.ip(a, &f, "load balancer") else {
                continue;
            };
            let line = self.line(&a.span());
            match address_owner.get(&ip) {
                Some((owner, first)) if *owner == name => self.err(
                    a.span(),
                    f,
                    format!("address {ip} is listed twice (first at line {first})"),
                ),
                Some((owner, first)) => self.err(
                    a.span(),
                    f,
                    format!(
                        "address {ip} already belongs to load_balancer {owner:?} (line {first}); an address can belong to one balancer only"
                    ),
                ),
                None => {
                    address_owner.insert(ip, (name.clone(), line));
                    addresses.push(ip);
                }
            }
        }

        let mut security_groups = Vec::new();
        let field = format!("{p}.security_groups");
        if lb.security_groups.get_ref().is_empty() {
            self.err(
                lb.security_groups.span(),
                field.clone(),
                "at least one security group is required; with none, all traffic would be dropped",
            );
        }
        for (j, g) in lb.security_groups.get_ref().iter().enumerate() {
            let f = format!("{field}[{j}]");
            let s = g.get_ref();
            if !names.security_groups.contains(s) {
                let msg = unknown("security_group", s, &names.security_groups);
                self.err(g.span(), f, msg);
            } else if security_groups.contains(s) {
                self.err(g.span(), f, format!("security group {s:?} is listed twice"));
            } else {
                security_groups.push(s.clone());
            }
        }

        let idle_timeout = self.duration(
            lb.idle_timeout.as_ref(),
            &format!("{p}.idle_timeout"),
            secs(60),
            &IDLE_TIMEOUT,
        );
        let request_head_timeout = self.duration(
            lb.request_head_timeout.as_ref(),
            &format!("{p}.request_head_timeout"),
            idle_timeout.min(secs(60)),
            &IDLE_TIMEOUT,
        );
        // The ALB's limits: 64 KiB of request line and header fields, 100 fields.
        let max_header_bytes = lb
            .max_header_bytes
            .as_ref()
            .and_then(|v| self.int(v, &format!("{p}.max_header_bytes"), 8192, 1 << 20))
            .unwrap_or(65536) as usize;
        let max_headers = lb
            .max_headers
            .as_ref()
            .and_then(|v| self.int(v, &format!("{p}.max_headers"), 16, 1000))
            .unwrap_or(100) as usize;

        LoadBalancer {
            name,
            scheme,
            internal_networks,
            interfaces,
            addresses,
            security_groups,
            idle_timeout,
            request_head_timeout,
            max_header_bytes,
            max_headers,
            trust_request_id: lb.trust_request_id.unwrap_or(false),
        }
    }

    /// The kernel's address maps hold at most `MAX_ADDRS` per family.
    fn address_limits(&mut self, lbs: &[LoadBalancer], raw: &RawConfig) {
        let max = lb_common::MAX_ADDRS as usize;
        for (family, is_v4) in [("IPv4", true), ("IPv6", false)] {
            let count: usize = lbs
                .iter()
                .map(|lb| lb.addresses.iter().filter(|a| a.is_ipv4() == is_v4).count())
                .sum();
            if count > max {
                let span = raw.load_balancer.first().map_or(0..0, |l| l.span());
                self.err(
                    span,
                    "load_balancer",
                    format!("too many {family} balancer addresses: {count}, at most {max} are supported"),
                );
            }
        }
    }

    // -- listeners ----------------------------------------------------------

    fn listener(
        &mut self,
        i: usize,
        l: &S<RawListener>,
        names: &Names,
        seen_ports: &mut HashMap<(String, u16), usize>,
    ) -> Listener {
        let span = l.span();
        let l = l.get_ref();
        let lb = l.load_balancer.get_ref();
        let port = valid_port(*l.port.get_ref());
        let p = match port {
            Some(port) if !lb.is_empty() => format!("listener {:?}", format!("{lb}:{port}")),
            _ => format!("listener[{i}]"),
        };

        if !names.load_balancers.contains(lb) {
            let msg = unknown("load_balancer", lb, &names.load_balancers);
            self.err(l.load_balancer.span(), format!("{p}.load_balancer"), msg);
        }
        let protocol = self.choice(&l.protocol, &format!("{p}.protocol"), LISTENER_PROTOCOLS);
        // Refused rather than accepted and left unbound: a listener that
        // passes `xalb check` must answer. The rest of the listener is still
        // checked, so the file is ready when these protocols are served.
        if let Some(proto @ (ListenerProtocol::Https | ListenerProtocol::Tcp)) = protocol {
            self.err(
                l.protocol.span(),
                format!("{p}.protocol"),
                format!(
                    "{} listeners are not served yet (planned); use HTTP",
                    protocol_name(LISTENER_PROTOCOLS, proto)
                ),
            );
        }
        let port = self.port(&l.port, &format!("{p}.port"));
        if let Some(port) = port {
            let line = self.line(&l.port.span());
            match seen_ports.get(&(lb.clone(), port)) {
                Some(first) => self.err(
                    l.port.span(),
                    format!("{p}.port"),
                    format!(
                        "load_balancer {lb:?} already has a listener on port {port} (line {first}); ports must be unique per load balancer"
                    ),
                ),
                None => {
                    seen_ports.insert((lb.clone(), port), line);
                }
            }
        }

        let is_https = protocol == Some(ListenerProtocol::Https);
        let field = format!("{p}.certificates");
        let mut certificates = Vec::new();
        match (&l.certificates, protocol) {
            (Some(certs), Some(ListenerProtocol::Https)) => {
                if certs.get_ref().is_empty() {
                    self.err(
                        certs.span(),
                        field.clone(),
                        "an HTTPS listener needs at least one certificate: [{ cert = \"cert.pem\", key = \"key.pem\" }]",
                    );
                }
                for (j, c) in certs.get_ref().iter().enumerate() {
                    let c = self.certificate(c.get_ref(), &format!("{field}[{j}]"));
                    certificates.push(c);
                }
            }
            (None, Some(ListenerProtocol::Https)) => self.err(
                span.clone(),
                field,
                "an HTTPS listener needs certificates = [{ cert = \"cert.pem\", key = \"key.pem\" }] (at least one; the first is the default)",
            ),
            (Some(certs), Some(proto)) => self.err(
                certs.span(),
                field,
                format!(
                    "certificates apply to HTTPS listeners only; this listener is {}",
                    protocol_name(LISTENER_PROTOCOLS, proto)
                ),
            ),
            _ => {}
        }
        let ssl_policy = match &l.ssl_policy {
            None => DEFAULT_SSL_POLICY.to_string(),
            Some(v) => {
                let field = format!("{p}.ssl_policy");
                if let (Some(proto), false) = (protocol, is_https) {
                    self.err(
                        v.span(),
                        field,
                        format!(
                            "ssl_policy applies to HTTPS listeners only; this listener is {}",
                            protocol_name(LISTENER_PROTOCOLS, proto)
                        ),
                    );
                } else if v.get_ref().trim().is_empty() {
                    self.err(
                        v.span(),
                        field,
                        format!(
                            "ssl_policy must not be empty; the default is {DEFAULT_SSL_POLICY:?}"
                        ),
                    );
                }
                v.get_ref().clone()
            }
        };

        let default_action = self.action(
            &format!("{p}.default_action"),
            &l.default_action,
            protocol,
            names,
        );
        Listener {
            load_balancer: lb.clone(),
            protocol: protocol.unwrap_or(ListenerProtocol::Http),
            port: port.unwrap_or(0),
            default_action: default_action.unwrap_or(Action::FixedResponse {
                status_code: 503,
                content_type: None,
                message_body: String::new(),
            }),
            certificates,
            ssl_policy,
            rules: Vec::new(),
        }
    }

    /// A listener certificate: both files readable and parsed, and the key
    /// the certificate's own, so that `xalb check` reports every certificate
    /// problem before a TLS handshake would.
    fn certificate(&mut self, c: &RawCertificate, field: &str) -> Certificate {
        let cert_field = format!("{field}.cert");
        let key_field = format!("{field}.key");
        let cert = self.pem_path(&c.cert, &cert_field);
        let key = self.pem_path(&c.key, &key_field);
        let chain = cert.as_deref().and_then(|path| {
            read_cert_chain(path)
                .map_err(|msg| self.err(c.cert.span(), cert_field.clone(), msg))
                .ok()
        });
        let private_key = key.as_deref().and_then(|path| {
            read_private_key(path)
                .map_err(|msg| self.err(c.key.span(), key_field.clone(), msg))
                .ok()
        });
        if let (Some(chain), Some(private_key), Some(cert), Some(key)) =
            (chain, private_key, &cert, &key)
        {
            if let Err((culprit, msg)) = check_key_matches(chain, private_key, cert, key) {
                let (span, field) = match culprit {
                    PemFile::Key => (c.key.span(), key_field),
                    PemFile::Cert => (c.cert.span(), cert_field),
                };
                self.err(span, field, msg);
            }
        }
        Certificate {
            cert: cert.unwrap_or_default(),
            key: key.unwrap_or_default(),
        }
    }

    /// A certificate or key path: resolved against the config file's
    /// directory and required to be a readable, non-empty file now, so that
    /// `xalb check` catches a missing certificate before `xalb run` does.
    /// `None` when a problem was reported.
    fn pem_path(&mut self, v: &S<String>, field: &str) -> Option<PathBuf> {
        let raw = v.get_ref();
        if raw.trim().is_empty() {
            self.err(
                v.span(),
                field,
                "must be a path to a PEM file, got an empty string",
            );
            return None;
        }
        let path = self.base_dir.join(raw);
        let problem = match std::fs::metadata(&path) {
            Err(e) => Some(format!("cannot read {}: {e}", path.display())),
            Ok(m) if !m.is_file() => Some(format!("{} is not a regular file", path.display())),
            Ok(m) if m.len() == 0 => {
                Some(format!("{} is empty; expected a PEM file", path.display()))
            }
            Ok(_) => std::fs::File::open(&path)
                .err()
                .map(|e| format!("cannot read {}: {e}", path.display())),
        };
        if let Some(msg) = problem {
            let note = if Path::new(raw).is_relative() {
                " (relative paths are resolved from the configuration file's directory)"
            } else {
                ""
            };
            self.err(v.span(), field, format!("{msg}{note}"));
            return None;
        }
        Some(path)
    }

    // -- rules --------------------------------------------------------------

    fn rule(
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

    fn condition(&mut self, p: &str, c: &S<RawCondition>) -> Option<Condition> {
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
        if !ok || values.is_empty() {
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
    fn action(
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

    fn forward(
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
                        let d = self.checked_duration(Some(st), &f, secs(0), &STICKINESS_DURATION);
                        ok &= d.is_some();
                        d
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
    fn target_group_ref(
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

    fn redirect(
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

    fn fixed_response(&mut self, p: &str, span: Range<usize>, a: &RawAction) -> Option<Action> {
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

    // -- optional sections --------------------------------------------------

    fn admin(&mut self, admin: Option<&S<RawAdmin>>) -> Admin {
        let default: SocketAddr = DEFAULT_ADMIN_LISTEN.parse().expect("valid default");
        let listen = match admin.and_then(|a| a.get_ref().listen.as_ref()) {
            None => default,
            Some(v) => v.get_ref().parse().unwrap_or_else(|_| {
                self.err(
                    v.span(),
                    "admin.listen",
                    format!(
                        "invalid socket address {:?}; expected an IP and port such as \"127.0.0.1:9901\" or \"[::1]:9901\"",
                        v.get_ref()
                    ),
                );
                default
            }),
        };
        Admin { listen }
    }

    fn access_log(&mut self, log: Option<&S<RawAccessLog>>) -> AccessLog {
        let empty = RawAccessLog::default();
        let log = log.map_or(&empty, |l| l.get_ref());
        let path = match &log.path {
            None => "-".to_string(),
            Some(v) => {
                if v.get_ref().is_empty() {
                    self.err(
                        v.span(),
                        "access_log.path",
                        "path must be a file path, or \"-\" for standard output",
                    );
                }
                v.get_ref().clone()
            }
        };
        let format = match &log.format {
            None => "json".to_string(),
            Some(v) => {
                self.choice(v, "access_log.format", &[("json", ())]);
                v.get_ref().clone()
            }
        };
        AccessLog {
            enabled: log.enabled.unwrap_or(false),
            path,
            format,
        }
    }

    // -- value helpers ------------------------------------------------------

    /// One of a fixed set of strings; the message lists them.
    fn choice<T: Copy>(&mut self, v: &S<String>, field: &str, options: &[(&str, T)]) -> Option<T> {
        if let Some((_, value)) = options.iter().find(|(n, _)| n == v.get_ref()) {
            return Some(*value);
        }
        let allowed: Vec<String> = options.iter().map(|(n, _)| format!("{n:?}")).collect();
        let name = field.rsplit('.').next().unwrap_or(field);
        self.err(
            v.span(),
            field,
            format!(
                "unknown {name} {:?}; allowed: {}",
                v.get_ref(),
                allowed.join(", ")
            ),
        );
        None
    }

    fn int(&mut self, v: &S<i64>, field: &str, min: i64, max: i64) -> Option<i64> {
        let n = *v.get_ref();
        if (min..=max).contains(&n) {
            Some(n)
        } else {
            let name = field.rsplit('.').next().unwrap_or(field);
            self.err(
                v.span(),
                field,
                format!("{name} must be {min}-{max}, got {n}"),
            );
            None
        }
    }

    fn port(&mut self, v: &S<i64>, field: &str) -> Option<u16> {
        self.int(v, field, 1, 65535).map(|n| n as u16)
    }

    /// A duration field: the default when absent; on error the default is
    /// returned too (the diagnostic keeps the model from being used).
    fn duration(
        &mut self,
        v: Option<&S<String>>,
        field: &str,
        default: Duration,
        range: &DurationRange,
    ) -> Duration {
        self.checked_duration(v, field, default, range)
            .unwrap_or(default)
    }

    /// Like [`Self::duration`] but `None` when the value is invalid.
    fn checked_duration(
        &mut self,
        v: Option<&S<String>>,
        field: &str,
        default: Duration,
        range: &DurationRange,
    ) -> Option<Duration> {
        let Some(v) = v else {
            return Some(default);
        };
        let d = match parse_duration(v.get_ref()) {
            Ok(d) => d,
            Err(msg) => {
                self.err(v.span(), field, msg);
                return None;
            }
        };
        let in_range = (range.min..=range.max).contains(&d) || (range.zero_is_off && d.is_zero());
        if in_range {
            Some(d)
        } else {
            let name = field.rsplit('.').next().unwrap_or(field);
            self.err(
                v.span(),
                field,
                format!("{name} must be {}, got {:?}", range.text, v.get_ref()),
            );
            None
        }
    }

    fn cidr(&mut self, v: &S<String>, field: &str) -> Option<IpNet> {
        parse_cidr(v.get_ref())
            .map_err(|msg| self.err(v.span(), field, msg))
            .ok()
    }

    /// A unicast IP address of a target or balancer.
    fn ip(&mut self, v: &S<String>, field: &str, what: &str) -> Option<IpAddr> {
        let s = v.get_ref();
        let msg = match s.parse::<IpAddr>() {
            Ok(ip) if ip.is_unspecified() || ip.is_multicast() => format!(
                "{ip} cannot be a {what} address; use a unicast IPv4 or IPv6 address"
            ),
            Ok(ip) => return Some(ip),
            Err(_) if s.contains('/') => format!(
                "invalid IP address {s:?}: write a single address without a prefix length, e.g. \"10.0.1.10\""
            ),
            Err(_) => format!(
                "invalid IP address {s:?}; expected IPv4 such as \"10.0.1.10\" or IPv6 such as \"2001:db8::10\""
            ),
        };
        self.err(v.span(), field, msg);
        None
    }
}

// ---------------------------------------------------------------------------
// Pure checks, each returning the message for a bad value.

/// Names of security groups, target groups and balancers (the AWS target
/// group rule, applied to all three).
fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid name {name:?}: use 1-{MAX_NAME_LEN} letters, digits and hyphens, not starting or ending with a hyphen"
        ))
    }
}

/// The certificates of a PEM file, at least one.
fn read_cert_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| pem_problem(path, "certificate", &e))?;
    if chain.is_empty() {
        return Err(format!(
            "{} is not a PEM certificate file: it has no \"-----BEGIN CERTIFICATE-----\" block",
            path.display()
        ));
    }
    Ok(chain)
}

/// The first private key of a PEM file: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        pem::Error::NoItemsFound => format!(
            "{} is not a PEM private key file: it has no \"BEGIN PRIVATE KEY\", \"BEGIN RSA PRIVATE KEY\" or \"BEGIN EC PRIVATE KEY\" block",
            path.display()
        ),
        e => pem_problem(path, "private key", &e),
    })
}

/// The message for a PEM file that could not be read or parsed.
fn pem_problem(path: &Path, what: &str, e: &pem::Error) -> String {
    let path = path.display();
    let why = match e {
        pem::Error::Io(e) => return format!("cannot read {path}: {e}"),
        // These carry raw bytes, which Display would print as numbers; the
        // end marker is the section's label only.
        pem::Error::MissingSectionEnd { end_marker } => format!(
            "a section has no \"-----END {}-----\" line",
            String::from_utf8_lossy(end_marker)
        ),
        pem::Error::IllegalSectionStart { line } => {
            format!(
                "malformed section start {:?}",
                String::from_utf8_lossy(line)
            )
        }
        e => e.to_string(),
    };
    format!("{path} is not a valid PEM {what} file: {why}")
}

/// Which file of a certificate pair a problem is reported on.
enum PemFile {
    Cert,
    Key,
}

/// Whether the key is usable and belongs to the chain's first certificate.
fn check_key_matches(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    cert_path: &Path,
    key_path: &Path,
) -> Result<(), (PemFile, String)> {
    // The provider the proxy's TLS uses, so "usable" means usable there.
    let signing_key = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| {
            let why = match e {
                rustls::Error::General(why) => why,
                e => e.to_string(),
            };
            (
                PemFile::Key,
                format!(
                    "{} is not a usable private key ({why}); RSA (2048 bits or more), ECDSA P-256/P-384 and Ed25519 keys are supported",
                    key_path.display()
                ),
            )
        })?;
    match CertifiedKey::new(chain, signing_key).keys_match() {
        // Unknown: the key cannot name its public half; nothing to compare.
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => Ok(()),
        Err(rustls::Error::InconsistentKeys(_)) => Err((
            PemFile::Key,
            format!(
                "key {} does not match certificate {} (the first certificate in the file)",
                key_path.display(),
                cert_path.display()
            ),
        )),
        // The chain's first certificate could not be parsed (rustls words
        // this for a peer's certificate, hence our own message).
        Err(rustls::Error::InvalidCertificate(e)) => Err((
            PemFile::Cert,
            format!(
                "{}: the first certificate is not valid X.509 ({e:?})",
                cert_path.display()
            ),
        )),
        Err(e) => Err((PemFile::Cert, format!("{}: {e}", cert_path.display()))),
    }
}

fn check_interface(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_IFNAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid interface name {name:?}: 1-{MAX_IFNAME_LEN} visible characters, no '/' or ':'"
        ))
    }
}

/// "Message for an unknown reference", listing what is defined.
fn unknown(kind: &str, name: &str, known: &HashSet<String>) -> String {
    if known.is_empty() {
        return format!("unknown {kind} {name:?}: no {kind} is defined");
    }
    let sorted: BTreeSet<&String> = known.iter().collect();
    let list: Vec<String> = sorted.iter().map(|n| format!("{n:?}")).collect();
    format!("unknown {kind} {name:?}; defined: {}", list.join(", "))
}

/// A port that fits 1-65535.
fn valid_port(n: i64) -> Option<u16> {
    u16::try_from(n).ok().filter(|&p| p != 0)
}

/// A string made only of ASCII digits, as a number.
fn digits(s: &str) -> Option<i64> {
    if s.is_empty() || s.len() > 9 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn show(v: &IntOrString) -> String {
    match v {
        IntOrString::Int(n) => n.to_string(),
        IntOrString::Str(s) => format!("{s:?}"),
    }
}

/// Security-group port: `"80"` or `"8000-8100"` (an integer is accepted).
fn parse_port_range(v: &IntOrString) -> Result<(u16, u16), String> {
    let allowed = "expected a port \"80\" or a range \"8000-8100\", ports 1-65535";
    let one = |s: &str| digits(s.trim()).and_then(valid_port);
    match v {
        IntOrString::Int(n) => valid_port(*n)
            .map(|p| (p, p))
            .ok_or_else(|| format!("invalid port {n}: {allowed}")),
        IntOrString::Str(s) => {
            let (lo, hi) = match s.split_once('-') {
                Some((a, b)) => (one(a), one(b)),
                None => (one(s), one(s)),
            };
            match (lo, hi) {
                (Some(lo), Some(hi)) if lo <= hi => Ok((lo, hi)),
                (Some(lo), Some(hi)) => Err(format!(
                    "invalid port range {s:?}: the first port must not exceed the second, e.g. \"{hi}-{lo}\""
                )),
                _ => Err(format!("invalid ports {s:?}: {allowed}")),
            }
        }
    }
}

/// An IPv4/IPv6 CIDR with an explicit prefix length. Host bits are cleared
/// (`10.1.2.3/24` → `10.1.2.0/24`), as AWS does.
fn parse_cidr(s: &str) -> Result<IpNet, String> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        let bits = if ip.is_ipv4() { 32 } else { 128 };
        return Err(format!(
            "CIDR {s:?} needs a prefix length, e.g. \"{ip}/{bits}\" for this single address"
        ));
    }
    s.parse::<IpNet>().map(|n| n.trunc()).map_err(|_| {
        format!("invalid CIDR {s:?}; expected e.g. \"10.0.0.0/16\", \"0.0.0.0/0\", \"2001:db8::/32\" or \"::/0\"")
    })
}

/// Health-check matcher: comma-separated codes and ranges within 200-499.
fn parse_matcher(s: &str) -> Result<Matcher, String> {
    let allowed = "expected codes 200-499 as \"200\", \"200,302\" or \"200-399\"";
    let code = |t: &str| -> Result<u16, String> {
        match digits(t.trim()) {
            Some(c @ 200..=499) => Ok(c as u16),
            Some(c) => Err(format!(
                "invalid matcher {s:?}: code {c} is out of range; {allowed}"
            )),
            None => Err(format!("invalid matcher {s:?}: {allowed}")),
        }
    };
    let mut ranges = Vec::new();
    for part in s.split(',') {
        let range = match part.split_once('-') {
            Some((a, b)) => {
                let (lo, hi) = (code(a)?, code(b)?);
                if lo > hi {
                    return Err(format!(
                        "invalid matcher {s:?}: range {lo}-{hi} is reversed, write {hi}-{lo}"
                    ));
                }
                (lo, hi)
            }
            None => {
                let c = code(part)?;
                (c, c)
            }
        };
        ranges.push(range);
    }
    Ok(Matcher(ranges))
}

fn check_hc_path(s: &str) -> Result<(), String> {
    if !s.starts_with('/') {
        return Err(format!(
            "path {s:?} must start with \"/\", e.g. \"/health\""
        ));
    }
    if s.len() > MAX_HC_PATH_LEN || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "path {s:?} must be at most {MAX_HC_PATH_LEN} visible ASCII characters (no spaces)"
        ));
    }
    Ok(())
}

fn check_cookie_name(s: &str) -> Result<(), String> {
    // RFC 6265 token characters.
    let token = |b: u8| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b);
    if s.is_empty() || !s.bytes().all(token) {
        return Err(format!(
            "invalid cookie_name {s:?}: use letters, digits and symbols other than ( ) < > @ , ; : \\ \" / [ ] ? = {{ }}"
        ));
    }
    if s.to_ascii_uppercase().starts_with("AWSALB") {
        return Err(format!(
            "cookie_name {s:?} is reserved: names starting with AWSALB are the balancer's own cookies"
        ));
    }
    Ok(())
}

/// http-header condition name: an RFC 7230 token of at most 40 characters.
fn check_header_name(s: &str) -> Result<(), String> {
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

fn check_condition_string(kind: ConditionKind, s: &str) -> Result<(), String> {
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

fn check_query(q: &RawQueryValue) -> Result<(), String> {
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
fn check_placeholders(s: &str, part: &str, allowed: &[&str]) -> Result<(), String> {
    let mut rest = s;
    while let Some(start) = rest.find("#{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(format!("unterminated \"#{{\" in {part} {s:?}"));
        };
        let keyword = &after[..end];
        if !allowed.contains(&keyword) {
            let list: Vec<String> = allowed.iter().map(|k| format!("#{{{k}}}")).collect();
            return Err(format!(
                "#{{{keyword}}} is not allowed in {part}; it may use {}",
                list.join(", ")
            ));
        }
        rest = &after[end + 1..];
    }
    Ok(())
}

fn check_redirect_host(s: &str) -> Result<(), String> {
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

fn check_redirect_path(s: &str) -> Result<(), String> {
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

fn check_redirect_query(s: &str) -> Result<(), String> {
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
