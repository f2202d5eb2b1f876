//! Storage machinery shared by Ferrohub's stores (the identity registry's, the cloud-to-device
//! queues'), independent of what they store.
//!
//! * [`sqlite`]: a SQLite database served by one writer thread with group commit and a pool of
//!   reader threads, answering on runtime-agnostic futures; plus the connection setup and schema
//!   migration the stores share. Schemas, encodings and queries stay with each store.
//! * [`key_locks`]: runtime-agnostic async mutexes keyed by value, created on demand.
//!
//! No async runtime: any executor can drive the futures.

pub mod key_locks;
pub mod sqlite;

#[cfg(test)]
mod test_support;
