//! A blocking event-stream reader for tests: opens a stream over raw TCP
//! and parses events as the HTML standard says (written apart from the
//! relay's encoder, so that the two cannot share a mistake).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// One dispatched event (or comment).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: Option<String>,
    /// `message` when the stream names none.
    pub event: String,
    pub data: String,
}

pub struct Stream {
    /// The response head, up to its blank line.
    pub head: String,
    reader: BufReader<TcpStream>,
    /// Comments seen, in order.
    pub comments: Vec<String>,
    pub retry: Option<u64>,
}

/// Opens `GET path` with `headers` (each ending in CRLF) on `addr`.
pub fn open(addr: &str, path: &str, headers: &str) -> Stream {
    let mut s = TcpStream::connect(addr).unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n{headers}\r\n"
    );
    s.write_all(req.as_bytes()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut reader = BufReader::new(s);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    Stream {
        head,
        reader,
        comments: Vec::new(),
        retry: None,
    }
}

impl Stream {
    pub fn status(&self) -> u16 {
        self.head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    /// The body of a refusal (the stream is then closed).
    pub fn rest(mut self) -> String {
        let mut out = String::new();
        let _ = self.reader.read_to_string(&mut out);
        out
    }

    pub fn socket(&self) -> &TcpStream {
        self.reader.get_ref()
    }

    /// One line without its terminator (LF, CR or CRLF); `None` at EOF.
    fn line(&mut self) -> Option<String> {
        let mut out = Vec::new();
        loop {
            let buf = self.reader.fill_buf().ok()?;
            if buf.is_empty() {
                return (!out.is_empty()).then(|| String::from_utf8(out).unwrap());
            }
            if let Some(at) = buf.iter().position(|&b| b == b'\n' || b == b'\r') {
                out.extend_from_slice(&buf[..at]);
                let cr = buf[at] == b'\r';
                self.reader.consume(at + 1);
                if cr && self.reader.fill_buf().ok()?.first() == Some(&b'\n') {
                    self.reader.consume(1);
                }
                return Some(String::from_utf8(out).unwrap());
            }
            let n = buf.len();
            out.extend_from_slice(buf);
            self.reader.consume(n);
        }
    }

    /// The next event, or `None` if the stream ends first.
    pub fn next(&mut self) -> Option<Event> {
        let (mut ev, mut data, mut any) = (Event::default(), Vec::<String>::new(), false);
        loop {
            let line = self.line()?;
            if line.is_empty() {
                if any {
                    ev.data = data.join("\n");
                    if ev.event.is_empty() {
                        ev.event = "message".into();
                    }
                    return Some(ev);
                }
                continue;
            }
            if let Some(c) = line.strip_prefix(':') {
                self.comments.push(c.trim_start().to_string());
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f.to_string(), v.strip_prefix(' ').unwrap_or(v).to_string()),
                None => (line.clone(), String::new()),
            };
            match field.as_str() {
                "data" => {
                    data.push(value);
                    any = true;
                }
                "event" => ev.event = value,
                "id" => ev.id = Some(value),
                "retry" => self.retry = value.parse().ok(),
                _ => {}
            }
        }
    }

    /// The next `n` events' data.
    pub fn data(&mut self, n: usize) -> Vec<String> {
        (0..n)
            .map(|_| self.next().expect("an event").data)
            .collect()
    }

    /// Reads until the stream ends (within `within`), returning the
    /// comments seen on the way; panics on an event or a timeout.
    pub fn until_end(&mut self, within: Duration) -> Vec<String> {
        let start = Instant::now();
        self.socket().set_read_timeout(Some(within)).unwrap();
        if let Some(ev) = self.next() {
            panic!("unexpected event {ev:?}");
        }
        assert!(start.elapsed() < within, "stream still open");
        self.comments.clone()
    }
}
