//! One Arrow record batch to the bytes of one Parquet file.

use std::fmt;
use std::str::FromStr;

use arrow_array::RecordBatch;
use bytes::Bytes;
use firehose_core::layout::{DUPLICATE_FREE_KEY, DUPLICATE_FREE_VALUE};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Encoding, GzipLevel, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

/// Parquet compression codec.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Compression {
    /// zstd (the default): the best size for this data at a speed that keeps up.
    #[default]
    Zstd,
    /// Snappy: faster, larger.
    Snappy,
    /// gzip: smaller than snappy, slow.
    Gzip,
    /// LZ4 (raw).
    Lz4,
    /// No compression.
    None,
}

impl Compression {
    /// The name used on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Zstd => "zstd",
            Compression::Snappy => "snappy",
            Compression::Gzip => "gzip",
            Compression::Lz4 => "lz4",
            Compression::None => "none",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Compression {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            Compression::Zstd,
            Compression::Snappy,
            Compression::Gzip,
            Compression::Lz4,
            Compression::None,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
        .ok_or_else(|| {
            format!("unknown compression {s:?} (expected zstd, snappy, gzip, lz4 or none)")
        })
    }
}

/// How files are encoded.
#[derive(Debug, Clone)]
pub struct ParquetOptions {
    /// The codec.
    pub compression: Compression,
    /// zstd level (1 to 22). Level 1 by default: on the generated corpus it is both the
    /// fastest and, at 21.2% of the JSON against 21.5% for level 3 and 21.3% for level 9, not
    /// larger (most of the bytes are CIDs, DIDs and URIs, random strings that no level
    /// compresses).
    pub zstd_level: i32,
    /// Largest dictionary per column chunk before the column falls back to plain encoding
    /// (8 MiB by default, the parquet crate's is 1 MiB): an hour of `did`s or subject URIs
    /// does not fit in 1 MiB, and the fallback costs about 1% of the size.
    pub dictionary_page_size_limit: usize,
    /// Rows per row group at most. Row groups are the unit engines skip with statistics and
    /// read in parallel; 128 Ki rows of this data is a few MB compressed.
    pub max_row_group_rows: usize,
    /// Mark the files duplicate-free ([`DUPLICATE_FREE_KEY`] in the key-value metadata), for
    /// the query facade to read them without de-duplication. Off by default: set it only for
    /// events known to be in no other marked file and not twice in the batch, as the
    /// pipeline's writer does for batches its ingest vouched replay-free.
    ///
    /// [`DUPLICATE_FREE_KEY`]: firehose_core::layout::DUPLICATE_FREE_KEY
    pub duplicate_free: bool,
}

impl Default for ParquetOptions {
    fn default() -> Self {
        ParquetOptions {
            compression: Compression::Zstd,
            zstd_level: 1,
            dictionary_page_size_limit: 8 << 20,
            max_row_group_rows: 128 * 1024,
            duplicate_free: false,
        }
    }
}

impl ParquetOptions {
    /// The parquet crate's writer properties for these options: the codec, column statistics
    /// down to the page level (which writes the column and offset index), dictionaries.
    pub fn writer_properties(&self) -> Result<WriterProperties, ParquetError> {
        let codec = match self.compression {
            Compression::Zstd => {
                parquet::basic::Compression::ZSTD(ZstdLevel::try_new(self.zstd_level)?)
            }
            Compression::Snappy => parquet::basic::Compression::SNAPPY,
            Compression::Gzip => parquet::basic::Compression::GZIP(GzipLevel::default()),
            Compression::Lz4 => parquet::basic::Compression::LZ4_RAW,
            Compression::None => parquet::basic::Compression::UNCOMPRESSED,
        };
        let mut builder = WriterProperties::builder()
            .set_compression(codec)
            .set_statistics_enabled(EnabledStatistics::Page)
            .set_max_row_group_row_count(Some(self.max_row_group_rows.max(1)))
            .set_dictionary_page_size_limit(self.dictionary_page_size_limit.max(1))
            .set_created_by(format!("firehose {}", env!("CARGO_PKG_VERSION")));
        // Rows arrive in (nearly) time order, so these columns change little from one row to
        // the next: times as small deltas, TIDs and timestamps as strings sharing a long
        // prefix with the previous value. Delta encodings store exactly that; dictionaries
        // (the default) cannot, since nearly every value is distinct.
        for (column, encoding) in [
            ("time_us", Encoding::DELTA_BINARY_PACKED),
            ("seq", Encoding::DELTA_BINARY_PACKED),
            ("rev", Encoding::DELTA_BYTE_ARRAY),
            ("rkey", Encoding::DELTA_BYTE_ARRAY),
            ("created_at", Encoding::DELTA_BYTE_ARRAY),
            ("time", Encoding::DELTA_BYTE_ARRAY),
        ] {
            let path = ColumnPath::from(column);
            builder = builder
                .set_column_dictionary_enabled(path.clone(), false)
                .set_column_encoding(path, encoding);
        }
        // A record's own CID is the hash of a new record: no two rows of a file share one
        // (duplicates aside), so a dictionary only adds a 2-byte index to every value and the
        // time to hash it (1.5% of the size on the generated corpus). CIDs of subjects repeat
        // (the likes of one post) and keep theirs.
        builder = builder.set_column_dictionary_enabled(ColumnPath::from("cid"), false);
        if self.duplicate_free {
            builder = builder.set_key_value_metadata(Some(vec![KeyValue::new(
                DUPLICATE_FREE_KEY.to_owned(),
                DUPLICATE_FREE_VALUE.to_owned(),
            )]));
        }
        Ok(builder.build())
    }
}

/// Whether a Parquet file's key-value metadata holds the duplicate-free mark
/// ([`ParquetOptions::duplicate_free`]).
pub fn is_marked_duplicate_free(metadata: &parquet::file::metadata::ParquetMetaData) -> bool {
    metadata
        .file_metadata()
        .key_value_metadata()
        .is_some_and(|kv| {
            firehose_core::layout::has_duplicate_free_mark(
                kv.iter().map(|e| (e.key.as_str(), e.value.as_deref())),
            )
        })
}

/// Whether the Parquet file `file` carries the duplicate-free mark (reads its footer).
pub fn file_is_marked_duplicate_free(file: Bytes) -> Result<bool, ParquetError> {
    let metadata = parquet::file::metadata::ParquetMetaDataReader::new().parse_and_finish(&file)?;
    Ok(is_marked_duplicate_free(&metadata))
}

/// Encodes `batch` as a complete Parquet file.
///
/// ```
/// use std::sync::Arc;
/// use arrow_array::{Int64Array, RecordBatch};
/// use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
/// use firehose_sink::{ParquetOptions, encode};
///
/// let batch = RecordBatch::try_from_iter([("n", Arc::new(Int64Array::from(vec![1, 2, 3])) as _)])?;
/// let file = encode(&batch, &ParquetOptions::default())?;
/// let read: Vec<_> = ParquetRecordBatchReaderBuilder::try_new(file)?.build()?.collect::<Result<_, _>>()?;
/// assert_eq!(read, [batch]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn encode(batch: &RecordBatch, options: &ParquetOptions) -> Result<Bytes, ParquetError> {
    let mut out = Vec::with_capacity(batch.get_array_memory_size() / 4 + 4096);
    let mut writer =
        ArrowWriter::try_new(&mut out, batch.schema(), Some(options.writer_properties()?))?;
    writer.write(batch)?;
    writer.close()?;
    Ok(Bytes::from(out))
}
