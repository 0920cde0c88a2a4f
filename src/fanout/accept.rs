//! From an accepted socket to a registered client: TLS (when configured),
//! the upgrade request read within its deadline, the admission checks
//! (channels, capacity), the 101, and then the client's own task, which
//! the worker knows for as long as the client lives.

use super::authorize;
use super::conn::{self, Conn, TcpReader, TcpWriter};
use super::context::Context;
use super::control;
use super::hub::Form;
use super::older::Older;
use super::resume::{self, Asked};
use super::worker::Worker;
use crate::auth::verify::Grant;
use crate::channels::{Channels, Selection};
use crate::history::id::Id;
use crate::history::since::{self, Point, Resume};
use crate::net::client_ip::Claimed;
use crate::net::http;
use crate::sse::head;
use crate::ws::decode::Violation;
use crate::ws::deflate;
use crate::ws::handshake::{self, Protocol, Refusal};
use bytes::{Bytes, BytesMut};
use slog::{debug, info};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout_at;

/// A `pubsocketd.v1` client sent a binary message: control messages are
/// JSON text.
const BINARY_CONTROL: Violation = Violation {
    code: 1003,
    reason: "control messages are JSON text",
};

/// How long a refused client gets to read its answer before the close.
const REFUSAL_LINGER: Duration = Duration::from_millis(500);

/// One accepted socket: TLS (if configured), the upgrade, then the
/// WebSocket connection until it ends.
pub(crate) async fn serve(stream: TcpStream, addr: SocketAddr, w: Rc<Worker>) {
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
                up.selection,
            )
            .with_form(up.form)
            .with_grant(up.grant);
            let c = Rc::new(c);
            let buf = up.buf;
            let reader = TcpReader(stream.clone());
            // A task of its own: its future holds only what a live client
            // needs, not the handshake's (the task sized for the handshake
            // ends here and frees its memory).
            let older = w.older_for(&up.resume, up.form).await;
            join(&w, &c, up.resume, older, up.around);
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
            let c = Conn::new(None, ctx.cfg.queue_bytes, up.peer, up.selection)
                .with_form(up.form)
                .with_grant(up.grant);
            let c = Rc::new(c);
            let older = w.older_for(&up.resume, up.form).await;
            join(&w, &c, up.resume, older, up.around);
            tokio::task::spawn_local(attach(w, c, reader, writer, up.buf));
        }
    }
}

/// Registers an upgraded client with the worker, and replays what its
/// `since` asked for, in one step (no batch comes in between). Done before
/// the client's task is spawned, so that the task's future (one per client,
/// for its whole life) holds nothing of it. `around`: an event stream's
/// `Last-Event-ID`, which also places its other channels.
fn join(w: &Worker, c: &Rc<Conn>, asked: Asked, older: Vec<Older>, around: Option<(Bytes, Id)>) {
    w.add(c.clone());
    if !asked.is_empty() {
        w.resume(c, &asked, older);
    }
    if let Some((channel, id)) = around {
        w.resume_around(c, &channel, id);
    }
}

/// Serves a registered client for as long as it lives.
async fn attach<R: conn::Fill, W: AsyncWrite + Unpin>(
    w: Rc<Worker>,
    c: Rc<Conn>,
    reader: R,
    writer: W,
    buf: BytesMut,
) {
    let max = w.ctx.cfg.max_message;
    let on_message = Messages { w: &w, c: &c };
    let end = conn::run(&c, reader, writer, buf, max, on_message).await;
    c.abort();
    w.remove(&c);
    debug!(w.ctx.log, "{}[disconnect] {end:?}", c.peer);
}

/// A client's data messages: ignored from the original's clients, control
/// messages from `pubsocketd.v1` ones.
struct Messages<'a> {
    w: &'a Worker,
    c: &'a Conn,
}

impl conn::OnMessage for Messages<'_> {
    async fn call(&mut self, text: bool, body: &[u8]) -> Result<(), Violation> {
        let result = match (self.c.v1(), text) {
            (false, _) => Ok(()),
            (true, false) => Err(BINARY_CONTROL),
            // Boxed: only a control message pays for the room its wait
            // takes, not every connection's task.
            (true, true) => Box::pin(control::apply(self.w, self.c, body)).await,
        };
        if let Err(v) = &result {
            info!(
                self.w.ctx.log,
                "{}[control] closed with {}: {}", self.c.peer, v.code, v.reason
            );
        }
        result
    }
}

/// A client past its handshake.
struct Upgraded {
    /// `[client][remote address]`, for log lines.
    peer: String,
    /// Bytes the client sent right after its request.
    buf: BytesMut,
    /// What it chose to receive.
    selection: Option<Box<Selection>>,
    /// What it takes of each message (deflate, `pubsocketd.v1`, events).
    form: Form,
    /// What its token grants (`-auth`).
    grant: Option<Box<Grant>>,
    /// What its `since` asked to replay.
    resume: Asked,
    /// An event stream's `Last-Event-ID` (see [`join`]).
    around: Option<(Bytes, Id)>,
}

/// `[client][peer address]` for log lines: the client's address when a
/// trusted proxy vouched for it (`-ws-trusted-proxies`), else `-`.
fn peer_label(claimed: &Claimed, addr: SocketAddr, ctx: &Context) -> String {
    let client = claimed.resolve(addr.ip(), &ctx.cfg.trusted_proxies);
    match client.forwarded {
        true => format!("[{}][{addr}]", client.ip),
        false => format!("[-][{addr}]"),
    }
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
        Ok(Some(Ok(acc))) if acc.sse.as_ref().is_some_and(|s| s.preflight) => {
            let response = head::preflight(cors(&acc, ctx));
            debug!(ctx.log, "[-][{addr}][handshake] CORS preflight answered");
            http::answer_and_close(stream, &response, REFUSAL_LINGER).await;
            return None;
        }
        Ok(Some(Ok(acc))) => admit(acc, ctx, addr, deadline).await,
        Ok(Some(Err(refusal))) => Err(refusal),
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
    let admitted = match admitted {
        Ok(ok) => confirmed(ok, ctx, deadline).await,
        Err(refusal) => Err(refusal),
    };
    match admitted {
        Ok(Admitted {
            acc,
            selection,
            form,
            grant,
            resume,
            around,
        }) => {
            let peer = peer_label(&acc.claimed, addr, ctx);
            let response = answer(&acc, form, ctx);
            let written = timeout_at(deadline, stream.write_all(&response)).await;
            if !matches!(written, Ok(Ok(()))) {
                ctx.stats.closed();
                ctx.account(selection.as_deref(), form, false);
                return None;
            }
            let how = if form.is_event() { " (events)" } else { "" };
            match grant.as_ref().and_then(|g| g.sub.as_ref()) {
                Some(sub) => info!(ctx.log, "{peer}[connect] OK{how} sub={sub:?}"),
                None => info!(ctx.log, "{peer}[connect] OK{how}"),
            }
            let buf = BytesMut::from(&buf[acc.consumed..filled]);
            Some(Upgraded {
                peer,
                buf,
                selection,
                form,
                grant,
                resume,
                around,
            })
        }
        Err(refusal) => {
            let peer = peer_label(&refusal.claimed, addr, ctx);
            info!(
                ctx.log,
                "{peer}[handshake] refused: {} {}", refusal.status, refusal.reason
            );
            ctx.stats.refused(refusal.status);
            http::answer_and_close(stream, &refusal.response(), REFUSAL_LINGER).await;
            None
        }
    }
}

/// What opens the connection: the 101 of an upgrade, or the `200` of an
/// event stream (with CORS for an allowed origin).
fn answer(acc: &handshake::Accepted, form: Form, ctx: &Context) -> Vec<u8> {
    if form.is_event() {
        ctx.stats.sse_accepted.fetch_add(1, Relaxed);
        return head::opening(cors(acc, ctx), ctx.cfg.sse_retry);
    }
    let ext = form.deflate().then_some(deflate::RESPONSE);
    handshake::switching_protocols(&acc.accept, ext, acc.protocol)
}

/// The CORS answer to an event stream's origin (already allowed).
fn cors<'a>(acc: &'a handshake::Accepted, ctx: &Context) -> head::Cors<'a> {
    head::Cors {
        origin: acc.origin.as_deref(),
        credentials: ctx.cfg.auth.as_ref().is_some_and(|a| a.cookie.is_some()),
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
        let routes = handshake::Routes {
            ws: &ctx.cfg.route,
            sse: &ctx.cfg.sse_route,
        };
        match handshake::parse(&buf[..*filled], routes, &ctx.cfg.origins) {
            Ok(None) => continue,
            Ok(Some(acc)) => return Some(Ok(acc)),
            Err(refusal) => return Some(Err(refusal)),
        }
    }
}

/// An admitted client.
struct Admitted {
    acc: handshake::Accepted,
    selection: Option<Box<Selection>>,
    form: Form,
    grant: Option<Box<Grant>>,
    resume: Asked,
    around: Option<(Bytes, Id)>,
}

/// Under `-rs-on-demand`, waits (within the handshake's deadline) until
/// Redis confirmed the channels the client asked for, so that whatever is
/// published after the 101 reaches it; else `503`, and the client is
/// counted out again.
async fn confirmed(
    admitted: Admitted,
    ctx: &Context,
    deadline: tokio::time::Instant,
) -> Result<Admitted, Refusal> {
    let a = &admitted;
    let wanted = a.selection.as_ref().map_or(&[][..], |s| &s.channels[..]);
    let Some(demand) = ctx.demand.as_ref().filter(|_| !wanted.is_empty()) else {
        return Ok(admitted);
    };
    if timeout_at(deadline, demand.confirmed(wanted)).await.is_ok() {
        return Ok(admitted);
    }
    ctx.stats.closed();
    ctx.account(a.selection.as_deref(), a.form, false);
    let why = "Redis did not confirm the subscription within -ws-handshake-timeout";
    Err(Refusal {
        claimed: a.acc.claimed.clone(),
        ..Refusal::new(503, why.to_string())
    })
}

/// After a valid upgrade request: under `-auth` a valid token or the
/// auth URL's yes (401, 403 or 503 otherwise); the channels it asks for
/// must be relayed here (404 otherwise) and granted (403); and there must
/// be room (503).
async fn admit(
    acc: handshake::Accepted,
    ctx: &Context,
    addr: SocketAddr,
    deadline: tokio::time::Instant,
) -> Result<Admitted, Refusal> {
    let refuse = |status, why: String| Refusal {
        claimed: acc.claimed.clone(),
        ..Refusal::new(status, why)
    };
    let grant = authorize::check(&acc, ctx, addr, deadline)
        .await
        .map_err(|(status, why)| refuse(status, why))?;
    let channels = ctx.channels.get();
    let asked = channels
        .select(&acc.query, ctx.cfg.max_channels)
        .map_err(|(status, why)| refuse(status, why))?;
    let selection = match &grant {
        None => asked,
        Some(g) => g
            .restrict(&channels, asked)
            .map_err(|why| refuse(403, why))?,
    }
    .map(Box::new);
    let form = form_of(&acc, ctx, &channels, selection.as_deref());
    let resume = resumes(&acc, ctx)
        .and_then(|asked| resume::resolve(&channels, selection.as_deref(), asked))
        .map_err(|why| refuse(400, why))?;
    let around = match (form, resume.first()) {
        (Form::NamedEvent, Some((channel, Point::After(id)))) if acc.sse.is_some() => {
            Some((channel.clone(), *id))
        }
        _ => None,
    };
    if !ctx.stats.try_open(ctx.cfg.max_connections) {
        let why = format!(
            "at capacity: -ws-max-connections is {}",
            ctx.cfg.max_connections
        );
        return Err(refuse(503, why));
    }
    // Counted before the 101 goes out, so that a publish the client could
    // see is never reported as reaching nobody (nor left uncompressed).
    ctx.account(selection.as_deref(), form, true);
    Ok(Admitted {
        acc,
        selection,
        form,
        grant: grant.map(Box::new),
        resume,
        around,
    })
}

/// What the client takes of each message. An event stream of one named
/// channel gets unnamed events (the default `message` of `EventSource`);
/// any other, or any under `-ws-envelope`, events named after their
/// channel.
fn form_of(
    acc: &handshake::Accepted,
    ctx: &Context,
    channels: &Channels,
    sel: Option<&Selection>,
) -> Form {
    if acc.sse.is_none() {
        let deflate = ctx.cfg.deflate.is_some() && acc.deflate_offered;
        return Form::ws(deflate, acc.protocol == Protocol::V1);
    }
    match ctx.cfg.envelope || resume::only_channel(channels, sel).is_none() {
        true => Form::NamedEvent,
        false => Form::Event,
    }
}

/// Where the client resumes from: an event stream's `Last-Event-ID` (what
/// `EventSource` sends by itself on a reconnect), else the `since`
/// parameters. The error is the reason for a 400.
fn resumes(acc: &handshake::Accepted, ctx: &Context) -> Result<Vec<Resume>, String> {
    match acc.sse.as_ref().and_then(|s| s.last_event_id.as_deref()) {
        Some(last) => since::parse_value(last)
            .map(|r| vec![r])
            .ok_or_else(|| "malformed Last-Event-ID: <id> or <channel>:<id>".to_string()),
        None => since::from_query(&acc.query, ctx.cfg.max_channels),
    }
}
