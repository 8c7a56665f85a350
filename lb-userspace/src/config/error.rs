//! Configuration errors.
//!
//! Every problem is reported as a [`Diagnostic`] that points into the file
//! (`FILE:LINE:COLUMN: FIELD: MESSAGE`), so `xalb check` output can be read
//! like compiler output and editors can jump to the spot. Validation collects
//! all problems before failing; TOML syntax and structure (serde) errors stop
//! at the first one, because nothing after them can be trusted.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

/// One problem at one place in the configuration file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file name as given to [`super::load`] / [`super::parse_str`].
    pub file: String,
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters (not bytes).
    pub column: usize,
    /// Where in the configuration, e.g. `target_group[1].health_check.interval`
    /// or `listener "web-alb:80".default_action.target_group`. Empty when the
    /// problem is not tied to a field (TOML syntax errors).
    pub field: String,
    /// What was wrong and what is allowed.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

/// Why a configuration could not be loaded. Display is one line per problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read. The reason is part of the message rather
    /// than a `#[source]`, so `{:#}` chains (anyhow) do not print it twice.
    #[error("{}: cannot read the configuration file: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The text is not valid TOML.
    #[error("{0}")]
    Syntax(Diagnostic),
    /// Valid TOML that does not fit the schema: unknown field, wrong type,
    /// missing required field.
    #[error("{0}")]
    Structure(Diagnostic),
    /// The file fits the schema but breaks one or more rules (ranges,
    /// references, protocol compatibility, ...). Never empty.
    #[error("{}", DisplayLines(.0))]
    Invalid(Vec<Diagnostic>),
}

impl ConfigError {
    /// Every located problem; empty for [`ConfigError::Io`].
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            ConfigError::Io { .. } => &[],
            ConfigError::Syntax(d) | ConfigError::Structure(d) => std::slice::from_ref(d),
            ConfigError::Invalid(ds) => ds,
        }
    }
}

struct DisplayLines<'a>(&'a [Diagnostic]);

impl fmt::Display for DisplayLines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// Turns byte offsets (from toml spans) into 1-based line/column positions.
pub(crate) struct Locator<'a> {
    file: &'a str,
    text: &'a str,
    /// Byte offset of the first character of each line.
    line_starts: Vec<usize>,
}

impl<'a> Locator<'a> {
    pub(crate) fn new(file: &'a str, text: &'a str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Locator {
            file,
            text,
            line_starts,
        }
    }

    /// 1-based (line, column) of a byte offset; the column counts characters.
    pub(crate) fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&s| s <= offset) - 1;
        let start = self.line_starts[line];
        // Offsets from toml always sit on char boundaries; be safe anyway.
        let column = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count());
        (line + 1, column + 1)
    }

    pub(crate) fn diagnostic(
        &self,
        span: Range<usize>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Diagnostic {
        let (line, column) = self.line_col(span.start);
        Diagnostic {
            file: self.file.to_string(),
            line,
            column,
            field: field.into(),
            message: message.into(),
        }
    }
}
