//! Compaction against a real local directory and a real S3-compatible server: every event
//! exactly once, sorted, in files of about the target size; re-runs converge.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use arrow_array::RecordBatch;
use firehose_core::{Event, EventKey, HOUR_US, Hour, PartitionKey, Payload, record_batches};
use firehose_sink::{
    BatchName, CompactOptions, Compacted, LocalStorage, ParquetOptions, Progress, Storage, Writer,
    compact, partition_of,
};
use firehose_synth::{Config, Generator};

use crate::{read_back, temp_dir};

/// 9,000 events at 1.5 per second: a little under two hours, so two or three hour
/// partitions per table.
fn generated() -> Vec<Event<'static>> {
    Generator::new(Config {
        seed: 21,
        rate: 1.5,
        ..Config::default()
    })
    .take(9000)
    .collect()
}

/// A deterministic shuffle (the writer keeps arrival order, which is not time order).
fn shuffled<T>(mut items: Vec<T>, seed: u64) -> Vec<T> {
    let mut x = seed | 1;
    for i in (1..items.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        items.swap(i, (x % (i as u64 + 1)) as usize);
    }
    items
}

/// What the dataset must hold once compacted: per partition, the events sorted by
/// `(time_us, did, collection, rkey, rev)`, each event key once (its earliest copy).
fn expected(events: &[Event<'static>]) -> BTreeMap<PartitionKey, RecordBatch> {
    fn sort_key<'e>(
        e: &'e Event<'_>,
    ) -> (
        i64,
        &'e str,
        Option<&'e str>,
        Option<&'e str>,
        Option<&'e str>,
    ) {
        let c = e.commit();
        (
            e.time_us,
            &e.did,
            c.map(|c| &*c.collection),
            c.map(|c| &*c.rkey),
            c.map(|c| &*c.rev),
        )
    }
    let mut by_partition: BTreeMap<PartitionKey, Vec<&Event<'static>>> = BTreeMap::new();
    for e in events {
        by_partition.entry(e.partition()).or_default().push(e);
    }
    by_partition
        .into_iter()
        .map(|(key, mut events)| {
            events.sort_by(|a, b| sort_key(a).cmp(&sort_key(b)));
            let mut seen: HashSet<EventKey<'_>> = HashSet::new();
            let unique: Vec<Event<'static>> = events
                .into_iter()
                .filter(|e| seen.insert(e.key()))
                .cloned()
                .collect();
            let mut batches = record_batches(&unique).unwrap();
            assert_eq!(batches.len(), 1);
            (key, batches.remove(0).1)
        })
        .collect()
}

/// The dataset, partition by partition, each partition's files read in name order.
async fn dataset(storage: &dyn Storage) -> BTreeMap<PartitionKey, (Vec<String>, RecordBatch)> {
    let mut files: BTreeMap<PartitionKey, Vec<String>> = BTreeMap::new();
    for object in storage.list("").await.unwrap() {
        let key = partition_of(&object.path).unwrap();
        files.entry(key).or_default().push(object.path);
    }
    let mut out = BTreeMap::new();
    for (key, paths) in files {
        let mut batches = Vec::new();
        for path in &paths {
            batches.push(read_back(storage.get(path).await.unwrap()));
        }
        let batch = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
        out.insert(key, (paths, batch));
    }
    out
}

/// Writes `events` in shuffled batches of 500 (about ten files per partition), a second copy
/// of two batches under other names, and copies of 200 commits that a replay from another
/// Jetstream host delivered two seconds later. Returns everything written.
async fn write_with_duplicates(
    writer: &Writer,
    events: &[Event<'static>],
) -> (Vec<Event<'static>>, Vec<(BatchName, Vec<Event<'static>>)>) {
    let mut batches: Vec<(BatchName, Vec<Event<'static>>)> = Vec::new();
    for (i, chunk) in events.chunks(500).enumerate() {
        let name = BatchName::new(&format!("{i}-0"), &format!("{i}-499")).unwrap();
        batches.push((name, shuffled(chunk.to_vec(), i as u64 + 7)));
    }
    for i in [3, 4] {
        let name = BatchName::new(&format!("again{i}-0"), "x").unwrap();
        batches.push((name, batches[i].1.clone()));
    }
    let replayed: Vec<Event<'static>> = events[6000..]
        .iter()
        .filter(|e| matches!(e.payload, Payload::Commit(_)))
        .take(200)
        .map(|e| Event {
            time_us: e.time_us + 2_000_000,
            ..e.clone()
        })
        .collect();
    batches.push((BatchName::new("replay-0", "replay-1").unwrap(), replayed));
    let mut all = Vec::new();
    for (name, events) in &batches {
        writer.write(name, events).await.unwrap();
        all.extend(events.iter().cloned());
    }
    (all, batches)
}

fn small_files() -> CompactOptions {
    CompactOptions {
        // About four outputs in the larger partitions, and several slices each.
        target_size: 40_000,
        slice_bytes: 30_000,
        ..CompactOptions::default()
    }
}

/// The whole story on one storage: compact, check, compact again (nothing to do), then
/// simulate a crash during deletion (inputs back beside their outputs) and a crash during
/// output writing (an extra stale output), and check each re-run converges.
async fn compaction_converges(storage: Arc<dyn Storage>) {
    let writer = Writer::new(storage.clone(), ParquetOptions::default());
    let events = generated();
    let (written, batches) = write_with_duplicates(&writer, &events).await;
    let want = expected(&written);
    let files_before = storage.list("").await.unwrap();
    let partitions = want.len();
    assert!(partitions >= 10, "several tables and hours: {partitions}");
    let mut stored = Vec::new();
    let mut started = 0;
    let done = compact(storage.as_ref(), i64::MAX, &small_files(), |p| match p {
        Progress::Started { index, total, .. } => {
            started += 1;
            assert_eq!((index, total), (started, partitions));
        }
        Progress::Stored { path, .. } => stored.push(path.to_owned()),
        _ => {}
    })
    .await
    .unwrap();
    let rows_want: usize = want.values().map(RecordBatch::num_rows).sum();
    assert_eq!(done.partitions, partitions);
    assert_eq!(done.files_in, files_before.len());
    assert_eq!(done.rows_in, written.len() as u64);
    assert_eq!(done.rows_out, rows_want as u64);
    assert_eq!(done.duplicates, (written.len() - rows_want) as u64);
    // Two batches of 500 again, and 200 replayed commits.
    assert!(done.duplicates >= 1000, "{}", done.duplicates);
    assert_eq!(done.files_out, stored.len());
    assert!(
        done.files_out > partitions,
        "large partitions split into several files"
    );

    let check = |got: BTreeMap<PartitionKey, (Vec<String>, RecordBatch)>| {
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>()
        );
        for (key, (paths, batch)) in &got {
            assert_eq!(batch, &want[key], "{}", key.path());
            let hash = |p: &String| p.rsplit('/').next().unwrap()[..24].to_owned();
            assert!(
                paths
                    .iter()
                    .all(|p| hash(p) == hash(&paths[0]) && hash(p).starts_with("compact-")),
                "{paths:?}"
            );
        }
    };
    check(dataset(storage.as_ref()).await);
    let compacted_listing = storage.list("").await.unwrap();
    assert_eq!(
        compacted_listing
            .iter()
            .map(|o| &o.path)
            .collect::<Vec<_>>(),
        {
            let mut s: Vec<_> = stored.iter().collect();
            s.sort();
            s
        }
    );

    // Again: nothing to do.
    let again = compact(storage.as_ref(), i64::MAX, &small_files(), |_| {})
        .await
        .unwrap();
    assert_eq!(
        again,
        Compacted {
            already_compact: partitions,
            ..Compacted::default()
        }
    );
    assert_eq!(storage.list("").await.unwrap(), compacted_listing);

    // A crash while deleting the inputs: some inputs are still there beside the outputs.
    for (name, events) in &batches[..4] {
        writer.write(name, events).await.unwrap();
    }
    let rerun = compact(storage.as_ref(), i64::MAX, &small_files(), |_| {})
        .await
        .unwrap();
    assert!(rerun.partitions > 0 && rerun.duplicates > 0);
    check(dataset(storage.as_ref()).await);

    // A crash while writing outputs: a stale output of another input set beside the inputs.
    let some = storage.list("").await.unwrap()[0].clone();
    let (dir, _) = some.path.rsplit_once('/').unwrap();
    let stale = format!("{dir}/compact-0123456789abcdef-0000.parquet");
    storage
        .put(&stale, storage.get(&some.path).await.unwrap())
        .await
        .unwrap();
    let rerun = compact(storage.as_ref(), i64::MAX, &small_files(), |_| {})
        .await
        .unwrap();
    assert_eq!(rerun.partitions, 1);
    check(dataset(storage.as_ref()).await);
}

#[tokio::test]
async fn local_compaction_keeps_each_event_once_and_converges() {
    let dir = temp_dir("compact");
    compaction_converges(Arc::new(LocalStorage::new(&dir))).await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[cfg(feature = "s3")]
#[tokio::test]
async fn s3_compaction_keeps_each_event_once_and_converges() {
    let Some(server) = crate::s3::server() else {
        return;
    };
    compaction_converges(Arc::new(crate::s3::storage(&server, |_| {}).await)).await;
}

#[tokio::test]
async fn open_hours_and_foreign_files_are_left_alone() {
    let dir = temp_dir("compact-open");
    let storage = Arc::new(LocalStorage::new(&dir));
    let writer = Writer::new(storage.clone(), ParquetOptions::default());
    let events = generated();
    for (i, chunk) in events.chunks(3000).enumerate() {
        let name = BatchName::new(&i.to_string(), "z").unwrap();
        writer.write(&name, chunk).await.unwrap();
    }
    storage
        .put(
            "likes/year=2026/month=11/day=20/hour=00/notes.txt",
            bytes::Bytes::from_static(b"not parquet"),
        )
        .await
        .unwrap();
    storage
        .put("README", bytes::Bytes::from_static(b"outside"))
        .await
        .unwrap();
    let first = Hour::of(events[0].time_us);
    // The first hour is closed, the others are not.
    let cutoff = first.start_us() + HOUR_US + 60_000_000;
    let dry = compact(
        storage.as_ref(),
        cutoff,
        &CompactOptions {
            dry_run: true,
            ..CompactOptions::default()
        },
        |_| {},
    )
    .await
    .unwrap();
    let listing = storage.list("").await.unwrap();
    let done = compact(storage.as_ref(), cutoff, &CompactOptions::default(), |_| {})
        .await
        .unwrap();
    assert!(done.partitions > 0 && done.open > 0);
    assert_eq!(
        (dry.partitions, dry.open, dry.files_in, dry.bytes_in),
        (done.partitions, done.open, done.files_in, done.bytes_in),
    );
    assert_eq!((dry.files_out, dry.rows_out), (0, 0));
    let after = storage.list("").await.unwrap();
    for object in &listing {
        let key = partition_of(&object.path);
        let in_first_hour = key.is_some_and(|k| k.hour == first);
        let is_parquet = object.path.ends_with(".parquet");
        assert_eq!(
            after.contains(object),
            !(in_first_hour && is_parquet),
            "{}",
            object.path
        );
    }
    assert!(
        after
            .iter()
            .filter(|o| partition_of(&o.path).is_some_and(|k| k.hour == first))
            .filter(|o| o.path.ends_with(".parquet"))
            .all(|o| o.path.contains("/compact-"))
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

// See: issue 16 (compaction used one core whatever the machine had).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_compaction_writes_the_same_files_as_one_thread() {
    let events = generated();
    let mut datasets = Vec::new();
    // One at a time; four at once; four allowed but a budget that lets one through at a time.
    for (name, threads, memory_budget) in [
        ("one", 1, u64::MAX),
        ("four", 4, u64::MAX),
        ("budget", 4, 1),
    ] {
        let dir = temp_dir(&format!("compact-parallel-{name}"));
        let storage: Arc<dyn Storage> = Arc::new(LocalStorage::new(&dir));
        let writer = Writer::new(storage.clone(), ParquetOptions::default());
        let (written, _) = write_with_duplicates(&writer, &events).await;
        let options = CompactOptions {
            threads,
            memory_budget,
            ..small_files()
        };
        let (mut running, mut most) = (0usize, 0usize);
        let mut reads: Vec<String> = Vec::new();
        let done = compact(storage.as_ref(), i64::MAX, &options, |p| match p {
            Progress::Started { .. } => {
                running += 1;
                most = most.max(running);
            }
            Progress::Read { partition, .. } => reads.push(partition.to_owned()),
            Progress::Finished(_) => running -= 1,
            _ => {}
        })
        .await
        .unwrap();
        assert_eq!(done.rows_in, written.len() as u64);
        // Partitions whose reading interleaves: they worked at the same time.
        reads.dedup();
        let mut distinct = reads.clone();
        distinct.sort();
        distinct.dedup();
        let interleaved = reads.len() > distinct.len();
        match (threads, memory_budget) {
            // One thread: one partition reads, sorts and encodes at a time; the next may start
            // while the one before stores its output (its slot is free, its memory reserved).
            (1, _) => assert!(!interleaved, "{name}: one partition working at a time"),
            // The budget lets one partition through at a time, storing included.
            (_, 1) => assert_eq!(most, 1, "{name}: one partition at a time"),
            _ => assert!(
                most > 1 && interleaved,
                "{name}: partitions ran at once ({most}), their reads interleaved"
            ),
        }
        let mut files = Vec::new();
        for object in storage.list("").await.unwrap() {
            let data = storage.get(&object.path).await.unwrap();
            files.push((object.path, data));
        }
        datasets.push((done, files));
        std::fs::remove_dir_all(&dir).unwrap();
    }
    let (first, rest) = datasets.split_first().unwrap();
    for other in rest {
        assert_eq!(other.0, first.0, "the same report");
        assert_eq!(other.1, first.1, "the same files, byte for byte");
    }
}
