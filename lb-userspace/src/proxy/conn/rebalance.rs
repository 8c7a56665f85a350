//! Moves kept-alive connections off a worker whose connections are served
//! more slowly than another worker's.
//!
//! A connection lives on one worker, and [`super::spread`] keeps the counts even
//! at accept. Even counts are not even service, though: a worker can get
//! less of its CPU than the others (other threads on that core, or a host
//! that runs the core slower), and every request on it then waits longer:
//! under wrk, pinned workers with 32 connections each served up to twice as
//! many requests as each other, and the slower one's connections made the
//! p99.
//!
//! So once per [`PERIOD`] one worker compares, per listener, the requests
//! each worker's connections got through, per connection that was busy in
//! the period, averaged over about a second. A worker whose pace falls
//! below [`SLOWER`] of the fastest worker's is told to pass some of its
//! connections to it: each one goes at its next quiet moment (a response
//! written, nothing unread), so no request is in flight and none is lost;
//! the client sees nothing. It keeps a few, to be measured by. Under light
//! load every connection's pace is its client's, the workers look alike,
//! and nothing moves.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::worker::PerWorker;

/// How often the workers' paces are compared.
pub const PERIOD: Duration = Duration::from_millis(100);

/// Requests per period, over all workers, below which nothing moves: too
/// few to tell paces apart, and at that load requests hardly queue.
const MIN_REQUESTS: f64 = 200.0;

/// Busy connections a worker needs per period to be compared: with fewer,
/// its pace is its clients'.
const MIN_BUSY: f64 = 4.0;

/// A worker whose requests per busy connection fall below this share of the
/// fastest worker's gives connections to it. Under wrk on two shared cores
/// the workers' averaged paces wander 10-20% apart and back within seconds,
/// whichever way the connections are spread: no worker is the bottleneck
/// there, and moving connections would only chase that.
const SLOWER: f64 = 0.75;

/// Weight of the newest period in the running averages that are compared.
/// Under load a worker's pace swings by a fifth or more from one period to
/// the next (the scheduler runs each worker in bursts), while an imbalance
/// worth fixing lasts seconds.
const NEWEST: f64 = 0.1;

/// Per listener: what its workers served and what each is to give away.
#[derive(Debug, Default)]
pub struct Load {
    /// Requests served, per worker, ever.
    served: PerWorker<AtomicU64>,
    /// Connections that served a request in the current period, per worker.
    busy: PerWorker<AtomicU64>,
    /// Bumped at every period, so that a connection counts itself busy once
    /// per period.
    period: AtomicU64,
    /// Connections a worker is to pass on: the receiving worker in the high
    /// half, how many are left to go in the low half.
    moves: PerWorker<AtomicU64>,
    /// Connections each worker passed on, ever (a metric).
    moved: PerWorker<AtomicU64>,
}

/// One connection's view of its listener's [`Load`], on the worker that
/// serves it.
pub struct ConnLoad<'a> {
    load: &'a Load,
    worker: usize,
    /// The last period in which this connection counted itself busy.
    counted: u64,
    /// Whether it can change workers at all: a TLS session's state lives
    /// in its task, not in the socket.
    movable: bool,
}

impl Load {
    pub fn conn(&self, worker: usize) -> ConnLoad<'_> {
        ConnLoad {
            load: self,
            worker,
            counted: u64::MAX,
            movable: true,
        }
    }

    /// A connection that counts its requests but stays on `worker`.
    pub fn pinned_conn(&self, worker: usize) -> ConnLoad<'_> {
        ConnLoad {
            movable: false,
            ..self.conn(worker)
        }
    }

    /// Connections `worker` has passed on to other workers.
    pub fn moved(&self, worker: usize) -> u64 {
        self.moved.at(worker).load(Relaxed)
    }
}

impl ConnLoad<'_> {
    /// One more request served on this connection.
    pub fn served(&mut self) {
        let l = self.load;
        // Only this worker writes its slots: no read-modify-write needed.
        let served = l.served.at(self.worker);
        served.store(served.load(Relaxed) + 1, Relaxed);
        let period = l.period.load(Relaxed);
        if period != self.counted {
            self.counted = period;
            l.busy.at(self.worker).fetch_add(1, Relaxed);
        }
    }

    /// The worker this connection should move to now, if its worker was
    /// told to give connections away; counts the move as done.
    pub fn take_move(&self) -> Option<usize> {
        let slot = self.load.moves.at(self.worker);
        if !self.movable || slot.load(Relaxed) & 0xffff_ffff == 0 {
            return None;
        }
        let before = slot
            .fetch_update(Relaxed, Relaxed, |m| (m & 0xffff_ffff != 0).then(|| m - 1))
            .ok()?;
        self.load.moved.at(self.worker).fetch_add(1, Relaxed);
        Some((before >> 32) as usize)
    }
}

/// The comparison, run by one worker each [`PERIOD`].
pub struct PaceComparator {
    workers: usize,
    /// Each worker's `served` at the last period.
    last: Vec<u64>,
    /// Running averages per worker of requests served and of busy
    /// connections per period; empty before the first period.
    served: Vec<f64>,
    busy: Vec<f64>,
}

impl PaceComparator {
    pub fn new(workers: usize) -> Self {
        Self {
            workers,
            last: vec![0; workers],
            served: Vec::new(),
            busy: Vec::new(),
        }
    }

    /// Ends a period: compares the workers' paces and tells the slow ones
    /// how many connections to pass on, and to whom. `open` is each
    /// worker's open connections now.
    pub fn tick(&mut self, load: &Load, open: &[usize]) {
        let first = self.served.is_empty();
        self.served.resize(self.workers, 0.0);
        self.busy.resize(self.workers, 0.0);
        for w in 0..self.workers {
            let now = load.served.at(w).load(Relaxed);
            let served = now.wrapping_sub(self.last[w]) as f64;
            self.last[w] = now;
            let busy = load.busy.at(w).swap(0, Relaxed) as f64;
            if first {
                (self.served[w], self.busy[w]) = (served, busy);
            } else {
                self.served[w] += NEWEST * (served - self.served[w]);
                self.busy[w] += NEWEST * (busy - self.busy[w]);
            }
        }
        load.period.fetch_add(1, Relaxed);
        for w in 0..self.workers {
            let keep = open.get(w).copied().unwrap_or(0);
            let m = plan(w, &self.busy, &self.served, keep)
                .map(|(to, n)| ((to as u64) << 32) | n as u64)
                .unwrap_or(0);
            load.moves.at(w).store(m, Relaxed);
        }
    }
}

/// For worker `me`, given each worker's busy connections and requests served
/// per period and the connections `me` holds: the worker to pass
/// connections to and how many, if `me`'s connections are served more
/// slowly than that worker's.
fn plan(me: usize, busy: &[f64], served: &[f64], open: usize) -> Option<(usize, usize)> {
    let total: f64 = served.iter().sum();
    if total < MIN_REQUESTS || busy[me] < MIN_BUSY {
        return None;
    }
    let pace = |w: usize| served[w] / busy[w].max(1.0);
    let fastest = (0..busy.len())
        .filter(|&w| w != me && busy[w] >= 1.0)
        .max_by(|&a, &b| pace(a).total_cmp(&pace(b)))?;
    if pace(me) >= SLOWER * pace(fastest) {
        return None;
    }
    // A worker kept busy serves about as many requests whatever its number
    // of connections, so even waits need connections in proportion to what
    // each serves. An eighth of the surplus goes per period: the averages
    // take several periods to show what a move did.
    let all_busy: f64 = busy.iter().sum();
    let fair = all_busy * served[me] / total;
    let surplus = busy[me] - fair;
    let n = ((surplus / 8.0) as usize).clamp(1, (busy[me] as usize / 4).max(1));
    // A worker keeps a few, so that its pace stays known: once it is fast
    // again (the other process on its CPU has gone) connections come back.
    let n = n.min(open.saturating_sub(MIN_BUSY as usize));
    (n > 0).then_some((fastest, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_behind_the_fastest_passes_part_of_its_surplus_to_it() {
        // 32 busy connections each; worker 1 serves half of worker 0's
        // requests: even waits want 64 * 1/3 = 21 on worker 1, 11 fewer;
        // an eighth of that now, at least one.
        assert_eq!(plan(1, &[32.0, 32.0], &[4000.0, 2000.0], 64), Some((0, 1)));
        assert_eq!(
            plan(0, &[32.0, 32.0], &[4000.0, 2000.0], 64),
            None,
            "the faster keeps its own"
        );
        // 64 each, 8:1: fair is 14, the surplus 50, so 6 now.
        assert_eq!(plan(1, &[64.0, 64.0], &[8000.0, 1000.0], 64), Some((0, 6)));
        // Three workers: to the fastest one.
        assert_eq!(
            plan(0, &[20.0, 20.0, 20.0], &[1000.0, 3000.0, 2000.0], 64),
            Some((1, 1))
        );
    }

    #[test]
    fn nothing_moves_when_paces_are_close_or_the_load_is_light() {
        assert_eq!(
            plan(1, &[32.0, 32.0], &[4000.0, 3100.0], 64),
            None,
            "within 25%"
        );
        assert_eq!(
            plan(1, &[32.0, 32.0], &[150.0, 40.0], 64),
            None,
            "light load"
        );
        assert_eq!(
            plan(1, &[40.0, 3.0], &[4000.0, 10.0], 64),
            None,
            "too few busy to judge"
        );
        assert_eq!(
            plan(0, &[8.0, 0.0], &[4000.0, 0.0], 64),
            None,
            "nobody busy to compare with"
        );
    }

    #[test]
    fn a_worker_keeps_a_few_connections_to_be_measured_by() {
        // 64 busy each, 16:1: seven should go now.
        let (busy, served) = (&[64.0, 64.0], &[8000.0, 500.0]);
        assert_eq!(plan(1, busy, served, 64), Some((0, 7)));
        assert_eq!(plan(1, busy, served, 6), Some((0, 2)));
        assert_eq!(plan(1, busy, served, 4), None);
    }

    #[test]
    fn busy_connections_count_not_idle_ones() {
        // Worker 0 holds more busy connections at the same pace per
        // connection: nothing to fix.
        assert_eq!(plan(0, &[30.0, 10.0], &[6000.0, 2000.0], 64), None);
        // Worker 0 serves as much as worker 1 but over three times the
        // busy connections: each waits three times as long.
        assert_eq!(plan(0, &[30.0, 10.0], &[3000.0, 3000.0], 64), Some((1, 1)));
    }

    /// One period: connection i serves `per_conn[i]` requests.
    fn period(conns: &mut [ConnLoad<'_>], per_conn: impl Fn(usize) -> u32) {
        for (i, c) in conns.iter_mut().enumerate() {
            for _ in 0..per_conn(i) {
                c.served();
            }
        }
    }

    #[test]
    fn the_comparator_hands_out_moves_that_connections_take_once_each() {
        let load = Load::default();
        let mut pace = PaceComparator::new(2);
        // Worker 0's four connections each serve 200 requests; worker 1's
        // four, 100 each.
        let mut conns: Vec<ConnLoad<'_>> = (0..8).map(|i| load.conn(i / 4)).collect();
        period(&mut conns, |i| if i < 4 { 200 } else { 100 });
        pace.tick(&load, &[8, 8]);
        assert_eq!(conns[4].take_move(), Some(0));
        assert_eq!(conns[5].take_move(), None, "one move only");
        assert_eq!(conns[0].take_move(), None);
        assert_eq!((load.moved(0), load.moved(1)), (0, 1));
        // Quiet from now on: nothing moves.
        pace.tick(&load, &[8, 8]);
        assert_eq!(conns[6].take_move(), None);
    }

    #[test]
    fn a_slow_period_is_noise_and_a_slow_spell_is_not() {
        let load = Load::default();
        let mut pace = PaceComparator::new(2);
        let mut conns: Vec<ConnLoad<'_>> = (0..16).map(|i| load.conn(i / 8)).collect();
        for _ in 0..10 {
            period(&mut conns, |_| 100);
            pace.tick(&load, &[8, 8]);
        }
        // Worker 1 gets half as far in one period: the average barely moves.
        period(&mut conns, |i| if i < 8 { 100 } else { 50 });
        pace.tick(&load, &[8, 8]);
        assert_eq!(conns[8].take_move(), None);
        // It stays that slow: within a few periods it gives connections away.
        let mut moved_after = None;
        for p in 1..=10 {
            period(&mut conns, |i| if i < 8 { 100 } else { 50 });
            pace.tick(&load, &[8, 8]);
            if conns[8].take_move() == Some(0) {
                moved_after = Some(p);
                break;
            }
        }
        assert!(matches!(moved_after, Some(4..=8)), "{moved_after:?}");
    }
}
