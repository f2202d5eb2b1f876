//! A fleet that behaves like SDK devices through every fault: MQTT/TLS devices publishing at
//! QoS 1 and HTTPS senders, all stamping their messages, reconnecting with back-off when the hub
//! goes away and resending whatever was not acknowledged; and one reader per partition of the
//! event read API that counts every event into the [`Ledger`].
//!
//! A device keeps a message until the hub acknowledges it (PUBACK, HTTP 204), however many
//! connections that takes, and sends the same bytes again on every new connection (with DUP
//! set). It never queues new messages while disconnected: the test is about what the hub
//! acknowledged, not about offered load.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use bytes::{Bytes, BytesMut};
use ferrohub_api::{EndpointInfo, EventBatch};
use ferrohub_auth::SymmetricKey;
use ferrohub_mqtt::codec::Publish;
use ferrohub_mqtt::{Packet, QoS, TopicName};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::hub::{HubWatch, LiveHub};
use super::ledger::{self, Ledger, LostMessage, Observation, Tally, Verification};
use super::rng::Rng;
use crate::conn::{self, BoxIo, MAX_PACKET};
use crate::identity::{self, Credentials};
use crate::provision;

/// Keep-alive the devices announce; they ping when idle for half of it.
const KEEP_ALIVE: u16 = 60;
/// Longest a connection attempt (TCP, TLS, CONNECT, CONNACK) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest one write may take before the connection counts as broken.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest one HTTPS telemetry request may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// First and largest back-off between connection attempts (SDKs: exponential with jitter).
const BACKOFF_FIRST: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// What the fleet is.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// Device ids are `{prefix}{i}`.
    pub prefix: String,
    /// MQTT/TLS devices (indices `0..mqtt_devices`).
    pub mqtt_devices: usize,
    /// HTTPS senders (the next indices).
    pub https_senders: usize,
    /// Identities provisioned for the scenarios' own clients (the next indices).
    pub spares: usize,
    /// Messages per second each MQTT device offers.
    pub mqtt_rate: f64,
    /// Messages per second each HTTPS sender offers (one request at a time).
    pub https_rate: f64,
    /// Payload bytes (at least the stamp).
    pub payload: usize,
    /// Unacknowledged messages one MQTT connection may have in flight.
    pub inflight: usize,
}

/// What the devices are doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Sending new messages.
    Run,
    /// No new messages; finish when everything sent was acknowledged.
    Drain,
    /// Disconnect now.
    Stop,
}

/// Counters the fleet keeps as it goes.
#[derive(Debug, Default)]
pub struct FleetStats {
    /// MQTT devices connected now.
    pub connected: AtomicUsize,
    /// Successful MQTT connects.
    pub connects: AtomicU64,
    /// Failed connection attempts by kind.
    pub connect_failures: Mutex<BTreeMap<String, u64>>,
    /// Connections that broke, by reason.
    pub disconnects: Mutex<BTreeMap<String, u64>>,
    /// HTTPS sends that failed, by status or error kind.
    pub http_failures: Mutex<BTreeMap<String, u64>>,
    /// Acknowledgements per device index.
    pub device_acks: Vec<AtomicU64>,
    /// Event reads that failed.
    pub read_errors: AtomicU64,
}

impl FleetStats {
    fn count(map: &Mutex<BTreeMap<String, u64>>, key: String) {
        let mut m = map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *m.entry(key).or_default() += 1;
    }

    /// A copy of one of the maps.
    pub fn snapshot(map: &Mutex<BTreeMap<String, u64>>) -> BTreeMap<String, u64> {
        map.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// Where one partition's reader is.
#[derive(Debug, Default)]
struct Cursor {
    /// The next sequence number to read.
    next: AtomicU64,
    /// Sequence numbers skipped (an event arrived with a higher number than expected).
    gaps: AtomicU64,
    /// The last events read, `(sequence number, what it was)`: the evidence should the log
    /// later end below them.
    recent: Mutex<VecDeque<(u64, String)>>,
}

/// Events remembered per partition for [`Cursor::recent`].
const RECENT: usize = 64;

impl Cursor {
    fn remember(&self, seq: u64, what: String) {
        let mut r = self
            .recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if r.len() == RECENT {
            r.pop_front();
        }
        r.push_back((seq, what));
    }

    /// The remembered events at or after `from`.
    fn recent_from(&self, from: u64) -> Vec<String> {
        self.recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|(seq, _)| *seq >= from)
            .map(|(seq, what)| format!("#{seq} {what}"))
            .collect()
    }
}

/// One per-cycle check: is everything acknowledged so far in the log?
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckReport {
    /// Messages acknowledged up to the check.
    pub acked_total: u64,
    /// Acknowledged and not found once the readers had read past them.
    pub lost: Vec<LostMessage>,
    /// Whether the readers reached the end of every partition in time.
    pub caught_up: bool,
    /// Partitions whose end moved back below what readers had already read.
    pub regressions: Vec<String>,
    /// Copies beyond the first seen so far.
    pub duplicates_total: u64,
    /// Copies beyond the sends seen so far (must be 0).
    pub unexplained_total: u64,
    /// Unknown events so far (must be 0), and the first one.
    pub unknown_total: u64,
    /// The first unknown event.
    pub first_unknown: Option<String>,
    /// Sequence numbers skipped by the log so far.
    pub gaps_total: u64,
    /// Why the check could not be made, if it could not.
    pub error: Option<String>,
}

/// The fleet: devices, senders, readers and the book they share.
pub struct Fleet {
    cfg: FleetConfig,
    /// The book of every message.
    pub ledger: Arc<Ledger>,
    /// Counters.
    pub stats: Arc<FleetStats>,
    cycle: Arc<AtomicU32>,
    phase: watch::Sender<Phase>,
    devices: JoinSet<()>,
    readers: JoinSet<()>,
    reader_stop: watch::Sender<bool>,
    cursors: Arc<Vec<Cursor>>,
    hub: HubWatch,
    key: SymmetricKey,
}

impl Fleet {
    /// Provisions the fleet's identities in the running hub and starts everything.
    pub async fn start(
        cfg: FleetConfig,
        hub: HubWatch,
        run: u64,
        rng: &mut Rng,
    ) -> anyhow::Result<Fleet> {
        let live = hub.borrow().clone().context("the hub is not running")?;
        let total = cfg.mqtt_devices + cfg.https_senders + cfg.spares;
        let key = SymmetricKey::try_generate().context("generating the device key")?;
        provision::provision(&live.hub, &cfg.prefix, total, &key).await?;
        let info = partitions(&live).await?;
        let ids: Vec<String> = (0..total)
            .map(|i| identity::device_id(&cfg.prefix, i))
            .collect();
        let ledger = Arc::new(Ledger::new(run, ids));
        let stats = Arc::new(FleetStats {
            device_acks: (0..total).map(|_| AtomicU64::new(0)).collect(),
            ..FleetStats::default()
        });
        let cursors: Arc<Vec<Cursor>> = Arc::new(
            info.partitions
                .iter()
                .map(|p| Cursor {
                    next: AtomicU64::new(p.begin_sequence_number),
                    ..Cursor::default()
                })
                .collect(),
        );
        let (phase, _) = watch::channel(Phase::Run);
        let (reader_stop, _) = watch::channel(false);
        let cycle = Arc::new(AtomicU32::new(0));
        let mut fleet = Fleet {
            cfg,
            ledger,
            stats,
            cycle,
            phase,
            devices: JoinSet::new(),
            readers: JoinSet::new(),
            reader_stop,
            cursors,
            hub,
            key,
        };
        for p in 0..fleet.cursors.len() {
            let reader = Reader {
                partition: p,
                cursors: fleet.cursors.clone(),
                ledger: fleet.ledger.clone(),
                stats: fleet.stats.clone(),
                hub: fleet.hub.clone(),
                stop: fleet.reader_stop.subscribe(),
            };
            fleet.readers.spawn(reader.run());
        }
        for i in 0..fleet.cfg.mqtt_devices {
            let device = fleet.device(i, rng.fork())?;
            fleet.devices.spawn(device.run());
        }
        for j in 0..fleet.cfg.https_senders {
            let sender = fleet.sender(fleet.cfg.mqtt_devices + j, rng.fork());
            fleet.devices.spawn(sender.run());
        }
        Ok(fleet)
    }

    fn device(&self, index: usize, rng: Rng) -> anyhow::Result<MqttDevice> {
        let id = self.ledger.device_id(index).to_owned();
        Ok(MqttDevice {
            index,
            topic: identity::telemetry_topic(&id)?,
            id,
            key: self.key.clone(),
            rate: self.cfg.mqtt_rate,
            window: self.cfg.inflight.max(1),
            payload: self.cfg.payload,
            ledger: self.ledger.clone(),
            stats: self.stats.clone(),
            cycle: self.cycle.clone(),
            hub: self.hub.clone(),
            phase: self.phase.subscribe(),
            rng,
        })
    }

    fn sender(&self, index: usize, rng: Rng) -> HttpsSender {
        HttpsSender {
            index,
            id: self.ledger.device_id(index).to_owned(),
            key: self.key.clone(),
            rate: self.cfg.https_rate,
            payload: self.cfg.payload,
            ledger: self.ledger.clone(),
            stats: self.stats.clone(),
            cycle: self.cycle.clone(),
            hub: self.hub.clone(),
            phase: self.phase.subscribe(),
            rng,
        }
    }

    /// The device key every identity of the fleet has.
    pub fn key(&self) -> &SymmetricKey {
        &self.key
    }

    /// The ledger index and id of spare identity `i` (for the scenarios' own clients).
    pub fn spare(&self, i: usize) -> Option<(usize, String)> {
        (i < self.cfg.spares).then(|| {
            let index = self.cfg.mqtt_devices + self.cfg.https_senders + i;
            (index, self.ledger.device_id(index).to_owned())
        })
    }

    /// Indices of the fleet's own senders (MQTT devices, then HTTPS senders).
    pub fn sender_indices(&self) -> std::ops::Range<usize> {
        0..self.cfg.mqtt_devices + self.cfg.https_senders
    }

    /// How many MQTT devices the fleet has.
    pub fn mqtt_devices(&self) -> usize {
        self.cfg.mqtt_devices
    }

    /// Acknowledgements from now on count for cycle `cycle`.
    pub fn set_cycle(&self, cycle: u32) {
        self.cycle.store(cycle, Ordering::Relaxed);
    }

    /// The cycle acknowledgements count for.
    pub fn cycle(&self) -> u32 {
        self.cycle.load(Ordering::Relaxed)
    }

    /// Partitions of the event log.
    pub fn partitions(&self) -> usize {
        self.cursors.len()
    }

    /// Sum of the readers' positions (grows while readers keep up with a log that grows).
    pub fn read_position(&self) -> u64 {
        self.cursors
            .iter()
            .map(|c| c.next.load(Ordering::Relaxed))
            .sum()
    }

    /// Waits until `n` MQTT devices are connected, or `deadline`. Returns whether they were.
    pub async fn wait_connected(&self, n: usize, deadline: Instant) -> bool {
        loop {
            if self.stats.connected.load(Ordering::Relaxed) >= n {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Is everything acknowledged so far in the log? Takes the book first, then the log's
    /// ends, then waits (until `deadline`) for the readers to read up to those ends: a message
    /// acknowledged before the book was taken was durable before the ends were asked for, so
    /// it lies below them.
    pub async fn check(&self, deadline: Instant) -> CheckReport {
        let scan = self.ledger.scan();
        // Where the readers are before the ends are asked for: everything they had read by
        // then was durable by then, so the ends can only be at or beyond it. (Readers go on
        // reading while the ends are fetched; comparing with their later position would race.)
        let read: Vec<u64> = self
            .cursors
            .iter()
            .map(|c| c.next.load(Ordering::Relaxed))
            .collect();
        let mut report = CheckReport {
            acked_total: scan.acked,
            ..CheckReport::default()
        };
        let info = loop {
            let attempt = match self.hub.borrow().clone() {
                Some(live) => partitions(&live).await,
                None => Err(anyhow::anyhow!("the hub is not running")),
            };
            match attempt {
                Ok(info) => break info,
                Err(e) if Instant::now() >= deadline => {
                    report.error = Some(format!("reading the partitions' ends: {e:#}"));
                    self.fill_totals(&mut report);
                    return report;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        let ends: Vec<u64> = info
            .partitions
            .iter()
            .map(|p| u64::try_from(p.last_enqueued_sequence_number + 1).unwrap_or(0))
            .collect();
        for (p, (read, end)) in read.iter().zip(&ends).enumerate() {
            let read = *read;
            if *end < read {
                let vanished = self
                    .cursors
                    .get(p)
                    .map(|c| c.recent_from(*end))
                    .unwrap_or_default();
                report.regressions.push(format!(
                    "partition {p}: readers had read up to sequence number {}, the log now ends before {end}; read beyond it: {}",
                    read.saturating_sub(1),
                    vanished.join(", ")
                ));
            }
        }
        report.caught_up = loop {
            let behind = self
                .cursors
                .iter()
                .zip(&ends)
                .any(|(c, end)| c.next.load(Ordering::Relaxed) < *end);
            if !behind {
                break true;
            }
            if Instant::now() >= deadline {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        if report.caught_up {
            report.lost = self.ledger.still_unfound(&scan.unfound);
        } else {
            report.error = Some(format!(
                "the readers did not reach the log's end in time ({} acknowledged messages not found yet)",
                scan.unfound.len()
            ));
        }
        self.fill_totals(&mut report);
        report
    }

    fn fill_totals(&self, report: &mut CheckReport) {
        report.duplicates_total = self.ledger.duplicates_total();
        report.unexplained_total = self.ledger.unexplained_total();
        let (unknown, first) = self.ledger.unknown_total();
        report.unknown_total = unknown;
        report.first_unknown = first;
        report.gaps_total = self
            .cursors
            .iter()
            .map(|c| c.gaps.load(Ordering::Relaxed))
            .sum();
    }

    /// Stops new messages and waits (until `deadline`) for every device to have its messages
    /// acknowledged; then disconnects them all. Returns whether they finished in time.
    pub async fn drain(&mut self, deadline: Instant) -> bool {
        self.phase.send_replace(Phase::Drain);
        let finished = loop {
            if self.devices.is_empty() {
                break true;
            }
            match tokio::time::timeout_at(deadline, self.devices.join_next()).await {
                Ok(_) => {}
                Err(_) => break false,
            }
        };
        self.phase.send_replace(Phase::Stop);
        while self.devices.join_next().await.is_some() {}
        finished
    }

    /// Reads every partition from its beginning into a fresh tally and compares it with the
    /// book: the final verdict, independent of what the incremental readers counted.
    pub async fn reread(&self, deadline: Instant) -> anyhow::Result<Verification> {
        let live = self
            .hub
            .borrow()
            .clone()
            .context("the hub is not running")?;
        let info = partitions(&live).await?;
        let mut tally = Tally::new(self.ledger.devices());
        for p in &info.partitions {
            let end = u64::try_from(p.last_enqueued_sequence_number + 1).unwrap_or(0);
            let mut next = p.begin_sequence_number;
            while next < end {
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "re-reading partition {} took too long (at {next} of {end})",
                    p.partition_id
                );
                let batch = read_batch(&live, &p.partition_id, next, 0).await?;
                if batch.events.is_empty() {
                    anyhow::bail!(
                        "partition {} returned no events at {next}, below its end {end}",
                        p.partition_id
                    );
                }
                for event in &batch.events {
                    tally.add(&self.ledger, event);
                }
                next = batch.next_sequence_number.max(next + 1);
            }
        }
        Ok(self.ledger.verify(&tally))
    }

    /// Stops the readers and any device still running.
    pub async fn stop(&mut self) {
        self.phase.send_replace(Phase::Stop);
        self.reader_stop.send_replace(true);
        while self.devices.join_next().await.is_some() {}
        while self.readers.join_next().await.is_some() {}
    }
}

/// The event endpoint's partitions and their ends.
pub async fn partitions(live: &LiveHub) -> anyhow::Result<EndpointInfo> {
    let url = format!(
        "{}/messages/events/partitions?api-version={}",
        live.base,
        identity::API_VERSION
    );
    let response = live
        .http
        .get(&url)
        .header("Authorization", &live.service_token)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .context("listing partitions")?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    anyhow::ensure!(
        status.is_success(),
        "listing partitions failed: {status}: {text}"
    );
    serde_json::from_str(&text).context("parsing the partitions")
}

/// Up to 1000 events of `partition` from sequence number `next`, waiting up to `wait` seconds.
async fn read_batch(
    live: &LiveHub,
    partition: &str,
    next: u64,
    wait: u32,
) -> anyhow::Result<EventBatch> {
    let url = format!(
        "{}/messages/events/partitions/{partition}/events?api-version={}&sequenceNumber={next}&inclusive=true&max=1000&wait={wait}",
        live.base,
        identity::API_VERSION
    );
    let response = live
        .http
        .get(&url)
        .header("Authorization", &live.service_token)
        .timeout(Duration::from_secs(u64::from(wait) + 15))
        .send()
        .await
        .context("event read request")?;
    let status = response.status();
    let bytes = response.bytes().await.context("event read body")?;
    anyhow::ensure!(
        status.is_success(),
        "event read failed: {status}: {}",
        String::from_utf8_lossy(&bytes)
    );
    serde_json::from_slice(&bytes).context("parsing events")
}

/// Exponential back-off with jitter, as the SDKs retry.
struct Backoff {
    attempt: u32,
}

impl Backoff {
    fn next(&mut self, rng: &mut Rng) -> Duration {
        let exp = BACKOFF_FIRST.saturating_mul(1 << self.attempt.min(10));
        self.attempt = self.attempt.saturating_add(1);
        exp.min(BACKOFF_MAX).mul_f64(rng.uniform(0.5, 1.0))
    }

    fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Sleeps for `d` unless the phase turns to `Stop` first. Returns whether to go on.
async fn pause(d: Duration, phase: &mut watch::Receiver<Phase>) -> bool {
    let stopped = tokio::time::timeout(d, phase.wait_for(|p| *p == Phase::Stop))
        .await
        .is_ok();
    // Stop, or the fleet is gone.
    !stopped && *phase.borrow() != Phase::Stop
}

/// An MQTT/TLS device publishing at QoS 1.
struct MqttDevice {
    index: usize,
    id: String,
    topic: TopicName,
    key: SymmetricKey,
    rate: f64,
    window: usize,
    payload: usize,
    ledger: Arc<Ledger>,
    stats: Arc<FleetStats>,
    cycle: Arc<AtomicU32>,
    hub: HubWatch,
    phase: watch::Receiver<Phase>,
    rng: Rng,
}

/// Messages a device sent and the hub has not acknowledged: number → first send time (the
/// stamp, so a resend carries the same bytes).
type Unacked = BTreeMap<u32, u64>;

/// How a connection ended.
enum Ended {
    /// The phase said stop, or drained with nothing left.
    Done,
    /// It broke; reconnect.
    Broken(String),
}

impl MqttDevice {
    async fn run(mut self) {
        let mut unacked = Unacked::new();
        let mut next_k: u32 = 0;
        let mut backoff = Backoff { attempt: 0 };
        let interval = Duration::from_secs_f64(1.0 / self.rate.max(0.001));
        // Bounded by the phase: Stop ends every wait and every connection.
        loop {
            let phase = *self.phase.borrow();
            if phase == Phase::Stop || (phase == Phase::Drain && unacked.is_empty()) {
                break;
            }
            let Some(live) = self.hub.borrow().clone() else {
                if !pause(BACKOFF_MAX, &mut self.phase).await {
                    break;
                }
                continue;
            };
            let creds = Credentials::Sas {
                host: live.hub.device_host.clone(),
                key: self.key.clone(),
                expiry: identity::unix_now() + identity::TOKEN_TTL.as_secs(),
            };
            let connect = match creds.connect_bytes(&self.id, KEEP_ALIVE) {
                Ok(c) => c,
                Err(e) => {
                    FleetStats::count(&self.stats.connect_failures, format!("{e}"));
                    break;
                }
            };
            let (io, rbuf) =
                match conn::establish(&live.mqtt, None, &connect, CONNECT_TIMEOUT).await {
                    Ok(c) => c,
                    Err(e) => {
                        FleetStats::count(&self.stats.connect_failures, e.kind());
                        let wait = backoff.next(&mut self.rng);
                        if !pause(wait, &mut self.phase).await {
                            break;
                        }
                        continue;
                    }
                };
            backoff.reset();
            self.stats.connects.fetch_add(1, Ordering::Relaxed);
            self.stats.connected.fetch_add(1, Ordering::Relaxed);
            let ended = self
                .session(io, rbuf, &mut unacked, &mut next_k, interval)
                .await;
            self.stats.connected.fetch_sub(1, Ordering::Relaxed);
            match ended {
                Ended::Done => break,
                Ended::Broken(why) => {
                    FleetStats::count(&self.stats.disconnects, why);
                    let wait = backoff.next(&mut self.rng);
                    if !pause(wait, &mut self.phase).await {
                        break;
                    }
                }
            }
        }
    }

    fn publish(&self, k: u32, sent_ns: u64, pkid: u16, dup: bool, out: &mut BytesMut) -> bool {
        let packet = Packet::Publish(Publish {
            dup,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: self.topic.clone(),
            pkid: Some(pkid),
            payload: ledger::payload(self.ledger.run(), self.index, k, sent_ns, self.payload),
        });
        ferrohub_mqtt::encode(&packet, out).is_ok()
    }

    /// One connection: resends what is unacknowledged, then publishes at the rate.
    async fn session(
        &mut self,
        mut io: BoxIo,
        mut rbuf: BytesMut,
        unacked: &mut Unacked,
        next_k: &mut u32,
        interval: Duration,
    ) -> Ended {
        let mut inflight: HashMap<u16, u32> = HashMap::new();
        let mut resend: VecDeque<u32> = unacked.keys().copied().collect();
        let mut next_pkid: u16 = 1;
        let mut next_due = Instant::now();
        let mut last_write = Instant::now();
        let mut wbuf = BytesMut::new();
        let ping_every = Duration::from_secs(u64::from(KEEP_ALIVE) / 2);
        // Bounded by the phase (Stop ends it) and by the connection (any error ends it).
        loop {
            let phase = *self.phase.borrow();
            if phase == Phase::Stop || (phase == Phase::Drain && unacked.is_empty()) {
                let mut bye = BytesMut::new();
                let _ = ferrohub_mqtt::encode(&Packet::Disconnect, &mut bye);
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    let _ = io.write_all(&bye).await;
                    let _ = io.shutdown().await;
                })
                .await;
                return Ended::Done;
            }
            let now = Instant::now();
            while inflight.len() < self.window {
                let (k, sent_ns, dup) = if let Some(k) = resend.pop_front() {
                    match unacked.get(&k) {
                        Some(&t) => (k, t, true),
                        None => continue,
                    }
                } else if phase == Phase::Run && now >= next_due {
                    let k = *next_k;
                    *next_k += 1;
                    let t = identity::unix_now_nanos();
                    unacked.insert(k, t);
                    // Never build a backlog while the window was full or the hub away.
                    next_due = (next_due + interval).max(now.checked_sub(interval).unwrap_or(now));
                    (k, t, false)
                } else {
                    break;
                };
                while inflight.contains_key(&next_pkid) {
                    next_pkid = next_pkid.checked_add(1).unwrap_or(1);
                }
                let pkid = next_pkid;
                next_pkid = next_pkid.checked_add(1).unwrap_or(1);
                self.ledger.sent(self.index, k);
                if !self.publish(k, sent_ns, pkid, dup, &mut wbuf) {
                    return Ended::Broken("encode".into());
                }
                inflight.insert(pkid, k);
            }
            if !wbuf.is_empty() {
                match tokio::time::timeout(WRITE_TIMEOUT, io.write_all(&wbuf)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Ended::Broken(format!("write: {}", e.kind())),
                    Err(_) => return Ended::Broken("write: timed out".into()),
                }
                wbuf.clear();
                last_write = Instant::now();
            }
            let wake = if phase == Phase::Run && inflight.len() < self.window {
                next_due
            } else {
                last_write + ping_every
            };
            if rbuf.capacity() - rbuf.len() < 1024 {
                rbuf.reserve(8192);
            }
            tokio::select! {
                read = io.read_buf(&mut rbuf) => match read {
                    Ok(0) => return Ended::Broken("closed by the hub".into()),
                    Err(e) => return Ended::Broken(format!("read: {}", e.kind())),
                    Ok(_) => {
                        // Bounded by the bytes read: each decode consumes a packet or stops.
                        loop {
                            match ferrohub_mqtt::decode(&mut rbuf, MAX_PACKET) {
                                Ok(Some(Packet::PubAck(ack))) => {
                                    if let Some(k) = inflight.remove(&ack.pkid)
                                        && unacked.remove(&k).is_some()
                                    {
                                        let cycle = self.cycle.load(Ordering::Relaxed);
                                        self.ledger.acked(self.index, k, cycle);
                                        if let Some(n) = self.stats.device_acks.get(self.index) {
                                            n.fetch_add(1, Ordering::Relaxed);
                                        }
                                    }
                                }
                                Ok(Some(_)) => {}
                                Ok(None) => break,
                                Err(e) => return Ended::Broken(format!("decode: {e}")),
                            }
                        }
                    }
                },
                () = tokio::time::sleep_until(wake) => {
                    if wake == last_write + ping_every
                        && ferrohub_mqtt::encode(&Packet::PingReq, &mut wbuf).is_err()
                    {
                        return Ended::Broken("encode".into());
                    }
                }
                changed = self.phase.changed() => {
                    if changed.is_err() {
                        return Ended::Done;
                    }
                }
            }
        }
    }
}

/// A device sending telemetry over HTTPS, one request at a time, retrying a message until the
/// hub answers 204.
struct HttpsSender {
    index: usize,
    id: String,
    key: SymmetricKey,
    rate: f64,
    payload: usize,
    ledger: Arc<Ledger>,
    stats: Arc<FleetStats>,
    cycle: Arc<AtomicU32>,
    hub: HubWatch,
    phase: watch::Receiver<Phase>,
    rng: Rng,
}

impl HttpsSender {
    async fn run(mut self) {
        let interval = Duration::from_secs_f64(1.0 / self.rate.max(0.001));
        let mut next_due = Instant::now();
        let mut next_k: u32 = 0;
        let mut current: Option<(u32, u64)> = None;
        let mut backoff = Backoff { attempt: 0 };
        // Bounded by the phase: Stop ends every wait.
        loop {
            let phase = *self.phase.borrow();
            if phase == Phase::Stop || (phase == Phase::Drain && current.is_none()) {
                break;
            }
            let (k, sent_ns) = match current {
                Some(m) => m,
                None => {
                    let now = Instant::now();
                    if now < next_due {
                        if !pause(next_due - now, &mut self.phase).await {
                            break;
                        }
                        continue;
                    }
                    next_due = (next_due + interval).max(now.checked_sub(interval).unwrap_or(now));
                    let m = (next_k, identity::unix_now_nanos());
                    next_k += 1;
                    current = Some(m);
                    m
                }
            };
            let Some(live) = self.hub.borrow().clone() else {
                if !pause(BACKOFF_MAX, &mut self.phase).await {
                    break;
                }
                continue;
            };
            self.ledger.sent(self.index, k);
            match self.send(&live, k, sent_ns).await {
                Ok(()) => {
                    let cycle = self.cycle.load(Ordering::Relaxed);
                    self.ledger.acked(self.index, k, cycle);
                    if let Some(n) = self.stats.device_acks.get(self.index) {
                        n.fetch_add(1, Ordering::Relaxed);
                    }
                    current = None;
                    backoff.reset();
                }
                Err(why) => {
                    FleetStats::count(&self.stats.http_failures, why);
                    let wait = backoff.next(&mut self.rng);
                    if !pause(wait, &mut self.phase).await {
                        break;
                    }
                }
            }
        }
    }

    async fn send(&self, live: &LiveHub, k: u32, sent_ns: u64) -> Result<(), String> {
        let url = format!(
            "{}/devices/{}/messages/events?api-version={}",
            live.base,
            self.id,
            identity::API_VERSION
        );
        let token = identity::device_token(
            &live.hub.device_host,
            &self.id,
            &self.key,
            identity::unix_now() + identity::TOKEN_TTL.as_secs(),
        );
        let body = ledger::payload(self.ledger.run(), self.index, k, sent_ns, self.payload);
        let response = live
            .http
            .post(&url)
            .header("Authorization", token)
            .timeout(HTTP_TIMEOUT)
            .body(body)
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    "timeout".to_owned()
                } else if e.is_connect() {
                    "connect".to_owned()
                } else {
                    "request".to_owned()
                }
            })?;
        let status = response.status();
        // Read the body so the connection can be reused.
        let _ = response.bytes().await;
        if status == reqwest::StatusCode::NO_CONTENT {
            Ok(())
        } else {
            Err(format!("HTTP {}", status.as_u16()))
        }
    }
}

/// One partition's reader of the event read API.
struct Reader {
    partition: usize,
    cursors: Arc<Vec<Cursor>>,
    ledger: Arc<Ledger>,
    stats: Arc<FleetStats>,
    hub: HubWatch,
    stop: watch::Receiver<bool>,
}

impl Reader {
    async fn run(mut self) {
        let Some(cursor) = self.cursors.get(self.partition) else {
            return;
        };
        let partition = self.partition.to_string();
        // Bounded by `stop`.
        while !*self.stop.borrow() {
            let Some(live) = self.hub.borrow().clone() else {
                let _ = tokio::time::timeout(Duration::from_millis(100), self.stop.changed()).await;
                continue;
            };
            let next = cursor.next.load(Ordering::Relaxed);
            let batch = tokio::select! {
                b = read_batch(&live, &partition, next, 1) => b,
                _ = self.stop.changed() => break,
            };
            match batch {
                Ok(batch) => {
                    let mut expected = next;
                    for event in &batch.events {
                        if event.sequence_number > expected {
                            cursor
                                .gaps
                                .fetch_add(event.sequence_number - expected, Ordering::Relaxed);
                        }
                        expected = event.sequence_number + 1;
                        let what = match self.ledger.observe(event) {
                            Observation::First => "first copy",
                            Observation::Duplicate { .. } => "duplicate",
                            Observation::Unknown(_) => "unknown",
                        };
                        let id = self.ledger.identify(event).map_or_else(
                            |why| why.to_string(),
                            |(d, k)| format!("{} message {k}", self.ledger.device_id(d)),
                        );
                        cursor.remember(event.sequence_number, format!("{id} ({what})"));
                    }
                    cursor.next.store(
                        batch.next_sequence_number.max(expected).max(next),
                        Ordering::Relaxed,
                    );
                }
                Err(_) => {
                    self.stats.read_errors.fetch_add(1, Ordering::Relaxed);
                    let _ =
                        tokio::time::timeout(Duration::from_millis(100), self.stop.changed()).await;
                }
            }
        }
    }
}

/// Publishes one stamped message as a fresh device connection and waits for its PUBACK: the
/// "a legitimate device still gets through" probe of the flood and stall scenarios. Notes the
/// send and the acknowledgement in the ledger. Returns the time to CONNACK and to PUBACK.
pub async fn probe_publish(
    live: &LiveHub,
    ledger: &Ledger,
    key: &SymmetricKey,
    index: usize,
    k: u32,
    cycle: u32,
    timeout: Duration,
) -> Result<(Duration, Duration), String> {
    let id = ledger.device_id(index).to_owned();
    let creds = Credentials::Sas {
        host: live.hub.device_host.clone(),
        key: key.clone(),
        expiry: identity::unix_now() + identity::TOKEN_TTL.as_secs(),
    };
    let connect = creds
        .connect_bytes(&id, KEEP_ALIVE)
        .map_err(|e| e.to_string())?;
    let topic = identity::telemetry_topic(&id).map_err(|e| e.to_string())?;
    let began = Instant::now();
    let attempt = async {
        let (mut io, mut rbuf) = conn::establish(&live.mqtt, None, &connect, timeout)
            .await
            .map_err(|e| e.to_string())?;
        let connected = began.elapsed();
        let mut wbuf = BytesMut::new();
        let payload: Bytes =
            ledger::payload(ledger.run(), index, k, identity::unix_now_nanos(), 64);
        ferrohub_mqtt::encode(
            &Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: false,
                topic,
                pkid: Some(1),
                payload,
            }),
            &mut wbuf,
        )
        .map_err(|e| e.to_string())?;
        ledger.sent(index, k);
        io.write_all(&wbuf)
            .await
            .map_err(|e| format!("write: {e}"))?;
        // Bounded by the timeout around this block.
        loop {
            match ferrohub_mqtt::decode(&mut rbuf, MAX_PACKET) {
                Ok(Some(Packet::PubAck(ack))) if ack.pkid == 1 => {
                    ledger.acked(index, k, cycle);
                    let mut bye = BytesMut::new();
                    let _ = ferrohub_mqtt::encode(&Packet::Disconnect, &mut bye);
                    let _ = io.write_all(&bye).await;
                    return Ok((connected, began.elapsed()));
                }
                Ok(Some(_)) => continue,
                Ok(None) => {}
                Err(e) => return Err(format!("decode: {e}")),
            }
            rbuf.reserve(1024);
            match io.read_buf(&mut rbuf).await {
                Ok(0) => return Err("closed before PUBACK".into()),
                Ok(_) => {}
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| format!("no PUBACK within {timeout:?}"))?
}

/// Sends one stamped message over HTTPS as device `index` on a fresh connection; notes it in
/// the ledger. Returns the time to the 204.
pub async fn probe_https_send(
    live: &LiveHub,
    ledger: &Ledger,
    key: &SymmetricKey,
    index: usize,
    k: u32,
    cycle: u32,
    timeout: Duration,
) -> Result<Duration, String> {
    let id = ledger.device_id(index).to_owned();
    let client = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&live.hub.ca_pem).map_err(|e| e.to_string())?,
        )
        .resolve(&live.hub.device_host, live.hub.listeners.https)
        .pool_max_idle_per_host(0)
        .timeout(timeout)
        .build()
        .map_err(|e| e.to_string())?;
    let token = identity::device_token(
        &live.hub.device_host,
        &id,
        key,
        identity::unix_now() + identity::TOKEN_TTL.as_secs(),
    );
    let url = format!(
        "{}/devices/{id}/messages/events?api-version={}",
        live.base,
        identity::API_VERSION
    );
    let began = Instant::now();
    ledger.sent(index, k);
    let response = client
        .post(&url)
        .header("Authorization", token)
        .body(ledger::payload(
            ledger.run(),
            index,
            k,
            identity::unix_now_nanos(),
            64,
        ))
        .send()
        .await
        .map_err(|e| format!("{e:#}"))?;
    let status = response.status();
    if status == reqwest::StatusCode::NO_CONTENT {
        ledger.acked(index, k, cycle);
        Ok(began.elapsed())
    } else {
        Err(format!(
            "HTTP {}: {}",
            status.as_u16(),
            response.text().await.unwrap_or_default()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_with_jitter() {
        let mut rng = Rng::new(1);
        let mut b = Backoff { attempt: 0 };
        let first = b.next(&mut rng);
        assert!(
            first >= BACKOFF_FIRST / 2 && first <= BACKOFF_FIRST,
            "{first:?}"
        );
        for _ in 0..20 {
            let d = b.next(&mut rng);
            assert!(d <= BACKOFF_MAX, "{d:?}");
        }
        assert!(b.next(&mut rng) >= BACKOFF_MAX / 2);
        b.reset();
        assert!(b.next(&mut rng) <= BACKOFF_FIRST);
    }
}
