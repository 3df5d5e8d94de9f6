//! Feeds arbitrary bytes to the Jetstream frame decoding: zstd frames with a dictionary, and
//! the `time_us` peek.
//!
//! No input may panic or decompress without bound. A frame that comes out as an event holds
//! valid UTF-8 whose peeked `time_us` is the one reported. The input, compressed with the
//! dictionary, must come back byte for byte when it is an event. And the peek must agree with
//! a full JSON parse whenever the input is a JSON object that names `time_us` once (without
//! escapes, where the two may legitimately differ).
#![no_main]

use std::sync::OnceLock;

use firehose_jetstream::{FrameDecoder, MAX_EVENT_BYTES, Message, peek_time_us};
use libfuzzer_sys::fuzz_target;

/// A raw-content dictionary: zstd accepts any bytes as one.
const DICTIONARY: &[u8] = br#"{"did":"did:plc:","time_us":17,"kind":"commit","commit":{"rev":"3l","operation":"create","collection":"app.bsky.feed.like","rkey":"3l","record":{"$type":"app.bsky.feed.like","createdAt":"2024-09-09T19:46:02.102Z","subject":{"cid":"bafyrei","uri":"at://did:plc:"}},"cid":"bafyrei"}}"#;

fn compressor() -> &'static std::sync::Mutex<zstd::bulk::Compressor<'static>> {
    static C: OnceLock<std::sync::Mutex<zstd::bulk::Compressor<'static>>> = OnceLock::new();
    C.get_or_init(|| {
        std::sync::Mutex::new(zstd::bulk::Compressor::with_dictionary(3, DICTIONARY).unwrap())
    })
}

fn check_event(message: &Message) {
    if let Message::Event { json, time_us } = message {
        assert!(json.len() <= MAX_EVENT_BYTES);
        assert!(std::str::from_utf8(json).is_ok(), "events are UTF-8");
        assert_eq!(peek_time_us(json), Some(*time_us));
    }
}

fuzz_target!(|data: &[u8]| {
    let mut decoder = FrameDecoder::new(Some(DICTIONARY)).unwrap();
    // As a compressed frame.
    check_event(&decoder.decode_binary(bytes::Bytes::copy_from_slice(data)));

    // Compressed, then decoded: the same bytes when they make an event.
    let frame = compressor().lock().unwrap().compress(data).unwrap();
    let message = decoder.decode_binary(frame.into());
    check_event(&message);
    let is_event = std::str::from_utf8(data).is_ok() && peek_time_us(data).is_some();
    match message {
        Message::Event { json, .. } => assert_eq!(&json[..], data),
        Message::Malformed { reason, error, .. } => {
            assert!(!is_event, "{reason}: {error}");
        }
    }

    // The peek agrees with a full parse.
    let once = data.windows(9).filter(|w| w == b"\"time_us\"").count() == 1;
    if once && !data.contains(&b'\\') {
        if let Ok(serde_json::Value::Object(object)) = serde_json::from_slice(data) {
            let full = object.get("time_us").and_then(serde_json::Value::as_i64);
            let integer = object.get("time_us").is_some_and(|v| v.is_i64());
            if integer {
                assert_eq!(peek_time_us(data), full);
            }
        }
    }
});
