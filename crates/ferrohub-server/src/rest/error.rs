//! `ApiError`: every failure of the REST API, rendered as Azure renders it.
//!
//! The body is Azure's legacy form `{"Message":"ErrorCode:<Name>;<text>","ExceptionMessage":…}`
//! and the `iothub-errorcode` header repeats the name: both Node's and C#'s service SDKs read
//! that combination (azure-contract §8.6).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ferrohub_api::{ERROR_CODE_HEADER, ErrorBody, JSON_CONTENT_TYPE};
use ferrohub_auth::AuthError;
use ferrohub_registry::RegistryError;
use ferrohub_types::ErrorCode;

/// A failed request: an Azure error code and the text a client sees.
#[derive(Debug)]
pub struct ApiError {
    /// The Azure error code; its first three digits are the HTTP status.
    pub code: ErrorCode,
    /// Human-readable text (never secrets).
    pub message: String,
    /// Seconds for a `Retry-After` header (throttling).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 429001 ThrottlingException with `Retry-After` rounded up to whole seconds.
    pub fn throttled(wait: std::time::Duration) -> Self {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        ApiError {
            retry_after: Some(secs.max(1)),
            ..Self::new(
                ErrorCode::ThrottlingException,
                "The device is sending faster than its message rate; retry later.",
            )
        }
    }

    /// 400004 ArgumentInvalid.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ArgumentInvalid, message)
    }

    /// The response body for this error.
    ///
    /// Direct-method failures (404103 DeviceNotOnline, 504101 GatewayTimeout) take the form the
    /// real hub gives them today: the JSON error object inside `Message` (twins-methods-contract
    /// §4.4); every other error the legacy form.
    pub fn body(&self) -> ErrorBody {
        let now = chrono::Utc::now();
        if matches!(
            self.code,
            ErrorCode::DeviceNotOnline | ErrorCode::GatewayTimeout
        ) {
            let tracking = format!(
                "{}-TimeStamp:{}",
                crate::random_hex(16),
                now.format("%m/%d/%Y %H:%M:%S")
            );
            let inner = serde_json::json!({
                "errorCode": self.code.number(),
                "trackingId": tracking,
                "message": self.message,
                "info": {},
                "timestampUtc": now.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            });
            return ErrorBody {
                message: inner.to_string(),
                exception_message: String::new(),
            };
        }
        ErrorBody {
            message: format!("ErrorCode:{};{}", self.code.name(), self.message),
            exception_message: format!(
                "Tracking ID:{}-TimeStamp:{}",
                crate::random_hex(16),
                now.format("%m/%d/%Y %H:%M:%S")
            ),
        }
    }
}

impl From<crate::hub::HubError> for ApiError {
    fn from(e: crate::hub::HubError) -> Self {
        ApiError {
            code: e.code,
            message: e.message,
            // Whole seconds, rounded up, at least one.
            retry_after: e
                .retry_after
                .map(|w| (w.as_secs() + u64::from(w.subsec_nanos() > 0)).max(1)),
        }
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        let code = e.error_code();
        if code.http_status() >= 500 {
            tracing::error!(error = %e, "registry operation failed");
        }
        ApiError::new(code, e.to_string())
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        tracing::debug!(error = %e, "request refused");
        ApiError::new(e.error_code(), e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self.body()).unwrap_or_default();
        let mut resp = (status, body).into_response();
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(JSON_CONTENT_TYPE),
        );
        headers.insert(
            ERROR_CODE_HEADER,
            HeaderValue::from_static(self.code.name()),
        );
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}
