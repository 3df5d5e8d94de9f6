//! `firehose run`, `firehose ingest` and `firehose write`: the running pipeline, in one process
//! (Jetstream → in-memory buffer → Parquet) or split across processes around Redis.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use firehose_buffer::memory::InMemory;
use firehose_buffer::redis::{RedisBuffer, RedisBufferBuilder};
use firehose_buffer::{Buffer, Capacity, Stats};
use firehose_jetstream::{Source, SourceStatus};
use firehose_pipeline::ingest::{IngestConfig, IngestLoop, IngestStatus};
use firehose_pipeline::state::RedisState;
use firehose_pipeline::{DatasetState, StateStore, WriteLoop, WriterConfig, WriterStatus};
use firehose_sink::{Compression, ParquetOptions, RollPolicy};
use firehose_telemetry::{Health, HealthCheck, LogFormat, Telemetry};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{Failure, open_storage_async, parse_age, parse_size};

/// Where events come from.
#[derive(Debug, clap::Args)]
pub(crate) struct SourceArgs {
    /// Jetstream WebSocket URL with its path, e.g. `wss://jetstream2.us-east.bsky.network/subscribe`
    /// (repeat, or separate with commas, for fail-over). Default: the four public v1 hosts.
    #[arg(
        long = "jetstream-url",
        env = "FIREHOSE_JETSTREAM_URL",
        value_delimiter = ','
    )]
    jetstream_url: Vec<String>,
    /// Only these collections (NSIDs, or prefixes like `app.bsky.graph.*`); default all.
    /// Identity and account events always come.
    #[arg(
        long = "collection",
        env = "FIREHOSE_COLLECTIONS",
        value_delimiter = ','
    )]
    collections: Vec<String>,
    /// Only these repositories (DIDs); default all.
    #[arg(long = "did", env = "FIREHOSE_DIDS", value_delimiter = ',')]
    dids: Vec<String>,
    /// Ask for zstd-compressed frames, decoded with Jetstream's dictionary at this path
    /// (about a third of the bandwidth).
    #[arg(long, env = "FIREHOSE_ZSTD_DICTIONARY")]
    zstd_dictionary: Option<PathBuf>,
    /// On every (re)connect, resume this far before the newest event received (or the
    /// checkpoint), so nothing is missed; the duplicates this causes are removed downstream.
    #[arg(long, env = "FIREHOSE_REWIND", default_value = "5s", value_parser = parse_age)]
    rewind: Duration,
    /// Reconnect when no message arrives for this long.
    #[arg(long, env = "FIREHOSE_LIVENESS_TIMEOUT", default_value = "30s", value_parser = parse_age)]
    liveness_timeout: Duration,
    /// `/health` answers 503 when no event has arrived for this long (or none since the start).
    /// The whole firehose carries hundreds a second; raise it for filters that match rarely,
    /// or set 0 to turn the check off. (No connection for longer than --liveness-timeout is
    /// always unhealthy.)
    #[arg(long, env = "FIREHOSE_MAX_EVENT_SILENCE", default_value = "2m", value_parser = parse_age)]
    max_event_silence: Duration,
    /// Where to start (Unix microseconds) when there is no checkpoint yet; default: live.
    #[arg(long, env = "FIREHOSE_START_CURSOR")]
    start_cursor: Option<i64>,
}

/// How files are written.
#[derive(Debug, clap::Args)]
pub(crate) struct WriterArgs {
    /// The dataset root: a local directory, or `s3://bucket/prefix` (endpoint, region and
    /// credentials from the standard AWS variables: AWS_ENDPOINT_URL, AWS_REGION,
    /// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY).
    #[arg(long, short = 'o', env = "FIREHOSE_OUT", default_value = "./data")]
    out: String,
    /// Parquet compression: zstd, snappy, gzip, lz4 or none.
    #[arg(long, env = "FIREHOSE_COMPRESSION", default_value_t = Compression::Zstd)]
    compression: Compression,
    /// Close a partition's file at about this much Parquet.
    #[arg(long, env = "FIREHOSE_TARGET_FILE_SIZE", default_value = "100MB", value_parser = parse_size)]
    target_file_size: u64,
    /// Close files when their oldest event has waited this long.
    #[arg(long, env = "FIREHOSE_MAX_FILE_AGE", default_value = "5m", value_parser = parse_age)]
    max_file_age: Duration,
    /// Keep an hour's file open this long after the hour ends, for late events.
    #[arg(long, env = "FIREHOSE_HOUR_GRACE", default_value = "3m", value_parser = parse_age)]
    hour_grace: Duration,
    /// Close files when they hold this much event JSON (bounds the writer's memory).
    #[arg(long, env = "FIREHOSE_MAX_OPEN_BYTES", default_value = "32MiB", value_parser = parse_size)]
    max_open_bytes: u64,
}

/// Process settings shared by every long-running command.
#[derive(Debug, clap::Args)]
pub(crate) struct ServiceArgs {
    /// Serve `/metrics` (Prometheus) and `/health` here.
    #[arg(long, env = "FIREHOSE_METRICS_ADDR", default_value = "127.0.0.1:9464")]
    metrics_addr: SocketAddr,
    /// Log JSON lines instead of text.
    #[arg(long, env = "FIREHOSE_LOG_JSON")]
    log_json: bool,
    /// A TOML file of settings, named like the flags (`out = "./data"`,
    /// `jetstream-url = ["ws://…"]`). Flags override the environment, which overrides the file.
    #[arg(long, env = "FIREHOSE_CONFIG")]
    config: Option<PathBuf>,
}

/// The Redis buffer.
#[derive(clap::Args)]
pub(crate) struct RedisArgs {
    /// Redis URL, `redis://host:6379` or `rediss://` for TLS. The password comes from
    /// FIREHOSE_REDIS_PASSWORD (and the user from FIREHOSE_REDIS_USERNAME), never from the URL
    /// in logs.
    #[arg(long, env = "FIREHOSE_REDIS_URL", hide_env_values = true)]
    redis_url: String,
    /// The stream key.
    #[arg(long, env = "FIREHOSE_REDIS_STREAM", default_value = "firehose:events")]
    redis_stream: String,
    /// For `rediss://`: trust the CA certificates in this PEM file (a private CA or a
    /// self-signed server certificate) instead of the bundled web PKI roots.
    #[arg(long, env = "FIREHOSE_REDIS_TLS_CA_CERT", value_name = "PEM")]
    redis_tls_ca_cert: Option<PathBuf>,
}

impl std::fmt::Debug for RedisArgs {
    /// Without the URL's user and password, should someone put them there.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let url = match self.redis_url.split_once("://") {
            Some((scheme, rest)) => match rest.rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://***@{host}"),
                None => self.redis_url.clone(),
            },
            None => "***".into(),
        };
        f.debug_struct("RedisArgs")
            .field("redis_url", &url)
            .field("redis_stream", &self.redis_stream)
            .field("redis_tls_ca_cert", &self.redis_tls_ca_cert)
            .finish()
    }
}

/// Archive Jetstream to Parquet in one process: Jetstream → in-memory buffer → writer → local
/// directory or S3. With no argument, archives the public firehose to `./data`. A crash loses
/// nothing: the cursor checkpoint beside the dataset only passes events that are in Parquet,
/// and Jetstream replays from it.
#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    source: SourceArgs,
    #[command(flatten)]
    writer: WriterArgs,
    #[command(flatten)]
    service: ServiceArgs,
    /// Most event bytes waiting in memory between the source and the writer; when full, the
    /// source stops reading the socket.
    #[arg(long, env = "FIREHOSE_BUFFER_SIZE", default_value = "256MiB", value_parser = parse_size)]
    buffer_size: u64,
}

/// Read Jetstream into a Redis stream (the first half of the server deployment). Resumes from
/// the checkpoint the writers keep beside the stream.
#[derive(Debug, clap::Args)]
pub(crate) struct IngestArgs {
    #[command(flatten)]
    source: SourceArgs,
    #[command(flatten)]
    redis: RedisArgs,
    #[command(flatten)]
    service: ServiceArgs,
}

/// Write a Redis stream to Parquet (the second half of the server deployment). Several writers
/// can share the stream's consumer group; give each its own `--consumer`.
#[derive(Debug, clap::Args)]
pub(crate) struct WriteArgs {
    #[command(flatten)]
    redis: RedisArgs,
    #[command(flatten)]
    writer: WriterArgs,
    #[command(flatten)]
    service: ServiceArgs,
    /// This writer's name in the consumer group; keep it stable across restarts (default: the
    /// host name).
    #[arg(long, env = "FIREHOSE_CONSUMER")]
    consumer: Option<String>,
}

pub(crate) fn run(args: RunArgs) -> Result<(), Failure> {
    start(args.service.log_json, |shutdown, telemetry| async move {
        let storage = open_storage_async(&args.writer.out).await?;
        watch_local_disk(&telemetry, &args.writer.out);
        let state: Arc<dyn StateStore> = Arc::new(DatasetState::new(storage.clone()));
        let checkpoint = read_checkpoint(&*state).await?;
        let source = open_source(&args.source, checkpoint)?;
        let buffer: Arc<dyn Buffer> = Arc::new(
            InMemory::builder()
                .with_capacity(Capacity::bytes(args.buffer_size))
                .build(),
        );
        let writer = WriteLoop::new(
            buffer.clone(),
            storage,
            state,
            WriterConfig {
                consumer: "run".into(),
                claim_idle: None,
                drain_on_shutdown: true,
                ack_on_read: true,
                ..writer_config(&args.writer)
            },
        );
        let watch = SourceWatch::new(&source, &args.source);
        let ingest = IngestLoop::new(source, buffer.clone(), IngestConfig::default());
        let health = health_check(
            buffer.clone(),
            Some((ingest.status(), watch)),
            Some(writer.status()),
            &shutdown,
        );
        let serving = serve_metrics(&args.service, telemetry, health, &shutdown).await?;
        info!(out = %args.writer.out, metrics = %serving, "Archiving Jetstream.");

        // The writer stops after the ingest, so it writes what the ingest appended last. A
        // writer that stops first has failed: the ingest stops too and the process exits with
        // the writer's error (a supervisor restarts it, and it resumes from the checkpoint),
        // instead of reading Jetstream into a buffer that nobody empties.
        let stop_writer = CancellationToken::new();
        let mut writer_task = tokio::spawn(writer.run(stop_writer.clone()));
        let ingesting = ingest.run(shutdown.clone());
        tokio::pin!(ingesting);
        let (ingested, written) = tokio::select! {
            ingested = &mut ingesting => {
                if ingested.is_err() {
                    shutdown.cancel();
                }
                stop_writer.cancel();
                (ingested, writer_task.await)
            }
            written = &mut writer_task => {
                warn!("The writer stopped: stopping the ingest.");
                shutdown.cancel();
                (ingesting.await, written)
            }
        };
        let written = written
            .map_err(|e| Failure::Data(format!("the writer task failed: {e}")))?
            .map_err(|e| Failure::Data(e.to_string()))?;
        let ingested = ingested.map_err(|e| Failure::Data(e.to_string()))?;
        info!(
            received = ingested.appended,
            written = written.events,
            batches = written.batches,
            dead_letters = written.dead_letters,
            "Stopped cleanly."
        );
        Ok(())
    })
}

pub(crate) fn ingest(args: IngestArgs) -> Result<(), Failure> {
    start(args.service.log_json, |shutdown, telemetry| async move {
        let buffer = open_redis(&args.redis).await?;
        let state = RedisState::new(buffer.clone());
        let checkpoint = read_checkpoint(&state).await?;
        let source = open_source(&args.source, checkpoint)?;
        let watch = SourceWatch::new(&source, &args.source);
        let ingest = IngestLoop::new(source, buffer.clone(), IngestConfig::default());
        let health = health_check(buffer, Some((ingest.status(), watch)), None, &shutdown);
        let serving = serve_metrics(&args.service, telemetry, health, &shutdown).await?;
        info!(metrics = %serving, "Reading Jetstream into Redis.");
        let report = ingest
            .run(shutdown.clone())
            .await
            .map_err(|e| Failure::Data(e.to_string()))?;
        info!(appended = report.appended, "Stopped cleanly.");
        Ok(())
    })
}

pub(crate) fn write(args: WriteArgs) -> Result<(), Failure> {
    start(args.service.log_json, |shutdown, telemetry| async move {
        let buffer = open_redis(&args.redis).await?;
        let storage = open_storage_async(&args.writer.out).await?;
        watch_local_disk(&telemetry, &args.writer.out);
        let state = Arc::new(RedisState::new(buffer.clone()));
        let consumer = args.consumer.clone().unwrap_or_else(host_name);
        let writer = WriteLoop::new(
            buffer.clone(),
            storage,
            state,
            WriterConfig {
                consumer: consumer.clone(),
                ..writer_config(&args.writer)
            },
        );
        let health = health_check(buffer, None, Some(writer.status()), &shutdown);
        let serving = serve_metrics(&args.service, telemetry, health, &shutdown).await?;
        info!(out = %args.writer.out, %consumer, metrics = %serving, "Writing Redis to Parquet.");
        let report = writer
            .run(shutdown.clone())
            .await
            .map_err(|e| Failure::Data(e.to_string()))?;
        info!(
            written = report.events,
            batches = report.batches,
            "Stopped cleanly."
        );
        Ok(())
    })
}

/// Sets up logging and metrics, a multi-threaded runtime and the signal handling, then runs
/// `body`. The first SIGINT or SIGTERM cancels the token (stop reading, flush, acknowledge,
/// checkpoint, exit 0); a second exits at once, which is safe: nothing acknowledged is
/// uncommitted.
fn start<F, Fut>(log_json: bool, body: F) -> Result<(), Failure>
where
    F: FnOnce(CancellationToken, Telemetry) -> Fut,
    Fut: Future<Output = Result<(), Failure>>,
{
    firehose_telemetry::init_logging(if log_json {
        LogFormat::Json
    } else {
        LogFormat::Text
    });
    let telemetry = Telemetry::install().map_err(|e| Failure::Usage(e.to_string()))?;
    firehose_pipeline::describe_metrics();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Usage(format!("cannot start the runtime: {e}")))?;
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let signals = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            info!("Stopping: writing what is open (a second signal exits at once).");
            signals.cancel();
            wait_for_signal().await;
            warn!("Second signal: exiting now.");
            std::process::exit(1);
        });
        body(shutdown, telemetry).await
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn writer_config(args: &WriterArgs) -> WriterConfig {
    let policy = RollPolicy {
        target_file_bytes: args.target_file_size,
        max_age: args.max_file_age,
        grace: args.hour_grace,
        max_open_bytes: args.max_open_bytes,
    };
    WriterConfig {
        claim_idle: Some(policy.max_age + Duration::from_secs(300)),
        policy,
        parquet: ParquetOptions {
            compression: args.compression,
            ..ParquetOptions::default()
        },
        ..WriterConfig::default()
    }
}

fn open_source(args: &SourceArgs, checkpoint: Option<i64>) -> Result<Source, Failure> {
    let mut config = firehose_jetstream::Config::default();
    if !args.jetstream_url.is_empty() {
        config.urls = args.jetstream_url.clone();
    }
    config.wanted_collections = args.collections.clone();
    config.wanted_dids = args.dids.clone();
    config.rewind = args.rewind;
    config.liveness_timeout = args.liveness_timeout;
    if let Some(path) = &args.zstd_dictionary {
        config.compress = true;
        config.zstd_dictionary = Some(
            firehose_jetstream::load_dictionary(path).map_err(|e| Failure::Usage(e.to_string()))?,
        );
    }
    let cursor = checkpoint.or(args.start_cursor);
    match cursor {
        Some(c) => info!(cursor = c, "Resuming from the checkpoint."),
        None => info!("No checkpoint: starting live."),
    }
    Source::new(config, cursor).map_err(|e| Failure::Usage(e.to_string()))
}

async fn read_checkpoint(state: &dyn StateStore) -> Result<Option<i64>, Failure> {
    state
        .checkpoint()
        .await
        .map_err(|e| Failure::Data(format!("cannot read the checkpoint: {e}")))
}

async fn open_redis(args: &RedisArgs) -> Result<Arc<RedisBuffer>, Failure> {
    let mut builder = RedisBufferBuilder::from_env()
        .with_url(&args.redis_url)
        .with_stream(&args.redis_stream);
    if let Some(ca) = &args.redis_tls_ca_cert {
        builder = builder.with_tls_ca_cert(ca);
    }
    let buffer = builder
        .build()
        .await
        .map_err(|e| Failure::Usage(format!("cannot open the Redis buffer: {e}")))?;
    Ok(Arc::new(buffer))
}

fn watch_local_disk(telemetry: &Telemetry, out: &str) {
    if !out.starts_with("s3://") {
        telemetry.watch_disk(out);
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "writer".into())
}

/// What `/health` watches of the source: its connection, and the two bounds.
struct SourceWatch {
    status: Arc<SourceStatus>,
    liveness_timeout: Duration,
    max_event_silence: Duration,
}

impl SourceWatch {
    fn new(source: &Source, args: &SourceArgs) -> SourceWatch {
        SourceWatch {
            status: source.status(),
            liveness_timeout: args.liveness_timeout,
            max_event_silence: args.max_event_silence,
        }
    }

    /// Why the source is unhealthy, if it is: no connection for longer than the liveness
    /// timeout, or no event for longer than the allowed silence.
    fn reasons(&self) -> Vec<String> {
        let mut reasons = Vec::new();
        if let Some(down) = self.status.disconnected_for()
            && down > self.liveness_timeout
        {
            reasons.push(format!(
                "no connection to Jetstream for {}s (the liveness timeout is {}s)",
                down.as_secs(),
                self.liveness_timeout.as_secs()
            ));
        }
        let silence = self.status.last_event_age();
        if !self.max_event_silence.is_zero() && silence > self.max_event_silence {
            reasons.push(format!(
                "no event from Jetstream for {}s (--max-event-silence is {}s)",
                silence.as_secs(),
                self.max_event_silence.as_secs()
            ));
        }
        reasons
    }
}

/// Polls the buffer for the gauges and for `/health`, until shutdown.
fn health_check(
    buffer: Arc<dyn Buffer>,
    ingest: Option<(Arc<IngestStatus>, SourceWatch)>,
    writer: Option<Arc<WriterStatus>>,
    shutdown: &CancellationToken,
) -> HealthCheck {
    let latest: Arc<Mutex<Option<Result<Stats, String>>>> = Arc::default();
    let polled = latest.clone();
    let stop = shutdown.clone();
    let written = writer.clone();
    tokio::spawn(async move {
        while !stop.is_cancelled() {
            if let Some(writer) = &written {
                let checkpoint = writer.checkpoint_us.load(Ordering::Relaxed);
                if checkpoint > 0 {
                    metrics::gauge!("firehose_checkpoint_age_seconds")
                        .set((unix_us() - checkpoint) as f64 / 1e6);
                }
            }
            let stats = buffer.stats().await.map_err(|e| e.to_string());
            if let Ok(s) = &stats {
                metrics::gauge!("firehose_buffer_events").set(s.events_unacked() as f64);
                metrics::gauge!("firehose_buffer_bytes").set(s.bytes as f64);
                metrics::gauge!("firehose_buffer_capacity_bytes").set(s.capacity_bytes as f64);
                metrics::gauge!("firehose_buffer_utilisation_ratio").set(s.utilisation());
                metrics::gauge!("firehose_buffer_oldest_event_age_seconds")
                    .set(s.oldest_unacked_age().map_or(0.0, |age| age.as_secs_f64()));
            }
            if let Ok(mut slot) = polled.lock() {
                *slot = Some(stats);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    Arc::new(move || {
        let mut health = Health::ok();
        let now_us = unix_us();
        match latest.lock().ok().and_then(|s| s.clone()) {
            Some(Ok(stats)) => {
                health.details.insert(
                    "buffer".into(),
                    serde_json::json!({
                        "events": stats.events_unacked(),
                        "bytes": stats.bytes,
                        "utilisation": stats.utilisation(),
                        "oldest_age_seconds": stats.oldest_unacked_age().map(|a| a.as_secs_f64()),
                    }),
                );
                if stats.utilisation() >= 0.95 {
                    health.healthy = false;
                    health.reasons.push("the buffer is full".into());
                }
            }
            Some(Err(e)) => {
                health.healthy = false;
                health.reasons.push(format!("buffer unavailable: {e}"));
            }
            None => {}
        }
        if let Some((ingest, watch)) = &ingest {
            let last_ms = ingest.last_message_ms.load(Ordering::Relaxed);
            let newest = ingest.newest_time_us.load(Ordering::Relaxed);
            let lag = (newest > 0).then(|| (now_us - newest) as f64 / 1e6);
            health.details.insert(
                "jetstream".into(),
                serde_json::json!({
                    "connected": watch.status.is_connected(),
                    "disconnected_seconds": watch.status.disconnected_for().map(|d| d.as_secs_f64()),
                    "received": ingest.received.load(Ordering::Relaxed),
                    "lag_seconds": lag,
                    "last_message_age_seconds": (last_ms > 0).then(|| (now_us / 1000 - last_ms) as f64 / 1e3),
                    "last_event_age_seconds": watch.status.last_event_age().as_secs_f64(),
                }),
            );
            let reasons = watch.reasons();
            if !reasons.is_empty() {
                health.healthy = false;
                health.reasons.extend(reasons);
            }
        }
        if let Some(writer) = &writer {
            let failing = writer.failing_for.load(Ordering::Relaxed);
            let checkpoint = writer.checkpoint_us.load(Ordering::Relaxed);
            let age = (checkpoint > 0).then(|| (now_us - checkpoint) as f64 / 1e6);
            health.details.insert(
                "writer".into(),
                serde_json::json!({
                    "events_written": writer.events_written.load(Ordering::Relaxed),
                    "batches_written": writer.batches_written.load(Ordering::Relaxed),
                    "failing_attempts": failing,
                }),
            );
            health
                .details
                .insert("checkpoint_age_seconds".into(), age.into());
            if failing >= 3 {
                health.healthy = false;
                health
                    .reasons
                    .push(format!("storing batches failed {failing} times in a row"));
            }
        }
        health
    })
}

async fn serve_metrics(
    service: &ServiceArgs,
    telemetry: Telemetry,
    health: HealthCheck,
    shutdown: &CancellationToken,
) -> Result<SocketAddr, Failure> {
    let stop = shutdown.clone();
    let (addr, serve) = firehose_telemetry::bind(
        service.metrics_addr,
        firehose_telemetry::router(telemetry, health),
        async move { stop.cancelled().await },
    )
    .await
    .map_err(|e| Failure::Usage(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(e) = serve.await {
            warn!(error = %e, "The metrics server stopped.");
        }
    });
    Ok(addr)
}

fn unix_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_urls_lose_their_credentials_in_debug_output() {
        let args = RedisArgs {
            redis_url: "rediss://writer:s3cret-pw@redis.internal:6380/0".into(),
            redis_stream: "firehose:events".into(),
            redis_tls_ca_cert: None,
        };
        let shown = format!("{args:?}");
        assert!(
            !shown.contains("s3cret-pw") && !shown.contains("writer"),
            "{shown}"
        );
        assert!(
            shown.contains("rediss://***@redis.internal:6380/0"),
            "{shown}"
        );
    }
}
