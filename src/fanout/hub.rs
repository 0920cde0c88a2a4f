//! The hub: how a message gets from its source to every worker.
//!
//! Each worker has one bounded channel; the hub holds their sending ends
//! and hands every message to each of them as clones of the same `Bytes`
//! handles (reference counts, never copies). The bound is the relay's back
//! pressure: a worker that falls behind makes the sources wait, and a
//! waiting subscriber stops reading Redis, which then buffers on its side.

use crate::channels::KeySet;
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
    /// The configured keys the channel matches.
    pub keys: KeySet,
    /// The channel, for clients that chose one under a pattern.
    pub channel: Bytes,
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
