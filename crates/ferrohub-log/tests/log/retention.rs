//! Retention by age and by size removes whole old segments and keeps sequence numbers dense.

use ferrohub_log::{Log, RecordIn, Retention, StartPosition};

use crate::support::{base_offset, read_all, record, same_content, segments, small_config};

/// 300 records at times 0, 10, 20, … in partition 0.
fn filled(dir: &std::path::Path, retention: Retention) -> (Log, Vec<RecordIn>) {
    let mut cfg = small_config(dir);
    cfg.retention = retention;
    let (log, _) = Log::open(cfg).unwrap();
    let inputs: Vec<RecordIn> = (0..300).map(|n| record(n, n as i64 * 10)).collect();
    log.append(0, &inputs).unwrap();
    log.flush(0).unwrap();
    (log, inputs)
}

#[test]
fn by_age_removes_old_segments_only() {
    let tmp = tempfile::tempdir().unwrap();
    let (log, inputs) = filled(tmp.path(), Retention::max_age_ms(1000));
    let before = segments(tmp.path(), 0).len();
    let report = log.enforce_retention(2500).unwrap();
    assert!(report.segments > 0 && report.segments < before as u64);
    let info = log.partition_info(0).unwrap();
    assert_eq!(info.begin_sequence_number, report.records);
    let kept = read_all(&log, 0);
    assert_eq!(kept[0].sequence_number, info.begin_sequence_number);
    // Nothing at or after the cutoff (1500) is gone; whatever went was older.
    assert!(kept[0].enqueued_ms <= 1500);
    assert!(
        kept.iter()
            .zip(&inputs[info.begin_sequence_number as usize..])
            .all(|(r, i)| same_content(r, i))
    );
    assert_eq!(kept.len() as u64, 300 - info.begin_sequence_number);
    assert_eq!(
        segments(tmp.path(), 0).len() as u64,
        before as u64 - report.segments
    );

    // Far in the future only the active segment is left, and it still holds the newest record.
    log.enforce_retention(i64::MAX).unwrap();
    assert_eq!(segments(tmp.path(), 0).len(), 1);
    let info = log.partition_info(0).unwrap();
    assert_eq!(info.last_enqueued_sequence_number, Some(299));
    assert!(!info.is_empty);

    // A start before the beginning starts at the beginning.
    let r = log
        .read(
            0,
            StartPosition::Sequence {
                seq: 3,
                inclusive: true,
            },
            1,
        )
        .unwrap();
    assert_eq!(r[0].sequence_number, info.begin_sequence_number);

    // Dense across reopen.
    let begin = info.begin_sequence_number;
    drop(log);
    let mut cfg = small_config(tmp.path());
    cfg.retention = Retention::max_age_ms(1000);
    let (log, report) = Log::open(cfg).unwrap();
    assert!(report.is_clean());
    assert_eq!(log.partition_info(0).unwrap().begin_sequence_number, begin);
    assert_eq!(
        log.append(0, &[record(300, 3000)]).unwrap()[0].sequence_number,
        300
    );
}

#[test]
fn by_size_keeps_the_partition_under_its_budget() {
    let tmp = tempfile::tempdir().unwrap();
    let (log, _) = filled(tmp.path(), Retention::max_bytes(4000));
    let report = log.enforce_retention(0).unwrap();
    assert!(report.segments > 0);
    let size: u64 = segments(tmp.path(), 0)
        .iter()
        .map(|s| std::fs::metadata(s).unwrap().len())
        .sum();
    assert!(size <= 4000, "{size}");
    assert_eq!(
        log.partition_info(0).unwrap().begin_sequence_number,
        report.records
    );
    assert_eq!(read_all(&log, 0).last().unwrap().sequence_number, 299);
}

#[test]
fn unlimited_and_default_keep_recent_data() {
    let tmp = tempfile::tempdir().unwrap();
    let (log, _) = filled(tmp.path(), Retention::unlimited());
    assert_eq!(log.enforce_retention(i64::MAX).unwrap().segments, 0);
    let tmp = tempfile::tempdir().unwrap();
    let (log, _) = filled(tmp.path(), Retention::default());
    assert_eq!(log.enforce_retention(86_400_000).unwrap().segments, 0);
    assert!(log.enforce_retention(86_400_000 + 3000).unwrap().segments > 0);
}

#[test]
fn the_newest_record_survives_when_the_active_segment_is_empty() {
    let tmp = tempfile::tempdir().unwrap();
    let (log, _) = filled(tmp.path(), Retention::max_age_ms(1));
    drop(log);
    // As after a crash between creating a new segment and writing to it.
    let active = segments(tmp.path(), 0).pop().unwrap();
    let end = base_offset(&active) + std::fs::metadata(&active).unwrap().len();
    let empty = tmp
        .path()
        .join("p0")
        .join(format!("{:020}-{:020}.seg", 300, end));
    std::fs::File::create(&empty).unwrap();
    let mut cfg = small_config(tmp.path());
    cfg.retention = Retention::max_age_ms(1);
    let (log, _) = Log::open(cfg).unwrap();
    log.enforce_retention(i64::MAX).unwrap();
    assert_eq!(segments(tmp.path(), 0), vec![active, empty]);
    let info = log.partition_info(0).unwrap();
    assert_eq!(info.last_enqueued_sequence_number, Some(299));
    assert_eq!(read_all(&log, 0).last().unwrap().sequence_number, 299);
}

#[test]
fn readers_keep_going_while_writers_append_and_retention_removes() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = small_config(tmp.path());
    cfg.retention = Retention::max_bytes(3000);
    let (log, _) = Log::open(cfg).unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            for n in 0..2000u64 {
                log.append(0, &[record(n, n as i64)]).unwrap();
                if n % 7 == 0 {
                    log.flush(0).unwrap();
                }
                if n % 50 == 0 {
                    log.enforce_retention(0).unwrap();
                }
            }
            log.flush(0).unwrap();
            done.store(true, std::sync::atomic::Ordering::Release);
        });
        s.spawn(|| {
            let mut reads = 0;
            while !done.load(std::sync::atomic::Ordering::Acquire) || reads < 10 {
                reads += 1;
                let info = log.partition_info(0).unwrap();
                let got = log.read(0, StartPosition::Earliest, 50).unwrap();
                for (i, r) in got.iter().enumerate() {
                    assert!(r.sequence_number >= info.begin_sequence_number);
                    assert_eq!(r.sequence_number, got[0].sequence_number + i as u64);
                    assert!(same_content(
                        r,
                        &record(r.sequence_number, r.sequence_number as i64)
                    ));
                }
                let seq = info
                    .last_enqueued_sequence_number
                    .unwrap_or(0)
                    .saturating_sub(20);
                let tail = log
                    .read(
                        0,
                        StartPosition::Sequence {
                            seq,
                            inclusive: true,
                        },
                        100,
                    )
                    .unwrap();
                assert!(tail.iter().all(|r| same_content(
                    r,
                    &record(r.sequence_number, r.sequence_number as i64)
                )));
            }
        });
    });
    assert!(log.partition_info(0).unwrap().begin_sequence_number > 0);
    assert_eq!(read_all(&log, 0).last().unwrap().sequence_number, 1999);
}
