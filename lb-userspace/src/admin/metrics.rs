//! The Prometheus exposition of `/metrics`: the listeners' and groups'
//! counters, per-worker connection spread, and the kernel's counters.

use crate::metrics::{Exposition, GroupRow, Kind};
use crate::proxy::conn::spread::Spread;
use crate::targets::health::HealthState;

use super::AdminView;

/// A metric family with a sample per socket group and worker: name, type,
/// help, and how to read a worker's value.
type PerWorkerFamily = (&'static str, Kind, &'static str, fn(&Spread, usize) -> u64);

pub fn metrics(view: &AdminView) -> String {
    let mut e = Exposition::default();
    let names: Vec<String> = view
        .listeners
        .iter()
        .map(|l| format!("{}:{}", l.lb, l.port))
        .collect();
    let listeners: Vec<_> = view
        .listeners
        .iter()
        .zip(&names)
        .map(|(l, name)| (l.lb.as_str(), name.as_str(), &*l.metrics))
        .collect();
    e.listeners(&listeners);
    // Per socket group (listener and address family) and worker.
    let per_worker: [PerWorkerFamily; 2] = [
        (
            "xalb_worker_active_connection_count",
            Kind::Gauge,
            "Open client connections per listener, address family and data-plane worker",
            |spread, worker| spread.open_on(worker) as u64,
        ),
        (
            "xalb_worker_moved_connection_count",
            Kind::Counter,
            "Client connections a data-plane worker passed to a faster one between requests, per listener and address family",
            |spread, worker| spread.load().moved(worker),
        ),
    ];
    for (name, kind, help, value) in per_worker {
        let mut f = e.family(name, kind, help);
        for s in &view.sockets {
            for worker in 0..s.spread.workers() {
                let label = worker.to_string();
                f.sample(
                    &[
                        ("load_balancer", s.lb.as_str()),
                        ("listener", s.listener.as_str()),
                        ("family", s.family),
                        ("worker", label.as_str()),
                    ],
                    value(&s.spread, worker),
                );
            }
        }
    }
    let draining = view.draining.lock().unwrap();
    let groups: Vec<GroupRow> = view
        .groups
        .iter()
        .map(|(lb, g)| {
            let states: Vec<HealthState> = g
                .targets()
                .iter()
                .chain(
                    draining
                        .iter()
                        .filter(|d| d.group == g.name())
                        .map(|d| &d.target),
                )
                .map(|t| t.health.lock().unwrap().state)
                .collect();
            let count = |s: HealthState| states.iter().filter(|&&x| x == s).count();
            GroupRow {
                lb,
                group: g.name(),
                metrics: &g.metrics,
                healthy: count(HealthState::Healthy),
                unhealthy: count(HealthState::Unhealthy),
                by_state: HealthState::ALL
                    .iter()
                    .map(|&s| (s.as_str(), count(s)))
                    .collect(),
            }
        })
        .collect();
    drop(draining);
    e.groups(&groups);
    if let Some(dp) = &view.datapath {
        let dp = dp.lock().unwrap();
        if let Ok(rows) = dp.maps.read_listener_counters(&view.listener_rows) {
            let names: Vec<String> = rows
                .iter()
                .map(|r| format!("{}:{}", r.lb, r.port))
                .collect();
            let mut f = e.family(
                "xalb_listener_steered_connection_count_total",
                Kind::Counter,
                "Connection attempts the kernel steered to the listener's sockets (SYN retransmissions included)",
            );
            for (r, name) in rows.iter().zip(&names) {
                f.sample(
                    &[
                        ("load_balancer", r.lb.as_str()),
                        ("listener", name.as_str()),
                    ],
                    r.steered,
                );
            }
            let mut f = e.family(
                "xalb_listener_dropped_connection_count_total",
                Kind::Counter,
                "Connection attempts to the listener the kernel refused, by reason",
            );
            for (r, name) in rows.iter().zip(&names) {
                for (reason, n) in [("no_socket", r.no_socket), ("assign_error", r.assign_error)] {
                    f.sample(
                        &[
                            ("load_balancer", r.lb.as_str()),
                            ("listener", name.as_str()),
                            ("reason", reason),
                        ],
                        n,
                    );
                }
            }
        }
        if let Ok(rows) = dp.maps.read_listener_counters(&view.listener_rows) {
            forwarding_metrics(&mut e, &rows);
        }
        if let Ok(rows) = dp.maps.read_target_counters(&view.target_rows) {
            target_metrics(&mut e, &rows);
        }
        if !view.target_rows.is_empty() {
            let slots = dp.maps.ring_slots();
            let mut f = e.family(
                "xalb_target_ring_slots",
                Kind::Gauge,
                "Slots of its group's Maglev ring a TCP target holds now (of 16381 per family): its share of new flows",
            );
            for (row, group, target) in &view.target_rows {
                let target = target.to_string();
                f.sample(
                    &[
                        ("target_group", group.as_str()),
                        ("target", target.as_str()),
                    ],
                    slots.get(row).copied().unwrap_or(0),
                );
            }
            let (established, handshakes) = dp.maps.flow_entries();
            let mut f = e.family(
                "xalb_flow_table_entries",
                Kind::Gauge,
                "Entries of the kernel's flow tables for TCP listeners (two per flow), by table",
            );
            f.sample(&[("table", "established")], established as u64);
            f.sample(&[("table", "handshake")], handshakes as u64);
        }
        if let Ok(rows) = dp.maps.read_counters(&view.lb_rows) {
            let families = [
                (
                    "xalb_xdp_packets_total",
                    "Packets the XDP program decided, by reason",
                    false,
                ),
                (
                    "xalb_xdp_bytes_total",
                    "Bytes the XDP program decided, by reason",
                    true,
                ),
            ];
            for (name, help, bytes) in families {
                let mut f = e.family(name, Kind::Counter, help);
                for r in &rows {
                    let lb = r.lb.as_deref().unwrap_or("");
                    f.sample(
                        &[("load_balancer", lb), ("reason", r.reason.name())],
                        if bytes { r.bytes } else { r.packets },
                    );
                }
            }
        }
    }
    e.finish()
}

/// TCP listeners' forwarding counters, from the listener rows that forward.
fn forwarding_metrics(e: &mut Exposition, rows: &[crate::kernel::counters::ListenerCounterRow]) {
    let forwarded: Vec<_> = rows
        .iter()
        .filter(|r| r.all.new_flows + r.all.flows_reset + r.all.no_target + r.all.no_route > 0)
        .map(|r| (r, format!("{}:{}", r.lb, r.port)))
        .collect();
    type Field = fn(&lb_common::ListenerCounter) -> u64;
    let families: [(&'static str, &str, Field); 8] = [
        (
            "xalb_listener_new_flow_count_total",
            "TCP listener: flows the kernel began (SYNs that created a flow)",
            |c| c.new_flows,
        ),
        (
            "xalb_listener_forwarded_packets_total",
            "TCP listener: client-to-target packets the kernel forwarded",
            |c| c.to_packets,
        ),
        (
            "xalb_listener_forwarded_bytes_total",
            "TCP listener: client-to-target bytes (IP packets) the kernel forwarded",
            |c| c.to_bytes,
        ),
        (
            "xalb_listener_returned_packets_total",
            "TCP listener: target-to-client packets the kernel forwarded",
            |c| c.from_packets,
        ),
        (
            "xalb_listener_returned_bytes_total",
            "TCP listener: target-to-client bytes (IP packets) the kernel forwarded",
            |c| c.from_bytes,
        ),
        (
            "xalb_listener_reset_flow_count_total",
            "TCP listener: packets of no flow (or of an ended one) answered with a reset",
            |c| c.flows_reset,
        ),
        (
            "xalb_listener_no_neighbour_drop_count_total",
            "TCP listener: packets dropped for want of the next hop's link-layer address",
            |c| c.no_neigh,
        ),
        (
            "xalb_listener_no_target_drop_count_total",
            "TCP listener: SYNs dropped for want of a target or a free translation port",
            |c| c.no_target,
        ),
    ];
    for (name, help, field) in families {
        let mut f = e.family(name, Kind::Counter, help);
        for (r, listener) in &forwarded {
            f.sample(
                &[
                    ("load_balancer", r.lb.as_str()),
                    ("listener", listener.as_str()),
                ],
                field(&r.all),
            );
        }
    }
}

/// Forwarding targets' counters (TCP listeners).
fn target_metrics(e: &mut Exposition, rows: &[crate::kernel::counters::TargetCounterRow]) {
    let named: Vec<_> = rows.iter().map(|r| (r, r.target.to_string())).collect();
    type Field = fn(&lb_common::TargetCounter) -> u64;
    let families: [(&'static str, &str, Field); 7] = [
        ("xalb_target_new_flow_count_total", "Flows the kernel began to the target", |c| c.new_flows),
        ("xalb_target_forwarded_packets_total", "Client-to-target packets the kernel forwarded", |c| c.to_packets),
        ("xalb_target_forwarded_bytes_total", "Client-to-target bytes (IP packets) the kernel forwarded", |c| c.to_bytes),
        ("xalb_target_returned_packets_total", "Target-to-client packets the kernel forwarded", |c| c.from_packets),
        ("xalb_target_returned_bytes_total", "Target-to-client bytes (IP packets) the kernel forwarded", |c| c.from_bytes),
        ("xalb_target_reset_flow_count_total", "Flows of the target the kernel ended with a reset (target unhealthy, removed or drained)", |c| c.flows_reset),
        ("xalb_target_no_neighbour_drop_count_total", "Packets of the target's flows dropped for want of the next hop's link-layer address", |c| c.no_neigh),
    ];
    for (name, help, field) in families {
        let mut f = e.family(name, Kind::Counter, help);
        for (r, target) in &named {
            f.sample(
                &[
                    ("target_group", r.group.as_str()),
                    ("target", target.as_str()),
                ],
                field(&r.c),
            );
        }
    }
}
