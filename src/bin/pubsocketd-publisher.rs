//! `pubsocketd-publisher`: publish each line of stdin on a Redis channel.
//!
//! A debugging companion of pubsocketd, compatible with go-pubsocketd's tool:
//! every line becomes the JSON object `{"Data":"<line>"}` (or, with `-raw`,
//! the line's bytes as they are) sent with `PUBLISH`, or, with `-stream`,
//! added to a Redis stream with `XADD` (for a relay run with
//! `-rs-mode=stream`).
//!
//! It speaks RESP over a plain `TcpStream` (the command written by the
//! relay's own `redis::resp::write`) because it sends one command and needs
//! no client library. Lines already waiting in stdin are pipelined and
//! their replies read when stdin has nothing more buffered, so a piped file
//! goes fast and an interactive line is published as soon as Enter is hit.

use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::net::TcpStream;
use std::process::exit;

use argh::FromArgs;
use pubsocketd::ops::flags::{parse_or_exit, FlagSpec};
use pubsocketd::redis::resp::write::command;

const PROG: &str = "pubsocketd-publisher";

/// Read lines on stdin and PUBLISH each one on a Redis channel, as the JSON
/// object {"Data":"<line>"} or, with -raw, as is.
#[derive(FromArgs)]
struct Args {
    /// redis host (default 127.0.0.1)
    #[argh(option, default = "String::from(\"127.0.0.1\")")]
    host: String,
    /// redis port (default 6379)
    #[argh(option, default = "6379")]
    port: u16,
    /// redis channel (default pubsocketd)
    #[argh(option, default = "String::from(\"pubsocketd\")")]
    channel: String,
    /// publish each line as is instead of wrapping it in {"Data":...} (default false)
    #[argh(switch)]
    raw: bool,
    /// add each line to the stream named by -channel (XADD, trimmed to
    /// about -stream-maxlen entries) instead of PUBLISH (default false)
    #[argh(switch)]
    stream: bool,
    /// with -stream: the entry field of the payload (default data)
    #[argh(option, default = "String::from(\"data\")")]
    stream_field: String,
    /// with -stream: MAXLEN ~ of each XADD (default 10000)
    #[argh(option, default = "10_000")]
    stream_maxlen: usize,
    /// print the version and exit
    #[argh(switch)]
    #[allow(dead_code)] // handled by parse_or_exit; declared so argh knows it
    version: bool,
}

fn main() {
    let args: Args = parse_or_exit(
        &FlagSpec {
            values: &["host", "port", "channel", "stream-field", "stream-maxlen"],
            switches: &["raw", "stream"],
            on_by_default: &[],
        },
        env!("CARGO_PKG_VERSION"),
    );
    if let Err(line) = run(&args) {
        eprintln!("{PROG}: {line}");
        exit(1);
    }
}

/// Connects, then publishes every stdin line until end of input.
fn run(args: &Args) -> Result<(), String> {
    let addr = host_port(&args.host, args.port);
    eprintln!("connecting to {addr}...");
    let stream = TcpStream::connect((args.host.as_str(), args.port))
        .map_err(|e| format!("cannot connect to {addr}: {}", io_text(&e)))?;
    let _ = stream.set_nodelay(true);
    let replies = stream
        .try_clone()
        .map_err(|e| format!("cannot use the connection to {addr}: {}", io_text(&e)))?;
    let mut redis = Redis {
        out: BufWriter::new(stream),
        replies: BufReader::new(replies),
        pending: 0,
    };
    eprintln!("connected to {addr} and ready to send new messages");
    let stdin = BufReader::with_capacity(1 << 16, io::stdin().lock());
    publish_lines(stdin, &mut redis, args)
}

/// The publishing loop: one PUBLISH per line, replies read in batches.
fn publish_lines<R: Read>(
    mut input: BufReader<R>,
    redis: &mut Redis,
    args: &Args,
) -> Result<(), String> {
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = input
            .read_until(b'\n', &mut line)
            .map_err(|e| format!("reading stdin: {}", io_text(&e)))?;
        if n == 0 {
            return redis.sync();
        }
        let payload = payload(trim_eol(&line), args.raw);
        let cmd = match args.stream {
            true => xadd(args, &payload),
            false => command(&[b"PUBLISH", args.channel.as_bytes(), &payload]),
        };
        redis.send(&cmd)?;
        if input.buffer().is_empty() {
            redis.sync()?;
        }
    }
}

/// `XADD <channel> MAXLEN ~ <n> * <field> <payload>`.
fn xadd(args: &Args, payload: &[u8]) -> Vec<u8> {
    let maxlen = args.stream_maxlen.to_string();
    command(&[
        b"XADD",
        args.channel.as_bytes(),
        b"MAXLEN",
        b"~",
        maxlen.as_bytes(),
        b"*",
        args.stream_field.as_bytes(),
        payload,
    ])
}

/// `line` without its trailing `\n` or `\r\n`.
fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// What is published for `line`: the bytes themselves with `-raw`, else the
/// JSON object `{"Data":"<line>"}` (invalid UTF-8 replaced by U+FFFD).
fn payload(line: &[u8], raw: bool) -> Vec<u8> {
    if raw {
        return line.to_vec();
    }
    let text = String::from_utf8_lossy(line);
    serde_json::json!({ "Data": text }).to_string().into_bytes()
}

/// A Redis connection with unanswered commands in flight.
struct Redis {
    out: BufWriter<TcpStream>,
    replies: BufReader<TcpStream>,
    pending: usize,
}

impl Redis {
    /// Queues a PUBLISH or XADD (sent by the next [`Redis::sync`]).
    fn send(&mut self, cmd: &[u8]) -> Result<(), String> {
        self.out.write_all(cmd).map_err(|e| sending(&e))?;
        self.pending += 1;
        Ok(())
    }

    /// Sends the queued commands and checks every reply.
    fn sync(&mut self) -> Result<(), String> {
        self.out.flush().map_err(|e| sending(&e))?;
        while self.pending > 0 {
            self.read_reply()?;
            self.pending -= 1;
        }
        Ok(())
    }

    /// Reads one reply: `:N` (PUBLISH) or `$n` and the new entry's ID
    /// (XADD) is success, `-ERR ...` a refusal.
    fn read_reply(&mut self) -> Result<(), String> {
        let mut reply = Vec::new();
        let n = self
            .replies
            .read_until(b'\n', &mut reply)
            .map_err(|e| format!("reading a reply: {}", io_text(&e)))?;
        if n == 0 {
            return Err("connection closed by redis".to_string());
        }
        let reply = String::from_utf8_lossy(trim_eol(&reply)).into_owned();
        match reply.as_bytes().first() {
            Some(b':') => Ok(()),
            Some(b'$') if reply != "$-1" => {
                let mut id = Vec::new();
                self.replies
                    .read_until(b'\n', &mut id)
                    .map_err(|e| format!("reading a reply: {}", io_text(&e)))?;
                Ok(())
            }
            Some(b'-') => Err(format!("redis refused: {}", &reply[1..])),
            _ => Err(format!("unexpected reply from redis: {reply:?}")),
        }
    }
}

/// The error text for a failed write to Redis.
fn sending(e: &io::Error) -> String {
    format!("sending to redis: {}", io_text(e))
}

/// `host:port`, with brackets around an IPv6 address.
fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// An I/O error's text without Rust's " (os error N)" suffix.
fn io_text(e: &io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}
