//! The `Hub` handle: the state every endpoint shares (registry, policies, names, clock) and the
//! decisions they all make the same way, such as who a request's token speaks for.

use std::sync::Arc;

use axum::http::{HeaderMap, header};
use chrono::{DateTime, Utc};
use ferrohub_auth::{AuthError, DeviceAuthMethod, KeyPair, SymmetricKey};
use ferrohub_registry::{IdentityAuth, Registry, SqliteStore};
use ferrohub_types::{DeviceId, ErrorCode, ModuleId, Permission, PolicyName};

use crate::connections::Connections;
use crate::consumer_groups::ConsumerGroups;
use crate::eventlog::EventLog;
use crate::jobs::Jobs;
use crate::policies::Policies;
use crate::rest::error::ApiError;
use crate::sessions::SessionStore;
use crate::telemetry::{AuthScope, Origin};
use ferrohub_c2d::{C2dQueues, SqliteQueueStore};
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
    pub(crate) registry: Registry<SqliteStore>,
    pub(crate) policies: Policies,
    pub(crate) events: Arc<dyn EventLog>,
    pub(crate) groups: ConsumerGroups,
    pub(crate) connections: Connections,
    pub(crate) c2d: C2dQueues<SqliteQueueStore>,
    pub(crate) sessions: Arc<SessionStore>,
    pub(crate) limits: HubLimits,
    /// Live MQTT connections (accepted sockets, authenticated or not).
    pub(crate) mqtt_connections: std::sync::atomic::AtomicUsize,
    /// Per-device message rate of the HTTPS device API.
    pub(crate) https_rates:
        std::sync::Mutex<std::collections::HashMap<DeviceId, crate::limits::TokenBucket>>,
    pub(crate) jobs: Jobs,
    shutdown: watch::Sender<bool>,
    host_names: Vec<String>,
    clock: Arc<dyn Clock>,
}

/// Limits the endpoints enforce.
#[derive(Debug, Clone)]
pub(crate) struct HubLimits {
    /// Most live MQTT connections.
    pub(crate) max_connections: usize,
    /// Telemetry messages a second one device may send.
    pub(crate) device_messages_per_second: u32,
    /// How far behind its rate a device may fall before it is disconnected.
    pub(crate) max_throttle_backlog: std::time::Duration,
}

/// The stores and settings a [`Hub`] is built from.
pub(crate) struct HubParts {
    pub(crate) registry: Registry<SqliteStore>,
    pub(crate) policies: Policies,
    pub(crate) events: Arc<dyn EventLog>,
    pub(crate) groups: ConsumerGroups,
    pub(crate) sessions: Arc<SessionStore>,
    pub(crate) c2d: C2dQueues<SqliteQueueStore>,
    pub(crate) jobs: Jobs,
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
            host_names,
            clock,
            limits,
        } = parts;
        Hub {
            registry,
            policies,
            events,
            groups,
            connections: Connections::default(),
            c2d,
            sessions,
            jobs,
            shutdown: watch::channel(false).0,
            limits,
            mqtt_connections: std::sync::atomic::AtomicUsize::new(0),
            https_rates: std::sync::Mutex::new(std::collections::HashMap::new()),
            host_names,
            clock,
        }
    }

    /// Admits `count` HTTPS messages of `device` under its message rate, or answers 429 with the
    /// seconds to wait. HTTPS has no connection to slow down, so a device over its rate is told
    /// to retry later (Azure's 429001 ThrottlingException).
    pub(crate) fn admit_https(&self, device: &DeviceId, count: usize) -> Result<(), ApiError> {
        let now = std::time::Instant::now();
        let Ok(mut rates) = self.https_rates.lock() else {
            return Ok(());
        };
        if rates.len() > 100_000 {
            // Buckets of devices that went quiet are full again; forget them.
            rates.clear();
        }
        let bucket = rates.entry(device.clone()).or_insert_with(|| {
            crate::limits::TokenBucket::new(
                self.limits.device_messages_per_second,
                std::time::Duration::ZERO,
                now,
            )
        });
        for _ in 0..count.max(1) {
            if let Some(wait) = bucket.try_take(now) {
                return Err(ApiError::throttled(wait));
            }
        }
        Ok(())
    }

    /// A receiver that turns true when the hub shuts down.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Tells every connection the hub is shutting down.
    pub(crate) fn begin_shutdown(&self) {
        let _ = self.shutdown.send(true);
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
    /// must exist and (for devices) be enabled.
    pub fn authenticate_device(
        &self,
        token: &str,
        device: &DeviceId,
        module: Option<&ModuleId>,
    ) -> Result<Origin, ApiError> {
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
                Some(m) => ApiError::new(
                    ErrorCode::ModuleNotFound,
                    format!("The module '{m}' of device '{device}' could not be found."),
                ),
                None => ApiError::new(
                    ErrorCode::DeviceNotFound,
                    format!("The device with ID '{device}' could not be found."),
                ),
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
            return Err(ApiError::new(
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

    /// Checks the `Authorization` header of a service request for `path`: a SAS token of a
    /// shared access policy holding one of `permissions`.
    pub fn authorize_service(
        &self,
        headers: &HeaderMap,
        path: &str,
        permissions: &[Permission],
    ) -> Result<PolicyName, ApiError> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::IotHubUnauthorizedAccess,
                    "Unauthorized: the request carries no SharedAccessSignature.",
                )
            })?;
        let hosts: Vec<&str> = self.host_names.iter().map(String::as_str).collect();
        let now = self.now_secs();
        let mut last = None;
        for &perm in permissions {
            match ferrohub_auth::authorize_service(token, now, &hosts, path, perm, |name| {
                self.policies.get(name).cloned()
            }) {
                Ok(name) => return Ok(name),
                Err(e @ AuthError::MissingPermission(_)) => last = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        Err(last
            .map(ApiError::from)
            .unwrap_or_else(|| ApiError::new(ErrorCode::IotHubUnauthorizedAccess, "Unauthorized")))
    }
}

/// The identity's symmetric keys, when it has usable ones.
fn key_pair(identity: &IdentityAuth) -> Option<KeyPair> {
    let primary = SymmetricKey::from_base64(&identity.primary_key).ok()?;
    let secondary = SymmetricKey::from_base64(&identity.secondary_key).ok()?;
    Some(KeyPair { primary, secondary })
}
