//! Twins beside their identities: reading them, the service's writes and the device's reported
//! patches, each applied with `ferrohub-twin`'s rules under the identity's lock and written with
//! compare-and-set.
//!
//! # Consistency
//!
//! * A twin is stored only once it is first written; until then the identity has the
//!   [`initial_twin`]. Deleting the identity deletes its twin in the same store change.
//! * Writes to one device's twins (and its modules') are serialized by the device's lock, the
//!   same one identity writes take, so a twin write never races its identity's deletion inside a
//!   registry. A write that conflicts anyway (another node, a direct store write) is read, judged
//!   and tried again: an `If-Match` is checked against the twin as re-read, so `*` retries and a
//!   specific ETag fails only when the twin's ETag really changed (a reported patch changes the
//!   stored twin but not its ETag).
//! * Every accepted write is durable before it returns. The desired notifications of accepted
//!   service writes go to [`Registry::on_desired_change`] listeners after the store
//!   acknowledged and before the lock is released, so listeners see one twin's changes in
//!   version order.
//! * A write whose future is dropped while the store works on it may or may not be stored, and
//!   its notification is not reported: callers that must not lose notifications run the write to
//!   its end (the hub runs it on a task of its own).

use std::sync::{Arc, PoisonError, RwLock};

use chrono::{DateTime, Utc};
use ferrohub_twin::{ReportedPatch, Twin, TwinUpdate};
use ferrohub_types::{DeviceId, ModuleId};

use super::{MAX_ATTEMPTS, Registry, contended};
use crate::error::{RegistryError, StoreError};
use crate::model::{DesiredChange, IdentityTwin, StoredTwin, TwinOwner};
use crate::store::{Change, Expect, RegistryStore};

/// When the [`initial_twin`] was last updated: never, which Azure writes as
/// `0001-01-01T00:00:00Z`. The registry keeps no creation time of identities, and a stable
/// time is better than the time of the read.
const NEVER_SECS: i64 = -62_135_596_800;

/// The twin of an identity whose twin was never written: no tags or properties, ETag counter 1,
/// both `$version`s 1, last updated never.
pub fn initial_twin() -> Twin {
    Twin::new(DateTime::<Utc>::from_timestamp(NEVER_SECS, 0).unwrap_or(DateTime::UNIX_EPOCH))
}

type DesiredListener = Arc<dyn Fn(&DesiredChange) + Send + Sync>;

/// The listeners of desired changes.
#[derive(Default)]
pub(crate) struct DesiredListeners {
    list: RwLock<Vec<DesiredListener>>,
}

impl DesiredListeners {
    pub(crate) fn add(&self, f: DesiredListener) {
        self.list
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(f);
    }

    pub(crate) fn notify(&self, changes: &[DesiredChange]) {
        if changes.is_empty() {
            return;
        }
        let list = self.list.read().unwrap_or_else(PoisonError::into_inner);
        for change in changes {
            for f in list.iter() {
                f(change);
            }
        }
    }
}

/// The stored twin, or the initial one with the expectation a first write has.
fn current(stored: Option<StoredTwin>) -> (Twin, Expect, u64) {
    match stored {
        Some(s) => (
            s.twin,
            Expect::Version(s.version),
            s.version.saturating_add(1),
        ),
        None => (initial_twin(), Expect::Absent, 0),
    }
}

impl<S: RegistryStore> Registry<S> {
    /// Calls `f` after every stored change of an identity's desired properties (service
    /// writes, twin data of bulk and import records), with the notification its device must
    /// get. `f` runs on the task that made the change, before the identity's next twin write
    /// can be stored, so it sees one twin's changes in version order; it must be quick and must
    /// not block.
    pub fn on_desired_change(&self, f: impl Fn(&DesiredChange) + Send + Sync + 'static) {
        self.desired_listeners.add(Arc::new(f));
    }

    /// The twin of the device (`m` = `None`) or module, with its identity.
    ///
    /// Errors: `DeviceNotFound`, `ModuleNotFound`.
    pub async fn twin(
        &self,
        d: &DeviceId,
        m: Option<&ModuleId>,
    ) -> Result<IdentityTwin, RegistryError> {
        let owner = self.twin_owner(d, m).await?;
        let twin = current(self.store.twin(d, m).await?).0;
        Ok(IdentityTwin { owner, twin })
    }

    /// Up to `limit` devices after `after`, in device id order, each with its twin (the initial
    /// one when none was written): one page of a scan over every device's twin.
    pub async fn device_twins(
        &self,
        after: Option<&DeviceId>,
        limit: usize,
    ) -> Result<Vec<IdentityTwin>, RegistryError> {
        Ok(self
            .store
            .device_twins(after, limit)
            .await?
            .into_iter()
            .map(|(device, stored)| IdentityTwin {
                owner: TwinOwner::Device(device),
                twin: current(stored).0,
            })
            .collect())
    }

    /// The twin of the device (`m` = `None`) or module without its identity, for the identity
    /// itself (a connected device's twin `GET`): the initial twin when none is stored, without
    /// checking that the identity still exists.
    pub async fn twin_document(
        &self,
        d: &DeviceId,
        m: Option<&ModuleId>,
    ) -> Result<Twin, RegistryError> {
        Ok(current(self.store.twin(d, m).await?).0)
    }

    /// A service write of the twin (`PATCH` or `PUT`, already read into `update`), if
    /// `if_match` names the twin's current ETag. Returns the twin after the write with its
    /// identity; a write that includes desired properties is reported to
    /// [`Registry::on_desired_change`] listeners.
    ///
    /// Errors: `DeviceNotFound`, `ModuleNotFound`, `Twin` (412001 for an `If-Match` that does
    /// not match, 400004 for a section over its size).
    pub async fn update_twin(
        &self,
        d: &DeviceId,
        m: Option<&ModuleId>,
        update: &TwinUpdate,
        if_match: &ferrohub_twin::IfMatch,
        now: DateTime<Utc>,
    ) -> Result<IdentityTwin, RegistryError> {
        let _lock = self.locks.lock(d).await;
        for _ in 0..MAX_ATTEMPTS {
            let owner = self.twin_owner(d, m).await?;
            let (twin, expect, version) = current(self.store.twin(d, m).await?);
            let updated = twin.apply_update(update, if_match, now)?;
            if update.tags().is_none() && update.desired().is_none() {
                // Nothing to change (a body with neither section): the ETag stays too.
                return Ok(IdentityTwin { owner, twin });
            }
            let change = Change::PutTwin {
                device_id: d.clone(),
                module_id: m.cloned(),
                twin: StoredTwin {
                    version,
                    twin: updated.twin.clone(),
                },
                expect,
            };
            match self.store.apply(vec![change]).await {
                Ok(()) => {
                    tracing::debug!(device = %d, module = ?m, etag = %updated.twin.etag(), "twin updated");
                    if let Some(patch) = updated.desired_patch {
                        self.desired_listeners.notify(&[DesiredChange {
                            device_id: d.clone(),
                            module_id: m.cloned(),
                            patch,
                        }]);
                    }
                    return Ok(IdentityTwin {
                        owner,
                        twin: updated.twin,
                    });
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(contended())
    }

    /// A reported-properties patch of the device (`m` = `None`) or module, applied if
    /// `expected_version` (when given) is the current reported `$version`. Returns the new
    /// reported `$version`.
    ///
    /// Errors: `DeviceNotFound`, `ModuleNotFound`, `Twin` (412001 for another reported version,
    /// 400004 for a section over its size).
    pub async fn report_twin(
        &self,
        d: &DeviceId,
        m: Option<&ModuleId>,
        patch: &ReportedPatch,
        expected_version: Option<u64>,
        now: DateTime<Utc>,
    ) -> Result<u64, RegistryError> {
        let _lock = self.locks.lock(d).await;
        for _ in 0..MAX_ATTEMPTS {
            let stored = self.store.twin(d, m).await?;
            if stored.is_none() {
                // A first write: the identity must exist (the store would refuse it anyway,
                // but as a conflict, which says nothing about why).
                self.twin_owner(d, m).await?;
            }
            let (twin, expect, version) = current(stored);
            let updated = twin.apply_reported(patch, expected_version, now)?;
            let change = Change::PutTwin {
                device_id: d.clone(),
                module_id: m.cloned(),
                twin: StoredTwin {
                    version,
                    twin: updated.twin,
                },
                expect,
            };
            match self.store.apply(vec![change]).await {
                Ok(()) => return Ok(updated.version),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(contended())
    }

    /// The identity a twin belongs to. Errors: `DeviceNotFound`, `ModuleNotFound`.
    pub(super) async fn twin_owner(
        &self,
        d: &DeviceId,
        m: Option<&ModuleId>,
    ) -> Result<TwinOwner, RegistryError> {
        match m {
            None => self.device(d).await.map(TwinOwner::Device),
            Some(m) => self.module(d, m).await.map(TwinOwner::Module),
        }
    }
}
