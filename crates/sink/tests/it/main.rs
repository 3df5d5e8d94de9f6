//! The writer against a real local directory (round trip, layout, rewrite of the same batch)
//! and against a real S3-compatible server (`s3` module).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

mod compact;
mod merge;
#[cfg(feature = "s3")]
mod s3;
#[cfg(feature = "s3")]
mod uploads;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use arrow_array::RecordBatch;
use firehose_core::{Event, PartitionKey, record_batches};
use firehose_sink::{BatchName, Compression, LocalStorage, ParquetOptions, Storage, Writer};
use firehose_synth::{Config, Generator};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("firehose-sink-it-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn read_back(bytes: bytes::Bytes) -> RecordBatch {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<RecordBatch> = reader.collect::<Result<_, _>>().unwrap();
    arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap()
}

/// Events spanning three hours at 2 events/s.
fn events() -> Vec<String> {
    Generator::new(Config {
        seed: 11,
        rate: 2.0,
        ..Config::default()
    })
    .take(20_000)
    .map(|e| e.to_json())
    .collect()
}

#[tokio::test]
async fn round_trip_partition_by_partition() {
    for compression in [
        Compression::Zstd,
        Compression::Snappy,
        Compression::Gzip,
        Compression::Lz4,
        Compression::None,
    ] {
        let dir = temp_dir(compression.as_str());
        let storage = Arc::new(LocalStorage::new(&dir));
        let writer = Writer::new(
            storage.clone(),
            ParquetOptions {
                compression,
                ..ParquetOptions::default()
            },
        );
        let lines = events();
        let events: Vec<Event<'_>> = lines
            .iter()
            .map(|l| Event::decode(l.as_bytes()).unwrap())
            .collect();
        let name = BatchName::new("1763596800000-0", "1763596810000-7").unwrap();
        let committed = writer.write(&name, &events).await.unwrap();
        assert_eq!(committed.rows(), events.len());

        // Expected: the events of each partition, converted on their own.
        let mut expected: BTreeMap<PartitionKey, Vec<Event<'_>>> = BTreeMap::new();
        for e in &events {
            expected.entry(e.partition()).or_default().push(e.clone());
        }
        let listed = storage.list("").await.unwrap();
        assert_eq!(listed.len(), expected.len(), "one file per partition");
        assert!(
            expected
                .keys()
                .any(|k| k.hour.hour != expected.keys().next().unwrap().hour.hour),
            "spans hours"
        );
        for (key, events) in &expected {
            let path = format!("{}/1763596800000-0_1763596810000-7.parquet", key.path());
            let h = key.hour;
            assert_eq!(
                path,
                format!(
                    "{}/year={:04}/month={:02}/day={:02}/hour={:02}/1763596800000-0_1763596810000-7.parquet",
                    key.table.name(),
                    h.year,
                    h.month,
                    h.day,
                    h.hour
                )
            );
            assert!(dir.join(&path).is_file(), "{path}");
            let read = read_back(storage.get(&path).await.unwrap());
            let want = record_batches(events).unwrap();
            assert_eq!(want.len(), 1);
            assert_eq!(read, want[0].1, "{path}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[tokio::test]
async fn writing_the_same_batch_again_replaces_its_files() {
    let dir = temp_dir("rewrite");
    let storage = Arc::new(LocalStorage::new(&dir));
    let writer = Writer::new(storage.clone(), ParquetOptions::default());
    let lines = events();
    let events: Vec<Event<'_>> = lines
        .iter()
        .map(|l| Event::decode(l.as_bytes()).unwrap())
        .collect();
    let name = BatchName::new("1-0", "9-0").unwrap();
    let first = writer.write(&name, &events).await.unwrap();
    let listed_once = storage.list("").await.unwrap();
    let second = writer.write(&name, &events).await.unwrap();
    assert_eq!(first, second);
    assert_eq!(storage.list("").await.unwrap(), listed_once);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn batch_names_refuse_path_tricks() {
    assert!(BatchName::new("../x", "1").is_err());
    assert!(BatchName::new("a/b", "1").is_err());
    assert!(BatchName::new("", "1").is_err());
    assert!(BatchName::new(".hidden", "1").is_err());
    assert_eq!(
        BatchName::new("1-0", "2-5").unwrap().file_name(),
        "1-0_2-5.parquet"
    );
}
