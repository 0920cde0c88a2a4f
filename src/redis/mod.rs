//! The Redis side: one subscriber connection per process (one per node
//! in a cluster).

pub mod cluster;
pub mod connect;
pub mod resp;
pub mod subscriber;
