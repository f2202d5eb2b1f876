//! [`PgRegistryStore`]: the identity registry in PostgreSQL, shared by every hub node.
//!
//! # Schema (component `registry`)
//!
//! The SQLite store's logical schema, with PostgreSQL types:
//!
//! * `devices(device_id PK, version, status, doc JSONB)`
//! * `modules((device_id, module_id) PK, version, doc JSONB)`, `device_id` a foreign key to
//!   `devices` with `ON DELETE CASCADE`: deleting a device deletes its modules in the same
//!   statement.
//! * `twins((device_id, module_id) PK, version, doc JSONB)`: the twins written so far,
//!   `module_id` `''` for a device's own twin, `doc` `ferrohub-twin`'s stored form (its user
//!   sections at `tags`, `properties.desired`, `properties.reported`). `device_id` is a foreign
//!   key to `devices` with `ON DELETE CASCADE`; deleting a module deletes its twin in the same
//!   transaction, and a module's first twin write locks the module row (`FOR KEY SHARE`, as a
//!   foreign key would), so no twin outlives its identity.
//!
//! Ids are `TEXT COLLATE "C"`, so listings come out in byte order whatever the database's
//! locale. `doc` is the identity's serde JSON as `JSONB`, so that queries (the twin documents
//! will live beside it) can reach into it. `version` guards compare-and-set writes exactly as in
//! SQLite: an update is `UPDATE … WHERE device_id = $1 AND version = $n`, an insert is
//! `INSERT … ON CONFLICT DO NOTHING`, and a row count other than one is a conflict.
//!
//! # Change notifications
//!
//! Every `apply` that commits sends, in the same transaction, one `NOTIFY` on
//! [`REGISTRY_CHANNEL`] per change, whose payload is a [`RegistryNotification`] in JSON
//! (device, module, new version or deletion). PostgreSQL delivers notifications only when the
//! transaction commits, so a listener never hears of a change that did not happen. Nodes will
//! `LISTEN` to refresh their identity caches and close the connections of revoked identities.

use std::collections::HashMap;
use std::future::Future;

use serde::{Deserialize, Serialize};
use tokio_postgres::types::Json;

use ferrohub_registry::{
    Change, Device, DeviceStatus, Expect, IdentityAuth, Module, RegistryStatistics, RegistryStore,
    StoreError, StoredTwin, TwinOwner, TwinRow, TwinScan,
};
use ferrohub_types::{DeviceId, ModuleId};

use super::{
    Migrations, PgDatabase, PgError, Step, Want, decode_error, run_steps, sql_error, to_i64, to_u64,
};

/// The channel every registry change is announced on.
pub const REGISTRY_CHANNEL: &str = "ferrohub_registry";

/// The registry's schema; each script brings it one version up.
pub(crate) const MIGRATIONS: Migrations = Migrations {
    component: "registry",
    scripts: &[
        // 1: devices and modules.
        "CREATE TABLE devices (
             device_id TEXT COLLATE \"C\" NOT NULL PRIMARY KEY,
             version   BIGINT NOT NULL,
             status    TEXT NOT NULL CHECK (status IN ('enabled', 'disabled')),
             doc       JSONB NOT NULL
         );
         CREATE INDEX devices_by_status ON devices (status);
         CREATE TABLE modules (
             device_id TEXT COLLATE \"C\" NOT NULL
                       REFERENCES devices (device_id) ON DELETE CASCADE,
             module_id TEXT COLLATE \"C\" NOT NULL,
             version   BIGINT NOT NULL,
             doc       JSONB NOT NULL,
             PRIMARY KEY (device_id, module_id)
         );",
        // 2: twins, beside their identities.
        "CREATE TABLE twins (
             device_id TEXT COLLATE \"C\" NOT NULL
                       REFERENCES devices (device_id) ON DELETE CASCADE,
             module_id TEXT COLLATE \"C\" NOT NULL,
             version   BIGINT NOT NULL,
             doc       JSONB NOT NULL,
             PRIMARY KEY (device_id, module_id)
         );",
    ],
};

/// The `module_id` of a device's own twin in the `twins` table.
const DEVICE_TWIN: &str = "";

/// The payload of a notification on [`REGISTRY_CHANNEL`]: which identity changed and its new
/// version (`None`: it was deleted). Deleting a device announces the device only; its modules
/// went with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryNotification {
    /// The device, or the module's device.
    pub device: String,
    /// The module, for a module identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    /// The identity's new version; `None` when it was deleted.
    pub version: Option<u64>,
}

impl RegistryNotification {
    /// Parses a notification's payload.
    pub fn parse(payload: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(payload)
    }
}

/// A [`RegistryStore`] in PostgreSQL. Cheap to clone; clones share the pool.
#[derive(Debug, Clone)]
pub struct PgRegistryStore {
    db: PgDatabase,
    /// The initial twin's stored form, which queries filter identities without a twin as.
    initial: std::sync::Arc<str>,
}

impl PgRegistryStore {
    /// Migrates the registry's schema (see [`super::migrate`]) and returns the store.
    pub async fn open(db: PgDatabase) -> Result<Self, StoreError> {
        db.migrate(MIGRATIONS).await?;
        Ok(PgRegistryStore {
            db,
            initial: ferrohub_registry::store::query::initial_twin_document().into(),
        })
    }

    /// The pool this store uses.
    pub fn database(&self) -> &PgDatabase {
        &self.db
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

impl RegistryStore for PgRegistryStore {
    fn apply(&self, changes: Vec<Change>) -> impl Future<Output = Result<(), StoreError>> + Send {
        let steps = encode(changes);
        let run = self.db.run(move |mut client| async move {
            let steps = steps?;
            run_steps(&mut client, steps, false).await
        });
        async move { run.await.map_err(StoreError::from) }
    }

    fn device(
        &self,
        id: &DeviceId,
    ) -> impl Future<Output = Result<Option<Device>, StoreError>> + Send {
        let id = id.as_str().to_owned();
        self.read(move |client| async move {
            let stmt = client
                .prepare_cached("SELECT doc FROM devices WHERE device_id = $1")
                .await
                .map_err(sql_error)?;
            let row = client.query_opt(&stmt, &[&id]).await.map_err(sql_error)?;
            row.map(|r| r.try_get::<_, Json<Device>>(0).map(|j| j.0))
                .transpose()
                .map_err(decode_error)
        })
    }

    fn devices_by_id(
        &self,
        ids: &[DeviceId],
    ) -> impl Future<Output = Result<Vec<Option<Device>>, StoreError>> + Send {
        let ids: Vec<String> = ids.iter().map(|id| id.as_str().to_owned()).collect();
        self.read(move |client| async move {
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            let stmt = client
                .prepare_cached("SELECT device_id, doc FROM devices WHERE device_id = ANY($1)")
                .await
                .map_err(sql_error)?;
            let rows = client.query(&stmt, &[&ids]).await.map_err(sql_error)?;
            let mut found = HashMap::with_capacity(rows.len());
            for row in rows {
                let id: String = row.try_get(0).map_err(decode_error)?;
                let doc: Json<Device> = row.try_get(1).map_err(decode_error)?;
                found.insert(id, doc.0);
            }
            Ok(ids.iter().map(|id| found.get(id).cloned()).collect())
        })
    }

    fn devices(
        &self,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Device>, StoreError>> + Send {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |client| async move {
            let stmt = client
                .prepare_cached("SELECT doc FROM devices ORDER BY device_id LIMIT $1")
                .await
                .map_err(sql_error)?;
            let rows = client.query(&stmt, &[&limit]).await.map_err(sql_error)?;
            rows.iter()
                .map(|r| r.try_get::<_, Json<Device>>(0).map(|j| j.0))
                .collect::<Result<_, _>>()
                .map_err(decode_error)
        })
    }

    fn device_twins(
        &self,
        after: Option<&DeviceId>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<(Device, Option<StoredTwin>)>, StoreError>> + Send {
        let after = after.map(|a| a.as_str().to_owned());
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |client| async move {
            let stmt = client
                .prepare_cached(
                    "SELECT d.doc, t.version, t.doc FROM devices d
                     LEFT JOIN twins t ON t.device_id = d.device_id AND t.module_id = ''
                     WHERE $1::text IS NULL OR d.device_id > $1
                     ORDER BY d.device_id LIMIT $2",
                )
                .await
                .map_err(sql_error)?;
            let rows = client
                .query(&stmt, &[&after, &limit])
                .await
                .map_err(sql_error)?;
            rows.iter()
                .map(|r| {
                    let device: Json<Device> = r.try_get(0).map_err(decode_error)?;
                    let version: Option<i64> = r.try_get(1).map_err(decode_error)?;
                    let doc: Option<Json<_>> = r.try_get(2).map_err(decode_error)?;
                    let twin = match (version, doc) {
                        (Some(v), Some(doc)) => Some(StoredTwin {
                            version: to_u64(v)?,
                            twin: doc.0,
                        }),
                        _ => None,
                    };
                    Ok((device.0, twin))
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
        self.read(move |client| async move {
            let stmt = client
                .prepare_cached("SELECT doc FROM modules WHERE device_id = $1 AND module_id = $2")
                .await
                .map_err(sql_error)?;
            let row = client
                .query_opt(&stmt, &[&d, &m])
                .await
                .map_err(sql_error)?;
            row.map(|r| r.try_get::<_, Json<Module>>(0).map(|j| j.0))
                .transpose()
                .map_err(decode_error)
        })
    }

    fn modules(
        &self,
        device_id: &DeviceId,
    ) -> impl Future<Output = Result<Vec<Module>, StoreError>> + Send {
        let d = device_id.as_str().to_owned();
        self.read(move |client| async move {
            let stmt = client
                .prepare_cached("SELECT doc FROM modules WHERE device_id = $1 ORDER BY module_id")
                .await
                .map_err(sql_error)?;
            let rows = client.query(&stmt, &[&d]).await.map_err(sql_error)?;
            rows.iter()
                .map(|r| r.try_get::<_, Json<Module>>(0).map(|j| j.0))
                .collect::<Result<_, _>>()
                .map_err(decode_error)
        })
    }

    fn twin(
        &self,
        device_id: &DeviceId,
        module_id: Option<&ModuleId>,
    ) -> impl Future<Output = Result<Option<StoredTwin>, StoreError>> + Send {
        let d = device_id.as_str().to_owned();
        let m = module_id.map_or(DEVICE_TWIN, ModuleId::as_str).to_owned();
        self.read(move |client| async move {
            let stmt = client
                .prepare_cached(
                    "SELECT version, doc FROM twins WHERE device_id = $1 AND module_id = $2",
                )
                .await
                .map_err(sql_error)?;
            let Some(row) = client
                .query_opt(&stmt, &[&d, &m])
                .await
                .map_err(sql_error)?
            else {
                return Ok(None);
            };
            let version: i64 = row.try_get(0).map_err(decode_error)?;
            let doc: Json<_> = row.try_get(1).map_err(decode_error)?;
            Ok(Some(StoredTwin {
                version: to_u64(version)?,
                twin: doc.0,
            }))
        })
    }

    fn statistics(&self) -> impl Future<Output = Result<RegistryStatistics, StoreError>> + Send {
        self.read(|client| async move {
            let stmt = client
                .prepare_cached("SELECT status, count(*) FROM devices GROUP BY status")
                .await
                .map_err(sql_error)?;
            let rows = client.query(&stmt, &[]).await.map_err(sql_error)?;
            let mut stats = RegistryStatistics::default();
            for row in rows {
                let status: String = row.try_get(0).map_err(decode_error)?;
                let count: i64 = row.try_get(1).map_err(decode_error)?;
                let count = to_u64(count)?;
                match status.parse::<DeviceStatus>() {
                    Ok(DeviceStatus::Enabled) => stats.enabled_device_count += count,
                    Ok(DeviceStatus::Disabled) => stats.disabled_device_count += count,
                    Err(e) => return Err(PgError::Corrupt(e.to_string())),
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
        self.read(|mut client| async move {
            // Devices and modules from one snapshot.
            let tx = client
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await
                .map_err(sql_error)?;
            let mut out = Vec::new();
            for row in tx
                .query("SELECT doc FROM devices", &[])
                .await
                .map_err(sql_error)?
            {
                let d: Json<Device> = row.try_get(0).map_err(decode_error)?;
                let auth = IdentityAuth::from(&d.0);
                out.push((d.0.device_id, None, auth));
            }
            for row in tx
                .query("SELECT doc FROM modules", &[])
                .await
                .map_err(sql_error)?
            {
                let m: Json<Module> = row.try_get(0).map_err(decode_error)?;
                let auth = IdentityAuth::from(&m.0);
                out.push((m.0.device_id, Some(m.0.module_id), auth));
            }
            tx.commit().await.map_err(sql_error)?;
            Ok(out)
        })
    }

    fn query_twins(
        &self,
        scan: TwinScan,
    ) -> impl Future<Output = Result<Vec<TwinRow>, StoreError>> + Send {
        let initial = self.initial.clone();
        self.read(move |client| async move { scan_twins(&client, &scan, &initial).await })
    }
}

// === Writes ===

/// The statements of an `apply`, each guarded as the SQLite store's, then one statement sending
/// every notification.
fn encode(changes: Vec<Change>) -> Result<Vec<Step>, PgError> {
    let mut steps = Vec::with_capacity(changes.len() + 1);
    let mut notes = Vec::with_capacity(changes.len());
    for (index, change) in changes.into_iter().enumerate() {
        let step = |sql, params, want| Step {
            index,
            sql,
            params,
            want,
        };
        match change {
            Change::PutDevice { device, expect } => {
                let id = device.device_id.as_str().to_owned();
                let version = to_i64(device.version)?;
                let status = device.status.as_str();
                notes.push(note(&id, None, Some(device.version))?);
                let doc = json(&device)?;
                steps.push(match expect {
                    Expect::Absent => step(
                        "INSERT INTO devices (device_id, version, status, doc)
                         VALUES ($1, $2, $3, $4) ON CONFLICT (device_id) DO NOTHING",
                        vec![Box::new(id), Box::new(version), Box::new(status), doc],
                        Want::One,
                    ),
                    Expect::Version(expected) => step(
                        "UPDATE devices SET version = $2, status = $3, doc = $4
                         WHERE device_id = $1 AND version = $5",
                        vec![
                            Box::new(id),
                            Box::new(version),
                            Box::new(status),
                            doc,
                            Box::new(to_i64(expected)?),
                        ],
                        Want::One,
                    ),
                });
            }
            Change::DeleteDevice { id, expect } => {
                let id = id.as_str().to_owned();
                steps.push(match expect {
                    Expect::Absent => step(
                        "SELECT 1 FROM devices WHERE device_id = $1",
                        vec![Box::new(id)],
                        Want::Zero,
                    ),
                    Expect::Version(expected) => {
                        notes.push(note(&id, None, None)?);
                        // The modules go with it (ON DELETE CASCADE).
                        step(
                            "DELETE FROM devices WHERE device_id = $1 AND version = $2",
                            vec![Box::new(id), Box::new(to_i64(expected)?)],
                            Want::One,
                        )
                    }
                });
            }
            Change::PutModule { module, expect } => {
                let d = module.device_id.as_str().to_owned();
                let m = module.module_id.as_str().to_owned();
                let version = to_i64(module.version)?;
                notes.push(note(&d, Some(&m), Some(module.version))?);
                let doc = json(&module)?;
                steps.push(match expect {
                    // The device must exist; a delete racing this insert makes the foreign key
                    // fail, which counts as a conflict too.
                    Expect::Absent => step(
                        "INSERT INTO modules (device_id, module_id, version, doc)
                         SELECT $1, $2, $3, $4
                         WHERE EXISTS (SELECT 1 FROM devices WHERE device_id = $1)
                         ON CONFLICT (device_id, module_id) DO NOTHING",
                        vec![Box::new(d), Box::new(m), Box::new(version), doc],
                        Want::One,
                    ),
                    Expect::Version(expected) => step(
                        "UPDATE modules SET version = $3, doc = $4
                         WHERE device_id = $1 AND module_id = $2 AND version = $5",
                        vec![
                            Box::new(d),
                            Box::new(m),
                            Box::new(version),
                            doc,
                            Box::new(to_i64(expected)?),
                        ],
                        Want::One,
                    ),
                });
            }
            Change::DeleteModule {
                device_id,
                module_id,
                expect,
            } => {
                let d = device_id.as_str().to_owned();
                let m = module_id.as_str().to_owned();
                match expect {
                    Expect::Absent => steps.push(step(
                        "SELECT 1 FROM modules WHERE device_id = $1 AND module_id = $2",
                        vec![Box::new(d), Box::new(m)],
                        Want::Zero,
                    )),
                    Expect::Version(expected) => {
                        notes.push(note(&d, Some(&m), None)?);
                        steps.push(step(
                            "DELETE FROM modules
                             WHERE device_id = $1 AND module_id = $2 AND version = $3",
                            vec![
                                Box::new(d.clone()),
                                Box::new(m.clone()),
                                Box::new(to_i64(expected)?),
                            ],
                            Want::One,
                        ));
                        // Its twin goes with it.
                        steps.push(step(
                            "DELETE FROM twins WHERE device_id = $1 AND module_id = $2",
                            vec![Box::new(d), Box::new(m)],
                            Want::Any,
                        ));
                    }
                }
            }
            Change::PutTwin {
                device_id,
                module_id,
                twin,
                expect,
            } => {
                let d = device_id.as_str().to_owned();
                let version = to_i64(twin.version)?;
                let doc = json(&twin.twin)?;
                steps.push(match (expect, module_id) {
                    // A device's first twin write: the foreign key needs the device.
                    (Expect::Absent, None) => step(
                        "INSERT INTO twins (device_id, module_id, version, doc)
                         SELECT $1, '', $2, $3
                         WHERE EXISTS (SELECT 1 FROM devices WHERE device_id = $1)
                         ON CONFLICT (device_id, module_id) DO NOTHING",
                        vec![Box::new(d), Box::new(version), doc],
                        Want::One,
                    ),
                    // A module's first twin write: the module must exist, and stays until
                    // this transaction ends (a concurrent delete waits for it).
                    (Expect::Absent, Some(m)) => step(
                        "INSERT INTO twins (device_id, module_id, version, doc)
                         SELECT $1, $2, $3, $4
                         WHERE EXISTS (SELECT 1 FROM modules
                                       WHERE device_id = $1 AND module_id = $2
                                       FOR KEY SHARE)
                         ON CONFLICT (device_id, module_id) DO NOTHING",
                        vec![
                            Box::new(d),
                            Box::new(m.as_str().to_owned()),
                            Box::new(version),
                            doc,
                        ],
                        Want::One,
                    ),
                    (Expect::Version(expected), m) => step(
                        "UPDATE twins SET version = $3, doc = $4
                         WHERE device_id = $1 AND module_id = $2 AND version = $5",
                        vec![
                            Box::new(d),
                            Box::new(m.as_ref().map_or(DEVICE_TWIN, ModuleId::as_str).to_owned()),
                            Box::new(version),
                            doc,
                            Box::new(to_i64(expected)?),
                        ],
                        Want::One,
                    ),
                });
            }
        }
    }
    if !notes.is_empty() {
        steps.push(Step {
            index: steps.last().map_or(0, |s| s.index),
            sql: "SELECT pg_notify($2, n) FROM unnest($1::text[]) AS n",
            params: vec![Box::new(notes), Box::new(REGISTRY_CHANNEL)],
            want: Want::Any,
        });
    }
    Ok(steps)
}

fn note(device: &str, module: Option<&str>, version: Option<u64>) -> Result<String, PgError> {
    serde_json::to_string(&RegistryNotification {
        device: device.to_owned(),
        module: module.map(str::to_owned),
        version,
    })
    .map_err(|e| PgError::Corrupt(e.to_string()))
}

fn json<T: Serialize>(
    value: &T,
) -> Result<Box<dyn tokio_postgres::types::ToSql + Sync + Send>, PgError> {
    let v = serde_json::to_value(value).map_err(|e| PgError::Corrupt(e.to_string()))?;
    Ok(Box::new(Json(v)))
}

/// One batch of a query's scan: `ferrohub-query`'s pre-filter rendered for `jsonb` and the
/// resume key in SQL, over the identities joined with their twins (the initial twin's
/// document where none is stored), in key order (`COLLATE "C"`, byte order).
async fn scan_twins(
    client: &deadpool_postgres::Object,
    scan: &TwinScan,
    initial: &str,
) -> Result<Vec<TwinRow>, PgError> {
    use ferrohub_query::{Collection, Dialect, SqlParam};
    use tokio_postgres::types::ToSql;

    let modules = match scan.collection {
        Collection::Devices => false,
        Collection::Modules => true,
        Collection::Jobs => return Ok(Vec::new()),
    };
    let table = ferrohub_registry::store::query::twin_table("tdoc");
    let filter = scan.pre_filter(Dialect::Postgres, "tdoc").to_sql(&table, 2);
    let mut params: Vec<SqlParam> = vec![SqlParam::Text(initial.to_owned())];
    params.extend(filter.params);
    let mut conditions = vec![filter.sql];
    if let Some(after) = &scan.after
        && let Some(range) = after.sql_after(Dialect::Postgres, &table, params.len() + 1)
    {
        conditions.push(range.sql);
        params.extend(range.params);
    }
    let limit = params.len() + 1;
    let source = if modules {
        "SELECT m.device_id AS device_id, m.module_id AS module_id, m.doc AS idoc,
                t.version AS tversion, t.doc AS tstored, coalesce(t.doc, $1::text::jsonb) AS tdoc
         FROM modules m LEFT JOIN twins t
           ON t.device_id = m.device_id AND t.module_id = m.module_id"
    } else {
        "SELECT d.device_id AS device_id, ''::text COLLATE \"C\" AS module_id, d.doc AS idoc,
                t.version AS tversion, t.doc AS tstored, coalesce(t.doc, $1::text::jsonb) AS tdoc
         FROM devices d LEFT JOIN twins t
           ON t.device_id = d.device_id AND t.module_id = ''"
    };
    let order = if modules {
        "device_id, module_id"
    } else {
        "device_id"
    };
    let sql = format!(
        "SELECT idoc, tversion, tstored FROM ({source}) q WHERE {} ORDER BY {order} LIMIT ${limit}::int8",
        conditions.join(" AND ")
    );
    let mut values: Vec<Box<dyn ToSql + Sync + Send>> = params
        .into_iter()
        .map(|p| -> Box<dyn ToSql + Sync + Send> {
            match p {
                SqlParam::Text(s) => Box::new(s),
                SqlParam::Integer(i) => Box::new(i),
                SqlParam::Real(f) => Box::new(f),
                SqlParam::Bool(b) => Box::new(b),
                SqlParam::TextArray(a) => Box::new(a),
            }
        })
        .collect();
    values.push(Box::new(i64::try_from(scan.batch()).unwrap_or(i64::MAX)));
    let refs: Vec<&(dyn ToSql + Sync)> = values
        .iter()
        .map(|v| v.as_ref() as &(dyn ToSql + Sync))
        .collect();
    let stmt = client.prepare_cached(&sql).await.map_err(sql_error)?;
    let rows = client.query(&stmt, &refs).await.map_err(sql_error)?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let owner = if modules {
            TwinOwner::Module(row.try_get::<_, Json<Module>>(0).map_err(decode_error)?.0)
        } else {
            TwinOwner::Device(row.try_get::<_, Json<Device>>(0).map_err(decode_error)?.0)
        };
        let version: Option<i64> = row.try_get(1).map_err(decode_error)?;
        let doc: Option<Json<_>> = row.try_get(2).map_err(decode_error)?;
        let twin = match (version, doc) {
            (Some(version), Some(doc)) => Some(StoredTwin {
                version: to_u64(version)?,
                twin: doc.0,
            }),
            _ => None,
        };
        out.push(TwinRow { owner, twin });
    }
    Ok(out)
}
