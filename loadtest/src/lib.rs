//! `pubsocketd-loadtest` and `floor`. The binaries only parse the command
//! line and dispatch; everything else lives here, so that the parsers,
//! the `/proc` readings and the figures can be tested on their own.
//!
//! The load generator, in the order a run uses it: `args` (flags, modes,
//! checks) → `run` (limits, runtime, outputs) → `coordinate` (connect,
//! idle hold or publishing steps, settle, collect). The coordinator drives
//! `client` (the client threads and sockets; `conn` what a client does
//! with the bytes it reads, `wsframe` the WebSocket protocol, `sse` the
//! event-stream one), `publisher` (PUBLISH at a rate; `payload` the
//! stamped messages), `shared` (what the client threads count),
//! `monitor` (the live line) and `cpu` (over `procfs`). Its figures go
//! to `report` (and the JSON line), `table` and `svg`.
//! `summary` compares the JSON lines of several runs. `chaos` is the
//! fault-injection run of the `chaos` binary (and of tests/chaos.rs).

pub mod args;
pub mod chaos;
pub mod client;
pub mod conn;
mod coordinate;
mod cpu;
mod monitor;
pub mod payload;
pub mod procfs;
pub mod publisher;
mod report;
pub mod run;
pub mod shared;
pub mod sse;
pub mod summary;
pub mod svg;
mod table;
pub mod wsframe;
