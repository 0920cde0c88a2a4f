//! A worker's side of "nothing lost": keeping its history trimmed, the
//! replay a resuming client asks for (from the history, after what Redis
//! held before it under streams), and the `recovered:false` notices at a
//! gap. Kept apart from the fan-out (worker.rs): none of it runs per
//! delivered message.

use super::conn::{Conn, State, MAX_IOV};
use super::older::{self, Older};
use super::resume;
use super::worker::{Tally, Worker};
use crate::channels::Channels;
use crate::history::id::Id;
use crate::history::since::Point;
use crate::ws::control;
use crate::ws::frame;
use bytes::Bytes;
use slog::info;
use std::io::IoSlice;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

/// A configured key's name (a pattern's, for a pattern).
fn key_name(channels: &Channels, id: u32) -> Bytes {
    Bytes::copy_from_slice(channels.keys()[id as usize].name.as_bytes())
}

/// How often a resume checks whether the reader caught up with Redis.
const CATCH_UP_POLL: Duration = Duration::from_millis(2);

impl Worker {
    /// Under `-rs-mode=stream`: what a resume needs from Redis, read before
    /// the client joins (or its subscribe takes effect; the history covers
    /// what arrives meanwhile), within `-ws-handshake-timeout` (past it, the
    /// resume goes on from memory and says `recovered:false`).
    pub(crate) async fn older_for(&self, asked: &resume::Asked, v1: bool) -> Vec<Older> {
        let Some(source) = self.ctx.older.as_ref().filter(|_| !asked.is_empty()) else {
            return Vec::new();
        };
        let deadline = tokio::time::Instant::now() + self.ctx.cfg.handshake_timeout;
        let vouches = |ch: &[u8], point| self.vouches(ch, point);
        let fetch = older::fetch(&self.link, vouches, source, asked, v1);
        let Ok(found) = Box::pin(tokio::time::timeout_at(deadline, fetch)).await else {
            return Vec::new();
        };
        // Redis may have answered with entries the reader has not brought
        // to this worker yet: wait for them, or they would come again, live.
        let behind =
            |o: &Older| !self.seen(&o.channel, o.last) && !source.never_live(&o.channel, o.last);
        while found.iter().any(behind) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(CATCH_UP_POLL).await;
        }
        found
    }

    /// Drops what has aged past `-history-ttl`; the first worker reports
    /// the size (every worker keeps the same messages).
    pub(super) fn trim_history(&self, now: Instant) {
        if let Some(history) = self.history.borrow_mut().as_mut() {
            history.trim(now);
            if self.id == 0 {
                let (messages, bytes) = history.size();
                let h = &self.ctx.stats.history;
                h.kept_messages.store(messages as u64, Relaxed);
                h.kept_bytes.store(bytes as u64, Relaxed);
            }
        }
    }

    /// Replays to `c` the messages of each channel after its point, then
    /// (to a `pubsocketd.v1` client) `{"channel":…,"recovered":…}`. Runs
    /// between two batches, right after `c` joined the index or changed
    /// its selection: nothing is missed or sent twice in between. The
    /// writes are ordinary deliveries, under the same slow-client bound.
    /// `older`: what Redis held before the history (`-rs-mode=stream`).
    pub(crate) fn resume(&self, c: &Conn, asked: &resume::Asked, mut older: Vec<Older>) {
        // What aged past -history-ttl since the last tick is not replayed.
        if let Some(h) = self.history.borrow_mut().as_mut() {
            h.trim(Instant::now());
        }
        let history = self.history.borrow();
        let mut tally = Tally::default();
        for (channel, point) in asked {
            let before = older
                .iter()
                .position(|o| o.channel == *channel)
                .map(|i| older.swap_remove(i));
            let from = before.as_ref().map_or(*point, |o| Point::After(o.last));
            let mut replay = match history.as_ref() {
                Some(h) => h.replay(channel, from, c.v1()),
                None => Default::default(),
            };
            if let Some(o) = before {
                // Nothing of the channel kept: nothing came after Redis' answer.
                let held = history.as_ref().is_some_and(|h| h.holds(channel));
                let mut frames = o.replay.frames;
                frames.append(&mut replay.frames);
                replay.frames = frames;
                replay.recovered = o.replay.recovered && (replay.recovered || !held);
            }
            for chunk in replay.frames.chunks(MAX_IOV) {
                let frames: Vec<&Bytes> = chunk.iter().collect();
                let slices: Vec<IoSlice> = chunk.iter().map(|f| IoSlice::new(f)).collect();
                let len = chunk.iter().map(Bytes::len).sum();
                let delivery = c.deliver(&frames, &slices, len);
                self.record(c, delivery, chunk.len(), len, &mut tally);
            }
            self.ctx
                .stats
                .history
                .resumed(replay.frames.len(), replay.recovered);
            if c.v1() {
                let answer = control::recovered(channel, replay.recovered);
                c.send_control(&frame::encode(frame::OP_TEXT, &answer));
            }
        }
        self.counters().add(tally.deliveries, tally.bytes);
    }

    /// Continuity was lost (see [`Message::gap`]): each `pubsocketd.v1`
    /// client hears `{"channel":…,"recovered":false}` for every channel it
    /// reads of `channel` (empty: of all), in order with its messages. Rare
    /// (a Redis reconnect), so built per client.
    pub(super) fn gap(&self, channel: &[u8]) {
        let channels = self.ctx.channels.get();
        let mut told = 0;
        for c in self
            .index
            .borrow()
            .all()
            .filter(|c| c.v1() && c.state() == State::Open)
        {
            let sel = c.selection();
            let names: Vec<Bytes> = match (channel.is_empty(), sel.as_deref()) {
                (false, sel) if resume::reads(&channels, sel, channel) => {
                    vec![Bytes::copy_from_slice(channel)]
                }
                (false, _) => continue,
                (true, None) => channels
                    .everything()
                    .map(|k| key_name(&channels, k))
                    .collect(),
                (true, Some(s)) => {
                    let keys = s.keys.iter().map(|&k| key_name(&channels, k));
                    keys.chain(s.channels.iter().cloned()).collect()
                }
            };
            for name in names {
                let notice = control::recovered(&name, false);
                c.send_control(&frame::encode(frame::OP_TEXT, &notice));
            }
            told += 1;
        }
        if told > 0 {
            info!(
                self.ctx.log,
                "[history] worker {}: told {told} clients recovered:false (continuity lost)",
                self.id
            );
        }
    }

    /// Whether the history alone replays every message of `channel` after
    /// `point` (for `last`: holds one), else, under streams, the rest is
    /// read from Redis first.
    pub(crate) fn vouches(&self, channel: &[u8], point: Point) -> bool {
        let history = self.history.borrow();
        history.as_ref().is_some_and(|h| match point {
            Point::Last => h.holds(channel),
            after => h.vouches(channel, after),
        })
    }

    /// Whether this worker has relayed the entry `id` of `channel` (or a
    /// later one).
    pub(crate) fn seen(&self, channel: &[u8], id: Id) -> bool {
        let history = self.history.borrow();
        history
            .as_ref()
            .and_then(|h| h.newest(channel))
            .is_some_and(|newest| newest >= id)
    }
}
