//! The client side of the WebSocket protocol, as much as a load generator
//! needs: the upgrade request and the check of its answer, a read-only
//! parser for the server's (unmasked) frames, and masked control frames
//! to answer pings and closes.

use std::ops::Range;

pub use pubsocketd::ws::frame::{OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT};

/// One complete frame at the front of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    /// RSV1: the message is compressed (permessage-deflate).
    pub compressed: bool,
    pub opcode: u8,
    /// Where the payload is in the buffer given to [`parse`].
    pub payload: Range<usize>,
    /// Bytes the whole frame takes (header and payload).
    pub len: usize,
}

/// A frame no server may send: the connection is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// Server frames must not be masked (RFC 6455 section 5.1).
    Masked,
    /// RSV bits set without an extension that defines them.
    Reserved,
    /// Opcode 3–7 or B–F.
    BadOpcode(u8),
    /// Control frames carry at most 125 bytes and are never fragmented.
    BadControl,
    /// A frame longer than the client accepts.
    TooLarge(u64),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Masked => write!(f, "masked server frame"),
            FrameError::Reserved => write!(f, "reserved bits set"),
            FrameError::BadOpcode(op) => write!(f, "unknown opcode {op:#x}"),
            FrameError::BadControl => write!(f, "fragmented or oversized control frame"),
            FrameError::TooLarge(n) => write!(f, "{n}-byte frame over the limit"),
        }
    }
}

/// What the front of a buffer holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Frame(Frame),
    /// Not a whole frame yet; when the header is complete, the frame's
    /// total length (so the caller can make room for it).
    Incomplete(Option<usize>),
}

/// Parses the frame at the front of `buf`; frames over `max` bytes of
/// payload are an error, and so is RSV1 unless `deflate` was negotiated.
pub fn parse(buf: &[u8], max: usize, deflate: bool) -> Result<Parsed, FrameError> {
    let [b0, b1, ..] = *buf else {
        return Ok(Parsed::Incomplete(None));
    };
    let allowed = if deflate { 0x40 } else { 0 };
    if b0 & 0x70 & !allowed != 0 {
        return Err(FrameError::Reserved);
    }
    if b1 & 0x80 != 0 {
        return Err(FrameError::Masked);
    }
    let fin = b0 & 0x80 != 0;
    let opcode = b0 & 0x0F;
    match opcode {
        OP_CONTINUATION | OP_TEXT | OP_BINARY => {}
        OP_CLOSE | OP_PING | OP_PONG => {
            if !fin || b1 & 0x7F > 125 {
                return Err(FrameError::BadControl);
            }
        }
        op => return Err(FrameError::BadOpcode(op)),
    }
    // RSV1 marks the first frame of a compressed message, nothing else.
    if b0 & 0x40 != 0 && !matches!(opcode, OP_TEXT | OP_BINARY) {
        return Err(FrameError::Reserved);
    }
    let (head, len) = match b1 & 0x7F {
        126 => match buf.get(2..4) {
            Some(b) => (4, u64::from(u16::from_be_bytes([b[0], b[1]]))),
            None => return Ok(Parsed::Incomplete(None)),
        },
        127 => match buf.get(2..10) {
            Some(b) => (10, u64::from_be_bytes(b.try_into().expect("8 bytes"))),
            None => return Ok(Parsed::Incomplete(None)),
        },
        n => (2, u64::from(n)),
    };
    if len > max as u64 {
        return Err(FrameError::TooLarge(len));
    }
    let total = head + len as usize;
    if buf.len() < total {
        return Ok(Parsed::Incomplete(Some(total)));
    }
    Ok(Parsed::Frame(Frame {
        fin,
        compressed: b0 & 0x40 != 0,
        opcode,
        payload: head..total,
        len: total,
    }))
}

/// Appends a masked client frame (final, `opcode`, `payload` ≤ 125 bytes
/// for control frames) to `out`.
pub fn encode_masked(opcode: u8, payload: &[u8], mask: [u8; 4], out: &mut Vec<u8>) {
    let start = out.len();
    pubsocketd::ws::frame::put_header(out, opcode, payload.len());
    out[start + 1] |= 0x80; // the MASK bit: client frames are masked
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
}

/// The upgrade request for `path` on `host`, with an Origin when given.
pub fn request(host: &str, path: &str, origin: Option<&str>, key: &str, deflate: bool) -> Vec<u8> {
    let mut r = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    );
    if deflate {
        // Every message on its own, as browsers can be asked to: the
        // client inflates each one with a fresh window.
        r.push_str(
            "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover; server_no_context_takeover\r\n",
        );
    }
    if let Some(o) = origin {
        r.push_str("Origin: ");
        r.push_str(o);
        r.push_str("\r\n");
    }
    r.push_str("\r\n");
    r.into_bytes()
}

/// Whether a 101 response head agrees to permessage-deflate.
pub fn deflate_agreed(head: &[u8]) -> bool {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    if resp.parse(head).is_err() {
        return false;
    }
    resp.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("sec-websocket-extensions")
            && h.value
                .trim_ascii_start()
                .starts_with(b"permessage-deflate")
    })
}

/// A key: 16 bytes (from `seed`) in base64.
pub fn key(seed: u64) -> String {
    use base64::Engine;
    let mut raw = [0u8; 16];
    raw[..8].copy_from_slice(&seed.to_le_bytes());
    raw[8..].copy_from_slice(
        &seed
            .rotate_left(29)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .to_le_bytes(),
    );
    base64::engine::general_purpose::STANDARD.encode(raw)
}

/// Why an upgrade failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The server answered with another status than 101.
    Status(u16),
    /// 101 without the right `Sec-WebSocket-Accept` (or Upgrade header).
    BadAccept,
    /// Not HTTP.
    Malformed,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Status(s) => write!(f, "HTTP {s}"),
            Refused::BadAccept => write!(f, "101 with a wrong Sec-WebSocket-Accept"),
            Refused::Malformed => write!(f, "malformed HTTP response"),
        }
    }
}

/// A response head the server sent, with the status a transport expects.
pub struct Head<'b> {
    /// Bytes the head takes (what follows is the transport's).
    pub len: usize,
    headers: Vec<(&'b str, &'b [u8])>,
}

impl<'b> Head<'b> {
    /// A header's value, trimmed (the first, by case-insensitive name).
    pub fn get(&self, name: &str) -> Option<&'b [u8]> {
        let found = self.headers.iter().find(|h| h.0.eq_ignore_ascii_case(name));
        found.map(|h| h.1.trim_ascii())
    }
}

/// Why a head is not the expected one.
pub enum HeadError {
    Malformed,
    Status(u16),
}

/// Parses the response head at the front of `buf`, which must have status
/// `want`; `Ok(None)` when incomplete. Once per connection, for both
/// transports.
pub fn response_head(buf: &[u8], want: u16) -> Result<Option<Head<'_>>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(HeadError::Malformed),
    };
    match resp.code.unwrap_or(0) {
        s if s == want => Ok(Some(Head {
            len,
            headers: resp.headers.iter().map(|h| (h.name, h.value)).collect(),
        })),
        s => Err(HeadError::Status(s)),
    }
}

/// Checks the server's answer at the front of `buf` for the request made
/// with `key`: `Ok(Some(n))` when it is a valid 101 of `n` bytes (what
/// follows is WebSocket traffic), `Ok(None)` when incomplete.
pub fn check_response(buf: &[u8], key: &str) -> Result<Option<usize>, Refused> {
    let head = match response_head(buf, 101) {
        Ok(Some(head)) => head,
        Ok(None) => return Ok(None),
        Err(HeadError::Malformed) => return Err(Refused::Malformed),
        Err(HeadError::Status(s)) => return Err(Refused::Status(s)),
    };
    let header = |name: &str| head.get(name);
    let n = head.len;
    let expected = pubsocketd::ws::handshake::accept_key(key.as_bytes());
    let upgrade_ok = header("upgrade").is_some_and(|v| v.eq_ignore_ascii_case(b"websocket"));
    if !upgrade_ok || header("sec-websocket-accept") != Some(expected.as_bytes()) {
        return Err(Refused::BadAccept);
    }
    Ok(Some(n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pubsocketd::ws::frame;

    fn frames_of(buf: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        let mut at = 0;
        while let Parsed::Frame(f) = parse(&buf[at..], 1 << 20, false).unwrap() {
            out.push((f.opcode, buf[at..][f.payload.clone()].to_vec()));
            at += f.len;
        }
        assert_eq!(at, buf.len());
        out
    }

    #[test]
    fn reads_what_the_relay_encodes_at_every_header_size() {
        let mut stream = Vec::new();
        let sizes = [0usize, 1, 125, 126, 65535, 65536, 70000];
        for n in sizes {
            stream.extend_from_slice(&frame::encode(frame::OP_TEXT, &vec![b'a'; n]));
        }
        stream.extend_from_slice(&frame::encode(OP_PING, b"p"));
        stream.extend_from_slice(&frame::close(1001, "bye"));
        let got = frames_of(&stream);
        assert_eq!(got.len(), sizes.len() + 2);
        for (i, n) in sizes.iter().enumerate() {
            assert_eq!(got[i].0, OP_TEXT);
            assert_eq!(got[i].1.len(), *n);
        }
        assert_eq!(got[sizes.len()], (OP_PING, b"p".to_vec()));
        assert_eq!(got[sizes.len() + 1].0, OP_CLOSE);
        assert_eq!(&got[sizes.len() + 1].1[..2], &1001u16.to_be_bytes());
    }

    #[test]
    fn every_prefix_is_incomplete_and_says_its_size_once_known() {
        let f = frame::encode(frame::OP_TEXT, &[b'z'; 300]);
        for cut in 0..f.len() {
            match parse(&f[..cut], 1 << 20, false).unwrap() {
                Parsed::Incomplete(None) => assert!(cut < 4, "cut {cut}"),
                Parsed::Incomplete(Some(n)) => assert_eq!(n, f.len()),
                Parsed::Frame(_) => panic!("complete at {cut}"),
            }
        }
    }

    #[test]
    fn broken_frames_are_errors() {
        assert_eq!(parse(b"\x81\x82abcd", 100, false), Err(FrameError::Masked));
        assert_eq!(parse(b"\xC1\x00", 100, false), Err(FrameError::Reserved));
        assert!(matches!(parse(b"\xC1\x00", 100, true), Ok(Parsed::Frame(f)) if f.compressed));
        assert_eq!(parse(b"\xE1\x00", 100, true), Err(FrameError::Reserved));
        assert_eq!(parse(b"\xC9\x00", 100, true), Err(FrameError::Reserved));
        assert_eq!(parse(b"\xC0\x00", 100, true), Err(FrameError::Reserved));
        assert_eq!(
            parse(b"\x83\x00", 100, false),
            Err(FrameError::BadOpcode(3))
        );
        assert_eq!(parse(b"\x09\x00", 100, false), Err(FrameError::BadControl));
        assert_eq!(
            parse(b"\x89\x7e\x00\x80", 100, false),
            Err(FrameError::BadControl)
        );
        assert_eq!(
            parse(b"\x82\x7f\x00\x00\x00\x01\x00\x00\x00\x00", 100, false),
            Err(FrameError::TooLarge(1 << 32))
        );
    }

    #[test]
    fn masked_frames_unmask_to_the_payload() {
        let mut out = Vec::new();
        encode_masked(OP_PONG, b"hello", [1, 2, 3, 4], &mut out);
        assert_eq!(&out[..2], b"\x8a\x85");
        let unmasked: Vec<u8> = out[6..]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ out[2 + i % 4])
            .collect();
        assert_eq!(unmasked, b"hello");
        // The relay's own decoder accepts it.
        let mut buf = bytes::BytesMut::from(&out[..]);
        let mut d = pubsocketd::ws::decode::Decoder::new(1024);
        assert!(matches!(
            d.decode(&mut buf),
            Ok(Some(pubsocketd::ws::decode::Event::Pong))
        ));
    }

    #[test]
    fn handshake_answers_are_checked() {
        let k = key(7);
        assert_eq!(k.len(), 24);
        let req = request("127.0.0.1:8080", "/", Some("http://x"), &k, false);
        let mut ok = pubsocketd::ws::handshake::switching_protocols(
            &pubsocketd::ws::handshake::accept_key(k.as_bytes()),
            None,
            pubsocketd::ws::handshake::Protocol::Original,
        );
        ok.extend_from_slice(b"\x81\x00");
        assert!(String::from_utf8(req)
            .unwrap()
            .contains("Origin: http://x\r\n"));
        assert_eq!(check_response(&ok, &k), Ok(Some(ok.len() - 2)));
        assert_eq!(check_response(&ok[..20], &k), Ok(None));
        assert_eq!(check_response(&ok, &key(8)), Err(Refused::BadAccept));
        let forbidden = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(check_response(forbidden, &k), Err(Refused::Status(403)));
        assert_eq!(
            check_response(b"\x00\x01garbage\r\n\r\n", &k),
            Err(Refused::Malformed)
        );
    }
}
