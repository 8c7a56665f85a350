//! The data plane's threads: one single-threaded runtime per core, each with
//! its own listening sockets (SO_REUSEPORT: the kernel spreads connections)
//! and its own upstream pools, so a request never hops between threads.
//! By default each stays on a CPU of its own (`affinity.rs`).

use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

use super::affinity::{self, WorkerAffinity};

pub struct Workers {
    handles: Vec<Handle>,
    stops: Vec<oneshot::Sender<()>>,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    pub fn start(n: usize, placement: WorkerAffinity) -> std::io::Result<Self> {
        let mut w = Self {
            handles: Vec::new(),
            stops: Vec::new(),
            threads: Vec::new(),
        };
        // Only pinning needs the allowed set; without it nothing is pinned.
        let allowed = match placement {
            WorkerAffinity::Pinned => affinity::allowed_cpus().unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot read the CPUs xalb may use; the workers are not pinned");
                Vec::new()
            }),
            WorkerAffinity::Any => Vec::new(),
        };
        let cpus = affinity::plan(placement, n.max(1), &allowed);
        for (i, cpu) in cpus.into_iter().enumerate() {
            let (stop, stopped) = oneshot::channel::<()>();
            let (tx, rx) = std::sync::mpsc::channel();
            let thread = std::thread::Builder::new()
                .name(format!("xalb-worker-{i}"))
                .spawn(move || {
                    crate::worker::set(i);
                    if let Some(cpu) = cpu {
                        if let Err(e) = affinity::pin_to(cpu) {
                            tracing::warn!(worker = i, cpu, error = %e, "cannot pin the worker to its CPU");
                        }
                    }
                    let rt = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt,
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = tx.send(Ok(rt.handle().clone()));
                    // Runs every task of this worker until told to stop; what is
                    // left then is dropped with the runtime.
                    rt.block_on(async {
                        let _ = stopped.await;
                    });
                })?;
            w.threads.push(thread);
            w.stops.push(stop);
            let handle = rx
                .recv()
                .map_err(|_| std::io::Error::other("worker thread died"))??;
            w.handles.push(handle);
        }
        Ok(w)
    }

    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }

    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Stops every worker and waits for its thread.
    pub fn shutdown(self) {
        for s in self.stops {
            let _ = s.send(());
        }
        for t in self.threads {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CPUs each worker thread may run on, as the kernel reports them.
    fn cpus_of_each(w: &Workers) -> Vec<Vec<usize>> {
        w.handles()
            .iter()
            .map(|h| {
                let (tx, rx) = std::sync::mpsc::channel();
                h.spawn(async move { tx.send(affinity::allowed_cpus().unwrap()) });
                rx.recv().unwrap()
            })
            .collect()
    }

    #[test]
    fn pinned_workers_each_run_on_one_allowed_cpu_of_their_own() {
        let allowed = affinity::allowed_cpus().unwrap();
        let w = Workers::start(allowed.len(), WorkerAffinity::Pinned).unwrap();
        let got = cpus_of_each(&w);
        w.shutdown();
        let want: Vec<Vec<usize>> = allowed.iter().map(|&c| vec![c]).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn unpinned_workers_may_run_on_every_allowed_cpu() {
        let allowed = affinity::allowed_cpus().unwrap();
        let w = Workers::start(2, WorkerAffinity::Any).unwrap();
        let got = cpus_of_each(&w);
        w.shutdown();
        assert_eq!(got, vec![allowed.clone(), allowed]);
    }
}
