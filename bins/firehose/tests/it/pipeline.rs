//! The running pipeline end to end, through real processes and servers: `firehose
//! mock-jetstream` → `firehose run` → local Parquet (clean, with faults, killed and restarted),
//! and `mock-jetstream` → `ingest` → Redis → two `write` processes → S3 (s3s-fs).

use std::time::{Duration, Instant};

use firehose_core::Table;

use crate::harness::{
    Proc, START_US, dataset, deduplicated, expected, free_port, http_get, local_dataset, metrics,
    mock, start, temp_dir, total, wait_for,
};

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

#[test]
fn run_exits_with_an_error_when_its_writer_fails_instead_of_hanging() {
    let dir = temp_dir("writer-fails");
    let (_mock, url) = mock(24, 1_000_000, &["--rate", "2000"]);
    let out = dir.join("data");
    let mut run = start(
        "run",
        &dir,
        &[
            "run",
            "--jetstream-url",
            &url,
            "--out",
            out.to_str().unwrap(),
            "--metrics-addr",
            &format!("127.0.0.1:{}", free_port()),
            "--start-cursor",
            &START_US.to_string(),
            "--max-file-age",
            "1s",
        ],
        &[],
    );
    let checkpoint = out.join("_firehose/checkpoint.json");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !checkpoint.exists() {
        assert!(Instant::now() < deadline, "no checkpoint written");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The writer cannot raise a checkpoint it cannot read: it stops with an error, and so must
    // the process (a supervisor restarts it), not go on reading Jetstream into a buffer nobody
    // empties.
    std::fs::write(&checkpoint, "not a checkpoint").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let code = loop {
        if let Some(status) = run.0.try_wait().unwrap() {
            break status.code();
        }
        assert!(
            Instant::now() < deadline,
            "run still running 30 s after its writer failed"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(code, Some(1));
    let log = std::fs::read_to_string(dir.join("run.log")).unwrap();
    assert!(log.contains("checkpoint"), "{log}");
}
