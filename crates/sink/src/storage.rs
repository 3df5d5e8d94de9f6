//! The storage target behind the writer.

use std::fmt::Debug;

use async_trait::async_trait;
use bytes::Bytes;

use crate::Result;

/// An object in storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Path relative to the dataset root, `/`-separated.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
}

/// Where finished files go: a local directory or an object store.
///
/// Paths are relative to the dataset root and `/`-separated. Implementations must make `put`
/// atomic and durable: when it returns `Ok`, readers see the whole object and it survives a
/// crash; when it fails or the process dies, readers see the previous object or none.
#[async_trait]
pub trait Storage: Debug + Send + Sync {
    /// Stores `data` at `path`, replacing any object there.
    async fn put(&self, path: &str, data: Bytes) -> Result<()>;
    /// Reads the object at `path`.
    async fn get(&self, path: &str) -> Result<Bytes>;
    /// Lists finished objects under `prefix` (temporary files of unfinished writes excluded),
    /// sorted by path.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>>;
    /// Deletes the object at `path`; deleting a missing object is not an error.
    async fn delete(&self, path: &str) -> Result<()>;
}
