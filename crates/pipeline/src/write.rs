//! The write loop: buffer entries in, Parquet files out, then acknowledge, then checkpoint.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use firehose_buffer::{Buffer, Entry, EntryId};
use firehose_core::{Event, HOUR_US, Hour, PartitionKey, Table};
use firehose_sink::{
    BatchName, Closing, DeadLetter, MergePolicy, OpenFiles, OwnFiles, ParquetOptions, RollPolicy,
    RollReason, Sealed, Storage, finish_merges, merge_files,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::line::decode_dead_letter;
use crate::state::StateStore;
use crate::{Error, Result};

/// The longest between two looks for entries another writer left.
const CLAIM_EVERY: Duration = Duration::from_secs(30);

/// How the write loop runs.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// This writer's consumer name in the buffer's consumer group. Keep it stable across
    /// restarts, so a restarted writer gets its own unacknowledged entries back at once.
    pub consumer: String,
    /// When open files close.
    pub policy: RollPolicy,
    /// How files are encoded.
    pub parquet: ParquetOptions,
    /// Entries asked for per read, at most: fewer when entries are large, so that one read
    /// holds about a quarter of `policy.max_open_bytes` (an entry holds up to 500 events when
    /// ingest has a backlog: 256 of them are about 75 MB).
    pub read_entries: usize,
    /// Take over entries another consumer left unacknowledged for this long (`None`: never;
    /// the in-memory buffer has one writer). Must exceed the longest time a batch stays open.
    pub claim_idle: Option<Duration>,
    /// On shutdown, write everything still in the buffer first (the in-memory buffer, whose
    /// contents would otherwise have to come back from Jetstream).
    pub drain_on_shutdown: bool,
    /// Wait between attempts to store a batch whose storage failed; doubles up to 30 s.
    pub retry_delay: Duration,
    /// Acknowledge entries as soon as their events are in the open files, instead of after
    /// they are stored. Only for the in-memory buffer of `run`, whose durability comes from the
    /// checkpoint (which still only passes stored events): the buffer then holds only what the
    /// writer has not taken yet, instead of a second copy of everything open.
    pub ack_on_read: bool,
    /// Threads that encode the partitions of a closed batch at once, off the async runtime
    /// (default: the cores, at most 4). Batches are still stored, acknowledged and
    /// checkpointed one after the other, in order.
    pub encode_threads: usize,
    /// Join this writer's own marked files of a partition as they accumulate and when the
    /// hour closes (`firehose_sink::merge`), so that the dataset holds about one file per
    /// table and hour without waiting for compaction; `None` leaves every batch's files as
    /// they are.
    pub merge: Option<MergePolicy>,
}

impl Default for WriterConfig {
    fn default() -> Self {
        let policy = RollPolicy::default();
        WriterConfig {
            consumer: "writer".into(),
            claim_idle: Some(policy.max_age + Duration::from_secs(300)),
            policy,
            parquet: ParquetOptions::default(),
            read_entries: 256,
            drain_on_shutdown: false,
            retry_delay: Duration::from_millis(500),
            ack_on_read: false,
            encode_threads: std::thread::available_parallelism()
                .map_or(1, usize::from)
                .min(4),
            merge: Some(MergePolicy::default()),
        }
    }
}

/// Figures a running writer shares with its health check.
#[derive(Debug, Default)]
pub struct WriterStatus {
    /// Events stored.
    pub events_written: AtomicU64,
    /// Batches stored.
    pub batches_written: AtomicU64,
    /// Store attempts that failed in a row (0 when the last one succeeded).
    pub failing_for: AtomicU64,
    /// The checkpoint after the last batch, Unix microseconds (0: none yet).
    pub checkpoint_us: AtomicI64,
}

/// What a finished write loop did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriterReport {
    /// Events stored.
    pub events: u64,
    /// Batches stored.
    pub batches: u64,
    /// Messages sent to the dead-letter table.
    pub dead_letters: u64,
}

/// A batch from the journal whose files may not all be stored: its entries are gathered as they
/// come back, then written again under the same name.
#[derive(Debug)]
struct Recovery {
    ids: Vec<EntryId>,
    entries: HashMap<EntryId, Entry>,
}

/// Everything a flush needs, shared with the task that runs it.
#[derive(Debug)]
struct Sinks {
    buffer: Arc<dyn Buffer>,
    storage: Arc<dyn Storage>,
    state: Arc<dyn StateStore>,
    /// This writer's consumer name: a batch is recorded only while it holds all its entries.
    consumer: String,
    parquet: ParquetOptions,
    encode_threads: usize,
    retry_delay: Duration,
    status: Arc<WriterStatus>,
    /// The oldest event time in the open files (`i64::MAX` when none): the checkpoint must not
    /// pass it, even when their entries were acknowledged early.
    oldest_open_us: AtomicI64,
    /// Entries are acknowledged when read (one writer, the in-memory buffer).
    ack_on_read: bool,
    /// How long an hour takes late events after its end ([`RollPolicy::grace`]).
    grace_us: i64,
    /// The most JSON bytes open files hold ([`RollPolicy::max_open_bytes`]): a writer with
    /// less than that waiting in the buffer keeps up.
    max_open_bytes: u64,
    /// This writer's own marked files waiting to be joined (`None`: no joins).
    own: Option<Mutex<OwnFiles>>,
    /// No join starts before then: joins take at most [`JOIN_SHARE`] of the writer's time.
    joins_rest_until: Mutex<Instant>,
}

/// Reads the buffer and writes Parquet until `shutdown` is cancelled, then flushes what is open
/// and returns.
#[derive(Debug)]
pub struct WriteLoop {
    sinks: Arc<Sinks>,
    config: WriterConfig,
    open: OpenFiles,
    open_ids: Vec<EntryId>,
    /// Every entry in the open files is replay-free: their files are marked duplicate-free.
    open_replay_free: bool,
    /// The entries in the open files and in the batch being stored. The buffer gives a
    /// consumer its unacknowledged entries again after a failed read (Redis restarting, a
    /// connection dropped): those it holds already are not taken twice.
    held: HashSet<EntryId>,
    /// The entries of the batch being stored.
    in_flight_ids: Vec<EntryId>,
    /// Entries stored and acknowledged, still in `held` until the next read is sent: a reply
    /// to a read sent before their acknowledgement may still hold them.
    acknowledged: Vec<EntryId>,
    /// The payload of the largest entry of the last read (0 before the first).
    entry_bytes: u64,
    /// Newest event time in the open files and in everything stored.
    newest_us: i64,
    journal: HashMap<EntryId, EntryId>,
    recovering: BTreeMap<EntryId, Recovery>,
    in_flight: Option<JoinHandle<Result<Flushed>>>,
    report: WriterReport,
    decoded: [u64; Table::ALL.len()],
}

#[derive(Debug)]
struct Flushed {
    sealed: Sealed,
    events: u64,
    /// Another writer claimed some of the batch's entries first: nothing was stored.
    abandoned: bool,
}

impl Flushed {
    fn nothing(abandoned: bool) -> Flushed {
        Flushed {
            sealed: Sealed {
                files: Vec::new(),
                json_bytes: 0,
            },
            events: 0,
            abandoned,
        }
    }
}

impl WriteLoop {
    /// A write loop from `buffer` to `storage`, keeping its state in `state`.
    pub fn new(
        buffer: Arc<dyn Buffer>,
        storage: Arc<dyn Storage>,
        state: Arc<dyn StateStore>,
        config: WriterConfig,
    ) -> Self {
        WriteLoop {
            sinks: Arc::new(Sinks {
                buffer,
                storage,
                state,
                consumer: config.consumer.clone(),
                parquet: config.parquet.clone(),
                encode_threads: config.encode_threads.max(1),
                retry_delay: config.retry_delay,
                status: Arc::default(),
                oldest_open_us: AtomicI64::new(i64::MAX),
                ack_on_read: config.ack_on_read,
                grace_us: i64::try_from(config.policy.grace.as_micros()).unwrap_or(i64::MAX),
                max_open_bytes: config.policy.max_open_bytes,
                own: config.merge.clone().map(|p| Mutex::new(OwnFiles::new(p))),
                joins_rest_until: Mutex::new(Instant::now()),
            }),
            open: OpenFiles::new(config.policy.grace),
            config,
            open_ids: Vec::new(),
            open_replay_free: true,
            held: HashSet::new(),
            in_flight_ids: Vec::new(),
            acknowledged: Vec::new(),
            entry_bytes: 0,
            newest_us: i64::MIN,
            journal: HashMap::new(),
            recovering: BTreeMap::new(),
            in_flight: None,
            report: WriterReport::default(),
            decoded: [0; Table::ALL.len()],
        }
    }

    /// The figures the loop updates as it runs.
    pub fn status(&self) -> Arc<WriterStatus> {
        self.sinks.status.clone()
    }

    /// Runs until `shutdown` completes and everything open is stored and acknowledged.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<WriterReport> {
        let stop = CancellationToken::new();
        let running = self.run_until(stop.clone());
        crate::pipeline::until_cancelled(shutdown, stop, running).await
    }

    /// [`run`](Self::run), stopped by a token.
    pub(crate) async fn run_until(mut self, shutdown: CancellationToken) -> Result<WriterReport> {
        self.load_journal().await?;
        if self.sinks.own.is_some() {
            let checkpoint = self.sinks.state.checkpoint().await.ok().flatten();
            finish_cut_off_joins(&*self.sinks.storage, checkpoint).await;
        }
        let mut next_claim = Instant::now();
        while !shutdown.is_cancelled() {
            if let Some(idle) = self.config.claim_idle
                && Instant::now() >= next_claim
            {
                // Often enough that entries are taken over soon after the timeout.
                next_claim = Instant::now() + (idle / 2).clamp(Duration::from_secs(1), CLAIM_EVERY);
                self.release_acknowledged();
                let claimed = self
                    .sinks
                    .buffer
                    .claim(&self.config.consumer, idle, self.config.read_entries)
                    .await
                    .map_err(|source| Error::Buffer {
                        op: "claim",
                        source,
                    })?;
                if !claimed.is_empty() {
                    metrics::counter!("firehose_writer_entries_claimed_total")
                        .increment(claimed.len() as u64);
                    info!(
                        entries = claimed.len(),
                        "Took over entries a stopped writer left."
                    );
                    self.load_journal().await?;
                    self.take(claimed).await?;
                }
            }
            let block = self.time_until_due().min(Duration::from_secs(1));
            self.release_acknowledged();
            let count = self.read_count();
            let entries = tokio::select! {
                read = self.sinks.buffer.read(&self.config.consumer, count, block) => {
                    read.map_err(|source| Error::Buffer { op: "read", source })?
                }
                () = shutdown.cancelled() => break,
            };
            self.take(entries).await?;
            if let Some(reason) = self.open.due(&self.config.policy, Instant::now()) {
                debug!(reason = reason.as_str(), "Closing open files.");
                self.flush_open().await?;
            }
        }
        if self.config.drain_on_shutdown {
            loop {
                self.release_acknowledged();
                let entries = self
                    .sinks
                    .buffer
                    .read(&self.config.consumer, self.read_count(), Duration::ZERO)
                    .await
                    .map_err(|source| Error::Buffer { op: "read", source })?;
                if entries.is_empty() {
                    break;
                }
                self.take(entries).await?;
                if self.open.due(&self.config.policy, Instant::now()).is_some() {
                    self.flush_open().await?;
                }
            }
        }
        self.flush_open().await?;
        self.finish_in_flight().await?;
        Ok(self.report)
    }

    /// Entries to ask for: as many as fit a quarter of the open files' bound, judged by the
    /// largest entry of the last read (one entry first), up to `read_entries`.
    fn read_count(&self) -> usize {
        if self.entry_bytes == 0 {
            return 1;
        }
        let budget = (self.config.policy.max_open_bytes / 4).max(1);
        let fit = usize::try_from(budget / self.entry_bytes).unwrap_or(usize::MAX);
        fit.clamp(1, self.config.read_entries.max(1))
    }

    fn time_until_due(&self) -> Duration {
        if self.open.is_empty() {
            return Duration::from_secs(1);
        }
        // Checked again after every read; a short block keeps the age limit accurate.
        Duration::from_millis(200)
    }

    async fn load_journal(&mut self) -> Result<()> {
        let batches = self.sinks.state.batches().await?;
        // A batch no longer journaled was stored by the writer that recorded it (after this
        // one claimed some of its entries): what was gathered for it is done with.
        let journaled: HashSet<EntryId> = batches
            .iter()
            .filter_map(|b| b.ids.first().copied())
            .collect();
        self.recovering.retain(|first, _| journaled.contains(first));
        self.journal.retain(|_, first| journaled.contains(first));
        for batch in batches {
            let Some(&first) = batch.ids.first() else {
                continue;
            };
            if batch.stored {
                // Its files are durable: only the acknowledgement was missing.
                metrics::counter!("firehose_writer_batches_recovered_total", "step" => "ack")
                    .increment(1);
                ack(&self.sinks, &batch.ids).await?;
                self.sinks.state.forget_batch(first).await?;
                continue;
            }
            for &id in &batch.ids {
                self.journal.insert(id, first);
            }
            self.recovering.entry(first).or_insert_with(|| Recovery {
                ids: batch.ids,
                entries: HashMap::new(),
            });
        }
        Ok(())
    }

    /// Routes entries: those of a journaled batch to its recovery, the rest to the open files.
    async fn take(&mut self, entries: Vec<Entry>) -> Result<()> {
        if let Some(largest) = entries.iter().map(|e| e.batch.bytes()).max() {
            self.entry_bytes = largest.max(1);
        }
        let mut taken = Vec::new();
        for entry in entries {
            match self.journal.get(&entry.id).copied() {
                Some(first) => {
                    let complete = self.recovering.get_mut(&first).is_some_and(|r| {
                        r.entries.insert(entry.id, entry);
                        r.entries.len() == r.ids.len()
                    });
                    if complete {
                        self.rewrite(first).await?;
                    }
                }
                None if self.held.contains(&entry.id) => {
                    debug!(entry = %entry.id, "Skipped an entry delivered again while held.");
                }
                None => {
                    self.add(&entry);
                    taken.push(entry.id);
                    if self.open.due(&self.config.policy, Instant::now()).is_some() {
                        self.flush_open().await?;
                    }
                }
            }
        }
        if self.config.ack_on_read && !taken.is_empty() {
            // After `add` lowered `oldest_open_us`, so the checkpoint cannot pass these events.
            ack(&self.sinks, &taken).await?;
        }
        self.count_decoded();
        Ok(())
    }

    fn add(&mut self, entry: &Entry) {
        let oldest = i64::try_from(entry.batch.oldest_time_us()).unwrap_or(i64::MAX);
        self.sinks
            .oldest_open_us
            .fetch_min(oldest, Ordering::SeqCst);
        self.open_ids.push(entry.id);
        self.open_replay_free &= entry.batch.is_replay_free();
        self.held.insert(entry.id);
        for line in entry.batch.events() {
            push_line(
                &mut self.open,
                entry,
                line,
                &mut self.decoded,
                &mut self.report,
            );
        }
        if let Some(newest) = self.open.watermark_us() {
            self.newest_us = self.newest_us.max(newest);
        }
    }

    fn count_decoded(&mut self) {
        for table in Table::ALL {
            let n = std::mem::take(&mut self.decoded[table.index()]);
            if n > 0 {
                metrics::counter!("firehose_events_decoded_total", "collection" => collection_label(table))
                    .increment(n);
            }
        }
    }

    /// Writes a journaled batch again, exactly as it was, under its recorded name.
    async fn rewrite(&mut self, first: EntryId) -> Result<()> {
        let Some(recovery) = self.recovering.remove(&first) else {
            return Ok(());
        };
        let mut open = OpenFiles::new(self.config.policy.grace);
        let mut ignored = WriterReport::default();
        for id in &recovery.ids {
            self.journal.remove(id);
            if let Some(entry) = recovery.entries.get(id) {
                for line in entry.batch.events() {
                    push_line(&mut open, entry, line, &mut self.decoded, &mut ignored);
                }
            }
        }
        let replay_free = recovery
            .entries
            .values()
            .all(|entry| entry.batch.is_replay_free());
        info!(batch = %first, entries = recovery.ids.len(), "Writing a batch again after a restart.");
        metrics::counter!("firehose_writer_batches_recovered_total", "step" => "store")
            .increment(1);
        self.finish_in_flight().await?;
        // The checkpoint may pass everything this writer has seen once nothing is left
        // unacknowledged or open: when a rewrite is the last batch (a writer took over the
        // batch of one that stopped), nothing else would raise it.
        if let Some(newest) = open.watermark_us() {
            self.newest_us = self.newest_us.max(newest);
        }
        let closing = open.close();
        let flushed = flush(
            self.sinks.clone(),
            recovery.ids,
            Closed {
                files: closing,
                replay_free,
                full: false,
            },
            true,
            self.newest_us,
        )
        .await?;
        self.report.events += flushed.events;
        Ok(())
    }

    /// Closes the open files and starts storing them; waits for the previous batch first, so
    /// batches are acknowledged in order and at most two are in memory.
    async fn flush_open(&mut self) -> Result<()> {
        if self.open.is_empty() {
            return Ok(());
        }
        self.finish_in_flight().await?;
        let ids = std::mem::take(&mut self.open_ids);
        self.in_flight_ids.clone_from(&ids);
        let full = matches!(
            self.open.due(&self.config.policy, Instant::now()),
            Some(RollReason::Size | RollReason::Memory)
        );
        let closing = Closed {
            files: self.open.close(),
            replay_free: std::mem::replace(&mut self.open_replay_free, true),
            full,
        };
        // The closed files' events are the flush's now; it checkpoints them once stored.
        self.sinks.oldest_open_us.store(i64::MAX, Ordering::SeqCst);
        let newest = self.newest_us;
        self.in_flight = Some(tokio::spawn(flush(
            self.sinks.clone(),
            ids,
            closing,
            false,
            newest,
        )));
        Ok(())
    }

    async fn finish_in_flight(&mut self) -> Result<()> {
        if let Some(task) = self.in_flight.take() {
            let flushed = task.await.map_err(|e| Error::State {
                op: "write batch",
                message: format!("the writing task failed: {e}"),
            })??;
            self.open.observe(&flushed.sealed);
            self.report.events += flushed.events;
            self.report.batches += u64::from(!flushed.abandoned);
            // Stored and acknowledged, or abandoned: either way no longer this writer's to
            // hold (an abandoned entry it still holds comes back through a claim).
            self.acknowledged.append(&mut self.in_flight_ids);
        }
        Ok(())
    }

    /// Called before each read: entries acknowledged by now are never delivered again.
    fn release_acknowledged(&mut self) {
        for id in self.acknowledged.drain(..) {
            self.held.remove(&id);
        }
    }
}

/// Adds one buffered line of `entry` to the open files. A line that does not decode becomes a
/// dead letter placed at the entry's time (its oldest event, else when it was appended), not
/// the writer's clock: written again after a crash, it lands in the same partition, under the
/// same name.
fn push_line(
    open: &mut OpenFiles,
    entry: &Entry,
    line: &bytes::Bytes,
    decoded: &mut [u64; Table::ALL.len()],
    report: &mut WriterReport,
) {
    if let Some(letter) = decode_dead_letter(line) {
        dead_letter(open, letter, report);
        return;
    }
    match Event::decode(line) {
        Ok(event) => {
            decoded[event.table().index()] += 1;
            open.push(&event, line.len());
        }
        Err(e) => dead_letter(
            open,
            DeadLetter {
                received_us: entry_time_us(entry),
                reason: e.category().to_owned(),
                error: e.to_string(),
                raw: line.clone(),
            },
            report,
        ),
    }
}

/// The time an entry stands for: its oldest event's `time_us`, else its id's milliseconds.
fn entry_time_us(entry: &Entry) -> i64 {
    match i64::try_from(entry.batch.oldest_time_us()) {
        Ok(t) if t > 0 => t,
        _ => i64::try_from(entry.id.ms()).map_or(i64::MAX, |ms| ms.saturating_mul(1000)),
    }
}

fn dead_letter(open: &mut OpenFiles, letter: DeadLetter, report: &mut WriterReport) {
    metrics::counter!("firehose_events_dead_lettered_total", "reason" => reason_label(&letter.reason))
        .increment(1);
    report.dead_letters += 1;
    open.push_dead_letter(letter);
}

/// A batch's closed files, and whether all its entries were replay-free.
struct Closed {
    files: Closing,
    replay_free: bool,
    /// Closed because a file reached its size or the open files their memory bound: the
    /// writer is writing as fast as it can, not waiting for events.
    full: bool,
}

/// Encodes and stores a batch (retrying storage until it succeeds), then acknowledges its
/// entries and raises the checkpoint. `recorded`: the journal already holds it. The files of
/// a batch whose entries were all replay-free are marked duplicate-free: its events are in no
/// other batch, and a batch written again replaces its own files.
async fn flush(
    sinks: Arc<Sinks>,
    ids: Vec<EntryId>,
    closed: Closed,
    recorded: bool,
    newest_us: i64,
) -> Result<Flushed> {
    let (Some(&first), Some(&last)) = (ids.first(), ids.last()) else {
        return Ok(Flushed::nothing(false));
    };
    let started = Instant::now();
    let name =
        BatchName::new(&first.to_string(), &last.to_string()).map_err(|source| Error::Sink {
            op: "name batch",
            source,
        })?;
    if !recorded {
        let lost = sinks.state.record_batch(&sinks.consumer, &ids).await?;
        if !lost.is_empty() {
            // This writer was stopped or stalled past the claim timeout while the batch was
            // open, and another took over some of its entries: those are the claimer's to
            // write. Storing the batch would store them twice; the entries still held go back
            // to the buffer's claim, and whoever takes them writes them.
            warn!(
                batch = %first,
                entries = ids.len(),
                claimed = lost.len(),
                "Another writer took over entries of this batch while it was open; not storing it."
            );
            metrics::counter!("firehose_writer_batches_abandoned_total").increment(1);
            return Ok(Flushed::nothing(true));
        }
    }
    let options = ParquetOptions {
        duplicate_free: closed.replay_free,
        ..sinks.parquet.clone()
    };
    let closing = closed.files;
    let threads = sinks.encode_threads;
    let sealed = tokio::task::spawn_blocking(move || closing.encode_on(&name, &options, threads))
        .await
        .map_err(|e| Error::State {
            op: "encode batch",
            message: format!("the encoding task failed: {e}"),
        })?
        .map_err(|source| Error::Sink {
            op: "encode batch",
            source,
        })?;
    let stored = retry(
        &sinks,
        || sealed.store(&*sinks.storage),
        |_| true,
        |attempts, e| {
            warn!(batch = %first, attempts, error = %e, "Storing a batch failed; retrying (its entries stay unacknowledged).");
        },
    )
    .await;
    let committed = stored.map_err(|source| Error::Sink {
        op: "store batch",
        source,
    })?;
    sinks.state.mark_stored(first).await?;
    let acknowledged = ack(&sinks, &ids).await?;
    sinks.state.forget_batch(first).await?;
    // Whose batch it is: a writer stopped past the claim timeout may have stored it too, and
    // only the one whose acknowledgement took every entry may join its files.
    let own = closed.replay_free
        && (sinks.ack_on_read || usize::try_from(acknowledged).is_ok_and(|n| n == ids.len()));

    let events = committed.rows() as u64;
    let stats = sinks.buffer.stats().await.map_err(|source| Error::Buffer {
        op: "stats",
        source,
    })?;
    // Everything older than the oldest event not yet stored (unacknowledged, or open) is
    // stored; with nothing pending, everything up to the newest event seen is. The open files
    // are read after the buffer: an entry acknowledged early lowered them before its ack.
    let unacked = stats
        .oldest_unacked_time_us
        .map(|t| i64::try_from(t).unwrap_or(i64::MAX));
    let open = sinks.oldest_open_us.load(Ordering::SeqCst);
    let checkpoint = match unacked
        .into_iter()
        .chain((open < i64::MAX).then_some(open))
        .min()
    {
        Some(oldest) => oldest,
        None if newest_us > i64::MIN => newest_us.saturating_add(1),
        None => i64::MIN,
    };
    // Never past the newest event seen that can be a position in the stream: one stamped in
    // the future (see `firehose_core::time_us_is_plausible`) is stored but must not move the
    // checkpoint, or a restart would resume in the future.
    let checkpoint = if newest_us > i64::MIN {
        checkpoint.min(newest_us.saturating_add(1))
    } else {
        checkpoint
    };
    if checkpoint > i64::MIN {
        // Storage trouble (a full disk) is waited out as for the batch; anything else (a
        // corrupt checkpoint) stops the writer.
        let raised = retry(
            &sinks,
            || sinks.state.raise_checkpoint(checkpoint),
            |e| matches!(e, Error::Sink { .. }),
            |attempts, e| {
                warn!(checkpoint, attempts, error = %e, "Writing the checkpoint failed; retrying.");
            },
        )
        .await?;
        sinks.status.checkpoint_us.store(raised, Ordering::Relaxed);
        metrics::gauge!("firehose_checkpoint_time_us").set(raised as f64);
    }

    let elapsed = started.elapsed();
    sinks
        .status
        .events_written
        .fetch_add(events, Ordering::Relaxed);
    sinks.status.batches_written.fetch_add(1, Ordering::Relaxed);
    metrics::counter!("firehose_writer_batches_total").increment(1);
    metrics::counter!("firehose_writer_bytes_total").increment(sealed.bytes());
    metrics::counter!("firehose_writer_input_bytes_total").increment(sealed.json_bytes);
    metrics::histogram!("firehose_writer_batch_duration_seconds").record(elapsed.as_secs_f64());
    if sealed.json_bytes > 0 {
        metrics::gauge!("firehose_writer_compression_ratio")
            .set(sealed.bytes() as f64 / sealed.json_bytes as f64);
    }
    for file in &committed.files {
        metrics::counter!("firehose_writer_files_total", "table" => file.table.name()).increment(1);
        metrics::counter!("firehose_writer_rows_total", "table" => file.table.name())
            .increment(file.rows as u64);
    }
    debug!(batch = %first, files = committed.files.len(), events, ms = elapsed.as_millis() as u64, "Stored a batch.");
    if own {
        // Keeping up with time to spare: the batch closed by age or by its hour, not full;
        // less than a batch waits in the buffer; the newest event is recent. A writer busy
        // with a high rate or a backlog spends no time joining.
        let live = !closed.full
            && stats.bytes < sinks.max_open_bytes
            && crate::unix_us().saturating_sub(newest_us) < JOIN_NEWEST_WITHIN_US;
        join_own_files(&sinks, &committed.files, newest_us, live).await;
    }
    Ok(Flushed {
        sealed,
        events,
        abandoned: false,
    })
}

/// Runs `op` until it succeeds or fails in a way `retryable` refuses, waiting between attempts
/// (from the configured delay, doubling up to 30 s). Each failure is logged, counted in
/// `firehose_writer_failures_total` and in the failing streak `/health` reports; storage that
/// is down or full is waited out, and backpressure does the rest.
async fn retry<T, E, F, Fut>(
    sinks: &Sinks,
    mut op: F,
    retryable: impl Fn(&E) -> bool,
    log: impl Fn(u64, &E),
) -> std::result::Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<T, E>>,
{
    let mut delay = sinks.retry_delay;
    loop {
        match op().await {
            Ok(value) => {
                sinks.status.failing_for.store(0, Ordering::Relaxed);
                return Ok(value);
            }
            Err(e) if retryable(&e) => {
                let attempts = sinks.status.failing_for.fetch_add(1, Ordering::Relaxed) + 1;
                metrics::counter!("firehose_writer_failures_total").increment(1);
                log(attempts, &e);
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Acknowledges `ids`; returns how many were still pending.
async fn ack(sinks: &Sinks, ids: &[EntryId]) -> Result<u64> {
    sinks
        .buffer
        .ack(ids)
        .await
        .map_err(|source| Error::Buffer { op: "ack", source })
}

/// Adds a stored batch's files to this writer's own and joins those that are due: files of a
/// tier in a partition with enough of them, or a partition whose hour closed (the newest event
/// seen passed its end and the grace). A writer catching up or taking a high rate (`live`
/// false) joins nothing. A join that fails leaves its files as they are (a few more files, nothing else).
async fn join_own_files(
    sinks: &Sinks,
    files: &[firehose_sink::FileWritten],
    newest_us: i64,
    live: bool,
) {
    let Some(own) = &sinks.own else { return };
    let resting = sinks
        .joins_rest_until
        .lock()
        .map_or(true, |until| Instant::now() < *until);
    let jobs = match own.lock() {
        Ok(mut own) => {
            own.add(files);
            if resting {
                return;
            }
            own.due(newest_us.saturating_sub(sinks.grace_us), live)
        }
        Err(_) => return,
    };
    let joining = Instant::now();
    for job in jobs {
        let started = Instant::now();
        match merge_files(&*sinks.storage, &job, &sinks.parquet).await {
            Ok(Some(output)) => {
                metrics::counter!("firehose_writer_joins_total", "result" => "ok").increment(1);
                metrics::counter!("firehose_writer_joined_files_total")
                    .increment(job.inputs.len() as u64);
                debug!(partition = %job.partition, files = job.inputs.len(), rows = output.rows, ms = started.elapsed().as_millis() as u64, "Joined files.");
                if let Ok(mut own) = own.lock() {
                    own.merged(&job, output);
                }
            }
            Ok(None) => {
                metrics::counter!("firehose_writer_joins_total", "result" => "skipped")
                    .increment(1);
            }
            Err(e) => {
                metrics::counter!("firehose_writer_joins_total", "result" => "failed").increment(1);
                warn!(partition = %job.partition, error = %e, "Joining a partition's files failed; they stay as they are.");
            }
        }
    }
    let spent = joining.elapsed();
    if let Ok(mut until) = sinks.joins_rest_until.lock() {
        *until = Instant::now() + spent.mul_f64((1.0 - JOIN_SHARE) / JOIN_SHARE);
    }
}

/// A writer joins only while its newest event is younger than this (10 minutes): one replaying
/// older events is catching up.
const JOIN_NEWEST_WITHIN_US: i64 = 600_000_000;

/// The most of a writer's time its joins take: after joining for a while, it waits nine times
/// as long before it joins again, so a writer at its highest rate loses at most a tenth of it.
const JOIN_SHARE: f64 = 0.1;

/// Finishes the joins a crash cut off (their inputs still beside them) in the partitions this
/// writer may have been joining: the hours around `checkpoint_us` and the last two hours.
async fn finish_cut_off_joins(storage: &dyn Storage, checkpoint_us: Option<i64>) {
    let now = crate::unix_us();
    let mut hours: BTreeSet<i64> = (0..3)
        .map(|i| Hour::of(now).start_us() - i * HOUR_US)
        .collect();
    if let Some(at) = checkpoint_us {
        hours.extend((-1..=1).map(|i| Hour::of(at).start_us() + i * HOUR_US));
    }
    let mut deleted = 0;
    for hour in hours {
        for table in Table::ALL {
            let partition = PartitionKey::new(table, hour).path();
            match finish_merges(storage, &partition).await {
                Ok(n) => deleted += n,
                Err(e) => {
                    warn!(partition, error = %e, "Could not finish the joins of a partition; its readers de-duplicate it.");
                }
            }
        }
    }
    if deleted > 0 {
        info!(
            deleted,
            "Finished joins a crash had cut off: deleted the files they hold."
        );
    }
}

/// The `collection` label of a table's events: the collection's NSID, or `other`, `identity`,
/// `account` (label values stay bounded whatever collections appear).
pub fn collection_label(table: Table) -> &'static str {
    match table {
        Table::Records => "other",
        Table::Identity => "identity",
        Table::Account => "account",
        typed => typed.collection().unwrap_or("other"),
    }
}

/// The `reason` label values of `firehose_events_dead_lettered_total`.
pub const DEAD_LETTER_REASONS: [&str; 10] = [
    "syntax",
    "truncated",
    "shape",
    "envelope",
    "utf8",
    "zstd",
    "oversized",
    "json",
    "protocol",
    "other",
];

fn reason_label(reason: &str) -> &'static str {
    DEAD_LETTER_REASONS
        .into_iter()
        .find(|k| *k == reason)
        .unwrap_or("other")
}
