//! Outages: Redis restarted (killed, shut down cleanly, or its host crashing) and the object
//! store down, while `mock-jetstream` → `ingest` → Redis → `write` → S3 runs. Each test compares
//! the dataset with the events the mock sent and prints its figures (`RELIABILITY <scenario>:
//! ...`, see docs/RELIABILITY.md).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::{
    BUCKET, Deployment, PREFIX, Rng, Tally, dataset, expected_from, figure, free_port, http_get,
    key_duplicates, last_time, metrics, mock_from, now_us, total, wait_until,
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
    /// Redis loses all its data (SIGKILL, then its directory emptied: a volume that did not
    /// mount, a new server) and starts empty: no stream, no checkpoint.
    DataLost,
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
    /// Those bytes: the appends Redis lost.
    aof_cut_bytes: Vec<u8>,
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
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (lengths, sampling) = (lengths.clone(), sampling.clone());
        let dir = d.redis.aof_dir();
        std::thread::spawn(move || {
            while sampling.load(Ordering::Relaxed) {
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
    let mut aof_cut_bytes = Vec::new();
    match failure {
        RedisFailure::Kill => d.redis.kill(),
        RedisFailure::Clean => d.redis.shutdown(),
        RedisFailure::HostCrash | RedisFailure::DataLost => d.redis.kill(),
    }
    if matches!(others, Others::RestartIngest | Others::RestartAll) {
        ingest.kill();
    }
    if others == Others::RestartAll {
        writer.as_mut().unwrap().kill();
    }
    sampling.store(false, Ordering::Relaxed);
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
        aof_cut_bytes = std::fs::read(&file).unwrap()[(len - aof_cut) as usize..].to_vec();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .unwrap()
            .set_len(len - aof_cut)
            .unwrap();
    }
    if failure == RedisFailure::DataLost {
        let dir = d.redis.aof_dir();
        std::fs::remove_dir_all(&dir).unwrap();
        let _ = std::fs::remove_file(dir.with_file_name("dump.rdb"));
    }
    std::thread::sleep(Duration::from_secs(2));
    d.redis.restart();
    let back_at = failed_at.elapsed();
    if failure == RedisFailure::DataLost {
        // As deployed: no start cursor, the dataset given.
        ingest = d.ingest_with_dataset(&url, &ingest_addr);
    } else if matches!(others, Others::RestartIngest | Others::RestartAll) {
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
    let files = d.s3.parquet_files(BUCKET, PREFIX);
    let (by_key, _) = key_duplicates(&files);
    let (stored, dead) = dataset(files);
    assert_eq!(dead, 0);
    let tally = Tally::of(&sent, &stored);
    // Every duplicate is a second copy of an event sent (the event key and the time agree).
    assert_eq!(by_key, tally.duplicates);
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
            "{} events sent at {REDIS_RATE}/s; {} rows: {} lost{lost_span}, {} duplicates by \
             event key before de-duplication, {} unexpected",
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
        aof_cut_bytes,
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
    assert!(outcome.aof_cut > 0, "the crash cut the append-only file");
    // Nothing is lost but what Redis lost: every lost event is in the appends cut off its
    // file (found there by its `time_us`), whatever the length of the cut.
    let needle = b"\"time_us\":";
    let cut = &outcome.aof_cut_bytes;
    let in_cut: std::collections::HashSet<i64> = cut
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .filter_map(|(at, _)| {
            let digits: Vec<u8> = cut[at + needle.len()..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .copied()
                .collect();
            std::str::from_utf8(&digits).ok()?.parse().ok()
        })
        .collect();
    let in_cut = |t: i64| in_cut.contains(&t);
    let beyond: Vec<i64> = lost.iter().copied().filter(|&t| !in_cut(t)).collect();
    assert!(
        beyond.is_empty(),
        "{} of {} lost events were not in what Redis lost: {:?}",
        beyond.len(),
        lost.len(),
        &beyond[..beyond.len().min(5)]
    );
    figure(
        "outage::redis_host_crash_everysec",
        format_args!(
            "all {} lost events are among those in the {} bytes cut off the append-only file",
            lost.len(),
            outcome.aof_cut
        ),
    );
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

/// Redis loses all its data while the whole machine restarts: ingest, given the dataset as
/// deployed (and no start cursor), finds no checkpoint in Redis, resumes from the one the
/// writers keep beside the dataset, less the rewind, and Jetstream replays what Redis lost:
/// nothing lost, where it used to start live and leave a gap nobody saw.
#[test]
fn redis_losing_its_data_loses_nothing_once_ingest_resumes_from_the_dataset() {
    assert_nothing_lost(redis_outage(
        "outage::redis_data_lost",
        "everysec",
        RedisFailure::DataLost,
        Others::RestartAll,
    ));
}

/// One scrape of the processes under test.
struct Sample {
    /// Since the scraper started.
    at: Duration,
    /// The writer's metrics, and its `/health` status.
    writer: HashMap<String, f64>,
    writer_health: u16,
    /// The ingest's metrics.
    ingest: HashMap<String, f64>,
}

impl Sample {
    fn writer(&self, name: &str) -> f64 {
        total(&self.writer, name)
    }
}

/// Scrapes `/metrics` of the writer and the ingest, and the writer's `/health`, every second
/// until stopped (what Prometheus would see with a 1 s scrape interval).
struct Scraper {
    samples: Arc<Mutex<Vec<Sample>>>,
    running: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
    started: Instant,
}

impl Scraper {
    fn start(writer: &str, ingest: &str) -> Scraper {
        let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
        let running = Arc::new(AtomicBool::new(true));
        let started = Instant::now();
        let thread = {
            let (samples, running) = (samples.clone(), running.clone());
            let (writer, ingest) = (writer.to_owned(), ingest.to_owned());
            std::thread::spawn(move || {
                while running.load(Ordering::Relaxed) {
                    let next = Instant::now() + Duration::from_secs(1);
                    let sample = Sample {
                        at: started.elapsed(),
                        writer: metrics(&writer),
                        writer_health: http_get(&writer, "/health").map_or(0, |(s, _)| s),
                        ingest: metrics(&ingest),
                    };
                    samples.lock().unwrap().push(sample);
                    std::thread::sleep(next.saturating_duration_since(Instant::now()));
                }
            })
        };
        Scraper {
            samples,
            running,
            thread,
            started,
        }
    }

    /// Now, on the scraper's clock.
    fn now(&self) -> Duration {
        self.started.elapsed()
    }

    fn stop(self) -> Vec<Sample> {
        self.running.store(false, Ordering::Relaxed);
        self.thread.join().unwrap();
        Arc::try_unwrap(self.samples)
            .ok()
            .unwrap()
            .into_inner()
            .unwrap()
    }
}

/// An alerting rule of deploy/prometheus/alerts.yml, evaluated on scraped samples.
struct Rule {
    alert: &'static str,
    /// The rule's `expr`, as written in alerts.yml (whitespace aside): the test fails when the
    /// file changes, so the evaluation below is kept in step.
    expr: &'static str,
    /// The rule's `for`.
    hold: Duration,
    /// The expression at sample `i`.
    condition: fn(&[Sample], usize) -> bool,
    /// For a condition `increase(counter[window]) > 0`: the counter and the window. The
    /// condition stays true for the window after the counter's last change, so whether it
    /// fires after the samples end can be told.
    window: Option<(&'static str, Duration)>,
}

/// `increase(name[window])` of the writer's counter at sample `i`: the value minus the value
/// at the oldest sample inside the window (no extrapolation).
fn increase(samples: &[Sample], i: usize, name: &str, window: Duration) -> f64 {
    let from = samples[i].at.saturating_sub(window);
    let first = samples[..=i]
        .iter()
        .find(|s| s.at >= from)
        .unwrap_or(&samples[i]);
    samples[i].writer(name) - first.writer(name)
}

const MINUTE: Duration = Duration::from_secs(60);

fn alert_rules() -> Vec<Rule> {
    vec![
        Rule {
            alert: "FirehoseWriterFailing",
            expr: "sum(increase(firehose_writer_failures_total[5m])) > 0",
            hold: 10 * MINUTE,
            condition: |s, i| increase(s, i, "firehose_writer_failures_total", 5 * MINUTE) > 0.0,
            window: Some(("firehose_writer_failures_total", 5 * MINUTE)),
        },
        Rule {
            alert: "FirehoseWriterStalled",
            expr: "sum(increase(firehose_writer_batches_total[10m])) == 0 and on() \
                   max(firehose_buffer_events) > 0",
            hold: 5 * MINUTE,
            condition: |s, i| {
                // Prometheus needs two samples in the window for an increase at all.
                s[i].at >= 10 * MINUTE
                    && increase(s, i, "firehose_writer_batches_total", 10 * MINUTE) == 0.0
                    && s[i].writer("firehose_buffer_events") > 0.0
            },
            window: None,
        },
        Rule {
            alert: "FirehoseBufferOldestEventOld",
            expr: "max(firehose_buffer_oldest_event_age_seconds) > 300",
            hold: 2 * MINUTE,
            condition: |s, i| s[i].writer("firehose_buffer_oldest_event_age_seconds") > 300.0,
            window: None,
        },
        Rule {
            alert: "FirehoseCheckpointOld",
            expr: "max(firehose_checkpoint_age_seconds) > 900",
            hold: 5 * MINUTE,
            condition: |s, i| s[i].writer("firehose_checkpoint_age_seconds") > 900.0,
            window: None,
        },
        Rule {
            alert: "FirehoseJetstreamLagging",
            expr: "max(firehose_jetstream_lag_seconds) > 120",
            hold: 5 * MINUTE,
            condition: |s, i| total(&s[i].ingest, "firehose_jetstream_lag_seconds") > 120.0,
            window: None,
        },
    ]
}

/// What an alert did over the samples.
#[derive(Debug, Default)]
struct AlertEpisode {
    /// When the condition first held, and when it last held.
    true_from: Option<Duration>,
    true_until: Option<Duration>,
    /// When it fired (the condition held for the rule's `for`), within the samples or, for
    /// a counter that stopped moving, afterwards.
    fires_at: Option<Duration>,
    /// Whether it was still true at the last sample.
    true_at_end: bool,
}

fn evaluate(rule: &Rule, samples: &[Sample]) -> AlertEpisode {
    let mut episode = AlertEpisode::default();
    let mut pending_since = None;
    for i in 0..samples.len() {
        let at = samples[i].at;
        if (rule.condition)(samples, i) {
            let since = *pending_since.get_or_insert(at);
            episode.true_from.get_or_insert(at);
            episode.true_until = Some(at);
            if episode.fires_at.is_none() && at - since >= rule.hold {
                episode.fires_at = Some(at);
            }
            episode.true_at_end = i + 1 == samples.len();
        } else {
            pending_since = None;
        }
    }
    if episode.fires_at.is_none()
        && episode.true_at_end
        && let (Some(since), Some((counter, window))) = (pending_since, rule.window)
    {
        // True until the window has passed the counter's last change (the tests check that
        // the counter stopped moving).
        let last_change = samples
            .windows(2)
            .rev()
            .find(|w| w[1].writer(counter) > w[0].writer(counter))
            .map_or(samples[samples.len() - 1].at, |w| w[1].at);
        if last_change + window >= since + rule.hold {
            episode.fires_at = Some(since + rule.hold);
        }
    }
    episode
}

/// Checks each rule's expression against deploy/prometheus/alerts.yml and prints what each
/// alert did.
fn report_alerts(scenario: &str, samples: &[Sample]) -> HashMap<&'static str, AlertEpisode> {
    let file = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/prometheus/alerts.yml"
    ))
    .unwrap();
    let squash = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let file = squash(&file);
    let mut episodes = HashMap::new();
    for rule in alert_rules() {
        let hold = format!("{}m", rule.hold.as_secs() / 60);
        let block = file
            .split("- alert: ")
            .find(|b| b.starts_with(&format!("{} ", rule.alert)))
            .unwrap_or_else(|| panic!("{} is in alerts.yml", rule.alert));
        assert!(
            block.contains(&squash(rule.expr)) && block.contains(&format!("for: {hold}")),
            "alerts.yml changed {}: update the evaluation here\n{block}",
            rule.alert
        );
        let episode = evaluate(&rule, samples);
        let secs =
            |d: Option<Duration>| d.map_or("-".to_owned(), |d| format!("{:.0} s", d.as_secs_f64()));
        figure(
            scenario,
            format_args!(
                "alert {} ({}, for {hold}): condition true from {} to {}{}, {}",
                rule.alert,
                rule.expr,
                secs(episode.true_from),
                secs(episode.true_until),
                if episode.true_at_end {
                    " (still true at the end)"
                } else {
                    ""
                },
                match episode.fires_at {
                    Some(at) => format!("fires at {:.0} s", at.as_secs_f64()),
                    None => "does not fire".to_owned(),
                }
            ),
        );
        episodes.insert(rule.alert, episode);
    }
    episodes
}

/// The largest value of a writer gauge or counter between two moments.
fn peak(samples: &[Sample], name: &str, from: Duration, to: Duration) -> f64 {
    samples
        .iter()
        .filter(|s| s.at >= from && s.at <= to)
        .map(|s| s.writer(name))
        .fold(0.0, f64::max)
}

/// The object store down for 60 s while 2,000 events/s flow through ingest → Redis → write:
/// nothing lost or doubled, the backlog waits in Redis and drains once S3 is back, and the
/// writer's metrics show the episode (store failures, a growing buffer, the age of the oldest
/// waiting event and of the checkpoint, `/health` 503), as does the condition of the
/// FirehoseWriterFailing alert, which, being held for 10 minutes, does not fire for it.
#[test]
fn s3_down_for_60_s_loses_nothing_and_shows_in_metrics_and_alerts() {
    const SCENARIO: &str = "outage::s3_down_60s";
    const RATE: f64 = 2000.0;
    const EVENTS: u64 = 2000 * 100;
    const OUTAGE: Duration = Duration::from_secs(60);
    let Some(mut d) = Deployment::start("s3-down-60s", &[]) else {
        return;
    };
    let mut rng = Rng::seeded(SCENARIO);
    let start_us = now_us();
    let sent = expected_from(42, EVENTS, Some(RATE), start_us);
    let last = last_time(&sent);
    let (_mock, url) = mock_from(42, EVENTS, start_us, &["--rate", &RATE.to_string()]);
    let ingest_addr = format!("127.0.0.1:{}", free_port());
    let ingest = d.ingest(&url, &ingest_addr, start_us, &[]);
    let writer_addr = format!("127.0.0.1:{}", free_port());
    let writer = d.writer("w1", &writer_addr, &[]);
    let scraper = Scraper::start(&writer_addr, &ingest_addr);

    std::thread::sleep(rng.millis(12_000, 18_000));
    d.s3.stop();
    let down = scraper.now();
    std::thread::sleep(OUTAGE);
    d.s3.resume();
    let up = scraper.now();
    wait_until(
        "the checkpoint passes the last event and nothing waits in Redis",
        Duration::from_secs(180),
        || d.checkpoint() > last && d.unacked() == 0,
    );
    let done = scraper.now();
    std::thread::sleep(Duration::from_secs(3));
    let samples = scraper.stop();
    assert_eq!(ingest.terminate(), 0);
    assert_eq!(writer.terminate(), 0);

    let (stored, dead) = d.dataset();
    let tally = Tally::of(&sent, &stored);
    let before = peak(&samples, "firehose_buffer_events", Duration::ZERO, down);
    let backlog = peak(
        &samples,
        "firehose_buffer_events",
        down,
        up + Duration::from_secs(5),
    );
    let oldest = peak(
        &samples,
        "firehose_buffer_oldest_event_age_seconds",
        down,
        up + Duration::from_secs(5),
    );
    let checkpoint_age = peak(
        &samples,
        "firehose_checkpoint_age_seconds",
        down,
        up + Duration::from_secs(5),
    );
    let failures = samples
        .last()
        .unwrap()
        .writer("firehose_writer_failures_total");
    let unhealthy: Vec<Duration> = samples
        .iter()
        .filter(|s| s.writer_health == 503)
        .map(|s| s.at)
        .collect();
    // Drained: the oldest waiting event is as young again as before the outage.
    let young = peak(
        &samples,
        "firehose_buffer_oldest_event_age_seconds",
        Duration::ZERO,
        down,
    ) + 1.0;
    let drained = samples
        .iter()
        .find(|s| s.at > up && s.writer("firehose_buffer_oldest_event_age_seconds") <= young)
        .map(|s| s.at - up);
    figure(
        SCENARIO,
        format_args!(
            "S3 down from {:.0} s to {:.0} s at {RATE} events/s: {failures} store failures \
             (retried), /health 503 in {} scrapes ({}), buffer {before} events before and {backlog} \
             at most during the outage, oldest waiting event {oldest:.0} s old at most, checkpoint \
             {checkpoint_age:.0} s old at most; backlog drained {} after S3 came back, every event \
             stored at {:.0} s",
            down.as_secs_f64(),
            up.as_secs_f64(),
            unhealthy.len(),
            match (unhealthy.first(), unhealthy.last()) {
                (Some(a), Some(b)) =>
                    format!("{:.0} s to {:.0} s", a.as_secs_f64(), b.as_secs_f64()),
                _ => "never".into(),
            },
            drained.map_or("never".into(), |d| format!("{:.0} s", d.as_secs_f64())),
            done.as_secs_f64()
        ),
    );
    figure(
        SCENARIO,
        format_args!(
            "{} events sent; {} rows: {} lost, {} duplicates, {} unexpected, {dead} dead letters",
            tally.sent,
            tally.rows,
            tally.lost.len(),
            tally.duplicates,
            tally.unexpected
        ),
    );
    let alerts = report_alerts(SCENARIO, &samples);

    assert!(
        tally.lost.is_empty(),
        "lost: {:?}",
        &tally.lost[..tally.lost.len().min(10)]
    );
    assert_eq!(
        tally.duplicates, 0,
        "a retried upload replaces its own object"
    );
    assert_eq!(tally.unexpected, 0);
    assert!(failures >= 1.0, "the failed stores were counted");
    assert!(
        backlog > before + RATE * 30.0,
        "the backlog grew in Redis: {before} → {backlog}"
    );
    assert!(
        oldest >= 45.0,
        "the oldest waiting event aged with the outage: {oldest}"
    );
    assert!(
        checkpoint_age >= 45.0,
        "the checkpoint stood still: {checkpoint_age}"
    );
    assert!(drained.is_some(), "the backlog drained");
    let failing = &alerts["FirehoseWriterFailing"];
    assert!(
        failing
            .true_from
            .is_some_and(|t| t > down && t < up + Duration::from_secs(5)),
        "FirehoseWriterFailing's condition held during the outage: {failing:?}"
    );
    assert!(failing.fires_at.is_none(), "a 60 s outage does not page");
    // The counter stopped moving once S3 was back.
    let after_up = samples.iter().find(|s| s.at > up + Duration::from_secs(45));
    assert!(after_up.is_none_or(|s| s.writer("firehose_writer_failures_total") == failures));
}
