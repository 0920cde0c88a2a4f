//! Fuzz property of the side endpoints' request heads (`POST /publish` and
//! `/metrics`): `parse_head` decides the same whatever prefix of the head
//! arrived first, keeps the bytes after the head for the body, and the
//! checks of `/publish` only let through a request with the right token, a
//! channel and a body length within the cap.

use crate::ingest::http_publish;
use crate::net::http::{parse_head, Head};
use crate::ops::secret::Secret;

/// Head capacity of the property: small, so that 431 is common.
const CAPACITY: usize = 512;
/// The `/publish` token and body cap of the property.
const TOKEN: &str = "fuzz-token";
const MAX_PAYLOAD: usize = 1000;

pub fn http_head(data: &[u8]) {
    let whole = parse_head(data, CAPACITY.max(data.len()));
    // Fed as reads would arrive: the first prefix that decides must decide
    // as the whole input does (a complete head never needs more bytes).
    for end in 0..=data.len() {
        match parse_head(&data[..end], CAPACITY.max(data.len())) {
            Ok(None) => continue,
            Ok(Some(head)) => {
                let Ok(Some(all)) = &whole else {
                    panic!("a prefix of {end} bytes parsed, the whole did not: {whole:?}");
                };
                assert_eq!(head.headers, all.headers);
                assert_eq!((&head.method, &head.path), (&all.method, &all.path));
                assert_eq!(data[end - head.rest.len()..end], head.rest[..]);
                check_publish(&head);
                break;
            }
            Err(bad) => {
                assert!(matches!(bad.status, 400 | 431), "{bad:?}");
                break;
            }
        }
    }
    if data.len() > CAPACITY {
        if let Err(bad) = parse_head(&data[..CAPACITY], CAPACITY) {
            assert!(matches!(bad.status, 400 | 431), "{bad:?}");
        }
    }
}

/// What `/publish` lets through is a POST to its path with the token, a
/// channel and a length within the cap; everything else is a 4xx.
fn check_publish(head: &Head) {
    let token = Secret::new(TOKEN.into());
    match http_publish::check(head, &token, MAX_PAYLOAD) {
        Ok((channel, len)) => {
            assert_eq!(
                (head.method.as_str(), head.path.as_str()),
                ("POST", "/publish")
            );
            assert!(!channel.is_empty() && len <= MAX_PAYLOAD);
            let auth = head.value("authorization").expect("authorised");
            assert!(auth.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()));
        }
        Err(r) => {
            assert!((400..500).contains(&r.status), "status {}", r.status);
            let body = String::from_utf8_lossy(&r.body);
            assert!(!body.contains(TOKEN), "the token in an answer: {body}");
        }
    }
}
