//! The `xalb` configuration: one TOML file, in AWS ELBv2 terms (the README's
//! Configuration section; `examples/seed-alb.toml`).
//!
//! Loading is two steps, each in its own module:
//! 1. [`raw`]: text → serde structs that mirror the file (syntax errors,
//!    unknown fields, wrong types and missing fields stop here);
//! 2. [`validate`]: raw → [`model`], applying defaults and checking ranges,
//!    names, references and protocol compatibility; all problems are
//!    collected into one [`ConfigError::Invalid`].
//!
//! A configuration either loads completely or not at all, so a bad file can
//! never be partly applied (at start or at reload).

use std::fmt::Write as _;
use std::path::Path;

mod duration;
mod error;
pub mod model;
mod raw;
mod validate;

#[cfg(test)]
mod tests;

pub use duration::{format_duration, parse_duration};
pub use error::{ConfigError, Diagnostic};
pub use model::*;

/// Reads and validates a configuration file. Relative certificate paths are
/// resolved against the file's directory.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Io {
        path: path.to_path_buf(),
        error,
    })?;
    parse_str(&text, &path.to_string_lossy())
}

/// Parses and validates configuration text. `file_name` labels diagnostics,
/// and its directory resolves relative certificate paths (which must exist:
/// this function reads and parses certificate and key files).
pub fn parse_str(text: &str, file_name: &str) -> Result<Config, ConfigError> {
    let raw = raw::parse(text, file_name)?;
    let base_dir = Path::new(file_name).parent().unwrap_or(Path::new(""));
    validate::validate(&raw, text, file_name, base_dir)
}

impl Config {
    /// A short human summary for `xalb check`, one item per line.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let rules: usize = self.security_groups.iter().map(|g| g.ingress.len()).sum();
        let _ = writeln!(
            s,
            "security groups: {} ({} ingress rules)",
            self.security_groups.len(),
            rules
        );
        let targets: usize = self.target_groups.iter().map(|g| g.targets.len()).sum();
        let _ = writeln!(
            s,
            "target groups: {} ({} targets)",
            self.target_groups.len(),
            targets
        );
        for g in &self.target_groups {
            let _ = writeln!(
                s,
                "  {}: {}{} port {}, {} targets",
                g.name,
                match g.protocol {
                    TargetProtocol::Http => "HTTP",
                    TargetProtocol::Https => "HTTPS",
                    TargetProtocol::Tcp => "TCP",
                },
                match g.protocol_version {
                    ProtocolVersion::Http1 => "",
                    ProtocolVersion::Http2 => " (HTTP2)",
                    ProtocolVersion::Grpc => " (GRPC)",
                },
                g.port,
                g.targets.len()
            );
        }
        let _ = writeln!(s, "load balancers: {}", self.load_balancers.len());
        for lb in &self.load_balancers {
            let scheme = match lb.scheme {
                Scheme::InternetFacing => "internet-facing",
                Scheme::Internal => "internal",
            };
            let addresses: Vec<String> = lb.addresses.iter().map(|a| a.to_string()).collect();
            let _ = writeln!(
                s,
                "  {}: {scheme}, addresses {}, interfaces {}, security groups {}",
                lb.name,
                addresses.join(" "),
                lb.interfaces.join(" "),
                lb.security_groups.join(" ")
            );
        }
        let rule_count: usize = self.listeners.iter().map(|l| l.rules.len()).sum();
        let _ = writeln!(
            s,
            "listeners: {} ({} rules)",
            self.listeners.len(),
            rule_count
        );
        for l in &self.listeners {
            let protocol = match l.protocol {
                ListenerProtocol::Http => "HTTP",
                ListenerProtocol::Https => "HTTPS",
                ListenerProtocol::Tcp => "TCP",
            };
            let _ = writeln!(
                s,
                "  {}: {protocol}, {} rules, default: {}",
                l.name(),
                l.rules.len(),
                action_summary(&l.default_action)
            );
            if l.protocol == ListenerProtocol::Https {
                let versions = l.tls_policy.map_or("", |p| p.versions_text());
                let mtls = match &l.mutual_authentication {
                    crate::tls::MutualAuth::Off => String::new(),
                    crate::tls::MutualAuth::Passthrough => ", mutual TLS passthrough".into(),
                    crate::tls::MutualAuth::Verify { trust_store } => format!(
                        ", mutual TLS verify ({} CA certificates)",
                        trust_store.len()
                    ),
                };
                let pq = if l.tls_policy.is_some_and(|p| p.post_quantum) {
                    ", post-quantum X25519MLKEM768"
                } else {
                    ""
                };
                let _ = writeln!(s, "    ssl_policy {} ({versions}{pq}){mtls}", l.ssl_policy);
                let now = crate::clock::unix_now();
                for (i, c) in l.certificates.iter().enumerate() {
                    let Some(served) = &c.served else { continue };
                    let info = &served.info;
                    let _ = writeln!(
                        s,
                        "    certificate {}{}: {}; expires {} (in {} days)",
                        c.cert.display(),
                        if i == 0 { " (default)" } else { "" },
                        info.names.join(" "),
                        crate::tls::certificate::iso8601(info.not_after),
                        info.days_left(now)
                    );
                }
            }
        }
        s.truncate(s.trim_end().len());
        s
    }
}

fn action_summary(a: &Action) -> String {
    match a {
        Action::Forward { target_group } => format!("forward to {target_group}"),
        Action::WeightedForward { target_groups, .. } => {
            let parts: Vec<String> = target_groups
                .iter()
                .map(|g| format!("{}={}", g.name, g.weight))
                .collect();
            format!("forward to {}", parts.join(" "))
        }
        Action::Redirect { status, .. } => match status {
            RedirectStatus::Http301 => "redirect (301)".to_string(),
            RedirectStatus::Http302 => "redirect (302)".to_string(),
        },
        Action::FixedResponse { status_code, .. } => format!("fixed response {status_code}"),
    }
}
