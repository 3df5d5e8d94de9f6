//! Joining a writer's own files of a partition, so that the dataset a writer leaves has about
//! as many files as a compacted one.
//!
//! A writer closes a file per table and hour every few minutes: about a dozen per partition,
//! and queries pay for each file they open (see the README's figures for the raw layout). So
//! the writer joins its own marked files of a partition into one ([`merge_files`]): four batch
//! files into one, four of those into one, and so on ([`MergePolicy`]), and all of them once
//! the hour has closed. An hour the writer has left is then one file per table, and the open
//! hour a few.
//!
//! A join is a copy, not a compaction: the inputs are marked duplicate-free, so their rows are
//! kept as they are, in order, and the output is marked too. It lists the batch files it holds
//! ([`MERGED_FROM_KEY`]) and is named after them, so a join done again makes the same file.
//! The output is stored durably before any input is deleted; a crash in between leaves both,
//! which readers see as batches held twice
//! ([`origins_overlap`](firehose_core::layout::origins_overlap)) and de-duplicate, until
//! [`finish_merges`] deletes the inputs. Only files whose batch this writer stored and
//! acknowledged itself are joined, never another writer's, so two writers never join the same
//! batch.

use arrow_array::RecordBatch;
use arrow_schema::Schema;
use bytes::Bytes;
use firehose_core::layout::{MERGED_FROM_KEY, MERGED_PREFIX, merged_file_name, origins_of};
use firehose_core::{HOUR_US, Table};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::metadata::KeyValue;
use std::collections::BTreeMap;
use std::sync::Arc;

use crate::compact::{blocking, names_hash};
use crate::encode::{ParquetOptions, is_marked_duplicate_free};
use crate::writer::FileWritten;
use crate::{Error, Result, Storage, partition_of};

/// When a writer joins its files of a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergePolicy {
    /// Join a partition's files when this many of the same tier accumulate (default 4): four
    /// batch files make one of tier 1, four of those one of tier 2, and so on, so a row is
    /// copied about once per tier (log₄ of the batches an hour gets) and an open hour keeps a
    /// few files per table.
    pub files: usize,
    /// Join files into one of at most this size (default 16 MB), and leave larger files as
    /// they are: joining large files gains little, and a join holds its inputs and its output
    /// in memory.
    pub max_bytes: u64,
}

impl Default for MergePolicy {
    fn default() -> Self {
        MergePolicy {
            files: 4,
            max_bytes: 16_000_000,
        }
    }
}

/// Files of one partition to join into one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeJob {
    /// The partition's directory.
    pub partition: String,
    /// Its table.
    pub table: Table,
    /// The files, oldest first.
    pub inputs: Vec<FileWritten>,
    /// The tier of the output: one more than the inputs'.
    pub tier: u32,
}

/// A writer's own marked files, per partition, waiting to be joined.
#[derive(Debug, Default)]
pub struct OwnFiles {
    policy: MergePolicy,
    /// By partition directory: the start of its hour and its files with their tiers, oldest
    /// first (so tiers never increase along the list).
    partitions: BTreeMap<String, (i64, Vec<(u32, FileWritten)>)>,
}

impl OwnFiles {
    /// No files yet.
    pub fn new(policy: MergePolicy) -> Self {
        OwnFiles {
            policy,
            partitions: BTreeMap::new(),
        }
    }

    /// Adds files this writer stored, marked duplicate-free, of a batch it acknowledged itself.
    /// Files of the dead-letter table or of another layout are left out.
    pub fn add(&mut self, files: &[FileWritten]) {
        for file in files {
            self.add_tier(0, file);
        }
    }

    fn add_tier(&mut self, tier: u32, file: &FileWritten) {
        let Some(key) = partition_of(&file.path) else {
            return;
        };
        if key.table != file.table || file.bytes >= self.policy.max_bytes {
            return;
        }
        self.partitions
            .entry(key.path())
            .or_insert_with(|| (key.hour.start_us(), Vec::new()))
            .1
            .push((tier, file.clone()));
    }

    /// Takes out the joins that are due, with `live` (a writer keeping up): in a partition of
    /// an hour that ended by `closed_before_us`, its oldest files up to
    /// [`MergePolicy::max_bytes`] together (the rest on later calls, and the partition is
    /// forgotten once done); in the others, the newest [`MergePolicy::files`] files of one tier,
    /// unless together they pass [`MergePolicy::max_bytes`] (then they are large enough, and
    /// left as they are). One call takes joins of at most [`MergePolicy::max_bytes`] of input
    /// (one at least), so the time and memory a writer spends between two batches stay
    /// bounded. A writer catching up joins nothing (it forgets closed hours, and leaves them
    /// to compaction): a backlog is drained at the speed of writing alone.
    pub fn due(&mut self, closed_before_us: i64, live: bool) -> Vec<MergeJob> {
        let mut jobs = Vec::new();
        let files = self.policy.files.max(2);
        let max_bytes = self.policy.max_bytes;
        let mut budget = max_bytes;
        self.partitions.retain(|partition, (hour_us, own)| {
            let closed = hour_us.saturating_add(HOUR_US) <= closed_before_us;
            if !live {
                return !closed;
            }
            if budget == 0 {
                return true;
            }
            let inputs: Vec<(u32, FileWritten)> = if closed {
                // The oldest run of files up to the size bound; a file too large to join with
                // the next one is left as it is.
                let mut n = 0;
                let mut bytes = 0;
                while let Some((_, file)) = own.get(n) {
                    if n > 0 && bytes + file.bytes > max_bytes {
                        break;
                    }
                    bytes += file.bytes;
                    n += 1;
                }
                own.drain(..n).collect()
            } else {
                let newest = own.last().map_or(0, |(tier, _)| *tier);
                let same = own.iter().rev().take_while(|(t, _)| *t == newest).count();
                if same < files {
                    return true;
                }
                own.split_off(own.len() - same)
            };
            let bytes: u64 = inputs.iter().map(|(_, f)| f.bytes).sum();
            if inputs.len() >= 2 && bytes <= max_bytes {
                budget = budget.saturating_sub(bytes);
                let tier = inputs.iter().map(|(t, _)| *t).max().unwrap_or(0) + 1;
                jobs.push(MergeJob {
                    partition: partition.clone(),
                    table: inputs[0].1.table,
                    inputs: inputs.into_iter().map(|(_, f)| f).collect(),
                    tier,
                });
            }
            !own.is_empty()
        });
        jobs
    }

    /// Gives back the output of a join that [`OwnFiles::due`] took out of an open hour.
    pub fn merged(&mut self, job: &MergeJob, output: FileWritten) {
        self.add_tier(job.tier, &output);
    }

    /// Partitions with files waiting.
    pub fn partitions(&self) -> usize {
        self.partitions.len()
    }
}

/// Joins the job's files into one marked file in the same partition, stores it durably, then
/// deletes the inputs. Returns the output, or `None` when there was nothing to do: an input was
/// gone (compaction or retention took the partition) or not marked. Rows are kept in input
/// order; the output lists every batch its inputs held, and is named after them.
pub async fn merge_files(
    storage: &dyn Storage,
    job: &MergeJob,
    options: &ParquetOptions,
) -> Result<Option<FileWritten>> {
    let mut inputs = Vec::with_capacity(job.inputs.len());
    for file in &job.inputs {
        match storage.get(&file.path).await {
            Ok(data) => inputs.push((file.path.clone(), data)),
            Err(Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        }
    }
    let options = ParquetOptions {
        duplicate_free: true,
        ..options.clone()
    };
    let partition = job.partition.clone();
    let joined = blocking(move || join(&partition, inputs, &options)).await??;
    let Some(Joined { name, data, rows }) = joined else {
        return Ok(None);
    };
    let path = format!("{}/{name}", job.partition);
    let bytes = data.len() as u64;
    storage.put(&path, data).await?;
    for file in &job.inputs {
        if file.path != path {
            storage.delete(&file.path).await?;
        }
    }
    Ok(Some(FileWritten {
        path,
        table: job.table,
        rows,
        bytes,
    }))
}

struct Joined {
    name: String,
    data: Bytes,
    rows: usize,
}

/// Copies the rows of `inputs` (path, contents), in order, into one marked Parquet file that
/// lists their batches. `None` when an input is not marked duplicate-free.
fn join(
    partition: &str,
    inputs: Vec<(String, Bytes)>,
    options: &ParquetOptions,
) -> Result<Option<Joined>> {
    let failed = |path: &str, e: &dyn std::fmt::Display| Error::Merge {
        partition: partition.to_owned(),
        reason: format!("{path}: {e}"),
    };
    let mut readers = Vec::with_capacity(inputs.len());
    let mut origins: Vec<String> = Vec::new();
    for (path, data) in inputs {
        let builder =
            ParquetRecordBatchReaderBuilder::try_new(data).map_err(|e| failed(&path, &e))?;
        let metadata = builder.metadata();
        if !is_marked_duplicate_free(metadata) {
            return Ok(None);
        }
        let kv = metadata.file_metadata().key_value_metadata();
        origins.extend(origins_of(
            &path,
            kv.into_iter()
                .flatten()
                .map(|e| (e.key.as_str(), e.value.as_deref())),
        ));
        readers.push((path, builder));
    }
    origins.sort();
    origins.dedup();
    let name = merged_file_name(&names_hash(origins.iter().map(String::as_str)));
    // The columns only: a reader's schema carries its file's key-value metadata too.
    let Some(schema) = readers
        .first()
        .map(|(_, b)| Arc::new(Schema::new(b.schema().fields().clone())))
    else {
        return Ok(None);
    };
    let properties = options
        .writer_properties()
        .map_err(|e| failed("the output", &e))?;
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, schema.clone(), Some(properties))
        .map_err(|e| failed("the output", &e))?;
    writer.append_key_value_metadata(KeyValue::new(MERGED_FROM_KEY.to_owned(), origins.join(",")));
    let mut rows = 0;
    for (path, builder) in readers {
        if builder.schema().fields() != schema.fields() {
            return Err(failed(&path, &"its columns differ from the other files'"));
        }
        let reader = builder.build().map_err(|e| failed(&path, &e))?;
        for batch in reader {
            let batch = batch.map_err(|e| failed(&path, &e))?;
            let batch = RecordBatch::try_new(Arc::clone(&schema), batch.columns().to_vec())
                .map_err(|e| failed(&path, &e))?;
            rows += batch.num_rows();
            writer.write(&batch).map_err(|e| failed(&path, &e))?;
        }
    }
    writer.close().map_err(|e| failed("the output", &e))?;
    Ok(Some(Joined {
        name,
        data: Bytes::from(out),
        rows,
    }))
}

/// Deletes, in the partition directory `partition`, the files a join holds: the inputs of a
/// join interrupted after storing its output, and earlier joins a later one took in. Returns
/// how many files it deleted. A writer runs it at start on the partitions it may have been
/// joining.
pub async fn finish_merges(storage: &dyn Storage, partition: &str) -> Result<usize> {
    let listed = storage.list(&format!("{partition}/")).await?;
    let mut merged: Vec<(String, Vec<String>)> = Vec::new();
    for object in &listed {
        let name = object.path.rsplit('/').next().unwrap_or(&object.path);
        if !(name.starts_with(MERGED_PREFIX) && name.ends_with(".parquet")) {
            continue;
        }
        let data = match storage.get(&object.path).await {
            Ok(data) => data,
            Err(Error::NotFound { .. }) => continue,
            Err(e) => return Err(e),
        };
        let metadata = parquet::file::metadata::ParquetMetaDataReader::new()
            .parse_and_finish(&data)
            .map_err(|e| Error::Merge {
                partition: partition.to_owned(),
                reason: format!("{}: {e}", object.path),
            })?;
        if !is_marked_duplicate_free(&metadata) {
            continue;
        }
        let kv = metadata.file_metadata().key_value_metadata();
        let origins = origins_of(
            name,
            kv.into_iter()
                .flatten()
                .map(|e| (e.key.as_str(), e.value.as_deref())),
        );
        merged.push((name.to_owned(), origins));
    }
    let mut deleted = 0;
    for object in &listed {
        let name = object.path.rsplit('/').next().unwrap_or(&object.path);
        let held_elsewhere = |own: &[String]| {
            merged
                .iter()
                .any(|(other, origins)| other != name && own.iter().all(|b| origins.contains(b)))
        };
        let own = match merged.iter().find(|(n, _)| n == name) {
            Some((_, origins)) => origins.clone(),
            None if name.starts_with(MERGED_PREFIX) => continue,
            None => vec![name.to_owned()],
        };
        if held_elsewhere(&own) {
            storage.delete(&object.path).await?;
            deleted += 1;
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(n: u32, bytes: u64) -> FileWritten {
        FileWritten {
            path: format!("posts/year=2026/month=11/day=20/hour=05/{n}-0_{n}-9.parquet"),
            table: Table::Posts,
            rows: 10,
            bytes,
        }
    }

    fn policy() -> MergePolicy {
        MergePolicy {
            files: 4,
            max_bytes: 100,
        }
    }

    fn inputs(job: &MergeJob) -> Vec<u64> {
        job.inputs.iter().map(|f| f.bytes).collect()
    }

    #[test]
    fn tier_joins_stay_within_the_size_bound() {
        let mut own = OwnFiles::new(policy());
        own.add(&[file(1, 10), file(2, 10), file(3, 10)]);
        assert!(
            own.due(0, true).is_empty(),
            "three files of a tier wait for a fourth"
        );
        own.add(&[file(4, 10)]);
        let jobs = own.due(0, true);
        assert_eq!(jobs.len(), 1);
        assert_eq!((inputs(&jobs[0]), jobs[0].tier), (vec![10; 4], 1));
        // Four files that would make one larger than the bound are left as they are.
        let mut own = OwnFiles::new(policy());
        own.add(&[file(1, 30), file(2, 30), file(3, 30), file(4, 30)]);
        assert!(own.due(0, true).is_empty());
        assert_eq!(own.partitions(), 0, "and forgotten");
        // A file of the bound or more is never taken.
        own.add(&[file(5, 100)]);
        assert_eq!(own.partitions(), 0);
    }

    #[test]
    fn a_closed_hour_is_joined_in_runs_within_the_bound_a_run_per_call() {
        let mut own = OwnFiles::new(policy());
        own.add(&[
            file(1, 40),
            file(2, 40),
            file(3, 40),
            file(4, 40),
            file(5, 90),
        ]);
        // Not keeping up: nothing is joined, and the closed hour is forgotten.
        let mut behind = OwnFiles::new(policy());
        behind.add(&[file(1, 40), file(2, 40)]);
        assert!(behind.due(i64::MAX, false).is_empty());
        assert_eq!(behind.partitions(), 0);
        // Keeping up: one call joins at most the bound's worth, then the next run.
        let first = own.due(i64::MAX, true);
        assert_eq!(first.iter().map(inputs).collect::<Vec<_>>(), [vec![40, 40]]);
        let second = own.due(i64::MAX, true);
        assert_eq!(
            second.iter().map(inputs).collect::<Vec<_>>(),
            [vec![40, 40]]
        );
        // The last file has nothing to join with within the bound: left as it is.
        assert!(own.due(i64::MAX, true).is_empty());
        assert_eq!(own.partitions(), 0);
    }
}
