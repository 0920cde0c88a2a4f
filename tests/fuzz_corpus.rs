//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`) through the
//! same checks as the libFuzzer targets, so `cargo test` guards what fuzzing
//! found (including the regression inputs of fixed crashes) without
//! needing cargo-fuzz or a nightly compiler.

use std::path::PathBuf;

/// Runs `check` on every file of `fuzz/corpus/<target>/`, naming the file
/// that fails.
fn replay(target: &str, check: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} holds no inputs", dir.display());
    for path in &files {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if let Err(panic) = std::panic::catch_unwind(|| check(&data)) {
            let why = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            panic!("{} fails: {why}", path.display());
        }
    }
}

#[test]
fn resp_corpus() {
    replay("resp", pubsocketd::fuzzing::resp);
}

#[test]
fn handshake_corpus() {
    replay("handshake", pubsocketd::fuzzing::handshake);
}

#[test]
fn client_frames_corpus() {
    replay("client_frames", pubsocketd::fuzzing::client_frames);
}

#[test]
fn origin_corpus() {
    replay("origin", pubsocketd::fuzzing::origin);
}

#[test]
fn flags_corpus() {
    replay("flags", pubsocketd::fuzzing::flags);
}

#[test]
fn resp_request_corpus() {
    replay("resp_request", pubsocketd::fuzzing::resp_request);
}

#[test]
fn http_head_corpus() {
    replay("http_head", pubsocketd::fuzzing::http_head);
}

#[test]
fn rs_url_corpus() {
    replay("rs_url", pubsocketd::fuzzing::rs_url);
}

#[test]
fn control_corpus() {
    replay("control", pubsocketd::fuzzing::control);
}

#[test]
fn client_ip_corpus() {
    replay("client_ip", pubsocketd::fuzzing::client_ip);
}

#[test]
fn token_corpus() {
    replay("token", pubsocketd::fuzzing::token);
}

#[test]
fn since_corpus() {
    replay("since", pubsocketd::fuzzing::since);
}
