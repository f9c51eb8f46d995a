//! The plain-strings walk against the one-pass scan it sped up (kept in `onepass.rs`): the
//! same Clean / Dirty / Invalid on any bytes, at every word boundary.

use super::tests::{json_value, jsonish_bytes, mutate, serde_ok};
use super::*;
use proptest::prelude::*;

/// What the scan before the plain-strings walk found, as this module's [`Scan`].
fn onepass_scan(bytes: &[u8]) -> Scan {
    match super::onepass::scan(bytes) {
        super::onepass::Scan::Invalid => Scan::Invalid,
        super::onepass::Scan::Clean => Scan::Clean,
        super::onepass::Scan::Dirty => Scan::Dirty,
    }
}

/// The plain-strings walk's word and block boundaries: the first quote, backslash, control
/// character, DEL or non-ASCII byte of a string at every offset from 0 to 33 of the text and
/// of the string (across the 16-byte blocks of the quote search and its 8-byte tail), escapes across a word boundary, multi-byte UTF-8 across words, in compact machine
/// lines of either walk: Clean / Dirty / Invalid exactly as the one-pass scan, and validity as
/// serde_json where the text is UTF-8.
#[test]
fn word_boundaries_agree_with_the_one_pass_scan() {
    let specials: [&[u8]; 16] = [
        b"\"",
        b"\\\"",
        b"\\\\",
        b"\\n",
        b"\\u00e9",
        b"\\ud83d\\ude00",
        b"\\ud83d",
        b"\\",
        b"\\x",
        b"\x01",
        b"\t",
        b"\x7f",
        "é".as_bytes(),
        "\u{85}".as_bytes(),
        "\u{2028}".as_bytes(),
        "😀".as_bytes(),
    ];
    let mut checked = 0;
    for lead in 0..=33 {
        for at in 0..=33 {
            for special in specials {
                for tail in [&b"\"}"[..], b"xyz\",\"b\":1}", b"", b"\"", b"\"} "] {
                    let mut text = b"{\"".to_vec();
                    text.extend(std::iter::repeat_n(b'k', lead));
                    text.extend_from_slice(b"\":\"");
                    text.extend(std::iter::repeat_n(b'v', at));
                    text.extend_from_slice(special);
                    text.extend_from_slice(tail);
                    let got = scan(&text);
                    assert_eq!(
                        got,
                        onepass_scan(&text),
                        "{:?}",
                        String::from_utf8_lossy(&text)
                    );
                    // A lone escaped surrogate is refused on purpose (escaped_surrogates_must_pair)
                    // where `IgnoredAny` lets it pass.
                    match std::str::from_utf8(&text) {
                        Ok(s) if special != b"\\ud83d" => {
                            assert_eq!(got != Scan::Invalid, serde_ok(s), "serde_json on {s:?}")
                        }
                        _ => {}
                    }
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 34 * 34 * 16 * 5);
}

#[test]
fn plain_strings_is_no_backslash_control_del_or_high_byte() {
    for len in 0..=40 {
        for at in 0..len {
            for c in 0..=255u8 {
                let mut b = vec![b'a'; len];
                b[at] = c;
                let plain = (0x20..0x7F).contains(&c) && c != b'\\';
                assert_eq!(plain_strings(&b), plain, "{c:#x} at {at} of {len}");
            }
        }
        assert!(plain_strings(&vec![b'"'; len]));
    }
}

proptest! {
    #[test]
    fn plain_strings_agrees_with_a_plain_loop(s in proptest::collection::vec(any::<u8>(), 0..40)) {
        let expect = s.iter().all(|&c| (0x20..0x7F).contains(&c) && c != b'\\');
        prop_assert_eq!(plain_strings(&s), expect);
    }

    #[test]
    fn next_quote_agrees_with_a_plain_scan(s in proptest::collection::vec(prop::sample::select(&b"ab\"\\ "[..]), 0..40), from in 0usize..44) {
        let expect = s.get(from..).and_then(|r| r.iter().position(|&c| c == b'"')).map(|n| from + n);
        prop_assert_eq!(next_quote(&s, from), expect);
    }

    #[test]
    fn agrees_with_the_one_pass_scan_on_any_bytes(bytes in jsonish_bytes()) {
        prop_assert_eq!(scan(&bytes), onepass_scan(&bytes), "{:?}", String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn agrees_with_the_one_pass_scan_on_mutated_json(v in json_value(), pretty in any::<bool>(), edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 0..4)) {
        let mut text = if pretty { serde_json::to_string_pretty(&v).unwrap() } else { v.to_string() }.into_bytes();
        mutate(&mut text, &edits);
        prop_assert_eq!(scan(&text), onepass_scan(&text), "{:?}", String::from_utf8_lossy(&text));
    }
}

/// JSON-ish pieces with no backslash, control character, DEL or byte >= 0x80 (the texts the
/// plain-strings walk takes), and any printable ASCII byte mixed in.
fn plain_jsonish_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        4 => prop::sample::select(vec![
            &b"{"[..], b"}", b"[", b"]", b":", b",", b"\"", b"\"k\":", b"\"value\"", b"0", b"-",
            b"1.5", b"e+", b"E", b"true", b"null", b"fals", b" ", b"abcdefgh", b"{\"at\":\"",
            b"\",\"ns\":\"", b"\"}", b"\"]", b"12345678901234567",
        ])
        .prop_map(<[u8]>::to_vec),
        1 => (0x20u8..0x7F).prop_filter("no backslash", |&c| c != b'\\').prop_map(|b| vec![b]),
    ];
    proptest::collection::vec(piece, 0..48).prop_map(|p| p.concat())
}

proptest! {
    #[test]
    fn agrees_with_the_one_pass_scan_and_serde_on_plain_text(bytes in plain_jsonish_bytes()) {
        prop_assert!(plain_strings(&bytes));
        let got = scan(&bytes);
        prop_assert_eq!(got, onepass_scan(&bytes), "{:?}", String::from_utf8_lossy(&bytes));
        let text = std::str::from_utf8(&bytes).unwrap();
        prop_assert_eq!(got != Scan::Invalid, serde_ok(text), "{:?}", text);
    }

    #[test]
    fn plain_machine_lines_are_clean_and_one_edit_agrees(v in json_value(), at in any::<prop::sample::Index>(), byte in 0x20u8..0x7F) {
        let line = serde_json::json!({"at": "2026-12-02T05:07:10.123456789Z", "ns": "A.B", "data": v, "sev": "Info"}).to_string();
        let mut text = line.into_bytes();
        let clean = scan(&text);
        prop_assert_eq!(clean, onepass_scan(&text));
        let at = at.index(text.len());
        text[at] = byte;
        prop_assert_eq!(scan(&text), onepass_scan(&text), "{:?}", String::from_utf8_lossy(&text));
    }
}
