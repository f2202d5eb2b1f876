//! The MQTT persistent sessions of a cluster (`ferrohub_server::sessions::SessionBackend`) in
//! PostgreSQL: a device that connected with CleanSession=0 finds its subscriptions on whichever
//! node it reconnects to (Microsoft's Python SDK never subscribes again after a reconnect).
//! A session belongs to its device row: deleting the device deletes its sessions and its
//! modules' in the same transaction.

use ferrohub_server::cluster::BoxFuture;
use ferrohub_server::sessions::{SessionBackend, StoredSubscriptions};
use tokio_postgres::types::Json;

use super::{Migrations, PgDatabase, PgError, decode_error, sql_error};

/// The sessions' schema (after the registry's: sessions reference devices).
pub(crate) const MIGRATIONS: Migrations = Migrations {
    component: "sessions",
    scripts: &["CREATE TABLE mqtt_sessions (
             client_id     TEXT COLLATE \"C\" NOT NULL PRIMARY KEY,
             device_id     TEXT COLLATE \"C\" NOT NULL
                           REFERENCES devices (device_id) ON DELETE CASCADE,
             subscriptions JSONB NOT NULL
         );
         CREATE INDEX mqtt_sessions_by_device ON mqtt_sessions (device_id);"],
};

/// [`SessionBackend`] in PostgreSQL. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PgSessionStore {
    db: PgDatabase,
}

impl PgSessionStore {
    /// Migrates the sessions' schema and returns the store. The registry's schema must be
    /// there first ([`super::PgRegistryStore::open`]).
    pub async fn open(db: PgDatabase) -> Result<Self, PgError> {
        db.migrate(MIGRATIONS).await?;
        Ok(PgSessionStore { db })
    }
}

/// The device of a client id (`device` or `device/module`).
fn device_of(client_id: &str) -> &str {
    client_id.split('/').next().unwrap_or(client_id)
}

impl SessionBackend for PgSessionStore {
    fn load<'a>(
        &'a self,
        client_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredSubscriptions>, String>> {
        let cid = client_id.to_owned();
        let op = self.db.run(move |client| async move {
            let row = client
                .query_opt(
                    "SELECT subscriptions FROM mqtt_sessions WHERE client_id = $1",
                    &[&cid],
                )
                .await
                .map_err(sql_error)?;
            row.map(|r| {
                r.try_get::<_, Json<StoredSubscriptions>>(0)
                    .map(|j| j.0)
                    .map_err(decode_error)
            })
            .transpose()
        });
        Box::pin(async move { op.await.map_err(|e| e.to_string()) })
    }

    fn save<'a>(
        &'a self,
        client_id: &'a str,
        subscriptions: StoredSubscriptions,
    ) -> BoxFuture<'a, Result<(), String>> {
        let cid = client_id.to_owned();
        let op = self.db.run(move |client| async move {
            let device = device_of(&cid).to_owned();
            client
                .execute(
                    "INSERT INTO mqtt_sessions (client_id, device_id, subscriptions)
                     VALUES ($1, $2, $3)
                     ON CONFLICT (client_id) DO UPDATE SET subscriptions = excluded.subscriptions",
                    &[&cid, &device, &Json(&subscriptions)],
                )
                .await
                .map_err(sql_error)?;
            Ok::<(), PgError>(())
        });
        Box::pin(async move { op.await.map_err(|e| e.to_string()) })
    }

    fn delete<'a>(&'a self, client_id: &'a str) -> BoxFuture<'a, Result<(), String>> {
        let cid = client_id.to_owned();
        let op = self.db.run(move |client| async move {
            client
                .execute("DELETE FROM mqtt_sessions WHERE client_id = $1", &[&cid])
                .await
                .map_err(sql_error)?;
            Ok::<(), PgError>(())
        });
        Box::pin(async move { op.await.map_err(|e| e.to_string()) })
    }

    fn delete_device<'a>(&'a self, device: &'a str) -> BoxFuture<'a, Result<(), String>> {
        let device = device.to_owned();
        let op = self.db.run(move |client| async move {
            client
                .execute("DELETE FROM mqtt_sessions WHERE device_id = $1", &[&device])
                .await
                .map_err(sql_error)?;
            Ok::<(), PgError>(())
        });
        Box::pin(async move { op.await.map_err(|e| e.to_string()) })
    }
}
