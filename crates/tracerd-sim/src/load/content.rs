//! What the simulated nodes send: Cardano-like trace objects (weighted kinds, unique per
//! node and sequence number, padded to the requested size) and metric names (cardano-node's
//! machine line for `--protocol cardano` is written by `cardano::objects`).

use std::time::{SystemTime, UNIX_EPOCH};

use tracerd_wire::model::{DetailLevel, Severity, Text, TraceObject};

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

/// The thread ids of the generated objects (a node's few busy threads).
pub(crate) const THREADS: [&str; 37] = [
    "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16", "17", "18", "19", "20",
    "21", "22", "23", "24", "25", "26", "27", "28", "29", "30", "31", "32", "33", "34", "35", "36",
    "37", "38", "39", "40", "41",
];

/// Builds one node's trace objects.
///
/// The generator shares the two CPUs with the daemon under test, so what it costs per object
/// is part of every throughput figure: a batch of objects costs a few allocations in all (the
/// machine texts are written into one buffer, bytes and two digits at a time, and each
/// object's `machine` is a slice of it), and no allocation per object (the namespace and
/// thread are static texts, the host name a static text of the node's name).
pub(crate) struct Generator {
    pub(crate) node: String,
    pub(crate) size: usize,
    /// Index into KINDS per weight unit.
    pub(crate) table: Vec<u8>,
    pub(crate) pad: String,
    /// [`THREADS`] as `String`s (for the Cardano simulator's borrowed fields).
    pub(crate) threads: Vec<String>,
    pub(crate) seq: u64,
    pub(crate) bytes: u64,
    /// `node` as a static text: cloned into every object without touching a reference
    /// count (which the generating and the sending thread would share). Leaked once per
    /// simulated node, a few bytes each for the life of the process.
    hostname: Text,
    /// Per kind (index into KINDS), the machine text up to the sequence number:
    /// `{"kind":"<kind>","node":"<node>","seq":`.
    prefixes: Vec<Vec<u8>>,
    /// Scratch of [`Generator::batch`]: each object's end in the batch's buffer, its kind
    /// and its thread.
    marks: Vec<(usize, u8, u8)>,
}

pub(crate) fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// "00", "01", ... "99": decimal digits two at a time (one division per two digits).
const PAIRS: &[u8; 200] = b"00010203040506070809101112131415161718192021222324252627282930313233343536373839404142434445464748495051525354555657585960616263646566676869707172737475767778798081828384858687888990919293949596979899";

/// Each byte's two lowercase hex digits.
const HEX_PAIRS: [[u8; 2]; 256] = {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut t = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = [DIGITS[i >> 4], DIGITS[i & 15]];
        i += 1;
    }
    t
};

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
        let hostname = Text::from_static(Box::leak(node.clone().into_boxed_str()));
        let prefixes = KINDS
            .iter()
            .map(|k| format!("{{\"kind\":\"{}\",\"node\":\"{node}\",\"seq\":", k.2).into_bytes())
            .collect();
        Generator {
            node,
            size,
            table,
            pad: "x".repeat(size),
            threads: THREADS.iter().map(|t| t.to_string()).collect(),
            seq: 0,
            bytes: 0,
            hostname,
            prefixes,
            marks: Vec::new(),
        }
    }

    /// The next `n` objects, stamped `ts`, `ts + 1`, ..., appended to `out`. Their machine
    /// texts are slices of one new buffer; nothing else is allocated (`out` reused from
    /// batch to batch does not grow).
    pub(crate) fn batch(&mut self, ts: i64, n: usize, out: &mut Vec<TraceObject>) {
        let mut buf = Vec::with_capacity(n * self.size.max(MIN_OBJECT));
        self.marks.clear();
        for _ in 0..n {
            let (kind, thread) = self.fill_bytes(&mut buf);
            self.marks.push((buf.len(), kind as u8, thread as u8));
        }
        // Made of ASCII and the node's name (a `String`), so valid UTF-8; checked once per
        // batch rather than trusted.
        let all = Text::from(
            String::from_utf8(buf)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
        );
        out.reserve(n);
        let mut start = 0;
        for (i, &(end, kind, thread)) in self.marks.iter().enumerate() {
            let (ns, sev, _, _) = KINDS[kind as usize];
            out.push(TraceObject {
                namespace: Text::from_static(ns),
                severity: sev,
                detail: DetailLevel::Normal,
                timestamp_ns: ts + i as i64,
                hostname: self.hostname.clone(),
                thread_id: Text::from_static(THREADS[thread as usize]),
                machine: all.slice(start..end).unwrap_or_default(),
                human: None,
                form: Default::default(),
            });
            start = end;
        }
    }

    /// The next object's machine payload, appended to `m`, and its namespace, severity and
    /// thread (an index into `threads`).
    #[cfg(test)]
    pub(crate) fn fill(&mut self, m: &mut String) -> (&'static str, Severity, usize) {
        let mut bytes = std::mem::take(m).into_bytes();
        let (kind, thread) = self.fill_bytes(&mut bytes);
        *m = String::from_utf8(bytes)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        let (ns, sev, _, _) = KINDS[kind];
        (ns, sev, thread)
    }

    /// The next object's machine payload, appended to `m` (no allocation once `m` is large
    /// enough); returns its kind (an index into KINDS) and thread (into `threads`).
    pub(crate) fn fill_bytes(&mut self, m: &mut Vec<u8>) -> (usize, usize) {
        self.seq += 1;
        let seq = self.seq;
        let h = mix(seq ^ (self.node.len() as u64) << 56);
        let kind = self.table[(h % self.table.len() as u64) as usize] as usize;
        let slot = 140_000_000 + seq / 20;
        // Built by hand rather than with `write!`, in three copies (the kind's and node's
        // prefix, the numbers assembled on the stack, the padding): the generator shares the
        // CPUs with the daemon under test, so its cost per object matters.
        let start = m.len();
        m.extend_from_slice(&self.prefixes[kind]);
        let mut t = Tail::default();
        t.decimal(seq);
        t.put(b",\"slot\":");
        t.decimal(slot);
        t.put(b",\"block\":\"");
        t.hex(h);
        t.hex(mix(h));
        t.put(b"\",\"peer\":\"127.0.0.");
        t.decimal(h % 250 + 2);
        t.put(b":3001\",\"pad\":\"");
        m.extend_from_slice(&t.buf[..t.len]);
        let pad = self.size.saturating_sub(m.len() - start + 2);
        m.extend_from_slice(&self.pad.as_bytes()[..pad]);
        m.extend_from_slice(b"\"}");
        self.bytes += (m.len() - start) as u64;
        (kind, (h % THREADS.len() as u64) as usize)
    }
}

/// The numbers of one machine text, assembled on the stack: `seq` to the padding (at most
/// 126 bytes: three 20-digit numbers, 32 hex digits, the keys).
struct Tail {
    buf: [u8; 160],
    len: usize,
}

impl Default for Tail {
    fn default() -> Tail {
        Tail {
            buf: [0; 160],
            len: 0,
        }
    }
}

impl Tail {
    fn put<const N: usize>(&mut self, bytes: &[u8; N]) {
        self.buf[self.len..self.len + N].copy_from_slice(bytes);
        self.len += N;
    }

    /// `v` in decimal, two digits a division, written in place from its last digit.
    fn decimal(&mut self, mut v: u64) {
        let digits = v.checked_ilog10().map_or(1, |l| l as usize + 1);
        let mut i = self.len + digits;
        self.len = i;
        while v >= 100 {
            let d = (v % 100) as usize * 2;
            v /= 100;
            i -= 2;
            self.buf[i..i + 2].copy_from_slice(&PAIRS[d..d + 2]);
        }
        if v >= 10 {
            let d = v as usize * 2;
            self.buf[i - 2..i].copy_from_slice(&PAIRS[d..d + 2]);
        } else {
            self.buf[i - 1] = b'0' + v as u8;
        }
    }

    /// `v` as 16 lowercase hex digits, a byte (two digits) at a time.
    fn hex(&mut self, v: u64) {
        for (k, byte) in v.to_be_bytes().into_iter().enumerate() {
            let at = self.len + 2 * k;
            self.buf[at..at + 2].copy_from_slice(&HEX_PAIRS[byte as usize]);
        }
        self.len += 16;
    }
}

/// The shortest machine text (no padding), an estimate for sizing a batch's buffer.
const MIN_OBJECT: usize = 160;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_valid_json_of_the_requested_size_and_unique() {
        let mut g = Generator::new("load-0003".into(), 300);
        let mut objects = Vec::new();
        g.batch(1, 2, &mut objects);
        let (a, b) = (&objects[0], &objects[1]);
        assert_eq!(a.machine.len(), 300);
        let v: serde_json::Value = serde_json::from_str(&a.machine).unwrap();
        assert_eq!(
            (v["node"].as_str(), v["seq"].as_u64()),
            (Some("load-0003"), Some(1))
        );
        let w: serde_json::Value = serde_json::from_str(&b.machine).unwrap();
        assert_eq!(w["seq"].as_u64(), Some(2));
        assert_eq!(v["block"].as_str().map(str::len), Some(32));
        assert_eq!((a.timestamp_ns, b.timestamp_ns), (1, 2));
        assert_eq!(a.hostname, "load-0003");
        // The same text, written the plain way.
        let h = mix(1 ^ 9 << 56);
        let head = format!(
            "{{\"kind\":\"{}\",\"node\":\"load-0003\",\"seq\":1,\"slot\":140000000,\"block\":\"{h:016x}{:016x}\",\"peer\":\"127.0.0.{}:3001\",\"pad\":\"",
            v["kind"].as_str().unwrap(),
            mix(h),
            h % 250 + 2
        );
        let plain = format!("{head}{}\"}}", "x".repeat(300 - head.len() - 2));
        assert_eq!(a.machine, plain);
    }

    #[test]
    fn batches_are_the_objects_one_at_a_time_would_be() {
        // The same node, one batch of 300 against 300 single payloads.
        let mut batched = Generator::new("relay-ñ".into(), 160);
        let mut single = Generator::new("relay-ñ".into(), 160);
        let mut objects = Vec::new();
        batched.batch(7, 300, &mut objects);
        for (i, o) in objects.iter().enumerate() {
            let mut m = String::from("stale");
            m.clear();
            let (ns, sev, thread) = single.fill(&mut m);
            assert_eq!(o.machine, m, "object {i}");
            assert_eq!(
                (&*o.namespace, o.severity, &*o.thread_id),
                (ns, sev, THREADS[thread])
            );
            let v: serde_json::Value = serde_json::from_str(&o.machine).unwrap();
            assert_eq!(v["seq"].as_u64(), Some(i as u64 + 1));
            assert_eq!(v["slot"].as_u64(), Some(140_000_000 + (i as u64 + 1) / 20));
            assert!(o.machine.len() >= 160);
        }
        assert_eq!(batched.bytes, single.bytes);
        // One buffer for the batch: every machine text is a slice of the first one's.
        let base = objects[0].machine.as_ptr() as usize;
        assert_eq!(
            objects[299].machine.as_ptr() as usize - base,
            batched.bytes as usize - objects[299].machine.len()
        );
    }

    #[test]
    fn numbers_are_written_as_decimal_and_hex() {
        let mut values = vec![
            0,
            1,
            9,
            10,
            11,
            99,
            100,
            101,
            999,
            1000,
            u64::MAX,
            u64::MAX - 1,
        ];
        let mut x = 1u64;
        while let Some(y) = x.checked_mul(10) {
            values.extend([x - 1, x, x + 1, y / 2]);
            x = y;
        }
        for v in values.iter().copied().chain((0..2000).map(mix)) {
            // After another number, as in a machine text.
            let mut t = Tail::default();
            t.decimal(7);
            t.put(b",");
            t.decimal(v);
            t.hex(v);
            assert_eq!(
                std::str::from_utf8(&t.buf[..t.len]).unwrap(),
                format!("7,{v}{v:016x}")
            );
        }
    }
}
