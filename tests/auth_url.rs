//! `-auth=url`: the application's endpoint decides each upgrade. A real
//! HTTP server in the test (threads over std sockets, keep-alive) answers
//! by the session cookie: allowed (with or without a body naming the
//! channels), refused (401, 403), slow (past `-auth-timeout`: 503), odd
//! (418: 503), and down (503); 1,000 upgrades at once stay within
//! `-auth-concurrency` calls in flight.

mod common;

use common::redis::{free_port, RedisServer};
use common::relay::{self, next_data, raw_exchange, status_of, upgrade_request, Relay};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const T: Duration = Duration::from_secs(15);

/// What the endpoint saw.
#[derive(Default)]
struct Seen {
    requests: Mutex<Vec<HashMap<String, String>>>,
    connections: AtomicUsize,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
}

/// Starts the endpoint; returns its port.
fn endpoint(seen: Arc<Seen>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            seen.connections.fetch_add(1, SeqCst);
            let seen = seen.clone();
            std::thread::spawn(move || serve(s, &seen));
        }
    });
    port
}

/// Answers requests on one keep-alive connection.
fn serve(s: TcpStream, seen: &Seen) {
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    loop {
        let mut head = HashMap::new();
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        head.insert("request-line".to_string(), line.trim().to_string());
        loop {
            line.clear();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                head.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let now = seen.in_flight.fetch_add(1, SeqCst) + 1;
        seen.most_in_flight.fetch_max(now, SeqCst);
        let cookie = head.get("cookie").cloned().unwrap_or_default();
        seen.requests.lock().unwrap().push(head);
        let (status, body) = match cookie.as_str() {
            c if c.contains("session=news") => {
                ("200 OK", r#"{"channels":["news"],"sub":"u-news"}"#)
            }
            c if c.contains("session=all") => ("200 OK", ""),
            c if c.contains("session=who") => ("401 Unauthorized", ""),
            c if c.contains("session=slow") => {
                std::thread::sleep(Duration::from_secs(3));
                ("200 OK", "")
            }
            c if c.contains("session=tea") => ("418 I'm a teapot", ""),
            c if c.contains("session=busy") => {
                std::thread::sleep(Duration::from_millis(5));
                ("200 OK", "")
            }
            _ => ("403 Forbidden", ""),
        };
        seen.in_flight.fetch_sub(1, SeqCst);
        let answer = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Type: application/json\r\n\r\n{body}",
            body.len()
        );
        if w.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

fn relay(redis: &RedisServer, url: &str, extra: &[&str]) -> Relay {
    let u = format!("-auth-url={url}");
    let mut args = vec![
        "-rs-channel=news,alerts",
        "-auth=url",
        u.as_str(),
        "-auth-timeout=1s",
    ];
    args.extend_from_slice(extra);
    let r = Relay::insecure(redis.port(), &args);
    r.wait_subscribed(1);
    r
}

/// The status of an upgrade with these extra header lines.
fn status(r: &Relay, path: &str, headers: &str) -> u16 {
    status_of(&raw_exchange(
        &r.addr(),
        upgrade_request(path, headers).as_bytes(),
    ))
}

#[tokio::test]
async fn the_endpoint_decides() {
    let redis = RedisServer::start();
    let seen = Arc::new(Seen::default());
    let port = endpoint(seen.clone());
    let r = relay(&redis, &format!("http://127.0.0.1:{port}/ws-auth"), &[]);

    // Allowed, with the channels in the body: news only.
    let mut req = r
        .url("/?token=secret-in-query")
        .into_client_request()
        .unwrap();
    let h = req.headers_mut();
    h.insert("Cookie", "session=news".parse().unwrap());
    h.insert("Origin", "http://app.example".parse().unwrap());
    h.insert("Authorization", "Bearer abc".parse().unwrap());
    h.insert("X-Real-IP", "198.51.100.7".parse().unwrap());
    let tcp = tokio::net::TcpStream::connect(r.addr()).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(req, tcp).await.unwrap();
    redis.publish("alerts", b"not granted");
    redis.publish("news", b"granted");
    assert_eq!(next_data(&mut ws, T).await, Message::text("granted"));
    assert!(r
        .stdout
        .wait_for("[connect] OK sub=\"u-news\"", T)
        .is_some());
    {
        let reqs = seen.requests.lock().unwrap();
        let first = &reqs[0];
        assert_eq!(first["request-line"], "GET /ws-auth HTTP/1.1");
        assert_eq!(first["x-original-uri"], "/?token=REDACTED");
        assert_eq!(first["x-real-ip"], "198.51.100.7");
        assert_eq!(first["x-forwarded-for"], "198.51.100.7");
        assert_eq!(first["origin"], "http://app.example");
        assert_eq!(first["authorization"], "Bearer abc");
    }
    assert_eq!(
        status(&r, "/?channel=alerts", "Cookie: session=news\r\n"),
        403
    );
    assert_eq!(
        status(&r, "/?channel=alerts", "Cookie: session=all\r\n"),
        101
    );
    assert_eq!(status(&r, "/", "Cookie: session=who\r\n"), 401);
    assert_eq!(status(&r, "/", "Cookie: session=nope\r\n"), 403);
    assert_eq!(status(&r, "/", "Cookie: session=tea\r\n"), 503);
    assert_eq!(status(&r, "/", "Cookie: session=slow\r\n"), 503);
    assert!(r
        .stdout
        .wait_for("refused: 503 auth URL unavailable: no answer within 1s", T)
        .is_some());
    assert!(r
        .stdout
        .wait_for(
            "refused: 503 auth URL unavailable: the auth URL answered 418",
            T
        )
        .is_some());
    assert!(r
        .stdout
        .all()
        .iter()
        .all(|l| !l.contains("secret-in-query")));
    let calls = seen.requests.lock().unwrap().len();
    assert!(
        seen.connections.load(SeqCst) < calls,
        "connections are kept alive: {} for {calls} calls",
        seen.connections.load(SeqCst)
    );
    relay::bye(ws).await;
}

#[test]
fn an_endpoint_that_is_down_is_503() {
    let redis = RedisServer::start();
    let r = relay(
        &redis,
        &format!("http://127.0.0.1:{}/ws-auth", free_port()),
        &[],
    );
    assert_eq!(status(&r, "/", "Cookie: session=all\r\n"), 503);
    assert!(r
        .stdout
        .wait_for("auth URL unavailable: cannot connect", T)
        .is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_upgrades_at_once_stay_within_the_bound() {
    let redis = RedisServer::start();
    let seen = Arc::new(Seen::default());
    let port = endpoint(seen.clone());
    let url = format!("http://127.0.0.1:{port}/ws-auth");
    let r = relay(
        &redis,
        &url,
        &["-auth-concurrency=16", "-ws-handshake-timeout=30s"],
    );
    let mut tasks = Vec::new();
    for _ in 0..1000 {
        let mut req = r.url("/").into_client_request().unwrap();
        req.headers_mut()
            .insert("Cookie", "session=busy".parse().unwrap());
        let addr = r.addr();
        tasks.push(tokio::spawn(async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            tokio_tungstenite::client_async(req, tcp)
                .await
                .map(|(ws, _)| ws)
        }));
    }
    let mut open = Vec::new();
    for t in tasks {
        open.push(t.await.unwrap().expect("upgraded"));
    }
    assert_eq!(open.len(), 1000);
    let most = seen.most_in_flight.load(SeqCst);
    assert!((2..=16).contains(&most), "{most} calls in flight at most");
    assert_eq!(seen.requests.lock().unwrap().len(), 1000);
}

#[test]
fn flags() {
    for (args, says) in [
        (vec!["-auth=url"], "-auth=url needs -auth-url"),
        (
            vec!["-auth=url", "-auth-url=ftp://x/"],
            "http:// or https://",
        ),
        (vec!["-auth-url=http://x/"], "-auth-url needs -auth=url"),
        (
            vec!["-auth=url", "-auth-url=http://x/", "-auth-jwt-key=/k"],
            "takes no",
        ),
    ] {
        let mut all = vec!["-ws-insecure", "-ws-port=0"];
        all.extend(args);
        let (status, _, err) = relay::run(&all);
        assert!(matches!(status.code(), Some(1 | 2)), "{all:?}: {err}");
        assert!(err.contains(says), "{all:?}: {err}");
    }
}
