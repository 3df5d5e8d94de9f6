//! `firehose compact` killed with SIGKILL at random moments, and `firehose cleanup-uploads`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{Array, RecordBatch};
use firehose_core::Event;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::{firehose, parquet_files};

/// An event as the dataset shows it: its envelope.
type Row = (
    String,
    i64,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn row_of(e: &Event<'_>) -> Row {
    let c = e.commit();
    (
        e.did.to_string(),
        e.time_us,
        e.kind().as_str().to_owned(),
        c.map(|c| c.collection.to_string()),
        c.map(|c| c.rkey.to_string()),
        c.map(|c| c.rev.to_string()),
        c.and_then(|c| c.cid.as_deref().map(str::to_owned)),
    )
}

/// How many times each event (by its envelope) is in the dataset, read with the parquet crate.
fn dataset_rows(root: &Path) -> BTreeMap<Row, usize> {
    let mut rows = BTreeMap::new();
    for file in parquet_files(root) {
        let reader = ParquetRecordBatchReaderBuilder::try_new(
            std::fs::File::open(root.join(&file)).unwrap(),
        )
        .unwrap()
        .build()
        .unwrap();
        for batch in reader {
            let batch: RecordBatch = batch.unwrap();
            let s = |name: &str| {
                batch
                    .column_by_name(name)
                    .unwrap()
                    .as_string::<i32>()
                    .clone()
            };
            let (did, kind, collection, rkey, rev, cid) = (
                s("did"),
                s("kind"),
                s("collection"),
                s("rkey"),
                s("rev"),
                s("cid"),
            );
            let time = batch
                .column_by_name("time_us")
                .unwrap()
                .as_primitive::<Int64Type>()
                .clone();
            let opt = |a: &arrow_array::StringArray, i: usize| {
                a.is_valid(i).then(|| a.value(i).to_owned())
            };
            for i in 0..batch.num_rows() {
                let row = (
                    did.value(i).to_owned(),
                    time.value(i),
                    kind.value(i).to_owned(),
                    opt(&collection, i),
                    opt(&rkey, i),
                    opt(&rev, i),
                    opt(&cid, i),
                );
                *rows.entry(row).or_default() += 1;
            }
        }
    }
    rows
}

/// A small xorshift for the kill delays (printed, so a failure can be reproduced).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

fn compact_args(data: &Path) -> Vec<String> {
    [
        "compact",
        "--data",
        data.to_str().unwrap(),
        "--target-size",
        "150kB",
    ]
    .map(str::to_owned)
    .to_vec()
}

#[test]
fn compact_survives_sigkill_and_keeps_each_event_once() {
    let dir = std::env::temp_dir().join(format!("firehose-it-compact-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let capture = dir.join("capture.jsonl");
    // 30,000 events at 5 per second, ending a day ago: two closed hours of every table.
    let now_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    let start = (now_us - 86_400_000_000).to_string();
    let out = firehose(
        &[
            "generate",
            "-n",
            "30000",
            "--rate",
            "5",
            "--start-time-us",
            &start,
            "-o",
        ]
        .into_iter()
        .chain([capture.to_str().unwrap()])
        .collect::<Vec<_>>(),
        b"",
    );
    assert!(out.status.success());
    let text = std::fs::read_to_string(&capture).unwrap();
    let mut want: BTreeMap<Row, usize> = BTreeMap::new();
    for line in text.lines() {
        *want
            .entry(row_of(&Event::decode(line.as_bytes()).unwrap()))
            .or_default() += 1;
    }
    assert!(
        want.values().all(|&n| n == 1),
        "the generator makes distinct events"
    );

    // The same capture imported twice, in chunks of different sizes: every event twice, under
    // different file names (as a replayed batch would be).
    let data = dir.join("data");
    for batch_lines in ["2000", "3000"] {
        let out = firehose(
            &[
                "import",
                capture.to_str().unwrap(),
                "--out",
                data.to_str().unwrap(),
                "--batch-lines",
                batch_lines,
            ],
            b"",
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let twice: BTreeMap<Row, usize> = want.keys().map(|r| (r.clone(), 2)).collect();
    assert_eq!(dataset_rows(&data), twice);

    // An uninterrupted run on a copy, to time it and to know the outcome.
    let copy = dir.join("copy");
    let status = Command::new("cp")
        .arg("-r")
        .arg(&data)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(status.success());
    let started = Instant::now();
    let out = firehose(
        &compact_args(&copy)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        b"",
    );
    let full_run = started.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(dataset_rows(&copy), want);
    let compacted = parquet_files(&copy);

    // Kill runs at random moments within that time; after each kill the dataset still holds
    // every event (duplicates allowed, since readers remove them by key).
    let mut rng = Rng(u64::from(std::process::id()) | 1);
    for attempt in 0..6 {
        let delay = Duration::from_millis(rng.below(full_run.as_millis() as u64));
        let mut child = Command::new(env!("CARGO_BIN_EXE_firehose"))
            .args(compact_args(&data))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        eprintln!("attempt {attempt}: killed after {delay:?} ({status})");
        let rows = dataset_rows(&data);
        assert_eq!(
            rows.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "attempt {attempt}: every event is still there"
        );
    }

    // A run to the end: each event exactly once, in the same files as the uninterrupted run
    // when the kills left the inputs as they were, else in files of another input set.
    let out = firehose(
        &compact_args(&data)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        b"",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(dataset_rows(&data), want, "each event exactly once");
    let files = parquet_files(&data);
    assert!(files.iter().all(|f| f.contains("/compact-")), "{files:?}");
    assert_eq!(
        files
            .iter()
            .map(|f| f.rsplit_once('/').unwrap().0)
            .collect::<std::collections::BTreeSet<_>>(),
        compacted
            .iter()
            .map(|f| f.rsplit_once('/').unwrap().0)
            .collect(),
    );

    // Nothing more to do.
    let out = firehose(
        &compact_args(&data)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        b"",
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success());
    assert!(stdout.starts_with("compacted 0 partitions"), "{stdout}");
    assert_eq!(parquet_files(&data), files);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn compact_leaves_open_hours_and_reports_a_dry_run() {
    let dir = std::env::temp_dir().join(format!("firehose-it-compact-open-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let capture = dir.join("capture.jsonl");
    // 3,000 events at one per second ending now: the current hour is open, and with a grace of
    // two hours so is the previous one.
    let now_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    let start = (now_us - 3_000_000_000).to_string();
    let path = capture.to_str().unwrap();
    assert!(
        firehose(
            &[
                "generate",
                "-n",
                "3000",
                "--rate",
                "1",
                "--start-time-us",
                &start,
                "-o",
                path
            ],
            b""
        )
        .status
        .success()
    );
    let data = dir.join("data");
    let data_arg = data.to_str().unwrap();
    for batch_lines in ["500", "700"] {
        assert!(
            firehose(
                &[
                    "import",
                    path,
                    "--out",
                    data_arg,
                    "--batch-lines",
                    batch_lines
                ],
                b""
            )
            .status
            .success()
        );
    }
    let before = parquet_files(&data);
    let out = firehose(
        &["compact", "--data", data_arg, "--grace", "2h", "--json"],
        b"",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["partitions"], 0);
    assert!(summary["open"].as_u64().unwrap() > 0);
    assert_eq!(parquet_files(&data), before);

    let out = firehose(
        &["compact", "--data", data_arg, "--grace", "0s", "--dry-run"],
        b"",
    );
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("would compact"), "{stdout}");
    assert_eq!(parquet_files(&data), before, "a dry run changes nothing");

    for bad in [
        &["--target-size", "0"][..],
        &["--target-size", "lots"],
        &["--grace", "soon"],
    ] {
        let out = firehose(&[&["compact", "--data", data_arg][..], bad].concat(), b"");
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn cleanup_uploads_refuses_a_local_directory() {
    let out = firehose(
        &[
            "cleanup-uploads",
            "--data",
            "/tmp/some-dataset",
            "--older-than",
            "24h",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("works on an S3 dataset (s3://bucket/prefix)"),
        "{stderr}"
    );
}

/// s3s-fs 0.14 does not implement ListMultipartUploads: the command must say so clearly. (A
/// server that has it, such as Hetzner's or MinIO, is not available here.)
#[test]
fn cleanup_uploads_says_when_the_server_cannot_list_uploads() {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let (Some(endpoint), Some(key), Some(secret)) = (
        var("FIREHOSE_TEST_S3_ENDPOINT"),
        var("FIREHOSE_TEST_S3_ACCESS_KEY"),
        var("FIREHOSE_TEST_S3_SECRET_KEY"),
    ) else {
        assert_ne!(
            var("FIREHOSE_REQUIRE_SERVERS").as_deref(),
            Some("1"),
            "FIREHOSE_TEST_S3_* are not set but FIREHOSE_REQUIRE_SERVERS=1"
        );
        eprintln!("NOT RUN: FIREHOSE_TEST_S3_ENDPOINT is not set (scripts/test starts s3s-fs)");
        return;
    };
    let out = Command::new(env!("CARGO_BIN_EXE_firehose"))
        .args([
            "cleanup-uploads",
            "--data",
            "s3://cleanup-test/archive",
            "--older-than",
            "24h",
        ])
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_REGION", "fsn1")
        .env("AWS_ACCESS_KEY_ID", key)
        .env("AWS_SECRET_ACCESS_KEY", &secret)
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("does not support listing multipart uploads")
            && stderr.contains("NotImplemented"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(!stderr.contains(&secret));
}
