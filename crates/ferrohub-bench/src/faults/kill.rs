//! kill -9 under load: while the fleet publishes, the hub is SIGKILLed at a random moment,
//! restarted on the same data directory after a random pause, and every message acknowledged
//! so far must then be in the log. What this proves: the hub acknowledges only what it has
//! written, and its recovery (torn tails cut, indexes rebuilt) never drops a record it had made
//! readable. What it does not prove: durability across a power cut (the page cache survives a
//! killed process; fsync ordering is the log's own crash tests' business).

use std::collections::BTreeSet;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::fleet::Fleet;
use super::hub::{HubProcess, ProcSample};
use super::rng::Rng;
use super::{Checks, FaultsConfig, Range, sample_text};

/// kill -9 settings.
#[derive(Debug, Clone, Serialize)]
pub struct KillConfig {
    /// Kill/restart cycles.
    pub cycles: u32,
    /// Shortest time the hub runs before it is killed, seconds.
    pub uptime_min: f64,
    /// Longest time the hub runs before it is killed, seconds.
    pub uptime_max: f64,
    /// Longest pause between the kill and the restart, seconds.
    pub downtime_max: f64,
}

/// One cycle.
#[derive(Debug, Clone, Serialize)]
pub struct CycleReport {
    /// From 1.
    pub cycle: u32,
    /// Seconds the hub ran before the kill.
    pub uptime_s: f64,
    /// Seconds between the kill and the restart.
    pub downtime_s: f64,
    /// Milliseconds from spawn to the first `/healthz` answer.
    pub restart_ms: u64,
    /// MQTT devices connected at the kill.
    pub connected_at_kill: usize,
    /// Acknowledgements since the previous check.
    pub acked: u64,
    /// Of those, found.
    pub found: u64,
    /// Acknowledged messages found missing at this check (not counted before).
    pub lost: u64,
    /// Copies beyond the first read since the previous check.
    pub duplicates: u64,
    /// Acknowledged so far.
    pub acked_total: u64,
    /// Lost so far.
    pub lost_total: u64,
    /// The hub at the start of the cycle (the restarted process).
    pub before: Option<ProcSample>,
    /// Just before the kill, under load.
    pub during: Option<ProcSample>,
    /// After the restart and the check.
    pub after: Option<ProcSample>,
    /// Problems this cycle (a crash, a failed check).
    pub problems: Vec<String>,
}

impl CycleReport {
    /// The line printed for the cycle.
    pub fn line(&self, of: u32) -> String {
        let mib = |s: Option<ProcSample>| {
            s.map_or("?".into(), |s| format!("{:.0}", s.rss_kib as f64 / 1024.0))
        };
        let fds = |s: Option<ProcSample>| s.map_or("?".into(), |s| s.fds.to_string());
        let mut line = format!(
            "cycle {}/{of}: up {:.2} s, down {:.2} s, restart {} ms | acked {} found {} lost {} dup {} (total acked {}, lost {}) | fds {}→{}→{}, RSS {}→{}→{} MiB",
            self.cycle,
            self.uptime_s,
            self.downtime_s,
            self.restart_ms,
            self.acked,
            self.found,
            self.lost,
            self.duplicates,
            self.acked_total,
            self.lost_total,
            fds(self.before),
            fds(self.during),
            fds(self.after),
            mib(self.before),
            mib(self.during),
            mib(self.after),
        );
        for p in &self.problems {
            line.push_str(&format!("\n  problem: {p}"));
        }
        line
    }
}

/// The scenario's totals.
#[derive(Debug, Clone, Serialize)]
pub struct KillSummary {
    /// Cycles run (fewer than asked for when a restart failed).
    pub cycles_run: u32,
    /// Messages acknowledged by the last check.
    pub acknowledged: u64,
    /// Of those, found.
    pub found: u64,
    /// Acknowledged and not found, over all checks.
    pub lost: u64,
    /// Copies beyond the first, as read by the incremental readers.
    pub duplicates: u64,
    /// Copies beyond the sends (must be 0).
    pub unexplained_duplicates: u64,
    /// Events that are not messages of the run (must be 0).
    pub unknown: u64,
    /// Transmissions, resends included.
    pub sends: u64,
    /// The hub's descriptor counts over every sample.
    pub hub_fds: Range,
    /// The hub's RSS over every sample, KiB.
    pub hub_rss_kib: Range,
    /// Median restart time, ms.
    pub restart_ms_p50: u64,
    /// Longest restart time, ms.
    pub restart_ms_max: u64,
    /// Every cycle.
    pub cycles: Vec<CycleReport>,
}

/// `x` to two decimals (seconds to 10 ms), so the JSON shows 0.21 rather than 0.21000000000000002.
fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Runs the kill -9 cycles on `hub` with `fleet` publishing.
pub async fn run(
    hub: &mut HubProcess,
    fleet: &Fleet,
    cfg: &FaultsConfig,
    rng: &mut Rng,
    checks: &mut Checks,
    print: &(dyn Fn(&str) + Sync),
) -> KillSummary {
    let k = &cfg.kill;
    let mut cycles = Vec::new();
    let mut ever_lost: BTreeSet<(String, u32)> = BTreeSet::new();
    let mut problems_seen: Vec<String> = Vec::new();
    let (mut crashes, mut restart_failures, mut check_failures, mut regressions) = (0, 0, 0, 0);
    let mut prev_acked = fleet.ledger.acked_total();
    let mut prev_dups = fleet.ledger.duplicates_total();
    let mut last_check = None;
    for c in 1..=k.cycles {
        fleet.set_cycle(c);
        let mut problems = Vec::new();
        let before = hub.sample();
        let uptime = Duration::from_secs_f64(rng.uniform(k.uptime_min, k.uptime_max));
        let up_until = Instant::now() + uptime;
        // Watch for a crash while up: a hub that dies by itself is a finding too.
        while Instant::now() < up_until {
            if let Some(status) = hub.exited() {
                crashes += 1;
                problems.push(format!(
                    "the hub exited by itself ({status}) before the kill"
                ));
                break;
            }
            tokio::time::sleep(Duration::from_millis(50).min(up_until - Instant::now())).await;
        }
        let during = hub.sample();
        let connected_at_kill = fleet
            .stats
            .connected
            .load(std::sync::atomic::Ordering::Relaxed);
        if hub.pid().is_some()
            && let Err(e) = hub.kill9().await
        {
            problems.push(format!("kill -9 failed: {e:#}"));
        }
        let downtime = Duration::from_secs_f64(rng.uniform(0.0, k.downtime_max));
        tokio::time::sleep(downtime).await;
        let restart_ms = match hub.start().await {
            Ok(took) => took.as_millis() as u64,
            Err(e) => {
                restart_failures += 1;
                let why = format!("restart failed: {e:#}");
                problems_seen.push(format!("cycle {c}: {why}"));
                print(&format!("cycle {c}/{}: {why}", k.cycles));
                break;
            }
        };
        let check = fleet.check(Instant::now() + cfg.check_timeout).await;
        let after = hub.sample();
        if let Some(e) = &check.error {
            check_failures += 1;
            problems.push(format!("check: {e}"));
        }
        if !check.regressions.is_empty() {
            regressions += 1;
            problems.extend(check.regressions.iter().cloned());
        }
        let mut new_lost = 0;
        for m in &check.lost {
            if ever_lost.insert((m.device.clone(), m.message)) {
                new_lost += 1;
                if problems.len() < 10 {
                    problems.push(format!(
                        "LOST: {} message {} (sent {} times, acknowledged in cycle {})",
                        m.device, m.message, m.sends, m.acked_in_cycle
                    ));
                }
            }
        }
        let acked = check.acked_total.saturating_sub(prev_acked);
        let dups = check.duplicates_total.saturating_sub(prev_dups);
        prev_acked = check.acked_total;
        prev_dups = check.duplicates_total;
        let report = CycleReport {
            cycle: c,
            uptime_s: round2(uptime.as_secs_f64()),
            downtime_s: round2(downtime.as_secs_f64()),
            restart_ms,
            connected_at_kill,
            acked,
            found: acked.saturating_sub(new_lost),
            lost: new_lost,
            duplicates: dups,
            acked_total: check.acked_total,
            lost_total: ever_lost.len() as u64,
            before,
            during,
            after,
            problems,
        };
        print(&report.line(k.cycles));
        for p in &report.problems {
            if problems_seen.len() < 20 {
                problems_seen.push(format!("cycle {c}: {p}"));
            }
        }
        last_check = Some(check);
        cycles.push(report);
    }

    let samples: Vec<ProcSample> = cycles
        .iter()
        .flat_map(|r| [r.before, r.during, r.after])
        .flatten()
        .collect();
    let mut restarts: Vec<u64> = cycles.iter().map(|r| r.restart_ms).collect();
    restarts.sort_unstable();
    let last = last_check.unwrap_or_default();
    let lost = ever_lost.len() as u64;
    let summary = KillSummary {
        cycles_run: cycles.len() as u32,
        acknowledged: last.acked_total,
        found: last.acked_total.saturating_sub(lost),
        lost,
        duplicates: last.duplicates_total,
        unexplained_duplicates: last.unexplained_total,
        unknown: last.unknown_total,
        sends: fleet.ledger.sends_total(),
        hub_fds: Range::of(samples.iter().map(|s| s.fds)),
        hub_rss_kib: Range::of(samples.iter().map(|s| s.rss_kib)),
        restart_ms_p50: restarts.get(restarts.len() / 2).copied().unwrap_or(0),
        restart_ms_max: restarts.last().copied().unwrap_or(0),
        cycles,
    };
    let first_problems = |filter: &str| {
        problems_seen
            .iter()
            .filter(|p| p.contains(filter))
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join("; ")
    };
    checks.add(
        "kill",
        "every restart on the same data directory succeeds",
        restart_failures == 0 && summary.cycles_run == k.cycles,
        format!(
            "{} of {} cycles; restart p50 {} ms, max {} ms{}",
            summary.cycles_run,
            k.cycles,
            summary.restart_ms_p50,
            summary.restart_ms_max,
            if restart_failures > 0 {
                format!("; {}", first_problems("restart"))
            } else {
                String::new()
            }
        ),
    );
    checks.add(
        "kill",
        "the hub never dies by itself",
        crashes == 0,
        format!("{crashes} unexpected exits"),
    );
    checks.add(
        "kill",
        "no acknowledged message lost",
        lost == 0,
        if lost == 0 {
            format!(
                "{} acknowledged over {} kills, all found",
                summary.acknowledged, summary.cycles_run
            )
        } else {
            format!("{lost} lost; {}", first_problems("LOST"))
        },
    );
    checks.add(
        "kill",
        "readers reach the log's end after every restart",
        check_failures == 0,
        if check_failures == 0 {
            "every check completed".to_owned()
        } else {
            format!(
                "{check_failures} checks incomplete; {}",
                first_problems("check")
            )
        },
    );
    checks.add(
        "kill",
        "a partition never ends below what was read",
        regressions == 0,
        if regressions == 0 {
            "no partition went back".to_owned()
        } else {
            format!("{regressions} cycles; {}", first_problems("partition"))
        },
    );
    checks.add(
        "kill",
        "duplicates only of resent messages",
        summary.unexplained_duplicates == 0,
        format!(
            "{} duplicate copies, {} beyond their sends; {} transmissions for {} acknowledged",
            summary.duplicates, summary.unexplained_duplicates, summary.sends, summary.acknowledged
        ),
    );
    checks.add(
        "kill",
        "nothing unknown in the log",
        summary.unknown == 0,
        match &last.first_unknown {
            Some(first) => format!("{} unknown events; first: {first}", summary.unknown),
            None => "every event read is a message of the run".to_owned(),
        },
    );
    if last.gaps_total > 0 {
        eprintln!(
            "[kill] note: readers saw {} skipped sequence numbers",
            last.gaps_total
        );
    }
    eprintln!(
        "[kill] hub fds {}–{}, RSS {}",
        summary.hub_fds.min,
        summary.hub_fds.max,
        sample_text(summary.cycles.last().and_then(|r| r.after))
    );
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycle_line_names_losses_and_samples() {
        let r = CycleReport {
            cycle: 3,
            uptime_s: 1.25,
            downtime_s: 0.1,
            restart_ms: 180,
            connected_at_kill: 50,
            acked: 100,
            found: 99,
            lost: 1,
            duplicates: 2,
            acked_total: 300,
            lost_total: 1,
            before: Some(ProcSample {
                fds: 40,
                rss_kib: 20 * 1024,
            }),
            during: None,
            after: Some(ProcSample {
                fds: 41,
                rss_kib: 21 * 1024,
            }),
            problems: vec!["LOST: d message 4".into()],
        };
        let line = r.line(10);
        assert!(line.starts_with("cycle 3/10: up 1.25 s"), "{line}");
        assert!(line.contains("lost 1 dup 2"), "{line}");
        assert!(line.contains("fds 40→?→41"), "{line}");
        assert!(line.contains("RSS 20→?→21 MiB"), "{line}");
        assert!(line.contains("problem: LOST"), "{line}");
    }
}
