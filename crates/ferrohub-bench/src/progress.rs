//! Live counters and the once-a-second progress line on stderr.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Counters every connection task adds to; read by the progress line.
#[derive(Debug, Default)]
pub struct Counters {
    /// Messages sent (or connections attempted).
    pub sent: AtomicU64,
    /// PUBACKs received (or CONNACKs accepted).
    pub acked: AtomicU64,
    /// Errors of any kind.
    pub errors: AtomicU64,
    /// Connections currently established.
    pub connected: AtomicU64,
    /// Extra count, e.g. events read back.
    pub received: AtomicU64,
}

impl Counters {
    /// Adds `n` to `counter`.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Subtracts `n` from `counter`, stopping at zero.
    pub fn sub(counter: &AtomicU64, n: u64) {
        let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
            Some(v.saturating_sub(n))
        });
    }

    fn snapshot(&self) -> [u64; 5] {
        [
            self.sent.load(Ordering::Relaxed),
            self.acked.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
            self.connected.load(Ordering::Relaxed),
            self.received.load(Ordering::Relaxed),
        ]
    }
}

/// What the progress line calls each counter.
#[derive(Debug, Clone, Copy)]
pub struct Labels {
    /// Name of the workload.
    pub workload: &'static str,
    /// Name of `sent`, shown as a rate.
    pub sent: &'static str,
    /// Name of `acked`, shown as a rate.
    pub acked: &'static str,
    /// Name of `received`, shown as a rate; `None` hides it.
    pub received: Option<&'static str>,
}

/// Prints one line a second until `limit` has passed or the handle is aborted.
pub fn spawn(counters: Arc<Counters>, labels: Labels, limit: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let start = Instant::now();
        let mut last = counters.snapshot();
        let mut last_at = start;
        let ticks = limit.as_secs().saturating_add(1);
        let mut interval =
            tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
        for _ in 0..ticks {
            interval.tick().await;
            let now = Instant::now();
            let snap = counters.snapshot();
            let dt = now.duration_since(last_at).as_secs_f64().max(1e-3);
            let rate = |i: usize| (snap[i].saturating_sub(last[i])) as f64 / dt;
            let mut line = format!(
                "[{:>6.1}s] {:<8} conns {:>6}  {} {:>9.0}/s  {} {:>9.0}/s",
                now.duration_since(start).as_secs_f64(),
                labels.workload,
                snap[3],
                labels.sent,
                rate(0),
                labels.acked,
                rate(1),
            );
            if let Some(name) = labels.received {
                line.push_str(&format!("  {name} {:>9.0}/s", rate(4)));
            }
            line.push_str(&format!("  errors {}", snap[2]));
            eprintln!("{line}");
            last = snap;
            last_at = now;
        }
    })
}
