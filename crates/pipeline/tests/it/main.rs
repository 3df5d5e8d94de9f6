//! The write loop against real storage (a local directory) and real buffers: the in-memory
//! buffer, and Redis Streams at `REDIS_URL` (started by `scripts/test`; without it the Redis
//! tests print NOT RUN, and fail when `FIREHOSE_REQUIRE_SERVERS=1`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

mod replay;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arrow_array::{Array, Int64Array, StringArray};
use bytes::Bytes;
use firehose_buffer::memory::InMemory;
use firehose_buffer::redis::{RedisBuffer, RedisBufferBuilder};
use firehose_buffer::{Batch, Buffer, EntryId};
use firehose_pipeline::state::TableState;
use firehose_pipeline::{DatasetState, StateStore, WriteLoop, WriterConfig};
use firehose_sink::{LocalStorage, RollPolicy, Storage};
use firehose_synth::{Config, Generator};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tokio_util::sync::CancellationToken;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "firehose-pipeline-it-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// `n` generated events as JSON lines, at 50 events/s (so they span a few hours for large n).
fn lines(seed: u64, n: usize) -> Vec<(i64, Bytes)> {
    Generator::new(Config {
        seed,
        rate: 50.0,
        ..Config::default()
    })
    .take(n)
    .map(|e| (e.time_us, Bytes::from(e.to_json())))
    .collect()
}

/// Appends the lines in entries of `per_entry`.
async fn fill(buffer: &dyn Buffer, lines: &[(i64, Bytes)], per_entry: usize) -> Vec<EntryId> {
    let mut ids = Vec::new();
    for chunk in lines.chunks(per_entry) {
        let oldest = chunk.iter().map(|(t, _)| *t).min().unwrap() as u64;
        let batch = Batch::new(chunk.iter().map(|(_, l)| l.clone()).collect(), oldest);
        ids.push(buffer.append(batch).await.unwrap());
    }
    ids
}

fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet")
                && !path.file_name().unwrap().to_string_lossy().starts_with('.')
            {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Every event's `time_us` in the dataset (the generator's are unique), sorted, and the
/// dead letters' raw texts.
fn dataset(dir: &Path) -> (Vec<i64>, Vec<String>) {
    let mut times = Vec::new();
    let mut dead = Vec::new();
    for file in parquet_files(dir) {
        let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&file).unwrap())
            .unwrap()
            .build()
            .unwrap();
        let is_dead = file.to_string_lossy().contains("/dead_letters/");
        for batch in reader {
            let batch = batch.unwrap();
            if is_dead {
                let raw = batch.column_by_name("raw").unwrap();
                let raw = raw.as_any().downcast_ref::<StringArray>().unwrap();
                dead.extend((0..raw.len()).map(|i| raw.value(i).to_owned()));
            } else {
                let t = batch.column_by_name("time_us").unwrap();
                let t = t.as_any().downcast_ref::<Int64Array>().unwrap();
                times.extend(t.values().iter().copied());
            }
        }
    }
    times.sort_unstable();
    (times, dead)
}

/// Closes files at 400 KB of JSON, or half a second after they opened (so the last, partial
/// batch is written soon and `write_all` sees the buffer drained).
fn small_policy() -> RollPolicy {
    RollPolicy {
        max_open_bytes: 400_000,
        max_age: Duration::from_millis(500),
        ..RollPolicy::default()
    }
}

/// Runs a write loop until the buffer has nothing unacknowledged, then stops it.
async fn write_all(
    buffer: Arc<dyn Buffer>,
    storage: Arc<dyn Storage>,
    state: Arc<dyn StateStore>,
    config: WriterConfig,
) -> firehose_pipeline::WriterReport {
    let stop = CancellationToken::new();
    let task = tokio::spawn(
        WriteLoop::new(buffer.clone(), storage, state, config).run(stop.clone().cancelled_owned()),
    );
    for _ in 0..600 {
        let stats = buffer.stats().await.unwrap();
        if stats.events_unacked() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    task.await.unwrap().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_buffer_to_parquet_exactly_once_with_checkpoint_and_dead_letters() {
    let dir = temp_dir("memory");
    let storage: Arc<dyn Storage> = Arc::new(LocalStorage::new(&dir));
    let buffer: Arc<dyn Buffer> = Arc::new(InMemory::new());
    let mut input = lines(1, 30_000);
    let newest = input.iter().map(|(t, _)| *t).max().unwrap();
    // Two lines that are not events: they go to the dead-letter table, not into a table.
    input.insert(100, (input[100].0, Bytes::from_static(b"{\"did\":\"x\",")));
    input.insert(5_000, (input[5_000].0, Bytes::from_static(b"[1,2]")));
    fill(&*buffer, &input, 500).await;

    let state: Arc<dyn StateStore> = Arc::new(DatasetState::new(storage.clone()));
    let config = WriterConfig {
        policy: small_policy(),
        claim_idle: None,
        ..WriterConfig::default()
    };
    let report = write_all(buffer.clone(), storage.clone(), state.clone(), config).await;

    let (times, dead) = dataset(&dir);
    let mut expected: Vec<i64> = lines(1, 30_000).iter().map(|(t, _)| *t).collect();
    expected.sort_unstable();
    assert_eq!(times, expected, "every event exactly once");
    assert_eq!(dead, ["{\"did\":\"x\",", "[1,2]"]);
    assert_eq!((report.events, report.dead_letters), (30_000, 2));
    assert!(
        report.batches > 1,
        "the memory bound closed several batches"
    );
    // Nothing unacknowledged is left, so the checkpoint is past the newest event.
    assert_eq!(state.checkpoint().await.unwrap(), Some(newest + 1));
    // File names come from entry ids: `<first>_<last>.parquet`.
    for file in parquet_files(&dir) {
        let name = file.file_stem().unwrap().to_string_lossy().into_owned();
        let (first, last) = name.split_once('_').unwrap();
        assert!(first.parse::<EntryId>().unwrap() <= last.parse::<EntryId>().unwrap());
    }
}

async fn redis(test: &str) -> Option<(Arc<RedisBuffer>, String)> {
    let url = match std::env::var("REDIS_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => {
            assert!(
                std::env::var("FIREHOSE_REQUIRE_SERVERS").as_deref() != Ok("1"),
                "{test}: REDIS_URL is not set and FIREHOSE_REQUIRE_SERVERS=1"
            );
            eprintln!("NOT RUN {test}: REDIS_URL is not set");
            return None;
        }
    };
    let stream = format!(
        "firehose-pipeline-test:{test}:{}:{:?}",
        std::process::id(),
        std::time::SystemTime::now()
    );
    let buffer = RedisBufferBuilder::new()
        .with_url(&url)
        .with_stream(&stream)
        .with_group("writers")
        .build()
        .await
        .unwrap();
    Some((Arc::new(buffer), stream))
}

/// A second handle on the same stream: what a restarted process would open.
async fn reopen(stream: &str) -> Arc<RedisBuffer> {
    let buffer = RedisBufferBuilder::new()
        .with_url(std::env::var("REDIS_URL").unwrap())
        .with_stream(stream)
        .with_group("writers")
        .build()
        .await
        .unwrap();
    Arc::new(buffer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_interrupted_before_its_acknowledgement_is_rewritten_under_the_same_name() {
    let Some((buffer, stream)) = redis("rewrite").await else {
        return;
    };
    let dir = temp_dir("rewrite");
    let storage: Arc<dyn Storage> = Arc::new(LocalStorage::new(&dir));
    let state: Arc<dyn StateStore> = Arc::new(TableState::new(buffer.clone()));
    let input = lines(2, 4_000);
    let ids = fill(&*buffer, &input, 400).await;

    // A writer read six entries, journaled them as a batch, stored part of its files under
    // the batch's name, and died before acknowledging.
    let taken = buffer.read("w1", 6, Duration::ZERO).await.unwrap();
    assert_eq!(taken.len(), 6);
    let batch_ids: Vec<EntryId> = taken.iter().map(|e| e.id).collect();
    assert!(
        state
            .record_batch("w1", &batch_ids)
            .await
            .unwrap()
            .is_empty()
    );
    let name = format!("{}_{}.parquet", batch_ids[0], batch_ids[5]);
    let partial = "posts/year=2026/month=11/day=20/hour=00/".to_owned() + &name;
    storage
        .put(&partial, Bytes::from_static(b"not a whole file"))
        .await
        .unwrap();

    // The restarted writer (same consumer) gets the entries back, and writes them again as
    // the same batch: the partial file is replaced, not duplicated.
    let buffer = reopen(&stream).await;
    let config = WriterConfig {
        consumer: "w1".into(),
        policy: small_policy(),
        ..WriterConfig::default()
    };
    write_all(buffer.clone(), storage, state.clone(), config).await;
    let (times, _) = dataset(&dir);
    let mut expected: Vec<i64> = input.iter().map(|(t, _)| *t).collect();
    expected.sort_unstable();
    assert_eq!(times, expected);
    assert!(
        parquet_files(&dir).iter().any(|f| f.ends_with(&partial)),
        "the batch kept its name"
    );
    assert!(state.batches().await.unwrap().is_empty(), "journal emptied");
    assert_eq!(ids.len(), 10);
}

// See: issue 15 (a writer stopped past the claim timeout stored the entries another writer had
// taken over: both stored them, under different names).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_recorded_only_while_its_writer_holds_every_entry() {
    let Some((buffer, _)) = redis("fence").await else {
        return;
    };
    let state: Arc<dyn StateStore> = Arc::new(TableState::new(buffer.clone()));
    fill(&*buffer, &lines(4, 1_000), 100).await;
    let taken = buffer.read("slow", 6, Duration::ZERO).await.unwrap();
    let ids: Vec<EntryId> = taken.iter().map(|e| e.id).collect();
    // Another writer takes over two of them (as after the claim timeout).
    let claimed = buffer.claim("other", Duration::ZERO, 2).await.unwrap();
    let claimed: Vec<EntryId> = claimed.iter().map(|e| e.id).collect();
    assert_eq!(claimed, ids[..2]);

    let lost = state.record_batch("slow", &ids).await.unwrap();
    assert_eq!(lost, claimed, "the claimed entries are reported");
    assert!(
        state.batches().await.unwrap().is_empty(),
        "nothing recorded"
    );
    // What it still holds, it can record; an acknowledged entry is held by nobody.
    assert!(
        state
            .record_batch("slow", &ids[2..4])
            .await
            .unwrap()
            .is_empty()
    );
    buffer.ack(&ids[4..5]).await.unwrap();
    assert_eq!(
        state.record_batch("slow", &ids[4..]).await.unwrap(),
        ids[4..5]
    );
    let journal = state.batches().await.unwrap();
    assert_eq!(journal.len(), 1);
    assert_eq!(journal[0].ids, ids[2..4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_batch_left_unacknowledged_is_only_acknowledged() {
    let Some((buffer, _)) = redis("stored").await else {
        return;
    };
    let dir = temp_dir("stored");
    let storage: Arc<dyn Storage> = Arc::new(LocalStorage::new(&dir));
    let state: Arc<dyn StateStore> = Arc::new(TableState::new(buffer.clone()));
    fill(&*buffer, &lines(3, 1_000), 250).await;
    let taken = buffer.read("w1", 4, Duration::ZERO).await.unwrap();
    let ids: Vec<EntryId> = taken.iter().map(|e| e.id).collect();
    assert!(state.record_batch("w1", &ids).await.unwrap().is_empty());
    state.mark_stored(ids[0]).await.unwrap();

    let report = write_all(
        buffer.clone(),
        storage,
        state.clone(),
        WriterConfig {
            consumer: "w2".into(),
            ..WriterConfig::default()
        },
    )
    .await;
    assert_eq!(report.events, 0, "nothing written again");
    assert_eq!(buffer.stats().await.unwrap().events_unacked(), 0);
    assert!(state.batches().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_share_a_redis_group_and_write_each_event_once() {
    let Some((buffer, _)) = redis("two-writers").await else {
        return;
    };
    let dir = temp_dir("two-writers");
    let storage: Arc<dyn Storage> = Arc::new(LocalStorage::new(&dir));
    let state: Arc<dyn StateStore> = Arc::new(TableState::new(buffer.clone()));
    let input = lines(4, 20_000);
    fill(&*buffer, &input, 200).await;
    let stop = CancellationToken::new();
    let writers: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|consumer| {
            let config = WriterConfig {
                consumer: consumer.into(),
                read_entries: 8,
                policy: small_policy(),
                ..WriterConfig::default()
            };
            tokio::spawn(
                WriteLoop::new(buffer.clone(), storage.clone(), state.clone(), config)
                    .run(stop.clone().cancelled_owned()),
            )
        })
        .collect();
    for _ in 0..600 {
        if buffer.stats().await.unwrap().events_unacked() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    let mut written = 0;
    for w in writers {
        let report = w.await.unwrap().unwrap();
        assert!(report.events > 0, "both writers took part");
        written += report.events;
    }
    assert_eq!(written, 20_000);
    let (times, _) = dataset(&dir);
    let mut expected: Vec<i64> = input.iter().map(|(t, _)| *t).collect();
    expected.sort_unstable();
    assert_eq!(times, expected);
    // Each writer raises the checkpoint to what it knows is stored; it never passes the
    // newest event, and it moved.
    let checkpoint = state.checkpoint().await.unwrap().unwrap();
    assert!(checkpoint > expected[0] && checkpoint <= expected[expected.len() - 1] + 1);
}

/// A buffer that gives a consumer its unacknowledged entries again, as Redis does after a
/// failed read (the server restarting, a connection dropped): every third read returns every
/// entry delivered and not acknowledged yet, instead of new ones.
#[derive(Debug)]
struct Redelivering {
    inner: InMemory,
    pending: std::sync::Mutex<std::collections::BTreeMap<EntryId, firehose_buffer::Entry>>,
    reads: std::sync::atomic::AtomicU64,
    redelivered: std::sync::atomic::AtomicU64,
}

impl std::fmt::Display for Redelivering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redelivering({})", self.inner)
    }
}

#[async_trait::async_trait]
impl Buffer for Redelivering {
    async fn append(&self, batch: Batch) -> firehose_buffer::Result<EntryId> {
        self.inner.append(batch).await
    }

    async fn read(
        &self,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> firehose_buffer::Result<Vec<firehose_buffer::Entry>> {
        use std::sync::atomic::Ordering::Relaxed;
        if self.reads.fetch_add(1, Relaxed) % 3 == 2 {
            let again: Vec<_> = self.pending.lock().unwrap().values().cloned().collect();
            if !again.is_empty() {
                self.redelivered.fetch_add(again.len() as u64, Relaxed);
                return Ok(again);
            }
        }
        let entries = self.inner.read(consumer, count, block).await?;
        let mut pending = self.pending.lock().unwrap();
        for entry in &entries {
            pending.insert(entry.id, entry.clone());
        }
        Ok(entries)
    }

    async fn ack(&self, ids: &[EntryId]) -> firehose_buffer::Result<u64> {
        {
            let mut pending = self.pending.lock().unwrap();
            for id in ids {
                pending.remove(id);
            }
        }
        self.inner.ack(ids).await
    }

    async fn claim(
        &self,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> firehose_buffer::Result<Vec<firehose_buffer::Entry>> {
        self.inner.claim(consumer, min_idle, count).await
    }

    async fn stats(&self) -> firehose_buffer::Result<firehose_buffer::Stats> {
        self.inner.stats().await
    }

    async fn peek(
        &self,
        after: Option<EntryId>,
        count: usize,
    ) -> firehose_buffer::Result<Vec<firehose_buffer::Entry>> {
        self.inner.peek(after, count).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_delivered_again_while_the_writer_holds_them_are_written_once() {
    let dir = temp_dir("redelivered");
    let storage: Arc<dyn Storage> = Arc::new(LocalStorage::new(&dir));
    let buffer = Arc::new(Redelivering {
        inner: InMemory::new(),
        pending: Default::default(),
        reads: Default::default(),
        redelivered: Default::default(),
    });
    let input = lines(5, 20_000);
    fill(&*buffer, &input, 100).await;
    let state: Arc<dyn StateStore> = Arc::new(DatasetState::new(storage.clone()));
    // Files close at about ten reads, so entries come again while they are open.
    let config = WriterConfig {
        policy: RollPolicy {
            max_open_bytes: 2_500_000,
            max_age: Duration::from_secs(1),
            ..RollPolicy::default()
        },
        read_entries: 4,
        claim_idle: None,
        ..WriterConfig::default()
    };
    write_all(buffer.clone(), storage, state, config).await;
    assert!(
        buffer
            .redelivered
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0,
        "entries were delivered again"
    );
    let (times, _) = dataset(&dir);
    let mut expected: Vec<i64> = input.iter().map(|(t, _)| *t).collect();
    expected.sort_unstable();
    assert_eq!(times.len(), expected.len(), "no event twice");
    assert_eq!(times, expected);
}

/// Local storage whose checkpoint writes fail the first `failures` times, as on a disk that
/// is full just when the checkpoint is written (the batch before it took the last bytes).
#[derive(Debug)]
struct CheckpointWritesFail {
    inner: LocalStorage,
    failures: std::sync::atomic::AtomicU32,
}

#[async_trait::async_trait]
impl Storage for CheckpointWritesFail {
    async fn put(&self, path: &str, data: Bytes) -> firehose_sink::Result<()> {
        use std::sync::atomic::Ordering;
        if path == firehose_pipeline::state::CHECKPOINT_PATH
            && self
                .failures
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            return Err(firehose_sink::Error::Io {
                op: "put",
                path: path.to_owned(),
                source: std::io::Error::from_raw_os_error(28), // ENOSPC
            });
        }
        self.inner.put(path, data).await
    }
    async fn get(&self, path: &str) -> firehose_sink::Result<Bytes> {
        self.inner.get(path).await
    }
    async fn list(&self, prefix: &str) -> firehose_sink::Result<Vec<firehose_sink::ObjectInfo>> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, path: &str) -> firehose_sink::Result<()> {
        self.inner.delete(path).await
    }
}

/// A checkpoint that cannot be written for a while (a full disk) is retried like a batch: the
/// writer neither dies nor skips it, and catches up once the disk has room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_write_that_fails_for_a_while_is_retried_not_fatal() {
    let dir = temp_dir("checkpoint-enospc");
    let storage: Arc<dyn Storage> = Arc::new(CheckpointWritesFail {
        inner: LocalStorage::new(&dir),
        failures: 3.into(),
    });
    let buffer: Arc<dyn Buffer> = Arc::new(InMemory::new());
    let input = lines(5, 6_000);
    let newest = input.iter().map(|(t, _)| *t).max().unwrap();
    fill(&*buffer, &input, 500).await;
    let state: Arc<dyn StateStore> = Arc::new(DatasetState::new(storage.clone()));
    let config = WriterConfig {
        policy: small_policy(),
        claim_idle: None,
        retry_delay: Duration::from_millis(20),
        ..WriterConfig::default()
    };
    let report = write_all(buffer, storage, state.clone(), config).await;
    assert_eq!(report.events, 6_000);
    let (times, _) = dataset(&dir);
    assert_eq!(times.len(), 6_000, "every event stored once");
    assert_eq!(state.checkpoint().await.unwrap(), Some(newest + 1));
}

/// An event stamped in the future is stored, but the checkpoint does not follow it: a restart
/// resumes from the newest believable event, not from the future.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stamped_in_the_future_does_not_move_the_checkpoint() {
    let dir = temp_dir("future");
    let storage: Arc<dyn Storage> = Arc::new(LocalStorage::new(&dir));
    let buffer: Arc<dyn Buffer> = Arc::new(InMemory::new());
    let mut input = lines(6, 2_000);
    let newest = input.iter().map(|(t, _)| *t).max().unwrap();
    let future = 4_102_444_800_000_000; // 2100
    let line = format!(
        r#"{{"did":"did:plc:f","time_us":{future},"kind":"identity","identity":{{"did":"did:plc:f","seq":1,"time":"t"}}}}"#
    );
    input.insert(1_000, (future, Bytes::from(line)));
    fill(&*buffer, &input, 100).await;
    let state: Arc<dyn StateStore> = Arc::new(DatasetState::new(storage.clone()));
    let config = WriterConfig {
        policy: small_policy(),
        claim_idle: None,
        ..WriterConfig::default()
    };
    let report = write_all(buffer, storage, state.clone(), config).await;
    assert_eq!(report.events, 2_001, "stored");
    assert!(dataset(&dir).0.contains(&future));
    assert_eq!(state.checkpoint().await.unwrap(), Some(newest + 1));
}

/// The in-memory buffer, recording the payload of the largest read.
#[derive(Debug)]
struct Recording {
    inner: InMemory,
    largest_read: std::sync::atomic::AtomicU64,
}

impl std::fmt::Display for Recording {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Recording({})", self.inner)
    }
}

#[async_trait::async_trait]
impl Buffer for Recording {
    async fn append(&self, batch: Batch) -> firehose_buffer::Result<EntryId> {
        self.inner.append(batch).await
    }

    async fn read(
        &self,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> firehose_buffer::Result<Vec<firehose_buffer::Entry>> {
        let entries = self.inner.read(consumer, count, block).await?;
        let bytes = entries.iter().map(|e| e.batch.bytes()).sum();
        self.largest_read
            .fetch_max(bytes, std::sync::atomic::Ordering::Relaxed);
        Ok(entries)
    }

    async fn ack(&self, ids: &[EntryId]) -> firehose_buffer::Result<u64> {
        self.inner.ack(ids).await
    }

    async fn claim(
        &self,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> firehose_buffer::Result<Vec<firehose_buffer::Entry>> {
        self.inner.claim(consumer, min_idle, count).await
    }

    async fn stats(&self) -> firehose_buffer::Result<firehose_buffer::Stats> {
        self.inner.stats().await
    }

    async fn peek(
        &self,
        after: Option<EntryId>,
        count: usize,
    ) -> firehose_buffer::Result<Vec<firehose_buffer::Entry>> {
        self.inner.peek(after, count).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_of_large_entries_holds_about_a_quarter_of_the_open_files_bound() {
    let dir = temp_dir("read-size");
    let storage: Arc<dyn Storage> = Arc::new(LocalStorage::new(&dir));
    let buffer = Arc::new(Recording {
        inner: InMemory::new(),
        largest_read: 0.into(),
    });
    // Entries of 500 events, as ingest appends them when it has a backlog.
    let input = lines(7, 20_000);
    fill(&*buffer, &input, 500).await;
    let entry = input[..500]
        .iter()
        .map(|(_, l)| l.len() as u64)
        .sum::<u64>();
    let policy = RollPolicy {
        max_open_bytes: 4 * entry,
        max_age: Duration::from_secs(1),
        ..RollPolicy::default()
    };
    let budget = policy.max_open_bytes / 4;
    let state: Arc<dyn StateStore> = Arc::new(DatasetState::new(storage.clone()));
    let config = WriterConfig {
        policy,
        claim_idle: None,
        ..WriterConfig::default()
    };
    write_all(buffer.clone(), storage, state, config).await;
    let largest = buffer
        .largest_read
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        largest <= budget * 3 / 2,
        "a read held {largest} bytes; a quarter of the open files' bound is {budget}"
    );
    let (times, _) = dataset(&dir);
    assert_eq!(times.len(), 20_000);
}

/// Whether a Parquet file carries the duplicate-free mark.
fn marked(path: &Path) -> bool {
    firehose_sink::file_is_marked_duplicate_free(Bytes::from(std::fs::read(path).unwrap())).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_of_replay_free_entries_alone_are_marked_duplicate_free() {
    let dir = temp_dir("marks");
    let storage: Arc<dyn Storage> = Arc::new(LocalStorage::new(&dir));
    let buffer: Arc<dyn Buffer> = Arc::new(InMemory::new());
    let state: Arc<dyn StateStore> = Arc::new(DatasetState::new(storage.clone()));
    let input = lines(9, 4_000);
    // Both entries of each round in one batch, closed by age.
    let config = || WriterConfig {
        policy: RollPolicy {
            max_open_bytes: 64 << 20,
            ..small_policy()
        },
        claim_idle: None,
        ..WriterConfig::default()
    };
    // Two entries vouched replay-free: one batch, its files marked.
    for chunk in input[..2_000].chunks(1_000) {
        let oldest = chunk.iter().map(|(t, _)| *t).min().unwrap() as u64;
        let batch = Batch::new(chunk.iter().map(|(_, l)| l.clone()).collect(), oldest);
        buffer.append(batch.with_replay_free(true)).await.unwrap();
    }
    write_all(buffer.clone(), storage.clone(), state.clone(), config()).await;
    let first: Vec<PathBuf> = parquet_files(&dir);
    assert!(!first.is_empty());
    assert!(first.iter().all(|f| marked(f)), "{first:?}");
    // A replay-free entry and one without the vouch in the same batch: not marked.
    for (i, chunk) in input[2_000..].chunks(1_000).enumerate() {
        let oldest = chunk.iter().map(|(t, _)| *t).min().unwrap() as u64;
        let batch = Batch::new(chunk.iter().map(|(_, l)| l.clone()).collect(), oldest);
        buffer.append(batch.with_replay_free(i == 0)).await.unwrap();
    }
    write_all(buffer.clone(), storage.clone(), state.clone(), config()).await;
    let second: Vec<PathBuf> = parquet_files(&dir)
        .into_iter()
        .filter(|f| !first.contains(f))
        .collect();
    assert!(!second.is_empty());
    assert!(second.iter().all(|f| !marked(f)), "{second:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}
