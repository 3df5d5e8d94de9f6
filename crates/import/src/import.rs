//! Captures into a dataset, on several threads, with the same files whatever their number.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use firehose_core::Event;
use rayon::prelude::*;
use std::io::BufRead;

use firehose_sink::{BatchName, ParquetOptions, Storage, Storing, Writer};
use serde::Serialize;

use crate::input::{Chunk, Input};
use crate::{Error, LineError, Result};

/// How an import runs.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Lines per unit of work; each unit becomes one file per partition it touches. Larger
    /// units make fewer, larger files and use more memory (see [`import`]).
    pub batch_lines: usize,
    /// Threads that read, decode, build Arrow and encode Parquet; the stores wait on the
    /// caller's runtime, so `threads: 1` is one core and the kernel's work for the stores.
    pub threads: usize,
    /// The Parquet settings.
    pub parquet: ParquetOptions,
    /// Failed lines kept, with their input and line number, in the summary.
    pub keep_errors: usize,
}

impl Default for ImportOptions {
    /// 80,000 lines a unit, a thread per core, zstd, ten failed lines kept.
    fn default() -> Self {
        ImportOptions {
            batch_lines: 80_000,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            parquet: ParquetOptions::default(),
            keep_errors: 10,
        }
    }
}

/// What an import did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct ImportSummary {
    /// Inputs read.
    pub inputs: usize,
    /// Lines read, blank ones included.
    pub lines: u64,
    /// Blank lines (skipped, not errors).
    pub blank: u64,
    /// Events written.
    pub events: u64,
    /// Lines that failed to decode (skipped).
    pub errors: u64,
    /// Parquet files written.
    pub files: u64,
    /// Bytes of JSON read (after decompression).
    pub bytes_in: u64,
    /// Bytes of Parquet written.
    pub bytes_out: u64,
    /// Rows written per table.
    pub tables: BTreeMap<&'static str, u64>,
    /// The first failed lines, in input order.
    pub first_errors: Vec<LineError>,
}

/// How far an import has come; given to the progress callback after each unit of work.
#[derive(Debug, Clone, Copy)]
pub struct ImportProgress {
    /// Lines done.
    pub lines: u64,
    /// Events written.
    pub events: u64,
    /// Lines that failed to decode.
    pub errors: u64,
    /// Files written.
    pub files: u64,
    /// Bytes read from the inputs as stored (compressed, when they are).
    pub bytes_read: u64,
    /// The inputs' total size as stored, when every input is a file.
    pub bytes_total: Option<u64>,
    /// Time since the start.
    pub elapsed: Duration,
}

/// One unit of work: consecutive lines of one input.
#[derive(Debug)]
struct Job {
    input: usize,
    first_line: u64,
    chunk: Chunk,
}

/// Lines decoded as one piece of work, at least.
const PIECE: usize = 4096;

/// Where the inputs have been read to: the workers cut the next unit from here in turn.
#[derive(Default)]
struct Cursor {
    /// The next input to open.
    next_input: usize,
    /// The input being read, if any.
    open: Option<OpenInput>,
}

/// An input being read.
struct OpenInput {
    index: usize,
    reader: Box<dyn BufRead + Send>,
    /// The number of the next line to read, from 1.
    next_line: u64,
}

/// Imports `inputs` into `storage`: each is read as a stream of lines (gzip and zstd
/// decompressed on the fly), cut into units of `batch_lines` lines, and the units are decoded
/// and written on `threads` threads, each as one file per partition it touches.
///
/// - **Threads.** Each thread cuts the next unit from the inputs (one at a time: reading is
///   sequential), then decodes, encodes and stores it while another thread reads. A unit's
///   decoding (in pieces of 4,096 lines) and its files' encoding are split into tasks that an
///   idle thread takes over (rayon's work stealing), so the last units of an import are shared
///   out rather than left to one thread. There is no reader thread of its own: `threads`
///   threads use at most `threads` cores, plus the kernel's work for the stores.
/// - **Deterministic.** A unit's files are named after its line range and a hash of its
///   bytes, and the units are the same whatever the number of threads: the same inputs give
///   the same files, so re-running an interrupted import rewrites them instead of adding
///   copies.
/// - **Bad lines** are skipped and counted; the first [`ImportOptions::keep_errors`] are kept
///   with their input and line number.
/// - **Memory** is bounded by the units in flight, one per thread: its raw lines (kept and
///   reused for the thread's next unit), decoded events, Arrow columns and Parquet bytes. The
///   README gives the peak RSS measured per thread count.
/// - **Failure.** A read or write error stops the import: no new unit starts, the units at
///   work finish, and the first error is returned. What was written is complete files.
///
/// The work runs on a pool of `threads` threads of its own; the stores run on the caller's
/// runtime, which may be of any flavour.
/// `progress` is called after each unit, from the thread that finished it.
pub async fn import(
    inputs: &[Input],
    storage: Arc<dyn Storage>,
    options: &ImportOptions,
    progress: impl Fn(&ImportProgress) + Send + Sync + 'static,
) -> Result<ImportSummary> {
    if options.batch_lines == 0 || options.threads == 0 {
        return Err(Error::InvalidOption(
            "batch lines and threads must be at least 1",
        ));
    }
    let shared = Arc::new(Shared {
        inputs: inputs.to_vec(),
        writer: Writer::new(storage, options.parquet.clone()),
        batch_lines: options.batch_lines,
        keep_errors: options.keep_errors,
        cursor: Mutex::new(Cursor::default()),
        summary: Mutex::new(ImportSummary {
            inputs: inputs.len(),
            ..ImportSummary::default()
        }),
        failed: Mutex::new(None),
        stop: AtomicBool::new(false),
        bytes_read: Arc::new(AtomicU64::new(0)),
        bytes_total: inputs.iter().map(Input::size).sum(),
        started: Instant::now(),
        progress: Box::new(progress),
    });
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(options.threads)
        .thread_name(|i| format!("firehose-import-{i}"))
        .build()
        .map_err(|e| Error::Worker(e.to_string()))?;
    let (worker, runtime) = (shared.clone(), tokio::runtime::Handle::current());
    let workers = tokio::task::spawn_blocking(move || {
        pool.broadcast(|_| worker.work(&runtime));
    });
    if let Err(e) = workers.await {
        shared.fail(Error::Worker(e.to_string()));
    }
    let failed = shared
        .failed
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    match failed {
        Some(error) => Err(error),
        None => Ok(shared.summary().clone()),
    }
}

/// What the workers share.
struct Shared {
    inputs: Vec<Input>,
    writer: Writer,
    batch_lines: usize,
    keep_errors: usize,
    cursor: Mutex<Cursor>,
    summary: Mutex<ImportSummary>,
    /// The first error; later ones are consequences of the stop.
    failed: Mutex<Option<Error>>,
    stop: AtomicBool,
    bytes_read: Arc<AtomicU64>,
    bytes_total: Option<u64>,
    started: Instant,
    progress: Box<dyn Fn(&ImportProgress) + Send + Sync>,
}

impl Shared {
    fn summary(&self) -> std::sync::MutexGuard<'_, ImportSummary> {
        self.summary.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn fail(&self, error: Error) {
        self.stop.store(true, Ordering::Relaxed);
        self.failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert(error);
    }

    /// Cuts the next unit and writes it, until the inputs end or the import stops. The
    /// thread's chunk goes from unit to unit, so its buffers are allocated once.
    fn work(&self, runtime: &tokio::runtime::Handle) {
        let mut chunk = Chunk::default();
        while !self.stop.load(Ordering::Relaxed) {
            let next = {
                let mut cursor = self.cursor.lock().unwrap_or_else(PoisonError::into_inner);
                self.next_unit(&mut cursor, chunk)
            };
            let job = match next {
                Ok(Some(job)) => job,
                Ok(None) => return,
                Err(e) => return self.fail(e),
            };
            match self.write(job, runtime) {
                Ok(used) => chunk = used,
                Err(e) => return self.fail(e),
            }
        }
    }

    /// Reads the next unit into `chunk`, opening the next input when one ends; `None` when
    /// every input has been read.
    fn next_unit(&self, cursor: &mut Cursor, mut chunk: Chunk) -> Result<Option<Job>> {
        loop {
            let Some(open) = &mut cursor.open else {
                let Some(input) = self.inputs.get(cursor.next_input) else {
                    return Ok(None);
                };
                cursor.open = Some(OpenInput {
                    index: cursor.next_input,
                    reader: input.open_counting(self.bytes_read.clone())?,
                    next_line: 1,
                });
                cursor.next_input += 1;
                continue;
            };
            let read = chunk
                .refill(&mut open.reader, self.batch_lines)
                .map_err(|source| Error::Read {
                    input: self.inputs[open.index].name(),
                    source,
                })?;
            if read {
                let first_line = open.next_line;
                open.next_line += chunk.lines() as u64;
                return Ok(Some(Job {
                    input: open.index,
                    first_line,
                    chunk,
                }));
            }
            cursor.open = None;
        }
    }

    /// Decodes one unit and writes its files, then adds it to the summary; gives the chunk
    /// back for the next unit.
    fn write(&self, job: Job, runtime: &tokio::runtime::Handle) -> Result<Chunk> {
        let input = &self.inputs[job.input];
        let mut unit = ImportSummary {
            lines: job.chunk.lines() as u64,
            bytes_in: job.chunk.data.len() as u64,
            ..ImportSummary::default()
        };
        // Decoded in pieces that idle threads may take: at the end of the inputs, the last
        // units are shared out instead of leaving all but one thread waiting.
        let lines: Vec<&[u8]> = job.chunk.iter().collect();
        let pieces: Vec<Piece<'_>> = lines
            .par_chunks(PIECE)
            .enumerate()
            .map(|(i, texts)| {
                let first_line = job.first_line + (i * PIECE) as u64;
                Piece::decode(texts, first_line, input, self.keep_errors)
            })
            .collect();
        drop(lines);
        for piece in &pieces {
            unit.blank += piece.blank;
            unit.errors += piece.errors;
            unit.events += piece.events.len() as u64;
            let room = self.keep_errors.saturating_sub(unit.first_errors.len());
            unit.first_errors
                .extend(piece.first_errors.iter().take(room).cloned());
        }
        let last_line = job.first_line + unit.lines - 1;
        let name = BatchName::new(
            &format!("import-{}", job.first_line),
            &format!("{last_line}-{:016x}", content_hash(&job.chunk.data)),
        )?;
        let range = format!("{}-{last_line}", job.first_line);
        let failed = |source| Error::Write {
            input: input.name(),
            lines: range.clone(),
            source,
        };
        let events = pieces.iter().flat_map(|piece| &piece.events);
        let files = self.writer.build(&name, events).map_err(failed)?;
        drop(pieces);
        // Each file is encoded as a piece of its own, and stored while the others encode.
        let storing = files
            .par_iter()
            .map(|file| self.writer.encode_and_store(file, runtime))
            .collect::<firehose_sink::Result<Vec<_>>>()
            .map_err(failed)?;
        drop(files);
        let committed = runtime.block_on(Storing::finish(storing)).map_err(failed)?;
        unit.files = committed.files.len() as u64;
        unit.bytes_out = committed.bytes();
        for file in &committed.files {
            *unit.tables.entry(file.table.name()).or_default() += file.rows as u64;
        }
        let progress = {
            let mut summary = self.summary();
            summary.add(unit, self.keep_errors, &self.inputs);
            ImportProgress {
                lines: summary.lines,
                events: summary.events,
                errors: summary.errors,
                files: summary.files,
                bytes_read: self.bytes_read.load(Ordering::Relaxed),
                bytes_total: self.bytes_total,
                elapsed: self.started.elapsed(),
            }
        };
        (self.progress)(&progress);
        Ok(job.chunk)
    }
}

/// A piece of a unit, decoded.
struct Piece<'a> {
    events: Vec<Event<'a>>,
    blank: u64,
    errors: u64,
    first_errors: Vec<LineError>,
}

impl<'a> Piece<'a> {
    /// Decodes `texts`, the lines from `first_line` on; keeps the first `keep_errors` failures.
    fn decode(texts: &[&'a [u8]], first_line: u64, input: &Input, keep_errors: usize) -> Self {
        let mut piece = Piece {
            events: Vec::with_capacity(texts.len()),
            blank: 0,
            errors: 0,
            first_errors: Vec::new(),
        };
        for (line, text) in (first_line..).zip(texts) {
            if text.iter().all(u8::is_ascii_whitespace) {
                piece.blank += 1;
                continue;
            }
            match Event::decode(text) {
                Ok(event) => piece.events.push(event),
                Err(e) => {
                    piece.errors += 1;
                    if piece.first_errors.len() < keep_errors {
                        piece.first_errors.push(LineError {
                            input: input.name(),
                            line,
                            error: e.to_string(),
                        });
                    }
                }
            }
        }
        piece
    }
}

impl ImportSummary {
    /// Adds one unit's counts; the kept errors stay the first ones in input order, whatever
    /// order the units finish in.
    fn add(&mut self, unit: ImportSummary, keep_errors: usize, inputs: &[Input]) {
        self.lines += unit.lines;
        self.blank += unit.blank;
        self.events += unit.events;
        self.errors += unit.errors;
        self.files += unit.files;
        self.bytes_in += unit.bytes_in;
        self.bytes_out += unit.bytes_out;
        for (table, rows) in unit.tables {
            *self.tables.entry(table).or_default() += rows;
        }
        if !unit.first_errors.is_empty() {
            let order: BTreeMap<String, usize> = inputs
                .iter()
                .enumerate()
                .map(|(i, input)| (input.name(), i))
                .collect();
            self.first_errors.extend(unit.first_errors);
            self.first_errors
                .sort_by_key(|e| (order.get(&e.input).copied(), e.line));
            self.first_errors.truncate(keep_errors);
        }
    }
}

/// The summary for people: one line of totals, rows per table, then the kept failures.
impl fmt::Display for ImportSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} lines from {} inputs: {} events imported, {} failed, {} blank; {} files, {} bytes of Parquet from {} bytes of JSON ({:.1}%)",
            self.lines,
            self.inputs,
            self.events,
            self.errors,
            self.blank,
            self.files,
            self.bytes_out,
            self.bytes_in,
            100.0 * self.bytes_out as f64 / self.bytes_in.max(1) as f64
        )?;
        for (table, rows) in &self.tables {
            writeln!(f, "  {table:<10} {rows:>12}")?;
        }
        for e in &self.first_errors {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

/// XXH3, 64 bits: a stable content hash for file names (std's hasher may change between
/// releases, which would rename files on re-import), at memory speed. (Until 2026-12 the names
/// used FNV-1a, whose byte-at-a-time multiply took a tenth of an import's CPU time.)
fn content_hash(data: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_content_hash_is_the_published_xxh3() {
        // File names depend on it: it must not change between releases.
        assert_eq!(content_hash(b""), 0x2d06_8005_38d3_94c2);
        assert_ne!(content_hash(b"a\n"), content_hash(b"b\n"));
    }

    #[test]
    fn kept_errors_are_the_first_in_input_order_whatever_order_units_finish() {
        let inputs = [Input::File("a".into()), Input::File("b".into())];
        let unit = |input: &str, lines: &[u64]| ImportSummary {
            errors: lines.len() as u64,
            first_errors: lines
                .iter()
                .map(|&line| LineError {
                    input: input.into(),
                    line,
                    error: String::new(),
                })
                .collect(),
            ..ImportSummary::default()
        };
        let mut summary = ImportSummary::default();
        summary.add(unit("b", &[1, 2]), 3, &inputs);
        summary.add(unit("a", &[90]), 3, &inputs);
        summary.add(unit("a", &[7]), 3, &inputs);
        let kept: Vec<_> = summary
            .first_errors
            .iter()
            .map(|e| format!("{}:{}", e.input, e.line))
            .collect();
        assert_eq!(kept, ["a:7", "a:90", "b:1"]);
        assert_eq!(summary.errors, 4);
    }
}
