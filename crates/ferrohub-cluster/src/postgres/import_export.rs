//! [`PgImportExportSlot`]: the hub's one active import or export job across the nodes of a
//! cluster (`ferrohub_server::SharedJobSlot`), in PostgreSQL.
//!
//! # Schema (component `import_export`)
//!
//! `import_export_jobs(job_id PK, owner, lease_ms, active, doc JSONB)`: one row per job created
//! in the cluster (its `JobProperties` as the REST API shows them), `owner` the node that runs
//! it, `lease_ms` the end of its lease in milliseconds since the epoch. A unique partial index
//! on `active` lets at most one row be active. Taking the slot runs in one transaction under a
//! transaction-scoped advisory lock ([`SLOT_LOCK_KEY`]): fail the holder whose lease ended,
//! look for a holder left, insert the new job.

use chrono::{DateTime, SecondsFormat, Utc};
use ferrohub_server::cluster::BoxFuture;
use ferrohub_server::{SharedJobSlot, SlotBegin};
use serde_json::Value;
use tokio_postgres::types::Json;

use super::{Migrations, PgDatabase, PgError, decode_error, sql_error};

/// The slot's schema.
pub(crate) const MIGRATIONS: Migrations = Migrations {
    component: "import_export",
    scripts: &["CREATE TABLE import_export_jobs (
             job_id   TEXT COLLATE \"C\" NOT NULL PRIMARY KEY,
             owner    TEXT NOT NULL,
             lease_ms BIGINT NOT NULL,
             active   BOOLEAN NOT NULL,
             doc      JSONB NOT NULL
         );
         CREATE UNIQUE INDEX import_export_one_active ON import_export_jobs (active)
             WHERE active;"],
};

/// The advisory lock taking the slot holds (the ASCII bytes of `fhieslot`).
pub(crate) const SLOT_LOCK_KEY: i64 = 0x6668_6965_736c_6f74;

/// Fails the active job whose lease ended at or before `$1` (or whose owner is `$4`, a node
/// restarted under its name), with reason `$2` at time `$3`.
const EXPIRE: &str = "UPDATE import_export_jobs
     SET active = false,
         doc = doc || jsonb_build_object('status', 'failed', 'failureReason', $2::text,
                                         'endTimeUtc', $3::text)
     WHERE active AND (lease_ms <= $1 OR owner = $4)";

/// [`SharedJobSlot`] in PostgreSQL. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PgImportExportSlot {
    db: PgDatabase,
}

impl PgImportExportSlot {
    /// Migrates the slot's schema and returns it.
    pub async fn open(db: PgDatabase) -> Result<Self, PgError> {
        db.migrate(MIGRATIONS).await?;
        Ok(PgImportExportSlot { db })
    }
}

fn time_text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl SharedJobSlot for PgImportExportSlot {
    fn begin<'a>(
        &'a self,
        job_id: &'a str,
        record: Value,
        owner: &'a str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<SlotBegin, String>> {
        let (job_id, owner, reason) = (job_id.to_owned(), owner.to_owned(), reason.to_owned());
        let op = self.db.run(move |mut client| async move {
            let tx = client.transaction().await.map_err(sql_error)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SLOT_LOCK_KEY])
                .await
                .map_err(sql_error)?;
            let failed = tx
                .execute(
                    EXPIRE,
                    &[&now.timestamp_millis(), &reason, &time_text(now), &owner],
                )
                .await
                .map_err(sql_error)?;
            if failed > 0 {
                tracing::warn!("an import or export job whose node stopped was marked failed");
            }
            let holder = tx
                .query_opt("SELECT job_id FROM import_export_jobs WHERE active", &[])
                .await
                .map_err(sql_error)?;
            let outcome = match holder {
                Some(row) => SlotBegin::Busy(row.try_get(0).map_err(decode_error)?),
                None => {
                    tx.execute(
                        "INSERT INTO import_export_jobs (job_id, owner, lease_ms, active, doc)
                         VALUES ($1, $2, $3, true, $4)",
                        &[&job_id, &owner, &until.timestamp_millis(), &Json(&record)],
                    )
                    .await
                    .map_err(sql_error)?;
                    SlotBegin::Taken
                }
            };
            tx.commit().await.map_err(sql_error)?;
            Ok(outcome)
        });
        Box::pin(async move { op.await.map_err(|e| e.to_string()) })
    }

    fn renew<'a>(
        &'a self,
        job_id: &'a str,
        owner: &'a str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        record: Value,
    ) -> BoxFuture<'a, Result<bool, String>> {
        let (job_id, owner) = (job_id.to_owned(), owner.to_owned());
        let op = self.db.run(move |client| async move {
            // An empty record (the job could not be read) keeps the stored one.
            let record = (!record.is_null()).then_some(Json(record));
            let n = client
                .execute(
                    "UPDATE import_export_jobs SET lease_ms = $4, doc = COALESCE($5, doc)
                     WHERE job_id = $1 AND owner = $2 AND active AND lease_ms > $3",
                    &[
                        &job_id,
                        &owner,
                        &now.timestamp_millis(),
                        &until.timestamp_millis(),
                        &record,
                    ],
                )
                .await
                .map_err(sql_error)?;
            Ok(n == 1)
        });
        Box::pin(async move { op.await.map_err(|e| e.to_string()) })
    }

    fn end<'a>(
        &'a self,
        job_id: &'a str,
        owner: &'a str,
        record: Value,
    ) -> BoxFuture<'a, Result<(), String>> {
        let (job_id, owner) = (job_id.to_owned(), owner.to_owned());
        let op = self.db.run(move |client| async move {
            // A job failed or cancelled through another node keeps that record.
            client
                .execute(
                    "UPDATE import_export_jobs SET active = false, doc = $3
                     WHERE job_id = $1 AND owner = $2
                       AND (active OR doc->>'status' NOT IN ('failed', 'cancelled'))",
                    &[&job_id, &owner, &Json(&record)],
                )
                .await
                .map_err(sql_error)?;
            Ok(())
        });
        Box::pin(async move { op.await.map_err(|e| e.to_string()) })
    }

    fn cancel<'a>(
        &'a self,
        job_id: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Option<Value>, String>> {
        let job_id = job_id.to_owned();
        let op = self.db.run(move |client| async move {
            client
                .execute(
                    "UPDATE import_export_jobs
                     SET active = false,
                         doc = doc || jsonb_build_object('status', 'cancelled',
                                                         'endTimeUtc', $2::text)
                     WHERE job_id = $1 AND active",
                    &[&job_id, &time_text(now)],
                )
                .await
                .map_err(sql_error)?;
            let row = client
                .query_opt(
                    "SELECT doc FROM import_export_jobs WHERE job_id = $1",
                    &[&job_id],
                )
                .await
                .map_err(sql_error)?;
            row.map(|r| r.try_get::<_, Json<Value>>(0).map(|j| j.0))
                .transpose()
                .map_err(decode_error)
        });
        Box::pin(async move { op.await.map_err(|e| e.to_string()) })
    }

    fn records<'a>(
        &'a self,
        now: DateTime<Utc>,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Value>, String>> {
        let reason = reason.to_owned();
        let op = self.db.run(move |client| async move {
            // No owner matches the empty name: only an ended lease fails the holder here.
            client
                .execute(
                    EXPIRE,
                    &[&now.timestamp_millis(), &reason, &time_text(now), &""],
                )
                .await
                .map_err(sql_error)?;
            let rows = client
                .query("SELECT doc FROM import_export_jobs ORDER BY job_id", &[])
                .await
                .map_err(sql_error)?;
            rows.iter()
                .map(|r| r.try_get::<_, Json<Value>>(0).map(|j| j.0))
                .collect::<Result<_, _>>()
                .map_err(decode_error)
        });
        Box::pin(async move { op.await.map_err(|e| e.to_string()) })
    }
}
