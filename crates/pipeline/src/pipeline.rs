//! A running pipeline as one value: what `firehose run`, `ingest` and `write` are.
//!
//! A key design decision made here is that **the mode decides the settings that correctness
//! depends on**. Each constructor is one of the three shapes the archive runs in, and fixes
//! what must go with it: where the checkpoint lives, whether entries may be acknowledged as
//! soon as they are read (only with the in-memory buffer, whose durability is the checkpoint),
//! whether the writer drains the buffer on shutdown, whether it takes over entries a stopped
//! writer left, and the order in which the parts stop. The builder only tunes the rest.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use firehose_buffer::memory::InMemory;
use firehose_buffer::{Buffer, Capacity, SideTable};
use firehose_jetstream::Source;
use firehose_sink::{ParquetOptions, RollPolicy, Storage};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::health::{HealthHandle, SourceLimits};
use crate::ingest::{IngestConfig, IngestLoop, IngestReport};
use crate::replay::ReplayFilter;
use crate::state::{DatasetState, MirroredState, StateStore, TableState};
use crate::write::{WriteLoop, WriterConfig, WriterReport};
use crate::{Error, Result};

/// The in-memory buffer's default bound, in bytes of event JSON.
pub const DEFAULT_MEMORY_BUFFER_BYTES: u64 = 256 << 20;

/// The no-event bound of [`Health`](crate::Health) by default: the whole firehose carries
/// hundreds of events a second.
pub const DEFAULT_MAX_EVENT_SILENCE: Duration = Duration::from_secs(120);

/// How long a writer's entries must wait unacknowledged, beyond the longest time a file stays
/// open, before another writer of the group takes them over.
pub const CLAIM_MARGIN: Duration = Duration::from_secs(300);

/// A durable buffer shared between processes (Redis Streams on a server), with the
/// pipeline's state (checkpoint and batch journal) kept beside it.
#[derive(Debug, Clone)]
pub struct SharedBuffer {
    buffer: Arc<dyn Buffer>,
    state: Arc<dyn StateStore>,
}

impl SharedBuffer {
    /// `buffer`, with the pipeline's state in `state`. Both must outlive a process: the state
    /// says which batches were being written when it died.
    pub fn new(buffer: Arc<dyn Buffer>, state: Arc<dyn StateStore>) -> SharedBuffer {
        SharedBuffer { buffer, state }
    }

    /// A buffer that keeps a [`SideTable`] beside its entries (Redis Streams: a hash beside
    /// the stream), with the pipeline's state in that table.
    pub fn with_side_table<B: Buffer + SideTable + 'static>(buffer: Arc<B>) -> SharedBuffer {
        SharedBuffer {
            buffer: buffer.clone(),
            state: Arc::new(TableState::new(buffer)),
        }
    }
}

/// The shape of a pipeline, fixed by its constructor.
#[derive(Debug)]
enum Shape {
    /// Jetstream → in-memory buffer → storage.
    Archive {
        jetstream: firehose_jetstream::Config,
        storage: Arc<dyn Storage>,
        state: Arc<dyn StateStore>,
        buffer_bytes: u64,
    },
    /// Jetstream → shared buffer.
    Ingest {
        jetstream: firehose_jetstream::Config,
        shared: SharedBuffer,
        /// The dataset the writers write, when known: its checkpoint and stored keys.
        dataset: Option<Arc<dyn Storage>>,
    },
    /// Shared buffer → storage.
    Write {
        shared: SharedBuffer,
        storage: Arc<dyn Storage>,
    },
}

/// Settings of a [`Pipeline`]; made by [`Pipeline::archive`], [`Pipeline::ingest`] or
/// [`Pipeline::write`], finished by [`build`](Self::build).
#[derive(Debug)]
pub struct PipelineBuilder {
    shape: Shape,
    start_cursor: Option<i64>,
    max_event_silence: Duration,
    policy: RollPolicy,
    parquet: ParquetOptions,
    encode_threads: Option<usize>,
    consumer: String,
    claim_idle: Option<Duration>,
    ingest: IngestConfig,
    replay_window: Duration,
    start_live: bool,
}

/// One running pipeline: its source, buffer and writer, with the resume from the checkpoint,
/// the shutdown order, the health state and the gauges.
///
/// ```no_run
/// use std::sync::Arc;
/// use std::time::Duration;
/// use firehose_pipeline::{JetstreamConfig, LocalStorage, Pipeline};
/// # async fn example() -> Result<(), firehose_pipeline::Error> {
/// let storage = Arc::new(LocalStorage::new("./data"));
/// let pipeline = Pipeline::archive(JetstreamConfig::default(), storage)
///     .build()
///     .await?;
/// let health = pipeline.health();
/// // Archive for an hour, then write what is open and stop.
/// let report = pipeline
///     .run(tokio::time::sleep(Duration::from_secs(3600)))
///     .await?;
/// println!("{} events written; healthy: {}", report.written.events, health.check().healthy);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Pipeline {
    ingest: Option<IngestLoop>,
    writer: Option<WriteLoop>,
    health: HealthHandle,
}

/// What a finished pipeline did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PipelineReport {
    /// The ingest side (zero when there is none).
    pub ingested: IngestReport,
    /// The writer side (zero when there is none).
    pub written: WriterReport,
}

impl Pipeline {
    /// Jetstream into an in-memory buffer into `storage`, in one process (`firehose run`).
    /// The checkpoint is kept beside the dataset (`_firehose/checkpoint.json`) and only passes
    /// events that are stored, so a restart resumes from it and loses nothing although the
    /// buffer died with the process.
    pub fn archive(
        jetstream: firehose_jetstream::Config,
        storage: Arc<dyn Storage>,
    ) -> PipelineBuilder {
        let state: Arc<dyn StateStore> = Arc::new(DatasetState::new(storage.clone()));
        PipelineBuilder::new(Shape::Archive {
            jetstream,
            storage,
            state,
            buffer_bytes: DEFAULT_MEMORY_BUFFER_BYTES,
        })
    }

    /// Jetstream into a shared buffer (`firehose ingest`), resuming from the checkpoint the
    /// writers keep beside it.
    pub fn ingest(jetstream: firehose_jetstream::Config, shared: SharedBuffer) -> PipelineBuilder {
        PipelineBuilder::new(Shape::Ingest {
            jetstream,
            shared,
            dataset: None,
        })
    }

    /// A shared buffer into `storage` (`firehose write`). Several writers may share one
    /// buffer, each with its own [`consumer`](PipelineBuilder::with_consumer) name.
    pub fn write(shared: SharedBuffer, storage: Arc<dyn Storage>) -> PipelineBuilder {
        PipelineBuilder::new(Shape::Write { shared, storage })
    }

    /// The pipeline's health, current while it runs.
    pub fn health(&self) -> HealthHandle {
        self.health.clone()
    }

    /// Runs until `shutdown` completes, then stops in the order that loses nothing: stop
    /// reading Jetstream, write what the buffer and the open files hold (the in-memory
    /// buffer) or what is open (a shared buffer), acknowledge, raise the checkpoint. A writer
    /// that fails stops the ingest too, and the error is returned: a supervisor restarts the
    /// process, which resumes from the checkpoint.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<PipelineReport> {
        let Pipeline {
            ingest,
            writer,
            health,
        } = self;
        let poll = health.clone();
        let polling = tokio::spawn(async move { poll.poll().await });
        let stop = CancellationToken::new();
        let running = run_parts(ingest, writer, stop.clone());
        let result = until_cancelled(shutdown, stop, running).await;
        polling.abort();
        let report = result?;
        info!(
            received = report.ingested.appended,
            written = report.written.events,
            batches = report.written.batches,
            dead_letters = report.written.dead_letters,
            "Stopped cleanly."
        );
        Ok(report)
    }
}

/// Runs `body` and cancels `stop` when `shutdown` completes; `body` then finishes its work.
pub(crate) async fn until_cancelled<T>(
    shutdown: impl Future<Output = ()>,
    stop: CancellationToken,
    body: impl Future<Output = T>,
) -> T {
    tokio::pin!(shutdown);
    tokio::pin!(body);
    let mut signalled = false;
    loop {
        tokio::select! {
            out = &mut body => return out,
            () = &mut shutdown, if !signalled => {
                signalled = true;
                stop.cancel();
            }
        }
    }
}

/// The parts, in the shutdown order: the writer stops after the ingest, so it writes what the
/// ingest appended last; a writer that stops first has failed, and the ingest stops with it
/// instead of reading Jetstream into a buffer nobody empties.
async fn run_parts(
    ingest: Option<IngestLoop>,
    writer: Option<WriteLoop>,
    stop: CancellationToken,
) -> Result<PipelineReport> {
    match (ingest, writer) {
        (Some(ingest), Some(writer)) => {
            let stop_writer = CancellationToken::new();
            let mut writer_task = tokio::spawn(writer.run_until(stop_writer.clone()));
            let ingesting = ingest.run_until(stop.clone());
            tokio::pin!(ingesting);
            let (ingested, written) = tokio::select! {
                ingested = &mut ingesting => {
                    stop_writer.cancel();
                    (ingested, writer_task.await)
                }
                written = &mut writer_task => {
                    warn!("The writer stopped: stopping the ingest.");
                    stop.cancel();
                    (ingesting.await, written)
                }
            };
            let written = written.map_err(|e| Error::State {
                op: "run the writer",
                message: e.to_string(),
            })??;
            Ok(PipelineReport {
                ingested: ingested?,
                written,
            })
        }
        (Some(ingest), None) => Ok(PipelineReport {
            ingested: ingest.run_until(stop).await?,
            written: WriterReport::default(),
        }),
        (None, Some(writer)) => Ok(PipelineReport {
            ingested: IngestReport::default(),
            written: writer.run_until(stop).await?,
        }),
        (None, None) => Ok(PipelineReport::default()),
    }
}

impl PipelineBuilder {
    fn new(shape: Shape) -> PipelineBuilder {
        PipelineBuilder {
            shape,
            start_cursor: None,
            max_event_silence: DEFAULT_MAX_EVENT_SILENCE,
            policy: RollPolicy::default(),
            parquet: ParquetOptions::default(),
            encode_threads: None,
            consumer: "writer".into(),
            claim_idle: None,
            ingest: IngestConfig::default(),
            replay_window: crate::replay::DEFAULT_WINDOW,
            start_live: false,
        }
    }

    /// How far behind the newest event the keys of passed-on events are kept, to drop
    /// Jetstream's replays before the buffer (default 10 minutes; zero turns it off). See
    /// [`crate::replay`].
    pub fn with_replay_window(mut self, window: Duration) -> Self {
        self.replay_window = window;
        self
    }

    /// Where to start reading Jetstream (Unix microseconds) when there is no checkpoint yet;
    /// by default, live.
    pub fn with_start_cursor(mut self, time_us: Option<i64>) -> Self {
        self.start_cursor = time_us;
        self
    }

    /// The in-memory buffer's bound, in bytes of event JSON (default 256 MiB); when it is
    /// full, the source stops reading the socket. Only [`Pipeline::archive`] has one.
    pub fn with_memory_buffer_bytes(mut self, bytes: u64) -> Self {
        if let Shape::Archive { buffer_bytes, .. } = &mut self.shape {
            *buffer_bytes = bytes;
        }
        self
    }

    /// How long no event may arrive before [`Health`](crate::Health) says so (default 2 min);
    /// zero turns the check off, for filters that match rarely.
    pub fn with_max_event_silence(mut self, silence: Duration) -> Self {
        self.max_event_silence = silence;
        self
    }

    /// When open Parquet files close.
    pub fn with_roll_policy(mut self, policy: RollPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// How Parquet files are encoded.
    pub fn with_parquet(mut self, parquet: ParquetOptions) -> Self {
        self.parquet = parquet;
        self
    }

    /// How many threads encode the partitions of a closed batch at once (default
    /// [`WriterConfig::default`]'s: the cores, at most 4).
    pub fn with_encode_threads(mut self, threads: usize) -> Self {
        self.encode_threads = Some(threads.max(1));
        self
    }

    /// This writer's name in the shared buffer's consumer group (default `writer`). Keep it
    /// stable across restarts, so a restarted writer gets its own entries back at once.
    pub fn with_consumer(mut self, consumer: impl Into<String>) -> Self {
        self.consumer = consumer.into();
        self
    }

    /// How long another writer's unacknowledged entries must sit idle before this writer takes
    /// them over ([`Pipeline::write`] only; default: the roll policy's `max_age` plus
    /// [`CLAIM_MARGIN`]). Must exceed the longest a batch stays open. A writer that was stopped
    /// longer (SIGSTOP, a stalled disk) stores nothing of a batch whose entries were taken
    /// over: the claimer writes them.
    pub fn with_claim_idle(mut self, idle: Duration) -> Self {
        self.claim_idle = Some(idle);
        self
    }

    /// The dataset the writers write ([`Pipeline::ingest`] only). With it, ingest resumes from
    /// the newer of the buffer's checkpoint and the dataset's (which the writers keep too), so
    /// a buffer that lost its data does not make it start live; it refuses to start live over
    /// a dataset that holds data but no checkpoint unless [`with_start_live`](Self::with_start_live)
    /// says so; and it drops the replays of what the dataset already holds.
    pub fn with_dataset(mut self, storage: Arc<dyn Storage>) -> Self {
        if let Shape::Ingest { dataset, .. } = &mut self.shape {
            *dataset = Some(storage);
        }
        self
    }

    /// Start live even when no checkpoint is found but the dataset holds data (accepting a
    /// gap from the last stored event to now).
    pub fn with_start_live(mut self, start_live: bool) -> Self {
        self.start_live = start_live;
        self
    }

    /// How the ingest side batches buffer entries.
    pub fn with_ingest(mut self, ingest: IngestConfig) -> Self {
        self.ingest = ingest;
        self
    }

    /// Reads the checkpoint and connects nothing yet: the source connects when the pipeline
    /// runs. Fails when the checkpoint cannot be read or the source's settings are invalid.
    pub async fn build(self) -> Result<Pipeline> {
        let writer_config = |consumer: String, archive: bool| WriterConfig {
            consumer,
            // The in-memory buffer has one writer; a shared one may have several.
            claim_idle: (!archive).then(|| {
                self.claim_idle
                    .unwrap_or(self.policy.max_age + CLAIM_MARGIN)
            }),
            drain_on_shutdown: archive,
            ack_on_read: archive,
            policy: self.policy.clone(),
            parquet: self.parquet.clone(),
            encode_threads: self
                .encode_threads
                .unwrap_or(WriterConfig::default().encode_threads),
            ..WriterConfig::default()
        };
        let limits = |jetstream: &firehose_jetstream::Config| SourceLimits {
            disconnected: jetstream.liveness_timeout,
            silence: self.max_event_silence,
        };
        match self.shape {
            Shape::Archive {
                ref jetstream,
                ref storage,
                ref state,
                buffer_bytes,
            } => {
                let buffer: Arc<dyn Buffer> = Arc::new(
                    InMemory::builder()
                        .with_capacity(Capacity::bytes(buffer_bytes))
                        .build(),
                );
                let checkpoint = state.checkpoint().await?;
                let source = open_source(jetstream, checkpoint, self.start_cursor)?;
                // The in-memory buffer starts empty: the dataset holds all that was passed on.
                let replay = self
                    .replay_filter(jetstream, Some(storage.as_ref()), None, checkpoint)
                    .await?;
                let writer = WriteLoop::new(
                    buffer.clone(),
                    storage.clone(),
                    state.clone(),
                    writer_config("run".into(), true),
                );
                let mut ingest = IngestLoop::new(source, buffer.clone(), self.ingest.clone());
                if let Some(filter) = replay {
                    ingest = ingest.with_replay_filter(filter);
                }
                let watch = ingest.watch(limits(jetstream));
                Ok(Pipeline {
                    health: HealthHandle::new(buffer, Some(watch), Some(writer.status())),
                    ingest: Some(ingest),
                    writer: Some(writer),
                })
            }
            Shape::Ingest {
                ref jetstream,
                ref shared,
                ref dataset,
            } => {
                let (source, filter) = match dataset {
                    Some(storage) => {
                        let state = MirroredState::new(
                            shared.state.clone(),
                            DatasetState::new(storage.clone()),
                        );
                        let checkpoint = self.check_resume(&state, storage.as_ref()).await?;
                        let source = open_source(jetstream, checkpoint, self.start_cursor)?;
                        let filter = self
                            .replay_filter(
                                jetstream,
                                Some(storage.as_ref()),
                                Some(shared.buffer.as_ref()),
                                checkpoint,
                            )
                            .await?;
                        (source, filter)
                    }
                    None => {
                        let checkpoint = shared.state.checkpoint().await?;
                        (
                            open_source(jetstream, checkpoint, self.start_cursor)?,
                            self.replay_filter(
                                jetstream,
                                None,
                                Some(shared.buffer.as_ref()),
                                checkpoint,
                            )
                            .await?,
                        )
                    }
                };
                let mut ingest =
                    IngestLoop::new(source, shared.buffer.clone(), self.ingest.clone());
                if let Some(filter) = filter {
                    ingest = ingest.with_replay_filter(filter);
                }
                let watch = ingest.watch(limits(jetstream));
                Ok(Pipeline {
                    health: HealthHandle::new(shared.buffer.clone(), Some(watch), None),
                    ingest: Some(ingest),
                    writer: None,
                })
            }
            Shape::Write {
                ref shared,
                ref storage,
            } => {
                // The checkpoint is kept beside the dataset too, for an ingest that finds the
                // buffer's table empty.
                let state = Arc::new(MirroredState::new(
                    shared.state.clone(),
                    DatasetState::new(storage.clone()),
                ));
                let writer = WriteLoop::new(
                    shared.buffer.clone(),
                    storage.clone(),
                    state,
                    writer_config(self.consumer.clone(), false),
                );
                Ok(Pipeline {
                    health: HealthHandle::new(shared.buffer.clone(), None, Some(writer.status())),
                    ingest: None,
                    writer: Some(writer),
                })
            }
        }
    }
}

impl PipelineBuilder {
    /// Says which checkpoint ingest resumes from, and refuses to start live over a dataset that
    /// holds data when neither the buffer nor the dataset has a checkpoint (a gap nobody would
    /// see), unless a start cursor is given or starting live is allowed. Returns the
    /// checkpoint to resume from: the newer of the two.
    async fn check_resume(
        &self,
        state: &MirroredState,
        dataset: &dyn Storage,
    ) -> Result<Option<i64>> {
        let (table, in_dataset) = state.checkpoints().await?;
        match (table, in_dataset) {
            (Some(table), dataset) if dataset.is_none_or(|d| d <= table) => {
                info!(cursor = table, "Resuming from the buffer's checkpoint.");
            }
            (table, Some(dataset)) => warn!(
                cursor = dataset,
                buffer = ?table,
                "The dataset's checkpoint is newer than the buffer's (did the buffer lose its data?): resuming from the dataset's."
            ),
            // Neither has a checkpoint.
            _ if self.start_cursor.is_some() || self.start_live => {}
            _ => {
                let stored = dataset.list("").await.map_err(|source| Error::Sink {
                    op: "look for data in the dataset",
                    source,
                })?;
                if let Some(file) = stored.iter().find(|f| f.path.ends_with(".parquet")) {
                    return Err(Error::State {
                        op: "resume",
                        message: format!(
                            "no checkpoint in the buffer or the dataset, but the dataset holds data ({}): starting live would leave a gap; give a start cursor (--start-cursor, Unix microseconds) or allow it (--start-live)",
                            file.path
                        ),
                    });
                }
            }
        }
        Ok(table.max(in_dataset))
    }

    /// The replay filter, unless the window is zero. Seeded, when the dataset is at hand, with
    /// the keys stored from the resume point (the checkpoint, else the start cursor, else now;
    /// less the rewind) on, and with the keys of what `buffer` still holds (a shared buffer
    /// outlives ingest: what it holds is not stored yet, and Jetstream sends it again). With
    /// both, the filter knows every event passed on since the resume point, and says so
    /// ([`ReplayFilter::set_complete`]): ingest then marks its batches replay-free.
    async fn replay_filter(
        &self,
        jetstream: &firehose_jetstream::Config,
        dataset: Option<&dyn Storage>,
        buffer: Option<&dyn Buffer>,
        checkpoint: Option<i64>,
    ) -> Result<Option<ReplayFilter>> {
        if self.replay_window.is_zero() {
            return Ok(None);
        }
        let mut filter = ReplayFilter::new(self.replay_window, crate::replay::DEFAULT_MAX_KEYS);
        let rewind = i64::try_from(jetstream.rewind.as_micros()).unwrap_or(i64::MAX);
        let now = crate::unix_us();
        let since = checkpoint
            .or(self.start_cursor)
            .unwrap_or(now)
            .saturating_sub(rewind);
        // The buffer first, then the dataset: a writer removes a batch from the buffer only
        // after storing it, so a batch that leaves the buffer between the two reads is in the
        // dataset when it is read. The other order could miss it in both.
        let mut buffered = Vec::new();
        if let Some(buffer) = buffer {
            let mut after = None;
            loop {
                let entries = buffer
                    .peek(after, 256)
                    .await
                    .map_err(|source| Error::Buffer { op: "peek", source })?;
                let Some(last) = entries.last() else { break };
                after = Some(last.id);
                buffered.extend(
                    entries
                        .iter()
                        .flat_map(|e| e.batch.events())
                        .filter_map(|line| firehose_core::key::peek(line)),
                );
            }
        }
        let mut keys = match dataset {
            Some(storage) => firehose_sink::stored_keys(storage, since, now)
                .await
                .map_err(|source| Error::Sink {
                    op: "read the stored keys",
                    source,
                })?,
            None => Vec::new(),
        };
        let stored = keys.len();
        if !buffered.is_empty() {
            keys.append(&mut buffered);
            keys.sort_by_key(|k| k.time_us);
        }
        info!(
            stored,
            buffered = keys.len() - stored,
            since_us = since,
            "Read the keys stored since the resume point and those still buffered, to drop their replays."
        );
        filter.seed(keys);
        if dataset.is_none() {
            // What was stored past the resume point is unknown: its replays pass.
            return Ok(Some(filter));
        }
        filter.set_complete(jetstream.rewind);
        if !filter.is_complete() {
            warn!(
                "The replay filter cannot hold every key since the resume point: some replays may be stored twice, and files are not marked duplicate-free."
            );
        }
        Ok(Some(filter))
    }
}

/// A writer's consumer name that stays the same across restarts of the same machine or
/// container: its host name (`/etc/hostname`), else `writer`.
pub fn host_consumer_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "writer".into())
}

/// The source, resuming from `checkpoint` when there is one, else from `start_cursor`.
fn open_source(
    jetstream: &firehose_jetstream::Config,
    checkpoint: Option<i64>,
    start_cursor: Option<i64>,
) -> Result<Source> {
    let cursor = checkpoint.or(start_cursor);
    match (checkpoint, cursor) {
        (Some(c), _) => info!(cursor = c, "Resuming from the checkpoint."),
        (None, Some(c)) => info!(cursor = c, "No checkpoint: starting at the given cursor."),
        (None, None) => info!("No checkpoint: starting live."),
    }
    Ok(Source::new(jetstream.clone(), cursor)?)
}
