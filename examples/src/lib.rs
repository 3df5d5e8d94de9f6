//! Runnable examples of the firehose library live in `examples/examples/`; this library holds
//! what several of them share.

use std::path::Path;
use std::sync::Arc;

use firehose_sink::{BatchName, LocalStorage, ParquetOptions, Writer};
use firehose_synth::{Config, Generator};

/// 2026-11-20T00:00:00Z: the sample dataset's first event.
pub const SAMPLE_START_US: i64 = 1_795_132_800_000_000;

/// Writes `events` generated events, from [`SAMPLE_START_US`] on, as a dataset under `dir`,
/// the way the pipeline writes batches; returns their day, `YYYY-MM-DD`.
pub async fn write_sample_dataset(
    dir: &Path,
    events: usize,
) -> Result<String, firehose_sink::Error> {
    let events: Vec<_> = Generator::new(Config {
        seed: 1,
        start_time_us: SAMPLE_START_US,
        ..Config::default()
    })
    .take(events)
    .collect();
    let writer = Writer::new(Arc::new(LocalStorage::new(dir)), ParquetOptions::default());
    for (i, chunk) in events.chunks(1_000).enumerate() {
        let name = BatchName::new(&format!("sample-{i:04}"), "example")?;
        writer.write(&name, chunk).await?;
    }
    Ok("2026-11-20".to_owned())
}
