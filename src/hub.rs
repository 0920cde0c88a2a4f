//! From the subscriber to the workers: each encoded frame is handed to
//! every worker once, as a clone of the same `Bytes` (a reference count,
//! never a copy of the payload).

use bytes::Bytes;
use tokio::sync::mpsc;

/// Frames a worker may have waiting before the subscriber waits for it.
/// Waiting there stops reads from Redis, which then buffers on its side.
pub const WORKER_BACKLOG: usize = 1024;

/// The sending side of every worker's frame channel.
#[derive(Clone)]
pub struct Hub {
    workers: Vec<mpsc::Sender<Bytes>>,
}

impl Hub {
    /// A hub with `n` workers; returns the receivers to give them.
    pub fn new(n: usize) -> (Hub, Vec<mpsc::Receiver<Bytes>>) {
        let (workers, receivers) = (0..n).map(|_| mpsc::channel(WORKER_BACKLOG)).unzip();
        (Hub { workers }, receivers)
    }

    /// Hands `frame` to every worker, in order with earlier frames.
    pub async fn publish(&self, frame: Bytes) {
        for w in &self.workers {
            // A worker only stops at shutdown; nothing to do then.
            let _ = w.send(frame.clone()).await;
        }
    }
}
