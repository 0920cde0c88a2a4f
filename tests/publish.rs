//! `POST /publish?channel=NAME` (`-publish-addr`): with the embedded broker
//! it feeds this relay's clients; with Redis it PUBLISHes there, so every
//! relay subscribed to that Redis receives it.

mod common;

use common::redis::{free_port, RedisServer};
use common::relay::{self, next_data, raw_exchange, status_of, Relay};
use std::process::Command;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

const T: Duration = Duration::from_secs(5);

/// The publish endpoint's address, from the relay's `[init]` line.
fn publish_addr(r: &Relay) -> String {
    let line = r
        .stdout
        .wait_for("[init] publish endpoint on http://", T)
        .unwrap_or_else(|| panic!("no publish line: {:?}", r.stdout.all()));
    let rest = &line[line.find("http://").unwrap() + 7..];
    rest[..rest.find('/').unwrap()].to_string()
}

/// A POST with `headers` (each ending in CRLF) and `body`, Content-Length
/// included.
fn post(addr: &str, target: &str, headers: &str, body: &str) -> String {
    let request = format!(
        "POST {target} HTTP/1.1\r\nHost: x\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    raw_exchange(addr, request.as_bytes())
}

/// The body of an HTTP response, as JSON.
fn json(response: &str) -> serde_json::Value {
    let body = &response[response.find("\r\n\r\n").expect("a head") + 4..];
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {response:?}"))
}

const AUTH: &str = "Authorization: Bearer tok-2718\r\n";

#[tokio::test]
async fn embedded_publish_reaches_clients_and_refuses_what_it_must() {
    let broker = format!("-broker-port={}", free_port());
    let r = Relay::start(&[
        "-ws-insecure",
        "-broker=embedded",
        &broker,
        "-rs-channel=news,alerts",
        "-rs-max-payload=1KiB",
        "-publish-addr=127.0.0.1:0",
        "-publish-token=tok-2718",
    ]);
    let addr = publish_addr(&r);
    let mut ws = relay::connect(&r.url("/?channel=news"), None)
        .await
        .unwrap();
    // A worker counts a client just after writing its 101: wait until
    // this one is counted (it receives what is published meanwhile).
    post(&addr, "/publish?channel=news", AUTH, "probe");
    assert_eq!(next_data(&mut ws, T).await, Message::text("probe"));

    let ok = post(&addr, "/publish?channel=news", AUTH, "hello world");
    assert_eq!(status_of(&ok), 200, "{ok}");
    assert!(ok.contains("Content-Type: application/json\r\n"), "{ok}");
    assert_eq!(
        json(&ok),
        serde_json::json!({"channel": "news", "delivered": 1})
    );
    assert_eq!(next_data(&mut ws, T).await, Message::text("hello world"));
    // Percent-encoded channel names; the other channel has no client here.
    let alerts = post(&addr, "/publish?x=1&channel=al%65rts", AUTH, "a");
    assert_eq!(
        json(&alerts),
        serde_json::json!({"channel": "alerts", "delivered": 0})
    );

    let refusals: Vec<(u16, String)> = vec![
        (401, post(&addr, "/publish?channel=news", "", "x")),
        (
            401,
            post(
                &addr,
                "/publish?channel=news",
                "Authorization: Basic dG9rLTI3MTg6\r\n",
                "x",
            ),
        ),
        (
            403,
            post(
                &addr,
                "/publish?channel=news",
                "Authorization: Bearer tok-2719\r\n",
                "x",
            ),
        ),
        (404, post(&addr, "/other?channel=news", AUTH, "x")),
        (404, post(&addr, "/publish?channel=sports", AUTH, "x")),
        (
            405,
            raw_exchange(
                &addr,
                format!("GET /publish?channel=news HTTP/1.1\r\nHost: x\r\n{AUTH}\r\n").as_bytes(),
            ),
        ),
        (
            411,
            raw_exchange(
                &addr,
                format!("POST /publish?channel=news HTTP/1.1\r\nHost: x\r\n{AUTH}Transfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n").as_bytes(),
            ),
        ),
        (
            411,
            raw_exchange(
                &addr,
                format!("POST /publish?channel=news HTTP/1.1\r\nHost: x\r\n{AUTH}\r\n").as_bytes(),
            ),
        ),
        // Refused from the head: the 2000 bytes are never sent.
        (
            413,
            raw_exchange(
                &addr,
                format!("POST /publish?channel=news HTTP/1.1\r\nHost: x\r\n{AUTH}Content-Length: 2000\r\n\r\n").as_bytes(),
            ),
        ),
        (400, post(&addr, "/publish", AUTH, "x")),
        (400, post(&addr, "/publish?channel=", AUTH, "x")),
    ];
    for (status, response) in &refusals {
        assert_eq!(status_of(response), *status, "{response}");
        assert!(json(response)["error"].is_string(), "{response}");
    }
    let unauthorized = &refusals[0].1;
    assert!(
        unauthorized.contains("WWW-Authenticate: Bearer\r\n"),
        "{unauthorized}"
    );
    assert!(
        refusals[5].1.contains("Allow: POST\r\n"),
        "{}",
        refusals[5].1
    );
    assert_eq!(
        json(&refusals[4].1),
        serde_json::json!({"error": "channel sports is not relayed here"})
    );
    // None of the refused requests reached the client.
    let last = post(&addr, "/publish?channel=news", AUTH, "last");
    assert_eq!(status_of(&last), 200, "{last}");
    assert_eq!(next_data(&mut ws, T).await, Message::text("last"));
    r.stdout
        .wait_for("refused, 403", T)
        .expect("refusals logged");
    relay::bye(ws).await;
}

#[tokio::test]
async fn redis_mode_publishes_to_every_relay_and_keeps_the_token_secret() {
    const TOKEN: &str = "env-token-5a1b9c";
    let mut redis = RedisServer::start();
    let rs_port = format!("-rs-port={}", redis.port());
    let mut cmd = Command::new(relay::BIN);
    cmd.args([
        "-ws-port=0",
        "-ws-ping-interval=0",
        "-ws-insecure",
        &rs_port,
        "-publish-addr=127.0.0.1:0",
        "-log-level=debug",
    ])
    .env("PUBSOCKETD_PUBLISH_TOKEN", TOKEN);
    let a = Relay::spawn(cmd);
    let b = Relay::insecure(redis.port(), &[]);
    let addr = publish_addr(&a);
    a.wait_subscribed(1);
    b.wait_subscribed(1);
    let mut on_b = relay::connect(&b.url("/"), None).await.unwrap();

    let auth = format!("Authorization: Bearer {TOKEN}\r\n");
    let ok = post(&addr, "/publish?channel=pubsocketd", &auth, "{\"n\":1}");
    assert_eq!(status_of(&ok), 200, "{ok}");
    assert_eq!(
        json(&ok),
        serde_json::json!({"channel": "pubsocketd", "redis_receivers": 2})
    );
    assert_eq!(next_data(&mut on_b, T).await, Message::text("{\"n\":1}"));
    // The kept connection serves the next request too.
    let again = post(&addr, "/publish?channel=pubsocketd", &auth, "two");
    assert_eq!(json(&again)["redis_receivers"], 2, "{again}");
    assert_eq!(next_data(&mut on_b, T).await, Message::text("two"));
    let wrong = post(
        &addr,
        "/publish?channel=pubsocketd",
        "Authorization: Bearer x\r\n",
        "x",
    );
    assert_eq!(status_of(&wrong), 403, "{wrong}");

    // Redis gone: 502, once the kept connection and a new one both fail.
    redis.kill();
    let down = post(&addr, "/publish?channel=pubsocketd", &auth, "lost");
    assert_eq!(status_of(&down), 502, "{down}");
    assert!(
        json(&down)["error"]
            .as_str()
            .unwrap()
            .contains("unreachable"),
        "{down}"
    );

    a.stdout
        .wait_for("[publish]", T)
        .expect("requests logged at debug");
    for line in a.stdout.all().iter().chain(a.stderr.all().iter()) {
        assert!(!line.contains(TOKEN), "token printed: {line}");
    }
    relay::bye(on_b).await;
}
