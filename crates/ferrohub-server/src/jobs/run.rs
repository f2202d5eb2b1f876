//! Running import and export jobs, each in its own tokio task.
//!
//! * **Export** writes every device, each followed by its modules (records with `moduleId`),
//!   ordered by id, as JSON Lines of `ExportImportDevice` to the output blob, each with its twin
//!   (`twinETag`, `tags`, `properties` with `$metadata` and `$version`, as Azure's exports have
//!   them); keys are null when `excludeKeysInExport` is set. The blob appears only when complete. An identity created or
//!   deleted while the export runs may or may not be in it.
//! * **Import** reads the input blob line by line, converts each record as `POST /devices`
//!   does (a missing `importMode` is `createOrUpdate`), and applies them through
//!   [`Registry::bulk`](ferrohub_registry::Registry::bulk) in chunks of up to 100. Several
//!   chunks are in flight at once so their commits are shared, but a chunk naming a device that
//!   an in-flight chunk names waits for it, so records about one device apply in file order.
//!   Records that fail (and lines that cannot be read as records) become lines
//!   `{"deviceId","moduleId"?,"errorCode","errorStatus"}` of the errors blob (written even when
//!   empty) and do not fail the job; an input blob that cannot be read, or a registry failure,
//!   does.
//!
//! Cancellation is checked between chunks, and in-flight chunks are awaited before a cancelled
//! job stops. Hub shutdown stops a job wherever it waits; its record stays `running`, which the
//! next start marks failed.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ferrohub_api as api;
use ferrohub_registry::{self as reg, RegistryError, RegistryStore};
use ferrohub_types::{DeviceId, ErrorCode, ModuleId};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::blob::{BlobLines, BlobWriter, Line, MAX_LINE_BYTES};
use super::{JobSpec, JobStatus, JobType};
use crate::hub::Hub;
use crate::rest::convert::{device_to_api, module_to_api};

/// Records per registry bulk call (the registry's limit).
const CHUNK: usize = reg::MAX_BULK_RECORDS;

/// Import chunks in flight at once.
const WINDOW: usize = 16;

/// Identities exported per step (their documents are read together).
const EXPORT_BATCH: usize = 100;

/// Why a job stopped before completing.
#[derive(Debug)]
enum Stop {
    /// `DELETE /jobs/{id}`.
    Cancelled,
    /// The hub is shutting down; the job's record stays `running`.
    Shutdown,
    /// The job failed; the reason is shown as `failureReason`.
    Failed(String),
}

/// What the job watches between steps.
struct Control {
    cancel: Arc<AtomicBool>,
    shutdown: watch::Receiver<bool>,
}

impl Control {
    fn check(&self) -> Result<(), Stop> {
        if *self.shutdown.borrow() {
            return Err(Stop::Shutdown);
        }
        if self.cancel.load(Ordering::SeqCst) {
            return Err(Stop::Cancelled);
        }
        Ok(())
    }
}

/// Records handled and records failed.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    records: u64,
    errors: u64,
}

/// Starts job `id` in a new task. A panic in the job fails it rather than leaving it running.
///
/// In a cluster the job holds the slot the nodes share ([`super::shared`]): its lease is renewed
/// while the job runs, and the final record frees the slot when the job ends (a job stopped by
/// the hub's shutdown keeps it until the lease ends, when another node marks it failed).
pub(crate) fn spawn(hub: Arc<Hub>, id: String) {
    tokio::spawn(async move {
        let task = tokio::spawn(run(hub.clone(), id.clone()));
        let keeper = hub
            .jobs
            .shared()
            .cloned()
            .map(|shared| tokio::spawn(keep_slot(hub.clone(), id.clone(), shared)));
        if let Err(e) = task.await
            && e.is_panic()
        {
            tracing::error!(job = %id, "the job panicked");
            hub.jobs.finish(
                &id,
                JobStatus::Failed,
                Some("the job failed with an internal error".to_owned()),
                None,
                hub.now(),
            );
        }
        if let Some(keeper) = keeper {
            keeper.abort();
        }
        if let Some(shared) = hub.jobs.shared()
            && let Ok(job) = hub.jobs.get(&id)
            && !job.status.is_active()
        {
            let record = serde_json::to_value(&job).unwrap_or_default();
            if let Err(e) = shared.slot.end(&id, &shared.owner, record).await {
                tracing::warn!(job = %id, error = %e, "freeing the cluster's job slot failed");
            }
        }
    });
}

/// Renews job `id`'s lease of the cluster's slot while it runs; when the lease is lost (the
/// job was cancelled or failed through another node, or could not be renewed in time) the job
/// stops here, ending as the cluster's record says.
async fn keep_slot(hub: Arc<Hub>, id: String, shared: super::Shared) {
    let mut held_until = shared.until(hub.now());
    loop {
        tokio::time::sleep(shared.lease / 3).await;
        let now = hub.now();
        let record = hub
            .jobs
            .get(&id)
            .ok()
            .and_then(|job| serde_json::to_value(job).ok())
            .unwrap_or_default();
        match shared
            .slot
            .renew(&id, &shared.owner, now, shared.until(now), record)
            .await
        {
            Ok(true) => {
                held_until = shared.until(now);
                continue;
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(job = %id, error = %e, "renewing the cluster's job slot failed");
                if hub.now() < held_until {
                    continue;
                }
            }
        }
        let record = shared
            .slot
            .records(hub.now(), super::RESTART_REASON)
            .await
            .ok()
            .and_then(|records| {
                records
                    .into_iter()
                    .find(|r| r["jobId"].as_str() == Some(id.as_str()))
            });
        let (status, reason) = match record {
            Some(r) if r["status"] == "cancelled" => (JobStatus::Cancelled, None),
            Some(r) => (
                JobStatus::Failed,
                r["failureReason"].as_str().map(str::to_owned),
            ),
            None => (
                JobStatus::Failed,
                Some("the node running the job lost its claim on it".to_owned()),
            ),
        };
        tracing::warn!(job = %id, ?status, "the job ended through another node");
        hub.jobs.ended_elsewhere(&id, status, reason, hub.now());
        return;
    }
}

async fn run(hub: Arc<Hub>, id: String) {
    let shutdown = hub.shutdown_signal();
    if *shutdown.borrow() {
        return;
    }
    let Some((job, cancel)) = hub.jobs.start(&id) else {
        return;
    };
    let mut stopping = shutdown.clone();
    let ctl = Control { cancel, shutdown };
    let mut counts = Counts::default();
    let started = std::time::Instant::now();
    let work = async {
        let spec =
            JobSpec::of_job(&job).and_then(|spec| hub.jobs.check_containers(&spec).map(|()| spec));
        match spec {
            Err(e) => Err(Stop::Failed(e.to_string())),
            Ok(spec) => match spec.kind {
                JobType::Export => export(&hub, &id, &spec, &ctl, &mut counts).await,
                JobType::Import => import(&hub, &id, &spec, &ctl, &mut counts).await,
            },
        }
    };
    // On shutdown the work is dropped wherever it waits (a slow blob store, say), so the job
    // does not keep the stopped hub's stores open. Chunks already handed to the registry finish
    // in their own tasks.
    // Shutdown first: a job that fails because the stopping hub's files went away must not
    // record that as its outcome.
    let outcome = tokio::select! {
        biased;
        _ = stopping.wait_for(|stop| *stop) => Err(Stop::Shutdown),
        outcome = work => outcome,
    };
    let final_counts = Some((counts.records, counts.errors));
    tracing::info!(
        job = %id,
        records = counts.records,
        errors = counts.errors,
        seconds = started.elapsed().as_secs_f64(),
        outcome = ?outcome,
        "job stopped"
    );
    match outcome {
        Ok(()) => hub
            .jobs
            .finish(&id, JobStatus::Completed, None, final_counts, hub.now()),
        // Already recorded as cancelled; keep the final counters.
        Err(Stop::Cancelled) => {
            hub.jobs
                .finish(&id, JobStatus::Cancelled, None, final_counts, hub.now());
        }
        Err(Stop::Shutdown) => {}
        Err(Stop::Failed(reason)) => {
            hub.jobs.finish(
                &id,
                JobStatus::Failed,
                Some(reason),
                final_counts,
                hub.now(),
            );
        }
    }
}

/// Progress in percent: `done` of `total`, held at 99 until the job completes.
fn percent(done: u64, total: Option<u64>) -> u32 {
    match total {
        Some(t) if t > 0 => u32::try_from((done.saturating_mul(100) / t).min(99)).unwrap_or(99),
        _ => 0,
    }
}

// === Export ===

async fn export(
    hub: &Hub,
    id: &str,
    spec: &JobSpec,
    ctl: &Control,
    counts: &mut Counts,
) -> Result<(), Stop> {
    let (container, name) = &spec.output;
    let stores = hub.jobs.stores();
    let mut out = BlobWriter::create(stores, container, name, id)
        .await
        .map_err(|e| Stop::Failed(format!("the output blob could not be created: {e}")))?;
    match export_into(hub, id, spec.exclude_keys, &mut out, ctl, counts).await {
        Ok(()) => out
            .commit(stores)
            .await
            .map_err(|e| Stop::Failed(format!("writing the output blob failed: {e}"))),
        Err(stop) => {
            out.abort().await;
            Err(stop)
        }
    }
}

async fn export_into(
    hub: &Hub,
    id: &str,
    exclude_keys: bool,
    out: &mut BlobWriter,
    ctl: &Control,
    counts: &mut Counts,
) -> Result<(), Stop> {
    let store = hub.registry.store();
    let registry_failed =
        |e: reg::StoreError| Stop::Failed(format!("reading the registry failed: {e}"));
    // The list of identities (ids and credentials, no documents) is the cheapest complete
    // listing the store offers; each document is then read in batches, so only a batch of
    // documents is in memory at a time. Devices sort before their modules.
    let mut ids: Vec<(DeviceId, Option<ModuleId>)> = store
        .identities()
        .await
        .map_err(registry_failed)?
        .into_iter()
        .map(|(d, m, _)| (d, m))
        .collect();
    ids.sort_unstable();
    let total = ids.len() as u64;
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut done = 0u64;
    for batch in ids.chunks(EXPORT_BATCH) {
        ctl.check()?;
        let docs = futures_util::future::try_join_all(batch.iter().map(|(d, m)| async move {
            let record = match m {
                None => store
                    .device(d)
                    .await?
                    .map(|d| device_record(&d, exclude_keys)),
                Some(m) => store
                    .module(d, m)
                    .await?
                    .map(|m| module_record(&m, exclude_keys)),
            };
            Ok::<_, reg::StoreError>(match record {
                Some(r) => {
                    let twin = store.twin(d, m.as_ref()).await?;
                    let twin = twin.map_or_else(reg::initial_twin, |t| t.twin);
                    Some(with_twin(r, &twin))
                }
                None => None,
            })
        }))
        .await
        .map_err(registry_failed)?;
        buf.clear();
        // An identity deleted since the listing is left out.
        for record in docs.iter().flatten() {
            write_line(&mut buf, record)?;
            counts.records += 1;
        }
        out.write(&buf)
            .await
            .map_err(|e| Stop::Failed(format!("writing the output blob failed: {e}")))?;
        done += batch.len() as u64;
        hub.jobs
            .progress(id, percent(done, Some(total)), counts.records, 0);
    }
    Ok(())
}

fn write_line<T: Serialize>(buf: &mut Vec<u8>, value: &T) -> Result<(), Stop> {
    serde_json::to_writer(&mut *buf, value)
        .map_err(|e| Stop::Failed(format!("serializing a record failed: {e}")))?;
    buf.push(b'\n');
    Ok(())
}

fn without_keys(mut auth: api::AuthenticationMechanism) -> api::AuthenticationMechanism {
    if let Some(keys) = auth.symmetric_key.as_mut() {
        keys.primary_key = None;
        keys.secondary_key = None;
    }
    auth
}

/// An export line with the identity's twin: `twinETag`, `tags` and `properties` (desired and
/// reported with their `$metadata` and `$version`), as the REST twin shows them.
fn with_twin(
    mut record: api::ExportImportDevice,
    twin: &ferrohub_twin::Twin,
) -> api::ExportImportDevice {
    let identity = ferrohub_twin::TwinIdentity::default();
    let mut rendered = twin.rest_view(&identity).to_json();
    record.twin_e_tag = Some(twin.etag().to_string());
    record.tags = rendered.get_mut("tags").map(serde_json::Value::take);
    record.properties = rendered.get_mut("properties").map(serde_json::Value::take);
    record
}

/// A device as an export line.
fn device_record(d: &reg::Device, exclude_keys: bool) -> api::ExportImportDevice {
    let d = device_to_api(d);
    api::ExportImportDevice {
        id: d.device_id,
        e_tag: d.etag,
        status: d.status,
        status_reason: d.status_reason,
        authentication: d
            .authentication
            .map(|a| if exclude_keys { without_keys(a) } else { a }),
        capabilities: d.capabilities,
        device_scope: d.device_scope,
        parent_scopes: d.parent_scopes,
        ..api::ExportImportDevice::default()
    }
}

/// A module as an export line. `status` is always `enabled` (modules have none; C# reads it).
fn module_record(m: &reg::Module, exclude_keys: bool) -> api::ExportImportDevice {
    let m = module_to_api(m);
    api::ExportImportDevice {
        id: m.device_id,
        module_id: Some(m.module_id),
        e_tag: m.etag,
        status: Some(api::DeviceStatus::Enabled),
        authentication: m
            .authentication
            .map(|a| if exclude_keys { without_keys(a) } else { a }),
        ..api::ExportImportDevice::default()
    }
}

// === Import ===

/// One line of the errors blob.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ImportError<'a> {
    device_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    module_id: Option<&'a str>,
    error_code: &'a str,
    error_status: &'a str,
}

async fn import(
    hub: &Arc<Hub>,
    id: &str,
    spec: &JobSpec,
    ctl: &Control,
    counts: &mut Counts,
) -> Result<(), Stop> {
    let (in_container, in_name) = spec
        .input
        .as_ref()
        .ok_or_else(|| Stop::Failed("the job names no input blob".to_owned()))?;
    let stores = hub.jobs.stores();
    let mut lines = BlobLines::open(stores, in_container, in_name)
        .await
        .map_err(|e| Stop::Failed(format!("the input blob could not be read: {e}")))?;
    let (out_container, out_name) = &spec.output;
    let errors = BlobWriter::create(stores, out_container, out_name, id)
        .await
        .map_err(|e| Stop::Failed(format!("the errors blob could not be created: {e}")))?;
    let mut importer = Importer {
        hub,
        id,
        ctl,
        errors,
        line: Vec::with_capacity(256),
        in_flight: FuturesUnordered::new(),
        busy: HashSet::new(),
        counts: Counts::default(),
        failure: None,
    };
    let result = importer.run(&mut lines).await;
    *counts = importer.counts;
    let Importer { errors, .. } = importer;
    match result {
        Ok(()) => errors
            .commit(stores)
            .await
            .map_err(|e| Stop::Failed(format!("writing the errors blob failed: {e}"))),
        Err(Stop::Cancelled) => {
            // Keep what was learnt before the cancellation.
            if let Err(e) = errors.commit(stores).await {
                tracing::warn!(job = %id, error = %e, "writing the errors blob failed");
            }
            Err(Stop::Cancelled)
        }
        Err(stop) => {
            errors.abort().await;
            Err(stop)
        }
    }
}

/// A chunk being applied: its devices and the registry's answer.
type ChunkTask = JoinHandle<(Vec<DeviceId>, Result<reg::BulkResult, RegistryError>)>;

struct Importer<'a> {
    hub: &'a Arc<Hub>,
    id: &'a str,
    ctl: &'a Control,
    errors: BlobWriter,
    /// Scratch for one errors-blob line.
    line: Vec<u8>,
    in_flight: FuturesUnordered<ChunkTask>,
    /// The devices of the in-flight chunks (a device is in at most one of them).
    busy: HashSet<DeviceId>,
    counts: Counts,
    /// The first job-level failure of a chunk.
    failure: Option<String>,
}

impl Importer<'_> {
    async fn run(&mut self, lines: &mut BlobLines) -> Result<(), Stop> {
        let mut chunk: Vec<reg::ImportRecord> = Vec::with_capacity(CHUNK);
        let mut keys: HashSet<(DeviceId, Option<ModuleId>)> = HashSet::with_capacity(CHUNK);
        let mut line_no = 0u64;
        let outcome = loop {
            let line = match lines.next_line().await {
                Ok(Some(line)) => line,
                Ok(None) => break Ok(()),
                Err(e) => break Err(Stop::Failed(format!("reading the input blob failed: {e}"))),
            };
            line_no += 1;
            let text = match line {
                Line::Text(t) => t,
                Line::TooLong => {
                    self.counts.records += 1;
                    let msg = format!("Line {line_no} is longer than {MAX_LINE_BYTES} bytes.");
                    if let Err(stop) = self
                        .error("", None, ErrorCode::ArgumentInvalid.name(), &msg)
                        .await
                    {
                        break Err(stop);
                    }
                    continue;
                }
            };
            if text.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            self.counts.records += 1;
            let record = match parse_import_line(&text, line_no) {
                Ok(r) => r,
                Err((device_id, module_id, msg)) => {
                    let code = ErrorCode::ArgumentInvalid.name();
                    if let Err(stop) = self
                        .error(&device_id, module_id.as_deref(), code, &msg)
                        .await
                    {
                        break Err(stop);
                    }
                    continue;
                }
            };
            let key = (record.device_id.clone(), record.module_id.clone());
            if chunk.len() == CHUNK || keys.contains(&key) {
                keys.clear();
                if let Err(stop) = self.dispatch(std::mem::take(&mut chunk), lines).await {
                    break Err(stop);
                }
            }
            keys.insert(key);
            chunk.push(record);
        };
        let outcome = match outcome {
            Ok(()) if !chunk.is_empty() => self.dispatch(chunk, lines).await,
            other => other,
        };
        // Whatever happened, every chunk handed to the registry is awaited.
        while !self.in_flight.is_empty() {
            self.settle_one().await?;
        }
        outcome?;
        match self.failure.take() {
            Some(reason) => Err(Stop::Failed(reason)),
            None => Ok(()),
        }
    }

    /// Hands `chunk` to the registry once the window has room and no in-flight chunk names one
    /// of its devices.
    async fn dispatch(
        &mut self,
        chunk: Vec<reg::ImportRecord>,
        lines: &BlobLines,
    ) -> Result<(), Stop> {
        self.ctl.check()?;
        if let Some(reason) = &self.failure {
            return Err(Stop::Failed(reason.clone()));
        }
        let mut devices: Vec<DeviceId> = chunk.iter().map(|r| r.device_id.clone()).collect();
        devices.sort_unstable();
        devices.dedup();
        while self.in_flight.len() >= WINDOW || devices.iter().any(|d| self.busy.contains(d)) {
            self.settle_one().await?;
        }
        self.busy.extend(devices.iter().cloned());
        let hub = Arc::clone(self.hub);
        self.in_flight.push(tokio::spawn(async move {
            let result = hub.registry.bulk(chunk, hub.now()).await;
            (devices, result)
        }));
        let (read, total) = lines.position();
        self.hub.jobs.progress(
            self.id,
            percent(read, total),
            self.counts.records,
            self.counts.errors,
        );
        Ok(())
    }

    /// Waits for one in-flight chunk and records its failures.
    async fn settle_one(&mut self) -> Result<(), Stop> {
        let Some(joined) = self.in_flight.next().await else {
            return Ok(());
        };
        let (devices, result) = match joined {
            Ok(done) => done,
            Err(e) => {
                // The chunk's devices stay marked busy; the job fails anyway.
                self.failure
                    .get_or_insert_with(|| format!("applying records failed: {e}"));
                return Ok(());
            }
        };
        for d in &devices {
            self.busy.remove(d);
        }
        match result {
            Ok(result) => {
                for e in &result.errors {
                    self.error(
                        &e.device_id,
                        e.module_id.as_deref(),
                        e.error_code.name(),
                        &e.error_status,
                    )
                    .await?;
                }
            }
            Err(e) => {
                self.failure
                    .get_or_insert_with(|| format!("applying records failed: {e}"));
            }
        }
        Ok(())
    }

    /// Appends one line to the errors blob.
    async fn error(
        &mut self,
        device_id: &str,
        module_id: Option<&str>,
        error_code: &str,
        error_status: &str,
    ) -> Result<(), Stop> {
        self.counts.errors += 1;
        self.line.clear();
        write_line(
            &mut self.line,
            &ImportError {
                device_id,
                module_id,
                error_code,
                error_status,
            },
        )?;
        self.errors
            .write(&self.line)
            .await
            .map_err(|e| Stop::Failed(format!("writing the errors blob failed: {e}")))
    }
}

/// A registry record from one input line, or the failure's device id, module id and text.
pub(crate) fn parse_import_line(
    text: &[u8],
    line_no: u64,
) -> Result<reg::ImportRecord, (String, Option<String>, String)> {
    match serde_json::from_slice::<api::ExportImportDevice>(text) {
        Ok(rec) => crate::rest::bulk::record(&rec).map_err(|msg| (rec.id, rec.module_id, msg)),
        Err(e) => {
            // Name the identity when the line is JSON with a readable id.
            let value = serde_json::from_slice::<serde_json::Value>(text).ok();
            let field = |name: &str| {
                value
                    .as_ref()
                    .and_then(|v| v.get(name))
                    .and_then(|v| v.as_str())
                    .map(str::to_owned)
            };
            Err((
                field("id").unwrap_or_default(),
                field("moduleId"),
                format!("Line {line_no} is not a valid ExportImportDevice record: {e}"),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_is_held_below_100() {
        assert_eq!(percent(0, Some(10)), 0);
        assert_eq!(percent(5, Some(10)), 50);
        assert_eq!(percent(10, Some(10)), 99);
        assert_eq!(percent(10, None), 0);
        assert_eq!(percent(10, Some(0)), 0);
    }

    #[test]
    fn records_parse_like_bulk_requests() {
        let r = parse_import_line(br#"{"id":"d1","eTag":"MA==","status":"disabled"}"#, 1)
            .expect("record");
        assert_eq!(r.device_id.as_str(), "d1");
        assert_eq!(r.import_mode, reg::ImportMode::CreateOrUpdate);
        assert_eq!(r.status, Some(reg::DeviceStatus::Disabled));

        let (id, module, msg) =
            parse_import_line(br#"{"id":"d2","status":7}"#, 3).expect_err("bad status");
        assert_eq!((id.as_str(), module), ("d2", None));
        assert!(msg.starts_with("Line 3 "), "{msg}");

        let (id, _, _) = parse_import_line(b"not json", 4).expect_err("not json");
        assert_eq!(id, "");

        let (id, _, msg) =
            parse_import_line(br#"{"id":"d3","importMode":"teleport"}"#, 5).expect_err("mode");
        assert_eq!(id, "d3");
        assert!(msg.contains("teleport"), "{msg}");
    }

    #[test]
    fn export_records_drop_keys_on_request() {
        let device = reg::Device {
            device_id: DeviceId::new("d1").expect("id"),
            generation_id: "1".into(),
            version: 0,
            etag: reg::ETag::from_version(0),
            status: reg::DeviceStatus::Enabled,
            status_reason: None,
            status_updated_time: None,
            connection_state: reg::ConnectionState::Disconnected,
            connection_state_updated_time: None,
            last_activity_time: None,
            cloud_to_device_message_count: 0,
            authentication: reg::Authentication::sas("a2V5a2V5a2V5a2V5a2V5aw==", "b"),
            iot_edge: false,
            device_scope: None,
            parent_scopes: Vec::new(),
        };
        let with = serde_json::to_value(device_record(&device, false)).expect("json");
        assert_eq!(with["id"], "d1");
        assert_eq!(with["eTag"], "MA==");
        assert_eq!(with["status"], "enabled");
        assert_eq!(
            with["authentication"]["symmetricKey"]["primaryKey"],
            "a2V5a2V5a2V5a2V5a2V5aw=="
        );
        assert!(with.get("importMode").is_none());
        let without = serde_json::to_value(device_record(&device, true)).expect("json");
        assert_eq!(
            without["authentication"]["symmetricKey"],
            serde_json::json!({"primaryKey": null, "secondaryKey": null})
        );
    }
}
