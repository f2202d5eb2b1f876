//! The `methods` and `twin` workloads: the service calls devices connected over MQTT through
//! the REST API, at a fixed total rate, round robin over the devices.
//!
//! * `methods`: each call is `POST /twins/{id}/methods` with a stamped payload; every device
//!   subscribes to `$iothub/methods/POST/#` and answers each request at once on
//!   `$iothub/methods/res/200/?$rid=…` with the request's payload. The round trip is the time from
//!   the HTTP request to its `200` answer: hub → device over MQTT → hub → caller.
//! * `twin`: each call is `PATCH /twins/{id}` setting a stamped desired property; every device
//!   subscribes to `$iothub/twin/PATCH/properties/desired/#`. The notification latency is the
//!   time from the HTTP request to the device's receipt of the notification; the write latency
//!   is the time to the `200` answer (the twin durably stored).
//!
//! Calls in progress are bounded (`concurrency`); a call due while the bound is reached waits,
//! and the report says how long after the interval the last one went out, so a saturated run is
//! visible rather than silently slower.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use bytes::BytesMut;
use ferrohub_mqtt::codec::{Publish, Subscribe, SubscribeReturnCode};
use ferrohub_mqtt::{Packet, QoS, TopicFilter, TopicName};
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
use crate::publish::KEEP_ALIVE;
use crate::stats::{self, Latencies, LatencySummary};
use crate::target::Ferrohub;

/// How long a device may take to get its SUBACK.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one write may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the generator checks whether every notification has arrived.
const POLL: Duration = Duration::from_millis(10);

/// The desired property the `twin` workload sets.
const DESIRED_KEY: &str = "benchStamp";

/// Which service call the workload makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// Direct methods.
    Methods,
    /// Desired-property updates.
    Desired,
}

impl Call {
    /// The workload's name.
    pub fn name(self) -> &'static str {
        match self {
            Call::Methods => "methods",
            Call::Desired => "twin",
        }
    }

    fn filter(self) -> &'static str {
        match self {
            Call::Methods => "$iothub/methods/POST/#",
            Call::Desired => "$iothub/twin/PATCH/properties/desired/#",
        }
    }
}

/// The workload's settings.
#[derive(Debug, Clone)]
pub struct TwinConfig {
    /// Methods or desired updates.
    pub call: Call,
    /// Device connections.
    pub connections: usize,
    /// Total offered rate, calls per second.
    pub rate: f64,
    /// Sending before measuring starts.
    pub warmup: Duration,
    /// The measured interval.
    pub duration: Duration,
    /// How long to wait for answers and notifications after sending ends.
    pub read_timeout: Duration,
    /// Most HTTP calls in progress at once.
    pub concurrency: usize,
    /// How connections are opened.
    pub open: OpenPlan,
    /// Device ids are `{prefix}{i}`.
    pub device_prefix: String,
    /// The server's pid, for CPU and memory readings.
    pub server_pid: Option<u32>,
}

impl TwinConfig {
    /// Refuses settings the workload cannot run with.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.connections == 0 {
            anyhow::bail!("{} needs at least one device connection", self.call.name());
        }
        if !(self.rate > 0.0 && self.rate.is_finite()) {
            anyhow::bail!("--rate must be a positive number");
        }
        if self.concurrency == 0 {
            anyhow::bail!("--concurrency must be at least 1");
        }
        Ok(())
    }
}

/// The stamp a call carries: `run:seq:sent_ns:in_window`, as a JSON string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallStamp {
    /// The run id.
    pub run: u64,
    /// The call's number.
    pub seq: u64,
    /// When the call was sent, nanoseconds since the Unix epoch.
    pub sent_unix_ns: u64,
    /// Whether it was due in the measured interval.
    pub in_window: bool,
}

impl CallStamp {
    /// The stamp as text.
    pub fn text(&self) -> String {
        format!(
            "{}:{}:{}:{}",
            self.run,
            self.seq,
            self.sent_unix_ns,
            u8::from(self.in_window)
        )
    }

    /// Reads a stamp from its text.
    pub fn parse(text: &str) -> Option<CallStamp> {
        let mut parts = text.split(':');
        let stamp = CallStamp {
            run: parts.next()?.parse().ok()?,
            seq: parts.next()?.parse().ok()?,
            sent_unix_ns: parts.next()?.parse().ok()?,
            in_window: parts.next()? == "1",
        };
        parts.next().is_none().then_some(stamp)
    }

    /// The stamp in a desired notification's body (`{"benchStamp":"…","$version":N}`).
    fn from_notification(body: &[u8]) -> Option<CallStamp> {
        let value: serde_json::Value = serde_json::from_slice(body).ok()?;
        CallStamp::parse(value.get(DESIRED_KEY)?.as_str()?)
    }
}

/// What the devices are told.
#[derive(Debug, Clone, Copy)]
enum Control {
    /// Subscribe and serve.
    Serve,
    /// Disconnect.
    Stop,
}

/// What one device connection saw.
#[derive(Debug)]
struct DeviceReport {
    /// Desired notifications: send to receipt, calls due in the measured interval.
    latency: Latencies,
    /// Method requests answered, or notifications of this run received (first time).
    handled: u64,
    /// Notifications received for calls due in the measured interval.
    received: u64,
    /// Why the connection ended early.
    error: Option<String>,
}

/// The reply to a method request: the request's payload on its response topic.
fn method_reply(p: &Publish) -> Option<Packet> {
    let rid = p.topic.as_str().split("$rid=").nth(1)?.split('&').next()?;
    let topic = TopicName::new(format!("$iothub/methods/res/200/?$rid={rid}")).ok()?;
    Some(Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic,
        pkid: None,
        payload: p.payload.clone(),
    }))
}

/// Drives one device: subscribes (answering on `ready` once the SUBACK is in), then answers
/// method requests or notes desired notifications of run `run` until told to stop.
#[allow(clippy::too_many_arguments)]
async fn drive_device(
    mut io: BoxIo,
    mut rbuf: BytesMut,
    call: Call,
    run: u64,
    ready: oneshot::Sender<Result<(), String>>,
    mut control: watch::Receiver<Control>,
    counters: Arc<Counters>,
    notified_in_window: Arc<AtomicU64>,
) -> DeviceReport {
    let mut report = DeviceReport {
        latency: stats::histogram(),
        handled: 0,
        received: 0,
        error: None,
    };
    let mut seen = HashSet::new();
    let mut ready = Some(ready);
    let mut wbuf = BytesMut::new();
    let ping_every = Duration::from_secs(u64::from(KEEP_ALIVE) / 2);
    let mut failed = TopicFilter::new(call.filter())
        .map_err(|e| format!("filter: {e}"))
        .and_then(|filter| {
            let subscribe = Packet::Subscribe(Subscribe {
                pkid: 1,
                filters: vec![(filter, QoS::AtMostOnce)],
            });
            ferrohub_mqtt::encode(&subscribe, &mut wbuf).map_err(|e| format!("encode: {e}"))
        })
        .err();
    let mut last_write = Instant::now();
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
        if matches!(*control.borrow_and_update(), Control::Stop) {
            break;
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
                    let now_ns = identity::unix_now_nanos();
                    loop {
                        match ferrohub_mqtt::decode(&mut rbuf, MAX_PACKET) {
                            Ok(Some(Packet::Publish(p))) => match call {
                                Call::Methods => {
                                    let Some(reply) = method_reply(&p) else {
                                        failed = Some("a method request without $rid".into());
                                        break;
                                    };
                                    if let Err(e) = ferrohub_mqtt::encode(&reply, &mut wbuf) {
                                        failed = Some(format!("encode: {e}"));
                                        break;
                                    }
                                    report.handled += 1;
                                    Counters::add(&counters.received, 1);
                                }
                                Call::Desired => {
                                    let Some(stamp) = CallStamp::from_notification(&p.payload)
                                        .filter(|s| s.run == run)
                                    else {
                                        continue;
                                    };
                                    if !seen.insert(stamp.seq) {
                                        continue;
                                    }
                                    report.handled += 1;
                                    Counters::add(&counters.received, 1);
                                    if stamp.in_window {
                                        report.received += 1;
                                        notified_in_window.fetch_add(1, Ordering::Relaxed);
                                        stats::record(
                                            &mut report.latency,
                                            Duration::from_nanos(
                                                now_ns.saturating_sub(stamp.sent_unix_ns),
                                            ),
                                        );
                                    }
                                }
                            },
                            Ok(Some(Packet::SubAck(ack))) => {
                                let verdict = match ack.return_codes.first() {
                                    Some(SubscribeReturnCode::Success(_)) => Ok(()),
                                    _ => Err("subscription refused".to_owned()),
                                };
                                failed = verdict.as_ref().err().cloned();
                                if let Some(tx) = ready.take() {
                                    let _ = tx.send(verdict);
                                }
                            }
                            Ok(Some(_)) => {}
                            Ok(None) => break,
                            Err(e) => {
                                failed = Some(format!("decode: {e}"));
                                break;
                            }
                        }
                    }
                }
            },
            () = tokio::time::sleep_until(last_write + ping_every) => {
                if let Err(e) = ferrohub_mqtt::encode(&Packet::PingReq, &mut wbuf) {
                    failed = Some(format!("encode: {e}"));
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
    report.error = failed;
    report
}

/// One finished call.
#[derive(Debug)]
struct Done {
    in_window: bool,
    /// `Ok` with the call's duration on a 2xx answer; else what went wrong.
    outcome: Result<Duration, String>,
}

/// What went wrong with an answer: the `iothub-errorcode` name (or the status).
fn failure(status: reqwest::StatusCode, code: Option<&str>) -> String {
    match code {
        Some(c) => format!("{} {c}", status.as_u16()),
        None => status.to_string(),
    }
}

/// Makes one call.
async fn call_one(
    http: reqwest::Client,
    call: Call,
    url: reqwest::Url,
    token: Arc<str>,
    stamp: CallStamp,
) -> Done {
    let body = match call {
        Call::Methods => serde_json::json!({
            "methodName": "echo",
            "payload": {"stamp": stamp.text()},
            "responseTimeoutInSeconds": 30
        }),
        Call::Desired => {
            serde_json::json!({"properties": {"desired": {DESIRED_KEY: stamp.text()}}})
        }
    };
    let request = match call {
        Call::Methods => http.post(url),
        Call::Desired => http.patch(url).header("If-Match", "\"*\""),
    };
    let started = Instant::now();
    let result = async {
        let response = request
            .header("Authorization", &*token)
            .header("Content-Type", "application/json; charset=utf-8")
            .body(body.to_string())
            .send()
            .await?;
        let status = response.status();
        let code = response
            .headers()
            .get(ferrohub_api::ERROR_CODE_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let _ = response.bytes().await?;
        Ok::<_, reqwest::Error>((status, code))
    }
    .await;
    let took = started.elapsed();
    let outcome = match result {
        Ok((status, _)) if status.is_success() => Ok(took),
        Ok((status, code)) => Err(failure(status, code.as_deref())),
        Err(e) => Err(format!("{:#}", anyhow::Error::from(e))),
    };
    Done {
        in_window: stamp.in_window,
        outcome,
    }
}

/// `{base}/twins/{id}[/methods]?api-version=…`.
pub fn twin_url(base: &str, device_id: &str, call: Call) -> anyhow::Result<reqwest::Url> {
    let mut url = reqwest::Url::parse(base).with_context(|| format!("bad base URL {base:?}"))?;
    {
        let mut segments = url
            .path_segments_mut()
            .map_err(|()| anyhow::anyhow!("{base:?} cannot take a path"))?;
        segments.pop_if_empty().push("twins").push(device_id);
        if call == Call::Methods {
            segments.push("methods");
        }
    }
    url.query_pairs_mut()
        .append_pair("api-version", identity::API_VERSION);
    Ok(url)
}

/// What the calling side counted, calls due in the measured interval only.
#[derive(Debug)]
struct CallReport {
    offered: u64,
    ok: u64,
    failed: BTreeMap<String, u64>,
    first_error: Option<String>,
    latency: Latencies,
    overrun: Duration,
}

impl CallReport {
    fn absorb(&mut self, done: Done, counters: &Counters) {
        match &done.outcome {
            Ok(_) => Counters::add(&counters.acked, 1),
            Err(e) => {
                Counters::add(&counters.errors, 1);
                if self.first_error.is_none() {
                    self.first_error = Some(e.clone());
                }
            }
        }
        if !done.in_window {
            return;
        }
        match done.outcome {
            Ok(took) => {
                self.ok += 1;
                stats::record(&mut self.latency, took);
            }
            Err(e) => *self.failed.entry(e).or_default() += 1,
        }
    }
}

/// The workload's result.
#[derive(Debug, Clone, Serialize)]
pub struct TwinSummary {
    /// `"methods"` or `"twin"`.
    pub workload: &'static str,
    /// The target as given.
    pub target: String,
    /// Whether device connections used TLS.
    pub tls: bool,
    /// Device connections asked for.
    pub connections: usize,
    /// Of those, connected and subscribed.
    pub subscribed: usize,
    /// Connection and subscription failures by kind.
    pub setup_failures: BTreeMap<String, u64>,
    /// The offered rate, calls per second.
    pub offered_rate: f64,
    /// Most calls in progress at once.
    pub concurrency: usize,
    /// Warm-up, seconds.
    pub warmup_s: f64,
    /// Measured interval, seconds.
    pub duration_s: f64,
    /// Calls due in the interval.
    pub offered: u64,
    /// Of those, answered 2xx.
    pub ok: u64,
    /// Of those, failed, by status and error code.
    pub failed: BTreeMap<String, u64>,
    /// The first failure of any call.
    pub first_error: Option<String>,
    /// How long after the interval's end its last call went out, seconds (0 unless the
    /// concurrency bound held calls back).
    pub send_overrun_s: f64,
    /// Completed calls per second of the interval (plus the overrun).
    pub rate: f64,
    /// Methods: the round trip (request to 200, through the device). Twin: the write (request
    /// to 200, durably stored). µs.
    pub call_latency_us: Option<LatencySummary>,
    /// Twin: desired notifications of the interval received by the devices.
    pub notified: u64,
    /// Twin: successful writes of the interval whose notification never arrived.
    pub missing: u64,
    /// Twin: request to the device's receipt of the notification, µs.
    pub notification_latency_us: Option<LatencySummary>,
    /// Method requests answered by the devices (every call, warm-up included).
    pub answered: u64,
    /// Device connections that ended early, by reason.
    pub connection_errors: BTreeMap<String, u64>,
    /// CPU during the measured interval.
    pub cpu: Option<CpuUsage>,
    /// Server RSS at the end, KiB.
    pub server_rss_kib: Option<u64>,
}

/// Runs the `methods` or `twin` workload against a Ferrohub.
pub async fn run(
    hub: &Ferrohub,
    target_label: String,
    endpoint: &Endpoint,
    creds: &Credentials,
    cfg: &TwinConfig,
) -> anyhow::Result<TwinSummary> {
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
    let mut urls = Vec::with_capacity(ids.len());
    for id in &ids {
        connects.push(creds.connect_bytes(id, KEEP_ALIVE)?);
        urls.push(twin_url(&base, id, cfg.call)?);
    }
    let opened = open_many(
        endpoint,
        connects,
        &cfg.open,
        &Arc::new(Counters::default()),
    )
    .await;
    let mut setup_failures = opened.failures.clone();
    if opened.connections.is_empty() {
        anyhow::bail!(
            "no connection could be established: {}",
            opened.first_failure.as_deref().unwrap_or("unknown")
        );
    }

    let counters = Arc::new(Counters::default());
    Counters::add(&counters.connected, opened.connections.len() as u64);
    let run_id = crate::publish::Stamp::new_run_id()?;
    let (control_tx, control_rx) = watch::channel(Control::Serve);
    let notified_in_window = Arc::new(AtomicU64::new(0));
    let mut devices = JoinSet::new();
    let mut readies = Vec::new();
    for (i, io, buf) in opened.connections {
        let (ready_tx, ready_rx) = oneshot::channel();
        readies.push((i, ready_rx));
        devices.spawn(drive_device(
            io,
            buf,
            cfg.call,
            run_id,
            ready_tx,
            control_rx.clone(),
            counters.clone(),
            notified_in_window.clone(),
        ));
    }
    let deadline = Instant::now() + SUBSCRIBE_TIMEOUT;
    let mut active = Vec::new();
    for (i, ready) in readies {
        let why = match tokio::time::timeout_at(deadline, ready).await {
            Ok(Ok(Ok(()))) => {
                if let Some(url) = urls.get(i) {
                    active.push(url.clone());
                }
                continue;
            }
            Ok(Ok(Err(why))) => why,
            Ok(Err(_)) => "device task ended".to_owned(),
            Err(_) => "no SUBACK in time".to_owned(),
        };
        *setup_failures.entry(why).or_default() += 1;
    }
    if active.is_empty() {
        let _ = control_tx.send(Control::Stop);
        while devices.join_next().await.is_some() {}
        anyhow::bail!("no device could subscribe: {setup_failures:?}");
    }

    let t0 = Instant::now() + Duration::from_millis(200);
    let warm_end = t0 + cfg.warmup;
    let end = warm_end + cfg.duration;
    let read_end = end + cfg.read_timeout;
    let progress = progress::spawn(
        counters.clone(),
        Labels {
            workload: cfg.call.name(),
            sent: "calls",
            acked: "ok",
            received: Some(match cfg.call {
                Call::Methods => "answered",
                Call::Desired => "notified",
            }),
        },
        cfg.warmup + cfg.duration + cfg.read_timeout + Duration::from_secs(2),
    );
    let cpu_task = {
        let pid = cfg.server_pid;
        tokio::spawn(async move {
            tokio::time::sleep_until(warm_end).await;
            let meter = procfs::CpuMeter::start(pid);
            tokio::time::sleep_until(end).await;
            meter.finish()
        })
    };

    let mut report = CallReport {
        offered: 0,
        ok: 0,
        failed: BTreeMap::new(),
        first_error: None,
        latency: stats::histogram(),
        overrun: Duration::ZERO,
    };
    let j_warm = schedule.count_before(0, warm_end - t0);
    let j_end = schedule.count_before(0, end - t0);
    let permits = Arc::new(Semaphore::new(cfg.concurrency));
    let mut calls: JoinSet<Done> = JoinSet::new();
    for j in 0..j_end {
        tokio::time::sleep_until(t0 + schedule.due(0, j)).await;
        while let Some(done) = calls.try_join_next() {
            if let Ok(done) = done {
                report.absorb(done, &counters);
            }
        }
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let in_window = j >= j_warm;
        if in_window {
            report.offered += 1;
            report.overrun = Instant::now().saturating_duration_since(end);
        }
        let Some(url) = usize::try_from(j % active.len() as u64)
            .ok()
            .and_then(|k| active.get(k))
            .cloned()
        else {
            break;
        };
        Counters::add(&counters.sent, 1);
        let stamp = CallStamp {
            run: run_id,
            seq: j,
            sent_unix_ns: identity::unix_now_nanos(),
            in_window,
        };
        let (http, token, call) = (http.clone(), token.clone(), cfg.call);
        calls.spawn(async move {
            let done = call_one(http, call, url, token, stamp).await;
            drop(permit);
            done
        });
    }
    let _ = tokio::time::timeout_at(read_end, async {
        while let Some(done) = calls.join_next().await {
            if let Ok(done) = done {
                report.absorb(done, &counters);
            }
        }
    })
    .await;
    if !calls.is_empty() {
        calls.abort_all();
        *report
            .failed
            .entry("no answer before the read timeout".to_owned())
            .or_default() += calls.len() as u64;
    }
    if cfg.call == Call::Desired {
        // Notifications of the interval still on their way, up to the read deadline.
        while Instant::now() < read_end && notified_in_window.load(Ordering::Relaxed) < report.ok {
            tokio::time::sleep(POLL).await;
        }
    }
    let _ = control_tx.send(Control::Stop);

    let mut latency = stats::histogram();
    let (mut handled, mut received) = (0, 0);
    let connection_errors = stats::join_reports(&mut devices, |r| {
        stats::merge(&mut latency, &r.latency);
        handled += r.handled;
        received += r.received;
        r.error
    })
    .await;
    progress.abort();
    let cpu = cpu_task.await.ok();
    let server_rss_kib = cfg.server_pid.and_then(|p| procfs::rss_kib(p).ok());
    let desired = cfg.call == Call::Desired;
    Ok(TwinSummary {
        workload: cfg.call.name(),
        target: target_label,
        tls: endpoint.tls.is_some(),
        connections: cfg.connections,
        subscribed: active.len(),
        setup_failures,
        offered_rate: cfg.rate,
        concurrency: cfg.concurrency,
        warmup_s: cfg.warmup.as_secs_f64(),
        duration_s: cfg.duration.as_secs_f64(),
        offered: report.offered,
        ok: report.ok,
        failed: report.failed,
        first_error: report.first_error,
        send_overrun_s: stats::round1(report.overrun.as_secs_f64()),
        rate: stats::round1(stats::per_second(report.ok, cfg.duration + report.overrun)),
        call_latency_us: LatencySummary::of(&report.latency),
        notified: if desired { received } else { 0 },
        missing: if desired {
            report.ok.saturating_sub(received)
        } else {
            0
        },
        notification_latency_us: LatencySummary::of(&latency),
        answered: if desired { 0 } else { handled },
        connection_errors,
        cpu,
        server_rss_kib,
    })
}

/// The summary as text.
pub fn text(s: &TwinSummary) -> String {
    let mut out = format!(
        "{} {} ({}): {}/{} devices subscribed, offered {:.0} calls/s ({} at once)\n",
        s.workload,
        s.target,
        if s.tls { "TLS" } else { "plain" },
        s.subscribed,
        s.connections,
        s.offered_rate,
        s.concurrency
    );
    out.push_str(&format!(
        "  completed {:.0} calls/s over {:.1} s: due {}, ok {}, failed {:?}\n",
        s.rate, s.duration_s, s.offered, s.ok, s.failed
    ));
    if let Some(l) = &s.call_latency_us {
        let what = if s.workload == "methods" {
            "method round trip"
        } else {
            "twin write (HTTP 200)"
        };
        out.push_str(&format!("  {what}: {}\n", l.line()));
    }
    if s.workload == "twin" {
        out.push_str(&format!(
            "  notified {} (missing {})\n",
            s.notified, s.missing
        ));
        if let Some(l) = &s.notification_latency_us {
            out.push_str(&format!("  desired notification latency: {}\n", l.line()));
        }
    } else {
        out.push_str(&format!("  answered by devices {}\n", s.answered));
    }
    if s.send_overrun_s > 0.0 {
        out.push_str(&format!(
            "  sending ended {:.1} s late: the calls in progress were at --concurrency\n",
            s.send_overrun_s
        ));
    }
    if let Some(c) = &s.cpu {
        out.push_str(&format!(
            "  CPU: generator {:.0} %, server {}\n",
            c.generator_pct,
            c.server_pct.map_or("?".into(), |p| format!("{p:.0} %"))
        ));
    }
    if let Some(e) = &s.first_error {
        out.push_str(&format!("  first error: {e}\n"));
    }
    if !s.setup_failures.is_empty() || !s.connection_errors.is_empty() {
        out.push_str(&format!(
            "  errors: setup {:?}, connections {:?}\n",
            s.setup_failures, s.connection_errors
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    #[test]
    fn stamps_round_trip_through_notifications() {
        let s = CallStamp {
            run: 7,
            seq: 42,
            sent_unix_ns: 1_700_000_000_000_000_000,
            in_window: true,
        };
        assert_eq!(CallStamp::parse(&s.text()), Some(s));
        let body = serde_json::json!({DESIRED_KEY: s.text(), "$version": 9}).to_string();
        assert_eq!(CallStamp::from_notification(body.as_bytes()), Some(s));
        for bad in ["", "1:2:3", "1:2:3:1:5", "a:2:3:1"] {
            assert_eq!(CallStamp::parse(bad), None, "{bad}");
        }
        assert_eq!(CallStamp::from_notification(b"{\"x\":1}"), None);
    }

    #[test]
    fn method_requests_are_answered_on_their_rid() {
        let request = Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: TopicName::new("$iothub/methods/POST/echo/?$rid=17").expect("topic"),
            pkid: None,
            payload: Bytes::from_static(b"{\"stamp\":\"x\"}"),
        };
        match method_reply(&request) {
            Some(Packet::Publish(reply)) => {
                assert_eq!(reply.topic.as_str(), "$iothub/methods/res/200/?$rid=17");
                assert_eq!(reply.payload, request.payload);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn urls_name_the_twin_or_its_methods() {
        let url = twin_url("https://localhost:8443", "bench-1", Call::Methods).expect("url");
        assert_eq!(
            url.as_str(),
            "https://localhost:8443/twins/bench-1/methods?api-version=2021-04-12"
        );
        let url = twin_url("https://localhost:8443/", "a b", Call::Desired).expect("url");
        assert_eq!(
            url.as_str(),
            "https://localhost:8443/twins/a%20b?api-version=2021-04-12"
        );
    }
}
