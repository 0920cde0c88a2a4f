//! What a `pubsocketd.v1` client's control message does: subscribe or
//! unsubscribe on its open socket. The request is checked whole (every
//! name relayed here, no more than `-ws-max-channels`) before anything
//! changes; then the worker re-files the client in its index and the answer
//! is queued ahead of any later message, so that every message published
//! after the answer reaches the client (or, after `unsubscribed`, none of
//! that channel does).

use super::conn::Conn;
use super::worker::Worker;
use crate::ws::control::{self, Control};
use crate::ws::decode::Violation;
use crate::ws::frame;

/// Applies one text message of a `pubsocketd.v1` client; an error closes
/// the connection with its code.
pub(crate) fn apply(w: &Worker, c: &Conn, text: &[u8]) -> Result<(), Violation> {
    let answer = match control::parse(text)? {
        Control::Subscribe(names) => subscribe(w, c, &names),
        Control::Unsubscribe(names) => unsubscribe(w, c, &names),
    };
    c.send_control(&frame::encode(frame::OP_TEXT, &answer));
    Ok(())
}

fn subscribe(w: &Worker, c: &Conn, names: &[String]) -> Vec<u8> {
    let channels = &w.ctx.channels.get();
    let current = c.selection().clone();
    let (mut keys, mut chosen) = match &current {
        Some(sel) => (sel.keys.to_vec(), sel.channels.to_vec()),
        None => Default::default(),
    };
    let unknown: Vec<String> = names
        .iter()
        .filter(|n| !channels.choose(n.as_bytes(), &mut keys, &mut chosen))
        .cloned()
        .collect();
    if !unknown.is_empty() {
        return control::refused("not relayed here", &unknown);
    }
    if current.is_none() {
        // It reads everything already.
        return control::done("subscribed", names);
    }
    let sel = channels.selection(keys, chosen);
    let max = w.ctx.cfg.max_channels;
    if sel.keys.len() + sel.channels.len() > max {
        let why = format!("over -ws-max-channels ({max})");
        return control::refused(&why, names);
    }
    w.reselect(c, Some(Box::new(sel)));
    control::done("subscribed", names)
}

fn unsubscribe(w: &Worker, c: &Conn, names: &[String]) -> Vec<u8> {
    let channels = &w.ctx.channels.get();
    let (mut keys, mut chosen) = match c.selection().as_deref() {
        Some(sel) => (sel.keys.to_vec(), sel.channels.to_vec()),
        // It read everything: it keeps the other keys.
        None => (channels.live().map(|(id, _)| id).collect(), Vec::new()),
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
