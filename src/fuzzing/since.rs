//! Fuzz property of the resume parsers: message IDs
//! ([`crate::history::id::Id::parse`], checked against a plain reading of
//! `<u64>-<u64>`) and the `since` query parameters
//! ([`crate::history::since::from_query`]): never a panic, at most the
//! bound, each channel once, a bare one alone, and every accepted point
//! written back reads the same.

use crate::history::id::Id;
use crate::history::since::{self, Point};

pub fn since(data: &[u8]) {
    check_id(data);
    let query = String::from_utf8_lossy(data);
    let Ok(asked) = since::from_query(&query, 4) else {
        return;
    };
    assert!(asked.len() <= 4);
    for (i, r) in asked.iter().enumerate() {
        assert!(asked[..i].iter().all(|o| o.channel != r.channel), "twice");
        assert!(
            r.channel.is_some() || asked.len() == 1,
            "a bare since alone"
        );
        let mut text = r.channel.clone().map(|mut c| {
            c.push(b':');
            c
        });
        let point = r.point.to_string();
        let text = match text.as_mut() {
            Some(t) => {
                t.extend_from_slice(point.as_bytes());
                t.clone()
            }
            None => point.into_bytes(),
        };
        assert_eq!(since::parse_value(&text).as_ref(), Some(r), "round trip");
    }
}

/// `Id::parse` agrees with splitting at the first dash and reading two
/// decimal u64s of 1 to 20 digits (leading zeros allowed) with no sign;
/// what it accepts prints back to a parse of the same ID.
fn check_id(data: &[u8]) {
    let plain = std::str::from_utf8(data).ok().and_then(|s| {
        let (a, b) = s.split_once('-')?;
        let digits = |p: &str| (1..=20).contains(&p.len()) && p.bytes().all(|c| c.is_ascii_digit());
        (digits(a) && digits(b)).then_some(())?;
        Some(Id::new(a.parse().ok()?, b.parse().ok()?))
    });
    let parsed = Id::parse(data);
    if data.len() <= crate::history::id::MAX_LEN {
        assert_eq!(parsed, plain, "{data:?}");
    } else {
        assert_eq!(parsed, None);
    }
    if let Some(id) = parsed {
        assert_eq!(Id::parse(id.to_string().as_bytes()), Some(id));
        assert_eq!(Point::parse(data), Some(Point::After(id)));
    }
}
