//! One Redis session's share of `-rs-on-demand`: it turns the changes of
//! [`Demand`] into SUBSCRIBE and UNSUBSCRIBE commands (SSUBSCRIBE and
//! SUNSUBSCRIBE on a cluster node), and Redis' answers into confirmations.

use super::resp::write::command;
use crate::demand::{Change, Demand, Owns, Registration};
use bytes::Bytes;
use std::collections::HashSet;
use std::sync::Arc;

/// Most channels in one SUBSCRIBE or UNSUBSCRIBE.
const PER_COMMAND: usize = 1000;

/// What a session subscribed on demand, and what it is leaving.
pub struct Tracker {
    demand: Arc<Demand>,
    registration: Registration,
    /// Sharded pub/sub: one command per channel (SSUBSCRIBE refuses
    /// channels of different slots in one call).
    sharded: bool,
    /// Subscribed (or asked for) on this connection.
    sent: HashSet<Bytes>,
    /// Unsubscribed, its answer not yet read: a `sunsubscribe` for one of
    /// these is ours, not a slot moving away.
    leaving: HashSet<Bytes>,
}

/// What an answer from Redis was to the tracker.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// One of ours, handled.
    Ours,
    /// Not about a channel subscribed on demand.
    Other,
}

impl Tracker {
    /// Registers a new session owning the channels `owns` accepts.
    pub fn new(demand: &Arc<Demand>, owns: Owns, sharded: bool) -> Tracker {
        Tracker {
            demand: demand.clone(),
            registration: demand.register(owns),
            sharded,
            sent: HashSet::new(),
            leaving: HashSet::new(),
        }
    }

    /// The commands for the channels wanted when the session started.
    pub fn initial_commands(&mut self) -> Vec<Vec<u8>> {
        let initial = std::mem::take(&mut self.registration.initial);
        let changes: Vec<Change> = initial.into_iter().map(Change::Subscribe).collect();
        self.commands(changes)
    }

    /// Waits for the next change, then takes every change waiting: the
    /// commands for all of them (a burst of connects is one write).
    pub async fn next_commands(&mut self) -> Vec<Vec<u8>> {
        let Some(first) = self.registration.changes.recv().await else {
            return std::future::pending().await;
        };
        let mut changes = vec![first];
        while let Ok(c) = self.registration.changes.try_recv() {
            changes.push(c);
        }
        self.commands(changes)
    }

    /// The commands for `changes`, in their order: runs of the same verb
    /// share a command (unless sharded).
    fn commands(&mut self, changes: Vec<Change>) -> Vec<Vec<u8>> {
        let (sub, unsub): (&[u8], &[u8]) = match self.sharded {
            true => (b"SSUBSCRIBE", b"SUNSUBSCRIBE"),
            false => (b"SUBSCRIBE", b"UNSUBSCRIBE"),
        };
        let most = if self.sharded { 1 } else { PER_COMMAND };
        let mut out = Vec::new();
        let mut run: Vec<Bytes> = Vec::new();
        let mut run_verb: &[u8] = sub;
        for change in changes {
            let (verb, ch) = match change {
                Change::Subscribe(ch) => {
                    self.sent.insert(ch.clone());
                    (sub, ch)
                }
                Change::Unsubscribe(ch) => {
                    self.sent.remove(&ch);
                    self.leaving.insert(ch.clone());
                    (unsub, ch)
                }
            };
            if !run.is_empty() && (verb != run_verb || run.len() == most) {
                out.push(Self::command(run_verb, &run));
                run.clear();
            }
            run_verb = verb;
            run.push(ch);
        }
        if !run.is_empty() {
            out.push(Self::command(run_verb, &run));
        }
        out
    }

    fn command(verb: &[u8], channels: &[Bytes]) -> Vec<u8> {
        let mut parts: Vec<&[u8]> = vec![verb];
        parts.extend(channels.iter().map(|c| &c[..]));
        command(&parts)
    }

    /// A subscription answer (`kind`, `channel`) read from Redis: a
    /// subscribe of ours confirms the channel, an unsubscribe of ours ends
    /// its leaving.
    pub fn answer(&mut self, kind: &[u8], channel: &[u8]) -> Answer {
        match kind {
            b"subscribe" | b"ssubscribe" if self.sent.contains(channel) => {
                self.demand.confirm([channel]);
                Answer::Ours
            }
            b"unsubscribe" | b"sunsubscribe" if self.leaving.remove(channel) => Answer::Ours,
            _ => Answer::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn b(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    fn text(cmds: &[Vec<u8>]) -> Vec<String> {
        cmds.iter()
            .map(|c| String::from_utf8_lossy(c).replace("\r\n", " "))
            .collect()
    }

    #[tokio::test]
    async fn changes_become_commands_in_order_and_answers_confirm() {
        let demand = Demand::new(Duration::ZERO);
        demand.acquire(&[b("u.1")]);
        let mut t = Tracker::new(&demand, Arc::new(|_: &[u8]| true), false);
        assert_eq!(text(&t.initial_commands()), ["*2 $9 SUBSCRIBE $3 u.1 "]);
        demand.acquire(&[b("u.2"), b("u.3")]);
        demand.release(&[b("u.1")]);
        demand.sweep();
        assert_eq!(
            text(&t.next_commands().await),
            [
                "*3 $9 SUBSCRIBE $3 u.2 $3 u.3 ",
                "*2 $11 UNSUBSCRIBE $3 u.1 "
            ]
        );
        assert_eq!(t.answer(b"subscribe", b"u.2"), Answer::Ours);
        assert_eq!(t.answer(b"subscribe", b"news"), Answer::Other);
        assert_eq!(t.answer(b"unsubscribe", b"u.1"), Answer::Ours);
        assert_eq!(t.answer(b"unsubscribe", b"u.1"), Answer::Other);
        let u2 = [b("u.2")];
        let confirmed = demand.confirmed(&u2);
        tokio::time::timeout(Duration::from_secs(1), confirmed)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn sharded_is_one_command_per_channel_and_its_own_sunsubscribe_is_expected() {
        let demand = Demand::new(Duration::ZERO);
        let mut t = Tracker::new(&demand, Arc::new(|_: &[u8]| true), true);
        demand.acquire(&[b("a"), b("b")]);
        assert_eq!(
            text(&t.next_commands().await),
            ["*2 $10 SSUBSCRIBE $1 a ", "*2 $10 SSUBSCRIBE $1 b "]
        );
        demand.release(&[b("a")]);
        demand.sweep();
        assert_eq!(
            text(&t.next_commands().await),
            ["*2 $12 SUNSUBSCRIBE $1 a "]
        );
        assert_eq!(t.answer(b"sunsubscribe", b"a"), Answer::Ours);
        assert_eq!(t.answer(b"sunsubscribe", b"b"), Answer::Other, "b moved");
    }
}
