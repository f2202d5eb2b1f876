//! Latency histograms (HdrHistogram, microseconds) and their summaries, and the joining of
//! per-connection reports.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// The largest latency a histogram holds: one hour, in microseconds. Longer ones are clamped.
pub const MAX_LATENCY_US: u64 = 3_600_000_000;

/// A latency histogram: 1 µs to one hour at three significant digits.
pub type Latencies = Histogram<u64>;

/// Joins every task of `tasks`, handing each one's report to `each`, which adds it up and
/// returns the report's error if it had one. Returns the errors counted by text, a panicked
/// task counting as `task panicked`.
pub async fn join_reports<T: 'static>(
    tasks: &mut tokio::task::JoinSet<T>,
    mut each: impl FnMut(T) -> Option<String>,
) -> BTreeMap<String, u64> {
    let mut errors = BTreeMap::new();
    while let Some(joined) = tasks.join_next().await {
        let error = match joined {
            Ok(report) => each(report),
            Err(_) => Some("task panicked".to_owned()),
        };
        if let Some(e) = error {
            *errors.entry(e).or_default() += 1;
        }
    }
    errors
}

/// A new, empty latency histogram.
pub fn histogram() -> Latencies {
    // The bounds are constants that hdrhistogram accepts (low ≥ 1, high ≥ 2·low, 3 digits).
    match Histogram::new_with_bounds(1, MAX_LATENCY_US, 3) {
        Ok(h) => h,
        Err(_) => unreachable!("constant histogram bounds are valid"),
    }
}

/// Records `latency`, clamped to the histogram's range.
pub fn record(h: &mut Latencies, latency: Duration) {
    let us = u64::try_from(latency.as_micros()).unwrap_or(MAX_LATENCY_US);
    h.saturating_record(us.min(MAX_LATENCY_US));
}

/// Adds `from` into `into`. Both come from [`histogram`], so the ranges match.
pub fn merge(into: &mut Latencies, from: &Latencies) {
    let _ = into.add(from);
}

/// Percentiles of a latency distribution, in microseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Samples.
    pub count: u64,
    /// Smallest.
    pub min: u64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
}

impl LatencySummary {
    /// The summary of `h`; `None` when it holds no sample.
    pub fn of(h: &Latencies) -> Option<LatencySummary> {
        if h.is_empty() {
            return None;
        }
        Some(LatencySummary {
            count: h.len(),
            min: h.min(),
            mean: (h.mean() * 10.0).round() / 10.0,
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        })
    }

    /// One line: `p50 120 µs  p99 450 µs  p99.9 900 µs  max 2100 µs  (n=…)`.
    pub fn line(&self) -> String {
        format!(
            "p50 {} µs  p99 {} µs  p99.9 {} µs  max {} µs  (n={})",
            self.p50, self.p99, self.p999, self.max, self.count
        )
    }
}

/// Items per second: `count` over `elapsed` (0 for an empty interval).
pub fn per_second(count: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 { count as f64 / secs } else { 0.0 }
}

/// Rounds to one decimal, for readable JSON.
pub fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reports_are_added_up_and_errors_counted() {
        let mut tasks = tokio::task::JoinSet::new();
        for (n, error) in [(1u64, None), (2, Some("refused")), (4, Some("refused"))] {
            tasks.spawn(async move { (n, error.map(str::to_owned)) });
        }
        tasks.spawn(async { panic!("a connection task failed") });
        let mut total = 0;
        let errors = join_reports(&mut tasks, |(n, error)| {
            total += n;
            error
        })
        .await;
        assert_eq!(total, 7);
        assert_eq!(errors.get("refused"), Some(&2));
        assert_eq!(errors.get("task panicked"), Some(&1));
        assert_eq!(errors.len(), 2);
    }

    #[test]
    fn empty_histogram_has_no_summary() {
        assert_eq!(LatencySummary::of(&histogram()), None);
    }

    #[test]
    fn percentiles_of_a_uniform_distribution() {
        let mut h = histogram();
        for us in 1..=10_000u64 {
            record(&mut h, Duration::from_micros(us));
        }
        let s = LatencySummary::of(&h).expect("samples");
        assert_eq!(s.count, 10_000);
        assert_eq!(s.min, 1);
        // Three significant digits: within 0.1 % of the exact value.
        let near = |got: u64, want: u64| got.abs_diff(want) * 1000 <= want;
        assert!(near(s.p50, 5_000), "{s:?}");
        assert!(near(s.p90, 9_000), "{s:?}");
        assert!(near(s.p99, 9_900), "{s:?}");
        assert!(near(s.p999, 9_990), "{s:?}");
        assert!(near(s.max, 10_000), "{s:?}");
        assert!((s.mean - 5_000.5).abs() < 10.0, "{s:?}");
    }

    #[test]
    fn one_slow_sample_shows_only_in_the_tail() {
        let mut h = histogram();
        for _ in 0..999 {
            record(&mut h, Duration::from_micros(100));
        }
        record(&mut h, Duration::from_millis(50));
        let s = LatencySummary::of(&h).expect("samples");
        assert_eq!(s.p50, 100);
        assert_eq!(s.p99, 100);
        assert!(s.p999 <= 100 || s.p999 >= 49_000);
        assert!(s.max >= 49_900, "{s:?}");
    }

    #[test]
    fn merging_adds_counts_and_extremes_are_clamped() {
        let mut a = histogram();
        let mut b = histogram();
        record(&mut a, Duration::ZERO);
        record(&mut b, Duration::from_secs(7200));
        merge(&mut a, &b);
        let s = LatencySummary::of(&a).expect("samples");
        assert_eq!(s.count, 2);
        assert_eq!(s.min, 0);
        assert!(s.max >= MAX_LATENCY_US - MAX_LATENCY_US / 1000);
    }

    #[test]
    fn rates() {
        assert_eq!(per_second(500, Duration::from_millis(250)), 2000.0);
        assert_eq!(per_second(5, Duration::ZERO), 0.0);
        assert_eq!(round1(1.26), 1.3);
    }
}
