//! A hub node's engines from its configuration's `[cluster]` section: what `ferrohub serve`
//! hands to `ferrohub_server::App::build_with` instead of the embedded engines.

use std::sync::Arc;
use std::time::Duration;

use ferrohub_c2d::AnyQueueStore;
use ferrohub_registry::AnyStore;
use ferrohub_registry::scheduled_jobs::AnyJobStore;
use ferrohub_server::fence::FenceSettings;
use ferrohub_server::{Backends, ClusterSettings, Config};

use crate::coordinator::{CoordinatorConfig, CoordinatorError, NodeCoordinator};
use crate::jetstream::{JetStreamConfig, JetStreamLog};
use crate::postgres::{
    PgConfig, PgDatabase, PgGroupDocument, PgImportExportSlot, PgJobStore, PgPresenceStore,
    PgQueueStore, PgRegistryStore, PgSessionStore, PgSharedSettings,
};

/// Why a node could not reach its engines.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The configuration has no `[cluster]` section.
    #[error("the configuration has no [cluster] section")]
    NotClustered,
    /// PostgreSQL failed.
    #[error("PostgreSQL: {0}")]
    Postgres(String),
    /// The JetStream event log could not be opened.
    #[error("NATS JetStream: {0}")]
    JetStream(String),
    /// The coordinator could not start.
    #[error(transparent)]
    Coordinator(#[from] CoordinatorError),
}

/// The JetStream settings of a node's event log: the partitions and retention of the
/// configuration's `[eventlog]`, the replicas and prefix of its `[cluster]`.
pub fn jetstream_config(config: &Config, cluster: &ClusterSettings) -> JetStreamConfig {
    let mut js = JetStreamConfig::new(cluster.nats.clone());
    js.prefix = format!("{}-d2c", cluster.prefix);
    js.partitions = config.eventlog_partitions;
    js.replicas = cluster.replicas;
    // Zero is JetStream's "no age limit".
    js.max_age = config.eventlog_retention.unwrap_or(Duration::ZERO);
    // JetStream reserves a stream's byte cap from the servers' storage up front, so the
    // embedded log's default cap (10 GiB a partition) is not carried over: only a cap the
    // configuration sets is.
    js.max_bytes = config
        .eventlog_max_bytes
        .filter(|b| *b != ferrohub_server::config::DEFAULT_MAX_BYTES_PER_PARTITION);
    js
}

/// Connects to the engines `config.cluster` names: migrates the PostgreSQL schema, opens the
/// registry, the queues, the shared settings and the event log, and starts the coordinator.
/// Must run on the runtime that will run the hub.
pub async fn backends(config: &Config) -> Result<Backends, NodeError> {
    let cluster = config.cluster.as_ref().ok_or(NodeError::NotClustered)?;
    let pg = |e: &dyn std::fmt::Display| NodeError::Postgres(e.to_string());
    // The listening connection first: no change is missed between the registry's first read
    // and the feed.
    let coordinator = NodeCoordinator::connect(CoordinatorConfig::new(
        &cluster.node,
        cluster.nats.clone(),
        &cluster.prefix,
        &cluster.postgres,
    ))
    .await?;
    let db = PgDatabase::new(&PgConfig::new(cluster.postgres.clone())).map_err(|e| pg(&e))?;
    let registry = PgRegistryStore::open(db.clone())
        .await
        .map_err(|e| pg(&e))?;
    let queues = PgQueueStore::open(db.clone()).await.map_err(|e| pg(&e))?;
    let sessions = PgSessionStore::open(db.clone()).await.map_err(|e| pg(&e))?;
    let groups = PgGroupDocument::open(db.clone())
        .await
        .map_err(|e| pg(&e))?;
    let scheduled_jobs = PgJobStore::open(db.clone()).await.map_err(|e| pg(&e))?;
    let import_export = PgImportExportSlot::open(db.clone())
        .await
        .map_err(|e| pg(&e))?;
    let presence = PgPresenceStore::open(db.clone(), &cluster.node)
        .await
        .map_err(|e| pg(&e))?;
    let shared = PgSharedSettings::open(db).await.map_err(|e| pg(&e))?;
    let events = JetStreamLog::open(jetstream_config(config, cluster))
        .await
        .map_err(|e| NodeError::JetStream(e.to_string()))?;
    let mut backends = Backends::new(
        AnyStore::new(registry),
        AnyQueueStore::new(queues),
        Arc::new(events),
        AnyJobStore::new(scheduled_jobs),
    );
    backends.coordinator = Arc::new(coordinator);
    backends.shared = Some(Arc::new(shared));
    backends.sessions = Some(Arc::new(sessions));
    backends.groups = Some(Arc::new(groups));
    backends.import_export = Some(Arc::new(import_export));
    backends.presence = Some(Arc::new(presence));
    backends.presence_interval = cluster.presence_interval;
    backends.fence = Some(FenceSettings {
        nats_grace: cluster.nats_grace,
        postgres_grace: cluster.postgres_grace,
    });
    Ok(backends)
}
