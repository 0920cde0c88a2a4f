//! Redis Sentinel (`-rs-sentinel`): which server is the primary of the
//! master name now, asked before every connection, and a watch of the
//! Sentinels' `+switch-master` announcements, so that a failover moves the
//! subscriber to the new primary at once rather than when the old one
//! fails.

use super::backoff::Backoff;
use super::resp::write::command;
use super::resp::{reply, Item, PushReader};
use crate::ops::config::Sentinel;
use bytes::{Buf, BytesMut};
use redis_protocol::resp2::types::BytesFrame;
use slog::{debug, info, Logger};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::timeout;

const TIMEOUT: Duration = Duration::from_secs(3);

/// Why the Sentinels could not say.
#[derive(Debug)]
pub enum Unknown {
    /// Network trouble, or no Sentinel knows the master yet: try again.
    Io(String),
    /// A Sentinel refused our password: a configuration error.
    Refused(String),
}

/// The primary's address, from the first Sentinel that knows it.
pub async fn primary(s: &Sentinel) -> Result<(String, u16), Unknown> {
    let mut last = String::from("no Sentinel answered");
    for (host, port) in &s.addrs {
        match ask(s, host, *port).await {
            Ok(Some(addr)) => return Ok(addr),
            Ok(None) => last = format!("Sentinel {host}:{port} knows no master {:?}", s.master),
            Err(Unknown::Refused(why)) => return Err(Unknown::Refused(why)),
            Err(Unknown::Io(why)) => last = format!("Sentinel {host}:{port}: {why}"),
        }
    }
    Err(Unknown::Io(last))
}

/// `SENTINEL get-master-addr-by-name` on one Sentinel.
async fn ask(s: &Sentinel, host: &str, port: u16) -> Result<Option<(String, u16)>, Unknown> {
    let mut tcp = dial(s, host, port).await?;
    let cmd = command(&[b"SENTINEL", b"get-master-addr-by-name", s.master.as_bytes()]);
    let answer = exchange(&mut tcp, &cmd).await?;
    match answer {
        BytesFrame::Array(items) => match (items.first(), items.get(1)) {
            (Some(BytesFrame::BulkString(h)), Some(BytesFrame::BulkString(p))) => {
                let port = std::str::from_utf8(p).ok().and_then(|p| p.parse().ok());
                let host = String::from_utf8_lossy(h).into_owned();
                Ok(port.map(|p| (host, p)))
            }
            _ => Ok(None),
        },
        BytesFrame::Null => Ok(None),
        BytesFrame::Error(e) => Err(Unknown::Io(e.to_string())),
        _ => Ok(None),
    }
}

/// TCP to a Sentinel, with AUTH when it has a password.
async fn dial(s: &Sentinel, host: &str, port: u16) -> Result<TcpStream, Unknown> {
    let mut tcp = timeout(TIMEOUT, TcpStream::connect((host, port)))
        .await
        .map_err(|_| Unknown::Io("timed out".into()))?
        .map_err(|e| Unknown::Io(e.to_string()))?;
    if let Some(p) = &s.password {
        let auth = command(&[b"AUTH", p.expose().as_bytes()]);
        if let BytesFrame::Error(e) = exchange(&mut tcp, &auth).await? {
            return Err(Unknown::Refused(format!("Sentinel {host}:{port}: {e}")));
        }
    }
    Ok(tcp)
}

/// Sends one command and reads its reply.
async fn exchange(tcp: &mut TcpStream, cmd: &[u8]) -> Result<BytesFrame, Unknown> {
    let io = |e: std::io::Error| Unknown::Io(e.to_string());
    tcp.write_all(cmd).await.map_err(io)?;
    let mut buf = BytesMut::with_capacity(512);
    timeout(TIMEOUT, reply::read(tcp, &mut buf))
        .await
        .map_err(|_| Unknown::Io("no answer".into()))?
        .map_err(|e| Unknown::Io(e.to_string()))
}

/// Subscribes to `+switch-master` on one Sentinel after another, for as
/// long as the relay runs, and bumps `switched` whenever the master name
/// gets a new primary.
pub async fn watch_switches(s: Sentinel, switched: Arc<watch::Sender<u64>>, log: Logger) {
    let mut backoff = Backoff::new();
    for (host, port) in s.addrs.iter().cycle() {
        let why = match follow(&s, host, *port, &switched, &log, &mut backoff).await {
            Ok(()) => continue,
            Err(why) => why,
        };
        debug!(
            log,
            "[redis] Sentinel {host}:{port}: {why}; trying the next"
        );
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// One Sentinel's announcements, until its connection fails.
async fn follow(
    s: &Sentinel,
    host: &str,
    port: u16,
    switched: &watch::Sender<u64>,
    log: &Logger,
    backoff: &mut Backoff,
) -> Result<(), String> {
    let mut tcp = dial(s, host, port).await.map_err(|e| format!("{e:?}"))?;
    tcp.write_all(&command(&[b"SUBSCRIBE", b"+switch-master"]))
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = BytesMut::with_capacity(4096);
    let mut reader = PushReader::new(64 * 1024);
    let prefix = format!("{} ", s.master);
    loop {
        if tcp.read_buf(&mut buf).await.map_err(|e| e.to_string())? == 0 {
            return Err("closed".into());
        }
        backoff.reset();
        while let Some(item) = reader.next(&mut buf).map_err(|e| e.0)? {
            if let Item::Message {
                payload, consumed, ..
            } = item
            {
                let text = String::from_utf8_lossy(&buf[payload]).into_owned();
                buf.advance(consumed);
                if text.starts_with(&prefix) {
                    info!(log, "[redis] Sentinel {host}:{port}: +switch-master {text}");
                    switched.send_modify(|n| *n += 1);
                }
            }
        }
    }
}
