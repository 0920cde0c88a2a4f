//! The control messages of the `pubsocketd.v1` subprotocol: what a client
//! may send (JSON text) and the relay's answers.
//!
//! `{"subscribe":["a","b"]}` (with, optionally, `"since":{"a":"<id>"}`: the
//! point to resume each channel after), `{"unsubscribe":["a"]}` and, under
//! `-auth`, `{"token":"<JWT>"}` (a refresh) are understood.
//! Text that is not JSON closes the connection with 1007; JSON of any other
//! shape (another key, a value that is not a list of strings) with 1008.

use super::decode::Violation;
use crate::history::since::Point;
use serde_json::{Map, Value};

/// A control message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Channels to read, and where to resume some of them.
    Subscribe {
        names: Vec<String>,
        since: Vec<(String, Point)>,
    },
    Unsubscribe(Vec<String>),
    /// A new token, to replace the one the client connected with.
    Token(String),
}

/// Most channels named in one control message.
pub const MAX_NAMES: usize = 1024;

/// Reads one text message of a `pubsocketd.v1` client.
pub fn parse(text: &[u8]) -> Result<Control, Violation> {
    let not_json = Violation {
        code: 1007,
        reason: "a control message must be JSON",
    };
    let shape = |reason| Violation { code: 1008, reason };
    let value: Value = serde_json::from_slice(text).map_err(|_| not_json)?;
    let Value::Object(mut map) = value else {
        return Err(shape("a control message is a JSON object"));
    };
    let since = match map.remove("since") {
        None => Vec::new(),
        Some(Value::Object(since)) => {
            points(since).ok_or(shape("since maps channels to an ID or \"last\""))?
        }
        Some(_) => return Err(shape("since is an object")),
    };
    let mut fields = map.into_iter();
    let (Some((key, list)), None) = (fields.next(), fields.next()) else {
        return Err(shape("a control message has exactly one field"));
    };
    let names = |list| names(list).ok_or(shape("channels are a list of strings"));
    if !since.is_empty() && key != "subscribe" {
        return Err(shape("since goes with subscribe"));
    }
    match (key.as_str(), list) {
        ("subscribe", list) => Ok(Control::Subscribe {
            names: names(list)?,
            since,
        }),
        ("unsubscribe", list) => Ok(Control::Unsubscribe(names(list)?)),
        ("token", Value::String(t)) if !t.is_empty() => Ok(Control::Token(t)),
        ("token", _) => Err(shape("a token is a non-empty string")),
        _ => Err(shape("unknown control message")),
    }
}

/// A JSON list of at most [`MAX_NAMES`] non-empty strings.
fn names(list: Value) -> Option<Vec<String>> {
    let Value::Array(items) = list else {
        return None;
    };
    if items.len() > MAX_NAMES {
        return None;
    }
    items
        .into_iter()
        .map(|v| match v {
            Value::String(s) if !s.is_empty() => Some(s),
            _ => None,
        })
        .collect()
}

/// `{"a":"<id>","b":"last"}`: each value a point to resume after.
fn points(since: Map<String, Value>) -> Option<Vec<(String, Point)>> {
    since
        .into_iter()
        .map(|(name, v)| match v {
            Value::String(p) => Some((name, Point::parse(p.as_bytes())?)),
            _ => None,
        })
        .collect()
}

/// `{"subscribed":[…]}` or `{"unsubscribed":[…]}`.
pub fn done(kind: &str, names: &[String]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ kind: names })).unwrap_or_default()
}

/// `{"refreshed":<exp>}` (`null` for a token without `exp`).
pub fn refreshed(exp: Option<u64>) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "refreshed": exp })).unwrap_or_default()
}

/// `{"channel":…,"recovered":true|false}`: the end of a replay, or a gap.
pub fn recovered(channel: &[u8], whole: bool) -> Vec<u8> {
    let channel = String::from_utf8_lossy(channel);
    let answer = serde_json::json!({ "channel": channel, "recovered": whole });
    serde_json::to_vec(&answer).unwrap_or_default()
}

/// `{"error":"…","channels":[…]}`: a request refused, nothing changed.
pub fn refused(why: &str, names: &[String]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "error": why, "channels": names })).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_two_shapes_and_their_refusals() {
        assert_eq!(
            parse(br#"{"subscribe":["a","b.c"]}"#),
            Ok(Control::Subscribe {
                names: vec!["a".into(), "b.c".into()],
                since: vec![]
            })
        );
        use crate::history::id::Id;
        assert_eq!(
            parse(br#"{"since":{"a":"5-1","b":"last"},"subscribe":["a","b"]}"#),
            Ok(Control::Subscribe {
                names: vec!["a".into(), "b".into()],
                since: vec![
                    ("a".into(), Point::After(Id::new(5, 1))),
                    ("b".into(), Point::Last)
                ]
            })
        );
        assert_eq!(
            parse(br#" {"unsubscribe":[]} "#),
            Ok(Control::Unsubscribe(vec![]))
        );
        for (bad, code) in [
            (&b"subscribe a"[..], 1007),
            (b"{\"subscribe\":[\"a\"]", 1007),
            (b"[\"subscribe\"]", 1008),
            (b"{}", 1008),
            (br#"{"subscribe":["a"],"unsubscribe":["b"]}"#, 1008),
            (br#"{"subscribe":"a"}"#, 1008),
            (br#"{"subscribe":[1]}"#, 1008),
            (br#"{"subscribe":[""]}"#, 1008),
            (br#"{"publish":["a"]}"#, 1008),
            (br#"{"token":""}"#, 1008),
            (br#"{"token":["a"]}"#, 1008),
            (br#"{"subscribe":["a"],"since":{"a":"x"}}"#, 1008),
            (br#"{"subscribe":["a"],"since":{"a":1}}"#, 1008),
            (br#"{"subscribe":["a"],"since":["a"]}"#, 1008),
            (br#"{"unsubscribe":["a"],"since":{"a":"1-1"}}"#, 1008),
            (br#"{"since":{}}"#, 1008),
        ] {
            assert_eq!(parse(bad).unwrap_err().code, code, "{bad:?}");
        }
        assert_eq!(
            parse(br#"{"token":"a.b.c"}"#),
            Ok(Control::Token("a.b.c".into()))
        );
        let many = format!("{{\"subscribe\":{:?}}}", vec!["x"; MAX_NAMES + 1]);
        assert_eq!(parse(many.as_bytes()).unwrap_err().code, 1008);
    }

    #[test]
    fn answers_are_json() {
        let names = vec!["a\"b".to_string()];
        let v: Value = serde_json::from_slice(&done("subscribed", &names)).unwrap();
        assert_eq!(v, serde_json::json!({"subscribed": ["a\"b"]}));
        let v: Value = serde_json::from_slice(&refused("not relayed here", &names)).unwrap();
        assert_eq!(v["channels"][0], "a\"b");
        let v: Value = serde_json::from_slice(&recovered(b"n\"s", false)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"channel": "n\"s", "recovered": false})
        );
    }
}
