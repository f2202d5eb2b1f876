//! The device-facing HTTPS API: telemetry (`POST /devices/{id}/messages/events`), single and
//! batched. Devices authenticate with a SAS token of their own key or of a DeviceConnect policy
//! scoped to them; the device in the path must be the token's.

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use ferrohub_types::ErrorCode;
use serde::Deserialize;

use super::HubState;
use super::error::ApiError;
use super::extract::DevicePath;
use crate::telemetry::{DeviceMessage, MAX_MESSAGE_BYTES};

/// Media type of a batch of messages.
const BATCH_CONTENT_TYPE: &str = "application/vnd.microsoft.iothub.json";

/// HTTP headers that carry device-settable system properties, and the property each sets.
const SYSTEM_HEADERS: [(&str, &str); 9] = [
    ("iothub-messageid", "message-id"),
    ("iothub-correlationid", "correlation-id"),
    ("iothub-userid", "user-id"),
    ("iothub-expiry", "absolute-expiry-time"),
    ("iothub-contenttype", "content-type"),
    ("iothub-contentencoding", "content-encoding"),
    ("iothub-creationtimeutc", "iothub-creation-time-utc"),
    ("iothub-interface-id", "iothub-interface-id"),
    ("dt-subject", "dt-subject"),
];

const APP_PREFIX: &str = "iothub-app-";

/// Property name/value pairs.
type Properties = Vec<(String, String)>;

/// Splits `(name, value)` pairs into system and application properties; other names are
/// ignored (`iothub-to`, `Content-Type`, …).
fn properties<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> (Properties, Properties) {
    let mut system = Vec::new();
    let mut application = Vec::new();
    for (name, value) in pairs {
        let lower = name.to_ascii_lowercase();
        if lower.starts_with(APP_PREFIX) {
            // Keep the application property's own spelling.
            application.push((name[APP_PREFIX.len()..].to_owned(), value.to_owned()));
        } else if let Some((_, prop)) = SYSTEM_HEADERS.iter().find(|(h, _)| *h == lower) {
            system.push(((*prop).to_owned(), value.to_owned()));
        }
    }
    (system, application)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BatchItem {
    body: serde_json::Value,
    base64_encoded: Option<bool>,
    #[serde(default)]
    properties: std::collections::BTreeMap<String, String>,
}

fn batch(body: &[u8]) -> Result<Vec<DeviceMessage>, ApiError> {
    let items: Vec<BatchItem> = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(format!("The batch is not a valid JSON array: {e}")))?;
    if items.is_empty() {
        return Err(ApiError::invalid("The batch holds no message."));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let bytes = match (item.body, item.base64_encoded.unwrap_or(true)) {
                (serde_json::Value::String(s), true) => base64::engine::general_purpose::STANDARD
                    .decode(s.as_bytes())
                    .map_err(|_| {
                        ApiError::invalid(format!("Message {i} of the batch is not valid base64."))
                    })?,
                (serde_json::Value::String(s), false) => s.into_bytes(),
                (other, false) => other.to_string().into_bytes(),
                (_, true) => {
                    return Err(ApiError::invalid(format!(
                        "Message {i} of the batch must have a base64 string body."
                    )));
                }
            };
            let (system, application) = properties(
                item.properties
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str())),
            );
            Ok(DeviceMessage {
                system,
                application,
                body: Bytes::from(bytes),
            })
        })
        .collect()
}

/// Sends one message (the body as is) or, with `Content-Type: application/vnd.microsoft.iothub.json`,
/// a batch. 204 once every message is durable.
#[utoipa::path(post, path = "/devices/{id}/messages/events", tag = "device",
    params(("id" = String, Path, description = "Device id")),
    request_body(content = String, description = "The message body, or a JSON array batch"),
    responses((status = 204), (status = 401, body = ferrohub_api::ErrorBody),
              (status = 413, body = ferrohub_api::ErrorBody)))]
pub(crate) async fn send_event(
    hub: HubState,
    headers: HeaderMap,
    DevicePath(id): DevicePath,
    req: axum::extract::Request,
) -> Result<Response, ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::IotHubUnauthorizedAccess,
                "Unauthorized: the request carries no SharedAccessSignature.",
            )
        })?;
    let origin = hub.authenticate_device_current(token, &id, None).await?;
    let body = super::extract::bytes(req).await?;
    if body.len() > MAX_MESSAGE_BYTES {
        return Err(ApiError::new(
            ErrorCode::MessageTooLarge,
            format!(
                "The message is {} bytes; the limit is {MAX_MESSAGE_BYTES}.",
                body.len()
            ),
        ));
    }
    let is_batch = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.to_ascii_lowercase().starts_with(BATCH_CONTENT_TYPE));
    let messages = if is_batch {
        batch(&body)?
    } else {
        let (system, application) = properties(
            headers
                .iter()
                .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str(), v))),
        );
        vec![DeviceMessage {
            system,
            application,
            body,
        }]
    };
    hub.admit_https(&origin, &messages)?;
    hub.ingest(&origin, messages).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
