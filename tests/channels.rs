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

/// Per-user channels under one pattern, with clients leaving and others
/// taking their places: each client receives exactly its own channel's
/// messages, in order, also after the relay's index reused the places of
/// those that left, and a heartbeat still reaches everyone.
#[tokio::test]
async fn per_user_channels_with_clients_coming_and_going() {
    let redis = RedisServer::start();
    let r = Relay::insecure(
        redis.port(),
        &[
            "-rs-channel=user.*,news",
            "-workers=1",
            "-ws-heartbeat",
            "-ws-heartbeat-interval=1s",
        ],
    );
    r.wait_subscribed(1);
    let url = |u: usize| r.url(&format!("/?channel=user.{u}&channel=news"));
    let mut users = Vec::new();
    for u in 0..40 {
        users.push(relay::connect(&url(u), None).await.unwrap());
    }
    // Every client leaves, the even ones with a close handshake, the odd
    // ones by dropping the connection; the odd ones come back, and
    // newcomers take user numbers 40..60.
    for (u, ws) in users.drain(..).enumerate() {
        if u % 2 == 0 {
            relay::bye(ws).await;
        }
    }
    let mut clients: Vec<(usize, relay::Ws)> = Vec::new();
    for u in (1..40).step_by(2).chain(40..60) {
        clients.push((u, relay::connect(&url(u), None).await.unwrap()));
    }
    for round in 0..3 {
        for (u, _) in &clients {
            redis.publish(&format!("user.{u}"), format!("{u}/{round}").as_bytes());
        }
    }
    redis.publish("news", b"to all");
    for (u, ws) in &mut clients {
        let mut got = Vec::new();
        while got.len() < 4 {
            let m = next_data(ws, T).await;
            let text = m.to_text().unwrap().to_string();
            if !text.contains("heartbeat") {
                got.push(text);
            }
        }
        let want: Vec<String> = (0..3)
            .map(|round| format!("{u}/{round}"))
            .chain(["to all".to_string()])
            .collect();
        assert_eq!(got, want, "user {u}");
    }
    let (_, ws) = clients.first_mut().unwrap();
    loop {
        let m = next_data(ws, T).await;
        if m.to_text().unwrap().contains("heartbeat") {
            break;
        }
    }
}

/// The most keys `-rs-channel` takes: each is subscribed, and a client of
/// the last one, like a client of everything, receives what is published
/// there; one more is a flag error.
#[tokio::test]
async fn ten_thousand_channels() {
    let redis = RedisServer::start();
    let names: Vec<String> = (0..10_000).map(|i| format!("c{i}")).collect();
    let list = format!("-rs-channel={}", names.join(","));
    let r = Relay::insecure(redis.port(), &[&list]);
    r.wait_subscribed(1);
    assert_eq!(redis.subscriber_count("c9999"), 1);
    let mut last = relay::connect(&r.url("/?channel=c9999"), None)
        .await
        .unwrap();
    let mut all = relay::connect(&r.url("/"), None).await.unwrap();
    redis.publish("c0", b"first");
    redis.publish("c9999", b"last");
    expect(&mut all, &["first", "last"]).await;
    expect(&mut last, &["last"]).await;
    let too_many = format!("-rs-channel={},one-more", names.join(","));
    let (status, _, err) = relay::run(&["-ws-insecure", &too_many]);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("at most 10000"), "{err}");
}

/// `-ws-max-channels` bounds what one client may read: more names is a 400
/// that says why, before any upgrade.
#[tokio::test]
async fn more_channels_than_allowed_is_a_400() {
    let redis = RedisServer::start();
    let r = Relay::insecure(
        redis.port(),
        &["-rs-channel=a,b,user.*", "-ws-max-channels=2"],
    );
    r.wait_subscribed(1);
    let path = "/?channel=a&channel=b&channel=user.1";
    let resp = raw_exchange(&r.addr(), upgrade_request(path, "").as_bytes());
    assert_eq!(status_of(&resp), 400, "{resp}");
    assert!(
        resp.contains("3 channels asked for; -ws-max-channels is 2"),
        "{resp}"
    );
    assert!(r
        .stdout
        .wait_for("refused: 400 3 channels asked for", T)
        .is_some());
    let mut two = relay::connect(&r.url("/?channel=a&channel=user.1"), None)
        .await
        .unwrap();
    redis.publish("user.1", b"ok");
    assert_eq!(next_data(&mut two, T).await, Message::text("ok"));
}

/// `-rs-channel-file`: one name or pattern per line; SIGHUP reads it again,
/// subscribes what is new and unsubscribes what is gone without dropping
/// anyone else, and closes with 1008 the clients left with nothing.
#[tokio::test]
async fn a_channel_file_reloaded_on_sighup() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("channels");
    std::fs::write(&file, "news   # the front page\n\n# users\nuser.*\n").unwrap();
    let arg = format!("-rs-channel-file={}", file.display());
    let r = Relay::insecure(redis.port(), &[&arg]);
    r.wait_subscribed(1);
    assert_eq!(redis.subscriber_count("news"), 1);
    let mut news = relay::connect(&r.url("/?channel=news"), None)
        .await
        .unwrap();
    let mut user = relay::connect(&r.url("/?channel=user.1"), None)
        .await
        .unwrap();
    let mut all = relay::connect(&r.url("/"), None).await.unwrap();
    let resp = raw_exchange(
        &r.addr(),
        upgrade_request("/?channel=alerts", "").as_bytes(),
    );
    assert_eq!(status_of(&resp), 404);

    std::fs::write(&file, "user.*\nalerts\n").unwrap();
    r.signal(libc::SIGHUP);
    let line = r
        .stdout
        .wait_for("[channels] SIGHUP", T)
        .expect("the reload is logged");
    assert!(
        line.contains("1 added, 1 removed; 2 channels and patterns relayed"),
        "{line}"
    );
    // The client of news alone is closed; the others stay.
    assert_eq!(relay::close_code(&mut news, T).await, Some(1008));
    let deadline = std::time::Instant::now() + T;
    while redis.subscriber_count("alerts") != 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(redis.subscriber_count("alerts"), 1);
    assert_eq!(redis.subscriber_count("news"), 0);
    let mut alerts = relay::connect(&r.url("/?channel=alerts"), None)
        .await
        .unwrap();
    redis.publish("news", b"nobody");
    redis.publish("user.1", b"for 1");
    redis.publish("alerts", b"alert");
    expect(&mut user, &["for 1"]).await;
    expect(&mut all, &["for 1", "alert"]).await;
    expect(&mut alerts, &["alert"]).await;

    // A file that cannot be used changes nothing.
    std::fs::write(&file, "a,b\n").unwrap();
    r.signal(libc::SIGHUP);
    let line = r
        .stdout
        .wait_for("the channels stay as they were", T)
        .expect("the refusal is logged");
    assert!(
        line.contains("line 1: one channel or pattern per line"),
        "{line}"
    );
    redis.publish("alerts", b"still");
    expect(&mut alerts, &["still"]).await;
}
