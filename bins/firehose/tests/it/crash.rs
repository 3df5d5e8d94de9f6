//! Crashes: processes of the pipeline killed with SIGKILL at random moments, and a Jetstream
//! that drops, stalls, repeats and reorders. Each test compares the dataset with the events the
//! mock sent and prints its figures (`RELIABILITY <scenario>: ...`, see docs/RELIABILITY.md).
//!
//! The kill moments come from a seeded generator whose seed is printed:
//! `FIREHOSE_RELIABILITY_SEED=<seed>` picks the same moments again.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::harness::{
    BUCKET, Deployment, PREFIX, Proc, Rng, START_US, Tally, dataset, dead_letter_raws,
    deduplicated, expected, figure, free_port, key_duplicates, last_time, local_dataset,
    local_files, metrics, mock, mock_broken_frames, mock_fault_count, mock_logged, secs_after,
    start, temp_dir, total, unmarked_files, wait_until,
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
    let drops = mock_fault_count(&mock_log, "drops");
    let files = d.s3.parquet_files(BUCKET, PREFIX);
    let (by_key, _) = key_duplicates(&files);
    let broken = BrokenFramesKept::of(&dead_letter_raws(&files), &mock_log);
    let files_for_marks = files.clone();
    let (stored, _) = dataset(files);
    let tally = Tally::of(&sent, &stored);
    figure(
        scenario,
        format_args!(
            "{} events sent at {RATE}/s with faults, {KILLS} ingest kills, {reconnects} reconnects \
             of the last ingest, all stored at {:.1} s; {} rows: {} lost, {by_key} duplicates by \
             event key before de-duplication, {} unexpected; dead letters: {broken}",
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
    broken.assert_lost_only_to(KILLS as u64, drops);
}

/// What became of the broken frames the mock sent (each carries the tag
/// `mock-broken c<connection>b<k>`), told apart by their tags.
///
/// A broken frame is not an event: no replay brings it back. So the ones a killed ingest had
/// received and not yet appended (its open batch, its socket) are lost with it, and so are
/// those in flight when the mock dropped a connection; nothing else may lose one.
struct BrokenFramesKept {
    sent: u64,
    stored: u64,
    /// Broken frames stored more than once.
    stored_twice: u64,
    /// Connections whose stored broken frames are not its first ones (one missing before
    /// one stored), or more than it sent.
    gaps: Vec<u64>,
    /// Connections whose last broken frames are missing, and those of them the mock dropped.
    cut: u64,
    cut_by_drop: u64,
}

impl BrokenFramesKept {
    fn of(raws: &[Vec<u8>], mock_log: &Path) -> BrokenFramesKept {
        const TAG: &[u8] = b"mock-broken c";
        let sent = mock_broken_frames(mock_log);
        let mut stored: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for raw in raws {
            let text = String::from_utf8_lossy(raw);
            let at = raw
                .windows(TAG.len())
                .position(|w| w == TAG)
                .unwrap_or_else(|| panic!("a dead letter without a tag: {text:?}"));
            let rest = String::from_utf8_lossy(&raw[at + TAG.len()..]).into_owned();
            let number = |s: &str| -> (u64, usize) {
                let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
                let n = s[..end]
                    .parse()
                    .unwrap_or_else(|_| panic!("a bad tag in {text:?}"));
                (n, end)
            };
            let (connection, end) = number(&rest);
            let after = rest[end..].strip_prefix('b');
            let (k, _) = number(after.unwrap_or_else(|| panic!("a bad tag in {text:?}")));
            stored.entry(connection).or_default().push(k);
        }
        let mut kept = BrokenFramesKept {
            sent: sent.values().map(|(n, _)| n).sum(),
            stored: raws.len() as u64,
            stored_twice: 0,
            gaps: Vec::new(),
            cut: 0,
            cut_by_drop: 0,
        };
        for (connection, ks) in &mut stored {
            ks.sort_unstable();
            let before = ks.len();
            ks.dedup();
            kept.stored_twice += (before - ks.len()) as u64;
            if !sent.contains_key(connection) {
                kept.gaps.push(*connection);
            }
        }
        for (connection, &(count, dropped)) in &sent {
            let ks = stored
                .get(connection)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let n = ks.len() as u64;
            if !ks.iter().copied().eq(1..=n) || n > count {
                kept.gaps.push(*connection);
            } else if n < count {
                kept.cut += 1;
                kept.cut_by_drop += u64::from(dropped);
            }
        }
        kept
    }

    /// No broken frame stored twice, the missing ones of a connection are its last ones, and
    /// only a connection ended by a kill or a drop misses any: at most one per kill and one per
    /// drop.
    fn assert_lost_only_to(&self, kills: u64, drops: u64) {
        assert_eq!(self.stored_twice, 0, "broken frames stored twice: {self}");
        assert!(
            self.gaps.is_empty(),
            "broken frames missing before others stored, on connections {:?}: {self}",
            self.gaps
        );
        assert!(
            self.cut - self.cut_by_drop <= kills && self.cut_by_drop <= drops,
            "{self}; {kills} kills and {drops} drops"
        );
    }
}

impl std::fmt::Display for BrokenFramesKept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} of the {} broken frames the mock sent ({} stored twice); missing: the last ones \
             of {} connections ({} of them dropped by the mock, the others ended by a kill)",
            self.stored, self.sent, self.stored_twice, self.cut, self.cut_by_drop
        )
    }
}
