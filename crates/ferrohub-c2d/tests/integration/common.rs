//! Test helpers: a minimal executor, store fixtures, times, messages and a feedback drain.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use ferrohub_c2d::{
    AckMode, C2dConfig, C2dQueues, FeedbackStatus, MemoryQueueStore, OutgoingMessage, QueueStore,
    SqliteQueueStore,
};
use ferrohub_types::DeviceId;
use tempfile::TempDir;

struct ThreadWaker(Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs a future to completion on this thread, parking while it is pending.
pub(crate) fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let waker = Waker::from(Arc::new(ThreadWaker(thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        thread::park();
    }
}

/// A memory store; the second value only mirrors [`sqlite`].
pub(crate) fn memory() -> (MemoryQueueStore, Option<TempDir>) {
    (MemoryQueueStore::new(), None)
}

/// A SQLite store in a fresh temporary directory, which must outlive the store.
pub(crate) fn sqlite() -> (SqliteQueueStore, Option<TempDir>) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = SqliteQueueStore::open(dir.path().join("registry.db")).expect("open SQLite store");
    (store, Some(dir))
}

/// Queues over `store` with `config`.
pub(crate) fn queues<S: QueueStore>(store: S, config: C2dConfig) -> C2dQueues<S> {
    block_on(C2dQueues::open(store, config)).expect("valid config")
}

pub(crate) fn did(s: &str) -> DeviceId {
    DeviceId::new(s).expect("valid device id")
}

/// A fixed instant plus `secs` seconds.
pub(crate) fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000 + secs, 0).expect("valid time")
}

pub(crate) fn secs(n: i64) -> TimeDelta {
    TimeDelta::seconds(n)
}

pub(crate) fn minutes(n: u64) -> Duration {
    Duration::from_secs(60 * n)
}

/// A message with this id and ack mode and a small body.
pub(crate) fn msg(id: &str, ack: AckMode) -> OutgoingMessage {
    OutgoingMessage {
        message_id: Some(id.to_owned()),
        ack,
        ..OutgoingMessage::new(format!("body of {id}"))
    }
}

/// A message with every field set.
pub(crate) fn full_msg(id: &str) -> OutgoingMessage {
    OutgoingMessage {
        message_id: Some(id.to_owned()),
        correlation_id: Some("corr-1".to_owned()),
        user_id: Some("user-ü".to_owned()),
        content_type: Some("application/json".to_owned()),
        content_encoding: Some("utf-8".to_owned()),
        expiry: Some(at(3600 * 24)),
        ack: AckMode::Full,
        properties: vec![
            ("k1".to_owned(), "v1".to_owned()),
            ("k1".to_owned(), "repeated".to_owned()),
            ("empty".to_owned(), String::new()),
            ("spaces & = ?".to_owned(), "ünïcode ✓".to_owned()),
        ],
        body: vec![0, 1, 2, 255, 0, 42],
    }
}

/// Receives and completes every feedback batch available at `now`; returns their records as
/// (original message id, device id, status), in order.
pub(crate) fn drain_feedback<S: QueueStore>(
    q: &C2dQueues<S>,
    now: DateTime<Utc>,
) -> Vec<(String, String, FeedbackStatus)> {
    let mut out = Vec::new();
    while let Some(batch) = block_on(q.receive_feedback(now)).expect("receive feedback") {
        assert!(!batch.records.is_empty());
        for r in &batch.records {
            out.push((
                r.original_message_id.clone(),
                r.device_id.clone(),
                r.status_code,
            ));
        }
        block_on(q.complete_feedback(&batch.lock_token, now)).expect("complete feedback");
    }
    out
}

/// Statuses of the feedback records for the message `id` in `records`.
pub(crate) fn statuses_of(
    records: &[(String, String, FeedbackStatus)],
    id: &str,
) -> Vec<FeedbackStatus> {
    records
        .iter()
        .filter(|(m, _, _)| m == id)
        .map(|(_, _, s)| *s)
        .collect()
}
