//! The hub under test as a process of its own: the real `ferrohub serve` binary in a data
//! directory of the runner's, started, SIGKILLed, restarted on the same directory, and stopped.
//!
//! Ports are chosen below the kernel's ephemeral range (20000–29999) and kept across restarts.
//! Two reasons: clients find the hub where it was, as devices do; and while the hub is down, no
//! outgoing connection (ours or anyone's) can be handed its port as a local port — a client
//! connecting to a dead port in the ephemeral range can even connect to itself (TCP simultaneous
//! open) and then hold the port the hub needs. Should a port be taken anyway, the hub is started
//! on new ones and every client follows through [`HubProcess::subscribe`].

use std::io::{Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::time::Instant;

use super::rng::Rng;
use crate::conn::{Endpoint, Tls};
use crate::procfs;
use crate::target::Ferrohub;

/// Where a running hub is reachable, and clients for it. Replaced at every start.
pub struct LiveHub {
    /// The hub's files and listeners, read after it started.
    pub hub: Ferrohub,
    /// MQTT over TLS.
    pub mqtt: Endpoint,
    /// An HTTPS client trusting the hub's CA (fresh per start: no pooled connection to a dead
    /// process).
    pub http: reqwest::Client,
    /// An `iothubowner` token.
    pub service_token: String,
    /// `https://localhost:PORT`.
    pub base: String,
    /// Counts starts, so clients can tell a new process from the old one.
    pub generation: u64,
}

/// Shared view of the current hub; `None` before the first start.
pub type HubWatch = watch::Receiver<Option<Arc<LiveHub>>>;

/// The hub's file descriptors and resident memory at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ProcSample {
    /// Entries of `/proc/PID/fd`.
    pub fds: u64,
    /// `VmRSS`, KiB.
    pub rss_kib: u64,
}

/// How to run the hub.
#[derive(Debug, Clone)]
pub struct HubOptions {
    /// The `ferrohub` binary.
    pub bin: PathBuf,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Its configuration file.
    pub config: PathBuf,
    /// Where its output goes (appended across restarts).
    pub log: PathBuf,
    /// Longest a start may take until `/healthz` answers.
    pub start_timeout: Duration,
}

/// One hub process at a time, on one data directory.
pub struct HubProcess {
    opts: HubOptions,
    child: Option<Child>,
    pid: Option<u32>,
    ports: Option<Ports>,
    /// `--NAME-port` flags of listeners beyond HTTPS and MQTT (`--amqp-port`), from
    /// `ferrohub serve --help`, so every listener gets a port of the runner's.
    extra_port_flags: Option<Vec<String>>,
    live: watch::Sender<Option<Arc<LiveHub>>>,
    generation: u64,
    rng: Rng,
}

impl HubProcess {
    /// A hub that is not running yet.
    pub fn new(opts: HubOptions, rng: Rng) -> HubProcess {
        HubProcess {
            opts,
            child: None,
            pid: None,
            ports: None,
            extra_port_flags: None,
            live: watch::channel(None).0,
            generation: 0,
            rng,
        }
    }

    /// The options it runs with.
    pub fn options(&self) -> &HubOptions {
        &self.opts
    }

    /// Follows the hub across restarts.
    pub fn subscribe(&self) -> HubWatch {
        self.live.subscribe()
    }

    /// The current hub, if it was ever started.
    pub fn live(&self) -> Option<Arc<LiveHub>> {
        self.live.borrow().clone()
    }

    /// The running process's id.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// File descriptors and RSS of the running process.
    pub fn sample(&self) -> Option<ProcSample> {
        let pid = self.pid?;
        Some(ProcSample {
            fds: procfs::fd_count(pid).ok()?,
            rss_kib: procfs::rss_kib(pid).ok()?,
        })
    }

    /// Whether the process ended by itself (a crash); its exit status then.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok().flatten()?;
        self.child = None;
        self.pid = None;
        Some(status)
    }

    /// Starts the hub and waits until `/healthz` answers (any status: a hub on a full disk
    /// answers 503 and is up). Returns how long that took.
    pub async fn start(&mut self) -> anyhow::Result<Duration> {
        anyhow::ensure!(self.child.is_none(), "the hub is already running");
        let began = Instant::now();
        let mut last_error = None;
        if self.extra_port_flags.is_none() {
            let help = Command::new(&self.opts.bin)
                .args(["serve", "--help"])
                .output()
                .await
                .with_context(|| format!("running {} serve --help", self.opts.bin.display()))?;
            self.extra_port_flags = Some(extra_port_flags(&String::from_utf8_lossy(&help.stdout)));
        }
        for _ in 0..4 {
            let ports = match &self.ports {
                Some(p) => p.clone(),
                None => {
                    let mut used = Vec::new();
                    let mut pick = |rng: &mut Rng| -> anyhow::Result<u16> {
                        let p = free_port(rng, &used)?;
                        used.push(p);
                        Ok(p)
                    };
                    let https = pick(&mut self.rng)?;
                    let mqtt = pick(&mut self.rng)?;
                    let mut extra = Vec::new();
                    for flag in self.extra_port_flags.iter().flatten() {
                        extra.push((flag.clone(), pick(&mut self.rng)?));
                    }
                    let p = Ports { https, mqtt, extra };
                    self.ports = Some(p.clone());
                    p
                }
            };
            match self.start_on(&ports).await {
                Ok(()) => return Ok(began.elapsed()),
                Err(StartError::PortTaken(why)) => {
                    // Someone holds a port: start on new ones; clients follow.
                    self.ports = None;
                    last_error = Some(why);
                }
                Err(StartError::Other(e)) => return Err(e),
            }
        }
        anyhow::bail!(
            "the hub could not bind its ports: {}",
            last_error.unwrap_or_default()
        )
    }

    async fn start_on(&mut self, ports: &Ports) -> Result<(), StartError> {
        let (https, mqtt) = (ports.https, ports.mqtt);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.opts.log)
            .with_context(|| format!("opening {}", self.opts.log.display()))?;
        let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
        let log_err = log.try_clone().context("duplicating the log handle")?;
        let mut child = Command::new(&self.opts.bin)
            .arg("serve")
            .arg("--config")
            .arg(&self.opts.config)
            .arg("--data-dir")
            .arg(&self.opts.data_dir)
            .args(["--https-port", &https.to_string()])
            .args(["--mqtt-port", &mqtt.to_string()])
            .args(
                ports
                    .extra
                    .iter()
                    .flat_map(|(flag, port)| [flag.clone(), port.to_string()]),
            )
            .args(["--bind", "127.0.0.1", "--log", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            // Should the runner die, the hub goes with it.
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.opts.bin.display()))?;
        let pid = child.id();
        let deadline = Instant::now() + self.opts.start_timeout;
        let https_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, https));
        let mut probe: Option<reqwest::Client> = None;
        loop {
            if let Some(status) = child.try_wait().context("waiting for the hub")? {
                let tail = log_tail(&self.opts.log, log_start);
                if tail.contains("in use") || tail.contains("AddrInUse") {
                    return Err(StartError::PortTaken(tail));
                }
                return Err(StartError::Other(anyhow::anyhow!(
                    "the hub exited during start ({status}); its log:\n{tail}"
                )));
            }
            if Instant::now() >= deadline {
                let _ = child.start_kill();
                let _ = child.wait().await;
                let tail = log_tail(&self.opts.log, log_start);
                return Err(StartError::Other(anyhow::anyhow!(
                    "the hub did not answer /healthz within {:?}; its log:\n{tail}",
                    self.opts.start_timeout
                )));
            }
            if probe.is_none() {
                probe = probe_client(&self.opts.data_dir, https_addr);
            }
            if let Some(client) = &probe {
                let url = format!("https://localhost:{https}/healthz");
                if client.get(&url).send().await.is_ok() {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let live = self.connect_clients(https, mqtt)?;
        self.child = Some(child);
        self.pid = pid;
        self.live.send_replace(Some(Arc::new(live)));
        Ok(())
    }

    fn connect_clients(&mut self, https: u16, mqtt: u16) -> anyhow::Result<LiveHub> {
        let mut hub = Ferrohub::load(&self.opts.data_dir)?;
        // listeners.json is not rewritten when it could not be (a full disk); the ports are ours.
        hub.listeners.https = SocketAddr::from((Ipv4Addr::LOCALHOST, https));
        hub.listeners.mqtt = SocketAddr::from((Ipv4Addr::LOCALHOST, mqtt));
        let tls = Tls::from_ca_pem(&hub.ca_pem, "localhost", false)?;
        let http = hub.http_client()?;
        let service_token = hub.service_token()?;
        self.generation += 1;
        Ok(LiveHub {
            mqtt: Endpoint {
                addr: hub.listeners.mqtt,
                tls: Some(tls),
            },
            base: format!("https://{}:{https}", hub.device_host),
            hub,
            http,
            service_token,
            generation: self.generation,
        })
    }

    /// SIGKILL: the process gets no chance to flush or close anything. Waits until it is gone.
    pub async fn kill9(&mut self) -> anyhow::Result<()> {
        let mut child = self.child.take().context("the hub is not running")?;
        self.pid = None;
        child.start_kill().context("SIGKILL")?;
        child.wait().await.context("reaping the hub")?;
        Ok(())
    }

    /// SIGTERM and a wait for a clean exit (SIGKILL after `grace`). Returns whether it exited
    /// by itself in time.
    pub async fn stop(&mut self, grace: Duration) -> anyhow::Result<bool> {
        let Some(mut child) = self.child.take() else {
            return Ok(true);
        };
        self.pid = None;
        if let Some(pid) = child
            .id()
            .and_then(|p| rustix::process::Pid::from_raw(p as i32))
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        match tokio::time::timeout(grace, child.wait()).await {
            Ok(status) => {
                status.context("waiting for the hub")?;
                Ok(true)
            }
            Err(_) => {
                child.start_kill().context("SIGKILL")?;
                child.wait().await.context("reaping the hub")?;
                Ok(false)
            }
        }
    }

    /// `GET /healthz` on a new connection: status and body, or why there was no answer.
    pub async fn healthz(&self, timeout: Duration) -> Result<(u16, String), String> {
        let live = self.live().ok_or("the hub was never started")?;
        healthz(&live, timeout).await
    }
}

/// `GET /healthz` on a fresh connection (never a pooled one, which a flood or a dead process
/// could make look better or worse than a new client has it).
pub async fn healthz(live: &LiveHub, timeout: Duration) -> Result<(u16, String), String> {
    let client = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&live.hub.ca_pem).map_err(|e| e.to_string())?,
        )
        .resolve(&live.hub.device_host, live.hub.listeners.https)
        .pool_max_idle_per_host(0)
        .timeout(timeout)
        .build()
        .map_err(|e| e.to_string())?;
    let response = client
        .get(format!("{}/healthz", live.base))
        .send()
        .await
        .map_err(|e| format!("{e:#}"))?;
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    Ok((status, body))
}

/// The ports a hub runs on, kept across restarts.
#[derive(Debug, Clone)]
struct Ports {
    https: u16,
    mqtt: u16,
    /// `(flag, port)` for every other listener.
    extra: Vec<(String, u16)>,
}

/// The `--NAME-port` flags in `ferrohub serve --help` other than HTTPS, MQTT and the plain MQTT
/// port (off unless asked for).
fn extra_port_flags(help: &str) -> Vec<String> {
    let mut flags: Vec<String> = help
        .split(|c: char| c.is_whitespace() || c == ',' || c == '=' || c == '[' || c == ']')
        .filter(|w| w.starts_with("--") && w.ends_with("-port"))
        .filter(|w| !matches!(*w, "--https-port" | "--mqtt-port" | "--mqtt-plain-port"))
        .map(str::to_owned)
        .collect();
    flags.sort();
    flags.dedup();
    flags
}

enum StartError {
    PortTaken(String),
    Other(anyhow::Error),
}

impl From<anyhow::Error> for StartError {
    fn from(e: anyhow::Error) -> Self {
        StartError::Other(e)
    }
}

/// A client for the readiness probe, once the hub has written its CA.
fn probe_client(data_dir: &Path, https: SocketAddr) -> Option<reqwest::Client> {
    let ca = std::fs::read(data_dir.join("tls").join("ca.pem")).ok()?;
    let ca = reqwest::Certificate::from_pem(&ca).ok()?;
    crate::conn::install_crypto();
    reqwest::Client::builder()
        .add_root_certificate(ca)
        .resolve("localhost", https)
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(2))
        .build()
        .ok()
}

/// A free TCP port on 127.0.0.1 in 20000–29999, below the ephemeral range, not in `used`.
fn free_port(rng: &mut Rng, used: &[u16]) -> anyhow::Result<u16> {
    for _ in 0..500 {
        let port = 20_000 + (rng.next_u64() % 10_000) as u16;
        if !used.contains(&port) && TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return Ok(port);
        }
    }
    anyhow::bail!("no free port in 20000-29999")
}

/// The hub's output since byte `from` of its log, at most the last 4 KiB.
pub fn log_tail(path: &Path, from: u64) -> String {
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = from.max(len.saturating_sub(4096));
    if f.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut text = String::new();
    let _ = f.take(4096).read_to_string(&mut text);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_below_the_ephemeral_range() {
        let mut rng = Rng::new(3);
        let mut used = Vec::new();
        for _ in 0..5 {
            let p = free_port(&mut rng, &used).expect("a free port");
            assert!((20_000..30_000).contains(&p));
            assert!(!used.contains(&p));
            used.push(p);
        }
    }

    #[test]
    fn other_listeners_are_found_in_the_help() {
        let help = "Options:\n  --https-port <HTTPS_PORT>\n          HTTPS port\n      --mqtt-port <MQTT_PORT>\n      --mqtt-plain-port <P>\n      --amqp-port <AMQP_PORT>\n          AMQP 1.0 over TLS port; 0 picks a free one [default: 5671]\n      --bind <BIND>\n";
        assert_eq!(extra_port_flags(help), ["--amqp-port"]);
        assert!(extra_port_flags("--https-port --mqtt-port").is_empty());
    }

    #[test]
    fn log_tail_reads_from_the_offset() {
        let dir = std::env::temp_dir().join(format!("ferrohub-faults-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("hub.log");
        std::fs::write(&path, "old start\nnew start failed\n").expect("write");
        assert_eq!(log_tail(&path, 10), "new start failed\n");
        assert_eq!(log_tail(&dir.join("missing"), 0), "");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
