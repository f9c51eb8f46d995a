//! The command line: `tracerd [-c FILE]`, `tracerd validate -c FILE`,
//! `tracerd print-config [-c FILE]`, and flags for tracerd's own log.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// tracerd: accepts trace objects, metrics and data points from many nodes and writes each
/// node's logs to its own rotated files.
#[derive(Debug, Parser)]
#[command(name = "tracerd", version, about, long_about = None)]
pub struct Cli {
    /// Config file (YAML or JSON; cardano-tracer keys accepted). Without it, tracerd runs on
    /// its embedded defaults (see `tracerd print-config`).
    #[arg(short = 'c', long = "config", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Lowest severity of tracerd's own log messages (on stderr). Overrides
    /// `tracerd.minLogSeverity` of the config, which SIGHUP can change; default Info.
    #[arg(long, value_enum, global = true)]
    pub min_log_severity: Option<MinSeverity>,
    /// Format of tracerd's own log messages: `human` text or one `json` object per line.
    #[arg(long, value_enum, default_value_t = LogFormat::Human, global = true)]
    pub log_format: LogFormat,
    /// What to do (default: run).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (the default).
    Run,
    /// Check a config file: exit 0 if valid, else list every problem and exit 78.
    Validate,
    /// Print the effective config (defaults filled in) as YAML, itself a valid config file.
    PrintConfig,
}

/// Format of tracerd's own log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One line of text per event, `key=value` fields.
    Human,
    /// One JSON object per event (`timestamp`, `level`, `fields`, `target`).
    Json,
}

/// cardano-tracer's `--min-log-severity` values (also `tracerd.minLogSeverity` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[value(rename_all = "PascalCase")]
pub enum MinSeverity {
    /// Debug and up.
    Debug,
    /// Info and up.
    Info,
    /// Notice and up (same as Info for tracerd's own log).
    Notice,
    /// Warning and up.
    Warning,
    /// Error and up.
    Error,
    /// Critical and up (same as Error).
    Critical,
    /// Alert and up (same as Error).
    Alert,
    /// Emergency only (same as Error).
    Emergency,
}

impl MinSeverity {
    /// The `tracing` level that lets this severity and higher through.
    pub fn level(self) -> tracing::Level {
        match self {
            MinSeverity::Debug => tracing::Level::DEBUG,
            MinSeverity::Info | MinSeverity::Notice => tracing::Level::INFO,
            MinSeverity::Warning => tracing::Level::WARN,
            _ => tracing::Level::ERROR,
        }
    }
}
