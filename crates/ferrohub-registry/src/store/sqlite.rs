//! [`SqliteStore`]: the embedded, durable [`RegistryStore`], one SQLite file in the data dir.
//!
//! # Design
//!
//! The database runs on [`ferrohub_storage::sqlite::Database`]: WAL journal, one writer thread
//! committing concurrent `apply` calls together (group commit), each in its own `SAVEPOINT` so
//! one whose [`Expect`] fails is rolled back alone, and a pool of reader threads. An `apply` is
//! acknowledged only after its commit is on disk (`synchronous=FULL`). It is handed to the
//! writer when it is called, not when its future is first polled: dropping the future does not
//! withdraw it.
//!
//! # Schema
//!
//! `devices(device_id PK, version, status, doc)` and `modules((device_id, module_id) PK, version,
//! doc)`, where `doc` is the identity's JSON ([`Device`]/[`Module`] serde form) and `version`
//! guards compare-and-set updates. Deleting a device deletes its modules in the same transaction.
//!
//! `twins((device_id, module_id) PK, version, doc)` holds the twins written so far (`module_id`
//! is `''` for a device's own twin, which no module id can be), `doc` being `ferrohub-twin`'s
//! stored form as JSON text: its user sections sit at the JSON paths `$.tags`,
//! `$.properties.desired` and `$.properties.reported`, where the query language's SQL reaches
//! them. Deleting a device deletes its twin and its modules' twins, deleting a module its twin,
//! in the same transaction.
//! `schema_version` records the migrations applied; a database written by a newer schema is
//! refused rather than misread.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::Deserialize;

use ferrohub_storage::sqlite::{self, Database, Names, WriteError};
use ferrohub_types::{DeviceId, ModuleId};

pub use ferrohub_storage::sqlite::WriteStats;

use super::{Change, Expect, RegistryStore, StoreError, TwinRow, TwinScan};
use crate::model::{
    Authentication, Device, DeviceStatus, IdentityAuth, Module, RegistryStatistics, StoredTwin,
    TwinOwner,
};

/// The `module_id` of a device's own twin in the `twins` table.
const DEVICE_TWIN: &str = "";

/// The schema this build writes; each entry of `MIGRATIONS` brings the schema one version up.
const MIGRATIONS: &[&str] = &[
    // 1: devices and modules.
    "CREATE TABLE devices (
         device_id TEXT NOT NULL PRIMARY KEY,
         version   INTEGER NOT NULL,
         status    TEXT NOT NULL CHECK (status IN ('enabled', 'disabled')),
         doc       TEXT NOT NULL
     );
     CREATE INDEX devices_by_status ON devices (status);
     CREATE TABLE modules (
         device_id TEXT NOT NULL,
         module_id TEXT NOT NULL,
         version   INTEGER NOT NULL,
         doc       TEXT NOT NULL,
         PRIMARY KEY (device_id, module_id)
     );",
    // 2: twins, beside their identities.
    "CREATE TABLE twins (
         device_id TEXT NOT NULL,
         module_id TEXT NOT NULL,
         version   INTEGER NOT NULL,
         doc       TEXT NOT NULL,
         PRIMARY KEY (device_id, module_id)
     );",
];

/// How many reader threads [`SqliteStore::open`] starts.
pub const DEFAULT_READERS: usize = 2;

/// How the database names its threads and itself in logs.
const NAMES: Names = Names {
    threads: "ferrohub-registry",
    database: "registry",
};

/// A [`RegistryStore`] in one SQLite database file.
///
/// Dropping the store finishes the writes already submitted, then stops its threads and closes
/// the database.
pub struct SqliteStore {
    path: PathBuf,
    db: Database<Op>,
    /// The initial twin's stored form, which queries filter identities without a twin as.
    initial: std::sync::Arc<str>,
}

/// A [`Change`] encoded for SQL; `expect: None` means absent.
enum Op {
    PutDevice {
        id: String,
        version: i64,
        status: &'static str,
        doc: String,
        expect: Option<i64>,
    },
    DeleteDevice {
        id: String,
        expect: Option<i64>,
    },
    PutModule {
        device_id: String,
        module_id: String,
        version: i64,
        doc: String,
        expect: Option<i64>,
    },
    DeleteModule {
        device_id: String,
        module_id: String,
        expect: Option<i64>,
    },
    PutTwin {
        device_id: String,
        /// [`DEVICE_TWIN`] for a device's twin.
        module_id: String,
        version: i64,
        doc: String,
        expect: Option<i64>,
    },
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` with [`DEFAULT_READERS`] readers.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with_readers(path, DEFAULT_READERS)
    }

    /// Opens (creating if needed) the database at `path` with `readers` reader threads (at
    /// least one).
    pub fn open_with_readers(path: impl AsRef<Path>, readers: usize) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let writer = open_writer(&path)?;
        let readers =
            sqlite::open_readers(&path, readers.max(1)).map_err(|e| unavailable(&path, e))?;
        let db = Database::start(NAMES, writer, readers, run_op)
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        tracing::debug!(path = %path.display(), "registry database open");
        Ok(SqliteStore {
            path,
            db,
            initial: super::query::initial_twin_document().into(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The writer's counters so far.
    pub fn write_stats(&self) -> WriteStats {
        self.db.write_stats()
    }

    /// Runs `f` on a reader connection.
    fn read<T, F>(&self, f: F) -> impl Future<Output = Result<T, StoreError>> + Send + use<T, F>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let read = self.db.read(f);
        async move { read.await.unwrap_or_else(|_| Err(stopped())) }
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .field("stats", &self.write_stats())
            .finish()
    }
}

impl RegistryStore for SqliteStore {
    fn apply(&self, changes: Vec<Change>) -> impl Future<Output = Result<(), StoreError>> + Send {
        // Encoded and handed to the writer now, not at the first poll.
        let written = changes
            .into_iter()
            .map(encode)
            .collect::<Result<Vec<_>, _>>()
            .map(|ops| self.db.write(ops, true));
        async move { written?.await.map_err(write_error) }
    }

    fn device(
        &self,
        id: &DeviceId,
    ) -> impl Future<Output = Result<Option<Device>, StoreError>> + Send {
        let id = id.as_str().to_owned();
        self.read(move |conn| {
            let doc: Option<String> = conn
                .prepare_cached("SELECT doc FROM devices WHERE device_id = ?1")
                .and_then(|mut s| s.query_row([&id], |r| r.get(0)).optional())
                .map_err(sql_error)?;
            doc.map(|d| decode::<Device>(&d)).transpose()
        })
    }

    fn devices_by_id(
        &self,
        ids: &[DeviceId],
    ) -> impl Future<Output = Result<Vec<Option<Device>>, StoreError>> + Send {
        let ids: Vec<String> = ids.iter().map(|id| id.as_str().to_owned()).collect();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT doc FROM devices WHERE device_id = ?1")
                .map_err(sql_error)?;
            ids.iter()
                .map(|id| {
                    let doc: Option<String> = stmt
                        .query_row([id], |r| r.get(0))
                        .optional()
                        .map_err(sql_error)?;
                    doc.map(|d| decode::<Device>(&d)).transpose()
                })
                .collect()
        })
    }

    fn devices(
        &self,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Device>, StoreError>> + Send {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT doc FROM devices ORDER BY device_id LIMIT ?1")
                .map_err(sql_error)?;
            let docs = stmt
                .query_map([limit], |r| r.get::<_, String>(0))
                .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                .map_err(sql_error)?;
            docs.iter().map(|d| decode::<Device>(d)).collect()
        })
    }

    fn device_twins(
        &self,
        after: Option<&DeviceId>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<(Device, Option<StoredTwin>)>, StoreError>> + Send {
        let after = after.map(|a| a.as_str().to_owned());
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT d.doc, t.version, t.doc FROM devices d
                     LEFT JOIN twins t ON t.device_id = d.device_id AND t.module_id = ''
                     WHERE ?1 IS NULL OR d.device_id > ?1
                     ORDER BY d.device_id LIMIT ?2",
                )
                .map_err(sql_error)?;
            let rows = stmt
                .query_map(params![after, limit], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, Option<i64>>(1)?,
                        r.get::<_, Option<String>>(2)?,
                    ))
                })
                .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                .map_err(sql_error)?;
            rows.into_iter()
                .map(|(device, version, twin)| {
                    let twin = match (version, twin) {
                        (Some(version), Some(doc)) => Some(StoredTwin {
                            version: u64::try_from(version).map_err(|_| {
                                StoreError::Corrupt(format!("twin version {version} is negative"))
                            })?,
                            twin: decode(&doc)?,
                        }),
                        _ => None,
                    };
                    Ok((decode::<Device>(&device)?, twin))
                })
                .collect()
        })
    }

    fn module(
        &self,
        device_id: &DeviceId,
        module_id: &ModuleId,
    ) -> impl Future<Output = Result<Option<Module>, StoreError>> + Send {
        let (d, m) = (device_id.as_str().to_owned(), module_id.as_str().to_owned());
        self.read(move |conn| {
            let doc: Option<String> = conn
                .prepare_cached("SELECT doc FROM modules WHERE device_id = ?1 AND module_id = ?2")
                .and_then(|mut s| s.query_row([&d, &m], |r| r.get(0)).optional())
                .map_err(sql_error)?;
            doc.map(|doc| decode::<Module>(&doc)).transpose()
        })
    }

    fn modules(
        &self,
        device_id: &DeviceId,
    ) -> impl Future<Output = Result<Vec<Module>, StoreError>> + Send {
        let d = device_id.as_str().to_owned();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT doc FROM modules WHERE device_id = ?1 ORDER BY module_id")
                .map_err(sql_error)?;
            let docs = stmt
                .query_map([&d], |r| r.get::<_, String>(0))
                .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                .map_err(sql_error)?;
            docs.iter().map(|doc| decode::<Module>(doc)).collect()
        })
    }

    fn twin(
        &self,
        device_id: &DeviceId,
        module_id: Option<&ModuleId>,
    ) -> impl Future<Output = Result<Option<StoredTwin>, StoreError>> + Send {
        let d = device_id.as_str().to_owned();
        let m = module_id.map_or(DEVICE_TWIN, ModuleId::as_str).to_owned();
        self.read(move |conn| {
            let row: Option<(i64, String)> = conn
                .prepare_cached(
                    "SELECT version, doc FROM twins WHERE device_id = ?1 AND module_id = ?2",
                )
                .and_then(|mut s| {
                    s.query_row([&d, &m], |r| Ok((r.get(0)?, r.get(1)?)))
                        .optional()
                })
                .map_err(sql_error)?;
            row.map(|(version, doc)| {
                Ok(StoredTwin {
                    version: u64::try_from(version).map_err(|_| {
                        StoreError::Corrupt(format!("twin version {version} is negative"))
                    })?,
                    twin: decode(&doc)?,
                })
            })
            .transpose()
        })
    }

    fn statistics(&self) -> impl Future<Output = Result<RegistryStatistics, StoreError>> + Send {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT status, count(*) FROM devices GROUP BY status")
                .map_err(sql_error)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                .map_err(sql_error)?;
            let mut stats = RegistryStatistics::default();
            for (status, count) in rows {
                let count = u64::try_from(count).unwrap_or(0);
                match status.parse::<DeviceStatus>() {
                    Ok(DeviceStatus::Enabled) => stats.enabled_device_count += count,
                    Ok(DeviceStatus::Disabled) => stats.disabled_device_count += count,
                    Err(e) => return Err(StoreError::Corrupt(e.to_string())),
                }
                stats.total_device_count += count;
            }
            Ok(stats)
        })
    }

    fn identities(
        &self,
    ) -> impl Future<Output = Result<Vec<(DeviceId, Option<ModuleId>, IdentityAuth)>, StoreError>> + Send
    {
        self.read(read_identities)
    }

    fn query_twins(
        &self,
        scan: TwinScan,
    ) -> impl Future<Output = Result<Vec<TwinRow>, StoreError>> + Send {
        let initial = self.initial.clone();
        self.read(move |conn| scan_twins(conn, &scan, &initial))
    }
}

/// One batch of a scan: the pre-filter and the resume key in SQL, over the identities joined
/// with their twins (the initial twin's document where none is stored), in key order.
fn scan_twins(
    conn: &Connection,
    scan: &TwinScan,
    initial: &str,
) -> Result<Vec<TwinRow>, StoreError> {
    use ferrohub_query::{Collection, Dialect, SqlParam};
    use rusqlite::types::Value as SqlValue;

    let modules = match scan.collection {
        Collection::Devices => false,
        Collection::Modules => true,
        Collection::Jobs => return Ok(Vec::new()),
    };
    let table = super::query::twin_table("tdoc");
    let filter = scan.pre_filter(Dialect::Sqlite, "tdoc").to_sql(&table, 2);
    let mut params: Vec<SqlParam> = vec![SqlParam::Text(initial.to_owned())];
    params.extend(filter.params);
    let mut conditions = vec![filter.sql];
    if let Some(after) = &scan.after
        && let Some(range) = after.sql_after(Dialect::Sqlite, &table, params.len() + 1)
    {
        conditions.push(range.sql);
        params.extend(range.params);
    }
    let limit = params.len() + 1;
    let source = if modules {
        "SELECT m.device_id AS device_id, m.module_id AS module_id, m.doc AS idoc,
                t.version AS tversion, t.doc AS tstored, coalesce(t.doc, ?1) AS tdoc
         FROM modules m LEFT JOIN twins t
           ON t.device_id = m.device_id AND t.module_id = m.module_id"
    } else {
        "SELECT d.device_id AS device_id, '' AS module_id, d.doc AS idoc,
                t.version AS tversion, t.doc AS tstored, coalesce(t.doc, ?1) AS tdoc
         FROM devices d LEFT JOIN twins t
           ON t.device_id = d.device_id AND t.module_id = ''"
    };
    let order = if modules {
        "device_id, module_id"
    } else {
        "device_id"
    };
    let sql = format!(
        "SELECT idoc, tversion, tstored FROM ({source}) WHERE {} ORDER BY {order} LIMIT ?{limit}",
        conditions.join(" AND ")
    );
    let mut values: Vec<SqlValue> = params
        .into_iter()
        .map(|p| match p {
            SqlParam::Text(s) => Ok(SqlValue::Text(s)),
            SqlParam::Integer(i) => Ok(SqlValue::Integer(i)),
            SqlParam::Real(f) => Ok(SqlValue::Real(f)),
            SqlParam::Bool(b) => Ok(SqlValue::Integer(i64::from(b))),
            SqlParam::TextArray(_) => Err(StoreError::Corrupt(
                "a PostgreSQL path in an SQLite query".to_owned(),
            )),
        })
        .collect::<Result<_, _>>()?;
    values.push(SqlValue::Integer(
        i64::try_from(scan.batch()).unwrap_or(i64::MAX),
    ));
    let mut stmt = conn.prepare_cached(&sql).map_err(sql_error)?;
    let mut rows = stmt
        .query(rusqlite::params_from_iter(values))
        .map_err(sql_error)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(sql_error)? {
        let idoc: String = row.get(0).map_err(sql_error)?;
        let version: Option<i64> = row.get(1).map_err(sql_error)?;
        let stored: Option<String> = row.get(2).map_err(sql_error)?;
        let owner = if modules {
            TwinOwner::Module(decode(&idoc)?)
        } else {
            TwinOwner::Device(decode(&idoc)?)
        };
        let twin = match (version, stored) {
            (Some(version), Some(doc)) => Some(StoredTwin {
                version: u64::try_from(version).map_err(|_| {
                    StoreError::Corrupt(format!("twin version {version} is negative"))
                })?,
                twin: decode(&doc)?,
            }),
            _ => None,
        };
        out.push(TwinRow { owner, twin });
    }
    Ok(out)
}

/// The fields of a stored document that authentication needs; decoding only these keeps the
/// cache warm-up cheap.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuthDoc {
    generation_id: String,
    #[serde(default)]
    status: DeviceStatus,
    authentication: Authentication,
}

fn read_identities(
    conn: &Connection,
) -> Result<Vec<(DeviceId, Option<ModuleId>, IdentityAuth)>, StoreError> {
    // One read transaction: devices and modules from the same snapshot.
    let tx = conn.unchecked_transaction().map_err(sql_error)?;
    let mut out = Vec::new();
    {
        let mut stmt = tx
            .prepare("SELECT device_id, doc FROM devices")
            .map_err(sql_error)?;
        let mut rows = stmt.query([]).map_err(sql_error)?;
        while let Some(row) = rows.next().map_err(sql_error)? {
            let id: String = row.get(0).map_err(sql_error)?;
            let doc: String = row.get(1).map_err(sql_error)?;
            let id = DeviceId::new(id).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let a: AuthDoc = decode(&doc)?;
            let enabled = a.status == DeviceStatus::Enabled;
            out.push((
                id,
                None,
                IdentityAuth::of(&a.authentication, enabled, &a.generation_id),
            ));
        }
        let mut stmt = tx
            .prepare("SELECT device_id, module_id, doc FROM modules")
            .map_err(sql_error)?;
        let mut rows = stmt.query([]).map_err(sql_error)?;
        while let Some(row) = rows.next().map_err(sql_error)? {
            let d: String = row.get(0).map_err(sql_error)?;
            let m: String = row.get(1).map_err(sql_error)?;
            let doc: String = row.get(2).map_err(sql_error)?;
            let d = DeviceId::new(d).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let m = ModuleId::new(m).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let a: AuthDoc = decode(&doc)?;
            out.push((
                d,
                Some(m),
                IdentityAuth::of(&a.authentication, true, &a.generation_id),
            ));
        }
    }
    tx.finish().map_err(sql_error)?;
    Ok(out)
}

// === Connections and schema ===

fn open_writer(path: &Path) -> Result<Connection, StoreError> {
    let mut conn = sqlite::open_writer(path, NAMES.database).map_err(|e| unavailable(path, e))?;
    match migrate(&mut conn) {
        Ok(Ok(())) => Ok(conn),
        Ok(Err(found)) => Err(StoreError::Incompatible(format!(
            "{} has schema version {found}; this build knows up to {}",
            path.display(),
            MIGRATIONS.len()
        ))),
        Err(e) => Err(unavailable(path, e)),
    }
}

/// Brings the schema to the newest version, in one transaction. `Ok(Err(version))` when the
/// database's schema is newer than this build's.
fn migrate(conn: &mut Connection) -> rusqlite::Result<Result<(), usize>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if let Err(found) = sqlite::migrate(&tx, "schema_version", MIGRATIONS, NAMES.database)? {
        return Ok(Err(found));
    }
    tx.commit().map(Ok)
}

// === Writes ===

/// Runs one op; `false` when its expectation failed (then it changed nothing).
fn run_op(conn: &Connection, op: &Op) -> rusqlite::Result<bool> {
    Ok(match op {
        Op::PutDevice {
            id,
            version,
            status,
            doc,
            expect: None,
        } => {
            conn.prepare_cached(
                "INSERT INTO devices (device_id, version, status, doc) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (device_id) DO NOTHING",
            )?
            .execute(params![id, version, status, doc])?
                == 1
        }
        Op::PutDevice {
            id,
            version,
            status,
            doc,
            expect: Some(expected),
        } => {
            conn.prepare_cached(
                "UPDATE devices SET version = ?2, status = ?3, doc = ?4
                 WHERE device_id = ?1 AND version = ?5",
            )?
            .execute(params![id, version, status, doc, expected])?
                == 1
        }
        Op::DeleteDevice { id, expect: None } => !device_exists(conn, id)?,
        Op::DeleteDevice {
            id,
            expect: Some(expected),
        } => {
            let deleted = conn
                .prepare_cached("DELETE FROM devices WHERE device_id = ?1 AND version = ?2")?
                .execute(params![id, expected])?
                == 1;
            if deleted {
                conn.prepare_cached("DELETE FROM modules WHERE device_id = ?1")?
                    .execute([id])?;
                conn.prepare_cached("DELETE FROM twins WHERE device_id = ?1")?
                    .execute([id])?;
            }
            deleted
        }
        Op::PutModule {
            device_id,
            module_id,
            version,
            doc,
            expect: None,
        } => {
            device_exists(conn, device_id)?
                && conn
                    .prepare_cached(
                        "INSERT INTO modules (device_id, module_id, version, doc)
                         VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT (device_id, module_id) DO NOTHING",
                    )?
                    .execute(params![device_id, module_id, version, doc])?
                    == 1
        }
        Op::PutModule {
            device_id,
            module_id,
            version,
            doc,
            expect: Some(expected),
        } => {
            conn.prepare_cached(
                "UPDATE modules SET version = ?3, doc = ?4
                 WHERE device_id = ?1 AND module_id = ?2 AND version = ?5",
            )?
            .execute(params![device_id, module_id, version, doc, expected])?
                == 1
        }
        Op::DeleteModule {
            device_id,
            module_id,
            expect: None,
        } => !module_exists(conn, device_id, module_id)?,
        Op::DeleteModule {
            device_id,
            module_id,
            expect: Some(expected),
        } => {
            let deleted = conn
                .prepare_cached(
                    "DELETE FROM modules WHERE device_id = ?1 AND module_id = ?2 AND version = ?3",
                )?
                .execute(params![device_id, module_id, expected])?
                == 1;
            if deleted {
                conn.prepare_cached("DELETE FROM twins WHERE device_id = ?1 AND module_id = ?2")?
                    .execute([device_id, module_id])?;
            }
            deleted
        }
        Op::PutTwin {
            device_id,
            module_id,
            version,
            doc,
            expect: None,
        } => {
            let owner_exists = if module_id == DEVICE_TWIN {
                device_exists(conn, device_id)?
            } else {
                module_exists(conn, device_id, module_id)?
            };
            owner_exists
                && conn
                    .prepare_cached(
                        "INSERT INTO twins (device_id, module_id, version, doc)
                         VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT (device_id, module_id) DO NOTHING",
                    )?
                    .execute(params![device_id, module_id, version, doc])?
                    == 1
        }
        Op::PutTwin {
            device_id,
            module_id,
            version,
            doc,
            expect: Some(expected),
        } => {
            // A stored twin always has its identity: deletes take it along.
            conn.prepare_cached(
                "UPDATE twins SET version = ?3, doc = ?4
                 WHERE device_id = ?1 AND module_id = ?2 AND version = ?5",
            )?
            .execute(params![device_id, module_id, version, doc, expected])?
                == 1
        }
    })
}

fn device_exists(conn: &Connection, id: &str) -> rusqlite::Result<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM devices WHERE device_id = ?1")?
        .query_row([id], |_| Ok(()))
        .optional()?
        .is_some())
}

fn module_exists(conn: &Connection, device_id: &str, module_id: &str) -> rusqlite::Result<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM modules WHERE device_id = ?1 AND module_id = ?2")?
        .query_row([device_id, module_id], |_| Ok(()))
        .optional()?
        .is_some())
}

// === Encoding ===

fn encode(change: Change) -> Result<Op, StoreError> {
    Ok(match change {
        Change::PutDevice { device, expect } => Op::PutDevice {
            id: device.device_id.as_str().to_owned(),
            version: to_i64(device.version)?,
            status: device.status.as_str(),
            doc: to_json(&device)?,
            expect: expect_to_sql(expect)?,
        },
        Change::DeleteDevice { id, expect } => Op::DeleteDevice {
            id: id.as_str().to_owned(),
            expect: expect_to_sql(expect)?,
        },
        Change::PutModule { module, expect } => Op::PutModule {
            device_id: module.device_id.as_str().to_owned(),
            module_id: module.module_id.as_str().to_owned(),
            version: to_i64(module.version)?,
            doc: to_json(&module)?,
            expect: expect_to_sql(expect)?,
        },
        Change::DeleteModule {
            device_id,
            module_id,
            expect,
        } => Op::DeleteModule {
            device_id: device_id.as_str().to_owned(),
            module_id: module_id.as_str().to_owned(),
            expect: expect_to_sql(expect)?,
        },
        Change::PutTwin {
            device_id,
            module_id,
            twin,
            expect,
        } => Op::PutTwin {
            device_id: device_id.as_str().to_owned(),
            module_id: module_id
                .as_ref()
                .map_or(DEVICE_TWIN, ModuleId::as_str)
                .to_owned(),
            version: to_i64(twin.version)?,
            doc: to_json(&twin.twin)?,
            expect: expect_to_sql(expect)?,
        },
    })
}

fn expect_to_sql(expect: Expect) -> Result<Option<i64>, StoreError> {
    match expect {
        Expect::Absent => Ok(None),
        Expect::Version(v) => to_i64(v).map(Some),
    }
}

fn to_i64(version: u64) -> Result<i64, StoreError> {
    i64::try_from(version)
        .map_err(|_| StoreError::Corrupt(format!("version {version} does not fit in SQLite")))
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn decode<T: serde::de::DeserializeOwned>(doc: &str) -> Result<T, StoreError> {
    serde_json::from_str(doc).map_err(|e| StoreError::Corrupt(e.to_string()))
}

// === Errors ===

fn sql_error(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn unavailable(path: &Path, e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(format!("{}: {e}", path.display()))
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the registry database is closed".to_owned())
}

fn write_error(e: WriteError) -> StoreError {
    match e {
        WriteError::Conflict { index } => StoreError::Conflict { index },
        WriteError::Unavailable(e) => StoreError::Unavailable(e),
        WriteError::Closed => stopped(),
    }
}
