//! Where messages come in: every source (the Redis subscriber, the
//! embedded broker, `POST /publish`, the heartbeat) hands its payloads to
//! one [`handle::Ingest`], which encodes each message once and gives it to
//! the hub.

pub(crate) mod broker;
pub mod encode;
pub(crate) mod handle;
pub(crate) mod heartbeat;
pub(crate) mod http_publish;
pub mod sequence;
