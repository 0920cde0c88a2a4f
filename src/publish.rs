//! The HTTP publish endpoint (`-publish-addr`): `POST /publish?channel=NAME`
//! with `Authorization: Bearer <token>` and the payload as the body, for
//! publishers without a Redis client (curl, webhooks).
//!
//! With the embedded broker the message goes straight to this relay's hub
//! and the answer counts the local clients that receive it; with Redis it
//! is PUBLISHed through one kept-open Redis connection, so every relay
//! subscribed to that Redis receives it, and the answer is Redis' count of
//! subscribers. One request per connection (`Connection: close`), served
//! on the main runtime like the metrics endpoint.

use crate::broker::publish_local;
use crate::config::Secret;
use crate::hub::{Drop, Encoder, Hub};
use crate::redis::connect::{ConnectError, RedisStream, Target};
use crate::redis::subscriber::command;
use crate::stats::Stats;
use bytes::BytesMut;
use redis_protocol::resp2::decode::decode_bytes_mut;
use redis_protocol::resp2::types::BytesFrame;
use sha1::{Digest, Sha1};
use slog::{debug, info, Logger};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, Semaphore};
use tokio::time::{timeout, timeout_at, Instant};

/// The one path served.
pub const PATH: &str = "/publish";
/// Requests served at once; past it a connection gets 503.
pub const MAX_CONNECTIONS: usize = 64;
/// Largest request head.
const MAX_HEAD: usize = 8 << 10;
/// Time for the request head to arrive.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Time for the body to arrive, once the head is in.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Time for Redis to answer a PUBLISH.
const REDIS_TIMEOUT: Duration = Duration::from_secs(5);
/// After answering, unread request bytes are drained for this long so
/// that closing does not reset the connection before the client reads
/// the answer.
const LINGER: Duration = Duration::from_secs(1);

/// Where published messages go.
pub enum Sink {
    /// The embedded broker: this relay's own hub.
    Local {
        encoder: Encoder,
        hub: Hub,
        stats: Arc<Stats>,
    },
    /// PUBLISH to Redis, so every relay subscribed there receives it.
    Redis { target: Target },
}

/// Whether `given` is the token, in time that does not depend on where
/// they differ (both are hashed first, so not on the token's length
/// either).
pub fn token_matches(token: &Secret, given: &[u8]) -> bool {
    let a = Sha1::digest(token.expose().as_bytes());
    let b = Sha1::digest(given);
    let diff = a.iter().zip(b.iter()).fold(0u8, |d, (x, y)| d | (x ^ y));
    std::hint::black_box(diff) == 0
}

struct Endpoint {
    token: Secret,
    max_payload: usize,
    sink: State,
    log: Logger,
}

enum State {
    Local {
        encoder: Encoder,
        hub: Hub,
        stats: Arc<Stats>,
    },
    Redis {
        target: Target,
        conn: Mutex<Option<RedisConn>>,
    },
}

/// Serves the endpoint until the task is dropped. Bodies over
/// `max_payload` (`-rs-max-payload`) are refused with 413 before they are
/// read.
pub async fn serve(
    listener: TcpListener,
    token: Secret,
    max_payload: usize,
    sink: Sink,
    log: Logger,
) {
    let sink = match sink {
        Sink::Local {
            encoder,
            hub,
            stats,
        } => State::Local {
            encoder,
            hub,
            stats,
        },
        Sink::Redis { target } => State::Redis {
            target,
            conn: Mutex::new(None),
        },
    };
    let ep = Arc::new(Endpoint {
        token,
        max_payload,
        sink,
        log,
    });
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                debug!(ep.log, "[publish] accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let permit = slots.clone().try_acquire_owned().ok();
        let ep = ep.clone();
        tokio::spawn(async move {
            let early = permit
                .is_none()
                .then(|| Reply::error(503, "too many publish requests at once"));
            handle(stream, peer, &ep, early).await;
            drop(permit);
        });
    }
}

/// An answer, and what to log about it.
struct Reply {
    status: u16,
    extra: &'static str,
    body: String,
}

impl Reply {
    fn json(status: u16, body: serde_json::Value) -> Reply {
        Reply {
            status,
            extra: "",
            body: body.to_string(),
        }
    }

    fn error(status: u16, why: &str) -> Reply {
        Reply::json(status, serde_json::json!({ "error": why }))
    }

    fn with(mut self, header: &'static str) -> Reply {
        self.extra = header;
        self
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        422 => "Unprocessable Content",
        431 => "Request Header Fields Too Large",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// One connection: read the request, answer, close.
async fn handle(mut stream: TcpStream, peer: SocketAddr, ep: &Endpoint, early: Option<Reply>) {
    let (reply, what) = match early {
        Some(r) => (r, String::from("-")),
        None => match exchange(&mut stream, ep).await {
            Some(done) => done,
            None => {
                return debug!(
                    ep.log,
                    "[publish] {peer}: connection ended before a complete request"
                )
            }
        },
    };
    if reply.status == 200 {
        debug!(ep.log, "[publish] {peer}: {what}: 200 {}", reply.body);
    } else {
        info!(
            ep.log,
            "[publish] {peer}: {what}: refused, {} {}", reply.status, reply.body
        );
    }
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{}Connection: close\r\n\r\n",
        reply.status,
        reason(reply.status),
        reply.body.len() + 1,
        reply.extra,
    );
    let mut out = head.into_bytes();
    out.extend_from_slice(reply.body.as_bytes());
    out.push(b'\n');
    let _ = timeout(HEAD_TIMEOUT, async {
        stream.write_all(&out).await?;
        stream.shutdown().await
    })
    .await;
    // Drain what the client still sends (a refused body) until it
    // closes, so that our close does not turn into a reset that could
    // destroy the answer before it is read.
    let deadline = Instant::now() + LINGER;
    let mut sink = [0u8; 8192];
    while let Ok(Ok(n)) = timeout_at(deadline, stream.read(&mut sink)).await {
        if n == 0 {
            break;
        }
    }
}

/// The parts of the request head that matter.
struct Head {
    method: String,
    path: String,
    query: String,
    authorization: Option<Vec<u8>>,
    content_length: Result<Option<usize>, ()>,
    chunked: bool,
    expect_continue: bool,
    /// Bytes after the head (the start of the body).
    rest: Vec<u8>,
}

/// Reads and answers one request; `None` when the client left first.
/// Returns the reply and a description of the request for the log.
async fn exchange(stream: &mut TcpStream, ep: &Endpoint) -> Option<(Reply, String)> {
    let head = match timeout(HEAD_TIMEOUT, read_head(stream)).await {
        Err(_) => return Some((Reply::error(408, "no complete request in time"), "-".into())),
        Ok(Err(reply)) => return Some((reply, "-".into())),
        Ok(Ok(None)) => return None,
        Ok(Ok(Some(head))) => head,
    };
    let what = format!("{} {}", head.method, head.path);
    let reply = match check(&head, ep) {
        Err(reply) => reply,
        Ok((channel, len)) => {
            if head.expect_continue {
                let _ = stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await;
            }
            match timeout(BODY_TIMEOUT, read_body(stream, head.rest, len)).await {
                Err(_) => Reply::error(408, "the body did not arrive in time"),
                Ok(None) => return None,
                Ok(Some(body)) => publish(ep, &channel, &body).await,
            }
        }
    };
    Some((reply, what))
}

/// Reads the request head; `Ok(None)` when the connection ends first.
async fn read_head(stream: &mut TcpStream) -> Result<Option<Head>, Reply> {
    let mut buf = vec![0u8; MAX_HEAD];
    let mut filled = 0;
    loop {
        let n = match stream.read(&mut buf[filled..]).await {
            Ok(0) | Err(_) => return Ok(None),
            Ok(n) => n,
        };
        filled += n;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf[..filled]) {
            Ok(httparse::Status::Complete(len)) => {
                let target = req.path.unwrap_or("");
                let (path, query) = target.split_once('?').unwrap_or((target, ""));
                let mut head = Head {
                    method: req.method.unwrap_or("").to_string(),
                    path: path.to_string(),
                    query: query.to_string(),
                    authorization: None,
                    content_length: Ok(None),
                    chunked: false,
                    expect_continue: false,
                    rest: buf[len..filled].to_vec(),
                };
                for h in req.headers.iter() {
                    let value = h.value;
                    if h.name.eq_ignore_ascii_case("authorization") {
                        head.authorization = Some(value.to_vec());
                    } else if h.name.eq_ignore_ascii_case("content-length") {
                        let n = std::str::from_utf8(value)
                            .ok()
                            .and_then(|v| v.trim().parse::<usize>().ok());
                        head.content_length = match (head.content_length, n) {
                            (Ok(None), Some(n)) => Ok(Some(n)),
                            (Ok(Some(a)), Some(b)) if a == b => Ok(Some(a)),
                            _ => Err(()),
                        };
                    } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                        head.chunked = true;
                    } else if h.name.eq_ignore_ascii_case("expect") {
                        head.expect_continue = value.eq_ignore_ascii_case(b"100-continue");
                    }
                }
                return Ok(Some(head));
            }
            Ok(httparse::Status::Partial) if filled < buf.len() => continue,
            Ok(httparse::Status::Partial) => {
                return Err(Reply::error(431, "request head over 8 KiB"))
            }
            Err(e) => return Err(Reply::error(400, &format!("malformed request: {e}"))),
        }
    }
}

/// Everything that can be refused before the body is read; returns the
/// channel and the body length.
fn check(head: &Head, ep: &Endpoint) -> Result<(Vec<u8>, usize), Reply> {
    if head.path != PATH {
        return Err(Reply::error(404, "try POST /publish?channel=NAME"));
    }
    if head.method != "POST" {
        return Err(Reply::error(405, "POST only").with("Allow: POST\r\n"));
    }
    let bearer = head.authorization.as_deref().and_then(|v| {
        let v = v.trim_ascii();
        let (scheme, token) = v.split_at(v.iter().position(|&b| b == b' ')?);
        scheme
            .eq_ignore_ascii_case(b"bearer")
            .then(|| token.trim_ascii())
            .filter(|t| !t.is_empty())
    });
    let Some(given) = bearer else {
        return Err(Reply::error(401, "missing Authorization: Bearer <token>")
            .with("WWW-Authenticate: Bearer\r\n"));
    };
    if !token_matches(&ep.token, given) {
        return Err(Reply::error(403, "wrong token"));
    }
    if head.chunked {
        return Err(Reply::error(
            411,
            "chunked bodies are not accepted: send Content-Length",
        ));
    }
    let len = match head.content_length {
        Ok(Some(n)) => n,
        Ok(None) => return Err(Reply::error(411, "Content-Length required")),
        Err(()) => return Err(Reply::error(400, "invalid Content-Length")),
    };
    if len > ep.max_payload {
        return Err(Reply::error(
            413,
            &format!(
                "body of {len} bytes over -rs-max-payload ({} bytes)",
                ep.max_payload
            ),
        ));
    }
    let mut channel = None;
    for (name, value) in head.query.split('&').filter_map(|p| p.split_once('=')) {
        if name == "channel" {
            channel = Some(
                crate::channels::percent_decode(value)
                    .ok_or_else(|| Reply::error(400, "malformed channel name in the query"))?,
            );
            break;
        }
    }
    match channel {
        Some(c) if !c.is_empty() => Ok((c, len)),
        _ => Err(Reply::error(400, "missing ?channel=NAME")),
    }
}

/// The body: the bytes that came with the head, then the rest; `None`
/// when the connection ends first.
async fn read_body(stream: &mut TcpStream, mut body: Vec<u8>, len: usize) -> Option<Vec<u8>> {
    body.truncate(len);
    body.reserve_exact(len - body.len());
    while body.len() < len {
        let want = (len - body.len()).min(64 << 10);
        let start = body.len();
        body.resize(start + want, 0);
        match stream.read(&mut body[start..]).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => body.truncate(start + n),
        }
    }
    Some(body)
}

/// Publishes the body and says how it went.
async fn publish(ep: &Endpoint, channel: &[u8], body: &[u8]) -> Reply {
    let name = String::from_utf8_lossy(channel);
    match &ep.sink {
        State::Local {
            encoder,
            hub,
            stats,
        } => {
            // A clone per request: cheap (shared handles, an empty name
            // cache), and no lock between requests.
            let mut encoder = encoder.clone();
            match publish_local(&mut encoder, hub, stats, channel, body).await {
                Ok(n) => Reply::json(200, serde_json::json!({ "channel": name, "delivered": n })),
                Err(Drop::NoSubscriber) => {
                    Reply::error(404, &format!("channel {name} is not relayed here"))
                }
                Err(Drop::NotJson) => {
                    Reply::error(422, "the body is not JSON, and -ws-json-only is set")
                }
                Err(Drop::TooLarge) => Reply::error(
                    413,
                    &format!("body over -rs-max-payload ({} bytes)", ep.max_payload),
                ),
            }
        }
        State::Redis { target, conn } => match publish_redis(target, conn, channel, body).await {
            Ok(n) => Reply::json(
                200,
                serde_json::json!({ "channel": name, "redis_receivers": n }),
            ),
            Err(why) => Reply::error(502, &why),
        },
    }
}

/// The kept-open Redis connection of the endpoint.
struct RedisConn {
    stream: RedisStream,
    buf: BytesMut,
}

/// Why a request on a Redis connection failed.
enum RedisFailure {
    /// The connection broke: worth one retry on a fresh one when it was
    /// an old connection (Redis restarted or dropped it while idle).
    Broken(String),
    /// The connection can no longer be trusted (no answer in time, an
    /// unreadable answer): dropped, no retry (the PUBLISH may have been
    /// done).
    Lost(String),
    /// Redis answered with an error; the connection stays.
    Refused(String),
}

/// Most `MOVED` redirects followed for one cluster publish.
const MAX_REDIRECTS: usize = 3;

/// PUBLISH through the shared connection: made on first use, made again
/// (once) when a kept one turns out to be broken. Requests take turns.
/// With `-rs-cluster` it is SPUBLISH, sent on to the node that owns the
/// channel when the one asked answers `MOVED`.
async fn publish_redis(
    target: &Target,
    conn: &Mutex<Option<RedisConn>>,
    channel: &[u8],
    payload: &[u8],
) -> Result<i64, String> {
    let verb: &[u8] = if target.cluster() {
        b"SPUBLISH"
    } else {
        b"PUBLISH"
    };
    let cmd = command(&[verb, channel, payload]);
    let mut guard = conn.lock().await;
    let mut node: Option<(String, u16)> = None;
    let mut redirects = 0;
    loop {
        let reused = guard.is_some();
        let c = match guard.as_mut() {
            Some(c) => c,
            None => {
                let connecting = match &node {
                    Some((host, port)) => target.connect_to(host, *port).await,
                    None => target.connect().await,
                };
                let stream = connecting.map_err(|e| match e {
                    ConnectError::Io(why) => {
                        format!("Redis at {} is unreachable: {why}", target.describe())
                    }
                    ConnectError::Refused(why) => {
                        format!("Redis at {} refused the relay: {why}", target.describe())
                    }
                })?;
                guard.insert(RedisConn {
                    stream,
                    buf: BytesMut::with_capacity(256),
                })
            }
        };
        match c.request(&cmd).await {
            Ok(n) => return Ok(n),
            Err(RedisFailure::Broken(why)) => {
                *guard = None;
                if !reused {
                    return Err(format!(
                        "connection to Redis at {} lost: {why}",
                        target.describe()
                    ));
                }
            }
            Err(RedisFailure::Lost(why)) => {
                *guard = None;
                return Err(why);
            }
            Err(RedisFailure::Refused(why)) => match moved_to(&why) {
                Some(owner) if redirects < MAX_REDIRECTS => {
                    redirects += 1;
                    node = Some(owner);
                    *guard = None;
                }
                _ => return Err(why),
            },
        }
    }
}

/// The node of a `MOVED <slot> <host>:<port>` answer.
fn moved_to(error: &str) -> Option<(String, u16)> {
    let addr = error.split("MOVED ").nth(1)?.split_whitespace().nth(1)?;
    let (host, port) = addr.rsplit_once(':')?;
    Some((host.to_string(), port.parse().ok()?))
}

impl RedisConn {
    /// Sends one command and reads its integer reply.
    async fn request(&mut self, cmd: &[u8]) -> Result<i64, RedisFailure> {
        let broken = |e: std::io::Error| RedisFailure::Broken(e.to_string());
        self.stream.write_all(cmd).await.map_err(broken)?;
        self.stream.flush().await.map_err(broken)?;
        let frame = timeout(REDIS_TIMEOUT, async {
            loop {
                match decode_bytes_mut(&mut self.buf) {
                    Ok(Some((frame, _, _))) => return Ok(frame),
                    Ok(None) => {}
                    Err(e) => {
                        return Err(RedisFailure::Lost(format!(
                            "unreadable answer from Redis: {e:?}"
                        )))
                    }
                }
                self.buf.reserve(256);
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) => return Err(RedisFailure::Broken("closed by Redis".into())),
                    Ok(_) => {}
                    Err(e) => return Err(broken(e)),
                }
            }
        })
        .await
        .map_err(|_| {
            RedisFailure::Lost(format!("no answer from Redis within {REDIS_TIMEOUT:?}"))
        })??;
        match frame {
            BytesFrame::Integer(n) => Ok(n),
            BytesFrame::Error(e) => Err(RedisFailure::Refused(format!("Redis answered: {e}"))),
            other => Err(RedisFailure::Lost(format!(
                "unexpected answer from Redis: {other:?}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        let t = Secret::new("s3cret".into());
        assert!(token_matches(&t, b"s3cret"));
        for bad in [&b""[..], b"s3cre", b"s3crett", b"S3cret", b"x3cret"] {
            assert!(!token_matches(&t, bad), "{bad:?}");
        }
    }

    #[test]
    fn moved_answers() {
        assert_eq!(
            moved_to("MOVED 3300 127.0.0.1:7001"),
            Some(("127.0.0.1".to_string(), 7001))
        );
        assert_eq!(
            moved_to("Redis answered: MOVED 1 h:2"),
            Some(("h".to_string(), 2))
        );
        assert_eq!(moved_to("ERR nope"), None);
        assert_eq!(moved_to("MOVED 3300"), None);
    }
}
