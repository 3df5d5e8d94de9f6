//! The same answers from an S3-compatible server (s3s-fs, which checks SigV4 signatures).
//!
//! `scripts/test` starts one and sets `FIREHOSE_TEST_S3_ENDPOINT`, `FIREHOSE_TEST_S3_ACCESS_KEY`
//! and `FIREHOSE_TEST_S3_SECRET_KEY`. Without them the test prints that it did not run, or
//! fails when `FIREHOSE_REQUIRE_SERVERS=1`.

use std::sync::Arc;

use firehose_query::{Dataset, QueryOptions, S3Options, Secret};
use firehose_sink::s3::{S3Config, S3Storage};

use crate::answers::check_all;
use crate::common::*;

struct Server {
    endpoint: String,
    access_key: String,
    secret_key: String,
}

fn server() -> Option<Server> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    match (
        var("FIREHOSE_TEST_S3_ENDPOINT"),
        var("FIREHOSE_TEST_S3_ACCESS_KEY"),
        var("FIREHOSE_TEST_S3_SECRET_KEY"),
    ) {
        (Some(endpoint), Some(access_key), Some(secret_key)) => Some(Server {
            endpoint,
            access_key,
            secret_key,
        }),
        _ if var("FIREHOSE_REQUIRE_SERVERS").as_deref() == Some("1") => {
            panic!("FIREHOSE_TEST_S3_* are not set but FIREHOSE_REQUIRE_SERVERS=1")
        }
        _ => {
            eprintln!("NOT RUN: FIREHOSE_TEST_S3_ENDPOINT is not set (scripts/test starts s3s-fs)");
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_answers_exactly_on_s3() {
    let Some(server) = server() else { return };
    let bucket = format!("query-{}", std::process::id());
    let location = format!("s3://{bucket}/archive/v1");
    let mut config = S3Config::from_url(&location).unwrap();
    config.endpoint = Some(server.endpoint.clone());
    config.region = Some("fsn1".into());
    config.access_key_id = Some(server.access_key.clone());
    config.secret_access_key = Some(firehose_sink::s3::Secret::new(server.secret_key.clone()));
    let storage = S3Storage::new(config).await.unwrap();
    storage
        .client()
        .create_bucket()
        .bucket(storage.bucket())
        .send()
        .await
        .unwrap();
    let events = generated(24_000, 11);
    write_with_duplicates(Arc::new(storage), &events).await;

    let s3 = S3Options {
        endpoint: Some(server.endpoint.clone()),
        region: Some("fsn1".into()),
        access_key_id: Some(server.access_key.clone()),
        secret_access_key: Some(Secret::new(server.secret_key.clone())),
        session_token: None,
    };
    let ds = Dataset::open_s3(&location, &s3, QueryOptions::default())
        .await
        .unwrap();
    check_all(&ds, &events).await;

    // A wrong secret fails as an execution error, and the secret is not in the message.
    let wrong = S3Options {
        secret_access_key: Some(Secret::new("not-the-secret-xyzzy")),
        ..s3
    };
    let ds = Dataset::open_s3(&location, &wrong, QueryOptions::default())
        .await
        .unwrap();
    let err = ds.sql("SELECT count(*) FROM posts").await.unwrap_err();
    assert!(!err.is_refused(), "{err}");
    assert!(!err.to_string().contains("xyzzy"));
}
