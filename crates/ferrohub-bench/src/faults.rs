//! The `faults` workload: runs the real `ferrohub` binary and does to it what production will —
//! kill -9 under load, a disk that fills and frees, readers that stop reading, connection floods
//! on every port — and checks that nothing the hub acknowledged is lost, that it refuses what
//! it cannot store, and that it keeps serving and gives its resources back.
//!
//! * [`kill`]: devices (MQTT/TLS at QoS 1, HTTPS senders) publish stamped messages while the
//!   hub is SIGKILLed at a random moment and restarted on the same data directory, `cycles`
//!   times; after each restart every acknowledged message must be readable.
//! * [`stall`]: event streams, long polls and an MQTT C2D subscriber stop reading their
//!   sockets; the hub must keep serving everyone else within a memory bound.
//! * [`flood`]: thousands of idle and byte-a-second connections on every listener; a device
//!   and `/healthz` must still get through, the idle and slow ones must be closed, and the
//!   hub's descriptors and memory must come back.
//! * [`disk`]: the data directory on a small tmpfs, filled while devices publish and freed
//!   again; the hub must refuse (no acknowledgement, `/healthz` 503), start on the full disk and
//!   serve readers, and resume by itself once space returns.
//!
//! Every message is accounted for in a [`ledger::Ledger`]; the last word is a re-read of the
//! whole log. Every assertion is a [`Check`]; the run fails if any check fails.

pub mod disk;
pub mod fleet;
pub mod flood;
pub mod hub;
pub mod kill;
pub mod ledger;
pub mod rng;
pub mod stall;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use tokio::time::Instant;

use self::fleet::{Fleet, FleetConfig};
use self::hub::{HubOptions, HubProcess, ProcSample};
use self::ledger::Verification;
use self::rng::Rng;

/// Which scenarios to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Scenarios {
    /// kill -9 under load.
    pub kill: bool,
    /// A disk that fills and frees.
    pub disk: bool,
    /// Stalled readers.
    pub stall: bool,
    /// Connection floods.
    pub flood: bool,
}

impl std::str::FromStr for Scenarios {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = Scenarios {
            kill: false,
            disk: false,
            stall: false,
            flood: false,
        };
        for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "kill" => out.kill = true,
                "disk" => out.disk = true,
                "stall" => out.stall = true,
                "flood" => out.flood = true,
                "all" => {
                    out = Scenarios {
                        kill: true,
                        disk: true,
                        stall: true,
                        flood: true,
                    }
                }
                other => {
                    return Err(format!(
                        "unknown scenario {other:?}; expected kill, disk, stall, flood or all"
                    ));
                }
            }
        }
        if !(out.kill || out.disk || out.stall || out.flood) {
            return Err("no scenario named".into());
        }
        Ok(out)
    }
}

/// Everything the runner needs, from the command line.
#[derive(Debug, Clone, Serialize)]
pub struct FaultsConfig {
    /// The `ferrohub` binary.
    pub ferrohub_bin: PathBuf,
    /// Where the hubs' data directories, logs and the summary go.
    pub work_dir: PathBuf,
    /// Which scenarios run.
    pub scenarios: Scenarios,
    /// Seed of every random choice (kill moments, down times, jitter).
    pub seed: u64,
    /// The main fleet: MQTT devices, HTTPS senders, rates.
    pub devices: usize,
    /// HTTPS senders of the main fleet.
    pub https_senders: usize,
    /// Messages per second all MQTT devices together offer.
    pub rate: f64,
    /// Messages per second each HTTPS sender offers.
    pub https_rate: f64,
    /// Payload bytes.
    pub payload: usize,
    /// Unacknowledged messages per MQTT connection.
    pub inflight: usize,
    /// Longest a per-cycle check or a start may take.
    pub check_timeout: Duration,
    /// kill -9 settings.
    pub kill: kill::KillConfig,
    /// Stalled readers settings.
    pub stall: stall::StallConfig,
    /// Flood settings.
    pub flood: flood::FloodConfig,
    /// Disk settings.
    pub disk: disk::DiskConfig,
    /// HTTPS handshake, header and idle timeouts to configure, when the hub has those settings.
    pub https_timeouts: Option<u64>,
}

/// One assertion and its outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// The scenario it belongs to.
    pub scenario: &'static str,
    /// What it asserts.
    pub name: String,
    /// Whether it held.
    pub ok: bool,
    /// The evidence.
    pub detail: String,
}

/// The run's checks, printed as they are made.
#[derive(Debug, Default)]
pub struct Checks {
    list: Vec<Check>,
}

impl Checks {
    /// Records a check and prints it to stderr.
    pub fn add(&mut self, scenario: &'static str, name: &str, ok: bool, detail: impl Into<String>) {
        let detail = detail.into();
        eprintln!(
            "[{scenario}] {} {name}: {detail}",
            if ok { "ok  " } else { "FAIL" }
        );
        self.list.push(Check {
            scenario,
            name: name.to_owned(),
            ok,
            detail,
        });
    }

    /// Whether every check held.
    pub fn all_ok(&self) -> bool {
        self.list.iter().all(|c| c.ok)
    }

    /// The checks made.
    pub fn list(&self) -> &[Check] {
        &self.list
    }
}

/// Smallest and largest of a series of samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Range {
    /// Smallest.
    pub min: u64,
    /// Largest.
    pub max: u64,
}

impl Range {
    /// The range of `values` (zeros when empty).
    pub fn of(values: impl IntoIterator<Item = u64>) -> Range {
        let mut it = values.into_iter();
        let Some(first) = it.next() else {
            return Range::default();
        };
        it.fold(
            Range {
                min: first,
                max: first,
            },
            |r, v| Range {
                min: r.min.min(v),
                max: r.max.max(v),
            },
        )
    }
}

/// The final verdict on one fleet: drained, then the whole log re-read.
#[derive(Debug, Clone, Serialize)]
pub struct FinalCheck {
    /// Whether every device had its messages acknowledged before the deadline.
    pub drained: bool,
    /// The re-read's comparison with the book (absent if the re-read failed).
    pub verification: Option<Verification>,
    /// Why the re-read failed.
    pub error: Option<String>,
}

/// The run's result, printed at the end and written to `WORK_DIR/summary.json`.
#[derive(Debug, Clone, Serialize)]
pub struct FaultsSummary {
    /// `"faults"`.
    pub workload: &'static str,
    /// Whether every check held and nothing acknowledged was lost.
    pub ok: bool,
    /// Seconds the run took.
    pub elapsed_s: f64,
    /// Unix time it started.
    pub started_unix: u64,
    /// The settings.
    pub config: FaultsConfig,
    /// The kill -9 scenario.
    pub kill: Option<kill::KillSummary>,
    /// The stalled readers scenario.
    pub stall: Option<stall::StallSummary>,
    /// The flood scenario.
    pub flood: Option<flood::FloodSummary>,
    /// The final re-read of the main hub's log.
    pub main_final: Option<FinalCheck>,
    /// The disk scenario.
    pub disk: Option<disk::DiskSummary>,
    /// Every assertion.
    pub checks: Vec<Check>,
}

/// The `[https]` timeout settings, as the runner sets them.
fn https_timeouts_toml(secs: u64) -> String {
    format!(
        "\n[https]\nhandshake_timeout = \"{secs}s\"\nheader_read_timeout = \"{secs}s\"\nidle_timeout = \"{secs}s\"\n"
    )
}

/// Whether `bin` accepts `config` (`ferrohub config check`).
async fn config_accepted(bin: &Path, config: &Path, dir: &Path) -> anyhow::Result<bool> {
    Ok(tokio::process::Command::new(bin)
        .args(["config", "check", "--config"])
        .arg(config)
        .arg("--data-dir")
        .arg(dir.join("config-check"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .with_context(|| format!("running {} config check", bin.display()))?
        .success())
}

/// Whether the hub has HTTPS header and idle timeout settings (the HTTPS hardening): a
/// configuration that sets them must pass `ferrohub config check` (unknown keys are refused).
pub async fn hub_has_https_timeouts(bin: &Path, dir: &Path) -> bool {
    let path = dir.join("https-timeouts-probe.toml");
    if std::fs::write(&path, https_timeouts_toml(60)).is_err() {
        return false;
    }
    let accepted = config_accepted(bin, &path, dir).await.unwrap_or(false);
    let _ = std::fs::remove_file(&path);
    accepted
}

/// Writes the hub's configuration: unlimited retention (the final re-read needs every event),
/// a per-device connect rate that lets devices reconnect after every kill without being held
/// off (the runner tests durability, not connect throttling), and the HTTPS timeouts when asked
/// for and supported.
pub async fn write_hub_config(
    bin: &Path,
    dir: &Path,
    name: &str,
    https_timeouts: Option<u64>,
) -> anyhow::Result<(PathBuf, Option<String>)> {
    let base =
        "[eventlog]\nretention = \"unlimited\"\n\n[limits]\ndevice_connects_per_second = 100\n";
    let path = dir.join(name);
    let mut note = None;
    let mut text = base.to_owned();
    if let Some(secs) = https_timeouts {
        let with = format!("{base}{}", https_timeouts_toml(secs));
        std::fs::write(&path, &with).with_context(|| format!("writing {}", path.display()))?;
        if config_accepted(bin, &path, dir).await? {
            text = with;
            note = Some(format!(
                "HTTPS handshake, header and idle timeouts set to {secs} s"
            ));
        } else {
            note = Some(
                "this hub has no [https] timeout settings (before the HTTPS hardening); its defaults apply"
                    .to_owned(),
            );
        }
    }
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok((path, note))
}

/// The main fleet's shape.
fn main_fleet(cfg: &FaultsConfig) -> FleetConfig {
    FleetConfig {
        prefix: "faults-".into(),
        mqtt_devices: cfg.devices,
        https_senders: cfg.https_senders,
        spares: 4,
        mqtt_rate: cfg.rate / cfg.devices.max(1) as f64,
        https_rate: cfg.https_rate,
        payload: cfg.payload,
        inflight: cfg.inflight,
    }
}

/// Drains `fleet`, re-reads the whole log and records the verdict as checks.
pub async fn final_check(
    scenario: &'static str,
    fleet: &mut Fleet,
    timeout: Duration,
    checks: &mut Checks,
) -> FinalCheck {
    let drained = fleet.drain(Instant::now() + timeout).await;
    checks.add(
        scenario,
        "devices drained",
        drained,
        if drained {
            "every device had its messages acknowledged".to_owned()
        } else {
            format!("some devices still had unacknowledged messages after {timeout:?}")
        },
    );
    let reread = fleet.reread(Instant::now() + timeout * 4).await;
    let (verification, error) = match reread {
        Ok(v) => (Some(v), None),
        Err(e) => (None, Some(format!("{e:#}"))),
    };
    match &verification {
        Some(v) => {
            checks.add(
                scenario,
                "re-read: no acknowledged message lost",
                v.lost == 0,
                format!(
                    "{} acknowledged, {} found, {} lost{}",
                    v.acknowledged,
                    v.found,
                    v.lost,
                    if v.lost_messages.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "; first: {:?}",
                            &v.lost_messages[..v.lost_messages.len().min(5)]
                        )
                    }
                ),
            );
            checks.add(
                scenario,
                "re-read: duplicates only of resent messages",
                v.unexplained_duplicates == 0,
                format!(
                    "{} duplicate copies of {} messages ({} messages were resent); {} copies beyond their sends",
                    v.duplicates,
                    v.duplicated_messages,
                    v.resent_messages,
                    v.unexplained_duplicates
                ),
            );
            checks.add(
                scenario,
                "re-read: nothing unknown",
                v.unknown == 0,
                match &v.first_unknown {
                    Some(first) => format!("{} unknown events; first: {first}", v.unknown),
                    None => format!("{} events read, all of them ours", v.events_read),
                },
            );
        }
        None => checks.add(
            scenario,
            "re-read of the whole log",
            false,
            error.clone().unwrap_or_default(),
        ),
    }
    FinalCheck {
        drained,
        verification,
        error,
    }
}

/// Runs the selected scenarios. `print_cycle` receives each per-cycle line.
pub async fn run(
    cfg: FaultsConfig,
    print_cycle: &(dyn Fn(&str) + Sync),
) -> anyhow::Result<FaultsSummary> {
    let started = Instant::now();
    let started_unix = crate::identity::unix_now();
    crate::conn::install_crypto();
    crate::procfs::raise_nofile(u64::MAX);
    std::fs::create_dir_all(&cfg.work_dir)
        .with_context(|| format!("creating {}", cfg.work_dir.display()))?;
    let mut rng = Rng::new(cfg.seed);
    let run_id = rng.next_u64();
    let mut checks = Checks::default();
    let mut summary = FaultsSummary {
        workload: "faults",
        ok: false,
        elapsed_s: 0.0,
        started_unix,
        config: cfg.clone(),
        kill: None,
        stall: None,
        flood: None,
        main_final: None,
        disk: None,
        checks: Vec::new(),
    };

    if cfg.scenarios.kill || cfg.scenarios.stall || cfg.scenarios.flood {
        let (config, note) = write_hub_config(
            &cfg.ferrohub_bin,
            &cfg.work_dir,
            "hub.toml",
            cfg.https_timeouts,
        )
        .await?;
        if let Some(note) = note {
            eprintln!("[faults] {note}");
        }
        let mut hub = HubProcess::new(
            HubOptions {
                bin: cfg.ferrohub_bin.clone(),
                data_dir: cfg.work_dir.join("hub-data"),
                config,
                log: cfg.work_dir.join("hub.log"),
                start_timeout: cfg.check_timeout,
            },
            rng.fork(),
        );
        let took = hub.start().await.context("starting the hub")?;
        eprintln!(
            "[faults] hub started in {:.2} s (pid {}), data in {}",
            took.as_secs_f64(),
            hub.pid().unwrap_or(0),
            hub.options().data_dir.display()
        );
        let result = main_scenarios(
            &cfg,
            &mut hub,
            run_id,
            &mut rng,
            &mut checks,
            print_cycle,
            &mut summary,
        )
        .await;
        let stopped = hub.stop(Duration::from_secs(15)).await;
        result?;
        match stopped {
            Ok(clean) => checks.add(
                "main",
                "hub stops cleanly on SIGTERM",
                clean,
                if clean {
                    "exited within 15 s".to_owned()
                } else {
                    "still running 15 s after SIGTERM; killed".to_owned()
                },
            ),
            Err(e) => checks.add(
                "main",
                "hub stops cleanly on SIGTERM",
                false,
                format!("{e:#}"),
            ),
        }
    }

    if cfg.scenarios.disk {
        summary.disk = Some(disk::run(&cfg, run_id ^ 0xd15c, &mut rng, &mut checks).await);
    }

    summary.ok = checks.all_ok();
    summary.checks = checks.list().to_vec();
    summary.elapsed_s = crate::stats::round1(started.elapsed().as_secs_f64());
    let path = cfg.work_dir.join("summary.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&summary)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(summary)
}

/// kill, stall and flood on one hub and one fleet, then the final re-read.
#[allow(clippy::too_many_arguments)]
async fn main_scenarios(
    cfg: &FaultsConfig,
    hub: &mut HubProcess,
    run_id: u64,
    rng: &mut Rng,
    checks: &mut Checks,
    print_cycle: &(dyn Fn(&str) + Sync),
    summary: &mut FaultsSummary,
) -> anyhow::Result<()> {
    let mut fleet = Fleet::start(main_fleet(cfg), hub.subscribe(), run_id, rng)
        .await
        .context("starting the fleet")?;
    let all = fleet.mqtt_devices();
    let connected = fleet
        .wait_connected(all, Instant::now() + cfg.check_timeout)
        .await;
    checks.add(
        "main",
        "devices connect",
        connected,
        format!(
            "{} of {all} MQTT devices connected",
            fleet
                .stats
                .connected
                .load(std::sync::atomic::Ordering::Relaxed)
        ),
    );
    if cfg.scenarios.kill {
        summary.kill = Some(kill::run(hub, &fleet, cfg, rng, checks, print_cycle).await);
    }
    if cfg.scenarios.stall {
        summary.stall = Some(stall::run(hub, &fleet, cfg, checks).await);
    }
    if cfg.scenarios.flood {
        summary.flood = Some(flood::run(hub, &fleet, cfg, checks).await);
    }
    let final_check = final_check("main", &mut fleet, cfg.check_timeout, checks).await;
    summary.main_final = Some(final_check);
    fleet.stop().await;
    Ok(())
}

/// Waits until `f` returns `Some`, polling every `every`, or `deadline`.
pub async fn wait_for<T, F, Fut>(deadline: Instant, every: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(every).await;
    }
}

/// A sample as text: `123 fds, 45.6 MiB`.
pub fn sample_text(s: Option<ProcSample>) -> String {
    match s {
        Some(s) => format!("{} fds, {:.1} MiB", s.fds, s.rss_kib as f64 / 1024.0),
        None => "?".into(),
    }
}

/// Text summary of a run.
pub fn text(s: &FaultsSummary) -> String {
    let mut out = format!(
        "faults: {} in {:.0} s (seed {}, work dir {})\n",
        if s.ok { "PASSED" } else { "FAILED" },
        s.elapsed_s,
        s.config.seed,
        s.config.work_dir.display()
    );
    if let Some(k) = &s.kill {
        out.push_str(&format!(
            "  kill -9: {} cycles; acknowledged {}, lost {}, duplicates {} (explained by resends: {}), unknown {}; hub fds {}–{}, RSS {:.1}–{:.1} MiB; restart p50 {} ms, max {} ms\n",
            k.cycles_run,
            k.acknowledged,
            k.lost,
            k.duplicates,
            k.unexplained_duplicates == 0,
            k.unknown,
            k.hub_fds.min,
            k.hub_fds.max,
            k.hub_rss_kib.min as f64 / 1024.0,
            k.hub_rss_kib.max as f64 / 1024.0,
            k.restart_ms_p50,
            k.restart_ms_max
        ));
    }
    if let Some(st) = &s.stall {
        out.push_str(&format!("  stall: {}\n", st.line()));
    }
    if let Some(f) = &s.flood {
        out.push_str(&format!("  flood: {}\n", f.line()));
    }
    if let Some(fc) = &s.main_final
        && let Some(v) = &fc.verification
    {
        out.push_str(&format!(
            "  main hub re-read: {} events; acknowledged {}, found {}, lost {}, duplicates {}, unknown {}\n",
            v.events_read, v.acknowledged, v.found, v.lost, v.duplicates, v.unknown
        ));
    }
    if let Some(d) = &s.disk {
        out.push_str(&format!("  disk: {}\n", d.line()));
    }
    let failed: Vec<&Check> = s.checks.iter().filter(|c| !c.ok).collect();
    if failed.is_empty() {
        out.push_str(&format!("  all {} checks held\n", s.checks.len()));
    } else {
        out.push_str(&format!(
            "  {} of {} checks failed:\n",
            failed.len(),
            s.checks.len()
        ));
        for c in failed {
            out.push_str(&format!("    [{}] {}: {}\n", c.scenario, c.name, c.detail));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenarios_parse() {
        let s: Scenarios = "kill,flood".parse().expect("parses");
        assert!(s.kill && s.flood && !s.disk && !s.stall);
        let all: Scenarios = "all".parse().expect("parses");
        assert!(all.kill && all.flood && all.disk && all.stall);
        assert!("kill,boom".parse::<Scenarios>().is_err());
        assert!("".parse::<Scenarios>().is_err());
    }

    #[test]
    fn ranges() {
        assert_eq!(Range::of([3, 1, 2]), Range { min: 1, max: 3 });
        assert_eq!(Range::of(Vec::<u64>::new()), Range::default());
    }

    #[test]
    fn checks_fail_when_one_fails() {
        let mut c = Checks::default();
        c.add("t", "a", true, "fine");
        assert!(c.all_ok());
        c.add("t", "b", false, "broken");
        assert!(!c.all_ok());
        assert_eq!(c.list().len(), 2);
    }
}
