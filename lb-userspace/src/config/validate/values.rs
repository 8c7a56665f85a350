//! Checks shared by every section: names, choices, integers, ports,
//! durations, CIDRs and addresses, each pushing a located diagnostic.

use super::*;

pub(super) fn protocol_name<T: PartialEq + Copy>(
    table: &[(&'static str, T)],
    value: T,
) -> &'static str {
    table
        .iter()
        .find(|(_, v)| *v == value)
        .map_or("?", |(n, _)| n)
}

impl Checker<'_> {
    /// One of a fixed set of strings; the message lists them.
    pub(super) fn choice<T: Copy>(
        &mut self,
        v: &S<String>,
        field: &str,
        options: &[(&str, T)],
    ) -> Option<T> {
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

    pub(super) fn int(&mut self, v: &S<i64>, field: &str, min: i64, max: i64) -> Option<i64> {
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

    pub(super) fn port(&mut self, v: &S<i64>, field: &str) -> Option<u16> {
        self.int(v, field, 1, 65535).map(|n| n as u16)
    }

    /// A duration field: the default when absent; on error the default is
    /// returned too (the diagnostic keeps the model from being used).
    pub(super) fn duration(
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
    pub(super) fn checked_duration(
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

    pub(super) fn cidr(&mut self, v: &S<String>, field: &str) -> Option<IpNet> {
        parse_cidr(v.get_ref())
            .map_err(|msg| self.err(v.span(), field, msg))
            .ok()
    }

    /// A unicast IP address of a target or balancer.
    pub(super) fn ip(&mut self, v: &S<String>, field: &str, what: &str) -> Option<IpAddr> {
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

/// Names of security groups, target groups and balancers (the AWS target
/// group rule, applied to all three).
pub(super) fn check_name(name: &str) -> Result<(), String> {
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

/// "Message for an unknown reference", listing what is defined.
pub(super) fn unknown(kind: &str, name: &str, known: &HashSet<String>) -> String {
    if known.is_empty() {
        return format!("unknown {kind} {name:?}: no {kind} is defined");
    }
    let sorted: BTreeSet<&String> = known.iter().collect();
    let list: Vec<String> = sorted.iter().map(|n| format!("{n:?}")).collect();
    format!("unknown {kind} {name:?}; defined: {}", list.join(", "))
}

/// A port that fits 1-65535.
pub(super) fn valid_port(n: i64) -> Option<u16> {
    u16::try_from(n).ok().filter(|&p| p != 0)
}

/// A string of at most 9 ASCII digits, as a number (`parse` alone would
/// take a sign; it refuses an empty string). Longer is no number at all,
/// not one out of a caller's range.
pub(super) fn digits(s: &str) -> Option<i64> {
    if s.len() > 9 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

pub(super) fn show(v: &IntOrString) -> String {
    match v {
        IntOrString::Int(n) => n.to_string(),
        IntOrString::Str(s) => format!("{s:?}"),
    }
}

/// Security-group port: `"80"` or `"8000-8100"` (an integer is accepted).
pub(super) fn parse_port_range(v: &IntOrString) -> Result<(u16, u16), String> {
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
pub(super) fn parse_cidr(s: &str) -> Result<IpNet, String> {
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
