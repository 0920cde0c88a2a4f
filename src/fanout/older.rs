//! Under `-rs-mode=stream`: the part of a resume that is older than the
//! worker's history, read from Redis (`XRANGE`), at most
//! `-history-max-replay` entries per channel and one request at a time per
//! worker (a reconnect storm queues here, within the handshake's time,
//! instead of hammering Redis). What comes back is encoded for the replay
//! only (a replay of a kept message costs no encode; these were never
//! kept).

use super::history::Replay;
use super::hub::Form;
use super::resume::Asked;
use crate::history::id::{Id, Stamp};
use crate::history::since::Point;
use crate::ingest::encode::Encoder;
use crate::ops::config::StreamSettings;
use crate::redis::connect::{RedisStream, Target};
use crate::redis::publisher::moved_to;
use crate::redis::resp::reply;
use crate::redis::resp::write::command;
use crate::redis::stream::Cursors;
use crate::redis::stream_entries;
use bytes::{Bytes, BytesMut};
use redis_protocol::resp2::types::BytesFrame;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::time::timeout;

/// Time for Redis to answer an XRANGE.
const ANSWER: Duration = Duration::from_secs(5);

/// What a worker needs to read older entries.
pub(crate) struct Source {
    pub target: Target,
    pub settings: StreamSettings,
    /// A template, cloned per fetch (its scratch buffers are its own).
    pub encoder: std::sync::Mutex<Encoder>,
    /// The biggest XRANGE answer accepted.
    pub max_reply: usize,
    /// The readers' cursors: whether an entry will still come live.
    pub cursors: Cursors,
}

impl Source {
    /// Whether the entry `id` of `channel` will never be relayed live (it
    /// is older than where the reader began).
    pub fn never_live(&self, channel: &[u8], id: Id) -> bool {
        let cursors = self.cursors.lock().expect("cursors");
        cursors.get(channel).is_some_and(|c| c.before_origin(id))
    }
}

/// A channel's entries from Redis, older than the worker's history.
pub(crate) struct Older {
    pub channel: Bytes,
    pub replay: Replay,
    /// The last entry read (or the resume's own ID when none was newer).
    pub last: Id,
}

/// One kept-open connection per worker; `None` until first needed.
#[derive(Default)]
pub(crate) struct Link(tokio::sync::Mutex<Option<(RedisStream, BytesMut)>>);

/// Reads from Redis what the worker's history cannot vouch for. A channel
/// that cannot be read (Redis down) is left out: the resume then says
/// `recovered:false` from memory alone. `vouches(channel, point)`: whether the worker's history alone replays
/// everything after `point` (for `last`: whether it holds the channel).
/// `form`: what the client takes (uncompressed).
pub(crate) async fn fetch(
    link: &Link,
    vouches: impl Fn(&[u8], Point) -> bool,
    source: &Source,
    asked: &Asked,
    form: Form,
) -> Vec<Older> {
    let mut out = Vec::new();
    for (channel, point) in asked {
        if vouches(channel, *point) {
            continue;
        }
        let older = match *point {
            Point::After(id) => read(link, source, channel, id, form).await,
            Point::Last => latest(link, source, channel, form).await,
        };
        if let Ok(older) = older {
            out.push(older);
        }
    }
    out
}

/// `XRANGE channel id + COUNT max+2`: the entry `id` itself, when Redis
/// still holds it, proves that nothing after it was trimmed; one more than
/// the bound after it shows that the bound cut the replay short.
async fn read(
    link: &Link,
    source: &Source,
    channel: &Bytes,
    id: Id,
    form: Form,
) -> Result<Older, String> {
    let start = id.to_string();
    let count = (source.settings.max_replay + 2).to_string();
    let cmd = command(&[
        b"XRANGE",
        channel,
        start.as_bytes(),
        b"+",
        b"COUNT",
        count.as_bytes(),
    ]);
    let frame = ask(link, source, &cmd).await?;
    let mut entries = stream_entries::range(frame, source.settings.field.as_bytes())?;
    let linked = entries.first().is_some_and(|e| e.id == id);
    if linked {
        entries.remove(0);
    }
    let whole = linked && entries.len() <= source.settings.max_replay;
    entries.truncate(source.settings.max_replay);
    let mut encoder = source.encoder.lock().map_err(|_| "poisoned")?.clone();
    let (mut last, mut frames) = (id, Vec::with_capacity(entries.len()));
    for e in entries {
        let stamp = Stamp {
            id: e.id,
            prev: Some(last),
        };
        last = e.id;
        let Some(payload) = e.payload else { continue };
        if let Ok(m) = encoder.encode_stamped(channel, &payload, Some(stamp)) {
            frames.extend(m.form(form).cloned());
        }
    }
    Ok(Older {
        channel: channel.clone(),
        replay: Replay {
            frames,
            recovered: whole,
        },
        last,
    })
}

/// `XREVRANGE channel + - COUNT 1`: the newest entry, for `since=last` on
/// a relay that holds nothing of the channel yet.
async fn latest(
    link: &Link,
    source: &Source,
    channel: &Bytes,
    form: Form,
) -> Result<Older, String> {
    let cmd = command(&[b"XREVRANGE", channel, b"+", b"-", b"COUNT", b"1"]);
    let frame = ask(link, source, &cmd).await?;
    let entries = stream_entries::range(frame, source.settings.field.as_bytes())?;
    let Some(newest) = entries.into_iter().next() else {
        return Ok(Older {
            channel: channel.clone(),
            replay: Replay::default(),
            last: Id::default(),
        });
    };
    let mut encoder = source.encoder.lock().map_err(|_| "poisoned")?.clone();
    let stamp = Stamp {
        id: newest.id,
        prev: None,
    };
    let frames = newest
        .payload
        .and_then(|p| encoder.encode_stamped(channel, &p, Some(stamp)).ok())
        .and_then(|m| m.form(form).cloned())
        .into_iter()
        .collect();
    Ok(Older {
        channel: channel.clone(),
        replay: Replay {
            frames,
            recovered: true,
        },
        last: newest.id,
    })
}

/// One request on the worker's connection (made, or made again, as
/// needed; under `-rs-cluster` moved to the node a `MOVED` answer names).
async fn ask(link: &Link, source: &Source, cmd: &[u8]) -> Result<BytesFrame, String> {
    let mut guard = link.0.lock().await;
    let mut node: Option<(String, u16)> = None;
    for _ in 0..4 {
        if guard.is_none() {
            let connecting = match &node {
                Some((host, port)) => source.target.connect_to(host, *port).await,
                None => source.target.connect().await,
            };
            let sock = connecting.map_err(|e| format!("{e:?}"))?;
            *guard = Some((sock, BytesMut::new()));
        }
        let (sock, buf) = guard.as_mut().expect("connected");
        match exchange(sock, buf, cmd, source.max_reply).await {
            Some(BytesFrame::Error(e)) => match moved_to(&e) {
                Some(owner) => {
                    node = Some(owner);
                    *guard = None;
                }
                None => return Err(format!("Redis answered: {e}")),
            },
            Some(frame) => return Ok(frame),
            None => *guard = None,
        }
    }
    Err("Redis did not answer the XRANGE".into())
}

/// Sends `cmd` and reads the answer; `None` when the connection failed.
async fn exchange(
    sock: &mut RedisStream,
    buf: &mut BytesMut,
    cmd: &[u8],
    cap: usize,
) -> Option<BytesFrame> {
    sock.write_all(cmd).await.ok()?;
    sock.flush().await.ok()?;
    timeout(ANSWER, reply::read_capped(sock, buf, cap))
        .await
        .ok()?
        .ok()
}
