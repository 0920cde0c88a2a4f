//! The WebSocket protocol, as far as a broadcasting server needs it.

pub mod control;
pub mod decode;
pub(crate) mod deflate;
pub mod frame;
pub mod handshake;
pub mod origin;
