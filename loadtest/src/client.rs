//! The clients, WebSocket or event stream: a few threads, each a
//! current-thread runtime running one task per client. A client is a
//! tokio `TcpStream`, a [`Reader`] (`ConnState` or `SseState`) and a
//! `pending` buffer that only holds the tail of a frame or event cut by a
//! read: every read goes into the thread's one scratch buffer, so an idle
//! client costs a socket, a task and a few dozen bytes.

use crate::args::Transport;
use crate::conn::{self, ConnState, Processed, Sink};
use crate::procfs;
use crate::shared::Shared;
use crate::sse::{self, SseState};
use crate::wsframe;
use std::cell::RefCell;
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{sleep, timeout};

/// Free room a read gets in the scratch buffer.
const READ_ROOM: usize = 64 * 1024;
/// Largest response head read (the 101, or the 200 of an event stream).
const MAX_RESPONSE: usize = 16 * 1024;

/// Where and how clients connect.
pub struct ClientCfg {
    pub server: SocketAddr,
    /// `Host` header value.
    pub host: String,
    /// Request target: path and query.
    pub target: String,
    /// WebSocket upgrade or event stream.
    pub transport: Transport,
    /// `--spread` and `--spread-from`: client i adds
    /// `channel=<spread_channel>.<FROM + i mod N>`.
    pub spread: Option<(String, usize, usize)>,
    pub origin: Option<String>,
    /// Offer permessage-deflate.
    pub deflate: bool,
    /// Source addresses, used round-robin.
    pub sources: Vec<Ipv4Addr>,
    pub handshake_timeout: Duration,
}

/// Starts `threads` threads that open `clients` connections between them,
/// at most `concurrency` upgrades in flight, and keep them until
/// `shared.stop` is set.
pub fn spawn(
    cfg: Arc<ClientCfg>,
    shared: Arc<Shared>,
    clients: usize,
    threads: usize,
    concurrency: usize,
) -> std::io::Result<Vec<std::thread::JoinHandle<()>>> {
    let permits = (concurrency / threads).max(1);
    (0..threads)
        .map(|t| {
            let (cfg, shared) = (cfg.clone(), shared.clone());
            std::thread::Builder::new()
                .name(format!("clients-{t}"))
                .spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("client runtime");
                    shared.tids.lock().unwrap().push(procfs::gettid());
                    let local = tokio::task::LocalSet::new();
                    local.block_on(&rt, async {
                        let scratch = Rc::new(RefCell::new(Scratch::default()));
                        let sem = Rc::new(Semaphore::new(permits));
                        for i in (t..clients).step_by(threads) {
                            tokio::task::spawn_local(client(
                                i,
                                cfg.clone(),
                                shared.clone(),
                                scratch.clone(),
                                sem.clone(),
                            ));
                        }
                        while !shared.stop.load(Relaxed) {
                            sleep(Duration::from_millis(50)).await;
                        }
                    });
                    // Dropping the runtime drops every task and socket.
                })
        })
        .collect()
}

/// One thread's read buffer and result sink, shared by its clients (one
/// read is handled at a time).
#[derive(Default)]
struct Scratch {
    buf: Vec<u8>,
    sink: Sink,
    /// The data of an event of several `data:` lines, joined.
    joined: Vec<u8>,
}

/// What a connection's bytes are read as, with the state kept between
/// reads: one enum, so that both transports share one read loop and are
/// measured by the same code around the parser.
enum Reader {
    /// WebSocket frames, and the masking-key generator for the replies.
    Ws(ConnState, u32),
    /// An event stream.
    Sse(SseState),
}

impl Reader {
    /// A WebSocket reader for client `i`, each with its own mask sequence.
    fn ws(deflate: bool, i: usize) -> Reader {
        Reader::Ws(
            ConnState::new(deflate),
            (i as u32).wrapping_mul(2_654_435_761) | 1,
        )
    }

    /// Handles the complete frames or events at the front of `buf`, read
    /// now; a WebSocket's replies (pongs, the close echo) go to
    /// `sink.reply`.
    fn process(
        &mut self,
        buf: &[u8],
        run: u64,
        sink: &mut Sink,
        joined: &mut Vec<u8>,
    ) -> Processed {
        match self {
            Reader::Ws(st, mask) => conn::process(buf, now_ns(), run, st, sink, mask),
            Reader::Sse(st) => sse::process(buf, now_ns(), run, st, sink, joined),
        }
    }

    /// Why the connection ended when the server closed it without a
    /// close frame: an event stream has no other way to end, so its
    /// parting comment is named.
    fn eof(&self) -> String {
        match self {
            Reader::Ws(..) => "eof".into(),
            Reader::Sse(st) => st.eof(),
        }
    }

    /// Whether permessage-deflate was agreed, for the report's count of
    /// connections that compress (an event stream never does).
    fn deflate(&self) -> bool {
        matches!(self, Reader::Ws(st, _) if st.deflate)
    }
}

async fn client(
    i: usize,
    cfg: Arc<ClientCfg>,
    sh: Arc<Shared>,
    scratch: Rc<RefCell<Scratch>>,
    sem: Rc<Semaphore>,
) {
    let Ok(permit) = sem.acquire().await else {
        return;
    };
    if sh.stop.load(Relaxed) {
        return;
    }
    let start = Instant::now();
    let src = cfg.sources[i % cfg.sources.len()];
    let opened = timeout(cfg.handshake_timeout, open(&cfg, src, i)).await;
    drop(permit);
    let (stream, pending, reader) = match opened {
        Ok(Ok(ok)) => ok,
        Ok(Err(why)) => {
            sh.c.handshakes_failed.fetch_add(1, Relaxed);
            return Shared::count(&sh.failures, why);
        }
        Err(_) => {
            sh.c.handshakes_failed.fetch_add(1, Relaxed);
            return Shared::count(&sh.failures, "timeout".into());
        }
    };
    sh.handshake_us
        .lock()
        .unwrap()
        .saturating_record(start.elapsed().as_micros() as u64);
    sh.c.handshakes_ok.fetch_add(1, Relaxed);
    sh.c.connected.fetch_add(1, Relaxed);
    if reader.deflate() {
        sh.c.deflate_agreed.fetch_add(1, Relaxed);
    }
    let end = read_loop(&stream, pending, reader, &sh, &scratch).await;
    sh.c.connected.fetch_sub(1, Relaxed);
    sh.c.disconnected.fetch_add(1, Relaxed);
    Shared::count(&sh.ends, end);
}

/// Connects from `src` and opens the stream the transport asks for;
/// returns the stream, the bytes that followed the response head, and
/// the reader for what comes next.
async fn open(
    cfg: &ClientCfg,
    src: Ipv4Addr,
    i: usize,
) -> Result<(TcpStream, Vec<u8>, Reader), String> {
    let mut stream = connect(cfg.server, src).await?;
    let target = target(cfg, i);
    let (pending, reader) = match cfg.transport {
        Transport::Ws => {
            let key = wsframe::key(i as u64 ^ 0x5eed_0000_0000);
            let req =
                wsframe::request(&cfg.host, &target, cfg.origin.as_deref(), &key, cfg.deflate);
            let (buf, head) = exchange(&mut stream, &req, |b| {
                wsframe::check_response(b, &key).map_err(|r| r.to_string())
            })
            .await?;
            let agreed = cfg.deflate && wsframe::deflate_agreed(&buf[..head]);
            (buf[head..].to_vec(), Reader::ws(agreed, i))
        }
        Transport::Sse => {
            let req = sse::request(&cfg.host, &target, cfg.origin.as_deref());
            let (buf, head) = exchange(&mut stream, &req, |b| {
                sse::check_response(b).map_err(|r| r.to_string())
            })
            .await?;
            (buf[head..].to_vec(), Reader::Sse(SseState::default()))
        }
    };
    Ok((stream, pending, reader))
}

/// A socket bound to `src` (see [`bind_address_no_port`]), connected.
async fn connect(server: SocketAddr, src: Ipv4Addr) -> Result<TcpStream, String> {
    let sock = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    bind_address_no_port(&sock);
    sock.bind(SocketAddr::new(src.into(), 0))
        .map_err(|e| format!("bind {src}: {e}"))?;
    let stream = sock
        .connect(server)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Client `i`'s request target: `--url`'s, plus its channel under
/// `--spread`.
fn target(cfg: &ClientCfg, i: usize) -> std::borrow::Cow<'_, str> {
    match &cfg.spread {
        None => std::borrow::Cow::Borrowed(cfg.target.as_str()),
        Some((channel, n, from)) => {
            let sep = if cfg.target.contains('?') { '&' } else { '?' };
            format!("{}{sep}channel={channel}.{}", cfg.target, from + i % n).into()
        }
    }
}

/// Writes `req` and reads until `check` finds a complete, accepted
/// response head at the front of what was read: returns all that was read
/// and the head's length (the rest is the stream's first bytes).
async fn exchange(
    stream: &mut TcpStream,
    req: &[u8],
    check: impl Fn(&[u8]) -> Result<Option<usize>, String>,
) -> Result<(Vec<u8>, usize), String> {
    stream
        .write_all(req)
        .await
        .map_err(|e| format!("write request: {e}"))?;
    let mut buf = Vec::with_capacity(512);
    loop {
        let n = stream
            .read_buf(&mut buf)
            .await
            .map_err(|e| format!("read response: {e}"))?;
        if n == 0 {
            return Err("closed before a complete response".into());
        }
        match check(&buf)? {
            Some(head) => return Ok((buf, head)),
            None if buf.len() >= MAX_RESPONSE => return Err("response head too large".into()),
            None => {}
        }
    }
}

/// `IP_BIND_ADDRESS_NO_PORT`: the port is chosen at `connect`, for the
/// whole 4-tuple, so a source address is not limited to one ephemeral
/// range shared by every destination.
fn bind_address_no_port(sock: &TcpSocket) {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: setsockopt on a valid socket with a c_int option.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// One `recv` into `buf`. A read that does not fill `buf` has emptied
/// the socket's receive queue, so it also clears tokio's readiness flag
/// (by answering `WouldBlock` inside `try_io`): the next `readable()` then
/// waits for the next epoll event instead of costing a second `recv` that
/// would only say `EAGAIN`. Data that arrives meanwhile raises a new edge,
/// which tokio does not lose (its readiness carries a tick).
fn read_some(stream: &TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
    use std::os::fd::AsRawFd;
    let fd = stream.as_raw_fd();
    let mut got = None;
    let r = stream.try_io(tokio::io::Interest::READABLE, || {
        // SAFETY: recv into a buffer we own, of its length.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let n = n as usize;
        got = Some(n);
        if n < buf.len() {
            Err(std::io::ErrorKind::WouldBlock.into())
        } else {
            Ok(n)
        }
    });
    match (got, r) {
        (Some(n), _) => Ok(n),
        (None, Ok(n)) => Ok(n),
        (None, Err(e)) => Err(e),
    }
}

/// Reads until the connection ends; returns why.
async fn read_loop(
    stream: &TcpStream,
    mut pending: Vec<u8>,
    mut reader: Reader,
    sh: &Shared,
    scratch: &RefCell<Scratch>,
) -> String {
    // Frames or events that came with the response head are handled
    // before the first read.
    let mut read_first = pending.is_empty();
    loop {
        if read_first {
            if let Err(e) = stream.readable().await {
                return format!("error: {}", e.kind());
            }
        }
        let mut s = scratch.borrow_mut();
        let Scratch { buf, sink, joined } = &mut *s;
        let p = pending.len();
        if buf.len() < p + READ_ROOM {
            buf.resize(p + READ_ROOM, 0);
        }
        buf[..p].copy_from_slice(&pending);
        let n = if read_first {
            match read_some(stream, &mut buf[p..]) {
                Ok(0) => return reader.eof(),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return format!("error: {}", e.kind()),
            }
        } else {
            read_first = true;
            0
        };
        sink.clear();
        let r = reader.process(&buf[..p + n], sh.run, sink, joined);
        sh.add(sink);
        if !sink.reply.is_empty() {
            // Best effort: a pong or close echo is tiny.
            let _ = stream.try_write(&sink.reply);
        }
        if let Some(end) = r.end {
            return end.to_string();
        }
        pending.clear();
        pending.extend_from_slice(&buf[r.consumed..p + n]);
        if pending.is_empty() && pending.capacity() > 4096 {
            pending = Vec::new();
        }
        if let Some(need) = r.need {
            if buf.len() < need + READ_ROOM {
                buf.resize(need + READ_ROOM, 0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::{self, Stamp};
    use std::io::{Read, Write};
    use std::net::TcpListener;

    /// A fake relay: the first `streams` connections get an event stream
    /// of `events` stamped messages written a few bytes at a time (so the
    /// client reads them cut anywhere), then a parting comment and FIN;
    /// the next one gets a 404.
    fn fake_sse_relay(listener: TcpListener, run: u64, streams: usize, events: u64) {
        for (n, conn) in listener.incoming().enumerate().take(streams + 1) {
            let mut conn = conn.unwrap();
            conn.set_nodelay(true).unwrap();
            let mut req = Vec::new();
            let mut byte = [0u8];
            while !req.ends_with(b"\r\n\r\n") {
                conn.read_exact(&mut byte).unwrap();
                req.push(byte[0]);
            }
            let req = String::from_utf8(req).unwrap();
            assert!(
                req.starts_with("GET /events?channel=x HTTP/1.1\r\n"),
                "{req}"
            );
            assert!(req.contains("\r\nAccept: text/event-stream\r\n"), "{req}");
            if n == streams {
                let _ = conn.write_all(b"HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\n");
                continue;
            }
            let mut out =
                pubsocketd::sse::head::opening(Default::default(), Duration::from_secs(3));
            for seq in 1..=events {
                let mut p = Vec::new();
                let stamp = Stamp {
                    seq,
                    t_ns: now_ns(),
                    run,
                    step: 0,
                };
                payload::encode(&stamp, 128, &mut p);
                pubsocketd::sse::event::write(&mut out, Default::default(), &p);
            }
            out.extend(pubsocketd::sse::event::comment("server shutting down"));
            for piece in out.chunks(37) {
                conn.write_all(piece).unwrap();
                std::thread::sleep(Duration::from_micros(300));
            }
        }
    }

    /// The client end to end over real sockets, without Redis: the request,
    /// the check of the answer, events cut across reads, the count, and the
    /// end named after the relay's parting comment.
    #[test]
    fn sse_clients_read_a_stream_from_a_fake_relay() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let server = listener.local_addr().unwrap();
        let sh = Arc::new(Shared::new(4242));
        let run = sh.run;
        let relay = std::thread::spawn(move || fake_sse_relay(listener, run, 3, 20));
        let cfg = Arc::new(ClientCfg {
            server,
            host: server.to_string(),
            target: "/events?channel=x".into(),
            transport: Transport::Sse,
            spread: None,
            origin: None,
            deflate: false,
            sources: vec![Ipv4Addr::new(127, 0, 0, 2)],
            handshake_timeout: Duration::from_secs(5),
        });
        // One upgrade at a time, so the fourth connection is the refused one.
        let threads = spawn(cfg, sh.clone(), 4, 1, 1).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while sh.c.disconnected.load(Relaxed) + sh.c.handshakes_failed.load(Relaxed) < 4
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        sh.stop.store(true, Relaxed);
        threads.into_iter().for_each(|t| t.join().unwrap());
        relay.join().unwrap();
        let c = &sh.c;
        assert_eq!(c.handshakes_ok.load(Relaxed), 3);
        assert_eq!(c.delivered.load(Relaxed), 60);
        let counts = [&c.order_violations, &c.gaps, &c.foreign].map(|x| x.load(Relaxed));
        assert_eq!(counts, [0, 0, 0]);
        let failures = sh.failures.lock().unwrap().clone();
        assert_eq!(
            failures.into_iter().collect::<Vec<_>>(),
            [("HTTP 404".to_string(), 1)]
        );
        let ends = sh.ends.lock().unwrap().clone();
        let want = ("eof after \": server shutting down\"".to_string(), 3);
        assert_eq!(ends.into_iter().collect::<Vec<_>>(), [want]);
    }
}
