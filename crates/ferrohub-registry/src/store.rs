//! Where identities are kept: the [`RegistryStore`] trait and its implementations.
//!
//! The trait is the narrow, compare-and-set contract the registry's rules need, shaped so that a
//! relational database (SQLite here, PostgreSQL later) implements each [`Change`] as one guarded
//! statement. Stores know nothing of Azure's rules: they check [`Expect`]ations and keep documents.
//!
//! Twins are kept beside their identities: one document per device and per module, written with
//! the same compare-and-set rule ([`Change::PutTwin`]), never without its identity, and removed
//! with it in the same `apply` (deleting a device removes its twin and its modules' twins). An
//! identity whose twin was never written has no stored twin; the registry shows the initial one.
//!
//! Every implementation must pass the contract suite, `crate::contract` (feature
//! `contract-suite`), as the memory and SQLite stores do in `tests/integration/store_contract.rs`.

mod any;
pub mod memory;
pub mod query;
pub mod sqlite;

use std::future::Future;

use ferrohub_types::{DeviceId, ModuleId};

pub use crate::error::StoreError;
use crate::model::{Device, IdentityAuth, Module, RegistryStatistics, StoredTwin};
pub use any::AnyStore;
pub use memory::MemoryStore;
pub use query::{MAX_SCAN_BATCH, TwinRow, TwinScan};
pub use sqlite::{SqliteStore, WriteStats};

/// What a [`Change`] expects to find before it is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The identity does not exist.
    Absent,
    /// The identity exists with this version.
    Version(u64),
}

/// One guarded write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Insert (`Expect::Absent`) or replace (`Expect::Version`) a device document.
    PutDevice {
        /// The new document; its `version` is stored as is.
        device: Device,
        /// The state the device must be in.
        expect: Expect,
    },
    /// Remove a device and all of its modules.
    DeleteDevice {
        /// The device.
        id: DeviceId,
        /// The state the device must be in (`Absent` makes the change a no-op check).
        expect: Expect,
    },
    /// Insert or replace a module document. Its device must exist (counting earlier changes of
    /// the same `apply`), else the change conflicts.
    PutModule {
        /// The new document.
        module: Module,
        /// The state the module must be in.
        expect: Expect,
    },
    /// Remove a module.
    DeleteModule {
        /// The module's device.
        device_id: DeviceId,
        /// The module.
        module_id: ModuleId,
        /// The state the module must be in.
        expect: Expect,
    },
    /// Insert (`Expect::Absent`) or replace (`Expect::Version`) the twin of a device
    /// (`module_id: None`) or module. Its identity must exist (counting earlier changes of the
    /// same `apply`), else the change conflicts: a twin never outlives its identity.
    PutTwin {
        /// The device, or the module's device.
        device_id: DeviceId,
        /// The module, for a module twin.
        module_id: Option<ModuleId>,
        /// The new document; its `version` is stored as is.
        twin: StoredTwin,
        /// The state the twin must be in (`Absent`: never written).
        expect: Expect,
    },
}

/// Durable storage of device and module identities.
///
/// Every method returns a `Send` future and needs no particular async runtime. Reads see every
/// `apply` whose future has completed.
pub trait RegistryStore: Send + Sync + 'static {
    /// Applies `changes` in order, atomically: all are stored, or none is and the error is
    /// [`StoreError::Conflict`] with the index of the first change whose [`Expect`] failed.
    /// When the future completes with `Ok`, the changes are durable.
    fn apply(&self, changes: Vec<Change>) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The device with this id.
    fn device(
        &self,
        id: &DeviceId,
    ) -> impl Future<Output = Result<Option<Device>, StoreError>> + Send;

    /// The devices with these ids, in the same order (`None` for an id not in the store), as
    /// one read where the store can; by default one [`RegistryStore::device`] call per id.
    fn devices_by_id(
        &self,
        ids: &[DeviceId],
    ) -> impl Future<Output = Result<Vec<Option<Device>>, StoreError>> + Send {
        async move {
            let mut found = Vec::with_capacity(ids.len());
            for id in ids {
                found.push(self.device(id).await?);
            }
            Ok(found)
        }
    }

    /// Up to `limit` devices, ordered by device id (byte order).
    fn devices(&self, limit: usize)
    -> impl Future<Output = Result<Vec<Device>, StoreError>> + Send;

    /// Up to `limit` devices after `after` (all from the first when `None`), ordered by device
    /// id (byte order), each with its own twin when one was written: one page of a scan of the
    /// registry that never holds more than a page.
    fn device_twins(
        &self,
        after: Option<&DeviceId>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<(Device, Option<StoredTwin>)>, StoreError>> + Send;

    /// The module with these ids.
    fn module(
        &self,
        device_id: &DeviceId,
        module_id: &ModuleId,
    ) -> impl Future<Output = Result<Option<Module>, StoreError>> + Send;

    /// The modules of a device, ordered by module id; empty when the device has none or does not
    /// exist.
    fn modules(
        &self,
        device_id: &DeviceId,
    ) -> impl Future<Output = Result<Vec<Module>, StoreError>> + Send;

    /// The twin of the device (`module_id: None`) or module; `None` when it was never written or
    /// the identity does not exist.
    fn twin(
        &self,
        device_id: &DeviceId,
        module_id: Option<&ModuleId>,
    ) -> impl Future<Output = Result<Option<StoredTwin>, StoreError>> + Send;

    /// Device counts.
    fn statistics(&self) -> impl Future<Output = Result<RegistryStatistics, StoreError>> + Send;

    /// What every identity needs to authenticate, devices and modules, in no particular order;
    /// read once to warm the registry's cache.
    fn identities(
        &self,
    ) -> impl Future<Output = Result<Vec<(DeviceId, Option<ModuleId>, IdentityAuth)>, StoreError>> + Send;

    /// One batch of a query's scan ([`query`]): up to [`TwinScan::batch`] rows of
    /// `scan.collection` whose key is after `scan.after`, in key order (device id, then module
    /// id, byte order), with their stored twins. Every row the condition can select is
    /// returned; others may be too (the caller evaluates the condition exactly). A batch
    /// shorter than [`TwinScan::batch`] is the last. `devices.jobs` is empty.
    fn query_twins(
        &self,
        scan: TwinScan,
    ) -> impl Future<Output = Result<Vec<TwinRow>, StoreError>> + Send;
}
