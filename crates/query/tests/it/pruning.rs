//! A time range opens only the files of the hours in range.

use std::collections::BTreeSet;
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

use firehose_query::{Dataset, PostQuery, QueryOptions, TimeRange};

use crate::common::*;

/// Records the objects whose bytes were read.
#[derive(Debug)]
struct Counting {
    inner: LocalFileSystem,
    read: Mutex<BTreeSet<String>>,
}

impl Counting {
    fn note(&self, location: &Path) {
        self.read.lock().unwrap().insert(location.to_string());
    }

    fn take(&self) -> BTreeSet<String> {
        std::mem::take(&mut self.read.lock().unwrap())
    }
}

impl fmt::Display for Counting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Counting({})", self.inner)
    }
}

#[async_trait::async_trait]
impl ObjectStore for Counting {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.note(location);
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.note(location);
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[tokio::test]
async fn one_day_opens_only_that_days_files() {
    let events = generated(24_000, 13);
    let dir = local_dataset("pruning", &events).await;
    let store = Arc::new(Counting {
        inner: LocalFileSystem::new(),
        read: Mutex::default(),
    });
    let root = url::Url::from_directory_path(&dir).unwrap();
    let ds = Dataset::open_with_store(root.as_str(), store.clone(), QueryOptions::default())
        .await
        .unwrap();
    let absolute = |rel: &str| format!("{}/{rel}", dir.to_str().unwrap().trim_start_matches('/'));
    let files = parquet_files(&dir);
    let posts_files = |prefix: &str| -> BTreeSet<String> {
        files
            .iter()
            .filter(|f| f.starts_with(prefix))
            .map(|f| absolute(f))
            .collect()
    };
    let day21 = posts_files("posts/year=2026/month=11/day=21/");
    assert!(
        day21.len() >= 24,
        "at least one file per hour: {}",
        day21.len()
    );
    assert!(posts_files("posts/").len() > day21.len() + 24);

    // A typed call over one day.
    let day = TimeRange::parse_day("2026-11-21").unwrap();
    ds.daily_stats(day).await.unwrap();
    assert_eq!(store.take(), day21);

    // Three hours of that day.
    let hours = TimeRange::parse("2026-11-21T05", "2026-11-21T08").unwrap();
    ds.posts(&PostQuery::new(hours)).await.unwrap();
    let read = store.take();
    assert!(!read.is_empty());
    for f in &read {
        assert!(
            ["hour=05/", "hour=06/", "hour=07/"]
                .iter()
                .any(|h| f.contains(&format!("posts/year=2026/month=11/day=21/{h}"))),
            "{f}"
        );
    }

    // SQL with partition predicates, and EXPLAIN shows it.
    ds.sql("SELECT count(*) FROM posts WHERE year = '2026' AND month = '11' AND day = '21'")
        .await
        .unwrap();
    assert_eq!(store.take(), day21);
    let plan = ds
        .sql("EXPLAIN SELECT count(*) FROM posts WHERE year = '2026' AND month = '11' AND day = '21'")
        .await
        .unwrap();
    let text = shown(&plan.batches);
    assert!(text.contains("day=21"), "{text}");
    assert!(
        !text.contains("day=20") && !text.contains("day=22"),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
