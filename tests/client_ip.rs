//! Who the client is (`-ws-trusted-proxies`): `X-Real-IP` and
//! `X-Forwarded-For` are believed only from a trusted proxy and only when
//! they hold an address; the log lines show that address or `-`.

mod common;

use common::redis::{free_port, RedisServer};
use common::relay::{self, raw_exchange, status_of, upgrade_request, Relay, Ws};
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const T: Duration = Duration::from_secs(10);

/// Connects with extra request headers.
async fn connect_with(url: &str, headers: &[(&'static str, &str)]) -> Ws {
    let mut req = url.into_client_request().unwrap();
    for (name, value) in headers {
        req.headers_mut().append(*name, value.parse().unwrap());
    }
    let host = req.uri().authority().unwrap().to_string();
    let tcp = tokio::net::TcpStream::connect(host).await.unwrap();
    tokio_tungstenite::client_async(req, tcp).await.unwrap().0
}

/// The connect line of the client whose local port is `port`.
fn connect_line(r: &Relay, ws: &Ws) -> String {
    let port = ws.get_ref().local_addr().unwrap().port();
    let needle = format!("[127.0.0.1:{port}][connect] OK");
    r.stdout
        .wait_for(&needle, T)
        .unwrap_or_else(|| panic!("no {needle}: {:#?}", r.stdout.all()))
}

#[tokio::test]
async fn a_proxy_on_the_same_host_is_believed_and_nothing_forged_is_logged() {
    let redis = RedisServer::start();
    let r = Relay::insecure(redis.port(), &[]);
    let url = r.url("/");
    for (headers, shown) in [
        (vec![("X-Real-IP", "198.51.100.7")], "[198.51.100.7]"),
        (vec![("X-Real-IP", "1.2.3.4] FORGED [x")], "[-]"),
        (
            vec![("X-Forwarded-For", "6.6.6.6, 198.51.100.8")],
            "[198.51.100.8]",
        ),
        (
            vec![("X-Forwarded-For", "198.51.100.8, 127.0.0.1")],
            "[198.51.100.8]",
        ),
        (vec![("X-Forwarded-For", "unknown")], "[-]"),
        (vec![("X-Real-IP", "2001:db8::7")], "[2001:db8::7]"),
        (vec![], "[-]"),
    ] {
        let ws = connect_with(&url, &headers).await;
        let line = connect_line(&r, &ws);
        assert!(
            line.contains(&format!("{shown}[127.0.0.1:")),
            "{headers:?}: {line}"
        );
        relay::bye(ws).await;
    }
    assert_eq!(r.stdout.count("FORGED"), 0, "{:#?}", r.stdout.all());
    // A refusal names the client the same way.
    let head = upgrade_request("/?channel=secret", "X-Real-IP: 198.51.100.9\r\n");
    assert_eq!(status_of(&raw_exchange(&r.addr(), head.as_bytes())), 404);
    r.stdout
        .wait_for("[198.51.100.9][127.0.0.1:", T)
        .expect("the refusal line");
}

#[tokio::test]
async fn trusting_nobody_ignores_the_headers() {
    let redis = RedisServer::start();
    let r = Relay::insecure(redis.port(), &["-ws-trusted-proxies=none"]);
    let ws = connect_with(&r.url("/"), &[("X-Real-IP", "198.51.100.7")]).await;
    assert!(connect_line(&r, &ws).contains("[-][127.0.0.1:"));
    r.stdout
        .wait_for("ws-trusted-proxies=none", T)
        .expect("the config line");
}

#[test]
fn a_bad_list_is_a_flag_error() {
    let (status, _, err) = relay::run(&[
        "-ws-insecure",
        &format!("-ws-port={}", free_port()),
        "-ws-trusted-proxies=10.0.0.0/33",
    ]);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("-ws-trusted-proxies"), "{err}");
}
