//! [`PgQueueStore`]: cloud-to-device queues and feedback in PostgreSQL, shared by every node.
//!
//! # Schema (component `c2d`)
//!
//! The SQLite store's rows, with PostgreSQL types (times are `BIGINT` microseconds since the
//! Unix epoch, as there):
//!
//! * `c2d_sequences(device_id PK, last_seq)`: each device's last sequence number, kept when its
//!   queue empties so numbers are never reused.
//! * `c2d_messages((device_id, seq) PK, …)`: one row per queued message; the mutable state
//!   (`delivery_count`, `deliveries`, `lock_token`, `locked_until`) in the columns the guarded
//!   updates compare, application properties as a `JSONB` array of `[name, value]` pairs, the
//!   body as `BYTEA`. Indexed by expiry time.
//! * `c2d_feedback(id identity PK, …)`: the feedback queue; a batch lock is the `lock_token`
//!   and `locked_until` of the records it holds.
//!
//! # Deleting a device purges its queue
//!
//! When the database also holds the registry (the `devices` table: open the registry store
//! first, as in the embedded mode), [`PgQueueStore::open`] links the three tables to it with
//! foreign keys `ON DELETE CASCADE`: deleting a device deletes its messages, counter and
//! feedback in the same statement, so in the same transaction, with no feedback. Queue rows of
//! devices that are not in the registry are deleted when the link is made (no device, no
//! queue). Once linked, a write for a device that does not exist (deleted meanwhile) fails as a
//! conflict. Without the registry (a database of queues only, as in the store's own tests)
//! nothing is linked and [`QueueChange::DeleteDevice`] does the purging.
//!
//! # Wake-ups
//!
//! Every `apply` that inserts messages sends, in the same transaction, `NOTIFY` on
//! [`C2D_CHANNEL`] with each such device's id as payload, delivered on commit only: a node that
//! `LISTEN`s can hand a new message to the device's connection at once instead of polling.

use std::collections::BTreeSet;
use std::future::Future;

use chrono::{DateTime, Utc};
use tokio_postgres::Row;
use tokio_postgres::types::Json;

use ferrohub_c2d::StoreError;
use ferrohub_c2d::model::{
    AckMode, FeedbackRecord, FeedbackStatus, OutgoingMessage, QueuedMessage,
};
use ferrohub_c2d::store::{
    DeviceQueue, Expect, FeedbackState, MessageHead, MessageState, QueueChange, QueueStore,
    StoredFeedback,
};
use ferrohub_types::DeviceId;

use super::{
    Migrations, PgDatabase, PgError, Step, Want, decode_error, migrate, run_steps, sql_error,
    to_i64, to_u64,
};

/// The channel a device's new messages are announced on (payload: the device id).
pub const C2D_CHANNEL: &str = "ferrohub_c2d";

/// The queues' schema; each script brings it one version up.
const MIGRATIONS: Migrations = Migrations {
    component: "c2d",
    scripts: &[
        // 1: queues, sequence counters, feedback.
        "CREATE TABLE c2d_sequences (
             device_id TEXT COLLATE \"C\" NOT NULL PRIMARY KEY,
             last_seq  BIGINT NOT NULL
         );
         CREATE TABLE c2d_messages (
             device_id        TEXT COLLATE \"C\" NOT NULL,
             seq              BIGINT NOT NULL,
             enqueued_time    BIGINT NOT NULL,
             expiry_time      BIGINT NOT NULL,
             delivery_count   BIGINT NOT NULL,
             deliveries       BIGINT NOT NULL,
             lock_token       TEXT,
             locked_until     BIGINT,
             generation_id    TEXT NOT NULL,
             message_id       TEXT,
             correlation_id   TEXT,
             user_id          TEXT,
             content_type     TEXT,
             content_encoding TEXT,
             expiry           BIGINT,
             ack              TEXT NOT NULL CHECK (ack IN ('none', 'positive', 'negative', 'full')),
             properties       JSONB NOT NULL,
             body             BYTEA NOT NULL,
             PRIMARY KEY (device_id, seq)
         );
         CREATE INDEX c2d_messages_by_expiry ON c2d_messages (expiry_time);
         CREATE TABLE c2d_feedback (
             id                  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
             device_id           TEXT COLLATE \"C\" NOT NULL,
             generation_id       TEXT NOT NULL,
             original_message_id TEXT NOT NULL,
             enqueued_time       BIGINT NOT NULL,
             status              TEXT NOT NULL,
             description         TEXT NOT NULL,
             expiry_time         BIGINT NOT NULL,
             deliveries          BIGINT NOT NULL,
             lock_token          TEXT,
             locked_until        BIGINT
         );
         CREATE INDEX c2d_feedback_by_device ON c2d_feedback (device_id);
         CREATE INDEX c2d_feedback_by_lock ON c2d_feedback (lock_token)
             WHERE lock_token IS NOT NULL;
         CREATE INDEX c2d_feedback_by_expiry ON c2d_feedback (expiry_time);",
    ],
};

/// The queue tables and the names of their foreign keys to `devices`.
const LINKS: [(&str, &str); 3] = [
    ("c2d_sequences", "c2d_sequences_device_fk"),
    ("c2d_messages", "c2d_messages_device_fk"),
    ("c2d_feedback", "c2d_feedback_device_fk"),
];

const HEAD_COLUMNS: &str = "seq, enqueued_time, expiry_time, delivery_count, deliveries, \
     lock_token, locked_until, generation_id, message_id, ack";

const FEEDBACK_COLUMNS: &str = "id, device_id, generation_id, original_message_id, \
     enqueued_time, status, description, expiry_time, deliveries, lock_token, locked_until";

/// A [`QueueStore`] in PostgreSQL. Cheap to clone; clones share the pool.
#[derive(Debug, Clone)]
pub struct PgQueueStore {
    db: PgDatabase,
}

impl PgQueueStore {
    /// Migrates the queues' schema, links it to the registry's `devices` table when the
    /// database has one (see the module documentation), and returns the store.
    pub async fn open(db: PgDatabase) -> Result<Self, StoreError> {
        db.run(|mut client| async move {
            let tx = client.transaction().await.map_err(sql_error)?;
            migrate(&tx, &MIGRATIONS).await?;
            link_registry(&tx).await?;
            tx.commit().await.map_err(sql_error)
        })
        .await?;
        Ok(PgQueueStore { db })
    }

    /// The pool this store uses.
    pub fn database(&self) -> &PgDatabase {
        &self.db
    }

    fn submit(
        &self,
        changes: Vec<QueueChange>,
        relaxed: bool,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        let steps = encode(changes);
        let run = self
            .db
            .run(move |mut client| async move { run_steps(&mut client, steps?, relaxed).await });
        async move { run.await.map_err(StoreError::from) }
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

/// Adds the foreign keys to `devices` if that table exists and they do not (in the migration's
/// transaction, under its lock), after removing the rows of devices the registry does not have.
async fn link_registry(tx: &deadpool_postgres::Transaction<'_>) -> Result<(), PgError> {
    let has_devices = tx
        .query_opt(
            "SELECT 1 FROM information_schema.tables
             WHERE table_schema = current_schema() AND table_name = 'devices'",
            &[],
        )
        .await
        .map_err(sql_error)?
        .is_some();
    if !has_devices {
        return Ok(());
    }
    for (table, constraint) in LINKS {
        let linked = tx
            .query_opt(
                "SELECT 1 FROM information_schema.table_constraints
                 WHERE table_schema = current_schema() AND constraint_name = $1",
                &[&constraint],
            )
            .await
            .map_err(sql_error)?
            .is_some();
        if linked {
            continue;
        }
        let orphans = tx
            .execute(
                &format!(
                    "DELETE FROM {table} q
                     WHERE NOT EXISTS (SELECT 1 FROM devices d WHERE d.device_id = q.device_id)"
                ),
                &[],
            )
            .await
            .map_err(sql_error)?;
        if orphans > 0 {
            tracing::warn!(
                table,
                orphans,
                "removed queue rows of devices not in the registry"
            );
        }
        tx.batch_execute(&format!(
            "ALTER TABLE {table} ADD CONSTRAINT {constraint}
             FOREIGN KEY (device_id) REFERENCES devices (device_id) ON DELETE CASCADE"
        ))
        .await
        .map_err(sql_error)?;
        tracing::info!(table, "cloud-to-device queue linked to the registry");
    }
    Ok(())
}

impl QueueStore for PgQueueStore {
    fn apply(
        &self,
        changes: Vec<QueueChange>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.submit(changes, false)
    }

    fn apply_relaxed(
        &self,
        changes: Vec<QueueChange>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.submit(changes, true)
    }

    fn queue(
        &self,
        device: &DeviceId,
    ) -> impl Future<Output = Result<DeviceQueue, StoreError>> + Send {
        let device = device.as_str().to_owned();
        self.read(move |mut client| async move {
            // The counter and the heads from one snapshot.
            let tx = client
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await
                .map_err(sql_error)?;
            let last = tx
                .prepare_cached("SELECT last_seq FROM c2d_sequences WHERE device_id = $1")
                .await
                .map_err(sql_error)?;
            let heads = tx
                .prepare_cached(&format!(
                    "SELECT {HEAD_COLUMNS} FROM c2d_messages WHERE device_id = $1 ORDER BY seq"
                ))
                .await
                .map_err(sql_error)?;
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&device];
            let (last, heads) =
                futures_util::try_join!(tx.query_opt(&last, &params), tx.query(&heads, &params))
                    .map_err(sql_error)?;
            tx.commit().await.map_err(sql_error)?;
            let last_sequence_number = match last {
                Some(row) => to_u64(row.try_get(0).map_err(decode_error)?)?,
                None => 0,
            };
            Ok(DeviceQueue {
                last_sequence_number,
                messages: heads.iter().map(decode_head).collect::<Result<_, _>>()?,
            })
        })
    }

    fn message(
        &self,
        device: &DeviceId,
        sequence_number: u64,
    ) -> impl Future<Output = Result<Option<QueuedMessage>, StoreError>> + Send {
        let device = device.clone();
        self.read(move |client| async move {
            let seq = to_i64(sequence_number)?;
            let stmt = client
                .prepare_cached(
                    "SELECT enqueued_time, expiry_time, delivery_count, deliveries, lock_token,
                            locked_until, generation_id, message_id, correlation_id, user_id,
                            content_type, content_encoding, expiry, ack, properties, body
                     FROM c2d_messages WHERE device_id = $1 AND seq = $2",
                )
                .await
                .map_err(sql_error)?;
            let row = client
                .query_opt(&stmt, &[&device.as_str(), &seq])
                .await
                .map_err(sql_error)?;
            row.map(|r| decode_message(&r, device, sequence_number))
                .transpose()
        })
    }

    fn devices_with_messages(
        &self,
    ) -> impl Future<Output = Result<Vec<DeviceId>, StoreError>> + Send {
        self.read(|client| async move {
            let stmt = client
                .prepare_cached("SELECT DISTINCT device_id FROM c2d_messages ORDER BY device_id")
                .await
                .map_err(sql_error)?;
            device_list(client.query(&stmt, &[]).await.map_err(sql_error)?)
        })
    }

    fn devices_with_expired_messages(
        &self,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<DeviceId>, StoreError>> + Send {
        let now = now.timestamp_micros();
        self.read(move |client| async move {
            let stmt = client
                .prepare_cached(
                    "SELECT DISTINCT device_id FROM c2d_messages WHERE expiry_time <= $1
                     ORDER BY device_id",
                )
                .await
                .map_err(sql_error)?;
            device_list(client.query(&stmt, &[&now]).await.map_err(sql_error)?)
        })
    }

    fn available_feedback(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<StoredFeedback>, StoreError>> + Send {
        let now = now.timestamp_micros();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |client| async move {
            let stmt = client
                .prepare_cached(&format!(
                    "SELECT {FEEDBACK_COLUMNS} FROM c2d_feedback
                     WHERE expiry_time > $1
                       AND NOT (lock_token IS NOT NULL AND locked_until IS NOT NULL
                                AND locked_until > $1)
                     ORDER BY id LIMIT $2"
                ))
                .await
                .map_err(sql_error)?;
            feedback_list(
                client
                    .query(&stmt, &[&now, &limit])
                    .await
                    .map_err(sql_error)?,
            )
        })
    }

    fn expired_feedback(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<StoredFeedback>, StoreError>> + Send {
        let now = now.timestamp_micros();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |client| async move {
            let stmt = client
                .prepare_cached(&format!(
                    "SELECT {FEEDBACK_COLUMNS} FROM c2d_feedback
                     WHERE expiry_time <= $1
                       AND NOT (lock_token IS NOT NULL AND locked_until IS NOT NULL
                                AND locked_until > $1)
                     ORDER BY id LIMIT $2"
                ))
                .await
                .map_err(sql_error)?;
            feedback_list(
                client
                    .query(&stmt, &[&now, &limit])
                    .await
                    .map_err(sql_error)?,
            )
        })
    }

    fn locked_feedback(
        &self,
        lock_token: &str,
    ) -> impl Future<Output = Result<Vec<StoredFeedback>, StoreError>> + Send {
        let token = lock_token.to_owned();
        self.read(move |client| async move {
            let stmt = client
                .prepare_cached(&format!(
                    "SELECT {FEEDBACK_COLUMNS} FROM c2d_feedback WHERE lock_token = $1 ORDER BY id"
                ))
                .await
                .map_err(sql_error)?;
            feedback_list(client.query(&stmt, &[&token]).await.map_err(sql_error)?)
        })
    }
}

// === Reads ===

fn decode_head(r: &Row) -> Result<MessageHead, PgError> {
    let get = |e| decode_error(e);
    Ok(MessageHead {
        sequence_number: to_u64(r.try_get(0).map_err(get)?)?,
        enqueued_time: from_micros(r.try_get(1).map_err(get)?)?,
        expiry_time: from_micros(r.try_get(2).map_err(get)?)?,
        state: MessageState {
            delivery_count: to_u32(r.try_get(3).map_err(get)?)?,
            deliveries: to_u32(r.try_get(4).map_err(get)?)?,
            lock_token: r.try_get(5).map_err(get)?,
            locked_until: r
                .try_get::<_, Option<i64>>(6)
                .map_err(get)?
                .map(from_micros)
                .transpose()?,
        },
        device_generation_id: r.try_get(7).map_err(get)?,
        message_id: r.try_get(8).map_err(get)?,
        ack: parse_ack(r.try_get(9).map_err(get)?)?,
    })
}

fn decode_message(
    r: &Row,
    device_id: DeviceId,
    sequence_number: u64,
) -> Result<QueuedMessage, PgError> {
    let get = |e| decode_error(e);
    let properties: Json<Vec<(String, String)>> = r.try_get(14).map_err(get)?;
    Ok(QueuedMessage {
        device_id,
        sequence_number,
        enqueued_time: from_micros(r.try_get(0).map_err(get)?)?,
        expiry_time: from_micros(r.try_get(1).map_err(get)?)?,
        delivery_count: to_u32(r.try_get(2).map_err(get)?)?,
        deliveries: to_u32(r.try_get(3).map_err(get)?)?,
        lock_token: r.try_get(4).map_err(get)?,
        locked_until: r
            .try_get::<_, Option<i64>>(5)
            .map_err(get)?
            .map(from_micros)
            .transpose()?,
        device_generation_id: r.try_get(6).map_err(get)?,
        message: OutgoingMessage {
            message_id: r.try_get(7).map_err(get)?,
            correlation_id: r.try_get(8).map_err(get)?,
            user_id: r.try_get(9).map_err(get)?,
            content_type: r.try_get(10).map_err(get)?,
            content_encoding: r.try_get(11).map_err(get)?,
            expiry: r
                .try_get::<_, Option<i64>>(12)
                .map_err(get)?
                .map(from_micros)
                .transpose()?,
            ack: parse_ack(r.try_get(13).map_err(get)?)?,
            properties: properties.0,
            body: r.try_get(15).map_err(get)?,
        },
    })
}

fn device_list(rows: Vec<Row>) -> Result<Vec<DeviceId>, PgError> {
    rows.iter()
        .map(|r| {
            let id: String = r.try_get(0).map_err(decode_error)?;
            DeviceId::new(id).map_err(|e| PgError::Corrupt(e.to_string()))
        })
        .collect()
}

fn feedback_list(rows: Vec<Row>) -> Result<Vec<StoredFeedback>, PgError> {
    rows.iter()
        .map(|r| {
            let get = |e| decode_error(e);
            let status: String = r.try_get(5).map_err(get)?;
            Ok(StoredFeedback {
                id: to_u64(r.try_get(0).map_err(get)?)?,
                record: FeedbackRecord {
                    device_id: r.try_get(1).map_err(get)?,
                    device_generation_id: r.try_get(2).map_err(get)?,
                    original_message_id: r.try_get(3).map_err(get)?,
                    enqueued_time_utc: from_micros(r.try_get(4).map_err(get)?)?,
                    status_code: FeedbackStatus::from_name(&status).ok_or_else(|| {
                        PgError::Corrupt(format!("unknown feedback status {status:?}"))
                    })?,
                    description: r.try_get(6).map_err(get)?,
                },
                expiry_time: from_micros(r.try_get(7).map_err(get)?)?,
                state: FeedbackState {
                    deliveries: to_u32(r.try_get(8).map_err(get)?)?,
                    lock_token: r.try_get(9).map_err(get)?,
                    locked_until: r
                        .try_get::<_, Option<i64>>(10)
                        .map_err(get)?
                        .map(from_micros)
                        .transpose()?,
                },
            })
        })
        .collect()
}

// === Writes ===

/// A boxed statement parameter.
type Param = Box<dyn tokio_postgres::types::ToSql + Sync + Send>;

/// The statements of an `apply`, each guarded as the SQLite store's, then one statement waking
/// the devices that got messages.
fn encode(changes: Vec<QueueChange>) -> Result<Vec<Step>, PgError> {
    let mut steps = Vec::with_capacity(changes.len() + 1);
    let mut woken = BTreeSet::new();
    for (index, change) in changes.into_iter().enumerate() {
        let mut step = |sql, params: Vec<Param>, want| {
            steps.push(Step {
                index,
                sql,
                params,
                want,
            })
        };
        match change {
            QueueChange::Insert {
                message: m,
                expect_last_sequence_number: expect,
            } => {
                let device = m.device_id.as_str().to_owned();
                let seq = to_i64(m.sequence_number)?;
                if m.sequence_number <= expect {
                    // A number at or below the counter never goes in.
                    step("SELECT 1 WHERE false", vec![], Want::One);
                    continue;
                }
                if expect == 0 {
                    step(
                        "INSERT INTO c2d_sequences (device_id, last_seq) VALUES ($1, $2)
                         ON CONFLICT (device_id) DO UPDATE SET last_seq = EXCLUDED.last_seq
                         WHERE c2d_sequences.last_seq = 0",
                        vec![Box::new(device.clone()), Box::new(seq)],
                        Want::One,
                    );
                } else {
                    step(
                        "UPDATE c2d_sequences SET last_seq = $2
                         WHERE device_id = $1 AND last_seq = $3",
                        vec![
                            Box::new(device.clone()),
                            Box::new(seq),
                            Box::new(to_i64(expect)?),
                        ],
                        Want::One,
                    );
                }
                let properties = serde_json::to_value(&m.message.properties)
                    .map_err(|e| PgError::Corrupt(e.to_string()))?;
                step(
                    "INSERT INTO c2d_messages (device_id, seq, enqueued_time, expiry_time,
                         delivery_count, deliveries, lock_token, locked_until, generation_id,
                         message_id, correlation_id, user_id, content_type, content_encoding,
                         expiry, ack, properties, body)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
                         $16, $17, $18)
                     ON CONFLICT (device_id, seq) DO NOTHING",
                    vec![
                        Box::new(device.clone()),
                        Box::new(seq),
                        Box::new(m.enqueued_time.timestamp_micros()),
                        Box::new(m.expiry_time.timestamp_micros()),
                        Box::new(i64::from(m.delivery_count)),
                        Box::new(i64::from(m.deliveries)),
                        Box::new(m.lock_token),
                        Box::new(m.locked_until.map(|t| t.timestamp_micros())),
                        Box::new(m.device_generation_id),
                        Box::new(m.message.message_id),
                        Box::new(m.message.correlation_id),
                        Box::new(m.message.user_id),
                        Box::new(m.message.content_type),
                        Box::new(m.message.content_encoding),
                        Box::new(m.message.expiry.map(|t| t.timestamp_micros())),
                        Box::new(m.message.ack.as_str()),
                        Box::new(Json(properties)),
                        Box::new(m.message.body),
                    ],
                    Want::One,
                );
                woken.insert(device);
            }
            QueueChange::SetMessageState {
                device_id,
                sequence_number,
                state,
                expect,
            } => {
                let (deliveries, token) = guard(expect);
                step(
                    "UPDATE c2d_messages
                     SET delivery_count = $3, deliveries = $4, lock_token = $5, locked_until = $6
                     WHERE device_id = $1 AND seq = $2 AND deliveries = $7
                       AND lock_token IS NOT DISTINCT FROM $8",
                    vec![
                        Box::new(device_id.as_str().to_owned()),
                        Box::new(to_i64(sequence_number)?),
                        Box::new(i64::from(state.delivery_count)),
                        Box::new(i64::from(state.deliveries)),
                        Box::new(state.lock_token),
                        Box::new(state.locked_until.map(|t| t.timestamp_micros())),
                        deliveries,
                        token,
                    ],
                    Want::One,
                );
            }
            QueueChange::RemoveMessage {
                device_id,
                sequence_number,
                expect,
            } => {
                let (deliveries, token) = guard(expect);
                step(
                    "DELETE FROM c2d_messages
                     WHERE device_id = $1 AND seq = $2 AND deliveries = $3
                       AND lock_token IS NOT DISTINCT FROM $4",
                    vec![
                        Box::new(device_id.as_str().to_owned()),
                        Box::new(to_i64(sequence_number)?),
                        deliveries,
                        token,
                    ],
                    Want::One,
                );
            }
            QueueChange::AddFeedback {
                record,
                expiry_time,
            } => step(
                "INSERT INTO c2d_feedback (device_id, generation_id, original_message_id,
                     enqueued_time, status, description, expiry_time, deliveries)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 0)",
                vec![
                    Box::new(record.device_id),
                    Box::new(record.device_generation_id),
                    Box::new(record.original_message_id),
                    Box::new(record.enqueued_time_utc.timestamp_micros()),
                    Box::new(record.status_code.as_str()),
                    Box::new(record.description),
                    Box::new(expiry_time.timestamp_micros()),
                ],
                Want::Any,
            ),
            QueueChange::SetFeedbackState { id, state, expect } => {
                let (deliveries, token) = guard(expect);
                step(
                    "UPDATE c2d_feedback SET deliveries = $2, lock_token = $3, locked_until = $4
                     WHERE id = $1 AND deliveries = $5 AND lock_token IS NOT DISTINCT FROM $6",
                    vec![
                        Box::new(to_i64(id)?),
                        Box::new(i64::from(state.deliveries)),
                        Box::new(state.lock_token),
                        Box::new(state.locked_until.map(|t| t.timestamp_micros())),
                        deliveries,
                        token,
                    ],
                    Want::One,
                );
            }
            QueueChange::RemoveFeedback { id, expect } => {
                let (deliveries, token) = guard(expect);
                step(
                    "DELETE FROM c2d_feedback
                     WHERE id = $1 AND deliveries = $2 AND lock_token IS NOT DISTINCT FROM $3",
                    vec![Box::new(to_i64(id)?), deliveries, token],
                    Want::One,
                );
            }
            QueueChange::DeleteDevice { device_id } => {
                for sql in [
                    "DELETE FROM c2d_messages WHERE device_id = $1",
                    "DELETE FROM c2d_sequences WHERE device_id = $1",
                    "DELETE FROM c2d_feedback WHERE device_id = $1",
                ] {
                    step(
                        sql,
                        vec![Box::new(device_id.as_str().to_owned())],
                        Want::Any,
                    );
                }
            }
        }
    }
    if !woken.is_empty() {
        steps.push(Step {
            index: steps.last().map_or(0, |s| s.index),
            sql: "SELECT pg_notify($2, d) FROM unnest($1::text[]) AS d",
            params: vec![
                Box::new(woken.into_iter().collect::<Vec<_>>()),
                Box::new(C2D_CHANNEL),
            ],
            want: Want::Any,
        });
    }
    Ok(steps)
}

/// A guard's `deliveries` and `lock_token` as statement parameters.
fn guard(e: Expect) -> (Param, Param) {
    (Box::new(i64::from(e.deliveries)), Box::new(e.lock_token))
}

fn to_u32(v: i64) -> Result<u32, PgError> {
    u32::try_from(v).map_err(|_| PgError::Corrupt(format!("count {v} out of range")))
}

fn from_micros(v: i64) -> Result<DateTime<Utc>, PgError> {
    DateTime::from_timestamp_micros(v)
        .ok_or_else(|| PgError::Corrupt(format!("time {v} out of range")))
}

fn parse_ack(s: String) -> Result<AckMode, PgError> {
    s.parse()
        .map_err(|_| PgError::Corrupt(format!("unknown ack mode {s:?}")))
}
