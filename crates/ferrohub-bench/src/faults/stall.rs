//! Stalled readers: clients that ask for data and then stop reading their sockets while the
//! hub has plenty for them — live event streams (server-sent events) from the start of a full
//! log, long polls of a thousand events, and an MQTT device subscribed to its cloud-to-device
//! messages while 60 KB messages are sent to it. Their receive buffers are made small, so the
//! hub's writes to them block almost at once. Meanwhile the fleet keeps publishing and reading.
//!
//! What it proves: one slow consumer cannot stop the hub from serving everyone else (every
//! device keeps getting acknowledgements, readers keep reading, `/healthz` answers), the hub's
//! memory stays within a bound while the stalled clients hold their requests open, and their
//! descriptors are given back when they go.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use ferrohub_mqtt::codec::Subscribe;
use ferrohub_mqtt::{Packet, QoS};
use rustls_pki_types::ServerName;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use super::fleet::Fleet;
use super::hub::{self, HubProcess, LiveHub, ProcSample};
use super::{Checks, FaultsConfig, sample_text, wait_for};
use crate::conn::{self, BoxIo, MAX_PACKET};
use crate::identity::{self, Credentials};

/// Receive buffer the stalled clients ask for: the kernel's minimum, so the hub's writes
/// block after a few kilobytes instead of megabytes.
const SMALL_RCVBUF: u32 = 4096;

/// Stalled-reader settings.
#[derive(Debug, Clone, Serialize)]
pub struct StallConfig {
    /// How long the clients stay stalled, seconds.
    pub secs: f64,
    /// Event streams opened (spread over the partitions).
    pub streams: usize,
    /// How much the hub's RSS may grow while they are stalled, MiB.
    pub rss_limit_mib: u64,
    /// How many descriptors above its count before the stall the hub may keep after.
    pub fd_slack: u64,
}

/// The scenario's result.
#[derive(Debug, Clone, Serialize)]
pub struct StallSummary {
    /// Event streams that answered 200 and were then left unread.
    pub streams: usize,
    /// Long polls sent and never read.
    pub long_polls: usize,
    /// Whether the C2D subscriber subscribed.
    pub c2d_subscribed: bool,
    /// C2D messages the hub accepted for the stalled device.
    pub c2d_accepted: u64,
    /// Events in the log when the stall began (what the streams had to send).
    pub events_in_log: u64,
    /// The hub before the stall.
    pub before: Option<ProcSample>,
    /// The most descriptors and memory during the stall.
    pub peak: Option<ProcSample>,
    /// After the stalled clients went away.
    pub after: Option<ProcSample>,
    /// Acknowledgements the fleet received during the stall.
    pub fleet_acks: u64,
    /// Fleet senders that got no acknowledgement during the stall.
    pub starved_senders: usize,
    /// Events the fleet's readers read during the stall.
    pub events_read: u64,
    /// `/healthz` during the stall, ms.
    pub healthz_ms: Option<u64>,
}

impl StallSummary {
    /// A one-line summary.
    pub fn line(&self) -> String {
        format!(
            "{} streams, {} long polls, C2D subscriber with {} messages stalled over {} events; fleet acks {} (starved senders {}), healthz {}; hub before {}, peak {}, after {}",
            self.streams,
            self.long_polls,
            self.c2d_accepted,
            self.events_in_log,
            self.fleet_acks,
            self.starved_senders,
            self.healthz_ms
                .map_or("FAILED".into(), |t| format!("{t} ms")),
            sample_text(self.before),
            sample_text(self.peak),
            sample_text(self.after),
        )
    }
}

/// A TLS connection to `addr` with a small receive buffer.
async fn small_tls(tls: &TlsConnector, addr: std::net::SocketAddr) -> Result<BoxIo, String> {
    let socket = TcpSocket::new_v4().map_err(|e| e.to_string())?;
    socket
        .set_recv_buffer_size(SMALL_RCVBUF)
        .map_err(|e| e.to_string())?;
    let tcp = socket.connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let stream = tls.connect(name, tcp).await.map_err(|e| e.to_string())?;
    Ok(Box::new(stream))
}

/// Sends `GET path` and reads the response head (status line and headers) only.
async fn request_head(io: &mut BoxIo, path: &str, token: &str) -> Result<String, String> {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: {token}\r\nAccept: text/event-stream\r\n\r\n"
    );
    io.write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    // Byte by byte, so nothing of the body is read: the stream stays full on the hub's side.
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 * 1024 {
            return Err("response head too long".into());
        }
        match io.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            Ok(_) => return Err("closed before the response head".into()),
            Err(e) => return Err(e.to_string()),
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let status = text.lines().next().unwrap_or_default().to_owned();
    if status.contains(" 200 ") {
        Ok(status)
    } else {
        Err(status)
    }
}

/// An MQTT device subscribed to its C2D topic over a connection with a small receive buffer.
async fn stalled_subscriber(
    live: &LiveHub,
    tls: &TlsConnector,
    fleet: &Fleet,
    id: &str,
) -> Result<BoxIo, String> {
    let creds = Credentials::Sas {
        host: live.hub.device_host.clone(),
        key: fleet.key().clone(),
        expiry: identity::unix_now() + identity::TOKEN_TTL.as_secs(),
    };
    let connect = creds.connect_bytes(id, 60).map_err(|e| e.to_string())?;
    let mut io = small_tls(tls, live.hub.listeners.mqtt).await?;
    let mut buf = BytesMut::new();
    conn::handshake(&mut io, &connect, &mut buf)
        .await
        .map_err(|e| e.to_string())?;
    let filter = identity::c2d_filter(id).map_err(|e| e.to_string())?;
    let mut out = BytesMut::new();
    ferrohub_mqtt::encode(
        &Packet::Subscribe(Subscribe {
            pkid: 1,
            filters: vec![(filter, QoS::AtLeastOnce)],
        }),
        &mut out,
    )
    .map_err(|e| e.to_string())?;
    io.write_all(&out).await.map_err(|e| e.to_string())?;
    // Read up to the SUBACK, then never again.
    for _ in 0..64 {
        match ferrohub_mqtt::decode(&mut buf, MAX_PACKET) {
            Ok(Some(Packet::SubAck(_))) => return Ok(io),
            Ok(Some(_)) => continue,
            Ok(None) => {}
            Err(e) => return Err(e.to_string()),
        }
        buf.reserve(256);
        match io.read_buf(&mut buf).await {
            Ok(0) => return Err("closed before SUBACK".into()),
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Err("no SUBACK".into())
}

/// Sends 60 KB C2D messages to `id` until the hub refuses one (its queue is full) or `max`.
async fn fill_c2d_queue(live: &LiveHub, id: &str, max: usize) -> (u64, Option<String>) {
    let url = format!(
        "{}/devices/{id}/messages/deviceBound?api-version={}",
        live.base,
        identity::API_VERSION
    );
    let body = vec![b'x'; 60 * 1024];
    let mut accepted = 0;
    for _ in 0..max {
        let sent = live
            .http
            .post(&url)
            .header("Authorization", &live.service_token)
            .timeout(Duration::from_secs(10))
            .body(body.clone())
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => accepted += 1,
            Ok(r) => {
                let status = r.status().as_u16();
                let code = r
                    .headers()
                    .get("iothub-errorcode")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                return (accepted, Some(format!("HTTP {status} {code}")));
            }
            Err(e) => return (accepted, Some(format!("{e:#}"))),
        }
    }
    (accepted, None)
}

/// Runs the stalled readers against `hub` while `fleet` publishes.
pub async fn run(
    hub: &HubProcess,
    fleet: &Fleet,
    cfg: &FaultsConfig,
    checks: &mut Checks,
) -> StallSummary {
    let s = &cfg.stall;
    let mut summary = StallSummary {
        streams: 0,
        long_polls: 0,
        c2d_subscribed: false,
        c2d_accepted: 0,
        events_in_log: fleet.read_position(),
        before: None,
        peak: None,
        after: None,
        fleet_acks: 0,
        starved_senders: 0,
        events_read: 0,
        healthz_ms: None,
    };
    let Some(live) = hub.live() else {
        checks.add("stall", "hub running", false, "the hub is not running");
        return summary;
    };
    let tls = match super::flood::tls_connector(&live.hub.ca_pem) {
        Ok(c) => TlsConnector::from(c),
        Err(e) => {
            checks.add("stall", "TLS client", false, format!("{e:#}"));
            return summary;
        }
    };
    summary.before = hub.sample();
    let acks_before: Vec<u64> = fleet
        .sender_indices()
        .map(|i| {
            fleet
                .stats
                .device_acks
                .get(i)
                .map_or(0, |n| n.load(Ordering::Relaxed))
        })
        .collect();
    let read_before = fleet.read_position();
    let total_acks_before = fleet.ledger.acked_total();

    let mut stalled: Vec<BoxIo> = Vec::new();
    let mut failures = Vec::new();
    let partitions = fleet.partitions().max(1);
    let api = identity::API_VERSION;
    for i in 0..s.streams {
        let p = i % partitions;
        let path =
            format!("/messages/events/partitions/{p}/stream?api-version={api}&from=earliest");
        let opened = async {
            let mut io = small_tls(&tls, live.hub.listeners.https).await?;
            request_head(&mut io, &path, &live.service_token).await?;
            Ok::<_, String>(io)
        };
        match tokio::time::timeout(Duration::from_secs(10), opened).await {
            Ok(Ok(io)) => {
                summary.streams += 1;
                stalled.push(io);
            }
            Ok(Err(e)) => failures.push(format!("stream {i}: {e}")),
            Err(_) => failures.push(format!("stream {i}: timed out")),
        }
    }
    for p in 0..partitions {
        let request = format!(
            "GET /messages/events/partitions/{p}/events?api-version={api}&sequenceNumber=0&inclusive=true&max=1000 HTTP/1.1\r\nHost: localhost\r\nAuthorization: {}\r\n\r\n",
            live.service_token
        );
        let opened = async {
            let mut io = small_tls(&tls, live.hub.listeners.https).await?;
            io.write_all(request.as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(io)
        };
        match tokio::time::timeout(Duration::from_secs(10), opened).await {
            Ok(Ok(io)) => {
                summary.long_polls += 1;
                stalled.push(io);
            }
            Ok(Err(e)) => failures.push(format!("long poll {p}: {e}")),
            Err(_) => failures.push(format!("long poll {p}: timed out")),
        }
    }
    if let Some((_, id)) = fleet.spare(2) {
        match tokio::time::timeout(
            Duration::from_secs(10),
            stalled_subscriber(&live, &tls, fleet, &id),
        )
        .await
        {
            Ok(Ok(io)) => {
                summary.c2d_subscribed = true;
                stalled.push(io);
                let (accepted, stop) = fill_c2d_queue(&live, &id, 60).await;
                summary.c2d_accepted = accepted;
                if let Some(why) = stop {
                    eprintln!(
                        "[stall] C2D sends to the stalled device stopped after {accepted}: {why}"
                    );
                }
            }
            Ok(Err(e)) => failures.push(format!("C2D subscriber: {e}")),
            Err(_) => failures.push("C2D subscriber: timed out".into()),
        }
    }
    checks.add(
        "stall",
        "stalled clients in place",
        failures.is_empty(),
        if failures.is_empty() {
            format!(
                "{} event streams from the start of {} events, {} long polls, a C2D subscriber with {} queued 60 KB messages",
                summary.streams, summary.events_in_log, summary.long_polls, summary.c2d_accepted
            )
        } else {
            failures.join("; ")
        },
    );

    // Hold them stalled; watch the hub.
    let until = Instant::now() + crate::pacing::secs_to_duration(s.secs);
    let halfway = Instant::now() + crate::pacing::secs_to_duration(s.secs / 2.0);
    let mut peak = summary.before;
    let mut healthz_done = false;
    while Instant::now() < until {
        if let (Some(p), Some(now)) = (peak, hub.sample()) {
            peak = Some(ProcSample {
                fds: p.fds.max(now.fds),
                rss_kib: p.rss_kib.max(now.rss_kib),
            });
        }
        if !healthz_done && Instant::now() >= halfway {
            healthz_done = true;
            let t = Instant::now();
            match hub::healthz(&live, Duration::from_secs(5)).await {
                Ok((200, _)) => summary.healthz_ms = Some(t.elapsed().as_millis() as u64),
                Ok((status, body)) => eprintln!("[stall] /healthz: {status} {body}"),
                Err(e) => eprintln!("[stall] /healthz: {e}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    summary.peak = peak;
    summary.fleet_acks = fleet.ledger.acked_total().saturating_sub(total_acks_before);
    summary.starved_senders = fleet
        .sender_indices()
        .zip(&acks_before)
        .filter(|(i, before)| {
            fleet
                .stats
                .device_acks
                .get(*i)
                .map_or(0, |n| n.load(Ordering::Relaxed))
                <= **before
        })
        .count();
    summary.events_read = fleet.read_position().saturating_sub(read_before);
    checks.add(
        "stall",
        "every device keeps being served while readers stall",
        summary.starved_senders == 0 && summary.fleet_acks > 0,
        format!(
            "{} acknowledgements in {:.0} s; {} of {} senders got none",
            summary.fleet_acks,
            s.secs,
            summary.starved_senders,
            acks_before.len()
        ),
    );
    checks.add(
        "stall",
        "other readers keep reading while readers stall",
        summary.events_read > 0,
        format!("the fleet's readers read {} events", summary.events_read),
    );
    checks.add(
        "stall",
        "/healthz answers while readers stall",
        summary.healthz_ms.is_some(),
        summary
            .healthz_ms
            .map_or("no 200 within 5 s".into(), |t| format!("200 in {t} ms")),
    );
    let grew_kib = match (summary.before, peak) {
        (Some(b), Some(p)) => p.rss_kib.saturating_sub(b.rss_kib),
        _ => u64::MAX,
    };
    checks.add(
        "stall",
        "hub memory stays bounded while readers stall",
        grew_kib <= s.rss_limit_mib * 1024,
        format!(
            "RSS grew by {:.1} MiB (limit {} MiB): {} → peak {}",
            grew_kib as f64 / 1024.0,
            s.rss_limit_mib,
            sample_text(summary.before),
            sample_text(peak)
        ),
    );

    // Let them go; the hub must give their descriptors back.
    drop(stalled);
    let fd_limit = summary.before.map(|b| b.fds + s.fd_slack);
    summary.after = wait_for(
        Instant::now() + Duration::from_secs(30),
        Duration::from_millis(250),
        || {
            let now = hub.sample();
            async move {
                match (now, fd_limit) {
                    (Some(n), Some(l)) if n.fds <= l => Some(n),
                    _ => None,
                }
            }
        },
    )
    .await
    .or_else(|| hub.sample());
    checks.add(
        "stall",
        "hub file descriptors return when the stalled clients go",
        matches!((summary.before, summary.after), (Some(b), Some(a)) if a.fds <= b.fds + s.fd_slack),
        format!(
            "before {}, peak {}, after {} (allowed: before + {})",
            summary.before.map_or("?".into(), |x| x.fds.to_string()),
            peak.map_or("?".into(), |x| x.fds.to_string()),
            summary.after.map_or("?".into(), |x| x.fds.to_string()),
            s.fd_slack
        ),
    );
    // The stalled device's queued messages would wait for its next connection: purge them so
    // later scenarios start from an empty queue.
    if let Some((_, id)) = fleet.spare(2) {
        let url = format!(
            "{}/devices/{id}/commands?api-version={}",
            live.base,
            identity::API_VERSION
        );
        let _ = live
            .http
            .delete(&url)
            .header("Authorization", &live.service_token)
            .timeout(Duration::from_secs(10))
            .send()
            .await;
    }
    summary
}
