//! Property: for random rule sets and packets, the real XDP program with the
//! real compiled maps gives the verdict a plain reading of the rules gives.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::programs::{TestRun, TestRunOptions};
use ipnet::IpNet;
use lb_common::{proto, LbAddr, PortRange};
use proptest::prelude::*;
use xalb::kernel::compile::{union_by_prefix, SourceRule};
use xalb::kernel::{Datapath, KernelConfig};
use xalb_tests::packet::{Packet, L4};

const LB_V4: &str = "10.231.0.10";
const LB_V6: &str = "fd00:231::10";

/// AWS's reading: any rule whose source covers the packet's and whose
/// protocol and port range match; a fragment needs every port of its protocol.
fn plain_allows(rules: &[SourceRule], src: IpAddr, p: u8, port: u16, fragment: bool) -> bool {
    let covering = rules.iter().filter(|r| r.source.contains(&src));
    let mut ports = vec![false; 65536];
    for r in covering {
        if r.range.proto == proto::ALL {
            return true;
        }
        if r.range.proto == p {
            for q in r.range.lo..=r.range.hi {
                ports[q as usize] = true;
            }
        }
    }
    if fragment {
        ports.iter().all(|&x| x)
    } else {
        ports[port as usize]
    }
}

fn rng(p: u8, lo: u16, hi: u16) -> PortRange {
    PortRange {
        proto: p,
        _pad: 0,
        lo,
        hi,
    }
}

fn arb_rule() -> impl Strategy<Value = SourceRule> {
    let net = prop_oneof![
        (0u8..4, 0u8..=32).prop_map(|(a, len)| IpNet::new(
            IpAddr::V4(Ipv4Addr::new(10, 231, a, 7)),
            len
        )
        .unwrap()
        .trunc()),
        (0u16..4, 0u8..=128).prop_map(|(a, len)| {
            IpNet::new(
                IpAddr::V6(Ipv6Addr::new(0xfd00, 0x231, 0, 0, 0, 0, a, 7)),
                len,
            )
            .unwrap()
            .trunc()
        }),
    ];
    let range = prop_oneof![
        4 => (prop_oneof![Just(proto::TCP), Just(proto::UDP)], 0u16..64, 0u16..64)
            .prop_map(|(p, a, b)| rng(p, a.min(b), a.max(b))),
        1 => prop_oneof![Just(proto::TCP), Just(proto::UDP)].prop_map(|p| rng(p, 0, 65535)),
        1 => Just(rng(proto::ICMP, 0, 65535)),
        1 => Just(rng(proto::ALL, 0, 65535)),
    ];
    (net, range).prop_map(|(source, range)| SourceRule { source, range })
}

fn arb_packet() -> impl Strategy<Value = (bool, u8, u8, u16, bool)> {
    // (ipv6, address variant, protocol, port, fragment)
    (
        any::<bool>(),
        0u8..4,
        prop_oneof![
            Just(proto::TCP),
            Just(proto::UDP),
            Just(proto::ICMP),
            Just(47u8)
        ],
        0u16..64,
        prop::bool::weighted(0.2),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn kernel_verdicts_match_the_plain_rules(
        rules in prop::collection::vec(arb_rule(), 0..10),
        packets in prop::collection::vec(arb_packet(), 24),
    ) {
        xalb_tests::require_root();
        let mut kcfg = KernelConfig::default();
        kcfg.addrs_v4.push((LB_V4.parse::<Ipv4Addr>().unwrap().octets(), LbAddr { lb_id: 0, flags: 0 }));
        kcfg.addrs_v6.push((LB_V6.parse::<Ipv6Addr>().unwrap().octets(), LbAddr { lb_id: 0, flags: 0 }));
        // The interface BPF_PROG_TEST_RUN says a frame came in on.
        kcfg.iface_names.push(("lo".into(), lb_common::iface_bit(0)));
        for (net, sg) in union_by_prefix("prop", &rules).unwrap() {
            match net {
                IpNet::V4(n) => kcfg.sg_v4.push((0, n, sg)),
                IpNet::V6(n) => kcfg.sg_v6.push((0, n, sg)),
            }
        }
        let mut dp = Datapath::load().unwrap();
        dp.apply(&kcfg).unwrap();
        for (v6, a, p, port, fragment) in packets {
            let (src, dst) = if v6 {
                (IpAddr::V6(Ipv6Addr::new(0xfd00, 0x231, 0, 0, 0, 0, a.into(), 7)), LB_V6)
            } else {
                (IpAddr::V4(Ipv4Addr::new(10, 231, a, 7)), LB_V4)
            };
            // ICMP on IPv6 is ICMPv6: compare like with like.
            let p = if v6 && p == proto::ICMP { proto::ICMPV6 } else { p };
            let l4 = match p {
                proto::TCP => L4::Tcp { sport: 40000, dport: port },
                proto::UDP => L4::Udp { sport: 40000, dport: port },
                proto::ICMP => L4::Icmp { ty: 8 },
                proto::ICMPV6 => L4::Icmpv6 { ty: 128 },
                other => L4::Other { proto: other },
            };
            let mut pkt = Packet::new(&src.to_string(), dst, l4);
            if fragment {
                pkt = if v6 {
                    pkt.ext(xalb_tests::packet::Ipv6Ext::Fragment { offset: 0, more: true })
                } else {
                    pkt.v4_fragment(true, 0)
                };
            }
            let port_seen = if matches!(p, proto::TCP | proto::UDP) { port } else { 0 };
            let expected = plain_allows(&rules, src, p, port_seen, fragment);
            let frame = pkt.build();
            let res = dp.program().test_run(TestRunOptions { data_in: Some(&frame), ..Default::default() }).unwrap();
            // Nothing here is a reply to a local socket, so pass means allowed.
            prop_assert_eq!(res.return_value == 2, expected, "{:?} rules {:?}", pkt, rules);
        }
    }
}
