//! Process-wide counters.
//!
//! Rare events (a connection opening, a slow consumer closed) update these
//! atomics directly; per-delivery counts are kept in plain per-worker cells
//! and added here once per worker tick, so no atomic is touched per
//! delivered message.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct Stats {
    pub open: AtomicU64,
    pub accepted: AtomicU64,
    pub refused: AtomicU64,
    pub slow_closed: AtomicU64,
    pub pong_timeouts: AtomicU64,
    pub deliveries: AtomicU64,
    pub bytes: AtomicU64,
    pub received: AtomicU64,
    pub dropped: AtomicU64,
}

impl Stats {
    pub fn opened(&self) {
        self.open.fetch_add(1, Relaxed);
        self.accepted.fetch_add(1, Relaxed);
    }

    pub fn closed(&self) {
        self.open.fetch_sub(1, Relaxed);
    }

    pub fn refused(&self) {
        self.refused.fetch_add(1, Relaxed);
    }

    /// Counts a slow consumer; returns the count so far.
    pub fn slow_closed(&self) -> u64 {
        self.slow_closed.fetch_add(1, Relaxed) + 1
    }

    pub fn pong_timeout(&self) {
        self.pong_timeouts.fetch_add(1, Relaxed);
    }

    pub fn add_deliveries(&self, deliveries: u64, bytes: u64) {
        if deliveries > 0 {
            self.deliveries.fetch_add(deliveries, Relaxed);
            self.bytes.fetch_add(bytes, Relaxed);
        }
    }

    /// One line for the shutdown log.
    pub fn summary(&self) -> String {
        format!(
            "{} messages received, {} dropped; {} deliveries ({} bytes); {} clients accepted, {} refused, {} closed as slow consumers, {} timed out",
            self.received.load(Relaxed),
            self.dropped.load(Relaxed),
            self.deliveries.load(Relaxed),
            self.bytes.load(Relaxed),
            self.accepted.load(Relaxed),
            self.refused.load(Relaxed),
            self.slow_closed.load(Relaxed),
            self.pong_timeouts.load(Relaxed),
        )
    }
}
