//! The hub: how a message gets from its source to every worker.
//!
//! Each worker has one bounded channel; the hub holds their sending ends
//! and hands every message to each of them as clones of the same `Bytes`
//! handles (reference counts, never copies). The bound is the relay's back
//! pressure: a worker that falls behind makes the sources wait, and a
//! waiting subscriber stops reading Redis, which then buffers on its side.

use crate::channels::KeySet;
use crate::history::id::Stamp;
use bytes::Bytes;
use tokio::sync::mpsc;

/// Messages a worker may have waiting before the sources wait for it.
pub const WORKER_BACKLOG: usize = 1024;

/// One message on its way to the clients, encoded once for all of them.
#[derive(Debug, Clone)]
pub struct Message {
    /// The complete WebSocket frame, the same bytes for every client.
    pub frame: Bytes,
    /// The same message compressed (permessage-deflate), for the clients
    /// that negotiated it; `None` when not worth it (small, or nobody).
    pub deflated: Option<Bytes>,
    /// `frame` is already an envelope (`-ws-envelope`): `pubsocketd.v1`
    /// clients take it as it is.
    pub enveloped: bool,
    /// The envelope (`{"channel":…,"data":…}`) for `pubsocketd.v1` clients,
    /// built only while one is connected; `None` otherwise.
    pub envelope: Option<Bytes>,
    /// The envelope compressed, while such a client negotiated deflate.
    pub envelope_deflated: Option<Bytes>,
    /// The Server-Sent Event, unnamed and named (see [`Form::Event`]),
    /// each built only while an event-stream client takes it; `None` for
    /// a payload that is not UTF-8 (unless enveloped): such clients skip it.
    pub event: Option<Bytes>,
    pub named_event: Option<Bytes>,
    /// The configured keys the channel matches.
    pub keys: KeySet,
    /// The channel, for clients that chose one under a pattern.
    pub channel: Bytes,
    /// Whether clients that chose nothing receive it (not so, under
    /// `-rs-on-demand`, for a channel read under a pattern).
    pub everyone: bool,
    /// Its ID (and its predecessor's) when history is on; the heartbeat
    /// and messages relayed without history have none.
    pub stamp: Option<Stamp>,
    /// Not a message: continuity was lost here (a Redis reconnect under
    /// `-history`, a stream Redis no longer holds the last entry of).
    /// `pubsocketd.v1` clients of `channel` (of every channel they read,
    /// when empty) are told `recovered:false` at this point of the stream.
    pub gap: bool,
}

impl Message {
    /// A message of `channel` in its plain form only (no envelope, no
    /// event, no ID), for everyone reading `keys`: the heartbeat's shape,
    /// and the base of the others that are not encoded.
    pub fn plain(frame: Bytes, keys: KeySet, channel: Bytes) -> Message {
        Message {
            frame,
            deflated: None,
            enveloped: false,
            envelope: None,
            envelope_deflated: None,
            event: None,
            named_event: None,
            keys,
            channel,
            everyone: true,
            stamp: None,
            gap: false,
        }
    }

    /// The marker of a gap in `channel` (every channel: empty).
    pub fn gap(channel: Bytes) -> Message {
        Message {
            everyone: false,
            gap: true,
            ..Message::plain(Bytes::new(), KeySet::Nothing, channel)
        }
    }
}

/// The bytes a client takes of each message, fixed when it connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// The original's frame (the payload, or the `-ws-envelope` envelope).
    Plain,
    /// The same, permessage-deflate compressed.
    Deflated,
    /// The `pubsocketd.v1` envelope.
    Envelope,
    EnvelopeDeflated,
    /// A Server-Sent Event without `event:` (the default `message`), for a
    /// client of one named channel; its `id:` is the bare ID.
    Event,
    /// A Server-Sent Event named after its channel, with `<channel>:<id>`.
    NamedEvent,
}

impl Form {
    /// How many forms there are (the fan-out builds each batch in each).
    pub const COUNT: usize = 6;

    /// The form of a WebSocket client.
    pub fn ws(deflate: bool, v1: bool) -> Form {
        match (v1, deflate) {
            (false, false) => Form::Plain,
            (false, true) => Form::Deflated,
            (true, false) => Form::Envelope,
            (true, true) => Form::EnvelopeDeflated,
        }
    }

    /// All forms, in [`Form::index`] order.
    pub const ALL: [Form; Form::COUNT] = [
        Form::Plain,
        Form::Deflated,
        Form::Envelope,
        Form::EnvelopeDeflated,
        Form::Event,
        Form::NamedEvent,
    ];

    pub fn index(self) -> usize {
        self as usize
    }

    /// The same form without compression (what a replay sends).
    pub fn uncompressed(self) -> Form {
        match self {
            Form::Deflated => Form::Plain,
            Form::EnvelopeDeflated => Form::Envelope,
            f => f,
        }
    }

    /// Whether it is compressed (permessage-deflate was agreed).
    pub fn deflate(self) -> bool {
        matches!(self, Form::Deflated | Form::EnvelopeDeflated)
    }

    /// Whether it is an event stream's form.
    pub fn is_event(self) -> bool {
        matches!(self, Form::Event | Form::NamedEvent)
    }
}

impl Message {
    /// The bytes a client of form `f` gets. `None` when the message lacks
    /// that form: an envelope or event encoded before any client wanted
    /// one, the original's heartbeat for `pubsocketd.v1` and event-stream
    /// clients, a binary payload for event streams. That client skips it.
    pub fn form(&self, f: Form) -> Option<&Bytes> {
        let (envelope, envelope_deflated) = match self.enveloped {
            true => (Some(&self.frame), self.deflated.as_ref()),
            false => (self.envelope.as_ref(), self.envelope_deflated.as_ref()),
        };
        match f {
            Form::Plain => Some(&self.frame),
            Form::Deflated => self.deflated.as_ref().or(Some(&self.frame)),
            Form::Envelope => envelope,
            Form::EnvelopeDeflated => envelope_deflated.or(envelope),
            Form::Event => self.event.as_ref(),
            Form::NamedEvent => self.named_event.as_ref(),
        }
    }
}

/// The sending side of every worker's message channel.
#[derive(Clone)]
pub struct Hub {
    workers: Vec<mpsc::Sender<Message>>,
}

impl Hub {
    /// A hub with `n` workers; returns the receivers to give them.
    pub fn new(n: usize) -> (Hub, Vec<mpsc::Receiver<Message>>) {
        let (workers, receivers) = (0..n).map(|_| mpsc::channel(WORKER_BACKLOG)).unzip();
        (Hub { workers }, receivers)
    }

    /// Hands `msg` to every worker, in order with earlier messages.
    pub async fn publish(&self, msg: Message) {
        for w in &self.workers {
            // A worker only stops at shutdown; nothing to do then.
            let _ = w.send(msg.clone()).await;
        }
    }
}
