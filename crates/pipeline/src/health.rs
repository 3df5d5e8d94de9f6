//! Whether a running pipeline works, and the gauges an operator alerts on.
//!
//! A [`HealthHandle`] answers at once, from figures the pipeline keeps current: the buffer's
//! statistics, polled once a second (which also sets the buffer and checkpoint gauges), the
//! source's connection, and the writer's streak of failures. The answer is typed
//! ([`Health`]) and serializes to the JSON that `/health` serves.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use firehose_buffer::{Buffer, Stats};
use firehose_jetstream::SourceStatus;
use serde::Serialize;

use crate::ingest::IngestStatus;
use crate::unix_us;
use crate::write::WriterStatus;

/// A buffer this full (as a fraction of its capacity) is unhealthy: the source has stopped
/// reading, or soon will.
pub const FULL_BUFFER: f64 = 0.95;

/// Store attempts failed in a row from which the writer is unhealthy.
pub const FAILING_WRITES: u64 = 3;

/// Whether the pipeline works, why not, and the figures behind the answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Health {
    /// Whether everything works as it should.
    #[serde(skip)]
    pub healthy: bool,
    /// Why not, when not: one sentence per problem.
    pub reasons: Vec<String>,
    /// The buffer, once polled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buffer: Option<BufferHealth>,
    /// The source, when this pipeline reads Jetstream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jetstream: Option<SourceHealth>,
    /// The writer, when this pipeline writes Parquet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub writer: Option<WriterHealth>,
    /// How far the checkpoint is behind the clock (`None`: no checkpoint yet, or no writer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint_age_seconds: Option<f64>,
}

/// The buffer's part of [`Health`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BufferHealth {
    /// Events not yet acknowledged.
    pub events: u64,
    /// Bytes held.
    pub bytes: u64,
    /// Bytes held as a fraction of the capacity.
    pub utilisation: f64,
    /// Age of the oldest unacknowledged event.
    pub oldest_age_seconds: Option<f64>,
}

/// The source's part of [`Health`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceHealth {
    /// Whether a connection to Jetstream is open.
    pub connected: bool,
    /// For how long none has been open (`None` while one is).
    pub disconnected_seconds: Option<f64>,
    /// Messages received (events and dead letters).
    pub received: u64,
    /// Now minus the newest event's time.
    pub lag_seconds: Option<f64>,
    /// Since the last message arrived.
    pub last_message_age_seconds: Option<f64>,
    /// Since the last event arrived (or since the start, before the first).
    pub last_event_age_seconds: f64,
}

/// The writer's part of [`Health`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WriterHealth {
    /// Events stored.
    pub events_written: u64,
    /// Batches stored.
    pub batches_written: u64,
    /// Store attempts that failed in a row.
    pub failing_attempts: u64,
}

/// When the source counts as unhealthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceLimits {
    /// No connection for longer than this (the source's liveness timeout).
    pub disconnected: Duration,
    /// No event for longer than this; zero turns the check off (for filters that match
    /// rarely).
    pub silence: Duration,
}

/// The source's figures and its limits.
#[derive(Debug)]
pub(crate) struct SourceWatch {
    pub(crate) status: Arc<SourceStatus>,
    pub(crate) ingest: Arc<IngestStatus>,
    pub(crate) limits: SourceLimits,
}

/// Answers [`Health`] for a running pipeline; cheap to clone and to call.
#[derive(Debug, Clone)]
pub struct HealthHandle {
    inner: Arc<Watched>,
}

#[derive(Debug)]
struct Watched {
    buffer: Arc<dyn Buffer>,
    source: Option<SourceWatch>,
    writer: Option<Arc<WriterStatus>>,
    stats: Mutex<Option<Result<Stats, String>>>,
}

impl HealthHandle {
    pub(crate) fn new(
        buffer: Arc<dyn Buffer>,
        source: Option<SourceWatch>,
        writer: Option<Arc<WriterStatus>>,
    ) -> HealthHandle {
        HealthHandle {
            inner: Arc::new(Watched {
                buffer,
                source,
                writer,
                stats: Mutex::new(None),
            }),
        }
    }

    /// Polls the buffer and sets the gauges once a second, for ever: run it beside the
    /// pipeline and drop it when the pipeline stops.
    pub(crate) async fn poll(&self) {
        loop {
            self.poll_once().await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn poll_once(&self) {
        let watched = &self.inner;
        if let Some(writer) = &watched.writer {
            let checkpoint = writer.checkpoint_us.load(Ordering::Relaxed);
            if checkpoint > 0 {
                metrics::gauge!("firehose_checkpoint_age_seconds")
                    .set((unix_us() - checkpoint) as f64 / 1e6);
            }
        }
        let stats = watched.buffer.stats().await.map_err(|e| e.to_string());
        if let Ok(s) = &stats {
            metrics::gauge!("firehose_buffer_events").set(s.events_unacked() as f64);
            metrics::gauge!("firehose_buffer_bytes").set(s.bytes as f64);
            metrics::gauge!("firehose_buffer_capacity_bytes").set(s.capacity_bytes as f64);
            metrics::gauge!("firehose_buffer_utilisation_ratio").set(s.utilisation());
            metrics::gauge!("firehose_buffer_oldest_event_age_seconds")
                .set(s.oldest_unacked_age().map_or(0.0, |age| age.as_secs_f64()));
        }
        if let Ok(mut slot) = watched.stats.lock() {
            *slot = Some(stats);
        }
    }

    /// The pipeline's health now.
    pub fn check(&self) -> Health {
        let watched = &self.inner;
        let mut health = Health {
            healthy: true,
            ..Health::default()
        };
        let now_us = unix_us();
        match watched.stats.lock().ok().and_then(|s| s.clone()) {
            Some(Ok(stats)) => {
                if stats.utilisation() >= FULL_BUFFER {
                    health.reasons.push("the buffer is full".into());
                }
                health.buffer = Some(BufferHealth {
                    events: stats.events_unacked(),
                    bytes: stats.bytes,
                    utilisation: stats.utilisation(),
                    oldest_age_seconds: stats.oldest_unacked_age().map(|a| a.as_secs_f64()),
                });
            }
            Some(Err(e)) => health.reasons.push(format!("buffer unavailable: {e}")),
            None => {}
        }
        if let Some(source) = &watched.source {
            let last_ms = source.ingest.last_message_ms.load(Ordering::Relaxed);
            let newest = source.ingest.newest_time_us.load(Ordering::Relaxed);
            let disconnected = source.status.disconnected_for();
            let silence = source.status.last_event_age();
            if let Some(down) = disconnected
                && down > source.limits.disconnected
            {
                health.reasons.push(format!(
                    "no connection to Jetstream for {}s (the liveness timeout is {}s)",
                    down.as_secs(),
                    source.limits.disconnected.as_secs()
                ));
            }
            if !source.limits.silence.is_zero() && silence > source.limits.silence {
                health.reasons.push(format!(
                    "no event from Jetstream for {}s (the allowed silence is {}s)",
                    silence.as_secs(),
                    source.limits.silence.as_secs()
                ));
            }
            health.jetstream = Some(SourceHealth {
                connected: disconnected.is_none(),
                disconnected_seconds: disconnected.map(|d| d.as_secs_f64()),
                received: source.ingest.received.load(Ordering::Relaxed),
                lag_seconds: (newest > 0).then(|| (now_us - newest) as f64 / 1e6),
                last_message_age_seconds: (last_ms > 0)
                    .then(|| (now_us / 1000 - last_ms) as f64 / 1e3),
                last_event_age_seconds: silence.as_secs_f64(),
            });
        }
        if let Some(writer) = &watched.writer {
            let failing = writer.failing_for.load(Ordering::Relaxed);
            let checkpoint = writer.checkpoint_us.load(Ordering::Relaxed);
            if failing >= FAILING_WRITES {
                health
                    .reasons
                    .push(format!("storing batches failed {failing} times in a row"));
            }
            health.checkpoint_age_seconds =
                (checkpoint > 0).then(|| (now_us - checkpoint) as f64 / 1e6);
            health.writer = Some(WriterHealth {
                events_written: writer.events_written.load(Ordering::Relaxed),
                batches_written: writer.batches_written.load(Ordering::Relaxed),
                failing_attempts: failing,
            });
        }
        health.healthy = health.reasons.is_empty();
        health
    }
}

impl Health {
    /// The JSON answer of `/health`: `{"status": "ok"|"unhealthy", "reasons": [...], ...}`
    /// with the figures of each part.
    pub fn to_json(&self) -> serde_json::Value {
        let mut body = serde_json::to_value(self).unwrap_or_default();
        if let Some(object) = body.as_object_mut() {
            object.insert(
                "status".into(),
                (if self.healthy { "ok" } else { "unhealthy" }).into(),
            );
        }
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use firehose_buffer::memory::InMemory;

    #[tokio::test]
    async fn a_full_buffer_and_failing_writes_are_unhealthy_with_their_reasons() {
        let buffer: Arc<dyn Buffer> = Arc::new(InMemory::builder().build());
        let writer = Arc::new(WriterStatus::default());
        let handle = HealthHandle::new(buffer, None, Some(writer.clone()));
        handle.poll_once().await;
        let health = handle.check();
        assert!(health.healthy, "{health:?}");
        assert_eq!(health.to_json()["status"], "ok");
        assert_eq!(health.to_json()["buffer"]["events"], 0);

        writer.failing_for.store(FAILING_WRITES, Ordering::Relaxed);
        let health = handle.check();
        assert!(!health.healthy);
        assert_eq!(health.to_json()["status"], "unhealthy");
        assert_eq!(
            health.reasons,
            vec![format!(
                "storing batches failed {FAILING_WRITES} times in a row"
            )]
        );
    }
}
