//! The relay behind nginx, configured by `contrib/nginx-pubsocketd.conf` as
//! a user would install it (the file is read here, so the tested block is
//! the shipped one): one location serves the WebSocket upgrade and SSE, the
//! relay believes the `X-Real-IP` nginx sets, and an event published after
//! the clients connect reaches both transports at once (nginx does not
//! buffer SSE, because of the relay's `X-Accel-Buffering: no`; without it,
//! it does, which shows the check can fail).
//!
//! Needs Debian's nginx (run `.ci/install-test-deps`); the test runs its
//! own nginx (`daemon off;`, a free port, pid, logs and temporary files in
//! a temporary directory), never the system's service.

mod common;

use common::nginx::{Extra, Nginx, CLIENT_IP};
use common::redis::RedisServer;
use common::relay::Relay;
use common::sse_wire::{self as sse, Sse};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::{self, Message};

const T: Duration = Duration::from_secs(20);
/// What "at once" means here: far above a loopback hop, far below the
/// time an event waits in nginx's buffers (forever, for a quiet feed).
const PROMPTLY: Duration = Duration::from_secs(2);

/// The next text message, or `None` after `timeout`; panics on an error.
fn ws_text(ws: &mut tungstenite::WebSocket<TcpStream>, timeout: Duration) -> Option<String> {
    ws.get_ref()
        .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
        .unwrap();
    loop {
        match ws.read() {
            Ok(Message::Text(t)) => return Some(t.to_string()),
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            Ok(other) => panic!("unexpected message: {other:?}"),
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return None
            }
            Err(e) => panic!("WebSocket through nginx: {e}"),
        }
    }
}

/// A relay of `news` under `-ws-route=/ws/`, believing 127.0.0.1.
fn relay(redis: &RedisServer) -> Relay {
    let port = redis.port().to_string();
    let r = Relay::start(&[
        "-rs-port",
        &port,
        "-ws-insecure",
        "-ws-route=/ws/",
        "-rs-channel=news",
        "-ws-trusted-proxies",
        "127.0.0.1",
    ]);
    r.wait_subscribed(1);
    r
}

/// Through the shipped configuration: a WebSocket and two SSE streams (the
/// SSE route, and the WebSocket route with `Accept: text/event-stream`)
/// from 127.0.0.2; the relay logs 127.0.0.2 for each (X-Real-IP believed
/// from 127.0.0.1); an event published after they connect reaches each
/// within [`PROMPTLY`]; SIGTERM's closing comment and the end pass through.
#[test]
fn websocket_and_sse_through_nginx() {
    let redis = RedisServer::start();
    let mut r = relay(&redis);
    let nginx = Nginx::start(r.port, Extra::default());
    let mut ws = nginx.websocket("/ws/?channel=news");
    // A token in the URL (ignored without -auth) must not reach the log.
    let mut streams = [
        nginx.sse("/ws/events?channel=news&token=SECRET-1"),
        nginx.sse("/ws/?channel=news"),
    ];
    for s in &mut streams {
        assert_eq!(
            s.header("Content-Type").as_deref(),
            Some("text/event-stream"),
            "{}",
            s.head
        );
        // nginx answers an HTTP/1.1 client in chunks, one per event.
        assert_eq!(s.header("Transfer-Encoding").as_deref(), Some("chunked"));
        assert_eq!(s.event().lines, ["retry: 3000"]);
    }
    sse::probe(
        &redis,
        "news",
        |t| ws_text(&mut ws, t),
        |t| Some(t.as_str()),
    );
    for s in &mut streams {
        s.ready(&redis, "news");
    }
    // Each has read the others' probes too.
    redis.publish("news", b"fence");
    while ws_text(&mut ws, T).expect("the fence") != "fence" {}
    for s in &mut streams {
        s.until("fence");
    }
    // Everything the clients were sent so far is read: now one event.
    let sent = Instant::now();
    assert_eq!(redis.publish("news", b"{\"after\":\"connect\"}"), 1);
    let text = ws_text(&mut ws, PROMPTLY).expect("the event, over the WebSocket");
    assert_eq!(text, "{\"after\":\"connect\"}");
    for s in &mut streams {
        let e = s
            .try_event(PROMPTLY.saturating_sub(sent.elapsed()))
            .unwrap_or_else(|()| panic!("not within {PROMPTLY:?}: nginx buffered it"))
            .expect("the stream goes on");
        assert_eq!(e.lines, ["data: {\"after\":\"connect\"}"]);
    }
    let took = sent.elapsed();
    assert!(took < PROMPTLY, "{took:?}");
    eprintln!("published to received on all three, through nginx: {took:?}");

    // Each of the three was logged with the address nginx named.
    let [a, b, c, d] = CLIENT_IP;
    let believed = format!("[{a}.{b}.{c}.{d}][127.0.0.1:");
    let lines: Vec<String> = r.stdout.all();
    let connects = lines
        .iter()
        .filter(|l| l.contains(&believed) && l.contains("[connect]"))
        .count();
    assert_eq!(connects, 3, "{lines:#?}");

    // SIGTERM: the WebSocket gets 1001, each stream its closing comment,
    // then the end, which nginx passes on as a complete response.
    r.signal(libc::SIGTERM);
    for s in &mut streams {
        let rest = s.rest();
        let last = rest.last().map(|e| e.lines.clone());
        assert_eq!(last, Some(vec![": server shutting down".to_string()]));
        assert!(s.complete, "nginx ended the response with its last chunk");
    }
    ws.get_ref().set_read_timeout(Some(T)).unwrap();
    let close = loop {
        match ws.read() {
            Ok(Message::Close(frame)) => break frame.map(|f| u16::from(f.code)),
            Ok(_) => continue,
            Err(e) => panic!("no close frame: {e}"),
        }
    };
    assert_eq!(close, Some(1001));
    assert!(r.wait_exit(T).is_some_and(|s| s.success()));
    // nginx's log of the relay's requests: paths without their query.
    let log = nginx.log("pubsocketd.log");
    assert!(log.contains("\"GET /ws/events HTTP/1.1\" 200 "), "{log}");
    assert!(log.contains("\"GET /ws/ HTTP/1.1\" 101 "), "{log}");
    assert!(!log.contains("SECRET"), "{log}");
    assert_eq!(r.stdout.count("SECRET") + r.stderr.count("SECRET"), 0);
    assert!(!nginx.log("access.log").contains("/ws/"), "logged twice");
}

/// The same configuration with `proxy_ignore_headers X-Accel-Buffering;`
/// added: small events published for [`PROMPTLY`] do not come through (not
/// even the head: nginx holds it all in its buffers), and do, in order,
/// once enough follows to fill the buffers. This is what the relay's header
/// prevents, and what the test above would catch.
#[test]
fn without_the_header_nginx_buffers_events() {
    let redis = RedisServer::start();
    let r = relay(&redis);
    let extra = Extra {
        location: "        proxy_ignore_headers X-Accel-Buffering;\n",
        server: "",
    };
    let nginx = Nginx::start(r.port, extra);
    let mut s = Sse::sent(
        nginx.connect(),
        &sse::request("/ws/events?channel=news", ""),
    );
    r.stdout
        .wait_for("[connect] OK (events)", T)
        .unwrap_or_else(|| panic!("no connect line: {:#?}", r.stdout.all()));
    let until = Instant::now() + PROMPTLY;
    let mut published = 0;
    while Instant::now() < until {
        published += 1;
        redis.publish("news", format!("small-{published}").as_bytes());
        assert!(
            !s.read_head(Duration::from_millis(100)),
            "came through unbuffered: {}",
            s.head
        );
    }
    // 64 KiB more: nginx's buffers fill and it passes them on.
    let filler = "f".repeat(1024);
    for _ in 0..64 {
        redis.publish("news", filler.as_bytes());
    }
    assert!(s.read_head(T), "no head even after 64 KiB");
    assert_eq!(s.status, 200, "{}", s.head);
    assert_eq!(s.event().lines, ["retry: 3000"]);
    let mut small = Vec::new();
    let first_filler = loop {
        let e = s.event();
        match e.data().strip_prefix("small-") {
            Some(n) => small.push(n.parse::<u32>().unwrap()),
            None => break e,
        }
    };
    assert_eq!(first_filler.data(), filler);
    // The client was in place for the later ones at least: each arrived,
    // in order, only now.
    assert!(!small.is_empty(), "none of {published} small events");
    let from = small[0];
    assert_eq!(small, (from..=published).collect::<Vec<_>>());
}

/// The README's nginx block is the tested file, without its comments: the
/// configuration a user copies is the one this file runs.
#[test]
fn the_readme_shows_the_tested_configuration() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let conf = std::fs::read_to_string(root.join("contrib/nginx-pubsocketd.conf")).unwrap();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let code: Vec<&str> = conf
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .collect();
    let section = readme
        .split("### Behind nginx")
        .nth(1)
        .and_then(|s| s.split("```\n").nth(1))
        .expect("the README's nginx block");
    let shown: Vec<&str> = section.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(shown, code, "README.md's nginx block differs from the file");
}
