//! `xalb run` as a child process inside a namespace.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::netns::Netns;

/// A running `xalb run`; killed on drop if still running.
pub struct Daemon {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: Arc<Stderr>,
    /// Reads stderr into `stderr` until xalb closes it.
    stderr_reader: Option<std::thread::JoinHandle<()>>,
    /// The state directory made for it (none when the caller chose one),
    /// removed on drop.
    own_state: Option<std::path::PathBuf>,
}

/// xalb's stderr as read so far, line by line.
#[derive(Default)]
struct Stderr {
    /// The lines, and whether xalb closed its stderr.
    read: Mutex<(Vec<String>, bool)>,
    /// Notified on every line and at the end.
    changed: Condvar,
}

impl Stderr {
    /// Reads `from` until its end.
    fn read_all(&self, from: impl std::io::Read) {
        let mut from = BufReader::new(from);
        let mut line = Vec::new();
        loop {
            line.clear();
            let more = matches!(from.read_until(b'\n', &mut line), Ok(n) if n > 0);
            let mut read = self.read.lock().unwrap();
            if more {
                let text = String::from_utf8_lossy(&line);
                read.0.push(text.trim_end_matches('\n').to_string());
            } else {
                read.1 = true;
            }
            self.changed.notify_all();
            if !more {
                return;
            }
        }
    }

    fn text(&self) -> String {
        let read = self.read.lock().unwrap();
        read.0.iter().map(|l| format!("{l}\n")).collect()
    }
}

static NEXT_STATE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// The state directory of the xalb last started in each namespace (by the
/// namespace's name): where its admin token is.
static STATE_DIRS: Mutex<Vec<(String, std::path::PathBuf)>> = Mutex::new(Vec::new());

/// The state directory of the xalb last started in `ns`.
pub fn state_dir_of(ns: &Netns) -> std::path::PathBuf {
    STATE_DIRS
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find(|(name, _)| name == ns.name())
        .map(|(_, dir)| dir.clone())
        .unwrap_or_else(|| panic!("no xalb was started in {}", ns.name()))
}

/// The admin token of the xalb last started in `ns`, for changes over its
/// admin endpoint.
pub fn admin_token(ns: &Netns) -> String {
    let path = state_dir_of(ns).join("admin.token");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.trim().to_string()
}

/// `xalb` in `ns`, its commands pointed at the state directory (and so the
/// admin token) of the xalb last started there.
pub fn cli(ns: &Netns) -> std::process::Command {
    let mut c = ns.command(crate::xalb_bin());
    c.env("XALB_STATE_DIR", state_dir_of(ns));
    c
}

/// Counters printed by `xalb run` when it stops: the XDP verdicts as
/// (balancer, reason, packets), and every line (listener and target
/// counters among them) as printed.
#[derive(Debug, Default)]
pub struct Counters(pub Vec<(String, String, u64)>, pub Vec<String>);

impl Counters {
    /// Field `key` of the first printed line that starts with `prefix`
    /// (`listener_counter lb=edge port=80`, say), as a number.
    pub fn field(&self, prefix: &str, key: &str) -> Option<u64> {
        let line = self.1.iter().find(|l| l.starts_with(prefix))?;
        line.split(' ')
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))?
            .parse()
            .ok()
    }

    /// Packets counted for (balancer or "-", reason).
    pub fn get(&self, lb: &str, reason: &str) -> u64 {
        self.0
            .iter()
            .filter(|(l, r, _)| l == lb && r == reason)
            .map(|(_, _, p)| *p)
            .sum()
    }
}

impl Daemon {
    /// Starts `xalb run -c config` in `ns` and waits until it says it is ready.
    /// Unless `extra` names a `--state-dir`, it gets a fresh one of its own,
    /// so no test writes the host's /var/lib/xalb. Unless it names a
    /// `--bpffs`, it pins in the namespace's own ([`crate::bpffs`]): a
    /// daemon started again in the namespace adopts what it left.
    pub fn start(ns: &Netns, config: &Path, extra: &[&str]) -> Result<Self> {
        Self::spawn(ns, config, extra)?.ready()
    }

    /// [`Self::start`] without waiting: the caller watches it come up
    /// ([`Self::wait_stderr`]) and then waits with [`Self::ready`].
    pub fn spawn(ns: &Netns, config: &Path, extra: &[&str]) -> Result<Self> {
        Self::spawn_with_env(ns, config, extra, &[])
    }

    /// [`Self::spawn`] with these environment variables set.
    pub fn spawn_with_env(
        ns: &Netns,
        config: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Self> {
        Self::spawn_under(ns, &[], config, extra, env)
    }

    /// [`Self::spawn_with_env`] with xalb run by `wrapper` (a program and
    /// its arguments, such as `setpriv` with a capability set), which must
    /// exec it: [`Self::pid`] is then xalb's.
    pub fn spawn_under(
        ns: &Netns,
        wrapper: &[&str],
        config: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Self> {
        let own_state = (!extra.contains(&"--state-dir")).then(|| {
            std::env::temp_dir().join(format!(
                "xalb-state-{}-{}",
                std::process::id(),
                NEXT_STATE.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ))
        });
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = ns.command(program);
                c.args(args).arg(crate::xalb_bin());
                c
            }
            None => ns.command(crate::xalb_bin()),
        };
        cmd.args(["run", "-c"])
            .arg(config)
            .args(["--stats-interval", "0"])
            .args(extra);
        if let Some(dir) = &own_state {
            crate::interrupt::add_dir(dir);
            cmd.arg("--state-dir").arg(dir);
        }
        let state_dir = match &own_state {
            Some(dir) => dir.clone(),
            None => {
                let i = extra
                    .iter()
                    .position(|a| *a == "--state-dir")
                    .expect("named");
                std::path::PathBuf::from(extra.get(i + 1).copied().unwrap_or_default())
            }
        };
        STATE_DIRS
            .lock()
            .unwrap()
            .push((ns.name().to_string(), state_dir));
        if !extra.contains(&"--bpffs") {
            cmd.arg("--bpffs").arg(crate::bpffs::for_netns(ns.name())?);
        }
        cmd.envs(env.iter().copied());
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting xalb")?;
        crate::interrupt::add_daemon(child.id());
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Stderr::default());
        let reader = stderr.clone();
        let stderr_reader = Some(std::thread::spawn(move || reader.read_all(err)));
        Ok(Self {
            child,
            stdout: rx,
            stderr,
            stderr_reader,
            own_state,
        })
    }

    /// Waits until it says it is ready; kills it if it does not.
    pub fn ready(mut self) -> Result<Self> {
        // A safety net: a loaded host may take a while to load BPF.
        match self.stdout.recv_timeout(Duration::from_secs(60)) {
            Ok(line) if line == "xalb: ready" => Ok(self),
            other => {
                crate::interrupt::remove_daemon(self.child.id());
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!(
                    "xalb did not become ready ({other:?}); stderr:\n{}",
                    self.stderr_to_end()
                )
            }
        }
    }

    /// SIGTERM, wait, and return the counters it printed plus its stderr.
    pub fn stop(mut self) -> Result<(Counters, String)> {
        crate::interrupt::remove_daemon(self.child.id());
        // SAFETY: kill with a valid pid of our child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.wait_after_sigterm()?;
        let stderr = self.stderr_to_end();
        if !status.success() {
            bail!("xalb exited with {status}; stderr:\n{stderr}");
        }
        let mut counters = Counters::default();
        // xalb has exited: the reader ends at its closed stdout, and the
        // limit only guards against a reader that never does.
        while let Ok(line) = self.stdout.recv_timeout(Duration::from_secs(30)) {
            counters.1.push(line.clone());
            if let Some(rest) = line.strip_prefix("xdp_counter ") {
                let field = |k: &str| {
                    rest.split(' ')
                        .find_map(|kv| kv.strip_prefix(k))
                        .unwrap_or_default()
                        .to_string()
                };
                counters.0.push((
                    field("lb="),
                    field("reason="),
                    field("packets=").parse().unwrap_or(0),
                ));
            }
        }
        Ok((counters, stderr))
    }

    /// Waits for the exit that SIGTERM asked for. A daemon once sat in its
    /// main loop after a SIGTERM sent the moment it said it was ready (the
    /// signal never reached the loop); rather than hang the suite on such a
    /// lost signal, it is said loudly and the signal sent again.
    fn wait_after_sigterm(&mut self) -> Result<std::process::ExitStatus> {
        let asked = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if asked.elapsed() > Duration::from_secs(30) {
                eprintln!(
                    "xalb {} has not acted on SIGTERM for 30 s; sending it again",
                    self.child.id()
                );
                // SAFETY: kill with a valid pid of our child, not yet reaped.
                unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
                return Ok(self.child.wait()?);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for xalb to exit by itself (after a takeover, say): whether it
    /// exited successfully, and its stderr.
    pub fn wait_exit(mut self) -> Result<(bool, String)> {
        let status = self.child.wait()?;
        crate::interrupt::remove_daemon(self.child.id());
        Ok((status.success(), self.stderr_to_end()))
    }

    /// Waits for xalb to exit by itself, as [`Self::wait_exit`], but fails
    /// (and kills it) if it has not within `limit`: a safety net for a test
    /// that waits for an exit it caused, not a measure of speed.
    pub fn wait_exit_within(mut self, limit: Duration) -> Result<(bool, String)> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                crate::interrupt::remove_daemon(self.child.id());
                return Ok((status.success(), self.stderr_to_end()));
            }
            if Instant::now() >= deadline {
                crate::interrupt::remove_daemon(self.child.id());
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!(
                    "xalb had not exited after {limit:?}; stderr:\n{}",
                    self.stderr_to_end()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(mut self) -> Result<()> {
        crate::interrupt::remove_daemon(self.child.id());
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// Waits until xalb writes a line of stderr (since its start) that
    /// `wanted` accepts, and returns it; fails if none comes within `limit`
    /// or xalb closes its stderr first.
    pub fn wait_stderr(&self, limit: Duration, wanted: impl Fn(&str) -> bool) -> Result<String> {
        let deadline = Instant::now() + limit;
        let mut read = self.stderr.read.lock().unwrap();
        let mut seen = 0;
        loop {
            if let Some(line) = read.0[seen..].iter().find(|l| wanted(l)) {
                return Ok(line.clone());
            }
            seen = read.0.len();
            let now = Instant::now();
            if read.1 || now >= deadline {
                let why = if read.1 {
                    "xalb closed its stderr"
                } else {
                    "timed out"
                };
                bail!(
                    "{why} before the line waited for; stderr:\n{}",
                    read.0.join("\n")
                );
            }
            read = self
                .stderr
                .changed
                .wait_timeout(read, deadline - now)
                .unwrap()
                .0;
        }
    }

    /// The whole stderr, once xalb has exited.
    fn stderr_to_end(&mut self) -> String {
        if let Some(reader) = self.stderr_reader.take() {
            let _ = reader.join();
        }
        self.stderr.text()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        crate::interrupt::remove_daemon(self.child.id());
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = &self.own_state {
            let _ = std::fs::remove_dir_all(dir);
            crate::interrupt::remove_dir(dir);
        }
    }
}

/// `xalb detach` in `ns`, on the namespace's bpffs, with `state_dir` (by
/// default a scratch one, removed after: the daemon's own is gone with it):
/// (whether it succeeded, stdout, stderr).
pub fn detach(ns: &Netns, state_dir: Option<&Path>) -> Result<(bool, String, String)> {
    let scratch = state_dir.is_none().then(|| {
        std::env::temp_dir().join(format!(
            "xalb-state-{}-{}",
            std::process::id(),
            NEXT_STATE.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ))
    });
    let dir = state_dir.or(scratch.as_deref()).expect("one of them");
    let out = ns
        .command(crate::xalb_bin())
        .arg("detach")
        .arg("--state-dir")
        .arg(dir)
        .arg("--bpffs")
        .arg(crate::bpffs::for_netns(ns.name())?)
        .output()
        .context("running xalb detach");
    if let Some(s) = &scratch {
        let _ = std::fs::remove_dir_all(s);
    }
    let out = out?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// `Cpus_allowed_list` of a task's status file, as the kernel prints it
/// (e.g. `0-1`).
pub fn cpus_allowed(status_path: impl AsRef<std::path::Path>) -> String {
    std::fs::read_to_string(status_path)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim()
        .to_string()
}

/// The CPUs each of `pid`'s worker threads may run on, by worker name.
pub fn worker_cpus(pid: u32) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = task.unwrap().path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap();
        if name.starts_with("xalb-worker-") {
            out.push((name.trim().to_string(), cpus_allowed(dir.join("status"))));
        }
    }
    out.sort();
    out
}
