//! The ingest loop: Jetstream messages into the buffer, a batch per entry.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use firehose_buffer::{Batch, Buffer};
use firehose_jetstream::{Message, Source};
use firehose_sink::DeadLetter;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::health::{SourceLimits, SourceWatch};
use crate::line::encode_dead_letter;
use crate::replay::ReplayFilter;
use crate::{Error, Result};

/// How the ingest loop batches.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Events per buffer entry at most (default 500): one entry costs Redis about as much as
    /// one event, so batching divides that cost.
    pub batch_events: usize,
    /// Longest wait before a partial batch is appended anyway (default 100 ms).
    pub batch_delay: Duration,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            batch_events: 500,
            batch_delay: Duration::from_millis(100),
        }
    }
}

/// Figures a running ingest loop shares with its health check.
#[derive(Debug, Default)]
pub struct IngestStatus {
    /// Messages received (events and dead letters).
    pub received: AtomicU64,
    /// Messages appended to the buffer.
    pub appended: AtomicU64,
    /// Events dropped because they had been passed on before (replays).
    pub replays_dropped: AtomicU64,
    /// `time_us` of the newest event received (0: none yet).
    pub newest_time_us: AtomicI64,
    /// When the last message arrived, Unix milliseconds (0: none yet).
    pub last_message_ms: AtomicI64,
}

/// What a finished ingest loop did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestReport {
    /// Messages appended to the buffer.
    pub appended: u64,
    /// Events dropped because they had been passed on before (Jetstream's replays).
    pub replays_dropped: u64,
    /// Messages received but not appended because the loop stopped first (they are after the
    /// checkpoint, so they come back from Jetstream on restart).
    pub dropped_at_shutdown: u64,
}

/// Reads the source and appends to the buffer until `shutdown` is cancelled. When the buffer is
/// full the append waits, and the source is not read meanwhile: backpressure reaches
/// Jetstream's socket instead of memory.
#[derive(Debug)]
pub struct IngestLoop {
    source: Source,
    buffer: Arc<dyn Buffer>,
    config: IngestConfig,
    status: Arc<IngestStatus>,
    replay: Option<ReplayFilter>,
}

#[derive(Debug, Default)]
struct Pending {
    lines: Vec<Bytes>,
    oldest_us: i64,
    since: Option<Instant>,
}

impl IngestLoop {
    /// An ingest loop from `source` into `buffer`.
    pub fn new(source: Source, buffer: Arc<dyn Buffer>, config: IngestConfig) -> Self {
        IngestLoop {
            source,
            buffer,
            config,
            status: Arc::default(),
            replay: None,
        }
    }

    /// Drops events whose key `filter` holds (replays) instead of appending them, and adds
    /// the key of every event appended.
    pub fn with_replay_filter(mut self, filter: ReplayFilter) -> Self {
        self.replay = Some(filter);
        self
    }

    /// The figures the loop updates as it runs.
    pub fn status(&self) -> Arc<IngestStatus> {
        self.status.clone()
    }

    /// What the health check watches of this loop and its source.
    pub(crate) fn watch(&self, limits: SourceLimits) -> SourceWatch {
        SourceWatch {
            status: self.source.status(),
            ingest: self.status(),
            limits,
        }
    }

    /// Runs until `shutdown` completes or the source fails for good. What was received but
    /// not appended when it stops is counted in the report: it is after the checkpoint, so it
    /// comes back from Jetstream.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<IngestReport> {
        let stop = CancellationToken::new();
        let running = self.run_until(stop.clone());
        crate::pipeline::until_cancelled(shutdown, stop, running).await
    }

    /// [`run`](Self::run), stopped by a token.
    pub(crate) async fn run_until(mut self, shutdown: CancellationToken) -> Result<IngestReport> {
        let mut report = IngestReport::default();
        let mut pending = Pending::default();
        let batch_events = self.config.batch_events.max(1);
        while !shutdown.is_cancelled() {
            let deadline = pending
                .since
                .map_or(Instant::now() + Duration::from_secs(1), |since| {
                    since + self.config.batch_delay
                });
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep_until(deadline) => {}
                message = self.source.next() => {
                    let message = message.map_err(Error::Source)?;
                    self.receive(&mut pending, message);
                    if pending.lines.len() < batch_events {
                        continue;
                    }
                }
            }
            if pending.lines.is_empty() {
                continue;
            }
            let batch = take_batch(&mut pending).with_replay_free(self.replay_free());
            let count = batch.len() as u64;
            tokio::select! {
                appended = self.buffer.append(batch) => {
                    appended.map_err(|source| Error::Buffer { op: "append", source })?;
                    report.appended += count;
                    self.status.appended.fetch_add(count, Ordering::Relaxed);
                }
                () = shutdown.cancelled() => {
                    report.dropped_at_shutdown += count;
                    break;
                }
            }
        }
        if !pending.lines.is_empty() {
            // Appending what is left is a courtesy (it is after the checkpoint either way), so
            // a full buffer cannot hold up the shutdown. Its events passed the filter like any
            // others: the batch is as replay-free as the ones before it.
            let batch = take_batch(&mut pending).with_replay_free(self.replay_free());
            let count = batch.len() as u64;
            match tokio::time::timeout(Duration::from_secs(2), self.buffer.append(batch)).await {
                Ok(Ok(_)) => report.appended += count,
                Ok(Err(e)) => {
                    warn!(error = %e, "Could not append the last batch; it will be replayed.");
                    report.dropped_at_shutdown += count;
                }
                Err(_) => report.dropped_at_shutdown += count,
            }
        }
        report.replays_dropped = self.status.replays_dropped.load(Ordering::Relaxed);
        Ok(report)
    }

    /// Whether the batches taken now hold only events never passed on before: the replay
    /// filter is complete ([`ReplayFilter::is_complete`]).
    fn replay_free(&self) -> bool {
        self.replay.as_ref().is_some_and(ReplayFilter::is_complete)
    }

    fn receive(&mut self, pending: &mut Pending, message: Message) {
        let now_ms = crate::unix_us() / 1000;
        self.status.received.fetch_add(1, Ordering::Relaxed);
        self.status.last_message_ms.store(now_ms, Ordering::Relaxed);
        pending.since.get_or_insert_with(Instant::now);
        match message {
            Message::Event { json, time_us } => {
                if let Some(filter) = &mut self.replay
                    && !filter.admit(&json)
                {
                    self.status.replays_dropped.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("firehose_replays_dropped_total").increment(1);
                    if pending.lines.is_empty() {
                        pending.since = None;
                    }
                    return;
                }
                if pending.lines.is_empty() || time_us < pending.oldest_us {
                    pending.oldest_us = time_us;
                }
                // An event stamped in the future is kept, but is no place in the stream.
                if firehose_core::time_us_is_plausible(time_us, now_ms.saturating_mul(1000)) {
                    self.status
                        .newest_time_us
                        .fetch_max(time_us, Ordering::Relaxed);
                }
                pending.lines.push(json);
            }
            Message::Malformed { raw, reason, error } => {
                // Decoded (and counted) as a dead letter by the writer, which owns the table.
                let letter = DeadLetter {
                    received_us: now_ms.saturating_mul(1000),
                    reason: reason.to_owned(),
                    error,
                    raw,
                };
                // Its place in time is the stream's, not the clock's: during a replay the clock
                // is far ahead of the events, and the checkpoint must not jump past them.
                let newest = self.status.newest_time_us.load(Ordering::Relaxed);
                let at = if newest > 0 {
                    newest
                } else {
                    letter.received_us
                };
                if pending.lines.is_empty() || at < pending.oldest_us {
                    pending.oldest_us = at;
                }
                pending.lines.push(encode_dead_letter(&letter));
            }
        }
    }
}

fn take_batch(pending: &mut Pending) -> Batch {
    pending.since = None;
    let lines = std::mem::take(&mut pending.lines);
    Batch::new(lines, u64::try_from(pending.oldest_us).unwrap_or(0))
}
