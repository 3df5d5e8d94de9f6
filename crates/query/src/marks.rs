//! Which files carry the writer's duplicate-free mark, and which batches each holds.
//!
//! The mark is in a file's Parquet key-value metadata
//! ([`DUPLICATE_FREE_KEY`](firehose_core::layout::DUPLICATE_FREE_KEY)), with the batches a
//! writer's join holds ([`MERGED_FROM_KEY`](firehose_core::layout::MERGED_FROM_KEY)), so
//! finding them takes a read of the footer. Files are immutable under their names (a batch written again
//! gets the same events), so the answer is kept per path and size: a query reads the footer
//! of each file once, the first time a query covers it. The cache is cleared when it holds
//! [`MAX_CACHED`] files (about 100 bytes each), and then fills again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use datafusion::datasource::listing::PartitionedFile;
use datafusion::error::{DataFusionError, Result};
use firehose_core::layout::{has_duplicate_free_mark, origins_of};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::file::metadata::{FooterTail, ParquetMetaDataReader};

/// Most files remembered before the cache starts again.
pub(crate) const MAX_CACHED: usize = 200_000;

/// Footers read at once on a first query.
const READS_AT_ONCE: usize = 16;

/// Bytes read from the end of a file at first: the footers the writer makes fit.
const TAIL_BYTES: u64 = 64 * 1024;

/// What a file's footer says: whether it is marked, and the batches it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mark {
    /// It carries the duplicate-free mark.
    pub(crate) marked: bool,
    /// The batch files whose events it holds ([`origins_of`]).
    pub(crate) origins: Arc<[String]>,
}

/// What each file seen so far says, by path, with its size.
#[derive(Debug, Default)]
pub(crate) struct Marks {
    known: Mutex<HashMap<String, (u64, Mark)>>,
}

impl Marks {
    /// The mark of each of `files`, in order; footers not seen before are read from `store`.
    pub(crate) async fn of(
        &self,
        store: &Arc<dyn ObjectStore>,
        files: &[&PartitionedFile],
    ) -> Result<Vec<Mark>> {
        let cached = |file: &PartitionedFile| -> Option<Mark> {
            let known = self.known.lock().ok()?;
            let (size, mark) = known.get(file.object_meta.location.as_ref())?;
            (*size == file.object_meta.size).then(|| mark.clone())
        };
        let answers: Vec<Option<Mark>> = files.iter().map(|f| cached(f)).collect();
        let unknown: Vec<(Path, u64)> = files
            .iter()
            .zip(&answers)
            .filter(|(_, a)| a.is_none())
            .map(|(f, _)| (f.object_meta.location.clone(), f.object_meta.size))
            .collect();
        let read: Vec<(String, u64, Mark)> = futures::stream::iter(unknown)
            .map(|(path, size)| {
                let store = Arc::clone(store);
                async move {
                    let mark = read_mark(&store, &path, size).await.map_err(|e| {
                        DataFusionError::External(format!("read the footer of {path}: {e}").into())
                    })?;
                    Ok::<_, DataFusionError>((path.to_string(), size, mark))
                }
            })
            .buffered(READS_AT_ONCE)
            .try_collect()
            .await?;
        let mut fresh = read.iter().map(|(_, _, mark)| mark.clone());
        let out = answers
            .into_iter()
            .map(|a| {
                a.or_else(|| fresh.next()).unwrap_or(Mark {
                    marked: false,
                    origins: Arc::from([]),
                })
            })
            .collect();
        if let Ok(mut known) = self.known.lock() {
            if known.len() + read.len() > MAX_CACHED {
                known.clear();
            }
            known.extend(
                read.into_iter()
                    .map(|(path, size, mark)| (path, (size, mark))),
            );
        }
        Ok(out)
    }
}

/// Reads the footer of the Parquet file at `path` (`size` bytes long) and says whether its
/// key-value metadata holds the mark, and which batches it lists: one ranged read, two when
/// the footer is larger than [`TAIL_BYTES`].
async fn read_mark(
    store: &Arc<dyn ObjectStore>,
    path: &Path,
    size: u64,
) -> Result<Mark, Box<dyn std::error::Error + Send + Sync>> {
    if size < 12 {
        return Err("too short to be Parquet".into());
    }
    let tail_start = size.saturating_sub(TAIL_BYTES);
    let tail = store.get_range(path, tail_start..size).await?;
    let last8: [u8; 8] = tail[tail.len() - 8..].try_into()?;
    let footer = FooterTail::try_new(&last8)?;
    if footer.is_encrypted_footer() {
        return Ok(Mark {
            marked: false,
            origins: Arc::from([]),
        });
    }
    let length = footer.metadata_length() as u64;
    let metadata_start = size
        .checked_sub(8 + length)
        .ok_or("footer longer than the file")?;
    let metadata = if metadata_start >= tail_start {
        let from = usize::try_from(metadata_start - tail_start)?;
        ParquetMetaDataReader::decode_metadata(&tail[from..tail.len() - 8])?
    } else {
        let bytes = store.get_range(path, metadata_start..size - 8).await?;
        ParquetMetaDataReader::decode_metadata(&bytes)?
    };
    let pairs = || {
        metadata
            .file_metadata()
            .key_value_metadata()
            .into_iter()
            .flatten()
            .map(|e| (e.key.as_str(), e.value.as_deref()))
    };
    Ok(Mark {
        marked: has_duplicate_free_mark(pairs()),
        origins: origins_of(path.as_ref(), pairs()).into(),
    })
}
