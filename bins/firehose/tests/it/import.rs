use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::{firehose, parquet_files};

#[test]
fn import_writes_every_table_and_reports_bad_lines() {
    let dir = std::env::temp_dir().join(format!("firehose-it-import-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let capture = dir.join("capture.jsonl");
    let out = firehose(
        &[
            "generate",
            "-n",
            "30000",
            "--rate",
            "5",
            "-o",
            capture.to_str().unwrap(),
        ],
        b"",
    );
    assert!(out.status.success());
    // Two bad lines in the middle of the capture.
    let mut text = std::fs::read_to_string(&capture).unwrap();
    text.insert_str(text.find('\n').unwrap() + 1, "{\"truncated\":\nnot json\n");
    std::fs::write(&capture, &text).unwrap();

    let data = dir.join("data");
    let args = [
        "import",
        capture.to_str().unwrap(),
        "--out",
        data.to_str().unwrap(),
        "--batch-lines",
        "7000",
        "--json",
    ];
    let out = firehose(&args, b"");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["events"], 30000);
    assert_eq!(summary["errors"], 2);
    assert_eq!(summary["first_errors"][0]["line"], 2);
    assert_eq!(summary["first_errors"][1]["line"], 3);
    assert_eq!(
        summary["first_errors"][0]["input"],
        capture.to_str().unwrap()
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        stderr.lines().count(),
        1,
        "no progress when not a terminal: {stderr}"
    );
    let reason = format!(
        "2 of 30002 lines in {} failed to decode and were skipped",
        capture.display()
    );
    assert!(stderr.trim_end().ends_with(&reason), "{stderr}");

    // Per-table row counts agree with what inspect decodes from the same file.
    let inspect: Value = serde_json::from_slice(
        &firehose(&["inspect", "--json", capture.to_str().unwrap()], b"").stdout,
    )
    .unwrap();
    assert_eq!(summary["tables"], inspect["tables"]);

    // The layout: <table>/year=/month=/day=/hour=/<name>.parquet, nothing else.
    let files = parquet_files(&data);
    assert_eq!(files.len() as u64, summary["files"].as_u64().unwrap());
    for f in &files {
        let parts: Vec<_> = f.split('/').collect();
        assert_eq!(parts.len(), 6, "{f}");
        assert!(
            parts[1].starts_with("year=")
                && parts[2].starts_with("month=")
                && parts[3].starts_with("day=")
                && parts[4].starts_with("hour="),
            "{f}"
        );
        assert!(
            parts[5].starts_with("import-") && parts[5].ends_with(".parquet"),
            "{f}"
        );
    }

    // Re-running the import (as after a crash) rewrites the same files: no new ones.
    let out = firehose(&args, b"");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(parquet_files(&data), files);

    // The same capture zstd-compressed, found through a pattern, on 1 and on 3 threads: the
    // same files again.
    let zst = dir.join("capture.jsonl.zst");
    std::fs::write(&zst, zstd::encode_all(text.as_bytes(), 3).unwrap()).unwrap();
    for threads in ["1", "3"] {
        let again = dir.join(format!("again-{threads}"));
        let pattern = format!("{}/*.zst", dir.display());
        let out = firehose(
            &[
                "import",
                &pattern,
                "-o",
                again.to_str().unwrap(),
                "--batch-lines",
                "7000",
                "-j",
                threads,
            ],
            b"",
        );
        assert_eq!(
            out.status.code(),
            Some(1),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(parquet_files(&again), files, "{threads} threads");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn import_killed_midway_then_rerun_converges_on_the_same_files() {
    let dir = std::env::temp_dir().join(format!("firehose-it-import-kill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let capture = dir.join("capture.jsonl");
    assert!(
        firehose(
            &[
                "generate",
                "-n",
                "60000",
                "--rate",
                "20",
                "-o",
                capture.to_str().unwrap()
            ],
            b""
        )
        .status
        .success()
    );

    let clean = dir.join("clean");
    let args = |out: &Path| {
        vec![
            "import".to_owned(),
            capture.to_str().unwrap().to_owned(),
            "--out".into(),
            out.to_str().unwrap().into(),
            "--batch-lines".into(),
            "5000".into(),
        ]
    };
    assert!(
        firehose(
            &args(&clean).iter().map(String::as_str).collect::<Vec<_>>(),
            b""
        )
        .status
        .success()
    );
    let want = parquet_files(&clean);

    // Kill an import with SIGKILL after it wrote some files, then run it again.
    let crashed = dir.join("crashed");
    let mut child = Command::new(env!("CARGO_BIN_EXE_firehose"))
        .args(args(&crashed))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while parquet_files(&crashed).len() < 5 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let partial = parquet_files(&crashed);
    assert!(
        partial.is_subset(&want),
        "a killed import leaves only complete, correctly named files"
    );
    assert!(
        firehose(
            &args(&crashed)
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
            b""
        )
        .status
        .success()
    );
    assert_eq!(parquet_files(&crashed), want);
    for f in &want {
        assert_eq!(
            std::fs::read(clean.join(f)).unwrap(),
            std::fs::read(crashed.join(f)).unwrap(),
            "{f}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
