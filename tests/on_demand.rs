//! `-rs-on-demand`: a pattern bounds what clients may name, and each
//! concrete channel is subscribed in Redis only while a client reads it.
//! Redis' own view (`PUBSUB NUMSUB`, `PUBSUB NUMPAT`, read with redis-cli
//! and a RESP client of the tests) is what the tests check, with
//! tokio-tungstenite as the WebSocket client.

mod common;

use common::redis::RedisServer;
use common::relay::{self, next_data, raw_exchange, status_of, upgrade_request, Relay, Ws};
use futures_util::SinkExt;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

const T: Duration = Duration::from_secs(20);

fn relay(redis: &RedisServer, extra: &[&str]) -> Relay {
    let mut args = vec![
        "-rs-channel=news,user.*",
        "-rs-on-demand",
        "-rs-on-demand-grace=300ms",
    ];
    args.extend_from_slice(extra);
    let r = Relay::insecure(redis.port(), &args);
    r.wait_subscribed(1);
    r
}

/// Waits until Redis counts `n` subscribers of `channel`.
fn wait_numsub(redis: &RedisServer, channel: &str, n: i64) {
    let deadline = Instant::now() + T;
    while redis.subscriber_count(channel) != n {
        assert!(
            Instant::now() < deadline,
            "{channel}: never {n} subscribers"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn ask(ws: &mut Ws, v: Value) -> Value {
    ws.send(Message::text(v.to_string())).await.unwrap();
    let m = next_data(ws, T).await;
    serde_json::from_str(m.to_text().unwrap()).unwrap()
}

#[tokio::test]
async fn a_channel_is_subscribed_while_a_client_reads_it() {
    let redis = RedisServer::start();
    let r = relay(&redis, &[]);
    assert_eq!(
        redis.cli(&["PUBSUB", "NUMPAT"]).trim(),
        "0",
        "no PSUBSCRIBE"
    );
    assert_eq!(redis.subscriber_count("news"), 1, "names are subscribed");
    assert_eq!(redis.subscriber_count("user.1"), 0);

    let mut everyone = relay::connect(&r.url("/"), None).await.unwrap();
    let mut one = relay::connect(&r.url("/?channel=user.1"), None)
        .await
        .unwrap();
    // The 101 came after Redis confirmed: the subscription is there now.
    assert_eq!(redis.subscriber_count("user.1"), 1);
    assert_eq!(redis.publish("user.1", b"u1"), 1);
    assert_eq!(redis.publish("user.2", b"u2"), 0, "nobody reads user.2");
    assert_eq!(redis.publish("news", b"n1"), 1);
    assert_eq!(next_data(&mut one, T).await, Message::text("u1"));
    assert_eq!(
        next_data(&mut everyone, T).await,
        Message::text("n1"),
        "a client of everything reads the names, not what others asked for"
    );

    // Two readers, one subscription; it goes a grace after the last leaves.
    let mut two = relay::connect(&r.url("/?channel=user.1"), None)
        .await
        .unwrap();
    assert_eq!(redis.subscriber_count("user.1"), 1);
    relay::bye(one).await;
    assert_eq!(redis.publish("user.1", b"u1b"), 1);
    assert_eq!(next_data(&mut two, T).await, Message::text("u1b"));
    relay::bye(two).await;
    wait_numsub(&redis, "user.1", 0);
    assert_eq!(redis.subscriber_count("news"), 1);

    // A pattern is not read whole.
    let answer = raw_exchange(
        &r.addr(),
        upgrade_request("/?channel=user.*", "").as_bytes(),
    );
    assert_eq!(status_of(&answer), 400, "{answer}");
    assert!(answer.contains("-rs-on-demand"), "{answer}");
    relay::bye(everyone).await;
}

#[tokio::test]
async fn a_v1_subscribe_is_answered_once_redis_confirmed() {
    let redis = RedisServer::start();
    let r = relay(&redis, &[]);
    let mut ws = relay::connect_v1(&r.url("/")).await;
    for round in 0..20 {
        let ch = format!("user.{round}");
        let answer = ask(&mut ws, json!({ "subscribe": [ch] })).await;
        assert_eq!(answer, json!({ "subscribed": [ch] }));
        // Published right after the answer: it must arrive.
        assert_eq!(redis.publish(&ch, b"\"hi\""), 1, "{ch}");
        let m = next_data(&mut ws, T).await;
        let v: Value = serde_json::from_str(m.to_text().unwrap()).unwrap();
        assert_eq!(v, json!({ "channel": ch, "data": "hi" }));
        let answer = ask(&mut ws, json!({ "unsubscribe": [ch] })).await;
        assert_eq!(answer, json!({ "unsubscribed": [ch] }));
    }
    let answer = ask(&mut ws, json!({ "subscribe": ["user.*"] })).await;
    assert_eq!(answer["channels"], json!(["user.*"]));
    assert!(answer["error"].as_str().unwrap().contains("-rs-on-demand"));
    for round in 0..20 {
        wait_numsub(&redis, &format!("user.{round}"), 0);
    }
    // The names stay read: the client unsubscribed only user.N.
    assert_eq!(redis.publish("news", b"\"n\""), 1);
    let m = next_data(&mut ws, T).await;
    assert!(m.to_text().unwrap().contains("\"news\""));
}

#[tokio::test]
async fn without_redis_a_new_channel_is_refused_and_old_ones_come_back() {
    let mut redis = RedisServer::start();
    let r = relay(&redis, &["-ws-handshake-timeout=1s"]);
    let mut kept = relay::connect(&r.url("/?channel=user.1"), None)
        .await
        .unwrap();
    let mut ws = relay::connect_v1(&r.url("/?channel=news")).await;
    redis.kill();
    let answer = raw_exchange(
        &r.addr(),
        upgrade_request("/?channel=user.2", "").as_bytes(),
    );
    assert_eq!(status_of(&answer), 503, "{answer}");
    let answer = ask(&mut ws, json!({ "subscribe": ["user.3"] })).await;
    assert_eq!(answer["channels"], json!(["user.3"]));
    assert!(answer["error"]
        .as_str()
        .unwrap()
        .contains("did not confirm"));
    assert!(r
        .stdout
        .wait_for("Redis did not confirm the subscription", T)
        .is_some());

    redis.restart();
    r.wait_subscribed(2);
    wait_numsub(&redis, "user.1", 1);
    assert_eq!(redis.publish("user.1", b"back"), 1);
    assert_eq!(next_data(&mut kept, T).await, Message::text("back"));
    // Refused: not kept (after its grace, if Redis came back within it).
    wait_numsub(&redis, "user.3", 0);
    let answer = ask(&mut ws, json!({ "subscribe": ["user.3"] })).await;
    assert_eq!(answer, json!({ "subscribed": ["user.3"] }));
}

#[test]
fn flags_that_cannot_go_together_are_refused() {
    let (status, _, err) = relay::run(&[
        "-ws-insecure",
        "-rs-on-demand",
        "-broker=embedded",
        "-ws-port=0",
    ]);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("-rs-on-demand"), "{err}");
}
