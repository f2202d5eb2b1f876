//! What only the durable store promises: state survives reopening and crashes, the schema is
//! versioned apart from the registry's, and deleting a registry device purges its queue.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ferrohub_c2d::{
    AckMode, C2dConfig, C2dError, FeedbackStatus, QueueStore, SqliteQueueStore, StoreError,
};
use rusqlite::Connection;

use crate::common::*;

const GEN: &str = "637000000000000002";

fn open(path: &Path) -> ferrohub_c2d::C2dQueues<SqliteQueueStore> {
    queues(
        SqliteQueueStore::open(path).expect("open"),
        C2dConfig::default(),
    )
}

#[test]
fn state_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("registry.db");
    let t = at(0);
    let (lock, feedback_lock) = {
        let q = open(&path);
        for id in ["m1", "m2", "m3"] {
            block_on(q.send(&did("d1"), GEN, msg(id, AckMode::Full), t)).expect("send");
        }
        block_on(q.send(&did("d2"), GEN, full_msg("x"), t)).expect("send");
        let x = block_on(q.receive(&did("d2"), t))
            .expect("receive")
            .expect("x");
        block_on(q.complete(&did("d2"), x.lock_token.as_deref().expect("locked"), t))
            .expect("complete");
        let m1 = block_on(q.receive(&did("d1"), t))
            .expect("receive")
            .expect("m1");
        let m2 = block_on(q.receive(&did("d1"), t))
            .expect("receive")
            .expect("m2");
        block_on(q.reject(&did("d1"), m2.lock_token.as_deref().expect("locked"), t))
            .expect("reject");
        let batch = block_on(q.receive_feedback(t))
            .expect("feedback")
            .expect("batch");
        assert_eq!(batch.records.len(), 2, "x's Success and m2's Rejected");
        (m1.lock_token.expect("locked"), batch.lock_token)
    };
    let q = open(&path);
    let now = t + secs(1);
    // Locks survive: m1 is still Invisible, its token still settles it; same for the batch.
    let m3 = block_on(q.receive(&did("d1"), now))
        .expect("receive")
        .expect("m3");
    assert_eq!(m3.sequence_number, 3);
    assert_eq!(m3.message, msg("m3", AckMode::Full));
    assert_eq!(m3.device_generation_id, GEN);
    block_on(q.complete(&did("d1"), &lock, now)).expect("the lock survived");
    block_on(q.complete_feedback(&feedback_lock, now)).expect("the batch lock survived");
    // Sequence counters survive, even for an emptied queue.
    let next = block_on(q.send(&did("d2"), GEN, msg("y", AckMode::None), now)).expect("send");
    assert_eq!(next.sequence_number, 2);
    assert_eq!(
        drain_feedback(&q, now),
        vec![("m1".to_owned(), "d1".to_owned(), FeedbackStatus::Success)]
    );
    assert_eq!(block_on(q.depth(&did("d1"), now)).expect("depth"), 1);
}

#[test]
fn schema_is_versioned_apart_from_the_registry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("registry.db");
    {
        // The registry's own version table, as the registry leaves it.
        let conn = Connection::open(&path).expect("create");
        conn.execute_batch(
            "CREATE TABLE schema_version (version INTEGER NOT NULL);
             INSERT INTO schema_version (version) VALUES (1);",
        )
        .expect("registry schema");
    }
    drop(SqliteQueueStore::open(&path).expect("open"));
    drop(SqliteQueueStore::open(&path).expect("reopen"));
    let conn = Connection::open(&path).expect("inspect");
    let count = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).expect(sql) };
    assert_eq!(count("SELECT max(version) FROM c2d_schema_version"), 1);
    assert_eq!(
        count("SELECT count(*) FROM c2d_schema_version"),
        1,
        "migrated once"
    );
    assert_eq!(
        count("SELECT count(*) FROM schema_version"),
        1,
        "registry's untouched"
    );
    assert_eq!(
        count(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table'
             AND name IN ('c2d_messages', 'c2d_sequences', 'c2d_feedback')"
        ),
        3
    );
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("journal mode");
    assert_eq!(mode, "wal");
    conn.execute("INSERT INTO c2d_schema_version (version) VALUES (99)", [])
        .expect("bump");
    drop(conn);
    match SqliteQueueStore::open(&path) {
        Err(StoreError::Incompatible(m)) => assert!(m.contains("99"), "{m}"),
        other => panic!("expected Incompatible, got {other:?}"),
    }
}

fn has_trigger(path: &Path) -> bool {
    let conn = Connection::open(path).expect("inspect");
    conn.query_row(
        "SELECT count(*) FROM sqlite_master
         WHERE type = 'trigger' AND name = 'c2d_forget_deleted_device'",
        [],
        |r| r.get::<_, i64>(0),
    )
    .expect("trigger count")
        == 1
}

#[test]
fn deleting_a_registry_device_purges_its_queue() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("registry.db");
    Connection::open(&path)
        .expect("create")
        .execute_batch(
            "CREATE TABLE devices (device_id TEXT PRIMARY KEY);
             INSERT INTO devices (device_id) VALUES ('d1'), ('d2');",
        )
        .expect("registry table");
    let q = open(&path);
    assert!(has_trigger(&path));
    let t = at(0);
    for (d, id) in [("d1", "a"), ("d1", "b"), ("d2", "c"), ("d2", "e")] {
        block_on(q.send(&did(d), GEN, msg(id, AckMode::Full), t)).expect("send");
    }
    for d in ["d1", "d2"] {
        let m = block_on(q.receive(&did(d), t))
            .expect("receive")
            .expect("message");
        block_on(q.reject(&did(d), m.lock_token.as_deref().expect("locked"), t)).expect("reject");
    }
    // The registry deletes d1, in its own connection and transaction.
    let registry = Connection::open(&path).expect("registry connection");
    assert_eq!(
        registry
            .execute("DELETE FROM devices WHERE device_id = 'd1'", [])
            .expect("delete"),
        1
    );
    drop(registry);
    assert_eq!(block_on(q.depth(&did("d1"), t)).expect("depth"), 0);
    assert_eq!(
        block_on(q.devices_with_messages()).expect("devices"),
        vec![did("d2")]
    );
    assert_eq!(
        drain_feedback(&q, t),
        vec![("c".to_owned(), "d2".to_owned(), FeedbackStatus::Rejected)]
    );
    let again = block_on(q.send(&did("d1"), GEN, msg("new", AckMode::None), t)).expect("send");
    assert_eq!(again.sequence_number, 1, "the counter went with the device");
}

#[test]
fn trigger_appears_when_the_registry_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("registry.db");
    drop(SqliteQueueStore::open(&path).expect("open without registry"));
    assert!(!has_trigger(&path));
    // A `devices` table without `device_id` is not the registry's: no trigger.
    Connection::open(&path)
        .expect("create")
        .execute_batch(
            "CREATE TABLE devices (id TEXT PRIMARY KEY); INSERT INTO devices VALUES ('x');",
        )
        .expect("other table");
    drop(SqliteQueueStore::open(&path).expect("reopen"));
    assert!(!has_trigger(&path));
    let conn = Connection::open(&path).expect("connection");
    conn.execute_batch(
        "DROP TABLE devices;
         CREATE TABLE devices (device_id TEXT PRIMARY KEY);
         INSERT INTO devices (device_id) VALUES ('d1');",
    )
    .expect("registry table");
    drop(conn);
    let q = open(&path);
    assert!(has_trigger(&path), "created at the next open");
    block_on(q.send(&did("d1"), GEN, msg("a", AckMode::None), at(0))).expect("send");
    Connection::open(&path)
        .expect("registry connection")
        .execute("DELETE FROM devices", [])
        .expect("delete");
    assert_eq!(block_on(q.depth(&did("d1"), at(0))).expect("depth"), 0);
}

#[test]
fn group_commit_shares_transactions() {
    let (store, _dir) = sqlite();
    let q = queues(store, C2dConfig::default());
    std::thread::scope(|scope| {
        for n in 0..8 {
            let q = &q;
            scope.spawn(move || {
                for i in 0..10 {
                    block_on(q.send(
                        &did(&format!("dev{n}")),
                        GEN,
                        msg(&format!("{n}-{i}"), AckMode::None),
                        at(0),
                    ))
                    .expect("send");
                }
            });
        }
    });
    let stats = q.store().write_stats();
    assert!(stats.applies >= 80, "{stats:?}");
    assert!(stats.transactions <= stats.applies, "{stats:?}");
    eprintln!("group commit: {stats:?}");
}

#[test]
fn corrupt_rows_are_reported() {
    let (store, dir) = sqlite();
    let q = queues(store, C2dConfig::default());
    block_on(q.send(&did("d"), GEN, msg("m", AckMode::None), at(0))).expect("send");
    let path = dir.as_ref().expect("dir").path().join("registry.db");
    Connection::open(path)
        .expect("inspect")
        .execute("UPDATE c2d_messages SET properties = '{'", [])
        .expect("corrupt");
    assert!(matches!(
        block_on(q.receive(&did("d"), at(0))),
        Err(C2dError::Store(StoreError::Corrupt(_)))
    ));
}

#[test]
fn unopenable_file_is_unavailable() {
    // A store whose file cannot be created reports Unavailable, not a panic.
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("no-such-dir").join("registry.db");
    assert!(matches!(
        SqliteQueueStore::open(missing),
        Err(StoreError::Unavailable(_))
    ));
}

/// Set in the child process of [`acknowledged_sends_survive_a_crash`]: the database to write.
const CRASH_CHILD_DB: &str = "FERROHUB_C2D_CRASH_CHILD_DB";

/// The child's side of [`acknowledged_sends_survive_a_crash`]; does nothing in a normal run.
#[test]
fn crash_child() {
    let Ok(path) = std::env::var(CRASH_CHILD_DB) else {
        return;
    };
    let q = queues(
        SqliteQueueStore::open(&path).expect("open"),
        C2dConfig {
            max_queue_depth: 1_000_000,
            ..C2dConfig::default()
        },
    );
    // Senders to several devices until killed; each send is reported only once acknowledged.
    std::thread::scope(|scope| {
        for n in 0..4 {
            let q = &q;
            scope.spawn(move || {
                let device = did(&format!("crash{n}"));
                for i in 0u64.. {
                    let id = format!("{}-{n}-{i}", std::process::id());
                    let m = block_on(q.send(&device, GEN, msg(&id, AckMode::None), at(0)))
                        .expect("send");
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ACK {device} {} {id}", m.sequence_number).expect("report");
                    out.flush().expect("flush");
                }
            });
        }
    });
}

/// Runs the child against `path` until it has acknowledged `enough` sends (or `deadline`
/// passed), kills it (SIGKILL, no shutdown) and returns the acknowledgements it printed.
fn run_and_kill_child(
    path: &Path,
    enough: usize,
    deadline: Duration,
) -> Vec<(String, u64, String)> {
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "sqlite_only::crash_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_CHILD_DB, path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the child");
    let stdout = child.stdout.take().expect("child stdout");
    let (tx, rx) = mpsc::channel::<(String, u64, String)>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let parts: Vec<&str> = line.split(' ').collect();
            if let ["ACK", device, seq, id] = parts[..] {
                let seq = seq.parse().expect("sequence number");
                if tx.send((device.to_owned(), seq, id.to_owned())).is_err() {
                    break;
                }
            }
        }
    });
    let started = Instant::now();
    let mut acked = Vec::new();
    while acked.len() < enough && started.elapsed() < deadline {
        if let Ok(ack) = rx.recv_timeout(Duration::from_millis(20)) {
            acked.push(ack);
        }
    }
    child.kill().expect("kill the child");
    child.wait().expect("reap the child");
    reader.join().expect("reader thread");
    acked.extend(rx.try_iter());
    acked
}

/// Kills a process that is sending, three times over, and checks after each crash that every
/// send it had acknowledged is in the database and that numbering goes on without gaps.
#[test]
fn acknowledged_sends_survive_a_crash() {
    const ROUNDS: usize = 3;
    const ENOUGH: usize = 300;
    const DEADLINE: Duration = Duration::from_millis(1500);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("registry.db");
    let mut acked = Vec::new();
    for round in 0..ROUNDS {
        let new = run_and_kill_child(&path, ENOUGH, DEADLINE);
        assert!(
            new.len() >= 20,
            "round {round}: the child acknowledged only {} sends",
            new.len()
        );
        acked.extend(new);

        let store = SqliteQueueStore::open(&path).expect("reopen after the crash");
        let mut last: BTreeMap<String, u64> = BTreeMap::new();
        for (device, seq, id) in &acked {
            let m = block_on(store.message(&did(device), *seq))
                .expect("read")
                .unwrap_or_else(|| {
                    panic!("round {round}: acknowledged message {device}/{seq} ({id}) is missing")
                });
            assert_eq!(m.message.message_id.as_deref(), Some(id.as_str()));
            let e = last.entry(device.clone()).or_default();
            *e = (*e).max(*seq);
        }
        for (device, max_acked) in last {
            let queue = block_on(store.queue(&did(&device))).expect("queue");
            assert!(queue.last_sequence_number >= max_acked);
            let seqs: Vec<u64> = queue.messages.iter().map(|h| h.sequence_number).collect();
            assert_eq!(
                seqs,
                (1..=queue.last_sequence_number).collect::<Vec<_>>(),
                "round {round}: no gaps, no duplicates"
            );
        }
    }
    eprintln!("crash test: {} acknowledged sends checked", acked.len());
}

/// Sends to one device that wait for its lock are enqueued together: far fewer store changes
/// than sends, and every send still gets its own gap-free sequence number.
#[test]
fn waiting_sends_share_a_store_change() {
    const SENDS: usize = 40;
    let dir = tempfile::tempdir().expect("tempdir");
    let q = open(&dir.path().join("registry.db"));
    let t = at(0);
    let before = q.store().write_stats();
    let barrier = std::sync::Barrier::new(SENDS);
    let seqs: BTreeMap<u64, String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..SENDS)
            .map(|i| {
                let (q, barrier) = (&q, &barrier);
                scope.spawn(move || {
                    barrier.wait();
                    let id = format!("m{i}");
                    let m =
                        block_on(q.send(&did("d"), GEN, msg(&id, AckMode::None), t)).expect("send");
                    (m.sequence_number, id)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("sender"))
            .collect()
    });
    assert_eq!(
        seqs.keys().copied().collect::<Vec<_>>(),
        (1..=SENDS as u64).collect::<Vec<_>>()
    );
    let applies = q.store().write_stats().applies - before.applies;
    assert!(
        applies <= (SENDS / 2) as u64,
        "{SENDS} concurrent sends took {applies} store changes"
    );
    // Queue order is the order sequence numbers were given.
    let mut expected = seqs.values();
    while let Some(m) = block_on(q.receive(&did("d"), t)).expect("receive") {
        assert_eq!(m.message.message_id.as_ref(), expected.next());
    }
    assert_eq!(expected.next(), None);
}
