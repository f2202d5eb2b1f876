//! Opening many connections at a paced rate, and the `connect` workload: open N connections,
//! measure the connect rate and latency, hold them idle, and report the server's memory per
//! connection.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::conn::{self, BoxIo, Endpoint};
use crate::pacing::Schedule;
use crate::procfs;
use crate::progress::{self, Counters, Labels};
use crate::stats::{self, Latencies, LatencySummary};

/// How connections are opened.
#[derive(Debug, Clone)]
pub struct OpenPlan {
    /// Connection attempts per second (open loop); `None`: as fast as `concurrency` allows.
    pub rate: Option<f64>,
    /// Most attempts in progress at once.
    pub concurrency: usize,
    /// The first source address.
    pub source_base: Ipv4Addr,
    /// How many source addresses to spread connections over (from `source_base` up).
    pub source_addrs: usize,
    /// Longest one attempt (TCP, TLS, CONNECT, CONNACK) may take.
    pub timeout: Duration,
}

/// Connections that were opened, and what it took.
pub struct Opened {
    /// `(index, stream, bytes read past the CONNACK)`, sorted by index.
    pub connections: Vec<(usize, BoxIo, BytesMut)>,
    /// Failures by kind.
    pub failures: BTreeMap<String, u64>,
    /// One failure message, for the log.
    pub first_failure: Option<String>,
    /// Attempt start to CONNACK.
    pub latency: Latencies,
    /// Scheduled start to CONNACK (includes waiting for a free slot).
    pub latency_from_due: Latencies,
    /// First scheduled start to the last attempt's end.
    pub elapsed: Duration,
}

/// One attempt's outcome: index, result, attempt duration, time since it was due.
type Attempt = (
    usize,
    Result<(BoxIo, BytesMut), conn::ConnectError>,
    Duration,
    Duration,
);

/// Opens one connection per entry of `connects` (encoded CONNECT packets) at the plan's pace.
pub async fn open_many(
    endpoint: &Endpoint,
    connects: Vec<Bytes>,
    plan: &OpenPlan,
    counters: &Arc<Counters>,
) -> Opened {
    open_across(std::slice::from_ref(endpoint), connects, plan, counters).await
}

/// As [`open_many`], connection `i` to `endpoints[i % endpoints.len()]` (the nodes of a
/// cluster, round robin).
pub async fn open_across(
    endpoints: &[Endpoint],
    connects: Vec<Bytes>,
    plan: &OpenPlan,
    counters: &Arc<Counters>,
) -> Opened {
    let n = connects.len();
    let schedule = plan.rate.and_then(|r| Schedule::new(1, r));
    let permits = Arc::new(Semaphore::new(plan.concurrency.max(1)));
    let mut set: JoinSet<Attempt> = JoinSet::new();
    let start = Instant::now();
    for (i, connect) in connects.into_iter().enumerate() {
        let due = match schedule {
            Some(s) => {
                let due = start + s.due(0, i as u64);
                tokio::time::sleep_until(due).await;
                due
            }
            None => Instant::now(),
        };
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let Some(endpoint) = endpoints.get(i % endpoints.len().max(1)).cloned() else {
            break;
        };
        let source = (plan.source_addrs > 0)
            .then(|| conn::source_address(plan.source_base, plan.source_addrs, i));
        let limit = plan.timeout;
        let counters = counters.clone();
        set.spawn(async move {
            let began = Instant::now();
            Counters::add(&counters.sent, 1);
            let result = conn::establish(&endpoint, source, &connect, limit).await;
            drop(permit);
            let done = Instant::now();
            match &result {
                Ok(_) => {
                    Counters::add(&counters.acked, 1);
                    Counters::add(&counters.connected, 1);
                }
                Err(_) => Counters::add(&counters.errors, 1),
            }
            (i, result, done - began, done - due)
        });
    }
    let mut opened = Opened {
        connections: Vec::with_capacity(n),
        failures: BTreeMap::new(),
        first_failure: None,
        latency: stats::histogram(),
        latency_from_due: stats::histogram(),
        elapsed: Duration::ZERO,
    };
    while let Some(joined) = set.join_next().await {
        let Ok((i, result, took, from_due)) = joined else {
            *opened.failures.entry("task panicked".into()).or_default() += 1;
            continue;
        };
        match result {
            Ok((io, buf)) => {
                stats::record(&mut opened.latency, took);
                stats::record(&mut opened.latency_from_due, from_due);
                opened.connections.push((i, io, buf));
            }
            Err(e) => {
                *opened.failures.entry(e.kind()).or_default() += 1;
                if opened.first_failure.is_none() {
                    opened.first_failure = Some(e.to_string());
                }
            }
        }
    }
    opened.elapsed = start.elapsed();
    opened.connections.sort_by_key(|(i, _, _)| *i);
    opened
}

/// The `connect` workload's settings.
#[derive(Debug, Clone)]
pub struct ConnectConfig {
    /// How connections are opened.
    pub open: OpenPlan,
    /// How long to hold them idle after the last one is up.
    pub hold: Duration,
    /// Pause between the last connection and the second memory reading.
    pub settle: Duration,
    /// The server's pid, for memory and CPU readings.
    pub server_pid: Option<u32>,
}

/// The `connect` workload's result.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectSummary {
    /// `"connect"`.
    pub workload: &'static str,
    /// The target as given.
    pub target: String,
    /// Every node connected to, the target first (connections round robin over them).
    pub targets: Vec<String>,
    /// Whether connections used TLS.
    pub tls: bool,
    /// Connections attempted.
    pub requested: usize,
    /// Connections accepted (CONNACK 0).
    pub established: usize,
    /// Failures by kind.
    pub failures: BTreeMap<String, u64>,
    /// The first failure's message.
    pub first_failure: Option<String>,
    /// Offered attempts per second (`null`: as fast as the concurrency allowed).
    pub offered_rate: Option<f64>,
    /// Most attempts in progress at once.
    pub concurrency: usize,
    /// Source addresses used.
    pub source_addrs: usize,
    /// First start to last CONNACK, seconds.
    pub elapsed_s: f64,
    /// Established connections per second over `elapsed_s`.
    pub rate: f64,
    /// Attempt start to CONNACK (TCP + TLS + CONNECT), µs.
    pub latency_us: Option<LatencySummary>,
    /// Scheduled start to CONNACK, µs.
    pub latency_from_due_us: Option<LatencySummary>,
    /// CPU while connecting (percent of one core).
    pub cpu: procfs::CpuUsage,
    /// Server RSS before connecting, KiB.
    pub server_rss_before_kib: Option<u64>,
    /// Server RSS with every connection up, KiB.
    pub server_rss_after_kib: Option<u64>,
    /// (after − before) / established, bytes.
    pub server_bytes_per_connection: Option<f64>,
    /// Seconds the connections were held idle.
    pub hold_s: f64,
    /// Connections still open at the end of the hold (the server may close idle ones).
    pub still_open_after_hold: Option<usize>,
    /// This process's open-file limit.
    pub nofile_limit: u64,
}

/// Runs the `connect` workload with one encoded CONNECT per connection, connection `i` to
/// `targets[i % targets.len()]` (label, endpoint).
///
/// # Panics
///
/// When `targets` is empty.
pub async fn run(
    targets: &[(String, Endpoint)],
    connects: Vec<Bytes>,
    cfg: &ConnectConfig,
) -> ConnectSummary {
    assert!(!targets.is_empty(), "at least one target");
    let endpoints: Vec<Endpoint> = targets.iter().map(|(_, e)| e.clone()).collect();
    let target_label = targets[0].0.clone();
    let requested = connects.len();
    let nofile_limit = procfs::raise_nofile(requested as u64 + 1024);
    if nofile_limit < requested as u64 + 64 {
        eprintln!(
            "warning: open-file limit {nofile_limit} is below {requested} connections; some will fail"
        );
    }
    let counters = Arc::new(Counters::default());
    let expected = cfg.open.rate.map_or(Duration::from_secs(600), |r| {
        crate::pacing::secs_to_duration(requested as f64 / r)
    });
    let progress = progress::spawn(
        counters.clone(),
        Labels {
            workload: "connect",
            sent: "attempts",
            acked: "connacks",
            received: None,
        },
        expected + cfg.open.timeout + cfg.settle + cfg.hold + Duration::from_secs(5),
    );
    let rss_before = cfg.server_pid.and_then(|p| procfs::rss_kib(p).ok());
    let cpu = procfs::CpuMeter::start(cfg.server_pid);
    let opened = open_across(&endpoints, connects, &cfg.open, &counters).await;
    let cpu = cpu.finish();
    tokio::time::sleep(cfg.settle).await;
    let rss_after = cfg.server_pid.and_then(|p| procfs::rss_kib(p).ok());
    let established = opened.connections.len();
    let per_connection = match (rss_before, rss_after) {
        (Some(b), Some(a)) if established > 0 => Some(stats::round1(
            (a as f64 - b as f64) * 1024.0 / established as f64,
        )),
        _ => None,
    };
    let mut connections = opened.connections;
    tokio::time::sleep(cfg.hold).await;
    let still_open = if cfg.hold.is_zero() {
        None
    } else {
        Some(count_open(&mut connections).await)
    };
    progress.abort();
    drop(connections);
    ConnectSummary {
        workload: "connect",
        target: target_label,
        targets: targets.iter().map(|(t, _)| t.clone()).collect(),
        tls: endpoints[0].tls.is_some(),
        requested,
        established,
        failures: opened.failures,
        first_failure: opened.first_failure,
        offered_rate: cfg.open.rate,
        concurrency: cfg.open.concurrency,
        source_addrs: cfg.open.source_addrs,
        elapsed_s: opened.elapsed.as_secs_f64(),
        rate: stats::round1(stats::per_second(established as u64, opened.elapsed)),
        latency_us: LatencySummary::of(&opened.latency),
        latency_from_due_us: LatencySummary::of(&opened.latency_from_due),
        cpu,
        server_rss_before_kib: rss_before,
        server_rss_after_kib: rss_after,
        server_bytes_per_connection: per_connection,
        hold_s: cfg.hold.as_secs_f64(),
        still_open_after_hold: still_open,
        nofile_limit,
    }
}

/// How many connections the server has not closed: a read that would block means open.
async fn count_open(connections: &mut [(usize, BoxIo, BytesMut)]) -> usize {
    use futures_util::FutureExt;
    use tokio::io::AsyncReadExt;
    let mut open = 0;
    let mut scratch = [0u8; 64];
    for (_, io, _) in connections.iter_mut() {
        // One poll: pending (nothing to read, not closed) or data means the connection is up.
        match io.read(&mut scratch).now_or_never() {
            None => open += 1,
            Some(Ok(n)) if n > 0 => open += 1,
            Some(_) => {}
        }
        tokio::task::yield_now().await;
    }
    open
}
