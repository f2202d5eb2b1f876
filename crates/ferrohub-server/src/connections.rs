//! Who is connected: one live connection per identity (the newest wins), the handles that close
//! a connection when its identity is revoked, and the presence the registry API reports
//! (`connectionState`, `connectionStateUpdatedTime`, `lastActivityTime`).
//!
//! Presence is kept in memory: it changes with every message, and after a restart every device
//! is disconnected anyway. In a scale-out deployment this map becomes the presence service.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use ferrohub_types::{DeviceId, ModuleId};
use tokio::sync::{Notify, oneshot};

/// A device or module identity.
pub(crate) type Identity = (DeviceId, Option<ModuleId>);

/// What the registry API shows of an identity's connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Presence {
    /// Whether a connection is live.
    pub connected: bool,
    /// When it connected or disconnected last.
    pub state_updated: DateTime<Utc>,
    /// When it last connected, sent or received.
    pub last_activity: DateTime<Utc>,
}

struct Entry {
    presence: Presence,
    /// Woken when a cloud-to-device message is queued for the identity.
    c2d: Arc<Notify>,
    /// The live connection: its id and the sender that closes it.
    live: Option<(u64, oneshot::Sender<String>)>,
}

/// The live connections and presence of every identity.
#[derive(Default)]
pub(crate) struct Connections {
    next_id: AtomicU64,
    entries: Mutex<HashMap<Identity, Entry>>,
}

/// A registered connection; [`Connections::unregister`] ends it.
#[derive(Debug)]
pub(crate) struct Registration {
    /// The connection's id.
    pub(crate) id: u64,
    /// Resolves with a reason when the hub closes this connection (revocation, a newer
    /// connection for the same identity).
    pub(crate) closed: oneshot::Receiver<String>,
    /// Notified when a cloud-to-device message is queued for the identity.
    pub(crate) c2d: Arc<Notify>,
}

impl Connections {
    /// Registers a new live connection for `identity`, closing the older one if any.
    pub(crate) fn register(&self, identity: Identity, now: DateTime<Utc>) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let Ok(mut entries) = self.entries.lock() else {
            return Registration {
                id,
                closed: rx,
                c2d: Arc::new(Notify::new()),
            };
        };
        let entry = entries.entry(identity).or_insert(Entry {
            presence: Presence {
                connected: true,
                state_updated: now,
                last_activity: now,
            },
            c2d: Arc::new(Notify::new()),
            live: None,
        });
        if let Some((_, old)) = entry.live.take() {
            let _ = old.send("a newer connection for the same identity took over".into());
        }
        entry.live = Some((id, tx));
        entry.presence = Presence {
            connected: true,
            state_updated: now,
            last_activity: now,
        };
        Registration {
            id,
            closed: rx,
            c2d: entry.c2d.clone(),
        }
    }

    /// Wakes the live connection of `device`, if any, to deliver newly queued messages.
    pub(crate) fn notify_c2d(&self, device: &DeviceId) {
        if let Ok(entries) = self.entries.lock()
            && let Some(entry) = entries.get(&(device.clone(), None))
        {
            entry.c2d.notify_one();
        }
    }

    /// Ends connection `id` of `identity` (a newer one may have replaced it already).
    pub(crate) fn unregister(&self, identity: &Identity, id: u64, now: DateTime<Utc>) {
        if let Ok(mut entries) = self.entries.lock()
            && let Some(entry) = entries.get_mut(identity)
            && entry.live.as_ref().is_some_and(|(live, _)| *live == id)
        {
            entry.live = None;
            entry.presence.connected = false;
            entry.presence.state_updated = now;
        }
    }

    /// Records activity (a message sent or received) of `identity`.
    pub(crate) fn touch(&self, identity: &Identity, now: DateTime<Utc>) {
        if let Ok(mut entries) = self.entries.lock()
            && let Some(entry) = entries.get_mut(identity)
        {
            entry.presence.last_activity = now;
        }
    }

    /// Closes the live connection of `identity`, if any.
    pub(crate) fn close(&self, identity: &Identity, reason: &str) {
        if let Ok(mut entries) = self.entries.lock()
            && let Some(entry) = entries.get_mut(identity)
            && let Some((_, tx)) = entry.live.take()
        {
            let _ = tx.send(reason.to_owned());
        }
    }

    /// Closes the live connections of `device` and of all its modules, and forgets their
    /// presence when `forget` (the device was deleted).
    pub(crate) fn close_device(&self, device: &DeviceId, reason: &str, forget: bool) {
        if let Ok(mut entries) = self.entries.lock() {
            for ((d, _), entry) in entries.iter_mut() {
                if d == device
                    && let Some((_, tx)) = entry.live.take()
                {
                    let _ = tx.send(reason.to_owned());
                }
            }
            if forget {
                entries.retain(|(d, _), _| d != device);
            }
        }
    }

    /// The presence of `identity`, when it ever connected since the hub started.
    pub(crate) fn presence(&self, identity: &Identity) -> Option<Presence> {
        self.entries
            .lock()
            .ok()
            .and_then(|e| e.get(identity).map(|entry| entry.presence))
    }

    /// How many devices (not modules) are connected.
    pub(crate) fn connected_devices(&self) -> u64 {
        self.entries
            .lock()
            .map(|e| {
                e.iter()
                    .filter(|((_, m), entry)| m.is_none() && entry.presence.connected)
                    .count() as u64
            })
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ident(d: &str) -> Identity {
        (DeviceId::new(d).expect("id"), None)
    }

    #[test]
    fn newest_connection_wins_and_presence_follows() {
        let c = Connections::default();
        let t0 = Utc::now();
        let mut first = c.register(ident("d"), t0);
        assert_eq!(c.connected_devices(), 1);
        let second = c.register(ident("d"), t0);
        assert!(first.closed.try_recv().is_ok(), "older connection closed");
        // The old connection unregistering does not disconnect the new one.
        c.unregister(&ident("d"), first.id, t0);
        assert_eq!(c.presence(&ident("d")).map(|p| p.connected), Some(true));
        let t1 = t0 + chrono::Duration::seconds(5);
        c.touch(&ident("d"), t1);
        c.unregister(&ident("d"), second.id, t1);
        let p = c.presence(&ident("d")).expect("presence");
        assert!(!p.connected);
        assert_eq!(p.last_activity, t1);
        assert_eq!(p.state_updated, t1);
        assert_eq!(c.connected_devices(), 0);
    }

    #[test]
    fn closing_a_device_closes_its_modules() {
        let c = Connections::default();
        let now = Utc::now();
        let d = DeviceId::new("d").expect("id");
        let mut dev = c.register((d.clone(), None), now);
        let mut module = c.register((d.clone(), Some(ModuleId::new("m").expect("id"))), now);
        let mut other = c.register(ident("e"), now);
        c.close_device(&d, "deleted", true);
        assert_eq!(dev.closed.try_recv().ok().as_deref(), Some("deleted"));
        assert!(module.closed.try_recv().is_ok());
        assert!(other.closed.try_recv().is_err());
        assert!(c.presence(&(d, None)).is_none(), "forgotten");
    }
}
