//! What one client does with the bytes it reads: frames out of the buffer,
//! stamps out of the messages, ordering checked, latencies collected. No
//! I/O here (see `client`), so it is tested on plain byte strings.

use crate::payload;
use crate::wsframe::{self, FrameError, Parsed};
use flate2::{Decompress, FlushDecompress, Status};

/// Largest message a client accepts.
pub const MAX_MESSAGE: usize = 64 << 20;

/// Per-connection state between reads.
#[derive(Debug, Default)]
pub struct ConnState {
    /// Highest sequence number seen (0: none yet).
    pub last_seq: u64,
    /// permessage-deflate was agreed: RSV1 messages are inflated.
    pub deflate: bool,
    /// A fragmented message being put together: its opcode, bytes, and
    /// whether it is compressed.
    frag: Option<(u8, Vec<u8>, bool)>,
}

impl ConnState {
    pub fn new(deflate: bool) -> ConnState {
        ConnState {
            deflate,
            ..ConnState::default()
        }
    }
}

/// Inflates compressed messages; one per thread, reused. Each message is
/// inflated with a fresh window (`server_no_context_takeover`). Not the
/// relay's `ws::deflate::inflate`: that allocates per message, and a tool
/// that checks the relay's frames should not share its decoder.
pub struct Inflater {
    z: Decompress,
    /// The last message inflated.
    out: Vec<u8>,
    /// Its input with the `00 00 ff ff` tail RFC 7692 strips.
    input: Vec<u8>,
}

impl Default for Inflater {
    fn default() -> Inflater {
        Inflater {
            z: Decompress::new(false),
            out: Vec::new(),
            input: Vec::new(),
        }
    }
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Inflater")
    }
}

impl Inflater {
    /// Inflates `compressed` into `self.out`; false if it is not valid
    /// deflate data or inflates past [`MAX_MESSAGE`].
    fn inflate(&mut self, compressed: &[u8]) -> bool {
        self.z.reset(false);
        self.input.clear();
        self.input.extend_from_slice(compressed);
        self.input.extend_from_slice(&[0, 0, 0xff, 0xff]);
        self.out.clear();
        let mut at = 0;
        loop {
            if self.out.capacity() - self.out.len() < 4096 {
                self.out.reserve(self.out.len().max(4096));
            }
            let before = self.z.total_in();
            let status =
                self.z
                    .decompress_vec(&self.input[at..], &mut self.out, FlushDecompress::Sync);
            let Ok(status) = status else {
                return false;
            };
            at += (self.z.total_in() - before) as usize;
            if self.out.len() > MAX_MESSAGE {
                return false;
            }
            if at == self.input.len() || status == Status::StreamEnd {
                return true;
            }
        }
    }
}

/// What one read's frames amounted to; reused across reads (cleared by
/// the caller once it has added them up).
#[derive(Debug, Default)]
pub struct Sink {
    /// Our run's messages: (ramp step, latency in µs).
    pub latencies: Vec<(u32, u64)>,
    /// Messages whose seq was not above the client's previous one.
    pub order_violations: u64,
    /// Messages a client skipped (seq jumped by more than 1).
    pub gaps: u64,
    /// Messages that are not ours (other run, other publisher).
    pub foreign: u64,
    pub pings: u64,
    /// Bytes of frames parsed.
    pub bytes: u64,
    /// Masked control frames to send back (pongs, the close echo).
    pub reply: Vec<u8>,
    /// Compressed messages read.
    pub inflated: u64,
    pub inflater: Inflater,
}

impl Sink {
    pub fn clear(&mut self) {
        self.latencies.clear();
        self.order_violations = 0;
        self.gaps = 0;
        self.foreign = 0;
        self.pings = 0;
        self.bytes = 0;
        self.inflated = 0;
        self.reply.clear();
    }
}

/// Why a connection's reading stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The server sent a close frame with this code (echoed in `reply`).
    Closed(Option<u16>),
    Protocol(FrameError),
    /// A text frame that is not UTF-8.
    BadUtf8,
    /// A compressed message that does not inflate.
    BadDeflate,
    /// An event stream's bytes without the end of an event, past
    /// [`MAX_MESSAGE`].
    EventTooLarge(usize),
    /// An event whose data is not UTF-8 (the stream is UTF-8 text).
    EventNotUtf8,
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Closed(Some(c)) => write!(f, "close {c}"),
            End::Closed(None) => write!(f, "close (no code)"),
            End::Protocol(e) => write!(f, "protocol error: {e}"),
            End::BadUtf8 => write!(f, "protocol error: text frame not UTF-8"),
            End::BadDeflate => write!(f, "protocol error: message does not inflate"),
            End::EventTooLarge(n) => write!(f, "protocol error: {n} bytes without an event's end"),
            End::EventNotUtf8 => write!(f, "protocol error: event data not UTF-8"),
        }
    }
}

/// The result of [`process`]: bytes consumed from the front of the buffer,
/// the total size of an incomplete frame (when its header is complete), and
/// whether the connection ended.
#[derive(Debug, PartialEq, Eq)]
pub struct Processed {
    pub consumed: usize,
    pub need: Option<usize>,
    pub end: Option<End>,
}

/// Handles every complete frame at the front of `buf`, read at `now_ns`
/// (ns since the epoch), for the run `run`.
pub fn process(
    buf: &[u8],
    now_ns: u64,
    run: u64,
    st: &mut ConnState,
    sink: &mut Sink,
    mask: &mut u32,
) -> Processed {
    let mut at = 0;
    loop {
        let f = match wsframe::parse(&buf[at..], MAX_MESSAGE, st.deflate) {
            Ok(Parsed::Frame(f)) => f,
            Ok(Parsed::Incomplete(need)) => {
                return Processed {
                    consumed: at,
                    need,
                    end: None,
                }
            }
            Err(e) => {
                return Processed {
                    consumed: at,
                    need: None,
                    end: Some(End::Protocol(e)),
                }
            }
        };
        let payload = &buf[at..][f.payload.clone()];
        at += f.len;
        sink.bytes += f.len as u64;
        let message = match (f.opcode, f.fin, st.frag.as_mut()) {
            (wsframe::OP_TEXT | wsframe::OP_BINARY, true, None) => {
                Some((f.opcode, payload, f.compressed))
            }
            (wsframe::OP_TEXT | wsframe::OP_BINARY, false, None) => {
                st.frag = Some((f.opcode, payload.to_vec(), f.compressed));
                None
            }
            (wsframe::OP_CONTINUATION, _, Some((_, bytes, _))) => {
                bytes.extend_from_slice(payload);
                if bytes.len() > MAX_MESSAGE {
                    let n = bytes.len() as u64;
                    return ended(at, End::Protocol(FrameError::TooLarge(n)));
                }
                None
            }
            (wsframe::OP_PING, ..) => {
                sink.pings += 1;
                wsframe::encode_masked(wsframe::OP_PONG, payload, next_mask(mask), &mut sink.reply);
                continue;
            }
            (wsframe::OP_PONG, ..) => continue,
            (wsframe::OP_CLOSE, ..) => {
                let code = payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]));
                let echo = code.map(u16::to_be_bytes);
                let echo: &[u8] = echo.as_ref().map_or(&[], |c| &c[..]);
                wsframe::encode_masked(wsframe::OP_CLOSE, echo, next_mask(mask), &mut sink.reply);
                return ended(at, End::Closed(code));
            }
            // A data frame inside a fragmented message, or a continuation
            // without a start.
            _ => return ended(at, End::Protocol(FrameError::BadOpcode(f.opcode))),
        };
        let done;
        let (opcode, bytes, compressed): (u8, &[u8], bool) = match message {
            Some(m) => m,
            None if f.opcode == wsframe::OP_CONTINUATION && f.fin => {
                done = st.frag.take().expect("fragment in progress");
                (done.0, &done.1[..], done.2)
            }
            None => continue,
        };
        let end = if compressed {
            sink.inflated += 1;
            if !sink.inflater.inflate(bytes) {
                return ended(at, End::BadDeflate);
            }
            let inflated = std::mem::take(&mut sink.inflater.out);
            let end = complete(opcode, &inflated, now_ns, run, st, sink);
            sink.inflater.out = inflated;
            end
        } else {
            complete(opcode, bytes, now_ns, run, st, sink)
        };
        if let Some(end) = end {
            return ended(at, end);
        }
    }
}

/// A whole (inflated) message: checked, then counted.
fn complete(
    opcode: u8,
    bytes: &[u8],
    now_ns: u64,
    run: u64,
    st: &mut ConnState,
    sink: &mut Sink,
) -> Option<End> {
    if opcode == wsframe::OP_TEXT && std::str::from_utf8(bytes).is_err() {
        return Some(End::BadUtf8);
    }
    message_in(bytes, now_ns, run, &mut st.last_seq, sink);
    None
}

fn ended(consumed: usize, end: End) -> Processed {
    Processed {
        consumed,
        need: None,
        end: Some(end),
    }
}

/// One complete message, of either transport: `last_seq` is the highest
/// sequence number its connection has seen, so that WebSocket messages
/// and events are held to the same ordering and gap rules.
pub(crate) fn message_in(bytes: &[u8], now_ns: u64, run: u64, last_seq: &mut u64, sink: &mut Sink) {
    let Some(s) = payload::decode(bytes).filter(|s| s.run == run) else {
        sink.foreign += 1;
        return;
    };
    if s.seq <= *last_seq {
        sink.order_violations += 1;
    } else {
        if *last_seq != 0 {
            sink.gaps += s.seq - *last_seq - 1;
        }
        *last_seq = s.seq;
    }
    let latency_us = now_ns.saturating_sub(s.t_ns) / 1000;
    sink.latencies.push((s.step, latency_us));
}

/// A new masking key (xorshift), different for every frame.
fn next_mask(state: &mut u32) -> [u8; 4] {
    let mut x = *state | 1;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *state = x;
    x.to_le_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::Stamp;
    use pubsocketd::ws::frame;

    fn msg(seq: u64, run: u64) -> Vec<u8> {
        let mut p = Vec::new();
        let stamp = Stamp {
            seq,
            t_ns: 1_000_000_000 + seq * 1000,
            run,
            step: 2,
        };
        payload::encode(&stamp, 128, &mut p);
        frame::encode(frame::OP_TEXT, &p).to_vec()
    }

    fn run_all(stream: &[u8], st: &mut ConnState, sink: &mut Sink) -> Processed {
        process(stream, 2_000_000_000, 9, st, sink, &mut 1)
    }

    #[test]
    fn ordering_gaps_and_foreign_messages_are_counted() {
        let mut stream = Vec::new();
        for seq in [1, 2, 3, 5, 4, 5, 6] {
            stream.extend(msg(seq, 9));
        }
        stream.extend(msg(7, 8));
        stream.extend(frame::encode(frame::OP_TEXT, b"{\"heartbeat\": 1}").to_vec());
        let (mut st, mut sink) = (ConnState::default(), Sink::default());
        let p = run_all(&stream, &mut st, &mut sink);
        assert_eq!(
            p,
            Processed {
                consumed: stream.len(),
                need: None,
                end: None
            }
        );
        assert_eq!(sink.latencies.len(), 7);
        assert_eq!(sink.order_violations, 2, "4 after 5, then 5 again");
        assert_eq!(sink.gaps, 1, "4 skipped between 3 and 5");
        assert_eq!(sink.foreign, 2);
        assert_eq!(st.last_seq, 6);
        assert_eq!(sink.latencies[0], (2, 1_000_000 - 1));
    }

    #[test]
    fn split_reads_give_the_same_result() {
        let mut stream = Vec::new();
        for seq in 1..=20 {
            stream.extend(msg(seq, 9));
        }
        stream.extend(frame::encode(frame::OP_PING, b"hi").to_vec());
        for step in [1, 7, 130, 131, 500] {
            let (mut st, mut sink) = (ConnState::default(), Sink::default());
            let mut pending: Vec<u8> = Vec::new();
            for piece in stream.chunks(step) {
                pending.extend_from_slice(piece);
                let p = run_all(&pending, &mut st, &mut sink);
                assert!(p.end.is_none());
                pending.drain(..p.consumed);
            }
            assert!(pending.is_empty());
            assert_eq!(sink.latencies.len(), 20, "step {step}");
            assert_eq!((sink.order_violations, sink.gaps, sink.pings), (0, 0, 1));
            assert_eq!(&sink.reply[..2], b"\x8a\x82");
        }
    }

    #[test]
    fn fragments_are_joined_and_close_is_echoed() {
        let whole = msg(1, 9);
        let payload = &whole[4..];
        let mut stream = vec![0x01, 0x7e, 0, 50];
        stream.extend_from_slice(&payload[..50]);
        stream.extend([0x80, 0x7e, 0, (payload.len() - 50) as u8]);
        stream.extend_from_slice(&payload[50..]);
        stream.extend(frame::close(1001, "bye").to_vec());
        stream.extend(msg(2, 9));
        let (mut st, mut sink) = (ConnState::default(), Sink::default());
        let p = run_all(&stream, &mut st, &mut sink);
        assert_eq!(p.end, Some(End::Closed(Some(1001))));
        assert_eq!(sink.latencies.len(), 1);
        assert_eq!(&sink.reply[..2], b"\x88\x82");
    }

    /// A compressed frame as the relay sends it (raw deflate, sync flush,
    /// the 00 00 ff ff tail stripped), compressed here with flate2.
    fn compressed(payload: &[u8]) -> Vec<u8> {
        let mut c = flate2::Compress::new(flate2::Compression::default(), false);
        let mut z = Vec::with_capacity(payload.len() + 64);
        c.compress_vec(payload, &mut z, flate2::FlushCompress::Sync)
            .unwrap();
        z.truncate(z.len() - 4);
        frame::encode_deflated(frame::OP_TEXT, &z).to_vec()
    }

    #[test]
    fn compressed_messages_are_inflated_where_agreed() {
        let mut p = Vec::new();
        let stamp = Stamp {
            seq: 1,
            t_ns: 1_000_000_000,
            run: 9,
            step: 0,
        };
        payload::encode(&stamp, 2000, &mut p);
        let mut stream = compressed(&p);
        assert!(stream.len() < 200, "{} bytes", stream.len());
        stream.extend(msg(2, 9));
        let mut st = ConnState::new(true);
        let mut sink = Sink::default();
        let r = run_all(&stream, &mut st, &mut sink);
        assert_eq!(r.end, None);
        assert_eq!(
            (sink.latencies.len(), sink.inflated, st.last_seq),
            (2, 1, 2)
        );
        // Without the extension, RSV1 is a protocol error...
        let r = run_all(&stream, &mut ConnState::default(), &mut sink);
        assert_eq!(r.end, Some(End::Protocol(FrameError::Reserved)));
        // ...and with it, bytes that do not inflate end the connection.
        let junk = frame::encode_deflated(frame::OP_TEXT, b"\xff\xff\xff\xff");
        let r = run_all(&junk, &mut st, &mut sink);
        assert_eq!(r.end, Some(End::BadDeflate));
    }

    #[test]
    fn bad_frames_end_the_connection() {
        let (mut st, mut sink) = (ConnState::default(), Sink::default());
        let mut stream = msg(1, 9);
        let good = stream.len();
        stream.extend_from_slice(b"\x81\x82abcdxy");
        let p = run_all(&stream, &mut st, &mut sink);
        assert_eq!(p.consumed, good);
        assert_eq!(p.end, Some(End::Protocol(FrameError::Masked)));
        let p = run_all(b"\x81\x02\xff\xfe", &mut ConnState::default(), &mut sink);
        assert_eq!(p.end, Some(End::BadUtf8));
    }
}
