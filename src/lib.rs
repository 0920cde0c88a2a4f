//! pubsocketd: relay Redis Pub/Sub messages to WebSocket clients.
//!
//! The path of a message, and the module of each step:
//!
//! ```text
//! Redis ─RESP─▶ redis::subscriber ─┐
//!   embedded    ingest::broker ────┼─▶ ingest::handle ─▶ fanout::hub ─▶ fanout::thread (one per core)
//!   POST        ingest::http_publish┘    (encode once:     (a clone of      └▶ fanout::worker ─▶ fanout::conn
//!   heartbeat   ingest::heartbeat ─┘      ingest::encode)   the handles        (one write list,   (queue of what the
//!                                                           per worker)        fanout::uring)     socket did not take)
//! ```
//!
//! - [`redis`]: the subscriber (and the cluster supervisor), the connection
//!   `POST /publish` uses, and every RESP read and write ([`redis::resp`]).
//! - [`ingest`]: every source hands payloads to one `Ingest`, which encodes
//!   each message once (plain and deflated) and gives it to the hub.
//! - [`fanout`]: the hub, the worker threads, accepting and upgrading
//!   clients, each client's queue, the io_uring send batch.
//! - [`ws`]: the WebSocket protocol: handshake, origins, frames in and out,
//!   permessage-deflate. [`sse`]: Server-Sent Events on the same listener
//!   (the handshake tells them apart): the event of a message, the opening.
//! - [`net`]: listeners, the shared accept loop, the side endpoints' HTTP,
//!   TLS. [`ops`]: flags, configuration, secrets, logs, counters, metrics.
//! - [`channels`]: the configured channels and patterns and what each
//!   client reads. [`server`]: start-up, signals, shutdown.

#![deny(clippy::undocumented_unsafe_blocks)]

pub mod auth;
pub mod channels;
pub mod demand;
pub mod fanout;
/// Fuzz properties, shared by the `fuzz/` targets and `tests/fuzz_corpus.rs`.
pub mod fuzzing;
pub mod history;
pub mod ingest;
pub mod net;
pub mod ops;
pub mod redis;
pub mod server;
pub mod sse;
pub mod ws;
