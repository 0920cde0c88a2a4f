#![allow(dead_code)]
pub mod certs;
pub mod jwt;
pub mod redis;
pub mod relay;
pub mod sse;
