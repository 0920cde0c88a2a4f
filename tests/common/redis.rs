//! A real `redis-server` for integration tests, and a tiny synchronous RESP
//! client to drive it.
//!
//! Tests run against the real server rather than a mock so that what they
//! check is what production meets: RESP framing, PUBLISH counts, restarts.
//! Each [`RedisServer`] gets its own port and a temporary directory holding
//! its log, so tests run in parallel and a failed start shows why.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// How long a server may take to answer PING after being started.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A free TCP port on 127.0.0.1 (bound then released, so only likely free).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// A `redis-server` child process, killed on drop.
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    extra: Vec<String>,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers PING.
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// Like [`RedisServer::start`], with extra `redis-server` arguments
    /// (for example `["--requirepass", "secret"]`).
    pub fn start_with(extra_args: &[&str]) -> RedisServer {
        RedisServer::launch_on(free_port(), extra_args)
    }

    /// Starts a server on a given port (e.g. one a relay already retries).
    pub fn start_on(port: u16) -> RedisServer {
        RedisServer::launch_on(port, &[])
    }

    /// Starts a server on a given port with extra arguments.
    pub fn start_on_with(port: u16, extra_args: &[&str]) -> RedisServer {
        RedisServer::launch_on(port, extra_args)
    }

    fn launch_on(port: u16, extra_args: &[&str]) -> RedisServer {
        let mut server = RedisServer {
            port,
            child: None,
            dir: tempfile::tempdir().expect("temporary directory for redis"),
            extra: extra_args.iter().map(|a| a.to_string()).collect(),
        };
        server.launch(1);
        server
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL) and reaps it; a no-op when not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (killing it first if it
    /// still runs), retrying while the port cannot be bound yet.
    pub fn restart(&mut self) {
        self.kill();
        self.launch(5);
    }

    /// PUBLISHes `payload` on `channel`; returns how many subscribers got it.
    pub fn publish(&self, channel: &str, payload: &[u8]) -> i64 {
        match self.command(&[b"PUBLISH", channel.as_bytes(), payload]) {
            Resp::Int(n) => n,
            other => panic!("PUBLISH {channel}: unexpected reply {other:?}"),
        }
    }

    /// The number of subscribers of `channel` (PUBSUB NUMSUB).
    pub fn subscriber_count(&self, channel: &str) -> i64 {
        match self.command(&[b"PUBSUB", b"NUMSUB", channel.as_bytes()]) {
            Resp::Array(Some(items)) if items.len() == 2 => match items[1] {
                Resp::Int(n) => n,
                ref other => panic!("PUBSUB NUMSUB: unexpected count {other:?}"),
            },
            other => panic!("PUBSUB NUMSUB {channel}: unexpected reply {other:?}"),
        }
    }

    /// Runs `redis-cli -p PORT args...` and returns its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .arg("-p")
            .arg(self.port.to_string())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Sends one command on a fresh connection and returns the reply.
    pub fn command(&self, args: &[&[u8]]) -> Resp {
        let stream = connect(self.port).unwrap_or_else(|e| panic!("connect to redis: {e}"));
        let mut reader = BufReader::new(stream.try_clone().expect("clone socket"));
        (&stream)
            .write_all(&encode(args))
            .expect("send command to redis");
        read_resp(&mut reader).expect("read reply from redis")
    }

    /// A connection SUBSCRIBEd to `channel` (subscription confirmed).
    pub fn subscribe(&self, channel: &str) -> Subscriber {
        Subscriber::new(self.port, channel)
    }

    /// The last lines of the server's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// Spawns the server, up to `attempts` times, until it answers PING.
    fn launch(&mut self, attempts: u32) {
        for attempt in 1..=attempts {
            let mut child = self.spawn();
            if wait_ready(self.port, &mut child) {
                self.child = Some(child);
                return;
            }
            let _ = child.kill();
            let _ = child.wait();
            if attempt < attempts {
                sleep(Duration::from_millis(300));
            }
        }
        panic!(
            "redis-server on port {} did not answer PING; log tail:\n{}",
            self.port,
            self.log_tail()
        );
    }

    fn spawn(&self) -> Child {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open redis log");
        let log2 = log.try_clone().expect("clone redis log");
        Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .expect("spawn redis-server (is it installed?)")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls PING until it succeeds (true), the child exits or time runs out.
fn wait_ready(port: u16, child: &mut Child) -> bool {
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if ping(port) {
            return true;
        }
        sleep(Duration::from_millis(20));
    }
    false
}

/// Whether a server on `port` answers PING (with PONG, or NOAUTH).
fn ping(port: u16) -> bool {
    let Ok(stream) = connect(port) else {
        return false;
    };
    let mut reader = BufReader::new(&stream);
    if (&stream).write_all(&encode(&[b"PING"])).is_err() {
        return false;
    }
    // A server started with --requirepass is ready when it asks for a password.
    match read_resp(&mut reader) {
        Ok(Resp::Simple(s)) => s == "PONG",
        Ok(Resp::Error(e)) => e.starts_with("NOAUTH"),
        _ => false,
    }
}

/// A connection to 127.0.0.1:`port` with a 5 s read timeout.
fn connect(port: u16) -> io::Result<TcpStream> {
    let addr = ([127, 0, 0, 1], port).into();
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Resp>>),
}

/// A command as a RESP array of bulk strings.
pub fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Reads one RESP2 value.
pub fn read_resp<R: BufRead>(reader: &mut R) -> io::Result<Resp> {
    let mut line = Vec::new();
    if reader.read_until(b'\n', &mut line)? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    let text = String::from_utf8_lossy(&line).trim_end().to_string();
    let (kind, rest) = match text.is_char_boundary(1) {
        true => text.split_at(1),
        false => ("", text.as_str()),
    };
    let number = || -> io::Result<i64> {
        rest.parse()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, text.clone()))
    };
    Ok(match kind {
        "+" => Resp::Simple(rest.to_string()),
        "-" => Resp::Error(rest.to_string()),
        ":" => Resp::Int(number()?),
        "$" if number()? < 0 => Resp::Bulk(None),
        "$" => {
            let mut data = vec![0; number()? as usize + 2];
            reader.read_exact(&mut data)?;
            data.truncate(data.len() - 2);
            Resp::Bulk(Some(data))
        }
        "*" if number()? < 0 => Resp::Array(None),
        "*" => Resp::Array(Some(
            (0..number()?)
                .map(|_| read_resp(reader))
                .collect::<io::Result<_>>()?,
        )),
        _ => return Err(io::Error::new(io::ErrorKind::InvalidData, text)),
    })
}

/// A raw RESP connection subscribed to one channel.
pub struct Subscriber {
    reader: BufReader<TcpStream>,
}

impl Subscriber {
    fn new(port: u16, channel: &str) -> Subscriber {
        let stream = connect(port).unwrap_or_else(|e| panic!("connect to redis: {e}"));
        (&stream)
            .write_all(&encode(&[b"SUBSCRIBE", channel.as_bytes()]))
            .expect("send SUBSCRIBE");
        let mut reader = BufReader::new(stream);
        match read_resp(&mut reader).expect("SUBSCRIBE reply") {
            Resp::Array(Some(items)) if items.first() == Some(&bulk(b"subscribe")) => {}
            other => panic!("SUBSCRIBE {channel}: unexpected reply {other:?}"),
        }
        Subscriber { reader }
    }

    /// The payload of the next message, or `None` after `timeout` without one.
    pub fn next_message(&mut self, timeout: Duration) -> Option<Vec<u8>> {
        let stream = self.reader.get_ref();
        stream
            .set_read_timeout(Some(timeout))
            .expect("set read timeout");
        match read_resp(&mut self.reader) {
            Ok(Resp::Array(Some(mut items)))
                if items.len() == 3 && items[0] == bulk(b"message") =>
            {
                match items.pop() {
                    Some(Resp::Bulk(Some(payload))) => Some(payload),
                    other => panic!("message without payload: {other:?}"),
                }
            }
            Ok(other) => panic!("unexpected push from redis: {other:?}"),
            Err(e) if is_timeout(&e) => None,
            Err(e) => panic!("reading from redis: {e}"),
        }
    }

    /// The next `n` payloads, panicking if one takes longer than `timeout`.
    pub fn messages(&mut self, n: usize, timeout: Duration) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| {
                self.next_message(timeout).unwrap_or_else(|| {
                    panic!("message {} of {n} not received in {timeout:?}", i + 1)
                })
            })
            .collect()
    }
}

/// Whether a read failed because its timeout expired.
fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn bulk(data: &[u8]) -> Resp {
    Resp::Bulk(Some(data.to_vec()))
}
