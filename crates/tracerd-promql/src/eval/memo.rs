//! Per-query memos of the evaluator, so a range query does per series once what it would
//! otherwise do per series and step: label sets without `__name__`, aggregation group
//! keys, and ids of result label sets. Each is keyed by the address of a label set shared
//! across steps (a loaded series', or one the memo made) and keeps that set alive, so the
//! address cannot be reused while the entry exists.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use super::Evaluator;
use crate::model::{Labels, QueryError};
use crate::value::{Elem, METRIC_NAME};

/// A map keyed by an address (of a label set or an expression node). Addresses are the
/// process's own, not input, so a multiplicative hash is enough and much cheaper than
/// SipHash, which every step of a range query would pay several times per series.
pub(crate) type AddrMap<V> = HashMap<usize, V, BuildHasherDefault<AddrHasher>>;

#[derive(Default, Clone, Copy)]
pub(crate) struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        // The high bits folded down too: aligned addresses have zero low bits.
        self.0 ^ (self.0 >> 29)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_usize(&mut self, n: usize) {
        self.0 = (self.0 ^ n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// One id per distinct label set (by content); shared sets are found by address.
#[derive(Default)]
pub(crate) struct Interner {
    by_ptr: AddrMap<(Arc<Labels>, usize)>,
    by_content: HashMap<Arc<Labels>, usize>,
}

/// Group keys of one aggregation: ids by shared label set, and the keys themselves.
#[derive(Default)]
pub(crate) struct GroupMemo {
    by_ptr: AddrMap<(Arc<Labels>, usize)>,
    by_key: HashMap<Labels, usize>,
    pub(crate) keys: Vec<Arc<Labels>>,
}

/// Memo entries past which a memo starts over (bounds what per-step label sets can pin).
const MEMO_CAP: usize = 1 << 20;

impl Evaluator<'_> {
    /// Names must go now; two results with the same label set are an error, as in
    /// Prometheus.
    pub(crate) fn finish_vector(&mut self, v: Vec<Elem>) -> Result<Vec<Elem>, QueryError> {
        Ok(self.finish_vector_ids(v)?.0)
    }

    /// [`Evaluator::finish_vector`], with the id of each element's label set: equal ids,
    /// equal label sets, over the whole query.
    pub(crate) fn finish_vector_ids(
        &mut self,
        mut v: Vec<Elem>,
    ) -> Result<(Vec<Elem>, Vec<usize>), QueryError> {
        self.settle(&mut v);
        let ids: Vec<usize> = v.iter().map(|e| self.intern(&e.labels)).collect();
        self.stamp = self.stamp.wrapping_add(1);
        if self.stamp == 0 {
            self.seen.iter_mut().for_each(|s| *s = 0);
            self.stamp = 1;
        }
        for &id in &ids {
            if id >= self.seen.len() {
                self.seen.resize(id + 1, 0);
            }
            if self.seen[id] == self.stamp {
                return Err(QueryError::execution(
                    "vector cannot contain metrics with the same labelset",
                ));
            }
            self.seen[id] = self.stamp;
        }
        Ok((v, ids))
    }

    fn intern(&mut self, l: &Arc<Labels>) -> usize {
        let ix = &mut self.interned;
        let shared = self.repeats && Arc::strong_count(l) > 1;
        let ptr = Arc::as_ptr(l) as usize;
        if shared {
            if let Some((_, id)) = ix.by_ptr.get(&ptr) {
                return *id;
            }
        }
        let next = ix.by_content.len();
        let id = *ix.by_content.entry(l.clone()).or_insert(next);
        if shared && ix.by_ptr.len() < MEMO_CAP {
            ix.by_ptr.insert(ptr, (l.clone(), id));
        }
        id
    }

    /// Remove flagged names from a vector (before matching or grouping on labels). A label
    /// set shared across steps (a loaded series') loses its name once a query, not once a
    /// step.
    pub(crate) fn settle(&mut self, v: &mut [Elem]) {
        for e in v.iter_mut() {
            if std::mem::take(&mut e.drop_name) {
                self.drop_name(&mut e.labels);
            }
        }
    }

    fn drop_name(&mut self, l: &mut Arc<Labels>) {
        if !l.iter().any(|(n, _)| n == METRIC_NAME) {
            return;
        }
        if Arc::strong_count(l) == 1 || !self.repeats {
            Arc::make_mut(l).retain(|(n, _)| n != METRIC_NAME);
            return;
        }
        if self.unnamed.len() >= MEMO_CAP {
            self.unnamed.clear();
        }
        let (_, unnamed) = self
            .unnamed
            .entry(Arc::as_ptr(l) as usize)
            .or_insert_with(|| {
                let mut u = l.as_ref().clone();
                u.retain(|(n, _)| n != METRIC_NAME);
                (l.clone(), Arc::new(u))
            });
        *l = unnamed.clone();
    }

    /// The group id of each element for the aggregation node `node`, whose key `key`
    /// computes; ids index [`GroupMemo::keys`]. Shared label sets are looked up by address.
    pub(crate) fn group_ids(
        &mut self,
        node: usize,
        v: &[Elem],
        key: impl Fn(&Labels) -> Labels,
    ) -> (Vec<usize>, &GroupMemo) {
        let repeats = self.repeats;
        let memo = self.groups.entry(node).or_default();
        if memo.by_ptr.len() >= MEMO_CAP {
            *memo = GroupMemo::default();
        }
        let mut ids = Vec::with_capacity(v.len());
        for e in v {
            let shared = repeats && Arc::strong_count(&e.labels) > 1;
            let ptr = Arc::as_ptr(&e.labels) as usize;
            if shared {
                if let Some((_, id)) = memo.by_ptr.get(&ptr) {
                    ids.push(*id);
                    continue;
                }
            }
            let k = key(&e.labels);
            let id = match memo.by_key.get(&k) {
                Some(&id) => id,
                None => {
                    let id = memo.keys.len();
                    memo.keys.push(Arc::new(k.clone()));
                    memo.by_key.insert(k, id);
                    id
                }
            };
            if shared {
                memo.by_ptr.insert(ptr, (e.labels.clone(), id));
            }
            ids.push(id);
        }
        (ids, memo)
    }
}
