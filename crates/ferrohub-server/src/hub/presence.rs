//! Presence as the registry API shows it (`connectionState`, `connectionStateUpdatedTime`,
//! `lastActivityTime`), and the fence of a cluster node cut off from its engines.
//!
//! * Embedded: presence is this process's ([`crate::connections`]).
//! * Cluster: every node reads presence from the shared store, so whichever node serves a GET,
//!   a twin, a query or a list answers the same; the node holding a connection writes it there
//!   through a [`Coalescer`] (see [`crate::presence`]) from [`run_presence_flusher`].
//!
//! [`run_fence`] watches the engines' health and applies the decisions of
//! [`crate::fence::Fence`]: closing every device connection when the node fences itself, and
//! refusing new ones ([`Hub::admit_devices`]) until it opens again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use ferrohub_types::ErrorCode;
use tokio::sync::Notify;

use super::{Hub, HubError};
use crate::connections::{Identity, Presence};
use crate::fence::{EngineHealth, Fence, FenceChange, FenceSettings};
use crate::presence::{Coalescer, PresenceKey, PresenceStore, StoredPresence};

/// How often the fence looks at the engines.
const FENCE_CHECK: Duration = Duration::from_millis(250);
/// How often a node tells the others it is alive.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// How long to wait before writing again after a failed write.
const RETRY: Duration = Duration::from_secs(1);

/// The reason a fenced node gives when it closes a device's connection.
pub(crate) const FENCED_CLOSE: &str = "the node lost its engines and closes its device connections";

/// The cluster's presence store and what waits to be written to it.
pub(crate) struct SharedPresence {
    store: Arc<dyn PresenceStore>,
    coalescer: Mutex<Coalescer>,
    wake: Notify,
}

impl SharedPresence {
    pub(crate) fn new(store: Arc<dyn PresenceStore>, interval: Duration) -> Self {
        SharedPresence {
            store,
            coalescer: Mutex::new(Coalescer::new(interval)),
            wake: Notify::new(),
        }
    }

    fn coalescer(&self) -> std::sync::MutexGuard<'_, Coalescer> {
        self.coalescer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Whether the node is fenced, readable without a lock on every connect.
pub(crate) struct FenceState {
    settings: Option<FenceSettings>,
    fenced: AtomicBool,
    reason: Mutex<Option<String>>,
}

impl FenceState {
    pub(crate) fn new(settings: Option<FenceSettings>) -> Self {
        FenceState {
            settings,
            fenced: AtomicBool::new(false),
            reason: Mutex::new(None),
        }
    }

    /// Why the node is fenced, when it is.
    pub(crate) fn reason(&self) -> Option<String> {
        if !self.fenced.load(Ordering::Acquire) {
            return None;
        }
        self.reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set(&self, reason: Option<String>) {
        let fenced = reason.is_some();
        *self.reason.lock().unwrap_or_else(PoisonError::into_inner) = reason;
        self.fenced.store(fenced, Ordering::Release);
    }
}

fn key(identity: &Identity) -> PresenceKey {
    (
        identity.0.to_string(),
        identity.1.as_ref().map(ToString::to_string),
    )
}

fn from_stored(p: StoredPresence) -> Presence {
    Presence {
        connected: p.connected,
        state_updated: p.state_updated,
        last_activity: p.last_activity,
    }
}

impl Hub {
    /// Records activity (a message sent or received) of `identity` at `now`.
    pub(crate) fn touch(&self, identity: &Identity, now: DateTime<Utc>) {
        self.connections.touch(identity, now);
        if let Some(shared) = &self.shared_presence
            && shared.coalescer().activity(key(identity), now)
        {
            shared.wake.notify_one();
        }
    }

    pub(super) fn presence_connected(&self, identity: &Identity, now: DateTime<Utc>) {
        if let Some(shared) = &self.shared_presence {
            shared
                .coalescer()
                .connected(key(identity), self.coordinator.node(), now);
            shared.wake.notify_one();
        }
    }

    pub(super) fn presence_disconnected(&self, identity: &Identity, now: DateTime<Utc>) {
        if let Some(shared) = &self.shared_presence {
            shared
                .coalescer()
                .disconnected(key(identity), self.coordinator.node(), now);
            shared.wake.notify_one();
        }
    }

    /// Forgets the presence of a deleted device and its modules.
    pub(crate) fn forget_presence(self: &Arc<Self>, device: &ferrohub_types::DeviceId) {
        if let Some(shared) = &self.shared_presence {
            shared.coalescer().forget(device.as_str());
            let hub = self.clone();
            let device = device.to_string();
            tokio::spawn(async move {
                if let Some(shared) = &hub.shared_presence
                    && let Err(e) = shared.store.forget(device).await
                {
                    tracing::warn!(error = %e, "forgetting a deleted device's presence failed");
                }
            });
        }
    }

    /// The presence of `identity` as the registry API shows it: the cluster's when there is
    /// one (this node's own when the store cannot be read), else this node's.
    pub(crate) async fn presence_of(&self, identity: &Identity) -> Option<Presence> {
        self.presences(std::slice::from_ref(identity))
            .await
            .pop()
            .flatten()
    }

    /// [`Hub::presence_of`] for many identities at once (one read of the store).
    pub(crate) async fn presences(&self, identities: &[Identity]) -> Vec<Option<Presence>> {
        // Without PostgreSQL, this node's own view at once rather than after a time limit.
        if let Some(shared) = self
            .shared_presence
            .as_ref()
            .filter(|_| self.coordinator.engines().postgres)
        {
            match shared
                .store
                .read(identities.iter().map(key).collect())
                .await
            {
                Ok(stored) if stored.len() == identities.len() => {
                    return stored.into_iter().map(|p| p.map(from_stored)).collect();
                }
                Ok(_) => tracing::warn!("the presence store answered for other identities"),
                Err(e) => {
                    tracing::debug!(error = %e, "reading the cluster's presence failed; showing this node's");
                }
            }
        }
        identities
            .iter()
            .map(|i| self.connections.presence(i))
            .collect()
    }

    /// How many devices are connected: to any node of a cluster.
    pub(crate) async fn connected_devices(&self) -> u64 {
        if let Some(shared) = &self.shared_presence {
            match shared.store.connected_devices().await {
                Ok(n) => return n,
                Err(e) => {
                    tracing::debug!(error = %e, "counting the cluster's connected devices failed")
                }
            }
        }
        self.connections.connected_devices()
    }

    /// `Ok` when the node accepts devices; 503 ServiceUnavailable while it is fenced.
    pub(crate) fn admit_devices(&self) -> Result<(), HubError> {
        match self.fence.reason() {
            None => Ok(()),
            Some(why) => Err(HubError::new(
                ErrorCode::ServiceUnavailable,
                format!("This node cannot serve devices now ({why}); retry later."),
            )),
        }
    }

    /// Writes what is due of the presence now; returns whether the write failed.
    pub(crate) async fn flush_presence(&self) -> bool {
        let Some(shared) = &self.shared_presence else {
            return false;
        };
        let due = shared.coalescer().due(self.now());
        if due.is_empty() {
            return false;
        }
        let n = due.len();
        match shared.store.write(due.clone()).await {
            Ok(()) => {
                metrics::counter!("ferrohub_presence_writes_total").increment(n as u64);
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, identities = n, "writing presence failed; retrying");
                shared.coalescer().requeue(due);
                true
            }
        }
    }
}

/// Writes presence to the cluster's store as it comes due, and the node's heartbeat, until
/// the task is aborted. Does nothing for the embedded hub.
pub(crate) async fn run_presence_flusher(hub: Arc<Hub>) {
    let Some(shared) = &hub.shared_presence else {
        return;
    };
    let mut next_heartbeat = tokio::time::Instant::now();
    loop {
        let now = tokio::time::Instant::now();
        if now >= next_heartbeat {
            if let Err(e) = shared.store.heartbeat().await {
                tracing::debug!(error = %e, "the node's heartbeat failed");
            }
            next_heartbeat = now + HEARTBEAT;
        }
        let failed = hub.flush_presence().await;
        let wait = if failed {
            RETRY
        } else {
            let due = shared.coalescer().next_due();
            due.map_or(HEARTBEAT, |d| {
                (d - hub.now()).to_std().unwrap_or(Duration::ZERO)
            })
        };
        let until = (tokio::time::Instant::now() + wait).min(next_heartbeat);
        tokio::select! {
            () = tokio::time::sleep_until(until) => {}
            () = shared.wake.notified(), if !failed => {}
        }
    }
}

/// Watches the engines and fences the node off from devices while they are unreachable for
/// longer than their grace, until the task is aborted. Does nothing without fence settings
/// (the embedded hub).
pub(crate) async fn run_fence(hub: Arc<Hub>) {
    let Some(settings) = hub.fence.settings else {
        return;
    };
    let mut fence = Fence::new(settings);
    let mut tick = tokio::time::interval(FENCE_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let engines = hub.coordinator.engines();
        let health = EngineHealth {
            nats: engines.nats && hub.events.health().is_ok(),
            postgres: engines.postgres,
        };
        match fence.observe(std::time::Instant::now(), health) {
            Some(FenceChange::Fenced(why)) => {
                hub.fence.set(Some(why.clone()));
                let closed = hub.connections.close_all(FENCED_CLOSE);
                metrics::counter!("ferrohub_node_fenced_total").increment(1);
                tracing::error!(reason = %why, closed, "fenced: refusing devices and closing their connections until the engines are back");
            }
            Some(FenceChange::Reopened) => {
                hub.fence.set(None);
                tracing::info!("the engines are back: accepting devices again");
            }
            None => {}
        }
        // Connections that slipped in while the decision was being made are closed too.
        if fence.fenced().is_some() {
            hub.connections.close_all(FENCED_CLOSE);
        }
    }
}
