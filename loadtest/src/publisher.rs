//! The publisher: one raw RESP connection to Redis, PUBLISH commands
//! pipelined at a steady rate, replies read by a separate task.

use crate::client::now_ns;
use crate::payload::{self, Stamp};
use bytes::{Buf, BytesMut};
use pubsocketd::redis::resp::{Item, PushReader};
use redis_protocol::resp2::types::BytesFrame;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::time::{interval, sleep, MissedTickBehavior};

/// How often the publisher sends what is due.
const TICK: Duration = Duration::from_millis(1);

#[derive(Default)]
pub struct PubCounters {
    /// PUBLISH commands written.
    pub sent: AtomicU64,
    /// Integer replies received.
    pub replies: AtomicU64,
    /// Replies saying no one was subscribed.
    pub to_nobody: AtomicU64,
    /// Error replies.
    pub errors: AtomicU64,
    pub last_error: Mutex<Option<String>>,
    /// The reply reader stopped (connection lost).
    pub lost: AtomicBool,
}

/// A PUBLISH step's outcome.
pub struct StepPublished {
    /// Messages written to Redis.
    pub sent: u64,
    pub started: Instant,
    pub ended: Instant,
}

pub struct Publisher {
    w: OwnedWriteHalf,
    channel: String,
    pub counters: Arc<PubCounters>,
    seq: u64,
    /// `--spread N`: per channel `<channel>.<k>`, its own sequence (so that
    /// each client sees consecutive numbers), and the generator that picks
    /// the channel of each message.
    spread: Vec<u64>,
    /// `--spread-from`: the number of the first of those channels.
    spread_from: usize,
    pick: u64,
    name: Vec<u8>,
    buf: Vec<u8>,
    payload: Vec<u8>,
    /// Pad with words rather than `x`s (see [`payload::wordify`]).
    pub words: bool,
}

/// A RESP command array.
fn command(out: &mut Vec<u8>, parts: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", parts.len()).as_bytes());
    for p in parts {
        out.extend_from_slice(format!("${}\r\n", p.len()).as_bytes());
        out.extend_from_slice(p);
        out.extend_from_slice(b"\r\n");
    }
}

/// Reads one reply (not a push) off `sock`.
/// The count in a `PUBSUB NUMPAT` or `PUBSUB NUMSUB` reply.
fn count(reply: BytesFrame) -> io::Result<u64> {
    Ok(match reply {
        BytesFrame::Array(items) => match items.get(1) {
            Some(BytesFrame::Integer(n)) => *n as u64,
            _ => 0,
        },
        BytesFrame::Integer(n) => n as u64,
        BytesFrame::Error(e) => return Err(io::Error::other(format!("Redis: {e}"))),
        _ => 0,
    })
}

async fn one_reply(sock: &mut TcpStream, buf: &mut BytesMut) -> io::Result<BytesFrame> {
    let mut reader = PushReader::new(usize::MAX);
    loop {
        match reader.next(buf) {
            Ok(Some(Item::Reply(f))) => return Ok(f),
            Ok(Some(_)) => return Err(io::Error::other("unexpected push")),
            Ok(None) => {}
            Err(e) => return Err(io::Error::other(e.0)),
        }
        if sock.read_buf(buf).await? == 0 {
            return Err(io::Error::other("closed by Redis"));
        }
    }
}

impl Publisher {
    /// Connects and waits (up to `wait`) until the channel has at least one
    /// subscriber, i.e. the relay is subscribed (with `spread`, until some
    /// pattern is, the relay reading `<channel>.*`, or, when the relay
    /// subscribes on demand, the first of the channels). Returns the
    /// publisher and the subscriber count seen.
    pub async fn connect(
        addr: SocketAddr,
        channel: &str,
        (spread, spread_from): (usize, usize),
        wait: Duration,
    ) -> io::Result<(Publisher, u64)> {
        let first = format!("{channel}.{spread_from}");
        let mut sock = TcpStream::connect(addr).await?;
        sock.set_nodelay(true)?;
        let deadline = Instant::now() + wait;
        let mut buf = BytesMut::with_capacity(4096);
        let subscribers = loop {
            let mut cmd = Vec::new();
            let mut n = 0;
            if spread > 0 {
                command(&mut cmd, &[b"PUBSUB", b"NUMPAT"]);
                sock.write_all(&cmd).await?;
                n = count(one_reply(&mut sock, &mut buf).await?)?;
                cmd.clear();
            }
            let name = if spread > 0 {
                first.as_bytes()
            } else {
                channel.as_bytes()
            };
            command(&mut cmd, &[b"PUBSUB", b"NUMSUB", name]);
            sock.write_all(&cmd).await?;
            n += count(one_reply(&mut sock, &mut buf).await?)?;
            if n > 0 || Instant::now() >= deadline {
                break n;
            }
            sleep(Duration::from_millis(100)).await;
        };
        let (r, w) = sock.into_split();
        let counters = Arc::new(PubCounters::default());
        tokio::spawn(read_replies(r, buf, counters.clone()));
        Ok((
            Publisher {
                w,
                channel: channel.to_string(),
                counters,
                seq: 0,
                spread: vec![0; spread],
                spread_from,
                pick: 0x9e37_79b9_7f4a_7c15,
                name: Vec::new(),
                buf: Vec::new(),
                payload: Vec::new(),
                words: false,
            },
            subscribers,
        ))
    }

    /// Publishes `rate` messages a second of `size` bytes for `duration`:
    /// every tick, the messages due by then are written in one go.
    pub async fn step(
        &mut self,
        rate: f64,
        size: usize,
        duration: Duration,
        run: u64,
        step: u32,
        stop: &AtomicBool,
    ) -> io::Result<StepPublished> {
        let total = ((rate * duration.as_secs_f64()).round() as u64).max(1);
        let mut tick = interval(TICK);
        tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let started = Instant::now();
        let mut sent = 0;
        while sent < total && !stop.load(Relaxed) {
            tick.tick().await;
            // The first message goes out at once, then one every 1/rate.
            let due = ((started.elapsed().as_secs_f64() * rate) as u64 + 1).min(total);
            if due <= sent {
                continue;
            }
            self.buf.clear();
            for _ in sent..due {
                let seq = self.next_channel();
                let stamp = Stamp {
                    seq,
                    t_ns: now_ns(),
                    run,
                    step,
                };
                self.payload.clear();
                payload::encode(&stamp, size, &mut self.payload);
                if self.words {
                    payload::wordify(&mut self.payload, seq);
                }
                command(&mut self.buf, &[b"PUBLISH", &self.name, &self.payload]);
            }
            self.w.write_all(&self.buf).await?;
            self.counters.sent.fetch_add(due - sent, Relaxed);
            sent = due;
        }
        Ok(StepPublished {
            sent,
            started,
            ended: Instant::now(),
        })
    }

    /// Picks the next message's channel (into `name`) and returns its
    /// sequence number on that channel.
    fn next_channel(&mut self) -> u64 {
        self.name.clear();
        self.name.extend_from_slice(self.channel.as_bytes());
        if self.spread.is_empty() {
            self.seq += 1;
            return self.seq;
        }
        self.pick ^= self.pick << 13;
        self.pick ^= self.pick >> 7;
        self.pick ^= self.pick << 17;
        let k = (self.pick % self.spread.len() as u64) as usize;
        self.name
            .extend_from_slice(format!(".{}", self.spread_from + k).as_bytes());
        self.spread[k] += 1;
        self.spread[k]
    }

    /// Waits (up to `wait`) until every command sent has its reply.
    pub async fn drain(&self, wait: Duration) {
        let c = &self.counters;
        let deadline = Instant::now() + wait;
        while c.replies.load(Relaxed) + c.errors.load(Relaxed) < c.sent.load(Relaxed)
            && !c.lost.load(Relaxed)
            && Instant::now() < deadline
        {
            sleep(Duration::from_millis(5)).await;
        }
    }
}

async fn read_replies(mut r: OwnedReadHalf, mut buf: BytesMut, c: Arc<PubCounters>) {
    let mut reader = PushReader::new(usize::MAX);
    loop {
        loop {
            match reader.next(&mut buf) {
                Ok(Some(Item::Reply(BytesFrame::Integer(n)))) => {
                    c.replies.fetch_add(1, Relaxed);
                    if n == 0 {
                        c.to_nobody.fetch_add(1, Relaxed);
                    }
                }
                Ok(Some(Item::Reply(BytesFrame::Error(e)))) => {
                    c.errors.fetch_add(1, Relaxed);
                    *c.last_error.lock().unwrap() = Some(e.to_string());
                }
                Ok(Some(Item::Message { consumed, .. })) => buf.advance(consumed),
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    *c.last_error.lock().unwrap() = Some(e.0);
                    c.lost.store(true, Relaxed);
                    return;
                }
            }
        }
        match r.read_buf(&mut buf).await {
            Ok(n) if n > 0 => {}
            _ => {
                c.lost.store(true, Relaxed);
                return;
            }
        }
    }
}
