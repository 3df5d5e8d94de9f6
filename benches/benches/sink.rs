//! Decode → Arrow → Parquet (zstd) → local disk, as `firehose import` and the pipeline write.
//!
//! `cargo bench -p firehose-benches --bench sink`. One iteration decodes 20,000 generated
//! events and writes them through [`Writer`] to a [`LocalStorage`] (one file per partition,
//! fsynced), on one thread; reported in events/s and in bytes of JSON per second.
#![allow(clippy::expect_used)] // A benchmark: a failure must stop it, loudly.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use firehose_core::Event;
use firehose_sink::{BatchName, LocalStorage, ParquetOptions, Writer};

/// The allocator the `firehose` binary uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const EVENTS: usize = 20_000;

fn write_to_local_disk(c: &mut Criterion) {
    let lines = firehose_synth::json_corpus(42, EVENTS);
    let bytes: u64 = lines.iter().map(|l| l.len() as u64).sum();
    let dir = std::env::temp_dir().join(format!("firehose-bench-sink-{}", std::process::id()));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let writer = Writer::new(Arc::new(LocalStorage::new(&dir)), ParquetOptions::default());
    let name = BatchName::new("bench-0", "bench-1").expect("a valid name");
    let mut group = c.benchmark_group("decode_arrow_parquet_local");
    group.sample_size(20);
    for (unit, throughput) in [
        ("events", Throughput::Elements(EVENTS as u64)),
        ("bytes", Throughput::Bytes(bytes)),
    ] {
        group.throughput(throughput);
        group.bench_function(unit, |b| {
            b.iter(|| {
                let events: Vec<Event<'_>> = lines
                    .iter()
                    .filter_map(|l| Event::decode(l.as_bytes()).ok())
                    .collect();
                black_box(
                    runtime
                        .block_on(writer.write(&name, &events))
                        .expect("the write succeeds"),
                )
            })
        });
    }
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, write_to_local_disk);
criterion_main!(benches);
