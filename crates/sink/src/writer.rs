//! Batches of events to one Parquet file per partition.

use std::collections::BTreeMap;
use std::sync::Arc;

use firehose_core::{BatchBuilder, Event, PartitionKey, Table};

use crate::encode::{ParquetOptions, encode};
use crate::storage::Storage;
use crate::{Error, Result};

/// The name of a batch, from the first and last buffer ids it holds. Files written for the
/// batch are named `<first>_<last>.parquet`, so writing the batch again replaces them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchName {
    file_name: String,
}

impl BatchName {
    /// A name from the first and last ids of the batch (letters, digits, `-`, `.`, `_`).
    pub fn new(first: &str, last: &str) -> Result<Self> {
        for id in [first, last] {
            let valid = !id.is_empty()
                && id.len() <= 100
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
                && !id.starts_with('.');
            if !valid {
                return Err(Error::InvalidPath {
                    path: id.to_owned(),
                    reason: "batch ids must be 1 to 100 letters, digits, '-', '.' or '_'",
                });
            }
        }
        Ok(BatchName {
            file_name: format!("{first}_{last}.parquet"),
        })
    }

    /// `<first>_<last>.parquet`.
    pub fn file_name(&self) -> &str {
        &self.file_name
    }
}

/// One file the writer stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileWritten {
    /// The file's path relative to the dataset root.
    pub path: String,
    /// Its table.
    pub table: Table,
    /// Rows in it.
    pub rows: usize,
    /// Its size.
    pub bytes: u64,
}

/// What [`Writer::write`] made durable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Committed {
    /// The files, in partition order.
    pub files: Vec<FileWritten>,
}

impl Committed {
    /// Rows across all files.
    pub fn rows(&self) -> usize {
        self.files.iter().map(|f| f.rows).sum()
    }

    /// Bytes across all files.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).sum()
    }
}

/// Writes batches of events as Hive-partitioned Parquet.
#[derive(Debug, Clone)]
pub struct Writer {
    storage: Arc<dyn Storage>,
    options: ParquetOptions,
}

impl Writer {
    /// A writer storing to `storage` with `options`.
    pub fn new(storage: Arc<dyn Storage>, options: ParquetOptions) -> Self {
        Writer { storage, options }
    }

    /// The storage target.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// Writes `events` as one file per partition (table and UTC hour of `time_us`), each named
    /// after `name`. Returns once every file is durable; only then may the caller acknowledge
    /// the batch. Rows keep the order of `events` within each file.
    ///
    /// Each file is stored on a task of its own while the next one is encoded, so a slow
    /// store (an fsync, an S3 round trip) does not leave the CPU idle. Must be called within
    /// a tokio runtime, which runs those tasks.
    pub async fn write(&self, name: &BatchName, events: &[Event<'_>]) -> Result<Committed> {
        let mut partitions: BTreeMap<PartitionKey, BatchBuilder> = BTreeMap::new();
        for event in events {
            partitions.entry(event.partition()).or_default().push(event);
        }
        let mut committed = Committed::default();
        let mut puts = tokio::task::JoinSet::new();
        for (key, builder) in partitions {
            let path = format!("{}/{}", key.path(), name.file_name());
            for (table, batch) in builder.finish()? {
                let file = encode(&batch, &self.options).map_err(|source| Error::Parquet {
                    partition: key.path(),
                    source,
                })?;
                committed.files.push(FileWritten {
                    path: path.clone(),
                    table,
                    rows: batch.num_rows(),
                    bytes: file.len() as u64,
                });
                let (storage, path) = (Arc::clone(&self.storage), path.clone());
                puts.spawn(async move { storage.put(&path, file).await });
            }
        }
        // The first failure is returned; dropping the set abandons the other stores, whose
        // files (complete or absent, never partial) are rewritten when the batch is.
        while let Some(put) = puts.join_next().await {
            put.map_err(|e| Error::Task(e.to_string()))??;
        }
        Ok(committed)
    }
}
