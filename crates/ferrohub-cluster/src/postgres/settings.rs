//! The values every hub node of a cluster shares (the shared access policies, the development
//! CA), in one PostgreSQL table, written once: the first node to start on an empty database
//! stores its own, every later node reads them (`ferrohub_server::cluster::SharedSettings`).

use ferrohub_server::cluster::{BoxFuture, SharedSettings};

use super::{Migrations, PgDatabase, PgError, decode_error, sql_error};

/// The settings' schema.
pub(crate) const MIGRATIONS: Migrations = Migrations {
    component: "hub",
    scripts: &["CREATE TABLE hub_settings (
             name       TEXT COLLATE \"C\" NOT NULL PRIMARY KEY,
             value      BYTEA NOT NULL,
             created_at TIMESTAMPTZ NOT NULL DEFAULT now()
         );"],
};

/// [`SharedSettings`] in PostgreSQL. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PgSharedSettings {
    db: PgDatabase,
}

impl PgSharedSettings {
    /// Migrates the settings' schema and returns the store.
    pub async fn open(db: PgDatabase) -> Result<Self, PgError> {
        db.migrate(MIGRATIONS).await?;
        Ok(PgSharedSettings { db })
    }
}

impl SharedSettings for PgSharedSettings {
    fn get<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, String>> {
        let name = name.to_owned();
        let op = self.db.run(move |client| async move {
            let row = client
                .query_opt("SELECT value FROM hub_settings WHERE name = $1", &[&name])
                .await
                .map_err(sql_error)?;
            row.map(|r| r.try_get::<_, Vec<u8>>(0).map_err(decode_error))
                .transpose()
        });
        Box::pin(async move { op.await.map_err(|e| e.to_string()) })
    }

    fn put_if_absent<'a>(
        &'a self,
        name: &'a str,
        value: Vec<u8>,
    ) -> BoxFuture<'a, Result<Vec<u8>, String>> {
        let name = name.to_owned();
        let op = self.db.run(move |client| async move {
            // Two statements, so the read sees a row another node committed while the insert
            // waited for it.
            client
                .execute(
                    "INSERT INTO hub_settings (name, value) VALUES ($1, $2)
                     ON CONFLICT (name) DO NOTHING",
                    &[&name, &value],
                )
                .await
                .map_err(sql_error)?;
            let row = client
                .query_one("SELECT value FROM hub_settings WHERE name = $1", &[&name])
                .await
                .map_err(sql_error)?;
            row.try_get::<_, Vec<u8>>(0).map_err(decode_error)
        });
        Box::pin(async move { op.await.map_err(|e| e.to_string()) })
    }
}
