//! [`MemoryStore`]: identities in a map behind a mutex, for tests and throwaway hubs.
//!
//! Nothing survives the process. `apply` runs to completion when called (the returned future is
//! already resolved), so a dropped future never leaves a change half-known.

use std::collections::BTreeMap;
use std::future::{Future, ready};
use std::sync::{Mutex, MutexGuard, PoisonError};

use ferrohub_types::{DeviceId, ModuleId};

use super::{Change, Expect, RegistryStore, StoreError, TwinRow, TwinScan};
use crate::model::{
    Device, DeviceStatus, IdentityAuth, Module, RegistryStatistics, StoredTwin, TwinOwner,
};

/// An in-memory [`RegistryStore`].
#[derive(Default)]
pub struct MemoryStore {
    devices: Mutex<BTreeMap<DeviceId, Entry>>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("devices", &self.lock().len())
            .finish_non_exhaustive()
    }
}

struct Entry {
    device: Device,
    modules: BTreeMap<ModuleId, Module>,
    /// The twins written so far: the device's under `None`, each module's under its id.
    twins: BTreeMap<Option<ModuleId>, StoredTwin>,
}

/// How to take back one change of a failed batch.
enum Undo {
    /// Put back the device document (None: remove the entry, which was created).
    DeviceDoc(DeviceId, Option<Device>),
    /// Put back a deleted device entry with its modules.
    Entry(DeviceId, Entry),
    /// Restore the module to this (None: remove it).
    Module(DeviceId, ModuleId, Option<Module>),
    /// Restore the twin to this (None: remove it).
    Twin(DeviceId, Option<ModuleId>, Option<StoredTwin>),
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<DeviceId, Entry>> {
        // Nothing in `apply_all` panics short of allocation failure, so a poisoned map is still
        // consistent; refusing it would only turn one failure into many.
        self.devices.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn apply_all(&self, changes: Vec<Change>) -> Result<(), StoreError> {
        let mut map = self.lock();
        let mut undo = Vec::with_capacity(changes.len());
        for (index, change) in changes.into_iter().enumerate() {
            if let Err(()) = apply_one(&mut map, change, &mut undo) {
                for step in undo.into_iter().rev() {
                    match step {
                        Undo::DeviceDoc(id, Some(device)) => {
                            if let Some(entry) = map.get_mut(&id) {
                                entry.device = device;
                            }
                        }
                        Undo::DeviceDoc(id, None) => {
                            map.remove(&id);
                        }
                        Undo::Entry(id, entry) => {
                            map.insert(id, entry);
                        }
                        Undo::Module(d, m, prev) => {
                            if let Some(entry) = map.get_mut(&d) {
                                match prev {
                                    Some(module) => entry.modules.insert(m, module),
                                    None => entry.modules.remove(&m),
                                };
                            }
                        }
                        Undo::Twin(d, m, prev) => {
                            if let Some(entry) = map.get_mut(&d) {
                                match prev {
                                    Some(twin) => entry.twins.insert(m, twin),
                                    None => entry.twins.remove(&m),
                                };
                            }
                        }
                    }
                }
                return Err(StoreError::Conflict { index });
            }
        }
        Ok(())
    }
}

fn version_ok(current: Option<u64>, expect: Expect) -> bool {
    match (current, expect) {
        (None, Expect::Absent) => true,
        (Some(v), Expect::Version(e)) => v == e,
        _ => false,
    }
}

fn apply_one(
    map: &mut BTreeMap<DeviceId, Entry>,
    change: Change,
    undo: &mut Vec<Undo>,
) -> Result<(), ()> {
    match change {
        Change::PutDevice { device, expect } => {
            let id = device.device_id.clone();
            match map.get_mut(&id) {
                Some(entry) => {
                    if !version_ok(Some(entry.device.version), expect) {
                        return Err(());
                    }
                    let prev = std::mem::replace(&mut entry.device, device);
                    undo.push(Undo::DeviceDoc(id, Some(prev)));
                }
                None => {
                    if !version_ok(None, expect) {
                        return Err(());
                    }
                    let entry = Entry {
                        device,
                        modules: BTreeMap::new(),
                        twins: BTreeMap::new(),
                    };
                    map.insert(id.clone(), entry);
                    undo.push(Undo::DeviceDoc(id, None));
                }
            }
        }
        Change::DeleteDevice { id, expect } => {
            let current = map.get(&id).map(|e| e.device.version);
            if !version_ok(current, expect) {
                return Err(());
            }
            if let Some(prev) = map.remove(&id) {
                undo.push(Undo::Entry(id, prev));
            }
        }
        Change::PutModule { module, expect } => {
            let entry = map.get_mut(&module.device_id).ok_or(())?;
            let prev = entry.modules.get(&module.module_id).cloned();
            if !version_ok(prev.as_ref().map(|m| m.version), expect) {
                return Err(());
            }
            let (d, m) = (module.device_id.clone(), module.module_id.clone());
            entry.modules.insert(m.clone(), module);
            undo.push(Undo::Module(d, m, prev));
        }
        Change::DeleteModule {
            device_id,
            module_id,
            expect,
        } => {
            let prev = map
                .get(&device_id)
                .and_then(|e| e.modules.get(&module_id))
                .cloned();
            if !version_ok(prev.as_ref().map(|m| m.version), expect) {
                return Err(());
            }
            if let Some(entry) = map.get_mut(&device_id)
                && let Some(prev) = entry.modules.remove(&module_id)
            {
                let key = Some(module_id.clone());
                if let Some(twin) = entry.twins.remove(&key) {
                    undo.push(Undo::Twin(device_id.clone(), key, Some(twin)));
                }
                undo.push(Undo::Module(device_id, module_id, Some(prev)));
            }
        }
        Change::PutTwin {
            device_id,
            module_id,
            twin,
            expect,
        } => {
            let entry = map.get_mut(&device_id).ok_or(())?;
            if let Some(m) = &module_id
                && !entry.modules.contains_key(m)
            {
                return Err(());
            }
            let prev = entry.twins.get(&module_id).cloned();
            if !version_ok(prev.as_ref().map(|t| t.version), expect) {
                return Err(());
            }
            entry.twins.insert(module_id.clone(), twin);
            undo.push(Undo::Twin(device_id, module_id, prev));
        }
    }
    Ok(())
}

impl RegistryStore for MemoryStore {
    fn apply(&self, changes: Vec<Change>) -> impl Future<Output = Result<(), StoreError>> + Send {
        ready(self.apply_all(changes))
    }

    fn device(
        &self,
        id: &DeviceId,
    ) -> impl Future<Output = Result<Option<Device>, StoreError>> + Send {
        ready(Ok(self.lock().get(id).map(|e| e.device.clone())))
    }

    fn devices(
        &self,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Device>, StoreError>> + Send {
        ready(Ok(self
            .lock()
            .values()
            .take(limit)
            .map(|e| e.device.clone())
            .collect()))
    }

    fn device_twins(
        &self,
        after: Option<&DeviceId>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<(Device, Option<StoredTwin>)>, StoreError>> + Send {
        use std::ops::Bound;
        let lower = after.map_or(Bound::Unbounded, |a| Bound::Excluded(a.clone()));
        ready(Ok(self
            .lock()
            .range((lower, Bound::Unbounded))
            .take(limit)
            .map(|(_, e)| (e.device.clone(), e.twins.get(&None).cloned()))
            .collect()))
    }

    fn module(
        &self,
        device_id: &DeviceId,
        module_id: &ModuleId,
    ) -> impl Future<Output = Result<Option<Module>, StoreError>> + Send {
        ready(Ok(self
            .lock()
            .get(device_id)
            .and_then(|e| e.modules.get(module_id))
            .cloned()))
    }

    fn modules(
        &self,
        device_id: &DeviceId,
    ) -> impl Future<Output = Result<Vec<Module>, StoreError>> + Send {
        ready(Ok(self
            .lock()
            .get(device_id)
            .map(|e| e.modules.values().cloned().collect())
            .unwrap_or_default()))
    }

    fn twin(
        &self,
        device_id: &DeviceId,
        module_id: Option<&ModuleId>,
    ) -> impl Future<Output = Result<Option<StoredTwin>, StoreError>> + Send {
        ready(Ok(self
            .lock()
            .get(device_id)
            .and_then(|e| e.twins.get(&module_id.cloned()))
            .cloned()))
    }

    fn statistics(&self) -> impl Future<Output = Result<RegistryStatistics, StoreError>> + Send {
        let map = self.lock();
        let total = map.len() as u64;
        let enabled = map
            .values()
            .filter(|e| e.device.status == DeviceStatus::Enabled)
            .count() as u64;
        ready(Ok(RegistryStatistics {
            total_device_count: total,
            enabled_device_count: enabled,
            disabled_device_count: total - enabled,
        }))
    }

    fn identities(
        &self,
    ) -> impl Future<Output = Result<Vec<(DeviceId, Option<ModuleId>, IdentityAuth)>, StoreError>> + Send
    {
        let map = self.lock();
        let mut out = Vec::with_capacity(map.len());
        for (id, entry) in map.iter() {
            out.push((id.clone(), None, IdentityAuth::from(&entry.device)));
            for (mid, module) in &entry.modules {
                out.push((id.clone(), Some(mid.clone()), IdentityAuth::from(module)));
            }
        }
        ready(Ok(out))
    }

    fn query_twins(
        &self,
        scan: TwinScan,
    ) -> impl Future<Output = Result<Vec<TwinRow>, StoreError>> + Send {
        ready(self.scan(&scan))
    }
}

impl MemoryStore {
    /// A batch of a scan: the rows after the key, in key order, that pass the pre-filter
    /// (evaluated on the stored twin documents, as the SQL stores do).
    fn scan(&self, scan: &TwinScan) -> Result<Vec<TwinRow>, StoreError> {
        use ferrohub_query::{Collection, Dialect, RowKey};
        use std::ops::Bound;
        let filter = scan.pre_filter(Dialect::Sqlite, "doc");
        let initial = serde_json::to_value(crate::initial_twin())
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let passes = |key: &RowKey, twin: Option<&StoredTwin>| -> Result<bool, StoreError> {
            if filter.is_everything() {
                return Ok(true);
            }
            match twin {
                None => Ok(filter.matches(key, &initial)),
                Some(t) => {
                    let doc = serde_json::to_value(&t.twin)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    Ok(filter.matches(key, &doc))
                }
            }
        };
        let batch = scan.batch();
        let map = self.lock();
        let start = match &scan.after {
            None => Bound::Unbounded,
            Some(after) => match DeviceId::new(after.device_id()) {
                // The device itself may still have modules after the key's module.
                Ok(d) if scan.collection == Collection::Modules && after.child_id().is_some() => {
                    Bound::Included(d)
                }
                Ok(d) => Bound::Excluded(d),
                // Not a valid id: start from the first valid id after it, comparing as text.
                Err(_) => Bound::Unbounded,
            },
        };
        let mut out = Vec::new();
        for (id, entry) in map.range((start, Bound::Unbounded)) {
            if out.len() >= batch {
                break;
            }
            match scan.collection {
                Collection::Devices => {
                    let key = RowKey::device(id.as_str());
                    if scan.after.as_ref().is_some_and(|a| key <= *a) {
                        continue;
                    }
                    let twin = entry.twins.get(&None);
                    if passes(&key, twin)? {
                        out.push(TwinRow {
                            owner: TwinOwner::Device(entry.device.clone()),
                            twin: twin.cloned(),
                        });
                    }
                }
                Collection::Modules => {
                    for (mid, module) in &entry.modules {
                        if out.len() >= batch {
                            break;
                        }
                        let key = RowKey::module(id.as_str(), mid.as_str());
                        if scan.after.as_ref().is_some_and(|a| key <= *a) {
                            continue;
                        }
                        let twin = entry.twins.get(&Some(mid.clone()));
                        if passes(&key, twin)? {
                            out.push(TwinRow {
                                owner: TwinOwner::Module(module.clone()),
                                twin: twin.cloned(),
                            });
                        }
                    }
                }
                Collection::Jobs => break,
            }
        }
        Ok(out)
    }
}
