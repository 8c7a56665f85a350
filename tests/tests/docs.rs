//! The documentation kept true to the repository: every configuration field
//! the loader accepts is in `docs/configuration.md`, every relative link of
//! the front page and the docs leads to a file that exists, and no page
//! points outside the repository. Reads files only; no root needed.

use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repository root")
        .to_path_buf()
}

fn read(rel: &str) -> String {
    let path = repo().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The pages these tests hold to their rules: the front page, the
/// changelog and every Markdown file under `docs/`.
fn pages() -> Vec<(String, String)> {
    let mut names = vec!["README.md".to_string(), "CHANGELOG.md".to_string()];
    let mut docs: Vec<String> = std::fs::read_dir(repo().join("docs"))
        .expect("docs/ exists")
        .map(|e| e.expect("readable docs/ entry").file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md"))
        .map(|n| format!("docs/{n}"))
        .collect();
    docs.sort();
    names.extend(docs);
    names
        .into_iter()
        .map(|name| {
            let text = read(&name);
            (name, text)
        })
        .collect()
}

/// The TOML names of the fields of every `Deserialize` struct in raw.rs:
/// each `pub NAME:` line inside such a struct, or the `rename` of the
/// `#[serde(rename = "...")]` just above it.
fn config_fields(raw: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut deserialize = false;
    let mut in_struct = false;
    let mut rename: Option<String> = None;
    for line in raw.lines() {
        let t = line.trim();
        assert!(
            !t.contains("rename_all") && !t.contains("flatten"),
            "raw.rs uses {t:?}; teach tests/tests/docs.rs to read it"
        );
        if !in_struct {
            if t.starts_with("#[derive(") {
                deserialize = t.contains("Deserialize");
            } else if t.contains("struct ") && t.ends_with('{') {
                in_struct = deserialize;
                deserialize = false;
            } else if !(t.is_empty() || t.starts_with("#[") || t.starts_with("//")) {
                // Any other item: the derive above it was not a struct's.
                deserialize = false;
            }
            continue;
        }
        if line.starts_with('}') {
            in_struct = false;
        } else if let Some(r) = t.strip_prefix("#[serde(rename = \"") {
            rename = r.split('"').next().map(str::to_string);
        } else if let Some(rest) = t.strip_prefix("pub ") {
            let name = rest.split(':').next().unwrap_or("").trim();
            assert!(
                !name.is_empty() && name.chars().all(|c| c == '_' || c.is_ascii_alphanumeric()),
                "unexpected field line in raw.rs: {t:?}"
            );
            fields.push(rename.take().unwrap_or_else(|| name.to_string()));
        }
    }
    fields.sort();
    fields.dedup();
    fields
}

#[test]
fn every_configuration_field_is_in_the_reference() {
    let fields = config_fields(&read("lb-userspace/src/config/raw.rs"));
    // Guards against a change of raw.rs's layout that this reader would
    // silently skip: the file holds some fifty distinct field names.
    assert!(
        fields.len() >= 40,
        "only {} fields found in raw.rs: {fields:?}",
        fields.len()
    );
    for expected in ["security_group", "cookie_name", "type", "message_body"] {
        assert!(
            fields.iter().any(|f| f == expected),
            "{expected} not read from raw.rs"
        );
    }
    let reference = read("docs/configuration.md");
    let missing: Vec<&String> = fields
        .iter()
        .filter(|f| !reference.contains(&format!("`{f}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/configuration.md does not mention these fields as `name`: {missing:?}"
    );
}

/// The targets of the Markdown links `[text](target)` in `text`.
fn link_targets(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("](") {
        rest = &rest[at + 2..];
        if let Some(end) = rest.find(')') {
            out.push(rest[..end].trim());
            rest = &rest[end..];
        }
    }
    out
}

#[test]
fn every_relative_link_leads_to_a_file() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for (name, text) in pages() {
        let dir = repo()
            .join(&name)
            .parent()
            .expect("a page has a directory")
            .to_path_buf();
        for target in link_targets(&text) {
            if target.contains("://") || target.starts_with('#') || target.starts_with("mailto:") {
                continue;
            }
            let file = target.split('#').next().unwrap_or(target);
            checked += 1;
            if !dir.join(file).exists() {
                broken.push(format!("{name}: ({target})"));
            }
        }
    }
    assert!(checked > 0, "no relative link found at all");
    assert!(broken.is_empty(), "links to missing files: {broken:?}");
}

#[test]
fn no_page_points_outside_the_repository() {
    for (name, text) in pages() {
        for (i, line) in text.lines().enumerate() {
            for outside in ["../shared", "/work/"] {
                assert!(
                    !line.contains(outside),
                    "{name}:{}: mentions {outside:?}: {line}",
                    i + 1
                );
            }
        }
    }
}

#[test]
fn the_field_reader_follows_renames_and_skips_other_code() {
    let raw = r#"
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawThing {
    pub name: S<String>,
    /// A doc comment: not a field.
    #[serde(rename = "type")]
    pub kind: Option<S<String>>,
}

impl RawThing {
    pub fn present_fields(&self) -> Vec<&'static str> {
        vec![]
    }
}

#[derive(Debug)]
pub(crate) struct NotRead {
    pub hidden: u8,
}

#[derive(Deserialize)]
pub(crate) enum AlsoNotRead {
    A,
}

pub(crate) struct StillNotRead {
    pub hidden_too: u8,
}
"#;
    assert_eq!(config_fields(raw), ["name", "type"]);
}
