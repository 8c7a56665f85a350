//! Which data-plane worker the current thread is. Each worker runs its own
//! single-threaded runtime; state kept per worker (upstream pools, metric
//! stripes) is indexed by this, so workers never share a hot cache line.

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
