//! The Redis side: one subscriber connection per process (one per node
//! in a cluster), the connection that `POST /publish` publishes through,
//! and every RESP read and write.

pub(crate) mod backoff;
pub(crate) mod cluster;
pub(crate) mod connect;
pub(crate) mod on_demand;
pub(crate) mod publisher;
pub mod resp;
pub(crate) mod sentinel;
pub(crate) mod stream;
pub(crate) mod stream_entries;
pub(crate) mod subscriber;
pub(crate) mod supervise;
