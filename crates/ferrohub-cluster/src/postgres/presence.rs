//! Presence every hub node shows the same (`ferrohub_server::presence::PresenceStore`):
//! `connectionState`, `connectionStateUpdatedTime` and `lastActivityTime` of every identity,
//! and which nodes are alive.
//!
//! # Schema (component `presence`)
//!
//! * `presence`: one row per identity (`module_id` is `''` for a device): the node that holds or
//!   held its connection, whether it is connected, when that last changed and when it was last
//!   active (Unix microseconds).
//! * `presence_nodes`: each node's last heartbeat. A connection on a node whose heartbeat is
//!   older than [`NODE_TTL`] reads as disconnected: a node killed without a word does not leave
//!   its devices connected forever.
//!
//! # Races between nodes
//!
//! A write of a connect (or of a connect and its disconnect, coalesced) applies only if it is
//! not older than the stored state, whichever node wrote that; a disconnect alone applies only
//! to the node's own connection, so an older connection closing late on one node never hides a
//! newer one on another. Activity only ever moves `last_activity` forward. Each batch is
//! written in key order, so concurrent batches of several nodes cannot deadlock.

use std::time::Duration;

use chrono::{DateTime, Utc};
use ferrohub_server::cluster::BoxFuture;
use ferrohub_server::presence::{PresenceKey, PresenceStore, PresenceUpdate, StoredPresence};

use super::{Migrations, PgDatabase, PgError, decode_error, sql_error};

/// A node whose heartbeat is older than this is taken for dead.
pub const NODE_TTL: Duration = Duration::from_secs(20);

pub(crate) const MIGRATIONS: Migrations = Migrations {
    component: "presence",
    scripts: &["CREATE TABLE presence (
             device_id     TEXT COLLATE \"C\" NOT NULL,
             module_id     TEXT COLLATE \"C\" NOT NULL DEFAULT '',
             node          TEXT,
             connected     BOOLEAN NOT NULL DEFAULT false,
             state_at      BIGINT,
             last_activity BIGINT NOT NULL,
             PRIMARY KEY (device_id, module_id)
         );
         CREATE INDEX presence_connected ON presence (node) WHERE connected;
         CREATE TABLE presence_nodes (
             node    TEXT COLLATE \"C\" NOT NULL PRIMARY KEY,
             seen_at TIMESTAMPTZ NOT NULL
         );"],
};

/// [`PresenceStore`] in PostgreSQL, for one node. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PgPresenceStore {
    db: PgDatabase,
    node: String,
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn time(us: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_micros(us).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

impl PgPresenceStore {
    /// Migrates the schema, records `node` alive, and ends what an earlier run of a node of
    /// the same name left connected (its connections ended with it).
    pub async fn open(db: PgDatabase, node: &str) -> Result<Self, PgError> {
        db.migrate(MIGRATIONS).await?;
        let store = PgPresenceStore {
            db,
            node: node.to_owned(),
        };
        let own = store.node.clone();
        let now = micros(Utc::now());
        store
            .db
            .run(move |client| async move {
                client
                    .execute(
                        "UPDATE presence SET connected = false, state_at = $2
                         WHERE node = $1 AND connected",
                        &[&own, &now],
                    )
                    .await
                    .map_err(sql_error)
            })
            .await?;
        store.beat().await?;
        Ok(store)
    }

    async fn beat(&self) -> Result<(), PgError> {
        let node = self.node.clone();
        self.db
            .run(move |client| async move {
                client
                    .execute(
                        "INSERT INTO presence_nodes (node, seen_at) VALUES ($1, now())
                         ON CONFLICT (node) DO UPDATE SET seen_at = now()",
                        &[&node],
                    )
                    .await
                    .map_err(sql_error)
                    .map(drop)
            })
            .await
    }

    /// Writes `updates`; see the module documentation for what applies.
    pub async fn write_updates(&self, mut updates: Vec<PresenceUpdate>) -> Result<(), PgError> {
        updates.sort_by(|a, b| a.key.cmp(&b.key));
        let mut claims = Columns::default();
        let mut releases = Columns::default();
        let mut activity = Columns::default();
        for u in &updates {
            let (device, module) = (&u.key.0, u.key.1.clone().unwrap_or_default());
            activity.push(device, &module, "", false, 0, micros(u.last_activity));
            if let Some(s) = &u.state {
                let target = if s.claims { &mut claims } else { &mut releases };
                target.push(
                    device,
                    &module,
                    &s.node,
                    s.connected,
                    micros(s.at),
                    micros(u.last_activity),
                );
            }
        }
        self.db
            .run(move |client| async move {
                if !claims.devices.is_empty() {
                    client
                        .execute(
                            "INSERT INTO presence AS p
                                 (device_id, module_id, node, connected, state_at, last_activity)
                             SELECT * FROM unnest($1::text[], $2::text[], $3::text[],
                                                  $4::bool[], $5::int8[], $6::int8[])
                             ON CONFLICT (device_id, module_id) DO UPDATE SET
                                 node = EXCLUDED.node,
                                 connected = EXCLUDED.connected,
                                 state_at = EXCLUDED.state_at,
                                 last_activity = GREATEST(p.last_activity, EXCLUDED.last_activity)
                             WHERE p.state_at IS NULL OR p.state_at <= EXCLUDED.state_at",
                            &[
                                &claims.devices,
                                &claims.modules,
                                &claims.nodes,
                                &claims.connected,
                                &claims.at,
                                &claims.activity,
                            ],
                        )
                        .await
                        .map_err(sql_error)?;
                }
                if !releases.devices.is_empty() {
                    client
                        .execute(
                            "UPDATE presence AS p SET
                                 connected = u.connected,
                                 state_at = u.at,
                                 last_activity = GREATEST(p.last_activity, u.activity)
                             FROM unnest($1::text[], $2::text[], $3::text[], $4::bool[],
                                         $5::int8[], $6::int8[])
                                  AS u(device_id, module_id, node, connected, at, activity)
                             WHERE p.device_id = u.device_id AND p.module_id = u.module_id
                               AND p.node = u.node
                               AND (p.state_at IS NULL OR p.state_at <= u.at)",
                            &[
                                &releases.devices,
                                &releases.modules,
                                &releases.nodes,
                                &releases.connected,
                                &releases.at,
                                &releases.activity,
                            ],
                        )
                        .await
                        .map_err(sql_error)?;
                }
                client
                    .execute(
                        "INSERT INTO presence AS p (device_id, module_id, last_activity)
                         SELECT * FROM unnest($1::text[], $2::text[], $3::int8[])
                         ON CONFLICT (device_id, module_id) DO UPDATE SET
                             last_activity = GREATEST(p.last_activity, EXCLUDED.last_activity)
                         WHERE p.last_activity < EXCLUDED.last_activity",
                        &[&activity.devices, &activity.modules, &activity.activity],
                    )
                    .await
                    .map_err(sql_error)?;
                Ok(())
            })
            .await
    }

    /// The presence of each of `keys`, in order.
    pub async fn read_keys(
        &self,
        keys: Vec<PresenceKey>,
    ) -> Result<Vec<Option<StoredPresence>>, PgError> {
        let n = keys.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        let (devices, modules): (Vec<String>, Vec<String>) = keys
            .into_iter()
            .map(|(d, m)| (d, m.unwrap_or_default()))
            .unzip();
        let ttl = NODE_TTL.as_secs_f64();
        self.db
            .run(move |client| async move {
                let rows = client
                    .query(
                        "SELECT u.i,
                                COALESCE(p.connected AND n.seen_at > now() - make_interval(secs => $3), false),
                                p.state_at, p.last_activity
                         FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS u(device_id, module_id, i)
                         JOIN presence p ON p.device_id = u.device_id AND p.module_id = u.module_id
                         LEFT JOIN presence_nodes n ON n.node = p.node",
                        &[&devices, &modules, &ttl],
                    )
                    .await
                    .map_err(sql_error)?;
                let mut out = vec![None; n];
                for row in rows {
                    let i: i64 = row.try_get(0).map_err(decode_error)?;
                    let connected: bool = row.try_get(1).map_err(decode_error)?;
                    let state_at: Option<i64> = row.try_get(2).map_err(decode_error)?;
                    let last_activity: i64 = row.try_get(3).map_err(decode_error)?;
                    let slot = usize::try_from(i - 1)
                        .ok()
                        .and_then(|i| out.get_mut(i))
                        .ok_or_else(|| PgError::Corrupt(format!("row {i} of {n}")))?;
                    *slot = Some(StoredPresence {
                        connected,
                        state_updated: state_at.map(time),
                        last_activity: time(last_activity),
                    });
                }
                Ok(out)
            })
            .await
    }
}

/// The columns of a batch, for `unnest`.
#[derive(Default)]
struct Columns {
    devices: Vec<String>,
    modules: Vec<String>,
    nodes: Vec<String>,
    connected: Vec<bool>,
    at: Vec<i64>,
    activity: Vec<i64>,
}

impl Columns {
    fn push(
        &mut self,
        device: &str,
        module: &str,
        node: &str,
        connected: bool,
        at: i64,
        activity: i64,
    ) {
        self.devices.push(device.to_owned());
        self.modules.push(module.to_owned());
        self.nodes.push(node.to_owned());
        self.connected.push(connected);
        self.at.push(at);
        self.activity.push(activity);
    }
}

impl PresenceStore for PgPresenceStore {
    fn write(&self, updates: Vec<PresenceUpdate>) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move { self.write_updates(updates).await.map_err(|e| e.to_string()) })
    }

    fn read(
        &self,
        keys: Vec<PresenceKey>,
    ) -> BoxFuture<'_, Result<Vec<Option<StoredPresence>>, String>> {
        Box::pin(async move { self.read_keys(keys).await.map_err(|e| e.to_string()) })
    }

    fn heartbeat(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move { self.beat().await.map_err(|e| e.to_string()) })
    }

    fn forget(&self, device: String) -> BoxFuture<'_, Result<(), String>> {
        let op = self.db.run(move |client| async move {
            client
                .execute("DELETE FROM presence WHERE device_id = $1", &[&device])
                .await
                .map_err(sql_error)
                .map(drop)
        });
        Box::pin(async move { op.await.map_err(|e| e.to_string()) })
    }

    fn connected_devices(&self) -> BoxFuture<'_, Result<u64, String>> {
        let ttl = NODE_TTL.as_secs_f64();
        let op = self.db.run(move |client| async move {
            let row = client
                .query_one(
                    "SELECT count(*) FROM presence p JOIN presence_nodes n ON n.node = p.node
                     WHERE p.module_id = '' AND p.connected
                       AND n.seen_at > now() - make_interval(secs => $1)",
                    &[&ttl],
                )
                .await
                .map_err(sql_error)?;
            let n: i64 = row.try_get(0).map_err(decode_error)?;
            Ok(u64::try_from(n).unwrap_or(0))
        });
        Box::pin(async move { op.await.map_err(|e| e.to_string()) })
    }
}
