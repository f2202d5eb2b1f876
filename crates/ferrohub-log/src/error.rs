//! The one error type of the log, [`LogError`], and the description of tail damage that recovery
//! repairs, [`TailDamage`].
//!
//! `LogError` is `Clone` (I/O causes sit behind an `Arc`) because one failed `fdatasync` has to be
//! reported to every producer whose records that sync covered.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// What went wrong in a log operation.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// The [`LogConfig`](crate::LogConfig) is unusable (zero partitions, a zero segment size, a
    /// record limit above [`MAX_RECORD_BYTES_LIMIT`](crate::MAX_RECORD_BYTES_LIMIT), …).
    #[error("invalid log configuration: {0}")]
    Config(String),

    /// An operating-system call failed. `op` names the call, `path` the file it was about.
    /// Likely causes: a full disk, missing permissions, a failing device.
    #[error("{op} {path}: {source}")]
    Io {
        /// The operation, e.g. `"fdatasync"`.
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: Arc<io::Error>,
    },

    /// The log directory was created with another partition count. The count is fixed for the
    /// life of a log because it decides which partition every device's events live in.
    #[error("log at {dir} has {found} partitions, the configuration asks for {expected}")]
    PartitionCountMismatch {
        /// The log directory.
        dir: PathBuf,
        /// The count recorded in the log's metadata file.
        found: u32,
        /// The count in the configuration.
        expected: u32,
    },

    /// The log's metadata file is missing while partition data exists, or is unreadable.
    /// The log refuses to guess its partition count.
    #[error("log metadata {path}: {reason}")]
    Metadata {
        /// The metadata file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// Another open [`Log`](crate::Log), in this process or another, holds the directory's
    /// lock. Two writers on one log would corrupt it.
    #[error("log at {dir} is open elsewhere")]
    Locked {
        /// The log directory.
        dir: PathBuf,
    },

    /// A partition number at or above the log's partition count.
    #[error("no partition {partition}; the log has {count}")]
    NoSuchPartition {
        /// The partition asked for.
        partition: u32,
        /// The log's partition count.
        count: u32,
    },

    /// An appended record, once framed, is larger than `max_record_bytes`. Nothing of the call
    /// that carried it was appended.
    #[error("record of {size} framed bytes exceeds the limit of {limit}")]
    RecordTooLarge {
        /// The framed size.
        size: usize,
        /// The configured limit.
        limit: usize,
    },

    /// Data that was durable is damaged: a sealed segment whose bytes fail their checks, a gap
    /// between segments, or a record that fails its CRC when read back. Crashes cannot cause
    /// this (only the unsynced tail of the active segment can be torn, and recovery repairs
    /// that); media errors and outside interference can. The log does not delete the damaged
    /// data; an operator has to move the named file away.
    #[error("corrupt log data in {path} at byte {position}: {reason}")]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Byte position inside that file.
        position: u64,
        /// What check failed.
        reason: String,
    },

    /// An earlier write or `fdatasync` of this partition failed. After a failed `fdatasync` the
    /// kernel may have dropped the dirty pages while reporting later syncs as successful, so the
    /// partition refuses further appends and flushes until the log is reopened, which re-checks
    /// the file on disk.
    #[error("partition {partition} had a failed write or sync; reopen the log")]
    Poisoned {
        /// The poisoned partition.
        partition: u32,
    },

    /// The [`LogWriter`](crate::LogWriter) thread for the partition has stopped.
    #[error("the log writer has stopped")]
    WriterClosed,

    /// A replicated log's engine (another implementation of the hub's event log over the same
    /// record types) could not be reached or did not confirm in time. Nothing is known to be
    /// stored; the operation may be retried.
    #[error("the event log is unavailable: {0}")]
    Unavailable(String),
}

impl LogError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        LogError::Io {
            op,
            path: path.into(),
            source: Arc::new(source),
        }
    }

    pub(crate) fn corrupt(
        path: impl Into<PathBuf>,
        position: u64,
        reason: impl fmt::Display,
    ) -> Self {
        LogError::Corrupt {
            path: path.into(),
            position,
            reason: reason.to_string(),
        }
    }
}

/// Why recovery cut the tail of a partition's active segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TailDamage {
    /// The file ends inside a record: a write was interrupted.
    Torn,
    /// A length field is below the smallest or above the largest possible record (this includes
    /// zero-filled space the file system allocated but never got the data for).
    BadLength,
    /// The CRC32C of a record does not match its bytes.
    ChecksumMismatch,
    /// A record carries a sequence number other than the next one (stale bytes).
    SequenceMismatch {
        /// The sequence number the log expected.
        expected: u64,
        /// The one found.
        found: u64,
    },
    /// A record passed its CRC but its property list does not parse.
    Malformed,
}

impl fmt::Display for TailDamage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TailDamage::Torn => f.write_str("file ends inside a record"),
            TailDamage::BadLength => f.write_str("impossible record length"),
            TailDamage::ChecksumMismatch => f.write_str("CRC32C mismatch"),
            TailDamage::SequenceMismatch { expected, found } => {
                write!(f, "sequence number {found}, expected {expected}")
            }
            TailDamage::Malformed => f.write_str("malformed property list"),
        }
    }
}
