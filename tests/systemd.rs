//! The shipped systemd unit (`contrib/pubsocketd.service`) passes
//! `systemd-analyze verify` and keeps its hardening, and the example
//! flags in `contrib/pubsocketd.env` are accepted by the relay.

mod common;

use common::redis::free_port;
use common::relay::{Relay, BIN};
use std::path::{Path, PathBuf};
use std::process::Command;

const INSTALL_HINT: &str = "run `.ci/install-test-deps` (as root) to install it";

fn contrib(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("contrib")
        .join(name)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Runs `systemd-analyze verify` on `unit`; returns (exit code, stderr).
fn verify(unit: &Path) -> (Option<i32>, String) {
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(unit)
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run systemd-analyze ({e}): it is in Debian's `systemd` package; {INSTALL_HINT}")
        });
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code(), stderr)
}

/// The lines of `verify`'s stderr about the unit itself. systemd only
/// warns about a unit it dislikes (unknown keys, unparsable values, missing
/// binaries) and still exits 0 for most of them, so any such line is a
/// failure. Lines about the environment, such as "Failed to connect to
/// bus", do not name the unit and are ignored.
fn complaints(stderr: &str, unit: &Path) -> Vec<String> {
    let name = unit.file_name().unwrap().to_string_lossy().into_owned();
    stderr
        .lines()
        .filter(|l| l.contains(&*unit.to_string_lossy()) || l.contains(&name))
        .map(str::to_string)
        .collect()
}

/// A copy of the shipped unit in a temporary directory, with ExecStart
/// pointing at the freshly built binary (verify checks that it exists),
/// and `edit` applied to the text.
fn unit_copy(edit: impl Fn(String) -> String) -> (tempfile::TempDir, PathBuf) {
    let text = read(&contrib("pubsocketd.service"));
    let shipped = "ExecStart=/usr/local/bin/pubsocketd ";
    assert!(text.contains(shipped), "no `{shipped}` line in the unit");
    let text = edit(text.replace(shipped, &format!("ExecStart={BIN} ")));
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("pubsocketd.service");
    std::fs::write(&path, text).expect("write unit copy");
    (dir, path)
}

#[test]
fn unit_passes_systemd_analyze_verify() {
    let (_dir, unit) = unit_copy(|t| t);
    let (code, stderr) = verify(&unit);
    let bad = complaints(&stderr, &unit);
    assert!(
        code == Some(0) && bad.is_empty(),
        "systemd-analyze verify {}: exit {code:?}, complaints {bad:#?}\nstderr:\n{stderr}",
        unit.display()
    );
}

/// The check above would notice a typo: systemd exits 0 for these, so only
/// the stderr lines tell.
#[test]
fn verify_check_catches_a_bad_unit() {
    let (_dir, unit) = unit_copy(|t| {
        t.replace("ProtectSystem=strict", "ProtectSytem=strict")
            .replace("RestartSec=2\n", "RestartSec=2x\n")
    });
    let (_, stderr) = verify(&unit);
    let bad = complaints(&stderr, &unit);
    assert!(
        bad.iter().any(|l| l.contains("ProtectSytem")) && bad.iter().any(|l| l.contains("2x")),
        "typos not reported: {stderr}"
    );
}

#[test]
fn unit_keeps_its_key_lines() {
    let text = read(&contrib("pubsocketd.service"));
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    for want in [
        "[Service]",
        "Type=simple",
        "EnvironmentFile=-/etc/default/pubsocketd",
        "ExecStart=/usr/local/bin/pubsocketd $PUBSOCKETD_FLAGS",
        "Restart=on-failure",
        "RestartSec=2",
        "KillSignal=SIGTERM",
        "TimeoutStopSec=10",
        "LimitNOFILE=200000",
        "DynamicUser=yes",
        "LogsDirectory=pubsocketd",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectControlGroups=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "RestrictNamespaces=yes",
        "LockPersonality=yes",
        "MemoryDenyWriteExecute=yes",
        "RestrictRealtime=yes",
        "SystemCallArchitectures=native",
        "SystemCallFilter=@system-service",
        "CapabilityBoundingSet=",
        "[Install]",
        "WantedBy=multi-user.target",
    ] {
        assert!(lines.contains(&want), "the unit lost `{want}`");
    }
    // No capability is granted by default (only mentioned in comments).
    assert!(
        !lines.iter().any(|l| l.starts_with("AmbientCapabilities=")),
        "AmbientCapabilities must stay a commented example"
    );
}

/// The example environment file: every `PUBSOCKETD_FLAGS=` line, active
/// or commented out, as (active, flags); and the other variables it shows
/// in comments (the secrets), as (name, value).
struct EnvExample {
    flags: Vec<(bool, Vec<String>)>,
    secrets: Vec<(String, String)>,
}

fn env_example() -> EnvExample {
    let text = read(&contrib("pubsocketd.env"));
    let mut ex = EnvExample {
        flags: Vec::new(),
        secrets: Vec::new(),
    };
    for line in text.lines() {
        let (active, rest) = match line.strip_prefix('#') {
            Some(rest) => (false, rest),
            None => (true, line),
        };
        if let Some(flags) = rest.strip_prefix("PUBSOCKETD_FLAGS=") {
            // systemd splits an unquoted $VAR on whitespace; quotes would
            // be kept in the arguments, so the examples use none.
            assert!(!flags.contains(['"', '\'']), "quotes in {line:?}");
            let flags = flags.split_whitespace().map(String::from).collect();
            ex.flags.push((active, flags));
        } else if let Some((name, value)) = rest.split_once('=') {
            if name.starts_with("PUBSOCKETD_") && !name.contains(' ') {
                assert!(!active, "secrets stay commented out: {line:?}");
                ex.secrets.push((name.to_string(), value.to_string()));
            }
        } else if active && !line.trim().is_empty() {
            panic!("unexpected active line in pubsocketd.env: {line:?}");
        }
    }
    ex
}

/// A commented-out example with local stand-ins for the places it names, so
/// that no traffic leaves this machine and no file is written outside
/// `scratch`: Redis at 127.0.0.1:`redis_port` (where nothing listens: the
/// relay starts and retries), listeners on free ports.
fn localized(flags: &[String], redis_port: u16, scratch: &Path) -> Vec<String> {
    flags
        .iter()
        .filter(|f| !f.starts_with("-ws-port=") && !f.starts_with("-rs-port="))
        .map(|f| {
            let (name, value) = f.split_once('=').unwrap_or((f, ""));
            match name {
                "-rs-host" => "-rs-host=127.0.0.1".to_string(),
                "-rs-url" => {
                    // scheme://[user:password@]host:port -> same, local.
                    let (scheme, rest) = value.split_once("://").expect("-rs-url scheme");
                    let auth = rest.rsplit_once('@').map_or("", |(a, _)| a);
                    let at = if auth.is_empty() { "" } else { "@" };
                    format!("-rs-url={scheme}://{auth}{at}127.0.0.1:{redis_port}")
                }
                "-metrics-addr" | "-publish-addr" => format!("{name}=127.0.0.1:0"),
                "-ps-log-file" => format!("{name}={}", scratch.join("pubsocketd.log").display()),
                _ => f.clone(),
            }
        })
        .collect()
}

#[test]
fn example_env_file_flags_start_the_relay() {
    let ex = env_example();
    let active: Vec<_> = ex.flags.iter().filter(|(a, _)| *a).collect();
    assert_eq!(active.len(), 1, "set PUBSOCKETD_FLAGS exactly once");
    assert!(ex.flags.len() > 1, "expected commented examples too");
    assert!(
        ex.secrets
            .iter()
            .any(|(n, _)| n == "PUBSOCKETD_RS_PASSWORD"),
        "the example should show $PUBSOCKETD_RS_PASSWORD: {:?}",
        ex.secrets
    );
    let scratch = tempfile::tempdir().expect("temporary directory");
    for (active, flags) in &ex.flags {
        let redis_port = free_port();
        let mut cmd = Command::new(BIN);
        if *active {
            // As written: it already names only this machine.
            assert!(
                flags.iter().any(|a| a.starts_with("-ws-origin=")),
                "the active example needs -ws-origin: {flags:?}"
            );
            cmd.args(flags);
        } else {
            cmd.args(localized(flags, redis_port, scratch.path()));
            cmd.envs(ex.secrets.iter().map(|(n, v)| (n, v)));
        }
        cmd.arg("-ws-port=0").arg(format!("-rs-port={redis_port}"));
        // Panics with the relay's output unless it prints its [init] line.
        let relay = Relay::spawn(cmd);
        drop(relay);
        if let Some(t) = flags
            .iter()
            .find_map(|a| a.strip_prefix("-shutdown-timeout="))
        {
            let t = pubsocketd::ops::config::duration(t).unwrap();
            assert!(
                t.as_secs_f64() < 10.0,
                "{flags:?}: -shutdown-timeout must stay under the unit's TimeoutStopSec=10"
            );
        }
    }
}
