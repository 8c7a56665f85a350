//! The TCP listener test topology: the balancer routes between the client's
//! segment and the targets', so the kernel sends each translated packet out
//! of the other interface (`XDP_REDIRECT`).
//!
//! ```text
//!   client 10.231.40.2, fd00:231::40:2 ──eth0── balancer 10.231.40.1, fd00:231::40:1
//!   balancer 10.231.41.1, fd00:231::41:1 ──eth1── targets 10.231.41.11-19, fd00:231::41:11-19
//! ```
//! Senders have transmit checksum offload off and receivers receive offload
//! off, so a wrong checksum written by the kernel fails a test instead of
//! passing unnoticed. The client's and targets' ends run an `XDP_PASS`
//! program: veth delivers frames sent to it with `XDP_TX` or a redirect
//! promptly only to a peer with an XDP program (see [`crate::xdp_pass`]).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::daemon::Daemon;
use crate::netns::{addr, veth, Netns};

pub struct TcpBed {
    pub client: Netns,
    pub lb: Netns,
    pub targets: Netns,
    pub config: PathBuf,
    /// The `XDP_PASS` links of the ends that receive translated frames.
    _pass: Vec<std::os::fd::OwnedFd>,
    /// The L2 segment of [`TcpBed::one_segment`].
    _bridge: Option<Netns>,
}

/// The balancer's addresses, as the client reaches them.
pub const LB_V4: &str = "10.231.40.1";
pub const LB_V6: &str = "fd00:231::40:1";

impl TcpBed {
    pub fn new(config: &str) -> Result<Self> {
        crate::require_root();
        let client = Netns::new("tcl")?;
        let lb = Netns::new("tlb")?;
        let targets = Netns::new("ttg")?;
        veth(&client, "eth0", &lb, "eth0")?;
        veth(&lb, "eth1", &targets, "eth0")?;
        addr(&client, "eth0", "10.231.40.2/24")?;
        addr(&client, "eth0", "fd00:231::40:2/112")?;
        addr(&lb, "eth0", "10.231.40.1/24")?;
        addr(&lb, "eth0", "fd00:231::40:1/112")?;
        addr(&lb, "eth1", "10.231.41.1/24")?;
        addr(&lb, "eth1", "fd00:231::41:1/112")?;
        for i in 11..20 {
            addr(&targets, "eth0", &format!("10.231.41.{i}/24"))?;
            addr(&targets, "eth0", &format!("fd00:231::41:{i}/112"))?;
        }
        client.ip(&["route", "add", "default", "via", "10.231.40.1"])?;
        client.ip(&["-6", "route", "add", "default", "via", "fd00:231::40:1"])?;
        // Only needed when targets see the client's address.
        targets.ip(&["route", "add", "default", "via", "10.231.41.1"])?;
        targets.ip(&["-6", "route", "add", "default", "via", "fd00:231::41:1"])?;
        let pass = ends(&client, &targets)?;
        Self::finish(client, lb, targets, config, pass, None)
    }

    /// Writes the configuration beside the balancer's namespace name.
    fn finish(
        client: Netns,
        lb: Netns,
        targets: Netns,
        config: &str,
        pass: Vec<std::os::fd::OwnedFd>,
        bridge: Option<Netns>,
    ) -> Result<Self> {
        let config_path = std::env::temp_dir().join(format!("{}.toml", lb.name()));
        std::fs::write(&config_path, config)?;
        Ok(Self {
            client,
            lb,
            targets,
            config: config_path,
            _pass: pass,
            _bridge: bridge,
        })
    }

    /// The other topology: client, balancer and targets on one segment (a
    /// bridge in a namespace of its own), so the kernel sends translated
    /// packets back out of the interface they came in on (`XDP_TX`).
    ///
    /// ```text
    ///   client 10.231.42.2 ─┐
    ///   balancer 10.231.42.1 (eth0) ─ br0
    ///   targets 10.231.42.11-19 ─┘      (and fd00:231::42:*)
    /// ```
    /// `config` is written for the routed bed ([`tcp_config`]); its
    /// addresses and interfaces are moved onto the segment.
    pub fn one_segment(config: &str) -> Result<Self> {
        crate::require_root();
        let client = Netns::new("scl")?;
        let lb = Netns::new("slb")?;
        let targets = Netns::new("stg")?;
        let bridge = Netns::new("sbr")?;
        bridge.ip(&["link", "add", "br0", "type", "bridge"])?;
        bridge.ip(&["link", "set", "br0", "up"])?;
        for (ns, port) in [(&client, "pc"), (&lb, "plb"), (&targets, "pt")] {
            veth(&bridge, port, ns, "eth0")?;
            bridge.ip(&["link", "set", port, "master", "br0"])?;
        }
        addr(&client, "eth0", "10.231.42.2/24")?;
        addr(&client, "eth0", "fd00:231::42:2/112")?;
        addr(&lb, "eth0", "10.231.42.1/24")?;
        addr(&lb, "eth0", "fd00:231::42:1/112")?;
        for i in 11..20 {
            addr(&targets, "eth0", &format!("10.231.42.{i}/24"))?;
            addr(&targets, "eth0", &format!("fd00:231::42:{i}/112"))?;
        }
        let mut pass = ends(&client, &targets)?;
        // The balancer's frames sent back out of eth0 arrive on "plb".
        pass.push(crate::xdp_pass::attach(&bridge, "plb")?);
        let config = config
            .replace("10.231.40.", "10.231.42.")
            .replace("fd00:231::40:", "fd00:231::42:")
            .replace("10.231.41.", "10.231.42.")
            .replace("fd00:231::41:", "fd00:231::42:")
            .replace(
                "interfaces = [\"eth0\", \"eth1\"]",
                "interfaces = [\"eth0\"]",
            );
        Self::finish(client, lb, targets, &config, pass, Some(bridge))
    }

    pub fn start(&self) -> Result<Daemon> {
        Daemon::start(&self.lb, &self.config, &[])
    }

    /// `xalb run` with `extra` arguments.
    pub fn start_with(&self, extra: &[&str]) -> Result<Daemon> {
        Daemon::start(&self.lb, &self.config, extra)
    }

    /// Replaces the configuration file (for a reload).
    pub fn write_config(&self, config: &str) -> Result<()> {
        std::fs::write(&self.config, config).context("writing the config")
    }
}

impl Drop for TcpBed {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.config);
    }
}

/// The client's and targets' `eth0` made ready to receive translated
/// frames (see the module's notes): the `XDP_PASS` links.
fn ends(client: &Netns, targets: &Netns) -> Result<Vec<std::os::fd::OwnedFd>> {
    let mut pass = Vec::new();
    for ns in [client, targets] {
        offloads(ns, "eth0", &["tx", "off", "rx", "off", "gro", "on"])?;
        pass.push(crate::xdp_pass::attach(ns, "eth0")?);
    }
    Ok(pass)
}

/// `ethtool -K IFACE SETTINGS...` in `ns`.
pub fn offloads(ns: &Netns, iface: &str, settings: &[&str]) -> Result<()> {
    let out = ns
        .command("ethtool")
        .arg("-K")
        .arg(iface)
        .args(settings)
        .output()
        .context("running ethtool")?;
    anyhow::ensure!(
        out.status.success(),
        "ethtool -K {iface} {settings:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A target's address on the bed, by host number.
pub fn target(host: u8, port: u16, v6: bool) -> SocketAddr {
    if v6 {
        format!("[fd00:231::41:{host}]:{port}").parse().unwrap()
    } else {
        SocketAddr::from(([10, 231, 41, host], port))
    }
}

/// Where [`TcpBed::one_segment`] puts the routed bed's address `a`.
pub fn on_segment(a: SocketAddr) -> SocketAddr {
    let ip = a
        .ip()
        .to_string()
        .replace("10.231.40.", "10.231.42.")
        .replace("10.231.41.", "10.231.42.")
        .replace("fd00:231::40:", "fd00:231::42:")
        .replace("fd00:231::41:", "fd00:231::42:");
    SocketAddr::new(ip.parse().unwrap(), a.port())
}

/// A balancer "edge" on eth0 (clients) and eth1 (targets), TCP port 80
/// open to the client's addresses only, one TCP listener on port 80
/// forwarding to the TCP group "echo" of `targets` (`address` entries),
/// `group_extra` lines added to the group.
pub fn tcp_config(targets: &[SocketAddr], group_extra: &str) -> String {
    let targets: Vec<String> = targets
        .iter()
        .map(|t| format!("{{ address = \"{}\", port = {} }}", t.ip(), t.port()))
        .collect();
    format!(
        r#"
[[security_group]]
name = "tcp"
ingress = [
  {{ protocol = "tcp", ports = "80", source = "10.231.40.2/32" }},
  {{ protocol = "tcp", ports = "80", source = "fd00:231::40:2/128" }},
]

[[target_group]]
name = "echo"
protocol = "TCP"
port = 7000
targets = [{}]
{group_extra}

[target_group.health_check]
interval = "5s"
timeout = "2s"
healthy_threshold = 2
unhealthy_threshold = 2

[[load_balancer]]
name = "edge"
interfaces = ["eth0", "eth1"]
addresses = ["{LB_V4}", "{LB_V6}"]
security_groups = ["tcp"]

[[listener]]
load_balancer = "edge"
protocol = "TCP"
port = 80
default_action = {{ type = "forward", target_group = "echo" }}
"#,
        targets.join(", ")
    )
}
