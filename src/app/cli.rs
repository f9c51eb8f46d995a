//! The command line: `tracerd [-c FILE]`, `tracerd validate -c FILE`,
//! `tracerd print-config [-c FILE]`, `tracerd nodes|status` (ask the running daemon),
//! `tracerd man`, `tracerd completions SHELL`, and flags for tracerd's own log.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

pub use crate::config::MinSeverity;

/// tracerd: accepts trace objects, metrics and data points from many nodes and writes each
/// node's logs to its own rotated files.
#[derive(Debug, Parser)]
#[command(name = "tracerd", version, about, long_about = None)]
pub struct Cli {
    /// Config file (YAML or JSON; cardano-tracer keys accepted). Without it, tracerd runs on
    /// its embedded defaults (see `tracerd print-config`).
    #[arg(short = 'c', long = "config", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// tracerd's own state directory (cardano-tracer's `--state-dir`, which the NixOS module
    /// and the Docker image pass): created if missing; tracerd refuses to start if it cannot
    /// write there. Log files and their checkpoints stay under each `logRoot`.
    #[arg(long, global = true, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Lowest severity of tracerd's own log messages (on stderr). Overrides
    /// `tracerd.minLogSeverity` of the config, which SIGHUP can change; default Info.
    #[arg(long, value_enum, global = true)]
    pub min_log_severity: Option<MinSeverity>,
    /// Format of tracerd's own log messages: `human` text or one `json` object per line.
    #[arg(long, value_enum, default_value_t = OwnLogFormat::Human, global = true)]
    pub log_format: OwnLogFormat,
    /// What to do (default: run).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (the default); `tracerd run start|end NAME` marks a benchmark run's
    /// boundaries on the running daemon.
    Run(crate::tools::runs::RunArgs),
    /// Write exactly one run's traces per node, and its run.json summary, to a directory
    /// (reads the run's record in --state-dir and the log files it names).
    Extract(crate::tools::runs::ExtractArgs),
    /// Packet captures (the capture window): `tracerd capture read FILE` prints a
    /// `capture-*.pcapng` file one packet a line.
    Capture {
        /// What to do.
        #[command(subcommand)]
        action: CaptureCommand,
    },
    /// Check a config file: exit 0 if valid, else list every problem and exit 78.
    Validate {
        /// Also try what fails only at start: bind (and release) every port and socket,
        /// write to every log root and socket directory, find journald's socket for
        /// JournalMode targets (and the `--state-dir`, when given).
        #[arg(long)]
        bind: bool,
    },
    /// Print the effective config (defaults filled in) as YAML, itself a valid config file.
    PrintConfig,
    /// List the nodes connected to the running daemon (its `/api/nodes`), as a table or JSON;
    /// `tracerd nodes config NAME` prints one node's tracing configuration.
    Nodes(crate::tools::NodesArgs),
    /// Summarise the running daemon: ready or not, nodes by protocol, objects and bytes.
    Status(crate::tools::QueryArgs),
    /// Print the man page (roff), generated from this command line: `tracerd man > tracerd.1`.
    Man,
    /// Print a shell completion script: `tracerd completions bash > /etc/bash_completion.d/tracerd`.
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// `tracerd capture ...`.
#[derive(Debug, Subcommand)]
pub enum CaptureCommand {
    /// Print a pcapng file: its interfaces, then per packet its time (RFC 3339, ns),
    /// direction, bytes kept/on the wire and, for TCP, addresses, flags, sequence and window.
    Read {
        /// The file.
        file: PathBuf,
    },
}

/// Format of tracerd's own log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OwnLogFormat {
    /// One line of text per event, `key=value` fields.
    Human,
    /// One JSON object per event (`timestamp`, `level`, `fields`, `target`).
    Json,
}
