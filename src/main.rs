use clap::{Parser, Subcommand};
use pgmux::config::Config;
use pgmux::frontend::Shared;
use pgmux::shutdown::{Mode, Shutdown};
use pgmux::tls::Tls;
use pgmux::{listener, pool, reload, stats, upgrade};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// pgmux: a PostgreSQL connection pooler.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// pooler.toml, or PgBouncer's pgbouncer.ini, to use; without it, the embedded default
    /// (listen on 127.0.0.1:6432, serve every database of the PostgreSQL on 127.0.0.1:5432,
    /// passthrough authentication).
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a configuration file and exit (non-zero, naming the key and line, on an error).
    Check,
    /// About the configuration: `pgmux config reference` prints every key, its default and
    /// meaning, as Markdown (docs/configuration.md).
    #[command(name = "config")]
    ConfigInfo {
        #[command(subcommand)]
        what: ConfigCommand,
    },
    /// About /metrics: `pgmux metrics reference` prints every metric family, its type, labels
    /// and meaning, as Markdown (docs/metrics.md).
    Metrics {
        #[command(subcommand)]
        what: MetricsCommand,
    },
    /// Start this binary as the new pgmux in place of the one running on the same
    /// listen_addr and listen_port (an upgrade in place): it takes the listening sockets, so no
    /// connection is refused, and the old one hands it every idle client with its session, then
    /// exits once it holds nothing (TLS clients are closed at a transaction boundary; session-mode
    /// clients stay with the old process until they leave, within shutdown_timeout).
    Upgrade,
    /// Print the pooler.toml equivalent of PgBouncer's pgbouncer.ini FILE; settings pgmux does
    /// not act on are listed on stderr (and as comments in the output).
    Convert {
        /// The pgbouncer.ini to read (its %include files are taken from the working directory).
        file: PathBuf,
    },
}

/// jemalloc: its size classes keep the 128-byte-aligned objects tokio allocates for every
/// connection (the task, the socket's registration) free of the padding glibc's memalign adds,
/// which is most of what an idle client costs beyond those objects (issue 3, idle clients).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Subcommand)]
enum ConfigCommand {
    /// Every key of pooler.toml with its default and meaning (Markdown).
    Reference,
}

#[derive(Subcommand)]
enum MetricsCommand {
    /// Every metric family of /metrics with its type, labels and meaning (Markdown).
    Reference,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::ConfigInfo {
        what: ConfigCommand::Reference,
    }) = cli.command
    {
        print!("{}", pgmux::config::reference::markdown());
        return ExitCode::SUCCESS;
    }
    if let Some(Command::Metrics {
        what: MetricsCommand::Reference,
    }) = cli.command
    {
        print!("{}", pgmux::stats::reference::markdown());
        return ExitCode::SUCCESS;
    }
    if let Some(Command::Convert { file }) = &cli.command {
        return convert(file);
    }
    let config = match &cli.config {
        Some(path) => match Config::load(path) {
            Ok(config) => config,
            Err(e) => {
                eprintln!("pgmux: {e}");
                return ExitCode::from(2);
            }
        },
        None if matches!(cli.command, Some(Command::Check)) => {
            eprintln!("pgmux check: give the file to check with --config FILE");
            return ExitCode::from(2);
        }
        None => Config::embedded_default(),
    };
    // Certificates and keys are read once, here: a bad file stops pgmux (and fails `check`).
    let tls = match Tls::load(&config.pooler) {
        Ok(tls) => tls,
        Err(e) => {
            let origin = cli.config.as_deref().unwrap_or(std::path::Path::new("pgmux"));
            eprintln!("pgmux: {}: {e}", origin.display());
            return ExitCode::from(2);
        }
    };
    if let Some(Command::Check) = cli.command {
        for note in &config.notes {
            eprintln!("note: {note}");
        }
        println!("{}: ok", cli.config.unwrap_or_default().display());
        return ExitCode::SUCCESS;
    }
    // Logs go to stderr, coloured only on a terminal, so files and journald get plain lines.
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    // The main thread's runtime: signals, the janitor, periodic stats, /metrics and the drain.
    // Clients are served by the workers (`worker`), each on a runtime of its own.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("pgmux: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let upgrade = matches!(cli.command, Some(Command::Upgrade));
    runtime.block_on(serve(config, tls, cli.config, upgrade))
}

/// `pgmux convert FILE`: the TOML on stdout, the notes on stderr; 2 on a malformed file.
fn convert(file: &std::path::Path) -> ExitCode {
    let converted = pgmux::config::ini::convert_file(file);
    // The TOML must also read back as a pooler.toml: the same check `--config` makes.
    match converted.and_then(|c| c.config().map(|_| c)) {
        Ok(converted) => {
            print!("{}", converted.toml);
            for note in &converted.notes {
                eprintln!("# {note}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pgmux: {e}");
            ExitCode::from(2)
        }
    }
}

/// The sockets clients and scrapers reach (the workers' TCP listeners, the Unix socket, the
/// metrics listener), and what keeps other processes off the port.
struct Sockets {
    listening: upgrade::Inheritable,
    _marks: Option<pgmux::port_mark::Marks>,
}

/// A fresh start's sockets (None: the error is logged).
fn bind_all(config: &Config) -> Option<Sockets> {
    let (addr, port) = (config.pooler.listen_addr.as_str(), config.pooler.listen_port);
    let workers = match config.pooler.workers {
        0 => pgmux::worker::default_count(),
        n => n as usize,
    };
    // The Unix socket first: a process refused there never joins a shared port's group.
    let unix = match config.pooler.unix_socket_dir.as_str() {
        "" => None,
        dir => match listener::bind_unix(dir, port, config.pooler.unix_socket_mode) {
            Ok(l) => Some((l, listener::unix_path(dir, port))),
            Err(e) => {
                tracing::error!(error = %e, "cannot listen on the Unix socket in {dir}");
                return None;
            }
        },
    };
    // The marks live as long as the process: other pgmux processes see the port is not shared.
    match listener::bind(addr, port, workers, config.pooler.so_reuseport) {
        Ok(bound) => Some(Sockets {
            listening: upgrade::Inheritable {
                groups: bound.workers,
                unix,
                metrics: stats::metrics::bind(&config.metrics.listen),
            },
            _marks: bound.marks,
        }),
        Err(e) => {
            if let Some((_, path)) = &unix {
                let _ = std::fs::remove_file(path);
            }
            tracing::error!(error = %e, "cannot listen on {addr}:{port}");
            None
        }
    }
}

/// `pgmux upgrade`: the running pgmux's sockets.
fn take_over(takeover: &mut upgrade::Takeover, config: &Config) -> Result<Sockets, String> {
    let pooler = &config.pooler;
    let marks = match pooler.so_reuseport {
        true => None,
        false => {
            let ips = listener::addresses(&pooler.listen_addr).map_err(|e| e.to_string())?;
            Some(pgmux::port_mark::claim(&ips, pooler.listen_port).map_err(|e| e.to_string())?)
        }
    };
    let metrics = match takeover.metrics.take() {
        Some(l) => Some(l),
        None => stats::metrics::bind(&config.metrics.listen),
    };
    let tcp = std::mem::take(&mut takeover.groups);
    if tcp.is_empty() {
        return Err("the running pgmux has no TCP listening socket to give".into());
    }
    Ok(Sockets {
        listening: upgrade::Inheritable {
            groups: tcp,
            unix: takeover.unix.take(),
            metrics,
        },
        _marks: marks,
    })
}

async fn serve(config: Config, tls: Tls, path: Option<PathBuf>, upgrading: bool) -> ExitCode {
    let (addr, port) = (config.pooler.listen_addr.clone(), config.pooler.listen_port);
    let name = upgrade::socket_name(&addr, port);
    let mut takeover = None;
    if upgrading {
        match upgrade::takeover(&name) {
            Ok(t) => takeover = Some(t),
            Err(e) => {
                tracing::error!("pgmux upgrade: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let sockets = match takeover.as_mut() {
        Some(t) => match take_over(t, &config) {
            Ok(sockets) => sockets,
            Err(e) => {
                tracing::error!("pgmux upgrade: {e}");
                return ExitCode::FAILURE;
            }
        },
        None => match bind_all(&config) {
            Some(sockets) => sockets,
            None => return ExitCode::FAILURE,
        },
    };
    let workers = sockets.listening.groups.len();
    let inherit = match sockets.listening.try_clone() {
        Ok(inherit) => inherit,
        Err(e) => {
            tracing::error!(error = %e, "cannot keep copies of the listening sockets");
            return ExitCode::FAILURE;
        }
    };
    let mut signals = match Signals::new() {
        Ok(signals) => signals,
        Err(e) => {
            tracing::error!(error = %e, "cannot install signal handlers");
            return ExitCode::FAILURE;
        }
    };
    let mut threads = if workers == 1 {
        "1 worker thread".to_owned()
    } else {
        format!("{workers} worker threads")
    };
    if config.pooler.so_reuseport {
        threads.push_str(", port shared with so_reuseport");
    }
    let socket = sockets
        .listening
        .unix
        .as_ref()
        .map(|(_, path)| format!(" and {}", path.display()))
        .unwrap_or_default();
    let from = takeover
        .as_ref()
        .map(|t| format!(", taken over from pgmux {}", t.old_pid))
        .unwrap_or_default();
    tracing::info!(
        "pgmux {} listening on {addr}:{port}{socket} ({threads}{from})",
        env!("CARGO_PKG_VERSION")
    );
    for note in &config.notes {
        tracing::warn!("{note}");
    }
    let shared = Arc::new(Shared::new(config, tls).with_config_path(path));
    if let Some(t) = &takeover {
        shared.continue_ids(t.next_client);
    }
    let Sockets { listening, _marks } = sockets;
    let upgrade::Inheritable {
        groups: tcp,
        unix,
        metrics,
    } = listening;
    tokio::spawn(pool::janitor::run(shared.pools.clone()));
    tokio::spawn(stats::period::run(shared.clone()));
    tokio::spawn(stats::metrics::serve(shared.clone(), metrics));
    tokio::spawn(pgmux::dashboard::history::run(shared.clone()));
    pgmux::worker::set_main(tokio::runtime::Handle::current());
    let started = match pgmux::worker::start(tcp, unix, &shared) {
        Ok(started) => started,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the worker threads");
            return ExitCode::FAILURE;
        }
    };
    let main = tokio::runtime::Handle::current();
    match takeover {
        Some(t) => t.ready(shared.clone(), started.handles, inherit, main),
        None => upgrade::serve(shared.clone(), name, Some(inherit), main),
    }
    let accepting = started.closed;
    let mode = loop {
        let signal = tokio::select! {
            signal = signals.next() => signal,
            // The console's SHUTDOWN started it.
            _ = shared.shutdown.draining() => break if shared.shutdown.refusing() { Mode::Refuse } else { Mode::Graceful },
        };
        match signal {
            Signal::Hangup => {
                let _ = reload::reload(&shared);
            }
            Signal::Interrupt => break Mode::Graceful,
            Signal::Terminate => break Mode::Refuse,
        }
    };
    let timeout = shared.config.load().pooler.shutdown_timeout;
    if !shared.shutdown.is_upgrade() {
        tracing::info!(
            ?mode,
            "shutting down: no new connections; transactions in flight may finish within shutdown_timeout ({} s)",
            timeout.as_secs_f64()
        );
    }
    shared.shutdown.begin(mode, timeout);
    upgrade::close_inherited();
    shared.cancels.wake_all();
    for closed in accepting {
        let _ = closed.await;
    }
    let drain = Shutdown::drain(&shared);
    tokio::pin!(drain);
    loop {
        tokio::select! {
            _ = &mut drain => {
                tracing::info!("shut down");
                return ExitCode::SUCCESS;
            }
            signal = signals.next() => match signal {
                Signal::Hangup => {
                    let _ = reload::reload(&shared);
                }
                _ => {
                    tracing::warn!("second signal: exiting at once");
                    return ExitCode::FAILURE;
                }
            },
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Signal {
    Hangup,
    Interrupt,
    Terminate,
}

struct Signals {
    hup: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            hup: signal(SignalKind::hangup())?,
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }

    async fn next(&mut self) -> Signal {
        tokio::select! {
            Some(()) = self.hup.recv() => Signal::Hangup,
            Some(()) = self.int.recv() => Signal::Interrupt,
            Some(()) = self.term.recv() => Signal::Terminate,
            else => std::future::pending().await,
        }
    }
}
