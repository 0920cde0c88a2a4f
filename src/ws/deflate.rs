//! permessage-deflate (RFC 7692), compressed once per message.
//!
//! The relay only accepts the parameter set it can share: the server
//! compresses every message on its own (`server_no_context_takeover`) with
//! the default 15-bit window, so one compressed frame serves every client
//! that negotiated the extension, exactly as the plain frame serves the
//! others. It asks clients for `client_no_context_takeover` too, so that a
//! client's message can be inflated without keeping a 32 KiB window per
//! connection.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The response header value for an accepted offer.
pub const RESPONSE: &str =
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// The empty block that ends a sync flush; RFC 7692 strips it on the wire.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Whether one of the offers in a `Sec-WebSocket-Extensions` header value
/// is a permessage-deflate offer this server can accept.
pub fn accepts(header: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(header) else {
        return false;
    };
    text.split(',').any(acceptable_offer)
}

/// One offer: `permessage-deflate` with parameters the shared parameter set
/// satisfies (each at most once).
fn acceptable_offer(offer: &str) -> bool {
    let mut parts = offer.split(';').map(str::trim);
    if parts.next() != Some("permessage-deflate") {
        return false;
    }
    let mut seen: Vec<&str> = Vec::new();
    for param in parts {
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
            None => (param, None),
        };
        if seen.contains(&name) {
            return false;
        }
        seen.push(name);
        let ok = match (name, value) {
            ("server_no_context_takeover" | "client_no_context_takeover", None) => true,
            // The client's window does not matter to an inflater with the
            // full window; any valid value is fine.
            ("client_max_window_bits", None) => true,
            ("client_max_window_bits", Some(v)) => window_bits(v).is_some(),
            // We compress with 15 bits: a smaller limit cannot be met.
            ("server_max_window_bits", Some(v)) => window_bits(v) == Some(15),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

fn window_bits(v: &str) -> Option<u8> {
    v.parse().ok().filter(|b| (8..=15).contains(b))
}

/// Compresses messages one by one, each with a fresh window.
pub struct Deflater {
    c: Compress,
}

impl Default for Deflater {
    fn default() -> Self {
        Deflater {
            c: Compress::new(Compression::fast(), false),
        }
    }
}

impl Deflater {
    /// `payload` compressed into `out` (cleared first), without the sync
    /// flush tail.
    pub fn compress(&mut self, payload: &[u8], out: &mut Vec<u8>) {
        self.c.reset();
        out.clear();
        out.reserve(payload.len() / 2 + 64);
        let mut input = payload;
        loop {
            let before = (self.c.total_in(), self.c.total_out());
            let status = self
                .c
                .compress_vec(input, out, FlushCompress::Sync)
                .expect("deflate of an in-memory buffer");
            let consumed = (self.c.total_in() - before.0) as usize;
            input = &input[consumed..];
            let done = input.is_empty() && out.ends_with(&TAIL);
            if done || status == Status::StreamEnd {
                break;
            }
            if out.len() == out.capacity() {
                out.reserve(out.capacity().max(64));
            }
        }
        out.truncate(out.len() - TAIL.len());
    }
}

/// Why a compressed client message was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum InflateError {
    /// More than the limit once inflated (close 1009).
    TooBig,
    /// Not valid deflate data (close 1007).
    Corrupt,
}

/// Inflates one client message (no context kept), refusing to produce
/// more than `limit` bytes: a small compressed message cannot balloon.
pub fn inflate(compressed: &[u8], limit: usize) -> Result<Vec<u8>, InflateError> {
    let mut d = Decompress::new(false);
    let mut out = Vec::with_capacity(compressed.len().saturating_mul(2).min(limit + 1).max(64));
    'feed: for input in [compressed, &TAIL[..]] {
        let mut input = input;
        while !input.is_empty() {
            if out.len() > limit {
                return Err(InflateError::TooBig);
            }
            if out.len() == out.capacity() {
                out.reserve(out.capacity().min(limit + 1 - out.len()).max(64));
            }
            let (before, produced) = (d.total_in(), out.len());
            let status = d
                .decompress_vec(input, &mut out, FlushDecompress::Sync)
                .map_err(|_| InflateError::Corrupt)?;
            let used = (d.total_in() - before) as usize;
            if status == Status::StreamEnd {
                // A final block (BFINAL): what follows is ignored.
                break 'feed;
            }
            if used == 0 && out.len() == produced && out.len() < out.capacity() {
                // No progress with room to spare: truncated or corrupt.
                return Err(InflateError::Corrupt);
            }
            input = &input[used..];
        }
    }
    if out.len() > limit {
        return Err(InflateError::TooBig);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers() {
        for ok in [
            "permessage-deflate",
            "permessage-deflate; client_max_window_bits",
            "x-webkit-deflate-frame, permessage-deflate; client_max_window_bits=10",
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
            "permessage-deflate; server_max_window_bits=15",
            "permessage-deflate; server_max_window_bits=10, permessage-deflate",
        ] {
            assert!(accepts(ok.as_bytes()), "{ok}");
        }
        for no in [
            "",
            "x-webkit-deflate-frame",
            "permessage-deflate; server_max_window_bits=10",
            "permessage-deflate; client_max_window_bits=16",
            "permessage-deflate; mystery",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_max_window_bits",
        ] {
            assert!(!accepts(no.as_bytes()), "{no}");
        }
    }

    #[test]
    fn round_trip_each_message_alone() {
        let mut d = Deflater::default();
        let json =
            br#"{"price": 123.45, "symbol": "ABC", "price2": 123.45, "symbol2": "ABC"}"#.repeat(20);
        let mut out = Vec::new();
        d.compress(&json, &mut out);
        assert!(
            out.len() < json.len() / 4,
            "{} of {}",
            out.len(),
            json.len()
        );
        assert_eq!(inflate(&out, 1 << 20).unwrap(), json);
        // A second message does not depend on the first (no context).
        let mut again = Vec::new();
        d.compress(&json, &mut again);
        assert_eq!(again, out);
        let big = vec![b'x'; 1 << 20];
        d.compress(&big, &mut out);
        assert_eq!(inflate(&out, 1 << 20).unwrap().len(), 1 << 20);
        assert_eq!(inflate(&out, (1 << 20) - 1), Err(InflateError::TooBig));
        d.compress(b"", &mut out);
        assert_eq!(inflate(&out, 10).unwrap(), b"");
        assert_eq!(
            inflate(b"\xff\xff\xff\xff", 100),
            Err(InflateError::Corrupt)
        );
    }
}
