//! What the simulated nodes send: Cardano-like trace objects (weighted kinds, unique per
//! node and sequence number, padded to the requested size), metric names, and cardano-node's
//! machine line for `--protocol cardano`.

use std::time::{SystemTime, UNIX_EPOCH};

use tracerd_wire::cardano::codec::TraceFields;
use tracerd_wire::model::{DetailLevel, Severity, TraceObject};
use tracerd_wire::utc;

/// Cardano-like trace kinds: namespace, severity, `kind`, relative weight.
pub(crate) const KINDS: &[(&str, Severity, &str, u32)] = &[
    (
        "ChainSync.Client.DownloadedHeader",
        Severity::Info,
        "DownloadedHeader",
        20,
    ),
    (
        "BlockFetch.Client.CompletedBlockFetch",
        Severity::Info,
        "CompletedBlockFetch",
        12,
    ),
    (
        "ChainDB.AddBlockEvent.AddedToCurrentChain",
        Severity::Notice,
        "AddedToCurrentChain",
        8,
    ),
    (
        "ChainDB.AddBlockEvent.AddBlockValidation.ValidCandidate",
        Severity::Info,
        "ValidCandidate",
        8,
    ),
    ("Mempool.AddedTx", Severity::Info, "TraceMempoolAddedTx", 16),
    (
        "Mempool.RejectedTx",
        Severity::Warning,
        "TraceMempoolRejectedTx",
        2,
    ),
    (
        "Forge.Loop.StartLeadershipCheck",
        Severity::Info,
        "TraceStartLeadershipCheck",
        10,
    ),
    (
        "Net.PeerSelection.Actions.StatusChanged",
        Severity::Debug,
        "PeerStatusChanged",
        6,
    ),
    (
        "Net.InboundGovernor.Remote.InboundGovernorCounters",
        Severity::Info,
        "InboundGovernorCounters",
        4,
    ),
    (
        "BlockFetch.Decision.Decision",
        Severity::Debug,
        "FetchDecision",
        10,
    ),
    (
        "ChainDB.LedgerEvent.TookSnapshot",
        Severity::Info,
        "TookSnapshot",
        1,
    ),
    ("Resources", Severity::Info, "ResourceStats", 3),
];

/// Realistic metric names (EKG-style internal names).
pub(crate) const METRIC_NAMES: &[&str] = &[
    "cardano.node.metrics.blockNum_int",
    "cardano.node.metrics.slotNum_int",
    "cardano.node.metrics.epoch_int",
    "cardano.node.metrics.slotInEpoch_int",
    "cardano.node.metrics.density_real",
    "cardano.node.metrics.txsInMempool_int",
    "cardano.node.metrics.mempoolBytes_int",
    "cardano.node.metrics.connectedPeers_int",
    "cardano.node.metrics.served.block_counter",
    "Mem.resident_int",
    "RTS.gcLiveBytes_int",
    "Stat.cputicks_int",
];

/// Builds one node's trace objects.
pub(crate) struct Generator {
    pub(crate) node: String,
    pub(crate) size: usize,
    /// Index into KINDS per weight unit.
    pub(crate) table: Vec<u8>,
    pub(crate) pad: String,
    pub(crate) threads: Vec<String>,
    pub(crate) seq: u64,
    pub(crate) bytes: u64,
}

pub(crate) fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub(crate) fn push_decimal(out: &mut String, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    for &b in &buf[i..] {
        out.push(b as char);
    }
}

pub(crate) fn push_hex(out: &mut String, v: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for shift in (0..16).rev() {
        out.push(DIGITS[((v >> (shift * 4)) & 15) as usize] as char);
    }
}

pub(crate) fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

impl Generator {
    pub(crate) fn new(node: String, size: usize) -> Generator {
        let mut table = Vec::new();
        for (i, k) in KINDS.iter().enumerate() {
            table.extend(std::iter::repeat_n(i as u8, k.3 as usize));
        }
        Generator {
            node,
            size,
            table,
            pad: "x".repeat(size),
            threads: (5..42).map(|t| t.to_string()).collect(),
            seq: 0,
            bytes: 0,
        }
    }

    pub(crate) fn next(&mut self, ts: i64) -> TraceObject {
        let mut m = String::with_capacity(self.size.max(200));
        let (ns, sev, thread) = self.fill(&mut m);
        TraceObject {
            namespace: ns.into(),
            severity: sev,
            detail: DetailLevel::Normal,
            timestamp_ns: ts,
            hostname: self.node.as_str().into(),
            thread_id: self.threads[thread].as_str().into(),
            machine: m.into(),
            human: None,
            form: Default::default(),
        }
    }

    /// The next object's machine payload, appended to `m` (no allocation once `m` is large
    /// enough), and its namespace, severity and thread (an index into `threads`).
    pub(crate) fn fill(&mut self, m: &mut String) -> (&'static str, Severity, usize) {
        self.seq += 1;
        let seq = self.seq;
        let h = mix(seq ^ (self.node.len() as u64) << 56);
        let (ns, sev, kind, _) = KINDS[self.table[(h % self.table.len() as u64) as usize] as usize];
        let slot = 140_000_000 + seq / 20;
        // Built by hand rather than with `write!`: the generator shares the CPUs with the
        // daemon under test, so its cost per object matters.
        let start = m.len();
        m.push_str("{\"kind\":\"");
        m.push_str(kind);
        m.push_str("\",\"node\":\"");
        m.push_str(&self.node);
        m.push_str("\",\"seq\":");
        push_decimal(m, seq);
        m.push_str(",\"slot\":");
        push_decimal(m, slot);
        m.push_str(",\"block\":\"");
        push_hex(m, h);
        push_hex(m, mix(h));
        m.push_str("\",\"peer\":\"127.0.0.");
        push_decimal(m, h % 250 + 2);
        m.push_str(":3001\",\"pad\":\"");
        let pad = self.size.saturating_sub(m.len() - start + 2);
        m.push_str(&self.pad[..pad]);
        m.push_str("\"}");
        self.bytes += (m.len() - start) as u64;
        (ns, sev, (h % self.threads.len() as u64) as usize)
    }
}

/// Appends cardano-node's own machine line for `obj` (cardano-tracer's `ForMachine` shape:
/// `{"at":..,"ns":..,"data":..,"sev":..,"thread":..,"host":..}`, no newline). `obj.machine`
/// (the payload) must be one line of valid JSON, as every [`Generator`] object's is: it
/// becomes `data` as is, so the line is byte for byte what tracerd itself renders for that
/// object.
pub(crate) fn push_machine_line(out: &mut Vec<u8>, obj: &TraceFields<'_>) {
    out.extend_from_slice(b"{\"at\":\"");
    utc::push_rfc3339_nanos_bytes(out, obj.timestamp_ns);
    out.extend_from_slice(b"\",\"ns\":");
    push_json_str(out, obj.namespace);
    out.extend_from_slice(b",\"data\":");
    out.extend_from_slice(obj.machine.trim().as_bytes());
    out.extend_from_slice(b",\"sev\":\"");
    out.extend_from_slice(obj.severity.as_str().as_bytes());
    out.extend_from_slice(b"\",\"thread\":");
    push_json_str(out, obj.thread_id);
    out.extend_from_slice(b",\"host\":");
    push_json_str(out, obj.hostname);
    out.push(b'}');
}

fn push_json_str(out: &mut Vec<u8>, text: &str) {
    if text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        // Nothing to escape (the generator's names and threads): quoted as is.
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
        return;
    }
    // Serialising a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, text);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_valid_json_of_the_requested_size_and_unique() {
        let mut g = Generator::new("load-0003".into(), 300);
        let a = g.next(1);
        let b = g.next(2);
        assert_eq!(a.machine.len(), 300);
        let v: serde_json::Value = serde_json::from_str(&a.machine).unwrap();
        assert_eq!(
            (v["node"].as_str(), v["seq"].as_u64()),
            (Some("load-0003"), Some(1))
        );
        let w: serde_json::Value = serde_json::from_str(&b.machine).unwrap();
        assert_eq!(w["seq"].as_u64(), Some(2));
        assert_eq!(v["block"].as_str().map(str::len), Some(32));
        for text in ["load-0003", "a\"b\\c\n", "\u{7f}\u{85}"] {
            let mut quoted = Vec::new();
            push_json_str(&mut quoted, text);
            assert_eq!(quoted, serde_json::to_vec(text).unwrap(), "{text:?}");
        }
        let mut s = String::new();
        push_decimal(&mut s, 0);
        push_decimal(&mut s, 18_446_744_073_709_551_615);
        assert_eq!(s, "018446744073709551615");
    }
}
