//! Query facade over a firehose dataset: DataFusion, with the dataset's layout built in.
//!
//! # Layout
//!
//! - [`Dataset`] opens a dataset (a local directory or `s3://bucket/prefix`) and registers every
//!   [`Table`](firehose_core::Table) with its Hive partition columns (`year, month, day, hour`,
//!   as zero-padded strings, the way the sink names the directories), plus an `events` view over
//!   all tables with the envelope columns. A table with no files yet is empty, not missing.
//! - [`Dataset::sql`] runs read-only SQL: one `SELECT`, `WITH` or `EXPLAIN` statement, checked on
//!   the parsed statement ([`check_read_only`]), under a time limit, a memory limit (DataFusion's
//!   memory pool) and a cap on the rows returned ([`QueryOptions`]).
//! - The typed calls ([`Dataset::posts`], [`Dataset::daily_stats`], [`Dataset::search_posts`],
//!   [`Dataset::events_per_hour`], [`Dataset::top_posts`], [`Dataset::account_activity`]) build
//!   DataFusion expressions from their arguments; no SQL text ever holds user input. A time
//!   range becomes both a `time_us` predicate and partition predicates, so only the files of
//!   the hours in range are opened.
//! - [`output`] writes results as a table for people, CSV, JSON lines, Arrow IPC or Parquet.
//!
//! # Duplicates
//!
//! Jetstream is at-least-once: after a reconnect it replays a few seconds, so until compaction
//! the same event can sit in two files. A key design decision made in this crate is that every
//! table is registered behind a de-duplicating provider. It splits each scan by partition: a
//! partition whose files are exactly the outputs of one compaction (all named
//! `compact-<hash>-<n>.parquet` with one hash, the sink's own test for a finished partition) has
//! no duplicates left and is read as a plain Parquet scan. So is a partition whose every file
//! carries the writer's duplicate-free mark
//! (`firehose.duplicate_free` in the Parquet key-value metadata, which the pipeline's writer
//! sets on the batches its ingest's replay filter vouched for) and no batch is in two of its
//! files (a writer joins its own files of a partition into one that lists the batches it
//! holds, `firehose.merged_from`, and deletes them once the join is stored; a crash in
//! between leaves both): the footers are read once per file and remembered. The other
//! partitions (files written without the mark: an older writer,
//! an import, another tool; an interrupted compaction) are scanned with the query's
//! filters pushed into the scan (so pruning still works, and the filters run before the
//! de-duplication, which is correct because two deliveries of an event carry the same record),
//! then each event key is passed once (`did, rkey, rev` in a collection's own table, plus
//! `collection` in `records`; `did, time_us` for identity and account events). The
//! de-duplication is a streaming filter, not an aggregation: the scan's partitions share one
//! sharded set of 128-bit key hashes (16 bytes a row, counted against the memory limit), so it
//! reads only the key columns to decide, never groups long texts, moves no rows between
//! threads, and stops early under a `LIMIT`. Like compaction, it removes duplicates within
//! what it de-duplicates: a replay from another Jetstream host that put the second copy in the
//! next hour, once that first hour is compacted, is not matched (compaction does not match it
//! either). [`QueryOptions::dedup`] turns it off entirely; the benchmark (`benches/day.rs`)
//! measures raw, partly compacted and compacted layouts, and the figures are in the README
//! ("Queries").
//!
//! ```no_run
//! # async fn demo() -> firehose_query::Result<()> {
//! use firehose_query::{Dataset, QueryOptions, TimeRange, output::Format};
//! let dataset = Dataset::open("./data", QueryOptions::default()).await?;
//! let day = TimeRange::parse_day("2026-11-20")?;
//! let stats = dataset.daily_stats(day).await?;
//! let per_collection = dataset.sql("SELECT collection, count(*) FROM events GROUP BY 1").await?;
//! firehose_query::output::write(Format::Table, &stats, std::io::stdout())?;
//! # let _ = per_collection; Ok(()) }
//! ```

#[cfg(feature = "cli")]
pub mod cli;
mod dataset;
mod dedup;
mod error;
#[cfg(feature = "http")]
pub mod http;
mod marks;
pub mod output;
mod readonly;
mod results;
mod s3;
mod top;
mod typed;

pub use dataset::{Dataset, QueryOptions, Rows};
pub use error::{Error, Result};
pub use readonly::check_read_only;
pub use results::{AccountActivity, DailyStats, FromRows, HourlyEvents, Post, TopPost};
pub use s3::{S3Options, Secret};
pub use typed::{Engagement, PostQuery, TimeRange};

/// The table (view) that holds every event with the envelope and partition columns.
pub const EVENTS_VIEW: &str = "events";

/// The Hive partition columns, in path order.
pub const PARTITION_COLUMNS: [&str; 4] = ["year", "month", "day", "hour"];
