//! `firehose query`: formats and exit codes.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::Value;

use crate::firehose;

/// A dataset of 20,000 generated events (2026-11-20, about 11 hours), imported once.
pub(crate) fn dataset() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("firehose-it-query-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let capture = dir.join("capture.jsonl");
        let c = capture.to_str().unwrap();
        let out = firehose(
            &[
                "generate", "-n", "20000", "--rate", "0.5", "--seed", "3", "-o", c,
            ],
            b"",
        );
        assert!(out.status.success());
        let data = dir.join("data");
        let out = firehose(
            &[
                "import",
                c,
                "--out",
                data.to_str().unwrap(),
                "--batch-lines",
                "5000",
            ],
            b"",
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        data
    })
}

fn query(args: &[&str]) -> (Option<i32>, Vec<u8>, String) {
    let data = dataset().to_str().unwrap().to_owned();
    let mut all = vec!["query", "--data", &data];
    all.extend_from_slice(args);
    let out = firehose(&all, b"");
    (
        out.status.code(),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn sql_in_every_format() {
    let sql = "SELECT kind, count(*) AS n FROM events GROUP BY kind ORDER BY kind";
    let (code, out, err) = query(&["--format", "json", sql]);
    assert_eq!(code, Some(0), "{err}");
    let rows: Vec<Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = rows.iter().map(|r| r["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["account", "commit", "identity"]);
    let total: i64 = rows.iter().map(|r| r["n"].as_i64().unwrap()).sum();
    assert_eq!(total, 20_000);

    let (code, out, _) = query(&["--format", "csv", sql]);
    assert_eq!(code, Some(0));
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "kind,n");
    assert!(lines[2].starts_with("commit,"), "{text}");

    let (code, out, _) = query(&["--format", "table", sql]);
    assert_eq!(code, Some(0));
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains("| kind     | n ") && text.ends_with("3 rows\n"),
        "{text}"
    );

    let (code, out, _) = query(&["--format", "parquet", sql]);
    assert_eq!(code, Some(0));
    assert!(out.starts_with(b"PAR1") && out.ends_with(b"PAR1"));

    let (code, out, _) = query(&["--format", "arrow", sql]);
    assert_eq!(code, Some(0));
    assert_eq!(&out[..4], &[0xff, 0xff, 0xff, 0xff], "an Arrow IPC stream");
}

#[test]
fn typed_calls_as_subcommands() {
    let (code, out, err) = query(&["--format", "json", "stats", "--day", "2026-11-20"]);
    assert_eq!(code, Some(0), "{err}");
    let row: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(row["day"], "2026-11-20");
    // The same figure through SQL.
    let (_, out, _) = query(&[
        "--format",
        "json",
        "SELECT count(*) AS n FROM posts WHERE operation = 'create'",
    ]);
    let n: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(row["posts"], n["n"]);
    assert!(row["unique_authors"].as_i64().unwrap() > 100);

    for args in [
        &[
            "posts",
            "--day",
            "2026-11-20",
            "--lang",
            "en",
            "--replies",
            "--limit",
            "5",
        ][..],
        &[
            "search",
            "the",
            "--from",
            "2026-11-20T02",
            "--to",
            "2026-11-20T04",
        ],
        &["hourly", "--day", "2026-11-20"],
        &[
            "top",
            "--by",
            "reposts",
            "--day",
            "2026-11-20",
            "--limit",
            "3",
        ],
        &["account", "did:plc:nobody", "--day", "2026-11-20"],
    ] {
        let mut all = vec!["--format", "csv"];
        all.extend_from_slice(args);
        let (code, out, err) = query(&all);
        assert_eq!(code, Some(0), "{args:?}: {err}");
        assert!(!out.is_empty(), "{args:?}");
    }
    let (_, out, _) = query(&[
        "--format",
        "json",
        "posts",
        "--day",
        "2026-11-20",
        "--limit",
        "5",
    ]);
    assert_eq!(String::from_utf8(out).unwrap().lines().count(), 5);
}

#[test]
fn exit_codes() {
    // A refused statement: 2, with the reason.
    let (code, _, err) = query(&["DROP TABLE posts"]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("query refused") && err.contains("DROP TABLE"),
        "{err}"
    );
    let (code, _, err) = query(&["COPY posts TO '/tmp/x.csv'"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("COPY"), "{err}");
    // Bad SQL and bad arguments: 2.
    let (code, _, err) = query(&["SELECT nope FROM posts"]);
    assert_eq!(code, Some(2), "{err}");
    let (code, _, _) = query(&["stats", "--day", "2026-02-30"]);
    assert_eq!(code, Some(2));
    let (code, _, _) = query(&["--format", "xml", "SELECT 1"]);
    assert_eq!(code, Some(2));
    let out = firehose(&["query", "SELECT 1"], b"");
    assert_eq!(out.status.code(), Some(2), "no --data");
    // A failure while running: 1. A corrupt file in the dataset.
    let dir = std::env::temp_dir().join(format!("firehose-it-query-bad-{}", std::process::id()));
    let hour = dir.join("posts/year=2026/month=11/day=20/hour=00");
    std::fs::create_dir_all(&hour).unwrap();
    std::fs::write(hour.join("broken.parquet"), b"this is not parquet at all").unwrap();
    let out = firehose(
        &[
            "query",
            "--data",
            dir.to_str().unwrap(),
            "SELECT count(*) FROM posts",
        ],
        b"",
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("query failed"));
    std::fs::remove_dir_all(&dir).unwrap();
}
