//! Limits and vocabularies of the file, in one table (ELBv2 values unless
//! noted): ranges, lengths, defaults and the accepted spellings of each choice.

use super::*;

/// An inclusive duration range with its human form for messages.
pub(super) struct DurationRange {
    pub(super) min: Duration,
    pub(super) max: Duration,
    /// 0 is accepted as "off" even though it is below `min`.
    pub(super) zero_is_off: bool,
    pub(super) text: &'static str,
}

pub(super) const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

pub(super) const DEREGISTRATION_DELAY: DurationRange = DurationRange {
    min: secs(0),
    max: secs(3600),
    zero_is_off: false,
    text: "0s-3600s",
};
pub(super) const SLOW_START: DurationRange = DurationRange {
    min: secs(30),
    max: secs(900),
    zero_is_off: true,
    text: "0s (off) or 30s-900s",
};
pub(super) const IDLE_TIMEOUT: DurationRange = DurationRange {
    min: secs(1),
    max: secs(4000),
    zero_is_off: false,
    text: "1s-4000s",
};
pub(super) const HC_INTERVAL: DurationRange = DurationRange {
    min: secs(5),
    max: secs(300),
    zero_is_off: false,
    text: "5s-300s",
};
pub(super) const HC_TIMEOUT: DurationRange = DurationRange {
    min: secs(2),
    max: secs(120),
    zero_is_off: false,
    text: "2s-120s",
};
pub(super) const STICKINESS_DURATION: DurationRange = DurationRange {
    min: secs(1),
    max: secs(7 * 86_400),
    zero_is_off: false,
    text: "1s-7d",
};

pub(super) const MAX_NAME_LEN: usize = 32;
/// Linux IFNAMSIZ minus the terminating NUL.
pub(super) const MAX_IFNAME_LEN: usize = 15;
pub(super) const MAX_CONDITION_VALUE_LEN: usize = 128;
pub(super) const MAX_METHOD_LEN: usize = 40;
pub(super) const MAX_HEADER_NAME_LEN: usize = 40;
pub(super) const MAX_FIXED_BODY: usize = 1024;
pub(super) const MAX_HC_PATH_LEN: usize = 1024;
pub(super) const MAX_REDIRECT_PART_LEN: usize = 128;
pub(super) const DEFAULT_SSL_POLICY: &str = crate::tls::policy::DEFAULT;
/// A certificate expiring sooner than this is a warning (Let's Encrypt
/// renews at 30 days left).
pub(super) const CERT_EXPIRY_WARNING_DAYS: i64 = 30;
pub(super) const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9901";

pub(super) const PROTOCOL_VERSIONS: &[(&str, ProtocolVersion)] = &[
    ("HTTP1", ProtocolVersion::Http1),
    ("HTTP2", ProtocolVersion::Http2),
    ("GRPC", ProtocolVersion::Grpc),
];
/// The ALB's gRPC health-check path when the file names none.
pub(super) const GRPC_HC_PATH: &str = "/AWS.ALB/healthcheck";

pub(super) const TARGET_PROTOCOLS: &[(&str, TargetProtocol)] = &[
    ("HTTP", TargetProtocol::Http),
    ("HTTPS", TargetProtocol::Https),
    ("TCP", TargetProtocol::Tcp),
];
pub(super) const LISTENER_PROTOCOLS: &[(&str, ListenerProtocol)] = &[
    ("HTTP", ListenerProtocol::Http),
    ("HTTPS", ListenerProtocol::Https),
    ("TCP", ListenerProtocol::Tcp),
];
pub(super) const IP_PROTOCOLS: &[(&str, IpProtocol)] = &[
    ("tcp", IpProtocol::Tcp),
    ("udp", IpProtocol::Udp),
    ("icmp", IpProtocol::Icmp),
    ("icmpv6", IpProtocol::Icmpv6),
    ("all", IpProtocol::All),
];
pub(super) const ALGORITHMS: &[(&str, Algorithm)] = &[
    ("round_robin", Algorithm::RoundRobin),
    (
        "least_outstanding_requests",
        Algorithm::LeastOutstandingRequests,
    ),
    ("weighted_random", Algorithm::WeightedRandom),
];
pub(super) const SCHEMES: &[(&str, Scheme)] = &[
    ("internet-facing", Scheme::InternetFacing),
    ("internal", Scheme::Internal),
];
pub(super) const CONTENT_TYPES: &[(&str, ())] = &[
    ("text/plain", ()),
    ("text/css", ()),
    ("text/html", ()),
    ("application/javascript", ()),
    ("application/json", ()),
];
