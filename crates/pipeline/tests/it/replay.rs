//! Jetstream's replays (the rewind of every reconnect, the resume from the checkpoint after a
//! crash, and the server's own repeats) are dropped before they are stored: counted by the
//! product's event key on the files as written, before any de-duplication.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use firehose_mock_jetstream::{EventSource, Faults, MockConfig, MockServer};
use firehose_pipeline::{JetstreamConfig, Pipeline, PipelineReport};
use firehose_sink::{LocalStorage, Storage};

use crate::{small_policy, temp_dir};

const EVENTS: u64 = 20_000;

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

/// Every stored row's key fingerprint (all tables but dead letters), duplicates included.
/// The mock stamps its events from its start on, after `since_us`.
async fn stored(storage: &dyn Storage, since_us: i64) -> Vec<u128> {
    firehose_sink::stored_keys(storage, since_us, now_us() + 3_600_000_000)
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.fingerprint)
        .collect()
}

fn archive(url: &str, storage: Arc<dyn Storage>) -> firehose_pipeline::PipelineBuilder {
    let config = JetstreamConfig {
        urls: vec![url.to_owned()],
        rewind: Duration::from_secs(2),
        ..JetstreamConfig::default()
    };
    Pipeline::archive(config, storage).with_roll_policy(small_policy())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_after_reconnects_and_a_crash_are_not_stored() {
    let dir = temp_dir("replay");
    let storage: Arc<dyn Storage> = Arc::new(LocalStorage::new(&dir));
    let t0 = now_us();
    let server = MockServer::start(MockConfig {
        events: EventSource::Generated {
            seed: 11,
            events: Some(EVENTS),
            start_time_us: None,
        },
        rate: Some(2_000.0),
        faults: Faults {
            drop_every: Some(Duration::from_millis(700)),
            duplicate_every: Some(97),
            ..Faults::default()
        },
        ..MockConfig::default()
    })
    .await
    .unwrap();

    // First run, on a runtime of its own: killed (the runtime shut down, every task dropped
    // where it stood, nothing flushed) once part of the events is stored.
    let crashing = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let builder = archive(&server.url(), storage.clone());
    crashing.spawn(async move {
        let pipeline = builder.build().await.unwrap();
        pipeline.run(std::future::pending::<()>()).await
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while stored(&*storage, t0).await.len() < 6_000 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    crashing.shutdown_background();
    let before_restart = stored(&*storage, t0).await.len();
    assert!(
        before_restart >= 6_000,
        "{before_restart} stored before the crash"
    );

    // Second run: resumes from the checkpoint (behind what is stored) and reads the rest.
    let pipeline = archive(&server.url(), storage.clone())
        .build()
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let second = tokio::spawn(pipeline.run(async move {
        let _ = stopped.await;
    }));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let keys = stored(&*storage, t0).await;
        let unique: HashSet<u128> = keys.iter().copied().collect();
        if unique.len() as u64 >= EVENTS || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.send(()).unwrap();
    let report: PipelineReport = second.await.unwrap().unwrap();

    let keys = stored(&*storage, t0).await;
    let unique: HashSet<u128> = keys.iter().copied().collect();
    let sent = server.sent();
    assert_eq!(unique.len() as u64, EVENTS, "every event stored ({sent:?})");
    assert!(
        sent.connections >= 4 && sent.duplicates > 0,
        "faults happened: {sent:?}"
    );
    assert!(
        report.ingested.replays_dropped > 0,
        "the restart replayed stored events, and they were dropped: {report:?}"
    );
    assert_eq!(
        keys.len() - unique.len(),
        0,
        "duplicate rows stored, by event key, before any de-duplication"
    );
    server.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `ingest` given the dataset, with no checkpoint in the buffer's state or the dataset while
/// the dataset holds data (a Redis that came back empty, and writers that never mirrored a
/// checkpoint): it refuses to start live, naming the overrides, and starts once allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_refuses_to_start_live_over_data_without_a_checkpoint() {
    let dir = temp_dir("refuse-live");
    let storage: Arc<dyn Storage> = Arc::new(LocalStorage::new(dir.join("data")));
    let line = br#"{"did":"did:plc:a","time_us":1763596800000000,"kind":"identity","identity":{"did":"did:plc:a","seq":1,"time":"t"}}"#;
    let events = [firehose_core::Event::decode(line).unwrap()];
    firehose_sink::Writer::new(storage.clone(), firehose_sink::ParquetOptions::default())
        .write(
            &firehose_sink::BatchName::new("1-0", "1-0").unwrap(),
            &events,
        )
        .await
        .unwrap();
    let empty_state: Arc<dyn firehose_pipeline::StateStore> = Arc::new(
        firehose_pipeline::DatasetState::new(Arc::new(LocalStorage::new(dir.join("state")))),
    );
    let shared = || {
        firehose_pipeline::SharedBuffer::new(
            Arc::new(firehose_buffer::memory::InMemory::builder().build()),
            empty_state.clone(),
        )
    };
    let config = JetstreamConfig {
        urls: vec!["ws://127.0.0.1:9/subscribe".into()],
        ..JetstreamConfig::default()
    };
    let refused = Pipeline::ingest(config.clone(), shared())
        .with_dataset(storage.clone())
        .build()
        .await
        .expect_err("refused")
        .to_string();
    assert!(
        refused.contains("--start-cursor") && refused.contains("--start-live"),
        "{refused}"
    );
    for builder in [
        Pipeline::ingest(config.clone(), shared())
            .with_dataset(storage.clone())
            .with_start_live(true),
        Pipeline::ingest(config.clone(), shared())
            .with_dataset(storage.clone())
            .with_start_cursor(Some(1_763_596_800_000_000)),
        // Without the dataset nothing can be checked: it starts live, as before.
        Pipeline::ingest(config.clone(), shared()),
    ] {
        assert!(builder.build().await.is_ok());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
