//! The forwarding path for TCP listeners on crafted frames
//! (`BPF_PROG_TEST_RUN`), byte for byte: a SYN, the target's SYN-ACK and
//! the client's ACK come out translated with checksums a full
//! recomputation agrees with; a denied source makes no flow; a packet of no
//! flow is answered with a well-formed reset. Run in a namespace of the
//! test's own, whose routes and (permanent) neighbours the kernel's FIB
//! lookup answers from.

use std::net::Ipv4Addr;
use std::sync::Arc;

use aya::programs::{TestRun, TestRunOptions};
use lb_common::FwdConfig;
use xalb::daemon::forwarding::Forwarding;
use xalb::kernel::{compile, steering, Datapath, LbSlots, ListenerRows};
use xalb::targets::health;
use xalb::targets::{Groups, TargetGroupRuntime};
use xalb_tests::netns::{addr, veth, Netns};

const XDP_DROP: u32 = 1;
const XDP_TX: u32 = 3;
const XDP_REDIRECT: u32 = 4;

const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;
const FIN: u8 = 0x01;
const PSH: u8 = 0x08;

const CONFIG: &str = r#"
[[security_group]]
name = "tcp"
ingress = [
  { protocol = "tcp", ports = "80", source = "10.231.40.2/32" },
  { protocol = "all", source = "10.231.40.9/32" },
]

[[target_group]]
name = "echo"
protocol = "TCP"
port = 7000
targets = [{ address = "10.231.41.11" }]

[[load_balancer]]
name = "edge"
interfaces = ["eth0", "eth1"]
addresses = ["10.231.40.1"]
security_groups = ["tcp"]

[[listener]]
load_balancer = "edge"
protocol = "TCP"
port = 80
default_action = { type = "forward", target_group = "echo" }
"#;

const LB0_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const LB1_MAC: [u8; 6] = [2, 0, 0, 0, 1, 1];
const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
const TARGET_MAC: [u8; 6] = [2, 0, 0, 0, 1, 0x11];
const MSS: [u8; 4] = [2, 4, 0x05, 0xb4];

fn sum(bytes: &[u8]) -> u32 {
    bytes
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
        .sum()
}

fn finish(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

struct Seg<'a> {
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    flags: u8,
    seq: u32,
    ack: u32,
    options: &'a [u8],
    payload: &'a [u8],
}

/// An Ethernet + IPv4 + TCP frame with both checksums computed in full.
fn frame(s: &Seg<'_>) -> Vec<u8> {
    let tcp_len = 20 + s.options.len() + s.payload.len();
    let mut f = Vec::new();
    f.extend_from_slice(&s.dst_mac);
    f.extend_from_slice(&s.src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&((20 + tcp_len) as u16).to_be_bytes());
    ip.extend_from_slice(&[0x12, 0x34, 0x40, 0x00, 64, 6, 0, 0]);
    ip.extend_from_slice(&s.src.0.octets());
    ip.extend_from_slice(&s.dst.0.octets());
    let c = finish(sum(&ip));
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut tcp = Vec::new();
    tcp.extend_from_slice(&s.src.1.to_be_bytes());
    tcp.extend_from_slice(&s.dst.1.to_be_bytes());
    tcp.extend_from_slice(&s.seq.to_be_bytes());
    tcp.extend_from_slice(&s.ack.to_be_bytes());
    tcp.push((((20 + s.options.len()) / 4) as u8) << 4);
    tcp.push(s.flags);
    tcp.extend_from_slice(&(if s.flags & RST != 0 { 0u16 } else { 64240u16 }).to_be_bytes());
    tcp.extend_from_slice(&[0, 0, 0, 0]);
    tcp.extend_from_slice(s.options);
    tcp.extend_from_slice(s.payload);
    let pseudo = sum(&s.src.0.octets()) + sum(&s.dst.0.octets()) + 6 + tcp_len as u32;
    let c = finish(pseudo + sum(&tcp));
    tcp[16..18].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&tcp);
    f
}

struct Bed {
    dp: Datapath,
    eth0: u32,
    eth1: u32,
}

impl Bed {
    /// Runs `frame` as if it came in on `ifindex`: the action and the frame
    /// as the program left it.
    fn run(&self, frame: &[u8], ifindex: u32) -> (u32, Vec<u8>) {
        // `struct xdp_md`: data, data_end, data_meta, ingress_ifindex, ...
        let md: Vec<u8> = [0, frame.len() as u32, 0, ifindex, 0, 0]
            .iter()
            .flat_map(|w| w.to_ne_bytes())
            .collect();
        let mut out = vec![0u8; 512];
        let res = self
            .dp
            .program()
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ctx_in: Some(&md),
                repeat: 1,
                ..Default::default()
            })
            .expect("BPF_PROG_TEST_RUN");
        out.truncate(res.data_size_out as usize);
        (res.return_value, out)
    }
}

fn ifindex(name: &str) -> u32 {
    let c = std::ffi::CString::new(name).unwrap();
    // SAFETY: a NUL-terminated name.
    unsafe { libc::if_nametoindex(c.as_ptr()) }
}

/// Runs `f` in a namespace of its own where the programs are loaded with
/// [`CONFIG`] as the daemon would write it: eth0 toward the client,
/// eth1 toward the target, permanent neighbours with the MACs above.
fn with_bed(f: impl FnOnce(&mut Bed) + Send + 'static) {
    with_bed_config(CONFIG.to_string(), f)
}

/// [`with_bed`] with another configuration of the same shape.
fn with_bed_config(config: String, f: impl FnOnce(&mut Bed) + Send + 'static) {
    xalb_tests::require_root();
    let lb = Netns::new("xfw").unwrap();
    let peer = Netns::new("xfp").unwrap();
    veth(&lb, "eth0", &peer, "c0").unwrap();
    veth(&lb, "eth1", &peer, "t0").unwrap();
    lb.ip(&["link", "set", "eth0", "address", "02:00:00:00:00:01"])
        .unwrap();
    lb.ip(&["link", "set", "eth1", "address", "02:00:00:00:01:01"])
        .unwrap();
    addr(&lb, "eth0", "10.231.40.1/24").unwrap();
    addr(&lb, "eth1", "10.231.41.1/24").unwrap();
    for (ip, mac, dev) in [
        ("10.231.40.2", "02:00:00:00:00:02", "eth0"),
        ("10.231.40.66", "02:00:00:00:00:66", "eth0"),
        ("10.231.41.11", "02:00:00:00:01:11", "eth1"),
    ] {
        lb.ip(&[
            "neigh",
            "replace",
            ip,
            "lladdr",
            mac,
            "dev",
            dev,
            "nud",
            "permanent",
        ])
        .unwrap();
    }
    lb.run(move || {
        for iface in ["eth0", "eth1"] {
            xalb::kernel::forwarding::enable_forwarding(iface).unwrap();
        }
        let cfg = xalb::config::parse_str(&config, "fwd.toml").unwrap_or_else(|e| panic!("{e}"));
        let slots = LbSlots::for_config(&cfg);
        let (rows, _) = ListenerRows::default().next(&cfg);
        let mut kcfg = compile(&cfg, &slots).unwrap();
        kcfg.listeners = steering(&cfg, &slots, &rows);
        let groups: Groups = cfg
            .target_groups
            .iter()
            .map(|g| (g.name.clone(), Arc::new(TargetGroupRuntime::new(g))))
            .collect();
        health::refresh_usable(&groups["echo"]);
        let mut dp = Datapath::load().expect("the programs load");
        let mut fw = Forwarding::default();
        kcfg.rings = fw.prepare(&cfg, &groups, &[], &mut dp.maps).unwrap();
        dp.apply(&kcfg).unwrap();
        let mut bed = Bed {
            dp,
            eth0: ifindex("eth0"),
            eth1: ifindex("eth1"),
        };
        f(&mut bed);
    })
    .unwrap();
    drop(peer);
}

#[test]
fn a_flow_is_translated_both_ways_with_exact_checksums() {
    with_bed(|bed| {
        let (lb0, lb1) = (Ipv4Addr::new(10, 231, 40, 1), Ipv4Addr::new(10, 231, 41, 1));
        let client = (Ipv4Addr::new(10, 231, 40, 2), 40000);
        let target = (Ipv4Addr::new(10, 231, 41, 11), 7000);

        // The SYN goes to the target, from the balancer's address and a
        // translation port; the rest is as the client sent it.
        let syn = frame(&Seg {
            src_mac: CLIENT_MAC,
            dst_mac: LB0_MAC,
            src: client,
            dst: (lb0, 80),
            flags: SYN,
            seq: 1000,
            ack: 0,
            options: &MSS,
            payload: &[],
        });
        let (action, out) = bed.run(&syn, bed.eth0);
        assert_eq!(action, XDP_REDIRECT, "{out:02x?}");
        let port = u16::from_be_bytes([out[34], out[35]]);
        let (lo, hi) = xalb::kernel::forwarding::translation_ports(32768, 60999);
        assert!((lo..=hi).contains(&port), "translation port {port}");
        let want = frame(&Seg {
            src_mac: LB1_MAC,
            dst_mac: TARGET_MAC,
            src: (lb1, port),
            dst: target,
            flags: SYN,
            seq: 1000,
            ack: 0,
            options: &MSS,
            payload: &[],
        });
        assert_eq!(out, want, "the SYN toward the target");
        assert_eq!(
            bed.dp.maps.flow_entries(),
            (0, 2),
            "a handshake's two entries"
        );

        // The target's SYN-ACK goes back to the client from the listener.
        let syn_ack = frame(&Seg {
            src_mac: TARGET_MAC,
            dst_mac: LB1_MAC,
            src: target,
            dst: (lb1, port),
            flags: SYN | ACK,
            seq: 5000,
            ack: 1001,
            options: &MSS,
            payload: &[],
        });
        let (action, out) = bed.run(&syn_ack, bed.eth1);
        assert_eq!(action, XDP_REDIRECT);
        let want = frame(&Seg {
            src_mac: LB0_MAC,
            dst_mac: CLIENT_MAC,
            src: (lb0, 80),
            dst: client,
            flags: SYN | ACK,
            seq: 5000,
            ack: 1001,
            options: &MSS,
            payload: &[],
        });
        assert_eq!(out, want, "the SYN-ACK toward the client");

        // The client's ACK, with data, completes the handshake: the flow
        // is established.
        let data = frame(&Seg {
            src_mac: CLIENT_MAC,
            dst_mac: LB0_MAC,
            src: client,
            dst: (lb0, 80),
            flags: ACK | PSH,
            seq: 1001,
            ack: 5001,
            options: &[],
            payload: b"hello, target",
        });
        let (action, out) = bed.run(&data, bed.eth0);
        assert_eq!(action, XDP_REDIRECT);
        let want = frame(&Seg {
            src_mac: LB1_MAC,
            dst_mac: TARGET_MAC,
            src: (lb1, port),
            dst: target,
            flags: ACK | PSH,
            seq: 1001,
            ack: 5001,
            options: &[],
            payload: b"hello, target",
        });
        assert_eq!(out, want, "the data toward the target");
        assert_eq!(bed.dp.maps.flow_entries(), (2, 0), "established");

        // A source the security groups deny: dropped, no flow.
        let denied = frame(&Seg {
            src: (Ipv4Addr::new(10, 231, 40, 66), 40000),
            ..Seg {
                src_mac: [2, 0, 0, 0, 0, 0x66],
                dst_mac: LB0_MAC,
                src: client,
                dst: (lb0, 80),
                flags: SYN,
                seq: 1,
                ack: 0,
                options: &MSS,
                payload: &[],
            }
        });
        assert_eq!(bed.run(&denied, bed.eth0).0, XDP_DROP);
        assert_eq!(bed.dp.maps.flow_entries(), (2, 0), "no flow for it");

        // A packet of no flow is answered, where it came from, with a
        // reset whose sequence number is what the packet acknowledged.
        let stray = frame(&Seg {
            src: (client.0, 40001),
            flags: ACK | PSH,
            seq: 777,
            ack: 9999,
            payload: b"late",
            ..Seg {
                src_mac: CLIENT_MAC,
                dst_mac: LB0_MAC,
                src: client,
                dst: (lb0, 80),
                flags: 0,
                seq: 0,
                ack: 0,
                options: &[],
                payload: &[],
            }
        });
        let (action, out) = bed.run(&stray, bed.eth0);
        assert_eq!(action, XDP_TX);
        let mut want = frame(&Seg {
            src_mac: LB0_MAC,
            dst_mac: CLIENT_MAC,
            src: (lb0, 80),
            dst: (client.0, 40001),
            flags: RST,
            seq: 9999,
            ack: 0,
            options: &[],
            payload: &[],
        });
        // The reset is built from scratch: IP identification 0.
        want[18..20].copy_from_slice(&[0, 0]);
        want[24..26].copy_from_slice(&[0, 0]);
        let c = finish(sum(&want[14..34]));
        want[24..26].copy_from_slice(&c.to_be_bytes());
        assert_eq!(out, want, "the reset");
        assert_eq!(bed.dp.maps.flow_entries(), (2, 0), "no flow for it");
    });
}

/// A client's segment to the listener from port `sport`.
fn from_client(sport: u16, flags: u8, seq: u32, ack: u32) -> Vec<u8> {
    frame(&Seg {
        src_mac: CLIENT_MAC,
        dst_mac: LB0_MAC,
        src: (Ipv4Addr::new(10, 231, 40, 2), sport),
        dst: (Ipv4Addr::new(10, 231, 40, 1), 80),
        flags,
        seq,
        ack,
        options: &[],
        payload: &[],
    })
}

/// The client's flow from port 40000 through its handshake (the target
/// answering to `seen_as`, what the target sees of the client), checked
/// at each step and established at the end.
fn establish(bed: &Bed, seen_as: (Ipv4Addr, u16)) {
    assert_eq!(
        bed.run(&from_client(40000, SYN, 1000, 0), bed.eth0).0,
        XDP_REDIRECT
    );
    let syn_ack = frame(&Seg {
        src_mac: TARGET_MAC,
        dst_mac: LB1_MAC,
        src: (Ipv4Addr::new(10, 231, 41, 11), 7000),
        dst: seen_as,
        flags: SYN | ACK,
        seq: 5000,
        ack: 1001,
        options: &[],
        payload: &[],
    });
    assert_eq!(bed.run(&syn_ack, bed.eth1).0, XDP_REDIRECT);
    assert_eq!(
        bed.run(&from_client(40000, ACK, 1001, 5001), bed.eth0).0,
        XDP_REDIRECT
    );
    assert_eq!(bed.dp.maps.flow_entries(), (2, 0));
}

/// Sends a SYN from `sport` until it is forwarded (up to 30 s): how long
/// a taken translation took to be given up. The translation port it got.
fn syn_until_forwarded(bed: &Bed, sport: u16) -> u16 {
    let started = std::time::Instant::now();
    loop {
        let (action, out) = bed.run(&from_client(sport, SYN, 1, 0), bed.eth0);
        if action == XDP_REDIRECT {
            return u16::from_be_bytes([out[34], out[35]]);
        }
        assert_eq!(action, XDP_DROP);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "the SYN from {sport} was never forwarded"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn a_closed_or_abandoned_flow_gives_up_its_translation_and_a_live_one_does_not() {
    with_bed(|bed| {
        // One translation port only: flows compete for it.
        bed.dp
            .maps
            .set_fwd_config(&FwdConfig {
                enabled: 1,
                port_lo: 50000,
                port_hi: 50000,
            })
            .unwrap();
        // Flow A, established.
        establish(bed, (Ipv4Addr::new(10, 231, 41, 1), 50000));
        // A live flow keeps its port: another client's SYN finds none.
        assert_eq!(
            bed.run(&from_client(40001, SYN, 1, 0), bed.eth0).0,
            XDP_DROP
        );
        // A closes: once quiet for about two seconds, B takes its port,
        // and A's entries go.
        assert_eq!(
            bed.run(&from_client(40000, FIN | ACK, 1001, 5001), bed.eth0)
                .0,
            XDP_REDIRECT
        );
        assert_eq!(
            bed.run(&from_client(40001, SYN, 1, 0), bed.eth0).0,
            XDP_DROP,
            "not at once"
        );
        assert_eq!(syn_until_forwarded(bed, 40001), 50000);
        assert_eq!(bed.dp.maps.flow_entries(), (0, 2), "A gone, B half-open");
        // B never completes its handshake: C takes the port after about
        // nine seconds.
        assert_eq!(
            bed.run(&from_client(40002, SYN, 1, 0), bed.eth0).0,
            XDP_DROP,
            "not at once"
        );
        assert_eq!(syn_until_forwarded(bed, 40002), 50000);
        assert_eq!(bed.dp.maps.flow_entries(), (0, 2), "B gone, C half-open");
    });
}

#[test]
fn a_fragment_to_a_tcp_listener_is_dropped_even_from_a_source_allowed_everything() {
    with_bed(|bed| {
        // 10.231.40.9 may send anything, fragments included, to an HTTP
        // listener; a fragment cannot be translated, so to a TCP listener
        // it is dropped, while the same source's SYN is forwarded.
        let first = xalb_tests::packet::Packet::tcp("10.231.40.9", "10.231.40.1", 80)
            .v4_fragment(true, 0)
            .build();
        assert_eq!(bed.run(&first, bed.eth0).0, XDP_DROP);
        let later = xalb_tests::packet::Packet::tcp("10.231.40.9", "10.231.40.1", 80)
            .v4_fragment(false, 100)
            .build();
        assert_eq!(bed.run(&later, bed.eth0).0, XDP_DROP);
        assert_eq!(bed.dp.maps.flow_entries(), (0, 0));
        let syn = xalb_tests::packet::Packet::tcp("10.231.40.9", "10.231.40.1", 80).build();
        assert_eq!(bed.run(&syn, bed.eth0).0, XDP_REDIRECT);
    });
}

/// [`CONFIG`] with the client's address preserved.
fn preserving() -> String {
    CONFIG.replace("port = 7000\n", "port = 7000\npreserve_client_ip = true\n")
}

#[test]
fn a_syn_flood_does_not_evict_an_established_flow() {
    // With the client's address preserved no port runs out, so a flood
    // fills the handshake table (2^16 entries, two per SYN) many times.
    with_bed_config(preserving(), |bed| {
        let target = (Ipv4Addr::new(10, 231, 41, 11), 7000);
        let client = (Ipv4Addr::new(10, 231, 40, 2), 40000);
        establish(bed, client);
        let mut forwarded = 0u32;
        for source in [2u8, 9] {
            for sport in 1024..=65535u16 {
                if source == 2 && sport == 40000 {
                    continue;
                }
                let syn = frame(&Seg {
                    src: (Ipv4Addr::new(10, 231, 40, source), sport),
                    ..Seg {
                        src_mac: CLIENT_MAC,
                        dst_mac: LB0_MAC,
                        src: client,
                        dst: (Ipv4Addr::new(10, 231, 40, 1), 80),
                        flags: SYN,
                        seq: 1,
                        ack: 0,
                        options: &[],
                        payload: &[],
                    }
                });
                forwarded += u32::from(bed.run(&syn, bed.eth0).0 == XDP_REDIRECT);
            }
        }
        // Every SYN began a handshake (the oldest evicted to make room) ...
        assert_eq!(forwarded, 2 * 64_512 - 1);
        let (established, handshakes) = bed.dp.maps.flow_entries();
        assert!(
            handshakes <= lb_common::NEW_FLOW_TABLE_SIZE as usize,
            "{handshakes}"
        );
        // ... and the established flow is still there and forwarded.
        assert_eq!(established, 2, "the established flow's entries");
        let (action, out) = bed.run(&from_client(40000, ACK | PSH, 1001, 5001), bed.eth0);
        assert_eq!(action, XDP_REDIRECT);
        assert_eq!(&out[30..34], &target.0.octets(), "to its target");
    });
}
