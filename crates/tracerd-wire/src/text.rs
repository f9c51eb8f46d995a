//! [`Text`]: an immutable UTF-8 string that can borrow the frame it was decoded from.
//!
//! A trace object's strings (namespace, host name, thread id, machine and human text) are
//! slices of the frame the session read: decoding checks each slice's UTF-8 once and keeps
//! a reference-counted view of the frame (`bytes::Bytes`), so decoding a batch allocates
//! nothing per string and a clone costs one atomic increment. Built from a `String`
//! (a forwarder, the Cardano codec, tests) it owns that `String`'s buffer without a copy.
//!
//! The UTF-8 invariant lives in `bytestring::ByteString` (the workspace forbids `unsafe`,
//! and a `Deref<Target = str>` over bytes without re-checking needs it); this newtype keeps
//! that crate out of every public signature and adds what the model's readers need.
//!
//! A `Text` sliced from a frame keeps the whole frame's allocation alive: whatever keeps a
//! trace object beyond its write (the live view's tap, re-forwarding queues, alert state)
//! stores [`Text::detached`] copies, so an old object never pins a read buffer.

use std::borrow::{Borrow, Cow};
use std::fmt;
use std::ops::Deref;

use bytes::Bytes;
use bytestring::ByteString;

/// An immutable UTF-8 string over shared bytes; derefs to `&str`.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Text(ByteString);

impl Text {
    /// The empty text.
    pub const fn new() -> Text {
        Text(ByteString::new())
    }

    /// A text over a static string (no allocation).
    pub const fn from_static(s: &'static str) -> Text {
        Text(ByteString::from_static(s))
    }

    /// The bytes as text, checked once; the error says where the UTF-8 breaks.
    pub fn from_utf8(bytes: Bytes) -> Result<Text, std::str::Utf8Error> {
        ByteString::try_from(bytes).map(Text)
    }

    /// The text as a `&str`.
    #[inline]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The shared bytes underneath (for `writev` straight from the frame).
    #[inline]
    pub fn shared_bytes(&self) -> &Bytes {
        self.0.as_bytes()
    }

    /// The part `range` (byte offsets) of this text, sharing its bytes: no copy, no UTF-8
    /// check; `None` when the range is out of bounds or not on character boundaries. (How a
    /// producer cuts many objects' texts out of one buffer: one allocation for all of them.)
    pub fn slice(&self, range: std::ops::Range<usize>) -> Option<Text> {
        let part = self.as_str().get(range)?;
        Some(Text(self.0.slice_ref(part)))
    }

    /// A copy in an allocation of its own, for a text kept beyond its batch (a slice of a
    /// frame would keep the whole frame alive).
    pub fn detached(&self) -> Text {
        Text::from(self.as_str())
    }

    /// The text as a `String`; reuses the buffer when this `Text` owns it alone.
    pub fn into_string(self) -> String {
        String::from(self.0)
    }
}

impl Deref for Text {
    type Target = str;

    #[inline]
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        self
    }
}

impl AsRef<[u8]> for Text {
    fn as_ref(&self) -> &[u8] {
        self.as_str().as_bytes()
    }
}

impl Borrow<str> for Text {
    fn borrow(&self) -> &str {
        self
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

impl From<String> for Text {
    #[inline]
    fn from(s: String) -> Text {
        Text(ByteString::from(s))
    }
}

impl From<&String> for Text {
    fn from(s: &String) -> Text {
        Text::from(s.as_str())
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Text {
        Text(ByteString::from(s))
    }
}

impl From<Box<str>> for Text {
    fn from(s: Box<str>) -> Text {
        Text(ByteString::from(s))
    }
}

impl From<Cow<'_, str>> for Text {
    fn from(s: Cow<'_, str>) -> Text {
        match s {
            Cow::Borrowed(s) => Text::from(s),
            Cow::Owned(s) => Text::from(s),
        }
    }
}

impl From<Text> for String {
    fn from(t: Text) -> String {
        t.into_string()
    }
}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for Text {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other.as_str()
    }
}

impl PartialEq<Text> for str {
    fn eq(&self, other: &Text) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<Text> for &str {
    fn eq(&self, other: &Text) -> bool {
        *self == other.as_str()
    }
}

impl PartialEq<Text> for String {
    fn eq(&self, other: &Text) -> bool {
        self.as_str() == other.as_str()
    }
}

impl PartialEq<Cow<'_, str>> for Text {
    fn eq(&self, other: &Cow<'_, str>) -> bool {
        self.as_str() == &**other
    }
}

impl PartialEq<Text> for Cow<'_, str> {
    fn eq(&self, other: &Text) -> bool {
        &**self == other.as_str()
    }
}

impl serde::Serialize for Text {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Text {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Text, D::Error> {
        String::deserialize(d).map(Text::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slice_of_a_frame_is_the_frame_not_a_copy() {
        let frame = Bytes::from_static(b"\x0aChainDB.Add\x12");
        let t = Text::from_utf8(frame.slice(1..12)).unwrap();
        assert_eq!(t, "ChainDB.Add");
        assert_eq!(t.shared_bytes().as_ptr(), frame[1..].as_ptr());
        let d = t.detached();
        assert_eq!(d, t);
        assert_ne!(d.shared_bytes().as_ptr(), frame[1..].as_ptr());
    }

    #[test]
    fn slices_share_the_buffer_and_refuse_bad_ranges() {
        let whole = Text::from(String::from("ab\u{e9}cd"));
        let part = whole.slice(1..4).unwrap();
        assert_eq!(part, "b\u{e9}");
        assert_eq!(part.as_ptr(), whole[1..].as_ptr());
        assert_eq!(whole.slice(0..0).unwrap(), "");
        // Inside the two-byte 'é', past the end.
        assert_eq!(whole.slice(3..5), None);
        assert_eq!(whole.slice(4..9), None);
    }

    #[test]
    fn invalid_utf8_is_refused_with_its_position() {
        let err = Text::from_utf8(Bytes::from_static(b"ok\xffno")).unwrap_err();
        assert_eq!(err.valid_up_to(), 2);
    }

    #[test]
    fn owned_strings_move_in_and_out_without_a_copy() {
        let s = String::from("host-1");
        let ptr = s.as_ptr();
        let t = Text::from(s);
        assert_eq!(t.as_ptr(), ptr);
        let back = t.into_string();
        assert_eq!(back.as_ptr(), ptr);
        assert_eq!(back, "host-1");
    }

    #[test]
    fn compares_hashes_and_deserializes_as_a_str() {
        use std::collections::HashSet;
        let t = Text::from("a\"b");
        let owned = String::from("a\"b");
        assert_eq!(t, "a\"b");
        assert_eq!(t, owned);
        assert_eq!(owned, t);
        let set: HashSet<Text> = [t.clone()].into();
        assert!(set.contains("a\"b"));
        round_trip_through_serde(&t);
        assert_eq!(format!("{t:?}"), format!("{:?}", "a\"b"));
    }

    /// Deserialized from a `str` (serde's own value deserializer, no JSON dependency).
    fn round_trip_through_serde(t: &Text) {
        use serde::de::{value::StrDeserializer, IntoDeserializer};
        let de: StrDeserializer<'_, serde::de::value::Error> = t.as_str().into_deserializer();
        let back = <Text as serde::Deserialize>::deserialize(de).unwrap();
        assert_eq!(&back, t);
    }
}
