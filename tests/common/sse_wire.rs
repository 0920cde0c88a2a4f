//! A raw Server-Sent Events client for the tests that check the wire
//! (sse_clients.rs, nginx.rs): a plain HTTP/1.1 GET on a socket (or curl's
//! output), the response head kept as sent, a chunked body (nginx's)
//! decoded, and the stream cut into events by a small parser written from
//! the WHATWG text, keeping each event's lines as they came, and refusing
//! any CR in the body. `common::sse` is the other reader, tests/sse.rs's.

use super::redis::RedisServer;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// How long one read may wait before a test gives up.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// One event (or comment block) of the stream: the lines up to the blank
/// line that ends it, and its fields.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    /// The lines as sent, without their `\n`.
    pub lines: Vec<String>,
    /// The `id:` field, if one was sent.
    pub id: Option<String>,
    /// The `event:` field, if one was sent.
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`; `None` without one.
    pub data: Option<String>,
    /// The `retry:` field, if one was sent.
    pub retry: Option<String>,
    /// Comment lines (`: text`), without the colon.
    pub comments: Vec<String>,
}

impl Event {
    /// Parses the lines of one block as the WHATWG parser would.
    pub fn parse(lines: Vec<String>) -> Event {
        let mut e = Event::default();
        let mut data: Vec<&str> = Vec::new();
        for line in &lines {
            if let Some(comment) = line.strip_prefix(':') {
                e.comments.push(comment.to_string());
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line.as_str(), ""),
            };
            match field {
                "id" => e.id = Some(value.to_string()),
                "event" => e.event = Some(value.to_string()),
                "retry" => e.retry = Some(value.to_string()),
                "data" => data.push(value),
                other => panic!("unknown field {other:?} in {lines:?}"),
            }
        }
        if !data.is_empty() {
            e.data = Some(data.join("\n"));
        }
        e.lines = lines;
        e
    }

    /// The data, which must be there.
    pub fn data(&self) -> &str {
        self.data
            .as_deref()
            .unwrap_or_else(|| panic!("no data in {:?}", self.lines))
    }
}

/// Where a stream's bytes come from.
enum Source {
    Tcp(TcpStream),
    /// Another program's output (curl), read by a thread: an empty chunk
    /// is its end.
    Pipe(Receiver<Vec<u8>>),
}

/// An open event stream.
pub struct Sse {
    source: Source,
    /// The response head, up to and including its blank line.
    pub head: String,
    pub status: u16,
    buf: Vec<u8>,
    eof: bool,
    /// Under `Transfer-Encoding: chunked` (nginx to an HTTP/1.1 client):
    /// the bytes not yet decoded.
    chunked: Option<Vec<u8>>,
    /// Whether a chunked body ended with its last chunk (not a cut).
    pub complete: bool,
}

/// `GET path` with `Accept: text/event-stream` and `headers` (lines, each
/// ending in `\r\n`).
pub fn request(path: &str, headers: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n{headers}\r\n")
}

impl Sse {
    /// Opens a stream on `addr`; panics unless the answer is 200.
    pub fn open(addr: &str, path: &str, headers: &str) -> Sse {
        let s = Sse::open_any(addr, path, headers);
        assert_eq!(s.status, 200, "GET {path}: {}", s.head);
        s
    }

    /// Sends the request and reads the response head, whatever its status.
    pub fn open_any(addr: &str, path: &str, headers: &str) -> Sse {
        let sock = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        Sse::over(sock, &request(path, headers))
    }

    /// Sends `request` on a connected socket and reads the response head.
    pub fn over(sock: TcpStream, request: &str) -> Sse {
        (&sock).write_all(request.as_bytes()).unwrap();
        Sse::from_source(Source::Tcp(sock))
    }

    /// Reads a response (head, then the stream) from another program's
    /// output, e.g. `curl -sS -N -D -`.
    pub fn from_output(mut out: impl Read + Send + 'static) -> Sse {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 16384];
            loop {
                let n = out.read(&mut chunk).unwrap_or(0);
                if tx.send(chunk[..n].to_vec()).is_err() || n == 0 {
                    return;
                }
            }
        });
        Sse::from_source(Source::Pipe(rx))
    }

    fn from_source(source: Source) -> Sse {
        let mut s = Sse::unread(source);
        assert!(
            s.read_head(PATIENCE),
            "no response head: {:?}",
            String::from_utf8_lossy(&s.buf)
        );
        s
    }

    /// Sends `request` on a connected socket and reads nothing yet (see
    /// [`Sse::read_head`]).
    pub fn sent(sock: TcpStream, request: &str) -> Sse {
        (&sock).write_all(request.as_bytes()).unwrap();
        Sse::unread(Source::Tcp(sock))
    }

    fn unread(source: Source) -> Sse {
        Sse {
            source,
            head: String::new(),
            status: 0,
            buf: Vec::new(),
            eof: false,
            chunked: None,
            complete: false,
        }
    }

    /// Reads the response head, waiting at most `timeout`: false if it has
    /// not come by then.
    pub fn read_head(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            assert!(!self.eof, "closed before the head: {:?}", self.buf);
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !self.fill(left) {
                return false;
            }
        };
        self.head = String::from_utf8(self.buf.drain(..end).collect()).expect("a UTF-8 head");
        self.status = self
            .head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("no status in {:?}", self.head));
        let te = self.header("Transfer-Encoding").unwrap_or_default();
        if te.eq_ignore_ascii_case("chunked") {
            self.chunked = Some(std::mem::take(&mut self.buf));
            self.dechunk();
        }
        true
    }

    /// Moves the complete chunks into `buf`; the last chunk ends the
    /// stream. Panics on a malformed chunk.
    fn dechunk(&mut self) {
        let Some(raw) = self.chunked.as_mut() else {
            return;
        };
        while let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") {
            let line = std::str::from_utf8(&raw[..eol]).expect("a chunk size");
            let size = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size, 16)
                .unwrap_or_else(|_| panic!("a chunk size: {line:?}"));
            if size == 0 {
                self.complete = true;
                self.eof = true;
                raw.clear();
                return;
            }
            let end = eol + 2 + size;
            if raw.len() < end + 2 {
                return;
            }
            assert_eq!(&raw[end..end + 2], b"\r\n", "a chunk's end");
            self.buf.extend_from_slice(&raw[eol + 2..end]);
            raw.drain(..end + 2);
        }
    }

    /// Takes bytes read from the source.
    fn take(&mut self, bytes: &[u8]) {
        match self.chunked.as_mut() {
            Some(raw) => {
                raw.extend_from_slice(bytes);
                self.dechunk();
            }
            None => self.buf.extend_from_slice(bytes),
        }
    }

    /// The value of a response header (the first one of that name).
    pub fn header(&self, name: &str) -> Option<String> {
        header(&self.head, name)
    }

    /// Reads more into the buffer, waiting at most `timeout`; false on a
    /// timeout, true otherwise (EOF sets `eof`).
    fn fill(&mut self, timeout: Duration) -> bool {
        let timeout = timeout.max(Duration::from_millis(1));
        let bytes = match &mut self.source {
            Source::Tcp(sock) => {
                let mut chunk = [0u8; 16384];
                sock.set_read_timeout(Some(timeout)).unwrap();
                match sock.read(&mut chunk) {
                    Ok(n) => chunk[..n].to_vec(),
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        return false
                    }
                    Err(e) if e.kind() == ErrorKind::ConnectionReset => Vec::new(),
                    Err(e) => panic!("reading the stream: {e}"),
                }
            }
            Source::Pipe(rx) => match rx.recv_timeout(timeout) {
                Ok(chunk) => chunk,
                Err(RecvTimeoutError::Timeout) => return false,
                Err(RecvTimeoutError::Disconnected) => Vec::new(),
            },
        };
        match bytes.is_empty() {
            true => self.eof = true,
            false => self.take(&bytes),
        }
        true
    }

    /// The socket (not for a stream read from another program).
    pub fn sock(&self) -> &TcpStream {
        match &self.source {
            Source::Tcp(sock) => sock,
            Source::Pipe(_) => panic!("not a socket"),
        }
    }

    /// The next block of lines up to a blank line, waiting at most
    /// `timeout`: `Ok(None)` when the stream ended cleanly, `Err(())` on a
    /// timeout. A last block the server ended without its blank line (the
    /// closing comment) is returned at the end.
    pub fn try_event(&mut self, timeout: Duration) -> Result<Option<Event>, ()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buf.drain(..i + 2).collect();
                return Ok(Some(Event::parse(lines(&block[..i]))));
            }
            if self.eof {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                let block: Vec<u8> = std::mem::take(&mut self.buf);
                let text = block.strip_suffix(b"\n").unwrap_or(&block);
                return Ok(Some(Event::parse(lines(text))));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !self.fill(left) {
                return Err(());
            }
        }
    }

    /// The next event or comment block; panics on a timeout or the end.
    pub fn event(&mut self) -> Event {
        match self.try_event(PATIENCE) {
            Ok(Some(e)) => e,
            Ok(None) => panic!("the stream ended"),
            Err(()) => panic!(
                "no event within {PATIENCE:?}; buffered {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
        }
    }

    /// The next event that is not only comments (pings).
    pub fn next_event(&mut self) -> Event {
        loop {
            let e = self.event();
            if e.lines.iter().any(|l| !l.starts_with(':')) {
                return e;
            }
        }
    }

    /// Reads to the end of the stream (at most [`PATIENCE`]): the blocks.
    pub fn rest(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        loop {
            match self.try_event(PATIENCE) {
                Ok(Some(e)) => out.push(e),
                Ok(None) => return out,
                Err(()) => panic!("the stream did not end; so far {out:?}"),
            }
        }
    }

    /// Reads up to the event whose data is `data`; returns the events.
    pub fn until(&mut self, data: &str) -> Vec<Event> {
        let mut out = vec![self.event()];
        while out.last().unwrap().data.as_deref() != Some(data) {
            out.push(self.event());
        }
        out
    }

    /// The body as text, read to the end (a refusal's).
    pub fn body(&mut self) -> String {
        let deadline = Instant::now() + PATIENCE;
        while !self.eof {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(self.fill(left), "the body did not end: {:?}", self.buf);
        }
        String::from_utf8(std::mem::take(&mut self.buf)).expect("a UTF-8 body")
    }

    /// Makes sure the client receives what is published from now on: see
    /// [`probe`]. Returns the events read meanwhile.
    pub fn ready(&mut self, redis: &RedisServer, channel: &str) -> Vec<Event> {
        probe(
            redis,
            channel,
            |wait| match self.try_event(wait) {
                Ok(Some(e)) => Some(e),
                Ok(None) => panic!("the stream ended"),
                Err(()) => None,
            },
            |e| e.data.as_deref(),
        )
    }
}

/// Publishes `probe-C-1`, `probe-C-2`… (C counts the calls) on `channel`
/// every 100 ms until a probe reaches the client (`next` reads what it got, waiting at most the given
/// time; `data` is an item's data), then reads up to the last probe
/// published: from then on the client receives what is published (the
/// relay delivers in order), and no probe is left unread. Returns what was
/// read.
pub fn probe<E: std::fmt::Debug>(
    redis: &RedisServer,
    channel: &str,
    mut next: impl FnMut(Duration) -> Option<E>,
    data: impl Fn(&E) -> Option<&str>,
) -> Vec<E> {
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let deadline = Instant::now() + PATIENCE;
    let mut sent = 0;
    let mut got: Vec<E> = Vec::new();
    'publish: loop {
        assert!(Instant::now() < deadline, "no probe arrived: {got:?}");
        sent += 1;
        redis.publish(channel, format!("probe-{call}-{sent}").as_bytes());
        let wait = Instant::now() + Duration::from_millis(100);
        while let Some(e) = next(wait.saturating_duration_since(Instant::now())) {
            let probe = data(&e).is_some_and(|d| d.starts_with("probe-"));
            got.push(e);
            if probe {
                break 'publish;
            }
        }
    }
    let last = format!("probe-{call}-{sent}");
    let deadline = Instant::now() + PATIENCE;
    while got.last().and_then(&data) != Some(last.as_str()) {
        assert!(Instant::now() < deadline, "{last} never came: {got:?}");
        if let Some(e) = next(PATIENCE) {
            got.push(e);
        }
    }
    got
}

/// A head's lines, split at `\n` only: the relay must send no `\r` in the
/// body (a lone `\r` ends a line for a browser, which would split a field).
fn lines(bytes: &[u8]) -> Vec<String> {
    let text = std::str::from_utf8(bytes).expect("the stream is UTF-8");
    assert!(!text.contains('\r'), "a CR in the event stream: {text:?}");
    text.split('\n').map(str::to_string).collect()
}

/// The value of header `name` in a response head (case-insensitive name).
pub fn header(head: &str, name: &str) -> Option<String> {
    head.split("\r\n").skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

/// How many times header `name` appears in a head.
pub fn header_count(head: &str, name: &str) -> usize {
    head.split("\r\n")
        .skip(1)
        .filter(|line| {
            line.split_once(':')
                .is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        })
        .count()
}
