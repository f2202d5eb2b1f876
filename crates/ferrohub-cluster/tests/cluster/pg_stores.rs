//! What only the PostgreSQL stores promise: migrations that several nodes can run at once,
//! notifications sent on commit, the queues linked to the registry, and recovery from an
//! outage.

use std::time::Duration;

use chrono::{DateTime, Utc};
use ferrohub_c2d::contract::{did, msg};
use ferrohub_c2d::{AckMode, C2dConfig, C2dQueues, QueueStore};
use ferrohub_cluster::postgres::{C2D_CHANNEL, REGISTRY_CHANNEL, RegistryNotification};
use ferrohub_cluster::testing::{PrivatePostgres, TestDatabase};
use ferrohub_cluster::{PgConfig, PgDatabase, PgQueueStore, PgRegistryStore};
use ferrohub_registry::contract::{device, module};
use ferrohub_registry::{Change, Expect, RegistryStore, StoreError};
use futures_util::StreamExt;
use tokio::sync::mpsc;

fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000 + secs, 0).expect("valid time")
}

/// A `LISTEN` connection to `url` on `channels`, forwarding (channel, payload) pairs for as
/// long as the returned client lives.
async fn listen(
    url: &str,
    channels: &[&str],
) -> (
    tokio_postgres::Client,
    mpsc::UnboundedReceiver<(String, String)>,
) {
    let (client, mut connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("listen connection");
    let (tx, rx) = mpsc::unbounded_channel();
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    tokio::spawn(async move {
        while let Some(Ok(message)) = messages.next().await {
            if let tokio_postgres::AsyncMessage::Notification(n) = message
                && tx
                    .send((n.channel().to_owned(), n.payload().to_owned()))
                    .is_err()
            {
                return;
            }
        }
    });
    for channel in channels {
        client
            .batch_execute(&format!("LISTEN {channel}"))
            .await
            .expect("LISTEN");
    }
    (client, rx)
}

async fn next_note(rx: &mut mpsc::UnboundedReceiver<(String, String)>) -> (String, String) {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a notification within the deadline")
        .expect("the listener runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_together_migrate_once() {
    let database = TestDatabase::create().await.expect("database");
    let config = database.config();
    let mut opens = Vec::new();
    for _ in 0..8 {
        let config = config.clone();
        opens.push(tokio::spawn(async move {
            let db = PgDatabase::new(&config).expect("pool");
            PgRegistryStore::open(db.clone()).await.expect("registry");
            PgQueueStore::open(db).await.expect("queues");
        }));
    }
    for open in opens {
        open.await.expect("open task");
    }
    let (client, connection) = tokio_postgres::connect(&database.url(), tokio_postgres::NoTls)
        .await
        .expect("inspect");
    let task = tokio::spawn(connection);
    let rows = client
        .query(
            "SELECT component, version FROM schema_migrations ORDER BY component, version",
            &[],
        )
        .await
        .expect("migrations");
    let applied: Vec<(String, i32)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        applied,
        [
            ("c2d".to_owned(), 1),
            ("registry".to_owned(), 1),
            ("registry".to_owned(), 2)
        ]
    );
    // A database from a newer build is refused, not misread.
    client
        .execute(
            "INSERT INTO schema_migrations (component, version) VALUES ('registry', 99)",
            &[],
        )
        .await
        .expect("bump");
    let db = PgDatabase::new(&config).expect("pool");
    match PgRegistryStore::open(db).await {
        Err(StoreError::Incompatible(m)) => assert!(m.contains("99"), "{m}"),
        other => panic!("expected Incompatible, got {other:?}"),
    }
    drop(client);
    let _ = task.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_are_announced_on_commit_only() {
    let database = TestDatabase::create().await.expect("database");
    let db = PgDatabase::new(&database.config()).expect("pool");
    let registry = PgRegistryStore::open(db.clone()).await.expect("registry");
    let queues = PgQueueStore::open(db).await.expect("queues");
    let (_listener, mut notes) = listen(&database.url(), &[REGISTRY_CHANNEL, C2D_CHANNEL]).await;

    registry
        .apply(vec![
            Change::PutDevice {
                device: device("d1", 1),
                expect: Expect::Absent,
            },
            Change::PutModule {
                module: module("d1", "m1", 4),
                expect: Expect::Absent,
            },
        ])
        .await
        .expect("apply");
    let (channel, payload) = next_note(&mut notes).await;
    assert_eq!(channel, REGISTRY_CHANNEL);
    assert_eq!(
        RegistryNotification::parse(&payload).expect("payload"),
        RegistryNotification {
            device: "d1".into(),
            module: None,
            version: Some(1),
        }
    );
    let (_, payload) = next_note(&mut notes).await;
    assert_eq!(
        RegistryNotification::parse(&payload).expect("payload"),
        RegistryNotification {
            device: "d1".into(),
            module: Some("m1".into()),
            version: Some(4),
        }
    );

    // A conflicting apply announces nothing: the next notification is the later delete's.
    assert_eq!(
        registry
            .apply(vec![
                Change::PutDevice {
                    device: device("d2", 0),
                    expect: Expect::Absent,
                },
                Change::PutDevice {
                    device: device("d1", 9),
                    expect: Expect::Version(8),
                },
            ])
            .await,
        Err(StoreError::Conflict { index: 1 })
    );
    registry
        .apply(vec![Change::DeleteDevice {
            id: ferrohub_registry::contract::did("d1"),
            expect: Expect::Version(1),
        }])
        .await
        .expect("delete");
    let (_, payload) = next_note(&mut notes).await;
    assert_eq!(
        RegistryNotification::parse(&payload).expect("payload"),
        RegistryNotification {
            device: "d1".into(),
            module: None,
            version: None,
        }
    );

    // A queued message wakes its device.
    registry
        .apply(vec![Change::PutDevice {
            device: device("d3", 0),
            expect: Expect::Absent,
        }])
        .await
        .expect("create d3");
    let _ = next_note(&mut notes).await;
    let q = C2dQueues::open(queues, C2dConfig::default())
        .await
        .expect("queues");
    q.send(&did("d3"), "gen", msg("m1", AckMode::None), at(0))
        .await
        .expect("send");
    assert_eq!(
        next_note(&mut notes).await,
        (C2D_CHANNEL.to_owned(), "d3".to_owned())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_device_purges_its_queue() {
    let database = TestDatabase::create().await.expect("database");
    let db = PgDatabase::new(&database.config()).expect("pool");
    // Queue rows written before the registry existed, for a device it will not have, are
    // removed when the queues are linked to the registry.
    let early = PgQueueStore::open(db.clone()).await.expect("queues first");
    let q = C2dQueues::open(early, C2dConfig::default())
        .await
        .expect("queues");
    q.send(&did("ghost"), "gen", msg("g", AckMode::None), at(0))
        .await
        .expect("send to a device the registry never had");
    let registry = PgRegistryStore::open(db.clone()).await.expect("registry");
    let store = PgQueueStore::open(db).await.expect("queues linked");
    assert!(
        store
            .devices_with_messages()
            .await
            .expect("devices")
            .is_empty()
    );

    registry
        .apply(vec![
            Change::PutDevice {
                device: device("gone", 0),
                expect: Expect::Absent,
            },
            Change::PutDevice {
                device: device("stays", 0),
                expect: Expect::Absent,
            },
        ])
        .await
        .expect("devices");
    let q = C2dQueues::open(store.clone(), C2dConfig::default())
        .await
        .expect("queues");
    for (d, id) in [("gone", "g1"), ("gone", "g2"), ("stays", "s1")] {
        q.send(&did(d), "gen", msg(id, AckMode::Full), at(0))
            .await
            .expect("send");
    }
    let g1 = q.receive(&did("gone"), at(1)).await.expect("receive");
    let token = g1.and_then(|m| m.lock_token).expect("locked");
    q.reject(&did("gone"), &token, at(1)).await.expect("reject");
    assert!(
        !store
            .available_feedback(at(1), 10)
            .await
            .expect("feedback")
            .is_empty()
    );

    registry
        .apply(vec![Change::DeleteDevice {
            id: did("gone"),
            expect: Expect::Version(0),
        }])
        .await
        .expect("delete");
    let queue = store.queue(&did("gone")).await.expect("queue");
    assert_eq!(queue, Default::default(), "messages and counter are gone");
    assert!(
        store
            .available_feedback(at(1), 10)
            .await
            .expect("feedback")
            .is_empty(),
        "its feedback is gone"
    );
    assert_eq!(
        q.depth(&did("stays"), at(1)).await.expect("depth"),
        1,
        "other queues stay"
    );
    // A message for a device that does not exist (any more) is refused as a conflict.
    let e = q
        .send(&did("gone"), "gen", msg("late", AckMode::None), at(2))
        .await
        .expect_err("the device is gone");
    assert!(
        matches!(
            e,
            ferrohub_c2d::C2dError::Store(ferrohub_c2d::StoreError::Conflict { .. })
        ),
        "{e:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_fail_while_postgres_is_down_and_recover() {
    let pg = tokio::task::spawn_blocking(PrivatePostgres::start)
        .await
        .expect("task")
        .expect("private PostgreSQL");
    let database = TestDatabase::create_on(&pg.base()).await.expect("database");
    let mut config = PgConfig::new(database.url());
    config.connect_timeout = Duration::from_secs(1);
    config.wait_timeout = Duration::from_secs(1);
    config.op_timeout = Duration::from_secs(3);
    let db = PgDatabase::new(&config).expect("pool");
    let registry = PgRegistryStore::open(db.clone()).await.expect("registry");
    let queues = PgQueueStore::open(db).await.expect("queues");
    registry
        .apply(vec![Change::PutDevice {
            device: device("d1", 0),
            expect: Expect::Absent,
        }])
        .await
        .expect("write while up");

    tokio::task::block_in_place(|| pg.stop()).expect("stop PostgreSQL");
    for _ in 0..3 {
        match registry.device(&did("d1")).await {
            Err(StoreError::Unavailable(_)) => {}
            other => panic!("expected Unavailable while down, got {other:?}"),
        }
        match registry
            .apply(vec![Change::PutDevice {
                device: device("d2", 0),
                expect: Expect::Absent,
            }])
            .await
        {
            Err(StoreError::Unavailable(_)) => {}
            other => panic!("expected Unavailable while down, got {other:?}"),
        }
        match queues.queue(&did("d1")).await {
            Err(ferrohub_c2d::StoreError::Unavailable(_)) => {}
            other => panic!("expected Unavailable while down, got {other:?}"),
        }
    }

    tokio::task::block_in_place(|| pg.start_again()).expect("start PostgreSQL again");
    // Broken pooled connections are replaced: the first operations after the restart work.
    assert_eq!(
        registry
            .device(&did("d1"))
            .await
            .expect("read after restart")
            .map(|d| d.version),
        Some(0)
    );
    registry
        .apply(vec![Change::PutDevice {
            device: device("d2", 0),
            expect: Expect::Absent,
        }])
        .await
        .expect("write after restart");
    assert_eq!(
        queues.queue(&did("d1")).await.expect("queue after restart"),
        Default::default()
    );
    drop(database);
    drop(pg);
}

/// The long fault run (`bench/cluster-faults`): for `FERROHUB_FAULT_SECONDS` (default 120),
/// stop a private PostgreSQL (immediate, like a crash) every few seconds and start it again,
/// while 8 writers create devices; every create that returned `Ok` must be there at the end,
/// and writes must work again after every restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a long fault run; bench/cluster-faults runs it"]
async fn fault_postgres_stopped_and_started_in_turn() {
    let seconds: u64 = std::env::var("FERROHUB_FAULT_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    let pg = tokio::task::spawn_blocking(PrivatePostgres::start)
        .await
        .expect("task")
        .expect("private PostgreSQL");
    let database = TestDatabase::create_on(&pg.base()).await.expect("database");
    let mut config = PgConfig::new(database.url());
    config.connect_timeout = Duration::from_secs(1);
    config.wait_timeout = Duration::from_secs(1);
    config.op_timeout = Duration::from_secs(3);
    let registry = PgRegistryStore::open(PgDatabase::new(&config).expect("pool"))
        .await
        .expect("registry");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ok_count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut writers = Vec::new();
    for w in 0..8 {
        let (registry, stop, ok_count) = (registry.clone(), stop.clone(), ok_count.clone());
        writers.push(tokio::spawn(async move {
            let mut created = Vec::new();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let id = format!("w{w}-{i}");
                i += 1;
                match registry
                    .apply(vec![Change::PutDevice {
                        device: device(&id, 0),
                        expect: Expect::Absent,
                    }])
                    .await
                {
                    Ok(()) => {
                        created.push(id);
                        ok_count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Err(StoreError::Unavailable(_)) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(e) => panic!("unexpected error {e:?}"),
                }
            }
            created
        }));
    }
    let wait_for = |n: usize| {
        let ok_count = ok_count.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(60), async {
                while ok_count.load(std::sync::atomic::Ordering::Relaxed) < n {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
            .await
            .is_ok()
        }
    };
    let end = tokio::time::Instant::now() + Duration::from_secs(seconds);
    let mut rounds = 0;
    while tokio::time::Instant::now() < end {
        let before = ok_count.load(std::sync::atomic::Ordering::Relaxed);
        assert!(wait_for(before + 100).await, "writes work (round {rounds})");
        tokio::task::block_in_place(|| pg.stop()).expect("stop");
        tokio::task::block_in_place(|| pg.start_again()).expect("start");
        rounds += 1;
    }
    let before = ok_count.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        wait_for(before + 100).await,
        "writes work after the last restart"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut created = Vec::new();
    for w in writers {
        created.extend(w.await.expect("writer"));
    }
    eprintln!(
        "{rounds} stop/start rounds, {} devices created",
        created.len()
    );
    let ids: Vec<ferrohub_types::DeviceId> = created.iter().map(|id| did(id)).collect();
    for chunk in ids.chunks(1000) {
        let found = registry.devices_by_id(chunk).await.expect("read back");
        for (id, d) in chunk.iter().zip(found) {
            assert!(d.is_some(), "acknowledged device {id} is missing");
        }
    }
}
