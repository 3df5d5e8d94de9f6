//! The server's settings as command-line flags (feature `cli`): `firehose mock-jetstream` is
//! built from them.
//!
//! ```
//! use clap::Parser;
//! use firehose_mock_jetstream::cli::MockArgs;
//!
//! #[derive(Parser)]
//! struct Mock {
//!     #[command(flatten)]
//!     args: MockArgs,
//! }
//! let mock = Mock::parse_from(["mock", "--port", "0", "--rate", "500", "--drop-every", "10"]);
//! let config = mock.args.config().unwrap();
//! assert_eq!(config.rate, Some(500.0));
//! assert!(config.faults.drop_every.is_some());
//! ```

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::{Error, EventSource, Faults, MockConfig, Result};

/// Serve the Jetstream v1 protocol (`ws://HOST:PORT/subscribe`) with synthetic or replayed
/// events, for tests, demos and load. Clients may use `wantedCollections` (`prefix.*` too),
/// `wantedDids`, `cursor`, `compress=true`, `maxMessageSizeBytes`, `requireHello` and
/// `options_update`. The first line on standard output is the URL; progress goes to standard
/// error. Stops on Ctrl-C or SIGTERM.
///
/// The same seed and event count give the same events however often clients reconnect, and
/// the faults never lose an event from a client that reconnects with its cursor.
#[derive(Debug, Clone, clap::Args)]
pub struct MockArgs {
    /// Port to listen on; 0 picks a free one.
    #[arg(long)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Events published per second; 0 or absent: as fast as clients read.
    #[arg(long, value_name = "N")]
    pub rate: Option<f64>,
    /// Generate this many events in all, then go quiet; absent: no end.
    #[arg(long, value_name = "N", conflicts_with = "replay")]
    pub events: Option<u64>,
    /// Replay the events of this JSON-lines file (sent as they are) instead of generating.
    #[arg(long, value_name = "FILE")]
    pub replay: Option<PathBuf>,
    /// Send the frames scripted in this JSON-lines file exactly as written, for hostile input:
    /// one object a line, `{"text": "..."}`, `{"text_hex": "..."}` (bytes, UTF-8 or not),
    /// `{"binary_hex": "..."}` or `{"zstd": "...", "truncate": N}` (compressed with
    /// --zstd-dictionary; `zstd_hex` for bytes), each with an optional `"repeat": N` and
    /// `"time_us": T`.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["replay", "events"])]
    pub frames: Option<PathBuf>,
    /// Seed of the generated events: the same seed, the same events.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// `time_us` of the first generated event; default: when the server starts.
    #[arg(long, value_name = "MICROS")]
    pub start_time_us: Option<i64>,
    /// Events kept for clients that connect with a cursor (about 1 KB each), as Jetstream
    /// keeps its retention window; default: every event when --events, --replay or --frames
    /// bounds them, else the last 1000000.
    #[arg(long, value_name = "N")]
    pub window: Option<usize>,
    /// Close a connection that has caught up and then falls more than N events behind the
    /// newest, as Jetstream drops slow clients (the client resumes from its cursor); 0: never.
    #[arg(long, value_name = "N", default_value_t = crate::DEFAULT_MAX_BEHIND)]
    pub max_behind: u64,
    /// The zstd dictionary for clients asking for `compress=true` (without it they are refused).
    #[arg(long, value_name = "PATH")]
    pub zstd_dictionary: Option<PathBuf>,
    /// Fault: close each connection abruptly this many seconds after it opened.
    #[arg(long, value_name = "SECS")]
    pub drop_every: Option<f64>,
    /// Fault: stop sending, without closing, this many seconds after a connection opened...
    #[arg(long, value_name = "SECS")]
    pub stall_after: Option<f64>,
    /// ... for this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60.0)]
    pub stall_for: f64,
    /// Fault: after every N-th event send a broken frame (not JSON, a truncated event, or a
    /// corrupt zstd frame).
    #[arg(long, value_name = "N")]
    pub malformed_every: Option<u64>,
    /// Fault: send every N-th event twice.
    #[arg(long, value_name = "N")]
    pub duplicate_every: Option<u64>,
    /// Fault: send every N-th event after the one that follows it.
    #[arg(long, value_name = "N")]
    pub reorder_every: Option<u64>,
    /// Seconds between progress lines on standard error; 0: none.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    pub progress_every: f64,
}

fn seconds(flag: &str, value: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(value).map_err(|_| {
        Error::InvalidConfig(format!("--{flag} must be a number of seconds, not {value}"))
    })
}

impl MockArgs {
    /// The server's configuration; reads the replay, frames and dictionary files named.
    pub fn config(&self) -> Result<MockConfig> {
        let args = self;
        let events = match (&args.replay, &args.frames) {
            (Some(path), _) => EventSource::replay_file(path)?,
            (None, Some(path)) => EventSource::frames_file(path)?,
            (None, None) => EventSource::Generated {
                seed: args.seed,
                events: args.events,
                start_time_us: args.start_time_us,
            },
        };
        let zstd_dictionary = match &args.zstd_dictionary {
            Some(path) => Some(
                std::fs::read(path)
                    .map_err(|e| e.to_string())
                    .and_then(|bytes| match bytes.is_empty() {
                        true => Err("the file is empty".to_owned()),
                        false => Ok(bytes),
                    })
                    .map_err(|e| {
                        Error::InvalidConfig(format!(
                            "cannot read the zstd dictionary {}: {e}",
                            path.display()
                        ))
                    })?,
            ),
            None => None,
        };
        let config = MockConfig {
            host: args.host,
            port: args.port,
            events,
            rate: args.rate.filter(|rate| *rate != 0.0),
            window: args.window,
            max_behind: Some(args.max_behind).filter(|max| *max != 0),
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
        Ok(config)
    }

    /// How often to report progress; zero for never.
    pub fn progress_every(&self) -> Result<Duration> {
        seconds("progress-every", self.progress_every)
    }
}
