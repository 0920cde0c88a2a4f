//! A worker's side of "nothing lost": keeping its history trimmed, the
//! replay a resuming client asks for (from the history, after what Redis
//! held before it under streams), and the `recovered:false` notices at a
//! gap. Kept apart from the fan-out (worker.rs): none of it runs per
//! delivered message.

use super::conn::{Conn, State, MAX_IOV};
use super::history::Replay;
use super::hub::Form;
use super::older::{self, Older};
use super::resume;
use super::worker::{Tally, Worker};
use crate::channels::{Channels, Selection};
use crate::history::id::Id;
use crate::history::since::Point;
use crate::sse::event as sse;
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

/// The names under which a client that chose `sel` reads `channel` (of
/// everything it reads, when empty): the channel itself, or each key (a
/// pattern named as the pattern) and chosen channel.
fn names_read(channels: &Channels, sel: Option<&Selection>, channel: &[u8]) -> Vec<Bytes> {
    match (channel.is_empty(), sel) {
        (false, sel) if resume::reads(channels, sel, channel) => {
            vec![Bytes::copy_from_slice(channel)]
        }
        (false, _) => Vec::new(),
        (true, None) => channels
            .everything()
            .map(|k| key_name(channels, k))
            .collect(),
        (true, Some(s)) => {
            let keys = s.keys.iter().map(|&k| key_name(channels, k));
            keys.chain(s.channels.iter().cloned()).collect()
        }
    }
}

/// `{"channel":…,"recovered":…}` to a client that can hear it: a
/// `pubsocketd.v1` control message, or a `recovered` event. The original's
/// clients could not parse one and hear nothing.
fn tell_recovered(c: &Conn, channel: &[u8], whole: bool) {
    if c.v1() {
        let answer = control::recovered(channel, whole);
        c.send_control(&frame::encode(frame::OP_TEXT, &answer));
    } else if c.sse() {
        c.send_control(&Bytes::from(sse::recovered(channel, whole)));
    }
}

/// How often a resume checks whether the reader caught up with Redis.
const CATCH_UP_POLL: Duration = Duration::from_millis(2);

impl Worker {
    /// Under `-rs-mode=stream`: what a resume needs from Redis, read before
    /// the client joins (or its subscribe takes effect; the history covers
    /// what arrives meanwhile), within `-ws-handshake-timeout` (past it, the
    /// resume goes on from memory and says `recovered:false`).
    pub(crate) async fn older_for(&self, asked: &resume::Asked, form: Form) -> Vec<Older> {
        let Some(source) = self.ctx.older.as_ref().filter(|_| !asked.is_empty()) else {
            return Vec::new();
        };
        let deadline = tokio::time::Instant::now() + self.ctx.cfg.handshake_timeout;
        let vouches = |ch: &[u8], point| self.vouches(ch, point);
        let fetch = older::fetch(&self.link, vouches, source, asked, form.uncompressed());
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
                Some(h) => h.replay(channel, from, c.form().uncompressed()),
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
            self.replay_to(c, channel, replay, &mut tally);
        }
        self.counters().add(tally.deliveries, tally.bytes);
    }

    /// Writes a replay to `c`, counts it, and tells a client that can hear
    /// it whether it was whole.
    fn replay_to(&self, c: &Conn, channel: &[u8], replay: Replay, tally: &mut Tally) {
        for chunk in replay.frames.chunks(MAX_IOV) {
            let frames: Vec<&Bytes> = chunk.iter().collect();
            let slices: Vec<IoSlice> = chunk.iter().map(|f| IoSlice::new(f)).collect();
            let len = chunk.iter().map(Bytes::len).sum();
            let delivery = c.deliver(&frames, &slices, len);
            self.record(c, delivery, chunk.len(), len, tally);
        }
        self.ctx
            .stats
            .history
            .resumed(replay.frames.len(), replay.recovered);
        tell_recovered(c, channel, replay.recovered);
    }

    /// An event stream resumed by a `Last-Event-ID` of `channel`: the
    /// client had every message up to that one, of all its channels (one
    /// connection gets them in the order they came). So the other channels
    /// it reads resume from that point of this worker's order of arrival;
    /// each says whether it is whole. When the message is no longer kept
    /// but is older than what is (the client was away long), they get all
    /// that is kept, not whole; an ID unknown otherwise (another relay's, a
    /// newer one) replays nothing, and they hear `recovered:false`.
    pub(crate) fn resume_around(&self, c: &Conn, channel: &[u8], id: Id) {
        let history = self.history.borrow();
        let Some(h) = history.as_ref() else {
            return;
        };
        let channels = self.ctx.channels.get();
        let sel = c.selection();
        let (cut, known) = match h.serial_of(channel, id) {
            Some(cut) => (cut, true),
            None if h.before_all(channel, id) => (0, false),
            None => {
                drop(history);
                for name in names_read(&channels, sel.as_deref(), b"") {
                    if name != channel {
                        tell_recovered(c, &name, false);
                    }
                }
                return;
            }
        };
        let mut others: Vec<&Bytes> = h
            .channels()
            .filter(|ch| ch[..] != *channel && resume::reads(&channels, sel.as_deref(), ch))
            .collect();
        others.sort();
        let mut tally = Tally::default();
        for other in others {
            let mut replay = h.replay_after(other, cut, id, c.form().uncompressed());
            replay.recovered &= known;
            if !replay.frames.is_empty() || !replay.recovered {
                self.replay_to(c, other, replay, &mut tally);
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
            .filter(|c| (c.v1() || c.sse()) && c.state() == State::Open)
        {
            let names = names_read(&channels, c.selection().as_deref(), channel);
            if names.is_empty() {
                continue;
            }
            for name in names {
                tell_recovered(c, &name, false);
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
