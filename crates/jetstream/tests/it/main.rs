//! The client against the mock Jetstream server over real loopback sockets.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

mod catch_up;
mod faults;
mod stream;

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use firehose_jetstream::{Config, Message, Source};
use firehose_mock_jetstream::{EventSource, MockConfig, MockServer};
use firehose_synth::Generator;

/// Every test gives up after this long instead of hanging.
const TEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `test` with a deadline.
pub(crate) async fn within_deadline<T>(test: impl Future<Output = T>) -> T {
    tokio::time::timeout(TEST_TIMEOUT, test)
        .await
        .expect("the test finished in time")
}

/// A mock publishing `events` generated events with `seed`, configured further by `tweak`.
pub(crate) async fn mock(
    seed: u64,
    events: u64,
    tweak: impl FnOnce(&mut MockConfig),
) -> MockServer {
    let mut config = MockConfig {
        events: EventSource::Generated {
            seed,
            events: Some(events),
            start_time_us: None,
        },
        ..MockConfig::default()
    };
    tweak(&mut config);
    MockServer::start(config).await.unwrap()
}

/// The events the mock publishes, regenerated: JSON text in order.
pub(crate) fn expected(server: &MockServer, n: u64) -> Vec<String> {
    let config = server.synth_config().unwrap().clone();
    Generator::new(config)
        .take(n as usize)
        .map(|event| event.to_json())
        .collect()
}

/// A client configuration for `url` with quick reconnects.
pub(crate) fn client(urls: Vec<String>) -> Config {
    Config {
        urls,
        backoff_min: Duration::from_millis(10),
        backoff_max: Duration::from_millis(200),
        liveness_timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(5),
        ..Config::default()
    }
}

/// What a client received.
#[derive(Debug, Default)]
pub(crate) struct Received {
    pub(crate) events: Vec<String>,
    pub(crate) times: Vec<i64>,
    pub(crate) malformed: Vec<&'static str>,
}

impl Received {
    pub(crate) fn push(&mut self, message: Message) {
        match message {
            Message::Event { json, time_us } => {
                self.events.push(String::from_utf8(json.to_vec()).unwrap());
                self.times.push(time_us);
            }
            Message::Malformed { reason, .. } => self.malformed.push(reason),
        }
    }

    /// The distinct events, in order of arrival.
    pub(crate) fn distinct(&self) -> Vec<String> {
        let mut seen = std::collections::HashSet::new();
        self.events
            .iter()
            .filter(|e| seen.insert(e.as_str()))
            .cloned()
            .collect()
    }
}

/// Reads until `done` says so.
pub(crate) async fn read_until(
    source: &mut Source,
    mut done: impl FnMut(&Received) -> bool,
) -> Received {
    let mut received = Received::default();
    while !done(&received) {
        received.push(source.next().await.unwrap());
    }
    received
}

/// Reads until `n` distinct events arrived.
pub(crate) async fn read_distinct(source: &mut Source, n: usize) -> Received {
    let mut seen = std::collections::HashSet::new();
    let mut received = Received::default();
    while seen.len() < n {
        let message = source.next().await.unwrap();
        if let Message::Event { json, .. } = &message {
            seen.insert(json.clone());
        }
        received.push(message);
    }
    received
}

/// The Jetstream zstd dictionary beside the repository, when it is there.
pub(crate) fn shared_dictionary() -> Option<Vec<u8>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/jetstream/v1-zstd-dictionary");
    std::fs::read(path).ok()
}

/// A dictionary trained on generated events, so compression is tested without `../shared`.
pub(crate) fn trained_dictionary() -> Vec<u8> {
    let samples = firehose_synth::json_corpus(99, 5000);
    zstd::dict::from_samples(&samples, 64 * 1024).unwrap()
}
