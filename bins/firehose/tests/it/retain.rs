use std::time::{SystemTime, UNIX_EPOCH};

use crate::{firehose, parquet_files};

#[test]
fn retain_deletes_old_hours_and_keeps_recent_ones() {
    let dir = std::env::temp_dir().join(format!("firehose-it-retain-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("data");
    let now_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    for (name, start) in [
        ("old", now_us - 10 * 86_400_000_000),
        ("new", now_us - 3_600_000_000),
    ] {
        let capture = dir.join(format!("{name}.jsonl"));
        let start = start.to_string();
        let out = firehose(
            &[
                "generate",
                "-n",
                "2000",
                "--rate",
                "1",
                "--start-time-us",
                &start,
                "-o",
                capture.to_str().unwrap(),
            ],
            b"",
        );
        assert!(out.status.success());
        let out = firehose(
            &[
                "import",
                capture.to_str().unwrap(),
                "--out",
                data.to_str().unwrap(),
            ],
            b"",
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let before = parquet_files(&data).into_iter().collect::<Vec<_>>();
    let old_day = |f: &String| {
        !f.contains(&format!("day={:02}", day_of(now_us)))
            && !f.contains(&format!("day={:02}", day_of(now_us - 3_600_000_000)))
    };
    let expected_gone: Vec<_> = before.iter().filter(|f| old_day(f)).cloned().collect();
    assert!(!expected_gone.is_empty() && expected_gone.len() < before.len());

    let out = firehose(
        &[
            "retain",
            "--data",
            data.to_str().unwrap(),
            "--older-than",
            "2d",
            "--dry-run",
        ],
        b"",
    );
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let listed: Vec<_> = stdout
        .lines()
        .filter(|l| l.ends_with(".parquet"))
        .map(str::to_owned)
        .collect();
    assert_eq!(listed, expected_gone);
    assert!(
        stdout.contains(&format!("would delete {} files", expected_gone.len())),
        "{stdout}"
    );
    assert_eq!(
        parquet_files(&data).into_iter().collect::<Vec<_>>(),
        before,
        "a dry run deletes nothing"
    );

    let out = firehose(
        &[
            "retain",
            "--data",
            data.to_str().unwrap(),
            "--older-than",
            "2d",
        ],
        b"",
    );
    assert!(out.status.success());
    let after = parquet_files(&data).into_iter().collect::<Vec<_>>();
    assert_eq!(after.len(), before.len() - expected_gone.len());
    assert!(after.iter().all(|f| !old_day(f)));

    let out = firehose(
        &[
            "retain",
            "--data",
            data.to_str().unwrap(),
            "--older-than",
            "2 weeks",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(2));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Day of the month (UTC) of `time_us`.
fn day_of(time_us: i64) -> u8 {
    firehose_core::Hour::of(time_us).day
}
