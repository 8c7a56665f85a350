//! What a Ctrl-C leaves behind: a long-running program of this crate (the
//! demo) that is interrupted still removes the namespaces it made and stops
//! the daemons it started, as on its normal end. Namespaces and daemons
//! register themselves here; tests install no handler, so for them this is
//! only bookkeeping.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

#[derive(Default)]
struct Registry {
    namespaces: Vec<String>,
    daemons: Vec<u32>,
    /// Directories made for the daemons (their state directories).
    dirs: Vec<PathBuf>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    namespaces: Vec::new(),
    daemons: Vec::new(),
    dirs: Vec::new(),
});

fn registry() -> MutexGuard<'static, Registry> {
    // A panic elsewhere must not stop the clean-up.
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn add_namespace(name: &str) {
    registry().namespaces.push(name.to_string());
}

pub(crate) fn remove_namespace(name: &str) {
    registry().namespaces.retain(|n| n != name);
}

pub(crate) fn add_dir(dir: &Path) {
    registry().dirs.push(dir.to_path_buf());
}

pub(crate) fn remove_dir(dir: &Path) {
    registry().dirs.retain(|d| d != dir);
}

pub(crate) fn add_daemon(pid: u32) {
    registry().daemons.push(pid);
}

pub(crate) fn remove_daemon(pid: u32) {
    registry().daemons.retain(|&p| p != pid);
}

/// From now on SIGINT, SIGTERM or SIGHUP stops every registered daemon
/// (SIGTERM; SIGKILL after 5 s), unmounts the bpf filesystems their pins
/// are in (which detaches their XDP programs), deletes every registered
/// namespace and exits with 128 + the signal.
pub fn clean_up_on_signal() -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .context("signal runtime")?;
    // Registered here, before returning, so no signal slips in unhandled.
    let (mut int, mut term, mut hup) = rt
        .block_on(async {
            Ok::<_, std::io::Error>((
                signal(SignalKind::interrupt())?,
                signal(SignalKind::terminate())?,
                signal(SignalKind::hangup())?,
            ))
        })
        .context("installing signal handlers")?;
    std::thread::spawn(move || {
        let sig = rt.block_on(async {
            tokio::select! {
                _ = int.recv() => libc::SIGINT,
                _ = term.recv() => libc::SIGTERM,
                _ = hup.recv() => libc::SIGHUP,
            }
        });
        eprintln!("\n== interrupted: stopping xalb and removing the namespaces");
        clean_up();
        std::process::exit(128 + sig);
    });
    Ok(())
}

fn clean_up() {
    let mut reg = registry();
    for &pid in &reg.daemons {
        // SAFETY: kill with the pid of a child we started (not yet reaped:
        // its Daemon still owns it).
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    for &pid in &reg.daemons {
        while !exited(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if !exited(pid) {
            // SAFETY: as above.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
    reg.daemons.clear();
    crate::bpffs::release_all();
    for name in reg.namespaces.drain(..) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &name])
            .output();
    }
    for dir in reg.dirs.drain(..) {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Gone, or a zombie waiting for its parent (this process) to reap it.
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_none_or(|state| state == "Z" || state == "X"),
        Err(_) => true,
    }
}
