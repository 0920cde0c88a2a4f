//! `pubsocketd-loadtest`: the fan-out load generator. See `--help` and
//! loadtest/README.md.

use argh::FromArgs;
use loadtest::client::{self, ClientCfg};
use loadtest::payload::{self, Stamp};
use loadtest::procfs;
use loadtest::publisher::{PubCounters, Publisher};
use loadtest::shared::{Shared, MAX_STEPS};
use loadtest::svg::{self, Sample};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::time::sleep;

/// A thread above this share of one core means the load generator, not
/// the relay, may have been the limit.
const BOTTLENECK_PCT: f64 = 85.0;
/// Other processes above this share of one core make the figures noisy.
const BUSY_OTHERS_PCT: f64 = 20.0;
/// Descriptors kept for the runtime, Redis, /proc reads.
const RESERVED_FDS: u64 = 64;

#[derive(FromArgs)]
/// Fan-out load generator for pubsocketd: opens N WebSocket clients on
/// loopback, publishes stamped messages to Redis at a fixed rate, and
/// measures deliveries, loss, per-client ordering, latency, and the relay's
/// CPU time and memory.
#[argh(
    note = "Modes: fanout (connect, publish --rate for --duration, settle, report), idle (connect, hold for --duration, report the relay's RSS per connection and idle CPU), ramp (publish at each of --rates in turn until a step loses messages or its p99 exceeds --p99-bound-ms), summary (read --json lines from --input and print median [min–max] per figure and the pubsocketd/floor ratio, as Markdown).",
    note = "Limits: ws:// only (no wss://: measure TLS separately). Loopback addresses only, for the relay, Redis and the client sources. The soft RLIMIT_NOFILE is raised to the hard limit at start; on this machine every process is capped at 20,000 descriptors, so one loadtest process opens at most about 19,000 clients (run several processes, each with its own --sources, for more). Each client is bound to one of the source addresses in turn, so that ephemeral ports never run out.",
    note = "Figures: latency is receive time minus the send time in the payload (CLOCK_REALTIME, same machine). Loss = clients x published - delivered, counted after the settle period. Relay CPU and RSS need --server-pid. The output says when the load generator itself was above 85% of a core (it was then the bottleneck)."
)]
struct Args {
    /// fanout (default), idle, ramp or summary
    #[argh(option, default = "String::from(\"fanout\")")]
    mode: String,
    /// relay URL, ws:// on a loopback address (default ws://127.0.0.1:8080/)
    #[argh(option, default = "String::from(\"ws://127.0.0.1:8080/\")")]
    url: String,
    /// value of the Origin header to send (default none)
    #[argh(option)]
    origin: Option<String>,
    /// offer permessage-deflate (each message compressed on its own);
    /// compressed messages are inflated, then checked like the others
    #[argh(switch)]
    deflate: bool,
    /// what pads payloads to --size: x (compresses to almost nothing) or
    /// words (words and numbers, compressing about as a JSON feed does)
    /// (default x)
    #[argh(option, default = "String::from(\"x\")")]
    pad: String,
    /// number of WebSocket clients to open (default 1000)
    #[argh(option, default = "1000")]
    clients: usize,
    /// source addresses, comma-separated, all in 127.0.0.0/8 (default: from --source-count)
    #[argh(option)]
    sources: Option<String>,
    /// use 127.0.0.2 … 127.0.0.(K+1) as source addresses (default 4)
    #[argh(option, default = "4")]
    source_count: usize,
    /// most upgrades in flight at once (default 200)
    #[argh(option, default = "200")]
    connect_concurrency: usize,
    /// seconds one connect + upgrade may take before it counts as failed (default 10)
    #[argh(option, default = "10.0")]
    handshake_timeout: f64,
    /// seconds the whole connect phase may take (default 120)
    #[argh(option, default = "120.0")]
    connect_timeout: f64,
    /// client threads, each a current-thread runtime (default 1)
    #[argh(option, default = "1")]
    threads: usize,
    /// address of Redis, loopback (default 127.0.0.1:6379)
    #[argh(option, default = "String::from(\"127.0.0.1:6379\")")]
    redis: String,
    /// the Redis channel the relay subscribes to (default pubsocketd)
    #[argh(option, default = "String::from(\"pubsocketd\")")]
    channel: String,
    /// messages published per second (default 100)
    #[argh(option, default = "100.0")]
    rate: f64,
    /// payload size in bytes, at least about 70 (default 128)
    #[argh(option, default = "128")]
    size: usize,
    /// seconds of publishing (fanout, each ramp step) or holding (idle) (default 10)
    #[argh(option, default = "10.0")]
    duration: f64,
    /// most seconds to wait after the last publish for late messages before counting loss; ends early once all arrived (default 5)
    #[argh(option, default = "5.0")]
    settle: f64,
    /// process id of the relay, to read its CPU time and RSS from /proc
    #[argh(option)]
    server_pid: Option<u32>,
    /// print one JSON line with every figure at the end
    #[argh(switch)]
    json: bool,
    /// write an SVG plot of latency and throughput over time to this file
    #[argh(option)]
    svg: Option<String>,
    /// ramp: a step fails when its p99 latency exceeds this (default 50)
    #[argh(option, default = "50.0")]
    p99_bound_ms: f64,
    /// ramp: comma-separated rates to try in turn (default 100,200,500,1000,2000,5000,10000)
    #[argh(option, default = "String::from(\"100,200,500,1000,2000,5000,10000\")")]
    rates: String,
    /// a name copied into the JSON line (the compare script uses SCENARIO/SERVER)
    #[argh(option)]
    label: Option<String>,
    /// summary: file of JSON lines to summarise ('-' for stdin)
    #[argh(option)]
    input: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Fanout,
    Idle,
    Ramp,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Fanout => "fanout",
            Mode::Idle => "idle",
            Mode::Ramp => "ramp",
        }
    }
}

fn main() {
    let args: Args = argh::from_env();
    match run(args) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("pubsocketd-loadtest: {e}");
            std::process::exit(2)
        }
    }
}

fn run(a: Args) -> Result<i32, String> {
    let mode = match a.mode.as_str() {
        "fanout" => Mode::Fanout,
        "idle" => Mode::Idle,
        "ramp" => Mode::Ramp,
        "summary" => return summary(a.input.as_deref()),
        m => {
            return Err(format!(
                "unknown --mode {m:?} (fanout, idle, ramp or summary)"
            ))
        }
    };
    let (server, host, target) = parse_url(&a.url)?;
    let redis = loopback_addr(&a.redis, 6379).map_err(|e| format!("--redis: {e}"))?;
    let sources = sources(&a)?;
    let rates = match mode {
        Mode::Ramp => parse_rates(&a.rates)?,
        _ => vec![a.rate],
    };
    if rates.iter().any(|r| !(r.is_finite() && *r > 0.0)) {
        return Err("rates must be above 0".into());
    }
    if !(a.duration > 0.0
        && a.settle >= 0.0
        && a.handshake_timeout > 0.0
        && a.connect_timeout > 0.0)
    {
        return Err("--duration, --handshake-timeout and --connect-timeout must be above 0, --settle at least 0".into());
    }
    if a.clients == 0 || a.threads == 0 || a.connect_concurrency == 0 {
        return Err("--clients, --threads and --connect-concurrency must be at least 1".into());
    }
    let nofile = procfs::raise_nofile().map_err(|e| format!("cannot raise RLIMIT_NOFILE: {e}"))?;
    if a.clients as u64 + RESERVED_FDS > nofile.1 {
        return Err(format!(
            "{} clients need {} descriptors but the open-file limit is {} (hard limit); one process opens at most about {} clients here: run several processes",
            a.clients,
            a.clients as u64 + RESERVED_FDS,
            nofile.1,
            nofile.1.saturating_sub(RESERVED_FDS)
        ));
    }
    if let Some(pid) = a.server_pid {
        if !procfs::alive(pid) {
            return Err(format!("--server-pid {pid}: no such process"));
        }
    }
    let run_id = client::now_ns() % 1_000_000_007 + u64::from(std::process::id());
    let min = payload::min_size(&Stamp {
        seq: 1_000_000,
        t_ns: client::now_ns(),
        run: run_id,
        step: 0,
    });
    let cfg = Arc::new(ClientCfg {
        server,
        host,
        target,
        origin: a.origin.clone(),
        deflate: a.deflate,
        sources,
        handshake_timeout: Duration::from_secs_f64(a.handshake_timeout),
    });
    if !matches!(a.pad.as_str(), "x" | "words") {
        return Err(format!("unknown --pad {:?} (x or words)", a.pad));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let report = rt.block_on(coordinate(&a, mode, cfg, redis, rates, run_id))?;
    let mut report = report;
    if a.size < min {
        report.warnings.push(format!(
            "--size {} is below the smallest stamped payload; payloads were about {min} bytes",
            a.size
        ));
    }
    print_table(&a, mode, &report);
    if let Some(path) = &a.svg {
        let title = format!(
            "{} {}: {} clients, {} B, {}",
            mode.name(),
            a.url,
            a.clients,
            a.size,
            a.label.as_deref().unwrap_or("")
        );
        std::fs::write(path, svg::render(&title, &report.samples))
            .map_err(|e| format!("cannot write {path}: {e}"))?;
    }
    if a.json {
        println!("{}", report.to_json(&a, mode, run_id, nofile));
    }
    Ok(0)
}

fn summary(input: Option<&str>) -> Result<i32, String> {
    let text = match input {
        None | Some("-") => std::io::read_to_string(std::io::stdin()).map_err(|e| e.to_string())?,
        Some(p) => std::fs::read_to_string(p).map_err(|e| format!("cannot read {p}: {e}"))?,
    };
    print!("{}", loadtest::summary::summarize(&text));
    Ok(0)
}

/// `ws://HOST:PORT/path?query` on a loopback address: the address, the
/// Host header and the request target.
fn parse_url(url: &str) -> Result<(SocketAddr, String, String), String> {
    let rest = match url.strip_prefix("ws://") {
        Some(r) => r,
        None if url.starts_with("wss://") => {
            return Err("wss:// is not supported by this tool: measure the relay over ws://".into())
        }
        None => return Err(format!("--url {url:?} must start with ws://")),
    };
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, target) = rest.split_at(split);
    let target = match target {
        "" => "/".to_string(),
        t if t.starts_with('?') => format!("/{t}"),
        t => t.to_string(),
    };
    let addr = loopback_addr(authority, 80).map_err(|e| format!("--url: {e}"))?;
    Ok((addr, authority.to_string(), target))
}

/// `HOST[:PORT]` where HOST is `localhost` or an address in 127.0.0.0/8.
fn loopback_addr(s: &str, default_port: u16) -> Result<SocketAddr, String> {
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().map_err(|_| format!("bad port in {s:?}"))?),
        None => (s, default_port),
    };
    let ip: Ipv4Addr = if host == "localhost" {
        Ipv4Addr::LOCALHOST
    } else {
        host.parse()
            .map_err(|_| format!("{host:?} is not an IPv4 address (loopback only)"))?
    };
    if !ip.is_loopback() {
        return Err(format!(
            "{ip} is not a loopback address; this tool only talks to 127.0.0.0/8"
        ));
    }
    Ok(SocketAddr::V4(SocketAddrV4::new(ip, port)))
}

fn sources(a: &Args) -> Result<Vec<Ipv4Addr>, String> {
    let list: Vec<Ipv4Addr> = match &a.sources {
        Some(s) => s
            .split(',')
            .map(|x| {
                x.trim()
                    .parse()
                    .map_err(|_| format!("--sources: bad address {x:?}"))
            })
            .collect::<Result<_, _>>()?,
        None => {
            if a.source_count == 0 || a.source_count > 250 {
                return Err("--source-count must be 1 to 250".into());
            }
            (0..a.source_count)
                .map(|i| Ipv4Addr::new(127, 0, 0, 2 + i as u8))
                .collect()
        }
    };
    if list.is_empty() || list.iter().any(|ip| !ip.is_loopback()) {
        return Err("--sources must be loopback addresses (127.0.0.0/8)".into());
    }
    Ok(list)
}

fn parse_rates(s: &str) -> Result<Vec<f64>, String> {
    let rates: Vec<f64> = s
        .split(',')
        .map(|x| {
            x.trim()
                .parse()
                .map_err(|_| format!("--rates: bad rate {x:?}"))
        })
        .collect::<Result<_, _>>()?;
    if rates.is_empty() || rates.len() > MAX_STEPS {
        return Err(format!("--rates: 1 to {MAX_STEPS} rates"));
    }
    Ok(rates)
}

/// The live line and the per-second samples.
struct Monitor {
    sh: Arc<Shared>,
    clients: usize,
    start: Instant,
    next_tick: Instant,
    last: Instant,
    last_delivered: u64,
    last_published: u64,
    published: Option<Arc<PubCounters>>,
    phase: String,
    step: Option<usize>,
    samples: Vec<Sample>,
    interrupted: Arc<AtomicBool>,
}

impl Monitor {
    fn maybe_tick(&mut self) {
        let now = Instant::now();
        if now >= self.next_tick {
            self.tick(now);
            self.next_tick = now + Duration::from_secs(1);
        }
    }

    fn tick(&mut self, now: Instant) {
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
    async fn wait(&mut self, deadline: Instant, mut done: impl FnMut() -> bool) {
        while !done() && Instant::now() < deadline && !self.interrupted.load(Relaxed) {
            sleep(Duration::from_millis(20)).await;
            self.maybe_tick();
        }
    }
}

fn fmt_us(us: u64) -> String {
    format!("{:.2} ms", us as f64 / 1000.0)
}

/// CPU readings at one instant.
struct CpuMark {
    at: Instant,
    server_ns: Option<u64>,
    self_ns: u64,
    /// (thread name, ns) for the client threads and the main thread.
    threads: Vec<(String, u64)>,
    /// CPU time of every process on the machine.
    machine_ns: Option<u64>,
}

fn cpu_mark(server: Option<u32>, sh: &Shared, main_tid: u32) -> CpuMark {
    let pid = std::process::id();
    let mut threads: Vec<(String, u64)> = sh
        .tids
        .lock()
        .unwrap()
        .iter()
        .enumerate()
        .filter_map(|(i, tid)| {
            Some((
                format!("clients-{i}"),
                procfs::thread_cpu_ns(pid, *tid).ok()?,
            ))
        })
        .collect();
    if let Ok(ns) = procfs::thread_cpu_ns(pid, main_tid) {
        threads.push(("main (publisher)".into(), ns));
    }
    CpuMark {
        at: Instant::now(),
        server_ns: server.and_then(|p| procfs::cpu_ns(p).ok()),
        self_ns: procfs::self_cpu_ns(),
        threads,
        machine_ns: procfs::machine_busy_ns(),
    }
}

/// CPU % of one core that processes other than the load generator and the
/// relay used between two marks (builds, other tests): noise in the
/// figures. Tick-based (10 ms), so only meaningful over seconds.
fn others_cpu(a: &CpuMark, b: &CpuMark) -> Option<f64> {
    let all = b.machine_ns?.checked_sub(a.machine_ns?)? as f64;
    let ours = b.self_ns.saturating_sub(a.self_ns) as f64;
    let relay = match (a.server_ns, b.server_ns) {
        (Some(x), Some(y)) => y.saturating_sub(x) as f64,
        _ => 0.0,
    };
    let wall = b.at.duration_since(a.at).as_nanos().max(1) as f64;
    Some(((all - ours - relay) / wall * 100.0).max(0.0))
}

/// Load generator CPU between two marks: (busiest thread, its %, whole process %).
fn loadgen_cpu(a: &CpuMark, b: &CpuMark) -> (String, f64, f64) {
    let wall = b.at.duration_since(a.at).as_nanos().max(1) as f64;
    let mut busiest = (String::new(), 0.0);
    for (name, end) in &b.threads {
        if let Some((_, start)) = a.threads.iter().find(|(n, _)| n == name) {
            let pct = end.saturating_sub(*start) as f64 / wall * 100.0;
            if pct > busiest.1 {
                busiest = (name.clone(), pct);
            }
        }
    }
    let total = b.self_ns.saturating_sub(a.self_ns) as f64 / wall * 100.0;
    (busiest.0, busiest.1, total)
}

fn server_cpu(a: &CpuMark, b: &CpuMark) -> Option<(f64, f64)> {
    let ns = b.server_ns?.checked_sub(a.server_ns?)? as f64;
    let wall = b.at.duration_since(a.at).as_nanos().max(1) as f64;
    Some((ns / 1e6, ns / wall * 100.0))
}

#[derive(Default)]
struct ConnectReport {
    requested: usize,
    ok: u64,
    failed: u64,
    secs: f64,
    failures: BTreeMap<String, u64>,
    handshake_p50_ms: f64,
    handshake_p99_ms: f64,
    rss_before_kib: Option<u64>,
    rss_after_kib: Option<u64>,
    net: procfs::NetCounters,
}

impl ConnectReport {
    fn rss_per_conn(&self) -> Option<f64> {
        let (b, a) = (self.rss_before_kib?, self.rss_after_kib?);
        (self.ok > 0).then(|| (a as f64 - b as f64) * 1024.0 / self.ok as f64)
    }
}

struct StepReport {
    step: usize,
    rate: f64,
    clients: u64,
    sent: u64,
    publish_secs: f64,
    expected: u64,
    delivered: u64,
    settle_secs: f64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    p999_ms: Option<f64>,
    max_ms: Option<f64>,
    order_violations: u64,
    gaps: u64,
    disconnects: u64,
    /// Server CPU over the publish window: ms, %.
    server_pub: Option<(f64, f64)>,
    /// Server CPU from publish start to the end of the settle period: ms.
    server_total_ms: Option<f64>,
    loadgen_thread: String,
    loadgen_thread_pct: f64,
    loadgen_total_pct: f64,
    net: procfs::NetCounters,
    others_pct: Option<f64>,
    pass: Option<bool>,
}

impl StepReport {
    fn lost(&self) -> u64 {
        self.expected.saturating_sub(self.delivered)
    }
    fn loss_ratio(&self) -> f64 {
        if self.expected == 0 {
            0.0
        } else {
            self.lost() as f64 / self.expected as f64
        }
    }
    fn delivered_per_sec(&self) -> f64 {
        self.delivered as f64 / self.publish_secs.max(1e-9)
    }
    fn cpu_per_1k(&self) -> Option<f64> {
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

struct IdleReport {
    secs: f64,
    clients: u64,
    server: Option<(f64, f64)>,
    rss_end_kib: Option<u64>,
    loadgen_thread_pct: f64,
    disconnects: u64,
    others_pct: Option<f64>,
}

struct Report {
    connect: ConnectReport,
    steps: Vec<StepReport>,
    idle: Option<IdleReport>,
    samples: Vec<Sample>,
    warnings: Vec<String>,
    ends: BTreeMap<String, u64>,
    foreign: u64,
    pings: u64,
    /// Connections whose server agreed to permessage-deflate.
    deflate_agreed: u64,
    /// Messages that came compressed.
    inflated: u64,
    /// Bytes of frames read, all clients.
    wire_bytes: u64,
    subscribers: Option<u64>,
    to_nobody: u64,
    redis_errors: u64,
    bottleneck: bool,
    interrupted: bool,
}

impl Report {
    fn to_json(&self, a: &Args, mode: Mode, run_id: u64, nofile: (u64, u64)) -> Value {
        let c = &self.connect;
        json!({
            "tool": "pubsocketd-loadtest",
            "mode": mode.name(),
            "label": a.label,
            "run": run_id,
            "url": a.url,
            "clients": a.clients,
            "rate": a.rate,
            "size": a.size,
            "duration": a.duration,
            "server_pid": a.server_pid,
            "nofile": {"before": nofile.0, "after": nofile.1},
            "connect": {
                "requested": c.requested,
                "ok": c.ok,
                "failed": c.failed,
                "secs": c.secs,
                "rate_per_sec": c.ok as f64 / c.secs.max(1e-9),
                "failures": c.failures,
                "handshake_p50_ms": c.handshake_p50_ms,
                "handshake_p99_ms": c.handshake_p99_ms,
                "server_rss_before_kib": c.rss_before_kib,
                "server_rss_after_kib": c.rss_after_kib,
                "server_rss_per_conn_bytes": c.rss_per_conn(),
                "kernel_backlog_drops": c.net.backlog_drops,
                "kernel_tcp_retrans_segs": c.net.retrans_segs,
                "kernel_listen_drops": c.net.listen_drops,
            },
            "netdev_max_backlog": procfs::netdev_max_backlog(),
            "steps": self.steps.iter().map(StepReport::json).collect::<Vec<_>>(),
            "idle": self.idle.as_ref().map(|i| json!({
                "secs": i.secs,
                "clients": i.clients,
                "server_cpu_ms": i.server.map(|s| s.0),
                "server_cpu_pct": i.server.map(|s| s.1),
                "server_rss_end_kib": i.rss_end_kib,
                "loadgen_max_thread_cpu_pct": i.loadgen_thread_pct,
                "disconnects": i.disconnects,
                "other_processes_cpu_pct": i.others_pct,
            })),
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

async fn coordinate(
    a: &Args,
    mode: Mode,
    cfg: Arc<ClientCfg>,
    redis: SocketAddr,
    rates: Vec<f64>,
    run_id: u64,
) -> Result<Report, String> {
    let sh = Arc::new(Shared::new(run_id));
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let flag = interrupted.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("pubsocketd-loadtest: interrupted; finishing the report");
                flag.store(true, Relaxed);
            }
        });
    }
    let main_tid = procfs::gettid();
    let server = a.server_pid;
    let mut mon = Monitor {
        sh: sh.clone(),
        clients: a.clients,
        start: Instant::now(),
        next_tick: Instant::now() + Duration::from_secs(1),
        last: Instant::now(),
        last_delivered: 0,
        last_published: 0,
        published: None,
        phase: "connecting".into(),
        step: None,
        samples: Vec::new(),
        interrupted: interrupted.clone(),
    };
    let mut warnings = Vec::new();

    // Connect.
    let rss_before = server.and_then(|p| procfs::rss_kib(p).ok());
    let net0 = procfs::NetCounters::read();
    let connect_start = Instant::now();
    let threads = client::spawn(cfg, sh.clone(), a.clients, a.threads, a.connect_concurrency)
        .map_err(|e| format!("cannot start client threads: {e}"))?;
    let deadline = connect_start + Duration::from_secs_f64(a.connect_timeout);
    let c = &sh.c;
    let total = a.clients as u64;
    mon.wait(deadline, || {
        c.handshakes_ok.load(Relaxed) + c.handshakes_failed.load(Relaxed) >= total
    })
    .await;
    let connect_secs = connect_start.elapsed().as_secs_f64();
    // Let the relay finish what it does after the 101 before reading RSS.
    sleep(Duration::from_millis(300)).await;
    let (hs50, hs99) = {
        let h = sh.handshake_us.lock().unwrap();
        (
            h.value_at_quantile(0.5) as f64 / 1000.0,
            h.value_at_quantile(0.99) as f64 / 1000.0,
        )
    };
    let connect = ConnectReport {
        requested: a.clients,
        ok: c.handshakes_ok.load(Relaxed),
        failed: c.handshakes_failed.load(Relaxed),
        secs: connect_secs,
        failures: sh.failures.lock().unwrap().clone(),
        handshake_p50_ms: hs50,
        handshake_p99_ms: hs99,
        rss_before_kib: rss_before,
        rss_after_kib: server.and_then(|p| procfs::rss_kib(p).ok()),
        net: procfs::NetCounters::read().since(&net0),
    };
    eprintln!(
        "[{:6.1}s] connected {} of {} in {:.2} s ({:.0}/s), {} failed",
        mon.start.elapsed().as_secs_f64(),
        connect.ok,
        a.clients,
        connect.secs,
        connect.ok as f64 / connect.secs.max(1e-9),
        connect.failed
    );
    if connect.failed > 0 {
        warnings.push(format!(
            "{} of {} clients failed to connect: {:?}",
            connect.failed, a.clients, connect.failures
        ));
    }
    if connect.ok + connect.failed < total {
        warnings.push(format!(
            "{} clients were still connecting when the connect phase ended",
            total - connect.ok - connect.failed
        ));
    }

    let mut steps = Vec::new();
    let mut idle = None;
    let mut subscribers = None;
    let mut to_nobody = 0;
    let mut redis_errors = 0;
    let mut bottleneck = false;
    let duration = Duration::from_secs_f64(a.duration);
    let settle = Duration::from_secs_f64(a.settle);

    if c.connected.load(Relaxed) == 0 {
        warnings.push("no client connected; nothing was measured".into());
    } else if mode == Mode::Idle {
        mon.phase = "idle".into();
        let d0 = c.disconnected.load(Relaxed);
        let m0 = cpu_mark(server, &sh, main_tid);
        mon.wait(Instant::now() + duration, || false).await;
        let m1 = cpu_mark(server, &sh, main_tid);
        let (_, thread_pct, _) = loadgen_cpu(&m0, &m1);
        idle = Some(IdleReport {
            secs: m1.at.duration_since(m0.at).as_secs_f64(),
            clients: c.connected.load(Relaxed),
            server: server_cpu(&m0, &m1),
            rss_end_kib: server.and_then(|p| procfs::rss_kib(p).ok()),
            loadgen_thread_pct: thread_pct,
            disconnects: c.disconnected.load(Relaxed) - d0,
            others_pct: others_cpu(&m0, &m1),
        });
    } else {
        let (mut publisher, subs) = Publisher::connect(redis, &a.channel, Duration::from_secs(5))
            .await
            .map_err(|e| format!("Redis at {redis}: {e}"))?;
        publisher.words = a.pad == "words";
        subscribers = Some(subs);
        if subs == 0 {
            warnings.push(format!(
                "no subscriber on channel {:?} after 5 s: is the relay connected to this Redis?",
                a.channel
            ));
        }
        mon.published = Some(publisher.counters.clone());
        for (i, &rate) in rates.iter().enumerate() {
            if interrupted.load(Relaxed) || c.connected.load(Relaxed) == 0 {
                break;
            }
            mon.phase = if mode == Mode::Ramp {
                format!("step {i} at {rate}/s")
            } else {
                "publishing".into()
            };
            mon.step = Some(i);
            let clients = c.connected.load(Relaxed);
            let (ov0, gaps0, d0) = (
                c.order_violations.load(Relaxed),
                c.gaps.load(Relaxed),
                c.disconnected.load(Relaxed),
            );
            let m0 = cpu_mark(server, &sh, main_tid);
            let net0 = procfs::NetCounters::read();
            let published = {
                let publish =
                    publisher.step(rate, a.size, duration, run_id, i as u32, &interrupted);
                tokio::pin!(publish);
                loop {
                    tokio::select! {
                        r = &mut publish => break r,
                        _ = sleep(Duration::from_millis(20)) => mon.maybe_tick(),
                    }
                }
            }
            .map_err(|e| format!("publishing to Redis at {redis}: {e}"))?;
            let m_pub = cpu_mark(server, &sh, main_tid);
            publisher.drain(Duration::from_secs(5)).await;
            let expected = clients * published.sent;
            mon.phase = format!("settling step {i}");
            let settle_start = Instant::now();
            mon.wait(settle_start + settle, || {
                sh.step_delivered(i) >= expected || c.connected.load(Relaxed) == 0
            })
            .await;
            let settle_secs = settle_start.elapsed().as_secs_f64();
            let m1 = cpu_mark(server, &sh, main_tid);
            let h = sh.step_histogram(i);
            let q = |q: f64| (!h.is_empty()).then(|| h.value_at_quantile(q) as f64 / 1000.0);
            let (thread, thread_pct, total_pct) = loadgen_cpu(&m0, &m1);
            let mut s = StepReport {
                step: i,
                rate,
                clients,
                sent: published.sent,
                publish_secs: published
                    .ended
                    .duration_since(published.started)
                    .as_secs_f64(),
                expected,
                delivered: sh.step_delivered(i),
                settle_secs,
                p50_ms: q(0.5),
                p99_ms: q(0.99),
                p999_ms: q(0.999),
                max_ms: (!h.is_empty()).then(|| h.max() as f64 / 1000.0),
                order_violations: c.order_violations.load(Relaxed) - ov0,
                gaps: c.gaps.load(Relaxed) - gaps0,
                disconnects: c.disconnected.load(Relaxed) - d0,
                server_pub: server_cpu(&m0, &m_pub),
                server_total_ms: server_cpu(&m0, &m1).map(|c| c.0),
                loadgen_thread: thread,
                loadgen_thread_pct: thread_pct,
                loadgen_total_pct: total_pct,
                net: procfs::NetCounters::read().since(&net0),
                others_pct: others_cpu(&m0, &m1),
                pass: None,
            };
            if thread_pct > BOTTLENECK_PCT {
                bottleneck = true;
            }
            let failed = s.lost() > 0 || s.p99_ms.is_none_or(|p| p > a.p99_bound_ms);
            if mode == Mode::Ramp {
                s.pass = Some(!failed);
            }
            steps.push(s);
            if mode == Mode::Ramp && failed {
                break;
            }
        }
        let pc = &publisher.counters;
        to_nobody = pc.to_nobody.load(Relaxed);
        redis_errors = pc.errors.load(Relaxed);
        if to_nobody > 0 {
            warnings.push(format!(
                "{to_nobody} PUBLISH replies said nobody was subscribed (the relay was not connected to Redis then)"
            ));
        }
        if redis_errors > 0 || pc.lost.load(Relaxed) {
            warnings.push(format!(
                "Redis: {redis_errors} error replies, connection lost: {}, last error: {:?}",
                pc.lost.load(Relaxed),
                pc.last_error.lock().unwrap()
            ));
        }
    }
    if let Some(i) = &idle {
        if i.loadgen_thread_pct > BOTTLENECK_PCT {
            bottleneck = true;
        }
    }
    mon.tick(Instant::now());
    sh.stop.store(true, Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let others = steps
        .iter()
        .filter_map(|s| s.others_pct)
        .chain(idle.as_ref().and_then(|i| i.others_pct))
        .fold(0.0, f64::max);
    if others > BUSY_OTHERS_PCT {
        warnings.push(format!(
            "other processes on this machine used up to {others:.0}% of a core during the measurement: latency (and, less, CPU per delivery) is noisy; compare runs interleaved"
        ));
    }
    let drops: u64 = steps.iter().map(|s| s.net.backlog_drops).sum();
    if drops > 0 {
        warnings.push(format!(
            "the kernel dropped {drops} packets (system-wide) because a CPU's input backlog was full (net.core.netdev_max_backlog = {}): on loopback every fan-out burst queues there, and a dropped segment waits for TCP's retransmission (≥ 200 ms), so latency includes retransmission delays",
            procfs::netdev_max_backlog().map_or("?".into(), |v| v.to_string())
        ));
    }
    if connect.net.listen_drops > 0 {
        warnings.push(format!(
            "{} connection attempts were dropped by a full accept queue during the connect phase (system-wide ListenDrops, other processes included); such a client retries its SYN after 1 s, which shows in the upgrade p99",
            connect.net.listen_drops
        ));
    }
    if bottleneck {
        warnings.push(format!(
            "load generator was the bottleneck: a thread of it used more than {BOTTLENECK_PCT}% of a core, so latency and loss may be its own (add --threads on a free core, or fewer clients)"
        ));
    }
    let ends = sh.ends.lock().unwrap().clone();
    if interrupted.load(Relaxed) {
        warnings.push("interrupted: figures cover only part of the run".into());
    }
    Ok(Report {
        connect,
        steps,
        idle,
        samples: std::mem::take(&mut mon.samples),
        warnings,
        ends,
        foreign: c.foreign.load(Relaxed),
        pings: c.pings.load(Relaxed),
        deflate_agreed: c.deflate_agreed.load(Relaxed),
        inflated: c.inflated.load(Relaxed),
        wire_bytes: c.bytes.load(Relaxed),
        subscribers,
        to_nobody,
        redis_errors,
        bottleneck,
        interrupted: interrupted.load(Relaxed),
    })
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.digits$}"))
}

fn print_table(a: &Args, mode: Mode, r: &Report) {
    let c = &r.connect;
    println!();
    println!(
        "pubsocketd-loadtest {} {}{}",
        mode.name(),
        a.url,
        a.label
            .as_deref()
            .map_or(String::new(), |l| format!(" [{l}]"))
    );
    println!(
        "  connect      {} ok, {} failed of {} in {:.2} s: {:.0} connections/s; upgrade p50 {:.2} ms, p99 {:.2} ms",
        c.ok,
        c.failed,
        c.requested,
        c.secs,
        c.ok as f64 / c.secs.max(1e-9),
        c.handshake_p50_ms,
        c.handshake_p99_ms
    );
    for (why, n) in &c.failures {
        println!("  failed       {n} × {why}");
    }
    if let (Some(b), Some(after)) = (c.rss_before_kib, c.rss_after_kib) {
        println!(
            "  relay RSS    {:.1} MiB before, {:.1} MiB after connecting: {} per connection",
            b as f64 / 1024.0,
            after as f64 / 1024.0,
            c.rss_per_conn()
                .map_or("-".into(), |v| format!("{:.0} bytes", v))
        );
    }
    if let Some(i) = &r.idle {
        println!(
            "  idle         {} clients held {:.1} s: relay CPU {} ({} ms); relay RSS at the end {}",
            i.clients,
            i.secs,
            i.server.map_or("-".into(), |s| format!("{:.2}%", s.1)),
            opt(i.server.map(|s| s.0), 1),
            i.rss_end_kib
                .map_or("-".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0)),
        );
        println!(
            "  load gen     busiest thread {:.1}% of a core",
            i.loadgen_thread_pct
        );
    }
    if !r.steps.is_empty() {
        println!(
            "  {:>4} {:>8} {:>7} {:>9} {:>11} {:>11} {:>9} {:>9} {:>10} {:>8} {:>8} {:>8} {:>8} {:>6} {:>6} {:>8} {:>9} {:>7} {}",
            "step", "rate", "clients", "published", "expected", "delivered", "lost", "loss %", "deliv/s",
            "p50 ms", "p99 ms", "p99.9", "max ms", "order", "gaps", "relay %", "ms/1k dlv", "gen %",
            if mode == Mode::Ramp { "pass" } else { "" }
        );
        for s in &r.steps {
            println!(
                "  {:>4} {:>8.0} {:>7} {:>9} {:>11} {:>11} {:>9} {:>9.4} {:>10.0} {:>8} {:>8} {:>8} {:>8} {:>6} {:>6} {:>8} {:>9} {:>7.1} {}",
                s.step,
                s.rate,
                s.clients,
                s.sent,
                s.expected,
                s.delivered,
                s.lost(),
                s.loss_ratio() * 100.0,
                s.delivered_per_sec(),
                opt(s.p50_ms, 2),
                opt(s.p99_ms, 2),
                opt(s.p999_ms, 2),
                opt(s.max_ms, 2),
                s.order_violations,
                s.gaps,
                opt(s.server_pub.map(|c| c.1), 1),
                opt(s.cpu_per_1k(), 4),
                s.loadgen_thread_pct,
                match s.pass {
                    Some(true) => "yes",
                    Some(false) => "NO",
                    None => "",
                }
            );
        }
        for s in &r.steps {
            println!(
                "  machine      step {}: {} backlog drops, {} TCP segments retransmitted, other processes {} of a core (system-wide)",
                s.step,
                s.net.backlog_drops,
                s.net.retrans_segs,
                s.others_pct.map_or("-".into(), |p| format!("{p:.0}%"))
            );
        }
        if mode == Mode::Ramp {
            let best = r
                .steps
                .iter()
                .filter(|s| s.pass == Some(true))
                .map(|s| s.rate)
                .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
            println!(
                "  ramp         highest rate without loss and with p99 ≤ {} ms: {}",
                a.p99_bound_ms,
                best.map_or("none".into(), |b| format!("{b} msg/s"))
            );
        }
    }
    if let Some(s) = r.subscribers {
        println!(
            "  redis        {s} subscriber(s) on {:?} before publishing",
            a.channel
        );
    }
    if !r.ends.is_empty() {
        let ends: Vec<String> = r.ends.iter().map(|(k, v)| format!("{v} × {k}")).collect();
        println!("  ended early  {}", ends.join(", "));
    }
    if a.deflate {
        println!(
            "  deflate      agreed on {} of {} connections; {} messages came compressed; {:.1} MiB of frames read",
            r.deflate_agreed,
            c.ok,
            r.inflated,
            r.wire_bytes as f64 / (1 << 20) as f64
        );
    }
    if r.foreign > 0 || r.pings > 0 {
        println!(
            "  other        {} foreign messages, {} pings answered",
            r.foreign, r.pings
        );
    }
    for w in &r.warnings {
        println!("  WARNING      {w}");
    }
}
