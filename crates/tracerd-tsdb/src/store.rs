//! The store: series in sharded `RwLock`s, the index beside them, retention by time and bytes.
//!
//! Lock order: `index` before any shard; no lock is held across shards, and a query holds a
//! shard's read lock only while it copies one series' samples in range.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use thiserror::Error;
use tracerd_promql::{
    is_stale_nan, stale_nan, Grid, Labels, MatchOp, Matcher, QueryError, Queryable, Sample, Series,
};

use crate::chunk::{Chunk, Encoder};
use crate::index::{Compiled, Index, SeriesId};

/// What the store keeps and how.
#[derive(Debug, Clone)]
pub struct Config {
    /// Samples older than `now - retention_ms` go at the next [`Store::prune`]. Default 24 h.
    pub retention_ms: i64,
    /// Cap on [`Stats::bytes`]; past it [`Store::prune`] drops the oldest chunks. Default 1 GiB.
    pub max_bytes: usize,
    /// Cap on live series; a new series past it is refused ([`AppendError::TooManySeries`]).
    pub max_series: usize,
    /// Samples per chunk before it is sealed. Default 240 (4 minutes at 1 s).
    pub chunk_samples: u32,
    /// Number of lock shards. Default 64.
    pub shards: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            retention_ms: 24 * 3600 * 1000,
            max_bytes: 1 << 30,
            max_series: 1_000_000,
            chunk_samples: 240,
            shards: 64,
        }
    }
}

/// Why an append was refused. Nothing stored changes when one is returned.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum AppendError {
    #[error("sample at {t} ms is not after the series' last sample at {last} ms")]
    OutOfOrder { t: i64, last: i64 },
    #[error("series refused: the store holds its cap of {max} series")]
    TooManySeries { max: usize },
    #[error("series has no labels")]
    NoLabels,
    #[error("series removed by retention three times during one append; sample not stored")]
    Contended,
}

impl AppendError {
    /// A bounded label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            AppendError::OutOfOrder { .. } => "out_of_order",
            AppendError::TooManySeries { .. } => "too_many_series",
            AppendError::NoLabels => "no_labels",
            AppendError::Contended => "contended",
        }
    }
}

/// A handle on a series for repeated appends without resolving its labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeriesRef {
    id: SeriesId,
}

/// Counters and gauges of the store, for metrics and the benchmark.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    pub series: usize,
    /// Samples held now.
    pub samples: u64,
    /// Bytes of chunk data held (sealed chunks with their headers, head buffers' capacity).
    pub chunk_bytes: usize,
    /// Everything counted against `max_bytes`: chunk bytes plus an estimate per series
    /// (labels, index entries, maps).
    pub bytes: usize,
    pub appended: u64,
    pub out_of_order: u64,
    pub series_refused: u64,
    pub dropped_by_retention_samples: u64,
    pub dropped_by_cap_samples: u64,
    pub dropped_by_cap_chunks: u64,
    pub series_removed: u64,
}

/// Estimated bytes per series beyond chunk data and label text: the series struct, its map
/// slots in a shard and in the index, posting entries, `Arc` headers.
const PER_SERIES_OVERHEAD: usize = 320;

struct SeriesData {
    sealed: VecDeque<Chunk>,
    head: Option<Encoder>,
    /// The last sample of the newest sealed chunk (`sealed.back()`), kept when it is
    /// sealed: every series seals at about the same time, and an instant query right then
    /// must not decode a whole chunk per series to find it.
    sealed_last: (i64, f64),
}

impl SeriesData {
    fn last(&self) -> Option<(i64, f64)> {
        match &self.head {
            Some(h) if h.count() > 0 => Some((h.maxt(), h.last_value())),
            _ => self.sealed.back().map(|_| self.sealed_last),
        }
    }
    fn is_empty(&self) -> bool {
        self.sealed.is_empty() && self.head.as_ref().is_none_or(|h| h.count() == 0)
    }
}

#[derive(Default)]
struct Counters {
    appended: AtomicU64,
    out_of_order: AtomicU64,
    series_refused: AtomicU64,
    dropped_by_retention_samples: AtomicU64,
    dropped_by_cap_samples: AtomicU64,
    dropped_by_cap_chunks: AtomicU64,
    series_removed: AtomicU64,
}

/// The embedded time-series store. `Send + Sync`: share it in an `Arc`.
pub struct Store {
    cfg: Config,
    index: RwLock<Index>,
    shards: Box<[RwLock<HashMap<SeriesId, SeriesData>>]>,
    chunk_bytes: AtomicUsize,
    samples: AtomicU64,
    c: Counters,
}

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}
fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

/// A selection's per-series callback: the series' labels and how many samples it holds.
type Visit<'a> = dyn FnMut(&Arc<Labels>, usize) -> Result<(), QueryError> + 'a;

/// What one [`Store::prune`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub chunks: u64,
    pub samples: u64,
    pub bytes: usize,
    pub series: u64,
}

impl Store {
    pub fn new(mut cfg: Config) -> Self {
        cfg.shards = cfg.shards.max(1);
        cfg.chunk_samples = cfg.chunk_samples.max(2);
        let shards = (0..cfg.shards).map(|_| RwLock::default()).collect();
        Store {
            cfg,
            index: RwLock::default(),
            shards,
            chunk_bytes: AtomicUsize::new(0),
            samples: AtomicU64::new(0),
            c: Counters::default(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    fn shard(&self, id: SeriesId) -> &RwLock<HashMap<SeriesId, SeriesData>> {
        &self.shards[(id % self.shards.len() as u64) as usize]
    }

    /// The series with these labels (sorted, as [`Labels`] are), created if absent.
    pub fn series(&self, labels: &Labels) -> Result<SeriesRef, AppendError> {
        if labels.is_empty() {
            return Err(AppendError::NoLabels);
        }
        if let Some(id) = read(&self.index).get(labels) {
            return Ok(SeriesRef { id });
        }
        let mut ix = write(&self.index);
        if let Some(id) = ix.get(labels) {
            return Ok(SeriesRef { id });
        }
        if ix.len() >= self.cfg.max_series {
            self.c.series_refused.fetch_add(1, Relaxed);
            return Err(AppendError::TooManySeries {
                max: self.cfg.max_series,
            });
        }
        let (id, _) = ix.insert(labels.clone());
        // Still under the index lock, so no append finds the id without its series.
        write(self.shard(id)).insert(
            id,
            SeriesData {
                sealed: VecDeque::new(),
                head: None,
                sealed_last: (0, 0.0),
            },
        );
        Ok(SeriesRef { id })
    }

    /// Append one sample to the series with these labels. `t` is the caller's time (ms).
    pub fn append(&self, labels: &Labels, t: i64, v: f64) -> Result<SeriesRef, AppendError> {
        // A concurrent prune may remove the series between lookup and append: resolve again.
        for _ in 0..3 {
            let r = self.series(labels)?;
            match self.append_ref(r, t, v) {
                Err(None) => continue,
                Err(Some(e)) => return Err(e),
                Ok(()) => return Ok(r),
            }
        }
        Err(AppendError::Contended)
    }

    /// Append to a series by handle. `Err(None)`: the series was removed (aged out); resolve
    /// its labels again with [`Store::series`].
    pub fn append_ref(&self, r: SeriesRef, t: i64, v: f64) -> Result<(), Option<AppendError>> {
        let mut shard = write(self.shard(r.id));
        let s = shard.get_mut(&r.id).ok_or(None)?;
        if let Some((last_t, last_v)) = s.last() {
            if t <= last_t {
                if t == last_t && last_v.to_bits() == v.to_bits() {
                    return Ok(()); // an exact duplicate, as Prometheus ignores it
                }
                self.c.out_of_order.fetch_add(1, Relaxed);
                return Err(Some(AppendError::OutOfOrder { t, last: last_t }));
            }
        }
        let n = self.cfg.chunk_samples;
        let head = s.head.get_or_insert_with(|| {
            let e = Encoder::new(n as usize);
            self.chunk_bytes.fetch_add(e.heap_bytes(), Relaxed);
            e
        });
        let before = head.heap_bytes();
        head.push(t, v);
        let mut delta = head.heap_bytes() as isize - before as isize;
        if head.count() >= n {
            let full = s.head.take().map(|h| (h.heap_bytes(), h.seal()));
            if let Some((was, chunk)) = full {
                delta += chunk.bytes() as isize - was as isize;
                s.sealed.push_back(chunk);
                s.sealed_last = (t, v);
            }
        }
        drop(shard);
        if delta >= 0 {
            self.chunk_bytes.fetch_add(delta as usize, Relaxed);
        } else {
            self.chunk_bytes.fetch_sub((-delta) as usize, Relaxed);
        }
        self.samples.fetch_add(1, Relaxed);
        self.c.appended.fetch_add(1, Relaxed);
        Ok(())
    }

    /// Append the staleness marker at `t` to every series with label `name="value"` (e.g.
    /// `node_name` of a node that disconnected) whose last sample is not already one.
    /// Returns how many series were marked. Series stay until they age out.
    pub fn mark_stale(&self, name: &str, value: &str, t: i64) -> usize {
        let m = Matcher {
            name: name.to_string(),
            op: MatchOp::Equal,
            value: value.to_string(),
        };
        let ids: Vec<SeriesId> = match Compiled::all(std::slice::from_ref(&m)) {
            Ok(c) => read(&self.index)
                .select(&c)
                .into_iter()
                .map(|(id, _)| id)
                .collect(),
            Err(_) => return 0,
        };
        let mut marked = 0;
        for id in ids {
            let stale = {
                let shard = read(self.shard(id));
                match shard.get(&id).and_then(|s| s.last()) {
                    Some((last_t, last_v)) => last_t < t && !is_stale_nan(last_v),
                    None => false,
                }
            };
            if stale && self.append_ref(SeriesRef { id }, t, stale_nan()).is_ok() {
                marked += 1;
            }
        }
        marked
    }

    /// Apply retention at `now` (ms): drop chunks whose newest sample is older than
    /// `now - retention_ms`, then, while [`Stats::bytes`] exceeds `max_bytes`, the oldest
    /// chunks of all series (counted in `dropped_by_cap_*`). Series left empty are removed.
    pub fn prune(&self, now: i64) -> Pruned {
        let mut total = self.drop_before(now.saturating_sub(self.cfg.retention_ms));
        self.c
            .dropped_by_retention_samples
            .fetch_add(total.samples, Relaxed);
        // Each round drops whole minutes of the oldest data; a few rounds always suffice
        // unless per-series overhead alone exceeds the cap.
        for _ in 0..4 {
            let over = self.bytes().saturating_sub(self.cfg.max_bytes);
            if over == 0 {
                break;
            }
            let Some(cutoff) = self.cutoff_freeing(over) else {
                break;
            };
            let p = self.drop_before(cutoff);
            self.c.dropped_by_cap_samples.fetch_add(p.samples, Relaxed);
            self.c.dropped_by_cap_chunks.fetch_add(p.chunks, Relaxed);
            total.chunks += p.chunks;
            total.samples += p.samples;
            total.bytes += p.bytes;
            total.series += p.series;
        }
        total
    }

    /// The smallest minute boundary such that chunks ending before it hold ≥ `need` bytes.
    fn cutoff_freeing(&self, need: usize) -> Option<i64> {
        const MINUTE: i64 = 60_000;
        let mut by_minute: BTreeMap<i64, usize> = BTreeMap::new();
        for shard in self.shards.iter() {
            let shard = read(shard);
            for s in shard.values() {
                for c in &s.sealed {
                    *by_minute.entry(c.maxt.div_euclid(MINUTE)).or_default() += c.bytes();
                }
                if let Some(h) = s.head.as_ref().filter(|h| h.count() > 0) {
                    *by_minute.entry(h.maxt().div_euclid(MINUTE)).or_default() += h.heap_bytes();
                }
            }
        }
        let mut freed = 0;
        for (minute, bytes) in by_minute {
            freed += bytes;
            if freed >= need {
                return Some((minute + 1) * MINUTE);
            }
        }
        None
    }

    /// Drop every chunk whose newest sample is before `cutoff`; remove emptied series.
    fn drop_before(&self, cutoff: i64) -> Pruned {
        let mut p = Pruned::default();
        let mut emptied = Vec::new();
        for shard in self.shards.iter() {
            let mut shard = write(shard);
            for (id, s) in shard.iter_mut() {
                while s.sealed.front().is_some_and(|c| c.maxt < cutoff) {
                    if let Some(c) = s.sealed.pop_front() {
                        p.chunks += 1;
                        p.samples += u64::from(c.count);
                        p.bytes += c.bytes();
                    }
                }
                if s.sealed.is_empty() && s.head.as_ref().is_some_and(|h| h.maxt() < cutoff) {
                    if let Some(h) = s.head.take() {
                        p.chunks += 1;
                        p.samples += u64::from(h.count());
                        p.bytes += h.heap_bytes();
                    }
                }
                if s.is_empty() {
                    emptied.push(*id);
                }
            }
        }
        self.chunk_bytes.fetch_sub(p.bytes, Relaxed);
        self.samples.fetch_sub(p.samples, Relaxed);
        if !emptied.is_empty() {
            let mut ix = write(&self.index);
            for id in emptied {
                let mut shard = write(self.shard(id));
                // Re-check: an append may have landed since.
                if shard.get(&id).is_some_and(|s| s.is_empty()) {
                    shard.remove(&id);
                    ix.remove(id);
                    p.series += 1;
                }
            }
            self.c.series_removed.fetch_add(p.series, Relaxed);
        }
        p
    }

    /// Bytes counted against `max_bytes`.
    pub fn bytes(&self) -> usize {
        let (n, label_bytes) = {
            let ix = read(&self.index);
            (ix.len(), ix.label_bytes())
        };
        // Label text lives once in the series' labels and about once more in the postings.
        self.chunk_bytes.load(Relaxed) + 2 * label_bytes + n * PER_SERIES_OVERHEAD
    }

    pub fn stats(&self) -> Stats {
        Stats {
            series: read(&self.index).len(),
            samples: self.samples.load(Relaxed),
            chunk_bytes: self.chunk_bytes.load(Relaxed),
            bytes: self.bytes(),
            appended: self.c.appended.load(Relaxed),
            out_of_order: self.c.out_of_order.load(Relaxed),
            series_refused: self.c.series_refused.load(Relaxed),
            dropped_by_retention_samples: self.c.dropped_by_retention_samples.load(Relaxed),
            dropped_by_cap_samples: self.c.dropped_by_cap_samples.load(Relaxed),
            dropped_by_cap_chunks: self.c.dropped_by_cap_chunks.load(Relaxed),
            series_removed: self.c.series_removed.load(Relaxed),
        }
    }

    /// Labels of every series matching all matchers that has a sample in `[mint, maxt]`.
    pub fn series_labels(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<Arc<Labels>>, QueryError> {
        let c = Compiled::all(matchers)?;
        let hits = read(&self.index).select(&c);
        Ok(hits
            .into_iter()
            .filter(|(id, _)| {
                let shard = read(self.shard(*id));
                shard.get(id).is_some_and(|s| overlaps(s, mint, maxt))
            })
            .map(|(_, l)| l)
            .collect())
    }

    /// Every label name, sorted (no time filter: names of every live series).
    pub fn label_names(&self) -> Vec<String> {
        read(&self.index).label_names()
    }

    /// Every value of `name`, sorted.
    pub fn label_values(&self, name: &str) -> Vec<String> {
        read(&self.index).label_values(name)
    }

    /// Visit the samples of every matching series in `[mint, maxt]`, one series at a time;
    /// `visit` returning `Err` stops the walk (a sample cap or a deadline).
    pub fn select_with(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        mut visit: impl FnMut(&Arc<Labels>, usize) -> Result<(), QueryError>,
    ) -> Result<Vec<Series>, QueryError> {
        self.walk(matchers, &mut visit, |s, buf| collect(s, mint, maxt, buf))
    }

    /// As [`Store::select_with`], with only the samples an instant selector evaluated on
    /// `grid` reads ([`Grid::latest`]): decoding starts at the chunk that holds the grid's
    /// window, and a single time at or after a series' last sample decodes nothing.
    pub fn select_latest_with(
        &self,
        matchers: &[Matcher],
        grid: &Grid,
        mut visit: impl FnMut(&Arc<Labels>, usize) -> Result<(), QueryError>,
    ) -> Result<Vec<Series>, QueryError> {
        self.walk(matchers, &mut visit, |s, buf| latest(s, grid, buf))
    }

    /// The series matching `matchers`, each read under its shard's lock by `read_one`.
    fn walk(
        &self,
        matchers: &[Matcher],
        visit: &mut Visit<'_>,
        read_one: impl Fn(&SeriesData, &mut Vec<Sample>),
    ) -> Result<Vec<Series>, QueryError> {
        let c = Compiled::all(matchers)?;
        let hits = read(&self.index).select(&c);
        let mut out = Vec::new();
        for (id, labels) in hits {
            let mut buf = Vec::new();
            {
                let shard = read(self.shard(id));
                let Some(s) = shard.get(&id) else { continue };
                read_one(s, &mut buf);
            }
            if buf.is_empty() {
                continue;
            }
            visit(&labels, buf.len())?;
            out.push(Series {
                labels: labels.as_ref().clone(),
                samples: buf,
            });
        }
        Ok(out)
    }
}

fn overlaps(s: &SeriesData, mint: i64, maxt: i64) -> bool {
    let first = s
        .sealed
        .front()
        .map(|c| c.mint)
        .or(s.head.as_ref().map(|h| h.mint()));
    let last = s.last().map(|(t, _)| t);
    matches!((first, last), (Some(a), Some(b)) if a <= maxt && b >= mint)
}

/// The sealed chunks that may hold samples in `[mint, maxt]`, found by binary search.
fn sealed_in(s: &SeriesData, mint: i64, maxt: i64) -> impl Iterator<Item = &Chunk> {
    let first = s.sealed.partition_point(|c| c.maxt < mint);
    s.sealed.range(first..).take_while(move |c| c.mint <= maxt)
}

/// The head chunk, if it has samples in `[mint, maxt]`.
fn head_in(s: &SeriesData, mint: i64, maxt: i64) -> Option<&Encoder> {
    s.head
        .as_ref()
        .filter(|h| h.count() > 0 && h.maxt() >= mint && h.mint() <= maxt)
}

fn collect(s: &SeriesData, mint: i64, maxt: i64, out: &mut Vec<Sample>) {
    let n: u32 = sealed_in(s, mint, maxt).map(|c| c.count).sum::<u32>()
        + head_in(s, mint, maxt).map_or(0, |h| h.count());
    out.reserve(n as usize);
    let inside = |x: &Sample| x.t >= mint && x.t <= maxt;
    for c in sealed_in(s, mint, maxt) {
        if c.mint >= mint && c.maxt <= maxt {
            out.extend(c.iter());
        } else {
            out.extend(c.iter().filter(inside));
        }
    }
    if let Some(h) = head_in(s, mint, maxt) {
        out.extend(h.iter().filter(inside));
    }
}

fn latest(s: &SeriesData, g: &Grid, out: &mut Vec<Sample>) {
    // One time at or after the last sample: the last sample is the answer, if recent.
    if g.step <= 0 || g.start == g.end {
        if let Some((t, v)) = s.last().filter(|&(t, _)| t <= g.start) {
            if t > g.start - g.lookback {
                out.push(Sample { t, v });
            }
            return;
        }
    }
    let (mint, maxt) = g.window();
    let samples = sealed_in(s, mint, maxt)
        .flat_map(|c| c.iter())
        .chain(head_in(s, mint, maxt).into_iter().flat_map(|h| h.iter()));
    *out = g.latest(samples);
}

impl Queryable for Store {
    fn select(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<Series>, QueryError> {
        self.select_with(matchers, mint, maxt, |_, _| Ok(()))
    }

    fn select_latest(&self, matchers: &[Matcher], grid: &Grid) -> Result<Vec<Series>, QueryError> {
        self.select_latest_with(matchers, grid, |_, _| Ok(()))
    }
}

#[cfg(test)]
mod tests;
