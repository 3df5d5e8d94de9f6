//! Every typed call and a set of SQL queries against answers computed from the events; run on
//! local disk and on S3.

use std::collections::{BTreeMap, BTreeSet};

use firehose_core::{Event, HOUR_US, Table};
use firehose_query::{
    AccountActivity, DailyStats, Dataset, Engagement, HourlyEvents, Post, PostQuery, TimeRange,
    TopPost,
};

use crate::common::*;

/// Checks every typed call and the SQL set on `ds`, which holds `events` (plus duplicates).
pub(crate) async fn check_all(ds: &Dataset, events: &[Event<'static>]) {
    let events = unique(events);
    let day = TimeRange::parse_day("2026-11-21").unwrap();
    daily_stats(ds, &events).await;
    posts(ds, &events, day).await;
    search(ds, &events, day).await;
    events_per_hour(ds, &events).await;
    top_posts(ds, &events, day).await;
    account_activity(ds, &events).await;
    sql_answers(ds, &events).await;
}

async fn daily_stats(ds: &Dataset, events: &[Event<'static>]) {
    let range = TimeRange::parse("2026-11-19", "2026-11-25").unwrap();
    let rows = ds.daily_stats(range).await.unwrap();
    let mut expected: BTreeMap<String, (i64, BTreeSet<String>, Vec<usize>)> = BTreeMap::new();
    for p in created_posts(events) {
        let h = firehose_core::Hour::of(p.time_us);
        let day = format!("{:04}-{:02}-{:02}", h.year, h.month, h.day);
        let e = expected.entry(day).or_default();
        e.0 += 1;
        e.1.insert(p.did.clone());
        if let Some(t) = &p.text {
            e.2.push(t.chars().count());
        }
    }
    assert!(expected.len() >= 3, "the data spans three days");
    assert_eq!(
        string_values(&rows, "day"),
        expected.keys().cloned().collect::<Vec<_>>()
    );
    assert_eq!(
        ints(&rows, "posts"),
        expected.values().map(|e| e.0).collect::<Vec<_>>()
    );
    assert_eq!(
        ints(&rows, "unique_authors"),
        expected
            .values()
            .map(|e| e.1.len() as i64)
            .collect::<Vec<_>>()
    );
    for (got, want) in floats(&rows, "avg_text_length")
        .iter()
        .zip(expected.values())
    {
        let mean = want.2.iter().sum::<usize>() as f64 / want.2.len() as f64;
        assert!((got - mean).abs() < 1e-9, "{got} != {mean}");
    }
    // The same answer as typed rows.
    let typed: Vec<DailyStats> = rows.to_typed().unwrap();
    let want: Vec<(String, i64, i64)> = expected
        .iter()
        .map(|(day, e)| (day.clone(), e.0, e.1.len() as i64))
        .collect();
    let got: Vec<(String, i64, i64)> = typed
        .iter()
        .map(|d| (d.day.clone(), d.posts, d.unique_authors))
        .collect();
    assert_eq!(got, want);
    assert!(typed.iter().all(|d| d.avg_text_length.is_some()));
}

async fn posts(ds: &Dataset, events: &[Event<'static>], day: TimeRange) {
    let all: Vec<PostRow> = created_posts(events)
        .into_iter()
        .filter(|p| p.time_us >= day.start_us && p.time_us < day.end_us)
        .collect();
    assert!(all.len() > 500);

    // No filter, a limit.
    let mut q = PostQuery::new(day);
    q.limit = 25;
    let rows = ds.posts(&q).await.unwrap();
    assert_eq!(string_values(&rows, "uri"), newest_first(all.clone(), 25));
    // The same answer as typed rows, every field from the generated events.
    let typed: Vec<Post> = rows.to_typed().unwrap();
    assert_eq!(
        typed.iter().map(|p| p.uri.clone()).collect::<Vec<_>>(),
        newest_first(all.clone(), 25)
    );
    for post in &typed {
        let source = all.iter().find(|p| p.uri == post.uri).unwrap();
        assert_eq!(post.time_us, source.time_us);
        assert_eq!(post.text, source.text);
        assert_eq!(post.langs, source.langs);
        assert_eq!(post.reply_parent_uri.is_some(), source.is_reply);
    }

    // Replies only, in English, no limit to speak of.
    let mut q = PostQuery::new(day);
    q.is_reply = Some(true);
    q.lang = Some("en".into());
    q.limit = 100_000;
    let want: Vec<PostRow> = all
        .iter()
        .filter(|p| p.is_reply && p.langs.iter().any(|l| l == "en"))
        .cloned()
        .collect();
    assert!(!want.is_empty());
    let rows = ds.posts(&q).await.unwrap();
    assert_eq!(string_values(&rows, "uri"), newest_first(want, 100_000));

    // Top-level posts of the most active author.
    let mut by_author: BTreeMap<&str, usize> = BTreeMap::new();
    for p in &all {
        *by_author.entry(&p.did).or_default() += 1;
    }
    let (author, _) = by_author.iter().max_by_key(|(_, n)| **n).unwrap();
    let mut q = PostQuery::new(day);
    q.author = Some((*author).to_owned());
    q.is_reply = Some(false);
    q.limit = 1000;
    let want: Vec<PostRow> = all
        .iter()
        .filter(|p| p.did == *author && !p.is_reply)
        .cloned()
        .collect();
    let rows = ds.posts(&q).await.unwrap();
    assert_eq!(string_values(&rows, "uri"), newest_first(want, 1000));

    // Text contains, ignoring case: a word from some post, in upper case.
    let word = common_word(&all);
    let mut q = PostQuery::new(day);
    q.text_contains = Some(word.to_uppercase());
    q.limit = 100_000;
    let want: Vec<PostRow> = all
        .iter()
        .filter(|p| {
            p.text
                .as_deref()
                .is_some_and(|t| t.to_lowercase().contains(&word.to_lowercase()))
        })
        .cloned()
        .collect();
    assert!(!want.is_empty());
    let rows = ds.posts(&q).await.unwrap();
    assert_eq!(string_values(&rows, "uri"), newest_first(want, 100_000));
}

/// The rarest word of at least four ASCII letters that occurs in more than one post.
fn common_word(posts: &[PostRow]) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for p in posts {
        for w in p.text.as_deref().unwrap_or("").split_whitespace() {
            if w.len() >= 4 && w.bytes().all(|b| b.is_ascii_alphabetic()) {
                *counts.entry(w.to_lowercase()).or_default() += 1;
            }
        }
    }
    counts
        .into_iter()
        .filter(|(_, n)| *n >= 2)
        .min_by_key(|(_, n)| *n)
        .unwrap()
        .0
}

async fn search(ds: &Dataset, events: &[Event<'static>], day: TimeRange) {
    let all: Vec<PostRow> = created_posts(events)
        .into_iter()
        .filter(|p| p.time_us >= day.start_us && p.time_us < day.end_us)
        .collect();
    // Two words from one post: every result holds both.
    let sample = all
        .iter()
        .filter_map(|p| p.text.as_deref())
        .find(|t| t.split_whitespace().filter(|w| w.len() > 3).count() >= 2)
        .unwrap();
    let words: Vec<&str> = sample
        .split_whitespace()
        .filter(|w| w.len() > 3)
        .take(2)
        .collect();
    let query = words.join(" ");
    let want: Vec<PostRow> = all
        .iter()
        .filter(|p| {
            let t = p.text.as_deref().unwrap_or("").to_lowercase();
            words.iter().all(|w| t.contains(&w.to_lowercase()))
        })
        .cloned()
        .collect();
    assert!(!want.is_empty());
    let rows = ds.search_posts(&query, day, 10_000).await.unwrap();
    assert_eq!(
        string_values(&rows, "uri"),
        newest_first(want, 10_000),
        "{query}"
    );
}

async fn events_per_hour(ds: &Dataset, events: &[Event<'static>]) {
    // From 05:00 on the first day to 03:00 on the third: partial days at both ends.
    let range = TimeRange::parse("2026-11-20T05", "2026-11-22T03").unwrap();
    let rows = ds.events_per_hour(range).await.unwrap();
    let want = per_hour(events, range.start_us, range.end_us);
    let got: BTreeMap<(i64, String), i64> = micros(&rows, "hour")
        .into_iter()
        .zip(string_values(&rows, "collection"))
        .zip(ints(&rows, "events"))
        .collect();
    assert_eq!(
        got.len(),
        rows.num_rows(),
        "one row per hour and collection"
    );
    let typed: BTreeMap<(i64, String), i64> = rows
        .to_typed::<HourlyEvents>()
        .unwrap()
        .into_iter()
        .map(|h| ((h.hour_us, h.collection), h.events))
        .collect();
    assert_eq!(typed, want);
    assert_eq!(got, want);
    let hours: BTreeSet<i64> = got.keys().map(|k| k.0).collect();
    assert_eq!(
        hours.len() as i64,
        (range.end_us - range.start_us) / HOUR_US
    );
}

async fn top_posts(ds: &Dataset, events: &[Event<'static>], day: TimeRange) {
    for (by, table) in [
        (Engagement::Likes, Table::Likes),
        (Engagement::Reposts, Table::Reposts),
    ] {
        let counts = engagement_counts(events, table, day.start_us, day.end_us);
        let mut ranked: Vec<(String, i64)> = counts.into_iter().collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        ranked.truncate(20);
        assert!(
            ranked[0].1 > 1,
            "some post is liked or reposted more than once"
        );
        let rows = ds.top_posts(by, day, 20).await.unwrap();
        let column = match by {
            Engagement::Likes => "likes",
            Engagement::Reposts => "reposts",
        };
        let got: Vec<(String, i64)> = string_values(&rows, "subject_uri")
            .into_iter()
            .zip(ints(&rows, column))
            .collect();
        assert_eq!(got, ranked, "{by:?}");
        let typed: Vec<(String, i64)> = rows
            .to_typed::<TopPost>()
            .unwrap()
            .into_iter()
            .map(|t| (t.subject_uri, t.count))
            .collect();
        assert_eq!(typed, ranked, "{by:?}, typed");
    }
}

async fn account_activity(ds: &Dataset, events: &[Event<'static>]) {
    let range = TimeRange::parse("2026-11-20", "2026-11-23").unwrap();
    let mut per_did: BTreeMap<&str, usize> = BTreeMap::new();
    for e in events {
        *per_did.entry(&e.did).or_default() += 1;
    }
    let (did, _) = per_did.iter().max_by_key(|(_, n)| **n).unwrap();
    let mut want: BTreeMap<(String, Option<String>), (i64, i64, i64)> = BTreeMap::new();
    for e in events.iter().filter(|e| e.did == *did) {
        let op = operation(e).map(|o| o.as_str().to_owned());
        let w = want
            .entry((collection(e), op))
            .or_insert((0, i64::MAX, i64::MIN));
        w.0 += 1;
        w.1 = w.1.min(e.time_us);
        w.2 = w.2.max(e.time_us);
    }
    let rows = ds.account_activity(did, range).await.unwrap();
    let got: BTreeMap<(String, Option<String>), (i64, i64, i64)> =
        string_values(&rows, "collection")
            .into_iter()
            .zip(strings(&rows, "operation"))
            .zip(ints(&rows, "events"))
            .zip(
                micros(&rows, "first")
                    .into_iter()
                    .zip(micros(&rows, "last")),
            )
            .map(|(((c, o), n), (f, l))| ((c, o), (n, f, l)))
            .collect();
    let got: Vec<_> = got
        .into_iter()
        .map(|(k, (n, f, l))| (k, (f, l, n)))
        .collect();
    let want: Vec<_> = want
        .into_iter()
        .map(|(k, (n, f, l))| (k, (f, l, n)))
        .collect();
    assert_same_times(&got, &want);
    let counts = ints(&rows, "events");
    assert!(counts.windows(2).all(|w| w[0] >= w[1]), "most events first");
    let typed: BTreeMap<(String, Option<String>), (i64, i64, i64)> = rows
        .to_typed::<AccountActivity>()
        .unwrap()
        .into_iter()
        .map(|a| {
            (
                (a.collection, a.operation),
                (a.first_us, a.last_us, a.events),
            )
        })
        .collect();
    assert_eq!(typed.into_iter().collect::<Vec<_>>(), got);
}

/// Equal keys and counts, and first and last times equal up to the one second by which a
/// delivery from another Jetstream host differs (which delivery of an event is kept is not
/// defined; that it is kept once is).
fn assert_same_times<K: PartialEq + std::fmt::Debug>(
    got: &[(K, (i64, i64, i64))],
    want: &[(K, (i64, i64, i64))],
) {
    assert_eq!(got.len(), want.len(), "{got:?}\n{want:?}");
    for ((gk, (gf, gl, gn)), (wk, (wf, wl, wn))) in got.iter().zip(want) {
        assert_eq!((gk, gn), (wk, wn), "{got:?}\n{want:?}");
        assert!(
            (gf - wf).abs() <= 1_000_000 && (gl - wl).abs() <= 1_000_000,
            "{gk:?}"
        );
    }
}

async fn sql_answers(ds: &Dataset, events: &[Event<'static>]) {
    // Per-collection counts over every table.
    let rows = ds
        .sql(
            "SELECT coalesce(collection, kind) AS c, count(*) AS n FROM events \
             GROUP BY 1 ORDER BY 1",
        )
        .await
        .unwrap();
    let mut want: BTreeMap<String, i64> = BTreeMap::new();
    for e in events {
        *want.entry(collection(e)).or_default() += 1;
    }
    let got: BTreeMap<String, i64> = string_values(&rows, "c")
        .into_iter()
        .zip(ints(&rows, "n"))
        .collect();
    assert_eq!(got, want);

    // Unique users per collection.
    let rows = ds
        .sql(
            "SELECT collection, count(DISTINCT did) AS users FROM events \
             WHERE kind = 'commit' GROUP BY collection ORDER BY collection",
        )
        .await
        .unwrap();
    let mut want: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    for e in events.iter().filter(|e| e.commit().is_some()) {
        want.entry(collection(e)).or_default().insert(&e.did);
    }
    let got: BTreeMap<String, i64> = string_values(&rows, "collection")
        .into_iter()
        .zip(ints(&rows, "users"))
        .collect();
    let want: BTreeMap<String, i64> = want.into_iter().map(|(c, s)| (c, s.len() as i64)).collect();
    assert_eq!(got, want);

    // Counts per table, straight from the tables (the duplicates must not show).
    for table in Table::ALL {
        let rows = ds
            .sql(&format!("SELECT count(*) AS n FROM {}", table.name()))
            .await
            .unwrap();
        let want = events.iter().filter(|e| e.table() == table).count() as i64;
        assert_eq!(ints(&rows, "n"), [want], "{table}");
    }

    // Per-user first and last post, for the ten most active posters (a window-free form).
    let rows = ds
        .sql(
            "SELECT did, min(time_us) AS first, max(time_us) AS last, count(*) AS n \
             FROM posts WHERE operation = 'create' GROUP BY did ORDER BY n DESC, did LIMIT 10",
        )
        .await
        .unwrap();
    let mut want: BTreeMap<String, (i64, i64, i64)> = BTreeMap::new();
    for p in created_posts(events) {
        let w = want.entry(p.did).or_insert((i64::MAX, i64::MIN, 0));
        w.0 = w.0.min(p.time_us);
        w.1 = w.1.max(p.time_us);
        w.2 += 1;
    }
    let mut ranked: Vec<(String, (i64, i64, i64))> = want.into_iter().collect();
    ranked.sort_by(|a, b| b.1.2.cmp(&a.1.2).then_with(|| a.0.cmp(&b.0)));
    ranked.truncate(10);
    let got: Vec<(String, (i64, i64, i64))> = string_values(&rows, "did")
        .into_iter()
        .zip(
            ints(&rows, "first")
                .into_iter()
                .zip(ints(&rows, "last"))
                .zip(ints(&rows, "n")),
        )
        .map(|(d, ((f, l), n))| (d, (f, l, n)))
        .collect();
    assert_same_times(&got, &ranked);

    // Hourly activity of one day through the partition columns.
    let rows = ds
        .sql(
            "SELECT hour, count(*) AS n FROM events \
             WHERE year = '2026' AND month = '11' AND day = '21' GROUP BY hour ORDER BY hour",
        )
        .await
        .unwrap();
    let day = TimeRange::parse_day("2026-11-21").unwrap();
    let mut want: BTreeMap<String, i64> = BTreeMap::new();
    for e in events
        .iter()
        .filter(|e| e.time_us >= day.start_us && e.time_us < day.end_us)
    {
        *want
            .entry(format!("{:02}", firehose_core::Hour::of(e.time_us).hour))
            .or_default() += 1;
    }
    let got: BTreeMap<String, i64> = string_values(&rows, "hour")
        .into_iter()
        .zip(ints(&rows, "n"))
        .collect();
    assert_eq!(got, want);
}
