//! Test helpers: store fixtures, and the contract suite's executor, times, messages and
//! feedback drain.

use ferrohub_c2d::{MemoryQueueStore, SqliteQueueStore};
use tempfile::TempDir;

/// A memory store; the second value only mirrors [`sqlite`].
pub(crate) fn memory() -> (MemoryQueueStore, Option<TempDir>) {
    (MemoryQueueStore::new(), None)
}

/// A SQLite store in a fresh temporary directory, which must outlive the store.
pub(crate) fn sqlite() -> (SqliteQueueStore, Option<TempDir>) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = SqliteQueueStore::open(dir.path().join("registry.db")).expect("open SQLite store");
    (store, Some(dir))
}

pub(crate) use ferrohub_c2d::contract::{
    at, block_on, did, drain_feedback, full_msg, msg, queues, secs,
};
