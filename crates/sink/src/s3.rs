//! A dataset in an S3-compatible bucket (Hetzner Object Storage, MinIO, AWS).

use std::fmt;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use base64::Engine as _;
use bytes::Bytes;
use firehose_core::location::{S3Location, check_endpoint};
use md5::{Digest, Md5};

use crate::storage::{ObjectInfo, Storage};
use crate::{Error, Result};

/// The smallest part of a multipart upload we send (S3 allows 5 MiB; Hetzner recommends more).
pub const MIN_PART_SIZE: usize = 8 * 1024 * 1024;

pub use firehose_core::location::Secret;

/// Where and how to reach the bucket.
///
/// Anything left `None` comes from the standard AWS environment and files (`AWS_ENDPOINT_URL`,
/// `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, profiles, ...).
#[derive(Debug, Clone)]
pub struct S3Config {
    /// The bucket.
    pub bucket: String,
    /// A key prefix under which the dataset lives (no leading or trailing `/`), or empty.
    pub prefix: String,
    /// The endpoint, e.g. `https://fsn1.your-objectstorage.com` for Hetzner in Falkenstein.
    pub endpoint: Option<String>,
    /// The region, e.g. `fsn1`. SigV4 needs one: `us-east-1` when neither this nor the
    /// environment gives one.
    pub region: Option<String>,
    /// Access key id.
    pub access_key_id: Option<String>,
    /// Secret access key.
    pub secret_access_key: Option<Secret>,
    /// Files up to this size go up with one PutObject; larger ones as a multipart upload.
    pub multipart_threshold: usize,
    /// Size of each multipart part but the last (at least [`MIN_PART_SIZE`]).
    pub part_size: usize,
    /// Attempts per request (throttling, 5xx and connection errors are retried with
    /// exponential backoff and jitter).
    pub max_attempts: u32,
    /// Upper bound of the backoff between attempts.
    pub max_backoff: Duration,
}

impl S3Config {
    /// A config for `s3://bucket/prefix`, everything else from the environment.
    pub fn from_url(url: &str) -> Result<Self> {
        let location = S3Location::parse(url).map_err(|e| Error::InvalidPath {
            path: e.location,
            reason: e.reason,
        })?;
        Ok(S3Config {
            bucket: location.bucket,
            prefix: location.prefix,
            endpoint: None,
            region: None,
            access_key_id: None,
            secret_access_key: None,
            multipart_threshold: 16 * 1024 * 1024,
            part_size: MIN_PART_SIZE,
            max_attempts: 8,
            max_backoff: Duration::from_secs(20),
        })
    }
}

/// A dataset in a bucket.
///
/// Settings that S3-compatible stores such as Hetzner's (Ceph RGW) need: path-style addressing
/// (`endpoint/bucket/key`), a region always, and the SDK's default CRC32 request checksums off
/// (`WhenRequired`; since aws-sdk-s3 1.69 they make Ceph reject `UploadPart` with
/// `XAmzContentSHA256Mismatch`). Integrity comes from Content-MD5 on every upload instead. A
/// file counts as written only once its upload completed; a failed multipart upload is
/// aborted.
pub struct S3Storage {
    client: Client,
    config: S3Config,
}

impl fmt::Debug for S3Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Storage")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A failed request: the service's code and message when it answered (e.g.
/// `SignatureDoesNotMatch (HTTP 403)`), the chain of causes otherwise (e.g. connection refused).
fn s3_error<E>(op: &'static str, path: &str, e: SdkError<E, HttpResponse>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let message = match &e {
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            match (service.err().code(), service.err().message()) {
                (Some(code), Some(message)) => format!("{code}: {message} (HTTP {status})"),
                (Some(code), None) => format!("{code} (HTTP {status})"),
                _ => format!("HTTP {status}: {}", DisplayErrorContext(&e)),
            }
        }
        _ => DisplayErrorContext(&e).to_string(),
    };
    Error::S3 {
        op,
        path: path.to_owned(),
        message,
    }
}

fn md5_base64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Md5::digest(data))
}

impl S3Storage {
    /// Connects (lazily: the first request opens the connection) with `config`.
    pub async fn new(config: S3Config) -> Result<Self> {
        if config.part_size < MIN_PART_SIZE {
            return Err(Error::Config(format!(
                "part size must be at least {MIN_PART_SIZE} bytes"
            )));
        }
        let https = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(https);
        if let Some(endpoint) = &config.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        if let Some(region) = &config.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let (Some(id), Some(secret)) = (&config.access_key_id, &config.secret_access_key) {
            loader = loader.credentials_provider(Credentials::new(
                id,
                secret.expose(),
                None,
                None,
                "firehose",
            ));
        }
        let shared = loader.load().await;
        if let Some(endpoint) = shared.endpoint_url() {
            check_endpoint(endpoint).map_err(|e| Error::Config(e.to_string()))?;
        }
        let mut builder = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(true)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(config.max_attempts.max(1))
                    .with_max_backoff(config.max_backoff),
            );
        if shared.region().is_none() {
            builder = builder.region(Region::new("us-east-1"));
        }
        Ok(S3Storage {
            client: Client::from_conf(builder.build()),
            config,
        })
    }

    /// The underlying client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.config.bucket
    }

    fn key(&self, path: &str) -> String {
        if self.config.prefix.is_empty() {
            path.to_owned()
        } else {
            format!("{}/{path}", self.config.prefix)
        }
    }

    fn path_of<'k>(&self, key: &'k str) -> &'k str {
        if self.config.prefix.is_empty() {
            key
        } else {
            key.strip_prefix(&self.config.prefix)
                .map_or(key, |k| k.trim_start_matches('/'))
        }
    }

    async fn put_single(&self, path: &str, key: &str, data: Bytes) -> Result<()> {
        self.client
            .put_object()
            .bucket(&self.config.bucket)
            .key(key)
            .content_md5(md5_base64(&data))
            .body(ByteStream::from(data))
            .send()
            .await
            .map_err(|e| s3_error("put", path, e))?;
        Ok(())
    }

    async fn put_multipart(&self, path: &str, key: &str, data: Bytes) -> Result<()> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.config.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| s3_error("put (create multipart upload)", path, e))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| Error::S3 {
                op: "put",
                path: path.to_owned(),
                message: "no upload id in the reply".into(),
            })?
            .to_owned();
        let uploaded = self.upload_parts(path, key, &upload_id, &data).await;
        let completed = match uploaded {
            Ok(parts) => self
                .client
                .complete_multipart_upload()
                .bucket(&self.config.bucket)
                .key(key)
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .map(|_| ())
                .map_err(|e| s3_error("put (complete multipart upload)", path, e)),
            Err(e) => Err(e),
        };
        if completed.is_err() {
            // Best effort: what is not aborted here, `cleanup-uploads` aborts later.
            if let Err(e) = self
                .client
                .abort_multipart_upload()
                .bucket(&self.config.bucket)
                .key(key)
                .upload_id(&upload_id)
                .send()
                .await
            {
                tracing::warn!(%path, error = %DisplayErrorContext(&e), "Could not abort a failed multipart upload.");
            }
        }
        completed
    }

    async fn upload_parts(
        &self,
        path: &str,
        key: &str,
        upload_id: &str,
        data: &Bytes,
    ) -> Result<Vec<CompletedPart>> {
        let mut parts = Vec::new();
        for (i, start) in (0..data.len()).step_by(self.config.part_size).enumerate() {
            let part = data.slice(start..(start + self.config.part_size).min(data.len()));
            let number =
                i32::try_from(i + 1).map_err(|_| Error::Config("too many parts".into()))?;
            let reply = self
                .client
                .upload_part()
                .bucket(&self.config.bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .content_md5(md5_base64(&part))
                .body(ByteStream::from(part))
                .send()
                .await
                .map_err(|e| s3_error("put (upload part)", path, e))?;
            parts.push(
                CompletedPart::builder()
                    .set_e_tag(reply.e_tag().map(str::to_owned))
                    .part_number(number)
                    .build(),
            );
        }
        Ok(parts)
    }

    /// Multipart uploads under the dataset that were started more than `older_than` ago and
    /// never completed or aborted (a writer that died mid-upload leaves them, and the bucket
    /// keeps billing their parts). Servers without `ListMultipartUploads` (s3s-fs 0.14) answer
    /// with an error, which is returned.
    pub async fn stale_uploads(&self, older_than: Duration) -> Result<Vec<PendingUpload>> {
        let cutoff = SystemTime::now()
            .checked_sub(older_than)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let prefix = self.key("");
        let mut stale = Vec::new();
        let mut key_marker: Option<String> = None;
        let mut id_marker: Option<String> = None;
        loop {
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(&self.config.bucket)
                .prefix(&prefix)
                .set_key_marker(key_marker.clone())
                .set_upload_id_marker(id_marker.clone())
                .send()
                .await
                .map_err(|e| s3_error("list multipart uploads", &prefix, e))?;
            for upload in page.uploads() {
                let (Some(key), Some(id)) = (upload.key(), upload.upload_id()) else {
                    continue;
                };
                let Some(initiated) = upload
                    .initiated()
                    .and_then(|t| SystemTime::try_from(*t).ok())
                else {
                    continue;
                };
                if initiated < cutoff {
                    stale.push(PendingUpload {
                        path: self.path_of(key).to_owned(),
                        key: key.to_owned(),
                        upload_id: id.to_owned(),
                        initiated,
                    });
                }
            }
            if page.is_truncated() != Some(true) {
                return Ok(stale);
            }
            key_marker = page.next_key_marker().map(str::to_owned);
            id_marker = page.next_upload_id_marker().map(str::to_owned);
            if key_marker.is_none() && id_marker.is_none() {
                return Ok(stale);
            }
        }
    }

    /// Aborts one multipart upload, freeing its parts. Aborting one that is already gone is
    /// not an error.
    pub async fn abort_upload(&self, upload: &PendingUpload) -> Result<()> {
        match self
            .client
            .abort_multipart_upload()
            .bucket(&self.config.bucket)
            .key(&upload.key)
            .upload_id(&upload.upload_id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("NoSuchUpload") => Ok(()),
            Err(e) => Err(s3_error("abort multipart upload", &upload.path, e)),
        }
    }

    /// Aborts multipart uploads under the dataset started before `older_than` ago (Hetzner has
    /// no lifecycle rule to do it); returns how many.
    pub async fn abort_stale_uploads(&self, older_than: Duration) -> Result<usize> {
        let stale = self.stale_uploads(older_than).await?;
        for upload in &stale {
            self.abort_upload(upload).await?;
        }
        Ok(stale.len())
    }
}

/// A multipart upload that was started and neither completed nor aborted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingUpload {
    /// The object's path relative to the dataset root.
    pub path: String,
    /// Its key in the bucket.
    pub key: String,
    /// The upload's id.
    pub upload_id: String,
    /// When it was started.
    pub initiated: SystemTime,
}

#[async_trait]
impl Storage for S3Storage {
    async fn put(&self, path: &str, data: Bytes) -> Result<()> {
        let key = self.key(path);
        let bytes = data.len();
        if data.len() <= self.config.multipart_threshold {
            self.put_single(path, &key, data).await?;
        } else {
            self.put_multipart(path, &key, data).await?;
        }
        tracing::debug!(%path, bytes, "Uploaded file.");
        Ok(())
    }

    async fn get(&self, path: &str) -> Result<Bytes> {
        let reply = self
            .client
            .get_object()
            .bucket(&self.config.bucket)
            .key(self.key(path))
            .send()
            .await;
        let reply = match reply {
            Ok(reply) => reply,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                return Err(Error::NotFound {
                    path: path.to_owned(),
                });
            }
            Err(e) => return Err(s3_error("get", path, e)),
        };
        let body = reply.body.collect().await.map_err(|e| Error::S3 {
            op: "get",
            path: path.to_owned(),
            message: DisplayErrorContext(&e).to_string(),
        })?;
        Ok(body.into_bytes())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let key_prefix = self.key(prefix);
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.config.bucket)
            .prefix(&key_prefix)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| s3_error("list", prefix, e))?;
            for object in page.contents() {
                let Some(key) = object.key() else { continue };
                out.push(ObjectInfo {
                    path: self.path_of(key).to_owned(),
                    size: object
                        .size()
                        .and_then(|s| u64::try_from(s).ok())
                        .unwrap_or(0),
                });
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    async fn delete(&self, path: &str) -> Result<()> {
        match self
            .client
            .delete_object()
            .bucket(&self.config.bucket)
            .key(self.key(path))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("NoSuchKey") => Ok(()),
            Err(e) => Err(s3_error("delete", path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn plain_http_is_refused_except_to_loopback() {
        let mut config = S3Config::from_url("s3://archive/v1").unwrap();
        config.region = Some("fsn1".into());
        config.endpoint = Some("http://fsn1.your-objectstorage.com".into());
        let refused = S3Storage::new(config.clone()).await.unwrap_err();
        assert!(refused.to_string().contains("plain http"), "{refused}");
        config.endpoint = Some("http://127.0.0.1:9000".into());
        assert!(S3Storage::new(config).await.is_ok());
    }
}
