//! Imports of generated captures into local datasets: gzip (the JSONBench layout) and zstd
//! inputs give the rows of the plain file, and the files are the same whatever the number of
//! threads.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use firehose_import::{ImportOptions, ImportSummary, Input, expand, import};
use firehose_synth::{Config, Generator};

fn temp_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("firehose-import-it-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `n` generated events as JSON lines (5 an event-second, so they span several hours).
fn capture(n: usize, seed: u64) -> Vec<u8> {
    let config = Config {
        seed,
        rate: 5.0,
        ..Config::default()
    };
    let mut out = Vec::new();
    for event in Generator::new(config).take(n) {
        serde_json::to_writer(&mut out, &event).unwrap();
        out.push(b'\n');
    }
    out
}

/// Every file under `root`, relative path to content.
fn files(root: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, root, out);
            } else {
                let name = path.strip_prefix(root).unwrap().display().to_string();
                out.insert(name, std::fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

async fn import_into(inputs: &[Input], root: &Path, threads: usize) -> ImportSummary {
    let storage = firehose_sink::open(root.to_str().unwrap()).await.unwrap();
    let options = ImportOptions {
        batch_lines: 1_000,
        threads,
        ..ImportOptions::default()
    };
    import(inputs, storage, &options, |_| {}).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_files_whatever_the_number_of_threads() {
    let dir = temp_dir("threads");
    for (i, seed) in [1, 2].into_iter().enumerate() {
        std::fs::write(dir.join(format!("part-{i}.jsonl")), capture(6_000, seed)).unwrap();
    }
    let inputs = expand(&[dir.display().to_string()]).unwrap();
    assert_eq!(inputs.len(), 2);
    let one = import_into(&inputs, &dir.join("one"), 1).await;
    let three = import_into(&inputs, &dir.join("three"), 3).await;
    assert_eq!((one.lines, one.events, one.errors), (12_000, 12_000, 0));
    assert_eq!(
        (three.events, three.files, &three.tables),
        (one.events, one.files, &one.tables)
    );
    let (a, b) = (files(&dir.join("one")), files(&dir.join("three")));
    assert_eq!(a.len() as u64, one.files);
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    assert!(a == b, "the same bytes in every file");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn gzip_and_zstd_captures_import_the_rows_of_the_plain_file() {
    let dir = temp_dir("codecs");
    let plain = capture(5_000, 7);
    std::fs::write(dir.join("capture.jsonl"), &plain).unwrap();
    // The JSONBench layout: one Jetstream event a line, gzipped.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&plain).unwrap();
    std::fs::write(dir.join("file_0001.json.gz"), gz.finish().unwrap()).unwrap();
    std::fs::write(
        dir.join("capture.jsonl.zst"),
        zstd::encode_all(&plain[..], 3).unwrap(),
    )
    .unwrap();
    let mut seen = Vec::new();
    for name in ["capture.jsonl", "file_0001.json.gz", "capture.jsonl.zst"] {
        let out = dir.join(format!("out-{name}"));
        let summary = import_into(&[Input::File(dir.join(name))], &out, 2).await;
        assert_eq!((summary.events, summary.errors), (5_000, 0), "{name}");
        assert_eq!(
            summary.bytes_in,
            plain.len() as u64,
            "{name}: bytes after decompression"
        );
        seen.push(files(&out));
    }
    assert!(
        seen[0] == seen[1] && seen[0] == seen[2],
        "the same files from every codec"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn a_write_that_fails_stops_the_import_and_names_the_lines() {
    let dir = temp_dir("fail");
    std::fs::write(dir.join("capture.jsonl"), capture(3_000, 3)).unwrap();
    // The dataset root is a file: no partition directory can be made under it.
    let root = dir.join("root");
    std::fs::write(&root, "").unwrap();
    let storage = firehose_sink::LocalStorage::new(&root);
    let err = import(
        &[Input::File(dir.join("capture.jsonl"))],
        std::sync::Arc::new(storage),
        &ImportOptions {
            batch_lines: 1_000,
            threads: 2,
            ..ImportOptions::default()
        },
        |_| {},
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("writing lines ") && err.contains("capture.jsonl"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
