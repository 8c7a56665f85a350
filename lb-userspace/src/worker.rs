//! Which data-plane worker the current thread is. Each worker runs its own
//! single-threaded runtime; state kept per worker (upstream pools, metric
//! stripes, [`PerWorker`] slots) is indexed by this, so workers never share
//! a hot cache line.

use std::cell::Cell;

thread_local! {
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// Marks the current thread as data-plane worker `i`.
pub fn set(i: usize) {
    WORKER.with(|w| w.set(i));
}

/// This thread's worker index; 0 on threads that are not workers.
pub fn index() -> usize {
    WORKER.with(|w| w.get())
}

/// Slots in a [`PerWorker`]: workers beyond this share slots, still
/// correctly (each slot is behind its own lock or atomic).
const SLOTS: usize = 16;

/// One `T` per worker, each on a cache line of its own: a worker's slot is
/// never a line another core writes.
#[derive(Debug)]
pub struct PerWorker<T>(Box<[Padded<T>]>);

#[derive(Debug)]
#[repr(align(128))]
struct Padded<T>(T);

impl<T: Default> Default for PerWorker<T> {
    fn default() -> Self {
        Self::new(T::default)
    }
}

impl<T> PerWorker<T> {
    /// Every slot made by `make`.
    pub fn new(mut make: impl FnMut() -> T) -> Self {
        Self((0..SLOTS).map(|_| Padded(make())).collect())
    }

    /// The current thread's slot.
    pub fn get(&self) -> &T {
        self.at(index())
    }

    /// Worker `worker`'s slot.
    pub fn at(&self, worker: usize) -> &T {
        &self.0[worker % SLOTS].0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_worker_has_its_own_slot() {
        let slots: PerWorker<std::sync::atomic::AtomicUsize> = PerWorker::default();
        let bump = |i: usize| {
            set(i);
            slots
                .get()
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        };
        assert_eq!(bump(0), 0);
        assert_eq!(bump(1), 0, "worker 1 does not see worker 0's slot");
        assert_eq!(bump(0), 1);
        assert_eq!(bump(SLOTS), 2, "workers beyond the slots share them");
        set(0);
    }
}
