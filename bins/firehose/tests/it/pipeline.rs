//! The running pipeline end to end, through real processes and servers: `firehose
//! mock-jetstream` → `firehose run` → local Parquet (clean, with faults, killed and restarted),
//! and `mock-jetstream` → `ingest` → Redis → two `write` processes → S3 (s3s-fs).

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use arrow_array::{Array, Int64Array, StringArray};
use firehose_core::Table;
use firehose_synth::{Config, Generator};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// A child process, killed when dropped.
pub(crate) struct Proc(pub(crate) Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    /// Sends SIGTERM and waits for the exit code.
    pub(crate) fn terminate(mut self) -> i32 {
        Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
            .unwrap();
        let status = self.0.wait().unwrap();
        status.code().unwrap_or(-1)
    }
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("firehose-e2e-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The first event's time: a fixed hour, so the expected events can be generated again.
pub(crate) const START_US: i64 = 1_763_596_800_000_000;

/// Starts `firehose mock-jetstream` with `args` after the seed and count; returns it and its URL.
pub(crate) fn mock(seed: u64, events: u64, args: &[&str]) -> (Proc, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_firehose"))
        .args(["mock-jetstream", "--port", "0", "--seed"])
        .arg(seed.to_string())
        .arg("--events")
        .arg(events.to_string())
        .arg("--start-time-us")
        .arg(START_US.to_string())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line.trim().to_owned();
    assert!(url.starts_with("ws://"), "mock printed {url:?}");
    (Proc(child), url)
}

/// The events the mock publishes for `seed`: their `time_us` (unique), per table.
pub(crate) fn expected(seed: u64, events: u64, rate: Option<f64>) -> BTreeMap<Table, Vec<i64>> {
    let mut config = Config {
        seed,
        start_time_us: START_US,
        ..Config::default()
    };
    if let Some(rate) = rate {
        config.rate = rate;
    }
    let mut tables: BTreeMap<Table, Vec<i64>> = BTreeMap::new();
    for event in Generator::new(config).take(events as usize) {
        tables.entry(event.table()).or_default().push(event.time_us);
    }
    for times in tables.values_mut() {
        times.sort_unstable();
    }
    tables
}

/// Starts a long-running subcommand with its log in `dir/<name>.log`.
pub(crate) fn start(name: &str, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Proc {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{name}.log")))
        .unwrap();
    Proc(
        Command::new(env!("CARGO_BIN_EXE_firehose"))
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

pub(crate) fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// Prometheus text as `series → value` (the series with its labels, as printed).
pub(crate) fn metrics(addr: &str) -> HashMap<String, f64> {
    let Some((200, body)) = http_get(addr, "/metrics") else {
        return HashMap::new();
    };
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// The sum of every series of metric `name`.
pub(crate) fn total(metrics: &HashMap<String, f64>, name: &str) -> f64 {
    metrics
        .iter()
        .filter(|(series, _)| series.as_str() == name || series.starts_with(&format!("{name}{{")))
        .map(|(_, v)| v)
        .sum()
}

/// Waits until `name` summed reaches `at_least` on the process at `addr`.
pub(crate) fn wait_for(addrs: &[&str], name: &str, at_least: f64, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let sum: f64 = addrs.iter().map(|a| total(&metrics(a), name)).sum();
        if sum >= at_least {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} reached {sum}, not {at_least}, in {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Rows of every event table under a local dataset: `time_us` per table, sorted; and the
/// number of dead letters.
pub(crate) fn local_dataset(root: &Path) -> (BTreeMap<Table, Vec<i64>>, usize) {
    let mut files = Vec::new();
    for path in crate::parquet_files(root) {
        if path.ends_with(".parquet") {
            files.push((path.clone(), std::fs::read(root.join(&path)).unwrap()));
        }
    }
    dataset(files)
}

pub(crate) fn dataset(files: Vec<(String, Vec<u8>)>) -> (BTreeMap<Table, Vec<i64>>, usize) {
    let mut tables: BTreeMap<Table, Vec<i64>> = BTreeMap::new();
    let mut dead = 0;
    for (path, data) in files {
        let table = path.split('/').next().unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(data))
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            if table == "dead_letters" {
                let raw = batch.column_by_name("raw").unwrap();
                dead += raw.as_any().downcast_ref::<StringArray>().unwrap().len();
                continue;
            }
            let table: Table = table.parse().unwrap();
            let t = batch.column_by_name("time_us").unwrap();
            let t = t.as_any().downcast_ref::<Int64Array>().unwrap();
            tables
                .entry(table)
                .or_default()
                .extend(t.values().iter().copied());
        }
    }
    for times in tables.values_mut() {
        times.sort_unstable();
    }
    (tables, dead)
}

/// The dataset after removing duplicate rows (what compaction and the query facade do).
pub(crate) fn deduplicated(
    mut tables: BTreeMap<Table, Vec<i64>>,
) -> (BTreeMap<Table, Vec<i64>>, usize) {
    let mut duplicates = 0;
    for times in tables.values_mut() {
        let before = times.len();
        times.dedup();
        duplicates += before - times.len();
    }
    (tables, duplicates)
}

#[test]
fn run_archives_exactly_what_the_mock_sent_and_its_metrics_agree() {
    const EVENTS: u64 = 20_000;
    let dir = temp_dir("run");
    let (_mock, url) = mock(21, EVENTS, &[]);
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let out = dir.join("data");
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
            &metrics_addr,
            "--max-open-bytes",
            "2MiB",
            "--max-file-age",
            "2s",
        ],
        &[],
    );
    wait_for(
        &[&metrics_addr],
        "firehose_writer_rows_total",
        EVENTS as f64,
        Duration::from_secs(60),
    );
    let m = metrics(&metrics_addr);
    assert_eq!(total(&m, "firehose_events_received_total"), EVENTS as f64);
    assert_eq!(total(&m, "firehose_events_decoded_total"), EVENTS as f64);
    assert_eq!(total(&m, "firehose_events_dead_lettered_total"), 0.0);
    assert_eq!(total(&m, "firehose_jetstream_connected"), 1.0);
    assert!(total(&m, "firehose_writer_batches_total") >= 2.0);
    assert!(total(&m, "firehose_writer_bytes_total") > 0.0);
    let expected_posts = expected(21, EVENTS, None)[&Table::Posts].len() as f64;
    assert_eq!(
        m.get(r#"firehose_writer_rows_total{table="posts"}"#)
            .copied(),
        Some(expected_posts),
        "{m:?}"
    );
    let (status, body) = http_get(&metrics_addr, "/health").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""status":"ok""#), "{body}");

    assert_eq!(run.terminate(), 0, "a clean stop exits 0");
    let (tables, dead) = local_dataset(&out);
    assert_eq!(
        tables,
        expected(21, EVENTS, None),
        "exactly the events sent"
    );
    assert_eq!(dead, 0);
    assert!(out.join("_firehose/checkpoint.json").exists());
}

#[test]
fn run_with_faults_and_kills_keeps_every_event_once_after_deduplication() {
    const EVENTS: u64 = 30_000;
    let dir = temp_dir("faults");
    // 3,000 events/s for 10 s; the connection drops every 2 s, stalls once, carries broken
    // frames and duplicates, and swaps neighbours.
    let (_mock, url) = mock(
        22,
        EVENTS,
        &[
            "--rate",
            "3000",
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
    );
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
        "--max-open-bytes",
        "1MiB",
        "--liveness-timeout",
        "2s",
        "--start-cursor",
        &cursor,
        "--max-file-age",
        "2s",
    ];
    // Killed twice with SIGKILL mid-stream, restarted each time.
    for wait in [2500, 3000] {
        let run = start("run", &dir, &args, &[]);
        std::thread::sleep(Duration::from_millis(wait));
        drop(run); // SIGKILL
    }
    let run = start("run", &dir, &args, &[]);
    let deadline = Instant::now() + Duration::from_secs(120);
    let want = expected(22, EVENTS, Some(3000.0));
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let (tables, _) = deduplicated(local_dataset(&out).0);
        if tables == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the dataset did not converge on the events sent: {:?} of {:?} rows",
            tables.values().map(Vec::len).sum::<usize>(),
            want.values().map(Vec::len).sum::<usize>()
        );
    }
    let m = metrics(&metrics_addr);
    assert!(
        total(&m, "firehose_events_dead_lettered_total") >= 1.0,
        "{m:?}"
    );
    assert_eq!(run.terminate(), 0);
    let (tables, dead) = local_dataset(&out);
    let (tables, _) = deduplicated(tables);
    assert_eq!(tables, want, "no gap, no duplicate after de-duplication");
    assert!(dead >= 1, "broken frames reached the dead-letter table");
}

#[test]
fn ingest_to_redis_to_two_writers_to_s3_holds_exactly_the_events_sent() {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let (Some(redis), Some(endpoint), Some(key), Some(secret)) = (
        var("REDIS_URL"),
        var("FIREHOSE_TEST_S3_ENDPOINT"),
        var("FIREHOSE_TEST_S3_ACCESS_KEY"),
        var("FIREHOSE_TEST_S3_SECRET_KEY"),
    ) else {
        assert!(
            var("FIREHOSE_REQUIRE_SERVERS").as_deref() != Some("1"),
            "REDIS_URL and FIREHOSE_TEST_S3_* must be set when FIREHOSE_REQUIRE_SERVERS=1"
        );
        eprintln!("NOT RUN: needs REDIS_URL and FIREHOSE_TEST_S3_* (scripts/test starts both)");
        return;
    };
    const EVENTS: u64 = 30_000;
    let dir = temp_dir("redis-s3");
    let bucket = format!("e2e-{}", std::process::id());
    let aws = [
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_REGION", "fsn1"),
        ("AWS_ACCESS_KEY_ID", key.as_str()),
        ("AWS_SECRET_ACCESS_KEY", secret.as_str()),
    ];
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let storage = runtime.block_on(async {
        let mut config =
            firehose_sink::s3::S3Config::from_url(&format!("s3://{bucket}/archive")).unwrap();
        config.endpoint = Some(endpoint.clone());
        config.region = Some("fsn1".into());
        config.access_key_id = Some(key.clone());
        config.secret_access_key = Some(firehose_sink::s3::Secret::new(secret.clone()));
        let storage = firehose_sink::s3::S3Storage::new(config).await.unwrap();
        storage
            .client()
            .create_bucket()
            .bucket(&bucket)
            .send()
            .await
            .unwrap();
        storage
    });
    let stream = format!("firehose-e2e:{}", std::process::id());
    let (_mock, url) = mock(23, EVENTS, &["--rate", "5000"]);
    let ingest_addr = format!("127.0.0.1:{}", free_port());
    let ingest = start(
        "ingest",
        &dir,
        &[
            "ingest",
            "--jetstream-url",
            &url,
            "--redis-url",
            &redis,
            "--redis-stream",
            &stream,
            "--metrics-addr",
            &ingest_addr,
            "--start-cursor",
            &START_US.to_string(),
        ],
        &[],
    );
    let out = format!("s3://{bucket}/archive");
    let writers: Vec<(Proc, String)> = ["w1", "w2"]
        .into_iter()
        .map(|consumer| {
            let addr = format!("127.0.0.1:{}", free_port());
            let proc = start(
                consumer,
                &dir,
                &[
                    "write",
                    "--redis-url",
                    &redis,
                    "--redis-stream",
                    &stream,
                    "--out",
                    &out,
                    "--consumer",
                    consumer,
                    "--metrics-addr",
                    &addr,
                    "--max-open-bytes",
                    "1MiB",
                    "--max-file-age",
                    "2s",
                ],
                &aws,
            );
            (proc, addr)
        })
        .collect();
    let addrs: Vec<&str> = writers.iter().map(|(_, a)| a.as_str()).collect();
    wait_for(
        &addrs,
        "firehose_writer_rows_total",
        EVENTS as f64,
        Duration::from_secs(90),
    );
    for addr in &addrs {
        assert!(
            total(&metrics(addr), "firehose_writer_rows_total") > 0.0,
            "both writers wrote"
        );
    }
    assert_eq!(
        total(&metrics(&ingest_addr), "firehose_events_received_total"),
        EVENTS as f64
    );
    assert_eq!(ingest.terminate(), 0);
    for (writer, _) in writers {
        assert_eq!(writer.terminate(), 0);
    }
    let files = runtime.block_on(async {
        use firehose_sink::Storage;
        let mut files = Vec::new();
        for object in storage.list("").await.unwrap() {
            if object.path.ends_with(".parquet") {
                let data = storage.get(&object.path).await.unwrap();
                files.push((object.path, data.to_vec()));
            }
        }
        files
    });
    let (tables, _) = dataset(files);
    let (tables, _) = deduplicated(tables);
    assert_eq!(tables, expected(23, EVENTS, Some(5000.0)));
}
