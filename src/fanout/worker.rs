//! A worker's clients and what it does for them: the fan-out of each batch
//! of messages, and the per-worker tick (pings, silent peers, gauges).
//!
//! The hub sends each encoded frame to every worker once; the worker takes
//! whatever frames are waiting (up to [`MAX_IOV`]) and writes them to each
//! of its clients in one vectored write (or, under `-io=uring`, one send
//! each, all handed to the kernel at once). Timers are per worker, not per
//! connection. Everything here runs on the worker's own thread: `Rc` and
//! `Cell`, no lock.

use super::conn::{Conn, Delivery, State, MAX_IOV};
use super::context::Context;
use super::history::History;
use super::hub::{Form, Message};
use super::index::Index;
use super::older::Link;
use super::uring;
use crate::channels::Selection;
use crate::ops::config::Io;
use crate::ops::stats::WorkerCounters;
use crate::sse::event as sse;
use crate::ws::frame;
use bytes::Bytes;
use slog::{debug, info, warn};
use std::cell::{Cell, RefCell};
use std::io::IoSlice;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::time::sleep;

/// Fills the unused places of the stack arrays of frame references.
static EMPTY: Bytes = Bytes::new();

/// The forms of a batch (see [`Form`]).
const FORMS: usize = Form::COUNT;

/// The form a client takes, as an index into a batch's forms.
fn form_for(c: &Conn) -> usize {
    c.form().index()
}

/// One form of a batch: the frames, their bytes as write slices, and the
/// byte count.
struct Variant<'a> {
    frames: &'a [&'a Bytes],
    slices: &'a [IoSlice<'a>],
    total: usize,
}

impl<'a> Variant<'a> {
    fn new(frames: &'a [&'a Bytes], slices: &'a [IoSlice<'a>], total: usize) -> Variant<'a> {
        Variant {
            frames,
            slices,
            total,
        }
    }
}

/// What one fan-out delivered, added to the worker's counters once.
#[derive(Default)]
pub(super) struct Tally {
    pub(super) deliveries: u64,
    pub(super) bytes: u64,
}

/// Frames built once per worker and shared by all its clients, each in
/// its two transports: a WebSocket control frame, and the comment line an
/// event stream gets instead (see [`Pair::for_conn`]).
struct Prebuilt {
    ping: Pair,
    going_away: Pair,
    slow: Pair,
    removed: Pair,
    expired: Pair,
}

/// A control frame and its event-stream counterpart.
struct Pair([Bytes; 2]);

impl Pair {
    /// A close frame, or the comment that ends an event stream, naming why.
    fn close(code: u16, why: &str) -> Pair {
        Pair([frame::close(code, why), Bytes::from(sse::comment(why))])
    }

    fn for_conn(&self, c: &Conn) -> &Bytes {
        &self.0[usize::from(c.sse())]
    }
}

/// The worker's state, shared by its loop and its connection tasks.
pub(crate) struct Worker {
    pub(crate) ctx: Arc<Context>,
    /// Every client, by what it reads (the fan-out, the tick and the
    /// shutdown all go through it).
    pub(super) index: RefCell<Index>,
    frames: Prebuilt,
    next_ping: Cell<Instant>,
    /// Under `-auth`: the earliest `exp` of the worker's clients (Unix
    /// seconds; `u64::MAX` for none), so that the tick scans for expired
    /// tokens only when one may have expired.
    next_expiry: Cell<u64>,
    /// The send ring under `-io=uring`; `None` under epoll.
    ring: RefCell<Option<uring::Ring>>,
    /// The sends of the batch being made (kept: its capacity is reused).
    sends: RefCell<Vec<uring::Send>>,
    /// The last messages of each channel (`-history`).
    pub(super) history: RefCell<Option<History>>,
    /// Under `-rs-mode=stream`: the connection resumes read older entries on.
    pub(super) link: Link,
    /// This worker's index in `ctx.stats.workers`.
    pub(super) id: usize,
    /// Binary messages skipped for event streams, as last logged.
    skipped_logged: Cell<u64>,
}

/// The worker's send ring, if `-io=uring` and the kernel lets us have one
/// (the server has already checked once and logged a refusal).
fn ring(id: usize, ctx: &Context) -> Option<uring::Ring> {
    if ctx.cfg.io != Io::Uring {
        return None;
    }
    uring::Ring::new()
        .map_err(|e| {
            warn!(
                ctx.log,
                "[io] worker {id}: io_uring setup failed ({e}); this worker writes with epoll"
            )
        })
        .ok()
}

/// The socket to put in the ring's batch for `c`, if there is a ring and
/// `c` can take a direct write; otherwise `c` is written on its own.
fn batchable(ring: &Option<uring::Ring>, c: &Conn) -> Option<std::os::fd::RawFd> {
    ring.as_ref().and(c.ready_fd())
}

impl Worker {
    pub(crate) fn new(id: usize, ctx: Arc<Context>) -> Worker {
        let ring = ring(id, &ctx);
        let history = ctx.cfg.history.map(History::new);
        let next_ping = Instant::now() + ctx.cfg.ping_interval.unwrap_or_default();
        Worker {
            ctx,
            index: RefCell::new(Index::default()),
            frames: Prebuilt {
                ping: Pair([
                    frame::encode(frame::OP_PING, b""),
                    Bytes::from(sse::comment("ping")),
                ]),
                going_away: Pair::close(1001, "server shutting down"),
                slow: Pair::close(1008, "slow consumer: too many bytes waiting"),
                removed: Pair::close(1008, "every channel it read was removed"),
                expired: Pair::close(4401, "token expired"),
            },
            next_ping: Cell::new(next_ping),
            next_expiry: Cell::new(u64::MAX),
            ring: RefCell::new(ring),
            sends: RefCell::new(Vec::new()),
            history: RefCell::new(history),
            link: Link::default(),
            id,
            skipped_logged: Cell::new(0),
        }
    }

    pub(super) fn counters(&self) -> &WorkerCounters {
        &self.ctx.stats.workers[self.id]
    }

    /// A fifth of the ping interval, at most 5 s: fine enough for pings
    /// and pong timeouts, coarse enough that the scan of every connection
    /// (a cache miss each, about 1.5 ms for 19,000 here) costs next to
    /// nothing. Closing handshakes time out in their own tasks.
    pub(crate) fn tick_period(&self) -> Duration {
        let most = Duration::from_secs(5);
        let ping = self.ctx.cfg.ping_interval.unwrap_or(most);
        (ping / 5).clamp(Duration::from_millis(50), most)
    }

    /// Sends a batch of messages to every client that wants them. The
    /// slices are built once and every client that takes every channel
    /// gets the same ones; a client that chose channels, found through the
    /// index, gets its subset, in order.
    ///
    /// Frames are passed by reference: no reference count (an atomic shared
    /// with the other workers) is touched unless a frame must be queued.
    ///
    /// With a ring (`-io=uring`), the clients that take every channel and
    /// have nothing queued are written in one batch of sends; everyone else
    /// (and everyone under `-io=epoll`) gets a `writev` of their own.
    pub(crate) fn fan_out(&self, batch: &[Message]) {
        if let Some(at) = batch.iter().position(|m| m.gap) {
            self.fan_out(&batch[..at]);
            self.gap(&batch[at].channel);
            return self.fan_out(&batch[at + 1..]);
        }
        if batch.is_empty() {
            return;
        }
        if let Some(history) = self.history.borrow_mut().as_mut() {
            let now = Instant::now();
            for m in batch {
                history.keep(m, now);
            }
        }
        // The batch in each form a client may take: plain or enveloped
        // (`pubsocketd.v1`), each compressed or not. Built once per batch,
        // shared by every client that reads everything.
        let mut frames: [[&Bytes; MAX_IOV]; FORMS] = [[&EMPTY; MAX_IOV]; FORMS];
        let mut slices = [[IoSlice::new(&[]); MAX_IOV]; FORMS];
        let mut count = [0usize; FORMS];
        let mut total = [0usize; FORMS];
        for (f, form) in Form::ALL.into_iter().enumerate() {
            for m in batch.iter().filter(|m| m.everyone) {
                if let Some(frame) = m.form(form) {
                    frames[f][count[f]] = frame;
                    slices[f][count[f]] = IoSlice::new(frame);
                    total[f] += frame.len();
                    count[f] += 1;
                }
            }
        }
        let variants: [Variant; FORMS] = std::array::from_fn(|f| {
            Variant::new(&frames[f][..count[f]], &slices[f][..count[f]], total[f])
        });
        let mut tally = Tally::default();
        let mut index = self.index.borrow_mut();
        let everyone = index.everyone();
        let mut ring = self.ring.borrow_mut();
        let mut sends = self.sends.borrow_mut();
        for (token, c) in everyone.iter().enumerate() {
            let f = form_for(c);
            let v = &variants[f];
            if v.frames.is_empty() {
                continue;
            }
            match batchable(&ring, c) {
                Some(fd) => sends.push(uring::Send {
                    fd,
                    message: f,
                    token,
                }),
                None => {
                    let delivery = c.deliver(v.frames, v.slices, v.total);
                    self.record(c, delivery, v.frames.len(), v.total, &mut tally);
                }
            }
        }
        if let Some(ring) = ring.as_mut() {
            let messages: [uring::Message; FORMS] =
                std::array::from_fn(|f| uring::Message::new(variants[f].slices));
            ring.send_all(&messages, sends.drain(..), |token, result| {
                let c = &everyone[token];
                let v = &variants[form_for(c)];
                let delivery = c.delivered(v.frames, result, v.total);
                self.record(c, delivery, v.frames.len(), v.total, &mut tally);
            });
        }
        index.for_each_chosen(batch, |c, mine| {
            self.deliver_chosen(c, mine, batch, &mut tally)
        });
        self.counters().add(tally.deliveries, tally.bytes);
    }

    /// Sends a client that chose channels the messages of `batch` at the
    /// indices `mine`, in the form it takes.
    fn deliver_chosen(&self, c: &Conn, mine: &[u16], batch: &[Message], tally: &mut Tally) {
        let mut frames: [&Bytes; MAX_IOV] = [&EMPTY; MAX_IOV];
        let mut slices = [IoSlice::new(&[]); MAX_IOV];
        let (mut k, mut len) = (0, 0);
        for &i in mine {
            if let Some(f) = batch[i as usize].form(c.form()) {
                frames[k] = f;
                slices[k] = IoSlice::new(f);
                len += f.len();
                k += 1;
            }
        }
        if k > 0 {
            let delivery = c.deliver(&frames[..k], &slices[..k], len);
            self.record(c, delivery, k, len, tally);
        }
    }

    /// Counts a delivery of `n` messages (`len` bytes), or closes a client
    /// it left too far behind.
    pub(super) fn record(
        &self,
        c: &Conn,
        delivery: Delivery,
        n: usize,
        len: usize,
        tally: &mut Tally,
    ) {
        match delivery {
            Delivery::Written | Delivery::Queued => {
                tally.deliveries += n as u64;
                tally.bytes += len as u64;
            }
            Delivery::SlowClosed => self.close_slow(c),
            Delivery::Dropped => {}
        }
    }

    fn close_slow(&self, c: &Conn) {
        let waiting = c.waiting();
        c.close_slow(self.frames.slow.for_conn(c));
        let n = self.ctx.stats.slow_closed();
        warn!(self.ctx.log, "{}[slow] closed with 1008: {waiting} bytes waiting, over the {}-byte bound ({n} slow consumers closed so far)",
            c.peer, self.ctx.cfg.queue_bytes);
    }

    /// The per-worker timer: pings, silent peers, overdue closes, counters.
    pub(crate) fn housekeeping(&self) {
        let now = Instant::now();
        let cfg = &self.ctx.cfg;
        let ping_due = cfg.ping_interval.is_some() && now >= self.next_ping.get();
        if let (true, Some(p)) = (ping_due, cfg.ping_interval) {
            self.next_ping.set(now + p);
        }
        let mut queued = 0;
        self.log_skipped();
        self.close_expired();
        self.trim_history(now);
        let index = self.index.borrow();
        let mut ring = self.ring.borrow_mut();
        let mut sends = self.sends.borrow_mut();
        for c in index.all() {
            queued += c.queued();
            if c.state() != State::Open || cfg.ping_interval.is_none() {
                continue;
            }
            // An event stream's client never answers; its TCP end does.
            if !c.sse() && now.duration_since(c.last_seen()) > cfg.pong_timeout {
                debug!(
                    self.ctx.log,
                    "{}[timeout] no pong or data for {:?}; dropped", c.peer, cfg.pong_timeout
                );
                self.ctx.stats.pong_timeout();
                c.abort();
            } else if ping_due {
                match batchable(&ring, c) {
                    Some(fd) => sends.push(uring::Send {
                        fd,
                        message: usize::from(c.sse()),
                        token: c.place.get(),
                    }),
                    None => c.send_control(self.frames.ping.for_conn(c)),
                }
            }
        }
        self.counters().set_queued(queued as u64);
        if let Some(ring) = ring.as_mut() {
            let pings = &self.frames.ping.0;
            let slices = pings.each_ref().map(|p| [IoSlice::new(p)]);
            let messages = slices.each_ref().map(|s| uring::Message::new(s));
            ring.send_all(&messages, sends.drain(..), |token, result| {
                let c = index.by_place(token);
                let ping = self.frames.ping.for_conn(c);
                c.delivered(&[ping], result, ping.len());
            });
        }
    }

    /// Says (at debug, once a tick, from the first worker) how many binary
    /// messages event streams did not get since the last time: a log line
    /// per message would cost more than the message.
    fn log_skipped(&self) {
        let now = self.ctx.stats.sse_skipped.load(Relaxed);
        let before = self.skipped_logged.replace(now);
        if self.id == 0 && now > before {
            debug!(
                self.ctx.log,
                "[sse] {} binary messages not sent to event streams (not UTF-8; -ws-envelope would send them as data_base64)",
                now - before
            );
        }
    }

    /// Under `-auth`: closes with 4401 the clients whose token expired
    /// (its `exp` plus the leeway) without a refresh. Runs on the tick, so
    /// a close comes at most a tick late.
    fn close_expired(&self) {
        let Some(auth) = &self.ctx.cfg.auth else {
            return;
        };
        // The clock `exp` is checked by at the upgrade.
        let now = jsonwebtoken::get_current_timestamp();
        let leeway = auth.rules.leeway;
        if now <= self.next_expiry.get().saturating_add(leeway) {
            return;
        }
        let (mut closed, mut next) = (0, u64::MAX);
        for c in self.index.borrow().all() {
            let Some(exp) = c.grant().as_deref().and_then(|g| g.exp) else {
                continue;
            };
            if now <= exp.saturating_add(leeway) {
                next = next.min(exp);
            } else if c.state() == State::Open {
                c.close(self.frames.expired.for_conn(c));
                closed += 1;
            }
        }
        self.next_expiry.set(next);
        if closed > 0 {
            info!(
                self.ctx.log,
                "[auth] worker {}: closed {closed} clients whose token expired (4401)", self.id
            );
        }
    }

    /// Takes note of a client's token expiry (at the upgrade, or a
    /// refresh), for the tick's check.
    pub(crate) fn note_expiry(&self, exp: Option<u64>) {
        if let Some(exp) = exp {
            self.next_expiry.set(self.next_expiry.get().min(exp));
        }
    }

    pub(crate) fn add(&self, c: Rc<Conn>) {
        self.note_expiry(c.grant().as_deref().and_then(|g| g.exp));
        self.index.borrow_mut().add(c);
    }

    /// After a reload: a client that chose channels and reads none of them
    /// any more is closed with 1008; the others go on (what was removed
    /// simply matches no message now).
    pub(crate) fn channels_changed(&self) {
        let channels = self.ctx.channels.get();
        let mut closed = 0;
        for c in self.index.borrow().all() {
            let gone = c
                .selection()
                .as_deref()
                .is_some_and(|sel| !channels.still_reads(sel));
            if gone && c.state() == State::Open {
                c.close(self.frames.removed.for_conn(c));
                closed += 1;
            }
        }
        if closed > 0 {
            info!(
                self.ctx.log,
                "[channels] worker {}: closed {closed} clients whose every channel was removed (1008)",
                self.id
            );
        }
    }

    /// Gives a client a new selection: out of the index and the gauges
    /// under the old one, in under the new.
    pub(crate) fn reselect(&self, c: &Conn, sel: Option<Box<Selection>>) {
        let mut index = self.index.borrow_mut();
        let conn = index.remove(c);
        self.ctx.account(c.selection().as_deref(), c.form(), false);
        c.set_selection(sel);
        self.ctx.account(c.selection().as_deref(), c.form(), true);
        index.add(conn);
    }

    pub(crate) fn remove(&self, c: &Conn) {
        self.index.borrow_mut().remove(c);
        self.ctx.stats.closed();
        self.ctx.account(c.selection().as_deref(), c.form(), false);
    }

    /// Graceful shutdown: every client gets close 1001, then the worker
    /// waits for them to go until the shutdown deadline.
    pub(crate) async fn drain(&self) {
        for c in self.index.borrow().all() {
            c.close(self.frames.going_away.for_conn(c));
        }
        let deadline = Instant::now() + self.ctx.cfg.shutdown_timeout;
        // Clients that never answer the close are dropped by their own
        // task after the grace period, as during normal operation.
        while !self.index.borrow().is_empty() && Instant::now() < deadline {
            sleep(Duration::from_millis(10)).await;
        }
        for c in self.index.borrow().all() {
            c.abort();
        }
    }
}
