//! What one buffered line holds: an event's JSON as Jetstream sent it, or a message the source
//! could not turn into JSON (a corrupt zstd frame, an oversized message), kept for the
//! dead-letter table.
//!
//! JSON text never starts with a NUL byte, so a dead letter is framed as
//! `NUL <reason> NUL <received_us> NUL <error> NUL <raw bytes>` and everything else is an event.

use bytes::{BufMut, Bytes, BytesMut};
use firehose_sink::DeadLetter;

const MARK: u8 = 0;

/// Frames a dead letter as a buffer line.
pub fn encode_dead_letter(letter: &DeadLetter) -> Bytes {
    let mut line =
        BytesMut::with_capacity(letter.raw.len() + letter.reason.len() + letter.error.len() + 32);
    line.put_u8(MARK);
    line.put_slice(letter.reason.replace('\0', " ").as_bytes());
    line.put_u8(MARK);
    line.put_slice(letter.received_us.to_string().as_bytes());
    line.put_u8(MARK);
    line.put_slice(letter.error.replace('\0', " ").as_bytes());
    line.put_u8(MARK);
    line.put_slice(&letter.raw);
    line.freeze()
}

/// The dead letter a line frames, or `None` for an event line.
pub fn decode_dead_letter(line: &Bytes) -> Option<DeadLetter> {
    let rest = line.strip_prefix(&[MARK])?;
    let mut fields = rest.splitn(4, |&b| b == MARK);
    let reason = String::from_utf8_lossy(fields.next()?).into_owned();
    let received_us = std::str::from_utf8(fields.next()?).ok()?.parse().ok()?;
    let error = String::from_utf8_lossy(fields.next()?).into_owned();
    let raw_start = line.len() - fields.next()?.len();
    Some(DeadLetter {
        received_us,
        reason,
        error,
        raw: line.slice(raw_start..),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letters_round_trip_and_events_are_not_dead_letters() {
        let letter = DeadLetter {
            received_us: 1_763_600_000_000_000,
            reason: "zstd".into(),
            error: "unknown frame\0descriptor".into(),
            raw: Bytes::from_static(&[0x28, 0xb5, 0x2f, 0xfd, 0, 0, 1]),
        };
        let back = decode_dead_letter(&encode_dead_letter(&letter)).unwrap();
        assert_eq!(back.raw, letter.raw);
        assert_eq!(back.reason, "zstd");
        assert_eq!(back.error, "unknown frame descriptor");
        assert_eq!(back.received_us, letter.received_us);
        assert!(decode_dead_letter(&Bytes::from_static(br#"{"did":"x"}"#)).is_none());
        assert!(decode_dead_letter(&Bytes::from_static(b"\0zstd\0notanumber\0e\0r")).is_none());
    }
}
