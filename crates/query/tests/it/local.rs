//! The answers on local disk, duplicates included; an empty dataset.

use firehose_query::{Dataset, QueryOptions, TimeRange};

use crate::answers::check_all;
use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_answers_exactly_on_local_disk() {
    let events = generated(24_000, 11);
    let dir = local_dataset("answers", &events).await;
    let ds = Dataset::open(dir.to_str().unwrap(), QueryOptions::default())
        .await
        .unwrap();
    check_all(&ds, &events).await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn duplicates_show_without_dedup_and_not_with_it() {
    let events = generated(12_000, 12);
    let dir = local_dataset("dups", &events).await;
    let count = |ds: Dataset| async move {
        let rows = ds.sql("SELECT count(*) AS n FROM events").await.unwrap();
        ints(&rows, "n")[0]
    };
    let raw = Dataset::open_local(
        &dir,
        QueryOptions {
            dedup: false,
            ..QueryOptions::default()
        },
    )
    .await
    .unwrap();
    let deduped = Dataset::open_local(&dir, QueryOptions::default())
        .await
        .unwrap();
    let raw = count(raw).await;
    let deduped = count(deduped).await;
    // The same events were written more than once on purpose...
    assert!(raw > events.len() as i64 + 200, "{raw}");
    // ...and are counted once.
    assert_eq!(deduped, events.len() as i64);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_dataset_without_files_is_empty_not_missing() {
    let dir = std::env::temp_dir().join(format!("firehose-query-it-none-{}", std::process::id()));
    let ds = Dataset::open_local(&dir, QueryOptions::default())
        .await
        .unwrap();
    for table in firehose_core::Table::ALL {
        let rows = ds
            .sql(&format!("SELECT count(*) AS n FROM {}", table.name()))
            .await
            .unwrap();
        assert_eq!(ints(&rows, "n"), [0], "{table}");
    }
    let rows = ds.sql("SELECT * FROM posts").await.unwrap();
    assert_eq!(rows.num_rows(), 0);
    for c in [
        "did", "time_us", "text", "langs", "year", "month", "day", "hour",
    ] {
        assert!(rows.schema.index_of(c).is_ok(), "{c}");
    }
    let day = TimeRange::parse_day("2026-11-20").unwrap();
    assert_eq!(ds.daily_stats(day).await.unwrap().num_rows(), 0);
    assert_eq!(ds.events_per_hour(day).await.unwrap().num_rows(), 0);
}

#[tokio::test]
async fn files_written_and_compacted_after_open_are_seen() {
    let events = generated(6_000, 15);
    let (first, second) = events.split_at(3_000);
    let dir = std::env::temp_dir().join(format!("firehose-query-it-live-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let storage = std::sync::Arc::new(firehose_sink::LocalStorage::new(&dir));
    let writer =
        firehose_sink::Writer::new(storage.clone(), firehose_sink::ParquetOptions::default());
    let name = |a: &str| firehose_sink::BatchName::new(a, "live").unwrap();
    writer.write(&name("a"), first).await.unwrap();
    let ds = Dataset::open_local(&dir, QueryOptions::default())
        .await
        .unwrap();
    let count = || async {
        let rows = ds.sql("SELECT count(*) AS n FROM events").await.unwrap();
        ints(&rows, "n")[0]
    };
    assert_eq!(count().await, first.len() as i64);
    // The sink goes on writing: a long-lived dataset (`firehose serve`) sees the new files...
    writer.write(&name("b"), second).await.unwrap();
    assert_eq!(count().await, events.len() as i64);
    // ...and compaction replacing them.
    firehose_sink::compact(
        storage.as_ref(),
        i64::MAX,
        &firehose_sink::CompactOptions::default(),
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(count().await, events.len() as i64);
    std::fs::remove_dir_all(&dir).unwrap();
}
