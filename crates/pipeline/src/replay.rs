//! Dropping Jetstream's replays before they reach the buffer.
//!
//! Every reconnect resumes a little before the newest event received (the rewind), and a
//! restart resumes from the checkpoint less the rewind, so the source hands over events that
//! were already passed on. The filter keeps the key fingerprints of the recent window and
//! drops an event whose key it holds; it is seeded at start with the keys of what is already
//! stored past the resume point ([`firehose_sink::stored_keys`]).
//!
//! Memory: about 48 bytes a key. The window holds the keys of events no older than
//! `window` behind the newest received, at most `max_keys` of them (oldest dropped first):
//! the default window of 10 minutes holds about 300,000 keys (14 MB) at the live firehose's
//! 500 events/s, and the cap of 2,000,000 keys (about 96 MB) is reached only in a catch-up of
//! more than 3,300 events/s, where the window then shrinks to the newest 2,000,000 events.

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Duration;

use firehose_core::key::{Fingerprint, Peeked, peek};

/// How far behind the newest event keys are kept by default: the rewind and any checkpoint
/// lag a restart replays are well inside it.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(600);

/// Most keys kept by default (about 96 MB).
pub const DEFAULT_MAX_KEYS: usize = 2_000_000;

/// The keys of recently passed events; see the [module docs](self).
#[derive(Debug)]
pub struct ReplayFilter {
    window_us: i64,
    max_keys: usize,
    keys: HashSet<Fingerprint, BuildHasherDefault<Identity>>,
    order: VecDeque<Peeked>,
    newest_us: i64,
    /// While `Some`, the filter holds every key passed on since the resume point, and keeps
    /// the keys a reconnect's rewind (this many microseconds) may send again.
    complete_with_rewind_us: Option<i64>,
}

impl ReplayFilter {
    /// A filter keeping keys `window` behind the newest event, `max_keys` at most.
    pub fn new(window: Duration, max_keys: usize) -> Self {
        ReplayFilter {
            window_us: i64::try_from(window.as_micros()).unwrap_or(i64::MAX),
            max_keys: max_keys.max(1),
            keys: HashSet::default(),
            order: VecDeque::new(),
            newest_us: i64::MIN,
            complete_with_rewind_us: None,
        }
    }

    /// Says the filter now holds the key of every event passed on since the resume point (it
    /// was seeded with what is stored past it and what the buffer still holds), and that the
    /// source rewinds `rewind` on a reconnect. Every event admitted from then on is new, so
    /// the batches holding them are replay-free, and the files written from those alone are
    /// marked duplicate-free. That stays true until the cap forgets a key a replay may still
    /// bring back (a key newer than the rewind, or a seeded key the replay has not reached):
    /// see [`is_complete`](Self::is_complete). A window shorter than the rewind is never
    /// complete.
    pub fn set_complete(&mut self, rewind: Duration) {
        let rewind_us = i64::try_from(rewind.as_micros()).unwrap_or(i64::MAX);
        self.complete_with_rewind_us = (rewind_us <= self.window_us).then_some(rewind_us);
    }

    /// Whether every event admitted so far was new: [`set_complete`](Self::set_complete) was
    /// called and the cap has not forgotten a key a replay may bring back since.
    pub fn is_complete(&self) -> bool {
        self.complete_with_rewind_us.is_some()
    }

    /// Adds keys of events already stored (sorted by time), without moving the window: the
    /// window follows what the source sends, so seeded keys stay until the replay has passed
    /// them.
    pub fn seed(&mut self, stored: impl IntoIterator<Item = Peeked>) {
        for key in stored {
            if self.keys.insert(key.fingerprint) {
                self.order.push_back(key);
            }
        }
        self.trim();
    }

    /// Whether the event in `json` is new: `true` passes it on (and remembers its key), `false`
    /// means it was passed on before. A line without a readable key passes (the writer reports
    /// it as a dead letter).
    pub fn admit(&mut self, json: &[u8]) -> bool {
        let Some(key) = peek(json) else {
            return true;
        };
        if !self.keys.insert(key.fingerprint) {
            return false;
        }
        self.order.push_back(key);
        if key.time_us > self.newest_us {
            self.newest_us = key.time_us;
        }
        self.trim();
        true
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Forgets keys past the window or the cap, oldest first.
    fn trim(&mut self) {
        let horizon = self.newest_us.saturating_sub(self.window_us);
        while let Some(front) = self.order.front() {
            if front.time_us >= horizon && self.order.len() <= self.max_keys {
                break;
            }
            if let Some(rewind_us) = self.complete_with_rewind_us
                && front.time_us >= horizon
                && front.time_us > self.newest_us.saturating_sub(rewind_us)
            {
                // A replay may still bring this key back: admitted events are no longer
                // known to be new.
                self.complete_with_rewind_us = None;
                tracing::warn!(
                    keys = self.max_keys,
                    "The replay filter reached its cap and forgot keys a replay may send again: files are no longer marked duplicate-free until ingest restarts."
                );
            }
            self.keys.remove(&front.fingerprint);
            self.order.pop_front();
        }
    }
}

/// The fingerprints are already uniform hashes: a hasher that passes them through.
#[derive(Debug, Default)]
struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes.iter().take(8) {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }

    fn write_u128(&mut self, value: u128) {
        self.0 = value as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn like(rkey: &str, time_us: i64) -> String {
        format!(
            r#"{{"did":"did:plc:a","time_us":{time_us},"kind":"commit","commit":{{"rev":"r{rkey}","operation":"create","collection":"app.bsky.feed.like","rkey":"{rkey}"}}}}"#
        )
    }

    #[test]
    fn a_replay_is_dropped_and_a_new_event_passes() {
        let mut filter = ReplayFilter::new(Duration::from_secs(5), 100);
        assert!(filter.admit(like("a", 1_000_000).as_bytes()));
        assert!(filter.admit(like("b", 2_000_000).as_bytes()));
        // The reconnect's rewind sends them again, with a new one.
        assert!(!filter.admit(like("a", 1_000_000).as_bytes()));
        assert!(!filter.admit(like("b", 2_000_000).as_bytes()));
        assert!(filter.admit(like("c", 3_000_000).as_bytes()));
        assert!(filter.admit(b"not json"), "no key: passed to the writer");
        assert!(filter.admit(b"not json"), "and again: no key is remembered");
        assert_eq!(filter.len(), 3);
    }

    #[test]
    fn keys_leave_the_window_and_the_cap() {
        let mut filter = ReplayFilter::new(Duration::from_secs(5), 1_000);
        assert!(filter.admit(like("old", 1_000_000).as_bytes()));
        assert!(filter.admit(like("new", 7_000_000).as_bytes()));
        assert_eq!(filter.len(), 1, "6 s behind the newest: forgotten");
        assert!(filter.admit(like("old", 1_000_000).as_bytes()));

        let mut capped = ReplayFilter::new(Duration::from_secs(3600), 2);
        for (i, rkey) in ["a", "b", "c"].into_iter().enumerate() {
            assert!(capped.admit(like(rkey, i as i64).as_bytes()));
        }
        assert_eq!(capped.len(), 2);
        assert!(
            capped.admit(like("a", 0).as_bytes()),
            "the oldest went first"
        );
    }

    #[test]
    fn the_cap_forgetting_a_key_a_replay_may_send_ends_completeness() {
        let mut filter = ReplayFilter::new(Duration::from_secs(3600), 3);
        filter.set_complete(Duration::from_secs(5));
        assert!(filter.is_complete());
        // Keys 10 s apart: the cap forgets one older than the 5 s rewind, which no
        // reconnect sends again.
        for (i, rkey) in ["a", "b", "c", "d"].into_iter().enumerate() {
            assert!(filter.admit(like(rkey, i as i64 * 10_000_000).as_bytes()));
        }
        assert!(
            filter.is_complete(),
            "only a key older than the rewind went"
        );
        // Now a burst: four keys within one second; the cap forgets one a rewind resends.
        for (i, rkey) in ["e", "f", "g", "h"].into_iter().enumerate() {
            assert!(filter.admit(like(rkey, 40_000_000 + i as i64 * 1_000).as_bytes()));
        }
        assert!(!filter.is_complete());

        let mut short = ReplayFilter::new(Duration::from_secs(2), 100);
        short.set_complete(Duration::from_secs(5));
        assert!(!short.is_complete(), "a window shorter than the rewind");
    }

    #[test]
    fn seeded_keys_stay_until_the_replay_passes_them() {
        let mut filter = ReplayFilter::new(Duration::from_secs(5), 1_000);
        // Stored before a restart: 60 s of events past the resume point, more than the window.
        let stored: Vec<Peeked> = (0..60)
            .map(|s| peek(like(&format!("k{s}"), s * 1_000_000).as_bytes()).unwrap())
            .collect();
        filter.seed(stored);
        assert_eq!(filter.len(), 60);
        // The replay from the resume point: every stored event is dropped, in order.
        for s in 0..60 {
            assert!(
                !filter.admit(like(&format!("k{s}"), s * 1_000_000).as_bytes()),
                "{s}"
            );
        }
        assert!(filter.admit(like("k60", 60_000_000).as_bytes()));
    }
}
