//! Import and export jobs (`/jobs`), as Azure's JobProperties.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// `POST /jobs/create`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobRequest {
    /// `import` or `export`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Import: the container holding the input blob (`file:///dir` or an http(s) container URL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_blob_container_uri: Option<String>,
    /// Import: the blob to read (default `devices.txt`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_blob_name: Option<String>,
    /// The container the job writes to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_blob_container_uri: Option<String>,
    /// Export: the devices blob (default `devices.txt`); import: the errors blob.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_blob_name: Option<String>,
    /// Export: write keys as null.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exclude_keys_in_export: Option<bool>,
}

/// A job as the hub reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct JobProperties {
    /// The hub-assigned id.
    pub job_id: String,
    /// `import` or `export`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `enqueued`, `running`, `completed`, `failed` or `cancelled`.
    pub status: String,
    /// Percent done.
    pub progress: u32,
    /// When the job was created.
    pub start_time_utc: Option<DateTime<Utc>>,
    /// When it finished.
    pub end_time_utc: Option<DateTime<Utc>>,
    /// Why it failed.
    pub failure_reason: Option<String>,
    /// Identity records handled so far.
    pub device_count: u64,
    /// Import: records that failed (lines of the errors blob).
    pub error_count: u64,
    /// The input container.
    pub input_blob_container_uri: Option<String>,
    /// The input blob.
    pub input_blob_name: Option<String>,
    /// The output container.
    pub output_blob_container_uri: Option<String>,
    /// The output blob.
    pub output_blob_name: Option<String>,
}

impl JobProperties {
    /// Whether the job has finished (completed, failed or cancelled).
    pub fn is_finished(&self) -> bool {
        matches!(self.status.as_str(), "completed" | "failed" | "cancelled")
    }
}
