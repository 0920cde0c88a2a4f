//! Redis Sentinel (`-rs-sentinel`): a real primary, a replica and three
//! Sentinels. After `SENTINEL FAILOVER`, and after the new primary is
//! killed (the Sentinels fail over back), the WebSocket client stays
//! connected and receives what is published to the primary of the moment;
//! under `-rs-mode=stream`, every entry once, in order.

mod common;

use common::redis::{free_port, RedisServer};
use common::relay::{self, next_data, Relay};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

const T: Duration = Duration::from_secs(40);

/// A Sentinel process monitoring `mymaster` at `primary_port`.
struct SentinelProc {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl SentinelProc {
    fn start(primary_port: u16) -> SentinelProc {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\n\
                 sentinel monitor mymaster 127.0.0.1 {primary_port} 2\n\
                 sentinel down-after-milliseconds mymaster 1000\n\
                 sentinel failover-timeout mymaster 4000\n\
                 sentinel parallel-syncs mymaster 1\n",
                dir.path().display()
            ),
        )
        .unwrap();
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server --sentinel");
        let s = SentinelProc {
            port,
            child,
            _dir: dir,
        };
        wait(|| s.cli(&["PING"]).trim() == "PONG", "a Sentinel answering");
        s
    }

    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The port the Sentinel names as the primary now.
    fn primary_port(&self) -> u16 {
        let out = self.cli(&["SENTINEL", "get-master-addr-by-name", "mymaster"]);
        out.lines()
            .nth(1)
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for SentinelProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait(mut ok: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + T;
    while !ok() {
        assert!(Instant::now() < deadline, "never saw {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether `replica` is connected to its primary and in sync.
fn linked(replica: &RedisServer) -> bool {
    replica
        .cli(&["INFO", "replication"])
        .contains("master_link_status:up")
}

/// Publishes on `server` until the relay's client receives `payload` (the
/// relay may still be moving to this primary).
async fn delivered(server: &RedisServer, ws: &mut relay::Ws, payload: &str) {
    let deadline = Instant::now() + T;
    while server.publish("news", payload.as_bytes()) < 1 {
        assert!(
            Instant::now() < deadline,
            "the relay never subscribed to the new primary"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(next_data(ws, T).await, Message::text(payload));
}

/// A primary `a`, its replica `b`, three Sentinels that know both, and
/// the `-rs-sentinel` list.
fn deployment() -> (RedisServer, RedisServer, Vec<SentinelProc>, String) {
    let a = RedisServer::start();
    let a_port = a.port().to_string();
    let b = RedisServer::start_with(&["--replicaof", "127.0.0.1", &a_port]);
    wait(|| linked(&b), "the replica in sync");
    let sentinels: Vec<SentinelProc> = (0..3).map(|_| SentinelProc::start(a.port())).collect();
    wait(
        || {
            sentinels[0]
                .cli(&["SENTINEL", "replicas", "mymaster"])
                .contains(&b.port().to_string())
        },
        "the Sentinels knowing the replica",
    );
    let list: Vec<String> = sentinels
        .iter()
        .map(|s| format!("127.0.0.1:{}", s.port))
        .collect();
    (a, b, sentinels, list.join(","))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_stay_through_failovers() {
    let (mut a, mut b, sentinels, list) = deployment();
    let r = Relay::start(&[
        "-ws-insecure",
        &format!("-rs-sentinel={list}"),
        "-rs-sentinel-master=mymaster",
        "-rs-channel=news",
        "-publish-addr=127.0.0.1:0",
        "-publish-token=sentinel-token",
    ]);
    r.wait_subscribed(1);
    let line = r.stdout.wait_for("publish endpoint on http://", T).unwrap();
    let rest = &line[line.find("http://").unwrap() + 7..];
    let publish_at = rest[..rest.find('/').unwrap()].to_string();
    let mut ws = relay::connect(&r.url("/"), None).await.unwrap();
    delivered(&a, &mut ws, "from a").await;
    post(&publish_at, "http to a");
    assert_eq!(next_data(&mut ws, T).await, Message::text("http to a"));

    // A manual failover: b becomes the primary.
    assert!(sentinels[0]
        .cli(&["SENTINEL", "FAILOVER", "mymaster"])
        .contains("OK"));
    wait(|| sentinels[0].primary_port() == b.port(), "b promoted");
    delivered(&b, &mut ws, "from b").await;
    assert!(
        r.stdout.wait_for("+switch-master mymaster", T).is_some(),
        "{:#?}",
        r.stdout.all()
    );
    // POST /publish leaves its connection to the old primary for b.
    post(&publish_at, "http to b");
    assert_eq!(next_data(&mut ws, T).await, Message::text("http to b"));

    // The primary dies: the Sentinels fail over to a, now b's replica.
    wait(|| linked(&a), "a following b");
    b.kill();
    wait(
        || sentinels[1].primary_port() == a.port(),
        "a promoted again",
    );
    delivered(&a, &mut ws, "from a again").await;
    relay::bye(ws).await;
    drop(sentinels);
    a.kill();
}

/// Under `-rs-mode=stream`: entries added on each primary in turn reach
/// the client once and in order, across `SENTINEL FAILOVER` and the death
/// of the new primary (whose replica holds them all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_lose_nothing_the_new_primary_holds() {
    let (mut a, mut b, sentinels, list) = deployment();
    let r = Relay::start(&[
        "-ws-insecure",
        &format!("-rs-sentinel={list}"),
        "-rs-sentinel-master=mymaster",
        "-rs-mode=stream",
        "-rs-channel=news",
    ]);
    r.stdout.wait_for("[redis] reading streams", T).unwrap();
    let mut ws = relay::connect(&r.url("/?channel=news"), None)
        .await
        .unwrap();
    let xadd = |s: &RedisServer, n: u64| s.cli(&["XADD", "news", "*", "data", &n.to_string()]);
    let mut seen = Vec::new();
    for n in 1..=2 {
        xadd(&a, n);
    }
    for _ in 0..2 {
        seen.push(plain(&mut ws).await);
    }
    wait(|| linked(&b), "b in sync");
    assert!(sentinels[0]
        .cli(&["SENTINEL", "FAILOVER", "mymaster"])
        .contains("OK"));
    wait(|| sentinels[0].primary_port() == b.port(), "b promoted");
    wait(|| b.cli(&["ROLE"]).starts_with("master"), "b a primary");
    // The relay follows +switch-master: a new session, from its last ID.
    assert!(
        r.stdout
            .wait_count("[redis] reading streams news (after ", 1, T)
            .is_some(),
        "{:#?}",
        r.stdout.all()
    );
    for n in 3..=4 {
        xadd(&b, n);
    }
    for _ in 0..2 {
        seen.push(plain(&mut ws).await);
    }
    wait(|| linked(&a), "a following b");
    wait(
        || a.cli(&["XLEN", "news"]).trim() == "4",
        "a holding every entry",
    );
    b.kill();
    wait(
        || sentinels[1].primary_port() == a.port(),
        "a promoted again",
    );
    wait(|| a.cli(&["ROLE"]).starts_with("master"), "a a primary");
    xadd(&a, 5);
    seen.push(plain(&mut ws).await);
    assert_eq!(seen, [1, 2, 3, 4, 5], "none lost, none twice, in order");
    drop(sentinels);
    a.kill();
}

/// The next message's payload, as a number (an original client).
async fn plain(ws: &mut relay::Ws) -> u64 {
    let m = next_data(ws, T).await;
    m.to_text().unwrap().parse().unwrap()
}

/// POST /publish with the token; panics unless 200.
fn post(addr: &str, body: &str) {
    let req = format!(
        "POST /publish?channel=news HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sentinel-token\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let resp = relay::raw_exchange(addr, req.as_bytes());
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
}

#[test]
fn flags() {
    for (args, says) in [
        (
            vec!["-rs-sentinel=127.0.0.1:26379"],
            "needs -rs-sentinel-master",
        ),
        (vec!["-rs-sentinel-master=m"], "needs -rs-sentinel"),
        (
            vec!["-rs-sentinel=nohost", "-rs-sentinel-master=m"],
            "host:port",
        ),
        (
            vec![
                "-rs-sentinel=127.0.0.1:1",
                "-rs-sentinel-master=m",
                "-rs-cluster",
            ],
            "exclude each other",
        ),
    ] {
        let mut all = vec!["-ws-insecure"];
        all.extend(args);
        let (status, _, err) = relay::run(&all);
        assert_eq!(status.code(), Some(2), "{all:?}: {err}");
        assert!(err.contains(says), "{all:?}: {err}");
    }
}
