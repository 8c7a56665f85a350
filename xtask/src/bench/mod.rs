//! `cargo xtask bench`: xalb against nginx, HAProxy, no balancer at all, and
//! the kernel's own packet filters, on this machine, in network namespaces;
//! the balancers' memory holding many idle connections, and the requests
//! each fails while it is upgraded in place under load.
//!
//! Every system is measured in the same run, interleaved (A B C D, B C D A,
//! ...) and repeated, and the median is reported: on a shared two-core
//! machine only ratios measured side by side mean anything.

mod bpf;
mod cleanup;
mod cpu;
mod idle;
mod kernel;
mod l7;
mod load;
mod peers;
mod report;
pub mod tally;
mod tcp;
mod tcp_report;
mod topology;
mod upgrade;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::ValueEnum;

use crate::{build, toolchain, workspace_root};
use load::{Kind, LoadOpts};
use peers::System;
use report::Report;

#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
pub enum Scenario {
    /// HTTP through each balancer: wrk keep-alive and connection per request, h2load h2c, and keep-alive at a fixed rate.
    L7,
    /// Packet drops by XDP, nftables and xdp-filter; XDP's cost on allowed traffic.
    Kernel,
    /// TCP listeners: new connections/s, keep-alive requests, long streams and latency
    /// through xalb's kernel path, HAProxy mode tcp, nginx stream, nftables NAT and direct,
    /// with the host's busy CPU per connection, request and GB.
    Tcp,
    /// Each balancer's resident memory holding many idle client connections.
    Idle,
    /// Requests failed while each balancer is upgraded in place a third of
    /// the way through a wrk load (xalb run --takeover, HAProxy's and nginx's reloads).
    /// Only when asked for.
    Upgrade,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// About two minutes (plus building xalb): 2 s runs, two rounds, 64-byte frames only.
    #[arg(long, conflicts_with = "smoke")]
    quick: bool,
    /// A few seconds: one round of one-second keep-alive and fixed-rate runs (the test suite's check).
    #[arg(long)]
    smoke: bool,
    /// Which scenarios to run [default: l7,kernel,tcp,idle; with --smoke l7,kernel].
    #[arg(long, value_enum, value_delimiter = ',')]
    scenarios: Vec<Scenario>,
    /// Which HTTP load kinds the l7 scenario runs [default: all four; with --smoke keep-alive,fixed-rate];
    /// the upgrade scenario runs those of conn-per-request and keep-alive given [default: both].
    #[arg(long, value_enum, value_delimiter = ',')]
    kinds: Vec<Kind>,
    /// Which load kinds the tcp scenario runs [default: all four; with --smoke
    /// conn-per-request,stream].
    #[arg(long, value_enum, value_delimiter = ',')]
    tcp_kinds: Vec<tcp::TcpKind>,
    /// Run the tcp scenario on the veths' default offloads (TSO on, GRO off) rather than
    /// the settings XDP forwarding needs (transmit checksumming off, GRO on): the peers
    /// as they run by default, several times faster on long streams; xalb's kernel path
    /// cannot forward on them.
    #[arg(long)]
    tcp_veth_defaults: bool,
    /// Idle client connections each balancer holds in the idle scenario.
    #[arg(long, default_value_t = 10_000)]
    idle_connections: u32,
    /// Seconds per load run (the kernel scenario measures for half of it, 1-5 s).
    #[arg(long)]
    duration: Option<u64>,
    /// Concurrent connections for wrk and h2load.
    #[arg(long)]
    connections: Option<u32>,
    /// Requests per second offered, in total, by the fixed-rate run (HTTP/1.1
    /// keep-alive, the same rate for every system): about half of what
    /// each peer serves at saturation on a 2-core machine.
    #[arg(long, default_value_t = 30_000)]
    fixed_rps: u32,
    /// Interleaved rounds; the median is reported.
    #[arg(long)]
    repeat: Option<u32>,
    /// Use this xalb binary instead of building it (release) first.
    #[arg(long)]
    xalb: Option<PathBuf>,
    /// Also run this second xalb binary, as "xalb B", in every L7 round: an
    /// A/B comparison of two builds in one run, each round interleaved with
    /// the others like any system.
    #[arg(long)]
    xalb_b: Option<PathBuf>,
    /// Where the JSON goes (default target/bench, or target/bench/smoke with --smoke).
    #[arg(long)]
    json_dir: Option<PathBuf>,
}

struct Plan {
    l7: Option<l7::L7Plan>,
    kernel: Option<kernel::KernelPlan>,
    idle: Option<idle::IdlePlan>,
    upgrade: Option<upgrade::UpgradePlan>,
    tcp: Option<tcp::TcpPlan>,
    load: LoadOpts,
    mode: &'static str,
}

impl Plan {
    fn new(a: &Args) -> Result<Self> {
        let (mode, duration, repeat, warmup) = if a.smoke {
            ("smoke", 1, 1, 0)
        } else if a.quick {
            ("quick", 2, 2, 1)
        } else {
            ("full", 10, 3, 2)
        };
        let duration = a.duration.unwrap_or(duration);
        let repeat = a.repeat.unwrap_or(repeat);
        let connections = a.connections.unwrap_or(64);
        if duration == 0 || repeat == 0 || connections == 0 || a.fixed_rps == 0 {
            bail!("--duration, --repeat, --connections and --fixed-rps must be at least 1");
        }
        let load = LoadOpts {
            threads: 2,
            connections,
            duration,
            streams: 10,
            fixed_rps: a.fixed_rps,
        };
        let scenarios = if !a.scenarios.is_empty() {
            a.scenarios.clone()
        } else if a.smoke {
            // Ten thousand connections per balancer is no smoke test.
            vec![Scenario::L7, Scenario::Kernel]
        } else {
            vec![
                Scenario::L7,
                Scenario::Kernel,
                Scenario::Tcp,
                Scenario::Idle,
            ]
        };
        let kinds = if !a.kinds.is_empty() {
            a.kinds.clone()
        } else if a.smoke {
            vec![Kind::KeepAlive, Kind::FixedRate]
        } else {
            let mut all = vec![
                Kind::KeepAlive,
                Kind::ConnPerRequest,
                Kind::H2c,
                Kind::FixedRate,
            ];
            all.extend(Kind::TLS);
            all
        };
        let xalb_b = a
            .xalb_b
            .as_ref()
            .map(|p| {
                p.canonicalize()
                    .with_context(|| format!("--xalb-b {}", p.display()))
            })
            .transpose()?;
        let l7 = scenarios.contains(&Scenario::L7).then(|| {
            let mut systems = vec![System::Xalb, System::Nginx, System::Haproxy, System::Direct];
            if xalb_b.is_some() {
                systems.insert(1, System::XalbB);
            }
            l7::L7Plan {
                systems,
                kinds,
                repeat,
                warmup,
                xalb_b,
            }
        });
        let kernel = scenarios
            .contains(&Scenario::Kernel)
            .then(|| kernel::KernelPlan {
                sizes: if a.smoke || a.quick {
                    vec![64]
                } else {
                    vec![64, 1500]
                },
                repeat,
                ramp: Duration::from_millis(if a.smoke { 300 } else { 500 }),
                window: Duration::from_secs((duration / 2).clamp(1, 5)),
                test_run_repeat: if a.smoke {
                    10_000
                } else if a.quick {
                    200_000
                } else {
                    1_000_000
                },
                xdp_cost: true,
                warmup,
            });
        let idle = if scenarios.contains(&Scenario::Idle) {
            // The client holds every connection in one process; leave it a
            // few descriptors of its own.
            let fds = nofile_limit();
            if a.idle_connections == 0 || u64::from(a.idle_connections) + 100 > fds {
                bail!(
                    "--idle-connections must be 1-{} (the file descriptor limit is {fds})",
                    fds.saturating_sub(100)
                );
            }
            Some(idle::IdlePlan {
                systems: vec![System::Xalb, System::Nginx, System::Haproxy],
                connections: a.idle_connections,
                hold: Duration::from_secs(3),
                repeat,
            })
        } else {
            None
        };
        // Not in the default set: it adds about a third to a full run, and
        // what it measures, requests lost by an upgrade, changes with the
        // handover code rather than with the speed work the default tracks.
        let upgrade = if scenarios.contains(&Scenario::Upgrade) {
            let kinds: Vec<Kind> = if a.kinds.is_empty() {
                upgrade::KINDS.to_vec()
            } else {
                upgrade::KINDS
                    .into_iter()
                    .filter(|k| a.kinds.contains(k))
                    .collect()
            };
            if kinds.is_empty() {
                bail!("the upgrade scenario runs --kinds conn-per-request and keep-alive only");
            }
            Some(upgrade::UpgradePlan {
                systems: vec![System::Xalb, System::Nginx, System::Haproxy],
                kinds,
                repeat,
            })
        } else {
            None
        };
        let tcp = scenarios.contains(&Scenario::Tcp).then(|| tcp::TcpPlan {
            systems: vec![
                tcp::TcpSystem::Xalb,
                tcp::TcpSystem::XalbGeneric,
                tcp::TcpSystem::Nftables,
                tcp::TcpSystem::Haproxy,
                tcp::TcpSystem::Nginx,
                tcp::TcpSystem::Direct,
            ],
            kinds: if !a.tcp_kinds.is_empty() {
                a.tcp_kinds.clone()
            } else if a.smoke {
                // One wrk kind and the streams: every tool and system once.
                vec![tcp::TcpKind::ConnPerRequest, tcp::TcpKind::Stream]
            } else {
                tcp::TcpKind::ALL.to_vec()
            },
            repeat,
            warmup,
            veth_defaults: a.tcp_veth_defaults,
        });
        Ok(Self {
            l7,
            kernel,
            idle,
            upgrade,
            tcp,
            load,
            mode,
        })
    }
}

static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// A progress line on stderr (stdout is the report), with the elapsed time.
pub(crate) fn progress(msg: impl std::fmt::Display) {
    let t = START.get_or_init(Instant::now).elapsed().as_secs_f64();
    eprintln!("xtask bench [{t:5.1}s] {msg}");
}

pub fn run(args: Args) -> Result<()> {
    START.get_or_init(Instant::now);
    // First, before any thread exists: from here on a signal cleans up.
    cleanup::install_signal_handler()?;
    let plan = Plan::new(&args)?;
    let result = run_inner(&args, &plan);
    cleanup::cleanup_all();
    result
}

fn run_inner(args: &Args, plan: &Plan) -> Result<()> {
    let started = Instant::now();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("cargo xtask bench needs root (network namespaces, XDP, BPF)");
    }
    let mut tools = vec![L7_TOOLS];
    if plan.kernel.is_some() {
        tools.push(KERNEL_TOOLS);
    }
    if plan.tcp.is_some() {
        tools.push(TCP_TOOLS);
    }
    ensure_tools(&tools)?;
    let build_started = Instant::now();
    let xalb_bin = match &args.xalb {
        Some(p) => p
            .canonicalize()
            .with_context(|| format!("--xalb {}", p.display()))?,
        None => build::all(true)?,
    };
    let build_s = build_started.elapsed().as_secs_f64();
    raise_nofile();
    for stale in topology::stale_namespaces() {
        eprintln!("xtask bench: note: namespace {stale} is left from an earlier run (ip netns del {stale})");
    }

    let dir = peers::scratch_dir()?;
    let mut report = Report {
        started_utc: report::utc_now(),
        command: command_line(),
        machine: machine(),
        ..Default::default()
    };
    // Sized for the idle scenario even when it does not run: the L7 numbers
    // of runs with and without it come from the same configurations.
    peers::write_tls_files(&dir)?;
    let configs = peers::Configs::new(&dir, args.idle_connections.max(plan.load.connections));
    report.configs = Some(configs.clone());
    report.options = options(plan);
    report.load_commands = load_commands(plan);

    progress(format_args!("{} run; setting up namespaces", plan.mode));
    let topo = topology::Topology::new()?;
    let backends = peers::start_backends(&topo, &dir)?;
    if let Some(p) = &plan.l7 {
        progress("L7 scenario");
        l7::run(&topo, &dir, &xalb_bin, &configs, p, &plan.load, &mut report)?;
    }
    if let Some(k) = &plan.kernel {
        progress("kernel scenario");
        kernel::run(&topo, &dir, &xalb_bin, &configs, k, &plan.load, &mut report)?;
    }
    if let Some(t) = &plan.tcp {
        progress("TCP scenario");
        let configs = peers::TcpConfigs::new(&dir);
        tcp::run(&topo, &dir, &xalb_bin, &configs, t, &plan.load, &mut report)?;
    }
    if let Some(i) = &plan.idle {
        progress("idle scenario");
        idle::run(&topo, &dir, &xalb_bin, &configs, i, &mut report)?;
    }
    if let Some(u) = &plan.upgrade {
        progress("upgrade scenario");
        upgrade::run(&topo, &dir, &xalb_bin, &configs, u, &plan.load, &mut report)?;
    }
    drop(backends);
    drop(topo);

    report.elapsed_s = started.elapsed().as_secs_f64();
    report.build_s = build_s;
    report.finish();
    println!("{}", report.markdown());
    let json_dir = args.json_dir.clone().unwrap_or_else(|| {
        let d = workspace_root().join("target/bench");
        if args.smoke {
            d.join("smoke")
        } else {
            d
        }
    });
    let path = report.write_json(&json_dir, !args.smoke)?;
    progress(format_args!("JSON in {}", path.display()));
    Ok(())
}

/// Debian package and the command it must provide.
const L7_TOOLS: &[(&str, &str)] = &[
    ("iproute2", "ip"),
    ("wrk", "wrk"),
    ("nginx", "nginx"),
    ("haproxy", "haproxy"),
    ("nghttp2-client", "h2load"),
    ("openssl", "openssl"),
];
const KERNEL_TOOLS: &[(&str, &str)] = &[
    ("iperf3", "iperf3"),
    ("xdp-tools", "xdp-filter"),
    ("netsniff-ng", "trafgen"),
    ("bpftool", "bpftool"),
    ("nftables", "nft"),
];

/// Debian package and the command, or for a file that is no command its
/// absolute path, it must provide.
const TCP_TOOLS: &[(&str, &str)] = &[
    ("iperf", "iperf"),
    ("nftables", "nft"),
    ("conntrack", "conntrack"),
    ("ethtool", "ethtool"),
    ("libnginx-mod-stream", peers::NGINX_STREAM_MODULE),
];

/// Packages apt has no candidate for.
fn without_candidate(pkgs: &[&str]) -> Vec<String> {
    pkgs.iter()
        .filter(|p| {
            !Command::new("apt-cache")
                .args(["policy", p])
                .output()
                .is_ok_and(|o| {
                    let s = String::from_utf8_lossy(&o.stdout);
                    s.lines().any(|l| {
                        l.trim()
                            .strip_prefix("Candidate:")
                            .is_some_and(|c| c.trim() != "(none)")
                    })
                })
        })
        .map(|p| p.to_string())
        .collect()
}

fn ensure_tools(sets: &[&[(&str, &str)]]) -> Result<()> {
    let mut tools: Vec<(&str, &str)> = Vec::new();
    for t in sets.iter().flat_map(|s| s.iter()) {
        if !tools.contains(t) {
            tools.push(*t);
        }
    }
    let missing: Vec<&str> = tools
        .iter()
        .map(|t| t.0)
        .filter(|p| !crate::toolchain::installed(p))
        .collect();
    if !missing.is_empty() {
        if !without_candidate(&missing).is_empty() {
            // Stale or empty package lists: refresh once, then ask again.
            crate::run_status(Command::new("apt-get").args(["update", "-q"]))?;
            let none = without_candidate(&missing);
            if !none.is_empty() {
                bail!(
                    "apt has no package named {}: install them by hand",
                    none.join(", ")
                );
            }
        }
        toolchain::ensure_apt(&missing)?;
    }
    for (pkg, cmd) in tools {
        if cmd.starts_with('/') {
            if !Path::new(cmd).exists() {
                bail!("{cmd} is missing although {pkg} is installed: apt-get install --reinstall {pkg}");
            }
        } else if find_command(cmd).is_none() {
            bail!(
                "`{cmd}` not found although {pkg} is installed: apt-get install --reinstall {pkg}"
            );
        }
    }
    Ok(())
}

fn find_command(cmd: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    for dir in path
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
    {
        let p = Path::new(dir).join(cmd);
        if p.is_file() {
            return Some(p);
        }
    }
    None
}

/// The hard file descriptor limit, which `raise_nofile` makes the soft one.
fn nofile_limit() -> u64 {
    // SAFETY: getrlimit on a local struct.
    unsafe {
        let mut l: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 {
            l.rlim_max
        } else {
            1024
        }
    }
}

/// nginx, HAProxy and wrk with thousands of connections need more than the
/// default 1024 descriptors; children inherit the raised soft limit (up to
/// the hard limit, 20,000 on these machines).
fn raise_nofile() {
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        let mut l: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && l.rlim_cur < l.rlim_max {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!("cargo xtask {}", args.join(" "))
}

fn first_line(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    // nginx -v and h2load print to stderr.
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines().next().map(|l| l.trim().to_string())
}

fn machine() -> report::Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let os = std::fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_default();
    let mut tools = BTreeMap::new();
    let word_after = |line: Option<String>, marker: &str| {
        let line = line?;
        let mut words = line.split_whitespace().skip_while(|w| *w != marker);
        words.nth(1).map(str::to_string)
    };
    if let Some(v) =
        first_line("nginx", &["-v"]).and_then(|l| l.split('/').nth(1).map(|s| s.trim().to_string()))
    {
        tools.insert("nginx".into(), v);
    }
    if let Some(v) = word_after(first_line("haproxy", &["-v"]), "version") {
        tools.insert("HAProxy".into(), v);
    }
    if let Some(v) = word_after(first_line("wrk", &["-v"]), "wrk") {
        tools.insert("wrk".into(), v);
    }
    if let Some(v) = first_line("h2load", &["--version"]).and_then(|l| {
        l.split_whitespace()
            .find_map(|w| w.strip_prefix("nghttp2/"))
            .map(str::to_string)
    }) {
        tools.insert("h2load".into(), v);
    }
    report::Machine {
        cpu_model,
        cpus: peers::cores(),
        kernel: first_line("uname", &["-r"]).unwrap_or_default(),
        os,
        tools,
    }
}

fn options(plan: &Plan) -> BTreeMap<String, String> {
    let mut o = BTreeMap::new();
    o.insert("mode".into(), plan.mode.into());
    o.insert("duration_s".into(), plan.load.duration.to_string());
    o.insert("connections".into(), plan.load.connections.to_string());
    o.insert("fixed_rps".into(), plan.load.fixed_rps.to_string());
    if let Some(p) = &plan.l7 {
        o.insert("rounds".into(), p.repeat.to_string());
        o.insert("warmup_s".into(), p.warmup.to_string());
        if let Some(b) = &p.xalb_b {
            o.insert("xalb_b".into(), b.display().to_string());
        }
    }
    if let Some(i) = &plan.idle {
        o.insert("rounds".into(), i.repeat.to_string());
        o.insert("idle_connections".into(), i.connections.to_string());
        o.insert("idle_hold_s".into(), i.hold.as_secs().to_string());
    }
    if let Some(u) = &plan.upgrade {
        o.insert("rounds".into(), u.repeat.to_string());
    }
    if let Some(t) = &plan.tcp {
        o.insert("rounds".into(), t.repeat.to_string());
        o.insert("warmup_s".into(), t.warmup.to_string());
        if t.veth_defaults {
            o.insert("tcp_veth".into(), "defaults".into());
        }
    }
    if let Some(k) = &plan.kernel {
        o.insert("rounds".into(), k.repeat.to_string());
        o.insert("kernel_window_s".into(), k.window.as_secs().to_string());
        o.insert(
            "frame_sizes".into(),
            k.sizes
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join("+"),
        );
    }
    o
}

fn load_commands(plan: &Plan) -> Vec<String> {
    let o = &plan.load;
    let kinds = plan
        .l7
        .as_ref()
        .map_or(&[Kind::KeepAlive][..], |p| &p.kinds);
    let mut v: Vec<String> = kinds.iter().map(|&k| load::command(k, o)).collect();
    if kinds != [Kind::KeepAlive] {
        v.push("TARGET: 10.231.1.1:80 for xalb, nginx and HAProxy (nginx h2c: :8080); 10.231.11.2:80 (h2c :8080) for direct".into());
    }
    if let Some(t) = &plan.tcp {
        for k in t.kinds.iter().filter_map(|k| k.http()) {
            let c = load::command(k, o);
            if !v.contains(&c) {
                v.push(c);
            }
        }
        v.push(
            "TCP scenario TARGET: 10.231.1.1:80 through each balancer; for direct 10.231.11.2:80 and              10.231.12.2:80 in alternate rounds (streams: the same addresses, port 5001; command below the TCP table)"
                .into(),
        );
    }
    if let Some(i) = &plan.idle {
        v.push(format!(
            "python3 -c CLIENT {n} {lb} 80 {cap}   (idle: opens {n} connections one after another from the client namespace, sends nothing; \
             RSS read {hold} s after the last, VmRSS summed over the balancer's processes; the script is xtask/src/bench/idle.rs)",
            n = i.connections,
            lb = topology::ip4(topology::LB_ADDR),
            cap = idle::CLIENT_CAP_S,
            hold = i.hold.as_secs()
        ));
    }
    if let Some(u) = &plan.upgrade {
        for &k in &u.kinds {
            let c = load::command(k, o);
            if !v.contains(&c) {
                v.push(c);
            }
        }
        v.push(format!(
            "upgrade under load: the same wrk run with TARGET 10.231.1.1:80, the balancer upgraded {:.1} s into it:",
            upgrade::upgrade_at(o.duration).as_secs_f64()
        ));
        for &s in &u.systems {
            v.push(format!("{}: {}", s.name(), upgrade::how(s)));
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn plan(argv: &[&str]) -> Plan {
        let cli = Cli::parse_from(std::iter::once("bench").chain(argv.iter().copied()));
        Plan::new(&cli.args).unwrap()
    }

    #[test]
    fn idle_runs_by_default_and_quick_but_not_smoke() {
        assert!(plan(&[]).idle.is_some());
        let quick = plan(&["--quick"]);
        assert!(quick.idle.is_some() && quick.l7.is_some() && quick.kernel.is_some());
        let smoke = plan(&["--smoke"]);
        assert!(smoke.idle.is_none() && smoke.l7.is_some() && smoke.kernel.is_some());
        let only = plan(&["--scenarios", "idle", "--idle-connections", "500"]);
        assert!(only.l7.is_none() && only.kernel.is_none());
        assert_eq!(only.idle.unwrap().connections, 500);
        let cli = Cli::parse_from(["bench", "--scenarios", "idle", "--idle-connections", "0"]);
        assert!(Plan::new(&cli.args).is_err());
    }

    #[test]
    fn a_second_xalb_joins_the_l7_rounds_only() {
        let bin = std::env::current_exe().unwrap();
        let p = plan(&["--xalb-b", bin.to_str().unwrap()]);
        let l7 = p.l7.unwrap();
        assert_eq!(
            l7.systems,
            [
                System::Xalb,
                System::XalbB,
                System::Nginx,
                System::Haproxy,
                System::Direct
            ]
        );
        assert_eq!(
            l7.xalb_b.as_deref(),
            Some(bin.canonicalize().unwrap().as_path())
        );
        assert!(!p.idle.unwrap().systems.contains(&System::XalbB));
        assert!(!plan(&[]).l7.unwrap().systems.contains(&System::XalbB));
        let missing = Cli::parse_from(["bench", "--xalb-b", "/nonexistent/xalb"]);
        assert!(Plan::new(&missing.args).is_err());
    }

    #[test]
    fn the_upgrade_runs_only_when_asked_with_the_wrk_kinds_given() {
        assert!(plan(&[]).upgrade.is_none());
        assert!(plan(&["--quick"]).upgrade.is_none());
        let p = plan(&["--scenarios", "upgrade", "--repeat", "2", "--duration", "6"]);
        assert!(p.l7.is_none() && p.kernel.is_none() && p.idle.is_none());
        let u = p.upgrade.unwrap();
        assert_eq!(u.kinds, [Kind::ConnPerRequest, Kind::KeepAlive]);
        assert_eq!(u.systems, [System::Xalb, System::Nginx, System::Haproxy]);
        assert_eq!(u.repeat, 2);
        assert_eq!(p.load.duration, 6);
        let p = plan(&["--scenarios", "l7,upgrade", "--kinds", "keep-alive,h2c"]);
        assert_eq!(p.upgrade.unwrap().kinds, [Kind::KeepAlive]);
        assert_eq!(p.l7.unwrap().kinds, [Kind::KeepAlive, Kind::H2c]);
        let cli = Cli::parse_from(["bench", "--scenarios", "upgrade", "--kinds", "h2c"]);
        assert!(Plan::new(&cli.args).is_err());
    }

    #[test]
    fn tcp_runs_by_default_and_in_a_smoke_run_only_when_asked() {
        use tcp::{TcpKind, TcpSystem};
        let t = plan(&[]).tcp.unwrap();
        assert_eq!(t.kinds, TcpKind::ALL);
        assert_eq!(t.systems[0], TcpSystem::Xalb);
        assert_eq!(t.systems.last(), Some(&TcpSystem::Direct));
        assert!(!t.veth_defaults);
        assert!(plan(&["--quick"]).tcp.is_some());
        assert!(plan(&["--smoke"]).tcp.is_none());
        let smoke = plan(&["--smoke", "--scenarios", "tcp"]);
        assert!(smoke.l7.is_none() && smoke.kernel.is_none());
        assert_eq!(
            smoke.tcp.unwrap().kinds,
            [TcpKind::ConnPerRequest, TcpKind::Stream]
        );
        let p = plan(&[
            "--scenarios",
            "tcp",
            "--tcp-kinds",
            "stream,fixed-rate",
            "--tcp-veth-defaults",
        ]);
        let t = p.tcp.unwrap();
        assert_eq!(t.kinds, [TcpKind::Stream, TcpKind::FixedRate]);
        assert!(t.veth_defaults);
        // Its HTTP kinds' commands are listed, once each.
        let p = plan(&[
            "--kinds",
            "keep-alive",
            "--tcp-kinds",
            "keep-alive,fixed-rate",
        ]);
        let cmds = load_commands(&p);
        let wrk = cmds.iter().filter(|c| c.starts_with("wrk")).count();
        let h2load = cmds.iter().filter(|c| c.starts_with("h2load")).count();
        assert_eq!((wrk, h2load), (1, 1), "{cmds:#?}");
    }

    #[test]
    fn kinds_choose_the_http_runs() {
        let all = plan(&[]).l7.unwrap().kinds;
        assert_eq!(all.len(), 9);
        assert_eq!(all[4..], Kind::TLS);
        let p = plan(&["--kinds", "tls-full-rsa,tls-resumed"]);
        assert_eq!(p.l7.unwrap().kinds, [Kind::TlsFullRsa, Kind::TlsResumed]);
        let p = plan(&["--kinds", "keep-alive,h2c"]);
        assert_eq!(p.l7.unwrap().kinds, [Kind::KeepAlive, Kind::H2c]);
        let p = plan(&["--smoke", "--kinds", "conn-per-request"]);
        assert_eq!(p.l7.unwrap().kinds, [Kind::ConnPerRequest]);
        assert!(Cli::try_parse_from(["bench", "--kinds", "pipelined"]).is_err());
    }
}
