//! The device-to-cloud event log as the hub sees it: the [`EventLog`] trait every endpoint
//! appends through and every reader reads from, and its embedded implementation on
//! `ferrohub-log` (group commit on per-partition writer threads).
//!
//! An append resolves only once its records are durable (fdatasync'd); endpoints acknowledge a
//! device (PUBACK, HTTP 204) only after that. The trait is object safe and assumes nothing about
//! where the log lives, so a replicated implementation (NATS JetStream) can stand in for it.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use ferrohub_log::{
    Log, LogConfig, LogError, LogWriter, PartitionInfo, Position, Record, RecordIn, Retention,
    StartPosition, WriterConfig,
};
use tokio::sync::watch;

/// A boxed future, so the trait stays object safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The partitioned, durable log of device-to-cloud events.
pub trait EventLog: Send + Sync + 'static {
    /// How many partitions the log has (fixed when it was created).
    fn partition_count(&self) -> u32;
    /// The partition of a device: a stable hash of its id, so per-device order holds.
    fn partition_for(&self, device_id: &str) -> u32;
    /// Appends `records` to `partition`; resolves with their positions once they are durable.
    ///
    /// The records are submitted when `append` is called, not when the future is first
    /// polled: of two calls, the first one's records come first in the partition whatever
    /// order their futures are awaited in. Endpoints rely on this to keep a device's messages
    /// in order while acknowledging them asynchronously.
    fn append(
        &self,
        partition: u32,
        records: Vec<RecordIn>,
    ) -> BoxFuture<'static, Result<Vec<Position>, LogError>>;
    /// Reads up to `max` durable records of `partition` from `from`.
    fn read(
        &self,
        partition: u32,
        from: StartPosition,
        max: usize,
    ) -> BoxFuture<'_, Result<Vec<Record>, LogError>>;
    /// A partition's properties (first and last sequence numbers, last offset and time).
    fn info(&self, partition: u32) -> Result<PartitionInfo, LogError>;
    /// A receiver that changes whenever new records become durable (for long polls and streams).
    fn watch(&self) -> watch::Receiver<u64>;
    /// Brings [`EventLog::info`] of `partition` up to every record durable so far, for a log
    /// that learns of other writers' records a moment after they are stored (a cluster's
    /// nodes): before a position such as "the end now" is taken from it. Nothing to do for a
    /// log only this process writes.
    fn catch_up(&self, partition: u32) -> BoxFuture<'_, Result<(), LogError>> {
        let _ = partition;
        Box::pin(async { Ok(()) })
    }
    /// Whether the log can take appends now; `Err` says why not (for `/healthz`).
    fn health(&self) -> Result<(), String> {
        Ok(())
    }
    /// Removes what is past the retention limits; `now_ms` is milliseconds since the epoch.
    /// Logs that expire by themselves (a replicated engine's own limits) need not do anything.
    fn enforce_retention(&self, now_ms: i64) -> BoxFuture<'static, Result<(), LogError>> {
        let _ = now_ms;
        Box::pin(async { Ok(()) })
    }
}

/// Settings of the embedded log.
#[derive(Debug, Clone)]
pub struct EmbeddedLogSettings {
    /// Partition count for a new log.
    pub partitions: u32,
    /// Retention by age and size.
    pub retention: Retention,
    /// Longest a record may wait for the group commit that covers it.
    pub max_commit_wait: std::time::Duration,
}

/// The embedded log: `ferrohub-log` files under `<data_dir>/eventlog`.
pub struct EmbeddedLog {
    writer: LogWriter,
    log: Log,
    notify: Arc<watch::Sender<u64>>,
}

impl EmbeddedLog {
    /// Opens (recovering a damaged tail) or creates the log in `dir`.
    pub fn open(dir: &Path, settings: &EmbeddedLogSettings) -> Result<EmbeddedLog, LogError> {
        let mut cfg = LogConfig::new(dir);
        cfg.partitions = settings.partitions;
        cfg.retention = settings.retention;
        let (log, report) = Log::open(cfg)?;
        for cut in &report.truncations {
            tracing::warn!(?cut, "cut a damaged tail from the event log");
        }
        let writer = LogWriter::spawn(
            log.clone(),
            WriterConfig::with_max_wait(settings.max_commit_wait),
        )?;
        let notify = Arc::new(watch::channel(0).0);
        Ok(EmbeddedLog {
            writer,
            log,
            notify,
        })
    }
}

impl EventLog for EmbeddedLog {
    fn partition_count(&self) -> u32 {
        self.log.partition_count()
    }

    fn partition_for(&self, device_id: &str) -> u32 {
        self.log.partition_for(device_id)
    }

    fn append(
        &self,
        partition: u32,
        records: Vec<RecordIn>,
    ) -> BoxFuture<'static, Result<Vec<Position>, LogError>> {
        let rx = self.writer.append(partition, records);
        let notify = self.notify.clone();
        Box::pin(async move {
            let result = rx.await.unwrap_or(Err(LogError::WriterClosed));
            if result.is_ok() {
                notify.send_modify(|n| *n = n.wrapping_add(1));
            }
            result
        })
    }

    fn read(
        &self,
        partition: u32,
        from: StartPosition,
        max: usize,
    ) -> BoxFuture<'_, Result<Vec<Record>, LogError>> {
        let log = self.log.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || log.read(partition, from, max))
                .await
                .unwrap_or(Err(LogError::WriterClosed))
        })
    }

    fn info(&self, partition: u32) -> Result<PartitionInfo, LogError> {
        self.log.partition_info(partition)
    }

    fn watch(&self) -> watch::Receiver<u64> {
        self.notify.subscribe()
    }

    fn health(&self) -> Result<(), String> {
        let failed = self.log.failed_partitions();
        if failed.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "event log partitions {failed:?} cannot write: their last write or sync failed \
                 (a full or failing disk); they retry with every append"
            ))
        }
    }

    fn enforce_retention(&self, now_ms: i64) -> BoxFuture<'static, Result<(), LogError>> {
        let log = self.log.clone();
        Box::pin(async move {
            let report = tokio::task::spawn_blocking(move || log.enforce_retention(now_ms))
                .await
                .unwrap_or(Err(LogError::WriterClosed))?;
            tracing::debug!(?report, "event log retention");
            Ok(())
        })
    }
}
