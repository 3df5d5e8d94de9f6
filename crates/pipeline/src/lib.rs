//! The running pipeline: Jetstream into the buffer, the buffer into Parquet, and the cursor
//! checkpoint that makes restarts lossless.
//!
//! ```
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use firehose_mock_jetstream::{EventSource, MockConfig, MockServer};
//! use firehose_pipeline::{JetstreamConfig, LocalStorage, Pipeline};
//! // A Jetstream-protocol server with 1,000 events, in-process for the example.
//! let events = EventSource::Generated { seed: 1, events: Some(1_000), start_time_us: None };
//! let jetstream = MockServer::start(MockConfig { events, ..MockConfig::default() }).await?;
//!
//! let dir = std::env::temp_dir().join(format!("firehose-pipeline-doc-{}", std::process::id()));
//! let config = JetstreamConfig { urls: vec![jetstream.url()], ..JetstreamConfig::default() };
//! let pipeline = Pipeline::archive(config, Arc::new(LocalStorage::new(&dir)))
//!     .build()
//!     .await?;
//! let health = pipeline.health();
//! // Any future stops it: here, once every event has arrived. What is open is written first.
//! let report = pipeline
//!     .run(async move {
//!         while health.check().jetstream.map_or(0, |j| j.received) < 1_000 {
//!             tokio::time::sleep(Duration::from_millis(50)).await;
//!         }
//!     })
//!     .await?;
//! assert_eq!(report.written.events, 1_000);
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! - [`ingest::IngestLoop`] reads the Jetstream source and appends its messages to the buffer,
//!   a few hundred per entry; when the buffer is full it waits, and stops reading the socket.
//! - [`write::WriteLoop`] reads buffer entries, decodes their events into open Parquet files
//!   ([`firehose_sink::OpenFiles`]), closes them by size, age, hour or memory, stores them
//!   under a name made of the first and last entry ids, then acknowledges the entries, then
//!   raises the checkpoint. Messages that do not decode go to the `dead_letters` table.
//! - [`state`]: where the checkpoint and the batch journal live: beside the dataset for the
//!   all-in-one `run` ([`state::DatasetState`]), in Redis beside the stream for `ingest` /
//!   `write` ([`state::TableState`], in the [`SideTable`] beside a shared buffer such as
//!   Redis).
//! - [`mod@line`]: how a buffered line carries either an event or a dead letter.
//! - [`Pipeline`] owns the parts as one running value, in one of three shapes:
//!   [`Pipeline::archive`] (Jetstream → memory → Parquet, `firehose run`),
//!   [`Pipeline::ingest`] and [`Pipeline::write`] (either side of a [`SharedBuffer`] such as
//!   Redis); [`health`] says whether it works and sets the gauges.
//!
//! # Why this order
//!
//! A key design decision made in this crate is the order **store, then acknowledge, then
//! checkpoint**, with names derived from the batch. A crash before the store leaves the entries
//! unacknowledged: they are read again. A crash after the store but before the
//! acknowledgement leaves the batch in the journal: its entries are written again under the
//! same name, replacing the same files. The checkpoint only ever passes events that are in
//! Parquet, so the source can always resume from it, even when the buffer was in memory and
//! died with the process. Jetstream's own duplicates (from the rewind on reconnect) are
//! removed later, by compaction and by the query facade, using the event key.

#[cfg(feature = "cli")]
pub mod cli;
pub mod health;
pub mod ingest;
pub mod line;
mod pipeline;
pub mod replay;
pub mod state;
pub mod write;

pub use health::{Health, HealthHandle};
pub use pipeline::{
    CLAIM_MARGIN, DEFAULT_MAX_EVENT_SILENCE, DEFAULT_MEMORY_BUFFER_BYTES, Pipeline,
    PipelineBuilder, PipelineReport, SharedBuffer, host_consumer_name,
};
pub use state::{DatasetState, JournaledBatch, MirroredState, StateStore};
pub use write::{WriteLoop, WriterConfig, WriterReport, WriterStatus};

// What a caller needs to build a pipeline, so that it can depend on this crate alone.
/// The Redis Streams buffer (feature `redis`).
#[cfg(feature = "redis")]
pub use firehose_buffer::redis;
pub use firehose_buffer::{Buffer, SideTable, memory::InMemory};
pub use firehose_jetstream::Config as JetstreamConfig;
pub use firehose_sink::{
    Compression, LocalStorage, ParquetOptions, RollPolicy, Storage, open as open_storage,
};

/// Errors of the pipeline.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A buffer operation failed (after the buffer's own retries).
    #[error("buffer {op}: {source}")]
    Buffer {
        /// What was being done.
        op: &'static str,
        /// The buffer's error.
        source: firehose_buffer::Error,
    },
    /// Encoding or storing Parquet failed in a way retrying cannot fix.
    #[error("{op}: {source}")]
    Sink {
        /// What was being done.
        op: &'static str,
        /// The sink's error.
        source: firehose_sink::Error,
    },
    /// The Jetstream source cannot go on (a configuration problem: network trouble is retried).
    #[error("jetstream: {0}")]
    Source(#[from] firehose_jetstream::Error),
    /// The pipeline's state could not be read or written.
    #[error("{op}: {message}")]
    State {
        /// What was being done.
        op: &'static str,
        /// What went wrong.
        message: String,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Registers every metric the pipeline exports, at zero, with its help text. Call it once at
/// start: a series that exists from the start lets alerts and `increase()` see its first
/// change, and lets a scrape list every name before anything happened.
pub fn describe_metrics() {
    use firehose_core::Table;
    use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge};
    for (name, help) in [
        (
            "firehose_jetstream_reconnects_total",
            "Connections to Jetstream opened after the first.",
        ),
        (
            "firehose_jetstream_messages_total",
            "WebSocket messages received from Jetstream.",
        ),
        (
            "firehose_jetstream_bytes_total",
            "Message bytes received from Jetstream.",
        ),
        (
            "firehose_events_received_total",
            "Events received from the source.",
        ),
        (
            "firehose_replays_dropped_total",
            "Events dropped before the buffer because their key was passed on before (Jetstream's replays after a reconnect or restart).",
        ),
        ("firehose_writer_batches_total", "Batches stored."),
        ("firehose_writer_bytes_total", "Parquet bytes stored."),
        (
            "firehose_writer_input_bytes_total",
            "JSON bytes of the events stored.",
        ),
        (
            "firehose_writer_failures_total",
            "Attempts to store a batch or write the checkpoint that failed (retried).",
        ),
    ] {
        describe_counter!(name, help);
        counter!(name).increment(0);
    }
    describe_counter!(
        "firehose_events_decoded_total",
        "Events decoded, by collection."
    );
    describe_counter!(
        "firehose_writer_files_total",
        "Parquet files stored, by table."
    );
    describe_counter!("firehose_writer_rows_total", "Rows stored, by table.");
    for table in Table::ALL {
        counter!("firehose_events_decoded_total", "collection" => write::collection_label(table))
            .increment(0);
        counter!("firehose_writer_files_total", "table" => table.name()).increment(0);
        counter!("firehose_writer_rows_total", "table" => table.name()).increment(0);
    }
    describe_counter!(
        "firehose_events_dead_lettered_total",
        "Messages that failed to decode, by reason; kept in the dead_letters table."
    );
    for reason in write::DEAD_LETTER_REASONS {
        counter!("firehose_events_dead_lettered_total", "reason" => reason).increment(0);
    }
    for (name, help) in [
        (
            "firehose_jetstream_connected",
            "1 while connected to Jetstream.",
        ),
        (
            "firehose_jetstream_lag_seconds",
            "Now minus the time of the newest event received.",
        ),
        (
            "firehose_buffer_events",
            "Events waiting in the buffer (unacknowledged).",
        ),
        ("firehose_buffer_bytes", "Bytes waiting in the buffer."),
        ("firehose_buffer_capacity_bytes", "The buffer's byte bound."),
        (
            "firehose_buffer_utilisation_ratio",
            "Buffer bytes over capacity.",
        ),
        (
            "firehose_buffer_oldest_event_age_seconds",
            "Now minus the time of the oldest waiting event.",
        ),
        (
            "firehose_writer_compression_ratio",
            "Parquet bytes over JSON bytes in the last batch.",
        ),
        (
            "firehose_checkpoint_time_us",
            "The cursor checkpoint: every event before it is stored.",
        ),
        (
            "firehose_checkpoint_age_seconds",
            "Now minus the checkpoint.",
        ),
    ] {
        describe_gauge!(name, help);
        gauge!(name).set(0.0);
    }
    describe_histogram!(
        "firehose_writer_batch_duration_seconds",
        metrics::Unit::Seconds,
        "Time to encode and store one batch."
    );
    let _ = metrics::histogram!("firehose_writer_batch_duration_seconds");
}

/// Now as Unix microseconds (0 before 1970).
pub(crate) fn unix_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}
