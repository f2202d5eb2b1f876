//! A disk that fills up and is freed again: the partitions stop taking writes while it is full
//! (nothing is acknowledged that is not durable) and take them again, without a reopen, once
//! there is space.
//!
//! The disk is a small tmpfs mounted for the test, which needs root (as the CI machines run);
//! elsewhere the test says so and does nothing.

use std::path::{Path, PathBuf};
use std::process::Command;

use ferrohub_log::{Log, LogError, LogWriter, RecordIn, WriterConfig};

use crate::support::{read_all, same_content, small_config};

/// A tmpfs mounted at a temporary directory, unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(bytes: u64) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(SmallDisk { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazily: a file still open (a hub shutting down) must not leave the mount behind.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn body_record(n: u64) -> RecordIn {
    RecordIn {
        enqueued_ms: n as i64,
        system_properties: vec![("message-id".into(), format!("m-{n}").into())],
        application_properties: vec![],
        body: vec![(n % 251) as u8; 2000],
    }
}

/// Fills the disk with a file, leaving nothing free.
fn fill(disk: &Path) -> PathBuf {
    let filler = disk.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
    // What did not fit in a whole chunk, byte by byte.
    while std::io::Write::write_all(&mut f, &[0]).is_ok() {}
    filler
}

#[test]
fn a_full_disk_stops_writes_and_freeing_it_resumes_them() {
    let Some(disk) = SmallDisk::mount(4 << 20) else {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    let mut cfg = small_config(&disk.path().join("log"));
    cfg.partitions = 1;
    cfg.segment_bytes = 64 * 1024;
    let (log, _) = Log::open(cfg.clone()).unwrap();
    let writer = LogWriter::spawn(log.clone(), WriterConfig::default()).unwrap();

    let mut acked: Vec<RecordIn> = Vec::new();
    let mut n = 0;
    for _ in 0..20 {
        let r = body_record(n);
        n += 1;
        writer.append_blocking(0, vec![r.clone()]).unwrap();
        acked.push(r);
    }
    let filler = fill(disk.path());

    // Full: appends fail, and keep failing, with the partition reported as failed.
    let mut refused = 0;
    for _ in 0..50 {
        let r = body_record(n);
        n += 1;
        match writer.append_blocking(0, vec![r.clone()]) {
            Ok(_) => acked.push(r),
            Err(LogError::Io { .. } | LogError::Poisoned { .. }) => refused += 1,
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert!(refused > 0, "the full disk refused appends");
    assert_eq!(log.failed_partitions(), vec![0]);
    // Readers still get every acknowledged record.
    let got = read_all(&log, 0);
    assert_eq!(got.len(), acked.len());
    assert!(got.iter().zip(&acked).all(|(g, a)| same_content(g, a)));

    // Space comes back: the next commit recovers the partition by itself.
    std::fs::remove_file(&filler).unwrap();
    for _ in 0..20 {
        let r = body_record(n);
        n += 1;
        writer.append_blocking(0, vec![r.clone()]).unwrap();
        acked.push(r);
    }
    assert!(log.failed_partitions().is_empty());
    let got = read_all(&log, 0);
    assert_eq!(got.len(), acked.len());
    assert!(got.iter().zip(&acked).all(|(g, a)| same_content(g, a)));
    // Sequence numbers stay dense across the failure.
    assert!(
        got.windows(2)
            .all(|w| w[1].sequence_number == w[0].sequence_number + 1)
    );

    // And a reopen finds exactly the acknowledged records.
    writer.shutdown();
    drop(log);
    let (log, _) = Log::open(cfg).unwrap();
    let got = read_all(&log, 0);
    assert_eq!(got.len(), acked.len());
    assert!(got.iter().zip(&acked).all(|(g, a)| same_content(g, a)));
}
