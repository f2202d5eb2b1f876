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
//!
//! A job's lease is `jobs.owner` and `jobs.lease_ms` (its end in milliseconds since the epoch),
//! written only by the lease statements: a claim is one `UPDATE … WHERE` whose condition
//! (no owner, the same owner, or a lease that ended) PostgreSQL re-checks on the row it locks,
//! so of two nodes claiming at once exactly one wins. A creation bounded by the number of
//! unfinished jobs takes a transaction-scoped advisory lock first ([`CREATE_LOCK_KEY`]), so
//! concurrent creations on any nodes count one after the other. `device_jobs` is also indexed
//! by `(device_id, job_id)` for `devices.jobs` queries.

use std::future::Future;

use chrono::{DateTime, Utc};
use tokio_postgres::types::Json;

use ferrohub_registry::StoreError;
use ferrohub_registry::scheduled_jobs::{
    Created, DeviceJob, DeviceJobRow, DeviceJobStatistics, DeviceJobStatus, Expect, JobFilter,
    JobLease, JobType, JobWrite, ScheduledJob, ScheduledJobStore,
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
        // 2: job leases; device records in device order.
        "ALTER TABLE jobs ADD COLUMN owner TEXT;
         ALTER TABLE jobs ADD COLUMN lease_ms BIGINT;
         CREATE INDEX device_jobs_by_device ON device_jobs (device_id, job_id);",
    ],
};

/// The advisory lock a creation bounded by the unfinished job count holds (the ASCII bytes of
/// `fhjobnew`).
pub(crate) const CREATE_LOCK_KEY: i64 = 0x6668_6a6f_626e_6577;

/// The unfinished statuses, as SQL.
const UNFINISHED_SQL: &str = "('queued', 'scheduled', 'running')";

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

    fn create(
        &self,
        job: ScheduledJob,
        max_unfinished: Option<u64>,
    ) -> impl Future<Output = Result<Created, StoreError>> + Send {
        let steps = encode(JobWrite {
            job: Some((job, Expect::Absent)),
            devices: Vec::new(),
        });
        let run = self.db.run(move |mut client| async move {
            let mut steps = steps?;
            if let Some(max) = max_unfinished {
                steps.insert(
                    0,
                    Step {
                        index: 0,
                        sql: "SELECT pg_advisory_xact_lock($1)",
                        params: vec![Box::new(CREATE_LOCK_KEY)],
                        want: Want::Any,
                    },
                );
                steps.push(Step {
                    index: 1,
                    sql: "SELECT 1 WHERE (SELECT count(*) FROM jobs
                              WHERE status IN ('queued', 'scheduled', 'running')) <= $1",
                    params: vec![Box::new(to_i64(max)?)],
                    want: Want::One,
                });
            }
            run_steps(&mut client, steps, false).await
        });
        async move {
            match run.await {
                Ok(()) => Ok(Created::Created),
                Err(PgError::Conflict { index: 0 }) => Ok(Created::Exists),
                Err(PgError::Conflict { .. }) => Ok(Created::TooMany),
                Err(e) => Err(StoreError::from(e)),
            }
        }
    }

    fn claim(
        &self,
        id: &str,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let (id, owner) = (id.to_owned(), owner.to_owned());
        let (now, until) = (now.timestamp_millis(), until.timestamp_millis());
        self.read(move |client| async move {
            let n = client
                .execute(
                    &format!(
                        "UPDATE jobs SET owner = $2, lease_ms = $4
                         WHERE job_id = $1 AND status IN {UNFINISHED_SQL}
                           AND (owner IS NULL OR owner = $2 OR lease_ms IS NULL
                                OR lease_ms <= $3)"
                    ),
                    &[&id, &owner, &now, &until],
                )
                .await
                .map_err(sql_error)?;
            Ok(n == 1)
        })
    }

    fn renew(
        &self,
        id: &str,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let (id, owner) = (id.to_owned(), owner.to_owned());
        let (now, until) = (now.timestamp_millis(), until.timestamp_millis());
        self.read(move |client| async move {
            let n = client
                .execute(
                    "UPDATE jobs SET lease_ms = $4
                     WHERE job_id = $1 AND owner = $2 AND lease_ms > $3",
                    &[&id, &owner, &now, &until],
                )
                .await
                .map_err(sql_error)?;
            Ok(n == 1)
        })
    }

    fn release(
        &self,
        id: &str,
        owner: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let (id, owner) = (id.to_owned(), owner.to_owned());
        self.read(move |client| async move {
            client
                .execute(
                    "UPDATE jobs SET owner = NULL, lease_ms = NULL
                     WHERE job_id = $1 AND owner = $2",
                    &[&id, &owner],
                )
                .await
                .map_err(sql_error)?;
            Ok(())
        })
    }

    fn lease(&self, id: &str) -> impl Future<Output = Result<Option<JobLease>, StoreError>> + Send {
        let id = id.to_owned();
        self.read(move |client| async move {
            let row = client
                .query_opt("SELECT owner, lease_ms FROM jobs WHERE job_id = $1", &[&id])
                .await
                .map_err(sql_error)?;
            let Some(row) = row else { return Ok(None) };
            let owner: Option<String> = row.try_get(0).map_err(decode_error)?;
            let ms: Option<i64> = row.try_get(1).map_err(decode_error)?;
            match (owner, ms) {
                (Some(owner), Some(ms)) => {
                    let until = DateTime::from_timestamp_millis(ms)
                        .ok_or_else(|| PgError::Corrupt(format!("lease end {ms} is not a time")))?;
                    Ok(Some(JobLease { owner, until }))
                }
                _ => Ok(None),
            }
        })
    }

    fn claimable(
        &self,
        now: DateTime<Utc>,
        after: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send {
        let now = now.timestamp_millis();
        let after = after.map(str::to_owned);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |client| async move {
            let rows = client
                .query(
                    &format!(
                        "SELECT job_id FROM jobs
                         WHERE status IN {UNFINISHED_SQL}
                           AND (owner IS NULL OR lease_ms IS NULL OR lease_ms <= $1)
                           AND ($2::text IS NULL OR job_id > $2)
                         ORDER BY job_id LIMIT $3"
                    ),
                    &[&now, &after, &limit],
                )
                .await
                .map_err(sql_error)?;
            rows.iter()
                .map(|r| r.try_get::<_, String>(0))
                .collect::<Result<_, _>>()
                .map_err(decode_error)
        })
    }

    fn device_job_rows(
        &self,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<DeviceJobRow>, StoreError>> + Send {
        let (after_device, after_job) = match after {
            Some((d, j)) => (Some(d.to_owned()), Some(j.to_owned())),
            None => (None, None),
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |client| async move {
            let rows = client
                .query(
                    "SELECT d.doc, j.job_type FROM device_jobs d JOIN jobs j ON j.job_id = d.job_id
                     WHERE $1::text IS NULL OR (d.device_id, d.job_id) > ($1, $2::text)
                     ORDER BY d.device_id, d.job_id LIMIT $3",
                    &[&after_device, &after_job, &limit],
                )
                .await
                .map_err(sql_error)?;
            rows.iter()
                .map(|r| {
                    let record = r.try_get::<_, Json<DeviceJob>>(0).map_err(decode_error)?.0;
                    let job_type: String = r.try_get(1).map_err(decode_error)?;
                    let job_type = JobType::parse(&job_type).ok_or_else(|| {
                        PgError::Corrupt(format!("unknown job type {job_type:?}"))
                    })?;
                    Ok(DeviceJobRow { record, job_type })
                })
                .collect()
        })
    }
}
