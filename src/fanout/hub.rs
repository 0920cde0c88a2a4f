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
    /// The marker of a gap in `channel` (every channel: empty).
    pub fn gap(channel: Bytes) -> Message {
        Message {
            frame: Bytes::new(),
            deflated: None,
            enveloped: false,
            envelope: None,
            envelope_deflated: None,
            keys: KeySet::Nothing,
            channel,
            everyone: false,
            stamp: None,
            gap: true,
        }
    }
}

impl Message {
    /// The frame a client gets: enveloped or not, compressed or not.
    /// `None` for a `pubsocketd.v1` client when the message has no envelope
    /// (it was encoded before any such client was admitted, or it is the
    /// original's heartbeat): that client skips it.
    pub fn form(&self, deflate: bool, v1: bool) -> Option<&Bytes> {
        let (plain, zipped) = match v1 && !self.enveloped {
            true => (self.envelope.as_ref()?, self.envelope_deflated.as_ref()),
            false => (&self.frame, self.deflated.as_ref()),
        };
        Some(match (deflate, zipped) {
            (true, Some(z)) => z,
            _ => plain,
        })
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
