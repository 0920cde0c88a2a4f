//! The one Redis connection of the process: SUBSCRIBE, read pushes, encode
//! each payload once, hand the frame to the hub. On any failure it backs
//! off (capped, exponential, with jitter), reconnects and resubscribes;
//! the WebSocket side never notices except for the gap.

use super::resp::{Item, PushReader};
use crate::config::Config;
use crate::hub::Hub;
use crate::stats::Stats;
use crate::ws::frame;
use bytes::{Buf, BytesMut};
use redis_protocol::resp2::types::BytesFrame;
use slog::{debug, info, warn, Logger};
use std::convert::Infallible;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep, sleep_until, timeout};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Read buffer size; a larger payload grows it to fit, once.
const READ_CHUNK: usize = 64 * 1024;

/// The subscriber and what it needs.
pub struct Subscriber {
    pub cfg: Config,
    pub hub: Hub,
    pub log: Logger,
    pub stats: Arc<Stats>,
}

/// Why a connection ended.
type Failure = String;

impl Subscriber {
    fn addr(&self) -> String {
        format!("{}:{}", self.cfg.redis_host, self.cfg.redis_port)
    }

    /// Runs forever: connect, subscribe, relay; on failure, back off and
    /// start again. Cancelled by dropping the future.
    pub async fn run(self) {
        let mut backoff = Backoff::new();
        loop {
            let Err(why) = self.session(&mut backoff).await;
            self.stats.redis_up.store(false, Relaxed);
            // One line per state change: the first failure after a healthy
            // spell is a warning, the retries that follow are debug lines.
            if backoff.is_reset() {
                warn!(self.log, "[redis] {why}; reconnecting");
            } else {
                debug!(self.log, "[redis] {why}; retrying");
            }
            sleep(backoff.next()).await;
        }
    }

    /// One connection, from connect to failure. Resets `backoff` once
    /// subscribed.
    async fn session(&self, backoff: &mut Backoff) -> Result<Infallible, Failure> {
        let addr = self.addr();
        let mut sock = match timeout(CONNECT_TIMEOUT, TcpStream::connect(&addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(format!("cannot connect to {addr}: {e}")),
            Err(_) => return Err(format!("cannot connect to {addr}: timed out")),
        };
        let _ = sock.set_nodelay(true);
        debug!(self.log, "[redis] connected to {addr}");
        sock.write_all(&command(&[b"SUBSCRIBE", self.cfg.channel.as_bytes()]))
            .await
            .map_err(|e| format!("connection to {addr} lost: {e}"))?;
        self.relay(&mut sock, backoff)
            .await
            .map_err(|why| format!("connection to {addr} lost: {why}"))
    }

    /// Reads until the connection fails, relaying messages.
    async fn relay(
        &self,
        sock: &mut TcpStream,
        backoff: &mut Backoff,
    ) -> Result<Infallible, Failure> {
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        let mut reader = PushReader::new(self.cfg.max_payload);
        let keepalive = self.cfg.keepalive;
        let mut last_read = Instant::now();
        let mut ping_sent: Option<Instant> = None;
        loop {
            let deadline = ping_sent.unwrap_or(last_read) + keepalive;
            let want = reader.wanted(&buf).unwrap_or(0).saturating_sub(buf.len());
            buf.reserve(want.max(READ_CHUNK / 4));
            tokio::select! {
                n = sock.read_buf(&mut buf) => match n {
                    Ok(0) => return Err("closed by Redis".into()),
                    Ok(_) => {
                        last_read = Instant::now();
                        ping_sent = None;
                    }
                    Err(e) => return Err(e.to_string()),
                },
                _ = sleep_until(deadline.into()) => {
                    if ping_sent.is_some() {
                        return Err(format!("no answer to PING within {keepalive:?}"));
                    }
                    sock.write_all(&command(&[b"PING"])).await.map_err(|e| e.to_string())?;
                    ping_sent = Some(Instant::now());
                    continue;
                }
            }
            self.drain(&mut buf, &mut reader, backoff).await?;
        }
    }

    /// Handles every complete item in `buf`.
    async fn drain(
        &self,
        buf: &mut BytesMut,
        reader: &mut PushReader,
        backoff: &mut Backoff,
    ) -> Result<(), Failure> {
        while let Some(item) = reader.next(buf).map_err(|e| e.0)? {
            match item {
                Item::Message {
                    payload, consumed, ..
                } => {
                    let frame = self.encode(&buf[payload]);
                    buf.advance(consumed);
                    if let Some(frame) = frame {
                        self.hub.publish(frame).await;
                    }
                }
                Item::Oversized { channel, len } => {
                    self.stats.dropped.fetch_add(1, Relaxed);
                    warn!(self.log, "[redis] dropped a {len}-byte message on {channel}: over -rs-max-payload ({} bytes)", self.cfg.max_payload);
                }
                Item::Reply(reply) => self.reply(reply, backoff)?,
            }
        }
        Ok(())
    }

    /// The frame for one payload, or `None` when it is dropped.
    fn encode(&self, payload: &[u8]) -> Option<bytes::Bytes> {
        self.stats.received.fetch_add(1, Relaxed);
        if self.cfg.json_only && serde_json::from_slice::<serde::de::IgnoredAny>(payload).is_err() {
            self.stats.dropped.fetch_add(1, Relaxed);
            warn!(
                self.log,
                "[redis] failed to parse JSON; dropped a {}-byte message (-ws-json-only)",
                payload.len()
            );
            return None;
        }
        Some(frame::message(payload))
    }

    /// Non-message replies: subscription confirmations, PONG, errors.
    fn reply(&self, reply: BytesFrame, backoff: &mut Backoff) -> Result<(), Failure> {
        match reply {
            BytesFrame::Array(items) => match items.first() {
                Some(BytesFrame::BulkString(kind)) if kind.as_ref() == b"subscribe" => {
                    if !backoff.first {
                        self.stats.redis_reconnects.fetch_add(1, Relaxed);
                    }
                    backoff.first = false;
                    self.stats.redis_up.store(true, Relaxed);
                    info!(
                        self.log,
                        "[redis] subscribed to the {} channel on {}",
                        self.cfg.channel,
                        self.addr()
                    );
                    backoff.reset();
                    Ok(())
                }
                _ => Ok(()),
            },
            BytesFrame::Error(e) => Err(format!("Redis answered an error: {e}")),
            _ => Ok(()),
        }
    }
}

/// A RESP command array.
pub fn command(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", parts.len()).into_bytes();
    for p in parts {
        out.extend_from_slice(format!("${}\r\n", p.len()).as_bytes());
        out.extend_from_slice(p);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Capped exponential backoff with jitter, so that many relays restarted
/// together do not reconnect in lockstep.
struct Backoff {
    current: Duration,
    seed: u64,
    reset: bool,
    /// No subscription has succeeded yet (the next one is not a reconnect).
    first: bool,
}

impl Backoff {
    fn new() -> Backoff {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1;
        Backoff {
            current: BACKOFF_MIN,
            seed,
            reset: true,
            first: true,
        }
    }

    fn reset(&mut self) {
        self.current = BACKOFF_MIN;
        self.reset = true;
    }

    fn is_reset(&self) -> bool {
        self.reset
    }

    /// The next delay: between half and all of the current step, which
    /// then doubles up to the cap.
    fn next(&mut self) -> Duration {
        self.reset = false;
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let frac = 0.5 + (self.seed % 1000) as f64 / 2000.0;
        let delay = self.current.mul_f64(frac);
        self.current = (self.current * 2).min(BACKOFF_MAX);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_with_jitter() {
        let mut b = Backoff::new();
        let delays: Vec<Duration> = (0..12).map(|_| b.next()).collect();
        assert!(delays[0] >= BACKOFF_MIN / 2 && delays[0] <= BACKOFF_MIN);
        assert!(delays.iter().all(|d| *d <= BACKOFF_MAX));
        assert!(delays[11] >= BACKOFF_MAX / 2);
        b.reset();
        assert!(b.next() <= BACKOFF_MIN);
    }

    #[test]
    fn command_encoding() {
        assert_eq!(
            command(&[b"SUBSCRIBE", b"ch"]),
            b"*2\r\n$9\r\nSUBSCRIBE\r\n$2\r\nch\r\n"
        );
    }
}
