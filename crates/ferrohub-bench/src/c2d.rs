//! The `c2d` workload: devices subscribe to their cloud-to-device topic over MQTT, and the
//! service side sends stamped messages over HTTPS (`POST /devices/{id}/messages/deviceBound`)
//! at a fixed total rate, round robin over the devices. The time from the send to the device's
//! receipt is the end-to-end latency; the time to the 2xx answer is the durable-enqueue latency.
//!
//! The hub queues at most 50 messages per device and refuses more with 403004. So that the
//! generator measures delivery rather than its own overload, it keeps at most
//! `max_outstanding` messages per device sent but not yet received; a message due for a device
//! at that bound is skipped (and counted), and the schedule goes on.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::Context;
use bytes::BytesMut;
use ferrohub_mqtt::codec::{PubAck, Publish, Subscribe, SubscribeReturnCode};
use ferrohub_mqtt::{Packet, QoS, TopicFilter};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Semaphore, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::conn::{BoxIo, Endpoint, MAX_PACKET};
use crate::connect::{OpenPlan, open_many};
use crate::identity::{self, Credentials};
use crate::pacing::Schedule;
use crate::procfs::{self, CpuUsage};
use crate::progress::{self, Counters, Labels};
use crate::publish::{KEEP_ALIVE, Stamp};
use crate::stats::{self, Latencies, LatencySummary};
use crate::target::Ferrohub;

/// The error code name the hub gives a send to a full device queue (403004).
pub const QUEUE_FULL: &str = "DeviceMaximumQueueDepthExceeded";

/// Messages a device queue holds in the hub; `max_outstanding` should stay below it.
pub const HUB_QUEUE_DEPTH: usize = 50;

/// How long a device may take to get its SUBACK.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one write (PUBACKs, PINGREQ) may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the generator checks whether every outstanding message has arrived.
const POLL: Duration = Duration::from_millis(10);

/// The c2d workload's settings.
#[derive(Debug, Clone)]
pub struct C2dConfig {
    /// Device connections.
    pub connections: usize,
    /// Total offered rate, messages per second.
    pub rate: f64,
    /// Body bytes per message (at least [`Stamp::LEN`]).
    pub payload: usize,
    /// Sending before measuring starts.
    pub warmup: Duration,
    /// The measured interval.
    pub duration: Duration,
    /// How long to wait for outstanding sends and messages after sending ends.
    pub read_timeout: Duration,
    /// Most HTTP sends in progress at once.
    pub concurrency: usize,
    /// Most messages per device sent but not yet received.
    pub max_outstanding: usize,
    /// How connections are opened.
    pub open: OpenPlan,
    /// Device ids are `{prefix}{i}`.
    pub device_prefix: String,
    /// The server's pid, for CPU and memory readings.
    pub server_pid: Option<u32>,
    /// How the service side sends.
    pub via: SendVia,
}

/// The service side's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SendVia {
    /// `POST /devices/{id}/messages/deviceBound`, one request per message.
    Https,
    /// The AMQP service endpoint's `/messages/devicebound` sender link, one connection,
    /// authorized with the owner policy's token on `$cbs`; a send is done at its outcome.
    Amqp,
}

impl C2dConfig {
    /// Refuses settings the workload cannot run with.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.connections == 0 {
            anyhow::bail!("c2d needs at least one device connection");
        }
        if !(self.rate > 0.0 && self.rate.is_finite()) {
            anyhow::bail!("--rate must be a positive number");
        }
        if self.payload < Stamp::LEN {
            anyhow::bail!("c2d needs a payload of at least {} bytes", Stamp::LEN);
        }
        if self.concurrency == 0 {
            anyhow::bail!("--concurrency must be at least 1");
        }
        if self.max_outstanding == 0 {
            anyhow::bail!("--max-outstanding must be at least 1");
        }
        Ok(())
    }
}

/// A message sent to a device and not received yet.
#[derive(Debug, Clone, Copy)]
struct Pending {
    in_window: bool,
    accepted: bool,
}

/// Per device, the messages sent but not yet received, at most `limit` of them.
#[derive(Debug)]
pub struct Outstanding {
    devices: Vec<Mutex<HashMap<u64, Pending>>>,
    limit: usize,
}

impl Outstanding {
    /// `devices` devices with room for `limit` messages each.
    pub fn new(devices: usize, limit: usize) -> Outstanding {
        Outstanding {
            devices: (0..devices).map(|_| Mutex::new(HashMap::new())).collect(),
            limit,
        }
    }

    fn device(&self, device: usize) -> Option<MutexGuard<'_, HashMap<u64, Pending>>> {
        self.devices
            .get(device)
            .map(|m| m.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Takes a place for message `seq` to `device`; `false` when the device is at the bound.
    pub fn reserve(&self, device: usize, seq: u64, in_window: bool) -> bool {
        let Some(mut pending) = self.device(device) else {
            return false;
        };
        if pending.len() >= self.limit {
            return false;
        }
        pending.insert(
            seq,
            Pending {
                in_window,
                accepted: false,
            },
        );
        true
    }

    /// The hub accepted `seq` (it may have arrived already).
    pub fn accepted(&self, device: usize, seq: u64) {
        if let Some(p) = self.device(device).as_mut().and_then(|d| d.get_mut(&seq)) {
            p.accepted = true;
        }
    }

    /// `seq` will not come (its send failed or was refused): frees its place.
    pub fn cancel(&self, device: usize, seq: u64) {
        if let Some(mut pending) = self.device(device) {
            pending.remove(&seq);
        }
    }

    /// `seq` arrived: frees its place. `true` when it was outstanding.
    pub fn received(&self, device: usize, seq: u64) -> bool {
        self.device(device)
            .is_some_and(|mut pending| pending.remove(&seq).is_some())
    }

    /// Messages outstanding over all devices.
    pub fn total(&self) -> usize {
        (0..self.devices.len())
            .filter_map(|d| self.device(d).map(|p| p.len()))
            .sum()
    }

    /// Messages due in the measured interval that the hub accepted and that never arrived.
    pub fn missing(&self) -> u64 {
        (0..self.devices.len())
            .filter_map(|d| {
                self.device(d)
                    .map(|p| p.values().filter(|m| m.in_window && m.accepted).count() as u64)
            })
            .sum()
    }
}

/// How the hub answered one send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// 2xx: the message is queued durably.
    Accepted,
    /// 403004: the device's queue is full.
    Refused,
    /// Anything else, with a description.
    Failed(String),
}

/// Classifies an answer from its status, its `iothub-errorcode` header and its body.
pub fn classify(status: reqwest::StatusCode, error_code: Option<&str>, body: &[u8]) -> SendOutcome {
    if status.is_success() {
        return SendOutcome::Accepted;
    }
    let parsed = serde_json::from_slice::<ferrohub_api::ErrorBody>(body).ok();
    let queue_full = status == reqwest::StatusCode::FORBIDDEN
        && (error_code == Some(QUEUE_FULL)
            || parsed.as_ref().and_then(|b| b.code_name()) == Some(QUEUE_FULL)
            || String::from_utf8_lossy(body).contains("403004"));
    if queue_full {
        return SendOutcome::Refused;
    }
    let text = match &parsed {
        Some(b) => b.message.clone(),
        None => String::from_utf8_lossy(body).into_owned(),
    };
    let text: String = text.chars().take(200).collect();
    SendOutcome::Failed(format!("{status}: {text}"))
}

/// `{base}/devices/{id}/{tail…}?api-version=…`, the device id escaped as a path segment.
pub fn device_url(base: &str, device_id: &str, tail: &[&str]) -> anyhow::Result<reqwest::Url> {
    let mut url = reqwest::Url::parse(base).with_context(|| format!("bad base URL {base:?}"))?;
    url.path_segments_mut()
        .map_err(|()| anyhow::anyhow!("{base:?} cannot take a path"))?
        .pop_if_empty()
        .push("devices")
        .push(device_id)
        .extend(tail);
    url.query_pairs_mut()
        .append_pair("api-version", identity::API_VERSION);
    Ok(url)
}

/// Empties each device's C2D queue, so that messages of earlier runs neither fill it nor arrive
/// during this one. Returns how many messages were removed.
async fn purge(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    ids: &[String],
    concurrency: usize,
) -> anyhow::Result<u64> {
    use futures_util::{StreamExt, TryStreamExt};
    let requests = ids.iter().map(|id| async move {
        let url = device_url(base, id, &["commands"])?;
        let response = http
            .delete(url)
            .header("Authorization", token)
            .send()
            .await
            .with_context(|| format!("purging {id}'s queue"))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            anyhow::bail!("purging {id}'s queue failed: {status}: {text}");
        }
        let result: ferrohub_api::PurgeMessageQueueResult =
            serde_json::from_str(&text).context("parsing the purge result")?;
        Ok(result.total_messages_purged)
    });
    futures_util::stream::iter(requests)
        .buffer_unordered(concurrency.max(1))
        .try_fold(0u64, |sum, n| async move { Ok(sum + n) })
        .await
}

/// What tells this run's messages apart, and when each was due.
#[derive(Debug, Clone, Copy)]
struct RunPlan {
    /// The run id in every stamp.
    run: u64,
    /// Message `seq` is due at `schedule.due(0, seq)` from the start.
    schedule: Schedule,
    /// The start, nanoseconds since the Unix epoch.
    t0_unix_ns: u64,
}

impl RunPlan {
    /// When message `seq` was due, nanoseconds since the Unix epoch.
    fn due_unix_ns(&self, seq: u64) -> u64 {
        let offset = u64::try_from(self.schedule.due(0, seq).as_nanos()).unwrap_or(u64::MAX);
        self.t0_unix_ns.saturating_add(offset)
    }
}

/// What the devices are told.
#[derive(Debug, Clone, Copy)]
enum Control {
    /// Subscribe and wait.
    Subscribe,
    /// Messages are being sent on this plan.
    Run(RunPlan),
    /// Disconnect.
    Stop,
}

/// What one device connection saw.
#[derive(Debug)]
struct DeviceReport {
    /// Receive time − stamped send time, messages due in the measured interval.
    latency: Latencies,
    /// Receive time − scheduled send time (includes the generator's own lateness).
    from_due: Latencies,
    /// Messages of this run due in the measured interval, received (first time).
    received: u64,
    /// Messages of this run received during the warm-up (first time).
    received_warmup: u64,
    /// Messages of this run received again.
    duplicates: u64,
    /// PUBLISHes with the DUP flag.
    redelivered: u64,
    /// Messages without this run's stamp.
    stale: u64,
    /// Why the connection ended early.
    error: Option<String>,
}

impl DeviceReport {
    fn new() -> DeviceReport {
        DeviceReport {
            latency: stats::histogram(),
            from_due: stats::histogram(),
            received: 0,
            received_warmup: 0,
            duplicates: 0,
            redelivered: 0,
            stale: 0,
            error: None,
        }
    }
}

/// One device's receiving side.
struct Receiver {
    position: usize,
    /// The run id, known from the start.
    run: u64,
    /// The schedule, known once sending starts.
    plan: Option<RunPlan>,
    seen: HashSet<u64>,
    report: DeviceReport,
}

impl Receiver {
    /// Notes one delivered message; returns whether it was new to this run.
    fn on_publish(&mut self, p: &Publish, now_unix_ns: u64, outstanding: &Outstanding) -> bool {
        if p.dup {
            self.report.redelivered += 1;
        }
        let Some(stamp) = Stamp::read(&p.payload).filter(|s| s.run == self.run) else {
            self.report.stale += 1;
            return false;
        };
        if !self.seen.insert(stamp.seq) {
            self.report.duplicates += 1;
            return false;
        }
        outstanding.received(self.position, stamp.seq);
        if stamp.in_window {
            self.report.received += 1;
            stats::record(
                &mut self.report.latency,
                Duration::from_nanos(now_unix_ns.saturating_sub(stamp.sent_unix_ns)),
            );
            if let Some(plan) = &self.plan {
                stats::record(
                    &mut self.report.from_due,
                    Duration::from_nanos(now_unix_ns.saturating_sub(plan.due_unix_ns(stamp.seq))),
                );
            }
        } else {
            self.report.received_warmup += 1;
        }
        true
    }
}

impl Receiver {
    /// Handles every whole packet in `rbuf`, putting a PUBACK for each QoS 1 message into
    /// `wbuf`. Returns how many messages were new to this run, and the SUBACK's verdict if one
    /// came; anything else is ignored.
    fn on_bytes(
        &mut self,
        rbuf: &mut BytesMut,
        wbuf: &mut BytesMut,
        now_unix_ns: u64,
        outstanding: &Outstanding,
    ) -> Result<(u64, Option<Result<(), String>>), String> {
        let mut new = 0;
        let mut suback = None;
        // Every packet decoded consumes bytes; the count bound is a backstop (the rest waits for
        // the next read).
        for _ in 0..1_000_000 {
            match ferrohub_mqtt::decode(rbuf, MAX_PACKET) {
                Ok(Some(Packet::Publish(p))) => {
                    if let Some(pkid) = p.pkid {
                        encode(&Packet::PubAck(PubAck { pkid }), wbuf)?;
                    }
                    new += u64::from(self.on_publish(&p, now_unix_ns, outstanding));
                }
                Ok(Some(Packet::SubAck(ack))) => {
                    suback = Some(match ack.return_codes.first() {
                        Some(SubscribeReturnCode::Success(QoS::AtLeastOnce)) => Ok(()),
                        Some(SubscribeReturnCode::Success(qos)) => {
                            Err(format!("subscription granted at {qos:?}, not QoS 1"))
                        }
                        _ => Err("subscription refused".to_owned()),
                    });
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => return Err(format!("decode: {e}")),
            }
        }
        Ok((new, suback))
    }
}

/// Encodes `packet` into `out`.
fn encode(packet: &Packet, out: &mut BytesMut) -> Result<(), String> {
    ferrohub_mqtt::encode(packet, out).map_err(|e| format!("encode: {e}"))
}

/// Drives one device: subscribes (answering on `ready` once the SUBACK is in), acknowledges
/// and notes every message of run `run` until told to stop, then disconnects.
#[allow(clippy::too_many_arguments)]
async fn drive_device(
    mut io: BoxIo,
    mut rbuf: BytesMut,
    position: usize,
    filter: TopicFilter,
    run: u64,
    outstanding: Arc<Outstanding>,
    ready: oneshot::Sender<Result<(), String>>,
    mut control: watch::Receiver<Control>,
    counters: Arc<Counters>,
) -> DeviceReport {
    let mut rx = Receiver {
        position,
        run,
        plan: None,
        seen: HashSet::new(),
        report: DeviceReport::new(),
    };
    let mut ready = Some(ready);
    let mut wbuf = BytesMut::new();
    let ping_every = Duration::from_secs(u64::from(KEEP_ALIVE) / 2);
    let subscribe = Packet::Subscribe(Subscribe {
        pkid: 1,
        filters: vec![(filter, QoS::AtLeastOnce)],
    });
    let mut failed = encode(&subscribe, &mut wbuf).err();
    let mut last_write = Instant::now();
    // Bounded by `Control::Stop`, which the run always sends; every iteration reads, writes or
    // waits.
    while failed.is_none() {
        if !wbuf.is_empty() {
            match tokio::time::timeout(WRITE_TIMEOUT, io.write_all(&wbuf)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    failed = Some(format!("write: {}", e.kind()));
                    break;
                }
                Err(_) => {
                    failed = Some("write: timed out".into());
                    break;
                }
            }
            wbuf.clear();
            last_write = Instant::now();
        }
        match *control.borrow_and_update() {
            Control::Stop => break,
            Control::Run(plan) => rx.plan = Some(plan),
            Control::Subscribe => {}
        }
        if rbuf.capacity() - rbuf.len() < 1024 {
            rbuf.reserve(8192);
        }
        tokio::select! {
            biased;
            changed = control.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            read = io.read_buf(&mut rbuf) => match read {
                Ok(0) => failed = Some("closed by server".into()),
                Err(e) => failed = Some(format!("read: {}", e.kind())),
                Ok(_) => {
                    // Sending starts only after the plan is published, so it is here before
                    // any message of the run.
                    if let Control::Run(plan) = *control.borrow() {
                        rx.plan = Some(plan);
                    }
                    let now_ns = identity::unix_now_nanos();
                    match rx.on_bytes(&mut rbuf, &mut wbuf, now_ns, &outstanding) {
                        Ok((new, suback)) => {
                            Counters::add(&counters.received, new);
                            if let Some(verdict) = suback {
                                failed = verdict.as_ref().err().cloned();
                                if let Some(tx) = ready.take() {
                                    let _ = tx.send(verdict);
                                }
                            }
                        }
                        Err(e) => failed = Some(e),
                    }
                }
            },
            () = tokio::time::sleep_until(last_write + ping_every) => {
                if let Err(e) = encode(&Packet::PingReq, &mut wbuf) {
                    failed = Some(e);
                }
            }
        }
    }
    if let Some(tx) = ready.take() {
        let why = failed
            .clone()
            .unwrap_or_else(|| "stopped before SUBACK".into());
        let _ = tx.send(Err(why));
    }
    if failed.is_some() {
        Counters::add(&counters.errors, 1);
    } else {
        let mut bye = BytesMut::new();
        let _ = ferrohub_mqtt::encode(&Packet::Disconnect, &mut bye);
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let _ = io.write_all(&bye).await;
            let _ = io.shutdown().await;
        })
        .await;
    }
    Counters::sub(&counters.connected, 1);
    rx.report.error = failed;
    rx.report
}

/// One finished send.
#[derive(Debug)]
struct Sent {
    in_window: bool,
    outcome: SendOutcome,
    took: Duration,
}

/// Sends one message; frees its place in `outstanding` unless the hub accepted it.
#[allow(clippy::too_many_arguments)]
async fn send_one(
    http: reqwest::Client,
    url: reqwest::Url,
    token: Arc<str>,
    body: Vec<u8>,
    position: usize,
    seq: u64,
    in_window: bool,
    outstanding: Arc<Outstanding>,
    counters: Arc<Counters>,
) -> Sent {
    let started = Instant::now();
    let result = async {
        let response = http
            .post(url)
            .header("Authorization", &*token)
            .header("iothub-messageid", seq.to_string())
            .body(body)
            .send()
            .await?;
        let status = response.status();
        let code = response
            .headers()
            .get(ferrohub_api::ERROR_CODE_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = response.bytes().await?;
        Ok::<_, reqwest::Error>(classify(status, code.as_deref(), &bytes))
    }
    .await;
    let took = started.elapsed();
    let outcome =
        result.unwrap_or_else(|e| SendOutcome::Failed(format!("{:#}", anyhow::Error::from(e))));
    if outcome == SendOutcome::Accepted {
        outstanding.accepted(position, seq);
        Counters::add(&counters.acked, 1);
    } else {
        outstanding.cancel(position, seq);
        Counters::add(&counters.errors, 1);
    }
    Sent {
        in_window,
        outcome,
        took,
    }
}

/// Sends one message over AMQP; frees its place in `outstanding` unless the hub accepted it.
#[allow(clippy::too_many_arguments)]
async fn send_one_amqp(
    amqp: crate::amqp::C2dSender,
    device_id: Arc<str>,
    body: Vec<u8>,
    position: usize,
    seq: u64,
    in_window: bool,
    outstanding: Arc<Outstanding>,
    counters: Arc<Counters>,
) -> Sent {
    let started = Instant::now();
    let outcome = amqp.send(&device_id, seq.to_string(), body).await;
    let took = started.elapsed();
    if outcome == SendOutcome::Accepted {
        outstanding.accepted(position, seq);
        Counters::add(&counters.acked, 1);
    } else {
        outstanding.cancel(position, seq);
        Counters::add(&counters.errors, 1);
    }
    Sent {
        in_window,
        outcome,
        took,
    }
}

/// What the sending side counted, messages due in the measured interval only.
#[derive(Debug)]
struct SendReport {
    /// Due in the interval.
    offered: u64,
    /// Attempted (not skipped).
    sent: u64,
    /// Answered 2xx.
    accepted: u64,
    /// Answered 403004.
    refused: u64,
    /// Failed otherwise (or no answer before the read timeout).
    errors: u64,
    /// The first failure, any message.
    first_error: Option<String>,
    /// Not sent: the device had `max_outstanding` messages outstanding.
    skipped: u64,
    /// Request to 2xx answer.
    latency: Latencies,
    /// How long after the end of the interval its last message went out (the concurrency bound
    /// held sends back).
    overrun: Duration,
}

impl SendReport {
    fn absorb(&mut self, sent: Sent) {
        if let SendOutcome::Failed(e) = &sent.outcome
            && self.first_error.is_none()
        {
            self.first_error = Some(e.clone());
        }
        if !sent.in_window {
            return;
        }
        match sent.outcome {
            SendOutcome::Accepted => {
                self.accepted += 1;
                stats::record(&mut self.latency, sent.took);
            }
            SendOutcome::Refused => self.refused += 1,
            SendOutcome::Failed(_) => self.errors += 1,
        }
    }
}

/// Timing shared by the sender and the devices.
#[derive(Debug, Clone, Copy)]
struct Clock {
    t0: Instant,
    warm_end: Instant,
    end: Instant,
    /// When waiting for answers and messages stops.
    read_end: Instant,
}

/// What the sender needs.
struct Sender {
    http: reqwest::Client,
    /// Per position, the device's send URL.
    urls: Vec<reqwest::Url>,
    /// Per position, the device's id.
    ids: Vec<Arc<str>>,
    /// The AMQP sender, when sending over AMQP.
    amqp: Option<crate::amqp::C2dSender>,
    token: Arc<str>,
    plan: RunPlan,
    payload: usize,
    concurrency: usize,
}

/// Sends on the schedule: message `j` is due at `j / rate` and goes to active device
/// `j mod active`.
async fn send_all(
    sender: Sender,
    active: &[usize],
    clock: Clock,
    outstanding: Arc<Outstanding>,
    counters: Arc<Counters>,
) -> SendReport {
    let mut report = SendReport {
        offered: 0,
        sent: 0,
        accepted: 0,
        refused: 0,
        errors: 0,
        first_error: None,
        skipped: 0,
        latency: stats::histogram(),
        overrun: Duration::ZERO,
    };
    let schedule = sender.plan.schedule;
    let j_warm = schedule.count_before(0, clock.warm_end - clock.t0);
    let j_end = schedule.count_before(0, clock.end - clock.t0);
    let body: Vec<u8> = (0..sender.payload).map(|i| b'a' + (i % 26) as u8).collect();
    let permits = Arc::new(Semaphore::new(sender.concurrency));
    let mut tasks: JoinSet<Sent> = JoinSet::new();
    let mut running_in_window = 0u64;
    let devices = active.len() as u64;
    for j in 0..j_end {
        tokio::time::sleep_until(clock.t0 + schedule.due(0, j)).await;
        while let Some(done) = tasks.try_join_next() {
            if let Ok(sent) = done {
                running_in_window -= u64::from(sent.in_window);
                report.absorb(sent);
            }
        }
        let Some((position, url, device_id)) = usize::try_from(j % devices.max(1))
            .ok()
            .and_then(|i| active.get(i))
            .and_then(|&p| Some((p, sender.urls.get(p)?.clone(), sender.ids.get(p)?.clone())))
        else {
            break;
        };
        let in_window = j >= j_warm;
        report.offered += u64::from(in_window);
        if !outstanding.reserve(position, j, in_window) {
            report.skipped += u64::from(in_window);
            continue;
        }
        let Ok(permit) = permits.clone().acquire_owned().await else {
            outstanding.cancel(position, j);
            break;
        };
        if in_window {
            report.sent += 1;
            running_in_window += 1;
            report.overrun = Instant::now().saturating_duration_since(clock.end);
        }
        Counters::add(&counters.sent, 1);
        let mut message = body.clone();
        Stamp {
            run: sender.plan.run,
            seq: j,
            sent_unix_ns: identity::unix_now_nanos(),
            in_window,
        }
        .write(&mut message);
        let (http, token) = (sender.http.clone(), sender.token.clone());
        let (outstanding, counters) = (outstanding.clone(), counters.clone());
        let amqp = sender.amqp.clone();
        tasks.spawn(async move {
            let sent = match amqp {
                Some(amqp) => {
                    send_one_amqp(
                        amqp,
                        device_id,
                        message,
                        position,
                        j,
                        in_window,
                        outstanding,
                        counters,
                    )
                    .await
                }
                None => {
                    send_one(
                        http,
                        url,
                        token,
                        message,
                        position,
                        j,
                        in_window,
                        outstanding,
                        counters,
                    )
                    .await
                }
            };
            drop(permit);
            sent
        });
    }
    // Every send gets until the read deadline to be answered.
    let _ = tokio::time::timeout_at(clock.read_end, async {
        while let Some(done) = tasks.join_next().await {
            if let Ok(sent) = done {
                running_in_window -= u64::from(sent.in_window);
                report.absorb(sent);
            }
        }
    })
    .await;
    if !tasks.is_empty() {
        tasks.abort_all();
        report.errors += running_in_window;
        if report.first_error.is_none() {
            report.first_error = Some("no answer before the read timeout".into());
        }
    }
    report
}

/// The c2d workload's result.
#[derive(Debug, Clone, Serialize)]
pub struct C2dSummary {
    /// `"c2d"`.
    pub workload: &'static str,
    /// The target as given.
    pub target: String,
    /// Whether device connections used TLS.
    pub tls: bool,
    /// Device connections asked for.
    pub connections: usize,
    /// Connections that were established.
    pub established: usize,
    /// Of those, subscribed to their C2D topic (the devices messages go to).
    pub subscribed: usize,
    /// Connection failures by kind.
    pub connect_failures: BTreeMap<String, u64>,
    /// The first connection failure's message.
    pub first_connect_failure: Option<String>,
    /// Subscription failures by reason.
    pub subscribe_failures: BTreeMap<String, u64>,
    /// Messages left in the devices' queues by earlier runs, removed before this one.
    pub purged: u64,
    /// Body bytes.
    pub payload_bytes: usize,
    /// The offered rate, messages per second.
    pub offered_rate: f64,
    /// How the service side sent.
    pub send_via: SendVia,
    /// Most sends in progress at once.
    pub concurrency: usize,
    /// Most messages per device sent but not yet received.
    pub max_outstanding: usize,
    /// Warm-up, seconds.
    pub warmup_s: f64,
    /// Measured interval, seconds.
    pub duration_s: f64,
    /// Messages due in the interval.
    pub offered: u64,
    /// Of those, sent (attempted).
    pub sent: u64,
    /// Answered 2xx: queued durably.
    pub accepted: u64,
    /// Answered 403004: the device's queue was full.
    pub refused: u64,
    /// Failed otherwise, or not answered before the read timeout.
    pub send_errors: u64,
    /// The first send failure.
    pub first_send_error: Option<String>,
    /// Not sent because the device had `max_outstanding` messages outstanding.
    pub skipped: u64,
    /// Messages due in the interval that devices received.
    pub received: u64,
    /// Messages of the warm-up that devices received.
    pub received_warmup: u64,
    /// Accepted messages due in the interval that never arrived.
    pub missing: u64,
    /// Messages of this run received more than once (should be 0).
    pub duplicates: u64,
    /// PUBLISHes carrying the DUP flag.
    pub redelivered: u64,
    /// Messages received without this run's stamp.
    pub stale: u64,
    /// How long after the interval's end its last message was sent, seconds (0 unless the
    /// concurrency bound held sends back).
    pub send_overrun_s: f64,
    /// Delivered rate: messages of the interval received, per second of the interval (plus
    /// the overrun).
    pub rate: f64,
    /// Service send to device receive, µs.
    pub latency_us: Option<LatencySummary>,
    /// Scheduled send to device receive, µs (also counts the generator's lateness).
    pub latency_from_due_us: Option<LatencySummary>,
    /// Send request to its 2xx answer (the durable enqueue), µs.
    pub send_latency_us: Option<LatencySummary>,
    /// Device connections that ended early, by reason.
    pub connection_errors: BTreeMap<String, u64>,
    /// CPU during the measured interval.
    pub cpu: Option<CpuUsage>,
    /// Server RSS at the end, KiB.
    pub server_rss_kib: Option<u64>,
}

/// Runs the c2d workload against a Ferrohub.
pub async fn run(
    hub: &Ferrohub,
    target_label: String,
    endpoint: &Endpoint,
    creds: &Credentials,
    cfg: &C2dConfig,
) -> anyhow::Result<C2dSummary> {
    cfg.check()?;
    let schedule = Schedule::new(1, cfg.rate)
        .ok_or_else(|| anyhow::anyhow!("--rate must be a positive number"))?;
    procfs::raise_nofile(cfg.connections as u64 + cfg.concurrency as u64 + 1024);
    let http = hub.http_client()?;
    let token: Arc<str> = Arc::from(hub.service_token()?);
    let base = hub.base_url();
    let ids: Vec<String> = (0..cfg.connections)
        .map(|i| identity::device_id(&cfg.device_prefix, i))
        .collect();
    let mut connects = Vec::with_capacity(ids.len());
    let mut filters = Vec::with_capacity(ids.len());
    let mut urls = Vec::with_capacity(ids.len());
    for id in &ids {
        connects.push(creds.connect_bytes(id, KEEP_ALIVE)?);
        filters.push(identity::c2d_filter(id)?);
        urls.push(device_url(&base, id, &["messages", "deviceBound"])?);
    }
    let purged = purge(&http, &base, &token, &ids, cfg.concurrency).await?;

    let opened = open_many(
        endpoint,
        connects,
        &cfg.open,
        &Arc::new(Counters::default()),
    )
    .await;
    let established = opened.connections.len();
    if established == 0 {
        anyhow::bail!(
            "no connection could be established: {}",
            opened.first_failure.as_deref().unwrap_or("unknown")
        );
    }
    if established < cfg.connections {
        eprintln!(
            "warning: {established} of {} connections established ({:?})",
            cfg.connections, opened.failures
        );
    }

    // Positions number the established connections; `urls_by_position` follows them.
    let counters = Arc::new(Counters::default());
    Counters::add(&counters.connected, established as u64);
    let outstanding = Arc::new(Outstanding::new(established, cfg.max_outstanding));
    let run_id = Stamp::new_run_id()?;
    let (control_tx, control_rx) = watch::channel(Control::Subscribe);
    let mut devices = JoinSet::new();
    let mut readies = Vec::with_capacity(established);
    let mut urls_by_position = Vec::with_capacity(established);
    let mut ids_by_position: Vec<Arc<str>> = Vec::with_capacity(established);
    for (position, (i, io, buf)) in opened.connections.into_iter().enumerate() {
        let (ready_tx, ready_rx) = oneshot::channel();
        readies.push(ready_rx);
        let (Some(filter), Some(url)) = (filters.get(i).cloned(), urls.get(i).cloned()) else {
            anyhow::bail!("connection {i} has no device");
        };
        urls_by_position.push(url);
        ids_by_position.push(Arc::from(ids.get(i).map_or("", String::as_str)));
        devices.spawn(drive_device(
            io,
            buf,
            position,
            filter,
            run_id,
            outstanding.clone(),
            ready_tx,
            control_rx.clone(),
            counters.clone(),
        ));
    }
    let subscribe_deadline = Instant::now() + SUBSCRIBE_TIMEOUT;
    let mut active = Vec::with_capacity(established);
    let mut subscribe_failures: BTreeMap<String, u64> = BTreeMap::new();
    for (position, ready) in readies.into_iter().enumerate() {
        let why = match tokio::time::timeout_at(subscribe_deadline, ready).await {
            Ok(Ok(Ok(()))) => {
                active.push(position);
                continue;
            }
            Ok(Ok(Err(why))) => why,
            Ok(Err(_)) => "device task ended".to_owned(),
            Err(_) => "no SUBACK in time".to_owned(),
        };
        *subscribe_failures.entry(why).or_default() += 1;
    }
    if active.is_empty() {
        let _ = control_tx.send(Control::Stop);
        while devices.join_next().await.is_some() {}
        anyhow::bail!("no device could subscribe: {subscribe_failures:?}");
    }
    if active.len() < established {
        eprintln!(
            "warning: {} of {established} devices subscribed ({subscribe_failures:?})",
            active.len()
        );
    }

    let lead = Duration::from_millis(200);
    let t0 = Instant::now() + lead;
    let plan = RunPlan {
        run: run_id,
        schedule,
        t0_unix_ns: identity::unix_now_nanos()
            .saturating_add(u64::try_from(lead.as_nanos()).unwrap_or(0)),
    };
    let _ = control_tx.send(Control::Run(plan));
    let clock = Clock {
        t0,
        warm_end: t0 + cfg.warmup,
        end: t0 + cfg.warmup + cfg.duration,
        read_end: t0 + cfg.warmup + cfg.duration + cfg.read_timeout,
    };
    let progress = progress::spawn(
        counters.clone(),
        Labels {
            workload: "c2d",
            sent: "sent",
            acked: "accepted",
            received: Some("received"),
        },
        cfg.warmup + cfg.duration + cfg.read_timeout + Duration::from_secs(2),
    );
    let cpu_task = {
        let pid = cfg.server_pid;
        tokio::spawn(async move {
            tokio::time::sleep_until(clock.warm_end).await;
            let meter = procfs::CpuMeter::start(pid);
            tokio::time::sleep_until(clock.end).await;
            meter.finish()
        })
    };
    let amqp = match cfg.via {
        SendVia::Amqp => Some(crate::amqp::C2dSender::start(hub).await?),
        SendVia::Https => None,
    };
    let sender = Sender {
        http,
        urls: urls_by_position,
        ids: ids_by_position,
        amqp,
        token,
        plan,
        payload: cfg.payload,
        concurrency: cfg.concurrency,
    };
    let sent = send_all(
        sender,
        &active,
        clock,
        outstanding.clone(),
        counters.clone(),
    )
    .await;
    // Wait for the messages still outstanding, up to the read deadline.
    while outstanding.total() > 0 && Instant::now() < clock.read_end {
        tokio::time::sleep(POLL).await;
    }
    let _ = control_tx.send(Control::Stop);

    let mut latency = stats::histogram();
    let mut from_due = stats::histogram();
    let (mut received, mut received_warmup, mut duplicates, mut redelivered, mut stale) =
        (0, 0, 0, 0, 0);
    let connection_errors = stats::join_reports(&mut devices, |r| {
        stats::merge(&mut latency, &r.latency);
        stats::merge(&mut from_due, &r.from_due);
        received += r.received;
        received_warmup += r.received_warmup;
        duplicates += r.duplicates;
        redelivered += r.redelivered;
        stale += r.stale;
        r.error
    })
    .await;
    progress.abort();
    let cpu = cpu_task.await.ok();
    let server_rss_kib = cfg.server_pid.and_then(|p| procfs::rss_kib(p).ok());
    Ok(C2dSummary {
        workload: "c2d",
        target: target_label,
        tls: endpoint.tls.is_some(),
        connections: cfg.connections,
        established,
        subscribed: active.len(),
        connect_failures: opened.failures,
        first_connect_failure: opened.first_failure,
        subscribe_failures,
        purged,
        payload_bytes: cfg.payload,
        offered_rate: cfg.rate,
        send_via: cfg.via,
        concurrency: cfg.concurrency,
        max_outstanding: cfg.max_outstanding,
        warmup_s: cfg.warmup.as_secs_f64(),
        duration_s: cfg.duration.as_secs_f64(),
        offered: sent.offered,
        sent: sent.sent,
        accepted: sent.accepted,
        refused: sent.refused,
        send_errors: sent.errors,
        first_send_error: sent.first_error,
        skipped: sent.skipped,
        received,
        received_warmup,
        missing: outstanding.missing(),
        duplicates,
        redelivered,
        stale,
        send_overrun_s: stats::round1(sent.overrun.as_secs_f64()),
        rate: stats::round1(stats::per_second(received, cfg.duration + sent.overrun)),
        latency_us: LatencySummary::of(&latency),
        latency_from_due_us: LatencySummary::of(&from_due),
        send_latency_us: LatencySummary::of(&sent.latency),
        connection_errors,
        cpu,
        server_rss_kib,
    })
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use ferrohub_mqtt::TopicName;
    use ferrohub_mqtt::codec::SubAck;
    use reqwest::StatusCode;

    use super::*;

    fn config() -> C2dConfig {
        C2dConfig {
            connections: 10,
            rate: 100.0,
            payload: 64,
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(10),
            read_timeout: Duration::from_secs(10),
            concurrency: 64,
            max_outstanding: 40,
            open: crate::publish::PublishConfig::open_plan_default(),
            device_prefix: "bench-".into(),
            server_pid: None,
            via: SendVia::Https,
        }
    }

    #[test]
    fn settings_are_checked() {
        assert!(config().check().is_ok());
        let bad = [
            C2dConfig {
                connections: 0,
                ..config()
            },
            C2dConfig {
                rate: 0.0,
                ..config()
            },
            C2dConfig {
                rate: f64::NAN,
                ..config()
            },
            C2dConfig {
                payload: Stamp::LEN - 1,
                ..config()
            },
            C2dConfig {
                concurrency: 0,
                ..config()
            },
            C2dConfig {
                max_outstanding: 0,
                ..config()
            },
        ];
        for cfg in bad {
            assert!(cfg.check().is_err(), "{cfg:?}");
        }
    }

    #[test]
    fn a_device_takes_at_most_its_bound() {
        let o = Outstanding::new(2, 3);
        for seq in 0..3 {
            assert!(o.reserve(0, seq, true));
        }
        assert!(!o.reserve(0, 3, true), "device 0 is at the bound");
        assert!(o.reserve(1, 4, true), "device 1 has its own bound");
        assert!(!o.reserve(2, 5, true), "no such device");
        assert_eq!(o.total(), 4);
        // An arrival frees a place; a second arrival of the same message frees nothing.
        assert!(o.received(0, 1));
        assert!(!o.received(0, 1));
        assert!(o.reserve(0, 6, true));
        assert!(!o.reserve(0, 7, true));
        // A refused or failed send frees its place too.
        o.cancel(0, 6);
        assert!(o.reserve(0, 7, false));
        assert_eq!(o.total(), 4);
    }

    #[test]
    fn missing_counts_accepted_messages_of_the_window_only() {
        let o = Outstanding::new(1, 10);
        assert!(o.reserve(0, 1, true));
        assert!(o.reserve(0, 2, true));
        assert!(o.reserve(0, 3, false));
        assert!(o.reserve(0, 4, true));
        o.accepted(0, 1);
        o.accepted(0, 2);
        o.accepted(0, 3);
        // 4 never got an answer; 2 arrived; an acceptance after the arrival changes nothing.
        assert!(o.received(0, 2));
        o.accepted(0, 2);
        assert_eq!(o.missing(), 1);
        assert_eq!(o.total(), 3);
    }

    fn error_body(name: &str) -> Vec<u8> {
        serde_json::to_vec(&ferrohub_api::ErrorBody {
            message: format!("ErrorCode:{name};The queue is full."),
            exception_message: "Tracking ID:x-TimeStamp:01/01/2026 00:00:00".into(),
        })
        .expect("serializes")
    }

    #[test]
    fn answers_are_classified() {
        assert_eq!(classify(StatusCode::OK, None, b"{}"), SendOutcome::Accepted);
        assert_eq!(
            classify(StatusCode::NO_CONTENT, None, b""),
            SendOutcome::Accepted
        );
        assert_eq!(
            classify(StatusCode::FORBIDDEN, Some(QUEUE_FULL), b""),
            SendOutcome::Refused
        );
        assert_eq!(
            classify(StatusCode::FORBIDDEN, None, &error_body(QUEUE_FULL)),
            SendOutcome::Refused
        );
        assert_eq!(
            classify(
                StatusCode::FORBIDDEN,
                None,
                br#"{"errorCode":403004,"message":"queue depth exceeded"}"#
            ),
            SendOutcome::Refused
        );
        // Another 403 (quota) and a 404 are failures, with the hub's message.
        match classify(
            StatusCode::FORBIDDEN,
            Some("IotHubQuotaExceeded"),
            &error_body("IotHubQuotaExceeded"),
        ) {
            SendOutcome::Failed(text) => {
                assert!(text.starts_with("403 Forbidden: ErrorCode:IotHubQuotaExceeded"));
            }
            other => panic!("unexpected {other:?}"),
        }
        match classify(StatusCode::NOT_FOUND, None, &[b'x'; 1000]) {
            SendOutcome::Failed(text) => {
                assert!(text.starts_with("404 Not Found: xxx"));
                assert!(text.len() < 250, "long bodies are cut");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn device_urls_escape_the_id() {
        let url = device_url(
            "https://localhost:8443",
            "bench-1",
            &["messages", "deviceBound"],
        )
        .expect("url");
        assert_eq!(
            url.as_str(),
            "https://localhost:8443/devices/bench-1/messages/deviceBound?api-version=2021-04-12"
        );
        let url = device_url("https://localhost:8443/", "a b/c", &["commands"]).expect("url");
        assert_eq!(
            url.as_str(),
            "https://localhost:8443/devices/a%20b%2Fc/commands?api-version=2021-04-12"
        );
        assert!(device_url("not a url", "d", &[]).is_err());
    }

    fn publish(pkid: u16, dup: bool, payload: Vec<u8>) -> Packet {
        Packet::Publish(Publish {
            dup,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: TopicName::new("devices/bench-0/messages/devicebound/%24.to=x").expect("topic"),
            pkid: Some(pkid),
            payload: Bytes::from(payload),
        })
    }

    fn stamped(run: u64, seq: u64, in_window: bool) -> Vec<u8> {
        let mut body = vec![b'a'; 64];
        Stamp {
            run,
            seq,
            sent_unix_ns: identity::unix_now_nanos(),
            in_window,
        }
        .write(&mut body);
        body
    }

    /// Reads packets from `io` until `n` have arrived.
    async fn read_packets(io: &mut tokio::io::DuplexStream, n: usize) -> Vec<Packet> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        while out.len() < n {
            match ferrohub_mqtt::decode(&mut buf, MAX_PACKET) {
                Ok(Some(p)) => out.push(p),
                Ok(None) => {
                    let read = tokio::time::timeout(Duration::from_secs(5), io.read_buf(&mut buf))
                        .await
                        .expect("in time")
                        .expect("reads");
                    assert!(read > 0, "closed early");
                }
                Err(e) => panic!("decode: {e}"),
            }
        }
        out
    }

    #[test]
    fn messages_split_over_reads_are_acknowledged_once_whole() {
        let outstanding = Outstanding::new(1, 40);
        assert!(outstanding.reserve(0, 3, true));
        let mut rx = Receiver {
            position: 0,
            run: 9,
            plan: None,
            seen: HashSet::new(),
            report: DeviceReport::new(),
        };
        let mut bytes = BytesMut::new();
        encode(&publish(42, false, stamped(9, 3, true)), &mut bytes).expect("encodes");
        encode(&Packet::PingResp, &mut bytes).expect("encodes");
        let mut rbuf = bytes.split_to(10);
        let mut wbuf = BytesMut::new();
        let now = identity::unix_now_nanos();
        assert_eq!(
            rx.on_bytes(&mut rbuf, &mut wbuf, now, &outstanding),
            Ok((0, None))
        );
        assert!(wbuf.is_empty());
        rbuf.extend_from_slice(&bytes);
        assert_eq!(
            rx.on_bytes(&mut rbuf, &mut wbuf, now, &outstanding),
            Ok((1, None))
        );
        assert!(rbuf.is_empty());
        assert_eq!(
            ferrohub_mqtt::decode(&mut wbuf, MAX_PACKET),
            Ok(Some(Packet::PubAck(PubAck { pkid: 42 })))
        );
        assert!(
            wbuf.is_empty(),
            "nothing but the PUBACK; PINGRESP gets no answer"
        );
        assert_eq!(outstanding.total(), 0);
        // A reserved packet type is a protocol error.
        let mut garbage = BytesMut::from(&[0xf0u8, 0x00][..]);
        assert!(
            rx.on_bytes(&mut garbage, &mut wbuf, now, &outstanding)
                .is_err()
        );
    }

    #[tokio::test]
    async fn a_device_subscribes_acknowledges_and_counts() {
        let (ours, mut hub) = tokio::io::duplex(1 << 16);
        let outstanding = Arc::new(Outstanding::new(1, 40));
        let run = 77;
        assert!(outstanding.reserve(0, 5, true));
        assert!(outstanding.reserve(0, 6, false));
        let (ready_tx, ready_rx) = oneshot::channel();
        let (control_tx, control_rx) = watch::channel(Control::Subscribe);
        let counters = Arc::new(Counters::default());
        let device = tokio::spawn(drive_device(
            Box::new(ours),
            BytesMut::new(),
            0,
            identity::c2d_filter("bench-0").expect("filter"),
            run,
            outstanding.clone(),
            ready_tx,
            control_rx,
            counters.clone(),
        ));

        // The device subscribes to its C2D topic at QoS 1.
        match &read_packets(&mut hub, 1).await[..] {
            [Packet::Subscribe(s)] => {
                assert_eq!(
                    s.filters[0].0.as_str(),
                    "devices/bench-0/messages/devicebound/#"
                );
                assert_eq!(s.filters[0].1, QoS::AtLeastOnce);
            }
            other => panic!("unexpected {other:?}"),
        }
        let mut out = BytesMut::new();
        encode(
            &Packet::SubAck(SubAck {
                pkid: 1,
                return_codes: vec![SubscribeReturnCode::Success(QoS::AtLeastOnce)],
            }),
            &mut out,
        )
        .expect("encodes");
        hub.write_all(&out).await.expect("writes");
        assert_eq!(ready_rx.await.expect("answered"), Ok(()));
        // Sending started 100 ms ago at 100 msg/s: message 5 was due 50 ms ago.
        let plan = RunPlan {
            run,
            schedule: Schedule::new(1, 100.0).expect("schedule"),
            t0_unix_ns: identity::unix_now_nanos() - 100_000_000,
        };
        control_tx.send(Control::Run(plan)).expect("device listens");

        // A message of the window, the same again with DUP, one of the warm-up and one of
        // another run: all four are acknowledged.
        out.clear();
        for p in [
            publish(11, false, stamped(run, 5, true)),
            publish(12, true, stamped(run, 5, true)),
            publish(13, false, stamped(run, 6, false)),
            publish(14, false, stamped(run + 1, 5, true)),
        ] {
            encode(&p, &mut out).expect("encodes");
        }
        hub.write_all(&out).await.expect("writes");
        let acks: Vec<u16> = read_packets(&mut hub, 4)
            .await
            .into_iter()
            .map(|p| match p {
                Packet::PubAck(a) => a.pkid,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(acks, [11, 12, 13, 14]);
        assert_eq!(outstanding.total(), 0);

        control_tx.send(Control::Stop).expect("device listens");
        let report = device.await.expect("device task");
        assert_eq!(report.error, None);
        assert_eq!(report.received, 1);
        assert_eq!(report.received_warmup, 1);
        assert_eq!(report.duplicates, 1);
        assert_eq!(report.redelivered, 1);
        assert_eq!(report.stale, 1);
        assert_eq!(report.latency.len(), 1);
        assert_eq!(report.from_due.len(), 1);
        assert!(
            report.from_due.min() >= 50_000,
            "from the due time, not the send time"
        );
        assert!(matches!(
            &read_packets(&mut hub, 1).await[..],
            [Packet::Disconnect]
        ));
    }

    #[tokio::test]
    async fn a_refused_subscription_is_reported() {
        let (ours, mut hub) = tokio::io::duplex(1 << 12);
        let (ready_tx, ready_rx) = oneshot::channel();
        let (_control_tx, control_rx) = watch::channel(Control::Subscribe);
        let device = tokio::spawn(drive_device(
            Box::new(ours),
            BytesMut::new(),
            0,
            identity::c2d_filter("bench-0").expect("filter"),
            1,
            Arc::new(Outstanding::new(1, 40)),
            ready_tx,
            control_rx,
            Arc::new(Counters::default()),
        ));
        let _ = read_packets(&mut hub, 1).await;
        let mut out = BytesMut::new();
        encode(
            &Packet::SubAck(SubAck {
                pkid: 1,
                return_codes: vec![SubscribeReturnCode::Failure],
            }),
            &mut out,
        )
        .expect("encodes");
        hub.write_all(&out).await.expect("writes");
        assert_eq!(
            ready_rx.await.expect("answered"),
            Err("subscription refused".to_owned())
        );
        let report = device.await.expect("device task");
        assert_eq!(report.error.as_deref(), Some("subscription refused"));
    }
}
