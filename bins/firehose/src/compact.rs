//! `firehose compact`: merge the small files of closed hour partitions.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use firehose_sink::{CompactOptions, Compacted, Progress, compact};
use serde::Serialize;

use crate::{Failure, open_storage, parse_age, print_summary, runtime};

/// Merge the small files of every closed hour partition into files of about `--target-size`,
/// sorted by time, with duplicate events (Jetstream replays) removed, then delete the small
/// files. An hour is closed once it ended more than `--grace` ago (the pipeline keeps it open
/// that long for late events).
///
/// Safe to interrupt: outputs are named after the files they replace and stored before any of
/// those is deleted, so after a crash readers see at worst duplicates, and running the command
/// again finishes the job. A partition already compacted is left alone.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The dataset: a local directory, or `s3://bucket/prefix` (endpoint, region and
    /// credentials from the standard AWS environment variables).
    #[arg(long)]
    data: String,
    /// How long after its end an hour is still open for late events, e.g. `10m`, `1h`.
    #[arg(long, value_parser = parse_age, default_value = "10m")]
    grace: std::time::Duration,
    /// Size of each output file, e.g. `100MB`, `64MiB`, `1GB`.
    #[arg(long, value_parser = parse_size, default_value = "100MB")]
    target_size: u64,
    /// Where partitions are spilled while they are sorted (the system's temporary directory
    /// by default); needs room for about the partition's size.
    #[arg(long)]
    spill_dir: Option<PathBuf>,
    /// Print what would be compacted; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Summary {
    dry_run: bool,
    partitions: usize,
    already_compact: usize,
    open: usize,
    files_in: usize,
    files_out: usize,
    rows_in: u64,
    rows_out: u64,
    duplicates: u64,
    bytes_in: u64,
    bytes_out: u64,
    seconds: f64,
}

pub(crate) fn run(args: Args) -> Result<(), Failure> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| Failure::Usage(format!("clock before 1970: {e}")))?;
    let closed_before = now.saturating_sub(args.grace);
    let closed_before_us = i64::try_from(closed_before.as_micros())
        .map_err(|_| Failure::Usage("time out of range".into()))?;
    let mut options = CompactOptions {
        target_size: args.target_size,
        dry_run: args.dry_run,
        ..CompactOptions::default()
    };
    if let Some(dir) = args.spill_dir {
        options.spill_dir = dir;
    }
    let runtime = runtime()?;
    let storage = open_storage(&args.data, &runtime)?;
    let started = Instant::now();
    let terminal = std::io::stderr().is_terminal();
    let mut partition_started = Instant::now();
    let report = runtime
        .block_on(compact(
            storage.as_ref(),
            closed_before_us,
            &options,
            |progress| match progress {
                Progress::Started {
                    partition,
                    index,
                    total,
                    files,
                    bytes,
                } => {
                    partition_started = Instant::now();
                    if !args.dry_run {
                        eprintln!("[{index}/{total}] {partition}: {files} files, {bytes} bytes");
                    }
                }
                Progress::Read {
                    partition,
                    read,
                    files,
                } if terminal => {
                    eprint!("\r  {partition}: read {read}/{files} files");
                    if read == files {
                        eprintln!();
                    }
                }
                Progress::Stored { path, rows, bytes } => {
                    eprintln!("  stored {path}: {rows} rows, {bytes} bytes");
                }
                Progress::Finished(done) if args.dry_run => {
                    println!(
                        "{}: {} files, {} bytes",
                        done.partition, done.files_in, done.bytes_in
                    );
                }
                Progress::Finished(done) => {
                    eprintln!(
                        "  {}: {} files into {}, {} rows into {} ({} duplicates), {} bytes into {}, {:.1} s",
                        done.partition,
                        done.files_in,
                        done.outputs.len(),
                        done.rows_in,
                        done.rows_out,
                        done.duplicates,
                        done.bytes_in,
                        done.bytes_out,
                        partition_started.elapsed().as_secs_f64()
                    );
                }
                _ => {}
            },
        ))
        .map_err(|e| Failure::Data(format!("compact {}: {e}", args.data)))?;
    let summary = Summary::new(&report, args.dry_run, started.elapsed().as_secs_f64());
    print_summary(&summary, args.json, |out| print_text(out, &summary))
}

impl Summary {
    fn new(r: &Compacted, dry_run: bool, seconds: f64) -> Self {
        Summary {
            dry_run,
            partitions: r.partitions,
            already_compact: r.already_compact,
            open: r.open,
            files_in: r.files_in,
            files_out: r.files_out,
            rows_in: r.rows_in,
            rows_out: r.rows_out,
            duplicates: r.duplicates,
            bytes_in: r.bytes_in,
            bytes_out: r.bytes_out,
            seconds,
        }
    }
}

fn print_text(out: &mut dyn Write, s: &Summary) -> std::io::Result<()> {
    if s.dry_run {
        writeln!(
            out,
            "would compact {} partitions ({} files, {} bytes); {} already compacted, {} still open",
            s.partitions, s.files_in, s.bytes_in, s.already_compact, s.open
        )
    } else {
        writeln!(
            out,
            "compacted {} partitions: {} files into {}, {} rows into {} ({} duplicates removed), {} bytes into {}, in {:.1} s; {} already compacted, {} still open",
            s.partitions,
            s.files_in,
            s.files_out,
            s.rows_in,
            s.rows_out,
            s.duplicates,
            s.bytes_in,
            s.bytes_out,
            s.seconds,
            s.already_compact,
            s.open
        )
    }
}

/// A positive size (see [`crate::parse_size`]).
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    match crate::parse_size(text)? {
        0 => Err(format!("{text:?}: the size must be positive")),
        size => Ok(size),
    }
}
