//! TCP listeners as the kernel forwards them: which ring each listener
//! forwards by, the Maglev rings built from a group's targets, the target
//! rows they point at, and what the host must allow (source ports reserved
//! for the translation, forwarding on the balancer's interfaces).

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};

use lb_common::{FwdTarget, Ring, MAX_RINGS, RING_SIZE, TARGET_PRESERVE_CLIENT_IP};

use super::maglev::{self, Entry};
use crate::config::model::{Action, Config, Listener, ListenerProtocol};

/// The target group a TCP listener forwards to (validation refuses any
/// other action on one).
pub fn forwarded_group(l: &Listener) -> Option<&str> {
    if l.protocol != ListenerProtocol::Tcp {
        return None;
    }
    match &l.default_action {
        Action::Forward { target_group } => Some(target_group),
        _ => None,
    }
}

/// The target groups TCP listeners forward to, each once, in the
/// configuration's order: a group's ring id is its index here.
pub fn ring_names(cfg: &Config) -> Vec<&str> {
    cfg.target_groups
        .iter()
        .map(|g| g.name.as_str())
        .filter(|name| {
            cfg.listeners
                .iter()
                .any(|l| forwarded_group(l) == Some(name))
        })
        .take(MAX_RINGS as usize)
        .collect()
}

/// `RingKey::ring` of ring `id`'s table for one family.
pub fn ring_key(id: u32, v6: bool) -> u32 {
    id * 2 + u32::from(v6)
}

/// One target of a ring: its `TARGETS` row and the weight it has now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingTarget {
    pub row: u32,
    pub addr: SocketAddr,
    pub weight: u32,
}

/// The Maglev table of one family of a group's targets (IPv4 and IPv6 are
/// apart: a flow keeps its family), `None` with no target of weight in it;
/// settled on the table it replaces, if any, so that a change of targets
/// moves no more new-flow choices than it must.
pub fn table(targets: &[RingTarget], v6: bool, previous: Option<&Ring>) -> Option<Box<Ring>> {
    let of_family: Vec<&RingTarget> = targets
        .iter()
        .filter(|t| t.addr.is_ipv6() == v6 && t.weight > 0)
        .collect();
    let entries: Vec<Entry> = of_family
        .iter()
        .map(|t| Entry {
            addr: t.addr,
            weight: t.weight,
        })
        .collect();
    let slots = maglev::table(&entries, RING_SIZE as u32);
    if slots.is_empty() {
        return None;
    }
    let fresh: Vec<u32> = slots.iter().map(|&i| of_family[i as usize].row).collect();
    let rows = match previous {
        Some(p) => {
            let before: Vec<u32> = p.slots.iter().map(|&r| u32::from(r)).collect();
            maglev::settle(&fresh, &before)
        }
        None => fresh,
    };
    let mut ring = Box::<Ring>::default();
    for (slot, &row) in ring.slots.iter_mut().zip(&rows) {
        *slot = row as u16;
    }
    Some(ring)
}

/// A `TARGETS` row for `addr`, translated from `snat` (the balancer's
/// address toward it) unless the client's address is preserved.
pub fn fwd_target(addr: SocketAddr, snat: Option<IpAddr>, preserve: bool, epoch: u32) -> FwdTarget {
    let mut t = FwdTarget {
        port: addr.port(),
        family: if addr.is_ipv4() { 4 } else { 6 },
        flags: if preserve {
            TARGET_PRESERVE_CLIENT_IP
        } else {
            0
        },
        epoch,
        ..FwdTarget::default()
    };
    t.addr = wide(addr.ip());
    if let Some(s) = snat {
        t.snat = wide(s);
    }
    t
}

fn wide(ip: IpAddr) -> [u8; 16] {
    let mut w = [0u8; 16];
    match ip {
        IpAddr::V4(a) => w[..4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => w = a.octets(),
    }
    w
}

/// The address this host sends from toward `target`, as its routes choose
/// it (connecting a UDP socket sends nothing).
pub fn source_toward(target: IpAddr) -> io::Result<IpAddr> {
    let local: SocketAddr = match target {
        IpAddr::V4(_) => ([0, 0, 0, 0], 0).into(),
        IpAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let s = UdpSocket::bind(local)?;
    s.connect((target, 9))?;
    Ok(s.local_addr()?.ip())
}

/// Wakes the kernel's neighbour resolution for `target` (an empty datagram
/// to its discard port): the XDP program cannot resolve a next hop itself,
/// and drops packets until the entry exists.
pub fn warm_neighbour(target: IpAddr) -> io::Result<()> {
    let local: SocketAddr = match target {
        IpAddr::V4(_) => ([0, 0, 0, 0], 0).into(),
        IpAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let s = UdpSocket::bind(local)?;
    s.send_to(&[], (target, 9))?;
    Ok(())
}

const PORT_RANGE: &str = "/proc/sys/net/ipv4/ip_local_port_range";
const RESERVED_PORTS: &str = "/proc/sys/net/ipv4/ip_local_reserved_ports";

/// The source ports full NAT uses: the upper half of this namespace's
/// ephemeral range, reserved (`ip_local_reserved_ports`, which IPv6 obeys
/// too) so that none of the host's own connections (health checks,
/// proxied requests) can take one and meet a translated flow's tuple.
pub fn reserve_translation_ports() -> io::Result<(u16, u16)> {
    let range = std::fs::read_to_string(PORT_RANGE)?;
    let (lo, hi) = parse_range(&range).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{PORT_RANGE}: {range:?}"),
        )
    })?;
    let (lo, hi) = translation_ports(lo, hi);
    let reserved = std::fs::read_to_string(RESERVED_PORTS)?;
    let mine = format!("{lo}-{hi}");
    if !reserved.split(',').any(|r| r.trim() == mine) {
        let joined = match reserved.trim() {
            "" => mine,
            other => format!("{other},{mine}"),
        };
        std::fs::write(RESERVED_PORTS, joined)?;
    }
    Ok((lo, hi))
}

fn parse_range(s: &str) -> Option<(u16, u16)> {
    let mut it = s.split_whitespace().map(str::parse::<u16>);
    let lo = it.next()?.ok()?;
    let hi = it.next()?.ok()?;
    (lo <= hi).then_some((lo, hi))
}

/// The upper half of the ephemeral range `lo..=hi`.
pub fn translation_ports(lo: u16, hi: u16) -> (u16, u16) {
    (hi - (hi - lo) / 2, hi)
}

/// Turns on forwarding on `iface` for both families: the kernel's FIB
/// lookup, which the XDP program asks for the next hop, answers only for
/// packets arriving on an interface that forwards.
pub fn enable_forwarding(iface: &str) -> io::Result<()> {
    for family in ["ipv4", "ipv6"] {
        let path = format!("/proc/sys/net/{family}/conf/{iface}/forwarding");
        match std::fs::read_to_string(&path) {
            Ok(v) if v.trim() == "1" => {}
            Ok(_) => std::fs::write(&path, "1")?,
            // IPv6 off on the interface: nothing to forward there.
            Err(e) if e.kind() == io::ErrorKind::NotFound && family == "ipv6" => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(row: u32, addr: &str, weight: u32) -> RingTarget {
        RingTarget {
            row,
            addr: addr.parse().unwrap(),
            weight,
        }
    }

    #[test]
    fn each_family_gets_its_own_table_of_rows() {
        let targets = [
            t(7, "10.0.0.1:80", 1),
            t(9, "10.0.0.2:80", 1),
            t(3, "[fd00::1]:80", 1),
        ];
        let [v4, v6] = [false, true].map(|v6| table(&targets, v6, None));
        let v4 = v4.unwrap();
        assert!(v4.slots.iter().all(|&r| r == 7 || r == 9));
        assert!(v4.slots.contains(&7) && v4.slots.contains(&9));
        assert!(v6.unwrap().slots.iter().all(|&r| r == 3));
    }

    #[test]
    fn a_family_without_weight_has_no_table() {
        let targets = [t(1, "10.0.0.1:80", 0)];
        let [v4, v6] = [false, true].map(|v6| table(&targets, v6, None));
        assert!(v4.is_none() && v6.is_none());
    }

    #[test]
    fn the_translation_takes_the_upper_half_of_the_ephemeral_range() {
        assert_eq!(translation_ports(32768, 60999), (46884, 60999));
        assert_eq!(translation_ports(1024, 1025), (1025, 1025));
        assert_eq!(parse_range("32768\t60999\n"), Some((32768, 60999)));
        assert_eq!(parse_range("61000 32768"), None);
    }

    #[test]
    fn a_target_row_carries_its_translation() {
        let r = fwd_target(
            "10.0.0.2:8080".parse().unwrap(),
            Some("10.0.0.1".parse().unwrap()),
            false,
            5,
        );
        assert_eq!(&r.addr[..4], &[10, 0, 0, 2]);
        assert_eq!(&r.snat[..4], &[10, 0, 0, 1]);
        assert_eq!((r.port, r.family, r.flags, r.epoch), (8080, 4, 0, 5));
        let p = fwd_target("[fd00::2]:80".parse().unwrap(), None, true, 1);
        assert_eq!((p.family, p.flags), (6, TARGET_PRESERVE_CLIENT_IP));
    }

    #[test]
    fn tcp_listeners_name_the_groups_that_get_rings() {
        let cfg = crate::config::parse_str(
            r#"
[[security_group]]
name = "sg"
ingress = [{ protocol = "tcp", ports = "80-81", source = "0.0.0.0/0" }]

[[target_group]]
name = "web"
protocol = "HTTP"
port = 80

[[target_group]]
name = "unused"
protocol = "TCP"
port = 7001

[[target_group]]
name = "db"
protocol = "TCP"
port = 7000

[[load_balancer]]
name = "lb"
interfaces = ["eth0"]
addresses = ["10.0.0.1"]
security_groups = ["sg"]

[[listener]]
load_balancer = "lb"
protocol = "HTTP"
port = 80
default_action = { type = "forward", target_group = "web" }

[[listener]]
load_balancer = "lb"
protocol = "TCP"
port = 81
default_action = { type = "forward", target_group = "db" }
"#,
            "rings.toml",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let groups: Vec<Option<&str>> = cfg.listeners.iter().map(forwarded_group).collect();
        assert_eq!(groups, [None, Some("db")]);
        assert_eq!(ring_names(&cfg), ["db"]);
    }
}
