//! The `eh-read` workload: the read throughput of one partition over what is already in it
//! (the events earlier workloads left, or a `publish` run before this one). The last `events`
//! events of the partition are read once through an Event Hubs-style AMQP receiver
//! (`{hub}/ConsumerGroups/$Default/Partitions/{p}`, a sequence-number filter, `credit` events
//! granted and topped up) and once through the HTTP read API (`GET
//! /messages/events/partitions/{p}/events`, pages of up to 1,000), each from the first event's
//! request to the last event's arrival.

use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::identity;
use crate::stats;
use crate::target::Ferrohub;

/// The workload's settings.
#[derive(Debug, Clone)]
pub struct EhReadConfig {
    /// The partition read.
    pub partition: u32,
    /// How many events (the partition's last ones) each reader reads.
    pub events: u64,
    /// Credit the AMQP receiver keeps granted.
    pub credit: u32,
    /// Which readers run.
    pub readers: Vec<Reader>,
    /// Longest one reader may take.
    pub timeout: Duration,
    /// The server's pid, for its CPU time during each read.
    pub server_pid: Option<u32>,
}

/// A way of reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Reader {
    /// One AMQP partition receiver.
    Amqp,
    /// The HTTP read API, one request after the other.
    Http,
}

/// What one reader achieved.
#[derive(Debug, Clone, Serialize)]
pub struct ReadResult {
    /// How it read.
    pub reader: Reader,
    /// Events read.
    pub events: u64,
    /// Event body bytes read.
    pub body_bytes: u64,
    /// Bytes on the wire above TLS (AMQP message payloads, or HTTP response bodies).
    pub wire_bytes: u64,
    /// First request to last event, seconds.
    pub seconds: f64,
    /// Events per second.
    pub events_per_s: f64,
    /// Body MB (10⁶ bytes) per second.
    pub body_mb_per_s: f64,
    /// Wire MB per second.
    pub wire_mb_per_s: f64,
    /// Why it stopped early, if it did.
    pub error: Option<String>,
    /// CPU while it read.
    pub cpu: Option<crate::procfs::CpuUsage>,
}

/// The `eh-read` workload's result.
#[derive(Debug, Clone, Serialize)]
pub struct EhReadSummary {
    /// `"eh-read"`.
    pub workload: &'static str,
    /// The partition read.
    pub partition: u32,
    /// The first sequence number read.
    pub from_sequence_number: u64,
    /// The last.
    pub to_sequence_number: u64,
    /// The AMQP receiver's credit.
    pub credit: u32,
    /// One result per reader, in the order they ran.
    pub results: Vec<ReadResult>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PartitionInfo {
    begin_sequence_number: i64,
    last_enqueued_sequence_number: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Batch {
    events: Vec<Event>,
    next_sequence_number: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Event {
    sequence_number: u64,
    body: String,
    body_encoding: String,
}

fn result(
    reader: Reader,
    events: u64,
    body_bytes: u64,
    wire_bytes: u64,
    took: Duration,
    error: Option<String>,
) -> ReadResult {
    let secs = took.as_secs_f64().max(1e-9);
    ReadResult {
        reader,
        events,
        body_bytes,
        wire_bytes,
        seconds: (secs * 1000.0).round() / 1000.0,
        events_per_s: stats::round1(events as f64 / secs),
        body_mb_per_s: (body_bytes as f64 / secs / 1e4).round() / 100.0,
        wire_mb_per_s: (wire_bytes as f64 / secs / 1e4).round() / 100.0,
        error,
        cpu: None,
    }
}

async fn read_amqp(hub: &Ferrohub, cfg: &EhReadConfig, from: u64, to: u64) -> ReadResult {
    let (mut events, mut body_bytes, mut wire_bytes) = (0u64, 0u64, 0u64);
    let started = Instant::now();
    let mut last = started;
    let outcome: anyhow::Result<()> = tokio::time::timeout(cfg.timeout, async {
        let mut conn = crate::amqp::connect_service(hub).await?;
        let name = crate::amqp::event_hub_name(hub);
        let partition = cfg.partition.to_string();
        let source = crate::amqp::partition_source(&name, &partition, from);
        let link = conn
            .attach_receiver("bench-eh-read", source, None, cfg.credit)
            .await
            .context("attaching the receiver")?;
        let mut next = from;
        while next <= to {
            match conn.next().await? {
                i @ ferrohub_client::amqp::Incoming::Message { handle, .. } if handle == link => {
                    let ferrohub_client::amqp::Incoming::Message { payload, .. } = &i else {
                        continue;
                    };
                    wire_bytes += payload.len() as u64;
                    let m = i.message().context("an undecodable event")?;
                    body_bytes += crate::amqp::body(&m).len() as u64;
                    events += 1;
                    next += 1;
                    last = Instant::now();
                }
                ferrohub_client::amqp::Incoming::Detached { error, .. } => {
                    anyhow::bail!("the receiver was detached: {error:?}");
                }
                _ => {}
            }
        }
        let _ = conn.close().await;
        Ok(())
    })
    .await
    .unwrap_or_else(|_| Err(anyhow::anyhow!("timed out")));
    result(
        Reader::Amqp,
        events,
        body_bytes,
        wire_bytes,
        last - started,
        outcome.err().map(|e| format!("{e:#}")),
    )
}

async fn read_http(hub: &Ferrohub, cfg: &EhReadConfig, from: u64, to: u64) -> ReadResult {
    let (mut events, mut body_bytes, mut wire_bytes) = (0u64, 0u64, 0u64);
    let started = Instant::now();
    let mut last = started;
    let outcome: anyhow::Result<()> = tokio::time::timeout(cfg.timeout, async {
        let http = hub.http_client()?;
        let token = hub.service_token()?;
        let base = hub.base_url();
        let mut next = from;
        while next <= to {
            let max = (to - next + 1).min(1000);
            let url = format!(
                "{base}/messages/events/partitions/{}/events?api-version={}&sequenceNumber={next}&inclusive=true&max={max}",
                cfg.partition,
                identity::API_VERSION
            );
            let response = http
                .get(&url)
                .header("Authorization", &token)
                .send()
                .await
                .context("event read request")?;
            let status = response.status();
            let bytes = response.bytes().await.context("event read body")?;
            if !status.is_success() {
                anyhow::bail!("event read failed: {status}: {}", String::from_utf8_lossy(&bytes));
            }
            wire_bytes += bytes.len() as u64;
            let batch: Batch = serde_json::from_slice(&bytes).context("parsing events")?;
            for e in batch.events.iter().filter(|e| e.sequence_number <= to) {
                let len = if e.body_encoding == "base64" {
                    base64::engine::general_purpose::STANDARD
                        .decode(&e.body)
                        .map_or(0, |b| b.len())
                } else {
                    e.body.len()
                };
                body_bytes += len as u64;
                events += 1;
            }
            if batch.events.is_empty() || batch.next_sequence_number <= next {
                anyhow::bail!("the read API returned no events at {next}");
            }
            next = batch.next_sequence_number;
            last = Instant::now();
        }
        Ok(())
    })
    .await
    .unwrap_or_else(|_| Err(anyhow::anyhow!("timed out")));
    result(
        Reader::Http,
        events,
        body_bytes,
        wire_bytes,
        last - started,
        outcome.err().map(|e| format!("{e:#}")),
    )
}

/// Runs the workload.
pub async fn run(hub: &Ferrohub, cfg: &EhReadConfig) -> anyhow::Result<EhReadSummary> {
    if cfg.events == 0 || cfg.credit == 0 {
        anyhow::bail!("--events and --credit must be at least 1");
    }
    let http = hub.http_client()?;
    let token = hub.service_token()?;
    let url = format!(
        "{}/messages/events/partitions/{}?api-version={}",
        hub.base_url(),
        cfg.partition,
        identity::API_VERSION
    );
    let response = http
        .get(&url)
        .header("Authorization", &token)
        .send()
        .await
        .context("reading the partition's state")?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    if !status.is_success() {
        anyhow::bail!("reading the partition's state failed: {status}: {text}");
    }
    let info: PartitionInfo = serde_json::from_str(&text).context("parsing the partition")?;
    let (Ok(first), Ok(to)) = (
        u64::try_from(info.begin_sequence_number),
        u64::try_from(info.last_enqueued_sequence_number),
    ) else {
        anyhow::bail!(
            "partition {} is empty: publish something first",
            cfg.partition
        );
    };
    let from = to.saturating_add(1).saturating_sub(cfg.events).max(first);
    let mut results = Vec::new();
    for reader in &cfg.readers {
        let meter = crate::procfs::CpuMeter::start(cfg.server_pid);
        let mut r = match reader {
            Reader::Amqp => read_amqp(hub, cfg, from, to).await,
            Reader::Http => read_http(hub, cfg, from, to).await,
        };
        r.cpu = Some(meter.finish());
        results.push(r);
    }
    Ok(EhReadSummary {
        workload: "eh-read",
        partition: cfg.partition,
        from_sequence_number: from,
        to_sequence_number: to,
        credit: cfg.credit,
        results,
    })
}
