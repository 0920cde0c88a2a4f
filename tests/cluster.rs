//! Redis Cluster: sharded pub/sub on a real 3-node cluster the test
//! creates, through a node restart and a slot moving to another node; and
//! streams (`-rs-mode=stream`) read on their nodes.

mod common;

use common::redis::RedisServer;
use common::relay::{self, next_data, Relay};
use std::process::Command;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

const T: Duration = Duration::from_secs(30);

/// A port whose cluster bus port (+10000) is free too.
fn cluster_port() -> u16 {
    loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        if p < 50000 && std::net::TcpListener::bind(("127.0.0.1", p + 10000)).is_ok() {
            return p;
        }
    }
}

struct Cluster {
    nodes: Vec<RedisServer>,
}

impl Cluster {
    fn start() -> Cluster {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                let port = cluster_port();
                RedisServer::start_on_with(
                    port,
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "2000",
                    ],
                )
            })
            .collect();
        let mut args: Vec<String> = vec!["--cluster".into(), "create".into()];
        args.extend(nodes.iter().map(|n| n.addr()));
        args.extend([
            "--cluster-replicas".into(),
            "0".into(),
            "--cluster-yes".into(),
        ]);
        let out = Command::new("redis-cli").args(&args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        let c = Cluster { nodes };
        c.wait_ok();
        c
    }

    /// Waits until every node reports `cluster_state:ok`.
    fn wait_ok(&self) {
        let deadline = Instant::now() + T;
        while !self
            .nodes
            .iter()
            .all(|n| n.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok"))
        {
            assert!(Instant::now() < deadline, "cluster never became ok");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The node that owns `channel`'s slot.
    fn owner(&self, channel: &str) -> usize {
        let slot: u16 = self.nodes[0]
            .cli(&["CLUSTER", "KEYSLOT", channel])
            .trim()
            .parse()
            .unwrap();
        (0..self.nodes.len())
            .find(|&i| self.owns(i, slot))
            .expect("an owner")
    }

    /// Whether node `i` says it serves `slot` (its `myself` line of
    /// CLUSTER NODES lists its slot ranges).
    fn owns(&self, i: usize, slot: u16) -> bool {
        let nodes = self.nodes[i].cli(&["CLUSTER", "NODES"]);
        let Some(me) = nodes.lines().find(|l| l.contains("myself")) else {
            return false;
        };
        me.split_whitespace().skip(8).any(|range| {
            let (a, b) = range.split_once('-').unwrap_or((range, range));
            matches!((a.parse::<u16>(), b.parse::<u16>()), (Ok(a), Ok(b)) if a <= slot && slot <= b)
        })
    }

    /// SPUBLISH through the owning node.
    fn spublish(&self, channel: &str, msg: &str) {
        let out = self.nodes[self.owner(channel)].cli(&["SPUBLISH", channel, msg]);
        assert_eq!(out.trim(), "1", "SPUBLISH {channel}: {out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_channels_across_nodes_survive_a_restart_and_a_slot_move() {
    let mut cluster = Cluster::start();
    // "a", "b" and "c" hash to slots owned by three different nodes.
    let owners: Vec<usize> = ["a", "b", "c"].iter().map(|c| cluster.owner(c)).collect();
    let mut distinct = owners.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "{owners:?}");
    let seed = cluster.nodes[0].port();
    let r = Relay::start(&[
        "-ws-insecure",
        "-rs-cluster",
        &format!("-rs-url=redis://127.0.0.1:{seed}"),
        "-rs-channel=a,b,c",
        "-metrics-addr=127.0.0.1:0",
        "-publish-addr=127.0.0.1:0",
        "-publish-token=cluster-token",
    ]);
    r.wait_subscribed(3);
    let mut ws = relay::connect(&r.url("/"), None).await.unwrap();
    let mut only_b = relay::connect(&r.url("/?channel=b"), None).await.unwrap();
    for ch in ["a", "b", "c"] {
        cluster.spublish(ch, &format!("{ch}1"));
    }
    for want in ["a1", "b1", "c1"] {
        assert_eq!(next_data(&mut ws, T).await, Message::text(want));
    }
    assert_eq!(next_data(&mut only_b, T).await, Message::text("b1"));

    // HTTP publish goes out as SPUBLISH, to the owner (following MOVED).
    let line = r.stdout.wait_for("publish endpoint on http://", T).unwrap();
    let addr = line
        .split("http://")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    for ch in ["a", "b", "c"] {
        let body = format!("{ch}-http");
        let req = format!(
            "POST /publish?channel={ch} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer cluster-token\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let resp = common::relay::raw_exchange(&addr, req.as_bytes());
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        assert!(resp.contains("\"redis_receivers\":1"), "{resp}");
    }
    for want in ["a-http", "b-http", "c-http"] {
        assert_eq!(next_data(&mut ws, T).await, Message::text(want));
    }
    assert_eq!(next_data(&mut only_b, T).await, Message::text("b-http"));

    // The node that owns "b" dies and comes back with its slots.
    let b = owners[1];
    cluster.nodes[b].kill();
    r.stdout
        .wait_for("[redis] connection to cluster node", T)
        .expect("loss logged");
    cluster.nodes[b].restart();
    cluster.wait_ok();
    r.stdout
        .wait_count("[redis] subscribed to b on cluster node", 2, T)
        .expect("b resubscribed");
    cluster.spublish("b", "b2");
    assert_eq!(next_data(&mut only_b, T).await, Message::text("b2"));

    // The slot of "c" moves to the node of "a": Redis unsubscribes us
    // (sunsubscribe) and the relay follows the slot.
    let c_slot = cluster.nodes[0]
        .cli(&["CLUSTER", "KEYSLOT", "c"])
        .trim()
        .to_string();
    let target_id = cluster.nodes[owners[0]]
        .cli(&["CLUSTER", "MYID"])
        .trim()
        .to_string();
    for i in [owners[0], owners[2], owners[1]] {
        let out = cluster.nodes[i].cli(&["CLUSTER", "SETSLOT", &c_slot, "NODE", &target_id]);
        assert!(out.contains("OK"), "SETSLOT on node {i}: {out}");
    }
    cluster.wait_ok();
    r.stdout
        .wait_count("subscribed to a, c on cluster node", 1, T)
        .unwrap_or_else(|| panic!("c did not follow its slot: {:#?}", r.stdout.all()));
    assert_eq!(cluster.owner("c"), owners[0]);
    cluster.spublish("c", "c2");
    cluster.spublish("a", "a2");
    // "b2" is still queued for this client first.
    assert_eq!(next_data(&mut ws, T).await, Message::text("b2"));
    assert_eq!(next_data(&mut ws, T).await, Message::text("c2"));
    assert_eq!(next_data(&mut ws, T).await, Message::text("a2"));
}

#[test]
fn patterns_are_refused_with_cluster_unless_on_demand() {
    let out = Command::new(common::relay::BIN)
        .args(["-ws-insecure", "-rs-cluster", "-rs-channel=a,b.*"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("sharded pub/sub has no patterns"));
}

/// Under `-rs-cluster`, a SIGHUP that adds a channel to the channel file
/// subscribes it on the node that owns it (and only that node's session is
/// restarted); one that lists a pattern is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_file_reloaded_under_cluster() {
    let cluster = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("channels");
    std::fs::write(&file, "a\n").unwrap();
    let seed = cluster.nodes[0].port();
    let r = Relay::start(&[
        "-ws-insecure",
        "-rs-cluster",
        &format!("-rs-url=redis://127.0.0.1:{seed}"),
        &format!("-rs-channel-file={}", file.display()),
    ]);
    r.wait_subscribed(1);
    std::fs::write(&file, "a\nb\n").unwrap();
    r.signal(libc::SIGHUP);
    r.stdout
        .wait_for("[redis] subscribed to b on cluster node", T)
        .unwrap_or_else(|| panic!("b not subscribed: {:#?}", r.stdout.all()));
    let mut ws = relay::connect(&r.url("/?channel=b"), None).await.unwrap();
    cluster.spublish("b", "b after the reload");
    assert_eq!(
        next_data(&mut ws, T).await,
        Message::text("b after the reload")
    );
    std::fs::write(&file, "a\nb\nc.*\n").unwrap();
    r.signal(libc::SIGHUP);
    let line = r
        .stdout
        .wait_for("which -rs-cluster cannot relay", T)
        .expect("the pattern is refused");
    assert!(line.contains("the channels stay as they were"), "{line}");
}

/// `-rs-on-demand` under `-rs-cluster`: a pattern bounds what clients
/// name, and each channel read is SSUBSCRIBEd on the node of its slot
/// while read (and SUNSUBSCRIBEd after, without disturbing the node's other
/// channels), also after that node restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_on_demand_follow_their_slots() {
    let mut cluster = Cluster::start();
    // One channel under the pattern on each node.
    let mut picked: Vec<(String, usize)> = Vec::new();
    for i in 0.. {
        let ch = format!("user.{i}");
        let owner = cluster.owner(&ch);
        if !picked.iter().any(|(_, o)| *o == owner) {
            picked.push((ch, owner));
        }
        if picked.len() == 3 {
            break;
        }
    }
    let seed = cluster.nodes[0].port();
    let r = Relay::start(&[
        "-ws-insecure",
        "-rs-cluster",
        "-rs-on-demand",
        "-rs-on-demand-grace=200ms",
        &format!("-rs-url=redis://127.0.0.1:{seed}"),
        "-rs-channel=user.*",
    ]);
    r.wait_subscribed(3);
    let shard_subs = |c: &Cluster, ch: &str, owner: usize| -> String {
        let out = c.nodes[owner].cli(&["PUBSUB", "SHARDNUMSUB", ch]);
        out.lines().nth(1).unwrap_or("").trim().to_string()
    };
    let mut clients = Vec::new();
    for (ch, owner) in &picked {
        let ws = relay::connect(&r.url(&format!("/?channel={ch}")), None)
            .await
            .unwrap();
        assert_eq!(
            shard_subs(&cluster, ch, *owner),
            "1",
            "{ch} on node {owner}"
        );
        clients.push(ws);
    }
    for (ch, _) in &picked {
        cluster.spublish(ch, &format!("{ch}-1"));
    }
    for (ws, (ch, _)) in clients.iter_mut().zip(&picked) {
        assert_eq!(next_data(ws, T).await, Message::text(format!("{ch}-1")));
    }

    // The first client leaves: its channel is SUNSUBSCRIBEd on its node,
    // and the sessions go on (our own sunsubscribe is not a slot moving).
    let first = clients.remove(0);
    relay::bye(first).await;
    let (gone, gone_owner) = picked.remove(0);
    let deadline = Instant::now() + T;
    while shard_subs(&cluster, &gone, gone_owner) != "0" {
        assert!(Instant::now() < deadline, "{gone} never unsubscribed");
        std::thread::sleep(Duration::from_millis(20));
    }
    for (ch, _) in &picked {
        cluster.spublish(ch, &format!("{ch}-2"));
    }
    for (ws, (ch, _)) in clients.iter_mut().zip(&picked) {
        assert_eq!(next_data(ws, T).await, Message::text(format!("{ch}-2")));
    }
    assert_eq!(r.stdout.count("slot moved"), 0, "{:#?}", r.stdout.all());

    // The node of the second channel restarts: the channel is subscribed
    // there again.
    let (ch, owner) = picked[0].clone();
    cluster.nodes[owner].kill();
    cluster.nodes[owner].restart();
    cluster.wait_ok();
    let deadline = Instant::now() + T;
    while shard_subs(&cluster, &ch, owner) != "1" {
        assert!(Instant::now() < deadline, "{ch} not subscribed again");
        std::thread::sleep(Duration::from_millis(50));
    }
    cluster.spublish(&ch, "after the restart");
    assert_eq!(
        next_data(&mut clients[0], T).await,
        Message::text("after the restart")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_read_on_their_nodes_through_a_restart_and_resumed_from_them() {
    let mut cluster = Cluster::start();
    let owners: Vec<usize> = ["a", "b", "c"].iter().map(|c| cluster.owner(c)).collect();
    let seed = cluster.nodes[0].port();
    let args = [
        "-ws-insecure",
        "-rs-cluster",
        "-rs-mode=stream",
        &format!("-rs-url=redis://127.0.0.1:{seed}"),
        "-rs-channel=a,b,c,{a}.more",
    ];
    let r = Relay::start(&args);
    // One reader per slot: a and {a}.more share one, b and c have their own.
    r.stdout
        .wait_count("[redis] reading streams", 3, T)
        .unwrap();
    let xadd = |c: &Cluster, key: &str, data: &str| {
        let out = c.nodes[c.owner(key)].cli(&["XADD", key, "*", "data", data]);
        out.trim().to_string()
    };
    let mut ws = relay::connect_v1(&r.url("/")).await;
    let mut ids = Vec::new();
    for key in ["a", "b", "c", "{a}.more"] {
        ids.push(xadd(&cluster, key, &format!("{key}1")));
    }
    let mut got = Vec::new();
    for _ in 0..4 {
        let e = relay::next_json(&mut ws, T).await;
        got.push((
            e["channel"].as_str().unwrap().to_string(),
            e["id"].as_str().unwrap().to_string(),
        ));
    }
    got.sort();
    let mut want: Vec<(String, String)> = ["a", "b", "c", "{a}.more"]
        .iter()
        .zip(&ids)
        .map(|(k, id)| (k.to_string(), id.clone()))
        .collect();
    want.sort();
    assert_eq!(got, want, "each entry once, with Redis' ID");
    // The node of "b" dies and comes back (without its data: no AOF).
    let b = owners[1];
    cluster.nodes[b].kill();
    cluster.nodes[b].restart();
    cluster.wait_ok();
    r.stdout
        .wait_count("[redis] reading streams b", 2, T)
        .unwrap();
    xadd(&cluster, "b", "b2");
    // It came back empty: the entry the reader stopped at is gone, and the
    // client hears that something may be missing before b2.
    assert_eq!(
        relay::next_json(&mut ws, T).await,
        serde_json::json!({"channel": "b", "recovered": false})
    );
    let e = relay::next_json(&mut ws, T).await;
    assert_eq!(
        (&e["channel"], &e["data"]),
        (&serde_json::json!("b"), &serde_json::json!("b2"))
    );
    // A second relay, which never saw "c1": the resume is read from the
    // node that owns "c" (following MOVED from the seed).
    let second = Relay::start(&args);
    second
        .stdout
        .wait_count("[redis] reading streams", 3, T)
        .unwrap();
    xadd(&cluster, "c", "c2");
    let c0 = &ids[2];
    let before_c1 = format!(
        "{}-0",
        c0.split('-').next().unwrap().parse::<u64>().unwrap() - 1
    );
    let mut late =
        relay::connect_v1(&second.url(&format!("/?channel=c&since=c:{before_c1}"))).await;
    let first = relay::next_json(&mut late, T).await;
    assert_eq!(first["data"], "c1");
    assert_eq!(relay::next_json(&mut late, T).await["data"], "c2");
    assert_eq!(
        relay::next_json(&mut late, T).await,
        serde_json::json!({"channel": "c", "recovered": false}),
        "an ID Redis never held cannot vouch for what came after it"
    );
    let mut exact = relay::connect_v1(&second.url(&format!("/?channel=c&since=c:{c0}"))).await;
    assert_eq!(relay::next_json(&mut exact, T).await["data"], "c2");
    assert_eq!(relay::next_json(&mut exact, T).await["recovered"], true);
}
