//! The `xalb run` process: configuration in, kernel half attached, listeners
//! served, targets checked, signals and reloads handled, counters reported.

mod affinity;
pub mod backends;
mod error;
pub mod lock;
mod state;
pub mod sticky_key;
pub(crate) mod workers;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};

use crate::admin;
use crate::config;
use crate::kernel::pins::{self, PinDir};
use crate::kernel::{counters::CounterRow, Datapath, XdpModeChoice};
pub use affinity::WorkerAffinity;
pub use error::{Applied, ApplyError, DetachError, Located, Refusal, RunError};
use lock::{LockError, NetnsLock};
use state::Running;

/// How long in-flight requests may take to finish after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

pub struct RunOptions {
    pub config: PathBuf,
    pub xdp_mode: XdpModeChoice,
    pub worker_affinity: WorkerAffinity,
    /// How often changed counters are logged; zero disables.
    pub stats_interval: Duration,
    /// What must survive a restart: the stickiness cookie key.
    pub state_dir: PathBuf,
    /// Log every XDP verdict on a balancer's packets (`xalb::xdp`, INFO).
    pub xdp_log: bool,
    /// The bpf filesystem the kernel half is pinned in.
    pub bpffs: PathBuf,
}

/// A reload request from the admin endpoint; answered with what was applied
/// or why nothing was.
pub type ReloadRequest = oneshot::Sender<Result<Applied, Refusal>>;

pub fn run(opts: RunOptions) -> Result<(), RunError> {
    let cfg = config::load(&opts.config).map_err(ApplyError::from)?;
    Running::preflight(&cfg)?;
    let cookie = pins::netns_cookie()?;
    let _lock = NetnsLock::acquire(&opts.state_dir, cookie).map_err(|e| match e {
        LockError::Busy { .. } => RunError::AlreadyRunning { holder: e.holder() },
        e => RunError::Lock(e),
    })?;
    let pin_dir = PinDir::open(&opts.bpffs, cookie)?;
    let pinned_in = pin_dir.root().display().to_string();
    // Before any target group is built: their cookie values come from it.
    match sticky_key::load_or_create(&opts.state_dir) {
        Ok(key) => {
            crate::targets::sticky::use_key(&key);
        }
        Err(e) => warn!("stickiness cookies will not survive a restart: {e}"),
    }
    // The control plane (signals, reloads, health checks, admin); requests
    // are served by the workers (`workers.rs`).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(RunError::Runtime)?;
    let (reload_tx, reload_rx) = mpsc::channel::<ReloadRequest>(4);
    let mut running = rt.block_on(Running::start(
        cfg,
        opts.config.clone(),
        opts.xdp_mode,
        opts.worker_affinity,
        opts.xdp_log,
        pin_dir,
    ))?;
    crate::memory::give_back_freed();
    let admin_addr = running.cfg.admin.listen;
    let admin_listener = rt
        .block_on(tokio::net::TcpListener::bind(admin_addr))
        .map_err(|source| RunError::Admin {
            addr: admin_addr,
            source,
        })?;
    rt.spawn(admin::serve(
        admin_listener,
        running.admin_view(),
        reload_tx,
    ));
    info!(admin = %admin_addr, "xalb running");
    // A line a supervisor or test can wait for.
    println!("xalb: ready");

    rt.block_on(main_loop(&mut running, reload_rx, opts.stats_interval))?;

    let dp = running.datapath.clone();
    let lb_rows = running.lb_rows();
    let workers = rt.block_on(running.shutdown(SHUTDOWN_GRACE));
    workers.shutdown();
    rt.shutdown_timeout(SHUTDOWN_GRACE);
    let dp = dp.lock().unwrap();
    match dp.maps.read_counters(&lb_rows) {
        Ok(rows) => {
            for row in rows.iter().filter(|r| r.packets > 0) {
                println!("{row}");
            }
        }
        Err(e) => error!(error = %e, "cannot read the XDP counters"),
    }
    info!(
        pins = %pinned_in,
        "exiting; the security groups stay enforced (pinned); `xalb detach` removes them"
    );
    Ok(())
}

pub struct DetachOptions {
    /// Where `xalb run` keeps its lock for this namespace.
    pub state_dir: PathBuf,
    /// The bpf filesystem the kernel half is pinned in.
    pub bpffs: PathBuf,
}

/// Removes what `xalb run` pinned for this network namespace (whatever
/// version pinned it): XDP leaves its interfaces and the security groups are
/// no longer enforced. Refused while an xalb runs here. Returns one line per
/// thing removed.
pub fn detach(opts: &DetachOptions) -> Result<Vec<String>, DetachError> {
    let cookie = pins::netns_cookie()?;
    let lock = NetnsLock::acquire(&opts.state_dir, cookie).map_err(|e| match e {
        LockError::Busy { .. } => DetachError::Running { holder: e.holder() },
        e => DetachError::Lock(e),
    })?;
    let removed = pins::remove_all(&opts.bpffs, cookie)?;
    let mut lines = Vec::new();
    for ifindex in &removed.xdp {
        lines.push(match crate::kernel::host::if_name(*ifindex) {
            Some(name) => format!("detached XDP from {name} (ifindex {ifindex})"),
            None => format!("detached XDP from a removed interface (ifindex {ifindex})"),
        });
    }
    if removed.sk_lookup > 0 {
        lines.push("detached sk_lookup from this network namespace".to_string());
    }
    for name in &removed.other_links {
        lines.push(format!("removed the pinned link {name}"));
    }
    if removed.is_empty() {
        lines.push(format!(
            "nothing pinned for this network namespace under {}",
            opts.bpffs.display()
        ));
    } else {
        lines.push(format!(
            "removed {} map{}",
            removed.maps,
            if removed.maps == 1 { "" } else { "s" }
        ));
        let ours = lb_common::LAYOUT_VERSION.to_string();
        for other in removed.layouts.iter().filter(|v| **v != ours) {
            lines.push(format!(
                "removed the pins of layout {other} (another xalb version)"
            ));
        }
    }
    // Nothing of this namespace is left to lock; the file goes while held.
    let _ = std::fs::remove_file(lock.path());
    let _ = std::fs::remove_file(opts.state_dir.join(format!("netns-{cookie}.sock")));
    drop(lock);
    Ok(lines)
}

async fn main_loop(
    running: &mut Running,
    mut reloads: mpsc::Receiver<ReloadRequest>,
    stats_interval: Duration,
) -> Result<(), RunError> {
    let mut sigint = signal(SignalKind::interrupt()).map_err(RunError::Signals)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(RunError::Signals)?;
    let mut sighup = signal(SignalKind::hangup()).map_err(RunError::Signals)?;
    let period = if stats_interval.is_zero() {
        Duration::from_secs(3600)
    } else {
        stats_interval
    };
    let mut stats = tokio::time::interval(period);
    let mut sync = tokio::time::interval(Duration::from_millis(200));
    let mut last: Vec<CounterRow> = Vec::new();
    loop {
        tokio::select! {
            _ = sigint.recv() => { info!("SIGINT: shutting down"); break }
            _ = sigterm.recv() => { info!("SIGTERM: shutting down"); break }
            _ = sighup.recv() => {
                match running.reload().await {
                    Ok(applied) => info!("SIGHUP: configuration reloaded: {}", applied.summary),
                    Err(e) => error!("SIGHUP: configuration not reloaded; the running one stays:\n{e}"),
                }
            }
            Some(reply) = reloads.recv() => {
                let res = running.reload().await;
                match &res {
                    Ok(applied) => info!("configuration reloaded: {}", applied.summary),
                    Err(e) => error!("configuration not reloaded; the running one stays:\n{e}"),
                }
                let _ = reply.send(res.map_err(|e| e.report()));
            }
            _ = sync.tick() => running.sync_kernel_backends(),
            _ = stats.tick(), if !stats_interval.is_zero() => {
                log_counters(&running.datapath, &running.lb_rows(), &mut last);
            }
        }
    }
    Ok(())
}

fn log_counters(dp: &Arc<Mutex<Datapath>>, lb_rows: &[(u32, String)], last: &mut Vec<CounterRow>) {
    let Ok(rows) = dp.lock().unwrap().maps.read_counters(lb_rows) else {
        return;
    };
    for row in rows.iter().filter(|r| r.packets > 0) {
        let before = last
            .iter()
            .find(|l| l.lb == row.lb && l.reason == row.reason)
            .map_or(0, |l| l.packets);
        if row.packets != before {
            info!(
                lb = row.lb.as_deref().unwrap_or("-"),
                reason = row.reason.name(),
                packets = row.packets,
                bytes = row.bytes,
                "xdp counter"
            );
        }
    }
    *last = rows;
}
