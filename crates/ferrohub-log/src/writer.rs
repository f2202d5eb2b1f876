//! [`LogWriter`]: group commit on plain threads, awaitable from async code without tying the
//! log to a runtime.
//!
//! # Design
//!
//! One thread per partition. Each loops: block for the first request; take every request
//! already queued (and, if [`WriterConfig::max_wait`] is non-zero, those arriving within that
//! time, until [`WriterConfig::max_batch_bytes`] is reached); [`Partition::append`] each;
//! one [`Partition::flush`] (one `fdatasync`); then resolve every request's oneshot. So one
//! sync covers every append that arrived while the previous sync ran, and with `max_wait` zero
//! a record waits at most for the sync in progress plus its own.
//!
//! Why per partition and not one thread for all: partitions are independent files, so their
//! syncs can be in flight together (devices with a queue depth > 1 complete them in parallel;
//! the measurements in the design notes show four files beating one by 2x), a slow partition
//! does not hold the others' acknowledgements, and per-device order needs nothing more than
//! per-partition order. The cost is a handful of mostly-blocked threads.
//!
//! Only durable positions are sent back: a producer (an MQTT PUBACK, an AMQP disposition)
//! acknowledges when its receiver resolves, never before.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant};

use futures_channel::oneshot;

use crate::error::LogError;
use crate::frame;
use crate::log::Log;
use crate::partition::Partition;
use crate::record::{Position, RecordIn};

/// Group-commit settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct WriterConfig {
    /// The longest the writer keeps a batch open for more requests after its first one
    /// arrived (default zero: commit as soon as the previous sync is done; everything that
    /// queued up meanwhile still shares one sync). A record waits at most about this long,
    /// plus one write and sync, plus the sync in progress when it arrived.
    pub max_wait: Duration,
    /// A batch is committed without further waiting once it holds this many framed bytes
    /// (default 4 MiB).
    pub max_batch_bytes: usize,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            max_wait: Duration::ZERO,
            max_batch_bytes: 4 * 1024 * 1024,
        }
    }
}

impl WriterConfig {
    /// The defaults with `max_wait` set.
    pub fn with_max_wait(max_wait: Duration) -> Self {
        WriterConfig {
            max_wait,
            ..WriterConfig::default()
        }
    }
}

/// What an append resolves to.
pub type AppendResult = Result<Vec<Position>, LogError>;

struct Request {
    records: Vec<RecordIn>,
    bytes: usize,
    reply: oneshot::Sender<AppendResult>,
}

/// The group-commit writer: one thread per partition. `Send + Sync`; share it behind an `Arc`.
/// Dropping it (or [`shutdown`](Self::shutdown)) lets every thread commit what is queued, then
/// joins them.
#[derive(Debug)]
pub struct LogWriter {
    log: Log,
    senders: Vec<mpsc::Sender<Request>>,
    threads: Vec<JoinHandle<()>>,
}

impl LogWriter {
    /// Start one writer thread per partition of `log`. Fails only if a thread cannot be
    /// spawned.
    pub fn spawn(log: Log, cfg: WriterConfig) -> Result<LogWriter, LogError> {
        let mut writer = LogWriter {
            log: log.clone(),
            senders: Vec::new(),
            threads: Vec::new(),
        };
        for p in 0..log.partition_count() {
            let (tx, rx) = mpsc::channel();
            let thread_log = log.clone();
            let handle = thread::Builder::new()
                .name(format!("ferrohub-log-p{p}"))
                .spawn(move || {
                    // `p` is below the partition count, so this lookup succeeds.
                    if let Ok(partition) = thread_log.partition(p) {
                        run(partition, &rx, cfg);
                    }
                })
                .map_err(|e| LogError::io("spawn writer thread", log.config().dir.clone(), e))?;
            writer.senders.push(tx);
            writer.threads.push(handle);
        }
        Ok(writer)
    }

    /// Queue `records` for partition `partition`. The receiver resolves once they are durable
    /// (with their positions, consecutive and in order) or failed. Records of one call share
    /// one outcome; calls on one partition are committed in the order they were made. An error
    /// does not prove the records are absent: a failed sync may have written some of them.
    pub fn append(
        &self,
        partition: u32,
        records: Vec<RecordIn>,
    ) -> oneshot::Receiver<AppendResult> {
        let (reply, rx) = oneshot::channel();
        let Some(sender) = self.senders.get(partition as usize) else {
            let _ = reply.send(Err(LogError::NoSuchPartition {
                partition,
                count: self.log.partition_count(),
            }));
            return rx;
        };
        let bytes = records.iter().map(frame::framed_len).sum();
        if let Err(mpsc::SendError(req)) = sender.send(Request {
            records,
            bytes,
            reply,
        }) {
            let _ = req.reply.send(Err(LogError::WriterClosed));
        }
        rx
    }

    /// [`append`](Self::append) and wait on the current thread; for callers without an async
    /// runtime.
    pub fn append_blocking(&self, partition: u32, records: Vec<RecordIn>) -> AppendResult {
        block_on(self.append(partition, records)).unwrap_or(Err(LogError::WriterClosed))
    }

    /// The log, for reading.
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// Commit everything queued, stop the threads and wait for them.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.senders.clear();
        for t in self.threads.drain(..) {
            // A writer thread does not panic on its own; if it did, its waiters see `Canceled`.
            let _ = t.join();
        }
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The loop of one partition's writer thread; returns when every sender is gone. The batch
/// and result vectors are reused across commits (batches run to thousands of requests).
fn run(partition: &Partition, rx: &mpsc::Receiver<Request>, cfg: WriterConfig) {
    let mut batch: Vec<Request> = Vec::new();
    let mut results: Vec<AppendResult> = Vec::new();
    let mut failures = FailureLog::default();
    while let Ok(first) = rx.recv() {
        let mut bytes = first.bytes;
        batch.push(first);
        let deadline = Instant::now() + cfg.max_wait;
        while bytes < cfg.max_batch_bytes {
            let next = match rx.try_recv() {
                Ok(r) => r,
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => {
                    let now = Instant::now();
                    if now >= deadline {
                        break;
                    }
                    match rx.recv_timeout(deadline - now) {
                        Ok(r) => r,
                        Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                    }
                }
            };
            bytes += next.bytes;
            batch.push(next);
        }
        commit(partition, &mut batch, &mut results, &mut failures);
    }
}

/// How often a failing partition logs, at most: a full disk fails every commit, and one line
/// per commit would bury everything else (and fill what disk is left).
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// A writer thread's record of its failures, for rate-limited logging.
#[derive(Default)]
struct FailureLog {
    last_logged: Option<Instant>,
    /// Failures not logged since the last line.
    suppressed: u64,
    /// Whether the last commit failed, to say when it works again.
    failing: bool,
}

impl FailureLog {
    fn failed(&mut self, partition: u32, error: &LogError) {
        let now = Instant::now();
        self.failing = true;
        match self.last_logged {
            Some(t) if now.duration_since(t) < FAILURE_LOG_INTERVAL => self.suppressed += 1,
            _ => {
                tracing::error!(
                    partition,
                    error = %error,
                    suppressed = self.suppressed,
                    "group commit failed; retrying on the next commit"
                );
                self.last_logged = Some(now);
                self.suppressed = 0;
            }
        }
    }

    fn succeeded(&mut self, partition: u32) {
        if std::mem::take(&mut self.failing) {
            tracing::warn!(partition, "the partition accepts writes again");
            self.last_logged = None;
            self.suppressed = 0;
        }
    }
}

/// Append every request, sync once, answer everyone. Leaves both vectors empty. A partition a
/// failure poisoned is recovered first (`Partition::recover`), so writes resume by themselves
/// once the cause (a full disk) is gone.
fn commit(
    partition: &Partition,
    batch: &mut Vec<Request>,
    results: &mut Vec<AppendResult>,
    failures: &mut FailureLog,
) {
    if let Err(e) = partition.recover() {
        failures.failed(partition.id(), &e);
        for req in batch.drain(..) {
            let _ = req.reply.send(Err(e.clone()));
        }
        return;
    }
    results.extend(batch.iter().map(|r| partition.append(&r.records)));
    let mut failure = results.iter().find_map(|r| r.as_ref().err().cloned());
    if results.iter().any(Result::is_ok)
        && let Err(e) = partition.flush()
    {
        for r in results.iter_mut().filter(|r| r.is_ok()) {
            *r = Err(e.clone());
        }
        failure = Some(e);
    }
    match &failure {
        Some(e) if partition.is_poisoned() => failures.failed(partition.id(), e),
        // A refused record (too large) is the producer's problem, not the partition's.
        _ => failures.succeeded(partition.id()),
    }
    for (req, result) in batch.drain(..).zip(results.drain(..)) {
        // A dropped receiver means the producer stopped waiting; the records are still durable.
        let _ = req.reply.send(result);
    }
}

/// Run a future to completion on the current thread, parking between polls.
fn block_on<F: Future>(fut: F) -> F::Output {
    struct Unpark(Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(fut);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        thread::park();
    }
}
