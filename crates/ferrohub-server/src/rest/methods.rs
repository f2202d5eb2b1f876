//! Direct methods: `POST /twins/{id}/methods` and `POST /twins/{id}/modules/{mid}/methods`
//! (twins-methods-contract §4.2). The call waits for the device's answer.
//!
//! The request is read with `ferrohub-twin`'s [`CloudToDeviceMethod`] (defaults 30 s / 0 s,
//! ranges 5–300 / 0–300, 128 KB payloads, the method-name character set). The answer is 200
//! `{"status":…,"payload":…}` whatever status the device chose; a device that is not reachable
//! for methods (404103) or does not answer in time (504101) gets the bodies the real hub sends
//! today, the JSON error inside the legacy `Message` (§4.4), with the `iothub-errorcode` header.

use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use ferrohub_api::{ERROR_CODE_HEADER, JSON_CONTENT_TYPE};
use ferrohub_twin::CloudToDeviceMethod;
use ferrohub_types::{DeviceId, ErrorCode, ModuleId, Permission};

use super::error::ApiError;
use super::extract::{DevicePath, ModulePath};
use super::{HubState, json};
use crate::hub::HubError;

/// The response of a method call that failed: 404103 and 504101 in the form the real hub gives
/// them (JSON inside `Message`, `info.timeout` the connect timeout), anything else as every
/// other API error.
fn failure(hub: &HubState, call: &CloudToDeviceMethod, e: HubError) -> Response {
    let now = hub.now();
    let tracking_id = format!(
        "{}-TimeStamp:{}",
        crate::random_hex(16),
        now.format("%m/%d/%Y %H:%M:%S")
    );
    let body = match e.code {
        ErrorCode::DeviceNotOnline => {
            ferrohub_twin::device_not_online_body(call.connect_timeout(), &tracking_id, now)
        }
        ErrorCode::GatewayTimeout => ferrohub_twin::gateway_timeout_body(&tracking_id, now),
        _ => return ApiError::from(e).into_response(),
    };
    let status =
        StatusCode::from_u16(e.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (status, body).into_response();
    let headers = resp.headers_mut();
    headers.insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static(JSON_CONTENT_TYPE),
    );
    headers.insert(ERROR_CODE_HEADER, HeaderValue::from_static(e.code.name()));
    resp
}

/// Invokes a method on `identity` and renders the answer: 200 `{status, payload}` whatever
/// status the device chose.
async fn invoke(
    hub: &HubState,
    identity: (DeviceId, Option<ModuleId>),
    body: &[u8],
) -> Result<Response, ApiError> {
    let call = CloudToDeviceMethod::from_slice(body)
        .map_err(|e| ApiError::new(e.error_code(), e.to_string()))?;
    match &identity.1 {
        None => {
            hub.identity_current(&identity.0, None)
                .await
                .ok_or_else(|| HubError::device_not_found(&identity.0))?;
        }
        Some(m) => {
            hub.identity_current(&identity.0, None)
                .await
                .ok_or_else(|| HubError::device_not_found(&identity.0))?;
            hub.identity_current(&identity.0, Some(m))
                .await
                .ok_or_else(|| HubError::module_not_found(&identity.0, m))?;
        }
    }
    match hub.invoke_method(&identity, &call).await {
        Ok(result) => Ok(json(StatusCode::OK, &result, None)),
        Err(e) => Ok(failure(hub, &call, e)),
    }
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
