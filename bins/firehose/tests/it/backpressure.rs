//! Memory under backpressure: the object store down for ten minutes while Jetstream sends
//! 5,000 events/s. The writer cannot store, so the buffer fills to its configured capacity;
//! then the ingest stops reading Jetstream's socket, and Jetstream (the mock, with a replay
//! window as long as the run, as Jetstream keeps more than a day) holds the rest. Memory must
//! stay flat and bounded however long the outage lasts, and once the store is back every event
//! must arrive.
//!
//! `FIREHOSE_BACKPRESSURE_OUTAGE_SECS` sets the outage (default 600 s, the scenario's ten
//! minutes); the figures are printed as `RELIABILITY backpressure::…` lines
//! (see docs/RELIABILITY.md).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use firehose_core::Table;

use crate::harness::{
    BUCKET, Deployment, PREFIX, Proc, Tally, dataset, expected_from, figure, free_port,
    key_duplicates, last_time, metrics, mock_from, now_us, rss, start, total, wait_until,
};

/// Events per second from the mock.
const RATE: f64 = 5000.0;
/// Seconds of events before the outage.
const BEFORE: u64 = 15;
/// Seconds of events after the store comes back.
const AFTER: u64 = 30;
/// The bound on each `firehose` process's resident memory: the memory target of the pipeline
/// (README, "The pipeline under load").
const RSS_BOUND: f64 = 512.0 * MB;
/// How much more the process may hold at the end of the outage than in its first half: the
/// buffer is full by then, so anything beyond allocator noise would be memory growing with
/// the outage.
const GROWTH_ALLOWED: f64 = 48.0 * MB;
const MB: f64 = 1024.0 * 1024.0;

fn outage() -> Duration {
    let secs = std::env::var("FIREHOSE_BACKPRESSURE_OUTAGE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    Duration::from_secs(secs)
}

/// When a sample was taken (since the sampler started), and its values.
type Sample = (Duration, Vec<f64>);

/// One sample a second: named values (resident memory of each process, buffer fill).
struct Sampler {
    samples: Arc<Mutex<Vec<Sample>>>,
    running: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
    started: Instant,
}

impl Sampler {
    fn start(sample: impl Fn() -> Vec<f64> + Send + 'static) -> Sampler {
        let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
        let running = Arc::new(AtomicBool::new(true));
        let started = Instant::now();
        let thread = {
            let (samples, running) = (samples.clone(), running.clone());
            std::thread::spawn(move || {
                while running.load(Ordering::Relaxed) {
                    let next = Instant::now() + Duration::from_secs(1);
                    let values = sample();
                    samples.lock().unwrap().push((started.elapsed(), values));
                    std::thread::sleep(next.saturating_duration_since(Instant::now()));
                }
            })
        };
        Sampler {
            samples,
            running,
            thread,
            started,
        }
    }

    fn now(&self) -> Duration {
        self.started.elapsed()
    }

    fn stop(self) -> Samples {
        self.running.store(false, Ordering::Relaxed);
        self.thread.join().unwrap();
        let samples = std::mem::take(&mut *self.samples.lock().unwrap());
        Samples(samples)
    }
}

struct Samples(Vec<Sample>);

impl Samples {
    /// When value `i` first reached `at_least` between two moments.
    fn first_reaching(
        &self,
        i: usize,
        at_least: f64,
        from: Duration,
        to: Duration,
    ) -> Option<Duration> {
        self.0
            .iter()
            .find(|(at, v)| *at >= from && *at <= to && v[i] >= at_least)
            .map(|(at, _)| *at)
    }

    /// The largest value `i` between two moments.
    fn peak(&self, i: usize, from: Duration, to: Duration) -> f64 {
        self.0
            .iter()
            .filter(|(at, _)| *at >= from && *at <= to)
            .map(|(_, v)| v[i])
            .fold(0.0, f64::max)
    }
}

/// What the outage did to one measured value.
struct Memory {
    name: &'static str,
    /// Over the whole run.
    peak: f64,
    /// From the moment the buffer was full, in the first half of the rest of the outage, and
    /// in its last quarter.
    early: f64,
    late: f64,
}

impl Memory {
    /// Value `i` of the samples: its peak, and how it moved once the buffer was full (`full`)
    /// until the store came back (`up`).
    fn of(name: &'static str, samples: &Samples, i: usize, full: Duration, up: Duration) -> Memory {
        let backpressure = up.saturating_sub(full);
        Memory {
            name,
            peak: samples.peak(i, Duration::ZERO, Duration::MAX),
            early: samples.peak(i, full, full + backpressure / 2),
            late: samples.peak(i, up - backpressure / 4, up),
        }
    }

    fn describe(&self) -> String {
        format!(
            "{} peak {:.0} MB (with the buffer full: {:.0} MB at most in the first half of the \
             rest of the outage, {:.0} MB in its last quarter)",
            self.name,
            self.peak / MB,
            self.early / MB,
            self.late / MB
        )
    }

    fn assert_bounded(&self, bound: f64) {
        assert!(
            self.peak < bound,
            "{}: over the bound of {:.0} MB",
            self.describe(),
            bound / MB
        );
        assert!(
            self.late <= self.early + GROWTH_ALLOWED,
            "{}: memory grew with the outage",
            self.describe()
        );
    }
}

/// `mock-jetstream` → `ingest` → Redis (buffer capacity 128 MiB) → `write` → S3, the store
/// down for the outage: Redis holds the capacity and no more, the ingest and the writer stay
/// under the bound, and every event is stored once the store is back.
#[test]
fn s3_down_for_ten_minutes_in_the_server_deployment_keeps_memory_bounded_and_drops_nothing() {
    const SCENARIO: &str = "backpressure::server_deployment";
    const CAPACITY: u64 = 128 * 1024 * 1024;
    let outage = outage();
    let events = (RATE as u64) * (BEFORE + outage.as_secs() + AFTER);
    let Some(mut d) = Deployment::start("backpressure-deployment", &[]) else {
        return;
    };
    let start_us = now_us();
    let sent = expected_from(51, events, Some(RATE), start_us);
    let last = last_time(&sent);
    let window = events.to_string();
    let (_mock, url) = mock_from(
        51,
        events,
        start_us,
        &["--rate", &RATE.to_string(), "--window", &window],
    );
    let ingest_addr = format!("127.0.0.1:{}", free_port());
    let capacity = CAPACITY.to_string();
    let ingest = d.ingest_with_env(
        &url,
        &ingest_addr,
        start_us,
        &[],
        &[("FIREHOSE_BUFFER_SIZE", &capacity)],
    );
    let writer_addr = format!("127.0.0.1:{}", free_port());
    let writer = d.writer("w1", &writer_addr, &[]);
    let sampler = {
        let (ingest_pid, writer_pid) = (ingest.pid(), writer.pid());
        let redis_pid = d.redis.pid().unwrap();
        let redis_url = d.redis.url();
        let port = redis_url
            .trim_start_matches("redis://127.0.0.1:")
            .trim_end_matches("/0")
            .to_owned();
        let writer_addr = writer_addr.clone();
        Sampler::start(move || {
            let writer_metrics = metrics(&writer_addr);
            vec![
                rss(ingest_pid),
                rss(writer_pid),
                rss(redis_pid),
                redis_used_memory(&port),
                total(&writer_metrics, "firehose_buffer_bytes"),
            ]
        })
    };

    std::thread::sleep(Duration::from_secs(BEFORE));
    d.s3.stop();
    let down = sampler.now();
    std::thread::sleep(outage);
    d.s3.resume();
    let up = sampler.now();
    wait_until(
        "the checkpoint passes the last event and nothing waits in Redis",
        outage + Duration::from_secs(600),
        || d.checkpoint() > last && d.unacked() == 0,
    );
    let done = sampler.now();
    let samples = sampler.stop();
    assert_eq!(ingest.terminate(), 0);
    assert_eq!(writer.terminate(), 0);

    let files = d.s3.parquet_files(BUCKET, PREFIX);
    let buffered = samples.peak(4, down, up);
    let full = samples
        .first_reaching(4, 0.9 * CAPACITY as f64, down, up)
        .unwrap_or_else(|| panic!("the outage did not fill the buffer: {buffered} bytes at most"));
    let ingest_rss = Memory::of("ingest RSS", &samples, 0, full, up);
    let writer_rss = Memory::of("writer RSS", &samples, 1, full, up);
    let redis_rss = Memory::of("redis-server RSS", &samples, 2, full, up);
    let redis_used = Memory::of("Redis used_memory", &samples, 3, full, up);
    figure(
        SCENARIO,
        format_args!(
            "S3 down from {:.0} s for {:.0} s at {RATE} events/s, Redis buffer capacity {} MiB: \
             buffer full {:.0} s into the outage, {:.0} MB at most; {}; {}; {}; {}; every event \
             stored {:.0} s after S3 came back",
            down.as_secs_f64(),
            (up - down).as_secs_f64(),
            CAPACITY >> 20,
            (full - down).as_secs_f64(),
            buffered / MB,
            ingest_rss.describe(),
            writer_rss.describe(),
            redis_rss.describe(),
            redis_used.describe(),
            (done - up).as_secs_f64()
        ),
    );
    assert_every_event_once(SCENARIO, &sent, files);
    assert!(
        buffered <= CAPACITY as f64,
        "the buffer stayed within its capacity: {buffered} bytes"
    );
    ingest_rss.assert_bounded(RSS_BOUND);
    writer_rss.assert_bounded(RSS_BOUND);
    // Redis holds the capacity's payload plus its own overhead per entry, well under the
    // shipped `maxmemory 2gb`.
    redis_used.assert_bounded(4.0 * CAPACITY as f64);
}

/// `mock-jetstream` → `run` (in-memory buffer of 64 MiB) → S3, the store down for the outage:
/// `run` stays under the bound, and every event is stored once the store is back.
#[test]
fn s3_down_for_ten_minutes_under_run_keeps_memory_bounded_and_drops_nothing() {
    const SCENARIO: &str = "backpressure::run";
    const BUFFER: u64 = 64 * 1024 * 1024;
    let outage = outage();
    let events = (RATE as u64) * (BEFORE + outage.as_secs() + AFTER);
    let Some(mut d) = Deployment::start("backpressure-run", &[]) else {
        return;
    };
    let start_us = now_us();
    let sent = expected_from(52, events, Some(RATE), start_us);
    let last = last_time(&sent);
    let window = events.to_string();
    let (_mock, url) = mock_from(
        52,
        events,
        start_us,
        &["--rate", &RATE.to_string(), "--window", &window],
    );
    let addr = format!("127.0.0.1:{}", free_port());
    let out = format!("s3://{}/{}", crate::harness::BUCKET, crate::harness::PREFIX);
    let cursor = start_us.to_string();
    let buffer = BUFFER.to_string();
    let env = d.s3.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let run: Proc = start(
        "run",
        &d.dir,
        &[
            "run",
            "--jetstream-url",
            &url,
            "--out",
            &out,
            "--metrics-addr",
            &addr,
            "--start-cursor",
            &cursor,
            "--buffer-size",
            &buffer,
            "--max-open-bytes",
            "32MiB",
            "--max-file-age",
            "10s",
        ],
        &env,
    );
    let sampler = {
        let pid = run.pid();
        let addr = addr.clone();
        Sampler::start(move || {
            let m = metrics(&addr);
            vec![
                rss(pid),
                total(&m, "firehose_buffer_bytes"),
                total(&m, "firehose_checkpoint_time_us"),
            ]
        })
    };

    std::thread::sleep(Duration::from_secs(BEFORE));
    d.s3.stop();
    let down = sampler.now();
    std::thread::sleep(outage);
    d.s3.resume();
    let up = sampler.now();
    wait_until(
        "the checkpoint passes the last event",
        outage + Duration::from_secs(600),
        || total(&metrics(&addr), "firehose_checkpoint_time_us") > last as f64,
    );
    let done = sampler.now();
    let samples = sampler.stop();
    assert_eq!(run.terminate(), 0);

    let files = d.s3.parquet_files(BUCKET, PREFIX);
    let buffered = samples.peak(1, down, up);
    let full = samples
        .first_reaching(1, 0.9 * BUFFER as f64, down, up)
        .unwrap_or_else(|| panic!("the outage did not fill the buffer: {buffered} bytes at most"));
    let run_rss = Memory::of("run RSS", &samples, 0, full, up);
    figure(
        SCENARIO,
        format_args!(
            "S3 down from {:.0} s for {:.0} s at {RATE} events/s, in-memory buffer {} MiB: buffer \
             full {:.0} s into the outage, {:.0} MB at most; {}; every event stored {:.0} s after \
             S3 came back",
            down.as_secs_f64(),
            (up - down).as_secs_f64(),
            BUFFER >> 20,
            (full - down).as_secs_f64(),
            buffered / MB,
            run_rss.describe(),
            (done - up).as_secs_f64()
        ),
    );
    assert_every_event_once(SCENARIO, &sent, files);
    assert!(
        buffered <= BUFFER as f64,
        "the buffer stayed within its size: {buffered} bytes"
    );
    run_rss.assert_bounded(RSS_BOUND);
}

/// Prints how the dataset (its Parquet files) compares with what was sent, and asserts that it
/// holds every event once, by the event key, before any de-duplication, and no dead letter.
fn assert_every_event_once(
    scenario: &str,
    sent: &BTreeMap<Table, Vec<i64>>,
    files: Vec<(String, Vec<u8>)>,
) {
    let (by_key, _) = key_duplicates(&files);
    let (stored, dead) = dataset(files);
    let tally = Tally::of(sent, &stored);
    figure(
        scenario,
        format_args!(
            "{} events sent; {} rows: {} lost, {by_key} duplicates by event key before \
             de-duplication, {} unexpected, {dead} dead letters",
            tally.sent,
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
    assert_eq!((by_key, tally.duplicates), (0, 0));
    assert_eq!(tally.unexpected, 0);
    assert_eq!(dead, 0);
}

/// `used_memory` of the Redis on `port` (0 when it does not answer).
fn redis_used_memory(port: &str) -> f64 {
    let out = std::process::Command::new("redis-cli")
        .args(["-p", port, "INFO", "memory"])
        .output();
    out.ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .find_map(|l| l.strip_prefix("used_memory:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0.0)
}
