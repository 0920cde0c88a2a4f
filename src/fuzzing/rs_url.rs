//! Fuzz property of `-rs-url`: any text is a settings change or one error
//! that never repeats the password, the password never shows in the
//! address logged, and settings written back as a URL (user and password
//! percent-encoded as RFC 3986 asks) read back the same.

use crate::ops::config::RedisSettings;
use std::fmt::Write as _;

fn fresh() -> RedisSettings {
    RedisSettings {
        host: "127.0.0.1".into(),
        port: 6379,
        tls: false,
        user: None,
        password: None,
        ca_cert: None,
        client_cert: None,
        cluster: false,
    }
}

pub fn rs_url(data: &[u8]) {
    let url = String::from_utf8_lossy(data);
    let mut s = fresh();
    match s.apply_url(&url) {
        Err(e) => {
            let why = e
                .strip_prefix("invalid -rs-url: ")
                .and_then(|e| e.strip_suffix(" (expected redis://[user:password@]host:port)"))
                .unwrap_or_else(|| panic!("not the one error form: {e}"));
            // A fixed reason: nothing of the URL (which may hold a password).
            assert!(
                why.bytes().all(|b| b.is_ascii_lowercase() || b == b' '),
                "{e}"
            );
        }
        Ok(()) => {
            assert!(!s.host.is_empty());
            let shown = s.describe();
            if let Some(p) = s.password.as_ref().filter(|p| p.expose().len() >= 4) {
                assert!(!shown.contains(p.expose()), "password in {shown}");
            }
            let again = url_of(&s);
            let mut back = fresh();
            back.apply_url(&again)
                .unwrap_or_else(|e| panic!("{again:?} (from {url:?}) is refused: {e}"));
            assert_eq!(
                (&back.host, back.port, back.tls, &back.user, &back.password),
                (&s.host, s.port, s.tls, &s.user, &s.password),
                "{again:?} from {url:?}"
            );
        }
    }
}

/// The URL of `s`, userinfo percent-encoded where RFC 3986 requires it.
fn url_of(s: &RedisSettings) -> String {
    let scheme = if s.tls { "rediss" } else { "redis" };
    let user = s.user.as_deref().map(encode).unwrap_or_default();
    let auth = match &s.password {
        Some(p) => format!("{user}:{}@", encode(p.expose())),
        None if !user.is_empty() => format!("{user}@"),
        None => String::new(),
    };
    format!("{scheme}://{auth}{}", s.addr())
}

fn encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'+' => {
                out.push(b as char)
            }
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}
