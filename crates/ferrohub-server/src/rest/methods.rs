//! Direct methods: `POST /twins/{id}/methods` and `POST /twins/{id}/modules/{mid}/methods`
//! (twins-methods-contract §4.2). The call waits for the device's answer.

use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use ferrohub_types::{DeviceId, ErrorCode, ModuleId, Permission};
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use super::error::ApiError;
use super::extract::{DevicePath, ModulePath};
use super::{HubState, json};
use crate::hub::{HubError, MethodCall};

/// Largest method payload the service may send, and a device may answer with.
pub(crate) const MAX_METHOD_PAYLOAD: usize = 128 * 1024;

/// `CloudToDeviceMethod` as the SDKs send it. Extra fields (Node sends its whole parameter
/// object) are ignored.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CloudToDeviceMethod {
    method_name: Option<String>,
    payload: Option<Box<RawValue>>,
    response_timeout_in_seconds: Option<Value>,
    connect_timeout_in_seconds: Option<Value>,
}

/// Whether `name` is a method name Azure accepts: printable ASCII except the separators the
/// topic grammar and HTTP use.
fn valid_method_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"$()<>@,;:\\\"/[]?={}".contains(&b))
}

fn seconds(
    value: Option<&Value>,
    what: &str,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<Duration, HubError> {
    let secs = match value {
        None | Some(Value::Null) => default,
        Some(v) => v.as_u64().ok_or_else(|| {
            HubError::invalid(format!("{what} must be a whole number of seconds."))
        })?,
    };
    if !range.contains(&secs) {
        return Err(HubError::invalid(format!(
            "{what} must be between {} and {} seconds, not {secs}.",
            range.start(),
            range.end()
        )));
    }
    Ok(Duration::from_secs(secs))
}

/// Validates a call's body.
fn parse_call(body: &[u8]) -> Result<MethodCall, HubError> {
    let c: CloudToDeviceMethod = serde_json::from_slice(body)
        .map_err(|e| HubError::invalid(format!("The request body is not valid: {e}")))?;
    let name = c
        .method_name
        .ok_or_else(|| HubError::invalid("methodName is required."))?;
    if !valid_method_name(&name) {
        return Err(HubError::invalid(format!(
            "The method name {name:?} is not valid: use printable ASCII without spaces or $()<>@,;:\\\"/[]?={{}}."
        )));
    }
    // The device always gets JSON: `null` for no payload (Node's SDK cannot parse an empty
    // body, and the real hub sends `null`).
    let payload = c.payload.map_or_else(
        || Bytes::from_static(b"null"),
        |p| Bytes::copy_from_slice(p.get().as_bytes()),
    );
    if payload.len() > MAX_METHOD_PAYLOAD {
        return Err(HubError::new(
            ErrorCode::MessageTooLarge,
            format!(
                "The method payload is {} bytes; the limit is {MAX_METHOD_PAYLOAD}.",
                payload.len()
            ),
        ));
    }
    Ok(MethodCall {
        name,
        payload,
        response_timeout: seconds(
            c.response_timeout_in_seconds.as_ref(),
            "responseTimeoutInSeconds",
            30,
            5..=300,
        )?,
        connect_timeout: seconds(
            c.connect_timeout_in_seconds.as_ref(),
            "connectTimeoutInSeconds",
            0,
            0..=300,
        )?,
    })
}

/// Invokes a method on `identity` and renders the answer: 200 `{status, payload}` whatever
/// status the device chose.
async fn invoke(
    hub: &HubState,
    identity: (DeviceId, Option<ModuleId>),
    body: &[u8],
) -> Result<Response, ApiError> {
    let call = parse_call(body)?;
    match &identity.1 {
        None => {
            hub.registry
                .identity(&identity.0, None)
                .ok_or_else(|| HubError::device_not_found(&identity.0))?;
        }
        Some(m) => {
            hub.registry
                .identity(&identity.0, Some(m))
                .ok_or_else(|| HubError::module_not_found(&identity.0, m))?;
        }
    }
    let result = hub.invoke_method(&identity, call).await?;
    let payload: Value = if result.payload.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(&result.payload)
            .map_err(|_| HubError::invalid("The device's method response is not valid JSON."))?
    };
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "status": result.status, "payload": payload }),
        None,
    ))
}

/// Invokes a direct method on a device and returns its answer.
#[utoipa::path(post, path = "/twins/{id}/methods", tag = "methods",
    params(("id" = String, Path, description = "Device id")),
    request_body(content = serde_json::Value, description = "CloudToDeviceMethod: methodName, payload, responseTimeoutInSeconds (5-300, default 30), connectTimeoutInSeconds (0-300, default 0)"),
    responses((status = 200, description = "`{status, payload}` from the device"),
              (status = 404, body = ferrohub_api::ErrorBody), (status = 504, body = ferrohub_api::ErrorBody)))]
pub(crate) async fn invoke_device_method(
    hub: HubState,
    uri: Uri,
    headers: HeaderMap,
    DevicePath(id): DevicePath,
    req: axum::extract::Request,
) -> Result<Response, ApiError> {
    hub.authorize_service(&headers, uri.path(), &[Permission::ServiceConnect])?;
    let body = super::extract::bytes(req).await?;
    invoke(&hub, (id, None), &body).await
}

/// Invokes a direct method on a module and returns its answer.
#[utoipa::path(post, path = "/twins/{id}/modules/{mid}/methods", tag = "methods",
    params(("id" = String, Path, description = "Device id"), ("mid" = String, Path, description = "Module id")),
    request_body(content = serde_json::Value, description = "CloudToDeviceMethod"),
    responses((status = 200, description = "`{status, payload}` from the module"),
              (status = 404, body = ferrohub_api::ErrorBody), (status = 504, body = ferrohub_api::ErrorBody)))]
pub(crate) async fn invoke_module_method(
    hub: HubState,
    uri: Uri,
    headers: HeaderMap,
    ModulePath(id, mid): ModulePath,
    req: axum::extract::Request,
) -> Result<Response, ApiError> {
    hub.authorize_service(&headers, uri.path(), &[Permission::ServiceConnect])?;
    let body = super::extract::bytes(req).await?;
    invoke(&hub, (id, Some(mid)), &body).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_as_the_sdks_send_them() {
        let node = parse_call(br#"{"methodName":"ping","responseTimeoutInSeconds":30,"connectTimeoutInSeconds":0,"payload":null}"#).expect("node");
        assert_eq!(node.payload, Bytes::from_static(b"null"));
        assert_eq!(node.response_timeout, Duration::from_secs(30));
        let py = parse_call(br#"{"methodName": "ping", "payload": ""}"#).expect("python");
        assert_eq!(py.payload, Bytes::from_static(b"\"\""));
        assert_eq!(py.connect_timeout, Duration::ZERO);
        let full = parse_call(br#"{"methodName": "reboot", "payload": {"delay": 5}, "responseTimeoutInSeconds": 5, "connectTimeoutInSeconds": 300, "extra": 1}"#).expect("full");
        assert_eq!(full.payload, Bytes::from_static(br#"{"delay": 5}"#));
        assert_eq!(full.connect_timeout, Duration::from_secs(300));
    }

    #[test]
    fn bad_calls_are_refused() {
        for body in [
            &br#"{"payload": 1}"#[..],
            br#"{"methodName": "a b"}"#,
            br#"{"methodName": "a/b"}"#,
            br#"{"methodName": "m", "responseTimeoutInSeconds": 4}"#,
            br#"{"methodName": "m", "responseTimeoutInSeconds": 301}"#,
            br#"{"methodName": "m", "connectTimeoutInSeconds": -1}"#,
            br#"[]"#,
        ] {
            assert!(
                parse_call(body).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let big = format!(
            r#"{{"methodName":"m","payload":"{}"}}"#,
            "x".repeat(MAX_METHOD_PAYLOAD)
        );
        assert_eq!(
            parse_call(big.as_bytes()).expect_err("too big").code,
            ErrorCode::MessageTooLarge
        );
    }
}
