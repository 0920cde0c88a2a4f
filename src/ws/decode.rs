//! Client-to-server frames: validated, unmasked, mostly ignored.
//!
//! Clients of a relay do not publish, but a correct server still has to read
//! what they send: answer pings, honour close, and refuse what RFC 6455
//! forbids (unmasked frames, reserved bits, oversized control frames, bad
//! UTF-8) with the right close code. Data messages are checked and dropped.

use super::deflate::{self, InflateError};
use super::frame::{OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT};
use bytes::{Buf, Bytes, BytesMut};

/// Something the connection must act on.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// Answer with a pong carrying this payload.
    Ping(Bytes),
    /// A pong (liveness only).
    Pong,
    /// The client closes; `None` when it gave no status code.
    Close(Option<u16>),
    /// A complete data message, validated. `body` is the text of a text
    /// message (inflated); a binary message's bytes are not kept.
    Message { text: bool, len: usize, body: Bytes },
}

/// A protocol violation: close the connection with this code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Violation {
    pub code: u16,
    pub reason: &'static str,
}

const fn violation(code: u16, reason: &'static str) -> Violation {
    Violation { code, reason }
}

/// Reassembly state across frames of one client.
#[derive(Debug, Default)]
pub struct Decoder {
    max_message: usize,
    /// Opcode of the fragmented message in progress.
    fragmented: Option<u8>,
    /// Bytes of the message in progress so far.
    message_len: usize,
    /// Text of the message in progress, kept to validate UTF-8 at its end
    /// (or any compressed message, kept to inflate it).
    text: Vec<u8>,
    /// permessage-deflate was negotiated: RSV1 marks a compressed message.
    deflate: bool,
    /// The message in progress is compressed.
    compressed: bool,
}

/// The parsed fixed part of a frame header.
struct Header {
    fin: bool,
    /// RSV1: a compressed message starts here (permessage-deflate).
    rsv1: bool,
    opcode: u8,
    mask: [u8; 4],
    len: usize,
    head: usize,
}

impl Decoder {
    /// A decoder refusing messages over `max_message` bytes (close 1009).
    pub fn new(max_message: usize) -> Decoder {
        Decoder {
            max_message,
            ..Decoder::default()
        }
    }

    /// A decoder for a client that negotiated permessage-deflate.
    pub fn with_deflate(max_message: usize) -> Decoder {
        Decoder {
            deflate: true,
            ..Decoder::new(max_message)
        }
    }

    /// Takes the next complete frame off the front of `buf`.
    ///
    /// `Ok(None)` means more bytes are needed; a data frame that completes no
    /// message is consumed and the loop goes on to the next frame.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Event>, Violation> {
        loop {
            let Some(h) = self.header(buf)? else {
                return Ok(None);
            };
            if buf.len() < h.head + h.len {
                return Ok(None);
            }
            buf.advance(h.head);
            let mut payload = buf.split_to(h.len);
            unmask(&mut payload, h.mask);
            if h.rsv1 {
                self.compressed = true;
            }
            if let Some(event) = self.frame(h.fin, h.opcode, payload.freeze())? {
                return Ok(Some(event));
            }
        }
    }

    /// Parses and checks the header at the front of `buf`, if complete.
    fn header(&self, buf: &[u8]) -> Result<Option<Header>, Violation> {
        if buf.len() < 2 {
            return Ok(None);
        }
        let (b0, b1) = (buf[0], buf[1]);
        let fin = b0 & 0x80 != 0;
        let opcode = b0 & 0x0F;
        if b0 & 0x70 != 0 {
            // RSV1 only, with permessage-deflate, on a message's first frame.
            let first_data = matches!(opcode, OP_TEXT | OP_BINARY);
            if !(self.deflate && b0 & 0x70 == 0x40 && first_data) {
                return Err(violation(1002, "reserved bits set without an extension"));
            }
        }
        if !matches!(
            opcode,
            OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG
        ) {
            return Err(violation(1002, "unknown opcode"));
        }
        if b1 & 0x80 == 0 {
            return Err(violation(1002, "unmasked client frame"));
        }
        let control = opcode >= OP_CLOSE;
        let short = (b1 & 0x7F) as usize;
        if control && (!fin || short > 125) {
            return Err(violation(1002, "fragmented or oversized control frame"));
        }
        let (len, ext) = match short {
            126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 2),
            127 if buf.len() >= 10 => {
                let n = u64::from_be_bytes(buf[2..10].try_into().expect("8 bytes"));
                if n >> 63 != 0 {
                    return Err(violation(1002, "frame length has its top bit set"));
                }
                (usize::try_from(n).unwrap_or(usize::MAX), 8)
            }
            126 | 127 => return Ok(None),
            n => (n, 0),
        };
        if !control && self.message_len.saturating_add(len) > self.max_message {
            return Err(violation(1009, "message too big"));
        }
        let head = 2 + ext + 4;
        if buf.len() < head {
            return Ok(None);
        }
        let mask = buf[head - 4..head].try_into().expect("4 bytes");
        Ok(Some(Header {
            fin,
            rsv1: b0 & 0x40 != 0,
            opcode,
            mask,
            len,
            head,
        }))
    }

    /// Applies one unmasked frame to the message state.
    fn frame(&mut self, fin: bool, opcode: u8, payload: Bytes) -> Result<Option<Event>, Violation> {
        match opcode {
            OP_PING => Ok(Some(Event::Ping(payload))),
            OP_PONG => Ok(Some(Event::Pong)),
            OP_CLOSE => close_event(&payload).map(Some),
            OP_CONTINUATION => {
                let started = self
                    .fragmented
                    .ok_or(violation(1002, "continuation frame without a message"))?;
                self.data(started, fin, &payload)
            }
            _ => {
                if self.fragmented.is_some() {
                    return Err(violation(1002, "new message inside a fragmented one"));
                }
                self.data(opcode, fin, &payload)
            }
        }
    }

    /// Accumulates a data frame; returns the message when `fin` ends it.
    fn data(&mut self, opcode: u8, fin: bool, payload: &[u8]) -> Result<Option<Event>, Violation> {
        let text = opcode == OP_TEXT;
        self.message_len += payload.len();
        if text || self.compressed {
            self.text.extend_from_slice(payload);
        }
        if !fin {
            self.fragmented = Some(opcode);
            return Ok(None);
        }
        // Release the reassembly buffer: idle connections hold no memory.
        let whole = std::mem::take(&mut self.text);
        let compressed = std::mem::take(&mut self.compressed);
        let total = std::mem::take(&mut self.message_len);
        self.fragmented = None;
        let body: Bytes = if compressed {
            deflate::inflate(&whole, self.max_message)
                .map_err(|e| match e {
                    InflateError::TooBig => violation(1009, "message too big once inflated"),
                    InflateError::Corrupt => violation(1007, "invalid deflate data"),
                })?
                .into()
        } else {
            whole.into()
        };
        if text && std::str::from_utf8(&body).is_err() {
            return Err(violation(1007, "invalid UTF-8 in a text message"));
        }
        let len = if compressed { body.len() } else { total };
        // Only text is kept: a binary message is never read.
        let body = if text { body } else { Bytes::new() };
        Ok(Some(Event::Message { text, len, body }))
    }
}

/// Checks a close frame's payload (RFC 6455 section 7.4).
fn close_event(payload: &[u8]) -> Result<Event, Violation> {
    match payload.len() {
        0 => Ok(Event::Close(None)),
        1 => Err(violation(1002, "close frame with a 1-byte payload")),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            if !valid_close_code(code) {
                return Err(violation(1002, "invalid close code"));
            }
            if std::str::from_utf8(&payload[2..]).is_err() {
                return Err(violation(1007, "invalid UTF-8 in close reason"));
            }
            Ok(Event::Close(Some(code)))
        }
    }
}

/// Codes a peer may send (RFC 6455 section 7.4 and the IANA registry).
pub fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// XORs `data` with the masking key, in place.
fn unmask(data: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let mut chunks = data.chunks_exact_mut(4);
    for c in &mut chunks {
        let v = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) ^ word;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame, built independently of the decoder.
    fn client(b0: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x11, 0x22, 0x33, 0x44];
        let mut out = vec![b0];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n < 65536 => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    fn run(bytes: &[u8]) -> Result<Vec<Event>, Violation> {
        let mut d = Decoder::new(1000);
        let mut buf = BytesMut::from(bytes);
        let mut events = Vec::new();
        while let Some(e) = d.decode(&mut buf)? {
            events.push(e);
        }
        Ok(events)
    }

    #[test]
    fn ping_pong_close_and_messages() {
        let mut s = client(0x89, b"hello");
        s.extend(client(0x8A, b""));
        s.extend(client(0x81, "é".as_bytes()));
        s.extend(client(0x01, b"ab"));
        s.extend(client(0x89, b"mid"));
        s.extend(client(0x80, b"cd"));
        s.extend(client(0x88, b"\x03\xe8bye"));
        assert_eq!(
            run(&s).unwrap(),
            [
                Event::Ping(Bytes::from_static(b"hello")),
                Event::Pong,
                Event::Message {
                    text: true,
                    len: 2,
                    body: Bytes::from("é")
                },
                Event::Ping(Bytes::from_static(b"mid")),
                Event::Message {
                    text: true,
                    len: 4,
                    body: Bytes::from_static(b"abcd")
                },
                Event::Close(Some(1000)),
            ]
        );
    }

    #[test]
    fn byte_by_byte_equals_whole() {
        let mut s = client(0x82, &[9u8; 300]);
        s.extend(client(0x89, b"p"));
        let mut d = Decoder::new(1000);
        let mut buf = BytesMut::new();
        let mut events = Vec::new();
        for b in &s {
            buf.extend_from_slice(&[*b]);
            while let Some(e) = d.decode(&mut buf).unwrap() {
                events.push(e);
            }
        }
        assert_eq!(events, run(&s).unwrap());
    }

    #[test]
    fn violations_have_the_rfc_codes() {
        let code = |bytes: Vec<u8>| run(&bytes).unwrap_err().code;
        assert_eq!(code(vec![0x81, 0x00]), 1002, "unmasked");
        assert_eq!(code(client(0xC1, b"x")), 1002, "rsv1");
        assert_eq!(code(client(0x83, b"x")), 1002, "opcode 3");
        assert_eq!(code(client(0x8B, b"x")), 1002, "opcode 11");
        assert_eq!(code(client(0x09, b"x")), 1002, "fragmented ping");
        assert_eq!(code(client(0x89, &[0; 126])), 1002, "ping of 126");
        assert_eq!(code(client(0x80, b"x")), 1002, "lone continuation");
        let mut two = client(0x01, b"a");
        two.extend(client(0x81, b"b"));
        assert_eq!(code(two), 1002, "interleaved");
        assert_eq!(code(client(0x81, b"\xff")), 1007, "bad utf-8");
        assert_eq!(code(client(0x88, b"\x03")), 1002, "1-byte close");
        assert_eq!(code(client(0x88, b"\x03\xed")), 1002, "close 1005");
        assert_eq!(code(client(0x88, b"\x03\xe8\xff")), 1007, "close reason");
        assert_eq!(code(client(0x82, &[0; 1001])), 1009, "too big");
        let mut frag = client(0x02, &[0; 600]);
        frag.extend(client(0x80, &[0; 600]));
        assert_eq!(code(frag), 1009, "too big in fragments");
    }

    #[test]
    fn oversized_frame_is_refused_from_its_header() {
        let mut d = Decoder::new(1000);
        let mut buf = BytesMut::from(&b"\x82\xff\x00\x00\x00\x00\x7f\xff\xff\xff"[..]);
        assert_eq!(d.decode(&mut buf).unwrap_err().code, 1009);
        let mut buf = BytesMut::from(&b"\x82\xff\x80\x00\x00\x00\x00\x00\x00\x00"[..]);
        assert_eq!(d.decode(&mut buf).unwrap_err().code, 1002);
    }
}
