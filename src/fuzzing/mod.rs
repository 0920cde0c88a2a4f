//! Fuzz properties of the parsers that read untrusted bytes.
//!
//! Each function takes arbitrary bytes and panics when an invariant of the
//! parser under test is broken. The libFuzzer targets in `fuzz/` call them,
//! and so does `tests/fuzz_corpus.rs`, which replays the committed corpus in
//! an ordinary `cargo test`: both run exactly the same checks.
//!
//! | function | parser |
//! | --- | --- |
//! | [`resp`] | [`crate::redis::resp::PushReader`] (cross-checked with `redis-protocol`) |
//! | [`resp_request`] | the embedded broker's [`crate::redis::resp::request::next_request`] |
//! | [`http_head`] | [`crate::net::http::parse_head`], then the checks of `POST /publish` and the routes of `/metrics` |
//! | [`rs_url`] | `-rs-url` ([`crate::ops::config::RedisSettings::apply_url`]) |
//! | [`handshake`] | [`crate::ws::handshake::parse`] |
//! | [`client_frames`] | [`crate::ws::decode::Decoder`] |
//! | [`control`] | [`crate::ws::control::parse`], the `pubsocketd.v1` control messages |
//! | [`origin`] | [`crate::ws::origin::Origin`] and `OriginPolicy::check` |
//! | [`client_ip`] | [`crate::net::client_ip::Claimed`]: `X-Real-IP` and `X-Forwarded-For` |
//! | [`token`] | [`crate::auth::token::Presented::find`] and the channels check of [`crate::auth::verify::Grant`] |
//! | [`since`] | message IDs ([`crate::history::id::Id::parse`]) and `?since=` ([`crate::history::since::from_query`]) |
//! | [`flags`] | [`crate::ops::flags::normalize`] with the relay's flags |

mod client_frames;
mod client_ip;
mod control;
mod flags;
mod handshake;
mod http_head;
mod origin;
mod resp;
mod resp_request;
mod rs_url;
mod since;
mod split;
mod token;

pub use client_frames::{client_frames, WS_MAX_MESSAGE};
pub use client_ip::client_ip;
pub use control::control;
pub use flags::flags;
pub use handshake::handshake;
pub use http_head::http_head;
pub use origin::origin;
pub use resp::{resp, RESP_MAX_PAYLOAD};
pub use resp_request::resp_request;
pub use rs_url::rs_url;
pub use since::since;
pub use token::token;
