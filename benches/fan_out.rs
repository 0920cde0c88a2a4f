//! Guards the per-message cost that grows with the number of clients: a
//! batch of frames handed to every connection, as `Worker::fan_out` does
//! (the `IoSlice`s and their total built once per batch, then
//! `Conn::deliver` per client). The connections have no socket, so each
//! delivery is the queueing path: a clone of the shared `Bytes` handle
//! pushed onto the client's queue, never a copy of the frame.
//!
//! Also the once-per-message side: `ingest::encode::Encoder::encode` (channel mask,
//! counters, frame, channel name).

mod common;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pubsocketd::channels::{Channels, Live};
use pubsocketd::fanout::conn::{Conn, Delivery, MAX_IOV};
use pubsocketd::ingest::encode::Encoder;
use pubsocketd::ops::stats::Stats;
use pubsocketd::ws::frame;
use std::hint::black_box;
use std::io::IoSlice;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CLIENTS: usize = 10_000;
const PAYLOAD: usize = 128;
/// Per-client queue bound, as `-ws-queue-bytes` (1 MiB): never reached.
const QUEUE_LIMIT: usize = 1 << 20;

fn payload() -> Vec<u8> {
    let mut p = br#"{"seq":1,"sym":"ACME","px":101.25,"body":""#.to_vec();
    p.resize(PAYLOAD - 2, b'x');
    p.extend_from_slice(b"\"}");
    p
}

fn conns() -> Vec<Conn> {
    (0..CLIENTS)
        .map(|_| Conn::new(None, QUEUE_LIMIT, String::new(), None))
        .collect()
}

/// Fills the unused places of the stack array of frame references.
static EMPTY: Bytes = Bytes::new();

/// Delivers `frames` to every connection as `Worker::fan_out` does (frame
/// references and slices built once, on the stack); returns the time the
/// deliveries took. The queues are emptied afterwards, outside the
/// measured time.
fn fan_out(conns: &[Conn], frames: &[Bytes]) -> Duration {
    let start = Instant::now();
    let n = frames.len();
    let mut all: [&Bytes; MAX_IOV] = [&EMPTY; MAX_IOV];
    let mut slices = [IoSlice::new(&[]); MAX_IOV];
    let mut total = 0;
    for (i, f) in frames.iter().enumerate() {
        all[i] = f;
        slices[i] = IoSlice::new(f);
        total += f.len();
    }
    let (all, slices) = (&all[..n], &slices[..n]);
    let mut queued = 0usize;
    for c in conns {
        if c.deliver(all, slices, total) == Delivery::Queued {
            queued += 1;
        }
    }
    black_box(queued);
    let took = start.elapsed();
    debug_assert_eq!(queued, conns.len());
    for c in conns {
        c.reset_for_bench();
    }
    took
}

fn deliver(c: &mut Criterion) {
    let conns = conns();
    let one = vec![frame::encode(frame::OP_TEXT, &payload())];
    let batch: Vec<Bytes> = (0..16)
        .map(|_| frame::encode(frame::OP_TEXT, &payload()))
        .collect();
    // Sanity: every delivery is queued, and the queue holds the batch.
    fan_out(&conns[..1], &batch);
    let refs: Vec<&Bytes> = batch.iter().collect();
    let slices: Vec<IoSlice<'_>> = batch.iter().map(|f| IoSlice::new(f)).collect();
    let total = 16 * batch[0].len();
    assert_eq!(conns[0].deliver(&refs, &slices, total), Delivery::Queued);
    assert_eq!(conns[0].queued(), total);
    conns[0].reset_for_bench();
    assert_eq!(conns[0].queued(), 0);

    let mut g = c.benchmark_group("fan_out");
    // Deliveries: one per client for one frame.
    g.throughput(Throughput::Elements(CLIENTS as u64));
    g.bench_function("1x128B_to_10k_conns", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| fan_out(&conns, black_box(&one))).sum())
    });
    // Message deliveries, as the worker counts them: 16 per client.
    g.throughput(Throughput::Elements(16 * CLIENTS as u64));
    g.bench_function("16x128B_to_10k_conns", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| fan_out(&conns, black_box(&batch))).sum())
    });
    g.finish();
}

fn encoder(list: &str) -> Encoder {
    let channels = Channels::parse(list).unwrap();
    let stats = Arc::new(Stats::new(1, channels.keys().len()));
    Encoder::new(Arc::new(Live::new(channels)), false, false, 1 << 20, stats)
}

fn encode(c: &mut Criterion) {
    let p = payload();
    let mut g = c.benchmark_group("encoder");
    g.throughput(Throughput::Elements(1));
    for (name, list, channel) in [
        ("1_channel", "news", &b"news"[..]),
        (
            "3_channels_1_pattern",
            "alerts,news,weather,markets.*",
            &b"markets.eu"[..],
        ),
    ] {
        let mut e = encoder(list);
        let m = e.encode(channel, &p).expect("relayed");
        assert_eq!(m.frame.len(), frame::header_len(PAYLOAD) + PAYLOAD);
        assert!(!m.keys.is_nothing());
        g.bench_function(name, |b| {
            b.iter(|| e.encode(black_box(channel), black_box(&p)))
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::quick();
    targets = deliver, encode
}
criterion_main!(benches);
