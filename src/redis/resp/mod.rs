//! Every RESP read and write of the relay, in one place: the subscriber's
//! push reader (the hot path), the reader of ordinary replies, the writer
//! of commands and replies, and the embedded broker's request parser.

pub mod push;
pub mod reply;
pub mod request;
pub mod write;

pub use push::{Item, PushReader, RespError, MAX_REPLY};
