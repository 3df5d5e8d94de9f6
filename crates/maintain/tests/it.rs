//! The service against a real local dataset: each job runs on its schedule, changes the
//! dataset as its command would, and reports itself in the metrics.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use firehose_core::Event;
use firehose_maintain::{CompactJob, Error, Job, Maintenance, RetainJob, Schedule};
use firehose_sink::{BatchName, CompactOptions, LocalStorage, ParquetOptions, Storage, Writer};
use metrics_exporter_prometheus::PrometheusBuilder;

const HOUR_US: i64 = 3_600_000_000;

fn now_us() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_micros(),
    )
    .unwrap()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("firehose-maintain-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn like(rkey: &str, time_us: i64) -> String {
    format!(
        r#"{{"did":"did:plc:a","time_us":{time_us},"kind":"commit","commit":{{"rev":"r{rkey}","operation":"delete","collection":"app.bsky.feed.like","rkey":"{rkey}"}}}}"#
    )
}

/// Two files in an hour of three days ago holding the same event (a replay), and one file in
/// an hour of 400 days ago.
async fn dataset(dir: &Path) {
    let storage: Arc<dyn Storage> = Arc::new(LocalStorage::new(dir));
    let writer = Writer::new(storage, ParquetOptions::default());
    let recent = now_us() - 72 * HOUR_US;
    let (a, b) = (like("a", recent), like("b", recent + 1));
    let old = like("c", now_us() - 400 * 24 * HOUR_US);
    for (n, lines) in [(1, vec![&a]), (2, vec![&a, &b]), (3, vec![&old])] {
        let events: Vec<Event<'_>> = lines
            .into_iter()
            .map(|line| Event::decode(line.as_bytes()).unwrap())
            .collect();
        writer
            .write(
                &BatchName::new(&n.to_string(), &n.to_string()).unwrap(),
                &events,
            )
            .await
            .unwrap();
    }
}

/// The Parquet files under `dir`, relative to it, sorted.
fn parquet_files(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                out.push(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// The value of the sample `name{labels}` in a Prometheus text exposition.
fn sample(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name_and_labels)?.trim().parse().ok())
}

/// One test for everything that reads the process-wide metrics recorder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_run_on_schedule_change_the_dataset_and_report_in_metrics() {
    let handle = PrometheusBuilder::new().install_recorder().unwrap();
    let dir = temp_dir("schedule");
    let data = dir.join("data");
    dataset(&data).await;
    assert_eq!(parquet_files(&data).len(), 3);
    let before = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();

    let schedule = Schedule {
        compact: Some(CompactJob {
            every: Duration::from_secs(3600),
            grace: Duration::from_secs(600),
            options: CompactOptions {
                spill_dir: dir.clone(),
                ..CompactOptions::default()
            },
        }),
        retain: Some(RetainJob {
            every: Duration::from_secs(86_400),
            older_than: Duration::from_secs(30 * 86_400),
        }),
        cleanup_uploads: None,
    };
    let maintenance = Maintenance::open(data.to_str().unwrap(), schedule)
        .await
        .unwrap();
    assert_eq!(
        maintenance
            .jobs()
            .iter()
            .map(|(job, _)| *job)
            .collect::<Vec<_>>(),
        [Job::Retain, Job::Compact],
        "retention first: compaction does not work on hours about to go"
    );
    let ran = {
        let handle = handle.clone();
        async move {
            for _ in 0..600 {
                let text = handle.render();
                if sample(
                    &text,
                    r#"firehose_maintenance_runs_total{task="compact",result="ok"}"#,
                )
                .is_some()
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("compaction did not run within 30 s:\n{}", handle.render());
        }
    };
    // The service runs until the shutdown future completes: here, once both jobs ran.
    tokio::time::timeout(Duration::from_secs(60), maintenance.run(ran))
        .await
        .expect("the service stops when asked");

    let files = parquet_files(&data);
    assert_eq!(
        files.len(),
        1,
        "the old hour deleted, the recent one compacted: {files:?}"
    );
    let name = files[0].rsplit('/').next().unwrap();
    assert!(
        firehose_core::layout::compaction_of(name).is_some(),
        "{} is a compaction output",
        files[0]
    );
    let text = handle.render();
    for job in ["retain", "compact"] {
        let labels = format!(r#"{{task="{job}"}}"#);
        assert_eq!(
            sample(
                &text,
                &format!(r#"firehose_maintenance_runs_total{{task="{job}",result="ok"}}"#)
            ),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            sample(&text, &format!("firehose_maintenance_failing{labels}")),
            Some(0.0)
        );
        let success = sample(
            &text,
            &format!("firehose_maintenance_last_success_timestamp_seconds{labels}"),
        )
        .unwrap();
        assert!(
            success >= before,
            "{job}: last success {success} before the run {before}"
        );
        assert!(
            sample(
                &text,
                &format!("firehose_maintenance_last_duration_seconds{labels}")
            )
            .is_some()
        );
    }
    assert_eq!(
        sample(
            &text,
            r#"firehose_maintenance_interval_seconds{task="compact"}"#
        ),
        Some(3600.0)
    );

    // A job that fails (its spill directory is a file) is reported, and the service goes on.
    let bad = temp_dir("failing");
    let data = bad.join("data");
    dataset(&data).await;
    let not_a_dir = bad.join("spill");
    std::fs::write(&not_a_dir, b"a file").unwrap();
    let maintenance = Maintenance::open(
        data.to_str().unwrap(),
        Schedule {
            compact: Some(CompactJob {
                every: Duration::from_millis(100),
                grace: Duration::from_secs(600),
                options: CompactOptions {
                    spill_dir: not_a_dir,
                    ..CompactOptions::default()
                },
            }),
            ..Schedule::default()
        },
    )
    .await
    .unwrap();
    let err = maintenance.run_job(Job::Compact).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Job {
                job: Job::Compact,
                ..
            }
        ),
        "{err}"
    );
    let text = handle.render();
    assert_eq!(
        sample(&text, r#"firehose_maintenance_failing{task="compact"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"firehose_maintenance_runs_total{task="compact",result="error"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        parquet_files(&data).len(),
        3,
        "nothing lost by the failed run"
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&bad);
}

#[tokio::test]
async fn a_zero_interval_is_refused_and_a_local_dataset_has_no_upload_cleanup() {
    let dir = temp_dir("config");
    let err = Maintenance::open(
        dir.to_str().unwrap(),
        Schedule {
            retain: Some(RetainJob {
                every: Duration::ZERO,
                older_than: Duration::from_secs(60),
            }),
            ..Schedule::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "the retain job runs every 0 s: give it a positive interval"
    );
    let maintenance = Maintenance::open(
        dir.to_str().unwrap(),
        Schedule {
            cleanup_uploads: Some(firehose_maintain::CleanupJob {
                every: Duration::from_secs(60),
                older_than: Duration::from_secs(60),
            }),
            ..Schedule::default()
        },
    )
    .await
    .unwrap();
    assert!(maintenance.jobs().is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}
