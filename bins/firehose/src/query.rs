//! `firehose query`: read-only SQL and the typed calls over a dataset.

use firehose_core::units::parse_duration;
use std::io::IsTerminal;
use std::time::Duration;

use firehose_query::cli::TypedCall;
use firehose_query::output::{self, Format};
use firehose_query::{Dataset, Error, QueryOptions};

use crate::{Failure, parse_size};

/// Query a dataset: one read-only SQL statement (SELECT, WITH or EXPLAIN) over the tables
/// `posts, likes, reposts, follows, blocks, listitems, profiles, records, identity, account`
/// and the view `events`, or one of the typed calls below. Duplicate events are removed.
/// Exit code 0 on success, 1 when the query failed while running, 2 on bad usage or a
/// refused query.
#[derive(Debug, clap::Args)]
#[command(subcommand_negates_reqs = true)]
pub(crate) struct Args {
    #[command(flatten)]
    common: Common,
    /// The SQL statement.
    #[arg(required = true)]
    sql: Option<String>,
    #[command(subcommand)]
    call: Option<TypedCall>,
}

/// Options every form takes.
#[derive(Debug, clap::Args)]
pub(crate) struct Common {
    /// The dataset: a local directory, or `s3://bucket/prefix` (endpoint, region and
    /// credentials from `AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`).
    #[arg(long, global = true, env = "FIREHOSE_DATA")]
    data: Option<String>,
    /// Output: `table` for people; `csv`, `json` (one object per line), `json-array`, `arrow`
    /// (IPC stream) or `parquet` for programs.
    #[arg(long, global = true, default_value = "table")]
    format: String,
    /// Write the result to this file instead of standard output.
    #[arg(long, short, global = true)]
    output: Option<std::path::PathBuf>,
    /// Cancel the query after this long (e.g. `30s`, `5m`).
    #[arg(long, global = true, default_value = "60s", value_parser = parse_duration)]
    timeout: Duration,
    /// Memory the query may use (e.g. `512M`, `2G`).
    #[arg(long, global = true, default_value = "2G", value_parser = parse_size::<usize>)]
    memory_limit: usize,
    /// Most rows returned; a query returning more fails (add a LIMIT).
    #[arg(long, global = true, default_value_t = 10_000_000)]
    max_rows: usize,
}

/// A query's error as the command's outcome: refused (exit 2) or failed (exit 1).
pub(crate) fn failure(e: Error) -> Failure {
    if e.is_refused() {
        Failure::Usage(e.to_string())
    } else {
        Failure::Data(e.to_string())
    }
}

/// A multi-threaded runtime: DataFusion runs a query's partitions in parallel.
pub(crate) fn query_runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Usage(format!("cannot start the runtime: {e}")))
}

pub(crate) fn run(args: Args) -> Result<(), Failure> {
    let common = args.common;
    let data = common
        .data
        .clone()
        .ok_or_else(|| Failure::Usage("--data DIR|s3://bucket/prefix is required".into()))?;
    let format: Format = common.format.parse().map_err(failure)?;
    if common.output.is_none()
        && matches!(format, Format::Arrow | Format::Parquet)
        && std::io::stdout().is_terminal()
    {
        return Err(Failure::Usage(format!(
            "{format} is binary: redirect standard output or use --output FILE"
        )));
    }
    let options = QueryOptions {
        timeout: common.timeout,
        memory_limit: common.memory_limit,
        max_rows: common.max_rows,
        ..QueryOptions::default()
    };
    let runtime = query_runtime()?;
    let rows = runtime.block_on(async {
        let ds = Dataset::open(&data, options).await?;
        match (args.call, args.sql) {
            (Some(call), _) => call.run(&ds).await,
            (None, Some(sql)) => ds.sql(&sql).await,
            (None, None) => Err(Error::InvalidArgument {
                what: "query",
                reason: "give a SQL statement or a typed call".into(),
            }),
        }
    });
    let rows = rows.map_err(failure)?;
    output::write_to(format, &rows, common.output.as_deref())
        .map_err(|e| Failure::Usage(e.to_string()))
}
