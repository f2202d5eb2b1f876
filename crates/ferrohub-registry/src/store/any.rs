//! [`AnyStore`]: a registry store chosen at run time.
//!
//! [`RegistryStore`] returns `impl Future`, which keeps the embedded stores free of boxing but
//! makes the trait unusable as `dyn`. The hub picks its store from configuration (SQLite in the
//! embedded mode, PostgreSQL in a cluster), so it holds an `AnyStore`: one box per call, which
//! is noise next to a database round trip, and no store type parameter spreading through the
//! server.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use ferrohub_types::{DeviceId, ModuleId};

use super::{Change, RegistryStore, StoreError, TwinRow, TwinScan};
use crate::model::{Device, IdentityAuth, Module, RegistryStatistics, StoredTwin};

/// A boxed, sendable future.
type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Every identity's credentials, as [`RegistryStore::identities`] returns them.
type Identities = Vec<(DeviceId, Option<ModuleId>, IdentityAuth)>;

/// A page of devices with their twins, as [`RegistryStore::device_twins`] returns it.
type DeviceTwins = Vec<(Device, Option<StoredTwin>)>;

/// The object-safe mirror of [`RegistryStore`], implemented for every store.
trait DynStore: Send + Sync + 'static {
    fn apply(&self, changes: Vec<Change>) -> BoxFuture<'_, Result<(), StoreError>>;
    fn device<'a>(&'a self, id: &'a DeviceId) -> BoxFuture<'a, Result<Option<Device>, StoreError>>;
    fn devices_by_id<'a>(
        &'a self,
        ids: &'a [DeviceId],
    ) -> BoxFuture<'a, Result<Vec<Option<Device>>, StoreError>>;
    fn devices(&self, limit: usize) -> BoxFuture<'_, Result<Vec<Device>, StoreError>>;
    fn device_twins<'a>(
        &'a self,
        after: Option<&'a DeviceId>,
        limit: usize,
    ) -> BoxFuture<'a, Result<DeviceTwins, StoreError>>;
    fn module<'a>(
        &'a self,
        device_id: &'a DeviceId,
        module_id: &'a ModuleId,
    ) -> BoxFuture<'a, Result<Option<Module>, StoreError>>;
    fn modules<'a>(
        &'a self,
        device_id: &'a DeviceId,
    ) -> BoxFuture<'a, Result<Vec<Module>, StoreError>>;
    fn twin<'a>(
        &'a self,
        device_id: &'a DeviceId,
        module_id: Option<&'a ModuleId>,
    ) -> BoxFuture<'a, Result<Option<StoredTwin>, StoreError>>;
    fn statistics(&self) -> BoxFuture<'_, Result<RegistryStatistics, StoreError>>;
    fn identities(&self) -> BoxFuture<'_, Result<Identities, StoreError>>;
    fn query_twins(&self, scan: TwinScan) -> BoxFuture<'_, Result<Vec<TwinRow>, StoreError>>;
}

impl<S: RegistryStore> DynStore for S {
    fn apply(&self, changes: Vec<Change>) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(RegistryStore::apply(self, changes))
    }

    fn device<'a>(&'a self, id: &'a DeviceId) -> BoxFuture<'a, Result<Option<Device>, StoreError>> {
        Box::pin(RegistryStore::device(self, id))
    }

    fn devices_by_id<'a>(
        &'a self,
        ids: &'a [DeviceId],
    ) -> BoxFuture<'a, Result<Vec<Option<Device>>, StoreError>> {
        Box::pin(RegistryStore::devices_by_id(self, ids))
    }

    fn devices(&self, limit: usize) -> BoxFuture<'_, Result<Vec<Device>, StoreError>> {
        Box::pin(RegistryStore::devices(self, limit))
    }

    fn device_twins<'a>(
        &'a self,
        after: Option<&'a DeviceId>,
        limit: usize,
    ) -> BoxFuture<'a, Result<DeviceTwins, StoreError>> {
        Box::pin(RegistryStore::device_twins(self, after, limit))
    }

    fn module<'a>(
        &'a self,
        device_id: &'a DeviceId,
        module_id: &'a ModuleId,
    ) -> BoxFuture<'a, Result<Option<Module>, StoreError>> {
        Box::pin(RegistryStore::module(self, device_id, module_id))
    }

    fn modules<'a>(
        &'a self,
        device_id: &'a DeviceId,
    ) -> BoxFuture<'a, Result<Vec<Module>, StoreError>> {
        Box::pin(RegistryStore::modules(self, device_id))
    }

    fn twin<'a>(
        &'a self,
        device_id: &'a DeviceId,
        module_id: Option<&'a ModuleId>,
    ) -> BoxFuture<'a, Result<Option<StoredTwin>, StoreError>> {
        Box::pin(RegistryStore::twin(self, device_id, module_id))
    }

    fn statistics(&self) -> BoxFuture<'_, Result<RegistryStatistics, StoreError>> {
        Box::pin(RegistryStore::statistics(self))
    }

    fn identities(&self) -> BoxFuture<'_, Result<Identities, StoreError>> {
        Box::pin(RegistryStore::identities(self))
    }

    fn query_twins(&self, scan: TwinScan) -> BoxFuture<'_, Result<Vec<TwinRow>, StoreError>> {
        Box::pin(RegistryStore::query_twins(self, scan))
    }
}

/// Any [`RegistryStore`], chosen at run time; cheap to clone (the store is shared).
#[derive(Clone)]
pub struct AnyStore(Arc<dyn DynStore>);

impl AnyStore {
    /// Wraps `store`.
    pub fn new(store: impl RegistryStore) -> Self {
        AnyStore(Arc::new(store))
    }
}

impl std::fmt::Debug for AnyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AnyStore")
    }
}

impl RegistryStore for AnyStore {
    fn apply(&self, changes: Vec<Change>) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.0.apply(changes)
    }

    async fn device(&self, id: &DeviceId) -> Result<Option<Device>, StoreError> {
        self.0.device(id).await
    }

    async fn devices_by_id(&self, ids: &[DeviceId]) -> Result<Vec<Option<Device>>, StoreError> {
        self.0.devices_by_id(ids).await
    }

    fn devices(
        &self,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Device>, StoreError>> + Send {
        self.0.devices(limit)
    }

    async fn device_twins(
        &self,
        after: Option<&DeviceId>,
        limit: usize,
    ) -> Result<DeviceTwins, StoreError> {
        self.0.device_twins(after, limit).await
    }

    async fn module(
        &self,
        device_id: &DeviceId,
        module_id: &ModuleId,
    ) -> Result<Option<Module>, StoreError> {
        self.0.module(device_id, module_id).await
    }

    async fn modules(&self, device_id: &DeviceId) -> Result<Vec<Module>, StoreError> {
        self.0.modules(device_id).await
    }

    async fn twin(
        &self,
        device_id: &DeviceId,
        module_id: Option<&ModuleId>,
    ) -> Result<Option<StoredTwin>, StoreError> {
        self.0.twin(device_id, module_id).await
    }

    fn statistics(&self) -> impl Future<Output = Result<RegistryStatistics, StoreError>> + Send {
        self.0.statistics()
    }

    fn identities(&self) -> impl Future<Output = Result<Identities, StoreError>> + Send {
        self.0.identities()
    }

    fn query_twins(
        &self,
        scan: TwinScan,
    ) -> impl Future<Output = Result<Vec<TwinRow>, StoreError>> + Send {
        self.0.query_twins(scan)
    }
}
