//! The Parquet sink: events become Hive-partitioned Parquet files,
//! `<root>/<table>/year=YYYY/month=MM/day=DD/hour=HH/<name>.parquet`.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use firehose_core::Event;
//! use firehose_sink::{BatchName, ParquetOptions, Writer};
//! let dir = std::env::temp_dir().join(format!("firehose-sink-doc-{}", std::process::id()));
//! let storage = firehose_sink::open(dir.to_str().ok_or("path")?).await?;
//! let line = br#"{"did":"did:plc:abc","time_us":1763596800000000,"kind":"identity","identity":{"did":"did:plc:abc","handle":"a.bsky.social","seq":1,"time":"2025-11-20T00:00:00Z"}}"#;
//! let events = [Event::decode(line)?];
//! // Named after the buffer ids of the batch: writing it again replaces the same file.
//! let name = BatchName::new("17-0", "17-0")?;
//! let committed = Writer::new(storage.clone(), ParquetOptions::default())
//!     .write(&name, &events)
//!     .await?;
//! assert_eq!(
//!     committed.files[0].path,
//!     "identity/year=2025/month=11/day=20/hour=00/17-0_17-0.parquet"
//! );
//! assert_eq!(storage.list("identity/").await?.len(), 1);
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! - [`Storage`] is the one small trait the writer needs from a storage target: put a finished
//!   file durably, get, list, delete. [`LocalStorage`] writes to a directory (temporary file,
//!   fsync, rename, directory fsync).
#![cfg_attr(
    feature = "s3",
    doc = "- [`s3::S3Storage`] writes to an S3-compatible bucket (feature `s3`): path-style, a region always, checksums only when required, Content-MD5, multipart above a threshold."
)]
//! - [`encode`] turns one Arrow record batch into the bytes of a Parquet file, with the
//!   settings in [`ParquetOptions`] (zstd by default, statistics and page index written).
//! - [`retain`] deletes whole hour partitions past an age ([`partition_of`] reads a path's
//!   partition back).
//! - [`compact()`] merges the small files of each closed hour partition into files of about
//!   100 MB, sorted by time, without duplicate events, in a way that a crash at any step
//!   leaves a readable dataset and the next run finishes.
//! - [`Writer`] takes a batch of events with the buffer ids it came from, splits it by
//!   partition (table and UTC hour of `time_us`) and stores one file per partition, named
//!   after the batch.
//! - [`OpenFiles`] is the streaming form the pipeline uses: events accumulate in one open file
//!   per partition until [`RollPolicy`] closes them all (target size, maximum age, an hour
//!   passing its grace period, or the memory bound); they are then encoded together
//!   ([`Closing::encode`]) and stored under one batch name ([`Sealed::store`], which can be
//!   retried). Messages that failed to decode go to the `dead_letters` table beside them.
//! - [`OwnFiles`] and [`merge_files`] join a writer's own marked files of a partition into one
//!   as they accumulate and when the hour closes, so that the layout a writer leaves has about
//!   a file per table and hour, as compaction's does (see [`merge`]).
//!
//! # Exactly once
//!
//! A key design decision made in this crate is that **a file's name is derived from the batch
//! it holds** (the first and last buffer ids), never from the clock or a counter. Writing the
//! same batch again after a crash therefore replaces the same objects instead of adding new
//! ones, and the caller acknowledges the buffer only after [`Writer::write`] returned: a crash
//! at any point leaves either no file or the complete file, and the re-run converges on the
//! same dataset.
//!
//! A retry only lands on the same names if the retried batch holds the same buffer ids, so the
//! caller records a batch's ids before writing it and, after a crash, rebuilds exactly that
//! batch first: `firehose-pipeline` does this with its batch journal.
//!
//! Compaction keeps to the same rule: its outputs are named after the set of files they
//! replace, are stored before any input is deleted, and a re-run after a crash takes the
//! leftovers as inputs and converges (see [`compact()`]). So do a writer's joins: named after
//! the batches they hold, stored before their inputs are deleted, and finished by
//! [`finish_merges`] after a crash.

pub mod compact;
mod encode;
pub mod keys;
mod local;
pub mod merge;
mod retention;
mod rolling;
#[cfg(feature = "s3")]
pub mod s3;
mod storage;
mod writer;

pub use compact::{
    CompactOptions, Compacted, PartitionCompacted, Progress, compact, partition_memory,
};
pub use encode::{
    Compression, ParquetOptions, encode, file_is_marked_duplicate_free, is_marked_duplicate_free,
};
pub use keys::stored_keys;
pub use local::LocalStorage;
pub use merge::{MergeJob, MergePolicy, OwnFiles, finish_merges, merge_files};
pub use retention::{Retained, partition_of, retain};
pub use rolling::{
    Closing, DEAD_LETTER_TABLE, DeadLetter, OpenFiles, RollPolicy, RollReason, Sealed, SealedFile,
    dead_letter_schema,
};
pub use storage::{ObjectInfo, Storage};
pub use writer::{BatchName, Committed, FileWritten, PendingFile, Storing, Writer};

/// The dataset at `location`: a local directory, or `s3://bucket/prefix` (feature `s3`) with
/// the endpoint, region and credentials from the standard AWS environment
/// (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// profiles). Nothing is contacted yet: the first request opens the connection.
///
/// ```
/// # async fn demo() -> firehose_sink::Result<()> {
/// let storage = firehose_sink::open("./data").await?;
/// let files = storage.list("posts/").await?;
/// # let _ = files; Ok(()) }
/// ```
pub async fn open(location: &str) -> Result<std::sync::Arc<dyn Storage>> {
    let Some(dir) = firehose_core::location::local_path(location) else {
        #[cfg(feature = "s3")]
        {
            let config = s3::S3Config::from_url(location)?;
            return Ok(std::sync::Arc::new(s3::S3Storage::new(config).await?));
        }
        #[cfg(not(feature = "s3"))]
        return Err(Error::Config(format!(
            "{location}: this build has no S3 support (the `s3` feature of firehose-sink)"
        )));
    };
    Ok(std::sync::Arc::new(LocalStorage::new(dir)))
}

/// Errors of the sink.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A storage operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done: `put`, `get`, `list`, `delete`.
        op: &'static str,
        /// The object's path relative to the dataset root.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The object does not exist.
    #[error("{path} not found")]
    NotFound {
        /// The object's path relative to the dataset root.
        path: String,
    },
    /// A path that would leave the dataset root or is otherwise unusable.
    #[error("invalid object path {path:?}: {reason}")]
    InvalidPath {
        /// The path.
        path: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// Encoding Parquet failed.
    #[error("encoding {partition}: {source}")]
    Parquet {
        /// The partition being written.
        partition: String,
        /// The Parquet error.
        source: parquet::errors::ParquetError,
    },
    /// Building the Arrow batch failed.
    #[error(transparent)]
    Arrow(#[from] firehose_core::ArrowBuildError),
    /// An S3 request failed after its retries.
    #[error("S3 {op} {path}: {message}")]
    S3 {
        /// What was being done.
        op: &'static str,
        /// The object's path relative to the dataset root.
        path: String,
        /// The service's or the connection's error, with its chain of causes.
        message: String,
    },
    /// A setting is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A stored file could not be read back.
    #[error("reading {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// Compaction could not merge a partition's files (an unreadable input, a column of
    /// another type).
    #[error("compacting {partition}: {reason}")]
    Compact {
        /// The partition, or the file, being compacted.
        partition: String,
        /// What went wrong.
        reason: String,
    },
    /// A writer could not join a partition's files (an unreadable input, columns that
    /// differ).
    #[error("joining the files of {partition}: {reason}")]
    Merge {
        /// The partition.
        partition: String,
        /// What went wrong.
        reason: String,
    },
    /// A blocking task died.
    #[error("storage task failed: {0}")]
    Task(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
