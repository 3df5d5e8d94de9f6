//! A dataset partly compacted: compacted partitions are read without de-duplication, the
//! others (and a compacted partition a late file was added to) still de-duplicated, and every
//! answer stays exact.

use std::sync::Arc;

use firehose_core::{HOUR_US, Hour, Table};
use firehose_query::{Dataset, QueryOptions};
use firehose_sink::{BatchName, CompactOptions, LocalStorage, ParquetOptions, Writer, compact};

use crate::answers::check_all;
use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacted_partitions_skip_dedup_and_answers_stay_exact() {
    let mut events = generated(24_000, 14);
    let dir = local_dataset("compacted", &events).await;
    let storage = Arc::new(LocalStorage::new(&dir));
    // Compact the hours before 2026-11-21T12: about half the dataset, duplicates included
    // (the replays are at the start and in the middle).
    let cut = Hour::of(START_US).start_us() + 36 * HOUR_US;
    let done = compact(storage.as_ref(), cut, &CompactOptions::default(), |_| {})
        .await
        .unwrap();
    assert!(done.partitions > 20 && done.duplicates > 0, "{done:?}");
    assert!(done.open > 20, "{done:?}");

    // A late delivery of posts into a compacted hour: that partition is de-duplicated again.
    let late: Vec<_> = events
        .iter()
        .filter(|e| {
            e.table() == Table::Posts && Hour::of(e.time_us) == Hour::of(START_US + 30 * HOUR_US)
        })
        .take(10)
        .cloned()
        .collect();
    assert!(late.len() >= 5, "{}", late.len());
    Writer::new(storage, ParquetOptions::default())
        .write(&BatchName::new("late", "replay").unwrap(), &late)
        .await
        .unwrap();
    events.extend(late);

    let ds = Dataset::open_local(&dir, QueryOptions::default())
        .await
        .unwrap();
    check_all(&ds, &events).await;

    let count = |sql: &'static str| {
        let ds = ds.clone();
        async move { ints(&ds.sql(sql).await.unwrap(), "n")[0] }
    };
    assert_eq!(
        count("SELECT count(*) AS n FROM events").await,
        unique(&events).len() as i64
    );

    // The plan: a day wholly compacted is read without DedupExec; the day with raw
    // partitions, or with the late file, with it.
    let explain = |sql: &str| {
        let ds = ds.clone();
        let sql = format!("EXPLAIN {sql}");
        async move { shown(&ds.sql(&sql).await.unwrap().batches) }
    };
    let compacted_day =
        explain("SELECT count(*) FROM posts WHERE year = '2026' AND month = '11' AND day = '20'")
            .await;
    assert!(!compacted_day.contains("DedupExec"), "{compacted_day}");
    let late_hour = explain(
        "SELECT count(*) FROM posts WHERE year = '2026' AND month = '11' AND day = '21' AND hour = '06'",
    )
    .await;
    assert!(late_hour.contains("DedupExec"), "{late_hour}");
    let raw_hour = explain(
        "SELECT count(*) FROM posts WHERE year = '2026' AND month = '11' AND day = '21' AND hour = '20'",
    )
    .await;
    assert!(raw_hour.contains("DedupExec"), "{raw_hour}");
    std::fs::remove_dir_all(&dir).unwrap();
}
