//! `firehose import`'s scaling with threads: the same generated capture imported into a local
//! dataset with 1 thread, then with 2, as `firehose_import::import` runs it (each thread
//! cutting the next unit of 80,000 lines in turn, then decoding it, building Arrow, encoding
//! Parquet and storing its files).
//!
//! `cargo bench -p firehose-benches --bench import [-- EVENTS [ROUNDS [THREADS…]]]` (1,000,000
//! events, 3 rounds, 1 and 2 threads by default) prints for each thread count the wall time,
//! events per second, CPU seconds, events per CPU-second and the peak RSS of the round (the
//! peak is reset before each round through `/proc/self/clear_refs`), each the median of the
//! rounds; then each rate as a multiple of the first. Each round runs every thread count once.
//! The allocator keeps freed memory, as in `firehose import`, so a peak after the first round
//! also counts what the rounds before left; the README's peak RSS per thread count comes from
//! `/usr/bin/time -v firehose import`.
#![allow(clippy::expect_used)] // A benchmark: a failure must stop it, loudly.

use firehose_benches::{Rounds, ScalingArgs, print_scaling, write_capture};
use firehose_import::{ImportOptions, Input, import};
use firehose_sink::LocalStorage;
use firehose_synth::Config;

fn main() {
    let ScalingArgs {
        events,
        rounds,
        threads,
    } = ScalingArgs::from_env();
    // As `firehose import` does.
    firehose_allocator::keep_freed_memory();
    let dir = std::env::temp_dir().join(format!("firehose-bench-import-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let capture = write_capture(
        &dir,
        Config {
            seed: 5,
            ..Config::default()
        },
        events,
    );
    let size = std::fs::metadata(&capture).expect("capture").len();
    println!(
        "{events} events, {:.0} MB of JSON; {rounds} rounds; {} cores",
        size as f64 / 1e6,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!("threads  wall s  events/s   CPU s  events/CPU-s  peak RSS MB  RSS MB/thread");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let inputs = [Input::File(capture.clone())];
    // Rounds take the thread counts in turn (1, 2, 1, 2, …), so a change in the machine's speed
    // while the bench runs (a busy neighbour on a shared host) weighs on every count alike.
    let mut figures = vec![Rounds::default(); threads.len()];
    for round in 0..rounds {
        for (&n, rounds) in threads.iter().zip(&mut figures) {
            let out = dir.join(format!("out-{n}-{round}"));
            let options = ImportOptions {
                threads: n,
                ..ImportOptions::default()
            };
            let storage = std::sync::Arc::new(LocalStorage::new(&out));
            let summary = rounds
                .measure(|| runtime.block_on(import(&inputs, storage, &options, |_| {})))
                .expect("import");
            assert_eq!(summary.events, events);
            std::fs::remove_dir_all(&out).expect("clean up");
        }
    }
    let mut rates = Vec::new();
    for (&n, rounds) in threads.iter().zip(figures) {
        let (wall, cpu, rss) = rounds.medians();
        let rate = events as f64 / wall;
        rates.push(rate);
        println!(
            "{n:>7}  {wall:>6.2}  {rate:>8.0}  {cpu:>6.2}  {:>12.0}  {rss:>11.0}  {:>13.0}",
            events as f64 / cpu,
            rss / n as f64
        );
    }
    print_scaling(&threads, &rates);
    std::fs::remove_dir_all(&dir).expect("clean up");
}
