//! The buffer between the Jetstream ingest and the Parquet writer.
//!
//! # Layout
//!
//! - [`Buffer`]: the trait every backend implements. Producers [`append`](Buffer::append) a
//!   [`Batch`] of encoded events; consumers of the buffer's consumer group
//!   [`read`](Buffer::read) [`Entry`]s, [`ack`](Buffer::ack) them once their data is durably
//!   written, and [`claim`](Buffer::claim) entries that a dead consumer left unacknowledged.
//! - [`BufferExt`]: conveniences built on the trait.
//! - [`memory::InMemory`]: bounded, in-process, always compiled; the embedded default.
#![cfg_attr(
    feature = "redis",
    doc = "- [`redis::RedisBuffer`]: Redis Streams with a consumer group (feature `redis`)."
)]
//! - [`Stats`], [`Capacity`] and [`WhenFull`]: monitoring and the full-buffer policy.
//! - `conformance` (feature `conformance`): the suite every backend passes.
//!
//! # Semantics
//!
//! Every backend gives the same guarantees, so code written against one works on the other:
//!
//! - An entry is delivered to one consumer of the group at a time. It stays *pending* (leased
//!   by that consumer) until it is acknowledged.
//! - Nothing acknowledged is delivered again; nothing unacknowledged is lost. A consumer that
//!   starts (the first [`read`](Buffer::read) under its name through a handle) first receives
//!   again the entries it had been given and not acknowledged, then new ones; entries a dead
//!   consumer holds are taken over with [`claim`](Buffer::claim) once they have been idle for
//!   longer than a timeout.
//! - Entries carry ordered ids of the Redis stream id shape, `<milliseconds>-<sequence>`, in
//!   both backends. Within one producer, ids grow in append order. The sink derives its file
//!   names from the first and last id of the batch it writes, so a retry after a crash rewrites
//!   the same file.
//! - The buffer is bounded by a [`Capacity`] in bytes of unacknowledged event payload, and
//!   [`WhenFull`] says what an append does when there is no room: wait (the default) or hand
//!   the batch back in [`Error::Full`]. A batch is never dropped silently.
//!
//! # Design choices
//!
//! A key design decision made in this crate is to buffer in **Redis Streams with a consumer
//! group** rather than a Redis LIST. The seed design popped items with `LRANGE` + `LREM`, which
//! is O(N) per removal and loses whatever a consumer had popped when it crashes. A stream with
//! a consumer group keeps every delivered entry in the group's pending entries list until
//! `XACK`, so a crash leaves the entries where `XREADGROUP` (own pending entries, on restart)
//! or `XAUTOCLAIM` (another consumer, after a timeout) find them again.
//!
//! **Acknowledge after the durable write.** The writer acknowledges an entry only once the
//! Parquet file holding its events is durably written (local: fsync and rename; S3: upload
//! complete). A crash in between means the entry is delivered again and the file rewritten
//! under the same name: at-least-once delivery with idempotent output, never loss.
//!
//! **Several events per entry.** One stream entry holds a whole batch (the events framed in one
//! field, plus the event count and the oldest event time), which divides the per-entry cost of
//! Redis by the batch size. That is what takes the backend well past the raw one-event-per-`XADD`
//! figure below.
//!
//! **Trimming rule.** Only acknowledged entries are trimmed. After each acknowledgement the
//! backend computes, across all consumer groups of the stream, the oldest id that some group
//! still needs (its oldest pending id, or its last delivered id when nothing is pending) and
//! trims with `XTRIM MINID` to that id, atomically in a script. An unacknowledged or undelivered
//! entry is therefore never trimmed, and the stream does not grow without bound.
//!
//! **Eviction check.** A Redis configured with an evicting `maxmemory-policy` (`allkeys-lru` and
//! friends) silently deletes buffered events under memory pressure, which is data loss nobody
//! sees. The Redis backend reads `maxmemory-policy` at start and refuses to run unless it is
//! `noeviction` (or the caller sets an explicit override, which logs a warning). It also reports
//! its memory use against `maxmemory` in [`Stats::server_memory`]. The server should run with
//! AOF (`appendonly yes`, `appendfsync everysec`, or `always` when no second may be lost).
//!
//! **Capacity.** Capacity counts bytes of unacknowledged event payload, tracked exactly (by
//! counters updated atomically with each append and acknowledgement in the Redis backend). A
//! batch larger than the whole capacity is admitted when the buffer is empty, so a producer can
//! never wait forever.
//!
//! # Performance
//!
//! Measured on the development machine (2 vCPU VM, loopback round trip about 130 µs, Redis
//! 7.0.15 with AOF `everysec`) on 2026-11-23, with nothing else running:
//!
//! ```text
//! crates/buffer/bench.sh
//! # = redis-benchmark -p PORT -P 64 -n 1000000 -q XADD bench '*' f <550 bytes>
//! #   then REDIS_URL=redis://127.0.0.1:PORT/0 cargo bench -p firehose-buffer --bench throughput
//! ```
//!
//! One producer appends batches while one consumer reads up to 64 entries at a time and
//! acknowledges them, events of 550 bytes (the mean Jetstream event):
//!
//! | benchmark                        | events/s   | MB/s   | × raw XADD |
//! |----------------------------------|-----------:|-------:|-----------:|
//! | raw `redis-benchmark -P 64 XADD` |    264,760 |  145.6 |       1.00 |
//! | memory, 10 events per entry      | 10,620,000 |  5,841 |      40.11 |
//! | memory, 100 events per entry     | 27,904,000 | 15,347 |     105.39 |
//! | memory, 500 events per entry     | 32,593,000 | 17,926 |     123.10 |
//! | Redis, 10 events per entry       |     35,826 |   19.7 |       0.14 |
//! | Redis, 100 events per entry      |    225,520 |  124.0 |       0.85 |
//! | Redis, 500 events per entry      |    382,030 |  210.1 |       1.44 |
//!
//! An earlier run the same day gave 216,732 raw, 211,310 (100) and 403,490 (500) events/s
//! for Redis; with parallel compiles loading the machine, every figure fell by a factor of 1.5
//! to 3. The targets (memory ≥ 2,000,000 events/s; Redis ≥ 300,000 events/s and ≥ 0.6× raw
//! `XADD`) are met from about 500 events per entry, which is why the ingest should batch
//! generously when it has a backlog. Small entries are bound by the round trip: one producer
//! awaits each append, so 10-event entries top out near 3,500 appends/s here. The append
//! script passes each payload through Lua, which costs Redis CPU (with 100 kB entries,
//! `EVAL` of an `XADD` ran at about 60% of the rate of a plain `XADD` in `redis-benchmark`);
//! that is the price of exact, atomic capacity and stats.
//!
//! # Example
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> firehose_buffer::Result<()> {
//! use std::time::Duration;
//! use bytes::Bytes;
//! use firehose_buffer::{Batch, Buffer, BufferExt, memory::InMemory};
//!
//! let buffer = InMemory::new();
//! let id = buffer.append(Batch::new(vec![Bytes::from_static(b"{\"did\":\"x\"}")], 1_700_000_000_000_000)).await?;
//! let entries = buffer.read("writer-1", 16, Duration::from_millis(100)).await?;
//! assert_eq!(entries[0].id, id);
//! // ... write entries durably, then:
//! buffer.ack_entries(&entries).await?;
//! assert_eq!(buffer.stats().await?.events_unacked(), 0);
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;

#[cfg(any(feature = "conformance", test))]
pub mod conformance;
pub mod memory;
#[cfg(feature = "redis")]
pub mod redis;

/// The default capacity: 256 MiB of unacknowledged event payload.
pub const DEFAULT_CAPACITY_BYTES: u64 = 256 * 1024 * 1024;

/// A specialized `Result` for buffer operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The errors of every buffer backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The buffer had no room for the batch and its policy is [`WhenFull::Reject`]. The batch
    /// is handed back, untouched, so the caller can retry or fail loudly.
    #[error(
        "buffer {buffer} is full: {used_bytes} of {capacity_bytes} bytes used, \
         batch of {} bytes refused",
        batch.bytes()
    )]
    Full {
        /// The buffer (backend and name).
        buffer: String,
        /// The refused batch.
        batch: Box<Batch>,
        /// Bytes of unacknowledged payload at the time of the refusal.
        used_bytes: u64,
        /// The configured capacity.
        capacity_bytes: u64,
    },
    /// A batch without any event was appended.
    #[error("cannot append an empty batch to buffer {buffer}")]
    EmptyBatch {
        /// The buffer (backend and name).
        buffer: String,
    },
    /// A configuration value is missing or invalid.
    #[error("invalid buffer configuration {key}: {message}")]
    Config {
        /// The configuration key.
        key: &'static str,
        /// What is wrong with it (never the value of a secret).
        message: String,
    },
    /// The server is configured to evict keys, which silently loses buffered events.
    #[error(
        "redis at {server} has maxmemory-policy {policy}, which evicts buffered events; \
         set maxmemory-policy noeviction (or allow eviction explicitly)"
    )]
    Eviction {
        /// The server (host and port, no credentials).
        server: String,
        /// The configured policy.
        policy: String,
    },
    /// An entry in the buffer could not be decoded.
    #[error("entry {id} of stream {stream} is corrupt: {message}")]
    Corrupt {
        /// The stream.
        stream: String,
        /// The entry id.
        id: String,
        /// What is wrong.
        message: String,
    },
    /// An id could not be parsed.
    #[error("invalid entry id {id:?}: expected <milliseconds>-<sequence>")]
    InvalidId {
        /// The text that did not parse.
        id: String,
    },
    /// Any other error of a backend (connection, protocol, server).
    #[error("{backend} buffer error: {source}")]
    Backend {
        /// The backend (`"memory"`, `"redis"`).
        backend: &'static str,
        /// The underlying error.
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

impl Error {
    /// The batch an append handed back, if this error is [`Error::Full`].
    pub fn into_batch(self) -> Option<Batch> {
        match self {
            Self::Full { batch, .. } => Some(*batch),
            _ => None,
        }
    }
}

/// The id of a buffer entry: `<milliseconds>-<sequence>`, ordered, like a Redis stream id.
///
/// ```
/// # use firehose_buffer::EntryId;
/// let id: EntryId = "1700000000000-3".parse().unwrap();
/// assert_eq!(id, EntryId::new(1_700_000_000_000, 3));
/// assert_eq!(id.to_string(), "1700000000000-3");
/// assert!(id < EntryId::new(1_700_000_000_001, 0));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EntryId {
    ms: u64,
    seq: u64,
}

impl EntryId {
    /// The smallest id, `0-0`.
    pub const MIN: Self = Self { ms: 0, seq: 0 };

    /// An id from its two parts.
    pub const fn new(ms: u64, seq: u64) -> Self {
        Self { ms, seq }
    }

    /// The millisecond part: the server's (or process's) clock when the entry was appended.
    pub const fn ms(&self) -> u64 {
        self.ms
    }

    /// The sequence within the millisecond.
    pub const fn seq(&self) -> u64 {
        self.seq
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

impl FromStr for EntryId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let invalid = || Error::InvalidId { id: s.to_owned() };
        let (ms, seq) = s.split_once('-').ok_or_else(invalid)?;
        let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
        if !digits(ms) || !digits(seq) {
            return Err(invalid());
        }
        Ok(Self {
            ms: ms.parse().map_err(|_| invalid())?,
            seq: seq.parse().map_err(|_| invalid())?,
        })
    }
}

/// A batch of encoded events, appended as one entry.
///
/// The events are opaque bytes to the buffer (the ingest stores Jetstream JSON). The batch also
/// carries the event time of its oldest event, in Unix microseconds (Jetstream's `time_us`),
/// from which [`Stats`] reports the age of the oldest unacknowledged event.
#[derive(Clone, PartialEq, Eq)]
pub struct Batch {
    events: Vec<Bytes>,
    oldest_time_us: u64,
    bytes: u64,
    replay_free: bool,
}

impl Batch {
    /// A batch of `events` whose oldest event happened at `oldest_time_us` (Unix microseconds).
    pub fn new(events: Vec<Bytes>, oldest_time_us: u64) -> Self {
        let bytes = events.iter().map(|e| e.len() as u64).sum();
        Self {
            events,
            oldest_time_us,
            bytes,
            replay_free: false,
        }
    }

    /// Says whether the producer vouches that none of the events was appended before (it
    /// checked them against everything it passed on since it resumed, as ingest's replay
    /// filter does): the writer then marks the files it writes from such batches alone
    /// duplicate-free. Kept with the entry.
    pub fn with_replay_free(mut self, replay_free: bool) -> Self {
        self.replay_free = replay_free;
        self
    }

    /// Whether the producer vouched that none of the events was appended before
    /// ([`with_replay_free`](Self::with_replay_free)); `false` unless it said so.
    pub fn is_replay_free(&self) -> bool {
        self.replay_free
    }

    /// The events, in the order they were appended.
    pub fn events(&self) -> &[Bytes] {
        &self.events
    }

    /// The events, by value.
    pub fn into_events(self) -> Vec<Bytes> {
        self.events
    }

    /// The number of events.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether the batch holds no event.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The payload size: the sum of the events' lengths.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The event time of the oldest event, in Unix microseconds.
    pub fn oldest_time_us(&self) -> u64 {
        self.oldest_time_us
    }
}

impl fmt::Debug for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The payload can be large: show its shape, not its content.
        f.debug_struct("Batch")
            .field("events", &self.events.len())
            .field("bytes", &self.bytes)
            .field("oldest_time_us", &self.oldest_time_us)
            .field("replay_free", &self.replay_free)
            .finish()
    }
}

/// An entry delivered to a consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its id: acknowledge with it, and name output after it.
    pub id: EntryId,
    /// The events appended as this entry.
    pub batch: Batch,
    /// How many times the entry has been delivered, this time included (1 on first delivery).
    pub deliveries: u64,
}

/// How many bytes of unacknowledged event payload a buffer holds before it is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    bytes: u64,
}

impl Capacity {
    /// A capacity of `bytes` bytes of event payload (at least 1).
    pub const fn bytes(bytes: u64) -> Self {
        Self {
            bytes: if bytes == 0 { 1 } else { bytes },
        }
    }

    /// The capacity in bytes.
    pub const fn as_bytes(&self) -> u64 {
        self.bytes
    }
}

impl Default for Capacity {
    fn default() -> Self {
        Self::bytes(DEFAULT_CAPACITY_BYTES)
    }
}

/// What an append does when the buffer has no room for the batch.
///
/// There is deliberately no variant that drops events: a full buffer either slows the producer
/// down or tells it so.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhenFull {
    /// Wait until consumers have acknowledged enough to make room (backpressure). The ingest
    /// then stops reading its socket, and Jetstream's cursor covers the gap when it resumes.
    /// This is the default.
    #[default]
    Block,
    /// Fail at once with [`Error::Full`], which hands the batch back to the caller.
    Reject,
}

impl FromStr for WhenFull {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "block" => Ok(Self::Block),
            "reject" => Ok(Self::Reject),
            _ => Err(Error::Config {
                key: "when_full",
                message: format!("expected block or reject, got {s:?}"),
            }),
        }
    }
}

/// Memory use of the server behind a buffer, where it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerMemory {
    /// Bytes the server uses (Redis `used_memory`).
    pub used_bytes: u64,
    /// The server's limit (Redis `maxmemory`); `None` when it has none.
    pub max_bytes: Option<u64>,
}

/// A snapshot of a buffer, for monitoring.
///
/// *Waiting* entries have not been delivered to any consumer of the group yet; *pending*
/// entries have been delivered and not acknowledged. Both count as unacknowledged.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct Stats {
    /// Entries not delivered yet.
    pub entries_waiting: u64,
    /// Events in the entries not delivered yet.
    pub events_waiting: u64,
    /// Entries delivered and not acknowledged.
    pub entries_pending: u64,
    /// Events in the entries delivered and not acknowledged.
    pub events_pending: u64,
    /// Bytes of unacknowledged event payload (waiting and pending).
    pub bytes: u64,
    /// The event time of the oldest unacknowledged event, in Unix microseconds.
    pub oldest_unacked_time_us: Option<u64>,
    /// The capacity, in bytes of event payload.
    pub capacity_bytes: u64,
    /// The memory of the server holding the buffer, when there is one.
    pub server_memory: Option<ServerMemory>,
}

impl Stats {
    /// Unacknowledged entries (waiting and pending).
    pub fn entries_unacked(&self) -> u64 {
        self.entries_waiting + self.entries_pending
    }

    /// Unacknowledged events (waiting and pending).
    pub fn events_unacked(&self) -> u64 {
        self.events_waiting + self.events_pending
    }

    /// The fraction of the capacity in use: 0.0 when empty, 1.0 (or more, after an oversized
    /// batch) when full.
    pub fn utilisation(&self) -> f64 {
        if self.capacity_bytes == 0 {
            return 0.0;
        }
        self.bytes as f64 / self.capacity_bytes as f64
    }

    /// The fraction of the server's `maxmemory` in use, when it has a limit.
    pub fn server_utilisation(&self) -> Option<f64> {
        let m = self.server_memory?;
        let max = m.max_bytes.filter(|&m| m > 0)?;
        Some(m.used_bytes as f64 / max as f64)
    }

    /// How old the oldest unacknowledged event is, by the local clock.
    pub fn oldest_unacked_age(&self) -> Option<Duration> {
        let t = self.oldest_unacked_time_us?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?;
        Some(now.saturating_sub(Duration::from_micros(t)))
    }
}

/// A buffer of event batches with one consumer group: see the [crate docs](crate) for the
/// guarantees every implementation gives.
#[async_trait]
pub trait Buffer: fmt::Debug + fmt::Display + Send + Sync {
    /// Append a batch as one entry and return its id.
    ///
    /// When the buffer is full, waits or fails with [`Error::Full`] according to its
    /// [`WhenFull`] policy. An empty batch is refused with [`Error::EmptyBatch`].
    ///
    /// Dropping the returned future before it completes may or may not have appended the
    /// batch; retrying then may append it twice (the archive removes duplicate events).
    async fn append(&self, batch: Batch) -> Result<EntryId>;

    /// Read up to `count` entries for `consumer`, waiting up to `block` for new ones when there
    /// are none (`Duration::ZERO`: do not wait). Returns an empty list on timeout.
    ///
    /// The first read of a consumer name through a handle returns the entries that consumer was
    /// given before and has not acknowledged (it restarted), oldest first, before any new
    /// entry. Entries returned become pending for `consumer` until acknowledged or claimed.
    async fn read(&self, consumer: &str, count: usize, block: Duration) -> Result<Vec<Entry>>;

    /// Acknowledge entries, whoever holds them, once their events are durably written. Returns
    /// how many were pending; unknown or already acknowledged ids are ignored. Acknowledged
    /// entries are never delivered again and are trimmed.
    async fn ack(&self, ids: &[EntryId]) -> Result<u64>;

    /// Take over up to `count` pending entries that have not been delivered or acknowledged for
    /// at least `min_idle` (their consumer is presumed dead), oldest first. They become
    /// pending for `consumer`, and are returned.
    async fn claim(&self, consumer: &str, min_idle: Duration, count: usize) -> Result<Vec<Entry>>;

    /// A snapshot of the buffer for monitoring.
    async fn stats(&self) -> Result<Stats>;

    /// Up to `count` entries not yet acknowledged, oldest first, after `after` (from the oldest
    /// when `None`), without delivering them to anyone (their delivery counts are 0). A producer
    /// that restarts reads this way what it appended before that no writer has stored yet.
    /// May also return acknowledged entries not trimmed yet.
    async fn peek(&self, after: Option<EntryId>, count: usize) -> Result<Vec<Entry>>;
}

macro_rules! forward_buffer {
    ($ty:ty) => {
        #[async_trait]
        impl<T: Buffer + ?Sized> Buffer for $ty {
            async fn append(&self, batch: Batch) -> Result<EntryId> {
                (**self).append(batch).await
            }
            async fn read(
                &self,
                consumer: &str,
                count: usize,
                block: Duration,
            ) -> Result<Vec<Entry>> {
                (**self).read(consumer, count, block).await
            }
            async fn ack(&self, ids: &[EntryId]) -> Result<u64> {
                (**self).ack(ids).await
            }
            async fn claim(
                &self,
                consumer: &str,
                min_idle: Duration,
                count: usize,
            ) -> Result<Vec<Entry>> {
                (**self).claim(consumer, min_idle, count).await
            }
            async fn stats(&self) -> Result<Stats> {
                (**self).stats().await
            }
            async fn peek(&self, after: Option<EntryId>, count: usize) -> Result<Vec<Entry>> {
                (**self).peek(after, count).await
            }
        }
    };
}

forward_buffer!(Arc<T>);
forward_buffer!(Box<T>);

/// A small durable table of text fields kept beside a buffer that outlives its processes (in
/// Redis, a hash beside the stream), for the state of whoever reads the buffer: the pipeline
/// keeps its cursor checkpoint and its journal of batches being written there, so that they
/// live and die with the entries they describe.
#[async_trait]
pub trait SideTable: fmt::Debug + Send + Sync {
    /// A field's value.
    async fn get(&self, field: &str) -> Result<Option<String>>;
    /// Every field whose name starts with `prefix`, sorted by name.
    async fn scan(&self, prefix: &str) -> Result<Vec<(String, String)>>;
    /// Sets a field.
    async fn set(&self, field: &str, value: &str) -> Result<()>;
    /// Removes a field.
    async fn delete(&self, field: &str) -> Result<()>;
    /// Raises a numeric field to `value` if it is lower (or missing), in one step, and returns
    /// its value afterwards: several processes can advance it without moving it back.
    async fn raise(&self, field: &str, value: u64) -> Result<u64>;
    /// Sets a field, in one step with a check that `consumer` still holds every one of `ids`
    /// (delivered to it, and neither acknowledged nor claimed by another consumer since).
    /// Returns the ids it no longer holds; the field is set only when there are none.
    ///
    /// A writer records a batch this way before storing it: once recorded, a consumer that
    /// claims the batch's entries finds the record and writes the same batch under the same
    /// name; when some were claimed first, the writer stores nothing of the batch.
    async fn set_if_held(
        &self,
        field: &str,
        value: &str,
        consumer: &str,
        ids: &[EntryId],
    ) -> Result<Vec<EntryId>>;
}

/// Conveniences for every [`Buffer`].
///
/// This trait is implemented for every `Buffer`: you MUST NOT implement it yourself.
#[async_trait]
pub trait BufferExt: Buffer {
    /// Append `events` as one entry, `oldest_time_us` being the event time of the oldest.
    async fn append_events(&self, events: Vec<Bytes>, oldest_time_us: u64) -> Result<EntryId> {
        self.append(Batch::new(events, oldest_time_us)).await
    }

    /// Acknowledge the given entries.
    async fn ack_entries(&self, entries: &[Entry]) -> Result<u64> {
        let ids: Vec<EntryId> = entries.iter().map(|e| e.id).collect();
        self.ack(&ids).await
    }
}

impl<T: Buffer + ?Sized> BufferExt for T {}

/// `duration` from now, saturating at about a century for huge durations (`Duration::MAX`).
pub(crate) fn deadline_after(duration: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(duration)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

/// Now as Unix milliseconds (0 if the clock is before 1970).
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_id_parses_and_orders() {
        let id: EntryId = "12-3".parse().unwrap();
        assert_eq!(id, EntryId::new(12, 3));
        assert!(EntryId::new(12, 3) < EntryId::new(12, 4));
        assert!(EntryId::new(12, 9) < EntryId::new(13, 0));
        for bad in [
            "",
            "12",
            "-3",
            "12-",
            "a-1",
            "1-b",
            "+1-2",
            "1--2",
            "99999999999999999999-0",
        ] {
            assert!(bad.parse::<EntryId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn batch_counts_bytes_and_hides_payload() {
        let b = Batch::new(
            vec![Bytes::from_static(b"abc"), Bytes::from_static(b"de")],
            7,
        );
        assert_eq!(b.bytes(), 5);
        assert_eq!(b.len(), 2);
        assert!(!format!("{b:?}").contains("abc"));
    }

    #[test]
    fn full_error_hands_batch_back() {
        let b = Batch::new(vec![Bytes::from_static(b"abc")], 7);
        let e = Error::Full {
            buffer: "memory".into(),
            batch: Box::new(b.clone()),
            used_bytes: 1,
            capacity_bytes: 2,
        };
        assert!(e.to_string().contains("full"));
        assert_eq!(e.into_batch(), Some(b));
    }

    #[test]
    fn stats_utilisation() {
        let s = Stats {
            bytes: 50,
            capacity_bytes: 200,
            ..Stats::default()
        };
        assert_eq!(s.utilisation(), 0.25);
        assert_eq!(s.server_utilisation(), None);
    }
}
