//! Fuzzes log recovery. Even first byte: the rest is written as the only segment file of a
//! partition; opening and reading it must not panic, and must leave a log that works. Odd first
//! byte: a valid log is built from the input, its unsynced tail is truncated, overwritten and
//! extended as the input says; every record flushed before the damage must survive intact.
#![no_main]

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use ferrohub_log::{Log, LogConfig, RecordIn, Retention, StartPosition};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(tmp) = tempfile::tempdir() else {
        return;
    };
    if mode % 2 == 0 {
        raw_segment(tmp.path(), rest);
    } else {
        damaged_tail(tmp.path(), rest);
    }
});

fn config(dir: &Path) -> LogConfig {
    let mut cfg = LogConfig::new(dir);
    cfg.partitions = 1;
    cfg.segment_bytes = 1 << 20;
    cfg.index_interval_bytes = 64;
    cfg.retention = Retention::unlimited();
    cfg.write_buffer_bytes = 0;
    cfg
}

fn only_segment(dir: &Path) -> PathBuf {
    let p0 = dir.join("p0");
    let mut segs: Vec<PathBuf> = std::fs::read_dir(&p0)
        .expect("partition directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segs.sort();
    segs.pop().expect("a segment")
}

fn raw_segment(dir: &Path, bytes: &[u8]) {
    drop(Log::open(config(dir)).expect("create"));
    std::fs::write(only_segment(dir), bytes).expect("write segment");
    let (log, _report) = Log::open(config(dir)).expect("the active segment is always recoverable");
    let all = log
        .read(0, StartPosition::Earliest, usize::MAX)
        .expect("read");
    assert!(
        all.iter()
            .enumerate()
            .all(|(i, r)| r.sequence_number == i as u64)
    );
    let probe = u64::from(bytes.first().copied().unwrap_or(0));
    for from in [
        StartPosition::Sequence {
            seq: probe,
            inclusive: true,
        },
        StartPosition::Offset {
            offset: probe * 7,
            inclusive: false,
        },
        StartPosition::EnqueuedTime(probe as i64),
        StartPosition::Latest,
    ] {
        let _ = log.read(0, from, 3).expect("read");
    }
    let info = log.partition_info(0).expect("info");
    assert_eq!(
        info.last_enqueued_sequence_number,
        all.last().map(|r| r.sequence_number)
    );
    let pos = log.append(0, &[RecordIn::default()]).expect("append");
    assert_eq!(pos[0].sequence_number, all.len() as u64);
    log.flush(0).expect("flush");
    drop(log);
    let (log, report) = Log::open(config(dir)).expect("reopen");
    assert!(report.is_clean());
    assert_eq!(
        log.read(0, StartPosition::Earliest, usize::MAX)
            .expect("read")
            .len(),
        all.len() + 1
    );
}

fn damaged_tail(dir: &Path, input: &[u8]) {
    let mut it = input.iter().copied();
    let mut next = move || it.next().unwrap_or(0);
    let flushed_n = usize::from(next() % 24);
    let unsynced_n = usize::from(next() % 12);
    let make = |i: usize, size: u8| RecordIn {
        enqueued_ms: i as i64,
        system_properties: vec![("i".into(), i.to_string().into())],
        application_properties: Vec::new(),
        body: vec![size; usize::from(size)],
    };
    let (log, _) = Log::open(config(dir)).expect("create");
    let flushed: Vec<RecordIn> = (0..flushed_n).map(|i| make(i, next())).collect();
    log.append(0, &flushed).expect("append");
    let durable = log.flush(0).expect("flush");
    let unsynced: Vec<RecordIn> = (0..unsynced_n)
        .map(|i| make(flushed_n + i, next()))
        .collect();
    log.append(0, &unsynced).expect("append");
    drop(log);

    // Damage only bytes after the durable end: what a crash can touch.
    let seg = only_segment(dir);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&seg)
        .expect("open");
    for _ in 0..4 {
        let len = file.metadata().expect("stat").len();
        let span = len.saturating_sub(durable.next_offset);
        let at = durable.next_offset + u64::from(next()) * 31 % (span + 1);
        match next() % 4 {
            0 => file.set_len(at).expect("truncate"),
            1 if at < len => file.write_all_at(&[next()], at).expect("overwrite"),
            2 => {
                let garbage: Vec<u8> = (0..next()).map(|_| next()).collect();
                OpenOptions::new()
                    .append(true)
                    .open(&seg)
                    .and_then(|mut f| f.write_all(&garbage))
                    .expect("extend");
            }
            _ => {}
        }
    }
    drop(file);

    let (log, _report) = Log::open(config(dir)).expect("open after damage");
    let all = log
        .read(0, StartPosition::Earliest, usize::MAX)
        .expect("read");
    assert!(all.len() >= flushed.len(), "flushed records lost");
    for (i, r) in all.iter().enumerate() {
        let want = flushed.get(i).or_else(|| unsynced.get(i - flushed.len()));
        let want = want.expect("no record beyond what was appended");
        assert_eq!(r.sequence_number, i as u64);
        let want_system: Vec<(String, String)> = want
            .system_properties
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!((&r.system_properties, &r.body), (&want_system, &want.body));
    }
}
