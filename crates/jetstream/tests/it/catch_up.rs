//! Catch-up as after an outage: millions of events replayed from a cursor as fast as the server
//! sends them, and a client that falls behind the live stream, is dropped as Jetstream drops
//! slow clients, and resumes from its cursor. Every event must arrive.
//!
//! The generated `time_us` strictly increase, so the distinct times received count the distinct
//! events; the server sends nothing it did not publish.

use std::collections::HashSet;
use std::time::Duration;

use firehose_jetstream::{Message, Source};
use firehose_mock_jetstream::MockServer;

use crate::{client, mock};

/// The events of a catch-up: as many as the stalled run published.
const EVENTS: u64 = 2_000_000;

/// Reads until `times` holds every one of the server's `n` events, or for at most `limit`;
/// returns the number of messages read.
async fn read_all(source: &mut Source, times: &mut HashSet<i64>, n: u64, limit: Duration) -> u64 {
    let mut messages = 0;
    let deadline = tokio::time::Instant::now() + limit;
    while (times.len() as u64) < n {
        let message = tokio::time::timeout_at(deadline, source.next())
            .await
            .expect("every event arrived in time")
            .unwrap();
        messages += 1;
        if let Message::Event { time_us, .. } = message {
            times.insert(time_us);
        }
    }
    messages
}

async fn published(server: &MockServer, n: u64) {
    while server.sent().published < n {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_million_events_replay_from_a_cursor_and_every_one_arrives() {
    let server = mock(21, EVENTS, |c| c.rate = Some(1e9)).await;
    published(&server, EVENTS).await;
    let mut source = Source::new(client(vec![server.url()]), Some(0)).unwrap();
    let started = std::time::Instant::now();
    let mut times = HashSet::with_capacity(EVENTS as usize);
    let messages = read_all(&mut source, &mut times, EVENTS, Duration::from_secs(600)).await;
    let elapsed = started.elapsed();
    let sent = server.sent();
    assert_eq!(times.len() as u64, EVENTS);
    assert_eq!(messages, EVENTS, "{sent}");
    assert_eq!(sent.connections, 1, "{sent}");
    assert_eq!((sent.skipped, sent.slow_closes), (0, 0), "{sent}");
    eprintln!(
        "replayed {EVENTS} events in {:.1} s ({:.0} events/s)",
        elapsed.as_secs_f64(),
        EVENTS as f64 / elapsed.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_behind_the_live_stream_is_dropped_and_resumes_without_a_gap() {
    let n = EVENTS / 4;
    let max_behind = 20_000;
    let server = mock(22, n, |c| {
        c.rate = Some(250_000.0);
        c.max_behind = Some(max_behind);
    })
    .await;
    let mut source = Source::new(client(vec![server.url()]), None).unwrap();
    // Live from the first event; then a pause, as a busy writer makes, until the server is
    // well ahead.
    let first = loop {
        if let Message::Event { time_us, .. } = source.next().await.unwrap() {
            break time_us;
        }
    };
    let received_before = server.sent().events;
    published(&server, (received_before + 3 * max_behind).min(n)).await;
    let mut times = HashSet::from([first]);
    read_all(&mut source, &mut times, n, Duration::from_secs(600)).await;
    let sent = server.sent();
    assert!(sent.slow_closes >= 1, "the slow client was dropped: {sent}");
    assert!(sent.connections >= 2, "{sent}");
    assert_eq!(sent.skipped, 0, "{sent}");
    assert_eq!(times.len() as u64, n, "{sent}");
}
