//! What only the JetStream log promises: retried publishes stored once, nodes seeing each
//! other's appends, state restored when a node starts, a fixed partition count, and no
//! acknowledged record lost when a NATS server of three is killed.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ferrohub_cluster::eventlog_contract::{record, run};
use ferrohub_cluster::testing::NatsCluster;
use ferrohub_cluster::{JetStreamConfig, JetStreamLog};
use ferrohub_log::{LogError, StartPosition};
use ferrohub_server::eventlog::EventLog;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use crate::eventlog_contract::{config, nats_server};

const PATIENCE: Duration = Duration::from_secs(20);

#[test]
fn a_retried_publish_is_stored_once() {
    run(async {
        let server = nats_server().await;
        let log = JetStreamLog::open(config(vec![server.url()], 1))
            .await
            .expect("open");
        let r = record("once", 7);
        let (first, dup) = log.publish_with_id(0, "id-1", &r).await.expect("publish");
        assert!(!dup);
        let (again, dup) = log.publish_with_id(0, "id-1", &r).await.expect("retry");
        assert_eq!(
            again, first,
            "the retry is answered with the first copy's sequence"
        );
        assert!(dup, "and flagged as a duplicate");
        log.publish_with_id(0, "id-2", &r)
            .await
            .expect("another id");
        let got = log
            .read(0, StartPosition::Earliest, 10)
            .await
            .expect("read");
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].body, b"once");
    });
}

#[test]
fn nodes_see_each_others_appends() {
    run(async {
        let server = nats_server().await;
        let config = config(vec![server.url()], 1);
        let a = JetStreamLog::open(config.clone()).await.expect("node a");
        let b = JetStreamLog::open(config).await.expect("node b");
        let mut changes = b.watch();
        changes.borrow_and_update();
        let pos = a
            .append(2, vec![record("from-a", 42), record("again", 43)])
            .await
            .expect("append on a");
        // b hears of it without polling, and then knows and reads it.
        tokio::time::timeout(PATIENCE, async {
            loop {
                changes.changed().await.expect("watch");
                if b.info(2).expect("info").last_enqueued_sequence_number == Some(1) {
                    break;
                }
            }
        })
        .await
        .expect("b learns of a's append in time");
        let info = b.info(2).expect("info");
        assert_eq!(info.last_enqueued_offset, Some(pos[1].offset));
        assert_eq!(info.last_enqueued_time_ms, Some(43));
        let got = b
            .read(2, StartPosition::Earliest, 10)
            .await
            .expect("read on b");
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].body, b"from-a");
        // Both append to one partition: numbers stay dense.
        let pb = b.append(2, vec![record("from-b", 44)]).await.expect("b");
        let pa = a.append(2, vec![record("a2", 45)]).await.expect("a");
        let mut seqs = [pb[0].sequence_number, pa[0].sequence_number];
        seqs.sort_unstable();
        assert_eq!(seqs, [2, 3]);
    });
}

#[test]
fn a_node_starting_later_knows_the_partitions() {
    run(async {
        let server = nats_server().await;
        let config = config(vec![server.url()], 1);
        let first = JetStreamLog::open(config.clone()).await.expect("open");
        first
            .append(1, vec![record("x", 100), record("y", 200)])
            .await
            .expect("append");
        drop(first);
        let later = JetStreamLog::open(config.clone()).await.expect("reopen");
        let info = later.info(1).expect("info");
        assert_eq!(info.last_enqueued_sequence_number, Some(1));
        assert_eq!(info.last_enqueued_time_ms, Some(200));
        assert!(later.info(0).expect("info").is_empty);
        let pos = later
            .append(1, vec![record("z", 300)])
            .await
            .expect("append");
        assert_eq!(pos[0].sequence_number, 2);

        // The partition count is fixed.
        let mut other = config;
        other.partitions = 2;
        match JetStreamLog::open(other).await {
            Err(LogError::PartitionCountMismatch {
                found: 4,
                expected: 2,
                ..
            }) => {}
            other => panic!("expected PartitionCountMismatch, got {other:?}"),
        }
    });
}

#[test]
fn oversized_records_are_refused_whole() {
    run(async {
        let server = nats_server().await;
        let mut config = config(vec![server.url()], 1);
        config.max_record_bytes = 4096;
        let log = JetStreamLog::open(config).await.expect("open");
        let mut big = record("big", 0);
        big.body = vec![0; 5000];
        match log.append(0, vec![record("small", 0), big]).await {
            Err(LogError::RecordTooLarge { limit: 4096, .. }) => {}
            other => panic!("expected RecordTooLarge, got {other:?}"),
        }
        assert!(
            log.read(0, StartPosition::Earliest, 10)
                .await
                .expect("read")
                .is_empty(),
            "nothing of the append was stored"
        );
    });
}

#[test]
fn health_follows_the_nats_connection() {
    run(async {
        let mut server = nats_server().await;
        let mut config = config(vec![server.url()], 1);
        config.append_timeout = Duration::from_secs(2);
        let log = JetStreamLog::open(config).await.expect("open");
        assert_eq!(log.health(), Ok(()));
        server.kill().expect("kill");
        let until = |healthy: bool| {
            let log = &log;
            async move {
                tokio::time::timeout(PATIENCE, async {
                    while log.health().is_ok() != healthy {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                })
                .await
                .is_ok()
            }
        };
        assert!(until(false).await, "unhealthy once the server is gone");
        assert!(
            log.append(0, vec![record("lost", 0)]).await.is_err() || log.health().is_ok(),
            "an append without a server fails (or the client is already back)"
        );
        tokio::task::block_in_place(|| server.start_again()).expect("restart");
        assert!(until(true).await, "healthy again once the server is back");
        log.append(0, vec![record("back", 1)])
            .await
            .expect("appends work again");
    });
}

#[test]
fn appends_that_cannot_be_acknowledged_fail() {
    run(async {
        let mut server = nats_server().await;
        let mut config = config(vec![server.url()], 1);
        config.append_timeout = Duration::from_secs(2);
        config.request_timeout = Duration::from_millis(500);
        let log = Arc::new(JetStreamLog::open(config).await.expect("open"));
        log.append(0, vec![record("before", 0)])
            .await
            .expect("an append while the server runs");
        server.kill().expect("kill");
        // Appends from many connections at once, none of which can be stored: every one
        // fails (by its deadline), none is answered as stored.
        let pending: Vec<_> = (0..50)
            .map(|i| {
                let log = log.clone();
                tokio::spawn(async move { log.append(i % 2, vec![record("lost", 1)]).await })
            })
            .collect();
        for p in pending {
            match p.await.expect("task") {
                Err(LogError::Unavailable(_)) => {}
                other => panic!("an append without a server must fail, got {other:?}"),
            }
        }
    });
}

#[test]
fn invalid_configurations_are_refused() {
    run(async {
        for bad in [
            JetStreamConfig {
                prefix: "has.dot".into(),
                ..JetStreamConfig::new(vec!["nats://127.0.0.1:1".into()])
            },
            JetStreamConfig {
                partitions: 0,
                ..JetStreamConfig::new(vec!["nats://127.0.0.1:1".into()])
            },
            JetStreamConfig::new(Vec::new()),
        ] {
            assert!(matches!(
                JetStreamLog::open(bad).await,
                Err(LogError::Config(_))
            ));
        }
    });
}

/// Acknowledged records: (partition, body) → sequence number.
type Acknowledged = BTreeMap<(u32, String), u64>;

/// Writers appending to a log until stopped, each keeping a few appends in flight.
struct Writers {
    handles: Vec<tokio::task::JoinHandle<(Acknowledged, usize)>>,
    acked: Arc<AtomicUsize>,
    stop: Arc<tokio::sync::Notify>,
}

impl Writers {
    /// `n` writers, writer `w` appending to partition `w % partitions`.
    fn start(log: &Arc<JetStreamLog>, n: usize, partitions: u32) -> Writers {
        let acked = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(tokio::sync::Notify::new());
        let mut handles = Vec::new();
        for w in 0..n {
            let (log, acked, stop) = (log.clone(), acked.clone(), stop.clone());
            let p = (w as u32) % partitions;
            handles.push(tokio::spawn(async move {
                let mut ok = BTreeMap::new();
                let mut failed = 0usize;
                let mut pending = FuturesUnordered::new();
                let stopped = stop.notified();
                tokio::pin!(stopped);
                let mut i = 0u32;
                loop {
                    while pending.len() < 4 {
                        let body = format!("w{w:02}-{i:07}");
                        let fut = log.append(p, vec![record(&body, i64::from(i))]);
                        pending.push(async move { (body, fut.await) });
                        i += 1;
                    }
                    tokio::select! {
                        _ = &mut stopped => break,
                        Some((body, result)) = pending.next() => match result {
                            Ok(pos) => {
                                ok.insert((p, body), pos[0].sequence_number);
                                acked.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(_) => failed += 1,
                        },
                    }
                }
                // What is still in flight resolves one way or the other.
                while let Some((body, result)) = pending.next().await {
                    match result {
                        Ok(pos) => {
                            ok.insert((p, body), pos[0].sequence_number);
                        }
                        Err(_) => failed += 1,
                    }
                }
                (ok, failed)
            }));
        }
        Writers {
            handles,
            acked,
            stop,
        }
    }

    fn acked(&self) -> usize {
        self.acked.load(Ordering::Relaxed)
    }

    /// Waits until `n` appends were acknowledged in all, for at most `limit`.
    async fn wait_for(&self, n: usize, limit: Duration) -> bool {
        tokio::time::timeout(limit, async {
            while self.acked() < n {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .is_ok()
    }

    /// Stops the writers; returns every acknowledged record ((partition, body) → sequence
    /// number) and the number of failed appends.
    async fn finish(self) -> (Acknowledged, usize) {
        self.stop.notify_waiters();
        let mut acknowledged = BTreeMap::new();
        let mut failed = 0;
        for h in self.handles {
            let (ok, f) = h.await.expect("writer");
            acknowledged.extend(ok);
            failed += f;
        }
        (acknowledged, failed)
    }
}

/// One read, retried while the stream is unavailable (a killed server's clients reconnect and
/// the stream may still be electing a leader) until `deadline` has passed.
async fn read_until(
    log: &JetStreamLog,
    partition: u32,
    from: StartPosition,
    deadline: Duration,
) -> Vec<ferrohub_log::Record> {
    let until = tokio::time::Instant::now() + deadline;
    loop {
        match log.read(partition, from, 1000).await {
            Ok(batch) => return batch,
            Err(e) if tokio::time::Instant::now() < until => {
                eprintln!("read of partition {partition} failed ({e:?}); retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("read back: {e:?}"),
        }
    }
}

/// Reads partitions `0..partitions` whole and checks that every acknowledged record is there,
/// once, at the sequence number its append returned.
async fn check_acknowledged(log: &JetStreamLog, partitions: u32, acknowledged: &Acknowledged) {
    let mut found = BTreeMap::new();
    for p in 0..partitions {
        let mut seen = HashSet::new();
        let mut from = StartPosition::Earliest;
        loop {
            let batch = read_until(log, p, from, Duration::from_secs(60)).await;
            let Some(last) = batch.last() else { break };
            from = StartPosition::Sequence {
                seq: last.sequence_number,
                inclusive: false,
            };
            for r in batch {
                let body = String::from_utf8(r.body).expect("utf-8 body");
                assert!(seen.insert(body.clone()), "{body} stored twice");
                found.insert((p, body), r.sequence_number);
            }
        }
    }
    for (key, seq) in acknowledged {
        assert_eq!(
            found.get(key),
            Some(seq),
            "acknowledged record {key:?} missing or moved"
        );
    }
}

/// Appends from 16 concurrent writers while the leader of partition 0's stream is killed with
/// SIGKILL: every append that resolved `Ok` is readable afterwards, once, at the position it
/// was given, and appends resume after the election.
#[test]
fn killing_a_nats_server_loses_no_acknowledged_record() {
    run(async {
        let mut cluster = tokio::task::spawn_blocking(|| NatsCluster::start(3))
            .await
            .expect("task")
            .expect("cluster");
        let mut config = config(cluster.urls(), 3);
        config.partitions = 2;
        config.append_timeout = Duration::from_secs(30);
        let stream = format!("{}-p0", config.prefix);
        let log = Arc::new(JetStreamLog::open(config).await.expect("open"));
        let writers = Writers::start(&log, 16, 1);
        assert!(
            writers.wait_for(500, Duration::from_secs(45)).await,
            "appends before the kill"
        );
        let leader = stream_leader(&cluster.urls(), &stream).await;
        let index = cluster
            .servers()
            .iter()
            .position(|s| s.name() == leader)
            .expect("the leader is one of ours");
        cluster.server(index).expect("server").kill().expect("kill");
        let at_kill = writers.acked();
        assert!(
            writers
                .wait_for(at_kill + 500, Duration::from_secs(45))
                .await,
            "appends resume after the leader is killed"
        );
        let (acknowledged, failed) = writers.finish().await;
        eprintln!(
            "acknowledged {} appends ({at_kill} before the kill), {failed} failed",
            acknowledged.len()
        );
        check_acknowledged(&log, 1, &acknowledged).await;
        drop(cluster);
    });
}

/// The long fault run (`bench/cluster-faults`): for `FERROHUB_FAULT_SECONDS` (default 120),
/// kill a server every few seconds (each in turn, SIGKILL), restart it a few seconds later,
/// while 16 writers append to 4 partitions at replicas 3; then check every acknowledged record.
#[test]
#[ignore = "a long fault run; bench/cluster-faults runs it"]
fn fault_kill_and_restart_nats_servers_in_turn() {
    let seconds: u64 = std::env::var("FERROHUB_FAULT_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    run(async move {
        let mut cluster = tokio::task::spawn_blocking(|| NatsCluster::start(3))
            .await
            .expect("task")
            .expect("cluster");
        let mut config = config(cluster.urls(), 3);
        config.append_timeout = Duration::from_secs(30);
        let log = Arc::new(JetStreamLog::open(config).await.expect("open"));
        let writers = Writers::start(&log, 16, 4);
        let end = tokio::time::Instant::now() + Duration::from_secs(seconds);
        let mut round = 0usize;
        while tokio::time::Instant::now() < end {
            let victim = round % 3;
            let before = writers.acked();
            cluster
                .server(victim)
                .expect("server")
                .kill()
                .expect("kill");
            assert!(
                writers
                    .wait_for(before + 200, Duration::from_secs(60))
                    .await,
                "appends go on with server {victim} down (round {round})"
            );
            let server = cluster.server(victim).expect("server");
            tokio::task::block_in_place(|| server.start_again()).expect("restart");
            tokio::task::block_in_place(|| server.wait_healthy(Duration::from_secs(60)))
                .expect("healthy again");
            let before = writers.acked();
            assert!(
                writers
                    .wait_for(before + 200, Duration::from_secs(60))
                    .await,
                "appends go on after server {victim} is back (round {round})"
            );
            round += 1;
            eprintln!(
                "round {round}: {} appends acknowledged so far",
                writers.acked()
            );
        }
        let (acknowledged, failed) = writers.finish().await;
        eprintln!(
            "{round} kill/restart rounds: {} appends acknowledged, {failed} failed",
            acknowledged.len()
        );
        check_acknowledged(&log, 4, &acknowledged).await;
        drop(cluster);
    });
}
/// The name of the server leading `stream`.
async fn stream_leader(urls: &[String], stream: &str) -> String {
    let client = async_nats::connect(urls.to_vec()).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    let info = js.get_stream(stream).await.expect("stream");
    info.cached_info()
        .cluster
        .as_ref()
        .and_then(|c| c.leader.clone())
        .expect("a leader")
}
