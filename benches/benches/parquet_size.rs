//! Parquet size as a share of the JSON, for the encoding choices the sink could make.
//!
//! `cargo bench -p firehose-benches --bench parquet_size [-- EVENTS]` (200,000 generated
//! events by default) prints one line per variant: bytes of Parquet, their share of the
//! JSON, and the encoding speed on one thread. Each variant writes what `firehose import`
//! writes (one file per partition per chunk of events), changing one thing.
#![allow(clippy::expect_used)] // A benchmark: a failure must stop it, loudly.

use std::collections::BTreeMap;
use std::time::Instant;

use arrow::compute::{SortColumn, lexsort_to_indices, take_record_batch};
use arrow_array::RecordBatch;
use firehose_core::{BatchBuilder, Event, PartitionKey};
use firehose_sink::{Compression, ParquetOptions};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Columns holding CIDs or other random identifiers: nothing repeats within a file, so a
/// dictionary only costs time.
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
}

struct Variant {
    name: String,
    chunk: usize,
    order: Order,
    properties: WriterProperties,
}

fn options(level: i32) -> ParquetOptions {
    ParquetOptions {
        compression: Compression::Zstd,
        zstd_level: level,
        // The parquet crate's default, as the sink had before.
        dictionary_page_size_limit: 1 << 20,
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

fn sorted_by_did(batch: &RecordBatch) -> RecordBatch {
    let column = |name: &str| SortColumn {
        values: batch.column_by_name(name).expect("envelope column").clone(),
        options: None,
    };
    let order = lexsort_to_indices(&[column("did"), column("time_us")], None).expect("sortable");
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
                    Order::Did => sorted_by_did(&batch),
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

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200_000);
    let lines = firehose_synth::json_corpus(5, n);
    let json: u64 = lines.iter().map(|l| l.len() as u64 + 1).sum();
    let events: Vec<Event<'_>> = lines
        .iter()
        .map(|l| Event::decode(l.as_bytes()).expect("generated events decode"))
        .collect();
    let file = 100_000;
    let mut variants = vec![Variant {
        name: "zstd(3), 100K-event files (the default before)".into(),
        chunk: file,
        order: Order::Arrival,
        properties: props(3),
    }];
    for level in [1, 6, 9, 12] {
        variants.push(Variant {
            name: format!("zstd({level})"),
            chunk: file,
            order: Order::Arrival,
            properties: props(level),
        });
    }
    variants.push(Variant {
        name: "zstd(3), no dictionary for CID columns".into(),
        chunk: file,
        order: Order::Arrival,
        properties: without_random_dictionaries(props(3)),
    });
    variants.push(Variant {
        name: "zstd(3), 8 MiB pages and dictionaries".into(),
        chunk: file,
        order: Order::Arrival,
        properties: props(3)
            .into_builder()
            .set_data_page_size_limit(8 << 20)
            .set_dictionary_page_size_limit(8 << 20)
            .build(),
    });
    variants.push(Variant {
        name: "zstd(3), no dictionary for did".into(),
        chunk: file,
        order: Order::Arrival,
        properties: props(3)
            .into_builder()
            .set_column_dictionary_enabled(ColumnPath::from("did"), false)
            .build(),
    });
    variants.push(Variant {
        name: "zstd(3), rows sorted by did".into(),
        chunk: file,
        order: Order::Did,
        properties: props(3),
    });
    variants.push(Variant {
        name: "zstd(3), one file per partition (compacted)".into(),
        chunk: n,
        order: Order::Arrival,
        properties: props(3),
    });
    variants.push(Variant {
        name: "zstd(9), 8 MiB pages and dictionaries, one file per partition".into(),
        chunk: n,
        order: Order::Arrival,
        properties: props(9)
            .into_builder()
            .set_data_page_size_limit(8 << 20)
            .set_dictionary_page_size_limit(8 << 20)
            .build(),
    });
    variants.push(Variant {
        name: "zstd(1), 8 MiB dictionaries".into(),
        chunk: file,
        order: Order::Arrival,
        properties: props(1)
            .into_builder()
            .set_dictionary_page_size_limit(8 << 20)
            .build(),
    });
    variants.push(Variant {
        name: "zstd(9), one file per partition".into(),
        chunk: n,
        order: Order::Arrival,
        properties: props(9),
    });
    variants.push(Variant {
        name: "zstd(9), 8 MiB dictionaries, one file per partition".into(),
        chunk: n,
        order: Order::Arrival,
        properties: props(9)
            .into_builder()
            .set_dictionary_page_size_limit(8 << 20)
            .build(),
    });
    // Once untimed, so the first variant's speed does not include warming up the allocator.
    encode_all(&events, &variants[0]);
    println!(
        "{n} generated events, {json} bytes of JSON; Parquet written as `firehose import` does, one change per line\n"
    );
    println!("| variant | Parquet bytes | share of JSON | encode events/s |");
    println!("|---|---|---|---|");
    let mut largest = Vec::new();
    for (i, v) in variants.iter().enumerate() {
        let started = Instant::now();
        let (bytes, columns) = encode_all(&events, v);
        if i == 0 {
            largest = columns.into_iter().collect();
            largest.sort_by_key(|(_, size)| -size);
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "| {} | {bytes} | {:.1}% | {:.0} |",
            v.name,
            100.0 * bytes as f64 / json as f64,
            n as f64 / secs
        );
    }
    println!("\nThe largest columns of the first variant (compressed bytes):\n");
    for (column, size) in largest.iter().take(15) {
        println!("  {column:<28} {size:>10}");
    }
}
