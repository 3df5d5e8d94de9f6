//! `firehose run`, `firehose ingest` and `firehose write`: the running pipeline, in one process
//! (Jetstream → in-memory buffer → Parquet) or split across processes around Redis.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use firehose_buffer::redis::{RedisBuffer, RedisBufferBuilder};
use firehose_pipeline::{
    JetstreamConfig, ParquetOptions, Pipeline, PipelineBuilder, PipelineReport, RollPolicy,
    SharedBuffer,
};
use firehose_sink::Compression;
use firehose_telemetry::{Health, HealthCheck, LogFormat, Telemetry};
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
        let builder = Pipeline::archive(jetstream_config(&args.source)?, storage)
            .with_memory_buffer_bytes(args.buffer_size);
        let pipeline = build(with_source(
            with_writer(builder, &args.writer),
            &args.source,
        ))
        .await?;
        let serving = serve_metrics(&args.service, telemetry, &pipeline).await?;
        info!(out = %args.writer.out, metrics = %serving, "Archiving Jetstream.");
        finish(pipeline.run(shutdown).await)
    })
}

pub(crate) fn ingest(args: IngestArgs) -> Result<(), Failure> {
    start(args.service.log_json, |shutdown, telemetry| async move {
        let shared = SharedBuffer::with_side_table(open_redis(&args.redis).await?);
        let builder = Pipeline::ingest(jetstream_config(&args.source)?, shared);
        let pipeline = build(with_source(builder, &args.source)).await?;
        let serving = serve_metrics(&args.service, telemetry, &pipeline).await?;
        info!(metrics = %serving, "Reading Jetstream into Redis.");
        finish(pipeline.run(shutdown).await)
    })
}

pub(crate) fn write(args: WriteArgs) -> Result<(), Failure> {
    start(args.service.log_json, |shutdown, telemetry| async move {
        let shared = SharedBuffer::with_side_table(open_redis(&args.redis).await?);
        let storage = open_storage_async(&args.writer.out).await?;
        watch_local_disk(&telemetry, &args.writer.out);
        let consumer = args.consumer.clone().unwrap_or_else(host_name);
        let builder = Pipeline::write(shared, storage).with_consumer(consumer.clone());
        let pipeline = build(with_writer(builder, &args.writer)).await?;
        let serving = serve_metrics(&args.service, telemetry, &pipeline).await?;
        info!(out = %args.writer.out, %consumer, metrics = %serving, "Writing Redis to Parquet.");
        finish(pipeline.run(shutdown).await)
    })
}

async fn build(builder: PipelineBuilder) -> Result<Pipeline, Failure> {
    builder.build().await.map_err(|e| match e {
        firehose_pipeline::Error::Source(e) => Failure::Usage(e.to_string()),
        e => Failure::Data(format!("cannot start the pipeline: {e}")),
    })
}

fn finish(report: firehose_pipeline::Result<PipelineReport>) -> Result<(), Failure> {
    report.map(drop).map_err(|e| Failure::Data(e.to_string()))
}

/// Sets up logging and metrics, a multi-threaded runtime and the signal handling, then runs
/// `body` with the shutdown signal. The first SIGINT or SIGTERM completes it (stop reading,
/// flush, acknowledge, checkpoint, exit 0); a second exits at once, which is safe: nothing
/// acknowledged is uncommitted.
fn start<F, Fut>(log_json: bool, body: F) -> Result<(), Failure>
where
    F: FnOnce(Shutdown, Telemetry) -> Fut,
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
        let (signalled, shutdown) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            wait_for_signal().await;
            info!("Stopping: writing what is open (a second signal exits at once).");
            let _ = signalled.send(());
            wait_for_signal().await;
            warn!("Second signal: exiting now.");
            std::process::exit(1);
        });
        body(
            Box::pin(async move {
                let _ = shutdown.await;
            }),
            telemetry,
        )
        .await
    })
}

/// Completes on the first SIGINT or SIGTERM.
type Shutdown = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

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

fn with_writer(builder: PipelineBuilder, args: &WriterArgs) -> PipelineBuilder {
    builder
        .with_roll_policy(RollPolicy {
            target_file_bytes: args.target_file_size,
            max_age: args.max_file_age,
            grace: args.hour_grace,
            max_open_bytes: args.max_open_bytes,
        })
        .with_parquet(ParquetOptions {
            compression: args.compression,
            ..ParquetOptions::default()
        })
}

fn with_source(builder: PipelineBuilder, args: &SourceArgs) -> PipelineBuilder {
    builder
        .with_start_cursor(args.start_cursor)
        .with_max_event_silence(args.max_event_silence)
}

fn jetstream_config(args: &SourceArgs) -> Result<JetstreamConfig, Failure> {
    let mut config = JetstreamConfig::default();
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
    Ok(config)
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

/// Serves `/metrics` and the pipeline's `/health` until the process ends.
async fn serve_metrics(
    service: &ServiceArgs,
    telemetry: Telemetry,
    pipeline: &Pipeline,
) -> Result<SocketAddr, Failure> {
    let handle = pipeline.health();
    let health: HealthCheck = Arc::new(move || {
        let health = handle.check();
        let mut details = match health.to_json() {
            serde_json::Value::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        details.remove("status");
        details.remove("reasons");
        Health {
            healthy: health.healthy,
            reasons: health.reasons,
            details,
        }
    });
    let (addr, serve) = firehose_telemetry::bind(
        service.metrics_addr,
        firehose_telemetry::router(telemetry, health),
        std::future::pending::<()>(),
    )
    .await
    .map_err(|e| Failure::Usage(e.to_string()))?;
    tokio::spawn(serve);
    Ok(addr)
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
