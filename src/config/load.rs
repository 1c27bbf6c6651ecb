//! Reading a config file: TOML parsing, per-section deserialization so that one bad section
//! does not hide the errors of the others (nor one bad key those of its table: `bad_keys`), and
//! errors located as file:line:column with the key.

use super::Config;
use super::bad_keys::bad_keys;
use super::errors::{ConfigError, ConfigErrors, Locator, Section};
use super::gaps::{Gaps, Unparsed};
use super::validate;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::path::Path;
use toml::Spanned;
use toml::de::{DeArray, DeTable, DeValue, ValueDeserializer};

/// Reads and checks a config file: every syntax, schema and meaning error, or the `Config`.
pub fn load_file(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            key: String::new(),
            message: format!("cannot read config file: {e}"),
        }])
    })?;
    load_str(path, &text)
}

/// Like `load_file`, for text already read; `path` is only used in error messages.
pub fn load_str(path: &Path, text: &str) -> Result<Config, ConfigErrors> {
    let root = match DeTable::parse(text) {
        Ok(root) => root,
        Err(e) => {
            let locator = Locator::new(path, text, None);
            let span = e.span().unwrap_or(0..1);
            let span = if span == (0..0) { 0..1 } else { span };
            return Err(ConfigErrors(vec![locator.error(
                span,
                "",
                format!("invalid TOML: {}", e.message()),
            )]));
        }
    };
    let root_table = root.get_ref();
    let locator = Locator::new(path, text, Some(root_table));
    let mut errors = Vec::new();
    let mut config = Config::default();
    let mut gaps = Gaps::default();

    for (key, value) in root_table.iter() {
        let errors = &mut errors;
        let name: &str = key.get_ref().as_ref();
        let whole = || Section {
            key: name.to_owned(),
            key_span: Some(key.span()),
            value,
        };
        match name {
            "process" => store(section(&locator, whole(), errors), &mut config.process),
            "log" => store(section(&locator, whole(), errors), &mut config.log),
            "admin" => store(section(&locator, whole(), errors), &mut config.admin),
            "limits" => store(section(&locator, whole(), errors), &mut config.limits),
            "reload" => store(section(&locator, whole(), errors), &mut config.reload),
            "demo" => store(section(&locator, whole(), errors), &mut config.demo),
            "resolver" => store(section(&locator, whole(), errors), &mut config.resolver),
            "redis" => store(section(&locator, whole(), errors), &mut config.redis),
            "tracing" => store(section(&locator, whole(), errors), &mut config.tracing),
            "listener" => {
                let Some(items) = array_of_tables(&locator, "listener", value, errors) else {
                    gaps.listeners.unnamed = true;
                    continue;
                };
                for (i, item) in items.iter().enumerate() {
                    let part = Section {
                        key: format!("listener[{i}]"),
                        key_span: None,
                        value: item,
                    };
                    match section(&locator, part, errors) {
                        Some(listener) => {
                            config.listeners.push(listener);
                            gaps.listener_at.push(i);
                        }
                        None => match string_at(item, "name") {
                            Some(name) => {
                                gaps.listeners.names.insert(name.to_owned());
                            }
                            None => gaps.listeners.unnamed = true,
                        },
                    }
                }
            }
            "route" => {
                let Some(items) = array_of_tables(&locator, "route", value, errors) else {
                    continue;
                };
                for (i, item) in items.iter().enumerate() {
                    let part = Section {
                        key: format!("route[{i}]"),
                        key_span: None,
                        value: item,
                    };
                    if let Some(route) = section(&locator, part, errors) {
                        config.routes.push(route);
                        gaps.route_at.push(i);
                    }
                }
            }
            "error_page" => {
                let Some(items) = array_of_tables(&locator, "error_page", value, errors) else {
                    continue;
                };
                for (i, item) in items.iter().enumerate() {
                    let part = Section {
                        key: format!("error_page[{i}]"),
                        key_span: None,
                        value: item,
                    };
                    if let Some(page) = section(&locator, part, errors) {
                        config.error_pages.push(page);
                    }
                }
            }
            "upstream" => named_tables(
                &locator,
                "upstream",
                value,
                errors,
                &mut config.upstreams,
                &mut gaps.upstreams,
            ),
            "cache" => named_tables(
                &locator,
                "cache",
                value,
                errors,
                &mut config.caches,
                &mut gaps.caches,
            ),
            "limit" => named_tables(
                &locator,
                "limit",
                value,
                errors,
                &mut config.rate_limits,
                &mut gaps.rate_limits,
            ),
            "compression" => named_tables(
                &locator,
                "compression",
                value,
                errors,
                &mut config.compressions,
                &mut gaps.compressions,
            ),
            "cors" => named_tables(
                &locator,
                "cors",
                value,
                errors,
                &mut config.cors,
                &mut gaps.cors,
            ),
            "forward_auth" => named_tables(
                &locator,
                "forward_auth",
                value,
                errors,
                &mut config.forward_auths,
                &mut gaps.forward_auths,
            ),
            "basic_auth" => named_tables(
                &locator,
                "basic_auth",
                value,
                errors,
                &mut config.basic_auths,
                &mut gaps.basic_auths,
            ),
            "jwt" => named_tables(
                &locator,
                "jwt",
                value,
                errors,
                &mut config.jwts,
                &mut gaps.jwts,
            ),
            other => errors.push(locator.error(
                key.span(),
                other.to_string(),
                "unknown section; expected one of process, log, admin, listener, route, upstream, cache, compression, limit, limits, cors, forward_auth, basic_auth, jwt, error_page, reload, demo, resolver, redis, tracing",
            )),
        }
    }
    validate::validate(&config, &gaps, &locator, &mut errors);
    errors.sort_by_key(|e| (e.line, e.column));
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors(errors))
    }
}

fn store<T>(parsed: Option<T>, slot: &mut T) {
    if let Some(parsed) = parsed {
        *slot = parsed;
    }
}

/// Deserializes one table, or reports every bad key in it.
fn section<T: DeserializeOwned>(
    locator: &Locator<'_>,
    section: Section<'_, '_>,
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    let value = section.value;
    match T::deserialize(ValueDeserializer::from(value.clone())) {
        Ok(parsed) => Some(parsed),
        Err(e) => {
            let found = bad_keys::<T>(value);
            if found.is_empty() {
                // The trials accepted what toml refused: toml's one error is all there is to say.
                let span = e.span().unwrap_or_else(|| value.span());
                errors.push(locator.error_in(&section, span, e.message()));
            }
            for bad in found {
                errors.push(locator.error_in(&section, bad.span, bad.message));
            }
            None
        }
    }
}

fn array_of_tables<'a, 'i>(
    locator: &Locator<'_>,
    name: &str,
    value: &'a Spanned<DeValue<'i>>,
    errors: &mut Vec<ConfigError>,
) -> Option<&'a DeArray<'i>> {
    match value.get_ref() {
        DeValue::Array(items) => Some(items),
        _ => {
            errors.push(locator.error(
                value.span(),
                name,
                format!("expected an array of tables [[{name}]]"),
            ));
            None
        }
    }
}

/// `[upstream.NAME]`, `[cache.NAME]`, `[compression.NAME]` and `[limit.NAME]`: each table on
/// its own, the names of those that fail kept in `unparsed`.
fn named_tables<T: DeserializeOwned>(
    locator: &Locator<'_>,
    section_name: &str,
    value: &Spanned<DeValue<'_>>,
    errors: &mut Vec<ConfigError>,
    parsed: &mut BTreeMap<String, T>,
    unparsed: &mut Unparsed,
) {
    let DeValue::Table(tables) = value.get_ref() else {
        errors.push(locator.error(
            value.span(),
            section_name,
            format!("expected tables [{section_name}.NAME]"),
        ));
        unparsed.unnamed = true;
        return;
    };
    for (key, table) in tables.iter() {
        let name = key.get_ref().to_string();
        let table = Section {
            key: format!("{section_name}.{name}"),
            key_span: Some(key.span()),
            value: table,
        };
        match section(locator, table, errors) {
            Some(v) => {
                parsed.insert(name, v);
            }
            None => {
                unparsed.names.insert(name);
            }
        }
    }
}

/// The string at `key` of a table, if it is one.
fn string_at<'a>(value: &'a Spanned<DeValue<'_>>, key: &str) -> Option<&'a str> {
    let DeValue::Table(table) = value.get_ref() else {
        return None;
    };
    table
        .iter()
        .find(|(k, _)| k.get_ref().as_ref() == key)
        .and_then(|(_, v)| v.get_ref().as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every error as (line, column, key, message).
    fn errors(text: &str) -> Vec<(usize, usize, String, String)> {
        match load_str(Path::new("t.toml"), text) {
            Ok(_) => Vec::new(),
            Err(ConfigErrors(errors)) => errors
                .into_iter()
                .map(|e| (e.line, e.column, e.key, e.message))
                .collect(),
        }
    }

    /// (line, column, key) of each error.
    fn places(found: &[(usize, usize, String, String)]) -> Vec<(usize, usize, &str)> {
        found
            .iter()
            .map(|(l, c, k, _)| (*l, *c, k.as_str()))
            .collect()
    }

    fn keys(text: &str) -> Vec<String> {
        errors(text).into_iter().map(|e| e.2).collect()
    }

    const LISTENER: &str = "[[listener]]\nname = \"public\"\nbind = \"127.0.0.1:18080\"\n";

    #[test]
    fn every_bad_key_of_a_table_gets_its_own_place() {
        let text = format!(
            "{LISTENER}[[route]]\nupstream = \"orders\"\ncache = \"pages\"\n\
             [upstream.orders]\nservers = [\"127.0.0.1:1\", {{ addr = \"127.0.0.1:2\", weight = \"heavy\" }}]\n\
             retries = -1\nshade = 1\n\
             [upstream.orders.breaker]\nwindow = \"long\"\nopen_for = 5\n\
             [cache.pages]\nmax_size = \"big\"\ndefault_ttl = \"forever\"\n"
        );
        let found = errors(&text);
        let places = places(&found);
        assert_eq!(
            places,
            [
                (8, 60, "upstream.orders.servers[1].weight"),
                (9, 11, "upstream.orders.retries"),
                (10, 1, "upstream.orders.shade"),
                (12, 10, "upstream.orders.breaker.window"),
                (13, 12, "upstream.orders.breaker.open_for"),
                (15, 12, "cache.pages.max_size"),
                (16, 15, "cache.pages.default_ttl"),
            ],
            "{found:#?}"
        );
    }

    #[test]
    fn references_to_entries_that_did_not_parse_are_not_errors_again() {
        // Whole sections of the wrong shape: any name may be meant.
        let text = format!(
            "{LISTENER}[[route]]\nupstream = \"orders\"\ncache = \"pages\"\n\
             [[upstream]]\nservers = []\n[[cache]]\nmax_size = \"1MiB\"\n"
        );
        assert_eq!(keys(&text), ["upstream", "cache"]);

        // A listener that failed still has its name; other names are still checked.
        let text = format!(
            "{LISTENER}[[listener]]\nname = \"inner\"\nbind = 8080\n\
             [[route]]\nlistener = \"inner\"\nupstream = \"app\"\n\
             [[route]]\nlistener = \"outer\"\nupstream = \"app\"\n\
             [upstream.app]\nservers = [\"127.0.0.1:1\"]\n"
        );
        assert_eq!(keys(&text), ["listener[1].bind", "route[1].listener"]);

        // Without a readable name, a failed listener may be any of them.
        let text = "[[listener]]\nname = 1\nbind = \"127.0.0.1:18080\"\n\
                    [[route]]\nlistener = \"outer\"\nupstream = \"app\"\n\
                    [upstream.app]\nservers = [\"127.0.0.1:1\"]\n";
        assert_eq!(keys(text), ["listener[0].name"]);
    }

    #[test]
    fn entries_after_one_that_did_not_parse_keep_their_place_in_keys() {
        let text = "[[listener]]\nname = \"a\"\nbind = 1\n\
                    [[listener]]\nname = \"b\"\nbind = \"nowhere\"\n\
                    [[route]]\nupstream = 1\n\
                    [[route]]\nupstream = \"app\"\npath_prefix = \"api\"\n\
                    [upstream.app]\nservers = [\"127.0.0.1:1\"]\n";
        assert_eq!(
            keys(text),
            [
                "listener[0].bind",
                "listener[1].bind",
                "route[0].upstream",
                "route[1].path_prefix"
            ]
        );
    }

    #[test]
    fn a_table_with_very_many_errors_lists_the_first_and_how_many_more() {
        let servers = "{ addr = \"127.0.0.1:1\", weight = \"x\" },\n".repeat(120);
        let text = format!(
            "{LISTENER}[[route]]\nupstream = \"app\"\ncache = \"c\"\n\
             [upstream.app]\nservers = [\n{servers}]\n[cache.c]\nmax_size = \"big\"\n"
        );
        let found = errors(&text);
        // The first 50 of the upstream, the line for the 70 left out, then the other table's.
        assert_eq!(found.len(), 52, "{found:#?}");
        assert!(found[..50].iter().all(|e| e.3.starts_with("invalid type")));
        let (line, column, key, message) = &found[50];
        assert_eq!((*line, *column), (59, 34));
        assert_eq!(key, "upstream.app.servers[50].weight");
        assert_eq!(
            message,
            "70 more errors in this table from here on are not listed \
             (at most 50 are listed per table)"
        );
        assert_eq!(found[51].2, "cache.c.max_size");
        let all = load_str(Path::new("t.toml"), &text).expect_err("errors");
        assert_eq!(all.total(), 121, "the lines listed stand for every error");
    }

    #[test]
    fn rate_limit_errors_are_placed_and_references_checked() {
        let text = format!(
            "{LISTENER}[[route]]\nupstream = \"app\"\nlimits = [\"api\", \"nope\"]\n\
             [upstream.app]\nservers = [\"127.0.0.1:1\"]\n\
             [limit.api]\nrate = \"fast\"\nkey = [\"client_ip\", \"ip\"]\nipv6_prefix = 0\n\
             [limit.ok]\nrate = \"5/m\"\nkey = \"header:X-Api-Key\"\nburst = 3\nnodelay = true\n"
        );
        let found = errors(&text);
        let places = places(&found);
        assert_eq!(
            places,
            [
                (6, 18, "route[0].limits"),
                (10, 8, "limit.api.rate"),
                (11, 7, "limit.api.key"),
                (12, 15, "limit.api.ipv6_prefix"),
            ],
            "{found:#?}"
        );
        assert!(
            found[0]
                .3
                .contains("no limit named \"nope\" (configured: api, ok)")
        );
        assert!(found[2].3.contains("invalid key \"ip\""));
        // A limit table that does not parse is not reported again where a route names it.
        let text = format!(
            "{LISTENER}[[route]]\nupstream = \"app\"\nlimits = [\"api\"]\n\
             [upstream.app]\nservers = [\"127.0.0.1:1\"]\n[limit.api]\nrate = 5\n"
        );
        assert_eq!(keys(&text), ["limit.api.rate"]);
    }

    #[test]
    fn compression_errors_are_placed_and_references_checked() {
        let text = format!(
            "{LISTENER}[[route]]\nupstream = \"app\"\ncompression = \"nope\"\n\
             [upstream.app]\nservers = [\"127.0.0.1:1\"]\n\
             [compression.web]\ntypes = [\"text/*\", \"json\"]\n\
             encodings = [\"gzip\", \"deflate\", \"gzip\"]\ngzip_level = 10\nzstd_level = 0\n\
             [compression.ok]\nmin_length = \"1KiB\"\nbrotli_level = 11\n"
        );
        let found = errors(&text);
        let places: Vec<(usize, usize, &str)> = found
            .iter()
            .map(|(l, c, k, _)| (*l, *c, k.as_str()))
            .collect();
        assert_eq!(
            places,
            [
                (6, 15, "route[0].compression"),
                (10, 20, "compression.web.types"),
                (11, 22, "compression.web.encodings"),
                (11, 33, "compression.web.encodings"),
                (12, 14, "compression.web.gzip_level"),
                (13, 14, "compression.web.zstd_level"),
            ],
            "{found:#?}"
        );
        assert!(
            found[0]
                .3
                .contains("no compression named \"nope\" (configured: ok, web)")
        );
        assert!(found[2].3.contains("unknown encoding \"deflate\""));
        assert!(found[3].3.contains("listed twice"));
        assert!(found[4].3.contains("between 1 and 9"));
        // Unknown keys and values of the wrong kind are found like everywhere else.
        let text = format!(
            "{LISTENER}[[route]]\nupstream = \"app\"\ncompression = \"web\"\n\
             [upstream.app]\nservers = [\"127.0.0.1:1\"]\n\
             [compression.web]\ngzip_comp_level = 1\nmin_length = 20\n"
        );
        assert_eq!(
            keys(&text),
            [
                "compression.web.gzip_comp_level",
                "compression.web.min_length"
            ]
        );
    }

    #[test]
    fn access_rules_are_checked_where_they_are_written() {
        let text = format!(
            "{LISTENER}[[route]]\nupstream = \"app\"\naccess = [\"allow 10.0.0.0/8\", \"permit all\"]\n\
             [upstream.app]\nservers = [\"127.0.0.1:1\"]\n"
        );
        let found = errors(&text);
        assert_eq!(
            places(&found),
            [(6, 31, "route[0].access[1]")],
            "{found:#?}"
        );
        assert!(found[0].3.contains("invalid access rule \"permit all\""));
    }

    /// Documents that are TOML, or nearly, made of this schema's sections, keys and values.
    fn near_toml() -> impl Strategy<Value = String> {
        let headers = prop::sample::select(vec![
            "",
            "[admin]",
            "[[listener]]",
            "[[route]]",
            "[upstream.a]",
            "[upstream.b.health]",
            "[upstream.c.breaker]",
            "[upstream.d.tls]",
            "[cache.c]",
            "[limit.l]",
            "[compression.z]",
            "[cors.w]",
            "[forward_auth.f]",
            "[limits]",
            "[log]",
            "[reload]",
            "[demo]",
            "[resolver]",
            "[process]",
            "[upstream]",
            "[[upstream]]",
            "[[cache]]",
            "[listener]",
            "[route.x]",
            "[x]",
            "[[listener.tls.certs]]",
        ]);
        let keys = vec![
            "name",
            "bind",
            "upstream",
            "cache",
            "listener",
            "host",
            "path_prefix",
            "servers",
            "connect_timeout",
            "health",
            "breaker",
            "tls",
            "interval",
            "path",
            "max_size",
            "level",
            "backends",
            "nameservers",
            "timeout",
            "certs",
            "weight",
            "addr",
            "a",
            "request_headers",
            "colour",
            "window",
            "retries",
            "balance",
            "max_body_bytes",
            "expect_status",
            "failure_rate",
            "redirect_https",
            "hsts",
            "set",
            "remove",
            "rate",
            "burst",
            "key",
            "limits",
            "compression",
            "types",
            "encodings",
            "gzip_level",
            "min_length",
            "origins",
            "credentials",
            "cors",
            "forward_auth",
            "cache_key",
            "copy_headers",
        ];
        let values = prop::sample::select(vec![
            "\"a\"",
            "\"127.0.0.1:1\"",
            "\"2s\"",
            "\"fast\"",
            "\"10MiB\"",
            "0",
            "-1",
            "99999999999999999999",
            "1.5",
            "nan",
            "true",
            "[]",
            "{}",
            "\"*\"",
            "\"/\"",
            "[\"127.0.0.1:1\", { addr = 5, weight = \"x\" }, [1]]",
            "{ interval = \"x\", path = 1, b = { c = [] } }",
            "{ certs = [{ cert = 1 }, {}], min_version = 3 }",
            "{ set = { a = \"b\", \"\" = 1 }, remove = [2] }",
            "1979-05-27T07:32:00Z",
            "\"round_robin\"",
            "\"p2c\"",
            "\"10/s\"",
            "[\"zstd\", \"br\"]",
            "[\"client_ip\", \"header:\"]",
            "'''x'''",
        ]);
        // Distinct keys in a section, so that most documents are TOML and reach the schema.
        let section = (
            headers,
            prop::sample::subsequence(keys, 0..6),
            prop::collection::vec(values, 6),
        )
            .prop_map(|(header, keys, values)| {
                let mut text = format!("{header}\n");
                for (key, value) in keys.iter().zip(values) {
                    text.push_str(&format!("{key} = {value}\n"));
                }
                text
            });
        let noise = prop_oneof![9 => Just(String::new()), 1 => ".{0,12}"];
        (prop::collection::vec(section, 0..8), noise)
            .prop_map(|(sections, noise)| sections.concat() + &noise)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn no_bytes_panic_the_loader(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = load_str(Path::new("t.toml"), &String::from_utf8_lossy(&bytes));
        }

        #[test]
        fn no_near_toml_panics_the_loader(text in near_toml()) {
            if let Err(ConfigErrors(errors)) = load_str(Path::new("t.toml"), &text) {
                prop_assert!(!errors.is_empty());
                for e in errors {
                    prop_assert!(e.line <= text.lines().count() + 1, "{e} out of the text");
                }
            }
        }
    }
}
