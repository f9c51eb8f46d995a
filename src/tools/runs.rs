//! `tracerd run start|end NAME` (ask the running daemon to record a run boundary, over
//! `POST /api/runs` and `POST /api/runs/<name>/end`) and `tracerd extract --run NAME --out
//! DIR` (offline: cut the run's traces from the log files its record names).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::{exchange, QueryArgs, QueryError};
use crate::config::Config;
use crate::runs::extract::ExtractError;
use crate::runs::RunError;

/// `tracerd run`: the daemon, or with a subcommand a run boundary.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RunArgs {
    #[command(subcommand)]
    pub action: Option<RunAction>,
}

/// Subcommands of `tracerd run`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum RunAction {
    /// Start a benchmark run on the running daemon: record every node's file and offset,
    /// round-trip times and metrics now, under NAME in its state directory.
    Start {
        /// The run's name: A-Z a-z 0-9 . _ - (at most 128).
        name: String,
        /// A label of the run, `KEY=VALUE` (profile, backend, commit, ...); repeatable.
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        #[command(flatten)]
        query: QueryArgs,
    },
    /// End the run NAME on the running daemon (the second boundary).
    End {
        /// The run's name.
        name: String,
        #[command(flatten)]
        query: QueryArgs,
    },
}

/// `tracerd extract`.
#[derive(Debug, Clone, clap::Args)]
pub struct ExtractArgs {
    /// The run to extract (as given to `tracerd run start`).
    #[arg(long, value_name = "NAME")]
    pub run: String,
    /// Where to write `<node>/traces.json` (and `.log`) and `run.json`: a new or empty
    /// directory.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// Why `tracerd extract` failed.
#[derive(Debug, thiserror::Error)]
pub enum ExtractCommandError {
    /// No `--state-dir`.
    #[error("give the daemon's --state-dir DIR (where its runs are recorded)")]
    NoStateDir,
    /// The record cannot be read.
    #[error(transparent)]
    Run(#[from] RunError),
    /// The extraction failed.
    #[error(transparent)]
    Extract(#[from] ExtractError),
}

fn parse_labels(labels: &[String]) -> Result<BTreeMap<String, String>, QueryError> {
    labels
        .iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(QueryError::BadArgument(format!(
                "--label takes KEY=VALUE, got {l:?}"
            ))),
        })
        .collect()
}

/// One line describing a run record the daemon answered with.
fn describe(record: &Value, what: &str) -> String {
    let boundary = if what == "started" {
        &record["start"]
    } else {
        &record["end"]
    };
    let nodes = boundary["nodes"].as_object().map_or(0, |n| n.len());
    let dirs: usize = boundary["targets"].as_array().map_or(0, |t| {
        t.iter()
            .map(|t| t["files"].as_object().map_or(0, |f| f.len()))
            .max()
            .unwrap_or(0)
    });
    format!(
        "run {} {what} at {} ({nodes} connected node(s), {dirs} node director(ies) marked)\n",
        record["name"].as_str().unwrap_or("?"),
        boundary["at"].as_str().unwrap_or("?"),
    )
}

/// `tracerd run start|end`: the line to print.
pub fn run(action: &RunAction, config: &Config) -> Result<String, QueryError> {
    let (query, path, body, what, name) = match action {
        RunAction::Start {
            name,
            labels,
            query,
        } => {
            let body = json!({"name": name, "labels": parse_labels(labels)?}).to_string();
            (query, "/api/runs".to_string(), body, "started", name)
        }
        RunAction::End { name, query } => {
            // The name goes into the path: only names the daemon would accept.
            crate::runs::record::check_name(name)
                .map_err(|e| QueryError::BadArgument(e.to_string()))?;
            (
                query,
                format!("/api/runs/{name}/end"),
                String::new(),
                "ended",
                name,
            )
        }
    };
    let target = query.target(config)?;
    let timeout = query.timeout()?;
    let (code, reply) = exchange(&target, &target.post(&path, &body), timeout)?;
    if !(200..300).contains(&code) {
        let mut body = String::from_utf8_lossy(&reply).trim().to_string();
        body.truncate(500);
        return Err(QueryError::Http {
            url: target.url(),
            path,
            code,
            body,
        });
    }
    let record: Value = serde_json::from_slice(&reply).map_err(|e| {
        QueryError::BadArgument(format!(
            "the daemon's answer for run {name:?} is not JSON: {e}"
        ))
    })?;
    if query.json {
        return Ok(format!("{record}\n"));
    }
    Ok(describe(&record, what))
}

/// `tracerd extract`: the line to print.
pub fn extract(
    args: &ExtractArgs,
    state_dir: Option<&Path>,
) -> Result<String, ExtractCommandError> {
    let state_dir = state_dir.ok_or(ExtractCommandError::NoStateDir)?;
    let record = crate::runs::read_record(state_dir, &args.run)?;
    let summary = crate::runs::extract::extract(&record, &args.out)?;
    let nodes = summary["nodes"].as_object().map_or(0, |n| n.len());
    let objects: u64 = summary["nodes"].as_object().map_or(0, |n| {
        n.values().filter_map(|v| v["objects"].as_u64()).sum()
    });
    Ok(format!(
        "run {}: {objects} trace object(s) of {nodes} node(s) written to {} (summary in run.json)\n",
        args.run,
        args.out.display()
    ))
}
