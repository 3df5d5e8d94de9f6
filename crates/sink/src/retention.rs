//! Retention: deleting whole hour partitions past an age (Hetzner has no lifecycle rules).

use firehose_core::{HOUR_US, Hour, PartitionKey, Table};

use crate::Result;
use crate::storage::{ObjectInfo, Storage};

/// Reads the partition of a dataset path, `<table>/year=YYYY/month=MM/day=DD/hour=HH/<file>`;
/// `None` for anything else (which retention then leaves alone).
///
/// ```
/// use firehose_core::Table;
/// use firehose_sink::partition_of;
/// let key = partition_of("likes/year=2026/month=11/day=20/hour=05/1-0_2-0.parquet").unwrap();
/// assert_eq!((key.table, key.hour.year, key.hour.hour), (Table::Likes, 2026, 5));
/// assert!(partition_of("likes/year=2026/README").is_none());
/// ```
pub fn partition_of(path: &str) -> Option<PartitionKey> {
    let mut parts = path.split('/');
    let table: Table = parts.next()?.parse().ok()?;
    let mut value = |key: &str| {
        parts
            .next()?
            .strip_prefix(key)?
            .strip_prefix('=')?
            .parse::<u16>()
            .ok()
    };
    let (year, month, day, hour) = (
        value("year")?,
        value("month")?,
        value("day")?,
        value("hour")?,
    );
    let file = parts.next()?;
    if file.is_empty()
        || parts.next().is_some()
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
    {
        return None;
    }
    let hour = Hour {
        year: i32::from(year),
        month: month as u8,
        day: day as u8,
        hour: hour as u8,
    };
    Some(PartitionKey { table, hour })
}

/// What [`retain`] deleted (or, dry, would delete).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Retained {
    /// Hour partitions removed.
    pub partitions: usize,
    /// Files removed.
    pub files: usize,
    /// Bytes removed.
    pub bytes: u64,
    /// Files kept.
    pub kept: usize,
}

/// Deletes every file of every hour partition that ended at or before `cutoff_us` (a whole
/// hour at a time: a partition is kept while any of its hour is newer than the cutoff).
/// Paths outside the partition layout are kept. `on_delete` sees each file before it goes
/// (for progress); with `dry_run` nothing is deleted.
pub async fn retain(
    storage: &dyn Storage,
    cutoff_us: i64,
    dry_run: bool,
    mut on_delete: impl FnMut(&ObjectInfo),
) -> Result<Retained> {
    let mut report = Retained::default();
    let mut last_partition = None;
    for object in storage.list("").await? {
        let expired =
            partition_of(&object.path).filter(|key| key.hour.start_us() + HOUR_US <= cutoff_us);
        let Some(key) = expired else {
            report.kept += 1;
            continue;
        };
        on_delete(&object);
        if !dry_run {
            storage.delete(&object.path).await?;
        }
        // Listings are sorted by path, so a partition's files are consecutive.
        if last_partition != Some(key) {
            report.partitions += 1;
            last_partition = Some(key);
        }
        report.files += 1;
        report.bytes += object.size;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::LocalStorage;

    #[test]
    fn only_the_partition_layout_parses() {
        assert!(partition_of("posts/year=2026/month=01/day=02/hour=03/a.parquet").is_some());
        for bad in [
            "nope/year=2026/month=01/day=02/hour=03/a.parquet",
            "posts/year=2026/month=13/day=02/hour=03/a.parquet",
            "posts/year=2026/month=01/day=02/hour=24/a.parquet",
            "posts/year=2026/month=01/day=02/a.parquet",
            "posts/year=2026/month=01/day=02/hour=03/",
            "posts/year=2026/month=01/day=02/hour=03/x/a.parquet",
            "posts/month=01/year=2026/day=02/hour=03/a.parquet",
        ] {
            assert!(partition_of(bad).is_none(), "{bad}");
        }
    }

    #[tokio::test]
    async fn deletes_whole_expired_hours_only() {
        let dir = std::env::temp_dir().join(format!("firehose-retain-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let storage = Arc::new(LocalStorage::new(&dir));
        let hour = |h: u8| PartitionKey {
            table: Table::Likes,
            hour: Hour {
                year: 2026,
                month: 11,
                day: 20,
                hour: h,
            },
        };
        for h in [1, 2, 3] {
            for f in ["a", "b"] {
                storage
                    .put(
                        &format!("{}/{f}.parquet", hour(h).path()),
                        Bytes::from_static(b"12345"),
                    )
                    .await
                    .unwrap();
            }
        }
        storage
            .put("notes.txt", Bytes::from_static(b"kept"))
            .await
            .unwrap();
        // The cutoff falls inside hour 3: hours 1 and 2 go, hour 3 stays whole.
        let cutoff = hour(3).hour.start_us() + 60_000_000;

        let mut seen = Vec::new();
        let dry = retain(storage.as_ref(), cutoff, true, |o| {
            seen.push(o.path.clone())
        })
        .await
        .unwrap();
        assert_eq!(
            dry,
            Retained {
                partitions: 2,
                files: 4,
                bytes: 20,
                kept: 3
            }
        );
        assert_eq!(
            storage.list("").await.unwrap().len(),
            7,
            "a dry run deletes nothing"
        );

        let done = retain(storage.as_ref(), cutoff, false, |_| {})
            .await
            .unwrap();
        assert_eq!(done, dry);
        let left: Vec<_> = storage
            .list("")
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.path)
            .collect();
        assert_eq!(
            left,
            [
                format!("{}/a.parquet", hour(3).path()),
                format!("{}/b.parquet", hour(3).path()),
                "notes.txt".into()
            ]
        );
        assert!(
            seen.iter()
                .all(|p| p.contains("hour=01") || p.contains("hour=02"))
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
