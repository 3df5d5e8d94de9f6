//! Generates one day of events at a given volume, writes it as the sink does, and times every
//! typed call and a few SQL queries on it: first on the dataset as the sink leaves it before
//! compaction (a file per table and hour every five minutes, as the sink rolls its files, each
//! marked duplicate-free, as the pipeline's writer marks the batches its replay filter
//! vouched for, and joined as the writer joins its own files: four of a partition into one,
//! and all of them once the hour has closed; with `--replays`, unmarked files plus a replay of a few seconds once an hour,
//! as an older writer or another tool leaves them after a Jetstream reconnect); then on a copy with
//! all but the last two hours compacted (as the hourly `firehose compact` timer of the
//! deployment leaves the current day); then on a compacted copy (`firehose_sink::compact`, as
//! `firehose compact` leaves a day once its hours have closed).
//!
//! ```sh
//! cargo bench -p firehose-query --bench day -- --events 8100000   # the seed's volume
//! cargo bench -p firehose-query --bench day -- --events 29000000  # 2026's volume
//! ```
//!
//! Options: `--events N` (default 8,100,000), `--dir PATH` (default
//! `/tmp/firehose-query-bench-N`; an existing dataset there is reused, and its copies go to
//! `PATH-live` and `PATH-compacted`), `--runs R` (default 3; the best and the first run are printed), `--passes P` (default 1:
//! the layouts in turn P times, then each call's median, fastest and slowest best of runs, so
//! that a slow spell of a shared machine does not fall on one layout only),
//! `--batch-seconds S` (default 300: seconds of events per written batch), `--layout
//! raw|live|compacted|all` (default all), `--no-dedup-too` to skip the comparison without
//! de-duplication on the raw layout, `--only TEXT` to time only the calls whose name holds
//! `TEXT` (e.g. `--only "top liked"`, for a profile), `--sql QUERY` to time that query
//! instead of the suite (and print its result), `--replays` for the unmarked layout with
//! replays (its default directory ends in `-replays`).
#![allow(clippy::expect_used)] // a benchmark stops at the first failure, like a test

use std::sync::Arc;
use std::time::{Duration, Instant};

use firehose_core::Event;
use firehose_query::{Dataset, Engagement, PostQuery, QueryOptions, Rows, TimeRange};
use firehose_sink::{
    BatchName, CompactOptions, LocalStorage, MergePolicy, OwnFiles, ParquetOptions, Storage,
    Writer, compact, merge_files,
};
use firehose_synth::{Config, Generator};

// The allocator of `firehose serve` and `firehose query`.
use firehose_allocator as _;

const DAY_US: i64 = 86_400_000_000;
const HOUR_US: i64 = 3_600_000_000;
/// 2026-11-20T00:00:00Z.
const START_US: i64 = 1_763_596_800_000_000 + 365 * DAY_US;

struct Args {
    events: u64,
    dir: std::path::PathBuf,
    runs: usize,
    passes: usize,
    compare: bool,
    batch_seconds: f64,
    raw: bool,
    live: bool,
    compacted: bool,
    only: Option<String>,
    sql: Option<String>,
    replays: bool,
}

fn args() -> Args {
    let mut events = 8_100_000u64;
    let mut dir = None;
    let mut runs = 3;
    let mut passes = 1;
    let mut compare = true;
    let mut batch_seconds = 300.0;
    let (mut raw, mut live, mut compacted) = (true, true, true);
    let mut only = None;
    let mut sql = None;
    let mut replays = false;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--events" => events = it.next().and_then(|v| v.parse().ok()).unwrap_or(events),
            "--dir" => dir = it.next().map(Into::into),
            "--runs" => runs = it.next().and_then(|v| v.parse().ok()).unwrap_or(runs),
            "--passes" => passes = it.next().and_then(|v| v.parse().ok()).unwrap_or(passes),
            "--no-dedup-too" => compare = false,
            "--replays" => replays = true,
            "--only" => only = it.next(),
            "--sql" => sql = it.next(),
            "--batch-seconds" => {
                batch_seconds = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(batch_seconds);
            }
            "--layout" => match it.next().as_deref() {
                Some("raw") => (raw, live, compacted) = (true, false, false),
                Some("live") => (raw, live, compacted) = (false, true, false),
                Some("compacted") => (raw, live, compacted) = (false, false, true),
                _ => (raw, live, compacted) = (true, true, true),
            },
            // cargo bench passes --bench.
            _ => {}
        }
    }
    let suffix = if replays { "-replays" } else { "" };
    let dir = dir.unwrap_or_else(|| format!("/tmp/firehose-query-bench-{events}{suffix}").into());
    Args {
        events,
        dir,
        runs: runs.max(1),
        passes,
        compare,
        batch_seconds,
        raw,
        live,
        compacted,
        only,
        sql,
        replays,
    }
}

async fn generate(args: &Args) {
    let marker = args.dir.join(".complete");
    if marker.exists() {
        println!("reusing the dataset in {}", args.dir.display());
        return;
    }
    let _ = std::fs::remove_dir_all(&args.dir);
    let rate = args.events as f64 / 86_400.0;
    println!(
        "generating {} events over one day ({rate:.1}/s) into {}",
        args.events,
        args.dir.display()
    );
    let started = Instant::now();
    let writer = Writer::new(
        Arc::new(LocalStorage::new(&args.dir)),
        ParquetOptions {
            duplicate_free: !args.replays,
            ..ParquetOptions::default()
        },
    );
    let mut generator = Generator::new(Config {
        seed: 2026,
        rate,
        start_time_us: START_US,
        ..Config::default()
    });
    // The sink closes a file per table and hour every five minutes at these volumes.
    let batch = ((rate * args.batch_seconds) as u64).max(1);
    let mut written = 0u64;
    let mut files = 0usize;
    let mut bytes = 0u64;
    let mut replayed = 0u64;
    let mut next_replay_us = START_US + HOUR_US / 2;
    // The pipeline's writer joins its own marked files of a partition as they accumulate and
    // once its hour has closed (after the grace of three minutes).
    let mut own = OwnFiles::new(MergePolicy::default());
    let storage = LocalStorage::new(&args.dir);
    let mut joins = 0usize;
    while written < args.events {
        let n = batch.min(args.events - written);
        let events: Vec<Event<'static>> = (0..n).map(|_| generator.next_event()).collect();
        let name = BatchName::new(
            &format!("{written:012}"),
            &format!("{:012}", written + n - 1),
        )
        .expect("valid batch name");
        let committed = writer.write(&name, &events).await.expect("write");
        files += committed.files.len();
        bytes += committed.bytes();
        written += n;
        if !args.replays {
            own.add(&committed.files);
            let newest_us = events.last().map_or(i64::MIN, |e| e.time_us);
            for job in own.due(newest_us - 180_000_000, true) {
                let output = merge_files(&storage, &job, writer.options())
                    .await
                    .expect("join");
                if let Some(output) = output {
                    own.merged(&job, output);
                    joins += 1;
                }
            }
        }
        // Once an hour a reconnect: the last three seconds delivered again, in a file of
        // their own.
        let last_us = events.last().map_or(0, |e| e.time_us);
        if args.replays && last_us >= next_replay_us {
            next_replay_us += HOUR_US;
            let again: Vec<Event<'static>> = events
                .iter()
                .filter(|e| e.time_us > last_us - 3_000_000)
                .cloned()
                .collect();
            let name = BatchName::new("replay", &format!("{written:012}")).expect("name");
            let committed = writer.write(&name, &again).await.expect("write");
            files += committed.files.len();
            bytes += committed.bytes();
            replayed += again.len() as u64;
        }
    }
    std::fs::write(&marker, b"").expect("marker");
    let mut left = storage.list("").await.expect("list");
    left.retain(|o| o.path.ends_with(".parquet"));
    println!(
        "wrote {written} events and {replayed} replayed again in {files} files, {:.1} MB, in {:.1} s; \
         {joins} joins left {} files, {:.1} MB",
        bytes as f64 / 1e6,
        started.elapsed().as_secs_f64(),
        left.len(),
        left.iter().map(|o| o.size).sum::<u64>() as f64 / 1e6,
    );
}

/// A copy of the dataset at `<dir>-<name>` with the hours that end by `closed_before_us`
/// compacted (made once, then reused).
async fn compacted_copy(args: &Args, name: &str, closed_before_us: i64) -> std::path::PathBuf {
    let dir = std::path::PathBuf::from(format!("{}-{name}", args.dir.display()));
    let marker = dir.join(".complete");
    if marker.exists() {
        println!("reusing the compacted dataset in {}", dir.display());
        return dir;
    }
    let _ = std::fs::remove_dir_all(&dir);
    copy_dir(&args.dir, &dir);
    let started = Instant::now();
    let storage = LocalStorage::new(&dir);
    let done = compact(
        &storage,
        closed_before_us,
        &CompactOptions::default(),
        |_| {},
    )
    .await
    .expect("compact");
    std::fs::write(&marker, b"").expect("marker");
    println!(
        "compacted {} partitions: {} files in, {} out, {} duplicates removed, {:.1} MB, in {:.1} s",
        done.partitions,
        done.files_in,
        done.files_out,
        done.duplicates,
        done.bytes_out as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    dir
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("create");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else if entry.file_name() != ".complete" {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

struct Timing {
    name: &'static str,
    first: Duration,
    best: Duration,
    rows: usize,
}

/// How each call is timed: how many runs, and which calls (`--only`, or `--sql` alone).
struct Plan<'a> {
    runs: usize,
    only: Option<&'a str>,
    sql: Option<&'a str>,
}

async fn time<F, Fut>(name: &'static str, plan: &Plan<'_>, mut f: F) -> Option<Timing>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = firehose_query::Result<Rows>>,
{
    if plan.only.is_some_and(|only| !name.contains(only)) {
        return None;
    }
    let runs = plan.runs;
    let mut first = None;
    let mut best = Duration::MAX;
    let mut rows = 0;
    for _ in 0..runs {
        let started = Instant::now();
        let result = f().await.unwrap_or_else(|e| panic!("{name}: {e}"));
        let took = started.elapsed();
        first.get_or_insert(took);
        best = best.min(took);
        rows = result.num_rows();
    }
    eprintln!(
        "  {name}: first {:.3} s, best {:.3} s, {rows} rows",
        first.unwrap_or_default().as_secs_f64(),
        best.as_secs_f64()
    );
    Some(Timing {
        name,
        first: first.unwrap_or_default(),
        best,
        rows,
    })
}

async fn suite(ds: &Dataset, plan: &Plan<'_>) -> Vec<Timing> {
    let mut out = Vec::new();
    if let Some(sql) = plan.sql {
        out.extend(time("SQL (--sql)", plan, || ds.sql(sql)).await);
        let rows = ds.sql(sql).await.expect("sql");
        let shown = datafusion::arrow::util::pretty::pretty_format_batches(&rows.batches);
        println!("{}", shown.expect("printable"));
        return out;
    }
    let day = TimeRange::new(START_US, START_US + DAY_US).expect("range");
    let hour = TimeRange::new(START_US + 12 * 3_600_000_000, START_US + 13 * 3_600_000_000)
        .expect("range");
    // The most active account, found once (not timed).
    let top = ds
        .sql("SELECT did FROM posts GROUP BY did ORDER BY count(*) DESC, did LIMIT 1")
        .await
        .expect("top account");
    let did = top
        .batches
        .iter()
        .find(|b| b.num_rows() > 0)
        .and_then(|b| {
            datafusion::arrow::array::AsArray::as_string_opt::<i32>(b.column(0))
                .map(|a| a.value(0).to_owned())
        })
        .unwrap_or_default();
    out.extend(time("stats (day)", plan, || ds.daily_stats(day)).await);
    out.extend(
        time("posts (day, lang=en, replies, 100)", plan, || {
            let mut q = PostQuery::new(day);
            q.lang = Some("en".into());
            q.is_reply = Some(true);
            async move { ds.posts(&q).await }
        })
        .await,
    );
    out.extend(
        time("posts (day, author)", plan, || {
            let mut q = PostQuery::new(day);
            q.author = Some(did.clone());
            async move { ds.posts(&q).await }
        })
        .await,
    );
    out.extend(
        time("posts (hour, text contains)", plan, || {
            let mut q = PostQuery::new(hour);
            q.text_contains = Some("coffee".into());
            async move { ds.posts(&q).await }
        })
        .await,
    );
    out.extend(
        time("search (day, 2 words)", plan, || {
            ds.search_posts("good morning", day, 100)
        })
        .await,
    );
    out.extend(
        time("events per collection per hour (day)", plan, || {
            ds.events_per_hour(day)
        })
        .await,
    );
    out.extend(
        time("top liked (day)", plan, || {
            ds.top_posts(Engagement::Likes, day, 20)
        })
        .await,
    );
    out.extend(
        time("top reposted (day)", plan, || {
            ds.top_posts(Engagement::Reposts, day, 20)
        })
        .await,
    );
    out.extend(
        time("account activity (day)", plan, || {
            ds.account_activity(&did, day)
        })
        .await,
    );
    for (name, sql) in [
        (
            "SQL per-collection counts",
            "SELECT coalesce(collection, kind) AS c, count(*) FROM events GROUP BY 1 ORDER BY 2 DESC",
        ),
        (
            "SQL unique users per collection",
            "SELECT collection, count(DISTINCT did) FROM events WHERE kind = 'commit' GROUP BY 1",
        ),
        (
            "SQL hourly activity",
            "SELECT hour, count(*) FROM events WHERE year = '2026' AND month = '11' AND day = '20' GROUP BY hour ORDER BY hour",
        ),
        (
            "SQL per-user first and last post",
            "SELECT did, min(time_us), max(time_us), count(*) AS n FROM posts WHERE operation = 'create' GROUP BY did ORDER BY n DESC LIMIT 100",
        ),
    ] {
        out.extend(time(name, plan, || ds.sql(sql)).await);
    }
    out
}

fn print(title: &str, timings: &[Timing]) {
    println!("\n{title}");
    println!("| call | first run | best of runs | rows |");
    println!("|---|---|---|---|");
    for t in timings {
        println!(
            "| {} | {:.3} s | {:.3} s | {} |",
            t.name,
            t.first.as_secs_f64(),
            t.best.as_secs_f64(),
            t.rows
        );
    }
}

/// Each call's best of runs over the passes: the median, the fastest and the slowest.
fn print_passes(title: &str, passes: &[Vec<Timing>]) {
    println!("\n{title}, {} passes", passes.len());
    println!("| call | median of the passes' best | fastest | slowest | rows |");
    println!("|---|---|---|---|---|");
    let Some(first) = passes.first() else { return };
    for (i, t) in first.iter().enumerate() {
        let mut best: Vec<f64> = passes
            .iter()
            .filter_map(|p| p.get(i))
            .map(|t| t.best.as_secs_f64())
            .collect();
        best.sort_by(f64::total_cmp);
        let n = best.len();
        let median = if n % 2 == 1 {
            best[n / 2]
        } else {
            (best[n / 2 - 1] + best[n / 2]) / 2.0
        };
        println!(
            "| {} | {median:.3} s | {:.3} s | {:.3} s | {} |",
            t.name,
            best[0],
            best[n - 1],
            t.rows
        );
    }
}

fn main() {
    let args = args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let plan = Plan {
        runs: args.runs,
        only: args.only.as_deref(),
        sql: args.sql.as_deref(),
    };
    runtime.block_on(async {
        generate(&args).await;
        let options = QueryOptions {
            timeout: Duration::from_secs(600),
            max_rows: 10_000_000,
            ..QueryOptions::default()
        };
        let mut layouts: Vec<(String, Dataset)> = Vec::new();
        if args.raw {
            let ds = Dataset::open_local(&args.dir, options.clone())
                .await
                .expect("open");
            let marks = if args.replays {
                ", unmarked, with replays"
            } else {
                ", marked duplicate-free"
            };
            layouts.push((
                format!(
                    "{} events, as written (before compaction{marks}), de-duplicated (the default)",
                    args.events
                ),
                ds,
            ));
            if args.compare {
                let plain = QueryOptions {
                    dedup: false,
                    ..options.clone()
                };
                let ds = Dataset::open_local(&args.dir, plain).await.expect("open");
                layouts.push((
                    format!(
                        "{} events, as written (before compaction), without de-duplication",
                        args.events
                    ),
                    ds,
                ));
            }
        }
        if args.live {
            // As the hourly compaction timer leaves the day late in the evening: every hour
            // compacted but the last two.
            let dir = compacted_copy(&args, "live", START_US + 22 * HOUR_US).await;
            let ds = Dataset::open_local(&dir, options.clone())
                .await
                .expect("open");
            layouts.push((
                format!(
                    "{} events, compacted but the last two hours, de-duplicated (the default)",
                    args.events
                ),
                ds,
            ));
        }
        if args.compacted {
            let dir = compacted_copy(&args, "compacted", i64::MAX).await;
            let ds = Dataset::open_local(&dir, options).await.expect("open");
            layouts.push((
                format!(
                    "{} events, compacted, de-duplicated (the default)",
                    args.events
                ),
                ds,
            ));
        }
        if args.passes <= 1 {
            for (title, ds) in &layouts {
                print(title, &suite(ds, &plan).await);
            }
            return;
        }
        // The layouts in turn, pass after pass, so that a slow spell of the machine falls on
        // each of them alike; each call's best of runs, per pass.
        let mut passes: Vec<Vec<Vec<Timing>>> = layouts.iter().map(|_| Vec::new()).collect();
        for pass in 1..=args.passes {
            for ((title, ds), timings) in layouts.iter().zip(&mut passes) {
                println!("pass {pass}/{}: {title}", args.passes);
                timings.push(suite(ds, &plan).await);
            }
        }
        for ((title, _), timings) in layouts.iter().zip(&passes) {
            print_passes(title, timings);
        }
    });
}
