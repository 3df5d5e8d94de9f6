//! The stream without faults: exactly the published events, filters, compression, cursors.

use std::collections::HashMap;
use std::time::Duration;

use firehose_core::{Event, Payload};
use firehose_jetstream::{Config, Options, Source};
use firehose_mock_jetstream::{EventSource, MockConfig, MockServer};

use crate::{
    client, expected, mock, read_until, shared_dictionary, trained_dictionary, within_deadline,
};

#[tokio::test]
async fn receives_exactly_the_published_events_in_order() {
    within_deadline(async {
        let n = 5000;
        let server = mock(3, n, |_| {}).await;
        let expected = expected(&server, n);
        // Two clients at once: each gets the whole stream (the second from the start, as
        // it may connect after the first made the server publish).
        let mut a = Source::new(client(vec![server.url()]), None).unwrap();
        let mut b = Source::new(client(vec![server.url()]), Some(0)).unwrap();
        let (ra, rb) = tokio::join!(
            read_until(&mut a, |r| r.events.len() == n as usize),
            read_until(&mut b, |r| r.events.len() == n as usize),
        );
        assert_eq!(ra.events, expected);
        assert_eq!(rb.events, expected);
        assert!(ra.malformed.is_empty());
        assert_eq!(a.cursor(), ra.times.iter().copied().max());
        for (json, time_us) in ra.events.iter().zip(&ra.times) {
            assert_eq!(Event::decode(json.as_bytes()).unwrap().time_us, *time_us);
        }
        assert_eq!(server.sent().connections, 2);
        assert_eq!(server.sent().events, 2 * n);
    })
    .await;
}

/// Which events pass a filter, by the rules of Jetstream.
fn filtered(events: &[String], wants: impl Fn(&str, Option<&str>) -> bool) -> Vec<String> {
    events
        .iter()
        .filter(|json| {
            let event = Event::decode(json.as_bytes()).unwrap();
            let collection = match &event.payload {
                Payload::Commit(c) => Some(c.collection.as_ref()),
                _ => None,
            };
            wants(&event.did, collection)
        })
        .cloned()
        .collect()
}

#[tokio::test]
async fn filters_by_collection_prefix_and_did() {
    within_deadline(async {
        let n = 4000;
        let server = mock(11, n, |_| {}).await;
        let all = expected(&server, n);

        let collections = vec![
            "app.bsky.feed.like".to_owned(),
            "app.bsky.graph.*".to_owned(),
        ];
        let want = filtered(&all, |_, c| {
            c.is_none_or(|c| c == "app.bsky.feed.like" || c.starts_with("app.bsky.graph."))
        });
        assert!(want.len() < all.len());
        assert!(want.iter().any(|e| e.contains("\"kind\":\"identity\"")));
        let config = Config {
            wanted_collections: collections,
            ..client(vec![server.url()])
        };
        let mut source = Source::new(config, None).unwrap();
        let got = read_until(&mut source, |r| r.events.len() == want.len()).await;
        assert_eq!(got.events, want);

        // The three busiest accounts, every kind of event.
        let mut counts: HashMap<String, usize> = HashMap::new();
        for json in &all {
            let did = Event::decode(json.as_bytes()).unwrap().did.into_owned();
            *counts.entry(did).or_default() += 1;
        }
        let mut busiest: Vec<_> = counts.into_iter().collect();
        busiest.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let dids: Vec<String> = busiest.iter().take(3).map(|(d, _)| d.clone()).collect();
        let want = filtered(&all, |did, _| dids.iter().any(|d| d == did));
        assert!(!want.is_empty() && want.len() < all.len());
        let config = Config {
            wanted_dids: dids,
            ..client(vec![server.url()])
        };
        // From the start: the first client made the server publish.
        let mut source = Source::new(config, Some(0)).unwrap();
        let got = read_until(&mut source, |r| r.events.len() == want.len()).await;
        assert_eq!(got.events, want);
    })
    .await;
}

#[tokio::test]
async fn require_hello_sends_the_filters_and_updates_change_them() {
    within_deadline(async {
        // No end to the stream, so the update has events to apply to; paced, so few posts
        // are on the way when it arrives.
        let server = MockServer::start(MockConfig {
            events: EventSource::Generated {
                seed: 12,
                events: None,
                start_time_us: None,
            },
            rate: Some(5000.0),
            ..MockConfig::default()
        })
        .await
        .unwrap();
        let all = expected(&server, 1000);
        let config = Config {
            wanted_collections: vec!["app.bsky.feed.post".to_owned()],
            require_hello: true,
            ..client(vec![server.url()])
        };
        // From the start, which the paced server published before the client connected.
        let mut source = Source::new(config, Some(0)).unwrap();
        // The server sends nothing before the hello, so receiving proves it was sent.
        let posts = filtered(&all, |_, c| c.is_none_or(|c| c == "app.bsky.feed.post"));
        let first = read_until(&mut source, |r| r.events.len() == 10).await;
        assert_eq!(first.events, posts[..10]);

        source
            .update_options(Options {
                wanted_collections: vec!["app.bsky.graph.follow".to_owned()],
                ..Options::default()
            })
            .await
            .unwrap();
        // Posts already on the way still arrive; from the first follow on, only follows (and
        // identity and account events, which no collection filter holds back).
        let is_follow = |e: &String| e.contains("\"collection\":\"app.bsky.graph.follow\"");
        let mut follows = 0;
        let rest = read_until(&mut source, |r| {
            follows += usize::from(r.events.last().is_some_and(is_follow));
            follows == 50
        })
        .await;
        let start = rest.events.iter().position(is_follow).unwrap();
        for event in &rest.events[start..] {
            assert!(
                is_follow(event) || !event.contains("\"kind\":\"commit\""),
                "{event}"
            );
        }
    })
    .await;
}

async fn compressed_stream(dictionary: Vec<u8>) {
    let n = 3000;
    let server = mock(21, n, |c| c.zstd_dictionary = Some(dictionary.clone())).await;
    let expected = expected(&server, n);
    let config = Config {
        compress: true,
        zstd_dictionary: Some(dictionary),
        ..client(vec![server.url()])
    };
    let mut source = Source::new(config, None).unwrap();
    let got = read_until(&mut source, |r| r.events.len() == n as usize).await;
    assert_eq!(got.events, expected);
    // The frames were compressed: fewer bytes went out than the JSON holds.
    let json_bytes: usize = expected.iter().map(String::len).sum();
    let sent = server.sent();
    assert!(
        (sent.bytes as usize) < json_bytes / 2,
        "{} of {json_bytes}",
        sent.bytes
    );
}

#[tokio::test]
async fn compressed_frames_with_a_trained_dictionary() {
    within_deadline(compressed_stream(trained_dictionary())).await;
}

#[tokio::test]
async fn compressed_frames_with_the_jetstream_dictionary() {
    let Some(dictionary) = shared_dictionary() else {
        eprintln!(
            "compressed_frames_with_the_jetstream_dictionary NOT RUN: ../shared/jetstream/v1-zstd-dictionary is not there (the trained dictionary test covers compression)"
        );
        return;
    };
    assert_eq!(dictionary.len(), 112_640);
    within_deadline(compressed_stream(dictionary)).await;
}

#[tokio::test]
async fn a_server_without_the_dictionary_refuses_compress_and_the_client_keeps_trying() {
    within_deadline(async {
        let server = mock(22, 100, |_| {}).await;
        let config = Config {
            compress: true,
            zstd_dictionary: Some(trained_dictionary()),
            ..client(vec![server.url()])
        };
        let mut source = Source::new(config, None).unwrap();
        let next = tokio::time::timeout(Duration::from_millis(500), source.next()).await;
        assert!(next.is_err(), "nothing arrives: {next:?}");
        assert_eq!(server.sent().connections, 0);
    })
    .await;
}

#[tokio::test]
async fn starts_from_the_cursor_less_the_rewind() {
    within_deadline(async {
        let n = 2000;
        let server = mock(31, n, |_| {}).await;
        let expected = expected(&server, n);
        // Publish everything first, so the cursor points into the window.
        let mut warm = Source::new(client(vec![server.url()]), None).unwrap();
        read_until(&mut warm, |r| r.events.len() == n as usize).await;

        let time = |json: &str| Event::decode(json.as_bytes()).unwrap().time_us;
        let cursor = time(&expected[1500]);
        let config = Config {
            rewind: Duration::ZERO,
            ..client(vec![server.url()])
        };
        let mut source = Source::new(config, Some(cursor)).unwrap();
        assert_eq!(source.cursor(), Some(cursor));
        let got = read_until(&mut source, |r| r.events.len() == 500).await;
        assert_eq!(got.events, expected[1500..]);

        // With a rewind of one second: the events of that second again.
        let config = Config {
            rewind: Duration::from_secs(1),
            ..client(vec![server.url()])
        };
        let mut source = Source::new(config, Some(cursor)).unwrap();
        let from = expected
            .iter()
            .position(|e| time(e) >= cursor - 1_000_000)
            .unwrap();
        assert!(from < 1500);
        let got = read_until(&mut source, |r| r.events.len() == n as usize - from).await;
        assert_eq!(got.events, expected[from..]);
    })
    .await;
}

#[tokio::test]
async fn replays_a_capture_file() {
    within_deadline(async {
        // The capture beside the repository when it is there, else generated lines.
        let capture = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/jetstream/v1-capture-sample.jsonl");
        let source = match EventSource::replay_file(&capture) {
            Ok(source) => source,
            Err(_) => EventSource::Replay(firehose_synth::json_corpus(5, 300)),
        };
        let EventSource::Replay(lines) = &source else {
            unreachable!()
        };
        let lines = lines.clone();
        let server = MockServer::start(MockConfig {
            events: source,
            ..MockConfig::default()
        })
        .await
        .unwrap();
        let mut client = Source::new(client(vec![server.url()]), None).unwrap();
        let got = read_until(&mut client, |r| r.events.len() == lines.len()).await;
        assert_eq!(got.events, lines);
    })
    .await;
}
