//! Open-loop pacing: when each message (or connection attempt) is due.
//!
//! A [`Schedule`] spreads a fixed total rate over `senders` senders that interleave evenly:
//! sender `i`'s `k`-th item is due `(i + k × senders) / rate` seconds after the start. Each sender
//! therefore runs at `rate / senders`, and the hub sees one item every `1 / rate` seconds. Items are
//! sent when due whatever happened to earlier ones, so a slow server cannot slow the offered load
//! down (no coordinated omission); latency is then also measured from the due time.

use std::time::Duration;

/// A fixed total rate shared by interleaved senders.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    senders: u64,
    rate: f64,
}

impl Schedule {
    /// `rate` items per second in total over `senders` senders. `None` when `rate` is not a
    /// positive finite number or there are no senders.
    pub fn new(senders: usize, rate: f64) -> Option<Schedule> {
        if senders == 0 || !rate.is_finite() || rate <= 0.0 {
            return None;
        }
        Some(Schedule {
            senders: senders as u64,
            rate,
        })
    }

    /// The total rate, items per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Each sender's own rate, items per second.
    pub fn per_sender_rate(&self) -> f64 {
        self.rate / self.senders as f64
    }

    /// When sender `sender`'s `k`-th item (from 0) is due, from the start.
    pub fn due(&self, sender: usize, k: u64) -> Duration {
        let slot = sender as f64 + k as f64 * self.senders as f64;
        secs_to_duration(slot / self.rate)
    }

    /// How many of sender `sender`'s items are due strictly before `t` from the start.
    pub fn count_before(&self, sender: usize, t: Duration) -> u64 {
        // Items k with (sender + k·senders) / rate < t, i.e. k < (t·rate − sender) / senders.
        let bound = (t.as_secs_f64() * self.rate - sender as f64) / self.senders as f64;
        if bound <= 0.0 {
            return 0;
        }
        let mut n = bound.ceil() as u64;
        // Floating point can land one off at exact boundaries; settle it against `due`.
        for _ in 0..4 {
            if n > 0 && self.due(sender, n - 1) >= t {
                n -= 1;
            } else {
                break;
            }
        }
        for _ in 0..4 {
            if self.due(sender, n) < t {
                n += 1;
            } else {
                break;
            }
        }
        n
    }
}

/// Seconds as a `Duration`, saturating at zero and at about 584 years.
pub fn secs_to_duration(secs: f64) -> Duration {
    if !secs.is_finite() || secs <= 0.0 {
        return Duration::ZERO;
    }
    Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_nonsense() {
        assert!(Schedule::new(0, 10.0).is_none());
        assert!(Schedule::new(1, 0.0).is_none());
        assert!(Schedule::new(1, -5.0).is_none());
        assert!(Schedule::new(1, f64::NAN).is_none());
        assert!(Schedule::new(1, f64::INFINITY).is_none());
    }

    #[test]
    fn senders_interleave_evenly() {
        // 1000/s over 4 senders: one item every millisecond, round robin.
        let s = Schedule::new(4, 1000.0).expect("valid");
        assert_eq!(s.per_sender_rate(), 250.0);
        assert_eq!(s.due(0, 0), Duration::ZERO);
        assert_eq!(s.due(1, 0), Duration::from_millis(1));
        assert_eq!(s.due(3, 0), Duration::from_millis(3));
        assert_eq!(s.due(0, 1), Duration::from_millis(4));
        assert_eq!(s.due(2, 10), Duration::from_millis(42));
        let mut all: Vec<Duration> = (0..4)
            .flat_map(|i| (0..100).map(move |k| s.due(i, k)))
            .collect();
        all.sort();
        for w in all.windows(2) {
            assert_eq!(w[1] - w[0], Duration::from_millis(1));
        }
    }

    #[test]
    fn count_before_matches_due() {
        let cases = [
            (1, 1.0),
            (3, 7.0),
            (100, 50_000.0),
            (7, 333.3),
            (100, 12_345.6),
        ];
        for (senders, rate) in cases {
            let s = Schedule::new(senders, rate).expect("valid");
            for sender in [0, senders / 2, senders - 1] {
                for t_ms in [0u64, 1, 2, 999, 1000, 1001, 30_000] {
                    let t = Duration::from_millis(t_ms);
                    let n = s.count_before(sender, t);
                    if n > 0 {
                        assert!(s.due(sender, n - 1) < t, "{senders} {rate} {sender} {t_ms}");
                    }
                    assert!(s.due(sender, n) >= t, "{senders} {rate} {sender} {t_ms}");
                }
            }
        }
    }

    #[test]
    fn total_count_over_a_window_is_rate_times_time() {
        let s = Schedule::new(100, 20_000.0).expect("valid");
        let t = Duration::from_secs(30);
        let total: u64 = (0..100).map(|i| s.count_before(i, t)).sum();
        assert_eq!(total, 600_000);
        // A window that does not start at zero.
        let from = Duration::from_secs(2);
        let in_window: u64 = (0..100)
            .map(|i| s.count_before(i, from + t) - s.count_before(i, from))
            .sum();
        assert_eq!(in_window, 600_000);
    }

    #[test]
    fn seconds_convert_safely() {
        assert_eq!(secs_to_duration(-1.0), Duration::ZERO);
        assert_eq!(secs_to_duration(f64::NAN), Duration::ZERO);
        assert_eq!(secs_to_duration(1.5), Duration::from_millis(1500));
        assert_eq!(secs_to_duration(1e300), Duration::MAX);
    }
}
