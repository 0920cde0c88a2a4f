//! Guards `ws::frame`: the one encode every relayed message costs, whatever
//! the number of clients (header + one copy of the payload into one
//! allocation), and `frame::message`, which adds the UTF-8 check that picks
//! a text or a binary frame.

mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pubsocketd::ws::frame;
use std::hint::black_box;

/// ASCII, JSON-looking text of `len` bytes (valid UTF-8, as most payloads).
fn payload(len: usize) -> Vec<u8> {
    let unit = br#"{"id":12345,"kind":"quote","px":101.25,"sym":"ACME"},"#;
    unit.iter().copied().cycle().take(len).collect()
}

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame_encode");
    // (label, payload size): 2-, 4-, 4- and 10-byte headers.
    for (label, len) in [
        ("100B", 100),
        ("1KiB", 1024),
        ("60KiB", 60 * 1024),
        ("100KiB", 100 * 1024),
    ] {
        let p = payload(len);
        assert_eq!(
            frame::encode(frame::OP_TEXT, &p).len() - len,
            frame::header_len(len)
        );
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_with_input(BenchmarkId::new("encode", label), &p, |b, p| {
            b.iter(|| frame::encode(frame::OP_TEXT, black_box(p)))
        });
    }
    for (label, len) in [("1KiB", 1024), ("60KiB", 60 * 1024)] {
        let p = payload(len);
        assert_eq!(frame::data_opcode(&p), frame::OP_TEXT);
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_with_input(BenchmarkId::new("message", label), &p, |b, p| {
            b.iter(|| {
                let p = black_box(p);
                frame::encode(frame::data_opcode(p), p)
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::quick();
    targets = encode
}
criterion_main!(benches);
