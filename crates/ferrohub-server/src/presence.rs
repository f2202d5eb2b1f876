//! Presence the nodes of a cluster share: `connectionState`, `connectionStateUpdatedTime` and
//! `lastActivityTime` of every identity, whichever node holds its connection or serves the
//! request that shows them.
//!
//! The node that holds a connection knows its presence first (in [`crate::connections`]); it
//! tells a [`PresenceStore`] (the cluster's, in PostgreSQL) through a [`Coalescer`], so that a
//! device sending many messages costs one write per interval, not one per message:
//!
//! * a connect or a disconnect is written at the next flush, at once;
//! * activity (a message sent or received) is written at most once per interval per identity;
//!   the activity of a connection that ends goes with its disconnect, so the final
//!   `lastActivityTime` is never lost to the coalescing.
//!
//! Every node reads presence from the store, so all nodes answer the same. The embedded hub has
//! no store: its in-memory presence is the whole truth.
//!
//! The coalescer is sans-IO: it takes the time as a parameter and says what to write when; the
//! hub's flusher task does the writing.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::cluster::BoxFuture;

/// An identity as the store knows it: the device, and the module for a module identity.
pub type PresenceKey = (String, Option<String>);

/// A change of an identity's connection state, as one node saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateChange {
    /// Whether the identity is connected after the change.
    pub connected: bool,
    /// The node that holds (or held) the connection.
    pub node: String,
    /// When the change happened.
    pub at: DateTime<Utc>,
    /// Whether the change includes a connect on `node`: it may then take the identity over
    /// from another node whose state is older. A disconnect alone only ends `node`'s own
    /// connection, never a newer one on another node.
    pub claims: bool,
}

/// What to write for one identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceUpdate {
    /// The identity.
    pub key: PresenceKey,
    /// Its latest connection state change, if it changed.
    pub state: Option<StateChange>,
    /// Its latest activity; the store keeps the later of this and what it holds.
    pub last_activity: DateTime<Utc>,
}

/// What a store holds of an identity's presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredPresence {
    /// Whether a connection is live (on a node that is alive).
    pub connected: bool,
    /// When it connected or disconnected last, if it ever connected.
    pub state_updated: Option<DateTime<Utc>>,
    /// When it last connected, sent or received.
    pub last_activity: DateTime<Utc>,
}

/// Where the nodes of a cluster keep presence.
pub trait PresenceStore: Send + Sync + 'static {
    /// Writes `updates` (one per identity).
    fn write(&self, updates: Vec<PresenceUpdate>) -> BoxFuture<'_, Result<(), String>>;

    /// The presence of each of `keys`, in order (`None`: never seen).
    fn read(
        &self,
        keys: Vec<PresenceKey>,
    ) -> BoxFuture<'_, Result<Vec<Option<StoredPresence>>, String>>;

    /// Tells the other nodes this node is alive; the connections of a node that stopped saying
    /// so read as disconnected.
    fn heartbeat(&self) -> BoxFuture<'_, Result<(), String>>;

    /// Forgets the presence of `device` and its modules (the device was deleted).
    fn forget(&self, device: String) -> BoxFuture<'_, Result<(), String>>;

    /// How many devices (not modules) are connected to live nodes.
    fn connected_devices(&self) -> BoxFuture<'_, Result<u64, String>>;
}

/// The default interval between two activity writes of one identity.
pub const DEFAULT_PRESENCE_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
struct Pending {
    state: Option<StateChange>,
    last_activity: Option<DateTime<Utc>>,
}

/// Coalesces presence changes into writes: see the module documentation.
#[derive(Debug)]
pub struct Coalescer {
    interval: chrono::Duration,
    pending: HashMap<PresenceKey, Pending>,
    /// When each identity's activity was last handed out for writing (within the interval).
    written: HashMap<PresenceKey, DateTime<Utc>>,
}

impl Coalescer {
    /// A coalescer writing an identity's activity at most once per `interval`.
    pub fn new(interval: Duration) -> Self {
        Coalescer {
            interval: chrono::Duration::from_std(interval).unwrap_or(chrono::Duration::MAX),
            pending: HashMap::new(),
            written: HashMap::new(),
        }
    }

    /// `key` connected to `node` at `now`. Returns whether a flush is due now.
    pub fn connected(&mut self, key: PresenceKey, node: &str, now: DateTime<Utc>) -> bool {
        let p = self.pending.entry(key).or_default();
        p.state = Some(StateChange {
            connected: true,
            node: node.to_owned(),
            at: now,
            claims: true,
        });
        p.last_activity = Some(p.last_activity.map_or(now, |t| t.max(now)));
        true
    }

    /// `key`'s connection to `node` ended at `now`. Returns whether a flush is due now.
    pub fn disconnected(&mut self, key: PresenceKey, node: &str, now: DateTime<Utc>) -> bool {
        let p = self.pending.entry(key).or_default();
        // A connect not written yet is written with the disconnect: the node still claims the
        // identity, so an older state elsewhere does not survive.
        let claims = p.state.as_ref().is_some_and(|s| s.claims && s.node == node);
        p.state = Some(StateChange {
            connected: false,
            node: node.to_owned(),
            at: now,
            claims,
        });
        p.last_activity = Some(p.last_activity.map_or(now, |t| t.max(now)));
        true
    }

    /// `key` sent or received something at `now`. Returns whether the flusher should look
    /// again at when its next write is due (a new identity is waiting).
    pub fn activity(&mut self, key: PresenceKey, now: DateTime<Utc>) -> bool {
        match self.pending.get_mut(&key) {
            Some(p) => {
                p.last_activity = Some(p.last_activity.map_or(now, |t| t.max(now)));
                false
            }
            None => {
                self.pending.insert(
                    key,
                    Pending {
                        state: None,
                        last_activity: Some(now),
                    },
                );
                true
            }
        }
    }

    /// Forgets what waits for `device` and its modules (the device was deleted).
    pub fn forget(&mut self, device: &str) {
        self.pending.retain(|(d, _), _| d != device);
        self.written.retain(|(d, _), _| d != device);
    }

    /// When the next write is due: `None` when nothing waits.
    pub fn next_due(&self) -> Option<DateTime<Utc>> {
        self.pending
            .iter()
            .map(|(key, p)| self.due_at(key, p))
            .min()
    }

    fn due_at(&self, key: &PresenceKey, p: &Pending) -> DateTime<Utc> {
        if p.state.is_some() {
            return DateTime::<Utc>::MIN_UTC;
        }
        match self.written.get(key) {
            Some(t) => t.checked_add_signed(self.interval).unwrap_or(*t),
            None => DateTime::<Utc>::MIN_UTC,
        }
    }

    /// The updates due at `now`, taken out: state changes always, activity of identities not
    /// written within the interval.
    pub fn due(&mut self, now: DateTime<Utc>) -> Vec<PresenceUpdate> {
        let interval = self.interval;
        self.written
            .retain(|_, t| t.checked_add_signed(interval).is_some_and(|d| d > now));
        let keys: Vec<PresenceKey> = self
            .pending
            .iter()
            .filter(|(key, p)| self.due_at(key, p) <= now)
            .map(|(key, _)| key.clone())
            .collect();
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let Some(p) = self.pending.remove(&key) else {
                continue;
            };
            let last_activity = match (p.last_activity, &p.state) {
                (Some(t), _) => t,
                (None, Some(s)) => s.at,
                (None, None) => continue,
            };
            self.written.insert(key.clone(), now);
            out.push(PresenceUpdate {
                key,
                state: p.state,
                last_activity,
            });
        }
        out
    }

    /// Puts back updates whose write failed, under what arrived since (which is newer).
    pub fn requeue(&mut self, updates: Vec<PresenceUpdate>) {
        for u in updates {
            // It was not written after all: due again at once.
            self.written.remove(&u.key);
            let p = self.pending.entry(u.key).or_default();
            p.last_activity = Some(
                p.last_activity
                    .map_or(u.last_activity, |t| t.max(u.last_activity)),
            );
            match (&mut p.state, u.state) {
                (None, s) => p.state = s,
                (Some(newer), Some(older)) => {
                    // A failed connect by the same node still claims the identity.
                    if older.claims && older.node == newer.node {
                        newer.claims = true;
                    }
                }
                (Some(_), None) => {}
            }
        }
    }

    /// How many identities wait to be written.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(d: &str) -> PresenceKey {
        (d.to_owned(), None)
    }

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_700_000_000 + secs, 0).expect("time")
    }

    #[test]
    fn activity_is_written_at_most_once_per_interval() {
        let mut c = Coalescer::new(Duration::from_secs(10));
        assert!(
            c.activity(key("d"), t(0)),
            "a new identity wakes the flusher"
        );
        assert_eq!(c.next_due(), Some(DateTime::<Utc>::MIN_UTC));
        let first = c.due(t(0));
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].last_activity, t(0));
        assert_eq!(first[0].state, None);

        // Many messages within the interval: one write, at its end, with the latest time.
        assert!(c.activity(key("d"), t(1)));
        for s in 2..9 {
            assert!(!c.activity(key("d"), t(s)));
        }
        assert_eq!(c.next_due(), Some(t(10)));
        assert!(c.due(t(9)).is_empty(), "not before the interval is over");
        let second = c.due(t(10));
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].last_activity, t(8));
        assert!(c.is_empty());
        assert_eq!(c.next_due(), None);

        // After a quiet interval, activity is written at once again.
        c.activity(key("d"), t(30));
        assert_eq!(c.due(t(30)).len(), 1);
    }

    #[test]
    fn connects_and_disconnects_are_due_at_once_with_the_last_activity() {
        let mut c = Coalescer::new(Duration::from_secs(10));
        c.connected(key("d"), "a", t(0));
        let up = c.due(t(0));
        assert_eq!(up.len(), 1);
        let s = up[0].state.clone().expect("state");
        assert!(s.connected && s.claims);
        assert_eq!((s.node.as_str(), s.at), ("a", t(0)));

        c.activity(key("d"), t(1));
        c.activity(key("d"), t(3));
        assert!(c.due(t(3)).is_empty(), "activity waits for the interval");
        // The disconnect does not wait, and carries the final activity time.
        c.disconnected(key("d"), "a", t(4));
        let down = c.due(t(4));
        assert_eq!(down.len(), 1);
        let s = down[0].state.clone().expect("state");
        assert!(
            !s.connected && !s.claims,
            "a disconnect alone claims nothing"
        );
        assert_eq!(down[0].last_activity, t(4));
    }

    #[test]
    fn an_unwritten_connect_makes_its_disconnect_claim() {
        let mut c = Coalescer::new(Duration::from_secs(10));
        c.connected(key("d"), "a", t(0));
        c.disconnected(key("d"), "a", t(1));
        let up = c.due(t(1));
        let s = up[0].state.clone().expect("state");
        assert!(!s.connected);
        assert!(
            s.claims,
            "the connect was never written: the disconnect takes its place"
        );
    }

    #[test]
    fn failed_writes_come_back_under_newer_changes() {
        let mut c = Coalescer::new(Duration::from_secs(10));
        c.connected(key("d"), "a", t(0));
        c.activity(key("e"), t(0));
        let failed = c.due(t(0));
        assert_eq!(failed.len(), 2);
        // Meanwhile the device disconnected.
        c.disconnected(key("d"), "a", t(2));
        c.requeue(failed);
        let mut retry = c.due(t(3));
        retry.sort_by(|a, b| a.key.cmp(&b.key));
        assert_eq!(retry.len(), 2);
        let s = retry[0].state.clone().expect("state");
        assert!(!s.connected && s.claims);
        assert_eq!(s.at, t(2));
        assert_eq!(retry[0].last_activity, t(2));
        assert_eq!(retry[1].key, key("e"));
        assert_eq!(retry[1].last_activity, t(0));
    }

    #[test]
    fn forgetting_a_device_drops_its_modules_too() {
        let mut c = Coalescer::new(Duration::from_secs(10));
        c.activity(key("d"), t(0));
        c.activity(("d".into(), Some("m".into())), t(0));
        c.activity(key("e"), t(0));
        c.forget("d");
        assert_eq!(c.len(), 1);
    }
}
