//! The events the server has published: a bounded window that connections read from their own
//! position, so a client that reconnects with a cursor is served again what it missed.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use firehose_core::{Event, Payload};
use firehose_synth::Generator;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// One published event.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) body: Body,
    pub(crate) time_us: i64,
    pub(crate) did: Box<str>,
    /// The commit's collection; `None` for identity and account events (and replayed lines
    /// that are not events), which no collection filter holds back.
    pub(crate) collection: Option<Box<str>>,
}

/// What goes out for an entry.
#[derive(Debug, Clone)]
pub(crate) enum Body {
    /// An event's JSON: a text frame, or a zstd frame (binary) when the client asked for
    /// compression.
    Json(Utf8Bytes),
    /// A scripted frame, sent exactly as it is whatever the client asked.
    Frame(Message),
}

impl Body {
    /// The frame's payload size.
    pub(crate) fn len(&self) -> usize {
        match self {
            Body::Json(json) => json.len(),
            Body::Frame(message) => message.len(),
        }
    }
}

impl Entry {
    pub(crate) fn from_event(event: &Event<'_>) -> Entry {
        Entry {
            body: Body::Json(event.to_json().into()),
            time_us: event.time_us,
            did: event.did.as_ref().into(),
            collection: match &event.payload {
                Payload::Commit(commit) => Some(commit.collection.as_ref().into()),
                Payload::Identity(_) | Payload::Account(_) => None,
            },
        }
    }

    /// A replayed line, sent as it is; a line that does not decode takes `time_us` from the
    /// line before it.
    pub(crate) fn from_line(line: String, previous_time_us: i64) -> Entry {
        let mut entry = Entry::placed(line.as_bytes(), None, previous_time_us);
        entry.body = Body::Json(line.into());
        entry
    }

    /// A scripted frame whose payload, decompressed, is `content`: placed at `time_us` when
    /// given, else at the time of the event it holds, else at `previous_time_us`.
    pub(crate) fn from_frame(
        frame: Message,
        content: &[u8],
        time_us: Option<i64>,
        previous_time_us: i64,
    ) -> Entry {
        let mut entry = Entry::placed(content, time_us, previous_time_us);
        entry.body = Body::Frame(frame);
        entry
    }

    /// An entry without a body yet, placed by the event in `content` when it is one.
    fn placed(content: &[u8], time_us: Option<i64>, previous_time_us: i64) -> Entry {
        let (event_time, did, collection) = match Event::decode(content) {
            Ok(event) => (
                Some(event.time_us),
                event.did.as_ref().into(),
                match &event.payload {
                    Payload::Commit(commit) => Some(commit.collection.as_ref().into()),
                    Payload::Identity(_) | Payload::Account(_) => None,
                },
            ),
            Err(_) => (None, "".into(), None),
        };
        Entry {
            body: Body::Frame(Message::Text(Utf8Bytes::default())),
            time_us: time_us.or(event_time).unwrap_or(previous_time_us),
            did,
            collection,
        }
    }
}

/// Where new entries come from.
pub(crate) enum Producer {
    Generated(Box<Generator>),
    /// Entries made beforehand: replayed lines or scripted frames.
    Entries(std::vec::IntoIter<Entry>),
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Producer::Generated(_) => f.write_str("Generated"),
            Producer::Entries(entries) => write!(f, "Entries({} left)", entries.len()),
        }
    }
}

#[derive(Debug)]
struct Inner {
    entries: VecDeque<Arc<Entry>>,
    /// Absolute position of `entries[0]`.
    first: u64,
    producer: Producer,
    /// How many entries the producer may still make (`None`: no limit).
    remaining: Option<u64>,
}

impl Inner {
    fn published(&self) -> u64 {
        self.first + self.entries.len() as u64
    }
}

/// The shared window of published events.
#[derive(Debug)]
pub(crate) struct Log {
    inner: Mutex<Inner>,
    window: usize,
    /// The number of entries published so far; connections wait on it.
    published: watch::Sender<u64>,
}

/// What a read returned.
#[derive(Debug)]
pub(crate) struct Read {
    pub(crate) entries: Vec<Arc<Entry>>,
    /// Entries the reader was too slow for: they had left the window.
    pub(crate) skipped: u64,
}

impl Log {
    pub(crate) fn new(producer: Producer, limit: Option<u64>, window: usize) -> Log {
        Log {
            inner: Mutex::new(Inner {
                entries: VecDeque::new(),
                first: 0,
                producer,
                remaining: limit,
            }),
            window: window.max(1),
            published: watch::channel(0).0,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves the window consistent (entries are only pushed
        // and popped whole), so a poisoned lock is still usable.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A receiver that changes when entries are published.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.published.subscribe()
    }

    /// Entries published so far.
    pub(crate) fn published(&self) -> u64 {
        *self.published.borrow()
    }

    /// Whether the producer has nothing more.
    pub(crate) fn exhausted(&self) -> bool {
        let inner = self.lock();
        match &inner.producer {
            _ if inner.remaining == Some(0) => true,
            Producer::Entries(entries) => entries.len() == 0,
            Producer::Generated(_) => false,
        }
    }

    /// Where a connection without a cursor starts: after everything published (live).
    pub(crate) fn head(&self) -> u64 {
        self.lock().published()
    }

    /// Where a connection with `cursor` starts: the first entry in the window with
    /// `time_us >= cursor`, the start of the window when the cursor is older, live when newer.
    pub(crate) fn position_for(&self, cursor: i64) -> u64 {
        let inner = self.lock();
        let offset = inner
            .entries
            .iter()
            .position(|entry| entry.time_us >= cursor)
            .unwrap_or(inner.entries.len());
        inner.first + offset as u64
    }

    /// Publishes entries until `target` are published (or the producer runs out).
    pub(crate) fn publish_until(&self, target: u64) {
        let mut inner = self.lock();
        let published_before = inner.published();
        while inner.published() < target && self.produce_one(&mut inner) {}
        let published = inner.published();
        drop(inner);
        if published != published_before {
            self.published.send_replace(published);
        }
    }

    fn produce_one(&self, inner: &mut Inner) -> bool {
        if inner.remaining == Some(0) {
            return false;
        }
        let entry = match &mut inner.producer {
            Producer::Generated(generator) => Entry::from_event(&generator.next_event()),
            Producer::Entries(entries) => match entries.next() {
                Some(entry) => entry,
                None => return false,
            },
        };
        if let Some(remaining) = inner.remaining.as_mut() {
            *remaining -= 1;
        }
        inner.entries.push_back(Arc::new(entry));
        if inner.entries.len() > self.window {
            inner.entries.pop_front();
            inner.first += 1;
        }
        true
    }

    /// Up to `max` entries from `*position`, advancing it. With `on_demand`, a reader at the
    /// head makes the producer publish more.
    pub(crate) fn read(&self, position: &mut u64, max: usize, on_demand: bool) -> Read {
        if on_demand && *position >= self.published() {
            self.publish_until(*position + max as u64);
        }
        let inner = self.lock();
        let mut skipped = 0;
        if *position < inner.first {
            skipped = inner.first - *position;
            *position = inner.first;
        }
        let start = usize::try_from(*position - inner.first).unwrap_or(usize::MAX);
        let entries: Vec<_> = inner
            .entries
            .iter()
            .skip(start)
            .take(max)
            .cloned()
            .collect();
        *position += entries.len() as u64;
        Read { entries, skipped }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generated(limit: Option<u64>, window: usize) -> Log {
        let generator = Generator::new(firehose_synth::Config::default());
        Log::new(Producer::Generated(Box::new(generator)), limit, window)
    }

    #[test]
    fn readers_get_the_same_sequence_from_their_own_positions() {
        let log = generated(Some(1000), 10_000);
        let (mut a, mut b) = (0, 0);
        let first = log.read(&mut a, 300, true).entries;
        let second = log.read(&mut b, 100, true).entries;
        assert_eq!(first.len(), 300);
        assert_eq!(second.len(), 100);
        assert!(first.iter().zip(&second).all(|(x, y)| Arc::ptr_eq(x, y)));
        let mut all = first.len();
        loop {
            let read = log.read(&mut a, 300, true);
            if read.entries.is_empty() {
                break;
            }
            all += read.entries.len();
        }
        assert_eq!(all, 1000);
        assert!(log.exhausted());
        let generated: Vec<String> = Generator::new(firehose_synth::Config::default())
            .take(1000)
            .map(|event| event.to_json())
            .collect();
        let mut c = log.position_for(i64::MIN);
        let replay = log.read(&mut c, 2000, true).entries;
        assert_eq!(
            replay
                .iter()
                .map(|e| match &e.body {
                    Body::Json(json) => json.as_str(),
                    Body::Frame(_) => "a frame",
                })
                .collect::<Vec<_>>(),
            generated
        );
    }

    #[test]
    fn the_window_is_bounded_and_slow_readers_skip() {
        let log = generated(None, 100);
        log.publish_until(250);
        let mut position = 0;
        let read = log.read(&mut position, 10, false);
        assert_eq!(read.skipped, 150);
        assert_eq!(position, 160);
        assert_eq!(log.head(), 250);
        let cursor = read.entries[0].time_us;
        assert_eq!(log.position_for(cursor), 150);
        assert_eq!(log.position_for(0), 150);
        assert_eq!(log.position_for(i64::MAX), 250);
    }
}
