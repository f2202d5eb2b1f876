//! Storage machinery shared by Ferrohub's stores (the identity registry's, the cloud-to-device
//! queues'), independent of what they store.
//!
//! * [`sqlite`]: a SQLite database served by one writer thread with group commit and a pool of
//!   reader threads, answering on runtime-agnostic futures; plus the connection setup and schema
//!   migration the stores share. Schemas, encodings and queries stay with each store.
//! * [`key_locks`]: runtime-agnostic async mutexes keyed by value, created on demand.
//! * [`fs`]: crash-safe file writes (temp file, fsync, rename, directory fsync), the one
//!   implementation the registry's host (the server), the event log and the jobs share.
//!
//! No async runtime: any executor can drive the futures. Without the default `sqlite` feature
//! only [`fs`] and [`key_locks`] are built.

pub mod fs;
pub mod key_locks;
#[cfg(feature = "sqlite")]
pub mod sqlite;

#[cfg(test)]
mod test_support;
