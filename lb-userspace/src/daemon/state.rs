//! The running daemon's state, and applying a configuration to it — at start
//! and on reload, all or nothing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::info;

use super::affinity::WorkerAffinity;
use super::backends::BackendSync;
use super::error::{Applied, ApplyError};
use super::workers::Workers;
use crate::admin::{AdminView, DrainingTarget, ListenerEntry, SocketEntry};
use crate::config;
use crate::config::model::{Action, Config, Listener};
use crate::kernel::pins::PinDir;
use crate::kernel::{self, Datapath, LbSlots, XdpModeChoice};
use crate::proxy::access_log::AccessLog;
use crate::proxy::conn::listener::{self, Route, Slot};
use crate::proxy::conn::spread::Spread;
use crate::proxy::plan::{self, Binding};
use crate::proxy::service::Shared;
use crate::targets::health::{self, HealthState, Reason};

struct Served {
    slot: Slot,
    stop: watch::Sender<bool>,
    /// One accept loop per worker.
    tasks: Vec<JoinHandle<()>>,
    /// How the address's connections sit on the workers.
    spread: Arc<Spread>,
}

pub struct Running {
    pub cfg: Config,
    path: PathBuf,
    xdp_mode: XdpModeChoice,
    pub datapath: Arc<Mutex<Datapath>>,
    shared: Arc<Shared>,
    bindings: Vec<Binding>,
    served: HashMap<SocketAddr, Served>,
    checkers: Vec<JoinHandle<()>>,
    draining: Arc<Mutex<Vec<DrainingTarget>>>,
    view: Arc<RwLock<AdminView>>,
    backends: BackendSync,
    access_log: Option<AccessLog>,
    workers: Workers,
    /// Each balancer's row of the XDP counters, kept by name across reloads.
    slots: LbSlots,
}

impl Running {
    /// What can be checked before anything is touched: the configuration
    /// compiles and the host has its interfaces and addresses.
    pub fn preflight(cfg: &Config) -> Result<(), ApplyError> {
        kernel::compile(cfg, &LbSlots::for_config(cfg))?;
        check_host(cfg)
    }

    /// Serves `cfg` (which passed [`Self::preflight`]) with the kernel half
    /// pinned in `pins`: what a previous xalb pinned there keeps being
    /// enforced until this configuration replaces it, and its links get this
    /// process's program in place.
    pub async fn start(
        cfg: Config,
        path: PathBuf,
        xdp_mode: XdpModeChoice,
        worker_affinity: WorkerAffinity,
        xdp_log: bool,
        pins: PinDir,
    ) -> Result<Self, ApplyError> {
        let access_log = open_access_log(&cfg).await?;
        let plan = plan::plan(&cfg, None, access_log.clone());
        // Bind every listener before touching the kernel: a port in use is a
        // clear error at start, with nothing attached.
        let workers = Workers::start(
            std::thread::available_parallelism().map_or(2, |n| n.get()),
            worker_affinity,
        )
        .map_err(ApplyError::Workers)?;
        let mut listeners = Vec::new();
        for b in &plan.bindings {
            listeners.push(listener::bind(b.addr, workers.len())?);
        }
        let mut dp = Datapath::open(pins, xdp_log)?;
        // Balancers the pinned configuration names keep their counter rows;
        // rows it gave balancers now gone are not reused by this start (the
        // active bank still counts into them until the swap below).
        let recorded = dp
            .pinned_state()
            .map(|s| LbSlots::from_rows(s.lb_rows))
            .unwrap_or_default();
        let (slots, _) = recorded.next(cfg.load_balancers.iter().map(|lb| lb.name.as_str()));
        let kcfg = kernel::compile(&cfg, &slots)?;
        if dp.adopted() {
            info!(
                pins = %dp.pin_dir().map(|p| p.display().to_string()).unwrap_or_default(),
                "adopting the pinned kernel state: its configuration stays enforced until this one replaces it"
            );
            // A new process counts from zero.
            dp.zero_all_counters()?;
        }
        dp.apply(&kcfg)?;
        dp.attach_all(interfaces(&cfg), xdp_mode)?;
        let mut running = Self {
            path,
            xdp_mode,
            datapath: Arc::new(Mutex::new(dp)),
            shared: plan.shared.clone(),
            bindings: Vec::new(),
            served: HashMap::new(),
            checkers: Vec::new(),
            draining: Arc::default(),
            view: Arc::new(RwLock::new(AdminView::default())),
            backends: BackendSync::default(),
            access_log,
            workers,
            slots,
            cfg,
        };
        for (listener, b) in listeners.into_iter().zip(&plan.bindings) {
            running.serve(listener, b);
        }
        running.bindings = plan.bindings;
        running.start_checkers();
        running.refresh_view();
        Ok(running)
    }

    /// Starts accepting on `listeners` (one per worker) for binding `b`.
    fn serve(&mut self, listeners: Vec<std::net::TcpListener>, b: &Binding) {
        let slot = Slot::new(
            b.addr,
            Route {
                ctx: b.ctx.clone(),
                shared: self.shared.clone(),
            },
        );
        let (stop, stop_rx) = watch::channel(false);
        info!(addr = %b.addr, lb = %b.ctx.lb, workers = listeners.len(), "HTTP listener");
        let (spread, inboxes) = Spread::new(self.workers.len());
        let tasks = listeners
            .into_iter()
            .zip(inboxes)
            .zip(self.workers.handles())
            .map(|((l, inbox), worker)| {
                let (slot, stop_rx, addr) = (slot.clone(), stop_rx.clone(), b.addr);
                let spread = spread.clone();
                worker.spawn(async move {
                    match crate::proxy::conn::socket::Listener::new(l) {
                        Ok(listener) => {
                            let accept = listener::Accept {
                                listener,
                                inbox,
                                spread,
                            };
                            listener::serve(accept, slot, stop_rx).await
                        }
                        Err(e) => {
                            tracing::error!(%addr, error = %e, "cannot serve a listening socket")
                        }
                    }
                })
            })
            .collect();
        self.served.insert(
            b.addr,
            Served {
                slot,
                stop,
                tasks,
                spread,
            },
        );
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

    pub fn admin_view(&self) -> Arc<RwLock<AdminView>> {
        self.view.clone()
    }

    fn refresh_view(&self) {
        let mut v = self.view.write().unwrap();
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
        v.sockets = self
            .bindings
            .iter()
            .filter_map(|b| {
                self.served.get(&b.addr).map(|s| SocketEntry {
                    lb: b.ctx.lb.clone(),
                    addr: b.addr,
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

    /// Keeps the kernel's healthy-backend sets in step with target health.
    pub fn sync_kernel_backends(&mut self) {
        let groups: Vec<_> = self
            .cfg
            .target_groups
            .iter()
            .filter_map(|g| self.shared.groups.get(&g.name).cloned())
            .collect();
        self.backends.sync(&self.datapath, &groups);
        // Drained targets whose delay is over become unused and are forgotten.
        let now = Instant::now();
        self.draining.lock().unwrap().retain(|d| {
            let over = now >= d.until;
            if over {
                d.target.health.lock().unwrap().state = HealthState::Unused;
            }
            !over
        });
    }

    /// Re-reads the configuration file and applies it whole, or nothing.
    pub async fn reload(&mut self) -> Result<Applied, ApplyError> {
        let cfg = config::load(&self.path)?;
        let (slots, new_rows) = self
            .slots
            .next(cfg.load_balancers.iter().map(|lb| lb.name.as_str()));
        let kcfg = kernel::compile(&cfg, &slots)?;
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
        );
        // New sockets first: if one cannot be bound, nothing has changed yet.
        let mut fresh = Vec::new();
        for b in plan
            .bindings
            .iter()
            .filter(|b| !self.served.contains_key(&b.addr))
        {
            fresh.push((listener::bind(b.addr, self.workers.len())?, b));
        }
        {
            let mut dp = self.datapath.lock().unwrap();
            dp.attach_all(interfaces(&cfg), self.xdp_mode)?;
            // A new balancer's row may hold a removed one's counts from an
            // earlier reload; nothing counts into it any more (a row freed
            // by this reload is not reused by it, see `LbSlots::next`).
            dp.maps
                .zero_counters(&new_rows)
                .map_err(kernel::DatapathError::from)?;
            dp.apply(&kcfg)?;
        }
        self.slots = slots;
        self.shared = plan.shared.clone();
        // Listeners that stay keep their sockets: no connection is refused.
        for b in &plan.bindings {
            if let Some(s) = self.served.get(&b.addr) {
                s.slot.replace(Route {
                    ctx: b.ctx.clone(),
                    shared: self.shared.clone(),
                });
            }
        }
        for (listener, b) in fresh {
            self.serve(listener, b);
        }
        let gone: Vec<SocketAddr> = self
            .served
            .keys()
            .filter(|a| !plan.bindings.iter().any(|b| b.addr == **a))
            .copied()
            .collect();
        for addr in &gone {
            if let Some(s) = self.served.remove(addr) {
                let _ = s.stop.send(true);
                info!(%addr, "HTTP listener closed");
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
            plan.bindings.len(),
            plan.bindings.len()
                - self
                    .bindings
                    .iter()
                    .filter(|b| plan.bindings.iter().any(|n| n.addr == b.addr))
                    .count(),
            gone.len(),
            plan.shared.groups.len(),
            plan.removed.len(),
        );
        self.bindings = plan.bindings;
        self.cfg = cfg;
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
            let _ = s.stop.send(true);
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
