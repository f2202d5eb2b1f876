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

        let acked = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(tokio::sync::Notify::new());
        let mut writers = Vec::new();
        for w in 0..16 {
            let (log, acked, stop) = (log.clone(), acked.clone(), stop.clone());
            writers.push(tokio::spawn(async move {
                let mut ok = BTreeMap::new();
                let mut failed = 0usize;
                let mut pending = FuturesUnordered::new();
                let stopped = stop.notified();
                tokio::pin!(stopped);
                let mut i = 0u32;
                loop {
                    while pending.len() < 4 {
                        let body = format!("w{w:02}-{i:06}");
                        let fut = log.append(0, vec![record(&body, i64::from(i))]);
                        pending.push(async move { (body, fut.await) });
                        i += 1;
                    }
                    tokio::select! {
                        _ = &mut stopped => break,
                        Some((body, result)) = pending.next() => match result {
                            Ok(p) => {
                                ok.insert(body, p[0].sequence_number);
                                acked.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(_) => failed += 1,
                        },
                    }
                }
                // What is still in flight resolves one way or the other.
                while let Some((body, result)) = pending.next().await {
                    match result {
                        Ok(p) => {
                            ok.insert(body, p[0].sequence_number);
                        }
                        Err(_) => failed += 1,
                    }
                }
                (ok, failed)
            }));
        }
        let wait_for = |n: usize| {
            let acked = acked.clone();
            async move {
                tokio::time::timeout(Duration::from_secs(45), async {
                    while acked.load(Ordering::Relaxed) < n {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                })
                .await
            }
        };
        wait_for(500).await.expect("appends before the kill");

        // Kill the server that leads partition 0's stream.
        let leader = stream_leader(&cluster.urls(), &stream).await;
        let index = cluster
            .servers()
            .iter()
            .position(|s| s.name() == leader)
            .expect("the leader is one of ours");
        cluster.server(index).expect("server").kill().expect("kill");
        let at_kill = acked.load(Ordering::Relaxed);
        wait_for(at_kill + 500)
            .await
            .expect("appends resume after the leader is killed");
        stop.notify_waiters();
        let mut acknowledged = BTreeMap::new();
        let mut failed = 0;
        for w in writers {
            let (ok, f) = w.await.expect("writer");
            acknowledged.extend(ok);
            failed += f;
        }
        eprintln!(
            "acknowledged {} appends ({} before the kill), {failed} failed",
            acknowledged.len(),
            at_kill
        );

        let mut seen = HashSet::new();
        let mut by_body = BTreeMap::new();
        let mut from = StartPosition::Earliest;
        loop {
            let batch = log.read(0, from, 1000).await.expect("read back");
            let Some(last) = batch.last() else { break };
            from = StartPosition::Sequence {
                seq: last.sequence_number,
                inclusive: false,
            };
            for r in batch {
                let body = String::from_utf8(r.body).expect("utf-8 body");
                assert!(seen.insert(body.clone()), "{body} stored twice");
                by_body.insert(body, r.sequence_number);
            }
        }
        for (body, seq) in &acknowledged {
            assert_eq!(
                by_body.get(body),
                Some(seq),
                "acknowledged record {body} missing or moved"
            );
        }
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
