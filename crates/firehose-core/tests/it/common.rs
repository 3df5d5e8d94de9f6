//! Fixture loading and Arrow column access shared by the tests.

use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type};
use arrow_array::{Array, RecordBatch};
use firehose_core::{Event, Table, record_batches};

/// One line of a `.cases` fixture: `EXPECTED<TAB>DESCRIPTION<TAB>INPUT`.
#[derive(Debug, Clone)]
pub(crate) struct Case {
    /// The expected table (valid cases) or error category (invalid cases).
    pub(crate) expect: String,
    pub(crate) desc: String,
    /// The input bytes exactly as in the file (they need not be UTF-8).
    pub(crate) input: Vec<u8>,
    /// 1-based line number in the file.
    pub(crate) line: usize,
}

pub(crate) fn fixture_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Every case of a `.cases` file; `#` lines are comments.
pub(crate) fn cases(name: &str) -> Vec<Case> {
    let path = fixture_path(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let body = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    body.split(|&b| b == b'\n')
        .enumerate()
        .filter(|(_, l)| !l.starts_with(b"#"))
        .map(|(i, l)| {
            let mut parts = l.splitn(3, |&b| b == b'\t');
            let mut field = || {
                parts
                    .next()
                    .unwrap_or_else(|| panic!("{name}:{}: not EXPECTED<TAB>DESC<TAB>INPUT", i + 1))
            };
            let expect = String::from_utf8(field().to_vec()).expect("expected is UTF-8");
            let desc = String::from_utf8(field().to_vec()).expect("description is UTF-8");
            let input = field().to_vec();
            Case {
                expect,
                desc,
                input,
                line: i + 1,
            }
        })
        .collect()
}

/// The valid case with this description.
pub(crate) fn valid(desc: &str) -> Case {
    cases("valid.cases")
        .into_iter()
        .find(|c| c.desc == desc)
        .unwrap_or_else(|| panic!("no valid case {desc:?}"))
}

/// Converts one event and returns its only batch, checking it has one row.
pub(crate) fn one_row(event: &Event<'_>) -> (Table, RecordBatch) {
    let mut batches = record_batches(std::slice::from_ref(event)).expect("arrow conversion");
    assert_eq!(batches.len(), 1, "one event gives one batch");
    let (table, batch) = batches.remove(0);
    assert_eq!(batch.num_rows(), 1);
    assert_eq!(table, event.table());
    (table, batch)
}

fn column<'b>(batch: &'b RecordBatch, name: &str) -> &'b dyn Array {
    batch
        .column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name} in {:?}", batch.schema()))
        .as_ref()
}

/// A Utf8 cell; `None` when null.
pub(crate) fn str_at(batch: &RecordBatch, name: &str, row: usize) -> Option<String> {
    let a = column(batch, name).as_string::<i32>();
    a.is_valid(row).then(|| a.value(row).to_owned())
}

/// An Int64 cell.
pub(crate) fn i64_at(batch: &RecordBatch, name: &str, row: usize) -> Option<i64> {
    let a = column(batch, name).as_primitive::<Int64Type>();
    a.is_valid(row).then(|| a.value(row))
}

/// An Int32 cell.
pub(crate) fn i32_at(batch: &RecordBatch, name: &str, row: usize) -> Option<i32> {
    let a = column(batch, name).as_primitive::<Int32Type>();
    a.is_valid(row).then(|| a.value(row))
}

/// A Boolean cell.
pub(crate) fn bool_at(batch: &RecordBatch, name: &str, row: usize) -> Option<bool> {
    let a = column(batch, name).as_boolean();
    a.is_valid(row).then(|| a.value(row))
}

/// A List<Utf8> cell; `None` when the list is null.
pub(crate) fn list_at(batch: &RecordBatch, name: &str, row: usize) -> Option<Vec<String>> {
    let a = column(batch, name).as_list::<i32>();
    a.is_valid(row).then(|| {
        let values = a.value(row);
        let values = values.as_string::<i32>();
        (0..values.len())
            .map(|i| values.value(i).to_owned())
            .collect()
    })
}

/// Shorthand for a list of owned strings.
pub(crate) fn strings(items: &[&str]) -> Option<Vec<String>> {
    Some(items.iter().map(|s| (*s).to_owned()).collect())
}
