//! Admission of node connections by source (issue 17, point 5): before a connection takes a
//! slot of `maxConnections`, its source may hold at most `perSource.maxConnections` connections
//! at once and open new ones at most at `perSource.handshakesPerSec` (a token bucket of
//! `perSource.handshakeBurst`), so one source cannot take every slot nor make tracerd do
//! handshakes (TLS's above all) at the speed of `connect`.
//!
//! A source is an IPv4 address, an IPv6 /64 (one host usually holds a whole /64, so keying by
//! address would give it 2^64 budgets), or, on a Unix socket, the peer's user id
//! (`SO_PEERCRED`). TCP sources in `perSource.exempt` (loopback by default: any local process
//! can pick any of 2^24 loopback addresses, so a per-address bound there protects nothing, and
//! the benchmark's 10,000 nodes come from 127.0.0.1) are not limited here.
//!
//! The table is bounded: a source with a connection open has an entry (at most
//! `maxConnections` of them); a source with none keeps its entry only while its bucket is
//! refilling, and at most [`MAX_IDLE_SOURCES`] such entries are kept — past that, the full
//! buckets are forgotten first (losing nothing), and if that frees less than a quarter, every
//! idle entry is (such a source's next connection finds a full bucket). So a flood of
//! addresses costs a bounded table and a bounded amount of work per connection (amortised
//! O(1)).
//!
//! Refusal lines are rate-limited ([`RateLog`]); every refusal is counted by the acceptor.
//! [`Table`] is pure: the clock is passed in.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::transport::sources::Network;

/// Idle sources (no connection open, bucket refilling) remembered at once.
pub const MAX_IDLE_SOURCES: usize = 4096;

/// Who a connection comes from, for admission and for refusal lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A TCP peer's address.
    Ip(IpAddr),
    /// A Unix socket peer's credentials.
    Unix {
        /// Its user id.
        uid: u32,
        /// Its process id (for logs only).
        pid: Option<i32>,
    },
    /// A Unix peer whose credentials could not be read (all one source).
    Unknown,
}

impl Source {
    /// The key its budget is kept under.
    pub fn key(&self) -> Key {
        match *self {
            Source::Ip(ip) => Key::of_ip(ip),
            Source::Unix { uid, .. } => Key::Uid(uid),
            Source::Unknown => Key::Unknown,
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Ip(ip) => write!(f, "{}", Key::of_ip(*ip)),
            Source::Unix {
                uid,
                pid: Some(pid),
            } => write!(f, "uid {uid} (pid {pid})"),
            Source::Unix { uid, pid: None } => write!(f, "uid {uid}"),
            Source::Unknown => f.write_str("unix peer without credentials"),
        }
    }
}

/// A source's budget key: an IPv4 address, an IPv6 /64, a user id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Key {
    /// IPv4 (IPv4-mapped IPv6 addresses included).
    V4([u8; 4]),
    /// The first 64 bits of an IPv6 address.
    V6(u64),
    /// A Unix peer's user id.
    Uid(u32),
    /// A Unix peer without credentials.
    Unknown,
}

impl Key {
    /// The key of a TCP peer's address.
    pub fn of_ip(ip: IpAddr) -> Key {
        match ip {
            IpAddr::V4(v4) => Key::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Key::V4(v4.octets()),
                None => Key::V6((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Key::V4(o) => write!(f, "{}", IpAddr::from(o)),
            Key::V6(p) => write!(f, "{}/64", Ipv6Addr::from(u128::from(p) << 64)),
            Key::Uid(u) => write!(f, "uid {u}"),
            Key::Unknown => f.write_str("unix peer without credentials"),
        }
    }
}

/// Why the accept loop closed a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Every slot of `maxConnections` is taken.
    ConnectionLimit,
    /// Its source holds `perSource.maxConnections` connections.
    PerSource,
    /// Its source's handshake bucket is empty.
    HandshakeRate,
}

impl Refusal {
    /// The metric label (`tracerd_connections_refused_total{reason}`).
    pub fn label(self) -> &'static str {
        match self {
            Refusal::ConnectionLimit => "connection_limit",
            Refusal::PerSource => "per_source_limit",
            Refusal::HandshakeRate => "handshake_rate",
        }
    }

    /// The words of the log line.
    pub fn words(self) -> &'static str {
        match self {
            Refusal::ConnectionLimit => "connection limit reached",
            Refusal::PerSource => "this source holds tracerd.limits.perSource.maxConnections",
            Refusal::HandshakeRate => {
                "this source opens connections faster than tracerd.limits.perSource.handshakesPerSec"
            }
        }
    }
}

/// The per-source bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceLimits {
    /// Connections one source may hold at once.
    pub per_source: u32,
    /// Tokens (new connections) a source's bucket gains per second.
    pub rate: f64,
    /// A bucket's capacity: the connections a source may open at once.
    pub burst: u32,
    /// TCP sources not limited here.
    pub exempt: Vec<Network>,
}

impl SourceLimits {
    /// The bounds `tracerd.limits` sets; an exempt entry that is no network is an error
    /// naming it.
    pub fn from_config(limits: &crate::config::Limits) -> Result<SourceLimits, String> {
        let p = &limits.per_source;
        let mut exempt = Vec::new();
        for (i, net) in p.exempt.iter().enumerate() {
            exempt.push(
                net.parse::<Network>()
                    .map_err(|e| format!("tracerd.limits.perSource.exempt[{i}]: {e}"))?,
            );
        }
        Ok(SourceLimits {
            per_source: p.max_connections.max(1),
            rate: p.handshakes_per_sec.max(0.0),
            burst: p.handshake_burst.max(1),
            exempt,
        })
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    conns: u32,
    tokens: f64,
    at: Instant,
}

impl Entry {
    /// Refills the bucket to `now`.
    fn refill(&mut self, now: Instant, limits: &SourceLimits) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * limits.rate).min(f64::from(limits.burst));
        self.at = now;
    }

    fn full(&self, now: Instant, limits: &SourceLimits) -> bool {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens + dt * limits.rate >= f64::from(limits.burst)
    }
}

/// The per-source table: pure, the clock passed in.
#[derive(Debug, Default)]
pub struct Table {
    entries: HashMap<Key, Entry>,
    idle: usize,
    max_idle: usize,
}

impl Table {
    /// An empty table keeping at most `max_idle` idle sources.
    pub fn new(max_idle: usize) -> Table {
        Table {
            entries: HashMap::new(),
            idle: 0,
            max_idle: max_idle.max(1),
        }
    }

    /// Admits a new connection of `key` at `now`: it takes one token and counts as open until
    /// [`Table::release`].
    pub fn admit(&mut self, key: Key, now: Instant, limits: &SourceLimits) -> Result<(), Refusal> {
        if !self.entries.contains_key(&key) && self.idle >= self.max_idle {
            self.forget_idle(now, limits);
        }
        let mut fresh = false;
        let e = self.entries.entry(key).or_insert_with(|| {
            fresh = true;
            Entry {
                conns: 0,
                tokens: f64::from(limits.burst),
                at: now,
            }
        });
        e.refill(now, limits);
        let was_idle = !fresh && e.conns == 0;
        let verdict = if e.conns >= limits.per_source {
            Err(Refusal::PerSource)
        } else if e.tokens < 1.0 {
            Err(Refusal::HandshakeRate)
        } else {
            e.tokens -= 1.0;
            e.conns += 1;
            Ok(())
        };
        let is_idle = e.conns == 0;
        if fresh && is_idle {
            self.idle += 1;
        } else if was_idle && !is_idle {
            self.idle -= 1;
        }
        verdict
    }

    /// A connection of `key` closed.
    pub fn release(&mut self, key: Key, now: Instant, limits: &SourceLimits) {
        let Some(e) = self.entries.get_mut(&key) else {
            return;
        };
        e.conns = e.conns.saturating_sub(1);
        if e.conns > 0 {
            return;
        }
        if e.full(now, limits) {
            self.entries.remove(&key);
        } else {
            self.idle += 1;
            if self.idle > self.max_idle {
                self.forget_idle(now, limits);
            }
        }
    }

    /// Forgets full idle buckets; if that frees less than a quarter of the idle entries,
    /// every idle entry.
    fn forget_idle(&mut self, now: Instant, limits: &SourceLimits) {
        let before = self.idle;
        self.entries
            .retain(|_, e| e.conns > 0 || !e.full(now, limits));
        let freed = before.saturating_sub(self.idle_count());
        if freed * 4 < before {
            self.entries.retain(|_, e| e.conns > 0);
        }
        self.idle = self.idle_count();
    }

    fn idle_count(&self) -> usize {
        self.entries.values().filter(|e| e.conns == 0).count()
    }

    /// Sources remembered now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no source is remembered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Connections open now of `key`.
    pub fn open(&self, key: Key) -> u32 {
        self.entries.get(&key).map_or(0, |e| e.conns)
    }
}

/// The admission of every node listener of one tracerd: the table, its limits and the
/// refusal lines' rate limit.
#[derive(Debug)]
pub struct Admission {
    limits: SourceLimits,
    table: Mutex<Table>,
    log: [RateLog; 3],
}

/// A connection's place in its source's count; dropping it releases the place.
#[derive(Debug)]
pub struct Ticket {
    admission: Arc<Admission>,
    key: Key,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let a = &self.admission;
        crate::sync::lock(&a.table).release(self.key, Instant::now(), &a.limits);
    }
}

impl Admission {
    /// An admission with `limits`.
    pub fn new(limits: SourceLimits) -> Admission {
        Admission {
            limits,
            table: Mutex::new(Table::new(MAX_IDLE_SOURCES)),
            log: std::array::from_fn(|_| RateLog::new(1, REFUSAL_LOG_WINDOW)),
        }
    }

    /// Admits a connection from `source`: `Ok(None)` when the source is exempt.
    pub fn admit(self: &Arc<Self>, source: &Source) -> Result<Option<Ticket>, Refusal> {
        if let Source::Ip(ip) = source {
            if crate::transport::sources::allowed(&self.limits.exempt, *ip) {
                return Ok(None);
            }
        }
        let key = source.key();
        crate::sync::lock(&self.table).admit(key, Instant::now(), &self.limits)?;
        Ok(Some(Ticket {
            admission: self.clone(),
            key,
        }))
    }

    /// Whether a refusal for `why` is logged now: `Some(refusals not logged before it)`.
    pub fn log_refusal(&self, why: Refusal) -> Option<u64> {
        let i = match why {
            Refusal::ConnectionLimit => 0,
            Refusal::PerSource => 1,
            Refusal::HandshakeRate => 2,
        };
        self.log[i].admit(Instant::now())
    }

    /// Sources remembered now.
    pub fn sources(&self) -> usize {
        crate::sync::lock(&self.table).len()
    }
}

/// The window of the refusal lines of the accept loop: one line per reason and window.
pub const REFUSAL_LOG_WINDOW: Duration = Duration::from_secs(10);

/// A rate limit of log lines: at most `lines` per `window`; the next line carries the count
/// suppressed since the last one. Pure but for the clock passed in.
#[derive(Debug)]
pub struct RateLog {
    lines: u32,
    window: Duration,
    state: Mutex<Option<(Instant, u32, u64)>>,
}

impl RateLog {
    /// At most `lines` per `window`.
    pub const fn new(lines: u32, window: Duration) -> RateLog {
        RateLog {
            lines,
            window,
            state: Mutex::new(None),
        }
    }

    /// Whether a line at `now` is logged: `Some(suppressed before it)`, or `None`.
    pub fn admit(&self, now: Instant) -> Option<u64> {
        let mut s = crate::sync::lock(&self.state);
        let (start, logged, suppressed) = s.get_or_insert((now, 0, 0));
        if now.saturating_duration_since(*start) >= self.window {
            *start = now;
            *logged = 0;
        }
        if *logged < self.lines {
            *logged += 1;
            Some(std::mem::take(suppressed))
        } else {
            *suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_source: u32, rate: f64, burst: u32) -> SourceLimits {
        SourceLimits {
            per_source,
            rate,
            burst,
            exempt: Vec::new(),
        }
    }

    fn v4(n: u32) -> Key {
        Key::of_ip(IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n)))
    }

    #[test]
    fn a_source_holds_at_most_its_share_and_gets_it_back_when_one_closes() {
        let l = limits(2, 1000.0, 100);
        let mut t = Table::new(16);
        let now = Instant::now();
        assert_eq!(t.admit(v4(1), now, &l), Ok(()));
        assert_eq!(t.admit(v4(1), now, &l), Ok(()));
        assert_eq!(t.admit(v4(1), now, &l), Err(Refusal::PerSource));
        // Another source is not held back.
        assert_eq!(t.admit(v4(2), now, &l), Ok(()));
        t.release(v4(1), now, &l);
        assert_eq!(t.open(v4(1)), 1);
        assert_eq!(t.admit(v4(1), now, &l), Ok(()));
    }

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let l = limits(1000, 2.0, 5);
        let mut t = Table::new(16);
        let t0 = Instant::now();
        let ok = (0..20).filter(|_| t.admit(v4(1), t0, &l).is_ok()).count();
        assert_eq!(ok, 5);
        assert_eq!(t.admit(v4(1), t0, &l), Err(Refusal::HandshakeRate));
        // One second later: two more.
        let t1 = t0 + Duration::from_secs(1);
        let ok = (0..20).filter(|_| t.admit(v4(1), t1, &l).is_ok()).count();
        assert_eq!(ok, 2);
        // The bucket never holds more than the burst, however long the pause.
        let t2 = t1 + Duration::from_secs(3600);
        let ok = (0..20).filter(|_| t.admit(v4(1), t2, &l).is_ok()).count();
        assert_eq!(ok, 5);
    }

    #[test]
    fn a_flood_of_addresses_cannot_grow_the_table_past_its_bound() {
        let l = limits(4, 1.0, 4);
        let mut t = Table::new(64);
        let now = Instant::now();
        // One source with connections open stays, its count intact.
        t.admit(v4(0), now, &l).unwrap();
        t.admit(v4(0), now, &l).unwrap();
        for n in 1..100_000u32 {
            // Each flooding address opens one connection and closes it: its bucket is not
            // full, so its entry stays idle.
            let k = v4(n);
            t.admit(k, now, &l).unwrap();
            t.release(k, now, &l);
            assert!(t.len() <= 64 + 1, "{} entries after {n}", t.len());
        }
        assert_eq!(t.open(v4(0)), 2);
        assert_eq!(t.admit(v4(0), now, &l), Ok(()));
        assert_eq!(t.open(v4(0)), 3);
    }

    #[test]
    fn a_source_whose_bucket_refilled_is_forgotten_when_its_last_connection_closes() {
        let l = limits(4, 10.0, 2);
        let mut t = Table::new(64);
        let t0 = Instant::now();
        t.admit(v4(1), t0, &l).unwrap();
        t.release(v4(1), t0, &l);
        assert_eq!(t.len(), 1, "refilling: kept");
        t.admit(v4(2), t0, &l).unwrap();
        t.release(v4(2), t0 + Duration::from_secs(1), &l);
        assert_eq!(t.len(), 1, "refilled: forgotten");
    }

    #[test]
    fn ipv6_sources_are_their_64_bit_prefix_and_mapped_ipv4_is_ipv4() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            Key::of_ip(ip("2001:db8:1:2::1")),
            Key::of_ip(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            Key::of_ip(ip("2001:db8:1:2::1")),
            Key::of_ip(ip("2001:db8:1:3::1"))
        );
        assert_eq!(
            Key::of_ip(ip("::ffff:10.0.0.1")),
            Key::of_ip(ip("10.0.0.1"))
        );
        assert_eq!(
            Key::of_ip(ip("2001:db8:1:2::1")).to_string(),
            "2001:db8:1:2::/64"
        );
        assert_eq!(
            Source::Unix {
                uid: 7,
                pid: Some(9)
            }
            .to_string(),
            "uid 7 (pid 9)"
        );
    }

    #[test]
    fn exempt_networks_are_not_counted() {
        let a = Arc::new(Admission::new(SourceLimits {
            exempt: vec!["127.0.0.0/8".parse().unwrap()],
            ..limits(1, 1.0, 1)
        }));
        let lo = Source::Ip("127.0.0.9".parse().unwrap());
        let t: Vec<_> = (0..10).map(|_| a.admit(&lo).unwrap()).collect();
        assert!(t.iter().all(Option::is_none));
        let other = Source::Ip("10.0.0.1".parse().unwrap());
        let held = a.admit(&other).unwrap();
        assert!(held.is_some());
        assert_eq!(a.admit(&other).unwrap_err(), Refusal::PerSource);
        drop(held);
        assert_eq!(a.admit(&other).unwrap_err(), Refusal::HandshakeRate);
    }

    #[test]
    fn refusal_lines_are_bounded_per_window_and_count_what_they_suppressed() {
        let log = RateLog::new(5, Duration::from_secs(10));
        let t0 = Instant::now();
        let lines = (0..100).filter(|_| log.admit(t0).is_some()).count();
        assert_eq!(lines, 5);
        assert_eq!(log.admit(t0 + Duration::from_secs(10)), Some(95));
    }
}
