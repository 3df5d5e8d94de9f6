//! The `firehose` command. Thin: parse the arguments, run the subcommand, turn its outcome
//! into one line on stderr and an exit code (0 success, 1 runtime failure or bad data, 2 bad
//! usage, configuration or I/O).

mod generate;
mod import;
mod inspect;
mod query;
mod retain;
mod serve;

use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use firehose_sink::s3::{S3Config, S3Storage};
use firehose_sink::{LocalStorage, Storage};

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
    Retain(retain::Args),
    Generate(generate::Args),
    Query(query::Args),
    Serve(serve::Args),
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
        Command::Retain(args) => retain::run(args),
        Command::Generate(args) => generate::run(args),
        Command::Query(args) => query::run(args),
        Command::Serve(args) => serve::run(args),
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

/// A runtime for subcommands that talk to storage.
fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Usage(format!("cannot start the runtime: {e}")))
}

/// The dataset at `location`: a local directory, or `s3://bucket/prefix` with the endpoint,
/// region and credentials from the standard AWS environment (`AWS_ENDPOINT_URL`, `AWS_REGION`,
/// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, profiles).
fn open_storage(
    location: &str,
    runtime: &tokio::runtime::Runtime,
) -> Result<Arc<dyn Storage>, Failure> {
    if location.starts_with("s3://") {
        let config = S3Config::from_url(location).map_err(|e| Failure::Usage(e.to_string()))?;
        let storage = runtime
            .block_on(S3Storage::new(config))
            .map_err(|e| Failure::Usage(e.to_string()))?;
        Ok(Arc::new(storage))
    } else {
        Ok(Arc::new(LocalStorage::new(location)))
    }
}

/// Parses an age such as `30d`, `12h`, `90m` or `3600s`.
fn parse_age(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not an age like 30d, 12h, 90m or 3600s"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "{text:?} is not an age like 30d, 12h, 90m or 3600s"
            ));
        }
    };
    n.checked_mul(seconds)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{text:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_parse() {
        assert_eq!(parse_age("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_age("12h"), Ok(Duration::from_secs(12 * 3600)));
        assert_eq!(parse_age("90m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_age("5s"), Ok(Duration::from_secs(5)));
        for bad in ["", "d", "30", "30w", "-1d", "1.5h", "99999999999999999999d"] {
            assert!(parse_age(bad).is_err(), "{bad}");
        }
    }
}
