//! Writing TOML by hand, with values escaped by `toml_edit`: a document of comments, tables
//! and `key = value` lines, in the order the importer produces them.

use std::fmt::Write;

/// A TOML string literal.
pub fn string(text: &str) -> String {
    toml_edit::Value::from(text).to_string().trim().to_owned()
}

/// A TOML key, quoted when it has to be.
pub fn key(text: &str) -> String {
    toml_edit::Key::new(text).display_repr().into_owned()
}

pub fn strings<S: AsRef<str>>(items: &[S]) -> String {
    let parts: Vec<String> = items.iter().map(|s| string(s.as_ref())).collect();
    format!("[{}]", parts.join(", "))
}

/// An inline table from already written values.
pub fn inline(pairs: &[(String, String)]) -> String {
    if pairs.is_empty() {
        return "{}".into();
    }
    let parts: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{} = {v}", key(k)))
        .collect();
    format!("{{ {} }}", parts.join(", "))
}

/// One table's lines: `key = value` with optional comments.
#[derive(Default, Debug, Clone)]
pub struct Table {
    pub header: String,
    pub comments: Vec<String>,
    pub lines: Vec<(String, String)>,
}

impl Table {
    pub fn new(header: impl Into<String>) -> Self {
        Self {
            header: header.into(),
            ..Self::default()
        }
    }

    pub fn set(&mut self, k: &str, value: String) -> &mut Self {
        self.lines.push((k.to_owned(), value));
        self
    }

    pub fn comment(&mut self, text: impl Into<String>) -> &mut Self {
        self.comments.push(text.into());
        self
    }

    pub fn write(&self, out: &mut String) {
        for c in &self.comments {
            for line in c.lines() {
                let _ = writeln!(out, "# {line}");
            }
        }
        if !self.header.is_empty() {
            let _ = writeln!(out, "{}", self.header);
        }
        for (k, v) in &self.lines {
            let _ = writeln!(out, "{} = {v}", key(k));
        }
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped() {
        assert_eq!(string("a\"b\\c"), r#"'a"b\c'"#);
        assert_eq!(string("plain"), "\"plain\"");
        assert_eq!(key("X-Frame-Options"), "X-Frame-Options");
        assert_eq!(key("a b"), "\"a b\"");
        assert_eq!(strings(&["a", "b"]), r#"["a", "b"]"#);
        let t: toml::Table = toml::from_str(&format!(
            "v = {}",
            inline(&[("x y".into(), string("1")), ("z".into(), strings(&["2"]))])
        ))
        .unwrap();
        assert_eq!(t["v"]["x y"].as_str(), Some("1"));
    }
}
