//! A [`Buffer`] on Redis Streams with a consumer group.
//!
//! # On the server
//!
//! - One stream (`<stream>`), one entry per appended batch, fields `n` (event count), `t`
//!   (oldest event time, Unix µs) and `d` (the events, each framed as a little-endian `u32`
//!   length and the bytes).
//! - Two hashes next to it: `<stream>:stats` counts unacknowledged entries, events and bytes;
//!   `<stream>:meta` maps each unacknowledged entry id to its count, size and oldest time.
//!   Appends and acknowledgements update them atomically in Lua scripts, so stats and the
//!   capacity check are exact.
//! - The consumer group is created (`XGROUP CREATE ... 0 MKSTREAM`) at start when missing, and
//!   again if the server lost it.
//!
//! # Reads
//!
//! Reads that block run on a connection of their own per consumer, whose response timeout
//! exceeds the longest block ([`RedisBufferBuilder::with_max_block`]); redis-rs's default
//! response timeout of 500 ms would otherwise cut them off. A consumer's first read through a
//! handle, and its first read after any failed or cancelled read, returns its own pending
//! entries (`XREADGROUP ... 0`) before new ones (`>`), so entries delivered in a reply that
//! never arrived are not stranded.
//!
//! Each consumer name gets its own blocking connection, kept for the life of the handle: use
//! stable names (one per writer), not one per read.
//!
//! # Failures
//!
//! Connections are [`ConnectionManager`]s, which reconnect in the background. Every operation
//! retries connection errors and `LOADING` (a restarting server replaying its AOF) with
//! exponential backoff for [`RedisBufferBuilder::with_retry_for`]. Acknowledgement is
//! idempotent; an append retried after a connection failure may have been applied once
//! already, which duplicates its events (at-least-once, like Jetstream itself; the archive
//! removes duplicates at compaction).
//!
//! # Stats
//!
//! [`Buffer::stats`] runs one script that reads the counters, the group's pending entries
//! list and the metadata hash (for the oldest event time), so its cost grows with the number
//! of unacknowledged *entries* (not events): call it every few seconds, not per batch. It
//! also reads `INFO memory` for [`Stats::server_memory`].
//!
//! # Permissions
//!
//! With an ACL user, the buffer needs `~<stream>*` and the commands `+@stream +@hash
//! +evalsha +eval +script|load +info`.
//!
//! # Limits
//!
//! The stream is meant for one consumer group. Other groups on the same stream are respected
//! by trimming (an entry another group still needs is kept), but stats and capacity count
//! what this group has not acknowledged. Redis Cluster is not supported (the scripts touch
//! three keys).

mod builder;
mod scripts;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, IntoConnectionInfo, RedisError, Script, Value};
use async_trait::async_trait;
use bytes::{Buf, Bytes};
use tokio::sync::Notify;
use tokio::time::{Instant, sleep};
use tracing::{debug, warn};

pub use builder::{DEFAULT_GROUP, DEFAULT_STREAM, DEFAULT_URL, RedisBufferBuilder, RedisConfigKey};

use crate::{Batch, Buffer, Entry, EntryId, Result, ServerMemory, Stats, WhenFull};

/// This backend's errors, mapped into [`crate::Error::Backend`].
#[derive(Debug, thiserror::Error)]
enum Error {
    #[error("{op} on redis at {server} failed: {source}")]
    Redis {
        op: &'static str,
        server: String,
        source: RedisError,
    },
    #[error("unexpected reply from redis at {server} to {op}: {reply}")]
    Reply {
        op: &'static str,
        server: String,
        reply: String,
    },
}

impl From<Error> for crate::Error {
    fn from(e: Error) -> Self {
        Self::Backend {
            backend: "redis",
            source: Box::new(e),
        }
    }
}

/// A failed attempt: retry the Redis error if it is transient, return anything else.
enum Attempt {
    Redis(RedisError),
    Fatal(crate::Error),
}

impl From<RedisError> for Attempt {
    fn from(e: RedisError) -> Self {
        Self::Redis(e)
    }
}

impl From<crate::Error> for Attempt {
    fn from(e: crate::Error) -> Self {
        Self::Fatal(e)
    }
}

/// Errors worth retrying: the connection, or a server that is starting.
fn transient(e: &RedisError) -> bool {
    if tls_refused(e) {
        return false;
    }
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || matches!(
            e.code(),
            Some("LOADING" | "BUSY" | "TRYAGAIN" | "MASTERDOWN")
        )
}

/// Whether `e` is a TLS handshake the client refused: the server's certificate is not
/// trusted, has expired, or names another host. That is configuration, which waiting does not
/// fix, so it fails at once instead of being retried like an outage.
fn tls_refused(e: &RedisError) -> bool {
    use std::error::Error;
    // redis-rs keeps the I/O error behind an `Arc<dyn Error>`, and tokio-rustls puts the
    // rustls error inside the I/O error.
    let mut source: Option<&(dyn Error + 'static)> = e.source();
    while let Some(error) = source {
        let io = error.downcast_ref::<std::io::Error>().or_else(|| {
            error
                .downcast_ref::<std::sync::Arc<dyn Error + Send + Sync>>()
                .and_then(|shared| shared.downcast_ref::<std::io::Error>())
        });
        if error.is::<rustls::Error>()
            || io
                .and_then(std::io::Error::get_ref)
                .is_some_and(|inner| inner.is::<rustls::Error>())
        {
            return true;
        }
        source = error.source();
    }
    false
}

/// A consumer's progress through its own pending entries after it (re)started.
#[derive(Debug, Clone, Copy)]
enum Recovery {
    After(EntryId),
    Done,
}

struct ConsumerSlot {
    /// The connection for this consumer's blocking reads.
    conn: Option<ConnectionManager>,
    recovery: Recovery,
}

/// A buffer on a Redis stream with a consumer group. Build it with [`RedisBufferBuilder`].
pub struct RedisBuffer {
    client: Client,
    conn: ConnectionManager,
    stream: String,
    stats_key: String,
    meta_key: String,
    group: String,
    server: String,
    capacity: u64,
    when_full: WhenFull,
    max_block: Duration,
    retry_for: Duration,
    consumers: Mutex<HashMap<String, ConsumerSlot>>,
    /// Woken by acknowledgements through this handle, so a blocked producer in the same
    /// process retries at once instead of at its next poll.
    space: Notify,
    append_script: Script,
    ack_script: Script,
    stats_script: Script,
}

impl fmt::Debug for RedisBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // No URL: it may hold a password. The server is host and port only.
        f.debug_struct("RedisBuffer")
            .field("server", &self.server)
            .field("stream", &self.stream)
            .field("group", &self.group)
            .field("capacity", &self.capacity)
            .field("when_full", &self.when_full)
            .field("max_block", &self.max_block)
            .field("retry_for", &self.retry_for)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for RedisBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Redis({}/{}, group {})",
            self.server, self.stream, self.group
        )
    }
}

/// Frame events as `u32` little-endian length + bytes, one after the other.
fn frame(batch: &Batch) -> Vec<u8> {
    let mut out = Vec::with_capacity(batch.bytes() as usize + 4 * batch.len());
    for e in batch.events() {
        out.extend_from_slice(&(e.len() as u32).to_le_bytes());
        out.extend_from_slice(e);
    }
    out
}

fn unframe(mut data: Bytes, expected: usize) -> Option<Vec<Bytes>> {
    let mut events = Vec::with_capacity(expected);
    while data.has_remaining() {
        if data.remaining() < 4 {
            return None;
        }
        let len = data.get_u32_le() as usize;
        if data.remaining() < len {
            return None;
        }
        events.push(data.split_to(len));
    }
    (events.len() == expected).then_some(events)
}

fn as_str(v: &Value) -> Option<&str> {
    match v {
        Value::BulkString(b) => std::str::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}

fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Int(i) => u64::try_from(*i).ok(),
        other => as_str(other)?.parse().ok(),
    }
}

fn items(v: Value) -> Option<Vec<Value>> {
    match v {
        Value::Array(a) | Value::Set(a) => Some(a),
        Value::Nil => Some(Vec::new()),
        _ => None,
    }
}

/// Stream entries in a reply: `[[id, [field, value, ...]], ...]`. Entries whose fields are
/// nil (deleted while pending) are returned as ids in the second list.
type Decoded = (Vec<Entry>, Vec<EntryId>);

impl RedisBuffer {
    /// A builder.
    pub fn builder() -> RedisBufferBuilder {
        RedisBufferBuilder::new()
    }

    /// The stream key.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The consumer group.
    pub fn group(&self) -> &str {
        &self.group
    }

    async fn connect(b: RedisBufferBuilder) -> Result<Self> {
        let url = b.url.clone().unwrap_or_else(|| DEFAULT_URL.to_owned());
        let server = builder::server_of(&url);
        let config_error = |message: String| crate::Error::Config {
            key: "url",
            message,
        };
        let mut info = url.as_str().into_connection_info().map_err(|e| {
            config_error(format!(
                "{} is not a redis URL: {e}",
                builder::redact_url(&url)
            ))
        })?;
        if b.username.is_some() || b.password.is_some() {
            let mut settings = info.redis_settings().clone();
            if let Some(user) = &b.username {
                settings = settings.set_username(user);
            }
            if let Some(password) = &b.password {
                settings = settings.set_password(password);
            }
            info = info.set_redis_settings(settings);
        }
        let tls = url.starts_with("rediss://");
        if tls {
            // rustls needs a process-wide crypto provider; another crate may have installed
            // one already, which is just as good.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let client = match (&b.tls_ca_cert, tls) {
            (Some(path), true) => {
                let pem = std::fs::read(path).map_err(|e| crate::Error::Config {
                    key: "tls_ca_cert",
                    message: format!("cannot read {}: {e}", path.display()),
                })?;
                let certs = ::redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                };
                Client::build_with_tls(info, certs)
            }
            (Some(_), false) => {
                return Err(crate::Error::Config {
                    key: "tls_ca_cert",
                    message: "a CA certificate needs a rediss:// URL".to_owned(),
                });
            }
            (None, _) => Client::open(info),
        }
        .map_err(|e| config_error(e.to_string()))?;

        let stream = b
            .stream
            .clone()
            .unwrap_or_else(|| DEFAULT_STREAM.to_owned());
        let group = b.group.clone().unwrap_or_else(|| DEFAULT_GROUP.to_owned());
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(b.response_timeout))
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(3)
            .set_max_delay(Duration::from_secs(2));
        let deadline = crate::deadline_after(b.retry_for);
        let conn = retry_until(deadline, &server, "connect", || {
            ConnectionManager::new_with_config(client.clone(), config.clone())
        })
        .await?;

        let buffer = Self {
            client,
            conn,
            stats_key: format!("{stream}:stats"),
            meta_key: format!("{stream}:meta"),
            stream,
            group,
            server,
            capacity: b.capacity.as_bytes(),
            when_full: b.when_full,
            max_block: b.max_block,
            retry_for: b.retry_for,
            consumers: Mutex::new(HashMap::new()),
            space: Notify::new(),
            append_script: Script::new(scripts::APPEND),
            ack_script: Script::new(scripts::ACK),
            stats_script: Script::new(scripts::STATS),
        };
        buffer.check_server(b.allow_eviction).await?;
        buffer.create_group().await?;
        debug!(server = %buffer.server, stream = %buffer.stream, group = %buffer.group, "Connected to Redis.");
        Ok(buffer)
    }

    /// Refuse a server that evicts keys (unless allowed); warn when AOF is off.
    async fn check_server(&self, allow_eviction: bool) -> Result<()> {
        let info = self.info("INFO memory", "memory").await?;
        let policy = info_field(&info, "maxmemory_policy")
            .unwrap_or_default()
            .to_owned();
        if policy != "noeviction" {
            let policy = if policy.is_empty() {
                "<unknown>".to_owned()
            } else {
                policy
            };
            if !allow_eviction {
                return Err(crate::Error::Eviction {
                    server: self.server.clone(),
                    policy,
                });
            }
            warn!(
                server = %self.server,
                %policy,
                "Redis evicts keys under memory pressure and may silently drop buffered events; \
                 running anyway because eviction was explicitly allowed."
            );
        }
        let persistence = self.info("INFO persistence", "persistence").await?;
        if info_field(&persistence, "aof_enabled") == Some("0") {
            warn!(
                server = %self.server,
                "Redis runs without AOF (appendonly no): buffered events are lost if it restarts."
            );
        }
        Ok(())
    }

    async fn info(&self, op: &'static str, section: &str) -> Result<String> {
        let conn = self.conn.clone();
        let text: String = self
            .retry(op, || {
                let mut conn = conn.clone();
                async move {
                    ::redis::cmd("INFO")
                        .arg(section)
                        .query_async(&mut conn)
                        .await
                }
            })
            .await?;
        Ok(text)
    }

    /// The hash beside the stream that holds the [`SideTable`](crate::SideTable):
    /// `<stream>:state`.
    pub fn state_key(&self) -> String {
        format!("{}:state", self.stream)
    }

    async fn create_group(&self) -> Result<()> {
        let conn = self.conn.clone();
        let result: Result<()> = self
            .retry("XGROUP CREATE", || {
                let mut conn = conn.clone();
                async move {
                    let r: std::result::Result<Value, RedisError> = ::redis::cmd("XGROUP")
                        .arg("CREATE")
                        .arg(&self.stream)
                        .arg(&self.group)
                        .arg("0")
                        .arg("MKSTREAM")
                        .query_async(&mut conn)
                        .await;
                    match r {
                        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
                        Err(e) => Err(e),
                        Ok(_) => Ok(()),
                    }
                }
            })
            .await;
        result
    }

    async fn retry<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, RedisError>>,
    {
        retry_until(crate::deadline_after(self.retry_for), &self.server, op, f).await
    }

    fn redis_error(&self, op: &'static str, source: RedisError) -> crate::Error {
        Error::Redis {
            op,
            server: self.server.clone(),
            source,
        }
        .into()
    }

    fn reply_error(&self, op: &'static str, reply: &Value) -> crate::Error {
        let mut reply = format!("{reply:?}");
        reply.truncate(200);
        Error::Reply {
            op,
            server: self.server.clone(),
            reply,
        }
        .into()
    }

    fn slot<R>(&self, consumer: &str, f: impl FnOnce(&mut ConsumerSlot) -> R) -> R {
        let mut map = self
            .consumers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let slot = map.entry(consumer.to_owned()).or_insert(ConsumerSlot {
            conn: None,
            recovery: Recovery::After(EntryId::MIN),
        });
        f(slot)
    }

    /// The consumer's connection for blocking reads, connecting on first use.
    async fn consumer_conn(
        &self,
        consumer: &str,
    ) -> std::result::Result<ConnectionManager, RedisError> {
        if let Some(conn) = self.slot(consumer, |s| s.conn.clone()) {
            return Ok(conn);
        }
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(self.max_block + Duration::from_secs(5)))
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(3)
            .set_max_delay(Duration::from_secs(2));
        let conn = ConnectionManager::new_with_config(self.client.clone(), config).await?;
        self.slot(consumer, |s| s.conn = Some(conn.clone()));
        Ok(conn)
    }

    fn decode_entries(&self, op: &'static str, entries: Value) -> Result<Decoded> {
        let list = items(entries).ok_or_else(|| self.reply_error(op, &Value::Nil))?;
        let mut out = Vec::with_capacity(list.len());
        let mut deleted = Vec::new();
        for item in list {
            let parts = items(item).ok_or_else(|| self.reply_error(op, &Value::Nil))?;
            let mut parts = parts.into_iter();
            let (Some(id), fields) = (parts.next(), parts.next()) else {
                return Err(self.reply_error(op, &Value::Nil));
            };
            let id_text = as_str(&id).ok_or_else(|| self.reply_error(op, &id))?;
            let id: EntryId = id_text.parse()?;
            let fields = match fields {
                None | Some(Value::Nil) => {
                    deleted.push(id);
                    continue;
                }
                Some(v) => v,
            };
            out.push(self.decode_entry(id, fields)?);
        }
        Ok((out, deleted))
    }

    fn decode_entry(&self, id: EntryId, fields: Value) -> Result<Entry> {
        let corrupt = |message: &str| crate::Error::Corrupt {
            stream: self.stream.clone(),
            id: id.to_string(),
            message: message.to_owned(),
        };
        let pairs: Vec<(Value, Value)> = match fields {
            Value::Map(m) => m,
            other => {
                let flat = items(other).ok_or_else(|| corrupt("fields are not a list"))?;
                let mut pairs = Vec::with_capacity(flat.len() / 2);
                let mut it = flat.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    pairs.push((k, v));
                }
                pairs
            }
        };
        let (mut n, mut t, mut d, mut r) = (None, None, None, false);
        for (k, v) in pairs {
            match as_str(&k) {
                Some("n") => n = as_u64(&v),
                Some("t") => t = as_u64(&v),
                // Absent from entries appended before the field existed: not replay-free.
                Some("r") => r = as_str(&v) == Some("1"),
                Some("d") => {
                    if let Value::BulkString(b) = v {
                        d = Some(Bytes::from(b));
                    }
                }
                _ => {}
            }
        }
        let (Some(n), Some(t), Some(d)) = (n, t, d) else {
            return Err(corrupt("missing field n, t or d"));
        };
        let n = usize::try_from(n).map_err(|_| corrupt("event count out of range"))?;
        let events =
            unframe(d, n).ok_or_else(|| corrupt("framing does not match the event count"))?;
        Ok(Entry {
            id,
            batch: Batch::new(events, t).with_replay_free(r),
            deliveries: 1,
        })
    }

    /// Fill in delivery counts of `entries`, which `consumer` holds, from `XPENDING`.
    async fn fill_deliveries(
        &self,
        conn: &mut ConnectionManager,
        consumer: &str,
        entries: &mut [Entry],
    ) -> std::result::Result<(), Attempt> {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return Ok(());
        };
        let reply: Value = ::redis::cmd("XPENDING")
            .arg(&self.stream)
            .arg(&self.group)
            .arg(first.id.to_string())
            .arg(last.id.to_string())
            .arg(entries.len())
            .arg(consumer)
            .query_async(conn)
            .await?;
        let mut counts = HashMap::new();
        for row in items(reply).unwrap_or_default() {
            let row = items(row).unwrap_or_default();
            let id = row
                .first()
                .and_then(as_str)
                .and_then(|s| s.parse::<EntryId>().ok());
            if let (Some(id), Some(n)) = (id, row.get(3).and_then(as_u64)) {
                counts.insert(id, n);
            }
        }
        for e in entries {
            if let Some(n) = counts.get(&e.id) {
                e.deliveries = *n;
            }
        }
        Ok(())
    }

    /// Acknowledge entries that were deleted while pending, so they leave the PEL.
    async fn drop_deleted(&self, deleted: &[EntryId]) -> Result<()> {
        if deleted.is_empty() {
            return Ok(());
        }
        warn!(stream = %self.stream, count = deleted.len(), "Pending entries were deleted from the stream by someone else.");
        self.ack(deleted).await.map(|_| ())
    }

    /// One attempt at a read.
    async fn try_read(
        &self,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> std::result::Result<Vec<Entry>, Attempt> {
        if let Recovery::After(after) = self.slot(consumer, |s| s.recovery) {
            let mut conn = self.conn.clone();
            let reply: Value = ::redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(&self.group)
                .arg(consumer)
                .arg("COUNT")
                .arg(count)
                .arg("STREAMS")
                .arg(&self.stream)
                .arg(after.to_string())
                .query_async(&mut conn)
                .await?;
            let (mut entries, deleted) = self.decode_read_reply(reply)?;
            self.drop_deleted(&deleted).await?;
            if let Some(last) = entries.last().map(|e| e.id).or(deleted.last().copied()) {
                self.fill_deliveries(&mut conn, consumer, &mut entries)
                    .await?;
                self.slot(consumer, |s| s.recovery = Recovery::After(last));
                if !entries.is_empty() {
                    debug!(stream = %self.stream, %consumer, count = entries.len(), "Re-delivered pending entries.");
                    return Ok(entries);
                }
                // Only deleted entries: look further.
                return Box::pin(self.try_read(consumer, count, block)).await;
            }
            self.slot(consumer, |s| s.recovery = Recovery::Done);
        }
        let mut conn = self.consumer_conn(consumer).await?;
        let mut cmd = ::redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.group)
            .arg(consumer)
            .arg("COUNT")
            .arg(count);
        let block_ms = millis(block.min(self.max_block));
        if block_ms > 0 {
            cmd.arg("BLOCK").arg(block_ms);
        }
        cmd.arg("STREAMS").arg(&self.stream).arg(">");
        let reply: Value = cmd.query_async(&mut conn).await?;
        let (entries, _) = self.decode_read_reply(reply)?;
        Ok(entries)
    }

    /// An `XREADGROUP` reply: nil, or `[[stream, entries]]` (a map in RESP3).
    fn decode_read_reply(&self, reply: Value) -> Result<Decoded> {
        let streams: Vec<Value> = match reply {
            Value::Nil => return Ok((Vec::new(), Vec::new())),
            Value::Map(m) => m.into_iter().map(|(_, v)| v).collect(),
            other => items(other)
                .ok_or_else(|| self.reply_error("XREADGROUP", &Value::Nil))?
                .into_iter()
                .filter_map(|s| items(s)?.into_iter().nth(1))
                .collect(),
        };
        let mut all = (Vec::new(), Vec::new());
        for entries in streams {
            let (e, d) = self.decode_entries("XREADGROUP", entries)?;
            all.0.extend(e);
            all.1.extend(d);
        }
        Ok(all)
    }

    async fn try_claim(
        &self,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> std::result::Result<Vec<Entry>, Attempt> {
        let mut conn = self.conn.clone();
        let mut out = Vec::new();
        let mut start = "0-0".to_owned();
        // XAUTOCLAIM scans at most 10 × COUNT pending entries per call: follow its cursor,
        // within reason.
        for _ in 0..100 {
            if out.len() >= count {
                break;
            }
            let reply: Value = ::redis::cmd("XAUTOCLAIM")
                .arg(&self.stream)
                .arg(&self.group)
                .arg(consumer)
                .arg(millis(min_idle))
                .arg(&start)
                .arg("COUNT")
                .arg(count - out.len())
                .query_async(&mut conn)
                .await?;
            let parts =
                items(reply.clone()).ok_or_else(|| self.reply_error("XAUTOCLAIM", &reply))?;
            let mut parts = parts.into_iter();
            let next = parts
                .next()
                .as_ref()
                .and_then(as_str)
                .map(str::to_owned)
                .ok_or_else(|| self.reply_error("XAUTOCLAIM", &reply))?;
            let entries = parts.next().unwrap_or(Value::Nil);
            let (mut claimed, mut deleted) = self.decode_entries("XAUTOCLAIM", entries)?;
            for id in items(parts.next().unwrap_or(Value::Nil)).unwrap_or_default() {
                if let Some(id) = as_str(&id).and_then(|s| s.parse().ok()) {
                    deleted.push(id);
                }
            }
            self.drop_deleted(&deleted).await?;
            self.fill_deliveries(&mut conn, consumer, &mut claimed)
                .await?;
            out.extend(claimed);
            if next == "0-0" {
                break;
            }
            start = next;
        }
        Ok(out)
    }
}

/// Run `f` until it succeeds, retrying transient errors with exponential backoff until
/// `deadline`.
async fn retry_until<T, F, Fut>(
    deadline: Instant,
    server: &str,
    op: &'static str,
    mut f: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<T, RedisError>>,
{
    let mut delay = Duration::from_millis(20);
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if transient(&e) && crate::deadline_after(delay) < deadline => {
                warn!(%server, op, error = %e, retry_in_ms = delay.as_millis() as u64, "Redis unavailable, retrying.");
                sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(source) => {
                return Err(Error::Redis {
                    op,
                    server: server.to_owned(),
                    source,
                }
                .into());
            }
        }
    }
}

/// Milliseconds for a Redis argument (which takes at most `i64::MAX`).
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis())
        .unwrap_or(u64::MAX)
        .min(i64::MAX as u64)
}

fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k == name).then_some(v.trim())
    })
}

/// Marks a consumer for recovery (re-read its pending entries first) when a read is dropped
/// before it completes: its reply may have delivered entries nobody received.
struct ReadGuard<'a> {
    buffer: &'a RedisBuffer,
    consumer: &'a str,
    armed: bool,
}

impl Drop for ReadGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.buffer.slot(self.consumer, |s| {
                s.recovery = Recovery::After(EntryId::MIN)
            });
        }
    }
}

#[async_trait]
impl crate::SideTable for RedisBuffer {
    /// A field of the state hash.
    async fn get(&self, field: &str) -> Result<Option<String>> {
        let key = self.state_key();
        self.retry("HGET", || {
            let mut conn = self.conn.clone();
            let cmd = ::redis::cmd("HGET").arg(&key).arg(field).clone();
            async move { cmd.query_async(&mut conn).await }
        })
        .await
    }

    /// Every field of the state hash whose name starts with `prefix`, sorted by name.
    async fn scan(&self, prefix: &str) -> Result<Vec<(String, String)>> {
        let key = self.state_key();
        let all: Vec<(String, String)> = self
            .retry("HGETALL", || {
                let mut conn = self.conn.clone();
                let cmd = ::redis::cmd("HGETALL").arg(&key).clone();
                async move { cmd.query_async(&mut conn).await }
            })
            .await?;
        let mut fields: Vec<_> = all
            .into_iter()
            .filter(|(field, _)| field.starts_with(prefix))
            .collect();
        fields.sort();
        Ok(fields)
    }

    /// Sets a field of the state hash.
    async fn set(&self, field: &str, value: &str) -> Result<()> {
        let key = self.state_key();
        self.retry("HSET", || {
            let mut conn = self.conn.clone();
            let cmd = ::redis::cmd("HSET").arg(&key).arg(field).arg(value).clone();
            async move { cmd.query_async::<()>(&mut conn).await }
        })
        .await
    }

    /// Removes a field of the state hash.
    async fn delete(&self, field: &str) -> Result<()> {
        let key = self.state_key();
        self.retry("HDEL", || {
            let mut conn = self.conn.clone();
            let cmd = ::redis::cmd("HDEL").arg(&key).arg(field).clone();
            async move { cmd.query_async::<()>(&mut conn).await }
        })
        .await
    }

    /// Raises a numeric field of the state hash to `value` if it is lower (or missing), in one
    /// step on the server, and returns the field's value afterwards. Several processes can
    /// advance the same checkpoint this way without moving it back.
    async fn raise(&self, field: &str, value: u64) -> Result<u64> {
        let key = self.state_key();
        let script = Script::new(scripts::RAISE);
        self.retry("raise", || {
            let mut conn = self.conn.clone();
            let mut invocation = script.prepare_invoke();
            invocation.key(&key).arg(field).arg(value);
            async move { invocation.invoke_async(&mut conn).await }
        })
        .await
    }

    /// Sets a field of the state hash if `consumer` still holds every one of `ids`, in one
    /// step on the server (a script that checks each id with `XPENDING`).
    async fn set_if_held(
        &self,
        field: &str,
        value: &str,
        consumer: &str,
        ids: &[EntryId],
    ) -> Result<Vec<EntryId>> {
        let key = self.state_key();
        let script = Script::new(scripts::SET_IF_HELD);
        let ids: Vec<String> = ids.iter().map(EntryId::to_string).collect();
        let lost: Vec<String> = self
            .retry("set if held", || {
                let mut conn = self.conn.clone();
                let mut invocation = script.prepare_invoke();
                invocation
                    .key(&self.stream)
                    .key(&key)
                    .arg(&self.group)
                    .arg(consumer)
                    .arg(field)
                    .arg(value)
                    .arg(&ids);
                async move { invocation.invoke_async(&mut conn).await }
            })
            .await?;
        lost.iter()
            .map(|id| id.parse())
            .collect::<Result<Vec<EntryId>>>()
    }
}

#[async_trait]
impl Buffer for RedisBuffer {
    async fn append(&self, batch: Batch) -> Result<EntryId> {
        if batch.is_empty() {
            return Err(crate::Error::EmptyBatch {
                buffer: self.to_string(),
            });
        }
        let data = frame(&batch);
        let prepare = |replay_free: bool| {
            let mut invocation = self.append_script.prepare_invoke();
            invocation
                .key(&self.stream)
                .key(&self.stats_key)
                .key(&self.meta_key)
                .arg(self.capacity)
                .arg(batch.len())
                .arg(batch.bytes())
                .arg(batch.oldest_time_us())
                .arg(&data)
                .arg(if replay_free { "1" } else { "0" });
            invocation
        };
        let mut invocation = prepare(batch.is_replay_free());
        let mut wait = Duration::from_millis(1);
        let mut waiting_since = None;
        loop {
            let reply: std::result::Result<Value, RedisError> = {
                let deadline = crate::deadline_after(self.retry_for);
                let mut delay = Duration::from_millis(20);
                loop {
                    let mut conn = self.conn.clone();
                    match invocation.invoke_async::<Value>(&mut conn).await {
                        Err(e) if transient(&e) && crate::deadline_after(delay) < deadline => {
                            warn!(server = %self.server, op = "append", error = %e, "Redis unavailable, retrying.");
                            // The failed call may have appended the batch before its reply
                            // was lost, so this one may be a second copy: not replay-free.
                            invocation = prepare(false);
                            sleep(delay).await;
                            delay = (delay * 2).min(Duration::from_secs(2));
                        }
                        other => break other,
                    }
                }
            };
            let used = match reply {
                Ok(Value::Array(parts)) => match parts.as_slice() {
                    [Value::Int(1), id] => {
                        let id = as_str(id).ok_or_else(|| self.reply_error("append", id))?;
                        return id.parse();
                    }
                    [Value::Int(0), used] => as_u64(used).unwrap_or(0),
                    _ => return Err(self.reply_error("append", &Value::Array(parts))),
                },
                Ok(other) => return Err(self.reply_error("append", &other)),
                // The server is out of memory (maxmemory with noeviction): full as well.
                Err(e) if e.code() == Some("OOM") => {
                    warn!(server = %self.server, "Redis is out of memory (maxmemory reached).");
                    self.capacity
                }
                Err(e) => return Err(self.redis_error("append", e)),
            };
            if self.when_full == WhenFull::Reject {
                return Err(crate::Error::Full {
                    buffer: self.to_string(),
                    batch: Box::new(batch),
                    used_bytes: used,
                    capacity_bytes: self.capacity,
                });
            }
            let since = *waiting_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= Duration::from_secs(10) {
                warn!(buffer = %self, used, capacity = self.capacity, "Buffer full for 10 s, producer still waiting.");
                waiting_since = Some(Instant::now());
            }
            tokio::select! {
                () = sleep(wait) => {}
                () = self.space.notified() => {}
            }
            wait = (wait * 2).min(Duration::from_millis(100));
        }
    }

    async fn read(&self, consumer: &str, count: usize, block: Duration) -> Result<Vec<Entry>> {
        if count == 0 {
            return Ok(Vec::new());
        }
        let mut guard = ReadGuard {
            buffer: self,
            consumer,
            armed: true,
        };
        let deadline = crate::deadline_after(self.retry_for);
        let mut delay = Duration::from_millis(20);
        loop {
            match self.try_read(consumer, count, block).await {
                Ok(entries) => {
                    guard.armed = false;
                    return Ok(entries);
                }
                Err(Attempt::Fatal(e)) => {
                    self.slot(consumer, |s| s.recovery = Recovery::After(EntryId::MIN));
                    guard.armed = false;
                    return Err(e);
                }
                Err(Attempt::Redis(e)) => {
                    // The failed call may have delivered entries: re-read own pending first.
                    self.slot(consumer, |s| s.recovery = Recovery::After(EntryId::MIN));
                    if e.code() == Some("NOGROUP") {
                        warn!(stream = %self.stream, group = %self.group, "Consumer group missing (server lost its data?), creating it again.");
                        self.create_group().await?;
                        continue;
                    }
                    if transient(&e) && crate::deadline_after(delay) < deadline {
                        warn!(server = %self.server, op = "read", error = %e, "Redis unavailable, retrying.");
                        sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(2));
                        continue;
                    }
                    guard.armed = false;
                    return Err(self.redis_error("XREADGROUP", e));
                }
            }
        }
    }

    async fn ack(&self, ids: &[EntryId]) -> Result<u64> {
        let mut acked = 0;
        for chunk in ids.chunks(scripts::ACK_CHUNK) {
            let mut invocation = self.ack_script.prepare_invoke();
            invocation
                .key(&self.stream)
                .key(&self.stats_key)
                .key(&self.meta_key)
                .arg(&self.group);
            for id in chunk {
                invocation.arg(id.to_string());
            }
            let invocation = &invocation;
            let n: u64 = self
                .retry("ack", || {
                    let mut conn = self.conn.clone();
                    async move { invocation.invoke_async(&mut conn).await }
                })
                .await?;
            acked += n;
        }
        if acked > 0 {
            self.space.notify_waiters();
        }
        Ok(acked)
    }

    async fn claim(&self, consumer: &str, min_idle: Duration, count: usize) -> Result<Vec<Entry>> {
        if count == 0 {
            return Ok(Vec::new());
        }
        let deadline = crate::deadline_after(self.retry_for);
        let mut delay = Duration::from_millis(20);
        loop {
            match self.try_claim(consumer, min_idle, count).await {
                Ok(entries) => {
                    if !entries.is_empty() {
                        debug!(stream = %self.stream, %consumer, count = entries.len(), "Claimed idle entries.");
                    }
                    return Ok(entries);
                }
                Err(Attempt::Fatal(e)) => return Err(e),
                Err(Attempt::Redis(e))
                    if transient(&e) && crate::deadline_after(delay) < deadline =>
                {
                    warn!(server = %self.server, op = "claim", error = %e, "Redis unavailable, retrying.");
                    sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(Attempt::Redis(e)) => return Err(self.redis_error("XAUTOCLAIM", e)),
            }
        }
    }

    async fn stats(&self) -> Result<Stats> {
        let mut invocation = self.stats_script.prepare_invoke();
        invocation
            .key(&self.stream)
            .key(&self.stats_key)
            .key(&self.meta_key)
            .arg(&self.group);
        let invocation = &invocation;
        let reply: Value = self
            .retry("stats", || {
                let mut conn = self.conn.clone();
                async move { invocation.invoke_async(&mut conn).await }
            })
            .await?;
        let parts = items(reply.clone()).ok_or_else(|| self.reply_error("stats", &reply))?;
        let num = |i: usize| parts.get(i).and_then(as_u64);
        let (Some(entries), Some(events), Some(bytes), Some(entries_pending), Some(events_pending)) =
            (num(0), num(1), num(2), num(3), num(4))
        else {
            return Err(self.reply_error("stats", &reply));
        };
        let oldest = parts.get(5).and_then(as_u64);
        let memory = self.info("INFO memory", "memory").await?;
        let server_memory = info_field(&memory, "used_memory")
            .and_then(|v| v.parse().ok())
            .map(|used_bytes| ServerMemory {
                used_bytes,
                max_bytes: info_field(&memory, "maxmemory")
                    .and_then(|v| v.parse().ok())
                    .filter(|&m: &u64| m > 0),
            });
        Ok(Stats {
            entries_waiting: entries.saturating_sub(entries_pending),
            events_waiting: events.saturating_sub(events_pending),
            entries_pending,
            events_pending,
            bytes,
            oldest_unacked_time_us: oldest,
            capacity_bytes: self.capacity,
            server_memory,
        })
    }

    async fn peek(&self, after: Option<EntryId>, count: usize) -> Result<Vec<Entry>> {
        if count == 0 {
            return Ok(Vec::new());
        }
        // `(id` starts after the id (Redis 6.2 and later).
        let start = after.map_or_else(|| "-".to_owned(), |id| format!("({id}"));
        let reply: Value = self
            .retry("XRANGE", || {
                let mut conn = self.conn.clone();
                let cmd = ::redis::cmd("XRANGE")
                    .arg(&self.stream)
                    .arg(&start)
                    .arg("+")
                    .arg("COUNT")
                    .arg(count)
                    .clone();
                async move { cmd.query_async(&mut conn).await }
            })
            .await?;
        let (mut entries, _) = self.decode_entries("XRANGE", reply)?;
        for entry in &mut entries {
            entry.deliveries = 0;
        }
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let batch = Batch::new(
            vec![
                Bytes::from_static(b"one"),
                Bytes::new(),
                Bytes::from(vec![7u8; 1000]),
            ],
            5,
        );
        let framed = Bytes::from(frame(&batch));
        assert_eq!(unframe(framed.clone(), 3).unwrap(), batch.events());
        assert!(unframe(framed.clone(), 2).is_none());
        assert!(unframe(framed.slice(..framed.len() - 1), 3).is_none());
        assert!(unframe(Bytes::from_static(b"\x01\x00"), 1).is_none());
    }

    #[test]
    fn reads_info_fields() {
        let info = "# Memory\r\nused_memory:1024\r\nmaxmemory:0\r\nmaxmemory_policy:noeviction\r\n";
        assert_eq!(info_field(info, "maxmemory_policy"), Some("noeviction"));
        assert_eq!(info_field(info, "used_memory"), Some("1024"));
        assert_eq!(info_field(info, "nope"), None);
    }
}
