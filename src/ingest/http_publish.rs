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

use super::encode::Rejected;
use super::handle::Ingest;
use crate::net::accept::Acceptor;
use crate::net::http::{self, Head, HeadError, Response};
use crate::ops::secret::Secret;
use crate::redis::publisher::{Published, Publisher};
use slog::{debug, info, Logger};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{timeout, Instant};

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
/// After answering, unread request bytes are drained for this long so
/// that closing does not reset the connection before the client reads
/// the answer.
const LINGER: Duration = Duration::from_secs(1);

/// Where published messages go.
pub enum Sink {
    /// The embedded broker: this relay's own clients.
    Local(Ingest),
    /// PUBLISH to Redis, so every relay subscribed there receives it.
    Redis(Publisher),
}

struct Endpoint {
    token: Secret,
    max_payload: usize,
    sink: Sink,
    log: Logger,
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
    let ep = Arc::new(Endpoint {
        token,
        max_payload,
        sink,
        log: log.clone(),
    });
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    Acceptor::new(listener, "[publish] accept", log)
        .serve(move |stream, peer| {
            let permit = slots.clone().try_acquire_owned().ok();
            let ep = ep.clone();
            async move {
                let early = permit
                    .is_none()
                    .then(|| error(503, "too many publish requests at once"));
                handle(stream, peer, &ep, early).await;
                drop(permit);
            }
        })
        .await
}

/// A JSON error answer: `{"error": why}`.
fn error(status: u16, why: &str) -> Response {
    Response::json(status, &serde_json::json!({ "error": why }))
}

/// One connection: read the request, answer, close.
async fn handle(mut stream: TcpStream, peer: SocketAddr, ep: &Endpoint, early: Option<Response>) {
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
    let body = String::from_utf8_lossy(&reply.body);
    let body = body.trim_end();
    if reply.status == 200 {
        debug!(ep.log, "[publish] {peer}: {what}: 200 {body}");
    } else {
        info!(
            ep.log,
            "[publish] {peer}: {what}: refused, {} {body}", reply.status
        );
    }
    http::answer_and_close(&mut stream, &reply.to_bytes(), LINGER).await;
}

/// Reads and answers one request; `None` when the client left first.
/// Returns the reply and a description of the request for the log.
async fn exchange(stream: &mut TcpStream, ep: &Endpoint) -> Option<(Response, String)> {
    let deadline = Instant::now() + HEAD_TIMEOUT;
    let head = match http::read_head(stream, MAX_HEAD, deadline).await {
        Ok(head) => head,
        Err(HeadError::Gone) => return None,
        Err(HeadError::TimedOut) => {
            return Some((error(408, "no complete request in time"), "-".into()))
        }
        Err(HeadError::Refused(bad)) => return Some((error(bad.status, &bad.why), "-".into())),
    };
    let what = format!("{} {}", head.method, head.path);
    let reply = match check(&head, &ep.token, ep.max_payload) {
        Err(reply) => reply,
        Ok((channel, len)) => {
            if expects_continue(&head) {
                let _ = stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await;
            }
            match timeout(BODY_TIMEOUT, read_body(stream, head.rest, len)).await {
                Err(_) => error(408, "the body did not arrive in time"),
                Ok(None) => return None,
                Ok(Some(body)) => publish(ep, &channel, &body).await,
            }
        }
    };
    Some((reply, what))
}

fn expects_continue(head: &Head) -> bool {
    head.value("expect")
        .is_some_and(|v| v.eq_ignore_ascii_case(b"100-continue"))
}

/// The one `Content-Length`: `Ok(None)` when there is none, `Err` when it
/// is not a number or repeated with another value.
fn content_length(head: &Head) -> Result<Option<usize>, ()> {
    let mut len = None;
    for v in head.values("content-length") {
        let n = std::str::from_utf8(v)
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .ok_or(())?;
        if len.is_some_and(|l| l != n) {
            return Err(());
        }
        len = Some(n);
    }
    Ok(len)
}

/// The token of `Authorization: Bearer <token>`, if given.
fn bearer(head: &Head) -> Option<&[u8]> {
    let v = head.value("authorization")?.trim_ascii();
    let (scheme, token) = v.split_at(v.iter().position(|&b| b == b' ')?);
    scheme
        .eq_ignore_ascii_case(b"bearer")
        .then(|| token.trim_ascii())
        .filter(|t| !t.is_empty())
}

/// Everything that can be refused before the body is read; returns the
/// channel and the body length.
pub(crate) fn check(
    head: &Head,
    token: &Secret,
    max_payload: usize,
) -> Result<(Vec<u8>, usize), Response> {
    if head.path != PATH {
        return Err(error(404, "try POST /publish?channel=NAME"));
    }
    if head.method != "POST" {
        return Err(error(405, "POST only").header("Allow", "POST"));
    }
    let Some(given) = bearer(head) else {
        return Err(error(401, "missing Authorization: Bearer <token>")
            .header("WWW-Authenticate", "Bearer"));
    };
    if !token.matches(given) {
        return Err(error(403, "wrong token"));
    }
    if head.value("transfer-encoding").is_some() {
        return Err(error(
            411,
            "chunked bodies are not accepted: send Content-Length",
        ));
    }
    let len = match content_length(head) {
        Ok(Some(n)) => n,
        Ok(None) => return Err(error(411, "Content-Length required")),
        Err(()) => return Err(error(400, "invalid Content-Length")),
    };
    if len > max_payload {
        let why = format!("body of {len} bytes over -rs-max-payload ({max_payload} bytes)");
        return Err(error(413, &why));
    }
    match channel(&head.query)? {
        Some(c) if !c.is_empty() => Ok((c, len)),
        _ => Err(error(400, "missing ?channel=NAME")),
    }
}

/// The first `channel=` of the query, percent-decoded.
fn channel(query: &str) -> Result<Option<Vec<u8>>, Response> {
    let Some((_, value)) = query
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(name, _)| *name == "channel")
    else {
        return Ok(None);
    };
    crate::channels::percent_decode(value)
        .map(Some)
        .ok_or_else(|| error(400, "malformed channel name in the query"))
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
async fn publish(ep: &Endpoint, channel: &[u8], body: &[u8]) -> Response {
    let name = String::from_utf8_lossy(channel);
    match &ep.sink {
        Sink::Local(ingest) => {
            // A clone per request: cheap (shared handles, an empty name
            // cache), and no lock between requests.
            match ingest.clone().publish_counted(channel, body).await {
                Ok(n) => {
                    Response::json(200, &serde_json::json!({ "channel": name, "delivered": n }))
                }
                Err(Rejected::NoSubscriber) => {
                    error(404, &format!("channel {name} is not relayed here"))
                }
                Err(Rejected::NotJson) => {
                    error(422, "the body is not JSON, and -ws-json-only is set")
                }
                Err(Rejected::TooLarge) => error(
                    413,
                    &format!("body over -rs-max-payload ({} bytes)", ep.max_payload),
                ),
            }
        }
        Sink::Redis(publisher) => match publisher.publish(channel, body).await {
            Ok(Published::Receivers(n)) => Response::json(
                200,
                &serde_json::json!({ "channel": name, "redis_receivers": n }),
            ),
            Ok(Published::Id(id)) => {
                Response::json(200, &serde_json::json!({ "channel": name, "id": id }))
            }
            Err(why) => error(502, &why),
        },
    }
}
