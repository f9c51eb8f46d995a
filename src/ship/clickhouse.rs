//! The ClickHouse sink's shell: one task that follows every node's machine files and inserts
//! their lines over ClickHouse's HTTP interface, one insert in flight, in large
//! `JSONEachRow` batches (one block each: `max_insert_block_size` above the batch size).
//!
//! Exactly once: a cursor only moves after ClickHouse answered 200. After any other outcome
//! (and at start, when a crash may have hidden one) the sink is *uncertain*: it waits until
//! none of its inserts runs on the server any more (`system.processes`, by `query_id`), asks
//! for every node's highest stored `(file, offset)` and moves each cursor there before
//! sending again. Rows of one node are sent in file order and ClickHouse stores a prefix of
//! an insert's blocks, so the highest stored offset is exactly where the stored rows end.

mod sql;

use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::follow::{Follower, Limits};
use super::http::{basic_auth, Client, HttpError};
use super::metrics::SinkMetrics;
use crate::config::ClickhouseSettings;
use tracerd_wire::Backoff;

/// The sink's name in metrics, logs and the state directory.
pub const SINK: &str = "clickhouse";

/// Everything the task needs.
pub struct Sink {
    /// The settings.
    pub settings: ClickhouseSettings,
    /// The `tracer` column's value.
    pub tracer: String,
    /// The user's password, read from `passwordFile` at start.
    pub password: Option<String>,
    /// The follower of the machine log root.
    pub follower: Follower,
    /// Metrics.
    pub metrics: SinkMetrics,
}

/// Why a request did not succeed.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("ClickHouse answered {0}: {1}")]
    Status(u16, String),
    #[error("unexpected answer: {0}")]
    Answer(String),
}

impl Failure {
    fn label(&self) -> &'static str {
        match self {
            Failure::Http(e) => e.label(),
            Failure::Status(..) => "status",
            Failure::Answer(_) => "answer",
        }
    }
}

struct Conn {
    client: Client,
    auth: Option<String>,
    timeout: Duration,
}

impl Conn {
    async fn query(&mut self, query: &str, body: Bytes) -> Result<String, Failure> {
        let encoded =
            percent_encoding::utf8_percent_encode(query, percent_encoding::NON_ALPHANUMERIC);
        let path = format!("/?query={encoded}");
        self.send(&path, body).await
    }

    async fn send(&mut self, path: &str, body: Bytes) -> Result<String, Failure> {
        let mut headers = vec![("content-type", "text/plain; charset=utf-8")];
        if let Some(a) = &self.auth {
            headers.push(("authorization", a.as_str()));
        }
        let r = self.client.post(path, &headers, body, self.timeout).await?;
        if r.status != 200 {
            return Err(Failure::Status(r.status, r.snippet()));
        }
        Ok(String::from_utf8_lossy(&r.body).into_owned())
    }
}

impl Sink {
    /// Runs until `cancel`.
    pub async fn run(self, cancel: CancellationToken) {
        let Sink {
            settings,
            tracer,
            password,
            follower,
            metrics,
        } = self;
        let follower: Shared = std::sync::Arc::new(std::sync::Mutex::new(follower));
        let client = match Client::new(&settings.url) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(sink = SINK, error = %e, "ClickHouse sink not started");
                return;
            }
        };
        let auth = match (&settings.user, &password) {
            (None, None) => None,
            (user, pw) => Some(basic_auth(
                user.as_deref().unwrap_or("default"),
                pw.as_deref().unwrap_or(""),
            )),
        };
        let mut conn = Conn {
            client,
            auth,
            timeout: settings.batch.timeout(),
        };
        let limits = Limits {
            max_lines: settings.batch.max_rows as usize,
            max_bytes: settings.batch.max_bytes as usize,
        };
        let poll = Duration::from_millis(settings.batch.poll_ms);
        let prefix = sql::query_id_prefix(&tracer);
        let insert = sql::insert(&settings.database, &settings.table);
        let mut backoff =
            Backoff::new(Duration::from_millis(100), Duration::from_secs(5)).jittered();
        let mut uncertain = true;
        let mut schema_ready = false;
        let mut inserts: u64 = 0;
        let mut last_error_log: Option<Instant> = None;
        tracing::info!(sink = SINK, url = %settings.url, table = %format!("{}.{}", settings.database, settings.table),
            tracer = %tracer, "shipping trace lines to ClickHouse");
        loop {
            if cancel.is_cancelled() {
                return;
            }
            let step = async {
                if !schema_ready {
                    conn.query(&sql::create_database(&settings.database), Bytes::new())
                        .await?;
                    conn.query(
                        &sql::create_table(&settings.database, &settings.table),
                        Bytes::new(),
                    )
                    .await?;
                    schema_ready = true;
                }
                if uncertain {
                    resync(&mut conn, &settings, &tracer, &prefix, &follower, &metrics).await?;
                    uncertain = false;
                }
                let batch = blocking(&follower, move |f| {
                    f.scan(Instant::now());
                    let b = f.read(limits);
                    f.publish_lag(Instant::now());
                    b
                })
                .await;
                if batch.chunks.is_empty() {
                    return Ok::<bool, Failure>(false);
                }
                let mut body =
                    Vec::with_capacity(batch.chunks.iter().map(|c| c.buf.len() * 2).sum());
                sql::push_rows(&mut body, &batch, &tracer);
                inserts += 1;
                let query_id = format!("{prefix}{}-{inserts}", std::process::id());
                let encoded = percent_encoding::utf8_percent_encode(
                    &insert,
                    percent_encoding::NON_ALPHANUMERIC,
                );
                let qid = percent_encoding::utf8_percent_encode(
                    &query_id,
                    percent_encoding::NON_ALPHANUMERIC,
                );
                let path = format!(
                    "/?query={encoded}&query_id={qid}&max_insert_block_size={}",
                    limits.max_lines.saturating_mul(2).max(1_048_576)
                );
                uncertain = true;
                conn.send(&path, Bytes::from(body)).await?;
                uncertain = false;
                blocking(&follower, move |f| {
                    if let Err(e) = f.confirm(&batch) {
                        tracing::warn!(sink = SINK, error = %e,
                            "cannot store the cursors (the next start asks ClickHouse where to resume)");
                    }
                    f.publish_lag(Instant::now());
                })
                .await;
                Ok(true)
            };
            let outcome = tokio::select! {
                _ = cancel.cancelled() => return,
                o = step => o,
            };
            match outcome {
                Ok(true) => backoff.reset(),
                Ok(false) => {
                    backoff.reset();
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(poll) => {}
                    }
                }
                Err(e) => {
                    if matches!(e, Failure::Status(..)) {
                        // A refused DDL or query may mean the table went away.
                        schema_ready = false;
                    }
                    metrics
                        .requests_failed
                        .with_label_values(&[SINK, e.label()])
                        .inc();
                    if last_error_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                        last_error_log = Some(Instant::now());
                        tracing::warn!(sink = SINK, url = %settings.url, error = %e,
                            "ClickHouse request failed; retrying (nothing is lost: the lines stay in the files)");
                    }
                    let pause = backoff.next_delay();
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(pause) => {}
                    }
                }
            }
        }
    }
}

/// Runs `op` on the follower on the blocking pool (it does file I/O).
async fn blocking<T: Send + 'static>(
    f: &Shared,
    op: impl FnOnce(&mut Follower) -> T + Send + 'static,
) -> T {
    let f = f.clone();
    tokio::task::spawn_blocking(move || op(&mut crate::sync::lock(&f)))
        .await
        .expect("the follower does not panic")
}

type Shared = std::sync::Arc<std::sync::Mutex<Follower>>;

/// Waits for this tracerd's running inserts to end, then moves every cursor to what
/// ClickHouse holds.
async fn resync(
    conn: &mut Conn,
    settings: &ClickhouseSettings,
    tracer: &str,
    prefix: &str,
    follower: &Shared,
    metrics: &SinkMetrics,
) -> Result<(), Failure> {
    let deadline = Instant::now() + conn.timeout;
    loop {
        let running = conn
            .query(&sql::running_inserts(prefix), Bytes::new())
            .await?;
        match running.trim().parse::<u64>() {
            Ok(0) => break,
            Ok(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(n) => {
                return Err(Failure::Answer(format!(
                    "{n} earlier insert(s) still running after {:?}",
                    conn.timeout
                )))
            }
            Err(_) => {
                return Err(Failure::Answer(format!(
                    "count of running inserts: {running:?}"
                )))
            }
        }
    }
    let body = conn
        .query(
            &sql::resync(&settings.database, &settings.table, tracer),
            Bytes::new(),
        )
        .await?;
    let stored = sql::parse_resync(&body).map_err(Failure::Answer)?;
    metrics.resyncs.with_label_values(&[SINK]).inc();
    let moved = blocking(follower, move |f| {
        let mut moved = 0;
        for (node, pos) in stored {
            if f.confirmed(&node).is_none_or(|c| c < pos) {
                moved += 1;
                if let Err(e) = f.adopt(&node, pos) {
                    tracing::warn!(sink = SINK, node = %node, error = %e, "cannot store a cursor");
                }
            }
        }
        moved
    })
    .await;
    tracing::info!(
        sink = SINK,
        cursors_moved = moved,
        "resumed from what ClickHouse holds"
    );
    Ok(())
}
