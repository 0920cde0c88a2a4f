//! Running the relay as a service: flags and configuration, secrets, logs,
//! counters and the metrics endpoint.

pub mod auth_flags;
pub mod config;
pub mod flags;
pub(crate) mod log;
pub(crate) mod metrics;
pub mod secret;
pub mod stats;
