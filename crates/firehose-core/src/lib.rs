//! The firehose event model: Jetstream events, their typed records, the tables they are stored
//! in and the Arrow schemas of those tables. Types and parsing only; this crate does no I/O.
//!
//! ```
//! use firehose_core::{BatchBuilder, Event, PartitionKey, Record, Table};
//! let line = br#"{"did":"did:plc:abc","time_us":1763596800000000,"kind":"commit","commit":{"rev":"3lb","operation":"create","collection":"app.bsky.feed.post","rkey":"3lbx","record":{"$type":"app.bsky.feed.post","text":"hello","createdAt":"2025-11-20T00:00:00Z","langs":["en"]},"cid":"bafyrei"}}"#;
//! let event = Event::decode(line)?;
//! assert_eq!(event.table(), Table::Posts);
//! let commit = event.commit().expect("a commit");
//! assert!(matches!(&commit.record, Some(Record::Post(post)) if post.text.as_deref() == Some("hello")));
//! let key = PartitionKey::new(event.table(), event.time_us);
//! assert_eq!(key.path(), "posts/year=2025/month=11/day=20/hour=00");
//!
//! let mut builder = BatchBuilder::new();
//! builder.push(&event);
//! let batches = builder.finish()?;
//! assert_eq!(batches[0].0, Table::Posts);
//! assert_eq!(batches[0].1.num_rows(), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Layout
//!
//! - [`Event`] is one Jetstream v1 event: an envelope (`did`, `time_us`, `kind`) and a
//!   [`Payload`]: a [`Commit`], an [`Identity`] or an [`Account`] event.
//!   [`Event::decode`] parses one JSON line.
//! - [`Record`] is a commit's record: typed for the collections users query most
//!   ([`Post`], likes and reposts as [`Engagement`], follows and blocks as [`GraphEdge`],
//!   [`ListItem`], [`Profile`]), and the original JSON text for everything else.
//! - [`Table`] names the dataset's tables; [`schema`] gives each its Arrow schema, and
//!   [`BatchBuilder`] turns events into one [`arrow_array::RecordBatch`] per table.
//! - [`PartitionKey`] (table and UTC hour of `time_us`) says where an event's row is stored;
//!   [`EventKey`] identifies an event across Jetstream replays, for de-duplication.
//!
//! # Design
//!
//! A key design decision made in this crate is that **no event is ever dropped for its
//! content**. Jetstream carries new collections all the time (`fm.teal.*`, `place.stream.*`)
//! and records of known collections in shapes their lexicons do not promise. A record that
//! does not fit its typed shape is kept as [`Record::Other`] with its JSON text and stored in
//! the `records` table. Only input that is not an event at all (not JSON, no envelope) is an
//! error, a [`DecodeError`] that says what is wrong and where.
//!
//! Decoding borrows: strings without escapes are slices of the input buffer, so decoding a
//! like or a follow makes no allocation per field. The record is first located as raw JSON,
//! then parsed by its collection's type, which is what lets a failed typed parse keep the
//! exact original text.
#![deny(missing_docs)]

mod batch;
mod de;
mod error;
mod event;
pub mod key;
pub mod layout;
pub mod location;
pub mod record;
mod schema;
mod table;
pub mod units;

pub use batch::{BatchBuilder, record_batches};
pub use error::{ArrowBuildError, DecodeError};
pub use event::{
    Account, Commit, Event, Identity, Kind, MAX_CLOCK_AHEAD_US, Operation, Payload,
    time_us_is_plausible,
};
pub use record::{Engagement, GraphEdge, ListItem, Post, Profile, Record, StrongRef};
pub use schema::{ENVELOPE_COLUMNS, envelope_schema, schema};
pub use table::{EventKey, HOUR_US, Hour, PartitionKey, Table, UnknownTable};
