//! Test helpers: store fixtures, and the contract suite's executor and identity builders.

use std::future::Future;
use std::task::{Context, Poll, Waker};

use ferrohub_registry::{MemoryStore, SqliteStore};
use tempfile::TempDir;

pub(crate) use ferrohub_registry::contract::{
    at, block_on, device, did, full_device, key, mid, module, twin,
};

/// Polls a future once with a waker that does nothing.
pub(crate) fn poll_once<F: Future>(f: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    f.poll(&mut Context::from_waker(Waker::noop()))
}

/// A memory store; the second value only mirrors [`sqlite`].
pub(crate) fn memory() -> (MemoryStore, Option<TempDir>) {
    (MemoryStore::new(), None)
}

/// A SQLite store in a fresh temporary directory, which must outlive the store.
pub(crate) fn sqlite() -> (SqliteStore, Option<TempDir>) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = SqliteStore::open(dir.path().join("registry.db")).expect("open SQLite store");
    (store, Some(dir))
}
