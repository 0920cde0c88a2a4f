//! The embedded broker (`-broker=embedded`): no Redis at all. A small
//! RESP2 server on `-broker-host:-broker-port` takes `PUBLISH` from the
//! publishers that already speak Redis (`redis-cli`, redis-py,
//! `pubsocketd-publisher`) and feeds the relay's own hub.
//!
//! It is a publishing endpoint, not a Redis server: `PUBLISH`, `PING`,
//! `ECHO`, `HELLO` (RESP2 only), `AUTH`, `QUIT`, `SELECT`, `CLIENT
//! SETNAME|SETINFO` and `COMMAND` are answered as Redis answers them, every
//! other command with Redis' "unknown command" error. `PUBLISH` replies
//! with the number of this relay's clients that receive the message.
//!
//! Without `-publish-token` there is no authentication (any `AUTH` is
//! accepted), so the listener binds to loopback by default. With a token,
//! `AUTH <token>` (or `AUTH default <token>`, or `HELLO 2 AUTH default
//! <token>`) must come first, as with Redis' `requirepass`.

use crate::config::Secret;
use crate::hub::{Drop, Encoder, Hub};
use crate::stats::Stats;
use bytes::{Buf, Bytes, BytesMut};
use slog::{debug, info, warn, Logger};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// Broker connections at once; past it a connection gets Redis' "max
/// number of clients reached" error and is closed.
pub const MAX_CONNECTIONS: usize = 256;
/// What a request may take beyond `-rs-max-payload` (command name,
/// channel, framing).
pub const REQUEST_MARGIN: usize = 64 << 10;
/// Most arguments in one request (PUBLISH takes 3).
const MAX_ARGS: i64 = 1024;
/// Longest inline command line, as Redis' `PROTO_INLINE_MAX_SIZE`.
const INLINE_MAX: usize = 64 << 10;
/// Longest `*N` or `$N` header line (sign, digits, CRLF).
const MAX_HEADER: usize = 24;
const READ_CHUNK: usize = 16 << 10;

/// What the broker needs.
pub struct Broker {
    /// Cloned for each connection.
    pub encoder: Encoder,
    pub hub: Hub,
    pub stats: Arc<Stats>,
    /// `-publish-token`: when set, clients AUTH with it before PUBLISH.
    pub token: Option<Secret>,
    /// `-rs-max-payload`: a request may be this plus [`REQUEST_MARGIN`].
    pub max_payload: usize,
}

/// Encodes a payload and hands it to every worker; returns the number of
/// local clients that receive it (the count `PUBLISH` and the HTTP
/// endpoint answer). Shared by the broker and the HTTP publish endpoint.
pub async fn publish_local(
    encoder: &mut Encoder,
    hub: &Hub,
    stats: &Stats,
    channel: &[u8],
    payload: &[u8],
) -> Result<u64, Drop> {
    let msg = encoder.encode(channel, payload)?;
    let receivers = stats.clients_for(msg.mask);
    hub.publish(msg).await;
    Ok(receivers)
}

/// Serves broker connections until the task is dropped.
pub async fn serve(listener: TcpListener, broker: Broker, log: Logger) {
    let broker = Arc::new(broker);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let ids = Arc::new(AtomicU64::new(0));
    loop {
        let (mut stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                debug!(log, "[broker] accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            info!(
                log,
                "[broker] {peer}: refused, {MAX_CONNECTIONS} broker connections already open"
            );
            tokio::spawn(async move {
                let _ = stream
                    .write_all(b"-ERR max number of clients reached\r\n")
                    .await;
            });
            continue;
        };
        let _ = stream.set_nodelay(true);
        let mut conn = Connection {
            encoder: broker.encoder.clone(),
            broker: broker.clone(),
            authed: broker.token.is_none(),
            id: ids.fetch_add(1, Relaxed) + 1,
            peer,
            log: log.clone(),
        };
        tokio::spawn(async move {
            debug!(conn.log, "[broker] {peer}: connected");
            let end = conn.run(stream).await;
            debug!(conn.log, "[broker] {peer}: disconnected ({end})");
            drop(permit);
        });
    }
}

/// One publisher's connection.
struct Connection {
    broker: Arc<Broker>,
    encoder: Encoder,
    authed: bool,
    id: u64,
    peer: SocketAddr,
    log: Logger,
}

/// What to do after a command.
enum Next {
    Continue,
    Close,
}

impl Connection {
    /// Reads pipelined commands and answers them until the peer leaves,
    /// sends QUIT or breaks the protocol; returns why it ended.
    async fn run(&mut self, mut stream: TcpStream) -> String {
        let limit = self.broker.max_payload.saturating_add(REQUEST_MARGIN);
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        let mut out = Vec::new();
        loop {
            let mut close = None;
            loop {
                match next_request(&mut buf, limit) {
                    Ok(Some(args)) if args.is_empty() => continue,
                    Ok(Some(args)) => {
                        if let Next::Close = self.command(&args, &mut out).await {
                            close = Some("QUIT".to_string());
                            break;
                        }
                    }
                    Ok(None) if buf.len() > limit => {
                        let e = format!("Protocol error: request over -rs-max-payload ({} bytes) plus {REQUEST_MARGIN}", self.broker.max_payload);
                        error(&mut out, "ERR", &e);
                        close = Some(e);
                        break;
                    }
                    Ok(None) => break,
                    Err(ProtocolError(e)) => {
                        info!(self.log, "[broker] {}: {e}; closing", self.peer);
                        error(&mut out, "ERR", &format!("Protocol error: {e}"));
                        close = Some(format!("protocol error: {e}"));
                        break;
                    }
                }
            }
            if !out.is_empty() {
                if let Err(e) = stream.write_all(&out).await {
                    return e.to_string();
                }
                out.clear();
            }
            if let Some(why) = close {
                let _ = stream.shutdown().await;
                return why;
            }
            buf.reserve(READ_CHUNK);
            match stream.read_buf(&mut buf).await {
                Ok(0) => return "closed by the peer".into(),
                Ok(_) => {}
                Err(e) => return e.to_string(),
            }
        }
    }

    /// Answers one command into `out`.
    async fn command(&mut self, args: &[Bytes], out: &mut Vec<u8>) -> Next {
        let name = String::from_utf8_lossy(&args[0]).to_ascii_uppercase();
        let argc = args.len();
        if !self.authed && !matches!(name.as_str(), "AUTH" | "HELLO" | "QUIT") {
            error(out, "NOAUTH", "Authentication required.");
            return Next::Continue;
        }
        match (name.as_str(), argc) {
            ("PUBLISH", 3) => {
                let n = self.publish(&args[1], &args[2]).await;
                out.extend_from_slice(format!(":{n}\r\n").as_bytes());
            }
            ("PING", 1) => out.extend_from_slice(b"+PONG\r\n"),
            ("PING", 2) | ("ECHO", 2) => bulk(out, &args[1]),
            ("AUTH", 2 | 3) => {
                let user = (argc == 3).then(|| &args[1][..]);
                if self.check_auth(user, &args[argc - 1]) {
                    out.extend_from_slice(b"+OK\r\n");
                } else {
                    error(out, "WRONGPASS", WRONGPASS);
                }
            }
            ("AUTH", n) if n > 3 => error(out, "ERR", "syntax error"),
            ("HELLO", _) => self.hello(&args[1..], out),
            ("QUIT", _) => {
                out.extend_from_slice(b"+OK\r\n");
                return Next::Close;
            }
            ("SELECT", 2) => match std::str::from_utf8(&args[1]).map(str::parse::<i64>) {
                Ok(Ok(_)) => out.extend_from_slice(b"+OK\r\n"),
                _ => error(out, "ERR", "value is not an integer or out of range"),
            },
            ("CLIENT", n) if n >= 2 => {
                let sub = String::from_utf8_lossy(&args[1]).to_ascii_uppercase();
                match sub.as_str() {
                    "SETNAME" | "SETINFO" => out.extend_from_slice(b"+OK\r\n"),
                    "ID" => out.extend_from_slice(format!(":{}\r\n", self.id).as_bytes()),
                    _ => error(
                        out,
                        "ERR",
                        &format!(
                            "unknown subcommand '{}'. Try CLIENT HELP.",
                            String::from_utf8_lossy(&args[1])
                        ),
                    ),
                }
            }
            ("COMMAND", _) => out.extend_from_slice(b"*0\r\n"),
            ("PUBLISH" | "PING" | "ECHO" | "AUTH" | "SELECT" | "CLIENT", _) => error(
                out,
                "ERR",
                &format!(
                    "wrong number of arguments for '{}' command",
                    name.to_ascii_lowercase()
                ),
            ),
            _ => error(out, "ERR", &unknown_command(args)),
        }
        Next::Continue
    }

    /// PUBLISH: the number of local clients that receive the message.
    async fn publish(&mut self, channel: &[u8], payload: &[u8]) -> u64 {
        let b = &self.broker;
        match publish_local(&mut self.encoder, &b.hub, &b.stats, channel, payload).await {
            Ok(n) => n,
            Err(Drop::NoSubscriber) => {
                debug!(
                    self.log,
                    "[broker] {}: PUBLISH on {}, which no -rs-channel matches: dropped",
                    self.peer,
                    String::from_utf8_lossy(channel)
                );
                0
            }
            Err(Drop::TooLarge) => {
                warn!(
                    self.log,
                    "[broker] dropped a {}-byte message on {}: over -rs-max-payload ({} bytes)",
                    payload.len(),
                    String::from_utf8_lossy(channel),
                    b.max_payload
                );
                0
            }
            Err(Drop::NotJson) => {
                warn!(
                    self.log,
                    "[broker] failed to parse JSON; dropped a {}-byte message (-ws-json-only)",
                    payload.len()
                );
                0
            }
        }
    }

    /// Checks AUTH's credentials; a success authenticates the connection
    /// (a failure leaves an earlier success in place, as Redis does).
    fn check_auth(&mut self, user: Option<&[u8]>, password: &[u8]) -> bool {
        let ok = match &self.broker.token {
            // No token: the broker has no authentication; accept any AUTH
            // so that publishers configured with a password still work.
            None => true,
            Some(token) => {
                let matches = crate::publish::token_matches(token, password);
                matches && user.is_none_or(|u| u == b"default")
            }
        };
        if ok {
            self.authed = true;
        } else {
            info!(self.log, "[broker] {}: AUTH refused", self.peer);
        }
        ok
    }

    /// HELLO [protover [AUTH user pass] [SETNAME name]]: RESP2 only.
    fn hello(&mut self, args: &[Bytes], out: &mut Vec<u8>) {
        if let Some(ver) = args.first() {
            match std::str::from_utf8(ver).map(str::parse::<i64>) {
                Ok(Ok(2)) => {}
                Ok(Ok(_)) => return error(out, "NOPROTO", "unsupported protocol version"),
                _ => {
                    return error(
                        out,
                        "ERR",
                        "Protocol version is not an integer or out of range",
                    )
                }
            }
        }
        let mut auth = None;
        let mut i = 1;
        while i < args.len() {
            let opt = String::from_utf8_lossy(&args[i]).to_ascii_uppercase();
            match opt.as_str() {
                "AUTH" if i + 2 < args.len() => {
                    auth = Some((&args[i + 1], &args[i + 2]));
                    i += 3;
                }
                "SETNAME" if i + 1 < args.len() => i += 2,
                _ => {
                    let e = format!(
                        "Syntax error in HELLO option '{}'",
                        String::from_utf8_lossy(&args[i])
                    );
                    return error(out, "ERR", &e);
                }
            }
        }
        if let Some((user, password)) = auth {
            if !self.check_auth(Some(user), password) {
                return error(out, "WRONGPASS", WRONGPASS);
            }
        }
        if !self.authed {
            return error(out, "NOAUTH", "HELLO must be called with the client already authenticated, otherwise the HELLO AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time");
        }
        out.extend_from_slice(b"*14\r\n");
        bulk(out, b"server");
        bulk(out, b"pubsocketd");
        bulk(out, b"version");
        bulk(out, env!("CARGO_PKG_VERSION").as_bytes());
        bulk(out, b"proto");
        out.extend_from_slice(b":2\r\n");
        bulk(out, b"id");
        out.extend_from_slice(format!(":{}\r\n", self.id).as_bytes());
        bulk(out, b"mode");
        bulk(out, b"standalone");
        bulk(out, b"role");
        bulk(out, b"master");
        bulk(out, b"modules");
        out.extend_from_slice(b"*0\r\n");
    }
}

const WRONGPASS: &str = "invalid username-password pair or user is disabled.";

/// Redis' words for a command it does not know.
fn unknown_command(args: &[Bytes]) -> String {
    let mut rest = String::new();
    for a in &args[1..] {
        if rest.len() >= 128 {
            break;
        }
        let a = String::from_utf8_lossy(a);
        let room = 128 - rest.len();
        let a: String = a.chars().take(room).collect();
        rest.push_str(&format!("'{a}' "));
    }
    let name: String = String::from_utf8_lossy(&args[0])
        .chars()
        .take(128)
        .collect();
    format!("unknown command '{name}', with args beginning with: {rest}")
}

/// Appends a bulk string.
fn bulk(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
    out.extend_from_slice(b);
    out.extend_from_slice(b"\r\n");
}

/// Appends an error reply; line breaks become spaces, as Redis does.
fn error(out: &mut Vec<u8>, code: &str, text: &str) {
    out.push(b'-');
    out.extend_from_slice(code.as_bytes());
    out.push(b' ');
    out.extend(
        text.bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.extend_from_slice(b"\r\n");
}

/// Malformed input; the connection is answered and closed.
#[derive(Debug, PartialEq, Eq)]
pub struct ProtocolError(pub String);

fn protocol(why: impl Into<String>) -> ProtocolError {
    ProtocolError(why.into())
}

/// Takes the next complete request off `buf`: its arguments (empty for a
/// blank line or `*0`), or `None` while it is incomplete. Requests are
/// RESP arrays of bulk strings, as clients send them, or inline commands
/// (`PING\r\n`, as typed into telnet), split like Redis splits them. A
/// bulk string longer than `limit` is an error as soon as its header
/// arrives.
pub fn next_request(buf: &mut BytesMut, limit: usize) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    match buf.first() {
        None => Ok(None),
        Some(b'*') => multibulk(buf, limit),
        Some(_) => inline(buf),
    }
}

fn multibulk(buf: &mut BytesMut, limit: usize) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    let Some((n, mut pos)) = header(buf, 1, "invalid multibulk length")? else {
        return Ok(None);
    };
    if n <= 0 {
        buf.advance(pos);
        return Ok(Some(Vec::new()));
    }
    if n > MAX_ARGS {
        return Err(protocol("invalid multibulk length"));
    }
    let mut ranges = Vec::with_capacity(n.min(8) as usize);
    for _ in 0..n {
        match buf.get(pos) {
            None => return Ok(None),
            Some(b'$') => {}
            Some(&c) => {
                return Err(protocol(format!(
                    "expected '$', got '{}'",
                    char::from(c).escape_default()
                )))
            }
        }
        let Some((len, start)) = header(buf, pos + 1, "invalid bulk length")? else {
            return Ok(None);
        };
        if len < 0 || len as u64 > limit as u64 {
            return Err(protocol("invalid bulk length"));
        }
        let end = start + len as usize;
        if buf.len() < end + 2 {
            return Ok(None);
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Err(protocol("expected CRLF after a bulk string"));
        }
        ranges.push(start..end);
        pos = end + 2;
    }
    let frame = buf.split_to(pos).freeze();
    Ok(Some(ranges.into_iter().map(|r| frame.slice(r)).collect()))
}

/// The integer of a `*N\r\n` or `$N\r\n` line whose digits start at
/// `from`, and the offset after its CRLF; `None` while incomplete.
fn header(buf: &[u8], from: usize, what: &str) -> Result<Option<(i64, usize)>, ProtocolError> {
    let window = &buf[from.min(buf.len())..buf.len().min(from + MAX_HEADER)];
    let Some(cr) = window.iter().position(|&b| b == b'\r') else {
        if window.len() >= MAX_HEADER {
            return Err(protocol(what));
        }
        return Ok(None);
    };
    if window.len() < cr + 2 {
        return Ok(None);
    }
    if window[cr + 1] != b'\n' {
        return Err(protocol(what));
    }
    let n = std::str::from_utf8(&window[..cr])
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| protocol(what))?;
    Ok(Some((n, from + cr + 2)))
}

fn inline(buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
        if buf.len() > INLINE_MAX {
            return Err(protocol("too big inline request"));
        }
        return Ok(None);
    };
    if nl > INLINE_MAX {
        return Err(protocol("too big inline request"));
    }
    let line = buf.split_to(nl + 1);
    let line = line.strip_suffix(b"\n").unwrap_or(&line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    split_args(line)
        .map(Some)
        .ok_or_else(|| protocol("unbalanced quotes in request"))
}

/// Splits an inline command line as Redis' `sdssplitargs` does: blanks
/// separate arguments; "double quotes" take \n \r \t \b \a \" \\ and \xHH
/// escapes; 'single quotes' take \'. `None` for unbalanced quotes (or a
/// closing quote not followed by a blank).
pub fn split_args(line: &[u8]) -> Option<Vec<Bytes>> {
    let blank = |c: u8| matches!(c, b' ' | b'\n' | b'\r' | b'\t' | 0 | 0x0b | 0x0c);
    let hex = |c: u8| char::from(c).to_digit(16).map(|d| d as u8);
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while i < line.len() && blank(line[i]) {
            i += 1;
        }
        if i == line.len() {
            return Some(args);
        }
        let mut cur = Vec::new();
        let quote = match line[i] {
            q @ (b'"' | b'\'') => {
                i += 1;
                Some(q)
            }
            _ => None,
        };
        match quote {
            None => {
                while i < line.len() && !blank(line[i]) && line[i] != b'"' && line[i] != b'\'' {
                    cur.push(line[i]);
                    i += 1;
                }
                // A quote right after a word starts a quoted part of the
                // same argument in Redis; keep it simple: refuse it.
                if i < line.len() && !blank(line[i]) {
                    return None;
                }
            }
            Some(q) => loop {
                let c = *line.get(i)?;
                if c == b'\\' && q == b'"' {
                    if let (Some(b'x'), Some(h), Some(l)) = (
                        line.get(i + 1),
                        line.get(i + 2).and_then(|&c| hex(c)),
                        line.get(i + 3).and_then(|&c| hex(c)),
                    ) {
                        cur.push(h << 4 | l);
                        i += 4;
                        continue;
                    }
                    let e = *line.get(i + 1)?;
                    cur.push(match e {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 8,
                        b'a' => 7,
                        other => other,
                    });
                    i += 2;
                } else if c == b'\\' && q == b'\'' && line.get(i + 1) == Some(&b'\'') {
                    cur.push(b'\'');
                    i += 2;
                } else if c == q {
                    i += 1;
                    if i < line.len() && !blank(line[i]) {
                        return None;
                    }
                    break;
                } else {
                    cur.push(c);
                    i += 1;
                }
            },
        }
        args.push(Bytes::from(cur));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(input: &[u8], limit: usize) -> Result<Vec<Vec<String>>, ProtocolError> {
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(args) = next_request(&mut buf, limit)? {
            out.push(
                args.iter()
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect(),
            );
        }
        assert!(buf.is_empty(), "left over: {buf:?}");
        Ok(out)
    }

    const PIPELINE: &[u8] = b"*3\r\n$7\r\nPUBLISH\r\n$4\r\nnews\r\n$5\r\nhe\r\no\r\nPING\r\n*0\r\n\r\n*2\r\n$4\r\nECHO\r\n$0\r\n\r\n  ping  \"a b\\x41\\n\" 'c\\'d'\r\n";

    fn expected() -> Vec<Vec<String>> {
        vec![
            vec!["PUBLISH".into(), "news".into(), "he\r\no".into()],
            vec!["PING".into()],
            vec![],
            vec![],
            vec!["ECHO".into(), "".into()],
            vec!["ping".into(), "a bA\n".into(), "c'd".into()],
        ]
    }

    #[test]
    fn pipelined_requests() {
        assert_eq!(parse_all(PIPELINE, 100).unwrap(), expected());
    }

    #[test]
    fn split_reads_give_the_same_requests() {
        // Every split point, and byte by byte: a partial request is never
        // consumed, a complete one always is.
        for cut in 0..PIPELINE.len() {
            let mut buf = BytesMut::from(&PIPELINE[..cut]);
            let mut got = Vec::new();
            while let Some(args) = next_request(&mut buf, 100).unwrap() {
                got.push(args);
            }
            buf.extend_from_slice(&PIPELINE[cut..]);
            while let Some(args) = next_request(&mut buf, 100).unwrap() {
                got.push(args);
            }
            let got: Vec<Vec<String>> = got
                .iter()
                .map(|a| {
                    a.iter()
                        .map(|a| String::from_utf8_lossy(a).into_owned())
                        .collect()
                })
                .collect();
            assert_eq!(got, expected(), "cut at {cut}");
        }
        let mut buf = BytesMut::new();
        let mut n = 0;
        for b in PIPELINE {
            buf.extend_from_slice(&[*b]);
            while next_request(&mut buf, 100).unwrap().is_some() {
                n += 1;
            }
        }
        assert_eq!(n, expected().len());
    }

    #[test]
    fn protocol_errors() {
        let err = |input: &[u8]| parse_all(input, 10).unwrap_err().0;
        assert_eq!(err(b"*x\r\n"), "invalid multibulk length");
        assert_eq!(err(b"*1\r\nxx\r\n"), "expected '$', got 'x'");
        assert_eq!(err(b"*1\r\n$x\r\n"), "invalid bulk length");
        assert_eq!(err(b"*1\r\n$-1\r\n"), "invalid bulk length");
        assert_eq!(err(b"*2000\r\n"), "invalid multibulk length");
        assert_eq!(
            err(b"*1\r\n$3\r\nabcde"),
            "expected CRLF after a bulk string"
        );
        assert_eq!(err(b"PING \"a\r\n"), "unbalanced quotes in request");
        assert_eq!(err(b"PING \"a\"b\r\n"), "unbalanced quotes in request");
        // Over the limit as soon as the header is known, before the bytes.
        assert_eq!(err(b"*1\r\n$11\r\n"), "invalid bulk length");
        assert_eq!(
            err(b"*1\r\n$1111111111111111111111111"),
            "invalid bulk length"
        );
        let mut long = vec![b'a'; INLINE_MAX + 1];
        assert_eq!(err(&long), "too big inline request");
        long.push(b'\n');
        assert_eq!(err(&long), "too big inline request");
        // Exactly at the limit is fine.
        assert_eq!(
            parse_all(b"*1\r\n$10\r\n0123456789\r\n", 10).unwrap(),
            vec![vec!["0123456789".to_string()]]
        );
    }

    #[test]
    fn inline_splitting() {
        let s = |l: &str| {
            split_args(l.as_bytes()).map(|v| {
                v.iter()
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(
            s("PUBLISH news hello"),
            Some(vec!["PUBLISH".into(), "news".into(), "hello".into()])
        );
        assert_eq!(s("  "), Some(vec![]));
        assert_eq!(s("a \"\" b"), Some(vec!["a".into(), "".into(), "b".into()]));
        assert_eq!(s("a \"\\\"x\\\\\""), Some(vec!["a".into(), "\"x\\".into()]));
        assert_eq!(s("'unterminated"), None);
        assert_eq!(s("\"esc\\"), None);
    }

    #[test]
    fn unknown_command_in_redis_words() {
        let args = [Bytes::from("FOO"), Bytes::from("a"), Bytes::from("b")];
        assert_eq!(
            unknown_command(&args),
            "unknown command 'FOO', with args beginning with: 'a' 'b' "
        );
        assert_eq!(
            unknown_command(&args[..1]),
            "unknown command 'FOO', with args beginning with: "
        );
        let mut out = Vec::new();
        error(&mut out, "ERR", "a\r\nb");
        assert_eq!(out, b"-ERR a  b\r\n");
    }
}
