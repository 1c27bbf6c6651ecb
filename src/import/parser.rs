//! nginx's config as a tree of directives, with `include` expanded in place.
//!
//! A relative `include` path is resolved as nginx resolves it: against the directory of the
//! main config file (nginx's conf prefix when started with `-c FILE`), not against the file
//! that holds the `include`. Globs (`*`, `?`, `[...]`) are expanded in sorted order, as
//! glob(3) does; a glob that matches nothing includes nothing, a plain path must exist.
//! Includes nest at most `MAX_INCLUDE_DEPTH` deep and a file that includes itself (directly
//! or through others) is an error; blocks nest at most `MAX_BLOCK_DEPTH` deep.

use super::lexer::{self, Located, Token};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const MAX_INCLUDE_DEPTH: usize = 16;
pub const MAX_BLOCK_DEPTH: usize = 32;
/// Files read in all, so a glob over a huge directory cannot run away.
const MAX_FILES: usize = 1000;

/// Where a directive was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loc {
    pub file: Arc<str>,
    pub line: usize,
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    pub name: String,
    pub args: Vec<String>,
    /// The `{ ... }` body, for block directives.
    pub block: Option<Vec<Directive>>,
    pub loc: Loc,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub loc: Loc,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.loc, self.message)
    }
}

impl std::error::Error for ParseError {}

/// Where files come from: the disk, or (in tests) a map of names to texts.
pub trait Source {
    fn read(&self, path: &Path) -> Result<String, String>;
    /// The files matching a glob pattern, sorted.
    fn glob(&self, pattern: &Path) -> Result<Vec<PathBuf>, String>;
}

pub struct Disk;

impl Source for Disk {
    fn read(&self, path: &Path) -> Result<String, String> {
        std::fs::read_to_string(path).map_err(|e| e.to_string())
    }

    fn glob(&self, pattern: &Path) -> Result<Vec<PathBuf>, String> {
        let mut found = vec![PathBuf::new()];
        for component in pattern.components() {
            let part = component.as_os_str().to_string_lossy();
            let mut next = Vec::new();
            for base in &found {
                if has_glob(&part) {
                    let dir = if base.as_os_str().is_empty() {
                        Path::new(".")
                    } else {
                        base.as_path()
                    };
                    let Ok(entries) = std::fs::read_dir(dir) else {
                        continue;
                    };
                    let mut names: Vec<String> = entries
                        .filter_map(Result::ok)
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .filter(|name| !name.starts_with('.') && glob_match(&part, name))
                        .collect();
                    names.sort();
                    next.extend(names.into_iter().map(|name| base.join(name)));
                } else {
                    next.push(base.join(component.as_os_str()));
                }
                if next.len() > MAX_FILES {
                    return Err(format!("more than {MAX_FILES} files match"));
                }
            }
            found = next;
        }
        Ok(found.into_iter().filter(|p| p.is_file()).collect())
    }
}

pub fn has_glob(text: &str) -> bool {
    text.contains(['*', '?', '['])
}

/// glob(3) matching of one path component: `*`, `?`, `[abc]`, `[a-z]`, `[!x]`.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    fn go(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('*') => (0..=n.len()).any(|skip| go(&p[1..], &n[skip..])),
            Some('?') => !n.is_empty() && go(&p[1..], &n[1..]),
            Some('[') => {
                let Some(end) = p.iter().skip(2).position(|&c| c == ']').map(|e| e + 2) else {
                    return n.first() == Some(&'[') && go(&p[1..], &n[1..]);
                };
                let Some(&c) = n.first() else { return false };
                let mut set = &p[1..end];
                let negate = matches!(set.first(), Some('!' | '^'));
                if negate {
                    set = &set[1..];
                }
                let mut hit = false;
                let mut i = 0;
                while i < set.len() {
                    if i + 2 < set.len() && set[i + 1] == '-' {
                        hit |= set[i] <= c && c <= set[i + 2];
                        i += 3;
                    } else {
                        hit |= set[i] == c;
                        i += 1;
                    }
                }
                hit != negate && go(&p[end + 1..], &n[1..])
            }
            Some(&c) => n.first() == Some(&c) && go(&p[1..], &n[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // Bound the backtracking of many stars over long names.
    if p.iter().filter(|&&c| c == '*').count() > 8 || n.len() > 255 {
        return false;
    }
    go(&p, &n)
}

/// Parses the main config file and everything it includes.
pub fn parse_file(source: &dyn Source, path: &Path) -> Result<Vec<Directive>, ParseError> {
    let prefix = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut state = State {
        source,
        prefix,
        stack: Vec::new(),
        files: 0,
    };
    let at = Loc {
        file: Arc::from(path.display().to_string()),
        line: 0,
    };
    state.file(path, &at)
}

struct State<'a> {
    source: &'a dyn Source,
    prefix: PathBuf,
    /// The files being read, outermost first (for cycles and depth).
    stack: Vec<PathBuf>,
    files: usize,
}

impl State<'_> {
    fn file(&mut self, path: &Path, included_at: &Loc) -> Result<Vec<Directive>, ParseError> {
        let err = |message: String| ParseError {
            loc: included_at.clone(),
            message,
        };
        let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        if self.stack.contains(&key) {
            return Err(err(format!(
                "include cycle: {} includes itself",
                path.display()
            )));
        }
        if self.stack.len() >= MAX_INCLUDE_DEPTH {
            return Err(err(format!(
                "includes nest deeper than {MAX_INCLUDE_DEPTH} files"
            )));
        }
        self.files += 1;
        if self.files > MAX_FILES {
            return Err(err(format!("more than {MAX_FILES} files included")));
        }
        let text = self
            .source
            .read(path)
            .map_err(|e| err(format!("cannot read {}: {e}", path.display())))?;
        let file: Arc<str> = Arc::from(path.display().to_string());
        let tokens = lexer::lex(&text).map_err(|e| ParseError {
            loc: Loc {
                file: Arc::clone(&file),
                line: e.line,
            },
            message: e.message,
        })?;
        self.stack.push(key);
        let mut pos = 0;
        let result = self.block(&tokens, &mut pos, &file, 0, None);
        self.stack.pop();
        result
    }

    /// Directives up to the end of the file, or (when `open` is the `{` line) up to the `}`.
    fn block(
        &mut self,
        tokens: &[Located],
        pos: &mut usize,
        file: &Arc<str>,
        depth: usize,
        open: Option<usize>,
    ) -> Result<Vec<Directive>, ParseError> {
        let at = |line: usize| Loc {
            file: Arc::clone(file),
            line,
        };
        let mut out = Vec::new();
        loop {
            let Some(first) = tokens.get(*pos) else {
                return match open {
                    Some(line) => Err(ParseError {
                        loc: at(line),
                        message: "unexpected end of file: this \"{\" is never closed".into(),
                    }),
                    None => Ok(out),
                };
            };
            *pos += 1;
            let name = match &first.token {
                Token::Close if open.is_some() => return Ok(out),
                Token::Close => {
                    return Err(ParseError {
                        loc: at(first.line),
                        message: "unexpected \"}\"".into(),
                    });
                }
                Token::Semicolon | Token::Open => {
                    return Err(ParseError {
                        loc: at(first.line),
                        message: format!(
                            "unexpected \"{}\"",
                            if first.token == Token::Open { "{" } else { ";" }
                        ),
                    });
                }
                Token::Word { text, .. } => text.clone(),
            };
            let mut args = Vec::new();
            loop {
                let Some(next) = tokens.get(*pos) else {
                    return Err(ParseError {
                        loc: at(first.line),
                        message: format!("directive \"{name}\" is not terminated by \";\""),
                    });
                };
                *pos += 1;
                match &next.token {
                    Token::Word { text, .. } => args.push(text.clone()),
                    Token::Semicolon => {
                        let directive = Directive {
                            name,
                            args,
                            block: None,
                            loc: at(first.line),
                        };
                        if directive.name == "include" {
                            out.extend(self.include(&directive)?);
                        } else {
                            out.push(directive);
                        }
                        break;
                    }
                    Token::Open => {
                        if depth + 1 > MAX_BLOCK_DEPTH {
                            return Err(ParseError {
                                loc: at(next.line),
                                message: format!("blocks nest deeper than {MAX_BLOCK_DEPTH}"),
                            });
                        }
                        let body = self.block(tokens, pos, file, depth + 1, Some(next.line))?;
                        out.push(Directive {
                            name,
                            args,
                            block: Some(body),
                            loc: at(first.line),
                        });
                        break;
                    }
                    Token::Close => {
                        return Err(ParseError {
                            loc: at(next.line),
                            message: format!("unexpected \"}}\" in directive \"{name}\""),
                        });
                    }
                }
            }
        }
    }

    fn include(&mut self, directive: &Directive) -> Result<Vec<Directive>, ParseError> {
        let err = |message: String| ParseError {
            loc: directive.loc.clone(),
            message,
        };
        let [pattern] = directive.args.as_slice() else {
            return Err(err("include takes one file or glob".into()));
        };
        let path = Path::new(pattern);
        let full = if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.prefix.join(path)
        };
        let files = if has_glob(pattern) {
            self.source
                .glob(&full)
                .map_err(|e| err(format!("include {pattern}: {e}")))?
        } else {
            vec![full]
        };
        let mut out = Vec::new();
        for file in files {
            out.extend(self.file(&file, &directive.loc)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Files in memory, for tests.
    pub struct Memory(pub BTreeMap<PathBuf, String>);

    impl Source for Memory {
        fn read(&self, path: &Path) -> Result<String, String> {
            self.0
                .get(path)
                .cloned()
                .ok_or_else(|| "No such file or directory".to_string())
        }
        fn glob(&self, pattern: &Path) -> Result<Vec<PathBuf>, String> {
            let (dir, name) = (
                pattern.parent().unwrap_or(Path::new("")),
                pattern.file_name(),
            );
            let name = name
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            Ok(self
                .0
                .keys()
                .filter(|p| p.parent() == Some(dir))
                .filter(|p| glob_match(&name, &p.file_name().unwrap().to_string_lossy()))
                .cloned()
                .collect())
        }
    }

    fn memory(files: &[(&str, &str)]) -> Memory {
        Memory(
            files
                .iter()
                .map(|(p, t)| (PathBuf::from(p), (*t).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn blocks_nest_and_directives_keep_their_lines() {
        let src = memory(&[(
            "/etc/nginx/nginx.conf",
            "http {\n  server {\n    listen 80;\n    location /a/ {\n      location /a/b/ { proxy_pass http://x; }\n    }\n  }\n}\n",
        )]);
        let tree = parse_file(&src, Path::new("/etc/nginx/nginx.conf")).unwrap();
        let http = &tree[0];
        assert_eq!(http.name, "http");
        let server = &http.block.as_ref().unwrap()[0];
        let body = server.block.as_ref().unwrap();
        assert_eq!(body[0].name, "listen");
        assert_eq!(body[0].args, ["80"]);
        assert_eq!(body[0].loc.line, 3);
        let inner = &body[1].block.as_ref().unwrap()[0];
        assert_eq!(inner.args, ["/a/b/"]);
        assert_eq!(inner.loc.to_string(), "/etc/nginx/nginx.conf:5");
        assert_eq!(inner.block.as_ref().unwrap()[0].name, "proxy_pass");
    }

    #[test]
    fn includes_resolve_against_the_main_files_directory_with_globs_sorted() {
        let src = memory(&[
            ("/etc/nginx/nginx.conf", "http { include conf.d/*.conf; }"),
            // Relative to /etc/nginx (the prefix), not to conf.d/.
            (
                "/etc/nginx/conf.d/b.conf",
                "server { include snippets/x.conf; }",
            ),
            ("/etc/nginx/conf.d/a.conf", "upstream u { server 1.2.3.4; }"),
            ("/etc/nginx/conf.d/a.txt", "junk"),
            ("/etc/nginx/snippets/x.conf", "listen 8080;"),
        ]);
        let tree = parse_file(&src, Path::new("/etc/nginx/nginx.conf")).unwrap();
        let http = tree[0].block.as_ref().unwrap();
        assert_eq!(http[0].name, "upstream");
        assert_eq!(http[1].name, "server");
        let listen = &http[1].block.as_ref().unwrap()[0];
        assert_eq!(listen.args, ["8080"]);
        assert_eq!(listen.loc.to_string(), "/etc/nginx/snippets/x.conf:1");
    }

    #[test]
    fn include_cycles_and_missing_files_are_errors_with_places() {
        let src = memory(&[
            ("/n/nginx.conf", "http {\n include a.conf; }"),
            ("/n/a.conf", "include b.conf;"),
            ("/n/b.conf", "\n\ninclude a.conf;"),
        ]);
        let err = parse_file(&src, Path::new("/n/nginx.conf")).unwrap_err();
        assert!(err.message.contains("cycle"), "{err}");
        assert_eq!(err.loc.to_string(), "/n/b.conf:3");

        let src = memory(&[("/n/nginx.conf", "include missing.conf;")]);
        let err = parse_file(&src, Path::new("/n/nginx.conf")).unwrap_err();
        assert!(
            err.to_string().starts_with("/n/nginx.conf:1: cannot read"),
            "{err}"
        );
    }

    #[test]
    fn syntax_errors_name_file_and_line() {
        for (text, line, what) in [
            ("http {\n server {\n", 2, "never closed"),
            ("a;\n}\n", 2, "unexpected \"}\""),
            ("a b\n", 1, "not terminated"),
            ("a;\n;\n", 2, "unexpected \";\""),
        ] {
            let src = memory(&[("/n.conf", text)]);
            let err = parse_file(&src, Path::new("/n.conf")).unwrap_err();
            assert_eq!(err.loc.line, line, "{text:?}: {err}");
            assert!(err.message.contains(what), "{text:?}: {err}");
        }
    }

    #[test]
    fn nesting_depth_is_bounded() {
        let deep = "a {".repeat(MAX_BLOCK_DEPTH + 1) + &"}".repeat(MAX_BLOCK_DEPTH + 1);
        let src = memory(&[("/n.conf", &deep)]);
        let err = parse_file(&src, Path::new("/n.conf")).unwrap_err();
        assert!(err.message.contains("nest deeper"), "{err}");
        let ok = "a {".repeat(MAX_BLOCK_DEPTH) + &"}".repeat(MAX_BLOCK_DEPTH);
        let src = memory(&[("/n.conf", &ok)]);
        assert!(parse_file(&src, Path::new("/n.conf")).is_ok());
    }

    #[test]
    fn include_depth_is_bounded() {
        let files: Vec<(String, String)> = (0..=MAX_INCLUDE_DEPTH + 1)
            .map(|i| (format!("/n/{i}.conf"), format!("include {}.conf;", i + 1)))
            .collect();
        let refs: Vec<(&str, &str)> = files
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let err = parse_file(&memory(&refs), Path::new("/n/0.conf")).unwrap_err();
        assert!(err.message.contains("nest deeper"), "{err}");
    }

    #[test]
    fn glob_matching() {
        assert!(glob_match("*.conf", "a.conf"));
        assert!(!glob_match("*.conf", "a.conf.bak"));
        assert!(glob_match("site-?.conf", "site-1.conf"));
        assert!(glob_match("[a-c]*", "bob"));
        assert!(!glob_match("[!a-c]*", "bob"));
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn no_input_panics_the_lexer_or_parser(text in "[a-z {};#\"'\\\\$\n~^*=@/.0-9]{0,200}") {
                let src = memory(&[("/n/nginx.conf", &text)]);
                let _ = parse_file(&src, Path::new("/n/nginx.conf"));
            }

            #[test]
            fn arbitrary_bytes_do_not_panic(text in any::<String>()) {
                let _ = lexer::lex(&text);
                let src = memory(&[("/n/nginx.conf", &text)]);
                let _ = parse_file(&src, Path::new("/n/nginx.conf"));
            }

            #[test]
            fn includes_of_any_shape_end(links in proptest::collection::vec((0usize..5, 0usize..5), 0..12)) {
                // Five files including each other at random: cycles are reported, never followed.
                let mut texts = vec![String::new(); 5];
                for &(from, to) in &links {
                    texts[from].push_str(&format!("include {to}.conf;\n"));
                }
                // Is a cycle reachable from file 0? (Depth-first, with the path on a stack.)
                fn cycle(at: usize, links: &[(usize, usize)], path: &mut Vec<usize>) -> bool {
                    if path.contains(&at) {
                        return true;
                    }
                    path.push(at);
                    let found = links.iter().filter(|l| l.0 == at).any(|l| cycle(l.1, links, path));
                    path.pop();
                    found
                }
                let expect_cycle = cycle(0, &links, &mut Vec::new());
                let files: Vec<(String, String)> = texts
                    .into_iter()
                    .enumerate()
                    .map(|(i, t)| (format!("/n/{i}.conf"), t))
                    .collect();
                let refs: Vec<(&str, &str)> = files.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
                match parse_file(&memory(&refs), Path::new("/n/0.conf")) {
                    Ok(_) => prop_assert!(!expect_cycle),
                    Err(e) => prop_assert!(expect_cycle && e.message.contains("cycle"), "{}", e),
                }
            }
        }
    }
}
