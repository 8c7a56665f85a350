//! The XDP program on crafted packets through `BPF_PROG_TEST_RUN`: the real
//! program, verified and loaded by the real kernel, with maps filled from a
//! real configuration. Each case asserts the verdict and the counter reason.

use aya::programs::{TestRun, TestRunOptions};
use lb_common::Reason;
use xalb::kernel::{compile, Datapath, LbSlots};
use xalb_tests::packet::{
    arp_request, Ipv6Ext, Packet, L4, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN,
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

const CONFIG: &str = r#"
[[security_group]]
name = "web"
ingress = [
  { protocol = "tcp", ports = "80", source = "0.0.0.0/0" },
  { protocol = "tcp", ports = "22", source = "10.231.5.0/24" },
  { protocol = "tcp", ports = "8000-8100", source = "10.231.0.0/16" },
  { protocol = "udp", ports = "53", source = "10.231.0.0/16" },
  { protocol = "icmp", source = "10.231.0.0/16" },
  { protocol = "tcp", ports = "443", source = "fd00:231::/64" },
  { protocol = "icmpv6", source = "fd00:231::/64" },
  { protocol = "all", source = "10.231.9.9/32" },
]

[[security_group]]
name = "extra"
ingress = [{ protocol = "tcp", ports = "9000", source = "10.231.7.0/24" }]

[[target_group]]
name = "tg"
protocol = "HTTP"
port = 80

[[load_balancer]]
name = "public"
interfaces = ["lo"]
addresses = ["10.231.0.10", "fd00:231::10"]
security_groups = ["web", "extra"]

[[load_balancer]]
name = "private"
scheme = "internal"
internal_networks = ["10.231.1.0/24", "fd00:231:0:0:1::/80"]
interfaces = ["lo"]
addresses = ["10.231.0.20", "fd00:231::20"]
security_groups = ["web"]

[[listener]]
load_balancer = "public"
protocol = "HTTP"
port = 80
default_action = { type = "forward", target_group = "tg" }
"#;

struct Harness {
    dp: Datapath,
    lbs: Vec<(u32, String)>,
}

impl Harness {
    fn new(config: &str) -> Self {
        xalb_tests::require_root();
        let cfg = xalb::config::parse_str(config, "test.toml").expect("test config is valid");
        let mut dp = Datapath::load().expect("the XDP program loads");
        let slots = LbSlots::for_config(&cfg);
        dp.apply(&compile(&cfg, &slots).unwrap()).unwrap();
        Self {
            dp,
            lbs: slots.rows(),
        }
    }

    fn counters(&self) -> Vec<(Option<String>, Reason, u64)> {
        self.dp
            .maps
            .read_counters(&self.lbs)
            .unwrap()
            .into_iter()
            .map(|r| (r.lb, r.reason, r.packets))
            .collect()
    }

    /// Runs one frame; returns the action and the (balancer, reason) counted.
    fn run(&self, frame: &[u8]) -> (u32, Option<String>, Reason) {
        self.run_on(frame, None)
    }

    /// [`Self::run`] as if the frame came in on interface `ifindex`
    /// (`BPF_PROG_TEST_RUN` says `lo` unless told otherwise).
    fn run_on(&self, frame: &[u8], ifindex: Option<u32>) -> (u32, Option<String>, Reason) {
        let before = self.counters();
        // `struct xdp_md`: data, data_end, data_meta, ingress_ifindex,
        // rx_queue_index, egress_ifindex; the kernel wants data_end to be
        // the frame's length.
        let md: Vec<u8> = [0, frame.len() as u32, 0, ifindex.unwrap_or(0), 0, 0]
            .iter()
            .flat_map(|w| w.to_ne_bytes())
            .collect();
        let opts = TestRunOptions {
            data_in: Some(frame),
            ctx_in: ifindex.map(|_| md.as_slice()),
            repeat: 1,
            ..Default::default()
        };
        let res = self.dp.program().test_run(opts).expect("BPF_PROG_TEST_RUN");
        let after = self.counters();
        let changed: Vec<_> = after
            .iter()
            .zip(&before)
            .filter(|(a, b)| a.2 != b.2)
            .map(|(a, b)| {
                assert_eq!(a.2, b.2 + 1, "one packet counts once");
                (a.0.clone(), a.1)
            })
            .collect();
        assert_eq!(
            changed.len(),
            1,
            "exactly one counter per packet, got {changed:?}"
        );
        let (lb, reason) = changed.into_iter().next().unwrap();
        let expected = if reason.is_drop() { XDP_DROP } else { XDP_PASS };
        assert_eq!(
            res.return_value, expected,
            "action agrees with the reason {reason:?}"
        );
        (res.return_value, lb, reason)
    }

    #[track_caller]
    fn expect(&self, p: &Packet, lb: Option<&str>, reason: Reason) {
        let (_, got_lb, got) = self.run(&p.build());
        assert_eq!((got_lb.as_deref(), got), (lb, reason), "packet {p:?}");
    }

    #[track_caller]
    fn expect_on(&self, ifindex: u32, p: &Packet, lb: Option<&str>, reason: Reason) {
        let (_, got_lb, got) = self.run_on(&p.build(), Some(ifindex));
        assert_eq!(
            (got_lb.as_deref(), got),
            (lb, reason),
            "packet {p:?} on interface {ifindex}"
        );
    }
}

#[test]
fn ipv4_allow_list_ports_ranges_and_union() {
    let h = Harness::new(CONFIG);
    let lb = Some("public");
    let outside = "203.0.113.5";
    h.expect(
        &Packet::tcp(outside, "10.231.0.10", 80),
        lb,
        Reason::PassAllowed,
    );
    h.expect(
        &Packet::tcp(outside, "10.231.0.10", 22),
        lb,
        Reason::DropDenied,
    );
    h.expect(
        &Packet::tcp(outside, "10.231.0.10", 81),
        lb,
        Reason::DropDenied,
    );
    // Union: 10.231.5.0/24 is the longest match, yet port 80 from anywhere and
    // 8000-8100 from the /16 still apply.
    h.expect(
        &Packet::tcp("10.231.5.7", "10.231.0.10", 22),
        lb,
        Reason::PassAllowed,
    );
    h.expect(
        &Packet::tcp("10.231.5.7", "10.231.0.10", 80),
        lb,
        Reason::PassAllowed,
    );
    h.expect(
        &Packet::tcp("10.231.5.7", "10.231.0.10", 8000),
        lb,
        Reason::PassAllowed,
    );
    h.expect(
        &Packet::tcp("10.231.3.3", "10.231.0.10", 22),
        lb,
        Reason::DropDenied,
    );
    // Range edges.
    h.expect(
        &Packet::tcp("10.231.3.3", "10.231.0.10", 8100),
        lb,
        Reason::PassAllowed,
    );
    h.expect(
        &Packet::tcp("10.231.3.3", "10.231.0.10", 8101),
        lb,
        Reason::DropDenied,
    );
    h.expect(
        &Packet::tcp("10.231.3.3", "10.231.0.10", 7999),
        lb,
        Reason::DropDenied,
    );
    // UDP and ICMP are rules of their own protocol only.
    h.expect(
        &Packet::udp("10.231.3.3", "10.231.0.10", 53),
        lb,
        Reason::PassAllowed,
    );
    h.expect(
        &Packet::tcp("10.231.3.3", "10.231.0.10", 53),
        lb,
        Reason::DropDenied,
    );
    h.expect(
        &Packet::udp("10.231.3.3", "10.231.0.10", 54),
        lb,
        Reason::DropDenied,
    );
    h.expect(
        &Packet::udp("10.231.3.3", "10.231.0.10", 80),
        lb,
        Reason::DropDenied,
    );
    h.expect(
        &Packet::new("10.231.3.3", "10.231.0.10", L4::Icmp { ty: 8 }),
        lb,
        Reason::PassAllowed,
    );
    h.expect(
        &Packet::new(outside, "10.231.0.10", L4::Icmp { ty: 8 }),
        lb,
        Reason::DropDenied,
    );
    // protocol "all" from one host: any protocol, any port.
    h.expect(
        &Packet::new("10.231.9.9", "10.231.0.10", L4::Other { proto: 47 }),
        lb,
        Reason::PassAllowed,
    );
    h.expect(
        &Packet::tcp("10.231.9.9", "10.231.0.10", 1),
        lb,
        Reason::PassAllowed,
    );
    h.expect(
        &Packet::new("10.231.3.3", "10.231.0.10", L4::Other { proto: 47 }),
        lb,
        Reason::DropDenied,
    );
    // A second security group adds its rules; the other balancer lacks it.
    h.expect(
        &Packet::tcp("10.231.7.1", "10.231.0.10", 9000),
        lb,
        Reason::PassAllowed,
    );
    h.expect(
        &Packet::tcp("10.231.1.7", "10.231.0.20", 9000),
        Some("private"),
        Reason::DropDenied,
    );
}

#[test]
fn ipv6_rules_extension_headers_and_neighbour_discovery() {
    let h = Harness::new(CONFIG);
    let lb = Some("public");
    h.expect(
        &Packet::tcp("fd00:231::5", "fd00:231::10", 443),
        lb,
        Reason::PassAllowed,
    );
    h.expect(
        &Packet::tcp("fd00:231::5", "fd00:231::10", 444),
        lb,
        Reason::DropDenied,
    );
    // 0.0.0.0/0 covers IPv4 only.
    h.expect(
        &Packet::tcp("2001:db8::1", "fd00:231::10", 80),
        lb,
        Reason::DropDenied,
    );
    h.expect(
        &Packet::new("fd00:231::5", "fd00:231::10", L4::Icmpv6 { ty: 128 }),
        lb,
        Reason::PassAllowed,
    );
    h.expect(
        &Packet::new("2001:db8::1", "fd00:231::10", L4::Icmpv6 { ty: 128 }),
        lb,
        Reason::DropDenied,
    );
    // Neighbour solicitation / advertisement pass whatever the rules, when
    // they come from the link itself (hop limit 255); a routed one is not
    // neighbour discovery and meets the rules.
    for ty in [133, 134, 135, 136, 137] {
        h.expect(
            &Packet::new("fe80::1", "fd00:231::10", L4::Icmpv6 { ty }).hop_limit(255),
            lb,
            Reason::PassNeighbour,
        );
        h.expect(
            &Packet::new("fe80::1", "fd00:231::10", L4::Icmpv6 { ty }).hop_limit(254),
            lb,
            Reason::DropDenied,
        );
    }
    // Extension headers are walked to the real transport header.
    let with_ext = |p: Packet| {
        p.ext(Ipv6Ext::HopByHop)
            .ext(Ipv6Ext::DestOpts)
            .ext(Ipv6Ext::Routing)
    };
    h.expect(
        &with_ext(Packet::tcp("fd00:231::5", "fd00:231::10", 443)),
        lb,
        Reason::PassAllowed,
    );
    h.expect(
        &with_ext(Packet::tcp("fd00:231::5", "fd00:231::10", 22)),
        lb,
        Reason::DropDenied,
    );
    // A chain longer than the parser follows is dropped, never passed.
    let mut long = Packet::tcp("fd00:231::5", "fd00:231::10", 443);
    for _ in 0..9 {
        long = long.ext(Ipv6Ext::DestOpts);
    }
    h.expect(&long, lb, Reason::DropUnparsed);
}

#[test]
fn internal_scheme_drops_outside_sources_first() {
    let h = Harness::new(CONFIG);
    let lb = Some("private");
    h.expect(
        &Packet::tcp("203.0.113.5", "10.231.0.20", 80),
        lb,
        Reason::DropInternal,
    );
    h.expect(
        &Packet::tcp("10.231.9.9", "10.231.0.20", 80),
        lb,
        Reason::DropInternal,
    );
    h.expect(
        &Packet::tcp("10.231.1.5", "10.231.0.20", 80),
        lb,
        Reason::PassAllowed,
    );
    h.expect(
        &Packet::tcp("10.231.1.5", "10.231.0.20", 23),
        lb,
        Reason::DropDenied,
    );
    h.expect(
        &Packet::tcp("fd00:231::1:0:0:5", "fd00:231::20", 443),
        lb,
        Reason::PassAllowed,
    );
    h.expect(
        &Packet::tcp("fd00:231::5", "fd00:231::20", 443),
        lb,
        Reason::DropInternal,
    );
    // Neighbour discovery comes from link-local sources: never dropped.
    h.expect(
        &Packet::new("fe80::1", "fd00:231::20", L4::Icmpv6 { ty: 135 }).hop_limit(255),
        lb,
        Reason::PassNeighbour,
    );
}

#[test]
fn vlan_tagged_frames_get_the_same_verdicts() {
    let h = Harness::new(CONFIG);
    let lb = Some("public");
    h.expect(
        &Packet::tcp("203.0.113.5", "10.231.0.10", 80).vlan(7),
        lb,
        Reason::PassAllowed,
    );
    h.expect(
        &Packet::tcp("203.0.113.5", "10.231.0.10", 22).vlan(7),
        lb,
        Reason::DropDenied,
    );
    h.expect(
        &Packet::tcp("203.0.113.5", "10.231.0.10", 22)
            .vlan(7)
            .vlan(8),
        lb,
        Reason::DropDenied,
    );
    h.expect(
        &Packet::tcp("fd00:231::5", "fd00:231::10", 443)
            .vlan(7)
            .vlan(8),
        lb,
        Reason::PassAllowed,
    );
    // Deeper than the parser looks: dropped, since it could hide anything.
    let deep = Packet::tcp("203.0.113.5", "10.231.0.10", 80)
        .vlan(1)
        .vlan(2)
        .vlan(3);
    h.expect(&deep, None, Reason::DropUnparsed);
}

#[test]
fn fragments_are_never_a_way_around_the_rules() {
    let h = Harness::new(CONFIG);
    let lb = Some("public");
    // First fragment (ports visible) and later fragments alike.
    h.expect(
        &Packet::tcp("203.0.113.5", "10.231.0.10", 80).v4_fragment(true, 0),
        lb,
        Reason::DropFragment,
    );
    h.expect(
        &Packet::tcp("203.0.113.5", "10.231.0.10", 80).v4_fragment(false, 100),
        lb,
        Reason::DropFragment,
    );
    h.expect(
        &Packet::tcp("203.0.113.5", "10.231.0.10", 22).v4_fragment(true, 0),
        lb,
        Reason::DropFragment,
    );
    // A source allowed every protocol and port may fragment.
    h.expect(
        &Packet::tcp("10.231.9.9", "10.231.0.10", 80).v4_fragment(false, 100),
        lb,
        Reason::PassAllowed,
    );
    let v6frag = Packet::tcp("fd00:231::5", "fd00:231::10", 443).ext(Ipv6Ext::Fragment {
        offset: 0,
        more: true,
    });
    h.expect(&v6frag, lb, Reason::DropFragment);
    let v6later = Packet::tcp("fd00:231::5", "fd00:231::10", 443).ext(Ipv6Ext::Fragment {
        offset: 64,
        more: false,
    });
    h.expect(&v6later, lb, Reason::DropFragment);
    // Fragments to other hosts are not ours to judge.
    h.expect(
        &Packet::tcp("203.0.113.5", "10.231.0.99", 22).v4_fragment(true, 0),
        None,
        Reason::PassNotBalancer,
    );
}

#[test]
fn traffic_not_for_a_balancer_and_arp_pass_untouched() {
    let h = Harness::new(CONFIG);
    h.expect(
        &Packet::tcp("203.0.113.5", "10.231.0.99", 22),
        None,
        Reason::PassNotBalancer,
    );
    h.expect(
        &Packet::tcp("2001:db8::1", "fd00:231::99", 22),
        None,
        Reason::PassNotBalancer,
    );
    let (action, lb, reason) = h.run(&arp_request(
        "10.231.0.1".parse().unwrap(),
        "10.231.0.10".parse().unwrap(),
    ));
    assert_eq!((action, lb, reason), (XDP_PASS, None, Reason::PassNonIp));
}

#[test]
fn inconsistent_headers_are_dropped() {
    let h = Harness::new(CONFIG);
    let lb = Some("public");
    let good = Packet::tcp("203.0.113.5", "10.231.0.10", 80).build();
    let ip = 14;
    // IHL below 5.
    let mut f = good.clone();
    f[ip] = 0x44;
    assert_eq!(h.run(&f).2, Reason::DropMalformed);
    // Total length beyond the frame.
    let mut f = good.clone();
    f[ip + 2..ip + 4].copy_from_slice(&1500u16.to_be_bytes());
    assert_eq!(h.run(&f).2, Reason::DropMalformed);
    // Total length shorter than the header.
    let mut f = good.clone();
    f[ip + 2..ip + 4].copy_from_slice(&10u16.to_be_bytes());
    assert_eq!(h.run(&f).2, Reason::DropMalformed);
    // TCP data offset below 5.
    let mut f = good.clone();
    f[ip + 20 + 12] = 0x40;
    assert_eq!(h.run(&f).2, Reason::DropMalformed);
    // IPv6 payload length beyond the frame.
    let mut f = Packet::tcp("fd00:231::5", "fd00:231::10", 443).build();
    f[ip + 4..ip + 6].copy_from_slice(&4000u16.to_be_bytes());
    let (_, got_lb, reason) = h.run(&f);
    assert_eq!((got_lb.as_deref(), reason), (lb, Reason::DropMalformed));
}

/// Every prefix of a valid frame: a frame addressed to a balancer is dropped
/// as malformed once anything is cut; nothing ever passes around the rules.
#[test]
fn every_truncation_is_dropped_or_untouched() {
    let h = Harness::new(CONFIG);
    let frames = [
        (Packet::tcp("203.0.113.5", "10.231.0.10", 80), true),
        (Packet::tcp("203.0.113.5", "10.231.0.10", 22), true),
        (Packet::udp("10.231.3.3", "10.231.0.10", 53).vlan(5), true),
        (
            Packet::tcp("fd00:231::5", "fd00:231::10", 443).ext(Ipv6Ext::HopByHop),
            true,
        ),
        (
            Packet::new("fd00:231::5", "fd00:231::10", L4::Icmpv6 { ty: 128 }),
            true,
        ),
        (Packet::tcp("203.0.113.5", "10.231.0.99", 22), false),
    ];
    for (p, to_balancer) in frames {
        let full = p.build();
        for len in 14..full.len() {
            let (action, _, reason) = h.run(&full[..len]);
            if to_balancer {
                assert_eq!(action, XDP_DROP, "{p:?} cut to {len} bytes: {reason:?}");
                assert!(
                    matches!(reason, Reason::DropMalformed),
                    "{p:?} cut to {len} bytes gave {reason:?}"
                );
            } else {
                assert!(
                    matches!(reason, Reason::PassNotBalancer | Reason::DropMalformed),
                    "{p:?} cut to {len} bytes gave {reason:?}"
                );
            }
        }
    }
}

#[test]
fn a_new_configuration_replaces_the_old_one_whole() {
    let mut h = Harness::new(CONFIG);
    let p = Packet::tcp("203.0.113.5", "10.231.0.10", 22);
    h.expect(&p, Some("public"), Reason::DropDenied);
    let opened = CONFIG.replace(
        r#"{ protocol = "tcp", ports = "80", source = "0.0.0.0/0" },"#,
        r#"{ protocol = "tcp", ports = "22", source = "0.0.0.0/0" },"#,
    );
    let cfg = xalb::config::parse_str(&opened, "test.toml").unwrap();
    let first_bank = h.dp.maps.active_bank();
    h.dp.apply(&compile(&cfg, &LbSlots::for_config(&cfg)).unwrap())
        .unwrap();
    assert_ne!(
        h.dp.maps.active_bank(),
        first_bank,
        "the other bank is now active"
    );
    h.expect(&p, Some("public"), Reason::PassAllowed);
    h.expect(
        &Packet::tcp("203.0.113.5", "10.231.0.10", 80),
        Some("public"),
        Reason::DropDenied,
    );
    // The old bank is emptied: every entry left belongs to the active bank,
    // one per distinct IPv4 source prefix per balancer (public: 4 + 1, private: 4).
    let entries = h.dp.maps.sg_v4_entries();
    assert!(
        entries.iter().all(|e| e.0 == h.dp.maps.active_bank()),
        "{entries:?}"
    );
    assert_eq!(entries.len(), 5 + 4, "{entries:?}");
}

#[test]
fn a_balancer_new_to_a_reload_starts_from_zero_on_a_reused_row() {
    let mut h = Harness::new(CONFIG);
    let denied = Packet::tcp("203.0.113.5", "10.231.0.10", 22);
    h.expect(&denied, Some("public"), Reason::DropDenied);
    let count = |h: &Harness, lb: &str| -> u64 {
        h.counters()
            .iter()
            .filter(|c| c.0.as_deref() == Some(lb))
            .map(|c| c.2)
            .sum()
    };
    let private_before = count(&h, "private");
    let reload = |h: &mut Harness, old: &LbSlots, text: &str| -> LbSlots {
        let cfg = xalb::config::parse_str(text, "test.toml").unwrap();
        let (slots, new_rows) = old.next(cfg.load_balancers.iter().map(|l| l.name.as_str()));
        h.dp.maps.zero_counters(&new_rows).unwrap();
        h.dp.apply(&compile(&cfg, &slots).unwrap()).unwrap();
        h.lbs = slots.rows();
        slots
    };
    // "public" is renamed "edge": a new balancer. public's row may still
    // count public's packets under the old bank, so edge gets another.
    let renamed = CONFIG.replace("\"public\"", "\"edge\"");
    let first = LbSlots::for_config(&xalb::config::parse_str(CONFIG, "test.toml").unwrap());
    let slots = reload(&mut h, &first, &renamed);
    assert_ne!(slots.row("edge"), first.row("public"));
    assert_eq!(slots.row("private"), first.row("private"));
    assert_eq!(count(&h, "edge"), 0);
    h.expect(&denied, Some("edge"), Reason::DropDenied);
    assert_eq!(count(&h, "edge"), 1);
    // One reload later "public" comes back, on its old row, now quiet: its
    // counts start from zero, not from the packet counted before.
    let both = format!(
        "{renamed}\n[[load_balancer]]\nname = \"public\"\ninterfaces = [\"lo\"]\naddresses = [\"10.231.0.30\"]\nsecurity_groups = [\"web\"]\n"
    );
    let slots = reload(&mut h, &slots, &both);
    assert_eq!(slots.row("public"), first.row("public"));
    assert_eq!(
        count(&h, "public"),
        0,
        "the old public's packets are not the new one's"
    );
    assert_eq!(count(&h, "edge"), 1, "edge keeps its counts");
    assert_eq!(
        count(&h, "private"),
        private_before,
        "private keeps its counts"
    );
}

#[test]
fn transport_headers_are_read_within_the_ip_packet_not_its_padding() {
    let h = Harness::new(CONFIG);
    let lb = Some("public");
    let cases = [
        (Packet::tcp("203.0.113.5", "10.231.0.10", 80), 20),
        (Packet::tcp("fd00:231::5", "fd00:231::10", 443), 20),
        (Packet::udp("10.231.3.3", "10.231.0.10", 53), 8),
        (
            Packet::new("10.231.3.3", "10.231.0.10", L4::Icmp { ty: 8 }),
            4,
        ),
    ];
    for (p, header) in cases {
        // The whole header inside the IP length: the rules decide.
        h.expect(&p.clone().ip_length_cut_to(header), lb, Reason::PassAllowed);
        // One byte of it outside, in the frame's trailing padding: the
        // packet is truncated, whatever the padding holds.
        h.expect(&p.ip_length_cut_to(header - 1), lb, Reason::DropMalformed);
    }
}

#[test]
fn a_later_ipv6_fragment_is_payload_not_headers() {
    let h = Harness::new(CONFIG);
    let lb = Some("public");
    // Eight destination-options headers after the fragment header: read as
    // headers they would make the chain too long to follow; in a fragment
    // with a non-zero offset they are payload, and the fragment meets the
    // fragment rule.
    let mut later = Packet::tcp("fd00:231::5", "fd00:231::10", 443).ext(Ipv6Ext::Fragment {
        offset: 8,
        more: false,
    });
    let mut first = Packet::tcp("fd00:231::5", "fd00:231::10", 443).ext(Ipv6Ext::Fragment {
        offset: 0,
        more: true,
    });
    for _ in 0..8 {
        later = later.ext(Ipv6Ext::DestOpts);
        first = first.ext(Ipv6Ext::DestOpts);
    }
    h.expect(&later, lb, Reason::DropFragment);
    h.expect(&first, lb, Reason::DropUnparsed);
}

/// A TCP connection from `local` (port chosen by the kernel) to a listener
/// on `peer`, in the calling thread's namespace: (the listener, the
/// connecting socket, the accepted one).
fn connect(
    local: &str,
    peer: &str,
) -> (
    std::net::TcpListener,
    std::net::TcpStream,
    std::net::TcpStream,
) {
    let local: std::net::IpAddr = local.parse().unwrap();
    let listener = std::net::TcpListener::bind((peer, 0)).unwrap();
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(std::net::SocketAddr::from((local, 0))),
        socket2::Type::STREAM,
        None,
    )
    .unwrap();
    socket
        .bind(&std::net::SocketAddr::from((local, 0)).into())
        .unwrap();
    socket
        .connect(&listener.local_addr().unwrap().into())
        .unwrap();
    let stream: std::net::TcpStream = socket.into();
    let accepted = listener.accept().unwrap().0;
    (listener, stream, accepted)
}

/// A namespace whose loopback holds `addrs` (IPv4 and IPv6, without
/// duplicate address detection): sockets there are what the XDP program's
/// lookups find when it runs from a thread inside it.
fn namespace_with(name: &str, addrs: &[&str]) -> xalb_tests::netns::Netns {
    let ns = xalb_tests::netns::Netns::new(name).unwrap();
    for addr in addrs {
        if addr.contains(':') {
            ns.ip(&["addr", "add", addr, "dev", "lo", "nodad"]).unwrap();
        } else {
            ns.ip(&["addr", "add", addr, "dev", "lo"]).unwrap();
        }
    }
    ns
}

/// The start of the IP packet an ICMP error quotes: its header and the
/// first 8 bytes after it (RFC 792 asks for no more).
fn quote(p: &Packet) -> Vec<u8> {
    let ip = p.ip_bytes();
    let header = if p.src.is_ipv4() { 20 } else { 40 };
    ip[..header + 8].to_vec()
}

#[test]
fn icmp_errors_about_a_connection_of_this_host_pass_as_related() {
    xalb_tests::require_root();
    // A namespace whose loopback holds the balancer's addresses and a peer's,
    // with a connection from the balancer address to the peer: the host's
    // own connection an ICMP error can be about.
    let ns = namespace_with(
        "xdp-related",
        &[
            "10.231.0.10/32",
            "10.231.3.3/32",
            "fd00:231::10/128",
            "fd00:231::3:3/128",
        ],
    );
    ns.run(|| {
        let h = Harness::new(CONFIG);
        let lb = Some("public");
        for (local, peer, router, error_ty, other_ty) in [
            ("10.231.0.10", "10.231.3.3", "198.51.100.1", 3, 8),
            ("fd00:231::10", "fd00:231::3:3", "2001:db8::1", 2, 128),
        ] {
            let (_l, stream, _a) = connect(local, peer);
            let ours = stream.local_addr().unwrap().port();
            let theirs = stream.peer_addr().unwrap().port();
            let sent =
                |sport, dport, src: &str| quote(&Packet::new(src, peer, L4::Tcp { sport, dport }));
            let error = |ty, quoted| Packet::new(router, local, L4::IcmpError { ty, quoted });
            // Fragmentation needed / packet too big about our connection.
            h.expect(
                &error(error_ty, sent(ours, theirs, local)),
                lb,
                Reason::PassRelated,
            );
            // The same from a router the rules do not allow, about a
            // connection the host does not have: denied.
            h.expect(
                &error(error_ty, sent(ours, theirs.wrapping_add(1), local)),
                lb,
                Reason::DropDenied,
            );
            // A quoted packet that did not leave from this balancer address.
            h.expect(
                &error(error_ty, sent(ours, theirs, peer)),
                lb,
                Reason::DropDenied,
            );
            // Not an error message, whatever it carries.
            h.expect(
                &error(other_ty, sent(ours, theirs, local)),
                lb,
                Reason::DropDenied,
            );
            // A quote whose ports are cut short by the IP length is not read.
            let cut = error(error_ty, sent(ours, theirs, local));
            let through_ports = if local.contains(':') { 40 + 4 } else { 20 + 4 };
            h.expect(
                &cut.clone().ip_length_cut_to(8 + through_ports),
                lb,
                Reason::PassRelated,
            );
            h.expect(
                &cut.ip_length_cut_to(8 + through_ports - 1),
                lb,
                Reason::DropDenied,
            );
        }
    })
    .unwrap();
}

/// A frame's verdict, asserted whole: the XDP action, and the balancer and
/// reason it was counted under.
#[track_caller]
fn verdict(h: &Harness, p: &Packet, action: u32, lb: &str, reason: Reason) {
    let (got_action, got_lb, got) = h.run(&p.build());
    assert_eq!(
        (got_action, got_lb.as_deref(), got),
        (action, Some(lb), reason),
        "packet {p:?}"
    );
}

#[test]
fn replies_on_connections_this_host_opened_pass_and_a_syn_never_is_one() {
    xalb_tests::require_root();
    // The balancers' addresses and two outside peers on one loopback: the
    // host's own connections from a balancer address to a peer on a port
    // no rule allows in.
    let ns = namespace_with(
        "xdp-reply",
        &[
            "10.231.0.10/32",
            "10.231.0.20/32",
            "203.0.113.5/32",
            "fd00:231::10/128",
            "fd00:231::20/128",
            "2001:db8::5/128",
        ],
    );
    ns.run(|| {
        let h = Harness::new(CONFIG);
        // (balancer, its address, the peer, what the rules alone say of the
        // peer's packets): port 80 only for public, and the peer is outside
        // private's internal networks.
        for (lb, local, peer, denied) in [
            ("public", "10.231.0.10", "203.0.113.5", Reason::DropDenied),
            ("public", "fd00:231::10", "2001:db8::5", Reason::DropDenied),
            (
                "private",
                "10.231.0.20",
                "203.0.113.5",
                Reason::DropInternal,
            ),
            (
                "private",
                "fd00:231::20",
                "2001:db8::5",
                Reason::DropInternal,
            ),
        ] {
            let (_listener, stream, _accepted) = connect(local, peer);
            let ours = stream.local_addr().unwrap().port();
            let theirs = stream.peer_addr().unwrap().port();
            assert_ne!(ours, 80, "an ephemeral port, which no rule allows");
            // A segment the peer sends to our end of the connection.
            let from_peer = |sport, flags| {
                Packet::new(peer, local, L4::Tcp { sport, dport: ours }).tcp_flags(flags)
            };
            // The peer's segments on the connection: replies, whatever the
            // rules say. A SYN-ACK is one too (it answers a SYN).
            for flags in [
                TCP_ACK,
                TCP_ACK | TCP_PSH,
                TCP_SYN | TCP_ACK,
                TCP_FIN | TCP_ACK,
                TCP_RST,
            ] {
                verdict(
                    &h,
                    &from_peer(theirs, flags),
                    XDP_PASS,
                    lb,
                    Reason::PassReply,
                );
            }
            // A SYN opens a connection, so it is never taken for a reply,
            // not even with the 4-tuple of one the host has.
            verdict(&h, &from_peer(theirs, TCP_SYN), XDP_DROP, lb, denied);
            // The same segments from another port of the peer belong to no
            // connection: the rules decide.
            let elsewhere = if theirs == u16::MAX { 1 } else { theirs + 1 };
            for flags in [TCP_ACK, TCP_SYN | TCP_ACK, TCP_SYN] {
                verdict(&h, &from_peer(elsewhere, flags), XDP_DROP, lb, denied);
            }
        }

        // A listening socket on a balancer address is no connection: an
        // ACK to its port is judged by the rules like any other packet.
        for (local, peer) in [
            ("10.231.0.10", "203.0.113.5"),
            ("fd00:231::10", "2001:db8::5"),
        ] {
            let listener = std::net::TcpListener::bind((local, 0)).unwrap();
            let port = listener.local_addr().unwrap().port();
            let ack = Packet::new(
                peer,
                local,
                L4::Tcp {
                    sport: 40000,
                    dport: port,
                },
            )
            .tcp_flags(TCP_ACK);
            verdict(&h, &ack, XDP_DROP, "public", Reason::DropDenied);
        }

        // UDP: a datagram from the peer a connected socket talks to is a
        // reply; to a socket that is only bound, it is not.
        for (local, peer) in [
            ("10.231.0.10", "203.0.113.5"),
            ("fd00:231::10", "2001:db8::5"),
        ] {
            let theirs = std::net::UdpSocket::bind((peer, 0)).unwrap();
            let connected = std::net::UdpSocket::bind((local, 0)).unwrap();
            connected.connect(theirs.local_addr().unwrap()).unwrap();
            let bound = std::net::UdpSocket::bind((local, 0)).unwrap();
            let datagram = |dport| {
                Packet::new(
                    peer,
                    local,
                    L4::Udp {
                        sport: theirs.local_addr().unwrap().port(),
                        dport,
                    },
                )
            };
            let port = |s: &std::net::UdpSocket| s.local_addr().unwrap().port();
            verdict(
                &h,
                &datagram(port(&connected)),
                XDP_PASS,
                "public",
                Reason::PassReply,
            );
            verdict(
                &h,
                &datagram(port(&bound)),
                XDP_DROP,
                "public",
                Reason::DropDenied,
            );
        }
    })
    .unwrap();
}

#[test]
fn a_swap_under_a_packet_flood_never_lets_a_denied_packet_through() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let mut h = Harness::new(CONFIG);
    // Two configurations that both deny the probe, and differ elsewhere so
    // every swap really rewrites the banks.
    let one = xalb::config::parse_str(CONFIG, "test.toml").unwrap();
    let other = CONFIG.replace("ports = \"9000\"", "ports = \"9001\"");
    let other = xalb::config::parse_str(&other, "test.toml").unwrap();
    let slots = LbSlots::for_config(&one);
    let configs = [
        compile(&one, &slots).unwrap(),
        compile(&other, &slots).unwrap(),
    ];
    let probe = Packet::tcp("203.0.113.5", "10.231.0.10", 9999).build();
    let before = h.counters();
    let prog = h.dp.program().fd().unwrap().try_clone().unwrap();
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let flood = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            use std::os::fd::AsFd;
            let mut runs = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let action = xalb_tests::packet::test_run_raw(prog.as_fd(), &probe, 1000).unwrap();
                assert_eq!(action, XDP_DROP);
                runs += 1000;
            }
            runs
        })
    };
    for i in 0..100 {
        h.dp.apply(&configs[i % 2]).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let runs = flood.join().unwrap();
    let after = h.counters();
    let mut counted = 0;
    for (a, b) in after.iter().zip(&before) {
        let n = a.2 - b.2;
        if n == 0 {
            continue;
        }
        assert_eq!(
            (a.0.as_deref(), a.1),
            (Some("public"), Reason::DropDenied),
            "{n} probes were counted as {:?} {:?}",
            a.0,
            a.1
        );
        counted += n;
    }
    assert!(runs > 0);
    assert_eq!(counted, runs, "every probe counted once, as denied");
}

/// The index of `iface` in the calling thread's namespace.
fn ifindex(iface: &str) -> u32 {
    xalb::kernel::host::if_index(iface).unwrap_or_else(|| panic!("no interface {iface}"))
}

#[test]
fn a_packet_arriving_on_an_interface_of_another_balancer_is_dropped() {
    xalb_tests::require_root();
    let ns = xalb_tests::netns::Netns::new("xdp-iface").unwrap();
    // Two interfaces besides lo (one veth pair, both ends here): "priv0" is
    // the private balancer's, "other0" nobody's.
    ns.ip(&[
        "link", "add", "priv0", "type", "veth", "peer", "name", "other0",
    ])
    .unwrap();
    ns.run(|| {
        let config = CONFIG.replacen(
            "interfaces = [\"lo\"]\naddresses = [\"10.231.0.20\"",
            "interfaces = [\"lo\", \"priv0\"]\naddresses = [\"10.231.0.20\"",
            1,
        );
        assert_ne!(config, CONFIG, "the private balancer lists priv0");
        let mut h = Harness::new(&config);
        let (lo, private, other) = (ifindex("lo"), ifindex("priv0"), ifindex("other0"));
        let to_public = Packet::tcp("203.0.113.5", "10.231.0.10", 80);
        let to_private = Packet::tcp("10.231.1.5", "10.231.0.20", 80);
        let v6 = Packet::tcp("fd00:231::5", "fd00:231::10", 443);
        h.expect_on(lo, &to_public, Some("public"), Reason::PassAllowed);
        h.expect_on(lo, &v6, Some("public"), Reason::PassAllowed);
        // Another balancer's interface, or nobody's: whatever the rules say.
        for iface in [private, other] {
            h.expect_on(
                iface,
                &to_public,
                Some("public"),
                Reason::DropWrongInterface,
            );
            h.expect_on(iface, &v6, Some("public"), Reason::DropWrongInterface);
        }
        h.expect_on(private, &to_private, Some("private"), Reason::PassAllowed);
        h.expect_on(
            other,
            &to_private,
            Some("private"),
            Reason::DropWrongInterface,
        );
        // Not a balancer's address: not the interface check's business.
        h.expect_on(
            other,
            &Packet::tcp("203.0.113.5", "10.231.99.1", 80),
            None,
            Reason::PassNotBalancer,
        );
        // A device holding a balancer's address counts for that balancer
        // (a local client's connection comes in there), from the next
        // bank written.
        ns_addr("other0", "10.231.0.10/32");
        h.expect_on(
            other,
            &to_public,
            Some("public"),
            Reason::DropWrongInterface,
        );
        let cfg = xalb::config::parse_str(&config, "test.toml").unwrap();
        h.dp.apply(&compile(&cfg, &LbSlots::for_config(&cfg)).unwrap())
            .unwrap();
        h.expect_on(other, &to_public, Some("public"), Reason::PassAllowed);
        h.expect_on(other, &v6, Some("public"), Reason::PassAllowed);
        h.expect_on(
            other,
            &to_private,
            Some("private"),
            Reason::DropWrongInterface,
        );
        let bank = h.dp.maps.active_bank();
        let public = h.lbs.iter().find(|(_, n)| n == "public").unwrap().0;
        let private_row = h.lbs.iter().find(|(_, n)| n == "private").unwrap().0;
        let bit = |row: u32| 1u64 << row;
        assert_eq!(
            h.dp.maps.iface_entries(bank),
            [
                (lo, bit(public) | bit(private_row)),
                (private, bit(private_row)),
                (other, bit(public)),
            ]
            .into_iter()
            .collect::<std::collections::BTreeMap<_, _>>()
            .into_iter()
            .collect::<Vec<_>>()
        );
    })
    .unwrap();
}

/// `ip addr add` in the calling thread's namespace (a thread that entered
/// a namespace runs its commands there).
fn ns_addr(iface: &str, cidr: &str) {
    let out = std::process::Command::new("ip")
        .args(["addr", "add", cidr, "dev", iface])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}
