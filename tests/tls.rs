//! wss:// end to end with rustls on both sides (a self-signed certificate
//! made for the test), and TLS faults that cost one connection only.

mod common;

use common::redis::RedisServer;
use common::relay::{next_data, Relay};
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

struct Certs {
    _dir: tempfile::TempDir,
    cert: String,
    key: String,
    pem: String,
}

fn certs() -> Certs {
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    Certs {
        cert: cert.display().to_string(),
        key: key.display().to_string(),
        pem: ck.cert.pem(),
        _dir: dir,
    }
}

async fn wss_connect(
    port: u16,
    pem: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    let url = format!("wss://localhost:{port}/");
    tokio_tungstenite::client_async(url, tls).await.unwrap().0
}

#[tokio::test]
async fn wss_relays_messages() {
    let c = certs();
    let redis = RedisServer::start();
    let r = Relay::insecure(
        redis.port(),
        &[
            &format!("-tls-cert={}", c.cert),
            &format!("--tls-key={}", c.key),
        ],
    );
    assert!(r
        .stdout
        .wait_for("serving wss://", Duration::from_secs(5))
        .is_some());
    r.wait_subscribed(1);
    let mut a = wss_connect(r.port, &c.pem).await;
    // Garbage instead of a ClientHello, and a client that stops in the
    // middle of the TLS handshake, cost one connection each and no more.
    let mut junk = std::net::TcpStream::connect(r.addr()).unwrap();
    junk.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let _stuck = std::net::TcpStream::connect(r.addr()).unwrap();
    let mut b = wss_connect(r.port, &c.pem).await;
    let big = "z".repeat(1 << 20);
    redis.publish("pubsocketd", b"{\"secure\":true}");
    redis.publish("pubsocketd", big.as_bytes());
    for ws in [&mut a, &mut b] {
        assert_eq!(
            next_data(ws, Duration::from_secs(10)).await,
            Message::text("{\"secure\":true}")
        );
        assert_eq!(
            next_data(ws, Duration::from_secs(10)).await,
            Message::text(big.clone())
        );
    }
}
