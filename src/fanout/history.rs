//! A worker's history: the last messages of each channel, kept as the
//! frames already built for them, so that a replay costs writes, not
//! encodes.
//!
//! Every worker receives every message, so each keeps its own history (the
//! frames themselves are shared `Bytes`): a replay then runs on the
//! client's own worker between two batches, and no message can slip
//! between the replay and the live stream, nor arrive twice.
//!
//! Bounds: `-history` messages per channel, `-history-bytes` for all (the
//! oldest go first, whatever their channel), `-history-ttl` of age. A
//! channel whose messages are all gone is forgotten.

use super::hub::{Form, Message};
use crate::history::id::Id;
use crate::history::since::Point;
use crate::history::Limits;
use crate::sse::event as sse;
use crate::ws::frame;
use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::time::Instant;

/// One kept message.
struct Kept {
    /// Its place in the worker's order of arrival.
    serial: u64,
    id: Id,
    prev: Option<Id>,
    at: Instant,
    /// What a client of the original's protocol receives.
    frame: Bytes,
    /// What a `pubsocketd.v1` client receives (`None`: `frame` is already
    /// the envelope, under `-ws-envelope`).
    envelope: Option<Bytes>,
    /// The events (unnamed, named), when event-stream clients were
    /// connected as it came (boxed: no room taken otherwise).
    events: Option<Box<[Option<Bytes>; 2]>>,
}

impl Kept {
    fn size(&self) -> usize {
        let events = self.events.iter().flat_map(|e| e.iter().flatten());
        self.frame.len()
            + self.envelope.as_ref().map_or(0, Bytes::len)
            + events.map(Bytes::len).sum::<usize>()
    }

    /// What a client of form `form` gets (replays are not compressed). An
    /// event that was not built as the message came is built now from the
    /// frame's payload; `None` for a binary payload, which is no event.
    fn form(&self, form: Form, channel: &[u8]) -> Option<Bytes> {
        let named = match form {
            Form::Event => false,
            Form::NamedEvent => true,
            Form::Envelope | Form::EnvelopeDeflated => {
                return Some(self.envelope.as_ref().unwrap_or(&self.frame).clone())
            }
            Form::Plain | Form::Deflated => return Some(self.frame.clone()),
        };
        if let Some(built) = self
            .events
            .as_ref()
            .and_then(|e| e[usize::from(named)].as_ref())
        {
            return Some(built.clone());
        }
        match frame::opened(&self.frame)? {
            (frame::OP_TEXT, data) => Some(sse::message(channel, Some(self.id), named, data)),
            _ => None,
        }
    }
}

/// What a replay found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Replay {
    /// The frames after the point asked for, oldest first.
    pub frames: Vec<Bytes>,
    /// Whether they are every message after that point: `false` when some
    /// may have gone (trimmed, expired, another epoch, an unknown ID).
    pub recovered: bool,
}

/// The history of one worker.
pub struct History {
    limits: Limits,
    channels: HashMap<Bytes, VecDeque<Kept>>,
    /// (channel, serial) in order of arrival, for the oldest-first bounds;
    /// entries already dropped by the per-channel bound are skipped (and
    /// swept out when they outnumber the live ones).
    order: VecDeque<(Bytes, u64)>,
    serial: u64,
    kept: usize,
    bytes: usize,
}

impl History {
    pub fn new(limits: Limits) -> History {
        History {
            limits,
            channels: HashMap::new(),
            order: VecDeque::new(),
            serial: 0,
            kept: 0,
            bytes: 0,
        }
    }

    /// Messages and bytes kept now.
    pub fn size(&self) -> (usize, usize) {
        (self.kept, self.bytes)
    }

    /// Keeps `m` (if it has an ID), received at `now`.
    pub fn keep(&mut self, m: &Message, now: Instant) {
        let Some(stamp) = m.stamp else {
            return;
        };
        self.serial += 1;
        let kept = Kept {
            serial: self.serial,
            id: stamp.id,
            prev: stamp.prev,
            at: now,
            frame: m.frame.clone(),
            envelope: (!m.enveloped).then(|| m.envelope.clone()).flatten(),
            events: match (&m.event, &m.named_event) {
                (None, None) => None,
                (e, n) => Some(Box::new([e.clone(), n.clone()])),
            },
        };
        self.bytes += kept.size();
        self.kept += 1;
        let ring = match self.channels.get_mut(&m.channel[..]) {
            Some(ring) => ring,
            None => self.channels.entry(m.channel.clone()).or_default(),
        };
        ring.push_back(kept);
        if ring.len() > self.limits.per_channel {
            let gone = ring.pop_front().expect("over the bound");
            self.kept -= 1;
            self.bytes -= gone.size();
        }
        self.order.push_back((m.channel.clone(), self.serial));
        self.trim(now);
    }

    /// Drops the oldest messages while over the byte bound or past the
    /// age bound (also run on the worker's tick, for the age).
    pub fn trim(&mut self, now: Instant) {
        while let Some((channel, serial)) = self.order.front() {
            let Some(ring) = self.channels.get_mut(&channel[..]) else {
                self.order.pop_front();
                continue;
            };
            let head = ring.front().expect("empty rings are removed");
            if head.serial != *serial {
                self.order.pop_front(); // dropped by the per-channel bound
                continue;
            }
            let expired = self
                .limits
                .ttl
                .is_some_and(|t| now.duration_since(head.at) > t);
            if self.bytes <= self.limits.bytes && !expired {
                break;
            }
            let gone = ring.pop_front().expect("a head");
            self.kept -= 1;
            self.bytes -= gone.size();
            if ring.is_empty() {
                let channel = channel.clone();
                self.channels.remove(&channel[..]);
            }
            self.order.pop_front();
        }
        if self.order.len() > 2 * self.kept + 1024 {
            self.sweep();
        }
    }

    /// Forgets order entries of messages already dropped.
    fn sweep(&mut self) {
        let channels = &self.channels;
        self.order.retain(|(channel, serial)| {
            channels
                .get(&channel[..])
                .and_then(VecDeque::front)
                .is_some_and(|head| head.serial <= *serial)
        });
    }

    /// The ID of the newest message of `channel` kept.
    pub fn newest(&self, channel: &[u8]) -> Option<Id> {
        self.channels.get(channel)?.back().map(|k| k.id)
    }

    /// Whether some message of `channel` is kept.
    pub fn holds(&self, channel: &[u8]) -> bool {
        self.channels.contains_key(channel)
    }

    /// The messages of `channel` after `point`, in the form a client takes.
    pub fn replay(&self, channel: &[u8], point: Point, form: Form) -> Replay {
        let Some((ring, start, recovered)) = self.after(channel, point) else {
            return Replay::default();
        };
        let frames = frames(ring, start, form, channel);
        Replay { frames, recovered }
    }

    /// Where the message `id` of `channel` came in this worker's order of
    /// arrival, if it is kept.
    pub fn serial_of(&self, channel: &[u8], id: Id) -> Option<u64> {
        let ring = self.channels.get(channel)?;
        let at = ring.binary_search_by(|k| k.id.cmp(&id)).ok()?;
        Some(ring[at].serial)
    }

    /// Whether `id` is older than every message of `channel` kept: what
    /// came after it may be kept, but what came between is gone.
    pub fn before_all(&self, channel: &[u8], id: Id) -> bool {
        let front = self.channels.get(channel).and_then(VecDeque::front);
        front.is_some_and(|k| id < k.id)
    }

    /// The channels kept, each with a message.
    pub fn channels(&self) -> impl Iterator<Item = &Bytes> {
        self.channels.keys()
    }

    /// The messages of `channel` that came after the message of serial
    /// `cut` (of any channel, the `id` one): what a client missed of it if
    /// it had everything up to `cut`. Whole when the first of them follows
    /// one kept at or before the cut, or is the first of its channel in
    /// `id`'s epoch (nothing of it came before), and each follows the last.
    pub fn replay_after(&self, channel: &[u8], cut: u64, id: Id, form: Form) -> Replay {
        let Some(ring) = self.channels.get(channel) else {
            return Replay {
                frames: Vec::new(),
                recovered: true,
            };
        };
        let start = ring.partition_point(|k| k.serial <= cut);
        let last = start.checked_sub(1).map(|n| ring[n].id);
        let first_whole = match (ring.get(start), last) {
            (Some(first), None) => first.prev.is_none() && first.id.high == id.high,
            _ => true,
        };
        Replay {
            frames: frames(ring, start, form, channel),
            recovered: first_whole && chained(ring, start, last),
        }
    }

    /// Whether a replay of `channel` after `point` would be whole (without
    /// building it).
    pub fn vouches(&self, channel: &[u8], point: Point) -> bool {
        self.after(channel, point)
            .is_some_and(|(_, _, whole)| whole)
    }

    /// Where the messages after `point` start in `channel`'s ring, and
    /// whether they follow it with nothing missing: each one's `prev` is
    /// the one before (the first's, the point itself).
    fn after(&self, channel: &[u8], point: Point) -> Option<(&VecDeque<Kept>, usize, bool)> {
        let ring = self.channels.get(channel)?;
        let (start, last) = match point {
            Point::Last => (ring.len() - 1, None),
            Point::After(id) => (ring.partition_point(|k| k.id <= id), Some(id)),
        };
        if start == ring.len() {
            // Nothing after it: it is the latest, or unknown here.
            return Some((ring, start, last == ring.back().map(|k| k.id)));
        }
        Some((ring, start, chained(ring, start, last)))
    }
}

/// The kept messages of a channel's `ring` from `start`, in `form`.
fn frames(ring: &VecDeque<Kept>, start: usize, form: Form, channel: &[u8]) -> Vec<Bytes> {
    ring.range(start..)
        .filter_map(|k| k.form(form, channel))
        .collect()
}

/// Whether each message of `ring` from `start` follows the one before it
/// (the first follows `last`; `None`: whatever came before).
fn chained(ring: &VecDeque<Kept>, start: usize, mut last: Option<Id>) -> bool {
    ring.range(start..).all(|k| {
        let follows = last.is_none() || k.prev == last;
        last = Some(k.id);
        follows
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::KeySet;
    use crate::history::id::Stamp;
    use std::time::Duration;

    fn msg(channel: &str, high: u64, low: u64, prev: Option<u64>, body: &str) -> Message {
        Message {
            envelope: Some(Bytes::from(format!("v1:{body}"))),
            stamp: Some(Stamp {
                id: Id::new(high, low),
                prev: prev.map(|p| Id::new(high, p)),
            }),
            ..Message::plain(
                Bytes::copy_from_slice(body.as_bytes()),
                KeySet::One(0),
                Bytes::copy_from_slice(channel.as_bytes()),
            )
        }
    }

    fn limits(per_channel: usize, bytes: usize) -> Limits {
        Limits {
            per_channel,
            bytes,
            ttl: None,
        }
    }

    fn texts(r: &Replay) -> Vec<&str> {
        r.frames
            .iter()
            .map(|f| std::str::from_utf8(f).unwrap())
            .collect()
    }

    fn filled(h: &mut History, channel: &str, n: u64) {
        let now = Instant::now();
        for i in 1..=n {
            h.keep(
                &msg(
                    channel,
                    7,
                    i,
                    (i > 1).then(|| i - 1),
                    &format!("{channel}{i}"),
                ),
                now,
            );
        }
    }

    #[test]
    fn replays_after_an_id_and_says_whether_whole() {
        let mut h = History::new(limits(3, 1 << 20));
        filled(&mut h, "a", 5);
        let after = |low| Point::After(Id::new(7, low));
        let r = h.replay(b"a", after(3), Form::Plain);
        assert_eq!((texts(&r), r.recovered), (vec!["a4", "a5"], true));
        let r = h.replay(b"a", after(2), Form::Envelope);
        assert_eq!(
            (texts(&r), r.recovered),
            (vec!["v1:a3", "v1:a4", "v1:a5"], true)
        );
        let r = h.replay(b"a", after(1), Form::Plain);
        assert_eq!(
            (texts(&r), r.recovered),
            (vec!["a3", "a4", "a5"], false),
            "a2 was trimmed"
        );
        let r = h.replay(b"a", after(5), Form::Plain);
        assert_eq!((r.frames.len(), r.recovered), (0, true), "nothing missed");
        let r = h.replay(b"a", after(9), Form::Plain);
        assert_eq!((r.frames.len(), r.recovered), (0, false), "unknown ID");
        let r = h.replay(b"a", Point::After(Id::new(6, 9)), Form::Plain);
        assert!(!r.recovered, "another epoch");
        let r = h.replay(b"a", Point::Last, Form::Plain);
        assert_eq!((texts(&r), r.recovered), (vec!["a5"], true));
        assert_eq!(h.replay(b"zz", Point::Last, Form::Plain), Replay::default());
        // A new epoch: its first message has no predecessor.
        h.keep(&msg("a", 8, 1, None, "a8.1"), Instant::now());
        let r = h.replay(b"a", after(4), Form::Plain);
        assert_eq!((texts(&r), r.recovered), (vec!["a5", "a8.1"], false));
    }

    #[test]
    fn bytes_bound_drops_the_oldest_of_any_channel() {
        // Each message is 2 + 5 bytes (frame and envelope).
        let mut h = History::new(limits(100, 7 * 4));
        filled(&mut h, "a", 2);
        filled(&mut h, "b", 3);
        assert_eq!(h.size(), (4, 28));
        assert_eq!(
            texts(&h.replay(b"a", Point::After(Id::new(7, 0)), Form::Plain)),
            vec!["a2"]
        );
        filled(&mut h, "c", 1);
        assert!(
            !h.channels.contains_key(&b"a"[..]),
            "an emptied channel is forgotten"
        );
        assert_eq!(h.size(), (4, 28));
    }

    #[test]
    fn age_bound_and_order_sweep() {
        let mut h = History::new(Limits {
            per_channel: 1,
            bytes: 1 << 30,
            ttl: Some(Duration::from_secs(10)),
        });
        let t0 = Instant::now();
        for i in 1..=5000 {
            h.keep(&msg("a", 1, i, Some(i - 1), "x"), t0);
        }
        assert_eq!(h.size(), (1, 5));
        assert!(h.order.len() <= 1026, "stale order entries are swept");
        h.trim(t0 + Duration::from_secs(11));
        assert_eq!(h.size(), (0, 0));
        assert!(h.channels.is_empty());
    }
}
