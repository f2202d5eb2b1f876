//! Rate limits: a token bucket, with the rule Azure follows for throttling — shape first (the
//! device is slowed down: the hub stops reading, so PUBACKs come later), disconnect when the
//! device keeps sending beyond its rate for longer than the allowed backlog.
//!
//! A message costs [`units`] tokens: Azure meters device-to-cloud traffic in 4 KB units, so a
//! device sending large messages spends its budget in proportion to what it writes.
//!
//! Pure: every call takes `now`, so the rules are tested without sleeping.

use std::time::{Duration, Instant};

/// Azure's metering unit for device-to-cloud messages.
pub(crate) const UNIT_BYTES: usize = 4 * 1024;

/// The units a message of `bytes` costs: one per started 4 KB, at least one.
pub(crate) fn units(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(UNIT_BYTES).max(1)).unwrap_or(u32::MAX)
}

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

    /// Sets the most tokens the bucket holds (and holds now).
    pub(crate) fn set_burst(&mut self, burst: u32) {
        self.burst = f64::from(burst.max(1));
        self.tokens = self.burst;
    }

    /// Takes `n` tokens for one message at `now` (a message larger than the burst is let
    /// through once the bucket is full, and then owes the rest).
    pub(crate) fn admit_n(&mut self, n: u32, now: Instant) -> Admission {
        self.refill(now);
        let n = f64::from(n);
        self.tokens -= n;
        if self.tokens >= 0.0 {
            self.shaped_since = None;
            return Admission::Now;
        }
        let since = *self.shaped_since.get_or_insert(now);
        let wait = Duration::from_secs_f64(-self.tokens / self.rate);
        let over_burst = n > self.burst && self.tokens + n >= self.burst;
        if !over_burst
            && (now.saturating_duration_since(since) > self.max_backlog || wait > self.max_backlog)
        {
            // Give the tokens back: the message is not admitted.
            self.tokens += n;
            return Admission::Refuse;
        }
        Admission::After(now + wait)
    }
}

impl TokenBucket {
    /// Takes a token at `now` if one is there; otherwise takes nothing and returns how long
    /// until one will be.
    pub(crate) fn try_take(&mut self, now: Instant) -> Option<Duration> {
        self.try_take_n(1, now)
    }

    /// Takes `n` tokens at `now` if they are there (or, for more than the burst, if the bucket
    /// is full); otherwise takes nothing and returns how long until they will be.
    pub(crate) fn try_take_n(&mut self, n: u32, now: Instant) -> Option<Duration> {
        self.refill(now);
        let need = f64::from(n).min(self.burst);
        if self.tokens >= need {
            self.tokens -= f64::from(n);
            None
        } else {
            Some(Duration::from_secs_f64((need - self.tokens) / self.rate))
        }
    }

    /// Whether the bucket is full at `now`: a fresh bucket would behave the same.
    pub(crate) fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.burst
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.at = now;
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
            assert_eq!(b.admit_n(1, t0), Admission::Now, "the burst");
        }
        // The 11th waits a tenth of a second, the 20th a whole second.
        assert_eq!(
            b.admit_n(1, t0),
            Admission::After(t0 + Duration::from_millis(100))
        );
        for _ in 0..9 {
            assert!(matches!(b.admit_n(1, t0), Admission::After(_)));
        }
        assert_eq!(
            b.admit_n(1, t0),
            Admission::Refuse,
            "more than a second behind"
        );
        // Time pays the debt back.
        let later = t0 + Duration::from_secs(3);
        assert_eq!(b.admit_n(1, later), Admission::Now);
    }

    #[test]
    fn sustained_excess_is_refused() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(2, Duration::from_secs(1), t0);
        assert_eq!(b.admit_n(1, t0), Admission::Now);
        assert_eq!(b.admit_n(1, t0), Admission::Now);
        // A client that sends whenever it is let through stays shaped...
        let mut now = t0;
        let mut outcome = b.admit_n(1, now);
        let mut shaped = 0;
        while let Admission::After(t) = outcome {
            shaped += 1;
            now = t;
            outcome = b.admit_n(1, now);
        }
        // ...and is cut off once that lasted more than the backlog.
        assert_eq!(outcome, Admission::Refuse);
        assert!(now.duration_since(t0) > Duration::from_secs(1));
        assert!(shaped >= 2);
        // A pause resets it.
        let later = now + Duration::from_secs(5);
        assert_eq!(b.admit_n(1, later), Admission::Now);
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
    fn large_messages_cost_units() {
        assert_eq!(units(0), 1);
        assert_eq!(units(4096), 1);
        assert_eq!(units(4097), 2);
        assert_eq!(units(256 * 1024), 64);
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100, Duration::from_secs(1), t0);
        // One 256 KB message takes 64 of the 100 tokens; the next one must wait.
        assert_eq!(b.admit_n(64, t0), Admission::Now);
        assert!(matches!(b.admit_n(64, t0), Admission::After(_)));
        // A message bigger than the whole burst still goes through from a full bucket.
        let mut small = TokenBucket::new(10, Duration::from_secs(1), t0);
        assert_eq!(small.try_take_n(64, t0), None);
        assert!(small.try_take_n(1, t0).is_some(), "and the debt is owed");
        assert!(!small.is_full(t0));
        assert!(small.is_full(t0 + Duration::from_secs(10)));
    }

    #[test]
    fn steady_rate_is_never_shaped() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100, Duration::from_secs(10), t0);
        for i in 0..1000u64 {
            let now = t0 + Duration::from_millis(10 * i);
            assert_eq!(b.admit_n(1, now), Admission::Now, "message {i}");
        }
    }
}
