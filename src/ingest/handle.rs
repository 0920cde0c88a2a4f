//! The one way in for a message: encode it once, count it, hand it to
//! every worker. Each source owns a clone (the encoder's name cache and
//! scratch buffers are per clone; everything else is shared).

use super::encode::{Encoder, Rejected};
use crate::channels::Channels;
use crate::fanout::hub::{Hub, Message};
use crate::ops::stats::Stats;
use std::sync::Arc;

/// Encoder, hub and counters: what every source needs to publish.
#[derive(Clone)]
pub struct Ingest {
    encoder: Encoder,
    hub: Hub,
    stats: Arc<Stats>,
}

impl Ingest {
    pub fn new(encoder: Encoder, hub: Hub, stats: Arc<Stats>) -> Ingest {
        Ingest {
            encoder,
            hub,
            stats,
        }
    }

    /// The channels and patterns relayed now.
    pub fn channels(&mut self) -> &Channels {
        self.encoder.channels()
    }

    /// Relays `payload`, published on `channel`, to every client that
    /// reads that channel.
    pub async fn publish(&mut self, channel: &[u8], payload: &[u8]) -> Result<(), Rejected> {
        let msg = self.encoder.encode(channel, payload)?;
        self.hub.publish(msg).await;
        Ok(())
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
        let msg = self.encoder.encode(channel, payload)?;
        let receivers = self.stats.clients_for(&msg.keys);
        self.hub.publish(msg).await;
        Ok(receivers)
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
