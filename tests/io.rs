//! The two write paths, `-io=uring` (the fan-out's sends batched in one
//! io_uring_enter) and `-io=epoll` (one writev per client), deliver the
//! same frames to every kind of client; where the kernel refuses io_uring
//! the relay says so and relays with epoll.

mod common;

use common::redis::RedisServer;
use common::relay::{RawWs, Relay, BIN};
use flate2::{Decompress, FlushDecompress};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);
const MESSAGES: usize = 400;
const DEFLATE: &str = "Sec-WebSocket-Extensions: permessage-deflate\r\n";

/// Message `i`: JSON, on channel `a` when `i` is even and `b` when odd;
/// every third one long enough to be compressed.
fn message(i: usize) -> (&'static str, String) {
    let pad = if i.is_multiple_of(3) {
        "x".repeat(300)
    } else {
        String::new()
    };
    let channel = if i.is_multiple_of(2) { "a" } else { "b" };
    (channel, format!("{{\"seq\":{i},\"pad\":\"{pad}\"}}"))
}

fn inflate(payload: &[u8]) -> Vec<u8> {
    let mut data = payload.to_vec();
    data.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut out = Vec::with_capacity(4096);
    Decompress::new(false)
        .decompress_vec(&data, &mut out, FlushDecompress::Sync)
        .unwrap();
    out
}

/// Reads `expected` from a client in a thread of its own. A deflate
/// client must get the long messages compressed (RSV1), and nobody else.
fn reader(mut ws: RawWs, expected: Vec<String>, deflate: bool) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for want in expected {
            let (b0, payload) = ws.frame().expect("a frame");
            let compressed = deflate && want.len() >= 128;
            let got = match b0 {
                0x81 if !compressed => payload,
                0xC1 if compressed => inflate(&payload),
                other => panic!("first byte {other:#x} for {want}"),
            };
            assert_eq!(String::from_utf8(got).unwrap(), want);
        }
    })
}

/// Plain, deflate and channel-choosing clients on two workers, all fed
/// the same stream: each gets exactly what it asked for, in order.
fn every_kind_of_client_gets_its_messages(io: &str) {
    let redis = RedisServer::start();
    let flag = format!("-io={io}");
    let r = Relay::insecure(
        redis.port(),
        &[
            &flag,
            "-workers=2",
            "-rs-channel=a,b",
            "-ws-deflate-min=128",
        ],
    );
    r.stdout
        .wait_for(&format!("[init] io: {io}"), T)
        .expect("backend logged");
    r.wait_subscribed(1);
    let all: Vec<String> = (0..MESSAGES).map(|i| message(i).1).collect();
    let only_a: Vec<String> = all.iter().step_by(2).cloned().collect();
    let mut readers = Vec::new();
    for _ in 0..6 {
        let ws = RawWs::open(&r.addr(), b"");
        readers.push(reader(ws, all.clone(), false));
    }
    for _ in 0..3 {
        let (ws, head) = RawWs::open_with(&r.addr(), DEFLATE, b"");
        assert!(head.contains("permessage-deflate"), "{head}");
        readers.push(reader(ws, all.clone(), true));
    }
    for headers in ["", DEFLATE] {
        let (ws, _) = RawWs::open_at(&r.addr(), "/?channel=a", headers, b"");
        readers.push(reader(ws, only_a.clone(), !headers.is_empty()));
    }
    r.stdout.wait_count("[connect] OK", 11, T).unwrap();
    for i in 0..MESSAGES {
        let (channel, payload) = message(i);
        redis.publish(channel, payload.as_bytes());
    }
    for r in readers {
        r.join().expect("client got every message in order");
    }
}

#[test]
fn uring_delivers_to_every_kind_of_client() {
    every_kind_of_client_gets_its_messages("uring");
}

#[test]
fn epoll_delivers_to_every_kind_of_client() {
    every_kind_of_client_gets_its_messages("epoll");
}

/// Makes `io_uring_setup` fail with EPERM in this process, as a container's
/// seccomp profile or `kernel.io_uring_disabled` would.
fn deny_io_uring() -> std::io::Result<()> {
    // Syscall number 425 on every architecture that has io_uring.
    const IO_URING_SETUP: u32 = 425;
    let stmt = |code: u32, k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    let filter = [
        // Load seccomp_data.nr (offset 0).
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0, 0, 0),
        stmt(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            IO_URING_SETUP,
            0,
            1,
        ),
        stmt(
            libc::BPF_RET | libc::BPF_K,
            libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
            0,
            0,
        ),
        stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW, 0, 0),
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: plain prctl calls in the child before exec; `prog` outlives them.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[test]
fn refused_io_uring_falls_back_to_epoll_with_a_log_line() {
    let redis = RedisServer::start();
    let mut cmd = Command::new(BIN);
    let port = format!("-rs-port={}", redis.port());
    cmd.args([
        "-ws-port=0",
        "-ws-ping-interval=0",
        "-ws-insecure",
        "-io=uring",
        &port,
    ]);
    // SAFETY: deny_io_uring only makes async-signal-safe syscalls.
    unsafe { cmd.pre_exec(deny_io_uring) };
    let r = Relay::spawn(cmd);
    let line = r
        .stdout
        .wait_for("io_uring is not available here", T)
        .expect("fallback logged");
    assert!(line.contains("falling back to epoll"), "{line}");
    assert!(line.contains("Operation not permitted"), "{line}");
    assert!(r
        .stdout
        .wait_for("[init] io: uring", Duration::ZERO)
        .is_none());
    r.wait_subscribed(1);
    let mut ws = RawWs::open(&r.addr(), b"");
    r.stdout.wait_for("[connect] OK", T).unwrap();
    redis.publish("pubsocketd", b"{\"after\":\"fallback\"}");
    assert_eq!(
        ws.frame().unwrap(),
        (0x81, b"{\"after\":\"fallback\"}".to_vec())
    );
}
