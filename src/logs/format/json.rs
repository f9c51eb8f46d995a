//! A strict, allocation-free JSON validator (RFC 8259) for the hot path: every trace object's
//! machine text is checked before it is embedded in a log line. It accepts exactly what
//! `serde_json` accepts (a proptest checks the two agree), at a fraction of the cost, since it
//! builds nothing.

/// What [`scan`] found in a text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Scan {
    /// Not exactly one JSON value (with optional surrounding whitespace).
    Invalid,
    /// One JSON value that [`super::push_if_json`] writes as it is: no tab, line feed or
    /// carriage return between tokens, and no DEL, C1 control or U+2028/U+2029 raw in a
    /// string.
    Clean,
    /// One JSON value holding one of those: [`super::push_if_json`] re-encodes it.
    Dirty,
}

/// Whether `bytes` is exactly one JSON value, with optional surrounding whitespace. Any
/// bytes: inside strings, bytes >= 0x80 are not checked to be UTF-8 (every `&str` is).
pub fn is_valid(bytes: &[u8]) -> bool {
    scan(bytes) != Scan::Invalid
}

/// Checks `bytes` as [`is_valid`] does and, in the same pass, whether the text can be
/// written as it is ([`Scan::Clean`]) or must be re-encoded ([`Scan::Dirty`]): one walk over
/// the bytes instead of a check and then a second scan for what to clean.
///
/// Iterative (no recursion, no nesting limit: `serde_json` has none when it only checks a
/// value; the input is bounded by the frame size): the open containers are a bit stack (one
/// bit a level, 64 levels in a word, deeper levels spill to the heap). Strings are skipped
/// 8 bytes at a time up to the next byte that needs a look (a quote, a backslash, a control
/// character, DEL or a byte >= 0x80); in a text with none of those but quotes (checked first,
/// [`plain_strings`]), up to the next quote, 16 bytes at a time ([`next_quote`]).
pub(super) fn scan(bytes: &[u8]) -> Scan {
    // The common case, a node's compact machine text, has no escape, control character or
    // non-ASCII byte at all: then every string ends at the next quote, found 16 bytes at a
    // time with one vector comparison, and the per-byte checks of the string loop are not
    // needed. One vectorisable pass decides which walk applies.
    if plain_strings(bytes) {
        Scanner::<true>::run(bytes)
    } else {
        Scanner::<false>::run(bytes)
    }
}

/// The walk over one text. `PLAIN`: [`plain_strings`] holds for the whole text, so a string
/// holds no byte the string loop must look at other than its closing quote.
struct Scanner<'a, const PLAIN: bool> {
    b: &'a [u8],
    /// Whether a byte that [`super::push_if_json`] drops or escapes was seen.
    dirty: bool,
}

/// The open containers, a bit a level (1: object, 0: array), the innermost in bit 0 of
/// `bits`; full words of outer levels spill to `spill` (no allocation below 64 levels).
struct Stack {
    depth: usize,
    bits: u64,
    spill: Vec<u64>,
}

impl Stack {
    #[inline(always)]
    fn push(&mut self, object: bool) {
        if self.depth != 0 && self.depth % 64 == 0 {
            self.spill.push(self.bits);
            self.bits = 0;
        }
        self.bits = (self.bits << 1) | u64::from(object);
        self.depth += 1;
    }

    #[inline(always)]
    fn pop(&mut self) {
        self.depth -= 1;
        self.bits >>= 1;
        if self.depth != 0 && self.depth % 64 == 0 {
            self.bits = self.spill.pop().unwrap_or(0);
        }
    }

    #[inline(always)]
    fn in_object(&self) -> bool {
        self.bits & 1 != 0
    }
}

impl<const PLAIN: bool> Scanner<'_, PLAIN> {
    fn run(bytes: &[u8]) -> Scan {
        let mut s = Scanner::<PLAIN> {
            b: bytes,
            dirty: false,
        };
        match s.document() {
            Some(end) if end == bytes.len() => {
                if s.dirty {
                    Scan::Dirty
                } else {
                    Scan::Clean
                }
            }
            _ => Scan::Invalid,
        }
    }

    /// The end of the one value at the start of `b` and the whitespace after it, or None.
    fn document(&mut self) -> Option<usize> {
        let b = self.b;
        let mut stack = Stack {
            depth: 0,
            bits: 0,
            spill: Vec::new(),
        };
        let mut i = self.ws(0);
        'value: loop {
            // A value starts at `i` (whitespace skipped).
            match *b.get(i)? {
                b'"' => i = self.string(i + 1)?,
                b'{' => {
                    i = self.ws(i + 1);
                    if *b.get(i)? == b'}' {
                        i += 1;
                    } else {
                        stack.push(true);
                        i = self.key(i)?;
                        continue 'value;
                    }
                }
                b'[' => {
                    i = self.ws(i + 1);
                    if *b.get(i)? == b']' {
                        i += 1;
                    } else {
                        stack.push(false);
                        continue 'value;
                    }
                }
                b'-' | b'0'..=b'9' => i = number(b, i)?,
                b't' => i = literal(b, i, b"true")?,
                b'f' => i = literal(b, i, b"false")?,
                b'n' => i = literal(b, i, b"null")?,
                _ => return None,
            }
            // A value ended at `i`: close containers until the next element starts.
            loop {
                i = self.ws(i);
                if stack.depth == 0 {
                    return Some(i);
                }
                let object = stack.in_object();
                match *b.get(i)? {
                    b',' => {
                        i = self.ws(i + 1);
                        if object {
                            i = self.key(i)?;
                        }
                        continue 'value;
                    }
                    b'}' if object => {}
                    b']' if !object => {}
                    _ => return None,
                }
                i += 1;
                stack.pop();
            }
        }
    }

    /// Skips whitespace from `i`; a tab, line feed or carriage return makes the text dirty.
    #[inline(always)]
    fn ws(&mut self, mut i: usize) -> usize {
        // Compact JSON: a token follows at once (one comparison).
        match self.b.get(i) {
            Some(&c) if c > b' ' => return i,
            None => return i,
            _ => {}
        }
        if PLAIN {
            // No tab, line feed or carriage return in the text: only spaces to skip.
            while self.b.get(i) == Some(&b' ') {
                i += 1;
            }
            return i;
        }
        while let Some(&c) = self.b.get(i) {
            match c {
                b' ' => {}
                b'\t' | b'\n' | b'\r' => self.dirty = true,
                _ => break,
            }
            i += 1;
        }
        i
    }

    /// `"key" :` and the whitespace after it, from `i`.
    #[inline(always)]
    fn key(&mut self, i: usize) -> Option<usize> {
        if *self.b.get(i)? != b'"' {
            return None;
        }
        let end = self.string(i + 1)?;
        if self.b.get(end) == Some(&b':') {
            // Compact JSON: the colon follows the key at once.
            return Some(self.ws(end + 1));
        }
        let i = self.ws(end);
        if *self.b.get(i)? != b':' {
            return None;
        }
        Some(self.ws(i + 1))
    }

    /// The end of the string whose contents start at `i` (just past the closing quote).
    #[inline(always)]
    fn string(&mut self, mut i: usize) -> Option<usize> {
        let b = self.b;
        if PLAIN {
            // No backslash, control character, DEL or byte >= 0x80 anywhere: the first stop
            // byte `string_stop` would find is the next quote.
            return next_quote(b, i).map(|q| q + 1);
        }
        loop {
            i = string_stop(b, i)?;
            match b[i] {
                b'"' => return Some(i + 1),
                b'\\' => i = escape(b, i + 1)?,
                c if c >= 0x7F => i = self.non_ascii(i),
                _ => return None, // a raw control character
            }
        }
    }

    /// Past DEL or the non-ASCII character at `i` (its lead byte and continuation bytes),
    /// noting whether it is one [`super::push_if_json`] escapes: DEL, a C1 control
    /// (C2 80..9F) or U+2028/U+2029 (E2 80 A8/A9).
    #[cold]
    fn non_ascii(&mut self, i: usize) -> usize {
        let b = self.b;
        let next = |k: usize| b.get(i + k).copied().unwrap_or(0);
        match b[i] {
            0x7F => self.dirty = true,
            0xC2 if (0x80..=0x9F).contains(&next(1)) => self.dirty = true,
            0xE2 if next(1) == 0x80 && matches!(next(2), 0xA8 | 0xA9) => self.dirty = true,
            _ => {}
        }
        let mut j = i + 1;
        // Continuation bytes are never special inside a string.
        while b.get(j).is_some_and(|&c| (0x80..0xC0).contains(&c)) {
            j += 1;
        }
        j
    }
}

/// Whether no byte of `b` is one the string loop stops at other than a quote: a backslash, a
/// control character, DEL or a byte >= 0x80. 16 bytes at a time with SSE2 (the x86-64
/// baseline, through `safe_arch`'s safe wrappers), no early exit: a signed comparison below
/// 0x20 finds the control characters and the bytes >= 0x80 (negative) at once.
#[cfg(target_arch = "x86_64")]
#[inline]
pub(super) fn plain_strings(b: &[u8]) -> bool {
    use safe_arch::{
        bitor_m128i, cmp_eq_mask_i8_m128i, cmp_lt_mask_i8_m128i, load_unaligned_m128i, m128i,
        move_mask_i8_m128i, set_splat_i8_m128i,
    };
    let (space, del, backslash) = (
        set_splat_i8_m128i(0x20),
        set_splat_i8_m128i(0x7F),
        set_splat_i8_m128i(b'\\' as i8),
    );
    let specials = |v: m128i| {
        bitor_m128i(
            cmp_lt_mask_i8_m128i(v, space),
            bitor_m128i(
                cmp_eq_mask_i8_m128i(v, del),
                cmp_eq_mask_i8_m128i(v, backslash),
            ),
        )
    };
    let mut blocks = b.chunks_exact(16);
    let mut acc = set_splat_i8_m128i(0);
    for block in &mut blocks {
        let block: &[u8; 16] = block.try_into().unwrap_or(&[b' '; 16]);
        acc = bitor_m128i(acc, specials(load_unaligned_m128i(block)));
    }
    let tail = blocks.remainder();
    let mut last = [b' '; 16];
    last[..tail.len()].copy_from_slice(tail);
    acc = bitor_m128i(acc, specials(load_unaligned_m128i(&last)));
    move_mask_i8_m128i(acc) == 0
}

/// [`plain_strings`] on other targets: whole words, no early exit, so the compiler turns it
/// into vector code where it can.
#[cfg(not(target_arch = "x86_64"))]
#[inline]
pub(super) fn plain_strings(b: &[u8]) -> bool {
    let words = b.chunks_exact(8);
    let tail = words.remainder();
    let acc = words.fold(0u64, |acc, w| {
        let x = u64::from_le_bytes(w.try_into().unwrap_or([0; 8]));
        acc | string_specials(x)
    });
    let mut last = [b' '; 8];
    last[..tail.len()].copy_from_slice(tail);
    (acc | string_specials(u64::from_le_bytes(last))) & HIGH == 0
}

/// Bytes of `x` below 0x20, >= 0x7F or a backslash, as high bits: not exact per byte (a
/// borrow or carry can flag a byte above a flagged one) but zero exactly when there is none.
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn string_specials(x: u64) -> u64 {
    let y = x ^ (ONES * u64::from(b'\\'));
    x.wrapping_sub(ONES * 0x20) | x | x.wrapping_add(ONES) | (y.wrapping_sub(ONES) & !y)
}

/// The first quote at or after `i`, 16 bytes at a time (SSE2, the x86-64 baseline, through
/// `safe_arch`'s safe wrappers of the intrinsics), the last 15 bytes 8 at a time; None when
/// there is none.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn next_quote(b: &[u8], mut i: usize) -> Option<usize> {
    use safe_arch::{
        cmp_eq_mask_i8_m128i, load_unaligned_m128i, move_mask_i8_m128i, set_splat_i8_m128i,
    };
    let quote = set_splat_i8_m128i(b'"' as i8);
    let mut rest = b.get(i..)?;
    while let Some((block, tail)) = rest.split_first_chunk::<16>() {
        let found = move_mask_i8_m128i(cmp_eq_mask_i8_m128i(load_unaligned_m128i(block), quote));
        if found != 0 {
            return Some(i + found.trailing_zeros() as usize);
        }
        i += 16;
        rest = tail;
    }
    next_quote_words(rest).map(|n| i + n)
}

/// The first quote at or after `i`, 8 bytes at a time; None when there is none.
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn next_quote(b: &[u8], i: usize) -> Option<usize> {
    next_quote_words(b.get(i..)?).map(|n| i + n)
}

/// The index of the first quote of `rest`, 8 bytes at a time; None when there is none.
#[inline(always)]
fn next_quote_words(mut rest: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some((word, tail)) = rest.split_first_chunk::<8>() {
        let f = bytes_equal(u64::from_le_bytes(*word), b'"') & HIGH;
        if f != 0 {
            return Some(i + (f.trailing_zeros() / 8) as usize);
        }
        i += 8;
        rest = tail;
    }
    rest.iter().position(|&c| c == b'"').map(|n| i + n)
}

/// The first byte at or after `i` that a string scan must look at (`"`, `\\`, a control
/// character, DEL or a byte >= 0x80), 8 bytes at a time; None at the end of `b`.
#[inline(always)]
pub(super) fn string_stop(b: &[u8], mut i: usize) -> Option<usize> {
    while i + 8 <= b.len() {
        let word = b[i..i + 8].try_into().unwrap_or([0; 8]);
        let f = string_stops(u64::from_le_bytes(word));
        if f != 0 {
            return Some(i + (f.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    while let Some(&c) = b.get(i) {
        if c == b'"' || c == b'\\' || !(0x20..0x7F).contains(&c) {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// The high bit of every byte of `x` a string scan stops at (exact for the lowest such byte:
/// each term's false positives lie above a true one): below 0x20 (`x - 0x20` borrows or
/// wraps), >= 0x80 (its high bit), 0x7F (`x + 1` reaches 0x80; only 0xFF, itself flagged,
/// carries), `"` and `\\`.
#[inline(always)]
fn string_stops(x: u64) -> u64 {
    (x.wrapping_sub(ONES * 0x20)
        | x
        | x.wrapping_add(ONES)
        | bytes_equal(x, b'"')
        | bytes_equal(x, b'\\'))
        & HIGH
}

/// Past the escape whose letter is at `i` (just after the backslash).
#[inline(always)]
fn escape(b: &[u8], i: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Some(i + 1),
        b'u' => {
            // An escaped UTF-16 surrogate must come in a pair: a lone one is JSON by the
            // grammar, but serde_json and other strict readers refuse the line (found by
            // fuzz/line_renderers).
            match hex4(b, i + 1)? {
                0xD800..=0xDBFF => {
                    if b.get(i + 5..i + 7) != Some(&b"\\u"[..]) {
                        return None;
                    }
                    matches!(hex4(b, i + 7)?, 0xDC00..=0xDFFF).then_some(i + 11)
                }
                0xDC00..=0xDFFF => None,
                _ => Some(i + 5),
            }
        }
        _ => None,
    }
}

/// The value of the four hex digits at `at`, if there are four.
fn hex4(b: &[u8], at: usize) -> Option<u32> {
    let h = b.get(at..at + 4)?;
    h.iter().try_fold(0u32, |v, &c| {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => return None,
        };
        Some(v << 4 | u32::from(d))
    })
}

/// Past the digits from `i`.
#[inline(always)]
fn digits(b: &[u8], mut i: usize) -> usize {
    while b.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    i
}

/// Past the number at `i` (which holds `-` or a digit): `-? (0 | [1-9][0-9]*) (. [0-9]+)?
/// ([eE] [+-]? [0-9]+)?`.
#[inline(always)]
fn number(b: &[u8], mut i: usize) -> Option<usize> {
    if b[i] == b'-' {
        i += 1;
    }
    match *b.get(i)? {
        b'0' => i += 1,
        b'1'..=b'9' => i = digits(b, i + 1),
        _ => return None,
    }
    if b.get(i) == Some(&b'.') {
        let j = digits(b, i + 1);
        if j == i + 1 {
            return None;
        }
        i = j;
    }
    if let Some(b'e' | b'E') = b.get(i) {
        i += 1;
        if let Some(b'+' | b'-') = b.get(i) {
            i += 1;
        }
        let j = digits(b, i);
        if j == i {
            return None;
        }
        i = j;
    }
    Some(i)
}

/// Past `word` at `i`, if it is there.
#[inline(always)]
fn literal(b: &[u8], i: usize, word: &[u8]) -> Option<usize> {
    (b.get(i..i + word.len())? == word).then_some(i + word.len())
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// The high bit of every byte of `x` equal to `c` (exact for the lowest such byte: borrows
/// only travel towards higher bytes).
#[inline(always)]
fn bytes_equal(x: u64, c: u8) -> u64 {
    let y = x ^ (ONES * u64::from(c));
    y.wrapping_sub(ONES) & !y
}

/// Index of the first byte of `s` that `special` names, 8 bytes at a time: `flags` gives a
/// word's candidate bytes as high bits (exact for the lowest), `special` decides the tail.
/// Inlined, so each caller's scan compiles to its own loop.
#[inline(always)]
fn first_flagged(
    s: &[u8],
    flags: impl Fn(u64) -> u64,
    special: impl Fn(u8) -> bool,
) -> Option<usize> {
    let mut i = 0;
    while i + 8 <= s.len() {
        let mut word = [0u8; 8];
        word.copy_from_slice(&s[i..i + 8]);
        let f = flags(u64::from_le_bytes(word)) & HIGH;
        if f != 0 {
            return Some(i + (f.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    s[i..].iter().position(|&c| special(c)).map(|n| i + n)
}

/// Index of the first byte inside a JSON string that [`super::reencode_json`] must look at
/// — `"`, `\\`, DEL or any byte >= 0x80 — in `s`, 8 bytes at a time; `s.len()` when none.
pub(super) fn find_string_stop(s: &[u8]) -> usize {
    first_flagged(
        s,
        // A byte >= 0x80 (its high bit), or '"', '\\' or DEL.
        |x| x | bytes_equal(x, b'"') | bytes_equal(x, b'\\') | bytes_equal(x, 0x7F),
        |c| c == b'"' || c == b'\\' || c >= 0x7F,
    )
    .unwrap_or(s.len())
}

#[cfg(test)]
mod onepass;
#[cfg(test)]
mod plain_tests;
#[cfg(test)]
mod tests;
