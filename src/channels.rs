//! The configured channels and patterns, and what each client chose.
//!
//! `-rs-channel` lists up to 63 *keys*: channel names, or patterns (names
//! with glob characters, subscribed with PSUBSCRIBE). Every message carries
//! the set of keys its channel matches as a bit mask, computed once by the
//! subscriber, so a worker decides whether a client wants a message with
//! one AND. A client may also pick a concrete channel that one of the
//! patterns covers; those few clients are matched by name.

use bytes::Bytes;
use std::collections::HashSet;

/// Most keys in `-rs-channel`: one bit each in a `u64`, whose all-ones
/// value is kept for [`BROADCAST`].
pub const MAX_KEYS: usize = 63;
/// The mask of a message every client gets (the heartbeat).
pub const BROADCAST: u64 = u64::MAX;

/// One entry of `-rs-channel`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub name: String,
    pub pattern: bool,
}

/// The configured keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channels {
    keys: Vec<Key>,
}

/// What one client receives.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selection {
    /// Keys chosen whole.
    pub keys: u64,
    /// Concrete channels chosen under a pattern key.
    pub channels: Box<[Bytes]>,
}

impl Selection {
    /// Whether a message with `mask` on `channel` is for this client.
    pub fn wants(&self, mask: u64, channel: &[u8]) -> bool {
        mask == BROADCAST
            || self.keys & mask != 0
            || self.channels.iter().any(|c| c.as_ref() == channel)
    }
}

/// Whether `name` is a Redis glob pattern rather than a channel name.
pub fn is_pattern(name: &str) -> bool {
    name.contains(['*', '?', '['])
}

impl Channels {
    /// Parses the comma-separated `-rs-channel` list.
    pub fn parse(list: &str) -> Result<Channels, String> {
        let mut keys: Vec<Key> = Vec::new();
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if keys.iter().any(|k| k.name == name) {
                continue;
            }
            keys.push(Key {
                name: name.to_string(),
                pattern: is_pattern(name),
            });
        }
        if keys.is_empty() {
            return Err("-rs-channel must name at least one channel".into());
        }
        if keys.len() > MAX_KEYS {
            return Err(format!(
                "-rs-channel lists {} channels and patterns; at most {MAX_KEYS}",
                keys.len()
            ));
        }
        Ok(Channels { keys })
    }

    pub fn keys(&self) -> &[Key] {
        &self.keys
    }

    /// Every key: what a client that chose nothing receives.
    pub fn all(&self) -> u64 {
        (1u64 << self.keys.len()) - 1
    }

    /// The keys a message on `channel` matches.
    pub fn mask_for(&self, channel: &[u8]) -> u64 {
        self.keys
            .iter()
            .enumerate()
            .filter(|(_, k)| {
                if k.pattern {
                    glob_match(k.name.as_bytes(), channel)
                } else {
                    k.name.as_bytes() == channel
                }
            })
            .fold(0, |m, (i, _)| m | 1 << i)
    }

    /// Whether a `pmessage` for `channel` received through `pattern` is the
    /// one copy to relay. Redis sends one push per matching subscription;
    /// the relay keeps the `message` push when the channel is subscribed by
    /// name, else the push of the first matching pattern, so each publish
    /// reaches a client once.
    pub fn relays_pattern_copy(&self, pattern: &[u8], channel: &[u8]) -> bool {
        let mut first = None;
        for k in &self.keys {
            if !k.pattern && k.name.as_bytes() == channel {
                return false;
            }
            if first.is_none() && k.pattern && glob_match(k.name.as_bytes(), channel) {
                first = Some(k.name.as_bytes());
            }
        }
        first == Some(pattern)
    }

    /// The selection for a request's query string (`channel=a&channel=b`);
    /// no `channel` parameter means every key. A name outside the keys and
    /// their patterns is refused.
    pub fn select(&self, query: &str) -> Result<Selection, String> {
        let mut keys = 0u64;
        let mut channels: Vec<Bytes> = Vec::new();
        let mut any = false;
        for (name, value) in query.split('&').filter_map(|p| p.split_once('=')) {
            if name != "channel" {
                continue;
            }
            any = true;
            let value = percent_decode(value).ok_or("malformed channel name in the query")?;
            if let Some(i) = self
                .keys
                .iter()
                .position(|k| k.name.as_bytes() == value.as_slice())
            {
                keys |= 1 << i;
            } else if self.mask_for(&value) != 0 {
                if !channels.iter().any(|c| c.as_ref() == value.as_slice()) {
                    channels.push(Bytes::from(value));
                }
            } else {
                return Err(format!(
                    "channel {:?} is not relayed here",
                    String::from_utf8_lossy(&value)
                ));
            }
        }
        if !any {
            keys = self.all();
        }
        Ok(Selection {
            keys,
            channels: channels.into_boxed_slice(),
        })
    }
}

/// Decodes `%XX` escapes and `+` (as a space) in a query value.
pub fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Some(out)
}

/// Redis' glob matching (`*`, `?`, `[abc]`, `[^a]`, `[a-z]`, `\x`), as
/// PSUBSCRIBE applies it.
pub fn glob_match(pattern: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0, 0);
    // Backtracking point for the last `*`: (pattern index after it, input index).
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        let step = match pattern.get(p) {
            Some(b'*') => {
                star = Some((p + 1, i));
                p += 1;
                continue;
            }
            Some(b'?') => Some(p + 1),
            Some(b'[') => class(pattern, p, s[i]),
            Some(b'\\') if p + 1 < pattern.len() => (pattern[p + 1] == s[i]).then_some(p + 2),
            Some(&c) => (c == s[i]).then_some(p + 1),
            None => None,
        };
        match (step, star) {
            (Some(next), _) => {
                p = next;
                i += 1;
            }
            (None, Some((sp, si))) => {
                p = sp;
                i = si + 1;
                star = Some((sp, si + 1));
            }
            (None, None) => return false,
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|c| *c == b'*')
}

/// Matches `c` against the class starting at `pattern[p] == '['`; returns
/// the index after the class on a match.
fn class(pattern: &[u8], p: usize, c: u8) -> Option<usize> {
    let mut j = p + 1;
    let negate = pattern.get(j) == Some(&b'^');
    if negate {
        j += 1;
    }
    let mut matched = false;
    while j < pattern.len() && pattern[j] != b']' {
        if pattern[j] == b'\\' && j + 1 < pattern.len() {
            matched |= pattern[j + 1] == c;
            j += 2;
        } else if j + 2 < pattern.len() && pattern[j + 1] == b'-' && pattern[j + 2] != b']' {
            let (lo, hi) = (
                pattern[j].min(pattern[j + 2]),
                pattern[j].max(pattern[j + 2]),
            );
            matched |= (lo..=hi).contains(&c);
            j += 3;
        } else {
            matched |= pattern[j] == c;
            j += 1;
        }
    }
    // An unterminated class ends the pattern, as in Redis.
    (matched != negate).then_some(j.min(pattern.len() - 1) + 1)
}

/// Recently seen channel names, so that a message's channel is a shared
/// `Bytes` (a reference count) rather than a fresh allocation.
#[derive(Default)]
pub struct Names(HashSet<Bytes>);

impl Names {
    /// Bounds the cache when channels are unbounded (patterns).
    const MAX: usize = 4096;

    pub fn get(&mut self, name: &[u8]) -> Bytes {
        if let Some(b) = self.0.get(name) {
            return b.clone();
        }
        if self.0.len() >= Self::MAX {
            self.0.clear();
        }
        let b = Bytes::copy_from_slice(name);
        self.0.insert(b.clone());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_like_redis() {
        for (p, s, want) in [
            ("news.*", "news.sports", true),
            ("news.*", "news.", true),
            ("news.*", "news", false),
            ("h?llo", "hello", true),
            ("h?llo", "hllo", false),
            ("h*llo", "heeeello", true),
            ("h[ae]llo", "hallo", true),
            ("h[ae]llo", "hillo", false),
            ("h[^e]llo", "hallo", true),
            ("h[^e]llo", "hello", false),
            ("h[a-b]llo", "hbllo", true),
            ("h[a-b]llo", "hcllo", false),
            ("a\\*b", "a*b", true),
            ("a\\*b", "axb", false),
            ("*", "", true),
            ("**x", "abx", true),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
            ("[", "x", false),
        ] {
            assert_eq!(glob_match(p.as_bytes(), s.as_bytes()), want, "{p} ~ {s}");
        }
    }

    #[test]
    fn keys_masks_and_selection() {
        let c = Channels::parse("alerts, news.*, ,alerts,sport?").unwrap();
        assert_eq!(c.keys().len(), 3);
        assert_eq!(c.all(), 0b111);
        assert_eq!(c.mask_for(b"alerts"), 0b001);
        assert_eq!(c.mask_for(b"news.uk"), 0b010);
        assert_eq!(c.mask_for(b"sports"), 0b100);
        assert_eq!(c.mask_for(b"other"), 0);
        assert_eq!(c.select("").unwrap().keys, 0b111);
        assert_eq!(c.select("x=1").unwrap().keys, 0b111);
        let s = c
            .select("channel=alerts&channel=news.uk&channel=news%2Euk")
            .unwrap();
        assert_eq!(s.keys, 0b001);
        assert_eq!(&s.channels[..], &[Bytes::from_static(b"news.uk")]);
        assert!(s.wants(0b001, b"alerts"));
        assert!(s.wants(0b010, b"news.uk"));
        assert!(!s.wants(0b010, b"news.fr"));
        assert!(s.wants(BROADCAST, b""));
        assert_eq!(c.select("channel=news.*").unwrap().keys, 0b010);
        assert!(c
            .select("channel=secret")
            .unwrap_err()
            .contains("\"secret\""));
        assert!(c.select("channel=%zz").is_err());
    }

    #[test]
    fn one_copy_of_each_publish() {
        let c = Channels::parse("a.x,a.*,*").unwrap();
        assert!(
            !c.relays_pattern_copy(b"a.*", b"a.x"),
            "the message push carries it"
        );
        assert!(c.relays_pattern_copy(b"a.*", b"a.y"));
        assert!(!c.relays_pattern_copy(b"*", b"a.y"), "a.* came first");
        assert!(c.relays_pattern_copy(b"*", b"b"));
    }

    #[test]
    fn limits() {
        let many: Vec<String> = (0..64).map(|i| format!("c{i}")).collect();
        assert!(Channels::parse(&many.join(",")).is_err());
        assert_eq!(
            Channels::parse(&many[..63].join(",")).unwrap().all(),
            u64::MAX >> 1
        );
        assert!(Channels::parse(" , ").is_err());
    }
}
