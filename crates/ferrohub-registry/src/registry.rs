//! [`Registry`]: the identity-management façade every surface (REST, CLI, jobs) goes through.
//!
//! It applies Azure's rules (ETags, generated keys, validation, error codes) on top of a
//! [`RegistryStore`], and keeps the in-memory identity cache that connect-time lookups read, so a
//! device connecting never waits for the disk.
//!
//! # Consistency
//!
//! * Writes are compare-and-set on the stored version. A write with `If-Match: *` that loses a
//!   race is retried a few times; one with a specific ETag fails with `PreconditionFailed`.
//! * Writes to one device (and its modules) are serialized inside a registry by a per-device async
//!   lock held until the cache is updated, so the cache follows the store's order. Writes to
//!   different devices run concurrently and can share a commit.
//! * The cache is updated and listeners are told after the store acknowledges. If the caller
//!   drops a write's future while the store is working on it, the cache is updated restrictively
//!   (see the `cache` module); the next write to the identity re-reads it and repairs the entry.
//! * Time is a parameter (`now`): the registry reads no clock.

mod bulk;
mod cache;
mod twins;

pub use twins::initial_twin;

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use ferrohub_storage::key_locks::KeyLocks;
use ferrohub_types::{DeviceId, ModuleId};

use crate::error::{RegistryError, StoreError};
use crate::model::{
    Authentication, ConnectionState, Device, DeviceSpec, DeviceStatus, ETag, IdentityAuth,
    IdentityChange, IdentityChangeKind, IfMatch, Module, ModuleSpec, RegistryStatistics,
};
use crate::rules;
use crate::store::{Change, Expect, RegistryStore};
use cache::{CacheOp, Effects, IdentityCache, Listeners};

/// Most records one bulk request may carry.
pub const MAX_BULK_RECORDS: usize = 100;

/// Most devices one listing returns; a `top` of 0 or above this means this.
pub const MAX_LIST_DEVICES: usize = 1000;

/// How many times a write with `If-Match: *` is tried when other writers keep changing the
/// identity under it. A failed attempt means another write to the identity committed in
/// between, so this is how many concurrent writers a write outlasts. Within one registry they
/// queue on the per-device lock; the nodes of a cluster share the store without it, and eight
/// concurrent twin updates through three nodes (the SDK scenario) outlasted the earlier 5.
const MAX_ATTEMPTS: usize = 32;

/// The identity registry over a store `S`.
pub struct Registry<S> {
    store: S,
    cache: IdentityCache,
    listeners: Listeners,
    /// Who hears of desired-property changes.
    desired_listeners: twins::DesiredListeners,
    /// Per-device write locks, held until the cache reflects the stored result (and twin writes
    /// until their notification is reported).
    locks: KeyLocks<DeviceId>,
}

impl<S> fmt::Debug for Registry<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (devices, modules) = self.cache.len();
        f.debug_struct("Registry")
            .field("cached_devices", &devices)
            .field("cached_modules", &modules)
            .finish_non_exhaustive()
    }
}

impl<S: RegistryStore> Registry<S> {
    /// Opens the registry over `store`, loading every identity's credentials into memory.
    pub async fn open(store: S) -> Result<Self, RegistryError> {
        let identities = store.identities().await?;
        let cache = IdentityCache::default();
        cache.warm(identities);
        let (devices, modules) = cache.len();
        tracing::info!(devices, modules, "identity registry open");
        Ok(Registry {
            store,
            cache,
            listeners: Listeners::default(),
            desired_listeners: twins::DesiredListeners::default(),
            locks: KeyLocks::default(),
        })
    }

    /// The store, for reads the registry does not offer (exports). Writing to it directly
    /// bypasses the identity cache.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// What an endpoint needs to authenticate the device (`m` = `None`) or module, from memory.
    pub fn identity(&self, d: &DeviceId, m: Option<&ModuleId>) -> Option<IdentityAuth> {
        self.cache.get(d, m)
    }

    /// Calls `f` after every stored change that concerns live connections. `f` runs on the task
    /// that made the change, after the cache is updated; it must be quick and must not block.
    pub fn on_change(&self, f: impl Fn(&IdentityChange) + Send + Sync + 'static) {
        self.listeners.add(Arc::new(f));
    }

    /// Device `d` or one of its modules changed elsewhere (another node of a cluster wrote
    /// the shared store): re-reads them from the store, brings the cache in line and tells the
    /// [`Registry::on_change`] listeners what concerns live connections (deletion, disabling,
    /// new credentials). Harmless when nothing changed.
    pub async fn refresh(&self, d: &DeviceId) -> Result<(), RegistryError> {
        let _lock = self.locks.lock(d).await;
        let stored = match self.store.device(d).await? {
            None => None,
            Some(device) => {
                let modules = self
                    .store
                    .modules(d)
                    .await?
                    .iter()
                    .map(|m| (m.module_id.clone(), IdentityAuth::from(m)))
                    .collect();
                Some((IdentityAuth::from(&device), modules))
            }
        };
        let events = self.cache.replace_device(d, stored);
        self.listeners.notify(&events);
        Ok(())
    }

    /// Re-reads every identity from the store, as [`Registry::refresh`] does for one device:
    /// after a node missed change notifications (its listening connection was down).
    pub async fn refresh_all(&self) -> Result<(), RegistryError> {
        let identities = self.store.identities().await?;
        let events = self.cache.replace_all(identities);
        self.listeners.notify(&events);
        Ok(())
    }

    // === Devices ===

    /// Creates a device. Absent or empty SAS keys are generated.
    ///
    /// Errors: `DeviceAlreadyExists`; `InvalidArgument` for bad keys, thumbprints or status
    /// reason.
    pub async fn create_device(
        &self,
        spec: DeviceSpec,
        now: DateTime<Utc>,
    ) -> Result<Device, RegistryError> {
        let spec = prepare_device(spec)?;
        let device = new_device(spec, now)?;
        let _lock = self.locks.lock(&device.device_id).await;
        let pending = self.pending(Effects {
            ops: vec![CacheOp::PutDevice(
                device.device_id.clone(),
                IdentityAuth::from(&device),
            )],
            events: Vec::new(),
        });
        let change = Change::PutDevice {
            device: device.clone(),
            expect: Expect::Absent,
        };
        match self.store.apply(vec![change]).await {
            Ok(()) => {
                pending.commit();
                tracing::info!(device = %device.device_id, "device created");
                Ok(device)
            }
            Err(e) => {
                pending.abandon();
                Err(match e {
                    StoreError::Conflict { .. } => {
                        RegistryError::DeviceAlreadyExists(device.device_id)
                    }
                    e => e.into(),
                })
            }
        }
    }

    /// Replaces a device's settable fields; hub-owned ones (generation id, connection state,
    /// counters) are kept. `status: None` and `authentication: None` keep the current values;
    /// empty SAS keys are generated. `statusUpdatedTime` becomes `now` only when the status
    /// changes.
    ///
    /// Errors: `DeviceNotFound`, `PreconditionFailed`, `InvalidArgument`.
    pub async fn update_device(
        &self,
        spec: DeviceSpec,
        if_match: IfMatch,
        now: DateTime<Utc>,
    ) -> Result<Device, RegistryError> {
        let spec = prepare_device(spec)?;
        let id = spec.device_id.clone();
        let _lock = self.locks.lock(&id).await;
        for _ in 0..MAX_ATTEMPTS {
            let Some(current) = self.locked_device(&id).await? else {
                return Err(RegistryError::DeviceNotFound(id));
            };
            if !if_match.matches(&current.etag) {
                return Err(RegistryError::PreconditionFailed);
            }
            let updated = updated_device(&current, &spec, now);
            let pending = self.pending(device_put_effects(Some(&current), &updated));
            let change = Change::PutDevice {
                device: updated.clone(),
                expect: Expect::Version(current.version),
            };
            match self.store.apply(vec![change]).await {
                Ok(()) => {
                    pending.commit();
                    tracing::info!(device = %id, version = updated.version, "device updated");
                    return Ok(updated);
                }
                Err(StoreError::Conflict { .. }) => {
                    pending.abandon();
                    if let IfMatch::ETag(_) = if_match {
                        return Err(RegistryError::PreconditionFailed);
                    }
                }
                Err(e) => {
                    pending.abandon();
                    return Err(e.into());
                }
            }
        }
        Err(contended())
    }

    /// The device. Errors: `DeviceNotFound`.
    pub async fn device(&self, id: &DeviceId) -> Result<Device, RegistryError> {
        self.store
            .device(id)
            .await?
            .ok_or_else(|| RegistryError::DeviceNotFound(id.clone()))
    }

    /// Deletes a device and its modules. Errors: `DeviceNotFound`, `PreconditionFailed`.
    pub async fn delete_device(
        &self,
        id: &DeviceId,
        if_match: IfMatch,
    ) -> Result<(), RegistryError> {
        let _lock = self.locks.lock(id).await;
        for _ in 0..MAX_ATTEMPTS {
            let Some(current) = self.locked_device(id).await? else {
                return Err(RegistryError::DeviceNotFound(id.clone()));
            };
            if !if_match.matches(&current.etag) {
                return Err(RegistryError::PreconditionFailed);
            }
            let pending = self.pending(Effects {
                ops: vec![CacheOp::RemoveDevice(id.clone())],
                events: vec![change(id, None, IdentityChangeKind::Deleted)],
            });
            let change = Change::DeleteDevice {
                id: id.clone(),
                expect: Expect::Version(current.version),
            };
            match self.store.apply(vec![change]).await {
                Ok(()) => {
                    pending.commit();
                    tracing::info!(device = %id, "device deleted");
                    return Ok(());
                }
                Err(StoreError::Conflict { .. }) => {
                    pending.abandon();
                    if let IfMatch::ETag(_) = if_match {
                        return Err(RegistryError::PreconditionFailed);
                    }
                }
                Err(e) => {
                    pending.abandon();
                    return Err(e.into());
                }
            }
        }
        Err(contended())
    }

    /// Up to `top` devices ordered by id; `top` of 0 or above [`MAX_LIST_DEVICES`] means
    /// [`MAX_LIST_DEVICES`], as Azure does.
    pub async fn devices(&self, top: usize) -> Result<Vec<Device>, RegistryError> {
        let top = if top == 0 || top > MAX_LIST_DEVICES {
            MAX_LIST_DEVICES
        } else {
            top
        };
        Ok(self.store.devices(top).await?)
    }

    /// Device counts.
    pub async fn statistics(&self) -> Result<RegistryStatistics, RegistryError> {
        Ok(self.store.statistics().await?)
    }

    // === Modules ===

    /// Creates a module on an existing device. Absent or empty SAS keys are generated.
    ///
    /// Errors: `DeviceNotFound`, `ModuleAlreadyExists`, `InvalidArgument`.
    pub async fn create_module(
        &self,
        spec: ModuleSpec,
        now: DateTime<Utc>,
    ) -> Result<Module, RegistryError> {
        let _ = now; // Modules record no creation-time field; kept for symmetry and later use.
        let spec = prepare_module(spec)?;
        let module = new_module(spec)?;
        let (d, m) = (module.device_id.clone(), module.module_id.clone());
        let _lock = self.locks.lock(&d).await;
        for _ in 0..MAX_ATTEMPTS {
            let pending = self.pending(Effects {
                ops: vec![CacheOp::PutModule(
                    d.clone(),
                    m.clone(),
                    IdentityAuth::from(&module),
                )],
                events: Vec::new(),
            });
            let change = Change::PutModule {
                module: module.clone(),
                expect: Expect::Absent,
            };
            match self.store.apply(vec![change]).await {
                Ok(()) => {
                    pending.commit();
                    tracing::info!(device = %d, module = %m, "module created");
                    return Ok(module);
                }
                Err(StoreError::Conflict { .. }) => {
                    pending.abandon();
                    // Either the module exists or its device does not.
                    if self.store.module(&d, &m).await?.is_some() {
                        return Err(RegistryError::ModuleAlreadyExists {
                            device_id: d,
                            module_id: m,
                        });
                    }
                    if self.locked_device(&d).await?.is_none() {
                        return Err(RegistryError::DeviceNotFound(d));
                    }
                }
                Err(e) => {
                    pending.abandon();
                    return Err(e.into());
                }
            }
        }
        Err(contended())
    }

    /// Replaces a module's settable fields (`managed_by`, and the credentials unless
    /// `authentication` is `None`).
    ///
    /// Errors: `DeviceNotFound`, `ModuleNotFound`, `PreconditionFailed`, `InvalidArgument`.
    pub async fn update_module(
        &self,
        spec: ModuleSpec,
        if_match: IfMatch,
        now: DateTime<Utc>,
    ) -> Result<Module, RegistryError> {
        let _ = now; // Modules record no update-time field; kept for symmetry and later use.
        let spec = prepare_module(spec)?;
        let (d, m) = (spec.device_id.clone(), spec.module_id.clone());
        let _lock = self.locks.lock(&d).await;
        for _ in 0..MAX_ATTEMPTS {
            let current = self.locked_module(&d, &m).await?;
            if !if_match.matches(&current.etag) {
                return Err(RegistryError::PreconditionFailed);
            }
            let updated = updated_module(&current, &spec);
            let kind = if updated.authentication == current.authentication {
                IdentityChangeKind::Updated
            } else {
                IdentityChangeKind::KeysChanged
            };
            let pending = self.pending(Effects {
                ops: vec![CacheOp::PutModule(
                    d.clone(),
                    m.clone(),
                    IdentityAuth::from(&updated),
                )],
                events: vec![change(&d, Some(&m), kind)],
            });
            let change = Change::PutModule {
                module: updated.clone(),
                expect: Expect::Version(current.version),
            };
            match self.store.apply(vec![change]).await {
                Ok(()) => {
                    pending.commit();
                    tracing::info!(device = %d, module = %m, "module updated");
                    return Ok(updated);
                }
                Err(StoreError::Conflict { .. }) => {
                    pending.abandon();
                    if let IfMatch::ETag(_) = if_match {
                        return Err(RegistryError::PreconditionFailed);
                    }
                }
                Err(e) => {
                    pending.abandon();
                    return Err(e.into());
                }
            }
        }
        Err(contended())
    }

    /// The module. Errors: `DeviceNotFound`, `ModuleNotFound`.
    pub async fn module(&self, d: &DeviceId, m: &ModuleId) -> Result<Module, RegistryError> {
        if let Some(module) = self.store.module(d, m).await? {
            return Ok(module);
        }
        Err(self.missing_module(d, m).await?)
    }

    /// The device's modules, ordered by id. Errors: `DeviceNotFound`.
    pub async fn modules(&self, d: &DeviceId) -> Result<Vec<Module>, RegistryError> {
        let modules = self.store.modules(d).await?;
        if modules.is_empty() && self.store.device(d).await?.is_none() {
            return Err(RegistryError::DeviceNotFound(d.clone()));
        }
        Ok(modules)
    }

    /// Deletes a module. Errors: `DeviceNotFound`, `ModuleNotFound`, `PreconditionFailed`.
    pub async fn delete_module(
        &self,
        d: &DeviceId,
        m: &ModuleId,
        if_match: IfMatch,
    ) -> Result<(), RegistryError> {
        let _lock = self.locks.lock(d).await;
        for _ in 0..MAX_ATTEMPTS {
            let current = self.locked_module(d, m).await?;
            if !if_match.matches(&current.etag) {
                return Err(RegistryError::PreconditionFailed);
            }
            let pending = self.pending(Effects {
                ops: vec![CacheOp::RemoveModule(d.clone(), m.clone())],
                events: vec![change(d, Some(m), IdentityChangeKind::Deleted)],
            });
            let change = Change::DeleteModule {
                device_id: d.clone(),
                module_id: m.clone(),
                expect: Expect::Version(current.version),
            };
            match self.store.apply(vec![change]).await {
                Ok(()) => {
                    pending.commit();
                    tracing::info!(device = %d, module = %m, "module deleted");
                    return Ok(());
                }
                Err(StoreError::Conflict { .. }) => {
                    pending.abandon();
                    if let IfMatch::ETag(_) = if_match {
                        return Err(RegistryError::PreconditionFailed);
                    }
                }
                Err(e) => {
                    pending.abandon();
                    return Err(e.into());
                }
            }
        }
        Err(contended())
    }

    // === Helpers ===

    /// Reads a device while holding its lock, and brings its cache entry in line with what was
    /// read (repairing it after a write of unknown outcome or a change by another node).
    async fn locked_device(&self, id: &DeviceId) -> Result<Option<Device>, RegistryError> {
        let current = self.store.device(id).await?;
        let op = match &current {
            Some(d) => CacheOp::PutDevice(id.clone(), IdentityAuth::from(d)),
            None => CacheOp::RemoveDevice(id.clone()),
        };
        self.cache.apply(&[op], false);
        Ok(current)
    }

    /// Reads a module while holding its device's lock, syncing its cache entry; a missing module
    /// is an error.
    async fn locked_module(&self, d: &DeviceId, m: &ModuleId) -> Result<Module, RegistryError> {
        match self.store.module(d, m).await? {
            Some(module) => {
                let op = CacheOp::PutModule(d.clone(), m.clone(), IdentityAuth::from(&module));
                self.cache.apply(&[op], false);
                Ok(module)
            }
            None => {
                self.cache
                    .apply(&[CacheOp::RemoveModule(d.clone(), m.clone())], false);
                Err(self.missing_module(d, m).await?)
            }
        }
    }

    /// The error for a module that is not there: its device or the module is missing.
    async fn missing_module(
        &self,
        d: &DeviceId,
        m: &ModuleId,
    ) -> Result<RegistryError, RegistryError> {
        Ok(if self.store.device(d).await?.is_none() {
            RegistryError::DeviceNotFound(d.clone())
        } else {
            RegistryError::ModuleNotFound {
                device_id: d.clone(),
                module_id: m.clone(),
            }
        })
    }

    fn pending(&self, effects: Effects) -> Pending<'_> {
        Pending {
            cache: &self.cache,
            listeners: &self.listeners,
            effects: Some(effects),
        }
    }
}

/// The in-memory effects of a write that has been handed to the store. Exactly one of
/// [`Pending::commit`] and [`Pending::abandon`] is called when the store answers; if neither is
/// (the write's future was dropped), the effects are applied restrictively.
struct Pending<'a> {
    cache: &'a IdentityCache,
    listeners: &'a Listeners,
    effects: Option<Effects>,
}

impl Pending<'_> {
    /// The store stored the write.
    fn commit(mut self) {
        if let Some(effects) = self.effects.take() {
            self.publish(&effects, false);
        }
    }

    /// The store did not store the write.
    fn abandon(mut self) {
        self.effects = None;
    }

    fn publish(&self, effects: &Effects, restrictive: bool) {
        let removed = self.cache.apply(&effects.ops, restrictive);
        self.listeners.notify(&effects.events_with(&removed));
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if let Some(effects) = self.effects.take() {
            tracing::warn!("a registry write was abandoned before the store answered");
            if std::thread::panicking() {
                // Listeners are user code; do not risk a second panic while unwinding.
                self.cache.apply(&effects.ops, true);
            } else {
                self.publish(&effects, true);
            }
        }
    }
}

// === Building identities ===

/// Validates a device input and resolves given credentials (generating empty SAS keys).
fn prepare_device(mut spec: DeviceSpec) -> Result<DeviceSpec, RegistryError> {
    rules::check_status_reason(spec.status_reason.as_deref())?;
    spec.authentication = spec
        .authentication
        .map(rules::resolve_authentication)
        .transpose()?;
    Ok(spec)
}

/// Validates a module input and resolves given credentials.
fn prepare_module(mut spec: ModuleSpec) -> Result<ModuleSpec, RegistryError> {
    spec.authentication = spec
        .authentication
        .map(rules::resolve_authentication)
        .transpose()?;
    Ok(spec)
}

/// Credentials for a new identity: the resolved input, or generated SAS keys.
fn creation_auth(auth: Option<Authentication>) -> Result<Authentication, RegistryError> {
    match auth {
        Some(auth) => Ok(auth),
        None => rules::resolve_authentication(Authentication::default()),
    }
}

/// A new device (version 0) from a prepared spec.
fn new_device(spec: DeviceSpec, now: DateTime<Utc>) -> Result<Device, RegistryError> {
    let _ = now; // Azure reports no status time for a new device ("0001-01-01").
    Ok(Device {
        device_id: spec.device_id,
        generation_id: rules::generation_id()?,
        version: 0,
        etag: ETag::from_version(0),
        status: spec.status.unwrap_or(DeviceStatus::Enabled),
        status_reason: spec.status_reason,
        status_updated_time: None,
        connection_state: ConnectionState::Disconnected,
        connection_state_updated_time: None,
        last_activity_time: None,
        cloud_to_device_message_count: 0,
        authentication: creation_auth(spec.authentication)?,
        iot_edge: spec.iot_edge,
        device_scope: spec.device_scope,
        parent_scopes: spec.parent_scopes,
    })
}

/// `current` changed as a prepared spec says, one version up.
fn updated_device(current: &Device, spec: &DeviceSpec, now: DateTime<Utc>) -> Device {
    let version = current.version.saturating_add(1);
    let status = spec.status.unwrap_or(current.status);
    Device {
        device_id: current.device_id.clone(),
        generation_id: current.generation_id.clone(),
        version,
        etag: ETag::from_version(version),
        status,
        status_reason: spec.status_reason.clone(),
        status_updated_time: if status == current.status {
            current.status_updated_time
        } else {
            Some(now)
        },
        connection_state: current.connection_state,
        connection_state_updated_time: current.connection_state_updated_time,
        last_activity_time: current.last_activity_time,
        cloud_to_device_message_count: current.cloud_to_device_message_count,
        authentication: spec
            .authentication
            .clone()
            .unwrap_or_else(|| current.authentication.clone()),
        iot_edge: spec.iot_edge,
        device_scope: spec.device_scope.clone(),
        parent_scopes: spec.parent_scopes.clone(),
    }
}

/// A new module (version 0) from a prepared spec.
fn new_module(spec: ModuleSpec) -> Result<Module, RegistryError> {
    Ok(Module {
        device_id: spec.device_id,
        module_id: spec.module_id,
        generation_id: rules::generation_id()?,
        version: 0,
        etag: ETag::from_version(0),
        managed_by: spec.managed_by,
        connection_state: ConnectionState::Disconnected,
        connection_state_updated_time: None,
        last_activity_time: None,
        cloud_to_device_message_count: 0,
        authentication: creation_auth(spec.authentication)?,
    })
}

/// `current` changed as a prepared spec says, one version up.
fn updated_module(current: &Module, spec: &ModuleSpec) -> Module {
    let version = current.version.saturating_add(1);
    Module {
        version,
        etag: ETag::from_version(version),
        managed_by: spec.managed_by.clone(),
        authentication: spec
            .authentication
            .clone()
            .unwrap_or_else(|| current.authentication.clone()),
        ..current.clone()
    }
}

/// The cache update and event of storing `new` over `old` (`None`: a creation, no event).
fn device_put_effects(old: Option<&Device>, new: &Device) -> Effects {
    let events = match old {
        None => Vec::new(),
        Some(old) => {
            let kind = if old.is_enabled() && !new.is_enabled() {
                IdentityChangeKind::Disabled
            } else if old.authentication != new.authentication {
                IdentityChangeKind::KeysChanged
            } else {
                IdentityChangeKind::Updated
            };
            vec![change(&new.device_id, None, kind)]
        }
    };
    Effects {
        ops: vec![CacheOp::PutDevice(
            new.device_id.clone(),
            IdentityAuth::from(new),
        )],
        events,
    }
}

fn change(d: &DeviceId, m: Option<&ModuleId>, kind: IdentityChangeKind) -> IdentityChange {
    IdentityChange {
        device_id: d.clone(),
        module_id: m.cloned(),
        kind,
    }
}

/// Other writers changed the identity on every attempt.
fn contended() -> RegistryError {
    RegistryError::Store(StoreError::Unavailable(
        "the identity kept changing concurrently; retry the request".to_owned(),
    ))
}
