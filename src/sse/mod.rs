//! Server-Sent Events: the one-way push of `EventSource` and `curl -N`,
//! served on the WebSocket listener to the same channels.
//!
//! - [`event`]: a message as one event (`id:`, `event:`, `data:` lines),
//!   built once per message and shared like a WebSocket frame.
//! - [`head`]: the `200` that opens a stream, with its CORS headers, and
//!   the comment lines that keep it open or say why it ends.

pub mod event;
pub mod head;
