//! Runs the real `pubsocketd` binary for a test, and talks to it with an
//! independent WebSocket client (tokio-tungstenite) or raw sockets.

use futures_util::StreamExt;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

pub type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Log lines of a running relay, with a way to wait for one.
#[derive(Clone, Default)]
pub struct Lines(Arc<(Mutex<Vec<String>>, Condvar)>);

impl Lines {
    fn push(&self, line: String) {
        self.0 .0.lock().unwrap().push(line);
        self.0 .1.notify_all();
    }

    pub fn all(&self) -> Vec<String> {
        self.0 .0.lock().unwrap().clone()
    }

    /// The first line containing `needle`, waiting up to `timeout`.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> Option<String> {
        self.wait_count(needle, 1, timeout)
    }

    /// Waits until `n` lines contain `needle`; returns the n-th.
    pub fn wait_count(&self, needle: &str, n: usize, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut lines = self.0 .0.lock().unwrap();
        loop {
            let found: Vec<&String> = lines.iter().filter(|l| l.contains(needle)).collect();
            if found.len() >= n {
                return Some(found[n - 1].clone());
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            lines = self.0 .1.wait_timeout(lines, left).unwrap().0;
        }
    }

    pub fn count(&self, needle: &str) -> usize {
        self.all().iter().filter(|l| l.contains(needle)).count()
    }
}

/// A running relay.
pub struct Relay {
    pub child: Child,
    pub port: u16,
    pub stdout: Lines,
    pub stderr: Lines,
}

pub const BIN: &str = env!("CARGO_BIN_EXE_pubsocketd");

impl Relay {
    /// Starts the relay on a free port with `args`, and waits for its
    /// `[init]` line. Pings are off unless `args` set them.
    pub fn start(args: &[&str]) -> Relay {
        let mut cmd = Command::new(BIN);
        cmd.args(["-ws-port=0", "-ws-ping-interval=0"]).args(args);
        Relay::spawn(cmd)
    }

    /// Starts the relay subscribed to `redis_port` with `-ws-insecure`.
    pub fn insecure(redis_port: u16, args: &[&str]) -> Relay {
        let port = format!("-rs-port={redis_port}");
        let mut all = vec!["-ws-insecure", port.as_str()];
        all.extend_from_slice(args);
        Relay::start(&all)
    }

    pub fn spawn(mut cmd: Command) -> Relay {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn pubsocketd");
        let stdout = pump(child.stdout.take().unwrap());
        let stderr = pump(child.stderr.take().unwrap());
        // Wait for the [init] line, but not past the process's own exit.
        let deadline = Instant::now() + Duration::from_secs(10);
        let init = loop {
            let step = Duration::from_millis(50);
            if let Some(line) = stdout.wait_for("listening for websocket requests on", step) {
                break Some(line);
            }
            if Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
                break stdout.wait_for("listening for websocket requests on", step);
            }
        };
        let Some(init) = init else {
            let _ = child.kill();
            panic!("relay did not start: {:?} {:?}", stdout.all(), stderr.all());
        };
        let port = init
            .split(" on ")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .and_then(|addr| addr.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .expect("port in init line");
        Relay {
            child,
            port,
            stdout,
            stderr,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{path}", self.port)
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Waits for the relay's Redis subscription to be confirmed (the n-th
    /// time, to wait for a resubscribe).
    pub fn wait_subscribed(&self, n: usize) {
        self.stdout
            .wait_count("[redis] subscribed", n, Duration::from_secs(20))
            .unwrap_or_else(|| panic!("not subscribed ({n}): {:?}", self.stdout.all()));
    }

    pub fn signal(&self, sig: i32) {
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Resident set size in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pump(r: impl Read + Send + 'static) -> Lines {
    let lines = Lines::default();
    let out = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            match line {
                Ok(l) => out.push(l),
                Err(_) => break,
            }
        }
    });
    lines
}

/// Runs a command to completion: (status, stdout, stderr).
pub fn run(args: &[&str]) -> (ExitStatus, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A tokio-tungstenite client, optionally with an Origin header.
pub async fn connect(
    url: &str,
    origin: Option<&str>,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let mut req = url.into_client_request().unwrap();
    if let Some(o) = origin {
        req.headers_mut().insert("Origin", o.parse().unwrap());
    }
    let host = req.uri().authority().unwrap().to_string();
    let tcp = tokio::net::TcpStream::connect(host).await.unwrap();
    let config = WebSocketConfig::default()
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20));
    tokio_tungstenite::client_async_with_config(req, tcp, Some(config))
        .await
        .map(|(ws, _)| ws)
}

/// The next data message, skipping pings; panics after `timeout`.
pub async fn next_data<S>(
    ws: &mut tokio_tungstenite::WebSocketStream<S>,
    timeout: Duration,
) -> Message
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let m = tokio::time::timeout(timeout, ws.next())
            .await
            .expect("timed out waiting for a message")
            .expect("stream ended")
            .expect("websocket error");
        match m {
            Message::Ping(_) | Message::Pong(_) => continue,
            other => return other,
        }
    }
}

/// Reads until the server closes; returns the close code, if any.
pub async fn close_code(ws: &mut Ws, timeout: Duration) -> Option<u16> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_))) | Ok(None) => return None,
            Err(_) => panic!("server did not close within {timeout:?}"),
        }
    }
}

/// Closes politely (ignoring errors).
pub async fn bye(mut ws: Ws) {
    let _ = ws.close(None).await;
}

/// A raw upgrade request head for `path` with extra header lines.
pub fn upgrade_request(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    )
}

/// Sends raw bytes and returns everything the server answers until it
/// closes (or 5 s pass).
pub fn raw_exchange(addr: &str, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of an HTTP response.
pub fn status_of(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {response:?}"))
}

/// A masked client frame, built by hand (independently of the relay's
/// decoder) for protocol tests.
pub fn client_frame(b0: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x5a, 0x13, 0xc7, 0x01];
    let mut out = vec![b0];
    let n = payload.len();
    if n < 126 {
        out.push(0x80 | n as u8);
    } else if n < 65536 {
        out.push(0x80 | 126);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// A raw WebSocket client for protocol tests: upgraded socket, frames read
/// by a small independent parser.
pub struct RawWs {
    pub sock: TcpStream,
    buf: Vec<u8>,
}

impl RawWs {
    /// Upgrades on `addr`; `after` is sent in the same write as the request.
    pub fn open(addr: &str, after: &[u8]) -> RawWs {
        RawWs::open_with(addr, "", after).0
    }

    /// Like [`RawWs::open`] with extra header lines; also returns the
    /// response head.
    pub fn open_with(addr: &str, headers: &str, after: &[u8]) -> (RawWs, String) {
        RawWs::open_at(addr, "/", headers, after)
    }

    /// Like [`RawWs::open_with`] on another path (e.g. `/?channel=a`).
    pub fn open_at(addr: &str, path: &str, headers: &str, after: &[u8]) -> (RawWs, String) {
        let mut sock = TcpStream::connect(addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut req = upgrade_request(path, headers).into_bytes();
        req.extend_from_slice(after);
        sock.write_all(&req).unwrap();
        let mut ws = RawWs {
            sock,
            buf: Vec::new(),
        };
        let head_end = loop {
            if let Some(i) = ws.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            ws.fill().expect("handshake response");
        };
        let head = String::from_utf8_lossy(&ws.buf[..head_end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        ws.buf.drain(..head_end);
        (ws, head)
    }

    fn fill(&mut self) -> Option<usize> {
        let mut chunk = [0u8; 8192];
        match self.sock.read(&mut chunk) {
            Ok(0) | Err(_) => None,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Some(n)
            }
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.sock.write_all(bytes).unwrap();
    }

    /// The next frame (b0, payload), or `None` when the server closed.
    pub fn frame(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if self.buf.len() >= 2 {
                assert_eq!(self.buf[1] & 0x80, 0, "server frames must not be masked");
                let (len, head) = match self.buf[1] & 0x7f {
                    126 if self.buf.len() >= 4 => {
                        (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
                    }
                    127 if self.buf.len() >= 10 => (
                        u64::from_be_bytes(self.buf[2..10].try_into().unwrap()) as usize,
                        10,
                    ),
                    126 | 127 => (usize::MAX, 0),
                    n => (n as usize, 2),
                };
                if len != usize::MAX && self.buf.len() >= head + len {
                    let b0 = self.buf[0];
                    let payload = self.buf[head..head + len].to_vec();
                    self.buf.drain(..head + len);
                    return Some((b0, payload));
                }
            }
            self.fill()?;
        }
    }

    /// Reads until the server ends the TCP connection (EOF or reset);
    /// panics if it is still open after the read timeout.
    pub fn wait_closed(&mut self) {
        let mut chunk = [0u8; 8192];
        loop {
            match self.sock.read(&mut chunk) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
                Err(e) => panic!("connection still open: {e}"),
            }
        }
    }
}

/// The next `n` envelopes' (id, data), each within `timeout`.
pub async fn take(ws: &mut Ws, timeout: Duration, n: usize) -> Vec<(String, serde_json::Value)> {
    let mut out = Vec::new();
    for _ in 0..n {
        let v = next_json(ws, timeout).await;
        let id = v["id"].as_str().unwrap_or_else(|| panic!("no id: {v}"));
        out.push((id.to_string(), v["data"].clone()));
    }
    out
}

/// A `pubsocketd.v1` client: tokio-tungstenite offering the subprotocol.
pub async fn connect_v1(url: &str) -> Ws {
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "pubsocketd.v1".parse().unwrap());
    let host = req.uri().authority().unwrap().to_string();
    let tcp = tokio::net::TcpStream::connect(host).await.unwrap();
    tokio_tungstenite::client_async(req, tcp).await.unwrap().0
}

/// The next data message, as JSON (a v1 envelope or answer).
pub async fn next_json(ws: &mut Ws, timeout: Duration) -> serde_json::Value {
    let m = next_data(ws, timeout).await;
    serde_json::from_str(m.to_text().unwrap()).unwrap()
}
