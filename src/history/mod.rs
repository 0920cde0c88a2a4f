//! Message IDs and what a client asks to resume from: the parts of the
//! history that every other module reads (the ingest gives IDs out, the
//! workers keep and replay, the handshake and the control messages parse
//! `since`). Depends only on the query decoding of [`crate::channels`].

pub mod id;
pub mod since;

use std::time::Duration;

/// The bounds of a history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Messages kept per channel (at least 1).
    pub per_channel: usize,
    /// Bytes of frames kept, all channels together.
    pub bytes: usize,
    /// Age past which a message goes.
    pub ttl: Option<Duration>,
}
