//! The relay's own message IDs, under Redis Pub/Sub and the embedded
//! broker (Redis streams bring their own): `<epoch>-<seq>`, the sequence
//! counting each channel's messages from 1 within an epoch.
//!
//! The epoch is a time in milliseconds, taken again whenever continuity is
//! lost (a start, a Redis reconnect): a client holding an ID of an earlier
//! epoch cannot be told that it missed nothing, and hears so. The counters
//! of one epoch are bounded: past [`MAX_CHANNELS`] channels a new epoch
//! starts (continuity is then honestly "unknown" for the old ones).

use crate::history::id::{Id, Stamp};
use bytes::Bytes;
use std::collections::HashMap;

/// Channels counted in one epoch before a new one starts.
pub const MAX_CHANNELS: usize = 1_000_000;

/// The per-channel counters of the current epoch.
pub struct Sequencer {
    epoch: u64,
    last: HashMap<Bytes, u64>,
    /// Epochs begun since the first (each one a gap for connected clients).
    restarts: u64,
}

impl Default for Sequencer {
    fn default() -> Self {
        Sequencer {
            epoch: now_ms(),
            last: HashMap::new(),
            restarts: 0,
        }
    }
}

fn now_ms() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.map_or(0, |d| d.as_millis() as u64)
}

impl Sequencer {
    /// Starts a new epoch: later than the last (even if the clock went
    /// back). Says whether messages may have been lost before it (every
    /// epoch but the one the first Redis session starts).
    pub fn new_epoch(&mut self) -> bool {
        self.epoch = now_ms().max(self.epoch + 1);
        self.last.clear();
        self.restarts += 1;
        self.restarts > 1
    }

    /// The stamp the next message of `channel` gets; taken only by
    /// [`Sequencer::commit`], so that a message that is not relayed leaves
    /// no hole in the sequence.
    pub fn peek(&mut self, channel: &[u8]) -> Stamp {
        if self.last.len() >= MAX_CHANNELS && !self.last.contains_key(channel) {
            // Nothing was lost: only the old IDs can no longer be followed.
            self.new_epoch();
        }
        let seq = self.last.get(channel).copied().unwrap_or(0);
        Stamp {
            id: Id::new(self.epoch, seq + 1),
            prev: (seq > 0).then(|| Id::new(self.epoch, seq)),
        }
    }

    /// Takes the stamp [`Sequencer::peek`] gave.
    pub fn commit(&mut self, channel: &[u8], stamp: Stamp) {
        match self.last.get_mut(channel) {
            Some(seq) => *seq = stamp.id.low,
            None => {
                self.last
                    .insert(Bytes::copy_from_slice(channel), stamp.id.low);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_channel_sequences_and_epochs() {
        let mut s = Sequencer::default();
        let a1 = s.peek(b"a");
        assert_eq!(a1.prev, None);
        assert_eq!(s.peek(b"a"), a1, "peeking takes nothing");
        s.commit(b"a", a1);
        let a2 = s.peek(b"a");
        s.commit(b"a", a2);
        let b1 = s.peek(b"b");
        assert_eq!((a2.id.low, a2.prev, b1.id.low), (2, Some(a1.id), 1));
        s.new_epoch();
        let a = s.peek(b"a");
        assert!(a.id.high > a1.id.high);
        assert_eq!((a.id.low, a.prev), (1, None));
    }
}
