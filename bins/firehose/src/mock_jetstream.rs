//! `firehose mock-jetstream`: a Jetstream v1 server on loopback for tests, demos and load.

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use firehose_mock_jetstream::{EventSource, Faults, MockConfig, MockServer};

use crate::Failure;

/// Serve the Jetstream v1 protocol (`ws://HOST:PORT/subscribe`) with synthetic or replayed
/// events, for tests, demos and load. Clients may use `wantedCollections` (`prefix.*` too),
/// `wantedDids`, `cursor`, `compress=true`, `maxMessageSizeBytes`, `requireHello` and
/// `options_update`. The first line on standard output is the URL; progress goes to standard
/// error. Stops on Ctrl-C or SIGTERM.
///
/// The same seed and event count give the same events however often clients reconnect, and
/// the faults never lose an event from a client that reconnects with its cursor.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Port to listen on; 0 picks a free one.
    #[arg(long)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Events published per second; 0 or absent: as fast as clients read.
    #[arg(long, value_name = "N")]
    rate: Option<f64>,
    /// Generate this many events in all, then go quiet; absent: no end.
    #[arg(long, value_name = "N", conflicts_with = "replay")]
    events: Option<u64>,
    /// Replay the events of this JSON-lines file (sent as they are) instead of generating.
    #[arg(long, value_name = "FILE")]
    replay: Option<PathBuf>,
    /// Send the frames scripted in this JSON-lines file exactly as written, for hostile input:
    /// one object a line, `{"text": "..."}`, `{"text_hex": "..."}` (bytes, UTF-8 or not),
    /// `{"binary_hex": "..."}` or `{"zstd": "...", "truncate": N}` (compressed with
    /// --zstd-dictionary; `zstd_hex` for bytes), each with an optional `"repeat": N` and
    /// `"time_us": T`.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["replay", "events"])]
    frames: Option<PathBuf>,
    /// Seed of the generated events: the same seed, the same events.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// `time_us` of the first generated event; default: when the server starts.
    #[arg(long, value_name = "MICROS")]
    start_time_us: Option<i64>,
    /// Events kept for clients that connect with a cursor (about 1 KB each).
    #[arg(long, value_name = "N", default_value_t = 1_000_000)]
    window: usize,
    /// The zstd dictionary for clients asking for `compress=true` (without it they are refused).
    #[arg(long, value_name = "PATH")]
    zstd_dictionary: Option<PathBuf>,
    /// Fault: close each connection abruptly this many seconds after it opened.
    #[arg(long, value_name = "SECS")]
    drop_every: Option<f64>,
    /// Fault: stop sending, without closing, this many seconds after a connection opened...
    #[arg(long, value_name = "SECS")]
    stall_after: Option<f64>,
    /// ... for this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60.0)]
    stall_for: f64,
    /// Fault: after every N-th event send a broken frame (not JSON, a truncated event, or a
    /// corrupt zstd frame).
    #[arg(long, value_name = "N")]
    malformed_every: Option<u64>,
    /// Fault: send every N-th event twice.
    #[arg(long, value_name = "N")]
    duplicate_every: Option<u64>,
    /// Fault: send every N-th event after the one that follows it.
    #[arg(long, value_name = "N")]
    reorder_every: Option<u64>,
    /// Seconds between progress lines on standard error; 0: none.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    progress_every: f64,
}

fn seconds(flag: &str, value: f64) -> Result<Duration, Failure> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| Failure::Usage(format!("--{flag} must be a number of seconds, not {value}")))
}

pub(crate) fn run(args: Args) -> Result<(), Failure> {
    let events = match (&args.replay, &args.frames) {
        (Some(path), _) => {
            EventSource::replay_file(path).map_err(|e| Failure::Usage(e.to_string()))?
        }
        (None, Some(path)) => {
            EventSource::frames_file(path).map_err(|e| Failure::Usage(e.to_string()))?
        }
        (None, None) => EventSource::Generated {
            seed: args.seed,
            events: args.events,
            start_time_us: args.start_time_us,
        },
    };
    let zstd_dictionary = match &args.zstd_dictionary {
        Some(path) => Some(
            firehose_jetstream::load_dictionary(path).map_err(|e| Failure::Usage(e.to_string()))?,
        ),
        None => None,
    };
    let config = MockConfig {
        host: args.host,
        port: args.port,
        events,
        rate: args.rate.filter(|rate| *rate != 0.0),
        window: args.window,
        zstd_dictionary,
        faults: Faults {
            drop_every: args
                .drop_every
                .map(|s| seconds("drop-every", s))
                .transpose()?,
            stall_after: args
                .stall_after
                .map(|s| seconds("stall-after", s))
                .transpose()?,
            stall_for: seconds("stall-for", args.stall_for)?,
            malformed_every: args.malformed_every,
            duplicate_every: args.duplicate_every,
            reorder_every: args.reorder_every,
        },
    };
    let progress_every = seconds("progress-every", args.progress_every)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Usage(format!("cannot start the runtime: {e}")))?;
    runtime.block_on(serve(config, progress_every))
}

async fn serve(config: MockConfig, progress_every: Duration) -> Result<(), Failure> {
    let server = MockServer::start(config)
        .await
        .map_err(|e| Failure::Usage(e.to_string()))?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", server.url())
            .and_then(|()| out.flush())
            .map_err(|e| Failure::Usage(format!("cannot write the URL: {e}")))?;
    }
    eprintln!("mock-jetstream: listening on {}", server.url());
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Failure::Usage(format!("cannot handle SIGTERM: {e}")))?;
    let mut progress = tokio::time::interval(if progress_every.is_zero() {
        Duration::MAX / 4
    } else {
        progress_every
    });
    progress.tick().await;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
            _ = progress.tick() => {
                let s = server.sent();
                eprintln!(
                    "mock-jetstream: {} events published, {} sent ({} bytes) over {} connections; \
                     faults: {} drops, {} stalls, {} malformed, {} duplicates, {} reordered",
                    s.published, s.events, s.bytes, s.connections,
                    s.drops, s.stalls, s.malformed, s.duplicates, s.reordered,
                );
            }
        }
    }
    let sent = server.sent();
    server.shutdown().await;
    eprintln!(
        "mock-jetstream: stopped after sending {} events over {} connections ({} dropped)",
        sent.events, sent.connections, sent.drops
    );
    Ok(())
}
