//! Fuzz property of the upgrade request parser.

use crate::ws::{self, origin::Origin, origin::OriginPolicy};
use base64::Engine;

/// The allow-list of the [`handshake`] and [`origin`] targets.
pub(super) fn allow_list() -> OriginPolicy {
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

/// The routes the target parses against (the defaults).
const ROUTES: ws::handshake::Routes = ws::handshake::Routes {
    ws: "/",
    sse: "/events",
};

/// Parses one request head and checks what comes back.
fn handshake_with(
    data: &[u8],
    policy: &OriginPolicy,
) -> Result<Option<ws::handshake::Accepted>, ws::handshake::Refusal> {
    let result = ws::handshake::parse(data, ROUTES, policy);
    match &result {
        Ok(Some(ok)) if ok.sse.is_some() => {
            assert!(ok.consumed <= data.len(), "consumed past the buffer");
            assert!(ok.accept.is_empty(), "an event stream has no accept key");
            let head = ws::handshake::parse(&data[..ok.consumed], ROUTES, policy);
            assert_eq!(head, result, "the bytes after the head change the result");
        }
        Ok(Some(ok)) => {
            assert!(ok.consumed <= data.len(), "consumed past the buffer");
            assert!(ok.consumed <= ws::handshake::MAX_REQUEST);
            assert_eq!(ok.accept.len(), 28, "accept key {:?}", ok.accept);
            let raw = base64::engine::general_purpose::STANDARD
                .decode(&ok.accept)
                .expect("accept key is base64");
            assert_eq!(raw.len(), 20, "accept key is not a SHA-1");
            // Bytes after the head (pipelined frames) change nothing.
            let head = ws::handshake::parse(&data[..ok.consumed], ROUTES, policy);
            assert_eq!(head, result, "the bytes after the head change the result");
            // One byte less is an incomplete head.
            let short = ws::handshake::parse(&data[..ok.consumed - 1], ROUTES, policy);
            assert_eq!(
                short,
                Ok(None),
                "a prefix of an accepted head is not partial"
            );
            let response = ws::handshake::switching_protocols(&ok.accept, None, ok.protocol);
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
