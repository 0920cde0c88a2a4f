//! From the hub to the sockets: one worker per core, each owning its
//! listener, its clients and their queues, writing each batch of messages
//! to every client that wants it.

pub(crate) mod accept;
pub(crate) mod authorize;
pub mod conn;
pub(crate) mod context;
pub(crate) mod control;
pub(crate) mod history;
pub mod hub;
pub(crate) mod index;
pub(crate) mod older;
pub(crate) mod replay;
pub(crate) mod resume;
pub(crate) mod thread;
pub(crate) mod uring;
pub(crate) mod worker;
