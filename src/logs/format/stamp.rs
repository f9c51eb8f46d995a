//! The `at` timestamp of every line, `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`, with the date and time
//! of day formatted once per second: a thread's last second and its text are kept, so the
//! objects of a batch (stamped within the same second, almost always) cost a compare, a
//! 20-byte copy and the nine digits of the fraction. The text is [`utc::push_rfc3339_nanos_bytes`]'s,
//! byte for byte (a proptest checks it).
//!
//! A memo, not state: what is written depends on the timestamp only.

use std::cell::Cell;

use crate::utc;

/// `YYYY-MM-DDTHH:MM:SS.`: the part of a stamp that is the same for a whole second.
const PREFIX: usize = 20;

thread_local! {
    /// The last second formatted on this thread and its prefix (`i64::MIN`: none yet).
    static LAST: Cell<(i64, [u8; PREFIX])> = const { Cell::new((i64::MIN, [0; PREFIX])) };
}

/// "00", "01", ... "99".
const PAIRS: &[u8; 200] = b"00010203040506070809101112131415161718192021222324252627282930313233343536373839404142434445464748495051525354555657585960616263646566676869707172737475767778798081828384858687888990919293949596979899";

/// Appends the RFC 3339 timestamp of `ns` (nanoseconds since the epoch), as
/// [`utc::push_rfc3339_nanos_bytes`] does.
#[inline]
pub(super) fn push_nanos(out: &mut Vec<u8>, ns: i64) {
    let secs = ns.div_euclid(1_000_000_000);
    let frac = ns.rem_euclid(1_000_000_000) as u32;
    let (last, mut prefix) = LAST.get();
    if last != secs {
        prefix = second_prefix(secs);
        LAST.set((secs, prefix));
    }
    let mut stamp = [0u8; PREFIX + 10];
    stamp[..PREFIX].copy_from_slice(&prefix);
    // The fraction's nine digits: the last one, then four pairs from the right.
    let mut v = frac / 10;
    stamp[PREFIX + 8] = b'0' + (frac % 10) as u8;
    for at in [PREFIX + 6, PREFIX + 4, PREFIX + 2, PREFIX] {
        let d = (v % 100) as usize * 2;
        v /= 100;
        stamp[at..at + 2].copy_from_slice(&PAIRS[d..d + 2]);
    }
    stamp[PREFIX + 9] = b'Z';
    out.extend_from_slice(&stamp);
}

/// `YYYY-MM-DDTHH:MM:SS.` of second `secs`, from the formatter itself.
#[cold]
fn second_prefix(secs: i64) -> [u8; PREFIX] {
    let mut full = Vec::with_capacity(PREFIX + 10);
    // `secs * 10^9` is `ns` less its fraction, so it cannot overflow.
    utc::push_rfc3339_nanos_bytes(&mut full, secs * 1_000_000_000);
    let mut prefix = [0u8; PREFIX];
    prefix.copy_from_slice(&full[..PREFIX]);
    prefix
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn formatter(ns: i64) -> Vec<u8> {
        let mut out = Vec::new();
        utc::push_rfc3339_nanos_bytes(&mut out, ns);
        out
    }

    #[test]
    fn known_stamps() {
        for (ns, text) in [
            (0, "1970-01-01T00:00:00.000000000Z"),
            (1_784_714_812_123_456_789, "2026-07-22T10:06:52.123456789Z"),
            (1_784_714_812_000_000_042, "2026-07-22T10:06:52.000000042Z"),
            (-1, "1969-12-31T23:59:59.999999999Z"),
        ] {
            let mut out = b"x".to_vec();
            push_nanos(&mut out, ns);
            assert_eq!(out, [b"x", text.as_bytes()].concat());
        }
    }

    proptest! {
        /// Runs of objects within a second and jumps between seconds (the memo kept and
        /// replaced), anywhere in the range the formatter handles.
        #[test]
        fn the_memo_writes_what_the_formatter_writes(start in -2_000_000_000_000_000_000i64..i64::MAX - 200_000_000_000, steps in proptest::collection::vec(0i64..3_000_000_000, 1..40)) {
            let mut ns = start;
            for step in steps {
                let mut out = Vec::new();
                push_nanos(&mut out, ns);
                prop_assert_eq!(&out, &formatter(ns), "{}", ns);
                ns = ns.saturating_add(step);
            }
        }
    }
}
