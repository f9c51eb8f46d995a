//! The rotation plan, as pure functions: file naming, when to start a new file, and which old
//! files retention deletes. No clock, no I/O: callers pass `now` and the files they found.

use crate::utc;

/// Prefix of every node log file.
pub const FILE_PREFIX: &str = "node-";

/// Rotation and retention parameters, resolved from cardano-tracer's `rotation` keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Size limit of one file, in bytes (`rpLogLimitBytes`).
    pub limit_bytes: u64,
    /// Non-current files at least this old (by the time in their name) may be deleted.
    pub max_age_secs: u64,
    /// The newest this-many non-current files are always kept (`rpKeepFilesNum`).
    pub keep_files: usize,
}

/// Identifies one log file of a node: `node-<stamp>.<ext>`, then `node-<stamp>_000001.<ext>`,
/// `node-<stamp>_000002.<ext>`, ... for further files of the same second.
///
/// Keys order files by creation; the counter distinguishes files created in the same second
/// (or after the clock went back), so no name is ever reused. The counter is zero-padded to
/// six digits after `_` (which sorts after the `.` of the first file), so `ls` and
/// `cat node-*.json` list files in creation order (up to a million files a second). Names of
/// earlier versions, `node-<stamp>-<n>.<ext>`, are still recognised (`legacy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileKey {
    /// Creation time, Unix seconds, UTC.
    pub stamp: i64,
    /// 0 for the first file of that stamp, then 1, 2, ...
    pub counter: u32,
    /// Named by an earlier version (`-<n>` suffix, not zero-padded).
    pub legacy: bool,
}

/// Digits of the same-second counter.
const COUNTER_DIGITS: usize = 6;

impl FileKey {
    /// The file name of this key for extension `ext` (`json` or `log`).
    pub fn file_name(self, ext: &str) -> String {
        let stamp = utc::file_stamp(self.stamp);
        if self.counter == 0 {
            format!("{FILE_PREFIX}{stamp}.{ext}")
        } else if self.legacy {
            format!("{FILE_PREFIX}{stamp}-{}.{ext}", self.counter)
        } else {
            format!(
                "{FILE_PREFIX}{stamp}_{:0width$}.{ext}",
                self.counter,
                width = COUNTER_DIGITS
            )
        }
    }

    /// Parses a file name made by [`FileKey::file_name`] (or by an earlier version) with
    /// extension `ext`. Only canonical spellings are accepted, so a key names one file.
    pub fn parse(name: &str, ext: &str) -> Option<FileKey> {
        let rest = name.strip_prefix(FILE_PREFIX)?;
        let rest = rest.strip_suffix(ext)?.strip_suffix('.')?;
        let tail = rest.get(19..)?;
        let (counter, legacy) = if tail.is_empty() {
            (0, false)
        } else {
            let (digits, legacy) = match tail.split_at(1) {
                ("-", d) => (d, true),
                ("_", d) => (d, false),
                _ => return None,
            };
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let canonical = if legacy {
                !digits.starts_with('0')
            } else {
                digits.len() == COUNTER_DIGITS
                    || (digits.len() > COUNTER_DIGITS && !digits.starts_with('0'))
            };
            let counter: u32 = digits.parse().ok()?;
            if !canonical || counter == 0 {
                return None;
            }
            (counter, legacy)
        };
        Some(FileKey {
            stamp: utc::parse_file_stamp(&rest[..19])?,
            counter,
            legacy,
        })
    }

    /// The key for a file created at `now`, after `newest` (the newest existing file, if any).
    /// Always greater than `newest`, even when the clock went back.
    pub fn next(now: i64, newest: Option<FileKey>) -> FileKey {
        let fresh = FileKey {
            stamp: now,
            counter: 0,
            legacy: false,
        };
        match newest {
            Some(n) if fresh <= n => FileKey {
                stamp: n.stamp,
                counter: n.counter.saturating_add(1),
                legacy: false,
            },
            _ => fresh,
        }
    }
}

/// Size limits of at least this many bytes are spread across nodes ([`Policy::spread`]).
pub const SPREAD_FROM_BYTES: u64 = 1 << 20;
/// A node's files rotate up to this fraction of the limit below it (1/16: 6.25 %).
const SPREAD_DIVISOR: u64 = 16;

impl Policy {
    /// This policy as the node with seed `seed` ([`spread_seed`] of its directory name)
    /// applies it: a size limit of [`SPREAD_FROM_BYTES`] or more is lowered by up to 1/16,
    /// by the same amount for every file of the node and by different amounts across nodes.
    ///
    /// Why: a fleet that starts together and logs at the same rate (a benchmarking cluster,
    /// or every node reconnecting after a restart) otherwise fills its files in lockstep, and
    /// every node's rotation (a file and a symlink created) lands on the writer threads in
    /// the same few milliseconds, delaying every node's `Ack` behind all of them
    /// (BENCHMARKS.md, tenth session). Spread by 1/16, 100 nodes at 3 MB/s with 10 MB files
    /// rotate over ~200 ms instead of ~10 ms. Files still never exceed `rpLogLimitBytes`;
    /// small limits (tests, experiments) stay exact.
    pub fn spread(self, seed: u64) -> Policy {
        if self.limit_bytes < SPREAD_FROM_BYTES {
            return self;
        }
        let span = self.limit_bytes / SPREAD_DIVISOR;
        Policy {
            limit_bytes: self.limit_bytes - seed % span,
            ..self
        }
    }
}

/// The [`Policy::spread`] seed of the node directory `name`: FNV-1a with a final mix
/// (splitmix64's), stable across runs, builds and platforms, and different for names that
/// differ in one character.
pub fn spread_seed(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Whether a line of `line_len` bytes must go to a new file, given the current file's length.
///
/// A file is never left empty by rotation, so a file exceeds the limit only when it holds a
/// single line longer than the limit.
pub fn must_rotate(policy: Option<&Policy>, current_len: u64, line_len: u64) -> bool {
    match policy {
        Some(p) => current_len > 0 && current_len.saturating_add(line_len) > p.limit_bytes,
        None => false,
    }
}

/// The files retention deletes, among `files` (every file of one format of one node, in any
/// order), at time `now`.
///
/// The newest file is the current one and is never deleted; nor are the `keep_files` newest
/// of the others. Of the rest, those whose name says they are at least `max_age_secs` old are
/// deleted.
pub fn prune(policy: &Policy, now: i64, files: &[FileKey]) -> Vec<FileKey> {
    let mut sorted = files.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let Some((_current, older)) = sorted.split_last() else {
        return Vec::new();
    };
    let candidates = older.len().saturating_sub(policy.keep_files);
    older[..candidates]
        .iter()
        .copied()
        .filter(|k| now.saturating_sub(k.stamp) >= policy.max_age_secs as i64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T: i64 = 1_784_714_812; // 2026-07-22T10-06-52

    #[test]
    fn names_round_trip_and_reject_strangers() {
        let k = FileKey {
            stamp: T,
            counter: 0,
            legacy: false,
        };
        assert_eq!(k.file_name("json"), "node-2026-07-22T10-06-52.json");
        let k2 = FileKey {
            stamp: T,
            counter: 3,
            legacy: false,
        };
        assert_eq!(k2.file_name("log"), "node-2026-07-22T10-06-52_000003.log");
        assert_eq!(
            FileKey::parse("node-2026-07-22T10-06-52.json", "json"),
            Some(k)
        );
        assert_eq!(
            FileKey::parse("node-2026-07-22T10-06-52_000003.log", "log"),
            Some(k2)
        );
        // Names of earlier versions are still recognised, and keep their spelling.
        let old = FileKey::parse("node-2026-07-22T10-06-52-3.log", "log").unwrap();
        assert_eq!((old.stamp, old.counter, old.legacy), (T, 3, true));
        assert_eq!(old.file_name("log"), "node-2026-07-22T10-06-52-3.log");
        for bad in [
            "node.json",
            "node-2026-07-22T10-06-52.log",
            "node-2026-07-22T10-06-52-.json",
            "node-2026-07-22T10-06-52-03.json",
            "node-2026-07-22T10-06-52_3.json",
            "node-2026-07-22T10-06-52_000000.json",
            "node-2026-07-22T10-06-52_0000003.json",
            "node-2026-07-22T10-06-52-0.json",
            "node-2026-07-22T10-06-52x1.json",
            "node-2026-07-22T10-06-52.json.tmp",
            "xnode-2026-07-22T10-06-52.json",
        ] {
            assert_eq!(FileKey::parse(bad, "json"), None, "{bad}");
        }
    }

    /// `ls` and `cat node-*.json` (byte order) list files in creation order, across the
    /// same second, the next second, and the clock going back; a legacy newest file is
    /// continued in the new scheme.
    #[test]
    fn file_names_sort_lexically_in_creation_order() {
        let mut key = FileKey::next(T, None);
        let mut keys = vec![key];
        for now in [T, T, T, T - 50, T, T, T, T, T, T, T, T + 1, T + 1, T + 2] {
            key = FileKey::next(now, Some(key));
            keys.push(key);
        }
        for _ in 0..200 {
            key = FileKey::next(T + 2, Some(key));
            keys.push(key);
        }
        let names: Vec<String> = keys.iter().map(|k| k.file_name("json")).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert_eq!(names[10], "node-2026-07-22T10-06-52_000010.json");
        for (k, n) in keys.iter().zip(&names) {
            assert_eq!(FileKey::parse(n, "json"), Some(*k));
        }
        let legacy = FileKey::parse("node-2026-07-22T10-06-52-10.json", "json").unwrap();
        let next = FileKey::next(T, Some(legacy));
        assert_eq!(
            next.file_name("json"),
            "node-2026-07-22T10-06-52_000011.json"
        );
        assert!(next > legacy);
    }

    #[test]
    fn same_second_and_clock_going_back_never_collide() {
        let first = FileKey::next(T, None);
        let second = FileKey::next(T, Some(first));
        let third = FileKey::next(T - 100, Some(second));
        assert_eq!(
            second,
            FileKey {
                stamp: T,
                counter: 1,
                legacy: false,
            }
        );
        assert_eq!(
            third,
            FileKey {
                stamp: T,
                counter: 2,
                legacy: false,
            }
        );
        assert_eq!(
            FileKey::next(T + 1, Some(third)),
            FileKey {
                stamp: T + 1,
                counter: 0,
                legacy: false,
            }
        );
    }

    #[test]
    fn size_check_never_leaves_a_file_empty() {
        let p = Policy {
            limit_bytes: 100,
            max_age_secs: 0,
            keep_files: 0,
        };
        assert!(!must_rotate(Some(&p), 0, 1000));
        assert!(!must_rotate(Some(&p), 60, 40));
        assert!(must_rotate(Some(&p), 60, 41));
        assert!(!must_rotate(None, u64::MAX, u64::MAX));
    }

    #[test]
    fn spread_lowers_large_limits_by_at_most_a_sixteenth_and_differs_across_nodes() {
        let p = Policy {
            limit_bytes: 10_000_000,
            max_age_secs: 3600,
            keep_files: 10,
        };
        let limits: Vec<u64> = (0..100)
            .map(|i| p.spread(spread_seed(&format!("node-{i}"))).limit_bytes)
            .collect();
        for l in &limits {
            assert!((10_000_000 - 625_000..=10_000_000).contains(l), "{l}");
        }
        let mut distinct = limits.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert!(distinct.len() >= 95, "{} distinct limits", distinct.len());
        // Spread over most of the range, not bunched: 100 nodes' rotations over ~200 ms.
        let span = distinct[distinct.len() - 1] - distinct[0];
        assert!(span > 500_000, "span {span}");
        // Stable: the same node always gets the same limit; the other keys are untouched.
        let a = p.spread(spread_seed("relay-1"));
        assert_eq!(a, p.spread(spread_seed("relay-1")));
        assert_eq!((a.max_age_secs, a.keep_files), (3600, 10));
        // Small limits stay exact.
        let small = Policy {
            limit_bytes: SPREAD_FROM_BYTES - 1,
            ..p
        };
        assert_eq!(small.spread(spread_seed("relay-1")), small);
    }

    #[test]
    fn prune_keeps_current_and_newest_n() {
        let p = Policy {
            limit_bytes: 1,
            max_age_secs: 3600,
            keep_files: 2,
        };
        let files: Vec<FileKey> = (0..6)
            .map(|i| FileKey {
                stamp: T + i * 1000,
                counter: 0,
                legacy: false,
            })
            .collect();
        // At T+10000 the files are 10000, 9000, ... 5000 s old; the last three are protected.
        let deleted = prune(&p, T + 10_000, &files);
        assert_eq!(deleted, files[..3].to_vec());
        // Young files are kept even when not protected.
        assert!(prune(&p, T + 3000, &files).is_empty());
    }

    fn keys() -> impl Strategy<Value = Vec<FileKey>> {
        proptest::collection::vec((T..T + 100_000, 0u32..3), 0..40).prop_map(|v| {
            v.into_iter()
                .map(|(stamp, counter)| FileKey {
                    stamp,
                    counter,
                    legacy: false,
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn prune_invariants(files in keys(), keep in 0usize..10, age in 0u64..200_000, now in T..T + 300_000) {
            let p = Policy { limit_bytes: 1, max_age_secs: age, keep_files: keep };
            let deleted = prune(&p, now, &files);
            let mut sorted = files.clone();
            sorted.sort();
            sorted.dedup();
            // Never the current file, never one of the newest `keep` others.
            let protected: Vec<_> = sorted.iter().rev().take(keep + 1).collect();
            for d in &deleted {
                prop_assert!(!protected.contains(&d));
                prop_assert!(now - d.stamp >= age as i64);
                prop_assert!(files.contains(d));
            }
            // Idempotent: pruning what is left deletes nothing more.
            let left: Vec<_> = sorted.iter().copied().filter(|k| !deleted.contains(k)).collect();
            prop_assert!(prune(&p, now, &left).is_empty());
        }

        #[test]
        fn next_key_is_always_new_and_greater(now in T..T + 10, newest in proptest::option::of((T..T + 10, 0u32..5))) {
            let newest = newest.map(|(stamp, counter)| FileKey {
                    stamp,
                    counter,
                    legacy: false,
                });
            let k = FileKey::next(now, newest);
            if let Some(n) = newest { prop_assert!(k > n); }
            let name = k.file_name("json");
            prop_assert_eq!(FileKey::parse(&name, "json"), Some(k));
        }

        #[test]
        fn size_limit_holds_unless_one_line_is_larger(lines in proptest::collection::vec(1u64..300, 1..200), limit in 1u64..1000) {
            let p = Policy { limit_bytes: limit, max_age_secs: 0, keep_files: 0 };
            let mut files: Vec<Vec<u64>> = vec![vec![]];
            for l in lines {
                let len: u64 = files.last().unwrap().iter().sum();
                if must_rotate(Some(&p), len, l) { files.push(vec![]); }
                files.last_mut().unwrap().push(l);
            }
            for f in files {
                prop_assert!(!f.is_empty());
                let size: u64 = f.iter().sum();
                prop_assert!(size <= limit || f.len() == 1);
            }
        }
    }
}
