//! Checks of the host against the configuration before anything is attached:
//! every interface exists and every balancer address is configured. And the
//! interfaces through which a balancer's addresses may be reached: those it
//! lists and those holding its addresses ([`interface_masks`]), and the
//! others, which the operator is told about ([`other_interfaces`]).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{CStr, CString};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb_common::iface_bit;

use super::compile::KernelConfig;
use crate::config::model::Config;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HostError {
    #[error("load balancer {lb:?}: interface {interface:?} does not exist on this host")]
    NoInterface { lb: String, interface: String },
    #[error(
        "load balancer {lb:?}: address {addr} is not configured on this host \
         (add it, e.g. `ip addr add {addr}/24 dev IFACE`)"
    )]
    NoAddress { lb: String, addr: IpAddr },
    #[error("cannot list the host's addresses: {0}")]
    Getifaddrs(String),
}

pub fn if_index(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: c is a valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (idx != 0).then_some(idx)
}

/// Every address configured on any interface of this network namespace.
pub fn local_addresses() -> Result<BTreeSet<IpAddr>, HostError> {
    Ok(address_devices()?.into_iter().map(|(a, _)| a).collect())
}

/// Every address configured in this network namespace, with the name of the
/// interface holding it (an address on two interfaces comes twice).
pub fn address_devices() -> Result<Vec<(IpAddr, String)>, HostError> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(HostError::Getifaddrs(
            std::io::Error::last_os_error().to_string(),
        ));
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: cur is a node of the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() && !ifa.ifa_name.is_null() {
            // SAFETY: ifa_addr points to a sockaddr of the family it names.
            let addr = unsafe {
                match i32::from((*ifa.ifa_addr).sa_family) {
                    libc::AF_INET => {
                        let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                        Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                            sin.sin_addr.s_addr,
                        ))))
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                        Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
                    }
                    _ => None,
                }
            };
            if let Some(addr) = addr {
                // SAFETY: ifa_name is a NUL-terminated name (checked non-null).
                let name = unsafe { CStr::from_ptr(ifa.ifa_name) };
                out.push((addr, name.to_string_lossy().into_owned()));
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: head came from getifaddrs.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// Every problem at once, so one run tells the operator everything to fix.
pub fn check(cfg: &Config) -> Vec<HostError> {
    let mut errors = Vec::new();
    let addrs = match local_addresses() {
        Ok(a) => a,
        Err(e) => return vec![e],
    };
    for lb in &cfg.load_balancers {
        for iface in &lb.interfaces {
            if if_index(iface).is_none() {
                errors.push(HostError::NoInterface {
                    lb: lb.name.clone(),
                    interface: iface.clone(),
                });
            }
        }
        for addr in &lb.addresses {
            if !addrs.contains(addr) {
                errors.push(HostError::NoAddress {
                    lb: lb.name.clone(),
                    addr: *addr,
                });
            }
        }
    }
    errors
}

/// Name of an interface by index, for messages.
pub fn if_name(index: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buf has IF_NAMESIZE bytes as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: if_indextoname wrote a NUL-terminated name into buf.
    Some(
        unsafe { CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned(),
    )
}

/// The contents of `LB_IFACES` for a compiled configuration: interface index
/// → bit set of the balancer rows that may be reached through it. An
/// interface a balancer lists counts for it (`names`, from
/// [`KernelConfig::iface_names`]), and so does every device holding one of
/// its addresses (`held`, as [`address_devices`] gives them): a local
/// client's connection to a balancer address shows that device as its
/// ingress, not `lo`. Names `index_of` does not know (an interface removed
/// since the check) are left out.
pub fn interface_masks(
    cfg: &KernelConfig,
    held: &[(IpAddr, String)],
    index_of: impl Fn(&str) -> Option<u32>,
) -> BTreeMap<u32, u64> {
    let mut masks: BTreeMap<u32, u64> = BTreeMap::new();
    for (name, mask) in &cfg.iface_names {
        if let Some(i) = index_of(name) {
            *masks.entry(i).or_default() |= mask;
        }
    }
    let owners = cfg
        .addrs_v4
        .iter()
        .map(|(a, v)| (IpAddr::from(*a), v.lb_id))
        .chain(
            cfg.addrs_v6
                .iter()
                .map(|(a, v)| (IpAddr::from(*a), v.lb_id)),
        );
    for (addr, lb_id) in owners {
        for (_, device) in held.iter().filter(|(a, _)| *a == addr) {
            if let Some(i) = index_of(device) {
                *masks.entry(i).or_default() |= iface_bit(lb_id);
            }
        }
    }
    masks
}

/// [`interface_masks`] on this host, as a bank is written.
pub fn resolve_interfaces(cfg: &KernelConfig) -> Result<BTreeMap<u32, u64>, HostError> {
    Ok(interface_masks(cfg, &address_devices()?, if_index))
}

/// An interface no balancer lists, which could carry traffic to a balancer
/// address (Linux accepts any local address on any interface).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtherIface {
    pub name: String,
    /// What it is: `ethernet`, `vlan`, `gre tunnel`, ...
    pub kind: String,
}

impl std::fmt::Display for OtherIface {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name, self.kind)
    }
}

/// Every interface of this network namespace except `lo` and those a
/// balancer lists, with its kind read from `/sys/class/net` (under `ip
/// netns exec` that is the namespace's own sysfs).
pub fn other_interfaces(cfg: &Config) -> Vec<OtherIface> {
    let listed: BTreeSet<&str> = cfg
        .load_balancers
        .iter()
        .flat_map(|lb| lb.interfaces.iter().map(String::as_str))
        .collect();
    interface_names()
        .into_iter()
        .filter(|n| n != "lo" && !listed.contains(n.as_str()))
        .map(|name| {
            let sys = std::path::Path::new("/sys/class/net").join(&name);
            let arphrd = std::fs::read_to_string(sys.join("type")).unwrap_or_default();
            let uevent = std::fs::read_to_string(sys.join("uevent")).unwrap_or_default();
            OtherIface {
                kind: iface_kind(&arphrd, &uevent),
                name,
            }
        })
        .collect()
}

/// What the operator should know about the interfaces of this host, one
/// paragraph per item: the interfaces no balancer lists (connections to
/// balancer addresses through them are refused), and balancer addresses
/// held by a device the balancer does not list, other than `lo` (through
/// that device they are reached without the security groups, unless it is
/// a dummy device, which receives nothing from outside). Printed by `xalb
/// check`, logged by `xalb run`.
pub fn interface_notes(cfg: &Config) -> Vec<String> {
    let held = address_devices().unwrap_or_default();
    notes(cfg, &other_interfaces(cfg), &held)
}

fn notes(cfg: &Config, others: &[OtherIface], held: &[(IpAddr, String)]) -> Vec<String> {
    let mut out = Vec::new();
    if !others.is_empty() {
        let list: Vec<String> = others.iter().map(ToString::to_string).collect();
        out.push(format!(
            "these interfaces can carry traffic to balancer addresses but are not in any \
             `interfaces`: {}. Connections arriving on them are refused and counted as \
             drop_wrong_interface.",
            list.join(", ")
        ));
    }
    for lb in &cfg.load_balancers {
        for addr in &lb.addresses {
            for (_, device) in held.iter().filter(|(a, _)| a == addr) {
                if device == "lo" || lb.interfaces.contains(device) {
                    continue;
                }
                out.push(format!(
                    "load balancer {:?}: address {addr} is on {device}, which it does not list \
                     in `interfaces`: traffic arriving on {device} reaches it without its \
                     security groups, unless {device} is a dummy device. Put the address on a \
                     listed interface, lo or a dummy device, or list {device}.",
                    lb.name
                ));
            }
        }
    }
    out
}

/// Every interface name of this network namespace, in index order.
fn interface_names() -> Vec<String> {
    // SAFETY: if_nameindex returns a list ended by a zero entry, or null.
    let head = unsafe { libc::if_nameindex() };
    if head.is_null() {
        return Vec::new();
    }
    let mut names = Vec::new();
    let mut cur = head;
    // SAFETY: cur walks the list up to its zero entry; freed below.
    unsafe {
        while (*cur).if_index != 0 && !(*cur).if_name.is_null() {
            names.push(
                CStr::from_ptr((*cur).if_name)
                    .to_string_lossy()
                    .into_owned(),
            );
            cur = cur.add(1);
        }
        libc::if_freenameindex(head);
    }
    names
}

/// An interface's kind from its `/sys/class/net/<if>/type` (the ARPHRD
/// number) and `uevent` (its `DEVTYPE=`, set for vlan, bridge, bond, vxlan,
/// wireguard and others); the device type wins, it says more.
pub fn iface_kind(arphrd: &str, uevent: &str) -> String {
    if let Some(devtype) = uevent
        .lines()
        .find_map(|l| l.strip_prefix("DEVTYPE="))
        .map(str::trim)
        .filter(|d| !d.is_empty())
    {
        return devtype.to_string();
    }
    match arphrd.trim().parse::<u32>() {
        Ok(1) => "ethernet".into(),
        Ok(768) => "ipip tunnel".into(),
        Ok(769) => "ip6tnl tunnel".into(),
        Ok(776) => "sit tunnel".into(),
        Ok(778) => "gre tunnel".into(),
        Ok(823) => "ip6gre tunnel".into(),
        // No link layer: tun devices, wireguard.
        Ok(65534) => "tunnel (no link layer)".into(),
        Ok(n) => format!("link type {n}"),
        Err(_) => "unknown".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_common::LbAddr;

    fn lb(id: u32) -> LbAddr {
        LbAddr {
            lb_id: id,
            flags: 0,
        }
    }

    #[test]
    fn an_interface_counts_for_the_balancers_listing_it_or_holding_an_address_on_it() {
        let cfg = KernelConfig {
            addrs_v4: vec![([10, 0, 0, 1], lb(0)), ([10, 0, 1, 1], lb(3))],
            addrs_v6: vec![([0xfd; 16], lb(5))],
            iface_names: vec![
                ("eth0".into(), iface_bit(0) | iface_bit(3)),
                ("eth1".into(), iface_bit(5)),
                ("gone".into(), iface_bit(0)),
            ],
            ..KernelConfig::default()
        };
        let held = [
            (IpAddr::from([10, 0, 0, 1]), "eth0".to_string()),
            // Held by a device no balancer lists: local clients come in there.
            (IpAddr::from([10, 0, 1, 1]), "dummy0".to_string()),
            (IpAddr::from([0xfd; 16]), "lo".to_string()),
            // Not a balancer's address.
            (IpAddr::from([192, 0, 2, 1]), "eth2".to_string()),
        ];
        let index = |n: &str| match n {
            "lo" => Some(1),
            "eth0" => Some(2),
            "eth1" => Some(3),
            "eth2" => Some(4),
            "dummy0" => Some(5),
            _ => None,
        };
        let masks = interface_masks(&cfg, &held, index);
        assert_eq!(
            masks,
            BTreeMap::from([
                (1, iface_bit(5)),
                (2, iface_bit(0) | iface_bit(3)),
                (3, iface_bit(5)),
                (5, iface_bit(3)),
            ])
        );
    }

    #[test]
    fn the_notes_name_other_interfaces_and_addresses_off_the_listed_ones() {
        let cfg = crate::config::parse_str(
            r#"
[[security_group]]
name = "sg"
ingress = [{ protocol = "tcp", ports = "80", source = "0.0.0.0/0" }]

[[load_balancer]]
name = "edge"
interfaces = ["eth0"]
addresses = ["10.0.0.10", "10.0.0.11", "10.0.0.12"]
security_groups = ["sg"]
"#,
            "t.toml",
        )
        .unwrap();
        let others = [
            OtherIface {
                name: "eth1".into(),
                kind: "ethernet".into(),
            },
            OtherIface {
                name: "gre0".into(),
                kind: "gre tunnel".into(),
            },
        ];
        let held = [
            (IpAddr::from([10, 0, 0, 10]), "eth0".to_string()),
            (IpAddr::from([10, 0, 0, 11]), "lo".to_string()),
            (IpAddr::from([10, 0, 0, 12]), "eth1".to_string()),
        ];
        let notes = notes(&cfg, &others, &held);
        assert_eq!(notes.len(), 2, "{notes:#?}");
        assert!(
            notes[0].contains("`interfaces`: eth1 (ethernet), gre0 (gre tunnel). Connections"),
            "{}",
            notes[0]
        );
        assert!(
            notes[1].starts_with("load balancer \"edge\": address 10.0.0.12 is on eth1,"),
            "{}",
            notes[1]
        );
        assert!(super::notes(&cfg, &[], &held[..2]).is_empty());
    }

    #[test]
    fn the_last_balancer_row_has_a_bit() {
        assert_eq!(iface_bit(lb_common::MAX_LBS - 1), 1 << 63);
    }

    #[test]
    fn an_interface_kind_comes_from_its_device_type_else_its_link_type() {
        let uevent = |devtype: &str| format!("INTERFACE=x\nIFINDEX=7\n{devtype}");
        for (arphrd, ev, kind) in [
            ("1\n", uevent(""), "ethernet"),
            ("1\n", uevent("DEVTYPE=vlan\n"), "vlan"),
            ("1\n", uevent("DEVTYPE=bridge\n"), "bridge"),
            ("1\n", uevent("DEVTYPE=bond\n"), "bond"),
            ("1\n", uevent("DEVTYPE=vxlan\n"), "vxlan"),
            ("65534\n", uevent("DEVTYPE=wireguard\n"), "wireguard"),
            ("65534\n", uevent(""), "tunnel (no link layer)"),
            ("768\n", uevent(""), "ipip tunnel"),
            ("769\n", uevent(""), "ip6tnl tunnel"),
            ("776\n", uevent(""), "sit tunnel"),
            ("778\n", uevent(""), "gre tunnel"),
            ("823\n", uevent(""), "ip6gre tunnel"),
            ("32\n", uevent(""), "link type 32"),
            ("", String::new(), "unknown"),
        ] {
            assert_eq!(iface_kind(arphrd, &ev), kind, "{arphrd:?} {ev:?}");
        }
    }
}
