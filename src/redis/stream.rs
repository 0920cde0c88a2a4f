//! `-rs-mode=stream`: one connection reads every configured stream with
//! `XREAD BLOCK … COUNT … STREAMS …` from the last ID it delivered, and
//! hands each entry to the ingest with Redis' own ID. After a lost
//! connection (or a Redis restart) it goes on from there, so nothing is
//! lost while Redis still holds the entries; whether it still held the
//! one it stopped at decides whether the next entry is linked to it (the
//! `prev` a resume trusts) or follows a possible gap.

use super::backoff::Backoff;
use super::connect::{ConnectError, RedisStream, Target};
use super::resp::reply::{self, ReplyError};
use super::resp::write::command;
use super::stream_entries::{self, Entry};
use super::supervise::{self, Failure, Parts, Session};
use crate::history::id::{Id, Stamp};
use crate::ingest::handle::Ingest;
use crate::ops::stats::Stats;
use bytes::{Bytes, BytesMut};
use redis_protocol::resp2::types::BytesFrame;
use slog::{debug, info, Logger};
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;
use tokio::time::timeout;

/// How long one XREAD waits for entries.
const BLOCK: Duration = Duration::from_secs(5);

/// Entries asked for per XREAD.
const COUNT: usize = 256;

/// Time for Redis to answer anything but the blocking read.
const ANSWER: Duration = Duration::from_secs(5);

/// Where one stream is.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cursor {
    /// The last entry delivered (or, before the first, the stream's last
    /// entry when reading began); `None` until known.
    last: Option<Id>,
    /// Whether the next entry read follows `last` with nothing between.
    linked: bool,
    /// Where the first session began: entries up to it are never relayed
    /// live (a resume reads them from Redis and need not wait for them).
    origin: Option<Id>,
}

impl Cursor {
    /// Whether the entry `id` will never come live: it is at or before
    /// where reading began.
    pub fn before_origin(&self, id: Id) -> bool {
        self.origin.is_some_and(|o| id <= o)
    }
}

/// Where every stream is, kept across sessions (and, under `-rs-cluster`,
/// across the node sessions the supervisor restarts). Written once per
/// entry, by the one reader of that stream.
pub type Cursors = Arc<Mutex<HashMap<Bytes, Cursor>>>;

/// Under `-rs-cluster`: a node is live once each of its readers (one per
/// hash slot of its streams: a multi-key XREAD needs one slot) is placed.
pub struct Ready {
    pub placed: Arc<AtomicUsize>,
    pub of: usize,
    pub live: Arc<AtomicBool>,
}

/// Reads streams and relays their entries.
pub struct StreamReader {
    pub target: Target,
    pub ingest: Ingest,
    pub log: Logger,
    pub stats: Arc<Stats>,
    pub fatal: Option<oneshot::Sender<String>>,
    /// The stream keys read here.
    pub keys: Vec<Bytes>,
    /// `-rs-stream-field`.
    pub field: Bytes,
    /// The biggest reply accepted: a batch of entries at `-rs-max-payload`.
    pub max_reply: usize,
    /// `-rs-keepalive`: how late beyond the block an answer may be.
    pub keepalive: Duration,
    /// The cluster node, when one of several.
    pub node: Option<(String, u16)>,
    /// Under `-rs-cluster`: the node's readiness.
    pub ready: Option<Ready>,
    cursors: Vec<Cursor>,
    store: Cursors,
}

impl StreamReader {
    /// A reader of `keys` (cursors start unknown).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        target: Target,
        ingest: Ingest,
        log: Logger,
        stats: Arc<Stats>,
        fatal: Option<oneshot::Sender<String>>,
        keys: Vec<Bytes>,
        field: &str,
        max_payload: usize,
        keepalive: Duration,
    ) -> StreamReader {
        StreamReader {
            cursors: vec![Cursor::default(); keys.len()],
            target,
            ingest,
            log,
            stats,
            fatal,
            keys,
            field: Bytes::copy_from_slice(field.as_bytes()),
            max_reply: max_payload.saturating_mul(COUNT).max(1 << 20),
            keepalive,
            node: None,
            ready: None,
            store: Cursors::default(),
        }
    }

    /// Keeps the cursors in `store` (shared with the workers' resumes).
    pub fn with_store(mut self, store: Cursors) -> StreamReader {
        self.store = store;
        self
    }

    /// The reader of one node's streams of one hash slot, sharing `store`.
    pub fn on_node(mut self, host: &str, port: u16, store: Cursors, ready: Ready) -> StreamReader {
        self.node = Some((host.to_string(), port));
        self.store = store;
        self.ready = Some(ready);
        self
    }

    /// Reads until the process ends, reconnecting with backoff (see
    /// [`supervise::run`]; with `-rs-sentinel`, also when the Sentinels
    /// announce a new primary).
    pub async fn run(mut self) {
        let parts = Parts {
            target: self.target.clone(),
            log: self.log.clone(),
            stats: self.stats.clone(),
            fatal: self.fatal.take(),
        };
        supervise::run(self, parts).await
    }

    fn place(&self) -> String {
        match &self.node {
            Some((host, port)) => format!("cluster node {host}:{port}"),
            None => self.target.describe(),
        }
    }

    /// One connection: where each stream is, then XREAD until it fails.
    pub async fn session(&mut self, backoff: &mut Backoff) -> Result<Infallible, Failure> {
        let place = self.place();
        let connecting = match &self.node {
            None => self.target.connect().await,
            Some((host, port)) => self.target.connect_to(host, *port).await,
        };
        let mut sock = connecting.map_err(|e| match e {
            ConnectError::Io(why) => Failure::io(format!("cannot connect to {place}: {why}")),
            ConnectError::Refused(why) => Failure {
                why: format!("{place} refused us: {why}"),
                refused: true,
            },
        })?;
        let mut buf = BytesMut::new();
        self.cursors = {
            let store = self.store.lock().expect("cursors");
            let known = |k| store.get(k).copied().unwrap_or_default();
            self.keys.iter().map(known).collect()
        };
        self.position(&mut sock, &mut buf).await?;
        self.placed(backoff);
        self.announce(&place);
        let mut primaries = self.target.primaries().subscribe();
        loop {
            let cmd = self.xread_command();
            let wait = BLOCK + self.keepalive;
            let frame = tokio::select! {
                frame = self.ask(&mut sock, &mut buf, &cmd, wait) => frame?,
                Ok(()) = primaries.changed() => {
                    return Err(Failure::io(format!("{place}: a Sentinel announced a new primary")));
                }
            };
            let batch =
                stream_entries::xread(frame, &self.field).map_err(|why| refused(&place, why))?;
            // The lag once per read, from its newest entry.
            let newest = batch
                .iter()
                .filter_map(|(_, e)| e.last())
                .map(|e| e.id)
                .max();
            for (key, entries) in batch {
                self.relay(&key, entries).await;
            }
            if let Some(id) = newest {
                lag(&self.stats, id);
            }
        }
    }

    /// Every stream placed: the relay (or, in a cluster, this reader's
    /// share of its node) is live.
    fn placed(&self, backoff: &mut Backoff) {
        let again = !backoff.first;
        backoff.first = false;
        backoff.reset();
        if let Some(r) = &self.ready {
            if r.placed.fetch_add(1, Relaxed) + 1 == r.of {
                r.live.store(true, Relaxed);
            }
            return;
        }
        self.stats.redis_up.store(true, Relaxed);
        if again {
            self.stats.redis_reconnects.fetch_add(1, Relaxed);
        }
    }

    /// `[redis] reading streams a (from 5-1), b (from the start) on …`.
    fn announce(&self, place: &str) {
        let list: Vec<String> = self
            .keys
            .iter()
            .zip(&self.cursors)
            .map(|(k, c)| match c.last {
                Some(id) if id != Id::default() => {
                    format!("{} (after {id})", String::from_utf8_lossy(k))
                }
                _ => format!("{} (from the start)", String::from_utf8_lossy(k)),
            })
            .collect();
        info!(
            self.log,
            "[redis] reading streams {} on {place}",
            list.join(", ")
        );
    }

    /// Where to read from: a stream first seen is read from its newest
    /// entry on (`XREVRANGE … COUNT 1`); one read before, from its last
    /// delivered entry, linked to it only if Redis still holds that entry
    /// (else some after it may have been trimmed, or Redis lost its data).
    async fn position(
        &mut self,
        sock: &mut RedisStream,
        buf: &mut BytesMut,
    ) -> Result<(), Failure> {
        let place = self.place();
        for i in 0..self.keys.len() {
            let key = self.keys[i].clone();
            let cursor = self.cursors[i];
            let cmd = match cursor.last {
                None => command(&[b"XREVRANGE", &key, b"+", b"-", b"COUNT", b"1"]),
                Some(id) => {
                    let id = id.to_string();
                    command(&[b"XRANGE", &key, id.as_bytes(), id.as_bytes()])
                }
            };
            let frame = self.ask(sock, buf, &cmd, ANSWER).await?;
            let found =
                stream_entries::range(frame, &self.field).map_err(|why| refused(&place, why))?;
            let placed = match (cursor.last, found.first()) {
                (None, Some(newest)) => Cursor {
                    last: Some(newest.id),
                    linked: true,
                    origin: Some(newest.id),
                },
                (None, None) => Cursor {
                    last: Some(Id::default()),
                    linked: false,
                    origin: Some(Id::default()),
                },
                (Some(last), kept) => Cursor {
                    last: Some(last),
                    linked: kept.is_some(),
                    origin: cursor.origin,
                },
            };
            if cursor.last.is_some() && !placed.linked {
                // Entries after the last one relayed may be gone: the
                // clients of this stream hear so before the next one.
                self.ingest.gap(&key).await;
            }
            self.cursors[i] = placed;
            self.store.lock().expect("cursors").insert(key, placed);
        }
        Ok(())
    }

    /// `XREAD BLOCK … COUNT … STREAMS k… id…`.
    fn xread_command(&self) -> Vec<u8> {
        let block = BLOCK.as_millis().to_string();
        let count = COUNT.to_string();
        let ids: Vec<String> = self
            .cursors
            .iter()
            .map(|c| c.last.unwrap_or_default().to_string())
            .collect();
        let mut parts: Vec<&[u8]> = vec![
            b"XREAD",
            b"BLOCK",
            block.as_bytes(),
            b"COUNT",
            count.as_bytes(),
            b"STREAMS",
        ];
        parts.extend(self.keys.iter().map(|k| k.as_ref()));
        parts.extend(ids.iter().map(|i| i.as_bytes()));
        command(&parts)
    }

    /// Sends `cmd` and reads its answer within `wait`.
    async fn ask(
        &self,
        sock: &mut RedisStream,
        buf: &mut BytesMut,
        cmd: &[u8],
        wait: Duration,
    ) -> Result<BytesFrame, Failure> {
        let place = self.place();
        let lost = |why: String| Failure::io(format!("connection to {place} lost: {why}"));
        sock.write_all(cmd).await.map_err(|e| lost(e.to_string()))?;
        sock.flush().await.map_err(|e| lost(e.to_string()))?;
        let answer = timeout(wait, reply::read_capped(sock, buf, self.max_reply))
            .await
            .map_err(|_| lost(format!("no answer within {wait:?}")))?;
        let read = answer.map_err(|e| match e {
            ReplyError::Io(_) => lost(e.to_string()),
            ReplyError::Malformed(why) => lost(why),
        })?;
        Ok(read)
    }

    /// Hands a stream's new entries to the ingest, each linked to the one
    /// before when nothing can be between them.
    async fn relay(&mut self, key: &Bytes, entries: Vec<Entry>) {
        let Some(i) = self.keys.iter().position(|k| k == key) else {
            return;
        };
        for e in entries {
            let cursor = &mut self.cursors[i];
            let prev = cursor.linked.then_some(cursor.last).flatten();
            cursor.last = Some(e.id);
            cursor.linked = true;
            let placed = *cursor;
            let Some(payload) = e.payload else {
                debug!(
                    self.log,
                    "[redis] stream entry {} has no field {:?}; skipped",
                    e.id,
                    String::from_utf8_lossy(&self.field)
                );
                self.ingest.count_oversized(key);
                self.store
                    .lock()
                    .expect("cursors")
                    .insert(key.clone(), placed);
                continue;
            };
            let stamp = Stamp { id: e.id, prev };
            if let Err(why) = self.ingest.publish_stamped(key, &payload, stamp).await {
                debug!(
                    self.log,
                    "[redis] stream entry {} not relayed: {why:?}", e.id
                );
            }
            // Stored after the hand-over: a session aborted during it (a
            // cluster re-plan) reads the entry again rather than skip it.
            self.store
                .lock()
                .expect("cursors")
                .insert(key.clone(), placed);
        }
    }
}

/// The reader's lag: now minus the time in the newest entry's ID.
fn lag(stats: &Stats, id: Id) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    let now = now.map_or(0, |d| d.as_millis() as u64);
    stats
        .history
        .stream_lag_ms
        .store(now.saturating_sub(id.high), Relaxed);
}

/// Redis refused a stream command: ACL or a key of another type (fatal
/// before the first success), or a passing state (loading its data, a
/// slot moving) that a retry outlives.
fn refused(place: &str, why: String) -> Failure {
    const PASSING: [&str; 5] = ["LOADING", "MOVED", "ASK ", "TRYAGAIN", "CLUSTERDOWN"];
    Failure {
        refused: !PASSING.iter().any(|p| why.contains(p)),
        why: format!("{place}: {why}"),
    }
}

impl Session for StreamReader {
    fn once(&mut self, backoff: &mut Backoff) -> impl Future<Output = Result<Infallible, Failure>> {
        self.session(backoff)
    }
}
