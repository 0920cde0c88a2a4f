//! Guards `redis::resp::PushReader`: the in-place scan of `message` and
//! `pmessage` pushes that hands out ranges of the read buffer instead of
//! allocating a frame per relayed message.

mod common;

use bytes::{Buf, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use pubsocketd::redis::resp::{Item, PushReader};
use std::hint::black_box;

/// Pushes per buffer.
const N: usize = 400;
/// Payload bytes per push.
const PAYLOAD: usize = 128;
/// What one read of the split variant delivers (about one Ethernet MTU).
const CHUNK: usize = 1500;
/// As `redis::subscriber`: the read buffer and its minimum reserve.
const READ_CHUNK: usize = 64 * 1024;
/// `-rs-max-payload` default order of magnitude: never hit here.
const MAX_PAYLOAD: usize = 1 << 20;

fn bulk(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(format!("${}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// `N` pushes on varying channels; `pattern` makes them `pmessage`s.
fn stream(pattern: Option<&[u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..N {
        let channel = format!("news.{}", ["sports", "weather", "markets", "eu"][i % 4]);
        let mut payload = format!("{{\"seq\":{i:08},\"body\":\"").into_bytes();
        payload.resize(PAYLOAD - 2, b'x');
        payload.extend_from_slice(b"\"}");
        match pattern {
            None => out.extend_from_slice(b"*3\r\n$7\r\nmessage\r\n"),
            Some(p) => {
                out.extend_from_slice(b"*4\r\n$8\r\npmessage\r\n");
                bulk(&mut out, p);
            }
        }
        bulk(&mut out, channel.as_bytes());
        bulk(&mut out, &payload);
    }
    out
}

/// Takes every complete item off `buf` as the subscriber does: use the
/// ranges, then advance by `consumed`. Returns the messages seen.
fn drain(reader: &mut PushReader, buf: &mut BytesMut) -> usize {
    let mut n = 0;
    while let Some(item) = reader.next(buf).expect("well-formed stream") {
        match item {
            Item::Message {
                pattern,
                channel,
                payload,
                consumed,
            } => {
                if let Some(p) = pattern {
                    black_box(&buf[p]);
                }
                black_box((&buf[channel], &buf[payload]));
                buf.advance(consumed);
                n += 1;
            }
            other => panic!("unexpected item {other:?}"),
        }
    }
    n
}

fn decode(c: &mut Criterion) {
    let plain = stream(None);
    let patterned = stream(Some(b"news.*"));
    let mut g = c.benchmark_group("resp_decode");

    // The whole buffer at once (a read that brought N pushes).
    for (name, s) in [("message_x400", &plain), ("pmessage_x400", &patterned)] {
        let mut check = BytesMut::from(&s[..]);
        assert_eq!(drain(&mut PushReader::new(MAX_PAYLOAD), &mut check), N);
        assert!(check.is_empty());
        g.throughput(Throughput::Bytes(s.len() as u64));
        g.bench_function(name, |b| {
            let mut reader = PushReader::new(MAX_PAYLOAD);
            b.iter_batched_ref(
                || BytesMut::from(&s[..]),
                |buf| drain(&mut reader, buf),
                BatchSize::SmallInput,
            )
        });
    }

    // The same stream in 1,500-byte reads, pushes split across reads,
    // with the subscriber's read loop around it: `wanted` sizes the
    // reserve, the read appends, then the complete pushes are drained.
    g.throughput(Throughput::Bytes(plain.len() as u64));
    g.bench_function("message_x400_split_1500", |b| {
        let mut reader = PushReader::new(MAX_PAYLOAD);
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        b.iter(|| {
            let mut n = 0;
            for piece in black_box(&plain[..]).chunks(CHUNK) {
                let want = reader.wanted(&buf).unwrap_or(0).saturating_sub(buf.len());
                buf.reserve(want.max(READ_CHUNK / 4));
                buf.extend_from_slice(piece);
                n += drain(&mut reader, &mut buf);
            }
            assert_eq!(n, N);
            n
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::quick();
    targets = decode
}
criterion_main!(benches);
