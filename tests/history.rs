//! Message IDs, history and resume (`-history`, `?since=`, the v1
//! `since`): every message missed comes back once, in order, then
//! `recovered`; what is no longer kept is said with `recovered:false`.
//! Against a real Redis (killed and restarted) and the embedded broker,
//! with tokio-tungstenite and Python's `websockets` at its defaults.

mod common;

use common::redis::{free_port, RedisServer};
use common::relay::{
    self, close_code, connect_v1, next_data, next_json, raw_exchange, status_of, take,
    upgrade_request, Relay, Ws,
};
use futures_util::SinkExt;
use serde_json::{json, Value};
use std::process::Command;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

const T: Duration = Duration::from_secs(20);

/// A relay of news, user.* and alerts. One worker: a marker seen by one
/// client then proves the message before it is kept where the next client
/// connects (the race test runs with every core's worker).
fn relay(redis: &RedisServer, extra: &[&str]) -> Relay {
    let mut args = vec!["-rs-channel=news,user.*,alerts", "-workers=1"];
    args.extend_from_slice(extra);
    let r = Relay::insecure(redis.port(), &args);
    r.wait_subscribed(1);
    r
}

fn publish_n(redis: &RedisServer, channel: &str, from: u32, to: u32) {
    for i in from..=to {
        redis.publish(channel, i.to_string().as_bytes());
    }
}

/// Waits until the relay has taken everything published so far: Redis
/// delivers in order, so once a marker on `alerts` reaches `witness`, the
/// messages before it are kept.
async fn settled(redis: &RedisServer, witness: &mut Ws) {
    redis.publish("alerts", b"\"marker\"");
    loop {
        if next_json(witness, T).await["data"] == "marker" {
            return;
        }
    }
}

fn numbers(got: &[(String, Value)]) -> Vec<u64> {
    got.iter().map(|(_, d)| d.as_u64().unwrap()).collect()
}

#[tokio::test]
async fn a_client_that_comes_back_gets_what_it_missed_once_then_recovered() {
    let redis = RedisServer::start();
    let r = relay(&redis, &["-history=100"]);
    let mut witness = connect_v1(&r.url("/?channel=alerts")).await;
    let mut ws = connect_v1(&r.url("/?channel=news")).await;
    publish_n(&redis, "news", 1, 3);
    let seen = take(&mut ws, T, 3).await;
    assert_eq!(numbers(&seen), [1, 2, 3]);
    let ids: Vec<&str> = seen.iter().map(|(id, _)| id.as_str()).collect();
    let (epoch, _) = ids[0].split_once('-').unwrap();
    assert_eq!(
        ids,
        [
            format!("{epoch}-1"),
            format!("{epoch}-2"),
            format!("{epoch}-3")
        ]
    );
    relay::bye(ws).await;
    publish_n(&redis, "news", 4, 8);
    redis.publish("alerts", b"not news");
    settled(&redis, &mut witness).await;
    let last = &seen[2].0;
    let mut ws = connect_v1(&r.url(&format!("/?channel=news&since={last}"))).await;
    let replayed = take(&mut ws, T, 5).await;
    assert_eq!(numbers(&replayed), [4, 5, 6, 7, 8]);
    assert_eq!(replayed[0].0, format!("{epoch}-4"));
    assert_eq!(
        next_json(&mut ws, T).await,
        json!({"channel": "news", "recovered": true})
    );
    publish_n(&redis, "news", 9, 9);
    assert_eq!(
        numbers(&take(&mut ws, T, 1).await),
        [9],
        "then the live ones"
    );
    // From the latest ID: nothing to replay, and nothing was missed.
    let latest = format!("{epoch}-9");
    let mut ws = connect_v1(&r.url(&format!("/?since=news:{latest}&channel=news"))).await;
    assert_eq!(
        next_json(&mut ws, T).await,
        json!({"channel": "news", "recovered": true})
    );
    // `last`: the latest message first (the current state of a feed).
    let mut ws = connect_v1(&r.url("/?channel=news&since=last")).await;
    assert_eq!(numbers(&take(&mut ws, T, 1).await), [9]);
    assert_eq!(next_json(&mut ws, T).await["recovered"], true);
}

#[tokio::test]
async fn since_in_a_v1_subscribe_and_for_the_original_clients() {
    let redis = RedisServer::start();
    let r = relay(&redis, &["-history=100"]);
    let mut ws = connect_v1(&r.url("/?channel=alerts")).await;
    publish_n(&redis, "user.7", 1, 4);
    redis.publish("news", b"\"n1\"");
    settled(&redis, &mut ws).await;
    ws.send(Message::text(
        json!({"subscribe": ["user.7", "news"], "since": {"user.7": "last", "news": "0-0"}})
            .to_string(),
    ))
    .await
    .unwrap();
    assert_eq!(
        next_json(&mut ws, T).await,
        json!({"subscribed": ["user.7", "news"]})
    );
    // Each channel's replay, then its answer, in the order of `since`
    // (a JSON object: sorted by name here).
    let news = next_json(&mut ws, T).await;
    assert_eq!(
        (&news["channel"], &news["data"]),
        (&json!("news"), &json!("n1"))
    );
    let id_n1 = news["id"].as_str().unwrap().to_string();
    assert_eq!(
        next_json(&mut ws, T).await,
        json!({"channel": "news", "recovered": false}),
        "0-0 is of no epoch kept here"
    );
    let seven = take(&mut ws, T, 1).await;
    assert_eq!(numbers(&seven), [4]);
    assert_eq!(
        next_json(&mut ws, T).await,
        json!({"channel": "user.7", "recovered": true})
    );
    // The original's clients (no subprotocol) get the payloads, no notices.
    publish_n(&redis, "news", 2, 2);
    settled(&redis, &mut ws).await;
    let mut plain = relay::connect(&r.url(&format!("/?channel=news&since={id_n1}")), None)
        .await
        .unwrap();
    assert_eq!(next_data(&mut plain, T).await, Message::text("2"));
    redis.publish("news", b"live");
    assert_eq!(next_data(&mut plain, T).await, Message::text("live"));
    assert_eq!(next_json(&mut ws, T).await["data"], "live");
    // A since for a channel under a pattern the subscribe names: replayed.
    ws.send(Message::text(
        r#"{"subscribe":["user.*"],"since":{"user.7":"last"}}"#,
    ))
    .await
    .unwrap();
    assert_eq!(
        next_json(&mut ws, T).await,
        json!({"subscribed": ["user.*"]})
    );
    assert_eq!(numbers(&take(&mut ws, T, 1).await), [4]);
    assert_eq!(next_json(&mut ws, T).await["recovered"], true);
    // One for a channel it does not read: refused alone, the rest stands.
    ws.send(Message::text(
        r#"{"subscribe":["news"],"since":{"sports":"1-1"}}"#,
    ))
    .await
    .unwrap();
    assert_eq!(next_json(&mut ws, T).await, json!({"subscribed": ["news"]}));
    assert_eq!(
        next_json(&mut ws, T).await,
        json!({"error": "since names a channel not read", "channels": ["sports"]})
    );
    // since with anything but subscribe: 1008.
    ws.send(Message::text(
        r#"{"unsubscribe":["news"],"since":{"news":"1-1"}}"#,
    ))
    .await
    .unwrap();
    assert_eq!(close_code(&mut ws, T).await, Some(1008));
}

#[test]
fn a_malformed_or_foreign_since_is_a_400_that_says_why() {
    let redis = RedisServer::start();
    let r = relay(&redis, &["-history=10"]);
    for (path, why) in [
        ("/?since=yesterday", "malformed since"),
        ("/?since=1-1", "needs a client of exactly one channel"),
        ("/?channel=news&since=alerts:1-1", "does not read"),
        ("/?channel=news&since=news:1-1&since=news:2-2", "twice"),
    ] {
        let resp = raw_exchange(&r.addr(), upgrade_request(path, "").as_bytes());
        assert_eq!(status_of(&resp), 400, "{path}: {resp}");
        assert!(resp.contains(why), "{path}: {resp}");
    }
}

#[tokio::test]
async fn trimmed_history_and_a_redis_restart_say_not_recovered() {
    let mut redis = RedisServer::start();
    let r = relay(&redis, &["-history=3", "-metrics-addr=127.0.0.1:0"]);
    let mut witness = connect_v1(&r.url("/?channel=alerts")).await;
    let mut ws = connect_v1(&r.url("/?channel=news")).await;
    publish_n(&redis, "news", 1, 1);
    let first = take(&mut ws, T, 1).await[0].0.clone();
    relay::bye(ws).await;
    publish_n(&redis, "news", 2, 6);
    settled(&redis, &mut witness).await;
    let mut ws = connect_v1(&r.url(&format!("/?channel=news&since={first}"))).await;
    assert_eq!(
        numbers(&take(&mut ws, T, 3).await),
        [4, 5, 6],
        "what is kept"
    );
    assert_eq!(
        next_json(&mut ws, T).await,
        json!({"channel": "news", "recovered": false})
    );
    let six = format!("{}-6", first.split_once('-').unwrap().0);
    // Redis goes away and comes back: what it published meanwhile is gone,
    // and IDs start a new epoch.
    redis.restart();
    r.stdout.wait_count("[redis] subscribed to", 2, T).unwrap();
    // Connected v1 clients hear it at once, for each channel they read.
    assert_eq!(
        next_json(&mut ws, T).await,
        json!({"channel": "news", "recovered": false})
    );
    assert_eq!(
        next_json(&mut witness, T).await,
        json!({"channel": "alerts", "recovered": false})
    );
    publish_n(&redis, "news", 7, 7);
    let got = take(&mut ws, T, 1).await;
    assert_eq!(numbers(&got), [7]);
    assert!(
        got[0].0.ends_with("-1") && got[0].0 > six,
        "{} after {six}",
        got[0].0
    );
    let mut back = connect_v1(&r.url(&format!("/?channel=news&since={six}"))).await;
    assert_eq!(numbers(&take(&mut back, T, 1).await), [7]);
    assert_eq!(next_json(&mut back, T).await["recovered"], false);
    let line = r.stdout.wait_for("metrics on http://", T).unwrap();
    let rest = &line[line.find("http://").unwrap() + 7..];
    let addr = &rest[..rest.find('/').unwrap()];
    let scrape = raw_exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    for want in [
        "pubsocketd_replayed_messages_total 4\n",
        "pubsocketd_resumes_not_recovered_total 2\n",
        "pubsocketd_resumes_recovered_total 0\n",
    ] {
        assert!(scrape.contains(want), "{want} in {scrape}");
    }
}

#[tokio::test]
async fn a_publish_racing_the_replay_is_neither_lost_nor_doubled() {
    let redis = RedisServer::start();
    let r = relay(&redis, &["-history=100000", "-workers=0"]);
    let port = redis.port();
    let publisher = std::thread::spawn(move || {
        // redis-cli at its defaults, 3,000 publishes as fast as it goes.
        let script: String = (1..=3000).map(|i| format!("PUBLISH news {i}\n")).collect();
        let mut child = Command::new("redis-cli")
            .args(["-p", &port.to_string()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-cli");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        child.wait().unwrap();
    });
    // Reconnect over and over while it publishes, each time from the last
    // ID seen: the numbers must run 1, 2, 3, … with no gap and no repeat.
    let mut seen: Vec<u64> = Vec::new();
    let mut last: Option<String> = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.last() != Some(&3000) {
        assert!(Instant::now() < deadline, "stuck at {:?}", seen.last());
        let path = match &last {
            Some(id) => format!("/?channel=news&since={id}"),
            None => "/?channel=news".to_string(),
        };
        let mut ws = connect_v1(&r.url(&path)).await;
        for _ in 0..40 {
            let v = next_json(&mut ws, T).await;
            if v.get("recovered").is_some() {
                assert_eq!(v["recovered"], true, "after {last:?}");
                continue;
            }
            seen.push(v["data"].as_u64().unwrap());
            last = Some(v["id"].as_str().unwrap().to_string());
            if seen.last() == Some(&3000) {
                break;
            }
        }
        relay::bye(ws).await;
    }
    publisher.join().unwrap();
    let want: Vec<u64> = (seen[0]..=3000).collect();
    assert_eq!(seen, want, "in order, none missing, none twice");
}

#[test]
fn the_embedded_broker_gives_ids_and_an_independent_client_resumes() {
    let port = free_port();
    let flag = format!("-broker-port={port}");
    let r = Relay::start(&[
        "-ws-insecure",
        "-broker=embedded",
        &flag,
        "-rs-channel=news",
        "-history=50",
        "-ws-envelope",
        "-workers=1",
    ]);
    r.stdout.wait_for("[init] embedded broker", T).unwrap();
    let cli = |args: &[&str]| {
        let out = Command::new("redis-cli")
            .args(["-p", &port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    for i in 1..=4 {
        cli(&["PUBLISH", "news", &format!("{{\"n\":{i}}}")]);
    }
    // Python's websockets, at its defaults, with the id of message 2.
    let script = r#"
import asyncio, json, sys
import websockets
async def main(url):
    async with websockets.connect(url + "&since=last") as ws:
        first = json.loads(await ws.recv())
    async with websockets.connect(url + "&since=" + first["id"].replace("-4", "-2")) as ws:
        for _ in range(2):
            print(await ws.recv(), flush=True)
asyncio.run(main(sys.argv[1]))
"#;
    let out = Command::new("python3")
        .args(["-c", script, &r.url("/?channel=news")])
        .output()
        .expect("python3 with websockets: run .ci/install-test-deps");
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines.len(),
        2,
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(lines[0]["data"], json!({"n": 3}));
    assert_eq!(lines[1]["data"], json!({"n": 4}));
    assert!(lines[1]["id"].as_str().unwrap().ends_with("-4"));
}

#[tokio::test]
async fn messages_older_than_the_ttl_are_not_replayed() {
    let redis = RedisServer::start();
    let r = relay(&redis, &["-history=100", "-history-ttl=1s"]);
    let mut witness = connect_v1(&r.url("/?channel=alerts")).await;
    let mut ws = connect_v1(&r.url("/?channel=news")).await;
    publish_n(&redis, "news", 1, 1);
    let first = take(&mut ws, T, 1).await[0].0.clone();
    relay::bye(ws).await;
    publish_n(&redis, "news", 2, 2);
    settled(&redis, &mut witness).await;
    // Within the TTL: replayed.
    let mut soon = connect_v1(&r.url(&format!("/?channel=news&since={first}"))).await;
    assert_eq!(numbers(&take(&mut soon, T, 1).await), [2]);
    assert_eq!(next_json(&mut soon, T).await["recovered"], true);
    // Past it: gone, and said so.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut late = connect_v1(&r.url(&format!("/?channel=news&since={first}"))).await;
    assert_eq!(
        next_json(&mut late, T).await,
        json!({"channel": "news", "recovered": false})
    );
}
