//! The README's walkthrough, end to end with the shipped tools:
//! pubsocketd-publisher → Redis → pubsocketd → pubsocketd-receiver.

mod common;

use common::redis::RedisServer;
use common::relay::Relay;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const PUBLISHER: &str = env!("CARGO_BIN_EXE_pubsocketd-publisher");
const RECEIVER: &str = env!("CARGO_BIN_EXE_pubsocketd-receiver");

#[test]
fn publisher_to_receiver_through_the_relay() {
    let redis = RedisServer::start();
    let r = Relay::start(&[
        "-ws-origin",
        "http://localhost",
        "-rs-port",
        &redis.port().to_string(),
    ]);
    r.wait_subscribed(1);

    let mut receiver = Command::new(RECEIVER)
        .args(["-url", &r.url("/"), "-origin", "http://localhost"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let out = receiver.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let _ = tx.send(line.unwrap());
        }
    });
    r.stdout
        .wait_for("[connect] OK", Duration::from_secs(10))
        .expect("receiver connected");

    let mut publisher = Command::new(PUBLISHER)
        .args(["-port", &redis.port().to_string()])
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = publisher.stdin.take().unwrap();
    stdin.write_all(b"PEW PEW PEW\nWOO \"WOO\" WOO\n").unwrap();
    drop(stdin);
    assert!(publisher.wait().unwrap().success());

    let t = Duration::from_secs(10);
    assert_eq!(rx.recv_timeout(t).unwrap(), r#"{"Data":"PEW PEW PEW"}"#);
    assert_eq!(rx.recv_timeout(t).unwrap(), r#"{"Data":"WOO \"WOO\" WOO"}"#);
    r.signal(libc::SIGTERM);
    let status = receiver.wait().unwrap();
    assert!(status.success());
    let mut err = String::new();
    std::io::Read::read_to_string(&mut receiver.stderr.take().unwrap(), &mut err).unwrap();
    assert!(
        err.contains("connection closed by server (code 1001"),
        "{err}"
    );
}

#[test]
fn receiver_with_a_foreign_origin_is_refused() {
    let redis = RedisServer::start();
    let r = Relay::start(&[
        "-ws-origin",
        "http://localhost",
        "-rs-port",
        &redis.port().to_string(),
    ]);
    let out = Command::new(RECEIVER)
        .args(["-url", &r.url("/"), "-origin", "http://evil.example"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("HTTP 403"), "{err}");
    assert!(r
        .stdout
        .wait_for("refused: 403 Origin not allowed", Duration::from_secs(5))
        .is_some());
}
