//! `firehose query`: read-only SQL and the typed calls over a dataset.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use firehose_query::output::{self, Format};
use firehose_query::{Dataset, Engagement, Error, PostQuery, QueryOptions, Rows, TimeRange};

use crate::{Failure, parse_age};

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
    call: Option<Call>,
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
    #[arg(long, global = true, default_value = "60s", value_parser = parse_age)]
    timeout: Duration,
    /// Memory the query may use (e.g. `512M`, `2G`).
    #[arg(long, global = true, default_value = "2G", value_parser = parse_size)]
    memory_limit: usize,
    /// Most rows returned; a query returning more fails (add a LIMIT).
    #[arg(long, global = true, default_value_t = 10_000_000)]
    max_rows: usize,
}

/// The time range of a typed call: `--day`, or `--from` and `--to`.
#[derive(Debug, clap::Args)]
pub(crate) struct Range {
    /// A UTC day, `YYYY-MM-DD`.
    #[arg(long, conflicts_with_all = ["from", "to"], required_unless_present_all = ["from", "to"])]
    day: Option<String>,
    /// Start (inclusive), `YYYY-MM-DD[THH[:MM[:SS]]]`, UTC.
    #[arg(long, requires = "to")]
    from: Option<String>,
    /// End (exclusive), `YYYY-MM-DD[THH[:MM[:SS]]]`, UTC.
    #[arg(long, requires = "from")]
    to: Option<String>,
}

impl Range {
    fn time_range(&self) -> Result<TimeRange, Error> {
        match (&self.day, &self.from, &self.to) {
            (Some(day), _, _) => TimeRange::parse_day(day),
            (None, Some(from), Some(to)) => TimeRange::parse(from, to),
            _ => Err(Error::InvalidArgument {
                what: "time range",
                reason: "give --day, or --from and --to".into(),
            }),
        }
    }
}

#[derive(Debug, clap::Subcommand)]
enum Call {
    /// Per day: posts created, unique authors, average text length (characters).
    Stats {
        #[command(flatten)]
        range: Range,
    },
    /// Posts created in the range, newest first.
    Posts {
        #[command(flatten)]
        range: Range,
        /// Only this author (DID).
        #[arg(long)]
        author: Option<String>,
        /// Only posts in this language (e.g. `en`).
        #[arg(long)]
        lang: Option<String>,
        /// Only replies.
        #[arg(long, conflicts_with = "no_replies")]
        replies: bool,
        /// Only top-level posts.
        #[arg(long)]
        no_replies: bool,
        /// Only posts whose text contains this (ignoring case).
        #[arg(long)]
        contains: Option<String>,
        /// Most posts shown.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Posts whose text holds every word (ignoring case), newest first.
    Search {
        /// The words.
        text: String,
        #[command(flatten)]
        range: Range,
        /// Most posts shown.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Events per collection per hour.
    Hourly {
        #[command(flatten)]
        range: Range,
    },
    /// The most liked (or reposted) posts by likes (reposts) made in the range.
    Top {
        /// `likes` or `reposts`.
        #[arg(long, default_value = "likes", value_parser = ["likes", "reposts"])]
        by: String,
        #[command(flatten)]
        range: Range,
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// What one account did: events per collection and operation, first and last.
    Account {
        /// The account's DID.
        did: String,
        #[command(flatten)]
        range: Range,
    },
}

/// A size flag in bytes (see [`crate::parse_size`]).
pub(crate) fn parse_size(text: &str) -> Result<usize, String> {
    let size = crate::parse_size(text)?;
    usize::try_from(size).map_err(|_| format!("{text:?} is too large"))
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
            (Some(call), _) => typed(&ds, call).await,
            (None, Some(sql)) => ds.sql(&sql).await,
            (None, None) => Err(Error::InvalidArgument {
                what: "query",
                reason: "give a SQL statement or a typed call".into(),
            }),
        }
    });
    let rows = rows.map_err(failure)?;
    let written = match &common.output {
        Some(path) => std::fs::File::create(path)
            .map_err(|e| Error::Output(format!("{}: {e}", path.display())))
            .and_then(|f| output::write(format, &rows, std::io::BufWriter::new(f))),
        None => {
            let mut out = std::io::BufWriter::new(std::io::stdout());
            output::write(format, &rows, &mut out).and_then(|()| {
                out.flush()
                    .map_err(|e| Error::Output(format!("standard output: {e}")))
            })
        }
    };
    written.map_err(|e| Failure::Usage(e.to_string()))
}

async fn typed(ds: &Dataset, call: Call) -> Result<Rows, Error> {
    match call {
        Call::Stats { range } => ds.daily_stats(range.time_range()?).await,
        Call::Posts {
            range,
            author,
            lang,
            replies,
            no_replies,
            contains,
            limit,
        } => {
            let q = PostQuery {
                range: range.time_range()?,
                author,
                lang,
                is_reply: match (replies, no_replies) {
                    (true, _) => Some(true),
                    (_, true) => Some(false),
                    _ => None,
                },
                text_contains: contains,
                limit,
            };
            ds.posts(&q).await
        }
        Call::Search { text, range, limit } => {
            ds.search_posts(&text, range.time_range()?, limit).await
        }
        Call::Hourly { range } => ds.events_per_hour(range.time_range()?).await,
        Call::Top { by, range, limit } => {
            let by = if by == "reposts" {
                Engagement::Reposts
            } else {
                Engagement::Likes
            };
            ds.top_posts(by, range.time_range()?, limit).await
        }
        Call::Account { did, range } => ds.account_activity(&did, range.time_range()?).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("2T"), Ok(2 << 40));
        for bad in ["", "G", "-1M", "1.5G", "99999999999999999999G"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
