//! The `xalb run` process: configuration in, kernel half attached, listeners
//! served, targets checked, signals and reloads handled, counters reported.

mod affinity;
mod error;
pub mod forwarding;
pub mod lock;
mod notify;
pub mod registrations;
pub mod secrets;
mod state;
pub mod takeover;
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
use registrations::{Registrations, TargetSpec};
pub use state::TargetChange;
use state::{Desired, Inherited, Running};
use takeover::{Control, Handover, TakeoverError};

/// What `xalb run` was asked to do.
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
    /// Take over from the xalb running in this namespace.
    pub takeover: bool,
    /// How long a stop (SIGTERM) lets requests in flight and WebSocket
    /// tunnels finish, and how long a predecessor drains after a takeover.
    pub shutdown_grace: Duration,
}

/// Where the control loop answers an admin request: what was applied, or
/// why nothing was.
pub type Answer = oneshot::Sender<Result<Applied, Refusal>>;

/// A change the admin endpoint asks the control loop for.
pub enum AdminRequest {
    /// Re-read the configuration file.
    Reload(Answer),
    /// Register or deregister targets of a group.
    Targets {
        change: TargetChange,
        group: String,
        targets: Vec<TargetSpec>,
        answer: Answer,
    },
}

impl AdminRequest {
    fn refuse(self, refusal: Refusal) {
        let (AdminRequest::Reload(answer) | AdminRequest::Targets { answer, .. }) = self;
        let _ = answer.send(Err(refusal));
    }
}

pub fn run(opts: RunOptions) -> Result<(), RunError> {
    let file = config::load(&opts.config).map_err(ApplyError::from)?;
    for w in &file.warnings {
        tracing::warn!("{w}");
    }
    let desired = Desired {
        file,
        registrations: Registrations::load(&opts.state_dir).map_err(ApplyError::from)?,
    };
    Running::preflight(&desired.effective())?;
    let cookie = pins::netns_cookie()?;
    // The control plane (signals, reloads, health checks, admin); requests
    // are served by the workers (`workers.rs`).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(RunError::Runtime)?;
    let open_datapath = || -> Result<Datapath, RunError> {
        let pin_dir = PinDir::open(&opts.bpffs, cookie)?;
        // In the runtime: the verdict log's reader is a task of it.
        let _in_rt = rt.enter();
        Ok(Datapath::open(pin_dir, opts.xdp_log).map_err(ApplyError::from)?)
    };
    let acquire = || {
        NetnsLock::acquire(&opts.state_dir, cookie).map_err(|e| match e {
            LockError::Busy { .. } => RunError::AlreadyRunning { holder: e.holder() },
            e => RunError::Lock(e),
        })
    };
    let (lock, dp, handover) = if opts.takeover {
        // Loaded and verified before the running xalb is asked anything: a
        // build that cannot load never freezes it.
        let dp = open_datapath()?;
        info!("takeover: asking the running xalb for its sockets");
        let asked = match takeover::request(&opts.state_dir, cookie) {
            // It died half-way: what it handed over closes with it.
            Err(e @ (TakeoverError::PeerGone | TakeoverError::Pass(_))) => {
                warn!(error = %e, "takeover: the running xalb went away; starting anew");
                let lock = acquire_when_released(&acquire)?;
                return run_with(opts, rt, desired, cookie, lock, dp, None);
            }
            asked => asked?,
        };
        match asked {
            Some((handover, old)) => {
                info!(
                    old = old.pid,
                    groups = handover.groups.len(),
                    "takeover: received the running xalb's sockets"
                );
                let Handover {
                    groups,
                    admin,
                    lock,
                    listener_rows,
                } = handover;
                let lock = NetnsLock::adopt(&opts.state_dir, cookie, lock);
                let inherited = Inherited {
                    groups,
                    listener_rows,
                };
                (lock, dp, Some((inherited, admin, old)))
            }
            None => {
                info!("takeover: no xalb answers in this network namespace; starting anew");
                (acquire()?, dp, None)
            }
        }
    } else {
        let lock = acquire()?;
        (lock, open_datapath()?, None)
    };
    run_with(opts, rt, desired, cookie, lock, dp, handover)
}

/// A lock that a process that has just died may still hold for a moment
/// (its descriptors close one by one): retried for up to a second.
fn acquire_when_released(
    acquire: &dyn Fn() -> Result<NetnsLock, RunError>,
) -> Result<NetnsLock, RunError> {
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    loop {
        match acquire() {
            Err(RunError::AlreadyRunning { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            res => return res,
        }
    }
}

/// What a successor received: its inheritance, the admin listener, and the
/// old process to tell to drain.
type Taken = (
    Inherited,
    Option<(std::net::SocketAddr, std::net::TcpListener)>,
    takeover::OldProcess,
);

fn run_with(
    opts: RunOptions,
    rt: tokio::runtime::Runtime,
    desired: Desired,
    cookie: u64,
    lock: NetnsLock,
    dp: Datapath,
    handover: Option<Taken>,
) -> Result<(), RunError> {
    let pinned_in = dp
        .pin_dir()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let (inherited, handed_admin, old) = match handover {
        Some((i, a, o)) => (Some(i), a, Some(o)),
        None => (None, None, None),
    };
    // Before any target group is built: their cookie values come from it.
    match secrets::sticky_key(&opts.state_dir) {
        Ok(key) => {
            crate::targets::sticky::use_key(&key);
        }
        Err(e) => warn!("stickiness cookies will not survive a restart: {e}"),
    }
    // Without it, changes over the admin endpoint are refused; the rest
    // works.
    let admin_token = secrets::admin_token(&opts.state_dir)
        .map_err(|e| warn!("admin changes (reload, register-targets) are refused: {e}"))
        .ok();
    let (reload_tx, reload_rx) = mpsc::channel::<AdminRequest>(4);
    let mut running = rt.block_on(Running::start(
        desired,
        (opts.config.clone(), opts.state_dir.clone()),
        opts.xdp_mode,
        opts.worker_affinity,
        dp,
        inherited,
    ))?;
    crate::memory::give_back_freed();
    let admin_addr = running.cfg.admin.listen;
    let admin_listener = match handed_admin {
        Some((addr, l)) if addr == admin_addr => Ok(l),
        _ => std::net::TcpListener::bind(admin_addr),
    }
    .and_then(|l| {
        l.set_nonblocking(true)?;
        let kept = l.try_clone()?;
        Ok((l, kept))
    });
    let (admin_listener, admin_kept) = admin_listener.map_err(|source| RunError::Admin {
        addr: admin_addr,
        source,
    })?;
    let admin_task = {
        let _in_rt = rt.enter();
        let listener = tokio::net::TcpListener::from_std(admin_listener).map_err(|source| {
            RunError::Admin {
                addr: admin_addr,
                source,
            }
        })?;
        rt.spawn(admin::serve(
            listener,
            running.admin_view(),
            reload_tx,
            admin_token,
        ))
    };
    // The newest xalb owns the control socket from here on.
    let (control_tx, control_rx) = mpsc::channel(4);
    takeover::listen(&opts.state_dir, cookie)?
        .serve(control_tx)
        .map_err(RunError::ControlSocket)?;
    info!(admin = %admin_addr, "xalb running");
    // Listening for signals before saying so: a supervisor may stop this
    // process the moment it reads the line below.
    let signals = {
        let _in_rt = rt.enter();
        Signals::new()?
    };
    // A line a supervisor or test can wait for, and systemd's word for it.
    println!("xalb: ready");
    let notifier = notify::Notifier::from_env();
    notifier.ready("serving");
    if let Some(old) = old {
        let pid = old.pid;
        match old.drain(opts.shutdown_grace) {
            Ok(()) => info!(old = pid, "takeover: done; the old xalb drains and exits"),
            Err(e) => {
                warn!(old = pid, error = %e, "takeover: the old xalb did not confirm draining")
            }
        }
    }

    let handing = Handing {
        admin: (admin_addr, admin_kept),
        lock: &lock,
    };
    let exit = rt.block_on(main_loop(
        &mut running,
        signals,
        reload_rx,
        control_rx,
        &handing,
        opts.stats_interval,
        &notifier,
    ))?;
    if let Exit::Drain { to_pid, grace } = exit {
        // The successor answers the admin address from here on.
        admin_task.abort();
        let drained = rt.block_on(running.drain(grace));
        // This process's descriptors only: the successor holds its own.
        drop(drained.listening);
        drained.workers.shutdown();
        rt.shutdown_timeout(grace);
        info!(
            successor = to_pid,
            forced = drained.forced,
            "handed over; exiting"
        );
        return Ok(());
    }

    let dp = running.datapath.clone();
    let lb_rows = running.lb_rows();
    let listener_rows = running.listener_rows();
    let target_rows = running.target_rows();
    let workers = rt.block_on(running.shutdown(opts.shutdown_grace));
    workers.shutdown();
    rt.shutdown_timeout(opts.shutdown_grace);
    let dp = dp.lock().unwrap();
    match dp.maps.read_counters(&lb_rows) {
        Ok(rows) => {
            for row in rows.iter().filter(|r| r.packets > 0) {
                println!("{row}");
            }
        }
        Err(e) => error!(error = %e, "cannot read the XDP counters"),
    }
    // Listeners and forwarding targets, in the same style; a line only for
    // what counted something.
    if let Ok(rows) = dp.maps.read_listener_counters(&listener_rows) {
        for row in rows
            .iter()
            .filter(|r| r.all != lb_common::ListenerCounter::default())
        {
            println!("{row}");
        }
    }
    if let Ok(rows) = dp.maps.read_target_counters(&target_rows) {
        for row in rows
            .iter()
            .filter(|r| r.c != lb_common::TargetCounter::default())
        {
            println!("{row}");
        }
        // Occupancy of the flow tables the kernel keeps (and goes on
        // using) after this process, when TCP listeners use them.
        if !target_rows.is_empty() {
            let (established, handshakes) = dp.maps.flow_entries();
            println!("flow_tables established={established} handshake={handshakes}");
        }
    }
    info!(
        pins = %pinned_in,
        "exiting; the security groups stay enforced (pinned); `xalb detach` removes them"
    );
    Ok(())
}

/// What a successor gets besides the socket groups.
struct Handing<'a> {
    admin: (std::net::SocketAddr, std::net::TcpListener),
    lock: &'a NetnsLock,
}

impl Handing<'_> {
    fn handover(&self, running: &Running) -> std::io::Result<Handover> {
        Ok(Handover {
            groups: running.handed_groups()?,
            admin: Some((self.admin.0, self.admin.1.try_clone()?)),
            lock: self.lock.share()?,
            listener_rows: running.listener_rows(),
        })
    }
}

/// How the main loop ended.
enum Exit {
    /// A signal: stop.
    Stop,
    /// A successor serves: stop accepting and drain.
    Drain { to_pid: u32, grace: Duration },
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

/// The signals the daemon acts on, listened for from creation on.
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    usr1: tokio::signal::unix::Signal,
}

impl Signals {
    /// Inside the runtime's context.
    fn new() -> Result<Self, RunError> {
        Ok(Self {
            int: signal(SignalKind::interrupt()).map_err(RunError::Signals)?,
            term: signal(SignalKind::terminate()).map_err(RunError::Signals)?,
            hup: signal(SignalKind::hangup()).map_err(RunError::Signals)?,
            usr1: signal(SignalKind::user_defined1()).map_err(RunError::Signals)?,
        })
    }
}

async fn main_loop(
    running: &mut Running,
    signals: Signals,
    mut requests: mpsc::Receiver<AdminRequest>,
    mut control: mpsc::Receiver<Control>,
    handing: &Handing<'_>,
    stats_interval: Duration,
    notifier: &notify::Notifier,
) -> Result<Exit, RunError> {
    let Signals {
        int: mut sigint,
        term: mut sigterm,
        hup: mut sighup,
        usr1: mut sigusr1,
    } = signals;
    let period = if stats_interval.is_zero() {
        Duration::from_secs(3600)
    } else {
        stats_interval
    };
    let mut stats = tokio::time::interval(period);
    let mut sync = tokio::time::interval(Duration::from_millis(200));
    let mut watchdog =
        tokio::time::interval(notifier.watchdog().unwrap_or(Duration::from_secs(3600)));
    let mut last: Vec<CounterRow> = Vec::new();
    // While a successor takes over: nothing it adopts changes under it.
    let mut frozen = false;
    loop {
        tokio::select! {
            _ = sigint.recv() => { info!("SIGINT: shutting down"); break }
            _ = sigterm.recv() => { info!("SIGTERM: shutting down"); break }
            _ = watchdog.tick(), if notifier.watchdog().is_some() => notifier.ping(),
            _ = sigusr1.recv() => running.reopen_access_log(),
            Some(c) = control.recv() => match c {
                Control::Freeze { from_pid, reply } => {
                    let answer = if frozen {
                        Err("another xalb is taking over already".to_string())
                    } else {
                        handing.handover(running).map_err(|e| format!("cannot share the sockets: {e}"))
                    };
                    frozen = answer.is_ok();
                    if frozen {
                        info!(successor = from_pid, "takeover: handing over; reloads wait");
                    }
                    let _ = reply.send(answer);
                }
                Control::Thaw => {
                    frozen = false;
                    match running.reassert() {
                        Ok(()) => info!("takeover abandoned: this xalb's configuration is enforced again"),
                        Err(e) => error!("takeover abandoned, and this configuration could not be written again:\n{e}"),
                    }
                }
                Control::Drain { to_pid, grace } => {
                    info!(successor = to_pid, "takeover: draining");
                    return Ok(Exit::Drain { to_pid, grace });
                }
            },
            _ = sighup.recv() => {
                if frozen {
                    warn!("SIGHUP: a new xalb is taking over; reload that one");
                    continue;
                }
                notifier.reloading();
                match running.reload().await {
                    Ok(applied) => info!("SIGHUP: configuration reloaded: {}", applied.summary),
                    Err(e) => error!("SIGHUP: configuration not reloaded; the running one stays:\n{e}"),
                }
                notifier.ready("serving");
            }
            Some(request) = requests.recv() => {
                if frozen {
                    request.refuse(Refusal::taking_over());
                    continue;
                }
                notifier.reloading();
                let (res, answer) = match request {
                    AdminRequest::Reload(answer) => {
                        let res = running.reload().await;
                        match &res {
                            Ok(applied) => info!("configuration reloaded: {}", applied.summary),
                            Err(e) => error!("configuration not reloaded; the running one stays:\n{e}"),
                        }
                        (res, answer)
                    }
                    AdminRequest::Targets { change, group, targets, answer } => {
                        let res = running.change_targets(change, &group, &targets).await;
                        let what = match change {
                            TargetChange::Register => "registered",
                            TargetChange::Deregister => "deregistered",
                        };
                        let list: Vec<String> = targets.iter().map(ToString::to_string).collect();
                        match &res {
                            Ok(applied) => info!(target_group = %group, targets = %list.join(" "), "targets {what}: {}", applied.summary),
                            Err(e) => warn!(target_group = %group, targets = %list.join(" "), "targets not {what}: {e}"),
                        }
                        (res, answer)
                    }
                };
                notifier.ready("serving");
                let _ = answer.send(res.map_err(|e| e.report()));
            }
            _ = sync.tick(), if !frozen => running.sync_kernel_backends(),
            _ = stats.tick(), if !stats_interval.is_zero() => {
                log_counters(&running.datapath, &running.lb_rows(), &mut last);
            }
        }
    }
    // Said before the shutdown begins, so that whoever watches (systemd, an
    // outer balancer's check of /ready) stops sending first.
    notifier.stopping();
    running.admin_view().write().unwrap().stopping = true;
    Ok(Exit::Stop)
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
