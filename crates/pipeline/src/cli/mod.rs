//! The pipeline's settings as command-line flags (feature `cli`), to flatten into a clap
//! command. `firehose run`, `ingest` and `write` are built from these groups, and an
//! embedder's own binary can be too: it then takes the same flags and `FIREHOSE_*` variables,
//! with the same defaults, as the deployment's configuration expects.
//!
//! ```
//! use clap::Parser;
//! use firehose_pipeline::cli::{SourceArgs, WriterArgs};
//!
//! #[derive(Parser)]
//! struct MyArchiver {
//!     #[command(flatten)]
//!     source: SourceArgs,
//!     #[command(flatten)]
//!     writer: WriterArgs,
//! }
//! let args = MyArchiver::parse_from(["my-archiver", "--collection", "app.bsky.feed.post", "-o", "/srv/data"]);
//! let config = args.source.jetstream_config().unwrap();
//! assert_eq!(config.wanted_collections, ["app.bsky.feed.post"]);
//! assert_eq!(args.writer.out, "/srv/data");
//! ```

pub mod settings_file;

use std::path::PathBuf;
use std::time::Duration;

use firehose_core::units::{parse_duration, parse_size};
use firehose_sink::{Compression, ParquetOptions, RollPolicy};

use crate::{JetstreamConfig, PipelineBuilder};

/// Where events come from: the Jetstream hosts, the filters, and how the source resumes.
#[derive(Debug, Clone, clap::Args)]
pub struct SourceArgs {
    /// Jetstream WebSocket URL with its path, e.g. `wss://jetstream2.us-east.bsky.network/subscribe`
    /// (repeat, or separate with commas, for fail-over). Default: the four public v1 hosts.
    #[arg(
        long = "jetstream-url",
        env = "FIREHOSE_JETSTREAM_URL",
        value_delimiter = ','
    )]
    pub jetstream_url: Vec<String>,
    /// Only these collections (NSIDs, or prefixes like `app.bsky.graph.*`); default all.
    /// Identity and account events always come.
    #[arg(
        long = "collection",
        env = "FIREHOSE_COLLECTIONS",
        value_delimiter = ','
    )]
    pub collections: Vec<String>,
    /// Only these repositories (DIDs); default all.
    #[arg(long = "did", env = "FIREHOSE_DIDS", value_delimiter = ',')]
    pub dids: Vec<String>,
    /// Ask for zstd-compressed frames, decoded with Jetstream's dictionary at this path
    /// (about a third of the bandwidth).
    #[arg(long, env = "FIREHOSE_ZSTD_DICTIONARY")]
    pub zstd_dictionary: Option<PathBuf>,
    /// On every (re)connect, resume this far before the newest event received (or the
    /// checkpoint), so nothing is missed; the duplicates this causes are removed downstream.
    #[arg(long, env = "FIREHOSE_REWIND", default_value = "5s", value_parser = parse_duration)]
    pub rewind: Duration,
    /// Reconnect when no message arrives for this long.
    #[arg(long, env = "FIREHOSE_LIVENESS_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub liveness_timeout: Duration,
    /// `/health` answers 503 when no event has arrived for this long (or none since the start).
    /// The whole firehose carries hundreds a second; raise it for filters that match rarely,
    /// or set 0 to turn the check off. (No connection for longer than --liveness-timeout is
    /// always unhealthy.)
    #[arg(long, env = "FIREHOSE_MAX_EVENT_SILENCE", default_value = "2m", value_parser = parse_duration)]
    pub max_event_silence: Duration,
    /// Where to start (Unix microseconds) when there is no checkpoint yet; default: live.
    #[arg(long, env = "FIREHOSE_START_CURSOR")]
    pub start_cursor: Option<i64>,
    /// For `ingest` given the dataset (`--out`): start live although the dataset holds data
    /// and neither Redis nor the dataset has a checkpoint, accepting a gap. Without it,
    /// ingest refuses to start, so that a Redis that lost its data cannot open a silent gap.
    #[arg(long, env = "FIREHOSE_START_LIVE")]
    pub start_live: bool,
}

impl SourceArgs {
    /// The source's configuration; reads the zstd dictionary when one is named.
    pub fn jetstream_config(&self) -> Result<JetstreamConfig, firehose_jetstream::Error> {
        let mut config = JetstreamConfig::default();
        if !self.jetstream_url.is_empty() {
            config.urls = self.jetstream_url.clone();
        }
        config.wanted_collections = self.collections.clone();
        config.wanted_dids = self.dids.clone();
        config.rewind = self.rewind;
        config.liveness_timeout = self.liveness_timeout;
        if let Some(path) = &self.zstd_dictionary {
            config.compress = true;
            config.zstd_dictionary = Some(firehose_jetstream::load_dictionary(path)?);
        }
        Ok(config)
    }

    /// Sets the start cursor and the allowed silence on `builder`.
    pub fn apply(&self, builder: PipelineBuilder) -> PipelineBuilder {
        builder
            .with_start_cursor(self.start_cursor)
            .with_start_live(self.start_live)
            .with_max_event_silence(self.max_event_silence)
    }
}

/// Where and how files are written.
#[derive(Debug, Clone, clap::Args)]
pub struct WriterArgs {
    /// The dataset root: a local directory, or `s3://bucket/prefix` (endpoint, region and
    /// credentials from the standard AWS variables: AWS_ENDPOINT_URL, AWS_REGION,
    /// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY).
    #[arg(long, short = 'o', env = "FIREHOSE_OUT", default_value = "./data")]
    pub out: String,
    /// Parquet compression: zstd, snappy, gzip, lz4 or none.
    #[arg(long, env = "FIREHOSE_COMPRESSION", default_value_t = Compression::Zstd)]
    pub compression: Compression,
    /// Close a partition's file at about this much Parquet.
    #[arg(long, env = "FIREHOSE_TARGET_FILE_SIZE", default_value = "100MB", value_parser = parse_size)]
    pub target_file_size: u64,
    /// Close files when their oldest event has waited this long.
    #[arg(long, env = "FIREHOSE_MAX_FILE_AGE", default_value = "5m", value_parser = parse_duration)]
    pub max_file_age: Duration,
    /// Keep an hour's file open this long after the hour ends, for late events.
    #[arg(long, env = "FIREHOSE_HOUR_GRACE", default_value = "3m", value_parser = parse_duration)]
    pub hour_grace: Duration,
    /// Close files when they hold this much event JSON (bounds the writer's memory).
    #[arg(long, env = "FIREHOSE_MAX_OPEN_BYTES", default_value = "32MiB", value_parser = parse_size)]
    pub max_open_bytes: u64,
    /// Threads that encode a closed batch's partitions at once, for catch-ups faster than one
    /// core encodes (default: the cores, at most 4).
    #[arg(long, env = "FIREHOSE_ENCODE_THREADS", value_parser = clap::value_parser!(u64).range(1..=64))]
    pub encode_threads: Option<u64>,
}

impl WriterArgs {
    /// Sets the roll policy and the Parquet options on `builder`.
    pub fn apply(&self, builder: PipelineBuilder) -> PipelineBuilder {
        let builder = builder
            .with_roll_policy(RollPolicy {
                target_file_bytes: self.target_file_size,
                max_age: self.max_file_age,
                grace: self.hour_grace,
                max_open_bytes: self.max_open_bytes,
            })
            .with_parquet(ParquetOptions {
                compression: self.compression,
                ..ParquetOptions::default()
            });
        match self.encode_threads {
            Some(threads) => builder.with_encode_threads(threads as usize),
            None => builder,
        }
    }
}

/// The Redis buffer (feature `redis`).
#[cfg(feature = "redis")]
#[derive(Debug, Clone, clap::Args)]
pub struct RedisArgs {
    /// Redis URL, `redis://host:6379` or `rediss://` for TLS. The password comes from
    /// FIREHOSE_REDIS_PASSWORD (and the user from FIREHOSE_REDIS_USERNAME), never from the URL
    /// in logs.
    #[arg(long, env = "FIREHOSE_REDIS_URL", hide_env_values = true)]
    pub redis_url: firehose_core::location::Secret,
    /// The stream key.
    #[arg(long, env = "FIREHOSE_REDIS_STREAM", default_value = "firehose:events")]
    pub redis_stream: String,
    /// For `rediss://`: trust the CA certificates in this PEM file (a private CA or a
    /// self-signed server certificate) instead of the bundled web PKI roots.
    #[arg(long, env = "FIREHOSE_REDIS_TLS_CA_CERT", value_name = "PEM")]
    pub redis_tls_ca_cert: Option<PathBuf>,
}

#[cfg(feature = "redis")]
impl RedisArgs {
    /// Connects to the Redis buffer, with the rest of its settings from the environment
    /// ([`firehose_buffer::redis::RedisBufferBuilder::from_env`]).
    pub async fn open(
        &self,
    ) -> firehose_buffer::Result<std::sync::Arc<firehose_buffer::redis::RedisBuffer>> {
        let mut builder = firehose_buffer::redis::RedisBufferBuilder::from_env()
            .with_url(self.redis_url.expose())
            .with_stream(&self.redis_stream);
        if let Some(ca) = &self.redis_tls_ca_cert {
            builder = builder.with_tls_ca_cert(ca);
        }
        Ok(std::sync::Arc::new(builder.build().await?))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Command {
        #[command(flatten)]
        source: SourceArgs,
        #[command(flatten)]
        writer: WriterArgs,
    }

    #[test]
    fn the_flags_defaults_are_the_librarys() {
        let args = Command::parse_from(["test"]);
        let config = args.source.jetstream_config().unwrap();
        let library = JetstreamConfig::default();
        assert_eq!(config.urls, library.urls);
        assert_eq!(config.rewind, library.rewind);
        assert_eq!(config.liveness_timeout, library.liveness_timeout);
        assert_eq!(
            args.source.max_event_silence,
            crate::DEFAULT_MAX_EVENT_SILENCE
        );
        let roll = RollPolicy::default();
        assert_eq!(args.writer.target_file_size, roll.target_file_bytes);
        assert_eq!(args.writer.max_file_age, roll.max_age);
        assert_eq!(args.writer.hour_grace, roll.grace);
        assert_eq!(args.writer.max_open_bytes, roll.max_open_bytes);
        assert_eq!(
            args.writer.compression,
            ParquetOptions::default().compression
        );
    }
}
