//! Parquet size as a share of the JSON, for the encoding choices the sink could make.
//!
//! `cargo bench -p firehose-benches --bench parquet_size [-- EVENTS]` (200,000 generated
//! events by default) prints one line per variant: bytes of Parquet, their share of the
//! JSON, and the encoding speed on one thread. Each variant writes what `firehose import`
//! writes (one file per partition per chunk of events), changing one thing.
#![allow(clippy::expect_used)] // A benchmark: a failure must stop it, loudly.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use arrow::compute::{SortColumn, lexsort_to_indices, take_record_batch};
use arrow_array::RecordBatch;
use firehose_core::{BatchBuilder, Event, PartitionKey, Record, Table};
use firehose_sink::{Compression, ParquetOptions};
use parquet::arrow::ArrowWriter;
use parquet::basic::Encoding;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

// The allocator the `firehose` binary uses.
use firehose_allocator as _;

/// Columns holding CIDs (and, last, the JSON of other records): the record's own CID never
/// repeats within a file, those of subjects do when one post gets several likes.
const RANDOM_COLUMNS: [&str; 9] = [
    "cid",
    "subject_cid",
    "via_cid",
    "reply_root_cid",
    "reply_parent_cid",
    "avatar_cid",
    "banner_cid",
    "pinned_post_cid",
    "record_json",
];

#[derive(Clone, Copy, PartialEq)]
enum Order {
    /// As the events arrived (time order, nearly).
    Arrival,
    /// By `did`, then time.
    Did,
    /// Likes and reposts by `subject_uri`, then time (the likes of one post side by side);
    /// other tables as they arrived.
    Subject,
}

struct Variant {
    name: String,
    chunk: usize,
    order: Order,
    properties: WriterProperties,
}

/// The writer's options, at zstd `level`.
fn options(level: i32) -> ParquetOptions {
    ParquetOptions {
        compression: Compression::Zstd,
        zstd_level: level,
        ..ParquetOptions::default()
    }
}

fn props(level: i32) -> WriterProperties {
    options(level).writer_properties().expect("valid options")
}

fn without_random_dictionaries(p: WriterProperties) -> WriterProperties {
    RANDOM_COLUMNS
        .iter()
        .fold(p.into_builder(), |b, c| {
            b.set_column_dictionary_enabled(ColumnPath::from(*c), false)
        })
        .build()
}

fn sorted_by(batch: &RecordBatch, first: &str) -> RecordBatch {
    let column = |name: &str| SortColumn {
        values: batch.column_by_name(name).expect("a column").clone(),
        options: None,
    };
    let order = lexsort_to_indices(&[column(first), column("time_us")], None).expect("sortable");
    take_record_batch(batch, &order).expect("take")
}

/// Encodes `events` as the variant says; returns the bytes of Parquet, and the compressed
/// bytes per `table.column`.
fn encode_all(events: &[Event<'_>], v: &Variant) -> (u64, BTreeMap<String, i64>) {
    let mut total = 0u64;
    let mut columns: BTreeMap<String, i64> = BTreeMap::new();
    for chunk in events.chunks(v.chunk) {
        let mut partitions: BTreeMap<PartitionKey, BatchBuilder> = BTreeMap::new();
        for e in chunk {
            partitions.entry(e.partition()).or_default().push(e);
        }
        for builder in partitions.into_values() {
            for (table, batch) in builder.finish().expect("arrow") {
                let batch = match v.order {
                    Order::Arrival => batch,
                    Order::Did => sorted_by(&batch, "did"),
                    Order::Subject if matches!(table, Table::Likes | Table::Reposts) => {
                        sorted_by(&batch, "subject_uri")
                    }
                    Order::Subject => batch,
                };
                let mut out = Vec::new();
                let mut w =
                    ArrowWriter::try_new(&mut out, batch.schema(), Some(v.properties.clone()))
                        .expect("writer");
                w.write(&batch).expect("write");
                let metadata = w.close().expect("close");
                for row_group in metadata.row_groups() {
                    for column in row_group.columns() {
                        *columns
                            .entry(format!("{}.{}", table.name(), column.column_path()))
                            .or_default() += column.compressed_size();
                    }
                }
                total += out.len() as u64;
            }
        }
    }
    (total, columns)
}

/// Of the likes and reposts in `events` (files of `chunk` events, per partition), how many
/// there are and how many name a subject an earlier one in the same file named: those are
/// the subject URIs and CIDs a dictionary stores once.
fn repeated_subjects(events: &[Event<'_>], chunk: usize) -> (usize, usize) {
    let (mut rows, mut repeated) = (0, 0);
    for chunk in events.chunks(chunk) {
        let mut seen: HashSet<(PartitionKey, &str)> = HashSet::new();
        for e in chunk {
            let subject = match e.commit().and_then(|c| c.record.as_ref()) {
                Some(Record::Like(x) | Record::Repost(x)) => &x.subject.uri,
                _ => continue,
            };
            rows += 1;
            repeated += usize::from(!seen.insert((e.partition(), subject.as_ref())));
        }
    }
    (rows, repeated)
}

fn main() {
    // `-- EVENTS` generates that many events; `-- FILE.jsonl` reads events from a file instead
    // (the lines that decode), e.g. the real capture, to compare with the same number of
    // generated ones.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let file_arg = args.iter().find(|a| a.ends_with(".jsonl"));
    let (source, lines) = match file_arg {
        Some(path) => {
            let text = std::fs::read_to_string(path).expect("the events file");
            let lines: Vec<String> = text
                .lines()
                .filter(|l| Event::decode(l.as_bytes()).is_ok())
                .map(str::to_owned)
                .collect();
            (path.clone(), lines)
        }
        None => {
            let n = args.iter().find_map(|a| a.parse().ok()).unwrap_or(200_000);
            ("generated".to_owned(), firehose_synth::json_corpus(5, n))
        }
    };
    let n = lines.len();
    let json: u64 = lines.iter().map(|l| l.len() as u64 + 1).sum();
    let events: Vec<Event<'_>> = lines
        .iter()
        .map(|l| Event::decode(l.as_bytes()).expect("generated events decode"))
        .collect();
    let mut json_per_table: BTreeMap<&str, u64> = BTreeMap::new();
    for (line, event) in lines.iter().zip(&events) {
        *json_per_table.entry(event.table().name()).or_default() += line.len() as u64 + 1;
    }
    let file = 100_000;
    let variant = |name: &str, chunk: usize, order: Order, properties: WriterProperties| Variant {
        name: name.into(),
        chunk,
        order,
        properties,
    };
    let now = props(1);
    let variants = vec![
        variant(
            "**the writer: zstd(1), 8 MiB dictionaries, none for cid**",
            file,
            Order::Arrival,
            now.clone(),
        ),
        variant("zstd(3)", file, Order::Arrival, props(3)),
        variant("zstd(9)", file, Order::Arrival, props(9)),
        variant(
            "likes and reposts sorted by subject_uri",
            file,
            Order::Subject,
            now.clone(),
        ),
        variant("rows sorted by did", file, Order::Did, now.clone()),
        variant(
            "no dictionary for any CID column",
            file,
            Order::Arrival,
            without_random_dictionaries(now.clone()),
        ),
        variant(
            "a dictionary for the record's cid too (the writer before)",
            file,
            Order::Arrival,
            now.clone()
                .into_builder()
                .set_column_dictionary_enabled(ColumnPath::from("cid"), true)
                .build(),
        ),
        variant(
            "no page statistics for CID columns",
            file,
            Order::Arrival,
            RANDOM_COLUMNS[..8]
                .iter()
                .fold(now.clone().into_builder(), |b, c| {
                    b.set_column_statistics_enabled(ColumnPath::from(*c), EnabledStatistics::Chunk)
                })
                .build(),
        ),
        variant(
            "did and subject_uri: DELTA_BYTE_ARRAY, no dictionary",
            file,
            Order::Arrival,
            ["did", "subject_uri"]
                .iter()
                .fold(now.clone().into_builder(), |b, c| {
                    b.set_column_dictionary_enabled(ColumnPath::from(*c), false)
                        .set_column_encoding(ColumnPath::from(*c), Encoding::DELTA_BYTE_ARRAY)
                })
                .build(),
        ),
        variant(
            "statistics per column chunk only (no page index)",
            file,
            Order::Arrival,
            now.clone()
                .into_builder()
                .set_statistics_enabled(EnabledStatistics::Chunk)
                .build(),
        ),
        variant(
            "one file per partition (compacted)",
            n,
            Order::Arrival,
            now.clone(),
        ),
        variant(
            "one file per partition, likes and reposts sorted by subject_uri",
            n,
            Order::Subject,
            now.clone(),
        ),
        variant(
            "one file per partition, zstd(9)",
            n,
            Order::Arrival,
            props(9),
        ),
    ];
    // Once untimed, so the first variant's speed does not include warming up the allocator.
    encode_all(&events, &variants[0]);
    println!(
        "{n} events ({source}), {json} bytes of JSON; Parquet written as `firehose import` does \
         (files of {file} events), one change per line\n"
    );
    println!("| variant | Parquet bytes | share of JSON | encode events/s |");
    println!("|---|---|---|---|");
    let mut first = BTreeMap::new();
    for (i, v) in variants.iter().enumerate() {
        let started = Instant::now();
        let (bytes, columns) = encode_all(&events, v);
        let secs = started.elapsed().as_secs_f64();
        if i == 0 {
            first = columns;
        }
        println!(
            "| {} | {bytes} | {:.1}% | {:.0} |",
            v.name,
            100.0 * bytes as f64 / json as f64,
            n as f64 / secs
        );
    }
    for chunk in [file, n] {
        let (rows, repeated) = repeated_subjects(&events, chunk);
        println!(
            "\nLikes and reposts whose subject an earlier one in the same file (of {} events) names: {repeated} of {rows} ({:.1}%)",
            chunk.min(n),
            100.0 * repeated as f64 / rows.max(1) as f64
        );
    }
    println!("\nThe writer's files per table (column bytes, compressed, without footers):\n");
    println!("| table | JSON bytes | Parquet bytes | share |");
    println!("|---|---|---|---|");
    let mut per_table: BTreeMap<&str, i64> = BTreeMap::new();
    for (column, size) in &first {
        let table = column.split('.').next().unwrap_or_default();
        if let Some((name, _)) = json_per_table.get_key_value(table) {
            *per_table.entry(name).or_default() += size;
        }
    }
    for (table, bytes) in &json_per_table {
        let parquet = per_table.get(table).copied().unwrap_or(0);
        println!(
            "| {table} | {bytes} | {parquet} | {:.1}% |",
            100.0 * parquet as f64 / *bytes as f64
        );
    }
    // The identifiers no encoding can shrink much: CIDs (hashes), and DIDs and the AT URIs
    // made of them (random base32 strings).
    let of_json = |bytes: i64| 100.0 * bytes as f64 / json as f64;
    let cids: i64 = first
        .iter()
        .filter(|(c, _)| c.ends_with("cid\"") || c.ends_with("cid"))
        .map(|(_, s)| s)
        .sum();
    let ids: i64 = first
        .iter()
        .filter(|(c, _)| {
            ["did\"", "uri\"", "subject\"", "list\""]
                .iter()
                .any(|end| c.ends_with(end))
        })
        .map(|(_, s)| s)
        .sum();
    println!(
        "\nCID columns: {cids} bytes ({:.1}% of the JSON); DID and URI columns: {ids} bytes ({:.1}%)",
        of_json(cids),
        of_json(ids)
    );
    let mut largest: Vec<_> = first.into_iter().collect();
    largest.sort_by_key(|(_, size)| -size);
    let all: i64 = largest.iter().map(|(_, s)| s).sum();
    println!("\nThe writer's largest columns (compressed bytes, share of all column bytes):\n");
    for (column, size) in largest.iter().take(20) {
        println!(
            "  {column:<28} {size:>10}  {:>5.1}%",
            100.0 * *size as f64 / all as f64
        );
    }
}
