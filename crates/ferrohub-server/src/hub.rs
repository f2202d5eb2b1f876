//! The `Hub` handle: the state every endpoint shares (registry, policies, names, clock) and the
//! operations every protocol calls the same way: who a token speaks for, submitting telemetry,
//! sending and delivering cloud-to-device messages, admitting a device under its limits, twins
//! and their desired notifications, direct methods, scheduled jobs.
//!
//! The hub is transport-neutral: its operations take and return domain types and fail with
//! [`HubError`]; the REST API, MQTT and AMQP drivers each render those in their own protocol.

mod budgets;
mod c2d;
mod desired_order;
mod error;
mod methods;
mod nodes;
mod presence;
mod query;
mod readers;
pub(crate) mod scheduled_jobs;
mod twins;

pub(crate) use budgets::{Budgets, Metered};
pub(crate) use c2d::C2dDelivery;
pub use error::HubError;
pub(crate) use methods::{DeviceAnswer, PendingMethods};
pub(crate) use nodes::attach_to_cluster;
pub(crate) use presence::{FENCED_CLOSE, run_fence, run_presence_flusher};
pub(crate) use readers::{Displaced, ReaderRefusal, ReaderTicket, Readers};
pub(crate) use scheduled_jobs::ScheduledJobs;
pub(crate) use twins::{TwinReply, TwinRequest, notify_desired_changes, serve_twin_request};

use std::sync::Arc;

use axum::http::{HeaderMap, header};
use chrono::{DateTime, Utc};
use ferrohub_auth::{AuthError, DeviceAuthMethod, KeyPair, SymmetricKey};
use ferrohub_registry::{AnyStore, IdentityAuth, Registry};
use ferrohub_types::{DeviceId, ErrorCode, ModuleId, Permission, PolicyName};

use crate::cluster::{ClusterEvent, Coordinator};
use crate::connections::Connections;
use crate::consumer_groups::ConsumerGroups;
use crate::eventlog::EventLog;
use crate::jobs::Jobs;
use crate::policies::Policies;
use crate::sessions::Sessions;
use crate::telemetry::{AuthScope, Origin};
use ferrohub_c2d::{AnyQueueStore, C2dQueues};
use tokio::sync::watch;

/// A source of the current time, so time-dependent behaviour can be tested without sleeping.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// The hub's shared state.
pub struct Hub {
    pub(crate) registry: Registry<AnyStore>,
    pub(crate) policies: Policies,
    pub(crate) events: Arc<dyn EventLog>,
    pub(crate) groups: ConsumerGroups,
    pub(crate) connections: Connections,
    pub(crate) c2d: C2dQueues<AnyQueueStore>,
    pub(crate) sessions: Sessions,
    pub(crate) limits: HubLimits,
    /// Live MQTT connections (accepted sockets, authenticated or not).
    pub(crate) mqtt_connections: std::sync::atomic::AtomicUsize,
    /// Every identity's message and connect budgets, kept across reconnects.
    pub(crate) budgets: Budgets,
    /// Direct method calls waiting for the device's answer.
    pub(crate) methods: PendingMethods,
    /// Event Hubs receivers per consumer group and partition, and their epochs.
    pub(crate) readers: Readers,
    pub(crate) jobs: Jobs,
    /// Scheduled jobs v2 (twin updates and method calls over many devices).
    pub(crate) scheduled_jobs: ScheduledJobs,
    /// How this node reaches the other nodes of a cluster (nothing for the embedded hub).
    pub(crate) coordinator: Arc<dyn Coordinator>,
    /// The presence the nodes of a cluster share, and what waits to be written to it.
    pub(crate) shared_presence: Option<presence::SharedPresence>,
    /// Whether this cluster node has fenced itself off from devices (see [`crate::fence`]).
    pub(crate) fence: presence::FenceState,
    /// Desired-property patches of identities connected here, put in version order.
    pub(crate) desired_order: std::sync::Mutex<desired_order::DesiredOrder>,
    shutdown: watch::Sender<bool>,
    host_names: Vec<String>,
    clock: Arc<dyn Clock>,
}

/// Limits the endpoints enforce.
#[derive(Debug, Clone)]
pub(crate) struct HubLimits {
    /// Most live MQTT connections.
    pub(crate) max_connections: usize,
    /// Telemetry a second one device may send, in Azure's 4 KB message units.
    pub(crate) device_messages_per_second: u32,
    /// New connections a second one identity may open (after a burst of the same size).
    pub(crate) device_connects_per_second: u32,
    /// New connections a second the hub accepts from all identities together.
    pub(crate) hub_connects_per_second: u32,
    /// How far behind its rate a device may fall before it is disconnected.
    pub(crate) max_throttle_backlog: std::time::Duration,
}

/// The stores and settings a [`Hub`] is built from.
pub(crate) struct HubParts {
    pub(crate) registry: Registry<AnyStore>,
    pub(crate) policies: Policies,
    pub(crate) events: Arc<dyn EventLog>,
    pub(crate) groups: ConsumerGroups,
    pub(crate) sessions: Sessions,
    pub(crate) c2d: C2dQueues<AnyQueueStore>,
    pub(crate) jobs: Jobs,
    pub(crate) scheduled_jobs: ferrohub_registry::scheduled_jobs::AnyJobStore,
    /// The lease and concurrency limit of jobs (`[jobs]`).
    pub(crate) job_settings: crate::config::JobsSettings,
    pub(crate) coordinator: Arc<dyn Coordinator>,
    pub(crate) presence: Option<Arc<dyn crate::presence::PresenceStore>>,
    pub(crate) presence_interval: std::time::Duration,
    pub(crate) fence: Option<crate::fence::FenceSettings>,
    pub(crate) host_names: Vec<String>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) limits: HubLimits,
}

impl Hub {
    pub(crate) fn new(parts: HubParts) -> Self {
        let HubParts {
            registry,
            policies,
            events,
            groups,
            sessions,
            c2d,
            jobs,
            scheduled_jobs,
            job_settings,
            coordinator,
            presence,
            presence_interval,
            fence,
            host_names,
            clock,
            limits,
        } = parts;
        let budgets = Budgets::new(&limits, std::time::Instant::now());
        Hub {
            registry,
            policies,
            events,
            groups,
            connections: Connections::default(),
            c2d,
            sessions,
            jobs,
            scheduled_jobs: ScheduledJobs::new(
                scheduled_jobs,
                coordinator.node().to_owned(),
                &job_settings,
            ),
            coordinator,
            shared_presence: presence
                .map(|store| presence::SharedPresence::new(store, presence_interval)),
            fence: presence::FenceState::new(fence),
            desired_order: std::sync::Mutex::default(),
            shutdown: watch::channel(false).0,
            limits,
            mqtt_connections: std::sync::atomic::AtomicUsize::new(0),
            budgets,
            methods: PendingMethods::default(),
            readers: Readers::default(),
            host_names,
            clock,
        }
    }

    /// Admits HTTPS telemetry `messages` of `origin` under the identity's budget (shared with
    /// its connections), or answers 429 with the time to wait: HTTPS has no connection to slow
    /// down, so a device over its rate is told to retry later (Azure's 429001
    /// ThrottlingException).
    pub(crate) fn admit_https(
        &self,
        origin: &Origin,
        messages: &[crate::telemetry::DeviceMessage],
    ) -> Result<(), HubError> {
        let identity = (origin.device_id.clone(), origin.module_id.clone());
        let bytes = messages
            .iter()
            .map(crate::telemetry::DeviceMessage::size)
            .sum();
        let now = std::time::Instant::now();
        match self
            .budgets
            .messages(&identity, now)
            .try_admit(bytes, messages.len(), now)
        {
            None => Ok(()),
            Some(wait) => Err(HubError::throttled(
                wait,
                "The device is sending faster than its message rate; retry later.",
            )),
        }
    }

    /// Whether the hub can do its work now: `Err` says what is failing.
    pub fn health(&self) -> Result<(), String> {
        self.events.health()?;
        self.coordinator.health()?;
        match self.fence.reason() {
            Some(why) => Err(format!("the node refuses devices: {why}")),
            None => Ok(()),
        }
    }

    /// This node's name in a cluster (`local` for the embedded hub).
    pub fn node(&self) -> &str {
        self.coordinator.node()
    }

    /// Registers a new live connection of `identity`, closing the older one here and, through
    /// the other nodes of a cluster, anywhere else.
    pub(crate) fn register_connection(
        &self,
        identity: crate::connections::Identity,
    ) -> crate::connections::Registration {
        let now = self.now();
        self.presence_connected(&identity, now);
        if self.coordinator.is_clustered() {
            self.coordinator.publish(ClusterEvent::Connected {
                node: self.coordinator.node().to_owned(),
                device: identity.0.to_string(),
                module: identity.1.as_ref().map(ToString::to_string),
                at_ms: now.timestamp_millis(),
            });
        }
        self.connections.register(identity, now)
    }

    /// Ends connection `id` of `identity` (a newer one may have replaced it already).
    pub(crate) fn unregister_connection(&self, identity: &crate::connections::Identity, id: u64) {
        let now = self.now();
        if !self.connections.unregister(identity, id, now) {
            return;
        }
        self.presence_disconnected(identity, now);
        if self.coordinator.is_clustered() {
            self.coordinator.publish(ClusterEvent::Disconnected {
                node: self.coordinator.node().to_owned(),
                device: identity.0.to_string(),
                module: identity.1.as_ref().map(ToString::to_string),
                at_ms: now.timestamp_millis(),
            });
        }
    }

    /// A receiver that turns true when the hub shuts down.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Tells every connection the hub is shutting down.
    pub(crate) fn begin_shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    /// The hub's name: its Event Hub-compatible name (`EntityPath`), the first label of its
    /// host name (`localhost` for `localhost`, `myhub` for `myhub.example.com`).
    pub fn hub_name(&self) -> &str {
        let host = self.host_names.first().map_or("", String::as_str);
        host.split('.').next().unwrap_or(host)
    }

    /// The names the hub answers to.
    pub fn host_names(&self) -> &[String] {
        &self.host_names
    }

    /// The current time.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The current time as seconds since the Unix epoch.
    fn now_secs(&self) -> u64 {
        u64::try_from(self.now().timestamp()).unwrap_or(0)
    }

    /// Authenticates a device (or module) presenting `token`: a SAS token signed with the
    /// identity's own key, or with a policy holding DeviceConnect scoped to it. The identity
    /// must exist and (for devices) be enabled. A cluster node that fenced itself refuses
    /// every device with 503 ServiceUnavailable (MQTT: CONNACK 3), which the SDKs retry.
    pub fn authenticate_device(
        &self,
        token: &str,
        device: &DeviceId,
        module: Option<&ModuleId>,
    ) -> Result<Origin, HubError> {
        self.admit_devices()?;
        let hosts: Vec<&str> = self.host_names.iter().map(String::as_str).collect();
        let identity = self.registry.identity(device, module);
        let method = ferrohub_auth::authorize_device(
            token,
            self.now_secs(),
            &hosts,
            device,
            module,
            |name| self.policies.get(name).cloned(),
            |_, _| identity.as_ref().and_then(key_pair),
        )?;
        let Some(identity) = identity else {
            // Reached only with a policy token: the signature was good, the identity is not
            // there.
            return Err(match module {
                Some(m) => HubError::module_not_found(device, m),
                None => HubError::device_not_found(device),
            });
        };
        let device_enabled = match module {
            None => identity.enabled,
            Some(_) => self
                .registry
                .identity(device, None)
                .is_some_and(|d| d.enabled),
        };
        if !device_enabled {
            return Err(HubError::new(
                ErrorCode::IotHubUnauthorizedAccess,
                format!("The device '{device}' is disabled."),
            ));
        }
        let auth_scope = match (&method, module) {
            (DeviceAuthMethod::Policy(_), _) => AuthScope::Hub,
            (_, Some(_)) => AuthScope::Module,
            (_, None) => AuthScope::Device,
        };
        Ok(Origin {
            device_id: device.clone(),
            module_id: module.cloned(),
            auth_scope,
            generation_id: identity.generation_id,
            model_id: None,
        })
    }

    /// The identity's credentials from the node's cache; in a cluster, an identity missing
    /// from it is read from the shared store first: it may have been created through another
    /// node a moment ago, before this node heard of it.
    pub async fn identity_current(
        &self,
        device: &DeviceId,
        module: Option<&ModuleId>,
    ) -> Option<IdentityAuth> {
        if let Some(identity) = self.registry.identity(device, module) {
            return Some(identity);
        }
        if !self.coordinator.is_clustered() {
            return None;
        }
        if let Err(e) = self.registry.refresh(device).await {
            tracing::warn!(device = %device, error = %e, "re-reading an identity failed");
            return None;
        }
        self.registry.identity(device, module)
    }

    /// [`Hub::authenticate_device`] for a device connecting or calling the device API. In a
    /// cluster, a refusal is checked once more after re-reading the identity from the shared
    /// store: it may have been created or given new keys through another node a moment ago,
    /// before this node heard of it.
    pub async fn authenticate_device_current(
        &self,
        token: &str,
        device: &DeviceId,
        module: Option<&ModuleId>,
    ) -> Result<Origin, HubError> {
        match self.authenticate_device(token, device, module) {
            Err(e) if self.coordinator.is_clustered() && !e.is_server_error() => {
                if let Err(refresh) = self.registry.refresh(device).await {
                    tracing::warn!(device = %device, error = %refresh, "re-reading an identity to authenticate it failed");
                    return Err(e);
                }
                self.authenticate_device(token, device, module)
            }
            result => result,
        }
    }

    /// Checks the `Authorization` header of a service request for `path`: a SAS token of a
    /// shared access policy holding one of `permissions`.
    pub fn authorize_service(
        &self,
        headers: &HeaderMap,
        path: &str,
        permissions: &[Permission],
    ) -> Result<PolicyName, HubError> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                HubError::new(
                    ErrorCode::IotHubUnauthorizedAccess,
                    "Unauthorized: the request carries no SharedAccessSignature.",
                )
            })?;
        self.authorize_service_token(token, path, permissions)
    }

    /// Checks a service `token` for `resource` (a path under the hub, such as
    /// `/messages/devicebound`): a SAS token of a shared access policy, in scope for the
    /// resource, holding one of `permissions`.
    pub fn authorize_service_token(
        &self,
        token: &str,
        resource: &str,
        permissions: &[Permission],
    ) -> Result<PolicyName, HubError> {
        let hosts: Vec<&str> = self.host_names.iter().map(String::as_str).collect();
        let now = self.now_secs();
        let mut last = None;
        for &perm in permissions {
            match ferrohub_auth::authorize_service(token, now, &hosts, resource, perm, |name| {
                self.policies.get(name).cloned()
            }) {
                Ok(name) => return Ok(name),
                Err(e @ AuthError::MissingPermission(_)) => last = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        Err(last
            .map(HubError::from)
            .unwrap_or_else(|| HubError::new(ErrorCode::IotHubUnauthorizedAccess, "Unauthorized")))
    }
}

/// The identity's symmetric keys, when it has usable ones.
fn key_pair(identity: &IdentityAuth) -> Option<KeyPair> {
    let primary = SymmetricKey::from_base64(&identity.primary_key).ok()?;
    let secondary = SymmetricKey::from_base64(&identity.secondary_key).ok()?;
    Some(KeyPair { primary, secondary })
}
