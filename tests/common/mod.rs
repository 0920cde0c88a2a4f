#![allow(dead_code)]
pub mod certs;
pub mod redis;
pub mod relay;
