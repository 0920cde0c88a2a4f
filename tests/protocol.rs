//! The `pubsocketd.v1` subprotocol: negotiation, enveloped messages, and
//! subscribe/unsubscribe on an open socket, with tokio-tungstenite and with
//! an independent client (Python's `websockets`, at its defaults, which
//! include permessage-deflate).

mod common;

use common::redis::RedisServer;
use common::relay::{self, close_code, next_data, Relay, Ws};
use futures_util::SinkExt;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const T: Duration = Duration::from_secs(20);

/// Connects offering `protocols`; returns the socket and the protocol the
/// relay answered with.
async fn connect(url: &str, protocols: &str) -> (Ws, Option<String>) {
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", protocols.parse().unwrap());
    let host = req.uri().authority().unwrap().to_string();
    let tcp = tokio::net::TcpStream::connect(host).await.unwrap();
    let (ws, resp) = tokio_tungstenite::client_async(req, tcp).await.unwrap();
    let chosen = resp
        .headers()
        .get("Sec-WebSocket-Protocol")
        .map(|v| v.to_str().unwrap().to_string());
    (ws, chosen)
}

/// The next data message as JSON.
async fn next_json(ws: &mut Ws) -> Value {
    let m = next_data(ws, T).await;
    serde_json::from_str(m.to_text().unwrap()).unwrap()
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

fn relay(redis: &RedisServer, extra: &[&str]) -> Relay {
    let mut args = vec!["-rs-channel=news,user.*,alerts"];
    args.extend_from_slice(extra);
    let r = Relay::insecure(redis.port(), &args);
    r.wait_subscribed(1);
    r
}

#[tokio::test]
async fn the_relay_answers_the_subprotocol_it_speaks() {
    let redis = RedisServer::start();
    let r = relay(&redis, &[]);
    let url = r.url("/?channel=news");
    for (offer, want) in [
        ("pubsocketd.v1", Some("pubsocketd.v1")),
        ("chat, pubsocketd.raw, pubsocketd.v1", Some("pubsocketd.v1")),
        ("pubsocketd.raw", Some("pubsocketd.raw")),
    ] {
        let (ws, chosen) = connect(&url, offer).await;
        assert_eq!(chosen.as_deref(), want, "{offer}");
        relay::bye(ws).await;
    }
    // The original's clients (no offer) get raw payloads, as do raw ones.
    let mut plain = relay::connect(&url, None).await.unwrap();
    let (mut raw, _) = connect(&url, "pubsocketd.raw").await;
    let (mut v1, _) = connect(&url, "pubsocketd.v1").await;
    redis.publish("news", br#"{"a":1}"#);
    redis.publish("news", b"plain text");
    for ws in [&mut plain, &mut raw] {
        assert_eq!(next_data(ws, T).await, Message::text(r#"{"a":1}"#));
        assert_eq!(next_data(ws, T).await, Message::text("plain text"));
    }
    assert_eq!(
        next_json(&mut v1).await,
        json!({"channel": "news", "data": {"a": 1}})
    );
    assert_eq!(
        next_json(&mut v1).await,
        json!({"channel": "news", "data": "plain text"})
    );
}

#[tokio::test]
async fn subscribe_and_unsubscribe_on_an_open_socket() {
    let redis = RedisServer::start();
    let r = relay(&redis, &["-ws-max-channels=3"]);
    let (mut ws, _) = connect(&r.url("/?channel=news"), "pubsocketd.v1").await;
    send(&mut ws, json!({"subscribe": ["user.7", "alerts"]})).await;
    assert_eq!(
        next_json(&mut ws).await,
        json!({"subscribed": ["user.7", "alerts"]})
    );
    redis.publish("user.7", b"for 7");
    redis.publish("user.8", b"for 8");
    redis.publish("alerts", b"alert");
    assert_eq!(next_json(&mut ws).await["data"], "for 7");
    assert_eq!(next_json(&mut ws).await["data"], "alert");
    // Refusals change nothing and keep the connection.
    send(&mut ws, json!({"subscribe": ["secret", "user.1"]})).await;
    assert_eq!(
        next_json(&mut ws).await,
        json!({"error": "not relayed here", "channels": ["secret"]})
    );
    send(&mut ws, json!({"subscribe": ["user.1"]})).await;
    assert_eq!(
        next_json(&mut ws).await,
        json!({"error": "over -ws-max-channels (3)", "channels": ["user.1"]})
    );
    send(&mut ws, json!({"unsubscribe": ["news", "user.7"]})).await;
    assert_eq!(
        next_json(&mut ws).await,
        json!({"unsubscribed": ["news", "user.7"]})
    );
    redis.publish("news", b"gone");
    redis.publish("user.7", b"gone too");
    redis.publish("alerts", b"still here");
    assert_eq!(next_json(&mut ws).await["data"], "still here");
    // The answers and messages came in order; now a malformed request.
    ws.send(Message::text("subscribe news")).await.unwrap();
    assert_eq!(close_code(&mut ws, T).await, Some(1007));
    assert!(r
        .stdout
        .wait_for("a control message must be JSON", T)
        .is_some());
}

#[tokio::test]
async fn malformed_control_messages_close_with_their_code() {
    let redis = RedisServer::start();
    let r = relay(&redis, &[]);
    for (msg, code) in [
        (Message::text("not json"), 1007),
        (Message::text(r#"{"publish":["news"]}"#), 1008),
        (Message::text(r#"{"subscribe":"news"}"#), 1008),
        (Message::binary(vec![1u8, 2, 3]), 1003),
    ] {
        let (mut ws, _) = connect(&r.url("/"), "pubsocketd.v1").await;
        ws.send(msg.clone()).await.unwrap();
        assert_eq!(close_code(&mut ws, T).await, Some(code), "{msg:?}");
    }
    // Without the subprotocol, client messages are ignored, as before.
    let mut plain = relay::connect(&r.url("/?channel=news"), None)
        .await
        .unwrap();
    plain.send(Message::text("not json")).await.unwrap();
    redis.publish("news", b"still served");
    assert_eq!(
        next_data(&mut plain, T).await,
        Message::text("still served")
    );
}

/// A client that reads everything may narrow down by unsubscribing.
#[tokio::test]
async fn a_client_of_everything_unsubscribes() {
    let redis = RedisServer::start();
    let r = relay(&redis, &[]);
    let (mut ws, _) = connect(&r.url("/"), "pubsocketd.v1").await;
    send(&mut ws, json!({"subscribe": ["user.1"]})).await;
    assert_eq!(next_json(&mut ws).await, json!({"subscribed": ["user.1"]}));
    send(&mut ws, json!({"unsubscribe": ["alerts"]})).await;
    assert_eq!(
        next_json(&mut ws).await,
        json!({"unsubscribed": ["alerts"]})
    );
    redis.publish("alerts", b"not any more");
    redis.publish("user.3", b"via the pattern");
    redis.publish("news", b"news");
    assert_eq!(next_json(&mut ws).await["data"], "via the pattern");
    assert_eq!(next_json(&mut ws).await["data"], "news");
}

/// Publishes race with the requests: after `subscribed`, every message of
/// the channel arrives, in order, none twice; after `unsubscribed`, none
/// does.
#[tokio::test]
async fn requests_racing_with_publishes() {
    let redis = RedisServer::start();
    let r = relay(&redis, &[]);
    let (mut ws, _) = connect(&r.url("/?channel=alerts"), "pubsocketd.v1").await;
    let port = redis.port();
    let publisher = std::thread::spawn(move || {
        let mut child = Command::new("redis-cli")
            .args(["-p", &port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        for i in 1..=3000 {
            writeln!(stdin, "PUBLISH user.5 {i}").unwrap();
        }
        writeln!(stdin, "PUBLISH alerts end").unwrap();
        drop(stdin);
        child.wait().unwrap();
    });
    send(&mut ws, json!({"subscribe": ["user.5"]})).await;
    let mut seen: Vec<u64> = Vec::new();
    let mut subscribed = false;
    let mut unsubscribed = false;
    loop {
        let v = next_json(&mut ws).await;
        if v.get("subscribed").is_some() {
            subscribed = true;
        } else if v.get("unsubscribed").is_some() {
            unsubscribed = true;
        } else if v["channel"] == "alerts" {
            break;
        } else {
            assert!(subscribed && !unsubscribed, "a message outside: {v}");
            seen.push(v["data"].as_u64().unwrap());
            if seen.len() == 500 {
                send(&mut ws, json!({"unsubscribe": ["user.5"]})).await;
            }
        }
    }
    publisher.join().unwrap();
    assert!(seen.len() >= 500, "{} messages", seen.len());
    assert!(
        seen.windows(2).all(|w| w[1] == w[0] + 1),
        "in order, none missing, none twice: {seen:?}"
    );
}

const PY_CLIENT: &str = r#"
import asyncio, json, sys
import websockets
async def main(url):
    async with websockets.connect(url, subprotocols=["pubsocketd.v1"]) as ws:
        print(json.dumps({"protocol": ws.subprotocol,
                          "extensions": ws.response.headers.get("Sec-WebSocket-Extensions")}), flush=True)
        await ws.send(json.dumps({"subscribe": ["user.42"]}))
        for _ in range(3):
            print(json.dumps({"message": json.loads(await ws.recv())}), flush=True)
asyncio.run(main(sys.argv[1]))
"#;

/// Python's `websockets` at its defaults (it offers permessage-deflate):
/// the compressed envelope inflates to the same JSON.
#[test]
fn an_independent_client_speaks_v1() {
    let redis = RedisServer::start();
    let r = relay(&redis, &[]);
    let mut child = Command::new("python3")
        .args(["-c", PY_CLIENT, &r.url("/?channel=news")])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 with websockets: run .ci/install-test-deps");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = || -> Value { serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap() };
    let hello = next();
    assert_eq!(hello["protocol"], "pubsocketd.v1");
    assert!(hello["extensions"]
        .as_str()
        .unwrap()
        .contains("permessage-deflate"));
    assert_eq!(next()["message"], json!({"subscribed": ["user.42"]}));
    let big = json!({"rows": vec!["the same words again"; 50]}).to_string();
    redis.publish("user.42", big.as_bytes());
    redis.publish("news", b"short");
    let m = next();
    assert_eq!(m["message"]["channel"], "user.42");
    assert_eq!(
        m["message"]["data"],
        serde_json::from_str::<Value>(&big).unwrap()
    );
    assert_eq!(
        next()["message"],
        json!({"channel": "news", "data": "short"})
    );
    assert!(child.wait().unwrap().success());
}
