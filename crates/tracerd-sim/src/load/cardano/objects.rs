//! What a simulated cardano-node queues: its trace objects already encoded as its
//! `MsgTraceObjectsReply` carries them (`tracerd_wire::cardano::codec::encode_trace_object`
//! of the node's complete machine line), written straight into the chunk's buffer.
//!
//! The simulator shares the two CPUs with the tracer under test, so its cost per object is
//! part of every throughput figure. Everything that does not vary from object to object is
//! encoded once, when the node starts: per kind the JSON between the timestamp and `data` and
//! between `data` and the thread, and the CBOR from the namespace to the timestamp's seconds;
//! per thread its JSON and CBOR strings; the host's. Per object only the varying parts are
//! written: the machine payload (the generator's, unique per object), the RFC 3339 timestamp
//! (its date and time of day cached per second, only the nanoseconds written), the CBOR heads
//! whose lengths vary, and the timestamp's seconds and picoseconds. No allocation per object,
//! no UTF-8 or escape check per object (the varying parts are ASCII digits and the payload,
//! made of ASCII and the node's name, a `String`).

use tracerd_wire::model::DetailLevel;
use tracerd_wire::utc;

use crate::load::content::{Generator, KINDS};

/// Per kind (index into `KINDS`): what does not vary around the payload.
struct Kind {
    /// `","ns":"<namespace>","data":`, after the timestamp.
    json_ns: Vec<u8>,
    /// `,"sev":"<severity>","thread":`, after the payload.
    json_sev: Vec<u8>,
    /// CBOR after the machine line: the namespace list (`9f`, the dotted namespace, `ff`),
    /// `[severity]`, `[detail]`, tag 1000, the map of 2 and its first key.
    cbor: Vec<u8>,
}

/// Per thread: its JSON string and its CBOR text string.
struct Thread {
    json: Vec<u8>,
    cbor: Vec<u8>,
}

/// One simulated cardano-node's trace objects, encoded (see the module's text).
pub struct CardanoObjects {
    gen: Generator,
    payload: Vec<u8>,
    kinds: Vec<Kind>,
    threads: Vec<Thread>,
    /// `,"host":"<host>"}`: the end of every machine line.
    json_host: Vec<u8>,
    /// The host name as a CBOR text string.
    cbor_host: Vec<u8>,
    /// The second `at` caches, and its `YYYY-MM-DDTHH:MM:SS.`.
    second: Option<i64>,
    at: [u8; 20],
}

/// Length of the RFC 3339 timestamp every line carries (`utc::push_rfc3339_nanos_bytes`).
const AT_LEN: usize = 30;
/// `{"at":"`.
const LINE_START: &[u8] = b"{\"at\":\"";

impl CardanoObjects {
    /// The objects of node `node` (its host name), with `size` bytes of machine payload each
    /// (the line's `data`), the generator's content.
    pub fn new(node: &str, size: usize) -> CardanoObjects {
        let gen = Generator::new(node.to_string(), size);
        let json = |text: &str| serde_json::to_vec(text).unwrap_or_default();
        let kinds = KINDS
            .iter()
            .map(|&(ns, severity, _, _)| {
                let mut json_ns = b"\",\"ns\":".to_vec();
                json_ns.extend_from_slice(&json(ns));
                json_ns.extend_from_slice(b",\"data\":");
                let mut json_sev = b",\"sev\":\"".to_vec();
                json_sev.extend_from_slice(severity.as_str().as_bytes());
                json_sev.extend_from_slice(b"\",\"thread\":");
                let mut cbor = vec![0x9f];
                cbor_text(&mut cbor, ns.as_bytes());
                cbor.extend_from_slice(&[0xff, 0x81]);
                cbor_head(&mut cbor, 0, severity as u64);
                cbor.push(0x81);
                cbor_head(&mut cbor, 0, DetailLevel::Normal as u64);
                // Tag 1000 (cborg's UTCTime), a map of 2, key 1 (the seconds follow).
                cbor.extend_from_slice(&[0xd9, 0x03, 0xe8, 0xa2, 0x01]);
                Kind {
                    json_ns,
                    json_sev,
                    cbor,
                }
            })
            .collect();
        let threads = gen
            .threads
            .iter()
            .map(|t| {
                let mut cbor = Vec::new();
                cbor_text(&mut cbor, t.as_bytes());
                Thread {
                    json: json(t),
                    cbor,
                }
            })
            .collect();
        let mut json_host = b",\"host\":".to_vec();
        json_host.extend_from_slice(&json(node));
        json_host.push(b'}');
        let mut cbor_host = Vec::new();
        cbor_text(&mut cbor_host, node.as_bytes());
        CardanoObjects {
            gen,
            payload: Vec::with_capacity(size + 200),
            kinds,
            threads,
            json_host,
            cbor_host,
            second: None,
            at: [0; 20],
        }
    }

    /// Objects generated so far (the last one's `seq`).
    pub fn seq(&self) -> u64 {
        self.gen.seq
    }

    /// Machine payload bytes generated so far.
    pub fn payload_bytes(&self) -> u64 {
        self.gen.bytes
    }

    /// Appends the next `n` objects, stamped `ts`, `ts + 1`, ..., encoded back to back, to
    /// `out`, and each one's length to `lens`.
    pub fn encode(&mut self, ts: i64, n: usize, out: &mut Vec<u8>, lens: &mut Vec<usize>) {
        for i in 0..n {
            let before = out.len();
            self.encode_one(ts + i as i64, out);
            lens.push(out.len() - before);
        }
    }

    fn encode_one(&mut self, ts: i64, out: &mut Vec<u8>) {
        self.payload.clear();
        let (kind, thread) = self.gen.fill_bytes(&mut self.payload);
        let (k, t) = (&self.kinds[kind], &self.threads[thread]);
        let secs = ts.div_euclid(1_000_000_000);
        let nanos = ts.rem_euclid(1_000_000_000) as u64;
        if self.second != Some(secs) {
            let mut full = Vec::with_capacity(AT_LEN);
            utc::push_rfc3339_nanos_bytes(&mut full, ts);
            self.at.copy_from_slice(&full[..20]);
            self.second = Some(secs);
        }
        let line_len = LINE_START.len()
            + AT_LEN
            + k.json_ns.len()
            + self.payload.len()
            + k.json_sev.len()
            + t.json.len()
            + self.json_host.len();
        // `TraceObject` (9 items, constructor 0), no `toHuman`, then `toMachine`: the line.
        out.extend_from_slice(&[0x89, 0x00, 0x80]);
        cbor_head(out, 3, line_len as u64);
        out.extend_from_slice(LINE_START);
        out.extend_from_slice(&self.at);
        let mut digits = [0u8; 10];
        let mut v = nanos;
        for d in digits[..9].iter_mut().rev() {
            *d = b'0' + (v % 10) as u8;
            v /= 10;
        }
        digits[9] = b'Z';
        out.extend_from_slice(&digits);
        out.extend_from_slice(&k.json_ns);
        out.extend_from_slice(&self.payload);
        out.extend_from_slice(&k.json_sev);
        out.extend_from_slice(&t.json);
        out.extend_from_slice(&self.json_host);
        // Namespace to the timestamp's first key, then its seconds, key -12, picoseconds.
        out.extend_from_slice(&k.cbor);
        if secs >= 0 {
            cbor_head(out, 0, secs as u64);
        } else {
            cbor_head(out, 1, (-1 - secs) as u64);
        }
        out.push(0x2b);
        cbor_head(out, 0, nanos * 1000);
        out.extend_from_slice(&self.cbor_host);
        out.extend_from_slice(&t.cbor);
    }
}

/// A CBOR head of major type `major` with argument `arg`, in its shortest form (as the
/// node's cborg and minicbor write it).
fn cbor_head(out: &mut Vec<u8>, major: u8, arg: u64) {
    let m = major << 5;
    if arg < 24 {
        out.push(m | arg as u8);
    } else if arg <= u64::from(u8::MAX) {
        out.extend_from_slice(&[m | 24, arg as u8]);
    } else if arg <= u64::from(u16::MAX) {
        out.push(m | 25);
        out.extend_from_slice(&(arg as u16).to_be_bytes());
    } else if arg <= u64::from(u32::MAX) {
        out.push(m | 26);
        out.extend_from_slice(&(arg as u32).to_be_bytes());
    } else {
        out.push(m | 27);
        out.extend_from_slice(&arg.to_be_bytes());
    }
}

/// A definite CBOR text string.
fn cbor_text(out: &mut Vec<u8>, text: &[u8]) {
    cbor_head(out, 3, text.len() as u64);
    out.extend_from_slice(text);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracerd_wire::cardano::codec::{self, TraceFields};
    use tracerd_wire::model::Severity;

    /// cardano-node's machine line for `obj`, the plain way (cardano-tracer's `ForMachine`
    /// shape: `{"at":..,"ns":..,"data":..,"sev":..,"thread":..,"host":..}`).
    fn machine_line(obj: &TraceFields<'_>) -> String {
        let mut at = String::new();
        utc::push_rfc3339_nanos(&mut at, obj.timestamp_ns);
        let q = |s: &str| serde_json::to_string(s).unwrap();
        format!(
            "{{\"at\":\"{at}\",\"ns\":{},\"data\":{},\"sev\":\"{}\",\"thread\":{},\"host\":{}}}",
            q(obj.namespace),
            obj.machine,
            obj.severity.as_str(),
            q(obj.thread_id),
            q(obj.hostname)
        )
    }

    /// The objects are byte for byte what the codec encodes for the node's machine line and
    /// fields (the generator's payload, kind, thread), across second boundaries, sizes whose
    /// lines need one- and two-byte length heads, and a host name beyond ASCII.
    #[test]
    fn objects_are_what_the_codec_encodes_for_the_nodes_line() {
        for (node, size, ts) in [
            ("load-0001", 160, 1_790_000_000_999_999_000i64),
            ("relay-ñ", 300, 1_790_000_000_000_000_000),
            ("n", 10, 999_999_990),
            ("load-0002", 2000, -1_500),
        ] {
            let mut objects = CardanoObjects::new(node, size);
            let mut reference = Generator::new(node.to_string(), size);
            let (mut out, mut lens) = (Vec::new(), Vec::new());
            objects.encode(ts, 1500, &mut out, &mut lens);
            assert_eq!(lens.len(), 1500);
            let mut at = 0;
            for (i, len) in lens.iter().enumerate() {
                let mut payload = Vec::new();
                let (kind, thread) = reference.fill_bytes(&mut payload);
                let (namespace, severity, _, _) = KINDS[kind];
                let payload = String::from_utf8(payload).unwrap();
                let mut fields = TraceFields {
                    human: None,
                    machine: &payload,
                    namespace,
                    severity,
                    detail: DetailLevel::Normal,
                    timestamp_ns: ts + i as i64,
                    hostname: node,
                    thread_id: &reference.threads[thread],
                };
                let line = machine_line(&fields);
                serde_json::from_str::<serde_json::Value>(&line).expect("the line is JSON");
                fields.machine = &line;
                let mut want = Vec::new();
                codec::encode_trace_object(&mut want, &fields);
                assert_eq!(&out[at..at + len], &want[..], "{node}: object {i}");
                at += len;
            }
            assert_eq!(at, out.len());
            assert_eq!(objects.seq(), 1500);
            assert_eq!(objects.payload_bytes(), reference.bytes);
            // And the codec reads them back as the node's objects.
            let mut reply = codec::REPLY_START.to_vec();
            reply.extend_from_slice(&out);
            reply.push(codec::REPLY_END);
            let decoded = codec::decode_trace_reply(&reply).unwrap();
            assert_eq!(decoded.len(), 1500);
            assert_eq!(decoded[7].timestamp_ns, ts + 7);
            assert_eq!(decoded[7].hostname, node);
            assert!(Severity::ALL.contains(&decoded[7].severity));
        }
    }

    #[test]
    fn heads_are_the_shortest() {
        for (major, arg, want) in [
            (0u8, 23u64, vec![0x17]),
            (0, 24, vec![0x18, 24]),
            (3, 255, vec![0x78, 0xff]),
            (3, 256, vec![0x79, 0x01, 0x00]),
            (0, 65_536, vec![0x1a, 0, 1, 0, 0]),
            (0, 1 << 32, vec![0x1b, 0, 0, 0, 1, 0, 0, 0, 0]),
            (1, 0, vec![0x20]),
        ] {
            let mut out = Vec::new();
            cbor_head(&mut out, major, arg);
            assert_eq!(out, want, "{major} {arg}");
        }
    }
}
