//! Outages: Redis restarted (killed, shut down cleanly, or its host crashing) and the object
//! store down, while `mock-jetstream` → `ingest` → Redis → `write` → S3 runs. Each test compares
//! the dataset with the events the mock sent and prints its figures (`RELIABILITY <scenario>:
//! ...`, see docs/RELIABILITY.md).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::{
    Deployment, Rng, Tally, deduplicated, expected_from, figure, free_port, last_time, mock_from,
    now_us, wait_until,
};

/// How Redis goes away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RedisFailure {
    /// SIGKILL of the server process: what it wrote to its append-only file is in the kernel's
    /// page cache, fsynced or not, and survives.
    Kill,
    /// SIGTERM: Redis writes and fsyncs its append-only file and exits.
    Clean,
    /// The host of Redis crashes (power loss, kernel panic): what was written but not fsynced
    /// is gone. Simulated by SIGKILL, then cutting the append-only file back to its length one
    /// fsync interval (1 s, `appendfsync everysec`) before the crash.
    HostCrash,
}

/// What was measured.
struct RedisOutcome {
    tally: Tally,
    /// When Redis went away, Unix µs (the mock's events carry the wall-clock time they were
    /// published at).
    failed_at_us: i64,
    /// The first event's time.
    start_us: i64,
    /// Bytes cut off the append-only file (host crash).
    aof_cut: u64,
}

const REDIS_EVENTS: u64 = 40_000;
const REDIS_RATE: f64 = 4000.0;

/// What else goes away with Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Others {
    /// Ingest and the writer keep running (and retry until Redis is back).
    KeepRunning,
    /// Ingest is killed with Redis and started again after it: it resumes from the checkpoint
    /// minus the rewind.
    RestartIngest,
    /// The whole machine: ingest and the writer are killed with Redis and started again.
    RestartAll,
    /// Ingest keeps running; the writer only starts once Redis is back, so everything Redis
    /// lost was still unread (the worst case: a writer behind, e.g. while S3 is slow).
    WriterBehind,
}

/// Runs the deployment with Redis under `fsync`, makes Redis fail at a random moment while
/// events flow, starts it again 2 s later, and compares the dataset with what was sent.
fn redis_outage(
    scenario: &str,
    fsync: &str,
    failure: RedisFailure,
    others: Others,
) -> Option<RedisOutcome> {
    let mut d = Deployment::start(&scenario.replace("::", "-"), &["--appendfsync", fsync])?;
    let mut rng = Rng::seeded(scenario);
    let start_us = now_us();
    let sent = expected_from(41, REDIS_EVENTS, Some(REDIS_RATE), start_us);
    let last = last_time(&sent);
    let (_mock, url) = mock_from(
        41,
        REDIS_EVENTS,
        start_us,
        &["--rate", &REDIS_RATE.to_string()],
    );
    let ingest_addr = format!("127.0.0.1:{}", free_port());
    let mut ingest = d.ingest(&url, &ingest_addr, start_us, &[]);
    let writer_addr = format!("127.0.0.1:{}", free_port());
    let mut writer = (others != Others::WriterBehind).then(|| d.writer("w1", &writer_addr, &[]));

    // The append-only file's length over time, to cut it back as a host crash would.
    let lengths: Arc<Mutex<Vec<(Instant, u64)>>> = Arc::default();
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (lengths, sampling) = (lengths.clone(), sampling.clone());
        let dir = d.redis.aof_dir();
        std::thread::spawn(move || {
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(len) = crate::harness::newest_incr_aof(&dir)
                    .and_then(|p| std::fs::metadata(p).ok())
                    .map(|m| m.len())
                {
                    lengths.lock().unwrap().push((Instant::now(), len));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };

    std::thread::sleep(rng.millis(3000, 6000));
    let failed_at_us = now_us();
    let failed_at = Instant::now();
    let mut aof_cut = 0;
    match failure {
        RedisFailure::Kill => d.redis.kill(),
        RedisFailure::Clean => d.redis.shutdown(),
        RedisFailure::HostCrash => d.redis.kill(),
    }
    if matches!(others, Others::RestartIngest | Others::RestartAll) {
        ingest.kill();
    }
    if others == Others::RestartAll {
        writer.as_mut().unwrap().kill();
    }
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    sampler.join().unwrap();
    if failure == RedisFailure::HostCrash {
        let fsynced = lengths
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|(at, _)| failed_at.duration_since(*at) >= Duration::from_secs(1))
            .map(|(_, len)| *len)
            .expect("the append-only file was sampled a second before the crash");
        let file = crate::harness::newest_incr_aof(&d.redis.aof_dir()).unwrap();
        let len = std::fs::metadata(&file).unwrap().len();
        aof_cut = len - fsynced.min(len);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .unwrap()
            .set_len(len - aof_cut)
            .unwrap();
    }
    std::thread::sleep(Duration::from_secs(2));
    d.redis.restart();
    let back_at = failed_at.elapsed();
    if matches!(others, Others::RestartIngest | Others::RestartAll) {
        ingest = d.ingest(&url, &ingest_addr, start_us, &[]);
    }
    if matches!(others, Others::RestartAll | Others::WriterBehind) {
        writer = Some(d.writer("w1", &writer_addr, &[]));
    }
    figure(
        scenario,
        format_args!(
            "Redis ({fsync}) {failure:?} at event time {:.2} s, back {:.2} s later{}, {others:?}",
            (failed_at_us - start_us) as f64 / 1e6,
            back_at.as_secs_f64(),
            if aof_cut > 0 {
                format!(", {aof_cut} bytes cut off its append-only file")
            } else {
                String::new()
            },
        ),
    );
    wait_until(
        "the checkpoint passes the last event and nothing waits in Redis",
        Duration::from_secs(120),
        || d.checkpoint() > last && d.unacked() == 0,
    );
    assert_eq!(ingest.terminate(), 0);
    assert_eq!(writer.unwrap().terminate(), 0);
    let (stored, dead) = d.dataset();
    assert_eq!(dead, 0);
    let tally = Tally::of(&sent, &stored);
    let (unique, _) = deduplicated(stored);
    let after = Tally::of(&sent, &unique);
    assert_eq!(after.duplicates, 0);
    let lost_span = match (tally.lost.first(), tally.lost.last()) {
        (Some(first), Some(last)) => format!(
            " (event times {:+.3} s to {:+.3} s from the failure)",
            (first - failed_at_us) as f64 / 1e6,
            (last - failed_at_us) as f64 / 1e6
        ),
        _ => String::new(),
    };
    figure(
        scenario,
        format_args!(
            "{} events sent at {REDIS_RATE}/s; {} rows: {} lost{lost_span}, {} duplicates before \
             de-duplication, 0 after, {} unexpected",
            tally.sent,
            tally.rows,
            tally.lost.len(),
            tally.duplicates,
            tally.unexpected
        ),
    );
    assert_eq!(tally.unexpected, 0);
    if others == Others::KeepRunning {
        // No replay: the writer does not take twice the entries Redis gives back after a
        // failed read; only a retried append can repeat (one batch).
        assert!(
            tally.duplicates <= INGEST_BATCH,
            "{} duplicates without any replay",
            tally.duplicates
        );
    }
    Some(RedisOutcome {
        tally,
        failed_at_us,
        start_us,
        aof_cut,
    })
}

/// The most events one append of ingest holds: an append retried after the connection
/// dropped may have been applied once already, which duplicates them.
const INGEST_BATCH: usize = 500;

fn assert_nothing_lost(outcome: Option<RedisOutcome>) {
    if let Some(outcome) = outcome {
        let lost = &outcome.tally.lost;
        assert!(
            lost.is_empty(),
            "{} lost, e.g. {:?} (failure at {})",
            lost.len(),
            &lost[..lost.len().min(5)],
            outcome.failed_at_us
        );
    }
}

/// Redis killed with SIGKILL mid-run under `appendfsync always`, ingest and writer kept
/// running: nothing lost.
#[test]
fn redis_sigkill_with_appendfsync_always_loses_nothing() {
    assert_nothing_lost(redis_outage(
        "outage::redis_sigkill_always",
        "always",
        RedisFailure::Kill,
        Others::KeepRunning,
    ));
}

/// Redis killed with SIGKILL under `appendfsync everysec` (the shipped setting): the
/// append-only file was written before each reply, so the kernel has it; nothing lost.
#[test]
fn redis_sigkill_with_appendfsync_everysec_loses_nothing() {
    assert_nothing_lost(redis_outage(
        "outage::redis_sigkill_everysec",
        "everysec",
        RedisFailure::Kill,
        Others::KeepRunning,
    ));
}

/// The same with ingest killed too and started again after Redis: it resumes from the
/// checkpoint minus the rewind; nothing lost.
#[test]
fn redis_and_ingest_sigkill_with_appendfsync_everysec_lose_nothing() {
    assert_nothing_lost(redis_outage(
        "outage::redis_and_ingest_sigkill_everysec",
        "everysec",
        RedisFailure::Kill,
        Others::RestartIngest,
    ));
}

/// Redis shut down cleanly (SIGTERM) and started again, ingest and writer kept running:
/// nothing lost.
#[test]
fn redis_clean_restart_loses_nothing() {
    assert_nothing_lost(redis_outage(
        "outage::redis_clean_restart",
        "everysec",
        RedisFailure::Clean,
        Others::KeepRunning,
    ));
}

/// Redis shut down cleanly with ingest restarted after it: nothing lost.
#[test]
fn redis_clean_restart_with_ingest_restarted_loses_nothing() {
    assert_nothing_lost(redis_outage(
        "outage::redis_clean_restart_ingest_restarted",
        "everysec",
        RedisFailure::Clean,
        Others::RestartIngest,
    ));
}

/// Redis's host crashes under `appendfsync everysec` (the last second of its append-only file
/// lost) while ingest, on another host, keeps running, and the writer has not read the last
/// entries yet: the events Redis lost are lost, and they are at most the last fsync interval of
/// appends before the crash.
#[test]
fn redis_host_crash_with_appendfsync_everysec_loses_at_most_the_fsync_window() {
    let Some(outcome) = redis_outage(
        "outage::redis_host_crash_everysec",
        "everysec",
        RedisFailure::HostCrash,
        Others::WriterBehind,
    ) else {
        return;
    };
    let lost = &outcome.tally.lost;
    // What Redis appended in its last second: one run of consecutive events, published before
    // the crash, about a second's worth (plus the ingest's batching).
    if let (Some(&first), Some(&last)) = (lost.first(), lost.last()) {
        let sent = expected_from(41, REDIS_EVENTS, Some(REDIS_RATE), outcome.start_us);
        let between = sent
            .values()
            .flatten()
            .filter(|t| (first..=last).contains(*t))
            .count();
        assert_eq!(between, lost.len(), "the lost events are consecutive");
        assert!(
            last < outcome.failed_at_us,
            "lost events were published before the crash"
        );
    }
    assert!(
        lost.len() as f64 <= 1.5 * REDIS_RATE,
        "{} lost, more than the fsync interval's appends",
        lost.len()
    );
    assert!(outcome.aof_cut > 0, "the crash cut the append-only file");
}

/// The whole machine crashes (Redis with the last second of its append-only file lost, ingest
/// and writer killed) and starts again: ingest resumes from the checkpoint in Redis minus the
/// rewind, which is before every event Redis lost (the checkpoint only passes stored events),
/// so Jetstream's replay brings them back: nothing lost.
#[test]
fn host_crash_with_appendfsync_everysec_loses_nothing_once_ingest_restarts() {
    assert_nothing_lost(redis_outage(
        "outage::host_crash_everysec_all_restarted",
        "everysec",
        RedisFailure::HostCrash,
        Others::RestartAll,
    ));
}
