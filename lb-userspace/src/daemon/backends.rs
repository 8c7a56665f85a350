//! The kernel's healthy-backend sets (`BACKENDS`), kept in step with target
//! health: a group's set is rewritten whole when its usable targets change.

use std::sync::{Arc, Mutex};

use lb_common::{Backend, BackendSet, MAX_BACKENDS};
use tracing::warn;

use crate::kernel::Datapath;
use crate::targets::TargetGroupRuntime;

#[derive(Default)]
pub struct BackendSync {
    /// What was last written, per group id.
    written: Vec<Option<Vec<Backend>>>,
    generation: u64,
}

/// The targets of `group` that may take new flows: the usable ones, or all
/// when none is (fail open, as for requests).
pub fn usable_backends(group: &TargetGroupRuntime) -> Vec<Backend> {
    let usable: Vec<_> = group.targets().iter().filter(|t| t.is_usable()).collect();
    let chosen: Vec<_> = if usable.is_empty() {
        group.targets().iter().collect()
    } else {
        usable
    };
    chosen
        .into_iter()
        .take(MAX_BACKENDS)
        .map(|t| {
            let mut b = Backend {
                port: t.target.port,
                weight: t.target.weight,
                ..Backend::default()
            };
            match t.target.address {
                std::net::IpAddr::V4(a) => {
                    b.family = 4;
                    b.addr[..4].copy_from_slice(&a.octets());
                }
                std::net::IpAddr::V6(a) => {
                    b.family = 6;
                    b.addr = a.octets();
                }
            }
            b
        })
        .collect()
}

impl BackendSync {
    /// `groups` in configuration order: a group's id is its index.
    pub fn sync(&mut self, dp: &Arc<Mutex<Datapath>>, groups: &[Arc<TargetGroupRuntime>]) {
        self.written.resize(groups.len(), None);
        let mut dp = dp.lock().unwrap();
        for (id, g) in groups.iter().enumerate() {
            let now = usable_backends(g);
            if self.written[id].as_ref() == Some(&now) {
                continue;
            }
            self.generation += 1;
            let mut set = BackendSet {
                generation: self.generation,
                count: now.len() as u32,
                ..BackendSet::default()
            };
            set.backends[..now.len()].copy_from_slice(&now);
            match dp.maps.set_backends(id as u32, &set) {
                Ok(()) => self.written[id] = Some(now),
                Err(e) => {
                    warn!(group = g.name(), error = %e, "cannot update the kernel backend set")
                }
            }
        }
        if let Err(e) = dp.maps.trim_backends(groups.len() as u32) {
            warn!(error = %e, "cannot trim the kernel backend sets");
        }
    }
}
