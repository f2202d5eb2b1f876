//! A SQLite database served by one writer thread with group commit and a pool of reader threads,
//! for stores whose callers run on any async runtime (or none).
//!
//! # Design
//!
//! * WAL journal, `synchronous=FULL`: a write is acknowledged only after its commit is on disk.
//!   A transaction holding only relaxed writes (`sync: false`) commits with `synchronous=NORMAL`:
//!   no fsync; the WAL is written in order, so the next synced commit makes it durable too.
//! * One writer thread owns the only writing connection. It takes every write submitted while it
//!   was busy and commits them together in one `IMMEDIATE` transaction (group commit), so
//!   concurrent writers share one fsync. Each write runs inside its own `SAVEPOINT`: one whose
//!   guard fails is rolled back alone and the others still commit.
//! * A small pool of reader threads, each with its own connection, serves reads. WAL lets them
//!   run beside the writer; each read sees every commit acknowledged before it started.
//! * Results travel back on `futures_channel::oneshot`, so callers on any async runtime await
//!   without blocking a runtime thread.
//! * A write is handed to the writer when it is called, not when its future is first polled:
//!   dropping the future does not withdraw it.
//!
//! The store using a [`Database`] keeps its schema (see [`migrate`]), its encoding of changes
//! into ops, what an op does ([`Database::start`]'s `run_op`) and its queries.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use futures_channel::oneshot;
use rusqlite::{Connection, Transaction, TransactionBehavior};

/// The most writes one transaction takes, to bound a commit's size and latency.
pub const MAX_BATCH: usize = 512;

/// How long a connection waits for a lock held by another connection (another store's writer on
/// the same file, another process) before giving up.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long commits gather before the checkpointer folds the WAL into the database file.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(250);

/// How a [`Database`] names its threads and itself in logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Names {
    /// The threads are `{threads}-writer` and `{threads}-reader-{i}`.
    pub threads: &'static str,
    /// The database in log messages, as in "registry database".
    pub database: &'static str,
}

/// Counters of the writer thread, for metrics and to observe group commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriteStats {
    /// Transactions committed (or attempted).
    pub transactions: u64,
    /// Writes (`apply` calls) processed; more than `transactions` when commits were shared.
    pub applies: u64,
}

/// Why a write was not stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// The op at `index` found its guard false; nothing of the write was stored.
    #[error("op {index} of the write failed its guard")]
    Conflict {
        /// The position of the first failing op.
        index: usize,
    },
    /// SQLite failed, or the commit could not be made durable.
    #[error("{0}")]
    Unavailable(String),
    /// The database is closed.
    #[error("the database is closed")]
    Closed,
}

/// The database is closed: the read was not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the database is closed")]
pub struct Closed;

/// A thread could not be started.
#[derive(Debug, thiserror::Error)]
#[error("cannot start thread {thread}: {error}")]
pub struct SpawnError {
    /// The thread's name.
    pub thread: String,
    /// Why it did not start.
    pub error: std::io::Error,
}

/// A SQLite database file served by one writer thread and a pool of reader threads. A write is
/// a list of `Op`s, run in order in one savepoint by the `run_op` given to [`Database::start`].
///
/// Dropping it finishes the writes already submitted, then stops its threads (closing their
/// connections).
pub struct Database<Op> {
    names: Names,
    writer: Option<mpsc::Sender<WriteJob<Op>>>,
    readers: Option<mpsc::Sender<ReadJob>>,
    threads: Vec<JoinHandle<()>>,
    stats: Arc<Counters>,
}

#[derive(Default)]
struct Counters {
    transactions: AtomicU64,
    applies: AtomicU64,
}

struct WriteJob<Op> {
    ops: Vec<Op>,
    /// Whether the commit must reach the disk before the reply.
    sync: bool,
    reply: oneshot::Sender<Result<(), WriteError>>,
}

type ReadJob = Box<dyn FnOnce(&Connection) + Send>;

impl<Op: Send + 'static> Database<Op> {
    /// Starts the writer thread on `writer`, a connection from [`open_writer`] (so in
    /// `synchronous=FULL` mode), and one reader thread on each of `readers` (connections from
    /// [`open_readers`]; without any, every read fails with [`Closed`]).
    ///
    /// `run_op` runs one op on the writer's connection, inside the write's savepoint; it returns
    /// `false` when the op's guard failed (then it must have changed nothing).
    pub fn start<R>(
        names: Names,
        writer: Connection,
        readers: Vec<Connection>,
        run_op: R,
    ) -> Result<Self, SpawnError>
    where
        R: Fn(&Connection, &Op) -> rusqlite::Result<bool> + Send + 'static,
    {
        let stats = Arc::new(Counters::default());
        let mut threads = Vec::new();
        // Checkpoints run on a connection of their own, so that the writer never stops to copy
        // the WAL into the database file (SQLite's automatic checkpoint would do that inside
        // the commit that crosses its threshold, holding up every write queued behind it).
        let checkpointer = match writer.path().filter(|p| !p.is_empty()) {
            Some(path) => match open_checkpointer(Path::new(path)) {
                Ok(conn) => Some(conn),
                Err(e) => {
                    tracing::warn!(error = %e, "no checkpoint connection for the {} database; the writer checkpoints", names.database);
                    None
                }
            },
            None => None,
        };
        let commits = match checkpointer {
            Some(conn) => {
                if let Err(e) = writer.pragma_update(None, "wal_autocheckpoint", 0) {
                    tracing::warn!(error = %e, "cannot hand checkpoints of the {} database to their own thread", names.database);
                }
                let (tx, rx) = mpsc::sync_channel::<()>(1);
                threads.push(spawn(format!("{}-checkpoint", names.threads), move || {
                    run_checkpointer(&conn, &rx, names.database)
                })?);
                Some(tx)
            }
            None => None,
        };
        let (write_tx, write_rx) = mpsc::channel::<WriteJob<Op>>();
        let writer_stats = Arc::clone(&stats);
        threads.push(spawn(format!("{}-writer", names.threads), move || {
            run_writer(
                writer,
                write_rx,
                &run_op,
                &writer_stats,
                names.database,
                commits,
            )
        })?);

        let (read_tx, read_rx) = mpsc::channel::<ReadJob>();
        let read_rx = Arc::new(Mutex::new(read_rx));
        for (i, conn) in readers.into_iter().enumerate() {
            let rx = Arc::clone(&read_rx);
            threads.push(spawn(format!("{}-reader-{i}", names.threads), move || {
                run_reader(conn, &rx)
            })?);
        }
        Ok(Database {
            names,
            writer: Some(write_tx),
            readers: Some(read_tx),
            threads,
            stats,
        })
    }

    /// Hands `ops` to the writer now; the future resolves once they are committed (on disk if
    /// `sync`, else written to the WAL) or rolled back.
    pub fn write(
        &self,
        ops: Vec<Op>,
        sync: bool,
    ) -> impl Future<Output = Result<(), WriteError>> + Send + use<Op> {
        let (reply, rx) = oneshot::channel();
        let sent = match &self.writer {
            Some(writer) => writer.send(WriteJob { ops, sync, reply }).is_ok(),
            None => false,
        };
        async move {
            if !sent {
                return Err(WriteError::Closed);
            }
            rx.await.unwrap_or(Err(WriteError::Closed))
        }
    }

    /// Runs `f` on a reader connection; the future resolves to what it returned.
    pub fn read<T, F>(&self, f: F) -> impl Future<Output = Result<T, Closed>> + Send + use<Op, T, F>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> T + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: ReadJob = Box::new(move |conn| {
            // The caller may have gone; then nobody wants the answer.
            let _ = tx.send(f(conn));
        });
        let sent = match &self.readers {
            Some(readers) => readers.send(job).is_ok(),
            None => false,
        };
        async move {
            if !sent {
                return Err(Closed);
            }
            rx.await.map_err(|_| Closed)
        }
    }
}

impl<Op> Database<Op> {
    /// The writer's counters so far.
    pub fn write_stats(&self) -> WriteStats {
        WriteStats {
            transactions: self.stats.transactions.load(Ordering::Relaxed),
            applies: self.stats.applies.load(Ordering::Relaxed),
        }
    }
}

impl<Op> Drop for Database<Op> {
    fn drop(&mut self) {
        // Closing the channels lets each thread finish what is queued and return.
        self.writer.take();
        self.readers.take();
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                tracing::error!("a {} database thread panicked", self.names.database);
            }
        }
    }
}

impl<Op> std::fmt::Debug for Database<Op> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("names", &self.names)
            .field("stats", &self.write_stats())
            .finish()
    }
}

// === Connections and schema ===

/// Opens the writing connection: WAL journal, `synchronous=FULL`, [`BUSY_TIMEOUT`]. `database`
/// names it in the warning logged if SQLite refuses WAL mode.
pub fn open_writer(path: &Path, database: &str) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(mode, "SQLite refused WAL mode for the {database} database");
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

/// Opens the connection that checkpoints: `synchronous=FULL`, [`BUSY_TIMEOUT`].
fn open_checkpointer(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

/// Opens `count` reading connections: `query_only`, [`BUSY_TIMEOUT`].
pub fn open_readers(path: &Path, count: usize) -> rusqlite::Result<Vec<Connection>> {
    (0..count)
        .map(|_| {
            let conn = Connection::open(path)?;
            conn.busy_timeout(BUSY_TIMEOUT)?;
            conn.pragma_update(None, "query_only", true)?;
            Ok(conn)
        })
        .collect()
}

/// Brings a schema to its newest version inside `tx`: `version_table` records the entries of
/// `migrations` applied, each of which brings the schema one version up. `Ok(Err(version))` when
/// the database's schema is newer than `migrations` knows; the caller commits `tx` otherwise.
pub fn migrate(
    tx: &Transaction<'_>,
    version_table: &str,
    migrations: &[&str],
    database: &str,
) -> rusqlite::Result<Result<(), usize>> {
    tx.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {version_table} (version INTEGER NOT NULL)"
    ))?;
    let current: Option<i64> = tx.query_row(
        &format!("SELECT max(version) FROM {version_table}"),
        [],
        |r| r.get(0),
    )?;
    let current = usize::try_from(current.unwrap_or(0)).unwrap_or(usize::MAX);
    if current > migrations.len() {
        return Ok(Err(current));
    }
    for (i, sql) in migrations.iter().enumerate().skip(current) {
        tx.execute_batch(sql)?;
        tx.execute(
            &format!("INSERT INTO {version_table} (version) VALUES (?1)"),
            [i64::try_from(i + 1).unwrap_or(i64::MAX)],
        )?;
        tracing::info!(version = i + 1, "{database} database schema migrated");
    }
    Ok(Ok(()))
}

// === Threads ===

fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, SpawnError> {
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(f)
        .map_err(|error| SpawnError {
            thread: name,
            error,
        })
}

fn run_reader(conn: Connection, jobs: &Mutex<mpsc::Receiver<ReadJob>>) {
    loop {
        // Hold the lock only to take a job, so the other readers can take the next one.
        let job = jobs.lock().unwrap_or_else(PoisonError::into_inner).recv();
        match job {
            Ok(job) => job(&conn),
            Err(_) => return,
        }
    }
}

/// Waits for commits, lets them gather for [`CHECKPOINT_INTERVAL`], then runs a passive
/// checkpoint (it copies committed WAL frames into the database file and never blocks the
/// writer); once more when the writer has stopped.
fn run_checkpointer(conn: &Connection, commits: &mpsc::Receiver<()>, database: &str) {
    let checkpoint = || {
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "checkpointing the {database} database failed");
        }
    };
    while commits.recv().is_ok() {
        let due = std::time::Instant::now() + CHECKPOINT_INTERVAL;
        loop {
            let left = due.saturating_duration_since(std::time::Instant::now());
            match commits.recv_timeout(left) {
                Ok(()) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    checkpoint();
                    return;
                }
            }
        }
        checkpoint();
    }
}

fn run_writer<Op, R>(
    mut conn: Connection,
    jobs: mpsc::Receiver<WriteJob<Op>>,
    run_op: &R,
    stats: &Counters,
    database: &str,
    commits: Option<mpsc::SyncSender<()>>,
) where
    R: Fn(&Connection, &Op) -> rusqlite::Result<bool>,
{
    // The connection was opened with synchronous=FULL.
    let mut synced = true;
    // Everything that queued up during the previous commit becomes the next batch.
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let sync = batch.iter().any(|job| job.sync);
        if sync != synced {
            let mode = if sync { "FULL" } else { "NORMAL" };
            match conn.pragma_update(None, "synchronous", mode) {
                Ok(()) => synced = sync,
                // Still FULL (or NORMAL with nothing that needs more): safe either way, except
                // NORMAL for a synced batch, which is what this error leaves in force.
                Err(e) => {
                    tracing::error!(error = %e, mode, "changing SQLite's synchronous mode failed");
                }
            }
        }
        let results = if sync && !synced {
            let e = WriteError::Unavailable("cannot make the commit durable".into());
            batch.iter().map(|_| Err(e.clone())).collect()
        } else {
            match write_batch(&mut conn, &batch, run_op) {
                Ok(results) => results,
                Err(e) => {
                    tracing::error!(error = %e, jobs = batch.len(), "{database} commit failed");
                    let e = WriteError::Unavailable(e.to_string());
                    batch.iter().map(|_| Err(e.clone())).collect()
                }
            }
        };
        stats.transactions.fetch_add(1, Ordering::Relaxed);
        stats
            .applies
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        if let Some(commits) = &commits {
            // Full means a wake-up is already pending.
            let _ = commits.try_send(());
        }
        for (job, result) in batch.into_iter().zip(results) {
            // A caller that stopped waiting still had its change applied; see the module doc.
            let _ = job.reply.send(result);
        }
    }
}

/// Commits `batch` in one transaction, each job in its own savepoint. An `Err` means the whole
/// transaction failed and nothing was stored.
fn write_batch<Op, R>(
    conn: &mut Connection,
    batch: &[WriteJob<Op>],
    run_op: &R,
) -> rusqlite::Result<Vec<Result<(), WriteError>>>
where
    R: Fn(&Connection, &Op) -> rusqlite::Result<bool>,
{
    let mut tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut results = Vec::with_capacity(batch.len());
    for job in batch {
        let sp = tx.savepoint()?;
        match run_ops(&sp, &job.ops, run_op) {
            Ok(None) => {
                sp.commit()?;
                results.push(Ok(()));
            }
            Ok(Some(index)) => {
                sp.finish()?;
                results.push(Err(WriteError::Conflict { index }));
            }
            Err(e) => {
                sp.finish()?;
                results.push(Err(WriteError::Unavailable(e.to_string())));
            }
        }
    }
    tx.commit()?;
    Ok(results)
}

/// Runs the ops in order; `Some(index)` is the first whose guard failed.
fn run_ops<Op, R>(conn: &Connection, ops: &[Op], run_op: &R) -> rusqlite::Result<Option<usize>>
where
    R: Fn(&Connection, &Op) -> rusqlite::Result<bool>,
{
    for (index, op) in ops.iter().enumerate() {
        if !run_op(conn, op)? {
            return Ok(Some(index));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::test_support::block_on;

    const NAMES: Names = Names {
        threads: "ferrohub-storage-test",
        database: "test",
    };

    const MIGRATIONS: &[&str] = &["CREATE TABLE items (id INTEGER NOT NULL PRIMARY KEY)"];

    enum Op {
        /// Inserts the item; a SQL error if it is already there.
        Insert(i64),
        /// Guard: the item is there.
        Exists(i64),
        /// Sends the writer connection's `synchronous` mode (1 NORMAL, 2 FULL).
        RecordSync(mpsc::Sender<i64>),
        /// Says it has been reached, then waits for `release` (or its sender's drop).
        Gate {
            entered: mpsc::Sender<()>,
            release: mpsc::Receiver<()>,
        },
    }

    fn run_op(conn: &Connection, op: &Op) -> rusqlite::Result<bool> {
        match op {
            Op::Insert(id) => Ok(conn.execute("INSERT INTO items (id) VALUES (?1)", [id])? == 1),
            Op::Exists(id) => conn.query_row(
                "SELECT EXISTS (SELECT 1 FROM items WHERE id = ?1)",
                [id],
                |r| r.get(0),
            ),
            Op::RecordSync(to) => {
                let mode: i64 = conn.pragma_query_value(None, "synchronous", |r| r.get(0))?;
                let _ = to.send(mode);
                Ok(true)
            }
            Op::Gate { entered, release } => {
                let _ = entered.send(());
                let _ = release.recv();
                Ok(true)
            }
        }
    }

    fn db_path(dir: &tempfile::TempDir) -> PathBuf {
        dir.path().join("test.db")
    }

    fn open_with_readers(path: &Path, readers: usize) -> Database<Op> {
        let mut writer = open_writer(path, "test").expect("open the writer");
        let tx = writer
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .expect("begin");
        migrate(&tx, "test_schema_version", MIGRATIONS, "test")
            .expect("migrate")
            .expect("a schema this test knows");
        tx.commit().expect("commit the schema");
        let readers = open_readers(path, readers).expect("open the readers");
        Database::start(NAMES, writer, readers, run_op).expect("start")
    }

    fn open(path: &Path) -> Database<Op> {
        open_with_readers(path, 2)
    }

    /// Holds the writer inside a batch of its own until the returned sender sends (or drops), so
    /// that the writes submitted meanwhile queue up for the next batch.
    fn hold_writer(
        db: &Database<Op>,
    ) -> (
        impl Future<Output = Result<(), WriteError>> + use<>,
        mpsc::Sender<()>,
    ) {
        let (entered_tx, entered_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel();
        let held = db.write(
            vec![Op::Gate {
                entered: entered_tx,
                release: release_rx,
            }],
            true,
        );
        entered_rx.recv().expect("the writer reaches the gate");
        (held, release_tx)
    }

    fn ids(db: &Database<Op>) -> Vec<i64> {
        block_on(db.read(|conn| {
            conn.prepare("SELECT id FROM items ORDER BY id")?
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<i64>>>()
        }))
        .expect("open")
        .expect("query")
    }

    #[test]
    fn the_wal_reaches_the_database_file_without_the_writer() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = db_path(&dir);
        let db = open(&path);
        let before = std::fs::metadata(&path).expect("database file").len();
        for chunk in 0..20 {
            let ops = (0..500).map(|i| Op::Insert(chunk * 500 + i)).collect();
            block_on(db.write(ops, true)).expect("committed");
        }
        // The writer never checkpoints (its automatic checkpoint is off); only the checkpoint
        // thread can make the database file grow. Bounded wait: it runs every 250 ms.
        let grown = (0..200).any(|_| {
            std::thread::sleep(Duration::from_millis(50));
            std::fs::metadata(&path).expect("database file").len() > before
        });
        assert!(grown, "the database file stayed at {before} bytes");
        assert_eq!(ids(&db).len(), 10_000);
    }

    #[test]
    fn writes_submitted_while_the_writer_is_busy_share_one_commit() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = open(&db_path(&dir));
        let (held, release) = hold_writer(&db);
        // Not polled before the release: a write is submitted when called.
        let writes: Vec<_> = (1..=10)
            .map(|i| db.write(vec![Op::Insert(i)], true))
            .collect();
        release.send(()).expect("the gate waits");
        block_on(held).expect("the gate commits");
        for w in writes {
            block_on(w).expect("committed");
        }
        assert_eq!(
            db.write_stats(),
            WriteStats {
                transactions: 2,
                applies: 11
            }
        );
        assert_eq!(ids(&db), (1..=10).collect::<Vec<_>>());
    }

    #[test]
    fn a_failing_write_rolls_back_alone() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = open(&db_path(&dir));
        let (held, release) = hold_writer(&db);
        let first = db.write(vec![Op::Insert(1)], true);
        let guard_fails = db.write(vec![Op::Insert(2), Op::Exists(99), Op::Insert(3)], true);
        // Its second insert collides with `first`'s, committed earlier in the same transaction.
        let sql_fails = db.write(vec![Op::Insert(4), Op::Insert(1)], true);
        let sees_first = db.write(vec![Op::Insert(5), Op::Exists(1)], true);
        release.send(()).expect("the gate waits");
        block_on(held).expect("the gate commits");

        assert_eq!(block_on(first), Ok(()));
        assert_eq!(
            block_on(guard_fails),
            Err(WriteError::Conflict { index: 1 })
        );
        assert!(matches!(
            block_on(sql_fails),
            Err(WriteError::Unavailable(e)) if e.contains("UNIQUE")
        ));
        assert_eq!(block_on(sees_first), Ok(()));
        assert_eq!(ids(&db), [1, 5]);
        assert_eq!(
            db.write_stats(),
            WriteStats {
                transactions: 2,
                applies: 5
            }
        );
    }

    #[test]
    fn relaxed_writes_commit_without_fsync_unless_batched_with_synced_ones() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = db_path(&dir);
        let db = open(&path);
        let (mode_tx, modes) = mpsc::channel();
        let (normal, full) = (1, 2);
        let write = |id: i64, sync: bool| {
            db.write(vec![Op::Insert(id), Op::RecordSync(mode_tx.clone())], sync)
        };

        block_on(write(1, false)).expect("relaxed");
        assert_eq!(modes.recv(), Ok(normal));
        block_on(write(2, true)).expect("synced");
        assert_eq!(modes.recv(), Ok(full));
        block_on(write(3, false)).expect("relaxed");
        assert_eq!(modes.recv(), Ok(normal));

        // One synced write makes its whole batch synced.
        let (held, release) = hold_writer(&db);
        let relaxed = write(4, false);
        let synced = write(5, true);
        release.send(()).expect("the gate waits");
        block_on(held).expect("the gate commits");
        assert_eq!(block_on(relaxed), Ok(()));
        assert_eq!(block_on(synced), Ok(()));
        assert_eq!(modes.try_iter().collect::<Vec<_>>(), [full, full]);
        assert_eq!(db.write_stats().transactions, 5);

        drop(db);
        let reopened = open(&path);
        assert_eq!(ids(&reopened), [1, 2, 3, 4, 5]);
    }

    #[test]
    fn dropping_the_database_finishes_the_submitted_writes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = db_path(&dir);
        let db = open(&path);
        let (held, release) = hold_writer(&db);
        let writes: Vec<_> = (1..=5)
            .map(|i| db.write(vec![Op::Insert(i)], true))
            .collect();
        release.send(()).expect("the gate waits");
        drop(db);
        assert_eq!(block_on(held), Ok(()));
        for w in writes {
            assert_eq!(block_on(w), Ok(()));
        }
        let reopened = open(&path);
        assert_eq!(ids(&reopened), [1, 2, 3, 4, 5]);
    }

    #[test]
    fn reads_fail_without_readers() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = open_with_readers(&db_path(&dir), 0);
        assert_eq!(block_on(db.read(|_| ())), Err(Closed));
        // Writes still work.
        assert_eq!(block_on(db.write(vec![Op::Insert(1)], true)), Ok(()));
    }

    #[test]
    fn migrate_applies_each_migration_once_and_refuses_newer_schemas() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut conn = Connection::open(db_path(&dir)).expect("open");
        let mut run = |migrations: &[&str]| {
            let tx = conn.transaction().expect("begin");
            let outcome = migrate(&tx, "v", migrations, "test").expect("migrate");
            tx.commit().expect("commit");
            outcome
        };
        let two = ["CREATE TABLE a (x)", "CREATE TABLE b (x)"];
        assert_eq!(run(&two), Ok(()));
        // Re-running would fail on the existing tables.
        assert_eq!(run(&two), Ok(()));
        assert_eq!(run(&two[..1]), Err(2));
        assert_eq!(run(&[two[0], two[1], "CREATE TABLE c (x)"]), Ok(()));
        let versions: Vec<i64> = conn
            .prepare("SELECT version FROM v ORDER BY version")
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .expect("versions");
        assert_eq!(versions, [1, 2, 3]);
    }
}
