//! Writing compiled configurations into the XDP program's maps.
//!
//! Two banks: a new configuration is written into the bank the program is not
//! reading, then `ACTIVE_BANK` flips to it in one array update, then the
//! daemon waits until no program that read the old bank number still runs
//! ([`Grace`]), then the old bank is emptied. A packet never sees half of a
//! configuration, nor an emptied one.

use std::net::IpAddr;
use std::os::fd::AsRawFd;

use aya::maps::{lpm_trie::Key, Array, HashMap, LpmTrie, MapData, MapError, PerCpuArray, SockMap};
use aya::Ebpf;
use lb_common::{
    map_names, proto, trie_id, AddrKeyV4, AddrKeyV6, Counter, FlowKey, FlowNat, FwdConfig,
    FwdTarget, IfaceKey, LbAddr, ListenerCounter, ListenerKey, ListenerSlots, NeighKey, Ring,
    RingKey, SgRules, SrcKeyV4, SrcKeyV6, TargetCounter, LB_ID_BITS, NUM_BANKS,
};

use super::compile::KernelConfig;
use super::grace::{Grace, GraceError};
use super::host::{self, HostError};

#[derive(Debug, thiserror::Error)]
pub enum MapsError {
    #[error("the XDP object has no map {0:?} (built from another version of lb-common?)")]
    Missing(&'static str),
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("cannot count the possible CPUs: {0}")]
    Cpus(std::io::Error),
    #[error(transparent)]
    Grace(#[from] GraceError),
    #[error("cannot tell which interfaces hold the balancers' addresses: {0}")]
    Host(#[from] HostError),
}

pub(super) fn ctx(name: &'static str) -> impl FnOnce(MapError) -> MapsError {
    move |source| MapsError::Map { name, source }
}

pub struct Maps {
    active: Array<MapData, u32>,
    addrs_v4: HashMap<MapData, AddrKeyV4, LbAddr>,
    addrs_v6: HashMap<MapData, AddrKeyV6, LbAddr>,
    internal_v4: LpmTrie<MapData, SrcKeyV4, u8>,
    internal_v6: LpmTrie<MapData, SrcKeyV6, u8>,
    sg_v4: LpmTrie<MapData, SrcKeyV4, SgRules>,
    sg_v6: LpmTrie<MapData, SrcKeyV6, SgRules>,
    pub(crate) counters: PerCpuArray<MapData, Counter>,
    rings: HashMap<MapData, RingKey, Ring>,
    targets: Array<MapData, FwdTarget>,
    pub(crate) target_counters: PerCpuArray<MapData, TargetCounter>,
    flows: HashMap<MapData, FlowKey, FlowNat>,
    new_flows: HashMap<MapData, FlowKey, FlowNat>,
    fwd_config: Array<MapData, FwdConfig>,
    neigh_misses: HashMap<MapData, NeighKey, u32>,
    listeners: HashMap<MapData, ListenerKey, ListenerSlots>,
    socks: SockMap<MapData>,
    pub(crate) listener_counters: PerCpuArray<MapData, ListenerCounter>,
    ifaces: HashMap<MapData, IfaceKey, u64>,
    bank: u32,
    grace: Grace,
}

/// The steps of a configuration swap, apart so their order can be tested.
pub(crate) trait BankOps {
    /// Empties `bank` of configuration entries.
    fn clear(&mut self, bank: u32) -> Result<(), MapsError>;
    fn write(&mut self, bank: u32, cfg: &KernelConfig) -> Result<(), MapsError>;
    /// Makes `bank` the one programs read from now on.
    fn flip(&mut self, bank: u32) -> Result<(), MapsError>;
    /// Returns once no program that may have read the old bank runs.
    fn wait_for_readers(&mut self) -> Result<(), MapsError>;
}

/// Writes `cfg` into the bank after `active` and makes it active; returns
/// it. Leftovers of a failed swap in that bank go first: nothing reads it.
/// The old bank is emptied only after the wait, so a program that read it
/// before the flip finds it whole. If the wait fails the old bank stays as
/// it is (never read again; the next swap empties it before writing).
pub(crate) fn swap(
    ops: &mut impl BankOps,
    active: u32,
    cfg: &KernelConfig,
) -> Result<u32, MapsError> {
    let next = (active + 1) % NUM_BANKS;
    ops.clear(next)?;
    ops.write(next, cfg)?;
    ops.flip(next)?;
    ops.wait_for_readers()?;
    ops.clear(active)?;
    Ok(next)
}

fn take<T: TryFrom<aya::maps::Map, Error = MapError>>(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<T, MapsError> {
    let map = ebpf.take_map(name).ok_or(MapsError::Missing(name))?;
    T::try_from(map).map_err(ctx(name))
}

fn key_v4(bank: u32, lb: u32, net: ipnet::Ipv4Net) -> Key<SrcKeyV4> {
    Key::new(
        LB_ID_BITS + u32::from(net.prefix_len()),
        SrcKeyV4 {
            lb_id: trie_id(bank, lb),
            addr: net.network().octets(),
        },
    )
}

fn key_v6(bank: u32, lb: u32, net: ipnet::Ipv6Net) -> Key<SrcKeyV6> {
    Key::new(
        LB_ID_BITS + u32::from(net.prefix_len()),
        SrcKeyV6 {
            lb_id: trie_id(bank, lb),
            addr: net.network().octets(),
        },
    )
}

fn listener_key(bank: u32, lb_id: u32, port: u16) -> ListenerKey {
    ListenerKey {
        bank,
        lb_id,
        port,
        proto: proto::TCP,
        _pad: 0,
    }
}

fn bank_of(id: [u8; 4]) -> u32 {
    u32::from_be_bytes(id) >> 16
}

impl Maps {
    pub fn take_from(ebpf: &mut Ebpf) -> Result<Self, MapsError> {
        let active: Array<MapData, u32> = take(ebpf, map_names::ACTIVE_BANK)?;
        let bank = active.get(&0, 0).map_err(ctx(map_names::ACTIVE_BANK))?;
        Ok(Self {
            active,
            addrs_v4: take(ebpf, map_names::LB_ADDRS_V4)?,
            addrs_v6: take(ebpf, map_names::LB_ADDRS_V6)?,
            internal_v4: take(ebpf, map_names::INTERNAL_V4)?,
            internal_v6: take(ebpf, map_names::INTERNAL_V6)?,
            sg_v4: take(ebpf, map_names::SG_V4)?,
            sg_v6: take(ebpf, map_names::SG_V6)?,
            counters: take(ebpf, map_names::COUNTERS)?,
            rings: take(ebpf, map_names::RINGS)?,
            targets: take(ebpf, map_names::TARGETS)?,
            target_counters: take(ebpf, map_names::TARGET_COUNTERS)?,
            flows: take(ebpf, map_names::FLOWS)?,
            new_flows: take(ebpf, map_names::NEW_FLOWS)?,
            fwd_config: take(ebpf, map_names::FWD_CONFIG)?,
            neigh_misses: take(ebpf, map_names::NEIGH_MISSES)?,
            listeners: take(ebpf, map_names::LISTENERS)?,
            socks: take(ebpf, map_names::SOCKS)?,
            listener_counters: take(ebpf, map_names::LISTENER_COUNTERS)?,
            ifaces: take(ebpf, map_names::LB_IFACES)?,
            bank,
            grace: Grace::new()?,
        })
    }

    /// Reads which bank is active from the kernel again: another process
    /// (a successor that left half-way) may have flipped it.
    pub fn reread_active_bank(&mut self) -> Result<(), MapsError> {
        self.bank = self
            .active
            .get(&0, 0)
            .map_err(ctx(map_names::ACTIVE_BANK))?;
        Ok(())
    }

    /// The bank the program reads now.
    pub fn active_bank(&self) -> u32 {
        self.bank
    }

    /// Writes `cfg` into the inactive bank, makes it active, waits for the
    /// programs that may still read the old one, empties it ([`swap`]). On
    /// an error before the flip the active configuration is untouched.
    pub fn apply(&mut self, cfg: &KernelConfig) -> Result<(), MapsError> {
        let active = self.bank;
        swap(self, active, cfg).map(|_| ())
    }

    fn write_bank(&mut self, bank: u32, cfg: &KernelConfig) -> Result<(), MapsError> {
        for (addr, v) in &cfg.addrs_v4 {
            self.addrs_v4
                .insert(AddrKeyV4 { bank, addr: *addr }, v, 0)
                .map_err(ctx(map_names::LB_ADDRS_V4))?;
        }
        for (addr, v) in &cfg.addrs_v6 {
            self.addrs_v6
                .insert(AddrKeyV6 { bank, addr: *addr }, v, 0)
                .map_err(ctx(map_names::LB_ADDRS_V6))?;
        }
        for (lb, net) in &cfg.internal_v4 {
            self.internal_v4
                .insert(&key_v4(bank, *lb, *net), 1, 0)
                .map_err(ctx(map_names::INTERNAL_V4))?;
        }
        for (lb, net) in &cfg.internal_v6 {
            self.internal_v6
                .insert(&key_v6(bank, *lb, *net), 1, 0)
                .map_err(ctx(map_names::INTERNAL_V6))?;
        }
        for (lb, net, rules) in &cfg.sg_v4 {
            self.sg_v4
                .insert(&key_v4(bank, *lb, *net), rules, 0)
                .map_err(ctx(map_names::SG_V4))?;
        }
        for (lb, net, rules) in &cfg.sg_v6 {
            self.sg_v6
                .insert(&key_v6(bank, *lb, *net), rules, 0)
                .map_err(ctx(map_names::SG_V6))?;
        }
        for (lb_id, port, slots) in &cfg.listeners {
            self.listeners
                .insert(listener_key(bank, *lb_id, *port), slots, 0)
                .map_err(ctx(map_names::LISTENERS))?;
        }
        for (ring, table) in &cfg.rings {
            self.rings
                .insert(RingKey { bank, ring: *ring }, table.as_ref(), 0)
                .map_err(ctx(map_names::RINGS))?;
        }
        // Resolved now, not at compile time: indexes and addresses are the
        // host's. An interface recreated with a new index needs a reload, as
        // its XDP attachment does.
        for (ifindex, mask) in host::resolve_interfaces(cfg)? {
            self.ifaces
                .insert(IfaceKey { bank, ifindex }, mask, 0)
                .map_err(ctx(map_names::LB_IFACES))?;
        }
        Ok(())
    }

    fn clear_bank(&mut self, bank: u32) -> Result<(), MapsError> {
        // Collect first: removing while iterating a BPF map restarts the walk.
        let v4: Vec<AddrKeyV4> = self
            .addrs_v4
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.bank == bank)
            .collect();
        for k in v4 {
            self.addrs_v4
                .remove(&k)
                .map_err(ctx(map_names::LB_ADDRS_V4))?;
        }
        let v6: Vec<AddrKeyV6> = self
            .addrs_v6
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.bank == bank)
            .collect();
        for k in v6 {
            self.addrs_v6
                .remove(&k)
                .map_err(ctx(map_names::LB_ADDRS_V6))?;
        }
        clear_trie(
            &mut self.internal_v4,
            bank,
            |k| k.lb_id,
            map_names::INTERNAL_V4,
        )?;
        clear_trie(
            &mut self.internal_v6,
            bank,
            |k| k.lb_id,
            map_names::INTERNAL_V6,
        )?;
        clear_trie(&mut self.sg_v4, bank, |k| k.lb_id, map_names::SG_V4)?;
        clear_trie(&mut self.sg_v6, bank, |k| k.lb_id, map_names::SG_V6)?;
        let listeners: Vec<ListenerKey> = self
            .listeners
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.bank == bank)
            .collect();
        for k in listeners {
            self.listeners
                .remove(&k)
                .map_err(ctx(map_names::LISTENERS))?;
        }
        let ifaces: Vec<IfaceKey> = self
            .ifaces
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.bank == bank)
            .collect();
        for k in ifaces {
            self.ifaces.remove(&k).map_err(ctx(map_names::LB_IFACES))?;
        }
        let rings: Vec<RingKey> = self
            .rings
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.bank == bank)
            .collect();
        for k in rings {
            self.rings.remove(&k).map_err(ctx(map_names::RINGS))?;
        }
        Ok(())
    }

    /// The `LB_IFACES` entries of one bank: (interface index, balancer rows
    /// bit set). For tests and diagnostics.
    pub fn iface_entries(&self, bank: u32) -> Vec<(u32, u64)> {
        let mut entries: Vec<_> = self
            .ifaces
            .iter()
            .filter_map(Result::ok)
            .filter(|(k, _)| k.bank == bank)
            .map(|(k, v)| (k.ifindex, v))
            .collect();
        entries.sort_unstable();
        entries
    }

    /// Puts `socket`, a listening TCP socket, into `SOCKS` slot `slot`:
    /// connections steered there go to its SO_REUSEPORT group. The slot
    /// empties by itself when the socket closes.
    pub fn set_socket(&mut self, slot: u32, socket: &impl AsRawFd) -> Result<(), MapsError> {
        self.socks
            .set(slot, socket, 0)
            .map_err(ctx(map_names::SOCKS))
    }

    /// Empties `SOCKS` slot `slot` (empty already is fine).
    pub fn clear_socket(&mut self, slot: u32) -> Result<(), MapsError> {
        match self.socks.clear_index(&slot) {
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {
                Ok(())
            }
            r => r.map_err(ctx(map_names::SOCKS)),
        }
    }

    /// The `LISTENERS` entries of one bank: (balancer id, port, slots). For
    /// tests and diagnostics.
    pub fn listener_entries(&self, bank: u32) -> Vec<(u32, u16, ListenerSlots)> {
        let mut entries: Vec<_> = self
            .listeners
            .iter()
            .filter_map(Result::ok)
            .filter(|(k, _)| k.bank == bank)
            .map(|(k, v)| (k.lb_id, k.port, v))
            .collect();
        entries.sort_by_key(|e| (e.0, e.1));
        entries
    }

    /// Replaces ring `ring` (`RingKey::ring`) of the active bank in one
    /// update (the kernel swaps the value whole), or removes it (`None`).
    pub fn set_ring(&mut self, ring: u32, table: Option<&Ring>) -> Result<(), MapsError> {
        let key = RingKey {
            bank: self.bank,
            ring,
        };
        match table {
            Some(t) => self.rings.insert(key, t, 0).map_err(ctx(map_names::RINGS)),
            None => match self.rings.remove(&key) {
                Err(MapError::SyscallError(e))
                    if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
                {
                    Ok(())
                }
                r => r.map_err(ctx(map_names::RINGS)),
            },
        }
    }

    /// The active bank's ring `ring`, if written. For tests and diagnostics.
    pub fn ring(&self, ring: u32) -> Option<Ring> {
        let key = RingKey {
            bank: self.bank,
            ring,
        };
        self.rings.get(&key, 0).ok()
    }

    /// Slots per target row over every ring of the active bank: each
    /// target's share of new flows now. For metrics.
    pub fn ring_slots(&self) -> std::collections::BTreeMap<u32, u64> {
        let mut slots = std::collections::BTreeMap::new();
        let keys: Vec<RingKey> = self
            .rings
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.bank == self.bank)
            .collect();
        for k in keys {
            if let Ok(ring) = self.rings.get(&k, 0) {
                for &row in &ring.slots {
                    *slots.entry(u32::from(row)).or_insert(0) += 1;
                }
            }
        }
        slots
    }

    /// Writes forwarding target row `row`.
    pub fn set_target(&mut self, row: u32, target: &FwdTarget) -> Result<(), MapsError> {
        self.targets
            .set(row, target, 0)
            .map_err(ctx(map_names::TARGETS))
    }

    /// Forwarding target row `row` as the kernel holds it.
    pub fn target(&self, row: u32) -> Result<FwdTarget, MapsError> {
        self.targets.get(&row, 0).map_err(ctx(map_names::TARGETS))
    }

    pub fn set_fwd_config(&mut self, cfg: &FwdConfig) -> Result<(), MapsError> {
        self.fwd_config
            .set(0, cfg, 0)
            .map_err(ctx(map_names::FWD_CONFIG))
    }

    /// Entries in the established and the handshake flow tables (two per
    /// flow). A walk over the tables: for metrics, not per packet.
    pub fn flow_entries(&self) -> (usize, usize) {
        (self.flows.keys().count(), self.new_flows.keys().count())
    }

    /// Takes the next hops the XDP program found no neighbour entry for
    /// since the last call (at most `MAX_NEIGH_MISSES`, the most recent).
    pub fn take_neigh_misses(&mut self) -> Vec<IpAddr> {
        let keys: Vec<NeighKey> = self.neigh_misses.keys().filter_map(Result::ok).collect();
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            // Removed first: a miss recorded again meanwhile is kept for
            // the next call.
            let _ = self.neigh_misses.remove(&k);
            match k.family {
                4 => out.push(IpAddr::from([k.addr[0], k.addr[1], k.addr[2], k.addr[3]])),
                6 => out.push(IpAddr::from(k.addr)),
                _ => {}
            }
        }
        out
    }

    /// Every entry of the IPv4 security-group trie, of both banks: (bank,
    /// balancer id, source prefix length, source, rules). For tests and
    /// diagnostics.
    pub fn sg_v4_entries(&self) -> Vec<(u32, u32, u8, [u8; 4], SgRules)> {
        self.sg_v4
            .iter()
            .filter_map(Result::ok)
            .map(|(k, v)| {
                let d = k.data();
                let id = u32::from_be_bytes(d.lb_id) & 0xffff;
                (
                    bank_of(d.lb_id),
                    id,
                    (k.prefix_len() - LB_ID_BITS) as u8,
                    d.addr,
                    v,
                )
            })
            .collect()
    }
}

impl BankOps for Maps {
    fn clear(&mut self, bank: u32) -> Result<(), MapsError> {
        self.clear_bank(bank)
    }

    fn write(&mut self, bank: u32, cfg: &KernelConfig) -> Result<(), MapsError> {
        self.write_bank(bank, cfg)
    }

    fn flip(&mut self, bank: u32) -> Result<(), MapsError> {
        self.active
            .set(0, bank, 0)
            .map_err(ctx(map_names::ACTIVE_BANK))?;
        self.bank = bank;
        Ok(())
    }

    fn wait_for_readers(&mut self) -> Result<(), MapsError> {
        Ok(self.grace.wait()?)
    }
}

fn clear_trie<K: aya::Pod, V: aya::Pod>(
    trie: &mut LpmTrie<MapData, K, V>,
    bank: u32,
    id_of: impl Fn(&K) -> [u8; 4],
    name: &'static str,
) -> Result<(), MapsError> {
    let keys: Vec<Key<K>> = trie
        .keys()
        .filter_map(Result::ok)
        .filter(|k| bank_of(id_of(&k.data())) == bank)
        .collect();
    for k in keys {
        trie.remove(&k).map_err(ctx(name))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records the steps of a swap; fails the step named `fail`.
    #[derive(Default)]
    struct Steps {
        log: Vec<String>,
        fail: Option<&'static str>,
    }

    impl Steps {
        fn step(&mut self, what: &'static str, bank: Option<u32>) -> Result<(), MapsError> {
            self.log.push(match bank {
                Some(b) => format!("{what} {b}"),
                None => what.to_string(),
            });
            if self.fail == Some(what) {
                return Err(MapsError::Missing("test"));
            }
            Ok(())
        }
    }

    impl BankOps for Steps {
        fn clear(&mut self, bank: u32) -> Result<(), MapsError> {
            self.step("clear", Some(bank))
        }
        fn write(&mut self, bank: u32, _: &KernelConfig) -> Result<(), MapsError> {
            self.step("write", Some(bank))
        }
        fn flip(&mut self, bank: u32) -> Result<(), MapsError> {
            self.step("flip", Some(bank))
        }
        fn wait_for_readers(&mut self) -> Result<(), MapsError> {
            self.step("wait", None)
        }
    }

    #[test]
    fn the_old_bank_is_emptied_only_after_the_readers_are_waited_for() {
        let mut s = Steps::default();
        assert_eq!(swap(&mut s, 0, &KernelConfig::default()).unwrap(), 1);
        assert_eq!(s.log, ["clear 1", "write 1", "flip 1", "wait", "clear 0"]);
        let mut s = Steps::default();
        assert_eq!(swap(&mut s, 1, &KernelConfig::default()).unwrap(), 0);
        assert_eq!(s.log, ["clear 0", "write 0", "flip 0", "wait", "clear 1"]);
    }

    #[test]
    fn a_failed_wait_leaves_the_old_bank_whole() {
        let mut s = Steps {
            fail: Some("wait"),
            ..Steps::default()
        };
        assert!(swap(&mut s, 0, &KernelConfig::default()).is_err());
        assert_eq!(s.log, ["clear 1", "write 1", "flip 1", "wait"]);
    }

    #[test]
    fn a_failed_write_never_flips() {
        let mut s = Steps {
            fail: Some("write"),
            ..Steps::default()
        };
        assert!(swap(&mut s, 0, &KernelConfig::default()).is_err());
        assert_eq!(s.log, ["clear 1", "write 1"]);
    }
}
