//! Publishing to Redis through one kept-open connection: what `POST
//! /publish` does when the relay reads from Redis, so that every relay
//! subscribed there receives the message. With `-rs-cluster` it is
//! SPUBLISH, sent on to the node that owns the channel when the one asked
//! answers `MOVED`. Under `-rs-mode=stream` it is
//! `XADD <key> MAXLEN ~ <n> * <field> <payload>`.

use super::connect::{ConnectError, RedisStream, Target};
use super::resp::reply::{self, ReplyError};
use super::resp::write::command;
use crate::ops::config::StreamSettings;
use bytes::BytesMut;
use redis_protocol::resp2::types::BytesFrame;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;
use tokio::time::timeout;

/// Time for Redis to answer a PUBLISH.
const REDIS_TIMEOUT: Duration = Duration::from_secs(5);

/// Publishes to the configured Redis; requests take turns on one
/// connection, made on first use.
pub struct Publisher {
    target: Target,
    conn: Mutex<Option<RedisConn>>,
    stream: Option<Box<StreamSettings>>,
}

/// What Redis said to a publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    /// PUBLISH: how many subscribers received it.
    Receivers(i64),
    /// XADD: the new entry's ID.
    Id(String),
}

impl Publisher {
    pub fn new(target: Target, stream: Option<StreamSettings>) -> Publisher {
        Publisher {
            target,
            conn: Mutex::new(None),
            stream: stream.map(Box::new),
        }
    }

    /// PUBLISH (or SPUBLISH, or XADD): Redis' answer, or why not.
    pub async fn publish(&self, channel: &[u8], payload: &[u8]) -> Result<Published, String> {
        let cmd = match &self.stream {
            Some(s) => {
                let maxlen = s.maxlen.to_string();
                let field = s.field.as_bytes();
                command(&[
                    b"XADD",
                    channel,
                    b"MAXLEN",
                    b"~",
                    maxlen.as_bytes(),
                    b"*",
                    field,
                    payload,
                ])
            }
            None if self.target.cluster() => command(&[b"SPUBLISH", channel, payload]),
            None => command(&[b"PUBLISH", channel, payload]),
        };
        match publish_redis(&self.target, &self.conn, &cmd).await? {
            BytesFrame::Integer(n) => Ok(Published::Receivers(n)),
            BytesFrame::BulkString(id) => {
                Ok(Published::Id(String::from_utf8_lossy(&id).into_owned()))
            }
            other => Err(format!("unexpected answer from Redis: {other:?}")),
        }
    }
}

/// The kept-open Redis connection of the endpoint.
struct RedisConn {
    stream: RedisStream,
    buf: BytesMut,
    /// The Sentinels' count of primaries when it was made: a connection
    /// from before a failover points at a replica now.
    primary: u64,
}

/// Why a request on a Redis connection failed.
enum RedisFailure {
    /// The connection broke: worth one retry on a fresh one when it was
    /// an old connection (Redis restarted or dropped it while idle).
    Broken(String),
    /// The connection can no longer be trusted (no answer in time, an
    /// unreadable answer): dropped, no retry (the PUBLISH may have been
    /// done).
    Lost(String),
    /// Redis answered with an error; the connection stays.
    Refused(String),
}

/// Most `MOVED` redirects followed for one cluster publish.
const MAX_REDIRECTS: usize = 3;

/// PUBLISH through the shared connection: made on first use, made again
/// (once) when a kept one turns out to be broken.
async fn publish_redis(
    target: &Target,
    conn: &Mutex<Option<RedisConn>>,
    cmd: &[u8],
) -> Result<BytesFrame, String> {
    let mut guard = conn.lock().await;
    let mut node: Option<(String, u16)> = None;
    let mut redirects = 0;
    let primary = *target.primaries().borrow();
    if guard.as_ref().is_some_and(|c| c.primary != primary) {
        *guard = None;
    }
    loop {
        let reused = guard.is_some();
        let c = match guard.as_mut() {
            Some(c) => c,
            None => {
                let connecting = match &node {
                    Some((host, port)) => target.connect_to(host, *port).await,
                    None => target.connect().await,
                };
                let stream = connecting.map_err(|e| match e {
                    ConnectError::Io(why) => {
                        format!("Redis at {} is unreachable: {why}", target.describe())
                    }
                    ConnectError::Refused(why) => {
                        format!("Redis at {} refused the relay: {why}", target.describe())
                    }
                })?;
                guard.insert(RedisConn {
                    stream,
                    buf: BytesMut::with_capacity(256),
                    primary,
                })
            }
        };
        match c.request(cmd).await {
            Ok(n) => return Ok(n),
            Err(RedisFailure::Broken(why)) => {
                *guard = None;
                if !reused {
                    return Err(format!(
                        "connection to Redis at {} lost: {why}",
                        target.describe()
                    ));
                }
            }
            Err(RedisFailure::Lost(why)) => {
                *guard = None;
                return Err(why);
            }
            Err(RedisFailure::Refused(why)) => match moved_to(&why) {
                Some(owner) if redirects < MAX_REDIRECTS => {
                    redirects += 1;
                    node = Some(owner);
                    *guard = None;
                }
                _ => return Err(why),
            },
        }
    }
}

/// The node of a `MOVED <slot> <host>:<port>` answer.
pub(crate) fn moved_to(error: &str) -> Option<(String, u16)> {
    let addr = error.split("MOVED ").nth(1)?.split_whitespace().nth(1)?;
    let (host, port) = addr.rsplit_once(':')?;
    Some((host.to_string(), port.parse().ok()?))
}

impl RedisConn {
    /// Sends one command and reads its reply (an error reply is a refusal).
    async fn request(&mut self, cmd: &[u8]) -> Result<BytesFrame, RedisFailure> {
        let broken = |e: std::io::Error| RedisFailure::Broken(e.to_string());
        self.stream.write_all(cmd).await.map_err(broken)?;
        self.stream.flush().await.map_err(broken)?;
        let frame = timeout(REDIS_TIMEOUT, reply::read(&mut self.stream, &mut self.buf))
            .await
            .map_err(|_| {
                RedisFailure::Lost(format!("no answer from Redis within {REDIS_TIMEOUT:?}"))
            })?
            .map_err(|e| match e {
                ReplyError::Io(_) => RedisFailure::Broken(e.to_string()),
                ReplyError::Malformed(why) => RedisFailure::Lost(why),
            })?;
        match frame {
            BytesFrame::Error(e) => Err(RedisFailure::Refused(format!("Redis answered: {e}"))),
            other => Ok(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moved_answers() {
        assert_eq!(
            moved_to("MOVED 3300 127.0.0.1:7001"),
            Some(("127.0.0.1".to_string(), 7001))
        );
        assert_eq!(
            moved_to("Redis answered: MOVED 1 h:2"),
            Some(("h".to_string(), 2))
        );
        assert_eq!(moved_to("ERR nope"), None);
        assert_eq!(moved_to("MOVED 3300"), None);
    }
}
