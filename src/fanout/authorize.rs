//! `-auth=jwt` at the upgrade and on an open socket: the token a request
//! presents, and a `pubsocketd.v1` client's refresh. The token is never
//! logged; the reasons given are fixed texts.

use super::context::Context;
use crate::auth::verify::{Grant, Verifier};
use crate::ws::handshake::Accepted;
use std::time::{SystemTime, UNIX_EPOCH};

/// The grant of the token the request presents (the first of the places
/// `auth::token` reads), or why there is none (answered 401).
pub(crate) fn authenticate(acc: &Accepted, v: &Verifier, ctx: &Context) -> Result<Grant, String> {
    let cookie = ctx.cfg.auth.as_ref().and_then(|a| a.cookie.as_deref());
    let Some((token, _)) = acc.presented.find(&acc.query, cookie) else {
        return Err("no token".into());
    };
    v.verify(&token)
        .map_err(|why| format!("invalid token: {why}"))
}

/// Unix seconds now.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
