//! Fuzz property of the subscriber's push reader, cross-checked with
//! `redis-protocol`.

use super::split::{pieces, split_points};
use crate::redis::{self, resp::Item};
use bytes::{Buf, BytesMut};
use redis_protocol::resp2::types::{BytesFrame, OwnedFrame};

/// Payload cap of the [`resp`] reader: small, so oversized pushes are common.
pub const RESP_MAX_PAYLOAD: usize = 64;

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
