//! The [`EventLog`] contract as a suite every event log runs: the embedded log (ferrohub-log
//! under `ferrohub_server::eventlog::EmbeddedLog`) and [`JetStreamLog`](crate::JetStreamLog)
//! must give the same answers, so the hub and its readers work the same on either.
//!
//! Built only with the `contract-suite` feature. It needs nothing but the trait, so it can move
//! to whichever crate ends up owning the trait. Cases panic on a broken rule, as tests do; each
//! takes a new, empty log with at least two partitions.
//!
//! What the contract says:
//!
//! * appends to a partition get dense sequence numbers from 0 and increasing offsets, in the
//!   order `append` was *called* (not awaited), partitions numbered independently;
//! * records read back equal what was appended (properties in order, repeats kept), from every
//!   [`StartPosition`] kind with the embedded log's meaning, `max` respected;
//! * [`EventLog::info`] reflects every append that has resolved;
//! * [`EventLog::watch`] changes after an append resolves, and a read then sees the records;
//! * many concurrent appenders each keep their own order and lose nothing, and each append's
//!   position is its own record's;
//! * a partition beyond the count is refused; the device hash is the embedded log's.
//!
//! Run it with [`event_log_contract!`](crate::event_log_contract) (one test per case), or with
//! [`run_all`] from a test that has to share an expensive fixture (a NATS cluster) among cases.

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ferrohub_log::{LogError, Position, Record, RecordIn, StartPosition};
use ferrohub_server::eventlog::EventLog;

/// Runs `f` on a new multi-threaded tokio runtime (two workers).
///
/// # Panics
///
/// When the runtime cannot be built.
pub fn run<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"))
        .block_on(f)
}

/// Runs every case in turn, each on a log from `make(case name)`.
pub async fn run_all<L, F, Fut>(mut make: F)
where
    L: EventLog,
    F: FnMut(&'static str) -> Fut,
    Fut: Future<Output = L>,
{
    cases::positions_are_dense_per_partition(Arc::new(make("dense").await)).await;
    cases::records_round_trip(Arc::new(make("roundtrip").await)).await;
    cases::reads_from_every_start_position(Arc::new(make("starts").await)).await;
    cases::info_follows_appends(Arc::new(make("info").await)).await;
    cases::watch_fires_after_durable_appends(Arc::new(make("watch").await)).await;
    cases::concurrent_appenders_keep_their_order(Arc::new(make("concurrent").await)).await;
    cases::many_connections_share_a_partition(Arc::new(make("connections").await)).await;
    cases::call_order_is_partition_order(Arc::new(make("order").await)).await;
    cases::bad_partitions_are_refused(Arc::new(make("bad").await)).await;
    cases::partition_for_is_the_embedded_hash(Arc::new(make("hash").await)).await;
}

/// A record with this body and enqueued time, and a couple of properties.
pub fn record(body: &str, enqueued_ms: i64) -> RecordIn {
    RecordIn {
        enqueued_ms,
        system_properties: vec![(
            Cow::Borrowed("iothub-connection-device-id"),
            Cow::Borrowed("device-1"),
        )],
        application_properties: vec![("k".to_owned(), body.to_owned())],
        body: body.as_bytes().to_vec(),
    }
}

/// The contract's cases.
pub mod cases {
    use super::*;

    /// How long a case waits for something that should happen at once.
    const PATIENCE: Duration = Duration::from_secs(20);

    async fn append<L: EventLog>(log: &L, p: u32, records: Vec<RecordIn>) -> Vec<Position> {
        log.append(p, records).await.expect("append")
    }

    async fn read<L: EventLog>(log: &L, p: u32, from: StartPosition, max: usize) -> Vec<Record> {
        log.read(p, from, max).await.expect("read")
    }

    fn seqs(records: &[Record]) -> Vec<u64> {
        records.iter().map(|r| r.sequence_number).collect()
    }

    /// Sequence numbers start at 0 and are dense per partition; offsets increase.
    pub async fn positions_are_dense_per_partition<L: EventLog>(log: Arc<L>) {
        assert!(log.partition_count() >= 2, "the suite needs two partitions");
        let a = append(
            &*log,
            0,
            (0..3).map(|i| record(&format!("a{i}"), i)).collect(),
        )
        .await;
        let b = append(
            &*log,
            0,
            (0..2).map(|i| record(&format!("b{i}"), i)).collect(),
        )
        .await;
        let c = append(&*log, 1, vec![record("c0", 0)]).await;
        let all: Vec<Position> = a.iter().chain(&b).copied().collect();
        assert_eq!(
            all.iter().map(|p| p.sequence_number).collect::<Vec<_>>(),
            [0, 1, 2, 3, 4]
        );
        assert!(all.iter().all(|p| p.partition == 0));
        assert!(
            all.windows(2).all(|w| w[0].offset < w[1].offset),
            "offsets increase: {all:?}"
        );
        assert_eq!((c[0].partition, c[0].sequence_number), (1, 0));
        assert!(
            append(&*log, 0, Vec::new()).await.is_empty(),
            "an empty append stores nothing"
        );
        let d = append(&*log, 0, vec![record("d", 0)]).await;
        assert_eq!(d[0].sequence_number, 5);
    }

    /// What is read back is what was appended, with the positions the append returned.
    pub async fn records_round_trip<L: EventLog>(log: Arc<L>) {
        let full = RecordIn {
            enqueued_ms: 1_700_000_000_123,
            system_properties: vec![
                (Cow::Borrowed("message-id"), Cow::Owned("m-1".to_owned())),
                (
                    Cow::Borrowed("iothub-connection-device-id"),
                    Cow::Borrowed("d1"),
                ),
                (
                    Cow::Borrowed("content-type"),
                    Cow::Borrowed("application/json"),
                ),
            ],
            application_properties: vec![
                ("k".to_owned(), "v".to_owned()),
                ("k".to_owned(), "repeated".to_owned()),
                ("empty".to_owned(), String::new()),
                ("spaces & = ?:\r\n".to_owned(), "ünïcode ✓".to_owned()),
            ],
            body: vec![0, 1, 2, 255, 0, 42],
        };
        let bare = RecordIn::default();
        let big = RecordIn {
            body: vec![7u8; 200 * 1024],
            ..record("big", -5)
        };
        let pos = append(&*log, 1, vec![full.clone(), bare.clone(), big.clone()]).await;
        let got = read(&*log, 1, StartPosition::Earliest, 10).await;
        assert_eq!(got.len(), 3);
        for ((r, p), want) in got.iter().zip(&pos).zip([&full, &bare, &big]) {
            assert_eq!(r.sequence_number, p.sequence_number);
            assert_eq!(r.offset, p.offset);
            assert_eq!(r.enqueued_ms, want.enqueued_ms);
            let system: Vec<(String, String)> = want
                .system_properties
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            assert_eq!(r.system_properties, system);
            assert_eq!(r.application_properties, want.application_properties);
            assert_eq!(r.body, want.body);
        }
    }

    /// Every kind of start position, with the embedded log's meaning.
    pub async fn reads_from_every_start_position<L: EventLog>(log: Arc<L>) {
        // Times step back at the fourth record: a read by time takes everything after the
        // first match, whatever its time.
        let times = [1000, 2000, 3000, 1500, 4000];
        let pos = append(
            &*log,
            0,
            times
                .iter()
                .enumerate()
                .map(|(i, t)| record(&format!("r{i}"), *t))
                .collect(),
        )
        .await;
        let s = |from, max| {
            let log = log.clone();
            async move { seqs(&read(&*log, 0, from, max).await) }
        };
        use StartPosition::*;
        assert_eq!(s(Earliest, 100).await, [0, 1, 2, 3, 4]);
        assert_eq!(s(Earliest, 2).await, [0, 1]);
        assert_eq!(s(Earliest, 0).await, Vec::<u64>::new());
        assert_eq!(s(Latest, 100).await, Vec::<u64>::new());
        let seq = |seq, inclusive| Sequence { seq, inclusive };
        assert_eq!(s(seq(2, true), 100).await, [2, 3, 4]);
        assert_eq!(s(seq(2, false), 100).await, [3, 4]);
        assert_eq!(s(seq(2, true), 1).await, [2]);
        assert_eq!(s(seq(0, true), 100).await, [0, 1, 2, 3, 4]);
        assert_eq!(s(seq(4, false), 100).await, Vec::<u64>::new());
        assert_eq!(s(seq(99, true), 100).await, Vec::<u64>::new());
        let off = |offset, inclusive| Offset { offset, inclusive };
        assert_eq!(s(off(pos[2].offset, true), 100).await, [2, 3, 4]);
        assert_eq!(s(off(pos[2].offset, false), 100).await, [3, 4]);
        assert_eq!(
            s(off(pos[1].offset + 1, true), 100).await,
            [2, 3, 4],
            "the first record at or after an offset between records"
        );
        assert_eq!(s(off(0, true), 100).await, [0, 1, 2, 3, 4]);
        assert_eq!(s(off(pos[4].offset, false), 100).await, Vec::<u64>::new());
        assert_eq!(s(EnqueuedTime(2000), 100).await, [1, 2, 3, 4]);
        assert_eq!(s(EnqueuedTime(2500), 100).await, [2, 3, 4]);
        assert_eq!(s(EnqueuedTime(2500), 2).await, [2, 3]);
        assert_eq!(s(EnqueuedTime(0), 100).await, [0, 1, 2, 3, 4]);
        assert_eq!(s(EnqueuedTime(4001), 100).await, Vec::<u64>::new());
        // The other partition is untouched.
        assert!(read(&*log, 1, Earliest, 100).await.is_empty());
    }

    /// `info` reflects every resolved append.
    pub async fn info_follows_appends<L: EventLog>(log: Arc<L>) {
        let empty = log.info(0).expect("info");
        assert_eq!(empty.partition, 0);
        assert!(empty.is_empty);
        assert_eq!(empty.begin_sequence_number, 0);
        assert_eq!(empty.last_enqueued_sequence_number, None);
        assert_eq!(empty.last_enqueued_offset, None);
        assert_eq!(empty.last_enqueued_time_ms, None);
        let pos = append(
            &*log,
            0,
            vec![record("a", 10), record("b", 20), record("c", 30)],
        )
        .await;
        let info = log.info(0).expect("info");
        assert!(!info.is_empty);
        assert_eq!(info.begin_sequence_number, 0);
        assert_eq!(info.last_enqueued_sequence_number, Some(2));
        assert_eq!(info.last_enqueued_offset, Some(pos[2].offset));
        assert_eq!(info.last_enqueued_time_ms, Some(30));
        let more = append(&*log, 0, vec![record("d", 25)]).await;
        let info = log.info(0).expect("info");
        assert_eq!(info.last_enqueued_sequence_number, Some(3));
        assert_eq!(info.last_enqueued_offset, Some(more[0].offset));
        assert_eq!(
            info.last_enqueued_time_ms,
            Some(25),
            "the newest record's time"
        );
        assert!(
            log.info(1).expect("info").is_empty,
            "other partitions stay empty"
        );
    }

    /// A watcher wakes after an append resolves, and a read then sees the records.
    pub async fn watch_fires_after_durable_appends<L: EventLog>(log: Arc<L>) {
        let mut changes = log.watch();
        changes.borrow_and_update();
        let waiter = tokio::spawn(async move { changes.changed().await.is_ok() });
        let pos = append(&*log, 1, vec![record("w", 1)]).await;
        let woke = tokio::time::timeout(PATIENCE, waiter)
            .await
            .expect("the watcher wakes in time")
            .expect("watcher task");
        assert!(woke, "the watch sender lives as long as the log");
        let got = read(&*log, 1, StartPosition::Earliest, 10).await;
        assert_eq!(seqs(&got), [pos[0].sequence_number]);
        // A watcher that saw everything waits for the next append.
        let mut changes = log.watch();
        changes.borrow_and_update();
        assert!(!changes.has_changed().expect("live"));
        append(&*log, 0, vec![record("x", 2)]).await;
        tokio::time::timeout(PATIENCE, changes.changed())
            .await
            .expect("woken in time")
            .expect("live");
    }

    /// Many appenders at once: nothing lost, dense numbers, each appender's order kept.
    pub async fn concurrent_appenders_keep_their_order<L: EventLog>(log: Arc<L>) {
        const TASKS: usize = 8;
        const APPENDS: usize = 25;
        let mut handles = Vec::new();
        for t in 0..TASKS {
            let log = log.clone();
            handles.push(tokio::spawn(async move {
                // Submitted one after the other, awaited together, as a connection does.
                let pending: Vec<_> = (0..APPENDS)
                    .map(|i| {
                        log.append(
                            0,
                            vec![
                                record(&format!("t{t}-{i:03}-a"), 0),
                                record(&format!("t{t}-{i:03}-b"), 0),
                            ],
                        )
                    })
                    .collect();
                let mut positions = Vec::new();
                for p in futures_util::future::join_all(pending).await {
                    positions.extend(p.expect("append"));
                }
                positions
            }));
        }
        let mut all = Vec::new();
        for h in handles {
            all.extend(h.await.expect("appender task"));
        }
        let mut numbers: Vec<u64> = all.iter().map(|p| p.sequence_number).collect();
        numbers.sort_unstable();
        let n = (TASKS * APPENDS * 2) as u64;
        assert_eq!(numbers, (0..n).collect::<Vec<_>>(), "dense and distinct");
        let got = read(&*log, 0, StartPosition::Earliest, 10_000).await;
        assert_eq!(got.len() as u64, n);
        for t in 0..TASKS {
            let mine: Vec<&[u8]> = got
                .iter()
                .map(|r| r.body.as_slice())
                .filter(|b| b.starts_with(format!("t{t}-").as_bytes()))
                .collect();
            assert_eq!(mine.len(), APPENDS * 2);
            assert!(
                mine.windows(2).all(|w| w[0] < w[1]),
                "appender {t}'s records out of order"
            );
        }
    }

    /// Many connections appending single records to the same partitions at once (as devices
    /// publishing telemetry do): every append's position is the one its own record was stored
    /// at, each connection's records are numbered in its call order, and each partition's
    /// numbers are dense.
    pub async fn many_connections_share_a_partition<L: EventLog>(log: Arc<L>) {
        const CONNECTIONS: usize = 64;
        const APPENDS: usize = 12;
        let mut handles = Vec::new();
        for c in 0..CONNECTIONS {
            let log = log.clone();
            handles.push(tokio::spawn(async move {
                // Half the connections write to partition 0 only, the others alternate
                // between 0 and 1; each keeps up to 4 appends in flight.
                let mut mine = Vec::new();
                for chunk in (0..APPENDS).collect::<Vec<_>>().chunks(4) {
                    let pending: Vec<_> = chunk
                        .iter()
                        .map(|&i| {
                            let p = if c % 2 == 1 && i % 2 == 1 { 1 } else { 0 };
                            let body = format!("c{c:02}-{i:02}");
                            (body.clone(), log.append(p, vec![record(&body, i as i64)]))
                        })
                        .collect();
                    for (body, f) in pending {
                        let positions = f.await.expect("append");
                        assert_eq!(positions.len(), 1);
                        mine.push((body, positions[0]));
                    }
                }
                mine
            }));
        }
        let mut all = Vec::new();
        for h in handles {
            let mine = h.await.expect("connection task");
            for p in 0..2 {
                let numbers: Vec<u64> = mine
                    .iter()
                    .filter(|(_, pos)| pos.partition == p)
                    .map(|(_, pos)| pos.sequence_number)
                    .collect();
                assert!(
                    numbers.windows(2).all(|w| w[0] < w[1]),
                    "a connection's records numbered out of call order: {numbers:?}"
                );
            }
            all.extend(mine);
        }
        for p in 0..2 {
            let got = read(&*log, p, StartPosition::Earliest, 10_000).await;
            let mut expected: Vec<(u64, String)> = all
                .iter()
                .filter(|(_, pos)| pos.partition == p)
                .map(|(body, pos)| (pos.sequence_number, body.clone()))
                .collect();
            expected.sort();
            let stored: Vec<(u64, String)> = got
                .iter()
                .map(|r| {
                    (
                        r.sequence_number,
                        String::from_utf8_lossy(&r.body).into_owned(),
                    )
                })
                .collect();
            assert_eq!(
                stored, expected,
                "partition {p}: each append's position holds its own record, densely"
            );
            assert_eq!(
                stored.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
                (0..stored.len() as u64).collect::<Vec<_>>()
            );
            let info = log.info(p).expect("info");
            assert_eq!(
                info.last_enqueued_sequence_number,
                Some(stored.len() as u64 - 1)
            );
        }
        assert_eq!(all.len(), CONNECTIONS * APPENDS);
    }

    /// Records are submitted when `append` is called: awaiting in another order changes
    /// nothing.
    pub async fn call_order_is_partition_order<L: EventLog>(log: Arc<L>) {
        let pending: Vec<_> = (0..50)
            .map(|i| log.append(0, vec![record(&format!("{i}"), i)]))
            .collect();
        let mut positions = Vec::new();
        for f in pending.into_iter().rev() {
            positions.push(f.await.expect("append")[0].sequence_number);
        }
        positions.reverse();
        assert_eq!(positions, (0..50).collect::<Vec<u64>>());
    }

    /// A partition beyond the count is refused by every operation.
    pub async fn bad_partitions_are_refused<L: EventLog>(log: Arc<L>) {
        let count = log.partition_count();
        let no_such = |e: LogError| matches!(e, LogError::NoSuchPartition { partition, .. } if partition == count);
        assert!(no_such(
            log.append(count, vec![record("x", 0)])
                .await
                .expect_err("append beyond the count")
        ));
        assert!(no_such(
            log.read(count, StartPosition::Earliest, 1)
                .await
                .expect_err("read beyond the count")
        ));
        assert!(no_such(log.info(count).expect_err("info beyond the count")));
    }

    /// Devices map to partitions as in the embedded log.
    pub async fn partition_for_is_the_embedded_hash<L: EventLog>(log: Arc<L>) {
        let n = log.partition_count();
        for id in ["", "a", "device-1", "thermostat-42", "ünïcode"] {
            assert_eq!(log.partition_for(id), ferrohub_log::partition_for(id, n));
        }
    }
}

/// Generates one `#[test]` per contract case in a module named `$name`. `$make` is an
/// expression of a future giving `(log, guard)`, awaited once per case on a fresh runtime; the
/// guard (a temporary directory, a NATS server) lives until the case ends.
#[macro_export]
macro_rules! event_log_contract {
    ($name:ident, $make:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            use $crate::eventlog_contract::{cases, run};

            $crate::event_log_contract!(@case $make, positions_are_dense_per_partition);
            $crate::event_log_contract!(@case $make, records_round_trip);
            $crate::event_log_contract!(@case $make, reads_from_every_start_position);
            $crate::event_log_contract!(@case $make, info_follows_appends);
            $crate::event_log_contract!(@case $make, watch_fires_after_durable_appends);
            $crate::event_log_contract!(@case $make, concurrent_appenders_keep_their_order);
            $crate::event_log_contract!(@case $make, many_connections_share_a_partition);
            $crate::event_log_contract!(@case $make, call_order_is_partition_order);
            $crate::event_log_contract!(@case $make, bad_partitions_are_refused);
            $crate::event_log_contract!(@case $make, partition_for_is_the_embedded_hash);
        }
    };
    (@case $make:expr, $case:ident) => {
        #[test]
        fn $case() {
            run(async {
                let (log, _guard) = $make.await;
                cases::$case(::std::sync::Arc::new(log)).await;
            });
        }
    };
}
