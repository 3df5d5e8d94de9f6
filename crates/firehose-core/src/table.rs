//! The tables of the dataset, the partition key and the event key.

use std::fmt;
use std::str::FromStr;

use crate::event::{Event, Payload};
use crate::record::{Record, nsid};

/// A table of the dataset. Each has its own Arrow schema ([`crate::schema`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// `app.bsky.feed.post`.
    Posts,
    /// `app.bsky.feed.like`.
    Likes,
    /// `app.bsky.feed.repost`.
    Reposts,
    /// `app.bsky.graph.follow`.
    Follows,
    /// `app.bsky.graph.block`.
    Blocks,
    /// `app.bsky.graph.listitem`.
    ListItems,
    /// `app.bsky.actor.profile`.
    Profiles,
    /// Every other collection, and records that did not fit their typed shape (kept as JSON).
    Records,
    /// Identity events.
    Identity,
    /// Account events.
    Account,
}

impl Table {
    /// Every table, in a fixed order.
    pub const ALL: [Table; 10] = [
        Table::Posts,
        Table::Likes,
        Table::Reposts,
        Table::Follows,
        Table::Blocks,
        Table::ListItems,
        Table::Profiles,
        Table::Records,
        Table::Identity,
        Table::Account,
    ];

    /// The table's name in paths and SQL.
    pub fn name(self) -> &'static str {
        match self {
            Table::Posts => "posts",
            Table::Likes => "likes",
            Table::Reposts => "reposts",
            Table::Follows => "follows",
            Table::Blocks => "blocks",
            Table::ListItems => "listitems",
            Table::Profiles => "profiles",
            Table::Records => "records",
            Table::Identity => "identity",
            Table::Account => "account",
        }
    }

    /// The position of the table in [`Table::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The collection whose records the table holds, for the tables of one collection
    /// (`Records`, `Identity` and `Account` have none).
    pub fn collection(self) -> Option<&'static str> {
        Some(match self {
            Table::Posts => nsid::POST,
            Table::Likes => nsid::LIKE,
            Table::Reposts => nsid::REPOST,
            Table::Follows => nsid::FOLLOW,
            Table::Blocks => nsid::BLOCK,
            Table::ListItems => nsid::LISTITEM,
            Table::Profiles => nsid::PROFILE,
            _ => return None,
        })
    }

    /// The table that stores records of `collection`: its own table for the collections with a
    /// typed shape, `Records` for every other.
    pub fn for_collection(collection: &str) -> Table {
        match collection {
            nsid::POST => Table::Posts,
            nsid::LIKE => Table::Likes,
            nsid::REPOST => Table::Reposts,
            nsid::FOLLOW => Table::Follows,
            nsid::BLOCK => Table::Blocks,
            nsid::LISTITEM => Table::ListItems,
            nsid::PROFILE => Table::Profiles,
            _ => Table::Records,
        }
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The name is not one of [`Table::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown table \"{0}\"")]
pub struct UnknownTable(pub String);

impl FromStr for Table {
    type Err = UnknownTable;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Table::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| UnknownTable(s.to_owned()))
    }
}

impl Event<'_> {
    /// The table the event is stored in. A commit goes to its collection's table, unless its
    /// record did not fit the typed shape: then it goes to [`Table::Records`] with its JSON.
    pub fn table(&self) -> Table {
        match &self.payload {
            Payload::Commit(c) => match c.record {
                Some(Record::Other(_)) => Table::Records,
                _ => Table::for_collection(&c.collection),
            },
            Payload::Identity(_) => Table::Identity,
            Payload::Account(_) => Table::Account,
        }
    }

    /// The partition the event belongs to: its table and the UTC hour of its `time_us`.
    pub fn partition(&self) -> PartitionKey {
        PartitionKey::new(self.table(), self.time_us)
    }

    /// The key that identifies the event across Jetstream replays, for de-duplication.
    pub fn key(&self) -> EventKey<'_> {
        match &self.payload {
            Payload::Commit(c) => EventKey::Commit {
                did: &self.did,
                collection: &c.collection,
                rkey: &c.rkey,
                rev: &c.rev,
            },
            Payload::Identity(_) => EventKey::Identity {
                did: &self.did,
                time_us: self.time_us,
            },
            Payload::Account(_) => EventKey::Account {
                did: &self.did,
                time_us: self.time_us,
            },
        }
    }
}

/// Identifies one event: a commit by (did, collection, rkey, rev); identity and account
/// events by (did, time_us). Two deliveries of the same event have the same key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKey<'e> {
    /// A commit.
    Commit {
        /// Repository.
        did: &'e str,
        /// Collection.
        collection: &'e str,
        /// Record key.
        rkey: &'e str,
        /// Revision.
        rev: &'e str,
    },
    /// An identity event.
    Identity {
        /// Account.
        did: &'e str,
        /// Jetstream time.
        time_us: i64,
    },
    /// An account event.
    Account {
        /// Account.
        did: &'e str,
        /// Jetstream time.
        time_us: i64,
    },
}

/// Microseconds in an hour.
pub const HOUR_US: i64 = 3_600_000_000;

/// A UTC hour, as `time_us / HOUR_US`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hour {
    /// Year.
    pub year: i32,
    /// Month, 1 to 12.
    pub month: u8,
    /// Day of the month, 1 to 31.
    pub day: u8,
    /// Hour of the day, 0 to 23.
    pub hour: u8,
}

impl Hour {
    /// The UTC hour containing `time_us` (microseconds since the epoch).
    pub fn of(time_us: i64) -> Hour {
        let hours = time_us.div_euclid(HOUR_US);
        let days = hours.div_euclid(24);
        let (year, month, day) = civil_from_days(days);
        Hour {
            year,
            month,
            day,
            hour: hours.rem_euclid(24) as u8,
        }
    }

    /// The first microsecond of the hour.
    pub fn start_us(self) -> i64 {
        (days_from_civil(self.year, self.month, self.day) * 24 + i64::from(self.hour)) * HOUR_US
    }
}

/// Where an event's rows live: a table and a UTC hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionKey {
    /// The table.
    pub table: Table,
    /// The hour.
    pub hour: Hour,
}

impl PartitionKey {
    /// The partition of `table` holding `time_us`.
    pub fn new(table: Table, time_us: i64) -> Self {
        PartitionKey {
            table,
            hour: Hour::of(time_us),
        }
    }

    /// The Hive partition columns and their values, in path order.
    pub fn columns(&self) -> [(&'static str, String); 4] {
        let h = self.hour;
        [
            ("year", format!("{:04}", h.year)),
            ("month", format!("{:02}", h.month)),
            ("day", format!("{:02}", h.day)),
            ("hour", format!("{:02}", h.hour)),
        ]
    }

    /// The partition's directory relative to the dataset root:
    /// `posts/year=2026/month=11/day=20/hour=05`.
    ///
    /// ```
    /// use firehose_core::{PartitionKey, Table};
    /// let key = PartitionKey::new(Table::Posts, 1_763_615_000_000_000);
    /// assert_eq!(key.path(), "posts/year=2025/month=11/day=20/hour=05");
    /// ```
    pub fn path(&self) -> String {
        let mut path = self.table.name().to_owned();
        for (k, v) in self.columns() {
            path.push('/');
            path.push_str(&format!("{k}={v}"));
        }
        path
    }
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i32, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year as i32, month, day)
}

/// The inverse of [`civil_from_days`].
fn days_from_civil(year: i32, month: u8, day: u8) -> i64 {
    let y = i64::from(year) - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_dates() {
        assert_eq!(
            Hour::of(0),
            Hour {
                year: 1970,
                month: 1,
                day: 1,
                hour: 0
            }
        );
        // 2024-02-29T23:59:59.999999Z
        let leap = Hour::of(1_709_251_199_999_999);
        assert_eq!(
            leap,
            Hour {
                year: 2024,
                month: 2,
                day: 29,
                hour: 23
            }
        );
        // 2026-11-23T11:47:03Z
        assert_eq!(
            Hour::of(1_795_434_423_000_000),
            Hour {
                year: 2026,
                month: 11,
                day: 23,
                hour: 11
            }
        );
    }

    #[test]
    fn table_names_parse_back() {
        for t in Table::ALL {
            assert_eq!(t.name().parse::<Table>(), Ok(t));
            assert_eq!(Table::ALL[t.index()], t);
        }
        assert!("nope".parse::<Table>().is_err());
    }

    proptest! {
        #[test]
        fn hour_start_contains_time(t in 0i64..4_102_444_800_000_000) {
            let h = Hour::of(t);
            let start = h.start_us();
            prop_assert!(start <= t && t < start + HOUR_US);
            prop_assert_eq!(Hour::of(start), h);
            prop_assert!((1..=12).contains(&h.month) && (1..=31).contains(&h.day) && h.hour < 24);
        }
    }
}
