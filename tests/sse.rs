//! Server-Sent Events: the same fan-out over `text/event-stream`. The
//! stream is read with a parser written from the HTML standard
//! (tests/common/sse.rs), not with the relay's encoder; curl, Python's SSE
//! client, nginx and Chromium's `EventSource` are in tests/sse_clients.rs,
//! tests/nginx.rs and tests/browser.rs.

mod common;

use common::jwt::mint;
use common::redis::RedisServer;
use common::relay::{raw_exchange, status_of, Relay};
use common::sse::{self, Event};
use serde_json::{json, Value};
use std::io::Write;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

fn relay(redis: &RedisServer, extra: &[&str]) -> Relay {
    let mut args = vec!["-rs-channel=news,user.*,alerts", "-workers=1"];
    args.extend_from_slice(extra);
    let r = Relay::insecure(redis.port(), &args);
    r.wait_subscribed(1);
    r
}

/// Publishes on `alerts` until `stream` shows it: the stream is then
/// registered with the fan-out (its 200 comes before that).
fn ready(redis: &RedisServer, stream: &mut sse::Stream) {
    redis.publish("alerts", b"ready");
    let ev = stream.next().expect("ready");
    assert_eq!(ev.data, "ready", "{ev:?}");
}

fn json(ev: &Event) -> Value {
    serde_json::from_str(&ev.data).unwrap_or_else(|e| panic!("{ev:?}: {e}"))
}

#[test]
fn payloads_arrive_whole_and_cannot_inject_fields() {
    let redis = RedisServer::start();
    let r = relay(&redis, &[]);
    let mut one = sse::open(&r.addr(), "/events?channel=news", "");
    let mut all = sse::open(&r.addr(), "/", "Origin: http://app.example\r\n");
    for s in [&one, &all] {
        assert_eq!(s.status(), 200, "{}", s.head);
        for h in [
            "Content-Type: text/event-stream\r\n",
            "Cache-Control: no-store\r\n",
            "X-Accel-Buffering: no\r\n",
            "Connection: close\r\n",
        ] {
            assert!(s.head.contains(h), "{h} in {}", s.head);
        }
        assert!(!s.head.contains("Content-Length"), "close-delimited");
    }
    assert!(all
        .head
        .contains("Access-Control-Allow-Origin: http://app.example\r\nVary: Origin\r\n"));
    ready(&redis, &mut all);
    let payloads = [
        "a\nb",
        "a\rb",
        "a\r\nb",
        " leading space",
        "key: value",
        "data: inside",
        "x\nid: 999\n\nevent: evil\nretry: 1",
        "trailing\n",
        "{\"json\": [1, 2]}",
    ];
    redis.publish("news", b"\xff\xfe binary");
    for p in payloads {
        redis.publish("news", p.as_bytes());
    }
    redis.publish("user.7", b"for user 7");
    let lf = |p: &str| p.replace("\r\n", "\n").replace('\r', "\n");
    for p in payloads {
        let ev = one.next().unwrap();
        assert_eq!(
            (ev.event.as_str(), ev.id, ev.data),
            ("message", None, lf(p))
        );
        let ev = all.next().unwrap();
        assert_eq!((ev.event.as_str(), ev.id, ev.data), ("news", None, lf(p)));
    }
    assert_eq!(one.retry, Some(3000));
    let ev = all.next().unwrap();
    assert_eq!(
        (ev.event.as_str(), ev.data.as_str()),
        ("user.7", "for user 7")
    );
    let skipped = r.stdout.all().join("\n");
    assert!(!skipped.contains("binary"), "{skipped}");
}

#[test]
fn envelopes_carry_binary_as_base64() {
    let redis = RedisServer::start();
    let r = relay(&redis, &["-ws-envelope", "-history=10"]);
    let mut s = sse::open(&r.addr(), "/events?channel=news", "");
    redis.publish("news", b"hello");
    let ev = s.next().unwrap();
    assert_eq!(ev.event, "news", "named under -ws-envelope");
    let id = ev.id.clone().unwrap();
    assert!(id.starts_with("news:"), "{id}");
    assert_eq!(
        json(&ev),
        json!({"channel": "news", "id": &id[5..], "data": "hello"})
    );
    redis.publish("news", b"\xff\x00");
    assert_eq!(json(&s.next().unwrap())["data_base64"], "/wA=");
}

/// What an `EventSource` does on a reconnect: the last `id:` it saw goes
/// back as `Last-Event-ID`.
fn last_id(s: &mut sse::Stream, n: usize) -> String {
    let mut last = None;
    for _ in 0..n {
        last = s.next().unwrap().id;
    }
    last.expect("events carry IDs under -history")
}

#[test]
fn last_event_id_resumes_every_channel_of_the_stream() {
    let redis = RedisServer::start();
    let r = relay(&redis, &["-history=100"]);
    let mut s = sse::open(&r.addr(), "/events?channel=news&channel=user.*", "");
    let mut single = sse::open(&r.addr(), "/events?channel=news", "");
    // One worker: once the witness has a message, the history holds it.
    let mut witness = sse::open(&r.addr(), "/events?channel=news", "");
    redis.publish("news", b"n1");
    redis.publish("user.7", b"u1");
    redis.publish("news", b"n2");
    let last = last_id(&mut s, 2); // n1, u1
    let last_single = last_id(&mut single, 1); // n1
    assert!(last.starts_with("user.7:"), "{last}");
    assert!(!last_single.contains(':'), "{last_single}");
    drop((s, single));
    redis.publish("user.8", b"u8");
    redis.publish("news", b"n3");
    assert_eq!(witness.data(3), ["n1", "n2", "n3"]);
    let header = format!("Last-Event-ID: {last}\r\n");
    // The URL's since is what the stream first asked; the header wins.
    let url = "/events?channel=news&channel=user.*&since=news:1-1";
    let mut s = sse::open(&r.addr(), url, &header);
    assert_eq!(s.status(), 200, "{}", s.head);
    let (got, recovered) = until_recovered(&mut s, 3);
    // Each channel after the point, in order; user.7 had nothing more.
    let want = |ch: &str| -> Vec<String> {
        got.iter()
            .filter(|(c, _)| c == ch)
            .map(|(_, d)| d.clone())
            .collect()
    };
    assert_eq!(want("news"), ["n2", "n3"]);
    assert_eq!(want("user.8"), ["u8"]);
    assert_eq!(want("user.7"), Vec::<String>::new());
    for ch in ["user.7", "news", "user.8"] {
        assert!(
            recovered.contains(&json!({"channel": ch, "recovered": true})),
            "{ch}: {recovered:?}"
        );
    }
    redis.publish("news", b"live");
    assert_eq!(s.next().unwrap().data, "live", "then the live stream");

    let header = format!("Last-Event-ID: {last_single}\r\n");
    let mut single = sse::open(&r.addr(), "/events?channel=news", &header);
    assert_eq!(single.data(3), ["n2", "n3", "live"]);
    let ev = single.next().unwrap();
    assert_eq!(json(&ev), json!({"channel": "news", "recovered": true}));

    // An ID older than all that is kept: all that is kept, not whole.
    let old = "Last-Event-ID: news:1-1\r\n";
    let mut s = sse::open(&r.addr(), "/events?channel=news&channel=user.*", old);
    let (got, told) = until_recovered(&mut s, 3);
    assert_eq!(got.len(), 6, "n1 n2 n3 live u1 u8: {got:?}");
    for ch in ["news", "user.7", "user.8"] {
        let want = json!({"channel": ch, "recovered": false});
        assert!(told.contains(&want), "{ch}: {told:?}");
    }
    // An ID newer than any kept here (another relay's): nothing, said so.
    let newer = "Last-Event-ID: news:99999999999999-1\r\n";
    let mut s = sse::open(&r.addr(), "/events?channel=news&channel=user.*", newer);
    let (got, told) = until_recovered(&mut s, 2);
    assert!(got.is_empty(), "{got:?}");
    assert!(told.contains(&json!({"channel": "news", "recovered": false})));
    assert!(told.contains(&json!({"channel": "user.*", "recovered": false})));
    for bad in ["garbage", "news:", "nope:1-1"] {
        let s = sse::open(
            &r.addr(),
            "/events?channel=news",
            &format!("Last-Event-ID: {bad}\r\n"),
        );
        assert_eq!(s.status(), 400, "{bad}: {}", s.head);
    }
}

/// Events until `n` `recovered` ones: (event, data) and the recovered.
fn until_recovered(s: &mut sse::Stream, n: usize) -> (Vec<(String, String)>, Vec<Value>) {
    let (mut got, mut told) = (Vec::new(), Vec::new());
    while told.len() < n {
        let ev = s.next().unwrap();
        match ev.event.as_str() {
            "recovered" => told.push(json(&ev)),
            _ => got.push((ev.event, ev.data)),
        }
    }
    (got, told)
}

#[test]
fn a_redis_restart_is_told_as_recovered_false() {
    let mut redis = RedisServer::start();
    let r = relay(&redis, &["-history=10"]);
    let mut s = sse::open(&r.addr(), "/events?channel=news", "");
    redis.publish("news", b"before");
    assert_eq!(s.next().unwrap().data, "before");
    redis.restart();
    r.wait_subscribed(2);
    let ev = s.next().unwrap();
    assert_eq!(ev.event, "recovered");
    assert_eq!(json(&ev), json!({"channel": "news", "recovered": false}));
    redis.publish("news", b"after");
    assert_eq!(s.next().unwrap().data, "after");
}

#[test]
fn pings_keep_a_silent_stream_and_sigterm_ends_it_cleanly() {
    let redis = RedisServer::start();
    let r = relay(
        &redis,
        &["-ws-ping-interval=300ms", "-ws-pong-timeout=600ms"],
    );
    let mut s = sse::open(&r.addr(), "/events?channel=news", "");
    // Longer than the pong timeout: an event stream never answers pings,
    // and is not dropped for it.
    std::thread::sleep(Duration::from_millis(1500));
    redis.publish("news", b"still here");
    assert_eq!(s.next().unwrap().data, "still here");
    assert!(
        s.comments.iter().filter(|c| *c == "ping").count() >= 2,
        "{:?}",
        s.comments
    );
    r.signal(libc::SIGTERM);
    let comments = s.until_end(T);
    assert_eq!(
        comments.last().map(String::as_str),
        Some("server shutting down")
    );
}

#[test]
fn a_second_request_on_the_stream_is_never_read() {
    let redis = RedisServer::start();
    let r = relay(&redis, &[]);
    let mut s = sse::open(&r.addr(), "/events?channel=news", "");
    ready_on(&redis, &mut s, "news");
    let mut sock = s.socket().try_clone().unwrap();
    sock.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\nPOST / HTTP/1.1\r\n\r\n")
        .unwrap();
    redis.publish("news", b"next");
    let ev = s.next().unwrap();
    assert_eq!(ev.data, "next");
    assert!(!s.comments.iter().any(|c| c.contains("HTTP")));
}

fn ready_on(redis: &RedisServer, s: &mut sse::Stream, channel: &str) {
    redis.publish(channel, b"ready");
    assert_eq!(s.next().unwrap().data, "ready");
}

#[test]
fn a_slow_stream_is_closed_and_the_others_go_on() {
    let redis = RedisServer::start();
    let r = relay(&redis, &["-ws-queue-bytes=64KiB"]);
    let slow = sse::open(&r.addr(), "/events?channel=news", "");
    let mut fast = sse::open(&r.addr(), "/events?channel=news", "");
    ready_on(&redis, &mut fast, "news");
    let big = "x".repeat(16 * 1024);
    let n = 400; // 6.4 MB: past any socket buffer and the 64 KiB bound
    let reader = std::thread::spawn(move || fast.data(n + 1).len());
    for _ in 0..n {
        redis.publish("news", big.as_bytes());
    }
    redis.publish("news", b"end");
    assert_eq!(reader.join().unwrap(), n + 1);
    r.stdout
        .wait_for("[slow] closed", T)
        .expect("the slow stream is closed");
    drop(slow);
}

#[test]
fn limits_auth_and_refusals_are_the_websocket_ones() {
    let redis = RedisServer::start();
    let secret = "a-test-secret-of-some-length-0123456789";
    let r = relay(
        &redis,
        &[
            "-auth=jwt",
            &format!("-auth-jwt-secret={secret}"),
            "-auth-cookie=session",
            "-ws-max-connections=2",
            "-metrics-addr=127.0.0.1:0",
        ],
    );
    let s = sse::open(&r.addr(), "/events?channel=news", "");
    assert_eq!(s.status(), 401, "{}", s.head);
    let token = mint(&[
        "sign",
        "HS256",
        secret,
        r#"{"sub":"ann","exp":"+600","channels":["news"]}"#,
    ]);
    let s = sse::open(
        &r.addr(),
        "/events?channel=user.1",
        &format!("Authorization: Bearer {token}\r\n"),
    );
    assert_eq!(s.status(), 403, "{}", s.head);
    let mut a = sse::open(
        &r.addr(),
        &format!("/events?channel=news&token={token}"),
        "",
    );
    assert_eq!(a.status(), 200, "{}", a.head);
    let cookie = format!("Cookie: session={token}\r\nOrigin: https://app.example\r\n");
    let b = sse::open(&r.addr(), "/events?channel=news", &cookie);
    assert_eq!(b.status(), 200, "{}", b.head);
    assert!(
        b.head
            .contains("Access-Control-Allow-Credentials: true\r\n"),
        "{}",
        b.head
    );
    let c = sse::open(
        &r.addr(),
        &format!("/events?channel=news&token={token}"),
        "",
    );
    assert_eq!(c.status(), 503, "{}", c.head);
    ready_on(&redis, &mut a, "news");
    let logs = format!("{:?}{:?}", r.stdout.all(), r.stderr.all());
    assert!(!logs.contains(&token), "the token is never logged");
    let metrics_addr = r
        .stdout
        .wait_for("metrics on", T)
        .and_then(|l| {
            l.split("http://")
                .nth(1)
                .map(|a| a.split('/').next().unwrap().to_string())
        })
        .expect("metrics address");
    let m = raw_exchange(&metrics_addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status_of(&m), 200);
    assert!(
        m.contains("pubsocketd_transport_connections_open{transport=\"sse\"} 2\n"),
        "{m}"
    );
    assert!(
        m.contains("pubsocketd_transport_connections_open{transport=\"ws\"} 0\n"),
        "{m}"
    );
    let post = raw_exchange(&r.addr(), b"POST /events HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status_of(&post), 405, "{post}");
}

#[test]
fn origins_are_checked_and_preflights_answered() {
    let redis = RedisServer::start();
    let port = format!("-rs-port={}", redis.port());
    let r = Relay::start(&[&port, "-rs-channel=news", "-ws-origin=https://app.example"]);
    r.wait_subscribed(1);
    let ok = sse::open(&r.addr(), "/events", "Origin: https://app.example\r\n");
    assert_eq!(ok.status(), 200, "{}", ok.head);
    assert!(ok
        .head
        .contains("Access-Control-Allow-Origin: https://app.example\r\nVary: Origin\r\n"));
    assert!(!ok.head.contains("Allow-Credentials"), "no -auth-cookie");
    for refused in ["Origin: https://evil.example\r\n", ""] {
        let s = sse::open(&r.addr(), "/events", refused);
        assert_eq!(s.status(), 403, "{refused:?}: {}", s.head);
    }
    let preflight = |origin: &str| {
        let req = format!(
            "OPTIONS /events HTTP/1.1\r\nHost: x\r\nOrigin: {origin}\r\nAccess-Control-Request-Method: GET\r\nAccess-Control-Request-Headers: authorization\r\n\r\n"
        );
        raw_exchange(&r.addr(), req.as_bytes())
    };
    let answer = preflight("https://app.example");
    assert_eq!(status_of(&answer), 204, "{answer}");
    for h in [
        "Access-Control-Allow-Origin: https://app.example\r\n",
        "Access-Control-Allow-Methods: GET\r\n",
        "Access-Control-Allow-Headers: Authorization, Last-Event-ID, Cache-Control\r\n",
    ] {
        assert!(answer.contains(h), "{h} in {answer}");
    }
    assert_eq!(status_of(&preflight("https://evil.example")), 403);
}
