//! The kernel's forwarding tables for TCP listeners, kept in step with
//! target health: which targets a group's Maglev ring spreads new flows
//! over (the usable ones, by their weight now, slow start included; all of
//! them when none is usable, failing open as HTTP groups do), and whose
//! flows must end (a target turned unhealthy, or removed once its
//! deregistration delay is over), which the kernel learns from an epoch
//! bump on the target's row.

use std::collections::HashMap;
use std::net::IpAddr;

use lb_common::{FwdConfig, FwdTarget, Ring};
use tracing::{info, warn};

use crate::admin::DrainingTarget;
use crate::config::model::{Config, TargetProtocol};
use crate::kernel::forwarding::{self, RingTarget};
use crate::kernel::maps::{Maps, MapsError};
use crate::kernel::TargetRows;
use crate::proxy::service::Groups;
use crate::targets::group::TargetState;

#[derive(Default)]
pub struct Forwarding {
    rows: TargetRows,
    /// What each row holds in the kernel now.
    written: HashMap<u32, FwdTarget>,
    /// Each ring's targets as last written (`RingKey::ring` → targets).
    rings: HashMap<u32, Vec<RingTarget>>,
    /// The translation source ports, once reserved.
    ports: Option<(u16, u16)>,
    /// The balancer's address toward each target, by target address.
    sources: HashMap<IpAddr, Option<IpAddr>>,
    /// Whether the targets' neighbour entries were asked for since the
    /// rows last changed.
    warmed: bool,
}

/// A forwarding target and what it may receive now.
struct Live<'a> {
    group: &'a str,
    target: &'a TargetState,
    /// Takes new flows (in the ring), and with what weight.
    weight: u32,
    /// Deregistered: takes no new flow, keeps its own until its delay ends.
    draining: bool,
    preserve: bool,
}

impl Forwarding {
    /// The rings of `cfg`'s TCP listeners, with every target row they name
    /// written first (rows are given to `cfg`'s TCP targets and to those
    /// still draining). For the configuration about to be applied: the
    /// rings go into its bank.
    pub fn prepare(
        &mut self,
        cfg: &Config,
        groups: &Groups,
        draining: &[DrainingTarget],
        maps: &mut Maps,
    ) -> Result<Vec<(u32, Box<Ring>)>, MapsError> {
        let any_tcp = !forwarding::ring_names(cfg).is_empty();
        if any_tcp && self.ports.is_none() {
            match forwarding::reserve_translation_ports() {
                Ok(p) => {
                    info!(ports = %format!("{}-{}", p.0, p.1), "source ports reserved for TCP listeners' translation");
                    self.ports = Some(p);
                }
                Err(e) => {
                    warn!(error = %e, "cannot reserve source ports for TCP listeners; full NAT may collide with the host's own connections")
                }
            }
        }
        let (lo, hi) = self.ports.unwrap_or((61000, 65535));
        maps.set_fwd_config(&FwdConfig {
            enabled: u32::from(any_tcp),
            port_lo: lo,
            port_hi: hi,
        })?;
        let live = live_targets(cfg, groups, draining);
        let keys = live.iter().map(|l| (l.group.to_string(), l.target.addr()));
        let (rows, _) = self.rows.next(keys);
        let old = std::mem::replace(&mut self.rows, rows);
        self.sources.clear();
        self.warmed = false;
        self.write_rows(&live, maps)?;
        // Rows no target holds any more: their flows end.
        for (row, _, _) in old.rows() {
            if !self.rows.rows().iter().any(|(r, _, _)| *r == row) {
                self.retire(row, maps)?;
            }
        }
        let rings = self.ring_targets(cfg, &live);
        let mut out = Vec::new();
        self.rings.clear();
        for (key, targets) in rings {
            for v6 in [false, true] {
                let k = forwarding::ring_key(key, v6);
                let targets = of_family(&targets, v6);
                info!(ring = k, targets = %describe(&targets), "TCP listener ring");
                if let Some(t) = settled_table(maps, k, &targets, v6) {
                    out.push((k, t));
                }
                self.rings.insert(k, targets);
            }
        }
        Ok(out)
    }

    /// Brings the active bank's rings and the target rows in step with
    /// target health (every few hundred milliseconds).
    pub fn sync(
        &mut self,
        cfg: &Config,
        groups: &Groups,
        draining: &[DrainingTarget],
        maps: &mut Maps,
    ) -> Result<(), MapsError> {
        if forwarding::ring_names(cfg).is_empty() {
            return Ok(());
        }
        let live = live_targets(cfg, groups, draining);
        self.write_rows(&live, maps)?;
        // Rows of draining targets whose delay is over.
        for (row, group, addr) in self.rows.rows() {
            if !live
                .iter()
                .any(|l| l.group == group && l.target.addr() == addr)
            {
                self.retire(row, maps)?;
            }
        }
        for (key, targets) in self.ring_targets(cfg, &live) {
            for v6 in [false, true] {
                let k = forwarding::ring_key(key, v6);
                let now = of_family(&targets, v6);
                if self.rings.get(&k) == Some(&now) {
                    continue;
                }
                let table = settled_table(maps, k, &now, v6);
                maps.set_ring(k, table.as_deref())?;
                info!(ring = k, targets = %describe(&now), "TCP listener ring rebuilt");
                self.rings.insert(k, now);
            }
        }
        self.warm_neighbours(maps, &live);
        Ok(())
    }

    /// Writes each live target's row; a row that changed hands, or whose
    /// target stopped taking flows and is not draining, gets a new epoch
    /// (its flows end).
    fn write_rows(&mut self, live: &[Live<'_>], maps: &mut Maps) -> Result<(), MapsError> {
        for l in live {
            let addr = l.target.addr();
            let Some(row) = self.rows.row(l.group, addr) else {
                continue;
            };
            let source = *self
                .sources
                .entry(addr.ip())
                .or_insert_with(|| forwarding::source_toward(addr.ip()).ok());
            let before = match self.written.get(&row) {
                Some(t) => *t,
                // First write by this process: what a predecessor left.
                None => maps.target(row).unwrap_or_default(),
            };
            let mut epoch = before.epoch;
            let mut next = forwarding::fwd_target(addr, source, l.preserve, epoch);
            // A predecessor's row (restart, takeover) that names the same
            // target keeps its epoch: its flows go on.
            let same_target = next.addr == before.addr
                && next.port == before.port
                && next.family == before.family;
            let alive = l.weight > 0 || l.draining;
            let was_alive = before.family != 0;
            if !same_target || (was_alive && !alive) {
                epoch = epoch.wrapping_add(1);
            }
            if !alive {
                // Keeps its row (it may come back) but takes no flow.
                next.family = 0;
            }
            next.epoch = epoch;
            if self.written.get(&row) != Some(&next) {
                maps.set_target(row, &next)?;
                self.written.insert(row, next);
            }
        }
        Ok(())
    }

    /// Ends every flow of row `row` and frees it.
    fn retire(&mut self, row: u32, maps: &mut Maps) -> Result<(), MapsError> {
        let Some(before) = self.written.remove(&row) else {
            return Ok(());
        };
        let gone = FwdTarget {
            epoch: before.epoch.wrapping_add(1),
            ..FwdTarget::default()
        };
        maps.set_target(row, &gone)
    }

    /// (row, group, target) of every forwarding target row.
    pub fn rows(&self) -> Vec<(u32, String, std::net::SocketAddr)> {
        self.rows.rows()
    }

    /// Each ring's targets with the weight they have now.
    fn ring_targets(&self, cfg: &Config, live: &[Live<'_>]) -> Vec<(u32, Vec<RingTarget>)> {
        forwarding::ring_names(cfg)
            .into_iter()
            .enumerate()
            .map(|(id, name)| {
                let targets = live
                    .iter()
                    .filter(|l| l.group == name && l.weight > 0)
                    .filter_map(|l| {
                        Some(RingTarget {
                            row: self.rows.row(l.group, l.target.addr())?,
                            addr: l.target.addr(),
                            weight: l.weight,
                        })
                    })
                    .collect();
                (id as u32, targets)
            })
            .collect()
    }

    /// Asks the kernel to resolve each next hop a forwarded packet found
    /// no neighbour entry for (the packet was dropped; the client's
    /// retransmission finds the entry), and the targets' own once after a
    /// change of rows.
    fn warm_neighbours(&mut self, maps: &mut Maps, live: &[Live<'_>]) {
        let mut hops = maps.take_neigh_misses();
        if !self.warmed {
            self.warmed = true;
            hops.extend(live.iter().map(|l| l.target.addr().ip()));
        }
        hops.sort_unstable();
        hops.dedup();
        for hop in hops {
            if let Err(e) = forwarding::warm_neighbour(hop) {
                warn!(next_hop = %hop, error = %e, "cannot resolve a forwarding next hop's neighbour entry");
            }
        }
    }
}

/// Ring `k`'s table for `targets` (of one family), settled on the one the
/// kernel's active bank holds now (at a takeover, the predecessor's), so a
/// reload or a health change moves no more new-flow choices than it must.
fn settled_table(maps: &Maps, k: u32, targets: &[RingTarget], v6: bool) -> Option<Box<Ring>> {
    forwarding::table(targets, v6, maps.ring(k).as_ref())
}

/// `addr*weight ...`, for logs.
fn describe(targets: &[RingTarget]) -> String {
    let parts: Vec<String> = targets
        .iter()
        .map(|t| format!("{}*{}", t.addr, t.weight))
        .collect();
    parts.join(" ")
}

fn of_family(targets: &[RingTarget], v6: bool) -> Vec<RingTarget> {
    targets
        .iter()
        .filter(|t| t.addr.is_ipv6() == v6)
        .copied()
        .collect()
}

/// The targets of every TCP group a TCP listener forwards to, with the
/// weight each takes new flows with, and the draining ones of those groups
/// (weight 0).
fn live_targets<'a>(
    cfg: &'a Config,
    groups: &'a Groups,
    draining: &'a [DrainingTarget],
) -> Vec<Live<'a>> {
    let mut out = Vec::new();
    for name in forwarding::ring_names(cfg) {
        let Some(g) = groups.get(name) else {
            continue;
        };
        if g.config().protocol != TargetProtocol::Tcp {
            continue;
        }
        let preserve = g.config().preserve_client_ip;
        let any_usable = g.targets().iter().any(|t| t.is_usable());
        for t in g.targets() {
            // None usable: all take flows (fail open), but never one that
            // drains.
            let takes = (t.is_usable() || !any_usable) && !t.is_draining();
            out.push(Live {
                group: name,
                target: t,
                weight: if takes { t.effective_weight() } else { 0 },
                draining: t.is_draining(),
                preserve,
            });
        }
        for d in draining.iter().filter(|d| d.group == name) {
            if out
                .iter()
                .any(|l| l.group == name && l.target.addr() == d.target.addr())
            {
                continue;
            }
            out.push(Live {
                group: name,
                target: &d.target,
                weight: 0,
                draining: true,
                preserve,
            });
        }
    }
    out
}
