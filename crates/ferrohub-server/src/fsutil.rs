//! The server's crash-safe writes of small files (configuration state, TLS material, job
//! records): [`ferrohub_storage::fs`], the one implementation the event log and the stores
//! share, under the names the server's modules call.

use std::io;
use std::path::Path;

use ferrohub_storage::fs::{self as shared, Access};

/// Writes `bytes` to `path` atomically and durably (temp file, fsync, rename, directory fsync).
/// `private` files are readable by the owner only (keys, connection strings, job records).
pub(crate) fn write_durably(path: &Path, bytes: &[u8], private: bool) -> io::Result<()> {
    let access = if private {
        Access::Private
    } else {
        Access::Shared
    };
    shared::write_file(path, bytes, access)
}

/// Creates `dir` and its parents, fsyncing the parent of each directory it created.
pub(crate) fn create_dir_durably(dir: &Path) -> io::Result<()> {
    shared::create_dir_all(dir)
}
