//! The upgrade as a browser, a proxy and an attacker meet it: origins,
//! every refusal status, deadlines and garbage, against the real binary.

mod common;

use common::redis::RedisServer;
use common::relay::{self, raw_exchange, status_of, upgrade_request, Relay};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

fn relay_with_origins(redis: &RedisServer) -> Relay {
    Relay::start(&[
        &format!("-rs-port={}", redis.port()),
        "-ws-route=/live",
        "-ws-origin=http://a.example, https://B.example:443,http://localhost:8000",
        "-ws-handshake-timeout=700ms",
    ])
}

#[tokio::test]
async fn origins_compare_as_rfc6454_tuples() {
    let redis = RedisServer::start();
    let r = relay_with_origins(&redis);
    let url = r.url("/live?from=test");
    for ok in [
        "http://a.example",
        "http://A.EXAMPLE:80",
        "https://b.example",
        "HTTPS://b.example:443",
        "http://localhost:8000",
    ] {
        let ws = relay::connect(&url, Some(ok)).await;
        assert!(ws.is_ok(), "{ok} should be accepted: {:?}", ws.err());
        relay::bye(ws.unwrap()).await;
    }
    for bad in [
        Some("https://a.example"),
        Some("http://a.example:8080"),
        Some("http://b.example"),
        Some("http://localhost"),
        Some("http://a.example.evil.com"),
        Some("null"),
        None,
    ] {
        match relay::connect(&url, bad).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status(), 403, "{bad:?}")
            }
            other => panic!("{bad:?} should get 403, got {:?}", other.map(|_| ())),
        }
    }
    let refused = r
        .stdout
        .wait_for("refused: 403 missing Origin header", Duration::from_secs(5));
    assert!(refused.is_some(), "{:?}", r.stdout.all());
    assert!(r.stdout.count("refused: 403 Origin not allowed") >= 5);
}

#[tokio::test]
async fn insecure_mode_accepts_any_origin() {
    let redis = RedisServer::start();
    let r = Relay::insecure(redis.port(), &[]);
    assert!(r.stdout.all()[0].contains("in INSECURE MODE which is not advised for production use"));
    for origin in [None, Some("http://anything.example"), Some("null")] {
        let ws = relay::connect(&r.url("/"), origin).await.expect("accepted");
        relay::bye(ws).await;
    }
}

#[test]
fn each_fault_gets_its_status() {
    let redis = RedisServer::start();
    let r = relay_with_origins(&redis);
    let origin = "Origin: http://a.example\r\n";
    let cases: Vec<(String, u16, &str)> = vec![
        (upgrade_request("/elsewhere", origin), 404, "other path"),
        (
            upgrade_request("/live/deeper", origin),
            404,
            "path below the route",
        ),
        (
            "GET /live HTTP/1.1\r\nHost: x\r\n\r\n".into(),
            426,
            "plain GET",
        ),
        (
            upgrade_request("/live", origin).replacen("GET", "POST", 1),
            405,
            "POST",
        ),
        (
            upgrade_request("/live", origin).replace("Version: 13", "Version: 8"),
            426,
            "version 8",
        ),
        (
            upgrade_request("/live", origin).replace("dGhlIHNhbXBsZSBub25jZQ==", "short"),
            400,
            "bad key",
        ),
        (
            upgrade_request("/live", origin).replace("Connection: Upgrade", "Connection: close"),
            400,
            "no upgrade token",
        ),
        (
            upgrade_request("/live", &format!("{origin}X-Big: {}\r\n", "b".repeat(9000))),
            431,
            "8 KiB cap",
        ),
        (
            "\x16\x03\x01\x00\x05\x01\x00\x00\x01\x03\x03garbage\r\n\r\n".into(),
            400,
            "TLS hello on plain port",
        ),
        ("HELLO\r\n\r\n".into(), 400, "garbage"),
    ];
    for (req, want, what) in cases {
        let resp = raw_exchange(&r.addr(), req.as_bytes());
        assert_eq!(status_of(&resp), want, "{what}: {resp}");
        assert!(resp.contains("Connection: close\r\n"), "{what}: {resp}");
    }
    let v8 = raw_exchange(
        &r.addr(),
        upgrade_request("/live", origin)
            .replace("Version: 13", "Version: 8")
            .as_bytes(),
    );
    assert!(v8.contains("Sec-WebSocket-Version: 13\r\n"), "{v8}");
    let ok = upgrade_request(
        "/live?x=1&y=2",
        "Origin: http://a.example\r\nConnection: keep-alive\r\n",
    )
    .replace("Connection: Upgrade", "Connection: keep-alive, UPGRADE")
    .replace("Upgrade: websocket", "Upgrade: WebSocket");
    let mut s = std::net::TcpStream::connect(r.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(ok.as_bytes()).unwrap();
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(
        head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{head}"
    );
    assert!(
        head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
        "{head}"
    );
}

#[test]
fn incomplete_requests_are_closed_at_the_deadline_while_others_are_served() {
    let redis = RedisServer::start();
    let r = relay_with_origins(&redis);
    let started = Instant::now();
    let mut slow = std::net::TcpStream::connect(r.addr()).unwrap();
    slow.write_all(b"GET /live HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let mut silent = std::net::TcpStream::connect(r.addr()).unwrap();
    // Another client is served while those two dawdle.
    let resp = raw_exchange(&r.addr(), upgrade_request("/nowhere", "").as_bytes());
    assert_eq!(status_of(&resp), 404);
    for s in [&mut slow, &mut silent] {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 64];
        match s.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("expected the relay to close, got {other:?}"),
        }
    }
    assert!(started.elapsed() >= Duration::from_millis(600));
    assert!(r
        .stdout
        .wait_for("no complete request within", Duration::from_secs(2))
        .is_some());
}

#[test]
fn a_thousand_garbage_connections_do_not_stop_the_relay() {
    let redis = RedisServer::start();
    let r = Relay::insecure(redis.port(), &[]);
    for i in 0..1000u32 {
        let junk: Vec<u8> = (0..64)
            .map(|j| (i.wrapping_mul(31) ^ (j * 7)) as u8)
            .collect();
        let mut s = std::net::TcpStream::connect(r.addr()).unwrap();
        let _ = s.write_all(&junk);
        let _ = s.write_all(b"\r\n\r\n");
    }
    let resp = raw_exchange(&r.addr(), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status_of(&resp), 426);
}
