//! Files the writer marked duplicate-free are read without de-duplication; a partition holding
//! one unmarked file (an older writer, another tool), or a batch twice (a writer's join cut
//! off), is de-duplicated as before.

use std::sync::Arc;

use firehose_core::{Event, Hour, Table};
use firehose_query::{Dataset, QueryOptions};
use firehose_sink::{BatchName, LocalStorage, ParquetOptions, Storage, Writer};

use crate::answers::check_all;
use crate::common::*;

fn writer(dir: &std::path::Path, duplicate_free: bool) -> Writer {
    Writer::new(
        Arc::new(LocalStorage::new(dir)),
        ParquetOptions {
            duplicate_free,
            ..ParquetOptions::default()
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marked_partitions_skip_dedup_and_unmarked_ones_keep_it() {
    let events = generated(24_000, 21);
    let dir = std::env::temp_dir().join(format!("firehose-it-marked-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let marked = writer(&dir, true);
    for (i, chunk) in events.chunks(3_000).enumerate() {
        let name = BatchName::new(&format!("b{i:03}"), "marked").unwrap();
        marked.write(&name, chunk).await.unwrap();
    }
    let ds = Dataset::open_local(&dir, QueryOptions::default())
        .await
        .unwrap();
    // Every answer is exact on a marked dataset, read without de-duplication.
    check_all(&ds, &events).await;
    let explain = |sql: &'static str| {
        let ds = ds.clone();
        async move { shown(&ds.sql(&format!("EXPLAIN {sql}")).await.unwrap().batches) }
    };
    let plan = explain("SELECT count(*) FROM posts").await;
    assert!(!plan.contains("DedupExec"), "{plan}");

    // The mark is the writer's word, and the facade takes it: the same posts written again
    // in a marked file of their own are counted twice (the writer promised they were not
    // there), which shows the marked partition is not de-duplicated.
    let hour = Hour::of(events[12_000].time_us);
    let posts_of_hour = |events: &[Event<'static>]| -> Vec<Event<'static>> {
        events
            .iter()
            .filter(|e| e.table() == Table::Posts && Hour::of(e.time_us) == hour)
            .cloned()
            .collect()
    };
    let again = posts_of_hour(&events);
    assert!(!again.is_empty());
    marked
        .write(&BatchName::new("lying", "marked").unwrap(), &again)
        .await
        .unwrap();
    let sql = format!(
        "SELECT count(*) AS n FROM posts WHERE time_us >= {} AND time_us < {}",
        hour.start_us(),
        hour.start_us() + firehose_core::HOUR_US
    );
    let fresh = Dataset::open_local(&dir, QueryOptions::default())
        .await
        .unwrap();
    let n = ints(&fresh.sql(&sql).await.unwrap(), "n")[0];
    assert_eq!(n, 2 * again.len() as i64);

    // One unmarked file in the partition: the whole partition is de-duplicated again.
    writer(&dir, false)
        .write(&BatchName::new("older", "unmarked").unwrap(), &again[..1])
        .await
        .unwrap();
    let fresh = Dataset::open_local(&dir, QueryOptions::default())
        .await
        .unwrap();
    let n = ints(&fresh.sql(&sql).await.unwrap(), "n")[0];
    assert_eq!(n, again.len() as i64);
    let plan = shown(&fresh.sql(&format!("EXPLAIN {sql}")).await.unwrap().batches);
    assert!(plan.contains("DedupExec"), "{plan}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A compaction interrupted after storing its outputs leaves them beside its marked inputs:
/// the same events twice, and the partition must be de-duplicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_outputs_beside_their_marked_inputs_are_deduplicated() {
    let events = generated(24_000, 22);
    let base = std::env::temp_dir().join(format!("firehose-it-marked-cut-{}", std::process::id()));
    let (dir, copy) = (base.join("dataset"), base.join("compacted"));
    let _ = std::fs::remove_dir_all(&base);
    for target in [&dir, &copy] {
        let marked = writer(target, true);
        for (i, chunk) in events.chunks(3_000).enumerate() {
            let name = BatchName::new(&format!("b{i:03}"), "marked").unwrap();
            marked.write(&name, chunk).await.unwrap();
        }
    }
    // Compact the copy, then put its outputs for one hour beside the original's inputs.
    let storage = LocalStorage::new(&copy);
    firehose_sink::compact(
        &storage,
        i64::MAX,
        &firehose_sink::CompactOptions::default(),
        |_| {},
    )
    .await
    .unwrap();
    let hour = Hour::of(events[12_000].time_us);
    let partition = firehose_core::PartitionKey {
        table: Table::Posts,
        hour,
    }
    .path();
    let mut copied = 0;
    for entry in std::fs::read_dir(copy.join(&partition)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(&partition).join(entry.file_name())).unwrap();
        copied += 1;
    }
    assert!(copied > 0);
    let ds = Dataset::open_local(&dir, QueryOptions::default())
        .await
        .unwrap();
    let sql = format!(
        "SELECT count(*) AS n FROM posts WHERE time_us >= {} AND time_us < {}",
        hour.start_us(),
        hour.start_us() + firehose_core::HOUR_US
    );
    let posts = events
        .iter()
        .filter(|e| e.table() == Table::Posts && Hour::of(e.time_us) == hour)
        .count();
    assert_eq!(ints(&ds.sql(&sql).await.unwrap(), "n")[0], posts as i64);
    std::fs::remove_dir_all(&base).unwrap();
}

/// A writer joins its marked files of a partition into one (`firehose_sink::merge_files`): the
/// joins are read without de-duplication, and a join cut off before it deleted its inputs
/// (the same batches twice) makes its partition de-duplicated until it is finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writers_joins_are_read_plainly_and_a_cut_off_join_is_deduplicated() {
    let events = generated(24_000, 23);
    let dir = std::env::temp_dir().join(format!("firehose-it-marked-join-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let marked = writer(&dir, true);
    let mut own = firehose_sink::OwnFiles::new(firehose_sink::MergePolicy::default());
    for (i, chunk) in events.chunks(1_000).enumerate() {
        let name = BatchName::new(&format!("b{i:03}"), "marked").unwrap();
        own.add(&marked.write(&name, chunk).await.unwrap().files);
    }
    let storage = LocalStorage::new(&dir);
    let hour = Hour::of(events[12_000].time_us);
    let partition = firehose_core::PartitionKey {
        table: Table::Posts,
        hour,
    }
    .path();
    let mut cut_off = None;
    let jobs = own.due(i64::MAX, true);
    assert!(!jobs.is_empty());
    for job in jobs {
        assert!(job.inputs.len() > 1);
        if job.partition == partition {
            let input = &job.inputs[0].path;
            cut_off = Some((input.clone(), storage.get(input).await.unwrap()));
        }
        firehose_sink::merge_files(&storage, &job, marked.options())
            .await
            .unwrap()
            .unwrap();
    }
    let ds = Dataset::open_local(&dir, QueryOptions::default())
        .await
        .unwrap();
    check_all(&ds, &events).await;
    let plan = shown(
        &ds.sql("EXPLAIN SELECT count(*) FROM posts")
            .await
            .unwrap()
            .batches,
    );
    assert!(!plan.contains("DedupExec"), "{plan}");

    // An input back beside its join: its events are there twice, and are counted once.
    let (path, data) = cut_off.unwrap();
    storage.put(&path, data).await.unwrap();
    let fresh = Dataset::open_local(&dir, QueryOptions::default())
        .await
        .unwrap();
    let sql = format!(
        "SELECT count(*) AS n FROM posts WHERE time_us >= {} AND time_us < {}",
        hour.start_us(),
        hour.start_us() + firehose_core::HOUR_US
    );
    let posts = events
        .iter()
        .filter(|e| e.table() == Table::Posts && Hour::of(e.time_us) == hour)
        .count();
    assert_eq!(ints(&fresh.sql(&sql).await.unwrap(), "n")[0], posts as i64);
    let plan = shown(&fresh.sql(&format!("EXPLAIN {sql}")).await.unwrap().batches);
    assert!(plan.contains("DedupExec"), "{plan}");
    check_all(&fresh, &events).await;
    // Finished, the partition is read plainly again.
    assert_eq!(
        firehose_sink::finish_merges(&storage, &partition)
            .await
            .unwrap(),
        1
    );
    let fresh = Dataset::open_local(&dir, QueryOptions::default())
        .await
        .unwrap();
    let plan = shown(&fresh.sql(&format!("EXPLAIN {sql}")).await.unwrap().batches);
    assert!(!plan.contains("DedupExec"), "{plan}");
    std::fs::remove_dir_all(&dir).unwrap();
}
