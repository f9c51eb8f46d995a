//! Optional timing of a forwarder's batches, for benchmarks ([`crate::Forwarder::record_timing`]):
//! when each batch was first written to the connection, and when each `Ack` was read from it,
//! each with its sequence number. Off by default (one atomic load per batch and per `Ack`);
//! when on, at most [`CAP`] entries of each kind wait for [`crate::Forwarder::take_timing`]
//! (beyond that new ones are not recorded, so a program that never takes them holds a bounded
//! amount).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use tokio::time::Instant;

use crate::lock;

/// Most entries of each kind kept between two takes.
pub(crate) const CAP: usize = 65_536;

/// Why a batch was written when it was (Nagle's rule, see `connection::Session::send_ready`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendCause {
    /// Every earlier batch was acknowledged: nothing in flight.
    Idle,
    /// Its oldest object had waited the linger time behind a batch in flight.
    Linger,
    /// It was full (objects or bytes).
    Full,
    /// The forwarder was closing.
    Flush,
}

/// A batch's first write: its last sequence number, when the write completed, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// The batch's last sequence number.
    pub last_seq: u64,
    /// When its frame had been written completely.
    pub at: Instant,
    /// Why it went then.
    pub cause: SendCause,
}

#[derive(Debug, Default)]
pub(crate) struct Timing {
    on: AtomicBool,
    log: Mutex<Log>,
}

#[derive(Debug, Default)]
struct Log {
    writes: Vec<Written>,
    acks: Vec<(u64, Instant)>,
}

impl Timing {
    pub(crate) fn start(&self) {
        self.on.store(true, Ordering::Release);
    }

    fn on(&self) -> bool {
        self.on.load(Ordering::Acquire)
    }

    pub(crate) fn written(&self, last_seq: u64, cause: SendCause) {
        if self.on() {
            let mut log = lock(&self.log);
            if log.writes.len() < CAP {
                let at = Instant::now();
                log.writes.push(Written {
                    last_seq,
                    at,
                    cause,
                });
            }
        }
    }

    pub(crate) fn ack_read(&self, seq: u64) {
        if self.on() {
            let mut log = lock(&self.log);
            if log.acks.len() < CAP {
                log.acks.push((seq, Instant::now()));
            }
        }
    }

    pub(crate) fn take(&self, writes: &mut Vec<Written>, acks: &mut Vec<(u64, Instant)>) {
        if self.on() {
            let mut log = lock(&self.log);
            writes.append(&mut log.writes);
            acks.append(&mut log.acks);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_nothing_until_started_and_at_most_the_cap() {
        let t = Timing::default();
        t.written(1, SendCause::Idle);
        t.ack_read(1);
        let (mut w, mut a) = (Vec::new(), Vec::new());
        t.take(&mut w, &mut a);
        assert!(w.is_empty() && a.is_empty());
        t.start();
        for seq in 0..(CAP as u64 + 10) {
            t.written(seq, SendCause::Full);
            t.ack_read(seq);
        }
        t.take(&mut w, &mut a);
        assert_eq!((w.len(), a.len()), (CAP, CAP));
        assert_eq!(w[0].last_seq, 0);
        assert_eq!(a[CAP - 1].0, CAP as u64 - 1);
        t.written(7, SendCause::Linger);
        w.clear();
        t.take(&mut w, &mut a);
        assert_eq!(w.len(), 1, "taking makes room again");
    }
}
