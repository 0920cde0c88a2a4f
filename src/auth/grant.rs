//! Whether a grant covers what a client reads. A grant lists channel names
//! and glob patterns: a concrete channel is covered when one of them
//! matches it; a configured pattern read whole only when the grant holds
//! that same pattern, or `*`.

use super::verify::Grant;
use crate::channels::{glob_match, Channels, Selection};

impl Grant {
    /// Whether the grant lets a client read `name` (`pattern`: a configured
    /// pattern, read whole).
    pub fn covers(&self, name: &[u8], pattern: bool) -> bool {
        self.channels.iter().any(|g| match pattern {
            true => g == "*" || g.as_bytes() == name,
            false => glob_match(g.as_bytes(), name),
        })
    }

    /// Whether the grant lets a client name `name` in a subscribe: whole
    /// when it is a configured pattern, else as a concrete channel.
    pub fn allows(&self, channels: &Channels, name: &[u8]) -> bool {
        let whole = channels
            .id_of(name)
            .is_some_and(|id| channels.keys()[id as usize].pattern);
        self.covers(name, whole)
    }

    /// Whether every channel and key of `sel` is covered; `None` (every
    /// key the relay offers a client that chose nothing) must be covered
    /// whole. The error names the first that is not.
    pub fn covers_all(&self, channels: &Channels, sel: Option<&Selection>) -> Result<(), String> {
        let keys: Vec<u32> = match sel {
            Some(s) => s.keys.to_vec(),
            None => channels.everything().collect(),
        };
        for id in keys {
            let Some(k) = channels.keys().get(id as usize) else {
                continue;
            };
            if !k.removed && !self.covers(k.name.as_bytes(), k.pattern) {
                return Err(format!("the token does not grant {:?}", k.name));
            }
        }
        for ch in sel.map_or(&[][..], |s| &s.channels[..]) {
            if !self.covers(ch, false) {
                let name = String::from_utf8_lossy(ch);
                return Err(format!("the token does not grant {name:?}"));
            }
        }
        Ok(())
    }

    /// What a client with this grant reads, for what it asked (`None`: it
    /// named no channel, and reads the configured channels the grant
    /// covers). Refused (403) when it asked for something not granted, or
    /// when nothing relayed here is granted.
    pub fn restrict(
        &self,
        channels: &Channels,
        asked: Option<Selection>,
    ) -> Result<Option<Selection>, String> {
        if let Some(sel) = asked {
            self.covers_all(channels, Some(&sel))?;
            return Ok(Some(sel));
        }
        let all: Vec<u32> = channels.everything().collect();
        let granted: Vec<u32> = all
            .iter()
            .copied()
            .filter(|&id| {
                let k = &channels.keys()[id as usize];
                self.covers(k.name.as_bytes(), k.pattern)
            })
            .collect();
        match granted.len() {
            0 => Err("the token grants none of the channels relayed here".into()),
            n if n == all.len() => Ok(None),
            _ => Ok(Some(channels.selection(granted, Vec::new()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(list: &[&str]) -> Grant {
        Grant {
            channels: list.iter().map(|s| s.to_string()).collect(),
            ..Grant::default()
        }
    }

    #[test]
    fn names_and_patterns() {
        let c = Channels::parse("news,alerts,user.*").unwrap();
        let g = grant(&["news", "user.42"]);
        assert!(g.covers(b"news", false) && g.covers(b"user.42", false));
        assert!(!g.covers(b"user.43", false) && !g.covers(b"user.*", true));
        let asked = c.select("channel=user.42&channel=news", 64).unwrap();
        assert!(g.restrict(&c, asked).is_ok());
        let too_much = c.select("channel=user.43", 64).unwrap();
        assert!(g.restrict(&c, too_much).unwrap_err().contains("user.43"));
        let whole = c.select("channel=user.*", 64).unwrap();
        assert!(
            g.restrict(&c, whole).is_err(),
            "a pattern whole needs it granted whole"
        );
        let mine = g.restrict(&c, None).unwrap().unwrap();
        assert_eq!(&mine.keys[..], &[0], "named nothing: the granted names");
        assert_eq!(grant(&["*"]).restrict(&c, None).unwrap(), None);
        assert_eq!(
            grant(&["user.*", "news", "alerts"])
                .restrict(&c, None)
                .unwrap(),
            None
        );
        assert!(grant(&[]).restrict(&c, None).is_err());
        assert!(grant(&["news"]).covers_all(&c, None).is_err());
    }
}
