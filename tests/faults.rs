//! Redis goes away and comes back; WebSocket clients never notice more
//! than the gap.

mod common;

use common::redis::{free_port, RedisServer};
use common::relay::{self, next_data, Relay};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

const T: Duration = Duration::from_secs(30);

#[tokio::test]
async fn redis_killed_and_restarted_while_clients_stay_connected() {
    let mut redis = RedisServer::start();
    let r = Relay::insecure(redis.port(), &[]);
    r.wait_subscribed(1);
    let mut a = relay::connect(&r.url("/"), None).await.unwrap();
    let mut b = relay::connect(&r.url("/"), None).await.unwrap();
    redis.publish("pubsocketd", b"before");
    for ws in [&mut a, &mut b] {
        assert_eq!(next_data(ws, T).await, Message::text("before"));
    }
    for round in 2..=3 {
        redis.kill();
        r.stdout
            .wait_count("[redis] connection to", round - 1, T)
            .expect("loss logged");
        redis.restart();
        r.wait_subscribed(round);
        let text = format!("after restart {round}");
        assert_eq!(redis.publish("pubsocketd", text.as_bytes()), 1);
        for ws in [&mut a, &mut b] {
            assert_eq!(next_data(ws, T).await, Message::text(text.clone()));
        }
    }
    // One warning per outage, not one per retry.
    assert_eq!(r.stdout.count("WARN [redis]"), 2, "{:?}", r.stdout.all());
}

#[tokio::test]
async fn relay_starts_and_serves_while_redis_is_down() {
    let port = free_port();
    let r = Relay::insecure(port, &[]);
    let warn = r.stdout.wait_for("[redis] cannot connect to", T);
    assert!(warn.unwrap().contains("reconnecting"));
    let mut ws = relay::connect(&r.url("/"), None)
        .await
        .expect("serves without Redis");
    let redis = RedisServer::start_on(port);
    r.wait_subscribed(1);
    redis.publish("pubsocketd", b"first");
    assert_eq!(next_data(&mut ws, T).await, Message::text("first"));
}

#[tokio::test]
async fn subscriber_connection_killed_by_redis_is_resubscribed() {
    let redis = RedisServer::start();
    let r = Relay::insecure(redis.port(), &[]);
    r.wait_subscribed(1);
    let mut ws = relay::connect(&r.url("/"), None).await.unwrap();
    redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    r.wait_subscribed(2);
    redis.publish("pubsocketd", b"back");
    assert_eq!(next_data(&mut ws, T).await, Message::text("back"));
}

#[tokio::test]
async fn redis_dropping_us_at_its_output_buffer_limit_is_survived() {
    let redis = RedisServer::start();
    redis.cli(&[
        "CONFIG",
        "SET",
        "client-output-buffer-limit",
        "pubsub 64kb 32kb 1",
    ]);
    let r = Relay::insecure(redis.port(), &[]);
    r.wait_subscribed(1);
    let mut ws = relay::connect(&r.url("/"), None).await.unwrap();
    // Freeze the relay so Redis' buffer for it fills during a burst.
    r.signal(libc::SIGSTOP);
    // Enough to fill the kernel's socket buffers on both sides, and then
    // Redis' 64 KiB limit.
    let chunk = vec![b'b'; 64 * 1024];
    for _ in 0..512 {
        redis.publish("pubsocketd", &chunk);
    }
    r.signal(libc::SIGCONT);
    r.stdout
        .wait_for("[redis] connection to", T)
        .expect("gap logged");
    r.wait_subscribed(2);
    redis.publish("pubsocketd", b"after the gap");
    loop {
        match next_data(&mut ws, T).await {
            Message::Text(t) if t.as_str() == "after the gap" => break,
            Message::Text(t) => assert_eq!(t.len(), chunk.len(), "only burst messages before"),
            other => panic!("{other:?}"),
        }
    }
    let log = redis.log_tail();
    assert!(
        log.contains("scheduled to be closed ASAP for overcoming of output buffer limits"),
        "{log}"
    );
}

/// A TCP proxy that can freeze its current connections (they stay open,
/// nothing flows) while new ones forward normally.
struct StallProxy {
    port: u16,
    frozen_below: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    next_id: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl StallProxy {
    fn start(upstream: u16) -> StallProxy {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        use std::sync::Arc;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let frozen_below = Arc::new(AtomicUsize::new(0));
        let next_id = Arc::new(AtomicUsize::new(0));
        let (fb, ni) = (frozen_below.clone(), next_id.clone());
        std::thread::spawn(move || {
            for client in l.incoming() {
                let Ok(client) = client else { break };
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let id = ni.fetch_add(1, SeqCst);
                for (from, to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let fb = fb.clone();
                    std::thread::spawn(move || pump(from, to, id, &fb));
                }
            }
        });
        fn pump(
            mut from: std::net::TcpStream,
            mut to: std::net::TcpStream,
            id: usize,
            frozen: &AtomicUsize,
        ) {
            use std::io::{Read, Write};
            from.set_read_timeout(Some(Duration::from_millis(20)))
                .unwrap();
            let mut buf = [0u8; 16384];
            loop {
                if id < frozen.load(SeqCst) {
                    // Stalled: hold both sockets open, move nothing.
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
                match from.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        if to.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                    Err(e)
                        if e.kind() == std::io::ErrorKind::WouldBlock
                            || e.kind() == std::io::ErrorKind::TimedOut => {}
                    Err(_) => return,
                }
            }
        }
        StallProxy {
            port,
            frozen_below,
            next_id,
        }
    }

    /// Freezes every connection made so far.
    fn stall(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        self.frozen_below.store(self.next_id.load(SeqCst), SeqCst);
    }
}

#[tokio::test]
async fn a_stalled_redis_connection_is_detected_by_ping_and_replaced() {
    let redis = RedisServer::start();
    let proxy = StallProxy::start(redis.port());
    let r = Relay::insecure(proxy.port, &["-rs-keepalive=300ms"]);
    r.wait_subscribed(1);
    let mut ws = relay::connect(&r.url("/"), None).await.unwrap();
    redis.publish("pubsocketd", b"through the proxy");
    assert_eq!(
        next_data(&mut ws, T).await,
        Message::text("through the proxy")
    );
    proxy.stall();
    let line = r
        .stdout
        .wait_for("no answer to PING within", T)
        .expect("stall detected");
    assert!(line.contains("reconnecting"), "{line}");
    r.wait_subscribed(2);
    // Two subscriptions exist at Redis for a moment: the frozen one and the new.
    redis.publish("pubsocketd", b"after the stall");
    assert_eq!(
        next_data(&mut ws, T).await,
        Message::text("after the stall")
    );
}
