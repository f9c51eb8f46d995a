//! The forwarding handshake (mini-protocol 0, reference §4): the responder's pure decision
//! ([`respond_to`]), the initiator's check of the answer ([`check_answer`]), and the thin
//! async shells that run them over a framed connection.

use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::Framed;

use super::codec::{
    self, decode_handshake, encode_propose, CborError, Handshake, Refusal, VersionData,
    FORWARDING_V1,
};
use super::mux::{send, Message, MuxCodec, MuxError, HANDSHAKE};

/// The outcome of a handshake, seen from tracerd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Version 1 agreed with equal magics.
    Accepted,
    /// tracerd refused the peer (as responder); the label says why.
    RefusedPeer(&'static str, String),
    /// The peer refused tracerd (as initiator).
    RefusedByPeer(&'static str, String),
}

/// Why a handshake failed below the protocol level.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// Bad bytes.
    #[error(transparent)]
    Mux(#[from] MuxError),
    /// Bad CBOR message.
    #[error("bad handshake message: {0}")]
    Codec(#[from] CborError),
    /// The peer closed the connection during the handshake.
    #[error("connection closed during the handshake")]
    Closed,
    /// The peer sent something other than the expected handshake message.
    #[error("unexpected handshake message: {0}")]
    Unexpected(String),
}

/// The responder's answer to a proposal: the message to send and the outcome.
pub fn respond_to(proposal: &Handshake, magic: u32) -> (Vec<u8>, Outcome) {
    let Handshake::Propose(versions) = proposal else {
        let text = "expected MsgProposeVersions".to_string();
        let refusal = Refusal::VersionMismatch(vec![FORWARDING_V1]);
        return (
            codec::encode_refuse(&refusal),
            Outcome::RefusedPeer("handshake_unexpected", text),
        );
    };
    // We know version 1 only, so the greatest common version is 1 or none.
    match versions.iter().find(|(v, _)| *v == FORWARDING_V1) {
        None => {
            let offered: Vec<u64> = versions.iter().map(|(v, _)| *v).collect();
            (
                codec::encode_refuse(&Refusal::VersionMismatch(vec![FORWARDING_V1])),
                Outcome::RefusedPeer(
                    "unsupported_version",
                    format!(
                        "no common forwarding version: node offers {offered:?} (known ones only), tracerd speaks [1]"
                    ),
                ),
            )
        }
        Some((_, VersionData::Undecodable)) => {
            let text = "network magic is not a 32-bit unsigned integer".to_string();
            (
                codec::encode_refuse(&Refusal::DecodeError(FORWARDING_V1, text.clone())),
                Outcome::RefusedPeer("handshake_undecodable", text),
            )
        }
        Some((_, VersionData::Magic(m))) if *m == magic => (
            codec::encode_accept(FORWARDING_V1, magic),
            Outcome::Accepted,
        ),
        Some((_, VersionData::Magic(m))) => (
            codec::encode_refuse(&Refusal::Refused(
                FORWARDING_V1,
                codec::mismatch_text(magic, *m),
            )),
            Outcome::RefusedPeer(
                "wrong_magic",
                format!("node's network magic {m} does not match tracerd's networkMagic {magic}"),
            ),
        ),
    }
}

/// The initiator's reading of the responder's answer.
pub fn check_answer(answer: &Handshake, magic: u32) -> Result<Outcome, HandshakeError> {
    match answer {
        Handshake::Accept(v, VersionData::Magic(m)) if *v == FORWARDING_V1 && *m == magic => {
            Ok(Outcome::Accepted)
        }
        Handshake::Accept(v, data) => Err(HandshakeError::Unexpected(format!(
            "node accepted version {v} with {data:?}, tracerd proposed 1 with magic {magic}"
        ))),
        Handshake::Refuse(Refusal::Refused(_, text)) => Ok(Outcome::RefusedByPeer(
            "wrong_magic",
            format!("node refused tracerd's networkMagic {magic}: {text}"),
        )),
        Handshake::Refuse(Refusal::VersionMismatch(vs)) => Ok(Outcome::RefusedByPeer(
            "unsupported_version",
            format!("node speaks forwarding versions {vs:?}, tracerd proposed [1]"),
        )),
        Handshake::Refuse(Refusal::DecodeError(_, text)) => Ok(Outcome::RefusedByPeer(
            "handshake_undecodable",
            format!("node could not decode tracerd's proposal: {text}"),
        )),
        other => Err(HandshakeError::Unexpected(format!("{other:?}"))),
    }
}

async fn recv_handshake<S>(framed: &mut Framed<S, MuxCodec>) -> Result<Handshake, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match framed.next().await {
        None => Err(HandshakeError::Closed),
        Some(Err(e)) => Err(e.into()),
        Some(Ok(Message { protocol, payload })) if protocol == HANDSHAKE => {
            Ok(decode_handshake(&payload)?)
        }
        Some(Ok(Message { protocol, .. })) => Err(HandshakeError::Unexpected(format!(
            "data on mini-protocol {protocol} before the handshake finished"
        ))),
    }
}

/// Runs the responder's side: waits for the proposal, answers it.
pub async fn respond<S>(
    framed: &mut Framed<S, MuxCodec>,
    magic: u32,
) -> Result<Outcome, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let proposal = recv_handshake(framed).await?;
    let (answer, outcome) = respond_to(&proposal, magic);
    let sent = send(framed, HANDSHAKE, answer).await;
    match outcome {
        // A refused peer may already be gone; the refusal is best effort.
        Outcome::Accepted => sent?,
        _ => drop(sent),
    }
    framed.codec_mut().end_handshake();
    Ok(outcome)
}

/// Runs the initiator's side: proposes version 1 with `magic`, reads the answer.
pub async fn propose<S>(
    framed: &mut Framed<S, MuxCodec>,
    magic: u32,
) -> Result<Outcome, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    send(framed, HANDSHAKE, encode_propose(magic)).await?;
    let answer = recv_handshake(framed).await?;
    framed.codec_mut().end_handshake();
    check_answer(&answer, magic)
}

impl HandshakeError {
    /// A bounded label for counting.
    pub fn kind(&self) -> &'static str {
        match self {
            HandshakeError::Mux(e) => e.kind(),
            HandshakeError::Codec(_) => "handshake_invalid",
            HandshakeError::Closed => "peer_closed",
            HandshakeError::Unexpected(_) => "handshake_unexpected",
        }
    }
}
