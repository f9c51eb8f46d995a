//! The native wire protocol: frames (4-byte big-endian length + one protobuf message) and the
//! conversion between the generated prost types and the domain model.
//!
//! This is the only module that names prost types; `proto/tracerd/v1/tracerd.proto` is the
//! source of truth for the wire format.

use bytes::{Buf, BytesMut};
use prost::Message;
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

use crate::model::{
    DataPoint, DetailLevel, MachineForm, MetricValue, MetricsUpdate, Severity, Text, TraceBatch,
    TraceObject,
};
use crate::tracing_config::TracingConfig;

mod batch;
mod config;

/// The generated prost types.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/tracerd.v1.rs"));
}

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// Every version this build speaks.
pub const SUPPORTED_VERSIONS: &[u32] = &[PROTOCOL_VERSION];
/// Size of the frame length prefix.
pub const LENGTH_PREFIX_BYTES: usize = 4;

/// A node's opening message.
#[derive(Debug, Clone, PartialEq)]
pub struct Hello {
    /// Versions the node speaks.
    pub versions: Vec<u32>,
    /// The node's network magic.
    pub network_magic: u32,
    /// The node's name, as sent.
    pub node_name: String,
    /// Software name, version, commit.
    pub software: Software,
    /// Optional features the node supports (e.g. [`crate::tracing_config::CAPABILITY`]).
    pub capabilities: Vec<String>,
    /// The node's identity token (`tracerd.native.identities`); empty: none.
    pub token: String,
    /// The ids of the tracers the node's objects passed through, nearest last, when a
    /// tracerd re-forwards them (`tracerd.forward`); empty from a node.
    pub tracers: Vec<String>,
}

/// What a node runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Software {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Commit.
    pub commit: String,
}

/// Everything a node sends.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeMessage {
    /// Handshake (boxed: the largest message, and sent once, so every other message stays small).
    Hello(Box<Hello>),
    /// Trace objects.
    Traces(TraceBatch),
    /// Metrics.
    Metrics(MetricsUpdate),
    /// Data points.
    DataPoints(Vec<DataPoint>),
    /// Round-trip probe.
    Ping(u64),
    /// Answer to tracerd's probe.
    Pong(u64),
    /// The node's tracing configuration in force (capability `tracing-config.v1`).
    TracingConfig(TracingConfigReport),
}

/// A node's report of its tracing configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingConfigReport {
    /// The `SetTracingConfig` answered; 0: unsolicited.
    pub request_id: u64,
    /// The configuration in force.
    pub effective: TracingConfig,
    /// Why the requested configuration was not applied (`None`: applied).
    pub refused: Option<String>,
    /// When the configuration took effect, nanoseconds since the Unix epoch.
    pub timestamp_ns: i64,
}

/// Why tracerd refuses a handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefuseReason {
    /// The node's network magic differs from tracerd's.
    WrongMagic,
    /// No common protocol version.
    UnsupportedVersion,
    /// The node name is unusable.
    NameRejected,
    /// The first frame was not a Hello.
    NoHello,
    /// tracerd cannot keep the node's logs now (directory, disk); the message says why.
    Unavailable,
    /// A re-forwarding loop (`Hello.tracers` holds tracerd's own id); the message says which.
    Loop,
}

/// Everything tracerd sends.
#[derive(Debug, Clone, PartialEq)]
pub enum TracerMessage {
    /// Handshake accepted.
    Accept {
        /// Chosen version.
        version: u32,
        /// Name the node is filed under.
        node_name: String,
        /// Highest sequence number already persisted for that name.
        persisted_seq: u64,
        /// Largest accepted frame.
        max_frame_bytes: u32,
    },
    /// Handshake refused; the connection closes.
    Refuse {
        /// Why.
        reason: RefuseReason,
        /// Human-readable explanation.
        message: String,
    },
    /// Everything up to this sequence number is persisted.
    Ack(u64),
    /// Round-trip probe.
    Ping(u64),
    /// Answer to the node's probe.
    Pong(u64),
    /// Replace the node's tracing configuration (only to a node with `tracing-config.v1`).
    SetTracingConfig {
        /// Non-zero; echoed by the node's report.
        request_id: u64,
        /// The new configuration.
        config: TracingConfig,
    },
}

/// Why bytes could not be turned into a message.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix announces more than the limit; nothing was allocated for it.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// Announced length.
        len: u64,
        /// Limit.
        max: usize,
    },
    /// The frame is not a valid protobuf message.
    #[error("malformed protobuf message")]
    Protobuf(#[from] prost::DecodeError),
    /// The message is valid protobuf but not a valid protocol message.
    #[error("invalid message: {0}")]
    Invalid(String),
    /// A `TraceBatch` frame holds more trace objects than tracerd decodes from one frame;
    /// counted before anything is decoded.
    #[error("trace batch of {count} objects exceeds the limit of {max} objects per frame")]
    TooManyObjects {
        /// Objects in the frame (counted up to `max + 1`).
        count: usize,
        /// Limit.
        max: usize,
    },
    /// The stream ended inside a frame.
    #[error("connection closed in the middle of a frame ({0} bytes buffered)")]
    Truncated(usize),
    /// Socket error.
    #[error("i/o error")]
    Io(#[from] std::io::Error),
}

impl FrameError {
    /// A short, bounded label for counting this error.
    pub fn kind(&self) -> &'static str {
        match self {
            FrameError::FrameTooLarge { .. } => "frame_too_large",
            FrameError::Protobuf(_) => "malformed_protobuf",
            FrameError::Invalid(_) => "invalid_message",
            FrameError::TooManyObjects { .. } => "too_many_objects",
            FrameError::Truncated(_) => "truncated_frame",
            FrameError::Io(_) => "io",
        }
    }
}

/// Framing shared by both directions: a bounded `LengthDelimitedCodec` with a check of the
/// announced length before anything is reserved.
#[derive(Debug)]
struct Frames {
    inner: LengthDelimitedCodec,
    max: usize,
    /// The inner codec has consumed a length prefix and waits for the body.
    in_body: bool,
}

impl Frames {
    fn new(max_frame_bytes: usize) -> Frames {
        let inner = LengthDelimitedCodec::builder()
            .length_field_length(LENGTH_PREFIX_BYTES)
            .big_endian()
            .max_frame_length(max_frame_bytes)
            .new_codec();
        Frames {
            inner,
            max: max_frame_bytes,
            in_body: false,
        }
    }

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, FrameError> {
        let has_head = self.in_body || src.len() >= LENGTH_PREFIX_BYTES;
        if !self.in_body && has_head {
            // Check the announced length ourselves (the inner codec would reject it too, but
            // without saying how long the frame claimed to be).
            let len = u64::from((&src[..LENGTH_PREFIX_BYTES]).get_u32());
            if len > self.max as u64 {
                return Err(FrameError::FrameTooLarge { len, max: self.max });
            }
        }
        let frame = self.inner.decode(src)?;
        self.in_body = has_head && frame.is_none();
        Ok(frame)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, FrameError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => Err(FrameError::Truncated(src.len())),
        }
    }

    fn encode(&mut self, msg: &impl Message, dst: &mut BytesMut) {
        let len = msg.encoded_len();
        dst.reserve(LENGTH_PREFIX_BYTES + len);
        dst.extend_from_slice(&(len as u32).to_be_bytes());
        // Encoding into a BytesMut grows it as needed, so this cannot fail.
        let _ = msg.encode(dst);
    }
}

/// tracerd's side of a connection: decodes [`NodeMessage`]s, encodes [`TracerMessage`]s.
#[derive(Debug)]
pub struct TracerCodec {
    frames: Frames,
    max_objects: usize,
}

impl TracerCodec {
    /// A codec refusing frames longer than `max_frame_bytes`, with no limit on the objects
    /// of one frame beyond that.
    pub fn new(max_frame_bytes: usize) -> TracerCodec {
        TracerCodec::with_max_objects(max_frame_bytes, usize::MAX)
    }

    /// A codec refusing frames longer than `max_frame_bytes` and `TraceBatch` frames of more
    /// than `max_objects` objects (an empty object is 2 bytes on the wire but some hundred
    /// bytes decoded; the count is checked before decoding).
    pub fn with_max_objects(max_frame_bytes: usize, max_objects: usize) -> TracerCodec {
        TracerCodec {
            frames: Frames::new(max_frame_bytes),
            max_objects,
        }
    }

    fn message(&self, frame: BytesMut) -> Result<NodeMessage, FrameError> {
        let frame = frame.freeze();
        if let Some(count) = count_trace_objects(&frame, self.max_objects) {
            if count > self.max_objects {
                return Err(FrameError::TooManyObjects {
                    count,
                    max: self.max_objects,
                });
            }
        }
        if let Some(batch) = batch::decode(&frame) {
            return Ok(NodeMessage::Traces(batch));
        }
        decode_node_message_with_prost(&frame)
    }
}

/// A node message decoded by prost alone (what [`batch::decode`] must agree with).
fn decode_node_message_with_prost(frame: &[u8]) -> Result<NodeMessage, FrameError> {
    node_message_from_pb(pb::NodeMessage::decode(frame)?)
}

/// Reads one protobuf varint at `*at`, advancing it; `None` when malformed or cut.
fn varint(buf: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*at)?;
        *at += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// The fields of a protobuf message: (field number, wire type, value or LEN body).
fn fields(buf: &[u8]) -> impl Iterator<Item = (u64, u8, &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        if at >= buf.len() {
            return None;
        }
        let key = varint(buf, &mut at)?;
        let wire = (key & 7) as u8;
        let body = match wire {
            0 => {
                let start = at;
                varint(buf, &mut at)?;
                &buf[start..at]
            }
            1 | 5 => {
                let n = if wire == 1 { 8 } else { 4 };
                let body = buf.get(at..at.checked_add(n)?)?;
                at += n;
                body
            }
            2 => {
                let len = usize::try_from(varint(buf, &mut at)?).ok()?;
                let body = buf.get(at..at.checked_add(len)?)?;
                at += len;
                body
            }
            _ => return None,
        };
        Some((key >> 3, wire, body))
    })
}

/// How many `TraceBatch.objects` a `NodeMessage` frame holds, counting at most `max + 1`;
/// `None` when the frame is no `TraceBatch` (or is malformed: prost then says why). O(n)
/// over the frame's top-level fields, allocating nothing.
fn count_trace_objects(frame: &[u8], max: usize) -> Option<usize> {
    let mut count = None;
    // NodeMessage.traces = 2; a repeated occurrence of a message field merges, so count all.
    for (_, _, batch) in fields(frame).filter(|&(f, w, _)| f == 2 && w == 2) {
        let n = count.get_or_insert(0usize);
        for _ in fields(batch).filter(|&(f, w, _)| f == 2 && w == 2) {
            *n += 1;
            if *n > max {
                return count;
            }
        }
    }
    count
}

impl Decoder for TracerCodec {
    type Item = NodeMessage;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<NodeMessage>, FrameError> {
        match self.frames.decode(src)? {
            Some(frame) => Ok(Some(self.message(frame)?)),
            None => Ok(None),
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<NodeMessage>, FrameError> {
        match self.frames.decode_eof(src)? {
            Some(frame) => Ok(Some(self.message(frame)?)),
            None => Ok(None),
        }
    }
}

impl Encoder<TracerMessage> for TracerCodec {
    type Error = FrameError;

    fn encode(&mut self, item: TracerMessage, dst: &mut BytesMut) -> Result<(), FrameError> {
        self.frames.encode(&tracer_message_to_pb(item), dst);
        Ok(())
    }
}

/// A forwarder's side of a connection: encodes [`NodeMessage`]s, decodes [`TracerMessage`]s.
#[derive(Debug)]
pub struct ForwarderCodec(Frames);

impl ForwarderCodec {
    /// A codec refusing frames longer than `max_frame_bytes`.
    pub fn new(max_frame_bytes: usize) -> ForwarderCodec {
        ForwarderCodec(Frames::new(max_frame_bytes))
    }
}

impl Decoder for ForwarderCodec {
    type Item = TracerMessage;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<TracerMessage>, FrameError> {
        match self.0.decode(src)? {
            Some(frame) => Ok(Some(tracer_message_from_pb(pb::TracerMessage::decode(
                frame,
            )?)?)),
            None => Ok(None),
        }
    }
}

impl Encoder<NodeMessage> for ForwarderCodec {
    type Error = FrameError;

    fn encode(&mut self, item: NodeMessage, dst: &mut BytesMut) -> Result<(), FrameError> {
        self.0.encode(&node_message_to_pb(item), dst);
        Ok(())
    }
}

/// Encodes one node message as a complete frame (length prefix included).
pub fn encode_node_frame(msg: NodeMessage) -> BytesMut {
    let mut dst = BytesMut::new();
    Frames::new(usize::MAX).encode(&node_message_to_pb(msg), &mut dst);
    dst
}

pub(crate) fn invalid(msg: impl Into<String>) -> FrameError {
    FrameError::Invalid(msg.into())
}

fn severity_from_pb(v: i32) -> Result<Severity, FrameError> {
    let sev = pb::Severity::try_from(v).map_err(|_| invalid(format!("unknown severity {v}")))?;
    Ok(match sev {
        pb::Severity::Debug => Severity::Debug,
        pb::Severity::Info => Severity::Info,
        pb::Severity::Notice => Severity::Notice,
        pb::Severity::Warning => Severity::Warning,
        pb::Severity::Error => Severity::Error,
        pb::Severity::Critical => Severity::Critical,
        pb::Severity::Alert => Severity::Alert,
        pb::Severity::Emergency => Severity::Emergency,
    })
}

fn severity_to_pb(s: Severity) -> pb::Severity {
    match s {
        Severity::Debug => pb::Severity::Debug,
        Severity::Info => pb::Severity::Info,
        Severity::Notice => pb::Severity::Notice,
        Severity::Warning => pb::Severity::Warning,
        Severity::Error => pb::Severity::Error,
        Severity::Critical => pb::Severity::Critical,
        Severity::Alert => pb::Severity::Alert,
        Severity::Emergency => pb::Severity::Emergency,
    }
}

pub(crate) fn detail_from_pb(v: i32) -> Result<DetailLevel, FrameError> {
    let d =
        pb::DetailLevel::try_from(v).map_err(|_| invalid(format!("unknown detail level {v}")))?;
    Ok(match d {
        pb::DetailLevel::DetailMinimal => DetailLevel::Minimal,
        pb::DetailLevel::DetailNormal => DetailLevel::Normal,
        pb::DetailLevel::DetailDetailed => DetailLevel::Detailed,
        pb::DetailLevel::DetailMaximum => DetailLevel::Maximum,
    })
}

pub(crate) fn detail_to_pb(d: DetailLevel) -> pb::DetailLevel {
    match d {
        DetailLevel::Minimal => pb::DetailLevel::DetailMinimal,
        DetailLevel::Normal => pb::DetailLevel::DetailNormal,
        DetailLevel::Detailed => pb::DetailLevel::DetailDetailed,
        DetailLevel::Maximum => pb::DetailLevel::DetailMaximum,
    }
}

fn trace_from_pb(t: pb::TraceObject) -> Result<TraceObject, FrameError> {
    Ok(TraceObject {
        severity: severity_from_pb(t.severity)?,
        detail: detail_from_pb(t.detail)?,
        namespace: t.namespace.into(),
        timestamp_ns: t.timestamp_ns,
        hostname: t.hostname.into(),
        thread_id: t.thread_id.into(),
        machine: t.machine.into(),
        human: t.human.map(Text::from),
        form: MachineForm::Payload,
    })
}

fn trace_to_pb(t: TraceObject) -> pb::TraceObject {
    pb::TraceObject {
        namespace: t.namespace.into_string(),
        severity: severity_to_pb(t.severity) as i32,
        detail: detail_to_pb(t.detail) as i32,
        timestamp_ns: t.timestamp_ns,
        hostname: t.hostname.into_string(),
        thread_id: t.thread_id.into_string(),
        machine: t.machine.into_string(),
        human: t.human.map(Text::into_string),
    }
}

/// Converts a decoded protobuf node message into the domain model.
pub fn node_message_from_pb(msg: pb::NodeMessage) -> Result<NodeMessage, FrameError> {
    use pb::node_message::Msg;
    let Some(msg) = msg.msg else {
        return Err(invalid("empty NodeMessage (no field of `msg` set)"));
    };
    Ok(match msg {
        Msg::Hello(h) => {
            let software = h.software.unwrap_or_default();
            NodeMessage::Hello(Box::new(Hello {
                versions: h.versions,
                network_magic: h.network_magic,
                node_name: h.node_name,
                software: Software {
                    name: software.name,
                    version: software.version,
                    commit: software.commit,
                },
                capabilities: h.capabilities,
                token: h.token,
                tracers: h.tracers,
            }))
        }
        Msg::Traces(b) => {
            if !b.objects.is_empty() && b.first_seq.checked_add(b.objects.len() as u64).is_none() {
                return Err(invalid("sequence numbers overflow u64"));
            }
            NodeMessage::Traces(TraceBatch {
                first_seq: b.first_seq,
                objects: b
                    .objects
                    .into_iter()
                    .map(trace_from_pb)
                    .collect::<Result<_, _>>()?,
            })
        }
        Msg::Metrics(m) => NodeMessage::Metrics(MetricsUpdate {
            full: m.full,
            metrics: m
                .metrics
                .into_iter()
                .map(|m| {
                    use pb::metric::Value;
                    let value = match m.value {
                        Some(Value::Counter(c)) => MetricValue::Counter(c),
                        Some(Value::Gauge(g)) => MetricValue::Gauge(g),
                        Some(Value::Label(l)) => MetricValue::Label(l),
                        None => return Err(invalid(format!("metric {:?} has no value", m.name))),
                    };
                    Ok((m.name, value))
                })
                .collect::<Result<_, _>>()?,
        }),
        Msg::DataPoints(d) => NodeMessage::DataPoints(
            d.points
                .into_iter()
                .map(|p| DataPoint {
                    name: p.name,
                    json: p.json,
                })
                .collect(),
        ),
        Msg::Ping(p) => NodeMessage::Ping(p.nonce),
        Msg::Pong(p) => NodeMessage::Pong(p.nonce),
        Msg::TracingConfig(r) => NodeMessage::TracingConfig(config::report_from_pb(r)?),
    })
}

/// Converts a domain node message into its protobuf form.
pub fn node_message_to_pb(msg: NodeMessage) -> pb::NodeMessage {
    use pb::node_message::Msg;
    let msg = match msg {
        NodeMessage::Hello(h) => Msg::Hello(pb::Hello {
            versions: h.versions,
            network_magic: h.network_magic,
            node_name: h.node_name,
            software: Some(pb::SoftwareInfo {
                name: h.software.name,
                version: h.software.version,
                commit: h.software.commit,
            }),
            capabilities: h.capabilities,
            token: h.token,
            tracers: h.tracers,
        }),
        NodeMessage::Traces(b) => Msg::Traces(pb::TraceBatch {
            first_seq: b.first_seq,
            objects: b.objects.into_iter().map(trace_to_pb).collect(),
        }),
        NodeMessage::Metrics(m) => Msg::Metrics(pb::MetricsUpdate {
            full: m.full,
            metrics: m
                .metrics
                .into_iter()
                .map(|(name, value)| {
                    use pb::metric::Value;
                    pb::Metric {
                        name,
                        value: Some(match value {
                            MetricValue::Counter(c) => Value::Counter(c),
                            MetricValue::Gauge(g) => Value::Gauge(g),
                            MetricValue::Label(l) => Value::Label(l),
                        }),
                    }
                })
                .collect(),
        }),
        NodeMessage::DataPoints(points) => Msg::DataPoints(pb::DataPoints {
            points: points
                .into_iter()
                .map(|p| pb::DataPoint {
                    name: p.name,
                    json: p.json,
                })
                .collect(),
        }),
        NodeMessage::Ping(nonce) => Msg::Ping(pb::Ping { nonce }),
        NodeMessage::Pong(nonce) => Msg::Pong(pb::Pong { nonce }),
        NodeMessage::TracingConfig(r) => Msg::TracingConfig(config::report_to_pb(r)),
    };
    pb::NodeMessage { msg: Some(msg) }
}

fn refuse_reason_to_pb(r: RefuseReason) -> pb::RefuseReason {
    match r {
        RefuseReason::WrongMagic => pb::RefuseReason::WrongMagic,
        RefuseReason::UnsupportedVersion => pb::RefuseReason::UnsupportedVersion,
        RefuseReason::NameRejected => pb::RefuseReason::NameRejected,
        RefuseReason::NoHello => pb::RefuseReason::NoHello,
        RefuseReason::Unavailable => pb::RefuseReason::Unavailable,
        RefuseReason::Loop => pb::RefuseReason::Loop,
    }
}

/// Converts a domain tracer message into its protobuf form.
pub fn tracer_message_to_pb(msg: TracerMessage) -> pb::TracerMessage {
    use pb::tracer_message::Msg;
    let msg = match msg {
        TracerMessage::Accept {
            version,
            node_name,
            persisted_seq,
            max_frame_bytes,
        } => Msg::Accept(pb::HelloAccept {
            version,
            node_name,
            persisted_seq,
            max_frame_bytes,
        }),
        TracerMessage::Refuse { reason, message } => Msg::Refuse(pb::HelloRefuse {
            reason: refuse_reason_to_pb(reason) as i32,
            message,
            supported_versions: SUPPORTED_VERSIONS.to_vec(),
        }),
        TracerMessage::Ack(persisted_seq) => Msg::Ack(pb::Ack { persisted_seq }),
        TracerMessage::Ping(nonce) => Msg::Ping(pb::Ping { nonce }),
        TracerMessage::Pong(nonce) => Msg::Pong(pb::Pong { nonce }),
        TracerMessage::SetTracingConfig { request_id, config } => {
            Msg::SetTracingConfig(pb::SetTracingConfig {
                request_id,
                config: Some(config::to_pb(&config)),
            })
        }
    };
    pb::TracerMessage { msg: Some(msg) }
}

/// Converts a decoded protobuf tracer message into the domain model.
pub fn tracer_message_from_pb(msg: pb::TracerMessage) -> Result<TracerMessage, FrameError> {
    use pb::tracer_message::Msg;
    let Some(msg) = msg.msg else {
        return Err(invalid("empty TracerMessage (no field of `msg` set)"));
    };
    Ok(match msg {
        Msg::Accept(a) => TracerMessage::Accept {
            version: a.version,
            node_name: a.node_name,
            persisted_seq: a.persisted_seq,
            max_frame_bytes: a.max_frame_bytes,
        },
        Msg::Refuse(r) => TracerMessage::Refuse {
            reason: match pb::RefuseReason::try_from(r.reason) {
                Ok(pb::RefuseReason::WrongMagic) => RefuseReason::WrongMagic,
                Ok(pb::RefuseReason::UnsupportedVersion) => RefuseReason::UnsupportedVersion,
                Ok(pb::RefuseReason::NameRejected) => RefuseReason::NameRejected,
                Ok(pb::RefuseReason::Unavailable) => RefuseReason::Unavailable,
                Ok(pb::RefuseReason::Loop) => RefuseReason::Loop,
                _ => RefuseReason::NoHello,
            },
            message: r.message,
        },
        Msg::Ack(a) => TracerMessage::Ack(a.persisted_seq),
        Msg::Ping(p) => TracerMessage::Ping(p.nonce),
        Msg::Pong(p) => TracerMessage::Pong(p.nonce),
        Msg::SetTracingConfig(c) => TracerMessage::SetTracingConfig {
            request_id: c.request_id,
            config: config::from_pb(c.config.unwrap_or_default())?,
        },
    })
}

#[cfg(test)]
mod tests;
