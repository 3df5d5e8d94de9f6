//! Reading a dataset from S3-compatible storage through object_store, with the sink's settings.

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;

use firehose_core::location::{S3Location, check_endpoint};

use crate::{Error, Result};

pub use firehose_core::location::Secret;

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
            secret_access_key: var("AWS_SECRET_ACCESS_KEY").map(Secret::new),
            session_token: var("AWS_SESSION_TOKEN").map(Secret::new),
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
            check_endpoint(endpoint).map_err(|e| open_error(e.to_string()))?;
            if endpoint.starts_with("http://") {
                builder = builder.with_allow_http(true);
            }
            builder = builder.with_endpoint(endpoint);
        }
        if let Some(key) = &self.access_key_id {
            builder = builder.with_access_key_id(key);
        }
        if let Some(secret) = &self.secret_access_key {
            builder = builder.with_secret_access_key(secret.expose());
        }
        if let Some(token) = &self.session_token {
            builder = builder.with_token(token.expose());
        }
        let store = builder.build().map_err(|e| open_error(e.to_string()))?;
        Ok(Arc::new(store))
    }
}

/// Splits `s3://bucket/prefix` into the bucket and the prefix (without slashes at its ends).
pub(crate) fn split_s3_url(location: &str) -> Result<(String, String)> {
    let s3 = S3Location::parse(location).map_err(|e| Error::Open {
        location: location.to_owned(),
        reason: e.reason.to_owned(),
    })?;
    Ok((s3.bucket, s3.prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_only_for_http() {
        let local = S3Options {
            endpoint: Some("http://127.0.0.1:9000".into()),
            ..S3Options::default()
        };
        assert!(local.build("bucket", "s3://bucket").is_ok());
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
