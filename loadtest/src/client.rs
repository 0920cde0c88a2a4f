//! The WebSocket clients: a few threads, each a current-thread runtime
//! running one task per client. A client is a tokio `TcpStream`, a
//! `ConnState` and a `pending` buffer that only holds the tail of a frame
//! cut by a read: every read goes into the thread's one scratch buffer, so
//! an idle client costs a socket, a task and a few dozen bytes.

use crate::conn::{self, ConnState, Sink};
use crate::procfs;
use crate::shared::Shared;
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
/// Largest upgrade response read.
const MAX_RESPONSE: usize = 16 * 1024;

/// Where and how clients connect.
pub struct ClientCfg {
    pub server: SocketAddr,
    /// `Host` header value.
    pub host: String,
    /// Request target: path and query.
    pub target: String,
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
    let upgraded = timeout(cfg.handshake_timeout, upgrade(&cfg, src, i)).await;
    drop(permit);
    let (stream, pending, deflate) = match upgraded {
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
    if deflate {
        sh.c.deflate_agreed.fetch_add(1, Relaxed);
    }
    let end = read_loop(&stream, pending, deflate, &sh, &scratch, i).await;
    sh.c.connected.fetch_sub(1, Relaxed);
    sh.c.disconnected.fetch_add(1, Relaxed);
    Shared::count(&sh.ends, end);
}

/// Connects from `src` and upgrades; returns the stream, the bytes that
/// followed the 101 response, and whether permessage-deflate was agreed.
async fn upgrade(
    cfg: &ClientCfg,
    src: Ipv4Addr,
    i: usize,
) -> Result<(TcpStream, Vec<u8>, bool), String> {
    let sock = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    bind_address_no_port(&sock);
    sock.bind(SocketAddr::new(src.into(), 0))
        .map_err(|e| format!("bind {src}: {e}"))?;
    let mut stream = sock
        .connect(cfg.server)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let key = wsframe::key(i as u64 ^ 0x5eed_0000_0000);
    let target = match &cfg.spread {
        None => std::borrow::Cow::Borrowed(cfg.target.as_str()),
        Some((channel, n, from)) => {
            let sep = if cfg.target.contains('?') { '&' } else { '?' };
            format!("{}{sep}channel={channel}.{}", cfg.target, from + i % n).into()
        }
    };
    let req = wsframe::request(&cfg.host, &target, cfg.origin.as_deref(), &key, cfg.deflate);
    stream
        .write_all(&req)
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
        match wsframe::check_response(&buf, &key) {
            Ok(Some(head)) => {
                let agreed = cfg.deflate && wsframe::deflate_agreed(&buf[..head]);
                return Ok((stream, buf[head..].to_vec(), agreed));
            }
            Ok(None) if buf.len() >= MAX_RESPONSE => return Err("response head too large".into()),
            Ok(None) => {}
            Err(r) => return Err(r.to_string()),
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
    deflate: bool,
    sh: &Shared,
    scratch: &RefCell<Scratch>,
    i: usize,
) -> String {
    let mut st = ConnState::new(deflate);
    let mut mask = (i as u32).wrapping_mul(2_654_435_761) | 1;
    // Frames that came with the 101 are handled before the first read.
    let mut read_first = pending.is_empty();
    loop {
        if read_first {
            if let Err(e) = stream.readable().await {
                return format!("error: {}", e.kind());
            }
        }
        let mut s = scratch.borrow_mut();
        let Scratch { buf, sink } = &mut *s;
        let p = pending.len();
        if buf.len() < p + READ_ROOM {
            buf.resize(p + READ_ROOM, 0);
        }
        buf[..p].copy_from_slice(&pending);
        let n = if read_first {
            match read_some(stream, &mut buf[p..]) {
                Ok(0) => return "eof".into(),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return format!("error: {}", e.kind()),
            }
        } else {
            read_first = true;
            0
        };
        sink.clear();
        let r = conn::process(&buf[..p + n], now_ns(), sh.run, &mut st, sink, &mut mask);
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
