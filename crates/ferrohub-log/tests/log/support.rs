//! Helpers shared by the test modules.

use std::path::{Path, PathBuf};

use ferrohub_log::{Log, LogConfig, Record, RecordIn, Retention, StartPosition};

/// A small-segment configuration so tests cross segment boundaries quickly.
pub(crate) fn small_config(dir: &Path) -> LogConfig {
    let mut cfg = LogConfig::new(dir);
    cfg.partitions = 2;
    cfg.segment_bytes = 1024;
    cfg.index_interval_bytes = 128;
    cfg.retention = Retention::unlimited();
    cfg
}

/// A deterministic record; `n` picks content and size.
pub(crate) fn record(n: u64, enqueued_ms: i64) -> RecordIn {
    let len = (n * 37 % 200) as usize;
    RecordIn {
        enqueued_ms,
        system_properties: vec![("message-id".into(), format!("m-{n}").into())],
        application_properties: if n.is_multiple_of(3) {
            vec![]
        } else {
            vec![
                ("k".into(), "v".repeat((n % 5) as usize)),
                ("k".into(), "w".into()),
            ]
        },
        body: (0..len).map(|i| (n as usize + i) as u8).collect(),
    }
}

/// Every durable record of partition `p`.
pub(crate) fn read_all(log: &Log, p: u32) -> Vec<Record> {
    log.read(p, StartPosition::Earliest, usize::MAX).unwrap()
}

/// Whether `r` carries exactly the content of `input`.
pub(crate) fn same_content(r: &Record, input: &RecordIn) -> bool {
    r.enqueued_ms == input.enqueued_ms
        && r.system_properties.len() == input.system_properties.len()
        && r.system_properties
            .iter()
            .zip(&input.system_properties)
            .all(|((k, v), (ik, iv))| k == ik && v == iv)
        && r.application_properties == input.application_properties
        && r.body == input.body
}

/// Segment files of partition `p`, oldest first.
pub(crate) fn segments(dir: &Path, p: u32) -> Vec<PathBuf> {
    files(dir, p, "seg")
}

/// Index files of partition `p`, oldest first.
pub(crate) fn indexes(dir: &Path, p: u32) -> Vec<PathBuf> {
    files(dir, p, "idx")
}

fn files(dir: &Path, p: u32, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join(format!("p{p}")))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|f| f.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

/// The base offset in a segment file's name.
pub(crate) fn base_offset(seg: &Path) -> u64 {
    let stem = seg.file_stem().unwrap().to_str().unwrap();
    stem.split_once('-').unwrap().1.parse().unwrap()
}

/// A small xorshift generator, so tests need no extra dependency.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }

    pub(crate) fn from_time() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Rng::new(nanos ^ u64::from(std::process::id()))
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}
