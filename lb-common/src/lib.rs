//! Types shared by the XDP program (`lb-ebpf`) and the daemon (`lb-userspace`).
//!
//! Every BPF map's key and value layout is defined here, once. All types are
//! `#[repr(C)]` with explicit padding so both sides agree byte for byte; with the
//! `user` feature they implement `aya::Pod`.
#![no_std]

pub mod csum;
mod forward;
pub use forward::*;

/// Map names, as the XDP program declares them and the daemon looks them up.
pub mod map_names {
    pub const LB_ADDRS_V4: &str = "LB_ADDRS_V4";
    pub const LB_ADDRS_V6: &str = "LB_ADDRS_V6";
    pub const INTERNAL_V4: &str = "INTERNAL_V4";
    pub const INTERNAL_V6: &str = "INTERNAL_V6";
    pub const SG_V4: &str = "SG_V4";
    pub const SG_V6: &str = "SG_V6";
    pub const COUNTERS: &str = "COUNTERS";
    pub const ACTIVE_BANK: &str = "ACTIVE_BANK";
    /// Made and read by the daemon only (no program uses it): what the
    /// pinned maps mean, see [`super::StateBlob`].
    pub const STATE: &str = "STATE";
    pub const LISTENERS: &str = "LISTENERS";
    pub const SOCKS: &str = "SOCKS";
    pub const LISTENER_COUNTERS: &str = "LISTENER_COUNTERS";
    pub const XDP_PROBING: &str = "XDP_PROBING";
    pub const LB_IFACES: &str = "LB_IFACES";
    pub const RINGS: &str = "RINGS";
    pub const TARGETS: &str = "TARGETS";
    pub const TARGET_COUNTERS: &str = "TARGET_COUNTERS";
    pub const FLOWS: &str = "FLOWS";
    pub const NEW_FLOWS: &str = "NEW_FLOWS";
    pub const FWD_CONFIG: &str = "FWD_CONFIG";
    pub const FWD_SCRATCH: &str = "FWD_SCRATCH";
    pub const FORWARD: &str = "FORWARD";
    pub const NEIGH_MISSES: &str = "NEIGH_MISSES";
}

/// The version of the pinned state's layout (the maps of [`PINNED_MAPS`] and
/// the meaning of their keys and values). Bump it with any change to them:
/// pins of another layout are refused, never reused (the loader would reuse
/// a pinned map without comparing it). A test fingerprints [`PINNED_MAPS`] so
/// a change without a bump fails.
pub const LAYOUT_VERSION: u32 = 4;

/// Kernel map types (`enum bpf_map_type`) of the maps below.
pub mod map_type {
    pub const HASH: u32 = 1;
    pub const ARRAY: u32 = 2;
    pub const PROG_ARRAY: u32 = 3;
    pub const PERCPU_ARRAY: u32 = 6;
    pub const LRU_HASH: u32 = 9;
    pub const LPM_TRIE: u32 = 11;
    pub const SOCKMAP: u32 = 15;
}

/// `BPF_F_NO_PREALLOC`, which LPM tries require.
pub const MAP_F_NO_PREALLOC: u32 = 1;

/// What a map must be for this version's programs and daemon to use it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapLayout {
    pub name: &'static str,
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
}

const fn layout<K, V>(name: &'static str, map_type: u32, max_entries: u32) -> MapLayout {
    let key_size = core::mem::size_of::<K>() as u32;
    let (key_size, flags) = if map_type == map_type::LPM_TRIE {
        // An LPM trie's key starts with the prefix length.
        (4 + key_size, MAP_F_NO_PREALLOC)
    } else {
        (key_size, 0)
    };
    MapLayout {
        name,
        map_type,
        key_size,
        value_size: core::mem::size_of::<V>() as u32,
        max_entries,
        flags,
    }
}

/// The XDP object's maps, as `lb-ebpf` declares them (the daemon checks the
/// loaded object against this table), each pinned under its name.
pub const OBJECT_MAPS: [MapLayout; 22] = [
    layout::<u32, u32>(map_names::ACTIVE_BANK, map_type::ARRAY, 1),
    layout::<AddrKeyV4, LbAddr>(map_names::LB_ADDRS_V4, map_type::HASH, MAX_ADDRS * 2),
    layout::<AddrKeyV6, LbAddr>(map_names::LB_ADDRS_V6, map_type::HASH, MAX_ADDRS * 2),
    layout::<SrcKeyV4, u8>(map_names::INTERNAL_V4, map_type::LPM_TRIE, MAX_PREFIXES * 2),
    layout::<SrcKeyV6, u8>(map_names::INTERNAL_V6, map_type::LPM_TRIE, MAX_PREFIXES * 2),
    layout::<SrcKeyV4, SgRules>(map_names::SG_V4, map_type::LPM_TRIE, MAX_PREFIXES * 2),
    layout::<SrcKeyV6, SgRules>(map_names::SG_V6, map_type::LPM_TRIE, MAX_PREFIXES * 2),
    layout::<u32, Counter>(map_names::COUNTERS, map_type::PERCPU_ARRAY, NUM_COUNTERS),
    layout::<ListenerKey, ListenerSlots>(map_names::LISTENERS, map_type::HASH, MAX_LISTENERS * 2),
    layout::<u32, u32>(map_names::SOCKS, map_type::SOCKMAP, MAX_SOCKS),
    layout::<u32, ListenerCounter>(
        map_names::LISTENER_COUNTERS,
        map_type::PERCPU_ARRAY,
        MAX_LISTENERS,
    ),
    layout::<u32, u32>(map_names::XDP_PROBING, map_type::PERCPU_ARRAY, 1),
    layout::<IfaceKey, u64>(map_names::LB_IFACES, map_type::HASH, MAX_IFACES * 2),
    layout::<RingKey, Ring>(map_names::RINGS, map_type::HASH, MAX_RINGS * 2),
    layout::<u32, FwdTarget>(map_names::TARGETS, map_type::ARRAY, MAX_TARGETS),
    layout::<u32, TargetCounter>(
        map_names::TARGET_COUNTERS,
        map_type::PERCPU_ARRAY,
        MAX_TARGETS,
    ),
    layout::<FlowKey, FlowNat>(map_names::FLOWS, map_type::LRU_HASH, FLOW_TABLE_SIZE),
    layout::<FlowKey, FlowNat>(
        map_names::NEW_FLOWS,
        map_type::LRU_HASH,
        NEW_FLOW_TABLE_SIZE,
    ),
    layout::<u32, FwdConfig>(map_names::FWD_CONFIG, map_type::ARRAY, 1),
    layout::<u32, FwdScratch>(map_names::FWD_SCRATCH, map_type::PERCPU_ARRAY, 1),
    layout::<u32, u32>(map_names::FORWARD, map_type::PROG_ARRAY, 1),
    layout::<NeighKey, u32>(
        map_names::NEIGH_MISSES,
        map_type::LRU_HASH,
        MAX_NEIGH_MISSES,
    ),
];

/// The daemon's own map, pinned with the object's: one [`StateBlob`] per bank.
pub const STATE_MAP: MapLayout =
    layout::<u32, StateBlob>(map_names::STATE, map_type::ARRAY, NUM_BANKS);

/// Every pinned map: [`OBJECT_MAPS`] and [`STATE_MAP`].
pub const PINNED_MAPS: [MapLayout; OBJECT_MAPS.len() + 1] = {
    let mut all = [STATE_MAP; OBJECT_MAPS.len() + 1];
    let mut i = 0;
    while i < OBJECT_MAPS.len() {
        all[i] = OBJECT_MAPS[i];
        i += 1;
    }
    all
};

/// Bytes of [`StateBlob::data`]: room for what the daemon records per
/// balancer (and, later, per listener) with a wide margin.
pub const STATE_CAPACITY: usize = 65536 - 8;

/// Value of `STATE`, one per bank, written with the bank's configuration:
/// what the pinned maps mean (which balancer owns which counter row), so a
/// daemon adopting them after a crash or a restart keeps them consistent.
/// `data[..len]` is the daemon's own encoding (JSON); programs never read it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct StateBlob {
    pub len: u32,
    pub _pad: u32,
    pub data: [u8; STATE_CAPACITY],
}

/// Every key of the configuration maps carries a bank (0 or 1). The daemon
/// writes a whole new configuration into the inactive bank, then flips the one
/// entry of `ACTIVE_BANK`: the kernel never sees a half-written configuration.
pub const NUM_BANKS: u32 = 2;

/// The balancer id as it appears in trie keys: bank and balancer together.
#[inline(always)]
pub const fn trie_id(bank: u32, lb_id: u32) -> [u8; 4] {
    ((bank << 16) | lb_id).to_be_bytes()
}

/// Key of `LB_ADDRS_V4`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AddrKeyV4 {
    pub bank: u32,
    pub addr: [u8; 4],
}

/// Key of `LB_ADDRS_V6`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AddrKeyV6 {
    pub bank: u32,
    pub addr: [u8; 16],
}

/// The XDP program's name in the object file.
pub const XDP_PROGRAM: &str = "xalb_xdp";

/// The forwarding half of the XDP program (TCP listeners), which
/// [`XDP_PROGRAM`] reaches by a tail call through `FORWARD`.
pub const FORWARD_PROGRAM: &str = "xalb_forward";

/// The sk_lookup program's name in the object file: it hands each new
/// connection to a balancer address to its listener's sockets.
pub const SK_LOOKUP_PROGRAM: &str = "xalb_steer";

/// Most listeners (balancer, port) the kernel steers; ids are `0..MAX_LISTENERS`.
pub const MAX_LISTENERS: u32 = 1024;
/// Slots of `SOCKS`: one per listener and address family ([`sock_slot`]).
pub const MAX_SOCKS: u32 = 2 * MAX_LISTENERS;

/// The `SOCKS` slot of listener row `row`'s socket group of one family
/// (`v6`: the IPv6 group). Fixed by the row, so a row's slots are freed and
/// reused with it.
#[inline(always)]
pub const fn sock_slot(row: u32, v6: bool) -> u32 {
    row * 2 + v6 as u32
}

/// Key of `LISTENERS` (banked like the rest of the configuration): a
/// balancer's listener port for one transport protocol.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListenerKey {
    pub bank: u32,
    pub lb_id: u32,
    pub port: u16,
    /// [`proto::TCP`] (the only one steered yet).
    pub proto: u8,
    pub _pad: u8,
}

/// Value of `LISTENERS`: the listener's row of `LISTENER_COUNTERS`, the
/// `SOCKS` slots of its IPv4 and IPv6 socket groups (HTTP listeners), or
/// the ring it forwards by (TCP listeners).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenerSlots {
    pub row: u32,
    pub sock_v4: u32,
    pub sock_v6: u32,
    /// A TCP listener's ring (`RingKey::ring`); [`NO_RING`] for a listener
    /// steered to the daemon's sockets.
    pub ring: u32,
}

impl ListenerSlots {
    /// The slots of listener row `row`, steered to sockets.
    pub const fn of_row(row: u32) -> Self {
        Self {
            row,
            sock_v4: sock_slot(row, false),
            sock_v6: sock_slot(row, true),
            ring: NO_RING,
        }
    }

    /// Listener row `row`, forwarded by the kernel over ring `ring`.
    pub const fn forwarded(row: u32, ring: u32) -> Self {
        Self {
            ring,
            ..Self::of_row(row)
        }
    }

    /// Whether the kernel forwards this listener's flows itself.
    #[inline(always)]
    pub const fn is_forwarded(&self) -> bool {
        self.ring != NO_RING
    }
}

impl Default for ListenerSlots {
    fn default() -> Self {
        Self::of_row(0)
    }
}

/// One row of `LISTENER_COUNTERS` (per CPU): what happened to the
/// connections opened to one listener.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListenerCounter {
    /// Connection attempts (SYNs, retransmissions included) handed to the
    /// listener's sockets.
    pub steered: u64,
    /// Connection attempts refused because the listener had no socket: XDP
    /// drops them on the balancer's interfaces, the sk_lookup program resets
    /// them elsewhere.
    pub no_socket: u64,
    /// Connection attempts the kernel would not hand to the socket found.
    pub assign_error: u64,
    /// TCP listeners: flows begun (SYNs that created a flow).
    pub new_flows: u64,
    /// TCP listeners: client → target packets and bytes forwarded.
    pub to_packets: u64,
    pub to_bytes: u64,
    /// TCP listeners: target → client packets and bytes forwarded.
    pub from_packets: u64,
    pub from_bytes: u64,
    /// TCP listeners: packets of no known flow (or of a flow whose target
    /// had to end it) answered with a reset.
    pub flows_reset: u64,
    /// TCP listeners: packets dropped for want of the next hop's
    /// link-layer address (the daemon keeps the targets' entries warm).
    pub no_neigh: u64,
    /// TCP listeners: SYNs dropped because the group has no target, or no
    /// source port was free for the translation.
    pub no_target: u64,
    /// TCP listeners: packets dropped because the kernel had no route to
    /// the target (or forwarding is off on the interface).
    pub no_route: u64,
}

/// The XDP program's load-time switch for the verdict log (`xalb run
/// --xdp-log`): a read-only global (a `u8`, 0 = off) the loader sets before
/// the verifier runs. Off, the verifier knows the value and prunes the
/// logging branch, so it costs nothing per packet.
pub const XDP_LOG_GLOBAL: &str = "XDP_LOG";

/// One verdict on a packet addressed to a balancer, as the XDP program logs
/// it (through aya-log, as the hex of these bytes) when the verdict log is on.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VerdictRecord {
    /// The balancer's counter row.
    pub lb_id: u32,
    /// [`Reason`] as its number.
    pub reason: u8,
    /// IP protocol of the transport header (0 when not reached).
    pub proto: u8,
    /// 4 or 6.
    pub family: u8,
    pub _pad: u8,
    /// Ports for TCP and UDP (0 for a fragment or another protocol).
    pub sport: u16,
    pub dport: u16,
    /// IPv4 in the first four bytes when `family` is 4.
    pub src: [u8; 16],
    pub dst: [u8; 16],
}

/// Size of a [`VerdictRecord`] in the log.
pub const VERDICT_RECORD_LEN: usize = core::mem::size_of::<VerdictRecord>();

impl VerdictRecord {
    #[inline(always)]
    pub fn as_bytes(&self) -> &[u8; VERDICT_RECORD_LEN] {
        // SAFETY: repr(C), integers and byte arrays only, no implicit padding.
        unsafe { &*(self as *const Self as *const [u8; VERDICT_RECORD_LEN]) }
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != VERDICT_RECORD_LEN {
            return None;
        }
        // SAFETY: the length is checked; every bit pattern is a valid record.
        Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr() as *const Self) })
    }
}

/// Most interfaces (per bank) a packet to a balancer address may arrive on:
/// those the balancers list and those holding their addresses.
pub const MAX_IFACES: u32 = 256;

/// Key of `LB_IFACES` (banked): an interface by index. The value is a `u64`
/// bit set of balancer counter rows ([`iface_bit`]): the balancers whose
/// addresses may be reached through that interface, because they list it in
/// `interfaces` or it holds one of their addresses (a local client's
/// connection shows the device holding the address as its ingress).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct IfaceKey {
    pub bank: u32,
    pub ifindex: u32,
}

/// Balancer row `lb_id`'s bit in an `LB_IFACES` value; 0 for a row past the
/// 64 a `u64` holds (none is: [`MAX_LBS`] is 64).
#[inline(always)]
pub const fn iface_bit(lb_id: u32) -> u64 {
    if lb_id < 64 {
        1 << lb_id
    } else {
        0
    }
}

/// Most load balancers one daemon serves; ids are `0..MAX_LBS`.
pub const MAX_LBS: u32 = 64;
// Every balancer row has its bit in an `LB_IFACES` value.
const _: () = assert!(MAX_LBS <= 64);
/// Counter slot for packets that belong to no balancer (host traffic, non-IP, ...).
pub const NO_LB: u32 = MAX_LBS;
/// Most balancer addresses (per family).
pub const MAX_ADDRS: u32 = 1024;
/// Most stored source prefixes in the security-group and internal-network tries (per family).
pub const MAX_PREFIXES: u32 = 16384;
/// Most (protocol, port range) entries one source prefix may allow after the union
/// with its covering prefixes is compiled in. Bounded so the XDP loop is bounded.
pub const MAX_RANGES: usize = 32;

/// Protocol numbers as stored in [`PortRange::proto`].
pub mod proto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ICMPV6: u8 = 58;
    /// Matches every protocol, every port, and fragments.
    pub const ALL: u8 = 255;
}

/// Value of `LB_ADDRS_V4` / `LB_ADDRS_V6`: which balancer an address belongs to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LbAddr {
    pub lb_id: u32,
    /// Bit set of `LB_FLAG_*`.
    pub flags: u32,
}

/// The balancer's scheme is `internal`: sources outside `INTERNAL_V*` are dropped.
pub const LB_FLAG_INTERNAL: u32 = 1;
/// The balancer has a TCP listener: TCP fragments to it are dropped (they
/// cannot be translated without their ports).
pub const LB_FLAG_TCP_LISTENER: u32 = 2;

/// Key of the IPv4 tries (`SG_V4`, `INTERNAL_V4`). The balancer id is part of the
/// matched bits (always fully matched), so one trie serves every balancer:
/// `prefix_len = 32 + cidr length`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SrcKeyV4 {
    /// [`trie_id`] of bank and balancer.
    pub lb_id: [u8; 4],
    pub addr: [u8; 4],
}

/// Key of the IPv6 tries (`SG_V6`, `INTERNAL_V6`); `prefix_len = 32 + cidr length`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SrcKeyV6 {
    pub lb_id: [u8; 4],
    pub addr: [u8; 16],
}

/// Bits of the key prefix taken by the balancer id.
pub const LB_ID_BITS: u32 = 32;

/// One allowed (protocol, destination port range); inclusive bounds.
/// For ICMP, ICMPv6 and `proto::ALL` the ports are 0..=65535.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortRange {
    pub proto: u8,
    pub _pad: u8,
    pub lo: u16,
    pub hi: u16,
}

/// Value of `SG_V4` / `SG_V6`: everything a source prefix is allowed, already
/// including the rules of every shorter prefix that covers it (an LPM trie only
/// returns the longest match, but security groups are a union).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SgRules {
    pub count: u32,
    pub ranges: [PortRange; MAX_RANGES],
}

impl Default for SgRules {
    fn default() -> Self {
        Self {
            count: 0,
            ranges: [PortRange::default(); MAX_RANGES],
        }
    }
}

impl SgRules {
    /// Whether these rules allow a packet of `proto` to destination port `dport`.
    /// A fragment's ports are unknown, so it needs a rule allowing every port of
    /// its protocol. The XDP program and the daemon's tests share this one
    /// definition.
    #[inline(always)]
    pub fn allows(&self, proto: u8, dport: u16, fragment: bool) -> bool {
        let n = self.count as usize;
        for i in 0..MAX_RANGES {
            if i >= n {
                break;
            }
            let r = &self.ranges[i];
            if r.proto == proto::ALL {
                return true;
            }
            if r.proto == proto {
                if fragment {
                    if r.lo == 0 && r.hi == u16::MAX {
                        return true;
                    }
                } else if r.lo <= dport && dport <= r.hi {
                    return true;
                }
            }
        }
        false
    }
}

/// Why the XDP program decided what it did; index into the per-balancer counters.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// IPv4/IPv6 not addressed to a balancer address.
    PassNotBalancer = 0,
    /// Neither IPv4 nor IPv6 (ARP, LLDP, ...).
    PassNonIp = 1,
    /// ICMPv6 neighbour discovery addressed to a balancer address.
    PassNeighbour = 2,
    /// A security-group rule allows it.
    PassAllowed = 3,
    /// A reply to a connection this host opened.
    PassReply = 4,
    /// Internal balancer, source outside `internal_networks`.
    DropInternal = 5,
    /// No security-group rule allows it.
    DropDenied = 6,
    /// A fragment whose source is not allowed every port of its protocol.
    DropFragment = 7,
    /// Truncated or inconsistent headers.
    DropMalformed = 8,
    /// IPv6 extension-header chain longer than the parser follows, or an
    /// unknown header before the transport header.
    DropUnparsed = 9,
    /// An ICMP error (unreachable, packet too big, time exceeded, parameter
    /// problem) about a connection of this host: path MTU discovery and
    /// connection errors keep working whatever the rules.
    PassRelated = 10,
    /// A TCP SYN the rules allow, to a listener that has no socket at the
    /// moment (no daemon serves it): dropped without an answer, so the
    /// client's retransmission connects once a daemon is back.
    DropNoSocket = 11,
    /// A packet or connection to a balancer address that arrived on an
    /// interface that is neither one of the balancer's `interfaces` nor a
    /// device holding one of its addresses. XDP drops it silently (on the
    /// listed interfaces of another balancer); the sk_lookup program refuses
    /// it everywhere else, which the stack answers with a reset (TCP) or
    /// port unreachable (UDP), counted without bytes.
    DropWrongInterface = 12,
    /// A packet of a TCP listener's flow, client → target, translated and
    /// sent on by XDP.
    FwdToTarget = 13,
    /// A packet of a TCP listener's flow, target → client, translated and
    /// sent on by XDP.
    FwdFromTarget = 14,
    /// A TCP listener's packet dropped for want of the next hop's
    /// link-layer address (the client's retransmission finds it resolved).
    DropNoNeighbour = 15,
    /// A TCP listener's packet dropped: no route to the target, or
    /// forwarding is off on the interface it came in on.
    DropNoRoute = 16,
    /// A SYN to a TCP listener whose group has no target, or for which no
    /// translation source port was free.
    DropNoTarget = 17,
    /// A TCP packet of no known flow to a TCP listener, or of a flow whose
    /// target had to end it: dropped, and answered with a reset so the
    /// client does not wait for a timeout.
    DropNoFlow = 18,
}

pub const NUM_REASONS: u32 = 19;

impl Reason {
    pub const ALL: [Reason; NUM_REASONS as usize] = [
        Reason::PassNotBalancer,
        Reason::PassNonIp,
        Reason::PassNeighbour,
        Reason::PassAllowed,
        Reason::PassReply,
        Reason::DropInternal,
        Reason::DropDenied,
        Reason::DropFragment,
        Reason::DropMalformed,
        Reason::DropUnparsed,
        Reason::PassRelated,
        Reason::DropNoSocket,
        Reason::DropWrongInterface,
        Reason::FwdToTarget,
        Reason::FwdFromTarget,
        Reason::DropNoNeighbour,
        Reason::DropNoRoute,
        Reason::DropNoTarget,
        Reason::DropNoFlow,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Reason::PassNotBalancer => "pass_not_balancer",
            Reason::PassNonIp => "pass_non_ip",
            Reason::PassNeighbour => "pass_neighbour_discovery",
            Reason::PassAllowed => "pass_allowed",
            Reason::PassReply => "pass_reply",
            Reason::DropInternal => "drop_internal_scheme",
            Reason::DropDenied => "drop_no_rule",
            Reason::DropFragment => "drop_fragment",
            Reason::DropMalformed => "drop_malformed",
            Reason::DropUnparsed => "drop_unparsed",
            Reason::PassRelated => "pass_related",
            Reason::DropNoSocket => "drop_no_socket",
            Reason::DropWrongInterface => "drop_wrong_interface",
            Reason::FwdToTarget => "forward_to_target",
            Reason::FwdFromTarget => "forward_from_target",
            Reason::DropNoNeighbour => "drop_no_neighbour",
            Reason::DropNoRoute => "drop_no_route",
            Reason::DropNoTarget => "drop_no_target",
            Reason::DropNoFlow => "drop_no_flow",
        }
    }

    /// The reason numbered `n` (as in [`VerdictRecord::reason`]).
    pub fn from_index(n: u32) -> Option<Reason> {
        Reason::ALL.get(n as usize).copied()
    }

    pub const fn is_drop(self) -> bool {
        match self {
            Reason::PassNotBalancer
            | Reason::PassNonIp
            | Reason::PassNeighbour
            | Reason::PassAllowed
            | Reason::PassReply
            | Reason::PassRelated
            | Reason::FwdToTarget
            | Reason::FwdFromTarget => false,
            Reason::DropInternal
            | Reason::DropDenied
            | Reason::DropFragment
            | Reason::DropMalformed
            | Reason::DropUnparsed
            | Reason::DropNoSocket
            | Reason::DropWrongInterface
            | Reason::DropNoNeighbour
            | Reason::DropNoRoute
            | Reason::DropNoTarget
            | Reason::DropNoFlow => true,
        }
    }
}

/// Index of a counter in the per-CPU `COUNTERS` array.
#[inline(always)]
pub const fn counter_index(lb_slot: u32, reason: Reason) -> u32 {
    lb_slot * NUM_REASONS + reason as u32
}

/// Size of the `COUNTERS` array: one row per balancer plus the `NO_LB` row.
pub const NUM_COUNTERS: u32 = (MAX_LBS + 1) * NUM_REASONS;

/// One counter: packets and bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

#[cfg(feature = "user")]
mod pod {
    // Each of these is repr(C), holds only integers and arrays of integers,
    // and has no implicit padding: any bit pattern is a valid value.
    // SAFETY: plain old data, as said above.
    unsafe impl aya::Pod for super::LbAddr {}
    // SAFETY: plain old data, as said above.
    unsafe impl aya::Pod for super::AddrKeyV4 {}
    // SAFETY: plain old data, as said above.
    unsafe impl aya::Pod for super::AddrKeyV6 {}
    // SAFETY: plain old data, as said above.
    unsafe impl aya::Pod for super::SrcKeyV4 {}
    // SAFETY: plain old data, as said above.
    unsafe impl aya::Pod for super::SrcKeyV6 {}
    // SAFETY: plain old data, as said above.
    unsafe impl aya::Pod for super::PortRange {}
    // SAFETY: plain old data, as said above.
    unsafe impl aya::Pod for super::SgRules {}
    // SAFETY: plain old data, as said above.
    unsafe impl aya::Pod for super::Counter {}
    // SAFETY: plain old data, as said above.
    unsafe impl aya::Pod for super::StateBlob {}
    // SAFETY: plain old data, as said above.
    unsafe impl aya::Pod for super::ListenerKey {}
    // SAFETY: plain old data, as said above.
    unsafe impl aya::Pod for super::ListenerSlots {}
    // SAFETY: plain old data, as said above.
    unsafe impl aya::Pod for super::ListenerCounter {}
    // SAFETY: plain old data, as said above.
    unsafe impl aya::Pod for super::IfaceKey {}
    // SAFETY: plain old data, as said above.
    unsafe impl aya::Pod for super::RingKey {}
    // SAFETY: plain old data, as said above.
    unsafe impl aya::Pod for super::Ring {}
    // SAFETY: plain old data, as said above.
    unsafe impl aya::Pod for super::FwdTarget {}
    // SAFETY: plain old data, as said above.
    unsafe impl aya::Pod for super::FlowKey {}
    // SAFETY: plain old data, as said above.
    unsafe impl aya::Pod for super::FlowNat {}
    // SAFETY: plain old data, as said above.
    unsafe impl aya::Pod for super::FwdConfig {}
    // SAFETY: plain old data, as said above.
    unsafe impl aya::Pod for super::TargetCounter {}
    // SAFETY: plain old data, as said above.
    unsafe impl aya::Pod for super::FwdScratch {}
    // SAFETY: plain old data, as said above.
    unsafe impl aya::Pod for super::NeighKey {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forwarded_listener_carries_its_ring_and_its_slots() {
        let f = ListenerSlots::forwarded(3, 7);
        assert_eq!((f.row, f.ring), (3, 7));
        assert!(f.is_forwarded());
        assert!(!ListenerSlots::of_row(3).is_forwarded());
        assert_eq!(
            (f.sock_v4, f.sock_v6),
            (
                ListenerSlots::of_row(3).sock_v4,
                ListenerSlots::of_row(3).sock_v6
            )
        );
    }

    #[test]
    fn a_verdict_record_round_trips_through_its_bytes() {
        let r = VerdictRecord {
            lb_id: 3,
            reason: Reason::DropDenied as u8,
            proto: proto::UDP,
            family: 6,
            _pad: 0,
            sport: 40312,
            dport: 53,
            src: [1; 16],
            dst: [2; 16],
        };
        assert_eq!(VERDICT_RECORD_LEN, 44, "no implicit padding");
        assert_eq!(VerdictRecord::from_bytes(r.as_bytes()), Some(r));
        assert_eq!(VerdictRecord::from_bytes(&r.as_bytes()[1..]), None);
        for (i, reason) in Reason::ALL.iter().enumerate() {
            assert_eq!(Reason::from_index(i as u32), Some(*reason));
            assert_eq!(*reason as usize, i);
        }
        assert_eq!(Reason::from_index(NUM_REASONS), None);
    }

    /// FNV-1a over every field of every pinned map's layout.
    fn fingerprint(maps: &[MapLayout]) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for b in bytes {
                h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
            }
        };
        for m in maps {
            eat(m.name.as_bytes());
            eat(&[0]);
            for n in [m.map_type, m.key_size, m.value_size, m.max_entries, m.flags] {
                eat(&n.to_le_bytes());
            }
        }
        h
    }

    #[test]
    fn a_change_of_the_pinned_layout_bumps_its_version() {
        let now = fingerprint(&PINNED_MAPS);
        assert_eq!(
            (LAYOUT_VERSION, now),
            (4, 0x7ec5_6db4_00cf_fc8c),
            "the pinned maps changed: bump LAYOUT_VERSION and set its fingerprint to {now:#x}"
        );
    }

    #[test]
    fn every_pinned_map_has_its_own_name() {
        for (i, a) in PINNED_MAPS.iter().enumerate() {
            for b in &PINNED_MAPS[i + 1..] {
                assert_ne!(a.name, b.name);
            }
        }
        assert_eq!(PINNED_MAPS[OBJECT_MAPS.len()], STATE_MAP);
        assert_eq!(STATE_MAP.value_size, 65536);
    }

    #[test]
    fn a_reason_drops_exactly_when_its_name_says_so() {
        for r in Reason::ALL {
            assert_eq!(r.is_drop(), r.name().starts_with("drop_"), "{}", r.name());
            assert!(
                r.is_drop() || r.name().starts_with("pass_") || r.name().starts_with("forward_"),
                "{}",
                r.name()
            );
        }
    }
}
