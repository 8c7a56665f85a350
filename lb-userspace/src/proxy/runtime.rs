//! Compiles the configuration into the proxy's run-time state: target groups,
//! and per listener its router and the addresses it binds.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::router::Router;
use super::server::ConnLimits;
use super::service::{ListenerCtx, Shared};
use super::upstream::Upstreams;
use crate::config::model::{Config, ListenerProtocol};
use crate::targets::TargetGroupRuntime;

/// How long connecting to a target may take (the ALB's is 10 s).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One socket to listen on and what serves it.
pub struct Binding {
    pub addr: SocketAddr,
    pub ctx: Arc<ListenerCtx>,
    pub limits: ConnLimits,
}

pub struct ProxyPlan {
    pub shared: Arc<Shared>,
    pub bindings: Vec<Binding>,
}

/// Every HTTP listener of every balancer, on each of the balancer's addresses.
/// HTTPS and TCP listeners are served elsewhere.
pub fn plan(cfg: &Config) -> ProxyPlan {
    let groups: HashMap<String, Arc<TargetGroupRuntime>> = cfg
        .target_groups
        .iter()
        .map(|g| (g.name.clone(), Arc::new(TargetGroupRuntime::new(g))))
        .collect();
    let shared = Arc::new(Shared {
        groups,
        upstreams: Upstreams::new(CONNECT_TIMEOUT),
    });
    let mut bindings = Vec::new();
    for l in cfg
        .listeners
        .iter()
        .filter(|l| l.protocol == ListenerProtocol::Http)
    {
        let Some(lb) = cfg.load_balancer(&l.load_balancer) else {
            continue;
        };
        let ctx = Arc::new(ListenerCtx {
            lb: lb.name.clone(),
            port: l.port,
            scheme: "http",
            router: Router::compile(l),
            target_timeout: lb.idle_timeout,
        });
        let limits = ConnLimits {
            max_header_bytes: lb.max_header_bytes,
            max_headers: lb.max_headers,
            idle_timeout: lb.idle_timeout,
        };
        for &ip in &lb.addresses {
            bindings.push(Binding {
                addr: SocketAddr::new(ip, l.port),
                ctx: ctx.clone(),
                limits,
            });
        }
    }
    ProxyPlan { shared, bindings }
}
