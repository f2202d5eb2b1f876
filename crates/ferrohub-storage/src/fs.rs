//! Crash-safe file-system helpers, shared by every part of Ferrohub that writes files.
//!
//! A new file or a rename is durable only once the file *and the directory that names it* are
//! synced: without the directory sync a crash can leave the data on disk but no name pointing to
//! it. Replacing a file in place is never crash-safe, so [`write_file`] writes a temporary
//! sibling ([`tmp_path`]), syncs it, renames it over the target and syncs the directory: after a
//! crash the target holds either the old or the new content, and at worst a `*.tmp` sibling is
//! left, which the next write truncates (the event log also removes them when it opens).
//!
//! Everything returns [`std::io::Result`]; callers add their own context (which file, what
//! they were doing) in their own error types. Unix only: syncing a directory means opening it
//! and calling `fsync` on the handle.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
#[cfg(unix)]
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Who may read a file [`write_file`] creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Owner only (mode 0600): keys, connection strings, anything holding a secret.
    Private,
    /// Readable by everyone (mode 0644).
    Shared,
}

/// `fsync` the directory `dir`, making creations, renames and removals inside it durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates the directory `dir` (its parent must exist) and syncs the parent. An existing
/// directory is left as it is.
pub fn create_dir(dir: &Path) -> io::Result<()> {
    match fs::create_dir(dir) {
        Ok(()) => sync_dir(&parent(dir)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Creates `dir` and any missing parents, syncing the parent of each directory it creates.
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(up) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_all(up)?;
    }
    create_dir(dir)
}

/// Creates the new empty file `path`, syncs it and its directory, and returns it open for
/// reading and writing. Fails if the file exists.
pub fn create_new_file(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)?;
    file.sync_all()?;
    sync_dir(&parent(path))?;
    Ok(file)
}

/// Replaces `path` with `bytes` atomically and durably (see the module documentation).
pub fn write_file(path: &Path, bytes: &[u8], access: Access) -> io::Result<()> {
    if path.file_name().is_none() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the path names no file",
        ));
    }
    let tmp = tmp_path(path);
    let mut opts = OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    opts.mode(match access {
        Access::Private => 0o600,
        Access::Shared => 0o644,
    });
    #[cfg(not(unix))]
    let _ = access;
    let mut file = opts.open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, path)?;
    sync_dir(&parent(path))
}

/// Removes `path` and syncs its directory, so removals reach the disk in the order they are
/// made. A missing file is not an error.
pub fn remove_file(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => sync_dir(&parent(path)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// The temporary sibling [`write_file`] writes first: the name with `.tmp` appended.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

/// The directory that names `path` (`.` for a bare name).
fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_replace_atomically_and_leave_no_temp_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("a/b/file.txt");
        create_dir_all(p.parent().expect("parent")).expect("mkdir");
        write_file(&p, b"one", Access::Private).expect("write");
        write_file(&p, b"two", Access::Private).expect("rewrite");
        assert_eq!(fs::read(&p).expect("read"), b"two");
        assert!(!tmp_path(&p).exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&p).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
            write_file(&p, b"three", Access::Shared).expect("rewrite");
            let mode = fs::metadata(&p).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode, 0o644);
        }
    }

    #[test]
    fn create_new_refuses_existing_files_and_remove_tolerates_missing_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("f");
        create_new_file(&p).expect("create");
        assert_eq!(
            create_new_file(&p).expect_err("exists").kind(),
            io::ErrorKind::AlreadyExists
        );
        remove_file(&p).expect("remove");
        remove_file(&p).expect("already gone");
        create_dir(dir.path()).expect("existing directory");
        fs::write(&p, b"x").expect("file");
        assert!(create_dir(&p).is_err(), "a file is not a directory");
    }
}
