use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use lb_common::{proto, PortRange, SgRules};
use proptest::prelude::*;

use super::{merge_ranges, union_by_prefix, CompileError, SourceRule};

/// The rules as AWS states them: allowed if any rule covers the source and the
/// port. A fragment's port is unknown: allowed only if every port of its
/// protocol is allowed.
fn plain_allows(rules: &[SourceRule], src: IpAddr, p: u8, port: u16, fragment: bool) -> bool {
    let matching: Vec<&SourceRule> = rules.iter().filter(|r| r.source.contains(&src)).collect();
    if matching.iter().any(|r| r.range.proto == proto::ALL) {
        return true;
    }
    let mut ranges: Vec<(u32, u32)> = matching
        .iter()
        .filter(|r| r.range.proto == p)
        .map(|r| (u32::from(r.range.lo), u32::from(r.range.hi)))
        .collect();
    if !fragment {
        return ranges
            .iter()
            .any(|&(lo, hi)| lo <= port as u32 && port as u32 <= hi);
    }
    ranges.sort();
    let mut next = 0u32;
    for (lo, hi) in ranges {
        if lo > next {
            return false;
        }
        next = next.max(hi + 1);
    }
    next > 65535
}

/// What the kernel does: the longest stored prefix's entry, then its ranges.
fn trie_allows(
    entries: &[(IpNet, SgRules)],
    src: IpAddr,
    p: u8,
    port: u16,
    fragment: bool,
) -> bool {
    entries
        .iter()
        .filter(|(net, _)| net.contains(&src))
        .max_by_key(|(net, _)| net.prefix_len())
        .is_some_and(|(_, sg)| sg.allows(p, port, fragment))
}

fn rng(p: u8, lo: u16, hi: u16) -> PortRange {
    PortRange {
        proto: p,
        _pad: 0,
        lo,
        hi,
    }
}

fn rule(src: &str, p: u8, lo: u16, hi: u16) -> SourceRule {
    SourceRule {
        source: src.parse().unwrap(),
        range: rng(p, lo, hi),
    }
}

#[test]
fn longer_prefix_keeps_the_shorter_prefixes_rules() {
    // The pitfall: tcp 22 from 10/8 is the longest match for 10.1.1.1, yet tcp 80
    // from anywhere must still allow it.
    let rules = [
        rule("0.0.0.0/0", proto::TCP, 80, 80),
        rule("10.0.0.0/8", proto::TCP, 22, 22),
    ];
    let entries = union_by_prefix("lb", &rules).unwrap();
    let src: IpAddr = "10.1.1.1".parse().unwrap();
    assert!(trie_allows(&entries, src, proto::TCP, 80, false));
    assert!(trie_allows(&entries, src, proto::TCP, 22, false));
    assert!(!trie_allows(
        &entries,
        "11.1.1.1".parse().unwrap(),
        proto::TCP,
        22,
        false
    ));
}

#[test]
fn ipv6_any_does_not_cover_ipv4() {
    let rules = [rule("::/0", proto::TCP, 80, 80)];
    let entries = union_by_prefix("lb", &rules).unwrap();
    assert!(!trie_allows(
        &entries,
        "10.0.0.1".parse().unwrap(),
        proto::TCP,
        80,
        false
    ));
    assert!(trie_allows(
        &entries,
        "fd00:231::1".parse().unwrap(),
        proto::TCP,
        80,
        false
    ));
}

#[test]
fn merging_joins_adjacent_and_overlapping_ranges() {
    let merged = merge_ranges(vec![
        rng(proto::TCP, 100, 200),
        rng(proto::TCP, 201, 300),
        rng(proto::TCP, 150, 160),
        rng(proto::UDP, 53, 53),
        rng(proto::TCP, 400, 400),
    ]);
    assert_eq!(
        merged,
        vec![
            rng(proto::TCP, 100, 300),
            rng(proto::TCP, 400, 400),
            rng(proto::UDP, 53, 53)
        ]
    );
    assert_eq!(
        merge_ranges(vec![rng(proto::TCP, 1, 2), rng(proto::ALL, 0, 65535)]).len(),
        1
    );
}

#[test]
fn too_many_ranges_is_an_error_naming_the_prefix() {
    let rules: Vec<SourceRule> = (0..40u16)
        .map(|i| rule("10.0.0.0/8", proto::TCP, i * 10, i * 10))
        .collect();
    let err = union_by_prefix("edge", &rules).unwrap_err();
    assert!(matches!(err, CompileError::TooManyRanges { count: 40, .. }));
    assert!(err.to_string().contains("10.0.0.0/8"), "{err}");
}

fn arb_net() -> impl Strategy<Value = IpNet> {
    // Few distinct bits so that random prefixes nest and overlap often.
    prop_oneof![
        (0u8..4, 0u8..4, 0u8..=32).prop_map(|(a, b, len)| {
            IpNet::new(IpAddr::V4(Ipv4Addr::new(10, a, b, 1)), len)
                .unwrap()
                .trunc()
        }),
        (0u16..4, 0u8..=128).prop_map(|(a, len)| {
            IpNet::new(
                IpAddr::V6(Ipv6Addr::new(0xfd00, 0x231, a, 0, 0, 0, 0, 1)),
                len,
            )
            .unwrap()
            .trunc()
        }),
    ]
}

fn arb_rule() -> impl Strategy<Value = SourceRule> {
    let range = prop_oneof![
        (
            prop_oneof![Just(proto::TCP), Just(proto::UDP)],
            0u16..100,
            0u16..100
        )
            .prop_map(|(p, a, b)| rng(p, a.min(b), a.max(b))),
        (prop_oneof![Just(proto::TCP), Just(proto::UDP)], 0u16..2).prop_map(|(p, half)| {
            if half == 0 {
                rng(p, 0, 32767)
            } else {
                rng(p, 32768, 65535)
            }
        }),
        Just(rng(proto::ICMP, 0, 65535)),
        Just(rng(proto::ICMPV6, 0, 65535)),
        Just(rng(proto::ALL, 0, 65535)),
    ];
    (arb_net(), range).prop_map(|(source, range)| SourceRule { source, range })
}

fn arb_src() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        (0u8..4, 0u8..4, any::<u8>()).prop_map(|(a, b, c)| IpAddr::V4(Ipv4Addr::new(10, a, b, c))),
        (0u16..4, any::<u16>())
            .prop_map(|(a, c)| IpAddr::V6(Ipv6Addr::new(0xfd00, 0x231, a, 0, 0, 0, 0, c))),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn compiled_entries_agree_with_the_plain_rules(
        rules in prop::collection::vec(arb_rule(), 0..12),
        packets in prop::collection::vec(
            (arb_src(), prop_oneof![Just(proto::TCP), Just(proto::UDP), Just(proto::ICMP), Just(47u8)],
             0u16..110, any::<bool>()),
            1..40),
    ) {
        let entries = union_by_prefix("lb", &rules).unwrap();
        for (src, p, port, fragment) in packets {
            prop_assert_eq!(
                trie_allows(&entries, src, p, port, fragment),
                plain_allows(&rules, src, p, port, fragment),
                "src {} proto {} port {} fragment {}", src, p, port, fragment
            );
        }
    }
}

#[test]
fn each_listed_interface_carries_the_bits_of_the_balancers_listing_it() {
    let cfg = crate::config::parse_str(
        r#"
[[security_group]]
name = "sg"
ingress = [{ protocol = "tcp", ports = "80", source = "0.0.0.0/0" }]

[[load_balancer]]
name = "a"
interfaces = ["eth0", "eth1"]
addresses = ["10.0.0.10"]
security_groups = ["sg"]

[[load_balancer]]
name = "b"
interfaces = ["eth1"]
addresses = ["10.0.0.20"]
security_groups = ["sg"]
"#,
        "t.toml",
    )
    .unwrap();
    let slots = crate::kernel::LbSlots::for_config(&cfg);
    let (a, b) = (slots.row("a").unwrap(), slots.row("b").unwrap());
    let k = super::compile(&cfg, &slots).unwrap();
    assert_eq!(
        k.iface_names,
        [
            ("eth0".to_string(), lb_common::iface_bit(a)),
            (
                "eth1".to_string(),
                lb_common::iface_bit(a) | lb_common::iface_bit(b)
            ),
        ]
    );
}

/// `groups` TCP listeners (ports 7000 and up), each forwarding to a group of
/// its own with `targets` targets.
fn tcp_listeners(groups: usize, targets: usize) -> crate::config::Config {
    let mut text = String::from(
        r#"
[[security_group]]
name = "sg"
ingress = [{ protocol = "tcp", ports = "7000-8999", source = "0.0.0.0/0" }]

[[load_balancer]]
name = "a"
interfaces = ["eth0"]
addresses = ["10.0.0.10"]
security_groups = ["sg"]
"#,
    );
    for g in 0..groups {
        let list: Vec<String> = (0..targets)
            .map(|t| format!(r#"{{ address = "10.1.{}.{}" }}"#, t / 250, t % 250 + 1))
            .collect();
        text += &format!(
            r#"
[[target_group]]
name = "g{g}"
protocol = "TCP"
port = 9000
targets = [{}]

[[listener]]
load_balancer = "a"
protocol = "TCP"
port = {}
default_action = {{ type = "forward", target_group = "g{g}" }}
"#,
            list.join(", "),
            7000 + g
        );
    }
    crate::config::parse_str(&text, "t.toml").unwrap()
}

#[test]
fn tcp_groups_past_the_kernels_rings_are_refused_not_left_without_one() {
    let fits =
        |cfg: &crate::config::Config| super::compile(cfg, &crate::kernel::LbSlots::for_config(cfg));
    let max = lb_common::MAX_RINGS as usize;
    assert!(fits(&tcp_listeners(max, 1)).is_ok());
    assert!(matches!(
        fits(&tcp_listeners(max + 1, 1)),
        Err(CompileError::TooManyTcpGroups { count, max: m }) if count == max + 1 && m == max
    ));
    // Targets over every TCP group: 4 groups of 256 fill the table.
    let max = lb_common::MAX_TARGETS as usize;
    assert!(fits(&tcp_listeners(4, max / 4)).is_ok());
    assert!(matches!(
        fits(&tcp_listeners(4, max / 4 + 1)),
        Err(CompileError::TooManyTcpTargets { count, max: m }) if count == max + 4 && m == max
    ));
}

#[test]
fn rule_protocols_are_compiled_to_their_ip_protocol_numbers() {
    use crate::config::model::IpProtocol;
    // The kernel compares them with the IP header's protocol field.
    for (p, number) in [
        (IpProtocol::Tcp, 6),
        (IpProtocol::Udp, 17),
        (IpProtocol::Icmp, 1),
        (IpProtocol::Icmpv6, 58),
        (IpProtocol::All, 255),
    ] {
        assert_eq!(super::kernel_proto(p), number, "{p:?}");
    }
}

#[test]
fn a_prefix_may_be_allowed_exactly_as_many_ranges_as_the_kernel_holds() {
    let rules = |n: u16| -> Vec<SourceRule> {
        (0..n)
            .map(|i| rule("10.0.0.0/8", proto::TCP, i * 10, i * 10))
            .collect()
    };
    let max = lb_common::MAX_RANGES as u16;
    let entries = union_by_prefix("edge", &rules(max)).unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].1.count, u32::from(max));
    assert!(matches!(
        union_by_prefix("edge", &rules(max + 1)),
        Err(CompileError::TooManyRanges { count, .. }) if count == usize::from(max) + 1
    ));
}

/// Four balancers: `a` internet-facing with an HTTP and a TCP listener, `b`
/// internal with a TCP and an HTTP listener, `c` internal with an HTTP
/// listener only, `d` internet-facing with none. The TCP listeners forward
/// to `g1` (a) and `g0` (b), with an HTTP group between them in the file.
fn mixed_listeners() -> crate::config::Config {
    crate::config::parse_str(
        r#"
[[security_group]]
name = "sg"
ingress = [{ protocol = "tcp", ports = "1-65535", source = "0.0.0.0/0" }]

[[target_group]]
name = "g0"
protocol = "TCP"
port = 9000
targets = [{ address = "10.1.0.1" }]

[[target_group]]
name = "web"
protocol = "HTTP"
port = 8080
targets = [{ address = "10.1.1.1" }]

[[target_group]]
name = "g1"
protocol = "TCP"
port = 9001
targets = [{ address = "10.1.2.1" }]

[[load_balancer]]
name = "a"
interfaces = ["eth0"]
addresses = ["10.0.0.10"]
security_groups = ["sg"]

[[load_balancer]]
name = "b"
scheme = "internal"
internal_networks = ["10.0.0.0/16"]
interfaces = ["eth0"]
addresses = ["10.0.0.20"]
security_groups = ["sg"]

[[load_balancer]]
name = "c"
scheme = "internal"
internal_networks = ["10.0.0.0/16"]
interfaces = ["eth0"]
addresses = ["10.0.0.30"]
security_groups = ["sg"]

[[load_balancer]]
name = "d"
interfaces = ["eth0"]
addresses = ["10.0.0.40"]
security_groups = ["sg"]

[[listener]]
load_balancer = "a"
protocol = "HTTP"
port = 80
default_action = { type = "forward", target_group = "web" }

[[listener]]
load_balancer = "a"
protocol = "TCP"
port = 7000
default_action = { type = "forward", target_group = "g1" }

[[listener]]
load_balancer = "b"
protocol = "TCP"
port = 80
default_action = { type = "forward", target_group = "g0" }

[[listener]]
load_balancer = "b"
protocol = "HTTP"
port = 8080
default_action = { type = "forward", target_group = "web" }

[[listener]]
load_balancer = "c"
protocol = "HTTP"
port = 81
default_action = { type = "forward", target_group = "web" }
"#,
        "t.toml",
    )
    .unwrap()
}

#[test]
fn each_address_is_flagged_internal_and_tcp_listener_from_its_own_balancer() {
    use lb_common::{LbAddr, LB_FLAG_INTERNAL, LB_FLAG_TCP_LISTENER};
    let cfg = mixed_listeners();
    let slots = crate::kernel::LbSlots::for_config(&cfg);
    let k = super::compile(&cfg, &slots).unwrap();
    let row = |name: &str| slots.row(name).unwrap();
    assert_eq!(
        k.addrs_v4,
        [
            (
                [10, 0, 0, 10],
                LbAddr {
                    lb_id: row("a"),
                    flags: LB_FLAG_TCP_LISTENER
                }
            ),
            (
                [10, 0, 0, 20],
                LbAddr {
                    lb_id: row("b"),
                    flags: LB_FLAG_INTERNAL | LB_FLAG_TCP_LISTENER
                }
            ),
            (
                [10, 0, 0, 30],
                LbAddr {
                    lb_id: row("c"),
                    flags: LB_FLAG_INTERNAL
                }
            ),
            (
                [10, 0, 0, 40],
                LbAddr {
                    lb_id: row("d"),
                    flags: 0
                }
            ),
        ]
    );
}

#[test]
fn steering_sends_http_listeners_to_sockets_and_tcp_listeners_to_their_groups_ring() {
    use lb_common::{ListenerSlots, NO_RING};
    let cfg = mixed_listeners();
    let lbs = crate::kernel::LbSlots::for_config(&cfg);
    let rows = crate::kernel::ListenerRows::default().next(&cfg).0;
    let (a, b, c) = (
        lbs.row("a").unwrap(),
        lbs.row("b").unwrap(),
        lbs.row("c").unwrap(),
    );
    let row = |lb: &str, port: u16| rows.row(lb, port).unwrap();
    // The rings are those of the groups TCP listeners forward to, in the
    // file's order: g0 is ring 0, g1 ring 1 (web has none).
    let want = [
        (a, 80, ListenerSlots::of_row(row("a", 80))),
        (a, 7000, ListenerSlots::forwarded(row("a", 7000), 1)),
        (b, 80, ListenerSlots::forwarded(row("b", 80), 0)),
        (b, 8080, ListenerSlots::of_row(row("b", 8080))),
        (c, 81, ListenerSlots::of_row(row("c", 81))),
    ];
    let mut got = super::steering(&cfg, &lbs, &rows);
    got.sort_by_key(|&(lb, port, _)| (lb, port));
    assert_eq!(got, want);
    for (lb, port, slots) in got {
        let tcp = port == 7000 || (lb == b && port == 80);
        assert_eq!(slots.ring == NO_RING, !tcp, "{lb} {port}");
    }
}
