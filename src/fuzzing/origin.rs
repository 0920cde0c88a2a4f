//! Fuzz property of origin parsing and the allow-list check.

use super::handshake::allow_list;
use crate::ws::origin::{Origin, OriginPolicy};

/// `Origin::parse` round-trips and `OriginPolicy::check` never panics.
///
/// On valid UTF-8, a parsed origin serialises to a string that parses back
/// to an equal origin with the same serialisation, and ASCII case never
/// changes the result. `check` accepts exactly the parsed origins in its
/// list, on any bytes.
pub fn origin(data: &[u8]) {
    let policy = allow_list();
    let verdict = policy.check(Some(data));
    assert_eq!(OriginPolicy::Any.check(Some(data)), Ok(()));
    let Ok(text) = std::str::from_utf8(data) else {
        assert!(verdict.is_err(), "non-UTF-8 Origin accepted");
        return;
    };
    let parsed = Origin::parse(text);
    if let Ok(origin) = &parsed {
        let serialised = origin.to_string();
        let again = Origin::parse(&serialised)
            .unwrap_or_else(|e| panic!("{serialised:?} (from {text:?}) does not parse: {e}"));
        assert_eq!(&again, origin, "{text:?} does not round-trip");
        assert_eq!(again.to_string(), serialised);
    }
    assert_eq!(
        Origin::parse(&text.to_ascii_lowercase()),
        parsed,
        "lower case changes the result"
    );
    assert_eq!(
        Origin::parse(&text.to_ascii_uppercase()),
        parsed,
        "upper case changes the result"
    );
    let trimmed = text.trim();
    let allowed = trimmed != "null"
        && Origin::parse(trimmed).is_ok_and(|o| {
            let OriginPolicy::List(list) = &policy else {
                unreachable!()
            };
            list.contains(&o)
        });
    assert_eq!(verdict.is_ok(), allowed, "check disagrees with parse");
}
