//! Scheduled jobs (`/jobs/v2`): what a job is, what became of each device it reached, and where
//! both are kept ([`ScheduledJobStore`]).
//!
//! A job ([`ScheduledJob`]) is its definition (type, `queryCondition`, start time, window, the
//! twin patch or the method call, all as the service sent them), its status, and its progress
//! through the registry: the last device id its scan has considered and whether the scan is
//! done. Each device the job selected has a [`DeviceJob`] record (`pending` when selected, then
//! `running`, `completed`, `failed` or `canceled`). The statistics Azure reports are counts of
//! those records ([`DeviceJobStatistics`]).
//!
//! Progress is recorded so that a hub restarted mid-job knows exactly which devices were done:
//! the scan position is written in the same atomic [`JobWrite`] as the devices it selected, and
//! a device's record changes before and after the hub acts on it. Rules about time, statuses
//! and what a restart does with unfinished devices are the hub's; stores keep documents and
//! check [`Expect`]ations.
//!
//! # Leases
//!
//! Several hub nodes may share one store; each unfinished job is run by exactly one of them.
//! A node runs a job only while it holds the job's lease ([`JobLease`]): it claims a job that
//! has no owner or whose lease ended ([`ScheduledJobStore::claim`]), renews the lease while it
//! runs ([`ScheduledJobStore::renew`]) and releases it when the job ends
//! ([`ScheduledJobStore::release`]). A node that dies stops renewing; once its lease ends,
//! another node claims the job ([`ScheduledJobStore::claimable`]) and resumes it from the stored
//! scan position. The lease is kept beside the job document, outside its version: renewing never
//! conflicts with the job's own writes. Every method takes `now`; the store compares instants,
//! it never reads a clock.
//!
//! Every implementation must pass the contract suite, `crate::jobs_contract` (feature
//! `contract-suite`): [`SqliteJobStore`] here, `PgJobStore` in `ferrohub-cluster`.

mod any;
mod sqlite;

use std::future::Future;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crate::error::StoreError;
pub use crate::store::Expect;
pub use any::AnyJobStore;
pub use sqlite::SqliteJobStore;

/// What a job does to each device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum JobType {
    /// Patch the twin's tags and desired properties.
    #[serde(rename = "scheduleUpdateTwin")]
    ScheduleUpdateTwin,
    /// Invoke a direct method.
    #[serde(rename = "scheduleDeviceMethod")]
    ScheduleDeviceMethod,
}

impl JobType {
    /// Azure's name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobType::ScheduleUpdateTwin => "scheduleUpdateTwin",
            JobType::ScheduleDeviceMethod => "scheduleDeviceMethod",
        }
    }

    /// The type with Azure's name `s`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "scheduleUpdateTwin" => Some(JobType::ScheduleUpdateTwin),
            "scheduleDeviceMethod" => Some(JobType::ScheduleDeviceMethod),
            _ => None,
        }
    }

    /// The name per-device records use (`devices.jobs`'s `jobType`): Azure spells the twin
    /// job `scheduleTwinUpdate` there.
    pub fn device_job_name(self) -> &'static str {
        match self {
            JobType::ScheduleUpdateTwin => "scheduleTwinUpdate",
            JobType::ScheduleDeviceMethod => "scheduleDeviceMethod",
        }
    }
}

/// A job's status, as `JobResponse.status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Accepted; its start time has not come.
    Queued,
    /// Its start time has come; it has not begun.
    Scheduled,
    /// Reaching its devices.
    Running,
    /// Every selected device was reached (each with its own outcome).
    Completed,
    /// The job could not run (or the hub stopped in a way it cannot resume from).
    Failed,
    /// Cancelled by the service.
    Cancelled,
}

impl JobStatus {
    /// Every status.
    pub const ALL: [JobStatus; 6] = [
        JobStatus::Queued,
        JobStatus::Scheduled,
        JobStatus::Running,
        JobStatus::Completed,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ];

    /// Azure's name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Scheduled => "scheduled",
            JobStatus::Running => "running",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    /// The status with Azure's name `s` (case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s))
    }

    /// Whether the job is over.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled
        )
    }
}

/// A scheduled job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduledJob {
    /// The job's id.
    pub job_id: String,
    /// What it does.
    #[serde(rename = "type")]
    pub job_type: JobType,
    /// The condition selecting its devices (`*` for all), as the service wrote it.
    pub query_condition: String,
    /// When it was accepted.
    pub created_time: DateTime<Utc>,
    /// When it starts.
    pub start_time: DateTime<Utc>,
    /// When it ended.
    pub end_time: Option<DateTime<Utc>>,
    /// How long it may run from its start.
    pub max_execution_time_in_seconds: u64,
    /// The twin patch of a twin job, as sent.
    pub update_twin: Option<Value>,
    /// The method call of a method job, as sent.
    pub cloud_to_device_method: Option<Value>,
    /// Its status.
    pub status: JobStatus,
    /// Why it failed.
    pub failure_reason: Option<String>,
    /// A note on its status (why it ended the way it did).
    pub status_message: Option<String>,
    /// The last device id the scan of the registry has considered (`None`: none yet).
    pub scanned_to: Option<String>,
    /// Whether the scan has considered every device.
    pub scan_complete: bool,
    /// The document's version, for compare-and-set writes.
    pub version: u64,
}

/// A device's status in a job (`devices.jobs`): Azure spells `canceled` with one l here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceJobStatus {
    /// Selected; not yet reached.
    Pending,
    /// Waiting to be reached (a method job's device that is not connected).
    Scheduled,
    /// Being reached now: the patch or the call is under way.
    Running,
    /// Reached (for a method, the device answered, whatever its status).
    Completed,
    /// Not reached, with an error.
    Failed,
    /// The job was cancelled before the device was reached.
    Canceled,
}

impl DeviceJobStatus {
    /// Every status.
    pub const ALL: [DeviceJobStatus; 6] = [
        DeviceJobStatus::Pending,
        DeviceJobStatus::Scheduled,
        DeviceJobStatus::Running,
        DeviceJobStatus::Completed,
        DeviceJobStatus::Failed,
        DeviceJobStatus::Canceled,
    ];

    /// Azure's name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceJobStatus::Pending => "pending",
            DeviceJobStatus::Scheduled => "scheduled",
            DeviceJobStatus::Running => "running",
            DeviceJobStatus::Completed => "completed",
            DeviceJobStatus::Failed => "failed",
            DeviceJobStatus::Canceled => "canceled",
        }
    }

    /// The status with name `s`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Whether the device is done with.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            DeviceJobStatus::Completed | DeviceJobStatus::Failed | DeviceJobStatus::Canceled
        )
    }
}

/// Why a device failed in a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceJobError {
    /// Azure's error code name (`DeviceNotOnline`, `GatewayTimeout`, …).
    pub code: String,
    /// What happened.
    pub description: String,
}

/// What became of one device in one job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceJob {
    /// The job.
    pub job_id: String,
    /// The device.
    pub device_id: String,
    /// Where it stands.
    pub status: DeviceJobStatus,
    /// When the job selected it.
    pub created_time: DateTime<Utc>,
    /// When the hub began to reach it.
    pub start_time: Option<DateTime<Utc>>,
    /// When it was done with.
    pub end_time: Option<DateTime<Utc>>,
    /// When its record last changed.
    pub last_updated_time: DateTime<Utc>,
    /// The outcome (for a method, `{"deviceMethodResponse": {"status", "payload"}}`).
    pub outcome: Option<Value>,
    /// Why it failed.
    pub error: Option<DeviceJobError>,
}

/// A job's per-device counts, as `deviceJobStatistics` shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceJobStatistics {
    /// Devices the job selected.
    pub device_count: u64,
    /// Devices that failed (or were cancelled before they were reached).
    pub failed_count: u64,
    /// Devices reached.
    pub succeeded_count: u64,
    /// Devices being reached now.
    pub running_count: u64,
    /// Devices waiting to be reached.
    pub pending_count: u64,
}

impl DeviceJobStatistics {
    /// Adds `n` devices in `status`.
    pub fn add(&mut self, status: DeviceJobStatus, n: u64) {
        self.device_count += n;
        match status {
            DeviceJobStatus::Pending | DeviceJobStatus::Scheduled => self.pending_count += n,
            DeviceJobStatus::Running => self.running_count += n,
            DeviceJobStatus::Completed => self.succeeded_count += n,
            DeviceJobStatus::Failed | DeviceJobStatus::Canceled => self.failed_count += n,
        }
    }
}

/// One atomic write: the job document (when given, guarded by its [`Expect`]) and device
/// records (inserted or replaced, keyed by job and device).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobWrite {
    /// The job and the state it must be in (`Absent`: a new job; `Version(v)`: stored with
    /// version `v`). Its `version` is stored as given.
    pub job: Option<(ScheduledJob, Expect)>,
    /// Device records to put. Their job must exist (counting this write's job).
    pub devices: Vec<DeviceJob>,
}

/// Who runs a job, and until when (unless renewed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobLease {
    /// The node that holds it.
    pub owner: String,
    /// When it ends.
    pub until: DateTime<Utc>,
}

/// How [`ScheduledJobStore::create`] went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// The job is stored.
    Created,
    /// A job with this id exists; nothing was stored.
    Exists,
    /// The store already holds the most unfinished jobs allowed; nothing was stored.
    TooMany,
}

/// A per-device record with its job's type, as `SELECT * FROM devices.jobs` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceJobRow {
    /// The record.
    pub record: DeviceJob,
    /// Its job's type.
    pub job_type: JobType,
}

/// The statuses of a job that has not finished.
pub const UNFINISHED: [JobStatus; 3] =
    [JobStatus::Queued, JobStatus::Scheduled, JobStatus::Running];

/// Which jobs [`ScheduledJobStore::jobs`] lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFilter {
    /// Only jobs of this type.
    pub job_type: Option<JobType>,
    /// Only jobs in one of these statuses (empty: any).
    pub statuses: Vec<JobStatus>,
}

/// Durable storage of scheduled jobs and their per-device records.
///
/// Every method returns a `Send` future and needs no particular async runtime. Reads see every
/// write whose future has completed.
pub trait ScheduledJobStore: Send + Sync + 'static {
    /// Applies `write` atomically: all of it is stored, or nothing and the error is
    /// [`StoreError::Conflict`] (`index` 0: the job's [`Expect`] failed, or device records name
    /// a job that does not exist). Durable when the future completes with `Ok`.
    fn write(&self, write: JobWrite) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The job with this id.
    fn job(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<ScheduledJob>, StoreError>> + Send;

    /// Up to `limit` jobs matching `filter` with ids after `after`, in id order (byte order).
    fn jobs(
        &self,
        filter: &JobFilter,
        after: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<ScheduledJob>, StoreError>> + Send;

    /// Up to `limit` device records of job `job_id` in one of `statuses` (empty: any), with
    /// device ids after `after`, in device id order.
    fn device_jobs(
        &self,
        job_id: &str,
        statuses: &[DeviceJobStatus],
        after: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<DeviceJob>, StoreError>> + Send;

    /// The counts of job `job_id`'s device records (zero for an unknown job).
    fn statistics(
        &self,
        job_id: &str,
    ) -> impl Future<Output = Result<DeviceJobStatistics, StoreError>> + Send;

    /// Removes finished jobs (and their device records) that ended before `cutoff`.
    fn remove_ended_before(
        &self,
        cutoff: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Stores the new `job` unless one with its id exists or, with `max_unfinished`, the store
    /// would then hold more than that many unfinished jobs (queued, scheduled or running). The
    /// count and the insert are one atomic step, whatever number of writers share the store.
    fn create(
        &self,
        job: ScheduledJob,
        max_unfinished: Option<u64>,
    ) -> impl Future<Output = Result<Created, StoreError>> + Send;

    /// Gives `owner` the lease of job `id` until `until` if the job has not finished and has no
    /// owner, is `owner`'s already, or its lease ended at or before `now`. `Ok(true)`: `owner`
    /// holds it; `Ok(false)`: another node does, or the job finished or does not exist.
    fn claim(
        &self,
        id: &str,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Extends `owner`'s lease of job `id` to `until`, if `owner` holds it and it has not ended
    /// at `now`. `Ok(false)`: the lease is lost (the node must stop running the job).
    fn renew(
        &self,
        id: &str,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Gives up `owner`'s lease of job `id` (nothing if `owner` does not hold it).
    fn release(&self, id: &str, owner: &str)
    -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The lease of job `id`, if it has an owner.
    fn lease(&self, id: &str) -> impl Future<Output = Result<Option<JobLease>, StoreError>> + Send;

    /// Up to `limit` ids, after `after` in id order, of unfinished jobs that have no owner or
    /// whose lease ended at or before `now`: the jobs a node may claim.
    fn claimable(
        &self,
        now: DateTime<Utc>,
        after: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;

    /// Up to `limit` device records of every job, ordered by device id then job id, after the
    /// `(device id, job id)` key `after`, each with its job's type.
    fn device_job_rows(
        &self,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<DeviceJobRow>, StoreError>> + Send;
}
