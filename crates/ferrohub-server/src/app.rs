//! `App`: builds the hub from a validated [`Config`] (stores opened, TLS ready, listeners bound)
//! and runs it until shutdown.
//!
//! Building and running are separate so tests can bind port 0, read the real addresses, and
//! then run; and so a start-up failure is reported before anything is served.

use std::fs::File;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ferrohub_c2d::AnyQueueStore;
use ferrohub_registry::scheduled_jobs::{AnyJobStore, SqliteJobStore};
use ferrohub_registry::{AnyStore, Registry, SqliteStore};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::cluster::{Coordinator, LocalCoordinator, SharedSettings};
use crate::config::Config;
use crate::consumer_groups::ConsumerGroups;
use crate::eventlog::{EmbeddedLog, EmbeddedLogSettings, EventLog};
use crate::fsutil::{create_dir_durably, write_durably};
use crate::hub::{Clock, Hub, HubLimits, HubParts, SystemClock};
use crate::policies::{Policies, PolicyError};
use crate::sessions::{SessionBackend, SessionStore, Sessions};
use crate::tls::{self, TlsError};
use ferrohub_c2d::{C2dQueues, SqliteQueueStore};
use ferrohub_log::Retention;
use ferrohub_registry::IdentityChangeKind;

/// How long open connections get to finish after a shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Why the hub could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The data directory could not be prepared.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The directory or file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Another Ferrohub process holds the data directory.
    #[error("data directory {0} is in use by another ferrohub process")]
    DataDirInUse(PathBuf),
    /// TLS material could not be loaded or generated.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The shared access policies could not be loaded.
    #[error(transparent)]
    Policies(#[from] PolicyError),
    /// The event log could not be opened.
    #[error("opening the event log: {0}")]
    EventLog(#[from] ferrohub_log::LogError),
    /// The consumer groups could not be loaded.
    #[error("loading consumer groups: {0}")]
    ConsumerGroups(#[from] crate::consumer_groups::GroupError),
    /// The cloud-to-device queues could not be opened.
    #[error("opening the cloud-to-device queues: {0}")]
    C2d(String),
    /// The settings the nodes of a cluster share could not be agreed on.
    #[error(transparent)]
    Shared(#[from] crate::cluster::ShareError),
    /// The MQTT session store could not be opened.
    #[error("opening the MQTT session store: {0}")]
    Sessions(String),
    /// The scheduled jobs could not be read to resume them.
    #[error("resuming scheduled jobs: {0}")]
    ScheduledJobs(String),
    /// The identity registry could not be opened.
    #[error("opening the identity registry: {0}")]
    Registry(#[from] ferrohub_registry::RegistryError),
    /// A listener could not be bound.
    #[error("binding the {what} listener on {addr}: {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The addresses the hub listens on, also written to `<data_dir>/listeners.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Listeners {
    /// The HTTPS listener (REST API, device HTTPS API, MQTT over WebSockets).
    pub https: SocketAddr,
    /// The MQTT over TLS listener.
    pub mqtt: Option<SocketAddr>,
    /// The plain-TCP MQTT listener, when configured.
    pub mqtt_plain: Option<SocketAddr>,
    /// The AMQP 1.0 over TLS listener.
    pub amqp: Option<SocketAddr>,
}

/// The engines that hold the hub's state.
///
/// The embedded mode ([`Backends::embedded`]) keeps everything in the data directory: SQLite
/// for the registry and the queues, `ferrohub-log` for the events. A cluster node is given
/// shared engines instead (PostgreSQL, NATS JetStream) through [`App::build_with`]; the rest
/// of the hub does not know which it has.
pub struct Backends {
    /// The identity registry's store.
    pub registry: AnyStore,
    /// The cloud-to-device queues' store.
    pub queues: AnyQueueStore,
    /// The device-to-cloud event log.
    pub events: Arc<dyn EventLog>,
    /// The scheduled jobs (`/jobs/v2`) and their per-device records.
    pub scheduled_jobs: AnyJobStore,
    /// How the node reaches the other nodes ([`LocalCoordinator`] when there are none).
    pub coordinator: Arc<dyn Coordinator>,
    /// Where the nodes of a cluster keep the shared access policies and the development CA
    /// (`None`: in the data directory only).
    pub shared: Option<Arc<dyn SharedSettings>>,
    /// Where the MQTT persistent sessions of a cluster live (`None`: in the data directory).
    pub sessions: Option<Arc<dyn SessionBackend>>,
    /// Where the consumer groups of a cluster live (`None`: in the data directory).
    pub groups: Option<Arc<dyn crate::consumer_groups::GroupDocument>>,
    /// Where the nodes of a cluster agree on the one active import or export job (`None`: the
    /// hub is the only node).
    pub import_export: Option<Arc<dyn crate::jobs::shared::SharedJobSlot>>,
    /// Where the nodes of a cluster share presence (`None`: this process's only).
    pub presence: Option<Arc<dyn crate::presence::PresenceStore>>,
    /// How often at most an identity's activity is written to `presence`.
    pub presence_interval: Duration,
    /// When a cluster node fences itself off from devices (`None`: never, the embedded hub).
    pub fence: Option<crate::fence::FenceSettings>,
}

impl Backends {
    /// These engines for a node on its own (no other node to coordinate with, nothing shared
    /// beyond the stores).
    pub fn new(
        registry: AnyStore,
        queues: AnyQueueStore,
        events: Arc<dyn EventLog>,
        scheduled_jobs: AnyJobStore,
    ) -> Self {
        Backends {
            registry,
            queues,
            events,
            scheduled_jobs,
            coordinator: Arc::new(LocalCoordinator),
            shared: None,
            sessions: None,
            groups: None,
            import_export: None,
            presence: None,
            presence_interval: crate::presence::DEFAULT_PRESENCE_INTERVAL,
            fence: None,
        }
    }

    /// The embedded engines in `data_dir`, as `config` sets them up.
    pub async fn embedded(data_dir: &Path, config: &Config) -> Result<Backends, BuildError> {
        let store = SqliteStore::open(data_dir.join("registry.db"))
            .map_err(ferrohub_registry::RegistryError::from)?;
        // The queue store shares the registry's database file, opened after it, so deleting a
        // device purges its queue in the same transaction (a trigger on `devices`).
        let queue_store = SqliteQueueStore::open(data_dir.join("registry.db"))
            .map_err(|e| BuildError::C2d(e.to_string()))?;
        let scheduled_jobs = SqliteJobStore::open(data_dir.join("scheduled-jobs.db"))
            .map_err(ferrohub_registry::RegistryError::from)?;
        let settings = EmbeddedLogSettings {
            partitions: config.eventlog_partitions,
            retention: {
                let mut r = Retention::unlimited();
                r.max_age_ms = config
                    .eventlog_retention
                    .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
                r.max_bytes = config.eventlog_max_bytes;
                r
            },
            max_commit_wait: config.eventlog_max_commit_wait,
        };
        let log_dir = data_dir.join("eventlog");
        let log = tokio::task::spawn_blocking(move || EmbeddedLog::open(&log_dir, &settings))
            .await
            .map_err(|e| BuildError::DataDir {
                path: data_dir.join("eventlog"),
                source: std::io::Error::other(e.to_string()),
            })??;
        Ok(Backends::new(
            AnyStore::new(store),
            AnyQueueStore::new(queue_store),
            Arc::new(log),
            AnyJobStore::new(scheduled_jobs),
        ))
    }
}

/// A hub ready to run: stores open, listeners bound.
pub struct App {
    hub: Arc<Hub>,
    log: Arc<dyn EventLog>,
    https: TcpListener,
    mqtt: TcpListener,
    mqtt_plain: Option<TcpListener>,
    amqp: TcpListener,
    listeners: Listeners,
    tls: Arc<rustls::ServerConfig>,
    ca_path: Option<PathBuf>,
    owner_connection_string: String,
    max_body: usize,
    https_limits: crate::config::HttpsLimits,
    _lock: File,
}

/// The process's metrics recorder, installed by the first hub to run; a cluster node labels
/// every series with its name (`node`), so the nodes' metrics can be told apart once gathered.
fn metrics_handle(node: Option<&str>) -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let mut builder = PrometheusBuilder::new();
            if let Some(node) = node {
                builder = builder.add_global_label("node", node);
            }
            match builder.install_recorder() {
                Ok(h) => Some(h),
                Err(e) => {
                    tracing::warn!(error = %e, "metrics recorder not installed; /metrics is off");
                    None
                }
            }
        })
        .clone()
}

impl App {
    /// Prepares the data directory, TLS, policies and registry, and binds the listeners.
    pub async fn build(config: Config) -> Result<App, BuildError> {
        Self::build_with_clock(config, Arc::new(SystemClock)).await
    }

    /// [`App::build`] with a given clock.
    pub async fn build_with_clock(
        config: Config,
        clock: Arc<dyn Clock>,
    ) -> Result<App, BuildError> {
        Self::build_with(config, clock, None).await
    }

    /// [`App::build`] with a given clock and, for a cluster node, the shared engines (`None`:
    /// the embedded ones in the data directory).
    pub async fn build_with(
        config: Config,
        clock: Arc<dyn Clock>,
        backends: Option<Backends>,
    ) -> Result<App, BuildError> {
        let data_dir = config.data_dir.clone();
        let dir_err = |path: &Path| {
            let path = path.to_owned();
            move |source| BuildError::DataDir { path, source }
        };
        create_dir_durably(&data_dir).map_err(dir_err(&data_dir))?;
        let lock_path = data_dir.join(".lock");
        let lock = File::create(&lock_path).map_err(dir_err(&lock_path))?;
        if lock.try_lock().is_err() {
            return Err(BuildError::DataDirInUse(data_dir));
        }

        let backends = match backends {
            Some(b) => b,
            None => Backends::embedded(&data_dir, &config).await?,
        };
        let names = config.host_names();
        let own_certificate = config.tls.is_some();
        if let Some(shared) = &backends.shared {
            crate::cluster::fetch_shared(&data_dir, shared.as_ref(), own_certificate).await?;
        }
        let mut tls = tls::prepare(&data_dir, config.tls.as_ref(), &names)?;
        let mut policies = Policies::prepare(&data_dir, &config.policies)?;
        if let Some(shared) = &backends.shared
            && crate::cluster::offer_shared(&data_dir, shared.as_ref(), own_certificate).await?
        {
            // Another node initialised the cluster first: use its policies and CA.
            tls = tls::prepare(&data_dir, config.tls.as_ref(), &names)?;
            policies = Policies::prepare(&data_dir, &config.policies)?;
        }
        let coordinator = backends.coordinator.clone();
        let registry = Registry::open(backends.registry).await?;
        let c2d = C2dQueues::open(backends.queues, config.c2d.clone())
            .await
            .map_err(|e| BuildError::C2d(e.to_string()))?;
        let log = backends.events;
        let groups = match backends.groups {
            Some(doc) => ConsumerGroups::open_shared(doc, clock.now()).await?,
            None => ConsumerGroups::open(data_dir.join("consumer-groups.json"), clock.now())?,
        };
        let sessions = match backends.sessions {
            Some(shared) => Sessions::Shared(shared),
            None => Sessions::Embedded(Arc::new(
                SessionStore::open(&data_dir.join("sessions.db"))
                    .map_err(|e| BuildError::Sessions(e.to_string()))?,
            )),
        };
        let mut jobs = crate::jobs::Jobs::open(&data_dir, &config.jobs, clock.now())
            .map_err(dir_err(&data_dir))?;
        if let Some(slot) = backends.import_export.clone() {
            jobs.share(crate::jobs::Shared {
                slot,
                owner: coordinator.node().to_owned(),
                lease: config.jobs.lease,
            });
        }

        let https_req = SocketAddr::new(config.bind, config.https_port);
        let https = crate::https::bind(config.bind, config.https_port)
            .await
            .map_err(|source| BuildError::Bind {
                what: "HTTPS",
                addr: https_req,
                source,
            })?;
        let https_addr = https.local_addr().map_err(|source| BuildError::Bind {
            what: "HTTPS",
            addr: https_req,
            source,
        })?;
        let (mqtt, mqtt_addr) = bind_tcp("MQTT", config.bind, config.mqtt_port).await?;
        let (mqtt_plain, mqtt_plain_addr) = match config.mqtt_plain_port {
            Some(port) => {
                let (l, a) = bind_tcp("plain MQTT", config.bind, port).await?;
                (Some(l), Some(a))
            }
            None => (None, None),
        };
        let (amqp, amqp_addr) = bind_tcp("AMQP", config.bind, config.amqp_port).await?;
        let listeners = Listeners {
            https: crate::https::local_address(https_addr),
            mqtt: Some(crate::https::local_address(mqtt_addr)),
            mqtt_plain: mqtt_plain_addr.map(crate::https::local_address),
            amqp: Some(crate::https::local_address(amqp_addr)),
        };

        let host = if https_addr.port() == 443 {
            config.hostname.clone()
        } else {
            format!("{}:{}", config.hostname, https_addr.port())
        };
        let owner_connection_string = policies
            .connection_string("iothubowner", &host)
            .unwrap_or_default();

        // Written only when they change, and a failure only warns: on a full disk the hub must
        // still start, to serve readers and to take writes again once there is space.
        let cs_path = data_dir.join("owner.connection-string");
        write_if_changed(
            &cs_path,
            format!("{owner_connection_string}\n").as_bytes(),
            true,
        );
        let listeners_path = data_dir.join("listeners.json");
        let listeners_json = serde_json::to_vec_pretty(&listeners).unwrap_or_default();
        write_if_changed(&listeners_path, &listeners_json, false);

        let events: Arc<dyn EventLog> = log.clone();
        let hub = Arc::new(Hub::new(HubParts {
            registry,
            policies,
            events,
            groups,
            sessions,
            c2d,
            jobs,
            scheduled_jobs: backends.scheduled_jobs,
            job_settings: config.jobs.clone(),
            coordinator,
            presence: backends.presence,
            presence_interval: backends.presence_interval,
            fence: backends.fence,
            host_names: names,
            clock,
            limits: HubLimits {
                max_connections: config.max_connections,
                device_messages_per_second: config.device_messages_per_second,
                device_connects_per_second: config.device_connects_per_second,
                hub_connects_per_second: config.hub_connects_per_second,
                max_throttle_backlog: config.max_throttle_backlog,
            },
        }));
        watch_revocations(&hub);
        crate::hub::notify_desired_changes(&hub);
        crate::hub::attach_to_cluster(&hub);
        crate::hub::scheduled_jobs::resume_all(&hub)
            .await
            .map_err(|e| BuildError::ScheduledJobs(e.to_string()))?;
        Ok(App {
            hub,
            log,
            https,
            mqtt,
            mqtt_plain,
            amqp,
            listeners,
            tls: tls.server_config,
            ca_path: tls.ca_path,
            owner_connection_string,
            max_body: config.max_request_body_bytes,
            https_limits: config.https_limits.clone(),
            _lock: lock,
        })
    }

    /// The bound listener addresses.
    pub fn listeners(&self) -> &Listeners {
        &self.listeners
    }

    /// The `iothubowner` connection string (its `HostName` carries the port unless it is 443).
    pub fn owner_connection_string(&self) -> &str {
        &self.owner_connection_string
    }

    /// The generated CA certificate clients must trust, when the certificate was generated.
    pub fn ca_path(&self) -> Option<&Path> {
        self.ca_path.as_deref()
    }

    /// Serves until `shutdown` resolves, then drains open connections for [`SHUTDOWN_GRACE`].
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let (tx, rx) = watch::channel(false);
        let mut mqtt_cfg = (*self.tls).clone();
        // MQTT and AMQP clients offer no ALPN (or "mqtt", "amqp"); the HTTP protocols would
        // refuse them.
        mqtt_cfg.alpn_protocols.clear();
        let mqtt_cfg = Arc::new(mqtt_cfg);
        let node = self
            .hub
            .coordinator
            .is_clustered()
            .then(|| self.hub.node().to_owned());
        let router = crate::rest::router(
            self.hub.clone(),
            metrics_handle(node.as_deref()),
            self.max_body,
        );
        let server = tokio::spawn(crate::https::serve(
            self.https,
            self.tls,
            router,
            rx,
            SHUTDOWN_GRACE,
            self.https_limits,
        ));
        let retention = tokio::spawn(enforce_retention(self.hub.clone(), self.log.clone()));
        let mqtt = tokio::spawn(crate::mqtt::serve(
            self.mqtt,
            Some(mqtt_cfg.clone()),
            self.hub.clone(),
        ));
        let mqtt_plain = self
            .mqtt_plain
            .map(|l| tokio::spawn(crate::mqtt::serve(l, None, self.hub.clone())));
        let amqp = tokio::spawn(crate::amqp::serve(self.amqp, mqtt_cfg, self.hub.clone()));
        let presence = tokio::spawn(crate::hub::run_presence_flusher(self.hub.clone()));
        let fence = tokio::spawn(crate::hub::run_fence(self.hub.clone()));
        shutdown.await;
        tracing::info!("shutting down");
        retention.abort();
        fence.abort();
        self.hub.begin_shutdown();
        let _ = tx.send(true);
        let _ = mqtt.await;
        let _ = amqp.await;
        if let Some(m) = mqtt_plain {
            let _ = m.await;
        }
        // The connections ended: their disconnects and last activity are written.
        presence.abort();
        if self.hub.flush_presence().await {
            tracing::warn!("the last presence changes could not be written");
        }
        if let Err(e) = server.await {
            tracing::error!(error = %e, "the HTTPS server task failed");
        }
        tracing::info!("stopped");
    }
}

/// Removes event-log segments past retention and dead-letters expired cloud-to-device
/// messages (with their feedback), once a minute.
async fn enforce_retention(hub: Arc<Hub>, log: Arc<dyn EventLog>) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        if let Err(e) = hub.c2d.sweep(hub.now()).await {
            tracing::warn!(error = %e, "expiring cloud-to-device messages failed");
        }
        let now_ms = hub.now().timestamp_millis();
        if let Err(e) = log.enforce_retention(now_ms).await {
            tracing::warn!(error = %e, "event log retention failed");
        }
    }
}

/// Writes `bytes` to `path` durably unless it already holds them; a failure is logged, not
/// fatal.
fn write_if_changed(path: &Path, bytes: &[u8], private: bool) {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return;
    }
    if let Err(e) = write_durably(path, bytes, private) {
        tracing::warn!(path = %path.display(), error = %e, "could not write the file; going on");
    }
}

async fn bind_tcp(
    what: &'static str,
    ip: std::net::IpAddr,
    port: u16,
) -> Result<(TcpListener, SocketAddr), BuildError> {
    let addr = SocketAddr::new(ip, port);
    let err = |source| BuildError::Bind { what, addr, source };
    let listener = TcpListener::bind(addr).await.map_err(err)?;
    let bound = listener.local_addr().map_err(err)?;
    Ok((listener, bound))
}

/// Closes live connections whose identity is deleted, disabled or re-keyed, and forgets the
/// MQTT sessions of deleted identities.
fn watch_revocations(hub: &Arc<Hub>) {
    let weak = Arc::downgrade(hub);
    hub.registry.on_change(move |change| {
        let Some(hub) = weak.upgrade() else {
            return;
        };
        let reason = match change.kind {
            IdentityChangeKind::Deleted => "the identity was deleted",
            IdentityChangeKind::Disabled => "the device was disabled",
            IdentityChangeKind::KeysChanged => "the identity's keys changed",
            _ => return,
        };
        let deleted = change.kind == IdentityChangeKind::Deleted;
        if deleted && change.module_id.is_none() {
            hub.forget_presence(&change.device_id);
        }
        match &change.module_id {
            None => hub.connections.close_device(&change.device_id, reason, deleted),
            Some(m) => hub
                .connections
                .close(&(change.device_id.clone(), Some(m.clone())), reason),
        }
        if deleted {
            let store = hub.sessions.clone();
            let cid = crate::sessions::client_id(
                change.device_id.as_str(),
                change.module_id.as_ref().map(|m| m.as_str()),
            );
            let device = change.device_id.to_string();
            let whole_device = change.module_id.is_none();
            tokio::spawn(async move {
                let result = if whole_device {
                    store.delete_device(&device).await
                } else {
                    store.delete(&cid).await
                };
                if let Err(e) = result {
                    tracing::warn!(error = %e, "forgetting a deleted identity's MQTT session failed");
                }
            });
        }
    });
}
