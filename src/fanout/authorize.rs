//! `-auth` at the upgrade: the token a request presents (`-auth=jwt`), or
//! the application's answer (`-auth=url`). The token is never logged; the
//! reasons given are fixed texts.

use super::context::Context;
use crate::auth::callback::{redact_query, Ask, Callback};
use crate::auth::verify::{Grant, Verifier};
use crate::ws::handshake::Accepted;
use std::net::SocketAddr;
use tokio::time::{timeout_at, Instant};

/// What the client may read, under `-auth` (`None` without it), or the
/// status and reason of the refusal.
pub(crate) async fn check(
    acc: &Accepted,
    ctx: &Context,
    addr: SocketAddr,
    deadline: Instant,
) -> Result<Option<Grant>, (u16, String)> {
    if let Some(v) = &ctx.auth {
        return authenticate(acc, v, ctx)
            .map(Some)
            .map_err(|why| (401, why));
    }
    let Some(cb) = &ctx.callback else {
        return Ok(None);
    };
    match timeout_at(deadline, ask(acc, cb, ctx, addr)).await {
        Ok(answer) => answer.map(Some).map_err(|d| (d.status, d.reason)),
        Err(_) => Err((
            503,
            "no answer from the auth URL within -ws-handshake-timeout".into(),
        )),
    }
}

/// `-auth=url`: what the endpoint says of this upgrade.
async fn ask(
    acc: &Accepted,
    cb: &Callback,
    ctx: &Context,
    addr: SocketAddr,
) -> Result<Grant, crate::auth::callback::Denied> {
    let client = acc.claimed.resolve(addr.ip(), &ctx.cfg.trusted_proxies);
    let original_uri = match acc.query.is_empty() {
        true => ctx.cfg.route.clone(),
        false => format!("{}?{}", ctx.cfg.route, redact_query(&acc.query)),
    };
    let ask = Ask {
        cookie: acc.presented.cookie(),
        authorization: acc.presented.authorization(),
        origin: acc.origin.as_deref(),
        client_ip: client.ip.to_string(),
        original_uri,
    };
    cb.ask(&ask).await
}

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
