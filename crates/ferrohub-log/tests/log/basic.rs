//! Append, flush, read from every kind of start, reopen, configuration limits.

use ferrohub_log::{Log, LogConfig, LogError, RecordIn, StartPosition};

use crate::support::{read_all, record, same_content, segments, small_config};

#[test]
fn records_are_invisible_until_flushed() {
    let tmp = tempfile::tempdir().unwrap();
    let (log, report) = Log::open(small_config(tmp.path())).unwrap();
    assert!(report.created && report.is_clean());
    let pos = log.append(0, &[record(1, 10), record(2, 11)]).unwrap();
    assert_eq!((pos[0].sequence_number, pos[1].sequence_number), (0, 1));
    assert_eq!(pos[0].offset, 0);
    assert!(pos[1].offset > pos[0].offset);
    assert!(read_all(&log, 0).is_empty());
    assert!(log.partition_info(0).unwrap().is_empty);

    let durable = log.flush(0).unwrap();
    assert_eq!(durable.next_sequence_number, 2);
    let got = read_all(&log, 0);
    assert_eq!(got.len(), 2);
    assert!(same_content(&got[1], &record(2, 11)));
    assert_eq!(got[1].offset, pos[1].offset);
    let info = log.partition_info(0).unwrap();
    assert_eq!(info.begin_sequence_number, 0);
    assert_eq!(info.last_enqueued_sequence_number, Some(1));
    assert_eq!(info.last_enqueued_offset, Some(pos[1].offset));
    assert_eq!(info.last_enqueued_time_ms, Some(11));
    assert!(!info.is_empty);
    assert!(read_all(&log, 1).is_empty(), "partitions are independent");
}

#[test]
fn every_start_position_across_segments() {
    let tmp = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(small_config(tmp.path())).unwrap();
    let inputs: Vec<RecordIn> = (0..300).map(|n| record(n, 1000 + n as i64 * 10)).collect();
    let pos = log.append(1, &inputs).unwrap();
    log.flush(1).unwrap();
    assert!(
        segments(tmp.path(), 1).len() > 5,
        "expected several segments"
    );

    let first = |from| {
        log.read(1, from, 1)
            .unwrap()
            .first()
            .map(|r| r.sequence_number)
    };
    assert_eq!(first(StartPosition::Earliest), Some(0));
    assert_eq!(first(StartPosition::Latest), None);
    for n in [0u64, 1, 17, 150, 298, 299] {
        let p = pos[n as usize];
        assert_eq!(
            first(StartPosition::Sequence {
                seq: n,
                inclusive: true
            }),
            Some(n)
        );
        let next = (n < 299).then_some(n + 1);
        assert_eq!(
            first(StartPosition::Sequence {
                seq: n,
                inclusive: false
            }),
            next
        );
        assert_eq!(
            first(StartPosition::Offset {
                offset: p.offset,
                inclusive: true
            }),
            Some(n)
        );
        assert_eq!(
            first(StartPosition::Offset {
                offset: p.offset,
                inclusive: false
            }),
            next
        );
        // An offset inside a record starts at the next one.
        assert_eq!(
            first(StartPosition::Offset {
                offset: p.offset + 1,
                inclusive: true
            }),
            next
        );
        assert_eq!(
            first(StartPosition::EnqueuedTime(1000 + n as i64 * 10)),
            Some(n)
        );
        assert_eq!(
            first(StartPosition::EnqueuedTime(1000 + n as i64 * 10 - 5)),
            Some(n)
        );
    }
    assert_eq!(
        first(StartPosition::Sequence {
            seq: 300,
            inclusive: true
        }),
        None
    );
    assert_eq!(first(StartPosition::EnqueuedTime(0)), Some(0));
    assert_eq!(first(StartPosition::EnqueuedTime(999_999)), None);

    // A long read crosses segments and keeps order and content.
    let got = log
        .read(
            1,
            StartPosition::Sequence {
                seq: 40,
                inclusive: true,
            },
            200,
        )
        .unwrap();
    assert_eq!(got.len(), 200);
    for (i, r) in got.iter().enumerate() {
        let n = 40 + i;
        assert_eq!(r.sequence_number, n as u64);
        assert_eq!(r.offset, pos[n].offset);
        assert!(same_content(r, &inputs[n]));
    }
}

#[test]
fn enqueued_time_may_step_back() {
    let tmp = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(small_config(tmp.path())).unwrap();
    // Times: 0, 10, 20, ... with a clock step back at 100.
    let times: Vec<i64> = (0..200)
        .map(|n| if n < 100 { n * 10 } else { (n - 50) * 10 })
        .collect();
    let inputs: Vec<RecordIn> = times
        .iter()
        .enumerate()
        .map(|(n, &t)| record(n as u64, t))
        .collect();
    log.append(0, &inputs).unwrap();
    log.flush(0).unwrap();
    for t in [0i64, 5, 490, 500, 995, 1000, 1490] {
        let want = times.iter().position(|&x| x >= t).map(|n| n as u64);
        let got = log.read(0, StartPosition::EnqueuedTime(t), 1).unwrap();
        assert_eq!(got.first().map(|r| r.sequence_number), want, "time {t}");
    }
}

#[test]
fn reopen_continues_sequence_and_offsets() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = small_config(tmp.path());
    let last = {
        let (log, _) = Log::open(cfg.clone()).unwrap();
        let pos = log
            .append(0, &(0..50).map(|n| record(n, n as i64)).collect::<Vec<_>>())
            .unwrap();
        log.flush(0).unwrap();
        *pos.last().unwrap()
    };
    let (log, report) = Log::open(cfg).unwrap();
    assert!(report.is_clean() && !report.created, "{report:?}");
    assert_eq!(
        log.partition_info(0).unwrap().last_enqueued_offset,
        Some(last.offset)
    );
    let pos = log.append(0, &[record(50, 50)]).unwrap();
    assert_eq!(pos[0].sequence_number, 50);
    assert!(pos[0].offset > last.offset);
    assert_eq!(log.flush(0).unwrap().next_sequence_number, 51);
    let all = read_all(&log, 0);
    assert_eq!(all.len(), 51);
    assert!(
        all.iter()
            .enumerate()
            .all(|(i, r)| r.sequence_number == i as u64)
    );
}

#[test]
fn partition_count_is_fixed_at_creation() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = small_config(tmp.path());
    drop(Log::open(cfg.clone()).unwrap());
    let mut other = cfg;
    other.partitions = 3;
    match Log::open(other) {
        Err(LogError::PartitionCountMismatch {
            found: 2,
            expected: 3,
            ..
        }) => {}
        r => panic!("expected a mismatch, got {r:?}"),
    }
}

#[test]
fn missing_metadata_with_data_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = small_config(tmp.path());
    drop(Log::open(cfg.clone()).unwrap());
    std::fs::remove_file(tmp.path().join("meta")).unwrap();
    assert!(matches!(Log::open(cfg), Err(LogError::Metadata { .. })));
}

#[test]
fn a_log_opens_once() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = small_config(tmp.path());
    let (_log, _) = Log::open(cfg.clone()).unwrap();
    assert!(matches!(Log::open(cfg), Err(LogError::Locked { .. })));
}

#[test]
fn oversized_records_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = small_config(tmp.path());
    cfg.max_record_bytes = 100;
    let (log, _) = Log::open(cfg).unwrap();
    let big = RecordIn {
        body: vec![0; 100],
        ..RecordIn::default()
    };
    let small = RecordIn {
        body: vec![0; 10],
        ..RecordIn::default()
    };
    assert!(matches!(
        log.append(0, &[small.clone(), big]),
        Err(LogError::RecordTooLarge { limit: 100, .. })
    ));
    assert_eq!(log.append(0, &[small]).unwrap()[0].sequence_number, 0);
    assert!(matches!(
        log.append(9, &[]),
        Err(LogError::NoSuchPartition {
            partition: 9,
            count: 2
        })
    ));
}

#[test]
fn invalid_configuration_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = LogConfig::new(tmp.path());
    cfg.partitions = 0;
    assert!(matches!(Log::open(cfg), Err(LogError::Config(_))));
    let mut cfg = LogConfig::new(tmp.path());
    cfg.max_record_bytes = usize::MAX;
    assert!(matches!(Log::open(cfg), Err(LogError::Config(_))));
}

#[test]
fn a_record_larger_than_a_segment_gets_its_own() {
    let tmp = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(small_config(tmp.path())).unwrap();
    let big = RecordIn {
        body: vec![7; 5000],
        ..RecordIn::default()
    };
    log.append(0, &[record(0, 0), big.clone(), record(2, 2)])
        .unwrap();
    log.flush(0).unwrap();
    assert_eq!(segments(tmp.path(), 0).len(), 3);
    let all = read_all(&log, 0);
    assert_eq!(all.len(), 3);
    assert!(same_content(&all[1], &big));
}
