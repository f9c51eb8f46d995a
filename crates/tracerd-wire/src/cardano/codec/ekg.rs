//! The EKG mini-protocol's messages (mini-protocol 1): metric requests and responses.

use minicbor::Decoder;

use super::{array_of, build, envelope, invalid, list, read_list, text, Result};

/// What metrics an EKG request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EkgRequest {
    /// `GetAllMetrics`.
    All,
    /// `GetMetrics names` (non-empty).
    Named(Vec<String>),
    /// `GetUpdatedMetrics`: changed since the previous response (ekg-forward ≥ 0.9).
    Updated,
}

/// An EKG metric value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EkgValue {
    /// `CounterValue`.
    Counter(i64),
    /// `GaugeValue`.
    Gauge(i64),
    /// `LabelValue`.
    Label(String),
}

/// A message from the acceptor on the EKG protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EkgAsk {
    /// `MsgReq`.
    Req(EkgRequest),
    /// `MsgDone`.
    Done,
}

/// `MsgReq request`.
pub fn encode_ekg_request(req: &EkgRequest) -> Vec<u8> {
    build(|e| {
        e.array(2)?.u8(0)?;
        match req {
            EkgRequest::All => {
                e.array(1)?.u8(0)?;
            }
            EkgRequest::Named(names) => {
                e.array(2)?.u8(1)?;
                list(e, names, |e, n| e.str(n).map(|_| ()))?;
            }
            EkgRequest::Updated => {
                e.array(1)?.u8(2)?;
            }
        }
        Ok(())
    })
}

/// `MsgDone` of the EKG protocol.
pub fn encode_ekg_done() -> Vec<u8> {
    build(|e| {
        e.array(1)?.u8(1)?;
        Ok(())
    })
}

/// Decodes the acceptor's EKG message (forwarder side).
pub fn decode_ekg_ask(bytes: &[u8]) -> Result<EkgAsk> {
    let mut d = Decoder::new(bytes);
    match envelope(&mut d)? {
        (1, 1) => Ok(EkgAsk::Done),
        (2, 0) => {
            let (len, k) = envelope(&mut d)?;
            match (k, len) {
                (0, 1) => Ok(EkgAsk::Req(EkgRequest::All)),
                (2, 1) => Ok(EkgAsk::Req(EkgRequest::Updated)),
                (1, 2) => {
                    let names = read_list(&mut d, text)?;
                    if names.is_empty() {
                        return invalid("GetMetrics with no names");
                    }
                    Ok(EkgAsk::Req(EkgRequest::Named(names)))
                }
                _ => invalid(format!("EKG request [{k}, ..] of length {len}")),
            }
        }
        (len, tag) => invalid(format!("EKG message [{tag}, ..] of length {len}")),
    }
}

/// `MsgResp (ResponseMetrics metrics)`.
pub fn encode_ekg_response(metrics: &[(String, EkgValue)]) -> Vec<u8> {
    build(|e| {
        e.array(2)?.u8(1)?.array(2)?.u8(0)?;
        list(e, metrics, |e, (name, value)| {
            e.array(2)?.str(name)?;
            match value {
                EkgValue::Counter(n) => e.array(2)?.u8(0)?.i64(*n)?,
                EkgValue::Gauge(n) => e.array(2)?.u8(1)?.i64(*n)?,
                EkgValue::Label(t) => e.array(2)?.u8(2)?.str(t)?,
            };
            Ok(())
        })
    })
}

/// Decodes the forwarder's `MsgResp` (acceptor side).
pub fn decode_ekg_response(bytes: &[u8]) -> Result<Vec<(String, EkgValue)>> {
    let mut d = Decoder::new(bytes);
    match envelope(&mut d)? {
        (2, 1) => {}
        (len, tag) => return invalid(format!("EKG reply [{tag}, ..] of length {len}")),
    }
    match envelope(&mut d)? {
        (2, 0) => {}
        (len, tag) => return invalid(format!("EKG Response [{tag}, ..] of length {len}")),
    }
    read_list(&mut d, |d| {
        array_of(d, 2, "metric pair")?;
        let name = text(d)?;
        let (len, k) = envelope(d)?;
        let value = match (k, len) {
            (0, 2) => EkgValue::Counter(d.i64()?),
            (1, 2) => EkgValue::Gauge(d.i64()?),
            (2, 2) => EkgValue::Label(text(d)?),
            _ => return invalid(format!("MetricValue [{k}, ..] of length {len}")),
        };
        Ok((name, value))
    })
}
