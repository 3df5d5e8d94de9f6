//! Typed rows for the typed calls: [`Rows::to_typed`] turns an answer into `Vec<Post>`,
//! `Vec<DailyStats>` and so on, for callers who want structs rather than Arrow batches.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Int64Type};

use crate::{Error, Result, Rows};

/// A row type that can be read from an answer's columns.
pub trait FromRows: Sized {
    /// Every row of `batch`.
    fn from_batch(batch: &RecordBatch) -> Result<Vec<Self>>;
}

impl Rows {
    /// The rows as `T`, e.g. `dataset.daily_stats(range).await?.to_typed::<DailyStats>()`.
    pub fn to_typed<T: FromRows>(&self) -> Result<Vec<T>> {
        let mut rows = Vec::with_capacity(self.num_rows());
        for batch in &self.batches {
            rows.extend(T::from_batch(batch)?);
        }
        Ok(rows)
    }
}

/// A post, as [`Dataset::posts`](crate::Dataset::posts) and
/// [`Dataset::search_posts`](crate::Dataset::search_posts) answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Post {
    /// `at://<did>/app.bsky.feed.post/<rkey>`.
    pub uri: String,
    /// The author.
    pub did: String,
    /// When Jetstream saw it, Unix microseconds.
    pub time_us: i64,
    /// When the author's client says it was written, as given.
    pub created_at: Option<String>,
    /// The text.
    pub text: Option<String>,
    /// Its languages.
    pub langs: Vec<String>,
    /// The post it replies to.
    pub reply_parent_uri: Option<String>,
}

/// One day of [`Dataset::daily_stats`](crate::Dataset::daily_stats).
#[derive(Debug, Clone, PartialEq)]
pub struct DailyStats {
    /// `YYYY-MM-DD`, UTC.
    pub day: String,
    /// Posts created.
    pub posts: i64,
    /// Accounts that created them.
    pub unique_authors: i64,
    /// Their mean length in characters.
    pub avg_text_length: Option<f64>,
}

/// One row of [`Dataset::events_per_hour`](crate::Dataset::events_per_hour).
#[derive(Debug, Clone, PartialEq)]
pub struct HourlyEvents {
    /// The hour's start, Unix microseconds.
    pub hour_us: i64,
    /// The collection (`identity` and `account` for those events).
    pub collection: String,
    /// Events.
    pub events: i64,
}

/// One row of [`Dataset::top_posts`](crate::Dataset::top_posts).
#[derive(Debug, Clone, PartialEq)]
pub struct TopPost {
    /// The post liked or reposted.
    pub subject_uri: String,
    /// Likes or reposts in the range.
    pub count: i64,
}

/// One row of [`Dataset::account_activity`](crate::Dataset::account_activity).
#[derive(Debug, Clone, PartialEq)]
pub struct AccountActivity {
    /// The collection (`identity` and `account` for those events).
    pub collection: String,
    /// `create`, `update` or `delete`; `None` for identity and account events.
    pub operation: Option<String>,
    /// Events.
    pub events: i64,
    /// The first, Unix microseconds.
    pub first_us: i64,
    /// The last, Unix microseconds.
    pub last_us: i64,
}

/// Column `name`, cast to `to`.
fn column(batch: &RecordBatch, name: &str, to: &DataType) -> Result<ArrayRef> {
    let array = batch.column_by_name(name).ok_or_else(|| Error::Column {
        column: name.to_owned(),
        reason: "the result has no such column".into(),
    })?;
    cast(array, to).map_err(|e| Error::Column {
        column: name.to_owned(),
        reason: e.to_string(),
    })
}

fn strings(batch: &RecordBatch, name: &str) -> Result<Vec<Option<String>>> {
    let array = column(batch, name, &DataType::Utf8)?;
    let array = array.as_string::<i32>();
    Ok((0..array.len())
        .map(|i| array.is_valid(i).then(|| array.value(i).to_owned()))
        .collect())
}

fn required(batch: &RecordBatch, name: &str) -> Result<Vec<String>> {
    strings(batch, name)?
        .into_iter()
        .map(|value| {
            value.ok_or_else(|| Error::Column {
                column: name.to_owned(),
                reason: "a value is null".into(),
            })
        })
        .collect()
}

/// Integers; timestamps become their microseconds.
fn ints(batch: &RecordBatch, name: &str) -> Result<Vec<i64>> {
    let array = column(batch, name, &DataType::Int64)?;
    let array = array.as_primitive::<Int64Type>();
    Ok((0..array.len())
        .map(|i| if array.is_valid(i) { array.value(i) } else { 0 })
        .collect())
}

fn floats(batch: &RecordBatch, name: &str) -> Result<Vec<Option<f64>>> {
    let array = column(batch, name, &DataType::Float64)?;
    let array = array.as_primitive::<Float64Type>();
    Ok((0..array.len())
        .map(|i| array.is_valid(i).then(|| array.value(i)))
        .collect())
}

fn string_lists(batch: &RecordBatch, name: &str) -> Result<Vec<Vec<String>>> {
    let item = Arc::new(Field::new("item", DataType::Utf8, true));
    let array = column(batch, name, &DataType::List(item))?;
    let lists = array.as_list::<i32>();
    Ok((0..lists.len())
        .map(|i| {
            if lists.is_null(i) {
                return Vec::new();
            }
            let values = lists.value(i);
            let values = values.as_string::<i32>();
            (0..values.len())
                .filter(|&j| values.is_valid(j))
                .map(|j| values.value(j).to_owned())
                .collect()
        })
        .collect())
}

impl FromRows for Post {
    fn from_batch(batch: &RecordBatch) -> Result<Vec<Self>> {
        let mut uri = required(batch, "uri")?.into_iter();
        let mut did = required(batch, "did")?.into_iter();
        let mut time = ints(batch, "time")?.into_iter();
        let mut created_at = strings(batch, "created_at")?.into_iter();
        let mut text = strings(batch, "text")?.into_iter();
        let mut langs = string_lists(batch, "langs")?.into_iter();
        let mut reply = strings(batch, "reply_parent_uri")?.into_iter();
        Ok((0..batch.num_rows())
            .map(|_| Post {
                uri: uri.next().unwrap_or_default(),
                did: did.next().unwrap_or_default(),
                time_us: time.next().unwrap_or_default(),
                created_at: created_at.next().flatten(),
                text: text.next().flatten(),
                langs: langs.next().unwrap_or_default(),
                reply_parent_uri: reply.next().flatten(),
            })
            .collect())
    }
}

impl FromRows for DailyStats {
    fn from_batch(batch: &RecordBatch) -> Result<Vec<Self>> {
        let day = required(batch, "day")?;
        let posts = ints(batch, "posts")?;
        let authors = ints(batch, "unique_authors")?;
        let length = floats(batch, "avg_text_length")?;
        Ok(day
            .into_iter()
            .zip(posts)
            .zip(authors)
            .zip(length)
            .map(
                |(((day, posts), unique_authors), avg_text_length)| DailyStats {
                    day,
                    posts,
                    unique_authors,
                    avg_text_length,
                },
            )
            .collect())
    }
}

impl FromRows for HourlyEvents {
    fn from_batch(batch: &RecordBatch) -> Result<Vec<Self>> {
        let hour = ints(batch, "hour")?;
        let collection = required(batch, "collection")?;
        let events = ints(batch, "events")?;
        Ok(hour
            .into_iter()
            .zip(collection)
            .zip(events)
            .map(|((hour_us, collection), events)| HourlyEvents {
                hour_us,
                collection,
                events,
            })
            .collect())
    }
}

impl FromRows for TopPost {
    fn from_batch(batch: &RecordBatch) -> Result<Vec<Self>> {
        let uri = required(batch, "subject_uri")?;
        // The count is named after the engagement: `likes` or `reposts`.
        let counted = batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .find(|name| name != "subject_uri")
            .ok_or_else(|| Error::Column {
                column: "likes".into(),
                reason: "the result has no count column".into(),
            })?;
        let count = ints(batch, &counted)?;
        Ok(uri
            .into_iter()
            .zip(count)
            .map(|(subject_uri, count)| TopPost { subject_uri, count })
            .collect())
    }
}

impl FromRows for AccountActivity {
    fn from_batch(batch: &RecordBatch) -> Result<Vec<Self>> {
        let collection = required(batch, "collection")?;
        let operation = strings(batch, "operation")?;
        let events = ints(batch, "events")?;
        let first = ints(batch, "first")?;
        let last = ints(batch, "last")?;
        Ok(collection
            .into_iter()
            .zip(operation)
            .zip(events)
            .zip(first.into_iter().zip(last))
            .map(
                |(((collection, operation), events), (first_us, last_us))| AccountActivity {
                    collection,
                    operation,
                    events,
                    first_us,
                    last_us,
                },
            )
            .collect())
    }
}
