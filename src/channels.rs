//! The configured channels and patterns, and what each client chose.
//!
//! `-rs-channel` lists up to [`MAX_KEYS`] *keys*: channel names, or
//! patterns (names with glob characters, subscribed with PSUBSCRIBE). The
//! keys a message's channel matches are found once per message, by the
//! source ([`Channels::keys_for`]: one hash lookup for the names, one glob
//! match per pattern), and travel with it as a [`KeySet`]; nothing is
//! matched per client. A client may also pick a concrete channel that one
//! of the patterns covers.

use bytes::Bytes;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use tokio::sync::watch;

/// Most keys in `-rs-channel` (with `-rs-channel-file`).
pub const MAX_KEYS: usize = 10_000;
/// Most key ids ever given out in one run: a key removed by a reload keeps
/// its id (so that counters and every client's choice stay valid), so
/// reloads that add more than this many keys in all need a restart.
pub const MAX_IDS: usize = 2 * MAX_KEYS;

/// One entry of `-rs-channel`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub name: String,
    pub pattern: bool,
    /// Removed by a reload: never matched, never chosen; its id stays
    /// taken until the relay restarts.
    pub removed: bool,
}

/// The configured keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channels {
    keys: Vec<Key>,
    /// The names (not patterns), to their index in `keys`.
    names: HashMap<Box<[u8]>, u32>,
    /// The indexes of the patterns, in `-rs-channel` order.
    patterns: Vec<u32>,
    /// `-rs-on-demand`: patterns are not subscribed but bound what a
    /// client may name; each concrete channel is subscribed while read.
    on_demand: bool,
}

/// The configured keys a message's channel matches, by index.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum KeySet {
    /// None: nobody reads the channel.
    #[default]
    Nothing,
    /// Every client, whatever it chose (the heartbeat).
    Broadcast,
    /// The common case: one key, no allocation.
    One(u32),
    /// A name and patterns, or several patterns, that overlap.
    Many(Arc<[u32]>),
}

impl KeySet {
    /// The keys matched (none for `Nothing` and `Broadcast`).
    pub fn ids(&self) -> &[u32] {
        match self {
            KeySet::Nothing | KeySet::Broadcast => &[],
            KeySet::One(id) => std::slice::from_ref(id),
            KeySet::Many(ids) => ids,
        }
    }

    pub fn is_nothing(&self) -> bool {
        matches!(self, KeySet::Nothing)
    }
}

/// Why a client may not read a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// No configured name or pattern covers it.
    NotRelayed,
    /// A pattern named whole under `-rs-on-demand`, which subscribes
    /// concrete channels only.
    WholePattern,
}

impl Refused {
    pub fn reason(self) -> &'static str {
        match self {
            Refused::NotRelayed => "not relayed here",
            Refused::WholePattern => {
                "a pattern is read one channel at a time under -rs-on-demand; name a channel it covers"
            }
        }
    }
}

/// What one client receives, when it chose (a client that did not reads
/// every key and has no `Selection`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selection {
    /// Keys chosen whole, by index, ascending.
    pub keys: Box<[u32]>,
    /// Concrete channels chosen under a pattern key.
    pub channels: Box<[Bytes]>,
    /// The keys the client counts under in the per-key gauges, fixed when
    /// the choice is made, so that it is counted out as it was counted in
    /// even when a reload changed the keys in between.
    pub counted: Box<[u32]>,
}

/// The channels relayed now, shared by the sources, the workers and the
/// metrics, and replaced as a whole by a reload. Readers on the message
/// path check the generation (one atomic load) and take the new set only
/// when it changed.
pub struct Live {
    current: RwLock<Arc<Channels>>,
    generation: AtomicU64,
    changed: watch::Sender<u64>,
}

impl Live {
    pub fn new(channels: Channels) -> Live {
        Live {
            current: RwLock::new(Arc::new(channels)),
            generation: AtomicU64::new(0),
            changed: watch::channel(0).0,
        }
    }

    /// The set now.
    pub fn get(&self) -> Arc<Channels> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Changes with every reload.
    pub fn generation(&self) -> u64 {
        self.generation.load(Relaxed)
    }

    /// Replaces the set and tells the watchers.
    pub fn set(&self, channels: Channels) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(channels);
        let g = self.generation.fetch_add(1, Relaxed) + 1;
        self.changed.send_replace(g);
    }

    /// Wakes on every reload.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
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
        let mut seen = HashSet::new();
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if !seen.insert(name) {
                continue;
            }
            keys.push(Key {
                name: name.to_string(),
                pattern: is_pattern(name),
                removed: false,
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
        Ok(Channels::of(keys))
    }

    fn of(keys: Vec<Key>) -> Channels {
        let mut names = HashMap::new();
        let mut patterns = Vec::new();
        for (i, k) in keys.iter().enumerate().filter(|(_, k)| !k.removed) {
            match k.pattern {
                true => patterns.push(i as u32),
                false => {
                    names.insert(k.name.as_bytes().into(), i as u32);
                }
            }
        }
        Channels {
            keys,
            names,
            patterns,
            on_demand: false,
        }
    }

    /// Under `-rs-on-demand` (see [`Channels::on_demand`]).
    pub fn with_on_demand(mut self, on: bool) -> Channels {
        self.on_demand = on;
        self
    }

    /// Whether patterns only bound what clients may name, each concrete
    /// channel being subscribed while someone reads it.
    pub fn on_demand(&self) -> bool {
        self.on_demand
    }

    /// Whether a client that chose nothing receives messages on `channel`:
    /// always, except under `-rs-on-demand`, where it reads the configured
    /// names (a channel under a pattern arrives only because some other
    /// client asked for it).
    pub fn reaches_everyone(&self, channel: &[u8]) -> bool {
        !self.on_demand || self.names.contains_key(channel)
    }

    /// The keys a client that chose nothing reads: every live key, or
    /// under `-rs-on-demand` the names.
    pub fn everything(&self) -> impl Iterator<Item = u32> + '_ {
        self.read_whole().map(|(id, _)| id)
    }

    /// The live keys read whole, with their ids: every one, or under
    /// `-rs-on-demand` the names (a pattern then only bounds what clients
    /// name). What a client that chose nothing reads, and what Redis is
    /// asked for.
    fn read_whole(&self) -> impl Iterator<Item = (u32, &Key)> + '_ {
        let on_demand = self.on_demand;
        self.live().filter(move |(_, k)| !(on_demand && k.pattern))
    }

    /// Every key by id, removed ones included (see [`Key::removed`]).
    pub fn keys(&self) -> &[Key] {
        &self.keys
    }

    /// The keys relayed now, with their ids.
    pub fn live(&self) -> impl Iterator<Item = (u32, &Key)> + '_ {
        let ids = 0..self.keys.len() as u32;
        ids.zip(&self.keys).filter(|(_, k)| !k.removed)
    }

    /// The live keys Redis is asked for: every one, or under
    /// `-rs-on-demand` the names (patterns only bound what clients name).
    pub fn subscribed_keys(&self) -> impl Iterator<Item = &Key> + '_ {
        self.read_whole().map(|(_, k)| k)
    }

    /// Whether Redis is asked for a pattern (PSUBSCRIBE), which sharded
    /// pub/sub (`-rs-cluster`) cannot do.
    pub fn subscribes_patterns(&self) -> bool {
        self.subscribed_keys().any(|k| k.pattern)
    }

    /// The id of the live key spelled `name` (a name or a pattern).
    pub fn id_of(&self, name: &[u8]) -> Option<u32> {
        self.names
            .get(name)
            .copied()
            .or_else(|| self.pattern_id(name))
    }

    /// The keys after a reload to `list`: kept keys keep their ids, removed
    /// ones are marked, new ones (or ones back from removal) are added.
    /// Returns the new set and the (added, removed) counts.
    pub fn reload(&self, list: &str) -> Result<(Channels, usize, usize), String> {
        let wanted = Channels::parse(list)?;
        let wanted: HashSet<&str> = wanted.keys.iter().map(|k| k.name.as_str()).collect();
        let mut keys = self.keys.clone();
        let (mut added, mut removed) = (0, 0);
        for k in keys.iter_mut() {
            let keep = wanted.contains(k.name.as_str());
            added += usize::from(keep && k.removed);
            removed += usize::from(!keep && !k.removed);
            k.removed = !keep;
        }
        let mut known: HashSet<String> = keys.iter().map(|k| k.name.clone()).collect();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if known.insert(name.to_string()) {
                keys.push(Key {
                    name: name.to_string(),
                    pattern: is_pattern(name),
                    removed: false,
                });
                added += 1;
            }
        }
        if keys.len() > MAX_IDS {
            return Err(format!(
                "more than {MAX_IDS} channels and patterns since the start; restart the relay"
            ));
        }
        let next = Channels::of(keys).with_on_demand(self.on_demand);
        Ok((next, added, removed))
    }

    /// The keys for a log line: `the NAME channel` for one name, else the
    /// list, cut after the first 16 (a list of thousands is not a line).
    pub fn describe(&self, many_prefix: &str) -> String {
        const SHOWN: usize = 16;
        let mut live = self.live();
        if let (Some((_, one)), None) = (live.next(), live.next()) {
            if !one.pattern {
                return format!("the {} channel", one.name);
            }
        }
        let (names, total) = self.first_names(SHOWN);
        let more = match total {
            n if n > SHOWN => format!(" and {} more", n - SHOWN),
            _ => String::new(),
        };
        format!("{many_prefix}{}{more}", names.join(", "))
    }

    /// The names of the first `n` live keys, and how many there are: what
    /// a log line shows of a list that may hold thousands.
    pub fn first_names(&self, n: usize) -> (Vec<&str>, usize) {
        let names = self.live().take(n).map(|(_, k)| k.name.as_str()).collect();
        (names, self.live().count())
    }

    /// The keys a message on `channel` matches: the name, then the
    /// patterns, in `-rs-channel` order.
    pub fn keys_for(&self, channel: &[u8]) -> KeySet {
        let mut set = match self.names.get(channel) {
            Some(&id) => KeySet::One(id),
            None => KeySet::Nothing,
        };
        for &id in &self.patterns {
            if glob_match(self.keys[id as usize].name.as_bytes(), channel) {
                set = match set {
                    KeySet::Nothing => KeySet::One(id),
                    KeySet::One(first) => KeySet::Many(Arc::from([first, id])),
                    other => {
                        let mut ids = other.ids().to_vec();
                        ids.push(id);
                        KeySet::Many(ids.into())
                    }
                };
            }
        }
        set
    }

    /// Whether a `pmessage` for `channel` received through `pattern` is the
    /// one copy to relay. Redis sends one push per matching subscription;
    /// the relay keeps the `message` push when the channel is subscribed by
    /// name, else the push of the first matching pattern, so each publish
    /// reaches a client once.
    pub fn relays_pattern_copy(&self, pattern: &[u8], channel: &[u8]) -> bool {
        if self.names.contains_key(channel) {
            return false;
        }
        let first = self
            .patterns
            .iter()
            .map(|&id| self.keys[id as usize].name.as_bytes())
            .find(|p| glob_match(p, channel));
        first == Some(pattern)
    }

    /// The selection for a request's query string (`channel=a&channel=b`);
    /// `None` (every key) when it names no channel, or every key and
    /// nothing else. A name outside the keys and their patterns is refused
    /// with 404, more than `max` names with 400.
    pub fn select(&self, query: &str, max: usize) -> Result<Option<Selection>, (u16, String)> {
        let mut keys: Vec<u32> = Vec::new();
        let mut channels: Vec<Bytes> = Vec::new();
        let mut any = false;
        for (name, value) in query.split('&').filter_map(|p| p.split_once('=')) {
            if name != "channel" {
                continue;
            }
            any = true;
            let value = percent_decode(value)
                .ok_or((400, "malformed channel name in the query".to_string()))?;
            if let Err(refused) = self.choose(&value, &mut keys, &mut channels) {
                let name = String::from_utf8_lossy(&value);
                return Err(match refused {
                    Refused::NotRelayed => (404, format!("channel {name:?} is not relayed here")),
                    Refused::WholePattern => (400, format!("{name:?}: {}", refused.reason())),
                });
            }
        }
        let sel = self.selection(keys, channels);
        let (keys, channels) = (&sel.keys, &sel.channels);
        if keys.len() + channels.len() > max {
            let why = format!(
                "{} channels asked for; -ws-max-channels is {max}",
                keys.len() + channels.len()
            );
            return Err((400, why));
        }
        let everything = channels.is_empty() && keys.iter().copied().eq(self.everything());
        if !any || everything {
            return Ok(None);
        }
        Ok(Some(sel))
    }

    /// Adds `name` to a choice being made: a key (a name, or a pattern
    /// spelled as configured) to `keys`, a channel that a pattern covers to
    /// `channels`. Shared by `?channel=` and the `pubsocketd.v1` subscribe.
    pub fn choose(
        &self,
        name: &[u8],
        keys: &mut Vec<u32>,
        channels: &mut Vec<Bytes>,
    ) -> Result<(), Refused> {
        match self.id_of(name) {
            Some(id) if self.on_demand && self.keys[id as usize].pattern => {
                return Err(Refused::WholePattern)
            }
            Some(id) => keys.push(id),
            None if self.keys_for(name).is_nothing() => return Err(Refused::NotRelayed),
            None if !channels.iter().any(|c| c.as_ref() == name) => {
                channels.push(Bytes::copy_from_slice(name))
            }
            None => {}
        }
        Ok(())
    }

    /// The selection of `keys` (sorted, once each) and `channels`, with the
    /// keys it counts under.
    pub fn selection(&self, mut keys: Vec<u32>, channels: Vec<Bytes>) -> Selection {
        keys.sort_unstable();
        keys.dedup();
        let mut sel = Selection {
            keys: keys.into(),
            channels: channels.into(),
            counted: Box::default(),
        };
        sel.counted = self.counted_keys(&sel).into();
        sel
    }

    /// The index of the pattern key spelled `name` (a client may choose a
    /// pattern whole).
    fn pattern_id(&self, name: &[u8]) -> Option<u32> {
        self.patterns
            .iter()
            .copied()
            .find(|&id| self.keys[id as usize].name.as_bytes() == name)
    }

    /// Whether a client that chose `sel` still reads something here (after
    /// a reload removed keys).
    pub fn still_reads(&self, sel: &Selection) -> bool {
        if sel.keys.is_empty() && sel.channels.is_empty() {
            return true; // it chose nothing (a v1 client that unsubscribed)
        }
        let live_key = |&id: &u32| self.keys.get(id as usize).is_some_and(|k| !k.removed);
        sel.keys.iter().any(live_key) || sel.channels.iter().any(|c| !self.keys_for(c).is_nothing())
    }

    /// The keys a client counts under in the per-key gauges: those it
    /// chose whole, and those its chosen channels match.
    fn counted_keys(&self, sel: &Selection) -> Vec<u32> {
        let mut ids = sel.keys.to_vec();
        for ch in sel.channels.iter() {
            ids.extend_from_slice(self.keys_for(ch).ids());
        }
        ids.sort_unstable();
        ids.dedup();
        ids
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

    impl Channels {
        fn select_test(&self, query: &str) -> Result<Option<Selection>, String> {
            self.select(query, 64).map_err(|(_, why)| why)
        }
    }

    #[test]
    fn at_most_max_channels_per_client() {
        let c = Channels::parse("a,b,c,u.*").unwrap();
        assert!(c.select("channel=a&channel=u.1", 2).is_ok());
        assert!(
            c.select("channel=a&channel=a&channel=u.1", 2).is_ok(),
            "repeats count once"
        );
        let (status, why) = c.select("channel=a&channel=b&channel=u.1", 2).unwrap_err();
        assert_eq!(status, 400);
        assert_eq!(why, "3 channels asked for; -ws-max-channels is 2");
        assert_eq!(c.select("channel=x", 2).unwrap_err().0, 404);
    }

    #[test]
    fn keys_and_selection() {
        let c = Channels::parse("alerts, news.*, ,alerts,sport?").unwrap();
        assert_eq!(c.keys().len(), 3);
        assert_eq!(c.keys_for(b"alerts"), KeySet::One(0));
        assert_eq!(c.keys_for(b"news.uk"), KeySet::One(1));
        assert_eq!(c.keys_for(b"sports"), KeySet::One(2));
        assert_eq!(c.keys_for(b"other"), KeySet::Nothing);
        assert_eq!(c.select_test("").unwrap(), None);
        assert_eq!(c.select_test("x=1").unwrap(), None);
        let all = c.select_test("channel=alerts&channel=news.*&channel=sport?");
        assert_eq!(all.unwrap(), None, "every key named is everything");
        let s = c
            .select_test("channel=alerts&channel=news.uk&channel=news%2Euk")
            .unwrap()
            .unwrap();
        assert_eq!(&s.keys[..], &[0]);
        assert_eq!(&s.channels[..], &[Bytes::from_static(b"news.uk")]);
        assert_eq!(c.counted_keys(&s), [0, 1]);
        let s = c.select_test("channel=news.*").unwrap().unwrap();
        assert_eq!(&s.keys[..], &[1]);
        assert!(c
            .select_test("channel=secret")
            .unwrap_err()
            .contains("\"secret\""));
        assert!(c.select_test("channel=%zz").is_err());
    }

    #[test]
    fn log_lines_name_the_keys_up_to_sixteen() {
        let one = Channels::parse("pubsocketd").unwrap();
        assert_eq!(one.describe("the channels "), "the pubsocketd channel");
        let two = Channels::parse("a,b.*").unwrap();
        assert_eq!(two.describe(""), "a, b.*");
        let list: Vec<String> = (0..20).map(|i| format!("c{i}")).collect();
        let many = Channels::parse(&list.join(",")).unwrap().describe("");
        assert!(
            many.starts_with("c0, c1, ") && many.ends_with("c15 and 4 more"),
            "{many}"
        );
    }

    #[test]
    fn overlapping_keys_are_all_found() {
        let c = Channels::parse("a.x,a.*,*,b").unwrap();
        assert_eq!(c.keys_for(b"a.x").ids(), [0, 1, 2]);
        assert_eq!(c.keys_for(b"a.y").ids(), [1, 2]);
        assert_eq!(c.keys_for(b"b").ids(), [3, 2]);
        assert_eq!(KeySet::Broadcast.ids(), [] as [u32; 0]);
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
    fn on_demand_patterns_bound_what_is_named() {
        let c = Channels::parse("news,user.*").unwrap().with_on_demand(true);
        assert_eq!(
            c.subscribed_keys().map(|k| &k.name[..]).collect::<Vec<_>>(),
            ["news"]
        );
        assert_eq!(c.everything().collect::<Vec<_>>(), [0]);
        assert!(c.reaches_everyone(b"news") && !c.reaches_everyone(b"user.1"));
        let s = c.select_test("channel=user.1").unwrap().unwrap();
        assert_eq!(&s.channels[..], &[Bytes::from_static(b"user.1")]);
        assert_eq!(
            c.select_test("channel=news").unwrap(),
            None,
            "the names are everything"
        );
        let (status, why) = c.select("channel=user.*", 64).unwrap_err();
        assert_eq!(status, 400);
        assert!(why.contains("name a channel it covers"), "{why}");
        let (reloaded, _, _) = c.reload("news,user.*,vip").unwrap();
        assert!(reloaded.on_demand());
        let plain = Channels::parse("news,user.*").unwrap();
        assert!(plain.reaches_everyone(b"user.1"));
        assert_eq!(plain.subscribed_keys().count(), 2);
    }

    #[test]
    fn limits() {
        let many: Vec<String> = (0..=MAX_KEYS).map(|i| format!("user.{i}")).collect();
        assert!(Channels::parse(&many.join(",")).is_err());
        let c = Channels::parse(&many[..MAX_KEYS].join(",")).unwrap();
        assert_eq!(c.keys_for(b"user.9999"), KeySet::One(9999));
        assert!(Channels::parse(" , ").is_err());
    }
}
