//! Raw file → validated [`Config`]: defaults, ranges, names, references and
//! protocol compatibility, following ELBv2 semantics.
//!
//! The checker never stops at the first problem: every check pushes a
//! diagnostic and carries on with a placeholder value, so one `xalb check`
//! run lists everything that is wrong. The model is only returned when no
//! diagnostic was pushed, so placeholders never escape.
//!
//! Field paths use `section[index]` (0-based, the index in the file, which
//! is also the model's `Vec` index), except listeners, which are named
//! `listener "<load_balancer>:<port>"` the way rules refer to them.
//!
//! One module per section (`security_groups`, `target_groups`,
//! `load_balancers`, `listeners`, `rules`), each adding its methods to the
//! one [`Checker`]; the limits live in `limits` and the checks every section
//! shares (names, choices, ports, durations, addresses) in `values`. This
//! module checks the whole file: names first, then each section, then the
//! optional `admin` and `access_log` sections.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

use super::duration::parse_duration;
use super::error::{ConfigError, Diagnostic, Locator};
use super::model::*;
use super::raw::*;

mod limits;
mod listeners;
mod load_balancers;
mod rules;
mod security_groups;
mod target_groups;
mod values;

use limits::*;
use values::*;

/// Validates a parsed file. `base_dir` resolves relative certificate paths.
pub(crate) fn validate(
    raw: &RawConfig,
    text: &str,
    file: &str,
    base_dir: &Path,
) -> Result<Config, ConfigError> {
    let mut c = Checker {
        loc: Locator::new(file, text),
        base_dir,
        diags: Vec::new(),
        warnings: Vec::new(),
    };
    let mut config = c.config(raw);
    if c.diags.is_empty() {
        c.warnings.sort_by_key(|d| (d.line, d.column));
        config.warnings = c.warnings;
        Ok(config)
    } else {
        // File order reads best; the sort is stable so problems on the same
        // spot keep the order they were found in.
        c.diags.sort_by_key(|d| (d.line, d.column));
        Err(ConfigError::Invalid(c.diags))
    }
}

// ---------------------------------------------------------------------------

/// Names defined in the file, for reference checks. A protocol is `None`
/// when the definition itself is invalid (already reported), so that
/// compatibility checks stay quiet instead of piling on.
#[derive(Default)]
struct Names {
    security_groups: HashSet<String>,
    target_groups: HashMap<String, Option<TargetProtocol>>,
    load_balancers: HashSet<String>,
    /// By `"<load_balancer>:<port>"`.
    listeners: HashMap<String, Option<ListenerProtocol>>,
}

struct Checker<'a> {
    loc: Locator<'a>,
    base_dir: &'a Path,
    diags: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
}

impl Checker<'_> {
    fn err(&mut self, span: Range<usize>, field: impl Into<String>, msg: impl Into<String>) {
        let d = self.loc.diagnostic(span, field, msg);
        self.diags.push(d);
    }

    fn warn(&mut self, span: Range<usize>, field: impl Into<String>, msg: impl Into<String>) {
        let d = self.loc.diagnostic(span, field, msg);
        self.warnings.push(d);
    }

    fn line(&self, span: &Range<usize>) -> usize {
        self.loc.line_col(span.start).0
    }

    // -- whole file ---------------------------------------------------------

    fn config(&mut self, raw: &RawConfig) -> Config {
        let mut names = Names::default();

        // Definitions first, so references can be checked whatever the order
        // of sections in the file.
        let mut seen = HashMap::new();
        for (i, g) in raw.security_group.iter().enumerate() {
            self.unique_name(&mut seen, i, &g.get_ref().name, "security_group");
        }
        names.security_groups = seen.into_keys().collect();

        let mut seen = HashMap::new();
        for (i, g) in raw.target_group.iter().enumerate() {
            self.unique_name(&mut seen, i, &g.get_ref().name, "target_group");
        }
        for g in &raw.target_group {
            let g = g.get_ref();
            let proto = TARGET_PROTOCOLS
                .iter()
                .find(|(n, _)| n == g.protocol.get_ref())
                .map(|(_, p)| *p);
            // First definition wins for duplicates (the duplicate is an error).
            names
                .target_groups
                .entry(g.name.get_ref().clone())
                .or_insert(proto);
        }

        let mut seen = HashMap::new();
        for (i, lb) in raw.load_balancer.iter().enumerate() {
            self.unique_name(&mut seen, i, &lb.get_ref().name, "load_balancer");
        }
        names.load_balancers = seen.into_keys().collect();

        let security_groups = raw
            .security_group
            .iter()
            .enumerate()
            .map(|(i, g)| self.security_group(i, g))
            .collect();
        let target_groups = raw
            .target_group
            .iter()
            .enumerate()
            .map(|(i, g)| self.target_group(i, g))
            .collect();

        if raw.load_balancer.len() > lb_common::MAX_LBS as usize {
            let extra = &raw.load_balancer[lb_common::MAX_LBS as usize];
            self.err(
                extra.span(),
                format!("load_balancer[{}]", lb_common::MAX_LBS),
                format!(
                    "too many load balancers: {} defined, at most {} are supported",
                    raw.load_balancer.len(),
                    lb_common::MAX_LBS
                ),
            );
        }
        let mut address_owner = HashMap::new();
        let load_balancers: Vec<LoadBalancer> = raw
            .load_balancer
            .iter()
            .enumerate()
            .map(|(i, lb)| self.load_balancer(i, lb, &names, &mut address_owner))
            .collect();
        self.address_limits(&load_balancers, raw);

        if raw.listener.len() > lb_common::MAX_LISTENERS as usize {
            let extra = &raw.listener[lb_common::MAX_LISTENERS as usize];
            self.err(
                extra.span(),
                format!("listener[{}]", lb_common::MAX_LISTENERS),
                format!(
                    "too many listeners: {} defined, at most {} are supported",
                    raw.listener.len(),
                    lb_common::MAX_LISTENERS
                ),
            );
        }
        // Listeners: register every name first (rules may precede them).
        for l in &raw.listener {
            let l = l.get_ref();
            if let Some(port) = valid_port(*l.port.get_ref()) {
                let proto = LISTENER_PROTOCOLS
                    .iter()
                    .find(|(n, _)| n == l.protocol.get_ref())
                    .map(|(_, p)| *p);
                names
                    .listeners
                    .entry(format!("{}:{port}", l.load_balancer.get_ref()))
                    .or_insert(proto);
            }
        }
        let mut seen_ports = HashMap::new();
        let mut listeners: Vec<Listener> = raw
            .listener
            .iter()
            .enumerate()
            .map(|(i, l)| self.listener(i, l, &names, &mut seen_ports))
            .collect();

        let mut seen_priorities = HashMap::new();
        for (i, r) in raw.rule.iter().enumerate() {
            if let Some((listener, rule)) = self.rule(i, r, &names, &mut seen_priorities) {
                if let Some(l) = listeners.iter_mut().find(|l| l.name() == listener) {
                    l.rules.push(rule);
                }
            }
        }
        for l in &mut listeners {
            l.rules.sort_by_key(|r| r.priority);
        }

        Config {
            security_groups,
            target_groups,
            load_balancers,
            listeners,
            admin: self.admin(raw.admin.as_ref()),
            access_log: self.access_log(raw.access_log.as_ref()),
            warnings: Vec::new(),
        }
    }

    /// Checks a definition's name: its syntax, and that it is not taken yet.
    fn unique_name(
        &mut self,
        seen: &mut HashMap<String, usize>,
        index: usize,
        name: &S<String>,
        section: &str,
    ) {
        let field = format!("{section}[{index}].name");
        if let Err(msg) = check_name(name.get_ref()) {
            self.err(name.span(), field.clone(), msg);
        }
        if let Some(first) = seen.get(name.get_ref()) {
            self.err(
                name.span(),
                field,
                format!(
                    "duplicate {section} name {:?}: already defined at line {first}; names must be unique",
                    name.get_ref()
                ),
            );
        } else {
            let line = self.line(&name.span());
            seen.insert(name.get_ref().clone(), line);
        }
    }

    // -- optional sections --------------------------------------------------

    fn admin(&mut self, admin: Option<&S<RawAdmin>>) -> Admin {
        let default: SocketAddr = DEFAULT_ADMIN_LISTEN.parse().expect("valid default");
        let listen = match admin.and_then(|a| a.get_ref().listen.as_ref()) {
            None => default,
            Some(v) => v.get_ref().parse().unwrap_or_else(|_| {
                self.err(
                    v.span(),
                    "admin.listen",
                    format!(
                        "invalid socket address {:?}; expected an IP and port such as \"127.0.0.1:9901\" or \"[::1]:9901\"",
                        v.get_ref()
                    ),
                );
                default
            }),
        };
        Admin { listen }
    }

    fn access_log(&mut self, log: Option<&S<RawAccessLog>>) -> AccessLog {
        let empty = RawAccessLog::default();
        let log = log.map_or(&empty, |l| l.get_ref());
        let path = match &log.path {
            None => "-".to_string(),
            Some(v) => {
                if v.get_ref().is_empty() {
                    self.err(
                        v.span(),
                        "access_log.path",
                        "path must be a file path, or \"-\" for standard output",
                    );
                }
                v.get_ref().clone()
            }
        };
        let format = match &log.format {
            None => "json".to_string(),
            Some(v) => {
                self.choice(v, "access_log.format", &[("json", ())]);
                v.get_ref().clone()
            }
        };
        AccessLog {
            enabled: log.enabled.unwrap_or(false),
            path,
            format,
        }
    }
}
