//! Jetstream WebSocket client: the I/O half of the firehose source.
//!
//! Jetstream (v1, `wss://<host>/subscribe`) sends Bluesky events as JSON, one per WebSocket
//! message. [`Source`] connects, asks for the wanted collections and DIDs, resumes from a
//! cursor, decompresses zstd frames with the Jetstream dictionary, and hands out one
//! [`Message`] per event. Decoding the event stays in `firehose-core`, which does no I/O.
//!
//! # Layout
//!
//! - [`Config`] says where to connect and what to ask for; [`load_dictionary`] reads the zstd
//!   dictionary from a file (the project never ships it).
//! - [`Source`] is the connection: [`Source::next`] returns the next [`Message`] and reconnects
//!   by itself; [`Source::cursor`] is where a restart should resume.
//! - [`FrameDecoder`] and [`peek_time_us`] turn a frame into a [`Message`], without I/O.
//!
//! # Design
//!
//! A key design decision made in this crate is that **the network never ends the stream**.
//! Jetstream hosts restart, go silent without closing, and drop slow clients; the public ones
//! are several. [`Source::next`] reconnects on its own, forever: with exponential backoff and
//! jitter, failing over round-robin across [`Config::urls`], and after
//! [`Config::liveness_timeout`] without a frame. On every connection it resumes from the largest
//! `time_us` seen minus [`Config::rewind`], because `time_us` is not strictly monotonic and
//! hosts do not agree on it exactly: the stream is at-least-once, and duplicates are removed
//! downstream. Only configuration problems are errors.
//!
//! The client is **pull-based**: the socket is read only inside [`Source::next`], so a caller
//! that stops pulling stops the reading, TCP flow control pushes back on the server, and no
//! queue grows inside the client. The liveness timeout counts only the time spent waiting in
//! `next`.
//!
//! [`Source::next`] is **cancel-safe without losing progress**, because callers race it
//! against ticks and shutdown in `select!`: the connection attempt under way is kept in the
//! source, the backoff is a deadline rather than a sleep started by each call, and the time
//! waited for a frame is summed across calls. A caller that drops the future every 50 ms
//! still reconnects on schedule. [`Source::status`] shares whether a connection is up and when
//! the last event came, for health checks.
//!
//! Each event's `time_us` is found by a small scanner that stops after the first few dozen
//! bytes ([`peek_time_us`]); the event is not parsed twice. A frame that cannot be an event
//! (a corrupt zstd frame, too large, not UTF-8, no `time_us`) is a [`Message::Malformed`] that
//! the caller dead-letters; the stream goes on. A frame that breaks the WebSocket protocol
//! itself (text that is not UTF-8, a frame over [`MAX_EVENT_BYTES`]) ends the connection, as
//! RFC 6455 requires: it is a [`Message::Malformed`] too (without its bytes, which are lost
//! with the connection), the client reconnects from the cursor less the rewind, and if the
//! server sends the same frame again at the same place, resumes just past it.
//!
//! # Features
//!
//! `client` (default) is the WebSocket client. Without it the crate is only [`FrameDecoder`]
//! and [`peek_time_us`], which need no network stack.
//!
//! # Metrics
//!
//! Through the [`metrics`] facade: `firehose_jetstream_connected`,
//! `firehose_jetstream_reconnects_total`, `firehose_jetstream_messages_total`,
//! `firehose_jetstream_bytes_total`, `firehose_jetstream_lag_seconds` and
//! `firehose_events_received_total` (see `docs/METRICS.md`). Connections and disconnections are
//! logged through `tracing`; events never are.
//!
//! # Example
//!
//! ```no_run
//! # #[cfg(feature = "client")] {
//! use firehose_jetstream::{Config, Message, Source};
//! # async fn run() -> Result<(), firehose_jetstream::Error> {
//! let config = Config {
//!     wanted_collections: vec!["app.bsky.feed.post".to_owned()],
//!     ..Config::default()
//! };
//! let mut source = Source::new(config, None)?;
//! loop {
//!     match source.next().await? {
//!         Message::Event { json, time_us } => println!("{time_us}: {} bytes", json.len()),
//!         Message::Malformed { reason, error, .. } => eprintln!("{reason}: {error}"),
//!     }
//! }
//! # }
//! # }
//! ```

#[cfg(feature = "client")]
mod config;
mod frame;
#[cfg(feature = "client")]
mod source;

use std::path::PathBuf;

#[cfg(feature = "client")]
pub use config::{Config, MAX_WANTED_COLLECTIONS, MAX_WANTED_DIDS, PUBLIC_HOSTS, load_dictionary};
pub use frame::{FrameDecoder, MAX_EVENT_BYTES, peek_time_us};
#[cfg(feature = "client")]
pub use source::{Options, Source, SourceStatus};

/// One message from Jetstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// One event: its JSON text (decompressed, valid UTF-8) and its top-level `time_us`.
    Event {
        /// The event's JSON object.
        json: bytes::Bytes,
        /// The event's `time_us`, unix microseconds.
        time_us: i64,
    },
    /// A frame that is not an event; the stream goes on after it.
    Malformed {
        /// The frame as received (compressed when it was); empty when the frame broke the
        /// WebSocket protocol and was dropped with the connection.
        raw: bytes::Bytes,
        /// Why: `zstd` (not a valid frame), `oversized` (more than [`MAX_EVENT_BYTES`]),
        /// `utf8`, `json` (not an object with a top-level integer `time_us`), or `protocol`
        /// (a frame that breaks the WebSocket protocol in another way).
        reason: &'static str,
        /// What exactly is wrong.
        error: String,
    },
}

/// What can go wrong: configuration only, since network trouble is handled by reconnecting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// [`Config::urls`] is empty.
    #[error("no Jetstream URL is configured")]
    NoUrls,
    /// A URL cannot be used.
    #[error("invalid Jetstream URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as configured.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `compress` is set but there is no dictionary.
    #[error("compress=true needs the Jetstream zstd dictionary: set its path in the configuration")]
    MissingDictionary,
    /// The dictionary file cannot be read.
    #[error("cannot read the zstd dictionary {path}: {source}")]
    DictionaryFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// zstd does not accept the dictionary.
    #[error("cannot use the zstd dictionary: {reason}")]
    Dictionary {
        /// What zstd said.
        reason: String,
    },
    /// A setting is out of range.
    #[error("invalid Jetstream setting {setting}: {reason}")]
    InvalidSetting {
        /// Which setting.
        setting: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// TLS cannot be set up for `wss://` URLs.
    #[cfg(feature = "client")]
    #[error("cannot set up TLS: {source}")]
    Tls {
        /// What rustls said.
        #[from]
        source: rustls::Error,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
