//! Targets registered and deregistered at run time (`xalb register-targets`,
//! `deregister-targets`): changes laid over the file's target groups, kept
//! in the state directory so that they survive restarts and file reloads.
//!
//! The file stays the operator's; these are the ALB's API calls. A change
//! names the group and the target; re-registering a file target that was
//! deregistered undoes the deregistration, and deregistering a registered
//! one forgets it.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::model::{Config, Target};

/// Where the changes are kept, in the state directory.
const FILE: &str = "registered-targets.json";

/// A target as the commands name it: an address, and a port or the group's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetSpec {
    pub address: IpAddr,
    pub port: Option<u16>,
}

impl std::fmt::Display for TargetSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.port {
            Some(port) => write!(f, "{}", SocketAddr::new(self.address, port)),
            None => write!(f, "{}", self.address),
        }
    }
}

impl std::str::FromStr for TargetSpec {
    type Err = RegistrationError;

    /// `10.0.1.5`, `10.0.1.5:8080`, `2001:db8::5`, `[2001:db8::5]:8080`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(address) = s.parse::<IpAddr>() {
            return Ok(TargetSpec {
                address,
                port: None,
            });
        }
        match s.parse::<SocketAddr>() {
            Ok(a) => Ok(TargetSpec {
                address: a.ip(),
                port: Some(a.port()),
            }),
            Err(_) => Err(RegistrationError::BadTarget {
                target: s.to_string(),
                why: "expected ADDRESS or ADDRESS:PORT, e.g. 10.0.1.5:8080 or [2001:db8::5]:8080",
            }),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RegistrationError {
    #[error("target group {0:?} does not exist")]
    NoSuchGroup(String),
    #[error("invalid target {target:?}: {why}")]
    BadTarget { target: String, why: &'static str },
    #[error("target {target} is not registered in target group {group:?}")]
    NotRegistered { group: String, target: SocketAddr },
    #[error("no targets given")]
    Empty,
    #[error("cannot keep the registered targets in {path}: {error}")]
    Store { path: PathBuf, error: String },
}

impl RegistrationError {
    pub fn http_status(&self) -> u16 {
        match self {
            RegistrationError::NoSuchGroup(_) => 404,
            RegistrationError::Store { .. } => 500,
            _ => 400,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            RegistrationError::NoSuchGroup(_) => "target_group_not_found",
            RegistrationError::Store { .. } => "state_not_saved",
            _ => "invalid_target",
        }
    }
}

/// One group's changes to its file targets.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupChanges {
    /// Added by register-targets (not in the file when registered).
    #[serde(default)]
    pub registered: Vec<SocketAddr>,
    /// File targets removed by deregister-targets.
    #[serde(default)]
    pub deregistered: Vec<SocketAddr>,
}

/// Every group's changes, by group name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registrations {
    #[serde(default)]
    groups: BTreeMap<String, GroupChanges>,
}

impl Registrations {
    /// What `state_dir` keeps; none when it keeps nothing yet.
    pub fn load(state_dir: &Path) -> Result<Self, RegistrationError> {
        let path = state_dir.join(FILE);
        let store = |error: String| RegistrationError::Store {
            path: path.clone(),
            error,
        };
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| store(e.to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(store(e.to_string())),
        }
    }

    /// Writes them whole to a new file and renames it over the old one: a
    /// crash leaves the old or the new, never half of one.
    pub fn save(&self, state_dir: &Path) -> Result<(), RegistrationError> {
        let path = state_dir.join(FILE);
        let tmp = state_dir.join(format!("{FILE}.new"));
        let store = |e: std::io::Error| RegistrationError::Store {
            path: path.clone(),
            error: e.to_string(),
        };
        let json = serde_json::to_vec_pretty(self).expect("plain data serializes");
        std::fs::create_dir_all(state_dir).map_err(store)?;
        let mut f = std::fs::File::create(&tmp).map_err(store)?;
        f.write_all(&json)
            .and_then(|_| f.sync_all())
            .map_err(store)?;
        std::fs::rename(&tmp, &path).map_err(store)
    }

    /// The changes after registering `targets` in `group` of `file` (the
    /// configuration as the file says it).
    pub fn register(
        &self,
        file: &Config,
        group: &str,
        targets: &[TargetSpec],
    ) -> Result<Self, RegistrationError> {
        self.change(file, group, targets, |changes, in_file, addr| {
            changes.deregistered.retain(|&d| d != addr);
            if !in_file.contains(&addr) && !changes.registered.contains(&addr) {
                changes.registered.push(addr);
            }
            Ok(())
        })
    }

    /// The changes after deregistering `targets` from `group`; each must be
    /// one of its targets now.
    pub fn deregister(
        &self,
        file: &Config,
        group: &str,
        targets: &[TargetSpec],
    ) -> Result<Self, RegistrationError> {
        self.change(file, group, targets, |changes, in_file, addr| {
            if let Some(i) = changes.registered.iter().position(|&r| r == addr) {
                changes.registered.remove(i);
            } else if in_file.contains(&addr) && !changes.deregistered.contains(&addr) {
                changes.deregistered.push(addr);
            } else {
                return Err(RegistrationError::NotRegistered {
                    group: group.to_string(),
                    target: addr,
                });
            }
            Ok(())
        })
    }

    /// The changes after `each` has changed `group`'s for every target
    /// (given the file's targets of the group), or the first refusal.
    fn change(
        &self,
        file: &Config,
        group: &str,
        targets: &[TargetSpec],
        mut each: impl FnMut(
            &mut GroupChanges,
            &[SocketAddr],
            SocketAddr,
        ) -> Result<(), RegistrationError>,
    ) -> Result<Self, RegistrationError> {
        if targets.is_empty() {
            return Err(RegistrationError::Empty);
        }
        let g = file
            .target_group(group)
            .ok_or_else(|| RegistrationError::NoSuchGroup(group.to_string()))?;
        let in_file = file_targets(g);
        let mut next = self.clone();
        let changes = next.groups.entry(group.to_string()).or_default();
        for t in targets {
            each(changes, &in_file, resolve(t, g.port)?)?;
        }
        next.tidy();
        Ok(next)
    }

    /// `file` with the changes applied, and a warning for each group the
    /// changes name that the file no longer has (they are kept, and apply
    /// again if it comes back).
    pub fn overlay(&self, file: &Config) -> (Config, Vec<String>) {
        let mut cfg = file.clone();
        let mut warnings = Vec::new();
        for (name, changes) in &self.groups {
            let Some(g) = cfg.target_groups.iter_mut().find(|g| &g.name == name) else {
                warnings.push(format!(
                    "registered targets of target group {name:?} are not applied: the configuration has no such group"
                ));
                continue;
            };
            g.targets.retain(|t| {
                !changes
                    .deregistered
                    .contains(&SocketAddr::new(t.address, t.port))
            });
            for r in &changes.registered {
                if !g
                    .targets
                    .iter()
                    .any(|t| t.address == r.ip() && t.port == r.port())
                {
                    g.targets.push(Target {
                        address: r.ip(),
                        port: r.port(),
                        weight: 1,
                    });
                }
            }
        }
        (cfg, warnings)
    }

    /// (group, target) of every target register-targets added that the file
    /// does not list.
    pub fn added(&self, file: &Config) -> Vec<(String, SocketAddr)> {
        let mut out = Vec::new();
        for (name, changes) in &self.groups {
            let in_file = file
                .target_group(name)
                .map(file_targets)
                .unwrap_or_default();
            out.extend(
                changes
                    .registered
                    .iter()
                    .filter(|r| !in_file.contains(r))
                    .map(|&r| (name.clone(), r)),
            );
        }
        out
    }

    /// Drops groups left with no change.
    fn tidy(&mut self) {
        self.groups
            .retain(|_, c| !c.registered.is_empty() || !c.deregistered.is_empty());
    }
}

fn file_targets(g: &crate::config::model::TargetGroup) -> Vec<SocketAddr> {
    g.targets
        .iter()
        .map(|t| SocketAddr::new(t.address, t.port))
        .collect()
}

/// The target's address and port, as the file's validation would accept it.
fn resolve(t: &TargetSpec, group_port: u16) -> Result<SocketAddr, RegistrationError> {
    let port = t.port.unwrap_or(group_port);
    let addr = SocketAddr::new(t.address, port);
    let bad = |why| RegistrationError::BadTarget {
        target: addr.to_string(),
        why,
    };
    if t.address.is_unspecified() || t.address.is_multicast() {
        return Err(bad("a target's address is a unicast IPv4 or IPv6 address"));
    }
    if port == 0 {
        return Err(bad("a target's port is 1-65535"));
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> Config {
        crate::config::parse_str(
            r#"
[[security_group]]
name = "web"
ingress = [{ protocol = "tcp", ports = "80", source = "0.0.0.0/0" }]

[[load_balancer]]
name = "edge"
interfaces = ["lo"]
addresses = ["127.0.0.1"]
security_groups = ["web"]

[[target_group]]
name = "web"
protocol = "HTTP"
port = 8080
targets = [{ address = "10.0.0.1" }, { address = "10.0.0.2", port = 9000 }]

[[listener]]
load_balancer = "edge"
protocol = "HTTP"
port = 80
default_action = { type = "forward", target_group = "web" }
"#,
            "t.toml",
        )
        .unwrap()
    }

    fn specs(s: &[&str]) -> Vec<TargetSpec> {
        s.iter().map(|t| t.parse().unwrap()).collect()
    }

    fn targets_of(cfg: &Config) -> Vec<String> {
        cfg.target_group("web")
            .unwrap()
            .targets
            .iter()
            .map(|t| SocketAddr::new(t.address, t.port).to_string())
            .collect()
    }

    #[test]
    fn a_target_is_written_with_or_without_a_port() {
        assert_eq!(
            "10.0.0.5".parse::<TargetSpec>().unwrap(),
            TargetSpec {
                address: "10.0.0.5".parse().unwrap(),
                port: None
            }
        );
        assert_eq!(
            "[2001:db8::5]:81".parse::<TargetSpec>().unwrap().port,
            Some(81)
        );
        assert!(matches!(
            "10.0.0.5:x".parse::<TargetSpec>(),
            Err(RegistrationError::BadTarget { .. })
        ));
    }

    #[test]
    fn a_target_prints_as_it_is_written() {
        for text in ["10.0.0.5", "10.0.0.5:81", "2001:db8::5", "[2001:db8::5]:81"] {
            assert_eq!(text.parse::<TargetSpec>().unwrap().to_string(), text);
        }
    }

    #[test]
    fn each_refusal_has_its_status_and_kind() {
        let cases = [
            (
                RegistrationError::NoSuchGroup("g".into()),
                404,
                "target_group_not_found",
            ),
            (RegistrationError::Empty, 400, "invalid_target"),
            (
                RegistrationError::NotRegistered {
                    group: "g".into(),
                    target: "10.0.0.1:80".parse().unwrap(),
                },
                400,
                "invalid_target",
            ),
            (
                RegistrationError::Store {
                    path: "x".into(),
                    error: "e".into(),
                },
                500,
                "state_not_saved",
            ),
        ];
        for (e, status, kind) in cases {
            assert_eq!((e.http_status(), e.kind()), (status, kind), "{e}");
        }
    }

    #[test]
    fn registering_adds_with_the_group_port_and_is_idempotent() {
        let f = file();
        let r = Registrations::default()
            .register(&f, "web", &specs(&["10.0.0.3", "10.0.0.4:81"]))
            .unwrap();
        let r = r.register(&f, "web", &specs(&["10.0.0.3"])).unwrap();
        let (cfg, warnings) = r.overlay(&f);
        assert!(warnings.is_empty());
        assert_eq!(
            targets_of(&cfg),
            [
                "10.0.0.1:8080",
                "10.0.0.2:9000",
                "10.0.0.3:8080",
                "10.0.0.4:81"
            ]
        );
        assert_eq!(
            r.added(&f),
            [
                ("web".to_string(), "10.0.0.3:8080".parse().unwrap()),
                ("web".to_string(), "10.0.0.4:81".parse().unwrap())
            ]
        );
        // A file target registered again changes nothing.
        let same = Registrations::default()
            .register(&f, "web", &specs(&["10.0.0.1"]))
            .unwrap();
        assert_eq!(same, Registrations::default());
    }

    #[test]
    fn deregistering_removes_file_and_registered_targets_and_undoes() {
        let f = file();
        let r = Registrations::default()
            .register(&f, "web", &specs(&["10.0.0.3"]))
            .unwrap()
            .deregister(&f, "web", &specs(&["10.0.0.3", "10.0.0.2:9000"]))
            .unwrap();
        assert_eq!(targets_of(&r.overlay(&f).0), ["10.0.0.1:8080"]);
        assert!(r.added(&f).is_empty());
        // Registering the file target again undoes its deregistration.
        let back = r.register(&f, "web", &specs(&["10.0.0.2:9000"])).unwrap();
        assert_eq!(back, Registrations::default());
        assert_eq!(targets_of(&back.overlay(&f).0), targets_of(&f));
    }

    #[test]
    fn bad_requests_are_refused_and_change_nothing() {
        let f = file();
        let r = Registrations::default();
        assert_eq!(
            r.register(&f, "nope", &specs(&["10.0.0.3"])),
            Err(RegistrationError::NoSuchGroup("nope".into()))
        );
        assert_eq!(
            r.deregister(&f, "web", &specs(&["10.0.0.2"])),
            Err(RegistrationError::NotRegistered {
                group: "web".into(),
                target: "10.0.0.2:8080".parse().unwrap()
            })
        );
        // Deregistered twice: the second time it is no longer a target.
        let once = r.deregister(&f, "web", &specs(&["10.0.0.1"])).unwrap();
        assert!(matches!(
            once.deregister(&f, "web", &specs(&["10.0.0.1"])),
            Err(RegistrationError::NotRegistered { .. })
        ));
        assert_eq!(r.register(&f, "web", &[]), Err(RegistrationError::Empty));
        for bad in ["0.0.0.0", "224.0.0.1", "10.0.0.9:0"] {
            assert!(
                matches!(
                    r.register(&f, "web", &specs(&[bad])),
                    Err(RegistrationError::BadTarget { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn changes_to_a_group_the_file_dropped_are_kept_and_warned_about() {
        let f = file();
        let r = Registrations::default()
            .register(&f, "web", &specs(&["10.0.0.3"]))
            .unwrap();
        let mut without = f.clone();
        without.target_groups.clear();
        let (cfg, warnings) = r.overlay(&without);
        assert!(cfg.target_groups.is_empty());
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("\"web\""), "{warnings:?}");
        // And they apply again once the group is back.
        assert_eq!(targets_of(&r.overlay(&f).0).len(), 3);
    }

    #[test]
    fn saved_changes_load_back_and_nothing_saved_is_none() {
        let dir = std::env::temp_dir().join(format!("xalb-reg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(Registrations::load(&dir).unwrap(), Registrations::default());
        let f = file();
        let r = Registrations::default()
            .register(&f, "web", &specs(&["10.0.0.3"]))
            .unwrap()
            .deregister(&f, "web", &specs(&["10.0.0.1"]))
            .unwrap();
        r.save(&dir).unwrap();
        assert_eq!(Registrations::load(&dir).unwrap(), r);
        // Unreadable (a directory where the file should be): an error, not
        // "nothing kept".
        let odd = dir.join("odd");
        std::fs::create_dir_all(odd.join(FILE)).unwrap();
        assert!(matches!(
            Registrations::load(&odd),
            Err(RegistrationError::Store { .. })
        ));
        std::fs::write(dir.join(FILE), b"{ not json").unwrap();
        assert!(matches!(
            Registrations::load(&dir),
            Err(RegistrationError::Store { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
