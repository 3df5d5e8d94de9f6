//! `firehose import`: captures into the dataset, on every core.

use std::time::Duration;

use firehose_import::{ImportOptions, ImportProgress, expand, import};
use firehose_sink::{Compression, ParquetOptions};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::{Failure, open_storage_async, print_summary};

/// Import captures of Jetstream events (one JSON object a line) into the dataset as
/// Hive-partitioned Parquet, decoding and encoding on `--threads` threads.
///
/// Inputs are files, directories (every file under them), glob patterns (`'caps/*.json.gz'`)
/// or `-` for standard input; gzip and zstd are decompressed as they are read, never to disk.
/// Each unit of `--batch-lines` lines becomes one file per partition, named after its lines
/// and a hash of their content: the same inputs give the same files whatever `--threads` is,
/// and re-running an interrupted import rewrites them instead of adding copies. Bad lines are
/// reported with their input and line number and skipped. Progress (events/s, bytes, ETA)
/// goes to stderr when it is a terminal. Exit code 0 when every line was imported, 1 when
/// some failed to decode or a write failed, 2 on usage or I/O errors.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The captures: files, directories, glob patterns, or `-` for standard input.
    #[arg(required = true)]
    inputs: Vec<String>,
    /// The dataset root: a local directory, or `s3://bucket/prefix` (endpoint, region and
    /// credentials from the standard AWS environment variables).
    #[arg(long, short = 'o')]
    out: String,
    /// Lines per unit of work (and per file in each partition). Memory grows with it: a peak
    /// of about 250 MB with one thread, 200 MB a thread with more, at the default.
    #[arg(long, default_value_t = 80_000)]
    batch_lines: usize,
    /// Threads that read, decode and encode (the stores wait on one more, mostly idle);
    /// default: one per core.
    #[arg(long, short = 'j')]
    threads: Option<usize>,
    /// Parquet compression: zstd, snappy, gzip, lz4 or none.
    #[arg(long, default_value_t = Compression::Zstd)]
    compression: Compression,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: Args) -> Result<(), Failure> {
    let inputs = expand(&args.inputs).map_err(|e| Failure::Usage(e.to_string()))?;
    let mut options = ImportOptions {
        batch_lines: args.batch_lines,
        parquet: ParquetOptions {
            compression: args.compression,
            ..ParquetOptions::default()
        },
        ..ImportOptions::default()
    };
    options.threads = args.threads.unwrap_or(options.threads);
    if options.batch_lines == 0 || options.threads == 0 {
        return Err(Failure::Usage(
            "--batch-lines and --threads must be at least 1".into(),
        ));
    }
    // The workers free and allocate a unit's buffers over and over: keep the pages.
    firehose_allocator::keep_freed_memory();
    let bar = progress_bar();
    let shown = bar.clone();
    let runtime = crate::runtime()?;
    let summary = runtime.block_on(async {
        let storage = open_storage_async(&args.out).await?;
        import(&inputs, storage, &options, move |p| show(&shown, p))
            .await
            .map_err(|e| match e {
                firehose_import::Error::NoInput(_) | firehose_import::Error::Read { .. } => {
                    Failure::Usage(e.to_string())
                }
                e => Failure::Data(e.to_string()),
            })
    });
    bar.finish_and_clear();
    let summary = summary?;
    print_summary(&summary, args.json, |out| write!(out, "{summary}"))?;
    if summary.errors > 0 {
        return Err(Failure::Data(format!(
            "{} of {} lines in {} failed to decode and were skipped",
            summary.errors,
            summary.lines,
            firehose_import::describe(&inputs)
        )));
    }
    Ok(())
}

/// A bar on stderr when it is a terminal; hidden otherwise (logs get the summary only).
fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {binary_bytes}/{binary_total_bytes} read, ETA {eta}  {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(500));
    bar
}

fn show(bar: &ProgressBar, p: &ImportProgress) {
    if let Some(total) = p.bytes_total {
        bar.set_length(total);
    }
    bar.set_position(p.bytes_read);
    bar.set_message(format!(
        "{} events ({:.0}/s), {} failed lines, {} files",
        p.events,
        p.events as f64 / p.elapsed.as_secs_f64().max(1e-9),
        p.errors,
        p.files
    ));
}
