//! `gatehouse check` and `gatehouse run` on good and bad config files: exit codes, `config ok`,
//! and every error listed as `file:line:column: key: message`.

mod common;

use common::process::{Outcome, run_gatehouse as gatehouse};

use std::net::TcpListener;
use std::path::{Path, PathBuf};

/// A config file under the target's temp dir, removed on drop.
struct TempConfig {
    path: PathBuf,
    text: String,
}

impl TempConfig {
    fn new(name: &str, text: &str) -> Self {
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("check-{name}-{}.toml", std::process::id()));
        std::fs::write(&path, text).unwrap();
        Self {
            path,
            text: text.to_owned(),
        }
    }

    fn path(&self) -> &str {
        self.path.to_str().unwrap()
    }

    /// `line:column` (1-based) where `marker` first occurs in the file.
    fn place(&self, marker: &str) -> String {
        let offset = self
            .text
            .find(marker)
            .unwrap_or_else(|| panic!("{marker:?} not in the config"));
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let column = offset - before.rfind('\n').map_or(0, |p| p + 1) + 1;
        format!("{line}:{column}")
    }

    fn check(&self) -> Outcome {
        gatehouse(&["check", "--config", self.path()])
    }
}

impl Drop for TempConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A valid config with `extra` appended (which may open new tables).
fn valid_with(extra: &str) -> String {
    format!(
        r#"[admin]
bind = ""

[[listener]]
name = "public"
bind = "127.0.0.1:18080"

[[route]]
path_prefix = "/"
upstream = "app"

[upstream.app]
servers = ["127.0.0.1:18001"]
{extra}
"#
    )
}

/// Asserts a failed check whose stderr has the error `key` located at `marker`, with a message
/// containing `fragment`.
fn assert_error_at(config: &TempConfig, marker: &str, key: &str, fragment: &str) {
    let outcome = config.check();
    assert_eq!(outcome.code, Some(1), "stderr:\n{}", outcome.stderr);
    let prefix = format!("{}:{}: {key}: ", config.path(), config.place(marker));
    let line = outcome
        .stderr
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no line starting {prefix:?} in stderr:\n{}", outcome.stderr));
    assert!(
        line.contains(fragment),
        "{line:?} should mention {fragment:?}"
    );
    assert!(
        !outcome.stdout.contains("config ok"),
        "stdout: {}",
        outcome.stdout
    );
}

#[test]
fn check_accepts_the_shipped_config() {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/gatehouse.toml");
    let outcome = gatehouse(&["check", "--config", shipped.to_str().unwrap()]);
    assert_eq!(outcome.code, Some(0), "stderr:\n{}", outcome.stderr);
    assert!(
        outcome.stdout.contains("config ok"),
        "stdout: {}",
        outcome.stdout
    );
}

#[test]
fn check_accepts_a_minimal_valid_config() {
    let config = TempConfig::new("valid", &valid_with(""));
    let outcome = config.check();
    assert_eq!(outcome.code, Some(0), "stderr:\n{}", outcome.stderr);
    assert!(outcome.stdout.contains("config ok"));
}

#[test]
fn check_reports_an_unknown_key() {
    let config = TempConfig::new("unknown", &valid_with("colour = \"blue\""));
    assert_error_at(&config, "colour", "upstream.app.colour", "unknown field");
}

#[test]
fn check_reports_an_unknown_section() {
    let config = TempConfig::new("section", &valid_with("[frontend]\nport = 80"));
    assert_error_at(&config, "frontend", "frontend", "unknown section");
}

#[test]
fn check_reports_a_bad_duration() {
    let config = TempConfig::new("duration", &valid_with("connect_timeout = \"fast\""));
    assert_error_at(
        &config,
        "\"fast\"",
        "upstream.app.connect_timeout",
        "invalid duration",
    );
}

#[test]
fn check_reports_a_bad_size() {
    let config = TempConfig::new(
        "size",
        &valid_with("[limits]\nmax_body_bytes = \"ten megs\""),
    );
    assert_error_at(
        &config,
        "\"ten megs\"",
        "limits.max_body_bytes",
        "invalid size",
    );
}

#[test]
fn check_reports_a_route_to_a_missing_upstream() {
    let config = TempConfig::new(
        "route",
        &valid_with("[[route]]\npath_prefix = \"/api\"\nupstream = \"nowhere\""),
    );
    assert_error_at(&config, "\"nowhere\"", "route[1].upstream", "nowhere");
}

#[test]
fn check_reports_two_listeners_on_one_address() {
    let config = TempConfig::new(
        "listeners",
        &valid_with("[[listener]]\nname = \"other\"\nbind = \"127.0.0.1:18080\" # again"),
    );
    assert_error_at(
        &config,
        "\"127.0.0.1:18080\" # again",
        "listener[1].bind",
        "already used",
    );
}

#[test]
fn check_reports_an_empty_server_list() {
    let config = TempConfig::new("empty", &valid_with("[upstream.spare]\nservers = []"));
    assert_error_at(&config, "[]", "upstream.spare.servers", "empty");
}

#[test]
fn check_reports_unparsable_addresses() {
    let config = TempConfig::new(
        "address",
        &valid_with(
            "[[listener]]\nname = \"other\"\nbind = \"localhost:80\"\n\n\
             [upstream.spare]\nservers = [\"not an address\"]",
        ),
    );
    assert_error_at(
        &config,
        "\"localhost:80\"",
        "listener[1].bind",
        "invalid address",
    );
    assert_error_at(
        &config,
        "\"not an address\"",
        "upstream.spare.servers[0]",
        "invalid server address",
    );
}

#[test]
fn check_lists_every_error_of_a_file() {
    let text = r#"[admin]
bind = ""
colour = "blue"

[[listener]]
name = "a"
bind = "127.0.0.1:18080"

[[listener]]
name = "b"
bind = "127.0.0.1:18080" # twice

[[listener]]
name = "c"
bind = "localhost:80"

[[route]]
upstream = "nowhere"

[upstream.app]
servers = ["127.0.0.1:18001"]
connect_timeout = "fast"

[upstream.empty]
servers = []

[upstream.badaddr]
servers = ["not an address"]

[limits]
max_body_bytes = "ten megs"
"#;
    let config = TempConfig::new("many", text);
    let outcome = config.check();
    assert_eq!(outcome.code, Some(1), "stderr:\n{}", outcome.stderr);
    let expected = [
        ("colour", "admin.colour"),
        ("\"127.0.0.1:18080\" # twice", "listener[1].bind"),
        ("\"localhost:80\"", "listener[2].bind"),
        ("\"nowhere\"", "route[0].upstream"),
        ("\"fast\"", "upstream.app.connect_timeout"),
        ("[]", "upstream.empty.servers"),
        ("\"not an address\"", "upstream.badaddr.servers[0]"),
        ("\"ten megs\"", "limits.max_body_bytes"),
    ];
    let error_lines: Vec<&str> = outcome
        .stderr
        .lines()
        .filter(|l| l.starts_with(config.path()))
        .collect();
    assert_eq!(
        error_lines.len(),
        expected.len(),
        "stderr:\n{}",
        outcome.stderr
    );
    // In file order, each at its place.
    for (line, (marker, key)) in error_lines.iter().zip(expected) {
        let prefix = format!("{}:{}: {key}: ", config.path(), config.place(marker));
        assert!(
            line.starts_with(&prefix),
            "{line:?} should start {prefix:?}"
        );
    }
    assert!(
        outcome.stderr.contains("8 error(s)"),
        "stderr:\n{}",
        outcome.stderr
    );
}

#[test]
fn check_reports_every_bad_key_of_a_table() {
    // serde stops at a table's first error; `check` goes on to the others, and a route to the
    // broken upstream is not an error of its own.
    let text = r#"[admin]
bind = ""

[[listener]]
name = "public"
bind = "127.0.0.1:18080"

[[route]]
path_prefix = "/orders"
upstream = "orders"

[upstream.orders]
servers = ["127.0.0.1:18001"]
colour = "blue"
connect_timeout = "fast"
retries = "three"

[upstream.orders.health]
interval = "often"
"#;
    let config = TempConfig::new("every-key", text);
    let outcome = config.check();
    assert_eq!(outcome.code, Some(1), "stderr:\n{}", outcome.stderr);
    let expected = [
        ("14:1", "colour", "upstream.orders.colour", "unknown field"),
        (
            "15:19",
            "\"fast\"",
            "upstream.orders.connect_timeout",
            "invalid duration",
        ),
        (
            "16:11",
            "\"three\"",
            "upstream.orders.retries",
            "expected u32",
        ),
        (
            "19:12",
            "\"often\"",
            "upstream.orders.health.interval",
            "invalid duration",
        ),
    ];
    let error_lines: Vec<&str> = outcome
        .stderr
        .lines()
        .filter(|l| l.starts_with(config.path()))
        .collect();
    assert_eq!(
        error_lines.len(),
        expected.len(),
        "stderr:\n{}",
        outcome.stderr
    );
    for (line, (place, marker, key, fragment)) in error_lines.iter().zip(expected) {
        assert_eq!(config.place(marker), place, "{marker} moved in the text");
        let prefix = format!("{}:{place}: {key}: ", config.path());
        assert!(
            line.starts_with(&prefix),
            "{line:?} should start {prefix:?}"
        );
        assert!(
            line.contains(fragment),
            "{line:?} should mention {fragment:?}"
        );
    }
    assert!(
        !outcome.stderr.contains("no upstream named"),
        "stderr:\n{}",
        outcome.stderr
    );
    assert!(
        outcome.stderr.contains("4 error(s)"),
        "stderr:\n{}",
        outcome.stderr
    );
}

#[test]
fn check_locates_out_of_range_values_too() {
    // Values that parse but are out of range are in the file as much as unparsable ones:
    // `check` promises every error "with its place".
    let config = TempConfig::new(
        "range",
        &valid_with("connect_timeout = \"0s\"\n\n[limits]\nmax_header_bytes = \"1KiB\""),
    );
    assert_error_at(
        &config,
        "\"0s\"",
        "upstream.app.connect_timeout",
        "greater than zero",
    );
    assert_error_at(
        &config,
        "\"1KiB\"",
        "limits.max_header_bytes",
        "at least 8KiB",
    );
}

#[test]
fn check_reports_bad_consistent_hashing_settings() {
    let config = TempConfig::new(
        "hash-key",
        &valid_with(
            "balance = \"consistent_hash\"\nhash_key = \"header:X User\"\nhash_balance_factor = 0.5\n\n\
             [upstream.other]\nservers = [\"127.0.0.1:18002\"]\nhash_key = \"path\"",
        ),
    );
    assert_error_at(
        &config,
        "\"header:X User\"",
        "upstream.app.hash_key",
        "not a header name",
    );
    assert_error_at(
        &config,
        "0.5",
        "upstream.app.hash_balance_factor",
        "between 1.0 and 100.0",
    );
    // A key on an upstream that does not hash would be silently ignored: an error instead.
    assert_error_at(
        &config,
        "\"path\"",
        "upstream.other.hash_key",
        "only used with balance = \"consistent_hash\"",
    );
    let unknown = TempConfig::new(
        "hash-key-unknown",
        &valid_with("balance = \"consistent_hash\"\nhash_key = \"query:id\""),
    );
    assert_error_at(
        &unknown,
        "\"query:id\"",
        "upstream.app.hash_key",
        "expected \"client_ip\"",
    );
}

#[test]
fn check_accepts_consistent_hashing() {
    let config = TempConfig::new(
        "hash-ok",
        &valid_with(
            "balance = \"consistent_hash\"\nhash_key = \"cookie:session\"\nhash_balance_factor = 1.25",
        ),
    );
    let outcome = config.check();
    assert_eq!(outcome.code, Some(0), "stderr:\n{}", outcome.stderr);
}

#[test]
fn check_on_a_missing_file_fails() {
    let missing = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("no-such-gatehouse.toml");
    let outcome = gatehouse(&["check", "--config", missing.to_str().unwrap()]);
    assert_eq!(outcome.code, Some(1));
    assert!(
        outcome.stderr.contains("cannot read config file"),
        "stderr:\n{}",
        outcome.stderr
    );
}

#[test]
fn run_with_a_bad_config_exits_1_without_binding() {
    // Hold the listener's port: had gatehouse tried to bind before checking, it would fail
    // with "cannot bind" instead of listing the config error.
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let text = format!(
        r#"[admin]
bind = ""

[[listener]]
name = "public"
bind = "127.0.0.1:{port}"

[[route]]
upstream = "app"

[upstream.app]
servers = ["127.0.0.1:18001"]
response_timeout = "soon"
"#
    );
    let config = TempConfig::new("run", &text);
    let outcome = gatehouse(&["run", "--config", config.path()]);
    assert_eq!(outcome.code, Some(1), "stderr:\n{}", outcome.stderr);
    let prefix = format!(
        "{}:{}: upstream.app.response_timeout: ",
        config.path(),
        config.place("\"soon\"")
    );
    assert!(
        outcome.stderr.lines().any(|l| l.starts_with(&prefix)),
        "stderr:\n{}",
        outcome.stderr
    );
    assert!(
        outcome.stderr.contains("not started"),
        "stderr:\n{}",
        outcome.stderr
    );
    assert!(
        !outcome.stderr.contains("cannot bind") && !outcome.stderr.contains("listening"),
        "stderr:\n{}",
        outcome.stderr
    );
    drop(held);
}
