//! The dataset contract: the names the writer, compaction and every reader agree on. One
//! owner, so that what the sink writes is what the query side recognises.
//!
//! - `<table>/year=YYYY/month=MM/day=DD/hour=HH/<name>.parquet`: [`PartitionKey::path`]
//!   (dead letters too, under [`DEAD_LETTER_TABLE`]).
//! - A batch's files are `<first id>_<last id>.parquet`; compaction's outputs are
//!   [`compacted_file_name`], and a partition whose files are all outputs of one compaction
//!   ([`is_compacted_partition`]) holds no duplicate.
//! - A writer joins its own marked files of a partition into [`merged_file_name`]s, which list
//!   the batch files they hold ([`MERGED_FROM_KEY`]); marked files whose batches are all
//!   different ([`origins_overlap`]) hold no duplicate.
//! - The event key, per table: [`Table::key_columns`].
//! - The cursor checkpoint of `firehose run`: [`CHECKPOINT_PATH`].
//!
//! ```
//! use firehose_core::layout::{compacted_file_name, is_compacted_partition};
//! let outputs = [compacted_file_name("9f2c", 1), compacted_file_name("9f2c", 2)];
//! assert_eq!(outputs[0], "compact-9f2c-0001.parquet");
//! assert!(is_compacted_partition(outputs.iter().map(String::as_str)));
//! assert!(!is_compacted_partition(["compact-9f2c-0001.parquet", "17-0_18-0.parquet"].into_iter()));
//! ```

use crate::{Hour, PartitionKey, Table};

/// Where `firehose run` keeps its cursor checkpoint, relative to the dataset root.
pub const CHECKPOINT_PATH: &str = "_firehose/checkpoint.json";

/// The table of messages that failed to decode (not one of [`Table::ALL`]: its columns are
/// its own), partitioned by hour like the others.
pub const DEAD_LETTER_TABLE: &str = "dead_letters";

/// Compaction's outputs start with this.
pub const COMPACTED_PREFIX: &str = "compact-";

/// The Parquet key-value metadata key of the duplicate-free mark, with the value
/// [`DUPLICATE_FREE_VALUE`]: the writer vouches that no event of the file is twice in it, or in
/// another marked file that holds none of the same batches ([`origins_of`]). A partition whose
/// files all carry it, each batch in one file ([`origins_overlap`]), needs no de-duplication.
/// Compaction outputs never carry it: until the compaction deletes its inputs, they hold the
/// same events, and their inputs may be files of any origin.
pub const DUPLICATE_FREE_KEY: &str = "firehose.duplicate_free";

/// The value of [`DUPLICATE_FREE_KEY`] in a marked file.
pub const DUPLICATE_FREE_VALUE: &str = "true";

/// Whether a file's key-value metadata (`key`, `value` pairs) holds the duplicate-free mark.
pub fn has_duplicate_free_mark<'a>(
    mut key_values: impl Iterator<Item = (&'a str, Option<&'a str>)>,
) -> bool {
    key_values.any(|(key, value)| key == DUPLICATE_FREE_KEY && value == Some(DUPLICATE_FREE_VALUE))
}

/// The Parquet key-value metadata key, in a marked file that a writer made by joining marked
/// files of one partition, whose value lists the batch files it holds (their names, sorted,
/// comma-separated). A marked file without it holds one batch: its own name. Until the writer
/// deletes them, the joined files are still there beside it, and their batches are listed
/// twice ([`origins_overlap`]).
pub const MERGED_FROM_KEY: &str = "firehose.merged_from";

/// Prefix of the files a writer joins ([`merged_file_name`]).
pub const MERGED_PREFIX: &str = "merged-";

/// The name of the file that joins the batches whose names hash to `hash`.
pub fn merged_file_name(hash: &str) -> String {
    format!("{MERGED_PREFIX}{hash}.parquet")
}

/// The batch files a marked file holds, from its name (or path) and key-value metadata: those
/// listed under [`MERGED_FROM_KEY`], else the file itself.
pub fn origins_of<'a>(
    name: &str,
    mut key_values: impl Iterator<Item = (&'a str, Option<&'a str>)>,
) -> Vec<String> {
    match key_values.find(|(key, _)| *key == MERGED_FROM_KEY) {
        Some((_, Some(list))) => list.split(',').map(str::to_owned).collect(),
        _ => vec![name.rsplit('/').next().unwrap_or(name).to_owned()],
    }
}

/// Whether some batch is held by two of the files whose origins ([`origins_of`]) are given: a
/// join interrupted before it deleted its inputs, or two joins of the same batch. Marked files
/// of one partition hold no duplicate when this is false.
pub fn origins_overlap<'a>(origins: impl IntoIterator<Item = &'a [String]>) -> bool {
    let mut seen = std::collections::HashSet::new();
    origins
        .into_iter()
        .flatten()
        .any(|batch| !seen.insert(batch.as_str()))
}

/// The name of compaction output `n` (from 1) of the compaction whose inputs hash to `hash`.
pub fn compacted_file_name(hash: &str, n: usize) -> String {
    format!("{COMPACTED_PREFIX}{hash}-{n:04}.parquet")
}

/// The input hash of a compaction output's file name (or path), `None` for any other file.
pub fn compaction_of(name: &str) -> Option<&str> {
    let name = name.rsplit('/').next().unwrap_or(name);
    let stem = name
        .strip_prefix(COMPACTED_PREFIX)?
        .strip_suffix(".parquet")?;
    let (hash, n) = stem.rsplit_once('-')?;
    (!hash.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())).then_some(hash)
}

/// Whether `names` (every file of one partition) are exactly the outputs of one compaction.
/// Compaction stores every output before it deletes an input, so a partition that looks like
/// this has no duplicate left; a file added later (a late event) makes it incomplete again.
pub fn is_compacted_partition<'a>(mut names: impl Iterator<Item = &'a str>) -> bool {
    match names.next().map(compaction_of) {
        Some(Some(first)) => names.all(|n| compaction_of(n) == Some(first)),
        _ => false,
    }
}

/// The directory of the dead letters received in `hour`: the Hive path of a table's
/// partition, under [`DEAD_LETTER_TABLE`].
pub fn dead_letter_path(hour: Hour) -> String {
    let table = Table::Posts;
    let path = PartitionKey { table, hour }.path();
    format!("{DEAD_LETTER_TABLE}{}", &path[table.name().len()..])
}

impl Table {
    /// The columns that identify an event in this table: `did, time_us` for identity and
    /// account events; `did, rkey, rev` in a collection's own table; `did, collection, rkey,
    /// rev` in `records`, which holds every other collection. (The same key as
    /// [`EventKey`](crate::EventKey), as columns.)
    pub fn key_columns(self) -> &'static [&'static str] {
        match self {
            Table::Identity | Table::Account => &["did", "time_us"],
            Table::Records => &["did", "collection", "rkey", "rev"],
            _ => &["did", "rkey", "rev"],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compacted_names_are_recognised_and_nothing_else_is() {
        assert_eq!(compaction_of("compact-00ff-0001.parquet"), Some("00ff"));
        assert_eq!(
            compaction_of("posts/year=2026/month=11/day=20/hour=05/compact-a-b-12.parquet"),
            Some("a-b")
        );
        for other in [
            "compact--0001.parquet",
            "compact-00ff-.parquet",
            "compact-00ff-1x.parquet",
            "compact-00ff-0001.parquet.tmp",
            "1795-0_1796-0.parquet",
        ] {
            assert_eq!(compaction_of(other), None, "{other}");
        }
        assert!(!is_compacted_partition(std::iter::empty()));
        assert!(!is_compacted_partition(
            ["compact-a-0001.parquet", "compact-b-0001.parquet"].into_iter()
        ));
    }

    #[test]
    fn a_merged_file_lists_its_batches_and_an_overlap_is_seen() {
        let listed = [(MERGED_FROM_KEY, Some("1-0_2-0.parquet,3-0_4-0.parquet"))];
        let merged = origins_of("p/merged-ab.parquet", listed.into_iter());
        assert_eq!(merged, ["1-0_2-0.parquet", "3-0_4-0.parquet"]);
        let batch = origins_of("p/5-0_6-0.parquet", std::iter::empty());
        assert_eq!(batch, ["5-0_6-0.parquet"]);
        assert!(!origins_overlap([merged.as_slice(), batch.as_slice()]));
        // The join was interrupted before it deleted an input.
        let input = origins_of("p/3-0_4-0.parquet", std::iter::empty());
        assert!(origins_overlap([
            merged.as_slice(),
            batch.as_slice(),
            input.as_slice()
        ]));
        assert_eq!(merged_file_name("ab"), "merged-ab.parquet");
    }

    #[test]
    fn dead_letters_are_partitioned_like_the_tables() {
        let t = 1_795_132_800_000_000 + 5 * 3_600_000_000;
        assert_eq!(
            dead_letter_path(Hour::of(t)),
            "dead_letters/year=2026/month=11/day=20/hour=05"
        );
    }
}
