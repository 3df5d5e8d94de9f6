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
