//! The inverted index: label pair → sorted series ids, and series id ↔ labels.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use regex::Regex;
use tracerd_promql::{Labels, MatchOp, Matcher, QueryError};

/// A series' id: assigned in increasing order, never reused.
pub type SeriesId = u64;

/// A matcher with its regex compiled once per query.
#[derive(Debug)]
pub struct Compiled {
    pub name: String,
    op: MatchOp,
    value: String,
    re: Option<Regex>,
}

impl Compiled {
    pub fn new(m: &Matcher) -> Result<Self, QueryError> {
        let re = match m.op {
            MatchOp::Re | MatchOp::NotRe => Some(m.compile()?),
            _ => None,
        };
        Ok(Compiled {
            name: m.name.clone(),
            op: m.op,
            value: m.value.clone(),
            re,
        })
    }

    pub fn all(ms: &[Matcher]) -> Result<Vec<Self>, QueryError> {
        ms.iter().map(Compiled::new).collect()
    }

    pub fn matches(&self, v: &str) -> bool {
        match (&self.op, &self.re) {
            (MatchOp::Equal, _) => v == self.value,
            (MatchOp::NotEqual, _) => v != self.value,
            (MatchOp::Re, Some(re)) => re.is_match(v),
            (MatchOp::NotRe, Some(re)) => !re.is_match(v),
            _ => false,
        }
    }

    pub fn matches_labels(&self, l: &Labels) -> bool {
        let v = l
            .iter()
            .find(|(n, _)| *n == self.name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("");
        self.matches(v)
    }
}

/// Labels to ids and back, and postings for matchers.
#[derive(Debug, Default)]
pub struct Index {
    by_labels: HashMap<Arc<Labels>, SeriesId>,
    labels: HashMap<SeriesId, Arc<Labels>>,
    postings: BTreeMap<String, BTreeMap<String, Vec<SeriesId>>>,
    next_id: SeriesId,
    /// Bytes of label text held (names and values, counted once per series).
    label_bytes: usize,
}

impl Index {
    pub fn get(&self, labels: &Labels) -> Option<SeriesId> {
        self.by_labels.get(labels).copied()
    }

    pub fn labels(&self, id: SeriesId) -> Option<&Arc<Labels>> {
        self.labels.get(&id)
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn label_bytes(&self) -> usize {
        self.label_bytes
    }

    /// Add a series (the caller checked it is absent); returns its id and shared labels.
    pub fn insert(&mut self, labels: Labels) -> (SeriesId, Arc<Labels>) {
        let id = self.next_id;
        self.next_id += 1;
        for (n, v) in &labels {
            self.label_bytes += n.len() + v.len();
            self.postings
                .entry(n.clone())
                .or_default()
                .entry(v.clone())
                .or_default()
                .push(id);
        }
        let labels = Arc::new(labels);
        self.by_labels.insert(labels.clone(), id);
        self.labels.insert(id, labels.clone());
        (id, labels)
    }

    pub fn remove(&mut self, id: SeriesId) {
        let Some(labels) = self.labels.remove(&id) else {
            return;
        };
        self.by_labels.remove(&labels);
        for (n, v) in labels.iter() {
            self.label_bytes -= n.len() + v.len();
            let Some(values) = self.postings.get_mut(n) else {
                continue;
            };
            if let Some(ids) = values.get_mut(v) {
                if let Ok(i) = ids.binary_search(&id) {
                    ids.remove(i);
                }
                if ids.is_empty() {
                    values.remove(v);
                }
            }
            if values.is_empty() {
                self.postings.remove(n);
            }
        }
    }

    /// Ids (sorted) and labels of every series matching all matchers.
    pub fn select(&self, ms: &[Compiled]) -> Vec<(SeriesId, Arc<Labels>)> {
        // A matcher that rejects the empty value needs the label present: use its postings.
        let mut candidates: Option<Vec<SeriesId>> = None;
        for m in ms.iter().filter(|m| !m.matches("")) {
            let ids = self.postings_for(m);
            candidates = Some(match candidates {
                None => ids,
                Some(c) => intersect(&c, &ids),
            });
            if candidates.as_ref().is_some_and(|c| c.is_empty()) {
                return Vec::new();
            }
        }
        let rest: Vec<&Compiled> = ms.iter().filter(|m| m.matches("")).collect();
        let keep = |l: &Labels| rest.iter().all(|m| m.matches_labels(l));
        match candidates {
            Some(ids) => ids
                .into_iter()
                .filter_map(|id| self.labels.get(&id).map(|l| (id, l.clone())))
                .filter(|(_, l)| keep(l))
                .collect(),
            None => {
                let mut all: Vec<(SeriesId, Arc<Labels>)> = self
                    .labels
                    .iter()
                    .filter(|(_, l)| keep(l))
                    .map(|(id, l)| (*id, l.clone()))
                    .collect();
                all.sort_unstable_by_key(|(id, _)| *id);
                all
            }
        }
    }

    fn postings_for(&self, m: &Compiled) -> Vec<SeriesId> {
        let Some(values) = self.postings.get(&m.name) else {
            return Vec::new();
        };
        if m.op == MatchOp::Equal {
            return values.get(&m.value).cloned().unwrap_or_default();
        }
        let mut out: Vec<SeriesId> = values
            .iter()
            .filter(|(v, _)| m.matches(v))
            .flat_map(|(_, ids)| ids.iter().copied())
            .collect();
        out.sort_unstable();
        out
    }

    /// Every label name present, sorted.
    pub fn label_names(&self) -> Vec<String> {
        self.postings.keys().cloned().collect()
    }

    /// Every value of label `name`, sorted.
    pub fn label_values(&self, name: &str) -> Vec<String> {
        self.postings
            .get(name)
            .map(|v| v.keys().cloned().collect())
            .unwrap_or_default()
    }
}

fn intersect(a: &[SeriesId], b: &[SeriesId]) -> Vec<SeriesId> {
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(pairs: &[(&str, &str)]) -> Labels {
        let mut v: Labels = pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        v.sort();
        v
    }
    fn m(name: &str, op: MatchOp, value: &str) -> Matcher {
        Matcher {
            name: name.into(),
            op,
            value: value.into(),
        }
    }
    fn names(ix: &Index, ms: &[Matcher]) -> Vec<String> {
        let c = Compiled::all(ms).unwrap();
        ix.select(&c)
            .into_iter()
            .map(|(_, l)| {
                l.iter()
                    .find(|(n, _)| n == "node_name")
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            })
            .collect()
    }

    #[test]
    fn four_matchers_and_missing_labels_match_as_prometheus_does() {
        let mut ix = Index::default();
        ix.insert(l(&[
            ("__name__", "up"),
            ("node_name", "a"),
            ("role", "relay"),
        ]));
        ix.insert(l(&[("__name__", "up"), ("node_name", "b")]));
        ix.insert(l(&[("__name__", "up"), ("node_name", "c"), ("role", "bp")]));
        ix.insert(l(&[("__name__", "mem"), ("node_name", "a")]));
        let up = m("__name__", MatchOp::Equal, "up");
        assert_eq!(names(&ix, std::slice::from_ref(&up)), ["a", "b", "c"]);
        assert_eq!(
            names(&ix, &[up.clone(), m("role", MatchOp::Equal, "relay")]),
            ["a"]
        );
        // `role!="relay"` matches the series without `role` too.
        assert_eq!(
            names(&ix, &[up.clone(), m("role", MatchOp::NotEqual, "relay")]),
            ["b", "c"]
        );
        // `role=""` selects the series lacking it.
        assert_eq!(
            names(&ix, &[up.clone(), m("role", MatchOp::Equal, "")]),
            ["b"]
        );
        assert_eq!(
            names(&ix, &[up.clone(), m("role", MatchOp::Re, "re.*|bp")]),
            ["a", "c"]
        );
        assert_eq!(
            names(&ix, &[up.clone(), m("role", MatchOp::NotRe, "re.*")]),
            ["b", "c"]
        );
        // Regexes are anchored: "rel" does not match "relay".
        assert!(names(&ix, &[m("role", MatchOp::Re, "rel")]).is_empty());
        assert_eq!(names(&ix, &[m("node_name", MatchOp::Re, ".+")]).len(), 4);
        assert_eq!(ix.label_values("__name__"), ["mem", "up"]);
    }

    #[test]
    fn removal_empties_postings_and_names() {
        let mut ix = Index::default();
        let (id, _) = ix.insert(l(&[("__name__", "x"), ("k", "v")]));
        ix.insert(l(&[("__name__", "y")]));
        ix.remove(id);
        assert_eq!(ix.label_names(), ["__name__"]);
        assert_eq!(ix.get(&l(&[("__name__", "x"), ("k", "v")])), None);
        assert_eq!(ix.len(), 1);
        assert_eq!(ix.label_bytes(), "__name__".len() + 1);
    }

    #[test]
    fn a_bad_regex_is_bad_data_naming_it() {
        let e = Compiled::new(&m("a", MatchOp::Re, "(")).unwrap_err();
        assert_eq!(e.error_type(), "bad_data");
        assert!(e.message.contains('('), "{}", e.message);
    }
}
