//! `firehose maintain`: the maintenance service as deployed, against a local dataset and
//! against S3 (s3s-fs), read through its `/metrics` and `/health`.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::harness::{
    Proc, S3Server, free_port, have, http_get, metrics, start, temp_dir, wait_until,
};
use crate::{firehose, parquet_files};

/// A capture of `events` events, one a second from `start_us`, imported into `data` as
/// several files per hour (as the live writer leaves them).
fn import(dir: &Path, data: &str, name: &str, start_us: i64, env: &[(&str, String)]) {
    let capture = dir.join(format!("{name}.jsonl"));
    let out = firehose(
        &[
            "generate",
            "-n",
            "1500",
            "--rate",
            "1",
            "--start-time-us",
            &start_us.to_string(),
            "-o",
            capture.to_str().unwrap(),
        ],
        b"",
    );
    assert!(out.status.success());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_firehose"))
        .args(["import", capture.to_str().unwrap(), "--out", data])
        .args(["--batch-lines", "300"])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `firehose maintain` on `data` with `extra` flags, spilling to `dir`; and its metrics address.
fn maintain(dir: &Path, data: &str, extra: &[&str], env: &[(&str, String)]) -> (Proc, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let spill = dir.to_str().unwrap();
    let mut args = vec![
        "maintain",
        "--data",
        data,
        "--spill-dir",
        spill,
        "--metrics-addr",
        &addr,
    ];
    args.extend_from_slice(extra);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    (start("maintain", dir, &args, &env), addr)
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

/// The gauge or counter `name{task="job",...}` in a scrape (summed over other labels).
fn job_metric(scrape: &std::collections::HashMap<String, f64>, name: &str, job: &str) -> f64 {
    let prefix = format!("{name}{{task=\"{job}\"");
    scrape
        .iter()
        .filter(|(k, _)| k.starts_with(&prefix))
        .map(|(_, v)| v)
        .sum()
}

#[test]
fn maintain_compacts_and_retains_on_schedule_and_reports_each_job() {
    let dir = temp_dir("maintain");
    let data = dir.join("data");
    let data = data.to_str().unwrap();
    const DAY_US: i64 = 86_400_000_000;
    import(&dir, data, "old", now_us() - 40 * DAY_US, &[]);
    import(&dir, data, "recent", now_us() - 3 * DAY_US, &[]);
    let before = parquet_files(Path::new(data));
    assert!(before.len() > 8, "several files per hour: {before:?}");

    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let (service, addr) = maintain(&dir, data, &["--retain-older-than", "30d"], &[]);
    wait_until(
        "compaction and retention have run",
        Duration::from_secs(60),
        || {
            let m = metrics(&addr);
            ["retain", "compact"]
                .iter()
                .all(|job| job_metric(&m, "firehose_maintenance_runs_total", job) >= 1.0)
        },
    );
    let m = metrics(&addr);
    assert_eq!(
        http_get(&addr, "/health").map(|(status, _)| status),
        Some(200)
    );
    for job in ["retain", "compact"] {
        assert_eq!(
            m.get(&format!(
                "firehose_maintenance_runs_total{{task=\"{job}\",result=\"ok\"}}"
            ))
            .copied(),
            Some(1.0),
            "{job} ran once and succeeded"
        );
        assert_eq!(job_metric(&m, "firehose_maintenance_failing", job), 0.0);
        assert!(
            job_metric(
                &m,
                "firehose_maintenance_last_success_timestamp_seconds",
                job
            ) >= started
        );
    }
    assert_eq!(
        job_metric(&m, "firehose_maintenance_interval_seconds", "compact"),
        3600.0
    );
    assert_eq!(
        job_metric(&m, "firehose_maintenance_interval_seconds", "retain"),
        86_400.0
    );
    assert_eq!(
        job_metric(&m, "firehose_maintenance_runs_total", "cleanup-uploads"),
        0.0,
        "a local directory has no uploads to clean up"
    );
    assert_eq!(service.terminate(), 0);

    // What `retain --older-than 30d` and `compact` would leave: the 40-day-old hours gone,
    // each recent hour one compacted file.
    let after = parquet_files(Path::new(data));
    assert!(!after.is_empty());
    for file in &after {
        assert!(
            firehose_core::layout::compaction_of(file).is_some(),
            "{file} is a compaction output ({before:?} were the inputs)"
        );
    }
    let hours: std::collections::BTreeSet<_> = after
        .iter()
        .map(|f| f.rsplit_once('/').unwrap().0.to_owned())
        .collect();
    assert_eq!(hours.len(), after.len(), "one file per hour: {after:?}");
    assert!(
        before.len() > after.len(),
        "{} files before, {} after",
        before.len(),
        after.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// On S3 the upload cleanup runs too; s3s-fs cannot list multipart uploads, so that job fails,
/// is reported as failing, and the rest of the service goes on.
#[test]
fn maintain_on_s3_reports_a_failing_job_and_goes_on() {
    if !have(&["s3s-fs"]) {
        return;
    }
    let dir = temp_dir("maintain-s3");
    let s3 = S3Server::start(&dir);
    s3.create_bucket("maintained");
    let env = s3.env();
    let data = "s3://maintained/archive";
    import(&dir, data, "recent", now_us() - 3 * 86_400_000_000, &env);
    let (service, addr) = maintain(&dir, data, &[], &env);
    wait_until("compaction has run", Duration::from_secs(60), || {
        job_metric(
            &metrics(&addr),
            "firehose_maintenance_runs_total",
            "compact",
        ) >= 1.0
    });
    let m = metrics(&addr);
    assert_eq!(
        m.get("firehose_maintenance_runs_total{task=\"cleanup-uploads\",result=\"error\"}")
            .copied(),
        Some(1.0),
        "{m:?}"
    );
    assert_eq!(
        job_metric(&m, "firehose_maintenance_failing", "cleanup-uploads"),
        1.0
    );
    assert_eq!(
        m.get("firehose_maintenance_runs_total{task=\"compact\",result=\"ok\"}")
            .copied(),
        Some(1.0)
    );
    assert_eq!(
        job_metric(&m, "firehose_maintenance_failing", "compact"),
        0.0
    );
    assert_eq!(
        http_get(&addr, "/health").map(|(status, _)| status),
        Some(200)
    );
    let files = s3.parquet_files("maintained", "archive");
    assert!(!files.is_empty());
    assert!(
        files
            .iter()
            .all(|(path, _)| firehose_core::layout::compaction_of(path).is_some()),
        "every hour compacted: {:?}",
        files.iter().map(|(p, _)| p).collect::<Vec<_>>()
    );
    assert_eq!(service.terminate(), 0);
    let log = std::fs::read_to_string(dir.join("maintain.log")).unwrap();
    assert!(
        log.contains("NotImplemented"),
        "the failure is logged: {log}"
    );
    assert!(
        !log.contains(&env[3].1),
        "the secret key stays out of the log"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
