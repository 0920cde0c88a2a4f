//! Fuzz property of the embedded broker's request parser: whatever a local
//! process sends, it reads the same requests however the bytes are split,
//! never an argument over its limit, and what it reads re-encodes to
//! requests it reads back the same.

use super::split::{pieces, split_points};
use crate::redis::resp::request::{next_request, ProtocolError};
use crate::redis::resp::write::command;
use bytes::{Bytes, BytesMut};

/// The bulk-string limit of the property: small, so that it is hit.
const LIMIT: usize = 64;

/// What one pass over a stream produced: the requests, then the error (if
/// any) and the bytes left unread.
#[derive(Debug, PartialEq)]
struct Run {
    requests: Vec<Vec<Bytes>>,
    error: Option<ProtocolError>,
    left: Vec<u8>,
}

fn run(pieces: &[&[u8]]) -> Run {
    let mut buf = BytesMut::new();
    let mut requests = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            match next_request(&mut buf, LIMIT) {
                Ok(Some(args)) => {
                    check(&args);
                    requests.push(args);
                }
                Ok(None) => break,
                Err(e) => {
                    return Run {
                        requests,
                        error: Some(e),
                        left: Vec::new(),
                    }
                }
            }
        }
    }
    Run {
        requests,
        error: None,
        left: buf.to_vec(),
    }
}

/// A multibulk argument is within the limit (inline ones within theirs).
fn check(args: &[Bytes]) {
    let total: usize = args.iter().map(Bytes::len).sum();
    assert!(total <= 64 << 10, "request of {total} bytes");
}

/// The requests read whole, then split at every point (or at pseudo-random
/// points), are the same; each re-encoded as RESP reads back the same.
pub fn resp_request(data: &[u8]) {
    let whole = run(&[data]);
    for cut in split_points(data) {
        let split = run(&pieces(data, &[cut]));
        assert_eq!(split, whole, "cut at {cut}");
    }
    for args in whole.requests.iter().filter(|a| !a.is_empty()) {
        if args.iter().any(|a| a.len() > LIMIT) {
            continue;
        }
        let parts: Vec<&[u8]> = args.iter().map(|a| &a[..]).collect();
        let mut again = BytesMut::from(&command(&parts)[..]);
        let back = next_request(&mut again, LIMIT).expect("re-encoded request");
        assert_eq!(back.as_deref(), Some(&args[..]), "round trip");
        assert!(again.is_empty(), "bytes left after a re-encoded request");
    }
}
