//! A message ID: two numbers, `<a>-<b>`, ordered by `a` then `b`.
//!
//! Redis stream entry IDs (`<ms>-<seq>`) have this shape, and so do the
//! relay's own IDs under Pub/Sub (`<epoch>-<seq>`: the epoch, a time in
//! milliseconds, changes whenever continuity is lost), so one type serves
//! both and a client never needs to know which it holds.

use std::fmt;

/// A message ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Id {
    /// The stream entry's milliseconds, or the relay's epoch.
    pub high: u64,
    /// The sequence within `high`.
    pub low: u64,
}

/// A message's ID and the ID of the message before it on its channel,
/// when known: the link that lets the relay tell a replay that misses
/// nothing from one that may (a message without `prev` may follow a gap).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub id: Id,
    pub prev: Option<Id>,
}

/// The longest ID text: two 20-digit numbers and the dash.
pub const MAX_LEN: usize = 41;

impl Id {
    pub const fn new(high: u64, low: u64) -> Id {
        Id { high, low }
    }

    /// Reads `<digits>-<digits>`, each part a u64 written without sign or
    /// spaces. Anything else is `None`: an ID comes from a client and is
    /// never trusted further than this.
    pub fn parse(text: &[u8]) -> Option<Id> {
        if text.len() > MAX_LEN {
            return None;
        }
        let dash = text.iter().position(|&b| b == b'-')?;
        Some(Id {
            high: number(&text[..dash])?,
            low: number(&text[dash + 1..])?,
        })
    }

    /// The ID's text, as [`Id::parse`] reads it.
    pub fn write(&self, out: &mut Vec<u8>) {
        use std::io::Write;
        let _ = write!(out, "{}-{}", self.high, self.low);
    }

    /// The ID right after this one in the same sequence.
    pub fn next(&self) -> Id {
        Id::new(self.high, self.low.wrapping_add(1))
    }
}

/// A decimal u64 of 1 to 20 digits.
fn number(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 20 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.high, self.low)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_it_writes_and_nothing_else() {
        let id = Id::new(1_700_000_000_123, 42);
        let mut text = Vec::new();
        id.write(&mut text);
        assert_eq!(text, b"1700000000123-42");
        assert_eq!(Id::parse(&text), Some(id));
        assert_eq!(id.to_string(), "1700000000123-42");
        let max = format!("{}-{}", u64::MAX, u64::MAX);
        assert_eq!(Id::parse(max.as_bytes()), Some(Id::new(u64::MAX, u64::MAX)));
        for bad in [
            "",
            "-",
            "1",
            "1-",
            "-1",
            "1--1",
            "1-1-1",
            "+1-1",
            "1-+1",
            " 1-1",
            "1-1 ",
            "a-1",
            "18446744073709551616-0",
            "1-18446744073709551616",
            "1_000-1",
            "١-1",
        ] {
            assert_eq!(Id::parse(bad.as_bytes()), None, "{bad:?}");
        }
    }

    #[test]
    fn ordered_by_high_then_low() {
        assert!(Id::new(1, 9) < Id::new(2, 0));
        assert!(Id::new(2, 1) < Id::new(2, 2));
        assert_eq!(Id::new(5, 7).next(), Id::new(5, 8));
    }
}
