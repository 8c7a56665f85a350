//! The configuration served, described as `aws elbv2 describe-*` describes
//! an ALB's: the same object shapes and field names (PascalCase), so that
//! scripts written against the AWS CLI's JSON read xalb's. Fields that only
//! xalb has (interfaces, addresses, a target's source) are added beside them.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::config::model::{
    Action, Algorithm, Condition, Config, HealthCheckPort, IpProtocol, Listener, ListenerProtocol,
    ProtocolVersion, RedirectStatus, Scheme, StickinessType, TargetGroup, TargetProtocol,
};
use crate::tls::MutualAuth;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct SecurityGroupDescription {
    pub group_name: String,
    pub description: String,
    pub ip_permissions: Vec<IpPermission>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct IpPermission {
    /// `tcp`, `udp`, `icmp`, `icmpv6`, or `-1` (all), as EC2 writes it.
    pub ip_protocol: String,
    pub from_port: u16,
    pub to_port: u16,
    pub cidr_ip: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct StateCode {
    pub code: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct LoadBalancerDescription {
    pub load_balancer_name: String,
    /// `internet-facing` or `internal`.
    pub scheme: String,
    pub state: StateCode,
    /// `application`, as the ALB's.
    #[serde(rename = "Type")]
    pub kind: String,
    /// `ipv4` or `dualstack`.
    pub ip_address_type: String,
    pub interfaces: Vec<String>,
    pub addresses: Vec<String>,
    pub security_groups: Vec<String>,
    pub idle_timeout_seconds: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ListenerDescription {
    /// `"<balancer>:<port>"`, the name rules and commands use.
    pub listener_name: String,
    pub load_balancer_name: String,
    pub protocol: String,
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssl_policy: Option<String>,
    /// HTTPS: the certificate files, the default first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<CertificateDescription>,
    /// HTTPS: `off`, `verify` or `passthrough`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mutual_authentication: Option<String>,
    pub default_actions: Vec<ActionDescription>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct CertificateDescription {
    pub certificate_file: String,
    pub is_default: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct RuleDescription {
    /// The priority, or `default` for the listener's default action.
    pub priority: String,
    pub is_default: bool,
    pub conditions: Vec<ConditionDescription>,
    pub actions: Vec<ActionDescription>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ConditionDescription {
    /// `host-header`, `path-pattern`, `http-header`, `http-request-method`,
    /// `query-string`, `source-ip`.
    pub field: String,
    /// Query strings as `key=value`, or `value` when any key matches.
    pub values: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_header_name: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ActionDescription {
    /// `forward`, `redirect` or `fixed-response`.
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_group_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_config: Option<ForwardConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_config: Option<RedirectConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_response_config: Option<FixedResponseConfig>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ForwardConfig {
    pub target_groups: Vec<WeightedTargetGroup>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_group_stickiness_config: Option<GroupStickiness>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct WeightedTargetGroup {
    pub target_group_name: String,
    pub weight: u16,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct GroupStickiness {
    pub enabled: bool,
    pub duration_seconds: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct RedirectConfig {
    pub protocol: String,
    pub host: String,
    pub port: String,
    pub path: String,
    pub query: String,
    /// `HTTP_301` or `HTTP_302`.
    pub status_code: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct FixedResponseConfig {
    pub status_code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    pub message_body: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct TargetGroupDescription {
    pub target_group_name: String,
    pub protocol: String,
    /// HTTP and HTTPS groups: `HTTP1`, `HTTP2` or `GRPC`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<String>,
    pub port: u16,
    pub load_balancer_names: Vec<String>,
    pub health_check_enabled: bool,
    pub health_check_protocol: String,
    /// `traffic-port` or a number, as the ALB writes it.
    pub health_check_port: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check_path: Option<String>,
    pub health_check_interval_seconds: u64,
    pub health_check_timeout_seconds: u64,
    pub healthy_threshold_count: u32,
    pub unhealthy_threshold_count: u32,
    pub matcher: MatcherDescription,
    /// `round_robin`, `least_outstanding_requests` or `weighted_random`
    /// (HTTP and HTTPS groups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancing_algorithm: Option<String>,
    pub deregistration_delay_seconds: u64,
    pub slow_start_seconds: u64,
    pub stickiness_enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stickiness_type: Option<String>,
    /// Targets now: the file's, with run-time registrations applied.
    pub registered_target_count: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct MatcherDescription {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_code: Option<String>,
}

pub fn security_groups(cfg: &Config) -> Vec<SecurityGroupDescription> {
    cfg.security_groups
        .iter()
        .map(|g| SecurityGroupDescription {
            group_name: g.name.clone(),
            description: g.description.clone(),
            ip_permissions: g
                .ingress
                .iter()
                .map(|r| IpPermission {
                    ip_protocol: match r.protocol {
                        IpProtocol::Tcp => "tcp",
                        IpProtocol::Udp => "udp",
                        IpProtocol::Icmp => "icmp",
                        IpProtocol::Icmpv6 => "icmpv6",
                        IpProtocol::All => "-1",
                    }
                    .into(),
                    from_port: r.ports.0,
                    to_port: r.ports.1,
                    cidr_ip: r.source.to_string(),
                    description: r.description.clone(),
                })
                .collect(),
        })
        .collect()
}

pub fn load_balancers(cfg: &Config) -> Vec<LoadBalancerDescription> {
    cfg.load_balancers
        .iter()
        .map(|lb| LoadBalancerDescription {
            load_balancer_name: lb.name.clone(),
            scheme: match lb.scheme {
                Scheme::InternetFacing => "internet-facing",
                Scheme::Internal => "internal",
            }
            .into(),
            state: StateCode {
                code: "active".into(),
            },
            kind: "application".into(),
            ip_address_type: if lb.addresses.iter().any(|a| a.is_ipv6()) {
                "dualstack"
            } else {
                "ipv4"
            }
            .into(),
            interfaces: lb.interfaces.clone(),
            addresses: lb.addresses.iter().map(ToString::to_string).collect(),
            security_groups: lb.security_groups.clone(),
            idle_timeout_seconds: lb.idle_timeout.as_secs(),
        })
        .collect()
}

pub fn listeners(cfg: &Config) -> Vec<ListenerDescription> {
    cfg.listeners.iter().map(listener).collect()
}

fn listener(l: &Listener) -> ListenerDescription {
    let https = l.protocol == ListenerProtocol::Https;
    ListenerDescription {
        listener_name: l.name(),
        load_balancer_name: l.load_balancer.clone(),
        protocol: match l.protocol {
            ListenerProtocol::Http => "HTTP",
            ListenerProtocol::Https => "HTTPS",
            ListenerProtocol::Tcp => "TCP",
        }
        .into(),
        port: l.port,
        ssl_policy: https.then(|| l.ssl_policy.clone()),
        certificates: l
            .certificates
            .iter()
            .enumerate()
            .map(|(i, c)| CertificateDescription {
                certificate_file: c.cert.display().to_string(),
                is_default: i == 0,
            })
            .collect(),
        mutual_authentication: https.then(|| {
            match l.mutual_authentication {
                MutualAuth::Off => "off",
                MutualAuth::Verify { .. } => "verify",
                MutualAuth::Passthrough => "passthrough",
            }
            .into()
        }),
        default_actions: vec![action(&l.default_action)],
    }
}

/// A listener's rules in priority order, its default action last.
pub fn rules(l: &Listener) -> Vec<RuleDescription> {
    l.rules
        .iter()
        .map(|r| RuleDescription {
            priority: r.priority.to_string(),
            is_default: false,
            conditions: r.conditions.iter().map(condition).collect(),
            actions: vec![action(&r.action)],
        })
        .chain(std::iter::once(RuleDescription {
            priority: "default".into(),
            is_default: true,
            conditions: Vec::new(),
            actions: vec![action(&l.default_action)],
        }))
        .collect()
}

fn condition(c: &Condition) -> ConditionDescription {
    let plain = |field: &str, values: &[String]| ConditionDescription {
        field: field.into(),
        values: values.to_vec(),
        http_header_name: None,
    };
    match c {
        Condition::HostHeader(v) => plain("host-header", v),
        Condition::PathPattern(v) => plain("path-pattern", v),
        Condition::HttpRequestMethod(v) => plain("http-request-method", v),
        Condition::HttpHeader { name, values } => ConditionDescription {
            http_header_name: Some(name.clone()),
            ..plain("http-header", values)
        },
        Condition::QueryString(q) => ConditionDescription {
            values: q
                .iter()
                .map(|m| match &m.key {
                    Some(k) => format!("{k}={}", m.value),
                    None => m.value.clone(),
                })
                .collect(),
            ..plain("query-string", &[])
        },
        Condition::SourceIp(nets) => ConditionDescription {
            values: nets.iter().map(ToString::to_string).collect(),
            ..plain("source-ip", &[])
        },
    }
}

fn action(a: &Action) -> ActionDescription {
    let empty = |kind: &str| ActionDescription {
        kind: kind.into(),
        target_group_name: None,
        forward_config: None,
        redirect_config: None,
        fixed_response_config: None,
    };
    match a {
        Action::Forward { target_group } => ActionDescription {
            target_group_name: Some(target_group.clone()),
            ..empty("forward")
        },
        Action::WeightedForward {
            target_groups,
            stickiness,
        } => ActionDescription {
            forward_config: Some(ForwardConfig {
                target_groups: target_groups
                    .iter()
                    .map(|g| WeightedTargetGroup {
                        target_group_name: g.name.clone(),
                        weight: g.weight,
                    })
                    .collect(),
                target_group_stickiness_config: stickiness.map(|d| GroupStickiness {
                    enabled: true,
                    duration_seconds: d.as_secs(),
                }),
            }),
            ..empty("forward")
        },
        Action::Redirect {
            status,
            protocol,
            host,
            port,
            path,
            query,
        } => ActionDescription {
            redirect_config: Some(RedirectConfig {
                protocol: protocol.clone(),
                host: host.clone(),
                port: port.clone(),
                path: path.clone(),
                query: query.clone(),
                status_code: match status {
                    RedirectStatus::Http301 => "HTTP_301",
                    RedirectStatus::Http302 => "HTTP_302",
                }
                .into(),
            }),
            ..empty("redirect")
        },
        Action::FixedResponse {
            status_code,
            content_type,
            message_body,
        } => ActionDescription {
            fixed_response_config: Some(FixedResponseConfig {
                status_code: status_code.to_string(),
                content_type: content_type.clone(),
                message_body: message_body.clone(),
            }),
            ..empty("fixed-response")
        },
    }
}

pub fn target_groups(cfg: &Config) -> Vec<TargetGroupDescription> {
    cfg.target_groups
        .iter()
        .map(|g| target_group(g, balancers_of(cfg, &g.name)))
        .collect()
}

/// The balancers whose listeners forward to `group`, in file order.
fn balancers_of(cfg: &Config, group: &str) -> Vec<String> {
    let names = |a: &Action| -> bool {
        match a {
            Action::Forward { target_group } => target_group == group,
            Action::WeightedForward { target_groups, .. } => {
                target_groups.iter().any(|g| g.name == group)
            }
            _ => false,
        }
    };
    let mut out: Vec<String> = Vec::new();
    for l in &cfg.listeners {
        let uses = names(&l.default_action) || l.rules.iter().any(|r| names(&r.action));
        if uses && !out.contains(&l.load_balancer) {
            out.push(l.load_balancer.clone());
        }
    }
    out
}

fn protocol_name(p: TargetProtocol) -> &'static str {
    match p {
        TargetProtocol::Http => "HTTP",
        TargetProtocol::Https => "HTTPS",
        TargetProtocol::Tcp => "TCP",
    }
}

fn target_group(g: &TargetGroup, load_balancer_names: Vec<String>) -> TargetGroupDescription {
    let hc = &g.health_check;
    let http = g.protocol != TargetProtocol::Tcp;
    let codes = hc
        .matcher
        .0
        .iter()
        .map(|&(lo, hi)| {
            if lo == hi {
                lo.to_string()
            } else {
                format!("{lo}-{hi}")
            }
        })
        .collect::<Vec<_>>()
        .join(",");
    let grpc = g.protocol_version == ProtocolVersion::Grpc;
    TargetGroupDescription {
        target_group_name: g.name.clone(),
        protocol: protocol_name(g.protocol).into(),
        protocol_version: http.then(|| {
            match g.protocol_version {
                ProtocolVersion::Http1 => "HTTP1",
                ProtocolVersion::Http2 => "HTTP2",
                ProtocolVersion::Grpc => "GRPC",
            }
            .into()
        }),
        port: g.port,
        load_balancer_names,
        health_check_enabled: hc.enabled,
        health_check_protocol: protocol_name(hc.protocol).into(),
        health_check_port: match hc.port {
            HealthCheckPort::TrafficPort => "traffic-port".into(),
            HealthCheckPort::Port(p) => p.to_string(),
        },
        health_check_path: (hc.protocol != TargetProtocol::Tcp).then(|| hc.path.clone()),
        health_check_interval_seconds: hc.interval.as_secs(),
        health_check_timeout_seconds: hc.timeout.as_secs(),
        healthy_threshold_count: hc.healthy_threshold,
        unhealthy_threshold_count: hc.unhealthy_threshold,
        matcher: MatcherDescription {
            http_code: (!grpc).then(|| codes.clone()),
            grpc_code: grpc.then_some(codes),
        },
        load_balancing_algorithm: http.then(|| {
            match g.algorithm {
                Algorithm::RoundRobin => "round_robin",
                Algorithm::LeastOutstandingRequests => "least_outstanding_requests",
                Algorithm::WeightedRandom => "weighted_random",
            }
            .into()
        }),
        deregistration_delay_seconds: g.deregistration_delay.as_secs(),
        slow_start_seconds: g.slow_start.as_secs(),
        stickiness_enabled: g.stickiness.enabled,
        stickiness_type: g.stickiness.enabled.then(|| {
            match g.stickiness.kind {
                StickinessType::LbCookie => "lb_cookie",
                StickinessType::AppCookie { .. } => "app_cookie",
            }
            .into()
        }),
        registered_target_count: g.targets.len(),
    }
}

/// Where a target comes from: the file, or `register-targets`.
pub fn target_source(
    registered: &[(String, SocketAddr)],
    group: &str,
    target: SocketAddr,
) -> &'static str {
    if registered.iter().any(|(g, t)| g == group && *t == target) {
        "register-targets"
    } else {
        "config"
    }
}
