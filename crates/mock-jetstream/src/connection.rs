//! One client connection: the subscription it asked for, and the session that sends it events.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use futures::stream::SplitStream;
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Bytes, Message, http};
use tracing::debug;

use crate::Shared;
use crate::log::{Body, Entry};

/// Entries read from the log at a time, then sent before the next read.
const BATCH: usize = 256;

/// What a client asked for in its URL.
#[derive(Debug, Clone)]
pub(crate) struct Subscription {
    pub(crate) filter: Filter,
    pub(crate) cursor: Option<i64>,
    pub(crate) compress: bool,
    pub(crate) require_hello: bool,
}

/// Which events a client wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Filter {
    collections: HashSet<String>,
    /// From `prefix.*`: the prefix with its dot.
    prefixes: Vec<String>,
    dids: HashSet<String>,
    /// 0: no limit.
    max_size: usize,
}

impl Filter {
    pub(crate) fn new(
        collections: Vec<String>,
        dids: Vec<String>,
        max_size: i64,
    ) -> Result<Filter, String> {
        if collections.len() > 100 {
            return Err(format!(
                "{} wantedCollections, at most 100 are allowed",
                collections.len()
            ));
        }
        if dids.len() > 10_000 {
            return Err(format!(
                "{} wantedDids, at most 10000 are allowed",
                dids.len()
            ));
        }
        let mut filter = Filter {
            max_size: usize::try_from(max_size.max(0)).unwrap_or(usize::MAX),
            dids: dids.into_iter().collect(),
            ..Filter::default()
        };
        for collection in collections {
            match collection.strip_suffix('*') {
                Some(prefix) if prefix.ends_with('.') => filter.prefixes.push(prefix.to_owned()),
                Some(_) => return Err(format!("invalid wantedCollections {collection:?}")),
                None => {
                    filter.collections.insert(collection);
                }
            }
        }
        Ok(filter)
    }

    /// The filter in an `options_update` message.
    fn from_options_update(text: &str) -> Result<Filter, String> {
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if value["type"] != "options_update" {
            return Err(format!("unknown message type {}", value["type"]));
        }
        let payload = &value["payload"];
        let strings = |key: &str| -> Vec<String> {
            payload[key]
                .as_array()
                .map(|items| {
                    items
                        .iter()
                        .filter_map(|item| item.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        Filter::new(
            strings("wantedCollections"),
            strings("wantedDids"),
            payload["maxMessageSizeBytes"].as_i64().unwrap_or(0),
        )
    }

    pub(crate) fn wants(&self, entry: &Entry) -> bool {
        if self.max_size > 0 && entry.body.len() > self.max_size {
            return false;
        }
        if !self.dids.is_empty() && !self.dids.contains(&*entry.did) {
            return false;
        }
        let Some(collection) = entry.collection.as_deref() else {
            return true;
        };
        (self.collections.is_empty() && self.prefixes.is_empty())
            || self.collections.contains(collection)
            || self.prefixes.iter().any(|p| collection.starts_with(p))
    }
}

/// Reads the subscription from the request's path and query.
pub(crate) fn subscription(uri: &http::Uri, can_compress: bool) -> Result<Subscription, String> {
    if uri.path() != "/subscribe" {
        return Err(format!("no such endpoint {}; use /subscribe", uri.path()));
    }
    let (mut collections, mut dids) = (Vec::new(), Vec::new());
    let mut subscription = Subscription {
        filter: Filter::default(),
        cursor: None,
        compress: false,
        require_hello: false,
    };
    let mut max_size = 0;
    for pair in uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value)?;
        let number = |value: &str| {
            value
                .parse::<i64>()
                .map_err(|_| format!("{key}={value:?} is not a number"))
        };
        match key {
            "wantedCollections" => collections.push(value),
            "wantedDids" => dids.push(value),
            "cursor" => subscription.cursor = Some(number(&value)?),
            "maxMessageSizeBytes" => max_size = number(&value)?,
            "compress" => subscription.compress = value == "true",
            "requireHello" => subscription.require_hello = value == "true",
            _ => {}
        }
    }
    if subscription.compress && !can_compress {
        return Err("compress=true: this server has no zstd dictionary".to_owned());
    }
    subscription.filter = Filter::new(collections, dids, max_size)?;
    Ok(subscription)
}

fn percent_decode(value: &str) -> Result<String, String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad percent-encoding in {value:?}"))?;
                out.push(hex);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| format!("{value:?} is not UTF-8"))
}

/// Serves one TCP connection until it ends, the drop fault fires or the server stops.
// The handshake callback's error type is tungstenite's.
#[allow(clippy::result_large_err)]
pub(crate) async fn serve(stream: TcpStream, shared: Arc<Shared>) {
    let mut asked: Option<Subscription> = None;
    let can_compress = shared.dictionary.is_some();
    let callback =
        |request: &Request, response: Response| match subscription(request.uri(), can_compress) {
            Ok(subscription) => {
                asked = Some(subscription);
                Ok(response)
            }
            Err(reason) => {
                let mut error = ErrorResponse::new(Some(reason));
                *error.status_mut() = http::StatusCode::BAD_REQUEST;
                Err(error)
            }
        };
    let socket = match tokio_tungstenite::accept_hdr_async(stream, callback).await {
        Ok(socket) => socket,
        Err(error) => {
            debug!(%error, "Handshake failed.");
            return;
        }
    };
    let Some(subscription) = asked else { return };
    let connection = shared.counters.connections.fetch_add(1, Relaxed) + 1;
    let session = Session::new(&shared, &subscription, connection);
    let run = session.run(socket, subscription);
    match shared.faults.drop_every {
        Some(after) => {
            if tokio::time::timeout(after, run).await.is_err() {
                // Dropping the socket without a close frame: an abrupt end.
                shared.counters.drops.fetch_add(1, Relaxed);
                if shared.faults.malformed_every.is_some() {
                    shared.broken_frames_of(connection, |b| b.dropped = true);
                }
            }
        }
        None => run.await,
    }
}

/// Ends the reader task when the session ends.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The client went away, or sending failed.
struct Gone;

struct Session<'a> {
    shared: &'a Shared,
    compressor: Option<zstd::bulk::Compressor<'static>>,
    /// The connection's number, for the tags of its broken frames.
    connection: u64,
    /// Events sent on this connection (faults count them).
    count: u64,
    malformed: u64,
    /// An event held back to be sent after the next one (reordering).
    held: Option<Arc<Entry>>,
}

impl<'a> Session<'a> {
    fn new(shared: &'a Shared, subscription: &Subscription, connection: u64) -> Session<'a> {
        let compressor = match (&shared.dictionary, subscription.compress) {
            (Some(dictionary), true) => zstd::bulk::Compressor::with_dictionary(3, dictionary)
                .map_err(|error| debug!(%error, "No zstd compressor."))
                .ok(),
            _ => None,
        };
        Session {
            shared,
            compressor,
            connection,
            count: 0,
            malformed: 0,
            held: None,
        }
    }

    async fn run(mut self, socket: WebSocketStream<TcpStream>, subscription: Subscription) {
        let (mut sink, stream) = socket.split();
        let (filter_tx, mut filters) = watch::channel(subscription.filter.clone());
        let _reader = AbortOnDrop(tokio::spawn(read_client(stream, filter_tx)).abort_handle());
        if subscription.require_hello && filters.changed().await.is_err() {
            return;
        }
        let mut filter = filters.borrow_and_update().clone();
        let shared = self.shared;
        let log = &shared.log;
        let mut position = match subscription.cursor {
            Some(cursor) => log.position_for(cursor),
            None => log.head(),
        };
        // Replaying from a cursor goes at the client's pace; once caught up, the client is
        // live and must keep up.
        let mut live = subscription.cursor.is_none();
        let mut published = log.subscribe();
        let faults = &shared.faults;
        let mut stall_at = faults.stall_after.map(|after| Instant::now() + after);
        loop {
            if stall_at.is_some_and(|at| at <= Instant::now()) {
                if sink.flush().await.is_err() {
                    return;
                }
                shared.counters.stalls.fetch_add(1, Relaxed);
                tokio::time::sleep(faults.stall_for).await;
                stall_at = None;
            }
            match filters.has_changed() {
                Ok(true) => filter = filters.borrow_and_update().clone(),
                Ok(false) => {}
                Err(_) => return,
            }
            if live
                && let Some(max) = shared.max_behind
                && log.published().saturating_sub(position) > max
            {
                shared.counters.slow_closes.fetch_add(1, Relaxed);
                let close = CloseFrame {
                    code: CloseCode::Policy,
                    reason: "too slow: resume with a cursor".into(),
                };
                let _ = sink.send(Message::Close(Some(close))).await;
                return;
            }
            let read = log.read(&mut position, BATCH, shared.on_demand);
            shared.counters.skipped.fetch_add(read.skipped, Relaxed);
            if read.entries.is_empty() {
                live = true;
                if let Some(held) = self.held.take() {
                    let frame = self.event(&held);
                    if self.send(&mut sink, frame).await.is_err() {
                        return;
                    }
                }
                if sink.flush().await.is_err() {
                    return;
                }
                let stall = async {
                    match stall_at {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = published.changed() => {}
                    changed = filters.changed() => match changed {
                        Ok(()) => filter = filters.borrow_and_update().clone(),
                        Err(_) => return,
                    },
                    () = stall => {}
                }
                continue;
            }
            for entry in read.entries {
                // As Jetstream, nothing older than the cursor: a log whose times are not in
                // order (a replayed file, a script) may hold such entries after the start.
                let wanted = filter.wants(&entry)
                    && subscription
                        .cursor
                        .is_none_or(|cursor| entry.time_us >= cursor);
                if wanted && self.send_event(&mut sink, entry).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    }

    /// Sends one event, with the faults that apply to it.
    async fn send_event(&mut self, sink: &mut Sink, entry: Arc<Entry>) -> Result<(), Gone> {
        self.count += 1;
        let n = self.count;
        let every = |k: Option<u64>| k.is_some_and(|k| n.is_multiple_of(k));
        let shared = self.shared;
        let (faults, counters) = (&shared.faults, &shared.counters);
        if every(faults.reorder_every) && self.held.is_none() {
            self.held = Some(entry);
            counters.reordered.fetch_add(1, Relaxed);
            return Ok(());
        }
        let frame = self.event(&entry);
        self.send(sink, frame).await?;
        if let Some(held) = self.held.take() {
            let frame = self.event(&held);
            self.send(sink, frame).await?;
        }
        if every(faults.duplicate_every) {
            let frame = self.event(&entry);
            self.send(sink, frame).await?;
            counters.duplicates.fetch_add(1, Relaxed);
        }
        if every(faults.malformed_every) {
            let frame = self.broken(&entry);
            sink.feed(frame).await.map_err(|_| Gone)?;
            counters.malformed.fetch_add(1, Relaxed);
        }
        Ok(())
    }

    async fn send(&mut self, sink: &mut Sink, frame: Message) -> Result<(), Gone> {
        let bytes = frame.len() as u64;
        sink.feed(frame).await.map_err(|_| Gone)?;
        self.shared.counters.events.fetch_add(1, Relaxed);
        self.shared.counters.bytes.fetch_add(bytes, Relaxed);
        Ok(())
    }

    /// The frame for an event: its JSON text, or a zstd frame made with the dictionary; a
    /// scripted frame as it is.
    fn event(&mut self, entry: &Entry) -> Message {
        let json = match &entry.body {
            Body::Json(json) => json,
            Body::Frame(frame) => return frame.clone(),
        };
        match self.compressor.as_mut() {
            None => Message::Text(json.clone()),
            Some(compressor) => match compressor.compress(json.as_bytes()) {
                Ok(frame) => Message::Binary(frame.into()),
                // Compressing into a growing Vec does not fail; if it did, the client would
                // see a frame it cannot decompress, as with a real server's bug.
                Err(_) => Message::Binary(Bytes::from_static(b"\x28\xb5\x2f\xfd")),
            },
        }
    }

    /// A broken frame, in turn: not JSON, an event cut in half, or (compressed) not zstd; each
    /// with its tag.
    fn broken(&mut self, entry: &Entry) -> Message {
        self.malformed += 1;
        let sent = self.malformed;
        self.shared
            .broken_frames_of(self.connection, |b| b.sent = sent);
        let tag = crate::broken_frame_tag(self.connection, sent);
        let text: Vec<u8> = match sent % 3 {
            1 => {
                format!(r#"{{"did":"did:plc:broken","time_us":oops,"mock":"{tag}"}}"#).into_bytes()
            }
            2 => {
                // The event with the tag as its first field, cut in half after the tag.
                let json = match &entry.body {
                    Body::Json(json) => json.as_bytes(),
                    Body::Frame(_) => b"{}",
                };
                let mut text = format!(r#"{{"mock":"{tag}","#).into_bytes();
                let cut = text.len() + json.len() / 2;
                text.extend_from_slice(json.get(1..).unwrap_or_default());
                text.truncate(cut);
                text
            }
            _ => match self.compressor {
                // Garbage after a valid zstd magic number.
                Some(_) => {
                    let mut frame = b"\x28\xb5\x2f\xfdgarbage ".to_vec();
                    frame.extend_from_slice(tag.as_bytes());
                    return Message::Binary(frame.into());
                }
                None => format!("not json at all: {tag}").into_bytes(),
            },
        };
        match self.compressor.as_mut() {
            Some(compressor) => match compressor.compress(&text) {
                Ok(frame) => Message::Binary(frame.into()),
                Err(_) => Message::Binary(Bytes::from_static(b"\x28\xb5\x2f\xfd")),
            },
            None => Message::Text(String::from_utf8_lossy(&text).into_owned().into()),
        }
    }
}

type Sink = futures::stream::SplitSink<WebSocketStream<TcpStream>, Message>;

/// Reads what the client sends: `options_update` messages change the filter. Ends (dropping
/// the sender, which ends the session) when the client closes or goes away.
async fn read_client(
    mut stream: SplitStream<WebSocketStream<TcpStream>>,
    filters: watch::Sender<Filter>,
) {
    while let Some(Ok(message)) = stream.next().await {
        match message {
            Message::Text(text) => match Filter::from_options_update(&text) {
                Ok(filter) => {
                    filters.send_replace(filter);
                }
                Err(reason) => debug!(%reason, "Ignored a client message."),
            },
            Message::Close(_) => break,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(did: &str, collection: Option<&str>) -> Entry {
        Entry {
            body: Body::Json("{}".into()),
            time_us: 1,
            did: did.into(),
            collection: collection.map(Into::into),
        }
    }

    #[test]
    fn filters_match_collections_prefixes_and_dids() {
        let like = entry("did:plc:a", Some("app.bsky.feed.like"));
        let follow = entry("did:plc:b", Some("app.bsky.graph.follow"));
        let identity = entry("did:plc:c", None);
        let f = Filter::new(vec!["app.bsky.graph.*".into()], vec![], 0).unwrap();
        assert!(!f.wants(&like) && f.wants(&follow) && f.wants(&identity));
        let f = Filter::new(vec!["app.bsky.feed.like".into()], vec![], 0).unwrap();
        assert!(f.wants(&like) && !f.wants(&follow) && f.wants(&identity));
        let f = Filter::new(vec![], vec!["did:plc:b".into()], 0).unwrap();
        assert!(!f.wants(&like) && f.wants(&follow) && !f.wants(&identity));
        let f = Filter::new(vec![], vec![], 1).unwrap();
        assert!(!f.wants(&like));
        assert!(Filter::new(vec!["app.bsky*".into()], vec![], 0).is_err());
    }

    #[test]
    fn subscriptions_come_from_the_query() {
        let uri: http::Uri = "/subscribe?wantedCollections=app.bsky.feed.post&wantedDids=did%3Aplc%3Ax&cursor=12&compress=true&requireHello=true&maxMessageSizeBytes=9"
            .parse()
            .unwrap();
        let s = subscription(&uri, true).unwrap();
        assert_eq!(s.cursor, Some(12));
        assert!(s.compress && s.require_hello);
        assert_eq!(
            s.filter,
            Filter::new(
                vec!["app.bsky.feed.post".into()],
                vec!["did:plc:x".into()],
                9
            )
            .unwrap()
        );
        assert!(
            subscription(&uri, false)
                .unwrap_err()
                .contains("no zstd dictionary")
        );
        let bad: http::Uri = "/subscribe?cursor=soon".parse().unwrap();
        assert!(
            subscription(&bad, true)
                .unwrap_err()
                .contains("not a number")
        );
        let other: http::Uri = "/other".parse().unwrap();
        assert!(subscription(&other, true).is_err());
    }

    #[test]
    fn options_update_replaces_the_filter() {
        let f = Filter::from_options_update(
            r#"{"type":"options_update","payload":{"wantedCollections":["a.b.*"],"wantedDids":["did:plc:z"],"maxMessageSizeBytes":100}}"#,
        )
        .unwrap();
        assert_eq!(
            f,
            Filter::new(vec!["a.b.*".into()], vec!["did:plc:z".into()], 100).unwrap()
        );
        assert!(Filter::from_options_update(r#"{"type":"other"}"#).is_err());
    }
}
