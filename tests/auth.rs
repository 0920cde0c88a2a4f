//! `-auth=jwt`: tokens made independently (PyJWT and cryptography, in
//! `tests/support/mint.py`) for every algorithm family, the refusals (no
//! token, `alg: none`, HMAC over the public key, a spliced signature,
//! expiry, `nbf`, issuer, audience, a missing `exp`), the four places a
//! token may be, the channels claim, expiry on an open socket, refresh, and
//! a JWK set rotated with a SIGHUP. No token ever appears in the logs.

mod common;

use common::jwt::{keys, mint, signed};
use common::redis::RedisServer;
use common::relay::{
    self, close_code, next_data, raw_exchange, status_of, upgrade_request, Relay, Ws,
};
use futures_util::SinkExt;
use serde_json::{json, Value};
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const T: Duration = Duration::from_secs(15);
const SECRET: &str = "a-test-secret-of-some-length-0123456789";

fn relay(redis: &RedisServer, extra: &[&str]) -> Relay {
    let mut args = vec!["-rs-channel=news,alerts,user.*", "-auth=jwt"];
    args.extend_from_slice(extra);
    let r = Relay::insecure(redis.port(), &args);
    r.wait_subscribed(1);
    r
}

/// Connects with extra headers; the error is the refused status.
async fn connect(url: &str, headers: &[(&'static str, &str)]) -> Result<(Ws, Option<String>), u16> {
    let mut req = url.into_client_request().unwrap();
    for (n, v) in headers {
        req.headers_mut().append(*n, v.parse().unwrap());
    }
    let host = req.uri().authority().unwrap().to_string();
    let tcp = tokio::net::TcpStream::connect(host).await.unwrap();
    match tokio_tungstenite::client_async(req, tcp).await {
        Ok((ws, resp)) => {
            let proto = resp
                .headers()
                .get("Sec-WebSocket-Protocol")
                .map(|v| v.to_str().unwrap().to_string());
            Ok((ws, proto))
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("{e}"),
    }
}

async fn bearer(url: &str, token: &str) -> Result<Ws, u16> {
    let auth = format!("Bearer {token}");
    connect(url, &[("Authorization", &auth)])
        .await
        .map(|(ws, _)| ws)
}

/// Publishes until the client receives (its subscription is in place).
async fn receives(redis: &RedisServer, ws: &mut Ws, channel: &str) {
    assert!(redis.publish(channel, b"hello") >= 1);
    assert_eq!(next_data(ws, T).await, Message::text("hello"));
}

fn no_token_in_logs(r: &Relay, tokens: &[&str]) {
    for line in r.stdout.all().iter().chain(r.stderr.all().iter()) {
        for t in tokens {
            let sig = t.rsplit('.').next().unwrap();
            assert!(
                sig.len() < 8 || !line.contains(sig),
                "a token in the log: {line}"
            );
        }
    }
}

const GOOD: &str = r#"{"sub":"alice","exp":"+600","channels":["news","user.42"]}"#;

#[tokio::test]
async fn every_key_family_verifies_its_own_algorithms() {
    let redis = RedisServer::start();
    let (_d, k) = keys();
    let path = |f: &str| k.join(f).to_str().unwrap().to_string();
    let secret = format!("-auth-jwt-secret={SECRET}");
    let cases = [
        (
            secret.clone(),
            vec![
                ("HS256", SECRET.to_string()),
                ("HS384", SECRET.into()),
                ("HS512", SECRET.into()),
            ],
        ),
        (
            format!("-auth-jwt-key={}", path("rsa.pub")),
            vec![
                ("RS256", path("rsa.key")),
                ("PS384", path("rsa.key")),
                ("RS512", path("rsa.key")),
            ],
        ),
        (
            format!("-auth-jwt-key={}", path("ec256.pub")),
            vec![("ES256", path("ec256.key"))],
        ),
        (
            format!("-auth-jwt-key={}", path("ec384.pub")),
            vec![("ES384", path("ec384.key"))],
        ),
        (
            format!("-auth-jwt-key={}", path("ed25519.pub")),
            vec![("EdDSA", path("ed25519.key"))],
        ),
    ];
    for (flag, signings) in cases {
        let r = relay(&redis, &[&flag]);
        let mut tokens = Vec::new();
        for (alg, key) in signings {
            let token = mint(&["sign", alg, &key, GOOD]);
            let mut ws = bearer(&r.url("/?channel=news"), &token)
                .await
                .unwrap_or_else(|s| panic!("{alg} with {flag}: {s}"));
            receives(&redis, &mut ws, "news").await;
            relay::bye(ws).await;
            tokens.push(token);
        }
        assert!(r.stdout.wait_for("[connect] OK sub=\"alice\"", T).is_some());
        let refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
        no_token_in_logs(&r, &refs);
    }
}

#[tokio::test]
async fn bad_tokens_are_401_with_their_reason() {
    let redis = RedisServer::start();
    let (_d, k) = keys();
    let rsa = k.join("rsa.key");
    let rsa = rsa.to_str().unwrap();
    let public = k.join("rsa.pub");
    let r = relay(
        &redis,
        &[
            &format!("-auth-jwt-key={}", public.display()),
            "-auth-issuer=https://issuer.example",
            "-auth-audience=pubsocketd",
            "-metrics-addr=127.0.0.1:0",
        ],
    );
    let with = |extra: &str| {
        let mut c: Value = serde_json::from_str(GOOD).unwrap();
        c["iss"] = json!("https://issuer.example");
        c["aud"] = json!("pubsocketd");
        let e: Value = serde_json::from_str(extra).unwrap();
        for (k, v) in e.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c.to_string()
    };
    let good = mint(&["sign", "RS256", rsa, &with("{}")]);
    let mut ws = bearer(&r.url("/?channel=news"), &good).await.unwrap();
    receives(&redis, &mut ws, "news").await;
    let cases = [
        (mint(&["none", &with("{}")]), "malformed token"),
        (
            mint(&["forge-hs", public.to_str().unwrap(), &with("{}")]),
            "algorithm not allowed",
        ),
        (
            mint(&["splice", &good, &with(r#"{"channels":["*"]}"#)]),
            "bad signature",
        ),
        (
            mint(&["sign", "RS256", rsa, &with(r#"{"exp":"-120"}"#)]),
            "token expired",
        ),
        (
            mint(&["sign", "RS256", rsa, &with(r#"{"nbf":"+600"}"#)]),
            "token not valid yet (nbf)",
        ),
        (
            mint(&[
                "sign",
                "RS256",
                rsa,
                &with(r#"{"iss":"https://evil.example"}"#),
            ]),
            "wrong issuer",
        ),
        (
            mint(&["sign", "RS256", rsa, &with(r#"{"aud":"other"}"#)]),
            "wrong audience",
        ),
        (
            mint(&["sign", "RS256", rsa, &with(r#"{"exp":null}"#)]),
            "no exp claim",
        ),
        ("not-a-token".to_string(), "malformed token"),
    ];
    for (i, (token, why)) in cases.iter().enumerate() {
        let head = upgrade_request(
            "/?channel=news",
            &format!("Authorization: Bearer {token}\r\n"),
        );
        let answer = raw_exchange(&r.addr(), head.as_bytes());
        assert_eq!(status_of(&answer), 401, "case {i}: {answer}");
        assert!(
            answer.contains("WWW-Authenticate: Bearer error=\"invalid_token\""),
            "{answer}"
        );
        assert!(
            !answer.contains(token.as_str()),
            "the answer repeats the token"
        );
        r.stdout
            .wait_count(&format!("refused: 401 invalid token: {why}"), 1, T)
            .unwrap_or_else(|| panic!("case {i}: no {why:?} in {:#?}", r.stdout.all()));
    }
    let answer = raw_exchange(&r.addr(), upgrade_request("/", "").as_bytes());
    assert_eq!(status_of(&answer), 401);
    assert!(r.stdout.wait_for("refused: 401 no token", T).is_some());
    let line = r.stdout.wait_for("metrics on http://", T).unwrap();
    let rest = &line[line.find("http://").unwrap() + 7..];
    let m = &rest[..rest.find('/').unwrap()];
    let scrape = raw_exchange(m, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(
        scrape.contains("pubsocketd_handshakes_refused_total{status=\"401\"} 10"),
        "{scrape}"
    );
    let mut all: Vec<&str> = cases.iter().map(|(t, _)| t.as_str()).collect();
    all.push(&good);
    no_token_in_logs(&r, &all);
}

#[tokio::test]
async fn a_token_in_each_of_the_four_places() {
    let redis = RedisServer::start();
    let r = relay(
        &redis,
        &[&format!("-auth-jwt-secret={SECRET}"), "-auth-cookie=jwt"],
    );
    let token = mint(&["sign", "HS256", SECRET, GOOD]);
    let url = r.url("/?channel=news");
    let offer_v1 = format!("pubsocketd.v1, pubsocketd.token.{token}");
    let offer_raw = format!("pubsocketd.token.{token}, pubsocketd.raw");
    let cookie = format!("theme=dark; jwt={token}");
    let bearer_h = format!("Bearer {token}");
    let places: [Place; 5] = [
        (vec![("Authorization", &bearer_h)], url.clone(), None),
        (
            vec![("Sec-WebSocket-Protocol", &offer_v1)],
            url.clone(),
            Some("pubsocketd.v1"),
        ),
        (
            vec![("Sec-WebSocket-Protocol", &offer_raw)],
            url.clone(),
            Some("pubsocketd.raw"),
        ),
        (vec![], format!("{url}&token={token}"), None),
        (vec![("Cookie", &cookie)], url.clone(), None),
    ];
    for (headers, url, answered) in places {
        let (mut ws, proto) = connect(&url, &headers)
            .await
            .unwrap_or_else(|s| panic!("{headers:?}: {s}"));
        assert_eq!(proto.as_deref(), answered, "the token is never echoed");
        assert!(redis.publish("news", b"\"hi\"") >= 1);
        let m = next_data(&mut ws, T).await;
        assert!(m.to_text().unwrap().contains("hi"));
        relay::bye(ws).await;
    }
    assert_eq!(
        connect(&url, &[("Cookie", "other=1")]).await.err(),
        Some(401)
    );
    no_token_in_logs(&r, &[&token]);
}

/// Request headers, the URL, and the subprotocol the 101 should answer.
type Place<'a> = (Vec<(&'static str, &'a str)>, String, Option<&'a str>);

async fn v1(url: &str, token: &str) -> Ws {
    let offer = format!("pubsocketd.v1, pubsocketd.token.{token}");
    connect(url, &[("Sec-WebSocket-Protocol", &offer)])
        .await
        .unwrap()
        .0
}

async fn ask(ws: &mut Ws, v: Value) -> Value {
    ws.send(Message::text(v.to_string())).await.unwrap();
    serde_json::from_str(next_data(ws, T).await.to_text().unwrap()).unwrap()
}

#[tokio::test]
async fn the_channels_claim_decides_what_is_read() {
    let redis = RedisServer::start();
    let r = relay(&redis, &[&format!("-auth-jwt-secret={SECRET}")]);
    let token = mint(&["sign", "HS256", SECRET, GOOD]);
    // Named nothing: the configured channels granted (news), not alerts.
    let mut all = bearer(&r.url("/"), &token).await.unwrap();
    redis.publish("alerts", b"not for this client");
    receives(&redis, &mut all, "news").await;
    assert_eq!(
        bearer(&r.url("/?channel=alerts"), &token).await.err(),
        Some(403)
    );
    assert_eq!(
        bearer(&r.url("/?channel=user.43"), &token).await.err(),
        Some(403)
    );
    assert_eq!(
        bearer(&r.url("/?channel=user.*"), &token).await.err(),
        Some(403)
    );
    let mut mine = bearer(&r.url("/?channel=user.42"), &token).await.unwrap();
    receives(&redis, &mut mine, "user.42").await;
    let nothing = mint(&[
        "sign",
        "HS256",
        SECRET,
        r#"{"exp":"+60","channels":["other"]}"#,
    ]);
    assert_eq!(bearer(&r.url("/"), &nothing).await.err(), Some(403));
    assert!(r
        .stdout
        .wait_for("refused: 403 the token grants none", T)
        .is_some());

    let mut ws = v1(&r.url("/?channel=news"), &token).await;
    let no = ask(&mut ws, json!({"subscribe": ["user.43", "user.42"]})).await;
    assert_eq!(
        no,
        json!({"error": "not granted by the token", "channels": ["user.43"]})
    );
    let yes = ask(&mut ws, json!({"subscribe": ["user.42"]})).await;
    assert_eq!(yes, json!({"subscribed": ["user.42"]}));
}

#[tokio::test]
async fn an_expired_token_closes_4401_unless_refreshed() {
    let redis = RedisServer::start();
    let r = relay(
        &redis,
        &[&format!("-auth-jwt-secret={SECRET}"), "-auth-leeway=0s"],
    );
    let short = mint(&[
        "sign",
        "HS256",
        SECRET,
        r#"{"exp":"+2","channels":["news","user.*"]}"#,
    ]);
    let mut lapses = v1(&r.url("/?channel=news"), &short).await;
    let mut refreshes = v1(&r.url("/?channel=news"), &short).await;
    let mut narrowed = v1(&r.url("/?channel=news"), &short).await;
    let long = mint(&[
        "sign",
        "HS256",
        SECRET,
        r#"{"exp":"+3600","channels":["news"]}"#,
    ]);
    let answer = ask(&mut refreshes, json!({"token": long})).await;
    assert!(answer["refreshed"].as_u64().unwrap() > 3000, "{answer}");
    let bad = ask(&mut refreshes, json!({"token": "x.y.z"})).await;
    assert!(bad["error"]
        .as_str()
        .unwrap()
        .starts_with("invalid token: malformed token"));
    let other = mint(&[
        "sign",
        "HS256",
        SECRET,
        r#"{"exp":"+3600","channels":["alerts"]}"#,
    ]);
    narrowed
        .send(Message::text(json!({"token": other}).to_string()))
        .await
        .unwrap();
    assert_eq!(close_code(&mut narrowed, T).await, Some(4403));
    assert_eq!(close_code(&mut lapses, T).await, Some(4401));
    assert!(redis.publish("news", b"\"still\"") >= 1);
    let m = next_data(&mut refreshes, T).await;
    assert!(
        m.to_text().unwrap().contains("still"),
        "the refreshed client stays"
    );
    assert!(r.stdout.wait_for("whose token expired (4401)", T).is_some());
    no_token_in_logs(&r, &[&short, &long, &other]);
}

#[tokio::test]
async fn a_jwk_set_rotated_with_sighup() {
    let redis = RedisServer::start();
    let (_d, k) = keys();
    let live = k.join("jwks.json");
    std::fs::copy(k.join("jwks-1.json"), &live).unwrap();
    let r = relay(&redis, &[&format!("-auth-jwks={}", live.display())]);
    let old = signed(&k, "rsa.key", "RS256", GOOD, "k1");
    let new = signed(&k, "ec256.key", "ES256", GOOD, "k2");
    assert!(bearer(&r.url("/"), &old).await.is_ok());
    assert_eq!(bearer(&r.url("/"), &new).await.err(), Some(401));
    assert!(r.stdout.wait_for("no key for the token's kid", T).is_some());
    std::fs::copy(k.join("jwks-2.json"), &live).unwrap();
    r.signal(libc::SIGHUP);
    assert!(r
        .stdout
        .wait_for("[auth] SIGHUP: the JWK set holds 2 keys now", T)
        .is_some());
    let mut ws = bearer(&r.url("/?channel=news"), &new).await.unwrap();
    receives(&redis, &mut ws, "news").await;
    // A k2 token claiming RS256 is refused: the set says ES256 for k2.
    let wrong = signed(&k, "rsa.key", "RS256", GOOD, "k2");
    assert_eq!(bearer(&r.url("/"), &wrong).await.err(), Some(401));
}

#[test]
fn flags_are_checked_together() {
    for (args, says) in [
        (vec!["-auth=jwt"], "-auth=jwt needs one of"),
        (
            vec!["-auth=jwt", "-auth-jwt-secret=a", "-auth-jwt-key=/x"],
            "takes one of",
        ),
        (vec!["-auth-jwt-secret=a"], "need -auth=jwt"),
        (vec!["-auth=basic"], "invalid -auth"),
        (
            vec!["-auth=jwt", "-auth-jwks=http://idp.example/jwks"],
            "only to a loopback address",
        ),
    ] {
        let mut all = vec!["-ws-insecure"];
        all.extend(args);
        let (status, _, err) = relay::run(&all);
        assert_eq!(status.code(), Some(2), "{all:?}: {err}");
        assert!(err.contains(says), "{all:?}: {err}");
        assert!(!err.contains("-auth-jwt-secret=a"), "{err}");
    }
    let (status, _, err) = relay::run(&[
        "-ws-insecure",
        "-ws-port=0",
        "-auth=jwt",
        "-auth-jwt-key=/nonexistent.pem",
    ]);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("/nonexistent.pem"), "{err}");
}

/// Serves `set` at `/jwks.json` over http on loopback; counts the fetches.
fn jwks_server(
    set: std::sync::Arc<std::sync::Mutex<String>>,
) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{BufRead, BufReader, Write};
    let fetches = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let counted = fetches.clone();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 2 {
                line.clear();
            }
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let body = set.lock().unwrap().clone();
            let mut w = s;
            let _ = write!(
                w,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (port, fetches)
}

#[tokio::test]
async fn a_jwk_set_url_is_fetched_at_start_and_for_an_unknown_kid() {
    use std::sync::atomic::Ordering::SeqCst;
    let redis = RedisServer::start();
    let (_d, k) = keys();
    let set = std::sync::Arc::new(std::sync::Mutex::new(
        std::fs::read_to_string(k.join("jwks-1.json")).unwrap(),
    ));
    let (port, fetches) = jwks_server(set.clone());
    let url = format!("-auth-jwks=http://127.0.0.1:{port}/jwks.json");
    let r = relay(&redis, &[&url, "-auth-jwks-refresh=1h"]);
    assert_eq!(fetches.load(SeqCst), 1, "fetched once at start");
    let old = signed(&k, "rsa.key", "RS256", GOOD, "k1");
    let new = signed(&k, "ec256.key", "ES256", GOOD, "k2");
    assert!(bearer(&r.url("/"), &old).await.is_ok());
    *set.lock().unwrap() = std::fs::read_to_string(k.join("jwks-2.json")).unwrap();
    assert_eq!(
        bearer(&r.url("/"), &new).await.err(),
        Some(401),
        "k2 unknown yet"
    );
    assert!(
        r.stdout.wait_for("holds 2 keys", T).is_some(),
        "an unknown kid fetches again"
    );
    let mut ws = bearer(&r.url("/?channel=news"), &new).await.unwrap();
    receives(&redis, &mut ws, "news").await;
    let stranger = signed(&k, "ec256.key", "ES256", GOOD, "k3");
    assert_eq!(bearer(&r.url("/"), &stranger).await.err(), Some(401));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        fetches.load(SeqCst),
        2,
        "at most one fetch a minute for unknown kids"
    );

    // Every -auth-jwks-refresh.
    let r2 = relay(&redis, &[&url, "-auth-jwks-refresh=300ms"]);
    let before = fetches.load(SeqCst);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(
        fetches.load(SeqCst) >= before + 2,
        "fetched again on schedule"
    );
    drop(r2);

    // At start, an unreachable set is a start-up error.
    let down = format!(
        "-auth-jwks=http://127.0.0.1:{}/jwks.json",
        common::redis::free_port()
    );
    let (status, _, err) = relay::run(&["-ws-insecure", "-ws-port=0", "-auth=jwt", &down]);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("cannot connect"), "{err}");
    let (status, _, err) = relay::run(&[
        "-ws-insecure",
        "-auth=jwt",
        "-auth-jwks=http://idp.example/jwks",
    ]);
    assert_eq!(status.code(), Some(2), "{err}");
}
