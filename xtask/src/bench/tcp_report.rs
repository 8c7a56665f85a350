//! The TCP scenario's results: its rows (failed and unavailable ones kept
//! with their reasons), their medians, each row's rate ÷ direct's and the
//! balancer's share of the host's CPU (the row's minus direct's), the
//! issue's TCP targets, and the Markdown section.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::peers::TcpConfigs;
use super::report::{median, Report};
use super::tcp::{rate_text, TcpKind, DIRECT, HAPROXY, NFTABLES, XALB};

/// One run of one system.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
#[serde(default)]
pub struct TcpSample {
    /// Connections (one per request) or requests per second; bits per
    /// second for the streams.
    pub rate: f64,
    /// Connections, requests or bytes the run completed.
    pub units: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// wrk's socket errors and non-2xx answers, h2load's failed requests;
    /// streams that did not connect.
    pub errors: u64,
    /// Wall time of the measured run, the load tool's start to its exit.
    pub secs: f64,
    /// The whole host's busy CPU seconds over the run (user, nice, system,
    /// irq and softirq, all CPUs), and of it softirq, where the kernel's
    /// forwarding (XDP, netfilter) shows; steal beside it, not in it.
    pub host_busy_s: f64,
    pub host_softirq_s: f64,
    pub host_steal_s: f64,
    /// Of host_busy_s, what processes outside the bench spent (user and
    /// system; `cpu::others_cpu_s`): how far other work on the host
    /// inflates this run's CPU figures.
    pub others_cpu_s: f64,
    /// host_busy_s per 1000 connections or requests, or per GB.
    pub host_cpu_per_unit: Option<f64>,
    /// The balancer's own processes' user + system CPU, per the same unit
    /// (None: no process).
    pub proc_cpu_per_unit: Option<f64>,
    /// Where the client sent the load.
    pub target: String,
    /// XDP attached to the balancer's interfaces during the run.
    pub xdp: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
#[serde(default)]
pub struct TcpRow {
    pub scenario: String,
    pub system: String,
    pub rate_unit: String,
    pub cpu_unit: String,
    pub samples: Vec<TcpSample>,
    /// Why a round has no sample.
    pub failures: Vec<String>,
    /// Why the system could not run at all on this host.
    pub unavailable: Option<String>,
    pub median: Option<TcpSample>,
    /// The median rate ÷ direct's.
    pub vs_direct: Option<f64>,
    /// The median host CPU per unit minus direct's: what the balancer adds.
    pub balancer_cpu_per_unit: Option<f64>,
}

/// How the TCP scenario ran, printed with its results.
#[derive(Serialize, Clone)]
pub struct TcpSetup {
    pub configs: TcpConfigs,
    pub offloads: String,
    pub stream_command: String,
    pub ipvs: String,
}

fn tcp_median(s: &[TcpSample]) -> Option<TcpSample> {
    let m = |f: fn(&TcpSample) -> Option<f64>| median(s.iter().filter_map(f).collect());
    Some(TcpSample {
        rate: m(|x| Some(x.rate))?,
        units: s.iter().map(|x| x.units).sum(),
        p50_ms: m(|x| x.p50_ms),
        p99_ms: m(|x| x.p99_ms),
        max_ms: s.iter().filter_map(|x| x.max_ms).reduce(f64::max),
        errors: s.iter().map(|x| x.errors).sum(),
        secs: m(|x| Some(x.secs))?,
        host_busy_s: m(|x| Some(x.host_busy_s))?,
        host_softirq_s: m(|x| Some(x.host_softirq_s))?,
        host_steal_s: m(|x| Some(x.host_steal_s))?,
        others_cpu_s: m(|x| Some(x.others_cpu_s))?,
        host_cpu_per_unit: m(|x| x.host_cpu_per_unit),
        proc_cpu_per_unit: m(|x| x.proc_cpu_per_unit),
        target: s.first()?.target.clone(),
        xdp: s.iter().find_map(|x| x.xdp.clone()),
    })
}

impl Report {
    fn tcp_row(&mut self, kind: TcpKind, system: &str) -> &mut TcpRow {
        let scenario = kind.scenario();
        let i = match self
            .tcp
            .iter()
            .position(|r| r.scenario == scenario && r.system == system)
        {
            Some(i) => i,
            None => {
                self.tcp.push(TcpRow {
                    scenario: scenario.into(),
                    system: system.into(),
                    rate_unit: kind.rate_unit().into(),
                    cpu_unit: kind.cpu_unit().into(),
                    ..Default::default()
                });
                self.tcp.len() - 1
            }
        };
        &mut self.tcp[i]
    }

    pub fn add_tcp(&mut self, kind: TcpKind, system: &str, s: TcpSample) {
        self.tcp_row(kind, system).samples.push(s);
    }

    /// A round without a sample: the row shows it, the notes say why.
    pub fn tcp_failed(&mut self, kind: TcpKind, system: &str, why: String) {
        self.note(format!("{}, {system}: {why}", kind.scenario()));
        self.tcp_row(kind, system).failures.push(why);
    }

    pub fn tcp_unavailable(&mut self, kind: TcpKind, system: &str, why: &str) {
        self.tcp_row(kind, system).unavailable = Some(why.into());
    }

    /// Medians, each row against direct, and the TCP targets.
    pub(super) fn finish_tcp(&mut self) {
        for r in &mut self.tcp {
            r.median = tcp_median(&r.samples);
        }
        let direct: Vec<(String, Option<TcpSample>)> = self
            .tcp
            .iter()
            .filter(|r| r.system == DIRECT)
            .map(|r| (r.scenario.clone(), r.median.clone()))
            .collect();
        for r in &mut self.tcp {
            let Some((_, Some(d))) = direct.iter().find(|(s, _)| *s == r.scenario) else {
                continue;
            };
            let Some(m) = &r.median else { continue };
            r.vs_direct = (d.rate > 0.0).then(|| m.rate / d.rate);
            if r.system != DIRECT {
                r.balancer_cpu_per_unit = m
                    .host_cpu_per_unit
                    .zip(d.host_cpu_per_unit)
                    .map(|(x, d)| x - d);
            }
        }
        let t = tcp_targets(&self.tcp);
        self.targets.extend(t);
        let worst = self
            .tcp
            .iter()
            .filter_map(|r| r.median.as_ref())
            .filter(|m| m.host_busy_s > 0.0)
            .map(|m| m.others_cpu_s / m.host_busy_s)
            .reduce(f64::max);
        if let Some(w) = worst.filter(|&w| w > 0.05) {
            self.notes.push(format!(
                "other processes on the host spent up to {:.0}% of a TCP row's host CPU (column \
                 \"others\"): its CPU figures are that much too high, and its rates may be low",
                w * 100.0
            ));
        }
    }

    pub(super) fn tcp_markdown(&self, o: &mut String) {
        if self.tcp.is_empty() {
            return;
        }
        let _ = writeln!(
            o,
            "### TCP listeners (host CPU: the whole host's busy CPU-seconds per unit, load generator \
             and backends included; balancer's share: that minus direct's; ÷ direct: the rate ÷ direct's)\n"
        );
        let _ = writeln!(
            o,
            "| load | system | rate | p50 | p99 | max | errors | host CPU | balancer's share | balancer process | others | ÷ direct | XDP |\n\
             |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
        );
        let kind_of = |r: &TcpRow| {
            TcpKind::ALL
                .into_iter()
                .find(|k| k.scenario() == r.scenario)
        };
        let mut reasons: Vec<String> = Vec::new();
        for r in &self.tcp {
            let Some(m) = &r.median else {
                let why = match &r.unavailable {
                    Some(u) => u.clone(),
                    None => r.failures.first().cloned().unwrap_or_default(),
                };
                let first = why.lines().next().unwrap_or("").to_string();
                let status = if r.unavailable.is_some() {
                    "unavailable"
                } else {
                    "failed"
                };
                let line = format!("{}: {first}", r.system);
                if !reasons.contains(&line) {
                    reasons.push(line);
                }
                let _ = writeln!(
                    o,
                    "| {} | {} | {status} | | | | | | | | | | |",
                    r.scenario, r.system
                );
                continue;
            };
            let rate = kind_of(r).map_or(format!("{:.0}", m.rate), |k| rate_text(k, m.rate));
            let per =
                |v: Option<f64>| v.map_or("n/a".into(), |v| format!("{v:.3} s/{}", r.cpu_unit));
            let _ = writeln!(
                o,
                "| {} | {} | {rate} {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.scenario,
                r.system,
                r.rate_unit,
                ms(m.p50_ms),
                ms(m.p99_ms),
                ms(m.max_ms),
                m.errors,
                per(m.host_cpu_per_unit),
                per(r.balancer_cpu_per_unit),
                per(m.proc_cpu_per_unit),
                if m.host_busy_s > 0.0 {
                    format!("{:.0}%", m.others_cpu_s / m.host_busy_s * 100.0)
                } else {
                    "n/a".into()
                },
                r.vs_direct.map_or("n/a".into(), |v| format!("{v:.2}×")),
                m.xdp.as_deref().unwrap_or("none"),
            );
        }
        o.push('\n');
        for line in reasons {
            let _ = writeln!(o, "- {line}");
        }
        let _ = writeln!(
            o,
            "\nhost CPU is user + nice + system + irq + softirq summed over all CPUs (steal left out), \
             read from /proc/stat before and after each run; s/1k conn is also ms per connection. \
             balancer process: the balancer's own processes' CPU, which misses what it does in the \
             kernel. others: the share of the host figure spent by processes outside the bench \
             (another build or bench on the host), which inflates it.\n"
        );
        if let Some(s) = &self.tcp_setup {
            let _ = writeln!(o, "Veth settings for every TCP row: {}.\n", s.offloads);
            let _ = writeln!(o, "Streams: `{}`.\n", s.stream_command);
            let _ = writeln!(o, "IPVS: {}.\n", s.ipvs);
            let block = |o: &mut String, title: &str, lang: &str, text: &str| {
                let _ = writeln!(o, "{title}:\n```{lang}\n{text}```\n");
            };
            block(o, "HAProxy (mode tcp)", "haproxy", &s.configs.haproxy);
            block(o, "nginx (stream)", "nginx", &s.configs.nginx);
            block(
                o,
                "nftables (balancer namespace)",
                "nft",
                &s.configs.nftables,
            );
            block(o, "xalb (TCP listeners)", "toml", &s.configs.xalb);
        }
    }
}

fn ms(v: Option<f64>) -> String {
    match v {
        Some(v) if v < 10.0 => format!("{v:.2} ms"),
        Some(v) => format!("{v:.1} ms"),
        None => "n/a".into(),
    }
}

/// The issue's TCP targets for xalb: connections/s and throughput at least
/// the kernel NAT's and within 10% of direct; the balancer's own CPU per
/// connection at most a third of HAProxy's and below the kernel NAT's.
fn tcp_targets(rows: &[TcpRow]) -> Vec<String> {
    let find = |kind: TcpKind, system: &str| {
        rows.iter()
            .find(|r| r.scenario == kind.scenario() && r.system == system)
    };
    let median = |kind, system| find(kind, system).and_then(|r| r.median.as_ref());
    let mut t = Vec::new();
    for kind in [TcpKind::ConnPerRequest, TcpKind::Stream] {
        let Some(x) = find(kind, XALB) else { continue };
        let what = match kind {
            TcpKind::Stream => "TCP stream throughput",
            _ => "TCP new connections/s",
        };
        let goal = "at least the kernel NAT's and within 10% of direct";
        let Some(xm) = &x.median else {
            t.push(format!(
                "{what} {goal}: not checked, xalb's row failed ({})",
                x.failures
                    .first()
                    .and_then(|f| f.lines().next())
                    .unwrap_or("no sample")
            ));
            continue;
        };
        let (Some(n), Some(d)) = (median(kind, NFTABLES), median(kind, DIRECT)) else {
            continue;
        };
        let ok = xm.rate >= n.rate && xm.rate >= 0.9 * d.rate;
        t.push(format!(
            "{what} {goal}: {} ({} against the NAT's {} and direct's {} {}, {:.2}× direct)",
            if ok { "met" } else { "NOT met" },
            rate_text(kind, xm.rate),
            rate_text(kind, n.rate),
            rate_text(kind, d.rate),
            kind.rate_unit(),
            xm.rate / d.rate
        ));
    }
    let kind = TcpKind::ConnPerRequest;
    let share = |system| find(kind, system).and_then(|r| r.balancer_cpu_per_unit);
    if let (Some(x), Some(h), Some(n)) = (share(XALB), share(HAPROXY), share(NFTABLES)) {
        let ok = x <= h / 3.0 && x < n;
        t.push(format!(
            "TCP balancer's own CPU per connection at most a third of HAProxy's and below the \
             kernel NAT's: {} ({:.3} against HAProxy's {:.3} and the NAT's {:.3} ms)",
            if ok { "met" } else { "NOT met" },
            x,
            h,
            n
        ));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(rate: f64, cpu: f64) -> TcpSample {
        TcpSample {
            rate,
            units: 1000,
            host_cpu_per_unit: Some(cpu),
            ..Default::default()
        }
    }

    #[test]
    fn shares_and_ratios_are_against_direct_of_the_same_kind() {
        let mut r = Report::default();
        let c = TcpKind::ConnPerRequest;
        r.add_tcp(c, DIRECT, s(20_000.0, 0.100));
        r.add_tcp(c, NFTABLES, s(16_000.0, 0.130));
        r.add_tcp(c, HAPROXY, s(11_000.0, 0.190));
        r.add_tcp(c, HAPROXY, s(12_000.0, 0.210));
        r.add_tcp(c, XALB, s(19_000.0, 0.110));
        r.tcp_unavailable(c, super::super::tcp::IPVS, "unavailable: no IPVS");
        r.add_tcp(TcpKind::Stream, DIRECT, s(8e9, 0.5));
        r.add_tcp(TcpKind::Stream, XALB, s(7e9, 0.6));
        r.finish();
        let row = |k: TcpKind, sys: &str| {
            r.tcp
                .iter()
                .find(|x| x.scenario == k.scenario() && x.system == sys)
                .unwrap()
        };
        let h = row(c, HAPROXY);
        assert_eq!(h.median.as_ref().unwrap().rate, 11_500.0);
        assert!((h.balancer_cpu_per_unit.unwrap() - 0.1).abs() < 1e-9);
        assert!((h.vs_direct.unwrap() - 0.575).abs() < 1e-9);
        assert_eq!(row(c, DIRECT).balancer_cpu_per_unit, None);
        let line = |start: &str| r.targets.iter().find(|t| t.starts_with(start)).unwrap();
        // 19,000 ≥ 16,000 and ≥ 0.9 × 20,000.
        assert!(line("TCP new connections/s").contains(": met"));
        // 0.010 ≤ 0.100 / 3 and < 0.030.
        assert!(line("TCP balancer's own CPU").contains(": met"));
        // Stream: no NAT row, so nothing to judge.
        assert!(!r.targets.iter().any(|t| t.starts_with("TCP stream")));
        let md = r.markdown();
        assert!(md.contains("| 19,000 conn/s |"), "{md}");
        assert!(md.contains("| IPVS | unavailable |"), "{md}");
        assert!(md.contains("- IPVS: unavailable: no IPVS"), "{md}");
        assert!(md.contains("| 7.00 Gbit/s |"), "{md}");
    }

    #[test]
    fn a_failed_xalb_row_is_shown_and_leaves_its_targets_unchecked() {
        let mut r = Report::default();
        let c = TcpKind::ConnPerRequest;
        r.add_tcp(c, DIRECT, s(20_000.0, 0.1));
        r.add_tcp(c, NFTABLES, s(16_000.0, 0.13));
        r.tcp_failed(
            c,
            XALB,
            "round 1: did not start: xalb refuses TCP listeners\nmore".into(),
        );
        r.finish();
        let md = r.markdown();
        assert!(md.contains(&format!("| {XALB} | failed |")), "{md}");
        assert!(
            md.contains(&format!(
                "- {XALB}: round 1: did not start: xalb refuses TCP listeners"
            )),
            "{md}"
        );
        assert!(r
            .targets
            .iter()
            .any(|t| t.starts_with("TCP new connections/s")
                && t.contains("not checked, xalb's row failed (round 1: did not start")));
        assert!(r.notes.iter().any(|n| n.contains("refuses TCP listeners")));
    }
}
