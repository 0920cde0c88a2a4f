//! Redis Cluster: sharded pub/sub (SSUBSCRIBE, Redis 7).
//!
//! A sharded channel lives on the node that owns its hash slot, so the
//! relay keeps one subscriber connection per node that owns one of its
//! channels. A supervisor reads the slot map (`CLUSTER SLOTS`), starts a
//! node session for each owner, and when a session ends (node down, a slot
//! moved: Redis sends `sunsubscribe`, or `MOVED`) reads the map again and
//! restarts only the sessions whose node or channels changed.

use super::backoff::Backoff;
use super::connect::{ConnectError, Target};
use super::resp::reply;
use super::resp::write::command;
use super::stream::{Cursors, Ready, StreamReader};
use super::subscriber::{Node, Subscriber};
use super::supervise::Failure;
use crate::channels::{Channels, Live};
use crate::demand::Demand;
use crate::ingest::handle::Ingest;
use crate::ops::config::Config;
use crate::ops::stats::Stats;
use bytes::{Bytes, BytesMut};
use redis_protocol::resp2::types::BytesFrame;
use slog::{debug, warn, Logger};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// How often readiness is recomputed from the node sessions.
const READY_POLL: Duration = Duration::from_millis(100);

/// Who owns the slots: `(first slot, last slot, host, port)` per range.
pub type SlotMap = Vec<(u16, u16, String, u16)>;

/// The cluster side of the relay.
pub struct Cluster {
    pub cfg: Config,
    /// `-rs-mode=stream`: where each stream is, kept across node sessions.
    pub cursors: Option<Cursors>,
    pub target: Target,
    pub ingest: Ingest,
    pub channels: Arc<Live>,
    pub log: Logger,
    pub stats: Arc<Stats>,
    pub fatal: Option<oneshot::Sender<String>>,
    pub demand: Option<Arc<Demand>>,
}

impl From<Subscriber> for Cluster {
    /// The cluster side built from the single-server subscriber's parts.
    fn from(s: Subscriber) -> Cluster {
        Cluster {
            cursors: None,
            cfg: s.cfg,
            target: s.target,
            ingest: s.ingest,
            channels: s.channels,
            log: s.log,
            stats: s.stats,
            fatal: s.fatal,
            demand: s.demand,
        }
    }
}

/// A running node session.
struct Running {
    share: Share,
    live: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Cluster {
    /// Runs until dropped (then every node session stops with it).
    pub async fn run(mut self) {
        let mut running: BTreeMap<(String, u16), Running> = BTreeMap::new();
        let (ended_tx, mut ended) = mpsc::unbounded_channel::<Failure>();
        let mut backoff = Backoff::new();
        let mut ever_live = false;
        let mut reloads = self.channels.watch();
        let mut known = vec![(self.cfg.redis.host.clone(), self.cfg.redis.port)];
        loop {
            match self.slot_map(&known).await {
                Ok(map) => {
                    known = nodes_of(&map, &known);
                    let plan = plan(&self.channels.get(), &map, self.demand.is_some());
                    self.apply(&plan, &mut running, &ended_tx);
                }
                Err(f) => {
                    if f.refused && !ever_live {
                        if let Some(fatal) = self.fatal.take() {
                            let _ = fatal.send(f.why);
                            return;
                        }
                    }
                    warn!(
                        self.log,
                        "[redis] cannot read the cluster's slot map: {}; retrying", f.why
                    );
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue;
                }
            }
            // Watch the sessions until one ends, keeping readiness current.
            let failure = loop {
                let live = !running.is_empty() && running.values().all(|r| r.live.load(Relaxed));
                if live && !ever_live {
                    ever_live = true;
                } else if live && !self.stats.redis_up.load(Relaxed) {
                    self.stats.redis_reconnects.fetch_add(1, Relaxed);
                }
                self.stats.redis_up.store(live, Relaxed);
                if live {
                    backoff.reset();
                }
                tokio::select! {
                    f = ended.recv() => break f,
                    _ = tokio::time::sleep(READY_POLL) => {}
                    // Channels added or removed: plan again, restarting
                    // only the sessions of the nodes whose share changed.
                    Ok(()) = reloads.changed() => break None,
                }
            };
            self.stats.redis_up.store(false, Relaxed);
            if let Some(f) = failure {
                if f.refused && !ever_live {
                    if let Some(fatal) = self.fatal.take() {
                        let _ = fatal.send(f.why);
                        return;
                    }
                }
                if backoff.is_reset() {
                    warn!(self.log, "[redis] {}; re-reading the slot map", f.why);
                } else {
                    debug!(self.log, "[redis] {}; retrying", f.why);
                }
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    /// Starts, restarts or stops node sessions to match `plan`.
    fn apply(
        &self,
        plan: &BTreeMap<(String, u16), Share>,
        running: &mut BTreeMap<(String, u16), Running>,
        ended: &mpsc::UnboundedSender<Failure>,
    ) {
        running.retain(|node, r| {
            let keep = plan.get(node) == Some(&r.share) && !r.task.is_finished();
            if !keep {
                r.task.abort();
            }
            keep
        });
        for ((host, port), share) in plan {
            if running.contains_key(&(host.clone(), *port)) {
                continue;
            }
            let live = Arc::new(AtomicBool::new(false));
            if let Some(cursors) = &self.cursors {
                let task = self.stream_node(host, *port, share, cursors, &live, ended);
                let r = Running {
                    share: share.clone(),
                    live,
                    task,
                };
                running.insert((host.clone(), *port), r);
                continue;
            }
            let node = Node {
                host: host.clone(),
                port: *port,
                channels: share.channels.clone(),
                slots: share.slots.clone(),
                live: live.clone(),
            };
            let mut sub = self.node_subscriber(node);
            let ended = ended.clone();
            let task = tokio::spawn(async move {
                let mut backoff = Backoff::new();
                let Err(failure) = sub.session(&mut backoff).await;
                if let Some(n) = &sub.node {
                    n.live.store(false, Relaxed);
                }
                let _ = ended.send(failure);
            });
            let r = Running {
                share: share.clone(),
                live,
                task,
            };
            running.insert((host.clone(), *port), r);
        }
    }

    /// Under `-rs-mode=stream`: the readers of a node's streams, one per
    /// hash slot (a multi-key XREAD must stay within one), until the first
    /// fails (the others stop with it; the cursors stay).
    fn stream_node(
        &self,
        host: &str,
        port: u16,
        share: &Share,
        cursors: &Cursors,
        live: &Arc<AtomicBool>,
        ended: &mpsc::UnboundedSender<Failure>,
    ) -> JoinHandle<()> {
        let mut slots: BTreeMap<u16, Vec<Bytes>> = BTreeMap::new();
        for name in &share.channels {
            let slot = redis_protocol::redis_keyslot(name.as_bytes());
            slots
                .entry(slot)
                .or_default()
                .push(Bytes::copy_from_slice(name.as_bytes()));
        }
        let placed = Arc::new(AtomicUsize::new(0));
        let of = slots.len();
        let field = self
            .cfg
            .redis
            .stream
            .as_ref()
            .map_or("data", |s| s.field.as_str());
        let mut readers = tokio::task::JoinSet::new();
        for keys in slots.into_values() {
            let ready = Ready {
                placed: placed.clone(),
                of,
                live: live.clone(),
            };
            let reader = StreamReader::new(
                self.target.clone(),
                self.ingest.clone(),
                self.log.clone(),
                self.stats.clone(),
                None,
                keys,
                field,
                self.cfg.max_payload,
                self.cfg.keepalive,
            );
            let mut reader = reader.on_node(host, port, cursors.clone(), ready);
            readers.spawn(async move {
                let Err(failure) = reader.session(&mut Backoff::new()).await;
                failure
            });
        }
        let (live, ended) = (live.clone(), ended.clone());
        tokio::spawn(async move {
            let failure = match readers.join_next().await {
                Some(Ok(f)) => f,
                _ => Failure {
                    why: "a stream reader stopped".into(),
                    refused: false,
                },
            };
            live.store(false, Relaxed);
            let _ = ended.send(failure);
        })
    }

    fn node_subscriber(&self, node: Node) -> Subscriber {
        Subscriber {
            cfg: self.cfg.clone(),
            target: self.target.clone(),
            ingest: self.ingest.clone(),
            channels: self.channels.clone(),
            log: self.log.clone(),
            stats: self.stats.clone(),
            fatal: None,
            node: Some(node),
            demand: self.demand.clone(),
        }
    }

    /// `CLUSTER SLOTS` from the first node that answers.
    async fn slot_map(&self, known: &[(String, u16)]) -> Result<SlotMap, Failure> {
        let mut last = Failure {
            why: "no cluster node known".into(),
            refused: false,
        };
        for (host, port) in known {
            match self.ask_slots(host, *port).await {
                Ok(map) if !map.is_empty() => return Ok(map),
                Ok(_) => last.why = format!("{host}:{port} serves no slots"),
                Err(f) if f.refused => return Err(f),
                Err(f) => last = f,
            }
        }
        Err(last)
    }

    async fn ask_slots(&self, host: &str, port: u16) -> Result<SlotMap, Failure> {
        let io = |why: String| Failure {
            why: format!("{host}:{port}: {why}"),
            refused: false,
        };
        let mut s = self
            .target
            .connect_to(host, port)
            .await
            .map_err(|e| match e {
                ConnectError::Io(why) => io(why),
                ConnectError::Refused(why) => Failure {
                    why: format!("{host}:{port} refused us: {why}"),
                    refused: true,
                },
            })?;
        s.write_all(&command(&[b"CLUSTER", b"SLOTS"]))
            .await
            .map_err(|e| io(e.to_string()))?;
        s.flush().await.map_err(|e| io(e.to_string()))?;
        let mut buf = BytesMut::with_capacity(4096);
        let reply = tokio::time::timeout(Duration::from_secs(5), reply::read(&mut s, &mut buf))
            .await
            .map_err(|_| io("no answer to CLUSTER SLOTS".into()))?
            .map_err(|e| io(e.to_string()))?;
        parse_slots(&reply, host).map_err(io)
    }
}

/// Reads a `CLUSTER SLOTS` reply; an empty host means the node asked.
pub fn parse_slots(reply: &BytesFrame, asked: &str) -> Result<SlotMap, String> {
    let BytesFrame::Array(ranges) = reply else {
        return Err(match reply {
            BytesFrame::Error(e) => format!("CLUSTER SLOTS: {e}"),
            other => format!("unexpected CLUSTER SLOTS reply {other:?}"),
        });
    };
    let mut map = Vec::with_capacity(ranges.len());
    for r in ranges {
        let BytesFrame::Array(parts) = r else {
            return Err("malformed slot range".into());
        };
        match (parts.first(), parts.get(1), parts.get(2)) {
            (
                Some(BytesFrame::Integer(start)),
                Some(BytesFrame::Integer(end)),
                Some(BytesFrame::Array(master)),
            ) => {
                let host = match master.first() {
                    Some(BytesFrame::BulkString(h)) if !h.is_empty() => {
                        String::from_utf8_lossy(h).into_owned()
                    }
                    _ => asked.to_string(),
                };
                let Some(BytesFrame::Integer(port)) = master.get(1) else {
                    return Err("slot range without a port".into());
                };
                map.push((*start as u16, *end as u16, host, *port as u16));
            }
            _ => return Err("malformed slot range".into()),
        }
    }
    Ok(map)
}

/// A node session's share of the work.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Share {
    /// The configured channels of its slots.
    pub channels: Vec<String>,
    /// Its slots, under `-rs-on-demand` (the channels of those slots that
    /// clients read are subscribed there); empty otherwise.
    pub slots: Vec<(u16, u16)>,
}

/// What each master must be asked for: the configured channels of its
/// slots, and under `-rs-on-demand` every master, with its slots.
pub fn plan(channels: &Channels, map: &SlotMap, on_demand: bool) -> BTreeMap<(String, u16), Share> {
    let mut plan: BTreeMap<(String, u16), Share> = BTreeMap::new();
    if on_demand {
        for (a, b, host, port) in map {
            plan.entry((host.clone(), *port))
                .or_default()
                .slots
                .push((*a, *b));
        }
    }
    for key in channels.subscribed_keys() {
        let slot = redis_protocol::redis_keyslot(key.name.as_bytes());
        if let Some((_, _, host, port)) = map.iter().find(|(a, b, _, _)| (*a..=*b).contains(&slot))
        {
            plan.entry((host.clone(), *port))
                .or_default()
                .channels
                .push(key.name.clone());
        }
    }
    plan
}

/// Every master of `map`, then the nodes known before (for the next read).
fn nodes_of(map: &SlotMap, before: &[(String, u16)]) -> Vec<(String, u16)> {
    let mut nodes: Vec<(String, u16)> = Vec::new();
    for (_, _, h, p) in map.iter().map(|(a, b, h, p)| (a, b, h.clone(), *p)) {
        if !nodes.contains(&(h.clone(), p)) {
            nodes.push((h, p));
        }
    }
    for n in before {
        if !nodes.contains(n) {
            nodes.push(n.clone());
        }
    }
    nodes
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn int(i: i64) -> BytesFrame {
        BytesFrame::Integer(i)
    }

    fn bulk(s: &str) -> BytesFrame {
        BytesFrame::BulkString(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn slot_map_and_plan() {
        let reply = BytesFrame::Array(vec![
            BytesFrame::Array(vec![
                int(0),
                int(5460),
                BytesFrame::Array(vec![bulk("127.0.0.1"), int(7001), bulk("id1")]),
            ]),
            BytesFrame::Array(vec![
                int(5461),
                int(10922),
                BytesFrame::Array(vec![bulk(""), int(7002), bulk("id2")]),
            ]),
            BytesFrame::Array(vec![
                int(10923),
                int(16383),
                BytesFrame::Array(vec![bulk("127.0.0.1"), int(7003), bulk("id3")]),
            ]),
        ]);
        let map = parse_slots(&reply, "10.0.0.9").unwrap();
        assert_eq!(map[1], (5461, 10922, "10.0.0.9".to_string(), 7002));
        // Slots: "a" 15495, "b" 3300, "{a}x" follows "a".
        assert_eq!(redis_protocol::redis_keyslot(b"a"), 15495);
        let args: Vec<String> = ["-ws-insecure", "-rs-cluster", "-rs-channel=a,b,{a}x"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let spec = crate::ops::flags::FlagSpec {
            values: crate::ops::config::VALUE_FLAGS,
            switches: crate::ops::config::SWITCH_FLAGS,
            on_by_default: crate::ops::config::ON_BY_DEFAULT_FLAGS,
        };
        let a: crate::ops::config::Args = crate::ops::flags::parse_from("p", &args, &spec).unwrap();
        let cfg = Config::from_args(a).unwrap();
        let p = plan(&cfg.channels, &map, false);
        assert_eq!(p[&("127.0.0.1".to_string(), 7003)].channels, ["a", "{a}x"]);
        assert_eq!(p[&("127.0.0.1".to_string(), 7001)].channels, ["b"]);
        assert_eq!(p.len(), 2, "no session for a node with nothing to read");
        let on_demand = plan(&cfg.channels, &map, true);
        assert_eq!(on_demand.len(), 3, "every master, for what clients ask");
        assert_eq!(
            on_demand[&("10.0.0.9".to_string(), 7002)].slots,
            [(5461, 10922)]
        );
        assert!(parse_slots(
            &BytesFrame::Error("ERR This instance has cluster support disabled".into()),
            "h"
        )
        .unwrap_err()
        .contains("cluster support disabled"));
        let known = nodes_of(&map, &[("seed".to_string(), 1)]);
        assert_eq!(known.len(), 4);
    }
}
