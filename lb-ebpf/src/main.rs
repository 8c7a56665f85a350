//! xalb's XDP program: security groups enforced per packet, before the stack.
//!
//! Per packet: parse L2/L3/L4 without trusting any length field; pass what is
//! not addressed to a balancer address; for a balancer address apply, in order,
//! neighbour discovery (pass), the internal scheme, fragments, the security
//! groups, and finally the stateful check (replies to connections this host
//! opened). Every verdict is counted by reason and balancer.
//!
//! Map layouts live in `lb-common`; the daemon fills the inactive bank and flips
//! `ACTIVE_BANK`, so one packet always sees one whole configuration.
#![no_std]
#![no_main]

use core::mem::size_of;

use aya_ebpf::{
    bindings::{bpf_sock, bpf_sock_tuple, xdp_action, BPF_F_CURRENT_NETNS},
    helpers::generated::{bpf_sk_lookup_tcp, bpf_sk_lookup_udp, bpf_sk_release},
    macros::{map, xdp},
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, PerCpuArray},
    programs::XdpContext,
};
use lb_common::{
    counter_index, proto, trie_id, AddrKeyV4, AddrKeyV6, BackendSet, Counter, LbAddr, Reason,
    SgRules, SrcKeyV4, SrcKeyV6, LB_FLAG_INTERNAL, LB_ID_BITS, MAX_ADDRS, MAX_GROUPS, MAX_PREFIXES,
    NO_LB, NUM_COUNTERS,
};

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

/// Healthy backends per target group, for the TCP fast path (written by the
/// daemon's health tracking; read here once the fast path lands).
#[map(name = "BACKENDS")]
static BACKENDS: HashMap<u32, BackendSet> = HashMap::with_max_entries(MAX_GROUPS, 0);

#[map(name = "COUNTERS")]
static COUNTERS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(NUM_COUNTERS, 0);

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
/// VLAN tags followed (QinQ is two).
const MAX_VLAN_TAGS: usize = 2;
/// IPv6 extension headers followed before giving up (and dropping).
const MAX_EXT_HEADERS: usize = 8;
/// Transport headers further into the packet than this are not parsed
/// (dropped as unparsed); keeps every offset bounded for the verifier.
const MAX_L4_OFFSET: usize = 1024;
const BPF_TCP_LISTEN: u32 = 10;
const TCP_SYN: u8 = 0x02;
const TCP_SYN_ACK: u8 = 0x12;

#[xdp]
pub fn xalb_xdp(ctx: XdpContext) -> u32 {
    let (slot, reason) = classify(&ctx);
    count(slot, reason, (ctx.data_end() - ctx.data()) as u64);
    if reason.is_drop() {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    }
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

#[inline(always)]
fn read<T: Copy>(ctx: &XdpContext, off: usize) -> Option<T> {
    ptr_at::<T>(ctx, off).map(|p| unsafe { p.read_unaligned() })
}

#[inline(always)]
fn read_be16(ctx: &XdpContext, off: usize) -> Option<u16> {
    read::<[u8; 2]>(ctx, off).map(u16::from_be_bytes)
}

fn classify(ctx: &XdpContext) -> (u32, Reason) {
    let Some(mut ethertype) = read_be16(ctx, 12) else {
        return (NO_LB, Reason::DropMalformed);
    };
    let mut off = ETH_HLEN;
    for _ in 0..MAX_VLAN_TAGS {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        let Some(inner) = read_be16(ctx, off + 2) else {
            return (NO_LB, Reason::DropMalformed);
        };
        ethertype = inner;
        off += 4;
    }
    match ethertype {
        ETH_P_IP => ipv4(ctx, off),
        ETH_P_IPV6 => ipv6(ctx, off),
        // Too many VLAN tags to see what is inside: it could be IP to a balancer.
        ETH_P_8021Q | ETH_P_8021AD => (NO_LB, Reason::DropUnparsed),
        _ => (NO_LB, Reason::PassNonIp),
    }
}

#[inline(always)]
fn active_bank() -> u32 {
    ACTIVE_BANK.get(0).copied().unwrap_or(0)
}

/// What the transport header says, as far as the rules need it.
struct L4 {
    proto: u8,
    /// Destination port for TCP/UDP, 0 otherwise.
    dport: u16,
    sport: u16,
    /// A fragment (first or later): ports cannot be trusted or are absent.
    fragment: bool,
    /// A TCP SYN without ACK opens a connection: it is never a reply, so
    /// the socket lookup can be skipped when no rule allows it.
    opens: bool,
}

/// Reads what the rules need of the transport header at `off`: (source port,
/// destination port, TCP flags or ICMP type); `None` if truncated. Each header is copied in
/// one bounds-checked read: separate reads let the compiler merge the checks
/// in ways the verifier cannot follow.
#[inline(always)]
fn transport(ctx: &XdpContext, off: usize, proto: u8) -> Option<(u16, u16, u8)> {
    match proto {
        proto::TCP => {
            let h = read::<[u8; 20]>(ctx, off)?;
            // The data offset must at least cover the fixed header.
            if h[12] >> 4 < 5 {
                return None;
            }
            Some((
                u16::from_be_bytes([h[0], h[1]]),
                u16::from_be_bytes([h[2], h[3]]),
                h[13],
            ))
        }
        proto::UDP => {
            let h = read::<[u8; 8]>(ctx, off)?;
            Some((
                u16::from_be_bytes([h[0], h[1]]),
                u16::from_be_bytes([h[2], h[3]]),
                0,
            ))
        }
        proto::ICMP | proto::ICMPV6 => {
            let h = read::<[u8; 4]>(ctx, off)?;
            Some((0, 0, h[0]))
        }
        _ => Some((0, 0, 0)),
    }
}

/// The 5-tuple as `bpf_sk_lookup_*` wants it, IPv4 form.
#[repr(C)]
struct TupleV4 {
    saddr: [u8; 4],
    daddr: [u8; 4],
    sport: [u8; 2],
    dport: [u8; 2],
}

/// The 5-tuple as `bpf_sk_lookup_*` wants it, IPv6 form.
#[repr(C)]
struct TupleV6 {
    saddr: [u8; 16],
    daddr: [u8; 16],
    sport: [u8; 2],
    dport: [u8; 2],
}

/// Whether this packet belongs to a connection of a local socket that is not a
/// listener: a reply to something this host opened (or a flow the rules let in
/// before). A listening or unconnected socket never counts, so this cannot open
/// a listener port.
#[inline(always)]
fn is_reply(ctx: &XdpContext, tuple: *mut bpf_sock_tuple, size: u32, l4: &L4) -> bool {
    let netns = BPF_F_CURRENT_NETNS as u64;
    let ctx_ptr = ctx.ctx as *mut _;
    unsafe {
        let sk: *mut bpf_sock = match l4.proto {
            proto::TCP => bpf_sk_lookup_tcp(ctx_ptr, tuple, size, netns, 0),
            proto::UDP => bpf_sk_lookup_udp(ctx_ptr, tuple, size, netns, 0),
            _ => return false,
        };
        if sk.is_null() {
            return false;
        }
        let connected = if l4.proto == proto::TCP {
            (*sk).state != BPF_TCP_LISTEN
        } else {
            // A connected UDP socket has a remote port; a bound-only one has none.
            (*sk).dst_port != 0
        };
        bpf_sk_release(sk as *mut _);
        connected
    }
}

fn ipv4(ctx: &XdpContext, off: usize) -> (u32, Reason) {
    let Some(hdr) = read::<[u8; 20]>(ctx, off) else {
        return (NO_LB, Reason::DropMalformed);
    };
    let dst = [hdr[16], hdr[17], hdr[18], hdr[19]];
    let bank = active_bank();
    let Some(lb) = (unsafe { LB_ADDRS_V4.get(AddrKeyV4 { bank, addr: dst }) }).copied() else {
        return (NO_LB, Reason::PassNotBalancer);
    };
    let slot = lb.lb_id;
    let src = [hdr[12], hdr[13], hdr[14], hdr[15]];

    let ihl = (hdr[0] & 0x0f) as usize * 4;
    let total = u16::from_be_bytes([hdr[2], hdr[3]]) as usize;
    let pkt_len = ctx.data_end() - ctx.data();
    if hdr[0] >> 4 != 4 || ihl < 20 || total < ihl || off + total > pkt_len {
        return (slot, Reason::DropMalformed);
    }
    let frag = u16::from_be_bytes([hdr[6], hdr[7]]);
    let mut l4 = L4 {
        proto: hdr[9],
        dport: 0,
        sport: 0,
        // More-fragments flag or a non-zero offset.
        fragment: frag & 0x3fff != 0,
        opens: false,
    };
    let l4off = off + ihl;
    if !l4.fragment {
        match transport(ctx, l4off, l4.proto) {
            Some((s, d, extra)) => {
                l4.sport = s;
                l4.dport = d;
                l4.opens = l4.proto == proto::TCP && extra & TCP_SYN_ACK == TCP_SYN;
            }
            None => return (slot, Reason::DropMalformed),
        }
    }

    let id = trie_id(bank, lb.lb_id);
    let key = Key::new(
        LB_ID_BITS + 32,
        SrcKeyV4 {
            lb_id: id,
            addr: src,
        },
    );
    let mut tuple = TupleV4 {
        saddr: src,
        daddr: dst,
        sport: l4.sport.to_be_bytes(),
        dport: l4.dport.to_be_bytes(),
    };
    let tuple_ptr = &mut tuple as *mut TupleV4 as *mut bpf_sock_tuple;
    let inside = lb.flags & LB_FLAG_INTERNAL == 0 || INTERNAL_V4.get(&key).is_some();
    let reason = decide(
        ctx,
        &l4,
        inside,
        SG_V4.get(&key),
        tuple_ptr,
        size_of::<TupleV4>() as u32,
    );
    (slot, reason)
}

/// The rules in order, once the packet is parsed and its source looked up:
/// the internal scheme, the security groups, fragments, then the stateful
/// check (done last: a socket lookup costs more than the trie).
#[inline(always)]
fn decide(
    ctx: &XdpContext,
    l4: &L4,
    inside_internal_networks: bool,
    rules: Option<&SgRules>,
    tuple: *mut bpf_sock_tuple,
    tuple_size: u32,
) -> Reason {
    let may_be_reply = !l4.fragment && !l4.opens;
    if !inside_internal_networks {
        if may_be_reply && is_reply(ctx, tuple, tuple_size, l4) {
            return Reason::PassReply;
        }
        return Reason::DropInternal;
    }
    if rules.is_some_and(|r| r.allows(l4.proto, l4.dport, l4.fragment)) {
        return Reason::PassAllowed;
    }
    if l4.fragment {
        return Reason::DropFragment;
    }
    if may_be_reply && is_reply(ctx, tuple, tuple_size, l4) {
        return Reason::PassReply;
    }
    Reason::DropDenied
}

const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_AH: u8 = 51;
const IPPROTO_DSTOPTS: u8 = 60;

fn ipv6(ctx: &XdpContext, off: usize) -> (u32, Reason) {
    let Some(hdr) = read::<[u8; 40]>(ctx, off) else {
        return (NO_LB, Reason::DropMalformed);
    };
    let mut dst = [0u8; 16];
    dst.copy_from_slice(&hdr[24..40]);
    let bank = active_bank();
    let Some(lb) = (unsafe { LB_ADDRS_V6.get(AddrKeyV6 { bank, addr: dst }) }).copied() else {
        return (NO_LB, Reason::PassNotBalancer);
    };
    let slot = lb.lb_id;
    let mut src = [0u8; 16];
    src.copy_from_slice(&hdr[8..24]);

    let payload = u16::from_be_bytes([hdr[4], hdr[5]]) as usize;
    let pkt_len = ctx.data_end() - ctx.data();
    // Payload length 0 means a jumbogram, which xalb does not accept.
    if hdr[0] >> 4 != 6 || payload == 0 || off + 40 + payload > pkt_len {
        return (slot, Reason::DropMalformed);
    }

    // Walk the extension headers to the transport header.
    let mut next = hdr[6];
    let mut l4off = off + 40;
    let mut fragment = false;
    for _ in 0..MAX_EXT_HEADERS {
        match next {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_AH => {
                let Some(ext) = read::<[u8; 2]>(ctx, l4off) else {
                    return (slot, Reason::DropMalformed);
                };
                let len = if next == IPPROTO_AH {
                    (ext[1] as usize + 2) * 4
                } else {
                    (ext[1] as usize + 1) * 8
                };
                next = ext[0];
                l4off += len;
            }
            IPPROTO_FRAGMENT => {
                let Some(ext) = read::<[u8; 8]>(ctx, l4off) else {
                    return (slot, Reason::DropMalformed);
                };
                next = ext[0];
                // Any fragment header marks a fragment, even offset 0 without
                // the M flag (an atomic fragment): its ports are not trusted.
                fragment = true;
                l4off += 8;
            }
            _ => break,
        }
        if l4off > MAX_L4_OFFSET {
            return (slot, Reason::DropUnparsed);
        }
    }
    if matches!(
        next,
        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_AH | IPPROTO_FRAGMENT
    ) || l4off > MAX_L4_OFFSET
    {
        return (slot, Reason::DropUnparsed);
    }
    if l4off > off + 40 + payload {
        return (slot, Reason::DropMalformed);
    }

    let mut l4 = L4 {
        proto: next,
        dport: 0,
        sport: 0,
        fragment,
        opens: false,
    };
    if !fragment {
        match transport(ctx, l4off, next) {
            Some((s, d, extra)) => {
                l4.sport = s;
                l4.dport = d;
                l4.opens = next == proto::TCP && extra & TCP_SYN_ACK == TCP_SYN;
                let icmp_type = extra;
                // Neighbour discovery (router/neighbour solicitation and
                // advertisement, redirect) must never be black-holed,
                // whatever the rules and scheme.
                if next == proto::ICMPV6 && (133..=137).contains(&icmp_type) {
                    return (slot, Reason::PassNeighbour);
                }
            }
            None => return (slot, Reason::DropMalformed),
        }
    }

    let id = trie_id(bank, lb.lb_id);
    let key = Key::new(
        LB_ID_BITS + 128,
        SrcKeyV6 {
            lb_id: id,
            addr: src,
        },
    );
    let mut tuple = TupleV6 {
        saddr: src,
        daddr: dst,
        sport: l4.sport.to_be_bytes(),
        dport: l4.dport.to_be_bytes(),
    };
    let tuple_ptr = &mut tuple as *mut TupleV6 as *mut bpf_sock_tuple;
    let inside = lb.flags & LB_FLAG_INTERNAL == 0 || INTERNAL_V6.get(&key).is_some();
    let reason = decide(
        ctx,
        &l4,
        inside,
        SG_V6.get(&key),
        tuple_ptr,
        size_of::<TupleV6>() as u32,
    );
    (slot, reason)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
