//! Ferrohub's cluster engines: the implementations of the hub's storage traits on PostgreSQL
//! and NATS JetStream, so that many stateless hub nodes can share one registry, one set of
//! cloud-to-device queues and one event log.
//!
//! See `docs/architecture.md` (section "Cluster engines") for the schemas and streams.
#![forbid(unsafe_code)]

#[cfg(feature = "contract-suite")]
pub mod eventlog_contract;
pub mod jetstream;
pub mod postgres;

#[cfg(feature = "testing")]
pub mod testing;

pub use jetstream::{JetStreamConfig, JetStreamLog, ReadStrategy};
pub use postgres::{PgConfig, PgDatabase, PgError, PgQueueStore, PgRegistryStore};
