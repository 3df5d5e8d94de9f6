//! `firehose cleanup-uploads`: abort multipart uploads that never completed.

use firehose_core::units::parse_duration;
use std::time::{Duration, UNIX_EPOCH};

use firehose_sink::s3::{S3Config, S3Storage};

use crate::{Failure, runtime};

/// Abort the multipart uploads under an S3 dataset that were started more than `--older-than`
/// ago and never completed (a writer killed mid-upload leaves them; their parts are billed
/// until aborted, and Hetzner has no lifecycle rules to do it). Uploads younger than the age
/// may still be in progress and are left alone.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The dataset, `s3://bucket/prefix` (endpoint, region and credentials from the standard
    /// AWS environment variables).
    #[arg(long)]
    data: String,
    /// Only uploads started longer ago than this, e.g. `24h`, `7d`.
    #[arg(long, value_parser = parse_duration)]
    older_than: Duration,
    /// Print the uploads that would be aborted; abort nothing.
    #[arg(long)]
    dry_run: bool,
}

pub(crate) fn run(args: Args) -> Result<(), Failure> {
    let runtime = runtime()?;
    let storage = runtime
        .block_on(async { S3Storage::new(S3Config::from_url(&args.data)?).await })
        .map_err(|e| {
            Failure::Usage(format!(
                "cleanup-uploads works on an S3 dataset (s3://bucket/prefix): {e}"
            ))
        })?;
    let stale = runtime
        .block_on(storage.stale_uploads(args.older_than))
        .map_err(|e| {
            let text = e.to_string();
            if text.contains("NotImplemented") {
                Failure::Data(format!(
                    "the S3 server of {} does not support listing multipart uploads, so they cannot be cleaned up ({text})",
                    args.data
                ))
            } else {
                Failure::Data(format!("cleanup-uploads in {}: {text}", args.data))
            }
        })?;
    for upload in &stale {
        let started = upload
            .initiated
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if args.dry_run {
            println!(
                "{} (upload {}, started {started} s after the epoch)",
                upload.path, upload.upload_id
            );
        } else {
            runtime
                .block_on(storage.abort_upload(upload))
                .map_err(|e| Failure::Data(format!("cleanup-uploads in {}: {e}", args.data)))?;
        }
    }
    let verb = if args.dry_run {
        "would abort"
    } else {
        "aborted"
    };
    println!(
        "{verb} {} multipart uploads started more than {} s ago",
        stale.len(),
        args.older_than.as_secs()
    );
    Ok(())
}
