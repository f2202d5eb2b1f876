//! [`SqliteQueueStore`]: the embedded, durable [`QueueStore`], in a SQLite database file.
//!
//! # Design
//!
//! The database runs on [`ferrohub_storage::sqlite::Database`]: WAL journal, one writer thread
//! committing concurrent `apply` calls together (group commit), each in its own `SAVEPOINT` so
//! one whose guard fails is rolled back alone, and a pool of reader threads. An `apply` is
//! acknowledged only after its commit is on disk (`synchronous=FULL`); a transaction holding
//! only `apply_relaxed` changes commits with `synchronous=NORMAL`: no fsync, made durable by the
//! next synced commit. An `apply` is handed to the writer when it is called, not when its future
//! is first polled: dropping the future does not withdraw it.
//!
//! # Sharing the registry's database
//!
//! The hub opens this store on the same file as the identity registry (`registry.db`). All of
//! this store's tables are prefixed `c2d_`, and its schema version is kept in
//! `c2d_schema_version`, apart from the registry's `schema_version`.
//!
//! When the file holds a table `devices` with a column `device_id` (the registry's), opening
//! the store creates the trigger `c2d_forget_deleted_device`, `AFTER DELETE ON devices`, which
//! deletes that device's messages, sequence counter and pending feedback. Deleting a device in
//! the registry thus purges its queue in the same transaction, with no feedback, even if this
//! process is not running. The trigger is created (if missing) at every open, so open the
//! registry first: a store opened on a file without `devices` does not create it.
//!
//! # Schema
//!
//! * `c2d_sequences(device_id PK, last_seq)`: each device's last sequence number, kept when its
//!   queue empties so numbers are never reused.
//! * `c2d_messages((device_id, seq) PK, …)`: one row per queued message, its mutable state
//!   (`delivery_count`, `deliveries`, `lock_token`, `locked_until`) in columns the guarded
//!   updates compare, its system properties in columns, its application properties as a JSON
//!   array of `[name, value]` pairs and its body as a BLOB. Indexed by expiry time.
//! * `c2d_feedback(id PK AUTOINCREMENT, …)`: the feedback queue. A batch lock is the
//!   `lock_token` and `locked_until` columns of the records it holds (indexed by token), so
//!   locking, completing and abandoning a batch are guarded updates of its records.
//!
//! Times are `INTEGER` microseconds since the Unix epoch.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};

use ferrohub_storage::sqlite::{self, Database, Names, WriteError};
use ferrohub_types::DeviceId;

pub use ferrohub_storage::sqlite::WriteStats;

use super::{
    DeviceQueue, Expect, FeedbackState, MessageHead, MessageState, QueueChange, QueueStore,
    StoreError, StoredFeedback,
};
use crate::model::{AckMode, FeedbackRecord, FeedbackStatus, OutgoingMessage, QueuedMessage};

/// The schema this build writes; each entry of `MIGRATIONS` brings the schema one version up.
const MIGRATIONS: &[&str] = &[
    // 1: queues, sequence counters, feedback.
    "CREATE TABLE c2d_sequences (
         device_id TEXT NOT NULL PRIMARY KEY,
         last_seq  INTEGER NOT NULL
     );
     CREATE TABLE c2d_messages (
         device_id        TEXT NOT NULL,
         seq              INTEGER NOT NULL,
         enqueued_time    INTEGER NOT NULL,
         expiry_time      INTEGER NOT NULL,
         delivery_count   INTEGER NOT NULL,
         deliveries       INTEGER NOT NULL,
         lock_token       TEXT,
         locked_until     INTEGER,
         generation_id    TEXT NOT NULL,
         message_id       TEXT,
         correlation_id   TEXT,
         user_id          TEXT,
         content_type     TEXT,
         content_encoding TEXT,
         expiry           INTEGER,
         ack              TEXT NOT NULL CHECK (ack IN ('none', 'positive', 'negative', 'full')),
         properties       TEXT NOT NULL,
         body             BLOB NOT NULL,
         PRIMARY KEY (device_id, seq)
     );
     CREATE INDEX c2d_messages_by_expiry ON c2d_messages (expiry_time);
     CREATE TABLE c2d_feedback (
         id                  INTEGER PRIMARY KEY AUTOINCREMENT,
         device_id           TEXT NOT NULL,
         generation_id       TEXT NOT NULL,
         original_message_id TEXT NOT NULL,
         enqueued_time       INTEGER NOT NULL,
         status              TEXT NOT NULL,
         description         TEXT NOT NULL,
         expiry_time         INTEGER NOT NULL,
         deliveries          INTEGER NOT NULL,
         lock_token          TEXT,
         locked_until        INTEGER
     );
     CREATE INDEX c2d_feedback_by_device ON c2d_feedback (device_id);
     CREATE INDEX c2d_feedback_by_lock ON c2d_feedback (lock_token) WHERE lock_token IS NOT NULL;
     CREATE INDEX c2d_feedback_by_expiry ON c2d_feedback (expiry_time);",
];

/// The trigger that forgets a device deleted from the registry's `devices` table.
const DEVICES_TRIGGER: &str = "CREATE TRIGGER IF NOT EXISTS c2d_forget_deleted_device
     AFTER DELETE ON devices
     BEGIN
         DELETE FROM c2d_messages WHERE device_id = OLD.device_id;
         DELETE FROM c2d_sequences WHERE device_id = OLD.device_id;
         DELETE FROM c2d_feedback WHERE device_id = OLD.device_id;
     END";

/// How many reader threads [`SqliteQueueStore::open`] starts.
pub const DEFAULT_READERS: usize = 2;

/// How the database names its threads and itself in logs.
const NAMES: Names = Names {
    threads: "ferrohub-c2d",
    database: "cloud-to-device",
};

const MESSAGE_COLUMNS: &str = "seq, enqueued_time, expiry_time, delivery_count, deliveries, \
     lock_token, locked_until, generation_id, message_id, ack";

const FEEDBACK_COLUMNS: &str = "id, device_id, generation_id, original_message_id, \
     enqueued_time, status, description, expiry_time, deliveries, lock_token, locked_until";

/// A [`QueueStore`] in one SQLite database file.
///
/// Dropping the store finishes the writes already submitted, then stops its threads and closes
/// the database.
pub struct SqliteQueueStore {
    path: PathBuf,
    db: Database<Op>,
}

/// A guard in SQL form.
struct Guard {
    deliveries: i64,
    lock_token: Option<String>,
}

/// A [`QueueChange`] encoded for SQL.
enum Op {
    Insert {
        row: Box<MessageRow>,
        expect_last: i64,
    },
    SetMessageState {
        device_id: String,
        seq: i64,
        delivery_count: i64,
        deliveries: i64,
        lock_token: Option<String>,
        locked_until: Option<i64>,
        expect: Guard,
    },
    RemoveMessage {
        device_id: String,
        seq: i64,
        expect: Guard,
    },
    AddFeedback {
        device_id: String,
        generation_id: String,
        original_message_id: String,
        enqueued_time: i64,
        status: &'static str,
        description: String,
        expiry_time: i64,
    },
    SetFeedbackState {
        id: i64,
        deliveries: i64,
        lock_token: Option<String>,
        locked_until: Option<i64>,
        expect: Guard,
    },
    RemoveFeedback {
        id: i64,
        expect: Guard,
    },
    DeleteDevice {
        device_id: String,
    },
}

/// A message row's values.
struct MessageRow {
    device_id: String,
    seq: i64,
    enqueued_time: i64,
    expiry_time: i64,
    delivery_count: i64,
    deliveries: i64,
    lock_token: Option<String>,
    locked_until: Option<i64>,
    generation_id: String,
    message_id: Option<String>,
    correlation_id: Option<String>,
    user_id: Option<String>,
    content_type: Option<String>,
    content_encoding: Option<String>,
    expiry: Option<i64>,
    ack: &'static str,
    properties: String,
    body: Vec<u8>,
}

impl SqliteQueueStore {
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
        tracing::debug!(path = %path.display(), "cloud-to-device database open");
        Ok(SqliteQueueStore { path, db })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The writer's counters so far.
    pub fn write_stats(&self) -> WriteStats {
        self.db.write_stats()
    }

    /// Encodes `changes` and hands them to the writer now; `sync` for `apply`, not for
    /// `apply_relaxed`.
    fn submit(
        &self,
        changes: Vec<QueueChange>,
        sync: bool,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + use<> {
        let written = changes
            .into_iter()
            .map(encode)
            .collect::<Result<Vec<_>, _>>()
            .map(|ops| self.db.write(ops, sync));
        async move { written?.await.map_err(write_error) }
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

impl std::fmt::Debug for SqliteQueueStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteQueueStore")
            .field("path", &self.path)
            .field("stats", &self.write_stats())
            .finish()
    }
}

impl QueueStore for SqliteQueueStore {
    fn apply(
        &self,
        changes: Vec<QueueChange>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.submit(changes, true)
    }

    fn apply_relaxed(
        &self,
        changes: Vec<QueueChange>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.submit(changes, false)
    }

    fn queue(
        &self,
        device: &DeviceId,
    ) -> impl Future<Output = Result<DeviceQueue, StoreError>> + Send {
        let device = device.as_str().to_owned();
        self.read(move |conn| read_queue(conn, &device).map_err(sql_error)?)
    }

    fn message(
        &self,
        device: &DeviceId,
        sequence_number: u64,
    ) -> impl Future<Output = Result<Option<QueuedMessage>, StoreError>> + Send {
        let device = device.clone();
        let seq = to_i64(sequence_number);
        self.read(move |conn| {
            let seq = seq?;
            let row = conn
                .prepare_cached(
                    "SELECT enqueued_time, expiry_time, delivery_count, deliveries, lock_token,
                            locked_until, generation_id, message_id, correlation_id, user_id,
                            content_type, content_encoding, expiry, ack, properties, body
                     FROM c2d_messages WHERE device_id = ?1 AND seq = ?2",
                )
                .and_then(|mut s| {
                    s.query_row(params![device.as_str(), seq], RawMessage::read)
                        .optional()
                })
                .map_err(sql_error)?;
            row.map(|raw| raw.decode(device, sequence_number))
                .transpose()
        })
    }

    fn devices_with_messages(
        &self,
    ) -> impl Future<Output = Result<Vec<DeviceId>, StoreError>> + Send {
        self.read(|conn| {
            device_list(
                conn,
                "SELECT DISTINCT device_id FROM c2d_messages ORDER BY device_id",
                [],
            )
        })
    }

    fn devices_with_expired_messages(
        &self,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<DeviceId>, StoreError>> + Send {
        let now = now.timestamp_micros();
        self.read(move |conn| {
            device_list(
                conn,
                "SELECT DISTINCT device_id FROM c2d_messages WHERE expiry_time <= ?1
                 ORDER BY device_id",
                [now],
            )
        })
    }

    fn available_feedback(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<StoredFeedback>, StoreError>> + Send {
        let now = now.timestamp_micros();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            feedback_list(
                conn,
                &format!(
                    "SELECT {FEEDBACK_COLUMNS} FROM c2d_feedback
                     WHERE expiry_time > ?1
                       AND NOT (lock_token IS NOT NULL AND locked_until IS NOT NULL
                                AND locked_until > ?1)
                     ORDER BY id LIMIT ?2"
                ),
                params![now, limit],
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
        self.read(move |conn| {
            feedback_list(
                conn,
                &format!(
                    "SELECT {FEEDBACK_COLUMNS} FROM c2d_feedback
                     WHERE expiry_time <= ?1
                       AND NOT (lock_token IS NOT NULL AND locked_until IS NOT NULL
                                AND locked_until > ?1)
                     ORDER BY id LIMIT ?2"
                ),
                params![now, limit],
            )
        })
    }

    fn locked_feedback(
        &self,
        lock_token: &str,
    ) -> impl Future<Output = Result<Vec<StoredFeedback>, StoreError>> + Send {
        let token = lock_token.to_owned();
        self.read(move |conn| {
            feedback_list(
                conn,
                &format!(
                    "SELECT {FEEDBACK_COLUMNS} FROM c2d_feedback WHERE lock_token = ?1
                     ORDER BY id"
                ),
                params![token],
            )
        })
    }
}

// === Reads ===

/// The queue of one device, counter and heads from one snapshot.
fn read_queue(
    conn: &Connection,
    device: &str,
) -> rusqlite::Result<Result<DeviceQueue, StoreError>> {
    let tx = conn.unchecked_transaction()?;
    let last: Option<i64> = tx
        .prepare_cached("SELECT last_seq FROM c2d_sequences WHERE device_id = ?1")?
        .query_row([device], |r| r.get(0))
        .optional()?;
    let mut heads = Vec::new();
    {
        let mut stmt = tx.prepare_cached(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM c2d_messages WHERE device_id = ?1 ORDER BY seq"
        ))?;
        let mut rows = stmt.query([device])?;
        while let Some(row) = rows.next()? {
            heads.push(decode_head(row)?);
        }
    }
    tx.finish()?;
    let last_sequence_number = match to_u64(last.unwrap_or(0)) {
        Ok(v) => v,
        Err(e) => return Ok(Err(e)),
    };
    Ok(heads
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .map(|messages| DeviceQueue {
            last_sequence_number,
            messages,
        }))
}

/// Decodes the [`MESSAGE_COLUMNS`] of a row.
fn decode_head(r: &Row<'_>) -> rusqlite::Result<Result<MessageHead, StoreError>> {
    let seq: i64 = r.get(0)?;
    let enqueued: i64 = r.get(1)?;
    let expiry: i64 = r.get(2)?;
    let delivery_count: i64 = r.get(3)?;
    let deliveries: i64 = r.get(4)?;
    let lock_token: Option<String> = r.get(5)?;
    let locked_until: Option<i64> = r.get(6)?;
    let device_generation_id: String = r.get(7)?;
    let message_id: Option<String> = r.get(8)?;
    let ack: String = r.get(9)?;
    let decode = || -> Result<MessageHead, StoreError> {
        Ok(MessageHead {
            sequence_number: to_u64(seq)?,
            enqueued_time: from_micros(enqueued)?,
            expiry_time: from_micros(expiry)?,
            state: MessageState {
                delivery_count: to_u32(delivery_count)?,
                deliveries: to_u32(deliveries)?,
                lock_token,
                locked_until: locked_until.map(from_micros).transpose()?,
            },
            message_id,
            ack: parse_ack(&ack)?,
            device_generation_id,
        })
    };
    Ok(decode())
}

/// The columns of a whole message as stored, before decoding.
struct RawMessage {
    enqueued_time: i64,
    expiry_time: i64,
    delivery_count: i64,
    deliveries: i64,
    lock_token: Option<String>,
    locked_until: Option<i64>,
    generation_id: String,
    message_id: Option<String>,
    correlation_id: Option<String>,
    user_id: Option<String>,
    content_type: Option<String>,
    content_encoding: Option<String>,
    expiry: Option<i64>,
    ack: String,
    properties: String,
    body: Vec<u8>,
}

impl RawMessage {
    /// The columns selected by [`SqliteQueueStore::message`], in order.
    fn read(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(RawMessage {
            enqueued_time: r.get(0)?,
            expiry_time: r.get(1)?,
            delivery_count: r.get(2)?,
            deliveries: r.get(3)?,
            lock_token: r.get(4)?,
            locked_until: r.get(5)?,
            generation_id: r.get(6)?,
            message_id: r.get(7)?,
            correlation_id: r.get(8)?,
            user_id: r.get(9)?,
            content_type: r.get(10)?,
            content_encoding: r.get(11)?,
            expiry: r.get(12)?,
            ack: r.get(13)?,
            properties: r.get(14)?,
            body: r.get(15)?,
        })
    }

    fn decode(
        self,
        device_id: DeviceId,
        sequence_number: u64,
    ) -> Result<QueuedMessage, StoreError> {
        let properties: Vec<(String, String)> = serde_json::from_str(&self.properties)
            .map_err(|e| StoreError::Corrupt(format!("message properties: {e}")))?;
        Ok(QueuedMessage {
            device_id,
            sequence_number,
            enqueued_time: from_micros(self.enqueued_time)?,
            expiry_time: from_micros(self.expiry_time)?,
            delivery_count: to_u32(self.delivery_count)?,
            deliveries: to_u32(self.deliveries)?,
            lock_token: self.lock_token,
            locked_until: self.locked_until.map(from_micros).transpose()?,
            message: OutgoingMessage {
                message_id: self.message_id,
                correlation_id: self.correlation_id,
                user_id: self.user_id,
                content_type: self.content_type,
                content_encoding: self.content_encoding,
                expiry: self.expiry.map(from_micros).transpose()?,
                ack: parse_ack(&self.ack)?,
                properties,
                body: self.body,
            },
            device_generation_id: self.generation_id,
        })
    }
}

fn device_list(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<DeviceId>, StoreError> {
    let mut stmt = conn.prepare_cached(sql).map_err(sql_error)?;
    let ids = stmt
        .query_map(params, |r| r.get::<_, String>(0))
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(sql_error)?;
    ids.into_iter()
        .map(|id| DeviceId::new(id).map_err(|e| StoreError::Corrupt(e.to_string())))
        .collect()
}

fn feedback_list(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<StoredFeedback>, StoreError> {
    let mut stmt = conn.prepare_cached(sql).map_err(sql_error)?;
    let rows = stmt
        .query_map(params, |r| {
            Ok((
                (
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, String>(5)?,
                ),
                (
                    r.get::<_, String>(6)?,
                    r.get::<_, i64>(7)?,
                    r.get::<_, i64>(8)?,
                    r.get::<_, Option<String>>(9)?,
                    r.get::<_, Option<i64>>(10)?,
                ),
            ))
        })
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(sql_error)?;
    rows.into_iter()
        .map(
            |(
                (id, device_id, generation_id, original_message_id, enqueued, status),
                (description, expiry, deliveries, lock_token, locked_until),
            )| {
                Ok(StoredFeedback {
                    id: to_u64(id)?,
                    record: FeedbackRecord {
                        original_message_id,
                        device_id,
                        device_generation_id: generation_id,
                        enqueued_time_utc: from_micros(enqueued)?,
                        status_code: FeedbackStatus::from_name(&status).ok_or_else(|| {
                            StoreError::Corrupt(format!("unknown feedback status {status:?}"))
                        })?,
                        description,
                    },
                    expiry_time: from_micros(expiry)?,
                    state: FeedbackState {
                        deliveries: to_u32(deliveries)?,
                        lock_token,
                        locked_until: locked_until.map(from_micros).transpose()?,
                    },
                })
            },
        )
        .collect()
}

// === Connections and schema ===

fn open_writer(path: &Path) -> Result<Connection, StoreError> {
    let mut conn = sqlite::open_writer(path, NAMES.database).map_err(|e| unavailable(path, e))?;
    match migrate(&mut conn) {
        Ok(Ok(())) => Ok(conn),
        Ok(Err(found)) => Err(StoreError::Incompatible(format!(
            "{} has cloud-to-device schema version {found}; this build knows up to {}",
            path.display(),
            MIGRATIONS.len()
        ))),
        Err(e) => Err(unavailable(path, e)),
    }
}

/// Brings the schema to the newest version and creates the `devices` trigger where it can, in
/// one transaction. `Ok(Err(version))` when the database's schema is newer than this build's.
fn migrate(conn: &mut Connection) -> rusqlite::Result<Result<(), usize>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if let Err(found) = sqlite::migrate(&tx, "c2d_schema_version", MIGRATIONS, NAMES.database)? {
        return Ok(Err(found));
    }
    let has_devices: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM pragma_table_info('devices') WHERE name = 'device_id')",
        [],
        |r| r.get(0),
    )?;
    if has_devices {
        tx.execute_batch(DEVICES_TRIGGER)?;
    }
    tx.commit().map(Ok)
}

// === Writes ===

/// Runs one op; `false` when its guard failed (then it changed nothing).
fn run_op(conn: &Connection, op: &Op) -> rusqlite::Result<bool> {
    Ok(match op {
        Op::Insert { row, expect_last } => {
            let last: i64 = conn
                .prepare_cached("SELECT last_seq FROM c2d_sequences WHERE device_id = ?1")?
                .query_row([&row.device_id], |r| r.get(0))
                .optional()?
                .unwrap_or(0);
            if last != *expect_last || row.seq <= last {
                return Ok(false);
            }
            conn.prepare_cached(
                "INSERT INTO c2d_sequences (device_id, last_seq) VALUES (?1, ?2)
                 ON CONFLICT (device_id) DO UPDATE SET last_seq = excluded.last_seq",
            )?
            .execute(params![row.device_id, row.seq])?;
            conn.prepare_cached(
                "INSERT INTO c2d_messages (device_id, seq, enqueued_time, expiry_time,
                     delivery_count, deliveries, lock_token, locked_until, generation_id,
                     message_id, correlation_id, user_id, content_type, content_encoding, expiry,
                     ack, properties, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                     ?17, ?18)
                 ON CONFLICT (device_id, seq) DO NOTHING",
            )?
            .execute(params![
                row.device_id,
                row.seq,
                row.enqueued_time,
                row.expiry_time,
                row.delivery_count,
                row.deliveries,
                row.lock_token,
                row.locked_until,
                row.generation_id,
                row.message_id,
                row.correlation_id,
                row.user_id,
                row.content_type,
                row.content_encoding,
                row.expiry,
                row.ack,
                row.properties,
                row.body,
            ])? == 1
        }
        Op::SetMessageState {
            device_id,
            seq,
            delivery_count,
            deliveries,
            lock_token,
            locked_until,
            expect,
        } => {
            conn.prepare_cached(
                "UPDATE c2d_messages
                 SET delivery_count = ?3, deliveries = ?4, lock_token = ?5, locked_until = ?6
                 WHERE device_id = ?1 AND seq = ?2 AND deliveries = ?7 AND lock_token IS ?8",
            )?
            .execute(params![
                device_id,
                seq,
                delivery_count,
                deliveries,
                lock_token,
                locked_until,
                expect.deliveries,
                expect.lock_token,
            ])? == 1
        }
        Op::RemoveMessage {
            device_id,
            seq,
            expect,
        } => {
            conn.prepare_cached(
                "DELETE FROM c2d_messages
                 WHERE device_id = ?1 AND seq = ?2 AND deliveries = ?3 AND lock_token IS ?4",
            )?
            .execute(params![
                device_id,
                seq,
                expect.deliveries,
                expect.lock_token
            ])? == 1
        }
        Op::AddFeedback {
            device_id,
            generation_id,
            original_message_id,
            enqueued_time,
            status,
            description,
            expiry_time,
        } => {
            conn.prepare_cached(
                "INSERT INTO c2d_feedback (device_id, generation_id, original_message_id,
                     enqueued_time, status, description, expiry_time, deliveries)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0)",
            )?
            .execute(params![
                device_id,
                generation_id,
                original_message_id,
                enqueued_time,
                status,
                description,
                expiry_time,
            ])?;
            true
        }
        Op::SetFeedbackState {
            id,
            deliveries,
            lock_token,
            locked_until,
            expect,
        } => {
            conn.prepare_cached(
                "UPDATE c2d_feedback SET deliveries = ?2, lock_token = ?3, locked_until = ?4
                 WHERE id = ?1 AND deliveries = ?5 AND lock_token IS ?6",
            )?
            .execute(params![
                id,
                deliveries,
                lock_token,
                locked_until,
                expect.deliveries,
                expect.lock_token,
            ])? == 1
        }
        Op::RemoveFeedback { id, expect } => {
            conn.prepare_cached(
                "DELETE FROM c2d_feedback WHERE id = ?1 AND deliveries = ?2 AND lock_token IS ?3",
            )?
            .execute(params![id, expect.deliveries, expect.lock_token])?
                == 1
        }
        Op::DeleteDevice { device_id } => {
            for sql in [
                "DELETE FROM c2d_messages WHERE device_id = ?1",
                "DELETE FROM c2d_sequences WHERE device_id = ?1",
                "DELETE FROM c2d_feedback WHERE device_id = ?1",
            ] {
                conn.prepare_cached(sql)?.execute([device_id])?;
            }
            true
        }
    })
}

// === Encoding ===

fn encode(change: QueueChange) -> Result<Op, StoreError> {
    Ok(match change {
        QueueChange::Insert {
            message: m,
            expect_last_sequence_number,
        } => Op::Insert {
            row: Box::new(MessageRow {
                device_id: m.device_id.as_str().to_owned(),
                seq: to_i64(m.sequence_number)?,
                enqueued_time: m.enqueued_time.timestamp_micros(),
                expiry_time: m.expiry_time.timestamp_micros(),
                delivery_count: i64::from(m.delivery_count),
                deliveries: i64::from(m.deliveries),
                lock_token: m.lock_token,
                locked_until: m.locked_until.map(|t| t.timestamp_micros()),
                generation_id: m.device_generation_id,
                properties: serde_json::to_string(&m.message.properties)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                message_id: m.message.message_id,
                correlation_id: m.message.correlation_id,
                user_id: m.message.user_id,
                content_type: m.message.content_type,
                content_encoding: m.message.content_encoding,
                expiry: m.message.expiry.map(|t| t.timestamp_micros()),
                ack: m.message.ack.as_str(),
                body: m.message.body,
            }),
            expect_last: to_i64(expect_last_sequence_number)?,
        },
        QueueChange::SetMessageState {
            device_id,
            sequence_number,
            state,
            expect,
        } => Op::SetMessageState {
            device_id: device_id.as_str().to_owned(),
            seq: to_i64(sequence_number)?,
            delivery_count: i64::from(state.delivery_count),
            deliveries: i64::from(state.deliveries),
            lock_token: state.lock_token,
            locked_until: state.locked_until.map(|t| t.timestamp_micros()),
            expect: guard(expect),
        },
        QueueChange::RemoveMessage {
            device_id,
            sequence_number,
            expect,
        } => Op::RemoveMessage {
            device_id: device_id.as_str().to_owned(),
            seq: to_i64(sequence_number)?,
            expect: guard(expect),
        },
        QueueChange::AddFeedback {
            record,
            expiry_time,
        } => Op::AddFeedback {
            device_id: record.device_id,
            generation_id: record.device_generation_id,
            original_message_id: record.original_message_id,
            enqueued_time: record.enqueued_time_utc.timestamp_micros(),
            status: record.status_code.as_str(),
            description: record.description,
            expiry_time: expiry_time.timestamp_micros(),
        },
        QueueChange::SetFeedbackState { id, state, expect } => Op::SetFeedbackState {
            id: to_i64(id)?,
            deliveries: i64::from(state.deliveries),
            lock_token: state.lock_token,
            locked_until: state.locked_until.map(|t| t.timestamp_micros()),
            expect: guard(expect),
        },
        QueueChange::RemoveFeedback { id, expect } => Op::RemoveFeedback {
            id: to_i64(id)?,
            expect: guard(expect),
        },
        QueueChange::DeleteDevice { device_id } => Op::DeleteDevice {
            device_id: device_id.as_str().to_owned(),
        },
    })
}

fn guard(e: Expect) -> Guard {
    Guard {
        deliveries: i64::from(e.deliveries),
        lock_token: e.lock_token,
    }
}

fn to_i64(v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Corrupt(format!("{v} does not fit in SQLite")))
}

fn to_u64(v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("negative number {v} stored")))
}

fn to_u32(v: i64) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("count {v} out of range")))
}

fn from_micros(v: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(v)
        .ok_or_else(|| StoreError::Corrupt(format!("time {v} out of range")))
}

fn parse_ack(s: &str) -> Result<AckMode, StoreError> {
    s.parse()
        .map_err(|_| StoreError::Corrupt(format!("unknown ack mode {s:?}")))
}

// === Errors ===

fn sql_error(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn unavailable(path: &Path, e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(format!("{}: {e}", path.display()))
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the cloud-to-device database is closed".to_owned())
}

fn write_error(e: WriteError) -> StoreError {
    match e {
        WriteError::Conflict { index } => StoreError::Conflict { index },
        WriteError::Unavailable(e) => StoreError::Unavailable(e),
        WriteError::Closed => stopped(),
    }
}
