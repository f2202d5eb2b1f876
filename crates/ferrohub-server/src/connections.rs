//! Who is connected: one live connection per identity (the newest wins), the handles that close
//! a connection when its identity is revoked or send it commands (direct method requests,
//! desired-property notifications), what it has subscribed to, and the presence the registry
//! API reports (`connectionState`, `connectionStateUpdatedTime`, `lastActivityTime`).
//!
//! Presence is kept in memory: it changes with every message, and after a restart every device
//! is disconnected anyway. In a scale-out deployment this map becomes the presence service.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use ferrohub_twin::MethodName;
use ferrohub_types::{DeviceId, ModuleId};
use tokio::sync::{Notify, mpsc, oneshot};

/// Commands the hub queues for a live connection, at most this many at a time.
pub(crate) const MAX_QUEUED_COMMANDS: usize = 64;

/// Something the hub asks a live connection to send its device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DeviceCommand {
    /// A direct method request (azure-contract §4.11): answer with
    /// [`crate::Hub::method_response`] under `rid`.
    Method {
        /// The request id the device echoes.
        rid: String,
        /// The method's name.
        name: MethodName,
        /// The request body: JSON, `null` when the caller gave none.
        payload: Bytes,
    },
    /// A desired-properties patch (the body includes `$version`), sent after the service
    /// changed the identity's desired properties.
    DesiredPatch {
        /// The new desired version.
        version: u64,
        /// The notification body.
        body: Bytes,
    },
}

/// What a live connection has subscribed to, of what the hub sends unasked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Interests {
    /// Direct method requests (`$iothub/methods/POST/#`, or the AMQP methods links).
    pub(crate) methods: bool,
    /// Desired-property notifications.
    pub(crate) desired: bool,
}

/// A device or module identity.
pub(crate) type Identity = (DeviceId, Option<ModuleId>);

/// What the registry API shows of an identity's connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Presence {
    /// Whether a connection is live.
    pub connected: bool,
    /// When it connected or disconnected last (`None`: it never connected, it only sent or
    /// received over HTTPS).
    pub state_updated: Option<DateTime<Utc>>,
    /// When it last connected, sent or received.
    pub last_activity: DateTime<Utc>,
}

struct Entry {
    /// `None` until the identity first connects.
    presence: Option<Presence>,
    /// The PnP model id the identity last announced when connecting (the twin's `modelId`).
    model_id: Option<String>,
    /// Woken when a cloud-to-device message is queued for the identity.
    c2d: Arc<Notify>,
    /// Woken when the live connection changes or changes its interests.
    changed: Arc<Notify>,
    /// The live connection.
    live: Option<Live>,
    /// The node that holds the identity's connection, when another node of a cluster does.
    remote: Option<String>,
}

impl Entry {
    fn new() -> Self {
        Entry {
            presence: None,
            model_id: None,
            c2d: Arc::new(Notify::new()),
            changed: Arc::new(Notify::new()),
            live: None,
            remote: None,
        }
    }
}

/// The live connection of an identity.
struct Live {
    id: u64,
    /// Closes it, with a reason.
    close: oneshot::Sender<String>,
    /// Sends it commands.
    commands: mpsc::Sender<DeviceCommand>,
    interests: Interests,
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
    /// Commands for the connection to carry out.
    pub(crate) commands: mpsc::Receiver<DeviceCommand>,
}

impl Connections {
    /// Registers a new live connection for `identity`, closing the older one if any.
    pub(crate) fn register(&self, identity: Identity, now: DateTime<Utc>) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let (commands_tx, commands) = mpsc::channel(MAX_QUEUED_COMMANDS);
        let Ok(mut entries) = self.entries.lock() else {
            return Registration {
                id,
                closed: rx,
                c2d: Arc::new(Notify::new()),
                commands,
            };
        };
        let entry = entries.entry(identity).or_insert_with(Entry::new);
        if let Some(old) = entry.live.take() {
            let _ = old
                .close
                .send("a newer connection for the same identity took over".into());
        }
        entry.live = Some(Live {
            id,
            close: tx,
            commands: commands_tx,
            interests: Interests::default(),
        });
        entry.presence = Some(Presence {
            connected: true,
            state_updated: Some(now),
            last_activity: now,
        });
        entry.remote = None;
        entry.changed.notify_waiters();
        Registration {
            id,
            closed: rx,
            c2d: entry.c2d.clone(),
            commands,
        }
    }

    /// Records the PnP model id `identity` announced when connecting (`model-id` in its MQTT
    /// user name); an identity that connects without one keeps the last one it announced.
    pub(crate) fn set_model_id(&self, identity: &Identity, model_id: &str) {
        if let Ok(mut entries) = self.entries.lock()
            && let Some(entry) = entries.get_mut(identity)
        {
            entry.model_id = Some(model_id.to_owned());
        }
    }

    /// The PnP model id `identity` last announced since the hub started.
    pub(crate) fn model_id(&self, identity: &Identity) -> Option<String> {
        self.entries
            .lock()
            .ok()
            .and_then(|e| e.get(identity).and_then(|entry| entry.model_id.clone()))
    }

    /// Records what connection `id` of `identity` has subscribed to.
    pub(crate) fn set_interests(&self, identity: &Identity, id: u64, interests: Interests) {
        if let Ok(mut entries) = self.entries.lock()
            && let Some(entry) = entries.get_mut(identity)
            && let Some(live) = entry.live.as_mut()
            && live.id == id
        {
            live.interests = interests;
            entry.changed.notify_waiters();
        }
    }

    /// Queues `command` for the live connection of `identity` if it has the interest `wants`
    /// says; gives the command back when there is no such connection or its queue is full.
    pub(crate) fn send_command(
        &self,
        identity: &Identity,
        wants: impl Fn(Interests) -> bool,
        command: DeviceCommand,
    ) -> Result<(), DeviceCommand> {
        let Ok(entries) = self.entries.lock() else {
            return Err(command);
        };
        match entries.get(identity).and_then(|e| e.live.as_ref()) {
            Some(live) if wants(live.interests) => {
                live.commands.try_send(command).map_err(|e| match e {
                    mpsc::error::TrySendError::Full(c) | mpsc::error::TrySendError::Closed(c) => c,
                })
            }
            _ => Err(command),
        }
    }

    /// Whether `identity` has a live connection with the interest `wants` says.
    pub(crate) fn has_interest(
        &self,
        identity: &Identity,
        wants: impl Fn(Interests) -> bool,
    ) -> bool {
        self.entries.lock().is_ok_and(|entries| {
            entries
                .get(identity)
                .and_then(|e| e.live.as_ref())
                .is_some_and(|live| wants(live.interests))
        })
    }

    /// Waits until `identity` has a live connection with the interest `wants` says, or
    /// `deadline` passes; returns whether it has one.
    pub(crate) async fn wait_for_interest(
        &self,
        identity: &Identity,
        wants: impl Fn(Interests) -> bool,
        deadline: tokio::time::Instant,
    ) -> bool {
        loop {
            let changed = {
                let Ok(mut entries) = self.entries.lock() else {
                    return false;
                };
                let entry = entries.entry(identity.clone()).or_insert_with(Entry::new);
                if entry.live.as_ref().is_some_and(|l| wants(l.interests)) {
                    return true;
                }
                entry.changed.clone()
            };
            let notified = changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Checked again after registering for the wake-up, so none is missed.
            if self.has_interest(identity, &wants) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.has_interest(identity, &wants);
            }
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

    /// Wakes every live connection of a device to look at its queue (after wake-ups may have
    /// been missed).
    pub(crate) fn notify_all_c2d(&self) {
        if let Ok(entries) = self.entries.lock() {
            for ((_, m), entry) in entries.iter() {
                if m.is_none() && entry.live.is_some() {
                    entry.c2d.notify_one();
                }
            }
        }
    }

    /// Ends connection `id` of `identity` (a newer one may have replaced it already); returns
    /// whether it was the identity's live connection.
    pub(crate) fn unregister(&self, identity: &Identity, id: u64, now: DateTime<Utc>) -> bool {
        if let Ok(mut entries) = self.entries.lock()
            && let Some(entry) = entries.get_mut(identity)
            && entry.live.as_ref().is_some_and(|live| live.id == id)
        {
            entry.live = None;
            if let Some(p) = entry.presence.as_mut() {
                p.connected = false;
                p.state_updated = Some(now);
            }
            entry.changed.notify_waiters();
            return true;
        }
        false
    }

    /// `identity` connected to another node of the cluster (`node`) at `at`: the connection
    /// here, if it is older, is closed (one connection per identity across the cluster), and
    /// the presence shows the identity connected.
    pub(crate) fn connected_elsewhere(
        &self,
        identity: Identity,
        node: &str,
        own_node: &str,
        at: DateTime<Utc>,
    ) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        let entry = entries.entry(identity).or_insert_with(Entry::new);
        if entry.live.is_some() {
            let local_at = entry.presence.and_then(|p| p.state_updated).unwrap_or(at);
            // The newer connection wins; on the same millisecond, the node named last.
            let newer_here = local_at > at || (local_at == at && own_node > node);
            if newer_here {
                return;
            }
            if let Some(live) = entry.live.take() {
                let _ = live.close.send(
                    "a newer connection for the same identity took over on another node".into(),
                );
            }
        }
        entry.remote = Some(node.to_owned());
        let last_activity = entry.presence.map_or(at, |p| p.last_activity.max(at));
        entry.presence = Some(Presence {
            connected: true,
            state_updated: Some(at),
            last_activity,
        });
        entry.changed.notify_waiters();
    }

    /// `identity`'s connection to node `node` ended at `at`.
    pub(crate) fn disconnected_elsewhere(
        &self,
        identity: &Identity,
        node: &str,
        at: DateTime<Utc>,
    ) {
        if let Ok(mut entries) = self.entries.lock()
            && let Some(entry) = entries.get_mut(identity)
            && entry.live.is_none()
            && entry.remote.as_deref() == Some(node)
        {
            entry.remote = None;
            if let Some(p) = entry.presence.as_mut() {
                p.connected = false;
                p.state_updated = Some(at);
                p.last_activity = p.last_activity.max(at);
            }
        }
    }

    /// Whether `identity` has a live connection on this node.
    pub(crate) fn is_live_here(&self, identity: &Identity) -> bool {
        self.entries
            .lock()
            .is_ok_and(|e| e.get(identity).is_some_and(|entry| entry.live.is_some()))
    }

    /// Records activity (a message sent or received) of `identity`: a device that only uses
    /// HTTPS has a `lastActivityTime` too, though it never connects.
    pub(crate) fn touch(&self, identity: &Identity, now: DateTime<Utc>) {
        if let Ok(mut entries) = self.entries.lock() {
            if let Some(entry) = entries.get_mut(identity) {
                match entry.presence.as_mut() {
                    Some(p) => p.last_activity = p.last_activity.max(now),
                    None => {
                        entry.presence = Some(Presence {
                            connected: false,
                            state_updated: None,
                            last_activity: now,
                        });
                    }
                }
                return;
            }
            let mut entry = Entry::new();
            entry.presence = Some(Presence {
                connected: false,
                state_updated: None,
                last_activity: now,
            });
            entries.insert(identity.clone(), entry);
        }
    }

    /// Closes every live connection on this node, with `reason` (the node fenced itself).
    pub(crate) fn close_all(&self, reason: &str) -> usize {
        let mut closed = 0;
        if let Ok(mut entries) = self.entries.lock() {
            for entry in entries.values_mut() {
                if let Some(live) = entry.live.take() {
                    let _ = live.close.send(reason.to_owned());
                    entry.changed.notify_waiters();
                    closed += 1;
                }
            }
        }
        closed
    }

    /// Closes the live connection of `identity`, if any.
    pub(crate) fn close(&self, identity: &Identity, reason: &str) {
        if let Ok(mut entries) = self.entries.lock()
            && let Some(entry) = entries.get_mut(identity)
            && let Some(live) = entry.live.take()
        {
            let _ = live.close.send(reason.to_owned());
            entry.changed.notify_waiters();
        }
    }

    /// Closes the live connections of `device` and of all its modules, and forgets their
    /// presence when `forget` (the device was deleted).
    pub(crate) fn close_device(&self, device: &DeviceId, reason: &str, forget: bool) {
        if let Ok(mut entries) = self.entries.lock() {
            for ((d, _), entry) in entries.iter_mut() {
                if d == device
                    && let Some(live) = entry.live.take()
                {
                    let _ = live.close.send(reason.to_owned());
                    entry.changed.notify_waiters();
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
            .and_then(|e| e.get(identity).and_then(|entry| entry.presence))
    }

    /// How many devices (not modules) are connected.
    pub(crate) fn connected_devices(&self) -> u64 {
        self.entries
            .lock()
            .map(|e| {
                e.iter()
                    .filter(|((_, m), entry)| {
                        m.is_none() && entry.presence.is_some_and(|p| p.connected)
                    })
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
        assert_eq!(p.state_updated, Some(t1));
        assert_eq!(c.connected_devices(), 0);
    }

    #[test]
    fn a_newer_connection_on_another_node_takes_over() {
        let c = Connections::default();
        let t0 = Utc::now();
        let mut here = c.register(ident("d"), t0);
        // An older connection announced late changes nothing.
        c.connected_elsewhere(ident("d"), "b", "a", t0 - chrono::Duration::seconds(1));
        assert!(here.closed.try_recv().is_err());
        assert!(c.is_live_here(&ident("d")));
        let t1 = t0 + chrono::Duration::seconds(1);
        c.connected_elsewhere(ident("d"), "b", "a", t1);
        assert!(here.closed.try_recv().is_ok(), "closed for the newer one");
        assert!(!c.is_live_here(&ident("d")));
        let p = c.presence(&ident("d")).expect("presence");
        assert!(p.connected);
        assert_eq!(p.state_updated, Some(t1));
        // The old connection ending here does not hide the remote one.
        assert!(!c.unregister(&ident("d"), here.id, t1));
        assert!(c.presence(&ident("d")).expect("presence").connected);
        // Another node's disconnect is not this one's.
        let t2 = t1 + chrono::Duration::seconds(1);
        c.disconnected_elsewhere(&ident("d"), "c", t2);
        assert!(c.presence(&ident("d")).expect("presence").connected);
        c.disconnected_elsewhere(&ident("d"), "b", t2);
        let p = c.presence(&ident("d")).expect("presence");
        assert!(!p.connected);
        assert_eq!(p.state_updated, Some(t2));
    }

    #[test]
    fn https_activity_without_a_connection_is_recorded() {
        let c = Connections::default();
        let t0 = Utc::now();
        c.touch(&ident("h"), t0);
        let p = c.presence(&ident("h")).expect("presence");
        assert!(!p.connected);
        assert_eq!(p.state_updated, None, "it never connected");
        assert_eq!(p.last_activity, t0);
        // An older time does not move it back.
        c.touch(&ident("h"), t0 - chrono::Duration::seconds(1));
        assert_eq!(c.presence(&ident("h")).expect("presence").last_activity, t0);
    }

    #[test]
    fn closing_all_closes_every_live_connection() {
        let c = Connections::default();
        let now = Utc::now();
        let mut a = c.register(ident("a"), now);
        let mut b = c.register(ident("b"), now);
        assert_eq!(c.close_all("fenced"), 2);
        assert_eq!(a.closed.try_recv().ok().as_deref(), Some("fenced"));
        assert_eq!(b.closed.try_recv().ok().as_deref(), Some("fenced"));
        assert!(!c.is_live_here(&ident("a")));
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
