//! Fuzz property of the `pubsocketd.v1` control-message parser: any bytes
//! are a control message or a close code; 1007 exactly when the text is
//! not JSON; an accepted message (a subscribe, an unsubscribe or a token),
//! written back as JSON, reads the same (a `since` point included).

use crate::ws::control::{self, Control};

pub fn control(data: &[u8]) {
    let is_json = serde_json::from_slice::<serde_json::Value>(data).is_ok();
    match control::parse(data) {
        Err(v) => {
            assert_eq!(v.code == 1007, !is_json, "{v:?}");
            assert!(matches!(v.code, 1007 | 1008), "{v:?}");
        }
        Ok(c) => {
            let again = match &c {
                Control::Token(t) => {
                    assert!(!t.is_empty());
                    serde_json::json!({ "token": t })
                }
                Control::Subscribe { names, since } => {
                    names_ok(names);
                    let since: serde_json::Map<_, _> = since
                        .iter()
                        .map(|(n, p)| (n.clone(), p.to_string().into()))
                        .collect();
                    match since.is_empty() {
                        true => serde_json::json!({ "subscribe": names }),
                        false => serde_json::json!({ "subscribe": names, "since": since }),
                    }
                }
                Control::Unsubscribe(names) => {
                    names_ok(names);
                    serde_json::json!({ "unsubscribe": names })
                }
            };
            let again = serde_json::to_vec(&again).unwrap();
            assert_eq!(control::parse(&again).as_ref(), Ok(&c));
        }
    }
}

fn names_ok(names: &[String]) {
    assert!(names.len() <= control::MAX_NAMES);
    assert!(names.iter().all(|n| !n.is_empty()));
}
