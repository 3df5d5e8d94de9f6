//! The `firehose` command. Thin: parse the arguments, run the subcommand, turn its outcome
//! into one line on stderr and an exit code (0 success, 1 runtime failure or bad data, 2 bad
//! usage, configuration or I/O).

mod cleanup_uploads;
mod compact;
mod generate;
mod health;
mod import;
mod inspect;
mod maintain;
mod mock_jetstream;
mod pipeline;
mod query;
mod retain;
mod serve;

use std::io::{self, Write};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use firehose_sink::Storage;

// mimalloc (see the crate for why).
use firehose_allocator as _;

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
    Run(pipeline::RunArgs),
    Ingest(pipeline::IngestArgs),
    Write(pipeline::WriteArgs),
    Health(health::Args),
    Inspect(inspect::Args),
    Import(import::Args),
    Retain(retain::Args),
    Compact(compact::Args),
    CleanupUploads(cleanup_uploads::Args),
    Maintain(maintain::Args),
    Generate(generate::Args),
    MockJetstream(firehose_mock_jetstream::cli::MockArgs),
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
    let cli = match parse_cli() {
        Ok(cli) => cli,
        Err(Failure::Usage(reason) | Failure::Data(reason)) => {
            eprintln!("firehose: {reason}");
            return ExitCode::from(2);
        }
    };
    let outcome = match cli.command {
        Command::Run(args) => pipeline::run(args),
        Command::Ingest(args) => pipeline::ingest(args),
        Command::Write(args) => pipeline::write(args),
        Command::Health(args) => health::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Import(args) => import::run(args),
        Command::Retain(args) => retain::run(args),
        Command::Compact(args) => compact::run(args),
        Command::CleanupUploads(args) => cleanup_uploads::run(args),
        Command::Maintain(args) => maintain::run(args),
        Command::Generate(args) => generate::run(args),
        Command::MockJetstream(args) => mock_jetstream::run(args),
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

/// Parses the command line, with settings from a TOML file (`--config FILE` or
/// `FIREHOSE_CONFIG`) as the lowest layer: flags override the environment, which overrides the
/// file, which overrides the built-in defaults. The file's keys are the flags' long names.
fn parse_cli() -> Result<Cli, Failure> {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let mut command = Cli::command();
    if let Some(path) = config_path(&args) {
        command = firehose_pipeline::cli::settings_file::apply(command, &path)
            .map_err(|e| Failure::Usage(e.to_string()))?;
    }
    let matches = command.get_matches_from(args);
    Cli::from_arg_matches(&matches).map_err(|e| Failure::Usage(e.to_string()))
}

/// The value of `--config` on the command line, else of `FIREHOSE_CONFIG`.
fn config_path(args: &[std::ffi::OsString]) -> Option<std::path::PathBuf> {
    let mut iter = args.iter().skip(1);
    while let Some(arg) = iter.next() {
        let arg = arg.to_string_lossy();
        if arg == "--config" {
            return iter.next().map(std::path::PathBuf::from);
        }
        if let Some(path) = arg.strip_prefix("--config=") {
            return Some(path.into());
        }
    }
    std::env::var_os("FIREHOSE_CONFIG")
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
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
    runtime.block_on(open_storage_async(location))
}

/// [`open_storage`] from async code.
async fn open_storage_async(location: &str) -> Result<Arc<dyn Storage>, Failure> {
    firehose_sink::open(location)
        .await
        .map_err(|e| Failure::Usage(e.to_string()))
}

/// A size flag: `100MB` (10^6), `128MiB` or `128M` (2^20), any case (the rule of
/// `firehose_core::units`).
fn parse_size<T: TryFrom<u64>>(text: &str) -> Result<T, String> {
    let size = firehose_core::units::parse_size(text).map_err(|e| e.to_string())?;
    T::try_from(size).map_err(|_| format!("{text:?} is too large"))
}
