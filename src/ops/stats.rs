//! Process-wide counters, read by `/metrics` and the shutdown summary.
//!
//! Rare events (a connection opening, a refusal, a slow consumer) update
//! shared atomics directly. Per-delivery counts live in [`WorkerCounters`]:
//! one cache-line-aligned block per worker, written only by that worker
//! (a plain load and store, no locked read-modify-write) once per batch,
//! and summed when scraped. Nothing is shared between cores on the
//! delivery path.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

/// Handshake refusals by HTTP status; `0` stands for the deadline.
pub const REFUSAL_STATUSES: [u16; 8] = [400, 403, 404, 405, 426, 431, 503, 0];

#[derive(Debug)]
pub struct Stats {
    pub open: AtomicU64,
    pub accepted: AtomicU64,
    refused: [AtomicU64; REFUSAL_STATUSES.len()],
    pub slow_closed: AtomicU64,
    pub pong_timeouts: AtomicU64,
    pub received: AtomicU64,
    pub dropped: AtomicU64,
    pub redis_reconnects: AtomicU64,
    pub redis_up: AtomicBool,
    /// Clients that negotiated permessage-deflate, per configured key (the
    /// encoder compresses a message only when one of them wants it).
    pub deflate_by_key: Box<[AtomicU64]>,
    /// Set at start with `-broker=embedded`: ready without Redis.
    pub embedded: AtomicBool,
    pub workers: Box<[WorkerCounters]>,
    /// Per configured channel or pattern, in `-rs-channel` order.
    pub keys: Box<[KeyCounters]>,
}

/// Counters of one configured channel or pattern.
#[derive(Debug, Default)]
pub struct KeyCounters {
    pub received: AtomicU64,
    pub dropped: AtomicU64,
    /// Clients that chose this key (or a channel under it).
    pub clients: AtomicU64,
}

/// One worker's delivery counters, alone on their cache line.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct WorkerCounters {
    deliveries: AtomicU64,
    bytes: AtomicU64,
    queued_bytes: AtomicU64,
}

impl WorkerCounters {
    /// Adds a batch's deliveries. Only the owning worker calls this, so a
    /// load and a store suffice.
    pub fn add(&self, deliveries: u64, bytes: u64) {
        self.deliveries
            .store(self.deliveries.load(Relaxed) + deliveries, Relaxed);
        self.bytes.store(self.bytes.load(Relaxed) + bytes, Relaxed);
    }

    /// Bytes waiting in this worker's client queues (set once per tick).
    pub fn set_queued(&self, bytes: u64) {
        self.queued_bytes.store(bytes, Relaxed);
    }
}

impl Stats {
    pub fn new(workers: usize, keys: usize) -> Stats {
        Stats {
            open: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            refused: Default::default(),
            slow_closed: AtomicU64::new(0),
            pong_timeouts: AtomicU64::new(0),
            received: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            redis_reconnects: AtomicU64::new(0),
            redis_up: AtomicBool::new(false),
            embedded: AtomicBool::new(false),
            workers: (0..workers).map(|_| WorkerCounters::default()).collect(),
            keys: (0..keys).map(|_| KeyCounters::default()).collect(),
            deflate_by_key: (0..keys).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Runs `f` on the counters of every key in `mask`, and counts the
    /// message once in the process totals when `f` is a receive.
    pub fn each_key(&self, mask: u64, f: impl Fn(&KeyCounters)) {
        for (i, k) in self.keys.iter().enumerate() {
            if mask & (1 << i) != 0 {
                f(k);
            }
        }
    }

    /// Counts a message received on a channel matching `mask`: once in the
    /// process total, once per key.
    pub fn count_received(&self, mask: u64) {
        self.received.fetch_add(1, Relaxed);
        self.each_key(mask, |k| {
            k.received.fetch_add(1, Relaxed);
        });
    }

    /// Counts a received message that was not relayed.
    pub fn count_dropped(&self, mask: u64) {
        self.dropped.fetch_add(1, Relaxed);
        self.each_key(mask, |k| {
            k.dropped.fetch_add(1, Relaxed);
        });
    }

    /// (received, dropped) of key `i`.
    pub fn key_counts(&self, i: usize) -> (u64, u64) {
        let k = &self.keys[i];
        (k.received.load(Relaxed), k.dropped.load(Relaxed))
    }

    /// A deflate client chose `mask` (+1) or left (-1).
    pub fn deflate_clients_of(&self, mask: u64, joined: bool) {
        for (i, n) in self.deflate_by_key.iter().enumerate() {
            if mask & (1 << i) != 0 {
                if joined {
                    n.fetch_add(1, Relaxed);
                } else {
                    n.fetch_sub(1, Relaxed);
                }
            }
        }
    }

    /// Whether a deflate client may want a message matching `mask`.
    pub fn deflate_wanted(&self, mask: u64) -> bool {
        self.deflate_by_key.iter().enumerate().any(|(i, n)| {
            (mask == crate::channels::BROADCAST || mask & (1 << i) != 0) && n.load(Relaxed) > 0
        })
    }

    /// A client chose `mask` (+1) or left (-1).
    pub fn clients_of(&self, mask: u64, joined: bool) {
        self.each_key(mask, |k| {
            if joined {
                k.clients.fetch_add(1, Relaxed);
            } else {
                k.clients.fetch_sub(1, Relaxed);
            }
        });
    }

    /// Clients that chose any key of `mask`, counting a client once per
    /// key: the receivers a publish on a channel matching `mask` reaches at
    /// most.
    pub fn clients_for(&self, mask: u64) -> u64 {
        self.keys
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, k)| k.clients.load(Relaxed))
            .sum()
    }

    /// Takes one of `max` connection places; false when all are taken.
    pub fn try_open(&self, max: usize) -> bool {
        if self.open.fetch_add(1, Relaxed) >= max as u64 {
            self.open.fetch_sub(1, Relaxed);
            return false;
        }
        self.accepted.fetch_add(1, Relaxed);
        true
    }

    pub fn closed(&self) {
        self.open.fetch_sub(1, Relaxed);
    }

    /// Counts a refused handshake by status (`0` for the deadline).
    pub fn refused(&self, status: u16) {
        let i = REFUSAL_STATUSES
            .iter()
            .position(|s| *s == status)
            .unwrap_or(0);
        self.refused[i].fetch_add(1, Relaxed);
    }

    /// Refusals for each of [`REFUSAL_STATUSES`].
    pub fn refusals(&self) -> impl Iterator<Item = (u16, u64)> + '_ {
        REFUSAL_STATUSES
            .iter()
            .zip(&self.refused)
            .map(|(s, n)| (*s, n.load(Relaxed)))
    }

    /// Counts a slow consumer; returns the count so far.
    pub fn slow_closed(&self) -> u64 {
        self.slow_closed.fetch_add(1, Relaxed) + 1
    }

    pub fn pong_timeout(&self) {
        self.pong_timeouts.fetch_add(1, Relaxed);
    }

    /// (deliveries, bytes, queued bytes) summed over the workers.
    pub fn deliveries(&self) -> (u64, u64, u64) {
        self.workers.iter().fold((0, 0, 0), |(d, b, q), w| {
            (
                d + w.deliveries.load(Relaxed),
                b + w.bytes.load(Relaxed),
                q + w.queued_bytes.load(Relaxed),
            )
        })
    }

    /// One line for the shutdown log.
    pub fn summary(&self) -> String {
        let (deliveries, bytes, _) = self.deliveries();
        let refused: u64 = self.refusals().map(|(_, n)| n).sum();
        format!(
            "{} messages received, {} dropped; {deliveries} deliveries ({bytes} bytes); {} clients accepted, {refused} refused, {} closed as slow consumers, {} timed out; {} Redis reconnects",
            self.received.load(Relaxed),
            self.dropped.load(Relaxed),
            self.accepted.load(Relaxed),
            self.slow_closed.load(Relaxed),
            self.pong_timeouts.load(Relaxed),
            self.redis_reconnects.load(Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_counters_sum_on_read() {
        let s = Stats::new(3, 2);
        s.workers[0].add(10, 100);
        s.workers[2].add(5, 50);
        s.workers[2].add(1, 10);
        s.workers[1].set_queued(7);
        assert_eq!(s.deliveries(), (16, 160, 7));
        s.refused(403);
        s.refused(0);
        s.refused(403);
        let r: Vec<_> = s.refusals().filter(|(_, n)| *n > 0).collect();
        assert_eq!(r, [(403, 2), (0, 1)]);
        assert_eq!(std::mem::align_of::<WorkerCounters>(), 128);
    }
}
