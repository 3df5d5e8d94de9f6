//! Archive to S3-compatible object storage (Hetzner Object Storage, MinIO, AWS), with the
//! settings taken from the environment as every AWS tool takes them. The Jetstream is the
//! in-process mock server, so the example needs no network beyond the object store.
//!
//! ```sh
//! AWS_ENDPOINT_URL=https://fsn1.your-objectstorage.com AWS_REGION=fsn1 \
//! AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... \
//! FIREHOSE_EXAMPLE_S3=s3://my-bucket/archive \
//! cargo run -p firehose-examples --example s3_archive
//! ```
//!
//! `scripts/test` runs it against its S3 test server.

use std::time::Duration;

use firehose_mock_jetstream::{EventSource, MockConfig, MockServer};
use firehose_pipeline::{JetstreamConfig, Pipeline, open_storage};

const EVENTS: u64 = 5_000;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Ok(location) = std::env::var("FIREHOSE_EXAMPLE_S3") else {
        eprintln!("Set FIREHOSE_EXAMPLE_S3=s3://bucket/prefix and the AWS_* variables.");
        std::process::exit(2);
    };
    let jetstream = MockServer::start(MockConfig {
        events: EventSource::Generated {
            seed: 11,
            events: Some(EVENTS),
            start_time_us: None,
        },
        ..MockConfig::default()
    })
    .await?;

    // `s3://bucket/prefix`, or a local directory: the same call opens either.
    let storage = open_storage(&location).await?;
    let config = JetstreamConfig {
        urls: vec![jetstream.url()],
        ..JetstreamConfig::default()
    };
    let pipeline = Pipeline::archive(config, storage.clone()).build().await?;
    let health = pipeline.health();
    let report = pipeline
        .run(async move {
            while health.check().jetstream.map_or(0, |j| j.received) < EVENTS {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await?;

    let objects = storage.list("").await?;
    let parquet = objects.iter().filter(|o| o.path.ends_with(".parquet"));
    println!(
        "wrote {} events to {location}: {} Parquet objects, and the checkpoint",
        report.written.events,
        parquet.count()
    );
    assert_eq!(report.written.events, EVENTS);
    Ok(())
}
