//! Injection and escape attempts are refused or harmless; the limits hold.

use std::time::{Duration, Instant};

use firehose_query::{Dataset, Engagement, Error, PostQuery, QueryOptions, TimeRange};

use crate::common::*;

async fn dataset(name: &str, options: QueryOptions) -> (std::path::PathBuf, Dataset) {
    let events = generated(6_000, 14);
    let dir = local_dataset(name, &events).await;
    let ds = Dataset::open_local(&dir, options).await.unwrap();
    (dir, ds)
}

fn assert_refused(result: Result<firehose_query::Rows, Error>, what: &str) -> String {
    match result {
        Err(e) if e.is_refused() => e.to_string(),
        other => panic!("{what}: expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn writes_and_file_reads_are_refused() {
    let (dir, ds) = dataset("refused", QueryOptions::default()).await;
    let before = parquet_files(&dir);
    let posts = |ds: &Dataset| {
        let ds = ds.clone();
        async move {
            ints(
                &ds.sql("SELECT count(*) AS n FROM posts").await.unwrap(),
                "n",
            )[0]
        }
    };
    let count_before = posts(&ds).await;
    for sql in [
        "DROP TABLE posts",
        "DELETE FROM posts",
        "INSERT INTO posts SELECT * FROM posts",
        "CREATE TABLE t AS SELECT * FROM posts",
        "CREATE VIEW v AS SELECT 1",
        "CREATE EXTERNAL TABLE pw (line VARCHAR) STORED AS CSV LOCATION '/etc/passwd'",
        "COPY posts TO '/tmp/firehose-query-stolen.parquet'",
        "COPY (SELECT 1) TO '/tmp/firehose-query-stolen.csv' STORED AS CSV",
        "SELECT 1; DROP TABLE posts",
        "SELECT count(*) FROM posts; SELECT 2",
        "WITH gone AS (DELETE FROM posts RETURNING *) SELECT * FROM gone",
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_parquet('/etc/passwd')",
        "SET datafusion.runtime.memory_limit = '100G'",
        "EXPLAIN ANALYZE INSERT INTO posts SELECT * FROM posts",
        "DESCRIBE posts",
        "PREPARE p AS SELECT 1",
    ] {
        let message = assert_refused(ds.sql(sql).await, sql);
        assert!(message.contains("refused"), "{sql}: {message}");
    }
    // A path as a table name is not a way out: no such table.
    for sql in [
        "SELECT * FROM '/etc/passwd'",
        "SELECT * FROM \"/etc/passwd\"",
        "SELECT * FROM 'file:///etc/passwd'",
    ] {
        let message = assert_refused(ds.sql(sql).await, sql);
        assert!(!message.contains("root:"), "{message}");
    }
    assert!(!std::path::Path::new("/tmp/firehose-query-stolen.parquet").exists());
    assert_eq!(parquet_files(&dir), before);
    assert_eq!(posts(&ds).await, count_before);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn typed_arguments_are_data_not_sql() {
    let (dir, ds) = dataset("injection", QueryOptions::default()).await;
    let day = TimeRange::parse("2026-11-20", "2026-11-21").unwrap();
    let total = ds
        .posts(&PostQuery {
            limit: 100_000,
            ..PostQuery::new(day)
        })
        .await
        .unwrap();
    assert!(total.num_rows() > 0);
    for attempt in [
        "x' OR '1'='1",
        "'; DROP TABLE posts; --",
        "\" OR 1=1 --",
        "%",
        "_",
        "\\",
    ] {
        let mut q = PostQuery::new(day);
        q.author = Some(attempt.into());
        assert_eq!(ds.posts(&q).await.unwrap().num_rows(), 0, "{attempt}");
        let mut q = PostQuery::new(day);
        q.text_contains = Some(attempt.into());
        q.limit = 100_000;
        // Pattern characters are literal: no generated text holds these strings.
        assert_eq!(ds.posts(&q).await.unwrap().num_rows(), 0, "{attempt}");
        let found = ds.search_posts(attempt, day, 10).await.unwrap();
        assert_eq!(found.num_rows(), 0, "{attempt}");
        assert_eq!(
            ds.account_activity(attempt, day).await.unwrap().num_rows(),
            0
        );
    }
    // A quote inside a real word still matches as text.
    let rows = ds.search_posts("it's", day, 10).await.unwrap();
    for t in strings(&rows, "text") {
        assert!(t.unwrap().to_lowercase().contains("it's"));
    }
    let again = ds
        .posts(&PostQuery {
            limit: 100_000,
            ..PostQuery::new(day)
        })
        .await
        .unwrap();
    assert_eq!(again.num_rows(), total.num_rows());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_time_limit_cancels() {
    let options = QueryOptions {
        timeout: Duration::from_millis(300),
        ..QueryOptions::default()
    };
    let ds = Dataset::open_local("/nonexistent-firehose-dataset", options)
        .await
        .unwrap();
    // The caller hears of the timeout on time even from a query that does not yield (a
    // cross join keeps producing batches from memory)...
    let started = Instant::now();
    let result = ds
        .sql("SELECT count(*) FROM generate_series(1, 100000) a, generate_series(1, 100000) b")
        .await;
    assert!(matches!(result, Err(Error::Timeout { .. })), "{result:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // ...and a query that reads its input in batches is cancelled, so the next one runs.
    let ds = Dataset::open_local(
        "/nonexistent-firehose-dataset",
        QueryOptions {
            timeout: Duration::from_millis(300),
            ..QueryOptions::default()
        },
    )
    .await
    .unwrap();
    let started = Instant::now();
    let result = ds
        .sql("SELECT sum(value % 7) FROM generate_series(1, 10000000000)")
        .await;
    assert!(matches!(result, Err(Error::Timeout { .. })), "{result:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let rows = ds
        .sql("SELECT sum(value) AS s FROM generate_series(1, 1000)")
        .await
        .unwrap();
    assert_eq!(ints(&rows, "s"), [500_500]);
}

#[tokio::test]
async fn the_memory_limit_holds() {
    let options = QueryOptions {
        memory_limit: 4 << 20,
        ..QueryOptions::default()
    };
    let ds = Dataset::open_local("/nonexistent-firehose-dataset", options)
        .await
        .unwrap();
    let result = ds
        .sql("SELECT count(*) FROM (SELECT (value * 7919) % 3000017 AS k FROM generate_series(1, 3000000) GROUP BY k)")
        .await;
    let message = match result {
        Err(e @ Error::MemoryLimit { .. }) => e.to_string(),
        other => panic!("expected the memory limit, got {other:?}"),
    };
    assert!(message.contains("memory limit"), "{message}");
    // The same query within a normal limit.
    let ds = Dataset::open_local("/nonexistent-firehose-dataset", QueryOptions::default())
        .await
        .unwrap();
    let rows = ds
        .sql("SELECT count(*) AS n FROM (SELECT (value * 7919) % 3000017 AS k FROM generate_series(1, 3000000) GROUP BY k)")
        .await
        .unwrap();
    assert_eq!(ints(&rows, "n"), [3_000_000]);
}

#[tokio::test]
async fn top_posts_count_against_the_memory_limit() {
    let day = TimeRange::parse_day("2026-11-20").unwrap();
    // Enough for a scan, not for a count of every liked post (without de-duplication, whose
    // key set would count too).
    let small = QueryOptions {
        memory_limit: 64 << 10,
        dedup: false,
        ..QueryOptions::default()
    };
    let (dir, ds) = dataset("top-memory", small).await;
    let likes = ds
        .sql("SELECT count(DISTINCT subject_uri) AS n FROM likes")
        .await;
    assert!(
        matches!(likes, Err(Error::MemoryLimit { .. })),
        "a GROUP BY of the URIs does not fit either: {likes:?}"
    );
    let scanned = ds.sql("SELECT count(*) AS n FROM likes").await.unwrap();
    assert!(ints(&scanned, "n")[0] > 1_000);
    match ds.top_posts(Engagement::Likes, day, 10).await {
        Err(e @ Error::MemoryLimit { .. }) => {
            let message = e.to_string();
            assert!(message.contains("memory limit"), "{message}");
            assert!(message.contains("TopCounts"), "{message}");
        }
        other => panic!("expected the memory limit, got {other:?}"),
    }
    let ds = Dataset::open_local(&dir, QueryOptions::default())
        .await
        .unwrap();
    assert_eq!(
        ds.top_posts(Engagement::Likes, day, 10)
            .await
            .unwrap()
            .num_rows(),
        10
    );
    // Any limit is taken; past the row cap the answer is refused.
    let all = ds
        .top_posts(Engagement::Likes, day, usize::MAX)
        .await
        .unwrap();
    assert!(all.num_rows() > 10);
    let capped = QueryOptions {
        max_rows: 10,
        ..QueryOptions::default()
    };
    let ds = Dataset::open_local(&dir, capped).await.unwrap();
    let refused = ds.top_posts(Engagement::Likes, day, usize::MAX).await;
    assert!(
        matches!(refused, Err(Error::TooManyRows { limit: 10 })),
        "{refused:?}"
    );
}

#[tokio::test]
async fn the_row_cap_holds_and_deep_nesting_is_refused() {
    let options = QueryOptions {
        max_rows: 10,
        ..QueryOptions::default()
    };
    let ds = Dataset::open_local("/nonexistent-firehose-dataset", options)
        .await
        .unwrap();
    assert_eq!(
        ds.sql("SELECT * FROM generate_series(1, 10)")
            .await
            .unwrap()
            .num_rows(),
        10
    );
    let too_many = ds.sql("SELECT * FROM generate_series(1, 11)").await;
    assert!(
        matches!(too_many, Err(Error::TooManyRows { limit: 10 })),
        "{too_many:?}"
    );
    let deep = format!("SELECT {}1{}", "(".repeat(5000), ")".repeat(5000));
    assert_refused(ds.sql(&deep).await, "deep nesting");
}
