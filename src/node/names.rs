//! Node names: turning the name a node sends into a safe directory name ([`dir_name`], pure:
//! no I/O, no clock) and into cardano-tracer's URL slug ([`slugify`]).

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

/// Turns a node's name into a single, safe path component.
///
/// Letters and digits (any script), `-`, `_` and `.` are kept; anything else (`/`, `\`, NUL,
/// spaces, control characters, ...) becomes `_`. A name without a single letter or digit is
/// rejected. Runs of dots collapse to one and leading dots
/// and dashes are dropped, so the result is never `.`, `..`, a hidden file or an option-like
/// name. The result is at most [`MAX_NAME_BYTES`] bytes. The result is always a single normal
/// path component, so joining it to a log root never leaves the root. A name longer than
/// [`MAX_HELLO_NAME_BYTES`] is refused.
pub fn dir_name(name: &str) -> Result<String, NameError> {
    if name.len() > MAX_HELLO_NAME_BYTES {
        return Err(NameError::TooLong(name.len()));
    }
    let mut out = String::with_capacity(name.len().min(MAX_NAME_BYTES));
    for c in name.chars() {
        let c = if c.is_alphanumeric() || c == '-' || c == '_' || c == '.' {
            c
        } else {
            '_'
        };
        if c == '.' && (out.is_empty() || out.ends_with('.')) {
            continue;
        }
        if c == '-' && out.is_empty() {
            continue;
        }
        if out.len() + c.len_utf8() > MAX_NAME_BYTES {
            break;
        }
        out.push(c);
    }
    if !out.chars().any(char::is_alphanumeric) {
        return Err(NameError::Empty(name.to_string()));
    }
    Ok(out)
}

/// cardano-tracer's URL slug of a node name: lowercase letters and digits, runs of `-`, `_`
/// and spaces joined by one `-`, everything else dropped. Never empty (`node` instead).
pub fn slugify(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut dash = false;
    for c in name.chars() {
        if c.is_alphanumeric() {
            if dash && !out.is_empty() {
                out.push('-');
            }
            dash = false;
            out.extend(c.to_lowercase());
        } else if c == '-' || c == '_' || c.is_whitespace() {
            dash = true;
        }
    }
    if out.is_empty() {
        out.push_str("node");
    }
    out
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
pub const RESERVED_SLUGS: &[&str] = &["api", "healthz", "metrics", "readyz", "targets"];
