//! Device and module twins: `GET`, `PATCH` and `PUT` on `/twins/{id}` and
//! `/twins/{id}/modules/{mid}` (twins-methods-contract §2, §3), the calls of Python's
//! `IoTHubRegistryManager.get_twin/update_twin/replace_twin` and Node's
//! `Registry.getTwin/updateTwin`.
//!
//! * `If-Match` is optional: absent or `"*"` (quoted or not) writes whatever the ETag; a quoted
//!   or bare twin ETag writes only if it is the current one (412001 otherwise).
//! * The answer is the whole twin as Azure renders it (identity fields, `version`, `tags`,
//!   `properties` with `$metadata` and `$version`) with its quoted ETag in the `ETag` header and
//!   `Content-Type: application/json; charset=utf-8`, which Node needs to parse it at all.
//! * A write with desired properties notifies the connected device (the hub's notification
//!   path); the answer does not wait for the device.

use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::Response;
use ferrohub_registry::IdentityTwin;
use ferrohub_twin::{IfMatch, TwinUpdate};
use ferrohub_types::{DeviceId, ModuleId, Permission};
use serde_json::Value;

use super::error::ApiError;
use super::extract::{DevicePath, ModulePath};
use super::{HubState, json};
use crate::connections::Identity;

/// The permissions that read a twin.
const READ: &[Permission] = &[Permission::ServiceConnect, Permission::RegistryRead];
/// The permission that writes a twin's tags and desired properties.
const WRITE: &[Permission] = &[Permission::ServiceConnect];

/// The `If-Match` of a twin write: absent means any ETag.
fn if_match(headers: &HeaderMap) -> Result<IfMatch, ApiError> {
    match headers.get(header::IF_MATCH) {
        None => Ok(IfMatch::Any),
        Some(v) => v
            .to_str()
            .map(IfMatch::parse)
            .map_err(|_| ApiError::invalid("The If-Match header is not valid text.")),
    }
}

/// How a write reads its body.
#[derive(Clone, Copy)]
enum Write {
    /// `PATCH`: merge patches of `tags` and `properties.desired`.
    Patch,
    /// `PUT`: `tags` and `properties.desired` replaced.
    Replace,
}

/// The twin as the answer of every route: 200, the REST rendering, the ETag.
async fn render(hub: &HubState, t: &IdentityTwin) -> Response {
    let identity = hub.twin_identity(&t.owner).await;
    json(
        StatusCode::OK,
        &t.twin.rest_view(&identity),
        Some(&t.twin.etag().to_string()),
    )
}

async fn get(hub: &HubState, identity: &Identity) -> Result<Response, ApiError> {
    let t = hub.twin(identity).await?;
    Ok(render(hub, &t).await)
}

async fn write(
    hub: &HubState,
    identity: Identity,
    headers: &HeaderMap,
    body: &Value,
    kind: Write,
) -> Result<Response, ApiError> {
    let condition = if_match(headers)?;
    let update = match kind {
        Write::Patch => TwinUpdate::patch(body),
        Write::Replace => TwinUpdate::replace(body),
    }
    .map_err(|e| ApiError::new(e.error_code(), e.to_string()))?;
    let t = hub.update_twin(identity, update, condition).await?;
    Ok(render(hub, &t).await)
}

fn device(id: DeviceId) -> Identity {
    (id, None)
}

fn module(id: DeviceId, mid: ModuleId) -> Identity {
    (id, Some(mid))
}

/// Get a device twin.
#[utoipa::path(get, path = "/twins/{id}", tag = "twins",
    params(("id" = String, Path, description = "Device id")),
    responses((status = 200, description = "The twin: identity fields, `version`, `tags`, `properties.desired` and `.reported` with `$metadata` and `$version`", body = Object),
              (status = 404, body = ferrohub_api::ErrorBody)))]
pub(crate) async fn get_twin(
    hub: HubState,
    uri: Uri,
    headers: HeaderMap,
    DevicePath(id): DevicePath,
) -> Result<Response, ApiError> {
    hub.authorize_service(&headers, uri.path(), READ)?;
    get(&hub, &device(id)).await
}

/// Update a device twin: `tags` and `properties.desired` are merge patches (`null` deletes a
/// member, a section set to `null` is cleared).
#[utoipa::path(patch, path = "/twins/{id}", tag = "twins",
    params(("id" = String, Path, description = "Device id"),
           ("If-Match" = Option<String>, Header, description = "`\"*\"` or the twin's quoted ETag; absent: any")),
    request_body(content = Object, description = "`{\"tags\":{…},\"properties\":{\"desired\":{…}}}`, any part optional"),
    responses((status = 200, description = "The updated twin", body = Object),
              (status = 400, body = ferrohub_api::ErrorBody), (status = 404, body = ferrohub_api::ErrorBody),
              (status = 412, body = ferrohub_api::ErrorBody)))]
pub(crate) async fn patch_twin(
    hub: HubState,
    uri: Uri,
    headers: HeaderMap,
    DevicePath(id): DevicePath,
    req: axum::extract::Request,
) -> Result<Response, ApiError> {
    hub.authorize_service(&headers, uri.path(), WRITE)?;
    let body: Value = super::extract::json(req).await?;
    write(&hub, device(id), &headers, &body, Write::Patch).await
}

/// Replace a device twin's `tags` and `properties.desired` (those the body carries; reported
/// properties are the device's and are ignored).
#[utoipa::path(put, path = "/twins/{id}", tag = "twins",
    params(("id" = String, Path, description = "Device id"),
           ("If-Match" = Option<String>, Header, description = "`\"*\"` or the twin's quoted ETag; absent: any")),
    request_body(content = Object, description = "A twin; `tags` and `properties.desired` replace the twin's"),
    responses((status = 200, description = "The replaced twin", body = Object),
              (status = 400, body = ferrohub_api::ErrorBody), (status = 404, body = ferrohub_api::ErrorBody),
              (status = 412, body = ferrohub_api::ErrorBody)))]
pub(crate) async fn replace_twin(
    hub: HubState,
    uri: Uri,
    headers: HeaderMap,
    DevicePath(id): DevicePath,
    req: axum::extract::Request,
) -> Result<Response, ApiError> {
    hub.authorize_service(&headers, uri.path(), WRITE)?;
    let body: Value = super::extract::json(req).await?;
    write(&hub, device(id), &headers, &body, Write::Replace).await
}

/// Get a module twin.
#[utoipa::path(get, path = "/twins/{id}/modules/{mid}", tag = "twins",
    params(("id" = String, Path, description = "Device id"), ("mid" = String, Path, description = "Module id")),
    responses((status = 200, description = "The module twin (with `moduleId`)", body = Object),
              (status = 404, body = ferrohub_api::ErrorBody)))]
pub(crate) async fn get_module_twin(
    hub: HubState,
    uri: Uri,
    headers: HeaderMap,
    ModulePath(id, mid): ModulePath,
) -> Result<Response, ApiError> {
    hub.authorize_service(&headers, uri.path(), READ)?;
    get(&hub, &module(id, mid)).await
}

/// Update a module twin (merge patches, as for devices).
#[utoipa::path(patch, path = "/twins/{id}/modules/{mid}", tag = "twins",
    params(("id" = String, Path, description = "Device id"), ("mid" = String, Path, description = "Module id"),
           ("If-Match" = Option<String>, Header, description = "`\"*\"` or the twin's quoted ETag; absent: any")),
    request_body(content = Object, description = "`{\"tags\":{…},\"properties\":{\"desired\":{…}}}`, any part optional"),
    responses((status = 200, description = "The updated module twin", body = Object),
              (status = 400, body = ferrohub_api::ErrorBody), (status = 404, body = ferrohub_api::ErrorBody),
              (status = 412, body = ferrohub_api::ErrorBody)))]
pub(crate) async fn patch_module_twin(
    hub: HubState,
    uri: Uri,
    headers: HeaderMap,
    ModulePath(id, mid): ModulePath,
    req: axum::extract::Request,
) -> Result<Response, ApiError> {
    hub.authorize_service(&headers, uri.path(), WRITE)?;
    let body: Value = super::extract::json(req).await?;
    write(&hub, module(id, mid), &headers, &body, Write::Patch).await
}

/// Replace a module twin's `tags` and `properties.desired`.
#[utoipa::path(put, path = "/twins/{id}/modules/{mid}", tag = "twins",
    params(("id" = String, Path, description = "Device id"), ("mid" = String, Path, description = "Module id"),
           ("If-Match" = Option<String>, Header, description = "`\"*\"` or the twin's quoted ETag; absent: any")),
    request_body(content = Object, description = "A twin; `tags` and `properties.desired` replace the twin's"),
    responses((status = 200, description = "The replaced module twin", body = Object),
              (status = 400, body = ferrohub_api::ErrorBody), (status = 404, body = ferrohub_api::ErrorBody),
              (status = 412, body = ferrohub_api::ErrorBody)))]
pub(crate) async fn replace_module_twin(
    hub: HubState,
    uri: Uri,
    headers: HeaderMap,
    ModulePath(id, mid): ModulePath,
    req: axum::extract::Request,
) -> Result<Response, ApiError> {
    hub.authorize_service(&headers, uri.path(), WRITE)?;
    let body: Value = super::extract::json(req).await?;
    write(&hub, module(id, mid), &headers, &body, Write::Replace).await
}
