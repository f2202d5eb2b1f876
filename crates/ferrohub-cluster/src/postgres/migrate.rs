//! Versioned schema migrations, safe when several nodes start at once.
//!
//! Each store owns a *component* (`registry`, `c2d`) with an ordered list of SQL scripts; entry
//! `i` brings the component from version `i` to `i + 1`. The table `schema_migrations`
//! records one row per applied version. [`migrate`] runs in the caller's transaction and first
//! takes a transaction-scoped advisory lock, so nodes starting together apply each script
//! exactly once: the first does the work, the others wait for its commit and then find
//! nothing left to do. A database whose component is at a version this build does not know
//! (written by a newer build) is refused, not misread.
//!
//! Advisory locks are PostgreSQL's; the rest is plain SQL. A database without them (CockroachDB)
//! would need the lock taken another way, e.g. `SELECT … FOR UPDATE` on a row of a lock table.

use deadpool_postgres::Transaction;

use super::{PgError, sql_error};

/// The advisory lock key migrations hold (the ASCII bytes of `fhschema`).
pub const MIGRATION_LOCK_KEY: i64 = 0x6668_7363_6865_6d61;

/// A component's migrations.
#[derive(Debug, Clone, Copy)]
pub struct Migrations {
    /// The component's name in `schema_migrations`.
    pub component: &'static str,
    /// The scripts, oldest first.
    pub scripts: &'static [&'static str],
}

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    component  TEXT NOT NULL,
    version    INTEGER NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (component, version)
)";

/// Brings `migrations.component` to its newest version inside `tx`, under the migration lock.
/// Commit `tx` to make it stick.
pub async fn migrate(tx: &Transaction<'_>, migrations: &Migrations) -> Result<(), PgError> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await
        .map_err(sql_error)?;
    tx.batch_execute(CREATE_TABLE).await.map_err(sql_error)?;
    let current: Option<i32> = tx
        .query_one(
            "SELECT max(version) FROM schema_migrations WHERE component = $1",
            &[&migrations.component],
        )
        .await
        .map_err(sql_error)?
        .try_get(0)
        .map_err(super::decode_error)?;
    let current = usize::try_from(current.unwrap_or(0)).unwrap_or(0);
    let known = migrations.scripts.len();
    if current > known {
        return Err(PgError::Incompatible(format!(
            "component {} is at schema version {current}; this build knows up to {known}",
            migrations.component
        )));
    }
    for (i, script) in migrations.scripts.iter().enumerate().skip(current) {
        tx.batch_execute(script).await.map_err(sql_error)?;
        let version = i32::try_from(i + 1).unwrap_or(i32::MAX);
        tx.execute(
            "INSERT INTO schema_migrations (component, version) VALUES ($1, $2)",
            &[&migrations.component, &version],
        )
        .await
        .map_err(sql_error)?;
        tracing::info!(component = migrations.component, version, "schema migrated");
    }
    Ok(())
}
