//! What a `pubsocketd.v1` client's control message does: subscribe or
//! unsubscribe on its open socket. The request is checked whole (every
//! name relayed here, no more than `-ws-max-channels`) before anything
//! changes; then the worker re-files the client in its index and the answer
//! is queued ahead of any later message, so that every message published
//! after the answer reaches the client (or, after `unsubscribed`, none of
//! that channel does). Under `-rs-on-demand` the answer waits until Redis
//! confirmed the new channels. A `since` then replays, after the answer,
//! what the client missed (see [`Worker::resume`]).

use super::conn::Conn;
use super::older::Older;
use super::resume::{self, Asked};
use super::worker::Worker;
use crate::history::since::Point;
use crate::ws::control::{self, Control};
use crate::ws::decode::Violation;
use crate::ws::frame;
use bytes::Bytes;

/// Applies one text message of a `pubsocketd.v1` client; an error closes
/// the connection with its code.
pub(crate) async fn apply(w: &Worker, c: &Conn, text: &[u8]) -> Result<(), Violation> {
    let (answers, asked, older) = match control::parse(text)? {
        Control::Subscribe { names, since } => subscribe(w, c, &names, since).await,
        Control::Unsubscribe(names) => (vec![unsubscribe(w, c, &names)], Asked::new(), vec![]),
        Control::Token(token) => (vec![refresh(w, c, &token)?], Asked::new(), vec![]),
    };
    // No wait between the selection's change and the replay: no batch can
    // come in between.
    for answer in answers {
        c.send_control(&frame::encode(frame::OP_TEXT, &answer));
    }
    if !asked.is_empty() {
        w.resume(c, &asked, older);
    }
    Ok(())
}

/// A subscribe, and the replay its `since` asks for once it is done: of a
/// channel named, or one a pattern named covers. A `since` of a channel the
/// client does not read then is refused on its own (the subscribe stands).
async fn subscribe(
    w: &Worker,
    c: &Conn,
    names: &[String],
    since: Vec<(String, Point)>,
) -> (Vec<Vec<u8>>, Asked, Vec<Older>) {
    // Older entries are read before the choice takes effect, so that no
    // live message comes ahead of them.
    let wanted: Asked = since
        .iter()
        .map(|(name, point)| (Bytes::copy_from_slice(name.as_bytes()), *point))
        .collect();
    let older = w.older_for(&wanted, c.form()).await;
    if let Err(refused) = choose(w, c, names).await {
        return (vec![refused], Asked::new(), older);
    }
    let channels = w.ctx.channels.get();
    let sel = c.selection();
    let (asked, foreign): (Vec<_>, Vec<_>) = since
        .into_iter()
        .partition(|(name, _)| resume::reads(&channels, sel.as_deref(), name.as_bytes()));
    let mut answers = vec![control::done("subscribed", names)];
    if !foreign.is_empty() {
        let names: Vec<String> = foreign.into_iter().map(|(n, _)| n).collect();
        answers.push(control::refused("since names a channel not read", &names));
    }
    let asked = asked
        .into_iter()
        .map(|(name, point)| (Bytes::from(name.into_bytes()), point))
        .collect();
    (answers, asked, older)
}

/// Re-files the client under its new choice; the error is the refusal.
async fn choose(w: &Worker, c: &Conn, names: &[String]) -> Result<(), Vec<u8>> {
    let channels = &w.ctx.channels.get();
    let current = c.selection().clone();
    let (mut keys, mut chosen) = match &current {
        Some(sel) => (sel.keys.to_vec(), sel.channels.to_vec()),
        None => (channels.everything().collect(), Vec::new()),
    };
    let (mut why, mut refused) = (None, Vec::new());
    for n in names {
        if let Err(r) = channels.choose(n.as_bytes(), &mut keys, &mut chosen) {
            why.get_or_insert(r);
            refused.push(n.clone());
        }
    }
    if let Some(why) = why {
        return Err(control::refused(why.reason(), &refused));
    }
    if let Some(grant) = c.grant().as_deref() {
        let denied: Vec<String> = names
            .iter()
            .filter(|n| !grant.allows(channels, n.as_bytes()))
            .cloned()
            .collect();
        if !denied.is_empty() {
            return Err(control::refused("not granted by the token", &denied));
        }
    }
    if current.is_none() && chosen.is_empty() {
        // It reads all of these already.
        return Ok(());
    }
    let sel = channels.selection(keys, chosen);
    let max = w.ctx.cfg.max_channels;
    if sel.keys.len() + sel.channels.len() > max {
        let why = format!("over -ws-max-channels ({max})");
        return Err(control::refused(&why, names));
    }
    let Some(demand) = &w.ctx.demand else {
        w.reselect(c, Some(Box::new(sel)));
        return Ok(());
    };
    // On demand: answer only once Redis confirmed every channel, so that
    // whatever is published after the answer arrives.
    let wanted = sel.channels.clone();
    let _held = demand.hold(&wanted);
    let wait = w.ctx.cfg.handshake_timeout;
    if tokio::time::timeout(wait, demand.confirmed(&wanted))
        .await
        .is_err()
    {
        let why = format!("Redis did not confirm the subscription within {wait:?}");
        return Err(control::refused(&why, names));
    }
    w.reselect(c, Some(Box::new(sel)));
    Ok(())
}

/// `{"token":…}`: a new token for the connection. An invalid one is an
/// error reply (the old one still holds until it expires); a valid one
/// that no longer covers what the client reads closes it with 4403.
fn refresh(w: &Worker, c: &Conn, token: &str) -> Result<Vec<u8>, Violation> {
    let Some(verifier) = &w.ctx.auth else {
        return Ok(control::refused(
            "no token to refresh here: -auth=jwt is off",
            &[],
        ));
    };
    let grant = match verifier.verify(token) {
        Ok(g) => g,
        Err(why) => return Ok(control::refused(&format!("invalid token: {why}"), &[])),
    };
    let channels = w.ctx.channels.get();
    if grant
        .covers_all(&channels, c.selection().as_deref())
        .is_err()
    {
        return Err(NOT_COVERED);
    }
    let answer = control::refreshed(grant.exp);
    w.note_expiry(grant.exp);
    c.set_grant(Box::new(grant));
    Ok(answer)
}

/// A refreshed token that no longer covers a channel the client reads.
const NOT_COVERED: Violation = Violation {
    code: 4403,
    reason: "the new token does not cover every channel read",
};

fn unsubscribe(w: &Worker, c: &Conn, names: &[String]) -> Vec<u8> {
    let channels = &w.ctx.channels.get();
    let (mut keys, mut chosen) = match c.selection().as_deref() {
        Some(sel) => (sel.keys.to_vec(), sel.channels.to_vec()),
        // It read everything: it keeps the other keys.
        None => (channels.everything().collect(), Vec::new()),
    };
    for name in names {
        if let Some(id) = channels.id_of(name.as_bytes()) {
            keys.retain(|&k| k != id);
        }
        chosen.retain(|ch| ch.as_ref() != name.as_bytes());
    }
    let sel = channels.selection(keys, chosen);
    w.reselect(c, Some(Box::new(sel)));
    control::done("unsubscribed", names)
}
