//! Node names: turning the name a node sends into a safe directory name ([`dir_name`], pure:
//! no I/O, no clock) and into cardano-tracer's URL slug ([`slugify`]), both after upstream's
//! rules (cardano-tracer 0.5.0's `sanitizeNodeName` and hapytex/slugify 0.1.0.2), where safe.

/// Longest sanitised name, in bytes, leaving room for a collision suffix within NAME_MAX.
/// A longer directory name is shortened; the node's identity (its exact name, recorded in
/// the checkpoint) is not, so two long names sharing a prefix still never share state.
pub const MAX_NAME_BYTES: usize = 200;

/// Longest node name a node may send, in bytes (the native proto's `node_name` limit).
pub const MAX_HELLO_NAME_BYTES: usize = 255;

/// Why a node name cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// No letter or digit is left after sanitising.
    #[error("node name {0:?} has no usable characters (it needs a letter or digit)")]
    Empty(String),
    /// Longer than [`MAX_HELLO_NAME_BYTES`]; the name is not cut silently.
    #[error("node name is {0} bytes long; at most 255 are allowed")]
    TooLong(usize),
}

/// Turns a node's name into a single, safe path component: cardano-tracer's directory name
/// (`sanitizeNodeName`, then `takeFileName`, then `slugifyUnicode` if that left nothing, `.`
/// or `..`; cardano-tracer `src/Cardano/Tracer/Utils.hs` and `Handlers/Logs/File.hs`) with
/// what it needs to be safe here.
///
/// Upstream's steps: `"`, `'`, `:`, `@` and whitespace become `_`; `?` and `*` are dropped;
/// leading and trailing characters that are not letters or digits are dropped; only the part
/// after the last `/` is kept. tracerd adds: every other control character becomes `_` (NUL
/// among them: upstream keeps them), leading non-alphanumerics are dropped again after the
/// `/` split (so the result never starts with a dot or dash), and the result is at most
/// [`MAX_NAME_BYTES`] bytes. A name without a letter or digit is rejected; so is one longer
/// than [`MAX_HELLO_NAME_BYTES`]. The result is always a single normal path component, so
/// joining it to a log root never leaves the root.
pub fn dir_name(name: &str) -> Result<String, NameError> {
    if name.len() > MAX_HELLO_NAME_BYTES {
        return Err(NameError::TooLong(name.len()));
    }
    let mapped: String = name
        .chars()
        .filter(|c| *c != '?' && *c != '*')
        .map(|c| {
            if matches!(c, '"' | '\'' | ':' | '@') || c.is_whitespace() || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    let trimmed = mapped.trim_matches(|c: char| !c.is_alphanumeric());
    // `takeFileName`: the last path component; then trim its start again (".b" of "a/.b").
    let file = trimmed.rsplit('/').next().unwrap_or("");
    let file = file.trim_start_matches(|c: char| !c.is_alphanumeric());
    let mut out = if file.is_empty() {
        slugify_unicode(name)
    } else {
        file.to_string()
    };
    if out.len() > MAX_NAME_BYTES {
        let mut cut = MAX_NAME_BYTES;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
    if !out.chars().any(char::is_alphanumeric) {
        return Err(NameError::Empty(name.to_string()));
    }
    Ok(out)
}

/// hapytex/slugify 0.1.0.2's word separators (`isWordSeparator`: the listed controls, `-`,
/// `_`, and the Unicode space, line and paragraph separators).
fn is_word_separator(c: char) -> bool {
    matches!(
        c,
        '-' | '_'
            | '\u{b}'
            | '\u{c}'
            | '\u{1c}'..='\u{1f}'
            | '\u{85}'
            | '\t'
            | '\r'
            | '\n'
            | ' '
            | '\u{a0}'
            | '\u{1680}'
            | '\u{2000}'..='\u{200a}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{202f}'
            | '\u{205f}'
            | '\u{3000}'
    )
}

/// hapytex/slugify's `_slugify'` after normalisation: lowercase, keep word characters
/// (letters and numbers; `char::is_alphanumeric` stands in for Haskell's general categories)
/// and separators, split on separators, drop empty pieces, join with `-`.
fn slug_words(normalised: impl Iterator<Item = char>) -> String {
    let mut out = String::new();
    let mut dash = false;
    for c in normalised.flat_map(char::to_lowercase) {
        if c.is_alphanumeric() {
            if dash && !out.is_empty() {
                out.push('-');
            }
            dash = false;
            out.push(c);
        } else if is_word_separator(c) {
            dash = true;
        }
    }
    out
}

/// cardano-tracer's directory fallback, `slugifyUnicode` (NFKC, then as [`slugify`] without
/// the ASCII filter).
fn slugify_unicode(name: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    slug_words(name.nfkc())
}

/// cardano-tracer's URL slug of a node name, hapytex/slugify 0.1.0.2's `slugify` (NFKD, drop
/// non-ASCII, so accents are stripped: `ü` → `u`; lowercase; letters and digits kept; runs of
/// `-`, `_` and whitespace joined by one `-`; everything else, `.` `:` `/` `@` among them,
/// deleted). cardano-tracer applies it to the name it stored, which is the sanitised name.
/// Never empty: `node` where upstream's would be (a name of non-Latin letters only, say), so
/// every node has a route.
pub fn slugify(name: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    let out = slug_words(name.nfkd().filter(char::is_ascii));
    if out.is_empty() {
        "node".to_string()
    } else {
        out
    }
}

/// A node name for tracerd's own log: control characters and line separators escaped
/// (`{:?}`-style), at most 300 bytes, so a name can neither forge nor flood a log line.
pub fn escape_name(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if out.len() >= 300 {
            out.push('…');
            break;
        }
        if c.is_control() || c == '\u{2028}' || c == '\u{2029}' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Slugs that would shadow a fixed HTTP route; a node whose slug is one of these gets `-2`.
pub const RESERVED_SLUGS: &[&str] = &["api", "healthz", "metrics", "readyz", "targets", "ui"];

#[cfg(test)]
mod tests {
    use super::*;

    /// Upstream's rules applied by hand (cardano-tracer 0.5.0 `sanitizeNodeName` +
    /// `takeFileName` + `slugifyUnicode` fallback for the directory, hapytex/slugify 0.1.0.2
    /// `slugify` of the stored name for the route); the first seven rows are the worked
    /// examples of the upstream notes (`/work/scratch/upstream/NOTES.md`, § b).
    #[test]
    fn directory_names_and_slugs_follow_upstream() {
        let table = [
            ("127.0.0.1:30004", "127.0.0.1_30004", "127001-30004"),
            ("TxGenerator", "TxGenerator", "txgenerator"),
            ("node-1", "node-1", "node-1"),
            ("Node_A 1", "Node_A_1", "node-a-1"),
            (
                "relay.example.com:3001",
                "relay.example.com_3001",
                "relayexamplecom-3001",
            ),
            ("Müller Ünïcode", "Müller_Ünïcode", "muller-unicode"),
            ("foo@bar:1", "foo_bar_1", "foo-bar-1"),
            // `+`, `#`, `,` are kept in directories (tracerd before 0.5 mapped them to `_`).
            ("relay+a", "relay+a", "relaya"),
            ("relay#2,eu", "relay#2,eu", "relay2eu"),
            ("ürelay-0000", "ürelay-0000", "urelay-0000"),
            // `?` and `*` dropped; quotes become `_`, then trimmed at the ends.
            ("a?b*c", "abc", "abc"),
            ("\"it's\"", "it_s", "it-s"),
            // takeFileName: the last component only.
            ("x/y", "y", "y"),
            ("../../etc/passwd", "passwd", "passwd"),
            ("a..b", "a..b", "ab"),
            ("--rf", "rf", "rf"),
            ("core_node_0", "core_node_0", "core-node-0"),
            // slugifyUnicode fallback when nothing is left.
            ("узел", "узел", "node"),
        ];
        for (name, dir, slug) in table {
            assert_eq!(dir_name(name).as_deref(), Ok(dir), "dir of {name:?}");
            assert_eq!(slugify(dir), slug, "slug of {name:?}");
        }
    }

    #[test]
    fn differences_from_upstream_keep_the_root_safe() {
        // Upstream keeps control characters; tracerd turns them into `_`.
        assert_eq!(dir_name("a\u{0}b\u{1b}c").unwrap(), "a_b_c");
        // Upstream's takeFileName can leave a leading dot ("a/.b" → ".b").
        assert_eq!(dir_name("a/.b").unwrap(), "b");
        // Nothing usable: refused (upstream would use an empty slug).
        assert_eq!(dir_name(".."), Err(NameError::Empty("..".into())));
        assert!(dir_name("///").is_err());
        assert!(dir_name("").is_err());
        assert_eq!(slugify("..."), "node");
    }
}
