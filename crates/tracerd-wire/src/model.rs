//! The protocol-independent model: what a node sends, whichever wire protocol carried it.
//!
//! The native protocol ([`crate::native`]) and Cardano's forwarding protocol (`cardano`) both decode into
//! these types; everything downstream (log writers, metric store) only knows these.

use std::fmt;

pub use crate::text::Text;

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

/// One structured log message. Its strings are [`Text`]: decoded from a native frame they
/// are slices of it (no allocation per string); `&*obj.namespace` or `obj.namespace.as_str()`
/// reads one as a `&str`.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceObject {
    /// Dotted namespace.
    pub namespace: Text,
    /// Severity.
    pub severity: Severity,
    /// Detail level.
    pub detail: DetailLevel,
    /// Creation time, nanoseconds since the Unix epoch, UTC.
    pub timestamp_ns: i64,
    /// Host name of the emitting process.
    pub hostname: Text,
    /// Thread id of the emitting thread.
    pub thread_id: Text,
    /// The message as JSON text (normally an object); see `form`.
    pub machine: Text,
    /// What `machine` holds.
    pub form: MachineForm,
    /// Optional human-readable rendering.
    pub human: Option<Text>,
}

impl TraceObject {
    /// A copy whose strings own their bytes: what a component keeps beyond the object's
    /// write (a queue of re-forwarded objects), so it never pins the frame it came from.
    pub fn detached(&self) -> TraceObject {
        TraceObject {
            namespace: self.namespace.detached(),
            hostname: self.hostname.detached(),
            thread_id: self.thread_id.detached(),
            machine: self.machine.detached(),
            human: self.human.as_ref().map(Text::detached),
            ..*self
        }
    }
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
