//! The embedded broker (`-broker=embedded`): no Redis at all. A small
//! RESP2 and RESP3 server on `-broker-host:-broker-port` takes `PUBLISH` from the
//! publishers that already speak Redis (`redis-cli`, redis-py,
//! `pubsocketd-publisher`) and feeds the relay's own hub.
//!
//! It is a publishing endpoint, not a Redis server: `PUBLISH`, `PING`,
//! `ECHO`, `HELLO` (2 or 3), `AUTH`, `QUIT`, `SELECT`, `CLIENT
//! SETNAME|SETINFO` and `COMMAND` are answered as Redis answers them, every
//! other command with Redis' "unknown command" error. `PUBLISH` replies
//! with the number of this relay's clients that receive the message.
//!
//! Without `-publish-token` there is no authentication (any `AUTH` is
//! accepted), so the listener binds to loopback by default. With a token,
//! `AUTH <token>` (or `AUTH default <token>`, or `HELLO 3 AUTH default
//! <token>`) must come first, as with Redis' `requirepass`.

use super::encode::Rejected;
use super::handle::Ingest;
use crate::net::accept::Acceptor;
use crate::ops::secret::Secret;
use crate::redis::resp::request::{next_request, ProtocolError};
use crate::redis::resp::write::{self, bulk, error, integer, simple, Proto};
use bytes::{Bytes, BytesMut};
use slog::{debug, info, warn, Logger};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// Broker connections at once; past it a connection gets Redis' "max
/// number of clients reached" error and is closed.
pub const MAX_CONNECTIONS: usize = 256;
/// What a request may take beyond `-rs-max-payload` (command name,
/// channel, framing).
pub const REQUEST_MARGIN: usize = 64 << 10;
const READ_CHUNK: usize = 16 << 10;

/// What the broker needs besides its listener.
pub struct Broker {
    /// Cloned for each connection.
    pub ingest: Ingest,
    /// `-publish-token`: when set, clients AUTH with it before PUBLISH.
    pub token: Option<Secret>,
    /// `-rs-max-payload`: a request may be this plus [`REQUEST_MARGIN`].
    pub max_payload: usize,
}

/// Serves broker connections until the task is dropped.
pub async fn serve(listener: TcpListener, broker: Broker, log: Logger) {
    let broker = Arc::new(broker);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let ids = Arc::new(AtomicU64::new(0));
    let acceptor = Acceptor::new(listener, "[broker] accept", log.clone());
    acceptor
        .serve(move |mut stream, peer| {
            let permit = slots.clone().try_acquire_owned();
            let mut conn = Connection {
                ingest: broker.ingest.clone(),
                broker: broker.clone(),
                authed: broker.token.is_none(),
                proto: Proto::Resp2,
                id: ids.fetch_add(1, Relaxed) + 1,
                peer,
                log: log.clone(),
            };
            async move {
                let Ok(permit) = permit else {
                    info!(conn.log, "[broker] {peer}: refused, {MAX_CONNECTIONS} broker connections already open");
                    let _ = stream.write_all(b"-ERR max number of clients reached\r\n").await;
                    return;
                };
                let _ = stream.set_nodelay(true);
                debug!(conn.log, "[broker] {peer}: connected");
                let end = conn.run(stream).await;
                debug!(conn.log, "[broker] {peer}: disconnected ({end})");
                drop(permit);
            }
        })
        .await
}

/// One publisher's connection.
struct Connection {
    broker: Arc<Broker>,
    ingest: Ingest,
    authed: bool,
    /// RESP2 until a `HELLO 3`.
    proto: Proto,
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
                integer(out, n as i64);
            }
            ("PING", 1) => simple(out, "PONG"),
            ("PING", 2) | ("ECHO", 2) => bulk(out, &args[1]),
            ("AUTH", 2 | 3) => {
                let user = (argc == 3).then(|| &args[1][..]);
                if self.check_auth(user, &args[argc - 1]) {
                    simple(out, "OK");
                } else {
                    error(out, "WRONGPASS", WRONGPASS);
                }
            }
            ("AUTH", n) if n > 3 => error(out, "ERR", "syntax error"),
            ("HELLO", _) => self.hello(&args[1..], out),
            ("QUIT", _) => {
                simple(out, "OK");
                return Next::Close;
            }
            ("SELECT", 2) => match std::str::from_utf8(&args[1]).map(str::parse::<i64>) {
                Ok(Ok(_)) => simple(out, "OK"),
                _ => error(out, "ERR", "value is not an integer or out of range"),
            },
            ("CLIENT", n) if n >= 2 => {
                let sub = String::from_utf8_lossy(&args[1]).to_ascii_uppercase();
                match sub.as_str() {
                    "SETNAME" | "SETINFO" => simple(out, "OK"),
                    "ID" => integer(out, self.id as i64),
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
            ("COMMAND", _) => write::array(out, 0),
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
        match self.ingest.publish_counted(channel, payload).await {
            Ok(n) => n,
            Err(Rejected::NoSubscriber) => {
                debug!(
                    self.log,
                    "[broker] {}: PUBLISH on {}, which no -rs-channel matches: dropped",
                    self.peer,
                    String::from_utf8_lossy(channel)
                );
                0
            }
            Err(Rejected::TooLarge) => {
                warn!(
                    self.log,
                    "[broker] dropped a {}-byte message on {}: over -rs-max-payload ({} bytes)",
                    payload.len(),
                    String::from_utf8_lossy(channel),
                    b.max_payload
                );
                0
            }
            Err(Rejected::NotJson) => {
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
                let matches = token.matches(password);
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

    /// HELLO [protover [AUTH user pass] [SETNAME name]]: switches the
    /// connection to RESP2 or RESP3 (what redis-py 8 and go-redis v9 ask
    /// for first) and describes the server, as Redis does.
    fn hello(&mut self, args: &[Bytes], out: &mut Vec<u8>) {
        let proto = match args
            .first()
            .map(|v| std::str::from_utf8(v).map(str::parse::<i64>))
        {
            None => self.proto,
            Some(Ok(Ok(2))) => Proto::Resp2,
            Some(Ok(Ok(3))) => Proto::Resp3,
            Some(Ok(Ok(_))) => return error(out, "NOPROTO", "unsupported protocol version"),
            Some(_) => {
                return error(
                    out,
                    "ERR",
                    "Protocol version is not an integer or out of range",
                )
            }
        };
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
        self.proto = proto;
        self.describe(out);
    }

    /// HELLO's answer: a map in RESP3, a flat array in RESP2.
    fn describe(&self, out: &mut Vec<u8>) {
        write::map(out, 7, self.proto);
        bulk(out, b"server");
        bulk(out, b"pubsocketd");
        bulk(out, b"version");
        bulk(out, env!("CARGO_PKG_VERSION").as_bytes());
        bulk(out, b"proto");
        integer(out, if self.proto == Proto::Resp3 { 3 } else { 2 });
        bulk(out, b"id");
        integer(out, self.id as i64);
        bulk(out, b"mode");
        bulk(out, b"standalone");
        bulk(out, b"role");
        bulk(out, b"master");
        bulk(out, b"modules");
        write::array(out, 0);
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

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
