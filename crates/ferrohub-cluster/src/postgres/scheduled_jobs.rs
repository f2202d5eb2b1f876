//! [`PgJobStore`]: scheduled jobs and their per-device records in PostgreSQL, shared by every
//! hub node.
//!
//! # Schema (component `scheduled_jobs`)
//!
//! The SQLite store's logical schema: `jobs(job_id PK, version, job_type, status, end_ms,
//! doc JSONB)` (`end_ms`: the end time in milliseconds since the epoch, for retention) and `device_jobs((job_id, device_id) PK, status, doc JSONB)`, `job_id` a foreign
//! key to `jobs` with `ON DELETE CASCADE`, indexed by `(job_id, status, device_id)`. Ids are
//! `TEXT COLLATE "C"` (byte order, as SQLite). Writes are compare-and-set on `version`, run as
//! one transaction through the cluster's pipelined steps.

use std::future::Future;

use chrono::{DateTime, Utc};
use tokio_postgres::types::Json;

use ferrohub_registry::StoreError;
use ferrohub_registry::scheduled_jobs::{
    DeviceJob, DeviceJobStatistics, DeviceJobStatus, Expect, JobFilter, JobWrite, ScheduledJob,
    ScheduledJobStore,
};

use super::{
    Migrations, PgDatabase, PgError, Step, Want, decode_error, run_steps, sql_error, to_i64,
};

pub(crate) const MIGRATIONS: Migrations = Migrations {
    component: "scheduled_jobs",
    scripts: &[
        // 1: jobs and their device records.
        "CREATE TABLE jobs (
             job_id   TEXT COLLATE \"C\" NOT NULL PRIMARY KEY,
             version  BIGINT NOT NULL,
             job_type TEXT NOT NULL,
             status   TEXT NOT NULL,
             end_ms   BIGINT,
             doc      JSONB NOT NULL
         );
         CREATE TABLE device_jobs (
             job_id    TEXT COLLATE \"C\" NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
             device_id TEXT COLLATE \"C\" NOT NULL,
             status    TEXT NOT NULL,
             doc       JSONB NOT NULL,
             PRIMARY KEY (job_id, device_id)
         );
         CREATE INDEX device_jobs_by_status ON device_jobs (job_id, status, device_id);",
    ],
};

/// A [`ScheduledJobStore`] in PostgreSQL. Cheap to clone; clones share the pool.
#[derive(Debug, Clone)]
pub struct PgJobStore {
    db: PgDatabase,
}

impl PgJobStore {
    /// Migrates the schema and returns the store.
    pub async fn open(db: PgDatabase) -> Result<Self, StoreError> {
        db.migrate(MIGRATIONS).await?;
        Ok(PgJobStore { db })
    }

    fn read<T, F, Fut>(&self, f: F) -> impl Future<Output = Result<T, StoreError>> + Send + 'static
    where
        T: Send + 'static,
        F: FnOnce(deadpool_postgres::Object) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, PgError>> + Send + 'static,
    {
        let run = self.db.run(f);
        async move { run.await.map_err(StoreError::from) }
    }
}

fn doc<T: serde::Serialize>(
    value: &T,
) -> Result<Box<dyn tokio_postgres::types::ToSql + Sync + Send>, PgError> {
    let v = serde_json::to_value(value).map_err(|e| PgError::Corrupt(e.to_string()))?;
    Ok(Box::new(Json(v)))
}

fn encode(write: JobWrite) -> Result<Vec<Step>, PgError> {
    let mut steps = Vec::with_capacity(write.devices.len() + 1);
    if let Some((job, expect)) = write.job {
        let id = job.job_id.clone();
        let version = to_i64(job.version)?;
        let job_type = job.job_type.as_str();
        let status = job.status.as_str();
        let end = job.end_time.map(|t| t.timestamp_millis());
        let d = doc(&job)?;
        steps.push(match expect {
            Expect::Absent => Step {
                index: 0,
                sql: "INSERT INTO jobs (job_id, version, job_type, status, end_ms, doc)
                      VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (job_id) DO NOTHING",
                params: vec![
                    Box::new(id),
                    Box::new(version),
                    Box::new(job_type),
                    Box::new(status),
                    Box::new(end),
                    d,
                ],
                want: Want::One,
            },
            Expect::Version(expected) => Step {
                index: 0,
                sql: "UPDATE jobs SET version = $2, job_type = $3, status = $4, end_ms = $5,
                          doc = $6
                      WHERE job_id = $1 AND version = $7",
                params: vec![
                    Box::new(id),
                    Box::new(version),
                    Box::new(job_type),
                    Box::new(status),
                    Box::new(end),
                    d,
                    Box::new(to_i64(expected)?),
                ],
                want: Want::One,
            },
        });
    }
    for d in write.devices {
        let body = doc(&d)?;
        steps.push(Step {
            index: 0,
            sql: "INSERT INTO device_jobs (job_id, device_id, status, doc)
                  SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM jobs WHERE job_id = $1)
                  ON CONFLICT (job_id, device_id) DO UPDATE SET status = excluded.status,
                      doc = excluded.doc",
            params: vec![
                Box::new(d.job_id),
                Box::new(d.device_id),
                Box::new(d.status.as_str()),
                body,
            ],
            want: Want::One,
        });
    }
    Ok(steps)
}

impl ScheduledJobStore for PgJobStore {
    fn write(&self, write: JobWrite) -> impl Future<Output = Result<(), StoreError>> + Send {
        let steps = encode(write);
        let run = self.db.run(move |mut client| async move {
            let steps = steps?;
            if steps.is_empty() {
                return Ok(());
            }
            run_steps(&mut client, steps, false).await
        });
        async move { run.await.map_err(StoreError::from) }
    }

    fn job(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<ScheduledJob>, StoreError>> + Send {
        let id = id.to_owned();
        self.read(move |client| async move {
            let row = client
                .query_opt("SELECT doc FROM jobs WHERE job_id = $1", &[&id])
                .await
                .map_err(sql_error)?;
            row.map(|r| r.try_get::<_, Json<ScheduledJob>>(0).map(|j| j.0))
                .transpose()
                .map_err(decode_error)
        })
    }

    fn jobs(
        &self,
        filter: &JobFilter,
        after: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<ScheduledJob>, StoreError>> + Send {
        let job_type = filter.job_type.map(|t| t.as_str().to_owned());
        let statuses: Vec<String> = filter
            .statuses
            .iter()
            .map(|s| s.as_str().to_owned())
            .collect();
        let any_status = statuses.is_empty();
        let after = after.map(str::to_owned);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |client| async move {
            let rows = client
                .query(
                    "SELECT doc FROM jobs
                     WHERE ($1::text IS NULL OR job_type = $1)
                       AND ($2 OR status = ANY($3))
                       AND ($4::text IS NULL OR job_id > $4)
                     ORDER BY job_id LIMIT $5",
                    &[&job_type, &any_status, &statuses, &after, &limit],
                )
                .await
                .map_err(sql_error)?;
            rows.iter()
                .map(|r| r.try_get::<_, Json<ScheduledJob>>(0).map(|j| j.0))
                .collect::<Result<_, _>>()
                .map_err(decode_error)
        })
    }

    fn device_jobs(
        &self,
        job_id: &str,
        statuses: &[DeviceJobStatus],
        after: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<DeviceJob>, StoreError>> + Send {
        let job_id = job_id.to_owned();
        let statuses: Vec<String> = statuses.iter().map(|s| s.as_str().to_owned()).collect();
        let any_status = statuses.is_empty();
        let after = after.map(str::to_owned);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |client| async move {
            let rows = client
                .query(
                    "SELECT doc FROM device_jobs
                     WHERE job_id = $1
                       AND ($2 OR status = ANY($3))
                       AND ($4::text IS NULL OR device_id > $4)
                     ORDER BY device_id LIMIT $5",
                    &[&job_id, &any_status, &statuses, &after, &limit],
                )
                .await
                .map_err(sql_error)?;
            rows.iter()
                .map(|r| r.try_get::<_, Json<DeviceJob>>(0).map(|j| j.0))
                .collect::<Result<_, _>>()
                .map_err(decode_error)
        })
    }

    fn statistics(
        &self,
        job_id: &str,
    ) -> impl Future<Output = Result<DeviceJobStatistics, StoreError>> + Send {
        let job_id = job_id.to_owned();
        self.read(move |client| async move {
            let rows = client
                .query(
                    "SELECT status, count(*) FROM device_jobs WHERE job_id = $1 GROUP BY status",
                    &[&job_id],
                )
                .await
                .map_err(sql_error)?;
            let mut stats = DeviceJobStatistics::default();
            for r in rows {
                let status: String = r.try_get(0).map_err(decode_error)?;
                let n: i64 = r.try_get(1).map_err(decode_error)?;
                let status = DeviceJobStatus::parse(&status).ok_or_else(|| {
                    PgError::Corrupt(format!("unknown device job status {status:?}"))
                })?;
                stats.add(status, u64::try_from(n).unwrap_or(0));
            }
            Ok(stats)
        })
    }

    fn remove_ended_before(
        &self,
        cutoff: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.read(move |client| async move {
            client
                .execute(
                    "DELETE FROM jobs WHERE end_ms IS NOT NULL AND end_ms < $1",
                    &[&cutoff.timestamp_millis()],
                )
                .await
                .map_err(sql_error)?;
            Ok(())
        })
    }
}
