//! Text helpers of the config shape check: the near-miss suggestion for an unknown key or
//! word ("did you mean `epPort`?") and the line of a key path in the file's text. Pure.

use super::Seg;

/// The known word closest to `word` (case-insensitively), if it is a near miss: equal but
/// for case, or within edit distance 2 (1 for words of up to 4 letters).
pub(super) fn suggest<'a>(word: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let lower = word.to_lowercase();
    let limit = if word.chars().count() <= 4 { 1 } else { 2 };
    known
        .map(|k| (edit_distance(&lower, &k.to_lowercase()), k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(cur).min(row[j])
            };
            prev = cur;
        }
    }
    row[b.len()]
}

/// The 1-based line of the key at `path` in `text`: each key is searched after its parent's
/// position, so `hasEKG.epPort` finds the port under `hasEKG`, not the first `epPort` of the
/// file; a list index followed by a key skips to that key's `index`-th occurrence.
pub(in crate::config) fn line_of(text: &str, path: &[Seg]) -> Option<usize> {
    let mut pos = 0;
    let mut found = false;
    let mut i = 0;
    while i < path.len() {
        match &path[i] {
            Seg::Key(k) => {
                pos = find_key(text, pos, k)?;
                found = true;
            }
            Seg::Index(n) => {
                if let Some(Seg::Key(k)) = path.get(i + 1) {
                    for _ in 0..=*n {
                        pos = find_key(text, pos, k)? + 1;
                    }
                    pos -= 1;
                    found = true;
                    i += 1;
                }
            }
        }
        i += 1;
    }
    found.then(|| text[..pos].matches('\n').count() + 1)
}

/// The byte offset of the next `key` at or after `from` that is a mapping key.
fn find_key(text: &str, from: usize, key: &str) -> Option<usize> {
    let mut at = from;
    while let Some(off) = text.get(at..)?.find(key) {
        let start = at + off;
        let end = start + key.len();
        let before = text[..start]
            .trim_end_matches(['"', '\''])
            .chars()
            .next_back();
        let after = text[end..].trim_start_matches(['"', '\'']).trim_start();
        let bounded = matches!(before, None | Some(' ' | '\t' | '\n' | '{' | ',' | '-'));
        if bounded && after.starts_with(':') {
            return Some(start);
        }
        at = end;
    }
    None
}
