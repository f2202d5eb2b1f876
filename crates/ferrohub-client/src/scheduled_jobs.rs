//! Scheduled jobs v2: `PUT/GET /jobs/v2/{id}`, `POST /jobs/v2/{id}/cancel` and
//! `GET /jobs/v2/query`. Requests and answers are Azure's `JobRequest` and `JobResponse` as
//! JSON objects.

use reqwest::Method;
use serde_json::Value;

use crate::ClientError;
use crate::client::{HubClient, query_value, segment};

/// Jobs asked for per page of a listing.
const PAGE_SIZE: u32 = 100;

impl HubClient {
    /// Creates scheduled job `job_id` from `request` (a `JobRequest`: `type`,
    /// `queryCondition`, `updateTwin` or `cloudToDeviceMethod`, `startTime`,
    /// `maxExecutionTimeInSeconds`). Returns the `JobResponse`.
    ///
    /// Errors the hub reports: `JobAlreadyExists`, `ArgumentInvalid`.
    pub async fn schedule_job(&self, job_id: &str, request: &Value) -> Result<Value, ClientError> {
        let path = format!("/jobs/v2/{}", segment("job id", job_id)?);
        self.send(Method::PUT, &path, None, None, Some(request))
            .await?
            .json()
    }

    /// A scheduled job with its `deviceJobStatistics`. Errors: `JobNotFound`.
    pub async fn scheduled_job(&self, job_id: &str) -> Result<Value, ClientError> {
        let path = format!("/jobs/v2/{}", segment("job id", job_id)?);
        self.send::<()>(Method::GET, &path, None, None, None)
            .await?
            .json()
    }

    /// Cancels a scheduled job. Errors: `JobNotFound`.
    pub async fn cancel_scheduled_job(&self, job_id: &str) -> Result<Value, ClientError> {
        let path = format!("/jobs/v2/{}/cancel", segment("job id", job_id)?);
        self.send::<()>(Method::POST, &path, None, None, None)
            .await?
            .json()
    }

    /// Every scheduled job, optionally of one type (`scheduleUpdateTwin`,
    /// `scheduleDeviceMethod`) and in one status, reading page after page.
    pub async fn scheduled_jobs(
        &self,
        job_type: Option<&str>,
        status: Option<&str>,
    ) -> Result<Vec<Value>, ClientError> {
        let mut query = Vec::new();
        if let Some(t) = job_type {
            query.push(format!("jobType={}", query_value(t)));
        }
        if let Some(s) = status {
            query.push(format!("jobStatus={}", query_value(s)));
        }
        let query = query.join("&");
        let mut all = Vec::new();
        let mut continuation: Option<String> = None;
        loop {
            let mut headers = vec![("x-ms-max-item-count", PAGE_SIZE.to_string())];
            if let Some(c) = &continuation {
                headers.push(("x-ms-continuation", c.clone()));
            }
            let reply = self
                .get_with_headers(
                    "/jobs/v2/query",
                    (!query.is_empty()).then_some(query.as_str()),
                    &headers,
                )
                .await?;
            continuation = reply.header("x-ms-continuation");
            let page: Vec<Value> = reply.json()?;
            all.extend(page);
            if continuation.is_none() {
                return Ok(all);
            }
        }
    }
}
