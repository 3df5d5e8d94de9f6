//! Typed queries: arguments become DataFusion expressions, never SQL text.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::functions::core::expr_fn::coalesce;
use datafusion::functions::string::expr_fn::concat;
use datafusion::functions::unicode::expr_fn::character_length;
use datafusion::functions_aggregate::expr_fn::{avg, count, count_distinct, max, min};
use datafusion::functions_nested::expr_fn::array_has;
use datafusion::logical_expr::{Expr, cast, col, lit};
use firehose_core::{HOUR_US, Hour, Table};

use crate::top::top_values;
use crate::{Dataset, EVENTS_VIEW, Error, Result, Rows};

const DAY_US: i64 = 24 * HOUR_US;

/// Ranges spanning more days than this get a year predicate instead of one per day.
const MAX_DAY_TERMS: i64 = 400;

/// Most words a text search takes.
const MAX_SEARCH_TERMS: usize = 16;

/// A half-open range of event time, `[start_us, end_us)` in microseconds since the epoch
/// (Jetstream's `time_us`, which also decides the partition).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    /// First microsecond in the range.
    pub start_us: i64,
    /// First microsecond after the range.
    pub end_us: i64,
}

impl TimeRange {
    /// `[start_us, end_us)`; refused when empty.
    pub fn new(start_us: i64, end_us: i64) -> Result<Self> {
        if start_us >= end_us {
            return Err(Error::InvalidArgument {
                what: "time range",
                reason: format!("the start ({start_us}) must come before the end ({end_us})"),
            });
        }
        Ok(TimeRange { start_us, end_us })
    }

    /// The UTC day `YYYY-MM-DD`.
    ///
    /// ```
    /// use firehose_query::TimeRange;
    /// let day = TimeRange::parse_day("2026-11-20").unwrap();
    /// assert_eq!(day.end_us - day.start_us, 86_400_000_000);
    /// assert!(TimeRange::parse_day("2026-02-30").is_err());
    /// ```
    pub fn parse_day(text: &str) -> Result<Self> {
        let start = parse_time(text)?;
        if text.len() != 10 {
            return Err(invalid_time(text));
        }
        TimeRange::new(start, start + DAY_US)
    }

    /// From `from` (inclusive) to `to` (exclusive), each `YYYY-MM-DD`,
    /// `YYYY-MM-DDTHH[:MM[:SS]]` or with a trailing `Z`, all UTC.
    pub fn parse(from: &str, to: &str) -> Result<Self> {
        TimeRange::new(parse_time(from)?, parse_time(to)?)
    }

    /// A day, or a start and an end: the one way a range is given, as the CLI's `--day` or
    /// `--from` and `--to`, and the HTTP API's `day=` or `from=` and `to=`.
    ///
    /// ```
    /// use firehose_query::TimeRange;
    /// let day = TimeRange::from_parts(Some("2026-11-20"), None, None).unwrap();
    /// let same = TimeRange::from_parts(None, Some("2026-11-20"), Some("2026-11-21")).unwrap();
    /// assert_eq!(day, same);
    /// assert!(TimeRange::from_parts(Some("2026-11-20"), Some("2026-11-20"), None).is_err());
    /// ```
    pub fn from_parts(day: Option<&str>, from: Option<&str>, to: Option<&str>) -> Result<Self> {
        match (day, from, to) {
            (Some(day), None, None) => TimeRange::parse_day(day),
            (None, Some(from), Some(to)) => TimeRange::parse(from, to),
            _ => Err(Error::InvalidArgument {
                what: "time range",
                reason: "give a day (YYYY-MM-DD), or a start and an end".into(),
            }),
        }
    }

    /// `time_us` in range, and the partition predicate that prunes the files of other hours.
    pub(crate) fn predicate(&self) -> Expr {
        col("time_us")
            .gt_eq(lit(self.start_us))
            .and(col("time_us").lt(lit(self.end_us)))
            .and(self.partition_predicate())
    }

    /// Equality on `year`, `month` and `day` for each day of the range (with bounds on `hour`
    /// for a partial first or last day). One day gives plain equalities, which DataFusion also
    /// turns into a listing prefix (`year=2026/month=11/day=20`).
    pub(crate) fn partition_predicate(&self) -> Expr {
        let first = Hour::of(self.start_us);
        let last = Hour::of(self.end_us - 1);
        let first_day = self.start_us.div_euclid(DAY_US);
        let last_day = (self.end_us - 1).div_euclid(DAY_US);
        if last_day - first_day >= MAX_DAY_TERMS {
            return col("year")
                .gt_eq(lit(format!("{:04}", first.year)))
                .and(col("year").lt_eq(lit(format!("{:04}", last.year))));
        }
        let mut any: Option<Expr> = None;
        for d in first_day..=last_day {
            let h = Hour::of(d * DAY_US);
            let mut term = col("year")
                .eq(lit(format!("{:04}", h.year)))
                .and(col("month").eq(lit(format!("{:02}", h.month))))
                .and(col("day").eq(lit(format!("{:02}", h.day))));
            let low = if d == first_day { first.hour } else { 0 };
            let high = if d == last_day { last.hour } else { 23 };
            if low == high {
                term = term.and(col("hour").eq(lit(format!("{low:02}"))));
            } else {
                if low > 0 {
                    term = term.and(col("hour").gt_eq(lit(format!("{low:02}"))));
                }
                if high < 23 {
                    term = term.and(col("hour").lt_eq(lit(format!("{high:02}"))));
                }
            }
            any = Some(match any {
                None => term,
                Some(e) => e.or(term),
            });
        }
        any.unwrap_or_else(|| lit(false))
    }
}

fn invalid_time(text: &str) -> Error {
    Error::InvalidArgument {
        what: "time",
        reason: format!("{text:?} is not a UTC time like 2026-11-20 or 2026-11-20T05:30:00Z"),
    }
}

/// Parses `YYYY-MM-DD[THH[:MM[:SS]]][Z]` as UTC microseconds.
fn parse_time(text: &str) -> Result<i64> {
    let bad = || invalid_time(text);
    let t = text.strip_suffix('Z').unwrap_or(text);
    let (date, time) = t.split_once('T').unwrap_or((t, ""));
    let number = |s: &str, len: usize| -> Result<u32> {
        if s.len() != len || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        s.parse().map_err(|_| bad())
    };
    let mut parts = date.split('-');
    let (Some(y), Some(m), Some(d), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    let (year, month, day) = (number(y, 4)?, number(m, 2)?, number(d, 2)?);
    let mut clock = [0u32; 3];
    if !time.is_empty() {
        for (i, p) in time.split(':').enumerate() {
            *clock.get_mut(i).ok_or_else(bad)? = number(p, 2)?;
        }
    }
    let [hour, minute, second] = clock;
    if !(1..=12).contains(&month) || day == 0 || hour > 23 || minute > 59 || second > 59 {
        return Err(bad());
    }
    let h = Hour {
        year: i32::try_from(year).map_err(|_| bad())?,
        month: month as u8,
        day: day as u8,
        hour: hour as u8,
    };
    let start = h.start_us();
    // Rejects days past the end of the month (2026-02-30).
    if Hour::of(start) != h {
        return Err(bad());
    }
    Ok(start + i64::from(minute) * 60_000_000 + i64::from(second) * 1_000_000)
}

/// What [`Dataset::posts`] selects.
#[derive(Debug, Clone)]
pub struct PostQuery {
    /// Event time range.
    pub range: TimeRange,
    /// Only posts by this account (DID).
    pub author: Option<String>,
    /// Only posts that list this language (e.g. `en`).
    pub lang: Option<String>,
    /// Only replies (`true`) or only top-level posts (`false`).
    pub is_reply: Option<bool>,
    /// Only posts whose text contains this, ignoring case.
    pub text_contains: Option<String>,
    /// Most posts returned (newest first).
    pub limit: usize,
}

impl PostQuery {
    /// Every post in `range`, up to 100.
    pub fn new(range: TimeRange) -> Self {
        PostQuery {
            range,
            author: None,
            lang: None,
            is_reply: None,
            text_contains: None,
            limit: 100,
        }
    }
}

/// What [`Dataset::top_posts`] ranks by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engagement {
    /// Likes (`app.bsky.feed.like` creates).
    Likes,
    /// Reposts (`app.bsky.feed.repost` creates).
    Reposts,
}

impl Engagement {
    fn table(self) -> Table {
        match self {
            Engagement::Likes => Table::Likes,
            Engagement::Reposts => Table::Reposts,
        }
    }

    fn column(self) -> &'static str {
        match self {
            Engagement::Likes => "likes",
            Engagement::Reposts => "reposts",
        }
    }
}

/// `%term%` for ILIKE, with the pattern characters in `term` escaped (backslash is the
/// escape character).
fn contains_pattern(term: &str) -> String {
    let mut p = String::with_capacity(term.len() + 2);
    p.push('%');
    for c in term.chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

fn text_contains(term: &str) -> Expr {
    col("text").ilike(lit(contains_pattern(term)))
}

fn created() -> Expr {
    col("operation").eq(lit("create"))
}

fn timestamp(e: Expr) -> Expr {
    cast(
        e,
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
    )
}

/// `at://did/app.bsky.feed.post/rkey`.
fn post_uri() -> Expr {
    concat(vec![
        lit("at://"),
        col("did"),
        lit("/app.bsky.feed.post/"),
        col("rkey"),
    ])
}

fn plan_error(e: datafusion::error::DataFusionError) -> Error {
    Error::from_planning(e)
}

impl Dataset {
    /// Posts created in a time range, newest first, with optional filters (author, language,
    /// replies or not, text containing a string, ignoring case). Columns: `uri, did, time,
    /// created_at, text, langs, reply_parent_uri`.
    pub async fn posts(&self, q: &PostQuery) -> Result<Rows> {
        let mut filter = q.range.predicate().and(created());
        if let Some(author) = &q.author {
            filter = filter.and(col("did").eq(lit(author.as_str())));
        }
        if let Some(lang) = &q.lang {
            filter = filter.and(array_has(col("langs"), lit(lang.as_str())));
        }
        match q.is_reply {
            Some(true) => filter = filter.and(col("reply_parent_uri").is_not_null()),
            Some(false) => filter = filter.and(col("reply_parent_uri").is_null()),
            None => {}
        }
        if let Some(text) = &q.text_contains {
            filter = filter.and(text_contains(text));
        }
        self.post_list(filter, q.limit).await
    }

    /// Posts created in a time range whose text holds every word of `query` (ignoring case;
    /// quotes and SQL pattern characters are plain text), newest first.
    pub async fn search_posts(&self, query: &str, range: TimeRange, limit: usize) -> Result<Rows> {
        let terms: Vec<&str> = query.split_whitespace().collect();
        if terms.is_empty() || terms.len() > MAX_SEARCH_TERMS {
            return Err(Error::InvalidArgument {
                what: "search",
                reason: format!("give between 1 and {MAX_SEARCH_TERMS} words"),
            });
        }
        let mut filter = range.predicate().and(created());
        for term in terms {
            filter = filter.and(text_contains(term));
        }
        self.post_list(filter, limit).await
    }

    async fn post_list(&self, filter: Expr, limit: usize) -> Result<Rows> {
        let df = self
            .table(Table::Posts.name())
            .await?
            .filter(filter)
            .and_then(|df| {
                df.sort(vec![
                    col("time_us").sort(false, false),
                    col("did").sort(true, false),
                    col("rkey").sort(true, false),
                ])
            })
            .and_then(|df| df.limit(0, Some(limit)))
            .and_then(|df| {
                df.select(vec![
                    post_uri().alias("uri"),
                    col("did"),
                    timestamp(col("time_us")).alias("time"),
                    col("created_at"),
                    col("text"),
                    col("langs"),
                    col("reply_parent_uri"),
                ])
            })
            .map_err(plan_error)?;
        self.collect(df).await
    }

    /// Per UTC day in the range: `day` (`YYYY-MM-DD`), `posts` (created), `unique_authors`,
    /// `avg_text_length` (in characters).
    pub async fn daily_stats(&self, range: TimeRange) -> Result<Rows> {
        let df = self
            .table(Table::Posts.name())
            .await?
            .filter(range.predicate().and(created()))
            .and_then(|df| {
                df.aggregate(
                    vec![col("year"), col("month"), col("day")],
                    vec![
                        count(lit(1)).alias("posts"),
                        count_distinct(col("did")).alias("unique_authors"),
                        avg(character_length(col("text"))).alias("avg_text_length"),
                    ],
                )
            })
            .and_then(|df| {
                df.select(vec![
                    concat(vec![
                        col("year"),
                        lit("-"),
                        col("month"),
                        lit("-"),
                        col("day"),
                    ])
                    .alias("day"),
                    col("posts"),
                    col("unique_authors"),
                    col("avg_text_length"),
                ])
            })
            .and_then(|df| df.sort(vec![col("day").sort(true, false)]))
            .map_err(plan_error)?;
        self.collect(df).await
    }

    /// Events per collection per hour, over every table: `hour` (its start), `collection`
    /// (`identity` and `account` for those events), `events`.
    pub async fn events_per_hour(&self, range: TimeRange) -> Result<Rows> {
        let df = self
            .table(EVENTS_VIEW)
            .await?
            .filter(range.predicate())
            .and_then(|df| {
                df.aggregate(
                    vec![
                        (col("time_us") / lit(HOUR_US)).alias("hour_index"),
                        coalesce(vec![col("collection"), col("kind")]).alias("collection"),
                    ],
                    vec![count(lit(1)).alias("events")],
                )
            })
            .and_then(|df| {
                df.select(vec![
                    timestamp(col("hour_index") * lit(HOUR_US)).alias("hour"),
                    col("collection"),
                    col("events"),
                ])
            })
            .and_then(|df| {
                df.sort(vec![
                    col("hour").sort(true, false),
                    col("collection").sort(true, false),
                ])
            })
            .map_err(plan_error)?;
        self.collect(df).await
    }

    /// The posts most liked (or reposted) by events in the range: `subject_uri` and the count
    /// of creates (`likes` or `reposts`), highest first, ties by URI.
    pub async fn top_posts(&self, by: Engagement, range: TimeRange, limit: usize) -> Result<Rows> {
        let df = self
            .table(by.table().name())
            .await?
            // No `subject_uri IS NOT NULL` here: the count skips nulls, and a filter on the
            // column would make the Parquet reader copy every URI once more.
            .filter(range.predicate().and(created()))
            .and_then(|df| df.select(vec![col("subject_uri")]))
            .map_err(plan_error)?;
        // Counted in one pass by `top`, not by a GROUP BY (see there why). One row past the
        // cap is enough to refuse an answer that would pass it.
        let limit = limit.min(self.options().max_rows.saturating_add(1));
        let pool = Arc::clone(&self.context().runtime_env().memory_pool);
        let rows = self
            .execute(async move { top_values(df, &pool, limit, "subject_uri", by.column()).await })
            .await?;
        self.capped(rows)
    }

    /// What one account did in the range, per collection and operation: `collection`,
    /// `operation` (null for identity and account events), `events`, `first`, `last`.
    pub async fn account_activity(&self, did: &str, range: TimeRange) -> Result<Rows> {
        let df = self
            .table(EVENTS_VIEW)
            .await?
            .filter(range.predicate().and(col("did").eq(lit(did))))
            .and_then(|df| {
                df.aggregate(
                    vec![
                        coalesce(vec![col("collection"), col("kind")]).alias("collection"),
                        col("operation"),
                    ],
                    vec![
                        count(lit(1)).alias("events"),
                        min(col("time_us")).alias("first_us"),
                        max(col("time_us")).alias("last_us"),
                    ],
                )
            })
            .and_then(|df| {
                df.select(vec![
                    col("collection"),
                    col("operation"),
                    col("events"),
                    timestamp(col("first_us")).alias("first"),
                    timestamp(col("last_us")).alias("last"),
                ])
            })
            .and_then(|df| {
                df.sort(vec![
                    col("events").sort(false, false),
                    col("collection").sort(true, false),
                    col("operation").sort(true, true),
                ])
            })
            .map_err(plan_error)?;
        self.collect(df).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse() {
        let day = TimeRange::parse_day("2026-11-20").unwrap();
        assert_eq!(Hour::of(day.start_us).day, 20);
        assert_eq!(day.end_us - day.start_us, DAY_US);
        assert_eq!(
            parse_time("2026-11-20T05:30:15Z").unwrap(),
            day.start_us + 5 * HOUR_US + 30 * 60_000_000 + 15_000_000
        );
        assert_eq!(
            parse_time("2026-11-20T05").unwrap(),
            day.start_us + 5 * HOUR_US
        );
        for bad in [
            "2026-11-31",
            "2026-13-01",
            "2026-1-01",
            "26-11-20",
            "2026-11-20T24",
            "2026-11-20T05:60",
            "2026-11-20T05:00:00:00",
            "",
            "yesterday",
            "2026-11-20'; DROP TABLE posts; --",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
        assert!(TimeRange::parse("2026-11-21", "2026-11-20").is_err());
    }

    #[test]
    fn one_day_is_plain_equalities() {
        let day = TimeRange::parse_day("2026-11-20").unwrap();
        assert_eq!(
            day.partition_predicate().to_string(),
            "year = Utf8(\"2026\") AND month = Utf8(\"11\") AND day = Utf8(\"20\")"
        );
        let hours = TimeRange::parse("2026-11-20T05", "2026-11-21T02").unwrap();
        let p = hours.partition_predicate().to_string();
        assert!(p.contains("hour >= Utf8(\"05\")"), "{p}");
        assert!(
            p.contains("day = Utf8(\"21\") AND hour <= Utf8(\"01\")"),
            "{p}"
        );
    }

    #[test]
    fn patterns_escape_wildcards() {
        assert_eq!(contains_pattern("50%_off\\"), "%50\\%\\_off\\\\%");
        assert_eq!(contains_pattern("it's"), "%it's%");
    }
}
