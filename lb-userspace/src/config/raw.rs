//! The file as written: serde structs that mirror the TOML one to one.
//!
//! Rules of thumb for this module:
//! - `#[serde(deny_unknown_fields)]` everywhere, so a typo is an error and not
//!   a silently ignored setting.
//! - Every value that [`super::validate`] checks is wrapped in
//!   [`toml::Spanned`], so its errors can point at the exact spot. Tables are
//!   spanned too, to point at the table when a value is *missing*.
//! - Numbers are read as `i64` and strings as `String`, and ranges and
//!   enumerations are checked during validation: that yields messages such as
//!   "must be 1-65535, got 70000" instead of serde's "expected u16".
//! - No internally tagged enums (`#[serde(tag = "type")]`): serde buffers
//!   those, which loses spans and breaks `deny_unknown_fields`. An action is
//!   one flat struct and validation checks which fields fit its `type`.

use std::fmt;
use std::ops::Range;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::error::{ConfigError, Locator};

pub(crate) type S<T> = Spanned<T>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    #[serde(default)]
    pub security_group: Vec<S<RawSecurityGroup>>,
    #[serde(default)]
    pub target_group: Vec<S<RawTargetGroup>>,
    #[serde(default)]
    pub load_balancer: Vec<S<RawLoadBalancer>>,
    #[serde(default)]
    pub listener: Vec<S<RawListener>>,
    #[serde(default)]
    pub rule: Vec<S<RawRule>>,
    pub admin: Option<S<RawAdmin>>,
    pub access_log: Option<S<RawAccessLog>>,
}

/// The top-level keys that hold arrays of tables (`[[name]]`).
const SECTION_ARRAYS: [&str; 5] = [
    "security_group",
    "target_group",
    "load_balancer",
    "listener",
    "rule",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSecurityGroup {
    pub name: S<String>,
    pub description: Option<String>,
    #[serde(default)]
    pub ingress: Vec<S<RawIngress>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawIngress {
    pub protocol: S<String>,
    /// `"80"` or `"8000-8100"`; a bare integer is accepted too.
    pub ports: Option<S<IntOrString>>,
    pub source: S<String>,
    pub description: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTargetGroup {
    pub name: S<String>,
    pub protocol: S<String>,
    pub port: S<i64>,
    pub algorithm: Option<S<String>>,
    pub deregistration_delay: Option<S<String>>,
    pub slow_start: Option<S<String>>,
    pub preserve_client_ip: Option<S<bool>>,
    pub protocol_version: Option<S<String>>,
    #[serde(default)]
    pub targets: Vec<S<RawTarget>>,
    pub health_check: Option<S<RawHealthCheck>>,
    pub stickiness: Option<S<RawStickiness>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTarget {
    pub address: S<String>,
    pub port: Option<S<i64>>,
    pub weight: Option<S<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHealthCheck {
    pub enabled: Option<bool>,
    pub protocol: Option<S<String>>,
    /// `"traffic-port"` or a port number (integer or string of digits).
    pub port: Option<S<IntOrString>>,
    pub path: Option<S<String>>,
    pub interval: Option<S<String>>,
    pub timeout: Option<S<String>>,
    pub healthy_threshold: Option<S<i64>>,
    pub unhealthy_threshold: Option<S<i64>>,
    /// `"200"`, `"200,302"`, `"200-399"`; a bare integer is accepted too.
    pub matcher: Option<S<IntOrString>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStickiness {
    pub enabled: Option<bool>,
    #[serde(rename = "type")]
    pub kind: Option<S<String>>,
    pub duration: Option<S<String>>,
    pub cookie_name: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLoadBalancer {
    pub name: S<String>,
    pub scheme: Option<S<String>>,
    /// `Option` so that validation can tell "absent" from "empty".
    pub internal_networks: Option<S<Vec<S<String>>>>,
    pub interfaces: S<Vec<S<String>>>,
    pub addresses: S<Vec<S<String>>>,
    pub security_groups: S<Vec<S<String>>>,
    pub idle_timeout: Option<S<String>>,
    pub request_head_timeout: Option<S<String>>,
    pub max_header_bytes: Option<S<i64>>,
    pub max_headers: Option<S<i64>>,
    pub trust_request_id: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawListener {
    pub load_balancer: S<String>,
    pub protocol: S<String>,
    pub port: S<i64>,
    pub default_action: S<RawAction>,
    pub certificates: Option<S<Vec<S<RawCertificate>>>>,
    pub ssl_policy: Option<S<String>>,
    pub mutual_authentication: Option<S<RawMutualAuthentication>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMutualAuthentication {
    pub mode: S<String>,
    pub trust_store: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCertificate {
    pub cert: S<String>,
    pub key: S<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRule {
    pub listener: S<String>,
    pub priority: S<i64>,
    pub conditions: S<Vec<S<RawCondition>>>,
    pub action: S<RawAction>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCondition {
    pub field: S<String>,
    /// http-header only.
    pub name: Option<S<String>>,
    pub values: S<Vec<S<ConditionValue>>>,
}

/// Every action kind in one struct; see the module comment for why.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAction {
    #[serde(rename = "type")]
    pub kind: S<String>,
    // forward
    pub target_group: Option<S<String>>,
    pub target_groups: Option<S<Vec<S<RawWeightedGroup>>>>,
    pub stickiness: Option<S<String>>,
    // redirect and fixed-response
    pub status_code: Option<S<IntOrString>>,
    // redirect
    pub protocol: Option<S<String>>,
    pub host: Option<S<String>>,
    pub port: Option<S<IntOrString>>,
    pub path: Option<S<String>>,
    pub query: Option<S<String>>,
    // fixed-response
    pub content_type: Option<S<String>>,
    pub message_body: Option<S<String>>,
}

impl RawAction {
    /// The optional fields that are present, with their spans, so validation
    /// can reject the ones that do not belong to the action's `type`.
    pub fn present_fields(&self) -> Vec<(&'static str, Range<usize>)> {
        fn sp<T>(o: &Option<S<T>>) -> Option<Range<usize>> {
            o.as_ref().map(|s| s.span())
        }
        [
            ("target_group", sp(&self.target_group)),
            ("target_groups", sp(&self.target_groups)),
            ("stickiness", sp(&self.stickiness)),
            ("status_code", sp(&self.status_code)),
            ("protocol", sp(&self.protocol)),
            ("host", sp(&self.host)),
            ("port", sp(&self.port)),
            ("path", sp(&self.path)),
            ("query", sp(&self.query)),
            ("content_type", sp(&self.content_type)),
            ("message_body", sp(&self.message_body)),
        ]
        .into_iter()
        .filter_map(|(name, span)| span.map(|s| (name, s)))
        .collect()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWeightedGroup {
    pub name: S<String>,
    pub weight: Option<S<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdmin {
    pub listen: Option<S<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAccessLog {
    pub enabled: Option<bool>,
    pub path: Option<S<String>>,
    pub format: Option<S<String>>,
}

/// A value that may be written as an integer or a string (`status_code = 503`
/// or `"503"`, `port = 443` or `"#{port}"`). Hand-written visitor rather than
/// `#[serde(untagged)]`, which would buffer the value and lose the span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum IntOrString {
    Int(i64),
    Str(String),
}

impl<'de> Deserialize<'de> for IntOrString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = IntOrString;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an integer or a string")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(IntOrString::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                i64::try_from(v)
                    .map(IntOrString::Int)
                    .map_err(|_| E::custom("integer is too large"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(IntOrString::Str(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// One element of a condition's `values`: a string for every condition
/// field except `query-string`, whose values are `{ key?, value }` tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ConditionValue {
    Str(String),
    Query(RawQueryValue),
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawQueryValue {
    pub key: Option<String>,
    pub value: String,
}

impl<'de> Deserialize<'de> for ConditionValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ConditionValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, or a { key, value } table for query-string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(ConditionValue::Str(v.to_string()))
            }
            fn visit_map<M: MapAccess<'de>>(self, m: M) -> Result<Self::Value, M::Error> {
                RawQueryValue::deserialize(de::value::MapAccessDeserializer::new(m))
                    .map(ConditionValue::Query)
            }
        }
        d.deserialize_any(V)
    }
}

/// Parses the text into [`RawConfig`], turning TOML syntax errors and serde
/// structure errors into located diagnostics.
pub(crate) fn parse(text: &str, file: &str) -> Result<RawConfig, ConfigError> {
    let loc = Locator::new(file, text);
    // Parse the document tree first: it separates syntax errors from
    // structure errors, and on a structure error it tells which field the
    // error's span belongs to (serde's messages often do not say).
    let tree = match DeTable::parse(text) {
        Ok(tree) => tree,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            let msg = format!("TOML syntax error: {}", e.message().trim_end());
            return Err(ConfigError::Syntax(loc.diagnostic(span, "", msg)));
        }
    };
    toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        let field = field_at(&tree, &span).unwrap_or_default();
        let msg = humanize_serde_message(e.message().trim_end(), &field);
        ConfigError::Structure(loc.diagnostic(span, field, msg))
    })
}

/// The dotted path (`target_group[1].health_check.interval`) of the smallest
/// key or value in the document whose span contains `span`.
fn field_at(tree: &Spanned<DeTable<'_>>, span: &Range<usize>) -> Option<String> {
    fn contains(outer: &Range<usize>, inner: &Range<usize>) -> bool {
        outer.start <= inner.start && inner.end <= outer.end
    }
    struct Best {
        len: usize,
        path: String,
    }
    fn consider(best: &mut Option<Best>, outer: &Range<usize>, target: &Range<usize>, path: &str) {
        if contains(outer, target) {
            let len = outer.len();
            // `<=`: on equal spans the later (deeper) candidate wins.
            if best.as_ref().is_none_or(|b| len <= b.len) {
                *best = Some(Best {
                    len,
                    path: path.to_string(),
                });
            }
        }
    }
    fn walk_value(
        value: &Spanned<DeValue<'_>>,
        path: &str,
        target: &Range<usize>,
        best: &mut Option<Best>,
    ) {
        consider(best, &value.span(), target, path);
        match value.get_ref() {
            DeValue::Table(t) => walk_table(t, path, target, best),
            DeValue::Array(a) => {
                for (i, item) in a.iter().enumerate() {
                    walk_value(item, &format!("{path}[{i}]"), target, best);
                }
            }
            _ => {}
        }
    }
    fn walk_table(
        table: &DeTable<'_>,
        prefix: &str,
        target: &Range<usize>,
        best: &mut Option<Best>,
    ) {
        for (key, value) in table.iter() {
            let path = if prefix.is_empty() {
                key.get_ref().to_string()
            } else {
                format!("{prefix}.{}", key.get_ref())
            };
            consider(best, &key.span(), target, &path);
            walk_value(value, &path, target, best);
        }
    }
    let mut best = None;
    walk_table(tree.get_ref(), "", span, &mut best);
    best.map(|b| b.path)
}

/// Rewords serde/toml messages in the file's terms (tables, arrays,
/// integers) rather than Rust's (maps, sequences, i64).
fn humanize_serde_message(msg: &str, field: &str) -> String {
    let mut out = msg
        .replace("invalid type: map", "invalid type: table")
        .replace("invalid type: sequence", "invalid type: array")
        .replace("expected a sequence", "expected an array")
        .replace("expected a map", "expected a table")
        .replace("expected i64", "expected an integer")
        .replace("expected a boolean", "expected true or false");
    if let Some(rest) = out.strip_prefix("missing field ") {
        out = format!("missing required field {rest}");
    } else if out.starts_with("unknown field ") {
        out = out
            .replacen(", expected one of ", "; allowed fields: ", 1)
            .replacen(", expected ", "; allowed fields: ", 1);
    }
    if SECTION_ARRAYS.contains(&field) && out.contains("expected an array") {
        out.push_str(&format!(" (write each entry as [[{field}]])"));
    }
    out
}
