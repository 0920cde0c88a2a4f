//! Guards the upgrade request path, paid once per connection (and so per
//! reconnect storm): `ws::handshake::parse` on a browser's request, the
//! `Sec-WebSocket-Accept` digest, and the Origin check alone.

mod common;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pubsocketd::ws::handshake;
use pubsocketd::ws::origin::{Origin, OriginPolicy};
use std::hint::black_box;

/// The routes parsed against.
const ROUTES: handshake::Routes = handshake::Routes {
    ws: "/ws",
    sse: "/ws/events",
};

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// What Chrome sends (behind a proxy that adds X-Real-IP and
/// X-Forwarded-For), with its cookie and compression headers.
fn chrome_request() -> String {
    [
        "GET /ws?channel=news.sports HTTP/1.1",
        "Host: live.example.com",
        "Connection: Upgrade",
        "Pragma: no-cache",
        "Cache-Control: no-cache",
        "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
        "Upgrade: websocket",
        "Origin: https://www.example.com",
        "Sec-WebSocket-Version: 13",
        "Accept-Encoding: gzip, deflate, br, zstd",
        "Accept-Language: en-GB,en-US;q=0.9,en;q=0.8",
        "Cookie: session=4f1c2a9be07d4c53a1d8e6f0b2c7d9e1; consent=1; theme=dark",
        &format!("Sec-WebSocket-Key: {KEY}"),
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits",
        "X-Real-IP: 203.0.113.7",
        "X-Forwarded-For: 203.0.113.7",
        "X-Forwarded-Proto: https",
        "",
        "",
    ]
    .join("\r\n")
}

/// Three allowed origins; the request's is the last one checked.
fn policy() -> OriginPolicy {
    OriginPolicy::List(
        [
            "https://example.com",
            "https://admin.example.com:8443",
            "https://www.example.com",
        ]
        .iter()
        .map(|s| Origin::parse(s).unwrap())
        .collect(),
    )
}

fn handshake(c: &mut Criterion) {
    let raw = chrome_request();
    let origins = policy();
    let ok = handshake::parse(raw.as_bytes(), ROUTES, &origins)
        .expect("accepted")
        .expect("complete");
    assert_eq!(ok.consumed, raw.len());
    assert_eq!(ok.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");

    let mut g = c.benchmark_group("handshake_parse");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse_chrome_3_origins", |b| {
        b.iter(|| handshake::parse(black_box(raw.as_bytes()), ROUTES, &origins))
    });
    g.bench_function("accept_key", |b| {
        b.iter(|| handshake::accept_key(black_box(KEY.as_bytes())))
    });
    let origin = b"https://www.example.com";
    assert!(origins.check(Some(origin)).is_ok());
    g.bench_function("origin_check_3_origins", |b| {
        b.iter(|| origins.check(black_box(Some(&origin[..]))))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::quick();
    targets = handshake
}
criterion_main!(benches);
