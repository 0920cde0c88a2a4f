//! `/metrics` (Prometheus text format), `/healthz` and `/readyz`, on their
//! own listener (`-metrics-addr`), served by the main thread so that a
//! scrape never touches a worker.

use crate::channels::Live;
use crate::demand::Demand;
use crate::net::accept::Acceptor;
use crate::net::http::{self, HeadError, Response};
use crate::ops::stats::{largest, KeyCounters, Stats};
use slog::{debug, Logger};
use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// What the metrics endpoint reports besides the counters.
pub struct Info {
    /// The channels and patterns relayed now (a reload changes them).
    pub channels: Arc<Live>,
    pub max_connections: usize,
    pub workers: usize,
    /// The write backend the workers started with (`-io`, after any
    /// fallback to epoll).
    pub io: &'static str,
    /// `-rs-on-demand`: the channels subscribed as clients read them.
    pub demand: Option<Arc<Demand>>,
}

/// Largest request head read.
const MAX_HEAD: usize = 4096;
/// Time for a request head to arrive, and for the answer to go out.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Serves the three endpoints until the task is dropped.
pub async fn serve(listener: TcpListener, stats: Arc<Stats>, info: Arc<Info>, log: Logger) {
    Acceptor::new(listener, "[metrics] accept", log.clone())
        .serve(move |stream, _| answer(stream, stats.clone(), info.clone(), log.clone()))
        .await
}

/// Reads one request (with a deadline) and writes the response.
async fn answer(mut stream: TcpStream, stats: Arc<Stats>, info: Arc<Info>, log: Logger) {
    let deadline = Instant::now() + TIMEOUT;
    let response = match http::read_head(&mut stream, MAX_HEAD, deadline).await {
        Ok(head) => route(&head.method, &head.path, &stats, &info),
        Err(HeadError::Refused(bad)) => Response::text(bad.status, &bad.why),
        Err(HeadError::TimedOut) => return debug!(log, "[metrics] no complete request in time"),
        Err(HeadError::Gone) => return,
    };
    http::answer_and_close(&mut stream, &response.to_bytes(), TIMEOUT).await;
}

fn route(method: &str, path: &str, stats: &Stats, info: &Info) -> Response {
    const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";
    match (method == "GET", path) {
        (true, "/metrics") => Response::new(200, PROMETHEUS, render(stats, info)),
        (true, "/healthz") => Response::text(200, "ok"),
        (true, "/channels") => Response::json(200, &channels(stats, info)),
        (true, "/readyz") if stats.redis_up.load(Relaxed) || stats.embedded.load(Relaxed) => {
            Response::text(200, "ready")
        }
        (true, "/readyz") => Response::text(503, "not subscribed to Redis"),
        (false, "/metrics" | "/healthz" | "/readyz" | "/channels") => {
            Response::text(405, "GET only").header("Allow", "GET")
        }
        _ => Response::text(404, "try /metrics, /healthz, /readyz or /channels"),
    }
}

/// `/channels`: clients per concrete channel chosen under a pattern, and
/// per configured key (those that read everything count in every key),
/// each the `MAX_LISTED` largest.
fn channels(stats: &Stats, info: &Info) -> serde_json::Value {
    let chosen: serde_json::Map<String, serde_json::Value> = stats
        .chosen_channels()
        .into_iter()
        .map(|(c, n)| (String::from_utf8_lossy(&c).into_owned(), n.into()))
        .collect();
    let channels = info.channels.get();
    let mut keys: Vec<(&str, u64)> = channels
        .live()
        .map(|(id, k)| (k.name.as_str(), stats.key_clients(id as usize)))
        .filter(|(_, n)| *n > 0)
        .collect();
    largest(&mut keys);
    let keys: serde_json::Map<String, serde_json::Value> = keys
        .into_iter()
        .map(|(k, n)| (k.to_string(), n.into()))
        .collect();
    serde_json::json!({ "channels": chosen, "keys": keys })
}

/// The Prometheus text exposition being written.
struct Exposition {
    out: String,
}

impl Exposition {
    /// One metric: its help and type lines, then a line per sample
    /// (`labels` is `{…}` or empty).
    fn metric(&mut self, name: &str, kind: &str, help: &str, samples: &[(String, u64)]) {
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(self.out, "{name}{labels} {value}");
        }
    }

    /// A metric without labels.
    fn one(&mut self, name: &str, kind: &str, help: &str, value: u64) {
        self.metric(name, kind, help, &[(String::new(), value)]);
    }
}

fn load(a: &std::sync::atomic::AtomicU64) -> u64 {
    a.load(Relaxed)
}

/// The Prometheus text exposition of every counter.
pub fn render(stats: &Stats, info: &Info) -> String {
    let mut e = Exposition {
        out: String::with_capacity(4096),
    };
    process(&mut e, info);
    connections(&mut e, stats, info);
    per_key(&mut e, stats, info);
    deliveries(&mut e, stats);
    redis(&mut e, stats, info);
    history(&mut e, stats);
    e.out
}

/// What is running: version, write backend, workers.
fn process(e: &mut Exposition, info: &Info) {
    let build = format!(
        "{{version=\"{}\",io=\"{}\"}}",
        env!("CARGO_PKG_VERSION"),
        info.io
    );
    e.metric(
        "pubsocketd_build_info",
        "gauge",
        "Version of the running relay, and its write backend (-io).",
        &[(build, 1)],
    );
    e.one(
        "pubsocketd_workers",
        "gauge",
        "Worker threads.",
        info.workers as u64,
    );
}

/// Clients: open, the cap, accepted, refused by status.
fn connections(e: &mut Exposition, stats: &Stats, info: &Info) {
    e.one(
        "pubsocketd_connections_open",
        "gauge",
        "Clients connected now (WebSocket and event streams).",
        load(&stats.open),
    );
    e.one(
        "pubsocketd_connections_max",
        "gauge",
        "Clients accepted at most (-ws-max-connections).",
        info.max_connections as u64,
    );
    e.one(
        "pubsocketd_connections_accepted_total",
        "counter",
        "Clients accepted (WebSocket upgrades and event streams).",
        load(&stats.accepted),
    );
    let sse_open = load(&stats.sse_clients) + load(&stats.sse_named);
    let sse_accepted = load(&stats.sse_accepted);
    let by_transport = |ws: u64, sse: u64| {
        vec![
            ("{transport=\"ws\"}".to_string(), ws),
            ("{transport=\"sse\"}".to_string(), sse),
        ]
    };
    e.metric(
        "pubsocketd_transport_connections_open",
        "gauge",
        "Clients connected now, by transport (ws: WebSocket, sse: Server-Sent Events).",
        &by_transport(load(&stats.open).saturating_sub(sse_open), sse_open),
    );
    e.metric(
        "pubsocketd_transport_connections_accepted_total",
        "counter",
        "Clients accepted, by transport.",
        &by_transport(
            load(&stats.accepted).saturating_sub(sse_accepted),
            sse_accepted,
        ),
    );
    e.one(
        "pubsocketd_sse_skipped_total",
        "counter",
        "Messages not sent to event streams: binary payloads (not UTF-8) without -ws-envelope.",
        load(&stats.sse_skipped),
    );
    let refused: Vec<(String, u64)> = stats
        .refusals()
        .map(|(status, n)| {
            let label = match status {
                0 => "timeout".to_string(),
                s => s.to_string(),
            };
            (format!("{{status=\"{label}\"}}"), n)
        })
        .collect();
    e.metric(
        "pubsocketd_handshakes_refused_total",
        "counter",
        "Upgrade requests refused, by HTTP status (timeout: no complete request in time).",
        &refused,
    );
}

/// Messages and clients per configured channel or pattern.
fn per_key(e: &mut Exposition, stats: &Stats, info: &Info) {
    let channels = info.channels.get();
    let samples = |pick: fn(&KeyCounters) -> u64| -> Vec<(String, u64)> {
        channels
            .live()
            .map(|(id, k)| (label(&k.name), pick(&stats.keys[id as usize])))
            .collect()
    };
    let clients: Vec<(String, u64)> = channels
        .live()
        .map(|(id, k)| (label(&k.name), stats.key_clients(id as usize)))
        .collect();
    e.metric(
        "pubsocketd_messages_received_total",
        "counter",
        "Messages received (from Redis or the embedded broker), per configured channel or pattern.",
        &samples(|k| k.received.load(Relaxed)),
    );
    e.metric(
        "pubsocketd_messages_dropped_total",
        "counter",
        "Messages received but not relayed (over -rs-max-payload, or not JSON with -ws-json-only).",
        &samples(|k| k.dropped.load(Relaxed)),
    );
    e.metric(
        "pubsocketd_channel_clients",
        "gauge",
        "Clients receiving each configured channel or pattern.",
        &clients,
    );
}

/// What reached the sockets, what waits, and who was closed for it.
fn deliveries(e: &mut Exposition, stats: &Stats) {
    let (deliveries, bytes, queued) = stats.deliveries();
    e.one(
        "pubsocketd_deliveries_total",
        "counter",
        "Messages handed to client sockets (one per client per message).",
        deliveries,
    );
    e.one(
        "pubsocketd_delivered_bytes_total",
        "counter",
        "Bytes of the frames handed to client sockets.",
        bytes,
    );
    e.one(
        "pubsocketd_queued_bytes",
        "gauge",
        "Bytes waiting in client queues (sampled once a second per worker).",
        queued,
    );
    e.one(
        "pubsocketd_slow_consumer_closes_total",
        "counter",
        "Clients closed with 1008 for falling behind by more than -ws-queue-bytes.",
        load(&stats.slow_closed),
    );
    e.one(
        "pubsocketd_pong_timeout_closes_total",
        "counter",
        "Clients dropped after -ws-pong-timeout of silence.",
        load(&stats.pong_timeouts),
    );
}

/// The Redis link.
fn redis(e: &mut Exposition, stats: &Stats, info: &Info) {
    e.one(
        "pubsocketd_redis_connected",
        "gauge",
        "1 while subscribed to Redis.",
        u64::from(stats.redis_up.load(Relaxed)),
    );
    e.one(
        "pubsocketd_redis_reconnects_total",
        "counter",
        "Subscriptions restored after a lost Redis connection.",
        load(&stats.redis_reconnects),
    );
    e.one(
        "pubsocketd_redis_read_bytes_total",
        "counter",
        "Bytes read from Redis by the subscriber connections.",
        load(&stats.redis_bytes_read),
    );
    if let Some(d) = &info.demand {
        e.one(
            "pubsocketd_redis_on_demand_channels",
            "gauge",
            "Channels subscribed under -rs-on-demand (read, or in their grace).",
            d.subscribed() as u64,
        );
    }
}

/// Replays and the history (`-history`).
fn history(e: &mut Exposition, stats: &Stats) {
    let h = &stats.history;
    e.one(
        "pubsocketd_replayed_messages_total",
        "counter",
        "Messages replayed to clients that resumed with since.",
        load(&h.replayed),
    );
    e.one(
        "pubsocketd_resumes_recovered_total",
        "counter",
        "Resumes (per channel) that received every message after their since.",
        load(&h.recovered),
    );
    e.one(
        "pubsocketd_resumes_not_recovered_total",
        "counter",
        "Resumes (per channel) told recovered:false: messages after their since were no longer kept.",
        load(&h.not_recovered),
    );
    e.one(
        "pubsocketd_history_messages",
        "gauge",
        "Messages kept for replay (sampled on the tick).",
        load(&h.kept_messages),
    );
    e.one(
        "pubsocketd_stream_lag_milliseconds",
        "gauge",
        "-rs-mode=stream: now minus the time in the ID of the newest entry read (0 otherwise).",
        load(&h.stream_lag_ms),
    );
    e.one(
        "pubsocketd_history_bytes",
        "gauge",
        "Bytes of frames kept for replay, counted once (sampled on the tick).",
        load(&h.kept_bytes),
    );
}

/// The label of a configured channel or pattern.
fn label(name: &str) -> String {
    format!("{{channel=\"{}\"}}", escape(name))
}

/// Escapes a Prometheus label value.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_format() {
        let stats = Stats::new(2, 1);
        stats.workers[1].add(3, 30);
        stats.refused(403);
        stats.refused(0);
        let info = Info {
            channels: Arc::new(Live::new(crate::channels::Channels::parse("a\"b").unwrap())),
            max_connections: 10,
            workers: 2,
            io: "epoll",
            demand: Some(Demand::new(Duration::from_secs(1))),
        };
        if let Some(d) = &info.demand {
            d.acquire(&[bytes::Bytes::from_static(b"user.1")]);
        }
        let text = render(&stats, &info);
        assert!(text.contains("pubsocketd_redis_on_demand_channels 1\n"));
        assert!(text.contains("pubsocketd_deliveries_total 3\n"));
        assert!(text.contains("pubsocketd_handshakes_refused_total{status=\"403\"} 1\n"));
        assert!(text.contains("pubsocketd_handshakes_refused_total{status=\"timeout\"} 1\n"));
        assert!(text.contains("pubsocketd_messages_received_total{channel=\"a\\\"b\"} 0\n"));
        assert!(text.contains("# TYPE pubsocketd_connections_open gauge\n"));
        assert!(text.contains("pubsocketd_transport_connections_open{transport=\"sse\"} 0\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<u64>().is_ok(), "{line}");
        }
        assert_eq!(route("GET", "/readyz", &stats, &info).status, 503);
        stats.redis_up.store(true, Relaxed);
        assert_eq!(route("GET", "/readyz", &stats, &info).status, 200);
        assert_eq!(route("POST", "/metrics", &stats, &info).status, 405);
        assert_eq!(route("GET", "/nope", &stats, &info).status, 404);
    }
}
