//! A directory's listing (nginx's `autoindex`), written as HTML or as nginx's
//! `autoindex_format json`. Pure: the entries come from `disk`, already filtered (hidden
//! names, links out of the root).
//!
//! Names are written for two readers: HTML-escaped where a person reads them, and
//! percent-encoded (every byte but the unreserved ones) in links, so that a name such as
//! `a:b` or `x?y#z` links to itself and not to a scheme, a query or a fragment.

use bytes::Bytes;
use std::fmt::Write;
use std::time::SystemTime;

/// How a listing is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Html,
    Json,
}

impl Format {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "html" => Some(Self::Html),
            "json" => Some(Self::Json),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Html => "text/html; charset=utf-8",
            Self::Json => "application/json",
        }
    }
}

/// One directory entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub dir: bool,
    pub len: u64,
    pub modified: SystemTime,
}

/// Directories first, then files, each by name (nginx's order).
pub fn sort(entries: &mut [Entry]) {
    entries.sort_unstable_by(|a, b| b.dir.cmp(&a.dir).then_with(|| a.name.cmp(&b.name)));
}

/// The listing of `entries` (sorted) for the directory the client asked for at `path` (its
/// decoded path, ending in `/`); `truncated` says that entries were left out past the limit.
pub fn render(format: Format, path: &str, entries: &[Entry], truncated: bool) -> Bytes {
    match format {
        Format::Html => html(path, entries, truncated),
        Format::Json => json(entries),
    }
}

fn html(path: &str, entries: &[Entry], truncated: bool) -> Bytes {
    let mut page = String::with_capacity(256 + entries.len() * 160);
    let title = escape_html(path);
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html>\n<head><meta charset=\"utf-8\"><title>Index of {title}</title></head>\n\
         <body>\n<h1>Index of {title}</h1>\n<table>\n\
         <tr><th>Name</th><th>Last modified</th><th>Size</th></tr>\n"
    );
    if path != "/" {
        page.push_str("<tr><td><a href=\"../\">../</a></td><td></td><td></td></tr>\n");
    }
    for entry in entries {
        let slash = if entry.dir { "/" } else { "" };
        let size = if entry.dir {
            "-".to_owned()
        } else {
            entry.len.to_string()
        };
        let _ = writeln!(
            page,
            "<tr><td><a href=\"{}{slash}\">{}{slash}</a></td><td>{}</td><td>{size}</td></tr>",
            encode_link(&entry.name),
            escape_html(&entry.name),
            httpdate::fmt_http_date(entry.modified),
        );
    }
    page.push_str("</table>\n");
    if truncated {
        page.push_str("<p>The listing stops here: the directory has more entries.</p>\n");
    }
    page.push_str("</body>\n</html>\n");
    Bytes::from(page)
}

fn json(entries: &[Entry]) -> Bytes {
    let list: Vec<serde_json::Value> = entries
        .iter()
        .map(|entry| {
            let mut item = serde_json::json!({
                "name": entry.name,
                "type": if entry.dir { "directory" } else { "file" },
                "mtime": httpdate::fmt_http_date(entry.modified),
            });
            if !entry.dir {
                item["size"] = entry.len.into();
            }
            item
        })
        .collect();
    Bytes::from(serde_json::Value::Array(list).to_string())
}

fn escape_html(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

fn encode_link(name: &str) -> String {
    let mut link = String::with_capacity(name.len());
    for &byte in name.as_bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            link.push(byte as char);
        } else {
            let _ = write!(link, "%{byte:02X}");
        }
    }
    link
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn entry(name: &str, dir: bool, len: u64) -> Entry {
        Entry {
            name: name.to_owned(),
            dir,
            len,
            modified: SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_600_000),
        }
    }

    #[test]
    fn directories_come_first_then_names_in_order() {
        let mut entries = vec![
            entry("b.txt", false, 1),
            entry("z", true, 0),
            entry("a.txt", false, 2),
            entry("c", true, 0),
        ];
        sort(&mut entries);
        let names: Vec<_> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["c", "z", "a.txt", "b.txt"]);
    }

    #[test]
    fn html_escapes_names_and_encodes_their_links() {
        let entries = [
            entry("sub", true, 0),
            entry("<script>&\"'.txt", false, 12),
            entry("a:b?c#d e%.txt", false, 3),
            entry("café.txt", false, 5),
        ];
        let page = render(Format::Html, "/docs/<x>/", &entries, false);
        let page = std::str::from_utf8(&page).unwrap();
        assert!(
            page.contains("<title>Index of /docs/&lt;x&gt;/</title>"),
            "{page}"
        );
        assert!(page.contains("<a href=\"../\">../</a>"));
        assert!(page.contains("<a href=\"sub/\">sub/</a>"));
        assert!(page.contains(
            "<a href=\"%3Cscript%3E%26%22%27.txt\">&lt;script&gt;&amp;&quot;&#39;.txt</a>"
        ));
        assert!(page.contains("<a href=\"a%3Ab%3Fc%23d%20e%25.txt\">a:b?c#d e%.txt</a>"));
        assert!(page.contains("<a href=\"caf%C3%A9.txt\">café.txt</a>"));
        assert!(page.contains("<td>12</td>"));
        assert!(page.contains("<td>-</td>"));
        assert!(!page.contains("<script>"));
        assert!(!page.contains("listing stops"));
    }

    #[test]
    fn the_root_has_no_parent_link_and_a_cut_listing_says_so() {
        let page = render(Format::Html, "/", &[entry("a", false, 1)], true);
        let page = std::str::from_utf8(&page).unwrap();
        assert!(!page.contains("../"));
        assert!(page.contains("listing stops here"));
    }

    #[test]
    fn json_is_nginxs_autoindex_format() {
        let entries = [entry("sub", true, 0), entry("a \"b\".txt", false, 7)];
        let body = render(Format::Json, "/", &entries, false);
        let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let mtime = httpdate::fmt_http_date(entries[0].modified);
        assert_eq!(
            parsed,
            serde_json::json!([
                {"name": "sub", "type": "directory", "mtime": mtime},
                {"name": "a \"b\".txt", "type": "file", "mtime": mtime, "size": 7},
            ])
        );
    }
}
