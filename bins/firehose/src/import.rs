//! `firehose import`: a JSON-lines capture into the dataset, through the same writer as the
//! pipeline.

use std::collections::BTreeMap;
use std::io::{self, BufRead, Write};
use std::path::PathBuf;
use std::time::Instant;

use firehose_core::Event;
use firehose_sink::{BatchName, Compression, ParquetOptions, Writer};
use serde::Serialize;

use crate::inspect::{LineError, trim_line_end};
use crate::{Failure, open_lines, open_storage, print_summary, runtime};

/// Decode a JSON-lines capture of Jetstream events and write it to the dataset as
/// Hive-partitioned Parquet, through the same writer as the pipeline.
///
/// Lines are read in chunks of `--batch-lines`; each chunk's files are named after its line
/// range and a hash of its content, so re-running an interrupted import rewrites the same
/// files instead of adding copies. Bad lines are reported with their line number and skipped.
/// Exit code 0 when every line was imported, 1 when some lines failed to decode or a write
/// failed, 2 on usage or I/O errors.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The capture, one Jetstream event per line; `-` reads standard input.
    file: PathBuf,
    /// The dataset root: a local directory, or `s3://bucket/prefix` (endpoint, region and
    /// credentials from the standard AWS environment variables).
    #[arg(long, short = 'o')]
    out: String,
    /// Lines per write (and per file in each partition).
    #[arg(long, default_value_t = 80_000)]
    batch_lines: usize,
    /// Parquet compression: zstd, snappy, gzip, lz4 or none.
    #[arg(long, default_value_t = Compression::Zstd)]
    compression: Compression,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Default, Serialize)]
struct Summary {
    lines: u64,
    blank: u64,
    events: u64,
    errors: u64,
    files: u64,
    bytes_in: u64,
    bytes_out: u64,
    tables: BTreeMap<&'static str, u64>,
    first_errors: Vec<LineError>,
}

const SHOWN_ERRORS: usize = 10;

pub(crate) fn run(args: Args) -> Result<(), Failure> {
    if args.batch_lines == 0 {
        return Err(Failure::Usage("--batch-lines must be at least 1".into()));
    }
    let (name, mut input) = open_lines(&args.file)?;
    let runtime = runtime()?;
    let storage = open_storage(&args.out, &runtime)?;
    let writer = Writer::new(
        storage,
        ParquetOptions {
            compression: args.compression,
            ..ParquetOptions::default()
        },
    );

    let started = Instant::now();
    let mut summary = Summary::default();
    let mut chunk = Chunk::default();
    loop {
        let more = chunk
            .fill(&mut input, args.batch_lines)
            .map_err(|e| Failure::Usage(format!("cannot read {name}: {e}")))?;
        if chunk.lines() == 0 {
            break;
        }
        let first_line = summary.lines + 1;
        summary.lines += chunk.lines() as u64;
        summary.bytes_in += chunk.data.len() as u64;
        let mut events = Vec::with_capacity(chunk.lines());
        for (i, line) in chunk.iter().enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                summary.blank += 1;
                continue;
            }
            match Event::decode(line) {
                Ok(event) => events.push(event),
                Err(e) => {
                    summary.errors += 1;
                    if summary.first_errors.len() < SHOWN_ERRORS {
                        summary.first_errors.push(LineError {
                            line: first_line + i as u64,
                            error: e.to_string(),
                        });
                    }
                }
            }
        }
        let batch = BatchName::new(
            &format!("import-{first_line}"),
            &format!("{}-{:016x}", summary.lines, fnv1a(&chunk.data)),
        )
        .map_err(|e| Failure::Usage(e.to_string()))?;
        let committed = runtime
            .block_on(writer.write(&batch, &events))
            .map_err(|e| {
                Failure::Data(format!(
                    "writing lines {first_line} to {}: {e}",
                    summary.lines
                ))
            })?;
        summary.events += events.len() as u64;
        summary.files += committed.files.len() as u64;
        summary.bytes_out += committed.bytes();
        for file in &committed.files {
            *summary.tables.entry(file.table.name()).or_default() += file.rows as u64;
        }
        eprintln!(
            "imported {} lines: {} events, {} errors, {} files, {:.0} events/s",
            summary.lines,
            summary.events,
            summary.errors,
            summary.files,
            summary.events as f64 / started.elapsed().as_secs_f64().max(1e-9)
        );
        if !more {
            break;
        }
    }

    print_summary(&summary, args.json, |out| {
        print_text(out, &summary, &args.out)
    })?;
    if summary.errors > 0 {
        return Err(Failure::Data(format!(
            "{} of {} lines in {name} failed to decode and were skipped",
            summary.errors, summary.lines
        )));
    }
    Ok(())
}

fn print_text(out: &mut dyn Write, s: &Summary, root: &str) -> io::Result<()> {
    writeln!(
        out,
        "{} lines: {} events imported into {root}, {} failed, {} blank; {} files, {} bytes of Parquet from {} bytes of JSON ({:.1}%)",
        s.lines,
        s.events,
        s.errors,
        s.blank,
        s.files,
        s.bytes_out,
        s.bytes_in,
        100.0 * s.bytes_out as f64 / s.bytes_in.max(1) as f64
    )?;
    for (table, rows) in &s.tables {
        writeln!(out, "  {table:<10} {rows:>12}")?;
    }
    for e in &s.first_errors {
        writeln!(out, "  line {}: {}", e.line, e.error)?;
    }
    Ok(())
}

/// Up to N lines, stored back to back, with their end offsets.
#[derive(Debug, Default)]
struct Chunk {
    data: Vec<u8>,
    ends: Vec<usize>,
}

impl Chunk {
    /// Refills with up to `max` lines; returns whether the input may have more.
    fn fill(&mut self, input: &mut impl BufRead, max: usize) -> io::Result<bool> {
        self.data.clear();
        self.ends.clear();
        while self.ends.len() < max {
            if input.read_until(b'\n', &mut self.data)? == 0 {
                return Ok(false);
            }
            self.ends.push(self.data.len());
        }
        Ok(true)
    }

    fn lines(&self) -> usize {
        self.ends.len()
    }

    /// The lines without their line endings.
    fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(self.ends.iter().copied())
            .map(|(start, end)| trim_line_end(&self.data[start..end]))
    }
}

/// FNV-1a, 64 bits: a stable content hash for file names (std's hasher may change between
/// releases, which would rename files on re-import).
fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
