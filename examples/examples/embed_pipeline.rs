//! Embed the archive in your own program: a Jetstream (here the in-process mock server, so the
//! example needs no network) into the in-memory buffer into Parquet files in a temporary
//! directory. It stops once 20,000 events have arrived, writes what is open, and prints what
//! it did.
//!
//! `cargo run -p firehose-examples --example embed_pipeline`

use std::sync::Arc;
use std::time::Duration;

use firehose_mock_jetstream::{EventSource, MockConfig, MockServer};
use firehose_pipeline::{JetstreamConfig, LocalStorage, Pipeline};

const EVENTS: u64 = 20_000;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A Jetstream-protocol server on a free loopback port, with 20,000 generated events.
    let jetstream = MockServer::start(MockConfig {
        events: EventSource::Generated {
            seed: 7,
            events: Some(EVENTS),
            start_time_us: None,
        },
        ..MockConfig::default()
    })
    .await?;

    let out = std::env::temp_dir().join(format!("firehose-embed-{}", std::process::id()));
    let config = JetstreamConfig {
        urls: vec![jetstream.url()],
        ..JetstreamConfig::default()
    };
    let pipeline = Pipeline::archive(config, Arc::new(LocalStorage::new(&out)))
        .build()
        .await?;

    // Stop once every event has arrived; any future will do (a signal, a channel, a timer).
    let health = pipeline.health();
    let all_received = async move {
        while health.check().jetstream.map_or(0, |j| j.received) < EVENTS {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let report = pipeline.run(all_received).await?;

    let files = parquet_files(&out)?;
    println!(
        "received {}, wrote {} events in {} batches ({} dead letters) to {} Parquet files under {}",
        report.ingested.appended,
        report.written.events,
        report.written.batches,
        report.written.dead_letters,
        files,
        out.display()
    );
    assert_eq!(report.written.events, EVENTS, "every event is stored");
    std::fs::remove_dir_all(&out)?;
    Ok(())
}

/// Counts the `.parquet` files under `dir`.
fn parquet_files(dir: &std::path::Path) -> std::io::Result<usize> {
    let mut count = 0;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            count += parquet_files(&path)?;
        } else if path.extension().is_some_and(|e| e == "parquet") {
            count += 1;
        }
    }
    Ok(count)
}
