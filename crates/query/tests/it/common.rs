//! A generated dataset with duplicates written on purpose, and the answers computed from the
//! generated events.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use firehose_core::{Event, HOUR_US, Hour, Operation, Payload, Record, Table};
use firehose_query::Rows;
use firehose_sink::{BatchName, LocalStorage, ParquetOptions, Storage, Writer};
use firehose_synth::{Config, Generator};

/// 2026-11-20T00:00:00Z, the generator's default start.
pub(crate) const START_US: i64 = 1_763_596_800_000_000 + 365 * 86_400_000_000;

/// Events of about two and a third days (0.12 per second).
pub(crate) fn generated(n: usize, seed: u64) -> Vec<Event<'static>> {
    Generator::new(Config {
        seed,
        rate: 0.12,
        start_time_us: START_US,
        ..Config::default()
    })
    .take(n)
    .collect()
}

/// Writes `events` in batches of 3,000, then writes again, under other file names, what a
/// Jetstream replay would deliver twice: two overlapping ranges, and a few commits delivered
/// again by another host (same key, `time_us` one second later, same hour).
pub(crate) async fn write_with_duplicates(storage: Arc<dyn Storage>, events: &[Event<'static>]) {
    let writer = Writer::new(storage, ParquetOptions::default());
    for (i, chunk) in events.chunks(3000).enumerate() {
        let name = BatchName::new(&format!("b{i:03}"), "first").unwrap();
        writer.write(&name, chunk).await.unwrap();
    }
    let replay1 = &events[2900..3100];
    let middle = events.len() / 2;
    let replay2 = &events[middle..middle + 50];
    writer
        .write(&BatchName::new("replay", "2900-3100").unwrap(), replay1)
        .await
        .unwrap();
    writer
        .write(&BatchName::new("replay", "middle").unwrap(), replay2)
        .await
        .unwrap();
    let failover: Vec<Event<'static>> = events
        .iter()
        .filter(|e| {
            matches!(e.payload, Payload::Commit(_))
                && Hour::of(e.time_us) == Hour::of(e.time_us + 1_000_000)
        })
        .step_by(97)
        .take(40)
        .map(|e| Event {
            time_us: e.time_us + 1_000_000,
            ..e.clone()
        })
        .collect();
    assert!(failover.len() >= 20);
    writer
        .write(&BatchName::new("failover", "host2").unwrap(), &failover)
        .await
        .unwrap();
}

/// A local dataset in a fresh directory, with duplicates.
pub(crate) async fn local_dataset(name: &str, events: &[Event<'static>]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("firehose-query-it-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    write_with_duplicates(Arc::new(LocalStorage::new(&dir)), events).await;
    dir
}

/// Every `.parquet` file under `dir`, relative to it.
pub(crate) fn parquet_files(dir: &Path) -> BTreeSet<String> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, root, out);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                out.insert(path.strip_prefix(root).unwrap().to_string_lossy().into());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

/// The collection an event is counted under (`identity`, `account` for those kinds).
pub(crate) fn collection(e: &Event<'_>) -> String {
    match &e.payload {
        Payload::Commit(c) => c.collection.to_string(),
        Payload::Identity(_) => "identity".into(),
        Payload::Account(_) => "account".into(),
    }
}

pub(crate) fn operation(e: &Event<'_>) -> Option<Operation> {
    e.commit().map(|c| c.operation)
}

/// A created post in the posts table: (uri, did, time_us, text, langs, is_reply).
#[derive(Debug, Clone)]
pub(crate) struct PostRow {
    pub(crate) uri: String,
    pub(crate) did: String,
    pub(crate) time_us: i64,
    pub(crate) text: Option<String>,
    pub(crate) langs: Vec<String>,
    pub(crate) is_reply: bool,
}

pub(crate) fn created_posts(events: &[Event<'_>]) -> Vec<PostRow> {
    events
        .iter()
        .filter(|e| e.table() == Table::Posts)
        .filter_map(|e| {
            let c = e.commit()?;
            if c.operation != Operation::Create {
                return None;
            }
            let Some(Record::Post(p)) = &c.record else {
                return None;
            };
            Some(PostRow {
                uri: format!("at://{}/app.bsky.feed.post/{}", e.did, c.rkey),
                did: e.did.to_string(),
                time_us: e.time_us,
                text: p.text.as_ref().map(|t| t.to_string()),
                langs: p.langs.iter().flatten().map(|l| l.to_string()).collect(),
                is_reply: p.reply.is_some(),
            })
        })
        .collect()
}

/// Newest first, then did, then rkey (the facade's order), as URIs.
pub(crate) fn newest_first(mut posts: Vec<PostRow>, limit: usize) -> Vec<String> {
    posts.sort_by(|a, b| {
        b.time_us
            .cmp(&a.time_us)
            .then_with(|| a.did.cmp(&b.did))
            .then_with(|| a.uri.cmp(&b.uri))
    });
    posts.into_iter().take(limit).map(|p| p.uri).collect()
}

/// Counts of like (or repost) creates per subject in `[start, end)`.
pub(crate) fn engagement_counts(
    events: &[Event<'_>],
    table: Table,
    start: i64,
    end: i64,
) -> BTreeMap<String, i64> {
    let mut counts = BTreeMap::new();
    for e in events {
        if e.table() != table || e.time_us < start || e.time_us >= end {
            continue;
        }
        let Some(c) = e.commit() else { continue };
        if c.operation != Operation::Create {
            continue;
        }
        if let Some(Record::Like(r) | Record::Repost(r)) = &c.record {
            *counts.entry(r.subject.uri.to_string()).or_insert(0) += 1;
        }
    }
    counts
}

/// Events per (hour start, collection).
pub(crate) fn per_hour(events: &[Event<'_>], start: i64, end: i64) -> BTreeMap<(i64, String), i64> {
    let mut m = BTreeMap::new();
    for e in events
        .iter()
        .filter(|e| e.time_us >= start && e.time_us < end)
    {
        let hour = e.time_us.div_euclid(HOUR_US) * HOUR_US;
        *m.entry((hour, collection(e))).or_insert(0) += 1;
    }
    m
}

/// The events once each (by event key), as a reader should see them.
pub(crate) fn unique(events: &[Event<'static>]) -> Vec<Event<'static>> {
    let mut seen = HashSet::new();
    events
        .iter()
        .filter(|e| seen.insert(format!("{:?}", e.key())))
        .cloned()
        .collect()
}

// ---- Reading results -------------------------------------------------------------------------

fn column<'a>(rows: &'a Rows, name: &str) -> Vec<&'a dyn Array> {
    let i = rows.schema.index_of(name).unwrap();
    rows.batches.iter().map(|b| b.column(i).as_ref()).collect()
}

/// A string column (Utf8 or Utf8View) as Rust strings.
pub(crate) fn strings(rows: &Rows, name: &str) -> Vec<Option<String>> {
    let mut out = Vec::new();
    for a in column(rows, name) {
        match a.data_type() {
            DataType::Utf8 => out.extend(a.as_string::<i32>().iter().map(|s| s.map(String::from))),
            DataType::LargeUtf8 => {
                out.extend(a.as_string::<i64>().iter().map(|s| s.map(String::from)))
            }
            DataType::Utf8View => {
                out.extend(a.as_string_view().iter().map(|s| s.map(String::from)))
            }
            other => panic!("{name} is {other}"),
        }
    }
    out
}

pub(crate) fn string_values(rows: &Rows, name: &str) -> Vec<String> {
    strings(rows, name)
        .into_iter()
        .map(|s| s.unwrap())
        .collect()
}

pub(crate) fn ints(rows: &Rows, name: &str) -> Vec<i64> {
    let mut out = Vec::new();
    for a in column(rows, name) {
        let a = datafusion::arrow::compute::cast(a, &DataType::Int64).unwrap();
        out.extend(a.as_primitive::<Int64Type>().iter().map(|v| v.unwrap()));
    }
    out
}

pub(crate) fn floats(rows: &Rows, name: &str) -> Vec<f64> {
    let mut out = Vec::new();
    for a in column(rows, name) {
        out.extend(a.as_primitive::<Float64Type>().iter().map(|v| v.unwrap()));
    }
    out
}

/// Timestamps as microseconds.
pub(crate) fn micros(rows: &Rows, name: &str) -> Vec<i64> {
    let mut out = Vec::new();
    for a in column(rows, name) {
        let a = datafusion::arrow::compute::cast(a, &DataType::Int64).unwrap();
        out.extend(a.as_primitive::<Int64Type>().iter().map(|v| v.unwrap()));
    }
    out
}

/// Any column as display strings (for messages).
pub(crate) fn shown(batches: &[RecordBatch]) -> String {
    let mut s = String::new();
    for b in batches {
        for i in 0..b.num_rows() {
            let cells: Vec<String> = b
                .columns()
                .iter()
                .map(|c| {
                    ArrayFormatter::try_new(c.as_ref(), &FormatOptions::default())
                        .unwrap()
                        .value(i)
                        .to_string()
                })
                .collect();
            s.push_str(&cells.join(" | "));
            s.push('\n');
        }
    }
    s
}
