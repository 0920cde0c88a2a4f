//! permessage-deflate (RFC 7692): negotiated with clients that offer it,
//! each message compressed once and shared; checked with an independent
//! client (Python's `websockets`, which inflates with zlib) and by hand.

mod common;

use common::redis::RedisServer;
use common::relay::{client_frame, RawWs, Relay};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use std::process::{Command, Stdio};
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

/// A JSON payload that compresses well, as real feeds do.
fn feed(n: usize) -> String {
    let rows: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"symbol":"ABC{}","price":{}.25,"currency":"EUR","exchange":"XETRA"}}"#,
                i % 7,
                100 + i
            )
        })
        .collect();
    format!("[{}]", rows.join(","))
}

const CLIENT: &str = r#"
import asyncio, json, sys
import websockets
async def main(url, n):
    async with websockets.connect(url, compression="deflate", max_size=None) as ws:
        print(json.dumps({"extensions": ws.response.headers.get("Sec-WebSocket-Extensions")}), flush=True)
        await ws.send("x" * 5000)  # compressed by the client
        for _ in range(n):
            print(json.dumps({"message": await ws.recv()}), flush=True)
asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"#;

fn python_has_websockets() {
    let ok = Command::new("python3")
        .args(["-c", "import websockets"])
        .status()
        .map(|s| s.success());
    assert!(
        matches!(ok, Ok(true)),
        "python3 with the websockets package is needed: run .ci/install-test-deps"
    );
}

#[test]
fn an_independent_client_negotiates_and_inflates() {
    python_has_websockets();
    let redis = RedisServer::start();
    let r = Relay::insecure(redis.port(), &[]);
    r.wait_subscribed(1);
    let mut child = Command::new("python3")
        .args(["-c", CLIENT, &r.url("/"), "3"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(out).lines() {
            let _ = tx.send(line.unwrap());
        }
    });
    let first: serde_json::Value = serde_json::from_str(&rx.recv_timeout(T).unwrap()).unwrap();
    assert_eq!(
        first["extensions"],
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
    );
    r.stdout.wait_for("[connect] OK", T).unwrap();
    std::thread::sleep(Duration::from_millis(200)); // its compressed message is in
    let big = feed(50);
    let small = "{\"tiny\":1}".to_string();
    for p in [&big, &small, &big] {
        redis.publish("pubsocketd", p.as_bytes());
    }
    for want in [&big, &small, &big] {
        let v: serde_json::Value = serde_json::from_str(&rx.recv_timeout(T).unwrap()).unwrap();
        assert_eq!(v["message"].as_str().unwrap(), want.as_str());
    }
    assert!(
        child.wait().unwrap().success(),
        "the client's compressed message closed it"
    );
}

/// Inflates a server frame's payload as RFC 7692 says (append 00 00 ff ff).
fn inflate(payload: &[u8]) -> Vec<u8> {
    let mut d = Decompress::new(false);
    let mut data = payload.to_vec();
    data.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut out = Vec::with_capacity(1 << 20);
    d.decompress_vec(&data, &mut out, FlushDecompress::Sync)
        .unwrap();
    out
}

fn deflate(data: &[u8]) -> Vec<u8> {
    let mut c = Compress::new(Compression::best(), false);
    let mut out = Vec::with_capacity(data.len() + 64);
    c.compress_vec(data, &mut out, FlushCompress::Sync).unwrap();
    out.truncate(out.len() - 4);
    out
}

#[test]
fn frames_on_the_wire_and_limits() {
    let redis = RedisServer::start();
    let r = Relay::insecure(redis.port(), &["-ws-deflate-min=100"]);
    r.wait_subscribed(1);
    let offer = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n";
    let (mut z1, head) = RawWs::open_with(&r.addr(), offer, b"");
    assert!(head.contains("Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n"), "{head}");
    let (mut z2, _) = RawWs::open_with(&r.addr(), offer, b"");
    let mut plain = RawWs::open(&r.addr(), b"");
    // A 10-bit server window cannot be met: the offer is declined.
    let (_, declined) = RawWs::open_with(
        &r.addr(),
        "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=10\r\n",
        b"",
    );
    assert!(!declined.contains("Sec-WebSocket-Extensions"), "{declined}");
    r.stdout.wait_count("[connect] OK", 4, T).unwrap();
    let big = feed(40);
    redis.publish("pubsocketd", big.as_bytes());
    redis.publish("pubsocketd", b"{\"short\":true}");
    let (b0, z) = z1.frame().unwrap();
    assert_eq!(b0, 0xC1, "text with RSV1");
    assert!(
        z.len() * 4 < big.len(),
        "{} compressed to {}",
        big.len(),
        z.len()
    );
    assert_eq!(inflate(&z), big.as_bytes());
    assert_eq!(
        z2.frame().unwrap(),
        (0xC1, z.clone()),
        "the same compressed bytes for every deflate client"
    );
    assert_eq!(plain.frame().unwrap(), (0x81, big.as_bytes().to_vec()));
    for ws in [&mut z1, &mut z2, &mut plain] {
        assert_eq!(
            ws.frame().unwrap(),
            (0x81, b"{\"short\":true}".to_vec()),
            "small: not compressed"
        );
    }
    // A client's compressed message is inflated (and ignored)...
    z1.send(&client_frame(0xC1, &deflate(b"hello, compressed")));
    z1.send(&client_frame(0x89, b"still here?"));
    assert_eq!(z1.frame().unwrap(), (0x8A, b"still here?".to_vec()));
    // ...within -ws-max-message once inflated: a small bomb gets 1009.
    z2.send(&client_frame(0xC2, &deflate(&vec![0u8; 1 << 20])));
    let (b0, payload) = z2.frame().unwrap();
    assert_eq!((b0, &payload[..2]), (0x88, &1009u16.to_be_bytes()[..]));
    // RSV1 without the extension is still a protocol error.
    plain.send(&client_frame(0xC1, &deflate(b"x")));
    let (b0, payload) = plain.frame().unwrap();
    assert_eq!((b0, &payload[..2]), (0x88, &1002u16.to_be_bytes()[..]));
}

#[test]
fn deflate_can_be_turned_off() {
    let redis = RedisServer::start();
    let r = Relay::insecure(redis.port(), &["-ws-deflate=false"]);
    let (_, head) = RawWs::open_with(
        &r.addr(),
        "Sec-WebSocket-Extensions: permessage-deflate\r\n",
        b"",
    );
    assert!(!head.contains("Sec-WebSocket-Extensions"), "{head}");
}
