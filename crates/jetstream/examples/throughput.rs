//! How fast the client takes events from a Jetstream server over loopback: starts the mock
//! server in-process, reads N events plain and compressed, and prints events and bytes per
//! second. Run it in release mode:
//!
//! ```text
//! cargo run --release -p firehose-jetstream --example throughput -- 500000
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use firehose_jetstream::{Config, Message, Source};
use firehose_mock_jetstream::{EventSource, MockConfig, MockServer};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .map_or(200_000, |a| a.parse().expect("N is a number of events"));
    let dictionary =
        zstd::dict::from_samples(&firehose_synth::json_corpus(9, 5000), 112_640).unwrap();
    for compress in [false, true] {
        let server = MockServer::start(MockConfig {
            events: EventSource::Generated {
                seed: 1,
                events: Some(n),
                start_time_us: None,
            },
            zstd_dictionary: Some(dictionary.clone()),
            ..MockConfig::default()
        })
        .await
        .unwrap();
        let config = Config {
            urls: vec![server.url()],
            compress,
            zstd_dictionary: Some(dictionary.clone()),
            ..Config::default()
        };
        let mut source = Source::new(config, None).unwrap();
        let started = Instant::now();
        let (mut events, mut json_bytes) = (0u64, 0u64);
        while events < n {
            if let Message::Event { json, .. } = source.next().await.unwrap() {
                events += 1;
                json_bytes += json.len() as u64;
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        let sent = server.sent();
        println!(
            "compress={compress}: {n} events in {seconds:.2} s: {:.0} events/s, {:.1} MB/s of JSON, {:.1} MB/s on the wire",
            n as f64 / seconds,
            json_bytes as f64 / seconds / 1e6,
            sent.bytes as f64 / seconds / 1e6,
        );
        server.shutdown().await;
    }
}
