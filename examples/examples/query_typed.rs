//! Query an archive from Rust: open a dataset (a directory here; `s3://bucket/prefix` works the
//! same), call a typed query, and read its answer as structs rather than Arrow batches. The
//! dataset is 20,000 generated events written to a temporary directory.
//!
//! `cargo run -p firehose-examples --example query_typed`

use firehose_examples::write_sample_dataset;
use firehose_query::{DailyStats, Dataset, Post, PostQuery, QueryOptions, TimeRange};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("firehose-typed-{}", std::process::id()));
    let day = write_sample_dataset(&dir, 20_000).await?;
    let dataset = Dataset::open(dir.to_str().ok_or("path")?, QueryOptions::default()).await?;
    let range = TimeRange::parse_day(&day)?;

    // Typed calls build their filters from arguments: no SQL text holds user input.
    let stats: Vec<DailyStats> = dataset.daily_stats(range).await?.to_typed()?;
    for day in &stats {
        println!(
            "{}: {} posts by {} accounts, {:.0} characters on average",
            day.day,
            day.posts,
            day.unique_authors,
            day.avg_text_length.unwrap_or(0.0)
        );
    }

    let mut query = PostQuery::new(range);
    query.lang = Some("en".into());
    query.is_reply = Some(false);
    query.limit = 3;
    let posts: Vec<Post> = dataset.posts(&query).await?.to_typed()?;
    for post in &posts {
        let text = post.text.as_deref().unwrap_or("").replace('\n', " ");
        println!(
            "{} {}: {}",
            post.time_us,
            post.uri,
            text.chars().take(60).collect::<String>()
        );
    }
    assert!(stats.iter().map(|d| d.posts).sum::<i64>() > 0 && !posts.is_empty());
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
