//! Messages from a real Redis to real WebSocket clients: order, loss,
//! text and binary, large payloads, caps, JSON-only, heartbeat and the
//! client side of the protocol.

mod common;

use common::redis::RedisServer;
use common::relay::{self, client_frame, next_data, RawWs, Relay};
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

const T: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_messages_reach_fifty_clients_in_order() {
    let redis = RedisServer::start();
    let r = Relay::insecure(redis.port(), &["-workers=2"]);
    r.wait_subscribed(1);
    let mut clients = Vec::new();
    for _ in 0..50 {
        clients.push(relay::connect(&r.url("/"), None).await.unwrap());
    }
    r.stdout.wait_count("[connect] OK", 50, T).unwrap();
    let publisher = tokio::task::spawn_blocking(move || {
        for i in 0..1000 {
            let n = redis.publish("pubsocketd", format!("{{\"seq\":{i}}}").as_bytes());
            assert_eq!(n, 1, "one subscriber for the whole process");
        }
        redis
    });
    let readers = clients.into_iter().map(|mut ws| {
        tokio::spawn(async move {
            for i in 0..1000 {
                let m = next_data(&mut ws, T).await;
                assert_eq!(m, Message::text(format!("{{\"seq\":{i}}}")));
            }
        })
    });
    for reader in readers.collect::<Vec<_>>() {
        reader.await.unwrap();
    }
    let redis = publisher.await.unwrap();
    assert_eq!(redis.subscriber_count("pubsocketd"), 1);
}

#[tokio::test]
async fn text_binary_empty_and_16_mib_payloads_arrive_unchanged() {
    let redis = RedisServer::start();
    let r = Relay::insecure(redis.port(), &[]);
    r.wait_subscribed(1);
    let mut ws = relay::connect(&r.url("/"), None).await.unwrap();
    let big: Vec<u8> = (0..16 << 20).map(|i: u32| b'a' + (i % 26) as u8).collect();
    let mut big_binary = big.clone();
    big_binary[7] = 0xff;
    let payloads: Vec<Vec<u8>> = vec![
        br#"{"n": 12345678901234567890123, "s": "\u00e9"}"#.to_vec(),
        "plain text, not JSON: ünïcödé".into(),
        vec![0, 159, 146, 150, 255],
        Vec::new(),
        big.clone(),
        big_binary.clone(),
    ];
    for p in &payloads {
        redis.publish("pubsocketd", p);
    }
    for p in &payloads {
        // Generous: 32 MiB through debug builds on a loaded machine.
        let got = next_data(&mut ws, 3 * T).await;
        let (kind, data) = match &got {
            Message::Text(t) => ("text", t.as_bytes()),
            Message::Binary(b) => ("binary", &b[..]),
            other => panic!("expected data, got {:?}", other.to_text().map(|t| t.len())),
        };
        let want = if std::str::from_utf8(p).is_ok() {
            "text"
        } else {
            "binary"
        };
        assert_eq!(kind, want, "len {}", p.len());
        assert_eq!(data.len(), p.len());
        assert!(data == &p[..], "payload of {} bytes changed", p.len());
    }
}

#[tokio::test]
async fn payloads_over_the_cap_are_dropped_with_a_log_line() {
    let redis = RedisServer::start();
    let r = Relay::insecure(redis.port(), &["-rs-max-payload=1KiB"]);
    r.wait_subscribed(1);
    let mut ws = relay::connect(&r.url("/"), None).await.unwrap();
    redis.publish("pubsocketd", &vec![b'x'; 1025]);
    redis.publish("pubsocketd", &vec![b'y'; 1024]);
    assert_eq!(next_data(&mut ws, T).await, Message::text("y".repeat(1024)));
    let line = r.stdout.wait_for("dropped a 1025-byte message", T);
    assert!(line.unwrap().contains("-rs-max-payload"));
}

#[tokio::test]
async fn json_only_drops_what_is_not_json() {
    let redis = RedisServer::start();
    let r = Relay::insecure(redis.port(), &["-ws-json-only"]);
    r.wait_subscribed(1);
    let mut ws = relay::connect(&r.url("/"), None).await.unwrap();
    for p in ["not json", "{\"ok\":1}", "{broken", "[1,2,3]", "\"str\""] {
        redis.publish("pubsocketd", p.as_bytes());
    }
    for want in ["{\"ok\":1}", "[1,2,3]", "\"str\""] {
        assert_eq!(next_data(&mut ws, T).await, Message::text(want));
    }
    // Log lines and WebSocket messages travel apart: wait for the second.
    assert!(r.stdout.wait_count("failed to parse JSON", 2, T).is_some());
    assert_eq!(r.stdout.count("failed to parse JSON"), 2);
}

#[tokio::test]
async fn heartbeat_sends_the_originals_message() {
    let redis = RedisServer::start();
    let r = Relay::insecure(
        redis.port(),
        &["-ws-heartbeat", "-ws-heartbeat-interval=200ms"],
    );
    let mut a = relay::connect(&r.url("/"), None).await.unwrap();
    let mut b = relay::connect(&r.url("/"), None).await.unwrap();
    for ws in [&mut a, &mut b] {
        let m = next_data(ws, T).await;
        assert_eq!(m, Message::text(r#""{\"heartbeat\": 1}""#));
        let decoded: String = serde_json::from_str(m.to_text().unwrap()).unwrap();
        assert_eq!(decoded, r#"{"heartbeat": 1}"#);
    }
}

#[tokio::test]
async fn pings_are_sent_and_silent_peers_are_dropped() {
    let redis = RedisServer::start();
    let r = Relay::insecure(
        redis.port(),
        &["-ws-ping-interval=200ms", "-ws-pong-timeout=1s"],
    );
    // tungstenite answers pings by itself while we read.
    let mut live = relay::connect(&r.url("/"), None).await.unwrap();
    let ping = tokio::time::timeout(T, live.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(matches!(ping, Message::Ping(_)), "{ping:?}");
    // A raw client that never answers is dropped after the timeout.
    let mut silent = RawWs::open(&r.addr(), b"");
    let (b0, _) = silent.frame().expect("a ping");
    assert_eq!(b0, 0x89);
    let silent_thread = std::thread::spawn(move || silent.wait_closed());
    // Meanwhile the live client keeps receiving pings and stays.
    let keep = tokio::time::Instant::now() + Duration::from_millis(2500);
    while tokio::time::Instant::now() < keep {
        let m = tokio::time::timeout(T, live.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(matches!(m, Message::Ping(_)), "{m:?}");
    }
    silent_thread.join().unwrap();
    r.wait_subscribed(1);
    redis.publish("pubsocketd", b"still here");
    assert_eq!(next_data(&mut live, T).await, Message::text("still here"));
}

#[test]
fn client_frames_are_answered_per_rfc6455() {
    let redis = RedisServer::start();
    let r = Relay::insecure(redis.port(), &["-ws-max-message=1KiB"]);
    // Ping pipelined in the same packet as the handshake; pong echoes it.
    let mut ws = RawWs::open(&r.addr(), &client_frame(0x89, b"are you there"));
    assert_eq!(ws.frame().unwrap(), (0x8a, b"are you there".to_vec()));
    // Data messages (text, fragmented, binary) are accepted and ignored.
    ws.send(&client_frame(0x81, b"hello"));
    ws.send(&client_frame(0x02, b"part"));
    ws.send(&client_frame(0x89, &[7u8; 125]));
    ws.send(&client_frame(0x80, b"end"));
    assert_eq!(ws.frame().unwrap(), (0x8a, vec![7u8; 125]));
    // Close is echoed, then the TCP connection ends.
    ws.send(&client_frame(0x88, b"\x03\xe8done"));
    assert_eq!(ws.frame().unwrap(), (0x88, b"\x03\xe8".to_vec()));
    ws.wait_closed();

    let violations: Vec<(Vec<u8>, u16)> = vec![
        (vec![0x81, 0x02, b'h', b'i'], 1002),
        (client_frame(0xc1, b"x"), 1002),
        (client_frame(0x83, b"x"), 1002),
        (client_frame(0x89, &[0u8; 126]), 1002),
        (client_frame(0x09, b"x"), 1002),
        (client_frame(0x81, b"\xc3\x28"), 1007),
        (client_frame(0x88, b"\x03\xed"), 1002),
        (client_frame(0x82, &[0u8; 1025]), 1009),
        (client_frame(0x88, b"\x03\xe8\xff\xfe"), 1007),
        (client_frame(0x88, b"\x03\xe7"), 1002),
        (client_frame(0x88, b"\x0b\xb7"), 1002),
        (client_frame(0x80, b"no message to continue"), 1002),
        (
            [client_frame(0x01, b"ab"), client_frame(0x81, b"new")].concat(),
            1002,
        ),
        (
            [
                client_frame(0x02, &[0u8; 600]),
                client_frame(0x80, &[0u8; 600]),
            ]
            .concat(),
            1009,
        ),
        (
            [client_frame(0x01, b"\xc3"), client_frame(0x80, b"\x28")].concat(),
            1007,
        ),
    ];
    for (bytes, code) in violations {
        let mut ws = RawWs::open(&r.addr(), b"");
        ws.send(&bytes);
        let (b0, payload) = ws.frame().expect("a close frame");
        assert_eq!(b0, 0x88, "{bytes:?}");
        assert_eq!(
            u16::from_be_bytes([payload[0], payload[1]]),
            code,
            "{bytes:?}"
        );
        ws.wait_closed();
    }
}

#[tokio::test]
async fn client_messages_are_ignored_and_the_connection_stays() {
    let redis = RedisServer::start();
    let r = Relay::insecure(redis.port(), &[]);
    r.wait_subscribed(1);
    let mut ws = relay::connect(&r.url("/"), None).await.unwrap();
    ws.send(Message::text("clients do not publish"))
        .await
        .unwrap();
    ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    ws.send(Message::Ping(b"p".to_vec().into())).await.unwrap();
    loop {
        let m = tokio::time::timeout(T, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Message::Pong(p) = m {
            assert_eq!(&p[..], b"p");
            break;
        }
    }
    redis.publish("pubsocketd", b"after");
    assert_eq!(next_data(&mut ws, T).await, Message::text("after"));
    ws.close(None).await.unwrap();
    let end = tokio::time::timeout(T, async { while let Some(Ok(_)) = ws.next().await {} });
    end.await
        .expect("server ends the connection after the close handshake");
}
