//! Where queues and feedback are kept: the [`QueueStore`] trait and its implementations.
//!
//! The trait is a narrow compare-and-set contract. Stores know nothing of lock expiry, time to
//! live, delivery counts or acknowledgement modes: [`crate::C2dQueues`] reads a device's queue,
//! decides, and writes back a list of [`QueueChange`]s, each guarded by what it expects to find.
//! A relational database implements each change as one guarded statement and an `apply` as one
//! transaction, so several hub processes can share one database: a writer that lost a race gets
//! [`StoreError::Conflict`] and the queue logic reads again.
//!
//! # Guards
//!
//! A message's or feedback record's mutable state is guarded by its `(deliveries, lock_token)`
//! pair ([`Expect`]). Every state change alters that pair, and never back to an earlier value:
//! locking increments `deliveries` and sets a fresh random token, unlocking clears the token
//! without decrementing. So an unchanged pair means an unchanged record.
//!
//! # Times
//!
//! Stores keep times to the microsecond; the queue logic only hands them such times.
//!
//! Every implementation must pass the contract suite, `crate::contract` (feature
//! `contract-suite`), as the memory and SQLite stores do in `tests/integration/contract.rs`.

mod any;
pub mod memory;
pub mod sqlite;

use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use ferrohub_types::DeviceId;

pub use crate::error::StoreError;
use crate::model::{AckMode, FeedbackRecord, QueuedMessage};
pub use any::AnyQueueStore;
pub use memory::MemoryQueueStore;
pub use sqlite::{SqliteQueueStore, WriteStats};

/// What a guarded change expects of a message or feedback record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expect {
    /// The record's `deliveries`.
    pub deliveries: u32,
    /// The record's lock token.
    pub lock_token: Option<String>,
}

/// The mutable part of a queued message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageState {
    /// Abandons so far.
    pub delivery_count: u32,
    /// Times locked so far.
    pub deliveries: u32,
    /// The current lock's token.
    pub lock_token: Option<String>,
    /// When the current lock expires.
    pub locked_until: Option<DateTime<Utc>>,
}

/// What the queue logic needs to know of a queued message: everything but its body, properties
/// and the system properties no decision depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageHead {
    /// The message's sequence number.
    pub sequence_number: u64,
    /// When it was sent.
    pub enqueued_time: DateTime<Utc>,
    /// When it expires.
    pub expiry_time: DateTime<Utc>,
    /// Its mutable state.
    pub state: MessageState,
    /// Its `message-id`.
    pub message_id: Option<String>,
    /// Its `iothub-ack`.
    pub ack: AckMode,
    /// The device's generation id at send time.
    pub device_generation_id: String,
}

impl MessageHead {
    /// The guard that matches this head's state.
    pub fn expect(&self) -> Expect {
        Expect {
            deliveries: self.state.deliveries,
            lock_token: self.state.lock_token.clone(),
        }
    }
}

/// One device's queue as read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceQueue {
    /// The highest sequence number ever given to a message of this device (0 if none), whether
    /// or not that message is still queued.
    pub last_sequence_number: u64,
    /// The queued messages, by sequence number.
    pub messages: Vec<MessageHead>,
}

/// The mutable part of a feedback record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedbackState {
    /// Times handed out so far.
    pub deliveries: u32,
    /// The token of the batch lock that holds it.
    pub lock_token: Option<String>,
    /// When that lock expires.
    pub locked_until: Option<DateTime<Utc>>,
}

/// A feedback record waiting in the feedback queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFeedback {
    /// The store's id for it; ids increase in the order records are added and are never reused.
    pub id: u64,
    /// The record.
    pub record: FeedbackRecord,
    /// When it expires unreceived.
    pub expiry_time: DateTime<Utc>,
    /// Its mutable state.
    pub state: FeedbackState,
}

impl StoredFeedback {
    /// The guard that matches this record's state.
    pub fn expect(&self) -> Expect {
        Expect {
            deliveries: self.state.deliveries,
            lock_token: self.state.lock_token.clone(),
        }
    }
}

/// One guarded write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueChange {
    /// Adds a message to its device's queue. Conflicts unless the device's last sequence number
    /// is `expect_last_sequence_number` and the message's is greater; the device's last sequence
    /// number becomes the message's.
    Insert {
        /// The message, with its initial state.
        message: QueuedMessage,
        /// The device's last sequence number as read.
        expect_last_sequence_number: u64,
    },
    /// Replaces a message's mutable state.
    SetMessageState {
        /// The device.
        device_id: DeviceId,
        /// The message.
        sequence_number: u64,
        /// The new state.
        state: MessageState,
        /// What the message's state must be.
        expect: Expect,
    },
    /// Removes a message from its queue (completed or dead-lettered).
    RemoveMessage {
        /// The device.
        device_id: DeviceId,
        /// The message.
        sequence_number: u64,
        /// What the message's state must be.
        expect: Expect,
    },
    /// Appends a record to the feedback queue, unlocked and never delivered. Never conflicts.
    AddFeedback {
        /// The record.
        record: FeedbackRecord,
        /// When it expires unreceived.
        expiry_time: DateTime<Utc>,
    },
    /// Replaces a feedback record's mutable state.
    SetFeedbackState {
        /// The record's id.
        id: u64,
        /// The new state.
        state: FeedbackState,
        /// What the record's state must be.
        expect: Expect,
    },
    /// Removes a feedback record.
    RemoveFeedback {
        /// The record's id.
        id: u64,
        /// What the record's state must be.
        expect: Expect,
    },
    /// Forgets a device: its messages, its sequence counter and its pending feedback records.
    /// Never conflicts.
    DeleteDevice {
        /// The device.
        device_id: DeviceId,
    },
}

/// Durable storage of cloud-to-device queues and of the feedback queue.
///
/// Every method returns a `Send` future and needs no particular async runtime. Reads see every
/// `apply` whose future has completed.
pub trait QueueStore: Send + Sync + 'static {
    /// Applies `changes` in order, atomically: all are stored, or none is and the error is
    /// [`StoreError::Conflict`] with the index of the first change whose guard failed (a later
    /// change sees the effects of the earlier ones). When the future completes with `Ok`, the
    /// changes are durable.
    fn apply(
        &self,
        changes: Vec<QueueChange>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Like [`QueueStore::apply`], for changes whose loss in a crash breaks no promise: when the
    /// future completes with `Ok` the changes are stored and seen by every later read and
    /// change, but they may still be lost in a crash, together with the relaxed changes after
    /// them, until a later `apply` completes (which makes every change before it durable too).
    /// The queues use it for the locks a receive takes: a lost lock only makes its message
    /// available again, as an expired lock would. By default the same as `apply`.
    fn apply_relaxed(
        &self,
        changes: Vec<QueueChange>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.apply(changes)
    }

    /// A device's queue; empty (last sequence number 0) for a device never seen.
    fn queue(
        &self,
        device: &DeviceId,
    ) -> impl Future<Output = Result<DeviceQueue, StoreError>> + Send;

    /// One whole message with its current state.
    fn message(
        &self,
        device: &DeviceId,
        sequence_number: u64,
    ) -> impl Future<Output = Result<Option<QueuedMessage>, StoreError>> + Send;

    /// The devices whose queue holds at least one message, ordered by id.
    fn devices_with_messages(
        &self,
    ) -> impl Future<Output = Result<Vec<DeviceId>, StoreError>> + Send;

    /// The devices with at least one message whose expiry time is at or before `now`, ordered
    /// by id.
    fn devices_with_expired_messages(
        &self,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<DeviceId>, StoreError>> + Send;

    /// Up to `limit` feedback records that can be handed out at `now`, oldest (lowest id) first:
    /// not expired (expiry time after `now`) and not under a lock that is still valid at `now`.
    fn available_feedback(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<StoredFeedback>, StoreError>> + Send;

    /// Up to `limit` feedback records that expired at or before `now` and are not under a lock
    /// still valid at `now`, oldest first.
    fn expired_feedback(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<StoredFeedback>, StoreError>> + Send;

    /// The feedback records whose lock token is `lock_token` (whether or not the lock is still
    /// valid), oldest first.
    fn locked_feedback(
        &self,
        lock_token: &str,
    ) -> impl Future<Output = Result<Vec<StoredFeedback>, StoreError>> + Send;
}

/// A shared store: several [`crate::C2dQueues`] (or other users) over one store.
impl<S: QueueStore> QueueStore for Arc<S> {
    fn apply(
        &self,
        changes: Vec<QueueChange>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        S::apply(self, changes)
    }

    fn apply_relaxed(
        &self,
        changes: Vec<QueueChange>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        S::apply_relaxed(self, changes)
    }

    fn queue(
        &self,
        device: &DeviceId,
    ) -> impl Future<Output = Result<DeviceQueue, StoreError>> + Send {
        S::queue(self, device)
    }

    fn message(
        &self,
        device: &DeviceId,
        sequence_number: u64,
    ) -> impl Future<Output = Result<Option<QueuedMessage>, StoreError>> + Send {
        S::message(self, device, sequence_number)
    }

    fn devices_with_messages(
        &self,
    ) -> impl Future<Output = Result<Vec<DeviceId>, StoreError>> + Send {
        S::devices_with_messages(self)
    }

    fn devices_with_expired_messages(
        &self,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<DeviceId>, StoreError>> + Send {
        S::devices_with_expired_messages(self, now)
    }

    fn available_feedback(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<StoredFeedback>, StoreError>> + Send {
        S::available_feedback(self, now, limit)
    }

    fn expired_feedback(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<StoredFeedback>, StoreError>> + Send {
        S::expired_feedback(self, now, limit)
    }

    fn locked_feedback(
        &self,
        lock_token: &str,
    ) -> impl Future<Output = Result<Vec<StoredFeedback>, StoreError>> + Send {
        S::locked_feedback(self, lock_token)
    }
}
