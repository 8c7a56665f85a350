//! Which row of the XDP counters each balancer uses, by name, kept across
//! reloads: a balancer's counters stay its own when others are added, removed
//! or reordered. A name new to a reload takes the lowest free row, which the
//! daemon zeroes first (it may hold a removed balancer's counts). Listeners
//! have rows of their own the same way ([`ListenerRows`]).
//!
//! A row freed by a reload is not handed out by that same reload: until the
//! flip and the wait that follows it, packets under the old bank still count
//! the removed balancer into it. One reload later nothing does, and it is
//! free again. Only when every row is taken does a new balancer get a row
//! freed by the same reload, at the cost of a few stray counts.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::config::model::Config;

/// Rows of a kernel table by key, with a freed row quiet for one reload.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Rows<K> {
    by_key: BTreeMap<K, u32>,
}

impl<K> Default for Rows<K> {
    fn default() -> Self {
        Self {
            by_key: BTreeMap::new(),
        }
    }
}

impl<K: Ord + Clone> Rows<K> {
    /// The rows for `keys` after these, out of `0..rows`: keys already here
    /// keep theirs, new ones take the lowest free row that no key held
    /// before this call (else the lowest free one). Also the rows newly
    /// taken.
    fn next(&self, keys: impl IntoIterator<Item = K>, rows: u32) -> (Self, Vec<u32>) {
        let keys: Vec<K> = keys.into_iter().collect();
        let mut by_key: BTreeMap<K, u32> = keys
            .iter()
            .filter_map(|k| Some((k.clone(), *self.by_key.get(k)?)))
            .collect();
        let mut taken = Vec::new();
        for k in keys {
            if by_key.contains_key(&k) {
                continue;
            }
            let free = |r: &u32| !by_key.values().any(|used| used == r);
            let quiet = |r: &u32| !self.by_key.values().any(|used| used == r);
            let row = (0..rows)
                .find(|r| free(r) && quiet(r))
                .or_else(|| (0..).find(free))
                .expect("fewer keys than u32 rows");
            by_key.insert(k, row);
            taken.push(row);
        }
        (Self { by_key }, taken)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LbSlots {
    rows: Rows<String>,
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
        let mut by_key = BTreeMap::new();
        for (name, row) in rows {
            if row < lb_common::MAX_LBS && !by_key.values().any(|r| *r == row) {
                by_key.insert(name, row);
            }
        }
        Self {
            rows: Rows { by_key },
        }
    }

    /// Rows in configuration order, for a fresh start.
    pub fn for_config(cfg: &Config) -> Self {
        Self::fresh(cfg.load_balancers.iter().map(|lb| lb.name.as_str()))
    }

    /// The rows for the balancers `names` after these: names already here
    /// keep theirs, new ones take the lowest free rows. Also the rows newly
    /// taken.
    pub fn next<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> (Self, Vec<u32>) {
        let (rows, taken) = self
            .rows
            .next(names.into_iter().map(str::to_string), lb_common::MAX_LBS);
        (Self { rows }, taken)
    }

    pub fn row(&self, name: &str) -> Option<u32> {
        self.rows.by_key.get(name).copied()
    }

    /// (row, balancer name), by row.
    pub fn rows(&self) -> Vec<(u32, String)> {
        let mut rows: Vec<(u32, String)> = self
            .rows
            .by_key
            .iter()
            .map(|(n, &r)| (r, n.clone()))
            .collect();
        rows.sort();
        rows
    }
}

/// Which row of the listener counters, and so which `SOCKS` slots
/// ([`lb_common::sock_slot`]), each steered listener (balancer, port) uses,
/// kept across reloads like [`LbSlots`]. A row freed by a reload waits one
/// more: until the wait after the flip, the old bank still sends the
/// removed listener's connections to its slots, which must not hold another
/// listener's sockets by then (only with every row taken is one reused at
/// once).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListenerRows {
    rows: Rows<(String, u16)>,
}

impl ListenerRows {
    /// The listeners the kernel knows: HTTP and HTTPS ones, which it steers
    /// to the daemon's sockets, and TCP ones, which it forwards itself.
    pub fn steered(cfg: &Config) -> impl Iterator<Item = (String, u16)> + '_ {
        cfg.listeners
            .iter()
            .map(|l| (l.load_balancer.clone(), l.port))
    }

    /// The rows a predecessor recorded, as (row, balancer, port).
    pub fn from_rows(rows: impl IntoIterator<Item = (u32, String, u16)>) -> Self {
        Self {
            rows: Rows {
                by_key: rows
                    .into_iter()
                    .map(|(r, lb, port)| ((lb, port), r))
                    .collect(),
            },
        }
    }

    /// The rows for `cfg`'s steered listeners after these, and the rows
    /// newly taken.
    pub fn next(&self, cfg: &Config) -> (Self, Vec<u32>) {
        let (rows, taken) = self.rows.next(Self::steered(cfg), lb_common::MAX_LISTENERS);
        (Self { rows }, taken)
    }

    pub fn row(&self, lb: &str, port: u16) -> Option<u32> {
        self.rows.by_key.get(&(lb.to_string(), port)).copied()
    }

    /// (row, balancer, port), by row.
    pub fn rows(&self) -> Vec<(u32, String, u16)> {
        let mut rows: Vec<(u32, String, u16)> = self
            .rows
            .by_key
            .iter()
            .map(|((lb, port), &r)| (r, lb.clone(), *port))
            .collect();
        rows.sort();
        rows
    }
}

/// Which row of `TARGETS` (and of the target counters) each forwarding
/// target (group, address and port) uses, kept across reloads like
/// [`LbSlots`]: a flow records its target's row, so a row stays its
/// target's while the target stays (draining included).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TargetRows {
    rows: Rows<(String, SocketAddr)>,
}

impl TargetRows {
    /// The rows for `targets` after these, and the rows newly taken.
    pub fn next(
        &self,
        targets: impl IntoIterator<Item = (String, SocketAddr)>,
    ) -> (Self, Vec<u32>) {
        let (rows, taken) = self.rows.next(targets, lb_common::MAX_TARGETS);
        (Self { rows }, taken)
    }

    pub fn row(&self, group: &str, addr: SocketAddr) -> Option<u32> {
        self.rows.by_key.get(&(group.to_string(), addr)).copied()
    }

    /// (row, group, target), by row.
    pub fn rows(&self) -> Vec<(u32, String, SocketAddr)> {
        let mut rows: Vec<_> = self
            .rows
            .by_key
            .iter()
            .map(|((g, a), &r)| (r, g.clone(), *a))
            .collect();
        rows.sort();
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configuration_numbers_its_balancers_in_file_order() {
        let lb = |name: &str, addr: &str| {
            format!(
                "[[load_balancer]]\nname = \"{name}\"\ninterfaces = [\"eth0\"]\naddresses = [\"{addr}\"]\nsecurity_groups = [\"sg\"]\n"
            )
        };
        let text = format!(
            "[[security_group]]\nname = \"sg\"\n{}{}",
            lb("zeta", "10.0.0.1"),
            lb("alpha", "10.0.0.2")
        );
        let cfg = crate::config::parse_str(&text, "t.toml").unwrap();
        let s = LbSlots::for_config(&cfg);
        assert_eq!(s.rows(), [(0, "zeta".into()), (1, "alpha".into())]);
    }

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

    #[test]
    fn listeners_keep_their_rows_and_a_freed_row_waits_a_reload() {
        let cfg = |ports: &[u16]| {
            let mut text = String::from(
                "[[security_group]]\nname = \"sg\"\ningress = [{ protocol = \"tcp\", ports = \"80\", source = \"0.0.0.0/0\" }]\n\
                 [[target_group]]\nname = \"tg\"\nprotocol = \"HTTP\"\nport = 80\n\
                 [[load_balancer]]\nname = \"edge\"\ninterfaces = [\"lo\"]\naddresses = [\"10.0.0.10\"]\nsecurity_groups = [\"sg\"]\n",
            );
            for p in ports {
                text.push_str(&format!(
                    "[[listener]]\nload_balancer = \"edge\"\nprotocol = \"HTTP\"\nport = {p}\n\
                     default_action = {{ type = \"forward\", target_group = \"tg\" }}\n"
                ));
            }
            crate::config::parse_str(&text, "t.toml").unwrap()
        };
        let (s, taken) = ListenerRows::default().next(&cfg(&[80, 81]));
        assert_eq!(
            (s.row("edge", 80), s.row("edge", 81), taken),
            (Some(0), Some(1), vec![0, 1])
        );
        // 80 goes, 82 comes: 80's row (and its socket slots) stays quiet.
        let (s, taken) = s.next(&cfg(&[81, 82]));
        assert_eq!((s.row("edge", 82), taken), (Some(2), vec![2]));
        assert_eq!(s.row("edge", 80), None);
        let (s, taken) = s.next(&cfg(&[81, 82, 83]));
        assert_eq!((s.row("edge", 83), taken), (Some(0), vec![0]));
        assert_eq!(
            s.rows(),
            [
                (0, "edge".into(), 83),
                (1, "edge".into(), 81),
                (2, "edge".into(), 82)
            ]
        );
    }
}
