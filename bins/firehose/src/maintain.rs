//! `firehose maintain`: compaction, retention and upload cleanup as one long-running service.

use std::time::Duration;

use firehose_core::units::parse_duration;
use firehose_maintain::{CleanupJob, CompactJob, Maintenance, RetainJob, Schedule};
use firehose_telemetry::Health;
use tracing::info;

use crate::Failure;
use crate::pipeline::{ServiceArgs, serve_health, start};

/// Keep the dataset in shape, on a schedule, until stopped: compact the closed hours every
/// `--compact-every`, delete the hours older than `--retain-older-than` every `--retain-every`
/// (only when an age is given), and abort multipart uploads abandoned for `--uploads-older-than`
/// every `--cleanup-every` (S3 datasets). Each job runs once at start, then on its schedule,
/// one at a time; a failed run is logged and tried again within 15 minutes.
///
/// `/metrics` gives each job's last success time, last duration, whether its last run failed,
/// and its runs (`firehose_maintenance_*`, see docs/METRICS.md): the shipped alerts fire when
/// a job keeps failing for 30 minutes or has not succeeded for twice its interval plus 30
/// minutes. Every job is safe to interrupt.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The dataset: a local directory, or `s3://bucket/prefix` (endpoint, region and
    /// credentials from the standard AWS environment variables).
    #[arg(long, env = "FIREHOSE_OUT")]
    data: String,
    /// How often to compact, e.g. `1h`; `0` turns compaction off.
    #[arg(long, env = "FIREHOSE_COMPACT_EVERY", value_parser = parse_duration, default_value = "1h")]
    compact_every: Duration,
    /// How long after its end an hour is still open for late events (the writer's grace).
    #[arg(long, value_parser = parse_duration, default_value = "10m")]
    grace: Duration,
    #[command(flatten)]
    compaction: crate::compact::Settings,
    /// Delete hour partitions older than this, e.g. `90d`; unset or empty, nothing is deleted.
    #[arg(long, env = "FIREHOSE_RETAIN_OLDER_THAN", value_parser = optional_age)]
    retain_older_than: Option<Age>,
    /// How often to apply retention.
    #[arg(long, value_parser = parse_duration, default_value = "1d")]
    retain_every: Duration,
    /// Abort multipart uploads started longer ago than this and never completed (S3 only).
    #[arg(long, value_parser = parse_duration, default_value = "24h")]
    uploads_older_than: Duration,
    /// How often to clean up uploads; `0` turns it off.
    #[arg(long, value_parser = parse_duration, default_value = "1d")]
    cleanup_every: Duration,
    #[command(flatten)]
    service: ServiceArgs,
}

/// An age, or none for an empty value (an `.env` line `FIREHOSE_RETAIN_OLDER_THAN=`).
#[derive(Debug, Clone, Copy)]
struct Age(Option<Duration>);

fn optional_age(text: &str) -> Result<Age, String> {
    if text.trim().is_empty() {
        return Ok(Age(None));
    }
    parse_duration(text)
        .map(|age| Age(Some(age)))
        .map_err(|e| e.to_string())
}

pub(crate) fn run(args: Args) -> Result<(), Failure> {
    let enabled = |every: Duration| !every.is_zero();
    let schedule = Schedule {
        compact: enabled(args.compact_every).then(|| CompactJob {
            every: args.compact_every,
            grace: args.grace,
            options: args.compaction.options(),
        }),
        retain: args
            .retain_older_than
            .and_then(|age| age.0)
            .map(|older_than| RetainJob {
                every: args.retain_every,
                older_than,
            }),
        cleanup_uploads: enabled(args.cleanup_every).then_some(CleanupJob {
            every: args.cleanup_every,
            older_than: args.uploads_older_than,
        }),
    };
    start(
        args.service.log_json,
        "Stopping maintenance (a second signal exits at once).",
        |shutdown, telemetry| async move {
            firehose_maintain::describe_metrics();
            if let Some(dir) = firehose_core::location::local_path(&args.data) {
                telemetry.watch_disk(dir);
            }
            let maintenance = Maintenance::open(&args.data, schedule)
                .await
                .map_err(|e| Failure::Usage(e.to_string()))?;
            let serving = serve_health(&args.service, telemetry, Health::ok).await?;
            info!(data = %args.data, metrics = %serving, "Maintenance service started.");
            maintenance.run(shutdown).await;
            Ok(())
        },
    )
}
