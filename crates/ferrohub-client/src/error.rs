//! What can go wrong when calling the hub, and how a failed response is read.

use ferrohub_api::ErrorBody;

/// Why a call to the hub failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The hub answered with an error status.
    #[error("{message} (HTTP {status})")]
    Api {
        /// The HTTP status code.
        status: u16,
        /// Azure's error code name, such as `DeviceNotFound`: from the `iothub-errorcode`
        /// header, else from the legacy `Message` (`ErrorCode:<Name>;<text>`).
        code: Option<String>,
        /// The human-readable explanation.
        message: String,
    },
    /// The request did not reach the hub, or its response could not be read (DNS, TCP, TLS,
    /// timeout).
    #[error("could not reach the hub: {0}")]
    Transport(#[source] reqwest::Error),
    /// The connection string cannot be used to call the service API.
    #[error("invalid connection string: {0}")]
    InvalidConnectionString(String),
    /// The CA certificate given to trust is not usable PEM.
    #[error("invalid CA certificate: {0}")]
    InvalidCertificate(String),
    /// An argument cannot be sent (an empty id, or one that a URL cannot carry).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The hub answered with success but with a body that is not what the API promises.
    #[error("could not decode the hub's response: {0}")]
    Decode(#[source] serde_json::Error),
}

impl ClientError {
    /// Azure's error code name (`DeviceNotFound`) for errors the hub reported, if it gave one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// The HTTP status for errors the hub reported.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Builds the error for a failed response from its status, `iothub-errorcode` header and
    /// body.
    ///
    /// Understands the legacy body (`{"Message":"ErrorCode:Name;text"}`), the current one (whose
    /// `Message` is itself JSON with `message`), and anything else (the raw text, or the
    /// status's reason phrase when the body is empty).
    pub(crate) fn from_response(status: u16, code_header: Option<&str>, body: &[u8]) -> Self {
        let header_code = code_header
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_owned);
        let parsed = serde_json::from_slice::<ErrorBody>(body).ok();
        let (body_code, message) = match &parsed {
            Some(b) => {
                let code = b
                    .code_name()
                    .map(str::to_owned)
                    .or_else(|| current_form_code(&b.message));
                (
                    code,
                    current_form_message(&b.message).unwrap_or_else(|| b.text().trim().to_owned()),
                )
            }
            None => (None, String::from_utf8_lossy(body).trim().to_owned()),
        };
        let message = if message.is_empty() {
            reason_phrase(status)
        } else {
            message
        };
        ClientError::Api {
            status,
            code: header_code.or(body_code),
            message,
        }
    }
}

/// The code name of the current error form (the direct-method errors 404103 and 504101 take
/// it), whose `Message` is a JSON object with a numeric `errorCode`; a number Ferrohub does not
/// know is kept as its digits.
fn current_form_code(message: &str) -> Option<String> {
    let inner: serde_json::Value = serde_json::from_str(message).ok()?;
    let number = inner.get("errorCode")?.as_u64()?;
    let known = u32::try_from(number)
        .ok()
        .and_then(ferrohub_types::ErrorCode::from_number);
    Some(known.map_or_else(|| number.to_string(), |c| c.name().to_owned()))
}

/// The text of the current error form, whose `Message` is a JSON object with a `message`.
fn current_form_message(message: &str) -> Option<String> {
    let inner: serde_json::Value = serde_json::from_str(message).ok()?;
    inner
        .get("message")
        .and_then(serde_json::Value::as_str)
        .map(|s| s.trim().to_owned())
}

fn reason_phrase(status: u16) -> String {
    reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .map_or_else(|| format!("HTTP status {status}"), str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_body_gives_code_and_text() {
        let body = br#"{"Message":"ErrorCode:DeviceNotFound;The device with ID 'd1' could not be found.","ExceptionMessage":"Tracking ID:abc-TimeStamp:01/02/2025 10:00:00"}"#;
        let e = ClientError::from_response(404, None, body);
        assert_eq!(e.code(), Some("DeviceNotFound"));
        assert_eq!(e.status(), Some(404));
        match e {
            ClientError::Api { message, .. } => {
                assert_eq!(message, "The device with ID 'd1' could not be found.");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn header_wins_over_body() {
        let body = br#"{"Message":"ErrorCode:ServerError;boom","ExceptionMessage":""}"#;
        let e = ClientError::from_response(412, Some("PreconditionFailed"), body);
        assert_eq!(e.code(), Some("PreconditionFailed"));
    }

    #[test]
    fn current_json_form_gives_inner_message() {
        let body = br#"{"Message":"{\"errorCode\":404103,\"trackingId\":\"x\",\"message\":\"The operation failed because the device is offline.\",\"info\":{}}","ExceptionMessage":""}"#;
        let e = ClientError::from_response(404, Some("DeviceNotOnline"), body);
        assert_eq!(e.code(), Some("DeviceNotOnline"));
        assert_eq!(
            e.to_string(),
            "The operation failed because the device is offline. (HTTP 404)"
        );
    }

    #[test]
    fn current_json_form_gives_the_code_without_a_header() {
        let body = br#"{"Message":"{\"errorCode\":504101,\"trackingId\":\"x\",\"message\":\"Timed out waiting for the response from device.\",\"info\":{},\"timestampUtc\":\"2019-12-03T15:00:09.0082523Z\"}","ExceptionMessage":""}"#;
        let e = ClientError::from_response(504, None, body);
        assert_eq!(e.code(), Some("GatewayTimeout"));
        assert_eq!(
            e.to_string(),
            "Timed out waiting for the response from device. (HTTP 504)"
        );
        let body =
            br#"{"Message":"{\"errorCode\":409999,\"message\":\"new\"}","ExceptionMessage":""}"#;
        assert_eq!(
            ClientError::from_response(409, None, body).code(),
            Some("409999")
        );
    }

    #[test]
    fn non_json_and_empty_bodies() {
        let e = ClientError::from_response(502, None, b"  bad gateway\n");
        assert_eq!(e.code(), None);
        assert_eq!(e.to_string(), "bad gateway (HTTP 502)");
        let e = ClientError::from_response(503, Some(" "), b"");
        assert_eq!(e.code(), None);
        assert_eq!(e.to_string(), "Service Unavailable (HTTP 503)");
    }

    #[test]
    fn other_variants_have_no_code() {
        let e = ClientError::InvalidConnectionString("x".into());
        assert_eq!(e.code(), None);
        assert_eq!(e.status(), None);
    }
}
