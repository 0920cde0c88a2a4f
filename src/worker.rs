//! A worker: one thread, one current-thread runtime, one `SO_REUSEPORT`
//! listener, and every connection the kernel hands that listener.
//!
//! The hub sends each encoded frame to every worker once; the worker takes
//! whatever frames are waiting (up to [`MAX_IOV`]) and writes them to each
//! of its clients in one vectored write. Timers are per worker, not per
//! connection: one tick sends pings, drops silent peers and ends closes
//! that take too long.

use crate::channels::{Channels, Selection};
use crate::config::Config;
use crate::config::Io;
use crate::conn::{self, Conn, Delivery, State, TcpReader, TcpWriter, MAX_IOV};
use crate::hub::Message;
use crate::stats::{Stats, WorkerCounters};
use crate::uring;
use crate::ws::deflate;
use crate::ws::frame;
use crate::ws::handshake::{self, Refusal};
use bytes::{Bytes, BytesMut};
use slog::{debug, error, info, warn, Logger};
use std::cell::{Cell, RefCell};
use std::io::IoSlice;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep, timeout, timeout_at};
use tokio_rustls::TlsAcceptor;

/// Pause after a failed `accept` (e.g. EMFILE) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What every worker shares, read-only.
pub struct Context {
    pub cfg: Config,
    pub log: Logger,
    pub tls: Option<TlsAcceptor>,
    pub stats: Arc<Stats>,
}

/// Fills the unused places of the stack arrays of frame references.
static EMPTY: Bytes = Bytes::new();

/// One form of a batch (plain, or as deflate clients get it): the frames,
/// their bytes as write slices, and the byte count.
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
struct Tally {
    deliveries: u64,
    bytes: u64,
}

/// Frames built once per worker and shared by all its clients.
struct Prebuilt {
    ping: Bytes,
    going_away: Bytes,
    slow: Bytes,
}

/// The worker's state, shared by its loop and its connection tasks.
struct Worker {
    ctx: Arc<Context>,
    conns: RefCell<Vec<Rc<Conn>>>,
    frames: Prebuilt,
    next_ping: Cell<Instant>,
    /// The send ring under `-io=uring`; `None` under epoll.
    ring: RefCell<Option<uring::Ring>>,
    /// The sends of the batch being made (kept: its capacity is reused).
    sends: RefCell<Vec<uring::Send>>,
    /// This worker's index in `ctx.stats.workers`.
    id: usize,
}

/// Runs a worker on its own thread until `shutdown` turns true and its
/// clients are closed (or the shutdown deadline passes).
/// A task a worker runs beside its clients (the Redis subscriber runs on
/// worker 0, so that a message goes from Redis to the sockets on one
/// thread).
pub type Task = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

pub fn spawn(
    id: usize,
    listener: std::net::TcpListener,
    frames: mpsc::Receiver<Message>,
    shutdown: watch::Receiver<bool>,
    ctx: Arc<Context>,
    beside: Option<Task>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("worker-{id}"))
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("worker runtime");
            let local = tokio::task::LocalSet::new();
            // Ends with the runtime, when the worker has drained.
            if let Some(task) = beside {
                rt.spawn(task);
            }
            let log = ctx.log.clone();
            let worker = run(id, listener, frames, shutdown, ctx);
            let ended = std::panic::catch_unwind(AssertUnwindSafe(|| local.block_on(&rt, worker)));
            if ended.is_err() {
                // A panic in a connection's task ends only that task; one in
                // the worker's own loop (a bug) would leave its clients and
                // its share of new connections unserved while the process
                // looks alive. Exit instead, for the supervisor to restart.
                error!(
                    log,
                    "[worker] worker {id} failed (see the panic above); exiting"
                );
                std::process::exit(70);
            }
        })
}

async fn run(
    id: usize,
    listener: std::net::TcpListener,
    mut frames: mpsc::Receiver<Message>,
    mut shutdown: watch::Receiver<bool>,
    ctx: Arc<Context>,
) {
    let listener = TcpListener::from_std(listener).expect("listener into tokio");
    let w = Rc::new(Worker::new(id, ctx));
    let mut batch = Vec::with_capacity(MAX_IOV);
    let mut tick = tokio::time::interval(w.tick_period());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut paused_until: Option<tokio::time::Instant> = None;
    let mut accept_failing = false;
    loop {
        tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            n = frames.recv_many(&mut batch, MAX_IOV) => {
                if n == 0 {
                    break;
                }
                w.fan_out(&batch);
                batch.clear();
            }
            _ = tick.tick() => w.housekeeping(),
            accepted = listener.accept(), if paused_until.is_none() => match accepted {
                Ok((stream, addr)) => {
                    accept_failing = false;
                    tokio::task::spawn_local(serve(stream, addr, w.clone()));
                }
                Err(e) => {
                    if !accept_failing {
                        warn!(w.ctx.log, "[accept] failed: {e}; pausing accepts briefly");
                        accept_failing = true;
                    }
                    paused_until = Some(tokio::time::Instant::now() + ACCEPT_BACKOFF);
                }
            },
            _ = async { sleep_until_opt(paused_until).await }, if paused_until.is_some() => {
                paused_until = None;
            }
        }
    }
    drop(listener);
    w.drain().await;
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

async fn sleep_until_opt(t: Option<tokio::time::Instant>) {
    if let Some(t) = t {
        tokio::time::sleep_until(t).await;
    }
}

impl Worker {
    fn new(id: usize, ctx: Arc<Context>) -> Worker {
        let ring = ring(id, &ctx);
        let next_ping = Instant::now() + ctx.cfg.ping_interval.unwrap_or_default();
        Worker {
            ctx,
            conns: RefCell::new(Vec::new()),
            frames: Prebuilt {
                ping: frame::encode(frame::OP_PING, b""),
                going_away: frame::close(1001, "server shutting down"),
                slow: frame::close(1008, "slow consumer: too many bytes waiting"),
            },
            next_ping: Cell::new(next_ping),
            ring: RefCell::new(ring),
            sends: RefCell::new(Vec::new()),
            id,
        }
    }

    fn counters(&self) -> &WorkerCounters {
        &self.ctx.stats.workers[self.id]
    }

    /// A fifth of the ping interval, at most 5 s: fine enough for pings
    /// and pong timeouts, coarse enough that the scan of every connection
    /// (a cache miss each, about 1.5 ms for 19,000 here) costs next to
    /// nothing. Closing handshakes time out in their own tasks.
    fn tick_period(&self) -> Duration {
        let most = Duration::from_secs(5);
        let ping = self.ctx.cfg.ping_interval.unwrap_or(most);
        (ping / 5).clamp(Duration::from_millis(50), most)
    }

    /// Sends a batch of messages to every client. The slices are built
    /// once and every client that takes every channel gets the same ones;
    /// a client that chose channels gets its subset, in order.
    ///
    /// Frames are passed by reference: no reference count (an atomic shared
    /// with the other workers) is touched unless a frame must be queued.
    ///
    /// With a ring (`-io=uring`), the clients that take every channel and
    /// have nothing queued are written in one batch of sends; everyone else
    /// (and everyone under `-io=epoll`) gets a `writev` of their own.
    fn fan_out(&self, batch: &[Message]) {
        let n = batch.len();
        let mut all: [&Bytes; MAX_IOV] = [&EMPTY; MAX_IOV];
        let mut slices = [IoSlice::new(&[]); MAX_IOV];
        let mut total = 0;
        for (i, m) in batch.iter().enumerate() {
            all[i] = &m.frame;
            slices[i] = IoSlice::new(&m.frame);
            total += m.frame.len();
        }
        // The same batch as the deflate clients get it, built only when
        // some message was compressed.
        let mut zall: [&Bytes; MAX_IOV] = [&EMPTY; MAX_IOV];
        let mut zslices = [IoSlice::new(&[]); MAX_IOV];
        let mut ztotal = 0;
        let compressed = batch.iter().any(|m| m.deflated.is_some());
        if compressed {
            for (i, m) in batch.iter().enumerate() {
                let f = m.deflated.as_ref().unwrap_or(&m.frame);
                zall[i] = f;
                zslices[i] = IoSlice::new(f);
                ztotal += f.len();
            }
        }
        let variants = [
            Variant::new(&all[..n], &slices[..n], total),
            Variant::new(&zall[..n], &zslices[..n], ztotal),
        ];
        let which = |c: &Conn| usize::from(compressed && c.deflate());
        let mut tally = Tally::default();
        let conns = self.conns.borrow();
        let mut ring = self.ring.borrow_mut();
        let mut sends = self.sends.borrow_mut();
        for (token, c) in conns.iter().enumerate() {
            let v = &variants[which(c)];
            match (c.selection(), batchable(&ring, c)) {
                (Some(sel), _) => self.deliver_selected(c, sel, batch, &mut tally),
                (None, Some(fd)) => sends.push(uring::Send {
                    fd,
                    message: which(c),
                    token,
                }),
                (None, None) => {
                    let delivery = c.deliver(v.frames, v.slices, v.total);
                    self.record(c, delivery, n, v.total, &mut tally);
                }
            }
        }
        if let Some(ring) = ring.as_mut() {
            let messages = [
                uring::Message::new(variants[0].slices),
                uring::Message::new(variants[1].slices),
            ];
            ring.send_all(&messages, sends.drain(..), |token, result| {
                let c = &conns[token];
                let v = &variants[which(c)];
                let delivery = c.delivered(v.frames, result, v.total);
                self.record(c, delivery, n, v.total, &mut tally);
            });
        }
        self.counters().add(tally.deliveries, tally.bytes);
    }

    /// Sends a client that chose channels the messages of `batch` it wants.
    fn deliver_selected(&self, c: &Conn, sel: &Selection, batch: &[Message], tally: &mut Tally) {
        let mut mine: [&Bytes; MAX_IOV] = [&EMPTY; MAX_IOV];
        let mut mine_slices = [IoSlice::new(&[]); MAX_IOV];
        let (mut k, mut len) = (0, 0);
        for m in batch.iter().filter(|m| sel.wants(m.mask, &m.channel)) {
            let f = match (c.deflate(), &m.deflated) {
                (true, Some(z)) => z,
                _ => &m.frame,
            };
            mine[k] = f;
            mine_slices[k] = IoSlice::new(f);
            len += f.len();
            k += 1;
        }
        if k > 0 {
            let delivery = c.deliver(&mine[..k], &mine_slices[..k], len);
            self.record(c, delivery, k, len, tally);
        }
    }

    /// Counts a delivery of `n` messages (`len` bytes), or closes a client
    /// it left too far behind.
    fn record(&self, c: &Conn, delivery: Delivery, n: usize, len: usize, tally: &mut Tally) {
        match delivery {
            Delivery::Written | Delivery::Queued => {
                tally.deliveries += n as u64;
                tally.bytes += len as u64;
            }
            Delivery::SlowClosed => self.close_slow(c),
            Delivery::Dropped => {}
        }
    }

    /// `None` for a client that takes every channel (the common case, which
    /// then costs no memory and takes the shared fast path).
    fn narrow(&self, sel: Selection) -> Option<Box<Selection>> {
        let everything = sel.keys == self.ctx.cfg.channels.all() && sel.channels.is_empty();
        (!everything).then(|| Box::new(sel))
    }

    fn close_slow(&self, c: &Conn) {
        let waiting = c.waiting();
        c.close_slow(&self.frames.slow);
        let n = self.ctx.stats.slow_closed();
        warn!(self.ctx.log, "{}[slow] closed with 1008: {waiting} bytes waiting, over the {}-byte bound ({n} slow consumers closed so far)",
            c.peer, self.ctx.cfg.queue_bytes);
    }

    /// The per-worker timer: pings, silent peers, overdue closes, counters.
    fn housekeeping(&self) {
        let now = Instant::now();
        let cfg = &self.ctx.cfg;
        let ping_due = cfg.ping_interval.is_some() && now >= self.next_ping.get();
        if let (true, Some(p)) = (ping_due, cfg.ping_interval) {
            self.next_ping.set(now + p);
        }
        let mut queued = 0;
        let conns = self.conns.borrow();
        let mut ring = self.ring.borrow_mut();
        let mut sends = self.sends.borrow_mut();
        for (token, c) in conns.iter().enumerate() {
            queued += c.queued();
            if c.state() != State::Open || cfg.ping_interval.is_none() {
                continue;
            }
            if now.duration_since(c.last_seen()) > cfg.pong_timeout {
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
                        message: 0,
                        token,
                    }),
                    None => c.send_control(&self.frames.ping),
                }
            }
        }
        self.counters().set_queued(queued as u64);
        if let Some(ring) = ring.as_mut() {
            let ping = &self.frames.ping;
            let slices = [IoSlice::new(ping)];
            ring.send_all(
                &[uring::Message::new(&slices)],
                sends.drain(..),
                |token, result| {
                    conns[token].delivered(&[ping], result, ping.len());
                },
            );
        }
    }

    fn add(&self, c: Rc<Conn>) {
        let mut conns = self.conns.borrow_mut();
        c.slot.set(conns.len());
        conns.push(c);
    }

    fn remove(&self, c: &Conn) {
        let mut conns = self.conns.borrow_mut();
        let i = c.slot.get();
        conns.swap_remove(i);
        if let Some(moved) = conns.get(i) {
            moved.slot.set(i);
        }
        drop(conns);
        self.ctx.stats.closed();
        account(&self.ctx, c.selection(), c.deflate(), false);
    }

    /// Graceful shutdown: every client gets close 1001, then the worker
    /// waits for them to go until the shutdown deadline.
    async fn drain(&self) {
        for c in self.conns.borrow().iter() {
            c.close(&self.frames.going_away);
        }
        let deadline = Instant::now() + self.ctx.cfg.shutdown_timeout;
        // Clients that never answer the close are dropped by their own
        // task after the grace period, as during normal operation.
        while !self.conns.borrow().is_empty() && Instant::now() < deadline {
            sleep(Duration::from_millis(10)).await;
        }
        for c in self.conns.borrow().iter() {
            c.abort();
        }
    }
}

/// One accepted socket: TLS (if configured), the upgrade, then the
/// WebSocket connection until it ends.
async fn serve(stream: TcpStream, addr: SocketAddr, w: Rc<Worker>) {
    let _ = stream.set_nodelay(true);
    let ctx = w.ctx.clone();
    let deadline = tokio::time::Instant::now() + ctx.cfg.handshake_timeout;
    match &ctx.tls {
        None => {
            let mut stream = stream;
            let Some(up) = upgrade(&mut stream, addr, &ctx, deadline).await else {
                return;
            };
            let stream = Rc::new(stream);
            let c = Conn::new(
                Some(stream.clone()),
                ctx.cfg.queue_bytes,
                up.peer,
                w.narrow(up.selection),
            )
            .with_deflate(up.deflate);
            let c = Rc::new(c);
            let buf = up.buf;
            let reader = TcpReader(stream.clone());
            // A task of its own: its future holds only what a live client
            // needs, not the handshake's (the task sized for the handshake
            // ends here and frees its memory).
            tokio::task::spawn_local(attach(w, c, reader, TcpWriter(stream), buf));
        }
        Some(acceptor) => {
            let mut tls = match timeout_at(deadline, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => return debug!(ctx.log, "[-][{addr}][tls] handshake failed: {e}"),
                Err(_) => return debug!(ctx.log, "[-][{addr}][tls] handshake timed out"),
            };
            let Some(up) = upgrade(&mut tls, addr, &ctx, deadline).await else {
                return;
            };
            let (reader, writer) = tokio::io::split(tls);
            let c = Conn::new(None, ctx.cfg.queue_bytes, up.peer, w.narrow(up.selection))
                .with_deflate(up.deflate);
            tokio::task::spawn_local(attach(w, Rc::new(c), reader, writer, up.buf));
        }
    }
}

/// Registers an upgraded client with the worker for as long as it lives.
async fn attach<R: conn::Fill, W: AsyncWrite + Unpin>(
    w: Rc<Worker>,
    c: Rc<Conn>,
    reader: R,
    writer: W,
    buf: BytesMut,
) {
    w.add(c.clone());
    let end = conn::run(&c, reader, writer, buf, w.ctx.cfg.max_message).await;
    c.abort();
    w.remove(&c);
    debug!(w.ctx.log, "{}[disconnect] {end:?}", c.peer);
}

/// A client past its handshake.
struct Upgraded {
    /// `[X-Real-IP][remote address]`, for log lines.
    peer: String,
    /// Bytes the client sent right after its request.
    buf: BytesMut,
    /// What it chose to receive.
    selection: Selection,
    /// permessage-deflate agreed.
    deflate: bool,
}

/// Reads the upgrade request within `deadline` and answers it.
async fn upgrade<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    addr: SocketAddr,
    ctx: &Context,
    deadline: tokio::time::Instant,
) -> Option<Upgraded> {
    let mut buf = vec![0u8; handshake::MAX_REQUEST];
    let mut filled = 0;
    let request = timeout_at(deadline, read_request(stream, &mut buf, &mut filled, ctx)).await;
    let admitted = match request {
        Ok(Some(parsed)) => parsed.and_then(|acc| admit(acc, ctx)),
        Ok(None) => {
            debug!(
                ctx.log,
                "[-][{addr}][handshake] connection ended before a complete request"
            );
            return None;
        }
        Err(_) => {
            info!(
                ctx.log,
                "[-][{addr}][handshake] refused: no complete request within {:?}",
                ctx.cfg.handshake_timeout
            );
            ctx.stats.refused(0);
            return None;
        }
    };
    match admitted {
        Ok((acc, selection, deflate)) => {
            let peer = format!("[{}][{addr}]", acc.real_ip.as_deref().unwrap_or("-"));
            let ext = deflate.then_some(deflate::RESPONSE);
            let response = handshake::switching_protocols(&acc.accept, ext);
            let written = timeout_at(deadline, stream.write_all(&response)).await;
            if !matches!(written, Ok(Ok(()))) {
                ctx.stats.closed();
                account(ctx, Some(&selection), deflate, false);
                return None;
            }
            info!(ctx.log, "{peer}[connect] OK");
            let buf = BytesMut::from(&buf[acc.consumed..filled]);
            Some(Upgraded {
                peer,
                buf,
                selection,
                deflate,
            })
        }
        Err(refusal) => {
            let real_ip = refusal.real_ip.as_deref().unwrap_or("-");
            info!(
                ctx.log,
                "[{real_ip}][{addr}][handshake] refused: {} {}", refusal.status, refusal.reason
            );
            ctx.stats.refused(refusal.status);
            answer_and_close(stream, &refusal.response()).await;
            None
        }
    }
}

/// Reads until the request head parses (or fails to); `None` at EOF.
async fn read_request<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut [u8],
    filled: &mut usize,
    ctx: &Context,
) -> Option<Result<handshake::Accepted, Refusal>> {
    loop {
        let n = stream.read(&mut buf[*filled..]).await.ok()?;
        if n == 0 {
            return None;
        }
        *filled += n;
        match handshake::parse(&buf[..*filled], &ctx.cfg.route, &ctx.cfg.origins) {
            Ok(None) => continue,
            Ok(Some(acc)) => return Some(Ok(acc)),
            Err(refusal) => return Some(Err(refusal)),
        }
    }
}

/// After a valid upgrade request: the channels it asks for must be relayed
/// here (404 otherwise) and there must be room (503 otherwise).
fn admit(
    acc: handshake::Accepted,
    ctx: &Context,
) -> Result<(handshake::Accepted, Selection, bool), Refusal> {
    let refuse = |status, why: String| Refusal {
        real_ip: acc.real_ip.clone(),
        ..Refusal::new(status, why)
    };
    let selection = ctx
        .cfg
        .channels
        .select(&acc.query)
        .map_err(|why| refuse(404, why))?;
    if !ctx.stats.try_open(ctx.cfg.max_connections) {
        let why = format!(
            "at capacity: -ws-max-connections is {}",
            ctx.cfg.max_connections
        );
        return Err(refuse(503, why));
    }
    // Counted before the 101 goes out, so that a publish the client could
    // see is never reported as reaching nobody (nor left uncompressed).
    let deflate = ctx.cfg.deflate.is_some() && acc.deflate_offered;
    account(ctx, Some(&selection), deflate, true);
    Ok((acc, selection, deflate))
}

/// Counts a client in (or out of) the per-channel gauges, and among the
/// deflate clients the encoder compresses for.
fn account(ctx: &Context, selection: Option<&Selection>, deflate: bool, joined: bool) {
    let mask = counted_mask(&ctx.cfg.channels, selection);
    ctx.stats.clients_of(mask, joined);
    if deflate {
        ctx.stats.deflate_clients_of(mask, joined);
    }
}

/// The keys a client counts under in the per-channel client gauges.
fn counted_mask(channels: &Channels, selection: Option<&Selection>) -> u64 {
    match selection {
        None => channels.all(),
        Some(sel) => sel
            .channels
            .iter()
            .fold(sel.keys, |m, ch| m | channels.mask_for(ch)),
    }
}

/// Writes an error response, then reads (and drops) what the client still
/// sends for a moment, so that closing does not reset the connection
/// before the client has read the response.
async fn answer_and_close<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, response: &[u8]) {
    let linger = Duration::from_millis(500);
    if timeout(linger, stream.write_all(response)).await.is_err() {
        return;
    }
    let _ = timeout(linger, stream.shutdown()).await;
    let mut sink = [0u8; 1024];
    let _ = timeout(linger, async {
        let mut left = 64 * 1024;
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left -= n.min(left),
            }
        }
    })
    .await;
}
