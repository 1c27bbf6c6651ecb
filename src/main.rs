//! The gatehouse command line: `run` (the default), `check`, `route`, `demo-backend`, `cert`
//! and `import`.

use clap::{Parser, Subcommand};
use gatehouse::app::Running;
use gatehouse::config::{self, AccessLogFormat, Config, ProcessConfig, Scheduler};
use gatehouse::workers;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tracing_subscriber::EnvFilter;

#[global_allocator]
static ALLOCATOR: gatehouse::allocator::Mimalloc = gatehouse::allocator::Mimalloc;

// Runs as the process is loaded, before Rust's runtime allocates anything.
#[cfg(target_os = "linux")]
#[used]
#[unsafe(link_section = ".init_array")]
static CONFIGURE_ALLOCATOR: extern "C" fn() = gatehouse::allocator::commit_arenas_on_demand;

const DEFAULT_CONFIG: &str = "config/gatehouse.toml";

#[derive(Parser)]
#[command(
    name = "gatehouse",
    version,
    about = "An edge reverse proxy and load balancer"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// The config file (for `run`, the default command).
    #[arg(long, short, global = true, default_value = DEFAULT_CONFIG)]
    config: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (the default).
    Run,
    /// Check a config file, like `nginx -t`: prints `config ok` or every error with its place.
    Check {
        /// Also run a file of routing cases (`[[case]]` request → expected route, upstream,
        /// target, status) against the config; fails if any case does not hold.
        #[arg(long)]
        routes_test: Option<PathBuf>,
    },
    /// Show what the proxy does with one request: the route chosen and those it beat, the
    /// answer at the edge or the request sent upstream, and the policies on the way.
    Route {
        /// The method, e.g. GET.
        method: String,
        /// `http://host/path?query` (or a path, with `-H 'Host: …'`).
        url: String,
        /// A request header, `Name: value` (repeatable).
        #[arg(short = 'H', long = "header")]
        headers: Vec<String>,
        /// The client's address.
        #[arg(long, default_value = "127.0.0.1")]
        client: std::net::IpAddr,
        /// The listener the request arrives on, by name (the first by default).
        #[arg(long)]
        listener: Option<String>,
    },
    /// Run one standalone demo order-API backend.
    DemoBackend {
        /// The address to listen on, e.g. 127.0.0.1:8001.
        #[arg(long)]
        bind: String,
        /// The name sent in `x-served-by`.
        #[arg(long, default_value = "backend-1")]
        name: String,
        /// Export the backend's SERVER spans over OTLP/HTTP to this collector (e.g.
        /// http://jaeger:4318), as service `order-api`, continuing the proxy's trace.
        #[arg(long)]
        otlp_endpoint: Option<String>,
    },
    /// Write a self-signed certificate (cert.pem, key.pem) for development.
    Cert {
        /// DNS names and IP addresses it is for, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "localhost,127.0.0.1")]
        hosts: Vec<String>,
        /// The directory to write into.
        #[arg(long, default_value = "config/certs")]
        out: PathBuf,
    },
    /// Translate another proxy's config into gatehouse's: the TOML on stdout, one line per
    /// directive not translated on stderr (`file:line: directive: why`).
    Import {
        /// The config's kind.
        #[arg(value_enum)]
        from: ImportFrom,
        /// The main config file (includes are read relative to its directory).
        file: PathBuf,
        /// Fail (exit 1) if anything could not be translated.
        #[arg(long)]
        strict: bool,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ImportFrom {
    Nginx,
}

fn import(from: ImportFrom, file: &Path, strict: bool) -> ExitCode {
    let ImportFrom::Nginx = from;
    match gatehouse::import::nginx(file) {
        Ok(translation) => {
            print!("{}", translation.toml);
            for report in &translation.reports {
                eprintln!("{report}");
            }
            if strict && !translation.reports.is_empty() {
                eprintln!(
                    "gatehouse import: {} directive(s) not translated (--strict)",
                    translation.reports.len()
                );
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => run(&cli.config),
        Command::Check { routes_test } => check(&cli.config, routes_test.as_deref()),
        Command::Route {
            method,
            url,
            headers,
            client,
            listener,
        } => route(
            &cli.config,
            &method,
            &url,
            &headers,
            client,
            listener.as_deref(),
        ),
        Command::DemoBackend {
            bind,
            name,
            otlp_endpoint,
        } => demo_backend(&bind, name, otlp_endpoint.as_deref()),
        Command::Cert { hosts, out } => cert(&hosts, &out),
        Command::Import { from, file, strict } => import(from, &file, strict),
    }
}

fn cert(hosts: &[String], out: &Path) -> ExitCode {
    match gatehouse::tls::generate::self_signed(hosts, out) {
        Ok(written) => {
            println!(
                "wrote {} and {} for {}",
                written.cert.display(),
                written.key.display(),
                hosts.join(", ")
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gatehouse cert: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check(path: &Path, routes_test: Option<&Path>) -> ExitCode {
    match config::load_file(path) {
        Ok(config) => {
            for warning in config::auth_warnings(&config) {
                eprintln!("warning: {warning}");
            }
            println!("config ok: {}", path.display());
            match routes_test {
                Some(cases) => check_routes(config, cases),
                None => ExitCode::SUCCESS,
            }
        }
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("config check failed: {} error(s)", errors.total());
            ExitCode::FAILURE
        }
    }
}

fn check_routes(config: Config, cases: &Path) -> ExitCode {
    let text = match std::fs::read_to_string(cases) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("cannot read {}: {e}", cases.display());
            return ExitCode::FAILURE;
        }
    };
    let outcome =
        gatehouse::routes_tool::Routes::compile(config).and_then(|routes| routes.run_cases(&text));
    match outcome {
        Ok((count, failures)) if failures.is_empty() => {
            println!("routes ok: {count} case(s) in {}", cases.display());
            ExitCode::SUCCESS
        }
        Ok((count, failures)) => {
            for failure in &failures {
                eprintln!("{}: {failure}", cases.display());
            }
            eprintln!("routes test failed: {} of {count} case(s)", failures.len());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{}: {e}", cases.display());
            ExitCode::FAILURE
        }
    }
}

fn route(
    path: &Path,
    method: &str,
    url: &str,
    headers: &[String],
    client: std::net::IpAddr,
    listener: Option<&str>,
) -> ExitCode {
    let config = match config::load_file(path) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::FAILURE;
        }
    };
    let mut fields = Vec::new();
    for header in headers {
        match header.split_once(':') {
            Some((name, value)) => fields.push((name.trim().to_owned(), value.trim().to_owned())),
            None => {
                eprintln!("invalid header {header:?}; write it as 'Name: value'");
                return ExitCode::FAILURE;
            }
        }
    }
    let explained = gatehouse::routes_tool::Routes::compile(config).and_then(|routes| {
        routes.explain(&gatehouse::routes_tool::Probe {
            method,
            url,
            headers: &fields,
            client,
            listener,
        })
    });
    match explained {
        Ok(explanation) => {
            print!("{}", explanation.render());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(level: &str, access: AccessLogFormat) {
    let mut filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    if access == AccessLogFormat::Off
        && let Ok(directive) = "gatehouse::access=off".parse()
    {
        filter = filter.add_directive(directive);
    }
    // Colours only for a terminal: piped logs (journald, files, collectors) stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    if access == AccessLogFormat::Combined {
        gatehouse::logging::init_combined(filter, ansi);
        return;
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    if access == AccessLogFormat::Json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

fn runtime(process: &ProcessConfig) -> std::io::Result<tokio::runtime::Runtime> {
    let threads = match process.worker_threads {
        0 => std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        n => n,
    };
    if threads == 1 || process.scheduler == Scheduler::PerCore {
        // One thread needs no work stealing: the current-thread scheduler is measurably
        // cheaper. Per core, this one is worker 0 and the others get their own below.
        let runtime = current_thread_runtime()?;
        if threads > 1 {
            let mut handles = vec![runtime.handle().clone()];
            for index in 1..threads {
                handles.push(spawn_worker(index)?);
            }
            workers::install(handles);
        }
        return Ok(runtime);
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
}

fn current_thread_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// Starts worker thread `index` with its own runtime, which runs what is spawned on it for
/// the life of the process.
fn spawn_worker(index: usize) -> std::io::Result<tokio::runtime::Handle> {
    let runtime = current_thread_runtime()?;
    let handle = runtime.handle().clone();
    std::thread::Builder::new()
        .name(format!("gatehouse-worker-{index}"))
        .spawn(move || {
            workers::enter(index);
            runtime.block_on(std::future::pending::<()>());
        })?;
    Ok(handle)
}

fn run(path: &Path) -> ExitCode {
    let config: Config = match config::load_file(path) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("gatehouse not started: {} config error(s)", errors.total());
            return ExitCode::FAILURE;
        }
    };
    init_logging(&config.log.level, config.log.access);
    let runtime = match runtime(&config.process) {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    drop(config);
    runtime.block_on(async move {
        // Signal handlers first: a signal that arrives while the listeners are being set up
        // is then a reload or a shutdown, not the default action (death).
        let signals = Signals::install();
        let running = match Running::start_file(path).await {
            Ok(running) => running,
            Err(e) => {
                tracing::error!(error = %e, "gatehouse not started");
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(config = %path.display(), "gatehouse started");
        let signal = signals.serve(&running).await;
        tracing::info!(signal, "shutting down: draining in-flight requests");
        if running.shutdown().await {
            tracing::info!("shutdown complete");
        }
        ExitCode::SUCCESS
    })
}

/// The process's signal streams: SIGHUP reloads, SIGTERM and SIGINT shut down.
struct Signals {
    hangup: Option<Signal>,
    terminate: Option<Signal>,
    interrupt: Option<Signal>,
}

impl Signals {
    fn install() -> Self {
        let install = |kind| match signal(kind) {
            Ok(stream) => Some(stream),
            Err(e) => {
                eprintln!("cannot install a signal handler: {e}");
                None
            }
        };
        Self {
            hangup: install(SignalKind::hangup()),
            terminate: install(SignalKind::terminate()),
            interrupt: install(SignalKind::interrupt()),
        }
    }

    /// Reloads on every SIGHUP until SIGTERM or SIGINT; returns which one ended it.
    async fn serve(mut self, running: &Running) -> &'static str {
        async fn next(stream: &mut Option<Signal>) {
            match stream {
                Some(stream) => {
                    stream.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        loop {
            tokio::select! {
                () = next(&mut self.hangup) => {
                    running.reloader.reload("SIGHUP").await;
                }
                () = next(&mut self.terminate) => return "SIGTERM",
                () = next(&mut self.interrupt) => return "SIGINT",
            }
        }
    }
}

async fn wait_for_shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers, Ctrl-C still works through tokio's own handler.
        let _ = tokio::signal::ctrl_c().await;
        return "SIGINT";
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

fn demo_backend(bind: &str, name: String, otlp_endpoint: Option<&str>) -> ExitCode {
    init_logging("info", AccessLogFormat::Text);
    let addr = match config::parse_bind(bind) {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("--bind: {e}");
            return ExitCode::FAILURE;
        }
    };
    let export_to = match otlp_endpoint
        .map(config::parse_tracing_endpoint)
        .transpose()
    {
        Ok(endpoint) => endpoint,
        Err(e) => {
            eprintln!("--otlp-endpoint: {e}");
            return ExitCode::FAILURE;
        }
    };
    let export_tls = match &export_to {
        Some(endpoint) if endpoint.https => {
            match gatehouse::tls::client::export_tls(&endpoint.host, None) {
                Ok(tls) => Some(tls),
                Err(e) => {
                    eprintln!("--otlp-endpoint: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        _ => None,
    };
    // The demo backend has one listener and no state per thread: one shared runtime.
    let process = ProcessConfig {
        worker_threads: 0,
        scheduler: Scheduler::WorkStealing,
    };
    let runtime = match runtime(&process) {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listener = match gatehouse::server::bind(addr) {
            Ok(listener) => listener,
            Err(e) => {
                eprintln!("cannot bind {addr}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let store = Arc::new(gatehouse::demo::OrderStore::new());
        let faults = gatehouse::demo::Faults::new(std::time::Duration::ZERO, 0.0);
        let backend = gatehouse::demo::DemoBackend::new(name.clone(), store, faults);
        if let Some(endpoint) = export_to {
            // No metrics listener here: spans dropped on the way are counted in vain.
            let dropped = prometheus::IntCounter::new("spans_dropped", "spans dropped")
                .unwrap_or_else(|_| unreachable!("a valid metric name"));
            let target = gatehouse::demo::export_target(
                endpoint.authority,
                export_tls,
                endpoint.path,
                Vec::new(),
            );
            let exporter = Arc::new(gatehouse::trace::export::Exporter::new(target, dropped));
            backend.trace_to(gatehouse::demo::tracing(1.0, exporter));
        }
        tracing::info!(%addr, name, "demo backend listening");
        match gatehouse::demo::serve(listener, backend, async {
            let _ = wait_for_shutdown_signal().await;
        })
        .await
        {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("demo backend failed: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
