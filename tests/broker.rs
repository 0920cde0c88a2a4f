//! The embedded broker (`-broker=embedded`): no Redis at all. Existing
//! publishers (redis-cli, the `redis` crate, `pubsocketd-publisher`) talk
//! to the relay's own RESP listener, and WebSocket clients receive.

mod common;

use common::redis::free_port;
use common::relay::{self, next_data, raw_exchange, status_of, Relay};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

const T: Duration = Duration::from_secs(5);

/// A relay with the embedded broker on a free port, relaying `news` and
/// `alerts`; returns it and the broker port.
fn start(extra: &[&str]) -> (Relay, u16) {
    let port = free_port();
    let flag = format!("-broker-port={port}");
    let mut args = vec![
        "-ws-insecure",
        "-broker=embedded",
        flag.as_str(),
        "-rs-channel=news,alerts",
    ];
    args.extend_from_slice(extra);
    let r = Relay::start(&args);
    let init = format!(
        "[init] embedded broker: accepting PUBLISH on 127.0.0.1:{port} for the channels news, alerts"
    );
    r.stdout
        .wait_for(&init, T)
        .unwrap_or_else(|| panic!("no broker line: {:?}", r.stdout.all()));
    (r, port)
}

/// `redis-cli -p PORT args...` (stdout is a pipe: raw replies); the
/// environment pairs are added.
fn cli(port: u16, env: &[(&str, &str)], args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run redis-cli");
    assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// PUBLISH through the `redis` crate on a fresh connection.
fn crate_publish(url: &str, channel: &str, payload: &str) -> i64 {
    let client = redis::Client::open(url).unwrap();
    let mut con = client.get_connection().expect("redis crate connects");
    redis::cmd("PUBLISH")
        .arg(channel)
        .arg(payload)
        .query(&mut con)
        .expect("PUBLISH through the redis crate")
}

/// Waits until the relay counts freshly connected clients: a worker
/// registers a client just after writing its 101, so a PUBLISH sent the
/// instant the handshake completes may find it uncounted (though it still
/// receives the message). `publish` sends "probe" to every client given.
async fn registered(clients: &mut [&mut relay::Ws], publish: impl FnOnce()) {
    publish();
    for ws in clients {
        assert_eq!(next_data(ws, T).await, Message::text("probe"));
    }
}

/// The broker's answers to `request` (which ends with QUIT).
fn resp(port: u16, request: &str) -> String {
    raw_exchange(&format!("127.0.0.1:{port}"), request.as_bytes())
}

#[tokio::test]
async fn existing_publishers_reach_websocket_clients_in_order() {
    let (r, port) = start(&[]);
    let mut all = relay::connect(&r.url("/"), None).await.unwrap();
    let mut alerts = relay::connect(&r.url("/?channel=alerts"), None)
        .await
        .unwrap();
    registered(&mut [&mut all, &mut alerts], || {
        cli(port, &[], &["publish", "alerts", "probe"]);
    })
    .await;

    // redis-cli, as the README's first command.
    assert_eq!(cli(port, &[], &["publish", "news", "hello"]), "1");
    assert_eq!(
        cli(port, &[], &["--no-raw", "publish", "alerts", "to both"]),
        "(integer) 2"
    );
    // The Rust redis client (connects with CLIENT SETINFO first).
    let url = format!("redis://127.0.0.1:{port}/");
    assert_eq!(crate_publish(&url, "news", "from-rust"), 1);
    // redis-py at its defaults (version 8 starts every connection with
    // HELLO 3), as in the README, and redis-cli speaking RESP3.
    assert_eq!(py_publish(port, "news", "from-python"), "1 proto=3");
    assert_eq!(cli(port, &[], &["-3", "publish", "news", "resp3"]), "1");
    // pubsocketd-publisher, lines on stdin.
    let mut publisher = Command::new(env!("CARGO_BIN_EXE_pubsocketd-publisher"))
        .args(["-port", &port.to_string(), "-channel", "news"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    publisher
        .stdin
        .take()
        .unwrap()
        .write_all(b"one\ntwo\n")
        .unwrap();
    let out = publisher.wait_with_output().unwrap();
    assert!(out.status.success(), "publisher: {out:?}");

    // A channel no -rs-channel matches: 0 receivers, reaches no one.
    assert_eq!(cli(port, &[], &["publish", "sports", "nobody"]), "0");
    assert_eq!(crate_publish(&url, "news", "last"), 1);

    for want in [
        "hello",
        "to both",
        "from-rust",
        "from-python",
        "resp3",
        r#"{"Data":"one"}"#,
        r#"{"Data":"two"}"#,
        "last",
    ] {
        assert_eq!(next_data(&mut all, T).await, Message::text(want));
    }
    assert_eq!(cli(port, &[], &["publish", "alerts", "again"]), "2");
    assert_eq!(next_data(&mut alerts, T).await, Message::text("to both"));
    assert_eq!(next_data(&mut alerts, T).await, Message::text("again"));
    assert_eq!(next_data(&mut all, T).await, Message::text("again"));
    relay::bye(all).await;
    relay::bye(alerts).await;
}

/// Publishes with redis-py (PyPI's `redis`) at its defaults; returns the
/// count and the protocol its connection agreed on (from `HELLO`).
fn py_publish(port: u16, channel: &str, payload: &str) -> String {
    let script = "import redis, sys\n\
        r = redis.Redis(port=int(sys.argv[1]))\n\
        n = r.publish(sys.argv[2], sys.argv[3])\n\
        hello = r.execute_command('HELLO')\n\
        print(n, 'proto=%s' % hello[b'proto'])\n";
    let out = Command::new("python3")
        .args(["-c", script, &port.to_string(), channel, payload])
        .output()
        .expect("run python3");
    assert!(out.status.success(), "redis-py: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The connection id in the first HELLO answer of `answer`.
fn broker_client_id(answer: &str) -> String {
    let at = answer.find("$2\r\nid\r\n:").expect("id in HELLO") + 9;
    let digits = answer[at..].find('\r').unwrap();
    answer[at..at + digits].to_string()
}

#[test]
fn commands_answer_as_redis_does() {
    let (_r, port) = start(&[]);
    // Inline and RESP commands, pipelined in one write.
    let answer = resp(
        port,
        "PING\r\nPING hi\r\n*2\r\n$4\r\nECHO\r\n$3\r\na b\r\nHELLO 4\r\nHELLO 3\r\nPING\r\nHELLO 2\r\n\
         CLIENT SETINFO lib-name x\r\nCLIENT SETNAME me\r\nSELECT 0\r\nCOMMAND DOCS\r\n\
         AUTH anything\r\nFLUSHALL now 'or never'\r\nSUBSCRIBE news\r\nPUBLISH news\r\n\
         PUBLISH news \"quoted payload\"\r\nQUIT\r\nPING\r\n",
    );
    // The connection id in HELLO's answers varies.
    let answer = answer.replace(
        &format!("$2\r\nid\r\n:{}\r\n", broker_client_id(&answer)),
        "$2\r\nid\r\n:N\r\n",
    );
    // HELLO 3 answers a RESP3 map, HELLO 2 a flat RESP2 array, as Redis.
    let hello = |head: &str, proto: u8| {
        format!(
            "{head}\r\n$6\r\nserver\r\n$10\r\npubsocketd\r\n$7\r\nversion\r\n${}\r\n{}\r\n$5\r\nproto\r\n:{proto}\r\n$2\r\nid\r\n:N\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n",
            env!("CARGO_PKG_VERSION").len(),
            env!("CARGO_PKG_VERSION")
        )
    };
    let expected = [
        "+PONG\r\n",
        "$2\r\nhi\r\n",
        "$3\r\na b\r\n",
        "-NOPROTO unsupported protocol version\r\n",
        &hello("%7", 3),
        "+PONG\r\n",
        &hello("*14", 2),
        "+OK\r\n",
        "+OK\r\n",
        "+OK\r\n",
        "*0\r\n",
        "+OK\r\n",
        "-ERR unknown command 'FLUSHALL', with args beginning with: 'now' 'or never' \r\n",
        "-ERR unknown command 'SUBSCRIBE', with args beginning with: 'news' \r\n",
        "-ERR wrong number of arguments for 'publish' command\r\n",
        ":0\r\n",
        "+OK\r\n",
    ]
    .concat();
    // Nothing after QUIT: the broker closed the connection.
    assert_eq!(answer, expected);

    // Malformed input: Redis' error, then the connection is closed.
    assert_eq!(
        resp(port, "*1\r\n$x\r\nPING\r\n"),
        "-ERR Protocol error: invalid bulk length\r\n"
    );
    assert_eq!(
        resp(port, "PING \"open\r\nPING\r\n"),
        "-ERR Protocol error: unbalanced quotes in request\r\n"
    );
}

#[tokio::test]
async fn oversized_requests_are_refused() {
    let (r, port) = start(&["-rs-max-payload=1KiB"]);
    let mut ws = relay::connect(&r.url("/"), None).await.unwrap();
    let url = format!("redis://127.0.0.1:{port}/");
    registered(&mut [&mut ws], || {
        crate_publish(&url, "news", "probe");
    })
    .await;
    // Over -rs-max-payload plus the margin: refused from the header on,
    // before the bytes arrive, and the connection closed.
    assert_eq!(
        resp(port, "*3\r\n$7\r\nPUBLISH\r\n$4\r\nnews\r\n$1000000\r\n"),
        "-ERR Protocol error: invalid bulk length\r\n"
    );
    // Over -rs-max-payload only: dropped like a Redis message would be.
    assert_eq!(crate_publish(&url, "news", &"x".repeat(1025)), 0);
    assert_eq!(crate_publish(&url, "news", &"y".repeat(1024)), 1);
    assert_eq!(next_data(&mut ws, T).await, Message::text("y".repeat(1024)));
    r.stdout
        .wait_for("dropped a 1025-byte message on news", T)
        .expect("drop logged");
    relay::bye(ws).await;
}

#[tokio::test]
async fn a_token_requires_auth_first() {
    let (r, port) = start(&["-publish-token=tok-3141", "-publish-addr=127.0.0.1:0"]);
    let mut ws = relay::connect(&r.url("/"), None).await.unwrap();
    let url = format!("redis://:tok-3141@127.0.0.1:{port}/");
    registered(&mut [&mut ws], || {
        crate_publish(&url, "news", "probe");
    })
    .await;
    let answer = resp(
        port,
        "PUBLISH news before\r\nPING\r\nHELLO 2\r\nAUTH wrong\r\nAUTH default wrong\r\n\
         HELLO 2 AUTH default wrong\r\nAUTH tok-3141\r\nPUBLISH news after\r\nQUIT\r\n",
    );
    let wrongpass = "-WRONGPASS invalid username-password pair or user is disabled.\r\n";
    let expected = [
        "-NOAUTH Authentication required.\r\n",
        "-NOAUTH Authentication required.\r\n",
        "-NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time\r\n",
        wrongpass,
        wrongpass,
        wrongpass,
        "+OK\r\n",
        ":1\r\n",
        "+OK\r\n",
    ]
    .concat();
    assert_eq!(answer, expected);
    // Clients configured with the password, as with requirepass.
    assert_eq!(crate_publish(&url, "news", "crate"), 1);
    assert_eq!(
        cli(
            port,
            &[("REDISCLI_AUTH", "tok-3141")],
            &["publish", "news", "cli"]
        ),
        "1"
    );
    let bad = redis::Client::open(format!("redis://:nope@127.0.0.1:{port}/")).unwrap();
    let err = bad.get_connection().map(|_| ()).unwrap_err();
    assert!(err.to_string().contains("AuthenticationFailed"), "{err}");
    for want in ["after", "crate", "cli"] {
        assert_eq!(next_data(&mut ws, T).await, Message::text(want));
    }
    relay::bye(ws).await;
}

#[test]
fn ready_without_redis() {
    let (r, _port) = start(&["-metrics-addr=127.0.0.1:0"]);
    let line = r.stdout.wait_for("metrics on http://", T).unwrap();
    let rest = &line[line.find("http://").unwrap() + 7..];
    let addr = &rest[..rest.find('/').unwrap()];
    let readyz = raw_exchange(addr, b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status_of(&readyz), 200, "{readyz}");
    let lines = r.stdout.all();
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("listening for pubsub messages") || l.contains("[redis]")),
        "{lines:?}"
    );
    assert!(r
        .stdout
        .all()
        .iter()
        .any(|l| l.contains("[init] listening for websocket requests on")));
}

#[test]
fn a_taken_broker_port_is_a_clear_start_up_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut child = Command::new(relay::BIN)
        .args([
            "-ws-insecure",
            "-ws-port=0",
            "-broker=embedded",
            &format!("-broker-port={port}"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + T;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the relay kept running with its broker port taken");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!("pubsocketd: cannot listen on -broker 127.0.0.1:{port}: Address already in use (is a Redis server running there? pick another -broker-port)\n")
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("listening for websocket"), "{stdout}");
    drop(taken);
}
