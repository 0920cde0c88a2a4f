//! What operators see: /metrics, /healthz, /readyz, JSON logs, SIGHUP.

mod common;

use common::redis::{free_port, RedisServer};
use common::relay::{self, next_data, raw_exchange, status_of, Relay};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

const T: Duration = Duration::from_secs(20);

/// The metrics address the relay logged.
fn metrics_addr(r: &Relay) -> String {
    let line = r
        .stdout
        .wait_for("metrics on http://", T)
        .expect("metrics line");
    let rest = &line[line.find("http://").unwrap() + 7..];
    rest[..rest.find('/').unwrap()].to_string()
}

fn get(addr: &str, path: &str) -> String {
    raw_exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
    )
}

/// The value of the sample `name` (with its labels, if any) in a scrape.
fn sample(scrape: &str, name: &str) -> u64 {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("{name} not in scrape:\n{scrape}"))
        .parse()
        .unwrap()
}

/// Polls until `check` holds for a fresh scrape (counters of deliveries
/// are sampled once per worker tick).
fn scrape_until(addr: &str, check: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + T;
    loop {
        let s = get(addr, "/metrics");
        if check(&s) || Instant::now() > deadline {
            return s;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn metrics_follow_clients_and_messages() {
    let redis = RedisServer::start();
    let r = Relay::start(&[
        "-ws-origin=http://ok.example",
        &format!("-rs-port={}", redis.port()),
        "-metrics-addr=127.0.0.1:0",
    ]);
    let m = metrics_addr(&r);
    r.wait_subscribed(1);
    let before = get(&m, "/metrics");
    assert_eq!(status_of(&before), 200);
    assert!(before.contains("Content-Type: text/plain; version=0.0.4"));
    assert_eq!(sample(&before, "pubsocketd_connections_open"), 0);
    assert!(before.contains("pubsocketd_build_info{version=\""));
    assert!(before.contains(",io=\"uring\"} 1"), "{before}");
    assert_eq!(sample(&before, "pubsocketd_redis_connected"), 1);

    let mut a = relay::connect(&r.url("/"), Some("http://ok.example"))
        .await
        .unwrap();
    let mut b = relay::connect(&r.url("/"), Some("http://ok.example"))
        .await
        .unwrap();
    assert!(relay::connect(&r.url("/"), Some("http://bad.example"))
        .await
        .is_err());
    for i in 0..5 {
        redis.publish("pubsocketd", format!("m{i}").as_bytes());
    }
    for ws in [&mut a, &mut b] {
        for i in 0..5 {
            assert_eq!(next_data(ws, T).await, Message::text(format!("m{i}")));
        }
    }
    let s = scrape_until(&m, |s| s.contains("pubsocketd_deliveries_total 10\n"));
    assert_eq!(sample(&s, "pubsocketd_connections_open"), 2);
    assert_eq!(sample(&s, "pubsocketd_connections_accepted_total"), 2);
    assert_eq!(
        sample(&s, "pubsocketd_handshakes_refused_total{status=\"403\"}"),
        1
    );
    assert_eq!(
        sample(
            &s,
            "pubsocketd_messages_received_total{channel=\"pubsocketd\"}"
        ),
        5
    );
    assert_eq!(sample(&s, "pubsocketd_deliveries_total"), 10);
    assert_eq!(sample(&s, "pubsocketd_delivered_bytes_total"), 10 * 4);
    relay::bye(a).await;
    let s = scrape_until(&m, |s| s.contains("pubsocketd_connections_open 1\n"));
    assert_eq!(sample(&s, "pubsocketd_connections_open"), 1);
    assert_eq!(status_of(&get(&m, "/nothing")), 404);
}

#[test]
fn readiness_follows_redis() {
    let mut redis = RedisServer::start();
    let r = Relay::insecure(redis.port(), &["-metrics-addr=127.0.0.1:0"]);
    let m = metrics_addr(&r);
    r.wait_subscribed(1);
    assert_eq!(status_of(&get(&m, "/readyz")), 200);
    assert_eq!(status_of(&get(&m, "/healthz")), 200);
    redis.kill();
    let deadline = Instant::now() + T;
    while status_of(&get(&m, "/readyz")) != 503 {
        assert!(Instant::now() < deadline, "readyz never went 503");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        status_of(&get(&m, "/healthz")),
        200,
        "alive while Redis is down"
    );
    redis.restart();
    r.wait_subscribed(2);
    assert_eq!(status_of(&get(&m, "/readyz")), 200);
    let s = get(&m, "/metrics");
    assert_eq!(sample(&s, "pubsocketd_redis_reconnects_total"), 1);
    assert!(sample(&s, "pubsocketd_redis_read_bytes_total") > 0);
}

#[test]
fn json_logs_are_json_and_sighup_reopens_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.log");
    let r = Relay::insecure(
        free_port(),
        &[
            "-log-format=json",
            &format!("-ps-log-file={}", path.display()),
        ],
    );
    r.stdout
        .wait_for("cannot connect", T)
        .expect("redis failure logged");
    let rotated = dir.path().join("relay.log.1");
    std::fs::rename(&path, &rotated).unwrap();
    r.signal(libc::SIGHUP);
    r.stdout
        .wait_for("log file reopened", T)
        .expect("reopen logged");
    for line in r.stdout.all() {
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            v["ts"].is_string() && v["level"].is_string() && v["msg"].is_string(),
            "{line}"
        );
    }
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(old.contains("listening for websocket requests"));
    let new = std::fs::read_to_string(&path).unwrap();
    assert!(new.contains("SIGHUP: log file reopened"), "{new}");
    let config = r.stdout.wait_for("[init] config:", T).unwrap();
    assert!(
        config.contains("ws-queue-bytes=1048576") && config.contains("log-format=json"),
        "{config}"
    );
}

#[test]
fn a_log_file_that_fails_later_is_reported_once_and_serving_goes_on() {
    let redis = RedisServer::start();
    let r = Relay::insecure(redis.port(), &["-ps-log-file=/dev/full"]);
    r.wait_subscribed(1);
    for _ in 0..3 {
        let resp = raw_exchange(&r.addr(), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(status_of(&resp), 426);
    }
    let err = r
        .stderr
        .wait_for("cannot write log file /dev/full", T)
        .unwrap();
    assert!(err.contains("still serving"), "{err}");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        r.stderr.count("cannot write log file"),
        1,
        "{:?}",
        r.stderr.all()
    );
}

/// The JSON body of a `/channels` answer.
fn channels_json(addr: &str) -> serde_json::Value {
    let resp = get(addr, "/channels");
    assert_eq!(status_of(&resp), 200, "{resp}");
    assert!(resp.contains("Content-Type: application/json"), "{resp}");
    let body = &resp[resp.find("\r\n\r\n").unwrap() + 4..];
    serde_json::from_str(body).unwrap()
}

/// `/channels` counts the clients of each concrete channel and of each
/// configured key, and follows them as they come and go; the per-key
/// gauge of `/metrics` agrees.
#[tokio::test]
async fn channels_endpoint_counts_readers() {
    let redis = RedisServer::start();
    let r = Relay::insecure(
        redis.port(),
        &["-rs-channel=news,user.*,idle", "-metrics-addr=127.0.0.1:0"],
    );
    r.wait_subscribed(1);
    let m = metrics_addr(&r);
    let a = relay::connect(&r.url("/?channel=user.1"), None)
        .await
        .unwrap();
    let b = relay::connect(&r.url("/?channel=user.1&channel=news"), None)
        .await
        .unwrap();
    let c = relay::connect(&r.url("/?channel=user.2"), None)
        .await
        .unwrap();
    let all = relay::connect(&r.url("/"), None).await.unwrap();
    let want = serde_json::json!({
        "channels": {"user.1": 2, "user.2": 1},
        "keys": {"news": 2, "user.*": 4, "idle": 1},
    });
    assert_eq!(channels_json(&m), want);
    let scrape = get(&m, "/metrics");
    assert_eq!(
        sample(&scrape, "pubsocketd_channel_clients{channel=\"user.*\"}"),
        4
    );
    relay::bye(a).await;
    relay::bye(c).await;
    relay::bye(all).await;
    let deadline = Instant::now() + T;
    let want = serde_json::json!({"channels": {"user.1": 1}, "keys": {"news": 1, "user.*": 1}});
    while channels_json(&m) != want && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(channels_json(&m), want);
    relay::bye(b).await;
}
