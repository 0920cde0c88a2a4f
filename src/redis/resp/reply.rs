//! Reading one ordinary reply (to AUTH, CLUSTER SLOTS, PUBLISH) off a
//! connection: the bytes are buffered until `redis-protocol` decodes a
//! whole frame, never byte by byte, and never past a cap.

use super::push::MAX_REPLY;
use bytes::BytesMut;
use redis_protocol::resp2::decode::decode_bytes_mut;
use redis_protocol::resp2::types::BytesFrame;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Why no reply could be read.
#[derive(Debug)]
pub enum ReplyError {
    /// The connection failed or closed: it may be retried on a new one.
    Io(std::io::Error),
    /// The bytes are not RESP, or too many: the connection is useless.
    Malformed(String),
}

impl std::fmt::Display for ReplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplyError::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                f.write_str("closed by Redis")
            }
            ReplyError::Io(e) => write!(f, "{e}"),
            ReplyError::Malformed(why) => f.write_str(why),
        }
    }
}

/// Reads the next reply; bytes after it stay in `buf` for the next call.
/// Callers put their own deadline around it.
pub async fn read<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
) -> Result<BytesFrame, ReplyError> {
    read_capped(stream, buf, MAX_REPLY).await
}

/// As [`read`], for a reply that may be larger (a batch of stream entries):
/// at most `cap` bytes.
pub async fn read_capped<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    cap: usize,
) -> Result<BytesFrame, ReplyError> {
    loop {
        if let Some(frame) = decode_capped(buf, cap)? {
            return Ok(frame);
        }
        buf.reserve(4096);
        match stream.read_buf(buf).await {
            Ok(0) => return Err(ReplyError::Io(std::io::ErrorKind::UnexpectedEof.into())),
            Ok(_) => {}
            Err(e) => return Err(ReplyError::Io(e)),
        }
    }
}

/// The complete reply at the front of `buf`, if there is one.
pub fn decode(buf: &mut BytesMut) -> Result<Option<BytesFrame>, ReplyError> {
    decode_capped(buf, MAX_REPLY)
}

fn decode_capped(buf: &mut BytesMut, cap: usize) -> Result<Option<BytesFrame>, ReplyError> {
    match decode_bytes_mut(buf) {
        Ok(Some((frame, _, _))) => Ok(Some(frame)),
        Ok(None) if buf.len() > cap => Err(ReplyError::Malformed(format!(
            "a reply from Redis over {cap} bytes"
        ))),
        Ok(None) => Ok(None),
        Err(e) => Err(ReplyError::Malformed(format!(
            "unreadable answer from Redis: {e:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn replies_split_over_reads_and_pipelined() {
        let (mut a, mut b) = tokio::io::duplex(64);
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for piece in [&b"+O"[..], b"K\r\n:4", b"2\r\n-ERR x\r\n"] {
                a.write_all(piece).await.unwrap();
                tokio::task::yield_now().await;
            }
        });
        let mut buf = BytesMut::new();
        assert_eq!(
            read(&mut b, &mut buf).await.unwrap(),
            BytesFrame::SimpleString("OK".into())
        );
        assert_eq!(
            read(&mut b, &mut buf).await.unwrap(),
            BytesFrame::Integer(42)
        );
        assert!(matches!(
            read(&mut b, &mut buf).await.unwrap(),
            BytesFrame::Error(_)
        ));
        let end = read(&mut b, &mut buf).await.unwrap_err();
        assert_eq!(end.to_string(), "closed by Redis");
    }

    #[test]
    fn garbage_and_oversized_replies_are_errors() {
        assert!(decode(&mut BytesMut::from(&b"%%%\r\n"[..])).is_err());
        let mut big = BytesMut::from(&b"$9999999\r\n"[..]);
        big.resize(MAX_REPLY + 1, b'x');
        assert!(decode(&mut big).is_err());
    }
}
