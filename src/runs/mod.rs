//! Benchmark runs (issue 20): a run's two boundaries — when it started and ended, every node
//! directory's current file and offset, the connected nodes' round-trip times and metrics —
//! kept as `<state-dir>/runs/<name>.json` and logged as an event in tracerd's own log, and the
//! extraction of exactly the run's traces from the (rotated) files ([`extract`]).
//!
//! `record` holds the pure types and checks, `mark` takes a boundary (blocking reads),
//! `extract` cuts the files. [`Runs`] is what the HTTP routes call, on the blocking pool.

pub mod extract;
pub mod mark;
pub mod record;

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::model::MetricValue;
use crate::node::Nodes;
use crate::running::Running;
use record::{Boundary, NameError, NodeState, Rtt, RunRecord};

/// Sub-directory of the state directory holding one file per run.
pub const RUNS_DIR: &str = "runs";

/// Why a run operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// tracerd was started without `--state-dir`.
    #[error("runs are kept in tracerd's state directory: start tracerd with --state-dir DIR")]
    NoStateDir,
    /// A bad name or labels.
    #[error(transparent)]
    Name(#[from] NameError),
    /// A run of that name was already started.
    #[error("a run named {0:?} already exists")]
    Exists(String),
    /// No run of that name.
    #[error("no run named {0:?}")]
    NotFound(String),
    /// The run has ended already.
    #[error("run {0:?} has already ended")]
    Ended(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// A run file that is not a run record.
    #[error("{path}: not a run record: {source}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
}

impl RunError {
    /// A bounded label for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            RunError::NoStateDir => "no_state_dir",
            RunError::Name(_) => "bad_name",
            RunError::Exists(_) => "exists",
            RunError::NotFound(_) => "not_found",
            RunError::Ended(_) => "ended",
            RunError::Io { .. } => "io_error",
            RunError::Corrupt { .. } => "corrupt",
        }
    }
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> RunError + '_ {
    move |source| RunError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The path of run `name`'s record under `state_dir`.
pub fn record_path(state_dir: &Path, name: &str) -> PathBuf {
    state_dir.join(RUNS_DIR).join(format!("{name}.json"))
}

/// Reads run `name`'s record from `state_dir`.
pub fn read_record(state_dir: &Path, name: &str) -> Result<RunRecord, RunError> {
    record::check_name(name)?;
    let path = record_path(state_dir, name);
    let text = match fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(RunError::NotFound(name.to_string()))
        }
        Err(e) => return Err(io_at(&path)(e)),
    };
    serde_json::from_slice(&text).map_err(|source| RunError::Corrupt { path, source })
}

/// Writes `record` whole (a temporary file renamed over the old one, synced), so a crash
/// leaves the old record or the new one.
fn write_record(state_dir: &Path, record: &RunRecord, create: bool) -> Result<(), RunError> {
    let dir = state_dir.join(RUNS_DIR);
    fs::create_dir_all(&dir).map_err(io_at(&dir))?;
    let path = record_path(state_dir, &record.name);
    let tmp = dir.join(format!(".{}.tmp", record.name));
    let mut text = serde_json::to_vec_pretty(record).expect("a record serialises");
    text.push(b'\n');
    let write = || -> io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&text)?;
        f.sync_all()
    };
    write().map_err(io_at(&tmp))?;
    if create {
        // Linking fails if the name exists: two starts of one name cannot both win.
        let linked = fs::hard_link(&tmp, &path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(RunError::Exists(record.name.clone()))
            }
            Err(e) => return Err(io_at(&path)(e)),
        }
    } else {
        fs::rename(&tmp, &path).map_err(io_at(&path))?;
    }
    fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(io_at(&dir))
}

/// Starts and ends runs of the running daemon.
#[derive(Debug)]
pub struct Runs {
    nodes: Nodes,
    running: Running,
    /// One boundary at a time (start and end of one name must not interleave).
    lock: Mutex<()>,
}

impl Runs {
    /// Runs over the registry and the running config (its log targets and state directory).
    pub fn new(nodes: Nodes, running: Running) -> Runs {
        Runs {
            nodes,
            running,
            lock: Mutex::new(()),
        }
    }

    fn state_dir(&self) -> Result<PathBuf, RunError> {
        self.running
            .state_dir()
            .map(Path::to_path_buf)
            .ok_or(RunError::NoStateDir)
    }

    /// Every node's position and state now. Blocking.
    fn boundary(&self) -> Result<Boundary, RunError> {
        let now = std::time::Instant::now();
        let at_ms = crate::node::live::now_ms();
        let mut nodes = BTreeMap::new();
        for v in self.nodes.views() {
            let rtt = v.live.rtt_summary(now).map(|r| Rtt {
                latest_seconds: r.latest,
                p50_seconds: r.p50,
                p99_seconds: r.p99,
                samples: r.samples,
            });
            let metrics = v
                .live
                .metrics()
                .iter()
                .map(|(name, value)| (name.internal.to_string(), metric_json(value)))
                .collect();
            nodes.insert(v.name.clone(), NodeState { rtt, metrics });
        }
        // The files after the live state: an object counted in a metric above is on disk
        // by now or falls after the mark.
        let logs = self.running.current().logs.clone();
        let mut targets = Vec::new();
        for t in &logs.targets {
            targets.push(mark::mark_target(t).map_err(io_at(&t.root))?);
        }
        let mut at = String::new();
        crate::utc::push_rfc3339_nanos(&mut at, (at_ms as i64).saturating_mul(1_000_000));
        Ok(Boundary {
            at,
            at_ms,
            targets,
            nodes,
        })
    }

    /// Starts run `name`. Blocking.
    pub fn start(
        &self,
        name: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<RunRecord, RunError> {
        record::check_name(name)?;
        record::check_labels(&labels)?;
        let state_dir = self.state_dir()?;
        let _one = crate::sync::lock(&self.lock);
        if record_path(&state_dir, name).exists() {
            return Err(RunError::Exists(name.to_string()));
        }
        let record = RunRecord {
            name: name.to_string(),
            labels,
            start: self.boundary()?,
            end: None,
        };
        write_record(&state_dir, &record, true)?;
        let labels = serde_json::to_string(&record.labels).expect("labels serialise");
        tracing::info!(run = %name, %labels, at = %record.start.at,
            nodes = record.start.nodes.len(), "run started");
        Ok(record)
    }

    /// Ends run `name`. Blocking.
    pub fn end(&self, name: &str) -> Result<RunRecord, RunError> {
        let state_dir = self.state_dir()?;
        let _one = crate::sync::lock(&self.lock);
        let mut record = read_record(&state_dir, name)?;
        if record.end.is_some() {
            return Err(RunError::Ended(name.to_string()));
        }
        record.end = Some(self.boundary()?);
        write_record(&state_dir, &record, false)?;
        let end = record.end.as_ref().expect("just set");
        let labels = serde_json::to_string(&record.labels).expect("labels serialise");
        tracing::info!(run = %name, %labels, started = %record.start.at, at = %end.at,
            nodes = end.nodes.len(), "run ended");
        Ok(record)
    }

    /// Run `name`'s record. Blocking.
    pub fn get(&self, name: &str) -> Result<RunRecord, RunError> {
        read_record(&self.state_dir()?, name)
    }

    /// The names of every run, sorted. Blocking.
    pub fn list(&self) -> Result<Vec<String>, RunError> {
        let dir = self.state_dir()?.join(RUNS_DIR);
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_at(&dir)(e)),
        };
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().to_str()?.strip_suffix(".json")?.to_string();
                record::check_name(&name).ok().map(|()| name)
            })
            .collect();
        names.sort();
        Ok(names)
    }
}

fn metric_json(value: &MetricValue) -> serde_json::Value {
    match value {
        MetricValue::Counter(n) => serde_json::json!(n),
        MetricValue::Gauge(g) => serde_json::json!(g),
        MetricValue::Label(t) => serde_json::json!(t),
    }
}
