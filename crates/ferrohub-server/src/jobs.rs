//! Import and export jobs (`/jobs/create`, `/jobs`, `/jobs/{id}`; azure-contract §8.5): the job
//! records, the one-active-job rule, and their persistence in `<data_dir>/jobs.json`.
//!
//! # Lifecycle
//!
//! A job is created `enqueued`, becomes `running` when its task starts, and ends `completed`,
//! `failed` (with a `failureReason`) or `cancelled`. At most one job is `enqueued` or `running`
//! at a time; finished jobs are listed for [`RETENTION_DAYS`] days.
//!
//! # Durability
//!
//! Job records are written to `jobs.json` durably (temp file, fsync, rename): a creation or a
//! cancellation before it is answered, a job's start and end as they happen (a failed write is
//! logged). Progress counters live in memory only. When the hub starts, a job the file shows
//! `enqueued` or `running` was interrupted: it is marked `failed` with the reason
//! [`RESTART_REASON`], so a job never silently vanishes.
//!
//! A `jobs.json` that cannot be read stops the hub from starting rather than losing the job
//! history. The file is owner-only: container URLs may carry signatures.
//!
//! # Containers
//!
//! `file:///abs/dir` (a directory inside the job file root, see [`files`]) or an `http(s)`
//! container URL (reached under [`blob::HttpRules`]); anything else is refused when the job is
//! created. A `file://` container must exist, and an output blob there must not: jobs create
//! files, they never replace one.
//!
//! # Permissions
//!
//! An export needs RegistryRead, with or without keys: on Azure as here, RegistryRead already
//! reads every identity's keys (`GET /devices/{id}`), so an export with keys reveals nothing
//! that permission does not. An import needs RegistryWrite.
//!
//! The work itself (reading and writing blobs, applying records) is in [`run`]; the blob
//! containers are in [`blob`] and [`files`].

pub(crate) mod blob;
pub(crate) mod files;
pub(crate) mod run;
pub(crate) mod shared;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use ferrohub_types::ErrorCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::config::JobsSettings;
use crate::fsutil::{create_dir_durably, write_durably};
use crate::rest::error::ApiError;
use blob::{Container, HttpRules, Stores};
use files::FileRoot;

/// How long finished jobs are kept, as on Azure.
pub(crate) const RETENTION_DAYS: i64 = 30;

/// The failure reason of a job the hub was running when it stopped.
pub(crate) const RESTART_REASON: &str = "the hub restarted while the job was running";

/// The blob an export writes and an import reads when the request names none.
pub(crate) const DEFAULT_DEVICES_BLOB: &str = "devices.txt";

/// The blob an import writes its per-record errors to when the request names none.
pub(crate) const DEFAULT_IMPORT_ERRORS_BLOB: &str = "importErrors.log";

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) enum JobType {
    /// Write every identity to `outputBlobName` in the output container.
    Export,
    /// Apply the records of `inputBlobName` in the input container.
    Import,
}

impl JobType {
    /// The wire name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            JobType::Export => "export",
            JobType::Import => "import",
        }
    }

    /// The request's `type`; C#'s enum names are accepted beside Azure's wire values.
    fn parse(s: &str) -> Option<JobType> {
        match s {
            "export" | "exportDevices" | "ExportDevices" | "Export" => Some(JobType::Export),
            "import" | "importDevices" | "ImportDevices" | "Import" => Some(JobType::Import),
            _ => None,
        }
    }
}

/// Where a job is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) enum JobStatus {
    /// Created, not started yet.
    Enqueued,
    /// Working.
    Running,
    /// Done; for an import, per-record failures are in the errors blob.
    Completed,
    /// Stopped early; `failureReason` says why.
    Failed,
    /// Cancelled with `DELETE /jobs/{id}`.
    Cancelled,
}

impl JobStatus {
    /// `enqueued` or `running`.
    pub(crate) fn is_active(self) -> bool {
        matches!(self, JobStatus::Enqueued | JobStatus::Running)
    }
}

/// `POST /jobs/create`: Azure's JobProperties as a client sends them. Fields the hub assigns
/// (`jobId`, `status`, `progress`, times) and unknown fields are ignored.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct JobRequest {
    /// `export` or `import`.
    #[serde(rename = "type")]
    pub(crate) kind: Option<String>,
    /// Import: the container holding `inputBlobName`. `file:///abs/dir` or an `http(s)` container
    /// URL (a pre-signed or SAS URL).
    pub(crate) input_blob_container_uri: Option<String>,
    /// Import: the blob to read; default `devices.txt`.
    pub(crate) input_blob_name: Option<String>,
    /// The container the job writes to (export: the devices; import: the errors).
    pub(crate) output_blob_container_uri: Option<String>,
    /// Export: default `devices.txt`. Import: the errors blob, default `importErrors.log`.
    pub(crate) output_blob_name: Option<String>,
    /// Export: write keys as null.
    pub(crate) exclude_keys_in_export: Option<bool>,
    /// `keyBased` or `identityBased`; accepted and ignored (containers are reached by URL).
    pub(crate) storage_authentication_type: Option<String>,
}

/// An import or export job, as `GET /jobs/{id}` shows it (Azure's JobProperties plus the
/// counters `deviceCount` and `errorCount`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct JobProperties {
    /// The hub-assigned id.
    pub(crate) job_id: String,
    /// When the job was created.
    pub(crate) start_time_utc: DateTime<Utc>,
    /// When the job finished; absent while it is enqueued or running.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub(crate) end_time_utc: Option<DateTime<Utc>>,
    /// `export` or `import`.
    #[serde(rename = "type")]
    pub(crate) kind: JobType,
    /// `enqueued`, `running`, `completed`, `failed` or `cancelled`.
    pub(crate) status: JobStatus,
    /// Percent done, 0–100.
    pub(crate) progress: u32,
    /// Import: the input container, as given.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub(crate) input_blob_container_uri: Option<String>,
    /// Import: the blob read.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub(crate) input_blob_name: Option<String>,
    /// The output container, as given.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub(crate) output_blob_container_uri: Option<String>,
    /// Export: the devices blob written. Import: the errors blob written.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub(crate) output_blob_name: Option<String>,
    /// Export: whether keys are written as null.
    #[serde(default)]
    pub(crate) exclude_keys_in_export: bool,
    /// As given; ignored.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub(crate) storage_authentication_type: Option<String>,
    /// Why the job failed.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub(crate) failure_reason: Option<String>,
    /// Extension: identity records handled so far (export: written, devices and modules;
    /// import: read from the input blob, including those that failed).
    #[serde(default)]
    pub(crate) device_count: u64,
    /// Extension (import): records that failed, each a line of the errors blob.
    #[serde(default)]
    pub(crate) error_count: u64,
}

/// Why a job request or lookup failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum JobError {
    /// The request is not a valid import or export job.
    #[error("{0}")]
    Invalid(String),
    /// Another job is enqueued or running.
    #[error(
        "The job '{0}' is still enqueued or running; a hub runs one import or export job at a time."
    )]
    Busy(String),
    /// No job has this id (or it was older than the retention period).
    #[error("The job '{0}' could not be found.")]
    NotFound(String),
    /// The job records could not be stored.
    #[error("storing the job records failed: {0}")]
    Storage(String),
}

impl From<JobError> for ApiError {
    fn from(e: JobError) -> Self {
        let code = match &e {
            JobError::Invalid(_) => ErrorCode::ArgumentInvalid,
            JobError::Busy(_) => ErrorCode::ThrottlingMaxActiveJobCountExceeded,
            JobError::NotFound(_) => ErrorCode::JobNotFound,
            // Logged with the response's tracking id.
            JobError::Storage(_) => ErrorCode::ServerError,
        };
        ApiError::new(code, e.to_string())
    }
}

/// A validated job request: what the runner needs besides the record.
#[derive(Debug, Clone)]
pub(crate) struct JobSpec {
    pub(crate) kind: JobType,
    pub(crate) input: Option<(Container, String)>,
    pub(crate) output: (Container, String),
    pub(crate) exclude_keys: bool,
}

impl JobSpec {
    /// Validates `req`: the type, the containers (`file://` or `http(s)://`) and blob names.
    pub(crate) fn from_request(req: &JobRequest) -> Result<JobSpec, JobError> {
        let kind = match req.kind.as_deref() {
            None | Some("") => {
                return Err(JobError::Invalid(
                    "The job type is required: 'export' or 'import'.".to_owned(),
                ));
            }
            Some(t) => JobType::parse(t).ok_or_else(|| {
                JobError::Invalid(format!(
                    "Unsupported job type '{t}': use 'export' or 'import'."
                ))
            })?,
        };
        let container = |field: &str, uri: Option<&String>| -> Result<Container, JobError> {
            let uri = uri
                .map(|s| s.trim())
                .filter(|s| !s.is_empty())
                .ok_or_else(|| {
                    JobError::Invalid(format!("{field} is required for an {} job.", kind.name()))
                })?;
            Container::parse(uri).map_err(|e| JobError::Invalid(format!("{field}: {e}")))
        };
        let name = |field: &str, given: Option<&String>, default: &str| {
            let name = given
                .map(String::as_str)
                .filter(|s| !s.is_empty())
                .unwrap_or(default);
            blob::check_blob_name(name)
                .map(|()| name.to_owned())
                .map_err(|e| JobError::Invalid(format!("{field}: {e}")))
        };
        let output_container = container(
            "outputBlobContainerUri",
            req.output_blob_container_uri.as_ref(),
        )?;
        Ok(match kind {
            JobType::Export => JobSpec {
                kind,
                input: None,
                output: (
                    output_container,
                    name(
                        "outputBlobName",
                        req.output_blob_name.as_ref(),
                        DEFAULT_DEVICES_BLOB,
                    )?,
                ),
                exclude_keys: req.exclude_keys_in_export.unwrap_or(false),
            },
            JobType::Import => JobSpec {
                kind,
                input: Some((
                    container(
                        "inputBlobContainerUri",
                        req.input_blob_container_uri.as_ref(),
                    )?,
                    name(
                        "inputBlobName",
                        req.input_blob_name.as_ref(),
                        DEFAULT_DEVICES_BLOB,
                    )?,
                )),
                output: (
                    output_container,
                    name(
                        "outputBlobName",
                        req.output_blob_name.as_ref(),
                        DEFAULT_IMPORT_ERRORS_BLOB,
                    )?,
                ),
                exclude_keys: false,
            },
        })
    }

    /// The spec of a stored job (re-validated; the record was validated when it was created).
    pub(crate) fn of_job(job: &JobProperties) -> Result<JobSpec, JobError> {
        Self::from_request(&JobRequest {
            kind: Some(job.kind.name().to_owned()),
            input_blob_container_uri: job.input_blob_container_uri.clone(),
            input_blob_name: job.input_blob_name.clone(),
            output_blob_container_uri: job.output_blob_container_uri.clone(),
            output_blob_name: job.output_blob_name.clone(),
            exclude_keys_in_export: Some(job.exclude_keys_in_export),
            storage_authentication_type: None,
        })
    }
}

/// One job and the flag its task watches.
struct Entry {
    job: JobProperties,
    cancel: Arc<AtomicBool>,
}

/// The persisted form of `jobs.json`.
#[derive(Serialize, Deserialize, Default)]
struct FileState {
    jobs: Vec<JobProperties>,
}

/// The hub's import and export jobs.
pub(crate) struct Jobs {
    path: PathBuf,
    /// How jobs reach their containers.
    stores: Stores,
    /// Jobs in creation order.
    entries: Mutex<Vec<Entry>>,
    /// Held while the file is written, so writes land in the order their snapshots were taken.
    write: Mutex<()>,
    /// In a cluster: the slot the nodes share, this node's name and the lease.
    shared: Option<Shared>,
}

/// A cluster node's view of the slot the nodes share ([`shared`]).
#[derive(Clone)]
pub(crate) struct Shared {
    pub(crate) slot: Arc<dyn shared::SharedJobSlot>,
    pub(crate) owner: String,
    pub(crate) lease: std::time::Duration,
}

impl Shared {
    /// The end of a lease taken or renewed at `now`.
    pub(crate) fn until(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now + TimeDelta::from_std(self.lease).unwrap_or(TimeDelta::seconds(30))
    }
}

impl Jobs {
    /// Loads `<data_dir>/jobs.json`, marking jobs that were enqueued or running as failed,
    /// clears the staging directory of blobs an interrupted job left, and prepares the file
    /// root (`settings.file_root`, or `<data_dir>/job-files`).
    pub(crate) fn open(
        data_dir: &Path,
        settings: &JobsSettings,
        now: DateTime<Utc>,
    ) -> std::io::Result<Jobs> {
        let path = data_dir.join("jobs.json");
        let staging = data_dir.join("jobs-staging");
        let mut state = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<FileState>(&bytes).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{} is not a valid job list: {e}", path.display()),
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => FileState::default(),
            Err(e) => return Err(e),
        };
        let now = now.trunc_subsecs(3);
        let mut changed = false;
        for job in &mut state.jobs {
            if job.status.is_active() {
                tracing::warn!(job = %job.job_id, "marking a job the hub was running as failed");
                job.status = JobStatus::Failed;
                job.failure_reason = Some(RESTART_REASON.to_owned());
                job.end_time_utc = Some(now);
                changed = true;
            }
        }
        let before = state.jobs.len();
        state.jobs.retain(|j| !expired(j, now));
        changed |= state.jobs.len() != before;

        if staging.exists() {
            std::fs::remove_dir_all(&staging)?;
        }
        create_dir_durably(&staging)?;
        let root = FileRoot::prepare(data_dir, settings.file_root.as_deref())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        tracing::info!(root = %root.path().display(), "file:// job containers must be inside this directory");

        let jobs = Jobs {
            path,
            stores: Stores {
                root,
                http: HttpRules {
                    allow_private: settings.allow_private_addresses,
                    max_download: settings.max_input_blob_bytes,
                },
                staging,
            },
            entries: Mutex::new(
                state
                    .jobs
                    .into_iter()
                    .map(|job| Entry {
                        job,
                        cancel: Arc::new(AtomicBool::new(false)),
                    })
                    .collect(),
            ),
            write: Mutex::new(()),
            shared: None,
        };
        if changed {
            jobs.persist()?;
        }
        Ok(jobs)
    }

    /// Checks the `file://` containers of `spec` against the file root: inside it, existing,
    /// reachable without links, and the output blob not there yet.
    pub(crate) fn check_containers(&self, spec: &JobSpec) -> Result<(), JobError> {
        let root = &self.stores.root;
        let refuse = |field: &str, dir: &Path, why: String| {
            JobError::Invalid(format!("{field}: the container {}: {why}", dir.display()))
        };
        if let Some((Container::Dir(dir), _)) = &spec.input {
            let field = "inputBlobContainerUri";
            let rel = root
                .relative(dir)
                .map_err(|e| JobError::Invalid(format!("{field}: {e}")))?;
            root.check_container(&rel)
                .map_err(|e| refuse(field, dir, e.to_string()))?;
        }
        if let (Container::Dir(dir), name) = &spec.output {
            let field = "outputBlobContainerUri";
            let rel = root
                .relative(dir)
                .map_err(|e| JobError::Invalid(format!("{field}: {e}")))?;
            root.check_container(&rel)
                .map_err(|e| refuse(field, dir, e.to_string()))?;
            root.check_new_blob(&rel, name).map_err(|e| {
                JobError::Invalid(format!("outputBlobName: {}: {e}", dir.join(name).display()))
            })?;
        }
        Ok(())
    }

    /// How jobs reach their containers.
    pub(crate) fn stores(&self) -> &Stores {
        &self.stores
    }

    /// Makes this node one of a cluster's: its jobs take the slot the nodes share.
    pub(crate) fn share(&mut self, shared: Shared) {
        self.shared = Some(shared);
    }

    /// The slot the nodes share, in a cluster.
    pub(crate) fn shared(&self) -> Option<&Shared> {
        self.shared.as_ref()
    }

    /// Forgets job `id`, created here but refused by the cluster.
    pub(crate) fn forget(&self, id: &str) {
        self.lock().retain(|e| e.job.job_id != id);
        if let Err(e) = self.persist() {
            tracing::warn!(job = %id, error = %e, "forgetting a refused job failed");
        }
    }

    /// Stops job `id` here because the cluster ended it (cancelled or failed through another
    /// node): it ends with `status` and `reason`.
    pub(crate) fn ended_elsewhere(
        &self,
        id: &str,
        status: JobStatus,
        reason: Option<String>,
        now: DateTime<Utc>,
    ) {
        {
            let mut entries = self.lock();
            let Some(entry) = entries.iter_mut().find(|e| e.job.job_id == id) else {
                return;
            };
            entry.cancel.store(true, Ordering::SeqCst);
            if entry.job.status.is_active() {
                entry.job.status = status;
                entry.job.failure_reason = reason;
                entry.job.end_time_utc = Some(now.trunc_subsecs(3));
            }
        }
        if let Err(e) = self.persist() {
            tracing::warn!(job = %id, error = %e, "recording the end of the job failed");
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Entry>> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes every job to `jobs.json` durably.
    fn persist(&self) -> std::io::Result<()> {
        let _write = self
            .write
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let state = FileState {
            jobs: self.lock().iter().map(|e| e.job.clone()).collect(),
        };
        let bytes = serde_json::to_vec_pretty(&state).map_err(std::io::Error::other)?;
        // Container URLs may carry SAS signatures: owner-only.
        write_durably(&self.path, &bytes, true)
    }

    /// Records a new job from a validated request (status `enqueued`), unless another job is
    /// enqueued or running. The record is durable when this returns.
    pub(crate) fn create(
        &self,
        req: &JobRequest,
        spec: &JobSpec,
        now: DateTime<Utc>,
    ) -> Result<JobProperties, JobError> {
        self.check_containers(spec)?;
        let now = now.trunc_subsecs(3);
        let job = JobProperties {
            job_id: new_job_id(),
            start_time_utc: now,
            end_time_utc: None,
            kind: spec.kind,
            status: JobStatus::Enqueued,
            progress: 0,
            input_blob_container_uri: spec
                .input
                .as_ref()
                .and(req.input_blob_container_uri.as_ref())
                .map(|s| s.trim().to_owned()),
            input_blob_name: spec.input.as_ref().map(|(_, name)| name.clone()),
            output_blob_container_uri: req
                .output_blob_container_uri
                .as_ref()
                .map(|s| s.trim().to_owned()),
            output_blob_name: Some(spec.output.1.clone()),
            exclude_keys_in_export: spec.exclude_keys,
            storage_authentication_type: req.storage_authentication_type.clone(),
            failure_reason: None,
            device_count: 0,
            error_count: 0,
        };
        {
            let mut entries = self.lock();
            if let Some(active) = entries.iter().find(|e| e.job.status.is_active()) {
                return Err(JobError::Busy(active.job.job_id.clone()));
            }
            entries.retain(|e| !expired(&e.job, now));
            entries.push(Entry {
                job: job.clone(),
                cancel: Arc::new(AtomicBool::new(false)),
            });
        }
        if let Err(e) = self.persist() {
            self.lock().retain(|e| e.job.job_id != job.job_id);
            return Err(JobError::Storage(e.to_string()));
        }
        tracing::info!(job = %job.job_id, kind = ?job.kind, "job created");
        Ok(job)
    }

    /// The job with this id.
    pub(crate) fn get(&self, id: &str) -> Result<JobProperties, JobError> {
        self.lock()
            .iter()
            .find(|e| e.job.job_id == id)
            .map(|e| e.job.clone())
            .ok_or_else(|| JobError::NotFound(id.to_owned()))
    }

    /// Every job of the retention period, oldest first.
    pub(crate) fn list(&self, now: DateTime<Utc>) -> Vec<JobProperties> {
        self.lock()
            .iter()
            .filter(|e| !expired(&e.job, now))
            .map(|e| e.job.clone())
            .collect()
    }

    /// Cancels an enqueued or running job; a finished job is returned as it is. The job's task
    /// stops at its next check.
    pub(crate) fn cancel(&self, id: &str, now: DateTime<Utc>) -> Result<JobProperties, JobError> {
        let job = {
            let mut entries = self.lock();
            let entry = entries
                .iter_mut()
                .find(|e| e.job.job_id == id)
                .ok_or_else(|| JobError::NotFound(id.to_owned()))?;
            if !entry.job.status.is_active() {
                return Ok(entry.job.clone());
            }
            entry.cancel.store(true, Ordering::SeqCst);
            entry.job.status = JobStatus::Cancelled;
            entry.job.end_time_utc = Some(now.trunc_subsecs(3));
            entry.job.clone()
        };
        self.persist()
            .map_err(|e| JobError::Storage(e.to_string()))?;
        tracing::info!(job = %id, "job cancelled");
        Ok(job)
    }

    /// Moves an enqueued job to `running`; `None` when it is no longer enqueued (cancelled).
    pub(crate) fn start(&self, id: &str) -> Option<(JobProperties, Arc<AtomicBool>)> {
        let started = {
            let mut entries = self.lock();
            let entry = entries
                .iter_mut()
                .find(|e| e.job.job_id == id && e.job.status == JobStatus::Enqueued)?;
            entry.job.status = JobStatus::Running;
            (entry.job.clone(), entry.cancel.clone())
        };
        if let Err(e) = self.persist() {
            tracing::warn!(job = %id, error = %e, "recording that the job is running failed");
        }
        Some(started)
    }

    /// Updates a running job's progress and counters (in memory).
    pub(crate) fn progress(&self, id: &str, progress: u32, device_count: u64, error_count: u64) {
        let mut entries = self.lock();
        if let Some(e) = entries
            .iter_mut()
            .find(|e| e.job.job_id == id && e.job.status == JobStatus::Running)
        {
            e.job.progress = progress.min(100);
            e.job.device_count = device_count;
            e.job.error_count = error_count;
        }
    }

    /// Ends a running job with `status` (`completed` or `failed`). A job cancelled meanwhile keeps
    /// its cancellation; its final counters (records, errors) are still recorded.
    pub(crate) fn finish(
        &self,
        id: &str,
        status: JobStatus,
        failure_reason: Option<String>,
        counts: Option<(u64, u64)>,
        now: DateTime<Utc>,
    ) {
        {
            let mut entries = self.lock();
            let Some(entry) = entries.iter_mut().find(|e| e.job.job_id == id) else {
                return;
            };
            if let Some((records, errors)) = counts {
                entry.job.device_count = records;
                entry.job.error_count = errors;
            }
            if entry.job.status == JobStatus::Running {
                entry.job.status = status;
                entry.job.end_time_utc = Some(now.trunc_subsecs(3));
                if status == JobStatus::Completed {
                    entry.job.progress = 100;
                }
                entry.job.failure_reason = failure_reason;
            }
        }
        if let Err(e) = self.persist() {
            tracing::warn!(job = %id, error = %e, "recording the end of the job failed");
        }
        tracing::info!(job = %id, ?status, "job finished");
    }
}

/// Finished more than [`RETENTION_DAYS`] ago.
fn expired(job: &JobProperties, now: DateTime<Utc>) -> bool {
    let cutoff = now - TimeDelta::days(RETENTION_DAYS);
    !job.status.is_active() && job.end_time_utc.unwrap_or(job.start_time_utc) < cutoff
}

/// A random id in GUID form (version 4 layout).
fn new_job_id() -> String {
    let mut hex: Vec<char> = crate::random_hex(16).chars().collect();
    if let Some(c) = hex.get_mut(12) {
        *c = '4';
    }
    if let Some(c) = hex.get_mut(16) {
        let v = c.to_digit(16).unwrap_or(0);
        *c = ['8', '9', 'a', 'b'][(v & 3) as usize];
    }
    let s: String = hex.into_iter().collect();
    format!(
        "{}-{}-{}-{}-{}",
        &s[0..8],
        &s[8..12],
        &s[12..16],
        &s[16..20],
        &s[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Jobs in `<dir>/data`, and a container `exports` inside their file root.
    fn open_jobs(dir: &Path) -> (Jobs, PathBuf) {
        let jobs = Jobs::open(&dir.join("data"), &settings(), Utc::now()).expect("open");
        let container = jobs.stores().root.path().join("exports");
        std::fs::create_dir_all(&container).expect("container");
        (jobs, container)
    }

    fn settings() -> JobsSettings {
        JobsSettings {
            file_root: None,
            allow_private_addresses: true,
            max_input_blob_bytes: crate::config::DEFAULT_MAX_INPUT_BLOB_BYTES,
            max_concurrent_jobs: crate::config::DEFAULT_MAX_CONCURRENT_JOBS,
            lease: std::time::Duration::from_secs(crate::config::DEFAULT_JOB_LEASE_SECONDS),
        }
    }

    fn export_request(dir: &Path) -> JobRequest {
        JobRequest {
            kind: Some("export".into()),
            output_blob_container_uri: Some(format!("file://{}", dir.display())),
            ..JobRequest::default()
        }
    }

    #[test]
    fn job_ids_look_like_guids() {
        let id = new_job_id();
        assert_eq!(id.len(), 36);
        let parts: Vec<&str> = id.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(parts[2].starts_with('4'));
    }

    #[test]
    fn one_active_job_and_restart_marks_it_failed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = Utc::now();
        let (jobs, container) = open_jobs(dir.path());
        let req = export_request(&container);
        let spec = JobSpec::from_request(&req).expect("spec");
        let first = jobs.create(&req, &spec, now).expect("create");
        assert_eq!(first.status, JobStatus::Enqueued);
        assert!(matches!(
            jobs.create(&req, &spec, now),
            Err(JobError::Busy(id)) if id == first.job_id
        ));
        assert!(jobs.start(&first.job_id).is_some());
        drop(jobs);

        let (jobs, _) = open_jobs(dir.path());
        let job = jobs.get(&first.job_id).expect("kept");
        assert_eq!(job.status, JobStatus::Failed);
        assert_eq!(job.failure_reason.as_deref(), Some(RESTART_REASON));
        assert!(job.end_time_utc.is_some());
        // The slot is free again.
        jobs.create(&req, &spec, now).expect("create after restart");
    }

    #[test]
    fn containers_outside_the_file_root_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (jobs, container) = open_jobs(dir.path());
        let data = dir.path().join("data");
        let root = jobs.stores().root.path().to_owned();
        for outside in [
            data.clone(),
            data.join("eventlog"),
            dir.path().to_owned(),
            PathBuf::from("/etc"),
            root.join("missing"),
        ] {
            let req = export_request(&outside);
            let spec = JobSpec::from_request(&req).expect("spec");
            assert!(
                matches!(
                    jobs.create(&req, &spec, Utc::now()),
                    Err(JobError::Invalid(_))
                ),
                "{}",
                outside.display()
            );
        }
        std::fs::write(container.join("devices.txt"), b"not ours").expect("existing");
        let req = export_request(&container);
        let spec = JobSpec::from_request(&req).expect("spec");
        assert!(
            matches!(jobs.create(&req, &spec, Utc::now()), Err(JobError::Invalid(m)) if m.contains("never replace")),
            "an existing output blob"
        );
        std::fs::remove_file(container.join("devices.txt")).expect("rm");
        jobs.create(&req, &spec, Utc::now())
            .expect("inside the root");
    }

    #[test]
    fn cancel_keeps_finished_jobs_and_history_expires() {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = Utc::now();
        let (jobs, container) = open_jobs(dir.path());
        let req = export_request(&container);
        let spec = JobSpec::from_request(&req).expect("spec");
        let job = jobs.create(&req, &spec, now).expect("create");
        let cancelled = jobs.cancel(&job.job_id, now).expect("cancel");
        assert_eq!(cancelled.status, JobStatus::Cancelled);
        assert!(
            jobs.start(&job.job_id).is_none(),
            "a cancelled job never runs"
        );
        let again = jobs.cancel(&job.job_id, now).expect("cancel again");
        assert_eq!(again, cancelled);
        assert!(matches!(
            jobs.cancel("nope", now),
            Err(JobError::NotFound(_))
        ));
        let later = now + TimeDelta::days(RETENTION_DAYS + 1);
        assert!(jobs.list(later).is_empty());
        assert_eq!(jobs.list(now).len(), 1);
    }

    #[test]
    fn requests_are_validated() {
        let bad = |req: JobRequest| JobSpec::from_request(&req).is_err();
        assert!(bad(JobRequest::default()));
        assert!(bad(JobRequest {
            kind: Some("backup".into()),
            ..JobRequest::default()
        }));
        assert!(bad(JobRequest {
            kind: Some("export".into()),
            output_blob_container_uri: Some("ftp://host/dir".into()),
            ..JobRequest::default()
        }));
        assert!(bad(JobRequest {
            kind: Some("import".into()),
            output_blob_container_uri: Some("file:///tmp".into()),
            ..JobRequest::default()
        }));
        assert!(bad(JobRequest {
            kind: Some("export".into()),
            output_blob_container_uri: Some("file:///tmp".into()),
            output_blob_name: Some("../escape".into()),
            ..JobRequest::default()
        }));
        let spec = JobSpec::from_request(&JobRequest {
            kind: Some("import".into()),
            input_blob_container_uri: Some("https://store.example/c?sig=x".into()),
            output_blob_container_uri: Some("file:///tmp".into()),
            ..JobRequest::default()
        })
        .expect("valid import");
        assert_eq!(spec.output.1, DEFAULT_IMPORT_ERRORS_BLOB);
        assert_eq!(
            spec.input.as_ref().map(|(_, n)| n.as_str()),
            Some(DEFAULT_DEVICES_BLOB)
        );
    }
}
