//! Decode, and decode + Arrow conversion, on the generated corpus.
//!
//! `cargo bench -p firehose-benches --bench decode`. Each operation is reported twice, in
//! events/s (`…/events`) and in bytes/s of JSON (`…/bytes`), on one thread.
#![allow(missing_docs)] // criterion_group! makes a public function that cannot carry a doc comment

use std::hint::black_box;

// The allocator the `firehose` binary uses.
use firehose_allocator as _;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use firehose_core::{BatchBuilder, Event};

const EVENTS: usize = 20_000;

fn corpus() -> (Vec<String>, u64) {
    let lines = firehose_synth::json_corpus(42, EVENTS);
    let bytes = lines.iter().map(|l| l.len() as u64).sum();
    (lines, bytes)
}

/// Benchmarks `work` over the corpus in a group reported both in events/s (`…/events`) and in
/// bytes of JSON per second (`…/bytes`).
fn bench_corpus<T>(c: &mut Criterion, group: &str, work: impl Fn(&[String]) -> T) {
    let (lines, bytes) = corpus();
    let mut group = c.benchmark_group(group);
    for (unit, throughput) in [
        ("events", Throughput::Elements(EVENTS as u64)),
        ("bytes", Throughput::Bytes(bytes)),
    ] {
        group.throughput(throughput);
        group.bench_function(unit, |b| b.iter(|| black_box(work(&lines))));
    }
    group.finish();
}

fn decode(c: &mut Criterion) {
    bench_corpus(c, "decode", |lines| {
        for line in lines {
            black_box(Event::decode(line.as_bytes()).ok());
        }
    });
}

fn decode_to_arrow(c: &mut Criterion) {
    bench_corpus(c, "decode_to_arrow", |lines| {
        // As the writer will: decode a batch (borrowing from the lines), then convert.
        let mut builder = BatchBuilder::new();
        for line in lines {
            if let Ok(event) = Event::decode(line.as_bytes()) {
                builder.push(&event);
            }
        }
        builder.finish().ok()
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(4));
    targets = decode, decode_to_arrow
}
criterion_main!(benches);
