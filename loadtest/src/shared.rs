//! Counters and histograms shared by the client threads and the
//! coordinator. Clients add to them once per read, not once per message.

use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

/// Most ramp steps.
pub const MAX_STEPS: usize = 64;
/// Largest latency the histograms hold: 10 minutes, in µs.
const MAX_US: u64 = 600_000_000;

/// A latency histogram in µs, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("valid histogram bounds")
}

/// Latencies: since the coordinator last looked, and per ramp step.
pub struct Latencies {
    pub interval: Histogram<u64>,
    pub steps: Vec<Histogram<u64>>,
}

#[derive(Default)]
pub struct Counters {
    /// Open connections (upgraded and not ended).
    pub connected: AtomicU64,
    pub handshakes_ok: AtomicU64,
    pub handshakes_failed: AtomicU64,
    /// Upgraded connections that ended before the run did.
    pub disconnected: AtomicU64,
    /// Our run's messages received, all steps.
    pub delivered: AtomicU64,
    pub order_violations: AtomicU64,
    pub gaps: AtomicU64,
    pub foreign: AtomicU64,
    pub pings: AtomicU64,
    pub bytes: AtomicU64,
    /// Connections that agreed to permessage-deflate.
    pub deflate_agreed: AtomicU64,
    /// Compressed messages inflated.
    pub inflated: AtomicU64,
}

pub struct Shared {
    pub run: u64,
    pub c: Counters,
    pub step_delivered: Vec<AtomicU64>,
    pub lat: Mutex<Latencies>,
    /// Connect + upgrade time of each client, µs.
    pub handshake_us: Mutex<Histogram<u64>>,
    /// Failed upgrades, by cause ("HTTP 403", "connect: …", "timeout").
    pub failures: Mutex<BTreeMap<String, u64>>,
    /// Ended connections, by cause ("eof", "close 1001", …).
    pub ends: Mutex<BTreeMap<String, u64>>,
    /// Thread ids of the client threads, to read their CPU time.
    pub tids: Mutex<Vec<u32>>,
    /// Set when the client threads must stop.
    pub stop: AtomicBool,
}

impl Shared {
    pub fn new(run: u64) -> Shared {
        Shared {
            run,
            c: Counters::default(),
            step_delivered: (0..MAX_STEPS).map(|_| AtomicU64::new(0)).collect(),
            lat: Mutex::new(Latencies {
                interval: histogram(),
                steps: Vec::new(),
            }),
            handshake_us: Mutex::new(histogram()),
            failures: Mutex::default(),
            ends: Mutex::default(),
            tids: Mutex::default(),
            stop: AtomicBool::new(false),
        }
    }

    pub fn count(map: &Mutex<BTreeMap<String, u64>>, key: String) {
        *map.lock().unwrap().entry(key).or_default() += 1;
    }

    /// Adds one read's worth of results.
    pub fn add(&self, sink: &crate::conn::Sink) {
        let c = &self.c;
        if !sink.latencies.is_empty() {
            c.delivered.fetch_add(sink.latencies.len() as u64, Relaxed);
            let mut lat = self.lat.lock().unwrap();
            let lat = &mut *lat;
            let mut run_step = u32::MAX;
            let mut run_len = 0u64;
            for &(step, us) in &sink.latencies {
                let step_i = step as usize;
                if step_i >= MAX_STEPS {
                    continue;
                }
                if lat.steps.len() <= step_i {
                    lat.steps.resize_with(step_i + 1, histogram);
                }
                lat.interval.saturating_record(us);
                lat.steps[step_i].saturating_record(us);
                if step == run_step {
                    run_len += 1;
                } else {
                    if run_len > 0 {
                        self.step_delivered[run_step as usize].fetch_add(run_len, Relaxed);
                    }
                    run_step = step;
                    run_len = 1;
                }
            }
            if run_len > 0 && (run_step as usize) < MAX_STEPS {
                self.step_delivered[run_step as usize].fetch_add(run_len, Relaxed);
            }
        }
        for (counter, n) in [
            (&c.order_violations, sink.order_violations),
            (&c.gaps, sink.gaps),
            (&c.foreign, sink.foreign),
            (&c.pings, sink.pings),
            (&c.bytes, sink.bytes),
            (&c.inflated, sink.inflated),
        ] {
            if n > 0 {
                counter.fetch_add(n, Relaxed);
            }
        }
    }

    pub fn step_delivered(&self, step: usize) -> u64 {
        self.step_delivered[step].load(Relaxed)
    }

    /// Takes the latencies recorded since the last call.
    pub fn take_interval(&self) -> Histogram<u64> {
        let mut lat = self.lat.lock().unwrap();
        std::mem::replace(&mut lat.interval, histogram())
    }

    pub fn step_histogram(&self, step: usize) -> Histogram<u64> {
        let lat = self.lat.lock().unwrap();
        lat.steps.get(step).cloned().unwrap_or_else(histogram)
    }
}
