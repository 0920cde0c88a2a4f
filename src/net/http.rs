//! The little HTTP the relay speaks besides the upgrade: one request per
//! connection, answered and closed. Shared by the handshake's refusals,
//! `POST /publish` and the metrics endpoint, so that every answer has the
//! same framing (`Content-Length`, `Connection: close`) and every close
//! lingers long enough for the client to read it.

use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{timeout, timeout_at, Instant};

/// Most header lines read in a request head.
const MAX_HEADERS: usize = 32;
/// Most request bytes drained after an answer, so that a client still
/// sending (a refused body) cannot keep the connection for long.
const MAX_DRAIN: usize = 64 << 10;

/// The reason phrase of a status code.
pub fn reason(status: u16) -> &'static str {
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
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// A complete answer; the connection is closed after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    content_type: &'static str,
    /// Extra header lines, each ending in CRLF.
    headers: String,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            content_type,
            headers: String::new(),
            body: body.into(),
        }
    }

    /// A plain-text answer; the body ends in a line break.
    pub fn text(status: u16, text: &str) -> Response {
        Response::new(status, "text/plain; charset=utf-8", format!("{text}\n"))
    }

    /// A JSON answer; the body ends in a line break.
    pub fn json(status: u16, value: &serde_json::Value) -> Response {
        Response::new(status, "application/json", format!("{value}\n"))
    }

    /// Adds a header line.
    pub fn header(mut self, name: &str, value: &str) -> Response {
        self.headers.push_str(&format!("{name}: {value}\r\n"));
        self
    }

    /// The bytes on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        let head = format!(
            "HTTP/1.1 {} {}\r\n{}Content-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.status,
            reason(self.status),
            self.headers,
            self.content_type,
            self.body.len()
        );
        let mut out = head.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

/// A request head, as far as the relay's endpoints read one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query, without the `?`.
    pub query: String,
    pub headers: Vec<(String, Vec<u8>)>,
    /// Bytes after the head (the start of a body).
    pub rest: Vec<u8>,
}

impl Head {
    /// Every value of the header `name` (any case), in order.
    pub fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// The first value of the header `name`.
    pub fn value(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }
}

/// A request that cannot be served: the status and why, for the endpoint
/// to answer in its own form (text or JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bad {
    pub status: u16,
    pub why: String,
}

fn bad(status: u16, why: String) -> Bad {
    Bad { status, why }
}

/// Parses the request head at the front of `buf`: `Ok(None)` while it is
/// incomplete and `buf` has room, a 431 once it is full or has too many
/// lines, a 400 for what is not HTTP.
pub fn parse_head(buf: &[u8], capacity: usize) -> Result<Option<Head>, Bad> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => {
            let target = req.path.unwrap_or("");
            let (path, query) = target.split_once('?').unwrap_or((target, ""));
            Ok(Some(Head {
                method: req.method.unwrap_or("").to_string(),
                path: path.to_string(),
                query: query.to_string(),
                headers: req
                    .headers
                    .iter()
                    .map(|h| (h.name.to_string(), h.value.to_vec()))
                    .collect(),
                rest: buf[len..].to_vec(),
            }))
        }
        Ok(httparse::Status::Partial) if buf.len() < capacity => Ok(None),
        Ok(httparse::Status::Partial) => {
            Err(bad(431, format!("request head over {capacity} bytes")))
        }
        Err(httparse::Error::TooManyHeaders) => {
            Err(bad(431, format!("more than {MAX_HEADERS} header lines")))
        }
        Err(e) => Err(bad(400, format!("malformed request: {e}"))),
    }
}

/// Why no request head was read.
pub enum HeadError {
    /// The client left (or the read failed) before a complete head.
    Gone,
    /// Not in time.
    TimedOut,
    /// Not a request that can be served (400, 431).
    Refused(Bad),
}

/// Reads a request head of at most `capacity` bytes before `deadline`.
pub async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
    capacity: usize,
    deadline: Instant,
) -> Result<Head, HeadError> {
    let mut buf = vec![0u8; capacity];
    let mut filled = 0;
    let reading = async {
        loop {
            match stream.read(&mut buf[filled..]).await {
                Ok(0) | Err(_) => return Err(HeadError::Gone),
                Ok(n) => filled += n,
            }
            match parse_head(&buf[..filled], capacity) {
                Ok(Some(head)) => return Ok(head),
                Ok(None) => continue,
                Err(why) => return Err(HeadError::Refused(why)),
            }
        }
    };
    timeout_at(deadline, reading)
        .await
        .unwrap_or(Err(HeadError::TimedOut))
}

/// Writes `response` and closes, then reads (and drops) what the client
/// still sends for up to `linger`, so that closing does not reset the
/// connection before the client has read the answer.
pub async fn answer_and_close<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    response: &[u8],
    linger: Duration,
) {
    if !matches!(
        timeout(linger, stream.write_all(response)).await,
        Ok(Ok(()))
    ) {
        return;
    }
    let _ = timeout(linger, stream.shutdown()).await;
    let deadline = Instant::now() + linger;
    // On the heap, not in the future: the handshake task that may call
    // this would otherwise carry the buffer for every connection it serves.
    let mut sink = vec![0u8; 4096];
    let mut left = MAX_DRAIN;
    while left > 0 {
        match timeout_at(deadline, stream.read(&mut sink)).await {
            Ok(Ok(n)) if n > 0 => left -= n.min(left),
            _ => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_framed_and_closed() {
        let r = Response::text(405, "GET only").header("Allow", "GET");
        assert_eq!(
            String::from_utf8(r.to_bytes()).unwrap(),
            "HTTP/1.1 405 Method Not Allowed\r\nAllow: GET\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 9\r\nConnection: close\r\n\r\nGET only\n"
        );
    }

    #[test]
    fn heads() {
        let req = b"POST /publish?channel=a HTTP/1.1\r\nHost: x\r\nA: 1\r\na: 2\r\n\r\nbody";
        let head = parse_head(req, 1024).unwrap().unwrap();
        assert_eq!(
            (head.method.as_str(), head.path.as_str()),
            ("POST", "/publish")
        );
        assert_eq!(head.query, "channel=a");
        assert_eq!(head.values("a").collect::<Vec<_>>(), [b"1", b"2"]);
        assert_eq!(head.rest, b"body");
        assert_eq!(parse_head(&req[..20], 1024), Ok(None));
        assert_eq!(parse_head(&req[..20], 20).unwrap_err().status, 431);
        assert_eq!(
            parse_head(b"\x00\x01 / HTTP/1.1\r\n\r\n", 64)
                .unwrap_err()
                .status,
            400
        );
        let many = format!("GET / HTTP/1.1\r\n{}\r\n", "h: v\r\n".repeat(40));
        assert_eq!(parse_head(many.as_bytes(), 4096).unwrap_err().status, 431);
    }
}
