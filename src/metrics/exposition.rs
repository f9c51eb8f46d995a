//! The Prometheus exposition: naming node metrics as cardano-tracer does, choosing a type for
//! every value, and rendering one node's metrics or many nodes' merged families in the
//! OpenMetrics 1.0 or text 0.0.4 format. Pure code: no I/O, no locks beyond the name cache.
//!
//! Output is valid in both formats whatever a node sends: names are sanitised, label values and
//! HELP texts escaped, every family has one HELP and one TYPE line, families are sorted by name,
//! and two metrics that would share a Prometheus name are never both written (the one whose
//! internal name sorts first wins; the others are counted as collisions), nor a family whose
//! name a strict OpenMetrics parser reads as part of another's (a gauge `c_created` beside a
//! counter `c`). A sample invalid in its family (a negative counter) is dropped and counted,
//! never the whole exposition.
//!
//! Names: by default every sample keeps cardano-tracer's name (no `_total`, no `_info`), so a
//! Prometheus server stores the same series from tracerd as from cardano-tracer. To stay valid
//! OpenMetrics, a counter family whose name does not end in `_total` is typed `unknown` there
//! (`counter` in text 0.0.4), and a label set `{k="v",...} 1` (cardano's `PrometheusM`) is a
//! `gauge` of value 1. With [`Naming::with_openmetrics_names`] counters get a `_total` sample
//! name and label sets an `_info` one instead (typed `counter` and `info`). Gauges are written
//! as they are, labels holding a number as gauges, and any other label text as a label set
//! with the text in its `value` label.

mod cached;
mod labels;
pub use cached::{FleetRender, LineCache, MAX_CACHED_BYTES};
pub use labels::{escape_label_value, parse_label_set, read_label_value};

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use crate::model::MetricValue;

/// Content type of OpenMetrics 1.0 output.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text;version=1.0.0;charset=utf-8";
/// Content type of Prometheus text 0.0.4 output.
pub const TEXT_CONTENT_TYPE: &str = "text/plain;version=0.0.4;charset=utf-8";
/// Most distinct internal names whose Prometheus names are cached.
const NAME_CACHE_LIMIT: usize = 1 << 18;

/// Which exposition format to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0: families without `_total`/`_info`, `info` type, `# EOF`.
    OpenMetrics,
    /// Prometheus text 0.0.4: info metrics as gauges, no `# EOF`.
    Text,
}

impl Format {
    /// cardano-tracer's negotiation: OpenMetrics when `Accept` is absent or mentions
    /// `application/openmetrics-text`, text 0.0.4 otherwise.
    pub fn from_accept(accept: Option<&str>) -> Format {
        match accept {
            None => Format::OpenMetrics,
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            Some(_) => Format::Text,
        }
    }

    /// The `Content-Type` of this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
            Format::Text => TEXT_CONTENT_TYPE,
        }
    }
}

/// The Prometheus names of one internal metric name, computed once and shared by every node
/// that sends the name.
#[derive(Debug, PartialEq, Eq)]
pub struct MetricName {
    /// The name as the node sent it, e.g. `cardano.node.metrics.blockNum_int`.
    pub internal: Box<str>,
    /// Sanitised name (cardano-tracer's rules); `None` when nothing usable is left.
    pub family: Option<Box<str>>,
    /// HELP text: the first `metricsHelp` entry whose key is a substring of the internal
    /// name, else the internal name itself (promtool wants a HELP for every family).
    pub help: Box<str>,
    /// OpenMetrics-style sample names (`_total`, `_info`) instead of cardano-tracer's.
    pub openmetrics_names: bool,
}

/// How internal names become Prometheus names: `metricsNoSuffix`, `metricsHelp`, and a cache.
#[derive(Debug, Default)]
pub struct Naming {
    no_suffix: bool,
    openmetrics_names: bool,
    help: Vec<(String, String)>,
    cache: Mutex<HashMap<Box<str>, Arc<MetricName>>>,
    budget: Arc<crate::metrics::budget::MetricBudget>,
}

impl Naming {
    /// A naming policy; `help` is searched in its (sorted) key order.
    pub fn new(no_suffix: bool, help: BTreeMap<String, String>) -> Naming {
        Naming {
            no_suffix,
            openmetrics_names: false,
            help: help.into_iter().collect(),
            cache: Mutex::default(),
            budget: Arc::default(),
        }
    }

    /// Bounds every node's stored metrics together at `bytes` (`tracerd.limits.metricBytes`).
    pub fn with_metric_bytes(mut self, bytes: u64) -> Naming {
        self.budget = Arc::new(crate::metrics::budget::MetricBudget::new(bytes));
        self
    }

    /// The budget every node's metric store charges.
    pub fn budget(&self) -> &Arc<crate::metrics::budget::MetricBudget> {
        &self.budget
    }

    /// Drops the cached names no stored metric uses any more (their nodes left).
    pub fn forget_unused(&self) {
        let mut cache = crate::sync::lock(&self.cache);
        cache.retain(|_, n| Arc::strong_count(n) > 1);
        cache.shrink_to_fit();
    }

    /// Opts in to OpenMetrics-style names: counters sampled as `<name>_total`, label sets as
    /// `<name>_info` (config `tracerd.openMetricsNames`). Default: cardano-tracer's names.
    pub fn with_openmetrics_names(mut self, on: bool) -> Naming {
        self.openmetrics_names = on;
        self
    }

    /// The names of `internal`, from the cache when possible.
    pub fn name(&self, internal: &str) -> Arc<MetricName> {
        let mut cache = crate::sync::lock(&self.cache);
        if let Some(n) = cache.get(internal) {
            return n.clone();
        }
        let name = Arc::new(self.compute(internal));
        if cache.len() < NAME_CACHE_LIMIT {
            cache.insert(internal.into(), name.clone());
        }
        name
    }

    fn compute(&self, internal: &str) -> MetricName {
        let help = self
            .help
            .iter()
            .find(|(k, _)| internal.contains(k.as_str()))
            .map_or(internal, |(_, v)| v.as_str());
        MetricName {
            internal: internal.into(),
            family: sanitise(internal, self.no_suffix),
            help: help.into(),
            openmetrics_names: self.openmetrics_names,
        }
    }
}

/// cardano-tracer's name rules: optionally strip `_int`/`_counter`/`_real`, turn `.`, `-` and
/// spaces into `_`, drop any other character outside `[A-Za-z0-9_]`. A leading digit gets a `_`
/// in front so the result is a valid Prometheus name; `None` if nothing is left.
pub fn sanitise(internal: &str, no_suffix: bool) -> Option<Box<str>> {
    let mut name = internal;
    if no_suffix {
        for suffix in ["_int", "_counter", "_real"] {
            if let Some(stripped) = name.strip_suffix(suffix) {
                name = stripped;
                break;
            }
        }
    }
    let mut out = String::with_capacity(name.len() + 1);
    for c in name.chars() {
        match c {
            '.' | '-' | ' ' => out.push('_'),
            c if c.is_ascii_alphanumeric() || c == '_' => out.push(c),
            _ => {}
        }
    }
    if out.is_empty() {
        return None;
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    Some(out.into_boxed_str())
}

/// The kind a value is written as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A counter (see [`family_names`] for its names and types).
    Counter,
    /// `gauge`.
    Gauge,
    /// A label set of value 1 (see [`family_names`]).
    Info,
}

/// A value classified for writing.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape<'a> {
    /// Counter value.
    Counter(i64),
    /// Gauge value (also labels whose text is a number in another spelling).
    Gauge(f64),
    /// A label whose text is a plain decimal number (`-12.5e3`), written as it is.
    GaugeText(&'a str),
    /// Label set of an info metric, unescaped values.
    Info(Vec<(&'a str, String)>),
}

impl Shape<'_> {
    fn kind(&self) -> Kind {
        match self {
            Shape::Counter(_) => Kind::Counter,
            Shape::Gauge(_) | Shape::GaugeText(_) => Kind::Gauge,
            Shape::Info(_) => Kind::Info,
        }
    }
}

/// Classifies a stored value.
pub fn shape(value: &MetricValue) -> Shape<'_> {
    match value {
        MetricValue::Counter(n) => Shape::Counter(*n),
        MetricValue::Gauge(g) => Shape::Gauge(*g),
        MetricValue::Label(text) => {
            let trimmed = text.trim();
            if let Ok(number) = trimmed.parse::<f64>() {
                let plain = trimmed.starts_with(|c: char| c.is_ascii_digit() || c == '-')
                    && trimmed.ends_with(|c: char| c.is_ascii_digit())
                    && trimmed.bytes().all(|b| {
                        b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+')
                    });
                if plain && number.is_finite() {
                    return Shape::GaugeText(trimmed);
                }
                return Shape::Gauge(number);
            }
            if let Some(set) = parse_label_set(text) {
                return Shape::Info(set);
            }
            Shape::Info(vec![("value", text.clone())])
        }
    }
}

fn escape_help(out: &mut String, text: &str, format: Format) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if format == Format::OpenMetrics => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

/// Appends an integer without going through `fmt`.
pub fn write_i64(out: &mut String, v: i64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut n = v.unsigned_abs();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if v < 0 {
        out.push('-');
    }
    // Only ASCII digits were written.
    out.push_str(std::str::from_utf8(&buf[i..]).unwrap_or("0"));
}

/// Appends a sample value: integers as they are, `NaN`, `+Inf`, `-Inf`.
pub fn write_f64(out: &mut String, v: f64) {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        write_i64(out, v as i64);
    } else if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{v}");
    }
}

/// The names and types one family is written under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FamilyNames {
    /// OpenMetrics family name (the name in its HELP and TYPE lines).
    pub base: String,
    /// Sample name (and the text format's family name).
    pub series: String,
    /// The family's type in OpenMetrics.
    pub openmetrics_type: &'static str,
    /// The family's type in text 0.0.4.
    pub text_type: &'static str,
}

impl FamilyNames {
    /// Every name this family takes, for a strict OpenMetrics parser: its family and sample
    /// names, and the `_created` (and `_total`) of a `counter`, the `_info` of an `info`. A
    /// later family that wants one of them clashes.
    pub fn claimed(&self) -> Vec<String> {
        let mut names = vec![self.base.clone(), self.series.clone()];
        match self.openmetrics_type {
            "counter" => {
                names.push(format!("{}_total", self.base));
                names.push(format!("{}_created", self.base));
            }
            "info" => names.push(format!("{}_info", self.base)),
            _ => {}
        }
        names
    }

    /// Whether samples must be non-negative (an OpenMetrics `counter`).
    pub fn monotonic(&self, format: Format) -> bool {
        format == Format::OpenMetrics && self.openmetrics_type == "counter"
    }
}

/// The names a family of `kind` called `name` is written under, with OpenMetrics-style
/// names ([`Naming::with_openmetrics_names`]).
pub fn family_names(name: &str, kind: Kind) -> FamilyNames {
    family_names_as(name, kind, true)
}

/// The names and types of a family of `kind` called `name`.
///
/// cardano-tracer's names (`openmetrics_names` false): the sample name is `name` for every
/// kind, as cardano-tracer writes it; in OpenMetrics a counter is typed `counter` only when
/// `name` ends in `_total` (family `name` less `_total`), else `unknown` (OpenMetrics allows an
/// `unknown` sample named as its family; a `counter`'s must end in `_total`); a label set is a
/// `gauge` of value 1 (an `info` sample must end in `_info`). Text 0.0.4 types counters
/// `counter` and label sets `gauge` (text 0.0.4 has no `info`).
///
/// OpenMetrics names: counters are sampled as `<base>_total`, label sets as `<base>_info`.
pub fn family_names_as(name: &str, kind: Kind, openmetrics_names: bool) -> FamilyNames {
    let strip = |suffix: &str| {
        name.strip_suffix(suffix)
            .filter(|b| !b.is_empty())
            .unwrap_or(name)
    };
    let (base, series, openmetrics_type, text_type) = match (kind, openmetrics_names) {
        (Kind::Gauge, _) => (name.to_string(), name.to_string(), "gauge", "gauge"),
        (Kind::Counter, true) => {
            let base = strip("_total");
            (
                base.to_string(),
                format!("{base}_total"),
                "counter",
                "counter",
            )
        }
        (Kind::Info, true) => {
            let base = strip("_info");
            (base.to_string(), format!("{base}_info"), "info", "gauge")
        }
        (Kind::Counter, false) => match name.strip_suffix("_total").filter(|b| !b.is_empty()) {
            Some(base) => (base.to_string(), name.to_string(), "counter", "counter"),
            None => (name.to_string(), name.to_string(), "unknown", "counter"),
        },
        (Kind::Info, false) => (name.to_string(), name.to_string(), "gauge", "gauge"),
    };
    FamilyNames {
        base,
        series,
        openmetrics_type,
        text_type,
    }
}

/// Appends the HELP and TYPE lines of a family.
pub fn write_header(
    out: &mut String,
    format: Format,
    names: &FamilyNames,
    _kind: Kind,
    help: &str,
) {
    let (name, ty) = match format {
        Format::OpenMetrics => (&names.base, names.openmetrics_type),
        Format::Text => (&names.series, names.text_type),
    };
    write_help_type(out, format, name, ty, help);
}

/// Appends `# HELP <name> <help>` and `# TYPE <name> <ty>`, escaping the help text.
pub fn write_help_type(out: &mut String, format: Format, name: &str, ty: &str, help: &str) {
    out.push_str("# HELP ");
    out.push_str(name);
    out.push(' ');
    escape_help(out, help, format);
    out.push_str("\n# TYPE ");
    out.push_str(name);
    out.push(' ');
    out.push_str(ty);
    out.push('\n');
}

/// Appends `{k="v",...}` (nothing when `labels` is empty).
pub fn write_labels<'a>(out: &mut String, labels: impl IntoIterator<Item = (&'a str, &'a str)>) {
    let mut first = true;
    for (k, v) in labels {
        out.push(if first { '{' } else { ',' });
        first = false;
        out.push_str(k);
        out.push_str("=\"");
        escape_label_value(out, v);
        out.push('"');
    }
    if !first {
        out.push('}');
    }
}

/// Hashes the renderer's `(pointer, kind)` keys with one multiply instead of SipHash: the
/// keys are addresses of our own allocations, not attacker-chosen.
#[derive(Debug, Clone, Copy, Default)]
struct BuildPtrHasher;

#[derive(Debug, Default)]
struct PtrHasher(u64);

impl std::hash::BuildHasher for BuildPtrHasher {
    type Hasher = PtrHasher;
    fn build_hasher(&self) -> PtrHasher {
        PtrHasher(0)
    }
}

impl std::hash::Hasher for PtrHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

/// One family being collected: every sample of one internal name and kind.
#[derive(Debug)]
struct Group {
    name: Arc<MetricName>,
    names: FamilyNames,
    kind: Kind,
    body: String,
    /// Samples of the last few nodes, moved to `body` every [`STAGED_NODES`] nodes: writing
    /// many families' samples node by node scatters stores over as many buffers, which is
    /// cheap while they stay in cache and slow once they do not.
    staged: String,
}

/// Nodes a new family buffer is first sized for.
const RESERVED_NODES: usize = 1;
/// Nodes whose samples are staged before they are appended to the family buffers.
const STAGED_NODES: usize = 16;

/// What a render left out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RenderStats {
    /// Families written.
    pub families: usize,
    /// Samples dropped because their Prometheus name collided with another metric's, or
    /// because their internal name had no usable character.
    pub collisions: u64,
    /// Samples dropped because they are invalid in the family they belong to: a negative
    /// value of a family typed `counter`, a node label set that has both `node_name` and
    /// `exported_node_name` where tracerd adds `node_name`.
    pub invalid: u64,
}

/// Collects the metrics of one or many nodes and writes them as sorted, deduplicated families.
#[derive(Debug)]
pub struct Renderer {
    format: Format,
    index: HashMap<(usize, Kind), usize, BuildPtrHasher>,
    groups: Vec<Group>,
    reserved: HashSet<String>,
    stats: RenderStats,
    numeric_prefix: String,
    info_prefix: String,
    nodes_hint: usize,
    nodes_staged: usize,
    spare: Vec<String>,
}

impl Renderer {
    /// An empty renderer.
    pub fn new(format: Format) -> Renderer {
        Renderer {
            format,
            index: HashMap::default(),
            groups: Vec::new(),
            reserved: HashSet::new(),
            stats: RenderStats::default(),
            numeric_prefix: String::new(),
            info_prefix: String::new(),
            nodes_hint: 1,
            nodes_staged: 0,
            spare: Vec::new(),
        }
    }

    /// Hands the renderer family buffers of an earlier render to write into, so a large
    /// render does not fault in fresh memory every time.
    pub fn reuse(&mut self, buffers: Vec<String>) {
        self.spare = buffers;
    }

    /// An empty renderer that expects about `nodes` calls of [`Renderer::add_node`], so each
    /// family's buffer is sized once instead of growing by copies.
    pub fn with_nodes(format: Format, nodes: usize) -> Renderer {
        Renderer {
            nodes_hint: nodes.max(1),
            ..Renderer::new(format)
        }
    }

    /// Keeps node metrics from using `name` (a family or sample name written by someone else).
    pub fn reserve(&mut self, name: &str) {
        self.reserved.insert(name.to_string());
    }

    /// Adds one node's metrics; with `node` every sample gets a `node_name` label (and a node
    /// label set's own `node_name` becomes `exported_node_name`).
    pub fn add_node<'a>(
        &mut self,
        node: Option<&str>,
        metrics: impl IntoIterator<Item = (&'a Arc<MetricName>, &'a MetricValue)>,
    ) {
        self.info_prefix.clear();
        self.numeric_prefix.clear();
        if let Some(node) = node {
            self.info_prefix.push_str("node_name=\"");
            escape_label_value(&mut self.info_prefix, node);
            self.info_prefix.push('"');
            self.numeric_prefix.push('{');
            self.numeric_prefix.push_str(&self.info_prefix);
            self.numeric_prefix.push('}');
        }
        self.numeric_prefix.push(' ');
        self.nodes_staged += 1;
        if self.nodes_staged >= STAGED_NODES {
            self.flush_staged();
        }
        for (name, value) in metrics {
            let Some(family) = name.family.as_deref() else {
                self.stats.collisions += 1;
                continue;
            };
            let shape = shape(value);
            let kind = shape.kind();
            let key = (Arc::as_ptr(name) as usize, kind);
            let i = match self.index.get(&key) {
                Some(&i) => i,
                None => {
                    let names = family_names_as(family, kind, name.openmetrics_names);
                    let line = names.series.len() + self.numeric_prefix.len() + 24;
                    let mut body = self.spare.pop().unwrap_or_default();
                    body.clear();
                    // Sized for a few nodes, then grown by doubling: reserving for every node
                    // up front multiplies a render's memory by the node count when, as with
                    // per-node metric names, each family has one node's samples.
                    body.reserve(line * self.nodes_hint.min(RESERVED_NODES));
                    // Staged samples are allocated on first use.
                    self.groups.push(Group {
                        name: name.clone(),
                        names,
                        kind,
                        body,
                        staged: String::new(),
                    });
                    self.index.insert(key, self.groups.len() - 1);
                    self.groups.len() - 1
                }
            };
            let group = &mut self.groups[i];
            let invalid = match &shape {
                Shape::Counter(n) => *n < 0 && group.names.openmetrics_type == "counter",
                Shape::Info(labels) => {
                    node.is_some()
                        && labels.iter().any(|(k, _)| *k == "node_name")
                        && labels.iter().any(|(k, _)| *k == "exported_node_name")
                }
                _ => false,
            };
            if invalid {
                self.stats.invalid += 1;
                continue;
            }
            write_sample(
                &mut group.staged,
                &group.names.series,
                &self.numeric_prefix,
                &self.info_prefix,
                &shape,
            );
        }
    }

    fn flush_staged(&mut self) {
        self.nodes_staged = 0;
        for g in &mut self.groups {
            g.body.push_str(&g.staged);
            g.staged.clear();
        }
    }

    /// Writes every family, sorted by name, dropping collisions. Does not write `# EOF`.
    pub fn finish(self, out: &mut String) -> RenderStats {
        self.finish_reusing(out, &mut Vec::new())
    }

    /// [`Renderer::finish`], handing the emptied family buffers to `spare` for the next render.
    pub fn finish_reusing(mut self, out: &mut String, spare: &mut Vec<String>) -> RenderStats {
        self.flush_staged();
        let mut groups = std::mem::take(&mut self.groups);
        out.reserve(groups.iter().map(|g| g.body.len() + 128).sum());
        groups.sort_by(|a, b| {
            (&a.names.base, a.kind, &a.name.internal).cmp(&(
                &b.names.base,
                b.kind,
                &b.name.internal,
            ))
        });
        let mut pending: Option<Group> = None;
        for group in groups {
            if let Some(p) = &mut pending {
                if p.kind == group.kind && p.name.internal == group.name.internal {
                    // The same internal name from an uncached lookup: one family.
                    p.body.push_str(&group.body);
                    spare.push(group.body);
                    continue;
                }
            }
            if let Some(p) = pending.take() {
                spare.push(self.emit(out, p));
            }
            let claimed = group.names.claimed();
            if claimed.iter().any(|n| self.reserved.contains(n)) {
                self.stats.collisions += group.body.lines().count() as u64;
                spare.push(group.body);
                continue;
            }
            self.reserved.extend(claimed);
            pending = Some(group);
        }
        if let Some(p) = pending.take() {
            spare.push(self.emit(out, p));
        }
        spare.append(&mut self.spare);
        self.stats
    }

    /// Writes a family; returns its buffer for reuse.
    fn emit(&mut self, out: &mut String, group: Group) -> String {
        write_header(out, self.format, &group.names, group.kind, &group.name.help);
        out.push_str(&group.body);
        self.stats.families += 1;
        group.body
    }
}

/// Appends one sample line: `series`, then `numeric` (`{node_name="x"} ` or a space) and
/// the value, or for info metrics the labels after `info` (`node_name="x"` or nothing).
fn write_sample(out: &mut String, series: &str, numeric: &str, info: &str, shape: &Shape<'_>) {
    out.push_str(series);
    match shape {
        Shape::Counter(n) => {
            out.push_str(numeric);
            write_i64(out, *n);
        }
        Shape::Gauge(v) => {
            out.push_str(numeric);
            write_f64(out, *v);
        }
        Shape::GaugeText(text) => {
            out.push_str(numeric);
            out.push_str(text);
        }
        Shape::Info(labels) => {
            out.push('{');
            out.push_str(info);
            let mut first = info.is_empty();
            for (k, v) in labels {
                if !first {
                    out.push(',');
                }
                first = false;
                if !info.is_empty() && *k == "node_name" {
                    out.push_str("exported_node_name");
                } else {
                    out.push_str(k);
                }
                out.push_str("=\"");
                escape_label_value(out, v);
                out.push('"');
            }
            out.push_str("} 1");
        }
    }
    out.push('\n');
}

/// Renders one node's metrics (cardano-tracer's `/<slug>` route), ending with `# EOF` in
/// OpenMetrics.
pub fn render_node<'a>(
    format: Format,
    metrics: impl IntoIterator<Item = (&'a Arc<MetricName>, &'a MetricValue)>,
) -> (String, RenderStats) {
    let mut renderer = Renderer::new(format);
    renderer.add_node(None, metrics);
    let mut out = String::new();
    let stats = renderer.finish(&mut out);
    if format == Format::OpenMetrics {
        out.push_str("# EOF\n");
    }
    (out, stats)
}

#[cfg(test)]
mod tests;
