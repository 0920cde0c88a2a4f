//! `pubsocketd-receiver`: connect to a WebSocket and print what arrives.
//!
//! A debugging companion of pubsocketd, compatible with go-pubsocketd's tool:
//! it dials `-url` (sending `-origin` as the Origin header when given) and
//! prints every message on its own line of stdout, exactly as received.
//!
//! tokio-tungstenite is built without its TLS features, so for `wss://` the
//! TLS layer is set up here with rustls (ring provider): the web PKI roots
//! plus the certificates of `-ca-cert`, for servers with a private CA or a
//! self-signed certificate.

use std::fs::File;
use std::io::{self, BufReader, Write};
use std::process::exit;
use std::sync::Arc;
use std::time::Duration;

use argh::FromArgs;
use futures_util::StreamExt;
use pubsocketd::ops::flags::{parse_or_exit, FlagSpec};
use rustls::crypto::ring;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{client_async_with_config, WebSocketStream};

const PROG: &str = "pubsocketd-receiver";

/// Largest message (and frame) accepted: pubsocketd relays whole Redis
/// payloads, which may be large, but a limit keeps memory bounded.
const MAX_MESSAGE: usize = 64 << 20;

/// Connect to a WebSocket server (such as pubsocketd) and print every
/// message received, one per line.
#[derive(FromArgs)]
struct Args {
    /// the websocket URL to connect to, ws:// or wss:// (default ws://127.0.0.1:8080)
    #[argh(option, default = "String::from(\"ws://127.0.0.1:8080\")")]
    url: String,
    /// the Origin header to send (default none: no Origin header)
    #[argh(option)]
    origin: Option<String>,
    /// PEM file of extra trusted root certificates for wss:// (default none)
    #[argh(option)]
    ca_cert: Option<String>,
    /// print the version and exit
    #[argh(switch)]
    #[allow(dead_code)] // handled by parse_or_exit; declared so argh knows it
    version: bool,
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Args = parse_or_exit(
        &FlagSpec {
            values: &["url", "origin", "ca-cert"],
            switches: &[],
            on_by_default: &[],
        },
        env!("CARGO_PKG_VERSION"),
    );
    if let Err(line) = run(&args).await {
        eprintln!("{PROG}: {line}");
        exit(1);
    }
}

/// Where to connect, read from the URL.
struct Target {
    host: String,
    port: u16,
    tls: bool,
}

/// Dials the server (with TLS for wss://) and prints messages until it closes.
async fn run(args: &Args) -> Result<(), String> {
    let url = args.url.as_str();
    let request = request(url, args.origin.as_deref())?;
    let target = target(&request)?;
    let tls = match target.tls {
        true => Some(tls_connector(args.ca_cert.as_deref())?),
        false => None,
    };
    eprintln!("dialing {url}...");
    let tcp = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|e| format!("cannot connect to {url}: {}", io_text(&e)))?;
    let _ = tcp.set_nodelay(true);
    match tls {
        None => receive(request, tcp, url).await,
        Some(tls) => {
            let name = ServerName::try_from(target.host.clone())
                .map_err(|e| format!("bad host name in {url}: {e}"))?;
            let stream = tls
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS handshake with {url} failed: {}", io_text(&e)))?;
            receive(request, stream, url).await
        }
    }
}

/// The handshake request for `url`, with an Origin header when asked for.
fn request(url: &str, origin: Option<&str>) -> Result<Request, String> {
    let mut request = url
        .into_client_request()
        .map_err(|e| format!("bad -url {url:?}: {e}"))?;
    if let Some(origin) = origin {
        let value =
            HeaderValue::from_str(origin).map_err(|e| format!("bad -origin {origin:?}: {e}"))?;
        request.headers_mut().insert("Origin", value);
    }
    Ok(request)
}

/// Host, port and scheme of the request's URL.
fn target(request: &Request) -> Result<Target, String> {
    let uri = request.uri();
    let tls = match uri.scheme_str() {
        Some("ws") => false,
        Some("wss") => true,
        other => {
            let scheme = other.unwrap_or("");
            return Err(format!(
                "unsupported URL scheme {scheme:?} in {uri} (use ws:// or wss://)"
            ));
        }
    };
    let host = uri.host().ok_or_else(|| format!("no host in URL {uri}"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']'); // IPv6
    Ok(Target {
        host: host.to_string(),
        port: uri.port_u16().unwrap_or(if tls { 443 } else { 80 }),
        tls,
    })
}

/// A TLS client trusting the web PKI roots and the certificates in `ca_cert`.
fn tls_connector(ca_cert: Option<&str>) -> Result<TlsConnector, String> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = ca_cert {
        for cert in read_certs(path)? {
            roots
                .add(cert)
                .map_err(|e| format!("bad certificate in -ca-cert {path}: {e}"))?;
        }
    }
    let config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// Every certificate of the PEM file at `path` (at least one).
fn read_certs(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let file =
        File::open(path).map_err(|e| format!("cannot open -ca-cert {path}: {}", io_text(&e)))?;
    let certs = rustls_pemfile::certs(&mut BufReader::new(file))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot read -ca-cert {path}: {}", io_text(&e)))?;
    if certs.is_empty() {
        return Err(format!("no PEM certificate in -ca-cert {path}"));
    }
    Ok(certs)
}

/// Runs the WebSocket handshake on `stream`, then prints every message.
async fn receive<S>(request: Request, stream: S, url: &str) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    let (mut ws, _) = client_async_with_config(request, stream, Some(config))
        .await
        .map_err(|e| handshake_error(url, e))?;
    eprintln!("connected to {url} and ready to receive new messages");
    // Reading also answers pings: tungstenite queues the pong and the next
    // read flushes it.
    while let Some(message) = ws.next().await {
        let printed = match message.map_err(|e| format!("connection to {url} failed: {e}"))? {
            Message::Text(text) => print_line(text.as_bytes()),
            Message::Binary(data) => print_line(&data),
            Message::Close(frame) => {
                eprintln!("connection closed by server ({})", describe(frame.as_ref()));
                finish_close(ws).await;
                return Ok(());
            }
            _ => Ok(()),
        };
        match printed {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(format!("writing to stdout: {}", io_text(&e))),
            Ok(()) => {}
        }
    }
    Err(format!("connection to {url} ended without a close frame"))
}

/// One message on stdout: its bytes, a newline, then a flush.
fn print_line(data: &[u8]) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(data)?;
    out.write_all(b"\n")?;
    out.flush()
}

/// Lets tungstenite send its close reply, waiting at most a second for the
/// server to end the connection.
async fn finish_close<S>(mut ws: WebSocketStream<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let drain = async { while ws.next().await.is_some() {} };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
}

/// "code N reason" for a close frame (1005, "no status", when it has none).
fn describe(frame: Option<&CloseFrame>) -> String {
    match frame {
        None => "code 1005".to_string(),
        Some(f) if f.reason.is_empty() => format!("code {}", u16::from(f.code)),
        Some(f) => format!("code {} {}", u16::from(f.code), f.reason),
    }
}

/// One line for a failed handshake, naming the HTTP status of a refusal.
fn handshake_error(url: &str, e: WsError) -> String {
    match e {
        WsError::Http(response) => {
            let status = response.status();
            let reason = status.canonical_reason().unwrap_or("");
            format!(
                "handshake refused by {url}: HTTP {} {reason}",
                status.as_u16()
            )
        }
        e => format!("handshake with {url} failed: {e}"),
    }
}

/// An I/O error's text without Rust's " (os error N)" suffix.
fn io_text(e: &io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}
