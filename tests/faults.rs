//! Redis goes away and comes back; WebSocket clients never notice more
//! than the gap.

mod common;

use common::redis::{free_port, RedisServer};
use common::relay::{self, next_data, Relay};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

const T: Duration = Duration::from_secs(30);

#[tokio::test]
async fn redis_killed_and_restarted_while_clients_stay_connected() {
    let mut redis = RedisServer::start();
    let r = Relay::insecure(redis.port(), &[]);
    r.wait_subscribed(1);
    let mut a = relay::connect(&r.url("/"), None).await.unwrap();
    let mut b = relay::connect(&r.url("/"), None).await.unwrap();
    redis.publish("pubsocketd", b"before");
    for ws in [&mut a, &mut b] {
        assert_eq!(next_data(ws, T).await, Message::text("before"));
    }
    for round in 2..=3 {
        redis.kill();
        r.stdout
            .wait_count("[redis] connection to", round - 1, T)
            .expect("loss logged");
        redis.restart();
        r.wait_subscribed(round);
        let text = format!("after restart {round}");
        assert_eq!(redis.publish("pubsocketd", text.as_bytes()), 1);
        for ws in [&mut a, &mut b] {
            assert_eq!(next_data(ws, T).await, Message::text(text.clone()));
        }
    }
    // One warning per outage, not one per retry.
    assert_eq!(r.stdout.count("WARN [redis]"), 2, "{:?}", r.stdout.all());
}

#[tokio::test]
async fn relay_starts_and_serves_while_redis_is_down() {
    let port = free_port();
    let r = Relay::insecure(port, &[]);
    let warn = r.stdout.wait_for("[redis] cannot connect to", T);
    assert!(warn.unwrap().contains("reconnecting"));
    let mut ws = relay::connect(&r.url("/"), None)
        .await
        .expect("serves without Redis");
    let redis = RedisServer::start_on(port);
    r.wait_subscribed(1);
    redis.publish("pubsocketd", b"first");
    assert_eq!(next_data(&mut ws, T).await, Message::text("first"));
}

#[tokio::test]
async fn subscriber_connection_killed_by_redis_is_resubscribed() {
    let redis = RedisServer::start();
    let r = Relay::insecure(redis.port(), &[]);
    r.wait_subscribed(1);
    let mut ws = relay::connect(&r.url("/"), None).await.unwrap();
    redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    r.wait_subscribed(2);
    redis.publish("pubsocketd", b"back");
    assert_eq!(next_data(&mut ws, T).await, Message::text("back"));
}
