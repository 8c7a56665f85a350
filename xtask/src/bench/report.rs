//! Results: every sample kept, the median reported, each row's ratio to the
//! best reference system of its scenario, the issue's targets checked, and
//! the whole printed as Markdown and written as JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::load::{Kind, LoadResult, WrkErrors};
use super::peers::Configs;
use super::tcp_report::{TcpRow, TcpSetup};

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
#[serde(default)]
pub struct L7Sample {
    #[serde(flatten)]
    pub load: LoadResult,
    /// The balancer's user+system CPU seconds per request (None: no balancer).
    pub cpu_s_per_req: Option<f64>,
    pub peak_rss_kib: Option<u64>,
}

#[derive(Serialize, Clone, Debug, Default)]
pub struct KernelSample {
    /// Frames the generator put on the wire (including those veth dropped).
    pub offered_pps: f64,
    /// Frames the filter itself counted (nft counter, XDP run_cnt).
    pub dropped_pps: Option<f64>,
    /// Frames the sending veth dropped before any filter (receive ring full).
    pub lost_before_filter_pps: f64,
    /// The XDP program's own time per packet (BPF stats).
    pub prog_ns_per_pkt: Option<f64>,
    /// BPF_PROG_TEST_RUN average on the same frame.
    pub test_run_ns: Option<f64>,
    pub test_run_verdict: Option<String>,
    /// Busy CPU of the whole host (generator included) per offered frame.
    pub host_cpu_ns_per_pkt: Option<f64>,
    pub xdp_mode: Option<String>,
    pub prog_name: Option<String>,
    /// trafgen's own total, and the filter's own total over the whole run
    /// (xalb: its drop_no_rule counter), as a cross-check.
    pub generated_total: Option<u64>,
    pub filter_count_total: Option<u64>,
}

/// One balancer holding idle client connections.
#[derive(Serialize, Clone, Debug, Default)]
pub struct IdleSample {
    /// Connections the client tried to open.
    pub requested: u32,
    /// Connections the client opened (connect succeeded).
    pub established: u32,
    /// Sockets the balancer's processes held with them open, beyond those it
    /// held before: the connections it accepted.
    pub accepted: u32,
    /// VmRSS summed over the balancer's processes, after start.
    pub rss_idle_kib: u64,
    /// The same with the connections open.
    pub rss_kib: u64,
    /// How long the client took to open them, one after another.
    pub connect_s: f64,
}

/// One load run with an in-place upgrade of the balancer in its middle.
#[derive(Serialize, Clone, Debug, Default)]
pub struct UpgradeSample {
    /// Seconds into the load at which the upgrade was started.
    pub at_s: f64,
    /// From the upgrade's start to the new generation serving: xalb's
    /// successor printing `xalb: ready`, HAProxy's master printing "Loading
    /// success.", nginx's first new worker.
    pub switch_s: Option<f64>,
    /// From the upgrade's start to the exit of the last process of the old
    /// generation (None: still there when the bench stopped waiting).
    pub old_gone_s: Option<f64>,
    /// Requests wrk completed (answered, whatever the status).
    pub requests: u64,
    /// Over the whole run, the upgrade included.
    pub rps: f64,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// Requests that failed, by kind.
    pub failed: WrkErrors,
}

#[derive(Serialize, Deserialize)]
pub struct Row<S> {
    pub scenario: String,
    pub system: String,
    /// A peer the ratio is taken against.
    #[serde(default)]
    pub reference: bool,
    pub samples: Vec<S>,
    pub median: Option<S>,
    pub ratio: Option<f64>,
}

#[derive(Serialize, Clone)]
pub struct KernelSetup {
    pub trafgen: String,
    pub frame: String,
    pub nft: String,
    pub xdp_filter: String,
    pub xalb: String,
    pub test_run_repeat: u32,
}

#[derive(Serialize, Default)]
pub struct Machine {
    pub cpu_model: String,
    pub cpus: usize,
    pub kernel: String,
    pub os: String,
    pub tools: BTreeMap<String, String>,
}

#[derive(Serialize, Default)]
pub struct Report {
    pub started_utc: String,
    pub elapsed_s: f64,
    /// Of which building xalb took.
    pub build_s: f64,
    pub command: String,
    pub machine: Machine,
    pub options: BTreeMap<String, String>,
    pub load_commands: Vec<String>,
    pub l7: Vec<Row<L7Sample>>,
    pub kernel: Vec<Row<KernelSample>>,
    pub idle: Vec<Row<IdleSample>>,
    pub upgrade: Vec<Row<UpgradeSample>>,
    pub tcp: Vec<TcpRow>,
    pub tcp_setup: Option<TcpSetup>,
    pub configs: Option<Configs>,
    pub kernel_setup: Option<KernelSetup>,
    pub targets: Vec<String>,
    pub notes: Vec<String>,
}

fn row<'a, S>(
    rows: &'a mut Vec<Row<S>>,
    scenario: &str,
    system: &str,
    reference: bool,
) -> &'a mut Row<S> {
    let i = match rows
        .iter()
        .position(|r| r.scenario == scenario && r.system == system)
    {
        Some(i) => i,
        None => {
            rows.push(Row {
                scenario: scenario.to_string(),
                system: system.to_string(),
                reference,
                samples: Vec::new(),
                median: None,
                ratio: None,
            });
            rows.len() - 1
        }
    };
    &mut rows[i]
}

pub(super) fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

fn median_of<S>(s: &[S], f: impl Fn(&S) -> Option<f64>) -> Option<f64> {
    median(s.iter().filter_map(f).collect())
}

fn l7_median(s: &[L7Sample]) -> Option<L7Sample> {
    if s.is_empty() {
        return None;
    }
    Some(L7Sample {
        load: LoadResult {
            rps: median_of(s, |x| Some(x.load.rps))?,
            p50_ms: median_of(s, |x| x.load.p50_ms),
            p99_ms: median_of(s, |x| x.load.p99_ms),
            // The worst seen, and every error of every repetition.
            max_ms: s.iter().filter_map(|x| x.load.max_ms).reduce(f64::max),
            requests: s.iter().map(|x| x.load.requests).sum(),
            errors: s.iter().map(|x| x.load.errors).sum(),
        },
        cpu_s_per_req: median_of(s, |x| x.cpu_s_per_req),
        peak_rss_kib: s.iter().filter_map(|x| x.peak_rss_kib).max(),
    })
}

fn kernel_median(s: &[KernelSample]) -> Option<KernelSample> {
    let first = s.first()?;
    Some(KernelSample {
        offered_pps: median_of(s, |x| Some(x.offered_pps))?,
        dropped_pps: median_of(s, |x| x.dropped_pps),
        lost_before_filter_pps: median_of(s, |x| Some(x.lost_before_filter_pps))?,
        prog_ns_per_pkt: median_of(s, |x| x.prog_ns_per_pkt),
        test_run_ns: median_of(s, |x| x.test_run_ns),
        test_run_verdict: first.test_run_verdict.clone(),
        host_cpu_ns_per_pkt: median_of(s, |x| x.host_cpu_ns_per_pkt),
        xdp_mode: first.xdp_mode.clone(),
        prog_name: first.prog_name.clone(),
        generated_total: None,
        filter_count_total: None,
    })
}

fn idle_median(s: &[IdleSample]) -> Option<IdleSample> {
    let first = s.first()?;
    let kib = |f: fn(&IdleSample) -> u64| {
        median_of(s, |x| Some(f(x) as f64)).map_or(0, |v| v.round() as u64)
    };
    Some(IdleSample {
        requested: first.requested,
        // The worst round: a connection lost once is worth seeing.
        established: s.iter().map(|x| x.established).min()?,
        accepted: s.iter().map(|x| x.accepted).min()?,
        rss_idle_kib: kib(|x| x.rss_idle_kib),
        rss_kib: kib(|x| x.rss_kib),
        connect_s: median_of(s, |x| Some(x.connect_s))?,
    })
}

fn upgrade_median(s: &[UpgradeSample]) -> Option<UpgradeSample> {
    let first = s.first()?;
    let mut failed = WrkErrors::default();
    for x in s {
        failed.add(&x.failed);
    }
    Some(UpgradeSample {
        at_s: first.at_s,
        switch_s: median_of(s, |x| x.switch_s),
        // The slowest round, and none at all if one round's never left.
        old_gone_s: s
            .iter()
            .map(|x| x.old_gone_s)
            .reduce(|a, b| Some(a?.max(b?)))?,
        // Every request and every failure of every round.
        requests: s.iter().map(|x| x.requests).sum(),
        rps: median_of(s, |x| Some(x.rps))?,
        p99_ms: median_of(s, |x| x.p99_ms),
        max_ms: s.iter().filter_map(|x| x.max_ms).reduce(f64::max),
        failed,
    })
}

impl IdleSample {
    /// KiB of RSS each accepted connection added.
    pub fn per_connection_kib(&self) -> Option<f64> {
        (self.accepted > 0)
            .then(|| (self.rss_kib as f64 - self.rss_idle_kib as f64) / f64::from(self.accepted))
    }
}

/// The systems xalb is compared with.
pub(super) const PEERS: [&str; 2] = ["nginx", "haproxy"];

/// xalb against the peers in one scenario, in numbers: what the target list
/// words for one run, and what `bench-tally` counts over many.
pub(super) struct Versus {
    /// xalb's median req/s ÷ the higher of the peers' medians.
    pub rps_ratio: Option<f64>,
    /// xalb's median p99, the lower of the peers' median p99s, and whose.
    pub p99: Option<(f64, f64, &'static str)>,
    /// Round by round; None unless every system has a sample in every round.
    pub rounds: Option<Rounds>,
}

pub(super) struct Rounds {
    pub n: usize,
    /// Rounds in which xalb served at least every peer's req/s.
    pub rps: usize,
    /// Rounds in which xalb's p99 was no worse than any peer's.
    pub p99: usize,
}

/// None without an xalb row in `scenario`.
pub(super) fn versus(rows: &[Row<L7Sample>], scenario: &str) -> Option<Versus> {
    let row = |system: &str| {
        rows.iter()
            .find(|r| r.scenario == scenario && r.system == system)
    };
    let x = row("xalb")?;
    let peers: Vec<(&'static str, &Row<L7Sample>)> = PEERS
        .into_iter()
        .filter_map(|n| Some((n, row(n)?)))
        .collect();
    let medians = || {
        peers
            .iter()
            .filter_map(|(n, p)| Some((*n, &p.median.as_ref()?.load)))
    };
    let xm = x.median.as_ref().map(|m| &m.load);
    let rps_ratio = xm.and_then(|xm| {
        let best = medians().map(|(_, m)| m.rps).reduce(f64::max)?;
        Some(xm.rps / best)
    });
    let p99 = xm.and_then(|xm| {
        let xp = xm.p99_ms?;
        let (bp, name) = medians()
            .filter_map(|(n, m)| Some((m.p99_ms?, n)))
            .min_by(|a, b| a.0.total_cmp(&b.0))?;
        Some((xp, bp, name))
    });
    let xs = &x.samples;
    let n = xs.len();
    let rounds = (n > 0 && !peers.is_empty() && peers.iter().all(|(_, p)| p.samples.len() == n))
        .then(|| {
            let all = |i: usize, ok: &dyn Fn(&LoadResult, &LoadResult) -> bool| {
                peers
                    .iter()
                    .all(|(_, p)| ok(&xs[i].load, &p.samples[i].load))
            };
            Rounds {
                n,
                rps: (0..n).filter(|&i| all(i, &|x, p| x.rps >= p.rps)).count(),
                p99: (0..n)
                    .filter(|&i| {
                        xs[i]
                            .load
                            .p99_ms
                            .is_some_and(|xp| all(i, &|_, p| p.p99_ms.is_none_or(|pp| xp <= pp)))
                    })
                    .count(),
            }
        });
    Some(Versus {
        rps_ratio,
        p99,
        rounds,
    })
}

fn sort_by_scenario<S>(rows: &mut [Row<S>]) {
    let mut order: Vec<String> = Vec::new();
    for r in rows.iter() {
        if !order.contains(&r.scenario) {
            order.push(r.scenario.clone());
        }
    }
    rows.sort_by_key(|r| order.iter().position(|s| *s == r.scenario));
}

fn set_ratios<S>(rows: &mut [Row<S>], metric: impl Fn(&S) -> Option<f64>) {
    let scenarios: Vec<String> = rows.iter().map(|r| r.scenario.clone()).collect();
    for sc in scenarios {
        let best = rows
            .iter()
            .filter(|r| r.scenario == sc && r.reference)
            .filter_map(|r| r.median.as_ref().and_then(&metric))
            .reduce(f64::max);
        for r in rows.iter_mut().filter(|r| r.scenario == sc) {
            r.ratio = match (best, r.median.as_ref().and_then(&metric)) {
                (Some(b), Some(v)) if b > 0.0 => Some(v / b),
                _ => None,
            };
        }
    }
}

impl Report {
    pub fn add_l7(&mut self, scenario: &str, system: &str, reference: bool, s: L7Sample) {
        row(&mut self.l7, scenario, system, reference)
            .samples
            .push(s);
    }

    pub fn add_kernel(&mut self, scenario: &str, system: &str, reference: bool, s: KernelSample) {
        row(&mut self.kernel, scenario, system, reference)
            .samples
            .push(s);
    }

    pub fn add_idle(&mut self, scenario: &str, system: &str, reference: bool, s: IdleSample) {
        row(&mut self.idle, scenario, system, reference)
            .samples
            .push(s);
    }

    pub fn add_upgrade(&mut self, scenario: &str, system: &str, s: UpgradeSample) {
        row(&mut self.upgrade, scenario, system, false)
            .samples
            .push(s);
    }

    pub fn note_once(&mut self, n: String) {
        if !self.notes.contains(&n) {
            self.note(n);
        }
    }

    pub fn note(&mut self, n: String) {
        eprintln!("xtask bench: {n}");
        self.notes.push(n);
    }

    /// Medians, ratios, and the issue's targets.
    pub fn finish(&mut self) {
        // Rows were added in measuring order (system by system); show them
        // scenario by scenario, keeping first-seen order within each.
        sort_by_scenario(&mut self.l7);
        sort_by_scenario(&mut self.kernel);
        for r in &mut self.l7 {
            r.median = l7_median(&r.samples);
        }
        for r in &mut self.kernel {
            r.median = kernel_median(&r.samples);
        }
        set_ratios(&mut self.l7, |s| Some(s.load.rps));
        set_ratios(&mut self.kernel, |s| s.dropped_pps);
        for r in &mut self.idle {
            r.median = idle_median(&r.samples);
        }
        sort_by_scenario(&mut self.upgrade);
        for r in &mut self.upgrade {
            r.median = upgrade_median(&r.samples);
        }
        // Less memory is better: each row against the smaller peer.
        let best = self
            .idle
            .iter()
            .filter(|r| r.reference)
            .filter_map(|r| r.median.as_ref().map(|m| m.rss_kib))
            .min();
        for r in &mut self.idle {
            r.ratio = match (best, &r.median) {
                (Some(b), Some(m)) if b > 0 => Some(m.rss_kib as f64 / b as f64),
                _ => None,
            };
        }
        self.check_targets();
        self.finish_tcp();
    }

    /// "`what`: met/NOT met (xalb's p99 vs the lower of the peers')" for
    /// `scenario`. The tail is judged against each peer's own: the peer with
    /// the most req/s need not have the lowest p99.
    fn p99_check(&self, scenario: &str, what: &str) -> Option<String> {
        let (xp, bp, name) = versus(&self.l7, scenario)?.p99?;
        Some(format!(
            "{what}: {} ({} vs {name}'s {})",
            verdict(xp <= bp),
            ms(Some(xp)),
            ms(Some(bp))
        ))
    }

    /// xalb against both peers round by round in `scenario`: a round's runs
    /// are seconds apart, so these comparisons are the least touched by the
    /// host's spells. None unless every system has one sample per round.
    fn rounds_check(&self, scenario: &str) -> Option<String> {
        let r = versus(&self.l7, scenario)?.rounds.filter(|r| r.n >= 2)?;
        Some(format!(
            "{scenario}, round by round (not an issue target): xalb's req/s at least both peers' in \
             {} of {n} rounds, its p99 no worse than either's in {} of {n}",
            r.rps,
            r.p99,
            n = r.n
        ))
    }

    fn check_targets(&mut self) {
        let mut t = Vec::new();
        let ka = Kind::KeepAlive.scenario();
        if let Some(ratio) = versus(&self.l7, ka).and_then(|v| v.rps_ratio) {
            t.push(format!(
                "keep-alive req/s at least both peers': {} ({:.2}× the better)",
                verdict(ratio >= 1.0),
                ratio
            ));
            t.push(format!(
                "keep-alive req/s ≥ 1.2× the better peer: {} ({:.2}×{})",
                verdict(ratio >= 1.2),
                ratio,
                if ratio >= 1.2 {
                    String::new()
                } else {
                    format!(", short by {:.0}%", (1.2 - ratio) / 1.2 * 100.0)
                }
            ));
        }
        t.extend(self.p99_check(ka, "keep-alive p99 no worse than either peer's"));
        t.extend(self.rounds_check(ka));
        // Not one of the issue's targets: latency at the same load for all.
        t.extend(self.p99_check(
            Kind::FixedRate.scenario(),
            "at the same offered rate, keep-alive p99 no worse than either peer's (not an issue target)",
        ));
        for r in self.kernel.iter().filter(|r| r.system == "xalb XDP") {
            let Some(x) = r.median.as_ref() else { continue };
            let get = |sys: &str| {
                self.kernel
                    .iter()
                    .find(|o| o.scenario == r.scenario && o.system == sys)
                    .and_then(|o| o.median.as_ref())
            };
            if let (Some(xd), Some(f)) = (x.dropped_pps, get("xdp-filter")) {
                if let Some(fd) = f.dropped_pps {
                    t.push(format!(
                        "{}: drop rate ≥ xdp-filter's: {} ({:.2}×, generator-bound; per packet in the program under load {} vs {} ns)",
                        r.scenario,
                        verdict(xd >= fd * 0.98),
                        xd / fd,
                        num1(x.prog_ns_per_pkt),
                        num1(f.prog_ns_per_pkt)
                    ));
                }
            }
            if let (Some(xn), Some(fnn)) =
                (x.test_run_ns, get("xdp-filter").and_then(|f| f.test_run_ns))
            {
                t.push(format!(
                    "{}: cost per packet ≤ xdp-filter's (BPF_PROG_TEST_RUN, no generator involved): {} ({:.0} vs {:.0} ns, {:.2}×)",
                    r.scenario,
                    verdict(xn <= fnn),
                    xn,
                    fnn,
                    xn / fnn
                ));
            }
            if let (Some(xd), Some(n)) = (x.dropped_pps, get("nftables ingress drop")) {
                if let Some(nd) = n.dropped_pps {
                    t.push(format!(
                        "{}: drop rate ≥ 5× nftables': {} ({:.2}×; the generator is the limit on veth, compare host CPU ns/pkt: {} vs {})",
                        r.scenario,
                        verdict(xd >= 5.0 * nd),
                        xd / nd,
                        num1(x.host_cpu_ns_per_pkt),
                        num1(n.host_cpu_ns_per_pkt)
                    ));
                }
            }
        }
        let on = self
            .l7
            .iter()
            .find(|r| r.system == "xalb, XDP attached")
            .and_then(|r| r.median.clone());
        let off = self
            .l7
            .iter()
            .find(|r| r.system == "xalb, XDP detached")
            .and_then(|r| r.median.clone());
        if let (Some(on), Some(off)) = (on, off) {
            let loss = 1.0 - on.load.rps / off.load.rps;
            t.push(format!(
                "allowed traffic loses < 3% with XDP attached: {} ({:+.1}% req/s)",
                verdict(loss < 0.03),
                -loss * 100.0
            ));
        }
        if let Some(x) = self
            .idle
            .iter()
            .find(|r| r.system == "xalb")
            .and_then(|r| r.median.as_ref())
        {
            const TARGET: &str = "resident memory under 64 MiB with 10,000 idle client connections";
            let mib = x.rss_kib as f64 / 1024.0;
            t.push(if x.requested != 10_000 {
                format!(
                    "{TARGET}: not checked, this run held {} ({mib:.1} MiB)",
                    thousands(f64::from(x.requested))
                )
            } else if x.established < x.requested || x.accepted < x.established {
                format!(
                    "{TARGET}: {} (only {} of them established, {} accepted; {mib:.1} MiB)",
                    verdict(false),
                    thousands(f64::from(x.established)),
                    thousands(f64::from(x.accepted))
                )
            } else {
                format!("{TARGET}: {} ({mib:.1} MiB)", verdict(mib < 64.0))
            });
        }
        for r in self.upgrade.iter().filter(|r| r.system == "xalb") {
            let Some(m) = &r.median else { continue };
            t.push(format!(
                "{}: xalb fails no request (not an issue target): {} ({} failed{} in {} round(s), {} answered)",
                r.scenario,
                verdict(m.failed.total() == 0),
                m.failed.total(),
                failure_kinds(&m.failed),
                r.samples.len(),
                thousands(m.requests as f64),
            ));
        }
        // Anomalies worth a look: xalb errors or a collapse.
        for r in self.l7.iter().filter(|r| r.system.starts_with("xalb")) {
            if let Some(m) = &r.median {
                if m.load.errors > 0 {
                    self.notes.push(format!(
                        "anomaly: {} had {} errors in \"{}\" (all repetitions)",
                        r.system, m.load.errors, r.scenario
                    ));
                }
                if r.ratio.is_some_and(|x| x < 0.5) {
                    self.notes.push(format!(
                        "anomaly: {} reached only {:.2}× the best peer in \"{}\"",
                        r.system,
                        r.ratio.unwrap_or(0.0),
                        r.scenario
                    ));
                }
            }
        }
        self.targets = t;
    }

    pub fn markdown(&self) -> String {
        let mut o = String::new();
        let m = &self.machine;
        let _ = writeln!(o, "## xalb bench, {}\n", self.started_utc);
        let _ = writeln!(
            o,
            "Machine: {} ({} cores), Linux {}, {}. Command: `{}` ({:.0} s, of which {:.0} s building xalb). Peers: {}.\n",
            m.cpu_model,
            m.cpus,
            m.kernel,
            m.os,
            self.command,
            self.elapsed_s,
            self.build_s,
            m.tools
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let opts: Vec<String> = self
            .options
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = writeln!(
            o,
            "Settings: {}. Repetitions are interleaved (one load kind at a time; every system once per round, each started fresh for its run, each round starting one system further on); medians shown, \
             max latency and errors over all rounds.\n",
            opts.join(", ")
        );
        if !self.l7.is_empty() {
            let _ = writeln!(o, "### HTTP (ratio: req/s ÷ the better of nginx and HAProxy; XDP on/off rows: ÷ XDP detached)\n");
            let _ = writeln!(
                o,
                "| scenario | system | req/s | p50 | p99 | max | errors | CPU µs/req | peak RSS | ratio |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
            );
            for r in &self.l7 {
                match &r.median {
                    Some(s) => {
                        let _ = writeln!(
                            o,
                            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                            r.scenario,
                            r.system,
                            thousands(s.load.rps),
                            ms(s.load.p50_ms),
                            ms(s.load.p99_ms),
                            ms(s.load.max_ms),
                            s.load.errors,
                            s.cpu_s_per_req
                                .map_or("n/a".into(), |c| format!("{:.1}", c * 1e6)),
                            s.peak_rss_kib
                                .map_or("n/a".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0)),
                            ratio(r.ratio),
                        );
                    }
                    None => {
                        let _ = writeln!(
                            o,
                            "| {} | {} | failed | | | | | | | |",
                            r.scenario, r.system
                        );
                    }
                }
            }
            o.push('\n');
        }
        if !self.kernel.is_empty() {
            let _ = writeln!(
                o,
                "### Kernel: dropping a source the security group denies (ratio: dropped pps ÷ the better of nftables and xdp-filter)\n"
            );
            let _ = writeln!(
                o,
                "| scenario | system | offered Mpps | dropped Mpps | prog ns/pkt | test-run ns/pkt | host CPU ns/pkt | verdict | ratio |\n|---|---|---:|---:|---:|---:|---:|---|---:|"
            );
            for r in &self.kernel {
                match &r.median {
                    Some(s) => {
                        let sys = match &s.xdp_mode {
                            Some(mode) => format!("{} ({mode})", r.system),
                            None => r.system.clone(),
                        };
                        let _ = writeln!(
                            o,
                            "| {} | {} | {:.3} | {} | {} | {} | {} | {} | {} |",
                            r.scenario,
                            sys,
                            s.offered_pps / 1e6,
                            s.dropped_pps
                                .map_or("n/a".into(), |d| format!("{:.3}", d / 1e6)),
                            num1(s.prog_ns_per_pkt),
                            num1(s.test_run_ns),
                            num1(s.host_cpu_ns_per_pkt),
                            s.test_run_verdict.as_deref().unwrap_or("n/a"),
                            ratio(r.ratio),
                        );
                    }
                    None => {
                        let _ =
                            writeln!(o, "| {} | {} | failed | | | | | | |", r.scenario, r.system);
                    }
                }
            }
            o.push('\n');
        }
        self.tcp_markdown(&mut o);
        if let Some(n) = self
            .idle
            .iter()
            .find_map(|r| r.median.as_ref().map(|m| m.requested))
        {
            let n = thousands(f64::from(n));
            let _ = writeln!(
                o,
                "### Idle client connections: resident memory (VmRSS, summed over each balancer's processes; ratio: RSS with the connections ÷ the smaller of nginx's and HAProxy's)\n"
            );
            let _ = writeln!(
                o,
                "| system | connections | accepted | RSS idle | RSS with {n} connections | per connection | ratio |\n|---|---:|---:|---:|---:|---:|---:|"
            );
            let mib = |k: u64| format!("{:.1} MiB", k as f64 / 1024.0);
            for r in &self.idle {
                match &r.median {
                    Some(s) => {
                        let _ = writeln!(
                            o,
                            "| {} | {} | {} | {} | {} | {} | {} |",
                            r.system,
                            thousands(f64::from(s.established)),
                            thousands(f64::from(s.accepted)),
                            mib(s.rss_idle_kib),
                            mib(s.rss_kib),
                            s.per_connection_kib()
                                .map_or("n/a".into(), |k| format!("{k:.1} KiB")),
                            ratio(r.ratio),
                        );
                    }
                    None => {
                        let _ = writeln!(o, "| {} | failed | | | | | |", r.system);
                    }
                }
            }
            let _ = writeln!(
                o,
                "\nnginx allocates all its worker_connections slots at start, so part of its cost per \
                 connection is in its idle RSS; its master's and workers' shared pages count once per process.\n"
            );
        }
        if !self.upgrade.is_empty() {
            self.upgrade_markdown(&mut o);
        }
        if !self.targets.is_empty() {
            let _ = writeln!(o, "### Against the issue's targets\n");
            for t in &self.targets {
                let _ = writeln!(o, "- {t}");
            }
            o.push('\n');
        }
        if !self.notes.is_empty() {
            let _ = writeln!(o, "### Notes\n");
            for n in &self.notes {
                let _ = writeln!(o, "- {}", n.replace('\n', "\n  "));
            }
            o.push('\n');
        }
        let _ = writeln!(o, "### Exactly what ran\n");
        for c in &self.load_commands {
            let _ = writeln!(o, "- `{c}`");
        }
        o.push('\n');
        let block = |o: &mut String, title: &str, lang: &str, text: &str| {
            let _ = writeln!(o, "{title}:\n```{lang}\n{}```\n", text);
        };
        if let Some(c) = &self.configs {
            block(
                &mut o,
                "nginx backend (each backend namespace; backend 2 at its own address)",
                "nginx",
                &c.nginx_backend,
            );
            block(&mut o, "nginx balancer", "nginx", &c.nginx);
            block(&mut o, "HAProxy", "haproxy", &c.haproxy);
            block(&mut o, "xalb", "toml", &c.xalb);
        }
        if let Some(k) = &self.kernel_setup {
            let _ = writeln!(
                o,
                "Kernel scenario frame: {}; `{}`; BPF_PROG_TEST_RUN repeat {}.\n",
                k.frame, k.trafgen, k.test_run_repeat
            );
            block(&mut o, "xalb (kernel scenario)", "toml", &k.xalb);
            block(&mut o, "nftables (balancer namespace)", "nft", &k.nft);
            block(
                &mut o,
                "xdp-filter (balancer namespace)",
                "sh",
                &k.xdp_filter,
            );
        }
        o
    }

    fn upgrade_markdown(&self, o: &mut String) {
        let _ = writeln!(
            o,
            "### Upgrade under load: requests failed while each balancer is upgraded in place \
             (xalb: `xalb run --takeover`; HAProxy: SIGUSR2 to the master, which starts a new worker \
             with `-sf` and the listeners of `-x`; nginx: SIGHUP to the master, as `nginx -s reload`)\n"
        );
        let _ = writeln!(
            o,
            "| load | system | requests | failed | by round | connect | read | write | timeout | non-2xx | req/s | p99 | max | new serving | old gone |\n\
             |---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        let secs = |v: Option<f64>| v.map_or("never".into(), |v| format!("{v:.2} s"));
        for r in &self.upgrade {
            let load = r
                .scenario
                .strip_prefix(super::upgrade::SCENARIO)
                .map_or(r.scenario.as_str(), |l| l.trim_start_matches(", "));
            let Some(m) = &r.median else {
                let _ = writeln!(
                    o,
                    "| {load} | {} | failed | | | | | | | | | | | | |",
                    r.system
                );
                continue;
            };
            let by_round: Vec<String> = r
                .samples
                .iter()
                .map(|s| s.failed.total().to_string())
                .collect();
            let f = &m.failed;
            let _ = writeln!(
                o,
                "| {load} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.system,
                thousands(m.requests as f64),
                f.total(),
                by_round.join(" + "),
                f.connect,
                f.read,
                f.write,
                f.timeout,
                f.non_2xx,
                thousands(m.rps),
                ms(m.p99_ms),
                ms(m.max_ms),
                secs(m.switch_s),
                secs(m.old_gone_s),
            );
        }
        let _ = writeln!(
            o,
            "\nRequests and failures are summed over the rounds, req/s and p99 are medians, max is the worst; \
             the upgrade starts {} into each run. \"new serving\" and \"old gone\" are seconds from the \
             upgrade's start (median; old gone: the slowest round).\n",
            self.upgrade
                .iter()
                .find_map(|r| r.median.as_ref())
                .map_or("a third of the way".into(), |m| format!("{:.1} s", m.at_s))
        );
    }

    /// Writes `<dir>/<timestamp>.json` and, when `latest`, `<dir>/latest.json`.
    pub fn write_json(&self, dir: &Path, latest: bool) -> Result<PathBuf> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let json = serde_json::to_string_pretty(self)?;
        let stamp = self.started_utc.replace([':', '-'], "");
        let path = dir.join(format!("{stamp}.json"));
        std::fs::write(&path, &json)?;
        if latest {
            std::fs::write(dir.join("latest.json"), &json)?;
        }
        Ok(path)
    }
}

/// " (connect 1, read 2)" for the kinds that occurred, or nothing.
fn failure_kinds(f: &WrkErrors) -> String {
    let kinds: Vec<String> = [
        ("connect", f.connect),
        ("read", f.read),
        ("write", f.write),
        ("timeout", f.timeout),
        ("non-2xx", f.non_2xx),
    ]
    .iter()
    .filter(|(_, n)| *n > 0)
    .map(|(k, n)| format!("{k} {n}"))
    .collect();
    if kinds.is_empty() {
        String::new()
    } else {
        format!(" ({})", kinds.join(", "))
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}

fn ms(v: Option<f64>) -> String {
    match v {
        Some(v) if v < 10.0 => format!("{v:.2} ms"),
        Some(v) => format!("{v:.1} ms"),
        None => "n/a".into(),
    }
}

fn num1(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |v| format!("{v:.1}"))
}

fn ratio(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |v| format!("{v:.2}×"))
}

pub(super) fn thousands(v: f64) -> String {
    let s = format!("{:.0}", v);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// UTC now as 2026-11-28T12:34:56Z.
pub fn utc_now() -> String {
    let now = time::OffsetDateTime::now_utc();
    now.replace_nanosecond(0)
        .unwrap_or(now)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(rps: f64, p99: f64) -> L7Sample {
        L7Sample {
            load: LoadResult {
                rps,
                p99_ms: Some(p99),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn medians_and_ratios() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0]), Some(2.5));
        let mut r = Report::default();
        let s = |rps: f64| L7Sample {
            load: LoadResult {
                rps,
                ..Default::default()
            },
            ..Default::default()
        };
        r.add_l7("ka", "xalb", false, s(30.0));
        r.add_l7("ka", "nginx", true, s(20.0));
        r.add_l7("ka", "haproxy", true, s(10.0));
        r.add_l7("ka", "haproxy", true, s(25.0));
        r.finish();
        assert_eq!(r.l7[0].ratio, Some(1.5));
        assert_eq!(r.l7[2].median.as_ref().unwrap().load.rps, 17.5);
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert!(r.markdown().contains("| ka | xalb | 30 |"));
    }

    #[test]
    fn each_p99_is_judged_against_the_lower_peer_p99_of_its_own_scenario() {
        let mut r = Report::default();
        // The fixed-rate rows first: each check reads its own scenario's rows.
        let fixed = Kind::FixedRate.scenario();
        r.add_l7(fixed, "xalb", false, sample(30.0, 2.0));
        r.add_l7(fixed, "nginx", true, sample(30.0, 3.0));
        r.add_l7(fixed, "haproxy", true, sample(30.0, 2.5));
        let ka = Kind::KeepAlive.scenario();
        r.add_l7(ka, "xalb", false, sample(60.0, 2.6));
        r.add_l7(ka, "nginx", true, sample(62.0, 3.5));
        r.add_l7(ka, "haproxy", true, sample(55.0, 2.4));
        r.finish();
        let line = |start: &str| r.targets.iter().find(|t| t.starts_with(start)).cloned();
        let ka_line = line("keep-alive p99").unwrap();
        assert!(
            ka_line.contains("NOT met") && ka_line.contains("haproxy's"),
            "{ka_line}"
        );
        let fixed_line = line("at the same offered rate").unwrap();
        assert!(
            fixed_line.contains(": met") && fixed_line.contains("haproxy's"),
            "{fixed_line}"
        );
    }

    #[test]
    fn rounds_are_compared_one_by_one_when_every_system_has_each() {
        let mut r = Report::default();
        let ka = Kind::KeepAlive.scenario();
        // Round 1: xalb ahead on both; round 2: more req/s, worse p99 than
        // HAProxy; round 3: behind nginx on req/s, p99 tied with HAProxy.
        for (x, ng, hp) in [
            ((50.0, 2.5), (48.0, 3.5), (49.0, 2.6)),
            ((45.0, 3.0), (42.0, 3.9), (41.0, 2.9)),
            ((44.0, 2.8), (46.0, 3.4), (43.0, 2.8)),
        ] {
            r.add_l7(ka, "xalb", false, sample(x.0, x.1));
            r.add_l7(ka, "nginx", true, sample(ng.0, ng.1));
            r.add_l7(ka, "haproxy", true, sample(hp.0, hp.1));
        }
        r.finish();
        let line = r
            .targets
            .iter()
            .find(|t| t.contains("round by round"))
            .unwrap();
        assert!(
            line.ends_with("in 2 of 3 rounds, its p99 no worse than either's in 2 of 3"),
            "{line}"
        );
        // A system that missed a round leaves nothing to pair.
        let mut r = Report::default();
        r.add_l7(ka, "xalb", false, sample(50.0, 2.5));
        r.add_l7(ka, "xalb", false, sample(50.0, 2.5));
        r.add_l7(ka, "haproxy", true, sample(40.0, 3.0));
        r.finish();
        assert!(!r.targets.iter().any(|t| t.contains("round by round")));
    }

    #[test]
    fn upgrade_rows_sum_every_rounds_failures_and_keep_the_worst_exit() {
        let scenario = super::super::upgrade::scenario(Kind::KeepAlive);
        let s = |rps: f64, read: u64, old_gone_s: Option<f64>| UpgradeSample {
            at_s: 2.0,
            switch_s: Some(0.1),
            old_gone_s,
            requests: 1000,
            rps,
            failed: WrkErrors {
                read,
                ..Default::default()
            },
            ..Default::default()
        };
        let mut r = Report::default();
        r.add_upgrade(&scenario, "nginx", s(30.0, 51, Some(0.13)));
        r.add_upgrade(&scenario, "nginx", s(40.0, 27, Some(0.15)));
        r.add_upgrade(&scenario, "xalb", s(45.0, 0, Some(0.8)));
        r.add_upgrade(&scenario, "xalb", s(41.0, 0, None));
        r.finish();
        let nginx = r.upgrade[0].median.as_ref().unwrap();
        assert_eq!((nginx.requests, nginx.failed.read), (2000, 78));
        assert_eq!((nginx.rps, nginx.old_gone_s), (35.0, Some(0.15)));
        // A round whose old xalb never left makes the row's "never".
        assert_eq!(r.upgrade[1].median.as_ref().unwrap().old_gone_s, None);
        let md = r.markdown();
        assert!(
            md.contains("| HTTP/1.1 keep-alive | nginx | 2,000 | 78 | 51 + 27 | 0 | 78 |"),
            "{md}"
        );
        assert!(md.contains("| 0.10 s | never |"), "{md}");
        assert!(r.targets.iter().any(|t| t.starts_with(&scenario)
            && t.contains("xalb fails no request")
            && t.contains(": met")));
    }

    #[test]
    fn timestamp_is_now_in_utc_to_the_second() {
        let t = utc_now();
        // YYYY-MM-DDTHH:MM:SSZ, read back field by field.
        assert_eq!(t.len(), 20, "{t}");
        let b = t.as_bytes();
        assert_eq!(
            (b[4], b[7], b[10], b[13], b[16], b[19]),
            (b'-', b'-', b'T', b':', b':', b'Z'),
            "{t}"
        );
        let n = |r: std::ops::Range<usize>| -> u16 { t[r].parse().unwrap() };
        let date = time::Date::from_calendar_date(
            n(0..4) as i32,
            time::Month::try_from(n(5..7) as u8).unwrap(),
            n(8..10) as u8,
        )
        .unwrap();
        let at = time::Time::from_hms(n(11..13) as u8, n(14..16) as u8, n(17..19) as u8).unwrap();
        let stamped = time::PrimitiveDateTime::new(date, at).assume_utc();
        let off = (time::OffsetDateTime::now_utc() - stamped).abs();
        assert!(off < time::Duration::seconds(5), "{t} is {off} from now");
    }
}
