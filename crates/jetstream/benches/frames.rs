//! The client's work per event besides the socket: peeking `time_us`, and decompressing a
//! zstd frame made with a dictionary.
#![allow(missing_docs)] // criterion_group! makes a public function that cannot carry a doc comment
#![allow(clippy::unwrap_used)] // a benchmark: failing loudly is right

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use firehose_jetstream::{FrameDecoder, Message, peek_time_us};

fn frames(c: &mut Criterion) {
    let events = firehose_synth::json_corpus(1, 10_000);
    let bytes: usize = events.iter().map(String::len).sum();
    let mut group = c.benchmark_group("frames");
    group.throughput(Throughput::Bytes(bytes as u64));

    group.bench_function("peek_time_us", |b| {
        b.iter(|| {
            events
                .iter()
                .map(|e| peek_time_us(e.as_bytes()).unwrap_or(0))
                .sum::<i64>()
        })
    });

    let mut decoder = FrameDecoder::new(None).unwrap();
    let texts: Vec<bytes::Bytes> = events.iter().map(|e| e.clone().into()).collect();
    group.bench_function("text", |b| {
        b.iter(|| {
            texts
                .iter()
                .filter(|t| matches!(decoder.decode_text((*t).clone()), Message::Event { .. }))
                .count()
        })
    });

    let dictionary =
        zstd::dict::from_samples(&firehose_synth::json_corpus(2, 5000), 112_640).unwrap();
    let mut compressor = zstd::bulk::Compressor::with_dictionary(3, &dictionary).unwrap();
    let compressed: Vec<bytes::Bytes> = events
        .iter()
        .map(|e| compressor.compress(e.as_bytes()).unwrap().into())
        .collect();
    let mut decoder = FrameDecoder::new(Some(&dictionary)).unwrap();
    group.bench_function("zstd", |b| {
        b.iter(|| {
            compressed
                .iter()
                .filter(|f| matches!(decoder.decode_binary((*f).clone()), Message::Event { .. }))
                .count()
        })
    });
    group.finish();
}

criterion_group!(benches, frames);
criterion_main!(benches);
