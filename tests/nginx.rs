//! The relay behind nginx, configured by `contrib/nginx-pubsocketd.conf` as
//! a user would install it (the file is read here, so the tested block is
//! the shipped one): one location serves the WebSocket upgrade and SSE, the
//! relay believes the `X-Real-IP` nginx sets, and an event published after
//! the clients connect reaches both transports at once (nginx does not
//! buffer SSE, because of the relay's `X-Accel-Buffering: no`; without it,
//! it does, which shows the check can fail).
//!
//! Needs Debian's nginx (run `.ci/install-test-deps`); the test runs its
//! own nginx (`daemon off;`, a free port, pid, logs and temporary files in
//! a temporary directory), never the system's service.

mod common;

use common::redis::{free_port, RedisServer};
use common::relay::Relay;
use common::sse::{self, Sse};
use socket2::{Domain, Socket, Type};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::{self, Message};

const NGINX: &str = "/usr/sbin/nginx";
const T: Duration = Duration::from_secs(20);
/// What "at once" means here: far above a loopback hop, far below the
/// time an event waits in nginx's buffers (forever, for a quiet feed).
const PROMPTLY: Duration = Duration::from_secs(2);
/// The address the clients connect from, so that the relay's log shows
/// which address it believed (nginx itself connects from 127.0.0.1).
const CLIENT_IP: [u8; 4] = [127, 0, 0, 2];

/// The shipped configuration, with its listen line and the upstream's
/// server line pointed at `listen` and `relay`, and `extra` added to the
/// location.
fn configuration(listen: u16, relay: u16, extra: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/nginx-pubsocketd.conf");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut text = text;
    for (from, to) in [
        (
            "    listen 80;\n",
            format!("    listen 127.0.0.1:{listen};\n"),
        ),
        (
            "    server 127.0.0.1:8080;\n",
            format!("    server 127.0.0.1:{relay};\n"),
        ),
        (
            "    location /ws/ {\n",
            format!("    location /ws/ {{\n{extra}"),
        ),
    ] {
        assert_eq!(
            text.matches(from).count(),
            1,
            "{from:?} in {}",
            path.display()
        );
        text = text.replace(from, &to);
    }
    text
}

/// An nginx master process (and its worker), in its own process group so
/// that dropping it ends both.
struct Nginx {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Nginx {
    /// Runs `http` (the tested `http`-block text) in an nginx whose other
    /// settings are those of Debian's nginx.conf, on a free port.
    fn start(relay_port: u16, extra: &str) -> Nginx {
        assert!(
            Path::new(NGINX).exists(),
            "{NGINX} is missing: install Debian's nginx (run .ci/install-test-deps)"
        );
        let dir = tempfile::tempdir().expect("a temporary directory");
        // Run as root, nginx's worker runs as nobody: it must reach the
        // temporary files' directory.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let d = dir.path().display();
        for _ in 0..3 {
            let port = free_port();
            let conf = format!(
                "daemon off;\n\
                 worker_processes 1;\n\
                 pid {d}/nginx.pid;\n\
                 error_log {d}/error.log info;\n\
                 events {{ worker_connections 256; }}\n\
                 http {{\n\
                 include /etc/nginx/mime.types;\n\
                 default_type application/octet-stream;\n\
                 sendfile on;\n\
                 tcp_nopush on;\n\
                 gzip on;\n\
                 access_log {d}/access.log;\n\
                 client_body_temp_path {d}/body;\n\
                 proxy_temp_path {d}/proxy;\n\
                 fastcgi_temp_path {d}/fastcgi;\n\
                 uwsgi_temp_path {d}/uwsgi;\n\
                 scgi_temp_path {d}/scgi;\n\
                 {}\n}}\n",
                configuration(port, relay_port, extra)
            );
            let conf_path = dir.path().join("nginx.conf");
            std::fs::write(&conf_path, conf).unwrap();
            let mut child = Command::new(NGINX)
                .arg("-p")
                .arg(dir.path())
                .arg("-c")
                .arg(&conf_path)
                .arg("-e")
                .arg(dir.path().join("error.log"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {NGINX}: {e}"));
            let deadline = Instant::now() + T;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Nginx { child, port, dir };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!(
            "nginx did not start; its log:\n{}",
            std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
        );
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A socket to nginx from [`CLIENT_IP`].
    fn connect(&self) -> TcpStream {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        let from: SocketAddr = (CLIENT_IP, 0).into();
        socket.bind(&from.into()).expect("bind 127.0.0.2");
        let to: SocketAddr = ([127, 0, 0, 1], self.port).into();
        socket.connect(&to.into()).expect("connect to nginx");
        let sock: TcpStream = socket.into();
        sock.set_nodelay(true).unwrap();
        sock
    }

    /// An SSE stream through nginx, as an HTTP/1.1 client asks for it.
    fn sse(&self, path: &str) -> Sse {
        let s = Sse::over(self.connect(), &sse::request(path, ""));
        assert_eq!(s.status, 200, "{}", s.head);
        s
    }

    /// A WebSocket through nginx (tungstenite, at its defaults).
    fn websocket(&self, path: &str) -> tungstenite::WebSocket<TcpStream> {
        let url = format!("ws://127.0.0.1:{}{path}", self.port);
        let (ws, response) = tungstenite::client::client(url, self.connect())
            .unwrap_or_else(|e| panic!("WebSocket through nginx: {e}"));
        assert_eq!(response.status(), 101);
        ws
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM is nginx's fast shutdown; the group, so that the worker
        // goes even if the master is gone.
        let group = -(self.child.id() as i32);
        unsafe { libc::kill(group, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        unsafe { libc::kill(group, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// The next text message, or `None` after `timeout`; panics on an error.
fn ws_text(ws: &mut tungstenite::WebSocket<TcpStream>, timeout: Duration) -> Option<String> {
    ws.get_ref()
        .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
        .unwrap();
    loop {
        match ws.read() {
            Ok(Message::Text(t)) => return Some(t.to_string()),
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            Ok(other) => panic!("unexpected message: {other:?}"),
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return None
            }
            Err(e) => panic!("WebSocket through nginx: {e}"),
        }
    }
}

/// A relay of `news` under `-ws-route=/ws/`, believing 127.0.0.1.
fn relay(redis: &RedisServer) -> Relay {
    let port = redis.port().to_string();
    let r = Relay::start(&[
        "-rs-port",
        &port,
        "-ws-insecure",
        "-ws-route=/ws/",
        "-rs-channel=news",
        "-ws-trusted-proxies",
        "127.0.0.1",
    ]);
    r.wait_subscribed(1);
    r
}

/// Through the shipped configuration: a WebSocket and two SSE streams (the
/// SSE route, and the WebSocket route with `Accept: text/event-stream`)
/// from 127.0.0.2; the relay logs 127.0.0.2 for each (X-Real-IP believed
/// from 127.0.0.1); an event published after they connect reaches each
/// within [`PROMPTLY`]; SIGTERM's closing comment and the end pass through.
#[test]
fn websocket_and_sse_through_nginx() {
    let redis = RedisServer::start();
    let mut r = relay(&redis);
    let nginx = Nginx::start(r.port, "");
    let mut ws = nginx.websocket("/ws/?channel=news");
    let mut streams = [
        nginx.sse("/ws/events?channel=news"),
        nginx.sse("/ws/?channel=news"),
    ];
    for s in &mut streams {
        assert_eq!(
            s.header("Content-Type").as_deref(),
            Some("text/event-stream"),
            "{}",
            s.head
        );
        // nginx answers an HTTP/1.1 client in chunks, one per event.
        assert_eq!(s.header("Transfer-Encoding").as_deref(), Some("chunked"));
        assert_eq!(s.event().lines, ["retry: 3000"]);
    }
    sse::probe(
        &redis,
        "news",
        |t| ws_text(&mut ws, t),
        |t| Some(t.as_str()),
    );
    for s in &mut streams {
        s.ready(&redis, "news");
    }
    // Each has read the others' probes too.
    redis.publish("news", b"fence");
    while ws_text(&mut ws, T).expect("the fence") != "fence" {}
    for s in &mut streams {
        s.until("fence");
    }
    // Everything the clients were sent so far is read: now one event.
    let sent = Instant::now();
    assert_eq!(redis.publish("news", b"{\"after\":\"connect\"}"), 1);
    let text = ws_text(&mut ws, PROMPTLY).expect("the event, over the WebSocket");
    assert_eq!(text, "{\"after\":\"connect\"}");
    for s in &mut streams {
        let e = s
            .try_event(PROMPTLY.saturating_sub(sent.elapsed()))
            .unwrap_or_else(|()| panic!("not within {PROMPTLY:?}: nginx buffered it"))
            .expect("the stream goes on");
        assert_eq!(e.lines, ["data: {\"after\":\"connect\"}"]);
    }
    let took = sent.elapsed();
    assert!(took < PROMPTLY, "{took:?}");
    eprintln!("published to received on all three, through nginx: {took:?}");

    // Each of the three was logged with the address nginx named.
    let believed = format!("[{}][127.0.0.1:", "127.0.0.2");
    let lines: Vec<String> = r.stdout.all();
    let connects = lines
        .iter()
        .filter(|l| l.contains(&believed) && l.contains("[connect]"))
        .count();
    assert_eq!(connects, 3, "{lines:#?}");

    // SIGTERM: the WebSocket gets 1001, each stream its closing comment,
    // then the end, which nginx passes on as a complete response.
    r.signal(libc::SIGTERM);
    for s in &mut streams {
        let rest = s.rest();
        let last = rest.last().map(|e| e.lines.clone());
        assert_eq!(last, Some(vec![": server shutting down".to_string()]));
        assert!(s.complete, "nginx ended the response with its last chunk");
    }
    ws.get_ref().set_read_timeout(Some(T)).unwrap();
    let close = loop {
        match ws.read() {
            Ok(Message::Close(frame)) => break frame.map(|f| u16::from(f.code)),
            Ok(_) => continue,
            Err(e) => panic!("no close frame: {e}"),
        }
    };
    assert_eq!(close, Some(1001));
    assert!(r.wait_exit(T).is_some_and(|s| s.success()));
    let access = nginx.log("access.log");
    assert!(
        access.contains("GET /ws/events?channel=news HTTP/1.1\" 200"),
        "{access}"
    );
    assert!(
        access.contains("GET /ws/?channel=news HTTP/1.1\" 101"),
        "{access}"
    );
}

/// The same configuration with `proxy_ignore_headers X-Accel-Buffering;`
/// added: small events published for [`PROMPTLY`] do not come through (not
/// even the head: nginx holds it all in its buffers), and do, in order,
/// once enough follows to fill the buffers. This is what the relay's header
/// prevents, and what the test above would catch.
#[test]
fn without_the_header_nginx_buffers_events() {
    let redis = RedisServer::start();
    let r = relay(&redis);
    let nginx = Nginx::start(r.port, "        proxy_ignore_headers X-Accel-Buffering;\n");
    let mut s = Sse::sent(
        nginx.connect(),
        &sse::request("/ws/events?channel=news", ""),
    );
    r.stdout
        .wait_for("[connect] OK (events)", T)
        .unwrap_or_else(|| panic!("no connect line: {:#?}", r.stdout.all()));
    let until = Instant::now() + PROMPTLY;
    let mut published = 0;
    while Instant::now() < until {
        published += 1;
        redis.publish("news", format!("small-{published}").as_bytes());
        assert!(
            !s.read_head(Duration::from_millis(100)),
            "came through unbuffered: {}",
            s.head
        );
    }
    // 64 KiB more: nginx's buffers fill and it passes them on.
    let filler = "f".repeat(1024);
    for _ in 0..64 {
        redis.publish("news", filler.as_bytes());
    }
    assert!(s.read_head(T), "no head even after 64 KiB");
    assert_eq!(s.status, 200, "{}", s.head);
    assert_eq!(s.event().lines, ["retry: 3000"]);
    let mut small = Vec::new();
    let first_filler = loop {
        let e = s.event();
        match e.data().strip_prefix("small-") {
            Some(n) => small.push(n.parse::<u32>().unwrap()),
            None => break e,
        }
    };
    assert_eq!(first_filler.data(), filler);
    // The client was in place for the later ones at least: each arrived,
    // in order, only now.
    assert!(!small.is_empty(), "none of {published} small events");
    let from = small[0];
    assert_eq!(small, (from..=published).collect::<Vec<_>>());
}
