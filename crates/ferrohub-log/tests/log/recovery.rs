//! Recovery: cut tails, rebuilt indexes, damaged durable data.

use std::fs::OpenOptions;
use std::io::Write;

use ferrohub_log::{Log, LogError, RecordIn, StartPosition, TailDamage};

use crate::support::{
    base_offset, indexes, read_all, record, same_content, segments, small_config,
};

fn filled(dir: &std::path::Path, n: u64) -> (Vec<RecordIn>, Vec<ferrohub_log::Position>) {
    let (log, _) = Log::open(small_config(dir)).unwrap();
    let inputs: Vec<RecordIn> = (0..n).map(|i| record(i, i as i64)).collect();
    let pos = log.append(0, &inputs).unwrap();
    log.flush(0).unwrap();
    (inputs, pos)
}

#[test]
fn a_torn_last_record_is_cut_and_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let (inputs, pos) = filled(tmp.path(), 40);
    let active = segments(tmp.path(), 0).pop().unwrap();
    let last = pos.last().unwrap();
    let cut_at = last.offset - base_offset(&active) + 5;
    OpenOptions::new()
        .write(true)
        .open(&active)
        .unwrap()
        .set_len(cut_at)
        .unwrap();

    let (log, report) = Log::open(small_config(tmp.path())).unwrap();
    assert_eq!(report.truncations.len(), 1, "{report:?}");
    let t = &report.truncations[0];
    assert_eq!(
        (t.partition, t.cut_bytes, t.damage),
        (0, 5, TailDamage::Torn)
    );
    assert_eq!(t.valid_bytes, cut_at - 5);
    let all = read_all(&log, 0);
    assert_eq!(all.len(), 39);
    assert!(all.iter().zip(&inputs).all(|(r, i)| same_content(r, i)));
    // The next record takes the cut one's place.
    let p = log.append(0, &[record(99, 99)]).unwrap();
    assert_eq!((p[0].sequence_number, p[0].offset), (39, last.offset));
}

#[test]
fn garbage_and_zeros_after_the_end_are_cut() {
    for (tail, damage) in [
        (vec![0u8; 4096], TailDamage::BadLength),
        (vec![0xAB; 100], TailDamage::BadLength),
        (frame_shaped_garbage(100), TailDamage::ChecksumMismatch),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let (inputs, _) = filled(tmp.path(), 30);
        let active = segments(tmp.path(), 0).pop().unwrap();
        OpenOptions::new()
            .append(true)
            .open(&active)
            .unwrap()
            .write_all(&tail)
            .unwrap();
        let (log, report) = Log::open(small_config(tmp.path())).unwrap();
        assert_eq!(report.truncations.len(), 1);
        assert_eq!(report.truncations[0].damage, damage);
        assert_eq!(report.truncations[0].cut_bytes, tail.len() as u64);
        let all = read_all(&log, 0);
        assert_eq!(all.len(), 30);
        assert!(all.iter().zip(&inputs).all(|(r, i)| same_content(r, i)));
    }
}

/// `n` bytes whose length field covers exactly the rest, so only the CRC can reject them.
fn frame_shaped_garbage(n: usize) -> Vec<u8> {
    let mut g = vec![0x5a; n];
    g[..4].copy_from_slice(&(n as u32 - 8).to_le_bytes());
    g
}

#[test]
fn missing_or_damaged_indexes_are_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    let (inputs, _) = filled(tmp.path(), 200);
    let idx = indexes(tmp.path(), 0);
    assert!(idx.len() >= 3);
    let original = std::fs::read(&idx[1]).unwrap();
    std::fs::remove_file(&idx[0]).unwrap();
    let mut damaged = original.clone();
    damaged[30] ^= 1;
    std::fs::write(&idx[1], &damaged).unwrap();
    std::fs::write(&idx[2], b"short").unwrap();

    let (log, report) = Log::open(small_config(tmp.path())).unwrap();
    assert_eq!(report.rebuilt_indexes, idx[..3].to_vec());
    assert!(report.truncations.is_empty());
    assert_eq!(
        std::fs::read(&idx[1]).unwrap(),
        original,
        "rebuild is deterministic"
    );
    for seq in [0u64, 5, 77, 150, 199] {
        let r = log
            .read(
                0,
                StartPosition::Sequence {
                    seq,
                    inclusive: true,
                },
                1,
            )
            .unwrap();
        assert!(same_content(&r[0], &inputs[seq as usize]));
    }
    drop(log);
    let (_, report) = Log::open(small_config(tmp.path())).unwrap();
    assert!(report.is_clean());
}

#[test]
fn an_index_damaged_after_open_falls_back_to_a_scan() {
    let tmp = tempfile::tempdir().unwrap();
    let (inputs, _) = filled(tmp.path(), 200);
    let (log, _) = Log::open(small_config(tmp.path())).unwrap();
    let idx = indexes(tmp.path(), 0);
    let mut bytes = std::fs::read(&idx[0]).unwrap();
    let end = bytes.len() - 64;
    for b in &mut bytes[24..end] {
        *b ^= 0x55;
    }
    std::fs::write(&idx[0], bytes).unwrap();
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
    assert!(same_content(&r[0], &inputs[3]));
}

#[test]
fn damage_in_a_sealed_segment_is_an_error_not_a_cut() {
    let tmp = tempfile::tempdir().unwrap();
    filled(tmp.path(), 200);
    let segs = segments(tmp.path(), 0);
    let mut bytes = std::fs::read(&segs[1]).unwrap();
    bytes[40] ^= 1;
    std::fs::write(&segs[1], &bytes).unwrap();

    // With a valid index the sealed segment is not rescanned; the read finds the damage.
    let (log, report) = Log::open(small_config(tmp.path())).unwrap();
    assert!(report.is_clean());
    assert!(matches!(
        log.read(0, StartPosition::Earliest, 1000),
        Err(LogError::Corrupt { .. })
    ));
    drop(log);

    // Without it, the rebuild scan finds the damage and the log refuses to open.
    std::fs::remove_file(&indexes(tmp.path(), 0)[1]).unwrap();
    match Log::open(small_config(tmp.path())) {
        Err(LogError::Corrupt { path, .. }) => assert_eq!(path, segs[1]),
        r => panic!("expected Corrupt, got {r:?}"),
    }
    assert_eq!(
        std::fs::read(&segs[1]).unwrap(),
        bytes,
        "damaged data is left alone"
    );
}

#[test]
fn a_gap_between_segments_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    filled(tmp.path(), 200);
    let segs = segments(tmp.path(), 0);
    std::fs::remove_file(&segs[2]).unwrap();
    assert!(matches!(
        Log::open(small_config(tmp.path())),
        Err(LogError::Corrupt { .. })
    ));
}

#[test]
fn leftovers_are_removed() {
    let tmp = tempfile::tempdir().unwrap();
    filled(tmp.path(), 20);
    let stray_tmp = tmp
        .path()
        .join("p0")
        .join("00000000000000000000-00000000000000000000.idx.tmp");
    let orphan = tmp
        .path()
        .join("p0")
        .join("00000000000000099999-00000000000000099999.idx");
    std::fs::write(&stray_tmp, b"x").unwrap();
    std::fs::write(&orphan, b"x").unwrap();
    let (_, report) = Log::open(small_config(tmp.path())).unwrap();
    assert!(report.removed_files.contains(&stray_tmp));
    assert!(report.removed_files.contains(&orphan));
    assert!(!stray_tmp.exists() && !orphan.exists());
}

#[test]
fn an_empty_segment_left_by_a_crash_while_rolling_is_used() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, pos) = filled(tmp.path(), 30);
    let active = segments(tmp.path(), 0).pop().unwrap();
    let end = base_offset(&active) + std::fs::metadata(&active).unwrap().len();
    // The crash came after the index of the old segment and the new empty file were written.
    drop(Log::open(small_config(tmp.path())).unwrap());
    let empty = tmp
        .path()
        .join("p0")
        .join(format!("{:020}-{:020}.seg", 30, end));
    std::fs::File::create(&empty).unwrap().sync_all().unwrap();

    let (log, report) = Log::open(small_config(tmp.path())).unwrap();
    assert!(report.rebuilt_indexes.len() == 1, "{report:?}");
    let info = log.partition_info(0).unwrap();
    assert_eq!(info.last_enqueued_sequence_number, Some(29));
    assert_eq!(info.last_enqueued_offset, Some(pos[29].offset));
    let p = log.append(0, &[record(30, 30)]).unwrap();
    assert_eq!((p[0].sequence_number, p[0].offset), (30, end));
    log.flush(0).unwrap();
    assert_eq!(read_all(&log, 0).len(), 31);
}
