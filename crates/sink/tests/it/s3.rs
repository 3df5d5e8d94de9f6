//! Against a real S3-compatible server (s3s-fs, which checks SigV4 signatures).
//!
//! `scripts/test` starts one and sets `FIREHOSE_TEST_S3_ENDPOINT`, `FIREHOSE_TEST_S3_ACCESS_KEY`
//! and `FIREHOSE_TEST_S3_SECRET_KEY`. Without them these tests print that they did not run,
//! or fail when `FIREHOSE_REQUIRE_SERVERS=1`. The outage test starts its own server.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use firehose_core::Event;
use firehose_sink::s3::{S3Config, S3Storage, Secret};
use firehose_sink::{BatchName, Error, ParquetOptions, Storage, Writer};
use firehose_synth::{Config, Generator};

pub(crate) struct Server {
    endpoint: String,
    access_key: String,
    secret_key: String,
}

pub(crate) fn server() -> Option<Server> {
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

static BUCKETS: AtomicU32 = AtomicU32::new(0);

/// A storage on a fresh bucket of its own.
pub(crate) async fn storage(server: &Server, config: impl FnOnce(&mut S3Config)) -> S3Storage {
    let bucket = format!(
        "test-{}-{}",
        std::process::id(),
        BUCKETS.fetch_add(1, Ordering::Relaxed)
    );
    let mut c = S3Config::from_url(&format!("s3://{bucket}/archive/v1")).unwrap();
    c.endpoint = Some(server.endpoint.clone());
    c.region = Some("fsn1".into());
    c.access_key_id = Some(server.access_key.clone());
    c.secret_access_key = Some(Secret::new(server.secret_key.clone()));
    config(&mut c);
    let s = S3Storage::new(c).await.unwrap();
    s.client()
        .create_bucket()
        .bucket(s.bucket())
        .send()
        .await
        .unwrap();
    s
}

fn pseudo_random(len: usize) -> Bytes {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    Bytes::from(
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect::<Vec<u8>>(),
    )
}

#[tokio::test]
async fn single_put_and_multipart_round_trip() {
    let Some(server) = server() else { return };
    let s = storage(&server, |_| {}).await;
    let small = pseudo_random(1000);
    s.put("posts/year=2026/a.parquet", small.clone())
        .await
        .unwrap();
    // Above the 16 MiB threshold: three parts of 8, 8 and 4 MiB.
    let large = pseudo_random(20 * 1024 * 1024);
    s.put("posts/year=2026/b.parquet", large.clone())
        .await
        .unwrap();
    assert_eq!(s.get("posts/year=2026/a.parquet").await.unwrap(), small);
    assert_eq!(s.get("posts/year=2026/b.parquet").await.unwrap(), large);
    let listed = s.list("posts").await.unwrap();
    let paths: Vec<_> = listed.iter().map(|o| (o.path.as_str(), o.size)).collect();
    assert_eq!(
        paths,
        [
            ("posts/year=2026/a.parquet", 1000),
            ("posts/year=2026/b.parquet", 20 * 1024 * 1024)
        ]
    );
    // The dataset lives under its prefix in the bucket.
    let raw = s
        .client()
        .list_objects_v2()
        .bucket(s.bucket())
        .send()
        .await
        .unwrap();
    assert!(
        raw.contents()
            .iter()
            .all(|o| o.key().unwrap().starts_with("archive/v1/posts/"))
    );
    s.delete("posts/year=2026/a.parquet").await.unwrap();
    s.delete("posts/year=2026/a.parquet").await.unwrap();
    assert!(matches!(
        s.get("posts/year=2026/a.parquet").await,
        Err(Error::NotFound { .. })
    ));
    // s3s-fs does not implement ListMultipartUploads, so `abort_stale_uploads` cannot be
    // exercised here; it reports the server's refusal as an error rather than a count.
    assert!(s.abort_stale_uploads(Duration::ZERO).await.is_err());
}

#[tokio::test]
async fn writer_writes_the_dataset_to_s3_and_a_rewrite_replaces_it() {
    let Some(server) = server() else { return };
    let s = Arc::new(storage(&server, |_| {}).await);
    let writer = Writer::new(s.clone(), ParquetOptions::default());
    let lines: Vec<String> = Generator::new(Config {
        seed: 4,
        rate: 5.0,
        ..Config::default()
    })
    .take(5000)
    .map(|e| e.to_json())
    .collect();
    let events: Vec<Event<'_>> = lines
        .iter()
        .map(|l| Event::decode(l.as_bytes()).unwrap())
        .collect();
    let name = BatchName::new("1700000000000-0", "1700000000999-3").unwrap();
    let committed = writer.write(&name, &events).await.unwrap();
    assert_eq!(committed.rows(), 5000);
    let listed = s.list("").await.unwrap();
    assert_eq!(listed.len(), committed.files.len());
    let mut files = committed.files.clone();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    for (file, object) in files.iter().zip(&listed) {
        assert_eq!(file.path, object.path);
        assert_eq!(file.bytes, object.size);
        assert!(
            object
                .path
                .ends_with("/1700000000000-0_1700000000999-3.parquet")
        );
    }
    writer.write(&name, &events).await.unwrap();
    assert_eq!(
        s.list("").await.unwrap(),
        listed,
        "the same batch replaces the same objects"
    );
}

#[tokio::test]
async fn wrong_credentials_give_a_clear_error_without_the_secret() {
    let Some(server) = server() else { return };
    let good = storage(&server, |_| {}).await;
    let mut c = S3Config::from_url(&format!("s3://{}/x", good.bucket())).unwrap();
    c.endpoint = Some(server.endpoint.clone());
    c.region = Some("fsn1".into());
    c.access_key_id = Some(server.access_key.clone());
    c.secret_access_key = Some(Secret::new("not-the-secret-9f8e7d"));
    c.max_attempts = 2;
    let bad = S3Storage::new(c).await.unwrap();
    let err = bad
        .put("a.parquet", Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("S3 put a.parquet: "), "{text}");
    assert!(
        text.contains("SignatureDoesNotMatch")
            || text.contains("AccessDenied")
            || text.contains("403"),
        "{text}"
    );
    assert!(!text.contains("not-the-secret-9f8e7d"));
    assert!(!format!("{bad:?}").contains("not-the-secret-9f8e7d"));
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_s3s(port: u16, dir: &std::path::Path, server: &Server) -> Child {
    let child = Command::new("s3s-fs")
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args([
            "--access-key",
            &server.access_key,
            "--secret-key",
            &server.secret_key,
        ])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("s3s-fs is on PATH (scripts/test installs it)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "s3s-fs did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

#[tokio::test]
async fn an_outage_is_retried_until_the_server_is_back() {
    let Some(shared) = server() else { return };
    let dir = std::env::temp_dir().join(format!("firehose-s3-outage-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let own = Server {
        endpoint: format!("http://127.0.0.1:{port}"),
        ..shared
    };
    let mut child = start_s3s(port, &dir, &own);
    let s = Arc::new(
        storage(&own, |c| {
            c.max_attempts = 30;
            c.max_backoff = Duration::from_millis(500);
        })
        .await,
    );
    s.put("before.parquet", Bytes::from_static(b"1"))
        .await
        .unwrap();

    // Stop the server, start an upload, bring the server back two seconds later.
    child.kill().unwrap();
    child.wait().unwrap();
    let upload = {
        let s = s.clone();
        tokio::spawn(async move { s.put("during.parquet", Bytes::from_static(b"22")).await })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!upload.is_finished(), "the upload waits for the server");
    let mut child = start_s3s(port, &dir, &own);
    upload.await.unwrap().unwrap();
    assert_eq!(
        s.get("during.parquet").await.unwrap(),
        Bytes::from_static(b"22")
    );
    assert_eq!(
        s.get("before.parquet").await.unwrap(),
        Bytes::from_static(b"1")
    );

    // With the server gone and few attempts, the error is clear and nothing is claimed written.
    child.kill().unwrap();
    child.wait().unwrap();
    let mut c = S3Config::from_url(&format!("s3://{}/archive/v1", s.bucket())).unwrap();
    c.endpoint = Some(own.endpoint.clone());
    c.region = Some("fsn1".into());
    c.access_key_id = Some(own.access_key.clone());
    c.secret_access_key = Some(Secret::new(own.secret_key.clone()));
    c.max_attempts = 2;
    let impatient = S3Storage::new(c).await.unwrap();
    let err = impatient
        .put("after.parquet", Bytes::from_static(b"3"))
        .await
        .unwrap_err();
    assert!(
        err.to_string().starts_with("S3 put after.parquet: "),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn s3_urls_are_checked() {
    assert!(
        S3Config::from_url("s3://ab/x").is_err(),
        "bucket names have 3 or more characters"
    );
    assert!(S3Config::from_url("http://bucket/x").is_err());
    assert!(S3Config::from_url("s3://Bucket/x").is_err());
    let c = S3Config::from_url("s3://archive/firehose/").unwrap();
    assert_eq!(
        (c.bucket.as_str(), c.prefix.as_str()),
        ("archive", "firehose")
    );
    let c = S3Config::from_url("s3://archive").unwrap();
    assert_eq!(c.prefix, "");
}
