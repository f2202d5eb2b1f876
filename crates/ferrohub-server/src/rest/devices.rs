//! `/devices`: create, read, update, delete, list and bulk operations on device identities.

use axum::extract::Query;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use ferrohub_api as api;
use ferrohub_registry::IfMatch;
use ferrohub_types::Permission;
use std::collections::HashMap;

use super::convert::{device_spec, device_to_api};
use super::error::ApiError;
use super::extract::{self, DevicePath};
use super::{HubState, json};

/// Most devices `GET /devices` returns, and what an out-of-range `top` means.
const MAX_TOP: usize = 1000;

/// The `If-Match` header, if any.
pub(crate) fn if_match(headers: &HeaderMap) -> Result<Option<IfMatch>, ApiError> {
    match headers.get(header::IF_MATCH) {
        None => Ok(None),
        Some(v) => {
            let s = v
                .to_str()
                .map_err(|_| ApiError::invalid("The If-Match header is not valid text."))?;
            Ok(Some(IfMatch::parse(s)))
        }
    }
}

/// A device as the API shows it: stored fields plus live presence and queue depth.
async fn device_view(hub: &crate::hub::Hub, d: &ferrohub_registry::Device) -> api::Device {
    let presence = hub.presence_of(&(d.device_id.clone(), None)).await;
    device_view_with(hub, d, presence).await
}

/// [`device_view`] with the presence read already.
async fn device_view_with(
    hub: &crate::hub::Hub,
    d: &ferrohub_registry::Device,
    presence: Option<crate::connections::Presence>,
) -> api::Device {
    let mut out = device_to_api(d);
    out.cloud_to_device_message_count = super::c2d::depth(hub, &d.device_id).await;
    super::convert::with_presence(
        presence,
        &mut out.connection_state,
        &mut out.connection_state_updated_time,
        &mut out.last_activity_time,
    );
    out
}

/// Get a device identity.
#[utoipa::path(get, path = "/devices/{id}", tag = "devices",
    params(("id" = String, Path, description = "Device id")),
    responses((status = 200, body = api::Device), (status = 404, body = api::ErrorBody)))]
pub(crate) async fn get_device(
    hub: HubState,
    uri: Uri,
    headers: HeaderMap,
    DevicePath(id): DevicePath,
) -> Result<Response, ApiError> {
    hub.authorize_service(&headers, uri.path(), &[Permission::RegistryRead])?;
    let d = hub.registry.device(&id).await?;
    Ok(json(
        StatusCode::OK,
        &device_view(&hub, &d).await,
        Some(d.etag.as_str()),
    ))
}

/// Create a device (no `If-Match`) or update it (`If-Match: "<etag>"` or `"*"`). Symmetric
/// keys left empty are generated.
#[utoipa::path(put, path = "/devices/{id}", tag = "devices",
    params(("id" = String, Path, description = "Device id"),
           ("If-Match" = Option<String>, Header, description = "Absent: create only. `\"*\"` or a quoted ETag: update.")),
    request_body = api::Device,
    responses((status = 200, body = api::Device), (status = 400, body = api::ErrorBody),
              (status = 409, body = api::ErrorBody), (status = 412, body = api::ErrorBody)))]
pub(crate) async fn put_device(
    hub: HubState,
    uri: Uri,
    headers: HeaderMap,
    DevicePath(id): DevicePath,
    req: axum::extract::Request,
) -> Result<Response, ApiError> {
    hub.authorize_service(&headers, uri.path(), &[Permission::RegistryWrite])?;
    let body: api::Device = extract::json_object(req).await?;
    let condition = if_match(&headers)?;
    let spec = device_spec(id, &body)?;
    let now = hub.now();
    let d = match condition {
        None => hub.registry.create_device(spec, now).await?,
        Some(cond) => hub.registry.update_device(spec, cond, now).await?,
    };
    Ok(json(
        StatusCode::OK,
        &device_view(&hub, &d).await,
        Some(d.etag.as_str()),
    ))
}

/// Delete a device and its modules. `If-Match` absent or `"*"` deletes unconditionally.
#[utoipa::path(delete, path = "/devices/{id}", tag = "devices",
    params(("id" = String, Path, description = "Device id"),
           ("If-Match" = Option<String>, Header, description = "`\"*\"` or a quoted ETag")),
    responses((status = 204), (status = 404, body = api::ErrorBody), (status = 412, body = api::ErrorBody)))]
pub(crate) async fn delete_device(
    hub: HubState,
    uri: Uri,
    headers: HeaderMap,
    DevicePath(id): DevicePath,
) -> Result<Response, ApiError> {
    hub.authorize_service(&headers, uri.path(), &[Permission::RegistryWrite])?;
    let cond = if_match(&headers)?.unwrap_or(IfMatch::Any);
    hub.registry.delete_device(&id, cond).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// List device identities, ordered by id. `top` is 1–1000; out of range means 1000.
#[utoipa::path(get, path = "/devices", tag = "devices",
    params(("top" = Option<u32>, Query, description = "How many devices (1–1000)")),
    responses((status = 200, body = Vec<api::Device>)))]
pub(crate) async fn list_devices(
    hub: HubState,
    uri: Uri,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    hub.authorize_service(&headers, uri.path(), &[Permission::RegistryRead])?;
    let top = match query.get("top") {
        None => MAX_TOP,
        Some(t) => {
            let n: i64 = t
                .trim()
                .parse()
                .map_err(|_| ApiError::invalid(format!("top must be a number, not {t:?}.")))?;
            usize::try_from(n)
                .ok()
                .filter(|n| (1..=MAX_TOP).contains(n))
                .unwrap_or(MAX_TOP)
        }
    };
    let devices = hub.registry.devices(top).await?;
    let identities: Vec<_> = devices
        .iter()
        .map(|d| (d.device_id.clone(), None))
        .collect();
    let presences = hub.presences(&identities).await;
    let mut body: Vec<api::Device> = Vec::with_capacity(devices.len());
    for (d, presence) in devices.iter().zip(presences) {
        body.push(device_view_with(&hub, d, presence).await);
    }
    Ok(json(StatusCode::OK, &body, None))
}

/// Create, update or delete up to 100 identities in one request. HTTP 200 when every record
/// succeeded, 400 with the per-record errors otherwise.
#[utoipa::path(post, path = "/devices", tag = "devices",
    request_body = Vec<api::ExportImportDevice>,
    responses((status = 200, body = api::BulkRegistryOperationResult),
              (status = 400, body = api::BulkRegistryOperationResult)))]
pub(crate) async fn bulk_devices(
    hub: HubState,
    uri: Uri,
    headers: HeaderMap,
    req: axum::extract::Request,
) -> Result<Response, ApiError> {
    hub.authorize_service(&headers, uri.path(), &[Permission::RegistryWrite])?;
    let body: Vec<api::ExportImportDevice> = extract::json(req).await?;
    let records = super::bulk::records(body)?;
    let result = hub.registry.bulk(records.valid, hub.now()).await?;
    let body = super::bulk::result_to_api(records.invalid, &result);
    let status = if body.is_successful {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    Ok(json(status, &body, None))
}
