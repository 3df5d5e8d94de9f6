//! push → read → ack throughput of the buffer backends, memory and Redis in one group.
//!
//! Each iteration moves 16,384 events of 550 bytes (the real mean Jetstream event) through the
//! buffer: one producer appends batches while one consumer reads up to 64 entries at a time and
//! acknowledges them, as the ingest and the writer do. Throughput is in events; MB/s is
//! events/s × 550.
//!
//! The Redis backend runs when `REDIS_URL` is set (`crates/buffer/bench.sh` starts a
//! throwaway server and prints `redis-benchmark`'s raw `XADD` figure next to ours).
#![allow(missing_docs)] // criterion_group! makes a public function that cannot carry a doc comment
#![allow(clippy::expect_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use firehose_buffer::memory::InMemory;
use firehose_buffer::{Batch, Buffer, BufferExt};

const EVENT_BYTES: usize = 550;
const EVENTS_PER_ITER: usize = 16_384;
const BATCH_SIZES: [usize; 3] = [10, 100, 500];

fn batch(size: usize) -> Batch {
    let event = Bytes::from(vec![b'x'; EVENT_BYTES]);
    Batch::new(vec![event; size], 1_700_000_000_000_000)
}

/// Move `EVENTS_PER_ITER` events through `b` in batches of `batch`; returns the events moved.
async fn push_read_ack(b: &dyn Buffer, batch: &Batch) -> usize {
    let batches = EVENTS_PER_ITER / batch.len();
    let produce = async {
        for _ in 0..batches {
            b.append(batch.clone()).await.expect("append");
        }
    };
    let consume = async {
        let mut entries = 0;
        let mut events = 0;
        while entries < batches {
            let got = b
                .read("bench", 64, Duration::from_millis(100))
                .await
                .expect("read");
            entries += got.len();
            events += got.iter().map(|e| e.batch.len()).sum::<usize>();
            b.ack_entries(&got).await.expect("ack");
        }
        events
    };
    let ((), events) = tokio::join!(produce, consume);
    events
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    #[cfg_attr(not(feature = "redis"), allow(unused_mut))]
    let mut backends: Vec<(&str, Box<dyn Buffer>)> = vec![("memory", Box::new(InMemory::new()))];
    #[cfg(feature = "redis")]
    match std::env::var("REDIS_URL") {
        Ok(url) => {
            let stream = format!("firehose-bench:{}", std::process::id());
            let redis = rt
                .block_on(
                    firehose_buffer::redis::RedisBufferBuilder::new()
                        .with_url(url)
                        .with_stream(stream)
                        .build(),
                )
                .expect("connect to REDIS_URL");
            backends.push(("redis", Box::new(redis)));
        }
        Err(_) => eprintln!("REDIS_URL is not set: benchmarking the memory backend only"),
    }

    let mut group = c.benchmark_group("push_read_ack");
    group.throughput(Throughput::Elements(EVENTS_PER_ITER as u64));
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(4));
    for (name, buffer) in &backends {
        for size in BATCH_SIZES {
            let batch = batch(size);
            group.bench_with_input(BenchmarkId::new(*name, size), &batch, |bench, batch| {
                bench.iter_custom(|iters| {
                    rt.block_on(async {
                        let start = Instant::now();
                        for _ in 0..iters {
                            black_box(push_read_ack(buffer.as_ref(), batch).await);
                        }
                        start.elapsed()
                    })
                });
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
