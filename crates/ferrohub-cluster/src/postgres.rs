//! The PostgreSQL side of the cluster: a connection pool with time limits ([`PgDatabase`]), the
//! versioned schema migrations every store applies at start ([`migrate`]), and the two stores,
//! [`PgRegistryStore`] and [`PgQueueStore`].
//!
//! # Runtime
//!
//! The store traits promise futures that need no particular async runtime (the embedded stores
//! run their own threads). tokio-postgres needs tokio, so [`PgDatabase`] keeps the handle of the
//! runtime it was connected on and runs every store operation as a task there; the future a
//! store method returns only waits for that task, and any executor can poll it. A side effect
//! the stores rely on: an operation is under way as soon as the method is called, and dropping
//! its future does not cancel it half-way (a transaction either commits or rolls back).
//!
//! # Failures
//!
//! Every operation runs under [`PgConfig::op_timeout`], and taking a connection from the pool
//! under [`PgConfig::wait_timeout`]. While PostgreSQL is down or unreachable, operations fail
//! with `StoreError::Unavailable` (the hub answers 503) within those limits, and work again once
//! the server is back: the pool drops broken connections and opens new ones on demand.
//! Guard failures, and the errors PostgreSQL raises for a write that lost a race (a unique or
//! foreign-key violation, a serialization failure, a deadlock), are `StoreError::Conflict`: the
//! caller reads again and retries, as with the embedded stores.

mod c2d;
mod groups;
mod import_export;
mod migrate;
mod presence;
mod registry;
mod scheduled_jobs;
mod sessions;
mod settings;

use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::runtime::Handle;
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

pub use c2d::{C2D_CHANNEL, PgQueueStore};
pub use groups::PgGroupDocument;
pub use import_export::PgImportExportSlot;
pub use migrate::{MIGRATION_LOCK_KEY, Migrations, migrate};
pub use presence::{NODE_TTL, PgPresenceStore};
pub use registry::{PgRegistryStore, REGISTRY_CHANNEL, RegistryNotification};
pub use scheduled_jobs::PgJobStore;
pub use sessions::PgSessionStore;
pub use settings::PgSharedSettings;

/// How to reach PostgreSQL and how long to wait for it.
#[derive(Debug, Clone)]
pub struct PgConfig {
    /// A libpq-style connection string or URL, e.g. `postgres://ferrohub@db.example/ferrohub`.
    pub url: String,
    /// Most connections the pool opens (default 16).
    pub max_connections: usize,
    /// Longest wait to open one connection (default 5 s).
    pub connect_timeout: Duration,
    /// Longest wait for a free connection from the pool, including opening one (default 5 s).
    pub wait_timeout: Duration,
    /// Longest a whole store operation may take, queueing included (default 10 s). Past it the
    /// operation fails as unavailable; a write may still have committed, as with any lost reply,
    /// and the compare-and-set guards make the caller's retry safe.
    pub op_timeout: Duration,
}

impl PgConfig {
    /// The defaults for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        PgConfig {
            url: url.into(),
            max_connections: 16,
            connect_timeout: Duration::from_secs(5),
            wait_timeout: Duration::from_secs(5),
            op_timeout: Duration::from_secs(10),
        }
    }
}

/// Why talking to PostgreSQL failed, before it is told as a store's own error type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PgError {
    /// The change at `index` of an `apply` found another state than it expected, or lost a
    /// race to another writer; nothing of the `apply` was stored.
    #[error("change {index} of the batch conflicts with the stored state")]
    Conflict {
        /// The position of the first failing change.
        index: usize,
    },
    /// PostgreSQL could not be reached, refused, failed, or did not answer in time.
    #[error("PostgreSQL is unavailable: {0}")]
    Unavailable(String),
    /// A stored value could not be decoded, or a value could not be encoded.
    #[error("PostgreSQL holds data that cannot be read: {0}")]
    Corrupt(String),
    /// The database's schema was written by a newer build.
    #[error("the database schema is newer than this build: {0}")]
    Incompatible(String),
    /// The configuration is unusable (a malformed connection string).
    #[error("invalid PostgreSQL configuration: {0}")]
    Config(String),
}

impl From<PgError> for ferrohub_registry::StoreError {
    fn from(e: PgError) -> Self {
        use ferrohub_registry::StoreError;
        match e {
            PgError::Conflict { index } => StoreError::Conflict { index },
            PgError::Corrupt(m) => StoreError::Corrupt(m),
            PgError::Incompatible(m) => StoreError::Incompatible(m),
            PgError::Unavailable(m) | PgError::Config(m) => StoreError::Unavailable(m),
        }
    }
}

impl From<PgError> for ferrohub_c2d::StoreError {
    fn from(e: PgError) -> Self {
        use ferrohub_c2d::StoreError;
        match e {
            PgError::Conflict { index } => StoreError::Conflict { index },
            PgError::Corrupt(m) => StoreError::Corrupt(m),
            PgError::Incompatible(m) => StoreError::Incompatible(m),
            PgError::Unavailable(m) | PgError::Config(m) => StoreError::Unavailable(m),
        }
    }
}

/// A pool of PostgreSQL connections shared by the stores, bound to the tokio runtime it was
/// created on. Cheap to clone.
#[derive(Clone)]
pub struct PgDatabase {
    pool: Pool,
    runtime: Handle,
    op_timeout: Duration,
}

impl std::fmt::Debug for PgDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = self.pool.status();
        f.debug_struct("PgDatabase")
            .field("size", &status.size)
            .field("available", &status.available)
            .field("op_timeout", &self.op_timeout)
            .finish()
    }
}

impl PgDatabase {
    /// A pool for `config` on the current tokio runtime, which will run every operation.
    /// Opens no connection yet: a node can start while PostgreSQL is down (its first
    /// operations then fail as unavailable). Fails outside a tokio runtime.
    pub fn new(config: &PgConfig) -> Result<Self, PgError> {
        let runtime = Handle::try_current().map_err(|_| {
            PgError::Config("the PostgreSQL pool must be created on a tokio runtime".into())
        })?;
        let mut pg = tokio_postgres::Config::from_str(&config.url)
            .map_err(|e| PgError::Config(e.to_string()))?;
        pg.connect_timeout(config.connect_timeout);
        pg.keepalives(true);
        pg.keepalives_idle(Duration::from_secs(30));
        if pg.get_application_name().is_none() {
            pg.application_name("ferrohub");
        }
        let manager = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                // A connection that broke while idle in the pool (the server restarted) is
                // found out and replaced when it is next taken, not by a failed operation.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.max_connections.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(config.wait_timeout))
            .create_timeout(Some(config.connect_timeout))
            .recycle_timeout(Some(config.connect_timeout))
            .build()
            .map_err(|e| PgError::Config(e.to_string()))?;
        Ok(PgDatabase {
            pool,
            runtime,
            op_timeout: config.op_timeout,
        })
    }

    /// Runs `op` with a pooled connection as a task on the pool's runtime, under the operation
    /// time limit. The returned future needs no runtime of its own.
    pub(crate) fn run<T, F, Fut>(
        &self,
        op: F,
    ) -> impl Future<Output = Result<T, PgError>> + Send + 'static
    where
        T: Send + 'static,
        F: FnOnce(deadpool_postgres::Object) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, PgError>> + Send + 'static,
    {
        let pool = self.pool.clone();
        let limit = self.op_timeout;
        let task = self.runtime.spawn(async move {
            let work = async move {
                let client = pool.get().await.map_err(pool_error)?;
                op(client).await
            };
            match tokio::time::timeout(limit, work).await {
                Ok(result) => result,
                Err(_) => Err(PgError::Unavailable(format!(
                    "no answer from PostgreSQL within {limit:?}"
                ))),
            }
        });
        async move {
            task.await.unwrap_or_else(|e| {
                Err(PgError::Unavailable(format!(
                    "the database task did not finish: {e}"
                )))
            })
        }
    }

    /// Applies `migrations` under the migration lock (see [`migrate`]).
    pub async fn migrate(&self, migrations: Migrations) -> Result<(), PgError> {
        self.run(move |mut client| async move {
            let tx = client.transaction().await.map_err(sql_error)?;
            migrate(&tx, &migrations).await?;
            tx.commit().await.map_err(sql_error)
        })
        .await
    }

    /// The underlying pool, for callers that need a connection of their own (a `LISTEN`
    /// connection takes one outside the pool, from the same settings).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }
}

/// A statement of an `apply`, with the row count that means its guard held.
pub(crate) struct Step {
    /// The change it belongs to.
    pub(crate) index: usize,
    pub(crate) sql: &'static str,
    pub(crate) params: Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>>,
    pub(crate) want: Want,
}

/// What a [`Step`]'s row count must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Want {
    /// Exactly one row written or found.
    One,
    /// No row found (an absence check).
    Zero,
    /// Any count.
    Any,
}

/// Runs `steps` in one transaction: all statements are sent at once (pipelined, so a batch
/// costs about three round trips whatever its size), then their counts are checked in order.
/// The transaction commits only when every guard held; otherwise it rolls back and the first
/// failing step names the conflicting change. `relaxed` commits without waiting for the WAL
/// flush (`synchronous_commit = off`): such a commit may be lost in a crash, together with the
/// relaxed commits after it, until a later synchronous commit flushes them all.
pub(crate) async fn run_steps(
    client: &mut deadpool_postgres::Object,
    steps: Vec<Step>,
    relaxed: bool,
) -> Result<(), PgError> {
    let tx = client.transaction().await.map_err(sql_error)?;
    let mut statements = Vec::with_capacity(steps.len());
    for step in &steps {
        statements.push(tx.prepare_cached(step.sql).await.map_err(sql_error)?);
    }
    let params: Vec<Vec<&(dyn tokio_postgres::types::ToSql + Sync)>> = steps
        .iter()
        .map(|s| {
            s.params
                .iter()
                .map(|p| p.as_ref() as &(dyn tokio_postgres::types::ToSql + Sync))
                .collect()
        })
        .collect();
    let relax = async {
        if relaxed {
            tx.batch_execute("SET LOCAL synchronous_commit TO OFF")
                .await
                .map_err(sql_error)
        } else {
            Ok(())
        }
    };
    // Polled together, the futures send their requests in order before any answer is awaited.
    let (relax, counts) = futures_util::join!(
        relax,
        futures_util::future::join_all(
            statements
                .iter()
                .zip(&params)
                .map(|(stmt, p)| tx.execute(stmt, p))
        )
    );
    relax?;
    for (step, count) in steps.iter().zip(counts) {
        let held = match count {
            Ok(n) => match step.want {
                Want::One => n == 1,
                Want::Zero => n == 0,
                Want::Any => true,
            },
            Err(e) if is_conflict(&e) => false,
            Err(e) => return Err(sql_error(e)),
        };
        if !held {
            // Dropping the transaction would roll back too, but only asynchronously.
            tx.rollback().await.map_err(sql_error)?;
            return Err(PgError::Conflict { index: step.index });
        }
    }
    tx.commit().await.map_err(sql_error)
}

/// Whether `e` is PostgreSQL refusing a write that lost a race with another writer.
fn is_conflict(e: &tokio_postgres::Error) -> bool {
    e.code().is_some_and(|c| {
        *c == SqlState::UNIQUE_VIOLATION
            || *c == SqlState::FOREIGN_KEY_VIOLATION
            || *c == SqlState::T_R_SERIALIZATION_FAILURE
            || *c == SqlState::T_R_DEADLOCK_DETECTED
    })
}

/// A failed statement or lost connection.
pub(crate) fn sql_error(e: tokio_postgres::Error) -> PgError {
    match e.as_db_error() {
        Some(db) => PgError::Unavailable(format!(
            "{}: {} ({})",
            db.severity(),
            db.message(),
            db.code().code()
        )),
        None => PgError::Unavailable(e.to_string()),
    }
}

/// A value read back that does not decode.
pub(crate) fn decode_error(e: tokio_postgres::Error) -> PgError {
    PgError::Corrupt(e.to_string())
}

fn pool_error(e: deadpool_postgres::PoolError) -> PgError {
    PgError::Unavailable(format!("no PostgreSQL connection: {e}"))
}

/// `u64` to PostgreSQL's `BIGINT`.
pub(crate) fn to_i64(v: u64) -> Result<i64, PgError> {
    i64::try_from(v).map_err(|_| PgError::Corrupt(format!("{v} does not fit in a BIGINT")))
}

/// PostgreSQL's `BIGINT` to `u64`.
pub(crate) fn to_u64(v: i64) -> Result<u64, PgError> {
    u64::try_from(v).map_err(|_| PgError::Corrupt(format!("negative number {v} stored")))
}
