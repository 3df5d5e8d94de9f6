//! Write a buffer of your own: `Tally` wraps any `Buffer` and counts what passes through it,
//! the way object_store's `LimitStore` wraps any store. It passes the conformance suite that
//! every backend passes (`firehose-buffer`, feature `conformance`), so the pipeline can use it.
//!
//! `cargo run -p firehose-examples --example custom_buffer`

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use async_trait::async_trait;
use firehose_buffer::conformance as suite;
use firehose_buffer::memory::InMemory;
use firehose_buffer::{Batch, Buffer, Capacity, Entry, EntryId, Result, Stats, WhenFull};

/// Any buffer, with counts of the events appended and the entries acknowledged.
#[derive(Debug)]
struct Tally<B> {
    inner: B,
    appended: AtomicU64,
    acknowledged: AtomicU64,
}

impl<B> Tally<B> {
    fn new(inner: B) -> Self {
        Tally {
            inner,
            appended: AtomicU64::new(0),
            acknowledged: AtomicU64::new(0),
        }
    }
}

impl<B: std::fmt::Display> std::fmt::Display for Tally<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "tally of {}", self.inner)
    }
}

#[async_trait]
impl<B: Buffer> Buffer for Tally<B> {
    async fn append(&self, batch: Batch) -> Result<EntryId> {
        let events = batch.len() as u64;
        let id = self.inner.append(batch).await?;
        self.appended.fetch_add(events, Relaxed);
        Ok(id)
    }
    async fn read(&self, consumer: &str, count: usize, block: Duration) -> Result<Vec<Entry>> {
        self.inner.read(consumer, count, block).await
    }
    async fn ack(&self, ids: &[EntryId]) -> Result<u64> {
        let acked = self.inner.ack(ids).await?;
        self.acknowledged.fetch_add(acked, Relaxed);
        Ok(acked)
    }
    async fn claim(&self, consumer: &str, idle: Duration, count: usize) -> Result<Vec<Entry>> {
        self.inner.claim(consumer, idle, count).await
    }
    async fn stats(&self) -> Result<Stats> {
        self.inner.stats().await
    }

    async fn peek(&self, after: Option<EntryId>, count: usize) -> Result<Vec<Entry>> {
        self.inner.peek(after, count).await
    }
}

fn small(when_full: WhenFull) -> Tally<InMemory> {
    let capacity = Capacity::bytes(suite::SMALL_CAPACITY);
    Tally::new(
        InMemory::builder()
            .with_capacity(capacity)
            .with_when_full(when_full)
            .build(),
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let tally = Tally::new(InMemory::new());
    suite::append_read_ack(&tally).await;
    suite::empty_batch_refused(&Tally::new(InMemory::new())).await;
    let first = InMemory::new();
    let second = Tally::new(first.reopen());
    suite::redelivery_after_restart(&Tally::new(first), &second).await;
    suite::claim_from_dead_consumer(&Tally::new(InMemory::new())).await;
    suite::order_within_producer(&Tally::new(InMemory::new())).await;
    suite::concurrent_producers_consumers(&small(WhenFull::Block)).await;
    suite::full_rejects(&small(WhenFull::Reject)).await;
    suite::full_blocks(&small(WhenFull::Block)).await;
    suite::stats_accurate(&Tally::new(InMemory::new())).await;
    suite::peek_lists_without_delivering(&Tally::new(InMemory::new())).await;
    suite::read_blocks_until_append(&Tally::new(InMemory::new())).await;
    let (appended, acknowledged) = (
        tally.appended.load(Relaxed),
        tally.acknowledged.load(Relaxed),
    );
    println!(
        "Tally passes the conformance suite ({appended} events appended, {acknowledged} entries acknowledged in the first test)."
    );
}
