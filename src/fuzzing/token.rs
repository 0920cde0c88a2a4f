//! Fuzz property of where a token is found (`auth::token`) and of the
//! channels check of a grant (`auth::grant`).

use crate::auth::token::{Place, Presented};
use crate::auth::verify::Grant;
use crate::channels::Channels;

/// The input is split at NUL bytes: header values (Authorization,
/// Sec-WebSocket-Protocol, Cookie), a query string, the grant's entries
/// (one per line), then the names asked for (one per line).
///
/// A token found is non-empty and is spelled in the place it is said to
/// come from; Bearer wins over everything, the query over the cookie. A
/// grant's check never panics, accepts a client only with what it
/// granted, and agrees with itself (what `restrict` keeps, `covers_all`
/// accepts).
pub fn token(data: &[u8]) {
    let mut parts = data.split(|&b| b == 0);
    let mut p = Presented::default();
    for name in ["Authorization", "Sec-WebSocket-Protocol", "Cookie"] {
        if let Some(v) = parts.next().filter(|v| !v.is_empty()) {
            p.add(name, v);
        }
    }
    let query = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    if let Some((t, place)) = p.find(&query, Some("jwt")) {
        assert!(!t.is_empty());
        let printed = format!("{p:?}");
        assert!(
            t.len() < 8 || !printed.contains(&*t),
            "Debug shows the token"
        );
        if place != Place::Query {
            let raw = String::from_utf8_lossy(data);
            assert!(raw.contains(&*t), "{place:?} token not in the input");
        }
    }
    let granted = parts.next().unwrap_or_default();
    let asked = parts.next().unwrap_or_default();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let grant = Grant {
        channels: text(granted).lines().map(str::to_string).collect(),
        ..Grant::default()
    };
    let channels = Channels::parse("news,user.*,[a-c]x").expect("valid keys");
    let query: Vec<String> = text(asked)
        .lines()
        .map(|n| format!("channel={n}"))
        .collect();
    let Ok(sel) = channels.select(&query.join("&"), 64) else {
        return;
    };
    match grant.restrict(&channels, sel.clone()) {
        Ok(kept) => assert!(grant.covers_all(&channels, kept.as_ref()).is_ok()),
        Err(_) => {
            if let Some(s) = &sel {
                assert!(grant.covers_all(&channels, Some(s)).is_err());
            }
        }
    }
}
