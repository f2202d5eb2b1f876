//! [`MemoryQueueStore`]: queues and feedback in maps behind a mutex, for tests and throwaway hubs.
//!
//! Nothing survives the process. `apply` runs to completion when called (the returned future is
//! already resolved), so a dropped future never leaves a change half-known.

use std::collections::BTreeMap;
use std::future::{Future, ready};
use std::sync::{Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Utc};
use ferrohub_types::DeviceId;

use super::{
    DeviceQueue, Expect, FeedbackState, MessageHead, MessageState, QueueChange, QueueStore,
    StoreError, StoredFeedback,
};
use crate::model::QueuedMessage;

/// An in-memory [`QueueStore`].
#[derive(Default)]
pub struct MemoryQueueStore {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    devices: BTreeMap<DeviceId, Entry>,
    feedback: BTreeMap<u64, StoredFeedback>,
    /// The id of the last feedback record added.
    last_feedback_id: u64,
}

#[derive(Default)]
struct Entry {
    last_sequence_number: u64,
    messages: BTreeMap<u64, QueuedMessage>,
}

/// How to take back one step of a failed batch.
enum Undo {
    /// Put back the device's entry as it was (None: it did not exist).
    Entry(DeviceId, Option<Entry>),
    /// Put back a device's last sequence number.
    Counter(DeviceId, u64),
    /// Put back a message as it was (None: remove it).
    Message(DeviceId, u64, Option<QueuedMessage>),
    /// Put back a feedback record as it was (None: remove it).
    Feedback(u64, Option<StoredFeedback>),
    /// Put back the last feedback id.
    LastFeedbackId(u64),
}

impl std::fmt::Debug for MemoryQueueStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("MemoryQueueStore")
            .field("devices", &state.devices.len())
            .field("feedback", &state.feedback.len())
            .finish_non_exhaustive()
    }
}

impl MemoryQueueStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing in `apply_all` panics short of allocation failure, so a poisoned state is still
        // consistent; refusing it would only turn one failure into many.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn apply_all(&self, changes: Vec<QueueChange>) -> Result<(), StoreError> {
        let mut state = self.lock();
        let mut undo = Vec::new();
        for (index, change) in changes.into_iter().enumerate() {
            if !apply_one(&mut state, change, &mut undo) {
                for step in undo.into_iter().rev() {
                    state.undo(step);
                }
                return Err(StoreError::Conflict { index });
            }
        }
        Ok(())
    }
}

impl State {
    fn undo(&mut self, step: Undo) {
        match step {
            Undo::Entry(id, Some(entry)) => {
                self.devices.insert(id, entry);
            }
            Undo::Entry(id, None) => {
                self.devices.remove(&id);
            }
            Undo::Counter(id, last) => {
                if let Some(e) = self.devices.get_mut(&id) {
                    e.last_sequence_number = last;
                }
            }
            Undo::Message(id, seq, prev) => {
                if let Some(e) = self.devices.get_mut(&id) {
                    match prev {
                        Some(m) => e.messages.insert(seq, m),
                        None => e.messages.remove(&seq),
                    };
                }
            }
            Undo::Feedback(id, Some(f)) => {
                self.feedback.insert(id, f);
            }
            Undo::Feedback(id, None) => {
                self.feedback.remove(&id);
            }
            Undo::LastFeedbackId(id) => self.last_feedback_id = id,
        }
    }
}

fn matches(deliveries: u32, lock_token: &Option<String>, expect: &Expect) -> bool {
    deliveries == expect.deliveries && *lock_token == expect.lock_token
}

/// Applies one change; `false` when its guard failed (then it changed nothing).
fn apply_one(state: &mut State, change: QueueChange, undo: &mut Vec<Undo>) -> bool {
    match change {
        QueueChange::Insert {
            message,
            expect_last_sequence_number,
        } => {
            let id = message.device_id.clone();
            let seq = message.sequence_number;
            if !state.devices.contains_key(&id) {
                state.devices.insert(id.clone(), Entry::default());
                undo.push(Undo::Entry(id.clone(), None));
            }
            let Some(entry) = state.devices.get_mut(&id) else {
                return false;
            };
            if entry.last_sequence_number != expect_last_sequence_number
                || seq <= entry.last_sequence_number
                || entry.messages.contains_key(&seq)
            {
                return false;
            }
            undo.push(Undo::Counter(id.clone(), entry.last_sequence_number));
            entry.last_sequence_number = seq;
            entry.messages.insert(seq, message);
            undo.push(Undo::Message(id, seq, None));
            true
        }
        QueueChange::SetMessageState {
            device_id,
            sequence_number,
            state: new,
            expect,
        } => {
            let Some(m) = state
                .devices
                .get_mut(&device_id)
                .and_then(|e| e.messages.get_mut(&sequence_number))
            else {
                return false;
            };
            if !matches(m.deliveries, &m.lock_token, &expect) {
                return false;
            }
            undo.push(Undo::Message(device_id, sequence_number, Some(m.clone())));
            m.delivery_count = new.delivery_count;
            m.deliveries = new.deliveries;
            m.lock_token = new.lock_token;
            m.locked_until = new.locked_until;
            true
        }
        QueueChange::RemoveMessage {
            device_id,
            sequence_number,
            expect,
        } => {
            let Some(entry) = state.devices.get_mut(&device_id) else {
                return false;
            };
            match entry.messages.get(&sequence_number) {
                Some(m) if matches(m.deliveries, &m.lock_token, &expect) => {}
                _ => return false,
            }
            let prev = entry.messages.remove(&sequence_number);
            undo.push(Undo::Message(device_id, sequence_number, prev));
            true
        }
        QueueChange::AddFeedback {
            record,
            expiry_time,
        } => {
            undo.push(Undo::LastFeedbackId(state.last_feedback_id));
            state.last_feedback_id += 1;
            let id = state.last_feedback_id;
            state.feedback.insert(
                id,
                StoredFeedback {
                    id,
                    record,
                    expiry_time,
                    state: FeedbackState {
                        deliveries: 0,
                        lock_token: None,
                        locked_until: None,
                    },
                },
            );
            undo.push(Undo::Feedback(id, None));
            true
        }
        QueueChange::SetFeedbackState {
            id,
            state: new,
            expect,
        } => {
            let Some(f) = state.feedback.get_mut(&id) else {
                return false;
            };
            if !matches(f.state.deliveries, &f.state.lock_token, &expect) {
                return false;
            }
            undo.push(Undo::Feedback(id, Some(f.clone())));
            f.state = new;
            true
        }
        QueueChange::RemoveFeedback { id, expect } => {
            match state.feedback.get(&id) {
                Some(f) if matches(f.state.deliveries, &f.state.lock_token, &expect) => {}
                _ => return false,
            }
            let prev = state.feedback.remove(&id);
            undo.push(Undo::Feedback(id, prev));
            true
        }
        QueueChange::DeleteDevice { device_id } => {
            let prev = state.devices.remove(&device_id);
            undo.push(Undo::Entry(device_id.clone(), prev));
            let ids: Vec<u64> = state
                .feedback
                .values()
                .filter(|f| f.record.device_id == device_id.as_str())
                .map(|f| f.id)
                .collect();
            for id in ids {
                let prev = state.feedback.remove(&id);
                undo.push(Undo::Feedback(id, prev));
            }
            true
        }
    }
}

fn head(m: &QueuedMessage) -> MessageHead {
    MessageHead {
        sequence_number: m.sequence_number,
        enqueued_time: m.enqueued_time,
        expiry_time: m.expiry_time,
        state: MessageState {
            delivery_count: m.delivery_count,
            deliveries: m.deliveries,
            lock_token: m.lock_token.clone(),
            locked_until: m.locked_until,
        },
        message_id: m.message.message_id.clone(),
        ack: m.message.ack,
        device_generation_id: m.device_generation_id.clone(),
    }
}

fn locked_at(f: &StoredFeedback, now: DateTime<Utc>) -> bool {
    f.state.lock_token.is_some() && f.state.locked_until.is_some_and(|u| u > now)
}

impl QueueStore for MemoryQueueStore {
    fn apply(
        &self,
        changes: Vec<QueueChange>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        ready(self.apply_all(changes))
    }

    fn queue(
        &self,
        device: &DeviceId,
    ) -> impl Future<Output = Result<DeviceQueue, StoreError>> + Send {
        let state = self.lock();
        ready(Ok(state
            .devices
            .get(device)
            .map(|e| DeviceQueue {
                last_sequence_number: e.last_sequence_number,
                messages: e.messages.values().map(head).collect(),
            })
            .unwrap_or_default()))
    }

    fn message(
        &self,
        device: &DeviceId,
        sequence_number: u64,
    ) -> impl Future<Output = Result<Option<QueuedMessage>, StoreError>> + Send {
        ready(Ok(self
            .lock()
            .devices
            .get(device)
            .and_then(|e| e.messages.get(&sequence_number))
            .cloned()))
    }

    fn devices_with_messages(
        &self,
    ) -> impl Future<Output = Result<Vec<DeviceId>, StoreError>> + Send {
        ready(Ok(self
            .lock()
            .devices
            .iter()
            .filter(|(_, e)| !e.messages.is_empty())
            .map(|(id, _)| id.clone())
            .collect()))
    }

    fn devices_with_expired_messages(
        &self,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<DeviceId>, StoreError>> + Send {
        ready(Ok(self
            .lock()
            .devices
            .iter()
            .filter(|(_, e)| e.messages.values().any(|m| m.expiry_time <= now))
            .map(|(id, _)| id.clone())
            .collect()))
    }

    fn available_feedback(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<StoredFeedback>, StoreError>> + Send {
        ready(Ok(self
            .lock()
            .feedback
            .values()
            .filter(|f| f.expiry_time > now && !locked_at(f, now))
            .take(limit)
            .cloned()
            .collect()))
    }

    fn expired_feedback(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<StoredFeedback>, StoreError>> + Send {
        ready(Ok(self
            .lock()
            .feedback
            .values()
            .filter(|f| f.expiry_time <= now && !locked_at(f, now))
            .take(limit)
            .cloned()
            .collect()))
    }

    fn locked_feedback(
        &self,
        lock_token: &str,
    ) -> impl Future<Output = Result<Vec<StoredFeedback>, StoreError>> + Send {
        ready(Ok(self
            .lock()
            .feedback
            .values()
            .filter(|f| f.state.lock_token.as_deref() == Some(lock_token))
            .cloned()
            .collect()))
    }
}
