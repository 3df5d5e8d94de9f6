//! Catch-up after an outage: Jetstream replays from the cursor as fast as it can, far faster
//! than the live firehose. See: issue 15 (with `mock-jetstream --rate 250000 --events 2000000`,
//! `run` received 1,000,512 events and then nothing: the mock starved its connections while it
//! generated, and silently skipped what had left its window).
//!
//! The mock behaves as Jetstream: it keeps every event for a cursor replay, and closes a live
//! connection that falls too far behind; the client resumes from its cursor.

use std::time::{Duration, Instant};

use crate::harness::{
    Tally, expected_from, figure, free_port, key_duplicates, local_dataset, local_files, metrics,
    mock_from, now_us, start, temp_dir, total, wait_until,
};

/// `run` against a mock publishing 2,000,000 events at 250,000 a second (a catch-up pace, 8 s
/// of them): every event is stored once, by the product's event key, before any
/// de-duplication.
#[test]
fn a_catch_up_of_two_million_events_at_250000_a_second_stores_every_one_once() {
    const SCENARIO: &str = "catch_up::two_million_at_250k";
    const EVENTS: u64 = 2_000_000;
    const RATE: f64 = 250_000.0;
    let dir = temp_dir("catch-up");
    let start_us = now_us();
    let sent = expected_from(61, EVENTS, Some(RATE), start_us);
    let (mock, url) = mock_from(61, EVENTS, start_us, &["--rate", "250000"]);
    let addr = format!("127.0.0.1:{}", free_port());
    let out = dir.join("ds");
    let started = Instant::now();
    let run = start(
        "run",
        &dir,
        &[
            "run",
            "--jetstream-url",
            &url,
            "--out",
            out.to_str().unwrap(),
            "--metrics-addr",
            &addr,
            "--start-cursor",
            &start_us.to_string(),
        ],
        &[],
    );
    // Received, less the replays of the rewind that the pipeline drops.
    wait_until("every event is received", Duration::from_secs(600), || {
        let m = metrics(&addr);
        total(&m, "firehose_events_received_total") - total(&m, "firehose_replays_dropped_total")
            >= EVENTS as f64
    });
    let caught_up = started.elapsed();
    let m = metrics(&addr);
    let reconnects = total(&m, "firehose_jetstream_reconnects_total");
    let replays = total(&m, "firehose_replays_dropped_total");
    assert_eq!(run.terminate(), 0);
    drop(mock);
    let (stored, dead) = local_dataset(&out);
    let tally = Tally::of(&sent, &stored);
    let files = local_files(&out);
    let (by_key, rows) = key_duplicates(&files);
    let unmarked = crate::harness::unmarked_files(&files);
    figure(
        SCENARIO,
        format_args!(
            "{} events published at {RATE} a second; all received after {:.1} s ({:.0} events/s \
             in a debug build) over {reconnects} reconnects, {replays} replayed events dropped; {rows} rows: {} lost, {by_key} \
             duplicates by event key before de-duplication, {} unexpected, {dead} dead letters",
            tally.sent,
            caught_up.as_secs_f64(),
            EVENTS as f64 / caught_up.as_secs_f64(),
            tally.lost.len(),
            tally.unexpected,
        ),
    );
    assert!(
        tally.lost.is_empty(),
        "lost {:?}",
        &tally.lost[..tally.lost.len().min(5)]
    );
    assert_eq!(
        (by_key, tally.duplicates, tally.unexpected, dead),
        (0, 0, 0, 0)
    );
    assert_eq!(unmarked, 0, "every file of run is marked duplicate-free");
    assert_eq!(rows as u64, EVENTS);
}
