//! The namespace topology: a client, the balancer host and two backends,
//! joined by veth pairs, in 10.231.0.0/16 with no route out of it.
//!
//! ```text
//!   client 10.231.1.2 ─eth0──eth0─ balancer 10.231.1.1
//!                                  balancer 10.231.11.1 ─eth1──eth0─ backend-1 10.231.11.2
//!                                  balancer 10.231.12.1 ─eth2──eth0─ backend-2 10.231.12.2
//! ```
//! The balancer namespace also routes (for the direct baseline), so every
//! system is measured over the same two veth hops.

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::cleanup;
use crate::output;

pub const PREFIX: &str = "xbench-";
pub const LB_ADDR: [u8; 4] = [10, 231, 1, 1];
pub const BACKENDS: [[u8; 4]; 2] = [[10, 231, 11, 2], [10, 231, 12, 2]];
/// A source no security group of the kernel scenario allows; it only ever
/// appears in generated packets.
pub const DENIED_SRC: [u8; 4] = [10, 231, 66, 1];

pub fn ip4(a: [u8; 4]) -> String {
    std::net::Ipv4Addr::from(a).to_string()
}

/// A named network namespace of this run.
pub struct Ns {
    pub name: String,
}

impl Ns {
    fn create(name: String) -> Result<Self> {
        // Registered first: a signal between the two steps still removes it.
        cleanup::register_ns(&name);
        output(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `ip ARGS` inside the namespace; its stdout.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        output(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// A command to run inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs a command inside the namespace to completion; its stdout.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<String> {
        output(self.command(program).args(args))
    }

    /// `ip -j link show dev DEV`, parsed.
    pub fn link(&self, dev: &str) -> Result<serde_json::Value> {
        let out = self.ip(&["-j", "-s", "link", "show", "dev", dev])?;
        let v: serde_json::Value = serde_json::from_str(&out)?;
        v.get(0).cloned().context("ip -j link printed no link")
    }

    pub fn mac(&self, dev: &str) -> Result<[u8; 6]> {
        let link = self.link(dev)?;
        let s = link["address"].as_str().context("link has no address")?;
        let mut mac = [0u8; 6];
        for (i, part) in s.split(':').enumerate().take(6) {
            mac[i] = u8::from_str_radix(part, 16)?;
        }
        Ok(mac)
    }

    pub fn ifindex(&self, dev: &str) -> Result<u32> {
        let link = self.link(dev)?;
        link["ifindex"]
            .as_u64()
            .map(|i| i as u32)
            .context("link has no ifindex")
    }

    /// The XDP program attached to `dev`: (id, mode, name); mode is
    /// "native", "generic" or "offload".
    pub fn xdp_attachment(&self, dev: &str) -> Result<Option<(u32, String, String)>> {
        let link = self.link(dev)?;
        let xdp = &link["xdp"];
        let Some(id) = xdp["prog"]["id"].as_u64() else {
            return Ok(None);
        };
        let mode = match xdp["mode"].as_u64() {
            Some(1) => "native",
            Some(2) => "generic",
            Some(3) => "offload",
            _ => "?",
        };
        let name = xdp["prog"]["name"].as_str().unwrap_or("?").to_string();
        Ok(Some((id as u32, mode.to_string(), name)))
    }

    /// Writes a per-namespace sysctl from a thread inside the namespace.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        let value = value.to_string();
        in_ns(&self.name, move || std::fs::write(&path, value))?
            .with_context(|| format!("sysctl {key} in {}", self.name))
    }

    /// Waits until something accepts TCP connections at `addr` in this
    /// namespace, or `alive` says the server died.
    pub fn wait_tcp(
        &self,
        addr: SocketAddr,
        timeout: Duration,
        alive: impl Fn() -> bool,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let ok = in_ns(&self.name, move || {
                TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            })?;
            if ok {
                return Ok(());
            }
            if !alive() {
                bail!("the server for {addr} exited");
            }
            if Instant::now() > deadline {
                bail!(
                    "nothing accepts connections at {addr} in {} after {timeout:?}",
                    self.name
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        // Deleting a namespace removes its interfaces, addresses, nftables
        // tables and XDP attachments with it.
        if cleanup::unregister_ns(&self.name) {
            cleanup::delete_ns(&self.name);
        }
    }
}

/// Runs `f` on a thread that has entered namespace `ns` (setns affects only
/// the calling thread, which ends with `f`).
pub fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> Result<T> {
    let path = format!("/var/run/netns/{ns}");
    let file = File::open(&path).with_context(|| format!("opening {path}"))?;
    std::thread::scope(|s| {
        s.spawn(move || {
            // SAFETY: file is an open namespace file; CLONE_NEWNET names its type.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(anyhow::Error::from(std::io::Error::last_os_error()).context("setns"));
            }
            Ok(f())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("thread in namespace {ns} panicked"))?
    })
}

pub struct Topology {
    pub client: Ns,
    pub lb: Ns,
    pub backends: [Ns; 2],
}

impl Topology {
    pub fn new() -> Result<Self> {
        let id = std::process::id();
        let mk = |role: &str| Ns::create(format!("{PREFIX}{id}-{role}"));
        let t = Self {
            client: mk("client")?,
            lb: mk("lb")?,
            backends: [mk("be1")?, mk("be2")?],
        };
        veth(&t.client, "eth0", &t.lb, "eth0")?;
        veth(&t.lb, "eth1", &t.backends[0], "eth0")?;
        veth(&t.lb, "eth2", &t.backends[1], "eth0")?;
        t.client
            .ip(&["addr", "add", "10.231.1.2/24", "dev", "eth0"])?;
        t.lb.ip(&["addr", "add", "10.231.1.1/24", "dev", "eth0"])?;
        t.lb.ip(&["addr", "add", "10.231.11.1/24", "dev", "eth1"])?;
        t.lb.ip(&["addr", "add", "10.231.12.1/24", "dev", "eth2"])?;
        t.backends[0].ip(&["addr", "add", "10.231.11.2/24", "dev", "eth0"])?;
        t.backends[1].ip(&["addr", "add", "10.231.12.2/24", "dev", "eth0"])?;
        // Routes only within 10.231.0.0/16: nothing can leave the topology.
        t.client
            .ip(&["route", "add", "10.231.0.0/16", "via", "10.231.1.1"])?;
        t.backends[0].ip(&["route", "add", "10.231.0.0/16", "via", "10.231.11.1"])?;
        t.backends[1].ip(&["route", "add", "10.231.0.0/16", "via", "10.231.12.1"])?;
        t.lb.sysctl("net.ipv4.ip_forward", "1")?;
        // One connection per request makes tens of thousands of short
        // connections a run: let the client reuse TIME_WAIT ports, and give
        // the balancer's upstream side the same room.
        for ns in [&t.client, &t.lb] {
            ns.sysctl("net.ipv4.tcp_tw_reuse", "1")?;
            ns.sysctl("net.ipv4.ip_local_port_range", "1024 65000")?;
        }
        for ns in [&t.lb, &t.backends[0], &t.backends[1]] {
            ns.sysctl("net.core.somaxconn", "8192")?;
            ns.sysctl("net.ipv4.tcp_max_syn_backlog", "8192")?;
        }
        Ok(t)
    }
}

fn veth(a: &Ns, a_if: &str, b: &Ns, b_if: &str) -> Result<()> {
    a.ip(&[
        "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", &b.name,
    ])?;
    a.ip(&["link", "set", a_if, "up"])?;
    b.ip(&["link", "set", b_if, "up"])?;
    Ok(())
}

/// Namespaces with our prefix left by an earlier run that is gone; only
/// reported, since another bench may be running.
pub fn stale_namespaces() -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output();
    let Ok(out) = out else { return Vec::new() };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(PREFIX))
        .filter(|n| {
            let pid = n[PREFIX.len()..].split('-').next().unwrap_or("");
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
        })
        .map(str::to_string)
        .collect()
}

/// What forwarding by XDP between these veths needs of the client's and the
/// backends' ends, applied to every system of the scenario that needs it so
/// that all are measured on the same settings:
///
/// - GRO on: a frame that XDP sends (XDP_TX, XDP_REDIRECT) into a veth is
///   dropped unless the veth's peer has NAPI, which an XDP program or GRO
///   gives it. The balancer's ends have XDP when xalb runs; these are the
///   peers frames are redirected to.
/// - Transmit checksumming off (and with it TSO): a frame sent with the
///   checksum left to offload arrives as CHECKSUM_PARTIAL, which XDP cannot
///   see and a redirect breaks. Off, the sender computes every checksum and
///   segments in software (GSO), which costs every system throughput.
pub const XDP_FORWARDING_OFFLOADS: [&str; 4] = ["tx", "off", "gro", "on"];

/// The offload settings of the client's and backends' eth0 as they were
/// before `Topology::xdp_forwarding_offloads`, restored on drop.
pub struct Offloads {
    before: Vec<(String, bool, bool)>,
}

impl Topology {
    /// Applies `XDP_FORWARDING_OFFLOADS` to the client's and backends' eth0.
    pub fn xdp_forwarding_offloads(&self) -> Result<Offloads> {
        let mut guard = Offloads { before: Vec::new() };
        for ns in [&self.client, &self.backends[0], &self.backends[1]] {
            let k = ns.run("ethtool", &["-k", "eth0"])?;
            let tx = feature(&k, "tx-checksumming").context("ethtool -k: tx-checksumming")?;
            let gro = feature(&k, "generic-receive-offload").context("ethtool -k: GRO")?;
            guard.before.push((ns.name.clone(), tx, gro));
            let mut args = vec!["-K", "eth0"];
            args.extend(XDP_FORWARDING_OFFLOADS);
            ns.run("ethtool", &args)?;
        }
        Ok(guard)
    }
}

impl Drop for Offloads {
    fn drop(&mut self) {
        let on = |b: bool| if b { "on" } else { "off" };
        for (ns, tx, gro) in &self.before {
            let r = output(Command::new("ip").args(["netns", "exec", ns]).args([
                "ethtool",
                "-K",
                "eth0",
                "tx",
                on(*tx),
                "gro",
                on(*gro),
            ]));
            if let Err(e) = r {
                eprintln!("xtask bench: restoring eth0's offloads in {ns}: {e:#}");
            }
        }
    }
}

/// A feature's state in `ethtool -k` output ("tx-checksumming: on",
/// "generic-receive-offload: off [fixed]").
fn feature(ethtool_k: &str, name: &str) -> Option<bool> {
    ethtool_k.lines().find_map(|l| {
        let rest = l.trim().strip_prefix(name)?.strip_prefix(':')?;
        match rest.split_whitespace().next()? {
            "on" => Some(true),
            "off" => Some(false),
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ethtool_features_are_read_by_name() {
        let k = "Features for eth0:\nrx-checksumming: on\ntx-checksumming: off\n\
                 \ttx-checksum-ipv4: off [fixed]\ngeneric-receive-offload: on [fixed]\n";
        assert_eq!(feature(k, "tx-checksumming"), Some(false));
        assert_eq!(feature(k, "generic-receive-offload"), Some(true));
        assert_eq!(feature(k, "rx-gro-list"), None);
    }
}
