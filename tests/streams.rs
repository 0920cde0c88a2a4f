//! `-rs-mode=stream`: Redis streams as the source. Entries relayed with
//! Redis' own IDs; nothing lost across a lost connection, a Redis restart
//! (AOF, `appendfsync always`) or a relay restart, while Redis holds the
//! entries; resumes older than the memory history read with XRANGE.
//! Entries are added with redis-cli at its defaults, `POST /publish` and
//! `pubsocketd-publisher -stream`.

mod common;

use common::redis::RedisServer;
use common::relay::{self, connect_v1, next_data, next_json, raw_exchange, run, take, Relay};
use serde_json::{json, Value};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

const T: Duration = Duration::from_secs(20);

fn numbers(got: &[(String, Value)]) -> Vec<u64> {
    got.iter().map(|(_, d)| d.as_u64().unwrap()).collect()
}

/// `XADD key * data <n>` for each n; returns the IDs Redis gave.
fn xadd(redis: &RedisServer, key: &str, from: u64, to: u64) -> Vec<String> {
    (from..=to)
        .map(|n| {
            redis
                .cli(&["XADD", key, "*", "data", &n.to_string()])
                .trim()
                .to_string()
        })
        .collect()
}

fn relay(redis: &RedisServer, extra: &[&str]) -> Relay {
    let mut args = vec!["-rs-mode=stream", "-rs-channel=news,alerts", "-workers=1"];
    args.extend_from_slice(extra);
    let r = Relay::insecure(redis.port(), &args);
    r.stdout
        .wait_for("[redis] reading streams", T)
        .unwrap_or_else(|| panic!("{:?}", r.stdout.all()));
    r
}

#[tokio::test]
async fn entries_arrive_with_redis_ids_from_every_way_in() {
    let redis = RedisServer::start();
    xadd(&redis, "news", 1, 2); // before the relay: not replayed to anyone
    let r = relay(&redis, &["-publish-addr=127.0.0.1:0", "-publish-token=tok"]);
    assert!(
        r.stdout.wait_for("news (after ", T).is_some(),
        "{:?}",
        r.stdout.all()
    );
    let mut v1 = connect_v1(&r.url("/?channel=news")).await;
    let mut plain = relay::connect(&r.url("/?channel=news"), None)
        .await
        .unwrap();
    let ids = xadd(&redis, "news", 3, 3);
    let got = take(&mut v1, T, 1).await;
    assert_eq!(
        (got[0].0.as_str(), numbers(&got)),
        (ids[0].as_str(), vec![3])
    );
    assert_eq!(next_data(&mut plain, T).await, Message::text("3"));
    // Another field only: skipped. Then POST /publish does the XADD.
    redis.cli(&["XADD", "news", "*", "other", "x"]);
    let line = r
        .stdout
        .wait_for("[init] publish endpoint on http://", T)
        .unwrap();
    let rest = &line[line.find("http://").unwrap() + 7..];
    let addr = &rest[..rest.find('/').unwrap()];
    let body = "4";
    let answer = raw_exchange(
        addr,
        format!("POST /publish?channel=news HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok\r\nContent-Length: {}\r\n\r\n{body}", body.len()).as_bytes(),
    );
    let reply: Value =
        serde_json::from_str(&answer[answer.find("\r\n\r\n").unwrap() + 4..]).unwrap();
    let got = take(&mut v1, T, 1).await;
    assert_eq!(numbers(&got), [4]);
    assert_eq!(reply, json!({"channel": "news", "id": got[0].0}));
    // pubsocketd-publisher -stream, raw lines.
    let mut child = Command::new(env!("CARGO_BIN_EXE_pubsocketd-publisher"))
        .args([
            "-port",
            &redis.port().to_string(),
            "-channel",
            "news",
            "-stream",
            "-raw",
        ])
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"5\n6\n").unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(numbers(&take(&mut v1, T, 2).await), [5, 6]);
    assert_eq!(redis.cli(&["XLEN", "news"]).trim(), "7");
}

#[tokio::test]
async fn nothing_redis_holds_is_lost_across_a_lost_connection_and_a_redis_restart() {
    let mut redis = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let r = relay(&redis, &[]);
    let mut ws = connect_v1(&r.url("/?channel=news")).await;
    xadd(&redis, "news", 1, 2);
    assert_eq!(numbers(&take(&mut ws, T, 2).await), [1, 2]);
    // The reader's connection killed: what is added meanwhile still comes.
    redis.cli(&["CLIENT", "KILL", "TYPE", "normal"]);
    xadd(&redis, "news", 3, 5);
    assert_eq!(numbers(&take(&mut ws, T, 3).await), [3, 4, 5]);
    // Redis SIGKILLed right after an XADD, restarted from its AOF.
    xadd(&redis, "news", 6, 6);
    redis.restart();
    xadd(&redis, "news", 7, 8);
    let got = take(&mut ws, T, 3).await;
    assert_eq!(numbers(&got), [6, 7, 8], "none lost, none twice");
    assert!(r
        .stdout
        .wait_count("[redis] reading streams", 3, T)
        .is_some());
    // Resuming from entry 5 on this relay: all of it is in memory.
    let mut back = connect_v1(&r.url(&format!("/?channel=news&since={}", got[0].0))).await;
    assert_eq!(numbers(&take(&mut back, T, 2).await), [7, 8]);
    assert_eq!(
        next_json(&mut back, T).await,
        json!({"channel": "news", "recovered": true})
    );
}

#[tokio::test]
async fn a_client_resumes_on_a_new_relay_from_what_redis_holds() {
    let redis = RedisServer::start();
    let mut first = relay(&redis, &[]);
    let mut ws = connect_v1(&first.url("/?channel=news")).await;
    xadd(&redis, "news", 1, 2);
    let seen = take(&mut ws, T, 2).await;
    first.signal(libc::SIGTERM);
    first.wait_exit(T).unwrap();
    // Published while no relay runs; a new relay (another process, another
    // port: as behind a load balancer) knows none of it in memory.
    xadd(&redis, "news", 3, 6);
    let second = relay(&redis, &["-history-max-replay=3"]);
    let since = &seen[1].0;
    let mut ws = connect_v1(&second.url(&format!("/?channel=news&since={since}"))).await;
    assert_eq!(numbers(&take(&mut ws, T, 3).await), [3, 4, 5]);
    assert_eq!(
        next_json(&mut ws, T).await,
        json!({"channel": "news", "recovered": false}),
        "over -history-max-replay: what is missing is said"
    );
    let third = relay(&redis, &[]);
    let mut ws = connect_v1(&third.url(&format!("/?channel=news&since={since}"))).await;
    assert_eq!(numbers(&take(&mut ws, T, 4).await), [3, 4, 5, 6]);
    assert_eq!(
        next_json(&mut ws, T).await,
        json!({"channel": "news", "recovered": true})
    );
    xadd(&redis, "news", 7, 7);
    assert_eq!(
        numbers(&take(&mut ws, T, 1).await),
        [7],
        "then the live ones"
    );
    // The same from a v1 subscribe, and from an ID trimmed away.
    let mut sub = connect_v1(&third.url("/?channel=alerts")).await;
    let msg = json!({"subscribe": ["news"], "since": {"news": seen[0].0}}).to_string();
    use futures_util::SinkExt;
    sub.send(Message::text(msg)).await.unwrap();
    assert_eq!(
        next_json(&mut sub, T).await,
        json!({"subscribed": ["news"]})
    );
    assert_eq!(numbers(&take(&mut sub, T, 6).await), [2, 3, 4, 5, 6, 7]);
    assert_eq!(next_json(&mut sub, T).await["recovered"], true);
    redis.cli(&["XTRIM", "news", "MAXLEN", "2"]);
    let mut trimmed = connect_v1(&third.url(&format!("/?channel=news&since={since}"))).await;
    assert_eq!(numbers(&take(&mut trimmed, T, 2).await), [6, 7]);
    assert_eq!(
        next_json(&mut trimmed, T).await["recovered"],
        false,
        "3 to 5 were trimmed"
    );
    // `last` on a relay that holds nothing yet: the newest entry, from Redis.
    let fresh = relay(&redis, &[]);
    let mut last = connect_v1(&fresh.url("/?channel=news&since=last")).await;
    assert_eq!(numbers(&take(&mut last, T, 1).await), [7]);
    assert_eq!(next_json(&mut last, T).await["recovered"], true);
    let mut none = connect_v1(&fresh.url("/?channel=alerts&since=last")).await;
    assert_eq!(
        next_json(&mut none, T).await,
        json!({"channel": "alerts", "recovered": false}),
        "an empty stream has no latest entry"
    );
}

#[test]
fn stream_mode_flags_are_checked() {
    for (args, why) in [
        (
            &["-rs-mode=stream", "-rs-channel=news,user.*"][..],
            "is a pattern",
        ),
        (
            &["-rs-mode=streams"][..],
            "-rs-mode must be pubsub or stream",
        ),
        (
            &["-rs-mode=stream", "-broker=embedded"][..],
            "-broker=embedded has no Redis",
        ),
        (
            &["-rs-mode=stream", "-rs-stream-field="][..],
            "must not be empty",
        ),
    ] {
        let mut all = vec!["-ws-insecure"];
        all.extend_from_slice(args);
        let (status, _, err) = run(&all);
        assert_eq!(status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(why), "{args:?}: {err}");
    }
}

#[tokio::test]
async fn a_resume_while_redis_is_down_says_what_memory_cannot_vouch_for() {
    let mut redis = RedisServer::start();
    let r = relay(&redis, &["-ws-handshake-timeout=3s"]);
    let mut ws = connect_v1(&r.url("/?channel=news")).await;
    let ids = xadd(&redis, "news", 1, 2);
    assert_eq!(numbers(&take(&mut ws, T, 2).await), [1, 2]);
    redis.kill();
    // In memory: a resume from entry 1 needs nothing from Redis.
    let mut kept = connect_v1(&r.url(&format!("/?channel=news&since={}", ids[0]))).await;
    assert_eq!(numbers(&take(&mut kept, T, 1).await), [2]);
    assert_eq!(next_json(&mut kept, T).await["recovered"], true);
    // Older than memory, Redis down: what memory has, then recovered:false.
    let started = std::time::Instant::now();
    let mut older = connect_v1(&r.url("/?channel=news&since=1-0")).await;
    assert_eq!(numbers(&take(&mut older, T, 2).await), [1, 2]);
    assert_eq!(next_json(&mut older, T).await["recovered"], false);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}
