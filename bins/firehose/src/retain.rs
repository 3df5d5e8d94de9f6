//! `firehose retain`: delete hour partitions past an age.

use firehose_core::units::parse_duration;
use std::io::IsTerminal;

use firehose_sink::retain;

use crate::{Failure, open_storage, runtime};

/// Delete whole hour partitions older than an age, in every table of the dataset (object
/// storage like Hetzner's has no lifecycle rules to do it). An hour is deleted only once all of
/// it is older than the age. Files outside the `<table>/year=/month=/day=/hour=/` layout are
/// never touched.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The dataset: a local directory, or `s3://bucket/prefix` (endpoint, region and
    /// credentials from the standard AWS environment variables).
    #[arg(long)]
    data: String,
    /// Keep this much, e.g. `30d`, `12h`, `90m`.
    #[arg(long, value_parser = parse_duration)]
    older_than: std::time::Duration,
    /// Print what would be deleted, delete nothing.
    #[arg(long)]
    dry_run: bool,
}

pub(crate) fn run(args: Args) -> Result<(), Failure> {
    let cutoff_us = firehose_core::units::unix_micros_ago(args.older_than);
    let runtime = runtime()?;
    let storage = open_storage(&args.data, &runtime)?;
    let verb = if args.dry_run {
        "would delete"
    } else {
        "deleting"
    };
    let progress = std::io::stderr().is_terminal();
    let mut seen = 0u64;
    let report = runtime
        .block_on(retain(
            storage.as_ref(),
            cutoff_us,
            args.dry_run,
            |object| {
                seen += 1;
                if args.dry_run {
                    println!("{}", object.path);
                } else if progress && seen.is_multiple_of(1000) {
                    eprint!("\r{verb} {seen} files");
                }
            },
        ))
        .map_err(|e| Failure::Data(format!("retain in {}: {e}", args.data)))?;
    if progress && !args.dry_run && seen >= 1000 {
        eprintln!();
    }
    let verb = if args.dry_run {
        "would delete"
    } else {
        "deleted"
    };
    println!(
        "{verb} {} files ({} bytes) in {} hour partitions that ended before {} s after the epoch; kept {} files",
        report.files,
        report.bytes,
        report.partitions,
        cutoff_us / 1_000_000,
        report.kept
    );
    Ok(())
}
