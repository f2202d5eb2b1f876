//! Ferrohub's embedded, durable, partitioned device-to-cloud event log: what IoT Hub's built-in
//! Event Hubs-compatible endpoint reads from.
//!
//! # What it does
//!
//! - Keeps `N` partitions (fixed at creation, recorded in the log's metadata file). A device's
//!   events all go to one partition, [`partition_for`] (FNV-1a 64 of the device id mod `N`), so
//!   per-device order holds.
//! - Stores each partition as an append-only sequence of segment files of CRC32C-framed
//!   records. Each record gets a dense sequence number (from 0, per partition, dense across
//!   restarts and retention) and an offset (its byte position in the partition's logical
//!   stream).
//! - Separates write from flush: [`Partition::append`] buffers, [`Partition::flush`] issues one
//!   `fdatasync` for everything appended and only then shows the records to readers.
//!   [`LogWriter`] runs group commit on one thread per partition and answers each append with
//!   a oneshot receiver that resolves once the records are durable.
//! - Recovers on [`Log::open`]: cuts a torn or corrupt tail of the active segment (reported
//!   in [`RecoveryReport`] and with `tracing::warn!`), rebuilds missing or damaged indexes, and
//!   never drops a record a flush acknowledged.
//! - Reads from the earliest record, an offset, a sequence number or an enqueued time via a
//!   sparse per-segment index ([`StartPosition`]), and reports Event Hubs' partition
//!   properties ([`PartitionInfo`]).
//! - Removes whole old segments by age and size ([`Log::enforce_retention`], `now` passed in).
//!
//! # What it does not do
//!
//! - No async runtime, no sockets, no clock: it is synchronous and file based; times are given
//!   by the caller. [`LogWriter`]'s receivers are runtime-agnostic futures.
//! - No consumer groups or checkpoints: readers say where to start; tracking where each
//!   consumer is belongs to the caller.
//! - No replication and no compaction; a damaged *durable* region (media failure) is reported
//!   as [`LogError::Corrupt`], not repaired.
//! - Unix only (directory `fsync`, positional I/O).
//!
//! # Durability contract
//!
//! A position returned by [`LogWriter::append`], or covered by the [`DurablePosition`] a
//! [`Partition::flush`] returned, survives a process crash or power loss on a disk that honours
//! `fdatasync`. Anything else may be lost, but never partially: recovery keeps a prefix of
//! whole records. The invariants behind this are documented in the `segment` and `partition`
//! modules.
//!
//! # Example
//!
//! ```
//! use ferrohub_log::{Log, LogConfig, RecordIn, StartPosition};
//!
//! # fn main() -> Result<(), ferrohub_log::LogError> {
//! # let tmp = tempfile::tempdir().map_err(|e| ferrohub_log::LogError::Config(e.to_string()))?;
//! let (log, _report) = Log::open(LogConfig::new(tmp.path().join("events")))?;
//! let p = log.partition_for("thermostat-1");
//! let record = RecordIn { enqueued_ms: 1_700_000_000_000, body: b"21.5".to_vec(), ..RecordIn::default() };
//! let positions = log.append(p, &[record])?;
//! assert!(log.read(p, StartPosition::Earliest, 10)?.is_empty()); // not durable yet
//! let durable = log.flush(p)?;
//! assert!(durable.next_sequence_number > positions[0].sequence_number);
//! assert_eq!(log.read(p, StartPosition::Earliest, 10)?[0].body, b"21.5");
//! # Ok(())
//! # }
//! ```

mod error;
mod frame;
mod fs;
mod index;
mod log;
mod partition;
mod record;
mod segment;
mod writer;

pub use error::{LogError, TailDamage};
pub use log::{
    DEFAULT_MAX_RECORD_BYTES, DEFAULT_PARTITIONS, Log, LogConfig, MAX_PARTITIONS,
    MAX_RECORD_BYTES_LIMIT, RecoveryReport, Retention, RetentionReport, Truncation, partition_for,
};
pub use partition::{Partition, PartitionStats};
pub use record::{DurablePosition, PartitionInfo, Position, Record, RecordIn, StartPosition};
pub use writer::{AppendResult, LogWriter, WriterConfig};
