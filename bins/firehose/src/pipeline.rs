//! `firehose run`, `firehose ingest` and `firehose write`: the running pipeline, in one process
//! (Jetstream → in-memory buffer → Parquet) or split across processes around Redis.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use firehose_core::location::local_path;
use firehose_pipeline::cli::{RedisArgs, SourceArgs, WriterArgs};
use firehose_pipeline::redis::RedisBuffer;
use firehose_pipeline::{JetstreamConfig, Pipeline, PipelineBuilder, PipelineReport, SharedBuffer};
use firehose_telemetry::{Health, HealthCheck, LogFormat, Telemetry, shutdown_signal};
use tracing::{info, warn};

use crate::{Failure, open_storage_async, parse_size};

/// Process settings shared by every long-running command.
#[derive(Debug, clap::Args)]
pub(crate) struct ServiceArgs {
    /// Serve `/metrics` (Prometheus) and `/health` here.
    #[arg(long, env = "FIREHOSE_METRICS_ADDR", default_value = "127.0.0.1:9464")]
    metrics_addr: SocketAddr,
    /// Log JSON lines instead of text.
    #[arg(long, env = "FIREHOSE_LOG_JSON")]
    pub(crate) log_json: bool,
    /// A TOML file of settings, named like the flags (`out = "./data"`,
    /// `jetstream-url = ["ws://…"]`). Flags override the environment, which overrides the file.
    #[arg(long, env = "FIREHOSE_CONFIG")]
    config: Option<PathBuf>,
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
    #[arg(long, env = "FIREHOSE_BUFFER_SIZE", default_value = "256MiB", value_parser = parse_size::<u64>)]
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
    /// The dataset the writers write (their `--out`): ingest then resumes from its checkpoint
    /// when Redis lost its own, and drops the replays of what it holds.
    #[arg(long, short = 'o', env = "FIREHOSE_OUT")]
    out: Option<String>,
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
    /// Take over entries another writer left unacknowledged this long (it died, or is
    /// stopped); must exceed the longest a file stays open. Default: --max-file-age plus 5m.
    #[arg(long, env = "FIREHOSE_CLAIM_IDLE", value_parser = firehose_core::units::parse_duration)]
    claim_idle: Option<std::time::Duration>,
}

pub(crate) fn run(args: RunArgs) -> Result<(), Failure> {
    start(
        args.service.log_json,
        STOPPING,
        |shutdown, telemetry| async move {
            let storage = open_storage_async(&args.writer.out).await?;
            watch_local_disk(&telemetry, &args.writer.out);
            let builder = Pipeline::archive(jetstream_config(&args.source)?, storage)
                .with_memory_buffer_bytes(args.buffer_size);
            let pipeline = build(args.source.apply(args.writer.apply(builder))).await?;
            let serving = serve_metrics(&args.service, telemetry, &pipeline).await?;
            info!(out = %args.writer.out, metrics = %serving, "Archiving Jetstream.");
            finish(pipeline.run(shutdown).await)
        },
    )
}

pub(crate) fn ingest(args: IngestArgs) -> Result<(), Failure> {
    start(
        args.service.log_json,
        STOPPING,
        |shutdown, telemetry| async move {
            let shared = SharedBuffer::with_side_table(open_redis(&args.redis).await?);
            let mut builder = Pipeline::ingest(jetstream_config(&args.source)?, shared);
            if let Some(out) = &args.out {
                builder = builder.with_dataset(open_storage_async(out).await?);
            }
            let pipeline = build(args.source.apply(builder)).await?;
            let serving = serve_metrics(&args.service, telemetry, &pipeline).await?;
            info!(metrics = %serving, "Reading Jetstream into Redis.");
            finish(pipeline.run(shutdown).await)
        },
    )
}

pub(crate) fn write(args: WriteArgs) -> Result<(), Failure> {
    start(
        args.service.log_json,
        STOPPING,
        |shutdown, telemetry| async move {
            let shared = SharedBuffer::with_side_table(open_redis(&args.redis).await?);
            let storage = open_storage_async(&args.writer.out).await?;
            watch_local_disk(&telemetry, &args.writer.out);
            let consumer = args
                .consumer
                .clone()
                .unwrap_or_else(firehose_pipeline::host_consumer_name);
            let mut builder = Pipeline::write(shared, storage).with_consumer(consumer.clone());
            if let Some(idle) = args.claim_idle {
                builder = builder.with_claim_idle(idle);
            }
            let pipeline = build(args.writer.apply(builder)).await?;
            let serving = serve_metrics(&args.service, telemetry, &pipeline).await?;
            info!(out = %args.writer.out, %consumer, metrics = %serving, "Writing Redis to Parquet.");
            finish(pipeline.run(shutdown).await)
        },
    )
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

/// What the pipeline logs on the first signal.
const STOPPING: &str = "Stopping: writing what is open (a second signal exits at once).";

/// Sets up logging and metrics, a multi-threaded runtime and the signal handling, then runs
/// `body` with the shutdown signal. The first SIGINT or SIGTERM completes it (the pipeline:
/// stop reading, flush, acknowledge, checkpoint, exit 0) and logs `stopping`; a second exits
/// at once, which is safe: nothing acknowledged is uncommitted.
pub(crate) fn start<F, Fut>(log_json: bool, stopping: &'static str, body: F) -> Result<(), Failure>
where
    F: FnOnce(Shutdown, Telemetry) -> Fut,
    Fut: Future<Output = Result<(), Failure>>,
{
    let format = if log_json {
        LogFormat::Json
    } else {
        LogFormat::Text
    };
    firehose_telemetry::init_logging(format);
    let telemetry = Telemetry::install().map_err(|e| Failure::Usage(e.to_string()))?;
    firehose_pipeline::describe_metrics();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Usage(format!("cannot start the runtime: {e}")))?;
    runtime.block_on(async {
        let (signalled, shutdown) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            shutdown_signal().await;
            info!("{stopping}");
            let _ = signalled.send(());
            shutdown_signal().await;
            warn!("Second signal: exiting now.");
            std::process::exit(1);
        });
        let shutdown = Box::pin(async move {
            let _ = shutdown.await;
        });
        body(shutdown, telemetry).await
    })
}

/// Completes on the first SIGINT or SIGTERM.
pub(crate) type Shutdown = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

fn jetstream_config(args: &SourceArgs) -> Result<JetstreamConfig, Failure> {
    args.jetstream_config()
        .map_err(|e| Failure::Usage(e.to_string()))
}

async fn open_redis(args: &RedisArgs) -> Result<Arc<RedisBuffer>, Failure> {
    args.open()
        .await
        .map_err(|e| Failure::Usage(format!("cannot open the Redis buffer: {e}")))
}

fn watch_local_disk(telemetry: &Telemetry, out: &str) {
    if let Some(dir) = local_path(out) {
        telemetry.watch_disk(dir);
    }
}

/// Serves `/metrics` and the pipeline's `/health` until the process ends.
async fn serve_metrics(
    service: &ServiceArgs,
    telemetry: Telemetry,
    pipeline: &Pipeline,
) -> Result<SocketAddr, Failure> {
    let handle = pipeline.health();
    serve_health(service, telemetry, move || {
        let health = handle.check();
        Health::with_details(health.healthy, health.reasons.clone(), &health)
    })
    .await
}

/// Serves `/metrics` and `/health` (as `check` says) on the service's metrics address until
/// the process ends.
pub(crate) async fn serve_health(
    service: &ServiceArgs,
    telemetry: Telemetry,
    check: impl Fn() -> Health + Send + Sync + 'static,
) -> Result<SocketAddr, Failure> {
    let health: HealthCheck = Arc::new(check);
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
