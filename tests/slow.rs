//! A client that stops reading is closed at its byte bound; everyone else
//! keeps receiving, and the relay's memory does not grow with the backlog.

mod common;

use common::redis::RedisServer;
use common::relay::{self, next_data, upgrade_request, Relay};
use socket2::{Domain, Socket, Type};
use std::io::{Read, Write};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

const T: Duration = Duration::from_secs(60);
const MESSAGES: usize = 4096;
const SIZE: usize = 16 * 1024;

/// An upgraded client with a tiny receive window that never reads.
fn stalled_client(addr: &str) -> std::net::TcpStream {
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.set_recv_buffer_size(4096).unwrap();
    s.connect(&addr.parse::<std::net::SocketAddr>().unwrap().into())
        .unwrap();
    let mut s: std::net::TcpStream = s.into();
    s.write_all(upgrade_request("/", "").as_bytes()).unwrap();
    let mut head = [0u8; 129];
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let n = s.read(&mut head).unwrap();
    assert!(head[..n].starts_with(b"HTTP/1.1 101"));
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_client_is_closed_at_its_bound_and_others_get_everything() {
    stalled_client_is_closed(&["-io=uring"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_with_epoll_writes() {
    stalled_client_is_closed(&["-io=epoll"]).await;
}

async fn stalled_client_is_closed(io: &[&str]) {
    let redis = RedisServer::start();
    let mut args = vec!["-ws-queue-bytes=256KiB"];
    args.extend_from_slice(io);
    let r = Relay::insecure(redis.port(), &args);
    r.wait_subscribed(1);
    let mut stalled = stalled_client(&r.addr());
    let mut readers = Vec::new();
    for _ in 0..3 {
        let mut ws = relay::connect(&r.url("/"), None).await.unwrap();
        readers.push(tokio::spawn(async move {
            for i in 0..MESSAGES {
                let m = next_data(&mut ws, T).await;
                let Message::Text(t) = m else {
                    panic!("text expected")
                };
                assert_eq!(t.len(), SIZE);
                assert_eq!(&t[..8], format!("{i:08}").as_str(), "order");
            }
        }));
    }
    r.stdout.wait_count("[connect] OK", 4, T).unwrap();
    let rss_before = r.rss_kib();
    let publisher = tokio::task::spawn_blocking(move || {
        for i in 0..MESSAGES {
            let mut p = format!("{i:08}").into_bytes();
            p.resize(SIZE, b'.');
            redis.publish("pubsocketd", &p);
        }
        redis
    });
    for reader in readers {
        reader.await.unwrap();
    }
    let _redis = publisher.await.unwrap();
    let line = r
        .stdout
        .wait_for("[slow] closed with 1008", T)
        .expect("slow close logged");
    assert!(line.contains("over the 262144-byte bound"), "{line}");
    assert!(line.contains("(1 slow consumers closed so far)"), "{line}");
    let grown_mib = r.rss_kib().saturating_sub(rss_before) / 1024;
    let published_mib = (MESSAGES * SIZE) >> 20;
    assert!(
        grown_mib < 32,
        "RSS grew {grown_mib} MiB while {published_mib} MiB were published"
    );
    // The stalled client finds its connection ended once it reads again.
    stalled
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut sink = vec![0u8; 1 << 16];
    loop {
        match stalled.read(&mut sink) {
            Ok(0) => break,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("stalled client still connected: {e}"),
        }
    }
}
