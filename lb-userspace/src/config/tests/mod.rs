//! Loader tests: the seed example with its values and defaults, a file using
//! every feature, and one test per kind of mistake. Error tests assert the
//! line, the field path and the wording, because the message is the product.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

mod admin;
mod errors;
mod limits;
mod listeners;
mod load_balancers;
mod names;
mod rules;
mod security_groups;
mod target_groups;
mod tls;
mod valid;

/// `examples/seed-alb.toml`: the file itself, so that the tests of its
/// values cannot drift from what the project ships.
const SEED: &str = include_str!("../../../../examples/seed-alb.toml");

/// A small valid file the error tests mutate: an HTTP listener, an HTTP and
/// a TCP target group. Only `[[...]]` sections may be appended to it (a bare
/// key would land in the last table).
const BASE: &str = r#"
[[security_group]]
name = "web"
ingress = [
  { protocol = "tcp", ports = "80", source = "0.0.0.0/0" },
]

[[target_group]]
name = "web"
protocol = "HTTP"
port = 80
targets = [{ address = "10.0.1.10" }]

[[target_group]]
name = "db"
protocol = "TCP"
port = 5432
targets = [{ address = "10.0.3.10" }]

[[load_balancer]]
name = "web-alb"
interfaces = ["eth0"]
addresses = ["10.0.0.10"]
security_groups = ["web"]

[[listener]]
load_balancer = "web-alb"
protocol = "HTTP"
port = 80
default_action = { type = "forward", target_group = "web" }
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    parse_str(text, "test.toml")
}

/// `BASE` with `from` replaced by `to` (which must be present).
fn base_with(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "BASE lacks {from:?}");
    BASE.replacen(from, to, 1)
}

fn base_plus(extra: &str) -> String {
    format!("{BASE}\n{extra}")
}

/// 1-based line of the last line containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.contains(needle))
        .last()
        .unwrap_or_else(|| panic!("{needle:?} not in the text"))
        .0
        + 1
}

/// Asserts that `text` is rejected with a diagnostic on the (last) line
/// containing `at`, for `field`, whose message contains every `parts`.
#[track_caller]
fn assert_error(text: &str, at: &str, field: &str, parts: &[&str]) {
    assert_error_at(text, line_of(text, at), field, parts);
}

/// [`assert_error`] with an explicit 1-based line.
#[track_caller]
fn assert_error_at(text: &str, line: usize, field: &str, parts: &[&str]) {
    let err = match parse(text) {
        Ok(_) => panic!("accepted, expected {field}: {parts:?}"),
        Err(e) => e,
    };
    let found = err
        .diagnostics()
        .iter()
        .any(|d| d.line == line && d.field == field && parts.iter().all(|p| d.message.contains(p)));
    assert!(
        found,
        "expected test.toml:{line}: {field}: ..{parts:?}..; got:\n{err}"
    );
    // The rendered form carries the same facts.
    let shown = err.to_string();
    assert!(shown.contains(&format!("test.toml:{line}:")), "{shown}");
    assert!(shown.contains(field), "{shown}");
}

/// A fresh self-signed certificate and its PKCS#8 key, both PEM.
fn self_signed() -> (String, rcgen::KeyPair) {
    let c = rcgen::generate_simple_self_signed(vec!["test.example".to_string()]).unwrap();
    (c.cert.pem(), c.key_pair)
}

/// A fresh directory with `cert.pem` and its `key.pem`, and `other.pem`
/// with its `other-key.pem`: two unrelated pairs.
fn cert_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("xalb-config-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (cert, key) in [("cert.pem", "key.pem"), ("other.pem", "other-key.pem")] {
        let (pem, key_pair) = self_signed();
        std::fs::write(dir.join(cert), pem).unwrap();
        std::fs::write(dir.join(key), key_pair.serialize_pem()).unwrap();
    }
    dir
}

/// Every diagnostic of `text`, parsed as `file`, rendered one per line.
fn diagnostics_of(text: &str, file: &Path) -> Vec<String> {
    match parse_str(text, &file.display().to_string()) {
        Ok(_) => Vec::new(),
        Err(e) => e.diagnostics().iter().map(|d| d.to_string()).collect(),
    }
}

/// One `[[section]]` table built field by field, for the few lines a test
/// adds to `BASE`. Values are TOML as written (`"\"web\""`, `443`, `[]`),
/// so a test can also write a wrong one or append a `# marker` comment to
/// find its line.
pub(super) struct Section {
    kind: &'static str,
    fields: Vec<(&'static str, String)>,
}

impl Section {
    fn new(kind: &'static str, fields: &[(&'static str, &str)]) -> Self {
        let fields = fields.iter().map(|(k, v)| (*k, v.to_string())).collect();
        Section { kind, fields }
    }

    /// Sets `key` to `value`, in place when present, else at the end.
    pub(super) fn set(mut self, key: &'static str, value: impl Into<String>) -> Self {
        let value = value.into();
        match self.fields.iter_mut().find(|(k, _)| *k == key) {
            Some(field) => field.1 = value,
            None => self.fields.push((key, value)),
        }
        self
    }

    pub(super) fn without(mut self, key: &str) -> Self {
        self.fields.retain(|(k, _)| *k != key);
        self
    }
}

impl std::fmt::Display for Section {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "[[{}]]", self.kind)?;
        for (key, value) in &self.fields {
            writeln!(f, "{key} = {value}")?;
        }
        Ok(())
    }
}

/// A TOML string value.
pub(super) fn quoted(s: &str) -> String {
    format!("{s:?}")
}

/// A listener of `web-alb` forwarding to `web`.
pub(super) fn listener(protocol: &str, port: u16) -> Section {
    Section::new(
        "listener",
        &[
            ("load_balancer", "\"web-alb\""),
            ("protocol", &quoted(protocol)),
            ("port", &port.to_string()),
            ("default_action", FORWARD_WEB),
        ],
    )
}

/// `{ type = "forward", target_group = "web" }`
pub(super) const FORWARD_WEB: &str = "{ type = \"forward\", target_group = \"web\" }";

/// An HTTPS listener on 443 with `cert.pem` and `key.pem` (see [`cert_dir`]).
pub(super) fn https_listener() -> Section {
    listener("HTTPS", 443).set(
        "certificates",
        "[{ cert = \"cert.pem\", key = \"key.pem\" }]",
    )
}

/// A TCP listener on 5432 forwarding to `BASE`'s TCP group `db`. Refused as
/// not served yet, but the rest of it is still checked, which the TCP
/// compatibility tests rely on.
pub(super) fn tcp_listener() -> Section {
    listener("TCP", 5432).set(
        "default_action",
        "{ type = \"forward\", target_group = \"db\" }",
    )
}

/// A balancer on `eth0` behind security group `web`.
pub(super) fn load_balancer(name: &str, address: &str) -> Section {
    Section::new(
        "load_balancer",
        &[
            ("name", &quoted(name)),
            ("interfaces", "[\"eth0\"]"),
            ("addresses", &format!("[{}]", quoted(address))),
            ("security_groups", "[\"web\"]"),
        ],
    )
}

/// A target group with no targets.
pub(super) fn target_group(name: &str, protocol: &str, port: u16) -> Section {
    Section::new(
        "target_group",
        &[
            ("name", &quoted(name)),
            ("protocol", &quoted(protocol)),
            ("port", &port.to_string()),
        ],
    )
}
