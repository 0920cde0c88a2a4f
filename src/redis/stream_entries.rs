//! The entries of Redis stream replies (`XREAD`, `XRANGE`, `XREVRANGE`),
//! read from the decoded frame: each entry's stream, ID and the payload
//! field. Replies come from Redis, not from clients, but a malformed one
//! is still an error, never a panic.

use crate::history::id::Id;
use bytes::Bytes;
use redis_protocol::resp2::types::BytesFrame;

/// One stream entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: Id,
    /// The value of the payload field; `None` when the entry lacks it.
    pub payload: Option<Bytes>,
}

/// The entries of an `XREAD` reply, by stream key, in order; an empty list
/// when the block timed out (a null reply).
pub fn xread(frame: BytesFrame, field: &[u8]) -> Result<Vec<(Bytes, Vec<Entry>)>, String> {
    let streams = match frame {
        BytesFrame::Null => return Ok(Vec::new()),
        BytesFrame::Array(items) => items,
        BytesFrame::Error(e) => return Err(format!("Redis answered: {e}")),
        other => return Err(format!("unexpected XREAD answer: {other:?}")),
    };
    streams
        .into_iter()
        .map(|s| {
            let BytesFrame::Array(pair) = s else {
                return Err("an XREAD stream is not a pair".to_string());
            };
            let [key, entries]: [BytesFrame; 2] = pair
                .try_into()
                .map_err(|_| "an XREAD stream is not a pair".to_string())?;
            Ok((bulk(key)?, range(entries, field)?))
        })
        .collect()
}

/// The entries of an `XRANGE` or `XREVRANGE` reply.
pub fn range(frame: BytesFrame, field: &[u8]) -> Result<Vec<Entry>, String> {
    let items = match frame {
        BytesFrame::Array(items) => items,
        BytesFrame::Null => return Ok(Vec::new()),
        BytesFrame::Error(e) => return Err(format!("Redis answered: {e}")),
        other => return Err(format!("unexpected stream answer: {other:?}")),
    };
    items.into_iter().map(|e| entry(e, field)).collect()
}

/// `[id, [field, value, …]]`.
fn entry(frame: BytesFrame, field: &[u8]) -> Result<Entry, String> {
    let BytesFrame::Array(pair) = frame else {
        return Err("a stream entry is not a pair".into());
    };
    let [id, fields]: [BytesFrame; 2] = pair
        .try_into()
        .map_err(|_| "a stream entry is not a pair".to_string())?;
    let id = bulk(id)?;
    let id = Id::parse(&id).ok_or_else(|| format!("a stream entry ID {id:?}"))?;
    let fields = match fields {
        BytesFrame::Array(f) => f,
        BytesFrame::Null => Vec::new(),
        _ => return Err("stream entry fields are not a list".into()),
    };
    let mut payload = None;
    let mut it = fields.into_iter();
    while let (Some(name), Some(value)) = (it.next(), it.next()) {
        if bulk(name)?.as_ref() == field {
            payload = Some(bulk(value)?);
            break;
        }
    }
    Ok(Entry { id, payload })
}

fn bulk(frame: BytesFrame) -> Result<Bytes, String> {
    match frame {
        BytesFrame::BulkString(b) => Ok(b),
        BytesFrame::SimpleString(b) => Ok(b),
        other => Err(format!("expected a string from Redis, got {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis_protocol::resp2::decode::decode_bytes_mut;

    fn frame(text: &str) -> BytesFrame {
        let mut buf = bytes::BytesMut::from(text.replace('|', "\r\n").as_bytes());
        decode_bytes_mut(&mut buf).unwrap().unwrap().0
    }

    #[test]
    fn xread_replies() {
        let reply = frame(
            "*2|*2|$4|news|*2|*2|$3|5-1|*4|$2|at|$1|9|$4|data|$2|hi|*2|$3|5-2|*2|$1|x|$1|y|*2|$1|b|*0|",
        );
        let got = xread(reply, b"data").unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0.as_ref(), b"news");
        assert_eq!(
            got[0].1,
            [
                Entry {
                    id: Id::new(5, 1),
                    payload: Some(Bytes::from_static(b"hi"))
                },
                Entry {
                    id: Id::new(5, 2),
                    payload: None
                }
            ]
        );
        assert!(got[1].1.is_empty());
        assert_eq!(xread(frame("*-1|"), b"data").unwrap(), vec![]);
        for bad in [
            "-ERR x|",
            ":1|",
            "*1|*1|$1|a|",
            "*1|*2|$1|a|*1|*2|$3|x-1|*0|",
        ] {
            assert!(xread(frame(bad), b"data").is_err(), "{bad}");
        }
    }
}
