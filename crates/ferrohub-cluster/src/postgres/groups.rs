//! The consumer groups of a cluster and their checkpoints
//! (`ferrohub_server::consumer_groups::GroupDocument`): one JSON document in PostgreSQL with a
//! version for compare-and-set, as small as the embedded hub's `consumer-groups.json` (at most
//! 21 groups, a checkpoint per partition each).

use ferrohub_server::cluster::BoxFuture;
use ferrohub_server::consumer_groups::{GroupDocument, VersionedDocument};

use super::{Migrations, PgDatabase, PgError, decode_error, sql_error, to_i64, to_u64};

/// The document's schema.
pub(crate) const MIGRATIONS: Migrations = Migrations {
    component: "consumer_groups",
    scripts: &["CREATE TABLE consumer_groups (
             id      INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
             version BIGINT NOT NULL,
             doc     BYTEA NOT NULL
         );"],
};

/// [`GroupDocument`] in PostgreSQL. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PgGroupDocument {
    db: PgDatabase,
}

impl PgGroupDocument {
    /// Migrates the document's schema and returns the store.
    pub async fn open(db: PgDatabase) -> Result<Self, PgError> {
        db.migrate(MIGRATIONS).await?;
        Ok(PgGroupDocument { db })
    }
}

impl GroupDocument for PgGroupDocument {
    fn load(&self) -> BoxFuture<'_, Result<Option<VersionedDocument>, String>> {
        let op = self.db.run(|client| async move {
            let row = client
                .query_opt("SELECT version, doc FROM consumer_groups WHERE id = 1", &[])
                .await
                .map_err(sql_error)?;
            match row {
                None => Ok(None),
                Some(r) => {
                    let version = to_u64(r.try_get::<_, i64>(0).map_err(decode_error)?)?;
                    let doc: Vec<u8> = r.try_get(1).map_err(decode_error)?;
                    Ok(Some((version, doc)))
                }
            }
        });
        Box::pin(async move { op.await.map_err(|e| e.to_string()) })
    }

    fn store(&self, expected: Option<u64>, doc: Vec<u8>) -> BoxFuture<'_, Result<bool, String>> {
        let op = self.db.run(move |client| async move {
            let n = match expected {
                None => client
                    .execute(
                        "INSERT INTO consumer_groups (id, version, doc) VALUES (1, 0, $1)
                         ON CONFLICT (id) DO NOTHING",
                        &[&doc],
                    )
                    .await
                    .map_err(sql_error)?,
                Some(v) => {
                    let v = to_i64(v)?;
                    client
                        .execute(
                            "UPDATE consumer_groups SET version = version + 1, doc = $2
                             WHERE id = 1 AND version = $1",
                            &[&v, &doc],
                        )
                        .await
                        .map_err(sql_error)?
                }
            };
            Ok::<bool, PgError>(n == 1)
        });
        Box::pin(async move { op.await.map_err(|e| e.to_string()) })
    }
}
