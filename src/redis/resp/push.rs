//! Reading what Redis sends to a subscriber.
//!
//! Every reply goes through `redis-protocol`, except the ones that matter
//! for speed: the `message`, `pmessage` and `smessage` pushes.
//! `redis-protocol` builds a `Vec` of frames for each array, which would be
//! an allocation per relayed message; these pushes have a fixed shape, so
//! [`PushReader`] recognises them in place and hands out byte ranges of the
//! read buffer instead. The same
//! scan learns a payload's length before its bytes arrive, so an oversized
//! payload is skipped as it streams in, never buffered.

use bytes::{Buf, BytesMut};
use redis_protocol::resp2::decode::decode_bytes_mut;
use redis_protocol::resp2::types::BytesFrame;
use std::ops::Range;

/// The fixed heads of the pushes that carry messages, and whether a
/// pattern comes before the channel.
const HEADS: [(&[u8], bool); 3] = [
    (b"*3\r\n$7\r\nmessage\r\n", false),
    (b"*4\r\n$8\r\npmessage\r\n", true),
    (b"*3\r\n$8\r\nsmessage\r\n", false),
];
/// A bulk length longer than this many digits is malformed.
const MAX_LEN_DIGITS: usize = 12;
/// Largest reply other than a message push (subscribe confirmations, PONG,
/// errors are tens of bytes): past it the connection is dropped rather
/// than the reply buffered whole.
pub const MAX_REPLY: usize = 1 << 20;

/// One item read off the subscriber connection.
#[derive(Debug, PartialEq)]
pub enum Item {
    /// A `message`, `pmessage` or `smessage` push; the ranges index the
    /// buffer given to [`PushReader::next`], which the caller must
    /// `advance` by `consumed` once it has used them. `pattern` is set for
    /// a `pmessage`.
    Message {
        pattern: Option<Range<usize>>,
        channel: Range<usize>,
        payload: Range<usize>,
        consumed: usize,
    },
    /// A `message` push whose payload exceeds the cap; its bytes are being
    /// discarded as they arrive. Already consumed from the buffer.
    Oversized { channel: String, len: usize },
    /// Any other reply (subscribe confirmations, PONG, errors).
    Reply(BytesFrame),
}

/// Malformed input: the connection must be dropped.
#[derive(Debug, PartialEq, Eq)]
pub struct RespError(pub String);

/// Incremental reader of a subscriber connection's byte stream.
#[derive(Debug)]
pub struct PushReader {
    max_payload: usize,
    /// Bytes of an oversized payload (and its CRLF) still to discard.
    skip: usize,
}

/// What the scan of a `message` push found.
enum Scan {
    NotMessage,
    /// Incomplete; the whole push will take this many bytes (when known).
    Incomplete(Option<usize>),
    Complete(Option<Range<usize>>, Range<usize>, Range<usize>, usize),
    Oversized(Range<usize>, usize, usize),
}

impl PushReader {
    pub fn new(max_payload: usize) -> PushReader {
        PushReader {
            max_payload,
            skip: 0,
        }
    }

    /// Bytes the current partial item needs in all, to size the next read.
    pub fn wanted(&self, buf: &[u8]) -> Option<usize> {
        match scan(buf, self.max_payload) {
            Ok(Scan::Incomplete(total)) => total,
            _ => None,
        }
    }

    /// The next complete item at the front of `buf`, or `None` for more.
    pub fn next(&mut self, buf: &mut BytesMut) -> Result<Option<Item>, RespError> {
        if self.skip > 0 {
            let n = self.skip.min(buf.len());
            buf.advance(n);
            self.skip -= n;
            if self.skip > 0 {
                return Ok(None);
            }
        }
        match scan(buf, self.max_payload)? {
            Scan::Complete(pattern, channel, payload, consumed) => Ok(Some(Item::Message {
                pattern,
                channel,
                payload,
                consumed,
            })),
            Scan::Oversized(channel, len, head) => {
                let channel = String::from_utf8_lossy(&buf[channel]).into_owned();
                buf.advance(head);
                self.skip = len + 2;
                let n = self.skip.min(buf.len());
                buf.advance(n);
                self.skip -= n;
                Ok(Some(Item::Oversized { channel, len }))
            }
            Scan::Incomplete(_) => Ok(None),
            Scan::NotMessage => match decode_bytes_mut(buf) {
                Ok(Some((frame, _, _))) => Ok(Some(Item::Reply(frame))),
                Ok(None) if buf.len() > MAX_REPLY => Err(RespError(format!(
                    "a reply from Redis that is not a message is over {MAX_REPLY} bytes"
                ))),
                Ok(None) => Ok(None),
                Err(e) => Err(RespError(format!("malformed reply from Redis: {e:?}"))),
            },
        }
    }
}

/// Recognises a message push at the front of `buf`.
fn scan(buf: &[u8], max_payload: usize) -> Result<Scan, RespError> {
    let mut found = None;
    for (head, pattern) in HEADS {
        if buf.starts_with(head) {
            found = Some((head.len(), pattern));
            break;
        }
        if head.starts_with(buf) {
            return Ok(Scan::Incomplete(None));
        }
    }
    let Some((mut at, has_pattern)) = found else {
        return Ok(Scan::NotMessage);
    };
    let mut pattern = None;
    if has_pattern {
        let Some((range, next)) = bulk(buf, at)? else {
            return Ok(Scan::Incomplete(None));
        };
        pattern = Some(range);
        at = next;
    }
    let Some((channel, after)) = bulk(buf, at)? else {
        return Ok(Scan::Incomplete(None));
    };
    let Some((plen, at)) = bulk_len(buf, after)? else {
        return Ok(Scan::Incomplete(None));
    };
    if plen > max_payload {
        return Ok(Scan::Oversized(channel, plen, at));
    }
    let payload = at..at + plen;
    match crlf(buf, payload.end)? {
        Some(end) => Ok(Scan::Complete(pattern, channel, payload, end)),
        None => Ok(Scan::Incomplete(Some(payload.end + 2))),
    }
}

/// A complete short bulk string at `at`: its range and the index after it.
fn bulk(buf: &[u8], at: usize) -> Result<Option<(Range<usize>, usize)>, RespError> {
    let Some((len, start)) = bulk_len(buf, at)? else {
        return Ok(None);
    };
    Ok(crlf(buf, start + len)?.map(|next| (start..start + len, next)))
}

/// Parses `$<len>\r\n` at `at`: the length and where the data starts.
fn bulk_len(buf: &[u8], at: usize) -> Result<Option<(usize, usize)>, RespError> {
    let Some(&first) = buf.get(at) else {
        return Ok(None);
    };
    if first != b'$' {
        return Err(RespError("expected a bulk string in a message push".into()));
    }
    let digits = &buf[at + 1..];
    let Some(end) = digits.iter().position(|b| *b == b'\r') else {
        if digits.len() > MAX_LEN_DIGITS {
            return Err(RespError("bulk length too long".into()));
        }
        return Ok(None);
    };
    let text = &digits[..end];
    if text.is_empty() || text.len() > MAX_LEN_DIGITS || !text.iter().all(u8::is_ascii_digit) {
        return Err(RespError("invalid bulk length in a message push".into()));
    }
    let len = text
        .iter()
        .fold(0usize, |n, d| n * 10 + (d - b'0') as usize);
    match digits.get(end + 1) {
        None => Ok(None),
        Some(b'\n') => Ok(Some((len, at + 1 + end + 2))),
        Some(_) => Err(RespError("bulk length not ended by CRLF".into())),
    }
}

/// Checks for `\r\n` at `at`; returns the index after it.
fn crlf(buf: &[u8], at: usize) -> Result<Option<usize>, RespError> {
    match buf.get(at..at + 2) {
        None if buf.len() <= at + 1 && buf.get(at).is_none_or(|b| *b == b'\r') => Ok(None),
        Some(b"\r\n") => Ok(Some(at + 2)),
        _ => Err(RespError("bulk string not ended by CRLF".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(channel: &str, payload: &[u8]) -> Vec<u8> {
        let mut v = format!(
            "*3\r\n$7\r\nmessage\r\n${}\r\n{channel}\r\n${}\r\n",
            channel.len(),
            payload.len()
        )
        .into_bytes();
        v.extend_from_slice(payload);
        v.extend_from_slice(b"\r\n");
        v
    }

    /// Feeds `stream` in pieces of `step` bytes; returns payloads and replies.
    fn feed(stream: &[u8], step: usize, max: usize) -> Vec<String> {
        let mut r = PushReader::new(max);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in stream.chunks(step) {
            buf.extend_from_slice(piece);
            while let Some(item) = r.next(&mut buf).unwrap() {
                out.push(match item {
                    Item::Message {
                        pattern,
                        channel,
                        payload,
                        consumed,
                    } => {
                        let s = format!(
                            "{}{}:{}",
                            pattern.map_or(String::new(), |p| format!(
                                "{}>",
                                String::from_utf8_lossy(&buf[p])
                            )),
                            String::from_utf8_lossy(&buf[channel]),
                            String::from_utf8_lossy(&buf[payload])
                        );
                        buf.advance(consumed);
                        s
                    }
                    Item::Oversized { channel, len } => format!("{channel}:dropped {len}"),
                    Item::Reply(f) => format!("reply {f:?}"),
                });
            }
        }
        assert!(buf.is_empty(), "left over: {buf:?}");
        out
    }

    #[test]
    fn split_at_every_point_gives_the_same_items() {
        let mut s = b"*3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n".to_vec();
        s.extend(push("c", b"hello"));
        s.extend(push("c", b""));
        s.extend(push("c", &[b'x'; 40]));
        s.extend(push("c", b"after"));
        let whole = feed(&s, s.len(), 20);
        assert_eq!(whole.len(), 5);
        assert_eq!(whole[1], "c:hello");
        assert_eq!(whole[3], "c:dropped 40");
        assert_eq!(whole[4], "c:after");
        for step in 1..s.len() {
            assert_eq!(feed(&s, step, 20), whole, "step {step}");
        }
    }

    #[test]
    fn pattern_and_sharded_pushes() {
        let mut s = b"*4\r\n$8\r\npmessage\r\n$3\r\nn.*\r\n$3\r\nn.a\r\n$2\r\nhi\r\n".to_vec();
        s.extend_from_slice(b"*3\r\n$8\r\nsmessage\r\n$1\r\ns\r\n$3\r\nyes\r\n");
        s.extend(push("c", &[b'z'; 30]));
        let whole = feed(&s, s.len(), 20);
        assert_eq!(whole, ["n.*>n.a:hi", "s:yes", "c:dropped 30"]);
        for step in 1..s.len() {
            assert_eq!(feed(&s, step, 20), whole, "step {step}");
        }
    }

    #[test]
    fn payload_with_crlf_inside_is_kept() {
        assert_eq!(feed(&push("c", b"a\r\nb"), 3, 100), ["c:a\r\nb"]);
    }

    #[test]
    fn wanted_tells_the_full_size() {
        let s = push("ch", &[0; 1000]);
        let r = PushReader::new(10_000);
        assert_eq!(r.wanted(&s[..40]), Some(s.len()));
    }

    #[test]
    fn a_huge_reply_that_is_not_a_message_is_an_error() {
        let mut r = PushReader::new(100);
        let mut buf = BytesMut::from(&b"$5000000\r\n"[..]);
        buf.resize(MAX_REPLY, b'x');
        assert_eq!(r.next(&mut buf), Ok(None), "still within the cap");
        buf.resize(MAX_REPLY + 1, b'x');
        let e = r.next(&mut buf).unwrap_err();
        assert!(e.0.contains("not a message"), "{e:?}");
    }

    #[test]
    fn malformed_input_is_an_error() {
        let mut r = PushReader::new(100);
        for bad in [
            &b"*3\r\n$7\r\nmessage\r\n:1\r\n"[..],
            b"*3\r\n$7\r\nmessage\r\n$x\r\n",
            b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nab\r\n",
            b"*3\r\n$7\r\nmessage\r\n$1\r\ncXX",
            b"%garbage\r\n",
        ] {
            assert!(r.next(&mut BytesMut::from(bad)).is_err(), "{bad:?}");
        }
    }
}
