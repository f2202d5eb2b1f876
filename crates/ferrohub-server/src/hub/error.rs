//! [`HubError`]: why a hub operation failed, in the hub's own terms.
//!
//! Every protocol calls the same operations (authenticate, submit telemetry, send and settle
//! cloud-to-device messages, …), so their failures are transport-neutral: an Azure error code
//! (the three leading digits are its HTTP status), a text safe to show the client, and a
//! back-off for throttling. Each driver renders it its own way: the REST API as Azure's error
//! body and `iothub-errorcode` header, MQTT as a CONNACK code or a closed connection, AMQP as an
//! error condition.

use std::fmt;
use std::time::Duration;

use ferrohub_auth::AuthError;
use ferrohub_c2d::C2dError;
use ferrohub_registry::RegistryError;
use ferrohub_types::{DeviceId, ErrorCode, ModuleId};

/// A failed hub operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubError {
    /// Azure's error code.
    pub code: ErrorCode,
    /// Human-readable text; never a secret, never an internal cause (those are logged).
    pub message: String,
    /// How long the caller should wait before retrying (throttling).
    pub retry_after: Option<Duration>,
}

impl HubError {
    /// An error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        HubError {
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 400004 ArgumentInvalid.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ArgumentInvalid, message)
    }

    /// 429001 ThrottlingException: retry after `wait`.
    pub fn throttled(wait: Duration, message: impl Into<String>) -> Self {
        HubError {
            retry_after: Some(wait),
            ..Self::new(ErrorCode::ThrottlingException, message)
        }
    }

    /// 404001 DeviceNotFound.
    pub fn device_not_found(device: &DeviceId) -> Self {
        Self::new(
            ErrorCode::DeviceNotFound,
            format!("The device with ID '{device}' could not be found."),
        )
    }

    /// 404010 ModuleNotFound.
    pub fn module_not_found(device: &DeviceId, module: &ModuleId) -> Self {
        Self::new(
            ErrorCode::ModuleNotFound,
            format!("The module '{module}' of device '{device}' could not be found."),
        )
    }

    /// 503001 ServiceUnavailable, after logging `cause` (which the client does not see).
    pub fn unavailable(what: &str, cause: &dyn fmt::Display) -> Self {
        tracing::error!(error = %cause, "{what} failed");
        Self::new(
            ErrorCode::ServiceUnavailable,
            format!("{what} is unavailable; retry later."),
        )
    }

    /// Whether the hub, not the caller, is at fault (5xx).
    pub fn is_server_error(&self) -> bool {
        self.code.http_status() >= 500
    }
}

impl fmt::Display for HubError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for HubError {}

impl From<RegistryError> for HubError {
    fn from(e: RegistryError) -> Self {
        let code = e.error_code();
        if code.http_status() >= 500 {
            tracing::error!(error = %e, "registry operation failed");
        }
        HubError::new(code, e.to_string())
    }
}

impl From<AuthError> for HubError {
    fn from(e: AuthError) -> Self {
        tracing::debug!(error = %e, "refused");
        HubError::new(e.error_code(), e.to_string())
    }
}

impl From<C2dError> for HubError {
    fn from(e: C2dError) -> Self {
        let code = e.error_code();
        if code.http_status() >= 500 {
            tracing::error!(error = %e, "cloud-to-device operation failed");
        }
        HubError::new(code, e.to_string())
    }
}
