//! `[[target_group]]`: protocol, port, algorithm, targets, health check,
//! stickiness, deregistration delay and slow start.

use super::*;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum StickyKind {
    Lb,
    App,
}
pub(super) const STICKINESS_TYPES: &[(&str, StickyKind)] = &[
    ("lb_cookie", StickyKind::Lb),
    ("app_cookie", StickyKind::App),
];

impl Checker<'_> {
    pub(super) fn target_group(&mut self, i: usize, g: &S<RawTargetGroup>) -> TargetGroup {
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
        let preserve_client_ip = match &g.preserve_client_ip {
            Some(v) if protocol.is_some_and(|p| p != TargetProtocol::Tcp) => {
                self.err(
                    v.span(),
                    format!("{p}.preserve_client_ip"),
                    "preserve_client_ip applies to TCP target groups (HTTP targets see the client in X-Forwarded-For)",
                );
                false
            }
            Some(v) => *v.get_ref(),
            None => false,
        };

        let protocol_version = match &g.protocol_version {
            None => ProtocolVersion::Http1,
            Some(v) => {
                let field = format!("{p}.protocol_version");
                let version = self.choice(v, &field, PROTOCOL_VERSIONS);
                if protocol == Some(TargetProtocol::Tcp) {
                    self.err(
                        v.span(),
                        field,
                        "protocol_version applies to HTTP/HTTPS target groups; a TCP group carries whatever its listener's clients send",
                    );
                }
                version.unwrap_or(ProtocolVersion::Http1)
            }
        };

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

        let health_check =
            self.health_check(&p, protocol, protocol_version, g.health_check.as_ref());
        let stickiness = self.stickiness(&p, protocol, g.stickiness.as_ref());
        TargetGroup {
            name: g.name.get_ref().clone(),
            protocol: protocol.unwrap_or(TargetProtocol::Http),
            port: port.unwrap_or(0),
            protocol_version,
            algorithm,
            deregistration_delay,
            slow_start,
            preserve_client_ip,
            targets,
            health_check,
            stickiness,
        }
    }

    pub(super) fn health_check(
        &mut self,
        group_path: &str,
        group: Option<TargetProtocol>,
        version: ProtocolVersion,
        hc: Option<&S<RawHealthCheck>>,
    ) -> HealthCheck {
        let grpc = version == ProtocolVersion::Grpc;
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
            None if grpc => GRPC_HC_PATH.to_string(),
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
                    None => format!("{}, the default{what}", crate::config::format_duration(d)),
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

        // gRPC's default, 12, is UNIMPLEMENTED: what a server without the
        // health-check method answers, alive.
        let default_matcher = if grpc {
            Matcher(vec![(12, 12)])
        } else {
            Matcher(vec![(200, 200)])
        };
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
                    let parsed = if grpc {
                        parse_grpc_matcher(&text)
                    } else {
                        parse_matcher(&text)
                    };
                    parsed.unwrap_or_else(|msg| {
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
            version,
        }
    }

    pub(super) fn stickiness(
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
}

/// Health-check matcher: comma-separated codes and ranges within 200-499.
pub(super) fn parse_matcher(s: &str) -> Result<Matcher, String> {
    parse_codes(
        s,
        200..=499,
        "expected codes 200-499 as \"200\", \"200,302\" or \"200-399\"",
    )
}

/// A GRPC group's matcher: gRPC status codes 0-99.
pub(super) fn parse_grpc_matcher(s: &str) -> Result<Matcher, String> {
    parse_codes(
        s,
        0..=99,
        "this group's protocol_version is GRPC: expected gRPC status codes 0-99 as \"0\", \"0,12\" or \"0-99\"",
    )
}

fn parse_codes(
    s: &str,
    range: std::ops::RangeInclusive<i64>,
    allowed: &str,
) -> Result<Matcher, String> {
    let code = |t: &str| -> Result<u16, String> {
        match digits(t.trim()) {
            Some(c) if range.contains(&c) => Ok(c as u16),
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

pub(super) fn check_hc_path(s: &str) -> Result<(), String> {
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

pub(super) fn check_cookie_name(s: &str) -> Result<(), String> {
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
