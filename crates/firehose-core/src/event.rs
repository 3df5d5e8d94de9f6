//! The Jetstream v1 event envelope and its decoding.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::de::{CowStr, opt_str};
use crate::error::DecodeError;
use crate::record::Record;
use crate::table::Table;

/// How far ahead of the local clock an event's `time_us` may be and still count as a position
/// in the stream: one minute, far more than clocks kept by NTP drift apart.
///
/// Jetstream stamps each event with its own clock, so a much later `time_us` comes from a
/// broken or hostile server. Such an event is still stored (in the hour its time names), but it
/// must not move a cursor, a checkpoint or a watermark: every position after it would be in the
/// future, and a client resuming from there would skip everything up to that time.
pub const MAX_CLOCK_AHEAD_US: i64 = 60_000_000;

/// Whether an event at `time_us` may move a position in the stream at `now_us` (both Unix
/// microseconds): it is at most [`MAX_CLOCK_AHEAD_US`] ahead.
///
/// ```
/// use firehose_core::{MAX_CLOCK_AHEAD_US, time_us_is_plausible};
/// let now = 1_763_596_800_000_000;
/// assert!(time_us_is_plausible(now - 3_600_000_000, now));
/// assert!(time_us_is_plausible(now + MAX_CLOCK_AHEAD_US, now));
/// assert!(!time_us_is_plausible(4_102_444_800_000_000, now)); // 2100
/// ```
pub fn time_us_is_plausible(time_us: i64, now_us: i64) -> bool {
    time_us <= now_us.saturating_add(MAX_CLOCK_AHEAD_US)
}

/// One Jetstream event. Strings borrow from the decoded buffer where they can.
#[derive(Debug, Clone, PartialEq)]
pub struct Event<'a> {
    /// The repository (account) the event is about.
    pub did: Cow<'a, str>,
    /// When Jetstream saw the event, in microseconds since the Unix epoch. Also the cursor.
    pub time_us: i64,
    /// What happened.
    pub payload: Payload<'a>,
}

/// The body of an event, one per `kind`.
// Commits are nearly every event: boxing them would add an allocation to almost every decode
// to save memory on the rare identity and account events.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Payload<'a> {
    /// A record was created, updated or deleted.
    Commit(Commit<'a>),
    /// An identity (handle or DID document) changed.
    Identity(Identity<'a>),
    /// An account's hosting status changed.
    Account(Account<'a>),
}

/// `kind` of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `commit`.
    Commit,
    /// `identity`.
    Identity,
    /// `account`.
    Account,
}

impl Kind {
    /// The name Jetstream uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Commit => "commit",
            Kind::Identity => "identity",
            Kind::Account => "account",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A repository commit touching one record.
#[derive(Debug, Clone, PartialEq)]
pub struct Commit<'a> {
    /// The repository revision (TID).
    pub rev: Cow<'a, str>,
    /// Create, update or delete.
    pub operation: Operation,
    /// The record's collection NSID.
    pub collection: Cow<'a, str>,
    /// The record key.
    pub rkey: Cow<'a, str>,
    /// The record; `None` for deletes.
    pub record: Option<Record<'a>>,
    /// The record's CID; `None` for deletes.
    pub cid: Option<Cow<'a, str>>,
}

/// What a commit did to its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    /// A new record.
    Create,
    /// A record replaced.
    Update,
    /// A record removed.
    Delete,
}

impl Operation {
    /// The name Jetstream uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "create",
            Operation::Update => "update",
            Operation::Delete => "delete",
        }
    }
}

/// An identity event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity<'a> {
    /// The account.
    #[serde(borrow)]
    pub did: Cow<'a, str>,
    /// The account's handle, when it has a valid one.
    #[serde(default, borrow, deserialize_with = "opt_str")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handle: Option<Cow<'a, str>>,
    /// Relay sequence number.
    pub seq: i64,
    /// Relay timestamp (RFC 3339).
    #[serde(borrow)]
    pub time: Cow<'a, str>,
}

/// An account event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account<'a> {
    /// Whether the account is active.
    pub active: bool,
    /// The account.
    #[serde(borrow)]
    pub did: Cow<'a, str>,
    /// Relay sequence number.
    pub seq: i64,
    /// Relay timestamp (RFC 3339).
    #[serde(borrow)]
    pub time: Cow<'a, str>,
    /// Why an inactive account is inactive: `deactivated`, `takendown`, `suspended`,
    /// `deleted`, ...
    #[serde(default, borrow, deserialize_with = "opt_str")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Cow<'a, str>>,
}

/// The event as it is on the wire. `TYPED` selects how the record is read: see [`WireCommit`].
#[derive(Deserialize)]
struct WireEvent<'a, const TYPED: bool> {
    #[serde(borrow)]
    did: Cow<'a, str>,
    time_us: i64,
    #[serde(borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    commit: Option<WireCommit<'a, TYPED>>,
    #[serde(default, borrow)]
    identity: Option<Identity<'a>>,
    #[serde(default, borrow)]
    account: Option<Account<'a>>,
}

/// A commit as it is on the wire.
///
/// With `TYPED`, a record that follows its `collection` (Jetstream always writes `collection`
/// first) is parsed into its typed shape in the same pass, and a record that does not fit that
/// shape fails the whole parse. Without `TYPED`, the record is only located as raw JSON and
/// parsed afterwards by [`Record::parse`], which keeps records that do not fit as
/// [`Record::Other`]. [`Event::decode`] tries the single pass first and falls back.
struct WireCommit<'a, const TYPED: bool> {
    rev: Cow<'a, str>,
    operation: Operation,
    collection: Cow<'a, str>,
    rkey: Cow<'a, str>,
    record: Option<WireRecord<'a>>,
    cid: Option<Cow<'a, str>>,
}

enum WireRecord<'a> {
    Raw(&'a RawValue),
    Parsed(Record<'a>),
}

impl<'de: 'a, 'a, const TYPED: bool> Deserialize<'de> for WireCommit<'a, TYPED> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(CommitVisitor::<'a, TYPED>(PhantomData))
    }
}

struct CommitVisitor<'a, const TYPED: bool>(PhantomData<&'a ()>);

impl<'de: 'a, 'a, const TYPED: bool> Visitor<'de> for CommitVisitor<'a, TYPED> {
    type Value = WireCommit<'a, TYPED>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a commit object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        fn once<T, E: de::Error>(
            slot: &mut Option<T>,
            value: T,
            field: &'static str,
        ) -> Result<(), E> {
            if slot.replace(value).is_some() {
                return Err(E::duplicate_field(field));
            }
            Ok(())
        }
        let (mut rev, mut operation, mut collection, mut rkey) = (None, None, None, None);
        let (mut record, mut cid) = (None, None);
        while let Some(key) = map.next_key::<CowStr<'de>>()? {
            match key.0.as_ref() {
                "rev" => once(&mut rev, map.next_value::<CowStr<'de>>()?.0, "rev")?,
                "operation" => once(&mut operation, map.next_value::<Operation>()?, "operation")?,
                "collection" => once(
                    &mut collection,
                    map.next_value::<CowStr<'de>>()?.0,
                    "collection",
                )?,
                "rkey" => once(&mut rkey, map.next_value::<CowStr<'de>>()?.0, "rkey")?,
                "cid" => once(
                    &mut cid,
                    map.next_value::<Option<CowStr<'de>>>()?.map(|c| c.0),
                    "cid",
                )?,
                "record" => {
                    let value = match (&collection, TYPED) {
                        (Some(c), true) => map.next_value_seed(TypedRecord(c))?,
                        _ => map
                            .next_value::<Option<&'de RawValue>>()?
                            .map(WireRecord::Raw),
                    };
                    once(&mut record, value, "record")?
                }
                _ => {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
        }
        Ok(WireCommit {
            rev: rev.ok_or_else(|| de::Error::missing_field("rev"))?,
            operation: operation.ok_or_else(|| de::Error::missing_field("operation"))?,
            collection: collection.ok_or_else(|| de::Error::missing_field("collection"))?,
            rkey: rkey.ok_or_else(|| de::Error::missing_field("rkey"))?,
            record: record.flatten(),
            cid: cid.flatten(),
        })
    }
}

/// Reads a record of a known collection straight into its typed shape; other collections'
/// records as raw JSON.
struct TypedRecord<'c>(&'c str);

impl<'de> DeserializeSeed<'de> for TypedRecord<'_> {
    type Value = Option<WireRecord<'de>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for TypedRecord<'_> {
    type Value = Option<WireRecord<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a record")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        if Table::for_collection(self.0) == Table::Records {
            return Ok(Some(WireRecord::Raw(<&RawValue>::deserialize(d)?)));
        }
        Ok(Record::deserialize_typed(self.0, d)?.map(WireRecord::Parsed))
    }
}

impl<'a> Event<'a> {
    /// Decodes one Jetstream JSON event, borrowing from `input` where it can.
    ///
    /// Fails when the input is not JSON, lacks the envelope (`did`, `time_us`, `kind` and the
    /// object its kind names), or when `time_us` is negative. A record that does not fit the
    /// typed shape of its collection is not an error: it is kept as [`Record::Other`].
    ///
    /// ```
    /// use firehose_core::{Event, Payload, Record};
    ///
    /// let line = br#"{"did":"did:plc:abc","time_us":1732000000000000,"kind":"commit","commit":{"rev":"3lb","operation":"create","collection":"app.bsky.feed.like","rkey":"3lc","record":{"$type":"app.bsky.feed.like","subject":{"uri":"at://did:plc:x/app.bsky.feed.post/1","cid":"bafy"},"createdAt":"2024-11-19T07:06:40Z"},"cid":"bafz"}}"#;
    /// let event = Event::decode(line)?;
    /// let Payload::Commit(commit) = &event.payload else { unreachable!() };
    /// assert!(matches!(commit.record, Some(Record::Like(_))));
    /// assert_eq!(event.table().name(), "likes");
    /// # Ok::<(), firehose_core::DecodeError>(())
    /// ```
    pub fn decode(input: &'a [u8]) -> Result<Event<'a>, DecodeError> {
        // Validating UTF-8 once for the whole line is cheaper than serde_json's check of every
        // string it borrows, which `from_str` then skips.
        let text = std::str::from_utf8(input).map_err(|e| DecodeError::Utf8 {
            offset: e.valid_up_to(),
        })?;
        // serde's derived structs also accept a JSON array of the fields in order; an event
        // is an object, so refuse that shape before parsing.
        if text.trim_start().starts_with('[') {
            return Err(DecodeError::Envelope {
                reason: "an event must be a JSON object, not an array".into(),
            });
        }
        match serde_json::from_str::<WireEvent<'a, true>>(text) {
            Ok(wire) => Self::from_wire(wire),
            // Not an event, or a record that does not fit its typed shape: the second pass
            // tells which, and keeps such a record as JSON.
            Err(_) => Self::from_wire(
                serde_json::from_str::<WireEvent<'a, false>>(text)
                    .map_err(DecodeError::from_json)?,
            ),
        }
    }

    fn from_wire<const TYPED: bool>(wire: WireEvent<'a, TYPED>) -> Result<Event<'a>, DecodeError> {
        if wire.time_us < 0 {
            return Err(DecodeError::Envelope {
                reason: format!("time_us is negative ({})", wire.time_us),
            });
        }
        let payload = match (&*wire.kind, wire.commit, wire.identity, wire.account) {
            ("commit", Some(c), _, _) => Payload::Commit(Commit {
                record: c.record.map(|record| match record {
                    WireRecord::Parsed(record) => record,
                    WireRecord::Raw(raw) => Record::parse(&c.collection, raw.get()),
                }),
                rev: c.rev,
                operation: c.operation,
                collection: c.collection,
                rkey: c.rkey,
                cid: c.cid,
            }),
            ("identity", _, Some(i), _) => Payload::Identity(i),
            ("account", _, _, Some(a)) => Payload::Account(a),
            (kind @ ("commit" | "identity" | "account"), ..) => {
                return Err(DecodeError::Envelope {
                    reason: format!("kind is \"{kind}\" but the \"{kind}\" object is missing"),
                });
            }
            (kind, ..) => {
                return Err(DecodeError::Envelope {
                    reason: format!("unknown kind \"{}\"", truncate(kind, 64)),
                });
            }
        };
        Ok(Event {
            did: wire.did,
            time_us: wire.time_us,
            payload,
        })
    }

    /// The event's kind.
    pub fn kind(&self) -> Kind {
        match self.payload {
            Payload::Commit(_) => Kind::Commit,
            Payload::Identity(_) => Kind::Identity,
            Payload::Account(_) => Kind::Account,
        }
    }

    /// The commit, for commit events.
    pub fn commit(&self) -> Option<&Commit<'a>> {
        match &self.payload {
            Payload::Commit(c) => Some(c),
            _ => None,
        }
    }

    /// Encodes the event as Jetstream v1 JSON.
    pub fn to_json(&self) -> String {
        // Serialising an Event cannot fail (string keys only; Other records are checked JSON).
        serde_json::to_string(self).unwrap_or_default()
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

impl Serialize for Event<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(4))?;
        map.serialize_entry("did", &self.did)?;
        map.serialize_entry("time_us", &self.time_us)?;
        map.serialize_entry("kind", self.kind().as_str())?;
        match &self.payload {
            Payload::Commit(c) => map.serialize_entry("commit", &CommitOut(c))?,
            Payload::Identity(i) => map.serialize_entry("identity", i)?,
            Payload::Account(a) => map.serialize_entry("account", a)?,
        }
        map.end()
    }
}

struct CommitOut<'c, 'a>(&'c Commit<'a>);

impl Serialize for CommitOut<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let c = self.0;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("rev", &c.rev)?;
        map.serialize_entry("operation", &c.operation)?;
        map.serialize_entry("collection", &c.collection)?;
        map.serialize_entry("rkey", &c.rkey)?;
        if let Some(record) = &c.record {
            match record {
                Record::Post(r) => map.serialize_entry("record", r)?,
                Record::Like(r) | Record::Repost(r) => map.serialize_entry("record", r)?,
                Record::Follow(r) | Record::Block(r) => map.serialize_entry("record", r)?,
                Record::ListItem(r) => map.serialize_entry("record", r)?,
                Record::Profile(r) => map.serialize_entry("record", r)?,
                Record::Other(json) => {
                    let raw: Box<RawValue> = RawValue::from_string(json.to_string())
                        .map_err(serde::ser::Error::custom)?;
                    map.serialize_entry("record", &raw)?
                }
            }
        }
        if let Some(cid) = &c.cid {
            map.serialize_entry("cid", cid)?;
        }
        map.end()
    }
}
