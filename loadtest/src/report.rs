//! The figures of one run and the JSON line that carries them. The keys
//! are what run-compare.sh and `--mode summary` read back, so a renamed
//! key silently empties a comparison; the printed table is in
//! `table.rs`. The warnings judged from the figures alone are made here,
//! so that the table and the JSON line always carry the same ones.

use crate::args::{Args, Mode};
use crate::procfs;
use crate::svg::Sample;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// A thread above this share of one core means the load generator, not
/// the relay, may have been the limit.
pub(crate) const BOTTLENECK_PCT: f64 = 85.0;
/// Other processes above this share of one core make the figures noisy.
const BUSY_OTHERS_PCT: f64 = 20.0;

#[derive(Default)]
pub(crate) struct ConnectReport {
    pub(crate) requested: usize,
    pub(crate) ok: u64,
    pub(crate) failed: u64,
    pub(crate) secs: f64,
    pub(crate) failures: BTreeMap<String, u64>,
    pub(crate) handshake_p50_ms: f64,
    pub(crate) handshake_p99_ms: f64,
    pub(crate) rss_before_kib: Option<u64>,
    pub(crate) rss_after_kib: Option<u64>,
    pub(crate) net: procfs::NetCounters,
    /// The relay's CPU time while the clients connected.
    pub(crate) server_cpu_ns: Option<u64>,
}

impl ConnectReport {
    pub(crate) fn rate_per_sec(&self) -> f64 {
        self.ok as f64 / self.secs.max(1e-9)
    }

    /// The relay's memory cost of a connection, the figure idle mode
    /// exists for.
    pub(crate) fn rss_per_conn(&self) -> Option<f64> {
        let (b, a) = (self.rss_before_kib?, self.rss_after_kib?);
        (self.ok > 0).then(|| (a as f64 - b as f64) * 1024.0 / self.ok as f64)
    }

    /// The relay's CPU per upgrade, in microseconds.
    pub(crate) fn server_cpu_us_per_handshake(&self) -> Option<f64> {
        let ns = self.server_cpu_ns?;
        (self.ok > 0).then(|| ns as f64 / 1000.0 / self.ok as f64)
    }

    fn json(&self) -> Value {
        json!({
            "server_cpu_us_per_handshake": self.server_cpu_us_per_handshake(),
            "requested": self.requested,
            "ok": self.ok,
            "failed": self.failed,
            "secs": self.secs,
            "rate_per_sec": self.rate_per_sec(),
            "failures": self.failures,
            "handshake_p50_ms": self.handshake_p50_ms,
            "handshake_p99_ms": self.handshake_p99_ms,
            "server_rss_before_kib": self.rss_before_kib,
            "server_rss_after_kib": self.rss_after_kib,
            "server_rss_per_conn_bytes": self.rss_per_conn(),
            "kernel_backlog_drops": self.net.backlog_drops,
            "kernel_tcp_retrans_segs": self.net.retrans_segs,
            "kernel_listen_drops": self.net.listen_drops,
        })
    }
}

pub(crate) struct StepReport {
    pub(crate) step: usize,
    pub(crate) rate: f64,
    pub(crate) clients: u64,
    pub(crate) sent: u64,
    pub(crate) publish_secs: f64,
    pub(crate) expected: u64,
    pub(crate) delivered: u64,
    pub(crate) settle_secs: f64,
    pub(crate) p50_ms: Option<f64>,
    pub(crate) p99_ms: Option<f64>,
    pub(crate) p999_ms: Option<f64>,
    pub(crate) max_ms: Option<f64>,
    pub(crate) order_violations: u64,
    pub(crate) gaps: u64,
    pub(crate) disconnects: u64,
    /// Server CPU over the publish window: ms, %.
    pub(crate) server_pub: Option<(f64, f64)>,
    /// Server CPU from publish start to the end of the settle period: ms.
    /// The per-delivery cost uses this one, because deliveries that arrive
    /// while settling were paid for then.
    pub(crate) server_total_ms: Option<f64>,
    pub(crate) loadgen_thread: String,
    pub(crate) loadgen_thread_pct: f64,
    pub(crate) loadgen_total_pct: f64,
    pub(crate) net: procfs::NetCounters,
    pub(crate) others_pct: Option<f64>,
    /// `Some` only in a ramp, where a step can fail.
    pub(crate) pass: Option<bool>,
}

impl StepReport {
    pub(crate) fn lost(&self) -> u64 {
        self.expected.saturating_sub(self.delivered)
    }

    pub(crate) fn loss_ratio(&self) -> f64 {
        if self.expected == 0 {
            0.0
        } else {
            self.lost() as f64 / self.expected as f64
        }
    }

    pub(crate) fn delivered_per_sec(&self) -> f64 {
        self.delivered as f64 / self.publish_secs.max(1e-9)
    }

    /// Relay CPU per 1,000 deliveries: the figure that compares relays
    /// across rates and client counts.
    pub(crate) fn cpu_per_1k(&self) -> Option<f64> {
        let ms = self.server_total_ms?;
        (self.delivered > 0).then(|| ms / self.delivered as f64 * 1000.0)
    }

    fn json(&self) -> Value {
        json!({
            "step": self.step,
            "rate": self.rate,
            "clients": self.clients,
            "published": self.sent,
            "publish_secs": self.publish_secs,
            "expected": self.expected,
            "delivered": self.delivered,
            "lost": self.lost(),
            "extra": self.delivered.saturating_sub(self.expected),
            "loss_ratio": self.loss_ratio(),
            "settle_secs": self.settle_secs,
            "delivered_per_sec": self.delivered_per_sec(),
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "p999_ms": self.p999_ms,
            "max_ms": self.max_ms,
            "order_violations": self.order_violations,
            "gaps": self.gaps,
            "disconnects": self.disconnects,
            "server_cpu_ms": self.server_pub.map(|c| c.0),
            "server_cpu_pct": self.server_pub.map(|c| c.1),
            "server_cpu_ms_incl_settle": self.server_total_ms,
            "server_cpu_ms_per_1k": self.cpu_per_1k(),
            "loadgen_busiest_thread": self.loadgen_thread,
            "loadgen_max_thread_cpu_pct": self.loadgen_thread_pct,
            "loadgen_cpu_pct": self.loadgen_total_pct,
            "kernel_backlog_drops": self.net.backlog_drops,
            "kernel_tcp_retrans_segs": self.net.retrans_segs,
            "other_processes_cpu_pct": self.others_pct,
            "pass": self.pass,
        })
    }
}

pub(crate) struct IdleReport {
    pub(crate) secs: f64,
    pub(crate) clients: u64,
    /// Relay CPU: ms, %.
    pub(crate) server: Option<(f64, f64)>,
    pub(crate) rss_end_kib: Option<u64>,
    pub(crate) loadgen_thread_pct: f64,
    pub(crate) disconnects: u64,
    pub(crate) others_pct: Option<f64>,
}

impl IdleReport {
    fn json(&self) -> Value {
        json!({
            "secs": self.secs,
            "clients": self.clients,
            "server_cpu_ms": self.server.map(|s| s.0),
            "server_cpu_pct": self.server.map(|s| s.1),
            "server_rss_end_kib": self.rss_end_kib,
            "loadgen_max_thread_cpu_pct": self.loadgen_thread_pct,
            "disconnects": self.disconnects,
            "other_processes_cpu_pct": self.others_pct,
        })
    }
}

pub(crate) struct Report {
    pub(crate) connect: ConnectReport,
    pub(crate) steps: Vec<StepReport>,
    pub(crate) idle: Option<IdleReport>,
    pub(crate) samples: Vec<Sample>,
    pub(crate) warnings: Vec<String>,
    pub(crate) ends: BTreeMap<String, u64>,
    pub(crate) foreign: u64,
    pub(crate) pings: u64,
    /// Connections whose server agreed to permessage-deflate.
    pub(crate) deflate_agreed: u64,
    /// Messages that came compressed.
    pub(crate) inflated: u64,
    /// Bytes of frames read, all clients.
    pub(crate) wire_bytes: u64,
    /// `None` when nothing was published (idle mode, or no client).
    pub(crate) subscribers: Option<u64>,
    pub(crate) to_nobody: u64,
    pub(crate) redis_errors: u64,
    pub(crate) bottleneck: bool,
    pub(crate) interrupted: bool,
}

/// Whether a thread of the load generator was busy enough, in any step or
/// the idle hold, that its own limits may be in the figures.
pub(crate) fn loadgen_bottleneck(steps: &[StepReport], idle: Option<&IdleReport>) -> bool {
    steps
        .iter()
        .map(|s| s.loadgen_thread_pct)
        .chain(idle.map(|i| i.loadgen_thread_pct))
        .any(|pct| pct > BOTTLENECK_PCT)
}

impl Report {
    /// Warnings about how far the figures can be trusted: the machine
    /// was busy, the kernel dropped packets, or the load generator was
    /// the limit. Appended after the run's own warnings, in this order.
    pub(crate) fn add_caveats(&mut self) {
        let others = self
            .steps
            .iter()
            .filter_map(|s| s.others_pct)
            .chain(self.idle.as_ref().and_then(|i| i.others_pct))
            .fold(0.0, f64::max);
        if others > BUSY_OTHERS_PCT {
            self.warnings.push(format!(
                "other processes on this machine used up to {others:.0}% of a core during the measurement: latency (and, less, CPU per delivery) is noisy; compare runs interleaved"
            ));
        }
        let drops: u64 = self.steps.iter().map(|s| s.net.backlog_drops).sum();
        if drops > 0 {
            self.warnings.push(format!(
                "the kernel dropped {drops} packets (system-wide) because a CPU's input backlog was full (net.core.netdev_max_backlog = {}): on loopback every fan-out burst queues there, and a dropped segment waits for TCP's retransmission (≥ 200 ms), so latency includes retransmission delays",
                procfs::netdev_max_backlog().map_or("?".into(), |v| v.to_string())
            ));
        }
        if self.connect.net.listen_drops > 0 {
            self.warnings.push(format!(
                "{} connection attempts were dropped by a full accept queue during the connect phase (system-wide ListenDrops, other processes included); such a client retries its SYN after 1 s, which shows in the upgrade p99",
                self.connect.net.listen_drops
            ));
        }
        if self.bottleneck {
            self.warnings.push(format!(
                "load generator was the bottleneck: a thread of it used more than {BOTTLENECK_PCT}% of a core, so latency and loss may be its own (add --threads on a free core, or fewer clients)"
            ));
        }
        if self.interrupted {
            self.warnings
                .push("interrupted: figures cover only part of the run".into());
        }
    }

    /// `run_id` and `nofile` are in the line so that a run can be told
    /// apart from a repeat and its client count checked against the limit.
    pub(crate) fn to_json(&self, a: &Args, mode: Mode, run_id: u64, nofile: (u64, u64)) -> Value {
        json!({
            "tool": "pubsocketd-loadtest",
            "mode": mode.name(),
            "label": a.label,
            "run": run_id,
            "url": a.url,
            "transport": a.transport,
            "clients": a.clients,
            "rate": a.rate,
            "size": a.size,
            "duration": a.duration,
            "server_pid": a.server_pid,
            "nofile": {"before": nofile.0, "after": nofile.1},
            "connect": self.connect.json(),
            "netdev_max_backlog": procfs::netdev_max_backlog(),
            "steps": self.steps.iter().map(StepReport::json).collect::<Vec<_>>(),
            "idle": self.idle.as_ref().map(IdleReport::json),
            "subscribers": self.subscribers,
            "published_to_nobody": self.to_nobody,
            "redis_errors": self.redis_errors,
            "foreign_messages": self.foreign,
            "pings": self.pings,
            "deflate": {
                "offered": a.deflate,
                "agreed": self.deflate_agreed,
                "compressed_messages": self.inflated,
            },
            "wire_bytes": self.wire_bytes,
            "connection_ends": self.ends,
            "loadgen_bottleneck": self.bottleneck,
            "interrupted": self.interrupted,
            "warnings": self.warnings,
        })
    }
}
