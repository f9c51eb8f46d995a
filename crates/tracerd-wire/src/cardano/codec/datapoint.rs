//! The data-point mini-protocol's messages (mini-protocol 3): named requests and JSON replies.

use minicbor::Decoder;

use super::{
    array_of, build, byte_string, envelope, invalid, list, maybe, read_list, text, Result,
};

/// A message from the acceptor on the data-point protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataPointAsk {
    /// `MsgDataPointsRequest names`.
    Request(Vec<String>),
    /// `MsgDone`.
    Done,
}

/// One entry of a data-point reply: name and JSON bytes, if the node has it.
pub type DataPointValue = (String, Option<Vec<u8>>);

/// `MsgDataPointsRequest names`.
pub fn encode_data_point_request(names: &[String]) -> Vec<u8> {
    build(|e| {
        e.array(2)?.u8(1)?;
        list(e, names, |e, n| e.str(n).map(|_| ()))
    })
}

/// `MsgDone` of the data-point protocol.
pub fn encode_data_point_done() -> Vec<u8> {
    build(|e| {
        e.array(1)?.u8(2)?;
        Ok(())
    })
}

/// Decodes the acceptor's data-point message (forwarder side).
pub fn decode_data_point_ask(bytes: &[u8]) -> Result<DataPointAsk> {
    let mut d = Decoder::new(bytes);
    match envelope(&mut d)? {
        (2, 1) => Ok(DataPointAsk::Request(read_list(&mut d, text)?)),
        (1, 2) => Ok(DataPointAsk::Done),
        (len, tag) => invalid(format!("data-point message [{tag}, ..] of length {len}")),
    }
}

/// `MsgDataPointsReply values`, values as indefinite byte strings of one chunk.
pub fn encode_data_point_reply(values: &[DataPointValue]) -> Vec<u8> {
    build(|e| {
        e.array(2)?.u8(3)?;
        list(e, values, |e, (name, value)| {
            e.array(2)?.str(name)?;
            match value {
                Some(v) => {
                    e.array(1)?.begin_bytes()?;
                    if !v.is_empty() {
                        e.bytes(v)?;
                    }
                    e.end()?;
                }
                None => {
                    e.array(0)?;
                }
            }
            Ok(())
        })
    })
}

/// Decodes the forwarder's `MsgDataPointsReply` (acceptor side).
pub fn decode_data_point_reply(bytes: &[u8]) -> Result<Vec<DataPointValue>> {
    let mut d = Decoder::new(bytes);
    match envelope(&mut d)? {
        (2, 3) => {}
        (len, tag) => return invalid(format!("data-point reply [{tag}, ..] of length {len}")),
    }
    read_list(&mut d, |d| {
        array_of(d, 2, "data point pair")?;
        let name = text(d)?;
        Ok((name, maybe(d, byte_string)?))
    })
}
