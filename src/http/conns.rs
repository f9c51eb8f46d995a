//! Who holds the HTTP connection slots of one endpoint, and who gives one up when they are
//! full (issue 12, point 5: slowloris).
//!
//! Every accepted connection is admitted here first ([`Conns::admit`]). An endpoint serves at
//! most `tracerd.limits.http.maxConnections` ([`MAX_CONNECTIONS`] by default), one client (an IP
//! address; a Unix peer is one client) at most `maxConnectionsPerClient` ([`MAX_PER_CLIENT`])
//! of them. When a limit is reached, the new connection takes the slot of
//! the connection that has been *idle* longest — one still reading its request headers, or a
//! keep-alive connection between requests — of that client (per-client limit) or of anyone
//! (endpoint limit). A connection serving a request is not evicted, unless it has been at it
//! for longer than [`STALLED`] (a client that stopped reading its response). Only when no slot
//! can be taken is the new connection refused. So trickling clients can hold only idle slots,
//! and each new client pushes the oldest of them out; hyper's header deadline
//! (`HEADER_READ_TIMEOUT`, running from the moment the connection starts reading a request
//! head, so from before its first byte) closes the rest.
//!
//! An evicted connection is not closed at once: its socket stays open, unserved, for
//! [`TARPIT`] (at most twice the endpoint's limit at once), so a client that reopens what is closed
//! cannot make the slots change hands at the speed of `connect` — which would also evict a
//! well-behaved newcomer before its request head is read.
//!
//! Refusals are counted by reason (`tracerd_http_connections_refused_total{reason}`:
//! `per_client_limit`, `endpoint_full`, `socket_limit`) and logged at a bounded rate across the
//! endpoint ([`RateLog`]): at most [`LINES_PER_WINDOW`] lines per [`WINDOW`], each saying how
//! many were suppressed before it. The choice of a victim ([`choose`]) is pure.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// HTTP connections served at once per endpoint, by default.
pub const MAX_CONNECTIONS: usize = crate::config::DEFAULT_HTTP_CONNECTIONS as usize;
/// HTTP connections one client may hold at once per endpoint, by default.
pub const MAX_PER_CLIENT: usize = crate::config::DEFAULT_HTTP_CONNECTIONS_PER_CLIENT as usize;
/// A request whose response has taken longer than this is stalled, and its slot may be taken.
pub const STALLED: Duration = Duration::from_secs(30);
/// How long an evicted connection's socket stays open, no longer served, before it is
/// closed (a tarpit): a client that reopens a connection when it is closed comes back this
/// much later, so trickling clients cannot churn the slots at the speed of `connect`.
pub const TARPIT: Duration = Duration::from_secs(2);
/// Refusal lines logged per endpoint and window.
pub const LINES_PER_WINDOW: u32 = 5;
/// The window of [`LINES_PER_WINDOW`].
pub const WINDOW: Duration = Duration::from_secs(10);

pub use crate::transport::admission::RateLog;

/// One client: the peer's IP address, or `None` for a Unix peer (all one client).
pub type Client = Option<IpAddr>;

/// The client of a peer name (`ip:port`, `[ip]:port`, or anything else for Unix peers).
pub fn client_of(peer: &str) -> Client {
    peer.parse::<std::net::SocketAddr>().ok().map(|a| a.ip())
}

/// A connection as [`choose`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct View {
    /// Its id.
    pub id: u64,
    /// Its client.
    pub client: Client,
    /// Milliseconds (of the table's clock) since which it has been idle or busy.
    pub since_ms: u64,
    /// Whether it is serving a request.
    pub busy: bool,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its client holds [`MAX_PER_CLIENT`] connections, all serving requests.
    PerClient,
    /// The endpoint holds [`MAX_CONNECTIONS`] connections, all serving requests.
    Full,
}

impl Refusal {
    /// The metric label (`tracerd_http_connections_refused_total{reason}`).
    pub fn label(self) -> &'static str {
        match self {
            Refusal::PerClient => "per_client_limit",
            Refusal::Full => "endpoint_full",
        }
    }

    /// The words of the log line.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::PerClient => "this client holds its limit of HTTP connections, all busy",
            Refusal::Full => "the HTTP connection limit is reached, all connections busy",
        }
    }
}

/// What to do with a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Serve it.
    Admit,
    /// Serve it, closing connection `id` first.
    Evict(u64),
    /// Close it.
    Refuse(Refusal),
}

/// Limits of [`choose`] (`tracerd.limits.http`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections at once.
    pub total: usize,
    /// Connections of one client at once.
    pub per_client: usize,
    /// Milliseconds after which a busy connection counts as stalled.
    pub stalled_ms: u64,
}

/// The decision for a new connection of `client` at `now_ms`, given the connections held.
pub fn choose(held: &[View], client: Client, now_ms: u64, limits: Limits) -> Decision {
    let evictable = |v: &&View| !v.busy || now_ms.saturating_sub(v.since_ms) > limits.stalled_ms;
    let oldest =
        |it: &mut dyn Iterator<Item = &View>| it.min_by_key(|v| (v.since_ms, v.id)).map(|v| v.id);
    let of_client = held.iter().filter(|v| v.client == client).count();
    if of_client >= limits.per_client {
        let mut it = held.iter().filter(|v| v.client == client).filter(evictable);
        return oldest(&mut it).map_or(Decision::Refuse(Refusal::PerClient), Decision::Evict);
    }
    if held.len() >= limits.total {
        let mut it = held.iter().filter(evictable);
        return oldest(&mut it).map_or(Decision::Refuse(Refusal::Full), Decision::Evict);
    }
    Decision::Admit
}

/// What a connection shares with the table: whether it serves a request, and since when.
#[derive(Debug, Default)]
pub struct SlotState {
    busy: AtomicU32,
    since_ms: AtomicU64,
}

struct Slot {
    client: Client,
    state: Arc<SlotState>,
    evict: CancellationToken,
}

#[derive(Default)]
struct Table {
    next_id: u64,
    slots: HashMap<u64, Slot>,
}

/// The connection slots of one endpoint.
pub struct Conns {
    epoch: Instant,
    limits: Limits,
    table: Mutex<Table>,
    log: RateLog,
    tarpitted: AtomicUsize,
}

impl std::fmt::Debug for Conns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conns")
            .field("limits", &self.limits)
            .finish()
    }
}

impl Limits {
    /// The limits `tracerd.limits` sets.
    pub fn from_config(limits: &crate::config::Limits) -> Limits {
        Limits {
            total: (limits.http.max_connections as usize).max(1),
            per_client: (limits.http.max_connections_per_client as usize).max(1),
            stalled_ms: STALLED.as_millis() as u64,
        }
    }

    /// Evicted sockets held open at once; past it, an evicted connection is closed at once.
    pub fn max_tarpitted(&self) -> usize {
        2 * self.total
    }

    /// Sockets an endpoint keeps open at once: served, tarpitted and a margin for those being
    /// admitted or refused; past it, the accept loop closes new connections.
    pub fn max_sockets(&self) -> usize {
        self.total + self.max_tarpitted() + self.total
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits::from_config(&crate::config::Limits::default())
    }
}

impl Default for Conns {
    fn default() -> Conns {
        Conns::new(Limits::default())
    }
}

/// A held slot; dropping it frees the slot.
pub struct Ticket {
    conns: Arc<Conns>,
    id: u64,
    /// Cancelled when another connection takes this slot.
    pub evicted: CancellationToken,
    /// Shared with [`Busy`] guards.
    pub state: Arc<SlotState>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        crate::sync::lock(&self.conns.table).slots.remove(&self.id);
    }
}

/// Marks a connection busy while it lives (a request and its response body).
pub struct Busy {
    conns: Arc<Conns>,
    state: Arc<SlotState>,
}

impl Busy {
    /// The connection of `ticket` starts serving a request.
    pub fn enter(conns: &Arc<Conns>, state: &Arc<SlotState>) -> Busy {
        if state.busy.fetch_add(1, Ordering::AcqRel) == 0 {
            state.since_ms.store(conns.now_ms(), Ordering::Release);
        }
        Busy {
            conns: conns.clone(),
            state: state.clone(),
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        // Idle from now: set the time before the count drops, so the table never sees an
        // idle connection with its busy time.
        self.state
            .since_ms
            .store(self.conns.now_ms(), Ordering::Release);
        self.state.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Conns {
    /// A table with `limits`.
    pub fn new(limits: Limits) -> Conns {
        Conns {
            epoch: Instant::now(),
            limits,
            table: Mutex::new(Table::default()),
            log: RateLog::new(LINES_PER_WINDOW, WINDOW),
            tarpitted: AtomicUsize::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Admits a connection of `peer`: a slot (taking an idle connection's if the limits are
    /// reached), or why not.
    pub fn admit(self: &Arc<Self>, peer: &str) -> Result<Ticket, Refusal> {
        let client = client_of(peer);
        let now = self.now_ms();
        let mut table = crate::sync::lock(&self.table);
        let held: Vec<View> = table
            .slots
            .iter()
            .map(|(&id, s)| View {
                id,
                client: s.client,
                since_ms: s.state.since_ms.load(Ordering::Acquire),
                busy: s.state.busy.load(Ordering::Acquire) > 0,
            })
            .collect();
        match choose(&held, client, now, self.limits) {
            Decision::Refuse(r) => return Err(r),
            Decision::Evict(id) => {
                if let Some(victim) = table.slots.remove(&id) {
                    victim.evict.cancel();
                }
            }
            Decision::Admit => {}
        }
        let id = table.next_id;
        table.next_id += 1;
        let state = Arc::new(SlotState {
            busy: AtomicU32::new(0),
            since_ms: AtomicU64::new(now),
        });
        let evicted = CancellationToken::new();
        table.slots.insert(
            id,
            Slot {
                client,
                state: state.clone(),
                evict: evicted.clone(),
            },
        );
        Ok(Ticket {
            conns: self.clone(),
            id,
            evicted,
            state,
        })
    }

    /// Whether a refusal is logged now (a bounded rate per endpoint): `Some(refusals not
    /// logged before it)`, or `None`.
    pub fn log_refusal(&self) -> Option<u64> {
        self.log.admit(Instant::now())
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Holds an evicted connection's socket (in `_socket`, no longer polled) open for
    /// [`TARPIT`], unless [`Limits::max_tarpitted`] are held already or `cancel` fires.
    pub async fn tarpit<S>(&self, _socket: S, cancel: &CancellationToken) {
        if self.tarpitted.fetch_add(1, Ordering::AcqRel) < self.limits.max_tarpitted() {
            tokio::select! {
                _ = tokio::time::sleep(TARPIT) => {}
                _ = cancel.cancelled() => {}
            }
        }
        self.tarpitted.fetch_sub(1, Ordering::AcqRel);
    }

    /// Resolves once the connection of `state` has been busy for longer than the stall bound.
    pub async fn stalled(&self, state: &SlotState) {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let busy = state.busy.load(Ordering::Acquire) > 0;
            let since = state.since_ms.load(Ordering::Acquire);
            if busy && self.now_ms().saturating_sub(since) > self.limits.stalled_ms {
                return;
            }
        }
    }

    /// Connections held now.
    pub fn held(&self) -> usize {
        crate::sync::lock(&self.table).slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Limits = Limits {
        total: 4,
        per_client: 2,
        stalled_ms: 1000,
    };

    fn ip(n: u8) -> Client {
        Some(IpAddr::from([10, 0, 0, n]))
    }

    fn v(id: u64, client: Client, since_ms: u64, busy: bool) -> View {
        View {
            id,
            client,
            since_ms,
            busy,
        }
    }

    #[test]
    fn a_client_at_its_limit_gives_up_its_own_oldest_idle_connection() {
        let held = [
            v(1, ip(1), 50, false),
            v(2, ip(1), 10, false),
            v(3, ip(2), 0, false),
        ];
        assert_eq!(choose(&held, ip(1), 100, L), Decision::Evict(2));
        assert_eq!(choose(&held, ip(2), 100, L), Decision::Admit);
        let busy = [v(1, ip(1), 50, true), v(2, ip(1), 10, true)];
        assert_eq!(
            choose(&busy, ip(1), 100, L),
            Decision::Refuse(Refusal::PerClient)
        );
        // A request stalled past the bound no longer protects its slot.
        assert_eq!(choose(&busy, ip(1), 1011, L), Decision::Evict(2));
    }

    #[test]
    fn a_full_endpoint_gives_up_the_oldest_idle_connection_of_anyone() {
        let held = [
            v(1, ip(1), 5, true),
            v(2, ip(2), 30, false),
            v(3, ip(3), 20, false),
            v(4, ip(4), 10, true),
        ];
        assert_eq!(choose(&held, ip(9), 100, L), Decision::Evict(3));
        assert_eq!(choose(&held, None, 100, L), Decision::Evict(3));
        let all_busy = held.map(|mut h| {
            h.busy = true;
            h
        });
        assert_eq!(
            choose(&all_busy, ip(9), 100, L),
            Decision::Refuse(Refusal::Full)
        );
    }

    #[test]
    fn the_table_evicts_and_frees_slots() {
        let conns = Arc::new(Conns::new(L));
        let a = conns.admit("10.0.0.1:1").unwrap();
        let b = conns.admit("10.0.0.1:2").unwrap();
        let busy = Busy::enter(&conns, &b.state);
        // a is the oldest idle connection of its client: the third takes its slot.
        let c = conns.admit("10.0.0.1:3").unwrap();
        assert!(a.evicted.is_cancelled() && !b.evicted.is_cancelled());
        drop(a);
        assert_eq!(conns.held(), 2);
        // b is busy, c idle: c goes next.
        let _d = conns.admit("10.0.0.1:4").unwrap();
        assert!(c.evicted.is_cancelled() && !b.evicted.is_cancelled());
        drop(busy);
        drop(c);
        assert_eq!(conns.held(), 2);
    }

    #[test]
    fn refusal_lines_are_bounded_per_window_and_count_what_they_suppressed() {
        let log = RateLog::new(LINES_PER_WINDOW, WINDOW);
        let t0 = Instant::now();
        let lines = (0..100).filter(|_| log.admit(t0).is_some()).count();
        assert_eq!(lines, LINES_PER_WINDOW as usize);
        assert_eq!(log.admit(t0 + WINDOW), Some(95));
    }

    #[test]
    fn clients_are_ip_addresses() {
        assert_eq!(client_of("10.0.0.1:80"), ip(1));
        assert_eq!(
            client_of("[::1]:80"),
            Some(IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]))
        );
        assert_eq!(client_of("unix:/run/x.sock@3"), None);
    }
}
