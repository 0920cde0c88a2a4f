//! Fuzz properties of the parsers that read untrusted bytes.
//!
//! Each function takes arbitrary bytes and panics when an invariant of the
//! parser under test is broken. The libFuzzer targets in `fuzz/` call them,
//! and so does `tests/fuzz_corpus.rs`, which replays the committed corpus in
//! an ordinary `cargo test`: both run exactly the same checks.
//!
//! | function | parser |
//! | --- | --- |
//! | [`resp`] | [`redis::resp::PushReader`] (cross-checked with `redis-protocol`) |
//! | [`handshake`] | [`ws::handshake::parse`] |
//! | [`client_frames`] | [`ws::decode::Decoder`] |
//! | [`origin`] | [`ws::origin::Origin`] and [`OriginPolicy::check`] |
//! | [`flags`] | [`flags::normalize`] with the relay's flags |

use crate::config::{Args, ON_BY_DEFAULT_FLAGS, SWITCH_FLAGS, VALUE_FLAGS};
use crate::flags::{self, FlagSpec};
use crate::redis::{self, resp::Item};
use crate::ws::{self, decode::Event, decode::Violation, origin::Origin, origin::OriginPolicy};
use base64::Engine;
use bytes::{Buf, BytesMut};
use redis_protocol::resp2::types::{BytesFrame, OwnedFrame};

/// Payload cap of the [`resp`] reader: small, so oversized pushes are common.
pub const RESP_MAX_PAYLOAD: usize = 64;
/// Message cap of the [`client_frames`] decoder.
pub const WS_MAX_MESSAGE: usize = 1024;
/// Inputs up to this size are split at every point; larger ones at
/// [`RANDOM_SPLITS`] points derived from the input.
const ALL_SPLITS_UP_TO: usize = 512;
const RANDOM_SPLITS: usize = 64;

/// Where to cut `data` for the split runs: every point for small inputs,
/// otherwise pseudo-random points derived from the input itself (so a
/// replayed input is always checked the same way).
fn split_points(data: &[u8]) -> Vec<usize> {
    let n = data.len();
    if n <= ALL_SPLITS_UP_TO {
        return (1..n).collect();
    }
    // FNV-1a of the first bytes and the length seeds a xorshift64.
    let mut seed = 0xcbf2_9ce4_8422_2325u64 ^ n as u64;
    for b in &data[..32] {
        seed = (seed ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    let mut points: Vec<usize> = (0..RANDOM_SPLITS)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            1 + (seed % (n as u64 - 1)) as usize
        })
        .collect();
    points.sort_unstable();
    points.dedup();
    points
}

/// The pieces of `data` between the sorted cut points `cuts`.
fn pieces<'a>(data: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::with_capacity(cuts.len() + 1);
    let mut from = 0;
    for &cut in cuts {
        out.push(&data[from..cut]);
        from = cut;
    }
    out.push(&data[from..]);
    out
}

// ---------------------------------------------------------------- RESP ----

/// An [`Item`] with owned bytes, comparable across runs.
#[derive(Debug, PartialEq)]
enum RespItem {
    Message {
        pattern: Option<Vec<u8>>,
        channel: Vec<u8>,
        payload: Vec<u8>,
    },
    Oversized {
        channel: String,
        len: usize,
    },
    Reply(BytesFrame),
}

/// What one pass of a [`redis::resp::PushReader`] over a stream produced.
#[derive(Debug, PartialEq)]
struct RespRun {
    items: Vec<RespItem>,
    /// The error, if the stream was refused (items stop there).
    error: Option<String>,
    /// Bytes still buffered at the end (only compared without an error).
    leftover: Vec<u8>,
}

/// Feeds the pieces of a stream to a fresh reader, draining it after each.
fn resp_run(pieces: &[&[u8]]) -> RespRun {
    let mut reader = redis::resp::PushReader::new(RESP_MAX_PAYLOAD);
    let mut buf = BytesMut::new();
    let mut items = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            match reader.next(&mut buf) {
                Ok(Some(item)) => items.push(resp_item(item, &mut buf)),
                Ok(None) => break,
                Err(e) => {
                    return RespRun {
                        items,
                        error: Some(e.0),
                        leftover: Vec::new(),
                    }
                }
            }
        }
        if let Some(total) = reader.wanted(&buf) {
            assert!(
                total > buf.len(),
                "wanted() = {total} for an incomplete item, but {} bytes are buffered",
                buf.len()
            );
        }
    }
    RespRun {
        items,
        error: None,
        leftover: buf.to_vec(),
    }
}

/// Checks one item and makes it owned (advancing `buf` past a message).
fn resp_item(item: Item, buf: &mut BytesMut) -> RespItem {
    match item {
        Item::Message {
            pattern,
            channel,
            payload,
            consumed,
        } => {
            assert!(consumed <= buf.len(), "consumed past the buffer");
            assert!(channel.end <= payload.start && payload.end + 2 == consumed);
            assert!(payload.len() <= RESP_MAX_PAYLOAD, "payload over the cap");
            let kind: &[u8] = if pattern.is_some() {
                b"pmessage"
            } else if buf.starts_with(b"*3\r\n$8\r\nsmessage") {
                b"smessage"
            } else {
                b"message"
            };
            let owned = RespItem::Message {
                pattern: pattern.map(|p| buf[p].to_vec()),
                channel: buf[channel].to_vec(),
                payload: buf[payload].to_vec(),
            };
            // The fast path must read a push exactly as redis-protocol does.
            let (frame, amt) = redis_protocol::resp2::decode::decode(&buf[..consumed])
                .unwrap_or_else(|e| panic!("redis-protocol refuses a message push: {e:?}"))
                .expect("redis-protocol finds the message push incomplete");
            assert_eq!(amt, consumed, "redis-protocol reads another length");
            let RespItem::Message {
                pattern,
                channel,
                payload,
            } = &owned
            else {
                unreachable!()
            };
            let mut expected = vec![OwnedFrame::BulkString(kind.to_vec())];
            expected.extend(pattern.iter().map(|p| OwnedFrame::BulkString(p.clone())));
            expected.push(OwnedFrame::BulkString(channel.clone()));
            expected.push(OwnedFrame::BulkString(payload.clone()));
            assert_eq!(
                frame,
                OwnedFrame::Array(expected),
                "redis-protocol reads the push differently"
            );
            buf.advance(consumed);
            owned
        }
        Item::Oversized { channel, len } => {
            assert!(len > RESP_MAX_PAYLOAD, "oversized but within the cap");
            RespItem::Oversized { channel, len }
        }
        Item::Reply(frame) => RespItem::Reply(frame),
    }
}

/// `PushReader` reads the same items from a stream however it is split.
///
/// The whole stream is read at once, then again cut at every point (at
/// pseudo-random points for inputs over 512 bytes), and once cut at all
/// those points together. Every run must give the same items, the same
/// error (or none) and, without an error, the same leftover bytes. Every
/// `message` push is also decoded with `redis-protocol`, which must read
/// the same channel and payload.
pub fn resp(data: &[u8]) {
    let whole = resp_run(&[data]);
    let cuts = split_points(data);
    for &cut in &cuts {
        let split = resp_run(&pieces(data, &[cut]));
        assert_resp_same(&whole, &split, &format!("split at {cut}"));
    }
    if cuts.len() > 1 {
        let many = resp_run(&pieces(data, &cuts));
        assert_resp_same(&whole, &many, "split at every point");
    }
}

fn assert_resp_same(whole: &RespRun, split: &RespRun, how: &str) {
    assert_eq!(whole.items, split.items, "items differ when {how}");
    assert_eq!(
        whole.error.is_some(),
        split.error.is_some(),
        "error or not differs when {how}: {:?} vs {:?}",
        whole.error,
        split.error
    );
    assert_eq!(
        whole.leftover, split.leftover,
        "leftover differs when {how}"
    );
}

// ----------------------------------------------------------- handshake ----

/// The allow-list of the [`handshake`] and [`origin`] targets.
fn allow_list() -> OriginPolicy {
    OriginPolicy::List(
        [
            "http://a.example",
            "https://[::1]:8443",
            "chrome-extension://abc",
        ]
        .iter()
        .map(|s| Origin::parse(s).expect("valid origin"))
        .collect(),
    )
}

/// Parses one request head and checks what comes back.
fn handshake_with(
    data: &[u8],
    policy: &OriginPolicy,
) -> Result<Option<ws::handshake::Accepted>, ws::handshake::Refusal> {
    let result = ws::handshake::parse(data, "/", policy);
    match &result {
        Ok(Some(ok)) => {
            assert!(ok.consumed <= data.len(), "consumed past the buffer");
            assert!(ok.consumed <= ws::handshake::MAX_REQUEST);
            assert_eq!(ok.accept.len(), 28, "accept key {:?}", ok.accept);
            let raw = base64::engine::general_purpose::STANDARD
                .decode(&ok.accept)
                .expect("accept key is base64");
            assert_eq!(raw.len(), 20, "accept key is not a SHA-1");
            // Bytes after the head (pipelined frames) change nothing.
            let head = ws::handshake::parse(&data[..ok.consumed], "/", policy);
            assert_eq!(head, result, "the bytes after the head change the result");
            // One byte less is an incomplete head.
            let short = ws::handshake::parse(&data[..ok.consumed - 1], "/", policy);
            assert_eq!(
                short,
                Ok(None),
                "a prefix of an accepted head is not partial"
            );
            let response = ws::handshake::switching_protocols(&ok.accept, None);
            let (status, body) = parse_response(&response);
            assert_eq!((status, body), (101, 0));
        }
        Ok(None) => {
            assert!(
                data.len() < ws::handshake::MAX_REQUEST,
                "a full buffer must be answered, not wait for more"
            );
        }
        Err(refusal) => {
            assert!(
                matches!(refusal.status, 400 | 403 | 404 | 405 | 426 | 431),
                "unexpected status {}",
                refusal.status
            );
            let response = refusal.response();
            let (status, body) = parse_response(&response);
            assert_eq!(status, refusal.status, "status line differs");
            assert_eq!(body, refusal.reason.len() + 1, "body is the reason line");
        }
    }
    result
}

/// Parses a complete response; returns the status and the body length
/// (checked against `Content-Length`).
fn parse_response(response: &[u8]) -> (u16, usize) {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut parsed = httparse::Response::new(&mut headers);
    let head = match parsed.parse(response) {
        Ok(httparse::Status::Complete(n)) => n,
        other => panic!(
            "response is not well-formed ({other:?}): {:?}",
            String::from_utf8_lossy(response)
        ),
    };
    assert_eq!(parsed.version, Some(1), "not HTTP/1.1");
    let status = parsed.code.expect("status code");
    assert!(!parsed.reason.unwrap_or("").is_empty(), "no reason phrase");
    let body = response.len() - head;
    let lengths: Vec<&[u8]> = parsed
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("content-length"))
        .map(|h| h.value)
        .collect();
    if status == 101 {
        assert!(lengths.is_empty(), "101 with a Content-Length");
    } else {
        assert_eq!(lengths.len(), 1, "exactly one Content-Length");
        let declared: usize = std::str::from_utf8(lengths[0])
            .ok()
            .and_then(|v| v.parse().ok())
            .expect("numeric Content-Length");
        assert_eq!(declared, body, "Content-Length is not the body length");
    }
    (status, body)
}

/// `handshake::parse` never panics, and what it answers is consistent.
///
/// The head is parsed for route `/` with an allow-list and with
/// `OriginPolicy::Any`. An accepted head has a 28-character base64 accept
/// key, took at most the buffer, and is accepted the same without the bytes
/// after it (while one byte less is incomplete). A refusal's response is a
/// well-formed HTTP/1.1 response whose status and `Content-Length` match.
/// The two policies agree except that the allow-list may refuse with 403
/// what `Any` accepts.
pub fn handshake(data: &[u8]) {
    let strict = handshake_with(data, &allow_list());
    let any = handshake_with(data, &OriginPolicy::Any);
    match (&strict, &any) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "policies disagree on an accepted head"),
        (Err(a), Err(b)) => assert_eq!(a, b, "policies refuse differently"),
        (Err(a), Ok(_)) => assert_eq!(a.status, 403, "allow-list refused with {}", a.status),
        (Ok(_), Err(b)) => panic!("Any refused what the allow-list accepted: {b:?}"),
    }
}

// ------------------------------------------------------- client frames ----

/// What one pass of a [`ws::decode::Decoder`] over a stream produced.
#[derive(Debug, PartialEq)]
struct FrameRun {
    events: Vec<Event>,
    violation: Option<Violation>,
    /// Bytes still buffered at the end (only compared without a violation).
    leftover: usize,
}

fn frames_run(pieces: &[&[u8]], deflate: bool) -> FrameRun {
    let mut decoder = match deflate {
        true => ws::decode::Decoder::with_deflate(WS_MAX_MESSAGE),
        false => ws::decode::Decoder::new(WS_MAX_MESSAGE),
    };
    let mut buf = BytesMut::new();
    let mut events = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            let before = buf.len();
            match decoder.decode(&mut buf) {
                Ok(Some(event)) => {
                    assert!(buf.len() < before, "an event consumed no bytes");
                    check_event(&event);
                    events.push(event);
                }
                Ok(None) => break,
                Err(violation) => {
                    assert!(
                        matches!(violation.code, 1002 | 1007 | 1009),
                        "unexpected close code {violation:?}"
                    );
                    // The connection is closed now: nothing more is read.
                    return FrameRun {
                        events,
                        violation: Some(violation),
                        leftover: 0,
                    };
                }
            }
        }
    }
    FrameRun {
        events,
        violation: None,
        leftover: buf.len(),
    }
}

fn check_event(event: &Event) {
    match event {
        Event::Ping(payload) => assert!(payload.len() <= 125, "ping over 125 bytes"),
        Event::Close(Some(code)) => assert!(ws::decode::valid_close_code(*code)),
        Event::Message { len, .. } => assert!(*len <= WS_MAX_MESSAGE, "message over the cap"),
        Event::Close(None) | Event::Pong => {}
    }
}

/// `Decoder` gives the same events however the client's bytes arrive.
///
/// The stream is decoded whole, byte by byte, and cut in two at every
/// point (pseudo-random points for inputs over 512 bytes). Every run must
/// give the same events up to the same violation (or none), and no run
/// goes on after its first violation. Events respect the limits (pings of at
/// most 125 bytes, messages of at most 1024, valid close codes).
pub fn client_frames(data: &[u8]) {
    // Plain, and with permessage-deflate (RSV1 messages are inflated).
    for deflate in [false, true] {
        let whole = frames_run(&[data], deflate);
        let bytes: Vec<&[u8]> = data.chunks(1).collect();
        assert_frames_same(&whole, &frames_run(&bytes, deflate), "fed byte by byte");
        for cut in split_points(data) {
            let split = frames_run(&pieces(data, &[cut]), deflate);
            assert_frames_same(&whole, &split, &format!("split at {cut}"));
        }
    }
}

fn assert_frames_same(whole: &FrameRun, split: &FrameRun, how: &str) {
    assert_eq!(whole, split, "decoding differs when {how}");
}

// -------------------------------------------------------------- origin ----

/// `Origin::parse` round-trips and `OriginPolicy::check` never panics.
///
/// On valid UTF-8, a parsed origin serialises to a string that parses back
/// to an equal origin with the same serialisation, and ASCII case never
/// changes the result. `check` accepts exactly the parsed origins in its
/// list, on any bytes.
pub fn origin(data: &[u8]) {
    let policy = allow_list();
    let verdict = policy.check(Some(data));
    assert_eq!(OriginPolicy::Any.check(Some(data)), Ok(()));
    let Ok(text) = std::str::from_utf8(data) else {
        assert!(verdict.is_err(), "non-UTF-8 Origin accepted");
        return;
    };
    let parsed = Origin::parse(text);
    if let Ok(origin) = &parsed {
        let serialised = origin.to_string();
        let again = Origin::parse(&serialised)
            .unwrap_or_else(|e| panic!("{serialised:?} (from {text:?}) does not parse: {e}"));
        assert_eq!(&again, origin, "{text:?} does not round-trip");
        assert_eq!(again.to_string(), serialised);
    }
    assert_eq!(
        Origin::parse(&text.to_ascii_lowercase()),
        parsed,
        "lower case changes the result"
    );
    assert_eq!(
        Origin::parse(&text.to_ascii_uppercase()),
        parsed,
        "upper case changes the result"
    );
    let trimmed = text.trim();
    let allowed = trimmed != "null"
        && Origin::parse(trimmed).is_ok_and(|o| {
            let OriginPolicy::List(list) = &policy else {
                unreachable!()
            };
            list.contains(&o)
        });
    assert_eq!(verdict.is_ok(), allowed, "check disagrees with parse");
}

// --------------------------------------------------------------- flags ----

/// `flags::normalize` with the relay's flags is total, well-formed and
/// idempotent.
///
/// `data` is split into arguments at NUL bytes (lossy UTF-8). On success the
/// output is `--help`, `--version`, or argh's spelling: `--name value` for
/// each value flag, then `--switch` for each set switch and `--name
/// true|false` for each switch that is on by default, each at most once,
/// then the untouched tail of the arguments where flag parsing stopped (at
/// the first non-flag, or at `--`, which is kept). Normalising the output
/// again gives the same output (once `--name true|false` of a switch that
/// is on by default is respelt `--name=true|false`), and argh never accepts arguments that had a
/// tail (so nothing after `--` or a positional is applied as a flag).
pub fn flags(data: &[u8]) {
    let args: Vec<String> = if data.is_empty() {
        Vec::new()
    } else {
        data.split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect()
    };
    let spec = FlagSpec {
        values: VALUE_FLAGS,
        switches: SWITCH_FLAGS,
        on_by_default: ON_BY_DEFAULT_FLAGS,
    };
    let Ok(out) = flags::normalize(&args, &spec) else {
        return;
    };
    let tail = check_flag_shape(&out, &spec);
    if !tail.is_empty() {
        assert!(
            args.ends_with(tail),
            "tail {tail:?} is not the end of {args:?}"
        );
    }
    // Idempotence, with one respelling: a switch that is on by default comes
    // out as argh's `--ws-deflate false`, which in Go's syntax (and so for
    // `normalize`) is a bare switch and a positional `false`; its Go
    // spelling is `--ws-deflate=false`.
    let mut go_form: Vec<String> = Vec::with_capacity(out.len());
    let flags_end = out.len() - tail.len();
    let mut i = 0;
    while i < flags_end {
        let on_by_default = out[i]
            .strip_prefix("--")
            .is_some_and(|name| spec.on_by_default.contains(&name));
        if on_by_default {
            go_form.push(format!("{}={}", out[i], out[i + 1]));
            i += 2;
        } else {
            go_form.push(out[i].clone());
            i += 1;
        }
    }
    go_form.extend_from_slice(tail);
    let again = flags::normalize(&go_form, &spec)
        .unwrap_or_else(|e| panic!("normalised {go_form:?} (from {args:?}) is refused: {e}"));
    assert_eq!(again, out, "normalize is not idempotent on {args:?}");
    let positional = tail.strip_prefix(&["--".to_string()][..]).unwrap_or(tail);
    let parsed = flags::parse_from::<Args>("pubsocketd", &args, &spec);
    if !positional.is_empty() {
        assert!(
            parsed.is_err(),
            "{args:?} has positional arguments {positional:?} but argh accepted it: {parsed:?}"
        );
    }
}

/// Checks the shape of normalised arguments; returns the passed-on tail.
fn check_flag_shape<'o>(out: &'o [String], spec: &FlagSpec<'_>) -> &'o [String] {
    if out == ["--help"] || out == ["--version"] {
        return &[];
    }
    let known = |list: &[&str], arg: &str| {
        arg.strip_prefix("--")
            .is_some_and(|name| list.contains(&name))
    };
    let mut seen: Vec<&str> = Vec::new();
    let mut i = 0;
    while i < out.len() && known(spec.values, &out[i]) {
        assert!(i + 1 < out.len(), "value flag {} without a value", out[i]);
        assert!(!seen.contains(&out[i].as_str()), "{} twice", out[i]);
        seen.push(&out[i]);
        i += 2;
    }
    while let Some(arg) = out.get(i) {
        let step = if known(spec.switches, arg) {
            1
        } else if known(spec.on_by_default, arg) {
            // Handed to argh with its value: `--ws-deflate false`.
            let value = out.get(i + 1).map(String::as_str);
            assert!(
                matches!(value, Some("true" | "false")),
                "{arg} followed by {value:?}"
            );
            2
        } else {
            break;
        };
        assert!(!seen.contains(&arg.as_str()), "{arg} twice");
        seen.push(arg);
        i += step;
    }
    let tail = &out[i..];
    if let Some(first) = tail.first() {
        let is_flag = first.len() >= 2 && first.starts_with('-');
        assert!(
            first == "--" || !is_flag,
            "tail {tail:?} starts with a flag-like argument that argh would read as a flag"
        );
    }
    tail
}
