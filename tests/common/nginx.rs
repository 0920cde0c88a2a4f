//! An nginx of the test's own (never the system's service) in front of a
//! relay, configured by the shipped `contrib/nginx-pubsocketd.conf`, read
//! here so that the tested block is the one users copy: `daemon off;`, a
//! free port, its pid, logs and temporary files in a temporary directory.
//! Needs Debian's nginx (run `.ci/install-test-deps`).

use super::redis::free_port;
use super::sse_wire::{self as sse, Sse};
use socket2::{Domain, Socket, Type};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite;

const T: Duration = Duration::from_secs(20);

pub const NGINX: &str = "/usr/sbin/nginx";
/// The address the clients connect from, so that the relay's log shows
/// which address it believed (nginx itself connects from 127.0.0.1).
pub const CLIENT_IP: [u8; 4] = [127, 0, 0, 2];

/// What a test adds to the shipped configuration.
#[derive(Default, Clone, Copy)]
pub struct Extra<'a> {
    /// Lines added at the top of the relay's location.
    pub location: &'a str,
    /// Lines added to the server block, before that location (e.g. a
    /// location serving the demo page from the same origin). `@PREFIX@`
    /// in either stands for nginx's temporary directory.
    pub server: &'a str,
}

/// The shipped configuration, with its listen line and the upstream's
/// server line pointed at `listen` and `relay`, its log in nginx's
/// temporary directory, and `extra` added.
pub fn configuration(listen: u16, relay: u16, extra: Extra<'_>) -> String {
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
            " /var/log/nginx/pubsocketd.log ",
            " @PREFIX@/pubsocketd.log ".to_string(),
        ),
        (
            "    location /ws/ {\n",
            format!("{}    location /ws/ {{\n{}", extra.server, extra.location),
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
pub struct Nginx {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Nginx {
    /// Runs the shipped configuration (with `extra`) in the `http` block of
    /// an nginx whose other settings are those of Debian's nginx.conf, on a
    /// free port, in front of the relay on `relay_port`.
    pub fn start(relay_port: u16, extra: Extra<'_>) -> Nginx {
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
                configuration(port, relay_port, extra).replace("@PREFIX@", &d.to_string())
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

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }

    /// Copies `client/index.html` and `client/pubsocketd.js` to
    /// `@PREFIX@/www/` (readable by a worker that runs as nobody).
    pub fn copy_demo_page(&self) {
        let www = self.path("www");
        std::fs::create_dir_all(&www).unwrap();
        for name in ["index.html", "pubsocketd.js"] {
            let from = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("client")
                .join(name);
            std::fs::copy(&from, www.join(name))
                .unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A socket to nginx from [`CLIENT_IP`].
    pub fn connect(&self) -> TcpStream {
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
    pub fn sse(&self, path: &str) -> Sse {
        let s = Sse::over(self.connect(), &sse::request(path, ""));
        assert_eq!(s.status, 200, "{}", s.head);
        s
    }

    /// A WebSocket through nginx (tungstenite, at its defaults).
    pub fn websocket(&self, path: &str) -> tungstenite::WebSocket<TcpStream> {
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
