//! The IoT Hub query language (twins-methods-contract §5): one page of `POST /devices/query`,
//! and the devices a job's `queryCondition` selects.
//!
//! The language is `ferrohub-query`'s; the rows are the registry's. The hub reads the queried
//! collection from the store a batch at a time in key order ([`RegistryStore::query_twins`],
//! which leaves out in SQL the rows the condition can never select), renders each row as the
//! REST twin with its live fields (`connectionState`, `lastActivityTime`, `modelId`,
//! `cloudToDeviceMessageCount`), and hands it to the query's `Pager`, which evaluates the
//! condition exactly, projects or aggregates, and says when the page is full. Nothing holds
//! more than one batch of the registry; an aggregating query reads every row for every page.
//!
//! `cloudToDeviceMessageCount` is a read of the device's queue, so it is read per scanned row
//! only when the query names it; `SELECT *` pages get it for the rows they return.
//!
//! `devices.jobs` reads the scheduled jobs' per-device records instead
//! ([`ScheduledJobStore::device_job_rows`], ordered by device id then job id), each rendered as
//! Azure's `DeviceJob` ([`device_job_row`]).

use std::collections::HashMap;

use chrono::{DateTime, SecondsFormat, Utc};
use ferrohub_query::{Collection, Condition, Flow, Page, Query, RowKey};
use ferrohub_registry::scheduled_jobs::{DeviceJobRow, ScheduledJob, ScheduledJobStore};
use ferrohub_registry::{RegistryError, RegistryStore, TwinRow, TwinScan, initial_twin};
use ferrohub_types::DeviceId;
use serde_json::Value;

use super::{Hub, HubError};
use crate::connections::Presence;

/// The most rows read from the store at a time.
const MAX_BATCH: usize = 1000;

/// The name of the queue depth in a query's canonical text.
const C2D_COUNT: &str = "cloudToDeviceMessageCount";

/// Parses query text, refusing it as Azure does: 400 ArgumentInvalid with a message naming
/// what is not supported and where.
pub(crate) fn parse_query(text: &str) -> Result<Query, HubError> {
    Query::parse(text).map_err(|e| HubError::invalid(e.to_string()))
}

/// Whether evaluating `query` needs the queue depth of every row it reads.
fn needs_c2d_count(query: &Query) -> bool {
    query.to_string().contains(C2D_COUNT)
}

impl Hub {
    /// Parses a job's `queryCondition` (`*`, or a `WHERE` condition over `devices`), refused
    /// like query text: 400004 ArgumentInvalid naming what is wrong and where.
    pub fn parse_condition(text: &str) -> Result<Condition, HubError> {
        Condition::parse(text).map_err(|e| HubError::invalid(e.to_string()))
    }

    /// One page of `text`'s result: at most `page_size` rows (clamped to 1..=1000), resuming
    /// where `continuation` (a token of an earlier page of the same query) says. The page
    /// carries a continuation token only when more rows follow.
    ///
    /// Errors: 400004 ArgumentInvalid (the query does not parse or uses what the language does
    /// not support, or the token is malformed or belongs to another query), 503 (the store).
    pub(crate) async fn query(
        &self,
        text: &str,
        page_size: usize,
        continuation: Option<&str>,
    ) -> Result<Page, HubError> {
        let query = parse_query(text)?;
        let mut pager = query
            .pager(page_size, continuation)
            .map_err(|e| HubError::invalid(e.to_string()))?;
        let c2d = needs_c2d_count(&query);
        if pager.wants_rows() {
            let aggregate = query.is_aggregate();
            // Row queries start with a page's worth (plus the row that tells whether there is
            // more) and read more at a time when the condition rejects what SQL could not.
            let mut batch = if aggregate {
                MAX_BATCH
            } else {
                page_size.clamp(1, MAX_BATCH).saturating_add(1)
            };
            let mut after = pager.resume_after().cloned();
            if query.from == Collection::Jobs {
                self.scan_device_jobs(&mut pager, after.take(), batch)
                    .await?;
            }
            'scan: loop {
                if query.from == Collection::Jobs {
                    break;
                }
                let rows = self
                    .scan(&query.condition, query.from, after.take(), batch)
                    .await?;
                let n = rows.len();
                let presences = self.row_presences(&rows).await;
                for (row, presence) in rows.into_iter().zip(presences) {
                    let key = row.key();
                    let value = self.query_row(row, c2d, presence).await;
                    after = Some(key.clone());
                    if pager.push(key, value) == Flow::Stop {
                        break 'scan;
                    }
                }
                if n < batch || after.is_none() {
                    break;
                }
                batch = batch.saturating_mul(2).min(MAX_BATCH);
            }
        }
        let mut page = pager.finish();
        if !c2d && query.from == Collection::Devices && !query.is_aggregate() {
            self.fill_c2d_counts(&mut page.rows).await;
        }
        metrics::counter!("ferrohub_queries_total").increment(1);
        Ok(page)
    }

    /// Up to `limit` devices that `condition` selects, in id order, after `after`: how a job
    /// walks the devices of its `queryCondition` (`Condition::All` for `*`), a batch at a
    /// time, resumable from the last id it handled. A batch shorter than `limit` is the last.
    /// The condition is evaluated exactly, over the same rows `SELECT * FROM devices` shows.
    ///
    /// Errors: 503 (the store).
    pub async fn query_device_ids(
        &self,
        condition: &Condition,
        after: Option<&DeviceId>,
        limit: usize,
    ) -> Result<Vec<DeviceId>, HubError> {
        let limit = limit.max(1);
        let query = Query::select_all(Collection::Devices, condition.clone());
        let c2d = needs_c2d_count(&query);
        let mut after = after.map(|d| RowKey::device(d.as_str()));
        let mut out = Vec::new();
        let batch = limit.clamp(1, MAX_BATCH);
        loop {
            let rows = self
                .scan(condition, Collection::Devices, after.take(), batch)
                .await?;
            let n = rows.len();
            let presences = if matches!(condition, Condition::All) {
                vec![None; rows.len()]
            } else {
                self.row_presences(&rows).await
            };
            for (row, presence) in rows.into_iter().zip(presences) {
                after = Some(row.key());
                let id = row.owner.device_id().clone();
                if matches!(condition, Condition::All)
                    || query.matches(&self.query_row(row, c2d, presence).await)
                {
                    out.push(id);
                    if out.len() >= limit {
                        return Ok(out);
                    }
                }
            }
            if n < batch || after.is_none() {
                return Ok(out);
            }
        }
    }

    /// Feeds `pager` the per-device job records after `after`, `batch` at a time, until it has
    /// its page.
    async fn scan_device_jobs(
        &self,
        pager: &mut ferrohub_query::Pager<'_>,
        mut after: Option<RowKey>,
        mut batch: usize,
    ) -> Result<(), HubError> {
        let store = &self.scheduled_jobs.store;
        let mut jobs: HashMap<String, Option<ScheduledJob>> = HashMap::new();
        loop {
            let key = after
                .as_ref()
                .map(|k| (k.device_id(), k.child_id().unwrap_or_default()));
            let rows = store
                .device_job_rows(key, batch)
                .await
                .map_err(|e| HubError::unavailable("The scheduled jobs store", &e))?;
            let n = rows.len();
            for row in rows {
                let job_id = row.record.job_id.clone();
                if !jobs.contains_key(&job_id) {
                    let job = store
                        .job(&job_id)
                        .await
                        .map_err(|e| HubError::unavailable("The scheduled jobs store", &e))?;
                    jobs.insert(job_id.clone(), job);
                }
                let job = jobs.get(&job_id).and_then(Option::as_ref);
                let key = RowKey::job(row.record.device_id.clone(), job_id);
                let value = device_job_row(&row, job);
                after = Some(key.clone());
                if pager.push(key, value) == Flow::Stop {
                    return Ok(());
                }
            }
            if n < batch {
                return Ok(());
            }
            batch = batch.saturating_mul(2).min(MAX_BATCH);
        }
    }

    /// One batch of the store's scan.
    async fn scan(
        &self,
        condition: &Condition,
        collection: Collection,
        after: Option<RowKey>,
        limit: usize,
    ) -> Result<Vec<TwinRow>, HubError> {
        self.registry
            .store()
            .query_twins(TwinScan {
                collection,
                condition: condition.clone(),
                after,
                limit,
            })
            .await
            .map_err(|e| HubError::from(RegistryError::from(e)))
    }

    /// The presence of every row of a batch, in one read.
    async fn row_presences(&self, rows: &[TwinRow]) -> Vec<Option<Presence>> {
        let identities: Vec<_> = rows
            .iter()
            .map(|r| (r.owner.device_id().clone(), r.owner.module_id().cloned()))
            .collect();
        self.presences(&identities).await
    }

    /// A scanned row as queries see it: the REST twin with its live fields.
    async fn query_row(&self, row: TwinRow, c2d_count: bool, presence: Option<Presence>) -> Value {
        let twin = row.twin.map_or_else(initial_twin, |t| t.twin);
        let identity = self
            .twin_identity_from(&row.owner, c2d_count, presence)
            .await;
        serde_json::to_value(twin.rest_view(&identity)).unwrap_or(Value::Null)
    }

    /// Sets `cloudToDeviceMessageCount` of the device twins of a `SELECT *` page, which the
    /// scan left at 0.
    async fn fill_c2d_counts(&self, rows: &mut [Value]) {
        for row in rows {
            let Some(obj) = row.as_object_mut() else {
                continue;
            };
            if !obj.contains_key(C2D_COUNT) {
                continue;
            }
            let Some(id) = obj
                .get("deviceId")
                .and_then(Value::as_str)
                .and_then(|d| DeviceId::new(d).ok())
            else {
                continue;
            };
            let count = self.c2d_count(&id).await;
            obj.insert(C2D_COUNT.to_owned(), Value::from(count));
        }
    }
}

/// A per-device job record as `SELECT * FROM devices.jobs` returns it (Azure's `DeviceJob`):
/// `startTimeUtc` and `endTimeUtc` are the job's window, `createdDateTimeUtc` when the job
/// selected the device, `lastUpdatedDateTimeUtc` its record's last change; `outcome` and `error`
/// only when there is one.
pub(crate) fn device_job_row(row: &DeviceJobRow, job: Option<&ScheduledJob>) -> Value {
    let time = |t: DateTime<Utc>| Value::String(t.to_rfc3339_opts(SecondsFormat::Millis, true));
    let d = &row.record;
    let mut m = serde_json::Map::new();
    m.insert("deviceId".into(), d.device_id.clone().into());
    m.insert("jobId".into(), d.job_id.clone().into());
    m.insert("jobType".into(), row.job_type.device_job_name().into());
    m.insert("status".into(), d.status.as_str().into());
    let start = job.map(|j| j.start_time).or(d.start_time);
    let end = job.map(super::scheduled_jobs::window_end).or(d.end_time);
    if let Some(t) = start {
        m.insert("startTimeUtc".into(), time(t));
    }
    if let Some(t) = end {
        m.insert("endTimeUtc".into(), time(t));
    }
    m.insert("createdDateTimeUtc".into(), time(d.created_time));
    m.insert("lastUpdatedDateTimeUtc".into(), time(d.last_updated_time));
    if let Some(outcome) = &d.outcome {
        m.insert("outcome".into(), outcome.clone());
    }
    if let Some(e) = &d.error {
        m.insert(
            "error".into(),
            serde_json::json!({ "code": e.code, "description": e.description }),
        );
    }
    Value::Object(m)
}
