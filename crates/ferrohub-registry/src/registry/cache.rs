//! The in-memory identity cache that connect-time lookups read, and the change listeners.
//!
//! The cache maps each device to its [`IdentityAuth`] and its modules' ones. It is filled from the
//! store when the registry opens and then changed only by the registry, after the store has
//! answered, through [`Effects`]: the cache operations and the [`IdentityChange`]s of one write.
//!
//! When a write's outcome is unknown (its future was dropped while the store worked on it), the
//! effects are applied *restrictively*: each identity keeps only what both its old and new state
//! allow (a deletion or disabling takes effect, a new key is not trusted, a new identity is not
//! added). Whatever the store did, the cache then never lets in more than the store would.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use ferrohub_types::{DeviceId, ModuleId};

use crate::model::{IdentityAuth, IdentityChange, IdentityChangeKind};

/// What the cache holds for one device.
struct CachedDevice {
    auth: IdentityAuth,
    modules: HashMap<ModuleId, IdentityAuth>,
}

#[derive(Default)]
pub(crate) struct IdentityCache {
    devices: RwLock<HashMap<DeviceId, CachedDevice>>,
}

/// One change to the cache.
pub(crate) enum CacheOp {
    PutDevice(DeviceId, IdentityAuth),
    RemoveDevice(DeviceId),
    PutModule(DeviceId, ModuleId, IdentityAuth),
    RemoveModule(DeviceId, ModuleId),
}

/// What a successful write changes in memory, and whom it tells.
#[derive(Default)]
pub(crate) struct Effects {
    pub(crate) ops: Vec<CacheOp>,
    /// Events to report; a device's `Deleted` is followed by one for each of its cached modules.
    pub(crate) events: Vec<IdentityChange>,
}

type Listener = Arc<dyn Fn(&IdentityChange) + Send + Sync>;

#[derive(Default)]
pub(crate) struct Listeners {
    list: RwLock<Vec<Listener>>,
}

impl IdentityCache {
    /// Fills the cache; a module whose device is not listed is left out.
    pub(crate) fn warm(&self, identities: Vec<(DeviceId, Option<ModuleId>, IdentityAuth)>) {
        let mut map = self.write();
        let mut modules = Vec::new();
        for (d, m, auth) in identities {
            match m {
                None => {
                    map.insert(
                        d,
                        CachedDevice {
                            auth,
                            modules: HashMap::new(),
                        },
                    );
                }
                Some(m) => modules.push((d, m, auth)),
            }
        }
        for (d, m, auth) in modules {
            match map.get_mut(&d) {
                Some(device) => {
                    device.modules.insert(m, auth);
                }
                None => tracing::warn!(device = %d, module = %m, "module without device ignored"),
            }
        }
    }

    pub(crate) fn get(&self, d: &DeviceId, m: Option<&ModuleId>) -> Option<IdentityAuth> {
        let map = self.devices.read().unwrap_or_else(PoisonError::into_inner);
        let device = map.get(d)?;
        match m {
            None => Some(device.auth.clone()),
            Some(m) => device.modules.get(m).cloned(),
        }
    }

    pub(crate) fn len(&self) -> (usize, usize) {
        let map = self.devices.read().unwrap_or_else(PoisonError::into_inner);
        let modules = map.values().map(|d| d.modules.len()).sum();
        (map.len(), modules)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<DeviceId, CachedDevice>> {
        // Every mutation below leaves the map consistent, so a poisoned lock is still usable.
        self.devices.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies `ops`; with `restrictive`, as the module doc describes. Returns the modules that
    /// went with each removed device.
    pub(crate) fn apply(&self, ops: &[CacheOp], restrictive: bool) -> Vec<(DeviceId, ModuleId)> {
        let mut removed = Vec::new();
        let mut map = self.write();
        for op in ops {
            match op {
                CacheOp::PutDevice(d, auth) => match map.get_mut(d) {
                    Some(cached) if restrictive => match intersect(&cached.auth, auth) {
                        Some(both) => cached.auth = both,
                        None => {
                            map.remove(d);
                        }
                    },
                    Some(cached) => {
                        if cached.auth.generation_id != auth.generation_id {
                            // A new device under an old id: no module of the old one survives.
                            cached.modules.clear();
                        }
                        cached.auth = auth.clone();
                    }
                    None if restrictive => {}
                    None => {
                        map.insert(
                            d.clone(),
                            CachedDevice {
                                auth: auth.clone(),
                                modules: HashMap::new(),
                            },
                        );
                    }
                },
                CacheOp::RemoveDevice(d) => {
                    if let Some(cached) = map.remove(d) {
                        let mut ids: Vec<ModuleId> = cached.modules.into_keys().collect();
                        ids.sort();
                        removed.extend(ids.into_iter().map(|m| (d.clone(), m)));
                    }
                }
                CacheOp::PutModule(d, m, auth) => {
                    let Some(device) = map.get_mut(d) else {
                        continue;
                    };
                    match device.modules.get_mut(m) {
                        Some(cached) if restrictive => match intersect(cached, auth) {
                            Some(both) => *cached = both,
                            None => {
                                device.modules.remove(m);
                            }
                        },
                        Some(cached) => *cached = auth.clone(),
                        None if restrictive => {}
                        None => {
                            device.modules.insert(m.clone(), auth.clone());
                        }
                    }
                }
                CacheOp::RemoveModule(d, m) => {
                    if let Some(device) = map.get_mut(d) {
                        device.modules.remove(m);
                    }
                }
            }
        }
        removed
    }
}

/// What the store holds of one device: its own entry and its modules'.
pub(crate) type StoredIdentities = (IdentityAuth, HashMap<ModuleId, IdentityAuth>);

impl IdentityCache {
    /// Replaces what the cache holds of device `d` with what the store holds (`None`: it is
    /// gone), and returns the changes that concern live connections: deletions (a device that
    /// was recreated counts as deleted), disabling and new credentials.
    pub(crate) fn replace_device(
        &self,
        d: &DeviceId,
        stored: Option<StoredIdentities>,
    ) -> Vec<IdentityChange> {
        let mut map = self.write();
        let old = map.remove(d);
        let events = changes_between(d, old.as_ref(), stored.as_ref());
        if let Some((auth, modules)) = stored {
            map.insert(d.clone(), CachedDevice { auth, modules });
        }
        events
    }

    /// Replaces the whole cache with `identities` (as [`IdentityCache::warm`] takes them), and
    /// returns the changes of every device, as [`IdentityCache::replace_device`] does.
    pub(crate) fn replace_all(
        &self,
        identities: Vec<(DeviceId, Option<ModuleId>, IdentityAuth)>,
    ) -> Vec<IdentityChange> {
        let fresh = IdentityCache::default();
        fresh.warm(identities);
        let mut new_map = std::mem::take(&mut *fresh.write());
        let mut map = self.write();
        let mut ids: Vec<DeviceId> = map.keys().chain(new_map.keys()).cloned().collect();
        ids.sort();
        ids.dedup();
        let mut events = Vec::new();
        for d in &ids {
            let new = new_map.get(d).map(|c| (c.auth.clone(), c.modules.clone()));
            events.extend(changes_between(d, map.get(d), new.as_ref()));
        }
        std::mem::swap(&mut *map, &mut new_map);
        events
    }
}

/// What changed for live connections between the cached `old` and the stored `new` of `d`.
fn changes_between(
    d: &DeviceId,
    old: Option<&CachedDevice>,
    new: Option<&StoredIdentities>,
) -> Vec<IdentityChange> {
    let Some(old) = old else {
        return Vec::new();
    };
    let event = |m: Option<&ModuleId>, kind| IdentityChange {
        device_id: d.clone(),
        module_id: m.cloned(),
        kind,
    };
    let kind_of = |a: &IdentityAuth, b: Option<&IdentityAuth>| match b {
        None => Some(IdentityChangeKind::Deleted),
        Some(b) if a.generation_id != b.generation_id => Some(IdentityChangeKind::Deleted),
        Some(b) if a.enabled && !b.enabled => Some(IdentityChangeKind::Disabled),
        Some(b) if a.primary_key != b.primary_key || a.secondary_key != b.secondary_key => {
            Some(IdentityChangeKind::KeysChanged)
        }
        Some(_) => None,
    };
    let mut events = Vec::new();
    let device_kind = kind_of(&old.auth, new.map(|(a, _)| a));
    if let Some(kind) = device_kind {
        events.push(event(None, kind));
    }
    let mut modules: Vec<&ModuleId> = old.modules.keys().collect();
    modules.sort();
    for m in modules {
        let Some(old_auth) = old.modules.get(m) else {
            continue;
        };
        let kind = if device_kind == Some(IdentityChangeKind::Deleted) {
            Some(IdentityChangeKind::Deleted)
        } else {
            kind_of(old_auth, new.and_then(|(_, mods)| mods.get(m)))
        };
        if let Some(kind) = kind {
            events.push(event(Some(m), kind));
        }
    }
    events
}

/// What both `a` and `b` allow: a key only if both hold it in the same slot, enabled only if both
/// are; nothing when they are different generations of the identity.
fn intersect(a: &IdentityAuth, b: &IdentityAuth) -> Option<IdentityAuth> {
    if a.generation_id != b.generation_id {
        return None;
    }
    let same = |x: &String, y: &String| if x == y { x.clone() } else { String::new() };
    Some(IdentityAuth {
        primary_key: same(&a.primary_key, &b.primary_key),
        secondary_key: same(&a.secondary_key, &b.secondary_key),
        enabled: a.enabled && b.enabled,
        generation_id: a.generation_id.clone(),
    })
}

impl Listeners {
    pub(crate) fn add(&self, f: Listener) {
        self.list
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(f);
    }

    /// Calls every listener with every event, holding no lock while they run.
    pub(crate) fn notify(&self, events: &[IdentityChange]) {
        if events.is_empty() {
            return;
        }
        let list = self
            .list
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for event in events {
            for f in &list {
                f(event);
            }
        }
    }
}

impl Effects {
    /// The events to report once the cache has been updated, with each deleted device's modules
    /// (from `removed`) reported after the device.
    pub(crate) fn events_with(&self, removed: &[(DeviceId, ModuleId)]) -> Vec<IdentityChange> {
        let mut out = Vec::with_capacity(self.events.len() + removed.len());
        for e in &self.events {
            out.push(e.clone());
            if e.kind == IdentityChangeKind::Deleted && e.module_id.is_none() {
                out.extend(
                    removed
                        .iter()
                        .filter(|(d, _)| *d == e.device_id)
                        .map(|(d, m)| IdentityChange {
                            device_id: d.clone(),
                            module_id: Some(m.clone()),
                            kind: IdentityChangeKind::Deleted,
                        }),
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(p: &str, s: &str, enabled: bool, g: &str) -> IdentityAuth {
        IdentityAuth {
            primary_key: p.to_owned(),
            secondary_key: s.to_owned(),
            enabled,
            generation_id: g.to_owned(),
        }
    }

    fn id(s: &str) -> DeviceId {
        DeviceId::new(s).expect("valid")
    }

    #[test]
    fn restrictive_apply_never_grants_more_than_before_or_after() {
        let cache = IdentityCache::default();
        let d = id("d");
        cache.warm(vec![(d.clone(), None, auth("A", "B", true, "1"))]);

        // A key rotation of unknown outcome: only the unchanged key stays trusted.
        cache.apply(
            &[CacheOp::PutDevice(d.clone(), auth("C", "B", true, "1"))],
            true,
        );
        assert_eq!(cache.get(&d, None), Some(auth("", "B", true, "1")));

        // Re-enabling of unknown outcome keeps it disabled.
        cache.apply(
            &[CacheOp::PutDevice(d.clone(), auth("", "B", false, "1"))],
            false,
        );
        cache.apply(
            &[CacheOp::PutDevice(d.clone(), auth("", "B", true, "1"))],
            true,
        );
        assert!(!cache.get(&d, None).expect("cached").enabled);

        // A create of unknown outcome adds nothing.
        let e = id("e");
        cache.apply(
            &[CacheOp::PutDevice(e.clone(), auth("A", "B", true, "2"))],
            true,
        );
        assert_eq!(cache.get(&e, None), None);
    }

    #[test]
    fn replacing_from_the_store_reports_what_connections_must_know() {
        let cache = IdentityCache::default();
        let m = ModuleId::new("m").expect("id");
        cache.warm(vec![
            (id("a"), None, auth("p", "s", true, "g1")),
            (id("a"), Some(m.clone()), auth("mp", "ms", true, "g2")),
            (id("b"), None, auth("p", "s", true, "g3")),
        ]);
        // Disabled elsewhere: the device's connections must close, the module's keys stand.
        let mods = HashMap::from([(m.clone(), auth("mp", "ms", true, "g2"))]);
        let events = cache.replace_device(&id("a"), Some((auth("p", "s", false, "g1"), mods)));
        assert_eq!(
            events,
            vec![IdentityChange {
                device_id: id("a"),
                module_id: None,
                kind: IdentityChangeKind::Disabled
            }]
        );
        assert!(!cache.get(&id("a"), None).expect("cached").enabled);
        assert!(cache.get(&id("a"), Some(&m)).is_some());
        // Unchanged: nothing to report.
        let again =
            cache.replace_device(&id("b"), Some((auth("p", "s", true, "g3"), HashMap::new())));
        assert!(again.is_empty());
        // A new device appears without an event; a deleted one reports its modules.
        let all = cache.replace_all(vec![
            (id("b"), None, auth("p2", "s", true, "g3")),
            (id("c"), None, auth("p", "s", true, "g4")),
        ]);
        let kinds: Vec<_> = all
            .iter()
            .map(|e| (e.device_id.to_string(), e.module_id.is_some(), e.kind))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("a".into(), false, IdentityChangeKind::Deleted),
                ("a".into(), true, IdentityChangeKind::Deleted),
                ("b".into(), false, IdentityChangeKind::KeysChanged),
            ]
        );
        assert!(cache.get(&id("a"), None).is_none());
        assert!(cache.get(&id("c"), None).is_some());
    }

    #[test]
    fn removing_a_device_reports_its_modules() {
        let cache = IdentityCache::default();
        let d = id("d");
        let m = ModuleId::new("m").expect("valid");
        cache.warm(vec![
            (d.clone(), Some(m.clone()), auth("A", "B", true, "2")),
            (d.clone(), None, auth("A", "B", true, "1")),
        ]);
        assert!(cache.get(&d, Some(&m)).is_some());
        let removed = cache.apply(&[CacheOp::RemoveDevice(d.clone())], false);
        assert_eq!(removed, vec![(d.clone(), m.clone())]);
        assert_eq!(cache.get(&d, Some(&m)), None);
    }
}
