//! Encoding, once per message: a (channel, payload) becomes one
//! [`Message`], the WebSocket frame every client gets (and its deflated
//! form when some client negotiated compression), plus the configured keys
//! its channel matches, so that no worker looks at the payload again.

use crate::channels::{Channels, KeySet, Live, Names};
use crate::fanout::hub::Message;
use crate::history::id::Stamp;
use crate::ops::stats::Stats;
use crate::sse::event as sse;
use crate::ws::deflate::Deflater;
use crate::ws::frame;
use base64::Engine;
use bytes::Bytes;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// Why a payload was not relayed.
#[derive(Debug, PartialEq, Eq)]
pub enum Rejected {
    /// No configured channel or pattern matches the channel.
    NoSubscriber,
    /// `-ws-json-only` and the payload is not JSON.
    NotJson,
    /// Over `-rs-max-payload`.
    TooLarge,
}

/// Encodes payloads into messages: once per message, whatever the number
/// of clients. Each source has its own (it keeps a cache of channel names
/// and a scratch buffer for envelopes).
#[derive(Clone)]
pub struct Encoder {
    /// The channels relayed now, and this encoder's copy of them with its
    /// generation (refreshed when a reload changed them).
    live: Arc<Live>,
    channels: Arc<Channels>,
    generation: u64,
    envelope: bool,
    json_only: bool,
    max_payload: usize,
    stats: Arc<Stats>,
    names: NamesCell,
    scratch: Vec<u8>,
    /// permessage-deflate: the smallest message compressed.
    deflate_min: Option<usize>,
    deflater: DeflaterCell,
    compressed: Vec<u8>,
    /// History is on: every message gets the `pubsocketd.v1` envelope,
    /// which a replay may need even while no such client is connected.
    history: bool,
    /// Encodes stream entries read again for a resume: not counted as
    /// received (they were, when they first came).
    replaying: bool,
}

/// A per-encoder compressor; cloning an encoder starts a fresh one.
#[derive(Default)]
struct DeflaterCell(Deflater);

impl Clone for DeflaterCell {
    fn clone(&self) -> Self {
        DeflaterCell::default()
    }
}

/// A per-encoder name cache; cloning an encoder starts an empty one.
#[derive(Default)]
struct NamesCell(Names);

impl Clone for NamesCell {
    fn clone(&self) -> Self {
        NamesCell::default()
    }
}

impl Encoder {
    pub fn new(
        live: Arc<Live>,
        envelope: bool,
        json_only: bool,
        max_payload: usize,
        stats: Arc<Stats>,
    ) -> Encoder {
        Encoder {
            channels: live.get(),
            generation: live.generation(),
            live,
            envelope,
            json_only,
            max_payload,
            stats,
            names: NamesCell::default(),
            scratch: Vec::new(),
            deflate_min: None,
            deflater: DeflaterCell::default(),
            compressed: Vec::new(),
            history: false,
            replaying: false,
        }
    }

    /// The channels relayed now.
    pub fn channels(&mut self) -> &Channels {
        if self.live.generation() != self.generation {
            self.generation = self.live.generation();
            self.channels = self.live.get();
        }
        &self.channels
    }

    /// The message for `payload` published on `channel`, counted per key.
    pub fn encode(&mut self, channel: &[u8], payload: &[u8]) -> Result<Message, Rejected> {
        self.encode_stamped(channel, payload, None)
    }

    /// As [`Encoder::encode`], for a message with an ID (history on): the
    /// envelopes carry it.
    pub fn encode_stamped(
        &mut self,
        channel: &[u8],
        payload: &[u8],
        stamp: Option<Stamp>,
    ) -> Result<Message, Rejected> {
        let keys = self.channels().keys_for(channel);
        if keys.is_nothing() {
            return Err(Rejected::NoSubscriber);
        }
        if !self.replaying {
            self.stats.count_received(&keys);
        }
        if payload.len() > self.max_payload {
            self.stats.count_dropped(&keys);
            return Err(Rejected::TooLarge);
        }
        // Envelopes for `pubsocketd.v1` clients, built only while one is
        // connected (with -ws-envelope the frame already is one).
        let v1 = !self.envelope && (self.history || self.stats.v1_clients.load(Relaxed) > 0);
        let json = (self.json_only || self.envelope || v1) && is_json(payload);
        if self.json_only && !json {
            self.stats.count_dropped(&keys);
            return Err(Rejected::NotJson);
        }
        let opcode = if self.envelope {
            self.envelope_body(channel, payload, json, stamp);
            frame::OP_TEXT
        } else {
            frame::data_opcode(payload)
        };
        // The envelope's buffer is lent out while the frames are built.
        let scratch = std::mem::take(&mut self.scratch);
        let body = if self.envelope { &scratch[..] } else { payload };
        let frame = frame::encode(opcode, body);
        let deflated = self.deflate(opcode, body, &keys);
        self.scratch = scratch;
        let (envelope, envelope_deflated) = match v1 {
            true => self.v1_forms(channel, payload, json, stamp),
            false => (None, None),
        };
        let (event, named_event) = self.events(channel, payload, opcode, stamp);
        Ok(Message {
            frame,
            deflated,
            enveloped: self.envelope,
            envelope,
            envelope_deflated,
            event,
            named_event,
            keys,
            everyone: self.channels.reaches_everyone(channel),
            channel: self.names.0.get(channel),
            stamp,
            gap: false,
        })
    }

    /// The envelope, and its compressed form while a `pubsocketd.v1` client
    /// negotiated deflate.
    fn v1_forms(
        &mut self,
        channel: &[u8],
        payload: &[u8],
        json: bool,
        stamp: Option<Stamp>,
    ) -> (Option<Bytes>, Option<Bytes>) {
        self.envelope_body(channel, payload, json, stamp);
        let scratch = std::mem::take(&mut self.scratch);
        let envelope = frame::encode(frame::OP_TEXT, &scratch);
        let wanted = self.stats.v1_deflate.load(Relaxed) > 0;
        let zipped = match (self.deflate_min, wanted) {
            (Some(min), true) if scratch.len() >= min => {
                self.deflater.0.compress(&scratch, &mut self.compressed);
                (self.compressed.len() < scratch.len())
                    .then(|| frame::encode_deflated(frame::OP_TEXT, &self.compressed))
            }
            _ => None,
        };
        self.scratch = scratch;
        (Some(envelope), zipped)
    }

    /// The Server-Sent Events of the message, each while some event-stream
    /// client takes it (under `-ws-envelope` every such client takes the
    /// named one, whose data is the envelope still in the scratch buffer).
    /// A binary payload is no event unless enveloped; it is counted.
    fn events(
        &mut self,
        channel: &[u8],
        payload: &[u8],
        opcode: u8,
        stamp: Option<Stamp>,
    ) -> (Option<Bytes>, Option<Bytes>) {
        let unnamed = self.stats.sse_clients.load(Relaxed) > 0 && !self.envelope;
        let named = self.stats.sse_named.load(Relaxed) > 0;
        if !unnamed && !named {
            return (None, None);
        }
        let data = match self.envelope {
            true => &self.scratch[..],
            false if opcode == frame::OP_TEXT => payload,
            false => {
                self.stats.sse_skipped.fetch_add(1, Relaxed);
                return (None, None);
            }
        };
        let id = stamp.map(|s| s.id);
        let build = |named| sse::message(channel, id, named, data);
        (unnamed.then(|| build(false)), named.then(|| build(true)))
    }

    /// Turns history on: every message is built with its envelope.
    pub fn with_history(mut self, on: bool) -> Encoder {
        self.history = on;
        self
    }

    /// An encoder for entries read again for a resume (not counted).
    pub fn for_replays(mut self) -> Encoder {
        self.replaying = true;
        self.history = true;
        self
    }

    /// Turns permessage-deflate on: messages of at least `min` bytes are
    /// compressed once, while some client negotiated the extension.
    pub fn with_deflate(mut self, min: Option<usize>) -> Encoder {
        self.deflate_min = min;
        self
    }

    /// The compressed frame, when some client wants it and it pays.
    fn deflate(&mut self, opcode: u8, body: &[u8], keys: &KeySet) -> Option<Bytes> {
        let min = self.deflate_min?;
        if body.len() < min || !self.stats.deflate_wanted(keys) {
            return None;
        }
        let out = &mut self.compressed;
        self.deflater.0.compress(body, out);
        (out.len() < body.len()).then(|| frame::encode_deflated(opcode, out))
    }

    /// `{"channel":…,"id":…,"data":…}` into the scratch buffer (`id` when
    /// the message has one): the payload as JSON when it is JSON, as a
    /// string when it is text, else base64 under `data_base64`.
    fn envelope_body(&mut self, channel: &[u8], payload: &[u8], json: bool, stamp: Option<Stamp>) {
        let out = &mut self.scratch;
        out.clear();
        out.extend_from_slice(b"{\"channel\":");
        json_string(out, &String::from_utf8_lossy(channel));
        if let Some(stamp) = stamp {
            out.extend_from_slice(b",\"id\":\"");
            stamp.id.write(out);
            out.push(b'"');
        }
        match (json, std::str::from_utf8(payload)) {
            (true, _) => {
                out.extend_from_slice(b",\"data\":");
                out.extend_from_slice(payload);
            }
            (false, Ok(text)) => {
                out.extend_from_slice(b",\"data\":");
                json_string(out, text);
            }
            (false, Err(_)) => {
                out.extend_from_slice(b",\"data_base64\":\"");
                let b64 = base64::engine::general_purpose::STANDARD.encode(payload);
                out.extend_from_slice(b64.as_bytes());
                out.push(b'"');
            }
        }
        out.push(b'}');
    }
}

fn is_json(payload: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(payload).is_ok()
}

/// Appends `s` as a JSON string literal.
fn json_string(out: &mut Vec<u8>, s: &str) {
    // serde_json writes straight into the buffer: no temporary String.
    let _ = serde_json::to_writer(&mut *out, s);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::hub::Form;

    fn encoder(list: &str, envelope: bool, json_only: bool) -> Encoder {
        let channels = Channels::parse(list).unwrap();
        let stats = Arc::new(Stats::new(1, channels.keys().len()));
        Encoder::new(
            Arc::new(Live::new(channels)),
            envelope,
            json_only,
            100,
            stats,
        )
    }

    fn text(m: &Message) -> &str {
        std::str::from_utf8(&m.frame[2..]).unwrap()
    }

    #[test]
    fn plain_messages_keep_the_payload() {
        let mut e = encoder("a,b.*", false, false);
        let m = e.encode(b"b.x", b"{\"n\":1}").unwrap();
        assert_eq!(
            (&m.keys, &m.channel[..], text(&m)),
            (&KeySet::One(1), &b"b.x"[..], "{\"n\":1}")
        );
        assert_eq!(e.encode(b"zzz", b"x").unwrap_err(), Rejected::NoSubscriber);
        assert_eq!(e.encode(b"a", &[0; 101]).unwrap_err(), Rejected::TooLarge);
        assert_eq!(e.stats.key_counts(0), (1, 1));
    }

    #[test]
    fn envelopes() {
        let mut e = encoder("a\"q", true, false);
        let m = e.encode(b"a\"q", b"[1, 2]").unwrap();
        assert_eq!(text(&m), r#"{"channel":"a\"q","data":[1, 2]}"#);
        let m = e.encode(b"a\"q", b"not \"json\"").unwrap();
        assert_eq!(text(&m), r#"{"channel":"a\"q","data":"not \"json\""}"#);
        let m = e.encode(b"a\"q", b"\xff\x00").unwrap();
        assert_eq!(text(&m), r#"{"channel":"a\"q","data_base64":"/wA="}"#);
        assert!(serde_json::from_str::<serde_json::Value>(text(&m)).is_ok());
    }

    #[test]
    fn envelopes_only_while_a_v1_client_is_connected() {
        let mut e = encoder("a", false, false);
        let m = e.encode(b"a", b"{\"n\":1}").unwrap();
        assert_eq!(m.envelope, None);
        assert!(m.form(Form::Envelope).is_none(), "a v1 client skips it");
        e.stats.v1_of(false, true);
        let m = e.encode(b"a", b"{\"n\":1}").unwrap();
        assert_eq!(text(&m), "{\"n\":1}");
        let env = m.form(Form::Envelope).unwrap();
        assert_eq!(&env[2..], br#"{"channel":"a","data":{"n":1}}"#);
        assert_eq!(m.form(Form::Deflated), Some(&m.frame));
        let mut enveloped = encoder("a", true, false);
        enveloped.stats.v1_of(false, true);
        let m = enveloped.encode(b"a", b"x").unwrap();
        assert_eq!(m.envelope, None, "the frame is the envelope");
        assert_eq!(m.form(Form::Envelope), Some(&m.frame));
    }

    #[test]
    fn envelopes_carry_the_id_and_are_built_for_the_history() {
        use crate::history::id::Id;
        let mut e = encoder("a", false, false).with_history(true);
        let stamp = Stamp {
            id: Id::new(17, 3),
            prev: Some(Id::new(17, 2)),
        };
        let m = e.encode_stamped(b"a", b"{\"n\":1}", Some(stamp)).unwrap();
        assert_eq!(
            text(&m),
            "{\"n\":1}",
            "the original's clients see the payload"
        );
        let env = m
            .envelope
            .as_ref()
            .expect("built with no v1 client connected");
        assert_eq!(&env[2..], br#"{"channel":"a","id":"17-3","data":{"n":1}}"#);
        assert_eq!(m.stamp, Some(stamp));
        let mut enveloped = encoder("a", true, false).with_history(true);
        let m = enveloped.encode_stamped(b"a", b"x", Some(stamp)).unwrap();
        assert_eq!(text(&m), r#"{"channel":"a","id":"17-3","data":"x"}"#);
    }

    #[test]
    fn events_only_while_an_event_stream_takes_them() {
        use crate::history::id::Id;
        let mut e = encoder("a", false, false);
        let m = e.encode(b"a", b"x\ny").unwrap();
        assert_eq!(
            (m.form(Form::Event), m.form(Form::NamedEvent)),
            (None, None)
        );
        e.stats.sse_of(false, true);
        let stamp = Stamp {
            id: Id::new(5, 1),
            prev: None,
        };
        let m = e.encode_stamped(b"a", b"x\ny", Some(stamp)).unwrap();
        assert_eq!(
            &m.event.as_ref().unwrap()[..],
            b"id: 5-1\ndata: x\ndata: y\n\n"
        );
        assert_eq!(m.named_event, None, "no client takes named events");
        let binary = e.encode(b"a", b"\xff\x00").unwrap();
        assert_eq!(binary.event, None, "binary payloads are no event");
        assert_eq!(e.stats.sse_skipped.load(Relaxed), 1);
        let mut enveloped = encoder("a", true, false);
        enveloped.stats.sse_of(true, true);
        enveloped.stats.sse_of(false, true);
        let m = enveloped.encode(b"a", b"\xff").unwrap();
        assert_eq!(m.event, None, "under -ws-envelope every stream is named");
        assert_eq!(
            &m.named_event.unwrap()[..],
            &b"event: a\ndata: {\"channel\":\"a\",\"data_base64\":\"/w==\"}\n\n"[..]
        );
    }

    #[test]
    fn json_only_filters() {
        let mut e = encoder("a", false, true);
        assert!(e.encode(b"a", b"{}").is_ok());
        assert_eq!(e.encode(b"a", b"{").unwrap_err(), Rejected::NotJson);
    }
}
