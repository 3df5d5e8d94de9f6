//! Event keys as fixed-size fingerprints, and reading one from an event's JSON without
//! decoding the rest: what the pipeline needs to recognise a replayed event before it is
//! stored.
//!
//! ```
//! use firehose_core::{Event, key::peek};
//! let json = br#"{"did":"did:plc:a","time_us":1763596800000000,"kind":"commit","commit":{"rev":"3l","operation":"create","collection":"app.bsky.feed.like","rkey":"3k","record":{"$type":"app.bsky.feed.like","subject":{"uri":"at://x","cid":"y"},"createdAt":"2025-11-20T00:00:00Z"}}}"#;
//! let peeked = peek(json).unwrap();
//! assert_eq!(peeked.time_us, 1763596800000000);
//! // The same fingerprint as the decoded event's key.
//! assert_eq!(peeked.fingerprint, Event::decode(json).unwrap().key().fingerprint());
//! ```

use std::borrow::Cow;

use serde::Deserialize;

use crate::EventKey;

/// A 128-bit fingerprint of an [`EventKey`] (XXH3-128 of its fields, each preceded by its
/// length): two deliveries of the same event have the same fingerprint, and two different
/// events the same one with a chance of about 2^-128 per pair.
pub type Fingerprint = u128;

impl EventKey<'_> {
    /// The key's [`Fingerprint`].
    pub fn fingerprint(&self) -> Fingerprint {
        let mut bytes = Vec::with_capacity(128);
        let mut field = |value: &[u8]| {
            bytes.extend_from_slice(&(value.len() as u32).to_le_bytes());
            bytes.extend_from_slice(value);
        };
        match *self {
            EventKey::Commit {
                did,
                collection,
                rkey,
                rev,
            } => {
                field(b"c");
                field(did.as_bytes());
                field(collection.as_bytes());
                field(rkey.as_bytes());
                field(rev.as_bytes());
            }
            EventKey::Identity { did, time_us } => {
                field(b"i");
                field(did.as_bytes());
                field(&time_us.to_le_bytes());
            }
            EventKey::Account { did, time_us } => {
                field(b"a");
                field(did.as_bytes());
                field(&time_us.to_le_bytes());
            }
        }
        xxhash_rust::xxh3::xxh3_128(&bytes)
    }
}

/// What [`peek`] reads of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peeked {
    /// The event's `time_us`.
    pub time_us: i64,
    /// Its key's fingerprint.
    pub fingerprint: Fingerprint,
}

#[derive(Deserialize)]
struct Head<'a> {
    #[serde(borrow)]
    did: Cow<'a, str>,
    time_us: i64,
    #[serde(borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    commit: Option<CommitHead<'a>>,
}

#[derive(Deserialize)]
struct CommitHead<'a> {
    #[serde(borrow)]
    collection: Cow<'a, str>,
    #[serde(borrow)]
    rkey: Cow<'a, str>,
    #[serde(borrow)]
    rev: Cow<'a, str>,
}

/// The time and key fingerprint of the event in `json`, reading only the fields of the key
/// (the record is skipped, not decoded); `None` when `json` is not an event with a key, which
/// the writer will then report as it decodes.
pub fn peek(json: &[u8]) -> Option<Peeked> {
    let head: Head<'_> = serde_json::from_slice(json).ok()?;
    let key = match (head.kind.as_ref(), &head.commit) {
        ("commit", Some(c)) => EventKey::Commit {
            did: &head.did,
            collection: &c.collection,
            rkey: &c.rkey,
            rev: &c.rev,
        },
        ("identity", _) => EventKey::Identity {
            did: &head.did,
            time_us: head.time_us,
        },
        ("account", _) => EventKey::Account {
            did: &head.did,
            time_us: head.time_us,
        },
        _ => return None,
    };
    Some(Peeked {
        time_us: head.time_us,
        fingerprint: key.fingerprint(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Event;

    #[test]
    fn peek_agrees_with_the_decoded_key_for_every_kind() {
        let lines = [
            r#"{"did":"did:plc:a","time_us":5,"kind":"identity","identity":{"did":"did:plc:a","seq":1,"time":"t"}}"#,
            r#"{"did":"did:plc:a","time_us":6,"kind":"account","account":{"active":true,"did":"did:plc:a","seq":2,"time":"t"}}"#,
            r#"{"did":"did:plc:\u0061","time_us":7,"kind":"commit","commit":{"rev":"r","operation":"delete","collection":"x.y.z","rkey":"k"}}"#,
        ];
        for line in lines {
            let peeked = peek(line.as_bytes()).unwrap();
            let event = Event::decode(line.as_bytes()).unwrap();
            assert_eq!(peeked.fingerprint, event.key().fingerprint(), "{line}");
            assert_eq!(peeked.time_us, event.time_us);
        }
        assert!(peek(b"not json").is_none());
        assert!(peek(br#"{"did":"d","time_us":1,"kind":"commit"}"#).is_none());
    }

    #[test]
    fn fields_cannot_run_into_each_other() {
        let a = EventKey::Commit {
            did: "ab",
            collection: "c",
            rkey: "k",
            rev: "r",
        };
        let b = EventKey::Commit {
            did: "a",
            collection: "bc",
            rkey: "k",
            rev: "r",
        };
        assert_ne!(a.fingerprint(), b.fingerprint());
        let identity = EventKey::Identity {
            did: "d",
            time_us: 1,
        };
        let account = EventKey::Account {
            did: "d",
            time_us: 1,
        };
        assert_ne!(identity.fingerprint(), account.fingerprint());
    }
}
