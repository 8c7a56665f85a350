//! xalb's XDP program: security groups enforced per packet, before the stack.
//!
//! Per packet: parse L2/L3/L4 without trusting any length field; pass what is
//! not addressed to a balancer address; for a balancer address apply, in order,
//! neighbour discovery (pass), the internal scheme, fragments, the security
//! groups, and finally the stateful check (replies to connections this host
//! opened). Every verdict is counted by reason and balancer.
//!
//! Headers are read through `network-types` structures. Once the L3 header is
//! parsed, both families share one tail (transport header, source lookups,
//! rules, verdict log), generic over what differs: address size and maps.
//!
//! Map layouts live in `lb-common`; the daemon fills the inactive bank and flips
//! `ACTIVE_BANK`, so one packet always sees one whole configuration.
//!
//! A second program, `xalb_steer` (sk_lookup), runs where the stack looks for
//! the listening socket of a new connection: for a balancer address and a
//! listener port it picks the listener's sockets from `SOCKS`, whatever
//! address they are bound to. The daemon binds nothing to balancer addresses.
//!
//! Both programs check the interface a packet to a balancer address came in
//! on (`LB_IFACES`): Linux accepts any local address on any interface, so
//! without it a second NIC, a VLAN or a tunnel without XDP would reach the
//! balancer's sockets unchecked. sk_lookup is the hook that sees every
//! interface, for every TCP SYN and unconnected UDP datagram to a local
//! address; XDP checks it too, for one balancer's packets arriving on
//! another balancer's interface.
#![no_std]
#![no_main]

use core::ffi::c_void;
use core::mem::size_of;

use aya_ebpf::{
    bindings::{bpf_sock, bpf_sock_tuple, sk_action, xdp_action, BPF_F_CURRENT_NETNS},
    helpers::generated::{
        bpf_map_lookup_elem, bpf_sk_lookup_tcp, bpf_sk_lookup_udp, bpf_sk_release,
    },
    macros::{map, sk_lookup, xdp},
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, PerCpuArray, SockMap},
    programs::{SkLookupContext, XdpContext},
    Global,
};
use aya_log_ebpf::info;
use lb_common::{
    counter_index, iface_bit, proto, trie_id, AddrKeyV4, AddrKeyV6, Counter, IfaceKey, LbAddr,
    ListenerCounter, ListenerKey, ListenerSlots, Reason, SgRules, SrcKeyV4, SrcKeyV6,
    VerdictRecord, LB_FLAG_INTERNAL, LB_FLAG_TCP_LISTENER, LB_ID_BITS, MAX_ADDRS, MAX_IFACES,
    MAX_LISTENERS, MAX_PREFIXES, MAX_SOCKS, NO_LB, NUM_COUNTERS,
};
use network_types::{
    eth::{EthHdr, EtherType},
    ip::{IpProto, Ipv4Hdr, Ipv6Hdr},
    tcp::TcpHdr,
    udp::UdpHdr,
    vlan::VlanHdr,
};

/// The verdict log switch (`lb_common::XDP_LOG_GLOBAL`), set by the loader.
/// Read-only: when it is 0 the verifier removes the logging branch.
#[unsafe(no_mangle)]
static XDP_LOG: Global<u8> = Global::new(0);

#[map(name = "ACTIVE_BANK")]
static ACTIVE_BANK: Array<u32> = Array::with_max_entries(1, 0);

#[map(name = "LB_ADDRS_V4")]
static LB_ADDRS_V4: HashMap<AddrKeyV4, LbAddr> = HashMap::with_max_entries(MAX_ADDRS * 2, 0);

#[map(name = "LB_ADDRS_V6")]
static LB_ADDRS_V6: HashMap<AddrKeyV6, LbAddr> = HashMap::with_max_entries(MAX_ADDRS * 2, 0);

#[map(name = "INTERNAL_V4")]
static INTERNAL_V4: LpmTrie<SrcKeyV4, u8> = LpmTrie::with_max_entries(MAX_PREFIXES * 2, 0);

#[map(name = "INTERNAL_V6")]
static INTERNAL_V6: LpmTrie<SrcKeyV6, u8> = LpmTrie::with_max_entries(MAX_PREFIXES * 2, 0);

#[map(name = "SG_V4")]
static SG_V4: LpmTrie<SrcKeyV4, SgRules> = LpmTrie::with_max_entries(MAX_PREFIXES * 2, 0);

#[map(name = "SG_V6")]
static SG_V6: LpmTrie<SrcKeyV6, SgRules> = LpmTrie::with_max_entries(MAX_PREFIXES * 2, 0);

#[map(name = "COUNTERS")]
static COUNTERS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(NUM_COUNTERS, 0);

/// (bank, balancer, port, protocol) → the listener's counter row and socket
/// slots.
#[map(name = "LISTENERS")]
static LISTENERS: HashMap<ListenerKey, ListenerSlots> =
    HashMap::with_max_entries(MAX_LISTENERS * 2, 0);

/// One listening socket per (listener, family): one member of the group the
/// daemon's workers bound with SO_REUSEPORT; the kernel picks within the
/// group. A socket leaves its slot by itself when it closes.
#[map(name = "SOCKS")]
static SOCKS: SockMap = SockMap::with_max_entries(MAX_SOCKS, 0);

#[map(name = "LISTENER_COUNTERS")]
static LISTENER_COUNTERS: PerCpuArray<ListenerCounter> =
    PerCpuArray::with_max_entries(MAX_LISTENERS, 0);

/// Non-zero on this CPU while the XDP program looks a socket up: the lookup
/// runs `xalb_steer` too, which must not count (or steer) it.
#[map(name = "XDP_PROBING")]
static XDP_PROBING: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// (bank, interface index) → the balancer rows (bit set) whose addresses
/// may be reached through that interface.
#[map(name = "LB_IFACES")]
static LB_IFACES: HashMap<IfaceKey, u64> = HashMap::with_max_entries(MAX_IFACES * 2, 0);

// Ether types as `EthHdr::ether_type` holds them (network byte order).
const ETH_P_IP: u16 = EtherType::Ipv4 as u16;
const ETH_P_IPV6: u16 = EtherType::Ipv6 as u16;
const ETH_P_8021Q: u16 = EtherType::Ieee8021q as u16;
const ETH_P_8021AD: u16 = EtherType::Ieee8021ad as u16;
/// VLAN tags followed (QinQ is two).
const MAX_VLAN_TAGS: usize = 2;
/// IPv6 extension headers followed before giving up (and dropping).
const MAX_EXT_HEADERS: usize = 8;
/// Transport headers further into the packet than this are not parsed
/// (dropped as unparsed); keeps every offset bounded for the verifier.
const MAX_L4_OFFSET: usize = 1024;
const BPF_TCP_LISTEN: u32 = 10;
const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;
/// `bpf_sk_assign` refused: an earlier sk_lookup program chose a socket.
const EEXIST: i32 = 17;
/// The slot holds no socket.
const ENOENT: i32 = 2;
/// More-fragments, in `Ipv4Hdr::frag_flags`.
const IP_MF: u8 = 1;

mod forward;

/// What becomes of a packet: the reason it is counted under (in balancer
/// row `slot`) and the action taken.
pub struct Verdict {
    slot: u32,
    reason: Reason,
    action: u32,
}

impl Verdict {
    /// Drop or pass, as the reason says.
    #[inline(always)]
    fn of(slot: u32, reason: Reason) -> Self {
        let action = if reason.is_drop() {
            xdp_action::XDP_DROP
        } else {
            xdp_action::XDP_PASS
        };
        Self::new(slot, reason, action)
    }

    #[inline(always)]
    fn new(slot: u32, reason: Reason, action: u32) -> Self {
        Self {
            slot,
            reason,
            action,
        }
    }
}

#[xdp]
pub fn xalb_xdp(ctx: XdpContext) -> u32 {
    // The length before a reset may trim the frame.
    let len = (ctx.data_end() - ctx.data()) as u64;
    let v = classify(&ctx);
    count(v.slot, v.reason, len);
    v.action
}

#[inline(always)]
fn count(slot: u32, reason: Reason, bytes: u64) {
    if let Some(c) = COUNTERS.get_ptr_mut(counter_index(slot, reason)) {
        // Per-CPU slot: no other writer.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
}

/// A bounds-checked pointer to a `T` at `off` bytes into the packet.
#[inline(always)]
fn ptr_at<T>(ctx: &XdpContext, off: usize) -> Option<*const T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + off + size_of::<T>() > end {
        return None;
    }
    Some((start + off) as *const T)
}

/// A copy of the `T` at `off`; each header is copied in one bounds-checked
/// read: separate reads let the compiler merge the checks in ways the
/// verifier cannot follow.
#[inline(always)]
fn read<T: Copy>(ctx: &XdpContext, off: usize) -> Option<T> {
    ptr_at::<T>(ctx, off).map(|p| unsafe { p.read_unaligned() })
}

fn classify(ctx: &XdpContext) -> Verdict {
    let Some(eth) = read::<EthHdr>(ctx, 0) else {
        return Verdict::of(NO_LB, Reason::DropMalformed);
    };
    let mut ethertype = eth.ether_type;
    let mut off = EthHdr::LEN;
    for _ in 0..MAX_VLAN_TAGS {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        let Some(tag) = read::<VlanHdr>(ctx, off) else {
            return Verdict::of(NO_LB, Reason::DropMalformed);
        };
        ethertype = tag.ether_type;
        off += VlanHdr::LEN;
    }
    match ethertype {
        ETH_P_IP => ipv4(ctx, off),
        ETH_P_IPV6 => ipv6(ctx, off),
        // Too many VLAN tags to see what is inside: it could be IP to a balancer.
        ETH_P_8021Q | ETH_P_8021AD => Verdict::of(NO_LB, Reason::DropUnparsed),
        _ => Verdict::of(NO_LB, Reason::PassNonIp),
    }
}

#[inline(always)]
fn active_bank() -> u32 {
    ACTIVE_BANK.get(0).copied().unwrap_or(0)
}

/// Whether balancer row `lb_id`'s addresses may be reached through interface
/// `ifindex`: one it lists in `interfaces`, or one holding its addresses.
#[inline(always)]
fn on_its_interface(bank: u32, lb_id: u32, ifindex: u32) -> bool {
    let key = IfaceKey { bank, ifindex };
    unsafe { LB_IFACES.get(&key) }.is_some_and(|mask| mask & iface_bit(lb_id) != 0)
}

/// What the rules (and the verdict log) need of a packet, whatever its family.
#[derive(Default)]
struct Flow {
    proto: u8,
    /// Destination port for TCP/UDP, 0 otherwise.
    dport: u16,
    sport: u16,
    /// A fragment (first or later): ports cannot be trusted or are absent.
    fragment: bool,
    /// A TCP SYN without ACK opens a connection: it is never a reply, so
    /// the socket lookup can be skipped when no rule allows it.
    opens: bool,
    /// IPv6 hop limit (0 for IPv4): neighbour discovery must carry 255.
    hop_limit: u8,
}

/// Where the transport header starts, and where the IP packet ends: headers
/// are read within the packet's own length, never in trailing padding.
#[derive(Clone, Copy)]
struct L4 {
    /// The IP header's offset.
    l3: usize,
    off: usize,
    end: usize,
    /// IPv4 options or IPv6 extension headers before the transport header.
    extended: bool,
}

/// A copy of the `T` at `off` if it lies within the IP packet ending at
/// `end` (and, for the verifier, within the frame).
#[inline(always)]
fn read_within<T: Copy>(ctx: &XdpContext, off: usize, end: usize) -> Option<T> {
    if off + size_of::<T>() > end {
        return None;
    }
    read::<T>(ctx, off)
}

/// Reads what the rules need of the transport header into `flow`; returns
/// the ICMP type (0 for other protocols), `None` if truncated.
#[inline(always)]
fn transport(ctx: &XdpContext, l4: L4, flow: &mut Flow) -> Option<u8> {
    let (off, end) = (l4.off, l4.end);
    match flow.proto {
        proto::TCP => {
            let h = read_within::<TcpHdr>(ctx, off, end)?;
            // The data offset must at least cover the fixed header.
            if h.doff() < 5 {
                return None;
            }
            flow.sport = u16::from_be_bytes(h.source);
            flow.dport = u16::from_be_bytes(h.dest);
            flow.opens = h.syn() != 0 && h.ack() == 0;
            Some(0)
        }
        proto::UDP => {
            let h = read_within::<UdpHdr>(ctx, off, end)?;
            flow.sport = h.src_port();
            flow.dport = h.dst_port();
            Some(0)
        }
        proto::ICMP | proto::ICMPV6 => {
            // Type, code and checksum: all an ICMP message must have (the
            // `network-types` ICMP headers add the four bytes after them).
            let h = read_within::<[u8; 4]>(ctx, off, end)?;
            Some(h[0])
        }
        _ => Some(0),
    }
}

/// The 5-tuple as `bpf_sk_lookup_*` wants it: `struct bpf_sock_tuple`'s
/// IPv4 or IPv6 half, by the address type `A`.
#[repr(C)]
struct Tuple<A> {
    saddr: A,
    daddr: A,
    sport: [u8; 2],
    dport: [u8; 2],
}

/// Whether this packet belongs to a connection of a local socket that is not a
/// listener: a reply to something this host opened (or a flow the rules let in
/// before). A listening or unconnected socket never counts, so this cannot open
/// a listener port.
#[inline(always)]
fn is_reply(ctx: &XdpContext, tuple: *mut bpf_sock_tuple, size: u32, proto: u8) -> bool {
    let netns = BPF_F_CURRENT_NETNS as u64;
    let ctx_ptr = ctx.ctx as *mut _;
    unsafe {
        // The lookup runs the namespace's sk_lookup programs, synchronously
        // on this CPU: `xalb_steer` sees the flag and stays out of it.
        set_probing(1);
        let sk: *mut bpf_sock = match proto {
            proto::TCP => bpf_sk_lookup_tcp(ctx_ptr, tuple, size, netns, 0),
            proto::UDP => bpf_sk_lookup_udp(ctx_ptr, tuple, size, netns, 0),
            _ => core::ptr::null_mut(),
        };
        set_probing(0);
        if sk.is_null() {
            return false;
        }
        let connected = if proto == proto::TCP {
            (*sk).state != BPF_TCP_LISTEN
        } else {
            // A connected UDP socket has a remote port; a bound-only one has none.
            (*sk).dst_port != 0
        };
        bpf_sk_release(sk as *mut _);
        connected
    }
}

#[inline(always)]
fn set_probing(on: u32) {
    if let Some(p) = XDP_PROBING.get_ptr_mut(0) {
        // Per-CPU slot: no other writer.
        unsafe { *p = on };
    }
}

#[inline(always)]
fn probing() -> bool {
    XDP_PROBING.get(0).is_some_and(|p| *p != 0)
}

/// Counts into a listener's row of `LISTENER_COUNTERS`.
#[inline(always)]
fn listener_count(row: u32, f: impl FnOnce(&mut ListenerCounter)) {
    if let Some(c) = LISTENER_COUNTERS.get_ptr_mut(row) {
        // Per-CPU slot: no other writer.
        f(unsafe { &mut *c });
    }
}

/// Whether slot `idx` of `SOCKS` holds a socket now. A socket leaves the
/// map when it closes, so an empty slot means no process serves the
/// listener.
#[inline(always)]
fn sock_present(idx: u32) -> bool {
    // The legacy map static is the map definition itself (`SockMap` is
    // `repr(transparent)` over it): its address is the map pointer.
    let sk = unsafe {
        bpf_map_lookup_elem(
            core::ptr::addr_of!(SOCKS).cast_mut().cast::<c_void>(),
            core::ptr::from_ref(&idx).cast::<c_void>(),
        )
    };
    if sk.is_null() {
        return false;
    }
    // The lookup took a reference on the socket.
    unsafe { bpf_sk_release(sk) };
    true
}

/// The listener a TCP connection to `port` of balancer `lb_id` belongs to,
/// if the daemon steers it.
#[inline(always)]
fn listener(bank: u32, lb_id: u32, port: u16) -> Option<ListenerSlots> {
    let key = ListenerKey {
        bank,
        lb_id,
        port,
        proto: proto::TCP,
        _pad: 0,
    };
    unsafe { LISTENERS.get(&key) }.copied()
}

/// The sk_lookup hook. A new connection (TCP) or datagram (unconnected UDP)
/// to a balancer address that came in on an interface the balancer neither
/// lists nor holds an address on is refused (`drop_wrong_interface`), on any
/// port: the stack answers a reset or port unreachable, since a drop here
/// cannot be silent. Otherwise a TCP connection to a listener port goes to
/// that listener's socket group (`SOCKS`); the kernel then picks a member of
/// the group by its SO_REUSEPORT hash, so every worker takes its share, and
/// the accepted socket keeps the balancer address as its local address.
/// Anything else is left to the stack.
#[sk_lookup]
pub fn xalb_steer(ctx: SkLookupContext) -> u32 {
    // XDP's own socket lookups (`is_reply`) come through here too: what
    // they look for is never a listener, they are not connections, and the
    // packet's interface is XDP's to judge.
    if probing() {
        return sk_action::SK_PASS;
    }
    let l = ctx.lookup;
    // One field per read: the verifier refuses wider loads of the context.
    let (family, protocol, port, ifindex) = unsafe {
        (
            core::ptr::addr_of!((*l).family).read_volatile(),
            core::ptr::addr_of!((*l).protocol).read_volatile(),
            core::ptr::addr_of!((*l).local_port).read_volatile(),
            core::ptr::addr_of!((*l).ingress_ifindex).read_volatile(),
        )
    };
    let bank = active_bank();
    let lb = match family {
        AF_INET => {
            let addr = unsafe { core::ptr::addr_of!((*l).local_ip4).read_volatile() };
            let key = AddrKeyV4 {
                bank,
                addr: addr.to_ne_bytes(),
            };
            unsafe { LB_ADDRS_V4.get(&key) }.copied()
        }
        AF_INET6 => {
            let mut addr = [0u8; 16];
            for i in 0..4 {
                let word = unsafe { core::ptr::addr_of!((*l).local_ip6[i]).read_volatile() };
                addr[i * 4..i * 4 + 4].copy_from_slice(&word.to_ne_bytes());
            }
            let key = AddrKeyV6 { bank, addr };
            unsafe { LB_ADDRS_V6.get(&key) }.copied()
        }
        _ => None,
    };
    let Some(lb) = lb else {
        return sk_action::SK_PASS;
    };
    if !on_its_interface(bank, lb.lb_id, ifindex) {
        // No packet length here: counted without bytes.
        count(lb.lb_id, Reason::DropWrongInterface, 0);
        return sk_action::SK_DROP;
    }
    if protocol != proto::TCP as u32 {
        return sk_action::SK_PASS;
    }
    // Ports that are no listener's stay the host's, as the rules allow.
    let Some(li) = listener(bank, lb.lb_id, port as u16) else {
        return sk_action::SK_PASS;
    };
    // XDP forwards a TCP listener's flows; none reaches a socket here.
    if li.is_forwarded() {
        return sk_action::SK_PASS;
    }
    let idx = if family == AF_INET {
        li.sock_v4
    } else {
        li.sock_v6
    };
    // Flags 0: the socket's SO_REUSEPORT group still spreads.
    match SOCKS.redirect_sk_lookup(&ctx, idx, 0) {
        Ok(()) => {
            listener_count(li.row, |c| c.steered += 1);
            sk_action::SK_PASS
        }
        // An earlier program chose a socket: it stands.
        Err(e) if e == -EEXIST => sk_action::SK_PASS,
        // No socket: the stack resets the connection (a drop here cannot
        // be silent; XDP drops these SYNs silently where it runs).
        Err(e) if e == -ENOENT => {
            listener_count(li.row, |c| c.no_socket += 1);
            sk_action::SK_DROP
        }
        Err(_) => {
            listener_count(li.row, |c| c.assign_error += 1);
            sk_action::SK_DROP
        }
    }
}

/// What differs between the families once the L3 header is parsed: the
/// address type, and the tries and key layout that follow from it.
trait Family {
    type Addr: Copy;
    type SrcKey;
    /// 4 or 6, as in [`VerdictRecord::family`].
    const FAMILY: u8;
    const ADDR_BITS: u32;
    fn src_key(lb_id: [u8; 4], src: Self::Addr) -> Self::SrcKey;
    fn inside_internal_networks(key: &Key<Self::SrcKey>) -> bool;
    fn rules(key: &Key<Self::SrcKey>) -> Option<&'static SgRules>;
    /// The address in 16 bytes, IPv4 in the first four.
    fn wide(addr: &Self::Addr) -> [u8; 16];
    /// Whether an ICMP message of this family and type is an error that
    /// quotes the packet it is about.
    fn is_icmp_error(proto: u8, icmp_type: u8) -> bool;
    /// The IP header an ICMP error quotes, at `off`: (protocol, source,
    /// destination, offset of its transport header).
    fn quoted(ctx: &XdpContext, off: usize, end: usize) -> Option<(u8, Self::Addr, Self::Addr, usize)>;
}

struct V4;

impl Family for V4 {
    type Addr = [u8; 4];
    type SrcKey = SrcKeyV4;
    const FAMILY: u8 = 4;
    const ADDR_BITS: u32 = 32;

    #[inline(always)]
    fn src_key(lb_id: [u8; 4], addr: [u8; 4]) -> SrcKeyV4 {
        SrcKeyV4 { lb_id, addr }
    }

    #[inline(always)]
    fn inside_internal_networks(key: &Key<SrcKeyV4>) -> bool {
        INTERNAL_V4.get(key).is_some()
    }

    #[inline(always)]
    fn rules(key: &Key<SrcKeyV4>) -> Option<&'static SgRules> {
        SG_V4.get(key)
    }

    #[inline(always)]
    fn wide(addr: &[u8; 4]) -> [u8; 16] {
        let mut w = [0u8; 16];
        w[..4].copy_from_slice(addr);
        w
    }

    #[inline(always)]
    fn is_icmp_error(proto: u8, icmp_type: u8) -> bool {
        // Destination unreachable (fragmentation needed among them), time
        // exceeded, parameter problem.
        proto == proto::ICMP && matches!(icmp_type, 3 | 11 | 12)
    }

    #[inline(always)]
    fn quoted(ctx: &XdpContext, off: usize, end: usize) -> Option<(u8, [u8; 4], [u8; 4], usize)> {
        let ip = read_within::<Ipv4Hdr>(ctx, off, end)?;
        let ihl = ip.ihl() as usize;
        if ip.version() != 4 || ihl < Ipv4Hdr::LEN {
            return None;
        }
        Some((ip.proto as u8, ip.src_addr, ip.dst_addr, off + ihl))
    }
}

struct V6;

impl Family for V6 {
    type Addr = [u8; 16];
    type SrcKey = SrcKeyV6;
    const FAMILY: u8 = 6;
    const ADDR_BITS: u32 = 128;

    #[inline(always)]
    fn src_key(lb_id: [u8; 4], addr: [u8; 16]) -> SrcKeyV6 {
        SrcKeyV6 { lb_id, addr }
    }

    #[inline(always)]
    fn inside_internal_networks(key: &Key<SrcKeyV6>) -> bool {
        INTERNAL_V6.get(key).is_some()
    }

    #[inline(always)]
    fn rules(key: &Key<SrcKeyV6>) -> Option<&'static SgRules> {
        SG_V6.get(key)
    }

    #[inline(always)]
    fn wide(addr: &[u8; 16]) -> [u8; 16] {
        *addr
    }

    #[inline(always)]
    fn is_icmp_error(proto: u8, icmp_type: u8) -> bool {
        // Destination unreachable, packet too big, time exceeded, parameter
        // problem.
        proto == proto::ICMPV6 && matches!(icmp_type, 1..=4)
    }

    #[inline(always)]
    fn quoted(ctx: &XdpContext, off: usize, end: usize) -> Option<(u8, [u8; 16], [u8; 16], usize)> {
        let ip = read_within::<Ipv6Hdr>(ctx, off, end)?;
        // Only a transport header right after the fixed header: enough for
        // the flows xalb's host opens.
        if ip.version() != 6 {
            return None;
        }
        Some((ip.next_hdr as u8, ip.src_addr, ip.dst_addr, off + Ipv6Hdr::LEN))
    }
}

fn ipv4(ctx: &XdpContext, off: usize) -> Verdict {
    let Some(ip) = read::<Ipv4Hdr>(ctx, off) else {
        return Verdict::of(NO_LB, Reason::DropMalformed);
    };
    let flow = Flow {
        proto: ip.proto,
        // More-fragments flag or a non-zero offset.
        fragment: ip.frag_flags() & IP_MF != 0 || ip.frag_offset() != 0,
        ..Flow::default()
    };
    let ihl = ip.ihl() as usize;
    let total = ip.tot_len() as usize;
    // Opaque to the optimiser, which would otherwise drop the frame-end
    // checks of later reads as implied by this one; the verifier needs them.
    let pkt_len = core::hint::black_box(ctx.data_end() - ctx.data());
    let l4 = if ip.version() != 4 || ihl < Ipv4Hdr::LEN || total < ihl || off + total > pkt_len {
        Err(Reason::DropMalformed)
    } else {
        Ok(L4 {
            l3: off,
            off: off + ihl,
            end: off + total,
            extended: ihl > Ipv4Hdr::LEN,
        })
    };
    if let Some(v) = existing_flow::<V4>(ctx, &ip.src_addr, &ip.dst_addr, &flow, l4) {
        return v;
    }
    let bank = active_bank();
    let key = AddrKeyV4 {
        bank,
        addr: ip.dst_addr,
    };
    let Some(lb) = (unsafe { LB_ADDRS_V4.get(key) }).copied() else {
        return Verdict::of(NO_LB, Reason::PassNotBalancer);
    };
    balancer::<V4>(ctx, bank, &lb, &ip.src_addr, &ip.dst_addr, flow, l4)
}

fn ipv6(ctx: &XdpContext, off: usize) -> Verdict {
    let Some(ip) = read::<Ipv6Hdr>(ctx, off) else {
        return Verdict::of(NO_LB, Reason::DropMalformed);
    };
    let mut flow = Flow {
        proto: ip.next_hdr,
        hop_limit: ip.hop_limit,
        ..Flow::default()
    };
    let l4 = ipv6_transport_offset(ctx, off, &ip, &mut flow);
    if let Some(v) = existing_flow::<V6>(ctx, &ip.src_addr, &ip.dst_addr, &flow, l4) {
        return v;
    }
    let bank = active_bank();
    let key = AddrKeyV6 {
        bank,
        addr: ip.dst_addr,
    };
    let Some(lb) = (unsafe { LB_ADDRS_V6.get(key) }).copied() else {
        return Verdict::of(NO_LB, Reason::PassNotBalancer);
    };
    balancer::<V6>(ctx, bank, &lb, &ip.src_addr, &ip.dst_addr, flow, l4)
}

/// Stages the TCP packet at `l4` for the forwarding path, if it may take
/// that path: untagged (the IP header right after Ethernet), not a
/// fragment, its TCP header within the IP packet.
#[inline(always)]
fn stage_tcp<F: Family>(
    ctx: &XdpContext,
    src: &F::Addr,
    dst: &F::Addr,
    flow: &Flow,
    l4: L4,
) -> bool {
    if flow.proto != proto::TCP || flow.fragment || l4.l3 != EthHdr::LEN {
        return false;
    }
    if l4.off + TcpHdr::LEN > l4.end {
        return false;
    }
    forward::stage(
        ctx,
        F::FAMILY,
        &F::wide(src),
        &F::wide(dst),
        l4.off,
        l4.end - l4.l3,
        l4.extended,
    )
}

/// The verdict on a packet of a flow the kernel forwards (either
/// direction), before anything else: its first packet passed the rules.
#[inline(always)]
fn existing_flow<F: Family>(
    ctx: &XdpContext,
    src: &F::Addr,
    dst: &F::Addr,
    flow: &Flow,
    l4: Result<L4, Reason>,
) -> Option<Verdict> {
    let l4 = l4.ok()?;
    if flow.proto != proto::TCP || !forward::enabled() {
        return None;
    }
    if !stage_tcp::<F>(ctx, src, dst, flow, l4) {
        return None;
    }
    forward::existing(ctx)
}

const IPPROTO_HOPOPTS: u8 = IpProto::HopOpt as u8;
const IPPROTO_ROUTING: u8 = IpProto::Ipv6Route as u8;
const IPPROTO_FRAGMENT: u8 = IpProto::Ipv6Frag as u8;
const IPPROTO_AH: u8 = IpProto::Ah as u8;
const IPPROTO_DSTOPTS: u8 = IpProto::Ipv6Opts as u8;

/// Checks the IPv6 header `ip` (at `off`) and walks its extension headers to
/// the transport header: its offset, with `flow`'s protocol and fragment flag
/// set, or the verdict on a packet that cannot be parsed. The extension
/// headers are read as bytes: `network-types` has no structures for them.
#[inline(always)]
fn ipv6_transport_offset(
    ctx: &XdpContext,
    off: usize,
    ip: &Ipv6Hdr,
    flow: &mut Flow,
) -> Result<L4, Reason> {
    let payload = ip.payload_len() as usize;
    // Opaque to the optimiser, which would otherwise drop the frame-end
    // checks of later reads as implied by this one; the verifier needs them.
    let pkt_len = core::hint::black_box(ctx.data_end() - ctx.data());
    // Payload length 0 means a jumbogram, which xalb does not accept.
    if ip.version() != 6 || payload == 0 || off + Ipv6Hdr::LEN + payload > pkt_len {
        return Err(Reason::DropMalformed);
    }
    let end = off + Ipv6Hdr::LEN + payload;
    let mut next = ip.next_hdr;
    let mut l4off = off + Ipv6Hdr::LEN;
    for _ in 0..MAX_EXT_HEADERS {
        match next {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_AH => {
                let ext = read_within::<[u8; 2]>(ctx, l4off, end).ok_or(Reason::DropMalformed)?;
                let len = if next == IPPROTO_AH {
                    (ext[1] as usize + 2) * 4
                } else {
                    (ext[1] as usize + 1) * 8
                };
                next = ext[0];
                l4off += len;
            }
            IPPROTO_FRAGMENT => {
                let ext = read_within::<[u8; 8]>(ctx, l4off, end).ok_or(Reason::DropMalformed)?;
                next = ext[0];
                // Any fragment header marks a fragment, even offset 0 without
                // the M flag (an atomic fragment): its ports are not trusted.
                flow.fragment = true;
                l4off += 8;
                // A later fragment carries payload, not headers: what follows
                // must not be read as one.
                if u16::from_be_bytes([ext[2], ext[3]]) & 0xfff8 != 0 {
                    flow.proto = next;
                    return Ok(L4 {
                        l3: off,
                        off: l4off,
                        end,
                        extended: true,
                    });
                }
            }
            _ => break,
        }
        if l4off > MAX_L4_OFFSET {
            return Err(Reason::DropUnparsed);
        }
    }
    flow.proto = next;
    if matches!(
        next,
        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_AH | IPPROTO_FRAGMENT
    ) || l4off > MAX_L4_OFFSET
    {
        return Err(Reason::DropUnparsed);
    }
    if l4off > end {
        return Err(Reason::DropMalformed);
    }
    Ok(L4 {
        l3: off,
        off: l4off,
        end,
        extended: l4off != off + Ipv6Hdr::LEN,
    })
}

/// The verdict on a packet to balancer `lb` once its L3 header is parsed
/// (`l4off`: the transport header's offset, or the verdict the L3 checks
/// reached), then the verdict log. Shared by both families.
#[inline(always)]
fn balancer<F: Family>(
    ctx: &XdpContext,
    bank: u32,
    lb: &LbAddr,
    src: &F::Addr,
    dst: &F::Addr,
    mut flow: Flow,
    l4: Result<L4, Reason>,
) -> Verdict {
    // The interface first: a packet that should not have come this way is
    // dropped whatever it is. On a listed interface it is always one of some
    // balancer's, so this catches another balancer's packets.
    let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    let verdict = if !on_its_interface(bank, lb.lb_id, ifindex) {
        Verdict::of(lb.lb_id, Reason::DropWrongInterface)
    } else {
        match l4 {
            Ok(l4) => rules::<F>(ctx, bank, lb, src, dst, &mut flow, l4),
            Err(reason) => Verdict::of(lb.lb_id, reason),
        }
    };
    let reason = verdict.reason;
    if XDP_LOG.load() != 0 {
        let record = VerdictRecord {
            lb_id: lb.lb_id,
            reason: reason as u8,
            proto: flow.proto,
            family: F::FAMILY,
            _pad: 0,
            sport: flow.sport,
            dport: flow.dport,
            src: F::wide(src),
            dst: F::wide(dst),
        };
        log_verdict(ctx, &record);
    }
    verdict
}

/// Out of line: the packet path keeps its registers and size when the log is on.
#[inline(never)]
fn log_verdict(ctx: &XdpContext, record: &VerdictRecord) {
    info!(ctx, "{:x}", record.as_bytes());
}

/// The transport header, neighbour discovery, the source lookups and the
/// rules, for a packet whose transport header is at `l4`.
#[inline(always)]
fn rules<F: Family>(
    ctx: &XdpContext,
    bank: u32,
    lb: &LbAddr,
    src: &F::Addr,
    dst: &F::Addr,
    flow: &mut Flow,
    l4: L4,
) -> Verdict {
    let lb_id = lb.lb_id;
    let mut icmp_type = 0;
    if !flow.fragment {
        let Some(t) = transport(ctx, l4, flow) else {
            return Verdict::of(lb_id, Reason::DropMalformed);
        };
        icmp_type = t;
        // Neighbour discovery (router/neighbour solicitation and
        // advertisement, redirect) must never be black-holed, whatever the
        // rules and scheme. Real ND comes from the link itself: hop limit
        // 255 (RFC 4861), which a routed packet cannot keep.
        if F::FAMILY == 6
            && flow.proto == proto::ICMPV6
            && (133..=137).contains(&icmp_type)
            && flow.hop_limit == 255
        {
            return Verdict::of(lb_id, Reason::PassNeighbour);
        }
    }
    let key = Key::new(
        LB_ID_BITS + F::ADDR_BITS,
        F::src_key(trie_id(bank, lb.lb_id), *src),
    );
    let mut tuple = Tuple {
        saddr: *src,
        daddr: *dst,
        sport: flow.sport.to_be_bytes(),
        dport: flow.dport.to_be_bytes(),
    };
    let tuple_ptr = &mut tuple as *mut Tuple<F::Addr> as *mut bpf_sock_tuple;
    let inside = lb.flags & LB_FLAG_INTERNAL == 0 || F::inside_internal_networks(&key);
    let reason = decide(
        ctx,
        flow,
        inside,
        F::rules(&key),
        tuple_ptr,
        size_of::<Tuple<F::Addr>>() as u32,
    );
    if matches!(reason, Reason::DropDenied | Reason::DropInternal)
        && F::is_icmp_error(flow.proto, icmp_type)
        && is_related::<F>(ctx, l4, dst)
    {
        return Verdict::of(lb_id, Reason::PassRelated);
    }
    if reason != Reason::PassAllowed || flow.proto != proto::TCP {
        return Verdict::of(lb_id, reason);
    }
    if flow.fragment {
        // A fragment's ports are unknown, and a TCP listener's packets
        // cannot be translated without them.
        if lb.flags & LB_FLAG_TCP_LISTENER != 0 {
            return Verdict::of(lb_id, Reason::DropFragment);
        }
        return Verdict::of(lb_id, reason);
    }
    let Some(li) = listener(bank, lb_id, flow.dport) else {
        return Verdict::of(lb_id, reason);
    };
    if li.is_forwarded() {
        if !stage_tcp::<F>(ctx, src, dst, flow, l4) {
            // VLAN-tagged: the forwarding path does not rewrite tags.
            return Verdict::of(lb_id, Reason::DropUnparsed);
        }
        let at = forward::Listener {
            bank,
            lb_id,
            slots: li,
        };
        return forward::begin(ctx, at);
    }
    // A connection the rules let in, to a listener no process serves now
    // (between a daemon's end and the next start): dropped, not reset, so
    // the client's SYN retransmission connects once one is back.
    if flow.opens {
        let idx = if F::FAMILY == 6 {
            li.sock_v6
        } else {
            li.sock_v4
        };
        if !sock_present(idx) {
            listener_count(li.row, |c| c.no_socket += 1);
            return Verdict::of(lb_id, Reason::DropNoSocket);
        }
    }
    Verdict::of(lb_id, reason)
}

/// Whether the ICMP error at `l4` quotes a packet this host sent from `dst`
/// on a connection it still has (a connected TCP or UDP socket): then it is
/// news for that connection (path MTU, unreachable), not a probe.
#[inline(always)]
fn is_related<F: Family>(ctx: &XdpContext, l4: L4, dst: &F::Addr) -> bool {
    // The quoted header follows the ICMP header's 8 bytes.
    let Some((quoted_proto, quoted_src, quoted_dst, ports_off)) = F::quoted(ctx, l4.off + 8, l4.end)
    else {
        return false;
    };
    if quoted_proto != proto::TCP && quoted_proto != proto::UDP {
        return false;
    }
    let Some(ports) = read_within::<[u8; 4]>(ctx, ports_off, l4.end) else {
        return false;
    };
    // The quoted packet left from the balancer address this error came to.
    if F::wide(&quoted_src) != F::wide(dst) {
        return false;
    }
    // The connection as the host sees packets coming in on it.
    let mut tuple = Tuple {
        saddr: quoted_dst,
        daddr: quoted_src,
        sport: [ports[2], ports[3]],
        dport: [ports[0], ports[1]],
    };
    let tuple_ptr = &mut tuple as *mut Tuple<F::Addr> as *mut bpf_sock_tuple;
    is_reply(ctx, tuple_ptr, size_of::<Tuple<F::Addr>>() as u32, quoted_proto)
}

/// The rules in order, once the packet is parsed and its source looked up:
/// the internal scheme, the security groups, fragments, then the stateful
/// check (done last: a socket lookup costs more than the trie).
#[inline(always)]
fn decide(
    ctx: &XdpContext,
    flow: &Flow,
    inside_internal_networks: bool,
    rules: Option<&SgRules>,
    tuple: *mut bpf_sock_tuple,
    tuple_size: u32,
) -> Reason {
    let may_be_reply = !flow.fragment && !flow.opens;
    if !inside_internal_networks {
        if may_be_reply && is_reply(ctx, tuple, tuple_size, flow.proto) {
            return Reason::PassReply;
        }
        return Reason::DropInternal;
    }
    if rules.is_some_and(|r| r.allows(flow.proto, flow.dport, flow.fragment)) {
        return Reason::PassAllowed;
    }
    if flow.fragment {
        return Reason::DropFragment;
    }
    if may_be_reply && is_reply(ctx, tuple, tuple_size, flow.proto) {
        return Reason::PassReply;
    }
    Reason::DropDenied
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
