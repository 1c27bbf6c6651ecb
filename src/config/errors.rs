//! Config errors located for the operator: file:line:column and the dotted key, found from
//! the byte spans the TOML parser keeps.

use std::cell::OnceCell;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::Spanned;
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
    file: &'a Path,
    text: &'a str,
    root: Option<&'a DeTable<'a>>,
    /// Built at the first error: a file can have an error for every few lines, and counting
    /// lines from the start for each is quadratic.
    lines: OnceCell<Lines>,
}

impl<'a> Locator<'a> {
    pub(super) fn new(file: &'a Path, text: &'a str, root: Option<&'a DeTable<'a>>) -> Self {
        Self {
            file,
            text,
            root,
            lines: OnceCell::new(),
        }
    }

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

    /// Where the `index`-th table of the array at a dotted path (`["route"]`, 3) is written:
    /// for an error about an entry as a whole, such as a key it lacks.
    pub(super) fn span_of_item(&self, path: &[&str], index: usize) -> Range<usize> {
        let Some((last, parents)) = path.split_last() else {
            return 0..0;
        };
        let Some(mut table) = self.root else {
            return 0..0;
        };
        for segment in parents {
            match table
                .iter()
                .find(|(key, _)| key.get_ref().as_ref() == *segment)
                .map(|(_, value)| value.get_ref())
            {
                Some(DeValue::Table(inner)) => table = inner,
                _ => return 0..0,
            }
        }
        match table
            .iter()
            .find(|(key, _)| key.get_ref().as_ref() == *last)
            .map(|(_, value)| value.get_ref())
        {
            Some(DeValue::Array(items)) => items.get(index).map_or(0..0, |item| item.span()),
            _ => 0..0,
        }
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
            self.lines
                .get_or_init(|| Lines::new(self.text))
                .line_column(span.start)
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

    /// Like `error`, for a place inside `section`. The key is looked for in that section, not in
    /// the whole file: a file can have an error for every few lines, and a search of the whole
    /// file for each is quadratic.
    pub(super) fn error_in(
        &self,
        section: &Section<'_, '_>,
        span: Range<usize>,
        message: impl Into<String>,
    ) -> ConfigError {
        let key = key_in_section(section, &span).unwrap_or_default();
        self.error(span, key, message)
    }
}

/// A table of the file that is read on its own.
pub(super) struct Section<'a, 'i> {
    /// Its dotted key: `process`, `route[2]`, `upstream.orders`.
    pub(super) key: String,
    /// Where the last part of its key is written; `None` for an item of an array of tables.
    pub(super) key_span: Option<Range<usize>>,
    pub(super) value: &'a Spanned<DeValue<'i>>,
}

/// Where the lines of a text start, and its bytes that continue a character.
struct Lines {
    starts: Vec<usize>,
    continuations: Vec<usize>,
    len: usize,
}

impl Lines {
    fn new(text: &str) -> Self {
        let bytes = text.as_bytes();
        let starts = std::iter::once(0)
            .chain(
                bytes
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| **b == b'\n')
                    .map(|(i, _)| i + 1),
            )
            .collect();
        // Counted, not walked, for each column: a one-line file can be long.
        let continuations = bytes
            .iter()
            .enumerate()
            .filter(|(_, b)| (0x80..0xC0).contains(*b))
            .map(|(i, _)| i)
            .collect();
        Self {
            starts,
            continuations,
            len: text.len(),
        }
    }

    /// What `line_column` says, without reading the text again.
    fn line_column(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.len);
        let line = self.starts.partition_point(|&start| start <= offset);
        let line_start = self.starts[line - 1];
        let continuations = self.continuations.partition_point(|&i| i < offset)
            - self.continuations.partition_point(|&i| i < line_start);
        (line, offset - line_start - continuations + 1)
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
        if covers(&key_span, span) {
            return Some(path);
        }
        if covers(&value_span, span) || contains_span(value.get_ref(), span) {
            return Some(key_in_value(value.get_ref(), span, path.clone()).unwrap_or(path));
        }
    }
    None
}

/// What `key_at` on the whole file finds for `span` inside `section`; `None` when nothing in the
/// section covers it.
fn key_in_section(section: &Section<'_, '_>, span: &Range<usize>) -> Option<String> {
    let s = section.value.span();
    let value_covers = match &section.key_span {
        Some(key_span) if covers(key_span, span) => return Some(section.key.clone()),
        Some(_) => covers(&s, span),
        // Array items are held to their spans exactly, as `key_in_value` does.
        None => s.start <= span.start && span.end <= s.end,
    };
    if value_covers || contains_span(section.value.get_ref(), span) {
        let key = section.key.clone();
        Some(key_in_value(section.value.get_ref(), span, key.clone()).unwrap_or(key))
    } else {
        None
    }
}

/// Whether a key or value written at `s` covers `span`; an empty `s` covers the byte at it.
fn covers(s: &Range<usize>, span: &Range<usize>) -> bool {
    s.start <= span.start && span.end <= s.end.max(s.start + 1)
}

fn key_in_value(value: &DeValue<'_>, span: &Range<usize>, path: String) -> Option<String> {
    match value {
        DeValue::Table(table) => key_at(table, span, path),
        DeValue::Array(items) => items
            .iter()
            .enumerate()
            .find(|(_, item)| {
                let s = item.span();
                (s.start <= span.start && span.end <= s.end) || contains_span(item.get_ref(), span)
            })
            .map(|(i, item)| {
                // Named only once found: formatting every item passed over is a cost per item.
                let item_path = format!("{path}[{i}]");
                key_in_value(item.get_ref(), span, item_path.clone()).unwrap_or(item_path)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_place_every_offset_as_line_column_does() {
        let text = "a = \"é\"\n\n[t]\nkey = \"日本\" # ü\r\nlast = '🦀'";
        let lines = Lines::new(text);
        for offset in 0..text.len() + 3 {
            if offset > text.len() || text.is_char_boundary(offset) {
                assert_eq!(
                    lines.line_column(offset),
                    line_column(text, offset),
                    "at {offset}"
                );
            }
        }
    }

    /// Every span written in `value`'s subtree: keys, values and items.
    fn spans(value: &Spanned<DeValue<'_>>, out: &mut Vec<Range<usize>>) {
        out.push(value.span());
        match value.get_ref() {
            DeValue::Table(table) => {
                for (key, value) in table.iter() {
                    out.push(key.span());
                    spans(value, out);
                }
            }
            DeValue::Array(items) => items.iter().for_each(|item| spans(item, out)),
            _ => {}
        }
    }

    #[test]
    fn a_key_looked_for_in_its_section_is_the_key_found_in_the_whole_file() {
        let text = "[[listener]]\nname = \"a\"\n[[route]]\nupstream = 5\n\
                    [route.request_headers.set]\nx = 1\n[[listener]]\nname = \"b\"\n\
                    tls = { certs = [{ cert = 1 }, {}] }\n[upstream.app]\nservers = [1, { addr = 2 }]\n\
                    [upstream.b.health]\npath = 1\n[[route]]\nupstream = 6\na.b.c = 1\n\
                    [process]\nx.y = [[1], { z = 2 }]\n[upstream.app.breaker]\nwindow = 1\n";
        let root = DeTable::parse(text).expect("test input is TOML");
        let mut sections = Vec::new();
        for (key, value) in root.get_ref().iter() {
            let name = key.get_ref().to_string();
            match (name.as_str(), value.get_ref()) {
                (_, DeValue::Array(items)) => {
                    sections.extend(items.iter().enumerate().map(|(i, item)| Section {
                        key: format!("{name}[{i}]"),
                        key_span: None,
                        value: item,
                    }))
                }
                ("upstream", DeValue::Table(tables)) => {
                    sections.extend(tables.iter().map(|(key, table)| Section {
                        key: format!("{name}.{}", key.get_ref()),
                        key_span: Some(key.span()),
                        value: table,
                    }))
                }
                _ => sections.push(Section {
                    key: name,
                    key_span: Some(key.span()),
                    value,
                }),
            }
        }
        assert_eq!(sections.len(), 7);
        for section in &sections {
            let mut all = Vec::new();
            spans(section.value, &mut all);
            for span in all {
                assert_eq!(
                    key_in_section(section, &span),
                    key_at(root.get_ref(), &span, String::new()),
                    "{:?} in {}",
                    &text[span.clone()],
                    section.key
                );
            }
        }
    }
}
