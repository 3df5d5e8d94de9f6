//! `firehose generate`: write synthetic Jetstream events as JSON lines.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use firehose_synth::Config;

use crate::Failure;

/// Write realistic synthetic Jetstream v1 events, one JSON object per line: the live mix of
/// kinds and collections, skewed account activity, `time_us` advancing at `--rate`.
/// The same seed gives the same events.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// How many events to write.
    #[arg(long, short = 'n', default_value_t = 10_000)]
    events: u64,
    /// Random seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Events per second of event time (`time_us`).
    #[arg(long, default_value_t = 500.0)]
    rate: f64,
    /// `time_us` of the first event (default: 2026-11-20T00:00:00Z).
    #[arg(long)]
    start_time_us: Option<i64>,
    /// Where to write; standard output when absent.
    #[arg(long, short = 'o')]
    out: Option<PathBuf>,
}

pub(crate) fn run(args: Args) -> Result<(), Failure> {
    if !(args.rate.is_finite() && args.rate > 0.0) {
        return Err(Failure::Usage(format!(
            "--rate must be a positive number, not {}",
            args.rate
        )));
    }
    let mut config = Config {
        seed: args.seed,
        rate: args.rate,
        ..Config::default()
    };
    if let Some(start) = args.start_time_us {
        if start < 0 {
            return Err(Failure::Usage(format!(
                "--start-time-us must not be negative, not {start}"
            )));
        }
        config.start_time_us = start;
    }
    let target = args
        .out
        .as_ref()
        .map_or_else(|| "standard output".to_owned(), |p| p.display().to_string());
    let sink: Box<dyn Write> = match &args.out {
        Some(path) => Box::new(
            File::create(path)
                .map_err(|e| Failure::Usage(format!("cannot create {target}: {e}")))?,
        ),
        None => Box::new(io::stdout().lock()),
    };
    let mut out = BufWriter::with_capacity(1 << 20, sink);
    firehose_synth::write_json_lines(config, args.events, &mut out)
        .map_err(|e| Failure::Usage(format!("cannot write to {target}: {e}")))
}
