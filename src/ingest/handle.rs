//! The one way in for a message: encode it once, count it, hand it to
//! every worker. Each source owns a clone (the encoder's name cache and
//! scratch buffers are per clone; everything else is shared).

use super::encode::{Encoder, Rejected};
use super::sequence::Sequencer;
use crate::channels::Channels;
use crate::fanout::hub::{Hub, Message};
use crate::history::id::Stamp;
use crate::ops::stats::Stats;
use bytes::Bytes;
use std::sync::Arc;
use tokio::sync::Mutex;

/// Encoder, hub and counters: what every source needs to publish.
#[derive(Clone)]
pub struct Ingest {
    encoder: Encoder,
    hub: Hub,
    stats: Arc<Stats>,
    /// The relay's own IDs (history on, without streams). Held from the
    /// ID to the hand-over, so that every worker receives the messages of
    /// a channel in the order of their IDs, whichever source sent them.
    sequencer: Option<Arc<Mutex<Sequencer>>>,
}

impl Ingest {
    pub fn new(encoder: Encoder, hub: Hub, stats: Arc<Stats>) -> Ingest {
        Ingest {
            encoder,
            hub,
            stats,
            sequencer: None,
        }
    }

    /// Gives every message an ID of the relay's own (`<epoch>-<seq>`).
    pub fn with_sequencer(mut self) -> Ingest {
        self.sequencer = Some(Arc::default());
        self
    }

    /// Continuity was lost (Redis reconnected): later IDs belong to a new
    /// epoch, so that a client resuming across the gap hears that it may
    /// have missed messages.
    pub async fn new_epoch(&self) {
        if let Some(s) = &self.sequencer {
            let mut s = s.lock().await;
            if s.new_epoch() {
                // Under the lock: no message of the new epoch goes first.
                self.hub.publish(Message::gap(Bytes::new())).await;
            }
        }
    }

    /// Tells the clients of `channel` that entries may be missing here
    /// (a stream whose last relayed entry Redis no longer holds).
    pub async fn gap(&self, channel: &[u8]) {
        self.hub
            .publish(Message::gap(Bytes::copy_from_slice(channel)))
            .await;
    }

    /// The channels and patterns relayed now.
    pub fn channels(&mut self) -> &Channels {
        self.encoder.channels()
    }

    /// Relays `payload`, published on `channel`, to every client that
    /// reads that channel.
    pub async fn publish(&mut self, channel: &[u8], payload: &[u8]) -> Result<(), Rejected> {
        self.relay(channel, payload, false).await.map(drop)
    }

    /// Relays a message that brings its own ID (a Redis stream entry).
    pub async fn publish_stamped(
        &mut self,
        channel: &[u8],
        payload: &[u8],
        stamp: Stamp,
    ) -> Result<(), Rejected> {
        let msg = self.encoder.encode_stamped(channel, payload, Some(stamp))?;
        self.hub.publish(msg).await;
        Ok(())
    }

    /// Encodes (with the next ID, under the sequencer) and hands over;
    /// counts the receivers when asked.
    async fn relay(
        &mut self,
        channel: &[u8],
        payload: &[u8],
        count: bool,
    ) -> Result<u64, Rejected> {
        let mut seq = match &self.sequencer {
            Some(s) => Some(s.lock().await),
            None => None,
        };
        let stamp = seq.as_mut().map(|s| s.peek(channel));
        let msg = self.encoder.encode_stamped(channel, payload, stamp)?;
        if let (Some(seq), Some(stamp)) = (seq.as_mut(), stamp) {
            seq.commit(channel, stamp);
        }
        let receivers = match count {
            true => self.stats.clients_for(&msg.keys),
            false => 0,
        };
        self.hub.publish(msg).await;
        Ok(receivers)
    }

    /// As [`Ingest::publish`], and says how many of this relay's clients
    /// receive the message (what `PUBLISH` and `POST /publish` answer).
    /// Counted before the hand-over, from the per-key gauges, so that the
    /// hot path of the subscriber does not pay for it.
    pub async fn publish_counted(
        &mut self,
        channel: &[u8],
        payload: &[u8],
    ) -> Result<u64, Rejected> {
        self.relay(channel, payload, true).await
    }

    /// Counts a message that was skipped before its payload was read (over
    /// `-rs-max-payload` while streaming in from Redis).
    pub fn count_oversized(&mut self, channel: &[u8]) {
        let keys = self.channels().keys_for(channel);
        self.stats.count_received(&keys);
        self.stats.count_dropped(&keys);
    }

    /// Hands a message built elsewhere (the heartbeat) to every worker.
    pub async fn send(&self, msg: Message) {
        self.hub.publish(msg).await;
    }
}
