//! nginx directives → gatehouse config. Settings are inherited down http → server →
//! location → nested location as nginx inherits them (array-like directives only when the
//! inner level has none of its own); each location becomes a `[[route]]` per listener and
//! server name. What has no equivalent is reported (`file:line: directive: why`), never dropped.

use super::emit::{self, Table};
use super::parser::{Directive, Loc};
use crate::config::{parse_duration, parse_size};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

/// One directive that was not translated, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub loc: Loc,
    pub directive: String,
    pub why: String,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.loc, self.directive, self.why)
    }
}

/// The result: the TOML text and what could not be translated.
#[derive(Debug, Clone)]
pub struct Translation {
    pub toml: String,
    pub reports: Vec<Report>,
}

/// nginx's defaults that differ from gatehouse's and change what a request sees.
const NGINX_PROXY_TIMEOUT: &str = "60s";
const NGINX_BODY_LIMIT: u64 = 1 << 20;

/// `error_page CODES [=CODE] URI`: the codes, the status change, the URI, where.
type ErrorPage = (Vec<u16>, Option<String>, String, Loc);

/// Settings that nginx inherits from outer levels. `None` = not set at this level.
#[derive(Debug, Clone, Default)]
struct Settings {
    proxy_set_header: Option<Vec<(String, String, Loc)>>,
    add_header: Option<Vec<(String, String, bool, Loc)>>,
    hide_header: Option<Vec<String>>,
    access: Option<Vec<String>>,
    error_page: Option<Vec<ErrorPage>>,
    limit_req: Option<Vec<(String, u32, bool, Loc)>>,
    limit_conn: Option<Vec<(String, u32, Loc)>>,
    limit_req_status: Option<u16>,
    limit_conn_status: Option<u16>,
    body_size: Option<(u64, Loc)>,
    connect_timeout: Option<String>,
    read_timeout: Option<String>,
    next_upstream_off: Option<bool>,
    next_upstream_tries: Option<u32>,
    proxy_cache: Option<Option<String>>,
    proxy_cache_valid: Option<String>,
    gzip: Option<bool>,
    gzip_types: Option<Vec<String>>,
    gzip_min_length: Option<u64>,
    gzip_comp_level: Option<u32>,
    auth_basic: Option<Option<String>>,
    auth_basic_user_file: Option<String>,
    auth_request: Option<Option<(String, Loc)>>,
    ssl_certificate: Option<Vec<String>>,
    ssl_certificate_key: Option<Vec<String>>,
    ssl_protocols: Option<(Vec<String>, Loc)>,
    /// `ssl_early_data on|off`, where it was said.
    ssl_early_data: Option<(bool, Loc)>,
    real_ip_from: Option<Vec<String>>,
    real_ip_header: Option<(String, Loc)>,
    real_ip_recursive: Option<bool>,
    mirror: Option<Vec<(String, Loc)>>,
    default_type: Option<String>,
    /// `root`, or `alias` (then `alias` is true): where files are served from.
    root: Option<String>,
    alias: Option<bool>,
    index: Option<Vec<String>>,
    try_files: Option<(Vec<String>, Loc)>,
    autoindex: Option<bool>,
    autoindex_format: Option<(String, Loc)>,
    expires: Option<(Vec<String>, Loc)>,
}

macro_rules! inherit {
    ($self:ident, $own:ident, $($field:ident),*) => {
        $( if $own.$field.is_some() { $self.$field = $own.$field.clone(); } )*
    };
}

impl Settings {
    /// nginx's merge: a value set at the inner level replaces the outer one whole.
    fn merged(&self, own: &Settings) -> Settings {
        let mut out = self.clone();
        inherit!(
            out,
            own,
            proxy_set_header,
            add_header,
            hide_header,
            access,
            error_page,
            limit_req,
            limit_conn,
            limit_req_status,
            limit_conn_status,
            body_size,
            connect_timeout,
            read_timeout,
            next_upstream_off,
            next_upstream_tries,
            proxy_cache,
            proxy_cache_valid,
            gzip,
            gzip_types,
            gzip_min_length,
            gzip_comp_level,
            auth_basic,
            auth_basic_user_file,
            auth_request,
            ssl_certificate,
            ssl_certificate_key,
            ssl_protocols,
            ssl_early_data,
            real_ip_from,
            real_ip_header,
            real_ip_recursive,
            mirror,
            default_type,
            root,
            alias,
            index,
            try_files,
            autoindex,
            autoindex_format,
            expires
        );
        out
    }
}

/// Appends to an array-like setting of this level (starting it if this level had none).
fn push<T>(slot: &mut Option<Vec<T>>, item: T) {
    slot.get_or_insert_with(Vec::new).push(item);
}

#[derive(Debug, Clone, PartialEq)]
enum Matcher {
    Prefix { path: String, stops_regex: bool },
    Exact(String),
    Regex { pattern: String, caseless: bool },
    Named(String),
}

#[derive(Debug, Clone)]
struct Location {
    loc: Loc,
    matcher: Matcher,
    /// The text after `location`, for comments.
    source: String,
    settings: Settings,
    proxy_pass: Option<(String, Loc)>,
    rewrites: Vec<Directive>,
    ret: Option<Directive>,
    internal: bool,
    /// The prefix of the enclosing location, for nested regexes.
    parent_prefix: Option<String>,
    nested_regex: bool,
}

#[derive(Debug, Clone)]
struct Listen {
    bind: String,
    ssl: bool,
    http2: bool,
    /// `listen ... quic`: HTTP/3 on the same port (`http3 = true` on the TLS listener).
    quic: bool,
    default: bool,
    proxy_protocol: bool,
    loc: Loc,
}

#[derive(Debug, Clone)]
struct Server {
    loc: Loc,
    listens: Vec<Listen>,
    names: Vec<String>,
    settings: Settings,
    locations: Vec<Location>,
    ret: Option<Directive>,
    redirect_rewrites: Vec<Directive>,
}

#[derive(Debug, Clone, Default)]
struct Upstream {
    loc: Option<Loc>,
    servers: Vec<(String, u32)>,
    balance: Option<&'static str>,
    hash_key: Option<String>,
    keepalive: Option<usize>,
    keepalive_timeout: Option<String>,
    max_conns: Option<u32>,
    max_fails: Option<u32>,
    fail_timeout: Option<String>,
    comments: Vec<String>,
    https: bool,
}

#[derive(Debug, Clone)]
struct Split {
    key: String,
    arms: Vec<(f64, String)>,
    loc: Loc,
}

#[derive(Debug, Clone)]
struct ReqZone {
    key: Option<String>,
    rate: String,
    loc: Loc,
    /// burst and nodelay, fixed by the first `limit_req` that uses the zone.
    used: Option<(u32, bool)>,
}

#[derive(Debug, Clone, Default)]
struct Draft {
    comments: Vec<String>,
    body: Vec<(String, String)>,
    subtables: Vec<Table>,
    upstream: Option<String>,
    connect: String,
    read: String,
    retries: Option<u32>,
    targets: Vec<(String, String)>,
    name_path: String,
}

pub struct Translator {
    prefix: PathBuf,
    reports: Vec<Report>,
    upstreams: BTreeMap<String, Upstream>,
    splits: BTreeMap<String, Split>,
    req_zones: BTreeMap<String, ReqZone>,
    conn_zones: BTreeMap<String, (Option<String>, Loc)>,
    conn_limits: BTreeMap<String, u32>,
    cache_zones: BTreeMap<String, Option<u64>>,
    used_caches: BTreeSet<String>,
    /// `proxy_cache_valid` per cache zone, from the first location using it.
    cache_ttls: BTreeMap<String, String>,
    compressions: Vec<(String, Vec<(String, String)>)>,
    basic_auths: Vec<(String, String, String)>,
    forward_auths: BTreeMap<String, Vec<(String, String)>>,
    servers: Vec<Server>,
    process: Vec<(String, String)>,
    limits: BTreeMap<String, String>,
    log: Vec<(String, String)>,
    /// Some proxy_pass has no URI part (nginx then passes the path as the client sent it).
    passes_raw_uri: bool,
}

fn report(reports: &mut Vec<Report>, d: &Directive, why: impl Into<String>) {
    reports.push(Report {
        loc: d.loc.clone(),
        directive: d.name.clone(),
        why: why.into(),
    });
}

/// Directives about serving files that gatehouse decides for itself, with what it does.
const FILE_SERVING: &[(&str, &str)] = &[(
    "open_file_cache",
    "files.memory_cache keeps small files' contents, files.revalidate_after how long",
)];

fn file_serving_note(name: &str) -> Option<&'static str> {
    FILE_SERVING
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, why)| *why)
}

/// Directives whose effect gatehouse has built in: translated by doing nothing.
const INHERENT: &[(&str, &str)] = &[
    (
        "proxy_http_version",
        "gatehouse speaks HTTP/1.1 with keep-alive to upstreams",
    ),
    ("proxy_buffering", "gatehouse streams responses"),
    (
        "proxy_request_buffering",
        "gatehouse streams request bodies",
    ),
    (
        "proxy_cache_lock",
        "concurrent misses of one key always make one upstream request",
    ),
    (
        "gzip_vary",
        "gatehouse always sends Vary: Accept-Encoding with compression",
    ),
    ("tcp_nodelay", "gatehouse sets TCP_NODELAY"),
    (
        "proxy_pass_request_headers",
        "gatehouse passes the request's headers",
    ),
    (
        "proxy_pass_request_body",
        "gatehouse passes the request's body",
    ),
    ("sendfile", "gatehouse reads files in chunks itself"),
    (
        "tcp_nopush",
        "gatehouse writes a file's head with its first bytes",
    ),
    (
        "types",
        "gatehouse types files by their extension, from a built-in table like mime.types",
    ),
    ("etag", "gatehouse sends an ETag with files"),
];

impl Translator {
    pub fn new(main_file: &Path) -> Self {
        Self {
            prefix: main_file
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
            reports: Vec::new(),
            upstreams: BTreeMap::new(),
            splits: BTreeMap::new(),
            req_zones: BTreeMap::new(),
            conn_zones: BTreeMap::new(),
            conn_limits: BTreeMap::new(),
            cache_zones: BTreeMap::new(),
            used_caches: BTreeSet::new(),
            cache_ttls: BTreeMap::new(),
            compressions: Vec::new(),
            basic_auths: Vec::new(),
            forward_auths: BTreeMap::new(),
            servers: Vec::new(),
            process: Vec::new(),
            limits: BTreeMap::new(),
            log: Vec::new(),
            passes_raw_uri: false,
        }
    }

    fn report(&mut self, d: &Directive, why: impl Into<String>) {
        report(&mut self.reports, d, why);
    }

    fn note(&mut self, loc: &Loc, directive: &str, why: impl Into<String>) {
        self.reports.push(Report {
            loc: loc.clone(),
            directive: directive.into(),
            why: why.into(),
        });
    }

    fn path(&self, file: &str) -> String {
        let p = Path::new(file);
        if p.is_absolute() {
            file.to_owned()
        } else {
            self.prefix.join(p).display().to_string()
        }
    }

    pub fn translate(mut self, tree: &[Directive]) -> Translation {
        if !tree.iter().any(|d| d.name == "http") && tree.iter().any(|d| d.name == "server") {
            // A file holding only server blocks (a conf.d snippet): read it as an http body.
            self.http(tree);
            return self.finish();
        }
        for d in tree {
            match (d.name.as_str(), &d.block) {
                ("http", Some(body)) => self.http(body),
                ("worker_processes", None) => match d.args.first().map(String::as_str) {
                    Some("auto") => self.process.push(("worker_threads".into(), "0".into())),
                    Some(n) if n.parse::<usize>().is_ok() => {
                        self.process.push(("worker_threads".into(), n.to_owned()))
                    }
                    _ => self.report(d, "expected auto or a number"),
                },
                ("events", Some(body)) => {
                    for inner in body {
                        self.report(inner, "no equivalent: gatehouse's connection handling has no per-worker settings");
                    }
                }
                ("pid", _) => self.report(
                    d,
                    "no equivalent: gatehouse writes no pid file (it runs in the foreground; its supervisor knows the PID)",
                ),
                ("worker_rlimit_nofile", _) => self.report(
                    d,
                    "no equivalent: raise the open-files limit of gatehouse's service (LimitNOFILE, ulimit -n)",
                ),
                ("user" | "daemon" | "master_process", _) => self.report(
                    d,
                    "no equivalent: gatehouse runs in the foreground as the user that starts it",
                ),
                ("error_log", _) => {
                    self.report(d, "no equivalent: gatehouse logs to stderr (log.level)")
                }
                ("stream", _) => self.report(
                    d,
                    "no equivalent: gatehouse proxies HTTP, not TCP/UDP streams",
                ),
                _ => self.report(d, "no equivalent in gatehouse"),
            }
        }
        self.finish()
    }

    fn http(&mut self, body: &[Directive]) {
        let mut own = Settings::default();
        // First what servers refer to: upstreams, zones, split_clients.
        for d in body {
            match d.name.as_str() {
                "upstream" => self.upstream(d),
                "split_clients" => self.split_clients(d),
                "limit_req_zone" => self.limit_req_zone(d),
                "limit_conn_zone" => self.limit_conn_zone(d),
                "proxy_cache_path" => self.proxy_cache_path(d),
                _ => {}
            }
        }
        let mut servers = Vec::new();
        for d in body {
            match d.name.as_str() {
                "upstream" | "split_clients" | "limit_req_zone" | "limit_conn_zone"
                | "proxy_cache_path" => {}
                "server" => servers.push(d),
                "keepalive_timeout" => match d.args.first().and_then(|t| duration(t)) {
                    Some(t) => {
                        self.limits.insert("idle_timeout".into(), emit::string(&t));
                    }
                    None => self.report(d, "expected a duration"),
                },
                "client_header_timeout" => match d.args.first().and_then(|t| duration(t)) {
                    Some(t) => {
                        self.limits
                            .insert("header_read_timeout".into(), emit::string(&t));
                    }
                    None => self.report(d, "expected a duration"),
                },
                "underscores_in_headers" => {
                    let on = d.args.first().is_some_and(|a| a == "on");
                    self.limits
                        .insert("underscores_in_headers".into(), on.to_string());
                }
                "merge_slashes" => {
                    let on = d.args.first().is_none_or(|a| a != "off");
                    self.limits.insert("merge_slashes".into(), on.to_string());
                }
                "access_log" => {
                    if d.args.first().is_some_and(|a| a == "off") {
                        self.log.push(("access".into(), emit::string("off")));
                    } else {
                        self.log.push(("access".into(), emit::string("combined")));
                        self.report(d, "gatehouse writes its access log to stdout (log.access = \"combined\"), not to a file; custom formats are not translated");
                    }
                }
                "log_format" => self.report(
                    d,
                    "no equivalent: gatehouse's access log formats are text, json and combined",
                ),
                _ => {
                    if let Some(why) = file_serving_note(&d.name) {
                        self.report(d, format!("no equivalent: {why}"));
                    } else if !self.setting(d, &mut own) {
                        self.report(d, "no equivalent in gatehouse");
                    }
                }
            }
        }
        let http = Settings::default().merged(&own);
        let body_limit = http.body_size.as_ref().map_or(NGINX_BODY_LIMIT, |b| b.0);
        if body_limit > 0 {
            self.limits.insert(
                "max_body_bytes".into(),
                emit::string(&size_text(body_limit)),
            );
        }
        for d in servers {
            self.server(d, &http);
        }
    }

    fn upstream(&mut self, d: &Directive) {
        let (Some(name), Some(body)) = (d.args.first(), &d.block) else {
            self.report(d, "expected `upstream NAME { ... }`");
            return;
        };
        let mut up = Upstream {
            loc: Some(d.loc.clone()),
            ..Upstream::default()
        };
        let mut fails = BTreeSet::new();
        let mut first_fails: Option<(u32, String)> = None;
        let mut timeouts = BTreeSet::new();
        let mut conns = BTreeSet::new();
        for s in body {
            match s.name.as_str() {
                "server" => {
                    let Some(addr) = s.args.first() else {
                        self.report(s, "expected an address");
                        continue;
                    };
                    let mut weight = 1;
                    let mut down = false;
                    let mut max_fails = 1;
                    let mut fail_timeout = "10s".to_string();
                    let mut max_conns = 0;
                    for p in &s.args[1..] {
                        let (k, v) = p.split_once('=').unwrap_or((p.as_str(), ""));
                        match k {
                            "weight" => weight = v.parse().unwrap_or(1),
                            "max_fails" => max_fails = v.parse().unwrap_or(1),
                            "fail_timeout" => {
                                fail_timeout = duration(v).unwrap_or_else(|| "10s".into())
                            }
                            "max_conns" => max_conns = v.parse().unwrap_or(0),
                            "down" => down = true,
                            "backup" => {
                                self.report(s, "backup: gatehouse has no backup servers (every server takes traffic; health checks and breakers take failing ones out); the server is left out");
                                down = true;
                            }
                            _ => self.report(s, format!("{p}: no equivalent")),
                        }
                    }
                    if addr.starts_with("unix:") {
                        self.report(s, "unix sockets are not supported as upstream servers");
                        continue;
                    }
                    if down {
                        up.comments.push(format!("{}: server {addr} is down or backup in nginx: left out", s.loc));
                        continue;
                    }
                    first_fails.get_or_insert((max_fails, fail_timeout.clone()));
                    fails.insert(max_fails);
                    timeouts.insert(fail_timeout);
                    conns.insert(max_conns);
                    let addr = if has_port(addr) {
                        addr.clone()
                    } else {
                        format!("{addr}:80")
                    };
                    up.servers.push((addr, weight));
                }
                "keepalive" => up.keepalive = s.args.first().and_then(|n| n.parse().ok()),
                "keepalive_timeout" => up.keepalive_timeout = s.args.first().and_then(|t| duration(t)),
                "least_conn" => up.balance = Some("least_connections"),
                "ip_hash" => {
                    up.balance = Some("consistent_hash");
                    up.hash_key = Some("client_ip".into());
                    up.comments.push("ip_hash: hashed by the whole client address (nginx hashes an IPv4 client's /24)".into());
                }
                "hash" => match s.args.first().map(|k| hash_key(k)) {
                    Some(Some(key)) => {
                        up.balance = Some("consistent_hash");
                        up.hash_key = Some(key);
                    }
                    _ => self.report(s, "only $remote_addr, $binary_remote_addr, $http_NAME, $cookie_NAME, $uri and $request_uri keys are translated"),
                },
                "zone" | "keepalive_requests" => {
                    self.report(s, "no equivalent: gatehouse's state is shared by every thread without a zone")
                }
                _ => self.report(s, "no equivalent in gatehouse"),
            }
        }
        if fails.len() > 1 || timeouts.len() > 1 {
            self.report(d, "servers differ in max_fails/fail_timeout: gatehouse applies one per upstream (the first server's)");
        }
        if let Some((f, t)) = first_fails {
            up.max_fails = Some(f);
            up.fail_timeout = Some(t);
        }
        if conns.len() > 1 {
            self.report(
                d,
                "servers differ in max_conns: gatehouse applies one per upstream (the smallest)",
            );
        }
        up.max_conns = conns.into_iter().filter(|&c| c > 0).min();
        if up.balance.is_none() && up.servers.iter().any(|s| s.1 != 1) {
            up.balance = Some("weighted_round_robin");
        }
        if up.servers.is_empty() {
            self.report(d, "no usable server: upstream left out");
            return;
        }
        self.upstreams.insert(name.clone(), up);
    }

    fn split_clients(&mut self, d: &Directive) {
        let (Some(key), Some(var), Some(body)) = (d.args.first(), d.args.get(1), &d.block) else {
            self.report(d, "expected `split_clients KEY $var { ... }`");
            return;
        };
        let mut arms = Vec::new();
        let mut total = 0.0;
        for a in body {
            let value = a.args.first().cloned().unwrap_or_default();
            let share = if a.name == "*" {
                None
            } else {
                a.name.strip_suffix('%').and_then(|p| p.parse::<f64>().ok())
            };
            match (a.name.as_str(), share) {
                ("*", _) => arms.push((-1.0, value)),
                (_, Some(p)) => {
                    total += p;
                    arms.push((p, value));
                }
                _ => self.report(a, "expected PERCENT% VALUE or * VALUE"),
            }
        }
        for arm in &mut arms {
            if arm.0 < 0.0 {
                arm.0 = (100.0 - total).max(0.0);
            }
        }
        self.splits.insert(
            var.trim_start_matches('$').to_owned(),
            Split {
                key: key.clone(),
                arms,
                loc: d.loc.clone(),
            },
        );
    }

    fn limit_req_zone(&mut self, d: &Directive) {
        let key = d.args.first().and_then(|k| limit_key(k));
        let zone = d.args.iter().find_map(|a| a.strip_prefix("zone="));
        let rate = d.args.iter().find_map(|a| a.strip_prefix("rate="));
        let (Some(zone), Some(rate)) = (zone, rate) else {
            self.report(d, "expected zone= and rate=");
            return;
        };
        if key.is_none() {
            self.report(d, "only $binary_remote_addr, $remote_addr, $http_NAME and $cookie_NAME keys are translated; the zone counts by client address");
        }
        let name = zone.split(':').next().unwrap_or(zone).to_owned();
        self.req_zones.insert(
            name,
            ReqZone {
                key,
                rate: rate.to_owned(),
                loc: d.loc.clone(),
                used: None,
            },
        );
    }

    fn limit_conn_zone(&mut self, d: &Directive) {
        let key = d.args.first().and_then(|k| limit_key(k));
        let Some(zone) = d.args.iter().find_map(|a| a.strip_prefix("zone=")) else {
            self.report(d, "expected zone=");
            return;
        };
        if key.is_none() {
            self.report(d, "only $binary_remote_addr, $remote_addr, $http_NAME and $cookie_NAME keys are translated; the zone counts by client address");
        }
        let name = zone.split(':').next().unwrap_or(zone).to_owned();
        self.conn_zones.insert(name, (key, d.loc.clone()));
    }

    fn proxy_cache_path(&mut self, d: &Directive) {
        let Some(zone) = d.args.iter().find_map(|a| a.strip_prefix("keys_zone=")) else {
            self.report(d, "expected keys_zone=");
            return;
        };
        let max = d
            .args
            .iter()
            .find_map(|a| a.strip_prefix("max_size="))
            .and_then(nginx_size);
        self.cache_zones
            .insert(zone.split(':').next().unwrap_or(zone).to_owned(), max);
        self.note(&d.loc, "proxy_cache_path", "gatehouse caches in memory: the directory, levels and inactive= are not used (max_size= becomes the memory bound)");
    }

    /// A directive that sets an inherited setting; false if it is not one.
    fn setting(&mut self, d: &Directive, own: &mut Settings) -> bool {
        let a = &d.args;
        let first = a.first().cloned().unwrap_or_default();
        match d.name.as_str() {
            "proxy_set_header" => {
                push(&mut own.proxy_set_header, (first.clone(), a.get(1).cloned().unwrap_or_default(), d.loc.clone()));
            }
            "add_header" => {
                let always = a.get(2).is_some_and(|x| x == "always");
                push(&mut own.add_header, (first.clone(), a.get(1).cloned().unwrap_or_default(), always, d.loc.clone()));
            }
            "proxy_hide_header" => push(&mut own.hide_header, first.to_ascii_lowercase()),
            "allow" | "deny" => push(&mut own.access, format!("{} {first}", d.name)),
            "error_page" => {
                let mut codes = Vec::new();
                let mut change = None;
                let mut target = String::new();
                for x in a {
                    if let Ok(code) = x.parse::<u16>() {
                        codes.push(code);
                    } else if let Some(c) = x.strip_prefix('=') {
                        change = Some(c.to_owned());
                    } else {
                        target = x.clone();
                    }
                }
                push(&mut own.error_page, (codes, change, target, d.loc.clone()));
            }
            "limit_req" => {
                let zone = a.iter().find_map(|x| x.strip_prefix("zone=")).unwrap_or("").to_owned();
                let burst = a.iter().find_map(|x| x.strip_prefix("burst=")).and_then(|b| b.parse().ok()).unwrap_or(0);
                let nodelay = a.iter().any(|x| x == "nodelay");
                if a.iter().any(|x| x.starts_with("delay=")) {
                    self.report(d, "delay=: gatehouse delays all or none of the burst (nodelay)");
                }
                push(&mut own.limit_req, (zone, burst, nodelay, d.loc.clone()));
            }
            "limit_conn" => {
                let n = a.get(1).and_then(|n| n.parse().ok()).unwrap_or(0);
                push(&mut own.limit_conn, (first.clone(), n, d.loc.clone()));
            }
            "limit_req_status" => own.limit_req_status = first.parse().ok(),
            "limit_conn_status" => own.limit_conn_status = first.parse().ok(),
            "client_max_body_size" => match nginx_size(&first) {
                Some(n) => own.body_size = Some((n, d.loc.clone())),
                None => self.report(d, "expected a size"),
            },
            "proxy_connect_timeout" => match duration(&first) {
                Some(t) => own.connect_timeout = Some(t),
                None => self.report(d, "expected a duration"),
            },
            "proxy_read_timeout" => match duration(&first) {
                Some(t) => own.read_timeout = Some(t),
                None => self.report(d, "expected a duration"),
            },
            "proxy_send_timeout" | "send_timeout" | "client_body_timeout" => self.report(d, "no separate setting: a request with no byte moving for limits.idle_timeout is cut"),
            "proxy_next_upstream" => {
                own.next_upstream_off = Some(first == "off");
                let unsupported: Vec<&String> = a.iter().filter(|x| !matches!(x.as_str(), "error" | "timeout" | "off")).collect();
                if !unsupported.is_empty() {
                    self.report(d, format!("{}: gatehouse retries after connect errors, broken connections and timeouts, idempotent requests only, never on a status", unsupported.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ")));
                }
            }
            "proxy_next_upstream_tries" => own.next_upstream_tries = first.parse().ok(),
            "proxy_next_upstream_timeout" => self.report(d, "no equivalent: retries are bounded by count (retries) and budget (retry_budget)"),
            "proxy_cache" => own.proxy_cache = Some(if first == "off" { None } else { Some(first.clone()) }),
            "proxy_cache_valid" => {
                // `proxy_cache_valid [codes] time`: the time is the last argument.
                match a.last().and_then(|t| duration(t)) {
                    Some(t) => {
                        own.proxy_cache_valid = Some(t);
                        self.note(&d.loc, "proxy_cache_valid", "becomes the cache's default_ttl for every cacheable status (nginx's applies per status list)");
                    }
                    None => self.report(d, "expected a time"),
                }
            }
            "proxy_cache_use_stale" | "proxy_cache_key" | "proxy_cache_bypass" | "proxy_no_cache" | "proxy_cache_methods" | "proxy_cache_min_uses" | "proxy_cache_revalidate" | "proxy_cache_background_update" => {
                self.report(d, "no equivalent: gatehouse's cache follows RFC 9111 (keys are host and target; stale_while_revalidate/stale_if_error on the cache)")
            }
            "gzip" => own.gzip = Some(first == "on"),
            "gzip_types" => {
                if a.iter().any(|t| t == "*") {
                    self.report(d, "`*`: gatehouse compresses listed types only; the default list is kept");
                } else {
                    own.gzip_types = Some(a.clone());
                }
            }
            "gzip_min_length" => own.gzip_min_length = nginx_size(&first),
            "gzip_comp_level" => own.gzip_comp_level = first.parse().ok(),
            "gzip_proxied" => {
                if first != "any" {
                    self.report(d, "gatehouse compresses responses whatever the request's Via header says (as `gzip_proxied any`)");
                }
            }
            "gzip_http_version" | "gzip_buffers" | "gzip_disable" | "gzip_static" => self.report(d, "no equivalent in gatehouse"),
            "auth_basic" => own.auth_basic = Some(if first == "off" { None } else { Some(first.clone()) }),
            "auth_basic_user_file" => own.auth_basic_user_file = Some(self.path(&first)),
            "auth_request" => own.auth_request = Some(if first == "off" { None } else { Some((first.clone(), d.loc.clone())) }),
            "ssl_certificate" | "ssl_certificate_key" if first.contains('$') => self.report(
                d,
                "certificates chosen by variables are not translated (gatehouse picks among its listed certificates by SNI)",
            ),
            "ssl_certificate" => push(&mut own.ssl_certificate, self.path(&first)),
            "ssl_certificate_key" => push(&mut own.ssl_certificate_key, self.path(&first)),
            "ssl_protocols" => own.ssl_protocols = Some((a.clone(), d.loc.clone())),
            "ssl_early_data" => own.ssl_early_data = Some((first == "on", d.loc.clone())),
            "ssl_ciphers" | "ssl_prefer_server_ciphers" | "ssl_session_cache" | "ssl_session_timeout" | "ssl_session_tickets" | "ssl_dhparam" | "ssl_ecdh_curve" | "ssl_stapling" | "ssl_stapling_verify" | "ssl_trusted_certificate" | "ssl_buffer_size" => {
                self.report(d, "no equivalent: gatehouse uses rustls's safe defaults (modern suites, session cache and tickets on)")
            }
            "set_real_ip_from" => push(&mut own.real_ip_from, first.clone()),
            "real_ip_header" => own.real_ip_header = Some((first.clone(), d.loc.clone())),
            "real_ip_recursive" => own.real_ip_recursive = Some(first == "on"),
            "mirror" => {
                if first == "off" {
                    own.mirror = Some(Vec::new());
                } else {
                    push(&mut own.mirror, (first.clone(), d.loc.clone()));
                }
            }
            "mirror_request_body" => {
                if first == "off" {
                    self.report(d, "gatehouse mirrors bodies up to the mirror's max_body_bytes");
                }
            }
            "default_type" => own.default_type = Some(first.clone()),
            "root" | "alias" => {
                own.root = Some(self.path(&first));
                own.alias = Some(d.name == "alias");
            }
            "index" => own.index = Some(a.clone()),
            "try_files" => own.try_files = Some((a.clone(), d.loc.clone())),
            "autoindex" => own.autoindex = Some(first == "on"),
            "autoindex_format" => own.autoindex_format = Some((first.clone(), d.loc.clone())),
            "expires" => own.expires = Some((a.clone(), d.loc.clone())),
            other => return INHERENT.iter().any(|(n, _)| *n == other),
        }
        true
    }

    fn server(&mut self, d: &Directive, http: &Settings) {
        let Some(body) = &d.block else { return };
        let mut own = Settings::default();
        let mut server = Server {
            loc: d.loc.clone(),
            listens: Vec::new(),
            names: Vec::new(),
            settings: Settings::default(),
            locations: Vec::new(),
            ret: None,
            redirect_rewrites: Vec::new(),
        };
        let mut location_directives = Vec::new();
        // nginx 1.25's `http2 on;` in a server, beside its listens.
        let mut http2_on = false;
        let mut http3_off = false;
        for x in body {
            match x.name.as_str() {
                "listen" => {
                    if let Some(listen) = self.listen(x) {
                        server.listens.push(listen);
                    }
                }
                "server_name" => {
                    for name in &x.args {
                        self.server_name(x, name, &mut server.names);
                    }
                }
                "location" => location_directives.push(x),
                "return" => server.ret = Some(x.clone()),
                "rewrite" => {
                    let flag = x.args.get(2).map(String::as_str);
                    let to = x.args.get(1).map(String::as_str).unwrap_or("");
                    if matches!(flag, Some("redirect" | "permanent"))
                        || (flag.is_none() && is_absolute_url(to))
                    {
                        server.redirect_rewrites.push(x.clone());
                    } else {
                        self.report(x, "a server-level rewrite that changes the URI before the location search has no equivalent (gatehouse rewrites after picking the route); put it in the locations");
                    }
                }
                "if" => self.report(x, "no equivalent: `if` blocks are not translated"),
                "ssl" => self.report(x, "use `listen ... ssl`"),
                "http2" => http2_on = x.args.first().is_some_and(|a| a == "on"),
                "http3" => http3_off = x.args.first().is_some_and(|a| a == "off"),
                // Alt-Svc for HTTP/3 is added by gatehouse itself on an http3 listener.
                "add_header" if is_alt_svc_for_h3(&x.args) => {}
                "server_tokens" => self.report(
                    x,
                    "no equivalent: gatehouse's own answers say `Server: gatehouse`, without a version; upstream responses keep theirs",
                ),
                _ => {
                    if let Some(why) = file_serving_note(&x.name) {
                        self.report(x, format!("no equivalent: {why}"));
                    } else if !self.setting(x, &mut own) {
                        self.report(x, "no equivalent in gatehouse");
                    }
                }
            }
        }
        if server.listens.is_empty() {
            server.listens.push(Listen {
                bind: "0.0.0.0:80".into(),
                ssl: false,
                http2: false,
                quic: false,
                default: false,
                proxy_protocol: false,
                loc: d.loc.clone(),
            });
        }
        if http2_on {
            for l in &mut server.listens {
                l.http2 = true;
            }
        }
        if http3_off {
            for l in &mut server.listens {
                l.quic = false;
            }
        }
        server.settings = http.merged(&own);
        for l in location_directives {
            self.location(l, &server.settings, None, &mut server.locations);
        }
        self.servers.push(server);
    }

    fn listen(&mut self, d: &Directive) -> Option<Listen> {
        let Some(addr) = d.args.first() else {
            self.report(d, "expected an address");
            return None;
        };
        if addr.starts_with("unix:") {
            self.report(d, "unix sockets are not supported as listeners");
            return None;
        }
        let bind = if addr.bytes().all(|b| b.is_ascii_digit()) {
            format!("0.0.0.0:{addr}")
        } else if let Some(port) = addr.strip_prefix("*:") {
            format!("0.0.0.0:{port}")
        } else if has_port(addr) {
            addr.replace("localhost:", "127.0.0.1:")
        } else if addr.starts_with('[') {
            format!("{addr}:80")
        } else {
            format!(
                "{}:80",
                if addr == "localhost" {
                    "127.0.0.1"
                } else {
                    addr
                }
            )
        };
        let mut listen = Listen {
            bind,
            ssl: false,
            http2: false,
            quic: false,
            default: false,
            proxy_protocol: false,
            loc: d.loc.clone(),
        };
        for p in &d.args[1..] {
            match p.as_str() {
                "ssl" => listen.ssl = true,
                "http2" => listen.http2 = true,
                "quic" => listen.quic = true,
                "default_server" | "default" => listen.default = true,
                "proxy_protocol" => listen.proxy_protocol = true,
                "reuseport" => {}
                other => self.report(d, format!("{other}: no equivalent")),
            }
        }
        Some(listen)
    }

    fn server_name(&mut self, d: &Directive, name: &str, names: &mut Vec<String>) {
        let name = name.to_ascii_lowercase();
        if name == "_" || name.is_empty() || name == "\"\"" {
            return;
        }
        if name.starts_with('~') {
            self.report(
                d,
                format!(
                    "{name}: regex server names have no equivalent (hosts are exact or *.suffix)"
                ),
            );
        } else if let Some(rest) = name.strip_prefix('.') {
            names.push(rest.to_owned());
            names.push(format!("*.{rest}"));
        } else if name.ends_with(".*") || name.contains('$') {
            self.report(
                d,
                format!("{name}: no equivalent (hosts are exact or *.suffix)"),
            );
        } else if !names.contains(&name) {
            names.push(name);
        }
    }

    fn location(
        &mut self,
        d: &Directive,
        outer: &Settings,
        parent: Option<&Location>,
        out: &mut Vec<Location>,
    ) {
        let Some(body) = &d.block else { return };
        let (matcher, source) = match d.args.as_slice() {
            [m, p] if m == "=" => (Matcher::Exact(p.clone()), format!("= {p}")),
            [m, p] if m == "^~" => (
                Matcher::Prefix {
                    path: p.clone(),
                    stops_regex: true,
                },
                format!("^~ {p}"),
            ),
            [m, p] if m == "~" => (
                Matcher::Regex {
                    pattern: p.clone(),
                    caseless: false,
                },
                format!("~ {p}"),
            ),
            [m, p] if m == "~*" => (
                Matcher::Regex {
                    pattern: p.clone(),
                    caseless: true,
                },
                format!("~* {p}"),
            ),
            [p] if p.starts_with('@') => (Matcher::Named(p.clone()), p.clone()),
            [p] if p.starts_with('=') && p.len() > 1 => {
                (Matcher::Exact(p[1..].to_owned()), format!("= {}", &p[1..]))
            }
            [p] => (
                Matcher::Prefix {
                    path: p.clone(),
                    stops_regex: false,
                },
                p.clone(),
            ),
            _ => {
                self.report(
                    d,
                    "expected `location [=|^~|~|~*] PATH` or `location @name`",
                );
                return;
            }
        };
        let mut own = Settings::default();
        let mut me = Location {
            loc: d.loc.clone(),
            matcher,
            source,
            settings: Settings::default(),
            proxy_pass: None,
            rewrites: Vec::new(),
            ret: None,
            internal: false,
            parent_prefix: None,
            nested_regex: false,
        };
        if let Some(p) = parent {
            me.parent_prefix = match &p.matcher {
                Matcher::Prefix { path, .. } => Some(path.clone()),
                _ => p.parent_prefix.clone(),
            };
            me.nested_regex = matches!(me.matcher, Matcher::Regex { .. });
            if !matches!(p.matcher, Matcher::Prefix { .. }) {
                self.report(
                    d,
                    "a location nested in a regex, exact or named location has no equivalent",
                );
                return;
            }
        }
        let mut nested = Vec::new();
        for x in body {
            match x.name.as_str() {
                "location" => nested.push(x),
                "proxy_pass" => me.proxy_pass = x.args.first().map(|p| (p.clone(), x.loc.clone())),
                "rewrite" => me.rewrites.push(x.clone()),
                "return" => me.ret = Some(x.clone()),
                "internal" => me.internal = true,
                "if" => self.report(x, "no equivalent: `if` blocks are not translated"),
                "limit_except" => self.report(x, "no equivalent yet: routes match methods with `methods`, which needs a route per method set"),
                "proxy_redirect" => {
                    if x.args.first().is_none_or(|a| a != "off") {
                        self.report(x, "no equivalent: gatehouse passes the upstream's Location header as it is")
                    }
                }
                _ => {
                    if let Some(why) = file_serving_note(&x.name) {
                        self.report(x, format!("no equivalent: {why}"));
                    } else if !self.setting(x, &mut own) {
                        self.report(x, "no equivalent in gatehouse");
                    }
                }
            }
        }
        me.settings = outer.merged(&own);
        let settings = me.settings.clone();
        let index = out.len();
        out.push(me);
        for n in nested {
            let parent = out[index].clone();
            self.location(n, &settings, Some(&parent), out);
        }
    }

    fn finish(mut self) -> Translation {
        // Listeners, in order of first appearance, and the default server of each.
        let mut listeners: Vec<(String, Listen, Vec<usize>)> = Vec::new();
        for (i, s) in self.servers.iter().enumerate() {
            for l in &s.listens {
                match listeners.iter_mut().find(|(_, x, _)| x.bind == l.bind) {
                    Some((_, first, servers)) => {
                        if l.default {
                            servers.insert(0, i);
                            first.default = true;
                        } else {
                            servers.push(i);
                        }
                        first.ssl |= l.ssl;
                        first.http2 |= l.http2;
                        first.quic |= l.quic;
                        first.proxy_protocol |= l.proxy_protocol;
                    }
                    None => listeners.push((String::new(), l.clone(), vec![i])),
                }
            }
        }
        // Named once merged: `listen 443 quic` may come before `listen 443 ssl`.
        for (name, listen, _) in &mut listeners {
            *name = listener_name(&listen.bind, listen.ssl);
        }
        let mut out = String::new();
        out.push_str("# Imported from nginx by `gatehouse import nginx`.\n# Each route's comment names the nginx location it comes from.\n\n");
        if !self.process.is_empty() {
            let mut t = Table::new("[process]");
            for (k, v) in &self.process {
                t.set(k, v.clone());
            }
            t.write(&mut out);
        }
        if !self.log.is_empty() {
            let mut t = Table::new("[log]");
            if let Some((k, v)) = self.log.last() {
                t.set(k, v.clone());
            }
            t.write(&mut out);
        }
        if !self.limits.is_empty() {
            let mut t = Table::new("[limits]");
            t.comment("nginx's client_max_body_size (1m unless set), keepalive_timeout, client_header_timeout, ...");
            for (k, v) in &self.limits {
                t.set(k, v.clone());
            }
            t.write(&mut out);
        }
        for (name, listen, servers) in &listeners {
            let default = self.servers[servers[0]].settings.clone();
            let mut t = Table::new("[[listener]]");
            t.comment(format!("{}: listen {}", listen.loc, listen.bind));
            t.set("name", emit::string(name))
                .set("bind", emit::string(&listen.bind));
            let real_ip = default.real_ip_from.clone().unwrap_or_default();
            if !real_ip.is_empty() {
                t.set("trusted_proxies", emit::strings(&real_ip));
                match default.real_ip_header.as_ref().map(|(h, l)| (h.to_ascii_lowercase(), l.clone())) {
                    Some((h, _)) if h == "x-forwarded-for" => {
                        t.set("real_ip_header", emit::string("x-forwarded-for"));
                    }
                    Some((h, _)) if h == "proxy_protocol" => {
                        t.set("real_ip_header", emit::string("proxy_protocol"));
                    }
                    Some((h, l)) => self.note(&l, "real_ip_header", format!("{h}: gatehouse reads X-Forwarded-For, Forwarded or the PROXY protocol only")),
                    None => self.note(&listen.loc, "set_real_ip_from", "nginx reads X-Real-IP unless real_ip_header is set; gatehouse reads X-Forwarded-For"),
                }
                if default.real_ip_recursive != Some(true) {
                    self.note(&listen.loc, "real_ip_recursive", "gatehouse takes the rightmost untrusted X-Forwarded-For entry (nginx's `real_ip_recursive on`); nginx's off takes the last entry whoever added it");
                }
            }
            if listen.proxy_protocol {
                if real_ip.is_empty() {
                    self.note(&listen.loc, "listen", "proxy_protocol: gatehouse needs set_real_ip_from (trusted_proxies) to know whose PROXY header to believe; not translated");
                } else {
                    t.set("proxy_protocol", "true".into());
                }
            }
            if listen.ssl {
                let mut certs = Vec::new();
                for &i in servers {
                    let s = &self.servers[i].settings;
                    let pairs = s.ssl_certificate.clone().unwrap_or_default();
                    let keys = s.ssl_certificate_key.clone().unwrap_or_default();
                    for (c, k) in pairs.iter().zip(keys.iter()) {
                        let entry = emit::inline(&[
                            ("cert".into(), emit::string(c)),
                            ("key".into(), emit::string(k)),
                        ]);
                        if !certs.contains(&entry) {
                            certs.push(entry);
                        }
                    }
                }
                if certs.is_empty() {
                    self.note(
                        &listen.loc,
                        "listen",
                        "ssl without ssl_certificate/ssl_certificate_key: no TLS listener",
                    );
                } else {
                    let mut tls = vec![("certs".to_string(), format!("[{}]", certs.join(", ")))];
                    if let Some((protocols, l)) = &default.ssl_protocols {
                        let min = if protocols.iter().any(|p| p == "TLSv1.2") {
                            "1.2"
                        } else {
                            "1.3"
                        };
                        if protocols.iter().any(|p| p == "TLSv1" || p == "TLSv1.1") {
                            self.note(
                                l,
                                "ssl_protocols",
                                "TLSv1 and TLSv1.1 are not offered: gatehouse's oldest is TLS 1.2",
                            );
                        }
                        if min == "1.3" {
                            tls.push(("min_version".into(), emit::string("1.3")));
                        }
                    }
                    if !listen.http2 {
                        tls.push(("alpn".into(), emit::strings(&["http/1.1"])));
                    }
                    if listen.quic {
                        t.set("http3", "true".into());
                    }
                    match &default.ssl_early_data {
                        Some((true, _)) if listen.quic => {
                            t.set("early_data", "true".into());
                        }
                        Some((true, l)) => self.note(
                            l,
                            "ssl_early_data",
                            "gatehouse accepts early data (0-RTT) over HTTP/3 only (`early_data = true` beside `http3 = true`); TLS over TCP waits for the full handshake",
                        ),
                        _ => {}
                    }
                    t.set("tls", emit::inline(&tls));
                }
            }
            if listen.quic && !listen.ssl {
                self.note(
                    &listen.loc,
                    "listen",
                    "quic without `listen ... ssl` on the same address: gatehouse serves HTTP/3 beside a TLS listener (`http3 = true`), so none is served here",
                );
            }
            t.write(&mut out);
        }
        // Routes.
        let mut drafts: Vec<Draft> = Vec::new();
        let servers = std::mem::take(&mut self.servers);
        for (si, server) in servers.iter().enumerate() {
            let mut targets = Vec::new();
            for (name, listen, members) in &listeners {
                if !server.listens.iter().any(|l| l.bind == listen.bind) {
                    continue;
                }
                // The only server of a listener answers every Host: `*` says it all.
                if members.len() > 1 || members[0] != si {
                    for host in &server.names {
                        targets.push((name.clone(), host.clone()));
                    }
                }
                if members[0] == si {
                    targets.push((name.clone(), "*".into()));
                }
            }
            if targets.is_empty() {
                self.note(&server.loc, "server", "no server_name and not the default server of its listen: it answers only requests without a Host; not translated");
                continue;
            }
            self.server_routes(server, &servers, targets, &mut drafts);
        }
        self.servers = servers;
        // Timeouts and retries: on the upstream when every route to it agrees, else per route.
        let mut per_upstream: BTreeMap<String, BTreeSet<(String, String, Option<u32>)>> =
            BTreeMap::new();
        for d in &drafts {
            if let Some(u) = &d.upstream {
                per_upstream.entry(u.clone()).or_default().insert((
                    d.connect.clone(),
                    d.read.clone(),
                    d.retries,
                ));
            }
        }
        let mut route_names = BTreeSet::new();
        for d in &drafts {
            let shared = d
                .upstream
                .as_ref()
                .is_some_and(|u| per_upstream.get(u).is_some_and(|s| s.len() == 1));
            for (listener, host) in &d.targets {
                let mut t = Table::new("[[route]]");
                for c in &d.comments {
                    t.comment(c.clone());
                }
                let mut name = format!("{listener} {host}{}", d.name_path);
                let mut n = 2;
                while route_names.contains(&name) {
                    name = format!("{listener} {host}{} #{n}", d.name_path);
                    n += 1;
                }
                route_names.insert(name.clone());
                t.set("name", emit::string(&name));
                t.set("listener", emit::string(listener));
                t.set("host", emit::string(host));
                for (k, v) in &d.body {
                    t.set(k, v.clone());
                }
                if d.upstream.is_some() && !shared {
                    t.set("connect_timeout", emit::string(&d.connect));
                    t.set("response_timeout", emit::string(&d.read));
                    if let Some(r) = d.retries {
                        t.set("retries", r.to_string());
                    }
                }
                t.write(&mut out);
                for sub in &d.subtables {
                    sub.write(&mut out);
                }
            }
        }
        if self.passes_raw_uri {
            out.push_str("# nginx's proxy_pass without a URI passes the path as the client sent it; gatehouse\n# passes its normal form (dot segments resolved, unreserved escapes decoded, slashes\n# merged), the form it routed by. Not reported: it is by design (README: Routing).\n\n");
        }
        // Upstreams.
        for (name, up) in &self.upstreams {
            let mut t = Table::new(format!("[upstream.{}]", emit::key(name)));
            if let Some(l) = &up.loc {
                t.comment(format!("{l}: upstream {name}"));
            } else {
                t.comment(format!("proxy_pass to {name}"));
            }
            for c in &up.comments {
                t.comment(c.clone());
            }
            if let Some(b) = up.balance {
                t.set("balance", emit::string(b));
            }
            if let Some(k) = &up.hash_key {
                t.set("hash_key", emit::string(k));
            }
            let servers: Vec<String> = up
                .servers
                .iter()
                .map(|(a, w)| {
                    let addr = if up.https {
                        format!("https://{a}")
                    } else {
                        a.clone()
                    };
                    if *w == 1 {
                        emit::string(&addr)
                    } else {
                        emit::inline(&[
                            ("addr".into(), emit::string(&addr)),
                            ("weight".into(), w.to_string()),
                        ])
                    }
                })
                .collect();
            t.set("servers", format!("[{}]", servers.join(", ")));
            match per_upstream.get(name) {
                Some(set) if set.len() == 1 => {
                    if let Some((c, r, retries)) = set.first() {
                        t.set("connect_timeout", emit::string(c));
                        t.set("response_timeout", emit::string(r));
                        if let Some(n) = retries {
                            t.set("retries", n.to_string());
                        }
                    }
                }
                _ => {
                    t.set("connect_timeout", emit::string(NGINX_PROXY_TIMEOUT));
                    t.set("response_timeout", emit::string(NGINX_PROXY_TIMEOUT));
                }
            }
            if let Some(f) = up.max_fails {
                t.set("eject_after_refused", f.to_string());
            }
            if let Some(ft) = &up.fail_timeout {
                t.set("eject_for", emit::string(ft));
            }
            if let Some(m) = up.max_conns {
                t.set("max_connections", m.to_string());
            }
            if let Some(k) = up.keepalive {
                t.set("keepalive", k.to_string());
            }
            if let Some(k) = &up.keepalive_timeout {
                t.set("keepalive_timeout", emit::string(k));
            }
            t.write(&mut out);
        }
        for (name, zone) in &self.req_zones {
            if zone.used.is_none() && !self.conn_limits.contains_key(name) {
                continue;
            }
            let mut t = Table::new(format!("[limit.{}]", emit::key(name)));
            t.comment(format!("{}: limit_req_zone", zone.loc));
            t.set("rate", emit::string(&zone.rate));
            if let Some((burst, nodelay)) = zone.used {
                t.set("burst", burst.to_string());
                t.set("nodelay", nodelay.to_string());
            }
            if let Some(k) = &zone.key {
                t.set("key", emit::string(k));
            }
            if let Some(&c) = self.conn_limits.get(name) {
                t.set("concurrency", c.to_string());
            }
            t.comment("nginx sends no RateLimit headers");
            t.set("headers", "false".into());
            t.write(&mut out);
        }
        for (name, n) in &self.conn_limits {
            if self.req_zones.get(name).is_some_and(|z| z.used.is_some()) {
                continue;
            }
            let mut t = Table::new(format!("[limit.{}]", emit::key(name)));
            if let Some((key, loc)) = self.conn_zones.get(name) {
                t.comment(format!("{loc}: limit_conn_zone"));
                if let Some(k) = key {
                    t.set("key", emit::string(k));
                }
            }
            t.set("concurrency", n.to_string());
            t.set("headers", "false".into());
            t.write(&mut out);
        }
        for (name, body) in &self.compressions {
            let mut t = Table::new(format!("[compression.{}]", emit::key(name)));
            t.comment("gzip on (nginx compresses with gzip only)");
            for (k, v) in body {
                t.set(k, v.clone());
            }
            t.write(&mut out);
        }
        for name in &self.used_caches {
            let mut t = Table::new(format!("[cache.{}]", emit::key(name)));
            t.comment(format!("proxy_cache {name}"));
            if let Some(Some(max)) = self.cache_zones.get(name) {
                t.set("max_size", emit::string(&size_text(*max)));
            }
            if let Some(ttl) = self.cache_ttls.get(name) {
                t.set("default_ttl", emit::string(ttl));
            }
            t.write(&mut out);
        }
        for (name, realm, file) in &self.basic_auths {
            let mut t = Table::new(format!("[basic_auth.{}]", emit::key(name)));
            t.set("realm", emit::string(realm))
                .set("htpasswd", emit::string(file));
            t.write(&mut out);
        }
        for (name, body) in &self.forward_auths {
            let mut t = Table::new(format!("[forward_auth.{}]", emit::key(name)));
            t.comment("auth_request: nginx passes every request header to the auth location; the usual credentials are listed");
            for (k, v) in body {
                t.set(k, v.clone());
            }
            t.write(&mut out);
        }
        let mut reports = self.reports;
        reports.sort_by(|a, b| {
            (a.loc.file.as_ref(), a.loc.line).cmp(&(b.loc.file.as_ref(), b.loc.line))
        });
        reports.dedup();
        Translation { toml: out, reports }
    }

    fn server_routes(
        &mut self,
        server: &Server,
        _all: &[Server],
        targets: Vec<(String, String)>,
        drafts: &mut Vec<Draft>,
    ) {
        if let Some(ret) = &server.ret {
            let mut draft = Draft {
                comments: vec![format!("{}: server-level return (every path)", ret.loc)],
                targets,
                name_path: "/".into(),
                ..Draft::default()
            };
            draft.body.push(("path_prefix".into(), emit::string("/")));
            let redirects = server.redirect_rewrites.clone();
            self.rewrites(&redirects, &[], &mut draft);
            if let Some(t) = self.ret(ret, &server.settings, &[]) {
                draft.subtables.push(t);
            }
            drafts.push(draft);
            return;
        }
        let has_root = server
            .locations
            .iter()
            .any(|l| matches!(&l.matcher, Matcher::Prefix { path, .. } if path == "/"));
        // nginx searches a prefix location's nested regexes before the top-level ones.
        let mut order: Vec<&Location> =
            server.locations.iter().filter(|l| l.nested_regex).collect();
        order.extend(server.locations.iter().filter(|l| !l.nested_regex));
        let mut regex_drafts = Vec::new();
        let mut other_drafts = Vec::new();
        for l in order {
            if let Some(d) = self.location_route(server, l, targets.clone()) {
                if matches!(l.matcher, Matcher::Regex { .. }) {
                    regex_drafts.push(d);
                } else {
                    other_drafts.push(d);
                }
            }
        }
        drafts.extend(other_drafts);
        drafts.extend(regex_drafts);
        if !has_root {
            let mut draft = Draft {
                comments: vec![format!(
                    "{}: this server has no `location /`: nginx answers other paths from its root (404 without files)",
                    server.loc
                )],
                targets,
                name_path: "/".into(),
                ..Draft::default()
            };
            draft.body.push(("path_prefix".into(), emit::string("/")));
            let mut t = Table::new("[route.return]");
            t.set("status", "404".into());
            draft.subtables.push(t);
            drafts.push(draft);
        }
    }

    fn location_route(
        &mut self,
        server: &Server,
        l: &Location,
        targets: Vec<(String, String)>,
    ) -> Option<Draft> {
        let at = |s: &str| Directive {
            name: s.into(),
            args: vec![],
            block: None,
            loc: l.loc.clone(),
        };
        if let Matcher::Named(n) = &l.matcher {
            if ends_a_try_files(server, n) {
                // Translated with the routes whose try_files ends at it.
                return None;
            }
            self.report(&at("location"), format!("{n}: named locations are reached by internal redirects (error_page, try_files), which gatehouse has no equivalent for"));
            return None;
        }
        if l.internal {
            let referenced = self.servers_reference(server, l);
            if !referenced {
                self.report(
                    &at("location"),
                    format!(
                        "{}: internal locations answer only internal redirects; not translated",
                        l.source
                    ),
                );
            }
            return None;
        }
        let serves_files = l.proxy_pass.is_none()
            && l.ret.is_none()
            && !l.rewrites.iter().any(is_redirect_rewrite);
        if serves_files && self.servers_reference(server, l) {
            // An error page's file: used by the routes whose error_page names it.
            return None;
        }
        if !serves_files && let Some((_, try_loc)) = &l.settings.try_files {
            self.note(
                try_loc,
                "try_files",
                "not translated in a location that proxies: files are served by locations without proxy_pass",
            );
        }
        let s = &l.settings;
        let mut d = Draft {
            comments: vec![format!("{}: location {}", l.loc, l.source)],
            targets,
            connect: s
                .connect_timeout
                .clone()
                .unwrap_or_else(|| NGINX_PROXY_TIMEOUT.into()),
            read: s
                .read_timeout
                .clone()
                .unwrap_or_else(|| NGINX_PROXY_TIMEOUT.into()),
            retries: if s.next_upstream_off == Some(true) {
                Some(0)
            } else {
                s.next_upstream_tries.filter(|&n| n > 0).map(|n| n - 1)
            },
            ..Draft::default()
        };
        let mut captures: Vec<String> = Vec::new();
        match &l.matcher {
            Matcher::Prefix { path, stops_regex } => {
                d.name_path = path.clone();
                d.body.push(("path_prefix".into(), emit::string(path)));
                if *stops_regex {
                    d.body.push(("prefix_stops_regex".into(), "true".into()));
                }
            }
            Matcher::Exact(path) => {
                d.name_path = format!("={path}");
                d.body.push(("path_exact".into(), emit::string(path)));
            }
            Matcher::Regex { pattern, caseless } => {
                let converted = match convert_regex(pattern) {
                    Ok(r) => r,
                    Err(why) => {
                        self.report(&at("location"), format!("{pattern}: {why}"));
                        return None;
                    }
                };
                captures = named_captures(&converted);
                let mut full = if *caseless {
                    format!("(?i){converted}")
                } else {
                    converted
                };
                if let Some(parent) = &l.parent_prefix {
                    // Nested in a prefix location: matches only within it.
                    full = if full.starts_with('^') || full.starts_with("(?i)^") {
                        self.report(&at("location"), "an anchored regex nested in a prefix location is translated on its own (without the enclosing prefix)");
                        full
                    } else {
                        format!("^{}.*?(?:{full})", regex_escape(parent))
                    };
                }
                d.name_path = format!("~{pattern}");
                d.body.push(("path_regex".into(), emit::string(&full)));
            }
            Matcher::Named(_) => return None,
        }
        // Redirecting server-level rewrites run first, then the location's own.
        let mut all_rewrites = server.redirect_rewrites.clone();
        all_rewrites.extend(l.rewrites.iter().cloned());
        let break_rewrite = self.rewrites(&all_rewrites, &captures, &mut d);
        if let Some(ret) = &l.ret {
            if let Some(t) = self.ret(ret, s, &captures) {
                d.subtables.push(t);
            }
        } else if let Some((target, pass_loc)) = &l.proxy_pass {
            if !self.proxy_pass(server, l, target, pass_loc, break_rewrite, &mut d) {
                return None;
            }
        } else if serves_files && !self.files(server, l, &mut d) {
            return None;
        }
        self.common(server, l, &captures, &mut d);
        Some(d)
    }

    /// A location that serves files (nginx's `root` or `alias`, `index`, `try_files`,
    /// `autoindex`, `expires`) as the route's `files`; false (reported) where it cannot be
    /// said the same way.
    fn files(&mut self, server: &Server, l: &Location, d: &mut Draft) -> bool {
        let s = &l.settings;
        let at = |name: &str| Directive {
            name: name.into(),
            args: vec![],
            block: None,
            loc: l.loc.clone(),
        };
        // nginx's default root is `html` under its prefix.
        let root = s.root.clone().unwrap_or_else(|| self.path("html"));
        if root.contains('$') {
            self.report(
                &at("root"),
                format!(
                    "{}: variables in root or alias are not translated",
                    l.source
                ),
            );
            return false;
        }
        let mut pairs = vec![("root".to_owned(), emit::string(&root))];
        if s.alias == Some(true) {
            match &l.matcher {
                Matcher::Prefix { .. } => d.body.push(("strip_prefix".into(), "true".into())),
                _ => {
                    self.report(&at("alias"), format!("{}: alias is translated in prefix locations only (here it names the file itself or uses captures)", l.source));
                    return false;
                }
            }
        }
        if let Some(index) = &s.index {
            if let Some(bad) = index.iter().find(|n| n.contains(['/', '$'])) {
                self.report(&at("index"), format!("{bad}: index files are translated as names in the directory (no paths, no variables)"));
                return false;
            }
            pairs.push(("index".into(), emit::strings(index)));
        }
        if let Some((entries, try_loc)) = &s.try_files {
            let mut out = Vec::with_capacity(entries.len());
            for (i, entry) in entries.iter().enumerate() {
                let last = i + 1 == entries.len();
                let entry = match entry.strip_prefix('@') {
                    Some(name) if last => match self.named_upstream(server, name, try_loc, d) {
                        Some(upstream) => format!("@{upstream}"),
                        None => return false,
                    },
                    _ => entry.clone(),
                };
                if let Err(why) = crate::config::parse_try_entry(&entry, last) {
                    self.note(
                        try_loc,
                        "try_files",
                        format!("{why}; the location is not translated"),
                    );
                    return false;
                }
                out.push(entry);
            }
            pairs.push(("try_files".into(), emit::strings(&out)));
        }
        if s.autoindex == Some(true) {
            let format = match &s.autoindex_format {
                None => "html",
                Some((f, _)) if f == "html" || f == "json" => f.as_str(),
                Some((f, format_loc)) => {
                    self.note(
                        format_loc,
                        "autoindex_format",
                        format!("{f}: listings are html or json; html is used"),
                    );
                    "html"
                }
            };
            pairs.push(("listing".into(), emit::string(format)));
        }
        if let Some((args, expires_loc)) = &s.expires {
            match expires_cache_control(args) {
                Ok(Some(value)) => pairs.push(("cache_control".into(), emit::string(&value))),
                Ok(None) => {}
                Err(why) => self.note(expires_loc, "expires", why),
            }
        }
        d.comments.push(format!("{}: serves files", l.loc));
        d.body.push(("files".into(), emit::inline(&pairs)));
        true
    }

    /// The upstream of the named location `@name` that ends a `try_files`: its proxy_pass,
    /// set as the route's upstream.
    fn named_upstream(
        &mut self,
        server: &Server,
        name: &str,
        at: &Loc,
        d: &mut Draft,
    ) -> Option<String> {
        let named = server
            .locations
            .iter()
            .find(|o| o.matcher == Matcher::Named(format!("@{name}")))
            .cloned();
        let Some(named) = named else {
            self.note(
                at,
                "try_files",
                format!("@{name}: no such named location in the server"),
            );
            return None;
        };
        let Some((target, pass_loc)) = &named.proxy_pass else {
            self.note(
                at,
                "try_files",
                format!("@{name}: only a named location that proxies is translated"),
            );
            return None;
        };
        if !self.proxy_pass(server, &named, target, pass_loc, false, d) {
            return None;
        }
        d.comments.push(format!(
            "{}: what try_files does not find goes to location @{name}'s upstream, with this route's settings",
            named.loc
        ));
        d.upstream.clone()
    }

    fn servers_reference(&self, server: &Server, l: &Location) -> bool {
        let path = match &l.matcher {
            Matcher::Exact(p) | Matcher::Prefix { path: p, .. } => p,
            _ => return false,
        };
        server.locations.iter().any(|o| {
            o.settings
                .mirror
                .iter()
                .flatten()
                .any(|(m, _)| m.starts_with(path.as_str()))
                || o.settings
                    .auth_request
                    .iter()
                    .flatten()
                    .any(|(m, _)| m.starts_with(path.as_str()))
                || o.settings
                    .error_page
                    .iter()
                    .flatten()
                    .any(|(_, _, t, _)| t.starts_with(path.as_str()))
        })
    }

    /// `[[route.rewrite]]` tables; returns whether a rewrite with `break` changes the URI (so
    /// proxy_pass's URI part is not used, as in nginx).
    fn rewrites(&mut self, rewrites: &[Directive], captures: &[String], d: &mut Draft) -> bool {
        let mut changes_uri = false;
        for r in rewrites {
            let (Some(regex), Some(to)) = (r.args.first(), r.args.get(1)) else {
                self.report(r, "expected `rewrite REGEX REPLACEMENT [FLAG]`");
                continue;
            };
            let flag = match r.args.get(2).map(String::as_str) {
                None if is_absolute_url(to) => Some("redirect"),
                None => None,
                Some("break") => {
                    changes_uri = true;
                    Some("break")
                }
                Some(f @ ("redirect" | "permanent")) => Some(f),
                // The new URI is routed again, as nginx searches its locations again.
                Some("last") => Some("last"),
                Some(other) => {
                    self.report(r, format!("{other}: unknown flag"));
                    continue;
                }
            };
            let regex = match convert_regex(regex) {
                Ok(x) => x,
                Err(why) => {
                    self.report(r, format!("{regex}: {why}"));
                    continue;
                }
            };
            let mut caps = captures.to_vec();
            caps.extend(named_captures(&regex));
            let to = match translate_vars(to, &caps, &self.splits) {
                Ok(t) => t,
                Err(why) => {
                    self.report(r, why);
                    continue;
                }
            };
            let mut t = Table::new("[[route.rewrite]]");
            t.comment(format!("{}: rewrite", r.loc));
            t.set("regex", emit::string(&regex))
                .set("to", emit::string(&to));
            if let Some(f) = flag {
                t.set("flag", emit::string(f));
            }
            d.subtables.push(t);
        }
        changes_uri
    }

    fn ret(&mut self, r: &Directive, s: &Settings, captures: &[String]) -> Option<Table> {
        let (status, rest) = match r.args.as_slice() {
            [code] if code.parse::<u16>().is_ok() => (code.parse::<u16>().ok()?, None),
            [code, text] if code.parse::<u16>().is_ok() => {
                (code.parse::<u16>().ok()?, Some(text.clone()))
            }
            [url] => (302, Some(url.clone())),
            _ => {
                self.report(r, "expected `return CODE [TEXT|URL]` or `return URL`");
                return None;
            }
        };
        if status == 444 {
            self.report(
                r,
                "444 (close the connection without a response) has no equivalent",
            );
            return None;
        }
        let mut t = Table::new("[route.return]");
        t.comment(format!("{}: return", r.loc));
        t.set("status", status.to_string());
        if let Some(text) = rest {
            let text = match translate_vars(&text, captures, &self.splits) {
                Ok(x) => x,
                Err(why) => {
                    self.report(r, why);
                    return None;
                }
            };
            if matches!(status, 301 | 302 | 303 | 307 | 308) {
                t.set("location", emit::string(&text));
            } else {
                t.set("body", emit::string(&text));
                t.set(
                    "content_type",
                    emit::string(s.default_type.as_deref().unwrap_or("text/plain")),
                );
            }
        }
        Some(t)
    }

    /// The upstream (or split) of a `proxy_pass`, its URI handling and Host.
    fn proxy_pass(
        &mut self,
        server: &Server,
        l: &Location,
        target: &str,
        at: &Loc,
        break_rewrite: bool,
        d: &mut Draft,
    ) -> bool {
        let pass = Directive {
            name: "proxy_pass".into(),
            args: vec![target.into()],
            block: None,
            loc: at.clone(),
        };
        let (https, rest) = if let Some(r) = target.strip_prefix("http://") {
            (false, r)
        } else if let Some(r) = target.strip_prefix("https://") {
            (true, r)
        } else {
            self.report(&pass, "only http:// and https:// upstreams are translated");
            return false;
        };
        // `http://name$request_uri` is the name with the URI as the client sent it.
        let rest = rest
            .strip_suffix("$request_uri")
            .filter(|r| !r.is_empty() && !r.contains('/'))
            .unwrap_or(rest);
        let (authority, uri) = match rest.get(1..).and_then(|r| r.find('/')) {
            Some(i) => (&rest[..=i], Some(&rest[i + 1..])),
            None => (rest, None),
        };
        let mut host_header: Option<String> = None;
        if let Some(var) = authority.strip_prefix('$') {
            let var = var.trim_start_matches('{').trim_end_matches('}');
            let Some(split) = self.splits.get(var).cloned() else {
                self.report(&pass, format!("${var}: a variable upstream is translated only when it is a split_clients variable"));
                return false;
            };
            if let Err(why) = self.split(&split, https, d) {
                self.report(&pass, why);
                return false;
            }
            if uri.is_some_and(|u| u != "$request_uri") {
                self.report(
                    &pass,
                    "the URI part of a variable proxy_pass is not translated",
                );
            }
        } else {
            if authority.starts_with("unix:") {
                self.report(&pass, "unix sockets are not supported as upstream servers");
                return false;
            }
            let name = if self.upstreams.contains_key(authority) {
                host_header = Some(authority.to_owned());
                authority.to_owned()
            } else if authority.contains('$') {
                self.report(
                    &pass,
                    "variables in the upstream address are not translated",
                );
                return false;
            } else {
                let default_port = if https { 443 } else { 80 };
                let addr = if has_port(authority) {
                    authority.to_owned()
                } else {
                    format!("{authority}:{default_port}")
                };
                host_header = Some(if addr.ends_with(&format!(":{default_port}")) {
                    authority.split(':').next().unwrap_or(authority).to_owned()
                } else {
                    authority.to_owned()
                });
                let name = addr.replace(['.', ':', '[', ']'], "_");
                self.upstreams
                    .entry(name.clone())
                    .or_insert_with(|| Upstream {
                        servers: vec![(addr.clone(), 1)],
                        ..Upstream::default()
                    });
                name
            };
            if let Some(up) = self.upstreams.get_mut(&name) {
                up.https |= https;
            }
            d.upstream = Some(name.clone());
            d.body.push(("upstream".into(), emit::string(&name)));
        }
        // The URI part.
        self.passes_raw_uri |= uri.is_none();
        match (uri, &l.matcher) {
            (None, Matcher::Prefix { path, .. }) => {
                if path.ends_with('/') && path != "/" && !self.has_slashless(server, path) {
                    d.body.push(("slash_redirect".into(), "true".into()));
                }
            }
            (None, _) => {}
            (Some(_), _) if break_rewrite => {
                d.comments.push("the URI part of proxy_pass is not used after a rewrite ... break (as in nginx)".into());
            }
            (Some(u), _) if u.contains('$') => {
                self.report(&pass, "variables in the proxy_pass URI are not translated");
            }
            (Some(u), Matcher::Prefix { path, .. }) => {
                if u == "/" && path.ends_with('/') {
                    d.body.push(("strip_prefix".into(), "true".into()));
                } else if u == path {
                    if path.ends_with('/') && path != "/" && !self.has_slashless(server, path) {
                        d.body.push(("slash_redirect".into(), "true".into()));
                    }
                } else {
                    d.body.push(("replace_prefix".into(), emit::string(u)));
                }
            }
            (Some(u), Matcher::Exact(path)) => {
                if u != path {
                    d.body.push(("replace_prefix".into(), emit::string(u)));
                }
            }
            (Some(_), _) => {
                self.report(&pass, "a URI in proxy_pass inside a regex location is an nginx error; the URI is not used");
            }
        }
        // Host: nginx sends $proxy_host unless proxy_set_header Host says otherwise.
        let set_host_header = l
            .settings
            .proxy_set_header
            .iter()
            .flatten()
            .find(|(n, _, _)| n.eq_ignore_ascii_case("host"))
            .cloned();
        match set_host_header {
            Some((_, v, hl)) => match v.as_str() {
                "$host" | "$http_host" => {}
                "$proxy_host" => {
                    if let Some(h) = host_header {
                        d.body.push(("set_host".into(), emit::string(&h)));
                    }
                }
                v if !v.contains('$') => d.body.push(("set_host".into(), emit::string(v))),
                v => self.note(&hl, "proxy_set_header", format!("Host {v}: variables in Host are not translated; the client's Host is passed")),
            },
            None => match host_header {
                Some(h) => d.body.push(("set_host".into(), emit::string(&h))),
                None => self.note(at, "proxy_pass", "nginx sends the chosen split upstream's name as Host; gatehouse passes the client's Host (set proxy_set_header Host)"),
            },
        }
        true
    }

    /// Whether the server has a location for `path` without its trailing slash (then nginx
    /// does not redirect to the slash).
    fn has_slashless(&self, server: &Server, path: &str) -> bool {
        let bare = path.trim_end_matches('/');
        server.locations.iter().any(|o| match &o.matcher {
            Matcher::Exact(p) => p == bare,
            Matcher::Prefix { path: p, .. } => p == bare,
            _ => false,
        })
    }

    fn split(&mut self, split: &Split, https: bool, d: &mut Draft) -> Result<(), String> {
        let by = split_key(&split.key);
        match &by {
            Some(Some(k)) => d.body.push(("split_by".into(), emit::string(k))),
            Some(None) => {}
            None => {
                return Err(format!(
                    "split_clients key {:?}: only $remote_addr, $cookie_NAME, $http_NAME and $request_id are translated",
                    split.key
                ));
            }
        }
        let fractional = split.arms.iter().any(|(p, _)| p.fract() != 0.0);
        let scale = if fractional { 100.0 } else { 1.0 };
        d.comments.push(format!("{}: split_clients (the same shares; which clients fall in which share differs from nginx's hash)", split.loc));
        for (share, value) in &split.arms {
            if !self.upstreams.contains_key(value) {
                if value.is_empty() {
                    return Err("a split_clients arm without an upstream".into());
                }
                let addr = if has_port(value) {
                    value.clone()
                } else {
                    format!("{value}:{}", if https { 443 } else { 80 })
                };
                let name = addr.replace(['.', ':', '[', ']'], "_");
                self.upstreams
                    .entry(name.clone())
                    .or_insert_with(|| Upstream {
                        servers: vec![(addr, 1)],
                        ..Upstream::default()
                    });
                let mut t = Table::new("[[route.split]]");
                t.set("upstream", emit::string(&name))
                    .set("weight", ((share * scale).round() as u64).to_string());
                d.subtables.push(t);
                continue;
            }
            let mut t = Table::new("[[route.split]]");
            t.set("upstream", emit::string(value))
                .set("weight", ((share * scale).round() as u64).to_string());
            d.subtables.push(t);
        }
        Ok(())
    }

    /// Headers, access, limits, body size, compression, cache, auth, mirror, error pages.
    fn common(&mut self, server: &Server, l: &Location, captures: &[String], d: &mut Draft) {
        let s = &l.settings;
        // Request headers.
        let mut set = Vec::new();
        let mut remove = Vec::new();
        for (name, value, hl) in s.proxy_set_header.iter().flatten() {
            let lower = name.to_ascii_lowercase();
            let inherent = matches!(
                (lower.as_str(), value.as_str()),
                ("host", _)
                    | ("x-forwarded-for", "$proxy_add_x_forwarded_for")
                    | ("x-forwarded-proto", "$scheme")
                    | ("x-forwarded-host", "$host")
                    | ("connection", "")
                    | ("connection", "$connection_upgrade")
                    | ("connection", "upgrade")
                    | ("upgrade", "$http_upgrade")
            );
            if inherent {
                continue;
            }
            if value.is_empty() {
                remove.push(lower);
                continue;
            }
            match translate_vars(value, captures, &self.splits) {
                Ok(v) => {
                    if put(&mut set, name, emit::string(&v)) {
                        self.note(
                            hl,
                            "proxy_set_header",
                            format!(
                                "{name} set twice: nginx sends both values, gatehouse the last"
                            ),
                        );
                    }
                }
                Err(why) => self.note(hl, "proxy_set_header", format!("{name}: {why}")),
            }
        }
        if !set.is_empty() || !remove.is_empty() {
            let mut parts = Vec::new();
            if !set.is_empty() {
                parts.push(("set".to_string(), emit::inline(&set)));
            }
            if !remove.is_empty() {
                parts.push(("remove".to_string(), emit::strings(&remove)));
            }
            d.body
                .push(("request_headers".into(), emit::inline(&parts)));
        }
        // Response headers.
        let mut set = Vec::new();
        for (name, value, always, hl) in s.add_header.iter().flatten() {
            if value.contains('$') {
                self.note(
                    hl,
                    "add_header",
                    format!("{name}: gatehouse's response header values are literal; a value with variables is left out"),
                );
                continue;
            }
            match translate_vars(value, captures, &self.splits) {
                Ok(v) => {
                    if !*always {
                        d.comments.push(format!("{hl}: add_header {name}: nginx adds it to 2xx/3xx responses only (no `always`); gatehouse sets it on every response"));
                    }
                    if put(&mut set, name, emit::string(&v)) {
                        self.note(
                            hl,
                            "add_header",
                            format!(
                                "{name} added twice: nginx sends both values, gatehouse the last"
                            ),
                        );
                    }
                }
                Err(why) => self.note(hl, "add_header", format!("{name}: {why}")),
            }
        }
        let hide: Vec<String> = s.hide_header.clone().unwrap_or_default();
        if !set.is_empty() || !hide.is_empty() {
            let mut parts = Vec::new();
            if !set.is_empty() {
                parts.push(("set".to_string(), emit::inline(&set)));
            }
            if !hide.is_empty() {
                parts.push(("remove".to_string(), emit::strings(&hide)));
            }
            d.body
                .push(("response_headers".into(), emit::inline(&parts)));
        }
        if let Some(rules) = &s.access
            && !rules.is_empty()
        {
            d.body.push(("access".into(), emit::strings(rules)));
        }
        // Body size: the route's only when it differs from the global one.
        if let Some((n, bl)) = &s.body_size {
            let global = self.limits.get("max_body_bytes").cloned();
            if *n == 0 {
                self.note(
                    bl,
                    "client_max_body_size",
                    "0 (no limit) has no equivalent: limits.max_body_bytes applies",
                );
            } else if global.as_deref() != Some(emit::string(&size_text(*n)).as_str()) {
                d.body
                    .push(("max_body_bytes".into(), emit::string(&size_text(*n))));
            }
        }
        // Rate and concurrency limits.
        let mut limits = Vec::new();
        for (zone, burst, nodelay, ll) in s.limit_req.iter().flatten() {
            let Some(z) = self.req_zones.get_mut(zone) else {
                self.note(ll, "limit_req", format!("no limit_req_zone named {zone}"));
                continue;
            };
            match z.used {
                None => z.used = Some((*burst, *nodelay)),
                Some(u) if u != (*burst, *nodelay) => {
                    self.note(ll, "limit_req", format!("zone {zone} is used with another burst/nodelay elsewhere: gatehouse keeps one per limit (the first)"));
                }
                _ => {}
            }
            if s.limit_req_status != Some(429) {
                self.note(ll, "limit_req", "nginx rejects with 503 unless limit_req_status is set; gatehouse rejects with 429 (set `limit_req_status 429;` to match)");
            }
            if !limits.contains(zone) {
                limits.push(zone.clone());
            }
        }
        for (zone, n, ll) in s.limit_conn.iter().flatten() {
            if !self.conn_zones.contains_key(zone) {
                self.note(ll, "limit_conn", format!("no limit_conn_zone named {zone}"));
                continue;
            }
            match self.conn_limits.get(zone) {
                Some(m) if m != n => self.note(ll, "limit_conn", format!("zone {zone} is used with another number elsewhere: gatehouse keeps one per limit (the first)")),
                Some(_) => {}
                None => {
                    self.conn_limits.insert(zone.clone(), *n);
                }
            }
            if s.limit_conn_status != Some(429) {
                self.note(ll, "limit_conn", "nginx rejects with 503 unless limit_conn_status is set; gatehouse rejects with 429 (set `limit_conn_status 429;` to match)");
            }
            if !limits.contains(zone) {
                limits.push(zone.clone());
            }
        }
        if !limits.is_empty() {
            d.body.push(("limits".into(), emit::strings(&limits)));
        }
        // gzip.
        if s.gzip == Some(true) {
            let mut types = vec!["text/html".to_string()];
            for t in s.gzip_types.iter().flatten() {
                if !types.contains(t) {
                    types.push(t.clone());
                }
            }
            let body = vec![
                ("types".to_string(), emit::strings(&types)),
                (
                    "min_length".to_string(),
                    emit::string(&size_text(s.gzip_min_length.unwrap_or(20))),
                ),
                ("encodings".to_string(), emit::strings(&["gzip"])),
                (
                    "gzip_level".to_string(),
                    s.gzip_comp_level.unwrap_or(1).to_string(),
                ),
            ];
            let name = match self.compressions.iter().find(|(_, b)| *b == body) {
                Some((n, _)) => n.clone(),
                None => {
                    let n = if self.compressions.is_empty() {
                        "gzip".to_string()
                    } else {
                        format!("gzip_{}", self.compressions.len() + 1)
                    };
                    self.compressions.push((n.clone(), body));
                    n
                }
            };
            d.body.push(("compression".into(), emit::string(&name)));
        }
        // Cache.
        if let Some(Some(zone)) = &s.proxy_cache {
            if self.cache_zones.contains_key(zone) {
                self.used_caches.insert(zone.clone());
                if let Some(ttl) = &s.proxy_cache_valid {
                    match self.cache_ttls.get(zone) {
                        Some(first) if first != ttl => {
                            let at = Directive {
                                name: "proxy_cache_valid".into(),
                                args: vec![],
                                block: None,
                                loc: l.loc.clone(),
                            };
                            self.report(&at, format!("cache {zone} is used with another validity elsewhere: gatehouse keeps one default_ttl per cache (the first, {first})"));
                        }
                        Some(_) => {}
                        None => {
                            self.cache_ttls.insert(zone.clone(), ttl.clone());
                        }
                    }
                }
                d.body.push(("cache".into(), emit::string(zone)));
            } else {
                let at = Directive {
                    name: "proxy_cache".into(),
                    args: vec![],
                    block: None,
                    loc: l.loc.clone(),
                };
                self.report(&at, format!("no proxy_cache_path with keys_zone={zone}"));
            }
        }
        // Basic auth.
        if let Some(Some(realm)) = &s.auth_basic {
            match &s.auth_basic_user_file {
                Some(file) => {
                    let name = match self
                        .basic_auths
                        .iter()
                        .find(|(_, r, f)| r == realm && f == file)
                    {
                        Some((n, _, _)) => n.clone(),
                        None => {
                            let n = if self.basic_auths.is_empty() {
                                "basic".to_string()
                            } else {
                                format!("basic_{}", self.basic_auths.len() + 1)
                            };
                            self.basic_auths
                                .push((n.clone(), realm.clone(), file.clone()));
                            n
                        }
                    };
                    d.body.push(("basic_auth".into(), emit::string(&name)));
                }
                None => {
                    let at = Directive {
                        name: "auth_basic".into(),
                        args: vec![],
                        block: None,
                        loc: l.loc.clone(),
                    };
                    self.report(&at, "auth_basic without auth_basic_user_file");
                }
            }
        }
        // auth_request → forward_auth on the upstream its location proxies to.
        if let Some(Some((uri, al))) = &s.auth_request {
            match self.auth_target(server, uri) {
                Some((upstream, path)) => {
                    let name = format!("auth_{}", upstream);
                    self.forward_auths.entry(name.clone()).or_insert_with(|| {
                        vec![
                            ("upstream".to_string(), emit::string(&upstream)),
                            ("uri".to_string(), emit::string(&path)),
                            (
                                "request_headers".to_string(),
                                emit::strings(&["authorization", "cookie"]),
                            ),
                        ]
                    });
                    d.body.push(("forward_auth".into(), emit::string(&name)));
                }
                None => self.note(
                    al,
                    "auth_request",
                    format!("{uri}: no location in this server proxies it to an upstream"),
                ),
            }
        }
        // Mirror.
        let mirrors: Vec<(String, Loc)> = s.mirror.clone().unwrap_or_default();
        for (i, (uri, ml)) in mirrors.iter().enumerate() {
            if i > 0 {
                self.note(ml, "mirror", "gatehouse mirrors to one upstream per route; only the first mirror is translated");
                break;
            }
            match self.auth_target(server, uri) {
                Some((upstream, _)) => {
                    let mut t = Table::new("[route.mirror]");
                    t.comment(format!("{ml}: mirror {uri}"));
                    t.set("upstream", emit::string(&upstream))
                        .set("percent", "100".into());
                    d.subtables.push(t);
                }
                None => self.note(
                    ml,
                    "mirror",
                    format!("{uri}: no location in this server proxies it to an upstream"),
                ),
            }
        }
        // Error pages.
        for (codes, change, target, el) in s.error_page.iter().flatten() {
            let at = Directive {
                name: "error_page".into(),
                args: vec![],
                block: None,
                loc: el.clone(),
            };
            if change.is_some() {
                self.report(&at, "=CODE (changing the status) has no equivalent");
                continue;
            }
            if target.starts_with('@') || is_absolute_url(target) {
                self.report(&at, format!("{target}: only error pages served from a file or a `return` text are translated"));
                continue;
            }
            match self.error_target(server, target) {
                Some((key, value)) => {
                    let mut t = Table::new("[[route.error_page]]");
                    t.comment(format!("{el}: error_page (nginx uses it for errors of its own and, with proxy_intercept_errors, the upstream's)"));
                    let list: Vec<String> = codes.iter().map(u16::to_string).collect();
                    t.set("status", format!("[{}]", list.join(", ")));
                    t.set(key, emit::string(&value));
                    t.set("content_type", emit::string("text/html"));
                    d.subtables.push(t);
                }
                None => self.report(
                    &at,
                    format!("{target}: no location serving it from a file or a return text"),
                ),
            }
        }
    }

    /// The upstream and path an internal subrequest URI (auth_request, mirror) goes to.
    fn auth_target(&self, server: &Server, uri: &str) -> Option<(String, String)> {
        let l = best_location(server, uri)?;
        let (target, _) = l.proxy_pass.as_ref()?;
        let rest = target
            .strip_prefix("http://")
            .or_else(|| target.strip_prefix("https://"))?;
        let (authority, path) = match rest.find(['/', '$']) {
            Some(i) => (&rest[..i], Some(&rest[i..])),
            None => (rest, None),
        };
        let upstream = if self.upstreams.contains_key(authority) {
            authority.to_owned()
        } else {
            let addr = if has_port(authority) {
                authority.to_owned()
            } else {
                format!("{authority}:80")
            };
            addr.replace(['.', ':', '[', ']'], "_")
        };
        if !self.upstreams.contains_key(&upstream) {
            return None;
        }
        let path = match path {
            Some(p) if !p.contains('$') => p.to_owned(),
            _ => uri.to_owned(),
        };
        Some((upstream, path))
    }

    fn error_target(&self, server: &Server, uri: &str) -> Option<(&'static str, String)> {
        let l = best_location(server, uri)?;
        if let Some(r) = &l.ret
            && let [code, text] = r.args.as_slice()
            && code == "200"
            && !text.contains('$')
        {
            return Some(("body", text.clone()));
        }
        let root = l.settings.root.clone().unwrap_or_else(|| self.path("html"));
        Some(("file", format!("{}{uri}", root.trim_end_matches('/'))))
    }
}

/// Whether some location's `try_files` ends at the named location `name` (`@x`).
fn ends_a_try_files(server: &Server, name: &str) -> bool {
    server.locations.iter().any(|o| {
        o.settings
            .try_files
            .as_ref()
            .and_then(|(entries, _)| entries.last())
            .is_some_and(|last| last == name)
    })
}

/// The Cache-Control that nginx's `expires` sends with files: `expires 30d` is `max-age=2592000`,
/// `max` ten years, `epoch` and negative times `no-cache`, `off` nothing. `modified` and `@`
/// times (relative to the file or the time of day) have no equivalent.
fn expires_cache_control(args: &[String]) -> Result<Option<String>, String> {
    let [time] = args else {
        return Err("expires with `modified` or two arguments is not translated".into());
    };
    let time = time.as_str();
    match time {
        "off" => return Ok(None),
        "max" => return Ok(Some("max-age=315360000".into())),
        "epoch" => return Ok(Some("no-cache".into())),
        _ => {}
    }
    if time.starts_with('@') {
        return Err(format!("{time}: a time of day has no equivalent"));
    }
    let (negative, magnitude) = match time.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, time.strip_prefix('+').unwrap_or(time)),
    };
    let seconds = nginx_seconds(magnitude).ok_or_else(|| format!("{time}: not a time"))?;
    Ok(Some(if negative || seconds == 0 {
        "no-cache".into()
    } else {
        format!("max-age={seconds}")
    }))
}

/// nginx's time syntax (`1h30m`, `30d`, `90`): seconds.
fn nginx_seconds(text: &str) -> Option<u64> {
    if text.is_empty() {
        return None;
    }
    let mut total = 0u64;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 604_800,
            'M' => 2_592_000,
            'y' => 31_536_000,
            _ => return None,
        };
        let n: u64 = number.parse().ok()?;
        total = total.checked_add(n.checked_mul(unit)?)?;
        number.clear();
    }
    if !number.is_empty() {
        total = total.checked_add(number.parse().ok()?)?;
    }
    Some(total)
}

/// Sets `name` in an ordered header list (names compared without case); true if it replaced
/// a value already there.
fn put(set: &mut Vec<(String, String)>, name: &str, value: String) -> bool {
    match set.iter_mut().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
        Some(slot) => {
            slot.1 = value;
            true
        }
        None => {
            set.push((name.to_owned(), value));
            false
        }
    }
}

/// The exact or longest prefix location for a URI (for internal subrequests).
fn best_location<'a>(server: &'a Server, uri: &str) -> Option<&'a Location> {
    let path = uri.split('?').next().unwrap_or(uri);
    server
        .locations
        .iter()
        .find(|l| matches!(&l.matcher, Matcher::Exact(p) if p == path))
        .or_else(|| {
            server
                .locations
                .iter()
                .filter_map(|l| match &l.matcher {
                    Matcher::Prefix { path: p, .. } if path.starts_with(p.as_str()) => {
                        Some((p.len(), l))
                    }
                    _ => None,
                })
                .max_by_key(|(n, _)| *n)
                .map(|(_, l)| l)
        })
}

fn is_absolute_url(to: &str) -> bool {
    to.starts_with("http://") || to.starts_with("https://") || to.starts_with("$scheme://")
}

fn is_redirect_rewrite(r: &Directive) -> bool {
    matches!(
        r.args.get(2).map(String::as_str),
        Some("redirect" | "permanent")
    ) || (r.args.len() == 2 && r.args.get(1).is_some_and(|t| is_absolute_url(t)))
}

fn has_port(addr: &str) -> bool {
    if let Some(rest) = addr.strip_prefix('[') {
        return rest.split_once("]:").is_some();
    }
    addr.rsplit_once(':')
        .is_some_and(|(_, p)| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// A stable listener name from its address: `http_8080`, `https_127_0_0_1_8443`.
/// `add_header Alt-Svc 'h3=":PORT"; ...'`: what an http3 listener sends by itself.
fn is_alt_svc_for_h3(args: &[String]) -> bool {
    args.first()
        .is_some_and(|name| name.eq_ignore_ascii_case("alt-svc"))
        && args.get(1).is_some_and(|value| value.contains("h3="))
}

pub fn listener_name(bind: &str, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    let (addr, port) = bind.rsplit_once(':').unwrap_or((bind, ""));
    if addr == "0.0.0.0" {
        return format!("{scheme}_{port}");
    }
    let addr: String = addr
        .chars()
        .filter(|c| !matches!(c, '[' | ']'))
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let addr = if addr.chars().all(|c| c == '_') {
        "v6".to_string()
    } else {
        addr
    };
    format!("{scheme}_{addr}_{port}")
}

/// An nginx time (`30s`, `1m`, `500ms`, `10` = seconds, `1h30m`) as a gatehouse duration.
pub fn duration(text: &str) -> Option<String> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return Some(format!("{text}s"));
    }
    // nginx units: ms s m h d w M y; gatehouse (humantime) reads the same spellings but `M`.
    let normal = text.replace('M', "month");
    parse_duration(&normal).ok().map(|_| normal.to_string())
}

/// An nginx size (`1m`, `512k`, `1g`, `1024`) in bytes.
pub fn nginx_size(text: &str) -> Option<u64> {
    let t = text.trim();
    parse_size(t).ok().or_else(|| {
        let last = t.char_indices().last().map_or(0, |(i, _)| i);
        let (digits, unit) = t.split_at(last);
        let n: u64 = digits.parse().ok()?;
        match unit {
            "k" | "K" => n.checked_mul(1 << 10),
            "m" | "M" => n.checked_mul(1 << 20),
            "g" | "G" => n.checked_mul(1 << 30),
            _ => None,
        }
    })
}

/// Bytes in gatehouse's spelling, the largest exact binary unit.
pub fn size_text(n: u64) -> String {
    if n != 0 && n.is_multiple_of(1 << 30) {
        format!("{}GiB", n >> 30)
    } else if n != 0 && n.is_multiple_of(1 << 20) {
        format!("{}MiB", n >> 20)
    } else if n != 0 && n.is_multiple_of(1 << 10) {
        format!("{}KiB", n >> 10)
    } else {
        format!("{n}B")
    }
}

/// `hash KEY` of an upstream as a `hash_key`.
fn hash_key(var: &str) -> Option<String> {
    match var {
        "$remote_addr" | "$binary_remote_addr" => Some("client_ip".into()),
        "$uri" | "$document_uri" => Some("path".into()),
        "$request_uri" => Some("uri".into()),
        v => var_header_or_cookie(v),
    }
}

fn var_header_or_cookie(v: &str) -> Option<String> {
    if let Some(h) = v.strip_prefix("$http_") {
        Some(format!("header:{}", h.replace('_', "-")))
    } else {
        v.strip_prefix("$cookie_").map(|c| format!("cookie:{c}"))
    }
}

/// A `limit_req_zone`/`limit_conn_zone` key as a limit `key`.
fn limit_key(var: &str) -> Option<String> {
    match var {
        "$binary_remote_addr" | "$remote_addr" => Some("client_ip".into()),
        v => var_header_or_cookie(v),
    }
}

/// A split_clients key as `split_by`: Some(None) = random per request.
fn split_key(key: &str) -> Option<Option<String>> {
    let vars = variables(key);
    match vars.as_slice() {
        [v] if v == "remote_addr" || v == "binary_remote_addr" => Some(Some("client_ip".into())),
        [v] if v == "request_id" => Some(None),
        [v] => var_header_or_cookie(&format!("${v}")).map(Some),
        _ => None,
    }
}

/// The variable names in a text (`$name`, `${name}`).
fn variables(text: &str) -> Vec<String> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' {
            if b.get(i + 1) == Some(&b'{') {
                if let Some(end) = text[i..].find('}') {
                    out.push(text[i + 2..i + end].to_owned());
                    i += end + 1;
                    continue;
                }
            } else {
                let start = i + 1;
                let mut j = start;
                while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                    j += 1;
                }
                if j > start {
                    out.push(text[start..j].to_owned());
                }
                i = j.max(i + 1);
                continue;
            }
        }
        i += 1;
    }
    out
}

/// A text with nginx variables, checked against gatehouse's template variables.
fn translate_vars(
    text: &str,
    captures: &[String],
    splits: &BTreeMap<String, Split>,
) -> Result<String, String> {
    for v in variables(text) {
        let known = matches!(
            v.as_str(),
            "host"
                | "request_uri"
                | "uri"
                | "args"
                | "query_string"
                | "scheme"
                | "remote_addr"
                | "request_method"
                | "document_uri"
        ) || v.starts_with("arg_")
            || v.starts_with("http_")
            || v.starts_with("cookie_")
            || (v.len() == 1 && v.as_bytes()[0].is_ascii_digit() && v != "0")
            || captures.contains(&v);
        if !known {
            let why = if splits.contains_key(&v) {
                " (a split_clients variable is translated only in proxy_pass)"
            } else {
                ""
            };
            return Err(format!("${v} is not a variable gatehouse knows{why}"));
        }
    }
    Ok(text
        .replace("$query_string", "$args")
        .replace("$document_uri", "$uri"))
}

/// A PCRE regex as the regex crate reads it, or why not.
fn convert_regex(pattern: &str) -> Result<String, String> {
    if pattern.contains("(?=")
        || pattern.contains("(?!")
        || pattern.contains("(?<=")
        || pattern.contains("(?<!")
    {
        return Err("lookaround has no equivalent in gatehouse's regexes".into());
    }
    let b = pattern.as_bytes();
    for i in 0..b.len().saturating_sub(1) {
        if b[i] == b'\\'
            && b[i + 1].is_ascii_digit()
            && b[i + 1] != b'0'
            && (i == 0 || b[i - 1] != b'\\')
        {
            return Err("backreferences have no equivalent in gatehouse's regexes".into());
        }
    }
    Ok(pattern.replace("(?<", "(?P<").replace("(?'", "(?P<"))
}

fn named_captures(regex: &str) -> Vec<String> {
    regex
        .match_indices("(?P<")
        .filter_map(|(i, _)| {
            let rest = &regex[i + 4..];
            rest.find('>').map(|e| rest[..e].to_owned())
        })
        .collect()
}

fn regex_escape(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::nginx_str;
    use super::expires_cache_control;
    use std::path::Path;

    fn import(text: &str) -> (toml::Table, Vec<String>) {
        let t = nginx_str(Path::new("/n/nginx.conf"), text).unwrap();
        let table: toml::Table =
            toml::from_str(&t.toml).unwrap_or_else(|e| panic!("{e}\n{}", t.toml));
        (table, t.reports.iter().map(ToString::to_string).collect())
    }

    fn routes(t: &toml::Table) -> Vec<toml::Table> {
        t["route"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_table().unwrap().clone())
            .collect()
    }

    /// The route of `host` whose path key (path_prefix, path_exact or path_regex) is `path`.
    fn route(t: &toml::Table, host: &str, path: &str) -> toml::Table {
        routes(t)
            .into_iter()
            .find(|r| {
                r["host"].as_str() == Some(host)
                    && ["path_prefix", "path_exact", "path_regex"]
                        .iter()
                        .any(|k| r.get(*k).and_then(|v| v.as_str()) == Some(path))
            })
            .unwrap_or_else(|| panic!("no route {host} {path} in {t:#?}"))
    }

    fn server(body: &str) -> String {
        format!(
            "http {{\n upstream b {{ server 127.0.0.1:9000; }}\n server {{\n  listen 8080;\n{body}\n }}\n}}\n"
        )
    }

    #[test]
    fn array_directives_inherit_only_when_the_inner_level_has_none() {
        let (t, _) = import(&server(
            "  add_header X-Server s always;\n  proxy_set_header X-A server;\n  allow 10.0.0.0/8; deny all;\n\
             location / { proxy_pass http://b; }\n\
             location /own/ { add_header X-Own o always; proxy_set_header X-B own; allow all; proxy_pass http://b/; }\n\
             location /outer/ { proxy_pass http://b;\n location /outer/inner/ { proxy_pass http://b; } }",
        ));
        let root = route(&t, "*", "/");
        assert_eq!(
            root["response_headers"]["set"]["X-Server"].as_str(),
            Some("s")
        );
        assert_eq!(
            root["request_headers"]["set"]["X-A"].as_str(),
            Some("server")
        );
        assert_eq!(root["access"].as_array().unwrap().len(), 2);
        let own = route(&t, "*", "/own/");
        let set = own["response_headers"]["set"].as_table().unwrap();
        assert_eq!(
            set.keys().collect::<Vec<_>>(),
            ["X-Own"],
            "the server's add_header is not inherited"
        );
        let req = own["request_headers"]["set"].as_table().unwrap();
        assert_eq!(req.keys().collect::<Vec<_>>(), ["X-B"]);
        assert_eq!(
            own["access"].as_array().unwrap()[0].as_str(),
            Some("allow all")
        );
        // A nested location inherits from its parent, which inherits from the server.
        let inner = route(&t, "*", "/outer/inner/");
        assert_eq!(
            inner["response_headers"]["set"]["X-Server"].as_str(),
            Some("s")
        );
    }

    #[test]
    fn host_upstream_is_the_proxy_host_unless_set() {
        let (t, _) = import(&server(
            "location / { proxy_pass http://b; }\n\
             location /direct { proxy_pass http://127.0.0.1:9001; }\n\
             location /keep { proxy_pass http://b; proxy_set_header Host $host; }\n\
             location /fixed { proxy_pass http://b; proxy_set_header Host api.internal; }",
        ));
        assert_eq!(route(&t, "*", "/")["set_host"].as_str(), Some("b"));
        let direct = route(&t, "*", "/direct");
        assert_eq!(direct["set_host"].as_str(), Some("127.0.0.1:9001"));
        let name = direct["upstream"].as_str().unwrap();
        assert_eq!(
            t["upstream"][name]["servers"][0].as_str(),
            Some("127.0.0.1:9001")
        );
        assert!(route(&t, "*", "/keep").get("set_host").is_none());
        assert_eq!(
            route(&t, "*", "/fixed")["set_host"].as_str(),
            Some("api.internal")
        );
    }

    #[test]
    fn proxy_pass_uris_become_strip_or_replace_prefix() {
        let (t, _) = import(&server(
            "location / { proxy_pass http://b; }\n\
             location /api/ { proxy_pass http://b/; }\n\
             location /v1 { proxy_pass http://b/; }\n\
             location /v2/ { proxy_pass http://b/version2/; }\n\
             location /plain/ { proxy_pass http://b; }\n\
             location = /exact { proxy_pass http://b/other; }",
        ));
        let api = route(&t, "*", "/api/");
        assert_eq!(api["strip_prefix"].as_bool(), Some(true));
        assert!(
            api.get("slash_redirect").is_none(),
            "the default with strip_prefix"
        );
        assert_eq!(route(&t, "*", "/v1")["replace_prefix"].as_str(), Some("/"));
        assert_eq!(
            route(&t, "*", "/v2/")["replace_prefix"].as_str(),
            Some("/version2/")
        );
        let plain = route(&t, "*", "/plain/");
        assert_eq!(plain["slash_redirect"].as_bool(), Some(true));
        assert!(plain.get("strip_prefix").is_none());
        assert_eq!(
            route(&t, "*", "/exact")["replace_prefix"].as_str(),
            Some("/other")
        );
    }

    #[test]
    fn location_modifiers() {
        let (t, reports) = import(&server(
            "location / { proxy_pass http://b; }\n\
             location = /x { proxy_pass http://b; }\n\
             location ^~ /static/ { proxy_pass http://b; }\n\
             location ~ ^/u/(?<id>\\d+)$ { proxy_pass http://b; }\n\
             location ~* \\.png$ { proxy_pass http://b; }\n\
             location @fallback { proxy_pass http://b; }\n\
             location /api/ { proxy_pass http://b;\n location ~ \\.json$ { proxy_pass http://b; } }",
        ));
        route(&t, "*", "/x");
        assert_eq!(
            route(&t, "*", "/static/")["prefix_stops_regex"].as_bool(),
            Some(true)
        );
        route(&t, "*", "^/u/(?P<id>\\d+)$");
        route(&t, "*", "(?i)\\.png$");
        route(&t, "*", "^/api/.*?(?:\\.json$)");
        assert!(
            reports
                .iter()
                .any(|r| r.starts_with("/n/nginx.conf:10: location: @fallback")),
            "{reports:?}"
        );
    }

    #[test]
    fn ssl_early_data_without_quic_is_reported_not_translated() {
        let (t, reports) = import(
            "http {\n upstream b { server 127.0.0.1:9000; }\n\
             server { listen 8443 ssl; ssl_early_data on; ssl_certificate c.pem; ssl_certificate_key k.pem; location / { proxy_pass http://b; } }\n}",
        );
        let listeners = t["listener"].as_array().unwrap();
        assert!(listeners[0].get("early_data").is_none());
        assert!(
            reports
                .iter()
                .any(|r| r.contains(":3: ssl_early_data") && r.contains("HTTP/3 only")),
            "{reports:?}"
        );
    }

    #[test]
    fn a_quic_listen_beside_an_ssl_one_is_http3_on_that_listener() {
        let (t, reports) = import(
            "http {\n upstream b { server 127.0.0.1:9000; }\n\
             server { listen 8443 ssl; listen 8443 quic reuseport; http3 on; ssl_early_data on; add_header Alt-Svc 'h3=\":8443\"; ma=86400'; ssl_certificate c.pem; ssl_certificate_key k.pem; location / { proxy_pass http://b; } }\n\
             server { listen 9443 quic; listen 9443 ssl; http3 off; ssl_certificate c.pem; ssl_certificate_key k.pem; location / { proxy_pass http://b; } }\n}",
        );
        let listeners = t["listener"].as_array().unwrap();
        assert_eq!(listeners.len(), 2, "{listeners:?}");
        assert_eq!(listeners[0]["name"].as_str(), Some("https_8443"));
        assert_eq!(listeners[0]["http3"].as_bool(), Some(true));
        assert_eq!(listeners[0]["early_data"].as_bool(), Some(true));
        assert_eq!(listeners[1]["name"].as_str(), Some("https_9443"));
        assert!(listeners[1].get("http3").is_none(), "http3 off");
        assert!(listeners[1].get("early_data").is_none());
        assert!(
            routes(&t)
                .iter()
                .all(|r| r.get("response_headers").is_none()),
            "Alt-Svc is not copied: the listener sends it"
        );
        assert!(
            !reports
                .iter()
                .any(|r| r.contains("quic") || r.contains("http3")),
            "{reports:?}"
        );
    }

    #[test]
    fn server_names_listens_and_default_servers() {
        let (t, reports) = import(
            "http {\n upstream b { server 127.0.0.1:9000; }\n\
             server { listen 127.0.0.1:8080; server_name www.a.com .b.com *.c.com ~^(.+)\\.d\\.com$; location / { proxy_pass http://b; } }\n\
             server { listen 127.0.0.1:8080 default_server proxy_protocol; set_real_ip_from 10.0.0.0/8; real_ip_header proxy_protocol; server_name _; location / { proxy_pass http://b; } }\n\
             server { listen 8443 ssl; ssl_certificate c.pem; ssl_certificate_key k.pem; ssl_protocols TLSv1.3; location / { proxy_pass http://b; } }\n\
             server { listen [::]:8443 ssl http2; ssl_certificate /c.pem; ssl_certificate_key /k.pem; location / { proxy_pass http://b; } }\n}",
        );
        let hosts: Vec<&str> = routes(&t)
            .iter()
            .filter(|r| r["listener"].as_str() == Some("http_127_0_0_1_8080"))
            .map(|r| r["host"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
            .leak()
            .iter()
            .map(String::as_str)
            .collect();
        assert_eq!(hosts, ["www.a.com", "b.com", "*.b.com", "*.c.com", "*"]);
        assert!(
            reports.iter().any(|r| r.contains("regex server names")),
            "{reports:?}"
        );
        let listeners = t["listener"].as_array().unwrap();
        assert_eq!(listeners[0]["proxy_protocol"].as_bool(), Some(true));
        assert_eq!(
            listeners[0]["real_ip_header"].as_str(),
            Some("proxy_protocol")
        );
        assert_eq!(listeners[1]["name"].as_str(), Some("https_8443"));
        assert_eq!(
            listeners[1]["tls"]["certs"][0]["cert"].as_str(),
            Some("/n/c.pem")
        );
        assert_eq!(listeners[1]["tls"]["min_version"].as_str(), Some("1.3"));
        assert_eq!(listeners[1]["tls"]["alpn"][0].as_str(), Some("http/1.1"));
        assert_eq!(listeners[2]["name"].as_str(), Some("https_v6_8443"));
        assert!(
            listeners[2]["tls"].get("alpn").is_none(),
            "h2 offered by default"
        );
    }

    #[test]
    fn upstream_options() {
        let (t, reports) = import(
            "http {\n\
             upstream w { server 10.0.0.1:80 weight=3 max_fails=2 fail_timeout=30s max_conns=50; server 10.0.0.2:80; server 10.0.0.3:80 down; server 10.0.0.4:80 backup; keepalive 16; }\n\
             upstream l { least_conn; server 10.0.0.1:80; }\n\
             upstream i { ip_hash; server 10.0.0.1:80; }\n\
             upstream h { hash $http_x_user consistent; server 10.0.0.1; }\n\
             server { listen 80;\n location /w { proxy_pass http://w; proxy_connect_timeout 2s; proxy_read_timeout 5s; proxy_next_upstream_tries 2; }\n\
             location /l { proxy_pass http://l; } location /i { proxy_pass http://i; } location /h { proxy_pass http://h; proxy_next_upstream off; } }\n}",
        );
        let w = &t["upstream"]["w"];
        assert_eq!(w["balance"].as_str(), Some("weighted_round_robin"));
        assert_eq!(
            w["servers"].as_array().unwrap().len(),
            2,
            "down and backup left out"
        );
        assert_eq!(w["servers"][0]["weight"].as_integer(), Some(3));
        assert_eq!(w["eject_after_refused"].as_integer(), Some(2));
        assert_eq!(w["eject_for"].as_str(), Some("30s"));
        assert_eq!(w["max_connections"].as_integer(), Some(50));
        assert_eq!(w["keepalive"].as_integer(), Some(16));
        assert_eq!(w["connect_timeout"].as_str(), Some("2s"));
        assert_eq!(w["response_timeout"].as_str(), Some("5s"));
        assert_eq!(w["retries"].as_integer(), Some(1));
        assert_eq!(
            t["upstream"]["l"]["balance"].as_str(),
            Some("least_connections")
        );
        assert_eq!(
            t["upstream"]["l"]["connect_timeout"].as_str(),
            Some("60s"),
            "nginx's default"
        );
        assert_eq!(t["upstream"]["i"]["hash_key"].as_str(), Some("client_ip"));
        assert_eq!(
            t["upstream"]["h"]["hash_key"].as_str(),
            Some("header:x-user")
        );
        assert_eq!(
            t["upstream"]["h"]["servers"][0].as_str(),
            Some("10.0.0.1:80")
        );
        assert_eq!(t["upstream"]["h"]["retries"].as_integer(), Some(0));
        assert!(reports.iter().any(|r| r.contains("backup")), "{reports:?}");
        assert!(
            reports.iter().any(|r| r.contains("max_fails/fail_timeout")),
            "{reports:?}"
        );
    }

    #[test]
    fn edge_answers_auth_limits_and_compression() {
        let (t, reports) = import(&format!(
            "http {{\n limit_req_zone $binary_remote_addr zone=one:10m rate=5r/s;\n limit_conn_zone $binary_remote_addr zone=c:10m;\n\
             split_clients \"${{remote_addr}}\" $v {{ 10% b2; * b; }}\n upstream b2 {{ server 127.0.0.1:9002; }}\n upstream auth {{ server 127.0.0.1:9003; }}\n\
             gzip on; gzip_comp_level 5; client_max_body_size 8m;\n{}",
            server(
                "location / { return 301 https://$host$request_uri; }\n\
                 location /api/ { limit_req zone=one burst=10 nodelay; limit_conn c 4; client_max_body_size 1m; auth_request /auth; proxy_pass http://b/; }\n\
                 location = /auth { internal; proxy_pass http://auth/check; }\n\
                 location /staff { auth_basic \"staff\"; auth_basic_user_file htpasswd; proxy_pass http://b; }\n\
                 location /canary { proxy_pass http://$v; proxy_set_header Host $host; }\n\
                 location /old { rewrite ^/old/(.*)$ /new/$1 permanent; rewrite ^ /x last; }"
            )
            .trim_start_matches("http {\n")
        ));
        let root = route(&t, "*", "/");
        assert_eq!(root["return"]["status"].as_integer(), Some(301));
        assert_eq!(
            root["return"]["location"].as_str(),
            Some("https://$host$request_uri")
        );
        assert!(root.get("upstream").is_none());
        let api = route(&t, "*", "/api/");
        assert_eq!(api["limits"].as_array().unwrap().len(), 2);
        assert_eq!(api["max_body_bytes"].as_str(), Some("1MiB"));
        assert_eq!(api["forward_auth"].as_str(), Some("auth_auth"));
        assert_eq!(
            t["forward_auth"]["auth_auth"]["uri"].as_str(),
            Some("/check")
        );
        assert_eq!(t["limit"]["one"]["rate"].as_str(), Some("5r/s"));
        assert_eq!(t["limit"]["one"]["burst"].as_integer(), Some(10));
        assert_eq!(t["limit"]["c"]["concurrency"].as_integer(), Some(4));
        assert_eq!(t["limits"]["max_body_bytes"].as_str(), Some("8MiB"));
        assert_eq!(t["compression"]["gzip"]["gzip_level"].as_integer(), Some(5));
        assert_eq!(
            route(&t, "*", "/staff")["basic_auth"].as_str(),
            Some("basic")
        );
        assert_eq!(
            t["basic_auth"]["basic"]["htpasswd"].as_str(),
            Some("/n/htpasswd")
        );
        let canary = route(&t, "*", "/canary");
        assert_eq!(canary["split_by"].as_str(), Some("client_ip"));
        let split = canary["split"].as_array().unwrap();
        assert_eq!(split[0]["upstream"].as_str(), Some("b2"));
        assert_eq!(split[0]["weight"].as_integer(), Some(10));
        assert_eq!(split[1]["weight"].as_integer(), Some(90));
        let old = route(&t, "*", "/old");
        assert_eq!(old["rewrite"][0]["flag"].as_str(), Some("permanent"));
        assert_eq!(old["rewrite"][1]["flag"].as_str(), Some("last"));
        assert!(
            !reports.iter().any(|r| r.contains("rewrite: last")),
            "{reports:?}"
        );
        assert!(
            reports
                .iter()
                .any(|r| r.contains("limit_req: nginx rejects with 503")),
            "{reports:?}"
        );
        assert!(
            !reports.iter().any(|r| r.contains("= /auth")),
            "a referenced internal location is not reported: {reports:?}"
        );
    }

    #[test]
    fn untranslatable_directives_are_reported_with_their_place() {
        let t = nginx_str(
            Path::new("/n/nginx.conf"),
            "user www;\nhttp {\n map $a $b { default 1; }\n server {\n  listen 80;\n  location / {\n   root /srv; open_file_cache max=10;\n  }\n  location /p { proxy_pass http://127.0.0.1:1; sub_filter a b; if ($x) { return 403; } }\n }\n}\n",
        )
        .unwrap();
        let lines: Vec<String> = t.reports.iter().map(ToString::to_string).collect();
        for expected in [
            "/n/nginx.conf:1: user: ",
            "/n/nginx.conf:3: map: ",
            "/n/nginx.conf:7: open_file_cache: no equivalent",
            "/n/nginx.conf:9: sub_filter: ",
            "/n/nginx.conf:9: if: ",
        ] {
            assert!(
                lines.iter().any(|l| l.starts_with(expected)),
                "{expected} missing in {lines:#?}"
            );
        }
    }

    #[test]
    fn file_serving_locations_become_files_routes() {
        let (t, reports) = import(&server(
            "root /srv/site;\n index index.html index.htm;\n\
             location / { try_files $uri $uri/ /index.html; expires 1h; }\n\
             location /assets/ { alias /srv/assets/; autoindex on; autoindex_format json; expires max; }\n\
             location /app/ { try_files $uri @backend; }\n\
             location @backend { proxy_pass http://b; }\n\
             location /bad/ { try_files $uri $args =404; }\n\
             location = /exact.txt { alias /srv/x.txt; }\n\
             location /api/ { root /ignored; proxy_pass http://b/; }",
        ));
        let strings = |value: &toml::Value| -> Vec<String> {
            value
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect()
        };
        let root = route(&t, "*", "/");
        let files = &root["files"];
        assert_eq!(files["root"].as_str(), Some("/srv/site"));
        assert_eq!(strings(&files["index"]), ["index.html", "index.htm"]);
        assert_eq!(
            strings(&files["try_files"]),
            ["$uri", "$uri/", "/index.html"]
        );
        assert_eq!(files["cache_control"].as_str(), Some("max-age=3600"));
        assert!(files.get("listing").is_none());
        assert!(root.get("upstream").is_none());

        let assets = route(&t, "*", "/assets/");
        assert_eq!(assets["strip_prefix"].as_bool(), Some(true));
        assert_eq!(assets["files"]["root"].as_str(), Some("/srv/assets/"));
        assert_eq!(assets["files"]["listing"].as_str(), Some("json"));
        assert_eq!(
            assets["files"]["cache_control"].as_str(),
            Some("max-age=315360000")
        );

        let app = route(&t, "*", "/app/");
        assert_eq!(app["upstream"].as_str(), Some("b"));
        assert_eq!(strings(&app["files"]["try_files"]), ["$uri", "@b"]);

        let api = route(&t, "*", "/api/");
        assert!(api.get("files").is_none(), "a proxying location proxies");
        assert!(
            !routes(&t)
                .iter()
                .any(
                    |r| r.get("path_prefix").and_then(|p| p.as_str()) == Some("/bad/")
                        || r.get("path_exact").is_some()
                ),
            "{t:#?}"
        );
        for expected in [
            "only variable a try_files entry may use is $uri",
            "alias is translated in prefix locations only",
        ] {
            assert!(
                reports.iter().any(|r| r.contains(expected)),
                "{expected} not in {reports:#?}"
            );
        }
        assert!(
            !reports.iter().any(|r| r.contains("@backend")),
            "a named location try_files ends at is translated: {reports:#?}"
        );
    }

    #[test]
    fn expires_becomes_cache_control() {
        let one = |arg: &str| expires_cache_control(&[arg.to_owned()]);
        assert_eq!(one("30d"), Ok(Some("max-age=2592000".into())));
        assert_eq!(one("1h30m"), Ok(Some("max-age=5400".into())));
        assert_eq!(one("+90"), Ok(Some("max-age=90".into())));
        assert_eq!(one("max"), Ok(Some("max-age=315360000".into())));
        assert_eq!(one("-1"), Ok(Some("no-cache".into())));
        assert_eq!(one("epoch"), Ok(Some("no-cache".into())));
        assert_eq!(one("off"), Ok(None));
        assert!(one("@15h").is_err());
        assert!(one("soon").is_err());
        assert!(expires_cache_control(&["modified".into(), "+1h".into()]).is_err());
    }

    #[test]
    fn a_translation_with_todays_keys_loads() {
        let text = format!(
            "http {{\n proxy_cache_path /c keys_zone=pages:1m; limit_req_zone $binary_remote_addr zone=one:1m rate=5r/s;\n\
             limit_conn_zone $binary_remote_addr zone=busy:1m; limit_req_status 429; limit_conn_status 429;\n\
             set_real_ip_from 10.0.0.0/8; real_ip_header X-Forwarded-For; real_ip_recursive on; keepalive_timeout 30s;\n\
             upstream h {{ hash $cookie_session consistent; server 127.0.0.1:9001 weight=2 max_conns=9; server 127.0.0.1:9002; keepalive 4; }}\n{}",
            server(
                "location / { proxy_pass http://b; proxy_set_header X-A 1; add_header X-B 2 always; deny 192.0.2.0/24; }\n\
                 location /api/ { proxy_pass http://b/; gzip on; client_max_body_size 2m; limit_req zone=one burst=5; limit_conn busy 3; }\n\
                 location /cached { proxy_cache pages; proxy_cache_valid 1m; proxy_pass http://h; proxy_connect_timeout 3s; }\n\
                 location /other { proxy_pass http://127.0.0.1:9005; proxy_read_timeout 2s; proxy_hide_header Server; }",
            )
            .trim_start_matches("http {\n")
        );
        let t = nginx_str(Path::new("/n/nginx.conf"), &text).unwrap();
        crate::config::load_str(Path::new("imported.toml"), &t.toml)
            .unwrap_or_else(|e| panic!("{e}\n{}", t.toml));
    }

    #[test]
    fn response_headers_with_variables_are_reported() {
        let (t, reports) = import(
            "events {}\nhttp { server { listen 8080; location / { add_header X-Host $host always; add_header X-Fixed 1 always; proxy_pass http://127.0.0.1:9000; } } }\n",
        );
        let set = &route(&t, "*", "/")["response_headers"]["set"];
        assert!(set.get("X-Host").is_none(), "{set}");
        assert_eq!(set["X-Fixed"].as_str(), Some("1"));
        assert!(
            reports.iter().any(|r| r
                .contains("add_header: X-Host: gatehouse's response header values are literal")),
            "{reports:?}"
        );
    }

    #[test]
    fn error_pages_from_files_and_texts() {
        let (t, reports) = import(&server(
            "error_page 502 504 /50x.html;\n\
             location / { proxy_pass http://b; }\n\
             location = /50x.html { root /srv/errors; }\n\
             location /api/ { error_page 503 /busy; proxy_pass http://b; }\n\
             location = /busy { return 200 \"busy\"; }",
        ));
        let root = route(&t, "*", "/");
        let page = &root["error_page"][0];
        assert_eq!(page["status"].as_array().unwrap().len(), 2);
        assert_eq!(page["file"].as_str(), Some("/srv/errors/50x.html"));
        let api = route(&t, "*", "/api/");
        assert_eq!(
            api["error_page"].as_array().unwrap().len(),
            1,
            "its own replaces the server's"
        );
        assert_eq!(api["error_page"][0]["body"].as_str(), Some("busy"));
        assert!(
            !reports.iter().any(|r| r.contains("50x.html: serves files")),
            "an error page's location is not reported: {reports:?}"
        );
    }

    #[test]
    fn proxy_cache_becomes_a_cache() {
        let (t, reports) = import(&format!(
            "http {{\n proxy_cache_path /var/cache/x keys_zone=pages:10m max_size=64m;\n{}",
            server(
                "location / { proxy_pass http://b; }\n\
                 location /cached/ { proxy_cache pages; proxy_cache_valid 200 5m; proxy_pass http://b; }"
            )
            .trim_start_matches("http {\n")
        ));
        assert_eq!(route(&t, "*", "/cached/")["cache"].as_str(), Some("pages"));
        assert!(route(&t, "*", "/").get("cache").is_none());
        assert_eq!(t["cache"]["pages"]["max_size"].as_str(), Some("64MiB"));
        assert_eq!(t["cache"]["pages"]["default_ttl"].as_str(), Some("5m"));
        assert!(
            reports.iter().any(|r| r.contains("proxy_cache_path")),
            "{reports:?}"
        );
    }

    #[test]
    fn newer_and_odd_spellings() {
        let (t, reports) = import(
            "http {\n server { listen 8443 ssl; http2 on; server_tokens off; ssl_certificate /c.pem; ssl_certificate_key /k.pem;\n\
             location / { proxy_pass http://unix:/run/app.sock; }\n location /x { proxy_pass http://127.0.0.1:9000; } } }",
        );
        let listener = &t["listener"][0];
        assert!(listener["tls"].get("alpn").is_none(), "http2 on offers h2");
        assert!(
            reports.iter().any(|r| r.contains("server_tokens")),
            "{reports:?}"
        );
        assert!(
            reports.iter().any(|r| r.contains("unix sockets")),
            "{reports:?}"
        );
        route(&t, "*", "/x");
    }

    #[test]
    fn helpers() {
        assert_eq!(super::duration("30").as_deref(), Some("30s"));
        assert_eq!(super::duration("1m30s").as_deref(), Some("1m30s"));
        assert_eq!(super::duration("500ms").as_deref(), Some("500ms"));
        assert_eq!(super::nginx_size("10m"), Some(10 << 20));
        assert_eq!(super::nginx_size("512k"), Some(512 << 10));
        assert_eq!(super::nginx_size("100"), Some(100));
        assert_eq!(super::size_text(1536), "1536B");
        assert_eq!(super::size_text(2 << 20), "2MiB");
        assert_eq!(super::listener_name("0.0.0.0:80", false), "http_80");
        assert_eq!(
            super::listener_name("127.0.0.1:8443", true),
            "https_127_0_0_1_8443"
        );
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        const LINES: &[&str] = &[
            "listen 80;",
            "listen 127.0.0.1:8443 ssl http2 default_server;",
            "server_name a.com .b.com _;",
            "location / {",
            "location = /x {",
            "location ~ ^/(a)$ {",
            "location ^~ /s/ {",
            "location @n {",
            "}",
            "proxy_pass http://u;",
            "proxy_pass http://u/x/;",
            "proxy_pass http://$v;",
            "proxy_pass http://127.0.0.1:1;",
            "rewrite ^/(.*)$ /$1 break;",
            "return 301 https://$host$request_uri;",
            "return 200 ok;",
            "add_header X 1;",
            "proxy_set_header Host $host;",
            "allow all;",
            "deny all;",
            "error_page 502 /e.html;",
            "limit_req zone=z burst=1;",
            "auth_request /a;",
            "mirror /m;",
            "internal;",
            "gzip on;",
            "client_max_body_size 0;",
            "server {",
            "upstream u { server 10.0.0.1:80 weight=2 backup; }",
            "split_clients $remote_addr $v { 5% u; * u; }",
            "limit_req_zone $binary_remote_addr zone=z:1m rate=1r/s;",
            "ssl_certificate c;",
            "bogus x;",
        ];

        /// Directives whose argument is drawn at random.
        const ARG_DIRECTIVES: &[&str] = &[
            "client_max_body_size ARG;",
            "listen ARG;",
            "listen 80 ARG;",
            "server_name ARG;",
            "location ARG { proxy_pass http://u; }",
            "location ~ ARG { return 200 x; }",
            "location /p { proxy_pass ARG; }",
            "location /p/ { proxy_pass http://u/ARG; }",
            "location /p { return ARG; }",
            "location /p { return 301 ARG; }",
            "location /p { rewrite ARG /x break; proxy_pass http://u; }",
            "location /p { rewrite ^ ARG; proxy_pass http://u; }",
            "location /p { proxy_set_header X ARG; add_header Y ARG; proxy_pass http://u; }",
            "location /p { proxy_set_header ARG 1; proxy_set_header ARG 2; add_header ARG 3; add_header ARG 4; proxy_hide_header ARG; proxy_pass http://u; }",
            "location /p { error_page ARG; proxy_pass http://u; }",
            "location /p { proxy_read_timeout ARG; proxy_pass http://u; }",
            "location /p { limit_req ARG; proxy_pass http://u; }",
            "location /p { auth_request ARG; mirror ARG; proxy_pass http://u; }",
            "location /p { allow ARG; proxy_pass http://$v; }",
            "gzip on; gzip_min_length ARG; gzip_types ARG;",
            "set_real_ip_from ARG; real_ip_header ARG;",
        ];

        proptest! {
            #[test]
            fn no_config_panics_the_translator(picks in proptest::collection::vec(0..LINES.len(), 0..40)) {
                let mut text = String::from("http {\n");
                for p in picks {
                    text.push_str(LINES[p]);
                    text.push('\n');
                }
                for _ in 0..2 {
                    if let Ok(t) = nginx_str(Path::new("/n/nginx.conf"), &text) {
                        prop_assert!(t.toml.parse::<toml::Table>().is_ok(), "not TOML:\n{}", t.toml);
                    }
                    text.push_str("}\n}\n}\n}\n");
                }
            }

            #[test]
            fn no_argument_panics_the_translator(
                which in 0..ARG_DIRECTIVES.len(),
                arg in "[a-z0-9 $/:.\\[\\]*~^=@%é{}()?-]{0,20}",
            ) {
                let quoted = arg.replace(['\\', '"'], "");
                let text = format!(
                    "http {{ upstream u {{ server 10.0.0.1; }} split_clients $remote_addr $v {{ 5% u; * u; }}\n server {{ listen 80;\n location / {{ proxy_pass http://u; }}\n {} }} }}",
                    ARG_DIRECTIVES[which].replace("ARG", &format!("\"{quoted}\""))
                );
                if let Ok(t) = nginx_str(Path::new("/n/nginx.conf"), &text) {
                    prop_assert!(t.toml.parse::<toml::Table>().is_ok(), "not TOML:\n{}", t.toml);
                }
            }
        }
    }
}
