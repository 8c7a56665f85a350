//! Reading the XDP program's per-CPU verdict counters, and the listener
//! counters both programs keep.

use lb_common::{counter_index, Counter, ListenerCounter, Reason, TargetCounter, NO_LB};

use super::maps::{ctx, Maps, MapsError};

/// One non-zero counter, summed over CPUs. `lb` is `None` for packets that
/// belong to no balancer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CounterRow {
    pub lb: Option<String>,
    pub reason: Reason,
    pub packets: u64,
    pub bytes: u64,
}

impl Maps {
    /// Every counter of the given balancers (row, name) and of the
    /// no-balancer row, zeros included, summed over CPUs.
    pub fn read_counters(&self, lbs: &[(u32, String)]) -> Result<Vec<CounterRow>, MapsError> {
        let slots = lbs
            .iter()
            .map(|(row, n)| (*row, Some(n.clone())))
            .chain(std::iter::once((NO_LB, None)));
        let mut rows = Vec::new();
        for (slot, lb) in slots {
            for reason in Reason::ALL {
                let per_cpu = self
                    .counters
                    .get(&counter_index(slot, reason), 0)
                    .map_err(ctx(lb_common::map_names::COUNTERS))?;
                let sum = per_cpu.iter().fold(Counter::default(), |acc, c| Counter {
                    packets: acc.packets + c.packets,
                    bytes: acc.bytes + c.bytes,
                });
                rows.push(CounterRow {
                    lb: lb.clone(),
                    reason,
                    packets: sum.packets,
                    bytes: sum.bytes,
                });
            }
        }
        Ok(rows)
    }

    /// Zeroes the counters of balancer rows about to be reused.
    pub fn zero_counters(&mut self, rows: &[u32]) -> Result<(), MapsError> {
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| MapsError::Cpus(e))?;
        let zeros = vec![Counter::default(); cpus];
        for &row in rows {
            for reason in Reason::ALL {
                let values =
                    aya::maps::PerCpuValues::try_from(zeros.clone()).expect("one value per CPU");
                self.counters
                    .set(counter_index(row, reason), values, 0)
                    .map_err(ctx(lb_common::map_names::COUNTERS))?;
            }
        }
        Ok(())
    }
}

/// A listener's counters, summed over CPUs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerCounterRow {
    pub lb: String,
    pub port: u16,
    /// Connection attempts steered to the listener's sockets.
    pub steered: u64,
    /// Connection attempts refused because it had no socket.
    pub no_socket: u64,
    /// Connection attempts the kernel would not hand to its socket.
    pub assign_error: u64,
    /// Every counter of the row (a TCP listener's forwarding ones too).
    pub all: ListenerCounter,
}

impl Maps {
    /// The counters of the listeners `rows` (row, balancer, port).
    pub fn read_listener_counters(
        &self,
        rows: &[(u32, String, u16)],
    ) -> Result<Vec<ListenerCounterRow>, MapsError> {
        rows.iter()
            .map(|(row, lb, port)| {
                let per_cpu = self
                    .listener_counters
                    .get(row, 0)
                    .map_err(ctx(lb_common::map_names::LISTENER_COUNTERS))?;
                let mut sum = ListenerCounterRow {
                    lb: lb.clone(),
                    port: *port,
                    steered: 0,
                    no_socket: 0,
                    assign_error: 0,
                    all: ListenerCounter::default(),
                };
                for c in per_cpu.iter() {
                    add(&mut sum.all, c);
                }
                sum.steered = sum.all.steered;
                sum.no_socket = sum.all.no_socket;
                sum.assign_error = sum.all.assign_error;
                Ok(sum)
            })
            .collect()
    }

    /// Zeroes the counters of listener rows about to be reused.
    pub fn zero_listener_counters(&mut self, rows: &[u32]) -> Result<(), MapsError> {
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| MapsError::Cpus(e))?;
        for &row in rows {
            let values = aya::maps::PerCpuValues::try_from(vec![ListenerCounter::default(); cpus])
                .expect("one value per CPU");
            self.listener_counters
                .set(row, values, 0)
                .map_err(ctx(lb_common::map_names::LISTENER_COUNTERS))?;
        }
        Ok(())
    }
}

fn add(sum: &mut ListenerCounter, c: &ListenerCounter) {
    sum.steered += c.steered;
    sum.no_socket += c.no_socket;
    sum.assign_error += c.assign_error;
    sum.new_flows += c.new_flows;
    sum.to_packets += c.to_packets;
    sum.to_bytes += c.to_bytes;
    sum.from_packets += c.from_packets;
    sum.from_bytes += c.from_bytes;
    sum.flows_reset += c.flows_reset;
    sum.no_neigh += c.no_neigh;
    sum.no_target += c.no_target;
    sum.no_route += c.no_route;
}

/// A forwarding target's counters, summed over CPUs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetCounterRow {
    pub group: String,
    pub target: std::net::SocketAddr,
    pub c: TargetCounter,
}

impl Maps {
    /// The counters of the forwarding target rows `rows` (row, group, target).
    pub fn read_target_counters(
        &self,
        rows: &[(u32, String, std::net::SocketAddr)],
    ) -> Result<Vec<TargetCounterRow>, MapsError> {
        rows.iter()
            .map(|(row, group, target)| {
                let per_cpu = self
                    .target_counters
                    .get(row, 0)
                    .map_err(ctx(lb_common::map_names::TARGET_COUNTERS))?;
                let mut c = TargetCounter::default();
                for v in per_cpu.iter() {
                    c.to_packets += v.to_packets;
                    c.to_bytes += v.to_bytes;
                    c.from_packets += v.from_packets;
                    c.from_bytes += v.from_bytes;
                    c.new_flows += v.new_flows;
                    c.flows_reset += v.flows_reset;
                    c.no_neigh += v.no_neigh;
                }
                Ok(TargetCounterRow {
                    group: group.clone(),
                    target: *target,
                    c,
                })
            })
            .collect()
    }

    /// Zeroes the counters of target rows about to be reused.
    pub fn zero_target_counters(&mut self, rows: &[u32]) -> Result<(), MapsError> {
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| MapsError::Cpus(e))?;
        for &row in rows {
            let values = aya::maps::PerCpuValues::try_from(vec![TargetCounter::default(); cpus])
                .expect("one value per CPU");
            self.target_counters
                .set(row, values, 0)
                .map_err(ctx(lb_common::map_names::TARGET_COUNTERS))?;
        }
        Ok(())
    }
}

impl std::fmt::Display for ListenerCounterRow {
    /// `listener_counter lb=web-alb port=80 steered=12 no_socket=0
    /// assign_error=0`, in the style of the `xdp_counter` lines; a TCP
    /// listener's forwarding counters follow when it forwarded anything.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "listener_counter lb={} port={} steered={} no_socket={} assign_error={}",
            self.lb, self.port, self.steered, self.no_socket, self.assign_error
        )?;
        let a = &self.all;
        if a.new_flows + a.to_packets + a.flows_reset + a.no_neigh + a.no_target + a.no_route > 0 {
            write!(
                f,
                " new_flows={} to_packets={} to_bytes={} from_packets={} from_bytes={} flows_reset={} no_neigh={} no_target={} no_route={}",
                a.new_flows,
                a.to_packets,
                a.to_bytes,
                a.from_packets,
                a.from_bytes,
                a.flows_reset,
                a.no_neigh,
                a.no_target,
                a.no_route
            )?;
        }
        Ok(())
    }
}

impl std::fmt::Display for TargetCounterRow {
    /// `target_counter group=tcp-pool target=10.0.0.2:80 new_flows=3 ...`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = &self.c;
        write!(
            f,
            "target_counter group={} target={} new_flows={} to_packets={} to_bytes={} from_packets={} from_bytes={} flows_reset={} no_neigh={}",
            self.group,
            self.target,
            c.new_flows,
            c.to_packets,
            c.to_bytes,
            c.from_packets,
            c.from_bytes,
            c.flows_reset,
            c.no_neigh
        )
    }
}

impl std::fmt::Display for CounterRow {
    /// `xdp_counter lb=web-alb reason=drop_no_rule packets=3 bytes=222`: one
    /// stable, greppable line (tests and the demo read it).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "xdp_counter lb={} reason={} packets={} bytes={}",
            self.lb.as_deref().unwrap_or("-"),
            self.reason.name(),
            self.packets,
            self.bytes
        )
    }
}
