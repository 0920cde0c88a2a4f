//! Many channels and patterns, chosen by each client in the URL.

mod common;

use common::redis::RedisServer;
use common::relay::{self, next_data, raw_exchange, status_of, upgrade_request, Relay};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

const T: Duration = Duration::from_secs(20);

async fn expect(ws: &mut relay::Ws, want: &[&str]) {
    for w in want {
        assert_eq!(next_data(ws, T).await, Message::text(*w));
    }
}

#[tokio::test]
async fn clients_choose_channels_and_patterns_in_the_url() {
    let redis = RedisServer::start();
    let r = Relay::insecure(redis.port(), &["-rs-channel=alerts,news.*,sports"]);
    r.wait_subscribed(1);
    let line = r.stdout.wait_for("[redis] subscribed to", T).unwrap();
    assert!(line.contains("alerts, news.*, sports"), "{line}");
    let mut everything = relay::connect(&r.url("/"), None).await.unwrap();
    let mut alerts = relay::connect(&r.url("/?channel=alerts"), None)
        .await
        .unwrap();
    let mut news_uk = relay::connect(&r.url("/?channel=news.uk"), None)
        .await
        .unwrap();
    let mut two = relay::connect(&r.url("/?channel=alerts&channel=news.*"), None)
        .await
        .unwrap();
    // Each publish once: the relay is subscribed once to each key.
    assert_eq!(redis.publish("alerts", b"a1"), 1);
    assert_eq!(redis.publish("news.fr", b"n-fr"), 1);
    assert_eq!(redis.publish("news.uk", b"n-uk"), 1);
    assert_eq!(redis.publish("sports", b"s1"), 1);
    assert_eq!(redis.publish("other", b"nobody"), 0);
    assert_eq!(redis.publish("alerts", b"a2"), 1);
    expect(&mut everything, &["a1", "n-fr", "n-uk", "s1", "a2"]).await;
    expect(&mut alerts, &["a1", "a2"]).await;
    expect(&mut news_uk, &["n-uk"]).await;
    expect(&mut two, &["a1", "n-fr", "n-uk", "a2"]).await;
    // Nothing else arrives: a marker on every channel comes next.
    redis.publish("alerts", b"end");
    redis.publish("news.uk", b"end");
    for ws in [&mut alerts, &mut news_uk] {
        assert_eq!(next_data(ws, T).await, Message::text("end"));
    }
}

#[tokio::test]
async fn overlapping_name_and_pattern_deliver_each_publish_once() {
    let redis = RedisServer::start();
    let r = Relay::insecure(redis.port(), &["-rs-channel=feed.main,feed.*,*"]);
    r.wait_subscribed(1);
    let mut all = relay::connect(&r.url("/"), None).await.unwrap();
    let mut main = relay::connect(&r.url("/?channel=feed.main&channel=feed.*"), None)
        .await
        .unwrap();
    // Redis sends three pushes for this publish (one per subscription).
    assert_eq!(redis.publish("feed.main", b"once"), 3);
    assert_eq!(redis.publish("zzz", b"only *"), 1);
    assert_eq!(next_data(&mut all, T).await, Message::text("once"));
    assert_eq!(next_data(&mut all, T).await, Message::text("only *"));
    assert_eq!(next_data(&mut main, T).await, Message::text("once"));
    redis.publish("feed.main", b"second");
    assert_eq!(next_data(&mut main, T).await, Message::text("second"));
}

#[test]
fn a_channel_not_relayed_here_is_refused_at_the_handshake() {
    let redis = RedisServer::start();
    let r = Relay::insecure(redis.port(), &["-rs-channel=public,news.*"]);
    for path in [
        "/?channel=private",
        "/?channel=news",
        "/?channel=public&channel=secret",
    ] {
        let resp = raw_exchange(&r.addr(), upgrade_request(path, "").as_bytes());
        assert_eq!(status_of(&resp), 404, "{path}: {resp}");
    }
    assert!(r
        .stdout
        .wait_for("refused: 404 channel \"private\" is not relayed here", T)
        .is_some());
    // Redis was never asked to subscribe to them.
    assert_eq!(redis.subscriber_count("private"), 0);
    assert_eq!(redis.subscriber_count("secret"), 0);
}

#[tokio::test]
async fn envelope_names_the_channel() {
    let redis = RedisServer::start();
    let r = Relay::insecure(redis.port(), &["-rs-channel=a,b", "-ws-envelope"]);
    r.wait_subscribed(1);
    let mut ws = relay::connect(&r.url("/"), None).await.unwrap();
    redis.publish("a", br#"{"x":1}"#);
    redis.publish("b", b"plain text");
    let m = next_data(&mut ws, T).await;
    let v: serde_json::Value = serde_json::from_str(m.to_text().unwrap()).unwrap();
    assert_eq!(v, serde_json::json!({"channel": "a", "data": {"x": 1}}));
    let m = next_data(&mut ws, T).await;
    let v: serde_json::Value = serde_json::from_str(m.to_text().unwrap()).unwrap();
    assert_eq!(v, serde_json::json!({"channel": "b", "data": "plain text"}));
}
