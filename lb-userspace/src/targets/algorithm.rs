//! Selection over a group's usable targets, honouring weights.
//!
//! The usable set is snapshotted together with whatever the algorithm can
//! precompute over it, and the snapshot is rebuilt only when the group's
//! generation (bumped by every usable flip) moves. A pick then costs:
//! - round_robin: one atomic increment and an index into the unrolled smooth
//!   weighted round robin period (nginx's algorithm); groups whose period is too
//!   long to unroll run nginx's step under a mutex instead, with the same output;
//! - least_outstanding_requests: one scan of the usable targets' counters;
//! - weighted_random: one random draw and a binary search.
//!
//! Picks never allocate. Excluding targets (a retry after a refused connection)
//! makes a pick walk past them, still never allocating.

use std::cmp::Ordering as Cmp;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::{ArcSwap, Cache};

use super::group::TargetState;
use crate::config::model::Algorithm;
use crate::worker::PerWorker;

/// Largest `period × members` worth unrolling: about 1 ms to build, at most
/// 4 MiB, and it covers ten targets of any weights or a thousand of weight 1.
const UNROLL_BUDGET: u64 = 1 << 20;

/// A usable target as the selector sees it.
#[derive(Clone, Copy, Debug)]
struct Member {
    /// Index into the group's targets.
    index: usize,
    /// At least 1.
    weight: u32,
}

/// Chooses among a group's usable targets; owns the current [`Snapshot`].
#[derive(Debug)]
pub(crate) struct Selector {
    algorithm: Algorithm,
    unroll_budget: u64,
    snapshot: Arc<ArcSwap<Snapshot>>,
    /// Taken by whoever rebuilds the snapshot, so that an older one never
    /// replaces a newer.
    rebuild: Mutex<()>,
    /// Each worker's cached reference to the newest snapshot, on a cache
    /// line of its own: a pick locks only its worker's copy and checks it
    /// with one load of a pointer written only on a rebuild.
    local: PerWorker<Mutex<SnapshotCache>>,
}

type SnapshotCache = Cache<Arc<ArcSwap<Snapshot>>, Arc<Snapshot>>;

impl Selector {
    pub(crate) fn new(algorithm: Algorithm, targets: &[Arc<TargetState>], generation: u64) -> Self {
        Self::with_budget(algorithm, targets, generation, UNROLL_BUDGET)
    }

    fn with_budget(
        algorithm: Algorithm,
        targets: &[Arc<TargetState>],
        generation: u64,
        unroll_budget: u64,
    ) -> Self {
        let snapshot = Snapshot::build(algorithm, targets, generation, unroll_budget);
        let snapshot = Arc::new(ArcSwap::from_pointee(snapshot));
        Selector {
            algorithm,
            unroll_budget,
            local: PerWorker::new(|| Mutex::new(Cache::new(Arc::clone(&snapshot)))),
            snapshot,
            rebuild: Mutex::new(()),
        }
    }

    /// Runs `f` over a snapshot at least as new as `generation`, rebuilding
    /// first when it is older. A snapshot is never replaced by an older one, so
    /// racing readers cannot make it flap.
    pub(crate) fn with_snapshot<R>(
        &self,
        targets: &[Arc<TargetState>],
        generation: u64,
        f: impl FnOnce(&Snapshot) -> R,
    ) -> R {
        let mut local = self
            .local
            .get()
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if local.load().generation < generation {
            self.rebuild(targets, generation);
        }
        f(local.load())
    }

    /// Replaces the shared snapshot with one of `generation`, unless one at
    /// least as new is there.
    fn rebuild(&self, targets: &[Arc<TargetState>], generation: u64) {
        let _rebuilding = self.rebuild.lock().unwrap_or_else(PoisonError::into_inner);
        if self.snapshot.load().generation < generation {
            self.snapshot.store(Arc::new(Snapshot::build(
                self.algorithm,
                targets,
                generation,
                self.unroll_budget,
            )));
        }
    }
}

/// The usable set at one generation, plus the algorithm's precomputation.
#[derive(Debug)]
pub(crate) struct Snapshot {
    generation: u64,
    members: Vec<Member>,
    /// Indexed by target index: is the target in `members`?
    in_set: Vec<bool>,
    /// No target was usable, so every target is in the set (ALB fails open).
    fail_open: bool,
    plan: Plan,
}

#[derive(Debug)]
enum Plan {
    /// One period of smooth weighted round robin, as target indices; `next`
    /// counts picks.
    Unrolled {
        order: Vec<usize>,
        next: AtomicUsize,
    },
    /// Nginx's step with its per-member current weights, for long periods.
    Stepwise {
        current: Mutex<Vec<i64>>,
    },
    LeastOutstanding,
    /// Running sums of member weights, for a binary search.
    WeightedRandom {
        cumulative: Vec<u32>,
    },
}

impl Snapshot {
    fn build(
        algorithm: Algorithm,
        targets: &[Arc<TargetState>],
        generation: u64,
        unroll_budget: u64,
    ) -> Snapshot {
        let member = |t: &Arc<TargetState>| Member {
            index: t.index(),
            weight: t.effective_weight(),
        };
        let mut members: Vec<Member> = targets
            .iter()
            .filter(|t| t.is_usable())
            .map(member)
            .collect();
        let fail_open = members.is_empty() && !targets.is_empty();
        if fail_open {
            members = targets.iter().map(member).collect();
        }
        let mut in_set = vec![false; targets.len()];
        for m in &members {
            in_set[m.index] = true;
        }
        let plan = match algorithm {
            Algorithm::RoundRobin => round_robin_plan(&members, unroll_budget),
            Algorithm::LeastOutstandingRequests => Plan::LeastOutstanding,
            Algorithm::WeightedRandom => Plan::WeightedRandom {
                cumulative: members
                    .iter()
                    .scan(0u32, |sum, m| {
                        *sum += m.weight;
                        Some(*sum)
                    })
                    .collect(),
            },
        };
        Snapshot {
            generation,
            members,
            in_set,
            fail_open,
            plan,
        }
    }

    /// Whether target `index` may be picked (usable, or failing open).
    pub(crate) fn contains(&self, index: usize) -> bool {
        self.in_set.get(index).copied().unwrap_or(false)
    }

    pub(crate) fn fail_open(&self) -> bool {
        self.fail_open
    }

    /// A target index from the set, never one in `exclude`; `None` when the
    /// set is empty or entirely excluded.
    pub(crate) fn select(&self, targets: &[Arc<TargetState>], exclude: &[usize]) -> Option<usize> {
        if !self.members.iter().any(|m| !exclude.contains(&m.index)) {
            return None;
        }
        match &self.plan {
            Plan::Unrolled { order, next } => {
                let start = next.fetch_add(1, Ordering::Relaxed) % order.len();
                // The walk ends: some member is not excluded, and every member
                // appears in a period.
                order[start..]
                    .iter()
                    .chain(&order[..start])
                    .copied()
                    .find(|i| !exclude.contains(i))
            }
            Plan::Stepwise { current } => {
                let mut current = current.lock().unwrap_or_else(PoisonError::into_inner);
                swrr_step(&self.members, &mut current, exclude).map(|pos| self.members[pos].index)
            }
            Plan::LeastOutstanding => least_outstanding(&self.members, targets, exclude),
            Plan::WeightedRandom { cumulative } => {
                weighted_random(&self.members, cumulative, exclude)
            }
        }
    }
}

/// Unrolls one period when it fits the budget. Weights are divided by their
/// gcd first: scaling every weight scales every current weight, so the picks
/// are the same and the period shrinks.
fn round_robin_plan(members: &[Member], unroll_budget: u64) -> Plan {
    let g = members.iter().fold(0, |g, m| gcd(g, m.weight)).max(1);
    let reduced: Vec<Member> = members
        .iter()
        .map(|m| Member {
            index: m.index,
            weight: m.weight / g,
        })
        .collect();
    let period: u64 = reduced.iter().map(|m| u64::from(m.weight)).sum();
    if period * members.len() as u64 > unroll_budget {
        return Plan::Stepwise {
            current: Mutex::new(vec![0; members.len()]),
        };
    }
    let mut current = vec![0; reduced.len()];
    let order = (0..period)
        .filter_map(|_| swrr_step(&reduced, &mut current, &[]))
        .map(|pos| reduced[pos].index)
        .collect();
    Plan::Unrolled {
        order,
        next: AtomicUsize::new(0),
    }
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Nginx's smooth weighted round robin step over the members not excluded:
/// raise each current weight by its weight, take the largest (first on ties),
/// lower it by the total. Returns the position in `members`.
fn swrr_step(members: &[Member], current: &mut [i64], exclude: &[usize]) -> Option<usize> {
    let mut total = 0i64;
    let mut best: Option<usize> = None;
    for (pos, m) in members.iter().enumerate() {
        if exclude.contains(&m.index) {
            continue;
        }
        current[pos] += i64::from(m.weight);
        total += i64::from(m.weight);
        if best.is_none_or(|b| current[pos] > current[b]) {
            best = Some(pos);
        }
    }
    let best = best?;
    current[best] -= total;
    Some(best)
}

/// The member with the lowest `outstanding / weight`. Ties are broken at random
/// in proportion to weight (one-pass weighted reservoir sampling), so a lightly
/// loaded group, where everything ties at zero, still spreads by weight.
fn least_outstanding(
    members: &[Member],
    targets: &[Arc<TargetState>],
    exclude: &[usize],
) -> Option<usize> {
    // (index, outstanding, weight) of the current choice, and the tied weight.
    let mut best: Option<(usize, u64, u64)> = None;
    let mut tied = 0u64;
    for m in members.iter().filter(|m| !exclude.contains(&m.index)) {
        let load = u64::from(targets[m.index].outstanding());
        let weight = u64::from(m.weight);
        let order = match best {
            None => Cmp::Less,
            // load/weight vs best_load/best_weight, without division.
            Some((_, best_load, best_weight)) => (load * best_weight).cmp(&(best_load * weight)),
        };
        match order {
            Cmp::Less => {
                best = Some((m.index, load, weight));
                tied = weight;
            }
            Cmp::Equal => {
                tied += weight;
                if fastrand::u64(0..tied) < weight {
                    best = Some((m.index, load, weight));
                }
            }
            Cmp::Greater => {}
        }
    }
    best.map(|(index, _, _)| index)
}

/// A member drawn with probability proportional to its weight among those not
/// excluded.
fn weighted_random(members: &[Member], cumulative: &[u32], exclude: &[usize]) -> Option<usize> {
    if exclude.is_empty() {
        let total = *cumulative.last()?;
        let r = fastrand::u32(0..total);
        let pos = cumulative.partition_point(|&c| c <= r);
        return members.get(pos).map(|m| m.index);
    }
    let allowed = || members.iter().filter(|m| !exclude.contains(&m.index));
    let total: u32 = allowed().map(|m| m.weight).sum();
    if total == 0 {
        return None;
    }
    let mut r = fastrand::u32(0..total);
    for m in allowed() {
        if r < m.weight {
            return Some(m.index);
        }
        r -= m.weight;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targets::group::tests::group_of;
    use crate::targets::group::TargetGroupRuntime;

    #[test]
    fn unrolled_matches_stepwise() {
        // Weights with gcd 2, so the unrolled period is the reduced one.
        let weights = [10, 4, 4, 2];
        let g = group_of(Algorithm::RoundRobin, &weights);
        let unrolled = Selector::new(Algorithm::RoundRobin, g.targets(), 0);
        let stepwise = Selector::with_budget(Algorithm::RoundRobin, g.targets(), 0, 0);
        let run = |s: &Selector| -> Vec<usize> {
            (0..40)
                .map(|_| {
                    s.with_snapshot(g.targets(), 0, |snap| snap.select(g.targets(), &[]))
                        .unwrap()
                })
                .collect()
        };
        let a = run(&unrolled);
        assert!(matches!(
            unrolled.snapshot.load().plan,
            Plan::Unrolled { ref order, .. } if order.len() == 10
        ));
        assert!(matches!(
            stepwise.snapshot.load().plan,
            Plan::Stepwise { .. }
        ));
        assert_eq!(a, run(&stepwise));
        let counts = (0..4)
            .map(|i| a.iter().filter(|&&x| x == i).count())
            .collect::<Vec<_>>();
        assert_eq!(counts, [20, 8, 8, 4]);
    }

    #[test]
    fn nginx_example_sequence() {
        // From nginx's commit introducing smooth weighted round robin: 5,1,1
        // gives a a b a c a a.
        let g = group_of(Algorithm::RoundRobin, &[5, 1, 1]);
        let s = Selector::with_budget(Algorithm::RoundRobin, g.targets(), 0, 0);
        let seq: Vec<usize> = (0..7)
            .map(|_| {
                s.with_snapshot(g.targets(), 0, |snap| snap.select(g.targets(), &[]))
                    .unwrap()
            })
            .collect();
        assert_eq!(seq, [0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn stepwise_exclude() {
        let g = group_of(Algorithm::RoundRobin, &[1, 1, 1]);
        let s = Selector::with_budget(Algorithm::RoundRobin, g.targets(), 0, 0);
        let pick =
            |ex: &[usize]| s.with_snapshot(g.targets(), 0, |snap| snap.select(g.targets(), ex));
        for _ in 0..10 {
            assert_eq!(pick(&[0, 2]), Some(1));
        }
        assert_eq!(pick(&[0, 1, 2]), None);
        let seen: Vec<usize> = (0..4).map(|_| pick(&[1]).unwrap()).collect();
        assert!(seen.iter().all(|&i| i != 1));
        assert!(seen.contains(&0) && seen.contains(&2));
    }

    #[test]
    fn a_period_is_unrolled_up_to_the_budget_and_no_further() {
        // Three targets of weight 1: a period of 3, 9 entries to unroll.
        let g = group_of(Algorithm::RoundRobin, &[1, 1, 1]);
        let plan =
            |budget| match Selector::with_budget(Algorithm::RoundRobin, g.targets(), 0, budget)
                .snapshot
                .load()
                .plan
            {
                Plan::Unrolled { ref order, .. } => Some(order.len()),
                Plan::Stepwise { .. } => None,
                _ => unreachable!("round robin has no other plan"),
            };
        assert_eq!(plan(9), Some(3));
        assert_eq!(plan(8), None);
    }

    /// Every target at the first step of slow start: its effective weight
    /// is its weight, not a thousand times it, so that a draw one off is
    /// a share visibly off.
    fn at_one_thousandth(g: &TargetGroupRuntime) {
        for t in g.targets() {
            t.set_ramp(1);
        }
        assert_eq!(
            g.targets()[0].effective_weight(),
            u32::from(g.config().targets[0].weight)
        );
    }

    /// How often each of `n` targets is picked in `picks` picks.
    fn counts(s: &Selector, g: &TargetGroupRuntime, exclude: &[usize], picks: usize) -> Vec<usize> {
        let mut seen = vec![0; g.targets().len()];
        for _ in 0..picks {
            let i = s
                .with_snapshot(g.targets(), 0, |snap| snap.select(g.targets(), exclude))
                .expect("a target is left to pick");
            seen[i] += 1;
        }
        seen
    }

    #[test]
    fn least_outstanding_ties_spread_by_weight() {
        fastrand::seed(7);
        // Nothing outstanding: every target ties, and each is picked in
        // proportion to its weight (2000 picks of 1:3, σ ≈ 19).
        let g = group_of(Algorithm::LeastOutstandingRequests, &[1, 3]);
        at_one_thousandth(&g);
        let s = Selector::new(Algorithm::LeastOutstandingRequests, g.targets(), 0);
        let seen = counts(&s, &g, &[], 2000);
        assert!((400..600).contains(&seen[0]), "{seen:?}");
    }

    #[test]
    fn weighted_random_draws_among_the_targets_left_by_weight() {
        fastrand::seed(7);
        let g = group_of(Algorithm::WeightedRandom, &[5, 1, 2, 4]);
        at_one_thousandth(&g);
        let s = Selector::new(Algorithm::WeightedRandom, g.targets(), 0);
        // Target 0 excluded: the others 1:2:4 of 2100 (σ ≤ 23).
        assert_near(&counts(&s, &g, &[0], 2100), &[0, 300, 600, 1200], 100);
        // Nothing excluded: 5:1:2:4 of 12000 (σ ≤ 54).
        assert_near(&counts(&s, &g, &[], 12000), &[5000, 1000, 2000, 4000], 250);
    }

    fn assert_near(seen: &[usize], expected: &[usize], within: usize) {
        for (s, e) in seen.iter().zip(expected) {
            assert!(
                s.abs_diff(*e) <= within,
                "{seen:?} is not near {expected:?}"
            );
        }
    }

    #[test]
    fn gcd_values() {
        assert_eq!(gcd(0, 5), 5);
        assert_eq!(gcd(12, 18), 6);
        assert_eq!(gcd(7, 1), 1);
    }

    #[test]
    fn a_worker_catching_up_takes_the_snapshot_another_built() {
        let g = group_of(Algorithm::RoundRobin, &[1, 1]);
        let s = Selector::new(Algorithm::RoundRobin, g.targets(), 0);
        let pick = |generation: u64| {
            s.with_snapshot(g.targets(), generation, |snap| {
                snap.select(g.targets(), &[])
            })
        };
        assert_eq!(pick(1), Some(0), "worker 0 rebuilds at generation 1");
        // Worker 1's cached snapshot is older: it takes the shared one,
        // whose round robin goes on.
        crate::worker::set(1);
        let next = pick(1);
        crate::worker::set(0);
        assert_eq!(next, Some(1));
    }

    #[test]
    fn a_newer_generation_rebuilds_and_an_older_one_does_not_go_back() {
        let g = group_of(Algorithm::RoundRobin, &[1, 1, 1]);
        let s = Selector::new(Algorithm::RoundRobin, g.targets(), 0);
        let members = |generation: u64| {
            s.with_snapshot(g.targets(), generation, |snap| {
                (
                    snap.generation,
                    (0..3).filter(|&i| snap.contains(i)).count(),
                )
            })
        };
        assert_eq!(members(0), (0, 3));
        g.targets()[1].set_usable(false);
        assert_eq!(members(0), (0, 3), "no newer generation asked for");
        assert_eq!(members(1), (1, 2));
        // Another worker sees the rebuild without asking for it.
        crate::worker::set(1);
        assert_eq!(members(0), (1, 2));
        crate::worker::set(0);
        g.targets()[1].set_usable(true);
        assert_eq!(members(2), (2, 3));
        assert_eq!(
            members(1),
            (2, 3),
            "an older generation keeps the newer snapshot"
        );
    }
}
