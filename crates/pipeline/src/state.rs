//! Where the pipeline keeps its state: the cursor checkpoint, and the journal of batches being
//! written.
//!
//! - The **checkpoint** is the `time_us` below which every event is durably in Parquet. It only
//!   moves forward, and only after the writer stored a batch and acknowledged the buffer. On
//!   restart the Jetstream source resumes from it (minus a rewind), so events that were only
//!   in memory when the process died are fetched again.
//! - The **journal** records the buffer ids of a batch before its files are stored, and that
//!   they were stored before the ids are acknowledged. After a crash, the entries of a journaled
//!   batch come back (to the same consumer, or to one that claims them) and are written again
//!   under the same name, so they replace the same files instead of adding copies.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use firehose_buffer::{EntryId, SideTable};
use firehose_sink::Storage;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// A batch the journal holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournaledBatch {
    /// The entries, in order; the batch's name derives from the first and last.
    pub ids: Vec<EntryId>,
    /// Whether its files were all stored (only acknowledging is left).
    pub stored: bool,
}

/// The pipeline's state store.
#[async_trait]
pub trait StateStore: fmt::Debug + Send + Sync {
    /// The checkpoint, if one was ever stored.
    async fn checkpoint(&self) -> Result<Option<i64>>;
    /// Moves the checkpoint to `time_us` if that is later; returns the checkpoint afterwards.
    async fn raise_checkpoint(&self, time_us: i64) -> Result<i64>;
    /// Records a batch about to be stored, if `consumer` still holds every one of its entries
    /// (none was claimed by another writer). Returns the ids it no longer holds; nothing is
    /// recorded then, and the batch must not be stored: the entries claimed are the claimer's
    /// to write.
    async fn record_batch(&self, consumer: &str, ids: &[EntryId]) -> Result<Vec<EntryId>>;
    /// Marks a recorded batch stored.
    async fn mark_stored(&self, first: EntryId) -> Result<()>;
    /// Forgets a batch once acknowledged.
    async fn forget_batch(&self, first: EntryId) -> Result<()>;
    /// Every batch recorded and not forgotten.
    async fn batches(&self) -> Result<Vec<JournaledBatch>>;
}

#[derive(Debug, Serialize, Deserialize)]
struct CheckpointFile {
    time_us: i64,
}

/// State for the all-in-one `run` mode: the checkpoint is a small JSON object stored beside the
/// dataset (`_firehose/checkpoint.json`, written durably through the dataset's own storage),
/// and there is no journal, because the in-memory buffer does not outlive the process: after a
/// crash, the events come back from Jetstream, not from the buffer.
#[derive(Debug, Clone)]
pub struct DatasetState {
    storage: Arc<dyn Storage>,
}

/// Where [`DatasetState`] keeps the checkpoint, relative to the dataset root.
pub use firehose_core::layout::CHECKPOINT_PATH;

impl DatasetState {
    /// State kept in `storage`.
    pub fn new(storage: Arc<dyn Storage>) -> Self {
        DatasetState { storage }
    }
}

#[async_trait]
impl StateStore for DatasetState {
    async fn checkpoint(&self) -> Result<Option<i64>> {
        match self.storage.get(CHECKPOINT_PATH).await {
            Ok(data) => {
                let file: CheckpointFile =
                    serde_json::from_slice(&data).map_err(|e| Error::State {
                        op: "read checkpoint",
                        message: format!("{CHECKPOINT_PATH} is corrupt: {e}"),
                    })?;
                Ok(Some(file.time_us))
            }
            Err(firehose_sink::Error::NotFound { .. }) => Ok(None),
            Err(source) => Err(Error::Sink {
                op: "read checkpoint",
                source,
            }),
        }
    }

    async fn raise_checkpoint(&self, time_us: i64) -> Result<i64> {
        // One process owns a dataset's run-mode state, so read-compare-write is enough.
        let current = self.checkpoint().await?;
        if current.is_some_and(|c| c >= time_us) {
            return Ok(current.unwrap_or(time_us));
        }
        let data = serde_json::to_vec(&CheckpointFile { time_us }).map_err(|e| Error::State {
            op: "write checkpoint",
            message: e.to_string(),
        })?;
        self.storage
            .put(CHECKPOINT_PATH, Bytes::from(data))
            .await
            .map_err(|source| Error::Sink {
                op: "write checkpoint",
                source,
            })?;
        Ok(time_us)
    }

    async fn record_batch(&self, _consumer: &str, _ids: &[EntryId]) -> Result<Vec<EntryId>> {
        Ok(Vec::new())
    }

    async fn mark_stored(&self, _first: EntryId) -> Result<()> {
        Ok(())
    }

    async fn forget_batch(&self, _first: EntryId) -> Result<()> {
        Ok(())
    }

    async fn batches(&self) -> Result<Vec<JournaledBatch>> {
        Ok(Vec::new())
    }
}

/// State for the `ingest` / `write` deployment, in the [`SideTable`] beside a shared buffer
/// (for Redis, the hash `<stream>:state`): fields `checkpoint`, `batch:<first id>` (the
/// batch's ids) and `stored:<first id>`. Every writer of the consumer group shares it.
#[derive(Debug, Clone)]
pub struct TableState {
    table: Arc<dyn SideTable>,
}

impl TableState {
    /// State kept in `table`.
    pub fn new(table: Arc<dyn SideTable>) -> Self {
        TableState { table }
    }
}

fn table_error(op: &'static str) -> impl FnOnce(firehose_buffer::Error) -> Error {
    move |source| Error::Buffer { op, source }
}

#[async_trait]
impl StateStore for TableState {
    async fn checkpoint(&self) -> Result<Option<i64>> {
        let value = self
            .table
            .get("checkpoint")
            .await
            .map_err(table_error("read checkpoint"))?;
        value
            .map(|v| {
                v.parse().map_err(|_| Error::State {
                    op: "read checkpoint",
                    message: format!("checkpoint {v:?} is not a number"),
                })
            })
            .transpose()
    }

    async fn raise_checkpoint(&self, time_us: i64) -> Result<i64> {
        let raised = self
            .table
            .raise("checkpoint", u64::try_from(time_us).unwrap_or(0))
            .await
            .map_err(table_error("raise checkpoint"))?;
        Ok(i64::try_from(raised).unwrap_or(i64::MAX))
    }

    async fn record_batch(&self, consumer: &str, ids: &[EntryId]) -> Result<Vec<EntryId>> {
        let Some(first) = ids.first() else {
            return Ok(Vec::new());
        };
        let value = ids.iter().map(EntryId::to_string).collect::<Vec<_>>();
        self.table
            .set_if_held(&format!("batch:{first}"), &value.join(" "), consumer, ids)
            .await
            .map_err(table_error("record batch"))
    }

    async fn mark_stored(&self, first: EntryId) -> Result<()> {
        self.table
            .set(&format!("stored:{first}"), "1")
            .await
            .map_err(table_error("mark batch stored"))
    }

    async fn forget_batch(&self, first: EntryId) -> Result<()> {
        for field in [format!("stored:{first}"), format!("batch:{first}")] {
            self.table
                .delete(&field)
                .await
                .map_err(table_error("forget batch"))?;
        }
        Ok(())
    }

    async fn batches(&self) -> Result<Vec<JournaledBatch>> {
        let stored: std::collections::HashSet<String> = self
            .table
            .scan("stored:")
            .await
            .map_err(table_error("read journal"))?
            .into_iter()
            .map(|(field, _)| field["stored:".len()..].to_owned())
            .collect();
        let mut batches = Vec::new();
        for (field, value) in self
            .table
            .scan("batch:")
            .await
            .map_err(table_error("read journal"))?
        {
            let ids = value
                .split(' ')
                .map(str::parse)
                .collect::<std::result::Result<Vec<EntryId>, _>>()
                .map_err(|e| Error::State {
                    op: "read journal",
                    message: format!("{field}: {e}"),
                })?;
            batches.push(JournaledBatch {
                stored: stored.contains(&field["batch:".len()..]),
                ids,
            });
        }
        Ok(batches)
    }
}

/// The state of a shared buffer's side table, with the checkpoint also kept beside the dataset
/// (`_firehose/checkpoint.json`): should the table lose its data (Redis started empty on a
/// volume that did not mount, a `FLUSHALL`, a new server), the dataset still says where the
/// archive stands, and `ingest` resumes from there instead of starting live. The table's
/// checkpoint leads; the dataset's follows it after every raise (several writers may write it
/// in turn, which can only leave it lower, never past what is stored).
#[derive(Debug, Clone)]
pub struct MirroredState {
    table: Arc<dyn StateStore>,
    dataset: DatasetState,
}

impl MirroredState {
    /// The state of `table`, its checkpoint mirrored in `dataset`.
    pub fn new(table: Arc<dyn StateStore>, dataset: DatasetState) -> Self {
        MirroredState { table, dataset }
    }

    /// The checkpoints of the table and of the dataset, each if there is one.
    pub async fn checkpoints(&self) -> Result<(Option<i64>, Option<i64>)> {
        Ok((
            self.table.checkpoint().await?,
            self.dataset.checkpoint().await?,
        ))
    }
}

#[async_trait]
impl StateStore for MirroredState {
    /// The newer of the two.
    async fn checkpoint(&self) -> Result<Option<i64>> {
        let (table, dataset) = self.checkpoints().await?;
        Ok(table.max(dataset))
    }

    async fn raise_checkpoint(&self, time_us: i64) -> Result<i64> {
        let raised = self.table.raise_checkpoint(time_us).await?;
        self.dataset.raise_checkpoint(raised).await?;
        Ok(raised)
    }

    async fn record_batch(&self, consumer: &str, ids: &[EntryId]) -> Result<Vec<EntryId>> {
        self.table.record_batch(consumer, ids).await
    }

    async fn mark_stored(&self, first: EntryId) -> Result<()> {
        self.table.mark_stored(first).await
    }

    async fn forget_batch(&self, first: EntryId) -> Result<()> {
        self.table.forget_batch(first).await
    }

    async fn batches(&self) -> Result<Vec<JournaledBatch>> {
        self.table.batches().await
    }
}
