//! The handshake's messages (mini-protocol 0, reference §4): version proposals, acceptance
//! and refusal, with `ForwardingV_1`'s version data (the network magic).

use minicbor::data::Type;
use minicbor::Decoder;

use super::{build, envelope, invalid, read_list, text, Result};

/// The forwarding protocol version tracerd speaks (`ForwardingV_1`).
pub const FORWARDING_V1: u64 = 1;

/// The version data of `ForwardingV_1`: the network magic, when it decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionData {
    /// A network magic.
    Magic(u32),
    /// Not an unsigned integer of at most 32 bits.
    Undecodable,
}

/// Why a handshake was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No common version; the refusing side's versions.
    VersionMismatch(Vec<u64>),
    /// The version data could not be decoded.
    DecodeError(u64, String),
    /// The version data was not acceptable (wrong magic).
    Refused(u64, String),
}

/// A handshake message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handshake {
    /// `MsgProposeVersions`: known versions (1 and 2) with their data; unknown ones skipped.
    Propose(Vec<(u64, VersionData)>),
    /// `MsgAcceptVersion`.
    Accept(u64, VersionData),
    /// `MsgRefuse`.
    Refuse(Refusal),
    /// `MsgQueryReply` (never used by forwarding).
    QueryReply,
}

fn version_data(d: &mut Decoder<'_>) -> Result<VersionData> {
    if d.datatype()? == Type::U8
        || d.datatype()? == Type::U16
        || d.datatype()? == Type::U32
        || d.datatype()? == Type::U64
    {
        let n = d.u64()?;
        return Ok(u32::try_from(n).map_or(VersionData::Undecodable, VersionData::Magic));
    }
    d.skip()?;
    Ok(VersionData::Undecodable)
}

fn version_table(d: &mut Decoder<'_>) -> Result<Vec<(u64, VersionData)>> {
    let Some(n) = d.map()? else {
        return invalid("version table: expected a definite map");
    };
    let mut out = Vec::new();
    for _ in 0..n {
        let key = match d.datatype()? {
            Type::U8 | Type::U16 | Type::U32 | Type::U64 => Some(d.u64()?),
            _ => {
                d.skip()?;
                None
            }
        };
        match key {
            Some(v @ (1 | 2)) => out.push((v, version_data(d)?)),
            _ => d.skip()?,
        }
    }
    Ok(out)
}

/// Decodes a handshake message.
pub fn decode_handshake(bytes: &[u8]) -> Result<Handshake> {
    let mut d = Decoder::new(bytes);
    let (len, tag) = envelope(&mut d)?;
    match (tag, len) {
        (0, 2) => Ok(Handshake::Propose(version_table(&mut d)?)),
        (1, 3) => {
            let v = d.u64()?;
            Ok(Handshake::Accept(v, version_data(&mut d)?))
        }
        (2, 2) => {
            let (len, reason) = envelope(&mut d)?;
            match (reason, len) {
                (0, 2) => Ok(Handshake::Refuse(Refusal::VersionMismatch(read_list(
                    &mut d,
                    |d| Ok(d.u64()?),
                )?))),
                (1, 3) => {
                    let v = d.u64()?;
                    Ok(Handshake::Refuse(Refusal::DecodeError(v, text(&mut d)?)))
                }
                (2, 3) => {
                    let v = d.u64()?;
                    Ok(Handshake::Refuse(Refusal::Refused(v, text(&mut d)?)))
                }
                _ => invalid(format!("refuse reason [{reason}, ..] of length {len}")),
            }
        }
        (3, 2) => Ok(Handshake::QueryReply),
        _ => invalid(format!("handshake message [{tag}, ..] of length {len}")),
    }
}

/// `MsgProposeVersions {1: magic}`.
pub fn encode_propose(magic: u32) -> Vec<u8> {
    build(|e| {
        e.array(2)?.u8(0)?.map(1)?.u64(FORWARDING_V1)?.u32(magic)?;
        Ok(())
    })
}

/// `MsgAcceptVersion version magic`.
pub fn encode_accept(version: u64, magic: u32) -> Vec<u8> {
    build(|e| {
        e.array(3)?.u8(1)?.u64(version)?.u32(magic)?;
        Ok(())
    })
}

/// `MsgRefuse reason`.
pub fn encode_refuse(reason: &Refusal) -> Vec<u8> {
    build(|e| {
        e.array(2)?.u8(2)?;
        match reason {
            Refusal::VersionMismatch(versions) => {
                e.array(2)?.u8(0)?.array(versions.len() as u64)?;
                for v in versions {
                    e.u64(*v)?;
                }
            }
            Refusal::DecodeError(v, text) => {
                e.array(3)?.u8(1)?.u64(*v)?.str(text)?;
            }
            Refusal::Refused(v, text) => {
                e.array(3)?.u8(2)?.u64(*v)?.str(text)?;
            }
        }
        Ok(())
    })
}

/// The refusal text of ouroboros-network 1.1.0.0 for a magic mismatch, local magic first.
pub fn mismatch_text(local: u32, remote: u32) -> String {
    let show = |m: u32| {
        format!("ForwardingVersionData {{networkMagic = NetworkMagic {{unNetworkMagic = {m}}}}}")
    };
    format!(
        "ForwardingVersionData mismatch: {} /= {}",
        show(local),
        show(remote)
    )
}
