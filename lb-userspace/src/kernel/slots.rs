//! Which row of the XDP counters each balancer uses, by name, kept across
//! reloads: a balancer's counters stay its own when others are added, removed
//! or reordered. A name new to a reload takes the lowest free row, which the
//! daemon zeroes first (it may hold a removed balancer's counts).

use std::collections::BTreeMap;

use crate::config::model::Config;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LbSlots {
    by_name: BTreeMap<String, u32>,
}

impl LbSlots {
    /// Rows in the order of `names` (the configuration's), for a fresh start.
    pub fn fresh<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        Self::default().next(names).0
    }

    /// Rows in configuration order, for a fresh start.
    pub fn for_config(cfg: &Config) -> Self {
        Self::fresh(cfg.load_balancers.iter().map(|lb| lb.name.as_str()))
    }

    /// The rows for the balancers `names` after these: names already here
    /// keep theirs, new ones take the lowest free rows. Also the rows newly
    /// taken.
    pub fn next<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> (Self, Vec<u32>) {
        let names: Vec<&str> = names.into_iter().collect();
        let mut by_name: BTreeMap<String, u32> = names
            .iter()
            .filter_map(|&n| Some((n.to_string(), *self.by_name.get(n)?)))
            .collect();
        let mut taken = Vec::new();
        let mut candidates = 0u32..;
        for n in names {
            if by_name.contains_key(n) {
                continue;
            }
            let row = candidates
                .find(|r| !by_name.values().any(|used| used == r))
                .expect("fewer balancers than u32 rows");
            by_name.insert(n.to_string(), row);
            taken.push(row);
        }
        (Self { by_name }, taken)
    }

    pub fn row(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).copied()
    }

    /// (row, balancer name), by row.
    pub fn rows(&self) -> Vec<(u32, String)> {
        let mut rows: Vec<(u32, String)> =
            self.by_name.iter().map(|(n, &r)| (r, n.clone())).collect();
        rows.sort();
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_start_numbers_in_order() {
        let s = LbSlots::fresh(["a", "b", "c"]);
        assert_eq!(
            s.rows(),
            [(0, "a".into()), (1, "b".into()), (2, "c".into())]
        );
    }

    #[test]
    fn balancers_keep_their_rows_and_new_ones_fill_the_gaps() {
        let s = LbSlots::fresh(["a", "b", "c"]);
        // Reordered, "b" removed, "d" added: "d" takes b's row, which is reported
        // as newly taken (to be zeroed).
        let (s, taken) = s.next(["c", "d", "a"]);
        assert_eq!(s.row("a"), Some(0));
        assert_eq!(s.row("c"), Some(2));
        assert_eq!(s.row("d"), Some(1));
        assert_eq!(s.row("b"), None);
        assert_eq!(taken, [1]);
        // Nothing new: nothing taken, nothing moves.
        let (again, taken) = s.next(["a", "c", "d"]);
        assert_eq!(again, s);
        assert!(taken.is_empty());
    }
}
