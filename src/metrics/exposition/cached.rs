//! `/metrics` of many nodes from each node's rendered sample lines, kept between renders.
//!
//! A node's lines (`<series>{node_name="…"} <value>`) depend only on its name and its metric
//! store, so they are formatted once per store version ([`FleetRender::add_node`]) and a scrape
//! of a fleet whose nodes did not change since the last one only copies bytes: families are
//! ordered and checked exactly as [`super::Renderer`] does, the exposition's size is known
//! before a byte of it is written, and every line is copied once, straight to its place.
//!
//! Output is byte-identical to [`super::Renderer`]'s for the same state (tested against it).
//! Memory: the kept lines of at most [`MAX_CACHED_BYTES`] (a fleet past it keeps the nodes
//! that fit, in view order, and formats the others afresh at every render); a render adds the
//! exposition itself and one index entry per stored metric.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::{
    escape_label_value, family_names_as, shape, write_header, write_sample, BuildPtrHasher,
    FamilyNames, Format, Kind, MetricName, RenderStats, Shape,
};
use crate::model::MetricValue;

/// Most bytes of rendered lines (and their index) kept between renders.
pub const MAX_CACHED_BYTES: usize = 64 << 20;

/// What became of one stored metric in its node's lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Written: its line ends at the entry's `end`.
    Line,
    /// Its internal name has no usable character (a collision).
    Nameless,
    /// Invalid in its family (a negative OpenMetrics counter, a clashing `node_name`).
    Invalid,
}

/// One stored metric of a node, in the store's iteration order.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Address of its [`MetricName`]: valid while the store keeps the version it was read at.
    name: usize,
    /// Where its line ends in [`NodeLines::lines`] (it starts where the previous one ends).
    end: usize,
    /// Its family in the current render.
    group: u32,
    kind: Kind,
    fate: Fate,
}

/// One node's rendered lines and what they were rendered from.
#[derive(Debug, Default)]
struct NodeLines {
    name: Box<str>,
    /// The store version they were rendered from; `None` until rendered.
    version: Option<u64>,
    lines: String,
    entries: Vec<Entry>,
}

impl NodeLines {
    fn bytes(&self) -> usize {
        self.lines.capacity() + self.entries.capacity() * std::mem::size_of::<Entry>()
    }
}

/// The nodes' lines kept from the last render, by node name.
#[derive(Debug, Default)]
pub struct LineCache {
    nodes: HashMap<Box<str>, NodeLines>,
}

impl LineCache {
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.nodes.values().map(NodeLines::bytes).sum()
    }

    /// Nodes whose lines are held.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// No node's lines held.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

/// One family of the render: every sample of one internal name (one [`MetricName`]) and kind.
#[derive(Debug)]
struct Group {
    name: Arc<MetricName>,
    names: FamilyNames,
    kind: Kind,
    bytes: usize,
    lines: u64,
    /// Where its next line goes in the output; `None` when the family is not written.
    at: Option<usize>,
}

/// One `/metrics` render of many nodes' metrics, each labelled `node_name`.
#[derive(Debug)]
pub struct FleetRender {
    format: Format,
    old: HashMap<Box<str>, NodeLines>,
    nodes: Vec<NodeLines>,
    index: HashMap<(usize, Kind), u32, BuildPtrHasher>,
    groups: Vec<Group>,
    reserved: HashSet<String>,
    stats: RenderStats,
    /// Nodes whose lines were formatted in this render (the others were reused).
    pub formatted: usize,
    max_cached: usize,
}

impl FleetRender {
    /// A render reusing the lines of `cache` (those of nodes it does not see are dropped).
    pub fn new(format: Format, cache: LineCache, nodes: usize) -> FleetRender {
        FleetRender {
            format,
            old: cache.nodes,
            nodes: Vec::with_capacity(nodes),
            index: HashMap::default(),
            groups: Vec::new(),
            reserved: HashSet::new(),
            stats: RenderStats::default(),
            formatted: 0,
            max_cached: MAX_CACHED_BYTES,
        }
    }

    /// Keeps at most `bytes` of lines for the next render (default [`MAX_CACHED_BYTES`]).
    pub fn with_cache_bound(mut self, bytes: usize) -> FleetRender {
        self.max_cached = bytes;
        self
    }

    /// Keeps node metrics from using `name` (a family or sample name written by someone else).
    pub fn reserve(&mut self, name: &str) {
        self.reserved.insert(name.to_string());
    }

    /// Adds one node's metrics, read at store version `version` (equal versions, equal
    /// contents); `metrics` is walked once more when its lines must be formatted again.
    pub fn add_node<'a, I>(&mut self, node: &str, version: u64, metrics: I)
    where
        I: Iterator<Item = (&'a Arc<MetricName>, &'a MetricValue)> + Clone,
    {
        let mut lines = self.old.remove(node).unwrap_or_default();
        let fresh = lines.version == Some(version) && *lines.name == *node;
        if !(fresh && self.reuse(&mut lines, metrics.clone())) {
            self.format_node(&mut lines, node, version, metrics);
            self.formatted += 1;
        }
        let mut start = 0;
        for e in &lines.entries {
            match e.fate {
                Fate::Line => {
                    let g = &mut self.groups[e.group as usize];
                    g.bytes += e.end - start;
                    g.lines += 1;
                }
                Fate::Nameless => self.stats.collisions += 1,
                Fate::Invalid => self.stats.invalid += 1,
            }
            start = e.end;
        }
        self.nodes.push(lines);
    }

    /// Points the kept entries at this render's families; false (nothing to reuse) when the
    /// store's names are not the ones the lines were rendered from.
    fn reuse<'a>(
        &mut self,
        lines: &mut NodeLines,
        metrics: impl Iterator<Item = (&'a Arc<MetricName>, &'a MetricValue)>,
    ) -> bool {
        let mut seen = 0;
        for (i, (name, _)) in metrics.enumerate() {
            let Some(e) = lines.entries.get(i) else {
                return false;
            };
            if e.name != Arc::as_ptr(name) as usize {
                return false;
            }
            if e.fate != Fate::Nameless {
                // A fleet as it was at the last render makes its families in the same order,
                // so the entry's last family is usually still its family: no lookup.
                let same = self
                    .groups
                    .get(e.group as usize)
                    .is_some_and(|g| g.kind == e.kind && Arc::as_ptr(&g.name) as usize == e.name);
                if !same {
                    let group = self.group(name, e.kind);
                    lines.entries[i].group = group;
                }
            }
            seen += 1;
        }
        seen == lines.entries.len()
    }

    /// Formats the node's lines afresh.
    fn format_node<'a>(
        &mut self,
        lines: &mut NodeLines,
        node: &str,
        version: u64,
        metrics: impl Iterator<Item = (&'a Arc<MetricName>, &'a MetricValue)>,
    ) {
        let mut info = String::from("node_name=\"");
        escape_label_value(&mut info, node);
        info.push('"');
        let numeric = format!("{{{info}}} ");
        lines.name = node.into();
        lines.version = Some(version);
        lines.lines.clear();
        lines.entries.clear();
        for (name, value) in metrics {
            let mut entry = Entry {
                name: Arc::as_ptr(name) as usize,
                end: lines.lines.len(),
                group: 0,
                kind: Kind::Gauge,
                fate: Fate::Nameless,
            };
            if name.family.is_none() {
                lines.entries.push(entry);
                continue;
            }
            let shape = shape(value);
            entry.kind = shape.kind();
            entry.group = self.group(name, entry.kind);
            let names = &self.groups[entry.group as usize].names;
            let invalid = match &shape {
                Shape::Counter(n) => *n < 0 && names.openmetrics_type == "counter",
                Shape::Info(labels) => {
                    labels.iter().any(|(k, _)| *k == "node_name")
                        && labels.iter().any(|(k, _)| *k == "exported_node_name")
                }
                _ => false,
            };
            if invalid {
                entry.fate = Fate::Invalid;
            } else {
                write_sample(&mut lines.lines, &names.series, &numeric, &info, &shape);
                entry.fate = Fate::Line;
                entry.end = lines.lines.len();
            }
            lines.entries.push(entry);
        }
    }

    /// This render's family of `name` and `kind`, created on first use.
    fn group(&mut self, name: &Arc<MetricName>, kind: Kind) -> u32 {
        let key = (Arc::as_ptr(name) as usize, kind);
        if let Some(&i) = self.index.get(&key) {
            return i;
        }
        let family = name.family.as_deref().unwrap_or_default();
        let i = u32::try_from(self.groups.len()).unwrap_or(u32::MAX);
        self.groups.push(Group {
            name: name.clone(),
            names: family_names_as(family, kind, name.openmetrics_names),
            kind,
            bytes: 0,
            lines: 0,
            at: None,
        });
        self.index.insert(key, i);
        i
    }

    /// Writes every family, sorted by name, dropping collisions as [`super::Renderer`] does,
    /// then `tail(stats)` (what follows the node families; it may count the stats first).
    /// Returns the exposition and the lines to keep for the next render.
    pub fn finish(mut self, tail: impl FnOnce(RenderStats) -> String) -> (Vec<u8>, LineCache) {
        let mut order: Vec<u32> = (0..self.groups.len() as u32).collect();
        let groups = &self.groups;
        order.sort_by(|&a, &b| {
            let (a, b) = (&groups[a as usize], &groups[b as usize]);
            (&a.names.base, a.kind, &a.name.internal).cmp(&(
                &b.names.base,
                b.kind,
                &b.name.internal,
            ))
        });
        // Headers, and where each written family's lines go.
        let mut heads = String::new();
        let mut pieces: Vec<(usize, usize)> = Vec::new();
        let mut at = 0;
        let mut pending: Option<u32> = None;
        for &g in &order {
            if let Some(p) = pending {
                let (p, q) = (&self.groups[p as usize], &self.groups[g as usize]);
                if p.kind == q.kind && p.name.internal == q.name.internal {
                    // The same internal name from an uncached lookup: one family.
                    let q = &mut self.groups[g as usize];
                    q.at = Some(at);
                    at += q.bytes;
                    continue;
                }
            }
            pending = None;
            let group = &mut self.groups[g as usize];
            let claimed = group.names.claimed();
            if claimed.iter().any(|n| self.reserved.contains(n)) {
                self.stats.collisions += group.lines;
                continue;
            }
            self.reserved.extend(claimed);
            let start = heads.len();
            write_header(
                &mut heads,
                self.format,
                &group.names,
                group.kind,
                &group.name.help,
            );
            pieces.push((start, at));
            at += heads.len() - start;
            group.at = Some(at);
            at += group.bytes;
            self.stats.families += 1;
            pending = Some(g);
        }
        let tail = tail(self.stats);
        let mut out = vec![0u8; at + tail.len()];
        for (i, &(start, to)) in pieces.iter().enumerate() {
            let end = pieces.get(i + 1).map_or(heads.len(), |p| p.0);
            out[to..to + end - start].copy_from_slice(&heads.as_bytes()[start..end]);
        }
        for node in &self.nodes {
            let lines = node.lines.as_bytes();
            let mut start = 0;
            for e in &node.entries {
                if e.fate == Fate::Line {
                    let g = &mut self.groups[e.group as usize];
                    if let Some(to) = g.at {
                        let len = e.end - start;
                        out[to..to + len].copy_from_slice(&lines[start..e.end]);
                        g.at = Some(to + len);
                    }
                }
                start = e.end;
            }
        }
        out[at..].copy_from_slice(tail.as_bytes());
        let mut cache = LineCache::default();
        let mut kept = 0;
        for node in self.nodes {
            kept += node.bytes();
            if kept > self.max_cached {
                break;
            }
            cache.nodes.insert(node.name.clone(), node);
        }
        (out, cache)
    }
}

#[cfg(test)]
mod tests;
