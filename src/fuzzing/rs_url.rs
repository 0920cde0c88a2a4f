//! Fuzz property of `-rs-url`: any text is a settings change or one error
//! that never repeats the password, the password never shows in the
//! address logged, and settings written back as a URL (user and password
//! percent-encoded as RFC 3986 asks) read back the same.

use crate::ops::config::RedisSettings;
use std::fmt::Write as _;

/// Every reason an `-rs-url` may be refused for.
const REASONS: &[&str] = &[
    "no scheme",
    "the scheme must be redis or rediss",
    "malformed user or password",
    "unclosed bracket in the host",
    "junk after the bracketed host",
    "an IPv6 host goes in brackets",
    "no host",
    "invalid host",
    "invalid port",
];

fn fresh() -> RedisSettings {
    RedisSettings {
        sentinel: None,
        stream: None,
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
            assert!(REASONS.contains(&why), "{e}");
        }
        Ok(()) => {
            assert!(!s.host.is_empty());
            // The password shows only as `***`, whatever it is.
            let who = match (&s.user, &s.password) {
                (Some(u), _) => format!("{u}:***@"),
                (None, Some(_)) => ":***@".to_string(),
                (None, None) => String::new(),
            };
            let scheme = if s.tls { "rediss" } else { "redis" };
            assert_eq!(s.describe(), format!("{scheme}://{who}{}", s.addr()));
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
    // Always with the colon: userinfo without one is a password (as
    // redis-cli reads it).
    let auth = match (&s.user, &s.password) {
        (None, None) => String::new(),
        (user, password) => format!(
            "{}:{}@",
            user.as_deref().map(encode).unwrap_or_default(),
            password
                .as_ref()
                .map(|p| encode(p.expose()))
                .unwrap_or_default()
        ),
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
