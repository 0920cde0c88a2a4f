//! One WebSocket client after its handshake: its send queue, its writer and
//! its reader.
//!
//! The worker's fan-out writes a new frame straight to the socket when the
//! client's queue is empty ([`Conn::deliver`]); only what the socket did not
//! take is queued, and the connection's own task drains that queue with
//! vectored writes. So a client that keeps up costs one `writev` per batch
//! of messages and no wake-up of its task; a client that falls behind has
//! a queue bounded in bytes and is closed with 1008 past the bound.
//!
//! Everything here lives on one worker thread (`Rc`, `Cell`, `RefCell`):
//! no lock and no atomic is taken per delivered message.

use crate::auth::verify::Grant;
use crate::channels::Selection;
use crate::fanout::hub::Form;
use crate::ws::decode::{Decoder, Event, Violation};
use crate::ws::frame;
use bytes::{Bytes, BytesMut};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{ready, Context, Poll, Waker};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// Most frames handed to one vectored write.
pub const MAX_IOV: usize = 64;
/// How long a client gets to answer our close frame before the socket is
/// dropped.
pub const CLOSE_GRACE: Duration = Duration::from_secs(3);

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Receiving messages.
    Open,
    /// A close frame is queued or sent; no more messages. Since when.
    Closing(Instant),
    /// Finished or aborted: the task drops the socket.
    Done,
}

/// What [`Conn::deliver`] did with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The socket took every byte.
    Written,
    /// Part or all of it waits in the queue.
    Queued,
    /// The queue went past its bound: the client is being closed (1008).
    SlowClosed,
    /// Not open, or the socket failed.
    Dropped,
}

/// Frames waiting for one client.
#[derive(Default)]
struct Queue {
    frames: VecDeque<Bytes>,
    /// Bytes of the head frame already written.
    sent: usize,
    /// Bytes of the frames behind the head: what counts against the bound
    /// (see [`Queue::over`]).
    waiting: usize,
}

impl Queue {
    fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    fn push(&mut self, frame: Bytes) {
        if !self.frames.is_empty() {
            self.waiting += frame.len();
        }
        self.frames.push_back(frame);
    }

    /// Queues what a write of `written` bytes left of `frames`.
    fn push_rest(&mut self, frames: &[&Bytes], mut written: usize) {
        // One growth for the whole batch, not one per doubling (cachegrind:
        // 2,216 -> 1,638 instructions per client for a queued 16-frame batch).
        self.frames.reserve(frames.len());
        for f in frames {
            if written >= f.len() {
                written -= f.len();
                continue;
            }
            if written > 0 {
                self.sent = written;
                written = 0;
            }
            self.push((*f).clone());
        }
    }

    /// Whether more than `limit` bytes wait behind the frame being written.
    /// One waiting frame may exceed the limit alone: a client that keeps up
    /// still gets messages larger than the bound, even two in a row.
    fn over(&self, limit: usize) -> bool {
        self.waiting > limit && self.frames.len() > 2
    }

    /// Marks `n` bytes from the front as written.
    fn consume(&mut self, mut n: usize) {
        while n > 0 {
            let head = self.frames.front().expect("consumed more than queued");
            let left = head.len() - self.sent;
            if n < left {
                self.sent += n;
                return;
            }
            n -= left;
            self.sent = 0;
            self.frames.pop_front();
            if let Some(next) = self.frames.front() {
                self.waiting -= next.len();
            }
        }
        if self.frames.is_empty() {
            // Hand the ring's memory back: idle clients hold no buffers.
            self.frames = VecDeque::new();
        }
    }

    /// Drops every frame behind a partly written head, keeping the stream
    /// at a frame boundary so that a close frame can follow.
    fn cut_to_head(&mut self) {
        let keep = usize::from(self.sent > 0);
        self.frames.truncate(keep);
        self.waiting = 0;
    }

    /// Fills `out` with the unsent bytes, up to [`MAX_IOV`] frames.
    fn slices<'a>(&'a self, out: &mut [IoSlice<'a>; MAX_IOV]) -> usize {
        let mut n = 0;
        for (i, f) in self.frames.iter().take(MAX_IOV).enumerate() {
            let start = if i == 0 { self.sent } else { 0 };
            out[i] = IoSlice::new(&f[start..]);
            n += 1;
        }
        n
    }
}

/// One client, shared between the worker's fan-out and the client's task.
pub struct Conn {
    /// The plain TCP socket, for writes straight from the fan-out. `None`
    /// under TLS, where every frame goes through the task's encrypter.
    direct: Option<Rc<TcpStream>>,
    queue: RefCell<Queue>,
    state: Cell<State>,
    /// The task's writer, parked until the queue has something.
    writer: Cell<Option<Waker>>,
    /// The task, parked until the connection is aborted.
    watcher: Cell<Option<Waker>>,
    last_seen: Cell<Instant>,
    queue_limit: usize,
    /// Where the worker's fan-out index keeps it (see `fanout::index`).
    pub(crate) place: Cell<usize>,
    /// `[X-Real-IP][remote address]`, for log lines.
    pub peer: Box<str>,
    /// The channels this client chose; `None` for all of them. Changed
    /// only by a `pubsocketd.v1` subscribe or unsubscribe, between batches.
    selection: RefCell<Option<Box<Selection>>>,
    /// What it takes of each message: the WebSocket frame plain or
    /// compressed, the `pubsocketd.v1` envelope, or a Server-Sent Event.
    form: Form,
    /// What its token grants, under `-auth` (a refresh replaces it).
    grant: RefCell<Option<Box<Grant>>>,
}

impl Conn {
    pub fn new(
        direct: Option<Rc<TcpStream>>,
        queue_limit: usize,
        peer: String,
        selection: Option<Box<Selection>>,
    ) -> Conn {
        Conn {
            direct,
            queue: RefCell::default(),
            state: Cell::new(State::Open),
            writer: Cell::new(None),
            watcher: Cell::new(None),
            last_seen: Cell::new(Instant::now()),
            queue_limit,
            place: Cell::new(0),
            peer: peer.into_boxed_str(),
            selection: RefCell::new(selection),
            form: Form::Plain,
            grant: RefCell::new(None),
        }
    }

    /// Sets what the client takes of each message (see [`Form`]).
    pub fn with_form(mut self, form: Form) -> Conn {
        self.form = form;
        self
    }

    pub fn form(&self) -> Form {
        self.form
    }

    /// permessage-deflate was negotiated: it gets the compressed frames,
    /// and its own messages may be compressed.
    pub fn deflate(&self) -> bool {
        matches!(self.form, Form::Deflated | Form::EnvelopeDeflated)
    }

    /// It speaks `pubsocketd.v1`: envelopes and control messages.
    pub fn v1(&self) -> bool {
        matches!(self.form, Form::Envelope | Form::EnvelopeDeflated)
    }

    /// It reads an event stream: no frames either way.
    pub fn sse(&self) -> bool {
        self.form.is_event()
    }

    pub fn with_grant(self, grant: Option<Box<Grant>>) -> Conn {
        *self.grant.borrow_mut() = grant;
        self
    }

    /// What the client's token grants; `None` without `-auth`.
    pub fn grant(&self) -> std::cell::Ref<'_, Option<Box<Grant>>> {
        self.grant.borrow()
    }

    /// A refreshed token's grant.
    pub(crate) fn set_grant(&self, grant: Box<Grant>) {
        *self.grant.borrow_mut() = Some(grant);
    }

    /// The channels this client chose; `None` when it takes them all.
    pub fn selection(&self) -> std::cell::Ref<'_, Option<Box<Selection>>> {
        self.selection.borrow()
    }

    /// Replaces what the client reads (the worker re-files it in its index
    /// around this).
    pub(crate) fn set_selection(&self, sel: Option<Box<Selection>>) {
        *self.selection.borrow_mut() = sel;
    }

    pub fn state(&self) -> State {
        self.state.get()
    }

    pub fn last_seen(&self) -> Instant {
        self.last_seen.get()
    }

    /// Bytes queued for this client (what the socket has not taken yet).
    pub fn queued(&self) -> usize {
        let q = self.queue.borrow();
        q.frames.front().map_or(0, |f| f.len() - q.sent) + q.waiting
    }

    /// Drops everything queued and reopens the connection: for benchmarks
    /// of the fan-out over in-memory (socketless) connections.
    #[doc(hidden)]
    pub fn reset_for_bench(&self) {
        *self.queue.borrow_mut() = Queue::default();
        self.state.set(State::Open);
    }

    /// Bytes waiting behind the frame being written.
    pub fn waiting(&self) -> usize {
        self.queue.borrow().waiting
    }

    /// Sends a batch of message frames. `slices` are the frames' bytes and
    /// `total` their sum, computed once by the caller for all clients.
    pub fn deliver(&self, frames: &[&Bytes], slices: &[IoSlice<'_>], total: usize) -> Delivery {
        if self.state.get() != State::Open {
            return Delivery::Dropped;
        }
        self.bounded(self.send(frames, slices, total))
    }

    /// The socket the fan-out may write this client's next batch to itself
    /// (see [`crate::fanout::uring`]): open, plain TCP, and nothing queued ahead.
    pub fn ready_fd(&self) -> Option<RawFd> {
        let direct = self.direct.as_ref()?;
        let ready = self.state.get() == State::Open && self.queue.borrow().is_empty();
        ready.then(|| direct.as_raw_fd())
    }

    /// Finishes a delivery whose write the caller made on [`Conn::ready_fd`]:
    /// `result` is what that write returned.
    pub fn delivered(
        &self,
        frames: &[&Bytes],
        result: io::Result<usize>,
        total: usize,
    ) -> Delivery {
        self.bounded(self.settle(frames, result, total))
    }

    /// A delivery that left the queue past its bound closes the client.
    fn bounded(&self, delivery: Delivery) -> Delivery {
        if delivery == Delivery::Queued && self.queue.borrow().over(self.queue_limit) {
            return Delivery::SlowClosed;
        }
        delivery
    }

    /// Closes a client that fell behind: what waits is dropped and `close`
    /// (a 1008 frame) takes its place.
    pub fn close_slow(&self, close: &Bytes) {
        self.queue.borrow_mut().cut_to_head();
        self.close(close);
    }

    /// Sends a control frame (pong, ping) in order with the messages.
    pub fn send_control(&self, frame: &Bytes) {
        if self.state.get() == State::Open {
            let slice = [IoSlice::new(frame)];
            self.send(&[frame], &slice, frame.len());
        }
    }

    /// Starts the closing handshake with `close` (a close frame); no
    /// further messages are sent. Does nothing if already closing.
    pub fn close(&self, close: &Bytes) {
        if self.state.get() != State::Open {
            return;
        }
        let slice = [IoSlice::new(close)];
        self.send(&[close], &slice, close.len());
        if self.state.get() == State::Open {
            self.state.set(State::Closing(Instant::now()));
        }
        wake(&self.writer);
        // The task starts the grace period (see `run`).
        wake(&self.watcher);
    }

    /// Ends the connection now; its task drops the socket.
    pub fn abort(&self) {
        self.state.set(State::Done);
        wake(&self.writer);
        wake(&self.watcher);
    }

    /// Writes straight to the socket when nothing is queued, and queues
    /// what it did not take.
    fn send(&self, frames: &[&Bytes], slices: &[IoSlice<'_>], total: usize) -> Delivery {
        let result = match (self.queue.borrow().is_empty(), &self.direct) {
            (true, Some(sock)) => sock.try_write_vectored(slices),
            _ => Err(io::ErrorKind::WouldBlock.into()),
        };
        self.settle(frames, result, total)
    }

    /// Acts on the result of writing `frames` (`total` bytes): done, the
    /// rest queued for the task, or the connection aborted.
    fn settle(&self, frames: &[&Bytes], result: io::Result<usize>, total: usize) -> Delivery {
        let written = match result {
            Ok(n) if n == total => return Delivery::Written,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(_) => {
                self.abort();
                return Delivery::Dropped;
            }
        };
        self.queue.borrow_mut().push_rest(frames, written);
        wake(&self.writer);
        Delivery::Queued
    }

    /// Ready when the writer has something to do: frames to write, or a
    /// close that is fully written. Fails once the connection is aborted.
    fn poll_work(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.state.get() {
            State::Done => Poll::Ready(Err(io::ErrorKind::ConnectionAborted.into())),
            State::Closing(_) => Poll::Ready(Ok(())),
            State::Open if !self.queue.borrow().is_empty() => Poll::Ready(Ok(())),
            State::Open => {
                park(&self.writer, cx);
                Poll::Pending
            }
        }
    }

    /// Writes queued frames until the queue is empty or the socket is full.
    fn poll_drain<W: AsyncWrite + Unpin>(
        &self,
        cx: &mut Context<'_>,
        w: &mut W,
    ) -> Poll<io::Result<()>> {
        loop {
            if self.state.get() == State::Done {
                return Poll::Ready(Err(io::ErrorKind::ConnectionAborted.into()));
            }
            let mut q = self.queue.borrow_mut();
            if q.is_empty() {
                drop(q);
                return Pin::new(&mut *w).poll_flush(cx);
            }
            let mut slices = [IoSlice::new(&[]); MAX_IOV];
            let n = q.slices(&mut slices);
            let written = ready!(Pin::new(&mut *w).poll_write_vectored(cx, &slices[..n]))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            q.consume(written);
        }
    }

    /// Ready once [`Conn::abort`] was called.
    fn poll_aborted(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.state.get() == State::Done {
            return Poll::Ready(());
        }
        park(&self.watcher, cx);
        Poll::Pending
    }

    /// Ready with the time the closing handshake started, once it has.
    fn poll_closing(&self, cx: &mut Context<'_>) -> Poll<Instant> {
        match self.state.get() {
            State::Closing(since) => Poll::Ready(since),
            State::Done => Poll::Ready(Instant::now()),
            State::Open => {
                park(&self.watcher, cx);
                Poll::Pending
            }
        }
    }
}

/// Stores the current task's waker in `slot`, reusing an equivalent one.
fn park(slot: &Cell<Option<Waker>>, cx: &Context<'_>) {
    match slot.take() {
        Some(w) if w.will_wake(cx.waker()) => slot.set(Some(w)),
        _ => slot.set(Some(cx.waker().clone())),
    }
}

fn wake(slot: &Cell<Option<Waker>>) {
    if let Some(w) = slot.take() {
        w.wake();
    }
}

/// How the client's side of a connection ended.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadEnd {
    /// TCP end of stream without a close frame.
    Eof,
    /// The client sent a close frame (answered).
    Closed(Option<u16>),
    /// The client broke the protocol (answered with this close code).
    Violation(u16, &'static str),
    /// A read failed.
    Error(io::ErrorKind),
}

/// Reading side of a transport: appends bytes to a buffer.
///
/// The read goes through a stack chunk inside `poll`, so no buffer is held
/// by an idle connection between reads.
pub trait Fill {
    /// Appends what is readable to `buf`; `Ok(0)` at end of stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>, buf: &mut BytesMut) -> Poll<io::Result<usize>>;
}

/// Size of the stack chunk one read takes at most.
const READ_CHUNK: usize = 4096;

/// The read side of a plain TCP client.
pub struct TcpReader(pub Rc<TcpStream>);

impl Fill for TcpReader {
    /// A read shorter than the chunk has emptied the socket, so it also
    /// clears tokio's readiness: the next call waits for the next epoll
    /// event instead of spending a `recv` that would only say `EAGAIN`
    /// (a pong costs one `recv`, not two). Data arriving in between is not
    /// lost: tokio keeps readiness that changed during the read.
    fn poll_fill(&mut self, cx: &mut Context<'_>, buf: &mut BytesMut) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_read_ready(cx))?;
            // Uninitialised: the kernel writes it, and only what it wrote
            // is read (no 4 KiB memset per read).
            let mut chunk = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
            let mut got = None;
            let fd = self.0.as_raw_fd();
            let r = self.0.try_io(Interest::READABLE, || {
                // SAFETY: `chunk` is a live stack array of exactly READ_CHUNK
                // bytes that nothing else borrows, so the kernel may write
                // up to READ_CHUNK bytes there; `fd` is open because
                // `self.0` (the stream that owns it) is borrowed for the
                // whole call.
                let n = unsafe { libc::recv(fd, chunk.as_mut_ptr().cast(), READ_CHUNK, 0) };
                if n < 0 {
                    return Err(io::Error::last_os_error());
                }
                got = Some(n as usize);
                if (n as usize) < READ_CHUNK {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok(())
            });
            match (got, r) {
                (Some(n), _) => {
                    // SAFETY: recv returned n >= 0, so it initialised the
                    // first n bytes of `chunk` (n <= READ_CHUNK), and `chunk`
                    // outlives `read`.
                    let read =
                        unsafe { std::slice::from_raw_parts(chunk.as_ptr().cast::<u8>(), n) };
                    buf.extend_from_slice(read);
                    return Poll::Ready(Ok(n));
                }
                (None, Err(e)) if e.kind() == io::ErrorKind::WouldBlock => continue,
                (None, Err(e)) => return Poll::Ready(Err(e)),
                (None, Ok(())) => unreachable!("a successful recv sets got"),
            }
        }
    }
}

impl<T: AsyncRead> Fill for tokio::io::ReadHalf<T> {
    fn poll_fill(&mut self, cx: &mut Context<'_>, buf: &mut BytesMut) -> Poll<io::Result<usize>> {
        let mut chunk = [0u8; READ_CHUNK];
        let mut rb = ReadBuf::new(&mut chunk);
        ready!(Pin::new(self).poll_read(cx, &mut rb))?;
        buf.extend_from_slice(rb.filled());
        Poll::Ready(Ok(rb.filled().len()))
    }
}

/// The write side of a plain TCP client, sharing the socket with the
/// fan-out's direct writes.
pub struct TcpWriter(pub Rc<TcpStream>);

impl AsyncWrite for TcpWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write_vectored(bufs) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return Poll::Ready(r),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let sock = socket2::SockRef::from(&*self.0);
        Poll::Ready(sock.shutdown(std::net::Shutdown::Write))
    }
}

/// What a connection does with a client's data message: `(text, body)`
/// (the body of a text message; empty for binary); an error closes the
/// connection with its code. Original clients' messages are ignored. The
/// next frame is read once it is done (an on-demand subscribe waits for
/// Redis), so that a client's messages take effect in order.
pub trait OnMessage {
    fn call(&mut self, text: bool, body: &[u8]) -> impl Future<Output = Result<(), Violation>>;
}

/// Runs a connection until both sides are done: the reader answers the
/// client's frames, the writer drains the queue. `buf` holds bytes the
/// client sent right after its handshake.
pub async fn run<R: Fill, W: AsyncWrite + Unpin>(
    conn: &Conn,
    reader: R,
    writer: W,
    buf: BytesMut,
    max_message: usize,
    on_message: impl OnMessage,
) -> ReadEnd {
    tokio::select! {
        end = exchange(conn, reader, writer, buf, max_message, on_message) => end,
        _ = grace(conn) => {
            conn.abort();
            ReadEnd::Error(io::ErrorKind::TimedOut)
        }
    }
}

/// Ends [`CLOSE_GRACE`] after the closing handshake started: a client that
/// neither answers our close nor takes its bytes is dropped. Only closing
/// connections hold this timer; an open one only parks a waker.
async fn grace(conn: &Conn) {
    let since = poll_fn(|cx| conn.poll_closing(cx)).await;
    // Boxed: a timer inline would add its size (about 250 bytes, measured
    // in RSS) to every connection's task, closing or not.
    Box::pin(tokio::time::sleep_until((since + CLOSE_GRACE).into())).await;
}

/// Reads and writes until the connection ends.
async fn exchange<R: Fill, W: AsyncWrite + Unpin>(
    conn: &Conn,
    reader: R,
    writer: W,
    buf: BytesMut,
    max_message: usize,
    on_message: impl OnMessage,
) -> ReadEnd {
    let read = read_loop(conn, reader, buf, max_message, on_message);
    let write = write_loop(conn, writer);
    tokio::pin!(read, write);
    tokio::select! {
        end = &mut read => {
            // Our answer (close reply or protocol error) still has to go out.
            if conn.state() != State::Open {
                let _ = (&mut write).await;
            }
            end
        }
        written = &mut write => {
            if written.is_err() {
                return ReadEnd::Error(io::ErrorKind::BrokenPipe);
            }
            // Our close is out: wait for the client's close or its EOF,
            // until the grace period ends (or the worker aborts us).
            tokio::select! {
                end = &mut read => end,
                _ = poll_fn(|cx| conn.poll_aborted(cx)) => ReadEnd::Error(io::ErrorKind::TimedOut),
            }
        }
    }
}

/// Writes until the close frame is out (then shuts the write side down) or
/// the connection fails or is aborted.
async fn write_loop<W: AsyncWrite + Unpin>(conn: &Conn, mut w: W) -> io::Result<()> {
    loop {
        poll_fn(|cx| conn.poll_work(cx)).await?;
        poll_fn(|cx| conn.poll_drain(cx, &mut w)).await?;
        if let State::Closing(_) = conn.state() {
            return poll_fn(|cx| Pin::new(&mut w).poll_shutdown(cx)).await;
        }
    }
}

/// Reads and answers client frames until the client closes or errs.
async fn read_loop<R: Fill>(
    conn: &Conn,
    mut r: R,
    mut buf: BytesMut,
    max_message: usize,
    mut on_message: impl OnMessage,
) -> ReadEnd {
    if conn.sse() {
        return discard(r).await;
    }
    let mut decoder = match conn.deflate() {
        true => Decoder::with_deflate(max_message),
        false => Decoder::new(max_message),
    };
    loop {
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(Event::Ping(payload))) => {
                    conn.send_control(&frame::encode(frame::OP_PONG, &payload))
                }
                Ok(Some(Event::Pong)) => {}
                Ok(Some(Event::Message { text, body, .. })) => {
                    if let Err(v) = on_message.call(text, &body).await {
                        conn.close(&frame::close(v.code, v.reason));
                        return ReadEnd::Violation(v.code, v.reason);
                    }
                }
                Ok(Some(Event::Close(code))) => {
                    conn.close(&frame::close(code.unwrap_or(1000), ""));
                    return ReadEnd::Closed(code);
                }
                Ok(None) => break,
                Err(v) => {
                    conn.close(&frame::close(v.code, v.reason));
                    return ReadEnd::Violation(v.code, v.reason);
                }
            }
        }
        if buf.is_empty() {
            // Idle clients hold no read buffer.
            buf = BytesMut::new();
        }
        match poll_fn(|cx| r.poll_fill(cx, &mut buf)).await {
            Ok(0) => return ReadEnd::Eof,
            Ok(_) => conn.last_seen.set(Instant::now()),
            Err(e) => return ReadEnd::Error(e.kind()),
        }
    }
}

/// An event stream's client has nothing to say: what it sends (a second
/// request on the connection, say) is read and dropped, never parsed; its
/// end of stream ends the connection.
async fn discard<R: Fill>(mut r: R) -> ReadEnd {
    loop {
        // Fresh each time: an idle stream holds no read buffer.
        let mut buf = BytesMut::new();
        match poll_fn(|cx| r.poll_fill(cx, &mut buf)).await {
            Ok(0) => return ReadEnd::Eof,
            Ok(_) => {}
            Err(e) => return ReadEnd::Error(e.kind()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(lens: &[usize]) -> Vec<Bytes> {
        lens.iter().map(|n| Bytes::from(vec![1u8; *n])).collect()
    }

    fn refs(frames: &[Bytes]) -> Vec<&Bytes> {
        frames.iter().collect()
    }

    #[test]
    fn queue_counts_only_what_waits_behind_the_head() {
        let mut q = Queue::default();
        q.push_rest(&refs(&frames(&[10, 20, 30])), 4);
        assert_eq!((q.sent, q.waiting, q.frames.len()), (4, 50, 3));
        q.consume(6);
        assert_eq!((q.sent, q.waiting, q.frames.len()), (0, 30, 2));
        q.consume(25);
        assert_eq!((q.sent, q.waiting), (5, 0));
        q.push(Bytes::from_static(b"abc"));
        q.cut_to_head();
        assert_eq!((q.frames.len(), q.waiting), (1, 0));
        q.consume(25);
        assert!(q.is_empty());
        assert_eq!(q.frames.capacity(), 0);
    }

    #[test]
    fn slices_start_inside_the_head() {
        let mut q = Queue::default();
        q.push_rest(&refs(&frames(&[10, 20])), 3);
        let mut out = [IoSlice::new(&[]); MAX_IOV];
        assert_eq!(q.slices(&mut out), 2);
        assert_eq!((out[0].len(), out[1].len()), (7, 20));
    }

    #[test]
    fn big_frames_alone_do_not_count_against_the_bound() {
        let mut q = Queue::default();
        q.push_rest(&refs(&frames(&[1 << 20])), 100);
        assert_eq!(q.waiting, 0);
        q.push(Bytes::from(vec![0u8; 1 << 20]));
        assert!(!q.over(1000), "one big frame may wait behind the head");
        q.push(Bytes::from_static(b"x"));
        assert!(q.over(1000));
        assert!(!q.over(2 << 20));
    }
}
