//! Compiles the validated configuration into the contents of the XDP program's
//! maps (bank-agnostic; [`super::maps`] writes them into a bank).
//!
//! The one subtle part is the security-group union: an LPM trie returns only the
//! longest matching prefix, while security groups allow the union of all rules.
//! So every stored prefix's entry carries its own ranges plus those of every
//! shorter prefix that covers it.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use lb_common::{
    iface_bit, proto, LbAddr, ListenerSlots, PortRange, Ring, SgRules, LB_FLAG_INTERNAL,
    LB_FLAG_TCP_LISTENER, MAX_RANGES,
};

use super::forwarding;
use super::slots::{LbSlots, ListenerRows};
use crate::config::model::{Config, IpProtocol, ListenerProtocol, Scheme};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CompileError {
    #[error(
        "load balancer {lb:?}: source {prefix} is allowed {count} distinct protocol/port ranges \
         (after merging the rules of covering prefixes); at most {max} fit the kernel's table"
    )]
    TooManyRanges {
        lb: String,
        prefix: IpNet,
        count: usize,
        max: usize,
    },
    #[error("address {addr} is used by load balancers {first:?} and {second:?}")]
    SharedAddress {
        addr: IpAddr,
        first: String,
        second: String,
    },
    #[error(
        "TCP listeners forward to {count} target groups; the kernel holds rings for at most {max}"
    )]
    TooManyTcpGroups { count: usize, max: usize },
    #[error(
        "the target groups of TCP listeners have {count} targets in all; the kernel's target \
         table holds at most {max}"
    )]
    TooManyTcpTargets { count: usize, max: usize },
}

/// The TCP listeners' groups fit the kernel's rings and target table: the
/// daemon would otherwise leave the groups past the last ring without one.
fn forwarding_fits(cfg: &Config) -> Result<(), CompileError> {
    let mut groups: Vec<&str> = cfg
        .listeners
        .iter()
        .filter_map(super::forwarding::forwarded_group)
        .collect();
    groups.sort_unstable();
    groups.dedup();
    let max = lb_common::MAX_RINGS as usize;
    if groups.len() > max {
        return Err(CompileError::TooManyTcpGroups {
            count: groups.len(),
            max,
        });
    }
    let count: usize = groups
        .iter()
        .filter_map(|g| cfg.target_group(g))
        .map(|g| g.targets.len())
        .sum();
    let max = lb_common::MAX_TARGETS as usize;
    if count > max {
        return Err(CompileError::TooManyTcpTargets { count, max });
    }
    Ok(())
}

/// What the kernel needs to know, per balancer id (the index in `Config::load_balancers`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelConfig {
    pub addrs_v4: Vec<([u8; 4], LbAddr)>,
    pub addrs_v6: Vec<([u8; 16], LbAddr)>,
    pub internal_v4: Vec<(u32, Ipv4Net)>,
    pub internal_v6: Vec<(u32, Ipv6Net)>,
    pub sg_v4: Vec<(u32, Ipv4Net, SgRules)>,
    pub sg_v6: Vec<(u32, Ipv6Net, SgRules)>,
    /// Each balancer's name by id, for the XDP verdict log.
    pub names: Vec<(u32, String)>,
    /// The listeners the kernel steers to the daemon's sockets: (balancer
    /// id, port, counter row and socket slots). [`compile`] leaves it empty;
    /// the daemon fills it ([`steering`]) once it holds their sockets.
    pub listeners: Vec<(u32, u16, ListenerSlots)>,
    /// Each interface a balancer lists, by name, with the bit set of the
    /// balancers listing it ([`lb_common::iface_bit`] of their rows). Names,
    /// not indexes, so that compiling needs no host (`xalb check`): the daemon
    /// resolves them, and adds the devices holding each balancer's
    /// addresses, when it writes a bank ([`super::host::interface_masks`]).
    pub iface_names: Vec<(String, u64)>,
    /// The TCP listeners' Maglev tables by `RingKey::ring`. [`compile`]
    /// leaves it empty; the daemon fills it from its targets' health.
    pub rings: Vec<(u32, Box<Ring>)>,
}

/// One ingress rule as the kernel sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceRule {
    pub source: IpNet,
    pub range: PortRange,
}

pub fn kernel_proto(p: IpProtocol) -> u8 {
    match p {
        IpProtocol::Tcp => proto::TCP,
        IpProtocol::Udp => proto::UDP,
        IpProtocol::Icmp => proto::ICMP,
        IpProtocol::Icmpv6 => proto::ICMPV6,
        IpProtocol::All => proto::ALL,
    }
}

/// The map contents for `cfg`, each balancer under its counter row in
/// `slots` (which must hold every balancer of `cfg`).
pub fn compile(cfg: &Config, slots: &LbSlots) -> Result<KernelConfig, CompileError> {
    forwarding_fits(cfg)?;
    let mut out = KernelConfig::default();
    let mut owner: BTreeMap<IpAddr, &str> = BTreeMap::new();
    let mut ifaces: BTreeMap<&str, u64> = BTreeMap::new();
    for lb in &cfg.load_balancers {
        let id = slots
            .row(&lb.name)
            .expect("the slots are made from the same configuration");
        let tcp = cfg
            .listeners
            .iter()
            .any(|l| l.load_balancer == lb.name && l.protocol == ListenerProtocol::Tcp);
        let value = LbAddr {
            lb_id: id,
            flags: if lb.scheme == Scheme::Internal {
                LB_FLAG_INTERNAL
            } else {
                0
            } | if tcp { LB_FLAG_TCP_LISTENER } else { 0 },
        };
        out.names.push((id, lb.name.clone()));
        for iface in &lb.interfaces {
            *ifaces.entry(iface).or_default() |= iface_bit(id);
        }
        for &addr in &lb.addresses {
            if let Some(first) = owner.insert(addr, &lb.name) {
                return Err(CompileError::SharedAddress {
                    addr,
                    first: first.to_string(),
                    second: lb.name.clone(),
                });
            }
            match addr {
                IpAddr::V4(a) => out.addrs_v4.push((a.octets(), value)),
                IpAddr::V6(a) => out.addrs_v6.push((a.octets(), value)),
            }
        }
        for net in &lb.internal_networks {
            match net.trunc() {
                IpNet::V4(n) => out.internal_v4.push((id, n)),
                IpNet::V6(n) => out.internal_v6.push((id, n)),
            }
        }
        let rules: Vec<SourceRule> = lb
            .security_groups
            .iter()
            .filter_map(|name| cfg.security_group(name))
            .flat_map(|sg| &sg.ingress)
            .map(|r| SourceRule {
                source: r.source.trunc(),
                range: PortRange {
                    proto: kernel_proto(r.protocol),
                    _pad: 0,
                    lo: r.ports.0,
                    hi: r.ports.1,
                },
            })
            .collect();
        for (prefix, sg) in union_by_prefix(&lb.name, &rules)? {
            match prefix {
                IpNet::V4(n) => out.sg_v4.push((id, n, sg)),
                IpNet::V6(n) => out.sg_v6.push((id, n, sg)),
            }
        }
    }
    out.iface_names = ifaces
        .into_iter()
        .map(|(name, mask)| (name.to_string(), mask))
        .collect();
    Ok(out)
}

/// The `LISTENERS` entries of the listeners in `rows`, each under its
/// balancer's row in `lbs`: steered to sockets, or (TCP listeners of
/// `cfg`) forwarded by their group's ring.
pub fn steering(
    cfg: &Config,
    lbs: &LbSlots,
    rows: &ListenerRows,
) -> Vec<(u32, u16, ListenerSlots)> {
    let rings = forwarding::ring_names(cfg);
    rows.rows()
        .into_iter()
        .filter_map(|(row, lb, port)| {
            let listener = cfg
                .listeners
                .iter()
                .find(|l| l.load_balancer == lb && l.port == port);
            let slots = match listener.and_then(forwarding::forwarded_group) {
                Some(group) => {
                    let ring = rings.iter().position(|r| *r == group)?;
                    ListenerSlots::forwarded(row, ring as u32)
                }
                None => ListenerSlots::of_row(row),
            };
            Some((lbs.row(&lb)?, port, slots))
        })
        .collect()
}

/// For every distinct source prefix, the union of the ranges of all rules whose
/// source covers it (itself included), merged and bounded by [`MAX_RANGES`].
pub fn union_by_prefix(
    lb: &str,
    rules: &[SourceRule],
) -> Result<Vec<(IpNet, SgRules)>, CompileError> {
    let mut prefixes: Vec<IpNet> = rules.iter().map(|r| r.source).collect();
    prefixes.sort();
    prefixes.dedup();
    prefixes
        .into_iter()
        .map(|prefix| {
            let covering: Vec<PortRange> = rules
                .iter()
                .filter(|r| r.source.contains(&prefix))
                .map(|r| r.range)
                .collect();
            let merged = merge_ranges(covering);
            if merged.len() > MAX_RANGES {
                return Err(CompileError::TooManyRanges {
                    lb: lb.to_string(),
                    prefix,
                    count: merged.len(),
                    max: MAX_RANGES,
                });
            }
            let mut sg = SgRules {
                count: merged.len() as u32,
                ..SgRules::default()
            };
            sg.ranges[..merged.len()].copy_from_slice(&merged);
            Ok((prefix, sg))
        })
        .collect()
}

/// Sorts and merges overlapping or adjacent ranges of the same protocol; a rule
/// for every protocol makes all others redundant.
pub fn merge_ranges(mut ranges: Vec<PortRange>) -> Vec<PortRange> {
    if let Some(all) = ranges.iter().find(|r| r.proto == proto::ALL) {
        return vec![*all];
    }
    ranges.sort_by_key(|r| (r.proto, r.lo, r.hi));
    let mut out: Vec<PortRange> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(last) if last.proto == r.proto && u32::from(r.lo) <= u32::from(last.hi) + 1 => {
                last.hi = last.hi.max(r.hi);
            }
            _ => out.push(r),
        }
    }
    out
}

#[cfg(test)]
mod tests;
