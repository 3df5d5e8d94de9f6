//! From WebSocket frames to [`Message`]s: zstd decompression with the dictionary, size and
//! UTF-8 checks, and a cheap peek at `time_us`. No I/O, so it can be fuzzed and reused for
//! captures of compressed frames.

use bytes::Bytes;
use zstd::zstd_safe::{self, DCtx, InBuffer, OutBuffer, ResetDirective};

use crate::{Error, Message};

/// The largest event the client accepts, decompressed: 16 MiB. Jetstream events are a few
/// hundred bytes; records in the network are limited to about 1 MB. A larger message comes out
/// as [`Message::Malformed`] with reason `oversized` instead of being decompressed without
/// bound.
pub const MAX_EVENT_BYTES: usize = 16 << 20;

/// Turns frames into messages.
///
/// Text frames hold one JSON event. Binary frames hold one zstd frame compressed with the
/// Jetstream dictionary when the decoder has one, else (no compression asked for) JSON bytes.
/// Problems with one frame become a [`Message::Malformed`], never an error: the stream goes on.
///
/// ```
/// use firehose_jetstream::{FrameDecoder, Message};
/// let mut decoder = FrameDecoder::new(None)?;
/// let message = decoder.decode_text(r#"{"did":"did:plc:a","time_us":17,"kind":"account"}"#.into());
/// assert!(matches!(message, Message::Event { time_us: 17, .. }));
/// # Ok::<(), firehose_jetstream::Error>(())
/// ```
pub struct FrameDecoder {
    /// The decompression context with the dictionary loaded, when frames are compressed.
    zstd: Option<DCtx<'static>>,
}

impl std::fmt::Debug for FrameDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameDecoder")
            .field("zstd", &self.zstd.is_some())
            .finish()
    }
}

impl FrameDecoder {
    /// A decoder; with a dictionary, binary frames are zstd frames made with it.
    pub fn new(dictionary: Option<&[u8]>) -> Result<Self, Error> {
        let zstd = match dictionary {
            None => None,
            Some(dictionary) => {
                let mut dctx = DCtx::try_create().ok_or_else(|| Error::Dictionary {
                    reason: "cannot create a zstd decompression context".to_owned(),
                })?;
                dctx.load_dictionary(dictionary)
                    .map_err(|code| Error::Dictionary {
                        reason: zstd_safe::get_error_name(code).to_owned(),
                    })?;
                Some(dctx)
            }
        };
        Ok(FrameDecoder { zstd })
    }

    /// The message in a text frame.
    pub fn decode_text(&mut self, text: Bytes) -> Message {
        if text.len() > MAX_EVENT_BYTES {
            let size = text.len();
            return oversized(text, size);
        }
        event(own(text))
    }

    /// The message in a binary frame: decompressed when the decoder has a dictionary.
    pub fn decode_binary(&mut self, frame: Bytes) -> Message {
        let Some(dctx) = self.zstd.as_mut() else {
            if frame.len() > MAX_EVENT_BYTES {
                let size = frame.len();
                return oversized(frame, size);
            }
            return match std::str::from_utf8(&frame) {
                Ok(_) => event(own(frame)),
                Err(e) => malformed(frame, "utf8", e.to_string()),
            };
        };
        let json = match decompress(dctx, &frame) {
            Ok(json) => json,
            Err(Failure::Zstd(error)) => return malformed(frame, "zstd", error),
            Err(Failure::Oversized(size)) => return oversized(frame, size),
        };
        match std::str::from_utf8(&json) {
            Ok(_) => event(Bytes::from(json)),
            Err(e) => malformed(frame, "utf8", e.to_string()),
        }
    }
}

enum Failure {
    Zstd(String),
    Oversized(usize),
}

/// Decompresses exactly one zstd frame, bounded by [`MAX_EVENT_BYTES`].
fn decompress(dctx: &mut DCtx<'static>, frame: &[u8]) -> Result<Vec<u8>, Failure> {
    let zstd_error = |code| Failure::Zstd(zstd_safe::get_error_name(code).to_owned());
    let capacity = match zstd_safe::get_frame_content_size(frame) {
        Ok(Some(size)) if size > MAX_EVENT_BYTES as u64 => {
            return Err(Failure::Oversized(
                usize::try_from(size).unwrap_or(usize::MAX),
            ));
        }
        // The declared size is only a hint: the frame may lie, and the loop below checks.
        Ok(Some(size)) => usize::try_from(size).unwrap_or(MAX_EVENT_BYTES).max(1),
        Ok(None) => 4 * frame.len().max(256),
        Err(_) => return Err(Failure::Zstd("not a zstd frame".to_owned())),
    };
    // Each frame is a fresh session; the dictionary stays loaded.
    dctx.reset(ResetDirective::SessionOnly)
        .map_err(zstd_error)?;
    let mut out: Vec<u8> = Vec::with_capacity(capacity.min(MAX_EVENT_BYTES));
    let mut input = InBuffer::around(frame);
    loop {
        if out.len() == out.capacity() {
            if out.len() >= MAX_EVENT_BYTES {
                return Err(Failure::Oversized(out.len()));
            }
            let more = out.len().max(1024).min(MAX_EVENT_BYTES - out.len());
            out.reserve_exact(more);
        }
        let before = (input.pos(), out.len());
        // Writes after what is there, and sets the length to what it wrote.
        let mut output = OutBuffer::around_pos(&mut out, before.1);
        let hint = dctx
            .decompress_stream(&mut output, &mut input)
            .map_err(zstd_error)?;
        if hint == 0 {
            if input.pos() != frame.len() {
                return Err(Failure::Zstd("data after the end of the frame".to_owned()));
            }
            return Ok(out);
        }
        let stuck = (input.pos(), out.len()) == before;
        if stuck && out.len() < out.capacity() {
            return Err(Failure::Zstd("truncated frame".to_owned()));
        }
    }
}

/// The frame's bytes in an allocation of their own. A frame is a slice of the connection's read
/// buffer, which stays allocated as long as any slice of it lives: events that wait in a
/// buffer (for minutes, when the writer cannot store) would keep every read buffer they came
/// in alive, about twice the bytes the buffer's capacity counts (measured with `firehose run`
/// and the object store down: 2.0 MiB of memory per MiB buffered, 1.1 with the copy). The copy
/// costs a `memcpy` of a few hundred bytes per event.
fn own(frame: Bytes) -> Bytes {
    Bytes::copy_from_slice(&frame)
}

fn event(json: Bytes) -> Message {
    match peek_time_us(&json) {
        Some(time_us) => Message::Event { json, time_us },
        None => malformed(json, "json", "no top-level integer time_us".to_owned()),
    }
}

fn oversized(raw: Bytes, size: usize) -> Message {
    malformed(
        raw,
        "oversized",
        format!("the event has {size} bytes, more than the {MAX_EVENT_BYTES} accepted"),
    )
}

fn malformed(raw: Bytes, reason: &'static str, error: String) -> Message {
    Message::Malformed { raw, reason, error }
}

/// The top-level `"time_us"` of a JSON object, without parsing the rest.
///
/// Jetstream writes `time_us` second (`{"did":…,"time_us":…`), so the scan usually stops after
/// a few dozen bytes; other keys before it are skipped by a small scanner that understands
/// strings and nesting, not by searching the text (a record may contain the words `"time_us"`).
/// The object is not validated beyond that point: full decoding comes later. `None` when the
/// input is not an object or has no top-level integer `time_us`.
///
/// ```
/// use firehose_jetstream::peek_time_us;
/// assert_eq!(peek_time_us(br#"{"did":"did:plc:a","time_us":1725911162329308,"kind":"commit"}"#), Some(1725911162329308));
/// assert_eq!(peek_time_us(br#"{"commit":{"time_us":1},"time_us":2}"#), Some(2));
/// assert_eq!(peek_time_us(br#"{"time_us":1.5}"#), None);
/// ```
pub fn peek_time_us(json: &[u8]) -> Option<i64> {
    let mut s = Scanner { bytes: json, at: 0 };
    s.skip_ws();
    s.eat(b'{')?;
    loop {
        s.skip_ws();
        let key = s.string()?;
        s.skip_ws();
        s.eat(b':')?;
        s.skip_ws();
        if key == b"time_us" {
            return s.integer();
        }
        s.skip_value()?;
        s.skip_ws();
        s.eat(b',')?;
    }
}

struct Scanner<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.at += 1)
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    /// A string's raw contents (escapes left as they are).
    fn string(&mut self) -> Option<&'a [u8]> {
        self.eat(b'"')?;
        let start = self.at;
        loop {
            match self.peek()? {
                b'"' => {
                    self.at += 1;
                    return Some(&self.bytes[start..self.at - 1]);
                }
                b'\\' => self.at += 2,
                _ => self.at += 1,
            }
        }
    }

    /// An integer that ends where a JSON number would (not a fraction or exponent).
    fn integer(&mut self) -> Option<i64> {
        let start = self.at;
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        while self.peek()?.is_ascii_digit() {
            self.at += 1;
        }
        if !matches!(self.peek()?, b',' | b'}' | b' ' | b'\t' | b'\n' | b'\r') {
            return None;
        }
        std::str::from_utf8(&self.bytes[start..self.at])
            .ok()?
            .parse()
            .ok()
    }

    /// Skips one value: a string, an object or array (by nesting), or a scalar.
    fn skip_value(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(|_| ()),
            b'{' | b'[' => {
                let mut depth = 0usize;
                loop {
                    match self.peek()? {
                        b'"' => {
                            self.string()?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                self.at += 1;
                                return Some(());
                            }
                        }
                        _ => {}
                    }
                    self.at += 1;
                }
            }
            _ => {
                let start = self.at;
                while !matches!(
                    self.peek()?,
                    b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'
                ) {
                    self.at += 1;
                }
                (self.at > start).then_some(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peeks_time_us_past_nested_values_and_strings() {
        let cases: &[(&[u8], Option<i64>)] = &[
            (
                br#"{"did":"did:plc:x","time_us":42,"kind":"commit"}"#,
                Some(42),
            ),
            (br#" { "time_us" : -7 } "#, Some(-7)),
            (br#"{"a":"\"time_us\":1","time_us":3}"#, Some(3)),
            (
                br#"{"a":[{"time_us":1},"]"],"b":null,"c":true,"d":-1.5e3,"time_us":9}"#,
                Some(9),
            ),
            (
                br#"{"kind":"commit","commit":{"record":{"time_us":5}}}"#,
                None,
            ),
            (br#"{"time_us":"12"}"#, None),
            (br#"{"time_us":12"#, None),
            (br#"{"time_us":99999999999999999999}"#, None),
            (br#"{"time_us":1e3}"#, None),
            (br#"["time_us",1]"#, None),
            (b"", None),
            (br#"{"did":"did:plc:x"#, None),
            (br#"{"a":{"b":"}"#, None),
        ];
        for (json, expected) in cases {
            assert_eq!(
                peek_time_us(json),
                *expected,
                "{}",
                String::from_utf8_lossy(json)
            );
        }
    }

    #[test]
    fn agrees_with_a_full_parse_on_generated_events() {
        for json in firehose_synth::json_corpus(3, 2000) {
            let full: serde_json::Value = serde_json::from_str(&json).unwrap();
            assert_eq!(peek_time_us(json.as_bytes()), full["time_us"].as_i64());
        }
    }

    fn dictionary() -> Vec<u8> {
        let samples = firehose_synth::json_corpus(1, 3000);
        zstd::dict::from_samples(&samples, 16 * 1024).unwrap()
    }

    #[test]
    fn decompresses_frames_made_with_the_dictionary() {
        let dict = dictionary();
        let mut compressor = zstd::bulk::Compressor::with_dictionary(3, &dict).unwrap();
        let mut decoder = FrameDecoder::new(Some(&dict)).unwrap();
        for json in firehose_synth::json_corpus(2, 500) {
            let frame = compressor.compress(json.as_bytes()).unwrap();
            match decoder.decode_binary(frame.into()) {
                Message::Event { json: out, .. } => assert_eq!(out, json.as_bytes()),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn frames_without_a_declared_size_decompress_too() {
        let dict = dictionary();
        let json = firehose_synth::json_corpus(5, 1).remove(0);
        let mut encoder = zstd::stream::Encoder::with_dictionary(Vec::new(), 3, &dict).unwrap();
        encoder.include_contentsize(false).unwrap();
        std::io::Write::write_all(&mut encoder, json.as_bytes()).unwrap();
        let frame = encoder.finish().unwrap();
        assert!(matches!(
            zstd_safe::get_frame_content_size(&frame),
            Ok(None)
        ));
        let mut decoder = FrameDecoder::new(Some(&dict)).unwrap();
        match decoder.decode_binary(frame.into()) {
            Message::Event { json: out, .. } => assert_eq!(out, json.as_bytes()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn broken_frames_are_malformed_and_the_decoder_goes_on() {
        let dict = dictionary();
        let mut compressor = zstd::bulk::Compressor::with_dictionary(3, &dict).unwrap();
        let mut decoder = FrameDecoder::new(Some(&dict)).unwrap();
        let json = firehose_synth::json_corpus(4, 1).remove(0);
        let frame = compressor.compress(json.as_bytes()).unwrap();
        let reason = |m: Message| match m {
            Message::Malformed { reason, .. } => reason,
            Message::Event { .. } => "event",
        };
        let truncated = Bytes::copy_from_slice(&frame[..frame.len() / 2]);
        assert_eq!(reason(decoder.decode_binary(truncated)), "zstd");
        assert_eq!(
            reason(decoder.decode_binary(Bytes::from_static(b"{}"))),
            "zstd"
        );
        let mut trailing = frame.clone();
        trailing.extend_from_slice(&frame);
        assert_eq!(reason(decoder.decode_binary(trailing.into())), "zstd");
        // Made without the dictionary: the decoder cannot read it... or reads it, if the
        // frame does not reference the dictionary; either way it is not an error.
        let plain = zstd::bulk::compress(b"not json", 3).unwrap();
        assert_eq!(reason(decoder.decode_binary(plain.into())), "json");
        let big = zstd::bulk::compress(&vec![b' '; MAX_EVENT_BYTES + 1], 3).unwrap();
        assert_eq!(reason(decoder.decode_binary(big.into())), "oversized");
        let mut no_size = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
        no_size.include_contentsize(false).unwrap();
        std::io::Write::write_all(&mut no_size, &vec![b' '; MAX_EVENT_BYTES + 1]).unwrap();
        let no_size = no_size.finish().unwrap();
        assert_eq!(reason(decoder.decode_binary(no_size.into())), "oversized");
        // After all that, a good frame still decodes.
        assert_eq!(reason(decoder.decode_binary(frame.into())), "event");
    }

    #[test]
    fn events_do_not_hold_on_to_the_buffer_their_frame_came_in() {
        let mut decoder = FrameDecoder::new(None).unwrap();
        let ok = r#"{"did":"did:plc:a","time_us":5,"kind":"account"}"#;
        let mut read_buffer = ok.repeat(100).into_bytes();
        read_buffer.resize(64 * 1024, b' ');
        let read_buffer = Bytes::from(read_buffer);
        let within = |json: &Bytes| {
            let range = read_buffer.as_ptr_range();
            range.contains(&json.as_ptr())
        };
        for message in [
            decoder.decode_text(read_buffer.slice(0..ok.len())),
            decoder.decode_binary(read_buffer.slice(ok.len()..2 * ok.len())),
        ] {
            match message {
                Message::Event { json, time_us: 5 } => {
                    assert_eq!(json, ok.as_bytes());
                    assert!(!within(&json), "the event is a slice of the read buffer");
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn text_and_uncompressed_binary_frames() {
        let mut decoder = FrameDecoder::new(None).unwrap();
        let ok = r#"{"did":"did:plc:a","time_us":5,"kind":"account"}"#;
        assert!(matches!(
            decoder.decode_text(Bytes::from_static(ok.as_bytes())),
            Message::Event { time_us: 5, .. }
        ));
        assert!(matches!(
            decoder.decode_binary(Bytes::from_static(ok.as_bytes())),
            Message::Event { time_us: 5, .. }
        ));
        assert!(matches!(
            decoder.decode_binary(Bytes::from_static(b"{\"time_us\":5,\"x\":\"\xff\"}")),
            Message::Malformed { reason: "utf8", .. }
        ));
        assert!(matches!(
            decoder.decode_text(Bytes::from_static(b"{\"did\":")),
            Message::Malformed { reason: "json", .. }
        ));
    }
}
