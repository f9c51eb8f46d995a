//! The JSON check against `serde_json` and against the validator it replaced.

use super::*;
use proptest::prelude::*;
use serde::de::IgnoredAny;

pub(super) fn serde_ok(s: &str) -> bool {
    serde_json::from_str::<IgnoredAny>(s).is_ok()
}

#[test]
fn escaped_surrogates_must_pair() {
    assert!(is_valid(br#""\ud83d\ude00""#));
    assert!(is_valid(br#"{"a":"x\uDBFF\uDFFFy"}"#));
    for lone in [
        &br#""\udbbb""#[..],
        br#""\udbbbb\uf0bb""#,
        br#""\ude00""#,
        br#""\ud83d\u0041""#,
        br#""\ud83d\""#,
    ] {
        assert!(!is_valid(lone), "{}", String::from_utf8_lossy(lone));
        assert!(serde_json::from_slice::<String>(lone).is_err());
    }
}

#[test]
fn agrees_with_serde_json_on_tricky_cases() {
    let cases = [
        "{}",
        "[]",
        "0",
        "-0",
        "01",
        "1.",
        ".5",
        "1e",
        "1e+",
        "1E-5",
        "-",
        "--1",
        "1.5e3",
        "\"\"",
        "\"\\u00e9\"",
        "\"\\u00g9\"",
        "\"\\x\"",
        "\"\t\"",
        "\"a\nb\"",
        "true",
        "tru",
        "nulll",
        "[1,]",
        "[,1]",
        "{\"a\":1,}",
        "{\"a\" 1}",
        "{1:2}",
        "{\"a\":1}{}",
        " [ 1 , 2 ] ",
        "\"\\ud800\\udc00\"",
        "[[[]]]",
        "{\"a\":[{\"b\":null}]}",
        "",
        " ",
        "\"unterminated",
        "{\"k\":\"v\"",
        "[1 2]",
        "1 2",
        "\u{feff}{}",
        "{\"é\":\"ü\"}",
        "[true,false,null]",
        "123456789012345678901234567890",
        "1e400",
        "-1e-400",
    ];
    for c in cases {
        assert_eq!(is_valid(c.as_bytes()), serde_ok(c), "{c:?}");
    }
    let deep_ok = format!("{}{}", "[".repeat(127), "]".repeat(127));
    assert_eq!(is_valid(deep_ok.as_bytes()), serde_ok(&deep_ok));
    let too_deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    assert_eq!(is_valid(too_deep.as_bytes()), serde_ok(&too_deep));
}

pub(super) fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        any::<String>().prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::from),
            proptest::collection::btree_map(any::<String>(), inner, 0..8)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn find_string_stop_agrees_with_a_plain_scan(s in proptest::collection::vec(any::<u8>(), 0..40)) {
        let plain = s.iter().position(|&c| c == b'"' || c == b'\\' || c >= 0x7F).unwrap_or(s.len());
        prop_assert_eq!(find_string_stop(&s), plain);
    }

    #[test]
    fn string_stop_agrees_with_a_plain_scan(s in proptest::collection::vec(any::<u8>(), 0..40), from in 0usize..40) {
        let from = from.min(s.len());
        let plain = s[from..].iter().position(|&c| c == b'"' || c == b'\\' || !(0x20..0x7F).contains(&c)).map(|n| from + n);
        prop_assert_eq!(string_stop(&s, from), plain);
    }

    #[test]
    fn accepts_everything_serde_writes(v in json_value(), pretty in any::<bool>()) {
        let text = if pretty { serde_json::to_string_pretty(&v).unwrap() } else { v.to_string() };
        prop_assert!(is_valid(text.as_bytes()), "{}", text);
    }

    #[test]
    fn agrees_with_serde_json_on_mutations(v in json_value(), cut in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut text = v.to_string().into_bytes();
        if !text.is_empty() {
            let at = cut.index(text.len());
            text[at] = byte;
        }
        if let Ok(s) = String::from_utf8(text) {
            prop_assert_eq!(is_valid(s.as_bytes()), serde_ok(&s), "{:?}", s);
        }
    }

    #[test]
    fn agrees_with_serde_json_on_arbitrary_text(s in "[\\[\\]{}:,\"\\\\ 0-9eE.+\\-truefalsn]{0,24}") {
        prop_assert_eq!(is_valid(s.as_bytes()), serde_ok(&s), "{:?}", s);
    }
}

/// Applies proptest's edits to `text`: per `(place, byte, op)` op 0 overwrites the byte
/// there, 1 inserts `byte` there, 2 cuts the text there.
pub(super) fn mutate(text: &mut Vec<u8>, edits: &[(prop::sample::Index, u8, u8)]) {
    for (at, byte, op) in edits {
        let at = at.index(text.len() + 1);
        match op {
            0 if at < text.len() => text[at] = *byte,
            1 => text.insert(at, *byte),
            _ => text.truncate(at),
        }
    }
}

/// Bytes that are JSON-ish (tokens, whitespace, escapes) mixed with any byte at all: control
/// characters, DEL, invalid UTF-8.
pub(super) fn jsonish_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        3 => prop::sample::select(vec![
            &b"{"[..], b"}", b"[", b"]", b":", b",", b"\"", b"\"k\":", b"\\", b"\\u", b"\\ud83d",
            b"\\ude00", b"\\n", b"0", b"-", b"1.5", b"e+", b"E", b"true", b"null", b"fals", b" ",
            b"\t", b"\n", b"\r", b"abcdefgh", b"\x7f", b"\xc2\x85", b"\xe2\x80\xa8", b"\xc3\xa9",
        ])
        .prop_map(<[u8]>::to_vec),
        1 => any::<u8>().prop_map(|b| vec![b]),
    ];
    proptest::collection::vec(piece, 0..48).prop_map(|p| p.concat())
}

/// A nested document of `depth` levels, objects or arrays as the bits of `pattern` say,
/// around `leaf`.
fn nested(depth: usize, pattern: u64, leaf: &str) -> String {
    let mut open = String::new();
    let mut close = String::new();
    for level in 0..depth {
        if pattern.rotate_left(level as u32 % 64) & 1 == 1 {
            open.push_str("{\"k\":");
            close.insert(0, '}');
        } else {
            open.push('[');
            close.insert(0, ']');
        }
    }
    format!("{open}{leaf}{close}")
}

#[test]
fn nesting_of_any_depth_is_checked_level_by_level() {
    // Across the bit stack's word boundaries (64, 128, ...) and far past serde_json's
    // recursion limit (128), which does not apply to a check.
    for depth in [1, 2, 63, 64, 65, 127, 128, 129, 191, 192, 193, 1000, 5000] {
        for pattern in [0, u64::MAX, 0x5555_5555_5555_5555, 0x9E37_79B9_7F4A_7C15] {
            let doc = nested(depth, pattern, "\"v\"");
            assert_eq!(scan(doc.as_bytes()), Scan::Clean, "depth {depth}");
            assert!(reference::is_valid(doc.as_bytes()));
            assert!(serde_ok(&doc), "depth {depth}");
            // One closer short, one too many, one of the wrong kind at several levels.
            let short = &doc[..doc.len() - 1];
            assert!(!is_valid(short.as_bytes()), "depth {depth} short");
            assert!(!is_valid(format!("{doc}]").as_bytes()));
            assert!(!is_valid(format!("{doc}}}").as_bytes()));
            let closers = doc.len() - doc.rfind('"').unwrap() - 1;
            for from_end in [0, closers / 2, closers.saturating_sub(1), 63, 64, 65] {
                if from_end >= closers {
                    continue;
                }
                let mut wrong = doc.clone().into_bytes();
                let at = wrong.len() - 1 - from_end;
                wrong[at] = if wrong[at] == b']' { b'}' } else { b']' };
                assert!(
                    !is_valid(&wrong),
                    "depth {depth}, closer {from_end} from the end"
                );
                assert!(!reference::is_valid(&wrong));
            }
        }
    }
}

#[test]
fn control_characters_are_only_whitespace_between_tokens_and_never_raw_in_strings() {
    for c in 0u8..0x20 {
        let between = [b"[1,".as_slice(), &[c], b"2]"].concat();
        let ws = matches!(c, b' ' | b'\t' | b'\n' | b'\r');
        assert_eq!(is_valid(&between), ws, "{c:#04x} between tokens");
        let inside = [b"[\"a".as_slice(), &[c], b"b\"]"].concat();
        assert_eq!(scan(&inside), Scan::Invalid, "{c:#04x} in a string");
        let key = [b"{\"".as_slice(), &[c], b"\":1}"].concat();
        assert_eq!(scan(&key), Scan::Invalid, "{c:#04x} in a key");
        // At every offset of a longer string (the 8-byte words and the tail).
        for at in 0..20 {
            let mut text = b"\"aaaaaaaaaaaaaaaaaaaa\"".to_vec();
            text[1 + at] = c;
            assert!(!is_valid(&text), "{c:#04x} at {at}");
        }
    }
    assert_eq!(
        scan(b"\"\x7f\""),
        Scan::Dirty,
        "DEL is JSON, escaped when written"
    );
    assert_eq!(scan(b"[1,\x7f2]"), Scan::Invalid, "but not between tokens");
    assert_eq!(
        scan(b"[1,\xc2\xa02]"),
        Scan::Invalid,
        "nor is non-ASCII whitespace"
    );
}

#[test]
fn invalid_utf8_in_strings_is_left_to_the_utf8_check_as_before() {
    // Every `&str` is UTF-8; the bytes form (recovery reading a file) accepts any byte
    // >= 0x80 inside a string, as the validator before it did.
    for bad in [
        &b"\"\xff\""[..],
        b"\"\xc2\"",
        b"\"\xe2\x80\"",
        b"\"\x80\x80\"",
        b"[\"\xf5\xfe\xff\"]",
    ] {
        assert!(is_valid(bad), "{bad:?}");
        assert!(reference::is_valid(bad));
    }
    for bad in [
        &b"\xff"[..],
        b"[\xc3\xa9]",
        b"\"a\"\xff",
        b"{\"a\"\xc2\x85:1}",
    ] {
        assert!(!is_valid(bad), "{bad:?}");
        assert!(!reference::is_valid(bad));
    }
}

#[test]
fn numbers_follow_the_grammar() {
    let cases = [
        ("0", true),
        ("-0", true),
        ("7", true),
        ("-12", true),
        ("10.25", true),
        ("0.0", true),
        ("1e5", true),
        ("1E+5", true),
        ("1e-05", true),
        ("-0.5E10", true),
        ("01", false),
        ("-01", false),
        ("00", false),
        ("+1", false),
        ("1.", false),
        (".1", false),
        ("1.e5", false),
        ("1e", false),
        ("1e+", false),
        ("1e+-1", false),
        ("--1", false),
        ("-", false),
        ("0x10", false),
        ("1_000", false),
        ("1.5.5", false),
        ("1ee5", false),
        ("NaN", false),
        ("Infinity", false),
        ("-Infinity", false),
        ("[-]", false),
        ("[1.]", false),
        ("{\"a\":-}", false),
        ("[0,-0,1e9,2.5E-3]", true),
    ];
    for (text, ok) in cases {
        assert_eq!(is_valid(text.as_bytes()), ok, "{text}");
        assert_eq!(serde_ok(text), ok, "serde_json on {text}");
    }
}

#[test]
fn exactly_one_value_nothing_after_it_but_whitespace() {
    for (text, ok) in [
        ("{} ", true),
        (" \n{}\r\n\t", true),
        ("{} x", false),
        ("{}\0", false),
        ("[]]", false),
        ("\"a\"\"b\"", false),
        ("1 2", false),
        ("true false", false),
        ("null,", false),
        ("{}/", false),
        ("{}\u{feff}", false),
        ("\u{a0}{}", false),
        ("[]\u{2028}", false),
    ] {
        assert_eq!(is_valid(text.as_bytes()), ok, "{text:?}");
        assert_eq!(serde_ok(text), ok, "serde_json on {text:?}");
    }
}

proptest! {
    #[test]
    fn agrees_with_the_previous_validator_on_any_bytes(bytes in jsonish_bytes()) {
        prop_assert_eq!(is_valid(&bytes), reference::is_valid(&bytes), "{:?}", String::from_utf8_lossy(&bytes));
        if let Ok(text) = std::str::from_utf8(&bytes) {
            prop_assert_eq!(is_valid(&bytes), serde_ok(text), "{:?}", text);
        }
    }

    #[test]
    fn agrees_with_the_previous_validator_on_mutated_json(v in json_value(), pretty in any::<bool>(), edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..4)) {
        let mut text = if pretty { serde_json::to_string_pretty(&v).unwrap() } else { v.to_string() }.into_bytes();
        mutate(&mut text, &edits);
        prop_assert_eq!(is_valid(&text), reference::is_valid(&text), "{:?}", String::from_utf8_lossy(&text));
        if let Ok(s) = std::str::from_utf8(&text) {
            prop_assert_eq!(is_valid(&text), serde_ok(s), "{:?}", s);
        }
    }

    #[test]
    fn deep_random_nesting_agrees_with_serde_json(depth in 1usize..400, pattern in any::<u64>(), cut in any::<prop::sample::Index>()) {
        let doc = nested(depth, pattern, "[1,\"x\",{}]");
        prop_assert!(is_valid(doc.as_bytes()));
        let cut = &doc[..cut.index(doc.len())];
        prop_assert!(!is_valid(cut.as_bytes()));
        prop_assert!(!serde_ok(cut));
    }
}

/// The validator as it was before the one-pass scan (2026-12-02, 11c5d4c), kept word for word
/// as the reference the scan must agree with on any bytes, UTF-8 or not.
mod reference {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;

    /// Nesting kept on the stack; deeper documents (rare) spill to the heap. There is no depth
    /// limit, as `serde_json` has none when it only checks a value; the input is bounded by the
    /// frame size.
    const INLINE_DEPTH: usize = 64;

    /// Whether `bytes` (valid UTF-8, as every `&str`) is exactly one JSON value, with optional
    /// surrounding whitespace.
    pub(super) fn is_valid(bytes: &[u8]) -> bool {
        let mut p = Parser { b: bytes, i: 0 };
        p.ws();
        if !p.value() {
            return false;
        }
        p.ws();
        p.i == bytes.len()
    }

    struct Parser<'a> {
        b: &'a [u8],
        i: usize,
    }

    /// What a container expects next.
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Frame {
        Array,
        Object,
    }

    /// The open containers: inline up to [`INLINE_DEPTH`], then on the heap.
    struct Stack {
        inline: [Frame; INLINE_DEPTH],
        spill: Vec<Frame>,
        depth: usize,
    }

    impl Stack {
        fn push(&mut self, f: Frame) {
            if self.depth < INLINE_DEPTH {
                self.inline[self.depth] = f;
            } else {
                self.spill.push(f);
            }
            self.depth += 1;
        }

        fn top(&self) -> Option<Frame> {
            match self.depth {
                0 => None,
                d if d <= INLINE_DEPTH => Some(self.inline[d - 1]),
                _ => self.spill.last().copied(),
            }
        }

        fn pop(&mut self) {
            if self.depth > INLINE_DEPTH {
                self.spill.pop();
            }
            self.depth -= 1;
        }
    }

    impl Parser<'_> {
        fn peek(&self) -> Option<u8> {
            self.b.get(self.i).copied()
        }

        fn ws(&mut self) {
            while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
                self.i += 1;
            }
        }

        fn eat(&mut self, c: u8) -> bool {
            if self.peek() == Some(c) {
                self.i += 1;
                true
            } else {
                false
            }
        }

        fn literal(&mut self, word: &[u8]) -> bool {
            if self.b[self.i..].starts_with(word) {
                self.i += word.len();
                true
            } else {
                false
            }
        }

        /// One value; containers are walked with an explicit stack (no recursion).
        fn value(&mut self) -> bool {
            let mut stack = Stack {
                inline: [Frame::Array; INLINE_DEPTH],
                spill: Vec::new(),
                depth: 0,
            };
            loop {
                // Parse a value start.
                self.ws();
                match self.peek() {
                    Some(b'{') => {
                        self.i += 1;
                        self.ws();
                        if self.eat(b'}') {
                            // Empty object: a complete value.
                        } else {
                            stack.push(Frame::Object);
                            if !self.key() {
                                return false;
                            }
                            continue;
                        }
                    }
                    Some(b'[') => {
                        self.i += 1;
                        self.ws();
                        if self.eat(b']') {
                            // Empty array: a complete value.
                        } else {
                            stack.push(Frame::Array);
                            continue;
                        }
                    }
                    Some(b'"') => {
                        if !self.string() {
                            return false;
                        }
                    }
                    Some(b't') => {
                        if !self.literal(b"true") {
                            return false;
                        }
                    }
                    Some(b'f') => {
                        if !self.literal(b"false") {
                            return false;
                        }
                    }
                    Some(b'n') => {
                        if !self.literal(b"null") {
                            return false;
                        }
                    }
                    Some(b'-' | b'0'..=b'9') => {
                        if !self.number() {
                            return false;
                        }
                    }
                    _ => return false,
                }
                // A value is complete: close containers or move to the next element.
                loop {
                    let Some(frame) = stack.top() else {
                        return true;
                    };
                    self.ws();
                    if self.eat(b',') {
                        if frame == Frame::Object {
                            self.ws();
                            if !self.key() {
                                return false;
                            }
                        }
                        break;
                    }
                    let close = match frame {
                        Frame::Array => b']',
                        Frame::Object => b'}',
                    };
                    if !self.eat(close) {
                        return false;
                    }
                    stack.pop();
                }
            }
        }

        /// `"key" :`
        fn key(&mut self) -> bool {
            if self.peek() != Some(b'"') || !self.string() {
                return false;
            }
            self.ws();
            self.eat(b':')
        }

        /// The value of the four hex digits at `at`, if there are four.
        fn hex4(&self, at: usize) -> Option<u32> {
            let h = self.b.get(at..at + 4)?;
            if !h.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            u32::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()
        }

        fn string(&mut self) -> bool {
            self.i += 1; // the opening quote
            loop {
                // Skip plain bytes quickly.
                let Some(n) = find_special(&self.b[self.i..]) else {
                    return false;
                };
                self.i += n;
                match self.b[self.i] {
                    b'"' => {
                        self.i += 1;
                        return true;
                    }
                    b'\\' => {
                        self.i += 1;
                        match self.peek() {
                            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                                self.i += 1
                            }
                            Some(b'u') => {
                                // An escaped UTF-16 surrogate must come in a pair: a lone one is
                                // JSON by the grammar, but serde_json and other strict readers
                                // refuse the line (found by fuzz/line_renderers).
                                match self.hex4(self.i + 1) {
                                    Some(0xD800..=0xDBFF) => {
                                        let low = (self.b.get(self.i + 5..self.i + 7)
                                            == Some(&b"\\u"[..]))
                                        .then(|| self.hex4(self.i + 7))
                                        .flatten();
                                        if !matches!(low, Some(0xDC00..=0xDFFF)) {
                                            return false;
                                        }
                                        self.i += 11;
                                    }
                                    Some(0xDC00..=0xDFFF) | None => return false,
                                    Some(_) => self.i += 5,
                                }
                            }
                            _ => return false,
                        }
                    }
                    _ => return false, // a raw control character
                }
            }
        }

        fn digits(&mut self) -> bool {
            let start = self.i;
            while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                self.i += 1;
            }
            self.i > start
        }

        fn number(&mut self) -> bool {
            self.eat(b'-');
            match self.peek() {
                Some(b'0') => self.i += 1,
                Some(b'1'..=b'9') => {
                    self.digits();
                }
                _ => return false,
            }
            if self.eat(b'.') && !self.digits() {
                return false;
            }
            if matches!(self.peek(), Some(b'e' | b'E')) {
                self.i += 1;
                if matches!(self.peek(), Some(b'+' | b'-')) {
                    self.i += 1;
                }
                if !self.digits() {
                    return false;
                }
            }
            true
        }
    }

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

    /// Index of the first `"`, `\\` or control character (< 0x20) in `s`, 8 bytes at a time.
    fn find_special(s: &[u8]) -> Option<usize> {
        first_flagged(
            s,
            // Below 0x20, or '"' or '\\'; `& !x` drops bytes >= 0x80, which are never special.
            |x| (x.wrapping_sub(ONES * 0x20) | bytes_equal(x, b'"') | bytes_equal(x, b'\\')) & !x,
            |c| c == b'"' || c == b'\\' || c < 0x20,
        )
    }
}
