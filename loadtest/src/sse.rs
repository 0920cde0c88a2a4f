//! The client side of Server-Sent Events, as much as a load generator
//! needs: the `GET` that opens a stream and the check of its answer, and
//! an event-stream parser that hands each event's data to the same
//! accounting as a WebSocket message (`conn::message_in`). No I/O here
//! (see `client`), so it is tested on plain byte strings.
//!
//! The parser works like the frame parser: it takes whole events from the
//! front of a buffer and says how many bytes they took; the caller keeps
//! the tail (an event cut by a read) for the next read. An event whose
//! data is one `data:` line is read where it lies; only an event of
//! several `data:` lines is joined, into a buffer the caller reuses, so
//! reading an event allocates nothing.

use crate::conn::{self, End, Processed, Sink, MAX_MESSAGE};
use crate::wsframe::{response_head, HeadError};

/// The byte-order mark a stream may start with (the standard skips it).
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Per-connection state between reads: small, because 10,000 of them sit
/// in one thread.
#[derive(Debug)]
pub struct SseState {
    /// Highest sequence number seen (0: none yet).
    pub last_seq: u64,
    /// How far into the pending event the search for its end has got
    /// (the start of a line), so that an event cut by many reads is not
    /// searched from its start after each of them.
    scanned: usize,
    /// Nothing read yet: a byte-order mark here is skipped.
    at_start: bool,
    /// The last comment that was not `ping`: the relay says with one why
    /// it ends a stream, so it names the end of the connection.
    pub last_word: Option<Box<str>>,
}

impl Default for SseState {
    fn default() -> SseState {
        SseState {
            last_seq: 0,
            scanned: 0,
            at_start: true,
            last_word: None,
        }
    }
}

impl SseState {
    /// Why the stream ended when the server closed it: `eof`, with the
    /// relay's parting comment when it sent one.
    pub fn eof(&self) -> String {
        match &self.last_word {
            Some(w) => format!("eof after \": {w}\""),
            None => "eof".into(),
        }
    }
}

/// The request `EventSource` makes for `target` on `host`, with an Origin
/// when given.
pub fn request(host: &str, target: &str, origin: Option<&str>) -> Vec<u8> {
    let mut r = format!(
        "GET {target} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n"
    );
    if let Some(o) = origin {
        r.push_str("Origin: ");
        r.push_str(o);
        r.push_str("\r\n");
    }
    r.push_str("\r\n");
    r.into_bytes()
}

/// Why opening a stream failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The server answered with another status than 200.
    Status(u16),
    /// 200, but not `Content-Type: text/event-stream`.
    NotEventStream,
    /// 200 with a `Transfer-Encoding` or `Content-Length`: this parser
    /// reads the body as the events themselves, so it needs a stream that
    /// ends with the connection.
    NotCloseDelimited,
    /// Not HTTP.
    Malformed,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Status(s) => write!(f, "HTTP {s}"),
            Refused::NotEventStream => write!(f, "200 without Content-Type: text/event-stream"),
            Refused::NotCloseDelimited => {
                write!(
                    f,
                    "200 with Transfer-Encoding or Content-Length (not close-delimited)"
                )
            }
            Refused::Malformed => write!(f, "malformed HTTP response"),
        }
    }
}

/// Checks the server's answer at the front of `buf`: `Ok(Some(n))` when it
/// is a `200` event stream whose head takes `n` bytes (what follows is the
/// stream), `Ok(None)` when the head is incomplete.
pub fn check_response(buf: &[u8]) -> Result<Option<usize>, Refused> {
    let head = match response_head(buf, 200) {
        Ok(Some(head)) => head,
        Ok(None) => return Ok(None),
        Err(HeadError::Malformed) => return Err(Refused::Malformed),
        Err(HeadError::Status(s)) => return Err(Refused::Status(s)),
    };
    let header = |name: &str| head.get(name);
    let n = head.len;
    let media = header("content-type").map(|v| v.split(|&b| b == b';').next().unwrap_or(v));
    if !media.is_some_and(|m| m.trim_ascii().eq_ignore_ascii_case(b"text/event-stream")) {
        return Err(Refused::NotEventStream);
    }
    if header("transfer-encoding").is_some() || header("content-length").is_some() {
        return Err(Refused::NotCloseDelimited);
    }
    Ok(Some(n))
}

/// The line starting at `from` in `buf`: where it ends (its terminator
/// excluded), where the next line starts, and whether its terminator is
/// a CR that is the last byte of `buf` (an LF may still follow). `None`
/// when the line has no terminator yet.
fn line_at(buf: &[u8], from: usize) -> Option<(usize, usize, bool)> {
    // memchr: most of an event is its data line, searched once per event.
    let eol = from + memchr::memchr2(b'\r', b'\n', &buf[from..])?;
    Some(match (buf[eol], buf.get(eol + 1)) {
        (b'\r', Some(b'\n')) => (eol, eol + 2, false),
        (b'\r', None) => (eol, eol + 1, true),
        _ => (eol, eol + 1, false),
    })
}

/// Where the event at the front of `buf` ends: `Ok(len)` when a blank
/// line ends it within `buf`, or `Err(from)`, the start of the first line
/// not yet complete, to search from when more bytes have come.
///
/// A non-blank line that ends in a CR at the end of `buf` counts as
/// incomplete: the next search starts at that line, where it sees
/// whether an LF follows (starting after the CR, it would take that LF
/// for a blank line and end the event early). A blank line that ends so
/// is complete: if an LF follows, it is read as one more blank line,
/// which ends an event without fields, and the standard dispatches
/// nothing for that.
fn event_end(buf: &[u8], mut from: usize) -> Result<usize, usize> {
    loop {
        let Some((eol, next, cr_last)) = line_at(buf, from) else {
            return Err(from);
        };
        if eol == from {
            return Ok(next);
        }
        if cr_last {
            return Err(from);
        }
        from = next;
    }
}

/// The data of an event whose lines are all complete.
#[derive(Debug, PartialEq, Eq)]
enum Data<'a> {
    /// No `data:` line: the standard dispatches nothing.
    None,
    /// One `data:` line: its value, where it lies.
    One(&'a [u8]),
    /// Several: joined with LF in the caller's buffer.
    Joined,
}

/// What one event (its lines up to the blank one) said.
#[derive(Debug, PartialEq, Eq)]
struct Event<'a> {
    /// Bytes it took, its blank line included.
    len: usize,
    data: Data<'a>,
    /// `: ping` comments.
    pings: u64,
    /// The last other comment.
    word: Option<&'a [u8]>,
}

/// A line as a field: the name, and the value with one space after the
/// colon stripped (a line without a colon is a name with an empty
/// value; a comment's name is empty).
fn field(line: &[u8]) -> (&[u8], &[u8]) {
    match line.iter().position(|&b| b == b':') {
        None => (line, &[]),
        Some(c) => {
            let value = &line[c + 1..];
            (&line[..c], value.strip_prefix(b" ").unwrap_or(value))
        }
    }
}

/// Reads the event at the front of `buf` line by line, in the same pass
/// that looks for its end: `Ok` once a blank line ends it, `Err(from)`
/// when `buf` ends first (as [`event_end`]; the data read so far is
/// dropped and read again with the rest). `id:`, `event:` and `retry:`
/// change nothing the tool measures, and unknown fields are ignored, as
/// the standard says.
fn read_event<'a>(buf: &'a [u8], joined: &mut Vec<u8>) -> Result<Event<'a>, usize> {
    let mut ev = Event {
        len: 0,
        data: Data::None,
        pings: 0,
        word: None,
    };
    let mut from = 0;
    loop {
        let Some((eol, next, cr_last)) = line_at(buf, from) else {
            return Err(from);
        };
        let line = &buf[from..eol];
        if line.is_empty() {
            ev.len = next;
            return Ok(ev);
        }
        if cr_last {
            return Err(from);
        }
        from = next;
        match field(line) {
            (b"", b"ping") => ev.pings += 1,
            (b"", text) => ev.word = Some(text),
            (b"data", value) => ev.data = add_data(ev.data, value, joined),
            _ => {}
        }
    }
}

/// The data after one more `data:` line: the first is kept where it
/// lies, a second one starts joining (with LF) into `joined`.
fn add_data<'a>(data: Data<'a>, value: &'a [u8], joined: &mut Vec<u8>) -> Data<'a> {
    match data {
        Data::None => Data::One(value),
        Data::One(first) => {
            joined.clear();
            joined.extend_from_slice(first);
            joined.push(b'\n');
            joined.extend_from_slice(value);
            Data::Joined
        }
        Data::Joined => {
            joined.push(b'\n');
            joined.extend_from_slice(value);
            Data::Joined
        }
    }
}

/// The next complete event at the front of `rest`, or where to search
/// from next time. One pass for an event that came whole; an event that
/// an earlier read cut is first searched for its end from where that
/// search stopped, so a long event cut by many reads is not read again
/// from its start after each of them.
fn next_event<'a>(rest: &'a [u8], st: &SseState, joined: &mut Vec<u8>) -> Result<Event<'a>, usize> {
    if st.scanned > 0 {
        event_end(rest, st.scanned.min(rest.len()))?;
    }
    read_event(rest, joined)
}

/// Handles every complete event at the front of `buf`, read at `now_ns`
/// (ns since the epoch), for the run `run`. `joined` is the caller's
/// buffer for events of several `data:` lines. `need` is always `None`:
/// an event says nothing of its length before it ends.
pub fn process(
    buf: &[u8],
    now_ns: u64,
    run: u64,
    st: &mut SseState,
    sink: &mut Sink,
    joined: &mut Vec<u8>,
) -> Processed {
    let mut at = skip_bom(buf, st);
    let ok = |consumed| Processed {
        consumed,
        need: None,
        end: None,
    };
    if st.at_start {
        return ok(at);
    }
    loop {
        let rest = &buf[at..];
        let ev = match next_event(rest, st, joined) {
            Ok(ev) => ev,
            Err(_) if rest.len() > MAX_MESSAGE => {
                return Processed {
                    consumed: at,
                    need: None,
                    end: Some(End::EventTooLarge(rest.len())),
                };
            }
            Err(from) => {
                st.scanned = from;
                return ok(at);
            }
        };
        st.scanned = 0;
        at += ev.len;
        sink.bytes += ev.len as u64;
        sink.pings += ev.pings;
        if let Some(w) = ev.word {
            st.last_word = Some(String::from_utf8_lossy(w).into());
        }
        let data = match ev.data {
            Data::None => None,
            Data::One(v) => Some(v),
            Data::Joined => Some(&joined[..]),
        };
        if let Some(data) = data {
            if std::str::from_utf8(data).is_err() {
                return Processed {
                    consumed: at,
                    need: None,
                    end: Some(End::EventNotUtf8),
                };
            }
            conn::message_in(data, now_ns, run, &mut st.last_seq, sink);
        }
    }
}

/// The byte-order mark a stream may start with, which is no part of its
/// first line: how many bytes of `buf` it takes. `st.at_start` stays set
/// while `buf` is a proper prefix of the mark.
fn skip_bom(buf: &[u8], st: &mut SseState) -> usize {
    if !st.at_start {
        return 0;
    }
    if buf.len() < BOM.len() && BOM.starts_with(buf) {
        return 0;
    }
    st.at_start = false;
    if buf.starts_with(BOM) {
        BOM.len()
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::{self, Stamp};

    const RUN: u64 = 9;

    fn stamp(seq: u64) -> Vec<u8> {
        let mut p = Vec::new();
        let s = Stamp {
            seq,
            t_ns: 1_000_000_000 + seq * 1000,
            run: RUN,
            step: 0,
        };
        payload::encode(&s, 128, &mut p);
        p
    }

    /// One event as the relay writes it, built by the relay's own code.
    fn relay_event(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        pubsocketd::sse::event::write(&mut out, Default::default(), data);
        out
    }

    /// Feeds `stream` in pieces cut at `cuts` (ascending offsets), as the
    /// client does: the unconsumed tail is kept and the next read appended.
    fn feed(stream: &[u8], cuts: &[usize]) -> (SseState, Sink, Vec<Vec<u8>>, Vec<u8>) {
        let (mut st, mut sink, mut joined) = (SseState::default(), Sink::default(), Vec::new());
        let mut pending = Vec::new();
        let mut datas = Vec::new();
        let mut last = 0;
        for &cut in cuts.iter().chain(std::iter::once(&stream.len())) {
            pending.extend_from_slice(&stream[last..cut]);
            last = cut;
            let p = process(
                &pending,
                2_000_000_000,
                RUN,
                &mut st,
                &mut sink,
                &mut joined,
            );
            assert_eq!(p.end, None);
            datas.extend(collect_data(&pending[..p.consumed]));
            pending.drain(..p.consumed);
        }
        (st, sink, datas, pending)
    }

    /// The data of every event in a stream of whole events, read in one go
    /// with a separate pass, to compare split reads against.
    fn collect_data(whole: &[u8]) -> Vec<Vec<u8>> {
        let whole = whole.strip_prefix(BOM).unwrap_or(whole);
        let mut out = Vec::new();
        let mut joined = Vec::new();
        let mut at = 0;
        while let Ok(ev) = read_event(&whole[at..], &mut joined) {
            match ev.data {
                Data::None => {}
                Data::One(v) => out.push(v.to_vec()),
                Data::Joined => out.push(joined.clone()),
            }
            at += ev.len;
        }
        out
    }

    #[test]
    fn relay_events_are_counted_like_websocket_messages() {
        let mut stream = b"retry: 3000\n\n".to_vec();
        for seq in [1, 2, 3, 5, 4, 6] {
            stream.extend(relay_event(&stamp(seq)));
        }
        stream.extend(relay_event(b"{\"heartbeat\": 1}"));
        stream.extend(b": ping\n\n");
        let (st, sink, _, pending) = feed(&stream, &[]);
        assert!(pending.is_empty());
        assert_eq!(sink.latencies.len(), 6);
        assert_eq!((sink.order_violations, sink.gaps, sink.foreign), (1, 1, 1));
        assert_eq!((sink.pings, st.last_seq), (1, 6));
        assert_eq!(sink.bytes, stream.len() as u64);
        assert_eq!(sink.latencies[0], (0, 1_000_000 - 1));
    }

    /// Every event, whatever line ends it uses, read at every cut: the same
    /// deliveries, data and order as read whole.
    #[test]
    fn split_at_every_byte_gives_the_same_events() {
        let (one, two, three) = (stamp(1), stamp(2), stamp(3));
        // A byte-order mark, then the first event at once: with the mark
        // taken for part of the line, "data" would be an unknown field.
        let mut stream = b"\xEF\xBB\xBFdata: ".to_vec();
        stream.extend(&one);
        stream.extend(b"\r\n\r\nretry: 3000\r\n\r\n: ping\r\r");
        stream.extend(b"id: 7\revent: message\rdata:");
        stream.extend(&two);
        stream.extend(b"\r\r");
        // The third stamp on two data lines, cut inside its pad.
        stream.extend(b"data: ");
        stream.extend(&three[..100]);
        stream.extend(b"\ndata: ");
        stream.extend(&three[100..]);
        stream.extend(b"\r\n\n");
        stream.extend(b"data\ndata:  two spaces\n\n");
        stream.extend(b"data: last\r");
        let mut three_joined = three[..100].to_vec();
        three_joined.push(b'\n');
        three_joined.extend(&three[100..]);
        let want = vec![one, two, three_joined, b"\n two spaces".to_vec()];
        let check = |cuts: &[usize]| {
            let (st, sink, datas, pending) = feed(&stream, cuts);
            assert_eq!(datas, want, "cuts {cuts:?}");
            assert_eq!(sink.latencies.len(), 3, "cuts {cuts:?}");
            assert_eq!((sink.foreign, sink.pings), (1, 1), "cuts {cuts:?}");
            assert_eq!((st.last_seq, sink.gaps, sink.order_violations), (3, 0, 0));
            assert_eq!(pending, b"data: last\r", "the last event is not ended yet");
        };
        for cut in 0..=stream.len() {
            check(&[cut]);
        }
        // And one byte per read.
        check(&(1..stream.len()).collect::<Vec<_>>());
    }

    #[test]
    fn a_crlf_cut_after_its_cr_ends_one_line() {
        // "\r\r" then "\n": the second CR ends the event (a blank line),
        // the LF read after it is an empty event, which dispatches nothing.
        let mut stream = b"data: a\r\r".to_vec();
        stream.extend(b"\ndata: b\ndata: c\n\n");
        for cut in 0..=stream.len() {
            let (_, sink, datas, pending) = feed(&stream, &[cut]);
            assert_eq!(datas, vec![b"a".to_vec(), b"b\nc".to_vec()], "cut at {cut}");
            assert!(pending.is_empty());
            assert_eq!(sink.bytes, stream.len() as u64);
        }
        // Cut after "data: a\r": the CR may be half of a CRLF.
        let (_, _, datas, _) = feed(b"data: a\r\ndata: b\r\n\r\n", &[8]);
        assert_eq!(datas, vec![b"a\nb".to_vec()]);
    }

    #[test]
    fn fields_comments_and_retry_are_not_data() {
        let stream = b"retry: 10\n: hello there\nid: 1\nevent: x\nfoo: bar\nnocolon\n\ndata\n\ndata:x\ndata\n\n";
        let (st, sink, datas, pending) = feed(stream, &[]);
        assert!(pending.is_empty());
        assert_eq!(datas, vec![b"".to_vec(), b"x\n".to_vec()]);
        assert_eq!(sink.foreign, 2);
        assert_eq!(st.last_word.as_deref(), Some("hello there"));
        assert_eq!(st.eof(), "eof after \": hello there\"");
        assert_eq!(field(b"data:  x"), (&b"data"[..], &b" x"[..]));
        assert_eq!(field(b":ping"), (&b""[..], &b"ping"[..]));
    }

    /// The relay splits a payload's line breaks into `data:` lines; joined
    /// again they come back as LF, so a stamp with any line break in its
    /// pad still decodes, and one that has none arrives byte for byte.
    #[test]
    fn payloads_round_trip_through_the_relays_event_format() {
        let plain = stamp(4);
        assert!(!plain.iter().any(|&b| b == b'\r' || b == b'\n'));
        let mut words = stamp(5);
        payload::wordify(&mut words, 3);
        assert!(!words.iter().any(|&b| b == b'\r' || b == b'\n'));
        let mut broken = stamp(6);
        let n = broken.len();
        broken[n - 10..n - 6].copy_from_slice(b"\r\n\r\n");
        let mut stream = relay_event(&plain);
        stream.extend(relay_event(&words));
        stream.extend(relay_event(&broken));
        let (st, sink, datas, _) = feed(&stream, &[]);
        let mut lf = stamp(6);
        lf.splice(n - 10..n - 6, b"\n\n".iter().copied());
        assert_eq!(datas, vec![plain, words, lf]);
        assert_eq!((sink.latencies.len(), st.last_seq), (3, 6));
    }

    #[test]
    fn broken_streams_end_the_connection() {
        let mut st = SseState::default();
        let (mut sink, mut joined) = (Sink::default(), Vec::new());
        let p = process(
            b"data: \xff\xfe\n\n",
            0,
            RUN,
            &mut st,
            &mut sink,
            &mut joined,
        );
        assert_eq!((p.consumed, p.end), (10, Some(End::EventNotUtf8)));
        let big = vec![b'x'; MAX_MESSAGE + 1];
        let p = process(
            &big,
            0,
            RUN,
            &mut SseState::default(),
            &mut sink,
            &mut joined,
        );
        assert_eq!(p.end, Some(End::EventTooLarge(MAX_MESSAGE + 1)));
    }

    #[test]
    fn an_event_cut_by_many_reads_is_searched_once() {
        let mut st = SseState::default();
        let (mut sink, mut joined) = (Sink::default(), Vec::new());
        let mut buf = b"data: a\ndata: b\nda".to_vec();
        let p = process(&buf, 0, RUN, &mut st, &mut sink, &mut joined);
        assert_eq!((p.consumed, st.scanned), (0, 16));
        buf.extend(b"ta: c\n\n");
        let p = process(&buf, 0, RUN, &mut st, &mut sink, &mut joined);
        assert_eq!((p.consumed, st.scanned, sink.foreign), (buf.len(), 0, 1));
        assert_eq!(joined, b"a\nb\nc");
    }

    #[test]
    fn the_answer_is_checked() {
        let req = String::from_utf8(request(
            "127.0.0.1:1",
            "/events?channel=a",
            Some("http://x"),
        ))
        .unwrap();
        assert!(req.starts_with("GET /events?channel=a HTTP/1.1\r\nHost: 127.0.0.1:1\r\n"));
        assert!(req.contains("Accept: text/event-stream\r\n"));
        assert!(req.ends_with("Origin: http://x\r\n\r\n"));
        let mut ok =
            pubsocketd::sse::head::opening(Default::default(), std::time::Duration::from_secs(3));
        let head = ok.len() - b"retry: 3000\n\n".len();
        assert_eq!(check_response(&ok), Ok(Some(head)));
        assert_eq!(check_response(&ok[..head - 1]), Ok(None));
        ok.splice(
            ..head,
            b"HTTP/1.1 200 OK\r\ncontent-type: Text/Event-Stream; charset=utf-8\r\n\r\n"
                .iter()
                .copied(),
        );
        assert!(check_response(&ok).unwrap().is_some());
        let cases: [(&[u8], Refused); 4] = [
            (b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n", Refused::Status(403)),
            (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n", Refused::NotEventStream),
            (
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
                Refused::NotCloseDelimited,
            ),
            (b"\x00\x01garbage\r\n\r\n", Refused::Malformed),
        ];
        for (answer, why) in cases {
            assert_eq!(check_response(answer), Err(why));
        }
    }
}
