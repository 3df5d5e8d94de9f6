//! Compaction: the small files of each closed hour partition merged into a few large ones,
//! sorted by time, with duplicate events removed.
//!
//! # How a partition is compacted
//!
//! 1. Its inputs are every `*.parquet` file in it, earlier compacted outputs included. They
//!    are read a group at a time (up to [`CompactOptions::slice_bytes`] together, or one larger
//!    file), in batches, and each row goes to the *time slice* of the hour it falls in, spilled
//!    to a local temporary directory (Arrow IPC, LZ4); a partition of at most two slices keeps
//!    them in memory instead. The number of slices comes from the partition's size, so each
//!    slice holds about [`CompactOptions::slice_bytes`] of input Parquet.
//! 2. Slice by slice, in time order, the rows are sorted by `(time_us, did, collection, rkey,
//!    rev)`, and a row whose event key was already written is dropped (the key of every row
//!    written so far is remembered as a 128-bit hash, so a duplicate with a different
//!    `time_us`, which a replay from another Jetstream host produces, is found too; the
//!    earliest copy is kept).
//! 3. Rows go to outputs named `compact-<hash of the sorted input names>-<n>.parquet`, each
//!    closed at about [`CompactOptions::target_size`] and stored durably before the next.
//! 4. Only when every output is stored are the inputs deleted.
//!
//! # Crashes
//!
//! A crash before step 4 leaves the inputs and some outputs: readers see duplicates (which
//! they remove by event key) but lose nothing. A crash during step 4 leaves the outputs and
//! some inputs, again only duplicates. Either way the next run takes *every* file of the
//! partition as input (the leftover outputs too), which yields the same rows, and finishes.
//! A partition is complete when all its files are the outputs of one compaction (same hash):
//! the inputs are deleted only after all outputs exist, so no other state looks like that.
//! Such a partition is left alone, so running compaction again does nothing.
//!
//! # Memory
//!
//! Bounded by the settings rather than by the partition's size: the output file being built (up to
//! `target_size` of Parquet, held in memory until it is stored; the buffer is reserved once and
//! only the pages written become resident), two groups of inputs (one scattered while the next is
//! fetched, each whole: up to `slice_bytes`, or the largest input file when it is larger) and one
//! decoded batch, one time slice decoded (about 4 times `slice_bytes`, since Arrow is about 4 times
//! larger than zstd Parquet for this data; two in a partition that keeps its slices), the key
//! columns of that slice (once more for sorting), and about 32 bytes per distinct event of the
//! partition for the keys seen. Outputs are built from the sorted slice a chunk of rows at a time,
//! so the slice is never copied whole. The Parquet writer adds its dictionaries (up to 8 MiB per
//! column) and one row group being encoded. Measured (2026-12-05): an hour of 1 M generated events
//! (10 partitions, a 49 MB likes partition), 100 MB outputs, 8 MiB slices, one partition at a time:
//! 755 to 780 MB peak RSS for the whole process with freed memory kept (as `firehose compact`
//! does), 660 to 740 MB without (`MIMALLOC_PURGE_DELAY=10`). Before small partitions kept their
//! slices in memory: 494 MB (335 to 370 MB with the parquet crate's 1 MiB dictionaries, for files
//! 4% larger).

use std::collections::HashSet;
use std::fs::{self, File};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{self, BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, new_null_array};
use arrow::compute::kernels::sort::{SortColumn, SortOptions, lexsort_to_indices};
use arrow::compute::{concat_batches, filter_record_batch, interleave_record_batch};
use arrow::datatypes::{Int64Type, SchemaRef};
use arrow::ipc::CompressionType;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::{IpcWriteOptions, StreamWriter};
use bytes::Bytes;
use firehose_core::{HOUR_US, PartitionKey, layout, schema};
use futures::stream::FuturesUnordered;
use futures::{StreamExt, TryStreamExt};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tokio::sync::SemaphorePermit;

use crate::encode::ParquetOptions;
use crate::retention::partition_of;
use crate::storage::{ObjectInfo, Storage};
use crate::{Error, Result};

/// Rows handed to the Parquet writer at once, so an output closes near its target size.
const WRITE_CHUNK_ROWS: usize = 1024;

/// Rows per batch when reading an input.
const READ_BATCH_ROWS: usize = 8 * 1024;

/// How compaction runs.
#[derive(Debug, Clone)]
pub struct CompactOptions {
    /// Close an output file once it holds about this many bytes of Parquet (100 MB by
    /// default: large enough for engines to read efficiently, small enough to download fast).
    pub target_size: u64,
    /// Input Parquet bytes per time slice, the unit sorted in memory (8 MiB by default).
    pub slice_bytes: u64,
    /// How outputs are encoded (as the writer does by default: zstd level 9 saves under 1% of
    /// the size and costs more memory, since each column writer keeps its own zstd context).
    pub parquet: ParquetOptions,
    /// Where slices are spilled while a partition is compacted (a fresh directory inside it
    /// is made and removed for each partition). The system's temporary directory by default.
    pub spill_dir: PathBuf,
    /// Report what would be compacted; read, write and delete nothing.
    pub dry_run: bool,
    /// Partitions compacted at once, at most (1 by default). Each one's decoding, sorting and
    /// encoding runs on a blocking thread of its own.
    pub threads: usize,
    /// Memory the partitions compacted at once may take together, as estimated by
    /// [`partition_memory`] (512 MiB by default). One partition is always let through, however
    /// large.
    pub memory_budget: u64,
}

impl Default for CompactOptions {
    fn default() -> Self {
        CompactOptions {
            target_size: 100_000_000,
            slice_bytes: 8 * 1024 * 1024,
            parquet: ParquetOptions::default(),
            spill_dir: std::env::temp_dir(),
            dry_run: false,
            threads: 1,
            memory_budget: 512 << 20,
        }
    }
}

/// What compaction did to one partition (or, dry, would do: then only the inputs are known).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionCompacted {
    /// The partition's directory, e.g. `likes/year=2026/month=11/day=20/hour=05`.
    pub partition: String,
    /// Files read (and then deleted).
    pub files_in: usize,
    /// Their bytes.
    pub bytes_in: u64,
    /// Rows read.
    pub rows_in: u64,
    /// Rows dropped because an earlier row had the same event key.
    pub duplicates: u64,
    /// Rows written.
    pub rows_out: u64,
    /// Files written, relative to the dataset root.
    pub outputs: Vec<String>,
    /// Their bytes.
    pub bytes_out: u64,
    /// How long it took.
    pub elapsed: std::time::Duration,
}

/// What [`compact`] did across the dataset.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Compacted {
    /// Partitions compacted.
    pub partitions: usize,
    /// Closed partitions left alone because they were already compacted.
    pub already_compact: usize,
    /// Partitions left alone because their hour is not closed yet.
    pub open: usize,
    /// Files read.
    pub files_in: usize,
    /// Files written.
    pub files_out: usize,
    /// Rows read.
    pub rows_in: u64,
    /// Rows written.
    pub rows_out: u64,
    /// Duplicate rows removed.
    pub duplicates: u64,
    /// Bytes read.
    pub bytes_in: u64,
    /// Bytes written.
    pub bytes_out: u64,
}

impl Compacted {
    fn add(&mut self, p: &PartitionCompacted) {
        self.partitions += 1;
        self.files_in += p.files_in;
        self.files_out += p.outputs.len();
        self.rows_in += p.rows_in;
        self.rows_out += p.rows_out;
        self.duplicates += p.duplicates;
        self.bytes_in += p.bytes_in;
        self.bytes_out += p.bytes_out;
    }
}

/// Where compaction is, for progress reports.
#[derive(Debug)]
#[non_exhaustive]
pub enum Progress<'a> {
    /// A partition is about to be compacted: the `index`-th (from 1) of `total` to do.
    Started {
        /// The partition's directory.
        partition: &'a str,
        /// Its position among the partitions to compact, from 1.
        index: usize,
        /// Partitions to compact in this run.
        total: usize,
        /// Its input files.
        files: usize,
        /// Their bytes.
        bytes: u64,
    },
    /// An input file has been read (`read` of `files`).
    Read {
        /// The partition's directory.
        partition: &'a str,
        /// Files read so far.
        read: usize,
        /// Input files.
        files: usize,
    },
    /// An output file is stored.
    Stored {
        /// Its path.
        path: &'a str,
        /// Its rows.
        rows: u64,
        /// Its bytes.
        bytes: u64,
    },
    /// A partition is done (or, dry, would be compacted).
    Finished(&'a PartitionCompacted),
}

/// One line for people: what happened, or (dry) what would be compacted.
impl std::fmt::Display for Progress<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Progress::Started {
                partition,
                index,
                total,
                files,
                bytes,
            } => write!(
                f,
                "[{index}/{total}] {partition}: {files} files, {bytes} bytes"
            ),
            Progress::Read {
                partition,
                read,
                files,
            } => write!(f, "  {partition}: read {read}/{files} files"),
            Progress::Stored { path, rows, bytes } => {
                write!(f, "  stored {path}: {rows} rows, {bytes} bytes")
            }
            Progress::Finished(done) if done.outputs.is_empty() && done.rows_in == 0 => write!(
                f,
                "{}: {} files, {} bytes",
                done.partition, done.files_in, done.bytes_in
            ),
            Progress::Finished(done) => write!(
                f,
                "  {}: {} files into {}, {} rows into {} ({} duplicates), {} bytes into {}, {:.1} s",
                done.partition,
                done.files_in,
                done.outputs.len(),
                done.rows_in,
                done.rows_out,
                done.duplicates,
                done.bytes_in,
                done.bytes_out,
                done.elapsed.as_secs_f64()
            ),
        }
    }
}

/// Compacts every closed hour partition of the dataset: those whose hour ended at or before
/// `closed_before_us` (the caller subtracts the pipeline's grace period for late events from
/// the current time). See the [module docs](self) for how, and what a crash leaves.
///
/// Partitions already compacted (all files the outputs of one compaction) and files outside
/// the `<table>/year=/month=/day=/hour=/<file>.parquet` layout are left alone.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use firehose_core::Event;
/// use firehose_sink::{BatchName, CompactOptions, LocalStorage, ParquetOptions, Storage, Writer, compact};
///
/// # let dir = std::env::temp_dir().join(format!("firehose-compact-doc-{}", std::process::id()));
/// let storage = Arc::new(LocalStorage::new(&dir));
/// let writer = Writer::new(storage.clone(), ParquetOptions::default());
/// let line = r#"{"did":"did:plc:a","time_us":1763600000000000,"kind":"commit","commit":{"rev":"3l","operation":"delete","collection":"app.bsky.feed.like","rkey":"3k"}}"#;
/// let event = Event::decode(line.as_bytes())?;
/// // The same event written twice, as a replay would.
/// writer.write(&BatchName::new("1", "1")?, &[event.clone()]).await?;
/// writer.write(&BatchName::new("2", "2")?, &[event]).await?;
///
/// let done = compact(storage.as_ref(), i64::MAX, &CompactOptions::default(), |_| {}).await?;
/// assert_eq!((done.files_in, done.files_out, done.duplicates, done.rows_out), (2, 1, 1, 1));
/// // Compacting again finds nothing to do.
/// let again = compact(storage.as_ref(), i64::MAX, &CompactOptions::default(), |_| {}).await?;
/// assert_eq!((again.partitions, again.already_compact), (0, 1));
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok(())
/// # }
/// ```
pub async fn compact(
    storage: &dyn Storage,
    closed_before_us: i64,
    options: &CompactOptions,
    on_progress: impl FnMut(Progress<'_>),
) -> Result<Compacted> {
    if options.target_size == 0 || options.slice_bytes == 0 {
        return Err(Error::Config(
            "compaction target size and slice size must be positive".into(),
        ));
    }
    // Group the listing (sorted by path, so a partition's files are consecutive).
    let mut partitions: Vec<(PartitionKey, Vec<ObjectInfo>)> = Vec::new();
    for object in storage.list("").await? {
        let Some(key) = partition_of(&object.path) else {
            continue;
        };
        if !object.path.ends_with(".parquet") {
            continue;
        }
        match partitions.last_mut() {
            Some((last, files)) if *last == key => files.push(object),
            _ => partitions.push((key, vec![object])),
        }
    }
    let mut report = Compacted::default();
    let mut todo = Vec::new();
    for (key, files) in partitions {
        if key.hour.start_us().saturating_add(HOUR_US) > closed_before_us {
            report.open += 1;
        } else if is_compacted(&files) {
            report.already_compact += 1;
        } else {
            todo.push((key, files));
        }
    }
    // A spill directory that cannot be used fails the run now, not when the first partition
    // large enough to spill comes.
    if !options.dry_run && !todo.is_empty() {
        fs::create_dir_all(&options.spill_dir).map_err(|source| Error::Io {
            op: "create spill directory",
            path: options.spill_dir.display().to_string(),
            source,
        })?;
    }
    // Largest first: the small partitions fill in around the large ones, instead of one large
    // partition running alone at the end while the other threads idle.
    if options.threads > 1 {
        todo.sort_by_key(|(_, files)| std::cmp::Reverse(files.iter().map(|f| f.size).sum::<u64>()));
    }
    let total = todo.len();
    // Partitions run concurrently, as futures of this task whose heavy steps run on blocking
    // threads; progress callbacks come one at a time (the futures are polled in turn, and none
    // holds the callback across an await).
    let progress = std::cell::RefCell::new(on_progress);
    // A partition holds a CPU slot while it reads, sorts and encodes, and gives it back while it
    // stores its last output and deletes its inputs, so a partition waiting on the disk or the
    // network does not keep a core idle; its memory stays reserved until it is done.
    let slots = tokio::sync::Semaphore::new(options.threads.max(1));
    let mut queue = todo.into_iter().enumerate().peekable();
    let mut running = FuturesUnordered::new();
    let mut reserved = 0u64;
    let fits = |reserved: u64, files: &[ObjectInfo]| {
        reserved.saturating_add(partition_memory(files, options)) <= options.memory_budget
    };
    loop {
        // Start partitions while a slot is free and the budget allows; one always runs.
        while let Some((_, (_, files))) = queue.peek() {
            if !running.is_empty() && !fits(reserved, files) {
                break;
            }
            let Ok(slot) = slots.try_acquire() else {
                break;
            };
            let Some((i, (key, files))) = queue.next() else {
                break;
            };
            let memory = partition_memory(&files, options);
            reserved += memory;
            let progress = &progress;
            running.push(async move {
                let mut report = |p: Progress<'_>| (progress.borrow_mut())(p);
                let done = compact_one(
                    storage,
                    key,
                    files,
                    (i + 1, total),
                    options,
                    slot,
                    &mut report,
                )
                .await;
                (memory, done)
            });
        }
        // Wait for a partition to finish, or to give its slot back while the next one fits.
        let next_fits = queue
            .peek()
            .is_some_and(|(_, (_, files))| fits(reserved, files));
        tokio::select! {
            done = running.next() => {
                let Some((memory, done)) = done else {
                    break;
                };
                reserved -= memory;
                report.add(&done?);
            }
            slot = slots.acquire(), if next_fits => drop(slot),
        }
    }
    Ok(report)
}

/// Reads or deletes a partition sends to the storage at once (many small files, to object
/// storage, would otherwise go one round trip at a time, or all at once).
const REQUESTS_AT_ONCE: usize = 16;

/// Partitions of up to this many slices keep them in memory instead of spilling them; two
/// slices decoded (about 8 times [`CompactOptions::slice_bytes`]) stay within the memory
/// counted for a slice being sorted.
const HELD_SLICES: usize = 2;

/// The memory one partition's compaction takes, at most about: two groups of inputs (each up to
/// the slice size, or its largest input, read whole), ten times the slice size (a slice
/// decoded, sorted and merged) and the output being encoded (up to the target size, or the
/// partition's size when smaller).
pub fn partition_memory(files: &[ObjectInfo], options: &CompactOptions) -> u64 {
    let bytes: u64 = files.iter().map(|f| f.size).sum();
    let largest = files.iter().map(|f| f.size).max().unwrap_or(0);
    largest
        .max(options.slice_bytes)
        .saturating_mul(2)
        .saturating_add(options.slice_bytes.saturating_mul(10))
        .saturating_add(bytes.min(options.target_size))
}

/// Compacts (or, dry, reports) the `index`-th partition of `total`, with its progress; `slot`
/// is its CPU slot, given back once its CPU work is done.
async fn compact_one(
    storage: &dyn Storage,
    key: PartitionKey,
    files: Vec<ObjectInfo>,
    (index, total): (usize, usize),
    options: &CompactOptions,
    slot: SemaphorePermit<'_>,
    on_progress: &mut impl FnMut(Progress<'_>),
) -> Result<PartitionCompacted> {
    let partition = key.path();
    let bytes = files.iter().map(|f| f.size).sum();
    on_progress(Progress::Started {
        partition: &partition,
        index,
        total,
        files: files.len(),
        bytes,
    });
    let started = std::time::Instant::now();
    let mut done = if options.dry_run {
        PartitionCompacted {
            partition: partition.clone(),
            files_in: files.len(),
            bytes_in: bytes,
            ..PartitionCompacted::default()
        }
    } else {
        compact_partition(storage, key, &files, options, slot, on_progress).await?
    };
    done.elapsed = started.elapsed();
    on_progress(Progress::Finished(&done));
    Ok(done)
}

/// `files` cut into consecutive groups of up to `slice_bytes` together (a larger file alone).
fn input_groups(files: &[ObjectInfo], slice_bytes: u64) -> Vec<std::ops::Range<usize>> {
    let mut groups = Vec::new();
    let mut start = 0;
    let mut bytes = 0u64;
    for (i, file) in files.iter().enumerate() {
        if i > start && bytes.saturating_add(file.size) > slice_bytes {
            groups.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes = bytes.saturating_add(file.size);
    }
    if start < files.len() {
        groups.push(start..files.len());
    }
    groups
}

/// The file name of a dataset path.
fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Whether `files` are exactly the outputs of one compaction.
fn is_compacted(files: &[ObjectInfo]) -> bool {
    layout::is_compacted_partition(files.iter().map(|f| f.path.as_str()))
}

/// A stable hash of the input names, naming the outputs.
fn inputs_hash(files: &[ObjectInfo]) -> String {
    names_hash(files.iter().map(|f| file_name(&f.path)))
}

/// A stable hash of a set of file names, whatever their order (FNV-1a, 64 bits, in hex; std's
/// hasher may change between Rust releases): how compaction and a writer's joins name their
/// outputs, so that work done again makes the same files.
pub(crate) fn names_hash<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let mut names: Vec<&str> = names.collect();
    names.sort_unstable();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for name in names {
        for &b in name.as_bytes().iter().chain(b"\n") {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Task(e.to_string()))
}

/// Compacts one partition (see the module docs).
async fn compact_partition(
    storage: &dyn Storage,
    key: PartitionKey,
    files: &[ObjectInfo],
    options: &CompactOptions,
    slot: SemaphorePermit<'_>,
    on_progress: &mut impl FnMut(Progress<'_>),
) -> Result<PartitionCompacted> {
    let partition = key.path();
    let hash = inputs_hash(files);
    let bytes_in: u64 = files.iter().map(|f| f.size).sum();
    let slices = usize::try_from(bytes_in.div_ceil(options.slice_bytes))
        .unwrap_or(usize::MAX)
        .clamp(1, 3600);
    let table_schema = schema(key.table);
    let mut report = PartitionCompacted {
        partition: partition.clone(),
        files_in: files.len(),
        bytes_in,
        ..PartitionCompacted::default()
    };

    // 1. Scatter every input's rows into time slices on local disk (or in memory).
    let spill = (slices > HELD_SLICES)
        .then(|| SpillDir::create(&options.spill_dir, &hash))
        .transpose()?;
    let mut scatter = Scatter::new(
        spill.as_ref(),
        table_schema.clone(),
        key.hour.start_us(),
        slices,
        &partition,
    )?;
    let mut merge = Merge {
        schema: table_schema,
        options: options.clone(),
        partition: partition.clone(),
        seen: HashSet::new(),
        output: None,
        duplicates: 0,
    };
    // Inputs go in groups of up to a slice's worth, read at once and then scattered in one
    // blocking call: each hand-over between the runtime and a blocking thread waits for a core
    // when every core is busy, and one per small file left the cores idle. The next group is
    // read while this one is scattered, so the core never waits for the storage in between.
    // For the same reason a partition that keeps its slices in memory is also sorted and
    // encoded (steps 2 and 3) in the call that scatters its last group: most partitions are
    // small, and for them the hand-overs are a large part of the time.
    let groups = input_groups(files, options.slice_bytes);
    let keeps_slices = scatter.keeps_slices();
    let read_group = |group: &std::ops::Range<usize>| {
        futures::stream::iter(&files[group.clone()])
            .map(|f| storage.get(&f.path))
            .buffered(REQUESTS_AT_ONCE)
            .try_collect::<Vec<Bytes>>()
    };
    let mut data = match groups.first() {
        Some(first) => read_group(first).await?,
        None => Vec::new(),
    };
    let mut merged = None;
    for (i, group) in groups.iter().enumerate() {
        let paths: Vec<String> = files[group.clone()]
            .iter()
            .map(|f| f.path.clone())
            .collect();
        let merge_too = keeps_slices && i + 1 == groups.len();
        let scattering = blocking(move || {
            let rows: Result<u64> = paths
                .iter()
                .zip(data)
                .map(|(path, data)| scatter.add(path, data))
                .sum();
            let outputs = (merge_too && rows.is_ok()).then(|| merge.all(scatter.finish()?));
            (scatter, merge, rows, outputs)
        });
        let next = async {
            match groups.get(i + 1) {
                Some(next) => read_group(next).await,
                None => Ok(Vec::new()),
            }
        };
        let (scattered, next) = tokio::join!(scattering, next);
        let (returned_scatter, returned_merge, rows, outputs) = scattered?;
        (scatter, merge) = (returned_scatter, returned_merge);
        report.rows_in += rows?;
        merged = outputs.transpose()?;
        data = next?;
        on_progress(Progress::Read {
            partition: &partition,
            read: group.end,
            files: files.len(),
        });
    }

    // 2 and 3. Slice by slice: sort, drop duplicates, write outputs of about the target size.
    let mut next_output = 0usize;
    let input_paths: HashSet<&str> = files.iter().map(|f| f.path.as_str()).collect();
    let mut store = async |file: Vec<u8>, rows: u64, report: &mut PartitionCompacted| {
        let path = format!(
            "{partition}/{}",
            layout::compacted_file_name(&hash, next_output)
        );
        next_output += 1;
        if input_paths.contains(path.as_str()) {
            return Err(Error::Compact {
                partition: partition.clone(),
                reason: format!("output {path} would replace an input"),
            });
        }
        let bytes = file.len() as u64;
        storage.put(&path, Bytes::from(file)).await?;
        on_progress(Progress::Stored {
            path: &path,
            rows,
            bytes,
        });
        report.rows_out += rows;
        report.bytes_out += bytes;
        report.outputs.push(path);
        Ok(())
    };
    // The outputs left to store once the CPU work is done.
    let last = match merged {
        Some(outputs) => outputs,
        None => {
            // Spilled slices, read back one at a time; each output is stored as soon as it
            // reaches its target size, and the last one is closed with the last slice.
            let slices = scatter.finish()?;
            let count = slices.len();
            let mut last = Vec::new();
            for (i, slice) in slices.into_iter().enumerate() {
                let is_last = i + 1 == count;
                let (returned, finished) = blocking(move || {
                    let finished = if is_last {
                        merge.all(vec![slice])
                    } else {
                        merge.add_slice(slice)
                    };
                    (merge, finished)
                })
                .await?;
                merge = returned;
                if is_last {
                    last = finished?;
                } else {
                    for (file, rows) in finished? {
                        store(file, rows, &mut report).await?;
                    }
                }
            }
            last
        }
    };
    report.duplicates = merge.duplicates;
    // The CPU work is done: the slot goes to the next partition while this one stores.
    drop(slot);
    for (file, rows) in last {
        store(file, rows, &mut report).await?;
    }
    drop(spill);

    // 4. Every output is durable: the inputs can go.
    futures::stream::iter(files)
        .map(|f| storage.delete(&f.path))
        .buffer_unordered(REQUESTS_AT_ONCE)
        .try_collect::<()>()
        .await?;
    tracing::info!(
        %partition,
        files_in = report.files_in,
        files_out = report.outputs.len(),
        rows_in = report.rows_in,
        rows_out = report.rows_out,
        duplicates = report.duplicates,
        "Compacted partition."
    );
    Ok(report)
}

/// A temporary local directory, removed when dropped.
#[derive(Debug)]
struct SpillDir {
    path: PathBuf,
}

impl SpillDir {
    fn create(parent: &Path, hash: &str) -> Result<Self> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let path = parent.join(format!(
            "firehose-compact-{}-{}-{hash}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&path).map_err(|source| Error::Io {
            op: "create spill directory",
            path: path.display().to_string(),
            source,
        })?;
        Ok(SpillDir { path })
    }
}

impl Drop for SpillDir {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "Could not remove the spill directory.");
        }
    }
}

fn spill_error(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        op: "spill",
        path: path.display().to_string(),
        source,
    }
}

fn compact_error(partition: &str, reason: impl std::fmt::Display) -> Error {
    Error::Compact {
        partition: partition.to_owned(),
        reason: reason.to_string(),
    }
}

/// Step 1: rows to the spill file of their time slice.
struct Scatter {
    schema: SchemaRef,
    hour_start_us: i64,
    partition: String,
    /// Time slices of the hour.
    count: usize,
    /// Spill files, by slice (none when the slices are held).
    slices: Vec<(PathBuf, Option<StreamWriter<BufWriter<File>>>)>,
    /// A small partition (up to [`HELD_SLICES`] slices) keeps its slices in memory: spilling
    /// them would only make it wait on the disk, and they fit the memory counted for a slice.
    held: Option<Vec<Vec<RecordBatch>>>,
}

/// A time slice's rows: spilled to a file, or held when the partition is small.
enum Slice {
    Spilled(PathBuf),
    Held(Vec<RecordBatch>),
}

impl Scatter {
    /// Slices spilled into `spill`, or (without one) kept in memory.
    fn new(
        spill: Option<&SpillDir>,
        schema: SchemaRef,
        hour_start_us: i64,
        slices: usize,
        partition: &str,
    ) -> Result<Self> {
        Ok(Scatter {
            schema,
            hour_start_us,
            partition: partition.to_owned(),
            count: slices,
            slices: match spill {
                Some(spill) => (0..slices)
                    .map(|i| (spill.path.join(format!("slice-{i:04}.arrows")), None))
                    .collect(),
                None => Vec::new(),
            },
            held: spill.is_none().then(|| vec![Vec::new(); slices]),
        })
    }

    /// Reads the Parquet file `data` (at `path`) into the slices; returns its rows.
    fn add(&mut self, path: &str, data: Bytes) -> Result<u64> {
        let partition = self.partition.clone();
        let read_error =
            |e: &dyn std::fmt::Display| compact_error(&partition, format!("reading {path}: {e}"));
        let reader = ParquetRecordBatchReaderBuilder::try_new(data)
            .and_then(|b| b.with_batch_size(READ_BATCH_ROWS).build())
            .map_err(|e| read_error(&e))?;
        let mut rows = 0u64;
        for batch in reader {
            let batch = batch.map_err(|e| read_error(&e))?;
            let batch = conform(&batch, &self.schema).map_err(|e| read_error(&e))?;
            rows += batch.num_rows() as u64;
            self.scatter(&batch)?;
        }
        Ok(rows)
    }

    fn scatter(&mut self, batch: &RecordBatch) -> Result<()> {
        let n = self.count;
        let times = time_us(batch).map_err(|e| compact_error(&self.partition, e))?;
        // Rows outside the hour (which the writer never puts there) go to the first or last slice.
        let slice_of = |t: i64| {
            let offset = t.saturating_sub(self.hour_start_us).clamp(0, HOUR_US - 1);
            (offset as i128 * n as i128 / HOUR_US as i128) as usize
        };
        let first = times.first().map(|&t| slice_of(t));
        if first.is_some_and(|s| times.iter().all(|&t| slice_of(t) == s)) {
            // The usual case: the whole batch in one slice.
            return self.write(first.unwrap_or(0), batch.clone());
        }
        let assigned: Vec<usize> = times.iter().map(|&t| slice_of(t)).collect();
        let mut present: Vec<usize> = assigned.clone();
        present.sort_unstable();
        present.dedup();
        for slice in present {
            let mask = BooleanArray::from_iter(assigned.iter().map(|&s| Some(s == slice)));
            let part =
                filter_record_batch(batch, &mask).map_err(|e| compact_error(&self.partition, e))?;
            self.write(slice, part)?;
        }
        Ok(())
    }

    fn write(&mut self, slice: usize, batch: RecordBatch) -> Result<()> {
        if let Some(held) = &mut self.held {
            held[slice].push(batch);
            return Ok(());
        }
        let (path, writer) = &mut self.slices[slice];
        let writer = match writer {
            Some(w) => w,
            None => {
                let file = File::create(&*path).map_err(spill_error(path))?;
                let options = IpcWriteOptions::default()
                    .try_with_compression(Some(CompressionType::LZ4_FRAME))
                    .map_err(|e| compact_error(&self.partition, e))?;
                let w = StreamWriter::try_new_with_options(
                    BufWriter::with_capacity(1 << 20, file),
                    &self.schema,
                    options,
                )
                .map_err(|e| compact_error(&self.partition, e))?;
                writer.insert(w)
            }
        };
        writer
            .write(&batch)
            .map_err(|e| compact_error(&self.partition, e))
    }

    /// Closes the spill files; returns the slices that hold rows, in time order.
    /// Whether the slices stay in memory (a small partition) rather than spilled.
    fn keeps_slices(&self) -> bool {
        self.held.is_some()
    }

    /// The slices, in time order, with their spill files closed; empty ones left out.
    fn finish(&mut self) -> Result<Vec<Slice>> {
        if let Some(held) = self.held.take() {
            return Ok(held
                .into_iter()
                .filter(|batches| !batches.is_empty())
                .map(Slice::Held)
                .collect());
        }
        let mut out = Vec::new();
        for (path, writer) in std::mem::take(&mut self.slices) {
            if let Some(mut writer) = writer {
                writer
                    .finish()
                    .map_err(|e| compact_error(&self.partition, e))?;
                let file = writer
                    .into_inner()
                    .map_err(|e| compact_error(&self.partition, e))?;
                file.into_inner()
                    .map_err(|e| spill_error(&path)(e.into_error()))?;
                out.push(Slice::Spilled(path));
            }
        }
        Ok(out)
    }
}

/// `batch` with the columns of `schema`: a column missing from an older file becomes nulls
/// (record columns are added only as nullable). A column the table does not have, or of
/// another type, is an error: dropping or converting it would lose data.
fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, String> {
    if batch.schema() == *schema {
        return Ok(batch.clone());
    }
    for field in batch.schema().fields() {
        if schema.field_with_name(field.name()).is_err() {
            return Err(format!(
                "column {:?} is not in this table's schema (written by a newer version?)",
                field.name()
            ));
        }
    }
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|field| match batch.column_by_name(field.name()) {
            Some(column) if column.data_type() == field.data_type() => Ok(column.clone()),
            Some(column) => Err(format!(
                "column {:?} is {}, expected {}",
                field.name(),
                column.data_type(),
                field.data_type()
            )),
            None => Ok(new_null_array(field.data_type(), batch.num_rows())),
        })
        .collect::<Result<_, _>>()?;
    RecordBatch::try_new(schema.clone(), columns).map_err(|e| e.to_string())
}

fn time_us(batch: &RecordBatch) -> Result<&[i64], String> {
    batch
        .column_by_name("time_us")
        .and_then(|c| c.as_primitive_opt::<Int64Type>())
        .filter(|c| c.null_count() == 0)
        .map(|c| c.values().as_ref())
        .ok_or_else(|| "no time_us column of non-null integers".to_owned())
}

/// Steps 2 and 3: sorted, de-duplicated slices into outputs.
struct Merge {
    schema: SchemaRef,
    options: CompactOptions,
    partition: String,
    /// The 128-bit hashes of the event keys written so far.
    seen: HashSet<u128>,
    output: Option<Output>,
    duplicates: u64,
}

struct Output {
    writer: ArrowWriter<Vec<u8>>,
    rows: u64,
}

impl Merge {
    /// Adds the rows of one spilled slice; returns the outputs that reached their target size.
    fn add_slice(&mut self, slice: Slice) -> Result<Vec<(Vec<u8>, u64)>> {
        let batches = match slice {
            Slice::Held(batches) => batches,
            Slice::Spilled(path) => {
                let file = File::open(&path).map_err(spill_error(&path))?;
                let reader = StreamReader::try_new(BufReader::with_capacity(1 << 20, file), None)
                    .map_err(|e| compact_error(&self.partition, e))?;
                reader
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| compact_error(&self.partition, e))?
            }
        };
        let rows = self.sorted_unique_rows(&batches)?;
        // Copy the rows out in order a chunk at a time, so the slice is never held twice.
        let mut finished = Vec::new();
        for chunk in rows.chunks(WRITE_CHUNK_ROWS) {
            let batch = interleave_record_batch(&batches.iter().collect::<Vec<_>>(), chunk)
                .map_err(|e| compact_error(&self.partition, e))?;
            let output = match &mut self.output {
                Some(o) => o,
                None => {
                    // Never marked duplicate-free: until compaction deletes its inputs, they
                    // hold the same events (readers know a finished compaction by its names).
                    let parquet = ParquetOptions {
                        duplicate_free: false,
                        ..self.options.parquet.clone()
                    };
                    let properties = parquet
                        .writer_properties()
                        .map_err(|e| self.parquet_error(e))?;
                    // Reserved, not touched: the pages the file does not fill never become
                    // resident, and the buffer is never copied to grow.
                    let capacity = usize::try_from(self.options.target_size)
                        .unwrap_or(usize::MAX)
                        .saturating_add(self.options.target_size as usize / 4)
                        .saturating_add(8 << 20);
                    let writer = ArrowWriter::try_new(
                        Vec::with_capacity(capacity),
                        self.schema.clone(),
                        Some(properties),
                    )
                    .map_err(|e| self.parquet_error(e))?;
                    self.output.insert(Output { writer, rows: 0 })
                }
            };
            output
                .writer
                .write(&batch)
                .map_err(|source| Error::Parquet {
                    partition: self.partition.clone(),
                    source,
                })?;
            output.rows += batch.num_rows() as u64;
            let size = output.writer.bytes_written() + output.writer.in_progress_size();
            if size as u64 >= self.options.target_size
                && let Some(done) = self.finish()?
            {
                finished.push(done);
            }
        }
        Ok(finished)
    }

    /// Adds every slice and closes the last output: all the outputs, in order.
    fn all(&mut self, slices: Vec<Slice>) -> Result<Vec<(Vec<u8>, u64)>> {
        let mut outputs = Vec::new();
        for slice in slices {
            outputs.extend(self.add_slice(slice)?);
        }
        outputs.extend(self.finish()?);
        Ok(outputs)
    }

    /// Closes the output being built, if any: its bytes and rows.
    fn finish(&mut self) -> Result<Option<(Vec<u8>, u64)>> {
        let Some(output) = self.output.take() else {
            return Ok(None);
        };
        let file = output
            .writer
            .into_inner()
            .map_err(|e| self.parquet_error(e))?;
        Ok(Some((file, output.rows)))
    }

    fn parquet_error(&self, source: parquet::errors::ParquetError) -> Error {
        Error::Parquet {
            partition: self.partition.clone(),
            source,
        }
    }

    /// The rows of the slice (`batches`) as `(batch, row)` pairs, sorted by `(time_us, did,
    /// collection, rkey, rev)`, without rows whose event key was seen before (in this slice or
    /// an earlier one). Only the key columns are copied to sort them.
    fn sorted_unique_rows(&mut self, batches: &[RecordBatch]) -> Result<Vec<(usize, usize)>> {
        let error = |e: &dyn std::fmt::Display| compact_error(&self.partition, e);
        let key_columns: Vec<usize> = KEY_COLUMNS
            .iter()
            .map(|name| self.schema.index_of(name).map_err(|e| error(&e)))
            .collect::<Result<_>>()?;
        let key_schema = Arc::new(self.schema.project(&key_columns).map_err(|e| error(&e))?);
        let projected = batches
            .iter()
            .map(|b| b.project(&key_columns))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| error(&e))?;
        let keys = concat_batches(&key_schema, &projected).map_err(|e| error(&e))?;
        drop(projected);
        let sort_columns: Vec<SortColumn> = SORT_COLUMNS
            .iter()
            .map(|name| {
                Ok(SortColumn {
                    values: keys
                        .column_by_name(name)
                        .cloned()
                        .ok_or_else(|| error(&format!("no {name} column")))?,
                    options: Some(SortOptions::default()),
                })
            })
            .collect::<Result<_>>()?;
        let order = lexsort_to_indices(&sort_columns, None).map_err(|e| error(&e))?;
        let view = EventKeys::of(&keys).map_err(|e| error(&e))?;
        // Row `i` of the concatenation is row `i - starts[b]` of batch `b`.
        let starts: Vec<usize> = batches
            .iter()
            .scan(0, |start, b| {
                let this = *start;
                *start += b.num_rows();
                Some(this)
            })
            .collect();
        let mut rows = Vec::with_capacity(order.len());
        for &i in order.values() {
            let i = i as usize;
            if self.seen.insert(view.hash(i)) {
                let batch = starts.partition_point(|&s| s <= i) - 1;
                rows.push((batch, i - starts[batch]));
            } else {
                self.duplicates += 1;
            }
        }
        Ok(rows)
    }
}

/// Rows are sorted by these columns.
const SORT_COLUMNS: [&str; 5] = ["time_us", "did", "collection", "rkey", "rev"];

/// The envelope columns an event's key and the sort order are read from.
const KEY_COLUMNS: [&str; 6] = ["did", "time_us", "kind", "collection", "rkey", "rev"];

/// The envelope columns that make up an event's key.
struct EventKeys<'a> {
    did: &'a arrow::array::StringArray,
    kind: &'a arrow::array::StringArray,
    time_us: &'a [i64],
    collection: &'a arrow::array::StringArray,
    rkey: &'a arrow::array::StringArray,
    rev: &'a arrow::array::StringArray,
}

impl<'a> EventKeys<'a> {
    fn of(batch: &'a RecordBatch) -> Result<Self, String> {
        let string = |name: &str| {
            batch
                .column_by_name(name)
                .and_then(|c| c.as_string_opt::<i32>())
                .ok_or_else(|| format!("no {name} string column"))
        };
        Ok(EventKeys {
            did: string("did")?,
            kind: string("kind")?,
            time_us: time_us(batch)?,
            collection: string("collection")?,
            rkey: string("rkey")?,
            rev: string("rev")?,
        })
    }

    /// A 128-bit hash of row `i`'s event key ([`firehose_core::EventKey`]): a commit by (did,
    /// collection, rkey, rev); identity and account events by (did, time_us). Two 64-bit
    /// SipHashes with different seeds: a false match among a billion keys has a chance of
    /// about 10^-21.
    fn hash(&self, i: usize) -> u128 {
        let value = |a: &'a arrow::array::StringArray| a.is_valid(i).then(|| a.value(i));
        let hash_with = |seed: u8| {
            let mut h = DefaultHasher::new();
            seed.hash(&mut h);
            let kind = value(self.kind);
            kind.hash(&mut h);
            value(self.did).hash(&mut h);
            if kind == Some("commit") {
                value(self.collection).hash(&mut h);
                value(self.rkey).hash(&mut h);
                value(self.rev).hash(&mut h);
            } else {
                self.time_us[i].hash(&mut h);
            }
            h.finish()
        };
        (u128::from(hash_with(0)) << 64) | u128::from(hash_with(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(path: &str) -> ObjectInfo {
        ObjectInfo {
            path: path.into(),
            size: 1,
        }
    }

    #[test]
    fn a_partition_is_compacted_when_all_files_share_one_hash() {
        assert!(is_compacted(&[info("p/compact-aa-0000.parquet")]));
        assert!(is_compacted(&[
            info("p/compact-aa-0000.parquet"),
            info("p/compact-aa-0001.parquet")
        ]));
        assert!(!is_compacted(&[
            info("p/compact-aa-0000.parquet"),
            info("p/compact-bb-0000.parquet")
        ]));
        assert!(!is_compacted(&[
            info("p/compact-aa-0000.parquet"),
            info("p/1-0_2-0.parquet")
        ]));
        assert!(!is_compacted(&[info("p/1-0_2-0.parquet")]));
        assert!(!is_compacted(&[]));
    }

    #[test]
    fn the_inputs_hash_ignores_order_and_directory() {
        let a = inputs_hash(&[info("p/a.parquet"), info("p/b.parquet")]);
        assert_eq!(a, inputs_hash(&[info("q/b.parquet"), info("q/a.parquet")]));
        assert_ne!(a, inputs_hash(&[info("p/a.parquet")]));
        // Names are separated, so ["ab", "c"] and ["a", "bc"] differ.
        assert_ne!(
            inputs_hash(&[info("ab"), info("c")]),
            inputs_hash(&[info("a"), info("bc")])
        );
        assert_eq!(a.len(), 16);
    }
}
