//! `/jobs`: Azure's import and export jobs (azure-contract §8.5). The jobs themselves are in
//! [`crate::jobs`].
//!
//! Creating or cancelling an export needs RegistryRead, an import RegistryWrite; reading jobs
//! needs RegistryRead.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use ferrohub_api as api;
use ferrohub_types::Permission;

use super::error::ApiError;
use super::extract;
use super::{HubState, json};
use crate::jobs::{JobProperties, JobRequest, JobSpec, JobType};

/// The permission a job of `kind` needs.
fn permission(kind: JobType) -> Permission {
    match kind {
        JobType::Export => Permission::RegistryRead,
        JobType::Import => Permission::RegistryWrite,
    }
}

/// Create an import or export job. Only one job may be enqueued or running at a time.
#[utoipa::path(post, path = "/jobs/create", tag = "jobs",
    request_body = JobRequest,
    responses((status = 200, body = JobProperties),
              (status = 400, body = api::ErrorBody, description = "Invalid type, container URI or blob name"),
              (status = 401, body = api::ErrorBody),
              (status = 429, body = api::ErrorBody, description = "ThrottlingMaxActiveJobCountExceeded: another job is enqueued or running")))]
pub(crate) async fn create_job(
    State(hub): HubState,
    uri: Uri,
    headers: HeaderMap,
    req: axum::extract::Request,
) -> Result<Response, ApiError> {
    hub.authorize_service(
        &headers,
        uri.path(),
        &[Permission::RegistryRead, Permission::RegistryWrite],
    )?;
    let body: JobRequest = extract::json_object(req).await?;
    let spec = JobSpec::from_request(&body)?;
    hub.authorize_service(&headers, uri.path(), &[permission(spec.kind)])?;
    let job = hub.jobs.create(&body, &spec, hub.now())?;
    crate::jobs::run::spawn(hub.clone(), job.job_id.clone());
    Ok(json(StatusCode::OK, &job, None))
}

/// The import and export jobs of the last 30 days, oldest first.
#[utoipa::path(get, path = "/jobs", tag = "jobs",
    responses((status = 200, body = Vec<JobProperties>), (status = 401, body = api::ErrorBody)))]
pub(crate) async fn list_jobs(
    State(hub): HubState,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    hub.authorize_service(&headers, uri.path(), &[Permission::RegistryRead])?;
    Ok(json(StatusCode::OK, &hub.jobs.list(hub.now()), None))
}

/// An import or export job.
#[utoipa::path(get, path = "/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "Job id")),
    responses((status = 200, body = JobProperties), (status = 404, body = api::ErrorBody)))]
pub(crate) async fn get_job(
    State(hub): HubState,
    uri: Uri,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    hub.authorize_service(&headers, uri.path(), &[Permission::RegistryRead])?;
    Ok(json(StatusCode::OK, &hub.jobs.get(&id)?, None))
}

/// Cancel an enqueued or running job; a finished job is returned unchanged.
#[utoipa::path(delete, path = "/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "Job id")),
    responses((status = 200, body = JobProperties), (status = 404, body = api::ErrorBody)))]
pub(crate) async fn cancel_job(
    State(hub): HubState,
    uri: Uri,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    hub.authorize_service(
        &headers,
        uri.path(),
        &[Permission::RegistryRead, Permission::RegistryWrite],
    )?;
    let job = hub.jobs.get(&id)?;
    hub.authorize_service(&headers, uri.path(), &[permission(job.kind)])?;
    Ok(json(
        StatusCode::OK,
        &hub.jobs.cancel(&id, hub.now())?,
        None,
    ))
}
