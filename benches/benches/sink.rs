//! Decode → Arrow → Parquet (zstd) → local disk, as `firehose import` and the pipeline write,
//! timed in CPU seconds of the one thread doing it, so "events/s per core" is what it says.
//!
//! `cargo bench -p firehose-benches --bench sink [-- EVENTS [ROUNDS]]` (100,000 generated
//! events, the import's chunk, and 5 rounds by default) prints, for each stage, the CPU time
//! of the thread that ran it and the events per CPU-second; then the whole write through
//! [`Writer`] to a [`LocalStorage`] (one file per partition, each written to a temporary
//! file, fsynced, renamed, its directory fsynced), in CPU time of the whole process (the
//! storage writes on tokio's blocking threads) and in wall time, which includes waiting for
//! the disk. Each figure is the median of the rounds. Last, the live writer's encoding of one
//! closed batch on 1, 2 and 4 threads (`--encode-threads`), in wall time.
//!
//! The machine is shared; CPU time is what the process used whatever else runs, so the
//! per-core figure moves much less than the wall-time one.
#![allow(clippy::expect_used)] // A benchmark: a failure must stop it, loudly.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use firehose_benches::{median, process_cpu};
use firehose_core::{BatchBuilder, Event, PartitionKey, Table};
use firehose_sink::{BatchName, LocalStorage, OpenFiles, ParquetOptions, Writer, encode};

// The allocator the `firehose` binary uses.
use firehose_allocator as _;

/// CPU time of the calling thread, in nanoseconds, from the scheduler
/// (`/proc/thread-self/schedstat`, Linux).
fn thread_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").expect("schedstat");
    let ns = stat
        .split_whitespace()
        .next()
        .and_then(|f| f.parse().ok())
        .expect("schedstat starts with the time on CPU in ns");
    Duration::from_nanos(ns)
}

#[derive(Default)]
struct Samples {
    decode: Vec<f64>,
    arrow: Vec<f64>,
    parquet: Vec<f64>,
    staged: Vec<f64>,
    write_cpu: Vec<f64>,
    write_wall: Vec<f64>,
}

fn main() {
    let mut numbers = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse::<usize>().ok());
    let n = numbers.next().unwrap_or(100_000);
    let rounds = numbers.next().unwrap_or(5).max(1);
    let lines = firehose_synth::json_corpus(42, n);
    let json: u64 = lines.iter().map(|l| l.len() as u64 + 1).sum();
    let dir = std::env::temp_dir().join(format!("firehose-bench-sink-{}", std::process::id()));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let options = ParquetOptions::default();
    let writer = Writer::new(Arc::new(LocalStorage::new(&dir)), options.clone());
    let mut s = Samples::default();
    let mut parquet_bytes = 0;
    // One extra round first, untimed: the allocator and the page cache warm up.
    for round in 0..=rounds {
        // The stages one by one, on this thread.
        let t0 = thread_cpu();
        let events: Vec<Event<'_>> = lines
            .iter()
            .map(|l| Event::decode(l.as_bytes()).expect("generated events decode"))
            .collect();
        let t1 = thread_cpu();
        let mut partitions: BTreeMap<PartitionKey, BatchBuilder> = BTreeMap::new();
        for event in &events {
            partitions.entry(event.partition()).or_default().push(event);
        }
        let batches: Vec<(Table, RecordBatch)> = partitions
            .into_values()
            .flat_map(|b| b.finish().expect("arrow"))
            .collect();
        let t2 = thread_cpu();
        let files: Vec<_> = batches
            .iter()
            .map(|(_, batch)| encode(batch, &options).expect("parquet"))
            .collect();
        let t3 = thread_cpu();
        parquet_bytes = files.iter().map(|f| f.len() as u64).sum::<u64>();
        black_box(files);
        drop(batches);
        drop(events);

        // The whole write as the import does it: decode, then `Writer::write`.
        let name = BatchName::new(&format!("bench-{round}"), "0").expect("a valid name");
        let (c0, w0) = (process_cpu(), Instant::now());
        let events: Vec<Event<'_>> = lines
            .iter()
            .map(|l| Event::decode(l.as_bytes()).expect("generated events decode"))
            .collect();
        let committed = runtime
            .block_on(writer.write(&name, &events))
            .expect("the write succeeds");
        let (c1, w1) = (process_cpu(), Instant::now());
        assert_eq!(committed.rows(), n);
        drop(events);
        // Keep the disk from filling over the rounds.
        for file in &committed.files {
            runtime
                .block_on(writer.storage().delete(&file.path))
                .expect("delete");
        }
        if round == 0 {
            continue;
        }
        let per_s = |d: Duration| n as f64 / d.as_secs_f64();
        s.decode.push(per_s(t1 - t0));
        s.arrow.push(per_s(t2 - t1));
        s.parquet.push(per_s(t3 - t2));
        s.staged.push(per_s(t3 - t0));
        s.write_cpu.push(per_s(c1 - c0));
        s.write_wall.push(per_s(w1 - w0));
    }
    let _ = std::fs::remove_dir_all(&dir);
    let mib = json as f64 / f64::from(1 << 20);
    println!(
        "{n} generated events ({json} bytes of JSON, {parquet_bytes} bytes of Parquet, {:.1}%), median of {rounds} rounds\n",
        100.0 * parquet_bytes as f64 / json as f64
    );
    println!("| stage | events per CPU-second of one thread | JSON MiB per CPU-second |");
    println!("|---|---|---|");
    for (stage, v) in [
        ("decode", &s.decode),
        (
            "events → Arrow batches (one per partition and table)",
            &s.arrow,
        ),
        ("Arrow → Parquet (zstd) bytes", &s.parquet),
        ("decode → Arrow → Parquet, together", &s.staged),
    ] {
        let m = median(v.clone());
        println!("| {stage} | {m:.0} | {:.1} |", m * mib / n as f64);
    }
    let cpu = median(s.write_cpu.clone());
    let wall = median(s.write_wall.clone());
    println!(
        "\ndecode + `Writer::write` to fsynced local files: {cpu:.0} events per CPU-second of the process, {wall:.0} events/s wall ({:.1} MiB/s of JSON)",
        wall * mib / n as f64
    );
    encode_pool(&lines, rounds, &options);
}

/// The live writer's encoding of one closed batch (all the events, as a catch-up's batch
/// holds them: every table of the hours they span) on 1, 2 and 4 threads
/// (`Closing::encode_on`, `--encode-threads`), in wall time.
fn encode_pool(lines: &[String], rounds: usize, options: &ParquetOptions) {
    let events: Vec<Event<'_>> = lines
        .iter()
        .map(|l| Event::decode(l.as_bytes()).expect("generated events decode"))
        .collect();
    let name = BatchName::new("pool", "0").expect("a valid name");
    println!(
        "\n| encoding one closed batch of {} events | wall, median | events/s | × one thread |",
        events.len()
    );
    println!("|---|---|---|---|");
    let mut single = None;
    for threads in [1, 2, 4] {
        let mut walls = Vec::new();
        for round in 0..=rounds {
            let mut open = OpenFiles::new(Duration::from_secs(180));
            for (event, line) in events.iter().zip(lines) {
                open.push(event, line.len());
            }
            let closing = open.close();
            let started = Instant::now();
            let sealed = closing.encode_on(&name, options, threads).expect("encode");
            let took = started.elapsed();
            black_box(sealed);
            if round > 0 {
                walls.push(took.as_secs_f64());
            }
        }
        let wall = median(walls);
        let rate = events.len() as f64 / wall;
        let base = *single.get_or_insert(rate);
        println!(
            "| {threads} thread(s) | {wall:.3} s | {rate:.0} | {:.2}× |",
            rate / base
        );
    }
}
