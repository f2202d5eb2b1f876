//! [`SqliteJobStore`]: the embedded, durable [`ScheduledJobStore`], one SQLite file in the data
//! dir (`scheduled-jobs.db`), on the same group-committing database engine as the registry.
//!
//! # Schema
//!
//! `jobs(job_id PK, version, job_type, status, end_ms, doc)` where `doc` is the
//! [`ScheduledJob`]'s JSON and `end_ms` its end time (for retention), and
//! `device_jobs((job_id, device_id) PK, status, doc)` with an index on `(job_id, status,
//! device_id)` for the counts and for resuming a job's unfinished devices, and one on
//! `(device_id, job_id)` for `devices.jobs` queries. Removing a job removes its device records
//! in the same transaction. A job's lease is `jobs.owner` and `jobs.lease_ms` (its end in
//! milliseconds since the epoch), outside the document and its version.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use ferrohub_storage::sqlite::{self, Database, Names, WriteError};

use super::{
    Created, DeviceJob, DeviceJobRow, DeviceJobStatistics, DeviceJobStatus, Expect, JobFilter,
    JobLease, JobType, JobWrite, ScheduledJob, ScheduledJobStore, StoreError,
};

const MIGRATIONS: &[&str] = &[
    // 1: jobs and their device records.
    "CREATE TABLE jobs (
         job_id   TEXT NOT NULL PRIMARY KEY,
         version  INTEGER NOT NULL,
         job_type TEXT NOT NULL,
         status   TEXT NOT NULL,
         end_ms   INTEGER,
         doc      TEXT NOT NULL
     );
     CREATE TABLE device_jobs (
         job_id    TEXT NOT NULL,
         device_id TEXT NOT NULL,
         status    TEXT NOT NULL,
         doc       TEXT NOT NULL,
         PRIMARY KEY (job_id, device_id)
     );
     CREATE INDEX device_jobs_by_status ON device_jobs (job_id, status, device_id);",
    // 2: job leases; device records in device order.
    "ALTER TABLE jobs ADD COLUMN owner TEXT;
     ALTER TABLE jobs ADD COLUMN lease_ms INTEGER;
     CREATE INDEX device_jobs_by_device ON device_jobs (device_id, job_id);",
];

/// The unfinished statuses, as SQL.
const UNFINISHED_SQL: &str = "('queued', 'scheduled', 'running')";

const NAMES: Names = Names {
    threads: "ferrohub-jobs",
    database: "scheduled jobs",
};

/// A [`ScheduledJobStore`] in one SQLite database file.
pub struct SqliteJobStore {
    path: PathBuf,
    db: Database<Op>,
}

enum Op {
    PutJob {
        id: String,
        version: i64,
        job_type: &'static str,
        status: &'static str,
        end_ms: Option<i64>,
        doc: String,
        expect: Option<i64>,
    },
    PutDevice {
        job_id: String,
        device_id: String,
        status: &'static str,
        doc: String,
    },
    RemoveEndedBefore {
        cutoff_ms: i64,
    },
    /// Holds when at most `max` jobs are unfinished.
    AtMostUnfinished {
        max: i64,
    },
    Claim {
        id: String,
        owner: String,
        now_ms: i64,
        until_ms: i64,
    },
    Renew {
        id: String,
        owner: String,
        now_ms: i64,
        until_ms: i64,
    },
    Release {
        id: String,
        owner: String,
    },
}

impl SqliteJobStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let mut writer =
            sqlite::open_writer(&path, NAMES.database).map_err(|e| unavailable(&path, e))?;
        match migrate(&mut writer) {
            Ok(Ok(())) => {}
            Ok(Err(found)) => {
                return Err(StoreError::Incompatible(format!(
                    "{} has schema version {found}; this build knows up to {}",
                    path.display(),
                    MIGRATIONS.len()
                )));
            }
            Err(e) => return Err(unavailable(&path, e)),
        }
        let readers = sqlite::open_readers(&path, 2).map_err(|e| unavailable(&path, e))?;
        let db = Database::start(NAMES, writer, readers, run_op)
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(SqliteJobStore { path, db })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read<T, F>(&self, f: F) -> impl Future<Output = Result<T, StoreError>> + Send + use<T, F>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let read = self.db.read(f);
        async move { read.await.unwrap_or_else(|_| Err(stopped())) }
    }
}

impl std::fmt::Debug for SqliteJobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteJobStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn migrate(conn: &mut Connection) -> rusqlite::Result<Result<(), usize>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if let Err(found) = sqlite::migrate(&tx, "schema_version", MIGRATIONS, NAMES.database)? {
        return Ok(Err(found));
    }
    tx.commit().map(Ok)
}

fn run_op(conn: &Connection, op: &Op) -> rusqlite::Result<bool> {
    Ok(match op {
        Op::PutJob {
            id,
            version,
            job_type,
            status,
            end_ms,
            doc,
            expect: None,
        } => {
            conn.prepare_cached(
                "INSERT INTO jobs (job_id, version, job_type, status, end_ms, doc)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (job_id) DO NOTHING",
            )?
            .execute(params![id, version, job_type, status, end_ms, doc])?
                == 1
        }
        Op::PutJob {
            id,
            version,
            job_type,
            status,
            end_ms,
            doc,
            expect: Some(expected),
        } => {
            conn.prepare_cached(
                "UPDATE jobs SET version = ?2, job_type = ?3, status = ?4, end_ms = ?5, doc = ?6
                 WHERE job_id = ?1 AND version = ?7",
            )?
            .execute(params![
                id, version, job_type, status, end_ms, doc, expected
            ])? == 1
        }
        Op::PutDevice {
            job_id,
            device_id,
            status,
            doc,
        } => {
            conn.prepare_cached(
                "INSERT INTO device_jobs (job_id, device_id, status, doc)
                 SELECT ?1, ?2, ?3, ?4 WHERE EXISTS (SELECT 1 FROM jobs WHERE job_id = ?1)
                 ON CONFLICT (job_id, device_id) DO UPDATE SET status = excluded.status,
                     doc = excluded.doc",
            )?
            .execute(params![job_id, device_id, status, doc])?
                == 1
        }
        Op::RemoveEndedBefore { cutoff_ms } => {
            conn.prepare_cached(
                "DELETE FROM device_jobs WHERE job_id IN
                     (SELECT job_id FROM jobs WHERE end_ms IS NOT NULL AND end_ms < ?1)",
            )?
            .execute([cutoff_ms])?;
            conn.prepare_cached("DELETE FROM jobs WHERE end_ms IS NOT NULL AND end_ms < ?1")?
                .execute([cutoff_ms])?;
            true
        }
        Op::AtMostUnfinished { max } => {
            let n: i64 = conn
                .prepare_cached(&format!(
                    "SELECT count(*) FROM jobs WHERE status IN {UNFINISHED_SQL}"
                ))?
                .query_row([], |r| r.get(0))?;
            n <= *max
        }
        Op::Claim {
            id,
            owner,
            now_ms,
            until_ms,
        } => {
            conn.prepare_cached(&format!(
                "UPDATE jobs SET owner = ?2, lease_ms = ?4
                 WHERE job_id = ?1 AND status IN {UNFINISHED_SQL}
                   AND (owner IS NULL OR owner = ?2 OR lease_ms IS NULL OR lease_ms <= ?3)"
            ))?
            .execute(params![id, owner, now_ms, until_ms])?
                == 1
        }
        Op::Renew {
            id,
            owner,
            now_ms,
            until_ms,
        } => {
            conn.prepare_cached(
                "UPDATE jobs SET lease_ms = ?4 WHERE job_id = ?1 AND owner = ?2 AND lease_ms > ?3",
            )?
            .execute(params![id, owner, now_ms, until_ms])?
                == 1
        }
        Op::Release { id, owner } => {
            conn.prepare_cached(
                "UPDATE jobs SET owner = NULL, lease_ms = NULL WHERE job_id = ?1 AND owner = ?2",
            )?
            .execute(params![id, owner])?;
            true
        }
    })
}

fn encode(write: JobWrite) -> Result<Vec<Op>, StoreError> {
    let mut ops = Vec::with_capacity(write.devices.len() + 1);
    if let Some((job, expect)) = write.job {
        ops.push(Op::PutJob {
            id: job.job_id.clone(),
            version: to_i64(job.version)?,
            job_type: job.job_type.as_str(),
            status: job.status.as_str(),
            end_ms: job.end_time.map(|t| t.timestamp_millis()),
            doc: to_json(&job)?,
            expect: match expect {
                Expect::Absent => None,
                Expect::Version(v) => Some(to_i64(v)?),
            },
        });
    }
    for d in write.devices {
        ops.push(Op::PutDevice {
            job_id: d.job_id.clone(),
            device_id: d.device_id.clone(),
            status: d.status.as_str(),
            doc: to_json(&d)?,
        });
    }
    Ok(ops)
}

impl SqliteJobStore {
    /// Runs `ops` as one write: `Ok(None)` when every guard held, `Ok(Some(index))` when the
    /// op at `index` failed its guard (nothing stored).
    fn guarded(
        &self,
        ops: Vec<Op>,
    ) -> impl Future<Output = Result<Option<usize>, StoreError>> + Send + use<> {
        let written = self.db.write(ops, true);
        async move {
            match written.await {
                Ok(()) => Ok(None),
                Err(WriteError::Conflict { index }) => Ok(Some(index)),
                Err(WriteError::Unavailable(e)) => Err(StoreError::Unavailable(e)),
                Err(WriteError::Closed) => Err(stopped()),
            }
        }
    }
}

impl ScheduledJobStore for SqliteJobStore {
    fn write(&self, write: JobWrite) -> impl Future<Output = Result<(), StoreError>> + Send {
        let written = encode(write).map(|ops| self.db.write(ops, true));
        async move {
            written?.await.map_err(|e| match e {
                // Whatever op failed, the write is refused as a whole.
                WriteError::Conflict { .. } => StoreError::Conflict { index: 0 },
                WriteError::Unavailable(e) => StoreError::Unavailable(e),
                WriteError::Closed => stopped(),
            })
        }
    }

    fn job(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<ScheduledJob>, StoreError>> + Send {
        let id = id.to_owned();
        self.read(move |conn| {
            let doc: Option<String> = conn
                .prepare_cached("SELECT doc FROM jobs WHERE job_id = ?1")
                .and_then(|mut s| s.query_row([&id], |r| r.get(0)).optional())
                .map_err(sql_error)?;
            doc.map(|d| decode(&d)).transpose()
        })
    }

    fn jobs(
        &self,
        filter: &JobFilter,
        after: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<ScheduledJob>, StoreError>> + Send {
        let job_type = filter.job_type.map(|t| t.as_str());
        let statuses = serde_json::to_string(
            &filter
                .statuses
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>(),
        )
        .unwrap_or_else(|_| "[]".to_owned());
        let any_status = filter.statuses.is_empty();
        let after = after.map(str::to_owned);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT doc FROM jobs
                     WHERE (?1 IS NULL OR job_type = ?1)
                       AND (?2 OR status IN (SELECT value FROM json_each(?3)))
                       AND (?4 IS NULL OR job_id > ?4)
                     ORDER BY job_id LIMIT ?5",
                )
                .map_err(sql_error)?;
            let docs = stmt
                .query_map(params![job_type, any_status, statuses, after, limit], |r| {
                    r.get::<_, String>(0)
                })
                .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                .map_err(sql_error)?;
            docs.iter().map(|d| decode(d)).collect()
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
        let any_status = statuses.is_empty();
        let statuses =
            serde_json::to_string(&statuses.iter().map(|s| s.as_str()).collect::<Vec<_>>())
                .unwrap_or_else(|_| "[]".to_owned());
        let after = after.map(str::to_owned);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT doc FROM device_jobs
                     WHERE job_id = ?1
                       AND (?2 OR status IN (SELECT value FROM json_each(?3)))
                       AND (?4 IS NULL OR device_id > ?4)
                     ORDER BY device_id LIMIT ?5",
                )
                .map_err(sql_error)?;
            let docs = stmt
                .query_map(params![job_id, any_status, statuses, after, limit], |r| {
                    r.get::<_, String>(0)
                })
                .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                .map_err(sql_error)?;
            docs.iter().map(|d| decode(d)).collect()
        })
    }

    fn statistics(
        &self,
        job_id: &str,
    ) -> impl Future<Output = Result<DeviceJobStatistics, StoreError>> + Send {
        let job_id = job_id.to_owned();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT status, count(*) FROM device_jobs WHERE job_id = ?1 GROUP BY status",
                )
                .map_err(sql_error)?;
            let rows = stmt
                .query_map([&job_id], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
                })
                .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                .map_err(sql_error)?;
            let mut stats = DeviceJobStatistics::default();
            for (status, n) in rows {
                let status = DeviceJobStatus::parse(&status).ok_or_else(|| {
                    StoreError::Corrupt(format!("unknown device job status {status:?}"))
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
        let written = self.db.write(
            vec![Op::RemoveEndedBefore {
                cutoff_ms: cutoff.timestamp_millis(),
            }],
            true,
        );
        async move {
            written.await.map_err(|e| match e {
                WriteError::Conflict { .. } => StoreError::Conflict { index: 0 },
                WriteError::Unavailable(e) => StoreError::Unavailable(e),
                WriteError::Closed => stopped(),
            })
        }
    }

    fn create(
        &self,
        job: ScheduledJob,
        max_unfinished: Option<u64>,
    ) -> impl Future<Output = Result<Created, StoreError>> + Send {
        let ops = encode(JobWrite {
            job: Some((job, Expect::Absent)),
            devices: Vec::new(),
        })
        .map(|mut ops| {
            if let Some(max) = max_unfinished {
                ops.push(Op::AtMostUnfinished {
                    max: i64::try_from(max).unwrap_or(i64::MAX),
                });
            }
            self.guarded(ops)
        });
        async move {
            Ok(match ops?.await? {
                None => Created::Created,
                Some(0) => Created::Exists,
                Some(_) => Created::TooMany,
            })
        }
    }

    fn claim(
        &self,
        id: &str,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let run = self.guarded(vec![Op::Claim {
            id: id.to_owned(),
            owner: owner.to_owned(),
            now_ms: millis(now),
            until_ms: millis(until),
        }]);
        async move { Ok(run.await?.is_none()) }
    }

    fn renew(
        &self,
        id: &str,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let run = self.guarded(vec![Op::Renew {
            id: id.to_owned(),
            owner: owner.to_owned(),
            now_ms: millis(now),
            until_ms: millis(until),
        }]);
        async move { Ok(run.await?.is_none()) }
    }

    fn release(
        &self,
        id: &str,
        owner: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let run = self.guarded(vec![Op::Release {
            id: id.to_owned(),
            owner: owner.to_owned(),
        }]);
        async move { run.await.map(|_| ()) }
    }

    fn lease(&self, id: &str) -> impl Future<Output = Result<Option<JobLease>, StoreError>> + Send {
        let id = id.to_owned();
        self.read(move |conn| {
            let row: Option<(Option<String>, Option<i64>)> = conn
                .prepare_cached("SELECT owner, lease_ms FROM jobs WHERE job_id = ?1")
                .and_then(|mut s| {
                    s.query_row([&id], |r| Ok((r.get(0)?, r.get(1)?)))
                        .optional()
                })
                .map_err(sql_error)?;
            Ok(match row {
                Some((Some(owner), Some(ms))) => Some(JobLease {
                    owner,
                    until: from_millis(ms)?,
                }),
                _ => None,
            })
        })
    }

    fn claimable(
        &self,
        now: DateTime<Utc>,
        after: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send {
        let now_ms = millis(now);
        let after = after.map(str::to_owned);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT job_id FROM jobs
                     WHERE status IN {UNFINISHED_SQL}
                       AND (owner IS NULL OR lease_ms IS NULL OR lease_ms <= ?1)
                       AND (?2 IS NULL OR job_id > ?2)
                     ORDER BY job_id LIMIT ?3"
                ))
                .map_err(sql_error)?;
            stmt.query_map(params![now_ms, after, limit], |r| r.get::<_, String>(0))
                .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                .map_err(sql_error)
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
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT d.doc, j.job_type FROM device_jobs d JOIN jobs j ON j.job_id = d.job_id
                     WHERE ?1 IS NULL OR d.device_id > ?1 OR (d.device_id = ?1 AND d.job_id > ?2)
                     ORDER BY d.device_id, d.job_id LIMIT ?3",
                )
                .map_err(sql_error)?;
            let rows = stmt
                .query_map(params![after_device, after_job, limit], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                })
                .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                .map_err(sql_error)?;
            rows.iter()
                .map(|(doc, job_type)| {
                    Ok(DeviceJobRow {
                        record: decode(doc)?,
                        job_type: JobType::parse(job_type).ok_or_else(|| {
                            StoreError::Corrupt(format!("unknown job type {job_type:?}"))
                        })?,
                    })
                })
                .collect()
        })
    }
}

fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn to_i64(version: u64) -> Result<i64, StoreError> {
    i64::try_from(version)
        .map_err(|_| StoreError::Corrupt(format!("version {version} does not fit in SQLite")))
}

fn from_millis(ms: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| StoreError::Corrupt(format!("lease end {ms} is not a time")))
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn decode<T: serde::de::DeserializeOwned>(doc: &str) -> Result<T, StoreError> {
    serde_json::from_str(doc).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn sql_error(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn unavailable(path: &Path, e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(format!("{}: {e}", path.display()))
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the scheduled jobs database is closed".to_owned())
}
