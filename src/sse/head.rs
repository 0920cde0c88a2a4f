//! The response that opens an event stream.
//!
//! Close-delimited: no `Content-Length`, no chunked coding, `Connection:
//! close`. The stream is the rest of the connection, so a second request
//! on it is never read, and nothing but the relay's own events needs
//! framing. `X-Accel-Buffering: no` asks nginx not to hold events back.

use std::time::Duration;

/// CORS for a cross-origin `EventSource`: the allowed origin echoed (the
/// handshake has already refused the others), and credentials allowed when
/// a cookie may carry the token (`-auth-cookie`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Cors<'a> {
    pub origin: Option<&'a [u8]>,
    pub credentials: bool,
}

/// The `200` head, then the `retry:` field that sets the reconnection delay
/// of the client.
pub fn opening(cors: Cors<'_>, retry: Duration) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\nX-Accel-Buffering: no\r\nConnection: close\r\n",
    );
    cors_headers(&mut out, cors);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(format!("retry: {}\n\n", retry.as_millis()).as_bytes());
    out
}

/// The answer to a CORS preflight: the origin (already checked) may `GET`
/// the stream with the headers a fetch-based client sends. Closed after.
pub fn preflight(cors: Cors<'_>) -> Vec<u8> {
    let mut out = b"HTTP/1.1 204 No Content\r\n".to_vec();
    cors_headers(&mut out, cors);
    out.extend_from_slice(
        b"Access-Control-Allow-Methods: GET\r\nAccess-Control-Allow-Headers: Authorization, Last-Event-ID, Cache-Control\r\nAccess-Control-Max-Age: 600\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    out
}

/// `Access-Control-Allow-Origin` for an allowed origin, and its companions.
fn cors_headers(out: &mut Vec<u8>, cors: Cors<'_>) {
    if let Some(origin) = cors.origin.filter(|o| is_header_safe(o)) {
        out.extend_from_slice(b"Access-Control-Allow-Origin: ");
        out.extend_from_slice(origin);
        out.extend_from_slice(b"\r\nVary: Origin\r\n");
        if cors.credentials {
            out.extend_from_slice(b"Access-Control-Allow-Credentials: true\r\n");
        }
    }
}

/// Whether a header value can be echoed as it is (httparse already refused
/// CR and LF; this also keeps out other control bytes).
fn is_header_safe(value: &[u8]) -> bool {
    value
        .iter()
        .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_then_retry() {
        let s = String::from_utf8(opening(Cors::default(), Duration::from_secs(3))).unwrap();
        assert!(s.starts_with("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"));
        assert!(s.contains("Cache-Control: no-store\r\n"));
        assert!(s.contains("X-Accel-Buffering: no\r\n"));
        assert!(!s.contains("Access-Control"));
        assert!(s.ends_with("\r\n\r\nretry: 3000\n\n"));
    }

    #[test]
    fn cors_echoes_the_origin() {
        let cors = Cors {
            origin: Some(b"https://app.example"),
            credentials: true,
        };
        let s = String::from_utf8(opening(cors, Duration::from_millis(500))).unwrap();
        assert!(s.contains(
            "Access-Control-Allow-Origin: https://app.example\r\nVary: Origin\r\nAccess-Control-Allow-Credentials: true\r\n"
        ));
        assert!(s.ends_with("retry: 500\n\n"));
        let p = String::from_utf8(preflight(cors)).unwrap();
        assert!(p.starts_with(
            "HTTP/1.1 204 No Content\r\nAccess-Control-Allow-Origin: https://app.example\r\n"
        ));
        assert!(p.contains("Access-Control-Allow-Headers: Authorization, Last-Event-ID"));
        assert!(p.ends_with("Connection: close\r\n\r\n"));
    }
}
