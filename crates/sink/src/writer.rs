//! Batches of events to one Parquet file per partition.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::RecordBatch;
use firehose_core::{BatchBuilder, Event, PartitionKey, Table};

use crate::encode::{ParquetOptions, encode};
use crate::rolling::SealedFile;
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

    /// The Parquet settings.
    pub fn options(&self) -> &ParquetOptions {
        &self.options
    }

    /// The files [`write`](Self::write) stores for `events`, built as Arrow but not yet
    /// encoded, in partition order: for callers that encode them on threads of their own
    /// ([`Writer::encode_and_store`], then [`Storing::finish`]).
    pub fn build<'a, 'e: 'a>(
        &self,
        name: &BatchName,
        events: impl IntoIterator<Item = &'a Event<'e>>,
    ) -> Result<Vec<PendingFile>> {
        let mut partitions: BTreeMap<PartitionKey, BatchBuilder> = BTreeMap::new();
        for event in events {
            partitions.entry(event.partition()).or_default().push(event);
        }
        let mut files = Vec::new();
        for (key, builder) in partitions {
            let path = format!("{}/{}", key.path(), name.file_name());
            for (table, batch) in builder.finish()? {
                files.push(PendingFile {
                    path: path.clone(),
                    table,
                    batch,
                });
            }
        }
        Ok(files)
    }

    /// Writes `events` as one file per partition (table and UTC hour of `time_us`), each named
    /// after `name`. Returns once every file is durable; only then may the caller acknowledge
    /// the batch. Rows keep the order of `events` within each file.
    ///
    /// Each file is stored on a task of its own while the next one is encoded, so a slow
    /// store (an fsync, an S3 round trip) does not leave the CPU idle. Must be called within
    /// a tokio runtime, which runs those tasks.
    pub async fn write(&self, name: &BatchName, events: &[Event<'_>]) -> Result<Committed> {
        let runtime = tokio::runtime::Handle::current();
        let storing = self
            .build(name, events)?
            .iter()
            .map(|file| self.encode_and_store(file, &runtime))
            .collect::<Result<Vec<_>>>()?;
        Storing::finish(storing).await
    }

    /// Encodes `file` (CPU work, on the calling thread) and starts storing it on `runtime`;
    /// [`Storing::finish`] waits for the stores.
    pub fn encode_and_store(
        &self,
        file: &PendingFile,
        runtime: &tokio::runtime::Handle,
    ) -> Result<Storing> {
        let sealed = file.encode(&self.options)?;
        let written = FileWritten {
            path: sealed.path.clone(),
            table: file.table,
            rows: sealed.rows,
            bytes: sealed.data.len() as u64,
        };
        let storage = Arc::clone(&self.storage);
        let put = runtime.spawn(async move { storage.put(&sealed.path, sealed.data).await });
        Ok(Storing { written, put })
    }
}

/// A file being stored ([`Writer::encode_and_store`]).
#[derive(Debug)]
pub struct Storing {
    written: FileWritten,
    put: tokio::task::JoinHandle<Result<()>>,
}

impl Storing {
    /// Waits until every file is durable; only then may the caller acknowledge the batch. The
    /// first failure is returned; the other stores are left to end on their own, and their
    /// files (complete or absent, never partial) are rewritten when the batch is.
    pub async fn finish(storing: Vec<Storing>) -> Result<Committed> {
        let mut committed = Committed::default();
        for Storing { written, put } in storing {
            put.await.map_err(|e| Error::Task(e.to_string()))??;
            committed.files.push(written);
        }
        Ok(committed)
    }
}

/// One file of a batch, built as Arrow, waiting to be encoded.
#[derive(Debug)]
pub struct PendingFile {
    path: String,
    table: Table,
    batch: RecordBatch,
}

impl PendingFile {
    /// Encodes it as Parquet: CPU work, for any thread.
    pub fn encode(&self, options: &ParquetOptions) -> Result<SealedFile> {
        let data = encode(&self.batch, options).map_err(|source| Error::Parquet {
            partition: self.path.clone(),
            source,
        })?;
        Ok(SealedFile {
            path: self.path.clone(),
            table: Some(self.table),
            rows: self.batch.num_rows(),
            data,
        })
    }
}
