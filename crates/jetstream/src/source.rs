//! The connection to Jetstream: connect, read, reconnect.

use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{SinkExt, StreamExt};
use metrics::{Counter, Gauge};
use rand::Rng;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use tracing::{info, warn};

use crate::config::check_filters;
use crate::{Config, Error, FrameDecoder, MAX_EVENT_BYTES, Message};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The filters that can change on an open connection, with an `options_update` message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// As [`Config::wanted_collections`].
    pub wanted_collections: Vec<String>,
    /// As [`Config::wanted_dids`].
    pub wanted_dids: Vec<String>,
    /// As [`Config::max_message_size_bytes`].
    pub max_message_size_bytes: Option<u64>,
}

/// The connection's state as others see it, shared by [`Source::status`]: for a health check
/// that must know, while the source waits in [`Source::next`], whether a connection is up and
/// when the last event came.
#[derive(Debug)]
pub struct SourceStatus {
    connected: AtomicBool,
    /// Unix ms of the last connect or disconnect; the source's creation before the first.
    since_ms: AtomicI64,
    /// Unix ms of the last event received; the source's creation before the first.
    last_event_ms: AtomicI64,
}

impl SourceStatus {
    fn new() -> SourceStatus {
        let now = unix_ms();
        SourceStatus {
            connected: AtomicBool::new(false),
            since_ms: AtomicI64::new(now),
            last_event_ms: AtomicI64::new(now),
        }
    }

    /// Whether a connection is open.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// How long no connection has been open (since the source was created, when none has
    /// opened yet); `None` while one is open.
    pub fn disconnected_for(&self) -> Option<Duration> {
        if self.is_connected() {
            return None;
        }
        Some(age(self.since_ms.load(Ordering::Relaxed)))
    }

    /// How long since the last event arrived (since the source was created, when none has).
    pub fn last_event_age(&self) -> Duration {
        age(self.last_event_ms.load(Ordering::Relaxed))
    }

    fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Relaxed);
        self.since_ms.store(unix_ms(), Ordering::Relaxed);
    }
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn age(since_ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(unix_ms().saturating_sub(since_ms)).unwrap_or(0))
}

/// A connection attempt in flight, kept in the source so that a caller that drops
/// [`Source::next`] (a `select!` with a tick) does not throw the attempt away.
struct Attempt {
    /// The configured URL, for the logs.
    base: String,
    /// The cursor the connection resumes from.
    resume: Option<i64>,
    socket: Pin<Box<dyn Future<Output = Result<Socket, String>> + Send>>,
}

/// A Jetstream subscription that survives the network: see the [crate docs](crate).
pub struct Source {
    config: Config,
    decoder: FrameDecoder,
    tls: Option<Connector>,
    socket: Option<Socket>,
    /// The connection attempt under way, if any.
    attempt: Option<Attempt>,
    /// No attempt before this instant: the backoff, as a deadline rather than a sleep, so it
    /// runs out even when the caller drops and re-creates [`Source::next`] more often than it
    /// lasts.
    retry_at: Option<Instant>,
    /// Time spent waiting in [`Source::next`] since the last frame, summed across calls that
    /// were dropped: the liveness timeout is measured against it.
    waited: Duration,
    /// The URL in use, or to try next.
    url_index: usize,
    /// The largest `time_us` seen, or the start cursor.
    cursor: Option<i64>,
    /// Connection attempts in a row that failed or delivered nothing; drives the backoff.
    failures: u32,
    /// Connections opened so far.
    connections: u64,
    /// Messages received on the current connection.
    delivered: u64,
    /// The cursor when the server last broke the protocol (see [`Source::broken`]).
    broken_at: Option<i64>,
    /// Where the next connection resumes, without the rewind, to get past a frame that breaks
    /// the protocol.
    skip_to: Option<i64>,
    /// Whether an event from the future was logged on this connection.
    warned_future: bool,
    status: Arc<SourceStatus>,
    metrics: Metrics,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("url", &self.config.urls[self.url_index])
            .field("connected", &self.socket.is_some())
            .field("cursor", &self.cursor)
            .field("connections", &self.connections)
            .finish_non_exhaustive()
    }
}

impl Source {
    /// A source for `config`, resuming from `start_cursor` (unix microseconds) when given, live
    /// otherwise. It connects on the first [`next`](Self::next).
    pub fn new(config: Config, start_cursor: Option<i64>) -> Result<Source, Error> {
        config.validate()?;
        let decoder = FrameDecoder::new(if config.compress {
            config.zstd_dictionary.as_deref()
        } else {
            None
        })?;
        let tls = if config.urls.iter().any(|url| url.starts_with("wss://")) {
            Some(tls_connector()?)
        } else {
            None
        };
        Ok(Source {
            config,
            decoder,
            tls,
            socket: None,
            attempt: None,
            retry_at: None,
            waited: Duration::ZERO,
            url_index: 0,
            cursor: start_cursor,
            failures: 0,
            connections: 0,
            delivered: 0,
            broken_at: None,
            skip_to: None,
            warned_future: false,
            status: Arc::new(SourceStatus::new()),
            metrics: Metrics::new(),
        })
    }

    /// The next message. Waits for it, reconnecting as often as needed; errors only for
    /// configuration problems.
    ///
    /// Cancel-safe: dropping the future loses no message, and no progress either. A
    /// connection attempt under way goes on at the next call, the backoff is a deadline that
    /// runs out whether or not a call is waiting, and the liveness timeout counts the time
    /// waited across calls. A caller may poll it in a `select!` beside a short tick.
    pub async fn next(&mut self) -> Result<Message, Error> {
        loop {
            let Some(socket) = self.socket.as_mut() else {
                self.connect().await;
                continue;
            };
            let remaining = self.config.liveness_timeout.saturating_sub(self.waited);
            let clock = WaitClock {
                waited: &mut self.waited,
                since: Instant::now(),
            };
            let read = tokio::time::timeout(remaining, socket.next()).await;
            drop(clock);
            if let Ok(Some(Ok(_))) = &read {
                self.waited = Duration::ZERO;
            }
            let frame = match read {
                Ok(Some(Ok(frame))) => frame,
                Ok(Some(Err(error))) => match broken_by_server(&error) {
                    Some(reason) => return Ok(self.broken(reason, &error)),
                    None => {
                        self.disconnect(error);
                        continue;
                    }
                },
                Ok(None) => {
                    self.disconnect("the connection ended");
                    continue;
                }
                Err(_) => {
                    let reason = format!("no frame for {:?}", self.config.liveness_timeout);
                    self.disconnect(reason);
                    continue;
                }
            };
            let message = match frame {
                Frame::Text(text) => {
                    self.count_frame(text.len());
                    self.decoder.decode_text(text.into())
                }
                Frame::Binary(bytes) => {
                    self.count_frame(bytes.len());
                    self.decoder.decode_binary(bytes)
                }
                Frame::Close(close) => {
                    let reason = match close {
                        Some(frame) => format!("the server closed it ({frame})"),
                        None => "the server closed it".to_owned(),
                    };
                    self.disconnect(reason);
                    continue;
                }
                Frame::Ping(_) | Frame::Pong(_) | Frame::Frame(_) => continue,
            };
            if let Message::Event { time_us, .. } = message {
                self.metrics.events.increment(1);
                self.status
                    .last_event_ms
                    .store(unix_ms(), Ordering::Relaxed);
                let now_us = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
                let ahead =
                    i64::try_from(self.config.max_clock_ahead.as_micros()).unwrap_or(i64::MAX);
                if time_us <= now_us.saturating_add(ahead) {
                    self.cursor = Some(self.cursor.map_or(time_us, |c| c.max(time_us)));
                    self.metrics
                        .lag
                        .set(now_us.saturating_sub(time_us) as f64 / 1e6);
                } else if !self.warned_future {
                    self.warned_future = true;
                    warn!(
                        time_us,
                        ahead_s = (time_us - now_us) / 1_000_000,
                        "An event is stamped in the future; it does not move the cursor (further ones on this connection are not logged)."
                    );
                }
            }
            return Ok(message);
        }
    }

    /// The largest `time_us` received so far, or the start cursor when nothing larger came.
    /// A restart that resumes from here (the source subtracts its rewind) misses nothing.
    pub fn cursor(&self) -> Option<i64> {
        self.cursor
    }

    /// Whether a connection is open.
    pub fn is_connected(&self) -> bool {
        self.socket.is_some()
    }

    /// The connection's state, shared: it stays current while the source runs elsewhere.
    pub fn status(&self) -> Arc<SourceStatus> {
        self.status.clone()
    }

    /// Changes the filters: at once on the open connection (`options_update`), and for every
    /// later connection.
    pub async fn update_options(&mut self, options: Options) -> Result<(), Error> {
        check_filters(&options.wanted_collections, &options.wanted_dids)?;
        self.config.wanted_collections = options.wanted_collections;
        self.config.wanted_dids = options.wanted_dids;
        self.config.max_message_size_bytes = options.max_message_size_bytes;
        // An attempt under way would ask for the old filters: the next one asks for these.
        self.attempt = None;
        if let Some(socket) = self.socket.as_mut() {
            let update = options_update(&self.config);
            if let Err(error) = socket.send(update).await {
                self.disconnect(error);
            }
        }
        Ok(())
    }

    /// The server sent a frame that breaks the WebSocket protocol: text that is not UTF-8, a
    /// message over [`MAX_EVENT_BYTES`], a reserved opcode. tungstenite drops the connection
    /// with the frame, as RFC 6455 requires, so its bytes are gone; the caller gets a
    /// [`Message::Malformed`] with no bytes, to dead-letter and count. The next connection
    /// resumes from the cursor less the rewind, as after any drop, so nothing around the frame
    /// is lost. When it happens again with no newer event in between, the server is sending
    /// the same broken frame at the same place: the next connection then resumes just after
    /// the newest event instead, without the rewind, which gets past a frame that sits at that
    /// time.
    fn broken(&mut self, reason: &'static str, error: &WsError) -> Message {
        self.metrics.messages.increment(1);
        let again = self.broken_at.is_some() && self.broken_at == self.cursor;
        self.broken_at = self.cursor;
        if again {
            self.skip_to = self.cursor.map(|cursor| cursor.saturating_add(1));
        }
        self.disconnect(format_args!(
            "the server broke the WebSocket protocol ({error})"
        ));
        Message::Malformed {
            raw: bytes::Bytes::new(),
            reason,
            error: format!(
                "the server broke the WebSocket protocol, and the frame was dropped with the connection: {error}"
            ),
        }
    }

    fn count_frame(&mut self, bytes: usize) {
        self.delivered += 1;
        self.metrics.messages.increment(1);
        self.metrics.bytes.increment(bytes as u64);
    }

    /// Opens a connection, retrying with backoff and failover until one opens. Cancel-safe:
    /// the attempt under way and the time of the next one are kept in `self`.
    async fn connect(&mut self) {
        loop {
            if let Some(at) = self.retry_at {
                tokio::time::sleep_until(at).await;
            }
            if self.attempt.is_none() {
                self.attempt = Some(self.start_attempt());
            }
            let Some(attempt) = self.attempt.as_mut() else {
                continue;
            };
            let result = (&mut attempt.socket).await;
            let Some(attempt) = self.attempt.take() else {
                continue;
            };
            match result {
                Ok(socket) => {
                    info!(url = %attempt.base, cursor = ?attempt.resume, "Connected to Jetstream.");
                    if self.connections > 0 {
                        self.metrics.reconnects.increment(1);
                    }
                    self.connections += 1;
                    self.delivered = 0;
                    self.waited = Duration::ZERO;
                    self.retry_at = None;
                    self.skip_to = None;
                    self.warned_future = false;
                    self.metrics.connected.set(1.0);
                    self.status.set_connected(true);
                    self.socket = Some(socket);
                    return;
                }
                Err(error) => {
                    warn!(url = %attempt.base, %error, "Cannot connect to Jetstream.");
                    self.failed();
                }
            }
        }
    }

    /// A connection attempt to the current URL, from the cursor less the rewind.
    fn start_attempt(&self) -> Attempt {
        let base = self.config.urls[self.url_index].clone();
        let rewind = i64::try_from(self.config.rewind.as_micros()).unwrap_or(i64::MAX);
        let resume = self
            .skip_to
            .or_else(|| self.cursor.map(|cursor| cursor.saturating_sub(rewind)));
        let url = self.config.url(&base, resume);
        // No message or frame larger than an event may be: memory stays bounded, and a larger
        // one breaks the protocol (see `broken`).
        let limits = WebSocketConfig::default()
            .max_message_size(Some(MAX_EVENT_BYTES))
            .max_frame_size(Some(MAX_EVENT_BYTES));
        let tls = self.tls.clone();
        let timeout = self.config.connect_timeout;
        let hello = self
            .config
            .require_hello
            .then(|| options_update(&self.config));
        let socket = async move {
            let connecting =
                tokio_tungstenite::connect_async_tls_with_config(url, Some(limits), true, tls);
            let mut socket = match tokio::time::timeout(timeout, connecting).await {
                Ok(Ok((socket, _response))) => socket,
                Ok(Err(error)) => return Err(error.to_string()),
                Err(_) => return Err(format!("no answer in {timeout:?}")),
            };
            if let Some(hello) = hello {
                socket
                    .send(hello)
                    .await
                    .map_err(|error| format!("cannot send options_update: {error}"))?;
            }
            Ok(socket)
        };
        Attempt {
            base,
            resume,
            socket: Box::pin(socket),
        }
    }

    fn disconnect(&mut self, reason: impl Display) {
        self.socket = None;
        self.metrics.connected.set(0.0);
        self.status.set_connected(false);
        let url = &self.config.urls[self.url_index];
        warn!(%url, messages = self.delivered, %reason, "Disconnected from Jetstream; reconnecting.");
        if self.delivered > 0 {
            // A connection that worked: try the same host again, soon.
            self.failures = 0;
            self.retry_at = Some(Instant::now() + self.backoff());
        } else {
            self.failed();
        }
    }

    /// Counts a failure, moves on to the next URL, and sets when the next attempt may start.
    fn failed(&mut self) {
        self.failures = self.failures.saturating_add(1);
        self.url_index = (self.url_index + 1) % self.config.urls.len();
        self.retry_at = Some(Instant::now() + self.backoff());
    }

    /// The delay before the next attempt: exponential in the failures so far, with jitter
    /// (between half and all of it) so clients do not reconnect in step.
    fn backoff(&self) -> Duration {
        let min = self.config.backoff_min.as_secs_f64();
        let max = self.config.backoff_max.as_secs_f64();
        let exponential = (min * 2f64.powi(self.failures.min(30) as i32)).min(max);
        let jitter: f64 = rand::rng().random_range(0.5..=1.0);
        Duration::from_secs_f64(exponential * jitter)
    }
}

/// Adds the time since `since` to `waited` when dropped: when the read it times completes, and
/// when the caller drops [`Source::next`] in the middle of it.
struct WaitClock<'a> {
    waited: &'a mut Duration,
    since: Instant,
}

impl Drop for WaitClock<'_> {
    fn drop(&mut self) {
        *self.waited += self.since.elapsed();
    }
}

/// The dead-letter reason when `error` means the server sent a frame that breaks the
/// protocol, `None` when it is network trouble (a reset, a timeout, a closed socket).
fn broken_by_server(error: &WsError) -> Option<&'static str> {
    use tokio_tungstenite::tungstenite::error::ProtocolError as P;
    match error {
        WsError::Utf8(_) => Some("utf8"),
        WsError::Capacity(_) => Some("oversized"),
        WsError::Protocol(
            P::NonZeroReservedBits
            | P::MaskedFrameFromServer
            | P::FragmentedControlFrame
            | P::ControlFrameTooBig
            | P::UnknownControlFrameType(_)
            | P::UnknownDataFrameType(_)
            | P::UnexpectedContinueFrame
            | P::ExpectedFragment(_)
            | P::InvalidOpcode(_)
            | P::InvalidCloseSequence,
        ) => Some("protocol"),
        _ => None,
    }
}

/// `{"type":"options_update","payload":{...}}` for the filters in `config`.
fn options_update(config: &Config) -> Frame {
    let mut payload = serde_json::json!({
        "wantedCollections": config.wanted_collections,
        "wantedDids": config.wanted_dids,
    });
    if let Some(max) = config.max_message_size_bytes {
        payload["maxMessageSizeBytes"] = max.into();
    }
    let update = serde_json::json!({ "type": "options_update", "payload": payload });
    Frame::text(update.to_string())
}

/// TLS for `wss://`: rustls with ring and Mozilla's roots, chosen here rather than left to
/// rustls's process-wide default, which is ambiguous when several providers are built.
fn tls_connector() -> Result<Connector, Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Connector::Rustls(Arc::new(config)))
}

/// Handles to the metrics, registered once.
struct Metrics {
    connected: Gauge,
    reconnects: Counter,
    messages: Counter,
    bytes: Counter,
    lag: Gauge,
    events: Counter,
}

impl Metrics {
    fn new() -> Self {
        Metrics {
            connected: metrics::gauge!("firehose_jetstream_connected"),
            reconnects: metrics::counter!("firehose_jetstream_reconnects_total"),
            messages: metrics::counter!("firehose_jetstream_messages_total"),
            bytes: metrics::counter!("firehose_jetstream_bytes_total"),
            lag: metrics::gauge!("firehose_jetstream_lag_seconds"),
            events: metrics::counter!("firehose_events_received_total"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_maximum_with_jitter() {
        let config = Config {
            urls: vec!["ws://127.0.0.1:1/subscribe".into()],
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            ..Config::default()
        };
        let mut source = Source::new(config, None).unwrap();
        for failures in 0..12u32 {
            source.failures = failures;
            let full = (0.1 * 2f64.powi(failures as i32)).min(2.0);
            let delay = source.backoff().as_secs_f64();
            assert!(
                delay >= full * 0.5 - 1e-9 && delay <= full + 1e-9,
                "{failures}: {delay}"
            );
        }
    }

    #[test]
    fn tls_is_set_up_for_wss_urls() {
        let source = Source::new(Config::default(), None).unwrap();
        assert!(matches!(source.tls, Some(Connector::Rustls(_))));
    }

    #[test]
    fn hello_carries_the_filters() {
        let config = Config {
            wanted_collections: vec!["app.bsky.feed.*".into()],
            max_message_size_bytes: Some(5),
            ..Config::default()
        };
        let Frame::Text(text) = options_update(&config) else {
            panic!("not text")
        };
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"type": "options_update", "payload": {
                "wantedCollections": ["app.bsky.feed.*"], "wantedDids": [],
                "maxMessageSizeBytes": 5}})
        );
    }
}
