//! Which row of the XDP counters each balancer uses, by name, kept across
//! reloads: a balancer's counters stay its own when others are added, removed
//! or reordered. A name new to a reload takes the lowest free row, which the
//! daemon zeroes first (it may hold a removed balancer's counts).
//!
//! A row freed by a reload is not handed out by that same reload: until the
//! flip and the wait that follows it, packets under the old bank still count
//! the removed balancer into it. One reload later nothing does, and it is
//! free again. Only when every row is taken does a new balancer get a row
//! freed by the same reload, at the cost of a few stray counts.

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

    /// The rows a previous process recorded with its pinned maps, to go on
    /// from: balancers it served keep their rows. Rows out of range or
    /// recorded twice are left out.
    pub fn from_rows(rows: impl IntoIterator<Item = (String, u32)>) -> Self {
        let mut by_name = BTreeMap::new();
        for (name, row) in rows {
            if row < lb_common::MAX_LBS && !by_name.values().any(|r| *r == row) {
                by_name.insert(name, row);
            }
        }
        Self { by_name }
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
        let rows = lb_common::MAX_LBS;
        for n in names {
            if by_name.contains_key(n) {
                continue;
            }
            let free = |r: &u32| !by_name.values().any(|used| used == r);
            let quiet = |r: &u32| !self.by_name.values().any(|used| used == r);
            let row = (0..rows)
                .find(|r| free(r) && quiet(r))
                .or_else(|| (0..).find(free))
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
        // Reordered, "b" removed, "d" added: b's row still counts b's
        // packets under the old bank, so "d" takes a row nobody used;
        // reported as newly taken (to be zeroed).
        let (s, taken) = s.next(["c", "d", "a"]);
        assert_eq!(s.row("a"), Some(0));
        assert_eq!(s.row("c"), Some(2));
        assert_eq!(s.row("d"), Some(3));
        assert_eq!(s.row("b"), None);
        assert_eq!(taken, [3]);
        // Nothing new: nothing taken, nothing moves.
        let (again, taken) = s.next(["a", "c", "d"]);
        assert_eq!(again, s);
        assert!(taken.is_empty());
        // One reload later b's row is quiet, and the lowest free one.
        let (s, taken) = s.next(["a", "c", "d", "e"]);
        assert_eq!((s.row("e"), taken), (Some(1), vec![1]));
    }

    #[test]
    fn a_restart_goes_on_from_the_recorded_rows() {
        let before = LbSlots::from_rows([
            ("b".to_string(), 1),
            ("gone".to_string(), 0),
            ("dup".to_string(), 1),
            ("far".to_string(), lb_common::MAX_LBS),
        ]);
        assert_eq!(before.rows(), [(0, "gone".into()), (1, "b".into())]);
        // "b" keeps its row; "new" avoids the row "gone" counted into under
        // the bank still active.
        let (s, taken) = before.next(["new", "b"]);
        assert_eq!((s.row("b"), s.row("new")), (Some(1), Some(2)));
        assert_eq!(taken, [2]);
    }

    #[test]
    fn with_every_row_taken_a_freed_row_is_reused_at_once() {
        let names: Vec<String> = (0..lb_common::MAX_LBS).map(|i| format!("lb{i}")).collect();
        let s = LbSlots::fresh(names.iter().map(String::as_str));
        let mut next: Vec<&str> = names[1..].iter().map(String::as_str).collect();
        next.push("new");
        let (s, taken) = s.next(next);
        assert_eq!((s.row("new"), taken), (Some(0), vec![0]));
    }
}
