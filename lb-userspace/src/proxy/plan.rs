//! Compiles the configuration into the proxy's run-time state — target
//! groups, and per listener its router — keeping,
//! on a reload, what must survive it: target health, metrics, and the targets
//! that were removed (they drain).

use std::sync::Arc;
use std::time::Duration;

use super::access_log::AccessLog;
use super::service::{ListenerCtx, ListenerTls, Shared};
use crate::config::model::{Config, ListenerProtocol};
use crate::metrics::ListenerMetrics;
use crate::proxy::conn::listener::{ConnLimits, Family};
use crate::proxy::route::router::Router;
use crate::proxy::upstream::pool::Upstreams;
use crate::targets::{TargetGroupRuntime, TargetState};
use crate::tls::{self, server::server_config, server::TlsError, ServedCert};

/// How long connecting to a target may take (the ALB's is 10 s).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One listener to serve and what serves it. Its sockets serve every
/// address of its balancer (the kernel steers them there).
pub struct Binding {
    pub ctx: Arc<ListenerCtx>,
    /// The address families of the balancer's addresses now.
    pub families: Vec<Family>,
}

impl Binding {
    /// `"edge:80"`.
    pub fn name(&self) -> String {
        format!("{}:{}", self.ctx.lb, self.ctx.port)
    }
}

/// A target deregistered by a reload: no new requests, in-flight ones finish.
pub struct Removed {
    pub group: String,
    pub target: Arc<TargetState>,
    pub delay: Duration,
}

pub struct ProxyPlan {
    pub shared: Arc<Shared>,
    pub bindings: Vec<Binding>,
    pub removed: Vec<Removed>,
}

/// Every HTTP and HTTPS listener of every balancer. With `old`, health and
/// metrics carry over by name.
pub fn plan(
    cfg: &Config,
    old: Option<(&Shared, &[Binding])>,
    access_log: Option<AccessLog>,
) -> Result<ProxyPlan, TlsError> {
    let mut removed = Vec::new();
    let groups: super::service::Groups = cfg
        .target_groups
        .iter()
        .map(|g| {
            let mut rt = TargetGroupRuntime::new(g);
            if let Some(prev) = old.and_then(|(s, _)| s.groups.get(&g.name)) {
                rt.metrics = prev.metrics.clone();
                let same_checks = prev.config().health_check.enabled == g.health_check.enabled;
                for t in rt.targets() {
                    if let Some(p) = prev
                        .targets()
                        .iter()
                        .find(|p| p.id == t.id)
                        .filter(|_| same_checks)
                    {
                        *t.health.lock().unwrap() = p.health.lock().unwrap().clone();
                    }
                }
                for p in prev.targets() {
                    if !rt.targets().iter().any(|t| t.id == p.id) {
                        removed.push(Removed {
                            group: g.name.clone(),
                            target: p.clone(),
                            delay: prev.config().deregistration_delay,
                        });
                    }
                }
            }
            (g.name.clone(), Arc::new(rt))
        })
        .collect();
    // Groups gone entirely: all their targets drain.
    if let Some((s, _)) = old {
        for (name, g) in &s.groups {
            if !groups.contains_key(name) {
                removed.extend(g.targets().iter().map(|t| Removed {
                    group: name.clone(),
                    target: t.clone(),
                    delay: g.config().deregistration_delay,
                }));
            }
        }
    }
    let upstreams = Upstreams::new(CONNECT_TIMEOUT);
    let shared = Arc::new(Shared { groups, upstreams });
    let mut bindings = Vec::new();
    for l in cfg
        .listeners
        .iter()
        .filter(|l| matches!(l.protocol, ListenerProtocol::Http | ListenerProtocol::Https))
    {
        let Some(lb) = cfg.load_balancer(&l.load_balancer) else {
            continue;
        };
        let metrics: Arc<ListenerMetrics> = old
            .and_then(|(_, b)| {
                b.iter()
                    .find(|b| b.ctx.lb == lb.name && b.ctx.port == l.port)
            })
            .map(|b| b.ctx.metrics.clone())
            .unwrap_or_default();
        let tls = match (l.protocol, l.tls_policy) {
            (ListenerProtocol::Https, Some(policy)) => {
                let certificates: Vec<ServedCert> = l
                    .certificates
                    .iter()
                    .filter_map(|c| c.served.clone())
                    .collect();
                Some(ListenerTls {
                    config: server_config(&tls::server::ListenerTls {
                        listener: &l.name(),
                        policy,
                        certificates: &certificates,
                        mutual: &l.mutual_authentication,
                    })?,
                    mutual: l.mutual_authentication.clone(),
                })
            }
            _ => None,
        };
        let ctx = Arc::new(ListenerCtx {
            lb: lb.name.clone(),
            port: l.port,
            scheme: if tls.is_some() { "https" } else { "http" },
            tls,
            router: Router::compile(l),
            target_timeout: lb.idle_timeout,
            metrics,
            limits: ConnLimits {
                max_header_bytes: lb.max_header_bytes,
                max_headers: lb.max_headers,
                idle_timeout: lb.idle_timeout,
                request_head_timeout: lb.request_head_timeout,
            },
            trust_request_id: lb.trust_request_id,
            access_log: access_log.clone(),
        });
        let families = Family::ALL
            .into_iter()
            .filter(|f| lb.addresses.iter().any(|a| Family::of(*a) == *f))
            .collect();
        bindings.push(Binding { ctx, families });
    }
    Ok(ProxyPlan {
        shared,
        bindings,
        removed,
    })
}
