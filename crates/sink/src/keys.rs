//! The keys of what is already stored: after a restart, the pipeline reads them for the time
//! its source will replay, so that replayed events already in Parquet are not stored again.

use arrow::array::{Array, AsArray};
use arrow::datatypes::Int64Type;
use firehose_core::key::Peeked;
use firehose_core::{EventKey, HOUR_US, Hour, PartitionKey, Table};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::storage::Storage;
use crate::{Error, Result};

/// Most hours read back from the resume point.
pub const MAX_HOURS: i64 = 72;

/// The time and key fingerprint of every stored event with `time_us >= since_us`, in every
/// keyed table (not dead letters), sorted by time. Hour partitions are read from `since_us`'s
/// hour on, up to `until_us`'s, and stop at the first hour after it where no table has a
/// file (what was stored after a checkpoint follows it without a gap), or after
/// [`MAX_HOURS`]. Only the key columns and `time_us` are read.
pub async fn stored_keys(
    storage: &dyn Storage,
    since_us: i64,
    until_us: i64,
) -> Result<Vec<Peeked>> {
    let first = Hour::of(since_us).start_us();
    let mut keys = Vec::new();
    for i in 0..MAX_HOURS {
        let hour_us = first + i * HOUR_US;
        if hour_us > until_us {
            break;
        }
        let mut files = 0;
        for table in Table::ALL {
            let prefix = format!("{}/", PartitionKey::new(table, hour_us).path());
            files += partition_keys(storage, table, &prefix, since_us, &mut keys).await?;
        }
        if files == 0 && i > 0 {
            break;
        }
    }
    keys.sort_unstable_by_key(|k| k.time_us);
    Ok(keys)
}

/// Adds the keys of one partition's files with `time_us >= since_us`; returns how many files
/// it read. A file deleted between the listing and its read (a writer joined it, compaction
/// replaced it: their outputs are stored first) makes it list the partition again.
async fn partition_keys(
    storage: &dyn Storage,
    table: Table,
    prefix: &str,
    since_us: i64,
    keys: &mut Vec<Peeked>,
) -> Result<usize> {
    let mut attempts = 0;
    'listing: loop {
        attempts += 1;
        let mut read = Vec::new();
        let mut files = 0;
        for object in storage.list(prefix).await? {
            if !object.path.ends_with(".parquet") {
                continue;
            }
            let data = match storage.get(&object.path).await {
                Ok(data) => data,
                Err(Error::NotFound { .. }) if attempts < 5 => continue 'listing,
                Err(e) => return Err(e),
            };
            files += 1;
            read_keys(table, &object.path, data, since_us, &mut read)?;
        }
        keys.append(&mut read);
        return Ok(files);
    }
}

/// The time and key fingerprint of every row of one Parquet file of `table`, in file order
/// (`path` names the file in errors): how a check counts the copies of each event stored.
pub fn file_keys(table: Table, path: &str, data: bytes::Bytes) -> Result<Vec<Peeked>> {
    let mut keys = Vec::new();
    read_keys(table, path, data, i64::MIN, &mut keys)?;
    Ok(keys)
}

/// Adds the keys of the rows of one file with `time_us >= since_us`.
fn read_keys(
    table: Table,
    path: &str,
    data: bytes::Bytes,
    since_us: i64,
    keys: &mut Vec<Peeked>,
) -> Result<()> {
    let error = |e: &dyn std::fmt::Display| Error::Read {
        path: path.to_owned(),
        reason: format!("its keys: {e}"),
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(data).map_err(|e| error(&e))?;
    let mut wanted: Vec<&str> = table.key_columns().to_vec();
    if !wanted.contains(&"time_us") {
        wanted.push("time_us");
    }
    let schema = builder.parquet_schema();
    let indices: Vec<usize> = wanted
        .iter()
        .map(|name| {
            (0..schema.num_columns())
                .find(|&i| schema.column(i).name() == *name)
                .ok_or_else(|| error(&format!("no column {name}")))
        })
        .collect::<Result<_>>()?;
    let mask = ProjectionMask::leaves(schema, indices);
    let reader = builder
        .with_projection(mask)
        .build()
        .map_err(|e| error(&e))?;
    for batch in reader {
        let batch = batch.map_err(|e| error(&e))?;
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .ok_or_else(|| error(&format!("no column {name}")))
        };
        let time = column("time_us")?
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| error(&"time_us is not Int64"))?;
        let strings = |name: &str| -> Result<Vec<Option<String>>> {
            let col = column(name)?;
            let col = arrow::compute::cast(col, &arrow::datatypes::DataType::Utf8)
                .map_err(|e| error(&e))?;
            let col = col.as_string::<i32>();
            Ok((0..col.len())
                .map(|i| col.is_valid(i).then(|| col.value(i).to_owned()))
                .collect())
        };
        let did = strings("did")?;
        let commit = match table {
            Table::Identity | Table::Account => None,
            _ => Some((
                match table.collection() {
                    Some(_) => None,
                    None => Some(strings("collection")?),
                },
                strings("rkey")?,
                strings("rev")?,
            )),
        };
        for row in 0..batch.num_rows() {
            let time_us = time.value(row);
            if time_us < since_us {
                continue;
            }
            let Some(did) = did[row].as_deref() else {
                continue;
            };
            let key = match &commit {
                None if table == Table::Identity => EventKey::Identity { did, time_us },
                None => EventKey::Account { did, time_us },
                Some((collections, rkey, rev)) => {
                    let collection = match collections {
                        Some(c) => c[row].as_deref(),
                        None => table.collection(),
                    };
                    let (Some(collection), Some(rkey), Some(rev)) =
                        (collection, rkey[row].as_deref(), rev[row].as_deref())
                    else {
                        continue;
                    };
                    EventKey::Commit {
                        did,
                        collection,
                        rkey,
                        rev,
                    }
                }
            };
            keys.push(Peeked {
                time_us,
                fingerprint: key.fingerprint(),
            });
        }
    }
    Ok(())
}
