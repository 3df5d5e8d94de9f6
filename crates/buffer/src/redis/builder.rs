//! [`RedisBufferBuilder`]: configuration of the Redis Streams backend.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::{Capacity, Error, Result, WhenFull};

use super::RedisBuffer;

/// The stream key used when none is configured.
pub const DEFAULT_STREAM: &str = "firehose:events";
/// The consumer group used when none is configured.
pub const DEFAULT_GROUP: &str = "firehose-writers";
/// The URL used when none is configured.
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379/0";

/// Configuration keys of [`RedisBufferBuilder`], for [`with_config`](RedisBufferBuilder::with_config)
/// and [`from_env`](RedisBufferBuilder::from_env).
///
/// Each key parses from its environment variable name (`FIREHOSE_REDIS_URL`), the same name
/// in lower case, or its short name (`url`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RedisConfigKey {
    /// `FIREHOSE_REDIS_URL`: `redis://[user[:password]@]host[:port][/db]`, or `rediss://` for
    /// TLS.
    Url,
    /// `FIREHOSE_REDIS_STREAM`: the stream key.
    Stream,
    /// `FIREHOSE_REDIS_GROUP`: the consumer group.
    Group,
    /// `FIREHOSE_REDIS_USERNAME`: the ACL user (overrides the URL's).
    Username,
    /// `FIREHOSE_REDIS_PASSWORD`: the password (overrides the URL's).
    Password,
    /// `FIREHOSE_REDIS_TLS_CA_CERT`: a PEM file of CA certificates to trust for `rediss://`
    /// instead of the bundled web PKI roots.
    TlsCaCert,
    /// `FIREHOSE_REDIS_ALLOW_EVICTION`: `true` to run against a server whose
    /// `maxmemory-policy` evicts keys (logs a warning). Default `false`.
    AllowEviction,
    /// `FIREHOSE_BUFFER_CAPACITY_BYTES`: the former name of `FIREHOSE_BUFFER_SIZE`, a number
    /// of bytes; still read, and overridden by `FIREHOSE_BUFFER_SIZE` when both are set.
    CapacityBytes,
    /// `FIREHOSE_BUFFER_SIZE`: the most unacknowledged payload the buffer holds, a size such
    /// as `1500MB` or `2GiB` (the rule of `firehose_core::units`); the same variable bounds
    /// `firehose run`'s in-memory buffer.
    BufferSize,
    /// `FIREHOSE_BUFFER_WHEN_FULL`: `block` (default) or `reject`.
    WhenFull,
    /// `FIREHOSE_REDIS_MAX_BLOCK_MS`: the longest a read blocks waiting for entries.
    MaxBlockMs,
    /// `FIREHOSE_REDIS_RETRY_FOR_MS`: how long an operation retries through connection errors
    /// (a restart, a dropped connection) before it fails.
    RetryForMs,
}

impl RedisConfigKey {
    const ALL: [(Self, &'static str, &'static str); 12] = [
        (Self::Url, "FIREHOSE_REDIS_URL", "url"),
        (Self::Stream, "FIREHOSE_REDIS_STREAM", "stream"),
        (Self::Group, "FIREHOSE_REDIS_GROUP", "group"),
        (Self::Username, "FIREHOSE_REDIS_USERNAME", "username"),
        (Self::Password, "FIREHOSE_REDIS_PASSWORD", "password"),
        (Self::TlsCaCert, "FIREHOSE_REDIS_TLS_CA_CERT", "tls_ca_cert"),
        (
            Self::AllowEviction,
            "FIREHOSE_REDIS_ALLOW_EVICTION",
            "allow_eviction",
        ),
        (
            Self::CapacityBytes,
            "FIREHOSE_BUFFER_CAPACITY_BYTES",
            "capacity_bytes",
        ),
        (Self::BufferSize, "FIREHOSE_BUFFER_SIZE", "buffer_size"),
        (Self::WhenFull, "FIREHOSE_BUFFER_WHEN_FULL", "when_full"),
        (
            Self::MaxBlockMs,
            "FIREHOSE_REDIS_MAX_BLOCK_MS",
            "max_block_ms",
        ),
        (
            Self::RetryForMs,
            "FIREHOSE_REDIS_RETRY_FOR_MS",
            "retry_for_ms",
        ),
    ];

    /// The environment variable of this key.
    pub fn env_name(&self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(k, _, _)| k == self)
            .map_or("", |(_, env, _)| env)
    }

    fn short_name(&self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(k, _, _)| k == self)
            .map_or("", |(_, _, short)| short)
    }
}

impl FromStr for RedisConfigKey {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .iter()
            .find(|(_, env, short)| s.eq_ignore_ascii_case(env) || s == *short)
            .map(|(k, _, _)| *k)
            .ok_or_else(|| Error::Config {
                key: "redis",
                message: format!("unknown configuration key {s:?}"),
            })
    }
}

/// Builds a [`RedisBuffer`], in the style of object_store's `AmazonS3Builder`.
///
/// ```no_run
/// # async fn f() -> firehose_buffer::Result<()> {
/// use firehose_buffer::{Capacity, WhenFull, redis::RedisBufferBuilder};
///
/// let buffer = RedisBufferBuilder::new()
///     .with_url("redis://127.0.0.1:6379/0")
///     .with_stream("firehose:events")
///     .with_group("firehose-writers")
///     .with_capacity(Capacity::bytes(1 << 30))
///     .with_when_full(WhenFull::Block)
///     .build()
///     .await?;
/// # Ok(())
/// # }
/// ```
///
/// `Debug` never shows the password, neither the URL's nor a separate one.
#[derive(Clone)]
pub struct RedisBufferBuilder {
    pub(super) url: Option<String>,
    pub(super) stream: Option<String>,
    pub(super) group: Option<String>,
    pub(super) username: Option<String>,
    pub(super) password: Option<String>,
    pub(super) tls_ca_cert: Option<PathBuf>,
    pub(super) allow_eviction: bool,
    pub(super) capacity: Capacity,
    pub(super) when_full: WhenFull,
    pub(super) max_block: Duration,
    pub(super) retry_for: Duration,
    pub(super) response_timeout: Duration,
    /// The first invalid `with_config` value, reported by `build`.
    pub(super) invalid: Option<(RedisConfigKey, String)>,
}

impl Default for RedisBufferBuilder {
    fn default() -> Self {
        Self {
            url: None,
            stream: None,
            group: None,
            username: None,
            password: None,
            tls_ca_cert: None,
            allow_eviction: false,
            capacity: Capacity::default(),
            when_full: WhenFull::default(),
            max_block: Duration::from_secs(5),
            retry_for: Duration::from_secs(60),
            response_timeout: Duration::from_secs(10),
            invalid: None,
        }
    }
}

impl fmt::Debug for RedisBufferBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBufferBuilder")
            .field("url", &self.url.as_deref().map(redact_url))
            .field("stream", &self.stream)
            .field("group", &self.group)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls_ca_cert", &self.tls_ca_cert)
            .field("allow_eviction", &self.allow_eviction)
            .field("capacity", &self.capacity)
            .field("when_full", &self.when_full)
            .field("max_block", &self.max_block)
            .field("retry_for", &self.retry_for)
            .field("response_timeout", &self.response_timeout)
            .finish()
    }
}

impl RedisBufferBuilder {
    /// A builder with defaults: [`DEFAULT_URL`], [`DEFAULT_STREAM`], [`DEFAULT_GROUP`], the
    /// default capacity, [`WhenFull::Block`], reads blocking at most 5 s, retries through
    /// connection errors for 60 s.
    pub fn new() -> Self {
        Self::default()
    }

    /// A builder configured from the `FIREHOSE_*` environment variables of
    /// [`RedisConfigKey`]. Variables that are not set keep their defaults; unknown
    /// `FIREHOSE_*` variables are ignored (other components use the prefix too).
    pub fn from_env() -> Self {
        let mut set: Vec<(usize, RedisConfigKey, String)> = Vec::new();
        for (key, value) in std::env::vars_os() {
            let (Some(key), Some(value)) = (key.to_str(), value.to_str()) else {
                continue;
            };
            if !key.starts_with("FIREHOSE_") {
                continue;
            }
            if let Ok(key) = key.parse::<RedisConfigKey>() {
                let order = RedisConfigKey::ALL.iter().position(|(k, _, _)| *k == key);
                set.push((order.unwrap_or(usize::MAX), key, value.to_owned()));
            }
        }
        // In the order of `ALL`, so a current name overrides its former one.
        set.sort_by_key(|(order, _, _)| *order);
        set.into_iter()
            .fold(Self::new(), |builder, (_, key, value)| {
                builder.with_config(key, value)
            })
    }

    /// Set a configuration value by key. Invalid values are reported by
    /// [`build`](Self::build).
    pub fn with_config(mut self, key: RedisConfigKey, value: impl Into<String>) -> Self {
        let value = value.into();
        let mut invalid = |message: String| {
            if self.invalid.is_none() {
                self.invalid = Some((key, message));
            }
        };
        match key {
            RedisConfigKey::Url => self.url = Some(value),
            RedisConfigKey::Stream => self.stream = Some(value),
            RedisConfigKey::Group => self.group = Some(value),
            RedisConfigKey::Username => self.username = Some(value),
            RedisConfigKey::Password => self.password = Some(value),
            RedisConfigKey::TlsCaCert => self.tls_ca_cert = Some(PathBuf::from(value)),
            RedisConfigKey::AllowEviction => match parse_bool(&value) {
                Some(b) => self.allow_eviction = b,
                None => invalid(format!("expected true or false, got {value:?}")),
            },
            RedisConfigKey::CapacityBytes => match value.trim().parse::<u64>() {
                Ok(n) if n > 0 => self.capacity = Capacity::bytes(n),
                _ => invalid(format!(
                    "expected a positive number of bytes, got {value:?}"
                )),
            },
            RedisConfigKey::BufferSize => match firehose_core::units::parse_size(&value) {
                Ok(n) if n > 0 => self.capacity = Capacity::bytes(n),
                _ => invalid(format!(
                    "expected a positive size such as 1500MB or 2GiB, got {value:?}"
                )),
            },
            RedisConfigKey::WhenFull => match value.parse::<WhenFull>() {
                Ok(w) => self.when_full = w,
                Err(_) => invalid(format!("expected block or reject, got {value:?}")),
            },
            RedisConfigKey::MaxBlockMs => match value.trim().parse::<u64>() {
                Ok(ms) => self.max_block = Duration::from_millis(ms),
                Err(_) => invalid(format!("expected milliseconds, got {value:?}")),
            },
            RedisConfigKey::RetryForMs => match value.trim().parse::<u64>() {
                Ok(ms) => self.retry_for = Duration::from_millis(ms),
                Err(_) => invalid(format!("expected milliseconds, got {value:?}")),
            },
        }
        self
    }

    /// Set the server URL: `redis://[user[:password]@]host[:port][/db]`, `rediss://` for TLS.
    pub fn with_url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }

    /// Set the stream key.
    pub fn with_stream(mut self, stream: impl Into<String>) -> Self {
        self.stream = Some(stream.into());
        self
    }

    /// Set the consumer group.
    pub fn with_group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// Set the ACL user name (overrides the URL's).
    pub fn with_username(mut self, username: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self
    }

    /// Set the password (overrides the URL's).
    pub fn with_password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// Trust the CA certificates in this PEM file for `rediss://`, instead of the bundled web
    /// PKI roots (for a private CA or a self-signed server certificate).
    pub fn with_tls_ca_cert(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls_ca_cert = Some(path.into());
        self
    }

    /// Run even when the server's `maxmemory-policy` evicts keys, which can silently lose
    /// buffered events. A warning is logged at start. Default `false`: refuse to start.
    pub fn with_allow_eviction(mut self, allow: bool) -> Self {
        self.allow_eviction = allow;
        self
    }

    /// Set the capacity, in bytes of unacknowledged event payload.
    pub fn with_capacity(mut self, capacity: Capacity) -> Self {
        self.capacity = capacity;
        self
    }

    /// Set what an append does when the buffer is full.
    pub fn with_when_full(mut self, when_full: WhenFull) -> Self {
        self.when_full = when_full;
        self
    }

    /// The longest a read blocks waiting for entries (longer requests are shortened to it).
    /// The blocking connections' response timeout is set above it.
    pub fn with_max_block(mut self, max_block: Duration) -> Self {
        self.max_block = max_block;
        self
    }

    /// How long an operation keeps retrying, with backoff, through connection errors (a
    /// server restart, a dropped connection) before it fails.
    pub fn with_retry_for(mut self, retry_for: Duration) -> Self {
        self.retry_for = retry_for;
        self
    }

    /// The response timeout of ordinary (non-blocking) commands. Default 10 s.
    pub fn with_response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// Connect, check the server, create the consumer group if needed, and return the buffer.
    ///
    /// Fails with [`Error::Config`] for invalid settings, [`Error::Eviction`] when the server
    /// evicts keys (unless allowed), and [`Error::Backend`] when the server cannot be reached.
    pub async fn build(self) -> Result<RedisBuffer> {
        if let Some((key, message)) = self.invalid {
            return Err(Error::Config {
                key: key.short_name(),
                message,
            });
        }
        for (name, value) in [("stream", &self.stream), ("group", &self.group)] {
            if value.as_deref().is_some_and(str::is_empty) {
                return Err(Error::Config {
                    key: name,
                    message: "must not be empty".to_owned(),
                });
            }
        }
        RedisBuffer::connect(self).await
    }
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// The URL with any password replaced by `<redacted>`.
pub(super) fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &rest[..at];
    let user = match userinfo.find(':') {
        Some(colon) => format!("{}:<redacted>", &userinfo[..colon]),
        None if userinfo.is_empty() => String::new(),
        // A lone userinfo is the password in Redis URLs (`redis://secret@host`).
        None => "<redacted>".to_owned(),
    };
    format!("{}{}@{}", &url[..scheme_end + 3], user, &rest[at + 1..])
}

/// Host and port of the URL, without credentials, for logs and errors.
pub(super) fn server_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    host.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("redis://user:s3cret@host:6379/0"),
            "redis://user:<redacted>@host:6379/0"
        );
        assert_eq!(
            redact_url("rediss://:s3cret@host/0"),
            "rediss://:<redacted>@host/0"
        );
        assert_eq!(redact_url("redis://s3cret@host"), "redis://<redacted>@host");
        assert_eq!(redact_url("redis://host:1/0"), "redis://host:1/0");
        assert_eq!(server_of("redis://u:p@host:1/0"), "host:1");
        assert_eq!(server_of("redis://host"), "host");
    }

    #[test]
    fn debug_hides_secrets() {
        let b = RedisBufferBuilder::new()
            .with_url("redis://user:hunter2@host:6379/0")
            .with_password("correcthorse");
        let s = format!("{b:?}");
        assert!(!s.contains("hunter2"), "{s}");
        assert!(!s.contains("correcthorse"), "{s}");
        assert!(s.contains("user"), "{s}");
    }

    #[test]
    fn config_keys_parse() {
        for (key, env, short) in RedisConfigKey::ALL {
            assert_eq!(env.parse::<RedisConfigKey>().unwrap(), key);
            assert_eq!(env.to_lowercase().parse::<RedisConfigKey>().unwrap(), key);
            assert_eq!(short.parse::<RedisConfigKey>().unwrap(), key);
            assert_eq!(key.env_name(), env);
        }
        assert!("FIREHOSE_NOPE".parse::<RedisConfigKey>().is_err());
        let b = RedisBufferBuilder::new()
            .with_config(RedisConfigKey::CapacityBytes, "1024")
            .with_config(RedisConfigKey::WhenFull, "reject")
            .with_config(RedisConfigKey::AllowEviction, "true");
        assert_eq!(b.capacity, Capacity::bytes(1024));
        assert_eq!(b.when_full, WhenFull::Reject);
        assert!(b.allow_eviction);
        assert!(b.invalid.is_none());
        let b = RedisBufferBuilder::new().with_config(RedisConfigKey::CapacityBytes, "lots");
        assert!(b.invalid.is_some());
        // The current name takes the one size rule; applied after the former name, it wins.
        let b = RedisBufferBuilder::new()
            .with_config(RedisConfigKey::CapacityBytes, "1024")
            .with_config(RedisConfigKey::BufferSize, "1500MB");
        assert_eq!(b.capacity, Capacity::bytes(1_500_000_000));
        let b = RedisBufferBuilder::new().with_config(RedisConfigKey::BufferSize, "2GiB");
        assert_eq!(b.capacity, Capacity::bytes(2 << 30));
        for bad in ["0", "lots", "-1MB"] {
            let b = RedisBufferBuilder::new().with_config(RedisConfigKey::BufferSize, bad);
            assert!(b.invalid.is_some(), "{bad}");
        }
        let order = |key| RedisConfigKey::ALL.iter().position(|(k, _, _)| *k == key);
        assert!(order(RedisConfigKey::CapacityBytes) < order(RedisConfigKey::BufferSize));
    }

    #[tokio::test]
    async fn invalid_config_fails_build() {
        let err = RedisBufferBuilder::new()
            .with_config(RedisConfigKey::WhenFull, "drop")
            .build()
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::Config {
                    key: "when_full",
                    ..
                }
            ),
            "{err}"
        );
    }
}
