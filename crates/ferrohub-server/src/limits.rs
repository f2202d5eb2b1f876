//! Rate limits: a token bucket per device connection for telemetry, with the rule Azure follows
//! for throttling — shape first (the device is slowed down: the hub stops reading, so PUBACKs
//! come later), disconnect when the device keeps sending beyond its rate for longer than the
//! allowed backlog.
//!
//! Pure: every call takes `now`, so the rules are tested without sleeping.

use std::time::{Duration, Instant};

/// What a bucket says about one more message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Go ahead.
    Now,
    /// Go ahead, but read nothing more from this device until then.
    After(Instant),
    /// The device is too far beyond its rate: disconnect it.
    Refuse,
}

/// A token bucket: `rate` messages a second, bursts of `rate` (at least one); a device shaped
/// without a break for longer than `max_backlog` is refused.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    rate: f64,
    burst: f64,
    max_backlog: Duration,
    /// Tokens available at `at` (negative: owed).
    tokens: f64,
    at: Instant,
    /// Since when every message has had to wait.
    shaped_since: Option<Instant>,
}

impl TokenBucket {
    /// A full bucket for `rate` messages a second.
    pub(crate) fn new(rate: u32, max_backlog: Duration, now: Instant) -> Self {
        let rate = f64::from(rate.max(1));
        TokenBucket {
            rate,
            burst: rate,
            max_backlog,
            tokens: rate,
            at: now,
            shaped_since: None,
        }
    }

    /// Takes a token for one message at `now`.
    pub(crate) fn admit(&mut self, now: Instant) -> Admission {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.at = now;
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            self.shaped_since = None;
            return Admission::Now;
        }
        let since = *self.shaped_since.get_or_insert(now);
        let wait = Duration::from_secs_f64(-self.tokens / self.rate);
        if now.saturating_duration_since(since) > self.max_backlog || wait > self.max_backlog {
            // Give the token back: the message is not admitted.
            self.tokens += 1.0;
            return Admission::Refuse;
        }
        Admission::After(now + wait)
    }
}

impl TokenBucket {
    /// Takes a token at `now` if one is there; otherwise takes nothing and returns how long
    /// until one will be.
    pub(crate) fn try_take(&mut self, now: Instant) -> Option<Duration> {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            None
        } else {
            Some(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_shapes_then_refuses() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, Duration::from_secs(1), t0);
        for _ in 0..10 {
            assert_eq!(b.admit(t0), Admission::Now, "the burst");
        }
        // The 11th waits a tenth of a second, the 20th a whole second.
        assert_eq!(
            b.admit(t0),
            Admission::After(t0 + Duration::from_millis(100))
        );
        for _ in 0..9 {
            assert!(matches!(b.admit(t0), Admission::After(_)));
        }
        assert_eq!(b.admit(t0), Admission::Refuse, "more than a second behind");
        // Time pays the debt back.
        let later = t0 + Duration::from_secs(3);
        assert_eq!(b.admit(later), Admission::Now);
    }

    #[test]
    fn sustained_excess_is_refused() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(2, Duration::from_secs(1), t0);
        assert_eq!(b.admit(t0), Admission::Now);
        assert_eq!(b.admit(t0), Admission::Now);
        // A client that sends whenever it is let through stays shaped...
        let mut now = t0;
        let mut outcome = b.admit(now);
        let mut shaped = 0;
        while let Admission::After(t) = outcome {
            shaped += 1;
            now = t;
            outcome = b.admit(now);
        }
        // ...and is cut off once that lasted more than the backlog.
        assert_eq!(outcome, Admission::Refuse);
        assert!(now.duration_since(t0) > Duration::from_secs(1));
        assert!(shaped >= 2);
        // A pause resets it.
        let later = now + Duration::from_secs(5);
        assert_eq!(b.admit(later), Admission::Now);
    }

    #[test]
    fn try_take_refuses_without_debt() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(2, Duration::ZERO, t0);
        assert_eq!(b.try_take(t0), None);
        assert_eq!(b.try_take(t0), None);
        let wait = b.try_take(t0).expect("empty");
        assert_eq!(wait, Duration::from_millis(500));
        assert_eq!(b.try_take(t0 + wait), None, "a token after the wait");
    }

    #[test]
    fn steady_rate_is_never_shaped() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100, Duration::from_secs(10), t0);
        for i in 0..1000u64 {
            let now = t0 + Duration::from_millis(10 * i);
            assert_eq!(b.admit(now), Admission::Now, "message {i}");
        }
    }
}
