//! The command line as init scripts and units use it: every Go spelling,
//! help, version, and one clear line for every mistake.

mod common;

use common::redis::{free_port, RedisServer};
use common::relay::{run, Relay, BIN};
use pubsocketd::ops::config::{SWITCH_FLAGS, VALUE_FLAGS};
use std::process::Command;
use std::time::Duration;

#[test]
fn help_lists_every_flag_with_its_default() {
    for spelling in ["--help", "-help", "-h"] {
        let (status, out, _) = run(&[spelling]);
        assert!(status.success(), "{spelling}");
        let out = &out[out.find("Options:").expect("an Options section")..];
        for flag in VALUE_FLAGS.iter().chain(SWITCH_FLAGS) {
            let line_start = out
                .find(&format!("--{flag} "))
                .or_else(|| out.find(&format!("--{flag}\n")));
            let at = line_start.unwrap_or_else(|| panic!("--{flag} missing from help:\n{out}"));
            let entry: String = out[at..].split("\n  --").next().unwrap().to_string();
            assert!(
                entry.contains("(default"),
                "--{flag} has no default in help: {entry}"
            );
        }
    }
}

#[test]
fn version() {
    for spelling in ["--version", "-version"] {
        let (status, out, _) = run(&[spelling]);
        assert!(status.success());
        assert_eq!(
            out.trim(),
            format!("pubsocketd {}", env!("CARGO_PKG_VERSION"))
        );
    }
}

#[test]
fn mistakes_are_one_line_on_stderr_and_exit_non_zero() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["-ws-insecure", "-nope"],
            "pubsocketd: unknown flag -nope (see --help)",
        ),
        (&[], "pubsocketd: missing -ws-origin"),
        (
            &["-ws-insecure", "-ws-port=http"],
            "pubsocketd: Error parsing option '-ws-port'",
        ),
        (
            &["-ws-insecure", "-ws-port"],
            "pubsocketd: flag needs an argument: -ws-port",
        ),
        (
            &["-ws-origin=example.com"],
            "pubsocketd: invalid -ws-origin \"example.com\"",
        ),
        (&["-ws-insecure=maybe"], "pubsocketd: invalid boolean value"),
        (
            &["-ws-insecure", "-ws-queue-bytes=lots"],
            "pubsocketd: Error parsing option '-ws-queue-bytes'",
        ),
        (
            &["-ws-insecure", "stray"],
            "pubsocketd: Unrecognized argument: stray",
        ),
        (&["help"], "pubsocketd: Unrecognized argument: help"),
        (
            &["-ws-insecure", "help"],
            "pubsocketd: Unrecognized argument: help",
        ),
    ];
    for (args, want) in cases {
        let (status, out, err) = run(args);
        assert_eq!(status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with(want), "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?} printed {out}");
    }
}

#[test]
fn start_up_failures_name_their_cause_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem").display().to_string();
    let (status, _, err) = run(&[
        "-ws-insecure",
        &format!("-tls-cert={missing}"),
        &format!("-tls-key={missing}"),
    ]);
    assert_eq!(status.code(), Some(1));
    assert!(
        err.starts_with("pubsocketd: cannot read -tls-cert") && err.contains("missing.pem"),
        "{err}"
    );

    let (status, _, err) = run(&["-ws-insecure", "-ps-log-file=/nonexistent/dir/x.log"]);
    assert_eq!(status.code(), Some(1));
    assert!(
        err.starts_with("pubsocketd: cannot open -ps-log-file /nonexistent/dir/x.log"),
        "{err}"
    );

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let (status, _, err) = run(&["-ws-insecure", "-ws-port", &port]);
    assert_eq!(status.code(), Some(1));
    assert!(
        err.starts_with(&format!("pubsocketd: cannot listen on 127.0.0.1:{port}")),
        "{err}"
    );
}

#[test]
fn every_go_spelling_configures_the_relay() {
    let redis = RedisServer::start();
    let rport = redis.port().to_string();
    let mut cmd = Command::new(BIN);
    cmd.args([
        "-ws-port=0",
        "--ws-route",
        "/feed",
        "-rs-port",
        &rport,
        "--rs-channel=news",
        "-ws-insecure=true",
        "-ws-heartbeat",
        "-ws-heartbeat=false",
        "-ws-ping-interval",
        "0",
    ]);
    let r = Relay::spawn(cmd);
    let t = Duration::from_secs(5);
    let first = r
        .stdout
        .wait_for("listening for websocket requests", t)
        .unwrap();
    assert!(
        first.contains(&format!(":{}/feed, in INSECURE MODE", r.port)),
        "{first}"
    );
    let want = format!("from 127.0.0.1:{rport} sent to the news channel");
    assert!(
        r.stdout.wait_for(&want, t).is_some(),
        "{:?}",
        r.stdout.all()
    );
    assert!(r.stdout.wait_for("open file limit", t).is_some());
}

#[test]
fn log_file_gets_the_same_lines_as_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.log");
    let mut cmd = Command::new(BIN);
    cmd.args([
        "-ws-port=0",
        "-ws-insecure",
        &format!("-rs-port={}", free_port()),
    ])
    .arg(format!("-ps-log-file={}", path.display()));
    let r = Relay::spawn(cmd);
    r.stdout
        .wait_for("[redis] cannot connect", Duration::from_secs(10))
        .unwrap();
    let stdout = r.stdout.all();
    let file = std::fs::read_to_string(&path).unwrap();
    let file_lines: Vec<&str> = file.lines().collect();
    assert!(file_lines.len() >= 4);
    for (a, b) in stdout.iter().zip(&file_lines) {
        assert_eq!(a, b);
    }
}
