//! SIGTERM: no new clients, close 1001 to everyone, exit 0; a second
//! signal exits at once.

mod common;

use common::redis::RedisServer;
use common::relay::{self, RawWs, Relay};
use std::time::{Duration, Instant};

#[tokio::test]
async fn sigterm_closes_every_client_with_1001_and_exits_0() {
    let redis = RedisServer::start();
    let mut r = Relay::insecure(redis.port(), &["-workers=2"]);
    let mut clients = Vec::new();
    for _ in 0..10 {
        clients.push(relay::connect(&r.url("/"), None).await.unwrap());
    }
    r.stdout
        .wait_count("[connect] OK", 10, Duration::from_secs(10))
        .unwrap();
    r.signal(libc::SIGTERM);
    for ws in &mut clients {
        assert_eq!(
            relay::close_code(ws, Duration::from_secs(10)).await,
            Some(1001)
        );
    }
    drop(clients);
    let status = r.wait_exit(Duration::from_secs(10)).expect("exits");
    assert_eq!(status.code(), Some(0));
    let lines = r.stdout.all();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("[shutdown] SIGTERM: no new clients; closing 10 clients")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("[shutdown] done:")),
        "{lines:?}"
    );
}

#[test]
fn a_second_signal_during_the_drain_exits_at_once() {
    let redis = RedisServer::start();
    let mut r = Relay::insecure(redis.port(), &["-shutdown-timeout=60s"]);
    // A client that never answers the close keeps the drain waiting.
    let _quiet = RawWs::open(&r.addr(), b"");
    r.stdout
        .wait_for("[connect] OK", Duration::from_secs(10))
        .unwrap();
    r.signal(libc::SIGINT);
    r.stdout
        .wait_for("[shutdown] SIGINT", Duration::from_secs(10))
        .unwrap();
    let t = Instant::now();
    r.signal(libc::SIGTERM);
    let status = r.wait_exit(Duration::from_secs(2)).expect("exits at once");
    assert!(t.elapsed() < Duration::from_secs(2));
    assert_eq!(status.code(), Some(1));
    assert!(r.stdout.count("second SIGTERM: exiting now") == 1);
}
