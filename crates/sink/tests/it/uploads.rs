//! Aborting multipart uploads against a real S3-compatible server (s3s-fs).
//!
//! s3s-fs 0.14.1 answers `ListMultipartUploads` with `NotImplemented`, so finding stale uploads
//! cannot run against it: that the error says so is tested, and aborting a known upload is.

use std::time::{Duration, SystemTime};

use aws_sdk_s3::primitives::ByteStream;
use firehose_sink::s3::PendingUpload;

use crate::s3::{server, storage};

#[tokio::test]
async fn an_upload_is_aborted() {
    let Some(server) = server() else { return };
    let s = storage(&server, |_| {}).await;
    let key = "archive/v1/posts/year=2026/month=11/day=20/hour=05/big.parquet";
    let created = s
        .client()
        .create_multipart_upload()
        .bucket(s.bucket())
        .key(key)
        .send()
        .await
        .unwrap();
    let upload = PendingUpload {
        path: key.trim_start_matches("archive/v1/").to_owned(),
        key: key.to_owned(),
        upload_id: created.upload_id().unwrap().to_owned(),
        initiated: SystemTime::now(),
    };
    let part = |n: i32| {
        s.client()
            .upload_part()
            .bucket(s.bucket())
            .key(key)
            .upload_id(&upload.upload_id)
            .part_number(n)
            .body(ByteStream::from_static(b"part"))
            .send()
    };
    part(1).await.unwrap();
    s.abort_upload(&upload).await.unwrap();
    assert!(part(2).await.is_err(), "the upload is gone once aborted");
    // (S3 answers a second abort with NoSuchUpload, which `abort_upload` accepts; s3s-fs
    // answers AccessDenied, so that case cannot be checked here.)
}

#[tokio::test]
async fn listing_uploads_on_a_server_without_it_is_a_clear_error() {
    let Some(server) = server() else { return };
    let s = storage(&server, |_| {}).await;
    let err = s
        .stale_uploads(Duration::ZERO)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("S3 list multipart uploads archive/v1/: NotImplemented"),
        "{err}"
    );
}
