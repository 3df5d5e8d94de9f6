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

/// The entries still kept.
#[derive(Debug, Default)]
struct Window {
    entries: VecDeque<Arc<Entry>>,
    /// Absolute position of `entries[0]`.
    first: u64,
}

impl Window {
    fn published(&self) -> u64 {
        self.first + self.entries.len() as u64
    }
}

/// What makes new entries.
#[derive(Debug)]
struct Making {
    producer: Producer,
    /// How many entries the producer may still make (`None`: no limit).
    remaining: Option<u64>,
}

impl Making {
    fn next(&mut self) -> Option<Entry> {
        if self.remaining == Some(0) {
            return None;
        }
        let entry = match &mut self.producer {
            Producer::Generated(generator) => Entry::from_event(&generator.next_event()),
            Producer::Entries(entries) => entries.next()?,
        };
        if let Some(remaining) = self.remaining.as_mut() {
            *remaining -= 1;
        }
        Some(entry)
    }

    fn exhausted(&self) -> bool {
        match &self.producer {
            _ if self.remaining == Some(0) => true,
            Producer::Entries(entries) => entries.len() == 0,
            Producer::Generated(_) => false,
        }
    }
}

/// Entries made at a time: publication takes the window's lock once a chunk, so readers are
/// never held up for long however far publication has to catch up.
const CHUNK: u64 = 1024;

/// The window kept when the source has no end and none is set: about 1 GB.
const DEFAULT_WINDOW: usize = 1_000_000;

/// The shared window of published events.
#[derive(Debug)]
pub(crate) struct Log {
    /// Taken before `window` when both are.
    making: Mutex<Making>,
    window: Mutex<Window>,
    retain: usize,
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

/// Takes a lock; a panic while holding one leaves its data consistent (entries are pushed and
/// popped whole), so a poisoned lock is still usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Log {
    /// A log of what `producer` makes, at most `limit` entries, keeping the last `window`;
    /// without a window, every entry of a bounded source, else the last million.
    pub(crate) fn new(producer: Producer, limit: Option<u64>, window: Option<usize>) -> Log {
        let bounded = match &producer {
            Producer::Entries(entries) => Some(entries.len() as u64),
            Producer::Generated(_) => None,
        };
        let retain = match (window, limit.or(bounded)) {
            (Some(window), _) => window.max(1),
            (None, Some(all)) => usize::try_from(all).unwrap_or(usize::MAX).max(1),
            (None, None) => DEFAULT_WINDOW,
        };
        Log {
            making: Mutex::new(Making {
                producer,
                remaining: limit,
            }),
            window: Mutex::new(Window::default()),
            retain,
            published: watch::channel(0).0,
        }
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
        lock(&self.making).exhausted()
    }

    /// Where a connection without a cursor starts: after everything published (live).
    pub(crate) fn head(&self) -> u64 {
        lock(&self.window).published()
    }

    /// Where a connection with `cursor` starts: the first entry in the window with
    /// `time_us >= cursor`, the start of the window when the cursor is older, live when newer.
    pub(crate) fn position_for(&self, cursor: i64) -> u64 {
        let window = lock(&self.window);
        let offset = window
            .entries
            .iter()
            .position(|entry| entry.time_us >= cursor)
            .unwrap_or(window.entries.len());
        window.first + offset as u64
    }

    /// Publishes at most one chunk of entries towards `target` published; returns the number
    /// published.
    pub(crate) fn publish_chunk(&self, target: u64) -> u64 {
        let mut making = lock(&self.making);
        let published = self.published();
        let wanted = target.saturating_sub(published).min(CHUNK);
        let chunk: Vec<Arc<Entry>> = (0..wanted)
            .map_while(|_| making.next().map(Arc::new))
            .collect();
        if chunk.is_empty() {
            return published;
        }
        let mut window = lock(&self.window);
        window.entries.extend(chunk);
        let excess = window.entries.len().saturating_sub(self.retain);
        window.entries.drain(..excess);
        window.first += excess as u64;
        let published = window.published();
        drop(window);
        self.published.send_replace(published);
        published
    }

    /// Publishes entries until `target` are published (or the producer runs out).
    pub(crate) fn publish_until(&self, target: u64) {
        let mut published = self.published();
        while published < target {
            let now = self.publish_chunk(target);
            if now == published {
                break;
            }
            published = now;
        }
    }

    /// Up to `max` entries from `*position`, advancing it. With `on_demand`, a reader at the
    /// head makes the producer publish more.
    pub(crate) fn read(&self, position: &mut u64, max: usize, on_demand: bool) -> Read {
        if on_demand && *position >= self.published() {
            self.publish_until(*position + max as u64);
        }
        let window = lock(&self.window);
        let mut skipped = 0;
        if *position < window.first {
            skipped = window.first - *position;
            *position = window.first;
        }
        let start = usize::try_from(*position - window.first)
            .unwrap_or(usize::MAX)
            .min(window.entries.len());
        let entries: Vec<_> = window.entries.range(start..).take(max).cloned().collect();
        *position += entries.len() as u64;
        Read { entries, skipped }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generated(limit: Option<u64>, window: usize) -> Log {
        let generator = Generator::new(firehose_synth::Config::default());
        Log::new(
            Producer::Generated(Box::new(generator)),
            limit,
            Some(window),
        )
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
