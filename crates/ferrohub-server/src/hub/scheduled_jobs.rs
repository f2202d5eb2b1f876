//! Scheduled jobs v2 (twins-methods-contract §6): twin updates and direct method calls over the
//! devices a `queryCondition` selects, from a start time, within a window.
//!
//! # Lifecycle
//!
//! A job is stored `queued` when it is accepted ([`Hub::create_scheduled_job`]) and run by a
//! task of its own ([`run`]): it waits for its start time, becomes `running`, scans the
//! registry's devices in id order one page at a time (never the whole registry in memory),
//! evaluates the condition on each device's twin as the REST API renders it (through
//! `ferrohub-query`), and reaches the selected devices. It ends `completed`, `failed` (with a
//! `failureReason`) or `cancelled` ([`Hub::cancel_scheduled_job`]).
//!
//! Twin jobs apply `updateTwin` like a `PATCH` with `If-Match` from its `etag` (absent or `*`:
//! any ETag), through the same operation as the REST API, so connected devices are notified.
//! Method jobs invoke `cloudToDeviceMethod` through the methods operation; a device that is not
//! connected is `scheduled` and called as soon as it subscribes to methods, until the window
//! (`startTime + maxExecutionTimeInSeconds`) ends, after which it fails as not online.
//!
//! # Progress and restarts
//!
//! Every step is recorded before the next is taken: a page of the scan writes the devices it
//! selected (`pending`) together with the scan position, in one atomic write; a batch of
//! devices is marked `running` before it is acted on, and each device's result is recorded
//! after. A hub that stops mid-job resumes it at start: `pending` and `scheduled` devices are
//! reached as usual; a device found `running` was being acted on when the hub stopped, so its
//! outcome is unknown. A twin patch is a merge of fixed values, so it is applied again (the
//! result is the same); a method call is not repeated (the device may have run it): the device
//! fails with `HubRestarted`, so nothing is left half-applied without a trace. A job whose
//! window passed while the hub was stopped ends `failed` with the reason saying so.
//!
//! # Leases and nodes
//!
//! A job runs only on the node holding its lease in the store ([`ScheduledJobStore::claim`]):
//! its task claims the job first, renews the lease every third of `[jobs] lease_seconds` and
//! stops at once (leaving the job as it is) if the lease was lost, and releases it when the job
//! ends or the hub stops. At start and every third of the lease, each node starts the tasks of
//! the jobs no node holds ([`ScheduledJobStore::claimable`]): never claimed, released, or
//! whose node stopped renewing. A node that takes a job over resumes it as a restarted hub
//! does (above). The number of unfinished jobs is bounded across the nodes
//! (`[jobs] max_concurrent_jobs`, 429004 beyond it), checked by the store when a job is
//! created. In a cluster a method job calls each device through the node that holds its
//! connection; a device no node holds waits, looked at again every second.
//!
//! # Time
//!
//! The decisions ([`phase`]) take `now`; only the task that waits turns them into sleeps.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use ferrohub_query::Condition;
use ferrohub_registry::StoreError;
use ferrohub_registry::scheduled_jobs::{
    AnyJobStore, Created, DeviceJob, DeviceJobError, DeviceJobStatistics, DeviceJobStatus, Expect,
    JobFilter, JobStatus, JobType, JobWrite, ScheduledJob, ScheduledJobStore,
};
use ferrohub_twin::{CloudToDeviceMethod, IfMatch, TwinUpdate};
use ferrohub_types::{DeviceId, ErrorCode};
use futures_util::StreamExt;
use serde_json::{Map, Value};
use tokio::sync::watch;

use super::{Hub, HubError};
use crate::config::JobsSettings;
use crate::connections::Identity;

/// The window of a job that gives none (Node's own default).
pub(crate) const DEFAULT_MAX_EXECUTION_SECS: u64 = 3600;
/// The longest window accepted.
pub(crate) const MAX_EXECUTION_SECS: u64 = 365 * 24 * 3600;
/// Devices scanned per page.
const SCAN_PAGE: usize = 500;
/// Devices reached at once.
const CONCURRENCY: usize = 64;
/// How long finished jobs are kept, as on Azure.
const RETENTION_DAYS: i64 = 30;
/// The longest job id accepted.
const MAX_JOB_ID_CHARS: usize = 128;
/// How often a cluster node looks again whether a waiting method job's device connected to
/// another node.
const CLUSTER_RETRY: Duration = Duration::from_secs(1);
/// The error code of a method call the hub was making when it stopped.
pub(crate) const HUB_RESTARTED: &str = "HubRestarted";

/// The scheduled jobs' store, this node's leases and the live jobs' cancel signals.
pub(crate) struct ScheduledJobs {
    pub(crate) store: AnyJobStore,
    /// This node's name: the owner of the leases it takes.
    owner: String,
    /// How long a lease lasts without renewal.
    lease: Duration,
    /// Most unfinished jobs across the hub.
    max_unfinished: u64,
    /// A sender per job task that runs: `true` once the job is cancelled.
    live: Mutex<HashMap<String, watch::Sender<bool>>>,
}

impl ScheduledJobs {
    pub(crate) fn new(store: AnyJobStore, owner: String, settings: &JobsSettings) -> Self {
        ScheduledJobs {
            store,
            owner,
            lease: settings.lease.max(Duration::from_secs(1)),
            max_unfinished: settings.max_concurrent_jobs,
            live: Mutex::new(HashMap::new()),
        }
    }

    /// The end of a lease taken or renewed at `now`.
    fn lease_end(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now + TimeDelta::from_std(self.lease).unwrap_or(TimeDelta::seconds(30))
    }

    /// How often a running job's lease is renewed, and how often the node looks for jobs
    /// whose owner stopped.
    fn renew_every(&self) -> Duration {
        self.lease / 3
    }

    fn signal(&self, id: &str) -> Option<watch::Receiver<bool>> {
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        if live.contains_key(id) {
            return None;
        }
        let (tx, rx) = watch::channel(false);
        live.insert(id.to_owned(), tx);
        Some(rx)
    }

    fn cancel(&self, id: &str) {
        let live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tx) = live.get(id) {
            let _ = tx.send(true);
        }
    }

    fn done(&self, id: &str) {
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }
}

/// A job request read and checked (`PUT /jobs/v2/{id}`).
#[derive(Debug, Clone)]
pub(crate) struct NewJob {
    job: ScheduledJob,
}

/// 400004 with `message`.
fn invalid(message: impl Into<String>) -> HubError {
    HubError::invalid(message)
}

impl NewJob {
    /// Reads the body of `PUT /jobs/v2/{id}` (a `JobRequest`) received at `now`.
    ///
    /// Errors: 400004 naming what is wrong.
    pub(crate) fn read(id: &str, body: &Value, now: DateTime<Utc>) -> Result<NewJob, HubError> {
        check_job_id(id)?;
        let Value::Object(body) = body else {
            return Err(invalid("The job request must be a JSON object."));
        };
        match body.get("jobId") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s == id => {}
            Some(_) => {
                return Err(invalid(
                    "The jobId in the request body does not match the job id in the path.",
                ));
            }
        }
        let job_type = match body.get("type") {
            Some(Value::String(t)) => JobType::parse(t).ok_or_else(|| {
                invalid(format!(
                    "The job type '{t}' is not supported: use scheduleUpdateTwin or scheduleDeviceMethod."
                ))
            })?,
            _ => return Err(invalid("The job request needs a type.")),
        };
        let query_condition = match body.get("queryCondition") {
            Some(Value::String(q)) if !q.trim().is_empty() => q.clone(),
            _ => return Err(invalid("The job request needs a queryCondition.")),
        };
        Condition::parse(&query_condition)
            .map_err(|e| invalid(format!("The queryCondition is not valid: {e}")))?;
        let start_time = match body.get("startTime") {
            None | Some(Value::Null) => now,
            Some(Value::String(s)) => parse_time(s).ok_or_else(|| {
                invalid(format!("The startTime '{s}' is not a valid date and time."))
            })?,
            Some(_) => return Err(invalid("The startTime must be a date and time string.")),
        };
        let max_execution_time_in_seconds = match body.get("maxExecutionTimeInSeconds") {
            None | Some(Value::Null) => DEFAULT_MAX_EXECUTION_SECS,
            Some(v) => v
                .as_u64()
                .filter(|n| (1..=MAX_EXECUTION_SECS).contains(n))
                .ok_or_else(|| {
                    invalid(format!(
                        "The maxExecutionTimeInSeconds must be a whole number from 1 to {MAX_EXECUTION_SECS}."
                    ))
                })?,
        };
        let (update_twin, cloud_to_device_method) = match job_type {
            JobType::ScheduleUpdateTwin => {
                let Some(patch @ Value::Object(_)) = body.get("updateTwin") else {
                    return Err(invalid(
                        "A scheduleUpdateTwin job needs an updateTwin object.",
                    ));
                };
                twin_update(patch)?;
                (Some(patch.clone()), None)
            }
            JobType::ScheduleDeviceMethod => {
                let Some(call @ Value::Object(_)) = body.get("cloudToDeviceMethod") else {
                    return Err(invalid(
                        "A scheduleDeviceMethod job needs a cloudToDeviceMethod object.",
                    ));
                };
                CloudToDeviceMethod::from_json(call)
                    .map_err(|e| HubError::new(e.error_code(), e.to_string()))?;
                (None, Some(call.clone()))
            }
        };
        Ok(NewJob {
            job: ScheduledJob {
                job_id: id.to_owned(),
                job_type,
                query_condition,
                created_time: now,
                start_time,
                end_time: None,
                max_execution_time_in_seconds,
                update_twin,
                cloud_to_device_method,
                status: JobStatus::Queued,
                failure_reason: None,
                status_message: None,
                scanned_to: None,
                scan_complete: false,
                version: 0,
            },
        })
    }
}

/// A job id: 1 to 128 printable ASCII characters, none of `/ ? # %` or space.
fn check_job_id(id: &str) -> Result<(), HubError> {
    let ok = !id.is_empty()
        && id.chars().count() <= MAX_JOB_ID_CHARS
        && id
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '/' | '?' | '#' | '%'));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "The job id '{id}' is not valid: 1 to {MAX_JOB_ID_CHARS} printable ASCII characters without / ? # %."
        )))
    }
}

/// A date and time as the SDKs write them (RFC 3339, with or without a zone: Python's
/// `isoformat()` has none, which means UTC).
pub(crate) fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|t| t.and_utc())
}

/// The twin write and its precondition of a job's `updateTwin`.
fn twin_update(patch: &Value) -> Result<(TwinUpdate, IfMatch), HubError> {
    let update =
        TwinUpdate::patch(patch).map_err(|e| HubError::new(e.error_code(), e.to_string()))?;
    let if_match = match patch.get("etag") {
        None | Some(Value::Null) => IfMatch::Any,
        Some(Value::String(e)) => IfMatch::parse(e),
        Some(_) => return Err(invalid("The updateTwin etag must be a string.")),
    };
    Ok((update, if_match))
}

/// Where a job stands at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Over.
    Finished,
    /// Its start time is this far off.
    Waiting(Duration),
    /// Its window is open; it ends this far from now.
    Open(Duration),
    /// Its window ended before it could finish.
    Expired,
}

/// The end of `job`'s window.
pub(crate) fn window_end(job: &ScheduledJob) -> DateTime<Utc> {
    let secs = i64::try_from(job.max_execution_time_in_seconds).unwrap_or(i64::MAX);
    job.start_time + TimeDelta::try_seconds(secs).unwrap_or(TimeDelta::MAX)
}

/// Where `job` stands at `now`.
pub(crate) fn phase(job: &ScheduledJob, now: DateTime<Utc>) -> Phase {
    if job.status.is_terminal() {
        return Phase::Finished;
    }
    if now < job.start_time {
        return Phase::Waiting((job.start_time - now).to_std().unwrap_or_default());
    }
    let end = window_end(job);
    if now >= end {
        return Phase::Expired;
    }
    Phase::Open((end - now).to_std().unwrap_or_default())
}

/// A job with its device counts, as `GET /jobs/v2/{id}` shows it.
#[derive(Debug, Clone)]
pub(crate) struct JobView {
    pub(crate) job: ScheduledJob,
    pub(crate) statistics: DeviceJobStatistics,
}

impl JobView {
    /// Azure's `JobResponse`.
    pub(crate) fn to_json(&self) -> Value {
        let j = &self.job;
        let mut m = Map::new();
        let time = |t: DateTime<Utc>| {
            Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        };
        m.insert("jobId".into(), j.job_id.clone().into());
        m.insert("queryCondition".into(), j.query_condition.clone().into());
        m.insert("createdTime".into(), time(j.created_time));
        m.insert("startTime".into(), time(j.start_time));
        if let Some(end) = j.end_time {
            m.insert("endTime".into(), time(end));
        }
        m.insert(
            "maxExecutionTimeInSeconds".into(),
            j.max_execution_time_in_seconds.into(),
        );
        m.insert("type".into(), j.job_type.as_str().into());
        m.insert("status".into(), j.status.as_str().into());
        if let Some(t) = &j.update_twin {
            m.insert("updateTwin".into(), t.clone());
        }
        if let Some(c) = &j.cloud_to_device_method {
            m.insert("cloudToDeviceMethod".into(), c.clone());
        }
        if let Some(r) = &j.failure_reason {
            m.insert("failureReason".into(), r.clone().into());
        }
        if let Some(s) = &j.status_message {
            m.insert("statusMessage".into(), s.clone().into());
        }
        m.insert(
            "deviceJobStatistics".into(),
            serde_json::to_value(self.statistics).unwrap_or(Value::Null),
        );
        Value::Object(m)
    }
}

fn store_error(e: StoreError) -> HubError {
    HubError::unavailable("The scheduled jobs store", &e)
}

fn job_not_found(id: &str) -> HubError {
    HubError::new(
        ErrorCode::JobNotFound,
        format!("The job with id '{id}' could not be found."),
    )
}

impl Hub {
    /// Accepts `new` (stored `queued`) and starts its task.
    ///
    /// Errors: 409104 JobAlreadyExists; 429004 ThrottlingMaxActiveJobCountExceeded when the
    /// hub already has `[jobs] max_concurrent_jobs` unfinished jobs (counted across nodes).
    pub(crate) async fn create_scheduled_job(
        self: &Arc<Self>,
        new: NewJob,
    ) -> Result<JobView, HubError> {
        let job = new.job;
        let jobs = &self.scheduled_jobs;
        match jobs
            .store
            .create(job.clone(), Some(jobs.max_unfinished))
            .await
            .map_err(store_error)?
        {
            Created::Created => {}
            Created::Exists => {
                return Err(HubError::new(
                    ErrorCode::JobAlreadyExists,
                    format!("A job with id '{}' already exists.", job.job_id),
                ));
            }
            Created::TooMany => {
                return Err(HubError::new(
                    ErrorCode::ThrottlingMaxActiveJobCountExceeded,
                    format!(
                        "The hub already has {} active jobs, its limit; try again when one has finished.",
                        jobs.max_unfinished
                    ),
                ));
            }
        }
        spawn(self, &job.job_id);
        Ok(JobView {
            job,
            statistics: DeviceJobStatistics::default(),
        })
    }

    /// The job `id` with its device counts.
    ///
    /// Errors: 404002 JobNotFound.
    pub(crate) async fn scheduled_job(&self, id: &str) -> Result<JobView, HubError> {
        let store = &self.scheduled_jobs.store;
        let job = store
            .job(id)
            .await
            .map_err(store_error)?
            .ok_or_else(|| job_not_found(id))?;
        let statistics = store.statistics(id).await.map_err(store_error)?;
        Ok(JobView { job, statistics })
    }

    /// Up to `limit` jobs matching `filter` after `after`, in id order, with their counts.
    pub(crate) async fn scheduled_jobs(
        &self,
        filter: &JobFilter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<JobView>, HubError> {
        let store = &self.scheduled_jobs.store;
        let jobs = store
            .jobs(filter, after, limit)
            .await
            .map_err(store_error)?;
        let mut out = Vec::with_capacity(jobs.len());
        for job in jobs {
            let statistics = store.statistics(&job.job_id).await.map_err(store_error)?;
            out.push(JobView { job, statistics });
        }
        Ok(out)
    }

    /// Cancels job `id` at `now`: a job that has not finished ends `cancelled` and its devices
    /// not yet reached are `canceled`; a finished job is returned as it is.
    ///
    /// Errors: 404002 JobNotFound.
    pub(crate) async fn cancel_scheduled_job(
        &self,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<JobView, HubError> {
        let store = &self.scheduled_jobs.store;
        loop {
            let job = store
                .job(id)
                .await
                .map_err(store_error)?
                .ok_or_else(|| job_not_found(id))?;
            if job.status.is_terminal() {
                break;
            }
            let expect = Expect::Version(job.version);
            let cancelled = ScheduledJob {
                status: JobStatus::Cancelled,
                end_time: Some(now),
                status_message: Some("The job was cancelled.".to_owned()),
                version: job.version + 1,
                ..job
            };
            match store
                .write(JobWrite {
                    job: Some((cancelled, expect)),
                    devices: Vec::new(),
                })
                .await
            {
                Ok(()) => {
                    self.scheduled_jobs.cancel(id);
                    // A job without a running task (it ended with the hub) still gets its
                    // devices marked.
                    cancel_open_devices(store, id, now)
                        .await
                        .map_err(store_error)?;
                    break;
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(store_error(e)),
            }
        }
        self.scheduled_job(id).await
    }
}

/// Marks every device of job `id` not yet done with as `canceled`.
async fn cancel_open_devices(
    store: &AnyJobStore,
    id: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let open = [
        DeviceJobStatus::Pending,
        DeviceJobStatus::Scheduled,
        DeviceJobStatus::Running,
    ];
    let mut after: Option<String> = None;
    loop {
        let page = store
            .device_jobs(id, &open, after.as_deref(), SCAN_PAGE)
            .await?;
        let Some(last) = page.last() else {
            return Ok(());
        };
        after = Some(last.device_id.clone());
        let devices = page
            .into_iter()
            .map(|d| DeviceJob {
                status: DeviceJobStatus::Canceled,
                end_time: Some(now),
                last_updated_time: now,
                ..d
            })
            .collect();
        store.write(JobWrite { job: None, devices }).await?;
    }
}

/// At hub start: removes jobs that finished more than [`RETENTION_DAYS`] ago, starts the jobs
/// this node may claim (see [`claim_open_jobs`]), and keeps looking for more while the hub
/// runs.
pub(crate) async fn resume_all(hub: &Arc<Hub>) -> Result<(), HubError> {
    let store = &hub.scheduled_jobs.store;
    let cutoff = hub.now() - TimeDelta::days(RETENTION_DAYS);
    if let Err(e) = store.remove_ended_before(cutoff).await {
        tracing::warn!(error = %e, "old scheduled jobs not removed");
    }
    claim_open_jobs(hub).await?;
    let hub = Arc::clone(hub);
    tokio::spawn(async move {
        let mut shutdown = hub.shutdown_signal();
        let every = hub.scheduled_jobs.renew_every();
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            if let Err(e) = claim_open_jobs(&hub).await {
                tracing::warn!(error = %e, "looking for scheduled jobs to resume failed");
            }
        }
    });
    Ok(())
}

/// Starts the tasks of the unfinished jobs no node holds: jobs whose lease ended (their node
/// stopped, or this node before a restart) and jobs never claimed. Each task claims its job
/// first, so of several nodes looking at once only one runs it.
pub(crate) async fn claim_open_jobs(hub: &Arc<Hub>) -> Result<(), HubError> {
    let jobs = &hub.scheduled_jobs;
    let now = hub.now();
    let mut after: Option<String> = None;
    loop {
        let page = jobs
            .store
            .claimable(now, after.as_deref(), SCAN_PAGE)
            .await
            .map_err(store_error)?;
        let Some(last) = page.last() else {
            return Ok(());
        };
        after = Some(last.clone());
        for id in page {
            spawn(hub, &id);
        }
    }
}

/// Starts job `id`'s task unless one runs here. The task claims the job's lease and runs it
/// only if the claim succeeds; while it runs it renews the lease (and stops at once, without
/// touching the job, if the lease was lost); it releases the lease when the job ends or the
/// hub stops.
fn spawn(hub: &Arc<Hub>, id: &str) {
    let Some(cancel) = hub.scheduled_jobs.signal(id) else {
        return;
    };
    let hub = Arc::clone(hub);
    let id = id.to_owned();
    tokio::spawn(async move {
        let jobs = &hub.scheduled_jobs;
        let now = hub.now();
        match jobs
            .store
            .claim(&id, &jobs.owner, now, jobs.lease_end(now))
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                jobs.done(&id);
                return;
            }
            Err(e) => {
                tracing::warn!(job = %id, error = %e, "claiming a scheduled job failed");
                jobs.done(&id);
                return;
            }
        }
        tracing::info!(job = %id, node = %jobs.owner, "running scheduled job");
        let mut shutdown = hub.shutdown_signal();
        tokio::select! {
            result = run(&hub, &id, cancel) => {
                if let Err(e) = result {
                    tracing::error!(job = %id, error = %e, "scheduled job stopped");
                }
            }
            () = keep_lease(&hub, &id) => {
                tracing::warn!(job = %id, "the lease of the scheduled job was lost; another node runs it");
                jobs.done(&id);
                return;
            }
            _ = shutdown.wait_for(|s| *s) => {}
        }
        if let Err(e) = jobs.store.release(&id, &jobs.owner).await {
            tracing::warn!(job = %id, error = %e, "releasing a scheduled job failed");
        }
        jobs.done(&id);
    });
}

/// Renews the lease of job `id` while it runs here; returns only when the lease is lost
/// (another node took it, or it could not be renewed before it ended). A job cancelled through
/// another node is cancelled here too.
async fn keep_lease(hub: &Arc<Hub>, id: &str) {
    let jobs = &hub.scheduled_jobs;
    let mut held_until = jobs.lease_end(hub.now());
    loop {
        tokio::time::sleep(jobs.renew_every()).await;
        let now = hub.now();
        match jobs
            .store
            .renew(id, &jobs.owner, now, jobs.lease_end(now))
            .await
        {
            Ok(true) => held_until = jobs.lease_end(now),
            Ok(false) => return,
            Err(e) => {
                tracing::warn!(job = %id, error = %e, "renewing the lease of a scheduled job failed");
                if hub.now() >= held_until {
                    return;
                }
            }
        }
        if let Ok(Some(job)) = jobs.store.job(id).await
            && job.status == JobStatus::Cancelled
        {
            jobs.cancel(id);
        }
    }
}

/// Why a job's run stopped early.
enum Stop {
    /// It was cancelled (its record says so already).
    Cancelled,
    /// Its window ended.
    Expired,
}

/// A job's run: wait for its start, then reach its devices.
async fn run(hub: &Arc<Hub>, id: &str, mut cancel: watch::Receiver<bool>) -> Result<(), HubError> {
    let store = hub.scheduled_jobs.store.clone();
    let Some(mut job) = store.job(id).await.map_err(store_error)? else {
        return Ok(());
    };
    // Wait for the start time (or a cancel).
    loop {
        match phase(&job, hub.now()) {
            Phase::Finished => return Ok(()),
            Phase::Waiting(wait) => {
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    _ = cancel.wait_for(|c| *c) => return Ok(()),
                }
            }
            Phase::Expired if job.status != JobStatus::Running => {
                let reason = "The job's execution window ended before it could start (the hub was not running).";
                finish(&store, &mut job, hub.now(), JobStatus::Failed, Some(reason)).await?;
                return Ok(());
            }
            Phase::Open(_) | Phase::Expired => break,
        }
    }
    if job.status != JobStatus::Running {
        job = set_job(&store, &job, |j| j.status = JobStatus::Running).await?;
    }
    let condition = match Condition::parse(&job.query_condition) {
        Ok(c) => c,
        Err(e) => {
            let reason = format!("The queryCondition is not valid: {e}");
            finish(
                &store,
                &mut job,
                hub.now(),
                JobStatus::Failed,
                Some(&reason),
            )
            .await?;
            return Ok(());
        }
    };
    let action = match Action::of(&job) {
        Ok(a) => a,
        Err(e) => {
            finish(
                &store,
                &mut job,
                hub.now(),
                JobStatus::Failed,
                Some(&e.message),
            )
            .await?;
            return Ok(());
        }
    };
    let runner = Runner {
        hub: Arc::clone(hub),
        store: store.clone(),
        job_id: id.to_owned(),
        action,
        window_end: window_end(&job),
        cancel: cancel.clone(),
    };
    let outcome = runner
        .reach_all(&mut job, &condition, tokio::task::JoinSet::new())
        .await;
    match outcome {
        Ok(()) => {
            finish(&store, &mut job, hub.now(), JobStatus::Completed, None).await?;
        }
        Err(RunError::Stop(Stop::Cancelled)) => {}
        Err(RunError::Stop(Stop::Expired)) => {
            let now = hub.now();
            fail_open_devices(
                &store,
                id,
                now,
                "JobExpired",
                "The job's maxExecutionTimeInSeconds passed before the device was reached.",
            )
            .await
            .map_err(store_error)?;
            let reason = "The job ran past its maxExecutionTimeInSeconds.";
            finish(&store, &mut job, now, JobStatus::Failed, Some(reason)).await?;
        }
        Err(RunError::Hub(e)) => return Err(e),
    }
    Ok(())
}

/// Writes `change` of the current `job`, re-reading on a conflict; fails with
/// [`RunError::Stop`] when the job was cancelled meanwhile.
async fn set_job(
    store: &AnyJobStore,
    job: &ScheduledJob,
    change: impl Fn(&mut ScheduledJob),
) -> Result<ScheduledJob, HubError> {
    let mut current = job.clone();
    loop {
        let mut next = current.clone();
        change(&mut next);
        next.version = current.version + 1;
        match store
            .write(JobWrite {
                job: Some((next.clone(), Expect::Version(current.version))),
                devices: Vec::new(),
            })
            .await
        {
            Ok(()) => return Ok(next),
            Err(StoreError::Conflict { .. }) => {
                current = store
                    .job(&job.job_id)
                    .await
                    .map_err(store_error)?
                    .ok_or_else(|| job_not_found(&job.job_id))?;
                if current.status.is_terminal() {
                    return Ok(current);
                }
            }
            Err(e) => return Err(store_error(e)),
        }
    }
}

/// Ends `job` with `status` at `now` (unless it ended meanwhile, e.g. was cancelled).
async fn finish(
    store: &AnyJobStore,
    job: &mut ScheduledJob,
    now: DateTime<Utc>,
    status: JobStatus,
    reason: Option<&str>,
) -> Result<(), HubError> {
    *job = set_job(store, job, |j| {
        if !j.status.is_terminal() {
            j.status = status;
            j.end_time = Some(now);
            if status == JobStatus::Failed {
                j.failure_reason = reason.map(str::to_owned);
            }
            j.status_message = reason.map(str::to_owned);
        }
    })
    .await?;
    Ok(())
}

/// Marks every device of job `id` not yet done with as failed with `code`.
async fn fail_open_devices(
    store: &AnyJobStore,
    id: &str,
    now: DateTime<Utc>,
    code: &str,
    description: &str,
) -> Result<(), StoreError> {
    let open = [
        DeviceJobStatus::Pending,
        DeviceJobStatus::Scheduled,
        DeviceJobStatus::Running,
    ];
    loop {
        let page = store.device_jobs(id, &open, None, SCAN_PAGE).await?;
        if page.is_empty() {
            return Ok(());
        }
        let devices = page
            .into_iter()
            .map(|d| failed(d, now, code, description))
            .collect();
        store.write(JobWrite { job: None, devices }).await?;
    }
}

/// Whether a method call may reach `identity` now: it subscribed to methods on this node, or
/// (in a cluster) another node announced its connection.
fn reachable(hub: &Hub, identity: &Identity) -> bool {
    hub.connections
        .has_interest(identity, super::methods::wants_methods)
        || (hub.coordinator.is_clustered()
            && hub
                .connections
                .presence(identity)
                .is_some_and(|p| p.connected))
}

/// Whether `d` failed because no node holds the device's connection.
fn not_online(d: &DeviceJob) -> bool {
    d.status == DeviceJobStatus::Failed
        && d.error
            .as_ref()
            .is_some_and(|e| e.code == ErrorCode::DeviceNotOnline.name())
}

fn failed(d: DeviceJob, now: DateTime<Utc>, code: &str, description: &str) -> DeviceJob {
    DeviceJob {
        status: DeviceJobStatus::Failed,
        end_time: Some(now),
        last_updated_time: now,
        error: Some(DeviceJobError {
            code: code.to_owned(),
            description: description.to_owned(),
        }),
        ..d
    }
}

/// What a job does to one device, read once.
#[derive(Clone)]
enum Action {
    Twin(TwinUpdate, IfMatch),
    Method(CloudToDeviceMethod),
}

impl Action {
    fn of(job: &ScheduledJob) -> Result<Action, HubError> {
        match job.job_type {
            JobType::ScheduleUpdateTwin => {
                let patch = job
                    .update_twin
                    .as_ref()
                    .ok_or_else(|| invalid("The job has no updateTwin."))?;
                let (u, m) = twin_update(patch)?;
                Ok(Action::Twin(u, m))
            }
            JobType::ScheduleDeviceMethod => {
                let call = job
                    .cloud_to_device_method
                    .as_ref()
                    .ok_or_else(|| invalid("The job has no cloudToDeviceMethod."))?;
                CloudToDeviceMethod::from_json(call)
                    .map(Action::Method)
                    .map_err(|e| HubError::new(e.error_code(), e.to_string()))
            }
        }
    }
}

enum RunError {
    Stop(Stop),
    Hub(HubError),
}

impl From<HubError> for RunError {
    fn from(e: HubError) -> Self {
        RunError::Hub(e)
    }
}

impl From<StoreError> for RunError {
    fn from(e: StoreError) -> Self {
        RunError::Hub(store_error(e))
    }
}

struct Runner {
    hub: Arc<Hub>,
    store: AnyJobStore,
    job_id: String,
    action: Action,
    window_end: DateTime<Utc>,
    cancel: watch::Receiver<bool>,
}

impl Runner {
    fn check(&self) -> Result<(), RunError> {
        if *self.cancel.borrow() {
            return Err(RunError::Stop(Stop::Cancelled));
        }
        if self.hub.now() >= self.window_end {
            return Err(RunError::Stop(Stop::Expired));
        }
        Ok(())
    }

    /// Resumes the devices left from an earlier run, then scans the rest of the registry.
    async fn reach_all(
        &self,
        job: &mut ScheduledJob,
        condition: &Condition,
        mut waiters: tokio::task::JoinSet<()>,
    ) -> Result<(), RunError> {
        // Devices an earlier run was acting on when the hub stopped.
        let mut after: Option<String> = None;
        loop {
            let page = self
                .store
                .device_jobs(
                    &self.job_id,
                    &[DeviceJobStatus::Running],
                    after.as_deref(),
                    SCAN_PAGE,
                )
                .await?;
            let Some(last) = page.last() else { break };
            after = Some(last.device_id.clone());
            match &self.action {
                // The same merge again gives the same twin.
                Action::Twin(..) => self.reach(page, &mut waiters).await?,
                Action::Method(_) => {
                    let now = self.hub.now();
                    let devices = page
                        .into_iter()
                        .map(|d| failed(d, now, HUB_RESTARTED, "The hub restarted while the method call was in flight; it was not repeated, since the device may have run it."))
                        .collect();
                    self.store.write(JobWrite { job: None, devices }).await?;
                }
            }
        }
        // Devices selected, not yet reached.
        for status in [DeviceJobStatus::Pending, DeviceJobStatus::Scheduled] {
            let mut after: Option<String> = None;
            loop {
                self.check()?;
                let page = self
                    .store
                    .device_jobs(&self.job_id, &[status], after.as_deref(), SCAN_PAGE)
                    .await?;
                let Some(last) = page.last() else { break };
                after = Some(last.device_id.clone());
                self.reach(page, &mut waiters).await?;
            }
        }
        // The rest of the registry.
        let lookup = condition.key_lookup(ferrohub_query::Collection::Devices);
        while !job.scan_complete {
            self.check()?;
            let after = job
                .scanned_to
                .as_deref()
                .map(DeviceId::new)
                .transpose()
                .ok()
                .flatten();
            let twins = match &lookup.device_ids {
                // `deviceId = 'x'` / `IN [...]`: read just those, still in id order.
                Some(ids) => {
                    let mut out = Vec::new();
                    for id in ids
                        .iter()
                        .filter(|id| job.scanned_to.as_deref().is_none_or(|a| id.as_str() > a))
                        .take(SCAN_PAGE)
                    {
                        let Ok(d) = DeviceId::new(id) else { continue };
                        match self.hub.registry.twin(&d, None).await {
                            Ok(t) => out.push(t),
                            Err(ferrohub_registry::RegistryError::DeviceNotFound(_)) => {}
                            Err(e) => return Err(RunError::Hub(e.into())),
                        }
                    }
                    let remaining = ids
                        .iter()
                        .filter(|id| job.scanned_to.as_deref().is_none_or(|a| id.as_str() > a))
                        .count();
                    (
                        out,
                        remaining <= SCAN_PAGE,
                        ids.iter()
                            .filter(|id| job.scanned_to.as_deref().is_none_or(|a| id.as_str() > a))
                            .take(SCAN_PAGE)
                            .last()
                            .cloned(),
                    )
                }
                None => {
                    let page = self
                        .hub
                        .registry
                        .device_twins(after.as_ref(), SCAN_PAGE)
                        .await
                        .map_err(HubError::from)?;
                    let last = page.last().map(|t| t.owner.device_id().to_string());
                    let complete = page.len() < SCAN_PAGE;
                    (page, complete, last)
                }
            };
            let (twins, complete, last) = twins;
            let now = self.hub.now();
            let mut selected = Vec::new();
            for t in &twins {
                // `*` selects every device: no need to render the twin.
                let selects = match condition {
                    Condition::All => true,
                    Condition::Where(_) => {
                        let identity = self.hub.twin_identity(&t.owner).await;
                        let row = serde_json::to_value(t.twin.rest_view(&identity))
                            .unwrap_or(Value::Null);
                        condition.matches(&row)
                    }
                };
                if selects {
                    selected.push(DeviceJob {
                        job_id: self.job_id.clone(),
                        device_id: t.owner.device_id().to_string(),
                        status: DeviceJobStatus::Pending,
                        created_time: now,
                        start_time: None,
                        end_time: None,
                        last_updated_time: now,
                        outcome: None,
                        error: None,
                    });
                }
            }
            let expect = Expect::Version(job.version);
            let mut next = job.clone();
            next.version += 1;
            next.scanned_to = last.or(next.scanned_to);
            next.scan_complete = complete;
            match self
                .store
                .write(JobWrite {
                    job: Some((next.clone(), expect)),
                    devices: selected.clone(),
                })
                .await
            {
                Ok(()) => *job = next,
                Err(StoreError::Conflict { .. }) => {
                    // Changed elsewhere: cancelled, most likely.
                    let current = self
                        .store
                        .job(&self.job_id)
                        .await?
                        .ok_or_else(|| job_not_found(&self.job_id))?;
                    if current.status.is_terminal() {
                        return Err(RunError::Stop(Stop::Cancelled));
                    }
                    *job = current;
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
            self.reach(selected, &mut waiters).await?;
        }
        // Offline devices of a method job, until they connect or the window ends.
        let mut cancel = self.cancel.clone();
        loop {
            tokio::select! {
                next = waiters.join_next() => {
                    if next.is_none() {
                        break;
                    }
                }
                _ = cancel.wait_for(|c| *c) => {
                    waiters.abort_all();
                    return Err(RunError::Stop(Stop::Cancelled));
                }
            }
        }
        // Every device was dealt with: the end of the window no longer matters.
        if *self.cancel.borrow() {
            return Err(RunError::Stop(Stop::Cancelled));
        }
        Ok(())
    }

    /// Marks `devices` running (a method job's devices that are not connected: `scheduled`,
    /// left to waiters), reaches them and records each result.
    async fn reach(
        &self,
        devices: Vec<DeviceJob>,
        waiters: &mut tokio::task::JoinSet<()>,
    ) -> Result<(), RunError> {
        if devices.is_empty() {
            return Ok(());
        }
        self.check()?;
        let now = self.hub.now();
        let mut running = Vec::with_capacity(devices.len());
        let mut waiting = Vec::new();
        let clustered = self.hub.coordinator.is_clustered();
        for d in devices {
            let offline = matches!(self.action, Action::Method(_))
                && DeviceId::new(&d.device_id).is_ok_and(|id| !reachable(&self.hub, &(id, None)));
            if offline {
                waiting.push(DeviceJob {
                    status: DeviceJobStatus::Scheduled,
                    last_updated_time: now,
                    ..d
                });
            } else {
                running.push(DeviceJob {
                    status: DeviceJobStatus::Running,
                    start_time: d.start_time.or(Some(now)),
                    last_updated_time: now,
                    ..d
                });
            }
        }
        self.store
            .write(JobWrite {
                job: None,
                devices: running.iter().chain(&waiting).cloned().collect(),
            })
            .await?;
        for d in waiting {
            self.wait_for(d, waiters);
        }
        match self.action {
            // A twin patch is quick: results are recorded a batch at a time.
            Action::Twin(..) => {
                let done: Vec<DeviceJob> = futures_util::stream::iter(running)
                    .map(|d| self.reach_one(d))
                    .buffer_unordered(CONCURRENCY)
                    .collect()
                    .await;
                self.store
                    .write(JobWrite {
                        job: None,
                        devices: done,
                    })
                    .await?;
            }
            // A method call takes as long as the device: each result is recorded as it comes.
            Action::Method(_) => {
                let results: Vec<Result<Option<DeviceJob>, StoreError>> =
                    futures_util::stream::iter(running)
                        .map(|d| async move {
                            let done = self.reach_one(d.clone()).await;
                            let record = if clustered && not_online(&done) {
                                // No node holds the device: it waits, as on one node.
                                DeviceJob {
                                    status: DeviceJobStatus::Scheduled,
                                    last_updated_time: self.hub.now(),
                                    ..d
                                }
                            } else {
                                done
                            };
                            let wait = (record.status == DeviceJobStatus::Scheduled)
                                .then(|| record.clone());
                            self.store
                                .write(JobWrite {
                                    job: None,
                                    devices: vec![record],
                                })
                                .await
                                .map(|()| wait)
                        })
                        .buffer_unordered(CONCURRENCY)
                        .collect()
                        .await;
                for result in results {
                    if let Some(d) = result? {
                        self.wait_for(d, waiters);
                    }
                }
            }
        }
        Ok(())
    }

    /// Reaches one device and says how it went.
    async fn reach_one(&self, d: DeviceJob) -> DeviceJob {
        let Ok(device_id) = DeviceId::new(&d.device_id) else {
            return failed(d, self.hub.now(), "DeviceNotFound", "Not a device id.");
        };
        let identity: Identity = (device_id, None);
        let result = match &self.action {
            Action::Twin(update, if_match) => self
                .hub
                .update_twin(identity, update.clone(), if_match.clone())
                .await
                .map(|_| None),
            Action::Method(call) => self
                .hub
                .invoke_method(&identity, call)
                .await
                .map(|r| Some(serde_json::json!({ "deviceMethodResponse": r.to_json() }))),
        };
        let now = self.hub.now();
        match result {
            Ok(outcome) => DeviceJob {
                status: DeviceJobStatus::Completed,
                end_time: Some(now),
                last_updated_time: now,
                outcome,
                error: None,
                ..d
            },
            Err(e) => failed(d, now, e.code.name(), &e.message),
        }
    }

    /// Calls a method job's device once it subscribes to methods, or fails it when the window
    /// ends first.
    fn wait_for(&self, d: DeviceJob, waiters: &mut tokio::task::JoinSet<()>) {
        let runner = Runner {
            hub: Arc::clone(&self.hub),
            store: self.store.clone(),
            job_id: self.job_id.clone(),
            action: self.action.clone(),
            window_end: self.window_end,
            cancel: self.cancel.clone(),
        };
        waiters.spawn(async move {
            let Ok(device_id) = DeviceId::new(&d.device_id) else {
                return;
            };
            let identity: Identity = (device_id, None);
            let clustered = runner.hub.coordinator.is_clustered();
            let left = (runner.window_end - runner.hub.now())
                .to_std()
                .unwrap_or_default();
            let window_end = tokio::time::Instant::now() + left;
            let result = loop {
                // In a cluster the device may connect to another node: its presence is looked
                // at every CLUSTER_RETRY (a connection here wakes the waiter at once).
                let deadline = if clustered {
                    window_end.min(tokio::time::Instant::now() + CLUSTER_RETRY)
                } else {
                    window_end
                };
                let online = runner
                    .hub
                    .connections
                    .wait_for_interest(&identity, super::methods::wants_methods, deadline)
                    .await
                    || reachable(&runner.hub, &identity);
                if !online && clustered && tokio::time::Instant::now() < window_end {
                    continue;
                }
                if !online {
                    break failed(
                        d,
                        runner.hub.now(),
                        ErrorCode::DeviceNotOnline.name(),
                        "The device did not connect within the job's maxExecutionTimeInSeconds.",
                    );
                }
                let running = DeviceJob {
                    status: DeviceJobStatus::Running,
                    last_updated_time: runner.hub.now(),
                    ..d.clone()
                };
                if let Err(e) = runner
                    .store
                    .write(JobWrite {
                        job: None,
                        devices: vec![running.clone()],
                    })
                    .await
                {
                    tracing::warn!(error = %e, "a device's job record was not written");
                }
                let done = runner.reach_one(running).await;
                if clustered && not_online(&done) && tokio::time::Instant::now() < window_end {
                    let waiting = DeviceJob {
                        status: DeviceJobStatus::Scheduled,
                        last_updated_time: runner.hub.now(),
                        ..d.clone()
                    };
                    if let Err(e) = runner
                        .store
                        .write(JobWrite {
                            job: None,
                            devices: vec![waiting],
                        })
                        .await
                    {
                        tracing::warn!(error = %e, "a device's job record was not written");
                    }
                    continue;
                }
                break done;
            };
            if *runner.cancel.borrow() {
                return;
            }
            if let Err(e) = runner
                .store
                .write(JobWrite {
                    job: None,
                    devices: vec![result],
                })
                .await
            {
                tracing::warn!(error = %e, "a device's job result was not written");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).expect("time")
    }

    #[test]
    fn requests_read_as_the_sdks_send_them() {
        let node = json!({"jobId":"job2","type":"scheduleDeviceMethod","cloudToDeviceMethod":{"methodName":"reboot","payload":null,"responseTimeoutInSeconds":30},"startTime":null,"queryCondition":"deviceId = 'dev1'"});
        let job = NewJob::read("job2", &node, t(0)).expect("valid").job;
        assert_eq!(job.start_time, t(0), "a null start time is now");
        assert_eq!(
            job.max_execution_time_in_seconds,
            DEFAULT_MAX_EXECUTION_SECS
        );
        assert_eq!(job.status, JobStatus::Queued);
        let python = json!({"jobId": "job1", "type": "scheduleUpdateTwin", "updateTwin": {"properties": {"desired": {"temperature": 98.6}}, "etag": "*"}, "queryCondition": "*", "startTime": "2026-12-03T06:54:55.602831"});
        let job = NewJob::read("job1", &python, t(0)).expect("valid").job;
        assert_eq!(
            job.start_time.to_rfc3339(),
            "2026-12-03T06:54:55.602831+00:00"
        );
        let node_twin = json!({"jobId":"j","type":"scheduleUpdateTwin","updateTwin":{"etag":"*","tags":{"key":"value2"},"properties":{"desired":{},"reported":{}}},"startTime":"2030-01-01T00:00:00.000Z","maxExecutionTimeInSeconds":120,"queryCondition":"deviceId IN ['dev1']"});
        let job = NewJob::read("j", &node_twin, t(0)).expect("valid").job;
        assert_eq!(job.max_execution_time_in_seconds, 120);
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        let cases = [
            (
                json!({"type":"scheduleUpdateTwin","queryCondition":"*"}),
                "updateTwin",
            ),
            (
                json!({"type":"scheduleDirectRequest","queryCondition":"*"}),
                "scheduleDirectRequest",
            ),
            (
                json!({"type":"scheduleDeviceMethod","queryCondition":"*","cloudToDeviceMethod":{}}),
                "method",
            ),
            (
                json!({"type":"scheduleUpdateTwin","queryCondition":"SELECT * FROM","updateTwin":{}}),
                "queryCondition",
            ),
            (
                json!({"type":"scheduleUpdateTwin","queryCondition":"*","updateTwin":{},"startTime":"tomorrow"}),
                "startTime",
            ),
            (
                json!({"type":"scheduleUpdateTwin","queryCondition":"*","updateTwin":{},"maxExecutionTimeInSeconds":0}),
                "maxExecutionTimeInSeconds",
            ),
            (
                json!({"jobId":"other","type":"scheduleUpdateTwin","queryCondition":"*","updateTwin":{}}),
                "jobId",
            ),
            (
                json!({"type":"scheduleUpdateTwin","queryCondition":"*","updateTwin":{"tags":{"$bad":1}}}),
                "$bad",
            ),
        ];
        for (body, needle) in cases {
            let e = NewJob::read("j", &body, t(0)).expect_err("refused");
            assert_eq!(e.code, ErrorCode::ArgumentInvalid, "{body}");
            assert!(
                e.message.to_lowercase().contains(&needle.to_lowercase()),
                "{body}: {}",
                e.message
            );
        }
        assert!(NewJob::read("a/b", &json!({}), t(0)).is_err());
    }

    #[test]
    fn phases_follow_the_clock() {
        let body = json!({"type":"scheduleUpdateTwin","queryCondition":"*","updateTwin":{},"startTime":"2027-01-15T08:00:00Z","maxExecutionTimeInSeconds":60});
        let mut job = NewJob::read("j", &body, t(0)).expect("valid").job;
        let start = job.start_time;
        assert_eq!(
            phase(&job, start - TimeDelta::seconds(5)),
            Phase::Waiting(Duration::from_secs(5))
        );
        assert_eq!(phase(&job, start), Phase::Open(Duration::from_secs(60)));
        assert_eq!(
            phase(&job, start + TimeDelta::seconds(59)),
            Phase::Open(Duration::from_secs(1))
        );
        assert_eq!(phase(&job, start + TimeDelta::seconds(60)), Phase::Expired);
        job.status = JobStatus::Cancelled;
        assert_eq!(phase(&job, start), Phase::Finished);
    }
}
