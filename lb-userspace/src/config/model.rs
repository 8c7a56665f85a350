//! The validated configuration: plain data, every default applied, every name
//! reference checked. Produced by [`super::load`] / [`super::parse_str`]; the
//! kernel and proxy halves compile it into their own runtime state.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub security_groups: Vec<SecurityGroup>,
    pub target_groups: Vec<TargetGroup>,
    /// In file order; a balancer's index here is its kernel id.
    pub load_balancers: Vec<LoadBalancer>,
    /// Each listener carries its rules, sorted by priority.
    pub listeners: Vec<Listener>,
    pub admin: Admin,
    pub access_log: AccessLog,
    /// What is allowed but wants attention (a certificate expiring within
    /// 30 days): printed by `xalb check`, logged at start and reload.
    pub warnings: Vec<crate::config::Diagnostic>,
}

impl Config {
    pub fn security_group(&self, name: &str) -> Option<&SecurityGroup> {
        self.security_groups.iter().find(|g| g.name == name)
    }
    pub fn target_group(&self, name: &str) -> Option<&TargetGroup> {
        self.target_groups.iter().find(|g| g.name == name)
    }
    pub fn load_balancer(&self, name: &str) -> Option<&LoadBalancer> {
        self.load_balancers.iter().find(|l| l.name == name)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct SecurityGroup {
    pub name: String,
    pub description: String,
    pub ingress: Vec<IngressRule>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpProtocol {
    Tcp,
    Udp,
    Icmp,
    Icmpv6,
    All,
}

#[derive(Clone, Debug, PartialEq)]
pub struct IngressRule {
    pub protocol: IpProtocol,
    /// Inclusive destination port range; `(0, 65535)` for icmp, icmpv6 and all.
    pub ports: (u16, u16),
    pub source: IpNet,
    pub description: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetProtocol {
    Http,
    Https,
    Tcp,
}

/// What the balancer speaks to an HTTP/HTTPS group's targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtocolVersion {
    Http1,
    /// h2c on HTTP groups, ALPN `h2` on HTTPS groups.
    Http2,
    /// HTTP/2 carrying gRPC; health checks judge the gRPC status.
    Grpc,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    RoundRobin,
    LeastOutstandingRequests,
    WeightedRandom,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TargetGroup {
    pub name: String,
    pub protocol: TargetProtocol,
    pub port: u16,
    pub protocol_version: ProtocolVersion,
    pub algorithm: Algorithm,
    pub deregistration_delay: Duration,
    /// Zero when off.
    pub slow_start: Duration,
    /// TCP groups: targets see the client's address (only the destination
    /// is rewritten); false is full NAT.
    pub preserve_client_ip: bool,
    pub targets: Vec<Target>,
    pub health_check: HealthCheck,
    pub stickiness: Stickiness,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    pub address: IpAddr,
    /// The group's port when the file gives none.
    pub port: u16,
    /// 1-999.
    pub weight: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthCheckPort {
    TrafficPort,
    Port(u16),
}

#[derive(Clone, Debug, PartialEq)]
pub struct HealthCheck {
    pub enabled: bool,
    pub protocol: TargetProtocol,
    pub port: HealthCheckPort,
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    /// HTTP status codes, or gRPC status codes on GRPC groups.
    pub matcher: Matcher,
    /// The group's: HTTP and HTTPS checks speak it (a GRPC group's are gRPC
    /// calls judged by their grpc-status).
    pub version: ProtocolVersion,
}

/// HTTP status codes that count as healthy: a list of inclusive ranges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Matcher(pub Vec<(u16, u16)>);

impl Matcher {
    pub fn matches(&self, status: u16) -> bool {
        self.0.iter().any(|&(lo, hi)| lo <= status && status <= hi)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StickinessType {
    LbCookie,
    AppCookie { cookie_name: String },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Stickiness {
    pub enabled: bool,
    pub kind: StickinessType,
    pub duration: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    InternetFacing,
    Internal,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LoadBalancer {
    pub name: String,
    pub scheme: Scheme,
    pub internal_networks: Vec<IpNet>,
    pub interfaces: Vec<String>,
    pub addresses: Vec<IpAddr>,
    pub security_groups: Vec<String>,
    pub idle_timeout: Duration,
    /// A request head must arrive whole within this long of its first byte
    /// (408 otherwise), as nginx's `client_header_timeout`. An extension of
    /// the contract: 1s-4000s, default 60s or `idle_timeout` if shorter.
    pub request_head_timeout: Duration,
    /// Request line plus header fields, in bytes; larger requests get 431.
    /// An extension of the contract: 8192 to 1 MiB, default 65536 (the ALB's 64 KiB).
    pub max_header_bytes: usize,
    /// Header fields per request; more get 431. 16-1000, default 100.
    pub max_headers: usize,
    /// Keep a client's `X-Request-Id` instead of replacing it. An extension
    /// of the contract, default false: a client could otherwise choose the
    /// id that targets and logs correlate by.
    pub trust_request_id: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenerProtocol {
    Http,
    Https,
    Tcp,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Listener {
    pub load_balancer: String,
    pub protocol: ListenerProtocol,
    pub port: u16,
    pub default_action: Action,
    /// HTTPS only; the first is the default, the rest are chosen by SNI.
    pub certificates: Vec<Certificate>,
    pub ssl_policy: String,
    /// HTTPS only: the policy `ssl_policy` names.
    pub tls_policy: Option<crate::tls::policy::Policy>,
    /// HTTPS only.
    pub mutual_authentication: crate::tls::MutualAuth,
    /// Sorted by priority, lowest first.
    pub rules: Vec<Rule>,
}

impl Listener {
    /// `"<load_balancer>:<port>"`, the name rules refer to.
    pub fn name(&self) -> String {
        format!("{}:{}", self.load_balancer, self.port)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Certificate {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The chain and key as read when the file was checked: a reload
    /// applies exactly what it checked.
    pub served: Option<crate::tls::ServedCert>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub priority: u32,
    /// All must match.
    pub conditions: Vec<Condition>,
    pub action: Action,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryMatch {
    pub key: Option<String>,
    pub value: String,
}

/// A rule condition; it matches when any of its values matches.
#[derive(Clone, Debug, PartialEq)]
pub enum Condition {
    HostHeader(Vec<String>),
    PathPattern(Vec<String>),
    HttpHeader { name: String, values: Vec<String> },
    HttpRequestMethod(Vec<String>),
    QueryString(Vec<QueryMatch>),
    SourceIp(Vec<IpNet>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightedGroup {
    pub name: String,
    /// 0-999.
    pub weight: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedirectStatus {
    Http301,
    Http302,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    Forward {
        target_group: String,
    },
    WeightedForward {
        target_groups: Vec<WeightedGroup>,
        /// Group-level stickiness duration, when on.
        stickiness: Option<Duration>,
    },
    /// Each part is a template that may hold `#{protocol}`, `#{host}`,
    /// `#{port}`, `#{path}`, `#{query}`; absent parts default to their placeholder.
    Redirect {
        status: RedirectStatus,
        protocol: String,
        host: String,
        port: String,
        path: String,
        query: String,
    },
    FixedResponse {
        status_code: u16,
        content_type: Option<String>,
        message_body: String,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Admin {
    pub listen: SocketAddr,
}

#[derive(Clone, Debug, PartialEq)]
pub struct AccessLog {
    pub enabled: bool,
    /// "-" is standard output.
    pub path: String,
    pub format: String,
}
