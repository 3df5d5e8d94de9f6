//! The running pipeline: Jetstream into the buffer, the buffer into Parquet, and the cursor
//! checkpoint that makes restarts lossless.
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
//!   `write` (`state::RedisState`).
//! - [`line`]: how a buffered line carries either an event or a dead letter.
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

pub mod ingest;
pub mod line;
pub mod state;
pub mod write;

pub use state::{DatasetState, JournaledBatch, StateStore};
pub use write::{WriteLoop, WriterConfig, WriterReport, WriterStatus};

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
