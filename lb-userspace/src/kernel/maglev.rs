//! Maglev consistent hashing (Eisenbud et al., NSDI 2016), the lookup table
//! a TCP listener's flows are spread by: the kernel hashes a flow to a slot,
//! and the slot names a target. Built here, in user space, from each target's
//! address and port, so that a target keeps its slots whatever the order
//! targets are listed in, and adding or removing one moves about 1/N of the
//! slots, not all of them.

use std::net::SocketAddr;

/// Slots in a table: a prime (Maglev needs one), about 160 times the
/// largest target group, so each target's share is within about 1% of its
/// weight's.
pub const TABLE_SIZE: u32 = 16381;

/// A target as the table sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub addr: SocketAddr,
    /// Relative share of the slots; 0 takes none.
    pub weight: u32,
}

/// Each slot's index into `targets` (as given), or an empty table when no
/// target has a weight.
pub fn table(targets: &[Entry], size: u32) -> Vec<u32> {
    let m = u64::from(size);
    // Visited in address order, so that the caller's order does not matter.
    let mut order: Vec<usize> = (0..targets.len())
        .filter(|&i| targets[i].weight > 0)
        .collect();
    order.sort_by_key(|&i| targets[i].addr);
    order.dedup_by_key(|i| targets[*i].addr);
    if order.is_empty() {
        return Vec::new();
    }
    // Both below the table size, which is a u32.
    let perm: Vec<(u32, u32)> = order
        .iter()
        .map(|&i| {
            let key = key_bytes(targets[i].addr);
            let offset = hash(&key, 0x6d61_676c_6576_0001) % m;
            let skip = hash(&key, 0x6d61_676c_6576_0002) % (m - 1) + 1;
            (offset as u32, skip as u32)
        })
        .collect();
    // A target takes a turn for every `max / weight` turns the heaviest
    // takes (credit in the heaviest target's units), so shares follow
    // weights.
    let max = order.iter().map(|&i| targets[i].weight).max().unwrap_or(1);
    let mut credit: Vec<u64> = vec![0; order.len()];
    let mut next: Vec<u64> = vec![0; order.len()];
    let mut slots: Vec<u32> = vec![u32::MAX; size as usize];
    let mut filled = 0u64;
    while filled < m {
        for (k, &i) in order.iter().enumerate() {
            credit[k] += u64::from(targets[i].weight);
            if credit[k] < u64::from(max) {
                continue;
            }
            credit[k] -= u64::from(max);
            let (offset, skip) = perm[k];
            // The target's next preferred slot that is still free.
            let slot = loop {
                let s = (u64::from(offset) + next[k] * u64::from(skip)) % m;
                next[k] += 1;
                if slots[s as usize] == u32::MAX {
                    break s;
                }
            };
            slots[slot as usize] = i as u32;
            filled += 1;
            if filled == m {
                break;
            }
        }
    }
    slots
}

/// The table to write in place of `previous`: `fresh`'s share of slots
/// for each target (so weights hold exactly as in `fresh`), with as many
/// slots as those shares allow left to the target that held them. Pure
/// Maglev moves a few percent of the others' slots besides the ones that
/// must move (16381 slots, 11 targets, one removed: 1,687 moved where
/// 1,489 had to); settled, removing a target moves its slots only, and
/// adding one moves only what it takes. Values are any target ids (rows);
/// slots of an id `fresh` does not have are given to those it has.
pub fn settle(fresh: &[u32], previous: &[u32]) -> Vec<u32> {
    if previous.len() != fresh.len() {
        return fresh.to_vec();
    }
    let mut quota: std::collections::HashMap<u32, usize> = std::collections::HashMap::new();
    for &id in fresh {
        *quota.entry(id).or_default() += 1;
    }
    let mut out: Vec<Option<u32>> = vec![None; fresh.len()];
    let mut take = |out: &mut Vec<Option<u32>>, s: usize, id: u32| {
        if let Some(q) = quota.get_mut(&id).filter(|q| **q > 0) {
            *q -= 1;
            out[s] = Some(id);
        }
    };
    // Slots both tables agree on first, so that a target over its share
    // gives up the slots Maglev would give away.
    for s in 0..fresh.len() {
        if fresh[s] == previous[s] {
            take(&mut out, s, fresh[s]);
        }
    }
    for s in 0..fresh.len() {
        if out[s].is_none() {
            take(&mut out, s, previous[s]);
        }
    }
    for s in 0..fresh.len() {
        if out[s].is_none() {
            take(&mut out, s, fresh[s]);
        }
    }
    // What is left: slots whose previous and fresh owners are both full,
    // for the targets still short, in id order.
    let mut short: Vec<(u32, usize)> = quota.into_iter().filter(|(_, q)| *q > 0).collect();
    short.sort_unstable();
    let mut short = short
        .into_iter()
        .flat_map(|(id, q)| std::iter::repeat_n(id, q));
    out.into_iter()
        .map(|o| o.or_else(|| short.next()).unwrap_or(u32::MAX))
        .collect()
}

fn key_bytes(addr: SocketAddr) -> Vec<u8> {
    let mut key = match addr.ip() {
        std::net::IpAddr::V4(a) => a.to_ipv6_mapped().octets().to_vec(),
        std::net::IpAddr::V6(a) => a.octets().to_vec(),
    };
    key.extend_from_slice(&addr.port().to_be_bytes());
    key
}

/// FNV-1a with a seed, finished by splitmix64: stable across processes and
/// versions (the table must not move when xalb restarts), and well mixed.
fn hash(bytes: &[u8], seed: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(n: u8) -> Vec<Entry> {
        (1..=n)
            .map(|i| Entry {
                addr: SocketAddr::from(([10, 231, 2, i], 8080)),
                weight: 1,
            })
            .collect()
    }

    fn shares(t: &[u32], n: usize) -> Vec<usize> {
        let mut c = vec![0; n];
        for &s in t {
            c[s as usize] += 1;
        }
        c
    }

    #[test]
    fn every_slot_names_a_target_and_equal_targets_get_equal_shares() {
        let ts = targets(5);
        let t = table(&ts, TABLE_SIZE);
        assert_eq!(t.len(), TABLE_SIZE as usize);
        let c = shares(&t, 5);
        let even = TABLE_SIZE as usize / 5;
        for n in &c {
            assert!(n.abs_diff(even) <= 1, "{c:?}");
        }
    }

    #[test]
    fn removing_a_target_moves_its_slots_and_few_others() {
        let ts = targets(10);
        let before = table(&ts, TABLE_SIZE);
        let fewer: Vec<Entry> = ts
            .iter()
            .copied()
            .filter(|e| e.addr.ip() != ts[3].addr.ip())
            .collect();
        let after = table(&fewer, TABLE_SIZE);
        let name = |tab: &[Entry], i: u32| tab[i as usize].addr;
        let mut moved_others = 0;
        for (b, a) in before.iter().zip(&after) {
            let (b, a) = (name(&ts, *b), name(&fewer, *a));
            if b != ts[3].addr && b != a {
                moved_others += 1;
            }
        }
        // Maglev trades a little disruption for evenness: a few percent of
        // the others' slots move, against 90% with a modulo hash.
        assert!(
            moved_others < TABLE_SIZE as usize * 5 / 100,
            "{moved_others} of the others' slots moved"
        );
    }

    #[test]
    fn the_listing_order_does_not_matter() {
        let ts = targets(7);
        let mut rev = ts.clone();
        rev.reverse();
        let a = table(&ts, TABLE_SIZE);
        let b = table(&rev, TABLE_SIZE);
        let names_a: Vec<SocketAddr> = a.iter().map(|&i| ts[i as usize].addr).collect();
        let names_b: Vec<SocketAddr> = b.iter().map(|&i| rev[i as usize].addr).collect();
        assert_eq!(names_a, names_b);
    }

    #[test]
    fn shares_follow_weights_and_weight_zero_takes_none() {
        let mut ts = targets(3);
        ts[0].weight = 1;
        ts[1].weight = 3;
        ts[2].weight = 0;
        let c = shares(&table(&ts, TABLE_SIZE), 3);
        assert_eq!(c[2], 0);
        let quarter = TABLE_SIZE as usize / 4;
        assert!(c[0].abs_diff(quarter) <= 2, "{c:?}");
        assert_eq!(c[0] + c[1], TABLE_SIZE as usize);
    }

    #[test]
    fn no_weighted_target_gives_an_empty_table() {
        assert!(table(&[], TABLE_SIZE).is_empty());
        let mut ts = targets(2);
        ts.iter_mut().for_each(|e| e.weight = 0);
        assert!(table(&ts, TABLE_SIZE).is_empty());
    }

    #[test]
    fn the_table_is_stable_across_builds() {
        // Pinned: a change here moves every flow when xalb is upgraded.
        assert_eq!(table(&targets(3), 13), GOLDEN);
    }

    const GOLDEN: [u32; 13] = [0, 2, 1, 0, 2, 0, 2, 1, 0, 0, 1, 2, 1];

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// `n` targets on distinct addresses drawn from `base`.
        fn spread(base: [u8; 3], weights: &[u32]) -> Vec<Entry> {
            weights
                .iter()
                .enumerate()
                .map(|(i, &weight)| Entry {
                    addr: SocketAddr::from((
                        [10, base[0], base[1], base[2].wrapping_add(i as u8)],
                        7000,
                    )),
                    weight,
                })
                .collect()
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]

            /// Each target's share of the slots is its weight's, within 2%
            /// (and a slot: the last round of turns is cut short).
            #[test]
            fn shares_follow_weights(base: [u8; 3], weights in proptest::collection::vec(1u32..=10, 1..=8)) {
                let ts = spread(base, &weights);
                let c = shares(&table(&ts, TABLE_SIZE), ts.len());
                let total: u32 = weights.iter().sum();
                for (i, w) in weights.iter().enumerate() {
                    let want = f64::from(TABLE_SIZE) * f64::from(*w) / f64::from(total);
                    prop_assert!(
                        (c[i] as f64 - want).abs() <= want * 0.02 + 1.0,
                        "target {i}: {} slots, want {want:.0} ({c:?}, weights {weights:?})", c[i]
                    );
                }
            }

            /// Removing one of N equal targets, the table settled on the
            /// one before, moves its own slots (about 1/N) and no other.
            /// (Pure Maglev, which xalb never installs, moves more by an
            /// amount no fixed bound holds: 3,618 slots of 16,381 with 5
            /// targets, against a share of 3,276, in a CI run.)
            #[test]
            fn removing_a_target_moves_about_its_share(base: [u8; 3], n in 2usize..=12, gone in 0usize..12) {
                let gone = gone % n;
                let ts = spread(base, &vec![1; n]);
                let fewer: Vec<Entry> = ts.iter().enumerate().filter(|(i, _)| *i != gone).map(|(_, e)| *e).collect();
                // Ids as the kernel sees them: index into `ts` (rows).
                let before = table(&ts, TABLE_SIZE);
                let ids_of_fewer: Vec<u32> = (0..n as u32).filter(|i| *i != gone as u32).collect();
                let fresh: Vec<u32> = table(&fewer, TABLE_SIZE).iter().map(|&i| ids_of_fewer[i as usize]).collect();
                let moved = |after: &[u32]| before.iter().zip(after).filter(|(b, a)| b != a).count();
                let share = TABLE_SIZE as f64 / n as f64;
                let settled = settle(&fresh, &before);
                let own = before.iter().filter(|b| **b == gone as u32).count();
                prop_assert_eq!(moved(&settled), own, "only the removed target's slots move");
                prop_assert!((own as f64) <= share + 1.0 + TABLE_SIZE as f64 * 0.01);
                // The weights hold exactly as in the fresh table.
                prop_assert_eq!(shares(&settled, n), shares(&fresh, n));
            }

            /// Adding a target to N moves at most its share (1/(N+1)) and
            /// keeps the fresh table's shares.
            #[test]
            fn adding_a_target_moves_only_its_share(base: [u8; 3], n in 1usize..=11) {
                let ts = spread(base, &vec![1; n + 1]);
                let before = table(&ts[..n], TABLE_SIZE);
                let fresh = table(&ts, TABLE_SIZE);
                let settled = settle(&fresh, &before);
                let moved = before.iter().zip(&settled).filter(|(b, a)| b != a).count();
                let new_share = shares(&fresh, n + 1)[n];
                prop_assert_eq!(moved, new_share);
                prop_assert_eq!(shares(&settled, n + 1), shares(&fresh, n + 1));
            }

            /// The same targets in any order give the same table.
            #[test]
            fn the_order_does_not_matter(base: [u8; 3], weights in proptest::collection::vec(1u32..=4, 1..=6), seed: u64) {
                let ts = spread(base, &weights);
                let mut shuffled = ts.clone();
                let mut x = seed | 1;
                for i in (1..shuffled.len()).rev() {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    shuffled.swap(i, (x % (i as u64 + 1)) as usize);
                }
                let a: Vec<SocketAddr> = table(&ts, TABLE_SIZE).iter().map(|&i| ts[i as usize].addr).collect();
                let b: Vec<SocketAddr> = table(&shuffled, TABLE_SIZE).iter().map(|&i| shuffled[i as usize].addr).collect();
                prop_assert_eq!(a, b);
            }
        }
    }
}
