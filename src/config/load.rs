//! Loading a config: read the file, parse it (every unknown key and every problem with its
//! line), probe what it refers to, validate, and hand back a [`Loaded`]; plus rendering the
//! effective config back as YAML or JSON.

use std::path::{Path, PathBuf};

use super::probe::{probe, Probe};
use super::validate::{validate, Problem};
use super::Config;

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read config file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid YAML/JSON for this schema, or fails validation.
    #[error("invalid config {path}:\n{}", format_problems(.problems))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem found.
        problems: Vec<Problem>,
    },
}

fn format_problems(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A loaded config plus the warnings (obsolete keys, unsupported features) to log once.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The effective config.
    pub config: Config,
    /// Things the operator should know but that do not stop tracerd.
    pub warnings: Vec<Problem>,
}

/// Keys cardano-tracer once had and no longer reads: a warning, not an error.
pub const OBSOLETE_KEYS: &[&str] = &["hasRTView", "metricsComp", "WarnRTViewMissing"];

/// Reads, parses, probes and validates a config file (blocking: call it off the async
/// workers).
pub fn load(path: &Path) -> Result<Loaded, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text).map_err(|problems| LoadError::Invalid {
        path: path.to_path_buf(),
        problems,
    })
}

/// Parses config text (YAML, or JSON, which is YAML), probes what it refers to (blocking) and
/// validates it.
pub fn parse(text: &str) -> Result<Loaded, Vec<Problem>> {
    let parsed = deserialize(text)?;
    let probe = probe(&parsed.config);
    check(text, parsed, &probe)
}

/// Parses and validates config text against facts probed before: pure.
pub fn parse_probed(text: &str, probe: &Probe) -> Result<Loaded, Vec<Problem>> {
    check(text, deserialize(text)?, probe)
}

/// The config as serde read it, plus every key it did not know.
struct Parsed {
    config: Config,
    unknown: Vec<String>,
}

/// Deserialises config text, collecting unknown keys with `serde_ignored` instead of stopping
/// at the first.
fn deserialize(text: &str) -> Result<Parsed, Vec<Problem>> {
    let mut unknown: Vec<String> = Vec::new();
    let de = serde_norway::Deserializer::from_str(text);
    let config: Config = serde_ignored::deserialize(de, |path| unknown.push(path.to_string()))
        .map_err(|e| {
            vec![Problem {
                key: String::new(),
                line: e.location().map(|l| l.line()),
                message: e.to_string(),
            }]
        })?;
    Ok(Parsed { config, unknown })
}

/// Sorts unknown keys into problems and obsolete-key warnings, validates, and gives every
/// problem its line.
fn check(text: &str, parsed: Parsed, probe: &Probe) -> Result<Loaded, Vec<Problem>> {
    let Parsed { config, unknown } = parsed;
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    for key in unknown {
        let leaf = key.rsplit('.').next().unwrap_or(&key).to_string();
        let line = find_key_line(text, &leaf);
        if OBSOLETE_KEYS.contains(&key.as_str()) {
            warnings.push(Problem {
                key,
                line,
                message: "obsolete cardano-tracer key, ignored".to_string(),
            });
        } else {
            problems.push(Problem {
                key,
                line,
                message: "unknown key".to_string(),
            });
        }
    }
    validate(&config, probe, &mut problems, &mut warnings);
    if problems.is_empty() {
        add_lines(text, &mut warnings);
        Ok(Loaded { config, warnings })
    } else {
        add_lines(text, &mut problems);
        Err(problems)
    }
}

/// Fills in the line of every problem that has none, from where its key appears.
fn add_lines(text: &str, problems: &mut [Problem]) {
    for p in problems {
        if p.line.is_none() {
            let leaf = p.key.rsplit('.').next().unwrap_or(&p.key).to_string();
            p.line = find_key_line(text, &leaf);
        }
    }
}

/// The 1-based line where `key` first appears as a mapping key (`key:` or `"key":`).
fn find_key_line(text: &str, key: &str) -> Option<usize> {
    let plain = format!("{key}:");
    let quoted = format!("\"{key}\"");
    text.lines()
        .position(|line| {
            let t = line.trim_start().trim_start_matches(['-', '{', ',', ' ']);
            t.starts_with(&plain) || t.starts_with(&quoted) || line.contains(&format!(" {plain}"))
        })
        .map(|i| i + 1)
}

/// Renders the effective config as JSON, one line: the payload of the config event, itself a
/// valid config file.
pub fn to_json(config: &Config) -> String {
    serde_json::to_string(config)
        .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }).to_string())
}

/// Renders the effective config as YAML that is itself a valid config file.
pub fn to_yaml(config: &Config) -> String {
    serde_norway::to_string(config).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
}
