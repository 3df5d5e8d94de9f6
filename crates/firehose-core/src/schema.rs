//! Arrow schemas, one per [`Table`].
//!
//! Every table starts with the envelope columns (`did, time_us, kind, operation, collection,
//! rkey, rev, cid`), so the tables can be queried together. Record columns are all nullable:
//! deletes keep their envelope with null record columns, and columns added later stay readable
//! in old files.

use std::sync::{Arc, OnceLock};

use arrow_schema::{DataType, Field, Schema, SchemaRef};

use crate::table::Table;

/// The type of a column, as the batch builder writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ColumnType {
    Str,
    Int64,
    Int32,
    Bool,
    StrList,
}

use ColumnType::{Bool, Int32, Int64, Str, StrList};

/// Envelope columns shared by every table: name, type, nullable.
pub(crate) const ENVELOPE: [(&str, ColumnType, bool); 8] = [
    ("did", Str, false),
    ("time_us", Int64, false),
    ("kind", Str, false),
    ("operation", Str, true),
    ("collection", Str, true),
    ("rkey", Str, true),
    ("rev", Str, true),
    ("cid", Str, true),
];

/// The names of the envelope columns, in order.
pub const ENVELOPE_COLUMNS: [&str; 8] = [
    "did",
    "time_us",
    "kind",
    "operation",
    "collection",
    "rkey",
    "rev",
    "cid",
];

/// The record columns of each table (all nullable), in the order the builder writes them.
pub(crate) fn record_columns(table: Table) -> &'static [(&'static str, ColumnType)] {
    match table {
        Table::Posts => &[
            ("text", Str),
            ("created_at", Str),
            ("langs", StrList),
            ("reply_root_uri", Str),
            ("reply_root_cid", Str),
            ("reply_parent_uri", Str),
            ("reply_parent_cid", Str),
            ("embed_kind", Str),
            ("embed_external_uri", Str),
            ("embed_image_count", Int32),
            ("embed_record_uri", Str),
            ("mentions", StrList),
            ("links", StrList),
            ("facet_tags", StrList),
            ("labels", StrList),
            ("tags", StrList),
        ],
        Table::Likes | Table::Reposts => &[
            ("subject_uri", Str),
            ("subject_cid", Str),
            ("via_uri", Str),
            ("via_cid", Str),
            ("created_at", Str),
        ],
        Table::Follows | Table::Blocks => &[("subject", Str), ("created_at", Str)],
        Table::ListItems => &[("subject", Str), ("list", Str), ("created_at", Str)],
        Table::Profiles => &[
            ("display_name", Str),
            ("description", Str),
            ("avatar_cid", Str),
            ("banner_cid", Str),
            ("pinned_post_uri", Str),
            ("pinned_post_cid", Str),
            ("created_at", Str),
        ],
        Table::Records => &[("record_json", Str)],
        Table::Identity => &[("handle", Str), ("seq", Int64), ("time", Str)],
        Table::Account => &[
            ("active", Bool),
            ("status", Str),
            ("seq", Int64),
            ("time", Str),
        ],
    }
}

impl ColumnType {
    pub(crate) fn data_type(self) -> DataType {
        match self {
            Str => DataType::Utf8,
            Int64 => DataType::Int64,
            Int32 => DataType::Int32,
            Bool => DataType::Boolean,
            StrList => DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
        }
    }
}

/// The Arrow schema of a table.
///
/// ```
/// use firehose_core::{Table, schema};
/// let posts = schema(Table::Posts);
/// assert_eq!(posts.field(0).name(), "did");
/// assert!(posts.field_with_name("text").unwrap().is_nullable());
/// ```
pub fn schema(table: Table) -> SchemaRef {
    static SCHEMAS: OnceLock<Vec<SchemaRef>> = OnceLock::new();
    let all = SCHEMAS.get_or_init(|| Table::ALL.iter().map(|&t| build_schema(t)).collect());
    Arc::clone(&all[table.index()])
}

fn build_schema(table: Table) -> SchemaRef {
    let envelope = ENVELOPE
        .iter()
        .map(|&(name, ty, nullable)| Field::new(name, ty.data_type(), nullable));
    let record = record_columns(table)
        .iter()
        .map(|&(name, ty)| Field::new(name, ty.data_type(), true));
    Arc::new(Schema::new(envelope.chain(record).collect::<Vec<_>>()))
}

/// The envelope columns alone, as a schema (what the tables have in common).
pub fn envelope_schema() -> SchemaRef {
    let fields: Vec<Field> = ENVELOPE
        .iter()
        .map(|&(name, ty, nullable)| Field::new(name, ty.data_type(), nullable))
        .collect();
    Arc::new(Schema::new(fields))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_starts_with_the_envelope() {
        for t in Table::ALL {
            let s = schema(t);
            let names: Vec<_> = s
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .take(8)
                .collect();
            assert_eq!(names, ENVELOPE_COLUMNS, "{t}");
            for f in s.fields().iter().skip(8) {
                assert!(f.is_nullable(), "{t}.{} must be nullable", f.name());
            }
        }
    }
}
