//! Where a client asks to resume from: `?since=<id>` (a client of one
//! channel), `?since=<channel>:<id>` repeated (split at the last `:`, since
//! a channel name may hold colons and an ID never does), `last` in place of
//! an ID for the channel's latest message, and the `since` object of a
//! `pubsocketd.v1` subscribe.

use super::id::Id;
use crate::channels::percent_decode;

/// The point to resume after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// Every message after this ID.
    After(Id),
    /// The channel's latest message, then what follows.
    Last,
}

impl Point {
    /// `last` or an ID.
    pub fn parse(text: &[u8]) -> Option<Point> {
        match text {
            b"last" => Some(Point::Last),
            _ => Id::parse(text).map(Point::After),
        }
    }
}

impl std::fmt::Display for Point {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Point::After(id) => id.fmt(f),
            Point::Last => f.write_str("last"),
        }
    }
}

/// One channel's resume request; `channel` is `None` for a bare `since`,
/// which names the client's only channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    pub channel: Option<Vec<u8>>,
    pub point: Point,
}

/// Reads one decoded `since` value.
pub fn parse_value(value: &[u8]) -> Option<Resume> {
    match value.iter().rposition(|&b| b == b':') {
        Some(0) => None,
        Some(at) => Some(Resume {
            channel: Some(value[..at].to_vec()),
            point: Point::parse(&value[at + 1..])?,
        }),
        None => Some(Resume {
            channel: None,
            point: Point::parse(value)?,
        }),
    }
}

/// The `since` parameters of a query string, at most `max` of them, each
/// channel once and a bare one alone. The error is the reason for a 400.
pub fn from_query(query: &str, max: usize) -> Result<Vec<Resume>, String> {
    let mut out: Vec<Resume> = Vec::new();
    for (name, value) in query.split('&').filter_map(|p| p.split_once('=')) {
        if name != "since" {
            continue;
        }
        let malformed = || "malformed since: <id>, <channel>:<id> or last".to_string();
        let value = percent_decode(value).ok_or_else(malformed)?;
        let resume = parse_value(&value).ok_or_else(malformed)?;
        if out.iter().any(|r| r.channel == resume.channel) {
            return Err("since names a channel twice".into());
        }
        out.push(resume);
        if out.len() > max {
            return Err(format!("more than {max} since parameters"));
        }
    }
    if out.len() > 1 && out.iter().any(|r| r.channel.is_none()) {
        return Err("a since without a channel must be the only one".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn after(channel: Option<&str>, high: u64, low: u64) -> Resume {
        Resume {
            channel: channel.map(|c| c.as_bytes().to_vec()),
            point: Point::After(Id::new(high, low)),
        }
    }

    #[test]
    fn bare_and_per_channel() {
        assert_eq!(from_query("since=5-1", 8), Ok(vec![after(None, 5, 1)]));
        assert_eq!(
            from_query("channel=a&since=user%3A42:7-0&since=b:last&x=1", 8),
            Ok(vec![
                after(Some("user:42"), 7, 0),
                Resume {
                    channel: Some(b"b".to_vec()),
                    point: Point::Last
                }
            ])
        );
        assert_eq!(from_query("channel=a", 8), Ok(vec![]));
        assert_eq!(from_query("since=last", 8).unwrap()[0].point, Point::Last);
    }

    #[test]
    fn refusals() {
        for bad in [
            "since=",
            "since=x",
            "since=:1-1",
            "since=a:",
            "since=a:b",
            "since=%zz",
            "since=1-1&since=2-2",
            "since=a:1-1&since=a:2-2",
            "since=1-1&since=a:2-2",
            "since=a:1-1&since=b:1-1&since=c:1-1",
        ] {
            assert!(from_query(bad, 2).is_err(), "{bad}");
        }
    }
}
