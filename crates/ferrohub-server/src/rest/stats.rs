//! `/statistics`: registry and service statistics.

use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use ferrohub_api as api;
use ferrohub_types::Permission;

use super::convert::statistics_to_api;
use super::error::ApiError;
use super::{HubState, json};

/// Device counts: total, enabled, disabled.
#[utoipa::path(get, path = "/statistics/devices", tag = "statistics",
    responses((status = 200, body = api::RegistryStatistics)))]
pub(crate) async fn registry_statistics(
    hub: HubState,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    hub.authorize_service(&headers, uri.path(), &[Permission::RegistryRead])?;
    let s = hub.registry.statistics().await?;
    Ok(json(StatusCode::OK, &statistics_to_api(&s), None))
}

/// Connected devices.
#[utoipa::path(get, path = "/statistics/service", tag = "statistics",
    responses((status = 200, body = api::ServiceStatistics)))]
pub(crate) async fn service_statistics(
    hub: HubState,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    hub.authorize_service(
        &headers,
        uri.path(),
        &[Permission::ServiceConnect, Permission::RegistryRead],
    )?;
    let body = api::ServiceStatistics {
        connected_device_count: hub.connected_devices().await,
    };
    Ok(json(StatusCode::OK, &body, None))
}
