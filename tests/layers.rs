//! The module layout as a checked rule: every top-level module of `src/` sits in a layer and
//! imports only from layers below it, and the files of one module directory do not import
//! each other in a circle. A new module must be given its layer here; an import that reaches
//! up (or a circle between sibling files) fails with the files that make it.
//!
//! Imports are read from the source text (`crate::x` and `super::x` paths outside the
//! `#[cfg(test)]` part of a file): what tests use does not count.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom up. A module may import from any layer strictly below its own.
const LAYERS: &[&[&str]] = &[
    // Vocabulary with no imports from the crate: allocator, password files and tokens (auth),
    // certificate files, compression
    // (codings, Accept-Encoding, the encoded body), the HTTP/1.1
    // codec, the request body, connection control, log setup, the per-core workers, trace
    // context and span export.
    &[
        "allocator",
        "auth",
        "certs",
        "compress",
        "connection",
        "http1",
        "logging",
        "request_body",
        "trace",
        "workers",
    ],
    // The demo backend: an order API apart from the proxy, which takes part in traces.
    &["demo"],
    // Routing: path normal form, matchers, the compiled router, rewrites and templates (the
    // config checks its patterns with these parsers).
    &["route"],
    // The config (with its own parsers and located errors) and the metric families.
    &["config", "metrics"],
    // State shared between replicas: the Redis connection, its timeout and breaker.
    &["shared"],
    // Header rules, TLS settings, per-server health state and breakers, cache policy and store,
    // rate limits, the pure edge policies (admin writes, CORS, forward auth's decisions).
    &["cache", "headers", "health", "limit", "policy", "tls"],
    // Static files: path safety, index and try_files, conditional and range answers (with
    // the cache's rules), the file body.
    &["files"],
    // Servers, pools, balancers, the active prober, DNS discovery.
    &["upstream"],
    // Certificates ordered from an ACME directory (it fills the challenge answers that `tls`
    // holds for the listeners).
    &["acme"],
    // Compiling a config into what the request path needs.
    &["snapshot"],
    // One request, from its head to its response.
    &["proxy"],
    // Listeners and client connections.
    &["server"],
    // Triggers, check, compile, swap.
    &["reload"],
    // The admin listener (it triggers reloads).
    &["admin"],
    // Start and stop of the whole.
    &["app"],
    // Tools beside `main`: the nginx importer (it uses only `config`) and the routing
    // explainer (it runs the proxy's routing over a compiled snapshot).
    &["import", "routes_tool"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file that is not its unit tests, without comments: a `#[cfg(test)]` module
/// with a body (by convention the file's last item) is cut off, a `#[cfg(test)] mod x;` line
/// is dropped, and anything else under `#[cfg(test)]` is kept (it may hide no import).
fn non_test_text(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut code = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(at) = rest.find("#[cfg(test)]") {
        code.push_str(&rest[..at]);
        let after = rest[at + "#[cfg(test)]".len()..].trim_start();
        let item_end = after.find([';', '{']).unwrap_or(after.len());
        let declares_module = after.starts_with("mod ") || after.starts_with("pub mod ");
        match after.as_bytes().get(item_end) {
            Some(b'{') if declares_module => {
                rest = "";
                break;
            }
            Some(b';') if declares_module => rest = &after[item_end + 1..],
            _ => rest = after,
        }
    }
    code.push_str(rest);
    without_comments(&code)
}

/// `text` without `//` and `/* */` comments (string literals are not looked into: an import
/// path never sits in one).
fn without_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let line = rest.find("//");
        let block = rest.find("/*");
        match (line, block) {
            (Some(l), b) if b.is_none_or(|b| l < b) => {
                out.push_str(&rest[..l]);
                rest = rest[l..].find('\n').map_or("", |end| &rest[l + end..]);
            }
            (_, Some(b)) => {
                out.push_str(&rest[..b]);
                rest = rest[b + 2..]
                    .find("*/")
                    .map_or("", |end| &rest[b + 2 + end + 2..]);
                out.push(' ');
            }
            _ => {
                out.push_str(rest);
                return out;
            }
        }
    }
}

/// The top-level modules `super::` paths in a file reach: a path with more `super::` than
/// the file is deep below `src/` names `crate::` items (for `src/x.rs` and `src/x/mod.rs`
/// one is enough).
fn names_through_super(text: &str, depth: usize) -> BTreeSet<String> {
    let supers = "super::".repeat(depth);
    names_after(text, &supers)
}

/// Every identifier that follows `prefix` in `text` (`crate::` → `proxy`, `config`, …),
/// including each first name of a group (`crate::{proxy::X, config}`).
fn names_after(text: &str, prefix: &str) -> BTreeSet<String> {
    let leading_name = |s: &str| -> String {
        let mut s = s.trim_start();
        // An attribute on a group member (`#[cfg(unix)] proxy::X`) comes before its path.
        while let Some(attribute) = s.strip_prefix("#[") {
            s = attribute
                .find(']')
                .map_or("", |end| attribute[end + 1..].trim_start());
        }
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut names = BTreeSet::new();
    let mut searched = 0;
    while let Some(found) = text[searched..].find(prefix) {
        let at = searched + found;
        let before = text[..at].chars().next_back();
        searched = at + prefix.len();
        let rest = &text[searched..];
        // Part of a longer name or path (`my_crate::`, `super::super::`): not this prefix.
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            // The members at the group's own level: split on commas outside inner braces.
            let mut depth = 0usize;
            let mut start = 0;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        names.insert(leading_name(&group[start..i]));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        names.insert(leading_name(&group[start..i]));
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            continue;
        }
        names.insert(leading_name(rest));
    }
    names.remove("");
    names
}

/// A circle in `edges`, as the path around it, if there is one.
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_owned(), 1);
        path.push(node.to_owned());
        for next in edges.get(node).into_iter().flatten() {
            match state.get(next.as_str()).copied().unwrap_or(0) {
                0 => {
                    if let Some(cycle) = visit(next, edges, state, path) {
                        return Some(cycle);
                    }
                }
                1 => {
                    let start = path.iter().position(|n| n == next).unwrap_or(0);
                    let mut cycle = path[start..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                _ => {}
            }
        }
        path.pop();
        state.insert(node.to_owned(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in edges.keys() {
        if state.get(node.as_str()).copied().unwrap_or(0) == 0 {
            let mut path = Vec::new();
            if let Some(cycle) = visit(node, edges, &mut state, &mut path) {
                return Some(cycle);
            }
        }
    }
    None
}

#[test]
fn top_level_modules_import_only_from_layers_below() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut problems = Vec::new();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let relative = file.strip_prefix(&src).expect("under src");
        let first = relative
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .unwrap_or_default();
        let module = first.trim_end_matches(".rs");
        if module == "lib" || module == "main" {
            continue;
        }
        let Some(layer) = layer_of(module) else {
            problems.push(format!(
                "src/{first}: module `{module}` has no layer in tests/layers.rs"
            ));
            continue;
        };
        let text = non_test_text(file);
        // `src/x.rs` and `src/x/mod.rs` are one level below the crate root; `src/x/a.rs` two.
        let depth = relative.components().count()
            - usize::from(relative.file_name().is_some_and(|n| n == "mod.rs"));
        let mut used_modules = names_after(&text, "crate::");
        used_modules.extend(names_through_super(&text, depth));
        if used_modules.contains("self") || text.contains("crate as ") {
            problems.push(format!(
                "{}: names the crate root itself (an alias would hide what it imports)",
                relative.display()
            ));
        }
        for used in used_modules {
            if used == module || used == "self" {
                continue;
            }
            edges
                .entry(module.to_owned())
                .or_default()
                .insert(used.clone());
            match layer_of(&used) {
                Some(below) if below < layer => {}
                Some(_) => problems.push(format!(
                    "{}: `{module}` (layer {layer}) imports `{used}`, which is not below it",
                    relative.display()
                )),
                None => problems.push(format!(
                    "{}: imports `crate::{used}`, a module with no layer",
                    relative.display()
                )),
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert_eq!(find_cycle(&edges), None, "a circle between modules");
}

#[test]
fn files_of_one_module_do_not_import_each_other_in_a_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut by_dir: BTreeMap<PathBuf, Vec<PathBuf>> = BTreeMap::new();
    for file in files {
        let dir = file.parent().expect("a parent").to_path_buf();
        by_dir.entry(dir).or_default().push(file);
    }
    for (dir, files) in by_dir {
        if dir == src {
            continue;
        }
        // Siblings only: a module's mod.rs declares and re-exports its children.
        let siblings: BTreeSet<String> = files
            .iter()
            .filter_map(|f| f.file_stem().and_then(|s| s.to_str()))
            .filter(|stem| *stem != "mod")
            .map(str::to_owned)
            .collect();
        let module_path = dir
            .strip_prefix(&src)
            .expect("under src")
            .to_string_lossy()
            .replace('/', "::");
        let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for file in &files {
            let Some(stem) = file.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            if stem == "mod" {
                continue;
            }
            let text = non_test_text(file);
            let mut used = names_after(&text, "super::");
            used.extend(names_after(&text, &format!("crate::{module_path}::")));
            let targets = used
                .into_iter()
                .filter(|name| name != stem && siblings.contains(name))
                .collect();
            edges.insert(stem.to_owned(), targets);
        }
        assert_eq!(
            find_cycle(&edges),
            None,
            "a circle between the files of src/{}",
            dir.strip_prefix(&src).expect("under src").display()
        );
    }
}

#[test]
fn the_checker_finds_a_circle_and_a_name_after_a_prefix() {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    edges.entry("a".into()).or_default().insert("b".into());
    edges.entry("b".into()).or_default().insert("c".into());
    assert_eq!(find_cycle(&edges), None);
    edges.entry("c".into()).or_default().insert("a".into());
    assert_eq!(
        find_cycle(&edges),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    let names = names_after(
        "use crate::proxy::X; my_crate::no; crate::config",
        "crate::",
    );
    assert_eq!(
        names,
        BTreeSet::from(["config".to_owned(), "proxy".to_owned()])
    );
    let grouped = names_after(
        "use crate::{\n    admin::A,\n    cache::{B, C},\n    self,\n};",
        "crate::",
    );
    assert_eq!(
        grouped,
        BTreeSet::from(["admin".to_owned(), "cache".to_owned(), "self".to_owned()])
    );
    let hidden = without_comments(
        "use crate::{\n    // the proxy\n    proxy::Reply, /* and */ #[cfg(unix)] config::C,\n};",
    );
    assert_eq!(
        names_after(&hidden, "crate::"),
        BTreeSet::from(["config".to_owned(), "proxy".to_owned()])
    );
    assert_eq!(
        names_through_super("use super::proxy::Reply; use super::super::x;", 1),
        BTreeSet::from(["proxy".to_owned(), "super".to_owned()])
    );
}
