//! When a cluster node cut off from its engines stops serving devices.
//!
//! A node that cannot reach NATS cannot make a message durable, and one that cannot reach
//! PostgreSQL cannot check or change the registry; its devices are better served by another
//! node. [`Fence`] decides, from observations of the engines' health and the time (given, not
//! read: it does no I/O), when the node **fences** itself — it refuses new device connections
//! and closes the ones it holds, so the devices reconnect through the balancer to healthy
//! nodes — and when it opens again. An engine must have been unreachable for its whole grace
//! period before the node fences: a NATS leader election or a dropped connection that comes
//! back at once changes nothing.
//!
//! PostgreSQL has a longer grace by default: when the database itself is down, every node
//! loses it at once and fencing would move nothing, while connected devices can still send
//! telemetry (JetStream keeps it).

use std::time::{Duration, Instant};

/// How long each engine may be unreachable before the node fences itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FenceSettings {
    /// Grace for NATS (default 5 s).
    pub nats_grace: Duration,
    /// Grace for PostgreSQL (default 30 s).
    pub postgres_grace: Duration,
}

/// The default grace for NATS.
pub const DEFAULT_NATS_GRACE: Duration = Duration::from_secs(5);
/// The default grace for PostgreSQL.
pub const DEFAULT_POSTGRES_GRACE: Duration = Duration::from_secs(30);

impl Default for FenceSettings {
    fn default() -> Self {
        FenceSettings {
            nats_grace: DEFAULT_NATS_GRACE,
            postgres_grace: DEFAULT_POSTGRES_GRACE,
        }
    }
}

/// What the node observed of its engines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineHealth {
    /// Whether NATS (the event log and the node-to-node channel) is reachable.
    pub nats: bool,
    /// Whether PostgreSQL is reachable.
    pub postgres: bool,
}

/// A change of the fence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FenceChange {
    /// The node fenced itself, for this reason.
    Fenced(String),
    /// The engines are back: the node accepts devices again.
    Reopened,
}

/// The fence's state machine. See the module documentation.
#[derive(Debug)]
pub struct Fence {
    settings: FenceSettings,
    nats_down_since: Option<Instant>,
    postgres_down_since: Option<Instant>,
    fenced: Option<String>,
}

impl Fence {
    /// An open fence.
    pub fn new(settings: FenceSettings) -> Self {
        Fence {
            settings,
            nats_down_since: None,
            postgres_down_since: None,
            fenced: None,
        }
    }

    /// Takes an observation made at `now`; returns the change it causes, if any.
    pub fn observe(&mut self, now: Instant, health: EngineHealth) -> Option<FenceChange> {
        track(&mut self.nats_down_since, health.nats, now);
        track(&mut self.postgres_down_since, health.postgres, now);
        let over = |since: Option<Instant>, grace: Duration| {
            since.is_some_and(|s| now.saturating_duration_since(s) >= grace)
        };
        let why = if over(self.nats_down_since, self.settings.nats_grace) {
            Some(format!(
                "NATS has been unreachable for more than {} ms",
                self.settings.nats_grace.as_millis()
            ))
        } else if over(self.postgres_down_since, self.settings.postgres_grace) {
            Some(format!(
                "PostgreSQL has been unreachable for more than {} ms",
                self.settings.postgres_grace.as_millis()
            ))
        } else {
            None
        };
        match (why, self.fenced.is_some()) {
            (Some(why), false) => {
                self.fenced = Some(why.clone());
                Some(FenceChange::Fenced(why))
            }
            (None, true) if health.nats && health.postgres => {
                self.fenced = None;
                Some(FenceChange::Reopened)
            }
            _ => None,
        }
    }

    /// Why the node is fenced, when it is.
    pub fn fenced(&self) -> Option<&str> {
        self.fenced.as_deref()
    }
}

fn track(down_since: &mut Option<Instant>, up: bool, now: Instant) {
    if up {
        *down_since = None;
    } else if down_since.is_none() {
        *down_since = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UP: EngineHealth = EngineHealth {
        nats: true,
        postgres: true,
    };
    const NO_NATS: EngineHealth = EngineHealth {
        nats: false,
        postgres: true,
    };
    const NO_PG: EngineHealth = EngineHealth {
        nats: true,
        postgres: false,
    };

    fn fence() -> Fence {
        Fence::new(FenceSettings {
            nats_grace: Duration::from_secs(5),
            postgres_grace: Duration::from_secs(30),
        })
    }

    #[test]
    fn fences_only_after_the_whole_grace_and_reopens_when_back() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut f = fence();
        assert_eq!(f.observe(t0, UP), None);
        assert_eq!(f.observe(t0 + s(1), NO_NATS), None);
        assert_eq!(
            f.observe(t0 + s(5), NO_NATS),
            None,
            "4 s down: within grace"
        );
        assert!(f.fenced().is_none());
        match f.observe(t0 + s(6), NO_NATS) {
            Some(FenceChange::Fenced(why)) => assert!(why.contains("NATS"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(f.observe(t0 + s(7), NO_NATS), None, "told once");
        assert!(f.fenced().is_some());
        assert_eq!(f.observe(t0 + s(8), UP), Some(FenceChange::Reopened));
        assert!(f.fenced().is_none());
        assert_eq!(f.observe(t0 + s(9), UP), None);
    }

    #[test]
    fn an_outage_shorter_than_the_grace_starts_over() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut f = fence();
        assert_eq!(f.observe(t0, NO_NATS), None);
        assert_eq!(f.observe(t0 + s(4), UP), None);
        assert_eq!(f.observe(t0 + s(5), NO_NATS), None);
        assert_eq!(
            f.observe(t0 + s(9), NO_NATS),
            None,
            "a new outage, 4 s long"
        );
        assert!(matches!(
            f.observe(t0 + s(10), NO_NATS),
            Some(FenceChange::Fenced(_))
        ));
    }

    #[test]
    fn postgres_has_its_own_grace_and_both_must_be_back() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut f = fence();
        assert_eq!(f.observe(t0, NO_PG), None);
        assert_eq!(f.observe(t0 + s(29), NO_PG), None);
        match f.observe(t0 + s(30), NO_PG) {
            Some(FenceChange::Fenced(why)) => assert!(why.contains("PostgreSQL"), "{why}"),
            other => panic!("{other:?}"),
        }
        // NATS goes too, then PostgreSQL comes back: still fenced while NATS is away.
        let both_down = EngineHealth {
            nats: false,
            postgres: false,
        };
        assert_eq!(f.observe(t0 + s(31), both_down), None);
        assert_eq!(f.observe(t0 + s(32), NO_NATS), None);
        assert!(f.fenced().is_some());
        assert_eq!(f.observe(t0 + s(33), UP), Some(FenceChange::Reopened));
    }
}
