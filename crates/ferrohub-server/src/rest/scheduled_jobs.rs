//! Scheduled jobs v2 (twins-methods-contract §6): `PUT /jobs/v2/{id}`, `GET /jobs/v2/{id}`,
//! `POST /jobs/v2/{id}/cancel` and `GET /jobs/v2/query?jobType=&jobStatus=`, the calls of
//! Python's `IoTHubJobManager` and Node's `JobClient`. The jobs themselves run in the hub
//! ([`crate::hub::scheduled_jobs`]).
//!
//! * Creating or cancelling a job needs RegistryWrite, reading jobs RegistryRead, as Azure's
//!   documentation says (its `registryReadWrite` policy is enough to run jobs).
//! * The answer of `PUT` is the job as stored, `status: "queued"`; a taken id is 409104
//!   JobAlreadyExists, an unknown one 404002 JobNotFound, a bad body 400004 naming the problem.
//! * The listing is an array of `JobResponse` with `x-ms-item-type: jobResponse`, paged by
//!   `x-ms-max-item-count` (default and most 100) and `x-ms-continuation` (present only when
//!   there is a next page), in job id order.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::Response;
use base64::Engine as _;
use ferrohub_registry::scheduled_jobs::{JobFilter, JobStatus, JobType};
use ferrohub_types::Permission;
use serde::Deserialize;
use serde_json::Value;

use super::error::ApiError;
use super::{HubState, json};
use crate::hub::scheduled_jobs::NewJob;

/// The permission that creates and cancels jobs.
const WRITE: &[Permission] = &[Permission::RegistryWrite];
/// The permission that reads jobs.
const READ: &[Permission] = &[Permission::RegistryRead];
/// Jobs per page when the request names no page size, and the most per page.
const PAGE_SIZE: usize = 100;

/// Create a scheduled job: a twin update (`scheduleUpdateTwin`) or a direct method call
/// (`scheduleDeviceMethod`) over the devices `queryCondition` selects, from `startTime`
/// (absent or `null`: now) for `maxExecutionTimeInSeconds` (default 3600).
#[utoipa::path(put, path = "/jobs/v2/{id}", tag = "jobs",
    params(("id" = String, Path, description = "Job id")),
    request_body(content = Object, description = "JobRequest: `jobId`, `type`, `queryCondition`, `startTime`, `maxExecutionTimeInSeconds`, `updateTwin` or `cloudToDeviceMethod`"),
    responses((status = 200, description = "JobResponse, `status` `queued`", body = Object),
              (status = 400, body = ferrohub_api::ErrorBody),
              (status = 401, body = ferrohub_api::ErrorBody),
              (status = 409, body = ferrohub_api::ErrorBody, description = "JobAlreadyExists")))]
pub(crate) async fn create_job(
    State(hub): HubState,
    uri: Uri,
    headers: HeaderMap,
    Path(id): Path<String>,
    req: axum::extract::Request,
) -> Result<Response, ApiError> {
    hub.authorize_service(&headers, uri.path(), WRITE)?;
    let body: Value = super::extract::json(req).await?;
    let new = NewJob::read(&id, &body, hub.now())?;
    let view = hub.create_scheduled_job(new).await?;
    Ok(json(StatusCode::OK, &view.to_json(), None))
}

/// A scheduled job with its `deviceJobStatistics`.
#[utoipa::path(get, path = "/jobs/v2/{id}", tag = "jobs",
    params(("id" = String, Path, description = "Job id")),
    responses((status = 200, description = "JobResponse", body = Object),
              (status = 404, body = ferrohub_api::ErrorBody, description = "JobNotFound")))]
pub(crate) async fn get_job(
    State(hub): HubState,
    uri: Uri,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    hub.authorize_service(&headers, uri.path(), READ)?;
    let view = hub.scheduled_job(&id).await?;
    Ok(json(StatusCode::OK, &view.to_json(), None))
}

/// Cancel a scheduled job: one not finished ends `cancelled`, its devices not yet reached
/// `canceled`; a finished job is returned unchanged.
#[utoipa::path(post, path = "/jobs/v2/{id}/cancel", tag = "jobs",
    params(("id" = String, Path, description = "Job id")),
    responses((status = 200, description = "JobResponse", body = Object),
              (status = 404, body = ferrohub_api::ErrorBody, description = "JobNotFound")))]
pub(crate) async fn cancel_job(
    State(hub): HubState,
    uri: Uri,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    hub.authorize_service(&headers, uri.path(), WRITE)?;
    let view = hub.cancel_scheduled_job(&id, hub.now()).await?;
    Ok(json(StatusCode::OK, &view.to_json(), None))
}

/// The filters of the job listing.
#[derive(Debug, Deserialize)]
pub(crate) struct ListParams {
    #[serde(rename = "jobType")]
    job_type: Option<String>,
    #[serde(rename = "jobStatus")]
    job_status: Option<String>,
}

/// Scheduled jobs, optionally of one type and in one status, in id order, a page at a time.
#[utoipa::path(get, path = "/jobs/v2/query", tag = "jobs",
    params(("jobType" = Option<String>, Query, description = "scheduleUpdateTwin or scheduleDeviceMethod"),
           ("jobStatus" = Option<String>, Query, description = "queued, scheduled, running, completed, failed or cancelled"),
           ("x-ms-max-item-count" = Option<u32>, Header, description = "Jobs per page (default and most 100)"),
           ("x-ms-continuation" = Option<String>, Header, description = "The previous page's continuation")),
    responses((status = 200, description = "An array of JobResponse; `x-ms-continuation` when there is a next page", body = Object),
              (status = 400, body = ferrohub_api::ErrorBody)))]
pub(crate) async fn query_jobs(
    State(hub): HubState,
    uri: Uri,
    headers: HeaderMap,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    hub.authorize_service(&headers, uri.path(), READ)?;
    let job_type = match params.job_type.as_deref().filter(|t| !t.is_empty()) {
        None => None,
        Some(t) => Some(JobType::parse(t).ok_or_else(|| {
            ApiError::invalid(format!(
                "The jobType '{t}' is not valid: use scheduleUpdateTwin or scheduleDeviceMethod."
            ))
        })?),
    };
    let statuses = match params.job_status.as_deref().filter(|s| !s.is_empty()) {
        None => Vec::new(),
        Some(s) => vec![
            JobStatus::parse(s)
                .ok_or_else(|| ApiError::invalid(format!("The jobStatus '{s}' is not valid.")))?,
        ],
    };
    let page_size = match headers.get("x-ms-max-item-count") {
        None => PAGE_SIZE,
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|n| *n > 0)
            .ok_or_else(|| ApiError::invalid("x-ms-max-item-count must be a positive number."))?
            .min(PAGE_SIZE),
    };
    let after = match headers.get("x-ms-continuation") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|v| {
                    base64::engine::general_purpose::URL_SAFE_NO_PAD
                        .decode(v.trim())
                        .ok()
                })
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| ApiError::invalid("The x-ms-continuation token is not valid."))?,
        ),
    };
    let filter = JobFilter { job_type, statuses };
    // One more than the page, to know whether there is a next page.
    let mut jobs = hub
        .scheduled_jobs(&filter, after.as_deref(), page_size + 1)
        .await?;
    let more = jobs.len() > page_size;
    jobs.truncate(page_size);
    let body: Vec<Value> = jobs.iter().map(|j| j.to_json()).collect();
    let mut resp = json(StatusCode::OK, &body, None);
    resp.headers_mut()
        .insert("x-ms-item-type", HeaderValue::from_static("jobResponse"));
    if more && let Some(last) = jobs.last() {
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&last.job.job_id);
        if let Ok(v) = HeaderValue::from_str(&token) {
            resp.headers_mut().insert("x-ms-continuation", v);
        }
    }
    Ok(resp)
}
