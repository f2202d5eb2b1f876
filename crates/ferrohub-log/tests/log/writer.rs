//! The group-commit writer.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ferrohub_log::{Log, LogError, LogWriter, RecordIn, StartPosition, WriterConfig};

use crate::support::{read_all, record, same_content, small_config};

#[test]
fn concurrent_producers_get_durable_positions_with_shared_syncs() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = small_config(tmp.path());
    cfg.segment_bytes = 64 * 1024;
    let (log, _) = Log::open(cfg).unwrap();
    let writer = Arc::new(LogWriter::spawn(log.clone(), WriterConfig::default()).unwrap());
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let writer = Arc::clone(&writer);
            std::thread::spawn(move || {
                let device = format!("device-{t}");
                let p = writer.log().partition_for(&device);
                let mut acked = Vec::new();
                // Keep many appends in flight, as many devices would.
                let pending: Vec<_> = (0..100u64)
                    .map(|i| {
                        let rec = record(t * 1000 + i, i as i64);
                        (rec.clone(), writer.append(p, vec![rec]))
                    })
                    .collect();
                for (rec, rx) in pending {
                    let pos = futures_wait(rx).unwrap();
                    // Acknowledged means durable means visible.
                    let got = writer
                        .log()
                        .read(
                            p,
                            StartPosition::Sequence {
                                seq: pos[0].sequence_number,
                                inclusive: true,
                            },
                            1,
                        )
                        .unwrap();
                    assert!(same_content(&got[0], &rec));
                    acked.push((p, pos[0].sequence_number));
                }
                acked
            })
        })
        .collect();
    let mut per_partition: HashMap<u32, Vec<u64>> = HashMap::new();
    for t in threads {
        for (p, seq) in t.join().unwrap() {
            per_partition.entry(p).or_default().push(seq);
        }
    }
    let total: usize = per_partition.values().map(Vec::len).sum();
    assert_eq!(total, 800);
    let syncs: u64 = (0..2)
        .map(|p| log.partition(p).unwrap().stats().syncs)
        .sum();
    assert!(
        syncs < 800,
        "{syncs} syncs for 800 appends: no group commit"
    );
    for (p, mut seqs) in per_partition {
        seqs.sort_unstable();
        assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>());
        assert_eq!(read_all(&log, p).len(), seqs.len());
    }
}

#[test]
fn per_device_order_holds() {
    let tmp = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(small_config(tmp.path())).unwrap();
    let writer = LogWriter::spawn(
        log.clone(),
        WriterConfig::with_max_wait(Duration::from_millis(2)),
    )
    .unwrap();
    let p = log.partition_for("dev");
    let receivers: Vec<_> = (0..50)
        .map(|i| writer.append(p, vec![record(i, i as i64)]))
        .collect();
    let seqs: Vec<u64> = receivers
        .into_iter()
        .map(|rx| futures_wait(rx).unwrap()[0].sequence_number)
        .collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1));
}

#[test]
fn a_bad_request_fails_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = small_config(tmp.path());
    cfg.max_record_bytes = 500;
    let (log, _) = Log::open(cfg).unwrap();
    let writer =
        LogWriter::spawn(log, WriterConfig::with_max_wait(Duration::from_millis(20))).unwrap();
    let good = writer.append(0, vec![record(1, 1)]);
    let bad = writer.append(
        0,
        vec![RecordIn {
            body: vec![0; 600],
            ..RecordIn::default()
        }],
    );
    let also_good = writer.append(0, vec![record(2, 2), record(3, 3)]);
    assert_eq!(futures_wait(good).unwrap()[0].sequence_number, 0);
    assert!(matches!(
        futures_wait(bad),
        Err(LogError::RecordTooLarge { .. })
    ));
    let pos = futures_wait(also_good).unwrap();
    assert_eq!((pos[0].sequence_number, pos[1].sequence_number), (1, 2));
    assert!(matches!(
        writer.append_blocking(7, vec![]),
        Err(LogError::NoSuchPartition { .. })
    ));
}

#[test]
fn shutdown_commits_what_is_queued() {
    let tmp = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(small_config(tmp.path())).unwrap();
    let writer = LogWriter::spawn(log.clone(), WriterConfig::default()).unwrap();
    let receivers: Vec<_> = (0..20)
        .map(|i| writer.append(1, vec![record(i, 0)]))
        .collect();
    writer.shutdown();
    for rx in receivers {
        assert!(futures_wait(rx).is_ok());
    }
    assert_eq!(read_all(&log, 1).len(), 20);
}

/// Wait for a writer's receiver on this thread.
fn futures_wait(
    rx: futures_channel::oneshot::Receiver<ferrohub_log::AppendResult>,
) -> ferrohub_log::AppendResult {
    use std::future::Future;
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut rx = std::pin::pin!(rx);
    loop {
        if let Poll::Ready(r) = rx.as_mut().poll(&mut cx) {
            return r.unwrap_or(Err(LogError::WriterClosed));
        }
        std::thread::park();
    }
}
