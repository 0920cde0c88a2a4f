//! The HTTP/1.1 upgrade request, parsed by hand with `httparse`.
//!
//! Hand-rolled rather than taken from an HTTP framework so that a
//! connection costs one fixed buffer, and so that every way a request can
//! be wrong gets its own precise status code instead of a generic 400.

use super::origin::{OriginPolicy, OriginRefusal};
use crate::auth::token::Presented;
use crate::net::client_ip::Claimed;
use crate::net::http::Response;
use base64::Engine;
use sha1::{Digest, Sha1};

/// Largest request head accepted; larger heads get 431.
pub const MAX_REQUEST: usize = 8 * 1024;
/// Most header lines accepted; more get 431.
const MAX_HEADERS: usize = 64;
/// The GUID of RFC 6455 section 1.3.
const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// A request that may be upgraded.
#[derive(Debug, PartialEq, Eq)]
pub struct Accepted {
    /// `Sec-WebSocket-Accept` value.
    pub accept: String,
    /// Bytes of the buffer taken by the request head; anything after them
    /// is already WebSocket traffic (a client may pipeline frames).
    pub consumed: usize,
    /// What `X-Real-IP` and `X-Forwarded-For` say, believed only from a
    /// trusted proxy (see [`Claimed::resolve`]).
    pub claimed: Claimed,
    /// Where a token may be (`-auth`); never printed.
    pub presented: Presented,
    /// The `Origin` header, for `-auth=url`.
    pub origin: Option<Box<[u8]>>,
    /// The query string of the request target, without `?` (empty if none).
    pub query: String,
    /// The client offered permessage-deflate with parameters the relay can
    /// accept (see [`super::deflate`]).
    pub deflate_offered: bool,
    /// The subprotocol agreed on, from the client's offers.
    pub protocol: Protocol,
    /// Not an upgrade: the client asked for Server-Sent Events (`accept`
    /// is then empty).
    pub sse: Option<EventStream>,
}

/// A request for Server-Sent Events.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct EventStream {
    /// The `Last-Event-ID` header: the last event a reconnecting
    /// `EventSource` saw (it wins over `?since=`).
    pub last_event_id: Option<Box<[u8]>>,
    /// A CORS preflight (`OPTIONS`) of a cross-origin client that sends
    /// headers (`Authorization`): answered, then closed.
    pub preflight: bool,
}

/// The paths the relay answers on: the WebSocket route (where a GET that
/// accepts `text/event-stream` also gets events) and the events route.
#[derive(Debug, Clone, Copy)]
pub struct Routes<'a> {
    pub ws: &'a str,
    pub sse: &'a str,
}

/// What a client speaks, from its `Sec-WebSocket-Protocol` offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// No offer the relay knows: the original's behaviour, no header back.
    #[default]
    Original,
    /// `pubsocketd.raw`: the original's behaviour, for a client that must
    /// offer some subprotocol; answered with it.
    Raw,
    /// `pubsocketd.v1`: enveloped messages and JSON control messages.
    V1,
}

impl Protocol {
    /// The name answered in the 101, if any.
    pub fn name(self) -> Option<&'static str> {
        match self {
            Protocol::Original => None,
            Protocol::Raw => Some(RAW),
            Protocol::V1 => Some(V1),
        }
    }

    /// The best of the offers in `values` (each a comma-separated list):
    /// `pubsocketd.v1`, else `pubsocketd.raw`; other offers are ignored.
    pub fn choose<'a>(values: impl Iterator<Item = &'a [u8]>) -> Protocol {
        let mut best = Protocol::Original;
        for value in values {
            for offer in value.split(|&b| b == b',').map(|o| o.trim_ascii()) {
                if offer == V1.as_bytes() {
                    return Protocol::V1;
                }
                if offer == RAW.as_bytes() {
                    best = Protocol::Raw;
                }
            }
        }
        best
    }
}

/// The subprotocol of enveloped messages and control messages.
pub const V1: &str = "pubsocketd.v1";
/// The subprotocol of the original's raw payloads.
pub const RAW: &str = "pubsocketd.raw";

/// A request that is refused, with the status to answer.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    /// What the log line says (and the response body).
    pub reason: String,
    /// The forwarding headers, when the head got far enough to have them.
    pub claimed: Claimed,
}

impl Refusal {
    pub fn new(status: u16, reason: impl Into<String>) -> Refusal {
        Refusal {
            status,
            reason: reason.into(),
            claimed: Claimed::default(),
        }
    }

    /// The complete HTTP response for this refusal; the connection is closed
    /// after it.
    pub fn response(&self) -> Vec<u8> {
        let r = Response::text(self.status, &self.reason);
        let r = match self.status {
            426 => r
                .header("Upgrade", "websocket")
                .header("Connection", "Upgrade")
                .header("Sec-WebSocket-Version", "13"),
            405 => r.header("Allow", "GET"),
            401 => r.header("WWW-Authenticate", "Bearer error=\"invalid_token\""),
            _ => r,
        };
        r.to_bytes()
    }
}

/// The 101 response for an accepted request, naming the extension and
/// the subprotocol agreed on, if any.
pub fn switching_protocols(accept: &str, extensions: Option<&str>, protocol: Protocol) -> Vec<u8> {
    let ext = extensions.map_or(String::new(), |e| {
        format!("Sec-WebSocket-Extensions: {e}\r\n")
    });
    let proto = protocol.name().map_or(String::new(), |p| {
        format!("Sec-WebSocket-Protocol: {p}\r\n")
    });
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n{ext}{proto}\r\n"
    )
    .into_bytes()
}

/// `Sec-WebSocket-Accept` for a client key (RFC 6455 section 4.2.2).
pub fn accept_key(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(GUID);
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// Parses the request head at the start of `buf`.
///
/// `Ok(None)` means the head is not complete yet; the caller reads more, or
/// answers 431 once `buf` holds [`MAX_REQUEST`] bytes (see [`too_large`]).
pub fn parse(
    buf: &[u8],
    routes: Routes<'_>,
    origins: &OriginPolicy,
) -> Result<Option<Accepted>, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let consumed = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_REQUEST => return Err(too_large()),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Refusal::new(431, "too many header fields"))
        }
        Err(e) => return Err(Refusal::new(400, format!("malformed request: {e}"))),
    };
    if consumed > MAX_REQUEST {
        return Err(too_large());
    }
    let heads = Heads(req.headers);
    let mut claimed = Claimed::default();
    let mut presented = Presented::default();
    for h in heads.0.iter() {
        claimed.add(h.name, h.value);
        presented.add(h.name, h.value);
    }
    let deflate_offered = heads
        .0
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("sec-websocket-extensions"))
        .any(|h| super::deflate::accepts(h.value));
    let protocol = Protocol::choose(
        heads
            .0
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("sec-websocket-protocol"))
            .map(|h| h.value),
    );
    check(&req, &heads, routes, origins)
        .map(|(wants, query)| {
            let (accept, sse) = match wants {
                Wants::WebSocket(accept) => (accept, None),
                Wants::Events => (String::new(), Some(event_stream(&heads, false))),
                Wants::Preflight => (String::new(), Some(event_stream(&heads, true))),
            };
            Some(Accepted {
                accept,
                sse,
                consumed,
                claimed: claimed.clone(),
                presented,
                origin: heads.one(b"origin").map(Box::from),
                query,
                deflate_offered,
                protocol,
            })
        })
        .map_err(|mut r| {
            r.claimed = claimed;
            r
        })
}

/// The 431 refusal for a head larger than [`MAX_REQUEST`].
pub fn too_large() -> Refusal {
    Refusal::new(431, format!("request head over {MAX_REQUEST} bytes"))
}

/// What a valid request asks for.
enum Wants {
    /// The upgrade, with its `Sec-WebSocket-Accept` value.
    WebSocket(String),
    /// An event stream.
    Events,
    /// The CORS preflight of an event stream.
    Preflight,
}

/// The `Last-Event-ID` of an event stream request.
fn event_stream(heads: &Heads<'_, '_>, preflight: bool) -> EventStream {
    let last = heads.one(b"last-event-id").map(trim);
    EventStream {
        last_event_id: last.filter(|v| !v.is_empty()).map(Box::from),
        preflight,
    }
}

/// Validates a complete head; returns what it asks for and the query.
fn check(
    req: &httparse::Request<'_, '_>,
    heads: &Heads<'_, '_>,
    routes: Routes<'_>,
    origins: &OriginPolicy,
) -> Result<(Wants, String), Refusal> {
    let target = req.path.unwrap_or("");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let events_route = path == routes.sse;
    if path != routes.ws && !events_route {
        return Err(Refusal::new(404, format!("no endpoint at {path}")));
    }
    if events_route && req.method == Some("OPTIONS") && heads.one(b"origin").is_some() {
        check_origin(heads, origins)?;
        return Ok((Wants::Preflight, query.to_string()));
    }
    if req.method != Some("GET") {
        let only = match events_route {
            true => "only GET opens an event stream",
            false => "only GET can be upgraded",
        };
        return Err(Refusal::new(405, only));
    }
    if req.version != Some(1) {
        return Err(Refusal::new(400, "HTTP/1.1 or later is required"));
    }
    if heads.one(b"host").is_none() {
        return Err(Refusal::new(400, "missing Host header"));
    }
    let upgrade = heads.has_token(b"upgrade", "websocket");
    if events_route || (!upgrade && heads.accepts(b"text/event-stream")) {
        if !same_origin(heads) {
            check_origin(heads, origins)?;
        }
        return Ok((Wants::Events, query.to_string()));
    }
    if !upgrade {
        return Err(Refusal::new(426, "this endpoint speaks WebSocket only"));
    }
    if !heads.has_token(b"connection", "upgrade") {
        return Err(Refusal::new(
            400,
            "Connection header lacks the upgrade token",
        ));
    }
    if heads.one(b"sec-websocket-version").map(trim) != Some(&b"13"[..]) {
        return Err(Refusal::new(
            426,
            "unsupported Sec-WebSocket-Version (13 only)",
        ));
    }
    let key = match heads.all(b"sec-websocket-key") {
        (1, Some(key)) => trim(key),
        (0, _) => return Err(Refusal::new(400, "missing Sec-WebSocket-Key")),
        _ => return Err(Refusal::new(400, "repeated Sec-WebSocket-Key")),
    };
    if !valid_key(key) {
        return Err(Refusal::new(
            400,
            "Sec-WebSocket-Key is not 16 bytes of base64",
        ));
    }
    check_origin(heads, origins)?;
    Ok((Wants::WebSocket(accept_key(key)), query.to_string()))
}

/// A browser's own `EventSource` on the page's origin: the Fetch standard
/// sends no `Origin` with a same-origin GET, and `Sec-Fetch-Site` is a
/// header only the browser may set. A cross-origin request always carries
/// `Origin`, so this opens nothing to other sites (and a non-browser
/// client can claim any origin anyway).
fn same_origin(heads: &Heads<'_, '_>) -> bool {
    heads.all(b"origin").0 == 0
        && heads
            .one(b"sec-fetch-site")
            .is_some_and(|v| trim(v).eq_ignore_ascii_case(b"same-origin"))
}

/// The `Origin` header against `-ws-origin` (403 when refused).
fn check_origin(heads: &Heads<'_, '_>, origins: &OriginPolicy) -> Result<(), Refusal> {
    let origin = match heads.all(b"origin") {
        (0 | 1, value) => value,
        _ => return Err(Refusal::new(403, "repeated Origin header")),
    };
    origins
        .check(origin)
        .map_err(|r: OriginRefusal| Refusal::new(403, r.to_string()))
}

/// A key is the base64 encoding of exactly 16 bytes.
fn valid_key(key: &[u8]) -> bool {
    let mut out = [0u8; 18];
    key.len() == 24
        && base64::engine::general_purpose::STANDARD
            .decode_slice(key, &mut out)
            .is_ok_and(|n| n == 16)
}

fn trim(v: &[u8]) -> &[u8] {
    v.trim_ascii()
}

/// Header lookups by case-insensitive name.
struct Heads<'h, 'b>(&'h [httparse::Header<'b>]);

impl<'b> Heads<'_, 'b> {
    fn one(&self, name: &[u8]) -> Option<&'b [u8]> {
        self.0
            .iter()
            .find(|h| h.name.as_bytes().eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }

    /// How many times `name` occurs, and its first value.
    fn all(&self, name: &[u8]) -> (usize, Option<&'b [u8]>) {
        let mut it = self
            .0
            .iter()
            .filter(|h| h.name.as_bytes().eq_ignore_ascii_case(name));
        let first = it.next().map(|h| h.value);
        (first.map_or(0, |_| 1 + it.count()), first)
    }

    /// Whether an `Accept` header lists the media type `media` (its
    /// parameters and quality ignored).
    fn accepts(&self, media: &[u8]) -> bool {
        self.0
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("accept"))
            .flat_map(|h| h.value.split(|b| *b == b','))
            .map(|t| t.split(|b| *b == b';').next().unwrap_or_default())
            .any(|t| trim(t).eq_ignore_ascii_case(media))
    }

    /// Whether any `name` header lists `token` (comma-separated, any case).
    fn has_token(&self, name: &[u8], token: &str) -> bool {
        self.0
            .iter()
            .filter(|h| h.name.as_bytes().eq_ignore_ascii_case(name))
            .flat_map(|h| h.value.split(|b| *b == b','))
            .any(|t| trim(t).eq_ignore_ascii_case(token.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::origin::Origin;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
    const ROUTES: Routes = Routes {
        ws: "/ws",
        sse: "/ws/events",
    };

    fn allow() -> OriginPolicy {
        OriginPolicy::List(vec![Origin::parse("http://a.example").unwrap()])
    }

    fn req(extra: &str) -> String {
        format!("GET /ws?x=1 HTTP/1.1\r\nHost: h\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\nOrigin: http://A.example:80\r\n{extra}\r\n")
    }

    fn status(raw: &str) -> u16 {
        parse(raw.as_bytes(), ROUTES, &allow()).unwrap_err().status
    }

    #[test]
    fn rfc_example_key() {
        assert_eq!(accept_key(KEY.as_bytes()), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn accepts_a_valid_upgrade_and_reports_what_follows() {
        let mut raw = req("X-Real-IP: 10.1.2.3\r\n").into_bytes();
        raw.push(0x81);
        let ok = parse(&raw, ROUTES, &allow()).unwrap().unwrap();
        assert_eq!(ok.consumed, raw.len() - 1);
        assert_eq!(ok.claimed.real_ip.as_deref(), Some(&b"10.1.2.3"[..]));
        assert_eq!(ok.query, "x=1");
        assert_eq!(ok.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn partial_heads_wait_for_more() {
        let raw = req("");
        for cut in 0..raw.len() - 1 {
            assert_eq!(parse(&raw.as_bytes()[..cut], ROUTES, &allow()), Ok(None));
        }
    }

    #[test]
    fn each_fault_has_its_status() {
        assert_eq!(status(&req("").replace("/ws?x=1", "/other")), 404);
        assert_eq!(status(&req("").replace("GET", "POST")), 405);
        assert_eq!(status(&req("").replace("Upgrade: WebSocket\r\n", "")), 426);
        assert_eq!(
            status(&req("").replace("keep-alive, Upgrade", "close")),
            400
        );
        let v8 = req("").replace("Version: 13", "Version: 8");
        assert_eq!(status(&v8), 426);
        let refusal = parse(v8.as_bytes(), ROUTES, &allow()).unwrap_err();
        let resp = String::from_utf8(refusal.response()).unwrap();
        assert!(resp.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
        assert!(resp.contains("Sec-WebSocket-Version: 13\r\n"));
        assert_eq!(status(&req("").replace(KEY, "c2hvcnQ=")), 400);
        assert_eq!(
            status(&req("").replace(KEY, "!!!!!!!!!!!!!!!!!!!!!!==")),
            400
        );
        assert_eq!(
            status(&req("Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n")),
            400
        );
        assert_eq!(status(&req("").replace("Host: h\r\n", "")), 400);
        assert_eq!(status(&req("").replace("HTTP/1.1", "HTTP/1.0")), 400);
        assert_eq!(
            status(&req("").replace("http://A.example:80", "http://b.example")),
            403
        );
        assert_eq!(status(&req("").replace("http://A.example:80", "null")), 403);
        assert_eq!(
            status(&req("").replace("Origin: http://A.example:80\r\n", "")),
            403
        );
        assert_eq!(status("\x16\x03\x01\x02\x00garbage\r\n\r\n"), 400);
    }

    fn events(raw: &str) -> Result<Option<Accepted>, Refusal> {
        parse(raw.as_bytes(), ROUTES, &allow())
    }

    #[test]
    fn event_streams_on_their_route_or_by_accept() {
        let on_route = "GET /ws/events?channel=a HTTP/1.1\r\nHost: h\r\nOrigin: http://a.example\r\nLast-Event-ID: a:1-2\r\n\r\n";
        let ok = events(on_route).unwrap().unwrap();
        let sse = ok.sse.expect("an event stream");
        assert_eq!(sse.last_event_id.as_deref(), Some(&b"a:1-2"[..]));
        assert_eq!((ok.query.as_str(), ok.accept.as_str()), ("channel=a", ""));
        let by_accept = "GET /ws HTTP/1.1\r\nHost: h\r\nAccept: text/html, Text/Event-Stream;q=0.9\r\nOrigin: http://a.example\r\nLast-Event-ID: \r\n\r\n";
        let ok = events(by_accept).unwrap().unwrap();
        assert_eq!(ok.sse, Some(EventStream::default()));
        let same_site = on_route.replace("Origin: http://a.example", "Sec-Fetch-Site: same-origin");
        assert!(events(&same_site).unwrap().unwrap().sse.is_some());
        let cross = on_route.replace("Origin: http://a.example", "Sec-Fetch-Site: cross-site");
        assert_eq!(events(&cross).unwrap_err().status, 403);
        let lying = on_route.replace(
            "Origin: http://a.example",
            "Origin: http://b.example\r\nSec-Fetch-Site: same-origin",
        );
        assert_eq!(
            events(&lying).unwrap_err().status,
            403,
            "an Origin is always checked"
        );
        let preflight = on_route.replace("GET", "OPTIONS");
        assert!(events(&preflight).unwrap().unwrap().sse.unwrap().preflight);
        // An upgrade that also accepts events is an upgrade.
        let both = req("Accept: text/event-stream\r\n");
        assert!(events(&both).unwrap().unwrap().sse.is_none());
        let status = |raw: &str| events(raw).unwrap_err().status;
        assert_eq!(status(&by_accept.replace("Text/Event-Stream", "a/b")), 426);
        assert_eq!(status(&on_route.replace("GET", "POST")), 405);
        assert_eq!(status(&on_route.replace("a.example", "b.example")), 403);
        assert_eq!(status(&on_route.replace("Host: h\r\n", "")), 400);
        assert_eq!(status(&on_route.replace("/ws/events", "/events")), 404);
    }

    #[test]
    fn size_caps_answer_431() {
        let big = req(&format!("X-Pad: {}\r\n", "a".repeat(MAX_REQUEST)));
        assert_eq!(status(&big), 431);
        let many: String = (0..70).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(status(&req(&many)), 431);
        let unfinished = "GET /ws HTTP/1.1\r\nX: ".to_string() + &"a".repeat(MAX_REQUEST);
        assert_eq!(status(&unfinished), 431);
    }
}
