//! The chaos run: a relay between a Redis of its own (AOF, `appendfsync
//! always`) and N `pubsocketd.v1` clients that resume with `since`, a
//! publisher numbering its messages 1, 2, 3, … at a rate, and faults on a
//! schedule (Redis SIGKILLed and restarted, the relay stopped with SIGTERM
//! and started again, a random share of the clients dropped every few
//! seconds). At the end every client's arrivals are checked against what
//! was published: lost, duplicated, reordered, and (for Pub/Sub, where the
//! relay may not vouch for a gap) whether each gap was announced with
//! `recovered:false`.
//!
//! This file is shared: `chaos` (loadtest/src/bin/chaos.rs) uses it through
//! the loadtest library, and the short test tests/chaos.rs of the relay's
//! crate includes it with `#[path]`. So it uses only what both crates
//! depend on: std, tokio (current-thread runtime), tokio-tungstenite (an
//! independent WebSocket client), futures-util, serde_json and libc.

#![allow(dead_code)]

use futures_util::StreamExt;
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::time::{sleep, sleep_until, timeout};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

/// The stream key / Pub/Sub channel every client reads.
pub const CHANNEL: &str = "news";

/// Where the relay reads from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `-rs-mode=stream`, the publisher XADDs.
    Stream,
    /// `-rs-mode=pubsub -history=N`, the publisher PUBLISHes.
    Pubsub,
}

impl Mode {
    pub fn parse(s: &str) -> Result<Mode, String> {
        match s {
            "stream" => Ok(Mode::Stream),
            "pubsub" => Ok(Mode::Pubsub),
            _ => Err(format!("unknown mode {s:?} (stream or pubsub)")),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::Stream => "stream",
            Mode::Pubsub => "pubsub",
        }
    }
}

/// One chaos run.
#[derive(Clone, Debug)]
pub struct Config {
    /// The relay binary (a release build for the long run).
    pub relay_bin: PathBuf,
    pub mode: Mode,
    /// `-history` (Pub/Sub; under streams the relay's default is kept
    /// unless this is set).
    pub history: Option<usize>,
    pub clients: usize,
    /// Messages published per second.
    pub rate: f64,
    /// Seconds of publishing.
    pub duration: Duration,
    /// SIGKILL Redis at 30 % of the run, restart it (from its AOF) after
    /// `redis_down`.
    pub kill_redis: bool,
    pub redis_down: Duration,
    /// SIGTERM the relay at 60 % of the run, start it again after
    /// `relay_down`.
    pub restart_relay: bool,
    pub relay_down: Duration,
    /// Every this often, drop `drop_fraction` of the clients at random
    /// (they reconnect at once with `since`).
    pub drop_every: Option<Duration>,
    pub drop_fraction: f64,
    /// Client sockets are bound to 127.0.0.2 … 127.0.0.(sources+1).
    pub sources: usize,
    /// Most time to wait after the last publish for every client to
    /// have the last message.
    pub settle: Duration,
    pub seed: u64,
    /// Pin the relay to this core (`taskset -c`).
    pub relay_cpu: Option<usize>,
    /// `-workers` of the relay.
    pub workers: usize,
    /// Progress lines on stderr.
    pub verbose: bool,
}

impl Config {
    /// The issue's run, scaled by the caller: faults all on.
    pub fn new(relay_bin: impl Into<PathBuf>, mode: Mode) -> Config {
        Config {
            relay_bin: relay_bin.into(),
            mode,
            history: match mode {
                Mode::Stream => None,
                Mode::Pubsub => Some(1000),
            },
            clients: 200,
            rate: 1000.0,
            duration: Duration::from_secs(60),
            kill_redis: true,
            redis_down: Duration::from_secs(1),
            restart_relay: true,
            relay_down: Duration::from_millis(500),
            drop_every: Some(Duration::from_secs(5)),
            drop_fraction: 0.2,
            sources: 4,
            settle: Duration::from_secs(15),
            seed: 1,
            relay_cpu: None,
            workers: 1,
            verbose: false,
        }
    }
}

/// What a run found.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub mode: &'static str,
    pub clients: usize,
    /// Messages published (confirmed by Redis).
    pub published: u64,
    /// Pub/Sub: PUBLISHes that Redis said reached no subscriber.
    pub published_to_nobody: u64,
    /// Commands written again after the publisher's connection was lost
    /// without their answer (streams: only those Redis did not hold).
    pub publisher_resent: u64,
    /// Distinct (client, message) arrivals.
    pub delivered: u64,
    pub expected: u64,
    pub lost: u64,
    pub duplicated: u64,
    /// Arrivals of a message after a later one.
    pub reordered: u64,
    /// `recovered` lines received, true and false.
    pub recovered_true: u64,
    pub recovered_false: u64,
    pub clients_with_loss: u64,
    pub clients_told_not_recovered: u64,
    /// Lost messages no `recovered:false` announced (see [`check`]), and
    /// the clients that had such a loss.
    pub unannounced_lost: u64,
    pub clients_with_unannounced_loss: u64,
    /// WebSocket connections made (beyond the first of each client) and
    /// attempts that failed (refused while the relay was down, …).
    pub reconnects: u64,
    pub connect_failures: u64,
    /// Clients that did not have the last message when the settle ended.
    pub clients_unfinished: u64,
    /// The faults as they happened, with their time into the run.
    pub events: Vec<String>,
    /// The first clients' anomalies (`client i: …`).
    pub notes: Vec<String>,
    pub seconds: f64,
}

impl Outcome {
    /// Streams promise everything once, in order.
    pub fn exact(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.reordered == 0
    }

    /// Pub/Sub's rule: what was missed was announced, and nothing came
    /// twice or out of order.
    pub fn announced(&self) -> bool {
        self.unannounced_lost == 0 && self.duplicated == 0 && self.reordered == 0
    }

    /// The pass/fail of the mode.
    pub fn ok(&self) -> bool {
        match self.mode {
            "stream" => self.exact(),
            _ => self.announced(),
        }
    }

    pub fn print(&self) {
        println!(
            "chaos {}: {} clients, {} published in {:.1} s ({} to no subscriber, {} resent)",
            self.mode,
            self.clients,
            self.published,
            self.seconds,
            self.published_to_nobody,
            self.publisher_resent
        );
        for e in &self.events {
            println!("  {e}");
        }
        println!(
            "  delivered {} of {}, reconnects {}, failed connects {}, unfinished clients {}",
            self.delivered,
            self.expected,
            self.reconnects,
            self.connect_failures,
            self.clients_unfinished
        );
        println!(
            "  recovered:true {}, recovered:false {} (clients told: {})",
            self.recovered_true, self.recovered_false, self.clients_told_not_recovered
        );
        println!(
            "  lost {} (clients: {}; not announced by recovered:false: {} on {} clients)",
            self.lost,
            self.clients_with_loss,
            self.unannounced_lost,
            self.clients_with_unannounced_loss
        );
        println!("  duplicated {}", self.duplicated);
        println!("  reordered {}", self.reordered);
        for n in &self.notes {
            println!("    {n}");
        }
        println!(
            "  result: {}",
            if self.ok() {
                "ok"
            } else if self.mode == "stream" {
                "FAILED (lost, duplicated or reordered)"
            } else {
                "FAILED (a loss without recovered:false, a duplicate or a reorder)"
            }
        );
    }

    /// One JSON line.
    pub fn json(&self) -> String {
        serde_json::json!({
            "mode": self.mode, "clients": self.clients, "published": self.published,
            "published_to_nobody": self.published_to_nobody,
            "publisher_resent": self.publisher_resent, "delivered": self.delivered,
            "expected": self.expected, "lost": self.lost, "duplicated": self.duplicated,
            "reordered": self.reordered, "recovered_true": self.recovered_true,
            "recovered_false": self.recovered_false,
            "clients_with_loss": self.clients_with_loss,
            "clients_told_not_recovered": self.clients_told_not_recovered,
            "unannounced_lost": self.unannounced_lost,
            "clients_with_unannounced_loss": self.clients_with_unannounced_loss,
            "reconnects": self.reconnects, "connect_failures": self.connect_failures,
            "clients_unfinished": self.clients_unfinished, "events": self.events,
            "seconds": self.seconds, "ok": self.ok(),
        })
        .to_string()
    }
}

// ---------------------------------------------------------------- processes

/// A directory of its own under the system's temporary directory.
pub fn scratch_dir(tag: &str) -> io::Result<PathBuf> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!("pubsocketd-{tag}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn log_file(path: &Path) -> io::Result<(Stdio, Stdio)> {
    let f = std::fs::File::options()
        .create(true)
        .append(true)
        .open(path)?;
    Ok((f.try_clone()?.into(), f.into()))
}

/// The last lines of a log, for error messages.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `redis-server` on a fixed port, with its AOF (`appendfsync always`) in
/// `dir`, so that a SIGKILL loses nothing it answered.
pub struct RedisProc {
    pub port: u16,
    pub dir: PathBuf,
    pub aof: bool,
    child: Option<Child>,
}

impl RedisProc {
    pub async fn start(dir: &Path, aof: bool) -> Result<RedisProc, String> {
        let mut r = RedisProc {
            port: free_port().map_err(|e| e.to_string())?,
            dir: dir.to_path_buf(),
            aof,
            child: None,
        };
        r.launch().await?;
        Ok(r)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    pub fn log(&self) -> PathBuf {
        self.dir.join("redis.log")
    }

    /// Spawns the server (retrying while its port is still taken) and
    /// waits until it answers PING.
    pub async fn launch(&mut self) -> Result<(), String> {
        for _ in 0..20 {
            let (out, err) = log_file(&self.log()).map_err(|e| e.to_string())?;
            let aof = if self.aof { "yes" } else { "no" };
            let mut child = Command::new("redis-server")
                .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", aof, "--appendfsync", "always"])
                .arg("--dir")
                .arg(&self.dir)
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .map_err(|e| format!("spawn redis-server (is it installed?): {e}"))?;
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if let Ok(mut c) = RedisConn::connect(self.addr()).await {
                    if let Ok(Resp::Simple(s)) = c.command(&[b"PING"]).await {
                        if s == "PONG" {
                            self.child = Some(child);
                            return Ok(());
                        }
                    }
                }
                sleep(Duration::from_millis(20)).await;
            }
            let _ = child.kill();
            let _ = child.wait();
            sleep(Duration::from_millis(250)).await;
        }
        Err(format!(
            "redis-server on port {} did not start:\n{}",
            self.port,
            tail(&self.log(), 10)
        ))
    }

    /// SIGKILL, and reap it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The relay on a fixed port, so that clients come back to the same
/// address after a restart. Its output goes to `relay.log` in `dir`.
pub struct RelayProc {
    pub port: u16,
    pub bin: PathBuf,
    pub args: Vec<String>,
    pub log: PathBuf,
    pub cpu: Option<usize>,
    child: Option<Child>,
}

impl RelayProc {
    pub async fn start(
        bin: &Path,
        args: Vec<String>,
        dir: &Path,
        cpu: Option<usize>,
    ) -> Result<RelayProc, String> {
        let mut r = RelayProc {
            port: free_port().map_err(|e| e.to_string())?,
            bin: bin.to_path_buf(),
            args,
            log: dir.join("relay.log"),
            cpu,
            child: None,
        };
        r.launch().await?;
        Ok(r)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn url(&self, query: &str) -> String {
        format!("ws://127.0.0.1:{}/{query}", self.port)
    }

    /// Spawns the relay and waits until it accepts connections.
    pub async fn launch(&mut self) -> Result<(), String> {
        let (out, err) = log_file(&self.log).map_err(|e| e.to_string())?;
        let mut cmd = match self.cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.args(["-c", &cpu.to_string()]).arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        };
        let mut child = cmd
            .args(["-ws-host", "127.0.0.1", "-ws-port", &self.port.to_string()])
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", self.bin.display()))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "the relay exited ({status}):\n{}",
                    tail(&self.log, 10)
                ));
            }
            if TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                self.child = Some(child);
                return Ok(());
            }
            sleep(Duration::from_millis(20)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        Err(format!(
            "the relay did not listen within 10 s:\n{}",
            tail(&self.log, 10)
        ))
    }

    /// SIGTERM, then wait for the exit (SIGKILL after 10 s). Returns the
    /// exit status as text.
    pub async fn stop(&mut self) -> String {
        let Some(mut child) = self.child.take() else {
            return "not running".into();
        };
        // SAFETY: a signal to our own child, not yet reaped.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.to_string();
            }
            sleep(Duration::from_millis(20)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        "did not exit within 10 s of SIGTERM: killed".into()
    }
}

impl Drop for RelayProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

// ---------------------------------------------------------------- Redis

/// A RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Resp>>),
}

fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

type Reader = BufReader<tokio::net::tcp::OwnedReadHalf>;

fn read_resp(r: &mut Reader) -> Pin<Box<dyn Future<Output = io::Result<Resp>> + Send + '_>> {
    Box::pin(async move {
        let mut line = Vec::new();
        if r.read_until(b'\n', &mut line).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        let bad = || io::Error::new(io::ErrorKind::InvalidData, text.clone());
        let rest = text.get(1..).ok_or_else(bad)?;
        let n = || rest.parse::<i64>().map_err(|_| bad());
        Ok(match text.as_bytes()[0] {
            b'+' => Resp::Simple(rest.into()),
            b'-' => Resp::Error(rest.into()),
            b':' => Resp::Int(n()?),
            b'$' if n()? < 0 => Resp::Bulk(None),
            b'$' => {
                let mut data = vec![0; n()? as usize + 2];
                r.read_exact(&mut data).await?;
                data.truncate(data.len() - 2);
                Resp::Bulk(Some(data))
            }
            b'*' if n()? < 0 => Resp::Array(None),
            b'*' => {
                let mut items = Vec::new();
                for _ in 0..n()? {
                    items.push(read_resp(r).await?);
                }
                Resp::Array(Some(items))
            }
            _ => return Err(bad()),
        })
    })
}

/// A plain connection to Redis: one command at a time, or pipelined
/// with [`RedisConn::split`].
pub struct RedisConn {
    r: Reader,
    w: tokio::net::tcp::OwnedWriteHalf,
}

impl RedisConn {
    pub async fn connect(addr: SocketAddr) -> io::Result<RedisConn> {
        let s = timeout(Duration::from_secs(2), TcpStream::connect(addr))
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
        s.set_nodelay(true)?;
        let (r, w) = s.into_split();
        Ok(RedisConn {
            r: BufReader::new(r),
            w,
        })
    }

    pub async fn command(&mut self, args: &[&[u8]]) -> io::Result<Resp> {
        let mut out = Vec::new();
        encode(&mut out, args);
        self.w.write_all(&out).await?;
        timeout(Duration::from_secs(5), read_resp(&mut self.r))
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?
    }
}

/// The command that publishes message `seq`.
fn publish_command(mode: Mode, seq: u64, out: &mut Vec<u8>) {
    let n = seq.to_string();
    match mode {
        Mode::Stream => encode(
            out,
            &[
                b"XADD",
                CHANNEL.as_bytes(),
                b"MAXLEN",
                b"~",
                b"10000",
                b"*",
                b"data",
                n.as_bytes(),
            ],
        ),
        Mode::Pubsub => encode(out, &[b"PUBLISH", CHANNEL.as_bytes(), n.as_bytes()]),
    }
}

/// Publishes once on a fresh connection (the warm-up marker).
pub async fn publish_once(addr: SocketAddr, mode: Mode, seq: u64) -> io::Result<Resp> {
    let mut c = RedisConn::connect(addr).await?;
    let mut out = Vec::new();
    publish_command(mode, seq, &mut out);
    c.w.write_all(&out).await?;
    read_resp(&mut c.r).await
}

/// The payloads (as numbers) of the stream's last `n` entries.
async fn stream_tail(c: &mut RedisConn, n: usize) -> io::Result<Vec<u64>> {
    let count = n.to_string();
    let reply = c
        .command(&[
            b"XREVRANGE",
            CHANNEL.as_bytes(),
            b"+",
            b"-",
            b"COUNT",
            count.as_bytes(),
        ])
        .await?;
    let mut out = Vec::new();
    if let Resp::Array(Some(entries)) = reply {
        for e in entries {
            let Resp::Array(Some(parts)) = e else {
                continue;
            };
            let Some(Resp::Array(Some(fields))) = parts.get(1) else {
                continue;
            };
            for kv in fields.chunks(2) {
                if let [Resp::Bulk(Some(k)), Resp::Bulk(Some(v))] = kv {
                    if k == b"data" {
                        if let Some(x) = std::str::from_utf8(v).ok().and_then(|v| v.parse().ok()) {
                            out.push(x);
                        }
                    }
                }
            }
        }
    }
    Ok(out)
}

/// What the publisher did.
#[derive(Debug, Default, Clone)]
pub struct Published {
    pub confirmed: u64,
    pub to_nobody: u64,
    pub resent: u64,
    /// What happened at each lost connection.
    pub notes: Vec<String>,
}

/// Publishes 1..=total at `rate`, pipelined (each XADD waits for an fsync
/// under `appendfsync always`, so one at a time would not keep up). When
/// the connection is lost, it reconnects and publishes again what Redis
/// did not answer; under streams, first it asks Redis (XREVRANGE) which of
/// those it holds, so that nothing is added twice.
pub async fn publish(
    addr: SocketAddr,
    mode: Mode,
    total: u64,
    rate: f64,
    progress: Arc<AtomicU64>,
) -> Result<Published, String> {
    let start = tokio::time::Instant::now();
    let due = |seq: u64| start + Duration::from_secs_f64((seq - 1) as f64 / rate);
    let mut stats = Published::default();
    let mut next = 1u64;
    // Written, not answered.
    let mut inflight: VecDeque<u64> = VecDeque::new();
    // To write (again) before going on with `next`.
    let mut resend: VecDeque<u64> = VecDeque::new();
    'connection: loop {
        // (Re)connect, for as long as 60 s.
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut conn = loop {
            match RedisConn::connect(addr).await {
                Ok(c) => break c,
                Err(e) if Instant::now() > deadline => {
                    return Err(format!("publisher: Redis unreachable for 60 s: {e}"))
                }
                Err(_) => sleep(Duration::from_millis(50)).await,
            }
        };
        if !inflight.is_empty() {
            let mut back: Vec<u64> = inflight.drain(..).collect();
            let n_unanswered = back.len();
            if mode == Mode::Stream {
                // XADDs are applied in the order written: Redis holds a
                // prefix of them (checked against its newest entries).
                let held = match stream_tail(&mut conn, back.len() + 16).await {
                    Ok(h) => h,
                    Err(_) => {
                        inflight.extend(back);
                        continue 'connection;
                    }
                };
                back.retain(|s| {
                    let there = held.contains(s);
                    if there {
                        stats.confirmed += 1;
                        progress.store(*s, Relaxed);
                    }
                    !there
                });
            }
            let again = match (back.first(), back.last()) {
                (Some(a), Some(b)) => format!("{} ({a} to {b})", back.len()),
                _ => "none".to_string(),
            };
            stats.notes.push(format!(
                "publisher: connection lost; of the unanswered, Redis holds {}, written again: {again}",
                n_unanswered - back.len()
            ));
            stats.resent += back.len() as u64;
            for s in back.into_iter().rev() {
                resend.push_front(s);
            }
        }
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let RedisConn { mut r, mut w } = conn;
        let reader = tokio::spawn(async move {
            loop {
                let item = read_resp(&mut r).await;
                let end = item.is_err();
                if tx.send(item).is_err() || end {
                    return;
                }
            }
        });
        let mut out = Vec::new();
        loop {
            if next > total && resend.is_empty() && inflight.is_empty() {
                reader.abort();
                return Ok(stats);
            }
            let write_at = match resend.front() {
                Some(_) => Some(tokio::time::Instant::now()),
                None if next <= total => Some(due(next)),
                None => None,
            };
            tokio::select! {
                biased;
                reply = rx.recv() => match reply {
                    // Restarted from its AOF, Redis refuses commands while it
                    // loads: none of these was applied; ask again once it can.
                    Some(Ok(Resp::Error(e))) if e.starts_with("LOADING") => {
                        reader.abort();
                        sleep(Duration::from_millis(50)).await;
                        continue 'connection;
                    }
                    Some(Ok(Resp::Error(e))) => return Err(format!("publisher: Redis said {e}")),
                    Some(Ok(reply)) => {
                        let seq = inflight.pop_front().ok_or("publisher: a reply to nothing")?;
                        stats.confirmed += 1;
                        if reply == Resp::Int(0) {
                            stats.to_nobody += 1;
                        }
                        progress.store(seq, Relaxed);
                    }
                    _ => continue 'connection,
                },
                _ = sleep_until(write_at.unwrap_or_else(|| start + Duration::from_secs(86400))), if write_at.is_some() => {
                    out.clear();
                    // Everything due goes out in one write.
                    let now = tokio::time::Instant::now();
                    while let Some(s) = resend.pop_front() {
                        publish_command(mode, s, &mut out);
                        inflight.push_back(s);
                    }
                    while next <= total && due(next) <= now {
                        publish_command(mode, next, &mut out);
                        inflight.push_back(next);
                        next += 1;
                    }
                    if w.write_all(&out).await.is_err() {
                        reader.abort();
                        continue 'connection;
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------- clients

/// What one client saw, in the order it arrived.
#[derive(Debug, Default, Clone)]
pub struct ClientLog {
    /// (seq, connection number) of each message (the marker 0 left out).
    pub arrivals: Vec<(u64, u32)>,
    /// (arrivals so far, connection number) at each `recovered:false`.
    pub not_recovered: Vec<(usize, u32)>,
    pub recovered_true: u64,
    /// The ID of the last message, for `since`.
    pub last_id: Option<String>,
    pub connections: u32,
    pub connect_failures: u64,
    /// The last error that ended a connection or an attempt.
    pub last_error: Option<String>,
}

/// What the clients share with the coordinator.
#[derive(Default)]
pub struct Board {
    /// Clients that hold an ID (they received something).
    pub with_id: AtomicUsize,
    /// Clients whose newest arrival is the run's last message.
    pub finished: AtomicUsize,
    /// The run's last message (0 until publishing starts).
    pub last_seq: AtomicU64,
    /// Clients connected right now.
    pub connected: AtomicUsize,
}

/// A v1 WebSocket to `url` from source address `source`.
pub async fn connect_v1(
    url: &str,
    source: Ipv4Addr,
) -> Result<tokio_tungstenite::WebSocketStream<TcpStream>, String> {
    let mut req = url.into_client_request().map_err(|e| e.to_string())?;
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "pubsocketd.v1".parse().expect("header value"),
    );
    let port = req.uri().port_u16().unwrap_or(80);
    let sock = TcpSocket::new_v4().map_err(|e| e.to_string())?;
    sock.bind(SocketAddr::from((source, 0)))
        .map_err(|e| format!("bind {source}: {e}"))?;
    let tcp = sock
        .connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (ws, _) = tokio_tungstenite::client_async_with_config(req, tcp, Some(config))
        .await
        .map_err(|e| format!("upgrade: {e}"))?;
    Ok(ws)
}

/// One message from the relay.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// An envelope: its ID and payload (a number).
    Message {
        id: String,
        seq: u64,
    },
    Recovered(bool),
    Other,
}

/// Reads a v1 text message.
pub fn parse_event(text: &str) -> Event {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(text) else {
        return Event::Other;
    };
    if let Some(b) = v.get("recovered").and_then(|b| b.as_bool()) {
        return Event::Recovered(b);
    }
    match (
        v.get("id").and_then(|i| i.as_str()),
        v.get("data").and_then(|d| d.as_u64()),
    ) {
        (Some(id), Some(seq)) => Event::Message {
            id: id.to_string(),
            seq,
        },
        _ => Event::Other,
    }
}

/// `?channel=news` and, once the client holds an ID, `&since=news:<id>`.
pub fn query(last_id: Option<&str>) -> String {
    match last_id {
        Some(id) => format!("?channel={CHANNEL}&since={CHANNEL}:{id}"),
        None => format!("?channel={CHANNEL}"),
    }
}

/// A client: connects, reads, and on any end (a drop ordered through
/// `drop`, the relay going away, an error) connects again with `since`,
/// until `stop` turns true.
pub async fn client(
    base: String,
    source: Ipv4Addr,
    board: Arc<Board>,
    drop: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) -> ClientLog {
    let mut log = ClientLog::default();
    let mut finished = false;
    let mut backoff = Duration::from_millis(20);
    loop {
        if *stop.borrow() {
            return log;
        }
        let url = format!("{base}{}", query(log.last_id.as_deref()));
        let attempt = tokio::select! {
            r = timeout(Duration::from_secs(10), connect_v1(&url, source)) => r,
            _ = stop.changed() => return log,
        };
        let mut ws = match attempt {
            Ok(Ok(ws)) => ws,
            failed => {
                log.connect_failures += 1;
                log.last_error = Some(match failed {
                    Ok(Err(e)) => e,
                    _ => "connect timed out".into(),
                });
                tokio::select! {
                    _ = sleep(backoff) => {}
                    _ = stop.changed() => return log,
                }
                backoff = (backoff * 2).min(Duration::from_millis(500));
                continue;
            }
        };
        backoff = Duration::from_millis(20);
        log.connections += 1;
        let conn = log.connections;
        board.connected.fetch_add(1, Relaxed);
        loop {
            tokio::select! {
                m = ws.next() => match m {
                    Some(Ok(Message::Text(t))) => match parse_event(t.as_str()) {
                        Event::Message { id, seq } => {
                            if log.last_id.is_none() {
                                board.with_id.fetch_add(1, Relaxed);
                            }
                            log.last_id = Some(id);
                            if seq > 0 {
                                log.arrivals.push((seq, conn));
                            }
                            let last = board.last_seq.load(Relaxed);
                            if !finished && last > 0 && seq == last {
                                finished = true;
                                board.finished.fetch_add(1, Relaxed);
                            }
                        }
                        Event::Recovered(true) => log.recovered_true += 1,
                        Event::Recovered(false) => log.not_recovered.push((log.arrivals.len(), conn)),
                        Event::Other => {}
                    },
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        log.last_error = Some(e.to_string());
                        break;
                    }
                    None => break,
                },
                _ = drop.notified() => break,
                _ = stop.changed() => {
                    board.connected.fetch_sub(1, Relaxed);
                    return log;
                }
            }
        }
        // Dropped without a close frame: the relay sees the socket end.
        std::mem::drop(ws);
        board.connected.fetch_sub(1, Relaxed);
    }
}

// ---------------------------------------------------------------- checks

/// Per-client check of the arrivals against messages 1..=total.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Check {
    pub delivered: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub reordered: u64,
    /// Lost messages that no `recovered:false` announced: a gap between
    /// arrivals a and b is announced when a `recovered:false` came after a
    /// on a connection no later than b's (the relay sends it after the
    /// replay that reveals the gap); a loss at the end, when one came after
    /// the last arrival.
    pub unannounced: u64,
    /// The first few of what went wrong, for the report.
    pub notes: Vec<String>,
}

pub fn check(log: &ClientLog, total: u64) -> Check {
    let mut c = Check::default();
    let mut seen = vec![false; total as usize + 1];
    let mut max = 0u64;
    for &(s, k) in &log.arrivals {
        if s > total {
            c.reordered += 1; // not ours: cannot happen
            continue;
        }
        if seen[s as usize] {
            c.duplicated += 1;
            if c.notes.len() < 3 {
                c.notes
                    .push(format!("{s} twice (again on connection {k}, after {max})"));
            }
            continue;
        }
        seen[s as usize] = true;
        c.delivered += 1;
        if s < max {
            c.reordered += 1;
            if c.notes.len() < 3 {
                c.notes.push(format!("{s} after {max} (connection {k})"));
            }
        }
        max = max.max(s);
    }
    c.lost = total - c.delivered;
    for &(pos, k) in log.not_recovered.iter().take(3) {
        let after = pos.checked_sub(1).map(|i| log.arrivals[i].0);
        c.notes.push(format!(
            "recovered:false on connection {k} (arrivals so far {pos}, the last {after:?})"
        ));
    }
    if c.lost == 0 {
        return c;
    }
    // Walk the increasing maxima: each jump over never-seen messages is a
    // gap, announced or not.
    let announced = |after: usize, conn: u32| {
        log.not_recovered
            .iter()
            .any(|&(pos, k)| pos >= after && k <= conn)
    };
    let missing_between =
        |lo: u64, hi: u64| (lo + 1..hi).filter(|&s| !seen[s as usize]).count() as u64;
    let mut top = 0u64;
    let mut top_pos = 0usize; // arrivals up to and including `top`
    for (i, &(s, conn)) in log.arrivals.iter().enumerate() {
        if s > total || s <= top {
            continue;
        }
        let missed = missing_between(top, s);
        if missed > 0 && !announced(top_pos, conn) {
            c.unannounced += missed;
            if c.notes.len() < 6 {
                c.notes.push(format!(
                    "{missed} missing between {top} and {s} (connection {conn}), not announced"
                ));
            }
        }
        top = s;
        top_pos = i + 1;
    }
    let missed = missing_between(top, total + 1);
    if missed > 0 && !announced(top_pos, u32::MAX) {
        c.unannounced += missed;
    }
    c
}

// ---------------------------------------------------------------- the run

/// A tiny deterministic generator (xorshift64*), for which clients drop.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n.max(1)
    }
}

/// The source address of client `i`.
pub fn source(i: usize, sources: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 2 + (i % sources.clamp(1, 250)) as u8)
}

/// The relay's flags for a mode.
pub fn relay_args(cfg: &Config, redis_port: u16) -> Vec<String> {
    let mut a: Vec<String> = [
        "-ws-insecure",
        "-ws-ping-interval",
        "0",
        "-log-level",
        "info",
        "-rs-host",
        "127.0.0.1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend([
        "-rs-port".into(),
        redis_port.to_string(),
        "-rs-channel".into(),
        CHANNEL.into(),
        "-rs-mode".into(),
        cfg.mode.name().into(),
        "-workers".into(),
        cfg.workers.to_string(),
    ]);
    if let Some(h) = cfg.history {
        a.extend(["-history".into(), h.to_string()]);
    }
    a
}

/// Runs the whole chaos run: processes, clients, publisher, faults,
/// settle, check.
pub async fn run(cfg: &Config) -> Result<Outcome, String> {
    let dir = scratch_dir("chaos").map_err(|e| e.to_string())?;
    let result = run_in(cfg, &dir).await;
    match &result {
        Ok(o) if o.ok() => {
            let _ = std::fs::remove_dir_all(&dir);
        }
        _ => eprintln!("chaos: logs kept in {}", dir.display()),
    }
    result
}

async fn run_in(cfg: &Config, dir: &Path) -> Result<Outcome, String> {
    let say = |msg: String| {
        if cfg.verbose {
            eprintln!("chaos: {msg}");
        }
    };
    let mut redis = RedisProc::start(dir, true).await?;
    let mut relay = RelayProc::start(
        &cfg.relay_bin,
        relay_args(cfg, redis.port),
        dir,
        cfg.relay_cpu,
    )
    .await?;
    say(format!(
        "redis on :{} (AOF, appendfsync always), relay pid {:?} on :{}, logs in {}",
        redis.port,
        relay.pid(),
        relay.port,
        dir.display()
    ));

    // Clients, connected and each holding an ID (a marker 0 published
    // until every one has it) before the numbered messages start.
    let board = Arc::new(Board::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut drops = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..cfg.clients {
        let d = Arc::new(Notify::new());
        drops.push(d.clone());
        tasks.push(tokio::spawn(client(
            relay.url(""),
            source(i, cfg.sources),
            board.clone(),
            d,
            stop_rx.clone(),
        )));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while board.with_id.load(Relaxed) < cfg.clients {
        if Instant::now() > deadline {
            return Err(format!(
                "only {} of {} clients connected and received the marker in 30 s",
                board.with_id.load(Relaxed),
                cfg.clients
            ));
        }
        if board.connected.load(Relaxed) == cfg.clients {
            publish_once(redis.addr(), cfg.mode, 0)
                .await
                .map_err(|e| format!("publish the marker: {e}"))?;
        }
        sleep(Duration::from_millis(200)).await;
    }
    say(format!("{} clients hold an ID; publishing", cfg.clients));

    let total = (cfg.rate * cfg.duration.as_secs_f64()).round().max(1.0) as u64;
    board.last_seq.store(total, Relaxed);
    let progress = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let publisher = tokio::spawn(publish(
        redis.addr(),
        cfg.mode,
        total,
        cfg.rate,
        progress.clone(),
    ));

    // The faults, in time order.
    #[derive(Debug)]
    enum Fault {
        Drop,
        KillRedis,
        StopRelay,
    }
    let mut plan: Vec<(Duration, Fault)> = Vec::new();
    if let Some(every) = cfg.drop_every {
        let mut t = every;
        while t < cfg.duration {
            plan.push((t, Fault::Drop));
            t += every;
        }
    }
    if cfg.kill_redis {
        plan.push((cfg.duration.mul_f64(0.3), Fault::KillRedis));
    }
    if cfg.restart_relay {
        plan.push((cfg.duration.mul_f64(0.6), Fault::StopRelay));
    }
    plan.sort_by_key(|(t, _)| *t);
    let mut rng = Rng::new(cfg.seed);
    let mut events = Vec::new();
    let stamp = |start: Instant| format!("{:6.2} s", start.elapsed().as_secs_f64());
    for (at, fault) in plan {
        sleep_until((start + at).into()).await;
        let line = match fault {
            Fault::Drop => {
                let n = ((cfg.clients as f64) * cfg.drop_fraction).round() as usize;
                let mut idx: Vec<usize> = (0..cfg.clients).collect();
                for k in 0..n.min(idx.len()) {
                    let j = k + rng.below(idx.len() - k);
                    idx.swap(k, j);
                    drops[idx[k]].notify_one();
                }
                format!(
                    "{}: dropped {n} clients (published so far {})",
                    stamp(start),
                    progress.load(Relaxed)
                )
            }
            Fault::KillRedis => {
                redis.kill();
                let killed = stamp(start);
                let p = progress.load(Relaxed);
                sleep(cfg.redis_down).await;
                redis.launch().await?;
                format!(
                    "{killed}: Redis SIGKILLed (published so far {p}); {}: restarted from its AOF",
                    stamp(start)
                )
            }
            Fault::StopRelay => {
                let status = relay.stop().await;
                let stopped = stamp(start);
                let p = progress.load(Relaxed);
                sleep(cfg.relay_down).await;
                relay.launch().await?;
                format!(
                    "{stopped}: relay stopped with SIGTERM ({status}; published so far {p}); {}: started again (pid {:?})",
                    stamp(start),
                    relay.pid()
                )
            }
        };
        say(line.clone());
        events.push(line);
    }
    let published = publisher
        .await
        .map_err(|e| format!("publisher task: {e}"))??;
    let seconds = start.elapsed().as_secs_f64();
    events.extend(published.notes.iter().cloned());
    say(format!(
        "published {} in {seconds:.1} s; settling",
        published.confirmed
    ));

    // Settle: until every client has the last message, or time is up.
    let deadline = Instant::now() + cfg.settle;
    while board.finished.load(Relaxed) < cfg.clients && Instant::now() < deadline {
        sleep(Duration::from_millis(100)).await;
    }
    // A moment more for anything that would arrive twice.
    sleep(Duration::from_millis(300)).await;
    let unfinished = cfg.clients - board.finished.load(Relaxed);
    let _ = stop_tx.send(true);
    let mut out = Outcome {
        mode: cfg.mode.name(),
        clients: cfg.clients,
        published: published.confirmed,
        published_to_nobody: published.to_nobody,
        publisher_resent: published.resent,
        clients_unfinished: unfinished as u64,
        events,
        seconds,
        ..Outcome::default()
    };
    let mut errors = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        let log = t.await.map_err(|e| format!("client task: {e}"))?;
        let c = check(&log, total);
        if out.notes.len() < 20 {
            out.notes
                .extend(c.notes.iter().map(|n| format!("client {i}: {n}")));
        }
        out.expected += total;
        out.delivered += c.delivered;
        out.lost += c.lost;
        out.duplicated += c.duplicated;
        out.reordered += c.reordered;
        out.unannounced_lost += c.unannounced;
        out.clients_with_loss += u64::from(c.lost > 0);
        out.clients_with_unannounced_loss += u64::from(c.unannounced > 0);
        out.recovered_true += log.recovered_true;
        out.recovered_false += log.not_recovered.len() as u64;
        out.clients_told_not_recovered += u64::from(!log.not_recovered.is_empty());
        out.reconnects += u64::from(log.connections.saturating_sub(1));
        out.connect_failures += log.connect_failures;
        if let Some(e) = log.last_error {
            errors.push(e);
        }
    }
    if out.clients_unfinished > 0 {
        errors.sort();
        errors.dedup();
        say(format!("last errors of clients: {errors:?}"));
    }
    relay.stop().await;
    redis.kill();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(arrivals: &[(u64, u32)], not_recovered: &[(usize, u32)]) -> ClientLog {
        ClientLog {
            arrivals: arrivals.to_vec(),
            not_recovered: not_recovered.to_vec(),
            ..ClientLog::default()
        }
    }

    #[test]
    fn counts_lost_duplicated_reordered() {
        let c = check(&log(&[(1, 1), (2, 1), (3, 1)], &[]), 3);
        assert_eq!(
            (c.delivered, c.lost, c.duplicated, c.reordered),
            (3, 0, 0, 0)
        );
        let c = check(&log(&[(1, 1), (3, 1), (2, 1), (3, 2)], &[]), 4);
        assert_eq!(
            (c.delivered, c.lost, c.duplicated, c.reordered),
            (3, 1, 1, 1)
        );
        assert_eq!(c.unannounced, 1, "4 never came, nothing said so");
    }

    #[test]
    fn a_gap_is_announced_by_a_later_recovered_false() {
        // 1, 2 on connection 1; 5, 6 replayed on connection 2, then
        // recovered:false (after 4 arrivals): 3 and 4 announced.
        let c = check(&log(&[(1, 1), (2, 1), (5, 2), (6, 2)], &[(4, 2)]), 6);
        assert_eq!((c.lost, c.unannounced), (2, 0));
        // The same without the line, or with it on a later connection.
        let c = check(&log(&[(1, 1), (2, 1), (5, 2), (6, 2)], &[]), 6);
        assert_eq!((c.lost, c.unannounced), (2, 2));
        let c = check(&log(&[(1, 1), (2, 1), (5, 2), (6, 3)], &[(4, 3)]), 6);
        assert_eq!(c.unannounced, 2);
        // Before the gap: does not count.
        let c = check(&log(&[(1, 1), (2, 1), (5, 1)], &[(1, 1)]), 5);
        assert_eq!(c.unannounced, 2);
    }

    #[test]
    fn events_parse() {
        assert_eq!(
            parse_event(r#"{"channel":"news","id":"1-2","data":7}"#),
            Event::Message {
                id: "1-2".into(),
                seq: 7
            }
        );
        assert_eq!(
            parse_event(r#"{"channel":"news","recovered":false}"#),
            Event::Recovered(false)
        );
        assert_eq!(parse_event(r#"{"subscribed":["news"]}"#), Event::Other);
    }
}
