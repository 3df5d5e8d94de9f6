//! An in-memory, bounded [`Buffer`]: the embedded default when no Redis is configured.
//!
//! It has the same lease, acknowledge and claim semantics as the Redis backend (one consumer
//! group; ids of the `<ms>-<seq>` shape, ordered by append), so code that works on one works
//! on the other. What it cannot give is durability across a process restart: with this
//! backend, the Jetstream cursor checkpoint (advanced only after acknowledgement) is what makes
//! a restart safe.
//!
//! A handle is cheap. [`InMemory::reopen`] gives a second handle on the same buffer that
//! behaves like a restarted process: each consumer's first read through it returns the
//! entries that consumer still holds.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::{Batch, Buffer, Capacity, Entry, EntryId, Error, Result, Stats, WhenFull, unix_ms};

/// A builder for [`InMemory`]. All settings have defaults, so [`build`](Self::build) cannot
/// fail.
#[derive(Debug, Clone, Default)]
pub struct InMemoryBuilder {
    capacity: Capacity,
    when_full: WhenFull,
    name: Option<String>,
}

impl InMemoryBuilder {
    /// A builder with the default capacity ([`crate::DEFAULT_CAPACITY_BYTES`]) and policy
    /// ([`WhenFull::Block`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// Set the capacity.
    pub fn with_capacity(mut self, capacity: Capacity) -> Self {
        self.capacity = capacity;
        self
    }

    /// Set what an append does when the buffer is full.
    pub fn with_when_full(mut self, when_full: WhenFull) -> Self {
        self.when_full = when_full;
        self
    }

    /// Name the buffer, for `Display`, logs and errors.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Build the buffer.
    pub fn build(self) -> InMemory {
        let shared = Shared {
            name: self.name.unwrap_or_else(|| "memory".to_owned()),
            capacity: self.capacity.as_bytes(),
            when_full: self.when_full,
            state: Mutex::new(State::default()),
            data: Notify::new(),
            space: Notify::new(),
        };
        InMemory {
            shared: Arc::new(shared),
            consumers: Mutex::new(HashMap::new()),
        }
    }
}

/// A bounded in-memory buffer.
///
/// ```
/// # use firehose_buffer::{Capacity, WhenFull, memory::InMemory};
/// let buffer = InMemory::builder()
///     .with_capacity(Capacity::bytes(64 * 1024 * 1024))
///     .with_when_full(WhenFull::Block)
///     .build();
/// ```
pub struct InMemory {
    shared: Arc<Shared>,
    /// Per handle: where each consumer is in re-reading its own pending entries.
    consumers: Mutex<HashMap<String, Recovery>>,
}

/// A consumer's progress through its own pending entries after it (re)started.
#[derive(Debug, Clone, Copy)]
enum Recovery {
    /// Re-reading pending entries with ids after this one.
    After(EntryId),
    /// Done: new entries only.
    Done,
}

struct Shared {
    name: String,
    capacity: u64,
    when_full: WhenFull,
    state: Mutex<State>,
    /// Woken when entries are appended.
    data: Notify,
    /// Woken when entries are acknowledged.
    space: Notify,
}

#[derive(Default)]
struct State {
    last_id: EntryId,
    /// Every unacknowledged entry. Entries with ids up to `last_delivered` are pending.
    log: BTreeMap<EntryId, Batch>,
    last_delivered: EntryId,
    /// The group's pending entries list.
    pel: BTreeMap<EntryId, Lease>,
    bytes: u64,
    events: u64,
    events_pending: u64,
    /// Multiset of the oldest event time of each unacknowledged entry.
    oldest: BTreeMap<u64, usize>,
}

#[derive(Debug, Clone)]
struct Lease {
    consumer: String,
    at: Instant,
    deliveries: u64,
}

impl State {
    fn next_id(&mut self) -> EntryId {
        let now = unix_ms();
        let id = if now > self.last_id.ms() {
            EntryId::new(now, 0)
        } else if self.last_id.seq() == u64::MAX {
            EntryId::new(self.last_id.ms().saturating_add(1), 0)
        } else {
            EntryId::new(self.last_id.ms(), self.last_id.seq() + 1)
        };
        self.last_id = id;
        id
    }

    fn entry(&self, id: EntryId, deliveries: u64) -> Option<Entry> {
        self.log.get(&id).map(|batch| Entry {
            id,
            batch: batch.clone(),
            deliveries,
        })
    }
}

impl InMemory {
    /// A buffer with the default capacity and [`WhenFull::Block`].
    pub fn new() -> Self {
        InMemoryBuilder::new().build()
    }

    /// A builder.
    pub fn builder() -> InMemoryBuilder {
        InMemoryBuilder::new()
    }

    /// A new handle on the same buffer that behaves like a restarted process: the first read
    /// of each consumer through it re-delivers that consumer's pending entries.
    pub fn reopen(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            consumers: Mutex::new(HashMap::new()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state is consistent after every statement that can panic, so a poisoned lock
        // (a panic in another thread) does not make it unusable.
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn recovery(&self, consumer: &str) -> Recovery {
        let map = self
            .consumers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        map.get(consumer)
            .copied()
            .unwrap_or(Recovery::After(EntryId::MIN))
    }

    fn set_recovery(&self, consumer: &str, r: Recovery) {
        let mut map = self
            .consumers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        map.insert(consumer.to_owned(), r);
    }

    /// Re-deliver up to `count` of `consumer`'s pending entries with ids after `after`.
    fn read_own_pending(&self, consumer: &str, after: EntryId, count: usize) -> Vec<Entry> {
        let mut state = self.state();
        let now = Instant::now();
        let ids: Vec<EntryId> = state
            .pel
            .range((Bound::Excluded(after), Bound::Unbounded))
            .filter(|(_, lease)| lease.consumer == consumer)
            .take(count)
            .map(|(id, _)| *id)
            .collect();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(lease) = state.pel.get_mut(&id) else {
                continue;
            };
            lease.at = now;
            lease.deliveries += 1;
            let deliveries = lease.deliveries;
            out.extend(state.entry(id, deliveries));
        }
        out
    }

    /// Deliver up to `count` new entries to `consumer`.
    fn read_new(&self, consumer: &str, count: usize) -> Vec<Entry> {
        let mut state = self.state();
        let now = Instant::now();
        let ids: Vec<EntryId> = state
            .log
            .range((Bound::Excluded(state.last_delivered), Bound::Unbounded))
            .take(count)
            .map(|(id, _)| *id)
            .collect();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(entry) = state.entry(id, 1) else {
                continue;
            };
            state.last_delivered = id;
            state.events_pending += entry.batch.len() as u64;
            state.pel.insert(
                id,
                Lease {
                    consumer: consumer.to_owned(),
                    at: now,
                    deliveries: 1,
                },
            );
            out.push(entry);
        }
        out
    }
}

impl Default for InMemory {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for InMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemory")
            .field("name", &self.shared.name)
            .field("capacity", &self.shared.capacity)
            .field("when_full", &self.shared.when_full)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for InMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InMemory({})", self.shared.name)
    }
}

#[async_trait]
impl Buffer for InMemory {
    async fn append(&self, batch: Batch) -> Result<EntryId> {
        if batch.is_empty() {
            return Err(Error::EmptyBatch {
                buffer: self.to_string(),
            });
        }
        let size = batch.bytes();
        loop {
            let notified = self.shared.space.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut state = self.state();
                let fits =
                    state.bytes == 0 || state.bytes.saturating_add(size) <= self.shared.capacity;
                if fits {
                    let id = state.next_id();
                    state.bytes += size;
                    state.events += batch.len() as u64;
                    *state.oldest.entry(batch.oldest_time_us()).or_default() += 1;
                    state.log.insert(id, batch);
                    drop(state);
                    self.shared.data.notify_waiters();
                    return Ok(id);
                }
                if self.shared.when_full == WhenFull::Reject {
                    let used_bytes = state.bytes;
                    drop(state);
                    return Err(Error::Full {
                        buffer: self.to_string(),
                        batch: Box::new(batch),
                        used_bytes,
                        capacity_bytes: self.shared.capacity,
                    });
                }
            }
            notified.await;
        }
    }

    async fn read(&self, consumer: &str, count: usize, block: Duration) -> Result<Vec<Entry>> {
        if count == 0 {
            return Ok(Vec::new());
        }
        if let Recovery::After(after) = self.recovery(consumer) {
            let entries = self.read_own_pending(consumer, after, count);
            match entries.last() {
                Some(last) => {
                    self.set_recovery(consumer, Recovery::After(last.id));
                    return Ok(entries);
                }
                None => self.set_recovery(consumer, Recovery::Done),
            }
        }
        let deadline = crate::deadline_after(block);
        loop {
            let notified = self.shared.data.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let entries = self.read_new(consumer, count);
            if !entries.is_empty() || block.is_zero() {
                return Ok(entries);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(self.read_new(consumer, count));
            }
        }
    }

    async fn ack(&self, ids: &[EntryId]) -> Result<u64> {
        let mut acked = 0;
        {
            let mut state = self.state();
            for id in ids {
                if state.pel.remove(id).is_none() {
                    continue;
                }
                acked += 1;
                if let Some(batch) = state.log.remove(id) {
                    state.bytes -= batch.bytes();
                    state.events -= batch.len() as u64;
                    state.events_pending -= batch.len() as u64;
                    let t = batch.oldest_time_us();
                    if let Some(n) = state.oldest.get_mut(&t) {
                        *n -= 1;
                        if *n == 0 {
                            state.oldest.remove(&t);
                        }
                    }
                }
            }
        }
        if acked > 0 {
            self.shared.space.notify_waiters();
        }
        Ok(acked)
    }

    async fn claim(&self, consumer: &str, min_idle: Duration, count: usize) -> Result<Vec<Entry>> {
        let mut state = self.state();
        let now = Instant::now();
        let ids: Vec<EntryId> = state
            .pel
            .iter()
            .filter(|(_, lease)| now.saturating_duration_since(lease.at) >= min_idle)
            .take(count)
            .map(|(id, _)| *id)
            .collect();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(lease) = state.pel.get_mut(&id) else {
                continue;
            };
            lease.consumer = consumer.to_owned();
            lease.at = now;
            lease.deliveries += 1;
            let deliveries = lease.deliveries;
            out.extend(state.entry(id, deliveries));
        }
        Ok(out)
    }

    async fn stats(&self) -> Result<Stats> {
        let state = self.state();
        let entries_pending = state.pel.len() as u64;
        Ok(Stats {
            entries_waiting: state.log.len() as u64 - entries_pending,
            events_waiting: state.events - state.events_pending,
            entries_pending,
            events_pending: state.events_pending,
            bytes: state.bytes,
            oldest_unacked_time_us: state.oldest.keys().next().copied(),
            capacity_bytes: self.shared.capacity,
            server_memory: None,
        })
    }

    async fn peek(&self, after: Option<EntryId>, count: usize) -> Result<Vec<Entry>> {
        use std::ops::Bound;
        let state = self.state();
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        Ok(state
            .log
            .range((from, Bound::Unbounded))
            .take(count)
            .map(|(&id, batch)| Entry {
                id,
                batch: batch.clone(),
                deliveries: 0,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance;

    fn small(when_full: WhenFull) -> InMemory {
        InMemory::builder()
            .with_capacity(Capacity::bytes(conformance::SMALL_CAPACITY))
            .with_when_full(when_full)
            .build()
    }

    #[tokio::test]
    async fn append_read_ack() {
        conformance::append_read_ack(&InMemory::new()).await;
    }

    #[tokio::test]
    async fn peek_lists_without_delivering() {
        conformance::peek_lists_without_delivering(&InMemory::new()).await;
    }

    #[tokio::test]
    async fn empty_batch_refused() {
        conformance::empty_batch_refused(&InMemory::new()).await;
    }

    #[tokio::test]
    async fn redelivery_after_restart() {
        let first = InMemory::new();
        let second = first.reopen();
        conformance::redelivery_after_restart(&first, &second).await;
    }

    #[tokio::test]
    async fn claim_from_dead_consumer() {
        conformance::claim_from_dead_consumer(&InMemory::new()).await;
    }

    #[tokio::test]
    async fn order_within_producer() {
        conformance::order_within_producer(&InMemory::new()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_producers_consumers() {
        conformance::concurrent_producers_consumers(&small(WhenFull::Block)).await;
    }

    #[tokio::test]
    async fn full_rejects() {
        conformance::full_rejects(&small(WhenFull::Reject)).await;
    }

    #[tokio::test]
    async fn full_blocks() {
        conformance::full_blocks(&small(WhenFull::Block)).await;
    }

    #[tokio::test]
    async fn stats_accurate() {
        conformance::stats_accurate(&InMemory::new()).await;
    }

    #[tokio::test]
    async fn read_blocks_until_append() {
        conformance::read_blocks_until_append(&InMemory::new()).await;
    }

    #[tokio::test]
    async fn ids_are_stream_shaped() {
        let b = InMemory::new();
        let mut last = EntryId::MIN;
        for _ in 0..1000 {
            let id = b
                .append(Batch::new(vec![bytes::Bytes::from_static(b"x")], 1))
                .await
                .unwrap();
            assert!(id > last);
            assert_eq!(id.to_string().parse::<EntryId>().unwrap(), id);
            last = id;
        }
    }

    #[tokio::test]
    async fn huge_durations_do_not_overflow() {
        let b = InMemory::new();
        b.append(Batch::new(vec![bytes::Bytes::from_static(b"x")], 1))
            .await
            .unwrap();
        assert_eq!(b.read("a", 10, Duration::MAX).await.unwrap().len(), 1);
        assert!(b.claim("b", Duration::MAX, 10).await.unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn claim_respects_idle_time_with_paused_clock() {
        let b = InMemory::new();
        b.append(Batch::new(vec![bytes::Bytes::from_static(b"x")], 1))
            .await
            .unwrap();
        assert_eq!(b.read("a", 10, Duration::ZERO).await.unwrap().len(), 1);
        tokio::time::advance(Duration::from_secs(29)).await;
        assert!(
            b.claim("b", Duration::from_secs(30), 10)
                .await
                .unwrap()
                .is_empty()
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        let claimed = b.claim("b", Duration::from_secs(30), 10).await.unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].deliveries, 2);
    }

    /// A model check, as vector's disk buffer does: random sequences of append, read, ack,
    /// claim, clock ticks and consumer restarts, compared step by step with a simple model.
    mod model {
        use std::collections::{BTreeMap, HashMap};

        use bytes::Bytes;
        use proptest::prelude::*;

        use super::*;

        #[derive(Debug, Clone)]
        enum Action {
            Append {
                events: usize,
                size: usize,
                t: u64,
            },
            Read {
                consumer: usize,
                count: usize,
            },
            Ack {
                pick: usize,
            },
            Claim {
                consumer: usize,
                min_idle: u64,
                count: usize,
            },
            Tick {
                secs: u64,
            },
            Restart,
        }

        fn arb_action() -> impl Strategy<Value = Action> {
            prop_oneof![
                3 => (1usize..4, 1usize..300, 0u64..1_000)
                    .prop_map(|(events, size, t)| Action::Append { events, size, t }),
                3 => (0usize..3, 1usize..4).prop_map(|(consumer, count)| Action::Read { consumer, count }),
                3 => any::<usize>().prop_map(|pick| Action::Ack { pick }),
                1 => (0usize..3, 0u64..3, 1usize..4)
                    .prop_map(|(consumer, min_idle, count)| Action::Claim { consumer, min_idle, count }),
                1 => (1u64..3).prop_map(|secs| Action::Tick { secs }),
                1 => Just(Action::Restart),
            ]
        }

        #[derive(Debug, Clone, PartialEq)]
        enum Slot {
            Waiting,
            Pending {
                consumer: usize,
                since: u64,
                deliveries: u64,
            },
        }

        #[derive(Debug, Clone)]
        struct ModelEntry {
            id: EntryId,
            batch: Batch,
            slot: Slot,
        }

        #[derive(Default)]
        struct Model {
            capacity: u64,
            now: u64,
            /// Unacknowledged entries by id.
            entries: BTreeMap<EntryId, ModelEntry>,
            /// Every id ever appended, acknowledged or not.
            ids: Vec<EntryId>,
            /// Consumer -> re-reading its pending entries after this id; absent: not started.
            recovery: HashMap<usize, Option<EntryId>>,
        }

        impl Model {
            fn bytes(&self) -> u64 {
                self.entries.values().map(|e| e.batch.bytes()).sum()
            }

            fn deliver(&mut self, ids: &[EntryId], consumer: usize) -> Vec<(EntryId, u64)> {
                let now = self.now;
                ids.iter()
                    .map(|id| {
                        let e = self.entries.get_mut(id).expect("model entry");
                        let deliveries = match e.slot {
                            Slot::Waiting => 1,
                            Slot::Pending { deliveries, .. } => deliveries + 1,
                        };
                        e.slot = Slot::Pending {
                            consumer,
                            since: now,
                            deliveries,
                        };
                        (*id, deliveries)
                    })
                    .collect()
            }

            fn read(&mut self, consumer: usize, count: usize) -> Vec<(EntryId, u64)> {
                if let Some(after) = self
                    .recovery
                    .get(&consumer)
                    .copied()
                    .unwrap_or(Some(EntryId::MIN))
                {
                    let ids: Vec<EntryId> = self
                        .entries
                        .values()
                        .filter(|e| e.id > after)
                        .filter(|e| matches!(e.slot, Slot::Pending { consumer: c, .. } if c == consumer))
                        .take(count)
                        .map(|e| e.id)
                        .collect();
                    if let Some(last) = ids.last() {
                        self.recovery.insert(consumer, Some(*last));
                        return self.deliver(&ids, consumer);
                    }
                    self.recovery.insert(consumer, None);
                }
                let ids: Vec<EntryId> = self
                    .entries
                    .values()
                    .filter(|e| e.slot == Slot::Waiting)
                    .take(count)
                    .map(|e| e.id)
                    .collect();
                self.deliver(&ids, consumer)
            }

            fn claim(
                &mut self,
                consumer: usize,
                min_idle: u64,
                count: usize,
            ) -> Vec<(EntryId, u64)> {
                let now = self.now;
                let ids: Vec<EntryId> = self
                    .entries
                    .values()
                    .filter(|e| matches!(e.slot, Slot::Pending { since, .. } if now - since >= min_idle))
                    .take(count)
                    .map(|e| e.id)
                    .collect();
                self.deliver(&ids, consumer)
            }

            fn stats(&self) -> (u64, u64, u64, u64, u64, Option<u64>) {
                let (mut ew, mut vw, mut ep, mut vp) = (0, 0, 0, 0);
                for e in self.entries.values() {
                    if e.slot == Slot::Waiting {
                        ew += 1;
                        vw += e.batch.len() as u64;
                    } else {
                        ep += 1;
                        vp += e.batch.len() as u64;
                    }
                }
                let oldest = self
                    .entries
                    .values()
                    .map(|e| e.batch.oldest_time_us())
                    .min();
                (ew, vw, ep, vp, self.bytes(), oldest)
            }
        }

        fn check(got: &[Entry], want: &[(EntryId, u64)], model: &Model) {
            let got_ids: Vec<(EntryId, u64)> = got.iter().map(|e| (e.id, e.deliveries)).collect();
            assert_eq!(got_ids, want);
            for e in got {
                assert_eq!(e.batch, model.entries[&e.id].batch);
            }
        }

        async fn run(capacity: u64, actions: Vec<Action>) {
            let mut buffer = InMemory::builder()
                .with_capacity(Capacity::bytes(capacity))
                .with_when_full(WhenFull::Reject)
                .build();
            let mut model = Model {
                capacity,
                ..Model::default()
            };
            let mut serial = 0u64;
            for action in actions {
                match action {
                    Action::Append { events, size, t } => {
                        let batch = Batch::new(
                            (0..events)
                                .map(|_| {
                                    serial += 1;
                                    let mut v = serial.to_le_bytes().to_vec();
                                    v.resize(size.max(8), b'.');
                                    Bytes::from(v)
                                })
                                .collect(),
                            t,
                        );
                        let used = model.bytes();
                        let fits = used == 0 || used + batch.bytes() <= model.capacity;
                        match buffer.append(batch.clone()).await {
                            Ok(id) => {
                                assert!(fits, "appended beyond capacity");
                                assert!(model.ids.last().is_none_or(|last| *last < id));
                                model.ids.push(id);
                                model.entries.insert(
                                    id,
                                    ModelEntry {
                                        id,
                                        batch,
                                        slot: Slot::Waiting,
                                    },
                                );
                            }
                            Err(err) => {
                                assert!(!fits, "refused a batch that fits: {err}");
                                assert_eq!(err.into_batch(), Some(batch));
                            }
                        }
                    }
                    Action::Read { consumer, count } => {
                        let got = buffer
                            .read(&consumer.to_string(), count, Duration::ZERO)
                            .await
                            .unwrap();
                        let want = model.read(consumer, count);
                        check(&got, &want, &model);
                    }
                    Action::Ack { pick } => {
                        if model.ids.is_empty() {
                            continue;
                        }
                        let id = model.ids[pick % model.ids.len()];
                        let pending = model
                            .entries
                            .get(&id)
                            .is_some_and(|e| matches!(e.slot, Slot::Pending { .. }));
                        if pending {
                            model.entries.remove(&id);
                        }
                        assert_eq!(buffer.ack(&[id]).await.unwrap(), u64::from(pending));
                    }
                    Action::Claim {
                        consumer,
                        min_idle,
                        count,
                    } => {
                        let got = buffer
                            .claim(&consumer.to_string(), Duration::from_secs(min_idle), count)
                            .await
                            .unwrap();
                        let want = model.claim(consumer, min_idle, count);
                        check(&got, &want, &model);
                    }
                    Action::Tick { secs } => {
                        tokio::time::advance(Duration::from_secs(secs)).await;
                        model.now += secs;
                    }
                    Action::Restart => {
                        buffer = buffer.reopen();
                        model.recovery.clear();
                    }
                }
                let s = buffer.stats().await.unwrap();
                let got = (
                    s.entries_waiting,
                    s.events_waiting,
                    s.entries_pending,
                    s.events_pending,
                    s.bytes,
                    s.oldest_unacked_time_us,
                );
                assert_eq!(got, model.stats());
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]
            #[test]
            fn model_check(
                capacity in 1u64..3_000,
                actions in proptest::collection::vec(arb_action(), 0..64),
            ) {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .start_paused(true)
                    .build()
                    .unwrap();
                rt.block_on(run(capacity, actions));
            }
        }
    }
}
