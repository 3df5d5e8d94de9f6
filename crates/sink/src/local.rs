//! A dataset in a local directory.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;

use crate::storage::{ObjectInfo, Storage};
use crate::{Error, Result};

/// Temporary files of unfinished writes are hidden (`.` prefix) and end with this suffix, so
/// readers globbing `*.parquet` never see them.
const TEMP_SUFFIX: &str = ".tmp";

/// A dataset rooted at a local directory.
///
/// `put` writes a temporary file beside the target, fsyncs it, renames it over the target and
/// fsyncs the directory: a crash leaves the old file or the new one, never a partial one.
#[derive(Debug)]
pub struct LocalStorage {
    root: PathBuf,
    temp_counter: AtomicU64,
}

impl LocalStorage {
    /// A dataset rooted at `root` (created on the first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalStorage {
            root: root.into(),
            temp_counter: AtomicU64::new(0),
        }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn resolve(&self, path: &str) -> Result<PathBuf> {
        let invalid = |reason| Error::InvalidPath {
            path: path.to_owned(),
            reason,
        };
        if path.is_empty() {
            return Err(invalid("empty"));
        }
        let relative = Path::new(path);
        for component in relative.components() {
            match component {
                Component::Normal(_) => {}
                Component::CurDir => {}
                _ => return Err(invalid("must be relative and stay inside the dataset")),
            }
        }
        Ok(self.root.join(relative))
    }
}

/// Writes `data` to `target` through a temporary file: write, fsync, rename, fsync the directory.
fn put_blocking(target: &Path, temp_id: u64, data: &[u8]) -> io::Result<()> {
    let dir = target
        .parent()
        .ok_or_else(|| io::Error::other("object path has no directory"))?;
    create_dir_durably(dir)?;
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(
        ".{name}.{}-{temp_id}{TEMP_SUFFIX}",
        std::process::id()
    ));
    let written = (|| {
        let mut file = File::create(&temp)?;
        file.write_all(data)?;
        file.sync_all()?;
        fs::rename(&temp, target)?;
        File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        // Leave no partial file behind; the error that matters is the one above.
        let _ = fs::remove_file(&temp);
    }
    written
}

/// Creates `dir` and its missing parents, then fsyncs the parent of each directory created,
/// so a new partition directory survives a power loss along with the file put in it.
fn create_dir_durably(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let missing: Vec<&Path> = dir.ancestors().take_while(|d| !d.exists()).collect();
    fs::create_dir_all(dir)?;
    for created in missing {
        if let Some(parent) = created.parent().filter(|p| !p.as_os_str().is_empty()) {
            File::open(parent)?.sync_all()?;
        }
    }
    Ok(())
}

fn list_blocking(root: &Path, dir: &Path, out: &mut Vec<ObjectInfo>) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let file_type = entry.file_type()?;
        if file_type.is_dir() {
            list_blocking(root, &entry.path(), out)?;
        } else if file_type.is_file() {
            let path = entry.path();
            let relative = path.strip_prefix(root).unwrap_or(&path);
            let parts: Vec<_> = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect();
            out.push(ObjectInfo {
                path: parts.join("/"),
                size: entry.metadata()?.len(),
            });
        }
    }
    Ok(())
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Task(e.to_string()))
}

#[async_trait]
impl Storage for LocalStorage {
    async fn put(&self, path: &str, data: Bytes) -> Result<()> {
        let target = self.resolve(path)?;
        let temp_id = self.temp_counter.fetch_add(1, Ordering::Relaxed);
        let bytes = data.len();
        blocking(move || put_blocking(&target, temp_id, &data))
            .await?
            .map_err(|source| Error::Io {
                op: "put",
                path: path.to_owned(),
                source,
            })?;
        tracing::debug!(%path, bytes, "Stored file.");
        Ok(())
    }

    async fn get(&self, path: &str) -> Result<Bytes> {
        let target = self.resolve(path)?;
        match tokio::fs::read(&target).await {
            Ok(data) => Ok(Bytes::from(data)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Error::NotFound {
                path: path.to_owned(),
            }),
            Err(source) => Err(Error::Io {
                op: "get",
                path: path.to_owned(),
                source,
            }),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let dir = if prefix.is_empty() {
            self.root.clone()
        } else {
            self.resolve(prefix)?
        };
        let root = self.root.clone();
        let mut listed = blocking(move || {
            let mut out = Vec::new();
            list_blocking(&root, &dir, &mut out).map(|()| out)
        })
        .await?
        .map_err(|source| Error::Io {
            op: "list",
            path: prefix.to_owned(),
            source,
        })?;
        listed.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(listed)
    }

    async fn delete(&self, path: &str) -> Result<()> {
        let target = self.resolve(path)?;
        match tokio::fs::remove_file(&target).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(Error::Io {
                op: "delete",
                path: path.to_owned(),
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("firehose-sink-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[tokio::test]
    async fn put_get_list_delete() {
        let dir = temp_dir("local");
        let store = LocalStorage::new(&dir);
        store
            .put("a/b/one.parquet", Bytes::from_static(b"1"))
            .await
            .unwrap();
        store
            .put("a/two.parquet", Bytes::from_static(b"22"))
            .await
            .unwrap();
        store
            .put("a/two.parquet", Bytes::from_static(b"333"))
            .await
            .unwrap();
        // A leftover temporary file of a crashed write is not listed.
        fs::write(dir.join("a/.three.parquet.1-0.tmp"), b"partial").unwrap();
        let listed = store.list("a").await.unwrap();
        assert_eq!(
            listed,
            [
                ObjectInfo {
                    path: "a/b/one.parquet".into(),
                    size: 1
                },
                ObjectInfo {
                    path: "a/two.parquet".into(),
                    size: 3
                }
            ]
        );
        assert_eq!(
            store.get("a/two.parquet").await.unwrap(),
            Bytes::from_static(b"333")
        );
        store.delete("a/two.parquet").await.unwrap();
        store.delete("a/two.parquet").await.unwrap();
        assert!(matches!(
            store.get("a/two.parquet").await,
            Err(Error::NotFound { .. })
        ));
        assert!(store.list("missing").await.unwrap().is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn paths_cannot_escape_the_root() {
        let store = LocalStorage::new(temp_dir("escape"));
        for bad in ["../x", "/etc/passwd", "a/../../x", ""] {
            assert!(
                matches!(
                    store.put(bad, Bytes::new()).await,
                    Err(Error::InvalidPath { .. })
                ),
                "{bad}"
            );
        }
    }
}
