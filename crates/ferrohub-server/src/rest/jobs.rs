//! `/jobs`: Azure's import and export jobs (azure-contract §8.5). The jobs themselves are in
//! [`crate::jobs`].
//!
//! Creating or cancelling an export needs RegistryRead, an import RegistryWrite; reading jobs
//! needs RegistryRead.
//!
//! In a cluster a job also takes the slot the nodes share ([`crate::jobs::shared`]), so one job
//! is active across the hub; jobs of other nodes are read, listed and cancelled through it.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use ferrohub_api as api;
use ferrohub_types::Permission;

use super::error::ApiError;
use super::extract;
use super::{HubState, json};
use crate::hub::Hub;
use crate::jobs::shared::SlotBegin;
use crate::jobs::{JobError, JobProperties, JobRequest, JobSpec, JobType, RESTART_REASON};

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
    if let Some(shared) = hub.jobs.shared() {
        // One active job across the cluster: the job must also take the nodes' shared slot.
        let now = hub.now();
        let record = serde_json::to_value(&job).unwrap_or_default();
        let taken = shared
            .slot
            .begin(
                &job.job_id,
                record,
                &shared.owner,
                now,
                shared.until(now),
                RESTART_REASON,
            )
            .await;
        match taken {
            Ok(SlotBegin::Taken) => {}
            Ok(SlotBegin::Busy(other)) => {
                hub.jobs.forget(&job.job_id);
                return Err(JobError::Busy(other).into());
            }
            Err(e) => {
                hub.jobs.forget(&job.job_id);
                return Err(JobError::Storage(e).into());
            }
        }
    }
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
    let mut jobs = hub.jobs.list(hub.now());
    // In a cluster, the jobs of the other nodes too.
    for other in cluster_records(&hub).await? {
        if !jobs.iter().any(|j| j.job_id == other.job_id) {
            jobs.push(other);
        }
    }
    jobs.sort_by_key(|j| j.start_time_utc);
    Ok(json(StatusCode::OK, &jobs, None))
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
    let job = match hub.jobs.get(&id) {
        Err(JobError::NotFound(_)) if hub.jobs.shared().is_some() => cluster_records(&hub)
            .await?
            .into_iter()
            .find(|j| j.job_id == id)
            .ok_or(JobError::NotFound(id))?,
        other => other?,
    };
    Ok(json(StatusCode::OK, &job, None))
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
    let job = match hub.jobs.get(&id) {
        Err(JobError::NotFound(_)) if hub.jobs.shared().is_some() => {
            // Another node's job: cancelled in the shared slot; its node stops it.
            let job = cluster_records(&hub)
                .await?
                .into_iter()
                .find(|j| j.job_id == id)
                .ok_or_else(|| JobError::NotFound(id.clone()))?;
            hub.authorize_service(&headers, uri.path(), &[permission(job.kind)])?;
            let shared = hub
                .jobs
                .shared()
                .ok_or_else(|| JobError::NotFound(id.clone()))?;
            let record = shared
                .slot
                .cancel(&id, hub.now())
                .await
                .map_err(JobError::Storage)?
                .ok_or_else(|| JobError::NotFound(id.clone()))?;
            let job: JobProperties =
                serde_json::from_value(record).map_err(|e| JobError::Storage(e.to_string()))?;
            return Ok(json(StatusCode::OK, &job, None));
        }
        other => other?,
    };
    hub.authorize_service(&headers, uri.path(), &[permission(job.kind)])?;
    let cancelled = hub.jobs.cancel(&id, hub.now())?;
    if let Some(shared) = hub.jobs.shared() {
        let record = serde_json::to_value(&cancelled).unwrap_or_default();
        if let Err(e) = shared.slot.end(&id, &shared.owner, record).await {
            tracing::warn!(job = %id, error = %e, "freeing the cluster's job slot failed");
        }
    }
    Ok(json(StatusCode::OK, &cancelled, None))
}

/// The records of the cluster's import and export jobs (none for the embedded hub), after
/// failing the active one if its node's lease ended.
async fn cluster_records(hub: &Hub) -> Result<Vec<JobProperties>, JobError> {
    let Some(shared) = hub.jobs.shared() else {
        return Ok(Vec::new());
    };
    let now = hub.now();
    let records = shared
        .slot
        .records(now, RESTART_REASON)
        .await
        .map_err(JobError::Storage)?;
    let cutoff = now - chrono::TimeDelta::days(crate::jobs::RETENTION_DAYS);
    Ok(records
        .into_iter()
        .filter_map(|r| serde_json::from_value::<JobProperties>(r).ok())
        .filter(|j| j.status.is_active() || j.end_time_utc.unwrap_or(j.start_time_utc) >= cutoff)
        .collect())
}
