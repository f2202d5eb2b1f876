//! A disk that fills and frees: the hub's data directory on a small tmpfs of its own (mounting
//! needs root), filled by a filler file while devices publish, then freed again. Each cycle
//! does it twice:
//!
//! 1. **live**: fill; the hub must refuse (`/healthz` 503 with a reason; devices get no
//!    acknowledgement for what it could not store); readers must still read; free; `/healthz`
//!    must turn 200 and every device must get acknowledgements again — with no restart.
//! 2. **start full**: fill; kill -9; start the hub on the full disk; it must start and serve
//!    readers; free; it must resume by itself.
//!
//! The filler keeps taking whatever space appears while the disk is meant to be full, so the
//! hub cannot get by on space it frees itself. At the end every acknowledged message must be in
//! the log (a re-read of the whole log), as in every scenario.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::fleet::{Fleet, FleetConfig};
use super::hub::{HubOptions, HubProcess, ProcSample};
use super::rng::Rng;
use super::{Checks, FaultsConfig, FinalCheck, final_check, wait_for, write_hub_config};

/// Disk settings.
#[derive(Debug, Clone, Serialize)]
pub struct DiskConfig {
    /// Fill/free cycles (each: live, then start full).
    pub cycles: u32,
    /// Size of the tmpfs, MiB.
    pub size_mib: u64,
    /// How long the disk stays full once the hub refuses, seconds.
    pub hold_secs: f64,
    /// MQTT devices publishing.
    pub devices: usize,
    /// HTTPS senders.
    pub https_senders: usize,
    /// Messages per second each device offers.
    pub device_rate: f64,
}

/// One fill and free.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FillReport {
    /// Bytes the filler took.
    pub filler_mib: f64,
    /// From the start of the fill to the first `/healthz` 503, ms.
    pub refused_after_ms: Option<u64>,
    /// What `/healthz` said.
    pub reason: Option<String>,
    /// Acknowledgements while the hub reported the disk full (each must be in the log).
    pub acks_while_full: u64,
    /// Whether the hub started on the full disk (start-full phase only).
    pub started_full: Option<bool>,
    /// Whether readers read up to the log's end while the disk was full.
    pub readers_served: bool,
    /// From freeing the disk to `/healthz` 200, ms.
    pub recovered_after_ms: Option<u64>,
    /// From freeing the disk to every sender having an acknowledgement again, ms.
    pub resumed_after_ms: Option<u64>,
    /// Whether the same process served before and after (live phase: no restart).
    pub same_process: bool,
    /// The hub while the disk was full.
    pub during: Option<ProcSample>,
}

/// The scenario's result.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DiskSummary {
    /// Whether the tmpfs could be mounted.
    pub mounted: bool,
    /// Live fill/free per cycle.
    pub live: Vec<FillReport>,
    /// Start-full fill/free per cycle.
    pub start_full: Vec<FillReport>,
    /// The final re-read.
    pub final_check: Option<FinalCheck>,
    /// Why the scenario stopped early.
    pub error: Option<String>,
}

impl DiskSummary {
    /// A one-line summary.
    pub fn line(&self) -> String {
        let v = self
            .final_check
            .as_ref()
            .and_then(|f| f.verification.as_ref());
        format!(
            "{} live and {} start-full fills; refused after {} ms, recovered after {} ms (medians of the live fills); re-read: {}",
            self.live.len(),
            self.start_full.len(),
            median(self.live.iter().filter_map(|f| f.refused_after_ms)),
            median(self.live.iter().filter_map(|f| f.recovered_after_ms)),
            v.map_or("not made".into(), |v| format!(
                "acknowledged {}, lost {}, duplicates {}, unknown {}",
                v.acknowledged, v.lost, v.duplicates, v.unknown
            ))
        )
    }
}

fn median(values: impl Iterator<Item = u64>) -> String {
    let mut v: Vec<u64> = values.collect();
    v.sort_unstable();
    v.get(v.len() / 2).map_or("?".into(), u64::to_string)
}

/// A tmpfs mounted for the run; unmounted on drop.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size_mib: u64) -> anyhow::Result<Tmpfs> {
        if !rustix::process::geteuid().is_root() {
            anyhow::bail!(
                "mounting a tmpfs needs root; run as root or leave the disk scenario out (--scenarios kill,stall,flood)"
            );
        }
        std::fs::create_dir_all(dir)?;
        let status = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size_mib}m,mode=0700"),
                "ferrohub-faults",
            ])
            .arg(dir)
            .status()?;
        anyhow::ensure!(status.success(), "mount -t tmpfs failed ({status})");
        Ok(Tmpfs {
            dir: dir.to_owned(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let status = std::process::Command::new("umount").arg(&self.dir).status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!(
                "[disk] could not unmount {}; unmount it by hand",
                self.dir.display()
            );
        }
    }
}

/// Fills a file system with one file and keeps it full until stopped.
struct Filler {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    written: Arc<AtomicU64>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Filler {
    /// Writes `path` until the file system refuses, then goes on taking any space that
    /// appears, every 20 ms, until [`Filler::free`].
    fn start(path: PathBuf) -> Filler {
        let stop = Arc::new(AtomicBool::new(false));
        let written = Arc::new(AtomicU64::new(0));
        let task = {
            let (path, stop, written) = (path.clone(), stop.clone(), written.clone());
            tokio::task::spawn_blocking(move || {
                let Ok(mut f) = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                else {
                    return;
                };
                let big = vec![0xa5u8; 1 << 20];
                let small = vec![0xa5u8; 4096];
                let mut fill = |chunk: &[u8]| {
                    // Bounded by the file system's size.
                    while f.write_all(chunk).is_ok() {
                        written.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    }
                };
                fill(&big);
                fill(&small);
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20));
                    fill(&small);
                }
            })
        };
        Filler {
            path,
            stop,
            written,
            task: Some(task),
        }
    }

    /// Stops topping up and deletes the file. Returns the MiB it held.
    async fn free(mut self) -> f64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        let _ = std::fs::remove_file(&self.path);
        self.written.load(Ordering::Relaxed) as f64 / (1024.0 * 1024.0)
    }
}

/// Polls `/healthz` until it answers `want`; returns the body and how long it took.
async fn wait_health(hub: &HubProcess, want: u16, deadline: Instant) -> Option<(String, Duration)> {
    let began = Instant::now();
    wait_for(deadline, Duration::from_millis(50), || async {
        match hub.healthz(Duration::from_secs(2)).await {
            Ok((status, body)) if status == want => Some((body, began.elapsed())),
            _ => None,
        }
    })
    .await
}

/// Waits until every fleet sender has an acknowledgement beyond `before`.
async fn wait_resumed(fleet: &Fleet, before: &[u64], deadline: Instant) -> bool {
    wait_for(deadline, Duration::from_millis(50), || {
        let all = fleet.sender_indices().zip(before).all(|(i, b)| {
            fleet
                .stats
                .device_acks
                .get(i)
                .map_or(0, |n| n.load(Ordering::Relaxed))
                > *b
        });
        async move { all.then_some(()) }
    })
    .await
    .is_some()
}

fn sender_acks(fleet: &Fleet) -> Vec<u64> {
    fleet
        .sender_indices()
        .map(|i| {
            fleet
                .stats
                .device_acks
                .get(i)
                .map_or(0, |n| n.load(Ordering::Relaxed))
        })
        .collect()
}

/// Runs the disk scenario in its own hub on its own tmpfs.
pub async fn run(
    cfg: &FaultsConfig,
    run_id: u64,
    rng: &mut Rng,
    checks: &mut Checks,
) -> DiskSummary {
    let mut summary = DiskSummary::default();
    let mount_dir = cfg.work_dir.join("disk");
    let tmpfs = match Tmpfs::mount(&mount_dir, cfg.disk.size_mib) {
        Ok(t) => t,
        Err(e) => {
            checks.add("disk", "tmpfs mounted", false, format!("{e:#}"));
            summary.error = Some(format!("{e:#}"));
            return summary;
        }
    };
    summary.mounted = true;
    let result = in_tmpfs(cfg, &tmpfs.dir, run_id, rng, checks, &mut summary).await;
    if let Err(e) = result {
        checks.add("disk", "scenario ran to its end", false, format!("{e:#}"));
        summary.error = Some(format!("{e:#}"));
    }
    drop(tmpfs);
    summary
}

async fn in_tmpfs(
    cfg: &FaultsConfig,
    mount: &Path,
    run_id: u64,
    rng: &mut Rng,
    checks: &mut Checks,
    summary: &mut DiskSummary,
) -> anyhow::Result<()> {
    let (config, _) =
        write_hub_config(&cfg.ferrohub_bin, &cfg.work_dir, "disk-hub.toml", None).await?;
    let mut hub = HubProcess::new(
        HubOptions {
            bin: cfg.ferrohub_bin.clone(),
            data_dir: mount.join("data"),
            config,
            // The log stays off the small disk: it must not fill it, nor be lost with it.
            log: cfg.work_dir.join("disk-hub.log"),
            start_timeout: cfg.check_timeout,
        },
        rng.fork(),
    );
    hub.start().await?;
    let result = fills(cfg, &mut hub, run_id, rng, checks, summary).await;
    let _ = hub.stop(Duration::from_secs(15)).await;
    result
}

async fn fills(
    cfg: &FaultsConfig,
    hub: &mut HubProcess,
    run_id: u64,
    rng: &mut Rng,
    checks: &mut Checks,
    summary: &mut DiskSummary,
) -> anyhow::Result<()> {
    let d = &cfg.disk;
    let mut fleet = Fleet::start(
        FleetConfig {
            prefix: "faults-disk-".into(),
            mqtt_devices: d.devices,
            https_senders: d.https_senders,
            spares: 0,
            mqtt_rate: d.device_rate,
            https_rate: cfg.https_rate.min(d.device_rate.max(1.0)),
            payload: cfg.payload,
            inflight: cfg.inflight,
        },
        hub.subscribe(),
        run_id,
        rng,
    )
    .await?;
    let connected = fleet
        .wait_connected(d.devices, Instant::now() + cfg.check_timeout)
        .await;
    checks.add(
        "disk",
        "devices connect to the hub on the tmpfs",
        connected,
        format!("{} devices", d.devices),
    );
    let filler_path = hub
        .options()
        .data_dir
        .parent()
        .map_or_else(|| PathBuf::from("filler"), |p| p.join("filler"));
    let deadline = cfg.check_timeout;
    for c in 1..=d.cycles {
        fleet.set_cycle(c);
        // Publishing first, so there is something to lose.
        tokio::time::sleep(Duration::from_secs(1)).await;

        // Live: fill, refuse, serve readers, free, resume — one process throughout.
        let mut r = FillReport::default();
        let pid = hub.pid();
        let began = Instant::now();
        let filler = Filler::start(filler_path.clone());
        match wait_health(hub, 503, Instant::now() + deadline).await {
            Some((reason, _)) => {
                r.refused_after_ms = Some(began.elapsed().as_millis() as u64);
                r.reason = Some(reason);
            }
            None => r.refused_after_ms = None,
        }
        checks.add(
            "disk",
            "a full disk makes /healthz 503 with a reason",
            r.reason.as_deref().is_some_and(|b| !b.trim().is_empty()),
            match &r.reason {
                Some(b) => format!("after {} ms: {}", r.refused_after_ms.unwrap_or(0), b.trim()),
                None => format!("no 503 within {deadline:?}"),
            },
        );
        let acks = fleet.ledger.acked_total();
        tokio::time::sleep(crate::pacing::secs_to_duration(d.hold_secs)).await;
        r.acks_while_full = fleet.ledger.acked_total().saturating_sub(acks);
        r.during = hub.sample();
        let check = fleet.check(Instant::now() + deadline).await;
        r.readers_served = check.caught_up && check.lost.is_empty();
        checks.add(
            "disk",
            "readers read the whole log while the disk is full",
            r.readers_served,
            format!(
                "{} acknowledged, {} lost{}",
                check.acked_total,
                check.lost.len(),
                check
                    .error
                    .as_deref()
                    .map_or(String::new(), |e| format!("; {e}"))
            ),
        );
        let acks_before_free = sender_acks(&fleet);
        let freed = Instant::now();
        r.filler_mib = crate::stats::round1(filler.free().await);
        r.recovered_after_ms = wait_health(hub, 200, Instant::now() + deadline)
            .await
            .map(|(_, t)| t.as_millis() as u64);
        let resumed = wait_resumed(&fleet, &acks_before_free, Instant::now() + deadline).await;
        r.resumed_after_ms = resumed.then(|| freed.elapsed().as_millis() as u64);
        r.same_process = pid.is_some() && hub.pid() == pid;
        checks.add(
            "disk",
            "freeing the disk makes /healthz 200 again without a restart",
            r.recovered_after_ms.is_some() && r.same_process,
            format!(
                "after {} ms, same process: {}",
                r.recovered_after_ms.map_or("?".into(), |t| t.to_string()),
                r.same_process
            ),
        );
        checks.add(
            "disk",
            "freeing the disk makes every device's publishing resume",
            resumed,
            format!(
                "{} ({} acknowledgements came while the hub reported the disk full)",
                r.resumed_after_ms
                    .map_or(format!("not within {deadline:?}"), |t| format!(
                        "after {t} ms"
                    )),
                r.acks_while_full
            ),
        );
        summary.live.push(r);

        // Start full: fill, kill -9, start on the full disk, serve readers, free, resume.
        let mut r = FillReport::default();
        let began = Instant::now();
        let filler = Filler::start(filler_path.clone());
        if let Some((reason, _)) = wait_health(hub, 503, Instant::now() + deadline).await {
            r.refused_after_ms = Some(began.elapsed().as_millis() as u64);
            r.reason = Some(reason);
        }
        hub.kill9().await?;
        let started = hub.start().await;
        r.started_full = Some(started.is_ok());
        checks.add(
            "disk",
            "the hub starts on a full disk",
            started.is_ok(),
            match &started {
                Ok(t) => format!("answered /healthz after {} ms", t.as_millis()),
                Err(e) => format!("{e:#}"),
            },
        );
        if let Err(e) = started {
            let _ = filler.free().await;
            hub.start().await?;
            anyhow::bail!("the hub did not start on a full disk: {e:#}");
        }
        r.during = hub.sample();
        let check = fleet.check(Instant::now() + deadline).await;
        r.readers_served = check.caught_up && check.lost.is_empty();
        checks.add(
            "disk",
            "a hub started on a full disk serves readers",
            r.readers_served,
            format!(
                "{} acknowledged, {} lost{}",
                check.acked_total,
                check.lost.len(),
                check
                    .error
                    .as_deref()
                    .map_or(String::new(), |e| format!("; {e}"))
            ),
        );
        let pid = hub.pid();
        let acks_before_free = sender_acks(&fleet);
        let freed = Instant::now();
        r.filler_mib = crate::stats::round1(filler.free().await);
        r.recovered_after_ms = wait_health(hub, 200, Instant::now() + deadline)
            .await
            .map(|(_, t)| t.as_millis() as u64);
        let resumed = wait_resumed(&fleet, &acks_before_free, Instant::now() + deadline).await;
        r.resumed_after_ms = resumed.then(|| freed.elapsed().as_millis() as u64);
        r.same_process = pid.is_some() && hub.pid() == pid;
        checks.add(
            "disk",
            "a hub started on a full disk resumes once space returns",
            resumed && r.recovered_after_ms.is_some() && r.same_process,
            format!(
                "/healthz 200 after {} ms, every device acknowledged again after {} ms",
                r.recovered_after_ms.map_or("?".into(), |t| t.to_string()),
                r.resumed_after_ms.map_or("?".into(), |t| t.to_string())
            ),
        );
        summary.start_full.push(r);
        eprintln!("[disk] cycle {c}/{} done", d.cycles);
    }
    summary.final_check = Some(final_check("disk", &mut fleet, deadline, checks).await);
    fleet.stop().await;
    Ok(())
}
