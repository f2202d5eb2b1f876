//! Crash-safe file-system helpers.
//!
//! A new file or a rename is durable only once the file *and the directory that names it* are
//! synced: without the directory sync a crash can leave the data on disk but no name pointing to
//! it. Every file this crate creates goes through these helpers.
//!
//! Unix only: syncing a directory means opening it and calling `fsync` on the handle.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::LogError;

/// `fsync` the directory `dir`, making creations, renames and removals inside it durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), LogError> {
    let handle = File::open(dir).map_err(|e| LogError::io("open directory", dir, e))?;
    handle
        .sync_all()
        .map_err(|e| LogError::io("fsync directory", dir, e))
}

/// Create the directory `dir` (its parent must exist) and sync the parent. An existing
/// directory is left as it is.
pub(crate) fn create_dir_durable(dir: &Path) -> Result<(), LogError> {
    match fs::create_dir(dir) {
        Ok(()) => sync_dir(&parent(dir)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(LogError::io("create directory", dir, e)),
    }
}

/// Create the new empty file `path`, sync it and its directory, and return it open for reading
/// and writing. Fails if the file exists.
pub(crate) fn create_file_durable(path: &Path) -> Result<File, LogError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| LogError::io("create", path, e))?;
    file.sync_all()
        .map_err(|e| LogError::io("fsync", path, e))?;
    sync_dir(&parent(path))?;
    Ok(file)
}

/// Replace `path` with `bytes` atomically: write a temporary sibling, sync it, rename it over
/// `path`, sync the directory. After a crash `path` holds either the old or the new content;
/// a leftover `*.tmp` file is removed by the next open.
pub(crate) fn write_file_durable(path: &Path, bytes: &[u8]) -> Result<(), LogError> {
    let tmp = tmp_path(path);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|e| LogError::io("create", &tmp, e))?;
    file.write_all(bytes)
        .map_err(|e| LogError::io("write", &tmp, e))?;
    file.sync_all()
        .map_err(|e| LogError::io("fsync", &tmp, e))?;
    drop(file);
    fs::rename(&tmp, path).map_err(|e| LogError::io("rename", &tmp, e))?;
    sync_dir(&parent(path))
}

/// Remove `path` and sync its directory, so removals reach the disk in the order they are made.
/// A missing file is not an error.
pub(crate) fn remove_file_durable(path: &Path) -> Result<(), LogError> {
    match fs::remove_file(path) {
        Ok(()) => sync_dir(&parent(path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(LogError::io("remove", path, e)),
    }
}

/// The temporary sibling [`write_file_durable`] writes first: the name with `.tmp` appended.
pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}
