//! The Redis side: one subscriber connection per process.

pub mod resp;
pub mod subscriber;
