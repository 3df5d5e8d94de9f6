//! `firehose compact`: merge the small files of closed hour partitions.

use firehose_core::units::parse_duration;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

use firehose_sink::{CompactOptions, Compacted, Progress, compact};
use serde::Serialize;

use crate::{Failure, open_storage, print_summary, runtime};

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
    #[arg(long, value_parser = parse_duration, default_value = "10m")]
    grace: std::time::Duration,
    #[command(flatten)]
    settings: Settings,
    /// Print what would be compacted; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
}

/// How partitions are compacted: shared by `compact` and `maintain`.
#[derive(Debug, clap::Args)]
pub(crate) struct Settings {
    /// Size of each output file, e.g. `100MB`, `64MiB`, `1GB`.
    #[arg(long, value_parser = parse_size, default_value = "100MB")]
    target_size: u64,
    /// Where partitions are spilled while they are sorted (the system's temporary directory
    /// by default); needs room for about the partition's size.
    #[arg(long)]
    spill_dir: Option<PathBuf>,
    /// Partitions read, sorted and encoded at once, a thread each (default: one per core); a
    /// partition that is storing its last output and deleting its inputs no longer counts, so
    /// a wait on the disk or the network does not leave a core idle.
    #[arg(long, short = 'j', value_name = "N")]
    threads: Option<usize>,
    /// Memory the partitions compacted at once may take together, each estimated as twice its
    /// largest input file (at least 8 MiB) + 10 × 8 MiB (a time slice sorted) + its output up
    /// to --target-size;
    /// one partition always runs, however large. Keep it below the memory the process may use.
    #[arg(long, value_parser = parse_size, default_value = "512MiB")]
    memory_budget: u64,
}

impl Settings {
    /// The options for a compaction (not dry).
    pub(crate) fn options(&self) -> CompactOptions {
        let mut options = CompactOptions {
            target_size: self.target_size,
            threads: self
                .threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
                .max(1),
            memory_budget: self.memory_budget,
            ..CompactOptions::default()
        };
        if let Some(dir) = &self.spill_dir {
            options.spill_dir.clone_from(dir);
        }
        options
    }
}

/// The report, with what the text line needs.
#[derive(Debug, Serialize)]
struct Summary {
    dry_run: bool,
    #[serde(flatten)]
    report: Compacted,
    seconds: f64,
}

pub(crate) fn run(args: Args) -> Result<(), Failure> {
    let closed_before_us = firehose_core::units::unix_micros_ago(args.grace);
    let options = CompactOptions {
        dry_run: args.dry_run,
        ..args.settings.options()
    };
    // A one-off run frees and allocates each partition's buffers over and over: keep the
    // pages (not in `maintain`, a service, whose peak would stay its size).
    firehose_allocator::keep_freed_memory();
    let runtime = runtime()?;
    let storage = open_storage(&args.data, &runtime)?;
    let started = Instant::now();
    // One partition's reading progress rewrites its line; with several at once, the lines
    // would overwrite each other.
    let terminal = std::io::stderr().is_terminal() && options.threads == 1;
    let dry_run = args.dry_run;
    let report = runtime
        .block_on(compact(
            storage.as_ref(),
            closed_before_us,
            &options,
            |progress| match progress {
                Progress::Finished(_) if dry_run => println!("{progress}"),
                _ if dry_run => {}
                Progress::Read { read, files, .. } if terminal => {
                    eprint!("\r{progress}");
                    if read == files {
                        eprintln!();
                    }
                }
                Progress::Read { .. } => {}
                _ => eprintln!("{progress}"),
            },
        ))
        .map_err(|e| Failure::Data(format!("compact {}: {e}", args.data)))?;
    let summary = Summary {
        dry_run: args.dry_run,
        report,
        seconds: started.elapsed().as_secs_f64(),
    };
    print_summary(&summary, args.json, |out| print_text(out, &summary))
}

fn print_text(out: &mut dyn Write, summary: &Summary) -> std::io::Result<()> {
    let s = &summary.report;
    if summary.dry_run {
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
            summary.seconds,
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
