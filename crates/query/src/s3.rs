//! Reading a dataset from S3-compatible storage through object_store, with the sink's settings.

use std::fmt;
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;

use crate::{Error, Result};

/// A secret that never prints.
#[derive(Clone, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

/// How to reach an S3-compatible store: the same settings the sink uses (path-style requests,
/// a custom endpoint, a region always).
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    /// The endpoint, e.g. `https://fsn1.your-objectstorage.com`. Plain `http://` is accepted
    /// only for loopback addresses (local test servers).
    pub endpoint: Option<String>,
    /// The region (`us-east-1` when none is given: SigV4 needs one).
    pub region: Option<String>,
    /// Access key id.
    pub access_key_id: Option<String>,
    /// Secret access key.
    pub secret_access_key: Option<Secret>,
    /// Session token, for temporary credentials.
    pub session_token: Option<Secret>,
}

impl S3Options {
    /// Reads the standard variables: `AWS_ENDPOINT_URL` (or `AWS_ENDPOINT_URL_S3`),
    /// `AWS_REGION` (or `AWS_DEFAULT_REGION`), `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_SESSION_TOKEN`.
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        S3Options {
            endpoint: var("AWS_ENDPOINT_URL_S3").or_else(|| var("AWS_ENDPOINT_URL")),
            region: var("AWS_REGION").or_else(|| var("AWS_DEFAULT_REGION")),
            access_key_id: var("AWS_ACCESS_KEY_ID"),
            secret_access_key: var("AWS_SECRET_ACCESS_KEY").map(Secret),
            session_token: var("AWS_SESSION_TOKEN").map(Secret),
        }
    }

    /// The object store for `bucket`.
    pub(crate) fn build(&self, bucket: &str, location: &str) -> Result<Arc<dyn ObjectStore>> {
        let open_error = |reason: String| Error::Open {
            location: location.to_owned(),
            reason,
        };
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region(self.region.as_deref().unwrap_or("us-east-1"))
            .with_virtual_hosted_style_request(false);
        if let Some(endpoint) = &self.endpoint {
            if endpoint.starts_with("http://") {
                if !is_loopback(endpoint) {
                    return Err(open_error(format!(
                        "plain http is only allowed for loopback endpoints, not {endpoint}"
                    )));
                }
                builder = builder.with_allow_http(true);
            }
            builder = builder.with_endpoint(endpoint);
        }
        if let Some(key) = &self.access_key_id {
            builder = builder.with_access_key_id(key);
        }
        if let Some(secret) = &self.secret_access_key {
            builder = builder.with_secret_access_key(&secret.0);
        }
        if let Some(token) = &self.session_token {
            builder = builder.with_token(&token.0);
        }
        let store = builder.build().map_err(|e| open_error(e.to_string()))?;
        Ok(Arc::new(store))
    }
}

/// True for `http://127.x.x.x[:port]`, `http://localhost[:port]` and `http://[::1][:port]`.
fn is_loopback(endpoint: &str) -> bool {
    let Ok(url) = url::Url::parse(endpoint) else {
        return false;
    };
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Splits `s3://bucket/prefix` into the bucket and the prefix (without slashes at its ends).
pub(crate) fn split_s3_url(location: &str) -> Result<(String, String)> {
    let invalid = |reason: &str| Error::Open {
        location: location.to_owned(),
        reason: reason.to_owned(),
    };
    let rest = location
        .strip_prefix("s3://")
        .ok_or_else(|| invalid("an S3 location starts with s3://"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.len() < 3
        || !bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    {
        return Err(invalid(
            "the bucket name must be 3 or more lowercase letters, digits, '-' or '.'",
        ));
    }
    Ok((bucket.to_owned(), prefix.trim_matches('/').to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_only_for_http() {
        assert!(is_loopback("http://127.0.0.1:9000"));
        assert!(is_loopback("http://localhost:9000"));
        assert!(is_loopback("http://[::1]:9000"));
        assert!(!is_loopback("http://10.0.0.1:9000"));
        assert!(!is_loopback("http://example.com"));
        let plain = S3Options {
            endpoint: Some("http://fsn1.your-objectstorage.com".into()),
            ..S3Options::default()
        };
        assert!(plain.build("bucket", "s3://bucket").is_err());
    }

    #[test]
    fn secrets_do_not_print() {
        let o = S3Options {
            secret_access_key: Some(Secret::new("hunter2")),
            ..S3Options::default()
        };
        assert!(!format!("{o:?}").contains("hunter2"));
    }

    #[test]
    fn s3_urls_split() {
        assert_eq!(
            split_s3_url("s3://bucket/archive/v1/").unwrap(),
            ("bucket".into(), "archive/v1".into())
        );
        assert_eq!(
            split_s3_url("s3://bucket").unwrap(),
            ("bucket".into(), String::new())
        );
        assert!(split_s3_url("s3://B").is_err());
    }
}
