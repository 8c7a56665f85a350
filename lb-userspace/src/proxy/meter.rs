//! Where a client connection's traffic is accounted: the listener's
//! processed bytes, and the activity the idle watcher
//! ([`super::server::quiet_for`]) looks at. Both the fast path and the
//! framing guard count through it.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use crate::metrics::ListenerMetrics;

#[derive(Clone)]
pub struct Meter {
    pub metrics: Arc<ListenerMetrics>,
    pub activity: Arc<AtomicU64>,
}

impl Meter {
    pub fn new(metrics: Arc<ListenerMetrics>) -> Self {
        Self {
            metrics,
            activity: Arc::new(AtomicU64::new(0)),
        }
    }

    /// `n` bytes moved, either way.
    pub fn moved(&self, n: usize) {
        if n > 0 {
            self.metrics.processed_bytes.add(n as u64);
            // Only this connection writes it: no read-modify-write needed.
            self.activity
                .store(self.activity.load(Relaxed).wrapping_add(1), Relaxed);
        }
    }
}
