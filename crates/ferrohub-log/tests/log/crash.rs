//! Simulated crashes: several threads append and flush, more records are written but not
//! synced, then the unsynced region of each partition's active segment (the only bytes a
//! crash can damage) is truncated, overwritten, zeroed or extended at random points. After
//! reopening, every flushed record must be present, in order, intact.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

use ferrohub_log::{Log, LogConfig, Position, RecordIn, Retention};
use proptest::prelude::*;

use crate::support::{base_offset, read_all, same_content, segments};

#[derive(Debug, Clone)]
enum Damage {
    Truncate(u64),
    Flip(u64, u8),
    Zero(u64),
    Extend(Vec<u8>),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        any::<u64>().prop_map(Damage::Truncate),
        (any::<u64>(), 1..=255u8).prop_map(|(at, x)| Damage::Flip(at, x)),
        any::<u64>().prop_map(Damage::Zero),
        proptest::collection::vec(any::<u8>(), 1..300).prop_map(Damage::Extend),
    ]
}

fn config(dir: &Path, segment_bytes: u64) -> LogConfig {
    let mut cfg = LogConfig::new(dir);
    cfg.partitions = 3;
    cfg.segment_bytes = segment_bytes;
    cfg.index_interval_bytes = 100;
    cfg.retention = Retention::unlimited();
    // Write through: unflushed appends reach the file unsynced, like a crash mid-commit.
    cfg.write_buffer_bytes = 0;
    cfg
}

fn device_record(device: usize, i: usize, body_max: usize) -> RecordIn {
    let len = (device * 131 + i * 71) % (body_max + 1);
    RecordIn {
        enqueued_ms: (i * 1000 + device) as i64,
        system_properties: vec![(
            "iothub-connection-device-id".into(),
            format!("dev-{device}").into(),
        )],
        application_properties: vec![("i".into(), i.to_string())],
        body: (0..len).map(|b| (b * 7 + device + i) as u8).collect(),
    }
}

/// Apply `d` to `file` within `[protect, len)`.
fn apply(file: &Path, protect: u64, d: &Damage) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(file)
        .unwrap();
    let len = f.metadata().unwrap().len();
    let span = len.saturating_sub(protect);
    match d {
        Damage::Truncate(at) => f.set_len(protect + at % (span + 1)).unwrap(),
        Damage::Flip(at, x) if span > 0 => {
            let at = protect + at % span;
            let mut b = [0u8];
            f.read_exact_at(&mut b, at).unwrap();
            f.write_all_at(&[b[0] ^ x], at).unwrap();
        }
        Damage::Zero(at) if span > 0 => {
            let at = protect + at % span;
            f.write_all_at(&vec![0u8; (len - at) as usize], at).unwrap();
        }
        Damage::Extend(bytes) => {
            OpenOptions::new()
                .append(true)
                .open(file)
                .unwrap()
                .write_all(bytes)
                .unwrap();
        }
        Damage::Flip(..) | Damage::Zero(_) => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn flushed_records_survive_damage_to_the_unsynced_tail(
        devices in 1usize..5,
        per_device in 1usize..40,
        flush_every in 1usize..8,
        unflushed in 0usize..25,
        body_max in 0usize..400,
        segment_bytes in 300u64..5000,
        damages in proptest::collection::vec(damage(), 1..4),
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = config(tmp.path(), segment_bytes);
        let (log, _) = Log::open(cfg.clone()).unwrap();

        // Phase 1: each device appends from its own thread and flushes now and then and at the end.
        let flushed: Vec<Vec<(Position, RecordIn)>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..devices).map(|d| {
                let log = log.clone();
                s.spawn(move || {
                    let p = log.partition_for(&format!("dev-{d}"));
                    let mut out = Vec::new();
                    for i in 0..per_device {
                        let rec = device_record(d, i, body_max);
                        let pos = log.append(p, std::slice::from_ref(&rec)).unwrap()[0];
                        out.push((pos, rec));
                        if i % flush_every == 0 {
                            log.flush(p).unwrap();
                        }
                    }
                    let durable = log.flush(p).unwrap();
                    assert!(durable.next_sequence_number > out.last().unwrap().0.sequence_number);
                    out
                })
            }).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });

        // Phase 2: written, never flushed (a roll may still sync some of them).
        let late = 99;
        let late_p = log.partition_for(&format!("dev-{late}"));
        let mut unsynced = Vec::new();
        for i in 0..unflushed {
            let rec = device_record(late, i, body_max);
            unsynced.push((log.append(late_p, std::slice::from_ref(&rec)).unwrap()[0], rec));
        }
        let durable: Vec<u64> = (0..3).map(|p| log.partition(p).unwrap().durable().next_offset).collect();
        drop(log);

        // The crash: damage only what was never synced.
        for p in 0..3u32 {
            let active = segments(tmp.path(), p).pop().unwrap();
            let protect = durable[p as usize].saturating_sub(base_offset(&active));
            for d in &damages {
                apply(&active, protect, d);
            }
        }

        let (log, _report) = Log::open(cfg).unwrap();
        let mut expected: HashMap<(u32, u64), &RecordIn> = HashMap::new();
        for (pos, rec) in flushed.iter().flatten().chain(&unsynced) {
            expected.insert((pos.partition, pos.sequence_number), rec);
        }
        let mut present = HashMap::new();
        for p in 0..3u32 {
            let all = read_all(&log, p);
            for (i, r) in all.iter().enumerate() {
                prop_assert_eq!(r.sequence_number, i as u64, "dense");
                let want = expected.get(&(p, r.sequence_number));
                prop_assert!(want.is_some_and(|w| same_content(r, w)), "record {} of partition {} is not what was appended", i, p);
                present.insert((p, r.sequence_number), r.offset);
            }
        }
        for device in &flushed {
            let mut last_seq = None;
            for (pos, _) in device {
                let offset = present.get(&(pos.partition, pos.sequence_number));
                prop_assert_eq!(offset, Some(&pos.offset), "flushed record lost");
                prop_assert!(last_seq < Some(pos.sequence_number), "device order");
                last_seq = Some(pos.sequence_number);
            }
        }
        // Surviving unsynced records are a prefix of what was appended.
        let survived = unsynced.iter().take_while(|(pos, _)| present.contains_key(&(pos.partition, pos.sequence_number))).count();
        prop_assert!(unsynced[survived..].iter().all(|(pos, _)| !present.contains_key(&(pos.partition, pos.sequence_number))));

        // The log goes on densely.
        let next = log.partition_info(late_p).unwrap().last_enqueued_sequence_number.map_or(0, |s| s + 1);
        let pos = log.append(late_p, &[device_record(late, 0, 0)]).unwrap();
        prop_assert_eq!(pos[0].sequence_number, next);
        log.flush(late_p).unwrap();
    }
}
