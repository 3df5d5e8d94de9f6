//! Crashes: processes of the pipeline killed with SIGKILL at random moments, and a Jetstream
//! that drops, stalls, repeats and reorders. Each test compares the dataset with the events the
//! mock sent and prints its figures (`RELIABILITY <scenario>: ...`, see docs/RELIABILITY.md).
//!
//! The kill moments come from a seeded generator whose seed is printed:
//! `FIREHOSE_RELIABILITY_SEED=<seed>` picks the same moments again.

use std::time::{Duration, Instant};

use crate::harness::{
    BUCKET, Deployment, PREFIX, Proc, Rng, START_US, Tally, dataset, deduplicated, expected,
    figure, free_port, key_duplicates, last_time, local_dataset, local_files, metrics, mock,
    mock_fault_count, mock_logged, secs_after, start, temp_dir, total, unmarked_files, wait_until,
};

/// `mock-jetstream` → `ingest` → Redis → `write` → S3 with a million events, the writer killed
/// with SIGKILL at random moments (at least 20 times while events were still on their way) and
/// started again each time: every event is in the dataset exactly once, without any
/// de-duplication (a batch rewritten after a crash replaces its own files).
#[test]
fn writer_sigkill_at_random_moments_keeps_every_event_exactly_once() {
    const SCENARIO: &str = "crash::writer_sigkill";
    const EVENTS: u64 = 1_000_000;
    const KILLS: usize = 24;
    let Some(d) = Deployment::start("writer-kills", &[]) else {
        return;
    };
    let mut rng = Rng::seeded(SCENARIO);
    let sent = expected(31, EVENTS, None);
    let last = last_time(&sent);
    let started = Instant::now();
    // As fast as ingest reads: Redis fills to its capacity and ingest waits on the writer.
    let (_mock, url) = mock(31, EVENTS, &[]);
    let ingest_addr = format!("127.0.0.1:{}", free_port());
    let ingest = d.ingest(&url, &ingest_addr, START_US, &[]);
    let writer_addr = format!("127.0.0.1:{}", free_port());
    let mut writer = d.writer("w1", &writer_addr, &[]);
    let mut mid_run = 0;
    // Batches a restarted writer found journaled and unfinished: kills that landed between
    // recording a batch and acknowledging it.
    let recovered = |addr: &str| total(&metrics(addr), "firehose_writer_batches_recovered_total");
    let mut recoveries = 0.0;
    for kill in 1..=KILLS {
        std::thread::sleep(rng.millis(300, 2500));
        let (unacked, checkpoint) = (d.unacked(), d.checkpoint());
        recoveries += recovered(&writer_addr);
        writer.kill();
        if checkpoint <= last {
            mid_run += 1;
        }
        figure(
            SCENARIO,
            format_args!(
                "kill {kill} at {:.2} s: {unacked} events unacknowledged in Redis, checkpoint at \
                 event time {:.2} s",
                started.elapsed().as_secs_f64(),
                secs_after(checkpoint.max(START_US), START_US)
            ),
        );
        std::thread::sleep(rng.millis(0, 500));
        writer = d.writer("w1", &writer_addr, &[]);
    }
    let kills_done = started.elapsed();
    wait_until(
        "the checkpoint passes the last event",
        Duration::from_secs(300),
        || d.checkpoint() > last,
    );
    let finished = started.elapsed();
    let received = total(&metrics(&ingest_addr), "firehose_events_received_total");
    recoveries += recovered(&writer_addr);
    assert_eq!(writer.terminate(), 0);
    assert_eq!(ingest.terminate(), 0);
    let (stored, dead) = d.dataset();
    let tally = Tally::of(&sent, &stored);
    figure(
        SCENARIO,
        format_args!(
            "{} events sent, {received} received by ingest, {KILLS} writer kills ({mid_run} before \
             the checkpoint passed the last event, the last at {:.1} s), all stored at {:.1} s; \
             {} rows: {} lost, {} duplicates before de-duplication, {} unexpected, {dead} dead \
             letters",
            tally.sent,
            kills_done.as_secs_f64(),
            finished.as_secs_f64(),
            tally.rows,
            tally.lost.len(),
            tally.duplicates,
            tally.unexpected
        ),
    );
    figure(
        SCENARIO,
        format_args!(
            "{recoveries} journaled batches found unfinished and recovered by the restarted writers"
        ),
    );
    assert!(
        mid_run >= 20,
        "only {mid_run} kills landed before every event was stored"
    );
    assert!(
        recoveries > 0.0,
        "no kill landed between recording a batch and acknowledging it"
    );
    assert!(
        tally.lost.is_empty(),
        "lost: {:?}",
        &tally.lost[..tally.lost.len().min(10)]
    );
    assert_eq!(
        tally.duplicates, 0,
        "no event twice, even before de-duplication"
    );
    assert_eq!(tally.unexpected, 0);
    assert_eq!(dead, 0);
}

/// `mock-jetstream` → `run` (in-memory buffer) → local Parquet with a million events, `run`
/// killed with SIGKILL at random moments (at least 20 times before the last event was stored)
/// and started again each time: it resumes from its checkpoint minus the rewind, Jetstream
/// replays, the replays of what is already stored are dropped before the buffer, and the
/// dataset holds every event exactly once, before any de-duplication.
#[test]
fn run_sigkill_at_random_moments_keeps_every_event_exactly_once() {
    const SCENARIO: &str = "crash::run_sigkill";
    const EVENTS: u64 = 1_000_000;
    const KILLS: usize = 24;
    let dir = temp_dir("run-kills");
    let mut rng = Rng::seeded(SCENARIO);
    let sent = expected(32, EVENTS, None);
    let last = last_time(&sent);
    let started = Instant::now();
    let (_mock, url) = mock(32, EVENTS, &[]);
    let out = dir.join("data");
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let cursor = START_US.to_string();
    let args = [
        "run",
        "--jetstream-url",
        &url,
        "--out",
        out.to_str().unwrap(),
        "--metrics-addr",
        &metrics_addr,
        "--start-cursor",
        &cursor,
        "--max-open-bytes",
        "4MiB",
        "--max-file-age",
        "2s",
    ];
    let checkpoint = || -> i64 {
        std::fs::read(out.join("_firehose/checkpoint.json"))
            .ok()
            .and_then(|data| serde_json::from_slice::<serde_json::Value>(&data).ok())
            .and_then(|v| v["time_us"].as_i64())
            .unwrap_or(0)
    };
    let mut run: Proc = start("run", &dir, &args, &[]);
    let mut mid_run = 0;
    for kill in 1..=KILLS {
        std::thread::sleep(rng.millis(300, 2500));
        let at = checkpoint();
        run.kill();
        if at <= last {
            mid_run += 1;
        }
        figure(
            SCENARIO,
            format_args!(
                "kill {kill} at {:.2} s: checkpoint at event time {:.2} s",
                started.elapsed().as_secs_f64(),
                secs_after(at.max(START_US), START_US)
            ),
        );
        std::thread::sleep(rng.millis(0, 500));
        run = start("run", &dir, &args, &[]);
    }
    let kills_done = started.elapsed();
    wait_until(
        "the checkpoint passes the last event",
        Duration::from_secs(300),
        || checkpoint() > last,
    );
    let finished = started.elapsed();
    assert_eq!(run.terminate(), 0);
    let (stored, dead) = local_dataset(&out);
    let tally = Tally::of(&sent, &stored);
    let files = local_files(&out);
    let (by_key, _) = key_duplicates(&files);
    let unmarked = unmarked_files(&files);
    figure(
        SCENARIO,
        format_args!(
            "{} events sent, {KILLS} kills of run ({mid_run} before the checkpoint passed the \
             last event, the last at {:.1} s), all stored at {:.1} s; {} rows: {} lost, {} \
             duplicates before de-duplication ({:.2}% of the events; {by_key} by event key), \
             {} unexpected, {dead} dead letters; {unmarked} of {} files not marked \
             duplicate-free",
            tally.sent,
            kills_done.as_secs_f64(),
            finished.as_secs_f64(),
            tally.rows,
            tally.lost.len(),
            tally.duplicates,
            100.0 * tally.duplicates as f64 / tally.sent as f64,
            tally.unexpected,
            files.len()
        ),
    );
    assert!(
        mid_run >= 20,
        "only {mid_run} kills landed before every event was stored"
    );
    assert!(
        tally.lost.is_empty(),
        "lost: {:?}",
        &tally.lost[..tally.lost.len().min(10)]
    );
    assert_eq!(
        (tally.duplicates, by_key),
        (0, 0),
        "no event twice, even before de-duplication"
    );
    assert_eq!(unmarked, 0, "every file of run is marked duplicate-free");
    assert_eq!(tally.unexpected, 0);
    assert_eq!(dead, 0);
}

/// A Jetstream that drops the connection every 2 s, stalls for 4 s, sends broken frames,
/// duplicates and swapped neighbours, read by `ingest` (killed with SIGKILL at random moments
/// and started again) → Redis → two writers → S3: no gap; the duplicates (replays of a
/// restarted ingest without the dataset: what was stored past its resume point) are counted by
/// event key; the broken frames are in the dead-letter table.
#[test]
fn jetstream_faults_and_ingest_sigkills_leave_no_gap() {
    jetstream_faults("crash::jetstream_faults", false);
}

/// The same with `ingest` given the dataset (`--out`), as both deployments run it: its replay
/// filter is seeded from the files stored past its resume point and from what Redis holds, so
/// nothing is stored twice, even before de-duplication, and every event file is marked
/// duplicate-free.
#[test]
fn jetstream_faults_and_ingest_sigkills_as_deployed_store_nothing_twice() {
    jetstream_faults("crash::jetstream_faults_as_deployed", true);
}

fn jetstream_faults(scenario: &'static str, with_dataset: bool) {
    const EVENTS: u64 = 60_000;
    const RATE: f64 = 4000.0;
    const KILLS: usize = 4;
    let Some(d) = Deployment::start(
        if with_dataset {
            "jetstream-faults-out"
        } else {
            "jetstream-faults"
        },
        &[],
    ) else {
        return;
    };
    let mut rng = Rng::seeded(scenario);
    let sent = expected(33, EVENTS, Some(RATE));
    let started = Instant::now();
    let mock_log = d.dir.join("mock.log");
    let (mock, url) = mock_logged(
        33,
        EVENTS,
        &[
            "--rate",
            &RATE.to_string(),
            "--drop-every",
            "2",
            "--stall-after",
            "3",
            "--stall-for",
            "4",
            "--malformed-every",
            "2500",
            "--duplicate-every",
            "700",
            "--reorder-every",
            "900",
        ],
        &mock_log,
    );
    let ingest_addr = format!("127.0.0.1:{}", free_port());
    let liveness = ["--liveness-timeout", "2s"];
    let start_ingest = || {
        if with_dataset {
            d.ingest_with_dataset_from(&url, &ingest_addr, START_US, &liveness)
        } else {
            d.ingest(&url, &ingest_addr, START_US, &liveness)
        }
    };
    let mut ingest = start_ingest();
    let writers: Vec<Proc> = ["w1", "w2"]
        .into_iter()
        .map(|w| d.writer(w, &format!("127.0.0.1:{}", free_port()), &[]))
        .collect();
    for kill in 1..=KILLS {
        std::thread::sleep(rng.millis(1000, 3500));
        ingest.kill();
        figure(
            scenario,
            format_args!(
                "ingest kill {kill} at {:.2} s (checkpoint at event time {:.2} s)",
                started.elapsed().as_secs_f64(),
                secs_after(d.checkpoint().max(START_US), START_US)
            ),
        );
        ingest = start_ingest();
    }
    // The connection keeps dropping and each reconnection replays the rewind (the last 5 s),
    // so the checkpoint stays behind the last event: wait for the dataset instead.
    wait_until(
        "every event sent is in the dataset",
        Duration::from_secs(180),
        || {
            std::thread::sleep(Duration::from_secs(2));
            deduplicated(d.dataset().0).0 == sent
        },
    );
    let finished = started.elapsed();
    let reconnects = total(
        &metrics(&ingest_addr),
        "firehose_jetstream_reconnects_total",
    );
    assert_eq!(ingest.terminate(), 0);
    wait_until(
        "the writers write what ingest appended last",
        Duration::from_secs(60),
        || d.unacked() == 0,
    );
    for writer in writers {
        assert_eq!(writer.terminate(), 0);
    }
    assert_eq!(mock.terminate(), 0);
    let broken = mock_fault_count(&mock_log, "malformed");
    let drops = mock_fault_count(&mock_log, "drops");
    let files = d.s3.parquet_files(BUCKET, PREFIX);
    let (by_key, _) = key_duplicates(&files);
    let files_for_marks = files.clone();
    let (stored, dead) = dataset(files);
    let tally = Tally::of(&sent, &stored);
    figure(
        scenario,
        format_args!(
            "{} events sent at {RATE}/s with faults, {KILLS} ingest kills, {reconnects} reconnects \
             of the last ingest, all stored at {:.1} s; {} rows: {} lost, {by_key} duplicates by \
             event key before de-duplication, {} unexpected, {dead} dead letters of the {broken} \
             broken frames the mock sent ({drops} connections it dropped)",
            tally.sent,
            finished.as_secs_f64(),
            tally.rows,
            tally.lost.len(),
            tally.unexpected
        ),
    );
    assert!(
        tally.lost.is_empty(),
        "lost: {:?}",
        &tally.lost[..tally.lost.len().min(10)]
    );
    assert_eq!(tally.unexpected, 0);
    // Every duplicate is a second copy of an event sent (the event key and the time agree).
    assert_eq!(by_key, tally.duplicates);
    if with_dataset {
        assert_eq!(
            by_key, 0,
            "nothing stored twice, even before de-duplication"
        );
        let unmarked = unmarked_files(&files_for_marks);
        assert_eq!(unmarked, 0, "every event file marked duplicate-free");
    }
    // Every broken frame is dead-lettered once, but a broken frame is not an event: no replay
    // brings it back. Those a killed ingest had received and not yet appended (its open batch
    // and what was in flight) are lost with it, and those in flight when the mock dropped the
    // connection: fewer than 2,500 frames each time, so at most one broken frame per kill and
    // per drop.
    assert!(
        dead as u64 <= broken && dead as u64 + KILLS as u64 + drops >= broken,
        "{dead} dead letters for {broken} broken frames, {KILLS} kills and {drops} drops"
    );
}
