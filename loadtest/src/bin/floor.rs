//! `floor`: the least a relay can do, to measure pubsocketd against.
//!
//! One thread, one Redis SUBSCRIBE connection. The handshake is parsed by
//! hand (httparse), with no route, Origin or version checks. The messages
//! of each Redis read are encoded once into one buffer (all their frames
//! back to back), and that buffer goes to every client in one plain
//! non-blocking `write`. No queues, no pings, no reads from clients, no
//! safety: a client whose socket takes nothing misses those messages; one
//! that takes part of the buffer is dropped (its stream would be cut in
//! the middle of a frame); a failed write drops the client.

use argh::FromArgs;
use bytes::{Buf, BytesMut};
use pubsocketd::redis::resp::{Item, PushReader};
use pubsocketd::ws::{frame, handshake};
use std::cell::{Cell, RefCell};
use std::io::Write;
use std::rc::Rc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{signal, SignalKind};
use tokio::time::{sleep, timeout};

#[derive(FromArgs)]
/// floor: the reference relay for pubsocketd-loadtest. Subscribes to one
/// Redis channel and writes each read's messages, encoded once as
/// WebSocket frames, to every client socket with one non-blocking write:
/// no origin checks, no queues, no pings, no safety. Single-threaded.
struct Args {
    /// address to listen on (default 127.0.0.1:9090)
    #[argh(option, default = "String::from(\"127.0.0.1:9090\")")]
    listen: String,
    /// address of Redis (default 127.0.0.1:6379)
    #[argh(option, default = "String::from(\"127.0.0.1:6379\")")]
    redis: String,
    /// channel to subscribe to (default pubsocketd)
    #[argh(option, default = "String::from(\"pubsocketd\")")]
    channel: String,
    /// fault injection, to check the load generator: drop every Nth message
    /// (default 0: none)
    #[argh(option, default = "0")]
    drop_every: u64,
    /// fault injection, to check the load generator: send every Nth message
    /// after the one that follows it (default 0: none)
    #[argh(option, default = "0")]
    swap_every: u64,
}

/// The fault injection options.
#[derive(Clone, Copy, Default)]
struct Faults {
    drop_every: u64,
    swap_every: u64,
}

/// What happened, printed on SIGTERM/SIGINT.
#[derive(Default)]
struct Counts {
    messages: Cell<u64>,
    writes: Cell<u64>,
    /// Writes the socket took none of (those messages are lost for it).
    would_block: Cell<u64>,
    /// Clients dropped after a partial write.
    partial: Cell<u64>,
    /// Clients dropped after a write error.
    errors: Cell<u64>,
}

type Clients = Rc<RefCell<Vec<std::net::TcpStream>>>;

fn main() {
    let a: Args = argh::from_env();
    let _ = loadtest::procfs::raise_nofile();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let local = tokio::task::LocalSet::new();
    let code = local.block_on(&rt, run(a));
    std::process::exit(code);
}

async fn run(a: Args) -> i32 {
    let listener = match TcpListener::bind(&a.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("floor: cannot listen on {}: {e}", a.listen);
            return 1;
        }
    };
    let addr = listener
        .local_addr()
        .map_or(a.listen.clone(), |x| x.to_string());
    println!("floor listening on {addr}");
    let _ = std::io::stdout().flush();
    let clients: Clients = Rc::default();
    let counts = Rc::new(Counts::default());
    tokio::task::spawn_local(accept(listener, clients.clone()));
    let faults = Faults {
        drop_every: a.drop_every,
        swap_every: a.swap_every,
    };
    if a.drop_every > 0 || a.swap_every > 0 {
        eprintln!(
            "floor: FAULT INJECTION: dropping every {}th message, swapping every {}th (0: never)",
            a.drop_every, a.swap_every
        );
    }
    tokio::task::spawn_local(relay(
        a.redis.clone(),
        a.channel.clone(),
        clients.clone(),
        counts.clone(),
        faults,
    ));
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return 1;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    eprintln!(
        "floor: {} messages relayed in {} writes; {} writes took nothing, {} clients dropped after a partial write, {} after an error; {} clients left",
        counts.messages.get(),
        counts.writes.get(),
        counts.would_block.get(),
        counts.partial.get(),
        counts.errors.get(),
        clients.borrow().len()
    );
    0
}

async fn accept(listener: TcpListener, clients: Clients) {
    loop {
        match listener.accept().await {
            Ok((s, _)) => {
                tokio::task::spawn_local(upgrade(s, clients.clone()));
            }
            // EMFILE and the like: wait a little, do not spin.
            Err(_) => sleep(Duration::from_millis(10)).await,
        }
    }
}

/// Reads the request, answers 101, hands the socket to the client list.
async fn upgrade(mut s: TcpStream, clients: Clients) {
    let _ = s.set_nodelay(true);
    let mut buf = [0u8; 4096];
    let mut n = 0;
    let accept = loop {
        match timeout(Duration::from_secs(10), s.read(&mut buf[n..])).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
            Ok(Ok(k)) => n += k,
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf[..n]) {
            Ok(httparse::Status::Complete(_)) => {
                match req
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-key"))
                {
                    Some(h) => break handshake::accept_key(h.value.trim_ascii()),
                    None => return,
                }
            }
            Ok(httparse::Status::Partial) if n < buf.len() => {}
            _ => return,
        }
    };
    if s.write_all(&handshake::switching_protocols(
        &accept,
        None,
        handshake::Protocol::Original,
    ))
    .await
    .is_err()
    {
        return;
    }
    // Out of the reactor: from now on the socket is only written to.
    if let Ok(std) = s.into_std() {
        clients.borrow_mut().push(std);
    }
}

/// Subscribes and relays, reconnecting after a pause if Redis goes away.
async fn relay(
    redis: String,
    channel: String,
    clients: Clients,
    counts: Rc<Counts>,
    faults: Faults,
) {
    loop {
        if let Err(e) = session(&redis, &channel, &clients, &counts, faults).await {
            eprintln!("floor: redis {redis}: {e}; reconnecting");
        }
        sleep(Duration::from_millis(200)).await;
    }
}

async fn session(
    redis: &str,
    channel: &str,
    clients: &Clients,
    counts: &Counts,
    faults: Faults,
) -> std::io::Result<()> {
    let mut sock = TcpStream::connect(redis).await?;
    sock.set_nodelay(true)?;
    let cmd = format!(
        "*2\r\n$9\r\nSUBSCRIBE\r\n${}\r\n{channel}\r\n",
        channel.len()
    );
    sock.write_all(cmd.as_bytes()).await?;
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut reader = PushReader::new(1 << 30);
    let mut out: Vec<u8> = Vec::with_capacity(64 * 1024);
    // Fault injection: the message count, and a frame held back.
    let mut n: u64 = 0;
    let mut held: Vec<u8> = Vec::new();
    loop {
        if buf.capacity() - buf.len() < 16 * 1024 {
            buf.reserve(64 * 1024);
        }
        if sock.read_buf(&mut buf).await? == 0 {
            return Err(std::io::Error::other("closed by Redis"));
        }
        out.clear();
        let mut messages = 0;
        while let Some(item) = reader
            .next(&mut buf)
            .map_err(|e| std::io::Error::other(e.0))?
        {
            if let Item::Message {
                payload, consumed, ..
            } = item
            {
                let p = &buf[payload];
                let op = if std::str::from_utf8(p).is_ok() {
                    frame::OP_TEXT
                } else {
                    frame::OP_BINARY
                };
                n += 1;
                if faults.drop_every > 0 && n.is_multiple_of(faults.drop_every) {
                    buf.advance(consumed);
                    continue;
                }
                let hold = faults.swap_every > 0 && n.is_multiple_of(faults.swap_every);
                let dest = if hold { &mut held } else { &mut out };
                frame::put_header(dest, op, p.len());
                dest.extend_from_slice(p);
                buf.advance(consumed);
                messages += 1;
                if !hold && !held.is_empty() {
                    out.append(&mut held);
                }
            }
        }
        if out.is_empty() {
            continue;
        }
        counts.messages.set(counts.messages.get() + messages);
        let mut list = clients.borrow_mut();
        counts.writes.set(counts.writes.get() + list.len() as u64);
        list.retain(|c| match (&*c).write(&out) {
            Ok(n) if n == out.len() => true,
            Ok(_) => {
                counts.partial.set(counts.partial.get() + 1);
                false
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                counts.would_block.set(counts.would_block.get() + 1);
                true
            }
            Err(_) => {
                counts.errors.set(counts.errors.get() + 1);
                false
            }
        });
    }
}
