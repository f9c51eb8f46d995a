//! Prometheus remote_write 1.0 on the wire, as pure functions: the protobuf `WriteRequest`
//! (the messages of prometheus/prompb `remote.proto` and `types.proto`, fields 1 and 2 as
//! there, written with prost's derive), Snappy *block* compression (`snap::raw`, not the
//! framed format), the staleness marker, and what an answer's status means.

use std::sync::Arc;

/// The spec's staleness marker: a NaN with this bit pattern ends a series.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// The staleness marker as a value.
pub fn stale_nan() -> f64 {
    f64::from_bits(STALE_NAN_BITS)
}

/// `prometheus.WriteRequest` (field 3, metadata, is not sent).
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    /// The series.
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

/// `prometheus.TimeSeries`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    /// Labels, sorted by name.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// Samples in timestamp order.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

/// `prometheus.Label`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Label {
    /// Name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `prometheus.Sample`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    /// The value.
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// A series' labels, sorted by name, `__name__` among them, shared by its queued samples.
pub type SeriesLabels = Arc<Vec<(String, String)>>;

/// Adds `external` to `labels` (a series' own label wins), drops empty values (the spec
/// forbids them) and sorts by name.
pub fn with_external(
    mut labels: Vec<(String, String)>,
    external: &std::collections::BTreeMap<String, String>,
) -> Vec<(String, String)> {
    for (k, v) in external {
        if !labels.iter().any(|(n, _)| n == k) {
            labels.push((k.clone(), v.clone()));
        }
    }
    labels.retain(|(_, v)| !v.is_empty());
    labels.sort();
    labels.dedup_by(|a, b| a.0 == b.0);
    labels
}

/// One request's body: `samples` (in queue order) grouped by series, each series' samples
/// in the order given, encoded and Snappy-compressed (block format).
pub fn encode(samples: &[(SeriesLabels, f64, i64)]) -> Vec<u8> {
    let mut index: std::collections::HashMap<*const Vec<(String, String)>, usize> =
        Default::default();
    let mut req = WriteRequest::default();
    for (labels, value, ts) in samples {
        let i = *index.entry(Arc::as_ptr(labels)).or_insert_with(|| {
            req.timeseries.push(TimeSeries {
                labels: labels
                    .iter()
                    .map(|(n, v)| Label {
                        name: n.clone(),
                        value: v.clone(),
                    })
                    .collect(),
                samples: Vec::new(),
            });
            req.timeseries.len() - 1
        });
        req.timeseries[i].samples.push(Sample {
            value: *value,
            timestamp: *ts,
        });
    }
    let raw = prost::Message::encode_to_vec(&req);
    snap::raw::Encoder::new()
        .compress_vec(&raw)
        .expect("snappy compresses any input below 4 GiB")
}

/// What to do after an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx: sent.
    Sent,
    /// 5xx or 429: send the same batch again after a backoff.
    Retry,
    /// Any other status: the receiver refused the samples; drop them (counted, logged).
    Drop,
}

/// The spec's rule: retry 5xx and 429, never other 4xx (a bad sample stays bad).
pub fn outcome(status: u16) -> Outcome {
    match status {
        200..=299 => Outcome::Sent,
        429 | 500..=599 => Outcome::Retry,
        _ => Outcome::Drop,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_group_series_keep_sample_order_and_decode() {
        let a: SeriesLabels = Arc::new(vec![("__name__".into(), "a".into())]);
        let b: SeriesLabels = Arc::new(vec![
            ("__name__".into(), "b".into()),
            ("x".into(), "1".into()),
        ]);
        let body = encode(&[
            (a.clone(), 1.0, 10),
            (b.clone(), 2.0, 10),
            (a.clone(), 3.0, 20),
            (a.clone(), stale_nan(), 30),
        ]);
        let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
        let req: WriteRequest = prost::Message::decode(raw.as_slice()).unwrap();
        assert_eq!(req.timeseries.len(), 2);
        let ts: Vec<i64> = req.timeseries[0]
            .samples
            .iter()
            .map(|s| s.timestamp)
            .collect();
        assert_eq!(ts, [10, 20, 30]);
        assert_eq!(req.timeseries[0].samples[2].value.to_bits(), STALE_NAN_BITS);
        assert_eq!(req.timeseries[1].labels[1].name, "x");
    }

    #[test]
    fn external_labels_sorted_series_labels_win() {
        let ext = [
            ("tracer".to_string(), "site-a".to_string()),
            ("a".into(), "e".into()),
        ]
        .into();
        let got = with_external(
            vec![
                ("__name__".into(), "m".into()),
                ("tracer".into(), "own".into()),
                ("z".into(), String::new()),
            ],
            &ext,
        );
        assert_eq!(
            got,
            vec![
                ("__name__".to_string(), "m".to_string()),
                ("a".into(), "e".into()),
                ("tracer".into(), "own".into())
            ]
        );
    }

    #[test]
    fn only_5xx_and_429_are_retried() {
        assert_eq!(outcome(204), Outcome::Sent);
        assert_eq!(outcome(429), Outcome::Retry);
        assert_eq!(outcome(503), Outcome::Retry);
        assert_eq!(outcome(400), Outcome::Drop);
        assert_eq!(outcome(404), Outcome::Drop);
    }
}
