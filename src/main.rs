//! Process entry: parse the command line, set up tracerd's own log, load the config, run.
//!
//! Exit codes: 0 after a clean shutdown (SIGTERM/SIGINT) or a valid `validate`; 78
//! (`EX_CONFIG`) for an invalid config; 1 for a runtime failure (a listener that cannot be
//! bound, an unwritable log root, a drain that outlasts the grace period).

use std::process::ExitCode;

use clap::Parser;
use tracerd::app::cli::{Cli, Command, MinSeverity, OwnLogFormat};
use tracerd::app::systemd::Systemd;
use tracerd::config::{self, Config, Loaded};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, Layer};

const EXIT_CONFIG: u8 = 78;
/// Threads of the blocking pool (node log writes, opens, retention).
const BLOCKING_THREADS: usize = 16;

fn main() -> ExitCode {
    // First, before any thread exists (see the module).
    let allocator = tracerd::app::allocator::tune();
    let cli = Cli::parse();
    // Before any thread exists: socket activation unsets LISTEN_FDS/LISTEN_PID.
    let systemd = Systemd::from_env();
    let level = cli.min_log_severity.unwrap_or(MinSeverity::Info);
    let (filter, filter_handle) = reload::Layer::new(LevelFilter::from_level(level.level()));
    let format = match cli.log_format {
        OwnLogFormat::Human => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_target(false)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .boxed(),
        OwnLogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_current_span(false)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(format)
        .init();
    tracing::debug!(?allocator, "glibc allocator thresholds");
    let command = cli
        .command
        .unwrap_or(Command::Run(tracerd::tools::runs::RunArgs::default()));
    let running = matches!(&command, Command::Run(a) if a.action.is_none());
    let loaded = match &cli.config {
        Some(path) => match config::load(path) {
            Ok(loaded) => loaded,
            Err(e) => {
                // Once: in tracerd's own log when running, plainly for the other commands.
                if running {
                    tracing::error!("{e}");
                } else {
                    eprintln!("tracerd: {e}");
                }
                return ExitCode::from(EXIT_CONFIG);
            }
        },
        None => Loaded {
            config: Config::default(),
            warnings: Vec::new(),
        },
    };
    for w in &loaded.warnings {
        tracing::warn!("config: {w}");
    }
    match command {
        Command::Validate { bind } => {
            let source = cli
                .config
                .as_ref()
                .map_or("embedded defaults".to_string(), |p| p.display().to_string());
            if bind {
                let mut problems = config::preflight(&loaded.config, cli.state_dir.as_deref());
                if let Some(path) = &cli.config {
                    if let Ok(text) = std::fs::read_to_string(path) {
                        config::add_lines(&text, &mut problems);
                    }
                }
                if !problems.is_empty() {
                    let path = std::path::Path::new(&source);
                    eprintln!(
                        "tracerd: {source}: valid, but {} thing(s) would fail at start:\n{}",
                        problems.len(),
                        config::format_problems(path, &problems)
                    );
                    return ExitCode::FAILURE;
                }
            }
            if !loaded.config.tracerd.alerts.is_default() {
                if let Err(e) = tracerd::alerts::load_groups(&loaded.config.tracerd.alerts) {
                    eprintln!("tracerd: {source}: alerting rules are not valid:\n{e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            }
            println!("{source}: valid");
            ExitCode::SUCCESS
        }
        Command::PrintConfig => {
            print!("{}", config::to_yaml(&loaded.config));
            ExitCode::SUCCESS
        }
        Command::Nodes(args) => match args.what {
            None => print_or_fail("nodes", tracerd::tools::nodes(&args.query, &loaded.config)),
            Some(tracerd::tools::NodesCommand::Config { name, query }) => print_or_fail(
                "nodes config",
                tracerd::tools::node_config(&name, &query, &loaded.config),
            ),
        },
        Command::Run(tracerd::tools::runs::RunArgs {
            action: Some(action),
        }) => print_or_fail("run", tracerd::tools::runs::run(&action, &loaded.config)),
        Command::Extract(args) => {
            match tracerd::tools::runs::extract(&args, cli.state_dir.as_deref()) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("tracerd extract: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Capture {
            action: tracerd::app::cli::CaptureCommand::Read { file },
        } => match tracerd::capture::describe_file(&file) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("tracerd capture read: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Status(args) => {
            print_or_fail("status", tracerd::tools::status(&args, &loaded.config))
        }
        Command::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            match tracerd::tools::man(cmd, &mut std::io::stdout().lock()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("tracerd man: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Completions { shell } => {
            let cmd = <Cli as clap::CommandFactory>::command();
            tracerd::tools::completions(shell, cmd, &mut std::io::stdout().lock());
            ExitCode::SUCCESS
        }
        Command::Run(_) => {
            let systemd = match systemd {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %tracerd::errors::error_chain(&e), "socket activation failed");
                    return ExitCode::FAILURE;
                }
            };
            let set_level = move |s: MinSeverity| {
                if let Err(e) = filter_handle.modify(|f| *f = LevelFilter::from_level(s.level())) {
                    tracing::error!(error = %e, "cannot change the log level");
                }
            };
            let set_log_level: Option<Box<dyn Fn(MinSeverity) + Send + Sync>> =
                match cli.min_log_severity {
                    Some(_) => None,
                    None => {
                        set_level(
                            loaded
                                .config
                                .tracerd
                                .min_log_severity
                                .unwrap_or(MinSeverity::Info),
                        );
                        Some(Box::new(set_level))
                    }
                };
            if let Some(dir) = &cli.state_dir {
                if let Err(e) = config::prepare_state_dir(dir) {
                    tracing::error!("cannot use --state-dir {}: {e}", dir.display());
                    return ExitCode::FAILURE;
                }
            }
            let options = tracerd::app::Options {
                config_path: cli.config.clone(),
                systemd,
                set_log_level,
                state_dir: cli.state_dir.clone(),
            };
            run(loaded.config, options)
        }
    }
}

/// Prints a query's output, or its error (with its causes) on stderr and exit 1.
fn print_or_fail(what: &str, result: Result<String, tracerd::tools::QueryError>) -> ExitCode {
    match result {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tracerd {what}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: Config, options: tracerd::app::Options) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // File I/O runs on the blocking pool. tokio's default (512 threads) lets a connect
        // storm of thousands of nodes start hundreds of threads, each leaving its own malloc
        // arena behind; a few dozen keep every core busy with file I/O.
        .max_blocking_threads(BLOCKING_THREADS)
        // An idle blocking thread ends after 2 s, handing its allocator pages back, so
        // memory freed by a burst of renders or writes does not wait in idle threads.
        .thread_keep_alive(std::time::Duration::from_secs(2))
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    // Install the SIGTERM/SIGINT handlers before anything else, so a stop requested while
    // tracerd is still starting also ends in the one clean shutdown.
    let shutdown = {
        let _entered = runtime.enter();
        tracerd::app::shutdown_signal()
    };
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "tracerd starting");
    let result = runtime.block_on(tracerd::app::run(config, options, shutdown, |addrs| {
        tracing::info!(listeners = ?addrs, "ready");
    }));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
