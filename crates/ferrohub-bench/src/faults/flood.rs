//! Connection floods on every port the hub listens on (`listeners.json`: HTTPS, MQTT over
//! TLS, and AMQP or any other listener once the hub has one): per port, thousands of
//! connections that do nothing (raw TCP, and TLS completed with no request) and byte-a-second
//! senders (a TLS ClientHello dripped, or a request, CONNECT or protocol header dripped after
//! the handshake). While flooded, a new device must still connect and publish, `/healthz` must
//! still answer and an HTTPS device must still send. The hub must close the idle and slow
//! clients by itself (its handshake, header, CONNECT and idle timeouts), and once the flood
//! ends its file descriptors and memory must come back.
//!
//! On the HTTPS port the closing is asserted only with `--expect-bounded-https` (the default):
//! a hub without HTTPS header and idle timeouts keeps such connections for ever, which the
//! runner then reports instead of failing on.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use ferrohub_mqtt::Packet;
use ferrohub_mqtt::codec::Connect;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use super::fleet::{self, Fleet};
use super::hub::{self, HubProcess, ProcSample};
use super::{Checks, FaultsConfig, sample_text, wait_for};
use crate::conn::BoxIo;

/// Flood settings.
#[derive(Debug, Clone, Serialize)]
pub struct FloodConfig {
    /// Idle connections per port (half raw TCP, half with TLS completed).
    pub idle: usize,
    /// Byte-a-second senders per port (half dripping a ClientHello, half dripping a request
    /// after the handshake).
    pub slow: usize,
    /// Longest the hub may take to close the idle and slow clients, seconds.
    pub close_deadline: f64,
    /// Whether the HTTPS port must close its idle and slow clients too.
    pub expect_bounded_https: Expect,
    /// How many descriptors above its pre-flood count the hub may keep.
    pub fd_slack: u64,
    /// How much memory above its pre-flood RSS the hub may keep, MiB.
    pub rss_slack_mib: u64,
}

/// Whether a property is required of the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Expect {
    /// Required: a failure fails the run.
    True,
    /// Measured and reported only.
    False,
    /// Required when the hub has the settings that provide it (for the HTTPS port: the
    /// `[https]` timeout settings, asked of `ferrohub config check`).
    Auto,
}

impl std::str::FromStr for Expect {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "true" | "yes" | "on" => Ok(Expect::True),
            "false" | "no" | "off" => Ok(Expect::False),
            "auto" => Ok(Expect::Auto),
            other => Err(format!("{other:?}: expected true, false or auto")),
        }
    }
}

/// The kinds of flood connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// TCP connected, nothing sent.
    IdleTcp,
    /// TCP connected, the first bytes of the handshake dripped one a second.
    SlowTcp,
    /// TLS completed, nothing sent.
    IdleTls,
    /// TLS completed, a request dripped one byte a second.
    SlowTls,
}

impl Kind {
    /// How the kind reads in a check's name.
    pub fn label(self) -> &'static str {
        match self {
            Kind::IdleTcp => "idle TCP",
            Kind::SlowTcp => "byte-a-second handshake",
            Kind::IdleTls => "idle TLS",
            Kind::SlowTls => "byte-a-second request",
        }
    }
}

const KINDS: [Kind; 4] = [Kind::IdleTcp, Kind::SlowTcp, Kind::IdleTls, Kind::SlowTls];

/// What a listener speaks, for the bytes the slow senders drip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// HTTP over TLS.
    Https,
    /// MQTT.
    Mqtt,
    /// AMQP.
    Amqp,
    /// Anything else.
    Other,
}

/// One listener to flood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortTarget {
    /// Its key in `listeners.json`.
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Whether it speaks TLS.
    pub tls: bool,
    /// Its protocol.
    pub proto: Proto,
}

/// Every listener in `listeners.json`: each key whose value is an address. A key with `plain`
/// in its name is plain TCP; everything else is TLS (as every Azure IoT Hub port is).
pub fn ports_from_listeners(json: &serde_json::Value) -> Vec<PortTarget> {
    let Some(map) = json.as_object() else {
        return Vec::new();
    };
    let mut out: Vec<PortTarget> = map
        .iter()
        .filter_map(|(name, v)| {
            let addr: SocketAddr = v.as_str()?.parse().ok()?;
            let lower = name.to_ascii_lowercase();
            let proto = if lower.contains("https") || lower.contains("http") {
                Proto::Https
            } else if lower.contains("mqtt") {
                Proto::Mqtt
            } else if lower.contains("amqp") {
                Proto::Amqp
            } else {
                Proto::Other
            };
            Some(PortTarget {
                name: name.clone(),
                addr,
                tls: !lower.contains("plain"),
                proto,
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// What the slow senders drip after connecting (plain ports) or after the handshake (TLS
/// ports): the start of a valid request that never ends, longer than any deadline in seconds.
pub fn slow_payload(proto: Proto) -> Vec<u8> {
    const LEN: usize = 8192;
    let mut out = match proto {
        Proto::Https => b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ".to_vec(),
        Proto::Mqtt => {
            // A CONNECT announcing a long password: the hub waits for the rest.
            let connect = Packet::Connect(Connect {
                clean_session: true,
                keep_alive: 60,
                client_id: "flood".into(),
                username: Some("localhost/flood/?api-version=2021-04-12".into()),
                password: Some(bytes::Bytes::from(vec![b'p'; LEN])),
                will: None,
            });
            let mut buf = BytesMut::new();
            let _ = ferrohub_mqtt::encode(&connect, &mut buf);
            buf.to_vec()
        }
        // The AMQP 1.0 SASL protocol header, then a frame header announcing a long frame.
        Proto::Amqp => {
            let mut v = b"AMQP\x03\x01\x00\x00".to_vec();
            v.extend_from_slice(&(LEN as u32).to_be_bytes());
            v.extend_from_slice(&[2, 1, 0, 0]);
            v
        }
        Proto::Other => Vec::new(),
    };
    let filler = if proto == Proto::Https { b'a' } else { 0 };
    out.resize(out.len().max(LEN), filler);
    out
}

/// Counters of one (port, kind).
#[derive(Debug, Default)]
struct KindCounters {
    opened: AtomicU64,
    open_failed: AtomicU64,
    closed_by_hub: AtomicU64,
    /// Idle TCP connections the hub never accepted: the kernel completed the handshake but
    /// dropped it from a full accept queue, and answered the probe byte with a reset. They
    /// hold nothing in the hub, though the client believes them open.
    never_accepted: AtomicU64,
    /// Longest time from open to the hub's close, ms.
    max_close_ms: AtomicU64,
}

impl KindCounters {
    fn open_now(&self) -> u64 {
        self.opened
            .load(Ordering::Relaxed)
            .saturating_sub(self.closed_by_hub.load(Ordering::Relaxed))
            .saturating_sub(self.never_accepted.load(Ordering::Relaxed))
    }
}

/// The connections of one kind on one port, while they run.
struct Group {
    kind: Kind,
    requested: usize,
    counters: Arc<KindCounters>,
    /// Whether the hub must close them.
    asserted: bool,
}

/// One (port, kind) after the flood.
#[derive(Debug, Clone, Serialize)]
pub struct KindReport {
    /// Which kind.
    pub kind: Kind,
    /// Connections asked for.
    pub requested: usize,
    /// Connections established (TCP, and TLS for the TLS kinds).
    pub opened: u64,
    /// Connections that could not be established (refused, reset, timed out).
    pub open_failed: u64,
    /// Closed by the hub before the flood ended.
    pub closed_by_hub: u64,
    /// Idle TCP connections the kernel never handed to the hub (a full accept queue).
    pub never_accepted: u64,
    /// Still open when the flood ended.
    pub still_open: u64,
    /// Longest time the hub took to close one, seconds.
    pub max_close_s: f64,
    /// Whether the hub was required to close them.
    pub asserted: bool,
}

/// One port after the flood.
#[derive(Debug, Clone, Serialize)]
pub struct PortReport {
    /// Its key in `listeners.json`.
    pub name: String,
    /// Its address.
    pub addr: String,
    /// Per kind.
    pub kinds: Vec<KindReport>,
}

/// The scenario's result.
#[derive(Debug, Clone, Serialize)]
pub struct FloodSummary {
    /// Per port.
    pub ports: Vec<PortReport>,
    /// The hub before the flood.
    pub before: Option<ProcSample>,
    /// The most descriptors and memory during the flood.
    pub peak: Option<ProcSample>,
    /// After the flood ended and the hub settled.
    pub after: Option<ProcSample>,
    /// A new MQTT device: milliseconds to CONNACK and to PUBACK while flooded.
    pub device_connect_ms: Option<(u64, u64)>,
    /// `/healthz` on a new connection while flooded, ms.
    pub healthz_ms: Option<u64>,
    /// An HTTPS telemetry send on a new connection while flooded, ms.
    pub https_send_ms: Option<u64>,
    /// Acknowledgements the fleet received while flooded.
    pub fleet_acks_during: u64,
    /// Seconds the flood lasted.
    pub duration_s: f64,
    /// Whether the HTTPS port was required to close idle and slow clients.
    pub https_asserted: bool,
    /// Connections the kernel dropped from full accept queues during the flood (machine-wide
    /// `TcpExt: ListenOverflows`, so other programs' count too).
    pub listen_overflows: Option<u64>,
}

impl FloodSummary {
    /// A one-line summary.
    pub fn line(&self) -> String {
        let ports: Vec<String> = self
            .ports
            .iter()
            .map(|p| {
                let opened: u64 = p.kinds.iter().map(|k| k.opened).sum();
                let open: u64 = p.kinds.iter().map(|k| k.still_open).sum();
                format!("{} {} opened, {} left open", p.name, opened, open)
            })
            .collect();
        format!(
            "{}; {} accept-queue overflows; fds/RSS before {}, peak {}, after {}; device {} ms, healthz {} ms while flooded",
            ports.join(", "),
            self.listen_overflows.map_or("?".into(), |n| n.to_string()),
            sample_text(self.before),
            sample_text(self.peak),
            sample_text(self.after),
            self.device_connect_ms
                .map_or("FAILED".into(), |(_, p)| p.to_string()),
            self.healthz_ms.map_or("FAILED".into(), |t| t.to_string()),
        )
    }
}

/// The machine's count of connections dropped from full accept queues (`ListenOverflows` in
/// `/proc/net/netstat`).
fn listen_overflows() -> Option<u64> {
    parse_listen_overflows(&std::fs::read_to_string("/proc/net/netstat").ok()?)
}

/// `ListenOverflows` from the text of `/proc/net/netstat` (a header line of names followed by a
/// line of values, per protocol).
pub fn parse_listen_overflows(netstat: &str) -> Option<u64> {
    let mut lines = netstat.lines();
    while let Some(names) = lines.next() {
        let values = lines.next()?;
        if !names.starts_with("TcpExt:") {
            continue;
        }
        let i = names
            .split_whitespace()
            .position(|n| n == "ListenOverflows")?;
        return values.split_whitespace().nth(i)?.parse().ok();
    }
    None
}

/// TLS client settings trusting the hub's CA, no resumption (every flood client is new).
pub(crate) fn tls_connector(ca_pem: &[u8]) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    crate::conn::install_crypto();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert.map_err(|e| anyhow::anyhow!("bad CA certificate: {e}"))?)?;
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// The bytes of a TLS ClientHello for `localhost`.
fn client_hello(config: &Arc<rustls::ClientConfig>) -> anyhow::Result<Vec<u8>> {
    let name = ServerName::try_from("localhost")?;
    let mut conn = rustls::ClientConnection::new(config.clone(), name)?;
    let mut out = Vec::new();
    // Bounded: a ClientHello is one flight.
    while conn.wants_write() {
        conn.write_tls(&mut out)?;
    }
    Ok(out)
}

/// What one flood connection needs.
#[derive(Clone)]
struct Shared {
    tls: TlsConnector,
    hello: Arc<Vec<u8>>,
    stop: watch::Receiver<bool>,
    /// Turns true when idle TCP clients still open should send their probe byte.
    probe: watch::Receiver<bool>,
}

/// The byte an idle TCP client sends to learn whether the hub holds its connection: the first
/// byte of what the listener expects (a TLS handshake record, an MQTT CONNECT), so a hub that
/// holds it keeps waiting, while a kernel that never handed it to the hub answers with a reset.
fn probe_byte(target: &PortTarget) -> u8 {
    match (target.tls, target.proto) {
        (true, _) => 0x16,
        (false, Proto::Mqtt) => 0x10,
        (false, _) => b'A',
    }
}

async fn flood_conn(
    target: Arc<PortTarget>,
    kind: Kind,
    slow: Arc<Vec<u8>>,
    counters: Arc<KindCounters>,
    mut shared: Shared,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let limit = Duration::from_secs(10);
    let tcp = match tokio::time::timeout(limit, TcpStream::connect(target.addr)).await {
        Ok(Ok(tcp)) => tcp,
        _ => {
            counters.open_failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let needs_tls = matches!(kind, Kind::IdleTls | Kind::SlowTls) && target.tls;
    let mut io: BoxIo = if needs_tls {
        let Ok(name) = ServerName::try_from("localhost") else {
            return;
        };
        match tokio::time::timeout(limit, shared.tls.connect(name, tcp)).await {
            Ok(Ok(s)) => Box::new(s),
            _ => {
                counters.open_failed.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    } else {
        Box::new(tcp)
    };
    counters.opened.fetch_add(1, Ordering::Relaxed);
    drop(permit);
    let opened = Instant::now();
    let drip: &[u8] = match kind {
        Kind::SlowTcp if target.tls => &shared.hello,
        Kind::SlowTcp | Kind::SlowTls => &slow,
        Kind::IdleTcp | Kind::IdleTls => &[],
    };
    let mut at = 0;
    let mut tick =
        tokio::time::interval_at(opened + Duration::from_secs(1), Duration::from_secs(1));
    let mut buf = [0u8; 2048];
    let mut probed = false;
    let closed = |counters: &KindCounters| {
        counters.closed_by_hub.fetch_add(1, Ordering::Relaxed);
        counters
            .max_close_ms
            .fetch_max(opened.elapsed().as_millis() as u64, Ordering::Relaxed);
    };
    // Bounded by `stop` (the flood's end) and by the hub closing the connection.
    loop {
        tokio::select! {
            changed = shared.stop.changed() => {
                if changed.is_err() || *shared.stop.borrow() {
                    return;
                }
            }
            read = io.read(&mut buf) => match read {
                // An alert, a 408, a refusal: the close follows.
                Ok(n) if n > 0 => {}
                Err(e) if probed && e.kind() == std::io::ErrorKind::ConnectionReset => {
                    counters.never_accepted.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                _ => {
                    closed(&counters);
                    return;
                }
            },
            changed = shared.probe.changed(), if kind == Kind::IdleTcp && !probed => {
                // Only ever turns true once; a dropped sender must not make this spin.
                probed = true;
                let go = changed.is_ok() && *shared.probe.borrow();
                if go && io.write_all(&[probe_byte(&target)]).await.is_err() {
                    counters.never_accepted.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
            _ = tick.tick(), if at < drip.len() => {
                if io.write_all(&drip[at..at + 1]).await.is_err() {
                    closed(&counters);
                    return;
                }
                at += 1;
            }
        }
    }
}

/// Runs the flood against `hub` while `fleet` publishes.
pub async fn run(
    hub: &HubProcess,
    fleet: &Fleet,
    cfg: &FaultsConfig,
    checks: &mut Checks,
) -> FloodSummary {
    let f = &cfg.flood;
    let started = Instant::now();
    let mut summary = FloodSummary {
        ports: Vec::new(),
        before: None,
        peak: None,
        after: None,
        device_connect_ms: None,
        healthz_ms: None,
        https_send_ms: None,
        fleet_acks_during: 0,
        duration_s: 0.0,
        https_asserted: false,
        listen_overflows: None,
    };
    let Some(live) = hub.live() else {
        checks.add("flood", "hub running", false, "the hub is not running");
        return summary;
    };
    let bounded_https = match f.expect_bounded_https {
        Expect::True => true,
        Expect::False => false,
        Expect::Auto => {
            let has = super::hub_has_https_timeouts(&cfg.ferrohub_bin, &cfg.work_dir).await;
            eprintln!(
                "[flood] --expect-bounded-https auto: this hub {} HTTPS timeout settings, so closing idle and slow HTTPS clients is {}",
                if has { "has" } else { "has no" },
                if has { "required" } else { "measured only" }
            );
            has
        }
    };
    summary.https_asserted = bounded_https;
    let listeners = std::fs::read_to_string(live.hub.data_dir.join("listeners.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .unwrap_or_default();
    let targets = ports_from_listeners(&listeners);
    if targets.is_empty() {
        checks.add(
            "flood",
            "listeners found",
            false,
            "listeners.json names no address",
        );
        return summary;
    }
    let config = match tls_connector(&live.hub.ca_pem) {
        Ok(c) => c,
        Err(e) => {
            checks.add("flood", "TLS client", false, format!("{e:#}"));
            return summary;
        }
    };
    let hello = match client_hello(&config) {
        Ok(h) => Arc::new(h),
        Err(e) => {
            checks.add("flood", "TLS client hello", false, format!("{e:#}"));
            return summary;
        }
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let (probe_tx, probe_rx) = watch::channel(false);
    let shared = Shared {
        tls: TlsConnector::from(config),
        hello,
        stop: stop_rx,
        probe: probe_rx,
    };
    let overflows_before = listen_overflows();
    // Let the hub settle from earlier scenarios before the baseline.
    tokio::time::sleep(Duration::from_secs(1)).await;
    summary.before = hub.sample();
    let acks_before = fleet.ledger.acked_total();
    let mut peak = summary.before;
    let note_peak = |peak: &mut Option<ProcSample>, s: Option<ProcSample>| {
        if let Some(s) = s {
            *peak = Some(match *peak {
                Some(p) => ProcSample {
                    fds: p.fds.max(s.fds),
                    rss_kib: p.rss_kib.max(s.rss_kib),
                },
                None => s,
            });
        }
    };

    // Open everything, at most 256 attempts at a time.
    let permits = Arc::new(Semaphore::new(256));
    let mut tasks = JoinSet::new();
    let mut table: Vec<(Arc<PortTarget>, Vec<Group>)> = Vec::new();
    for target in targets {
        let target = Arc::new(target);
        let slow = Arc::new(slow_payload(target.proto));
        let asserted_port = target.proto != Proto::Https || bounded_https;
        let mut kinds = Vec::new();
        for kind in KINDS {
            if !target.tls && matches!(kind, Kind::IdleTls | Kind::SlowTls) {
                continue;
            }
            let n = match kind {
                Kind::IdleTcp | Kind::IdleTls => f.idle / 2,
                Kind::SlowTcp | Kind::SlowTls => f.slow / 2,
            };
            let counters = Arc::new(KindCounters::default());
            kinds.push(Group {
                kind,
                requested: n,
                counters: counters.clone(),
                asserted: asserted_port,
            });
            for _ in 0..n {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    break;
                };
                tasks.spawn(flood_conn(
                    target.clone(),
                    kind,
                    slow.clone(),
                    counters.clone(),
                    shared.clone(),
                    permit,
                ));
            }
        }
        table.push((target, kinds));
    }
    // Every attempt has ended when all permits are back.
    let all_permits = 256;
    let opened_in_time = wait_for(
        Instant::now() + Duration::from_secs(60),
        Duration::from_millis(50),
        || {
            let ready = permits.available_permits() == all_permits;
            async move { ready.then_some(()) }
        },
    )
    .await
    .is_some();
    let opened: u64 = table
        .iter()
        .flat_map(|(_, k)| k.iter().map(|g| g.counters.opened.load(Ordering::Relaxed)))
        .sum();
    note_peak(&mut peak, hub.sample());
    eprintln!(
        "[flood] {opened} flood connections open after {:.1} s; hub {}",
        started.elapsed().as_secs_f64(),
        sample_text(hub.sample())
    );
    checks.add(
        "flood",
        "flood connections opened",
        opened_in_time && opened > 0,
        format!("{opened} connections across {} ports", table.len()),
    );

    // While flooded: a new device, /healthz and an HTTPS device get through.
    let probe_timeout = Duration::from_secs(10);
    let cycle = fleet.cycle();
    match fleet.spare(0) {
        Some((index, _)) => {
            match fleet::probe_publish(
                &live,
                &fleet.ledger,
                fleet.key(),
                index,
                0,
                cycle,
                probe_timeout,
            )
            .await
            {
                Ok((c, p)) => {
                    summary.device_connect_ms = Some((c.as_millis() as u64, p.as_millis() as u64));
                    checks.add(
                        "flood",
                        "a new MQTT device connects and publishes while flooded",
                        true,
                        format!(
                            "CONNACK in {} ms, PUBACK in {} ms",
                            c.as_millis(),
                            p.as_millis()
                        ),
                    );
                }
                Err(e) => checks.add(
                    "flood",
                    "a new MQTT device connects and publishes while flooded",
                    false,
                    e,
                ),
            }
        }
        None => checks.add(
            "flood",
            "a new MQTT device connects and publishes while flooded",
            false,
            "no spare identity",
        ),
    }
    let t = Instant::now();
    match hub::healthz(&live, probe_timeout).await {
        Ok((200, _)) => {
            summary.healthz_ms = Some(t.elapsed().as_millis() as u64);
            checks.add(
                "flood",
                "/healthz answers while flooded",
                true,
                format!("200 in {} ms", t.elapsed().as_millis()),
            );
        }
        Ok((status, body)) => checks.add(
            "flood",
            "/healthz answers while flooded",
            false,
            format!("{status}: {body}"),
        ),
        Err(e) => checks.add("flood", "/healthz answers while flooded", false, e),
    }
    if let Some((index, _)) = fleet.spare(1) {
        match fleet::probe_https_send(
            &live,
            &fleet.ledger,
            fleet.key(),
            index,
            0,
            cycle,
            probe_timeout,
        )
        .await
        {
            Ok(took) => {
                summary.https_send_ms = Some(took.as_millis() as u64);
                checks.add(
                    "flood",
                    "an HTTPS device sends while flooded",
                    true,
                    format!("204 in {} ms", took.as_millis()),
                );
            }
            Err(e) => checks.add("flood", "an HTTPS device sends while flooded", false, e),
        }
    }

    // The hub must close the idle and slow clients by itself.
    // Idle TCP clients are probed once everything else asserted is closed (or at the
    // deadline): those the kernel never handed to the hub are told apart from those it holds.
    let deadline = Instant::now() + crate::pacing::secs_to_duration(f.close_deadline);
    let waiting = |only_idle_tcp: bool| {
        table.iter().any(|(_, kinds)| {
            kinds.iter().any(|g| {
                g.asserted
                    && g.counters.open_now() > 0
                    && !(only_idle_tcp && g.kind == Kind::IdleTcp)
            })
        })
    };
    loop {
        note_peak(&mut peak, hub.sample());
        let now = Instant::now();
        if !*probe_tx.borrow() && (!waiting(true) || now >= deadline) {
            probe_tx.send_replace(true);
            // Time for the probe bytes to go out and the resets to come back.
            tokio::time::sleep(Duration::from_secs(2)).await;
            continue;
        }
        if !waiting(false) || now >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    summary.listen_overflows = match (overflows_before, listen_overflows()) {
        (Some(b), Some(a)) => Some(a.saturating_sub(b)),
        _ => None,
    };
    let flooded_for = started.elapsed();
    summary.fleet_acks_during = fleet.ledger.acked_total().saturating_sub(acks_before);
    for (target, kinds) in &table {
        let mut report = PortReport {
            name: target.name.clone(),
            addr: target.addr.to_string(),
            kinds: Vec::new(),
        };
        for Group {
            kind,
            requested,
            counters: c,
            asserted,
        } in kinds
        {
            let r = KindReport {
                kind: *kind,
                requested: *requested,
                opened: c.opened.load(Ordering::Relaxed),
                open_failed: c.open_failed.load(Ordering::Relaxed),
                closed_by_hub: c.closed_by_hub.load(Ordering::Relaxed),
                never_accepted: c.never_accepted.load(Ordering::Relaxed),
                still_open: c.open_now(),
                max_close_s: c.max_close_ms.load(Ordering::Relaxed) as f64 / 1000.0,
                asserted: *asserted,
            };
            let name = format!(
                "{}: {} clients are closed by the hub",
                target.name,
                kind.label()
            );
            let detail = format!(
                "{} opened ({} could not open), {} closed by the hub (the last after {:.1} s), {} never accepted, {} still open after {:.0} s",
                r.opened,
                r.open_failed,
                r.closed_by_hub,
                r.max_close_s,
                r.never_accepted,
                r.still_open,
                flooded_for.as_secs_f64()
            );
            if r.asserted {
                checks.add("flood", &name, r.still_open == 0, detail);
            } else {
                eprintln!("[flood] measured, not asserted: {name}: {detail}");
            }
            report.kinds.push(r);
        }
        summary.ports.push(report);
    }

    // End the flood; the hub must give its descriptors and memory back.
    stop_tx.send_replace(true);
    while tasks.join_next().await.is_some() {}
    drop(stop_tx);
    let before = summary.before;
    let fd_limit = before.map(|b| b.fds + f.fd_slack);
    let rss_limit = before.map(|b| b.rss_kib + f.rss_slack_mib * 1024);
    let settled = wait_for(
        Instant::now() + Duration::from_secs(30),
        Duration::from_millis(250),
        || {
            let s = hub.sample();
            async move {
                match (s, fd_limit, rss_limit) {
                    (Some(s), Some(fl), Some(rl)) if s.fds <= fl && s.rss_kib <= rl => Some(s),
                    _ => None,
                }
            }
        },
    )
    .await;
    summary.after = settled.or_else(|| hub.sample());
    summary.peak = peak;
    summary.duration_s = crate::stats::round1(flooded_for.as_secs_f64());
    let (b, a) = (summary.before, summary.after);
    checks.add(
        "flood",
        "hub file descriptors return after the flood",
        matches!((b, a), (Some(b), Some(a)) if a.fds <= b.fds + f.fd_slack),
        format!(
            "before {}, peak {}, after {} (allowed: before + {})",
            b.map_or("?".into(), |s| s.fds.to_string()),
            peak.map_or("?".into(), |s| s.fds.to_string()),
            a.map_or("?".into(), |s| s.fds.to_string()),
            f.fd_slack
        ),
    );
    checks.add(
        "flood",
        "hub memory returns after the flood",
        matches!((b, a), (Some(b), Some(a)) if a.rss_kib <= b.rss_kib + f.rss_slack_mib * 1024),
        format!(
            "RSS before {:.1} MiB, peak {:.1} MiB, after {:.1} MiB (allowed: before + {} MiB)",
            b.map_or(0.0, |s| s.rss_kib as f64 / 1024.0),
            peak.map_or(0.0, |s| s.rss_kib as f64 / 1024.0),
            a.map_or(0.0, |s| s.rss_kib as f64 / 1024.0),
            f.rss_slack_mib
        ),
    );
    match hub::healthz(&live, probe_timeout).await {
        Ok((200, _)) => checks.add("flood", "/healthz answers after the flood", true, "200"),
        Ok((status, body)) => checks.add(
            "flood",
            "/healthz answers after the flood",
            false,
            format!("{status}: {body}"),
        ),
        Err(e) => checks.add("flood", "/healthz answers after the flood", false, e),
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_address_in_listeners_json_is_a_target() {
        let json: serde_json::Value = serde_json::from_str(
            r#"{"https":"127.0.0.1:8443","mqtt":"127.0.0.1:8883","mqtt_plain":null,"amqp":"127.0.0.1:5671","version":3}"#,
        )
        .expect("json");
        let t = ports_from_listeners(&json);
        let names: Vec<&str> = t.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["amqp", "https", "mqtt"]);
        assert_eq!(t[0].proto, Proto::Amqp);
        assert!(t.iter().all(|p| p.tls));
        let plain: serde_json::Value =
            serde_json::from_str(r#"{"mqtt_plain":"127.0.0.1:1883"}"#).expect("json");
        let t = ports_from_listeners(&plain);
        assert_eq!(t.len(), 1);
        assert!(!t[0].tls);
        assert_eq!(t[0].proto, Proto::Mqtt);
        assert!(ports_from_listeners(&serde_json::Value::Null).is_empty());
    }

    #[test]
    fn slow_payloads_start_valid_and_never_finish() {
        let http = slow_payload(Proto::Https);
        assert!(http.starts_with(b"GET /healthz HTTP/1.1\r\n"));
        assert!(!http.windows(4).any(|w| w == b"\r\n\r\n"));
        assert!(http.len() >= 8192);
        let mqtt = slow_payload(Proto::Mqtt);
        assert_eq!(mqtt[0], 0x10, "a CONNECT");
        // Any prefix shorter than the whole packet is incomplete for the decoder.
        let mut prefix = BytesMut::from(&mqtt[..4000]);
        assert!(matches!(
            ferrohub_mqtt::decode(&mut prefix, 1 << 20),
            Ok(None)
        ));
        let amqp = slow_payload(Proto::Amqp);
        assert!(amqp.starts_with(b"AMQP\x03\x01\x00\x00"));
        assert!(slow_payload(Proto::Other).len() >= 8192);
    }

    #[test]
    fn listen_overflows_come_from_the_tcpext_lines() {
        let netstat = "TcpExt: SyncookiesSent ListenOverflows ListenDrops\nTcpExt: 0 1343 1343\nIpExt: InNoRoutes\nIpExt: 0\n";
        assert_eq!(parse_listen_overflows(netstat), Some(1343));
        assert_eq!(parse_listen_overflows("IpExt: A\nIpExt: 1\n"), None);
    }

    #[test]
    fn a_client_hello_is_a_tls_handshake_record() {
        crate::conn::install_crypto();
        let config = Arc::new(
            rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        );
        let hello = client_hello(&config).expect("hello");
        assert_eq!(hello[0], 0x16, "handshake record");
        assert!(hello.len() > 100);
    }
}
