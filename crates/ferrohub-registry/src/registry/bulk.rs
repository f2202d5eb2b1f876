//! Bulk create, update and delete (`POST /devices`): up to 100 records, each with its import mode.
//!
//! Records are judged in request order against the stored state as changed by the records
//! before them (a module record can follow its device's create record in the same request).
//! Records that fail are reported and the others are applied, all in one store `apply` so they
//! commit together. A record's twin data (`tags`, `properties.desired`) is applied to its twin
//! in the same `apply`, after its identity's change, and fails the record (and nothing else) when
//! the twin's rules refuse it. If another writer changes one of the identities between the read and the
//! commit, the whole request is judged again; after repeated interference records are applied
//! one by one.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use ferrohub_types::{DeviceId, ModuleId};

use super::twins::initial_twin;

use super::cache::{CacheOp, Effects};
use super::{
    MAX_ATTEMPTS, MAX_BULK_RECORDS, Registry, change, device_put_effects, new_device, new_module,
    prepare_device, prepare_module, updated_device, updated_module,
};
use crate::error::{RegistryError, StoreError};
use crate::model::{
    BulkError, BulkResult, DesiredChange, Device, DeviceSpec, IdentityAuth, IdentityChangeKind,
    IfMatch, ImportMode, ImportRecord, Module, ModuleSpec, StoredTwin,
};
use crate::store::{Change, Expect, RegistryStore};

/// The stored state of the identities a request names, changed as planning goes on.
#[derive(Default)]
struct State {
    devices: HashMap<DeviceId, Option<Device>>,
    modules: HashMap<(DeviceId, ModuleId), Option<Module>>,
    /// The stored twins of the records that carry twin data.
    twins: HashMap<(DeviceId, Option<ModuleId>), Option<StoredTwin>>,
}

/// What planning decided for a set of records.
#[derive(Default)]
struct Plan {
    changes: Vec<Change>,
    effects: Effects,
    /// The desired notifications of the twin changes, reported once they are stored.
    desired: Vec<DesiredChange>,
    errors: Vec<BulkError>,
}

/// What one record asks for, in the three shapes planning distinguishes.
enum Wanted {
    Put,
    Delete,
    /// `updateTwin*`: only the twin changes; the identity has to exist.
    Exists,
}

impl<S: RegistryStore> Registry<S> {
    /// Applies a bulk request. Per-record failures (`DeviceAlreadyExists`, `DeviceNotFound`,
    /// `ModuleNotFound`, `PreconditionFailed`, `ArgumentInvalid`, ...) are reported in the result
    /// and do not stop the other records.
    ///
    /// Errors for the whole request: `TooManyDevices` above [`MAX_BULK_RECORDS`],
    /// `DeviceDefinedMultipleTimes` when two records name the same identity.
    ///
    /// A record's twin data replaces the twin's `tags` and `properties.desired` (those it
    /// carries) for every mode but the deletes; `updateTwin` and `updateTwinIfMatchETag` change
    /// only the twin, the latter if the record's `twinETag` is the twin's. Desired changes are
    /// reported to [`Registry::on_desired_change`] listeners.
    pub async fn bulk(
        &self,
        records: Vec<ImportRecord>,
        now: DateTime<Utc>,
    ) -> Result<BulkResult, RegistryError> {
        if records.len() > MAX_BULK_RECORDS {
            return Err(RegistryError::TooManyDevices {
                max: MAX_BULK_RECORDS,
            });
        }
        let mut seen = HashSet::new();
        for r in &records {
            if !seen.insert((&r.device_id, r.module_id.as_ref())) {
                let label = match &r.module_id {
                    Some(m) => format!("{}/{m}", r.device_id),
                    None => r.device_id.to_string(),
                };
                return Err(RegistryError::DeviceDefinedMultipleTimes(label));
            }
        }

        let devices: Vec<DeviceId> = records.iter().map(|r| r.device_id.clone()).collect();
        let _lock = self.locks.lock_all(devices).await;

        let all: Vec<usize> = (0..records.len()).collect();
        for _ in 0..MAX_ATTEMPTS {
            match self.try_apply(&records, &all, now).await? {
                Some(errors) => return Ok(result(errors)),
                None => continue,
            }
        }

        tracing::warn!("bulk request kept conflicting; applying its records one by one");
        let mut errors = Vec::new();
        for i in all {
            match self.try_apply(&records, &[i], now).await? {
                Some(mut e) => errors.append(&mut e),
                None => {
                    let r = &records[i];
                    errors.push(bulk_error(r, &RegistryError::PreconditionFailed));
                }
            }
        }
        Ok(result(errors))
    }

    /// Reads, plans and applies the records at `indices` once. `Ok(None)`: another writer
    /// interfered and nothing was applied.
    async fn try_apply(
        &self,
        records: &[ImportRecord],
        indices: &[usize],
        now: DateTime<Utc>,
    ) -> Result<Option<Vec<BulkError>>, RegistryError> {
        let mut state = State::default();
        // Every device of the request in one read.
        let mut ids: Vec<DeviceId> = indices
            .iter()
            .map(|&i| records[i].device_id.clone())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let found = self.store.devices_by_id(&ids).await?;
        state.devices.extend(ids.into_iter().zip(found));
        for &i in indices {
            let r = &records[i];
            if let Some(m) = &r.module_id {
                let module = self.store.module(&r.device_id, m).await?;
                state
                    .modules
                    .insert((r.device_id.clone(), m.clone()), module);
            }
            if r.twin.is_some() && !is_delete(r.import_mode) {
                let twin = self.store.twin(&r.device_id, r.module_id.as_ref()).await?;
                state
                    .twins
                    .insert((r.device_id.clone(), r.module_id.clone()), twin);
            }
        }

        let mut plan = Plan::default();
        for &i in indices {
            let r = &records[i];
            let outcome = match &r.module_id {
                None => plan_device(r, &mut state, &mut plan, now),
                Some(m) => plan_module(r, m, &mut state, &mut plan, now),
            };
            match outcome {
                Ok(()) => {}
                Err(e @ RegistryError::Entropy(_)) => return Err(e),
                Err(e) => plan.errors.push(bulk_error(r, &e)),
            }
        }
        if plan.changes.is_empty() {
            return Ok(Some(plan.errors));
        }

        let count = plan.changes.len();
        let pending = self.pending(plan.effects);
        match self.store.apply(plan.changes).await {
            Ok(()) => {
                pending.commit();
                self.desired_listeners.notify(&plan.desired);
                tracing::info!(
                    applied = count,
                    failed = plan.errors.len(),
                    "bulk registry request applied"
                );
                Ok(Some(plan.errors))
            }
            Err(StoreError::Conflict { .. }) => {
                pending.abandon();
                Ok(None)
            }
            Err(e) => {
                pending.abandon();
                Err(e.into())
            }
        }
    }
}

fn result(errors: Vec<BulkError>) -> BulkResult {
    BulkResult {
        is_successful: errors.is_empty(),
        errors,
        warnings: Vec::new(),
    }
}

fn bulk_error(r: &ImportRecord, e: &RegistryError) -> BulkError {
    BulkError {
        device_id: r.device_id.to_string(),
        module_id: r.module_id.as_ref().map(ToString::to_string),
        error_code: e.error_code(),
        error_status: e.to_string(),
    }
}

/// What the mode asks for, given whether the identity exists and whether the record's ETag
/// matches it. `Err` is the record's failure.
fn decide(
    mode: ImportMode,
    exists: bool,
    etag_matches: bool,
    already: impl FnOnce() -> RegistryError,
    missing: impl FnOnce() -> RegistryError,
) -> Result<Wanted, RegistryError> {
    use ImportMode as M;
    match (mode, exists) {
        (M::Create, true) => Err(already()),
        (M::Create | M::CreateOrUpdate | M::CreateOrUpdateIfMatchETag, false) => Ok(Wanted::Put),
        (
            M::Update
            | M::UpdateIfMatchETag
            | M::Delete
            | M::DeleteIfMatchETag
            | M::UpdateTwin
            | M::UpdateTwinIfMatchETag,
            false,
        ) => Err(missing()),
        (M::UpdateIfMatchETag | M::CreateOrUpdateIfMatchETag | M::DeleteIfMatchETag, true)
            if !etag_matches =>
        {
            Err(RegistryError::PreconditionFailed)
        }
        (
            M::Update | M::UpdateIfMatchETag | M::CreateOrUpdate | M::CreateOrUpdateIfMatchETag,
            true,
        ) => Ok(Wanted::Put),
        (M::Delete | M::DeleteIfMatchETag, true) => Ok(Wanted::Delete),
        // The twin's ETag is checked by whoever owns twins.
        (M::UpdateTwin | M::UpdateTwinIfMatchETag, true) => Ok(Wanted::Exists),
    }
}

fn is_delete(mode: ImportMode) -> bool {
    matches!(mode, ImportMode::Delete | ImportMode::DeleteIfMatchETag)
}

/// The twin change of a record whose identity change is decided (`wanted`) and which will exist
/// afterwards, or `None` when the record carries no twin data. `Err` fails the record.
fn plan_twin(
    r: &ImportRecord,
    wanted: &Wanted,
    state: &State,
    now: DateTime<Utc>,
) -> Result<Option<(Change, Option<DesiredChange>)>, RegistryError> {
    let Some(update) = &r.twin else {
        return Ok(None);
    };
    if matches!(wanted, Wanted::Delete) {
        return Ok(None);
    }
    let key = (r.device_id.clone(), r.module_id.clone());
    let stored = state.twins.get(&key).cloned().flatten();
    let if_match = match (r.import_mode, &r.twin_etag) {
        (ImportMode::UpdateTwinIfMatchETag, Some(etag)) => ferrohub_twin::IfMatch::parse(etag),
        // No twin ETag to match: nothing matches.
        (ImportMode::UpdateTwinIfMatchETag, None) => {
            return Err(RegistryError::Twin(
                ferrohub_twin::TwinError::PreconditionFailed,
            ));
        }
        _ => ferrohub_twin::IfMatch::Any,
    };
    let (twin, expect, version) = match stored {
        Some(s) => (
            s.twin,
            Expect::Version(s.version),
            s.version.saturating_add(1),
        ),
        None => (initial_twin(), Expect::Absent, 0),
    };
    let updated = twin.apply_update(update, &if_match, now)?;
    let desired = updated.desired_patch.map(|patch| DesiredChange {
        device_id: r.device_id.clone(),
        module_id: r.module_id.clone(),
        patch,
    });
    let change = Change::PutTwin {
        device_id: r.device_id.clone(),
        module_id: r.module_id.clone(),
        twin: StoredTwin {
            version,
            twin: updated.twin,
        },
        expect,
    };
    Ok(Some((change, desired)))
}

/// Adds a planned twin change after its identity's change.
fn push_twin(plan: &mut Plan, twin: Option<(Change, Option<DesiredChange>)>) {
    if let Some((change, desired)) = twin {
        plan.changes.push(change);
        plan.desired.extend(desired);
    }
}

fn etag_matches(record: &ImportRecord, etag: Option<&crate::model::ETag>) -> bool {
    match (&record.etag, etag) {
        (Some(given), Some(current)) => IfMatch::parse(given).matches(current),
        _ => false,
    }
}

/// The expectation that the stored state (as read) holds.
fn expect_of(version: Option<u64>) -> Expect {
    version.map_or(Expect::Absent, Expect::Version)
}

fn plan_device(
    r: &ImportRecord,
    state: &mut State,
    plan: &mut Plan,
    now: DateTime<Utc>,
) -> Result<(), RegistryError> {
    let id = &r.device_id;
    let current = state.devices.get(id).cloned().flatten();
    let wanted = decide(
        r.import_mode,
        current.is_some(),
        etag_matches(r, current.as_ref().map(|d| &d.etag)),
        || RegistryError::DeviceAlreadyExists(id.clone()),
        || RegistryError::DeviceNotFound(id.clone()),
    )?;
    let twin = plan_twin(r, &wanted, state, now)?;
    match (wanted, current) {
        (Wanted::Put, None) => {
            let spec: DeviceSpec = prepare_device(r.device_spec())?;
            let device = new_device(spec, now)?;
            plan.effects
                .ops
                .push(CacheOp::PutDevice(id.clone(), IdentityAuth::from(&device)));
            plan.changes.push(Change::PutDevice {
                device: device.clone(),
                expect: Expect::Absent,
            });
            state.devices.insert(id.clone(), Some(device));
        }
        (Wanted::Put, Some(current)) => {
            let spec = prepare_device(r.device_spec())?;
            let updated = updated_device(&current, &spec, now);
            let effects = device_put_effects(Some(&current), &updated);
            plan.effects.ops.extend(effects.ops);
            plan.effects.events.extend(effects.events);
            plan.changes.push(Change::PutDevice {
                device: updated.clone(),
                expect: Expect::Version(current.version),
            });
            state.devices.insert(id.clone(), Some(updated));
        }
        (Wanted::Delete, current) => {
            plan.effects.ops.push(CacheOp::RemoveDevice(id.clone()));
            plan.effects
                .events
                .push(change(id, None, IdentityChangeKind::Deleted));
            plan.changes.push(Change::DeleteDevice {
                id: id.clone(),
                expect: expect_of(current.map(|d| d.version)),
            });
            state.devices.insert(id.clone(), None);
        }
        (Wanted::Exists, _) => {}
    }
    push_twin(plan, twin);
    Ok(())
}

fn plan_module(
    r: &ImportRecord,
    m: &ModuleId,
    state: &mut State,
    plan: &mut Plan,
    now: DateTime<Utc>,
) -> Result<(), RegistryError> {
    let d = &r.device_id;
    if state.devices.get(d).is_none_or(Option::is_none) {
        return Err(RegistryError::DeviceNotFound(d.clone()));
    }
    let key = (d.clone(), m.clone());
    let current = state.modules.get(&key).cloned().flatten();
    let wanted = decide(
        r.import_mode,
        current.is_some(),
        etag_matches(r, current.as_ref().map(|m| &m.etag)),
        || RegistryError::ModuleAlreadyExists {
            device_id: d.clone(),
            module_id: m.clone(),
        },
        || RegistryError::ModuleNotFound {
            device_id: d.clone(),
            module_id: m.clone(),
        },
    )?;
    let twin = plan_twin(r, &wanted, state, now)?;
    let spec = || -> Result<ModuleSpec, RegistryError> {
        let spec = r.module_spec().ok_or_else(|| {
            RegistryError::InvalidArgument("The record names no module.".to_owned())
        })?;
        prepare_module(spec)
    };
    match (wanted, current) {
        (Wanted::Put, None) => {
            let module = new_module(spec()?)?;
            plan.effects.ops.push(CacheOp::PutModule(
                d.clone(),
                m.clone(),
                IdentityAuth::from(&module),
            ));
            plan.changes.push(Change::PutModule {
                module: module.clone(),
                expect: Expect::Absent,
            });
            state.modules.insert(key, Some(module));
        }
        (Wanted::Put, Some(current)) => {
            let updated = updated_module(&current, &spec()?);
            let kind = if updated.authentication == current.authentication {
                IdentityChangeKind::Updated
            } else {
                IdentityChangeKind::KeysChanged
            };
            plan.effects.ops.push(CacheOp::PutModule(
                d.clone(),
                m.clone(),
                IdentityAuth::from(&updated),
            ));
            plan.effects.events.push(change(d, Some(m), kind));
            plan.changes.push(Change::PutModule {
                module: updated.clone(),
                expect: Expect::Version(current.version),
            });
            state.modules.insert(key, Some(updated));
        }
        (Wanted::Delete, current) => {
            plan.effects
                .ops
                .push(CacheOp::RemoveModule(d.clone(), m.clone()));
            plan.effects
                .events
                .push(change(d, Some(m), IdentityChangeKind::Deleted));
            plan.changes.push(Change::DeleteModule {
                device_id: d.clone(),
                module_id: m.clone(),
                expect: expect_of(current.map(|m| m.version)),
            });
            state.modules.insert(key, None);
        }
        (Wanted::Exists, _) => {}
    }
    push_twin(plan, twin);
    Ok(())
}
