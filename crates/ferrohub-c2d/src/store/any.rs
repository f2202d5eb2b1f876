//! [`AnyQueueStore`]: a queue store chosen at run time.
//!
//! [`QueueStore`] returns `impl Future`, which keeps the embedded stores free of boxing but
//! makes the trait unusable as `dyn`. The hub picks its store from configuration (SQLite in the
//! embedded mode, PostgreSQL in a cluster), so it holds an `AnyQueueStore`: one box per call,
//! noise next to a database round trip, and no store type parameter spreading through the
//! server.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use ferrohub_types::DeviceId;

use super::{DeviceQueue, QueueChange, QueueStore, StoreError, StoredFeedback};
use crate::model::QueuedMessage;

/// A boxed, sendable future.
type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The object-safe mirror of [`QueueStore`], implemented for every store.
trait DynQueueStore: Send + Sync + 'static {
    fn apply(&self, changes: Vec<QueueChange>) -> BoxFuture<'_, Result<(), StoreError>>;
    fn apply_relaxed(&self, changes: Vec<QueueChange>) -> BoxFuture<'_, Result<(), StoreError>>;
    fn queue<'a>(&'a self, device: &'a DeviceId) -> BoxFuture<'a, Result<DeviceQueue, StoreError>>;
    fn message<'a>(
        &'a self,
        device: &'a DeviceId,
        sequence_number: u64,
    ) -> BoxFuture<'a, Result<Option<QueuedMessage>, StoreError>>;
    fn devices_with_messages(&self) -> BoxFuture<'_, Result<Vec<DeviceId>, StoreError>>;
    fn devices_with_expired_messages(
        &self,
        now: DateTime<Utc>,
    ) -> BoxFuture<'_, Result<Vec<DeviceId>, StoreError>>;
    fn available_feedback(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<StoredFeedback>, StoreError>>;
    fn expired_feedback(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<StoredFeedback>, StoreError>>;
    fn locked_feedback<'a>(
        &'a self,
        lock_token: &'a str,
    ) -> BoxFuture<'a, Result<Vec<StoredFeedback>, StoreError>>;
}

impl<S: QueueStore> DynQueueStore for S {
    fn apply(&self, changes: Vec<QueueChange>) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(QueueStore::apply(self, changes))
    }

    fn apply_relaxed(&self, changes: Vec<QueueChange>) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(QueueStore::apply_relaxed(self, changes))
    }

    fn queue<'a>(&'a self, device: &'a DeviceId) -> BoxFuture<'a, Result<DeviceQueue, StoreError>> {
        Box::pin(QueueStore::queue(self, device))
    }

    fn message<'a>(
        &'a self,
        device: &'a DeviceId,
        sequence_number: u64,
    ) -> BoxFuture<'a, Result<Option<QueuedMessage>, StoreError>> {
        Box::pin(QueueStore::message(self, device, sequence_number))
    }

    fn devices_with_messages(&self) -> BoxFuture<'_, Result<Vec<DeviceId>, StoreError>> {
        Box::pin(QueueStore::devices_with_messages(self))
    }

    fn devices_with_expired_messages(
        &self,
        now: DateTime<Utc>,
    ) -> BoxFuture<'_, Result<Vec<DeviceId>, StoreError>> {
        Box::pin(QueueStore::devices_with_expired_messages(self, now))
    }

    fn available_feedback(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<StoredFeedback>, StoreError>> {
        Box::pin(QueueStore::available_feedback(self, now, limit))
    }

    fn expired_feedback(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<StoredFeedback>, StoreError>> {
        Box::pin(QueueStore::expired_feedback(self, now, limit))
    }

    fn locked_feedback<'a>(
        &'a self,
        lock_token: &'a str,
    ) -> BoxFuture<'a, Result<Vec<StoredFeedback>, StoreError>> {
        Box::pin(QueueStore::locked_feedback(self, lock_token))
    }
}

/// Any [`QueueStore`], chosen at run time; cheap to clone (the store is shared).
#[derive(Clone)]
pub struct AnyQueueStore(Arc<dyn DynQueueStore>);

impl AnyQueueStore {
    /// Wraps `store`.
    pub fn new(store: impl QueueStore) -> Self {
        AnyQueueStore(Arc::new(store))
    }
}

impl std::fmt::Debug for AnyQueueStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AnyQueueStore")
    }
}

impl QueueStore for AnyQueueStore {
    fn apply(
        &self,
        changes: Vec<QueueChange>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.0.apply(changes)
    }

    fn apply_relaxed(
        &self,
        changes: Vec<QueueChange>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.0.apply_relaxed(changes)
    }

    async fn queue(&self, device: &DeviceId) -> Result<DeviceQueue, StoreError> {
        self.0.queue(device).await
    }

    async fn message(
        &self,
        device: &DeviceId,
        sequence_number: u64,
    ) -> Result<Option<QueuedMessage>, StoreError> {
        self.0.message(device, sequence_number).await
    }

    fn devices_with_messages(
        &self,
    ) -> impl Future<Output = Result<Vec<DeviceId>, StoreError>> + Send {
        self.0.devices_with_messages()
    }

    fn devices_with_expired_messages(
        &self,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<DeviceId>, StoreError>> + Send {
        self.0.devices_with_expired_messages(now)
    }

    fn available_feedback(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<StoredFeedback>, StoreError>> + Send {
        self.0.available_feedback(now, limit)
    }

    fn expired_feedback(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<StoredFeedback>, StoreError>> + Send {
        self.0.expired_feedback(now, limit)
    }

    async fn locked_feedback(&self, lock_token: &str) -> Result<Vec<StoredFeedback>, StoreError> {
        self.0.locked_feedback(lock_token).await
    }
}
