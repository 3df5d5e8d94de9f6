//! Events to Arrow record batches, one per table.

use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Int32Builder, Int64Builder, ListBuilder, StringBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};

use crate::error::ArrowBuildError;
use crate::event::{Event, Payload};
use crate::record::{Blob, Record};
use crate::schema::{ColumnType, ENVELOPE, record_columns, schema};
use crate::table::Table;

/// Accumulates events into per-table columns; [`BatchBuilder::finish`] gives one
/// [`RecordBatch`] per table that received rows.
///
/// ```
/// use firehose_core::{BatchBuilder, Event, Table};
///
/// let line = br#"{"did":"did:plc:abc","time_us":1732000000000000,"kind":"identity","identity":{"did":"did:plc:abc","handle":"a.bsky.social","seq":7,"time":"2024-11-19T07:06:40Z"}}"#;
/// let mut builder = BatchBuilder::new();
/// builder.push(&Event::decode(line)?);
/// let batches = builder.finish()?;
/// assert_eq!(batches.len(), 1);
/// assert_eq!(batches[0].0, Table::Identity);
/// assert_eq!(batches[0].1.num_rows(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Default)]
pub struct BatchBuilder {
    tables: [Option<TableColumns>; Table::ALL.len()],
}

impl BatchBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one event as a row of its table.
    pub fn push(&mut self, event: &Event<'_>) {
        let table = event.table();
        let cols = self.tables[table.index()].get_or_insert_with(|| TableColumns::new(table));
        cols.push(event);
    }

    /// Rows accumulated for `table`.
    pub fn rows(&self, table: Table) -> usize {
        self.tables[table.index()].as_ref().map_or(0, |c| c.rows)
    }

    /// Rows accumulated across all tables.
    pub fn total_rows(&self) -> usize {
        self.tables.iter().flatten().map(|c| c.rows).sum()
    }

    /// One batch per table that has rows, in [`Table::ALL`] order.
    pub fn finish(self) -> Result<Vec<(Table, RecordBatch)>, ArrowBuildError> {
        self.tables
            .into_iter()
            .flatten()
            .map(|c| {
                let table = c.table;
                c.finish().map(|b| (table, b))
            })
            .collect()
    }
}

/// Converts `events` into one record batch per table.
pub fn record_batches(events: &[Event<'_>]) -> Result<Vec<(Table, RecordBatch)>, ArrowBuildError> {
    let mut builder = BatchBuilder::new();
    for event in events {
        builder.push(event);
    }
    builder.finish()
}

#[derive(Debug)]
enum Column {
    Str(StringBuilder),
    Int64(Int64Builder),
    Int32(Int32Builder),
    Bool(BooleanBuilder),
    StrList(ListBuilder<StringBuilder>),
}

impl Column {
    fn new(ty: ColumnType) -> Self {
        match ty {
            ColumnType::Str => Column::Str(StringBuilder::new()),
            ColumnType::Int64 => Column::Int64(Int64Builder::new()),
            ColumnType::Int32 => Column::Int32(Int32Builder::new()),
            ColumnType::Bool => Column::Bool(BooleanBuilder::new()),
            ColumnType::StrList => Column::StrList(ListBuilder::new(StringBuilder::new())),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Column::Str(b) => Arc::new(b.finish()),
            Column::Int64(b) => Arc::new(b.finish()),
            Column::Int32(b) => Arc::new(b.finish()),
            Column::Bool(b) => Arc::new(b.finish()),
            Column::StrList(b) => Arc::new(b.finish()),
        }
    }
}

#[derive(Debug)]
struct TableColumns {
    table: Table,
    columns: Vec<Column>,
    rows: usize,
}

/// Writes one row, column by column, in schema order.
struct Row<'c> {
    columns: std::slice::IterMut<'c, Column>,
}

impl Row<'_> {
    fn next(&mut self) -> Option<&mut Column> {
        let column = self.columns.next();
        debug_assert!(
            column.is_some(),
            "row has more values than the schema has columns"
        );
        column
    }

    fn str(&mut self, v: Option<&str>) {
        match self.next() {
            Some(Column::Str(b)) => b.append_option(v),
            other => mismatch(other),
        }
    }

    fn i64(&mut self, v: Option<i64>) {
        match self.next() {
            Some(Column::Int64(b)) => b.append_option(v),
            other => mismatch(other),
        }
    }

    fn i32(&mut self, v: Option<i32>) {
        match self.next() {
            Some(Column::Int32(b)) => b.append_option(v),
            other => mismatch(other),
        }
    }

    fn bool(&mut self, v: Option<bool>) {
        match self.next() {
            Some(Column::Bool(b)) => b.append_option(v),
            other => mismatch(other),
        }
    }

    /// A list column; `None` is a null list, `Some` of an empty iterator an empty one.
    fn list<'s>(&mut self, v: Option<impl Iterator<Item = &'s str>>) {
        match self.next() {
            Some(Column::StrList(b)) => match v {
                Some(items) => {
                    for item in items {
                        b.values().append_value(item);
                    }
                    b.append(true);
                }
                None => b.append(false),
            },
            other => mismatch(other),
        }
    }
}

/// A value of the wrong type for its column: a bug in this module, caught by the tests in debug
/// builds; release builds write a null so a batch is never lost over it.
fn mismatch(column: Option<&mut Column>) {
    debug_assert!(false, "schema and row writer disagree at {column:?}");
    match column {
        Some(Column::Str(b)) => b.append_null(),
        Some(Column::Int64(b)) => b.append_null(),
        Some(Column::Int32(b)) => b.append_null(),
        Some(Column::Bool(b)) => b.append_null(),
        Some(Column::StrList(b)) => b.append(false),
        None => {}
    }
}

impl TableColumns {
    fn new(table: Table) -> Self {
        let types = ENVELOPE
            .iter()
            .map(|&(_, ty, _)| ty)
            .chain(record_columns(table).iter().map(|&(_, ty)| ty));
        TableColumns {
            table,
            columns: types.map(Column::new).collect(),
            rows: 0,
        }
    }

    fn push(&mut self, event: &Event<'_>) {
        let mut row = Row {
            columns: self.columns.iter_mut(),
        };
        let commit = event.commit();
        row.str(Some(&event.did));
        row.i64(Some(event.time_us));
        row.str(Some(event.kind().as_str()));
        row.str(commit.map(|c| c.operation.as_str()));
        row.str(commit.map(|c| c.collection.as_ref()));
        row.str(commit.map(|c| c.rkey.as_ref()));
        row.str(commit.map(|c| c.rev.as_ref()));
        row.str(commit.and_then(|c| c.cid.as_deref()));
        let record = commit.and_then(|c| c.record.as_ref());
        match self.table {
            Table::Posts => {
                let p = match record {
                    Some(Record::Post(p)) => Some(p),
                    _ => None,
                };
                let reply = p.and_then(|p| p.reply.as_ref());
                row.str(p.and_then(|p| p.text.as_deref()));
                row.str(p.and_then(|p| p.created_at.as_deref()));
                row.list(
                    p.and_then(|p| p.langs.as_ref())
                        .map(|l| l.iter().map(|s| s.as_ref())),
                );
                row.str(reply.map(|r| r.root.uri.as_ref()));
                row.str(reply.map(|r| r.root.cid.as_ref()));
                row.str(reply.map(|r| r.parent.uri.as_ref()));
                row.str(reply.map(|r| r.parent.cid.as_ref()));
                row.str(p.and_then(|p| p.embed_kind()));
                row.str(p.and_then(|p| p.external_uri()));
                row.i32(
                    p.and_then(|p| p.image_count())
                        .map(|n| i32::try_from(n).unwrap_or(i32::MAX)),
                );
                row.str(p.and_then(|p| p.quoted_uri()));
                row.list(p.map(|p| p.mentions()));
                row.list(p.map(|p| p.links()));
                row.list(p.map(|p| p.facet_tags()));
                row.list(p.map(|p| p.label_values()));
                row.list(
                    p.and_then(|p| p.tags.as_ref())
                        .map(|l| l.iter().map(|s| s.as_ref())),
                );
            }
            Table::Likes | Table::Reposts => {
                let e = match record {
                    Some(Record::Like(e) | Record::Repost(e)) => Some(e),
                    _ => None,
                };
                let via = e.and_then(|e| e.via.as_ref());
                row.str(e.map(|e| e.subject.uri.as_ref()));
                row.str(e.map(|e| e.subject.cid.as_ref()));
                row.str(via.map(|v| v.uri.as_ref()));
                row.str(via.map(|v| v.cid.as_ref()));
                row.str(e.and_then(|e| e.created_at.as_deref()));
            }
            Table::Follows | Table::Blocks => {
                let e = match record {
                    Some(Record::Follow(e) | Record::Block(e)) => Some(e),
                    _ => None,
                };
                row.str(e.map(|e| e.subject.as_ref()));
                row.str(e.and_then(|e| e.created_at.as_deref()));
            }
            Table::ListItems => {
                let e = match record {
                    Some(Record::ListItem(e)) => Some(e),
                    _ => None,
                };
                row.str(e.map(|e| e.subject.as_ref()));
                row.str(e.map(|e| e.list.as_ref()));
                row.str(e.and_then(|e| e.created_at.as_deref()));
            }
            Table::Profiles => {
                let p = match record {
                    Some(Record::Profile(p)) => Some(p),
                    _ => None,
                };
                let pinned = p.and_then(|p| p.pinned_post.as_ref());
                row.str(p.and_then(|p| p.display_name.as_deref()));
                row.str(p.and_then(|p| p.description.as_deref()));
                row.str(p.and_then(|p| p.avatar.as_ref()).and_then(Blob::cid));
                row.str(p.and_then(|p| p.banner.as_ref()).and_then(Blob::cid));
                row.str(pinned.map(|r| r.uri.as_ref()));
                row.str(pinned.map(|r| r.cid.as_ref()));
                row.str(p.and_then(|p| p.created_at.as_deref()));
            }
            Table::Records => {
                let json = match record {
                    Some(Record::Other(json)) => Some(json.as_ref()),
                    _ => None,
                };
                row.str(json);
            }
            Table::Identity => {
                let i = match &event.payload {
                    Payload::Identity(i) => Some(i),
                    _ => None,
                };
                row.str(i.and_then(|i| i.handle.as_deref()));
                row.i64(i.map(|i| i.seq));
                row.str(i.map(|i| i.time.as_ref()));
            }
            Table::Account => {
                let a = match &event.payload {
                    Payload::Account(a) => Some(a),
                    _ => None,
                };
                row.bool(a.map(|a| a.active));
                row.str(a.and_then(|a| a.status.as_deref()));
                row.i64(a.map(|a| a.seq));
                row.str(a.map(|a| a.time.as_ref()));
            }
        }
        debug_assert!(
            row.columns.next().is_none(),
            "row has fewer values than the schema"
        );
        self.rows += 1;
    }

    fn finish(mut self) -> Result<RecordBatch, ArrowBuildError> {
        let columns: Vec<ArrayRef> = self.columns.iter_mut().map(Column::finish).collect();
        RecordBatch::try_new(schema(self.table), columns).map_err(|source| ArrowBuildError::Arrow {
            table: self.table.name(),
            source,
        })
    }
}
