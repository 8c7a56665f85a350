//! Everything the bench creates (namespaces, processes, mounts, directories) is
//! registered here before or as it is made, so an error, a Ctrl-C or a SIGTERM
//! anywhere still removes it, and only it.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

#[derive(Default)]
struct Registry {
    namespaces: Vec<String>,
    /// Process-group ids of processes we started; each was started as the
    /// leader of its own group, so the id is also the leader's pid.
    groups: Vec<i32>,
    mounts: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    namespaces: Vec::new(),
    groups: Vec::new(),
    mounts: Vec::new(),
    dirs: Vec::new(),
});

fn registry() -> MutexGuard<'static, Registry> {
    // A panic elsewhere must not stop the cleanup.
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Write end of the pipe the signal handler reports to.
static SIGNAL_PIPE: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    let b = sig as u8;
    let fd = SIGNAL_PIPE.load(std::sync::atomic::Ordering::Relaxed);
    // SAFETY: write(2) is async-signal-safe; b outlives the call.
    unsafe { libc::write(fd, (&b as *const u8).cast(), 1) };
}

/// Catches SIGINT/SIGTERM/SIGHUP with a handler that only writes the signal
/// number to a pipe; a thread reads it, cleans up and exits. A handler, not a
/// blocked mask: exec resets handlers, but children would inherit a mask, and
/// then neither xalb nor trafgen could be stopped by a signal.
pub fn install_signal_handler() -> Result<()> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        bail!("pipe2: {}", std::io::Error::last_os_error());
    }
    SIGNAL_PIPE.store(fds[1], std::sync::atomic::Ordering::Relaxed);
    for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: a zeroed sigaction with a plain handler and an empty mask.
        let rc = unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(s, &sa, std::ptr::null_mut())
        };
        if rc != 0 {
            bail!("sigaction: {}", std::io::Error::last_os_error());
        }
    }
    let read_fd = fds[0];
    std::thread::Builder::new()
        .name("bench-signals".into())
        .spawn(move || loop {
            let mut b = 0u8;
            // SAFETY: reads one byte into b.
            if unsafe { libc::read(read_fd, (&mut b as *mut u8).cast(), 1) } != 1 {
                continue;
            }
            let sig = i32::from(b);
            eprintln!(
                "xtask bench: signal {sig}: stopping what it started and removing its namespaces"
            );
            // Keep the lock until exit so the main thread cannot create
            // anything new after this cleanup.
            let mut reg = registry();
            cleanup_locked(&mut reg);
            std::process::exit(128 + sig);
        })
        .context("starting the signal thread")?;
    Ok(())
}

/// Removes whatever is still registered (normally nothing: guards remove
/// their own on drop).
pub fn cleanup_all() {
    cleanup_locked(&mut registry());
}

fn cleanup_locked(reg: &mut Registry) {
    for pgid in std::mem::take(&mut reg.groups) {
        terminate_group(pgid, libc::SIGTERM, Duration::from_secs(3));
        // Reap it; the owning Child may never get to.
        // SAFETY: waitpid on our own child pid.
        unsafe { libc::waitpid(pgid, std::ptr::null_mut(), libc::WNOHANG) };
    }
    for m in std::mem::take(&mut reg.mounts) {
        let _ = Command::new("umount").arg(&m).output();
    }
    for ns in std::mem::take(&mut reg.namespaces) {
        delete_ns(&ns);
    }
    for d in std::mem::take(&mut reg.dirs) {
        let _ = std::fs::remove_dir_all(&d);
    }
}

pub fn delete_ns(name: &str) {
    let _ = Command::new("ip").args(["netns", "del", name]).output();
}

pub fn register_ns(name: &str) {
    registry().namespaces.push(name.to_string());
}

/// True if it was still registered (so the caller owns its removal).
pub fn unregister_ns(name: &str) -> bool {
    take(&mut registry().namespaces, |n| n == name)
}

/// The process groups of the processes the bench started and has not
/// stopped yet.
pub fn our_groups() -> Vec<i32> {
    registry().groups.clone()
}

pub fn register_mount(path: &Path) {
    registry().mounts.push(path.to_path_buf());
}

pub fn unregister_mount(path: &Path) -> bool {
    take(&mut registry().mounts, |m| m == path)
}

pub fn register_dir(path: &Path) {
    registry().dirs.push(path.to_path_buf());
}

fn take<T>(v: &mut Vec<T>, pred: impl Fn(&T) -> bool) -> bool {
    match v.iter().position(pred) {
        Some(i) => {
            v.remove(i);
            true
        }
        None => false,
    }
}

/// Whether the child `pid` has exited, without reaping it: while it is an
/// unreaped zombie its pid (and so its group id) cannot be reused, which makes
/// a later signal to the group safe.
fn leader_exited(pid: i32) -> bool {
    // SAFETY: waitid with a zeroed siginfo out-parameter.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let rc = libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        );
        // ECHILD: already reaped (by someone else): gone too.
        rc != 0 || info.si_pid() != 0
    }
}

/// Signals the group, waits up to `grace` for its leader, then SIGKILLs
/// whatever of the group is left (e.g. nginx workers). True if the leader
/// exited within the grace time.
fn terminate_group(pgid: i32, sig: i32, grace: Duration) -> bool {
    // SAFETY: signals to a process group we created.
    unsafe { libc::kill(-pgid, sig) };
    let deadline = Instant::now() + grace;
    let mut exited = leader_exited(pgid);
    while !exited && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        exited = leader_exited(pgid);
    }
    // SAFETY: as above; the leader is not reaped yet, so the id is still ours.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    exited
}

/// How a stop went.
pub struct Stopped {
    pub status: ExitStatus,
    pub log: String,
    /// It exited by itself within the grace time (no SIGKILL needed).
    pub in_time: bool,
}

/// A process the bench started, the leader of its own process group (so a
/// terminal's Ctrl-C reaches only xtask, which then stops it), with stdout and
/// stderr in a log file. Stopped on drop.
pub struct Proc {
    child: Child,
    pub name: String,
    pub log: PathBuf,
    done: bool,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Self> {
        use std::os::unix::process::CommandExt;
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        cmd.process_group(0)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        // Register under the lock taken before spawning so the signal thread
        // cannot miss a process that has just started.
        let mut reg = registry();
        let child = cmd
            .spawn()
            .with_context(|| format!("failed to start {name} ({cmd:?})"))?;
        reg.groups.push(child.id() as i32);
        drop(reg);
        Ok(Self {
            child,
            name: name.to_string(),
            log: log.to_path_buf(),
            done: false,
        })
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Whether it has exited already (not reaped).
    pub fn exited(&self) -> bool {
        leader_exited(self.pid())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last lines of its log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Waits up to `timeout` for it to exit by itself; past that it is killed
    /// and this is an error.
    pub fn wait(mut self, timeout: Duration) -> Result<(ExitStatus, String)> {
        let deadline = Instant::now() + timeout;
        while !self.exited() {
            if Instant::now() > deadline {
                let tail = self.log_tail();
                self.finish(libc::SIGKILL, Duration::ZERO);
                bail!(
                    "{} did not finish within {timeout:?}; output:\n{tail}",
                    self.name
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let (status, _) = self.finish(libc::SIGKILL, Duration::ZERO);
        Ok((status, self.log_text()))
    }

    /// Sends `sig` to its group, waits up to `grace`, kills what is left.
    pub fn stop(mut self, sig: i32, grace: Duration) -> Stopped {
        let (status, in_time) = self.finish(sig, grace);
        Stopped {
            status,
            log: self.log_text(),
            in_time,
        }
    }

    fn finish(&mut self, sig: i32, grace: Duration) -> (ExitStatus, bool) {
        self.done = true;
        let pid = self.pid();
        let mut in_time = true;
        if take(&mut registry().groups, |g| *g == pid) {
            if self.exited() {
                // Its group may still hold children (nginx workers).
                // SAFETY: the leader is unreaped, so the group id is ours.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
            } else {
                in_time = terminate_group(pid, sig, grace);
            }
        }
        let status = self.child.wait().unwrap_or_else(|_| {
            use std::os::unix::process::ExitStatusExt;
            ExitStatus::from_raw(0)
        });
        (status, in_time)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if !self.done {
            self.finish(libc::SIGTERM, Duration::from_secs(5));
        }
    }
}
