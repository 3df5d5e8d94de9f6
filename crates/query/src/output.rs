//! Writing results: a table for people; CSV, JSON lines, Arrow IPC or Parquet for programs.

use std::fmt;
use std::io::Write;
use std::str::FromStr;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::{Error, Result, Rows};

/// An output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// An aligned text table, for people.
    Table,
    /// CSV with a header line; list columns as `[a, b]`.
    Csv,
    /// One JSON object per row, per line (nulls written as `null`).
    Json,
    /// One JSON array of row objects.
    JsonArray,
    /// An Arrow IPC stream.
    Arrow,
    /// A Parquet file.
    Parquet,
}

impl Format {
    /// Every format, for help texts.
    pub const ALL: [Format; 6] = [
        Format::Table,
        Format::Csv,
        Format::Json,
        Format::JsonArray,
        Format::Arrow,
        Format::Parquet,
    ];

    /// The name used in `--format` and `?format=`.
    pub fn name(self) -> &'static str {
        match self {
            Format::Table => "table",
            Format::Csv => "csv",
            Format::Json => "json",
            Format::JsonArray => "json-array",
            Format::Arrow => "arrow",
            Format::Parquet => "parquet",
        }
    }

    /// The HTTP content type.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Table => "text/plain; charset=utf-8",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Json => "application/x-ndjson",
            Format::JsonArray => "application/json",
            Format::Arrow => "application/vnd.apache.arrow.stream",
            Format::Parquet => "application/vnd.apache.parquet",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Format {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Format::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| Error::InvalidArgument {
                what: "format",
                reason: format!("{s:?}: use table, csv, json, json-array, arrow or parquet"),
            })
    }
}

fn output_error(e: impl fmt::Display) -> Error {
    Error::Output(e.to_string())
}

/// Writes `rows` in `format` to the file at `path` (created or truncated), or to standard
/// output when there is none.
pub fn write_to(format: Format, rows: &Rows, path: Option<&std::path::Path>) -> Result<()> {
    match path {
        Some(path) => std::fs::File::create(path)
            .map_err(|e| Error::Output(format!("{}: {e}", path.display())))
            .and_then(|f| write(format, rows, std::io::BufWriter::new(f))),
        None => {
            let mut out = std::io::BufWriter::new(std::io::stdout());
            write(format, rows, &mut out)?;
            out.flush()
                .map_err(|e| Error::Output(format!("standard output: {e}")))
        }
    }
}

/// Writes `rows` to `out` in `format`.
pub fn write<W: Write + Send>(format: Format, rows: &Rows, mut out: W) -> Result<()> {
    match format {
        Format::Table => {
            let table = datafusion::arrow::util::pretty::pretty_format_batches_with_schema(
                Arc::clone(&rows.schema),
                &rows.batches,
            )
            .map_err(output_error)?;
            writeln!(out, "{table}").map_err(output_error)?;
            let n = rows.num_rows();
            writeln!(out, "{n} row{}", if n == 1 { "" } else { "s" }).map_err(output_error)
        }
        Format::Csv => {
            let (schema, batches) = flatten_nested(rows).map_err(output_error)?;
            let mut writer = datafusion::arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut out);
            if batches.is_empty() {
                // The header alone.
                writer
                    .write(&RecordBatch::new_empty(schema))
                    .map_err(output_error)?;
            }
            for b in &batches {
                writer.write(b).map_err(output_error)?;
            }
            Ok(())
        }
        Format::Json => {
            let mut writer = datafusion::arrow::json::WriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, datafusion::arrow::json::writer::LineDelimited>(&mut out);
            for b in &rows.batches {
                writer.write(b).map_err(output_error)?;
            }
            writer.finish().map_err(output_error)
        }
        Format::JsonArray => {
            let mut writer = datafusion::arrow::json::WriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, datafusion::arrow::json::writer::JsonArray>(&mut out);
            for b in &rows.batches {
                writer.write(b).map_err(output_error)?;
            }
            writer.finish().map_err(output_error)
        }
        Format::Arrow => {
            let mut writer =
                datafusion::arrow::ipc::writer::StreamWriter::try_new(&mut out, &rows.schema)
                    .map_err(output_error)?;
            for b in &rows.batches {
                writer.write(b).map_err(output_error)?;
            }
            writer.finish().map_err(output_error)
        }
        Format::Parquet => {
            let mut writer =
                parquet::arrow::ArrowWriter::try_new(&mut out, Arc::clone(&rows.schema), None)
                    .map_err(output_error)?;
            for b in &rows.batches {
                writer.write(b).map_err(output_error)?;
            }
            writer.close().map_err(output_error)?;
            Ok(())
        }
    }
}

/// Writes `rows` in `format` into a new buffer.
pub fn to_bytes(format: Format, rows: &Rows) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    write(format, rows, &mut buf)?;
    Ok(buf)
}

/// CSV has no nested values: list and struct columns become their text form.
fn flatten_nested(rows: &Rows) -> Result<(SchemaRef, Vec<RecordBatch>), ArrowError> {
    let nested = |t: &DataType| t.is_nested();
    if !rows.schema.fields().iter().any(|f| nested(f.data_type())) {
        return Ok((Arc::clone(&rows.schema), rows.batches.clone()));
    }
    let schema: SchemaRef = Arc::new(Schema::new(
        rows.schema
            .fields()
            .iter()
            .map(|f| {
                if nested(f.data_type()) {
                    Field::new(f.name(), DataType::Utf8, true)
                } else {
                    f.as_ref().clone()
                }
            })
            .collect::<Vec<_>>(),
    ));
    let options = FormatOptions::default();
    let batches = rows
        .batches
        .iter()
        .map(|b| {
            let columns = b
                .columns()
                .iter()
                .map(|c| -> Result<ArrayRef, ArrowError> {
                    if !nested(c.data_type()) {
                        return Ok(Arc::clone(c));
                    }
                    let formatter = ArrayFormatter::try_new(c.as_ref(), &options)?;
                    let mut text = StringBuilder::new();
                    for i in 0..c.len() {
                        if c.is_null(i) {
                            text.append_null();
                        } else {
                            text.append_value(formatter.value(i).to_string());
                        }
                    }
                    Ok(Arc::new(text.finish()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            RecordBatch::try_new(Arc::clone(&schema), columns)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((schema, batches))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, ListBuilder, StringArray};

    fn rows() -> Rows {
        let mut langs = ListBuilder::new(StringBuilder::new());
        langs.values().append_value("en");
        langs.values().append_value("de");
        langs.append(true);
        langs.append(false);
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, false),
            Field::new("text", DataType::Utf8, true),
            Field::new(
                "langs",
                DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
                true,
            ),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Int64Array::from(vec![1, 2])),
                Arc::new(StringArray::from(vec![Some("a \"quoted\", text"), None])),
                Arc::new(langs.finish()),
            ],
        )
        .unwrap();
        Rows {
            schema,
            batches: vec![batch],
        }
    }

    fn text(format: Format, rows: &Rows) -> String {
        String::from_utf8(to_bytes(format, rows).unwrap()).unwrap()
    }

    #[test]
    fn formats() {
        let r = rows();
        assert_eq!(
            text(Format::Csv, &r),
            "n,text,langs\n1,\"a \"\"quoted\"\", text\",\"[en, de]\"\n2,,\n"
        );
        assert_eq!(
            text(Format::Json, &r),
            "{\"n\":1,\"text\":\"a \\\"quoted\\\", text\",\"langs\":[\"en\",\"de\"]}\n\
             {\"n\":2,\"text\":null,\"langs\":null}\n"
        );
        let array: serde_json::Value = serde_json::from_str(&text(Format::JsonArray, &r)).unwrap();
        assert_eq!(array[1]["n"], 2);
        let table = text(Format::Table, &r);
        assert!(
            table.contains("| n | text") && table.ends_with("2 rows\n"),
            "{table}"
        );
        let ipc = to_bytes(Format::Arrow, &r).unwrap();
        let reader =
            datafusion::arrow::ipc::reader::StreamReader::try_new(ipc.as_slice(), None).unwrap();
        let back: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
        assert_eq!(back, r.batches);
        let parquet = bytes::Bytes::from(to_bytes(Format::Parquet, &r).unwrap());
        let reader =
            parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(parquet, 1024).unwrap();
        assert_eq!(reader.map(|b| b.unwrap().num_rows()).sum::<usize>(), 2);
    }

    #[test]
    fn empty_results_keep_their_shape() {
        let r = Rows {
            schema: rows().schema,
            batches: vec![],
        };
        assert_eq!(text(Format::Csv, &r), "n,text,langs\n");
        assert_eq!(text(Format::Json, &r), "");
        assert_eq!(text(Format::JsonArray, &r).trim(), "[]");
        assert!(text(Format::Table, &r).ends_with("0 rows\n"));
    }

    #[test]
    fn names_parse() {
        for f in Format::ALL {
            assert_eq!(f.name().parse::<Format>().unwrap(), f);
        }
        assert!("xml".parse::<Format>().is_err());
    }
}
