//! The TCP scenario: TCP listeners, one load kind at a time, through xalb's
//! kernel path, HAProxy `mode tcp`, nginx `stream`, the kernel's own NAT
//! (nftables `dnat` over `numgen`) and no balancer at all, interleaved in
//! rounds like the L7 scenario; each run's cost as the whole host's busy CPU
//! per connection, request or gigabyte (see `cpu`), and the balancer's share
//! of it as the difference from the direct run's.
//!
//! Every system runs on the veth settings XDP forwarding needs
//! (`topology::XDP_FORWARDING_OFFLOADS`), set for the scenario and restored
//! after it, so the rows differ only in the balancer.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::cleanup::{self, Proc};
use super::cpu::{others_cpu_s, HostCpu};
use super::load::{self, Kind, LoadOpts};
use super::peers::{self, System, TcpConfigs, NFT_NAT_TABLE, STREAM_PORT};
use super::report::Report;
use super::tcp_report::{TcpSample, TcpSetup};
use super::topology::{in_ns, ip4, Topology, BACKENDS, LB_ADDR, XDP_FORWARDING_OFFLOADS};

#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum TcpKind {
    /// wrk with `Connection: close`: a new TCP connection per request.
    ConnPerRequest,
    /// wrk, HTTP/1.1 keep-alive: requests over long connections.
    KeepAlive,
    /// Four parallel long streams (iperf 2, `-P 4`) pushing bytes to the
    /// backends' sinks.
    Stream,
    /// HTTP/1.1 keep-alive at the same offered rate for every system
    /// (`--fixed-rps`): latency at equal load.
    FixedRate,
}

impl TcpKind {
    pub const ALL: [TcpKind; 4] = [
        TcpKind::ConnPerRequest,
        TcpKind::KeepAlive,
        TcpKind::Stream,
        TcpKind::FixedRate,
    ];

    pub fn scenario(self) -> &'static str {
        match self {
            TcpKind::ConnPerRequest => "TCP, new connection per request",
            TcpKind::KeepAlive => "TCP, keep-alive requests",
            TcpKind::Stream => "TCP, 4 long streams",
            TcpKind::FixedRate => "TCP, keep-alive at a fixed rate",
        }
    }

    /// What the rate counts, per second.
    pub fn rate_unit(self) -> &'static str {
        match self {
            TcpKind::ConnPerRequest => "conn/s",
            TcpKind::KeepAlive | TcpKind::FixedRate => "req/s",
            TcpKind::Stream => "Gbit/s",
        }
    }

    /// What the host's CPU is divided by.
    pub fn cpu_unit(self) -> &'static str {
        match self {
            TcpKind::ConnPerRequest => "1k conn",
            TcpKind::KeepAlive | TcpKind::FixedRate => "1k req",
            TcpKind::Stream => "GB",
        }
    }

    /// Units (connections, requests, bytes) in one `cpu_unit`.
    fn per_cpu_unit(self) -> f64 {
        match self {
            TcpKind::Stream => 1e9,
            _ => 1e3,
        }
    }

    /// The HTTP load of a wrk or h2load kind; None for the streams.
    pub fn http(self) -> Option<Kind> {
        match self {
            TcpKind::ConnPerRequest => Some(Kind::ConnPerRequest),
            TcpKind::KeepAlive => Some(Kind::KeepAlive),
            TcpKind::FixedRate => Some(Kind::FixedRate),
            TcpKind::Stream => None,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum TcpSystem {
    Xalb,
    /// xalb with `--xdp-mode generic`: on veth, XDP in the driver copies
    /// each frame the stack sends into a page of its own before the
    /// program runs; generic XDP runs on the skb as it is.
    XalbGeneric,
    Nftables,
    Haproxy,
    Nginx,
    Direct,
}

/// The row names, which the targets look rows up by.
pub const XALB: &str = "xalb (kernel path)";
pub const XALB_GENERIC: &str = "xalb (kernel path, generic XDP)";
pub const NFTABLES: &str = "nftables NAT (dnat numgen)";
pub const HAPROXY: &str = "haproxy (mode tcp)";
pub const NGINX: &str = "nginx (stream)";
pub const DIRECT: &str = "direct (no balancer)";
pub const IPVS: &str = "IPVS";

impl TcpSystem {
    pub fn name(self) -> &'static str {
        match self {
            TcpSystem::Xalb => XALB,
            TcpSystem::XalbGeneric => XALB_GENERIC,
            TcpSystem::Nftables => NFTABLES,
            TcpSystem::Haproxy => HAPROXY,
            TcpSystem::Nginx => NGINX,
            TcpSystem::Direct => DIRECT,
        }
    }
}

pub struct TcpPlan {
    pub systems: Vec<TcpSystem>,
    pub kinds: Vec<TcpKind>,
    pub repeat: u32,
    /// Seconds of unrecorded keep-alive load through a freshly started
    /// balancer process before measuring (0: none).
    pub warmup: u64,
    /// Leave the veths' offloads as they are (TSO on, GRO off) instead of
    /// `XDP_FORWARDING_OFFLOADS`: the peers as the issue first measured
    /// them, which xalb's kernel path cannot forward on.
    pub veth_defaults: bool,
}

/// Parallel streams of the stream kind, as in the issue's `iperf3 -P 4`.
pub const STREAMS: u32 = 4;

/// The stream kind's client, from the client namespace. iperf 2, not iperf3:
/// an iperf3 test is a control connection plus data connections that must
/// all reach the same server, and a TCP balancer spreads them over the
/// backends (the data connections land on a server that never saw the
/// control connection, and the test fails); `--cport` does not help, since
/// the balancers choose by connection, not by port. iperf 2 has no control
/// connection: each of its streams is one TCP connection that carries data
/// from its first byte, so they may go wherever the balancer sends them, and
/// an iperf 2 server on each backend counts what arrives. The client's
/// figures are the bytes its sockets accepted; at the end at most a socket
/// buffer per stream (a few MB) had not yet reached a backend, well under
/// 0.1% of a run's bytes. Written out with `-y C`, one line per stream.
pub fn iperf_args(target: &str, duration: u64) -> Vec<String> {
    vec![
        "-c".into(),
        target.into(),
        "-p".into(),
        STREAM_PORT.to_string(),
        "-P".into(),
        STREAMS.to_string(),
        "-t".into(),
        duration.to_string(),
        "-y".into(),
        "C".into(),
    ]
}

/// What an iperf 2 client run moved.
#[derive(Debug, PartialEq)]
pub struct Streamed {
    pub bytes: u64,
    pub bits_per_s: f64,
    pub streams: u32,
}

/// iperf 2's `-y C` client report: per stream
/// `time,src,sport,dst,dport,id,interval,bytes,bits_per_second`; a sum line
/// (id -1, printed by some versions) is left out, the streams are added up.
pub fn parse_iperf_csv(out: &str) -> Result<Streamed> {
    let mut s = Streamed {
        bytes: 0,
        bits_per_s: 0.0,
        streams: 0,
    };
    for line in out.lines() {
        let f: Vec<&str> = line.trim().split(',').collect();
        if f.len() < 9 {
            continue;
        }
        let Ok(id) = f[5].parse::<i64>() else {
            continue;
        };
        if id < 0 {
            continue;
        }
        s.bytes += f[7].parse::<u64>().context("iperf bytes")?;
        s.bits_per_s += f[8].parse::<f64>().context("iperf bits per second")?;
        s.streams += 1;
    }
    if s.streams == 0 {
        bail!("no stream reported");
    }
    Ok(s)
}

/// A system serving for one run.
enum Active {
    /// Nothing to start: the client talks to a backend.
    Direct,
    /// The NAT table in the balancer namespace.
    Nftables,
    Process(Box<peers::Running>),
}

struct Env<'a> {
    topo: &'a Topology,
    dir: &'a Path,
    xalb_bin: &'a Path,
    configs: &'a TcpConfigs,
    opts: &'a LoadOpts,
}

impl Env<'_> {
    fn start(&self, system: TcpSystem) -> Result<Active> {
        let process = |s: System, extra: &[&str]| {
            peers::start_tcp(s, self.topo, self.dir, self.xalb_bin, self.configs, extra)
                .map(|r| Active::Process(Box::new(r)))
        };
        match system {
            TcpSystem::Direct => Ok(Active::Direct),
            TcpSystem::Nftables => {
                let path = self.dir.join("tcp/nft-nat.conf");
                std::fs::write(&path, &self.configs.nftables)?;
                self.topo.lb.run("nft", &["-f", &path.to_string_lossy()])?;
                Ok(Active::Nftables)
            }
            TcpSystem::Haproxy => process(System::Haproxy, &[]),
            TcpSystem::Nginx => process(System::Nginx, &[]),
            TcpSystem::Xalb => process(System::Xalb, &[]),
            TcpSystem::XalbGeneric => process(System::Xalb, &["--xdp-mode", "generic"]),
        }
    }

    /// Stops the system; for nftables, also empties the connection tracking
    /// table, so each run starts as empty as the processes start fresh (and
    /// tens of thousands of TIME_WAIT entries a second, kept 120 s, cannot
    /// fill its 262,144 entries across rounds).
    fn stop(&self, a: Active, report: &mut Report) -> Result<()> {
        match a {
            Active::Direct => {}
            Active::Nftables => {
                self.topo
                    .lb
                    .run("nft", &["delete", "table", "ip", NFT_NAT_TABLE])?;
                self.topo.lb.run("conntrack", &["-F"]).map(|_| ())?;
            }
            Active::Process(r) => {
                let name = r.proc.as_ref().map(|p| p.name.clone()).unwrap_or_default();
                if let Some(s) = r.stop() {
                    if !s.in_time {
                        report.note_once(format!(
                            "{name} did not exit within {:?} of SIGTERM after the load had ended; \
                             the bench SIGKILLed it",
                            peers::STOP_GRACE
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Connection tracking entries in the balancer namespace, and the
    /// table's limit.
    fn conntrack_fill(&self) -> Option<(u64, u64)> {
        in_ns(&self.topo.lb.name, || {
            let read = |k: &str| {
                std::fs::read_to_string(format!("/proc/sys/net/netfilter/{k}"))
                    .ok()?
                    .trim()
                    .parse::<u64>()
                    .ok()
            };
            Some((read("nf_conntrack_count")?, read("nf_conntrack_max")?))
        })
        .ok()
        .flatten()
    }

    /// The XDP attachments on the balancer's interfaces, as one phrase:
    /// "native on eth0, eth1, eth2"; None with none attached.
    fn xdp_modes(&self) -> Option<String> {
        let mut by_mode: Vec<(String, Vec<&str>)> = Vec::new();
        for dev in ["eth0", "eth1", "eth2"] {
            let Ok(Some((_, mode, _))) = self.topo.lb.xdp_attachment(dev) else {
                continue;
            };
            match by_mode.iter_mut().find(|(m, _)| *m == mode) {
                Some((_, devs)) => devs.push(dev),
                None => by_mode.push((mode, vec![dev])),
            }
        }
        (!by_mode.is_empty()).then(|| {
            by_mode
                .iter()
                .map(|(m, devs)| format!("{m} on {}", devs.join(", ")))
                .collect::<Vec<_>>()
                .join("; ")
        })
    }

    /// One measured run of `kind` at `target` (the balancer's address, or a
    /// backend's for direct), with the host's CPU over it.
    fn measure(
        &self,
        kind: TcpKind,
        target: [u8; 4],
        balancer: Option<&Proc>,
    ) -> Result<TcpSample> {
        let pid = balancer.map(Proc::pid);
        let proc0 = pid.map(load::sample_group);
        let others = || {
            let ours = cleanup::our_groups();
            others_cpu_s(|g| ours.contains(&g))
        };
        let others0 = others();
        let cpu0 = HostCpu::now();
        let t0 = Instant::now();
        let mut s = match kind.http() {
            Some(http) => {
                let r = load::run(
                    http,
                    &self.topo.client,
                    SocketAddr::from((target, 80)),
                    self.opts,
                    self.dir,
                )?;
                TcpSample {
                    rate: r.rps,
                    units: r.requests,
                    p50_ms: r.p50_ms,
                    p99_ms: r.p99_ms,
                    max_ms: r.max_ms,
                    errors: r.errors,
                    ..Default::default()
                }
            }
            None => {
                let st = self.stream(target)?;
                TcpSample {
                    rate: st.bits_per_s,
                    units: st.bytes,
                    errors: u64::from(STREAMS.saturating_sub(st.streams)),
                    ..Default::default()
                }
            }
        };
        let cpu = HostCpu::now().since(&cpu0);
        s.secs = t0.elapsed().as_secs_f64();
        s.others_cpu_s = (others() - others0).max(0.0);
        if let Some(p) = balancer {
            if p.exited() {
                bail!(
                    "{} exited during the run; its output:\n{}",
                    p.name,
                    p.log_tail()
                );
            }
        }
        s.host_busy_s = cpu.busy_s();
        s.host_softirq_s = cpu.softirq;
        s.host_steal_s = cpu.steal;
        s.target = ip4(target);
        if s.units > 0 {
            let per = s.units as f64 / kind.per_cpu_unit();
            s.host_cpu_per_unit = Some(s.host_busy_s / per);
            if let (Some(pid), Some(p0)) = (pid, proc0) {
                let p1 = load::sample_group(pid);
                s.proc_cpu_per_unit = Some((p1.cpu_s - p0.cpu_s) / per);
            }
        }
        Ok(s)
    }

    fn stream(&self, target: [u8; 4]) -> Result<Streamed> {
        let mut cmd = self.topo.client.command("iperf");
        cmd.args(iperf_args(&ip4(target), self.opts.duration));
        let p = Proc::spawn("iperf", cmd, &self.dir.join("tcp/iperf.log"))?;
        let (status, out) = p.wait(Duration::from_secs(self.opts.duration + 30))?;
        if !status.success() {
            bail!("iperf failed ({status}):\n{out}");
        }
        parse_iperf_csv(&out).with_context(|| format!("iperf printed:\n{out}"))
    }
}

#[allow(clippy::too_many_arguments)]
pub fn run(
    topo: &Topology,
    dir: &Path,
    xalb_bin: &Path,
    configs: &TcpConfigs,
    plan: &TcpPlan,
    opts: &LoadOpts,
    report: &mut Report,
) -> Result<()> {
    std::fs::create_dir_all(dir.join("tcp"))?;
    let ipvs = ipvs_status();
    report.tcp_setup = Some(TcpSetup {
        configs: configs.clone(),
        offloads: if plan.veth_defaults {
            "the veths' defaults (--tcp-veth-defaults: TSO on, GRO off), on which XDP cannot \
             forward"
                .into()
        } else {
            format!(
                "`ethtool -K eth0 {}` in the client's and both backends' namespaces",
                XDP_FORWARDING_OFFLOADS.join(" ")
            )
        },
        stream_command: format!(
            "iperf {}   (iperf 2.x, client namespace; an `iperf -s -p {STREAM_PORT}` on each backend)",
            iperf_args("TARGET", opts.duration).join(" ")
        ),
        ipvs: ipvs.clone(),
    });
    // Held to the end of the scenario: restored on drop.
    let _offloads = if plan.veth_defaults {
        None
    } else {
        Some(topo.xdp_forwarding_offloads()?)
    };
    let _sinks = peers::start_stream_sinks(topo, dir)?;
    let env = Env {
        topo,
        dir,
        xalb_bin,
        configs,
        opts,
    };
    for &kind in &plan.kinds {
        report.tcp_unavailable(kind, IPVS, &ipvs);
        for rep in 0..plan.repeat {
            // As in the L7 scenario: each round starts one system further on.
            let n = plan.systems.len().max(1);
            let order = (0..n).map(|i| plan.systems[(i + rep as usize) % n]);
            for system in order {
                super::progress(format_args!(
                    "{}, round {}/{}: {}",
                    kind.scenario(),
                    rep + 1,
                    plan.repeat,
                    system.name()
                ));
                match env.run_one(system, kind, rep, plan, report) {
                    Ok(s) => {
                        super::progress(format_args!(
                            "  {} {}, {} errors, host CPU {}",
                            rate_text(kind, s.rate),
                            kind.rate_unit(),
                            s.errors,
                            s.host_cpu_per_unit
                                .map_or("n/a".into(), |c| format!("{c:.3} s/{}", kind.cpu_unit()))
                        ));
                        report.add_tcp(kind, system.name(), s);
                    }
                    Err(e) => {
                        report.tcp_failed(kind, system.name(), format!("round {}: {e:#}", rep + 1))
                    }
                }
            }
        }
    }
    Ok(())
}

/// "20,512" or "6.84" (Gbit/s).
pub fn rate_text(kind: TcpKind, rate: f64) -> String {
    match kind {
        TcpKind::Stream => format!("{:.2}", rate / 1e9),
        _ => super::report::thousands(rate),
    }
}

impl Env<'_> {
    fn run_one(
        &self,
        system: TcpSystem,
        kind: TcpKind,
        round: u32,
        plan: &TcpPlan,
        report: &mut Report,
    ) -> Result<TcpSample> {
        let active = self.start(system).context("did not start")?;
        let result = self.serve(system, &active, kind, round, plan);
        let full = (system == TcpSystem::Nftables)
            .then(|| self.conntrack_fill())
            .flatten();
        if let Some((count, max)) = full {
            if count * 10 >= max * 9 {
                report.note_once(format!(
                    "{NFTABLES}: the connection tracking table held {count} of its {max} entries \
                     after a run; a fuller table drops new connections"
                ));
            }
        }
        let stopped = self.stop(active, report);
        let s = result?;
        stopped?;
        Ok(s)
    }

    fn serve(
        &self,
        system: TcpSystem,
        active: &Active,
        kind: TcpKind,
        round: u32,
        plan: &TcpPlan,
    ) -> Result<TcpSample> {
        let target = match system {
            // Both backends in turn, a round each: through a balancer the
            // load goes to both.
            TcpSystem::Direct => BACKENDS[round as usize % 2],
            _ => LB_ADDR,
        };
        let balancer = match active {
            Active::Process(r) => r.proc.as_ref(),
            _ => None,
        };
        if balancer.is_some() && plan.warmup > 0 {
            let o = LoadOpts {
                duration: plan.warmup,
                ..*self.opts
            };
            load::run(
                Kind::KeepAlive,
                &self.topo.client,
                SocketAddr::from((target, 80)),
                &o,
                self.dir,
            )
            .context("warm-up")?;
        }
        let mut s = self.measure(kind, target, balancer)?;
        s.xdp = self.xdp_modes();
        Ok(s)
    }
}

/// Why the IPVS row has no figures, from what this host shows. The bench
/// has no IPVS system to run yet: the machine it was written on has no IPVS
/// to try one against, so a kernel with IPVS gets a reason too rather than a
/// silently missing row.
pub fn ipvs_status() -> String {
    if Path::new("/proc/net/ip_vs").exists() {
        return "not measured: the kernel has IPVS (/proc/net/ip_vs exists), but this bench \
                has no IPVS system yet"
            .into();
    }
    let mut why = vec!["/proc/net/ip_vs is absent (IPVS neither built in nor loaded)".to_string()];
    let config = std::process::Command::new("zcat")
        .arg("/proc/config.gz")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    match config
        .lines()
        .find(|l| l.starts_with("CONFIG_IP_VS=") || l.starts_with("# CONFIG_IP_VS is"))
    {
        Some(l) => why.push(format!("/proc/config.gz says `{l}`")),
        None => why.push("no /proc/config.gz to say whether it was built".into()),
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let modules = Path::new("/lib/modules").join(release.trim());
    if !modules.exists() {
        why.push(format!(
            "{} does not exist, so no module could be loaded",
            modules.display()
        ));
    }
    format!("unavailable: {}", why.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iperf_streams_are_added_up_without_a_sum_line() {
        let out = "19700101000000,10.231.1.2,43536,10.231.1.1,5001,2,0.0-2.0,985792572,3912544843
19700101000000,10.231.1.2,43534,10.231.1.1,5001,4,0.0-2.0,760610876,2971424961
19700101000000,10.231.1.2,43552,10.231.1.1,5001,1,0.0-2.0,716308540,2798130786
connect failed: Connection refused
19700101000000,10.231.1.2,0,10.231.1.1,5001,-1,0.0-2.0,2462712000,9682100590
";
        let s = parse_iperf_csv(out).unwrap();
        assert_eq!(s.streams, 3);
        assert_eq!(s.bytes, 985792572 + 760610876 + 716308540);
        assert!((s.bits_per_s - (3912544843.0 + 2971424961.0 + 2798130786.0)).abs() < 1.0);
        assert!(parse_iperf_csv("connect failed: Connection refused\n").is_err());
        assert_eq!(
            iperf_args("10.231.1.1", 5).join(" "),
            "-c 10.231.1.1 -p 5001 -P 4 -t 5 -y C"
        );
    }

    #[test]
    fn units_per_kind() {
        assert_eq!(TcpKind::Stream.per_cpu_unit(), 1e9);
        assert_eq!(TcpKind::ConnPerRequest.cpu_unit(), "1k conn");
        assert_eq!(TcpKind::Stream.http(), None);
        assert_eq!(rate_text(TcpKind::Stream, 6.84e9), "6.84");
        assert_eq!(rate_text(TcpKind::KeepAlive, 98_123.4), "98,123");
    }

    #[test]
    fn ipvs_gets_a_reason_either_way() {
        let why = ipvs_status();
        assert!(why.contains("ip_vs"), "{why}");
    }
}
