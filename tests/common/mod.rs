#![allow(dead_code)]
pub mod certs;
pub mod jwt;
pub mod nginx;
pub mod redis;
pub mod relay;
pub mod sse;
pub mod sse_wire;
