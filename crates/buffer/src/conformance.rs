//! The conformance suite every [`Buffer`] backend passes.
//!
//! Each function takes a fresh, empty buffer (some take two handles on the same buffer) and
//! panics when the backend breaks the contract in the [crate docs](crate). The memory
//! backend's unit tests and the Redis integration tests call every function, modelled on
//! object_store's `integration.rs`.
//!
//! The capacity functions expect a buffer built with a capacity of [`SMALL_CAPACITY`] bytes
//! and the policy named in the function.

// A test suite: failing loudly on the first broken expectation is its job.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use tokio::time::{Instant, sleep, timeout};

use crate::{Batch, Buffer, BufferExt, Entry, EntryId, Error};

/// The capacity, in bytes, the capacity functions expect the buffer to be built with.
pub const SMALL_CAPACITY: u64 = 64 * 1024;

/// An event tagged with its producer and sequence number, padded to `size` bytes.
pub fn event(producer: u64, seq: u64, size: usize) -> Bytes {
    let mut s = format!("{{\"producer\":{producer},\"seq\":{seq},\"pad\":\"");
    while s.len() + 2 < size {
        s.push('x');
    }
    s.push_str("\"}");
    Bytes::from(s)
}

fn parse_event(e: &Bytes) -> (u64, u64) {
    let s = std::str::from_utf8(e).expect("events are UTF-8");
    let field = |name: &str| -> u64 {
        let start = s.find(name).expect("tagged event") + name.len();
        let rest = &s[start..];
        let end = rest.find(',').expect("tagged event");
        rest[..end].parse().expect("a number")
    };
    (field("\"producer\":"), field("\"seq\":"))
}

fn batch(producer: u64, first_seq: u64, events: u64, size: usize, t: u64) -> Batch {
    Batch::new(
        (first_seq..first_seq + events)
            .map(|s| event(producer, s, size))
            .collect(),
        t,
    )
}

/// Assert the buffer holds nothing unacknowledged.
pub async fn assert_empty(b: &dyn Buffer) {
    let s = b.stats().await.expect("stats");
    assert_eq!(s.entries_unacked(), 0, "{b} not empty: {s:?}");
    assert_eq!(s.events_unacked(), 0, "{b} not empty: {s:?}");
    assert_eq!(s.bytes, 0, "{b} not empty: {s:?}");
    assert_eq!(s.oldest_unacked_time_us, None, "{b} not empty: {s:?}");
}

/// Read until `want` entries arrived or `deadline` passed.
async fn read_n(b: &dyn Buffer, consumer: &str, want: usize) -> Vec<Entry> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut out = Vec::new();
    while out.len() < want && Instant::now() < deadline {
        let got = b
            .read(consumer, want - out.len(), Duration::from_millis(200))
            .await
            .expect("read");
        out.extend(got);
    }
    out
}

/// Append, read, acknowledge: entries come back as appended, once, and leave nothing behind.
pub async fn append_read_ack(b: &dyn Buffer) {
    assert_empty(b).await;
    let batches: Vec<Batch> = (0..3)
        .map(|i| batch(0, i * 10, 10, 120, 1_000 + i))
        .collect();
    let mut ids = Vec::new();
    for batch in &batches {
        ids.push(b.append(batch.clone()).await.expect("append"));
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids ordered: {ids:?}");

    let entries = read_n(b, "c1", 3).await;
    assert_eq!(entries.len(), 3);
    for ((e, id), batch) in entries.iter().zip(&ids).zip(&batches) {
        assert_eq!(e.id, *id);
        assert_eq!(&e.batch, batch);
        assert_eq!(e.deliveries, 1);
    }
    // Delivered entries are leased: nobody else, and not the same consumer, gets them again.
    assert!(
        b.read("c1", 10, Duration::ZERO)
            .await
            .expect("read")
            .is_empty()
    );
    assert!(
        b.read("c2", 10, Duration::ZERO)
            .await
            .expect("read")
            .is_empty()
    );
    let s = b.stats().await.expect("stats");
    assert_eq!((s.entries_pending, s.events_pending), (3, 30));

    assert_eq!(b.ack_entries(&entries).await.expect("ack"), 3);
    assert_eq!(
        b.ack(&ids).await.expect("ack again"),
        0,
        "double ack is ignored"
    );
    assert_eq!(
        b.ack(&[EntryId::new(1, 1)]).await.expect("ack unknown"),
        0,
        "unknown ids are ignored"
    );
    assert!(
        b.read("c1", 10, Duration::ZERO)
            .await
            .expect("read")
            .is_empty()
    );
    assert!(
        b.claim("c3", Duration::ZERO, 10)
            .await
            .expect("claim")
            .is_empty()
    );
    assert_empty(b).await;
}

/// An empty batch is refused.
pub async fn empty_batch_refused(b: &dyn Buffer) {
    let err = b.append(Batch::new(Vec::new(), 0)).await.unwrap_err();
    assert!(matches!(err, Error::EmptyBatch { .. }), "{err}");
    assert_empty(b).await;
}

/// A consumer that restarts (a second handle on the same buffer, as a new process would
/// open) first receives the entries it held unacknowledged, then new ones; acknowledged
/// entries are not delivered again.
pub async fn redelivery_after_restart(first: &dyn Buffer, second: &dyn Buffer) {
    assert_empty(first).await;
    let a = first.append(batch(0, 0, 2, 100, 10)).await.expect("append");
    let bb = first.append(batch(0, 2, 2, 100, 20)).await.expect("append");
    let c = first.append(batch(0, 4, 2, 100, 30)).await.expect("append");
    let got = read_n(first, "worker", 3).await;
    assert_eq!(got.iter().map(|e| e.id).collect::<Vec<_>>(), vec![a, bb, c]);
    assert_eq!(first.ack(&[bb]).await.expect("ack"), 1);
    // `worker` dies here, holding a and c. It restarts as `second`.
    let d = first.append(batch(0, 6, 2, 100, 40)).await.expect("append");

    // Another consumer never sees worker's entries by reading.
    let other = second
        .read("other", 10, Duration::ZERO)
        .await
        .expect("read");
    assert_eq!(other.iter().map(|e| e.id).collect::<Vec<_>>(), vec![d]);

    let again = second
        .read("worker", 1, Duration::ZERO)
        .await
        .expect("read");
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id, a);
    assert_eq!(again[0].batch, got[0].batch);
    assert!(again[0].deliveries >= 1);
    let again2 = second
        .read("worker", 10, Duration::ZERO)
        .await
        .expect("read");
    assert_eq!(again2.iter().map(|e| e.id).collect::<Vec<_>>(), vec![c]);
    assert_eq!(again2[0].batch, got[2].batch);
    // Then only new entries, and there are none.
    assert!(
        second
            .read("worker", 10, Duration::ZERO)
            .await
            .expect("read")
            .is_empty()
    );
    assert_eq!(second.ack(&[a, c, d]).await.expect("ack"), 3);
    assert_empty(second).await;
}

/// Entries a dead consumer holds are claimed by another once idle for the timeout, and not
/// before.
pub async fn claim_from_dead_consumer(b: &dyn Buffer) {
    assert_empty(b).await;
    let a = b.append(batch(0, 0, 3, 100, 10)).await.expect("append");
    let c = b.append(batch(0, 3, 3, 100, 20)).await.expect("append");
    let held = read_n(b, "dead", 2).await;
    assert_eq!(held.len(), 2);

    let early = b
        .claim("alive", Duration::from_secs(60), 10)
        .await
        .expect("claim");
    assert!(early.is_empty(), "claimed entries that were not idle");
    sleep(Duration::from_millis(1_200)).await;
    let claimed = b
        .claim("alive", Duration::from_secs(1), 10)
        .await
        .expect("claim");
    assert_eq!(claimed.iter().map(|e| e.id).collect::<Vec<_>>(), vec![a, c]);
    for (got, orig) in claimed.iter().zip(&held) {
        assert_eq!(got.batch, orig.batch);
        assert!(got.deliveries >= 2, "claim counts as a delivery");
    }
    // Claimed entries are fresh again: the same claim right away gets nothing.
    assert!(
        b.claim("third", Duration::from_secs(1), 10)
            .await
            .expect("claim")
            .is_empty()
    );
    let s = b.stats().await.expect("stats");
    assert_eq!((s.entries_pending, s.events_pending), (2, 6));
    assert_eq!(b.ack_entries(&claimed).await.expect("ack"), 2);
    assert!(
        b.claim("alive", Duration::ZERO, 10)
            .await
            .expect("claim")
            .is_empty()
    );
    assert_empty(b).await;
}

/// Entries of one producer are delivered in the order they were appended, events in order
/// within each entry.
pub async fn order_within_producer(b: &dyn Buffer) {
    assert_empty(b).await;
    let n = 200u64;
    for i in 0..n {
        b.append(batch(7, i * 3, 3, 80, i)).await.expect("append");
    }
    let entries = read_n(b, "c", n as usize).await;
    assert_eq!(entries.len(), n as usize);
    let mut next = 0;
    let mut last = EntryId::MIN;
    for e in &entries {
        assert!(e.id > last, "ids increase");
        last = e.id;
        for ev in e.batch.events() {
            assert_eq!(parse_event(ev), (7, next));
            next += 1;
        }
    }
    b.ack_entries(&entries).await.expect("ack");
    assert_empty(b).await;
}

/// Several producers and consumers at once (through one handle): every event is delivered
/// exactly once, and each producer's events arrive in order. The buffer is expected to have
/// [`SMALL_CAPACITY`] and [`WhenFull::Block`](crate::WhenFull::Block), so producers also
/// wait for room.
pub async fn concurrent_producers_consumers(b: &dyn Buffer) {
    const PRODUCERS: u64 = 4;
    const CONSUMERS: u64 = 3;
    const BATCHES: u64 = 100;
    const EVENTS: u64 = 5;
    const TOTAL: u64 = PRODUCERS * BATCHES * EVENTS;
    assert_empty(b).await;
    let received = AtomicU64::new(0);
    let seen: Mutex<HashSet<(u64, u64)>> = Mutex::new(HashSet::new());
    let per_consumer: Mutex<Vec<Vec<(u64, u64)>>> = Mutex::new(Vec::new());

    let producers = (0..PRODUCERS).map(|p| async move {
        for i in 0..BATCHES {
            b.append(batch(p, i * EVENTS, EVENTS, 150, i))
                .await
                .expect("append");
        }
    });
    let consumers = (0..CONSUMERS).map(|c| {
        let (received, seen, per_consumer) = (&received, &seen, &per_consumer);
        async move {
            let name = format!("consumer-{c}");
            let mut mine = Vec::new();
            while received.load(Ordering::SeqCst) < TOTAL {
                let entries = b
                    .read(&name, 7, Duration::from_millis(50))
                    .await
                    .expect("read");
                for e in &entries {
                    for ev in e.batch.events() {
                        let key = parse_event(ev);
                        let fresh = seen.lock().expect("lock").insert(key);
                        assert!(fresh, "event {key:?} delivered twice");
                        mine.push(key);
                    }
                }
                b.ack_entries(&entries).await.expect("ack");
                let n: u64 = entries.iter().map(|e| e.batch.len() as u64).sum();
                received.fetch_add(n, Ordering::SeqCst);
            }
            per_consumer.lock().expect("lock").push(mine);
        }
    });
    let all = async {
        tokio::join!(join_all(producers), join_all(consumers));
    };
    timeout(Duration::from_secs(120), all)
        .await
        .expect("producers and consumers finish");

    assert_eq!(received.load(Ordering::SeqCst), TOTAL);
    let seen = seen.into_inner().expect("lock");
    for p in 0..PRODUCERS {
        for s in 0..BATCHES * EVENTS {
            assert!(seen.contains(&(p, s)), "event {p}/{s} lost");
        }
    }
    // Each consumer sees every producer's events in increasing order.
    for mine in per_consumer.into_inner().expect("lock") {
        for p in 0..PRODUCERS {
            let seqs: Vec<u64> = mine.iter().filter(|k| k.0 == p).map(|k| k.1).collect();
            assert!(
                seqs.windows(2).all(|w| w[0] < w[1]),
                "order of producer {p}"
            );
        }
    }
    assert_empty(b).await;
}

const FILL_EVENT: usize = 1024;
const FILL_EVENTS: u64 = 8;

/// With [`WhenFull::Reject`](crate::WhenFull::Reject) and [`SMALL_CAPACITY`], an append
/// that does not fit fails with [`Error::Full`] and hands the batch back; once entries are
/// acknowledged, it fits.
pub async fn full_rejects(b: &dyn Buffer) {
    assert_empty(b).await;
    let per_batch = FILL_EVENT as u64 * FILL_EVENTS;
    let fit = SMALL_CAPACITY / per_batch;
    for i in 0..fit {
        b.append(batch(0, i * FILL_EVENTS, FILL_EVENTS, FILL_EVENT, i))
            .await
            .expect("append within capacity");
    }
    let s = b.stats().await.expect("stats");
    assert_eq!(s.bytes, fit * per_batch);
    assert_eq!(s.capacity_bytes, SMALL_CAPACITY);
    assert!(s.utilisation() > 0.9 && s.utilisation() <= 1.0, "{s:?}");

    let refused = batch(1, 0, FILL_EVENTS, FILL_EVENT, 99);
    let err = b.append(refused.clone()).await.unwrap_err();
    assert!(matches!(err, Error::Full { .. }), "{err}");
    assert_eq!(err.into_batch(), Some(refused.clone()), "batch handed back");
    assert_eq!(
        b.stats().await.expect("stats").bytes,
        s.bytes,
        "nothing added"
    );

    let one = read_n(b, "c", 1).await;
    b.ack_entries(&one).await.expect("ack");
    b.append(refused).await.expect("append after room was made");

    let rest = read_n(b, "c", fit as usize).await;
    assert_eq!(rest.len(), fit as usize);
    b.ack_entries(&rest).await.expect("ack");
    assert_empty(b).await;
}

/// With [`WhenFull::Block`](crate::WhenFull::Block) and [`SMALL_CAPACITY`], an append that
/// does not fit waits until acknowledgements make room, then succeeds.
pub async fn full_blocks(b: &dyn Buffer) {
    assert_empty(b).await;
    let per_batch = FILL_EVENT as u64 * FILL_EVENTS;
    let fit = SMALL_CAPACITY / per_batch;
    for i in 0..fit {
        b.append(batch(0, i * FILL_EVENTS, FILL_EVENTS, FILL_EVENT, i))
            .await
            .expect("append within capacity");
    }
    let waiting = b.append(batch(1, 0, FILL_EVENTS, FILL_EVENT, 99));
    tokio::pin!(waiting);
    assert!(
        timeout(Duration::from_millis(300), &mut waiting)
            .await
            .is_err(),
        "append into a full buffer must wait"
    );
    let one = read_n(b, "c", 1).await;
    b.ack_entries(&one).await.expect("ack");
    timeout(Duration::from_secs(10), waiting)
        .await
        .expect("append resumes once there is room")
        .expect("append");

    let rest = read_n(b, "c", fit as usize).await;
    assert_eq!(rest.len(), fit as usize);
    assert!(
        rest.iter()
            .any(|e| parse_event(&e.batch.events()[0]).0 == 1)
    );
    b.ack_entries(&rest).await.expect("ack");
    assert_empty(b).await;
}

/// Stats count waiting and pending entries, events and bytes exactly, and report the oldest
/// unacknowledged event time.
pub async fn stats_accurate(b: &dyn Buffer) {
    assert_empty(b).await;
    let ba = batch(0, 0, 3, 100, 1_000);
    let bb = batch(0, 3, 2, 200, 500);
    let bc = batch(0, 5, 4, 50, 2_000);
    let total = ba.bytes() + bb.bytes() + bc.bytes();
    for x in [&ba, &bb, &bc] {
        b.append(x.clone()).await.expect("append");
    }
    let s = b.stats().await.expect("stats");
    assert_eq!((s.entries_waiting, s.events_waiting), (3, 9), "{s:?}");
    assert_eq!((s.entries_pending, s.events_pending), (0, 0), "{s:?}");
    assert_eq!(s.bytes, total);
    assert_eq!(s.oldest_unacked_time_us, Some(500));
    assert!(s.oldest_unacked_age().is_some());
    assert!(s.capacity_bytes > 0);
    assert_eq!(s.utilisation(), total as f64 / s.capacity_bytes as f64);

    let got = read_n(b, "c", 2).await;
    assert_eq!(got.len(), 2);
    let s = b.stats().await.expect("stats");
    assert_eq!((s.entries_waiting, s.events_waiting), (1, 4), "{s:?}");
    assert_eq!((s.entries_pending, s.events_pending), (2, 5), "{s:?}");
    assert_eq!(s.bytes, total);

    b.ack(&[got[1].id]).await.expect("ack");
    let s = b.stats().await.expect("stats");
    assert_eq!((s.entries_pending, s.events_pending), (1, 3), "{s:?}");
    assert_eq!(s.bytes, ba.bytes() + bc.bytes());
    assert_eq!(s.oldest_unacked_time_us, Some(1_000));

    b.ack(&[got[0].id]).await.expect("ack");
    let s = b.stats().await.expect("stats");
    assert_eq!(s.bytes, bc.bytes());
    assert_eq!(s.oldest_unacked_time_us, Some(2_000));
    let last = read_n(b, "c", 1).await;
    b.ack_entries(&last).await.expect("ack");
    assert_empty(b).await;
}

/// A read waits up to its block time for an entry, and returns as soon as one is appended.
pub async fn read_blocks_until_append(b: &dyn Buffer) {
    assert_empty(b).await;
    let start = Instant::now();
    let none = b
        .read("c", 10, Duration::from_millis(300))
        .await
        .expect("read");
    assert!(none.is_empty());
    assert!(start.elapsed() >= Duration::from_millis(250), "read waited");

    let start = Instant::now();
    let read = b.read("c", 10, Duration::from_secs(5));
    let append = async {
        sleep(Duration::from_millis(100)).await;
        b.append(batch(0, 0, 1, 100, 1)).await.expect("append")
    };
    let (got, id) = tokio::join!(read, append);
    let got = got.expect("read");
    assert_eq!(got.iter().map(|e| e.id).collect::<Vec<_>>(), vec![id]);
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "read woke on append"
    );
    b.ack_entries(&got).await.expect("ack");
    assert_empty(b).await;
}

/// `peek` lists what is not acknowledged, oldest first and in pages, without delivering it;
/// the replay-free flag of each batch comes back as appended.
pub async fn peek_lists_without_delivering(b: &dyn Buffer) {
    let mut appended = Vec::new();
    for i in 0..5u64 {
        let id = b
            .append(batch(1, i * 2, 2, 40, 1_000 + i).with_replay_free(i % 2 == 0))
            .await
            .expect("append");
        appended.push(id);
    }
    let first_page = b.peek(None, 3).await.expect("peek");
    let ids: Vec<EntryId> = first_page.iter().map(|e| e.id).collect();
    assert_eq!(ids, appended[..3]);
    let rest = b.peek(ids.last().copied(), 10).await.expect("peek");
    assert_eq!(rest.iter().map(|e| e.id).collect::<Vec<_>>(), appended[3..]);
    for (i, entry) in first_page.iter().chain(&rest).enumerate() {
        assert_eq!(entry.deliveries, 0);
        assert_eq!(entry.batch.is_replay_free(), i % 2 == 0, "entry {i}");
        assert_eq!(entry.batch.len(), 2);
    }
    // Peeking delivered nothing: a consumer still gets all five, flags intact.
    let read = b.read("c", 10, Duration::ZERO).await.expect("read");
    assert_eq!(read.len(), 5);
    assert!(read.iter().all(|e| e.deliveries == 1));
    assert_eq!(
        read.iter()
            .map(|e| e.batch.is_replay_free())
            .collect::<Vec<_>>(),
        [true, false, true, false, true]
    );
    assert!(
        b.peek(appended.last().copied(), 10)
            .await
            .expect("peek")
            .is_empty()
    );
    b.ack_entries(&read).await.expect("ack");
}
