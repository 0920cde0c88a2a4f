//! Integration tests of the two companion tools, `pubsocketd-publisher` and
//! `pubsocketd-receiver`, run as real processes.
//!
//! The publisher talks to a real `redis-server`; the receiver to small
//! WebSocket (and plain TCP, and TLS) servers written here, so these tests do
//! not depend on the relay itself.

mod common;

use std::future::Future;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::thread::{self, sleep, JoinHandle};
use std::time::{Duration, Instant};

use common::redis::{free_port, RedisServer};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Bytes, Message};

const PUBLISHER: &str = env!("CARGO_BIN_EXE_pubsocketd-publisher");
const RECEIVER: &str = env!("CARGO_BIN_EXE_pubsocketd-receiver");

/// Longest a tool may run in a test before it counts as hung.
const TIMEOUT: Duration = Duration::from_secs(8);
/// Longest to wait for one message to reach a subscriber.
const MESSAGE_WAIT: Duration = Duration::from_secs(3);

// ---------------------------------------------------------------- helpers

fn command(bin: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Runs `bin args` with `input` on stdin, failing the test if it hangs.
fn run(bin: &str, args: &[&str], input: &[u8]) -> Output {
    let mut child = command(bin, args).spawn().expect("spawn tool");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let writer = thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = wait_output(child);
    writer.join().expect("stdin writer");
    out
}

/// Waits for `child` to exit (killing it after [`TIMEOUT`]) and collects
/// its output.
fn wait_output(mut child: Child) -> Output {
    let stdout = read_all(child.stdout.take().expect("stdout"));
    let stderr = read_all(child.stderr.take().expect("stderr"));
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let err = stderr.join().expect("stderr reader");
            panic!(
                "tool still running after {TIMEOUT:?}; stderr:\n{}",
                String::from_utf8_lossy(&err)
            );
        }
        sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

fn read_all<R: Read + Send + 'static>(mut pipe: R) -> JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut data = Vec::new();
        let _ = pipe.read_to_end(&mut data);
        data
    })
}

fn stderr_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Asserts a run succeeded, showing its stderr otherwise.
fn assert_success(out: &Output) {
    assert!(
        out.status.success(),
        "exit status {:?}; stderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Asserts the run failed with `code` and exactly one error line (after the
/// tool's own progress lines listed in `before`).
fn assert_one_error_line(out: &Output, code: i32, before: &[&str], error: &str) {
    let lines = stderr_lines(out);
    assert_eq!(out.status.code(), Some(code), "stderr: {lines:?}");
    let mut expected: Vec<&str> = before.to_vec();
    expected.push(error);
    assert_eq!(lines, expected);
}

/// `text` with every run of whitespace made one space (help text wraps).
fn one_spaced(text: &[u8]) -> String {
    let text = String::from_utf8_lossy(text);
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn strings(payloads: &[Vec<u8>]) -> Vec<String> {
    payloads
        .iter()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect()
}

// ---------------------------------------------------------------- publisher

#[test]
fn publisher_wraps_each_line_in_json_with_correct_escaping() {
    let redis = RedisServer::start();
    let mut sub = redis.subscribe("pubsocketd");
    let port = redis.port().to_string();
    let input: &[u8] = b"PEW PEW PEW\n\
        say \"hi\"\n\
        back\\slash\n\
        h\xc3\xa9llo \xe2\x9c\x93 \xf0\x9f\x98\x80\n\
        tab\there\n\
        \x01\x1f\x7f\n\
        windows line\r\n\
        \n\
        bad \xff utf8\n\
        </script>&<b>\n\
        no newline at end";
    let out = run(PUBLISHER, &["-port", &port], input);
    assert_success(&out);
    let expected = [
        r#"{"Data":"PEW PEW PEW"}"#,
        r#"{"Data":"say \"hi\""}"#,
        r#"{"Data":"back\\slash"}"#,
        r#"{"Data":"héllo ✓ 😀"}"#,
        r#"{"Data":"tab\there"}"#,
        "{\"Data\":\"\\u0001\\u001f\x7f\"}",
        r#"{"Data":"windows line"}"#,
        r#"{"Data":""}"#,
        r#"{"Data":"bad � utf8"}"#,
        r#"{"Data":"</script>&<b>"}"#,
        r#"{"Data":"no newline at end"}"#,
    ];
    let got = strings(&sub.messages(expected.len(), MESSAGE_WAIT));
    assert_eq!(got, expected);
    for payload in &got {
        let value: serde_json::Value = serde_json::from_str(payload).expect("valid JSON");
        assert_eq!(value.as_object().map(|o| o.len()), Some(1), "{payload}");
    }
    assert_eq!(sub.next_message(Duration::from_millis(200)), None);
    assert_eq!(
        stderr_lines(&out),
        [
            format!("connecting to 127.0.0.1:{port}..."),
            format!("connected to 127.0.0.1:{port} and ready to send new messages"),
        ]
    );
}

#[test]
fn publisher_raw_publishes_bytes_exactly() {
    let redis = RedisServer::start();
    let mut sub = redis.subscribe("raw-channel");
    let port = redis.port().to_string();
    let input: &[u8] = b"{\"already\":\"json\"}\n\
        \xff\xfe binary \x00 nul\n\
        inner\rcarriage\r\n\
        \n\
        last";
    let out = run(
        PUBLISHER,
        &["-raw", "-port", &port, "-channel", "raw-channel"],
        input,
    );
    assert_success(&out);
    let expected: Vec<&[u8]> = vec![
        b"{\"already\":\"json\"}",
        b"\xff\xfe binary \x00 nul",
        b"inner\rcarriage",
        b"",
        b"last",
    ];
    assert_eq!(sub.messages(expected.len(), MESSAGE_WAIT), expected);
    assert_eq!(sub.next_message(Duration::from_millis(200)), None);
}

#[test]
fn publisher_accepts_every_go_flag_spelling() {
    let redis = RedisServer::start();
    let mut sub = redis.subscribe("spelled");
    let p = redis.port().to_string();
    let port_eq = format!("-port={p}");
    let port_eq2 = format!("--port={p}");
    let cases: [(&[&str], &str); 5] = [
        (&[&port_eq, "-channel=spelled"], r#"{"Data":"one"}"#),
        (
            &["-port", &p, "-channel", "spelled", "-raw=false"],
            r#"{"Data":"two"}"#,
        ),
        (&[&port_eq2, "--channel=spelled", "--raw=true"], "three"),
        (
            &["--port", &p, "--channel", "spelled", "--host", "localhost"],
            r#"{"Data":"four"}"#,
        ),
        (
            &[
                "-host=127.0.0.1",
                "-port=1",
                &port_eq,
                "-channel=spelled",
                "-raw",
            ],
            "five",
        ),
    ];
    let lines = ["one", "two", "three", "four", "five"];
    for ((args, expected), line) in cases.iter().zip(lines) {
        let out = run(PUBLISHER, args, format!("{line}\n").as_bytes());
        assert_success(&out);
        let got = sub
            .next_message(MESSAGE_WAIT)
            .unwrap_or_else(|| panic!("{args:?}: nothing"));
        assert_eq!(String::from_utf8_lossy(&got), *expected, "{args:?}");
    }
}

#[test]
fn publisher_sends_each_line_before_stdin_ends() {
    let redis = RedisServer::start();
    let mut sub = redis.subscribe("pubsocketd");
    let port = redis.port().to_string();
    let mut child = command(PUBLISHER, &["-port", &port])
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    for line in ["first", "second"] {
        stdin.write_all(format!("{line}\n").as_bytes()).unwrap();
        stdin.flush().unwrap();
        let got = sub.next_message(MESSAGE_WAIT);
        assert_eq!(got, Some(format!(r#"{{"Data":"{line}"}}"#).into_bytes()));
    }
    drop(stdin);
    assert_success(&wait_output(child));
}

#[test]
fn publisher_keeps_order_of_many_lines() {
    let redis = RedisServer::start();
    let mut sub = redis.subscribe("bulk");
    let port = redis.port().to_string();
    let n = 20_000;
    let input: String = (0..n).map(|i| format!("line {i}\n")).collect();
    let reader = thread::spawn(move || sub.messages(n, MESSAGE_WAIT));
    let out = run(
        PUBLISHER,
        &["-raw", "-port", &port, "-channel", "bulk"],
        input.as_bytes(),
    );
    assert_success(&out);
    let got = reader.join().expect("subscriber");
    for (i, payload) in got.iter().enumerate() {
        assert_eq!(payload, format!("line {i}").as_bytes());
    }
}

#[test]
fn publisher_reports_unreachable_redis() {
    let port = free_port();
    let out = run(PUBLISHER, &["-port", &port.to_string()], b"lost\n");
    assert_one_error_line(
        &out,
        1,
        &[&format!("connecting to 127.0.0.1:{port}...")],
        &format!("pubsocketd-publisher: cannot connect to 127.0.0.1:{port}: Connection refused"),
    );
}

#[test]
fn publisher_reports_a_refused_publish() {
    let redis = RedisServer::start_with(&["--requirepass", "secret"]);
    let port = redis.port().to_string();
    let out = run(PUBLISHER, &["-port", &port], b"hello\n");
    let lines = stderr_lines(&out);
    assert_eq!(out.status.code(), Some(1), "{lines:?}");
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(
        lines[2].starts_with("pubsocketd-publisher: redis refused: NOAUTH"),
        "{lines:?}"
    );
}

#[test]
fn publisher_rejects_unknown_flag_in_one_line() {
    let out = run(PUBLISHER, &["-nope=1"], b"");
    assert_one_error_line(
        &out,
        2,
        &[],
        "pubsocketd-publisher: unknown flag -nope (see --help)",
    );
}

#[test]
fn publisher_help_states_defaults() {
    let out = run(PUBLISHER, &["-h"], b"");
    assert_success(&out);
    let help = one_spaced(&out.stdout);
    for text in [
        "--host",
        "(default 127.0.0.1)",
        "(default 6379)",
        "(default pubsocketd)",
        "--raw",
    ] {
        assert!(help.contains(text), "{text:?} missing from:\n{help}");
    }
}

// ---------------------------------------------------------------- receiver

/// Runs `serve` on a tokio runtime of its own thread, with a listener on a
/// free port of 127.0.0.1; gives up after [`TIMEOUT`] (returning `None`).
fn background<F, Fut>(serve: F) -> (u16, JoinHandle<Option<Fut::Output>>)
where
    F: FnOnce(TcpListener) -> Fut + Send + 'static,
    Fut: Future,
    Fut::Output: Send + 'static,
{
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("local addr").port();
    listener.set_nonblocking(true).expect("nonblocking");
    let handle = thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = TcpListener::from_std(listener).expect("tokio listener");
            tokio::time::timeout(TIMEOUT, serve(listener)).await.ok()
        })
    });
    (port, handle)
}

/// What the test WebSocket server observed.
#[derive(Debug, Default)]
struct Seen {
    origin: Option<String>,
    pong: bool,
}

/// Serves one WebSocket client: sends `messages`, a ping (and waits for its
/// pong), then closes with 1000 "bye".
async fn serve_ws<S>(stream: S, messages: Vec<Message>) -> Seen
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut seen = Seen::default();
    #[allow(clippy::result_large_err)] // the signature tungstenite asks for
    let callback = |req: &Request, resp: Response| {
        seen.origin = req
            .headers()
            .get("origin")
            .map(|v| v.to_str().expect("ascii origin").to_string());
        Ok::<_, ErrorResponse>(resp)
    };
    let mut ws = tokio_tungstenite::accept_hdr_async(stream, callback)
        .await
        .expect("server handshake");
    for message in messages {
        ws.send(message).await.expect("send");
    }
    ws.send(Message::Ping(Bytes::from_static(b"are you there")))
        .await
        .expect("ping");
    while let Some(Ok(message)) = ws.next().await {
        if let Message::Pong(data) = message {
            seen.pong = &data[..] == b"are you there";
            break;
        }
    }
    let bye = CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    };
    ws.close(Some(bye)).await.expect("close");
    while let Some(Ok(_)) = ws.next().await {}
    seen
}

/// A plain ws:// server for one client.
fn ws_server(messages: Vec<Message>) -> (u16, JoinHandle<Option<Seen>>) {
    background(|listener| async move {
        let (stream, _) = listener.accept().await.expect("accept");
        serve_ws(stream, messages).await
    })
}

fn receiver_connected(url: &str) -> [String; 2] {
    [
        format!("dialing {url}..."),
        format!("connected to {url} and ready to receive new messages"),
    ]
}

#[test]
fn receiver_prints_each_message_on_its_own_line() {
    let big: String = "0123456789abcdef".repeat(1 << 16);
    assert_eq!(big.len(), 1 << 20);
    let texts = [
        r#"{"Data":"PEW PEW PEW"}"#,
        "",
        "two\nlines in one message",
        "unicode ✓ 😀",
        &big,
        "last",
    ];
    let mut messages: Vec<Message> = texts.iter().map(|t| Message::text(t.to_string())).collect();
    messages.insert(2, Message::binary(b"bin\x00\xffary".to_vec()));
    let (port, server) = ws_server(messages);
    let url = format!("ws://127.0.0.1:{port}/");
    let out = run(RECEIVER, &["-url", &url], b"");
    assert_success(&out);

    let mut expected = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        if i == 2 {
            expected.extend_from_slice(b"bin\x00\xffary\n");
        }
        expected.extend_from_slice(text.as_bytes());
        expected.push(b'\n');
    }
    assert!(
        out.stdout == expected,
        "stdout differs ({} bytes)",
        out.stdout.len()
    );
    let mut lines = receiver_connected(&url).to_vec();
    lines.push("connection closed by server (code 1000 bye)".to_string());
    assert_eq!(stderr_lines(&out), lines);
    let seen = server.join().expect("server").expect("server timed out");
    assert!(seen.pong, "the receiver did not answer the ping");
    assert_eq!(
        seen.origin, None,
        "no Origin header unless -origin is given"
    );
}

#[test]
fn receiver_sends_the_origin_header() {
    let (port, server) = ws_server(vec![Message::text("hello")]);
    let url = format!("ws://127.0.0.1:{port}/feed");
    let out = run(
        RECEIVER,
        &["--url", &url, "-origin=http://example.com"],
        b"",
    );
    assert_success(&out);
    assert_eq!(out.stdout, b"hello\n");
    let seen = server.join().expect("server").expect("server timed out");
    assert_eq!(seen.origin.as_deref(), Some("http://example.com"));
}

/// A plain TCP server that answers one HTTP request with `status`.
fn refusing_server(status: &'static str) -> (u16, JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("local addr").port();
    let handle = thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept");
        stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        let mut reader = BufReader::new(&stream);
        let mut line = String::new();
        while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
            if line == "\r\n" {
                break;
            }
            line.clear();
        }
        let response = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
        (&stream).write_all(response.as_bytes()).expect("respond");
    });
    (port, handle)
}

#[test]
fn receiver_reports_a_refused_handshake() {
    for status in ["403 Forbidden", "404 Not Found"] {
        let (port, server) = refusing_server(status);
        let url = format!("ws://127.0.0.1:{port}/");
        let out = run(
            RECEIVER,
            &["-url", &url, "-origin", "http://evil.example"],
            b"",
        );
        server.join().expect("server");
        assert_one_error_line(
            &out,
            1,
            &[&format!("dialing {url}...")],
            &format!("pubsocketd-receiver: handshake refused by {url}: HTTP {status}"),
        );
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn receiver_reports_connection_refused() {
    let url = format!("ws://127.0.0.1:{}", free_port());
    let out = run(RECEIVER, &[&format!("-url={url}")], b"");
    assert_one_error_line(
        &out,
        1,
        &[&format!("dialing {url}...")],
        &format!("pubsocketd-receiver: cannot connect to {url}: Connection refused"),
    );
}

#[test]
fn receiver_rejects_unknown_flag_in_one_line() {
    let out = run(RECEIVER, &["--bogus"], b"");
    assert_one_error_line(
        &out,
        2,
        &[],
        "pubsocketd-receiver: unknown flag -bogus (see --help)",
    );
}

#[test]
fn receiver_help_states_defaults() {
    let out = run(RECEIVER, &["-help"], b"");
    assert_success(&out);
    let help = one_spaced(&out.stdout);
    for text in [
        "--url",
        "(default ws://127.0.0.1:8080)",
        "--origin",
        "--ca-cert",
    ] {
        assert!(help.contains(text), "{text:?} missing from:\n{help}");
    }
}

/// A self-signed certificate for "localhost" (its PEM in a temporary file)
/// and a wss:// server using it for one client.
fn tls_server(
    messages: Vec<Message>,
) -> (
    u16,
    JoinHandle<Option<Option<Seen>>>,
    tempfile::NamedTempFile,
) {
    let key = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    let mut pem = tempfile::NamedTempFile::new().expect("temp file");
    pem.write_all(key.cert.pem().as_bytes()).expect("write pem");
    let private = rustls::pki_types::PrivatePkcs8KeyDer::from(key.signing_key.serialize_der());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(vec![key.cert.der().clone()], private.into())
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let (port, handle) = background(|listener| async move {
        let (stream, _) = listener.accept().await.expect("accept");
        // A client that does not trust the certificate aborts here.
        let tls = acceptor.accept(stream).await.ok()?;
        Some(serve_ws(tls, messages).await)
    });
    (port, handle, pem)
}

#[test]
fn receiver_speaks_wss_with_a_ca_cert() {
    let (port, server, pem) = tls_server(vec![Message::text("secure hello")]);
    let url = format!("wss://localhost:{port}/");
    let ca = pem.path().to_str().expect("utf-8 path");
    let out = run(RECEIVER, &["-url", &url, "-ca-cert", ca], b"");
    assert_success(&out);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "secure hello\n");
    let mut lines = receiver_connected(&url).to_vec();
    lines.push("connection closed by server (code 1000 bye)".to_string());
    assert_eq!(stderr_lines(&out), lines);
    let seen = server
        .join()
        .expect("server")
        .flatten()
        .expect("TLS server");
    assert!(seen.pong);
}

#[test]
fn receiver_refuses_an_untrusted_certificate() {
    let (port, server, _pem) = tls_server(vec![Message::text("never seen")]);
    let url = format!("wss://localhost:{port}/");
    let out = run(RECEIVER, &["-url", &url], b"");
    let lines = stderr_lines(&out);
    assert_eq!(out.status.code(), Some(1), "{lines:?}");
    assert_eq!(lines.len(), 2, "{lines:?}");
    let prefix = format!("pubsocketd-receiver: TLS handshake with {url} failed: ");
    assert!(lines[1].starts_with(&prefix), "{lines:?}");
    assert!(lines[1].contains("certificate"), "{lines:?}");
    assert!(out.stdout.is_empty());
    assert!(server.join().expect("server").flatten().is_none());
}

// ---------------------------------------------------------------- helper

/// The shared Redis helper itself: other test files rely on restart() and
/// the counters.
#[test]
fn redis_helper_counts_subscribers_and_restarts_on_the_same_port() {
    let mut redis = RedisServer::start();
    let port = redis.port();
    assert_eq!(redis.addr(), format!("127.0.0.1:{port}"));
    assert_eq!(redis.subscriber_count("helper"), 0);
    let mut sub = redis.subscribe("helper");
    assert_eq!(redis.subscriber_count("helper"), 1);
    assert_eq!(redis.publish("helper", b"\x00bin\r\n"), 1);
    assert_eq!(
        sub.next_message(MESSAGE_WAIT),
        Some(b"\x00bin\r\n".to_vec())
    );
    assert_eq!(redis.cli(&["PING"]).trim(), "PONG");
    redis.kill();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    redis.restart();
    assert_eq!(redis.port(), port);
    assert_eq!(redis.subscriber_count("helper"), 0);
    assert_eq!(redis.publish("helper", b"x"), 0);
}
