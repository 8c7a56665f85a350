//! The running daemon's state, and applying a configuration to it — at start
//! and on reload, all or nothing.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::affinity::WorkerAffinity;
use super::error::{Applied, ApplyError};
use super::forwarding::Forwarding;
use super::registrations::{Registrations, TargetSpec};
use super::takeover::HandedGroup;
use super::workers::Workers;
use crate::admin::{AdminView, DrainingTarget, ListenerEntry, SocketEntry};
use crate::config;
use crate::config::model::{Action, Config, Listener};
use crate::kernel::{self, Datapath, LbSlots, ListenerRows, XdpModeChoice};
use crate::proxy::access_log::AccessLog;
use crate::proxy::conn::lifecycle::{self, Lifecycle};
use crate::proxy::conn::listener::{self, Family, Route, Slot};
use crate::proxy::conn::spread::Spread;
use crate::proxy::plan::{self, Binding};
use crate::proxy::service::Shared;
use crate::targets::health::{self, HealthState, Reason};

/// What `change_targets` does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetChange {
    Register,
    Deregister,
}

/// A listener's socket group of one address family: (balancer, port, family).
type GroupKey = (String, u16, Family);

fn group_key(b: &Binding, family: Family) -> GroupKey {
    (b.ctx.lb.clone(), b.ctx.port, family)
}

/// One socket group being served.
struct Served {
    slot: Slot,
    lifecycle: Lifecycle,
    /// One accept loop per worker; a drained one returns its socket.
    tasks: Vec<JoinHandle<Option<std::net::TcpListener>>>,
    /// How the group's connections sit on the workers.
    spread: Arc<Spread>,
    /// Its `SOCKS` slot.
    sock_slot: u32,
    /// Descriptors of the group's sockets (each worker has its own too), to
    /// hand them to a successor.
    listeners: Vec<std::net::TcpListener>,
}

/// A socket group bound and not served yet.
struct Fresh {
    key: GroupKey,
    sockets: Vec<std::net::TcpListener>,
    sock_slot: u32,
}

/// What the daemon is asked to serve: the file, and the targets registered
/// and deregistered at run time over it.
pub struct Desired {
    pub file: Config,
    pub registrations: Registrations,
}

impl Desired {
    /// The configuration served: the file with the run-time changes.
    pub fn effective(&self) -> Config {
        let (cfg, warnings) = self.registrations.overlay(&self.file);
        for w in warnings {
            warn!("{w}");
        }
        cfg
    }
}

pub struct Running {
    /// What is served: [`Self::desired`]'s effective configuration.
    pub cfg: Config,
    desired: Desired,
    path: PathBuf,
    /// Where the registrations are kept.
    state_dir: PathBuf,
    xdp_mode: XdpModeChoice,
    pub datapath: Arc<Mutex<Datapath>>,
    shared: Arc<Shared>,
    bindings: Vec<Binding>,
    served: HashMap<GroupKey, Served>,
    checkers: Vec<JoinHandle<()>>,
    draining: Arc<Mutex<Vec<DrainingTarget>>>,
    view: Arc<RwLock<AdminView>>,
    forwarding: Forwarding,
    access_log: Option<AccessLog>,
    workers: Workers,
    /// Each balancer's row of the XDP counters, kept by name across reloads.
    slots: LbSlots,
    /// Each listener's row of the listener counters and `SOCKS` slots.
    listener_rows: ListenerRows,
}

impl Running {
    /// What can be checked before anything is touched: the configuration
    /// compiles and the host has its interfaces and addresses.
    pub fn preflight(cfg: &Config) -> Result<(), ApplyError> {
        kernel::compile(cfg, &LbSlots::for_config(cfg))?;
        check_host(cfg)?;
        for note in kernel::host::interface_notes(cfg) {
            tracing::warn!("{note}");
        }
        Ok(())
    }

    /// Serves `cfg` (which passed [`Self::preflight`]) on `dp`, loaded on
    /// the pinned maps: what a previous xalb pinned there keeps being
    /// enforced until this configuration replaces it, and its links get this
    /// process's program in place. With `inherited` (a takeover), the
    /// running xalb's socket groups are served as they are, in their slots,
    /// and the counters go on counting.
    pub async fn start(
        desired: Desired,
        (path, state_dir): (PathBuf, PathBuf),
        xdp_mode: XdpModeChoice,
        worker_affinity: WorkerAffinity,
        mut dp: Datapath,
        inherited: Option<Inherited>,
    ) -> Result<Self, ApplyError> {
        let cfg = desired.effective();
        let access_log = open_access_log(&cfg).await?;
        let plan = plan::plan(&cfg, None, access_log.clone())?;
        let taking_over = inherited.is_some();
        let (handed, rows_before) = match inherited {
            Some(i) => (i.groups, ListenerRows::from_rows(i.listener_rows)),
            None => (Vec::new(), ListenerRows::default()),
        };
        // Every handed socket keeps an accept loop: each is a member of its
        // SO_REUSEPORT group with connections of its own queued, so there
        // are at least as many workers as the predecessor had.
        let workers = Workers::start(
            handed
                .iter()
                .map(|g| g.sockets.len())
                .max()
                .unwrap_or(0)
                .max(std::thread::available_parallelism().map_or(2, |n| n.get())),
            worker_affinity,
        )
        .map_err(ApplyError::Workers)?;
        let (listener_rows, new_listener_rows) = rows_before.next(&cfg);
        // Bind every listener before touching the kernel: an error is a
        // clear one at start, with nothing changed.
        let mut fresh = adopt_groups(handed, &plan.bindings, &listener_rows, workers.len())?;
        let adopted: Vec<GroupKey> = fresh.iter().map(|f| f.key.clone()).collect();
        fresh.extend(bind_groups(
            &plan.bindings,
            &listener_rows,
            workers.len(),
            |key| adopted.contains(key),
        )?);
        // Balancers the pinned configuration names keep their counter rows;
        // rows it gave balancers now gone are not reused by this start (the
        // active bank still counts into them until the swap below).
        let recorded = dp
            .pinned_state()
            .map(|s| LbSlots::from_rows(s.lb_rows))
            .unwrap_or_default();
        let (slots, new_rows) = recorded.next(cfg.load_balancers.iter().map(|lb| lb.name.as_str()));
        let mut kcfg = kernel::compile(&cfg, &slots)?;
        kcfg.listeners = kernel::steering(&cfg, &slots, &listener_rows);
        let mut forwarding = Forwarding::default();
        kcfg.rings = forwarding
            .prepare(&cfg, &plan.shared.groups, &[], &mut dp.maps)
            .map_err(kernel::DatapathError::from)?;
        enable_forwarding(&cfg);
        if taking_over {
            // The counters go on; rows new to this configuration may hold a
            // removed balancer's or listener's counts.
            zero_rows(&mut dp, &new_rows, &new_listener_rows)?;
        } else if dp.adopted() {
            info!(
                pins = %dp.pin_dir().map(|p| p.display().to_string()).unwrap_or_default(),
                "adopting the pinned kernel state: its configuration stays enforced until this one replaces it"
            );
            // A new process counts from zero.
            dp.zero_all_counters()?;
        }
        // The swap first, then the sockets: an adopted bank may map this
        // start's socket slots to other listeners, and after the swap (and
        // its wait) nothing reads it. Meanwhile an allowed SYN finds no
        // socket and is dropped, to be retransmitted.
        dp.apply(&kcfg)?;
        set_sockets(&mut dp, &fresh)?;
        // XDP first: no connection is steered past the security groups.
        dp.attach_all(interfaces(&cfg), xdp_mode)?;
        dp.attach_steering()?;
        let mut running = Self {
            desired,
            path,
            state_dir,
            xdp_mode,
            datapath: Arc::new(Mutex::new(dp)),
            shared: plan.shared.clone(),
            bindings: Vec::new(),
            served: HashMap::new(),
            checkers: Vec::new(),
            draining: Arc::default(),
            view: Arc::new(RwLock::new(AdminView::default())),
            forwarding,
            access_log,
            workers,
            slots,
            listener_rows,
            cfg,
        };
        running.bindings = plan.bindings;
        for f in fresh {
            running.serve(f);
        }
        running.start_checkers();
        running.refresh_view();
        Ok(running)
    }

    /// Starts accepting on a bound group (one socket per worker), for the
    /// listener of `self.bindings` it belongs to.
    fn serve(&mut self, fresh: Fresh) {
        let Fresh {
            key,
            sockets,
            sock_slot,
        } = fresh;
        let Some(b) = self
            .bindings
            .iter()
            .find(|b| b.ctx.lb == key.0 && b.ctx.port == key.1)
        else {
            return;
        };
        let slot = Slot::new(Route {
            ctx: b.ctx.clone(),
            shared: self.shared.clone(),
        });
        let (lifecycle, phase_rx) = Lifecycle::new();
        let name = b.name();
        if let Some(bound) = sockets.first().and_then(|s| s.local_addr().ok()) {
            info!(listener = %name, family = key.2.name(), %bound, workers = sockets.len(), "HTTP listener");
        }
        let (spread, inboxes) = Spread::new(self.workers.len());
        let listeners = sockets
            .iter()
            .filter_map(|l| match l.try_clone() {
                Ok(l) => Some(l),
                Err(e) => {
                    tracing::warn!(listener = %name, error = %e, "cannot keep a descriptor of a listening socket; a takeover will not get it");
                    None
                }
            })
            .collect();
        let tasks = sockets
            .into_iter()
            .zip(inboxes)
            .zip(self.workers.handles())
            .map(|((l, inbox), worker)| {
                let (slot, phase_rx, name) = (slot.clone(), phase_rx.clone(), name.clone());
                let spread = spread.clone();
                worker.spawn(async move {
                    match crate::proxy::conn::socket::Listener::new(l) {
                        Ok(listener) => {
                            let accept = listener::Accept {
                                listener,
                                inbox,
                                spread,
                            };
                            listener::serve(accept, slot, phase_rx).await
                        }
                        Err(e) => {
                            tracing::error!(listener = %name, error = %e, "cannot serve a listening socket");
                            None
                        }
                    }
                })
            })
            .collect();
        self.served.insert(
            key,
            Served {
                slot,
                lifecycle,
                tasks,
                spread,
                sock_slot,
                listeners,
            },
        );
    }

    /// Every socket group served, for a successor (new descriptors of the
    /// same sockets).
    pub fn handed_groups(&self) -> std::io::Result<Vec<HandedGroup>> {
        self.served
            .iter()
            .map(|((lb, port, family), s)| {
                Ok(HandedGroup {
                    lb: lb.clone(),
                    port: *port,
                    family: *family,
                    sock_slot: s.sock_slot,
                    sockets: s
                        .listeners
                        .iter()
                        .map(std::net::TcpListener::try_clone)
                        .collect::<Result<_, _>>()?,
                })
            })
            .collect()
    }

    /// Writes this process's configuration and sockets into the kernel
    /// again: a successor that left half-way may have applied its own.
    pub fn reassert(&mut self) -> Result<(), ApplyError> {
        let mut kcfg = kernel::compile(&self.cfg, &self.slots)?;
        kcfg.listeners = kernel::steering(&self.cfg, &self.slots, &self.listener_rows);
        let mut dp = self.datapath.lock().unwrap();
        let draining = self.draining.lock().unwrap().clone();
        kcfg.rings = self
            .forwarding
            .prepare(&self.cfg, &self.shared.groups, &draining, &mut dp.maps)
            .map_err(kernel::DatapathError::from)?;
        dp.maps
            .reread_active_bank()
            .map_err(kernel::DatapathError::from)?;
        for s in self.served.values() {
            if let Some(first) = s.listeners.first() {
                dp.maps
                    .set_socket(s.sock_slot, first)
                    .map_err(kernel::DatapathError::from)?;
            }
        }
        dp.apply(&kcfg)?;
        Ok(())
    }

    /// (row, balancer, port) of every steered listener.
    pub fn listener_rows(&self) -> Vec<(u32, String, u16)> {
        self.listener_rows.rows()
    }

    /// Checks the groups a listener uses; the others are `unused`.
    fn start_checkers(&mut self) {
        for c in self.checkers.drain(..) {
            c.abort();
        }
        let cfg = &self.cfg;
        self.checkers = self
            .shared
            .groups
            .iter()
            .flat_map(|(name, g)| {
                health::spawn_checkers(g.clone(), listener_of_group(cfg, name).is_some())
            })
            .collect();
    }

    /// (counter row, name) of every balancer.
    pub fn lb_rows(&self) -> Vec<(u32, String)> {
        self.slots.rows()
    }

    /// Opens the access log's file again (SIGUSR1, after logrotate moved
    /// it); every line written before goes to the old file.
    pub fn reopen_access_log(&self) {
        if let Some(log) = &self.access_log {
            log.reopen();
        }
    }

    pub fn admin_view(&self) -> Arc<RwLock<AdminView>> {
        self.view.clone()
    }

    fn refresh_view(&self) {
        let mut v = self.view.write().unwrap();
        v.config = Some(Arc::new(self.cfg.clone()));
        v.started.get_or_insert_with(Instant::now);
        v.registered = self.desired.registrations.added(&self.desired.file);
        v.datapath = Some(self.datapath.clone());
        v.lb_rows = self.lb_rows();
        v.listeners = self
            .bindings
            .iter()
            .map(|b| ListenerEntry {
                lb: b.ctx.lb.clone(),
                port: b.ctx.port,
                metrics: b.ctx.metrics.clone(),
            })
            .collect();
        v.listeners
            .dedup_by(|a, b| a.lb == b.lb && a.port == b.port);
        v.listener_rows = self.listener_rows();
        v.target_rows = self.target_rows();
        v.sockets = self
            .bindings
            .iter()
            .flat_map(|b| Family::ALL.map(|f| (b, f)))
            .filter_map(|(b, family)| {
                self.served.get(&group_key(b, family)).map(|s| SocketEntry {
                    lb: b.ctx.lb.clone(),
                    listener: b.name(),
                    family: family.name(),
                    spread: s.spread.clone(),
                })
            })
            .collect();
        v.groups = self
            .cfg
            .target_groups
            .iter()
            .filter_map(|g| {
                self.shared
                    .groups
                    .get(&g.name)
                    .map(|rt| (lb_of_group(&self.cfg, &g.name), rt.clone()))
            })
            .collect();
        v.draining = self.draining.clone();
    }

    /// Keeps the kernel's forwarding tables (TCP listeners) in step with
    /// target health, and forgets drained targets.
    pub fn sync_kernel_backends(&mut self) {
        // Drained targets whose delay is over become unused and are forgotten
        // (and their flows in the kernel end).
        let now = Instant::now();
        self.draining.lock().unwrap().retain(|d| {
            let over = now >= d.until;
            if over {
                d.target.health.lock().unwrap().state = HealthState::Unused;
            }
            !over
        });
        let draining = self.draining.lock().unwrap().clone();
        let mut dp = self.datapath.lock().unwrap();
        if let Err(e) =
            self.forwarding
                .sync(&self.cfg, &self.shared.groups, &draining, &mut dp.maps)
        {
            tracing::warn!(error = %e, "cannot update the kernel's forwarding tables");
        }
    }

    /// (row, group, target) of every forwarding target row.
    pub fn target_rows(&self) -> Vec<(u32, String, std::net::SocketAddr)> {
        self.forwarding.rows()
    }

    /// Re-reads the configuration file and applies it whole, or nothing;
    /// the targets registered at run time stay laid over it.
    pub async fn reload(&mut self) -> Result<Applied, ApplyError> {
        let file = config::load(&self.path)?;
        for w in &file.warnings {
            tracing::warn!("{w}");
        }
        let registrations = self.desired.registrations.clone();
        self.apply(Desired {
            file,
            registrations,
        })
        .await
    }

    /// Registers `targets` in `group` (or deregisters them: they drain as
    /// a reload's removed targets do), over the file as last applied; the
    /// change is kept in the state directory once applied.
    pub async fn change_targets(
        &mut self,
        change: TargetChange,
        group: &str,
        targets: &[TargetSpec],
    ) -> Result<Applied, ApplyError> {
        let now = &self.desired.registrations;
        let registrations = match change {
            TargetChange::Register => now.register(&self.desired.file, group, targets)?,
            TargetChange::Deregister => now.deregister(&self.desired.file, group, targets)?,
        };
        let before = now.clone();
        // Kept first: an applied change that a restart would forget is
        // worse than a kept one the apply refuses (undone below).
        registrations.save(&self.state_dir)?;
        let file = self.desired.file.clone();
        let applied = self
            .apply(Desired {
                file,
                registrations,
            })
            .await;
        if applied.is_err() {
            if let Err(e) = before.save(&self.state_dir) {
                tracing::error!("{e}");
            }
        }
        applied
    }

    /// Applies `desired` whole, or nothing.
    async fn apply(&mut self, desired: Desired) -> Result<Applied, ApplyError> {
        let cfg = desired.effective();
        let (slots, new_rows) = self
            .slots
            .next(cfg.load_balancers.iter().map(|lb| lb.name.as_str()));
        let (listener_rows, new_listener_rows) = self.listener_rows.next(&cfg);
        let mut kcfg = kernel::compile(&cfg, &slots)?;
        kcfg.listeners = kernel::steering(&cfg, &slots, &listener_rows);
        check_host(&cfg)?;
        let access_log = if cfg.access_log == self.cfg.access_log {
            self.access_log.clone()
        } else {
            open_access_log(&cfg).await?
        };
        let plan = plan::plan(
            &cfg,
            Some((&self.shared, &self.bindings)),
            access_log.clone(),
        )?;
        // New listeners' sockets first: if one cannot be bound, nothing has
        // changed yet. Listeners that stay keep theirs, whatever addresses
        // their balancer gains or loses: the kernel steers those.
        let served = &self.served;
        let fresh = bind_groups(&plan.bindings, &listener_rows, self.workers.len(), |key| {
            served.contains_key(key)
        })?;
        {
            let mut dp = self.datapath.lock().unwrap();
            dp.attach_all(interfaces(&cfg), self.xdp_mode)?;
            // A new balancer's row may hold a removed one's counts from an
            // earlier reload; nothing counts into it any more (a row freed
            // by this reload is not reused by it, see `LbSlots::next`).
            // Likewise a new listener's row, and its socket slots.
            zero_rows(&mut dp, &new_rows, &new_listener_rows)?;
            set_sockets(&mut dp, &fresh)?;
            // Targets this reload removes drain: their rows and flows stay.
            let now = Instant::now();
            let mut draining = self.draining.lock().unwrap().clone();
            draining.extend(plan.removed.iter().map(|r| DrainingTarget {
                group: r.group.clone(),
                target: r.target.clone(),
                until: now + r.delay,
            }));
            kcfg.rings = self
                .forwarding
                .prepare(&cfg, &plan.shared.groups, &draining, &mut dp.maps)
                .map_err(kernel::DatapathError::from)?;
            enable_forwarding(&cfg);
            dp.apply(&kcfg)?;
        }
        self.slots = slots;
        self.listener_rows = listener_rows;
        self.shared = plan.shared.clone();
        // Listeners that stay keep their sockets: no connection is refused.
        for b in &plan.bindings {
            for family in Family::ALL {
                if let Some(s) = self.served.get(&group_key(b, family)) {
                    s.slot.replace(Route {
                        ctx: b.ctx.clone(),
                        shared: self.shared.clone(),
                    });
                }
            }
        }
        let new_groups = fresh.len();
        self.bindings = plan.bindings;
        for f in fresh {
            self.serve(f);
        }
        let gone: Vec<GroupKey> = self
            .served
            .keys()
            .filter(|(lb, port, _)| {
                !self
                    .bindings
                    .iter()
                    .any(|b| b.ctx.lb == *lb && b.ctx.port == *port)
            })
            .cloned()
            .collect();
        for key in &gone {
            if let Some(s) = self.served.remove(key) {
                // No bank names the slot any more (the swap waited for the
                // programs that read the old one).
                let cleared = self.datapath.lock().unwrap().maps.clear_socket(s.sock_slot);
                if let Err(e) = cleared {
                    tracing::warn!(error = %e, "cannot empty a socket slot; it empties when the sockets close");
                }
                s.lifecycle.stop();
                info!(listener = %format!("{}:{}", key.0, key.1), family = key.2.name(), "HTTP listener closed");
            }
        }
        let now = Instant::now();
        {
            let mut draining = self.draining.lock().unwrap();
            for r in &plan.removed {
                {
                    let mut h = r.target.health.lock().unwrap();
                    h.state = HealthState::Draining;
                    h.reason = Some(Reason::DeregistrationInProgress);
                }
                r.target
                    .start_draining(tokio::time::Instant::now() + r.delay);
                draining.push(DrainingTarget {
                    group: r.group.clone(),
                    target: r.target.clone(),
                    until: now + r.delay,
                });
            }
        }
        let summary = Applied::new(
            self.served.len(),
            new_groups,
            gone.len(),
            plan.shared.groups.len(),
            plan.removed.len(),
        );
        self.cfg = cfg;
        self.desired = desired;
        self.access_log = access_log;
        self.start_checkers();
        self.refresh_view();
        Ok(summary)
    }

    /// Stops accepting; connections finish their in-flight requests (idle
    /// ones close at once), for up to `grace`.
    pub async fn shutdown(self, grace: std::time::Duration) -> Workers {
        for c in self.checkers {
            c.abort();
        }
        for s in self.served.values() {
            s.lifecycle.stop();
        }
        for (_, s) in self.served {
            for t in s.tasks {
                let _ = t.await;
            }
        }
        let deadline = tokio::time::Instant::now() + grace;
        let open = || {
            self.bindings
                .iter()
                .map(|b| b.ctx.metrics.active_connections.get().max(0))
                .sum::<i64>()
        };
        while open() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        self.workers
    }

    /// Hands the service over to another process that accepts on the same
    /// listening sockets (`xalb run --takeover`): stops accepting without
    /// closing them, and drains every connection
    /// ([`crate::proxy::conn::lifecycle`]): each closes after its next
    /// response, when its client closes it or when idle, and upgraded
    /// connections (WebSocket) carry on. Returns once none is left or at
    /// `grace`; what is left then closes with the workers
    /// ([`Workers::shutdown`]), counted in `forced`. The kernel half is not
    /// touched: it is the next process's.
    pub async fn drain(self, grace: std::time::Duration) -> Drained {
        let deadline = tokio::time::Instant::now() + grace;
        for c in self.checkers {
            c.abort();
        }
        for s in self.served.values() {
            s.lifecycle.drain();
        }
        let mut listening = Vec::new();
        for s in self.served.into_values() {
            for t in s.tasks {
                if let Ok(Some(l)) = t.await {
                    listening.push(l);
                }
            }
        }
        let open = || {
            self.bindings
                .iter()
                .map(|b| b.ctx.metrics.active_connections.get())
                .sum::<i64>()
        };
        let forced = lifecycle::settle(open, deadline).await;
        if forced > 0 {
            warn!(forced, "drain: grace over; the connections left are closed");
        } else {
            info!(forced, "drained: every connection closed");
        }
        Drained {
            workers: self.workers,
            listening,
            forced,
        }
    }
}

/// What [`Running::drain`] leaves.
pub struct Drained {
    /// Still running what was not done by the grace: shut them down to
    /// close it.
    pub workers: Workers,
    /// The listening sockets the workers accepted on, still open. Closing
    /// a socket no other process holds resets the connections in its
    /// accept queue.
    pub listening: Vec<std::net::TcpListener>,
    /// Connections open at the grace deadline.
    pub forced: u64,
}

/// What a predecessor handed over to this process.
pub struct Inherited {
    pub groups: Vec<HandedGroup>,
    /// (row, balancer, port) of every listener it steered.
    pub listener_rows: Vec<(u32, String, u16)>,
}

/// The handed groups this configuration still serves, in the slots they
/// had, each completed to one socket per worker (joining its SO_REUSEPORT
/// group). The others are left to the predecessor, which closes them when
/// it exits.
fn adopt_groups(
    handed: Vec<HandedGroup>,
    bindings: &[Binding],
    rows: &ListenerRows,
    workers: usize,
) -> Result<Vec<Fresh>, ApplyError> {
    let mut fresh = Vec::new();
    for g in handed {
        let key: GroupKey = (g.lb, g.port, g.family);
        let wanted = bindings.iter().any(|b| group_key(b, key.2) == key);
        let slot = rows
            .row(&key.0, key.1)
            .map(|r| lb_common::sock_slot(r, key.2 == Family::V6));
        if !wanted || slot != Some(g.sock_slot) {
            info!(listener = %format!("{}:{}", key.0, key.1), family = key.2.name(), "takeover: a handed socket group this configuration does not serve is left to the old xalb");
            continue;
        }
        let mut sockets = g.sockets;
        if sockets.len() < workers {
            if let Some(addr) = sockets.first().and_then(|s| s.local_addr().ok()) {
                sockets.extend(listener::join_steered(addr, workers - sockets.len())?);
            }
        }
        fresh.push(Fresh {
            key,
            sockets,
            sock_slot: g.sock_slot,
        });
    }
    Ok(fresh)
}

/// Binds a socket group per listener of `bindings` and address family, for
/// each group not `served` already, in its `SOCKS` slot by `rows`. A
/// balancer without an address of a family still gets that family's group
/// (so a reload that adds one binds nothing), unless the host has no such
/// family at all.
fn bind_groups(
    bindings: &[Binding],
    rows: &ListenerRows,
    workers: usize,
    served: impl Fn(&GroupKey) -> bool,
) -> Result<Vec<Fresh>, ApplyError> {
    let mut fresh = Vec::new();
    for b in bindings {
        let Some(row) = rows.row(&b.ctx.lb, b.ctx.port) else {
            continue;
        };
        for family in Family::ALL {
            let key = group_key(b, family);
            if served(&key) {
                continue;
            }
            match listener::bind_steered(family, workers) {
                Ok(sockets) => fresh.push(Fresh {
                    key,
                    sockets,
                    sock_slot: lb_common::sock_slot(row, family == Family::V6),
                }),
                // IPv6 disabled on the host: no balancer address can be one.
                Err(e) if !b.families.contains(&family) => {
                    tracing::debug!(listener = %b.name(), family = family.name(), error = %e, "no socket group for this family")
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(fresh)
}

/// Zeroes the balancer and listener counter rows newly taken.
fn zero_rows(dp: &mut Datapath, lb_rows: &[u32], listener_rows: &[u32]) -> Result<(), ApplyError> {
    dp.maps
        .zero_counters(lb_rows)
        .map_err(kernel::DatapathError::from)?;
    dp.maps
        .zero_listener_counters(listener_rows)
        .map_err(kernel::DatapathError::from)?;
    Ok(())
}

/// Puts each fresh group's first socket into its `SOCKS` slot: the kernel
/// spreads what it steers there over the whole SO_REUSEPORT group.
fn set_sockets(dp: &mut Datapath, fresh: &[Fresh]) -> Result<(), ApplyError> {
    for f in fresh {
        if let Some(first) = f.sockets.first() {
            dp.maps
                .set_socket(f.sock_slot, first)
                .map_err(kernel::DatapathError::from)?;
        }
    }
    Ok(())
}

fn interfaces(cfg: &Config) -> impl Iterator<Item = &str> {
    cfg.load_balancers
        .iter()
        .flat_map(|lb| lb.interfaces.iter().map(String::as_str))
}

fn check_host(cfg: &Config) -> Result<(), ApplyError> {
    let errors = kernel::host::check(cfg);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApplyError::Host(errors))
    }
}

async fn open_access_log(cfg: &Config) -> Result<Option<AccessLog>, ApplyError> {
    AccessLog::open(&cfg.access_log)
        .await
        .map_err(|source| ApplyError::AccessLog {
            path: cfg.access_log.path.clone(),
            source,
        })
}

/// The first listener whose default action or a rule forwards to `group`
/// (alone or weighted); `None` when no listener uses the group.
/// Turns forwarding on for the interfaces of balancers with a TCP
/// listener (the kernel's FIB answers the XDP program only there).
fn enable_forwarding(cfg: &Config) {
    for lb in &cfg.load_balancers {
        let tcp = cfg.listeners.iter().any(|l| {
            l.load_balancer == lb.name && l.protocol == crate::config::model::ListenerProtocol::Tcp
        });
        if !tcp {
            continue;
        }
        for iface in &lb.interfaces {
            if let Err(e) = kernel::forwarding::enable_forwarding(iface) {
                tracing::warn!(interface = %iface, error = %e, "cannot turn forwarding on; TCP listeners' packets will be dropped as drop_no_route");
            }
        }
    }
}

fn listener_of_group<'c>(cfg: &'c Config, group: &str) -> Option<&'c Listener> {
    let uses = |a: &Action| match a {
        Action::Forward { target_group } => target_group == group,
        Action::WeightedForward { target_groups, .. } => {
            target_groups.iter().any(|g| g.name == group)
        }
        _ => false,
    };
    cfg.listeners
        .iter()
        .find(|l| uses(&l.default_action) || l.rules.iter().any(|r| uses(&r.action)))
}

/// The balancer whose listener or rule forwards to `group` (ALB: a target
/// group belongs to one load balancer); empty if none does.
fn lb_of_group(cfg: &Config, group: &str) -> String {
    listener_of_group(cfg, group)
        .map(|l| l.load_balancer.clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_is_in_use_when_a_listener_forwards_to_it() {
        let cfg = crate::config::parse_str(
            r#"
[[security_group]]
name = "sg"
ingress = [{ protocol = "tcp", ports = "80", source = "0.0.0.0/0" }]

[[target_group]]
name = "by-default"
protocol = "HTTP"
port = 80

[[target_group]]
name = "by-rule"
protocol = "HTTP"
port = 80

[[target_group]]
name = "weighted"
protocol = "HTTP"
port = 80

[[target_group]]
name = "spare"
protocol = "HTTP"
port = 80

[[load_balancer]]
name = "edge"
interfaces = ["eth0"]
addresses = ["10.0.0.10"]
security_groups = ["sg"]

[[listener]]
load_balancer = "edge"
protocol = "HTTP"
port = 80
default_action = { type = "forward", target_group = "by-default" }

[[rule]]
listener = "edge:80"
priority = 1
conditions = [{ field = "path-pattern", values = ["/a"] }]
action = { type = "forward", target_group = "by-rule" }

[[rule]]
listener = "edge:80"
priority = 2
conditions = [{ field = "path-pattern", values = ["/b"] }]
action = { type = "forward", target_groups = [{ name = "by-default", weight = 1 }, { name = "weighted", weight = 0 }] }
"#,
            "t.toml",
        )
        .unwrap();
        for used in ["by-default", "by-rule", "weighted"] {
            assert!(listener_of_group(&cfg, used).is_some(), "{used}");
            assert_eq!(lb_of_group(&cfg, used), "edge");
        }
        assert!(listener_of_group(&cfg, "spare").is_none());
        assert_eq!(lb_of_group(&cfg, "spare"), "");
    }
}
