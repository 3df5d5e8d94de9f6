//! The shared conformance suite against the server at `REDIS_URL`.

use firehose_buffer::conformance::{self, SMALL_CAPACITY};
use firehose_buffer::redis::RedisBuffer;
use firehose_buffer::{Capacity, WhenFull};

use crate::server::{builder, cleanup, redis_url, unique_stream};

async fn open(test: &str) -> Option<(String, RedisBuffer)> {
    let url = redis_url(test)?;
    let buffer = builder(&url, &unique_stream(test))
        .build()
        .await
        .expect("connect to REDIS_URL");
    Some((url, buffer))
}

async fn open_small(test: &str, when_full: WhenFull) -> Option<(String, RedisBuffer)> {
    let url = redis_url(test)?;
    let buffer = builder(&url, &unique_stream(test))
        .with_capacity(Capacity::bytes(SMALL_CAPACITY))
        .with_when_full(when_full)
        .build()
        .await
        .expect("connect to REDIS_URL");
    Some((url, buffer))
}

macro_rules! conformance_test {
    ($name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let Some((url, b)) = open(stringify!($name)).await else {
                return;
            };
            conformance::$name(&b).await;
            cleanup(&b, &url).await;
        }
    };
    ($name:ident, $when_full:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let Some((url, b)) = open_small(stringify!($name), $when_full).await else {
                return;
            };
            conformance::$name(&b).await;
            cleanup(&b, &url).await;
        }
    };
}

conformance_test!(append_read_ack);
conformance_test!(empty_batch_refused);
conformance_test!(peek_lists_without_delivering);
conformance_test!(claim_from_dead_consumer);
conformance_test!(order_within_producer);
conformance_test!(stats_accurate);
conformance_test!(read_blocks_until_append);
conformance_test!(concurrent_producers_consumers, WhenFull::Block);
conformance_test!(full_rejects, WhenFull::Reject);
conformance_test!(full_blocks, WhenFull::Block);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivery_after_restart() {
    let test = "redelivery_after_restart";
    let Some(url) = redis_url(test) else {
        return;
    };
    let stream = unique_stream(test);
    let first = builder(&url, &stream).build().await.expect("connect");
    let second = builder(&url, &stream).build().await.expect("connect");
    conformance::redelivery_after_restart(&first, &second).await;
    cleanup(&first, &url).await;
}

/// Acknowledged entries are trimmed from the stream; pending, undelivered entries, and
/// entries another group still needs, are not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trims_only_acknowledged() {
    use std::time::Duration;

    use bytes::Bytes;
    use firehose_buffer::{Batch, Buffer, BufferExt};

    let Some((url, b)) = open("trims_only_acknowledged").await else {
        return;
    };
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let stream = b.stream().to_owned();
    let xlen = |mut conn: redis::aio::MultiplexedConnection| {
        let stream = stream.clone();
        async move {
            redis::cmd("XLEN")
                .arg(&stream)
                .query_async::<u64>(&mut conn)
                .await
                .unwrap()
        }
    };
    for i in 0..20u64 {
        b.append(Batch::new(vec![Bytes::from(i.to_string())], i))
            .await
            .unwrap();
    }
    let first = b.read("c", 10, Duration::ZERO).await.unwrap();
    assert_eq!(first.len(), 10);
    b.ack_entries(&first[5..]).await.unwrap();
    assert_eq!(xlen(conn.clone()).await, 20, "pending entries are kept");
    b.ack_entries(&first[..5]).await.unwrap();
    // Only the last delivered entry (acknowledged) and the 10 undelivered ones remain.
    assert_eq!(xlen(conn.clone()).await, 11);
    let rest = b.read("c", 10, Duration::ZERO).await.unwrap();
    b.ack_entries(&rest).await.unwrap();
    assert_eq!(xlen(conn.clone()).await, 1);

    // A second group that has read nothing keeps everything from being trimmed.
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(b.stream())
        .arg("other")
        .arg("$")
        .query_async(&mut conn)
        .await
        .unwrap();
    for i in 0..5u64 {
        b.append(Batch::new(vec![Bytes::from(i.to_string())], i))
            .await
            .unwrap();
    }
    let got = b.read("c", 10, Duration::ZERO).await.unwrap();
    b.ack_entries(&got).await.unwrap();
    assert_eq!(
        xlen(conn.clone()).await,
        6,
        "entries the other group needs are kept"
    );
    assert_eq!(b.stats().await.unwrap().events_unacked(), 0);
    cleanup(&b, &url).await;
}
