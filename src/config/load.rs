//! Loading a config: read the file, parse it (every unknown key and every problem with its
//! line), probe what it refers to, validate, and hand back a [`Loaded`]; plus rendering the
//! effective config back as YAML or JSON.

use std::path::{Path, PathBuf};

use serde_norway::Value;

use super::probe::{probe, Probe};
use super::shape::{self, Found};
use super::validate::{validate, Problem};
use super::Config;

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read config file {}: {cause}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause (its errno text is part of the message).
        cause: std::io::Error,
    },
    /// The file is not valid YAML/JSON for this schema, or fails validation.
    #[error("invalid config {}: {} problem(s)\n{}", path.display(), problems.len(),
        format_problems(path, problems))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem found.
        problems: Vec<Problem>,
    },
}

/// One problem per line, `FILE:LINE: key: message` (the form editors and `grep -n` use).
pub fn format_problems(path: &Path, problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| {
            let line = p.line.map(|l| format!("{l}:")).unwrap_or_default();
            let key = if p.key.is_empty() {
                String::new()
            } else {
                format!(" {}:", p.key)
            };
            format!("  {}:{line}{key} {}", path.display(), p.message)
        })
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

/// Reads, parses, probes and validates a config file (blocking: call it off the async
/// workers).
pub fn load(path: &Path) -> Result<Loaded, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|cause| LoadError::Read {
        path: path.to_path_buf(),
        cause,
    })?;
    parse(&text).map_err(|problems| LoadError::Invalid {
        path: path.to_path_buf(),
        problems,
    })
}

/// Parses the text of a config file (YAML, or JSON, which is YAML), probes what it refers to
/// (blocking) and validates it. A file must give `networkMagic`, `network` and `logging`, as
/// cardano-tracer requires.
pub fn parse(text: &str) -> Result<Loaded, Vec<Problem>> {
    parse_as(text, true)
}

/// Like [`parse`], without requiring the keys a file must have: for tests that check one key.
#[cfg(test)]
pub(crate) fn parse_fragment(text: &str) -> Result<Loaded, Vec<Problem>> {
    parse_as(text, false)
}

fn parse_as(text: &str, require_top: bool) -> Result<Loaded, Vec<Problem>> {
    let parsed = deserialize(text, require_top)?;
    let probe = probe(&parsed.config);
    check(text, parsed, &probe)
}

/// Parses and validates config text against facts probed before: pure.
pub fn parse_probed(text: &str, probe: &Probe) -> Result<Loaded, Vec<Problem>> {
    check(text, deserialize(text, true)?, probe)
}

/// The config as read, plus what the shape check found on the way.
struct Parsed {
    config: Config,
    found: Vec<Found>,
}

/// Parses the text, checks its shape (every problem, nulls as defaults) and deserialises
/// what remains.
fn deserialize(text: &str, require_top: bool) -> Result<Parsed, Vec<Problem>> {
    let mut value: Value = serde_norway::from_str(text).map_err(|e| {
        vec![Problem {
            key: String::new(),
            line: e.location().map(|l| l.line()),
            message: format!("not valid YAML or JSON: {e}"),
        }]
    })?;
    let found = shape::check(&mut value, require_top);
    match serde_norway::from_value::<Config>(value) {
        Ok(config) => Ok(Parsed { config, found }),
        Err(e) => {
            let mut problems = problems_of(text, &found, false);
            if problems.is_empty() {
                // The shape check let through what serde refuses: a bug, still reported.
                problems.push(Problem {
                    key: String::new(),
                    line: None,
                    message: format!("cannot read the config: {e}"),
                });
            }
            Err(problems)
        }
    }
}

/// The problems (or warnings) of the shape check, with their lines.
fn problems_of(text: &str, found: &[Found], warnings: bool) -> Vec<Problem> {
    found
        .iter()
        .filter(|f| f.warning == warnings)
        .map(|f| Problem {
            key: shape::show_path(&f.path),
            line: shape::line_of(text, &f.path),
            message: f.message.clone(),
        })
        .collect()
}

/// Validates, and gives every problem its line, in file order, each once.
fn check(text: &str, parsed: Parsed, probe: &Probe) -> Result<Loaded, Vec<Problem>> {
    let Parsed { config, found } = parsed;
    let mut problems = problems_of(text, &found, false);
    let mut warnings = problems_of(text, &found, true);
    validate(&config, probe, &mut problems, &mut warnings);
    for list in [&mut problems, &mut warnings] {
        add_lines(text, list);
        let mut seen = std::collections::HashSet::new();
        list.retain(|p| seen.insert((p.key.clone(), p.message.clone())));
        list.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
    }
    if problems.is_empty() {
        Ok(Loaded { config, warnings })
    } else {
        Err(problems)
    }
}

/// Fills in the line of every problem that has none, from where its key path appears in
/// `text` (the config file's text).
pub fn add_lines(text: &str, problems: &mut [Problem]) {
    for p in problems {
        if p.line.is_none() {
            p.line = shape::line_of(text, &shape::parse_path(&p.key));
        }
    }
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
