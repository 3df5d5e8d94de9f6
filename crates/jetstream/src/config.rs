//! What to connect to and what to ask for.

use std::path::Path;
use std::time::Duration;

use crate::Error;

/// The public Jetstream v1 hosts, in the order the default [`Config`] tries them.
pub const PUBLIC_HOSTS: [&str; 4] = [
    "wss://jetstream1.us-east.bsky.network/subscribe",
    "wss://jetstream2.us-east.bsky.network/subscribe",
    "wss://jetstream1.us-west.bsky.network/subscribe",
    "wss://jetstream2.us-west.bsky.network/subscribe",
];

/// Jetstream accepts at most this many `wantedCollections`.
pub const MAX_WANTED_COLLECTIONS: usize = 100;
/// Jetstream accepts at most this many `wantedDids`.
pub const MAX_WANTED_DIDS: usize = 10_000;

/// Where to connect and what to ask for.
///
/// The default connects to the four [`PUBLIC_HOSTS`], wants everything, uncompressed.
#[derive(Clone)]
pub struct Config {
    /// WebSocket URLs with their path (`wss://host/subscribe`); the query is added by the
    /// client. Tried round-robin when one fails.
    pub urls: Vec<String>,
    /// Collections (NSIDs) to receive, or prefixes like `app.bsky.graph.*`; empty means all.
    /// Identity and account events come whatever this says.
    pub wanted_collections: Vec<String>,
    /// Repositories (DIDs) to receive; empty means all.
    pub wanted_dids: Vec<String>,
    /// Ask for zstd-compressed frames (about a third of the bytes); needs
    /// [`zstd_dictionary`](Self::zstd_dictionary).
    pub compress: bool,
    /// The Jetstream zstd dictionary, e.g. from [`load_dictionary`].
    pub zstd_dictionary: Option<Vec<u8>>,
    /// Ask the server to leave out events larger than this.
    pub max_message_size_bytes: Option<u64>,
    /// Ask the server to wait for an `options_update` before sending, and send one right
    /// after connecting (useful when the filters are too long for a URL).
    pub require_hello: bool,
    /// How far before the largest `time_us` seen to resume on a reconnect.
    pub rewind: Duration,
    /// Reconnect when no frame arrives for this long while [`Source::next`](crate::Source::next)
    /// waits. With narrow filters, quiet spells are normal: raise it.
    pub liveness_timeout: Duration,
    /// Give up a connection attempt after this long.
    pub connect_timeout: Duration,
    /// The first delay between reconnection attempts.
    pub backoff_min: Duration,
    /// The largest delay between reconnection attempts.
    pub backoff_max: Duration,
    /// An event whose `time_us` is further ahead of the local clock than this does not move the
    /// cursor (it is still delivered). Jetstream stamps events with its own clock, so such an
    /// event comes from a broken or hostile server; were it to move the cursor, the next
    /// connection would resume in the future and skip everything before. Default one minute,
    /// as `firehose_core::MAX_CLOCK_AHEAD_US`.
    pub max_clock_ahead: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            urls: PUBLIC_HOSTS.iter().map(|&url| url.to_owned()).collect(),
            wanted_collections: Vec::new(),
            wanted_dids: Vec::new(),
            compress: false,
            zstd_dictionary: None,
            max_message_size_bytes: None,
            require_hello: false,
            rewind: Duration::from_secs(5),
            liveness_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            backoff_min: Duration::from_millis(250),
            backoff_max: Duration::from_secs(30),
            max_clock_ahead: Duration::from_secs(60),
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("urls", &self.urls)
            .field("wanted_collections", &self.wanted_collections)
            .field("wanted_dids", &self.wanted_dids.len())
            .field("compress", &self.compress)
            .field(
                "zstd_dictionary",
                &self.zstd_dictionary.as_ref().map(Vec::len),
            )
            .field("max_message_size_bytes", &self.max_message_size_bytes)
            .field("require_hello", &self.require_hello)
            .field("rewind", &self.rewind)
            .field("liveness_timeout", &self.liveness_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("backoff_min", &self.backoff_min)
            .field("backoff_max", &self.backoff_max)
            .field("max_clock_ahead", &self.max_clock_ahead)
            .finish()
    }
}

impl Config {
    /// Checks the settings.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        if self.urls.is_empty() {
            return Err(Error::NoUrls);
        }
        for url in &self.urls {
            if !(url.starts_with("ws://") || url.starts_with("wss://")) {
                return Err(Error::InvalidUrl {
                    url: url.clone(),
                    reason: "it must start with ws:// or wss://".to_owned(),
                });
            }
        }
        check_filters(&self.wanted_collections, &self.wanted_dids)?;
        if self.compress && self.zstd_dictionary.is_none() {
            return Err(Error::MissingDictionary);
        }
        for (setting, value) in [
            ("liveness_timeout", self.liveness_timeout),
            ("connect_timeout", self.connect_timeout),
            ("backoff_max", self.backoff_max),
        ] {
            if value.is_zero() {
                return Err(Error::InvalidSetting {
                    setting,
                    reason: "it must be longer than zero".to_owned(),
                });
            }
        }
        if self.backoff_min > self.backoff_max {
            return Err(Error::InvalidSetting {
                setting: "backoff_min",
                reason: format!(
                    "{:?} is longer than backoff_max {:?}",
                    self.backoff_min, self.backoff_max
                ),
            });
        }
        Ok(())
    }

    /// The URL to connect to: `base` with the query for these settings and `cursor`.
    pub(crate) fn url(&self, base: &str, cursor: Option<i64>) -> String {
        let mut url = base.to_owned();
        let mut separator = if base.contains('?') { '&' } else { '?' };
        let mut push = |key: &str, value: &str| {
            url.push(separator);
            separator = '&';
            url.push_str(key);
            url.push('=');
            percent_encode(value, &mut url);
        };
        for collection in &self.wanted_collections {
            push("wantedCollections", collection);
        }
        for did in &self.wanted_dids {
            push("wantedDids", did);
        }
        if let Some(cursor) = cursor {
            push("cursor", &cursor.to_string());
        }
        if self.compress {
            push("compress", "true");
        }
        if let Some(max) = self.max_message_size_bytes {
            push("maxMessageSizeBytes", &max.to_string());
        }
        if self.require_hello {
            push("requireHello", "true");
        }
        url
    }
}

pub(crate) fn check_filters(collections: &[String], dids: &[String]) -> Result<(), Error> {
    if collections.len() > MAX_WANTED_COLLECTIONS {
        return Err(Error::InvalidSetting {
            setting: "wanted_collections",
            reason: format!(
                "{} collections, Jetstream accepts at most {MAX_WANTED_COLLECTIONS}",
                collections.len()
            ),
        });
    }
    if dids.len() > MAX_WANTED_DIDS {
        return Err(Error::InvalidSetting {
            setting: "wanted_dids",
            reason: format!(
                "{} DIDs, Jetstream accepts at most {MAX_WANTED_DIDS}",
                dids.len()
            ),
        });
    }
    Ok(())
}

/// Appends `value` to `out`, percent-encoding what a query value may not hold as it is.
fn percent_encode(value: &str, out: &mut String) {
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~:@*".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
}

/// Reads the Jetstream zstd dictionary from `path`.
///
/// ```
/// let error = firehose_jetstream::load_dictionary("/nonexistent/dictionary").unwrap_err();
/// assert!(error.to_string().starts_with("cannot read the zstd dictionary /nonexistent/dictionary"));
/// ```
pub fn load_dictionary(path: impl AsRef<Path>) -> Result<Vec<u8>, Error> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| Error::DictionaryFile {
        path: path.to_owned(),
        source,
    })?;
    if bytes.is_empty() {
        return Err(Error::DictionaryFile {
            path: path.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, "the file is empty"),
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_carries_filters_cursor_and_options() {
        let config = Config {
            wanted_collections: vec!["app.bsky.feed.post".into(), "app.bsky.graph.*".into()],
            wanted_dids: vec!["did:plc:abc".into(), "did:web:a b".into()],
            compress: true,
            max_message_size_bytes: Some(1000),
            require_hello: true,
            ..Config::default()
        };
        assert_eq!(
            config.url("ws://h/subscribe", Some(17)),
            "ws://h/subscribe?wantedCollections=app.bsky.feed.post\
             &wantedCollections=app.bsky.graph.*&wantedDids=did:plc:abc\
             &wantedDids=did:web:a%20b&cursor=17&compress=true&maxMessageSizeBytes=1000\
             &requireHello=true"
        );
        assert_eq!(
            Config::default().url("ws://h/subscribe?x=1", None),
            "ws://h/subscribe?x=1"
        );
    }

    #[test]
    fn validation_explains_what_is_wrong() {
        let bad = |config: Config| config.validate().unwrap_err().to_string();
        assert_eq!(
            bad(Config {
                urls: vec![],
                ..Config::default()
            }),
            "no Jetstream URL is configured"
        );
        assert!(
            bad(Config {
                urls: vec!["http://h/subscribe".into()],
                ..Config::default()
            })
            .contains("ws:// or wss://")
        );
        assert!(
            bad(Config {
                compress: true,
                ..Config::default()
            })
            .contains("dictionary")
        );
        assert!(
            bad(Config {
                wanted_collections: vec!["a.b".into(); 101],
                ..Config::default()
            })
            .contains("at most 100")
        );
        assert!(
            bad(Config {
                backoff_min: Duration::from_secs(60),
                ..Config::default()
            })
            .contains("backoff_min")
        );
        Config::default().validate().unwrap();
    }
}
