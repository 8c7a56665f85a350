//! The kernel scenario: dropping packets from a source the security group
//! does not allow, by xalb's XDP program, an nftables ingress rule and
//! xdp-filter, all fed by the same generator (trafgen) with the same frames;
//! and what XDP costs allowed traffic (wrk through xalb with the program
//! attached, then detached).
//!
//! On veth the generator, not the filter, limits the rate (docs/benchmarks.md,
//! "How to read them"), so each filter is also measured by its
//! cost per packet: the program's own run_time_ns / run_cnt (BPF stats),
//! BPF_PROG_TEST_RUN on the same frame, and the host's busy CPU time per
//! generated packet (the only measure that includes nftables).

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::bpf;
use super::cleanup::{self, Proc};
use super::cpu::HostCpu;
use super::l7;
use super::load::{Kind, LoadOpts};
use super::peers::{self, Configs, System};
use super::report::{KernelSample, Report};
use super::topology::{in_ns, ip4, Topology, DENIED_SRC, LB_ADDR};

pub struct KernelPlan {
    pub sizes: Vec<usize>,
    pub repeat: u32,
    pub ramp: Duration,
    pub window: Duration,
    pub test_run_repeat: u32,
    /// wrk through xalb with and without XDP.
    pub xdp_cost: bool,
    pub warmup: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Dropper {
    None,
    Nftables,
    XdpFilter,
    Xalb,
}

impl Dropper {
    fn name(self) -> &'static str {
        match self {
            Dropper::None => "no filter (to the stack)",
            Dropper::Nftables => "nftables ingress drop",
            Dropper::XdpFilter => "xdp-filter",
            Dropper::Xalb => "xalb XDP",
        }
    }
    fn is_peer(self) -> bool {
        matches!(self, Dropper::Nftables | Dropper::XdpFilter)
    }
}

const NFT_TABLE: &str = "xbench";

pub fn nft_ruleset() -> String {
    format!(
        "table netdev {NFT_TABLE} {{
    chain ingress {{
        type filter hook ingress device \"eth0\" priority -500; policy accept;
        ip saddr {src} counter drop
    }}
}}
",
        src = ip4(DENIED_SRC)
    )
}

pub fn xdp_filter_commands(mode: &str) -> String {
    format!(
        "xdp-filter load eth0 --features ipv4 --mode {mode}\nxdp-filter ip {} --mode src\n",
        ip4(DENIED_SRC)
    )
}

/// A TCP SYN from the denied source to the balancer's port 80, padded with
/// payload to `size` bytes (Ethernet frame without FCS), checksums right.
pub fn frame(size: usize, dst_mac: [u8; 6], src_mac: [u8; 6]) -> Vec<u8> {
    let size = size.max(54);
    let mut f = Vec::with_capacity(size);
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let ip_len = (size - 14) as u16;
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
    ip[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
    ip[6] = 0x40; // DF
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&DENIED_SRC);
    ip[16..20].copy_from_slice(&LB_ADDR);
    let c = checksum(&ip, 0);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    let mut tcp = vec![0u8; size - 34];
    tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&80u16.to_be_bytes());
    tcp[4..8].copy_from_slice(&1u32.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x02; // SYN
    tcp[14..16].copy_from_slice(&64240u16.to_be_bytes());
    let mut pseudo = 0u32;
    for w in [&DENIED_SRC[..], &LB_ADDR[..]] {
        pseudo += u32::from(u16::from_be_bytes([w[0], w[1]]));
        pseudo += u32::from(u16::from_be_bytes([w[2], w[3]]));
    }
    pseudo += 6 + tcp.len() as u32;
    let c = checksum(&tcp, pseudo);
    tcp[16..18].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&tcp);
    f
}

fn checksum(data: &[u8], initial: u32) -> u16 {
    let mut sum = initial;
    for ch in data.chunks(2) {
        let w = if ch.len() == 2 {
            u16::from_be_bytes([ch[0], ch[1]])
        } else {
            u16::from_be_bytes([ch[0], 0])
        };
        sum += u32::from(w);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// trafgen's configuration for one fixed frame, as raw bytes.
fn trafgen_conf(frame: &[u8]) -> String {
    let bytes: Vec<String> = frame.iter().map(|b| format!("0x{b:02x}")).collect();
    let lines: Vec<String> = bytes
        .chunks(16)
        .map(|c| format!("  {}", c.join(", ")))
        .collect();
    format!("{{\n{}\n}}\n", lines.join(",\n"))
}

/// One sender on one CPU; the host's socket buffer sysctls left alone (they
/// are global, not per namespace); through the qdisc, since Linux 6.14 a veth
/// whose peer runs XDP pushes back (NETDEV_TX_BUSY) when the peer's ring is
/// full, which trafgen's default qdisc bypass turns into a fatal EAGAIN (the
/// client's eth0 gets a pfifo); and a TX ring smaller than the default socket
/// send buffer, so the ring alone cannot exhaust it (another EAGAIN seen
/// here). What still fails now and then is retried.
const TRAFGEN_ARGS: [&str; 6] = [
    "--cpus",
    "1",
    "--no-sock-mem",
    "--qdisc-path",
    "--ring-size",
    "128KiB",
];

fn trafgen_command(conf: &str) -> String {
    format!(
        "trafgen --dev eth0 --conf {conf} {}   # in the client namespace, eth0 with qdisc pfifo limit 1000",
        TRAFGEN_ARGS.join(" ")
    )
}

#[derive(Clone, Copy, Default)]
struct Snapshot {
    tx_packets: u64,
    tx_dropped: u64,
    /// Packets the filter itself counted (nft counter, XDP run_cnt).
    filter_packets: Option<u64>,
    prog_run_ns: Option<u64>,
    busy_ns: u64,
}

/// Busy CPU time of the whole host, in ns; steal included, as this
/// scenario's figures always have.
fn host_busy_ns() -> u64 {
    let c = HostCpu::now();
    ((c.busy_s() + c.steal) * 1e9) as u64
}

/// The XDP program attached to the balancer's eth0: (id, mode, name).
fn attached_xdp(topo: &Topology) -> Result<Option<(u32, String, String)>> {
    topo.lb.xdp_attachment("eth0")
}

fn nft_counter(topo: &Topology) -> Result<u64> {
    let out = topo
        .lb
        .run("nft", &["-j", "list", "table", "netdev", NFT_TABLE])?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    fn find(v: &serde_json::Value) -> Option<u64> {
        match v {
            serde_json::Value::Object(m) => {
                if let Some(p) = m.get("counter").and_then(|c| c["packets"].as_u64()) {
                    return Some(p);
                }
                m.values().find_map(find)
            }
            serde_json::Value::Array(a) => a.iter().find_map(find),
            _ => None,
        }
    }
    find(&v).context("no counter in the nftables table")
}

struct Active {
    filter: Dropper,
    xalb: Option<peers::Running>,
    prog: Option<(OwnedFd, String, String)>,
}

struct Env<'a> {
    topo: &'a Topology,
    dir: &'a Path,
    xalb_bin: &'a Path,
    configs: &'a Configs,
    bpffs: PathBuf,
    /// XDP mode for xdp-filter: the one xalb got (native on veth).
    xdp_mode: String,
}

impl Env<'_> {
    fn xdp_filter(&self, args: &[&str]) -> Result<String> {
        let mut cmd = self.topo.lb.command("xdp-filter");
        // `ip netns exec` remounts /sys, hiding /sys/fs/bpf; our own bpffs
        // also keeps the pins out of everyone else's way.
        cmd.env("LIBXDP_BPFFS", &self.bpffs).args(args);
        let out = cmd.output().context("running xdp-filter")?;
        if !out.status.success() {
            bail!(
                "xdp-filter {} failed: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn apply(&mut self, filter: Dropper) -> Result<Active> {
        let mut xalb = None;
        match filter {
            Dropper::None => {}
            Dropper::Nftables => {
                let path = self.dir.join("kernel/nft.conf");
                std::fs::write(&path, nft_ruleset())?;
                self.topo.lb.run("nft", &["-f", &path.to_string_lossy()])?;
            }
            Dropper::XdpFilter => {
                self.xdp_filter(&[
                    "load",
                    "eth0",
                    "--features",
                    "ipv4",
                    "--mode",
                    &self.xdp_mode,
                ])?;
                if let Err(e) = self.xdp_filter(&["ip", &ip4(DENIED_SRC), "--mode", "src"]) {
                    let _ = self.xdp_filter(&["unload", "eth0"]);
                    return Err(e);
                }
            }
            Dropper::Xalb => {
                let r = peers::start(
                    System::Xalb,
                    self.topo,
                    self.dir,
                    self.xalb_bin,
                    self.configs,
                    &self.configs.xalb_kernel,
                )?;
                xalb = Some(r);
            }
        }
        let mut active = Active {
            filter,
            xalb,
            prog: None,
        };
        if matches!(filter, Dropper::XdpFilter | Dropper::Xalb) {
            match self.attached_prog(filter) {
                Ok(p) => active.prog = Some(p),
                Err(e) => {
                    let _ = self.remove(active);
                    return Err(e);
                }
            }
        }
        Ok(active)
    }

    fn attached_prog(&mut self, filter: Dropper) -> Result<(OwnedFd, String, String)> {
        let (id, mode, name) =
            attached_xdp(self.topo)?.context("no XDP program attached to the balancer's eth0")?;
        if filter == Dropper::Xalb {
            self.xdp_mode = if mode == "generic" {
                "skb".into()
            } else {
                "native".into()
            };
        }
        Ok((bpf::prog_fd(id)?, mode, name))
    }

    /// The filter's own count over its whole life, read before the test
    /// runs (which the program counts too).
    fn count_total(&self, a: &Active) -> Option<u64> {
        match a.filter {
            Dropper::None => None,
            Dropper::Nftables => nft_counter(self.topo).ok(),
            Dropper::XdpFilter => a
                .prog
                .as_ref()
                .and_then(|(fd, _, _)| bpf::prog_stats(fd).ok())
                .map(|(_, c)| c),
            // What xalb itself counted as denied (drop_no_rule).
            Dropper::Xalb => xalb_denied(self.topo),
        }
    }

    fn remove(&self, a: Active) -> Result<()> {
        match a.filter {
            Dropper::None => {}
            Dropper::Nftables => {
                self.topo
                    .lb
                    .run("nft", &["delete", "table", "netdev", NFT_TABLE])?;
            }
            Dropper::XdpFilter => {
                self.xdp_filter(&["unload", "eth0"])?;
            }
            Dropper::Xalb => {
                if let Some(r) = a.xalb {
                    r.stop();
                }
            }
        }
        Ok(())
    }

    fn snapshot(&self, a: &Active) -> Result<Snapshot> {
        let link = self.topo.client.link("eth0")?;
        let tx = &link["stats64"]["tx"];
        let mut s = Snapshot {
            tx_packets: tx["packets"].as_u64().unwrap_or(0),
            tx_dropped: tx["dropped"].as_u64().unwrap_or(0),
            busy_ns: host_busy_ns(),
            ..Default::default()
        };
        if let Some((fd, _, _)) = &a.prog {
            let (ns, cnt) = bpf::prog_stats(fd)?;
            s.prog_run_ns = Some(ns);
            s.filter_packets = Some(cnt);
        } else if a.filter == Dropper::Nftables {
            s.filter_packets = Some(nft_counter(self.topo)?);
        }
        Ok(s)
    }

    fn measure(&mut self, filter: Dropper, size: usize, plan: &KernelPlan) -> Result<KernelSample> {
        let frame = frame(
            size,
            self.topo.lb.mac("eth0")?,
            self.topo.client.mac("eth0")?,
        );
        let conf = self.dir.join(format!("kernel/trafgen-{size}.cfg"));
        std::fs::write(&conf, trafgen_conf(&frame))?;
        let active = self.apply(filter)?;
        let result = self.window(&active, &conf, plan);
        let result = result.and_then(|mut s| {
            s.filter_count_total = self.count_total(&active);
            self.test_run(&active, &frame, plan, &mut s)?;
            Ok(s)
        });
        self.remove(active)?;
        result
    }

    /// Generator on, ramp, then counters over the window.
    /// Generator on, ramp, then counters over the window; tried up to five
    /// times, since a generator that dies early would understate the rate.
    fn window(&self, a: &Active, conf: &Path, plan: &KernelPlan) -> Result<KernelSample> {
        let mut last = None;
        for _ in 0..5 {
            match self.window_once(a, conf, plan) {
                Ok(k) => return Ok(k),
                Err(e) => {
                    super::progress(format_args!("  {e:#}; trying again"));
                    last = Some(e);
                }
            }
        }
        Err(last.expect("five tries"))
    }

    fn window_once(&self, a: &Active, conf: &Path, plan: &KernelPlan) -> Result<KernelSample> {
        let mut cmd = self.topo.client.command("trafgen");
        cmd.args(["--dev", "eth0", "--conf"])
            .arg(conf)
            .args(TRAFGEN_ARGS);
        let gen = Proc::spawn("trafgen", cmd, &self.dir.join("kernel/trafgen.log"))?;
        std::thread::sleep(plan.ramp);
        if gen.exited() {
            let st = gen.stop(libc::SIGINT, Duration::ZERO);
            bail!(
                "trafgen exited at once ({}):\n{}",
                st.status,
                st.log.trim_end()
            );
        }
        let s0 = self.snapshot(a)?;
        let t0 = Instant::now();
        std::thread::sleep(plan.window);
        let s1 = self.snapshot(a)?;
        let secs = t0.elapsed().as_secs_f64();
        if gen.exited() {
            let st = gen.stop(libc::SIGINT, Duration::ZERO);
            bail!(
                "trafgen exited during the window ({}):\n{}",
                st.status,
                st.log.trim_end()
            );
        }
        let out = gen.stop(libc::SIGINT, Duration::from_secs(3)).log;
        let generated = out
            .lines()
            .find_map(|l| l.trim().strip_suffix(" packets outgoing"))
            .and_then(|v| v.trim().parse().ok());

        let offered = (s1.tx_packets + s1.tx_dropped).saturating_sub(s0.tx_packets + s0.tx_dropped);
        let mut k = KernelSample {
            offered_pps: offered as f64 / secs,
            lost_before_filter_pps: s1.tx_dropped.saturating_sub(s0.tx_dropped) as f64 / secs,
            generated_total: generated,
            host_cpu_ns_per_pkt: (offered > 0)
                .then(|| s1.busy_ns.saturating_sub(s0.busy_ns) as f64 / offered as f64),
            ..Default::default()
        };
        if let (Some(p0), Some(p1)) = (s0.filter_packets, s1.filter_packets) {
            k.dropped_pps = Some(p1.saturating_sub(p0) as f64 / secs);
            if let (Some(n0), Some(n1)) = (s0.prog_run_ns, s1.prog_run_ns) {
                let cnt = p1.saturating_sub(p0);
                k.prog_ns_per_pkt = (cnt > 0).then(|| n1.saturating_sub(n0) as f64 / cnt as f64);
            }
        }
        Ok(k)
    }

    /// BPF_PROG_TEST_RUN of the attached program on the same frame, from
    /// inside the balancer namespace (the ifindex is resolved there).
    fn test_run(
        &self,
        a: &Active,
        frame: &[u8],
        plan: &KernelPlan,
        k: &mut KernelSample,
    ) -> Result<()> {
        if let Some((fd, mode, name)) = &a.prog {
            k.xdp_mode = Some(mode.clone());
            k.prog_name = Some(name.clone());
            let ifindex = self.topo.lb.ifindex("eth0")?;
            let frame = frame.to_vec();
            let repeat = plan.test_run_repeat;
            let (verdict, ns) = in_ns(&self.topo.lb.name, move || {
                bpf::test_run_xdp(fd, &frame, ifindex, repeat)
            })??;
            k.test_run_ns = Some(f64::from(ns));
            k.test_run_verdict = Some(bpf::xdp_verdict(verdict).to_string());
        }
        Ok(())
    }
}

pub fn run(
    topo: &Topology,
    dir: &Path,
    xalb_bin: &Path,
    configs: &Configs,
    plan: &KernelPlan,
    load: &LoadOpts,
    report: &mut Report,
) -> Result<()> {
    std::fs::create_dir_all(dir.join("kernel"))?;
    // Held until the end of this function: BPF stats are on meanwhile.
    let _stats = bpf::enable_stats()?;
    let bpffs = dir.join("bpffs");
    std::fs::create_dir_all(&bpffs)?;
    cleanup::register_mount(&bpffs);
    let mounted = std::process::Command::new("mount")
        .args(["-t", "bpf", "bpf"])
        .arg(&bpffs)
        .status()
        .context("mount -t bpf")?;
    if !mounted.success() {
        bail!("mounting a bpffs at {} failed", bpffs.display());
    }
    topo.client
        .ip(&["link", "set", "eth0", "txqueuelen", "1000"])?;
    run_tc(
        topo,
        &[
            "qdisc", "replace", "dev", "eth0", "root", "pfifo", "limit", "1000",
        ],
    )?;
    let mut env = Env {
        topo,
        dir,
        xalb_bin,
        configs,
        bpffs: bpffs.clone(),
        xdp_mode: "native".into(),
    };
    // xalb first in every round: its attach mode decides xdp-filter's.
    let order = [
        Dropper::Xalb,
        Dropper::XdpFilter,
        Dropper::Nftables,
        Dropper::None,
    ];
    for rep in 0..plan.repeat {
        for &size in &plan.sizes {
            for &f in &order {
                let scenario = format!("drop, {size} B frames");
                match env.measure(f, size, plan) {
                    Ok(s) => {
                        super::progress(format_args!(
                            "round {}/{}: {scenario}, {}: {:.3} Mpps offered, {} ns/pkt in the program",
                            rep + 1,
                            plan.repeat,
                            f.name(),
                            s.offered_pps / 1e6,
                            s.prog_ns_per_pkt.map_or("n/a".into(), |n| format!("{n:.1}"))
                        ));
                        report.add_kernel(&scenario, f.name(), f.is_peer(), s)
                    }
                    Err(e) => report.note(format!(
                        "{scenario}, {} (round {}): failed: {e:#}",
                        f.name(),
                        rep + 1
                    )),
                }
            }
        }
        if plan.xdp_cost {
            if let Err(e) = xdp_cost(&env, load, plan.warmup, rep, report) {
                report.note(format!(
                    "XDP cost on allowed traffic (round {}): failed: {e:#}",
                    rep + 1
                ));
            }
        }
    }
    let _ = run_tc(topo, &["qdisc", "del", "dev", "eth0", "root"]);
    if cleanup::unregister_mount(&bpffs) {
        let _ = std::process::Command::new("umount").arg(&bpffs).status();
    }
    report.kernel_setup = Some(KernelSetup {
        trafgen: trafgen_command(&dir.join("kernel/trafgen-<size>.cfg").display().to_string()),
        frame: format!(
            "Ethernet/IPv4/TCP SYN {} -> {}:80, padded to the frame size (without FCS)",
            ip4(DENIED_SRC),
            ip4(LB_ADDR)
        ),
        nft: nft_ruleset(),
        xdp_filter: xdp_filter_commands(&env.xdp_mode),
        xalb: configs.xalb_kernel.clone(),
        test_run_repeat: plan.test_run_repeat,
    });
    Ok(())
}

pub use super::report::KernelSetup;

fn run_tc(topo: &Topology, args: &[&str]) -> Result<()> {
    crate::run_status(
        std::process::Command::new("tc")
            .args(["-n", &topo.client.name])
            .args(args),
    )
}

/// xalb's own count of packets denied by no rule, from its admin endpoint's
/// Prometheus text (best effort: None if it does not answer).
fn xalb_denied(topo: &Topology) -> Option<u64> {
    let text = in_ns(&topo.lb.name, || -> std::io::Result<String> {
        use std::io::{Read, Write};
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 9901));
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })
    .ok()?
    .ok()?;
    let total: f64 = text
        .lines()
        .filter(|l| {
            l.starts_with("xalb_xdp_packets_total{") && l.contains("reason=\"drop_no_rule\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    Some(total as u64)
}

/// The detach is done to the running xalb's bpf_link (bpftool link detach),
/// so the same process serves with and without its program.
fn detach_xdp(topo: &Topology) -> Result<()> {
    let (prog_id, _, _) = attached_xdp(topo)?.context("xalb has no XDP program attached")?;
    let out = std::process::Command::new("bpftool")
        .args(["-j", "link", "show"])
        .output()?;
    let links: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("bpftool -j link show")?;
    let link_id = links
        .as_array()
        .into_iter()
        .flatten()
        .find(|l| l["prog_id"].as_u64() == Some(u64::from(prog_id)))
        .and_then(|l| l["id"].as_u64())
        .context("no bpf_link for xalb's XDP program")?;
    crate::run_status(std::process::Command::new("bpftool").args([
        "link",
        "detach",
        "id",
        &link_id.to_string(),
    ]))?;
    if attached_xdp(topo)?.is_some() {
        bail!("XDP still attached after detaching link {link_id}");
    }
    Ok(())
}

/// wrk keep-alive through xalb with its XDP program attached and, from a
/// second start of xalb, detached; each measured first after its own
/// warm-up, the order alternating by round so neither profits from going
/// second.
fn xdp_cost(
    env: &Env,
    load: &LoadOpts,
    warmup: u64,
    round: u32,
    report: &mut Report,
) -> Result<()> {
    const SCENARIO: &str = "allowed traffic, keep-alive, XDP on/off";
    let order = if round.is_multiple_of(2) {
        [true, false]
    } else {
        [false, true]
    };
    let mut rps = [0.0; 2];
    for attached in order {
        let r = peers::start(
            System::Xalb,
            env.topo,
            env.dir,
            env.xalb_bin,
            env.configs,
            &env.configs.xalb,
        )?;
        // On an error `r` is dropped, which stops it.
        if !attached {
            detach_xdp(env.topo)?;
        }
        l7::warm_up(&r, env.topo, load, warmup, env.dir)?;
        let s = l7::measure(&r, Kind::KeepAlive, env.topo, load, env.dir)?;
        l7::note_slow_stop(System::Xalb, r.stop(), report);
        rps[usize::from(!attached)] = s.load.rps;
        let system = if attached {
            "xalb, XDP attached"
        } else {
            "xalb, XDP detached"
        };
        report.add_l7(SCENARIO, system, !attached, s);
    }
    super::progress(format_args!(
        "round {}: XDP attached {:.0} vs detached {:.0} req/s",
        round + 1,
        rps[0],
        rps[1]
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_have_the_size_and_valid_checksums() {
        for size in [64, 1500] {
            let f = frame(size, [2; 6], [4; 6]);
            assert_eq!(f.len(), size);
            // A correct checksum sums (with itself) to zero.
            assert_eq!(checksum(&f[14..34], 0), 0);
            let tcp = &f[34..];
            let mut pseudo = 0u32;
            for w in [&DENIED_SRC[..], &LB_ADDR[..]] {
                pseudo += u32::from(u16::from_be_bytes([w[0], w[1]]));
                pseudo += u32::from(u16::from_be_bytes([w[2], w[3]]));
            }
            assert_eq!(checksum(tcp, pseudo + 6 + tcp.len() as u32), 0);
        }
        assert!(trafgen_conf(&[1, 2]).contains("0x01, 0x02"));
    }
}
