//! Server-Sent Events with clients that know nothing of the relay, at their
//! defaults: `curl -N` (the head and the bytes as sent), httpx-sse on httpx
//! (Python; `tests/support/sse_client.py`) for payloads that carry line
//! breaks, colons and would-be fields, and for a resume with
//! `Last-Event-ID`; and the CORS answers, by hand.
//!
//! Needs curl, and python3 with httpx and httpx-sse (run
//! `.ci/install-test-deps`).

mod common;

use common::redis::RedisServer;
use common::relay::Relay;
use common::sse_wire::{self as sse, header, header_count, Sse};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(20);

/// A child process whose stdout lines arrive on a channel; killed on drop.
struct Program {
    child: Child,
    lines: Receiver<String>,
    name: String,
}

impl Program {
    fn spawn(mut cmd: Command) -> Program {
        let name = format!("{cmd:?}");
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Program { child, lines, name }
    }

    /// The next line as JSON, or `None` after `timeout`.
    fn try_json(&self, timeout: Duration) -> Option<Value> {
        let line = self.lines.recv_timeout(timeout).ok()?;
        Some(serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}")))
    }

    fn json(&self) -> Value {
        self.try_json(T)
            .unwrap_or_else(|| panic!("{}: nothing within {T:?}", self.name))
    }

    /// Waits for the exit; its status must be success.
    fn finish(mut self) {
        let deadline = Instant::now() + T;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "{}: {status}", self.name);
                return;
            }
            assert!(Instant::now() < deadline, "{} did not exit", self.name);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn python_has_httpx_sse() {
    let ok = Command::new("python3")
        .args(["-c", "import httpx, httpx_sse"])
        .status()
        .map(|s| s.success());
    assert!(
        matches!(ok, Ok(true)),
        "python3 with the httpx and httpx-sse packages is needed: run .ci/install-test-deps"
    );
}

/// `tests/support/sse_client.py URL STOP [LAST_EVENT_ID]`; its first line
/// (status and headers) is read and returned.
fn python_client(url: &str, stop: &str, last_event_id: Option<&str>) -> (Program, Value) {
    python_has_httpx_sse();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/sse_client.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script).args([url, stop]).args(last_event_id);
    let p = Program::spawn(cmd);
    let head = p.json();
    (p, head)
}

/// Reads the Python client's events up to the last probe (see
/// [`sse::probe`]).
fn python_ready(redis: &RedisServer, channel: &str, p: &Program) -> Vec<Value> {
    sse::probe(
        redis,
        channel,
        |wait| p.try_json(wait),
        |v| v["data"].as_str(),
    )
}

/// Reads the Python client's events up to one whose data or event name is
/// `stop`.
fn python_until(p: &Program, stop: &str) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let v = p.json();
        assert!(v.get("end").is_none(), "the stream ended: {out:?}");
        out.push(v.clone());
        if v["data"] == stop || v["event"] == stop {
            return out;
        }
    }
}

/// `curl -sS -N -D - [extra] URL`: its output (head, then the stream).
fn curl(url: &str, extra: &[&str]) -> (Child, Sse) {
    let mut child = Command::new("curl")
        .args(["-sS", "-N", "-D", "-"])
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn curl (is it installed?)");
    let out = child.stdout.take().unwrap();
    (child, Sse::from_output(out))
}

/// What an SSE client sees of a payload: every line break a `\n`.
fn as_received(payload: &str) -> String {
    payload.replace("\r\n", "\n").replace('\r', "\n")
}

/// The head every stream starts with, and the body's first block.
fn check_head(s: &mut Sse) {
    assert!(s.head.starts_with("HTTP/1.1 200 OK\r\n"), "{}", s.head);
    for (name, value) in [
        ("Content-Type", "text/event-stream"),
        ("Cache-Control", "no-store"),
        ("X-Accel-Buffering", "no"),
        ("Connection", "close"),
    ] {
        assert_eq!(
            header(&s.head, name).as_deref(),
            Some(value),
            "{name}: {}",
            s.head
        );
        assert_eq!(header_count(&s.head, name), 1, "{name}: {}", s.head);
    }
    // Close-delimited: no length, no chunks.
    for name in [
        "Content-Length",
        "Transfer-Encoding",
        "Access-Control-Allow-Origin",
    ] {
        assert_eq!(header(&s.head, name), None, "{name}: {}", s.head);
    }
    assert_eq!(s.event().lines, ["retry: 3000"], "the body starts so");
}

/// `curl -N` on the SSE route and on the WebSocket route (with `Accept:
/// text/event-stream`): the head, `retry:`, each message as one event with
/// one `data:` line per line of the payload; on SIGTERM the closing comment,
/// then the end, which curl takes as a complete response (exit 0).
#[test]
fn curl_receives_events_with_the_documented_head() {
    let redis = RedisServer::start();
    let mut r = Relay::insecure(redis.port(), &[]);
    r.wait_subscribed(1);
    let base = format!("http://{}", r.addr());
    let (mut curl_ws_route, mut on_root) =
        curl(&format!("{base}/"), &["-H", "Accept: text/event-stream"]);
    let (mut curl_events, mut on_events) = curl(&format!("{base}/events"), &[]);
    for s in [&mut on_root, &mut on_events] {
        check_head(s);
        let probes = s.ready(&redis, "pubsocketd");
        assert!(probes.iter().all(|e| e.lines.len() == 1), "{probes:?}");
    }
    // Each has read the other's probes too.
    redis.publish("pubsocketd", b"fence");
    for s in [&mut on_root, &mut on_events] {
        s.until("fence");
    }
    assert_eq!(redis.publish("pubsocketd", b"hello from redis"), 1);
    assert_eq!(redis.publish("pubsocketd", b"{\"two\":\nlines}"), 1);
    for s in [&mut on_root, &mut on_events] {
        assert_eq!(s.event().lines, ["data: hello from redis"]);
        assert_eq!(s.event().lines, ["data: {\"two\":", "data: lines}"]);
    }
    // One curl leaves; the other's stream goes on.
    let _ = curl_ws_route.kill();
    let _ = curl_ws_route.wait();
    redis.publish("pubsocketd", b"after one left");
    assert_eq!(on_events.event().lines, ["data: after one left"]);

    r.signal(libc::SIGTERM);
    let rest = on_events.rest();
    let last = rest.last().expect("a closing line");
    assert_eq!(last.lines, [": server shutting down"], "{rest:?}");
    assert!(r.wait_exit(T).is_some_and(|s| s.success()));
    let status = curl_events.wait().unwrap();
    assert!(status.success(), "curl saw a complete response: {status}");
}

/// httpx-sse receives each payload whole, whatever line breaks, colons,
/// spaces or would-be fields it holds (line breaks arrive as `\n`, as SSE
/// defines); a payload that is not UTF-8 is not sent; an injected `id:` or
/// blank line stays data.
#[test]
fn python_client_gets_every_payload_whole() {
    let redis = RedisServer::start();
    let r = Relay::insecure(redis.port(), &["-rs-channel=news"]);
    r.wait_subscribed(1);
    let url = format!("http://{}/events?channel=news", r.addr());
    let (p, head) = python_client(&url, "END", None);
    assert_eq!(head["status"], 200, "{head}");
    assert_eq!(head["headers"]["content-type"], "text/event-stream");
    let first = p.json();
    assert_eq!(
        first,
        json!({"event": "message", "data": "", "id": "", "retry": 3000}),
        "httpx-sse yields the retry: block as an event"
    );
    python_ready(&redis, "news", &p);
    let long = format!("{}\n{}", "x".repeat(70_000), "y".repeat(10));
    let payloads: Vec<&[u8]> = vec![
        b"two\nlines",
        b"cr\ronly",
        b"crlf\r\nhere",
        b"mixed\n\r\n\rbreaks",
        b" leading space",
        b"  two leading spaces",
        b":colon first",
        b"key: value",
        b"data: inside",
        b"x\ndata: y",
        b"x\nid: 999\n\nevent: evil",
        b"retry: 1\n: comment\nid",
        b"trailing newline\n",
        b"\nleading newline",
        b"\r\n\r\n",
        b"",
        b"tab\tand NUL \0 and U+2028 \xe2\x80\xa8 and NEL \xc2\x85 and \xe2\x98\x83",
        b"not UTF-8 \xff\xfe",
        long.as_bytes(),
    ];
    for payload in &payloads {
        assert_eq!(redis.publish("news", payload), 1);
    }
    redis.publish("news", b"END");
    let got = python_until(&p, "END");
    p.finish();
    let expected: Vec<String> = payloads
        .iter()
        .filter_map(|p| std::str::from_utf8(p).ok())
        .map(as_received)
        .chain(["END".to_string()])
        .collect();
    let data: Vec<&str> = got.iter().map(|v| v["data"].as_str().unwrap()).collect();
    assert_eq!(data, expected, "each payload one event, whole, in order");
    for v in &got {
        assert_eq!(v["event"], "message", "{v}");
        assert_eq!(v["id"], "", "no payload sets an ID: {v}");
        assert_eq!(v["retry"], Value::Null, "{v}");
    }
}

/// `-history=100`: httpx-sse reads news 1–3 and leaves; 4–8 are published;
/// it comes back with the last `id:` as `Last-Event-ID` (which wins over
/// `?since=last`): 4–8 exactly, then `event: recovered`, then the live ones.
/// By hand: the bare IDs, the recovered event's lines, `recovered:false`
/// for an ID the relay does not hold, and `<channel>:<id>` with `event:`
/// for a client of two channels.
/// A relay of news and alerts with a history, and one worker: what a
/// witness stream has seen is kept where the next client connects.
fn history_relay(redis: &RedisServer) -> Relay {
    let r = Relay::insecure(
        redis.port(),
        &["-rs-channel=news,alerts", "-history=100", "-workers=1"],
    );
    r.wait_subscribed(1);
    r
}

#[test]
fn last_event_id_resumes_exactly_the_missed_ones() {
    let redis = RedisServer::start();
    // One worker: what the witness has seen is kept where the next client
    // connects.
    let r = history_relay(&redis);
    let mut witness = Sse::open(&r.addr(), "/events?channel=news", "");
    assert_eq!(witness.event().lines, ["retry: 3000"]);
    witness.ready(&redis, "news");
    let seen_by_witness = |w: &mut Sse, data: &str| {
        while w.next_event().data.as_deref() != Some(data) {}
    };

    let url = format!("http://{}/?channel=news", r.addr());
    let (first, _) = python_client(&url, "3", None);
    assert_eq!(first.json()["retry"], 3000);
    python_ready(&redis, "news", &first);
    for n in 1..=3 {
        redis.publish("news", n.to_string().as_bytes());
    }
    let got = python_until(&first, "3");
    first.finish();
    let ids: Vec<&str> = got.iter().map(|v| v["id"].as_str().unwrap()).collect();
    let (epoch, n3) = ids[2].split_once('-').expect("a bare <a>-<b> ID");
    let n3: u64 = n3.parse().expect("a numeric ID");
    assert_eq!(
        ids,
        [2, 1, 0].map(|back| format!("{epoch}-{}", n3 - back)),
        "{got:?}"
    );
    assert!(got.iter().all(|v| v["event"] == "message"), "{got:?}");
    let last_id = ids[2].to_string();

    for n in 4..=8 {
        redis.publish("news", n.to_string().as_bytes());
    }
    redis.publish("alerts", b"not news");
    seen_by_witness(&mut witness, "8");
    let url = format!("http://{}/?channel=news&since=last", r.addr());
    let (back, head) = python_client(&url, "9", Some(&last_id));
    assert_eq!(head["status"], 200, "{head}");
    assert_eq!(back.json()["retry"], 3000);
    let mut got = python_until(&back, "recovered");
    redis.publish("news", b"9");
    got.extend(python_until(&back, "9"));
    back.finish();
    let id = |k: u64| format!("{epoch}-{}", n3 + k);
    let expected: Vec<Value> = (4..=8)
        .map(|n| json!({"event": "message", "data": n.to_string(), "id": id(n - 3), "retry": null}))
        .chain([
            // httpx-sse, as EventSource, keeps the last ID for an event without one.
            json!({"event": "recovered", "data": r#"{"channel":"news","recovered":true}"#, "id": id(5), "retry": null}),
            json!({"event": "message", "data": "9", "id": id(6), "retry": null}),
        ])
        .collect();
    assert_eq!(got, expected);
    let recovered: Value = serde_json::from_str(got[5]["data"].as_str().unwrap()).unwrap();
    assert_eq!(recovered, json!({"channel": "news", "recovered": true}));

    // By hand: from the latest ID, nothing to replay; the event's lines.
    let mut s = Sse::open(
        &r.addr(),
        "/events?channel=news",
        &format!("Last-Event-ID: {}\r\n", id(6)),
    );
    assert_eq!(s.event().lines, ["retry: 3000"]);
    let e = s.next_event();
    assert_eq!(e.lines[0], "event: recovered", "{e:?}");
    assert_eq!(e.id, None, "{e:?}");
    let v: Value = serde_json::from_str(e.data()).unwrap();
    assert_eq!(v, json!({"channel": "news", "recovered": true}));
    redis.publish("news", b"10");
    let ten = s.next_event();
    assert_eq!(ten.lines, [format!("id: {}", id(7)), "data: 10".into()]);

    // An ID of no epoch the relay holds: what it keeps, then "not
    // recovered" (as for the WebSocket's since=0-0).
    let mut s = Sse::open(&r.addr(), "/events?channel=news", "Last-Event-ID: 0-0\r\n");
    assert_eq!(s.event().lines, ["retry: 3000"]);
    let mut kept = Vec::new();
    let e = loop {
        let e = s.next_event();
        if e.event.is_some() {
            break e;
        }
        if !e.data().starts_with("probe-") {
            kept.push(e.data().to_string());
        }
    };
    assert_eq!(kept, (1..=10).map(|n| n.to_string()).collect::<Vec<_>>());
    assert_eq!(e.event.as_deref(), Some("recovered"), "{e:?}");
    let v: Value = serde_json::from_str(e.data()).unwrap();
    assert_eq!(v, json!({"channel": "news", "recovered": false}));

    // Two channels: IDs name their channel and events are named.
    seen_by_witness(&mut witness, "10");
    let mut two = Sse::open(
        &r.addr(),
        "/events?channel=news&channel=alerts",
        &format!("Last-Event-ID: news:{}\r\n", id(6)),
    );
    assert_eq!(two.event().lines, ["retry: 3000"]);
    let e = two.next_event();
    assert_eq!(
        e.lines,
        [
            format!("id: news:{}", id(7)),
            "event: news".into(),
            "data: 10".into()
        ]
    );
    let e = two.next_event();
    assert_eq!(e.event.as_deref(), Some("recovered"), "{e:?}");
    let v: Value = serde_json::from_str(e.data()).unwrap();
    assert_eq!(v, json!({"channel": "news", "recovered": true}));
}

/// `-ws-origin`: an allowed Origin is echoed with `Vary: Origin` (and no
/// credentials without `-auth-cookie`), on both routes; another origin, or
/// `null`, is refused with 403 and a text body, and no CORS header.
#[test]
fn cors_answers_for_allowed_and_refused_origins() {
    let redis = RedisServer::start();
    let port = redis.port().to_string();
    let r = Relay::start(&[
        "-rs-port",
        &port,
        "-ws-origin",
        "https://app.example,http://127.0.0.1:8000",
    ]);
    r.wait_subscribed(1);
    for path in ["/events", "/"] {
        for origin in ["https://app.example", "http://127.0.0.1:8000"] {
            let mut s = Sse::open(&r.addr(), path, &format!("Origin: {origin}\r\n"));
            assert_eq!(
                header(&s.head, "Access-Control-Allow-Origin").as_deref(),
                Some(origin),
                "{}",
                s.head
            );
            assert_eq!(header_count(&s.head, "Access-Control-Allow-Origin"), 1);
            let vary = header(&s.head, "Vary").unwrap_or_default();
            assert!(
                vary.split(',')
                    .any(|v| v.trim().eq_ignore_ascii_case("origin")),
                "{}",
                s.head
            );
            assert_eq!(
                header(&s.head, "Access-Control-Allow-Credentials"),
                None,
                "{}",
                s.head
            );
            assert_eq!(
                header(&s.head, "Content-Type").unwrap(),
                "text/event-stream"
            );
            assert_eq!(s.event().lines, ["retry: 3000"]);
        }
        for origin in ["https://evil.example", "null", "http://app.example"] {
            let mut s = Sse::open_any(&r.addr(), path, &format!("Origin: {origin}\r\n"));
            assert_eq!(s.status, 403, "{origin}: {}", s.head);
            assert_eq!(header(&s.head, "Access-Control-Allow-Origin"), None);
            let ctype = header(&s.head, "Content-Type").unwrap_or_default();
            assert!(ctype.starts_with("text/plain"), "{}", s.head);
            let body = s.body();
            assert!(body.starts_with("Origin "), "{}{body}", s.head);
        }
    }
    // The log lines come through a pipe: wait for them, then count.
    r.stdout
        .wait_count("refused: 403", 6, Duration::from_secs(10));
    let refusals = r.stdout.count("refused: 403") + r.stderr.count("refused: 403");
    assert_eq!(refusals, 6, "{:#?}", r.stdout.all());
}

/// A `Last-Event-ID` that is no ID of the relay's is never echoed into the
/// stream: the stream goes on (with `recovered:false`, as for an unknown
/// ID) or the request is refused with 400.
#[test]
fn a_forged_last_event_id_is_not_echoed() {
    let redis = RedisServer::start();
    let r = Relay::insecure(redis.port(), &["-rs-channel=news", "-history=10"]);
    r.wait_subscribed(1);
    let mut s = Sse::open_any(
        &r.addr(),
        "/events?channel=news",
        "Last-Event-ID: news:1-1<script>\r\n",
    );
    let lines: Vec<String> = match s.status {
        200 => s
            .ready(&redis, "news")
            .into_iter()
            .flat_map(|e| e.lines)
            .collect(),
        400 => vec![s.body()],
        _ => panic!("a 200 or a 400: {}", s.head),
    };
    assert!(!lines.concat().contains("script"), "{}{lines:?}", s.head);
}

/// A stream of two channels names each event after its channel, and its
/// IDs `<channel>:<id>`; EventSource (and httpx-sse) send back the last one
/// only, whichever channel it was of. Coming back with it, the client gets
/// what it missed of both channels, each once and in order (none of what it
/// had), and `recovered:true` for both.
#[test]
fn the_last_event_id_of_one_channel_resumes_the_other_too() {
    let redis = RedisServer::start();
    let r = history_relay(&redis);
    let mut witness = Sse::open(&r.addr(), "/events?channel=news", "");
    witness.ready(&redis, "news");
    let url = format!("http://{}/events?channel=news&channel=alerts", r.addr());
    let (first, _) = python_client(&url, "a1", None);
    assert_eq!(first.json()["retry"], 3000);
    python_ready(&redis, "news", &first);
    redis.publish("news", b"n1");
    redis.publish("alerts", b"a1");
    let got = python_until(&first, "a1");
    first.finish();
    let n1 = &got[got.len() - 2];
    let a1 = &got[got.len() - 1];
    assert_eq!((&n1["event"], &n1["data"]), (&json!("news"), &json!("n1")));
    assert_eq!(
        (&a1["event"], &a1["data"]),
        (&json!("alerts"), &json!("a1"))
    );
    let a1_id = a1["id"].as_str().unwrap().to_string();
    assert!(a1_id.starts_with("alerts:"), "{a1_id}");
    assert!(n1["id"].as_str().unwrap().starts_with("news:"), "{n1}");

    for (channel, data) in [("news", "n2"), ("alerts", "a2"), ("news", "n3")] {
        redis.publish(channel, data.as_bytes());
    }
    while witness.next_event().data.as_deref() != Some("n3") {}
    let (back, _) = python_client(&url, "live", Some(&a1_id));
    assert_eq!(back.json()["retry"], 3000);
    let mut got = Vec::new();
    let mut recovered = Vec::new();
    while recovered.len() < 2 {
        let v = back.json();
        match v["event"].as_str().unwrap() {
            "recovered" => {
                recovered.push(serde_json::from_str::<Value>(v["data"].as_str().unwrap()).unwrap())
            }
            name => got.push(format!("{name} {}", v["data"].as_str().unwrap())),
        }
    }
    redis.publish("news", b"live");
    let last = python_until(&back, "live");
    back.finish();
    assert_eq!(last.len(), 1, "nothing more before the live one: {last:?}");
    let of = |channel: &str| -> Vec<String> {
        got.iter()
            .filter(|g| g.starts_with(&format!("{channel} ")))
            .cloned()
            .collect()
    };
    assert_eq!(of("news"), ["news n2", "news n3"], "{got:?}");
    assert_eq!(of("alerts"), ["alerts a2"], "{got:?}");
    assert_eq!(got.len(), 3, "{got:?}");
    recovered.sort_by_key(|v| v["channel"].as_str().unwrap().to_string());
    assert_eq!(
        recovered,
        [
            json!({"channel": "alerts", "recovered": true}),
            json!({"channel": "news", "recovered": true})
        ]
    );
}
