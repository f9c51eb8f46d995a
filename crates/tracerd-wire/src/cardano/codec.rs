//! CBOR encodings of the four forwarding mini-protocols (reference §4–§8): pure functions
//! from messages to bytes and back, both for the acceptor (what tracerd sends and decodes)
//! and for the forwarder (what a node sends and decodes, used by the simulated node).
//!
//! Encoders write exactly what the Haskell side writes (shortest integer heads, definite
//! envelopes, serialise-lists as `80` or `9f … ff`, lazy byte strings as `5f … ff`); decoders
//! are lenient where the Haskell decoders are (definite or indefinite lists, any integer head
//! width, any number of byte-string chunks).
//!
//! One file per mini-protocol's messages: `handshake` (protocol 0), `ekg` (1), `trace` (2),
//! `datapoint` (3); this file holds [`CborError`] and the CBOR helpers they share, and
//! re-exports every message type and function, so callers name them `codec::…`.

use std::convert::Infallible;

use minicbor::data::Type;
use minicbor::{Decoder, Encoder};

mod datapoint;
mod ekg;
mod handshake;
mod trace;

pub use datapoint::{
    decode_data_point_ask, decode_data_point_reply, encode_data_point_done,
    encode_data_point_reply, encode_data_point_request, DataPointAsk, DataPointValue,
};
pub use ekg::{
    decode_ekg_ask, decode_ekg_response, encode_ekg_done, encode_ekg_request, encode_ekg_response,
    EkgAsk, EkgRequest, EkgValue,
};
pub use handshake::{
    decode_handshake, encode_accept, encode_propose, encode_refuse, mismatch_text, Handshake,
    Refusal, VersionData, FORWARDING_V1,
};
/// The namespace joiner, for the conformance tests.
#[cfg(test)]
pub(crate) use trace::namespace;
pub use trace::{
    decode_trace_ask, decode_trace_reply, decode_trace_reply_shared, decode_trace_reply_to,
    encode_trace_done, encode_trace_object, encode_trace_reply, encode_trace_request, TraceAsk,
    TraceFields, REPLY_EMPTY, REPLY_END, REPLY_START,
};

/// A message that is well-formed CBOR but not what the protocol allows here.
#[derive(Debug, thiserror::Error)]
pub enum CborError {
    /// The CBOR does not have the expected shape (type, length, range).
    #[error("unexpected CBOR: {0}")]
    Cbor(#[from] minicbor::decode::Error),
    /// A well-typed message that is invalid in its place.
    #[error("{0}")]
    Invalid(String),
}

impl CborError {
    /// A bounded label for `decode_errors`.
    pub fn kind(&self) -> &'static str {
        match self {
            CborError::Cbor(_) => "cbor_unexpected",
            CborError::Invalid(_) => "message_invalid",
        }
    }
}

type Result<T> = std::result::Result<T, CborError>;
type Enc<'a> = Encoder<&'a mut Vec<u8>>;
type EncResult = std::result::Result<(), minicbor::encode::Error<Infallible>>;

fn invalid<T>(text: impl Into<String>) -> Result<T> {
    Err(CborError::Invalid(text.into()))
}

/// Runs an encoding into a fresh buffer. Writing to a `Vec` cannot fail.
fn build(f: impl FnOnce(&mut Enc<'_>) -> EncResult) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut e = Encoder::new(&mut buf);
    match f(&mut e) {
        Ok(()) => buf,
        Err(e) => unreachable!("writing CBOR to a Vec cannot fail: {e}"),
    }
}

/// A serialise-list: `80` when empty, else an indefinite array.
fn list<T>(
    e: &mut Enc<'_>,
    items: &[T],
    mut f: impl FnMut(&mut Enc<'_>, &T) -> EncResult,
) -> EncResult {
    if items.is_empty() {
        e.array(0)?;
        return Ok(());
    }
    e.begin_array()?;
    for item in items {
        f(e, item)?;
    }
    e.end()?;
    Ok(())
}

/// Reads a definite array of exactly `n` items.
fn array_of(d: &mut Decoder<'_>, n: u64, what: &str) -> Result<()> {
    match d.array()? {
        Some(len) if len == n => Ok(()),
        other => invalid(format!("{what}: expected an array of {n}, got {other:?}")),
    }
}

/// Reads an envelope: a definite array and its integer tag; returns (length, tag).
fn envelope(d: &mut Decoder<'_>) -> Result<(u64, u64)> {
    match d.array()? {
        Some(len) if len >= 1 => Ok((len, d.u64()?)),
        other => invalid(format!(
            "message envelope: expected a definite array, got {other:?}"
        )),
    }
}

/// Reads a list, definite or indefinite.
fn read_list<'b, T>(
    d: &mut Decoder<'b>,
    f: impl FnMut(&mut Decoder<'b>) -> Result<T>,
) -> Result<Vec<T>> {
    read_list_sized(d, |_| 0, f)
}

/// Reads a list, definite or indefinite, into a `Vec` of `capacity(Some(n))` items for a
/// definite list of `n`, `capacity(None)` for an indefinite one (the caller bounds both by
/// what the bytes can hold, so a forged length reserves nothing it could not fill).
fn read_list_sized<'b, T>(
    d: &mut Decoder<'b>,
    capacity: impl FnOnce(Option<u64>) -> usize,
    mut f: impl FnMut(&mut Decoder<'b>) -> Result<T>,
) -> Result<Vec<T>> {
    let len = d.array()?;
    let mut out = Vec::with_capacity(capacity(len));
    match len {
        Some(n) => {
            for _ in 0..n {
                out.push(f(d)?);
            }
        }
        None => loop {
            if d.datatype()? == Type::Break {
                d.set_position(d.position() + 1);
                break;
            }
            out.push(f(d)?);
        },
    }
    Ok(out)
}

/// Reads a text string, definite or indefinite; a definite one into a `String` of exactly its
/// length (a model `Text` takes it over without a second allocation).
fn text(d: &mut Decoder<'_>) -> Result<String> {
    let mut chunks = d.str_iter()?;
    let mut out = match chunks.next() {
        Some(chunk) => chunk?.to_owned(),
        None => return Ok(String::new()),
    };
    for chunk in chunks {
        out.push_str(chunk?);
    }
    Ok(out)
}

/// Reads a byte string, indefinite (as the node sends it) or definite.
fn byte_string(d: &mut Decoder<'_>) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for chunk in d.bytes_iter()? {
        out.extend_from_slice(chunk?);
    }
    Ok(out)
}

/// Reads a `Maybe a`: `[]` or `[a]`.
fn maybe<'b, T>(
    d: &mut Decoder<'b>,
    f: impl FnOnce(&mut Decoder<'b>) -> Result<T>,
) -> Result<Option<T>> {
    match d.array()? {
        Some(0) => Ok(None),
        Some(1) => Ok(Some(f(d)?)),
        other => invalid(format!("Maybe: expected an array of 0 or 1, got {other:?}")),
    }
}

/// Reads a generic-derived nullary constructor `[k]`.
fn enum_index(d: &mut Decoder<'_>, what: &str) -> Result<u8> {
    array_of(d, 1, what)?;
    Ok(d.u8()?)
}
