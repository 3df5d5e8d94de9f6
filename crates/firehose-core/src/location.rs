//! Where a dataset is: a local directory or `s3://bucket/prefix`, with the rules every crate
//! applies to it (bucket names, plain HTTP only to loopback), and the secret type for its
//! credentials. Parsing only: opening the store is the sink's and the query side's job.
//!
//! ```
//! use firehose_core::location::{S3Location, check_endpoint};
//! let s3 = S3Location::parse("s3://archive/v1/").unwrap();
//! assert_eq!((s3.bucket.as_str(), s3.prefix.as_str()), ("archive", "v1"));
//! assert!(check_endpoint("https://fsn1.your-objectstorage.com").is_ok());
//! assert!(check_endpoint("http://127.0.0.1:9000").is_ok());
//! assert!(check_endpoint("http://fsn1.your-objectstorage.com").is_err());
//! ```

use std::fmt;
use std::net::IpAddr;

/// A location that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {reason}")]
pub struct LocationError {
    /// The location or endpoint given.
    pub location: String,
    /// Why it cannot be used.
    pub reason: &'static str,
}

/// The directory of a local dataset location; `None` for `s3://…`.
pub fn local_path(location: &str) -> Option<&std::path::Path> {
    (!location.starts_with("s3://")).then(|| std::path::Path::new(location))
}

/// `s3://bucket/prefix`, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    /// The bucket: 3 or more lowercase letters, digits, `-` or `.`.
    pub bucket: String,
    /// The prefix inside it, without slashes at its ends (may be empty).
    pub prefix: String,
}

impl S3Location {
    /// Parses `s3://bucket/prefix`.
    pub fn parse(url: &str) -> Result<S3Location, LocationError> {
        let invalid = |reason| LocationError {
            location: url.to_owned(),
            reason,
        };
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| invalid("an S3 location starts with s3://"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let valid = bucket.len() >= 3
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !valid {
            return Err(invalid(
                "the bucket name must be 3 or more lowercase letters, digits, '-' or '.'",
            ));
        }
        Ok(S3Location {
            bucket: bucket.to_owned(),
            prefix: prefix.trim_matches('/').to_owned(),
        })
    }
}

/// Whether an object store endpoint may be used: `https://` always; plain `http://` only to a
/// loopback host (`localhost`, `127.x.x.x`, `[::1]`: a test server), since credentials and data
/// would cross the network in the clear.
pub fn check_endpoint(endpoint: &str) -> Result<(), LocationError> {
    let Some(rest) = endpoint.strip_prefix("http://") else {
        return Ok(());
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host_port.split(':').next().unwrap_or(""),
    };
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if loopback {
        Ok(())
    } else {
        Err(LocationError {
            location: endpoint.to_owned(),
            reason: "plain http is only allowed for loopback endpoints; use https",
        })
    }
}

/// A secret (a key, a password, a token) that never shows in `Debug` output or logs.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Any text parses: flags and settings can hold a secret directly.
impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(value: &str) -> Result<Secret, Self::Err> {
        Ok(Secret::new(value))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_locations_parse_with_the_bucket_rules() {
        let s3 = S3Location::parse("s3://archive").unwrap();
        assert_eq!((s3.bucket.as_str(), s3.prefix.as_str()), ("archive", ""));
        let s3 = S3Location::parse("s3://my.bucket-1/a/b/").unwrap();
        assert_eq!(
            (s3.bucket.as_str(), s3.prefix.as_str()),
            ("my.bucket-1", "a/b")
        );
        for bad in [
            "archive",
            "s3://ab",
            "s3://Archive/x",
            "s3://a_b/x",
            "s3:///x",
            "file:///x",
        ] {
            assert!(S3Location::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn plain_http_only_to_loopback() {
        for ok in [
            "https://fsn1.your-objectstorage.com",
            "http://127.0.0.1:9000",
            "http://127.9.9.9",
            "http://localhost:9000/",
            "http://LOCALHOST",
            "http://[::1]:9000",
        ] {
            assert!(check_endpoint(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://10.0.0.1:9000",
            "http://example.com",
            "http://127.0.0.1.example.com",
            "http://localhost.evil.com:80",
            "http://user@example.com",
            "http://[2001:db8::1]:9000",
        ] {
            assert!(check_endpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn secrets_do_not_print() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "\"***\"");
        assert_eq!(secret.expose(), "hunter2");
    }
}
