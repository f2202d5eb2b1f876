//! Crash-safe file-system helpers: [`ferrohub_storage::fs`] (the one implementation every store
//! shares), with the log's error context added.
//!
//! A new file or a rename is durable only once the file *and the directory that names it* are
//! synced; every file this crate creates goes through these helpers.

use std::fs::File;
use std::path::Path;

use ferrohub_storage::fs as shared;

use crate::error::LogError;

/// `fsync` the directory `dir`, making creations, renames and removals inside it durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), LogError> {
    shared::sync_dir(dir).map_err(|e| LogError::io("fsync directory", dir, e))
}

/// Create the directory `dir` (its parent must exist) and sync the parent. An existing
/// directory is left as it is.
pub(crate) fn create_dir_durable(dir: &Path) -> Result<(), LogError> {
    shared::create_dir(dir).map_err(|e| LogError::io("create directory", dir, e))
}

/// Create the new empty file `path`, sync it and its directory, and return it open for reading
/// and writing. Fails if the file exists.
pub(crate) fn create_file_durable(path: &Path) -> Result<File, LogError> {
    shared::create_new_file(path).map_err(|e| LogError::io("create", path, e))
}

/// Replace `path` with `bytes` atomically: write a temporary sibling (`<name>.tmp`), sync it,
/// rename it over `path`, sync the directory. After a crash `path` holds either the old or the
/// new content; a leftover `*.tmp` file is removed by the next open.
pub(crate) fn write_file_durable(path: &Path, bytes: &[u8]) -> Result<(), LogError> {
    shared::write_file(path, bytes, shared::Access::Shared)
        .map_err(|e| LogError::io("write", path, e))
}

/// Remove `path` and sync its directory, so removals reach the disk in the order they are made.
/// A missing file is not an error.
pub(crate) fn remove_file_durable(path: &Path) -> Result<(), LogError> {
    shared::remove_file(path).map_err(|e| LogError::io("remove", path, e))
}
