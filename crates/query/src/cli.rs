//! The typed calls as command-line flags (feature `cli`): `firehose query stats|posts|…` is
//! built from them, and an embedder's own command can be too.
//!
//! ```
//! use clap::Parser;
//! use firehose_query::cli::TypedCall;
//!
//! #[derive(Parser)]
//! struct Ask {
//!     #[command(subcommand)]
//!     call: TypedCall,
//! }
//! let ask = Ask::parse_from(["ask", "top", "--by", "reposts", "--day", "2026-11-20"]);
//! assert!(matches!(ask.call, TypedCall::Top { limit: 20, .. }));
//! ```

use crate::{Dataset, Engagement, PostQuery, Result, Rows, TimeRange};

/// The time range of a typed call: `--day`, or `--from` and `--to`.
#[derive(Debug, clap::Args)]
pub struct Range {
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
    /// The range the flags give.
    pub fn time_range(&self) -> Result<TimeRange> {
        TimeRange::from_parts(
            self.day.as_deref(),
            self.from.as_deref(),
            self.to.as_deref(),
        )
    }
}

/// One typed call of [`Dataset`], with its parameters.
#[derive(Debug, clap::Subcommand)]
pub enum TypedCall {
    /// Per day: posts created, unique authors, average text length (characters).
    Stats {
        /// The time range.
        #[command(flatten)]
        range: Range,
    },
    /// Posts created in the range, newest first.
    Posts {
        /// The time range.
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
        /// The time range.
        #[command(flatten)]
        range: Range,
        /// Most posts shown.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Events per collection per hour.
    Hourly {
        /// The time range.
        #[command(flatten)]
        range: Range,
    },
    /// The most liked (or reposted) posts by likes (reposts) made in the range.
    Top {
        /// `likes` or `reposts`.
        #[arg(long, default_value = "likes", value_parser = ["likes", "reposts"])]
        by: String,
        /// The time range.
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
        /// The time range.
        #[command(flatten)]
        range: Range,
    },
}

impl TypedCall {
    /// Runs the call on `ds`.
    pub async fn run(self, ds: &Dataset) -> Result<Rows> {
        match self {
            TypedCall::Stats { range } => ds.daily_stats(range.time_range()?).await,
            TypedCall::Posts {
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
            TypedCall::Search { text, range, limit } => {
                ds.search_posts(&text, range.time_range()?, limit).await
            }
            TypedCall::Hourly { range } => ds.events_per_hour(range.time_range()?).await,
            TypedCall::Top { by, range, limit } => {
                let by = if by == "reposts" {
                    Engagement::Reposts
                } else {
                    Engagement::Likes
                };
                ds.top_posts(by, range.time_range()?, limit).await
            }
            TypedCall::Account { did, range } => {
                ds.account_activity(&did, range.time_range()?).await
            }
        }
    }
}
