//! Abuse and limits on the client side: capacity, descriptor exhaustion,
//! connection storms, slowloris, clients that ignore a close.

mod common;

use common::redis::RedisServer;
use common::relay::{self, next_data, raw_exchange, status_of, upgrade_request, RawWs, Relay, BIN};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

const T: Duration = Duration::from_secs(30);

fn upgrade_status(addr: &str) -> (u16, TcpStream) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    s.write_all(upgrade_request("/", "").as_bytes()).unwrap();
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).unwrap();
    (status_of(&String::from_utf8_lossy(&buf[..n])), s)
}

#[test]
fn past_max_connections_the_answer_is_503() {
    let redis = RedisServer::start();
    let r = Relay::insecure(redis.port(), &["-ws-max-connections=3"]);
    let held: Vec<TcpStream> = (0..3)
        .map(|_| upgrade_status(&r.addr()))
        .map(|(s, c)| {
            assert_eq!(s, 101);
            c
        })
        .collect();
    let resp = raw_exchange(&r.addr(), upgrade_request("/", "").as_bytes());
    assert_eq!(status_of(&resp), 503, "{resp}");
    assert!(resp.contains("-ws-max-connections is 3"), "{resp}");
    drop(held);
    let deadline = Instant::now() + T;
    loop {
        let (s, _c) = upgrade_status(&r.addr());
        if s == 101 {
            break;
        }
        assert!(Instant::now() < deadline, "places never freed");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// CPU seconds (user + system) the process has used.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

#[test]
fn running_out_of_descriptors_backs_off_without_spinning() {
    let redis = RedisServer::start();
    let mut cmd = Command::new(BIN);
    cmd.args([
        "-ws-port=0",
        "-ws-insecure",
        "-workers=1",
        "-ws-max-connections=1000",
    ])
    .arg(format!("-rs-port={}", redis.port()));
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 40,
                rlim_max: 40,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let r = Relay::spawn(cmd);
    assert!(
        r.stdout.wait_for("open file limit 40", T).is_some(),
        "{:?}",
        r.stdout.all()
    );
    r.wait_subscribed(1);
    let mut clients = Vec::new();
    for _ in 0..60 {
        let mut s = TcpStream::connect(r.addr()).unwrap();
        s.write_all(upgrade_request("/", "").as_bytes()).unwrap();
        clients.push(s);
    }
    r.stdout
        .wait_for("[accept] failed", T)
        .expect("EMFILE logged");
    let pid = r.child.id();
    let before = cpu_secs(pid);
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_secs(pid) - before;
    assert!(
        used < 0.5,
        "relay used {used:.2} s of CPU in 2 s while out of descriptors"
    );
    assert_eq!(
        r.stdout.count("[accept] failed"),
        1,
        "logged once per episode"
    );
    drop(clients);
    let deadline = Instant::now() + T;
    loop {
        if let Ok(mut s) = TcpStream::connect(r.addr()) {
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let _ = s.write_all(upgrade_request("/", "").as_bytes());
            let mut buf = [0u8; 64];
            if let Ok(n) = s.read(&mut buf) {
                if buf[..n].starts_with(b"HTTP/1.1 101") {
                    break;
                }
            }
        }
        assert!(Instant::now() < deadline, "never recovered");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[test]
fn a_storm_of_100000_connections_leaves_fds_and_memory_at_baseline() {
    let redis = RedisServer::start();
    let r = Relay::insecure(redis.port(), &[]);
    r.wait_subscribed(1);
    let pid = r.child.id();
    // Warm up, then take the baseline.
    for _ in 0..200 {
        let _ = upgrade_status(&r.addr());
    }
    std::thread::sleep(Duration::from_millis(300));
    let (fds0, rss0) = (open_fds(pid), r.rss_kib());
    let port = r.port;
    let threads: Vec<_> = (0..4u8)
        .map(|t| {
            std::thread::spawn(move || {
                let mut buf = [0u8; 256];
                let req = upgrade_request("/", "");
                for i in 0..25_000u32 {
                    // Spread over source addresses so ephemeral ports last.
                    let src: SocketAddr = format!("127.0.0.{}:0", 2 + t * 4 + (i % 4) as u8)
                        .parse()
                        .unwrap();
                    let sock =
                        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                            .unwrap();
                    sock.bind(&src.into()).unwrap();
                    let dst: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
                    sock.connect(&dst.into()).unwrap();
                    let mut s: TcpStream = sock.into();
                    s.write_all(req.as_bytes()).unwrap();
                    let n = s.read(&mut buf).unwrap();
                    assert!(buf[..n].starts_with(b"HTTP/1.1 101"));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let deadline = Instant::now() + T;
    while open_fds(pid) > fds0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(open_fds(pid), fds0, "descriptors leaked");
    let grown = r.rss_kib().saturating_sub(rss0);
    assert!(
        grown < 16 * 1024,
        "RSS grew {grown} KiB over 100,000 connections"
    );
    let (status, _c) = upgrade_status(&r.addr());
    assert_eq!(status, 101);
}

#[tokio::test]
async fn slowloris_is_cut_at_the_deadline_while_others_are_served() {
    let redis = RedisServer::start();
    let r = Relay::insecure(redis.port(), &["-ws-handshake-timeout=1s"]);
    r.wait_subscribed(1);
    let addr = r.addr();
    let trickler = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        let started = Instant::now();
        for b in upgrade_request("/", &"X-Slow: aaaaaaaaaa\r\n".repeat(40)).bytes() {
            if s.write_all(&[b]).is_err() {
                return started.elapsed();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the trickled request was never cut off");
    });
    let mut ws = relay::connect(&r.url("/"), None).await.unwrap();
    redis.publish("pubsocketd", b"served meanwhile");
    assert_eq!(
        next_data(&mut ws, T).await,
        Message::text("served meanwhile")
    );
    let cut_after = trickler.join().unwrap();
    assert!(cut_after >= Duration::from_millis(900), "{cut_after:?}");
    assert!(cut_after < Duration::from_secs(5), "{cut_after:?}");
}

#[test]
fn a_client_that_never_answers_the_close_is_dropped() {
    let redis = RedisServer::start();
    let mut r = Relay::insecure(redis.port(), &["-shutdown-timeout=60s"]);
    let mut mute = RawWs::open(&r.addr(), b"");
    r.stdout.wait_for("[connect] OK", T).unwrap();
    let t = Instant::now();
    r.signal(libc::SIGTERM);
    let (b0, payload) = mute.frame().expect("close frame");
    assert_eq!((b0, &payload[..2]), (0x88, &1001u16.to_be_bytes()[..]));
    // No answer: the relay drops the connection after its grace period and
    // exits long before -shutdown-timeout.
    mute.wait_closed();
    let status = r.wait_exit(T).expect("exits");
    assert_eq!(status.code(), Some(0));
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
}
