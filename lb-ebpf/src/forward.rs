//! TCP listeners, forwarded here: no socket, no copy to user space.
//!
//! A SYN the security groups let in, to a TCP listener, is hashed to a slot
//! of its group's Maglev ring (`RINGS`), which names a target (`TARGETS`).
//! Two flow-table entries are made, one per direction, each saying how to
//! rewrite a packet of its 4-tuple: full NAT by default (client → target
//! packets leave from the balancer's own address toward the target and a
//! source port of the reserved range), destination only with
//! `preserve_client_ip`. Every later packet, either way, is found by its
//! tuple, rewritten with incremental checksums, given the next hop's MACs
//! from the kernel's FIB, and sent on (`XDP_TX` on the interface it came
//! in on, `XDP_REDIRECT` to another); a translated packet is never passed
//! to the stack.
//!
//! Flows wait in `NEW_FLOWS` until the client acknowledges the target's
//! SYN-ACK, and only then move to `FLOWS`: a SYN flood churns the
//! handshake table and never evicts an established flow. A packet of no
//! flow (an ended one, a target's failure) is answered with a reset, so
//! the client learns at once instead of at its timeout.
//!
//! The work is split in two programs: `xalb_xdp` parses, applies the rules
//! and finds the packet's flow or listener, then leaves the rest (the
//! flow tables' updates, the rewrite, the FIB) to `xalb_forward` by a tail
//! call. Each runs on its own 512-byte stack and is verified alone: in one
//! program the verifier walked the product of both halves' paths.

use core::ffi::c_void;
use core::mem::size_of;

use aya_ebpf::{
    bindings::{
        bpf_fib_lookup as FibParams, xdp_action, BPF_FIB_LKUP_RET_NO_NEIGH,
        BPF_FIB_LKUP_RET_SUCCESS, BPF_NOEXIST,
    },
    helpers::generated::{bpf_fib_lookup, bpf_ktime_get_coarse_ns, bpf_redirect, bpf_xdp_adjust_tail},
    macros::{map, xdp},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, ProgramArray},
    programs::XdpContext,
};
use lb_common::{
    csum, flow_hash, proto, FlowKey, FlowNat, FwdConfig, FwdScratch, FwdTarget, ListenerSlots,
    NeighKey, MAX_NEIGH_MISSES, Reason, Ring, RingKey, TargetCounter, FLOW_CLOCK_SHIFT, FLOW_CLOSING, FLOW_REUSE_QUIET, FLOW_TABLE_SIZE, FLOW_TO_TARGET, HANDSHAKE_REUSE_AGE,
    FWD_SCRATCH_LEN, MAX_RINGS, MAX_TARGETS, NEW_FLOW_TABLE_SIZE, RING_SIZE,
    TARGET_PRESERVE_CLIENT_IP,
};
use network_types::eth::EthHdr;

use crate::{count, listener_count, ptr_at, Verdict};

/// (bank, ring) → a TCP target group's Maglev table (one ring per family:
/// `ring * 2 + is_v6`).
#[map(name = "RINGS")]
static RINGS: HashMap<RingKey, Ring> = HashMap::with_max_entries(MAX_RINGS * 2, 0);

#[map(name = "TARGETS")]
static TARGETS: Array<FwdTarget> = Array::with_max_entries(MAX_TARGETS, 0);

#[map(name = "TARGET_COUNTERS")]
static TARGET_COUNTERS: PerCpuArray<TargetCounter> = PerCpuArray::with_max_entries(MAX_TARGETS, 0);

/// Established flows, both directions (shared by every CPU: the two
/// directions arrive on different interfaces and queues).
#[map(name = "FLOWS")]
static FLOWS: LruHashMap<FlowKey, FlowNat> = LruHashMap::with_max_entries(FLOW_TABLE_SIZE, 0);

/// Handshakes in progress, both directions.
#[map(name = "NEW_FLOWS")]
static NEW_FLOWS: LruHashMap<FlowKey, FlowNat> =
    LruHashMap::with_max_entries(NEW_FLOW_TABLE_SIZE, 0);

#[map(name = "FWD_CONFIG")]
static FWD_CONFIG: Array<FwdConfig> = Array::with_max_entries(1, 0);

/// Next hops without a neighbour entry, for the daemon to resolve.
#[map(name = "NEIGH_MISSES")]
static NEIGH_MISSES: LruHashMap<NeighKey, u32> = LruHashMap::with_max_entries(MAX_NEIGH_MISSES, 0);

#[map(name = "FWD_SCRATCH")]
static FWD_SCRATCH: PerCpuArray<FwdScratch> = PerCpuArray::with_max_entries(1, 0);

/// Slot 0: `xalb_forward`, which the daemon puts there after loading it.
#[map(name = "FORWARD")]
static FORWARD: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// What `xalb_xdp` leaves `xalb_forward` to do.
const MODE_FLOW: u32 = 1;
const MODE_BEGIN: u32 = 2;

/// What the two programs share about the packet in hand, in `FWD_SCRATCH`
/// (this CPU's: a packet's programs run to their end on one CPU, tail call
/// included), and where the forwarding path works: the BPF stack has no
/// room for it.
#[repr(C)]
struct Scratch {
    pkt: Packet,
    /// [`MODE_FLOW`]: `fwd` is the packet's flow entry, from the handshake
    /// table when `handshake` is set. [`MODE_BEGIN`]: `at` is the listener
    /// the packet may begin a flow to.
    mode: u32,
    handshake: u32,
    at: Listener,
    /// The entry a packet is rewritten by, and the one of its replies.
    fwd: FlowNat,
    rev: FlowNat,
    /// The key of `rev`.
    key: FlowKey,
    /// The key of a flow whose translation a new one takes over.
    stale: FlowKey,
    fib: FibParams,
    /// A reset being built: Ethernet addresses, IP and TCP headers.
    macs: [u8; 12],
    tcp: [u8; TCP_LEN],
    ip: [u8; IPV6_LEN],
}

const _: () = assert!(size_of::<Scratch>() <= FWD_SCRATCH_LEN);

/// This CPU's scratch space. Fields are borrowed one at a time, never the
/// whole, so no two borrows overlap.
#[inline(always)]
fn scratch() -> Option<*mut Scratch> {
    FWD_SCRATCH.get_ptr_mut(0).map(|p| p.cast::<Scratch>())
}

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;
/// Source ports tried for a new flow's translation before giving up.
const PORT_PROBES: u32 = 4;
/// IPv4 header length without options; the reset is built without any.
const IPV4_LEN: usize = 20;
const IPV6_LEN: usize = 40;
const TCP_LEN: usize = 20;

/// A TCP listener, as a packet to it found it.
pub struct Listener {
    pub bank: u32,
    /// The balancer's counter row.
    pub lb_id: u32,
    pub slots: ListenerSlots,
}

/// A TCP packet the forwarding path may handle: untagged, not a fragment,
/// its headers within the IP packet.
pub struct Packet {
    /// 4 or 6.
    pub family: u8,
    /// Offset of the IP header (always right after Ethernet) and of TCP.
    pub l4: usize,
    /// Length of the IP packet (header included).
    pub ip_len: usize,
    pub key: FlowKey,
    pub flags: u8,
    pub seq: u32,
    pub ack: u32,
    /// Whether an IPv4 header has options, or an IPv6 one extension
    /// headers: such packets are forwarded but never answered with a
    /// reset (which is built without them).
    pub extended: bool,
}

impl Packet {
    #[inline(always)]
    fn opens(&self) -> bool {
        self.flags & (TCP_SYN | TCP_ACK) == TCP_SYN
    }
}

/// Whether some balancer has a TCP listener (then the flow tables exist
/// for something).
#[inline(always)]
pub fn enabled() -> bool {
    FWD_CONFIG.get(0).is_some_and(|c| c.enabled != 0)
}

/// In `xalb_xdp`: for the packet [`stage`]d, if it belongs to a known
/// flow (either direction), hands it to `xalb_forward`; `None` when it
/// belongs to none.
#[inline(always)]
pub fn existing(ctx: &XdpContext) -> Option<Verdict> {
    let s = scratch()?;
    let (pkt, fwd) = unsafe { (&(*s).pkt, &mut (*s).fwd) };
    let handshake = if let Some(nat) = FLOWS.get_ptr(&pkt.key) {
        // A copy: an entry removed from an LRU table may be reused at once.
        *fwd = unsafe { *nat };
        0
    } else {
        let nat = NEW_FLOWS.get_ptr(&pkt.key)?;
        *fwd = unsafe { *nat };
        1
    };
    unsafe {
        (*s).mode = MODE_FLOW;
        (*s).handshake = handshake;
    }
    Some(hand_over(ctx, fwd.lb_id))
}

/// In `xalb_xdp`: hands the packet [`stage`]d, which the rules let in to
/// TCP listener `at` and which belongs to no flow, to `xalb_forward`.
#[inline(always)]
pub fn begin(ctx: &XdpContext, at: Listener) -> Verdict {
    let lb_id = at.lb_id;
    let Some(s) = scratch() else {
        return Verdict::of(lb_id, Reason::DropNoRoute);
    };
    unsafe {
        (*s).mode = MODE_BEGIN;
        (*s).at = at;
    }
    hand_over(ctx, lb_id)
}

/// The tail call; it returns only when `xalb_forward` is not in place
/// (a daemon that has not loaded it yet): the packet is dropped.
#[inline(always)]
fn hand_over(ctx: &XdpContext, lb_id: u32) -> Verdict {
    unsafe { FORWARD.tail_call(ctx, 0) };
    Verdict::of(lb_id, Reason::DropNoRoute)
}

/// The forwarding half: what `xalb_xdp` handed over, finished here.
#[xdp]
pub fn xalb_forward(ctx: XdpContext) -> u32 {
    // The length before a reset may trim the frame.
    let len = (ctx.data_end() - ctx.data()) as u64;
    let v = match scratch() {
        Some(s) if unsafe { (*s).mode } == MODE_BEGIN => new_flow(&ctx, s),
        Some(s) => known_flow(&ctx, s),
        None => Verdict::of(lb_common::NO_LB, Reason::DropNoRoute),
    };
    count(v.slot, v.reason, len);
    v.action
}

/// A packet of a known flow: the handshake's steps, then the rewrite.
#[inline(always)]
fn known_flow(ctx: &XdpContext, s: *mut Scratch) -> Verdict {
    let (pkt, fwd, rev, back) = unsafe { (&(*s).pkt, &mut (*s).fwd, &mut (*s).rev, &mut (*s).key) };
    if unsafe { (*s).handshake } != 0 {
        reverse(pkt.family, fwd, back);
        if fwd.flags & FLOW_TO_TARGET == 0 {
            if pkt.flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK {
                // The target's SYN-ACK: the client's handshake ACK must
                // acknowledge its sequence number.
                if let Some(client) = NEW_FLOWS.get_ptr_mut(&*back) {
                    unsafe { (*client).ack = pkt.seq.wrapping_add(1) };
                }
            }
        } else if pkt.flags & (TCP_SYN | TCP_ACK) == TCP_ACK && fwd.ack != 0 && pkt.ack == fwd.ack
        {
            // The handshake completed: the flow moves to the established
            // table.
            if let Some(r) = NEW_FLOWS.get_ptr(&*back) {
                *rev = unsafe { *r };
                if FLOWS.insert(&*back, &*rev, 0).is_ok()
                    && FLOWS.insert(&pkt.key, &*fwd, 0).is_ok()
                {
                    let _ = NEW_FLOWS.remove(&*back);
                    let _ = NEW_FLOWS.remove(&pkt.key);
                }
            }
        }
    }
    forward(ctx, s)
}

/// Sets `key` to the key of the packets that answer packets rewritten by
/// `nat`.
#[inline(always)]
fn reverse(family: u8, nat: &FlowNat, key: &mut FlowKey) {
    key.saddr = nat.daddr;
    key.daddr = nat.saddr;
    key.sport = nat.dport;
    key.dport = nat.sport;
    key.family = family;
    key.proto = proto::TCP;
    key._pad = 0;
}

/// A packet the security groups let in to a TCP listener that belongs to
/// no flow: a SYN begins one; any other packet is answered with a reset.
#[inline(always)]
fn new_flow(ctx: &XdpContext, s: *mut Scratch) -> Verdict {
    let (pkt, at, fwd, rev, back) = unsafe {
        (
            &(*s).pkt,
            &(*s).at,
            &mut (*s).fwd,
            &mut (*s).rev,
            &mut (*s).key,
        )
    };
    let (bank, lb_id, li) = (at.bank, at.lb_id, &at.slots);
    if !pkt.opens() {
        return refuse(ctx, s, lb_id, li.row);
    }
    let ring_key = RingKey {
        bank,
        ring: li.ring * 2 + u32::from(pkt.family == 6),
    };
    let hash = flow_hash(&pkt.key);
    let Some(ring) = (unsafe { RINGS.get(&ring_key) }) else {
        return no_target(lb_id, li.row);
    };
    // Opaque to the optimiser: it would drop the bounds check, proven by
    // the modulo, that the verifier cannot prove itself.
    let slot = core::hint::black_box((hash % RING_SIZE as u32) as usize);
    let Some(&row) = ring.slots.get(slot) else {
        return no_target(lb_id, li.row);
    };
    let row = u32::from(row);
    let Some(target) = TARGETS.get(row) else {
        return no_target(lb_id, li.row);
    };
    if target.family != pkt.family {
        return no_target(lb_id, li.row);
    }
    let preserve = target.flags & TARGET_PRESERVE_CLIENT_IP != 0;
    fwd.saddr = if preserve { pkt.key.saddr } else { target.snat };
    fwd.daddr = target.addr;
    fwd.sport = pkt.key.sport;
    fwd.dport = target.port;
    fwd.target = row as u16;
    fwd.listener = li.row as u16;
    fwd.epoch = target.epoch;
    fwd.flags = FLOW_TO_TARGET;
    fwd.ack = 0;
    fwd.lb_id = lb_id;
    fwd.since = now();
    *rev = *fwd;
    rev.saddr = pkt.key.daddr;
    rev.daddr = pkt.key.saddr;
    rev.sport = pkt.key.dport;
    rev.dport = pkt.key.sport;
    rev.flags = 0;
    let stale = unsafe { &mut (*s).stale };
    let claimed = if preserve {
        claim(pkt.family, fwd, rev, back, stale)
    } else {
        let Some(cfg) = FWD_CONFIG.get(0) else {
            return no_target(lb_id, li.row);
        };
        let span = u32::from(cfg.port_hi.saturating_sub(cfg.port_lo)) + 1;
        let mut claimed = false;
        for i in 0..PORT_PROBES {
            // Spread over the range by the flow's hash, so probes of
            // concurrent SYNs rarely meet.
            fwd.sport = (u32::from(cfg.port_lo) + hash.rotate_left(i * 8) % span) as u16;
            if claim(pkt.family, fwd, rev, back, stale) {
                claimed = true;
                break;
            }
        }
        claimed
    };
    if !claimed {
        return no_target(lb_id, li.row);
    }
    if NEW_FLOWS.insert(&pkt.key, &*fwd, 0).is_err() {
        let _ = NEW_FLOWS.remove(&*back);
        return no_target(lb_id, li.row);
    }
    listener_count(li.row, |c| c.new_flows += 1);
    target_count(row, |c| c.new_flows += 1);
    forward(ctx, s)
}

/// Makes `rev` the entry of the replies to packets rewritten by `fwd`
/// (their key, set in `back`), unless a live flow holds that tuple (its
/// source port is taken). A flow that closed and went quiet, or a
/// handshake that never completed, gives the tuple up: both its entries go.
#[inline(always)]
fn claim(family: u8, fwd: &FlowNat, rev: &FlowNat, back: &mut FlowKey, stale: &mut FlowKey) -> bool {
    reverse(family, fwd, back);
    let age = |old: &FlowNat| fwd.since.wrapping_sub(old.since);
    if let Some(old) = FLOWS.get_ptr(&*back) {
        let old = unsafe { &*old };
        if old.flags & FLOW_CLOSING == 0 || age(old) < FLOW_REUSE_QUIET {
            return false;
        }
        reverse(family, old, stale);
        let _ = FLOWS.remove(&*stale);
        let _ = FLOWS.remove(&*back);
    } else if let Some(old) = NEW_FLOWS.get_ptr(&*back) {
        let old = unsafe { &*old };
        if age(old) < HANDSHAKE_REUSE_AGE {
            return false;
        }
        reverse(family, old, stale);
        let _ = NEW_FLOWS.remove(&*stale);
        let _ = NEW_FLOWS.remove(&*back);
    }
    NEW_FLOWS.insert(&*back, rev, BPF_NOEXIST as u64).is_ok()
}

/// The coarse clock in [`FLOW_CLOCK_SHIFT`] units.
#[inline(always)]
fn now() -> u32 {
    (unsafe { bpf_ktime_get_coarse_ns() } >> FLOW_CLOCK_SHIFT) as u32
}

/// Marks both entries of an established flow closing, as of now: a FIN or
/// a reset passed, or a packet of a flow already closing (its quiet time
/// starts again).
#[inline(never)]
fn closing(s: *mut Scratch) {
    let (pkt, nat, back) = unsafe { (&(*s).pkt, &(*s).fwd, &mut (*s).key) };
    let t = now();
    reverse(pkt.family, nat, back);
    for key in [&pkt.key, &*back] {
        if let Some(e) = FLOWS.get_ptr_mut(key) {
            unsafe {
                (*e).flags |= FLOW_CLOSING;
                (*e).since = t;
            }
        }
    }
}

#[inline(always)]
fn no_target(lb_id: u32, listener: u32) -> Verdict {
    listener_count(listener, |c| c.no_target += 1);
    Verdict::of(lb_id, Reason::DropNoTarget)
}

#[inline(always)]
fn target_count(row: u32, f: impl FnOnce(&mut TargetCounter)) {
    if let Some(c) = TARGET_COUNTERS.get_ptr_mut(row) {
        // Per-CPU slot: no other writer.
        f(unsafe { &mut *c });
    }
}

/// Rewrites and sends on a packet of flow `fwd`; ends the flow instead
/// when its target's flows had to end.
#[inline(always)]
fn forward(ctx: &XdpContext, s: *mut Scratch) -> Verdict {
    let (pkt, nat) = unsafe { (&(*s).pkt, &(*s).fwd) };
    let to_target = nat.flags & FLOW_TO_TARGET != 0;
    let row = u32::from(nat.target);
    let listener = u32::from(nat.listener);
    let alive = TARGETS.get(row).is_some_and(|t| t.epoch == nat.epoch);
    if !alive {
        forget(s);
        target_count(row, |c| c.flows_reset += 1);
        if to_target {
            return refuse(ctx, s, nat.lb_id, listener);
        }
        return Verdict::of(nat.lb_id, Reason::DropNoFlow);
    }
    if pkt.flags & (TCP_FIN | TCP_RST) != 0 || nat.flags & FLOW_CLOSING != 0 {
        closing(s);
    }
    if !rewrite(ctx, pkt, nat) {
        return Verdict::of(nat.lb_id, Reason::DropMalformed);
    }
    let bytes = pkt.ip_len as u64;
    let reason = match send(ctx, s) {
        Ok(action) => {
            if to_target {
                listener_count(listener, |c| {
                    c.to_packets += 1;
                    c.to_bytes += bytes;
                });
                target_count(row, |c| {
                    c.to_packets += 1;
                    c.to_bytes += bytes;
                });
                return Verdict::new(nat.lb_id, Reason::FwdToTarget, action);
            }
            listener_count(listener, |c| {
                c.from_packets += 1;
                c.from_bytes += bytes;
            });
            target_count(row, |c| {
                c.from_packets += 1;
                c.from_bytes += bytes;
            });
            return Verdict::new(nat.lb_id, Reason::FwdFromTarget, action);
        }
        Err(reason) => reason,
    };
    if reason == Reason::DropNoNeighbour {
        listener_count(listener, |c| c.no_neigh += 1);
        target_count(row, |c| c.no_neigh += 1);
    } else {
        listener_count(listener, |c| c.no_route += 1);
    }
    Verdict::of(nat.lb_id, reason)
}

/// Removes both entries of the packet's flow, from both tables.
#[inline(always)]
fn forget(s: *mut Scratch) {
    let (pkt, nat, back) = unsafe { (&(*s).pkt, &(*s).fwd, &mut (*s).key) };
    let _ = FLOWS.remove(&pkt.key);
    let _ = NEW_FLOWS.remove(&pkt.key);
    reverse(pkt.family, nat, back);
    let _ = FLOWS.remove(&*back);
    let _ = NEW_FLOWS.remove(&*back);
}

/// Writes `v` at `off` bytes into the packet, if it lies within it.
#[inline(always)]
fn store<T>(ctx: &XdpContext, off: usize, v: T) -> bool {
    match ptr_at::<T>(ctx, off) {
        Some(p) => {
            unsafe { (p as *mut T).write_unaligned(v) };
            true
        }
        None => false,
    }
}

#[inline(always)]
fn load<T: Copy>(ctx: &XdpContext, off: usize) -> Option<T> {
    ptr_at::<T>(ctx, off).map(|p| unsafe { p.read_unaligned() })
}

/// Rewrites addresses and ports to `nat`'s, updating the IPv4 header and
/// TCP checksums for exactly the words that changed (RFC 1624). Each header
/// is reached through one bounds-checked pointer: checks of separate
/// fields get merged by the optimiser in ways the verifier cannot follow.
/// No address is copied to the stack, which has little room left here.
#[inline(never)]
fn rewrite(ctx: &XdpContext, pkt: &Packet, nat: &FlowNat) -> bool {
    let l3 = EthHdr::LEN;
    let k = &pkt.key;
    let v4 = pkt.family == 4;
    let removed = addr_sum(&k.saddr, v4, true) + addr_sum(&k.daddr, v4, true);
    let added = addr_sum(&nat.saddr, v4, false) + addr_sum(&nat.daddr, v4, false);
    if v4 {
        let Some(ip) = ptr_at::<[u8; IPV4_LEN]>(ctx, l3) else {
            return false;
        };
        let ip = unsafe { &mut *(ip as *mut [u8; IPV4_LEN]) };
        let check = u16::from_be_bytes([ip[10], ip[11]]);
        ip[10..12].copy_from_slice(&csum::update(check, removed, added).to_be_bytes());
        ip[12..16].copy_from_slice(&nat.saddr[..4]);
        ip[16..20].copy_from_slice(&nat.daddr[..4]);
    } else {
        let Some(ip) = ptr_at::<[u8; IPV6_LEN]>(ctx, l3) else {
            return false;
        };
        let ip = unsafe { &mut *(ip as *mut [u8; IPV6_LEN]) };
        ip[8..24].copy_from_slice(&nat.saddr);
        ip[24..40].copy_from_slice(&nat.daddr);
    }
    // Read back from the scratch map, the offset is unbounded to the
    // verifier: the mask bounds it (a TCP header is never past 1024 bytes).
    let l4 = pkt.l4 & 0x7ff;
    let Some(tcp) = ptr_at::<[u8; TCP_LEN]>(ctx, l4) else {
        return false;
    };
    let tcp = unsafe { &mut *(tcp as *mut [u8; TCP_LEN]) };
    let check = u16::from_be_bytes([tcp[16], tcp[17]]);
    let old_ports = (!k.sport as u32) + (!k.dport as u32);
    let new_ports = nat.sport as u32 + nat.dport as u32;
    let tcp_check = csum::update(check, removed + old_ports, added + new_ports);
    tcp[0..2].copy_from_slice(&nat.sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&nat.dport.to_be_bytes());
    tcp[16..18].copy_from_slice(&tcp_check.to_be_bytes());
    true
}

/// The one's-complement sum of an address's words (IPv4: its first four
/// bytes), or of their complements (`complement`: the words removed).
#[inline(always)]
fn addr_sum(a: &[u8; 16], v4: bool, complement: bool) -> u32 {
    let words = if v4 { 2 } else { 8 };
    let mut s = 0u32;
    for i in 0..8 {
        if i >= words {
            break;
        }
        let w = u16::from_be_bytes([a[2 * i], a[2 * i + 1]]);
        s += u32::from(if complement { !w } else { w });
    }
    s
}

/// Finds the next hop of the rewritten packet in the kernel's FIB, sets its
/// MACs, and gives the action that sends it: `XDP_TX` back out of the
/// interface it came in on, `XDP_REDIRECT` to another.
#[inline(never)]
fn send(ctx: &XdpContext, s: *mut Scratch) -> Result<u32, Reason> {
    let ingress = unsafe { (*ctx.ctx).ingress_ifindex };
    let (pkt, nat, p) = unsafe { (&(*s).pkt, &(*s).fwd, &mut (*s).fib) };
    *p = unsafe { core::mem::zeroed() };
    p.l4_protocol = proto::TCP;
    p.sport = u16::from_ne_bytes(nat.sport.to_be_bytes());
    p.dport = u16::from_ne_bytes(nat.dport.to_be_bytes());
    p.__bindgen_anon_1.tot_len = pkt.ip_len as u16;
    p.ifindex = ingress;
    if pkt.family == 4 {
        p.family = AF_INET;
        p.__bindgen_anon_3.ipv4_src =
            u32::from_ne_bytes([nat.saddr[0], nat.saddr[1], nat.saddr[2], nat.saddr[3]]);
        p.__bindgen_anon_4.ipv4_dst =
            u32::from_ne_bytes([nat.daddr[0], nat.daddr[1], nat.daddr[2], nat.daddr[3]]);
    } else {
        p.family = AF_INET6;
        p.__bindgen_anon_3.ipv6_src = words(&nat.saddr);
        p.__bindgen_anon_4.ipv6_dst = words(&nat.daddr);
    }
    let rc = unsafe {
        bpf_fib_lookup(
            ctx.ctx as *mut c_void,
            p,
            size_of::<FibParams>() as i32,
            0,
        )
    };
    if rc == i64::from(BPF_FIB_LKUP_RET_NO_NEIGH) {
        // The lookup left the next hop (the gateway, or the destination
        // itself on a link) in the destination field.
        let mut miss = NeighKey {
            family: pkt.family,
            ..NeighKey::default()
        };
        if pkt.family == 4 {
            miss.addr[..4].copy_from_slice(&unsafe { p.__bindgen_anon_4.ipv4_dst }.to_ne_bytes());
        } else {
            let w = unsafe { p.__bindgen_anon_4.ipv6_dst };
            for i in 0..4 {
                miss.addr[i * 4..i * 4 + 4].copy_from_slice(&w[i].to_ne_bytes());
            }
        }
        let _ = NEIGH_MISSES.insert(&miss, &p.ifindex, 0);
        return Err(Reason::DropNoNeighbour);
    }
    if rc != i64::from(BPF_FIB_LKUP_RET_SUCCESS) {
        return Err(Reason::DropNoRoute);
    }
    let mut macs = [0u8; 12];
    macs[..6].copy_from_slice(&p.dmac);
    macs[6..].copy_from_slice(&p.smac);
    if !store(ctx, 0, macs) {
        return Err(Reason::DropMalformed);
    }
    if p.ifindex == ingress {
        return Ok(xdp_action::XDP_TX);
    }
    Ok(unsafe { bpf_redirect(p.ifindex, 0) } as u32)
}

#[inline(always)]
fn words(a: &[u8; 16]) -> [u32; 4] {
    [
        u32::from_ne_bytes([a[0], a[1], a[2], a[3]]),
        u32::from_ne_bytes([a[4], a[5], a[6], a[7]]),
        u32::from_ne_bytes([a[8], a[9], a[10], a[11]]),
        u32::from_ne_bytes([a[12], a[13], a[14], a[15]]),
    ]
}

/// Drops a packet of no flow and, when it acknowledges something (so a
/// reset it would accept can be built: RFC 9293 §3.10.7.1), answers it
/// with a reset in its place, sent back where it came from. Built in the
/// scratch space: this runs beside the rest on one small stack.
#[inline(never)]
fn refuse(ctx: &XdpContext, s: *mut Scratch, lb_id: u32, listener: u32) -> Verdict {
    let (pkt, tcp, ip, macs) = unsafe { (&(*s).pkt, &mut (*s).tcp, &mut (*s).ip, &mut (*s).macs) };
    listener_count(listener, |c| c.flows_reset += 1);
    let drop = Verdict::of(lb_id, Reason::DropNoFlow);
    if pkt.flags & (TCP_ACK | TCP_RST) != TCP_ACK || pkt.extended {
        return drop;
    }
    let k = &pkt.key;
    // The reset: from the packet's destination to its source, sequence
    // number what the packet acknowledged, no ACK, no options, no data.
    *tcp = [0u8; TCP_LEN];
    tcp[0..2].copy_from_slice(&k.dport.to_be_bytes());
    tcp[2..4].copy_from_slice(&k.sport.to_be_bytes());
    tcp[4..8].copy_from_slice(&pkt.ack.to_be_bytes());
    tcp[12] = (TCP_LEN as u8 / 4) << 4;
    tcp[13] = TCP_RST;
    let Some(m) = ptr_at::<[u8; 12]>(ctx, 0) else {
        return drop;
    };
    let m = unsafe { &*m };
    macs[..6].copy_from_slice(&m[6..]);
    macs[6..].copy_from_slice(&m[..6]);
    let v4 = pkt.family == 4;
    let addrs = addr_sum(&k.saddr, v4, false) + addr_sum(&k.daddr, v4, false);
    let check = csum::finish(addrs + u32::from(proto::TCP) + TCP_LEN as u32 + csum::sum(tcp));
    tcp[16..18].copy_from_slice(&check.to_be_bytes());
    *ip = [0u8; IPV6_LEN];
    let ip_len = if v4 {
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&((IPV4_LEN + TCP_LEN) as u16).to_be_bytes());
        // Don't fragment.
        ip[6] = 0x40;
        ip[8] = 64;
        ip[9] = proto::TCP;
        ip[12..16].copy_from_slice(&k.daddr[..4]);
        ip[16..20].copy_from_slice(&k.saddr[..4]);
        let mut hdr = [0u8; IPV4_LEN];
        hdr.copy_from_slice(&ip[..IPV4_LEN]);
        let ip_check = csum::finish(csum::sum(&hdr));
        ip[10..12].copy_from_slice(&ip_check.to_be_bytes());
        IPV4_LEN
    } else {
        ip[0] = 0x60;
        ip[4..6].copy_from_slice(&(TCP_LEN as u16).to_be_bytes());
        ip[6] = proto::TCP;
        ip[7] = 64;
        ip[8..24].copy_from_slice(&k.daddr);
        ip[24..40].copy_from_slice(&k.saddr);
        IPV6_LEN
    };
    let l3 = EthHdr::LEN;
    let frame = ctx.data_end() - ctx.data();
    if !shrink(ctx, frame, l3 + ip_len + TCP_LEN) {
        return drop;
    }
    let Some(m) = ptr_at::<[u8; 12]>(ctx, 0) else {
        return drop;
    };
    unsafe { (m as *mut [u8; 12]).write_unaligned(*macs) };
    let written = if v4 {
        write_headers::<IPV4_LEN>(ctx, ip, tcp)
    } else {
        write_headers::<IPV6_LEN>(ctx, ip, tcp)
    };
    if !written {
        return drop;
    }
    Verdict::new(lb_id, Reason::DropNoFlow, xdp_action::XDP_TX)
}

/// Writes the first `N` bytes of `ip` (the IP header), then `tcp`, after
/// Ethernet.
#[inline(always)]
fn write_headers<const N: usize>(ctx: &XdpContext, ip: &[u8; IPV6_LEN], tcp: &[u8; TCP_LEN]) -> bool {
    let Some(h) = ptr_at::<[u8; N]>(ctx, EthHdr::LEN) else {
        return false;
    };
    let h = unsafe { &mut *(h as *mut [u8; N]) };
    h.copy_from_slice(&ip[..N]);
    let Some(t) = ptr_at::<[u8; TCP_LEN]>(ctx, EthHdr::LEN + N) else {
        return false;
    };
    unsafe { (t as *mut [u8; TCP_LEN]).write_unaligned(*tcp) };
    true
}

/// Trims the frame (`len` bytes now) to `to` bytes.
#[inline(always)]
fn shrink(ctx: &XdpContext, len: usize, to: usize) -> bool {
    if len < to {
        return false;
    }
    let delta = -((len - to) as i32);
    delta == 0 || unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) } == 0
}

/// In `xalb_xdp`: reads the TCP header at `l4` into the scratch space, for
/// [`existing`] or [`begin`]; false if it cannot be forwarded.
#[inline(always)]
pub fn stage(
    ctx: &XdpContext,
    family: u8,
    saddr: &[u8; 16],
    daddr: &[u8; 16],
    l4: usize,
    ip_len: usize,
    extended: bool,
) -> bool {
    let Some(h) = load::<[u8; TCP_LEN]>(ctx, l4) else {
        return false;
    };
    // The data offset must cover the fixed header.
    if h[12] >> 4 < 5 {
        return false;
    }
    let Some(s) = scratch() else {
        return false;
    };
    let pkt = unsafe { &mut (*s).pkt };
    pkt.family = family;
    pkt.l4 = l4;
    pkt.ip_len = ip_len;
    pkt.key.saddr = *saddr;
    pkt.key.daddr = *daddr;
    pkt.key.sport = u16::from_be_bytes([h[0], h[1]]);
    pkt.key.dport = u16::from_be_bytes([h[2], h[3]]);
    pkt.key.family = family;
    pkt.key.proto = proto::TCP;
    pkt.key._pad = 0;
    pkt.flags = h[13];
    pkt.seq = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
    pkt.ack = u32::from_be_bytes([h[8], h[9], h[10], h[11]]);
    pkt.extended = extended;
    true
}
