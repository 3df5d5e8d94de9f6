//! The `firehose` command. Thin: parse the arguments, run the subcommand, turn its outcome
//! into one line on stderr and an exit code (0 success, 1 runtime failure or bad data, 2 bad
//! usage, configuration or I/O).

mod generate;
mod import;
mod inspect;

use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::path::Path;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc keeps freed memory for reuse: the writer allocates and frees large Arrow buffers
/// for every batch, which the system allocator returns to the kernel and faults in again.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Archive the Bluesky firehose (Jetstream) as Hive-partitioned Parquet, and work with the
/// archive.
#[derive(Debug, Parser)]
#[command(name = "firehose", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Inspect(inspect::Args),
    Import(import::Args),
    Generate(generate::Args),
}

/// How a subcommand ended, when it did not succeed.
#[derive(Debug)]
enum Failure {
    /// Bad usage, configuration or I/O: exit code 2.
    Usage(String),
    /// The work ran but found problems (e.g. lines that failed to decode): exit code 1.
    Data(String),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Inspect(args) => inspect::run(args),
        Command::Import(args) => import::run(args),
        Command::Generate(args) => generate::run(args),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Data(reason)) => {
            eprintln!("firehose: {reason}");
            ExitCode::from(1)
        }
        Err(Failure::Usage(reason)) => {
            eprintln!("firehose: {reason}");
            ExitCode::from(2)
        }
    }
}

/// Opens `path` for reading lines, or standard input for `-`; returns it with its name for
/// messages.
fn open_lines(path: &Path) -> Result<(String, Box<dyn BufRead>), Failure> {
    let name = path.display().to_string();
    if name == "-" {
        return Ok((name, Box::new(io::stdin().lock())));
    }
    let file = File::open(path).map_err(|e| Failure::Usage(format!("cannot open {name}: {e}")))?;
    Ok((name, Box::new(BufReader::with_capacity(1 << 20, file))))
}

/// Prints a summary on standard output: one JSON object and a newline with `json`, else in the
/// form `text` writes.
fn print_summary<S: serde::Serialize>(
    summary: &S,
    json: bool,
    text: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<(), Failure> {
    let mut out = io::stdout().lock();
    let printed = if json {
        serde_json::to_writer(&mut out, summary)
            .map_err(io::Error::from)
            .and_then(|()| writeln!(out))
    } else {
        text(&mut out)
    };
    printed.map_err(|e| Failure::Usage(format!("cannot write the summary: {e}")))
}
