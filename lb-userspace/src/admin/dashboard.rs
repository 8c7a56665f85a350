//! The live page at the admin endpoint's `/` and the JSON it polls
//! (`/api/dashboard`): what is configured, each target's health, the last
//! minutes of traffic, and the XDP verdict counters. The page is one file
//! built into the binary: no external assets.

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::describe::{self, ListenerDescription, LoadBalancerDescription, RuleDescription};
use super::history::{Point, Totals};
use super::AdminView;

pub const PAGE: &str = include_str!("dashboard.html");

/// How often the charts get a point.
pub const STEP: Duration = Duration::from_secs(5);

#[derive(Serialize)]
pub struct Dashboard {
    pub version: &'static str,
    pub now_ms: u64,
    pub uptime_seconds: u64,
    pub security_groups: Vec<describe::SecurityGroupDescription>,
    pub load_balancers: Vec<LoadBalancerDescription>,
    pub listeners: Vec<ListenerWithRules>,
    pub target_groups: Vec<GroupWithTargets>,
    pub series: Series,
    pub xdp: Vec<XdpCounter>,
}

#[derive(Serialize)]
pub struct ListenerWithRules {
    #[serde(flatten)]
    pub listener: ListenerDescription,
    #[serde(rename = "Rules")]
    pub rules: Vec<RuleDescription>,
}

#[derive(Serialize)]
pub struct GroupWithTargets {
    #[serde(flatten)]
    pub group: describe::TargetGroupDescription,
    #[serde(rename = "Targets")]
    pub targets: Vec<TargetRow>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct TargetRow {
    pub id: String,
    pub port: u16,
    pub state: String,
    pub reason: String,
    pub description: String,
    /// `config` or `register-targets`.
    pub source: String,
}

#[derive(Serialize)]
pub struct Series {
    pub step_seconds: u64,
    pub points: Vec<Point>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct XdpCounter {
    pub load_balancer_name: String,
    pub reason: &'static str,
    pub packets: u64,
    pub bytes: u64,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What the page shows of `cfg`, the configuration `view` serves.
pub fn dashboard(view: &AdminView, cfg: &crate::config::model::Config) -> Dashboard {
    let health = super::targets(view, None).targets;
    let listeners = cfg
        .listeners
        .iter()
        .zip(describe::listeners(cfg))
        .map(|(l, listener)| ListenerWithRules {
            listener,
            rules: describe::rules(l),
        })
        .collect();
    let target_groups = describe::target_groups(cfg)
        .into_iter()
        .map(|group| GroupWithTargets {
            targets: health
                .iter()
                .filter(|t| t.target_group == group.target_group_name)
                .map(|t| TargetRow {
                    id: t.address.clone(),
                    port: t.port,
                    state: t.state.clone(),
                    reason: t.reason.clone(),
                    description: t.description.clone(),
                    source: t.source.clone(),
                })
                .collect(),
            group,
        })
        .collect();
    let xdp = view
        .datapath
        .as_ref()
        .and_then(|dp| dp.lock().unwrap().maps.read_counters(&view.lb_rows).ok())
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.packets > 0)
        .map(|r| XdpCounter {
            load_balancer_name: r.lb.clone().unwrap_or_default(),
            reason: r.reason.name(),
            packets: r.packets,
            bytes: r.bytes,
        })
        .collect();
    Dashboard {
        version: crate::VERSION,
        now_ms: now_ms(),
        uptime_seconds: view.started.map_or(0, |s| s.elapsed().as_secs()),
        security_groups: describe::security_groups(cfg),
        load_balancers: describe::load_balancers(cfg),
        listeners,
        target_groups,
        series: Series {
            step_seconds: STEP.as_secs(),
            points: view.history.lock().unwrap().points(),
        },
        xdp,
    }
}

/// The counters the charts are made of, summed now.
fn totals(view: &AdminView) -> Totals {
    let mut t = Totals::default();
    for l in &view.listeners {
        t.requests += l.metrics.requests.get();
        t.elb_4xx += l.metrics.elb_4xx.get();
        t.elb_5xx += l.metrics.elb_5xx.get();
    }
    for (_, g) in &view.groups {
        t.target_4xx += g.metrics.target_4xx.get();
        t.target_5xx += g.metrics.target_5xx.get();
        t.add_buckets(&g.metrics.bucket_counts());
    }
    t
}

/// Samples the counters every [`STEP`] for as long as the endpoint serves.
pub async fn sample(view: Arc<RwLock<AdminView>>) {
    let mut every = tokio::time::interval(STEP);
    loop {
        every.tick().await;
        let v = view.read().unwrap();
        let t = totals(&v);
        v.history.lock().unwrap().record(now_ms(), t);
    }
}
