//! Process-wide counters, read by `/metrics` and the shutdown summary.
//!
//! Rare events (a connection opening, a refusal, a slow consumer) update
//! shared atomics directly. Per-delivery counts live in [`WorkerCounters`]:
//! one cache-line-aligned block per worker, written only by that worker
//! (a plain load and store, no locked read-modify-write) once per batch,
//! and summed when scraped. Nothing is shared between cores on the
//! delivery path.

use crate::channels::{KeySet, Selection};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

/// Most entries of each map `/channels` answers.
pub const MAX_LISTED: usize = 10_000;

/// Handshake refusals by HTTP status; `0` stands for the deadline.
pub const REFUSAL_STATUSES: [u16; 9] = [400, 401, 403, 404, 405, 426, 431, 503, 0];

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
    /// Bytes read from Redis by the subscriber connections (one add per
    /// read, not per message).
    pub redis_bytes_read: AtomicU64,
    pub redis_up: AtomicBool,
    /// Clients that read every key (they are not counted per key, so
    /// that a connection costs the same whatever the number of keys).
    pub everyone: AtomicU64,
    /// Those of them that negotiated permessage-deflate.
    pub deflate_everyone: AtomicU64,
    /// `pubsocketd.v1` clients (the encoder builds envelopes for them), and
    /// those of them that negotiated permessage-deflate.
    pub v1_clients: AtomicU64,
    pub v1_deflate: AtomicU64,
    /// Event-stream clients, by the event form they take (the encoder
    /// builds each form only while someone takes it).
    pub sse_clients: AtomicU64,
    pub sse_named: AtomicU64,
    /// Event streams opened, and messages not sent to them (binary).
    pub sse_accepted: AtomicU64,
    pub sse_skipped: AtomicU64,
    /// Clients per concrete channel chosen under a pattern, for
    /// `/channels`. Locked at connect and close only, never per message.
    chosen_channels: Mutex<HashMap<Bytes, u64>>,
    /// Set at start with `-broker=embedded`: ready without Redis.
    pub embedded: AtomicBool,
    pub workers: Box<[WorkerCounters]>,
    /// Replays and what the history holds.
    pub history: HistoryCounters,
    /// Per configured channel or pattern, in `-rs-channel` order.
    pub keys: Box<[KeyCounters]>,
}

/// Counters of one configured channel or pattern.
#[derive(Debug, Default)]
pub struct KeyCounters {
    pub received: AtomicU64,
    pub dropped: AtomicU64,
    /// Clients that chose this key (or a channel under it); those that
    /// read everything are in [`Stats::everyone`].
    pub clients: AtomicU64,
    /// Those of them that negotiated permessage-deflate (the encoder
    /// compresses a message only when one of them, or of the clients that
    /// read everything, may want it).
    pub deflate: AtomicU64,
}

/// Replays (counted once per resume, not per message) and the size of the
/// history (set on the first worker's tick: every worker keeps the same).
#[derive(Debug, Default)]
pub struct HistoryCounters {
    /// Messages written from the history to resuming clients.
    pub replayed: AtomicU64,
    /// Resumes that ended `recovered: true`, and `false`.
    pub recovered: AtomicU64,
    pub not_recovered: AtomicU64,
    pub kept_messages: AtomicU64,
    pub kept_bytes: AtomicU64,
    /// `-rs-mode=stream`: now minus the time in the newest entry's ID.
    pub stream_lag_ms: AtomicU64,
}

impl HistoryCounters {
    /// Counts one channel's replay of `n` messages.
    pub fn resumed(&self, n: usize, recovered: bool) {
        self.replayed.fetch_add(n as u64, Relaxed);
        match recovered {
            true => self.recovered.fetch_add(1, Relaxed),
            false => self.not_recovered.fetch_add(1, Relaxed),
        };
    }
}

/// One client in (+1) or out (-1) of a gauge.
fn step(n: &AtomicU64, joined: bool) {
    match joined {
        true => n.fetch_add(1, Relaxed),
        false => n.fetch_sub(1, Relaxed),
    };
}

/// Keeps the [`MAX_LISTED`] largest counts, largest first (ties by name).
pub fn largest<K: Ord>(list: &mut Vec<(K, u64)>) {
    list.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    list.truncate(MAX_LISTED);
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
            redis_bytes_read: AtomicU64::new(0),
            redis_up: AtomicBool::new(false),
            embedded: AtomicBool::new(false),
            workers: (0..workers).map(|_| WorkerCounters::default()).collect(),
            keys: (0..keys).map(|_| KeyCounters::default()).collect(),
            everyone: AtomicU64::new(0),
            deflate_everyone: AtomicU64::new(0),
            v1_clients: AtomicU64::new(0),
            v1_deflate: AtomicU64::new(0),
            sse_clients: AtomicU64::new(0),
            sse_named: AtomicU64::new(0),
            sse_accepted: AtomicU64::new(0),
            sse_skipped: AtomicU64::new(0),
            chosen_channels: Mutex::default(),
            history: HistoryCounters::default(),
        }
    }

    /// Runs `f` on the counters of every key in `keys`.
    fn each_key(&self, keys: &KeySet, f: impl Fn(&KeyCounters)) {
        for &id in keys.ids() {
            f(&self.keys[id as usize]);
        }
    }

    /// Counts a message received on a channel matching `keys`: once in the
    /// process total, once per key.
    pub fn count_received(&self, keys: &KeySet) {
        self.received.fetch_add(1, Relaxed);
        self.each_key(keys, |k| {
            k.received.fetch_add(1, Relaxed);
        });
    }

    /// Counts a received message that was not relayed.
    pub fn count_dropped(&self, keys: &KeySet) {
        self.dropped.fetch_add(1, Relaxed);
        self.each_key(keys, |k| {
            k.dropped.fetch_add(1, Relaxed);
        });
    }

    /// (received, dropped) of key `i`.
    pub fn key_counts(&self, i: usize) -> (u64, u64) {
        let k = &self.keys[i];
        (k.received.load(Relaxed), k.dropped.load(Relaxed))
    }

    /// A client joined (or left): `keys` are those it counts under, `None`
    /// when it reads everything.
    pub fn clients_of(&self, keys: Option<&[u32]>, deflate: bool, joined: bool) {
        let step = |n: &AtomicU64| step(n, joined);
        let Some(ids) = keys else {
            step(&self.everyone);
            if deflate {
                step(&self.deflate_everyone);
            }
            return;
        };
        for &id in ids {
            let k = &self.keys[id as usize];
            step(&k.clients);
            if deflate {
                step(&k.deflate);
            }
        }
    }

    /// Counts a `pubsocketd.v1` client in (or out of) the envelope counts.
    pub fn v1_of(&self, deflate: bool, joined: bool) {
        let step = |n: &AtomicU64| step(n, joined);
        step(&self.v1_clients);
        if deflate {
            step(&self.v1_deflate);
        }
    }

    /// Counts an event-stream client in (or out of) the event form counts.
    pub fn sse_of(&self, named: bool, joined: bool) {
        match named {
            true => step(&self.sse_named, joined),
            false => step(&self.sse_clients, joined),
        }
    }

    /// Counts a client's concrete channels in (or out of) `/channels`.
    pub fn channels_of(&self, sel: &Selection, joined: bool) {
        if sel.channels.is_empty() {
            return;
        }
        let mut map = self
            .chosen_channels
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for ch in sel.channels.iter() {
            let n = map.entry(ch.clone()).or_default();
            match joined {
                true => *n += 1,
                false => *n = n.saturating_sub(1),
            }
            if *n == 0 {
                map.remove(ch);
            }
        }
    }

    /// The concrete channels with their clients, most read first, at most
    /// [`MAX_LISTED`].
    pub fn chosen_channels(&self) -> Vec<(Bytes, u64)> {
        let map = self
            .chosen_channels
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut list: Vec<(Bytes, u64)> = map.iter().map(|(c, n)| (c.clone(), *n)).collect();
        drop(map);
        largest(&mut list);
        list
    }

    /// Whether a deflate client may want a message matching `keys`.
    pub fn deflate_wanted(&self, keys: &KeySet) -> bool {
        if self.deflate_everyone.load(Relaxed) > 0 {
            return true;
        }
        match keys {
            KeySet::Broadcast => self.keys.iter().any(|k| k.deflate.load(Relaxed) > 0),
            keys => keys
                .ids()
                .iter()
                .any(|&id| self.keys[id as usize].deflate.load(Relaxed) > 0),
        }
    }

    /// Clients a publish on a channel matching `keys` reaches at most: those
    /// that read everything, and those that chose one of the keys (a client
    /// counted once per key).
    pub fn clients_for(&self, keys: &KeySet) -> u64 {
        let chosen: u64 = keys
            .ids()
            .iter()
            .map(|&id| self.keys[id as usize].clients.load(Relaxed))
            .sum();
        self.everyone.load(Relaxed) + chosen
    }

    /// Clients receiving key `i`: those that chose it and those that read
    /// everything.
    pub fn key_clients(&self, i: usize) -> u64 {
        self.everyone.load(Relaxed) + self.keys[i].clients.load(Relaxed)
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
