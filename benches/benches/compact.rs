//! `firehose compact`'s scaling with threads: the same uncompacted dataset (generated events
//! over six hours, imported in units of 20,000 lines: about 50 files in each of some 60 table
//! and hour partitions) compacted with 1 thread, then with 2, as `firehose_sink::compact` runs
//! it (partitions at once, each one's decoding, sorting and encoding on a blocking thread). The
//! allocator keeps freed memory, as in `firehose compact`, so a peak after the first round also
//! counts what the rounds before left.
//!
//! `cargo bench -p firehose-benches --bench compact [-- EVENTS [ROUNDS [THREADS…]]]`
//! (1,000,000 events, 3 rounds, 1 and 2 threads by default) prints for each thread count the
//! wall time, events per second, CPU seconds, events per CPU-second and the peak RSS of the
//! round (reset before each round through `/proc/self/clear_refs`), each the median of the
//! rounds; then each rate as a multiple of the first. Each round runs every thread count once,
//! on a fresh copy of the dataset, written to disk (`sync`) before the clock starts.
#![allow(clippy::expect_used)] // A benchmark: a failure must stop it, loudly.

use std::path::Path;
use std::sync::Arc;

use firehose_benches::{Rounds, ScalingArgs, print_scaling, write_capture};
use firehose_import::{ImportOptions, Input, import};
use firehose_sink::{CompactOptions, LocalStorage, compact};
use firehose_synth::Config;

/// Writes every dirty page of the machine to disk (`sync`), so a round does not pay for the
/// writeback of the copy made before it.
fn settle_writeback() {
    let synced = std::process::Command::new("sync").status().expect("sync");
    assert!(synced.success(), "sync failed");
}

/// Copies a directory tree.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("copy");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy file");
        }
    }
}

fn main() {
    let ScalingArgs {
        events,
        rounds,
        threads,
    } = ScalingArgs::from_env();
    // As `firehose compact` does.
    firehose_allocator::keep_freed_memory();
    let dir = std::env::temp_dir().join(format!("firehose-bench-compact-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let capture = write_capture(
        &dir,
        Config {
            seed: 6,
            // Six hours of event time.
            rate: events as f64 / (6.0 * 3600.0),
            ..Config::default()
        },
        events,
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let uncompacted = dir.join("uncompacted");
    let imported = runtime
        .block_on(import(
            &[Input::File(capture.clone())],
            Arc::new(LocalStorage::new(&uncompacted)),
            &ImportOptions {
                batch_lines: 20_000,
                ..ImportOptions::default()
            },
            |_| {},
        ))
        .expect("import");
    assert_eq!(imported.events, events);
    println!(
        "{events} events in {} files; {rounds} rounds; {} cores",
        imported.files,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!("threads  wall s  events/s   CPU s  events/CPU-s  peak RSS MB  partitions  files out");
    let mut figures = vec![Rounds::default(); threads.len()];
    // The same files come out whatever the thread count: one report is kept for the table.
    let mut report = None;
    for round in 0..rounds {
        for (&n, rounds) in threads.iter().zip(&mut figures) {
            let work = dir.join(format!("work-{n}-{round}"));
            copy_tree(&uncompacted, &work);
            // The copy's writeback is the setup's, not the round's: done before the clock starts.
            settle_writeback();
            let storage = LocalStorage::new(&work);
            let options = CompactOptions {
                threads: n,
                memory_budget: u64::MAX,
                ..CompactOptions::default()
            };
            let done = rounds
                .measure(|| runtime.block_on(compact(&storage, i64::MAX, &options, |_| {})))
                .expect("compact");
            assert_eq!(done.rows_in, events);
            report = Some(done);
            std::fs::remove_dir_all(&work).expect("clean up");
        }
    }
    let done = report.expect("a round");
    let mut rates = Vec::new();
    for (&n, rounds) in threads.iter().zip(figures) {
        let (wall, cpu, rss) = rounds.medians();
        let rate = events as f64 / wall;
        rates.push(rate);
        println!(
            "{n:>7}  {wall:>6.2}  {rate:>8.0}  {cpu:>6.2}  {:>12.0}  {rss:>11.0}  {:>10}  {:>9}",
            events as f64 / cpu,
            done.partitions,
            done.files_out
        );
    }
    print_scaling(&threads, &rates);
    std::fs::remove_dir_all(&dir).expect("clean up");
}
