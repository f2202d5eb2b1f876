//! Every identity's budgets: telemetry in Azure's 4 KB units, and new connections; plus the
//! hub-wide connection rate.
//!
//! The budgets belong to the identity, not to a connection: a device that reconnects keeps what
//! it owes, so reconnecting is no way around its rate, and one budget covers all its protocols
//! (MQTT, AMQP, HTTPS). A connection holds its identity's [`Metered`] handle for its lifetime, so
//! admitting a message costs one uncontended lock, not a map lookup.
//!
//! Entries of identities that went quiet are forgotten once their buckets are full again (a fresh
//! bucket behaves the same), so the map holds the identities active lately, never more than the
//! registry holds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::HubLimits;
use crate::connections::Identity;
use crate::limits::{Admission, TokenBucket, units};

/// Identities kept before quiet ones are swept, at least.
const MIN_SWEEP_AT: usize = 1024;

/// The budgets of every identity.
pub(crate) struct Budgets {
    message_rate: u32,
    max_backlog: Duration,
    connect_rate: u32,
    messages: Mutex<Table>,
    connects: Mutex<HashMap<Identity, TokenBucket>>,
    hub_connects: Mutex<TokenBucket>,
}

struct Table {
    entries: HashMap<Identity, Arc<Mutex<TokenBucket>>>,
    /// Sweep quiet entries when the table grows to this size.
    sweep_at: usize,
}

/// One identity's telemetry budget, shared by its connections over time.
#[derive(Clone)]
pub(crate) struct Metered(Arc<Mutex<TokenBucket>>);

impl Metered {
    /// Admits a message of `bytes` under shaping rules (connections: wait, or disconnect when
    /// too far behind).
    pub(crate) fn admit(&self, bytes: usize, now: Instant) -> Admission {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .admit_n(units(bytes), now)
    }

    /// Admits messages of `bytes` in all if the budget has them now; otherwise takes nothing
    /// and says how long to wait (requests without a connection to slow down: HTTPS).
    pub(crate) fn try_admit(&self, bytes: usize, count: usize, now: Instant) -> Option<Duration> {
        let cost = units(bytes).max(u32::try_from(count).unwrap_or(u32::MAX));
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .try_take_n(cost, now)
    }
}

impl Budgets {
    /// Budgets with `limits`' rates.
    pub(crate) fn new(limits: &HubLimits, now: Instant) -> Self {
        Budgets {
            message_rate: limits.device_messages_per_second,
            max_backlog: limits.max_throttle_backlog,
            connect_rate: limits.device_connects_per_second,
            messages: Mutex::new(Table {
                entries: HashMap::new(),
                sweep_at: MIN_SWEEP_AT,
            }),
            connects: Mutex::new(HashMap::new()),
            hub_connects: Mutex::new(TokenBucket::new(
                limits.hub_connects_per_second,
                Duration::ZERO,
                now,
            )),
        }
    }

    /// The telemetry budget of `identity`.
    pub(crate) fn messages(&self, identity: &Identity, now: Instant) -> Metered {
        let mut table = self.messages.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(b) = table.entries.get(identity) {
            return Metered(b.clone());
        }
        if table.entries.len() >= table.sweep_at {
            // Forget identities nobody holds whose bucket has refilled.
            table.entries.retain(|_, b| {
                Arc::strong_count(b) > 1
                    || !b
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .is_full(now)
            });
            table.sweep_at = (table.entries.len() * 2).max(MIN_SWEEP_AT);
        }
        let bucket = Arc::new(Mutex::new(TokenBucket::new(
            self.message_rate,
            self.max_backlog,
            now,
        )));
        table.entries.insert(identity.clone(), bucket.clone());
        Metered(bucket)
    }

    /// Admits a new connection of `identity` under its own and the hub's connection rates, or
    /// says how long to wait.
    pub(crate) fn admit_connect(&self, identity: &Identity, now: Instant) -> Result<(), Duration> {
        {
            let mut connects = self.connects.lock().unwrap_or_else(PoisonError::into_inner);
            if connects.len() >= MIN_SWEEP_AT && !connects.contains_key(identity) {
                connects.retain(|_, b| !b.is_full(now));
            }
            let bucket = connects.entry(identity.clone()).or_insert_with(|| {
                // A burst of ten, so a device reconnecting after a network blip or a takeover
                // is never held up; a device reconnecting in a loop is.
                let mut b = TokenBucket::new(self.connect_rate, Duration::ZERO, now);
                b.set_burst(self.connect_rate.max(10));
                b
            });
            if let Some(wait) = bucket.try_take(now) {
                return Err(wait);
            }
        }
        let mut hub = self
            .hub_connects
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match hub.try_take(now) {
            None => Ok(()),
            Some(wait) => Err(wait),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrohub_types::DeviceId;

    fn limits(rate: u32, connects: u32, hub_connects: u32) -> HubLimits {
        HubLimits {
            max_connections: 100,
            device_messages_per_second: rate,
            device_connects_per_second: connects,
            hub_connects_per_second: hub_connects,
            max_throttle_backlog: Duration::from_secs(1),
        }
    }

    fn ident(d: &str) -> Identity {
        (DeviceId::new(d).expect("id"), None)
    }

    #[test]
    fn the_budget_outlives_a_connection() {
        let t0 = Instant::now();
        let b = Budgets::new(&limits(10, 1, 1000), t0);
        let first = b.messages(&ident("d"), t0);
        for _ in 0..10 {
            assert_eq!(first.admit(100, t0), Admission::Now);
        }
        drop(first);
        // A new connection of the same device finds the bucket empty.
        let second = b.messages(&ident("d"), t0);
        assert!(matches!(second.admit(100, t0), Admission::After(_)));
        // Another device has its own.
        assert_eq!(b.messages(&ident("e"), t0).admit(100, t0), Admission::Now);
    }

    #[test]
    fn bytes_are_metered_in_units() {
        let t0 = Instant::now();
        let b = Budgets::new(&limits(100, 1, 1000), t0);
        let m = b.messages(&ident("d"), t0);
        assert_eq!(m.try_admit(250 * 1024, 1, t0), None, "63 units of 100");
        assert!(m.try_admit(250 * 1024, 1, t0).is_some(), "only 37 left");
        assert_eq!(
            m.try_admit(100, 30, t0),
            None,
            "a batch of 30 small messages"
        );
    }

    #[test]
    fn connects_are_throttled_per_identity() {
        let t0 = Instant::now();
        let b = Budgets::new(&limits(100, 1, 1000), t0);
        for _ in 0..10 {
            assert_eq!(b.admit_connect(&ident("d"), t0), Ok(()), "a burst of ten");
        }
        let wait = b.admit_connect(&ident("d"), t0).expect_err("throttled");
        assert!(wait <= Duration::from_secs(1));
        assert_eq!(b.admit_connect(&ident("e"), t0), Ok(()), "another device");
        assert_eq!(b.admit_connect(&ident("d"), t0 + wait), Ok(()));
    }

    #[test]
    fn connects_are_throttled_per_hub() {
        let t0 = Instant::now();
        let b = Budgets::new(&limits(100, 1, 15), t0);
        for i in 0..15 {
            assert_eq!(b.admit_connect(&ident(&format!("d{i}")), t0), Ok(()));
        }
        assert!(b.admit_connect(&ident("late"), t0).is_err());
        assert!(
            b.admit_connect(&ident("late"), t0 + Duration::from_secs(1))
                .is_ok()
        );
    }

    #[test]
    fn quiet_identities_are_forgotten() {
        let t0 = Instant::now();
        let b = Budgets::new(&limits(10, 1, 1_000_000), t0);
        // Held by a live connection, and owing: kept.
        let held = b.messages(&ident("held"), t0);
        let _ = held.admit(100, t0);
        // Not held, but owing: kept until its bucket refills.
        let _ = b.messages(&ident("owing"), t0).admit(100, t0);
        // Not held, full: forgotten at the next sweep.
        for i in 0..MIN_SWEEP_AT {
            let _ = b.messages(&ident(&format!("d{i}")), t0);
        }
        let table = b.messages.lock().expect("lock");
        assert!(table.entries.len() < 10, "{} entries", table.entries.len());
        assert!(table.entries.contains_key(&ident("held")));
        assert!(table.entries.contains_key(&ident("owing")));
    }
}
