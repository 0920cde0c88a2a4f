//! Server-to-client frames, encoded once into one `Bytes`.
//!
//! Server frames are never masked (RFC 6455 section 5.1), so the bytes of a
//! frame are the same for every client: the relay encodes each message once
//! and hands every connection a clone of the same handle.

use bytes::{BufMut, Bytes, BytesMut};

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// Length of the header for a payload of `len` bytes: 2, 4 or 10.
pub fn header_len(len: usize) -> usize {
    match len {
        0..=125 => 2,
        126..=0xFFFF => 4,
        _ => 10,
    }
}

/// Writes a final, unmasked frame header into `out`.
pub fn put_header(out: &mut impl BufMut, opcode: u8, len: usize) {
    out.put_u8(0x80 | opcode);
    match len {
        0..=125 => out.put_u8(len as u8),
        126..=0xFFFF => {
            out.put_u8(126);
            out.put_u16(len as u16);
        }
        _ => {
            out.put_u8(127);
            out.put_u64(len as u64);
        }
    }
}

/// One complete frame: header and payload in a single allocation.
pub fn encode(opcode: u8, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(header_len(payload.len()) + payload.len());
    put_header(&mut out, opcode, payload.len());
    out.put_slice(payload);
    out.freeze()
}

/// A frame whose payload is compressed with permessage-deflate: RSV1 set.
pub fn encode_deflated(opcode: u8, compressed: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(header_len(compressed.len()) + compressed.len());
    put_header(&mut out, opcode, compressed.len());
    out[0] |= 0x40;
    out.put_slice(compressed);
    out.freeze()
}

/// The opcode and payload of a frame this module built (final, unmasked,
/// uncompressed): how a replay gets a kept message's payload back.
pub fn opened(frame: &[u8]) -> Option<(u8, &[u8])> {
    let start = match frame.get(1)? & 0x7F {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    Some((frame[0] & 0x0F, frame.get(start..)?))
}

/// The opcode of a relayed payload: text when it is valid UTF-8 (what
/// browsers expect for JSON), binary otherwise, so nothing is lost.
pub fn data_opcode(payload: &[u8]) -> u8 {
    if std::str::from_utf8(payload).is_ok() {
        OP_TEXT
    } else {
        OP_BINARY
    }
}

/// A close frame with a status code and a short reason (at most 123 bytes).
pub fn close(code: u16, reason: &str) -> Bytes {
    let reason = truncate_utf8(reason, 123);
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(reason.as_bytes());
    encode(OP_CLOSE, &payload)
}

/// Cuts `s` to at most `max` bytes on a character boundary.
fn truncate_utf8(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opened_gives_back_the_payload() {
        for len in [0, 125, 126, 65535, 65536] {
            let payload = vec![b'x'; len];
            let f = encode(OP_TEXT, &payload);
            assert_eq!(opened(&f), Some((OP_TEXT, &payload[..])));
        }
        assert_eq!(opened(&encode(OP_BINARY, b"\xff")).unwrap().0, OP_BINARY);
        assert_eq!(opened(b"\x81"), None);
        assert_eq!(opened(b"\x81\x7e\x00"), None);
    }

    #[test]
    fn header_sizes() {
        for (len, head) in [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10)] {
            let f = encode(OP_BINARY, &vec![7u8; len]);
            assert_eq!(f.len(), len + head, "len {len}");
            assert_eq!(f[0], 0x82);
            assert_eq!(header_len(len), head);
        }
        assert_eq!(&encode(OP_TEXT, b"hi")[..], b"\x81\x02hi");
        assert_eq!(&encode(OP_TEXT, &[b'a'; 126])[..4], b"\x81\x7e\x00\x7e");
        assert_eq!(
            &encode(OP_TEXT, &[b'a'; 65536])[..10],
            b"\x81\x7f\x00\x00\x00\x00\x00\x01\x00\x00"
        );
    }

    #[test]
    fn text_or_binary_by_content() {
        assert_eq!(data_opcode("{\"é\":1}".as_bytes()), OP_TEXT);
        assert_eq!(data_opcode(b"\xff\xfe"), OP_BINARY);
    }

    #[test]
    fn close_frames() {
        assert_eq!(&close(1001, "bye")[..], b"\x88\x05\x03\xe9bye");
        let long = close(1008, &"é".repeat(100));
        assert!(long.len() <= 2 + 125);
        assert!(std::str::from_utf8(&long[4..]).is_ok());
    }
}
