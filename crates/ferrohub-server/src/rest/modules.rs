//! `/devices/{id}/modules`: module identities.

use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use ferrohub_api as api;
use ferrohub_registry::IfMatch;
use ferrohub_types::Permission;

use super::convert::{module_spec, module_to_api};
use super::devices::if_match;
use super::error::ApiError;
use super::extract::{self, DevicePath, ModulePath};
use super::{HubState, json};

/// A module as the API shows it: stored fields plus live presence (`connectionState`, as the
/// module's twin and the device API show it).
fn module_view(
    m: &ferrohub_registry::Module,
    presence: Option<crate::connections::Presence>,
) -> api::Module {
    let mut out = module_to_api(m);
    super::convert::with_presence(
        presence,
        &mut out.connection_state,
        &mut out.connection_state_updated_time,
        &mut out.last_activity_time,
    );
    out
}

/// Get a module identity.
#[utoipa::path(get, path = "/devices/{id}/modules/{mid}", tag = "modules",
    params(("id" = String, Path, description = "Device id"), ("mid" = String, Path, description = "Module id")),
    responses((status = 200, body = api::Module), (status = 404, body = api::ErrorBody)))]
pub(crate) async fn get_module(
    hub: HubState,
    uri: Uri,
    headers: HeaderMap,
    ModulePath(id, mid): ModulePath,
) -> Result<Response, ApiError> {
    hub.authorize_service(&headers, uri.path(), &[Permission::RegistryRead])?;
    let m = hub.registry.module(&id, &mid).await?;
    Ok(json(
        StatusCode::OK,
        &module_view(
            &m,
            hub.presence_of(&(m.device_id.clone(), Some(m.module_id.clone())))
                .await,
        ),
        Some(m.etag.as_str()),
    ))
}

/// Create a module (no `If-Match`) or update it (`If-Match`).
#[utoipa::path(put, path = "/devices/{id}/modules/{mid}", tag = "modules",
    params(("id" = String, Path, description = "Device id"), ("mid" = String, Path, description = "Module id"),
           ("If-Match" = Option<String>, Header, description = "Absent: create only. `\"*\"` or a quoted ETag: update.")),
    request_body = api::Module,
    responses((status = 200, body = api::Module), (status = 404, body = api::ErrorBody),
              (status = 409, body = api::ErrorBody), (status = 412, body = api::ErrorBody)))]
pub(crate) async fn put_module(
    hub: HubState,
    uri: Uri,
    headers: HeaderMap,
    ModulePath(id, mid): ModulePath,
    req: axum::extract::Request,
) -> Result<Response, ApiError> {
    hub.authorize_service(&headers, uri.path(), &[Permission::RegistryWrite])?;
    let body: api::Module = extract::json_object(req).await?;
    let condition = if_match(&headers)?;
    let spec = module_spec(id, mid, &body)?;
    let now = hub.now();
    let m = match condition {
        None => hub.registry.create_module(spec, now).await?,
        Some(cond) => hub.registry.update_module(spec, cond, now).await?,
    };
    Ok(json(
        StatusCode::OK,
        &module_to_api(&m),
        Some(m.etag.as_str()),
    ))
}

/// Delete a module.
#[utoipa::path(delete, path = "/devices/{id}/modules/{mid}", tag = "modules",
    params(("id" = String, Path, description = "Device id"), ("mid" = String, Path, description = "Module id"),
           ("If-Match" = Option<String>, Header, description = "`\"*\"` or a quoted ETag")),
    responses((status = 204), (status = 404, body = api::ErrorBody), (status = 412, body = api::ErrorBody)))]
pub(crate) async fn delete_module(
    hub: HubState,
    uri: Uri,
    headers: HeaderMap,
    ModulePath(id, mid): ModulePath,
) -> Result<Response, ApiError> {
    hub.authorize_service(&headers, uri.path(), &[Permission::RegistryWrite])?;
    let cond = if_match(&headers)?.unwrap_or(IfMatch::Any);
    hub.registry.delete_module(&id, &mid, cond).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// List a device's modules.
#[utoipa::path(get, path = "/devices/{id}/modules", tag = "modules",
    params(("id" = String, Path, description = "Device id")),
    responses((status = 200, body = Vec<api::Module>), (status = 404, body = api::ErrorBody)))]
pub(crate) async fn list_modules(
    hub: HubState,
    uri: Uri,
    headers: HeaderMap,
    DevicePath(id): DevicePath,
) -> Result<Response, ApiError> {
    hub.authorize_service(&headers, uri.path(), &[Permission::RegistryRead])?;
    let modules = hub.registry.modules(&id).await?;
    let identities: Vec<_> = modules
        .iter()
        .map(|m| (m.device_id.clone(), Some(m.module_id.clone())))
        .collect();
    let presences = hub.presences(&identities).await;
    let body: Vec<api::Module> = modules
        .iter()
        .zip(presences)
        .map(|(m, p)| module_view(m, p))
        .collect();
    Ok(json(StatusCode::OK, &body, None))
}
