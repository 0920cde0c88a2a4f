//! The original's application-level heartbeat (`-ws-heartbeat`), one more
//! source: a fixed message to every client at a fixed interval.

use super::handle::Ingest;
use crate::channels::KeySet;
use crate::fanout::hub::Message;
use crate::ws::frame;
use std::time::Duration;

/// The original's heartbeat: the JSON encoding of the string
/// `{"heartbeat": 1}`, i.e. a quoted, escaped string, as a text frame.
pub const HEARTBEAT: &str = r#""{\"heartbeat\": 1}""#;

/// Sends the heartbeat to every client every `every`, forever.
pub async fn run(ingest: Ingest, every: Duration) {
    let beat = Message::plain(
        frame::encode(frame::OP_TEXT, HEARTBEAT.as_bytes()),
        KeySet::Broadcast,
        bytes::Bytes::new(),
    );
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tick.tick().await;
        ingest.send(beat.clone()).await;
    }
}
