//! [`C2dQueues`]: the cloud-to-device message lifecycle and the feedback queue, over a
//! [`QueueStore`].
//!
//! # Lifecycle
//!
//! A sent message is *Enqueued*. [`C2dQueues::receive`] hands out the oldest Enqueued message
//! and locks it (*Invisible*) for the lock duration. The device then completes it (removed,
//! `Success` feedback), rejects it (dead-lettered, `Rejected`), abandons it (back to Enqueued
//! with its delivery count raised; dead-lettered with `DeliveryCountExceeded` once the count
//! reaches the maximum) or lets the lock expire (back to Enqueued, count unchanged).
//! [`C2dQueues::release`] hands a message back without counting, for a connection that dropped
//! before the device acknowledged it.
//!
//! A message whose expiry time has passed is dead-lettered with `Expired` feedback the next time
//! its queue is touched, or by [`C2dQueues::sweep`]. A message under a valid lock is left to its
//! holder until the lock ends: the device got it in time, so its settlement counts.
//!
//! Feedback is produced only for the outcomes the message's [`crate::AckMode`] asks for. Feedback
//! records wait in one hub-wide queue, are handed out in locked batches and dropped when they
//! expire or were handed out too often.
//!
//! # Consistency
//!
//! * Operations on one device's queue are serialized inside a `C2dQueues` by a per-device async
//!   lock held from reading the queue until the store acknowledged the change; feedback
//!   operations by one hub-wide lock. Different devices proceed concurrently and can share a
//!   commit in the store.
//! * Sends to one device that wait for its lock are combined: whichever of them gets the lock
//!   enqueues all the waiting ones in one read and one store change, and hands each its result.
//!   A busy device's sends thus share a commit too, instead of queueing one commit each in front
//!   of its receives. [`C2dQueues::receive_many`] and [`C2dQueues::complete_many`] do the same
//!   for a connection that delivers several messages at once.
//! * Every write is guarded ([`crate::store::Expect`]), so several `C2dQueues` over one shared
//!   store (several hub processes, one database) stay correct: an operation that lost a race
//!   reads again and retries a few times before it fails with [`StoreError::Conflict`].
//! * An operation returns after its change is durable, except a receive: the locks it takes
//!   may be lost in a crash until the next durable change (see
//!   [`QueueStore::apply_relaxed`]). A lost lock makes its message available again, as an
//!   expired lock would, and the next delivery is not counted as a redelivery: delivery stays
//!   at least once, and a receive costs no disk flush of its own. Time is a parameter (`now`), truncated to
//!   the microsecond; nothing here reads a clock.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use ferrohub_storage::key_locks::KeyLocks;
use ferrohub_types::DeviceId;
use futures_channel::oneshot;

use crate::config::C2dConfig;
use crate::error::{C2dError, StoreError};
use crate::model::{FeedbackBatch, FeedbackRecord, FeedbackStatus, OutgoingMessage, QueuedMessage};
use crate::store::{
    DeviceQueue, FeedbackState, MessageHead, MessageState, QueueChange, QueueStore, StoredFeedback,
};
use crate::token;

/// How often an operation is tried when other writers keep changing the queue under it.
const MAX_ATTEMPTS: usize = 16;

/// How many expired feedback records [`C2dQueues::sweep`] reads and drops at a time.
const SWEEP_FEEDBACK_PAGE: usize = 512;

/// Runs an attempt until it succeeds, fails for a reason other than a conflict, or has been
/// tried [`MAX_ATTEMPTS`] times.
macro_rules! retry {
    ($attempt:expr) => {{
        let mut tries = 0;
        loop {
            tries += 1;
            match $attempt.await {
                Err(C2dError::Store(StoreError::Conflict { index })) if tries < MAX_ATTEMPTS => {
                    tracing::debug!(index, tries, "queue changed under an operation; retrying");
                }
                other => break other,
            }
        }
    }};
}

/// The cloud-to-device queues of every device, and the feedback queue, over a store `S`.
pub struct C2dQueues<S> {
    store: S,
    config: C2dConfig,
    timing: Timing,
    /// Held from reading a device's queue until the store acknowledged the change.
    devices: KeyLocks<DeviceId>,
    /// The hub-wide lock of the feedback operations.
    feedback: KeyLocks<()>,
    /// Sends and completions waiting for their device's lock, per device, oldest first.
    pending: Mutex<HashMap<DeviceId, Vec<Pending>>>,
}

/// An operation waiting to be carried out, together with the others waiting for the same
/// device, by whichever of them holds the device's lock.
enum Pending {
    Send {
        generation_id: String,
        message: OutgoingMessage,
        expiry_time: DateTime<Utc>,
        now: DateTime<Utc>,
        reply: oneshot::Sender<Result<QueuedMessage, C2dError>>,
    },
    Complete {
        lock_tokens: Vec<String>,
        now: DateTime<Utc>,
        reply: oneshot::Sender<Result<Vec<Result<(), C2dError>>, C2dError>>,
    },
}

/// What one [`Pending`] operation came to.
enum Outcome {
    Sent(Box<Result<QueuedMessage, C2dError>>),
    Completed(Vec<Result<(), C2dError>>),
}

impl Pending {
    fn now(&self) -> DateTime<Utc> {
        match self {
            Pending::Send { now, .. } | Pending::Complete { now, .. } => *now,
        }
    }

    fn answer(self, outcome: Result<Outcome, C2dError>) {
        // A caller that stopped waiting is not told.
        match (self, outcome) {
            (Pending::Send { reply, .. }, Ok(Outcome::Sent(r))) => {
                let _ = reply.send(*r);
            }
            (Pending::Complete { reply, .. }, Ok(Outcome::Completed(r))) => {
                let _ = reply.send(Ok(r));
            }
            (Pending::Send { reply, .. }, Err(e)) => {
                let _ = reply.send(Err(e));
            }
            (Pending::Complete { reply, .. }, Err(e)) => {
                let _ = reply.send(Err(e));
            }
            // Outcomes are made in the operations' order, of their kind; never reached.
            (Pending::Send { reply, .. }, Ok(Outcome::Completed(_))) => {
                let _ = reply.send(Err(conflict()));
            }
            (Pending::Complete { reply, .. }, Ok(Outcome::Sent(_))) => {
                let _ = reply.send(Err(conflict()));
            }
        }
    }
}

/// The configuration's durations as `chrono` deltas.
struct Timing {
    default_ttl: TimeDelta,
    lock: TimeDelta,
    feedback_ttl: TimeDelta,
    feedback_lock: TimeDelta,
}

impl<S> fmt::Debug for C2dQueues<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("C2dQueues")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn delta(name: &str, d: Duration) -> Result<TimeDelta, C2dError> {
    TimeDelta::from_std(d)
        .map_err(|_| C2dError::InvalidArgument(format!("{name} is out of range: {d:?}")))
}

/// `now` as the queues keep it: to the microsecond.
fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(6)
}

fn add(t: DateTime<Utc>, d: TimeDelta) -> Result<DateTime<Utc>, C2dError> {
    t.checked_add_signed(d)
        .ok_or_else(|| C2dError::InvalidArgument(format!("{t} plus {d} is out of range")))
}

/// Whether the message is Invisible at `now`: locked, and the lock has not expired.
fn locked_at(state: &MessageState, now: DateTime<Utc>) -> bool {
    state.lock_token.is_some() && state.locked_until.is_some_and(|until| until > now)
}

/// Whether the message is dead at `now`: expired and not held under a valid lock.
fn expired_at(head: &MessageHead, now: DateTime<Utc>) -> bool {
    head.expiry_time <= now && !locked_at(&head.state, now)
}

fn conflict() -> C2dError {
    C2dError::Store(StoreError::Conflict { index: 0 })
}

impl<S: QueueStore> C2dQueues<S> {
    /// The queues over `store`, after checking `config` ([`C2dError::InvalidArgument`] names the
    /// value out of range).
    pub async fn open(store: S, config: C2dConfig) -> Result<Self, C2dError> {
        config.validate().map_err(C2dError::InvalidArgument)?;
        let timing = Timing {
            default_ttl: delta("default_ttl", config.default_ttl)?,
            lock: delta("lock_duration", config.lock_duration)?,
            feedback_ttl: delta("feedback_ttl", config.feedback_ttl)?,
            feedback_lock: delta("feedback_lock_duration", config.feedback_lock_duration)?,
        };
        Ok(C2dQueues {
            store,
            config,
            timing,
            devices: KeyLocks::default(),
            feedback: KeyLocks::default(),
            pending: Mutex::new(HashMap::new()),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &C2dConfig {
        &self.config
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Enqueues `msg` for `device`, whose current generation id is `generation_id`, and returns
    /// it as queued.
    ///
    /// Fails with [`C2dError::MessageTooLarge`] when the message exceeds the size limit,
    /// [`C2dError::InvalidArgument`] when its expiry is not after `now`, and
    /// [`C2dError::QueueFull`] when the queue already holds the maximum number of messages that
    /// have not expired; then nothing is stored. A message without expiry lives for the default
    /// time to live. The message id is kept as given, absent included.
    ///
    /// Sends to one device that arrive while another is being stored are enqueued together, in
    /// the order they arrived, by one store change. Dropping the future of a send that is
    /// enqueueing others fails those with [`StoreError::Unavailable`] (their messages may or may
    /// not have been stored): callers that cannot rule out cancellation should drive sends to
    /// completion on a task of their own.
    pub async fn send(
        &self,
        device: &DeviceId,
        generation_id: &str,
        mut msg: OutgoingMessage,
        now: DateTime<Utc>,
    ) -> Result<QueuedMessage, C2dError> {
        let now = micros(now);
        let size = msg.size();
        if size > self.config.max_message_bytes {
            return Err(C2dError::MessageTooLarge {
                size,
                max: self.config.max_message_bytes,
            });
        }
        msg.expiry = msg.expiry.map(micros);
        let expiry_time = match msg.expiry {
            Some(e) if e <= now => {
                return Err(C2dError::InvalidArgument(format!(
                    "The message's expiry time {e} is not in the future."
                )));
            }
            Some(e) => e,
            None => add(now, self.timing.default_ttl)?,
        };
        let (reply, result) = oneshot::channel();
        let op = Pending::Send {
            generation_id: generation_id.to_owned(),
            message: msg,
            expiry_time,
            now,
            reply,
        };
        self.combined(device, op, result).await
    }

    /// Queues `op` for `device`, waits for the device's lock and, unless the previous holder
    /// already carried it out, carries out every operation waiting for the device in one store
    /// change, at the latest `now` among them.
    async fn combined<T>(
        &self,
        device: &DeviceId,
        op: Pending,
        mut result: oneshot::Receiver<Result<T, C2dError>>,
    ) -> Result<T, C2dError> {
        self.pending().entry(device.clone()).or_default().push(op);
        let _guard = self.devices.lock(device).await;
        if let Ok(Some(done)) = result.try_recv() {
            return done;
        }
        let batch = self.pending().remove(device).unwrap_or_default();
        if let Some(now) = batch.iter().map(Pending::now).max() {
            match retry!(self.try_combined(device, &batch, now)) {
                Ok(outcomes) => {
                    for (op, outcome) in batch.into_iter().zip(outcomes) {
                        op.answer(Ok(outcome));
                    }
                }
                Err(e) => {
                    for op in batch {
                        op.answer(Err(e.clone()));
                    }
                }
            }
        }
        match result.try_recv() {
            Ok(Some(done)) => done,
            // Taken by an operation whose future was dropped before it answered.
            _ => Err(C2dError::Store(StoreError::Unavailable(
                "the operation was interrupted; it may or may not have been carried out".into(),
            ))),
        }
    }

    /// The operations waiting for their device's lock.
    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<DeviceId, Vec<Pending>>> {
        // The map is consistent after every statement that changes it.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Carries out `batch` in order in one store change: a send gets its message or
    /// [`C2dError::QueueFull`] (a completion earlier in the batch frees a place), a completion
    /// gets an outcome per lock token.
    async fn try_combined(
        &self,
        device: &DeviceId,
        batch: &[Pending],
        now: DateTime<Utc>,
    ) -> Result<Vec<Outcome>, C2dError> {
        let queue = self.store.queue(device).await?;
        let mut changes = Vec::new();
        let mut live = self.clean_up(device, &queue, now, &mut changes)?;
        let mut last = queue.last_sequence_number;
        let mut settled = std::collections::HashSet::new();
        let mut outcomes = Vec::with_capacity(batch.len());
        for op in batch {
            match op {
                Pending::Send {
                    generation_id,
                    message,
                    expiry_time,
                    now: sent_at,
                    ..
                } => {
                    if live >= self.config.max_queue_depth {
                        outcomes.push(Outcome::Sent(Box::new(Err(C2dError::QueueFull {
                            max: self.config.max_queue_depth,
                        }))));
                        continue;
                    }
                    let sequence_number = last.checked_add(1).ok_or_else(|| {
                        C2dError::Store(StoreError::Corrupt("sequence overflow".into()))
                    })?;
                    let queued = QueuedMessage {
                        device_id: device.clone(),
                        sequence_number,
                        enqueued_time: *sent_at,
                        expiry_time: *expiry_time,
                        delivery_count: 0,
                        deliveries: 0,
                        lock_token: None,
                        locked_until: None,
                        message: message.clone(),
                        device_generation_id: generation_id.clone(),
                    };
                    changes.push(QueueChange::Insert {
                        message: queued.clone(),
                        expect_last_sequence_number: last,
                    });
                    last = sequence_number;
                    live += 1;
                    outcomes.push(Outcome::Sent(Box::new(Ok(queued))));
                }
                Pending::Complete { lock_tokens, .. } => {
                    let mut results = Vec::with_capacity(lock_tokens.len());
                    for lock_token in lock_tokens {
                        let head = queue.messages.iter().find(|h| {
                            h.state.lock_token.as_deref() == Some(lock_token.as_str())
                                && locked_at(&h.state, now)
                        });
                        match head {
                            Some(head) if settled.insert(head.sequence_number) => {
                                self.remove(
                                    device,
                                    head,
                                    FeedbackStatus::Success,
                                    now,
                                    &mut changes,
                                )?;
                                live = live.saturating_sub(1);
                                results.push(Ok(()));
                            }
                            _ => results.push(Err(C2dError::LockLost)),
                        }
                    }
                    outcomes.push(Outcome::Completed(results));
                }
            }
        }
        self.apply(changes).await?;
        Ok(outcomes)
    }

    /// Locks and returns the device's oldest Enqueued message that has not expired, or `None`.
    ///
    /// A message whose lock expired counts as Enqueued (its delivery count is unchanged). The
    /// returned message is locked until `now` plus the lock duration under a new token, and its
    /// `deliveries` is one more than before. Expired messages found on the way are
    /// dead-lettered.
    pub async fn receive(
        &self,
        device: &DeviceId,
        now: DateTime<Utc>,
    ) -> Result<Option<QueuedMessage>, C2dError> {
        Ok(self.receive_many(device, 1, now).await?.pop())
    }

    /// Like [`C2dQueues::receive`] for up to `max` messages at once, oldest first, each under
    /// its own lock token, in one store change. Empty when no message is available.
    pub async fn receive_many(
        &self,
        device: &DeviceId,
        max: usize,
        now: DateTime<Utc>,
    ) -> Result<Vec<QueuedMessage>, C2dError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let now = micros(now);
        let _guard = self.devices.lock(device).await;
        retry!(self.try_receive(device, max, now))
    }

    async fn try_receive(
        &self,
        device: &DeviceId,
        max: usize,
        now: DateTime<Utc>,
    ) -> Result<Vec<QueuedMessage>, C2dError> {
        let queue = self.store.queue(device).await?;
        let mut changes = Vec::new();
        self.clean_up(device, &queue, now, &mut changes)?;
        let mut received = Vec::new();
        let available = queue
            .messages
            .iter()
            .filter(|h| !locked_at(&h.state, now) && !expired_at(h, now))
            .take(max);
        for head in available {
            let Some(mut message) = self.store.message(device, head.sequence_number).await? else {
                // Removed since the queue was read, by another writer.
                return Err(conflict());
            };
            let state = MessageState {
                delivery_count: head.state.delivery_count,
                deliveries: head.state.deliveries.saturating_add(1),
                lock_token: Some(token::new()?),
                locked_until: Some(add(now, self.timing.lock)?),
            };
            changes.push(QueueChange::SetMessageState {
                device_id: device.clone(),
                sequence_number: head.sequence_number,
                state: state.clone(),
                expect: head.expect(),
            });
            message.delivery_count = state.delivery_count;
            message.deliveries = state.deliveries;
            message.lock_token = state.lock_token;
            message.locked_until = state.locked_until;
            received.push(message);
        }
        // Locks need not survive a crash (see the module doc).
        if !changes.is_empty() {
            self.store.apply_relaxed(changes).await?;
        }
        Ok(received)
    }

    /// Completes the message locked under `lock_token`: it leaves the queue, with `Success`
    /// feedback if its ack mode is positive or full.
    ///
    /// [`C2dError::LockLost`] when no message of this device holds a valid lock with this token
    /// (unknown, settled, another device's, or expired: then the message is Enqueued again).
    pub async fn complete(
        &self,
        device: &DeviceId,
        lock_token: &str,
        now: DateTime<Utc>,
    ) -> Result<(), C2dError> {
        let mut outcomes = self
            .complete_many(device, &[lock_token.to_owned()], now)
            .await?;
        outcomes.pop().unwrap_or(Err(C2dError::LockLost))
    }

    /// Abandons the message locked under `lock_token`: its delivery count goes up by one; at the
    /// maximum it is dead-lettered (`DeliveryCountExceeded`), else it is Enqueued again (or
    /// dead-lettered as `Expired` if it expired meanwhile). [`C2dError::LockLost`] as for
    /// [`C2dQueues::complete`].
    pub async fn abandon(
        &self,
        device: &DeviceId,
        lock_token: &str,
        now: DateTime<Utc>,
    ) -> Result<(), C2dError> {
        self.settle(device, lock_token, now, Settle::Abandon).await
    }

    /// Rejects the message locked under `lock_token`: it is dead-lettered (`Rejected`).
    /// [`C2dError::LockLost`] as for [`C2dQueues::complete`].
    pub async fn reject(
        &self,
        device: &DeviceId,
        lock_token: &str,
        now: DateTime<Utc>,
    ) -> Result<(), C2dError> {
        self.settle(device, lock_token, now, Settle::Reject).await
    }

    /// Unlocks the message locked under `lock_token` without counting an abandon: for a
    /// connection that dropped before the device acknowledged. The next receive hands it out
    /// again as a redelivery. [`C2dError::LockLost`] as for [`C2dQueues::complete`].
    pub async fn release(
        &self,
        device: &DeviceId,
        lock_token: &str,
        now: DateTime<Utc>,
    ) -> Result<(), C2dError> {
        self.settle(device, lock_token, now, Settle::Release).await
    }

    /// Completes several messages of one device at once, in one store change (shared with the
    /// device's other waiting sends and completions): each lock token gets the outcome
    /// [`C2dQueues::complete`] would give it ([`C2dError::LockLost`] for a token that holds no
    /// valid lock, or that appears twice). The outer error is a store failure, after which none
    /// was completed. Cancellation as for [`C2dQueues::send`].
    pub async fn complete_many(
        &self,
        device: &DeviceId,
        lock_tokens: &[String],
        now: DateTime<Utc>,
    ) -> Result<Vec<Result<(), C2dError>>, C2dError> {
        if lock_tokens.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, result) = oneshot::channel();
        let op = Pending::Complete {
            lock_tokens: lock_tokens.to_vec(),
            now: micros(now),
            reply,
        };
        self.combined(device, op, result).await
    }

    async fn settle(
        &self,
        device: &DeviceId,
        lock_token: &str,
        now: DateTime<Utc>,
        how: Settle,
    ) -> Result<(), C2dError> {
        let now = micros(now);
        let _guard = self.devices.lock(device).await;
        retry!(self.try_settle(device, lock_token, now, how))
    }

    async fn try_settle(
        &self,
        device: &DeviceId,
        lock_token: &str,
        now: DateTime<Utc>,
        how: Settle,
    ) -> Result<(), C2dError> {
        let queue = self.store.queue(device).await?;
        let mut changes = Vec::new();
        self.clean_up(device, &queue, now, &mut changes)?;
        let Some(head) = queue.messages.iter().find(|h| {
            h.state.lock_token.as_deref() == Some(lock_token) && locked_at(&h.state, now)
        }) else {
            self.apply(changes).await?;
            return Err(C2dError::LockLost);
        };
        let requeue = |delivery_count| QueueChange::SetMessageState {
            device_id: device.clone(),
            sequence_number: head.sequence_number,
            state: MessageState {
                delivery_count,
                deliveries: head.state.deliveries,
                lock_token: None,
                locked_until: None,
            },
            expect: head.expect(),
        };
        match how {
            Settle::Reject => {
                self.remove(device, head, FeedbackStatus::Rejected, now, &mut changes)?;
            }
            Settle::Abandon => {
                let count = head.state.delivery_count.saturating_add(1);
                if count >= self.config.max_delivery_count {
                    self.remove(
                        device,
                        head,
                        FeedbackStatus::DeliveryCountExceeded,
                        now,
                        &mut changes,
                    )?;
                } else if head.expiry_time <= now {
                    self.remove(device, head, FeedbackStatus::Expired, now, &mut changes)?;
                } else {
                    changes.push(requeue(count));
                }
            }
            Settle::Release => {
                if head.expiry_time <= now {
                    self.remove(device, head, FeedbackStatus::Expired, now, &mut changes)?;
                } else {
                    changes.push(requeue(head.state.delivery_count));
                }
            }
        }
        self.apply(changes).await
    }

    /// Removes every message of the device's queue and returns how many there were. Messages
    /// that asked for negative or full acknowledgement produce `Purged` feedback. Messages that
    /// had already expired are not counted and are dead-lettered as `Expired`.
    pub async fn purge(&self, device: &DeviceId, now: DateTime<Utc>) -> Result<u64, C2dError> {
        let now = micros(now);
        let _guard = self.devices.lock(device).await;
        retry!(self.try_purge(device, now))
    }

    async fn try_purge(&self, device: &DeviceId, now: DateTime<Utc>) -> Result<u64, C2dError> {
        let queue = self.store.queue(device).await?;
        let mut changes = Vec::new();
        self.clean_up(device, &queue, now, &mut changes)?;
        let mut purged = 0u64;
        for head in queue.messages.iter().filter(|h| !expired_at(h, now)) {
            self.remove(device, head, FeedbackStatus::Purged, now, &mut changes)?;
            purged += 1;
        }
        self.apply(changes).await?;
        Ok(purged)
    }

    /// How many messages the device's queue holds at `now`, Enqueued and Invisible, leaving out
    /// those that expired (and are not under a valid lock). This is the device identity's
    /// `cloudToDeviceMessageCount`.
    pub async fn depth(&self, device: &DeviceId, now: DateTime<Utc>) -> Result<u64, C2dError> {
        let now = micros(now);
        let queue = self.store.queue(device).await?;
        Ok(queue
            .messages
            .iter()
            .filter(|h| !expired_at(h, now))
            .count() as u64)
    }

    /// The devices whose queue holds at least one message (possibly expired), ordered by id.
    pub async fn devices_with_messages(&self) -> Result<Vec<DeviceId>, C2dError> {
        Ok(self.store.devices_with_messages().await?)
    }

    /// Dead-letters every expired message not under a valid lock (with `Expired` feedback where
    /// asked for) and drops every expired feedback record not under a valid lock. Returns how
    /// many messages and feedback records it removed, together.
    pub async fn sweep(&self, now: DateTime<Utc>) -> Result<u64, C2dError> {
        let now = micros(now);
        let mut removed = 0u64;
        for device in self.store.devices_with_expired_messages(now).await? {
            let _guard = self.devices.lock(&device).await;
            removed += retry!(self.try_sweep_device(&device, now))?;
        }
        let _guard = self.feedback.lock(&()).await;
        let mut conflicts = 0;
        loop {
            let expired = self
                .store
                .expired_feedback(now, SWEEP_FEEDBACK_PAGE)
                .await?;
            if expired.is_empty() {
                break;
            }
            let n = expired.len() as u64;
            let changes = expired
                .into_iter()
                .map(|f| QueueChange::RemoveFeedback {
                    id: f.id,
                    expect: f.expect(),
                })
                .collect();
            match self.apply(changes).await {
                Ok(()) => removed += n,
                Err(C2dError::Store(StoreError::Conflict { .. })) if conflicts < MAX_ATTEMPTS => {
                    conflicts += 1;
                }
                Err(e) => return Err(e),
            }
        }
        if removed > 0 {
            tracing::debug!(
                removed,
                "swept expired cloud-to-device messages and feedback"
            );
        }
        Ok(removed)
    }

    async fn try_sweep_device(
        &self,
        device: &DeviceId,
        now: DateTime<Utc>,
    ) -> Result<u64, C2dError> {
        let queue = self.store.queue(device).await?;
        let mut changes = Vec::new();
        self.clean_up(device, &queue, now, &mut changes)?;
        let dead = queue.messages.iter().filter(|h| expired_at(h, now)).count() as u64;
        self.apply(changes).await?;
        Ok(dead)
    }

    /// Forgets a deleted device: its queue, its sequence numbers and its pending feedback go,
    /// and no feedback is produced.
    pub async fn delete_device(&self, device: &DeviceId) -> Result<(), C2dError> {
        let _guard = self.devices.lock(device).await;
        self.apply(vec![QueueChange::DeleteDevice {
            device_id: device.clone(),
        }])
        .await
    }

    /// Locks and returns up to the batch size of the oldest feedback records that are neither
    /// expired nor locked, under one new lock token, for the feedback lock duration; `None` when
    /// there are none. Records of a batch whose lock expired become available again; a record
    /// already handed out the maximum number of times is dropped instead.
    pub async fn receive_feedback(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Option<FeedbackBatch>, C2dError> {
        let now = micros(now);
        let _guard = self.feedback.lock(&()).await;
        let mut conflicts = 0;
        loop {
            match self.try_receive_feedback(now).await {
                // Only worn-out records were found and dropped: look again.
                Ok(Received::Dropped) => {}
                Ok(Received::Batch(batch)) => return Ok(batch),
                Err(C2dError::Store(StoreError::Conflict { .. })) if conflicts < MAX_ATTEMPTS => {
                    conflicts += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn try_receive_feedback(&self, now: DateTime<Utc>) -> Result<Received, C2dError> {
        let available = self
            .store
            .available_feedback(now, self.config.feedback_batch_size)
            .await?;
        if available.is_empty() {
            return Ok(Received::Batch(None));
        }
        let token = token::new()?;
        let locked_until = add(now, self.timing.feedback_lock)?;
        let mut changes = Vec::with_capacity(available.len());
        let mut records = Vec::new();
        for f in available {
            if f.state.deliveries >= self.config.feedback_max_delivery_count {
                changes.push(QueueChange::RemoveFeedback {
                    id: f.id,
                    expect: f.expect(),
                });
                continue;
            }
            changes.push(QueueChange::SetFeedbackState {
                id: f.id,
                state: FeedbackState {
                    deliveries: f.state.deliveries.saturating_add(1),
                    lock_token: Some(token.clone()),
                    locked_until: Some(locked_until),
                },
                expect: f.expect(),
            });
            records.push(f.record);
        }
        self.apply(changes).await?;
        if records.is_empty() {
            return Ok(Received::Dropped);
        }
        Ok(Received::Batch(Some(FeedbackBatch {
            lock_token: token,
            enqueued_time: now,
            records,
        })))
    }

    /// Completes the feedback batch locked under `lock_token`: its records leave the feedback
    /// queue. [`C2dError::LockLost`] when the token is unknown or its lock has expired.
    pub async fn complete_feedback(
        &self,
        lock_token: &str,
        now: DateTime<Utc>,
    ) -> Result<(), C2dError> {
        let now = micros(now);
        let _guard = self.feedback.lock(&()).await;
        retry!(self.try_settle_feedback(lock_token, now, true))
    }

    /// Abandons the feedback batch locked under `lock_token`: its records become available
    /// again, except those handed out the maximum number of times, which are dropped.
    /// [`C2dError::LockLost`] when the token is unknown or its lock has expired.
    pub async fn abandon_feedback(
        &self,
        lock_token: &str,
        now: DateTime<Utc>,
    ) -> Result<(), C2dError> {
        let now = micros(now);
        let _guard = self.feedback.lock(&()).await;
        retry!(self.try_settle_feedback(lock_token, now, false))
    }

    async fn try_settle_feedback(
        &self,
        lock_token: &str,
        now: DateTime<Utc>,
        complete: bool,
    ) -> Result<(), C2dError> {
        let records = self.store.locked_feedback(lock_token).await?;
        let valid = |f: &StoredFeedback| f.state.locked_until.is_some_and(|until| until > now);
        if records.is_empty() || !records.iter().all(valid) {
            return Err(C2dError::LockLost);
        }
        let changes = records
            .into_iter()
            .map(|f| {
                if complete || f.state.deliveries >= self.config.feedback_max_delivery_count {
                    QueueChange::RemoveFeedback {
                        id: f.id,
                        expect: f.expect(),
                    }
                } else {
                    QueueChange::SetFeedbackState {
                        id: f.id,
                        state: FeedbackState {
                            deliveries: f.state.deliveries,
                            lock_token: None,
                            locked_until: None,
                        },
                        expect: f.expect(),
                    }
                }
            })
            .collect();
        self.apply(changes).await
    }

    // === Helpers ===

    /// Adds to `changes` the dead-lettering of every expired message of `queue` that is not
    /// under a valid lock, and returns how many messages remain.
    fn clean_up(
        &self,
        device: &DeviceId,
        queue: &DeviceQueue,
        now: DateTime<Utc>,
        changes: &mut Vec<QueueChange>,
    ) -> Result<usize, C2dError> {
        let mut live = 0;
        for head in &queue.messages {
            if expired_at(head, now) {
                self.remove(device, head, FeedbackStatus::Expired, now, changes)?;
            } else {
                live += 1;
            }
        }
        Ok(live)
    }

    /// Adds to `changes` the removal of the message, with feedback if its ack mode asks for
    /// `status`.
    fn remove(
        &self,
        device: &DeviceId,
        head: &MessageHead,
        status: FeedbackStatus,
        now: DateTime<Utc>,
        changes: &mut Vec<QueueChange>,
    ) -> Result<(), C2dError> {
        changes.push(QueueChange::RemoveMessage {
            device_id: device.clone(),
            sequence_number: head.sequence_number,
            expect: head.expect(),
        });
        if status != FeedbackStatus::Success {
            tracing::debug!(
                device = %device,
                sequence_number = head.sequence_number,
                status = status.as_str(),
                "cloud-to-device message dead-lettered"
            );
        }
        if head.ack.wants(status) {
            changes.push(QueueChange::AddFeedback {
                record: FeedbackRecord {
                    original_message_id: head.message_id.clone().unwrap_or_default(),
                    device_id: device.as_str().to_owned(),
                    device_generation_id: head.device_generation_id.clone(),
                    enqueued_time_utc: now,
                    status_code: status,
                    description: status.as_str().to_owned(),
                },
                expiry_time: add(now, self.timing.feedback_ttl)?,
            });
        }
        Ok(())
    }

    async fn apply(&self, changes: Vec<QueueChange>) -> Result<(), C2dError> {
        if changes.is_empty() {
            return Ok(());
        }
        Ok(self.store.apply(changes).await?)
    }
}

#[derive(Debug, Clone, Copy)]
enum Settle {
    Abandon,
    Reject,
    Release,
}

enum Received {
    Batch(Option<FeedbackBatch>),
    Dropped,
}
