//! pubsocketd: relay Redis Pub/Sub messages to WebSocket clients.
//!
//! One Redis subscription per process ([`redis::subscriber`]); each payload
//! is encoded once into a WebSocket frame ([`ws::frame`]) and handed through
//! the [`hub`] to every [`worker`], which writes it to each of its clients
//! ([`conn`]). The binaries are thin wrappers around [`server::run`].

pub mod broker;
pub mod channels;
pub mod config;
pub mod conn;
pub mod flags;
/// Fuzz properties, shared by the `fuzz/` targets and `tests/fuzz_corpus.rs`.
pub mod fuzzing;
pub mod hub;
pub mod log;
pub mod metrics;
pub mod net;
pub mod publish;
pub mod redis;
pub mod server;
pub mod stats;
pub mod tls;
pub mod uring;
pub mod worker;
pub mod ws;
