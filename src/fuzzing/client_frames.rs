//! Fuzz property of the client frame decoder (with and without
//! permessage-deflate).

use super::split::{pieces, split_points};
use crate::ws::{self, decode::Event, decode::Violation};
use bytes::BytesMut;

/// Message cap of the [`client_frames`] decoder.
pub const WS_MAX_MESSAGE: usize = 1024;

/// What one pass of a [`ws::decode::Decoder`] over a stream produced.
#[derive(Debug, PartialEq)]
struct FrameRun {
    events: Vec<Event>,
    violation: Option<Violation>,
    /// Bytes still buffered at the end (only compared without a violation).
    leftover: usize,
}

fn frames_run(pieces: &[&[u8]], deflate: bool) -> FrameRun {
    let mut decoder = match deflate {
        true => ws::decode::Decoder::with_deflate(WS_MAX_MESSAGE),
        false => ws::decode::Decoder::new(WS_MAX_MESSAGE),
    };
    let mut buf = BytesMut::new();
    let mut events = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            let before = buf.len();
            match decoder.decode(&mut buf) {
                Ok(Some(event)) => {
                    assert!(buf.len() < before, "an event consumed no bytes");
                    check_event(&event);
                    events.push(event);
                }
                Ok(None) => break,
                Err(violation) => {
                    assert!(
                        matches!(violation.code, 1002 | 1007 | 1009),
                        "unexpected close code {violation:?}"
                    );
                    // The connection is closed now: nothing more is read.
                    return FrameRun {
                        events,
                        violation: Some(violation),
                        leftover: 0,
                    };
                }
            }
        }
    }
    FrameRun {
        events,
        violation: None,
        leftover: buf.len(),
    }
}

fn check_event(event: &Event) {
    match event {
        Event::Ping(payload) => assert!(payload.len() <= 125, "ping over 125 bytes"),
        Event::Close(Some(code)) => assert!(ws::decode::valid_close_code(*code)),
        Event::Message { len, .. } => assert!(*len <= WS_MAX_MESSAGE, "message over the cap"),
        Event::Close(None) | Event::Pong => {}
    }
}

/// `Decoder` gives the same events however the client's bytes arrive.
///
/// The stream is decoded whole, byte by byte, and cut in two at every
/// point (pseudo-random points for inputs over 512 bytes). Every run must
/// give the same events up to the same violation (or none), and no run
/// goes on after its first violation. Events respect the limits (pings of at
/// most 125 bytes, messages of at most 1024, valid close codes).
pub fn client_frames(data: &[u8]) {
    // Plain, and with permessage-deflate (RSV1 messages are inflated).
    for deflate in [false, true] {
        let whole = frames_run(&[data], deflate);
        let bytes: Vec<&[u8]> = data.chunks(1).collect();
        assert_frames_same(&whole, &frames_run(&bytes, deflate), "fed byte by byte");
        for cut in split_points(data) {
            let split = frames_run(&pieces(data, &[cut]), deflate);
            assert_frames_same(&whole, &split, &format!("split at {cut}"));
        }
    }
}

fn assert_frames_same(whole: &FrameRun, split: &FrameRun, how: &str) {
    assert_eq!(whole, split, "decoding differs when {how}");
}
