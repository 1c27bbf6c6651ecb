//! Config errors located for the operator: file:line:column and the dotted key, found from
//! the byte spans the TOML parser keeps.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::de::{DeTable, DeValue};

/// One problem in a config file, located for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based; 0 when the problem has no place in the file (e.g. a missing file).
    pub line: usize,
    pub column: usize,
    /// The dotted key the problem is about, e.g. `upstream.orders.connect_timeout`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in a config file, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Turns byte spans into file:line:column errors, naming the key found at that place.
pub(super) struct Locator<'a> {
    pub(super) file: &'a Path,
    pub(super) text: &'a str,
    pub(super) root: Option<&'a DeTable<'a>>,
}

impl<'a> Locator<'a> {
    /// Where the value at a dotted path (`["upstream", "orders", "connect_timeout"]`) is
    /// written; `0..0` (no place) when the key is absent and its default applies.
    pub(super) fn span_of(&self, path: &[&str]) -> Range<usize> {
        let Some(mut table) = self.root else {
            return 0..0;
        };
        for (depth, segment) in path.iter().enumerate() {
            let Some((_, value)) = table
                .iter()
                .find(|(key, _)| key.get_ref().as_ref() == *segment)
            else {
                return 0..0;
            };
            if depth + 1 == path.len() {
                return value.span();
            }
            match value.get_ref() {
                DeValue::Table(inner) => table = inner,
                _ => return 0..0,
            }
        }
        0..0
    }

    pub(super) fn error(
        &self,
        span: Range<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        let (line, column) = if span == (0..0) {
            (0, 0)
        } else {
            line_column(self.text, span.start)
        };
        let mut key = key.into();
        if key.is_empty()
            && let Some(root) = self.root
        {
            key = key_at(root, &span, String::new()).unwrap_or_default();
        }
        ConfigError {
            file: self.file.to_path_buf(),
            line,
            column,
            key,
            message: message.into(),
        }
    }
}

/// The 1-based line and column of a byte offset in `text`.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text.as_bytes()[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    let column = text[line_start..offset].chars().count() + 1;
    (line, column)
}

/// The deepest dotted key whose key or value covers `span`.
fn key_at(table: &DeTable<'_>, span: &Range<usize>, prefix: String) -> Option<String> {
    for (key, value) in table.iter() {
        let key_span = key.span();
        let value_span = value.span();
        let path = if prefix.is_empty() {
            key.get_ref().to_string()
        } else {
            format!("{prefix}.{}", key.get_ref())
        };
        let covers = |s: &Range<usize>| s.start <= span.start && span.end <= s.end.max(s.start + 1);
        if covers(&key_span) {
            return Some(path);
        }
        if covers(&value_span) || contains_span(value.get_ref(), span) {
            return Some(key_in_value(value.get_ref(), span, path.clone()).unwrap_or(path));
        }
    }
    None
}

fn key_in_value(value: &DeValue<'_>, span: &Range<usize>, path: String) -> Option<String> {
    match value {
        DeValue::Table(table) => key_at(table, span, path),
        DeValue::Array(items) => items.iter().enumerate().find_map(|(i, item)| {
            let item_path = format!("{path}[{i}]");
            let s = item.span();
            if (s.start <= span.start && span.end <= s.end) || contains_span(item.get_ref(), span) {
                Some(key_in_value(item.get_ref(), span, item_path.clone()).unwrap_or(item_path))
            } else {
                None
            }
        }),
        _ => None,
    }
}

/// Tables made of `[header]` sections have spans that do not cover their bodies, so look inside.
fn contains_span(value: &DeValue<'_>, span: &Range<usize>) -> bool {
    match value {
        DeValue::Table(table) => table.iter().any(|(k, v)| {
            let (ks, vs) = (k.span(), v.span());
            (ks.start <= span.start && span.end <= ks.end.max(ks.start + 1))
                || (vs.start <= span.start && span.end <= vs.end)
                || contains_span(v.get_ref(), span)
        }),
        DeValue::Array(items) => items.iter().any(|item| {
            let s = item.span();
            (s.start <= span.start && span.end <= s.end) || contains_span(item.get_ref(), span)
        }),
        _ => false,
    }
}
