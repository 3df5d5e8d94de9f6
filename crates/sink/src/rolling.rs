//! Open files: events accumulate per partition until the files are closed by size, age, an
//! hour closing, or memory, then are encoded and stored together under one batch name.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use bytes::Bytes;
use firehose_core::{
    BatchBuilder, Event, HOUR_US, Hour, PartitionKey, Table, time_us_is_plausible,
};

use crate::encode::{ParquetOptions, encode};
use crate::writer::{BatchName, Committed, FileWritten};
use crate::{Error, Result, Storage};

pub use firehose_core::layout::DEAD_LETTER_TABLE;

/// When open files are closed.
///
/// Files close together, as one batch, at whichever comes first: the largest partition's
/// file reaching `target_file_bytes` (estimated from its JSON size and the compression ratio
/// seen so far), the oldest open event reaching `max_age`, an hour closing (the newest event
/// time seen passing the hour's end plus `grace`), or the JSON held open reaching
/// `max_open_bytes` (which bounds memory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollPolicy {
    /// Target size of one Parquet file (default 100 MB).
    pub target_file_bytes: u64,
    /// Longest time an event waits in an open file (default 5 minutes).
    pub max_age: Duration,
    /// How long after its end an hour still takes late events in its open file (default 3
    /// minutes). Events older than that still go to their own hour, in a file of their own.
    pub grace: Duration,
    /// Most JSON bytes held in open files (default 32 MiB).
    pub max_open_bytes: u64,
}

impl Default for RollPolicy {
    fn default() -> Self {
        RollPolicy {
            target_file_bytes: 100_000_000,
            max_age: Duration::from_secs(300),
            grace: Duration::from_secs(180),
            max_open_bytes: 32 * 1024 * 1024,
        }
    }
}

/// Why open files were closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RollReason {
    /// A file reached the target size.
    Size,
    /// The oldest open event reached the maximum age.
    Age,
    /// An hour passed its grace period.
    HourClosed,
    /// The open files reached their memory bound.
    Memory,
}

impl RollReason {
    /// A short name, for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            RollReason::Size => "size",
            RollReason::Age => "age",
            RollReason::HourClosed => "hour_closed",
            RollReason::Memory => "memory",
        }
    }
}

#[derive(Debug, Default)]
struct OpenPartition {
    builder: BatchBuilder,
    json_bytes: u64,
    /// The hour had already closed when this partition was opened: its events are late, and
    /// do not keep the batch open until another hour closes.
    late: bool,
}

/// A message that could not be decoded, kept in the dead-letter table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// When it was received, Unix microseconds.
    pub received_us: i64,
    /// The failure's category: `syntax`, `truncated`, `shape`, `envelope`, `utf8`, `zstd`…
    pub reason: String,
    /// The error message.
    pub error: String,
    /// The raw message.
    pub raw: Bytes,
}

/// Now, Unix microseconds.
fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// Events accumulating in open files, one per partition, until [`OpenFiles::due`] says to close
/// them. The newest event time and the compression ratio carry over from batch to batch.
#[derive(Debug)]
pub struct OpenFiles {
    partitions: BTreeMap<PartitionKey, OpenPartition>,
    dead_letters: Vec<DeadLetter>,
    opened_at: Option<Instant>,
    json_bytes: u64,
    events: u64,
    /// The newest event time seen, Unix microseconds, leaving out events stamped in the future
    /// ([`firehose_core::time_us_is_plausible`]), which would close every hour at once.
    watermark_us: i64,
    /// Parquet bytes per JSON byte in the last closed batch.
    ratio: f64,
    grace_us: i64,
}

impl OpenFiles {
    /// No open files; `grace` as in [`RollPolicy::grace`].
    pub fn new(grace: Duration) -> Self {
        OpenFiles {
            partitions: BTreeMap::new(),
            dead_letters: Vec::new(),
            opened_at: None,
            json_bytes: 0,
            events: 0,
            watermark_us: i64::MIN,
            ratio: 0.2,
            grace_us: i64::try_from(grace.as_micros()).unwrap_or(i64::MAX),
        }
    }

    /// Adds `event`, whose JSON was `json_len` bytes, to its partition's open file.
    pub fn push(&mut self, event: &Event<'_>, json_len: usize) {
        self.opened_at.get_or_insert_with(Instant::now);
        let key = event.partition();
        let closed = self.hour_closed(key.hour);
        let partition = self.partitions.entry(key).or_insert_with(|| OpenPartition {
            late: closed,
            ..OpenPartition::default()
        });
        partition.builder.push(event);
        partition.json_bytes += json_len as u64;
        self.json_bytes += json_len as u64;
        self.events += 1;
        if event.time_us > self.watermark_us && time_us_is_plausible(event.time_us, now_us()) {
            self.watermark_us = event.time_us;
        }
    }

    /// Adds a message that failed to decode.
    pub fn push_dead_letter(&mut self, letter: DeadLetter) {
        self.opened_at.get_or_insert_with(Instant::now);
        self.json_bytes += letter.raw.len() as u64;
        self.dead_letters.push(letter);
    }

    fn hour_closed(&self, hour: Hour) -> bool {
        hour.start_us()
            .saturating_add(HOUR_US)
            .saturating_add(self.grace_us)
            <= self.watermark_us
    }

    /// Whether the open files should be closed now, and why.
    pub fn due(&self, policy: &RollPolicy, now: Instant) -> Option<RollReason> {
        let opened_at = self.opened_at?;
        let largest = self
            .partitions
            .values()
            .map(|p| p.json_bytes)
            .max()
            .unwrap_or(0);
        if largest as f64 * self.ratio >= policy.target_file_bytes as f64 {
            Some(RollReason::Size)
        } else if self.json_bytes >= policy.max_open_bytes {
            Some(RollReason::Memory)
        } else if now.saturating_duration_since(opened_at) >= policy.max_age {
            Some(RollReason::Age)
        } else if self
            .partitions
            .iter()
            .any(|(key, p)| !p.late && self.hour_closed(key.hour))
        {
            Some(RollReason::HourClosed)
        } else {
            None
        }
    }

    /// Whether nothing is open.
    pub fn is_empty(&self) -> bool {
        self.opened_at.is_none()
    }

    /// Events open.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// JSON bytes open (events and dead letters).
    pub fn json_bytes(&self) -> u64 {
        self.json_bytes
    }

    /// The newest event time seen so far, if any, leaving out events stamped more than
    /// [`firehose_core::MAX_CLOCK_AHEAD_US`] ahead of the clock.
    pub fn watermark_us(&self) -> Option<i64> {
        (self.watermark_us != i64::MIN).then_some(self.watermark_us)
    }

    /// Takes the open files out, to be encoded under one name; the next events open new files.
    pub fn close(&mut self) -> Closing {
        self.opened_at = None;
        self.events = 0;
        Closing {
            partitions: std::mem::take(&mut self.partitions),
            dead_letters: std::mem::take(&mut self.dead_letters),
            json_bytes: std::mem::take(&mut self.json_bytes),
        }
    }

    /// Learns the compression ratio from a stored batch, for the size estimate.
    pub fn observe(&mut self, sealed: &Sealed) {
        if sealed.json_bytes > 0 && sealed.bytes() > 0 {
            self.ratio = sealed.bytes() as f64 / sealed.json_bytes as f64;
        }
    }
}

/// Closed files waiting to be encoded (CPU work: run it off the async threads).
#[derive(Debug)]
pub struct Closing {
    partitions: BTreeMap<PartitionKey, OpenPartition>,
    dead_letters: Vec<DeadLetter>,
    json_bytes: u64,
}

impl Closing {
    /// Encodes every file as Parquet, named `<partition>/<name>.parquet`, on this thread.
    pub fn encode(self, name: &BatchName, options: &ParquetOptions) -> Result<Sealed> {
        self.encode_on(name, options, 1)
    }

    /// [`encode`](Self::encode) on up to `threads` threads at once (the calling one among
    /// them), a partition at a time, largest first: a catch-up's batches hold a dozen
    /// partitions, and one core does not encode them as fast as the source delivers. The
    /// files, their bytes and their order are the same whatever `threads` is.
    pub fn encode_on(
        self,
        name: &BatchName,
        options: &ParquetOptions,
        threads: usize,
    ) -> Result<Sealed> {
        let jobs: Vec<(String, OpenPartition)> = self
            .partitions
            .into_iter()
            .map(|(key, partition)| (format!("{}/{}", key.path(), name.file_name()), partition))
            .collect();
        let encode_one = |(path, partition): (String, OpenPartition)| -> Result<Vec<SealedFile>> {
            partition
                .builder
                .finish()?
                .into_iter()
                .map(|(table, batch)| encode_file(path.clone(), Some(table), &batch, options))
                .collect()
        };
        let threads = threads.clamp(1, jobs.len().max(1));
        let encoded: Vec<Result<Vec<SealedFile>>> = if threads == 1 {
            jobs.into_iter().map(encode_one).collect()
        } else {
            let mut order: Vec<usize> = (0..jobs.len()).collect();
            order.sort_by_key(|&i| std::cmp::Reverse(jobs[i].1.json_bytes));
            let slots: Vec<Mutex<Option<(String, OpenPartition)>>> =
                jobs.into_iter().map(|job| Mutex::new(Some(job))).collect();
            let results: Vec<Mutex<Option<Result<Vec<SealedFile>>>>> =
                slots.iter().map(|_| Mutex::new(None)).collect();
            let next = AtomicUsize::new(0);
            let work = || {
                while let Some(&i) = order.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let job = slots[i].lock().ok().and_then(|mut slot| slot.take());
                    if let Some(job) = job {
                        let result = encode_one(job);
                        if let Ok(mut out) = results[i].lock() {
                            *out = Some(result);
                        }
                    }
                }
            };
            std::thread::scope(|scope| {
                for _ in 1..threads {
                    scope.spawn(work);
                }
                work();
            });
            results
                .into_iter()
                .map(|slot| {
                    slot.into_inner().ok().flatten().unwrap_or_else(|| {
                        Err(Error::Task(format!(
                            "an encoding worker stopped before its partition of {} was done",
                            name.file_name()
                        )))
                    })
                })
                .collect()
        };
        let mut files = Vec::new();
        for partition in encoded {
            files.extend(partition?);
        }
        // Dead letters have no event key: the mark is not theirs to carry.
        let letter_options = ParquetOptions {
            duplicate_free: false,
            ..options.clone()
        };
        let mut by_hour: BTreeMap<Hour, Vec<DeadLetter>> = BTreeMap::new();
        for letter in self.dead_letters {
            by_hour
                .entry(Hour::of(letter.received_us))
                .or_default()
                .push(letter);
        }
        for (hour, letters) in by_hour {
            let dir = firehose_core::layout::dead_letter_path(hour);
            let path = format!("{dir}/{}", name.file_name());
            files.push(encode_file(
                path,
                None,
                &dead_letter_batch(&letters)?,
                &letter_options,
            )?);
        }
        Ok(Sealed {
            files,
            json_bytes: self.json_bytes,
        })
    }
}

fn encode_file(
    path: String,
    table: Option<Table>,
    batch: &RecordBatch,
    options: &ParquetOptions,
) -> Result<SealedFile> {
    let data = encode(batch, options).map_err(|source| Error::Parquet {
        partition: path.clone(),
        source,
    })?;
    Ok(SealedFile {
        path,
        table,
        rows: batch.num_rows(),
        data,
    })
}

/// The dead-letter table's schema: `received_us, reason, error, raw, raw_encoding` (`raw` is
/// the message as text when it is UTF-8, else base64, as `raw_encoding` says).
pub fn dead_letter_schema() -> Schema {
    Schema::new(vec![
        Field::new("received_us", DataType::Int64, false),
        Field::new("reason", DataType::Utf8, false),
        Field::new("error", DataType::Utf8, false),
        Field::new("raw", DataType::Utf8, false),
        Field::new("raw_encoding", DataType::Utf8, false),
    ])
}

fn dead_letter_batch(letters: &[DeadLetter]) -> Result<RecordBatch> {
    use base64::Engine as _;
    let (raw, encoding): (Vec<String>, Vec<&str>) = letters
        .iter()
        .map(|l| match std::str::from_utf8(&l.raw) {
            Ok(text) => (text.to_owned(), "text"),
            Err(_) => (
                base64::engine::general_purpose::STANDARD.encode(&l.raw),
                "base64",
            ),
        })
        .unzip();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(
            letters.iter().map(|l| l.received_us),
        )),
        Arc::new(StringArray::from_iter_values(
            letters.iter().map(|l| l.reason.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            letters.iter().map(|l| l.error.as_str()),
        )),
        Arc::new(StringArray::from(raw)),
        Arc::new(StringArray::from(encoding)),
    ];
    RecordBatch::try_new(Arc::new(dead_letter_schema()), columns).map_err(|source| {
        Error::Arrow(firehose_core::ArrowBuildError::Arrow {
            table: DEAD_LETTER_TABLE,
            source,
        })
    })
}

/// One encoded file.
#[derive(Debug, Clone)]
pub struct SealedFile {
    /// Path relative to the dataset root.
    pub path: String,
    /// Its table; `None` for the dead-letter table.
    pub table: Option<Table>,
    /// Rows.
    pub rows: usize,
    /// The Parquet bytes.
    pub data: Bytes,
}

/// A batch of encoded files, ready to store (and to store again, after a failure).
#[derive(Debug, Clone)]
pub struct Sealed {
    /// The files.
    pub files: Vec<SealedFile>,
    /// JSON bytes of the events and dead letters they hold.
    pub json_bytes: u64,
}

impl Sealed {
    /// Parquet bytes across the files.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.data.len() as u64).sum()
    }

    /// Stores every file, all at once (one round trip of latency to object storage, not one
    /// a file); returns once all are durable. Storing again after a failure replaces the same
    /// objects.
    pub async fn store(&self, storage: &dyn Storage) -> Result<Committed> {
        futures::future::try_join_all(
            self.files
                .iter()
                .map(|file| storage.put(&file.path, file.data.clone())),
        )
        .await?;
        let files = self.files.iter().filter_map(|file| {
            Some(FileWritten {
                path: file.path.clone(),
                table: file.table?,
                rows: file.rows,
                bytes: file.data.len() as u64,
            })
        });
        Ok(Committed {
            files: files.collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use firehose_synth::{Config, Generator};

    fn events(n: usize, start_time_us: i64, rate: f64) -> Vec<Event<'static>> {
        Generator::new(Config {
            seed: 3,
            start_time_us,
            rate,
            ..Config::default()
        })
        .take(n)
        .collect()
    }

    #[test]
    fn encoding_on_several_threads_gives_the_same_files() {
        // Three hours of events: a dozen partitions.
        let evs = events(6_000, 1_763_600_000_000_000, 0.5);
        let fill = || {
            let mut open = OpenFiles::new(Duration::from_secs(60));
            for e in &evs {
                open.push(e, 400);
            }
            open.close()
        };
        let name = BatchName::new("a", "b").unwrap();
        let options = ParquetOptions::default();
        let one = fill().encode(&name, &options).unwrap();
        assert!(one.files.len() > 10, "{} files", one.files.len());
        for threads in [2, 3, 64] {
            let many = fill().encode_on(&name, &options, threads).unwrap();
            let shape = |s: &Sealed| -> Vec<(String, Option<Table>, usize, bytes::Bytes)> {
                s.files
                    .iter()
                    .map(|f| (f.path.clone(), f.table, f.rows, f.data.clone()))
                    .collect()
            };
            assert_eq!(shape(&many), shape(&one), "{threads} threads");
        }
    }

    #[test]
    fn an_event_stamped_in_the_future_is_kept_but_moves_no_watermark() {
        let policy = RollPolicy::default();
        let mut open = OpenFiles::new(policy.grace);
        let evs = events(3, 1_763_600_000_000_000, 100.0);
        open.push(&evs[0], 500);
        let mut future = evs[1].clone();
        future.time_us = 4_102_444_800_000_000; // 2100
        open.push(&future, 500);
        open.push(&evs[2], 500);
        assert_eq!(open.events(), 3, "kept");
        assert_eq!(open.watermark_us(), Some(evs[2].time_us));
        // Its hour did not close every other hour.
        assert_eq!(open.due(&policy, Instant::now()), None);
    }

    #[test]
    fn closes_on_age_memory_and_size() {
        let policy = RollPolicy {
            target_file_bytes: 1_000_000,
            max_age: Duration::from_secs(60),
            grace: Duration::from_secs(60),
            max_open_bytes: 10_000,
        };
        let mut open = OpenFiles::new(policy.grace);
        let now = Instant::now();
        assert_eq!(open.due(&policy, now), None);
        let evs = events(10, 1_763_600_000_000_000, 100.0);
        open.push(&evs[0], 500);
        assert_eq!(open.due(&policy, now), None);
        assert_eq!(
            open.due(&policy, now + Duration::from_secs(61)),
            Some(RollReason::Age)
        );
        open.push(&evs[1], 9_600);
        assert_eq!(open.due(&policy, now), Some(RollReason::Memory));
        open.push(&evs[2], 5_000_000);
        assert_eq!(open.due(&policy, now), Some(RollReason::Size));
        let closing = open.close();
        assert!(open.is_empty());
        assert_eq!(open.due(&policy, now), None);
        assert_eq!(closing.json_bytes, 5_010_100);
    }

    #[test]
    fn an_hour_closes_after_its_grace_but_late_events_do_not_hold_a_batch() {
        let grace = Duration::from_secs(120);
        let policy = RollPolicy {
            grace,
            ..RollPolicy::default()
        };
        let hour = 1_763_600_400_000_000 - 1_763_600_400_000_000 % HOUR_US;
        let mut open = OpenFiles::new(grace);
        let mut evs = events(3, hour, 1.0);
        evs[0].time_us = hour + HOUR_US - 1_000_000; // the last second of the hour
        open.push(&evs[0], 100);
        let now = Instant::now();
        // The next hour's events within the grace keep the first hour open...
        let mut next = events(1, hour + HOUR_US + 60_000_000, 1.0).remove(0);
        open.push(&next, 100);
        assert_eq!(open.due(&policy, now), None);
        // ...until an event past the grace closes it.
        next.time_us = hour + HOUR_US + 121_000_000;
        open.push(&next, 100);
        assert_eq!(open.due(&policy, now), Some(RollReason::HourClosed));
        open.close();
        // A late event for the closed hour opens a file of its own, which does not close
        // the batch by itself.
        let mut late = evs[1].clone();
        late.time_us = hour + 5;
        open.push(&late, 100);
        assert_eq!(open.due(&policy, now), None);
        let sealed = open
            .close()
            .encode(
                &BatchName::new("1-0", "2-0").unwrap(),
                &ParquetOptions::default(),
            )
            .unwrap();
        assert_eq!(sealed.files.len(), 1);
        assert!(
            sealed.files[0]
                .path
                .contains(&PartitionKey::new(late.table(), hour).path()),
            "{}",
            sealed.files[0].path
        );
    }

    #[test]
    fn dead_letters_get_their_own_table() {
        let mut open = OpenFiles::new(Duration::from_secs(60));
        open.push_dead_letter(DeadLetter {
            received_us: 1_763_600_400_000_000,
            reason: "syntax".into(),
            error: "expected value at line 1 column 1".into(),
            raw: Bytes::from_static(b"{oops"),
        });
        open.push_dead_letter(DeadLetter {
            received_us: 1_763_600_400_000_001,
            reason: "zstd".into(),
            error: "bad frame".into(),
            raw: Bytes::from_static(&[0xff, 0x00, 0x28]),
        });
        let sealed = open
            .close()
            .encode(
                &BatchName::new("1-0", "2-0").unwrap(),
                &ParquetOptions::default(),
            )
            .unwrap();
        assert_eq!(sealed.files.len(), 1);
        let file = &sealed.files[0];
        assert_eq!(
            file.path,
            "dead_letters/year=2025/month=11/day=20/hour=01/1-0_2-0.parquet"
        );
        assert_eq!((file.table, file.rows), (None, 2));
        let batch = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            file.data.clone(),
        )
        .unwrap()
        .build()
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
        let raw = batch
            .column(3)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!(raw.value(0), "{oops");
        assert_eq!(raw.value(1), "/wAo");
    }
}
