//! TCP listeners, forwarded by the XDP program itself: the layouts of the
//! maps it reads (the Maglev rings and the targets they point at, written by
//! the daemon) and of the flow tables it keeps.
//!
//! A TCP listener's entry in `LISTENERS` names its ring ([`RingKey`], banked
//! with the rest of the configuration). A ring slot holds a row of `TARGETS`:
//! one forwarding target (address, port, the balancer's address toward it)
//! whose row is stable across reloads, as listener rows are. A new flow is
//! hashed to a slot; its translation is then kept in the flow tables, so
//! rebuilding a ring never moves an established flow. The daemon ends a
//! target's flows (unhealthy, removed, drained) by bumping its `epoch`: a
//! flow that recorded another epoch is reset at its next packet.

/// Slots of a Maglev ring: prime, and over 100 × the targets of a group
/// ([`MAX_RING_TARGETS`]), so a change of the target set moves about 1% of
/// the slots beyond those it must.
pub const RING_SIZE: usize = 16381;
/// Most targets one ring spreads over.
pub const MAX_RING_TARGETS: usize = 64;
/// Most TCP target groups (per bank) whose rings the kernel holds.
pub const MAX_RINGS: u32 = 64;
/// Rows of `TARGETS` (forwarding targets over every TCP group).
pub const MAX_TARGETS: u32 = 1024;
/// Entries of `FLOWS` (established flows: two entries each, one per
/// direction). About 150 bytes per entry in the kernel: 40 MiB.
pub const FLOW_TABLE_SIZE: u32 = 1 << 18;
/// Entries of `NEW_FLOWS` (handshakes in progress, two per flow): a SYN
/// flood fills this table only, never the established one.
pub const NEW_FLOW_TABLE_SIZE: u32 = 1 << 16;
/// `ListenerSlots::ring` of a listener the kernel steers to sockets.
pub const NO_RING: u32 = u32::MAX;

/// Key of `RINGS` (banked): a TCP target group's ring.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct RingKey {
    pub bank: u32,
    pub ring: u32,
}

/// Value of `RINGS`: the Maglev table of one TCP target group, each slot a
/// row of `TARGETS`. Replaced whole in one hash-map update (the kernel
/// swaps values under RCU), so a reader sees one table or the other.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ring {
    pub slots: [u16; RING_SIZE],
    pub _pad: u16,
}

impl Default for Ring {
    fn default() -> Self {
        Self {
            slots: [0; RING_SIZE],
            _pad: 0,
        }
    }
}

/// [`FwdTarget::flags`]: targets see the client's address (only the
/// destination is rewritten; replies must be routed through the balancer).
pub const TARGET_PRESERVE_CLIENT_IP: u8 = 1;

/// Value of `TARGETS` (an array by target row).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FwdTarget {
    /// IPv4 in the first four bytes when `family` is 4.
    pub addr: [u8; 16],
    /// The balancer's own address toward the target: the source of
    /// translated packets (full NAT).
    pub snat: [u8; 16],
    pub port: u16,
    /// 4 or 6; 0 for a free row.
    pub family: u8,
    /// Bit set of `TARGET_*`.
    pub flags: u8,
    /// Bumped when the target's flows must end: a flow recorded with
    /// another epoch is reset at its next packet.
    pub epoch: u32,
}

/// Key of the flow tables: a packet's own addresses and ports as it
/// arrives (either direction).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowKey {
    /// IPv4 in the first four bytes when `family` is 4.
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub family: u8,
    pub proto: u8,
    pub _pad: u16,
}

/// [`FlowNat::flags`]: the entry translates client → target packets.
pub const FLOW_TO_TARGET: u32 = 1;
/// [`FlowNat::flags`]: a FIN or a reset of the flow passed; once the flow
/// has been quiet for [`FLOW_REUSE_QUIET`], a new flow may take its
/// translation (the source port toward the target).
pub const FLOW_CLOSING: u32 = 2;

/// Units of [`FlowNat::since`]: 2^30 ns of the kernel's coarse clock.
pub const FLOW_CLOCK_SHIFT: u32 = 30;
/// Quiet time (in [`FLOW_CLOCK_SHIFT`] units, about 2 s) after which a
/// closing flow's translation may be taken by a new flow. Without reuse, a
/// source port stays taken until the flow table evicts the entry: about
/// 14,000 ports per target at Linux's default range would run out after
/// two seconds of 7,000 new connections per second.
pub const FLOW_REUSE_QUIET: u32 = 2;
/// Age (same units, about 8.6 s) after which a handshake that never
/// completed gives up its translation to a new flow: a client's SYN
/// retransmissions come at 1 s and 3 s.
pub const HANDSHAKE_REUSE_AGE: u32 = 8;

/// Value of the flow tables: how a packet of this key is rewritten and
/// whose counters it goes to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowNat {
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    /// Row of `TARGETS` (and `TARGET_COUNTERS`).
    pub target: u16,
    /// Row of `LISTENER_COUNTERS`.
    pub listener: u16,
    /// The target's epoch when the flow began.
    pub epoch: u32,
    /// Bit set of `FLOW_*`.
    pub flags: u32,
    /// On a half-open client → target entry: the sequence number the
    /// client's handshake ACK must acknowledge (the target's ISN + 1),
    /// recorded from the target's SYN-ACK; 0 before it. Only a client that
    /// saw the SYN-ACK can move its flow to the established table.
    pub ack: u32,
    /// The balancer's counter row.
    pub lb_id: u32,
    /// Coarse clock ([`FLOW_CLOCK_SHIFT`]) of the handshake's first SYN,
    /// then, once closing, of the flow's latest packet.
    pub since: u32,
}

/// Value of `FWD_CONFIG` (one entry, not banked): what the XDP program
/// needs to know about forwarding as a whole.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FwdConfig {
    /// Non-zero when some balancer has a TCP listener: the flow tables are
    /// looked up only then.
    pub enabled: u32,
    /// The source ports full NAT uses (inclusive), reserved from the
    /// host's own ephemeral ports.
    pub port_lo: u16,
    pub port_hi: u16,
}

/// Bytes of `FWD_SCRATCH`'s one (per-CPU) value: room the XDP program's
/// forwarding path works in, since its structures (flow entries, FIB
/// parameters, a reset being built) do not fit the 512-byte BPF stack
/// beside the rest of the program.
pub const FWD_SCRATCH_LEN: usize = 512;

/// Value of `FWD_SCRATCH`: opaque to everyone but the XDP program.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FwdScratch {
    pub bytes: [u64; FWD_SCRATCH_LEN / 8],
}

/// Entries of `NEIGH_MISSES`.
pub const MAX_NEIGH_MISSES: u32 = 256;

/// Key of `NEIGH_MISSES`: a next hop the kernel had no link-layer address
/// for when the XDP program asked (value: the interface index). The daemon
/// asks the kernel to resolve each, then removes it: XDP cannot resolve,
/// and the stack, which would, never sees these flows' packets.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NeighKey {
    /// IPv4 in the first four bytes when `family` is 4.
    pub addr: [u8; 16],
    pub family: u8,
    pub _pad: [u8; 3],
}

/// One row of `TARGET_COUNTERS` (per CPU), by target row.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TargetCounter {
    /// Client → target packets and bytes forwarded.
    pub to_packets: u64,
    pub to_bytes: u64,
    /// Target → client packets and bytes forwarded.
    pub from_packets: u64,
    pub from_bytes: u64,
    /// Flows begun (SYNs that created a flow).
    pub new_flows: u64,
    /// Flows ended by a reset because the target's flows had to end.
    pub flows_reset: u64,
    /// Packets dropped for want of the next hop's link-layer address.
    pub no_neigh: u64,
    pub _pad: u64,
}

/// A flow's 4-tuple hash, with fixed seeds so every host (and the daemon's
/// tests) computes the same: FNV-1a over the key's bytes, then mixed.
#[inline(always)]
pub fn flow_hash(key: &FlowKey) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    let mut i = 0;
    while i < 16 {
        h = (h ^ u32::from(key.saddr[i])).wrapping_mul(0x0100_0193);
        h = (h ^ u32::from(key.daddr[i])).wrapping_mul(0x0100_0193);
        i += 1;
    }
    h = (h ^ u32::from(key.sport)).wrapping_mul(0x0100_0193);
    h = (h ^ u32::from(key.dport)).wrapping_mul(0x0100_0193);
    h = (h ^ u32::from(key.proto)).wrapping_mul(0x0100_0193);
    // murmur3's finaliser: FNV's low bits alone spread poorly.
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    extern crate std;
    use std::vec;

    fn key(last: u8, sport: u16) -> FlowKey {
        let mut k = FlowKey {
            sport,
            dport: 80,
            family: 4,
            proto: 6,
            ..FlowKey::default()
        };
        k.saddr[..4].copy_from_slice(&[10, 231, 40, last]);
        k.daddr[..4].copy_from_slice(&[10, 231, 40, 1]);
        k
    }

    #[test]
    fn the_flow_hash_is_pinned_and_depends_on_every_tuple_field() {
        // Pinned: the daemon and every host must pick the same slot.
        let k = key(2, 40000);
        assert_eq!(flow_hash(&k), GOLDEN);
        let mut changed = [k; 6];
        changed[0].saddr[15] = 1;
        changed[1].daddr[0] = 11;
        changed[2].sport = 40001;
        changed[3].dport = 81;
        changed[4].proto = 17;
        changed[5].saddr[3] = 3;
        for c in changed {
            assert_ne!(flow_hash(&c), GOLDEN, "{c:?}");
        }
    }

    #[test]
    fn flow_hashes_spread_evenly_over_a_ring() {
        // 200 clients × 500 ports over the 16381 slots: about 6.1 a slot.
        let mut slots = vec![0u32; RING_SIZE];
        for last in 0..200u8 {
            for sport in 40000..40500u16 {
                slots[flow_hash(&key(last, sport)) as usize % RING_SIZE] += 1;
            }
        }
        let max = *slots.iter().max().unwrap();
        let empty = slots.iter().filter(|n| **n == 0).count();
        // Poisson(6.1): a slot above 25 or more than 1% empty slots
        // (e^-6.1 = 0.22%) would mean a poor spread.
        assert!(max <= 25, "fullest slot {max}");
        assert!(empty < RING_SIZE / 100, "{empty} empty slots");
    }

    const GOLDEN: u32 = 341_937_186;
}
