//! Network namespaces and veth links for tests and the demo.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context, Result};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A named network namespace (`ip netns`), deleted on drop.
pub struct Netns {
    name: String,
}

fn run(cmd: &mut Command) -> Result<Output> {
    let out = cmd
        .output()
        .with_context(|| format!("failed to start {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

impl Netns {
    /// A new namespace named `xalb-<tag>-<pid>-<n>`, with loopback up.
    pub fn new(tag: &str) -> Result<Self> {
        let name = format!(
            "xalb-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run(Command::new("ip").args(["netns", "add", &name]))?;
        crate::interrupt::add_namespace(&name);
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip ARGS` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> Result<Output> {
        run(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// A command run inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Runs `f` on a thread that has entered this namespace (setns affects only
    /// the calling thread), so sockets it opens live in the namespace.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        let handle = self.spawn(f)?;
        handle
            .join()
            .map_err(|_| anyhow::anyhow!("thread in namespace {} panicked", self.name))
    }

    /// Like [`Netns::run`] without waiting.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<std::thread::JoinHandle<T>> {
        let path = format!("/var/run/netns/{}", self.name);
        let file = File::open(&path).with_context(|| format!("opening {path}"))?;
        let (tx, rx) = std::sync::mpsc::channel();
        let handle = std::thread::spawn(move || {
            // SAFETY: file is an open namespace file; CLONE_NEWNET selects its type.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            let ok = rc == 0;
            let _ = tx.send(if ok {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            });
            // Never run f outside the namespace; the caller has the error.
            assert!(ok, "setns failed");
            f()
        });
        rx.recv()?.context("setns")?;
        Ok(handle)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Its pins first (an xalb's security groups outlive it, and its
        // namespace): unmounting their bpffs removes them.
        crate::bpffs::release(&self.name);
        // Deleting the namespace removes its interfaces and any XDP on them.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        crate::interrupt::remove_namespace(&self.name);
    }
}

/// Joins `a`'s interface `a_if` to `b`'s interface `b_if` by a veth pair; both up.
pub fn veth(a: &Netns, a_if: &str, b: &Netns, b_if: &str) -> Result<()> {
    a.ip(&[
        "link",
        "add",
        a_if,
        "type",
        "veth",
        "peer",
        "name",
        b_if,
        "netns",
        b.name(),
    ])?;
    a.ip(&["link", "set", a_if, "up"])?;
    b.ip(&["link", "set", b_if, "up"])?;
    Ok(())
}

/// Adds an address (with prefix) to an interface; IPv6 without duplicate
/// address detection, so it is usable at once.
pub fn addr(ns: &Netns, iface: &str, cidr: &str) -> Result<()> {
    if cidr.contains(':') {
        ns.ip(&["-6", "addr", "add", cidr, "dev", iface, "nodad"])?;
    } else {
        ns.ip(&["addr", "add", cidr, "dev", iface])?;
    }
    Ok(())
}
