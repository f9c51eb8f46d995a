//! Process entry: parse the command line, set up tracerd's own log, load the config, run.
//!
//! Exit codes: 0 after a clean shutdown (SIGTERM/SIGINT) or a valid `validate`; 78
//! (`EX_CONFIG`) for an invalid config; 1 for a runtime failure (a listener that cannot be
//! bound, an unwritable log root, a drain that outlasts the grace period).

use std::process::ExitCode;

use clap::Parser;
use tracerd::cli::{Cli, Command};
use tracerd::config::{self, Config, Loaded};

const EXIT_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(cli.min_log_severity.level())
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let loaded = match &cli.config {
        Some(path) => match config::load(path) {
            Ok(loaded) => loaded,
            Err(e) => {
                tracing::error!("{e}");
                eprintln!("tracerd: {e}");
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
    match cli.command.unwrap_or(Command::Run) {
        Command::Validate => {
            let source = cli
                .config
                .as_ref()
                .map_or("embedded defaults".to_string(), |p| p.display().to_string());
            println!("{source}: valid");
            ExitCode::SUCCESS
        }
        Command::PrintConfig => {
            print!("{}", config::to_yaml(&loaded.config));
            ExitCode::SUCCESS
        }
        Command::Run => run(loaded.config),
    }
}

fn run(config: Config) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "tracerd starting");
    let result = runtime.block_on(tracerd::app::run(
        config,
        tracerd::app::shutdown_signal(),
        |addrs| {
            tracing::info!(listeners = ?addrs, "ready");
        },
    ));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
