//! Reaching Redis as it is deployed: plain TCP or TLS (`rediss://`, with a
//! private CA and client certificates), then AUTH with a password or an
//! ACL user. Used by the subscriber, the cluster subscriber and the HTTP
//! publish endpoint.

use super::resp::reply;
use super::resp::write::command;
use super::sentinel::{self, Unknown};
use crate::ops::config::{RedisSettings, Sentinel};
use bytes::BytesMut;
use redis_protocol::resp2::types::BytesFrame;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::io::BufReader;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::timeout;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a connection could not be made.
#[derive(Debug, PartialEq, Eq)]
pub enum ConnectError {
    /// Network or TLS trouble: try again later.
    Io(String),
    /// Redis refused the credentials: a configuration error.
    Refused(String),
}

/// Where Redis is and how to talk to it.
#[derive(Clone)]
pub struct Target {
    settings: RedisSettings,
    tls: Option<TlsConnector>,
    /// Under `-rs-sentinel`: how many times the Sentinels announced a new
    /// primary, shared by every clone: the subscriber watches it, and a
    /// kept connection (the publisher's) learns it points at the old one.
    /// Without Sentinels it never changes.
    primaries: Arc<watch::Sender<u64>>,
}

/// A connection to Redis, plain or TLS.
pub enum RedisStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Target {
    /// Loads the TLS material up front: a bad file is a start-up error that
    /// names it.
    pub fn new(settings: &RedisSettings) -> Result<Target, String> {
        let tls = settings.tls.then(|| tls_connector(settings)).transpose()?;
        Ok(Target {
            settings: settings.clone(),
            tls,
            primaries: Arc::new(watch::channel(0).0),
        })
    }

    /// Whether this is a Redis Cluster (sharded pub/sub).
    pub fn cluster(&self) -> bool {
        self.settings.cluster
    }

    /// The address for logs, without the password.
    pub fn describe(&self) -> String {
        self.settings.describe()
    }

    /// Counts the primaries announced by the Sentinels (see `primaries`).
    pub fn primaries(&self) -> &Arc<watch::Sender<u64>> {
        &self.primaries
    }

    /// `-rs-sentinel`, when the primary is found through Sentinels.
    pub fn sentinel(&self) -> Option<&Sentinel> {
        self.settings.sentinel.as_ref()
    }

    /// Connects to the configured host, or to the primary the Sentinels
    /// name now, and authenticates.
    pub async fn connect(&self) -> Result<RedisStream, ConnectError> {
        let Some(s) = &self.settings.sentinel else {
            return self
                .connect_to(&self.settings.host, self.settings.port)
                .await;
        };
        let (host, port) = sentinel::primary(s).await.map_err(|e| match e {
            Unknown::Io(why) => ConnectError::Io(why),
            Unknown::Refused(why) => ConnectError::Refused(why),
        })?;
        let mut stream = self.connect_to(&host, port).await?;
        self.check_primary(&mut stream, &host, port).await?;
        Ok(stream)
    }

    /// `ROLE`: the server the Sentinels named is still the primary (during
    /// a failover it may already be a replica).
    async fn check_primary(
        &self,
        stream: &mut RedisStream,
        host: &str,
        port: u16,
    ) -> Result<(), ConnectError> {
        let io = |e: std::io::Error| ConnectError::Io(e.to_string());
        stream.write_all(&command(&[b"ROLE"])).await.map_err(io)?;
        stream.flush().await.map_err(io)?;
        let mut buf = BytesMut::with_capacity(256);
        let answer = timeout(CONNECT_TIMEOUT, reply::read(stream, &mut buf))
            .await
            .map_err(|_| ConnectError::Io("no answer to ROLE".into()))?
            .map_err(|e| ConnectError::Io(e.to_string()))?;
        match answer {
            BytesFrame::Array(items) if matches!(items.first(), Some(BytesFrame::BulkString(r)) if r.as_ref() == b"master") => {
                Ok(())
            }
            _ => Err(ConnectError::Io(format!(
                "{host}:{port}, named by the Sentinels, is not a primary (a failover in progress?)"
            ))),
        }
    }

    /// Connects to another node with the same settings (Redis Cluster).
    pub async fn connect_to(&self, host: &str, port: u16) -> Result<RedisStream, ConnectError> {
        let io = |e: std::io::Error| ConnectError::Io(e.to_string());
        let tcp = timeout(CONNECT_TIMEOUT, TcpStream::connect((host, port)))
            .await
            .map_err(|_| ConnectError::Io("timed out".into()))?
            .map_err(io)?;
        let _ = tcp.set_nodelay(true);
        let mut stream = match &self.tls {
            None => RedisStream::Plain(tcp),
            Some(connector) => {
                let name = ServerName::try_from(host.to_string()).map_err(|e| {
                    ConnectError::Io(format!("invalid TLS server name {host:?}: {e}"))
                })?;
                let tls = timeout(CONNECT_TIMEOUT, connector.connect(name, tcp))
                    .await
                    .map_err(|_| ConnectError::Io("TLS handshake timed out".into()))?
                    .map_err(|e| ConnectError::Io(format!("TLS handshake failed: {e}")))?;
                RedisStream::Tls(Box::new(tls))
            }
        };
        self.auth(&mut stream).await?;
        Ok(stream)
    }

    /// AUTH [user] password, when a password is configured.
    async fn auth(&self, stream: &mut RedisStream) -> Result<(), ConnectError> {
        let Some(password) = &self.settings.password else {
            return Ok(());
        };
        let mut parts: Vec<&[u8]> = vec![b"AUTH"];
        if let Some(user) = &self.settings.user {
            parts.push(user.as_bytes());
        }
        parts.push(password.expose().as_bytes());
        let io = |e: std::io::Error| ConnectError::Io(e.to_string());
        stream.write_all(&command(&parts)).await.map_err(io)?;
        stream.flush().await.map_err(io)?;
        let mut buf = BytesMut::with_capacity(256);
        let answer = timeout(CONNECT_TIMEOUT, reply::read(stream, &mut buf))
            .await
            .map_err(|_| ConnectError::Io("no answer to AUTH".into()))?
            .map_err(|e| ConnectError::Io(e.to_string()))?;
        match answer {
            BytesFrame::SimpleString(_) => Ok(()),
            BytesFrame::Error(e) => Err(ConnectError::Refused(e.to_string())),
            other => Err(ConnectError::Io(format!(
                "unexpected answer to AUTH: {other:?}"
            ))),
        }
    }
}

/// The rustls client for `rediss://`: the CA of `-rs-ca-cert` (else the
/// web's roots) and the client certificate when given.
fn tls_connector(s: &RedisSettings) -> Result<TlsConnector, String> {
    let mut roots = rustls::RootCertStore::empty();
    match &s.ca_cert {
        Some(path) => {
            for cert in read_certs("rs-ca-cert", path)? {
                roots.add(cert).map_err(|e| {
                    format!(
                        "unusable certificate in -rs-ca-cert {}: {e}",
                        path.display()
                    )
                })?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up failed: {e}"))?
        .with_root_certificates(roots);
    let config = match &s.client_cert {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(read_certs("rs-client-cert", cert)?, read_key(key)?)
            .map_err(|e| {
                format!(
                    "-rs-client-cert {} and -rs-client-key do not make a pair: {e}",
                    cert.display()
                )
            })?,
    };
    Ok(TlsConnector::from(Arc::new(config)))
}

fn open(flag: &str, path: &Path) -> Result<BufReader<std::fs::File>, String> {
    std::fs::File::open(path)
        .map(BufReader::new)
        .map_err(|e| format!("cannot read -{flag} {}: {e}", path.display()))
}

fn read_certs(flag: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = rustls_pemfile::certs(&mut open(flag, path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("invalid PEM in -{flag} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("no PEM certificate in -{flag} {}", path.display()));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    rustls_pemfile::private_key(&mut open("rs-client-key", path)?)
        .map_err(|e| format!("invalid PEM in -rs-client-key {}: {e}", path.display()))?
        .ok_or_else(|| format!("no PEM private key in -rs-client-key {}", path.display()))
}

impl AsyncRead for RedisStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            RedisStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            RedisStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for RedisStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            RedisStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            RedisStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            RedisStream::Plain(s) => Pin::new(s).poll_flush(cx),
            RedisStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            RedisStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            RedisStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
