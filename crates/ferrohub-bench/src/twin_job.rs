//! The `twin-job` workload: one scheduled twin-update job (`PUT /jobs/v2/{id}`) over every bench
//! device, timed from the request until the job reports `completed` (polled). Reports the wall
//! time and devices per second, and the job's own statistics.

use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use serde_json::{Value, json};

use crate::identity;
use crate::target::Ferrohub;

/// How often the job's status is read.
const POLL: Duration = Duration::from_millis(100);

/// The workload's result.
#[derive(Debug, Serialize)]
pub struct TwinJobSummary {
    /// The job's id.
    pub job_id: String,
    /// Its final status.
    pub status: String,
    /// Devices the job selected.
    pub devices: u64,
    /// Devices it updated.
    pub succeeded: u64,
    /// Devices that failed.
    pub failed: u64,
    /// From the `PUT` to the first read that showed the job finished.
    pub wall_s: f64,
    /// `succeeded / wall_s`.
    pub devices_per_s: f64,
}

/// Runs one twin job selecting devices with `condition`, waiting at most `limit` for it.
pub async fn run(
    hub: &Ferrohub,
    condition: &str,
    limit: Duration,
) -> anyhow::Result<TwinJobSummary> {
    let http = hub.http_client()?;
    let token = hub.service_token()?;
    let job_id = format!("bench-twin-job-{}", identity::unix_now());
    let url = |suffix: &str| {
        format!(
            "{}/jobs/v2/{job_id}{suffix}?api-version={}",
            hub.base_url(),
            identity::API_VERSION
        )
    };
    let body = json!({
        "jobId": job_id,
        "type": "scheduleUpdateTwin",
        "queryCondition": condition,
        "updateTwin": {"etag": "*", "tags": {"benchJob": job_id}, "properties": {"desired": {"benchRate": 5}}},
        "startTime": null,
        "maxExecutionTimeInSeconds": limit.as_secs().max(1),
    });
    let started = Instant::now();
    let resp = http
        .put(url(""))
        .header("Authorization", &token)
        .json(&body)
        .send()
        .await
        .context("creating the job")?;
    let status = resp.status();
    if !status.is_success() {
        anyhow::bail!(
            "creating the job failed: {status}: {}",
            resp.text().await.unwrap_or_default()
        );
    }
    let deadline = started + limit;
    loop {
        let job: Value = http
            .get(url(""))
            .header("Authorization", &token)
            .send()
            .await
            .context("reading the job")?
            .json()
            .await
            .context("parsing the job")?;
        let status = job["status"].as_str().unwrap_or_default().to_owned();
        if matches!(status.as_str(), "completed" | "failed" | "cancelled") {
            let wall = started.elapsed().as_secs_f64();
            let stats = &job["deviceJobStatistics"];
            let count = |k: &str| stats[k].as_u64().unwrap_or(0);
            let succeeded = count("succeededCount");
            return Ok(TwinJobSummary {
                job_id,
                status,
                devices: count("deviceCount"),
                succeeded,
                failed: count("failedCount"),
                wall_s: wall,
                devices_per_s: if wall > 0.0 {
                    succeeded as f64 / wall
                } else {
                    0.0
                },
            });
        }
        if Instant::now() >= deadline {
            anyhow::bail!("the job did not finish within {limit:?}: {job}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The summary for people.
pub fn text(s: &TwinJobSummary) -> String {
    format!(
        "twin job {}: {} — {} devices selected, {} updated, {} failed in {:.2} s ({:.0} devices/s)",
        s.job_id, s.status, s.devices, s.succeeded, s.failed, s.wall_s, s.devices_per_s
    )
}
