//! `ApiError`: every failure of the REST API, rendered as Azure renders it.
//!
//! The body is Azure's legacy form `{"Message":"ErrorCode:<Name>;<text>","ExceptionMessage":…}`
//! and the `iothub-errorcode` header repeats the name: both Node's and C#'s service SDKs read
//! that combination (azure-contract §8.6).
//!
//! # Server errors
//!
//! The text of a 5xx error is an internal cause (a store's or a task's failure): it goes to the
//! log, with the response's tracking id, and the client gets a generic text and that tracking
//! id, which is all an operator needs to find the cause. 4xx texts are about the request and
//! are shown as they are (they never hold secrets).

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

    /// Whether this error takes the form the real hub gives direct-method failures today
    /// (404103 DeviceNotOnline, 504101 GatewayTimeout): the JSON error object inside `Message`
    /// (twins-methods-contract §4.4). Their texts are about the device, not internal causes.
    fn is_method_failure(&self) -> bool {
        matches!(
            self.code,
            ErrorCode::DeviceNotOnline | ErrorCode::GatewayTimeout
        )
    }

    /// Whether the text is an internal cause: a server error other than a direct-method failure.
    fn hides_cause(&self) -> bool {
        self.code.http_status() >= 500 && !self.is_method_failure()
    }

    /// The response body for this error with `tracking_id`, as the client sees it: a server
    /// error's text replaced by [`SERVER_ERROR_TEXT`]; direct-method failures in the JSON form,
    /// every other error in the legacy form.
    pub fn body(&self, tracking_id: &str) -> ErrorBody {
        let now = chrono::Utc::now();
        if self.is_method_failure() {
            let tracking = format!(
                "{tracking_id}-TimeStamp:{}",
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
        let text = if self.hides_cause() {
            SERVER_ERROR_TEXT
        } else {
            self.message.as_str()
        };
        legacy_body(self.code.name(), text, tracking_id)
    }
}

/// What a client is told about a server error; the cause is logged under the tracking id.
pub const SERVER_ERROR_TEXT: &str =
    "The hub failed to handle the request; its log has the cause under this tracking id.";

/// Azure's legacy error body.
fn legacy_body(name: &str, text: &str, tracking_id: &str) -> ErrorBody {
    ErrorBody {
        message: format!("ErrorCode:{name};{text}"),
        exception_message: format!(
            "Tracking ID:{tracking_id}-TimeStamp:{}",
            chrono::Utc::now().format("%m/%d/%Y %H:%M:%S")
        ),
    }
}

/// A response in Azure's error shape: `status`, `iothub-errorcode: <name>`, the legacy body.
fn render(status: StatusCode, name: &'static str, body: &ErrorBody) -> Response {
    let body = serde_json::to_vec(body).unwrap_or_default();
    let mut resp = (status, body).into_response();
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(JSON_CONTENT_TYPE),
    );
    headers.insert(ERROR_CODE_HEADER, HeaderValue::from_static(name));
    resp
}

/// The name a wrong method is answered with. Azure's code list has no 405 code; its
/// `InvalidOperation` (400003) says what happened, and the SDKs take the exception type from the
/// HTTP status, so the status stays HTTP's 405 Method Not Allowed.
pub const METHOD_NOT_ALLOWED_NAME: &str = "InvalidOperation";

/// 405 for a known path with a method it does not serve, in Azure's error shape.
pub fn method_not_allowed(method: &axum::http::Method, path: &str) -> Response {
    let body = legacy_body(
        METHOD_NOT_ALLOWED_NAME,
        &format!("The method {method} is not allowed on {path}."),
        &crate::random_hex(16),
    );
    render(
        StatusCode::METHOD_NOT_ALLOWED,
        METHOD_NOT_ALLOWED_NAME,
        &body,
    )
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
        // A server error's cause is logged with its tracking id when it is answered.
        ApiError::new(e.error_code(), e.to_string())
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
        let tracking_id = crate::random_hex(16);
        if self.hides_cause() {
            tracing::error!(
                tracking_id = %tracking_id,
                code = self.code.name(),
                cause = %self.message,
                "request failed with a server error"
            );
        }
        let mut resp = render(status, self.code.name(), &self.body(&tracking_id));
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_hide_their_cause() {
        let e = ApiError::new(ErrorCode::ServerError, "disk /var/lib/x: I/O error");
        let body = e.body("abc");
        assert_eq!(
            body.message,
            format!("ErrorCode:ServerError;{SERVER_ERROR_TEXT}")
        );
        assert!(
            body.exception_message
                .starts_with("Tracking ID:abc-TimeStamp:")
        );
        let e = ApiError::invalid("The id is not valid.");
        assert_eq!(
            e.body("t").message,
            "ErrorCode:ArgumentInvalid;The id is not valid."
        );
    }
}
