//! `-rs-on-demand`: the concrete channels clients read under a pattern,
//! subscribed in Redis only while someone reads them.
//!
//! Every worker counts its clients in and out here (at the upgrade, at a
//! `pubsocketd.v1` subscribe or unsubscribe, at the close: never per
//! message). The first reader of a channel asks the Redis session that owns
//! it (the one connection, or the cluster node of its slot) to subscribe;
//! the session confirms when Redis answers, and only then is the client
//! told it is subscribed. When the last reader leaves, the channel stays
//! subscribed for a grace period (a reconnecting client finds it still
//! there), then the sweep unsubscribes it. Sessions take the changes as a
//! stream and batch whatever has piled up into one write.

use bytes::Bytes;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// A change a session applies to its subscriptions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Subscribe(Bytes),
    Unsubscribe(Bytes),
}

/// Which channels a session subscribes: every one, or those of its slots.
pub type Owns = Arc<dyn Fn(&[u8]) -> bool + Send + Sync>;

/// The channels wanted now, shared by the workers and the Redis sessions.
pub struct Demand {
    state: Mutex<State>,
    /// Bumped whenever a channel is confirmed, to wake the waiters.
    confirmations: watch::Sender<u64>,
    grace: Duration,
}

#[derive(Default)]
struct State {
    wanted: HashMap<Bytes, Entry>,
    sessions: Vec<Link>,
    next_id: u64,
}

/// One wanted channel.
struct Entry {
    readers: u32,
    /// When the last reader left; `None` while someone reads it.
    idle_since: Option<Instant>,
    /// Redis confirmed the subscription on the session that owns it now.
    confirmed: bool,
}

/// A live session and what it owns.
struct Link {
    id: u64,
    owns: Owns,
    changes: mpsc::UnboundedSender<Change>,
}

/// A session's registration: its changes, and the channels wanted when it
/// registered (to subscribe first). Dropping it (the session ended)
/// unconfirms what the session owned.
pub struct Registration {
    demand: Arc<Demand>,
    id: u64,
    pub changes: mpsc::UnboundedReceiver<Change>,
    pub initial: Vec<Bytes>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut s = self.demand.lock();
        let Some(i) = s.sessions.iter().position(|l| l.id == self.id) else {
            return;
        };
        let link = s.sessions.swap_remove(i);
        for (ch, e) in s.wanted.iter_mut() {
            if (link.owns)(ch) {
                e.confirmed = false;
            }
        }
    }
}

/// A temporary extra reader, so that a channel stays wanted while a client
/// moves to a new choice; released when dropped.
pub struct Hold<'a> {
    demand: &'a Demand,
    channels: &'a [Bytes],
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        self.demand.release(self.channels);
    }
}

impl Demand {
    pub fn new(grace: Duration) -> Arc<Demand> {
        Arc::new(Demand {
            state: Mutex::default(),
            confirmations: watch::channel(0).0,
            grace,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one more reader of each channel; a channel nobody wanted
    /// (and not in its grace period) is asked of its session.
    pub fn acquire(&self, channels: &[Bytes]) {
        if channels.is_empty() {
            return;
        }
        let mut s = self.lock();
        for ch in channels {
            let e = s.wanted.entry(ch.clone()).or_insert(Entry {
                readers: 0,
                idle_since: None,
                confirmed: false,
            });
            let new = e.readers == 0 && e.idle_since.is_none();
            e.readers += 1;
            e.idle_since = None;
            if new {
                s.tell(ch, Change::Subscribe(ch.clone()));
            }
        }
    }

    /// One reader fewer of each channel; the last one starts the grace.
    pub fn release(&self, channels: &[Bytes]) {
        if channels.is_empty() {
            return;
        }
        let mut s = self.lock();
        for ch in channels {
            if let Some(e) = s.wanted.get_mut(ch) {
                e.readers = e.readers.saturating_sub(1);
                if e.readers == 0 {
                    e.idle_since = Some(Instant::now());
                }
            }
        }
    }

    /// Acquires `channels` until the hold is dropped.
    pub fn hold<'a>(&'a self, channels: &'a [Bytes]) -> Hold<'a> {
        self.acquire(channels);
        Hold {
            demand: self,
            channels,
        }
    }

    /// Waits until Redis confirmed every one of `channels` (the caller
    /// bounds the wait).
    pub async fn confirmed(&self, channels: &[Bytes]) {
        let mut rx = self.confirmations.subscribe();
        loop {
            rx.mark_unchanged();
            let done = {
                let s = self.lock();
                channels
                    .iter()
                    .all(|c| s.wanted.get(c).is_some_and(|e| e.confirmed))
            };
            if done || rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Marks confirmed the channels Redis acknowledged, then wakes the
    /// waiters once.
    pub fn confirm<'a>(&self, channels: impl IntoIterator<Item = &'a [u8]>) {
        let mut s = self.lock();
        let mut any = false;
        for ch in channels {
            if let Some(e) = s.wanted.get_mut(ch) {
                e.confirmed = true;
                any = true;
            }
        }
        drop(s);
        if any {
            self.confirmations.send_modify(|n| *n += 1);
        }
    }

    /// A session starts: it receives the changes of the channels it owns,
    /// beginning with those wanted now.
    pub fn register(self: &Arc<Demand>, owns: Owns) -> Registration {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut s = self.lock();
        let id = s.next_id;
        s.next_id += 1;
        let initial = s.wanted.keys().filter(|c| owns(c)).cloned().collect();
        s.sessions.push(Link {
            id,
            owns,
            changes: tx,
        });
        Registration {
            demand: self.clone(),
            id,
            changes: rx,
            initial,
        }
    }

    /// Unsubscribes the channels idle past the grace; returns how many.
    pub fn sweep(&self) -> usize {
        let mut s = self.lock();
        let now = Instant::now();
        let grace = self.grace;
        let idle: Vec<Bytes> = s
            .wanted
            .iter()
            .filter(|(_, e)| e.idle_since.is_some_and(|t| now.duration_since(t) >= grace))
            .map(|(c, _)| c.clone())
            .collect();
        for ch in &idle {
            s.wanted.remove(ch);
            s.tell(ch, Change::Unsubscribe(ch.clone()));
        }
        idle.len()
    }

    /// Sweeps every quarter of the grace, for as long as the relay runs.
    pub async fn sweeper(self: Arc<Demand>) {
        let period = (self.grace / 4).max(Duration::from_millis(10));
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            self.sweep();
        }
    }

    /// The channels subscribed now (read or in their grace), for `/channels`
    /// and the tests.
    pub fn subscribed(&self) -> usize {
        self.lock().wanted.len()
    }
}

impl State {
    /// Sends `change` to the session that owns `channel`, if one runs (a
    /// session that starts later takes the wanted set whole).
    fn tell(&mut self, channel: &[u8], change: Change) {
        if let Some(l) = self.sessions.iter().find(|l| (l.owns)(channel)) {
            let _ = l.changes.send(change);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    fn drain(r: &mut Registration) -> Vec<Change> {
        std::iter::from_fn(|| r.changes.try_recv().ok()).collect()
    }

    #[tokio::test]
    async fn counted_readers_subscribe_once_and_leave_after_the_grace() {
        let d = Demand::new(Duration::ZERO);
        let mut all = d.register(Arc::new(|_: &[u8]| true));
        d.acquire(&[b("u.1"), b("u.2")]);
        d.acquire(&[b("u.1")]);
        assert_eq!(
            drain(&mut all),
            [Change::Subscribe(b("u.1")), Change::Subscribe(b("u.2"))]
        );
        d.confirm([&b"u.1"[..], b"u.2"]);
        d.confirmed(&[b("u.1"), b("u.2")]).await;
        d.release(&[b("u.1")]);
        assert_eq!(d.sweep(), 0, "u.1 still has a reader");
        d.release(&[b("u.1"), b("u.2")]);
        assert_eq!(d.sweep(), 2);
        let mut gone = drain(&mut all);
        gone.sort_by_key(|c| format!("{c:?}"));
        assert_eq!(
            gone,
            [Change::Unsubscribe(b("u.1")), Change::Unsubscribe(b("u.2"))]
        );
        assert_eq!(d.subscribed(), 0);
    }

    #[tokio::test]
    async fn a_reader_back_within_the_grace_keeps_the_subscription() {
        let d = Demand::new(Duration::from_secs(3600));
        let mut all = d.register(Arc::new(|_: &[u8]| true));
        d.acquire(&[b("u.1")]);
        d.confirm([&b"u.1"[..]]);
        d.release(&[b("u.1")]);
        d.acquire(&[b("u.1")]);
        assert_eq!(drain(&mut all), [Change::Subscribe(b("u.1"))]);
        assert_eq!(d.sweep(), 0);
        d.confirmed(&[b("u.1")]).await;
    }

    #[tokio::test]
    async fn each_change_goes_to_the_owner_and_a_new_session_starts_from_the_whole() {
        let d = Demand::new(Duration::ZERO);
        let mut a = d.register(Arc::new(|c: &[u8]| c.starts_with(b"a")));
        d.acquire(&[b("a.1"), b("b.1")]);
        assert_eq!(drain(&mut a), [Change::Subscribe(b("a.1"))]);
        let b_session = d.register(Arc::new(|c: &[u8]| c.starts_with(b"b")));
        assert_eq!(b_session.initial, [b("b.1")]);
        d.confirm([&b"a.1"[..], b"b.1"]);
        drop(a);
        let a1 = [b("a.1")];
        let waiting = tokio::time::timeout(Duration::from_millis(50), d.confirmed(&a1));
        assert!(
            waiting.await.is_err(),
            "a session ended: a.1 is unconfirmed"
        );
        d.confirmed(&[b("b.1")]).await;
        {
            let _hold = d.hold(&[]);
        }
    }
}
