//! The protocol-independent model: what a node sends, whichever wire protocol carried it.
//!
//! The native protocol ([`crate::native`]) and Cardano's forwarding protocol (`cardano`) both decode into
//! these types; everything downstream (log writers, metric store) only knows these.

use std::fmt;

/// Cardano's severities, in increasing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Debug.
    Debug,
    /// Info.
    Info,
    /// Notice.
    Notice,
    /// Warning.
    Warning,
    /// Error.
    Error,
    /// Critical.
    Critical,
    /// Alert.
    Alert,
    /// Emergency.
    Emergency,
}

impl Severity {
    /// All severities, lowest first.
    pub const ALL: [Severity; 8] = [
        Severity::Debug,
        Severity::Info,
        Severity::Notice,
        Severity::Warning,
        Severity::Error,
        Severity::Critical,
        Severity::Alert,
        Severity::Emergency,
    ];

    /// The name Cardano uses in `sev` fields.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Debug => "Debug",
            Severity::Info => "Info",
            Severity::Notice => "Notice",
            Severity::Warning => "Warning",
            Severity::Error => "Error",
            Severity::Critical => "Critical",
            Severity::Alert => "Alert",
            Severity::Emergency => "Emergency",
        }
    }

    /// Parses a Cardano severity name.
    pub fn parse(text: &str) -> Option<Severity> {
        Severity::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Cardano's detail levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DetailLevel {
    /// DMinimal.
    Minimal,
    /// DNormal.
    Normal,
    /// DDetailed.
    Detailed,
    /// DMaximum.
    Maximum,
}

/// One structured log message.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceObject {
    /// Dotted namespace.
    pub namespace: String,
    /// Severity.
    pub severity: Severity,
    /// Detail level.
    pub detail: DetailLevel,
    /// Creation time, nanoseconds since the Unix epoch, UTC.
    pub timestamp_ns: i64,
    /// Host name of the emitting process.
    pub hostname: String,
    /// Thread id of the emitting thread.
    pub thread_id: String,
    /// The message as JSON text (normally an object); see `form`.
    pub machine: String,
    /// What `machine` holds.
    pub form: MachineForm,
    /// Optional human-readable rendering.
    pub human: Option<String>,
}

/// What a trace object's `machine` text is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum MachineForm {
    /// The message payload only; tracerd wraps it into a line with `at`, `ns`, `sev`, ...
    /// (native protocol).
    #[default]
    Payload,
    /// A complete machine line already (Cardano's `toMachine`); written as is when it is one
    /// line of valid JSON, else wrapped like a payload.
    Line,
}

/// Trace objects numbered `first_seq`, `first_seq + 1`, ...
#[derive(Debug, Clone, PartialEq)]
pub struct TraceBatch {
    /// Sequence number of `objects[0]`; 0 when the sender does not number its objects.
    pub first_seq: u64,
    /// The objects.
    pub objects: Vec<TraceObject>,
}

/// A metric value.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricValue {
    /// Monotonic counter.
    Counter(i64),
    /// Gauge.
    Gauge(f64),
    /// Text.
    Label(String),
}

/// A metric update: the whole set, or just the metrics listed.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsUpdate {
    /// Replace everything (true) or update the listed names (false).
    pub full: bool,
    /// Name and value pairs.
    pub metrics: Vec<(String, MetricValue)>,
}

/// A named JSON fact.
#[derive(Debug, Clone, PartialEq)]
pub struct DataPoint {
    /// Name, e.g. `NodeInfo`.
    pub name: String,
    /// JSON text.
    pub json: String,
}
