//! The `Hub` handle: the state every endpoint shares (registry, policies, names, clock) and the
//! decisions they all make the same way, such as who a request's token speaks for.

use std::sync::Arc;

use axum::http::{HeaderMap, header};
use chrono::{DateTime, Utc};
use ferrohub_auth::AuthError;
use ferrohub_registry::{Registry, SqliteStore};
use ferrohub_types::{ErrorCode, Permission, PolicyName};

use crate::policies::Policies;
use crate::rest::error::ApiError;

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
    host_names: Vec<String>,
    clock: Arc<dyn Clock>,
}

impl Hub {
    pub(crate) fn new(
        registry: Registry<SqliteStore>,
        policies: Policies,
        host_names: Vec<String>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Hub {
            registry,
            policies,
            host_names,
            clock,
        }
    }

    /// The current time.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
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
        let now = u64::try_from(self.now().timestamp()).unwrap_or(0);
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
