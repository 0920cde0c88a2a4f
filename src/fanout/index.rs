//! A worker's clients, indexed by what they read, so that a message costs
//! work in proportion to the clients that want it, not to the clients
//! connected.
//!
//! Clients that read every key (the broadcast case) are one list, written
//! with the shared batched path. A client that chose keys or concrete
//! channels is found through the index instead: one list per configured
//! key, one per concrete channel. A batch then costs a lookup of each
//! message's keys and channel, plus one entry per (client,
//! message) it reaches; before, every message tested every client.

use super::conn::{Conn, MAX_IOV};
use super::hub::Message;
use crate::channels::KeySet;
use bytes::Bytes;
use std::collections::HashMap;
use std::rc::Rc;

/// The index of one worker. Ids of choosing clients are stable while they
/// live (a free list reuses them), so the lists hold ids, not positions.
#[derive(Default)]
pub(crate) struct Index {
    /// Clients that read everything; `Conn::place` is the position here.
    everyone: Vec<Rc<Conn>>,
    /// Clients that chose; `Conn::place` is the id, the position here.
    chosen: Vec<Option<Rc<Conn>>>,
    free: Vec<u32>,
    /// Choosing clients by configured key (a key chosen whole).
    by_key: Vec<Vec<u32>>,
    /// Choosing clients by concrete channel (chosen under a pattern).
    by_channel: HashMap<Bytes, Vec<u32>>,
    /// (client id, message index) pairs of a batch, kept for the capacity.
    pairs: Vec<(u32, u16)>,
}

/// Marks a `Conn::place` as the id of a choosing client (else it is the
/// position among those that read everything).
const CHOSEN: usize = 1 << (usize::BITS - 1);

impl Index {
    /// Every client of the worker, those that read everything first.
    pub(crate) fn all(&self) -> impl Iterator<Item = &Rc<Conn>> {
        self.everyone.iter().chain(self.chosen.iter().flatten())
    }

    /// Whether the worker has no client left.
    pub(crate) fn is_empty(&self) -> bool {
        self.everyone.is_empty() && self.chosen.len() == self.free.len()
    }

    /// The client whose `Conn::place` is `place` (for the sends of one
    /// io_uring batch, while the index does not change).
    pub(crate) fn by_place(&self, token: usize) -> &Rc<Conn> {
        match token & CHOSEN {
            0 => &self.everyone[token],
            _ => self.chosen[token & !CHOSEN]
                .as_ref()
                .expect("a live client"),
        }
    }

    /// Every client that reads everything.
    pub(crate) fn everyone(&self) -> &[Rc<Conn>] {
        &self.everyone
    }

    pub(crate) fn add(&mut self, c: Rc<Conn>) {
        let selection = c.selection();
        let Some(sel) = selection.as_deref() else {
            drop(selection);
            c.place.set(self.everyone.len());
            self.everyone.push(c);
            return;
        };
        let id = self.free.pop().unwrap_or(self.chosen.len() as u32);
        for &k in sel.keys.iter() {
            let k = k as usize;
            if self.by_key.len() <= k {
                self.by_key.resize_with(k + 1, Vec::new);
            }
            self.by_key[k].push(id);
        }
        for ch in sel.channels.iter() {
            self.by_channel.entry(ch.clone()).or_default().push(id);
        }
        drop(selection);
        c.place.set(CHOSEN | id as usize);
        match self.chosen.get_mut(id as usize) {
            Some(slot) => *slot = Some(c),
            None => self.chosen.push(Some(c)),
        }
    }

    /// Takes `c` out; returns the index's handle on it.
    pub(crate) fn remove(&mut self, c: &Conn) -> Rc<Conn> {
        let place = c.place.get();
        let selection = c.selection();
        let Some(sel) = selection.as_deref() else {
            let gone = self.everyone.swap_remove(place);
            if let Some(moved) = self.everyone.get(place) {
                moved.place.set(place);
            }
            return gone;
        };
        let place = place & !CHOSEN;
        let id = place as u32;
        for &k in sel.keys.iter() {
            forget(&mut self.by_key[k as usize], id);
        }
        for ch in sel.channels.iter() {
            if let Some(list) = self.by_channel.get_mut(ch) {
                forget(list, id);
                if list.is_empty() {
                    self.by_channel.remove(ch);
                }
            }
        }
        self.free.push(id);
        self.chosen[place].take().expect("a live client")
    }

    /// Calls `deliver` once for each choosing client that wants some of
    /// `batch`, with the indices of those messages in order, each once
    /// (a client on a key and on a channel that key covers gets one copy).
    pub(crate) fn for_each_chosen(
        &mut self,
        batch: &[Message],
        mut deliver: impl FnMut(&Conn, &[u16]),
    ) {
        if self.chosen.len() == self.free.len() {
            return;
        }
        self.pairs.clear();
        for (i, m) in batch.iter().enumerate() {
            self.collect(i as u16, m);
        }
        self.pairs.sort_unstable();
        self.pairs.dedup();
        let mut mine = [0u16; MAX_IOV];
        let mut at = 0;
        while at < self.pairs.len() {
            let id = self.pairs[at].0;
            let mut n = 0;
            while at < self.pairs.len() && self.pairs[at].0 == id && n < mine.len() {
                mine[n] = self.pairs[at].1;
                n += 1;
                at += 1;
            }
            if let Some(c) = &self.chosen[id as usize] {
                deliver(c, &mine[..n]);
            }
        }
    }

    /// The (client, message) pairs of one message.
    fn collect(&mut self, i: u16, m: &Message) {
        if m.keys == KeySet::Broadcast {
            let ids = self.chosen.iter().enumerate();
            let live = ids
                .filter(|(_, c)| c.is_some())
                .map(|(id, _)| (id as u32, i));
            self.pairs.extend(live);
            return;
        }
        for &k in m.keys.ids() {
            if let Some(ids) = self.by_key.get(k as usize) {
                self.pairs.extend(ids.iter().map(|&id| (id, i)));
            }
        }
        if self.by_channel.is_empty() {
            return;
        }
        if let Some(ids) = self.by_channel.get(&m.channel[..]) {
            self.pairs.extend(ids.iter().map(|&id| (id, i)));
        }
    }
}

/// Drops `id` from a list (order does not matter: delivery order is per
/// message, not per list).
fn forget(list: &mut Vec<u32>, id: u32) {
    if let Some(i) = list.iter().position(|&x| x == id) {
        list.swap_remove(i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::{Channels, Selection};

    fn conn(sel: Option<Selection>) -> Rc<Conn> {
        Rc::new(Conn::new(None, 1 << 20, "[-][t]".into(), sel.map(Box::new)))
    }

    fn msg(channels: &Channels, channel: &str) -> Message {
        Message::plain(
            Bytes::from_static(b"x"),
            channels.keys_for(channel.as_bytes()),
            Bytes::copy_from_slice(channel.as_bytes()),
        )
    }

    /// Who gets which messages of `batch`, by peer name.
    fn deliveries(index: &mut Index, batch: &[Message]) -> Vec<(String, Vec<u16>)> {
        let mut out = Vec::new();
        index.for_each_chosen(batch, |c, mine| {
            out.push((c.peer.to_string(), mine.to_vec()))
        });
        out.sort();
        out
    }

    #[test]
    fn each_client_gets_what_it_chose_once_and_in_order() {
        let channels = Channels::parse("news,user.*").unwrap();
        let mut index = Index::default();
        let named = |name: &str, query: &str| {
            let c = Conn::new(
                None,
                1 << 20,
                name.into(),
                channels.select(query, 64).unwrap().map(Box::new),
            );
            Rc::new(c)
        };
        let a = named("a", "channel=user.1");
        let b = named("b", "channel=user.2&channel=user.*");
        let c = named("c", "channel=news");
        let all = conn(None);
        for x in [&a, &b, &c, &all] {
            index.add(x.clone());
        }
        assert_eq!(index.everyone().len(), 1);
        let batch = [
            msg(&channels, "user.2"),
            msg(&channels, "user.1"),
            msg(&channels, "news"),
            msg(&channels, "user.3"),
        ];
        assert_eq!(
            deliveries(&mut index, &batch),
            [
                ("a".to_string(), vec![1]),
                ("b".to_string(), vec![0, 1, 3]),
                ("c".to_string(), vec![2]),
            ]
        );
        let mut beat = msg(&channels, "news");
        beat.keys = KeySet::Broadcast;
        assert_eq!(
            deliveries(&mut index, &[beat]).len(),
            3,
            "the heartbeat reaches all"
        );
        index.remove(&b);
        index.remove(&all);
        assert!(index.everyone().is_empty());
        let d = named("d", "channel=user.2");
        index.add(d.clone());
        assert_eq!(d.place.get(), b.place.get(), "the id is reused");
        assert_eq!(
            deliveries(&mut index, &batch),
            [
                ("a".to_string(), vec![1]),
                ("c".to_string(), vec![2]),
                ("d".to_string(), vec![0]),
            ]
        );
        index.remove(&a);
        index.remove(&c);
        index.remove(&d);
        assert!(deliveries(&mut index, &batch).is_empty());
        assert!(index.by_channel.is_empty());
    }
}
