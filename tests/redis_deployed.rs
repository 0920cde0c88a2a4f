//! Redis as deployed: passwords, ACL users, TLS with a private CA and
//! client certificates. Secrets never reach logs.

mod common;

use common::certs::Pki;
use common::redis::{free_port, RedisServer};
use common::relay::{self, next_data, Relay, BIN};
use std::process::Command;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

const T: Duration = Duration::from_secs(20);
const ADMIN: &str = "admin-pw-1";

/// A Redis with a default password and two ACL users: `relay` may use the
/// `news*` channels, `blind` no channel at all.
fn redis_with_acl() -> RedisServer {
    let redis = RedisServer::start_with(&["--requirepass", ADMIN]);
    admin(
        &redis,
        &[
            "ACL",
            "SETUSER",
            "relay",
            "on",
            ">relay-pw-2",
            "resetchannels",
            "&news*",
            "+subscribe",
            "+psubscribe",
            "+ping",
        ],
    );
    admin(
        &redis,
        &[
            "ACL",
            "SETUSER",
            "blind",
            "on",
            ">blind-pw-3",
            "resetchannels",
            "+subscribe",
            "+ping",
        ],
    );
    redis
}

fn admin(redis: &RedisServer, args: &[&str]) -> String {
    let mut all = vec!["-a", ADMIN, "--no-auth-warning"];
    all.extend_from_slice(args);
    redis.cli(&all)
}

fn no_secret_in(r: &Relay, secret: &str) {
    for line in r.stdout.all().iter().chain(r.stderr.all().iter()) {
        assert!(!line.contains(secret), "secret in the log: {line}");
    }
}

#[tokio::test]
async fn acl_user_from_the_url_and_password_from_the_environment() {
    let redis = redis_with_acl();
    let url = format!(
        "-rs-url=redis://relay:relay-pw-2@127.0.0.1:{}",
        redis.port()
    );
    let r = Relay::start(&["-ws-insecure", &url, "-rs-channel=news"]);
    r.wait_subscribed(1);
    let mut ws = relay::connect(&r.url("/"), None).await.unwrap();
    admin(&redis, &["PUBLISH", "news", "via url"]);
    assert_eq!(next_data(&mut ws, T).await, Message::text("via url"));
    no_secret_in(&r, "relay-pw-2");
    let config = r.stdout.wait_for("[init] config:", T).unwrap();
    assert!(
        config.contains("redis=redis://relay:***@127.0.0.1:"),
        "{config}"
    );

    let mut cmd = Command::new(BIN);
    cmd.args([
        "-ws-port=0",
        "-ws-insecure",
        "-rs-user=relay",
        "-rs-channel=news.x",
    ])
    .arg(format!("-rs-port={}", redis.port()))
    .env("PUBSOCKETD_RS_PASSWORD", "relay-pw-2");
    let r2 = Relay::spawn(cmd);
    r2.wait_subscribed(1);
    let mut ws2 = relay::connect(&r2.url("/"), None).await.unwrap();
    admin(&redis, &["PUBLISH", "news.x", "via env"]);
    assert_eq!(next_data(&mut ws2, T).await, Message::text("via env"));
    no_secret_in(&r2, "relay-pw-2");
}

/// RFC 3986 userinfo: `+` is a plus sign (not a space, as in a query
/// string) and `%XX` a byte, so a password with reserved characters works
/// when written percent-encoded where RFC 3986 requires it.
#[tokio::test]
async fn a_url_password_with_reserved_characters() {
    let password = "a+b/c@d:e%f";
    let redis = RedisServer::start_with(&["--requirepass", password]);
    let url = format!(
        "-rs-url=redis://:a+b%2Fc%40d:e%25f@127.0.0.1:{}",
        redis.port()
    );
    let r = Relay::start(&["-ws-insecure", &url, "-rs-channel=news"]);
    r.wait_subscribed(1);
    let mut ws = relay::connect(&r.url("/"), None).await.unwrap();
    let sent = redis.cli(&[
        "-a",
        password,
        "--no-auth-warning",
        "PUBLISH",
        "news",
        "plus",
    ]);
    assert_eq!(sent.trim(), "1");
    assert_eq!(next_data(&mut ws, T).await, Message::text("plus"));
    no_secret_in(&r, password);
    no_secret_in(&r, "a+b%2Fc");
}

#[test]
fn refused_credentials_or_channels_are_fatal_at_start() {
    let redis = redis_with_acl();
    let port = redis.port().to_string();
    for (args, want) in [
        (
            vec!["-rs-user=relay", "-rs-password=wrong-pw-4"],
            "WRONGPASS",
        ),
        (vec!["-rs-user=blind", "-rs-password=blind-pw-3"], "NOPERM"),
        (vec![], "NOAUTH"),
    ] {
        let out = Command::new(BIN)
            .args(["-ws-port=0", "-ws-insecure", "-rs-port", &port])
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("Redis refused the relay at start") && err.contains(want),
            "{args:?}: {err}"
        );
        assert!(
            !err.contains("wrong-pw-4")
                && !String::from_utf8_lossy(&out.stdout).contains("wrong-pw-4")
        );
    }
}

#[tokio::test]
async fn credentials_revoked_later_are_retried_not_fatal() {
    let redis = redis_with_acl();
    let url = format!(
        "-rs-url=redis://relay:relay-pw-2@127.0.0.1:{}",
        redis.port()
    );
    let r = Relay::start(&["-ws-insecure", &url, "-rs-channel=news"]);
    r.wait_subscribed(1);
    let mut ws = relay::connect(&r.url("/"), None).await.unwrap();
    admin(
        &redis,
        &["ACL", "SETUSER", "relay", "resetpass", ">rotated-pw-5"],
    );
    admin(&redis, &["CLIENT", "KILL", "USER", "relay"]);
    let line = r
        .stdout
        .wait_for("refused us: WRONGPASS", T)
        .expect("refusal logged");
    assert!(line.contains("reconnecting"), "{line}");
    assert!(r.child.id() > 0);
    admin(
        &redis,
        &["ACL", "SETUSER", "relay", "resetpass", ">relay-pw-2"],
    );
    r.wait_subscribed(2);
    admin(&redis, &["PUBLISH", "news", "back"]);
    assert_eq!(next_data(&mut ws, T).await, Message::text("back"));
}

#[tokio::test]
async fn rediss_with_a_private_ca_and_a_client_certificate() {
    let (pki, ca) = Pki::new();
    let server = pki.leaf(&ca, "redis", &["localhost", "127.0.0.1"]);
    let client = pki.leaf(&ca, "client", &["pubsocketd"]);
    let tls_port = free_port();
    let (cert, key, ca_file) = (
        server.cert.display().to_string(),
        server.key.display().to_string(),
        pki.ca.display().to_string(),
    );
    let tport = tls_port.to_string();
    let redis = RedisServer::start_with(&[
        "--tls-port",
        &tport,
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
        "--tls-ca-cert-file",
        &ca_file,
        "--tls-auth-clients",
        "yes",
    ]);
    let r = Relay::start(&[
        "-ws-insecure",
        &format!("-rs-url=rediss://localhost:{tls_port}"),
        &format!("-rs-ca-cert={ca_file}"),
        &format!("-rs-client-cert={}", client.cert.display()),
        &format!("-rs-client-key={}", client.key.display()),
    ]);
    r.wait_subscribed(1);
    assert!(r
        .stdout
        .wait_for(&format!("on rediss://localhost:{tls_port}"), T)
        .is_some());
    let mut ws = relay::connect(&r.url("/"), None).await.unwrap();
    // Published on the plain port of the same server.
    redis.publish("pubsocketd", b"over TLS");
    assert_eq!(next_data(&mut ws, T).await, Message::text("over TLS"));

    // Without the client certificate the TLS handshake fails: retried, and
    // logged, but not fatal (it is a network-level refusal).
    let r2 = Relay::start(&[
        "-ws-insecure",
        &format!("-rs-url=rediss://localhost:{tls_port}"),
        &format!("-rs-ca-cert={ca_file}"),
    ]);
    assert!(r2.stdout.wait_for("[redis]", T).is_some());
    // A bad CA file is a start-up error naming it.
    let out = Command::new(BIN)
        .args([
            "-ws-port=0",
            "-ws-insecure",
            "-rs-url=rediss://localhost:1",
            "-rs-ca-cert=/nonexistent/ca.pem",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("cannot read -rs-ca-cert /nonexistent/ca.pem"));
}

#[test]
fn secrets_stay_out_of_help() {
    let out = Command::new(BIN)
        .arg("--help")
        .env("PUBSOCKETD_RS_PASSWORD", "env-secret-6")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--rs-password") && help.contains("PUBSOCKETD_RS_PASSWORD"));
    assert!(!help.contains("env-secret-6"));
}
