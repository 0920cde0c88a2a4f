//! The demo page, `client/index.html`, end to end in headless Chromium:
//! served over HTTP from an allowed origin it shows the messages published
//! to Redis, in order; served from another origin it shows the refusal.
//!
//! Needs Debian's `chromium` and `chromium-driver` (run
//! `.ci/install-test-deps`). Screenshots go to `target/test-artifacts/`.

mod common;

use common::redis::{free_port, RedisServer, Resp};
use common::relay::{Lines, Relay};
use fantoccini::{Client, ClientBuilder};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const INSTALL_HINT: &str =
    "install Debian's chromium and chromium-driver: run `.ci/install-test-deps` (as root)";
/// The longest any one wait may take.
const PATIENCE: Duration = Duration::from_secs(30);

/// A chromedriver process in its own process group, so that dropping it
/// also ends the Chromium processes it started, even after a panic.
struct ChromeDriver {
    child: Child,
    port: u16,
    _profile: tempfile::TempDir,
    profile: PathBuf,
    log: PathBuf,
}

impl ChromeDriver {
    fn start() -> ChromeDriver {
        for bin in [CHROMIUM, CHROMEDRIVER] {
            assert!(Path::new(bin).exists(), "{bin} is missing: {INSTALL_HINT}");
        }
        let dir = tempfile::tempdir().expect("temporary directory");
        let profile = dir.path().join("profile");
        let log = dir.path().join("chromedriver.log");
        // The port is only likely free: try a few.
        for _ in 0..3 {
            let port = free_port();
            let mut child = Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .arg(format!("--log-path={}", log.display()))
                // Chromium's scratch files (and --disable-dev-shm-usage's
                // shared memory) go here too, and are removed with it.
                .env("TMPDIR", dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {CHROMEDRIVER}: {e}; {INSTALL_HINT}"));
            let deadline = Instant::now() + PATIENCE;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return ChromeDriver {
                        child,
                        port,
                        _profile: dir,
                        profile,
                        log,
                    };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!(
            "chromedriver did not start; its log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// A WebDriver session with a fresh headless Chromium.
    async fn session(&self) -> Client {
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-component-update",
            "--disable-sync",
            "--disable-quic",
            "--window-size=1000,700",
            &format!("--user-data-dir={}", self.profile.display()),
        ];
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
        });
        let Value::Object(caps) = caps else {
            unreachable!()
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let connect = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await;
        connect.unwrap_or_else(|e| {
            panic!(
                "no Chromium session ({e}); chromedriver log:\n{}",
                self.log_tail()
            )
        })
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        // The whole group: chromedriver and any Chromium it left running.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// Serves `client/index.html` and `client/pubsocketd.js` (and 404 for
/// anything else) on a free port of 127.0.0.1 from a background thread;
/// returns the port.
fn serve_page() -> u16 {
    let read = |name: &str| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("client")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
    };
    let files = std::sync::Arc::new((read("index.html"), read("pubsocketd.js")));
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the page server");
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let files = files.clone();
            // One thread per connection: the browser may open a socket it
            // never sends on.
            std::thread::spawn(move || answer(stream, &files.0, &files.1));
        }
    });
    port
}

fn answer(mut stream: TcpStream, page: &[u8], module: &[u8]) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut head = Vec::new();
    let mut buf = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head);
    let target = head.split_whitespace().nth(1).unwrap_or("");
    let path = target.split('?').next().unwrap_or("");
    let (status, kind, body): (&str, &str, &[u8]) = match path {
        "/" | "/index.html" => ("200 OK", "text/html; charset=utf-8", page),
        // A module script needs a JavaScript MIME type, or Chromium refuses it.
        "/pubsocketd.js" => ("200 OK", "text/javascript; charset=utf-8", module),
        _ => ("404 Not Found", "text/plain", b"not found\n"),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes());
    let _ = stream.write_all(body);
}

/// What the page shows: `#state`, `#detail`, `#url`, and each message's
/// tag, `data-raw`, text and class.
#[derive(Debug)]
struct View {
    state: String,
    detail: String,
    url: String,
    messages: Vec<(String, String, String, String)>,
}

async fn view(client: &Client) -> View {
    let v = client
        .execute(
            r##"
            const text = (id) => document.getElementById(id).textContent;
            return {
              state: text("state"),
              detail: text("detail"),
              url: text("url"),
              messages: Array.from(document.querySelectorAll("#feedback .message"))
                .map((e) => [e.tagName.toLowerCase(), e.getAttribute("data-raw"), e.textContent,
                             e.className]),
            };
            "##,
            vec![],
        )
        .await
        .expect("read the page");
    let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
    let messages = v["messages"]
        .as_array()
        .expect("messages array")
        .iter()
        .map(|m| {
            let f = |i: usize| m[i].as_str().unwrap_or_default().to_string();
            (f(0), f(1), f(2), f(3))
        })
        .collect();
    View {
        state: s("state"),
        detail: s("detail"),
        url: s("url"),
        messages,
    }
}

/// Polls the page until `ready` holds; panics with the last view after
/// [`PATIENCE`].
async fn wait_view(client: &Client, what: &str, ready: impl Fn(&View) -> bool) -> View {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let v = view(client).await;
        if ready(&v) {
            return v;
        }
        if Instant::now() > deadline {
            panic!("page never showed {what} within {PATIENCE:?}; it shows {v:#?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Saves a screenshot of the viewport under `target/test-artifacts/`.
async fn screenshot(client: &Client, name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&dir).expect("create target/test-artifacts");
    let png = client.screenshot().await.expect("take a screenshot");
    assert!(png.starts_with(b"\x89PNG"), "screenshot is not a PNG");
    let path = dir.join(name);
    std::fs::write(&path, png).expect("write screenshot");
    path
}

/// Waits (blocking) for a line containing `needle` in either stream.
fn wait_log(relay: &Relay, needle: &str) -> String {
    let deadline = Instant::now() + PATIENCE;
    let found = |lines: &Lines| lines.all().into_iter().find(|l| l.contains(needle));
    loop {
        if let Some(line) = found(&relay.stdout).or_else(|| found(&relay.stderr)) {
            return line;
        }
        if Instant::now() > deadline {
            panic!(
                "relay never logged {needle:?}: {:#?} {:#?}",
                relay.stdout.all(),
                relay.stderr.all()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_page_in_headless_chromium() {
    let driver = ChromeDriver::start();
    let redis = RedisServer::start();
    let allowed = serve_page();
    let other = serve_page();
    let origin = format!("http://127.0.0.1:{allowed}");
    let rs_port = redis.port().to_string();
    let relay = Relay::start(&["-ws-origin", &origin, "-rs-port", &rs_port]);
    relay.wait_subscribed(1);
    let ws_url = format!("ws://127.0.0.1:{}/", relay.port);
    let client = driver.session().await;

    // From the allowed origin: the page connects and shows each message.
    client
        .goto(&format!("{origin}/index.html?url={ws_url}"))
        .await
        .expect("load the page");
    let v = wait_view(&client, "state open", |v| v.state == "open").await;
    assert_eq!(v.url, ws_url);
    assert!(v.messages.is_empty(), "{v:?}");
    wait_log(&relay, "[connect] OK");

    let sent = [
        r#"{"n":1,"text":"first","tags":["a","b"]}"#,
        "second: plain text, <b>not</b> markup",
        r#"{"n":3,"text":"third ☃ ünïcödé"}"#,
    ];
    for payload in sent {
        let receivers = redis.publish("pubsocketd", payload.as_bytes());
        assert_eq!(receivers, 1, "the relay should be the one subscriber");
    }
    let v = wait_view(&client, "three messages", |v| {
        v.messages.len() >= sent.len()
    })
    .await;
    let raws: Vec<&str> = v.messages.iter().map(|m| m.1.as_str()).collect();
    assert_eq!(raws, sent, "data-raw of #feedback .message, in order");
    // JSON is shown pretty-printed in a <pre>; other text as is, in a <div>.
    assert_eq!(v.messages[0].0, "pre");
    assert_eq!(
        v.messages[0].2,
        "{\n  \"n\": 1,\n  \"text\": \"first\",\n  \"tags\": [\n    \"a\",\n    \"b\"\n  ]\n}"
    );
    assert_eq!(v.messages[1].0, "div");
    assert_eq!(v.messages[1].2, sent[1]);
    assert_eq!(v.messages[2].0, "pre");
    assert!(v.messages[2].2.contains("third ☃ ünïcödé"), "{v:?}");
    assert_eq!(v.state, "open");
    let shot = screenshot(&client, "browser-demo.png").await;
    eprintln!("screenshot: {}", shot.display());

    // From an origin the relay does not allow: refused with 403, which the
    // browser reports as an abnormal close, and the page retries later.
    let refusals = relay.stdout.count("refused: 403") + relay.stderr.count("refused: 403");
    assert_eq!(refusals, 0);
    client
        .goto(&format!("http://127.0.0.1:{other}/index.html?url={ws_url}"))
        .await
        .expect("load the page from the other origin");
    let v = wait_view(&client, "the refusal", |v| {
        v.state.starts_with("reconnecting in") && v.detail.contains("closed (code 1006)")
    })
    .await;
    assert!(v.messages.is_empty(), "{v:?}");
    let line = wait_log(&relay, "refused: 403");
    assert!(line.contains("Origin not allowed"), "{line}");
    let shot = screenshot(&client, "browser-refused.png").await;
    eprintln!("screenshot: {}", shot.display());

    client.close().await.expect("end the browser session");
    drop(driver);
    // Shown with --nocapture, to see what the relay made of the browser.
    eprintln!("relay log:\n{}", relay.stdout.all().join("\n"));
}

/// With `protocol=v1` the page speaks `pubsocketd.v1`: it subscribes and
/// unsubscribes through its box and shows the envelopes and the answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_page_subscribes_with_v1() {
    let driver = ChromeDriver::start();
    let redis = RedisServer::start();
    let page = serve_page();
    let origin = format!("http://127.0.0.1:{page}");
    let rs_port = redis.port().to_string();
    let relay = Relay::start(&[
        "-ws-origin",
        &origin,
        "-rs-port",
        &rs_port,
        "-rs-channel=news,user.*",
    ]);
    relay.wait_subscribed(1);
    let ws_url = format!("ws://127.0.0.1:{}/?channel=news", relay.port);
    let client = driver.session().await;
    client
        .goto(&format!("{origin}/index.html?protocol=v1&url={ws_url}"))
        .await
        .expect("load the page");
    wait_view(&client, "state open", |v| v.state == "open").await;
    let ask = |verb: &'static str, name: &'static str| {
        let client = client.clone();
        async move {
            client
                .execute(
                    "document.getElementById('channel').value = arguments[0];\n\
                     document.getElementById(arguments[1]).click();",
                    vec![name.into(), verb.into()],
                )
                .await
                .expect("use the box");
        }
    };
    ask("subscribe", "user.9").await;
    wait_view(&client, "the subscribed answer", |v| v.messages.len() == 1).await;
    redis.publish("user.9", br#"{"for":9}"#);
    redis.publish("news", b"headline");
    // Both shown before the unsubscribe goes out (else it races them).
    wait_view(&client, "both messages", |v| v.messages.len() == 3).await;
    ask("unsubscribe", "news").await;
    let v = wait_view(&client, "four entries", |v| v.messages.len() == 4).await;
    redis.publish("news", b"not shown");
    redis.publish("user.9", b"last");
    let v2 = wait_view(&client, "five entries", |v| v.messages.len() == 5).await;
    let raws: Vec<&str> = v2.messages.iter().map(|m| m.1.as_str()).collect();
    assert_eq!(
        raws,
        [
            r#"{"subscribed":["user.9"]}"#,
            r#"{"channel":"user.9","data":{"for":9}}"#,
            r#"{"channel":"news","data":"headline"}"#,
            r#"{"unsubscribed":["news"]}"#,
            r#"{"channel":"user.9","data":"last"}"#,
        ],
        "{v:?}"
    );
    let shot = screenshot(&client, "browser-v1.png").await;
    eprintln!("screenshot: {}", shot.display());
    client.close().await.expect("end the browser session");
    drop(driver);
}

/// Under `-auth=jwt`, Chromium's WebSocket connects with the token in the
/// subprotocol offer (beside `pubsocketd.v1`, and beside `pubsocketd.raw`)
/// and in a cookie, and is refused without one; its EventSource (the SSE
/// mode) with the token in the URL, and in the cookie (cross-origin, with
/// credentials).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_page_with_a_token() {
    let driver = ChromeDriver::start();
    let redis = RedisServer::start();
    let page = serve_page();
    let origin = format!("http://127.0.0.1:{page}");
    let secret = "browser-test-secret-0123456789abcdef";
    let relay = Relay::start(&[
        "-ws-origin",
        &origin,
        "-rs-port",
        &redis.port().to_string(),
        "-rs-channel=news",
        "-auth=jwt",
        &format!("-auth-jwt-secret={secret}"),
        "-auth-cookie=jwt",
    ]);
    relay.wait_subscribed(1);
    let claims = r#"{"sub":"browser","exp":"+600","channels":["news"]}"#;
    let token = common::jwt::mint(&["sign", "HS256", secret, claims]);
    let ws_url = format!("ws://127.0.0.1:{}/", relay.port);
    let client = driver.session().await;
    client
        .goto(&format!("{origin}/index.html?url={ws_url}"))
        .await
        .expect("load the page");
    wait_log(&relay, "refused: 401 no token");
    wait_view(&client, "a refusal", |v| {
        v.state.starts_with("closed") || v.state.starts_with("reconnecting") || v.state == "error"
    })
    .await;
    for (query, sent, shown) in [
        (
            format!("protocol=v1&token={token}"),
            "n1",
            r#"{"channel":"news","data":"n1"}"#,
        ),
        (format!("token={token}"), "n2", "\"n2\""),
        (format!("token={token}&cookie=jwt"), "n3", "\"n3\""),
        // EventSource: the token in ?token=, then in the cookie (sent with
        // withCredentials, which needs Access-Control-Allow-Credentials).
        (format!("protocol=sse&token={token}"), "n4", "\"n4\""),
        (
            format!("protocol=sse&token={token}&cookie=jwt"),
            "n5",
            "\"n5\"",
        ),
    ] {
        client
            .goto(&format!("{origin}/index.html?{query}&url={ws_url}"))
            .await
            .expect("load the page");
        wait_view(&client, "state open", |v| v.state == "open").await;
        // Published until shown: the relay may not have the client yet.
        let deadline = Instant::now() + PATIENCE;
        let v = loop {
            redis.publish("news", format!("\"{sent}\"").as_bytes());
            tokio::time::sleep(Duration::from_millis(100)).await;
            let v = view(&client).await;
            if !v.messages.is_empty() {
                break v;
            }
            assert!(Instant::now() < deadline, "{query}: nothing shown: {v:#?}");
        };
        assert_eq!(v.messages[0].1, shown, "{query}");
    }
    assert_eq!(relay.stdout.count("[connect] OK sub=\"browser\""), 3);
    assert_eq!(
        relay.stdout.count("[connect] OK (events) sub=\"browser\""),
        2
    );
    assert!(relay
        .stdout
        .all()
        .iter()
        .all(|l| !l.contains(&token[token.len() - 20..])));
    client.close().await.expect("end the browser session");
    drop(driver);
}

/// Types `name` in the v1 page's box and presses its `verb` button.
async fn use_box(client: &Client, verb: &str, name: &str) {
    client
        .execute(
            "document.getElementById('channel').value = arguments[0];\n\
             document.getElementById(arguments[1]).click();",
            vec![name.into(), verb.into()],
        )
        .await
        .expect("use the box");
}

/// A relay of `news` and `user.*` from `redis`, allowing the page's
/// `origin`, with `extra` flags; subscribed.
fn page_relay(origin: &str, redis: &RedisServer, extra: &[&str]) -> Relay {
    let port = redis.port().to_string();
    let mut args = vec![
        "-ws-origin",
        origin,
        "-rs-port",
        &port,
        "-rs-channel=news,user.*",
    ];
    args.extend_from_slice(extra);
    let relay = Relay::start(&args);
    relay.wait_subscribed(1);
    relay
}

/// Runs `script` in the page; its return value.
async fn eval(client: &Client, script: &str) -> Value {
    client
        .execute(script, vec![])
        .await
        .unwrap_or_else(|e| panic!("run {script:?} in the page: {e}"))
}

/// A message of the feed, read back from its `data-raw`.
#[derive(Debug, PartialEq)]
enum Entry {
    /// An envelope: channel, data, id.
    Message(String, Value, Option<String>),
    /// `{"channel":…,"recovered":…}`, shown with this class.
    Recovered(String, bool, String),
    /// Anything else (the relay's answers), as JSON.
    Other(Value),
}

fn entries(v: &View) -> Vec<Entry> {
    v.messages
        .iter()
        .map(|(_, raw, _, class)| {
            let j: Value = serde_json::from_str(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
            let channel = j["channel"].as_str().map(str::to_string);
            match (channel, j.get("recovered")) {
                (Some(c), Some(r)) => Entry::Recovered(c, r.as_bool().unwrap(), class.clone()),
                (Some(c), None) => {
                    let id = j
                        .get("id")
                        .map(|id| id.as_str().expect("id is a string").into());
                    Entry::Message(c, j["data"].clone(), id)
                }
                (None, _) => Entry::Other(j),
            }
        })
        .collect()
}

/// The data of `channel`'s messages, in the order shown.
fn shown(entries: &[Entry], channel: &str) -> Vec<Value> {
    entries
        .iter()
        .filter_map(|e| match e {
            Entry::Message(c, data, _) if c == channel => Some(data.clone()),
            _ => None,
        })
        .collect()
}

/// Where the first entry that `is` sits in the feed.
fn position(entries: &[Entry], is: impl Fn(&Entry) -> bool) -> usize {
    entries
        .iter()
        .position(is)
        .unwrap_or_else(|| panic!("not in the feed: {entries:#?}"))
}

fn is_data<'a>(channel: &'a str, data: &'a str) -> impl Fn(&Entry) -> bool + 'a {
    move |e| matches!(e, Entry::Message(c, d, _) if c == channel && d == data)
}

/// Loads the v1 page on `ws_url` (which names `news` in its query) and
/// subscribes `user.9` through the box, so that the page (through
/// `client/pubsocketd.js`) reads one channel from its URL and one by a
/// `subscribe` message.
async fn open_v1_page(client: &Client, origin: &str, ws_url: &str) {
    client
        .goto(&format!("{origin}/index.html?protocol=v1&url={ws_url}"))
        .await
        .expect("load the page");
    wait_view(client, "state open", |v| v.state == "open").await;
    use_box(client, "subscribe", "user.9").await;
    wait_view(client, "the subscribed answer", |v| v.messages.len() == 1).await;
}

/// Without history (nothing to resume): after a drop the module reconnects
/// with backoff, the URL's channel is read again and the channel
/// subscribed by message is subscribed again; what was published while it
/// was down is not shown (Pub/Sub keeps nothing), and no recovery line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_resubscribes_after_a_drop() {
    let driver = ChromeDriver::start();
    let redis = RedisServer::start();
    let page = serve_page();
    let origin = format!("http://127.0.0.1:{page}");
    let relay = page_relay(&origin, &redis, &["-log-level=debug"]);
    let ws_url = format!("ws://127.0.0.1:{}/?channel=news", relay.port);
    let client = driver.session().await;
    open_v1_page(&client, &origin, &ws_url).await;
    redis.publish("news", b"\"a1\"");
    redis.publish("user.9", b"\"b1\"");
    wait_view(&client, "two messages", |v| v.messages.len() == 3).await;

    eval(&client, "pubsocketd.drop(1500);").await;
    wait_view(&client, "reconnecting", |v| {
        v.state.starts_with("reconnecting in")
    })
    .await;
    wait_log(&relay, "[disconnect]");
    assert_eq!(redis.publish("news", b"\"lost\""), 1);
    let v = wait_view(&client, "subscribed again", |v| {
        v.state == "open" && v.messages.len() == 4
    })
    .await;
    assert_eq!(v.messages[3].1, r#"{"subscribed":["user.9"]}"#, "{v:#?}");
    assert_eq!(relay.stdout.count("[connect] OK"), 2);
    redis.publish("news", b"\"a2\"");
    redis.publish("user.9", b"\"b2\"");
    let v = wait_view(&client, "two more", |v| v.messages.len() == 6).await;
    let raws: Vec<&str> = v.messages.iter().map(|m| m.1.as_str()).collect();
    assert_eq!(
        raws,
        [
            r#"{"subscribed":["user.9"]}"#,
            r#"{"channel":"news","data":"a1"}"#,
            r#"{"channel":"user.9","data":"b1"}"#,
            r#"{"subscribed":["user.9"]}"#,
            r#"{"channel":"news","data":"a2"}"#,
            r#"{"channel":"user.9","data":"b2"}"#,
        ]
    );
    assert_eq!(eval(&client, "return pubsocketd.duplicates;").await, 0);
    client.close().await.expect("end the browser session");
    drop(driver);
}

/// With `-history`: a drop, then publishes while the page is down; on
/// reconnect the module asks for what it missed (`since=news:<id>` in the
/// URL, `"since":{"user.9":…}` in its `subscribe`), and the page shows
/// every message exactly once, in order, then a "recovered" line per
/// channel, then live messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_resumes_after_a_drop_with_history() {
    let driver = ChromeDriver::start();
    let redis = RedisServer::start();
    let page = serve_page();
    let origin = format!("http://127.0.0.1:{page}");
    let relay = page_relay(&origin, &redis, &["-history=100", "-log-level=debug"]);
    let ws_url = format!("ws://127.0.0.1:{}/?channel=news", relay.port);
    let client = driver.session().await;
    open_v1_page(&client, &origin, &ws_url).await;
    redis.publish("news", b"\"n1\"");
    redis.publish("user.9", b"\"u1\"");
    wait_view(&client, "two messages", |v| v.messages.len() == 3).await;

    eval(&client, "pubsocketd.drop(2000);").await;
    wait_view(&client, "reconnecting", |v| {
        v.state.starts_with("reconnecting in")
    })
    .await;
    wait_log(&relay, "[disconnect]");
    for (channel, data) in [("news", "n2"), ("user.9", "u2"), ("news", "n3")] {
        assert_eq!(redis.publish(channel, format!("\"{data}\"").as_bytes()), 1);
    }
    let recovered = |v: &View| {
        v.messages
            .iter()
            .filter(|m| m.3.contains("recovered"))
            .count()
    };
    wait_view(&client, "two recovery lines", |v| recovered(v) == 2).await;
    redis.publish("news", b"\"n4\"");
    let v = wait_view(&client, "n4", |v| {
        v.messages.iter().any(|m| m.1.contains("n4"))
    })
    .await;
    let e = entries(&v);

    assert_eq!(shown(&e, "news"), ["n1", "n2", "n3", "n4"], "{e:#?}");
    assert_eq!(shown(&e, "user.9"), ["u1", "u2"], "{e:#?}");
    // Each message has an id, distinct within its channel.
    let mut ids: Vec<(&str, &str)> = e
        .iter()
        .filter_map(|e| match e {
            Entry::Message(c, _, id) => Some((
                c.as_str(),
                id.as_deref()
                    .unwrap_or_else(|| panic!("{c}: no id under -history")),
            )),
            _ => None,
        })
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 6, "{e:#?}");
    for channel in ["news", "user.9"] {
        let line = Entry::Recovered(channel.into(), true, "message recovered".into());
        let at = position(&e, |x| *x == line);
        // After the replay, before live messages.
        let replayed = if channel == "news" { "n3" } else { "u2" };
        assert!(position(&e, is_data(channel, replayed)) < at, "{e:#?}");
        if channel == "news" {
            assert!(at < position(&e, is_data("news", "n4")), "{e:#?}");
        }
    }
    assert!(v.detail.contains(": recovered"), "{v:#?}");
    assert_eq!(eval(&client, "return pubsocketd.duplicates;").await, 0);
    assert_eq!(relay.stdout.count("[connect] OK"), 2);
    eval(
        &client,
        "document.querySelector('#feedback .message:last-child').scrollIntoView();",
    )
    .await;
    let shot = screenshot(&client, "browser-v1-recovered.png").await;
    eprintln!("screenshot: {}", shot.display());
    client.close().await.expect("end the browser session");
    drop(driver);
}

/// A relay restarted on the same port has lost its history (Pub/Sub
/// keeps nothing): the module's `since` cannot be honoured and the page
/// shows a "not recovered" line for each channel, then live messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_not_recovered_after_a_relay_restart() {
    let driver = ChromeDriver::start();
    let redis = RedisServer::start();
    let page = serve_page();
    let origin = format!("http://127.0.0.1:{page}");
    let ws_port = format!("-ws-port={}", free_port());
    let rs_port = redis.port().to_string();
    let args = [
        "-ws-origin",
        &origin,
        "-rs-port",
        &rs_port,
        "-rs-channel=news,user.*",
        "-history=100",
        &ws_port,
    ];
    let relay = Relay::start(&args);
    relay.wait_subscribed(1);
    let ws_url = format!("ws://127.0.0.1:{}/?channel=news", relay.port);
    let client = driver.session().await;
    open_v1_page(&client, &origin, &ws_url).await;
    redis.publish("news", b"\"n1\"");
    redis.publish("user.9", b"\"u1\"");
    wait_view(&client, "two messages", |v| v.messages.len() == 3).await;

    drop(relay);
    wait_view(&client, "the close", |v| {
        v.detail.contains("closed (code 1006)")
    })
    .await;
    let relay = Relay::start(&args);
    relay.wait_subscribed(1);
    let lost = |v: &View| {
        v.messages
            .iter()
            .filter(|m| m.3.contains("not-recovered"))
            .count()
    };
    wait_view(&client, "two not-recovered lines", |v| lost(v) == 2).await;
    redis.publish("news", b"\"n2\"");
    let v = wait_view(&client, "n2", |v| {
        v.messages.iter().any(|m| m.1.contains("n2"))
    })
    .await;
    let e = entries(&v);
    assert_eq!(shown(&e, "news"), ["n1", "n2"], "{e:#?}");
    assert_eq!(shown(&e, "user.9"), ["u1"], "{e:#?}");
    for channel in ["news", "user.9"] {
        let line = Entry::Recovered(channel.into(), false, "message not-recovered".into());
        assert!(position(&e, |x| *x == line) < position(&e, is_data("news", "n2")));
    }
    assert!(v.detail.contains("not recovered"), "{v:#?}");
    assert_eq!(eval(&client, "return pubsocketd.duplicates;").await, 0);
    eval(
        &client,
        "document.querySelector('#feedback .message:last-child').scrollIntoView();",
    )
    .await;
    let shot = screenshot(&client, "browser-v1-not-recovered.png").await;
    eprintln!("screenshot: {}", shot.display());
    client.close().await.expect("end the browser session");
    drop(driver);
}

/// Under `-auth=jwt`, three `PubSocket`s made in the page with a short
/// token and a `getToken`: one refreshes in place before `exp` and stays;
/// one whose `getToken` fails until `exp` is closed with 4401 and comes
/// back with a fresh token; one refreshed to a token that no longer covers
/// its channel is closed with 4403 and does not retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_refreshes_its_token() {
    let driver = ChromeDriver::start();
    let redis = RedisServer::start();
    let page = serve_page();
    let origin = format!("http://127.0.0.1:{page}");
    let secret = "browser-test-secret-0123456789abcdef";
    let relay = page_relay(
        &origin,
        &redis,
        &[
            "-auth=jwt",
            &format!("-auth-jwt-secret={secret}"),
            "-auth-leeway=0s",
        ],
    );
    let mint = |claims: &str| common::jwt::mint(&["sign", "HS256", secret, claims]);
    let long = mint(r#"{"sub":"long","exp":"+3600","channels":["news","user.*"]}"#);
    let narrow = mint(r#"{"sub":"narrow","exp":"+3600","channels":["alerts"]}"#);
    let ws_url = format!("ws://127.0.0.1:{}/?channel=news", relay.port);
    let client = driver.session().await;
    // Any page of the origin will do: this one speaks the original's
    // protocol to a relay that refuses it a token (401), which leaves the
    // three clients below on their own.
    client
        .goto(&format!("{origin}/index.html?url={ws_url}"))
        .await
        .expect("load the page");
    let short = |sub: &str| {
        mint(&format!(
            r#"{{"sub":"{sub}","exp":"+6","channels":["news","user.*"]}}"#
        ))
    };
    let shorts = [short("refresh"), short("lapse"), short("narrowed")];
    let made = Instant::now();
    client
        .execute(
            r#"
            const [url, refresh, lapse, narrowed, long, narrow] = arguments;
            return (async () => {
              const { PubSocket, jwtExp } = await import("./pubsocketd.js");
              window.log = { refresh: [], lapse: [], narrowed: [] };
              const record = (name) => ({
                onState: (s, i) => window.log[name].push(s === "closed" || s === "stopped" ? s + " " + i.code : s),
                onAnswer: (a) => window.log[name].push("answer " + Object.keys(a)[0]),
                onMessage: (c, d) => window.log[name].push("message " + c + " " + d),
                onError: (e) => window.log[name].push("error " + e.message),
              });
              const expired = jwtExp(lapse) * 1000;
              window.clients = {
                refresh: new PubSocket(url, { token: refresh, getToken: async () => long,
                                              channels: ["user.9"], ...record("refresh") }),
                lapse: new PubSocket(url, { token: lapse, ...record("lapse"), getToken: async () => {
                  if (Date.now() < expired) throw new Error("offline");
                  return long;
                } }),
                narrowed: new PubSocket(url, { token: narrowed, getToken: async () => narrow,
                                               ...record("narrowed") }),
              };
            })();
            "#,
            vec![
                ws_url.clone().into(),
                shorts[0].clone().into(),
                shorts[1].clone().into(),
                shorts[2].clone().into(),
                long.clone().into(),
                narrow.into(),
            ],
        )
        .await
        .expect("make the clients");
    let log = |name: &'static str| {
        let client = client.clone();
        async move {
            let v = eval(&client, &format!("return window.log.{name};")).await;
            let lines = v.as_array().expect("a log").iter();
            lines
                .map(|l| l.as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    let deadline = Instant::now() + PATIENCE;
    loop {
        let lapse = log("lapse").await;
        let back = lapse
            .iter()
            .skip_while(|l| *l != "closed 4401")
            .any(|l| l == "open");
        let narrowed = log("narrowed").await;
        if back && narrowed.iter().any(|l| l == "stopped 4403") {
            break;
        }
        assert!(Instant::now() < deadline, "{lapse:?} {narrowed:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Past exp and a worker's tick (5 s): the refreshed client is still open.
    let past = made + Duration::from_secs(6 + 6);
    tokio::time::sleep(past.saturating_duration_since(Instant::now())).await;
    redis.publish("news", b"\"after\"");
    redis.publish("user.9", b"\"for 9\"");
    let deadline = Instant::now() + PATIENCE;
    let (refresh, lapse) = loop {
        let (refresh, lapse) = (log("refresh").await, log("lapse").await);
        if refresh.len() >= 6 && lapse.iter().any(|l| l.starts_with("message")) {
            break (refresh, lapse);
        }
        assert!(Instant::now() < deadline, "{refresh:?} {lapse:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        refresh,
        [
            "connecting",
            "open",
            "answer subscribed",
            "answer refreshed",
            "message news after",
            "message user.9 for 9",
        ]
    );
    assert!(lapse.iter().any(|l| l == "error offline"), "{lapse:?}");
    assert_eq!(lapse.last().unwrap(), "message news after", "{lapse:?}");
    let narrowed = log("narrowed").await;
    assert_eq!(
        narrowed,
        ["connecting", "open", "closed 4403", "stopped 4403"],
        "{narrowed:?}"
    );
    let connects = |sub: &str| relay.stdout.count(&format!("[connect] OK sub=\"{sub}\""));
    assert_eq!(
        (connects("refresh"), connects("lapse"), connects("narrowed")),
        (1, 1, 1)
    );
    assert_eq!(
        connects("long"),
        1,
        "the lapsed client came back with the long token"
    );
    client.close().await.expect("end the browser session");
    drop(driver);
}

/// `since: "last"`, in the URL (`since=news:last`, read by the module as
/// the starting point of `news`) and as an option for a channel
/// subscribed by message: each starts with the channel's latest kept
/// message, then the live ones. Asked for the latest again, the relay
/// repeats a message the module already delivered: dropped and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_starts_from_the_last_message() {
    let driver = ChromeDriver::start();
    let redis = RedisServer::start();
    let page = serve_page();
    let origin = format!("http://127.0.0.1:{page}");
    let relay = page_relay(&origin, &redis, &["-history=100"]);
    for (channel, data) in [
        ("news", "a"),
        ("user.9", "x"),
        ("news", "b"),
        ("user.9", "y"),
    ] {
        assert_eq!(redis.publish(channel, format!("\"{data}\"").as_bytes()), 1);
    }
    let client = driver.session().await;
    // A page of the origin that makes no connection of its own.
    client
        .goto(&format!("{origin}/index.html?url=ws://127.0.0.1:1/"))
        .await
        .expect("load the page");
    let ws_url = format!(
        "ws://127.0.0.1:{}/?channel=news&since=news:last",
        relay.port
    );
    client
        .execute(
            r#"
            const [url] = arguments;
            return (async () => {
              const { PubSocket } = await import("./pubsocketd.js");
              window.log = [];
              window.last = new PubSocket(url, {
                channels: ["user.9"],
                since: { "user.9": "last" },
                onMessage: (c, d) => window.log.push(c + " " + d),
                onAnswer: (a) => window.log.push(Object.keys(a)[0]),
              });
            })();
            "#,
            vec![ws_url.into()],
        )
        .await
        .expect("make the client");
    let log = || async {
        let v = eval(&client, "return window.log;").await;
        let lines = v.as_array().expect("a log").iter();
        lines
            .map(|l| l.as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let deadline = Instant::now() + PATIENCE;
    while !log().await.iter().any(|l| l == "user.9 y") {
        assert!(Instant::now() < deadline, "{:?}", log().await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    redis.publish("news", b"\"c\"");
    redis.publish("user.9", b"\"z\"");
    while log().await.len() < 5 {
        assert!(Instant::now() < deadline, "{:?}", log().await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = log().await;
    let of = |channel: &str| -> Vec<String> {
        log.iter()
            .filter_map(|l| l.strip_prefix(&format!("{channel} ")))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(of("news"), ["b", "c"], "{log:?}");
    assert_eq!(of("user.9"), ["y", "z"], "{log:?}");
    assert_eq!(
        log.iter().filter(|l| *l == "subscribed").count(),
        1,
        "{log:?}"
    );
    assert_eq!(eval(&client, "return window.last.duplicates;").await, 0);

    // Asked again for the latest message of a channel it reads, the relay
    // sends z a second time: the module drops it, and counts it.
    eval(
        &client,
        r#"window.last.subscribe(["user.9"], { "user.9": "last" });"#,
    )
    .await;
    let deadline = Instant::now() + PATIENCE;
    while eval(&client, "return window.last.duplicates;").await != 1 {
        assert!(Instant::now() < deadline, "{log:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    redis.publish("user.9", b"\"end\"");
    let deadline = Instant::now() + PATIENCE;
    let log = loop {
        let v = eval(&client, "return window.log;").await;
        let log: Vec<String> = v
            .as_array()
            .expect("a log")
            .iter()
            .map(|l| l.as_str().unwrap().to_string())
            .collect();
        if log.iter().any(|l| l == "user.9 end") {
            break log;
        }
        assert!(Instant::now() < deadline, "{log:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        log.iter().filter(|l| *l == "user.9 z").count(),
        1,
        "{log:?}"
    );
    client.close().await.expect("end the browser session");
    drop(driver);
}

/// The arguments of a relay of the stream `news` for the page at `origin`,
/// on a fixed free port, so that a relay started again is where the page
/// reconnects.
fn stream_relay_args(origin: &str, redis: &RedisServer) -> Vec<String> {
    vec![
        format!("-ws-origin={origin}"),
        format!("-rs-port={}", redis.port()),
        "-rs-mode=stream".into(),
        "-rs-channel=news".into(),
        format!("-ws-port={}", free_port()),
    ]
}

/// XADD news * data "<text>": the ID Redis gave.
fn xadd(redis: &RedisServer, text: &str) -> String {
    let data = format!("\"{text}\"");
    match redis.command(&[b"XADD", b"news", b"*", b"data", data.as_bytes()]) {
        Resp::Bulk(Some(id)) => String::from_utf8(id).unwrap(),
        other => panic!("XADD news: {other:?}"),
    }
}

/// SIGTERM, and a clean exit.
fn stop(relay: &mut Relay) {
    relay.signal(libc::SIGTERM);
    let status = relay
        .wait_exit(PATIENCE)
        .expect("the relay exits on SIGTERM");
    assert!(status.success(), "{status:?}");
}

/// The last message scrolled into view and shot as `name`, the session
/// ended, and the (second) relay's log printed for a failure's reader.
async fn finish(client: Client, driver: ChromeDriver, name: &str, relay: &Relay) {
    eval(
        &client,
        "document.querySelector('#feedback .message:last-child').scrollIntoView();",
    )
    .await;
    let shot = screenshot(&client, name).await;
    eprintln!("screenshot: {}", shot.display());
    client.close().await.expect("end the browser session");
    drop(driver);
    eprintln!("second relay's log:\n{}", relay.stdout.all().join("\n"));
}

/// Under `-rs-mode=stream` the relay is stopped (SIGTERM, close 1001) and
/// entries are added while none runs; a relay started again on the same
/// port holds none of them in memory, so it reads them from Redis (XRANGE)
/// for the module's `since=news:<id>`: the page shows every entry exactly
/// once, in order, with Redis' IDs, then "news: recovered", then live ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_recovered_from_a_stream_after_a_relay_restart() {
    let driver = ChromeDriver::start();
    let redis = RedisServer::start();
    let page = serve_page();
    let origin = format!("http://127.0.0.1:{page}");
    let args = stream_relay_args(&origin, &redis);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let xadd = |text: &str| xadd(&redis, text);
    // Before any relay: a relay starts after the newest entry, so not shown.
    xadd("n0");
    let mut relay = Relay::start(&args);
    wait_log(&relay, "[redis] reading streams");
    let ws_url = format!("ws://127.0.0.1:{}/?channel=news", relay.port);
    let client = driver.session().await;
    client
        .goto(&format!("{origin}/index.html?protocol=v1&url={ws_url}"))
        .await
        .expect("load the page");
    wait_view(&client, "state open", |v| v.state == "open").await;
    wait_log(&relay, "[connect] OK");
    let mut ids = vec![xadd("n1"), xadd("n2")];
    wait_view(&client, "two messages", |v| v.messages.len() == 2).await;

    stop(&mut relay);
    wait_view(&client, "the close", |v| v.state != "open").await;
    ids.extend(["n3", "n4", "n5"].map(xadd));
    let relay = Relay::start(&args);
    wait_log(&relay, "[redis] reading streams");
    // The page reconnects by itself, with backoff.
    let recovered = |v: &View| v.messages.iter().any(|m| m.3.contains("recovered"));
    wait_view(&client, "the recovery line", recovered).await;
    ids.push(xadd("n6"));
    let v = wait_view(&client, "n6", |v| {
        v.messages.iter().any(|m| m.1.contains("n6"))
    })
    .await;
    let e = entries(&v);

    let news: Vec<(Value, Option<String>)> = e
        .iter()
        .filter_map(|e| match e {
            Entry::Message(c, data, id) if c == "news" => Some((data.clone(), id.clone())),
            _ => None,
        })
        .collect();
    let expected: Vec<(Value, Option<String>)> = ["n1", "n2", "n3", "n4", "n5", "n6"]
        .iter()
        .zip(&ids)
        .map(|(data, id)| (json!(data), Some(id.clone())))
        .collect();
    assert_eq!(news, expected, "every entry once, in order: {e:#?}");
    let line = Entry::Recovered("news".into(), true, "message recovered".into());
    assert_eq!(e.iter().filter(|x| **x == line).count(), 1, "{e:#?}");
    let at = position(&e, |x| *x == line);
    assert!(position(&e, is_data("news", "n5")) < at, "{e:#?}");
    assert!(at < position(&e, is_data("news", "n6")), "{e:#?}");
    assert_eq!(e.len(), 7, "nothing else: {e:#?}");
    assert!(v.detail.contains("news: recovered"), "{v:#?}");
    assert_eq!(eval(&client, "return pubsocketd.duplicates;").await, 0);
    assert_eq!(relay.stdout.count("[connect] OK"), 1);
    finish(client, driver, "browser-stream-recovered.png", &relay).await;
}

/// A channel the page reads under a pattern it subscribed by message
/// (`user.*`) resumes too: the module names it in that subscribe's `since`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_resumes_a_channel_under_a_subscribed_pattern() {
    let driver = ChromeDriver::start();
    let redis = RedisServer::start();
    let page = serve_page();
    let origin = format!("http://127.0.0.1:{page}");
    let relay = page_relay(&origin, &redis, &["-history=100", "-log-level=debug"]);
    let ws_url = format!("ws://127.0.0.1:{}/?channel=news", relay.port);
    let client = driver.session().await;
    client
        .goto(&format!("{origin}/index.html?protocol=v1&url={ws_url}"))
        .await
        .expect("load the page");
    wait_view(&client, "state open", |v| v.state == "open").await;
    use_box(&client, "subscribe", "user.*").await;
    wait_view(&client, "the subscribed answer", |v| v.messages.len() == 1).await;
    redis.publish("user.5", b"\"u1\"");
    wait_view(&client, "u1", |v| v.messages.len() == 2).await;
    eval(&client, "pubsocketd.drop(2000);").await;
    wait_log(&relay, "[disconnect]");
    redis.publish("user.5", b"\"u2\"");
    redis.publish("user.5", b"\"u3\"");
    let v = wait_view(&client, "the recovery line", |v| {
        v.messages.iter().any(|m| m.3.contains("recovered"))
    })
    .await;
    let e = entries(&v);
    assert_eq!(shown(&e, "user.5"), ["u1", "u2", "u3"], "{e:#?}");
    let line = Entry::Recovered("user.5".into(), true, "message recovered".into());
    assert!(position(&e, is_data("user.5", "u3")) < position(&e, |x| *x == line));
    assert_eq!(eval(&client, "return pubsocketd.duplicates;").await, 0);
    client.close().await.expect("end the browser session");
    drop(driver);
}

/// A message of the SSE mode's feed: (data-raw, data-id, data-channel,
/// class).
async fn sse_feed(client: &Client) -> Vec<(String, String, String, String)> {
    let v = eval(
        client,
        r##"return Array.from(document.querySelectorAll("#feedback .message")).map((e) =>
             [e.getAttribute("data-raw"), e.getAttribute("data-id") || "",
              e.getAttribute("data-channel") || "", e.className]);"##,
    )
    .await;
    let rows = v.as_array().expect("the feed").iter();
    rows.map(|m| {
        let f = |i: usize| m[i].as_str().unwrap_or_default().to_string();
        (f(0), f(1), f(2), f(3))
    })
    .collect()
}

/// `protocol=sse`: the page reads the relay with the browser's EventSource.
/// Under `-rs-mode=stream` the relay is stopped (SIGTERM: the closing
/// comment, then the end) and entries are added while none runs; the relay
/// is started again on the same port, EventSource reconnects by itself
/// after the relay's `retry:` with `Last-Event-ID`, and the relay reads
/// what it missed from Redis: the page shows every entry exactly once, in
/// order, with Redis' IDs, then "news: recovered", then live ones — with
/// the one EventSource it made, and one connection to the new relay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_mode_resumes_by_itself_across_a_relay_restart() {
    let driver = ChromeDriver::start();
    let redis = RedisServer::start();
    let page = serve_page();
    let origin = format!("http://127.0.0.1:{page}");
    let args = stream_relay_args(&origin, &redis);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let xadd = |text: &str| xadd(&redis, text);
    xadd("n0"); // before any relay: not shown
    let mut relay = Relay::start(&args);
    wait_log(&relay, "[redis] reading streams");
    let sse_url = format!("http://127.0.0.1:{}/events?channel=news", relay.port);
    let client = driver.session().await;
    client
        .goto(&format!("{origin}/index.html?protocol=sse&url={sse_url}"))
        .await
        .expect("load the page");
    wait_view(&client, "state open", |v| v.state == "open").await;
    assert_eq!(
        eval(&client, "return document.getElementById('mode').value;").await,
        "sse"
    );
    // Probes until one is shown: from then on the relay has the client.
    let mut ids = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    while view(&client).await.messages.is_empty() {
        assert!(Instant::now() < deadline, "no probe shown");
        ids.push(xadd(&format!("probe-{}", ids.len() + 1)));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let probes = ids.len();
    wait_view(&client, "every probe", |v| v.messages.len() == probes).await;
    ids.push(xadd("n1"));
    ids.push(xadd("n2"));
    wait_view(&client, "n1 and n2", |v| v.messages.len() == probes + 2).await;

    stop(&mut relay);
    wait_view(&client, "the reconnecting state", |v| {
        v.state == "reconnecting (EventSource retries)"
    })
    .await;
    ids.extend(["n3", "n4", "n5"].map(xadd));
    let relay = Relay::start(&args);
    wait_log(&relay, "[redis] reading streams");
    let recovered = |v: &View| v.messages.iter().any(|m| m.3.contains("recovered"));
    wait_view(&client, "the recovery line", recovered).await;
    assert_eq!(view(&client).await.state, "open");
    ids.push(xadd("n6"));
    let v = wait_view(&client, "n6", |v| {
        v.messages.iter().any(|m| m.1.contains("n6"))
    })
    .await;

    let feed = sse_feed(&client).await;
    let shown: Vec<(String, String)> = feed
        .iter()
        .filter(|m| m.3 == "message")
        .map(|m| (m.0.clone(), m.1.clone()))
        .collect();
    let texts: Vec<String> = (1..=probes)
        .map(|k| format!("probe-{k}"))
        .chain(["n1", "n2", "n3", "n4", "n5", "n6"].map(String::from))
        .collect();
    let expected: Vec<(String, String)> = texts
        .iter()
        .zip(&ids)
        .map(|(text, id)| (format!("\"{text}\""), id.clone()))
        .collect();
    assert_eq!(shown, expected, "every entry once, in order, with its ID");
    assert!(
        feed.iter().all(|m| m.2.is_empty()),
        "unnamed events: {feed:#?}"
    );
    let line = (
        r#"{"channel":"news","recovered":true}"#.to_string(),
        String::new(),
        String::new(),
        "message recovered".to_string(),
    );
    let at = feed.iter().position(|m| *m == line);
    assert_eq!(feed.iter().filter(|m| **m == line).count(), 1, "{feed:#?}");
    let at = at.unwrap();
    assert_eq!(feed[at - 1].0, "\"n5\"", "after the replay: {feed:#?}");
    assert_eq!(feed[at + 1].0, "\"n6\"", "before the live ones: {feed:#?}");
    assert_eq!(feed.len(), probes + 7, "nothing else: {feed:#?}");
    assert!(v.detail.contains("news: recovered"), "{v:#?}");
    assert_eq!(eval(&client, "return window.eventSources;").await, 1);
    assert_eq!(relay.stdout.count("[connect] OK (events)"), 1);
    finish(client, driver, "browser-sse-recovered.png", &relay).await;
}

/// The production layout of `contrib/nginx-pubsocketd.conf`: one nginx
/// serves the page (at `/`) and proxies the relay (at `/ws/`), so the page
/// and the relay share an origin, which `-ws-origin` names. The page reads
/// news over a WebSocket and over SSE (a relative url). A same-origin
/// EventSource sends no `Origin` header (Fetch adds it to a GET only for a
/// cross-origin request): the relay takes `Sec-Fetch-Site: same-origin`
/// instead (it refused it with 403 before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_page_behind_nginx_on_one_origin() {
    use common::nginx::{Extra, Nginx};
    let driver = ChromeDriver::start();
    let redis = RedisServer::start();
    let relay_port = free_port();
    let extra = Extra {
        location: "",
        server: "    location / {\n        root @PREFIX@/www;\n    }\n",
    };
    let nginx = Nginx::start(relay_port, extra);
    nginx.copy_demo_page();
    let origin = format!("http://127.0.0.1:{}", nginx.port);
    let relay = Relay::start(&[
        "-ws-origin",
        &origin,
        "-rs-port",
        &redis.port().to_string(),
        "-rs-channel=news",
        "-ws-route=/ws/",
        &format!("-ws-port={relay_port}"),
    ]);
    relay.wait_subscribed(1);
    let client = driver.session().await;
    for (query, connect) in [
        (
            format!("url=ws://127.0.0.1:{}/ws/?channel=news", nginx.port),
            "[connect] OK",
        ),
        (
            "protocol=sse&url=/ws/events?channel=news".to_string(),
            "[connect] OK (events)",
        ),
    ] {
        client
            .goto(&format!("{origin}/index.html?{query}"))
            .await
            .expect("load the page");
        let v = wait_view(&client, "open, or a refusal", |v| {
            v.state == "open" || v.state.starts_with("reconnecting in")
        })
        .await;
        assert_eq!(
            v.state,
            "open",
            "{query}: {v:#?}\nrelay: {:#?}",
            relay.stdout.all()
        );
        wait_log(&relay, connect);
        // Published until shown: the relay may not have the client yet.
        let deadline = Instant::now() + PATIENCE;
        while view(&client).await.messages.is_empty() {
            assert!(Instant::now() < deadline, "{query}: nothing shown");
            redis.publish("news", b"\"same origin\"");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(view(&client).await.messages[0].1, "\"same origin\"");
    }
    client.close().await.expect("end the browser session");
    drop(driver);
}
