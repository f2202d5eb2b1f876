//! The `publish` workload: N device connections publish telemetry, open loop at a fixed total
//! rate or as fast as a bounded window of unacknowledged QoS 1 messages per connection allows,
//! and PUBACK latencies go into HdrHistograms.
//!
//! Each connection is one task that both writes and reads. Messages due at the same moment go
//! out in one write. The PUBLISH is encoded once with our codec; later messages copy those bytes
//! and patch the packet identifier (and, for end-to-end runs, the stamp in the payload).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::{Bytes, BytesMut};
use ferrohub_mqtt::codec::Publish;
use ferrohub_mqtt::{Packet, QoS, TopicName};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::conn::{BoxIo, Endpoint, MAX_PACKET};
use crate::connect::{OpenPlan, open_many};
use crate::identity::{self, Credentials};
use crate::pacing::Schedule;
use crate::procfs::{self, CpuUsage};
use crate::progress::{self, Counters, Labels};
use crate::stats::{self, Latencies, LatencySummary};

/// Most messages one write carries.
const MAX_BATCH: usize = 256;

/// At a fixed rate, messages due before the end may still go out this long after it (the
/// generator's timer fires up to a millisecond late).
const RATE_GRACE: Duration = Duration::from_millis(100);

/// Keep-alive sent in CONNECT, seconds; far longer than any run.
pub const KEEP_ALIVE: u16 = 1200;

/// How fast messages are offered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// As fast as the window of unacknowledged messages allows (closed loop).
    Max,
    /// A fixed total rate spread over the connections (open loop).
    Rate(f64),
}

/// The publish workload's settings.
#[derive(Debug, Clone)]
pub struct PublishConfig {
    /// Device connections.
    pub connections: usize,
    /// QoS 0 or 1.
    pub qos: QoS,
    /// Payload bytes per message.
    pub payload: usize,
    /// Offered load.
    pub mode: Mode,
    /// Most unacknowledged QoS 1 messages per connection.
    pub inflight: usize,
    /// Sending before measuring starts.
    pub warmup: Duration,
    /// The measured interval.
    pub duration: Duration,
    /// How long to wait for outstanding PUBACKs after the last send.
    pub drain: Duration,
    /// How connections are opened.
    pub open: OpenPlan,
    /// Device ids are `{prefix}{i}`.
    pub device_prefix: String,
    /// The server's pid, for CPU and memory readings.
    pub server_pid: Option<u32>,
    /// Stamp payloads with this run id (end-to-end runs).
    pub stamp: Option<u64>,
}

impl PublishConfig {
    /// Defaults for the given number of connections, opened on 127.0.0.1.
    pub fn open_plan_default() -> OpenPlan {
        OpenPlan {
            rate: Some(2000.0),
            concurrency: 64,
            source_base: Ipv4Addr::LOCALHOST,
            source_addrs: 1,
            timeout: Duration::from_secs(30),
        }
    }
}

/// A payload stamp for end-to-end runs: which run, which message, when it was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The run id.
    pub run: u64,
    /// Unique within the run: connection index × 2³² + message number.
    pub seq: u64,
    /// Send time, nanoseconds since the Unix epoch.
    pub sent_unix_ns: u64,
    /// Whether the message was due inside the measured interval.
    pub in_window: bool,
}

impl Stamp {
    /// Bytes a stamp takes at the start of the payload.
    pub const LEN: usize = 33;
    const MAGIC: &'static [u8; 8] = b"FHBENCH1";

    /// A random run id, so that messages of other runs are told apart.
    pub fn new_run_id() -> anyhow::Result<u64> {
        let key = ferrohub_auth::SymmetricKey::try_generate().context("random run id")?;
        let mut w = [0u8; 8];
        w.copy_from_slice(&key.as_bytes()[..8]);
        Ok(u64::from_le_bytes(w))
    }

    /// Writes the stamp into the first [`Stamp::LEN`] bytes of `out` (no-op if shorter).
    pub fn write(&self, out: &mut [u8]) {
        let Some(out) = out.get_mut(..Self::LEN) else {
            return;
        };
        out[..8].copy_from_slice(Self::MAGIC);
        out[8..16].copy_from_slice(&self.run.to_le_bytes());
        out[16..24].copy_from_slice(&self.seq.to_le_bytes());
        out[24..32].copy_from_slice(&self.sent_unix_ns.to_le_bytes());
        out[32] = u8::from(self.in_window);
    }

    /// Reads a stamp from the start of `bytes`; `None` when there is none.
    pub fn read(bytes: &[u8]) -> Option<Stamp> {
        let b = bytes.get(..Self::LEN)?;
        if &b[..8] != Self::MAGIC {
            return None;
        }
        let word = |r: std::ops::Range<usize>| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[r]);
            u64::from_le_bytes(w)
        };
        Some(Stamp {
            run: word(8..16),
            seq: word(16..24),
            sent_unix_ns: word(24..32),
            in_window: b[32] != 0,
        })
    }
}

/// A PUBLISH encoded once, with where to patch it.
#[derive(Debug, Clone)]
pub struct Template {
    /// The encoded packet.
    pub bytes: Vec<u8>,
    /// Offset of the packet identifier (QoS 1).
    pub pkid_at: Option<usize>,
    /// Offset of the payload.
    pub payload_at: usize,
}

/// Encodes a PUBLISH of `payload` bytes (letters) on `topic` with our codec.
pub fn template(topic: &TopicName, qos: QoS, payload: usize) -> anyhow::Result<Template> {
    let pkid = (qos != QoS::AtMostOnce).then_some(1);
    let body: Vec<u8> = (0..payload).map(|i| b'a' + (i % 26) as u8).collect();
    let mut buf = BytesMut::new();
    ferrohub_mqtt::encode(
        &Packet::Publish(Publish {
            dup: false,
            qos,
            retain: false,
            topic: topic.clone(),
            pkid,
            payload: Bytes::from(body),
        }),
        &mut buf,
    )
    .map_err(|e| anyhow::anyhow!("cannot encode PUBLISH: {e}"))?;
    let payload_at = buf.len() - payload;
    Ok(Template {
        bytes: buf.to_vec(),
        pkid_at: pkid.map(|_| payload_at - 2),
        payload_at,
    })
}

/// A QoS 1 message waiting for its PUBACK.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    sent: Instant,
    due: Instant,
    in_window: bool,
}

/// What one connection measured.
#[derive(Debug)]
pub struct ConnReport {
    /// PUBACK latency from the write.
    pub rtt: Latencies,
    /// PUBACK latency from the scheduled send time (open loop only).
    pub from_due: Latencies,
    /// Messages due in the measured interval that were sent.
    pub sent: u64,
    /// Of those, acknowledged (QoS 1).
    pub acked: u64,
    /// Of those, never acknowledged.
    pub unacked: u64,
    /// Messages due in the interval but never sent (the window stayed full).
    pub unsent: u64,
    /// PUBACKs for no message in flight.
    pub stray_acks: u64,
    /// Why the connection ended early.
    pub error: Option<String>,
}

/// Timing shared by every connection.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// When sending starts.
    pub t0: Instant,
    /// When measuring starts.
    pub warm_end: Instant,
    /// When sending stops.
    pub end: Instant,
    /// When waiting for PUBACKs stops.
    pub drain_end: Instant,
}

/// Drives one connection for the whole run.
#[allow(clippy::too_many_arguments)]
pub async fn drive(
    mut io: BoxIo,
    mut rbuf: BytesMut,
    index: usize,
    template: Template,
    qos: QoS,
    schedule: Option<Schedule>,
    inflight: usize,
    clock: Clock,
    stamp: Option<u64>,
    counters: Arc<Counters>,
) -> ConnReport {
    let mut report = ConnReport {
        rtt: stats::histogram(),
        from_due: stats::histogram(),
        sent: 0,
        acked: 0,
        unacked: 0,
        unsent: 0,
        stray_acks: 0,
        error: None,
    };
    let qos1 = qos != QoS::AtMostOnce;
    let window = if qos1 { inflight.clamp(1, 65_535) } else { 0 };
    let mut slots: Vec<Option<InFlight>> = vec![None; window];
    let mut free = window;
    let mut cursor = 0usize;
    let mut k: u64 = 0;
    let span = clock.end.saturating_duration_since(clock.t0);
    let k_end = schedule.map_or(u64::MAX, |s| s.count_before(index, span));
    let k_warm = schedule.map_or(0, |s| {
        s.count_before(index, clock.warm_end.saturating_duration_since(clock.t0))
    });
    let mut wbuf: Vec<u8> =
        Vec::with_capacity(template.bytes.len() * MAX_BATCH.min(window.max(16)));

    let send_until = match schedule {
        Some(_) => (clock.end + RATE_GRACE).min(clock.drain_end),
        None => clock.end,
    };
    // Bounded by time: every iteration either waits (until at most `drain_end`) or sends.
    loop {
        let now = Instant::now();
        if now >= clock.drain_end {
            break;
        }
        let sending = now < send_until && k < k_end;
        if !sending && free == window {
            break;
        }
        if sending && (!qos1 || free > 0) {
            wbuf.clear();
            let mut batch = 0u64;
            while (batch as usize) < MAX_BATCH && (!qos1 || free > 0) && k < k_end {
                let due = match schedule {
                    Some(s) => {
                        let due = clock.t0 + s.due(index, k);
                        if due > now {
                            break;
                        }
                        due
                    }
                    None => now,
                };
                let in_window = due >= clock.warm_end && due < clock.end;
                let at = wbuf.len();
                wbuf.extend_from_slice(&template.bytes);
                if let Some(pkid_at) = template.pkid_at {
                    let mut slot = cursor;
                    for _ in 0..window {
                        if slots[slot].is_none() {
                            break;
                        }
                        slot = (slot + 1) % window;
                    }
                    cursor = (slot + 1) % window;
                    slots[slot] = Some(InFlight {
                        sent: now,
                        due,
                        in_window,
                    });
                    free -= 1;
                    let pkid = (slot as u16 + 1).to_be_bytes();
                    wbuf[at + pkid_at..at + pkid_at + 2].copy_from_slice(&pkid);
                }
                if let Some(run) = stamp {
                    Stamp {
                        run,
                        seq: ((index as u64) << 32) | (k & 0xffff_ffff),
                        sent_unix_ns: identity::unix_now_nanos(),
                        in_window,
                    }
                    .write(&mut wbuf[at + template.payload_at..]);
                }
                k += 1;
                batch += 1;
                if in_window {
                    report.sent += 1;
                }
            }
            if batch > 0 {
                match tokio::time::timeout_at(clock.drain_end, io.write_all(&wbuf)).await {
                    Ok(Ok(())) => Counters::add(&counters.sent, batch),
                    Ok(Err(e)) => {
                        report.error = Some(format!("write: {}", e.kind()));
                        break;
                    }
                    Err(_) => break,
                }
            }
        }

        let now = Instant::now();
        let still_sending = now < send_until && k < k_end;
        let wake = if still_sending && (!qos1 || free > 0) {
            match schedule {
                Some(s) => (clock.t0 + s.due(index, k)).min(send_until),
                None => now,
            }
        } else if still_sending {
            send_until
        } else {
            clock.drain_end
        };
        if wake <= now {
            // Max rate with room in the window: let other connections run, pick up PUBACKs.
            tokio::task::yield_now().await;
            if !qos1 {
                continue;
            }
        }
        if rbuf.capacity() - rbuf.len() < 1024 {
            rbuf.reserve(8192);
        }
        tokio::select! {
            biased;
            read = io.read_buf(&mut rbuf) => match read {
                Ok(0) => {
                    report.error = Some("closed by server".into());
                    break;
                }
                Err(e) => {
                    report.error = Some(format!("read: {}", e.kind()));
                    break;
                }
                Ok(_) => {
                    let at = Instant::now();
                    let mut acks = 0;
                    let mut failed = None;
                    for _ in 0..1_000_000 {
                        match ferrohub_mqtt::decode(&mut rbuf, MAX_PACKET) {
                            Ok(Some(Packet::PubAck(ack))) => {
                                let slot = usize::from(ack.pkid).wrapping_sub(1);
                                match slots.get_mut(slot).and_then(Option::take) {
                                    Some(f) => {
                                        free += 1;
                                        acks += 1;
                                        if f.in_window {
                                            report.acked += 1;
                                            stats::record(&mut report.rtt, at - f.sent);
                                            if schedule.is_some() {
                                                stats::record(&mut report.from_due, at - f.due);
                                            }
                                        }
                                    }
                                    None => report.stray_acks += 1,
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
                    Counters::add(&counters.acked, acks);
                    if failed.is_some() {
                        report.error = failed;
                        break;
                    }
                }
            },
            _ = tokio::time::sleep_until(wake) => {}
        }
    }

    report.unacked = slots.iter().flatten().filter(|f| f.in_window).count() as u64;
    if schedule.is_some() && k < k_end {
        report.unsent = k_end - k.max(k_warm);
    }
    if report.error.is_some() {
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
    report
}

/// The publish workload's result.
#[derive(Debug, Clone, Serialize)]
pub struct PublishSummary {
    /// `"publish"`.
    pub workload: &'static str,
    /// The target as given.
    pub target: String,
    /// Whether connections used TLS.
    pub tls: bool,
    /// Connections asked for.
    pub connections: usize,
    /// Connections that were established.
    pub established: usize,
    /// Connection failures by kind.
    pub connect_failures: BTreeMap<String, u64>,
    /// The first connection failure's message.
    pub first_connect_failure: Option<String>,
    /// 0 or 1.
    pub qos: u8,
    /// Payload bytes.
    pub payload_bytes: usize,
    /// `"max"` or `"rate"`.
    pub mode: &'static str,
    /// The offered rate, messages per second (`null` in max mode).
    pub offered_rate: Option<f64>,
    /// Window of unacknowledged messages per connection.
    pub inflight: usize,
    /// Warm-up, seconds.
    pub warmup_s: f64,
    /// Measured interval, seconds.
    pub duration_s: f64,
    /// Messages sent in the interval.
    pub sent: u64,
    /// Of those, acknowledged (QoS 1).
    pub acked: u64,
    /// Achieved rate: acknowledged (QoS 1) or sent (QoS 0) messages per second.
    pub rate: f64,
    /// Messages sent per second.
    pub send_rate: f64,
    /// PUBACK latency from the write, µs.
    pub latency_us: Option<LatencySummary>,
    /// PUBACK latency from the scheduled send time, µs (open loop only).
    pub latency_from_due_us: Option<LatencySummary>,
    /// Messages never acknowledged.
    pub unacked: u64,
    /// Messages due but never sent because the window stayed full.
    pub unsent: u64,
    /// PUBACKs that matched nothing.
    pub stray_acks: u64,
    /// Connections that ended early, by reason.
    pub connection_errors: BTreeMap<String, u64>,
    /// CPU during the measured interval.
    pub cpu: Option<CpuUsage>,
    /// Server RSS at the end, KiB.
    pub server_rss_kib: Option<u64>,
}

impl PublishSummary {
    /// Errors of any kind.
    pub fn error_count(&self) -> u64 {
        self.connect_failures.values().sum::<u64>()
            + self.connection_errors.values().sum::<u64>()
            + self.unacked
    }
}

/// Runs the publish workload; `received` (end-to-end runs) shows events read back in the
/// progress line.
pub async fn run(
    target_label: String,
    endpoint: &Endpoint,
    creds: &Credentials,
    cfg: &PublishConfig,
    counters: Arc<Counters>,
    show_received: bool,
) -> anyhow::Result<PublishSummary> {
    procfs::raise_nofile(cfg.connections as u64 + 1024);
    let ids: Vec<String> = (0..cfg.connections)
        .map(|i| identity::device_id(&cfg.device_prefix, i))
        .collect();
    let mut connects = Vec::with_capacity(ids.len());
    let mut templates = Vec::with_capacity(ids.len());
    for id in &ids {
        connects.push(creds.connect_bytes(id, KEEP_ALIVE)?);
        templates.push(template(
            &identity::telemetry_topic(id)?,
            cfg.qos,
            cfg.payload,
        )?);
    }
    let opened = open_many(
        endpoint,
        connects,
        &cfg.open,
        &Arc::new(Counters::default()),
    )
    .await;
    let established = opened.connections.len();
    Counters::add(&counters.connected, established as u64);
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
    let schedule = match cfg.mode {
        Mode::Max => None,
        Mode::Rate(r) => Some(
            Schedule::new(established, r)
                .ok_or_else(|| anyhow::anyhow!("--rate must be a positive number"))?,
        ),
    };
    let t0 = Instant::now() + Duration::from_millis(200);
    let clock = Clock {
        t0,
        warm_end: t0 + cfg.warmup,
        end: t0 + cfg.warmup + cfg.duration,
        drain_end: t0 + cfg.warmup + cfg.duration + cfg.drain,
    };
    let progress = progress::spawn(
        counters.clone(),
        Labels {
            workload: "publish",
            sent: "sent",
            acked: "acked",
            received: show_received.then_some("read"),
        },
        cfg.warmup + cfg.duration + cfg.drain + Duration::from_secs(2),
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
    let mut tasks = tokio::task::JoinSet::new();
    for (position, (i, io, buf)) in opened.connections.into_iter().enumerate() {
        let template = templates[i].clone();
        let counters = counters.clone();
        let (qos, inflight, stamp) = (cfg.qos, cfg.inflight, cfg.stamp);
        tasks.spawn(async move {
            drive(
                io, buf, position, template, qos, schedule, inflight, clock, stamp, counters,
            )
            .await
        });
    }
    let mut rtt = stats::histogram();
    let mut from_due = stats::histogram();
    let (mut sent, mut acked, mut unacked, mut unsent, mut stray) = (0, 0, 0, 0, 0);
    let connection_errors = stats::join_reports(&mut tasks, |r| {
        stats::merge(&mut rtt, &r.rtt);
        stats::merge(&mut from_due, &r.from_due);
        sent += r.sent;
        acked += r.acked;
        unacked += r.unacked;
        unsent += r.unsent;
        stray += r.stray_acks;
        r.error
    })
    .await;
    progress.abort();
    let cpu = cpu_task.await.ok();
    let server_rss_kib = cfg.server_pid.and_then(|p| procfs::rss_kib(p).ok());
    let qos1 = cfg.qos != QoS::AtMostOnce;
    Ok(PublishSummary {
        workload: "publish",
        target: target_label,
        tls: endpoint.tls.is_some(),
        connections: cfg.connections,
        established,
        connect_failures: opened.failures,
        first_connect_failure: opened.first_failure,
        qos: cfg.qos as u8,
        payload_bytes: cfg.payload,
        mode: match cfg.mode {
            Mode::Max => "max",
            Mode::Rate(_) => "rate",
        },
        offered_rate: match cfg.mode {
            Mode::Max => None,
            Mode::Rate(r) => Some(r),
        },
        inflight: if qos1 { cfg.inflight } else { 0 },
        warmup_s: cfg.warmup.as_secs_f64(),
        duration_s: cfg.duration.as_secs_f64(),
        sent,
        acked,
        rate: stats::round1(stats::per_second(
            if qos1 { acked } else { sent },
            cfg.duration,
        )),
        send_rate: stats::round1(stats::per_second(sent, cfg.duration)),
        latency_us: LatencySummary::of(&rtt),
        latency_from_due_us: LatencySummary::of(&from_due),
        unacked,
        unsent,
        stray_acks: stray,
        connection_errors,
        cpu,
        server_rss_kib,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_patches_land_on_the_packet_id_and_payload() {
        let topic = identity::telemetry_topic("bench-1").expect("topic");
        let t = template(&topic, QoS::AtLeastOnce, 256).expect("encodes");
        let mut bytes = t.bytes.clone();
        let pkid_at = t.pkid_at.expect("qos 1 has a packet id");
        bytes[pkid_at..pkid_at + 2].copy_from_slice(&4242u16.to_be_bytes());
        let stamp = Stamp {
            run: 7,
            seq: (3 << 32) | 9,
            sent_unix_ns: 1_700_000_000_123_456_789,
            in_window: true,
        };
        stamp.write(&mut bytes[t.payload_at..]);
        let mut buf = BytesMut::from(&bytes[..]);
        match ferrohub_mqtt::decode(&mut buf, MAX_PACKET) {
            Ok(Some(Packet::Publish(p))) => {
                assert_eq!(p.pkid, Some(4242));
                assert_eq!(p.qos, QoS::AtLeastOnce);
                assert_eq!(p.topic.as_str(), "devices/bench-1/messages/events/");
                assert_eq!(p.payload.len(), 256);
                assert_eq!(Stamp::read(&p.payload), Some(stamp));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn qos0_template_has_no_packet_id() {
        let topic = identity::telemetry_topic("d").expect("topic");
        let t = template(&topic, QoS::AtMostOnce, 16).expect("encodes");
        assert_eq!(t.pkid_at, None);
        assert_eq!(t.bytes.len() - t.payload_at, 16);
    }

    #[test]
    fn stamps_need_room_and_magic() {
        assert_eq!(Stamp::read(&[0u8; 40]), None);
        assert_eq!(Stamp::read(b"FHBENCH1"), None);
        let mut short = [0u8; 10];
        Stamp {
            run: 1,
            seq: 2,
            sent_unix_ns: 3,
            in_window: false,
        }
        .write(&mut short);
        assert_eq!(short, [0u8; 10]);
    }
}
