//! The one Redis connection of the process: SUBSCRIBE (and PSUBSCRIBE for
//! patterns), read pushes, encode each payload once, hand the message to
//! the hub. On any failure it backs off (capped, exponential, with jitter),
//! reconnects and resubscribes; the WebSocket side never notices except for
//! the gap.

use super::backoff::Backoff;
use super::connect::{ConnectError, Target};
use super::on_demand::{Answer, Tracker};
use super::resp::write::command;
use super::resp::{Item, PushReader};
use super::supervise::{self, Failure, Parts};
use crate::channels::{Channels, Key, Live};
use crate::demand::{Demand, Owns};
use crate::ingest::encode::Rejected;
use crate::ingest::handle::Ingest;
use crate::ops::config::Config;
use crate::ops::stats::Stats;
use bytes::{Buf, BytesMut};
use redis_protocol::resp2::types::BytesFrame;
use slog::{debug, info, warn, Logger};
use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{oneshot, watch};
use tokio::time::sleep_until;

/// Read buffer size; a larger payload grows it to fit, once.
const READ_CHUNK: usize = 64 * 1024;

/// The subscriber and what it needs.
pub struct Subscriber {
    pub cfg: Config,
    pub target: Target,
    /// Where each message goes (encoded once, handed to every worker).
    pub ingest: Ingest,
    /// The channels relayed now (a reload changes them).
    pub channels: Arc<Live>,
    pub log: Logger,
    pub stats: Arc<Stats>,
    /// Told when Redis refuses our credentials or subscriptions before the
    /// first subscription succeeded: a configuration error, fatal at start.
    pub fatal: Option<oneshot::Sender<String>>,
    /// Set for one node of a Redis Cluster: SSUBSCRIBE to these channels
    /// there. `None`: the configured server, every key.
    pub node: Option<Node>,
    /// `-rs-on-demand`: the channels clients read under a pattern.
    pub demand: Option<Arc<Demand>>,
}

/// One cluster node and the channels whose slots it owns.
#[derive(Debug, Clone)]
pub struct Node {
    pub host: String,
    pub port: u16,
    pub channels: Vec<String>,
    /// The slots it owns, under `-rs-on-demand` (it subscribes the
    /// channels of those slots that clients read); empty otherwise.
    pub slots: Vec<(u16, u16)>,
    /// Set while this node's subscription is live (the cluster supervisor
    /// derives readiness from all of them).
    pub live: Arc<std::sync::atomic::AtomicBool>,
}

impl Subscriber {
    /// Runs until dropped: connect, subscribe, relay; on failure, back off
    /// and start again (see [`supervise::run`]).
    pub async fn run(mut self) {
        let parts = Parts {
            target: self.target.clone(),
            log: self.log.clone(),
            stats: self.stats.clone(),
            fatal: self.fatal.take(),
        };
        supervise::run(self, parts).await
    }

    /// One connection, from connect to failure. Resets `backoff` once
    /// subscribed.
    pub async fn session(&mut self, backoff: &mut Backoff) -> Result<Infallible, Failure> {
        // What Redis published while no session read it is gone: IDs of the
        // relay's own start a new epoch.
        self.ingest.new_epoch().await;
        let (addr, connecting) = match &self.node {
            None => (self.target.describe(), self.target.connect().await),
            Some(n) => (
                format!("cluster node {}:{}", n.host, n.port),
                self.target.connect_to(&n.host, n.port).await,
            ),
        };
        let mut sock = connecting.map_err(|e| match e {
            ConnectError::Io(why) => Failure::io(format!("cannot connect to {addr}: {why}")),
            ConnectError::Refused(why) => Failure {
                why: format!("{addr} refused us: {why}"),
                refused: true,
            },
        })?;
        debug!(self.log, "[redis] connected to {addr}");
        let mut reloads = self.channels.watch();
        reloads.mark_unchanged();
        let mut subscribed = self.channels.get();
        let mut tracker = self.demand.as_ref().map(|d| {
            let sharded = self.node.is_some();
            Tracker::new(d, self.owns(), sharded)
        });
        let mut cmds = self.subscribe_commands(&subscribed);
        cmds.extend(
            tracker
                .as_mut()
                .map(Tracker::initial_commands)
                .unwrap_or_default(),
        );
        let lost = |e: std::io::Error| Failure::io(format!("connection to {addr} lost: {e}"));
        for cmd in cmds {
            sock.write_all(&cmd).await.map_err(lost)?;
        }
        // TLS buffers what it encrypts: push it out.
        sock.flush().await.map_err(lost)?;
        if self.expected_confirmations() == 0 {
            self.subscribed(backoff);
        }
        let mut session = Session {
            subscribed: &mut subscribed,
            reloads: &mut reloads,
            tracker: tracker.as_mut(),
            primaries: self.target.primaries().subscribe(),
        };
        self.relay(&mut sock, backoff, &mut session)
            .await
            .map_err(|mut f| {
                if !f.refused {
                    f.why = format!("connection to {addr} lost: {}", f.why);
                }
                f
            })
    }

    /// Reads until the connection fails, relaying messages.
    async fn relay<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        sock: &mut S,
        backoff: &mut Backoff,
        session: &mut Session<'_>,
    ) -> Result<Infallible, Failure> {
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        let mut reader = PushReader::new(self.cfg.max_payload);
        let keepalive = self.cfg.keepalive;
        let mut last_read = Instant::now();
        let mut ping_sent: Option<Instant> = None;
        let mut confirmed = 0;
        loop {
            let deadline = ping_sent.unwrap_or(last_read) + keepalive;
            let want = reader.wanted(&buf).unwrap_or(0).saturating_sub(buf.len());
            buf.reserve(want.max(READ_CHUNK / 4));
            tokio::select! {
                n = sock.read_buf(&mut buf) => match n {
                    Ok(0) => return Err(Failure::io("closed by Redis")),
                    Ok(n) => {
                        self.stats.redis_bytes_read.fetch_add(n as u64, Relaxed);
                        last_read = Instant::now();
                        ping_sent = None;
                    }
                    Err(e) => return Err(Failure::io(e.to_string())),
                },
                _ = sleep_until(deadline.into()) => {
                    if ping_sent.is_some() {
                        return Err(Failure::io(format!("no answer to PING within {keepalive:?}")));
                    }
                    sock.write_all(&command(&[b"PING"])).await.map_err(|e| Failure::io(e.to_string()))?;
                    sock.flush().await.map_err(|e| Failure::io(e.to_string()))?;
                    ping_sent = Some(Instant::now());
                    continue;
                }
                Ok(()) = session.primaries.changed() => {
                    return Err(Failure::io("a Sentinel announced a new primary"));
                }
                cmds = next_commands(&mut session.tracker) => {
                    for cmd in cmds {
                        sock.write_all(&cmd).await.map_err(|e| Failure::io(e.to_string()))?;
                    }
                    sock.flush().await.map_err(|e| Failure::io(e.to_string()))?;
                    continue;
                }
                Ok(()) = session.reloads.changed(), if self.node.is_none() => {
                    let now = self.channels.get();
                    for cmd in resubscribe_commands(session.subscribed, &now) {
                        sock.write_all(&cmd).await.map_err(|e| Failure::io(e.to_string()))?;
                    }
                    sock.flush().await.map_err(|e| Failure::io(e.to_string()))?;
                    *session.subscribed = now;
                    continue;
                }
            }
            self.drain(&mut buf, &mut reader, backoff, &mut confirmed, session)
                .await?;
        }
    }

    /// Handles every complete item in `buf`.
    async fn drain(
        &mut self,
        buf: &mut BytesMut,
        reader: &mut PushReader,
        backoff: &mut Backoff,
        confirmed: &mut usize,
        session: &mut Session<'_>,
    ) -> Result<(), Failure> {
        while let Some(item) = reader.next(buf).map_err(|e| Failure::io(e.0))? {
            match item {
                Item::Message {
                    pattern,
                    channel,
                    payload,
                    consumed,
                } => {
                    let relay = match &pattern {
                        Some(p) => self
                            .ingest
                            .channels()
                            .relays_pattern_copy(&buf[p.clone()], &buf[channel.clone()]),
                        None => true,
                    };
                    if relay {
                        self.relay_one(&buf[channel], &buf[payload]).await;
                    }
                    buf.advance(consumed);
                }
                Item::Oversized { channel, len } => {
                    self.ingest.count_oversized(channel.as_bytes());
                    warn!(self.log, "[redis] dropped a {len}-byte message on {channel}: over -rs-max-payload ({} bytes)", self.cfg.max_payload);
                }
                Item::Reply(reply) => {
                    self.reply(reply, backoff, confirmed, session.tracker.as_deref_mut())?
                }
            }
        }
        Ok(())
    }

    /// Relays one payload; a payload that `-ws-json-only` refuses is one
    /// log line (the others were counted by the encoder).
    async fn relay_one(&mut self, channel: &[u8], payload: &[u8]) {
        if let Err(Rejected::NotJson) = self.ingest.publish(channel, payload).await {
            warn!(
                self.log,
                "[redis] failed to parse JSON; dropped a {}-byte message (-ws-json-only)",
                payload.len()
            );
        }
    }

    /// Non-message replies: subscription confirmations, PONG, errors.
    fn reply(
        &self,
        reply: BytesFrame,
        backoff: &mut Backoff,
        confirmed: &mut usize,
        tracker: Option<&mut Tracker>,
    ) -> Result<(), Failure> {
        if let (Some(t), BytesFrame::Array(items)) = (tracker, &reply) {
            if let [BytesFrame::BulkString(kind), BytesFrame::BulkString(ch), ..] = &items[..] {
                if t.answer(kind, ch) == Answer::Ours {
                    return Ok(());
                }
            }
        }
        match reply {
            BytesFrame::Array(items) => match items.first() {
                Some(BytesFrame::BulkString(kind))
                    if matches!(kind.as_ref(), b"subscribe" | b"psubscribe" | b"ssubscribe") =>
                {
                    *confirmed += 1;
                    if *confirmed == self.expected_confirmations() {
                        self.subscribed(backoff);
                    }
                    Ok(())
                }
                // The cluster moved a slot away from this node.
                Some(BytesFrame::BulkString(kind)) if kind.as_ref() == b"sunsubscribe" => {
                    Err(Failure::io("a slot moved to another node"))
                }
                _ => Ok(()),
            },
            BytesFrame::Error(e) => Err(Failure {
                refused: is_refusal(&e),
                why: format!("Redis answered an error: {e}"),
            }),
            _ => Ok(()),
        }
    }

    /// Confirmations that mean "every channel is subscribed".
    fn expected_confirmations(&self) -> usize {
        match &self.node {
            Some(n) => n.channels.len(),
            None => self.channels.get().subscribed_keys().count(),
        }
    }

    /// The channels this session subscribes on demand: every one, or
    /// those of the node's slots.
    fn owns(&self) -> Owns {
        match &self.node {
            None => Arc::new(|_: &[u8]| true),
            Some(n) => {
                let slots = n.slots.clone();
                Arc::new(move |ch: &[u8]| {
                    let slot = redis_protocol::redis_keyslot(ch);
                    slots.iter().any(|(a, b)| (*a..=*b).contains(&slot))
                })
            }
        }
    }

    /// SUBSCRIBE for the channel names and PSUBSCRIBE for the patterns, or
    /// SSUBSCRIBE for a cluster node's channels.
    fn subscribe_commands(&self, channels: &Channels) -> Vec<Vec<u8>> {
        if let Some(node) = &self.node {
            // One command per channel: SSUBSCRIBE refuses channels of
            // different slots in one call (CROSSSLOT).
            return node
                .channels
                .iter()
                .map(|c| command(&[b"SSUBSCRIBE", c.as_bytes()]))
                .collect();
        }
        subscribe_commands(channels)
    }

    /// Every key is subscribed: the relay is live.
    fn subscribed(&self, backoff: &mut Backoff) {
        if let Some(node) = &self.node {
            node.live.store(true, Relaxed);
            backoff.first = false;
            backoff.reset();
            let list = match node.channels.is_empty() {
                true => "nothing yet (channels subscribed as clients read them)".into(),
                false => node.channels.join(", "),
            };
            return info!(
                self.log,
                "[redis] subscribed to {list} on cluster node {}:{}", node.host, node.port
            );
        }
        if !backoff.first {
            self.stats.redis_reconnects.fetch_add(1, Relaxed);
        }
        backoff.first = false;
        backoff.reset();
        self.stats.redis_up.store(true, Relaxed);
        let what = self.channels.get().describe("");
        info!(
            self.log,
            "[redis] subscribed to {what} on {}",
            self.target.describe()
        );
    }
}

/// Errors that mean "not allowed" rather than "try again".
pub fn is_refusal(error: &str) -> bool {
    [
        "NOAUTH",
        "WRONGPASS",
        "NOPERM",
        "ERR AUTH",
        "ERR invalid password",
    ]
    .iter()
    .any(|p| error.starts_with(p))
}

/// A session's view of the reloads (what it subscribed, and the watch),
/// and of the channels subscribed on demand.
struct Session<'a> {
    subscribed: &'a mut Arc<Channels>,
    reloads: &'a mut watch::Receiver<u64>,
    tracker: Option<&'a mut Tracker>,
    /// Changes when a Sentinel announces a new primary (never without
    /// `-rs-sentinel`).
    primaries: watch::Receiver<u64>,
}

/// The next on-demand commands; never, without `-rs-on-demand`.
async fn next_commands(tracker: &mut Option<&mut Tracker>) -> Vec<Vec<u8>> {
    match tracker {
        Some(t) => t.next_commands().await,
        None => std::future::pending().await,
    }
}

/// SUBSCRIBE for the channel names and PSUBSCRIBE for the patterns.
fn subscribe_commands(channels: &Channels) -> Vec<Vec<u8>> {
    let keys: Vec<&Key> = channels.subscribed_keys().collect();
    commands(&keys, b"SUBSCRIBE", b"PSUBSCRIBE")
}

/// After a reload: SUBSCRIBE (PSUBSCRIBE) what is new, UNSUBSCRIBE
/// (PUNSUBSCRIBE) what is gone, on the live connection.
fn resubscribe_commands(before: &Channels, now: &Channels) -> Vec<Vec<u8>> {
    let had = |c: &Channels, k: &Key| c.subscribed_keys().any(|o| o.name == k.name);
    let added: Vec<&Key> = now.subscribed_keys().filter(|k| !had(before, k)).collect();
    let gone: Vec<&Key> = before.subscribed_keys().filter(|k| !had(now, k)).collect();
    let mut out = commands(&added, b"SUBSCRIBE", b"PSUBSCRIBE");
    out.extend(commands(&gone, b"UNSUBSCRIBE", b"PUNSUBSCRIBE"));
    out
}

/// One command for the names and one for the patterns of `keys`, when any.
fn commands(keys: &[&Key], names_verb: &[u8], patterns_verb: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (verb, pattern) in [(names_verb, false), (patterns_verb, true)] {
        let names: Vec<&[u8]> = keys
            .iter()
            .filter(|k| k.pattern == pattern)
            .map(|k| k.name.as_bytes())
            .collect();
        if !names.is_empty() {
            let mut parts = vec![verb];
            parts.extend(names);
            out.push(command(&parts));
        }
    }
    out
}

impl supervise::Session for Subscriber {
    fn once(&mut self, backoff: &mut Backoff) -> impl Future<Output = Result<Infallible, Failure>> {
        self.session(backoff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals() {
        assert!(is_refusal(
            "NOPERM this user has no permissions to access one of the channels used as arguments"
        ));
        assert!(is_refusal(
            "WRONGPASS invalid username-password pair or user is disabled."
        ));
        assert!(is_refusal("NOAUTH Authentication required."));
        assert!(!is_refusal("ERR unknown command"));
    }
}
