//! The published payload: a JSON object that carries a sequence number, the
//! send time and the run it belongs to, padded to the requested size.
//!
//! `{"seq":17,"t":1732760000123456789,"run":4242,"step":0,"pad":"xxxx"}`
//!
//! It is valid JSON and ASCII (so the relay sends it as a text frame), and
//! the fields come first in a fixed order so that a client reads them with
//! a few byte comparisons instead of a JSON parser.

use std::io::Write;

/// What a payload says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// 1, 2, 3, … for each message of a run, across ramp steps.
    pub seq: u64,
    /// Send time, nanoseconds since the Unix epoch (CLOCK_REALTIME).
    pub t_ns: u64,
    /// Random per loadtest process, so that other publishers' messages on
    /// the same channel (or a previous run's late ones) are not counted.
    pub run: u64,
    /// Ramp step (0 in the other modes).
    pub step: u32,
}

/// Smallest payload [`encode`] can write for `stamp` (with an empty pad).
pub fn min_size(stamp: &Stamp) -> usize {
    let mut v = Vec::new();
    encode(stamp, 0, &mut v);
    v.len()
}

/// Appends the payload for `stamp` to `out`, padded to `size` bytes (or
/// the minimum when `size` is smaller). Returns its length.
pub fn encode(stamp: &Stamp, size: usize, out: &mut Vec<u8>) -> usize {
    let start = out.len();
    write!(
        out,
        "{{\"seq\":{},\"t\":{},\"run\":{},\"step\":{},\"pad\":\"",
        stamp.seq, stamp.t_ns, stamp.run, stamp.step
    )
    .expect("write to a Vec");
    let head = out.len() - start;
    let pad = size.saturating_sub(head + 2);
    out.resize(out.len() + pad, b'x');
    out.extend_from_slice(b"\"}");
    out.len() - start
}

/// Replaces the `x`s of a payload's pad with words and numbers (picked by
/// a generator seeded with `seed`), so that it compresses about as well as
/// a JSON feed does (a few times) instead of to almost nothing. The size
/// and the stamp are unchanged.
pub fn wordify(p: &mut [u8], seed: u64) {
    const WORDS: &[&str] = &[
        "price", "volume", "bid", "ask", "symbol", "update", "status", "open", "close", "high",
        "low", "time", "market", "order", "trade", "level", "user", "event", "score", "region",
        "value", "count", "delta", "source",
    ];
    let Some(at) = p.windows(7).position(|w| w == b"\"pad\":\"") else {
        return;
    };
    let (start, end) = (at + 7, p.len().saturating_sub(2));
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut i = start;
    while i < end {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let word = WORDS[(x % WORDS.len() as u64) as usize];
        let number = (x >> 32) % 10_000;
        let mut piece = [0u8; 24];
        let mut cur = std::io::Cursor::new(&mut piece[..]);
        let _ = write!(cur, "{word}={number} ");
        let len = (cur.position() as usize).min(end - i);
        p[i..i + len].copy_from_slice(&piece[..len]);
        i += len;
    }
}

/// Reads the stamp at the start of a payload; `None` when it is not one of
/// ours (another publisher on the channel, a heartbeat, garbage).
pub fn decode(p: &[u8]) -> Option<Stamp> {
    let (seq, p) = field(p, b"{\"seq\":")?;
    let (t_ns, p) = field(p, b",\"t\":")?;
    let (run, p) = field(p, b",\"run\":")?;
    let (step, p) = field(p, b",\"step\":")?;
    if !matches!(p.first(), Some(b',' | b'}')) {
        return None;
    }
    Some(Stamp {
        seq,
        t_ns,
        run,
        step: u32::try_from(step).ok()?,
    })
}

/// `name` then a decimal number: the number and the rest.
fn field<'a>(p: &'a [u8], name: &[u8]) -> Option<(u64, &'a [u8])> {
    let p = p.strip_prefix(name)?;
    let digits = p.iter().take(20).take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let mut n: u64 = 0;
    for d in &p[..digits] {
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some((n, &p[digits..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_keep_the_size_and_the_stamp() {
        let s = stamp();
        let mut p = Vec::new();
        encode(&s, 1000, &mut p);
        let before = p.clone();
        wordify(&mut p, 7);
        assert_eq!(p.len(), before.len());
        assert_ne!(p, before);
        assert_eq!(decode(&p), Some(s));
        assert!(p.ends_with(b"\"}"));
        let text = std::str::from_utf8(&p).unwrap();
        assert!(
            serde_json::from_str::<serde_json::Value>(text).is_ok(),
            "{text}"
        );
    }

    fn stamp() -> Stamp {
        Stamp {
            seq: 123,
            t_ns: 1_732_760_000_123_456_789,
            run: 4242,
            step: 3,
        }
    }

    #[test]
    fn round_trip_at_the_requested_size_as_valid_json() {
        for size in [min_size(&stamp()), 100, 128, 1000, 70_000] {
            let mut v = b"junk".to_vec();
            let n = encode(&stamp(), size, &mut v);
            assert_eq!(n, size);
            let p = &v[4..];
            assert_eq!(p.len(), size);
            assert_eq!(decode(p), Some(stamp()));
            let j: serde_json::Value = serde_json::from_slice(p).expect("valid JSON");
            assert_eq!(j["seq"], 123);
            assert_eq!(j["step"], 3);
            assert!(std::str::from_utf8(p).is_ok());
        }
    }

    #[test]
    fn too_small_a_size_gives_the_minimum() {
        let mut v = Vec::new();
        let n = encode(&stamp(), 10, &mut v);
        assert_eq!(n, min_size(&stamp()));
        assert_eq!(decode(&v), Some(stamp()));
        assert!(serde_json::from_slice::<serde_json::Value>(&v).is_ok());
    }

    #[test]
    fn foreign_payloads_are_not_stamps() {
        for p in [
            &b""[..],
            b"{\"heartbeat\": 1}",
            b"{\"seq\":1,\"t\":2,\"run\":3}",
            b"{\"seq\":,\"t\":2,\"run\":3,\"step\":0}",
            b"{\"seq\":1,\"t\":2,\"run\":3,\"step\":0x",
            b"{\"seq\":99999999999999999999999,\"t\":2,\"run\":3,\"step\":0}",
            b"{\"seq\":1,\"t\":2,\"run\":3,\"step\":99999999999}",
        ] {
            assert_eq!(decode(p), None, "{:?}", String::from_utf8_lossy(p));
        }
        assert_eq!(
            decode(b"{\"seq\":1,\"t\":2,\"run\":3,\"step\":0}"),
            Some(Stamp {
                seq: 1,
                t_ns: 2,
                run: 3,
                step: 0
            })
        );
    }
}
