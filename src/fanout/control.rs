//! What a `pubsocketd.v1` client's control message does: subscribe or
//! unsubscribe on its open socket. The request is checked whole (every
//! name relayed here, no more than `-ws-max-channels`) before anything
//! changes; then the worker re-files the client in its index and the answer
//! is queued ahead of any later message, so that every message published
//! after the answer reaches the client (or, after `unsubscribed`, none of
//! that channel does).

use super::conn::Conn;
use super::worker::Worker;
use crate::channels::{Channels, Selection};
use crate::ws::control::{self, Control};
use crate::ws::decode::Violation;
use crate::ws::frame;
use bytes::Bytes;

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
    let unknown: Vec<String> = names
        .iter()
        .filter(|n| channels.keys_for(n.as_bytes()).is_nothing() && !is_key(channels, n))
        .cloned()
        .collect();
    if !unknown.is_empty() {
        return control::refused("not relayed here", &unknown);
    }
    let current = c.selection().clone();
    let Some(mut sel) = current else {
        // It reads everything already.
        return control::done("subscribed", names);
    };
    for name in names {
        add(channels, &mut sel, name);
    }
    sel.counted = channels.counted_keys(&sel).into();
    let max = w.ctx.cfg.max_channels;
    if sel.keys.len() + sel.channels.len() > max {
        let why = format!("over -ws-max-channels ({max})");
        return control::refused(&why, names);
    }
    w.reselect(c, Some(sel));
    control::done("subscribed", names)
}

fn unsubscribe(w: &Worker, c: &Conn, names: &[String]) -> Vec<u8> {
    let channels = &w.ctx.channels.get();
    let current = c.selection().clone();
    let mut sel = current.unwrap_or_else(|| Box::new(everything(channels)));
    for name in names {
        remove(channels, &mut sel, name);
    }
    sel.counted = channels.counted_keys(&sel).into();
    w.reselect(c, Some(sel));
    control::done("unsubscribed", names)
}

/// Whether `name` is a configured key spelled as it is (a pattern may be
/// chosen whole).
fn is_key(channels: &Channels, name: &str) -> bool {
    channels.id_of(name.as_bytes()).is_some()
}

/// Adds `name` (a key, or a channel a pattern covers) to `sel`.
fn add(channels: &Channels, sel: &mut Selection, name: &str) {
    match channels.id_of(name.as_bytes()) {
        Some(id) => {
            let mut keys = sel.keys.to_vec();
            keys.push(id);
            keys.sort_unstable();
            keys.dedup();
            sel.keys = keys.into();
        }
        None if !sel.channels.iter().any(|c| c.as_ref() == name.as_bytes()) => {
            let mut list = sel.channels.to_vec();
            list.push(Bytes::copy_from_slice(name.as_bytes()));
            sel.channels = list.into();
        }
        None => {}
    }
}

/// Takes `name` out of `sel`, if it is there.
fn remove(channels: &Channels, sel: &mut Selection, name: &str) {
    if let Some(id) = channels.keys().iter().position(|k| k.name == name) {
        sel.keys = sel
            .keys
            .iter()
            .copied()
            .filter(|&k| k != id as u32)
            .collect();
    }
    sel.channels = sel
        .channels
        .iter()
        .filter(|c| c.as_ref() != name.as_bytes())
        .cloned()
        .collect();
}

/// Every key, spelled out: what a client that read everything keeps when
/// it unsubscribes from some.
fn everything(channels: &Channels) -> Selection {
    Selection {
        keys: channels.live().map(|(id, _)| id).collect(),
        channels: Box::default(),
        counted: Box::default(),
    }
}
