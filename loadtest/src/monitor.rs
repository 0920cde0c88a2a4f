//! The live line on stderr, once a second, and the per-second samples
//! the SVG plot is drawn from. It ticks from the coordinator's own waits,
//! not from a task of its own, so that it never competes with the
//! publisher for the main thread in the middle of a burst.

use crate::publisher::PubCounters;
use crate::shared::Shared;
use crate::svg::Sample;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::time::sleep;

/// How often the coordinator's waits wake to tick: short enough that a
/// second's line is late by little, long enough to cost nothing.
const POLL: Duration = Duration::from_millis(20);

pub(crate) struct Monitor {
    sh: Arc<Shared>,
    clients: usize,
    pub(crate) start: Instant,
    next_tick: Instant,
    last: Instant,
    last_delivered: u64,
    last_published: u64,
    /// `None` until the publisher exists (connect phase, idle mode).
    pub(crate) published: Option<Arc<PubCounters>>,
    /// What the live line says the run is doing.
    pub(crate) phase: String,
    /// The ramp step whose p99 so far the live line shows.
    pub(crate) step: Option<usize>,
    pub(crate) samples: Vec<Sample>,
    interrupted: Arc<AtomicBool>,
}

impl Monitor {
    pub(crate) fn new(sh: Arc<Shared>, clients: usize, interrupted: Arc<AtomicBool>) -> Monitor {
        let now = Instant::now();
        Monitor {
            sh,
            clients,
            start: now,
            next_tick: now + Duration::from_secs(1),
            last: now,
            last_delivered: 0,
            last_published: 0,
            published: None,
            phase: "connecting".into(),
            step: None,
            samples: Vec::new(),
            interrupted,
        }
    }

    /// Called often and cheaply; prints at most once a second.
    fn maybe_tick(&mut self) {
        let now = Instant::now();
        if now >= self.next_tick {
            self.tick(now);
            self.next_tick = now + Duration::from_secs(1);
        }
    }

    /// Also called once at the end, so that the plot covers the last
    /// partial second.
    pub(crate) fn tick(&mut self, now: Instant) {
        let dt = now.duration_since(self.last).as_secs_f64().max(1e-3);
        let c = &self.sh.c;
        let delivered = c.delivered.load(Relaxed);
        let published = self.published.as_ref().map_or(0, |p| p.sent.load(Relaxed));
        let iv = self.sh.take_interval();
        let q = |q: f64| (!iv.is_empty()).then(|| iv.value_at_quantile(q));
        let sample = Sample {
            t: now.duration_since(self.start).as_secs_f64(),
            connected: c.connected.load(Relaxed),
            published_per_s: (published - self.last_published) as f64 / dt,
            delivered_per_s: (delivered - self.last_delivered) as f64 / dt,
            p50_us: q(0.5),
            p99_us: q(0.99),
            max_us: (!iv.is_empty()).then(|| iv.max()),
        };
        let so_far = self.step.and_then(|s| {
            let h = self.sh.step_histogram(s);
            (!h.is_empty()).then(|| h.value_at_quantile(0.99))
        });
        eprintln!(
            "[{:6.1}s] {:<22} connected {}/{} (failed {}) | published {} ({:.0}/s) | delivered {:.0}/s | p99 {} (this second {})",
            sample.t,
            self.phase,
            sample.connected,
            self.clients,
            c.handshakes_failed.load(Relaxed),
            published,
            sample.published_per_s,
            sample.delivered_per_s,
            so_far.map_or("-".into(), fmt_us),
            sample.p99_us.map_or("-".into(), fmt_us),
        );
        self.samples.push(sample);
        self.last = now;
        self.last_delivered = delivered;
        self.last_published = published;
    }

    /// Ticks until `done()`, the deadline or an interrupt.
    pub(crate) async fn wait(&mut self, deadline: Instant, mut done: impl FnMut() -> bool) {
        while !done() && Instant::now() < deadline && !self.interrupted.load(Relaxed) {
            sleep(POLL).await;
            self.maybe_tick();
        }
    }

    /// Ticks while `work` runs, for work that cannot be polled with a
    /// `done()` (a publishing step, which has its own timing).
    pub(crate) async fn during<T>(&mut self, work: impl Future<Output = T>) -> T {
        tokio::pin!(work);
        loop {
            tokio::select! {
                r = &mut work => break r,
                _ = sleep(POLL) => self.maybe_tick(),
            }
        }
    }
}

fn fmt_us(us: u64) -> String {
    format!("{:.2} ms", us as f64 / 1000.0)
}
