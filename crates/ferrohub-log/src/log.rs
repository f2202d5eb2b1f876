//! The log as a whole: configuration, the metadata file, opening (with recovery), the device to
//! partition mapping, and retention across partitions.
//!
//! Directory layout:
//!
//! ```text
//! {dir}/meta            format version and partition count (20 bytes, CRC32C)
//! {dir}/lock            held with an exclusive file lock while a `Log` is open
//! {dir}/p{N}/           one directory per partition, see `segment`
//! ```

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{LogError, TailDamage};
use crate::fs;
use crate::partition::{Partition, Settings};
use crate::record::{DurablePosition, PartitionInfo, Position, Record, RecordIn, StartPosition};

/// The largest `max_record_bytes` a log accepts, and the bound on any length read from disk.
pub const MAX_RECORD_BYTES_LIMIT: usize = 16 * 1024 * 1024;
/// Default for [`LogConfig::max_record_bytes`]: a 1 MiB body plus 64 KiB of properties and
/// framing (IoT Hub itself caps a device-to-cloud message at 256 KiB).
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1024 * 1024 + 64 * 1024;
/// Default partition count.
pub const DEFAULT_PARTITIONS: u32 = 4;
/// Largest partition count.
pub const MAX_PARTITIONS: u32 = 1024;

const META_MAGIC: &[u8; 8] = b"FHLOGMT1";
const META_VERSION: u32 = 1;

/// How to open a log. Build it with [`LogConfig::new`] and change fields as needed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LogConfig {
    /// The log's directory; created if missing.
    pub dir: PathBuf,
    /// Partition count (default 4). Fixed when the log is created: opening an existing log
    /// with another count fails with [`LogError::PartitionCountMismatch`].
    pub partitions: u32,
    /// A segment is sealed and a new one started when the next record would take it past this
    /// size (default 128 MiB). A record larger than this gets a segment of its own. Retention
    /// removes whole segments, so this is also its granularity.
    pub segment_bytes: u64,
    /// Distance in bytes between sparse index entries (default 4 KiB). A seek reads at most
    /// about this much past its target; the index costs 32 bytes per entry on disk.
    pub index_interval_bytes: u64,
    /// When sealed segments are removed.
    pub retention: Retention,
    /// Largest framed record accepted by `append` (default [`DEFAULT_MAX_RECORD_BYTES`]; at most
    /// [`MAX_RECORD_BYTES_LIMIT`]). Framing adds 24 bytes plus 8 per property.
    pub max_record_bytes: usize,
    /// `append` writes its buffer to the file (without syncing) once it holds this many bytes
    /// (default 1 MiB), bounding the memory of a long run of appends without a flush.
    pub write_buffer_bytes: usize,
}

/// Retention limits; `None` means unlimited. Both are checked by
/// [`Log::enforce_retention`], which the caller runs periodically.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Retention {
    /// Remove a sealed segment once every record in it was enqueued more than this many
    /// milliseconds before `now` (default one day, IoT Hub's default).
    pub max_age_ms: Option<u64>,
    /// Remove the oldest sealed segments while a partition holds more than this many bytes
    /// (per partition).
    pub max_bytes: Option<u64>,
}

/// What opening a log found and repaired. Every item was also logged with `tracing::warn!`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// The log did not exist and was created.
    pub created: bool,
    /// Damaged tails cut from active segments.
    pub truncations: Vec<Truncation>,
    /// Sealed-segment indexes that were missing or damaged and were rebuilt.
    pub rebuilt_indexes: Vec<PathBuf>,
    /// Leftover temporary or stale files removed.
    pub removed_files: Vec<PathBuf>,
}

/// A cut tail.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Truncation {
    /// The partition.
    pub partition: u32,
    /// The segment file that was cut.
    pub segment: PathBuf,
    /// Its length after the cut: the end of its last valid record.
    pub valid_bytes: u64,
    /// Bytes removed.
    pub cut_bytes: u64,
    /// What was wrong with the first removed byte.
    pub damage: TailDamage,
}

/// What [`Log::enforce_retention`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetentionReport {
    /// Segments removed.
    pub segments: u64,
    /// Bytes removed.
    pub bytes: u64,
    /// Records removed.
    pub records: u64,
}

/// An open log: a cheap, cloneable handle shared by writers and readers.
#[derive(Debug, Clone)]
pub struct Log {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cfg: LogConfig,
    partitions: Vec<Partition>,
    /// Holds the directory's exclusive lock for as long as the log is open.
    _lock: File,
}

/// The partition of `device_id` among `partitions`: FNV-1a 64 of the id's UTF-8 bytes, modulo
/// `partitions`. Stable across versions and platforms (it decides where data already on disk
/// lives), so it must never change. `partitions` of 0 is treated as 1.
pub fn partition_for(device_id: &str, partitions: u32) -> u32 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = device_id
        .bytes()
        .fold(OFFSET_BASIS, |h, b| (h ^ u64::from(b)).wrapping_mul(PRIME));
    (hash % u64::from(partitions.max(1))) as u32
}

// === impl LogConfig ===

impl LogConfig {
    /// The defaults, in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        LogConfig {
            dir: dir.into(),
            partitions: DEFAULT_PARTITIONS,
            segment_bytes: 128 * 1024 * 1024,
            index_interval_bytes: 4096,
            retention: Retention::default(),
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            write_buffer_bytes: 1024 * 1024,
        }
    }

    fn validate(&self) -> Result<(), LogError> {
        let bad = |m: String| Err(LogError::Config(m));
        if self.partitions == 0 || self.partitions > MAX_PARTITIONS {
            return bad(format!(
                "partitions must be 1..={MAX_PARTITIONS}, not {}",
                self.partitions
            ));
        }
        if self.segment_bytes == 0 {
            return bad("segment_bytes must be positive".into());
        }
        if self.max_record_bytes < crate::frame::MIN_FRAME_BYTES
            || self.max_record_bytes > MAX_RECORD_BYTES_LIMIT
        {
            return bad(format!(
                "max_record_bytes must be {}..={MAX_RECORD_BYTES_LIMIT}, not {}",
                crate::frame::MIN_FRAME_BYTES,
                self.max_record_bytes
            ));
        }
        Ok(())
    }

    fn settings(&self) -> Settings {
        Settings {
            segment_bytes: self.segment_bytes,
            index_interval_bytes: self.index_interval_bytes,
            max_record_bytes: self.max_record_bytes,
            write_buffer_bytes: self.write_buffer_bytes,
            max_frame_bytes: MAX_RECORD_BYTES_LIMIT,
        }
    }
}

// === impl Retention ===

impl Default for Retention {
    /// One day, no size limit.
    fn default() -> Self {
        Retention {
            max_age_ms: Some(24 * 60 * 60 * 1000),
            max_bytes: None,
        }
    }
}

impl Retention {
    /// Keep everything.
    pub fn unlimited() -> Self {
        Retention {
            max_age_ms: None,
            max_bytes: None,
        }
    }

    /// Limit by age only.
    pub fn max_age_ms(ms: u64) -> Self {
        Retention {
            max_age_ms: Some(ms),
            max_bytes: None,
        }
    }

    /// Limit by size only (bytes per partition).
    pub fn max_bytes(bytes: u64) -> Self {
        Retention {
            max_age_ms: None,
            max_bytes: Some(bytes),
        }
    }
}

// === impl RecoveryReport ===

impl RecoveryReport {
    /// Nothing was cut or rebuilt.
    pub fn is_clean(&self) -> bool {
        self.truncations.is_empty() && self.rebuilt_indexes.is_empty()
    }
}

// === impl Log ===

impl Log {
    /// Open the log in `cfg.dir`, creating it if it does not exist, and recover every
    /// partition: sealed segments are checked against their indexes (a missing or damaged
    /// index is rebuilt), the active segment of each partition is scanned in full and a torn
    /// or corrupt tail is cut. Never removes a record that a flush acknowledged.
    ///
    /// Fails with [`LogError::Corrupt`] if durable data is damaged (see there), and with
    /// [`LogError::Locked`] if another `Log` has the directory open.
    pub fn open(cfg: LogConfig) -> Result<(Log, RecoveryReport), LogError> {
        cfg.validate()?;
        let dir = cfg.dir.clone();
        let mut report = RecoveryReport::default();
        if !dir.is_dir() {
            std::fs::create_dir_all(&dir).map_err(|e| LogError::io("create directory", &dir, e))?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                fs::sync_dir(parent)?;
            }
        }
        let lock = lock_dir(&dir)?;
        let meta = dir.join("meta");
        match read_meta(&meta)? {
            Some(found) if found != cfg.partitions => {
                return Err(LogError::PartitionCountMismatch {
                    dir,
                    found,
                    expected: cfg.partitions,
                });
            }
            Some(_) => {}
            None => {
                if has_partition_dirs(&dir)? {
                    return Err(LogError::Metadata {
                        path: meta,
                        reason: "missing, but partition directories exist".into(),
                    });
                }
                fs::write_file_durable(&meta, &encode_meta(cfg.partitions))?;
                report.created = true;
            }
        }
        let settings = cfg.settings();
        let partitions = (0..cfg.partitions)
            .map(|p| Partition::open(p, dir.join(format!("p{p}")), settings, &mut report))
            .collect::<Result<Vec<_>, _>>()?;
        let log = Log {
            inner: Arc::new(Inner {
                cfg,
                partitions,
                _lock: lock,
            }),
        };
        Ok((log, report))
    }

    /// The configuration the log was opened with.
    pub fn config(&self) -> &LogConfig {
        &self.inner.cfg
    }

    /// The partition count.
    pub fn partition_count(&self) -> u32 {
        self.inner.cfg.partitions
    }

    /// The partition of `device_id`; see the free function [`partition_for`].
    pub fn partition_for(&self, device_id: &str) -> u32 {
        partition_for(device_id, self.inner.cfg.partitions)
    }

    /// Partition `p`.
    pub fn partition(&self, p: u32) -> Result<&Partition, LogError> {
        self.inner
            .partitions
            .get(p as usize)
            .ok_or(LogError::NoSuchPartition {
                partition: p,
                count: self.inner.cfg.partitions,
            })
    }

    /// The partitions a failed write or sync stopped, not recovered yet (see
    /// [`Partition::recover`]); empty when every partition accepts writes.
    pub fn failed_partitions(&self) -> Vec<u32> {
        self.inner
            .partitions
            .iter()
            .filter(|p| p.is_poisoned())
            .map(Partition::id)
            .collect()
    }

    /// [`Partition::append`] on partition `p`: buffered, not durable.
    pub fn append(&self, p: u32, records: &[RecordIn]) -> Result<Vec<Position>, LogError> {
        self.partition(p)?.append(records)
    }

    /// [`Partition::flush`] on partition `p`.
    pub fn flush(&self, p: u32) -> Result<DurablePosition, LogError> {
        self.partition(p)?.flush()
    }

    /// [`Partition::read`] on partition `p`.
    pub fn read(
        &self,
        p: u32,
        from: StartPosition,
        max_records: usize,
    ) -> Result<Vec<Record>, LogError> {
        self.partition(p)?.read(from, max_records)
    }

    /// [`Partition::info`] on partition `p`.
    pub fn partition_info(&self, p: u32) -> Result<PartitionInfo, LogError> {
        Ok(self.partition(p)?.info())
    }

    /// Apply the configured retention at time `now_ms` (ms since the epoch) to every partition:
    /// remove whole sealed segments, oldest first, that are older than `max_age_ms` (judged by
    /// the newest enqueued time they contain) or that take a partition over `max_bytes`. The
    /// active segment and the newest segment holding a record are never removed, so sequence
    /// numbers stay dense and `begin_sequence_number` only moves forward.
    pub fn enforce_retention(&self, now_ms: i64) -> Result<RetentionReport, LogError> {
        let mut report = RetentionReport::default();
        for p in &self.inner.partitions {
            let r = p.enforce_retention(now_ms, &self.inner.cfg.retention)?;
            report.segments += r.segments;
            report.bytes += r.bytes;
            report.records += r.records;
        }
        Ok(report)
    }
}

fn lock_dir(dir: &Path) -> Result<File, LogError> {
    let path = dir.join("lock");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| LogError::io("open", &path, e))?;
    // A lock can be held for a moment after its owner let go: a process forked (to run a
    // child) while the previous owner had the file open holds a copy of the descriptor until it
    // calls exec. So a busy lock is tried again for a short while before it counts as taken.
    for attempt in 0..LOCK_ATTEMPTS {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(TryLockError::WouldBlock) if attempt + 1 < LOCK_ATTEMPTS => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(TryLockError::WouldBlock) => break,
            Err(TryLockError::Error(e)) => return Err(LogError::io("lock", &path, e)),
        }
    }
    Err(LogError::Locked {
        dir: dir.to_path_buf(),
    })
}

/// How often a busy lock is tried (20 ms apart) before `open` reports [`LogError::Locked`].
const LOCK_ATTEMPTS: u32 = 50;

fn encode_meta(partitions: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(20);
    b.extend_from_slice(META_MAGIC);
    b.extend_from_slice(&META_VERSION.to_le_bytes());
    b.extend_from_slice(&partitions.to_le_bytes());
    let crc = crc32c::crc32c(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

/// The partition count from the metadata file; `None` if it does not exist.
fn read_meta(path: &Path) -> Result<Option<u32>, LogError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LogError::io("read", path, e)),
    };
    let damaged = |reason: &str| LogError::Metadata {
        path: path.to_path_buf(),
        reason: reason.into(),
    };
    if bytes.len() != 20 || &bytes[..8] != META_MAGIC {
        return Err(damaged("not a ferrohub-log metadata file"));
    }
    let word =
        |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    if crc32c::crc32c(&bytes[..16]) != word(16) {
        return Err(damaged("checksum mismatch"));
    }
    if word(8) != META_VERSION {
        return Err(damaged("unknown format version"));
    }
    Ok(Some(word(12)))
}

fn has_partition_dirs(dir: &Path) -> Result<bool, LogError> {
    let entries = std::fs::read_dir(dir).map_err(|e| LogError::io("read directory", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| LogError::io("read directory", dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.len() > 1 && name.starts_with('p') && name[1..].bytes().all(|b| b.is_ascii_digit())
        {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_reference_values() {
        // FNV-1a 64 test vectors: "" -> cbf29ce484222325, "a" -> af63dc4c8601ec8c.
        assert_eq!(
            partition_for("", u32::MAX),
            (0xcbf2_9ce4_8422_2325u64 % u64::from(u32::MAX)) as u32
        );
        assert_eq!(
            partition_for("a", u32::MAX),
            (0xaf63_dc4c_8601_ec8cu64 % u64::from(u32::MAX)) as u32
        );
        assert_eq!(
            partition_for("foobar", 4),
            (0x8594_4171_f739_67e8u64 % 4) as u32
        );
        assert!(partition_for("device-1", 4) < 4);
        assert_eq!(partition_for("x", 0), 0);
    }

    #[test]
    fn meta_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("meta");
        std::fs::write(&path, encode_meta(7)).expect("write");
        assert_eq!(read_meta(&path).ok(), Some(Some(7)));
        let mut b = encode_meta(7);
        b[13] ^= 1;
        std::fs::write(&path, b).expect("write");
        assert!(read_meta(&path).is_err());
    }
}
