//! The `e2e` workload: devices publish stamped messages (run id, sequence, send time) at a
//! fixed rate, and readers long-poll every partition of the hub's event read API; the time from
//! send to read is the end-to-end latency.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::conn::Endpoint;
use crate::identity::{self, Credentials};
use crate::progress::Counters;
use crate::publish::{self, PublishConfig, PublishSummary, Stamp};
use crate::stats::{self, Latencies, LatencySummary};
use crate::target::Ferrohub;

/// The `e2e` workload's result.
#[derive(Debug, Clone, Serialize)]
pub struct E2eSummary {
    /// `"e2e"`.
    pub workload: &'static str,
    /// The publishing side.
    pub publish: PublishSummary,
    /// How the events were read back.
    pub read_via: ReadVia,
    /// Partitions read.
    pub partitions: usize,
    /// Messages acknowledged in the measured interval: what should be read back.
    pub expected: u64,
    /// Of those, read back.
    pub received: u64,
    /// Expected but not read back before the read timeout.
    pub missing: u64,
    /// Events of this run read more than once (should be 0).
    pub duplicates: u64,
    /// Send to read, µs.
    pub latency_us: Option<LatencySummary>,
    /// Read errors (HTTP), with the first message.
    pub read_errors: u64,
    /// The first read error.
    pub first_read_error: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EndpointInfo {
    partitions: Vec<PartitionInfo>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PartitionInfo {
    partition_id: String,
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
    body: String,
    body_encoding: String,
}

/// What one partition reader saw.
struct ReaderReport {
    latency: Latencies,
    received: u64,
    duplicates: u64,
    errors: u64,
    first_error: Option<String>,
}

/// Decodes an event body as the read API sends it.
fn body_bytes(event: &Event) -> Option<Vec<u8>> {
    if event.body_encoding == "base64" {
        base64::engine::general_purpose::STANDARD
            .decode(&event.body)
            .ok()
    } else {
        Some(event.body.as_bytes().to_vec())
    }
}

/// Reads partition `partition` from `next` until `stop` says the expected count was reached or
/// the deadline passed.
#[allow(clippy::too_many_arguments)]
async fn read_partition(
    http: reqwest::Client,
    base: String,
    token: String,
    partition: String,
    mut next: u64,
    run: u64,
    mut stop: watch::Receiver<Option<(u64, Instant)>>,
    received_total: Arc<AtomicU64>,
    counters: Arc<Counters>,
) -> ReaderReport {
    let mut report = ReaderReport {
        latency: stats::histogram(),
        received: 0,
        duplicates: 0,
        errors: 0,
        first_error: None,
    };
    let mut seen = std::collections::HashSet::new();
    // Bounded by time through `stop`'s deadline; the count bound is a backstop.
    for _ in 0..1_000_000 {
        if let Some((expected, deadline)) = *stop.borrow_and_update()
            && (received_total.load(Ordering::Relaxed) >= expected || Instant::now() >= deadline)
        {
            break;
        }
        let url = format!(
            "{base}/messages/events/partitions/{partition}/events?api-version={}&sequenceNumber={next}&inclusive=true&max=1000&wait=1",
            identity::API_VERSION
        );
        let result = async {
            let response = http
                .get(&url)
                .header("Authorization", &token)
                .send()
                .await
                .context("event read request")?;
            let status = response.status();
            if !status.is_success() {
                let text = response.text().await.unwrap_or_default();
                anyhow::bail!("event read failed: {status}: {text}");
            }
            let bytes = response.bytes().await.context("event read body")?;
            let batch: Batch = serde_json::from_slice(&bytes).context("parsing events")?;
            Ok(batch)
        }
        .await;
        let now_ns = identity::unix_now_nanos();
        match result {
            Ok(batch) => {
                let mut ours = 0;
                for event in &batch.events {
                    let Some(stamp) = body_bytes(event).and_then(|b| Stamp::read(&b)) else {
                        continue;
                    };
                    if stamp.run != run || !stamp.in_window {
                        continue;
                    }
                    if !seen.insert(stamp.seq) {
                        report.duplicates += 1;
                        continue;
                    }
                    ours += 1;
                    stats::record(
                        &mut report.latency,
                        Duration::from_nanos(now_ns.saturating_sub(stamp.sent_unix_ns)),
                    );
                }
                report.received += ours;
                received_total.fetch_add(ours, Ordering::Relaxed);
                Counters::add(&counters.received, ours);
                next = batch.next_sequence_number.max(next);
            }
            Err(e) => {
                report.errors += 1;
                if report.first_error.is_none() {
                    report.first_error = Some(format!("{e:#}"));
                }
                // Don't spin on a failing endpoint.
                let _ = tokio::time::timeout(Duration::from_millis(200), stop.changed()).await;
            }
        }
    }
    report
}

/// How the events are read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ReadVia {
    /// Long polls of the HTTP read API, one reader per partition.
    Http,
    /// Event Hubs-style AMQP receivers on `{hub}/ConsumerGroups/$Default/Partitions/{p}`, one
    /// connection per partition, from the partition's end.
    Amqp,
}

/// How many events an AMQP partition receiver keeps granted.
const AMQP_CREDIT: u32 = 300;

/// Reads partition `partition` over AMQP from sequence number `next` until `stop` says the
/// expected count was reached or the deadline passed.
#[allow(clippy::too_many_arguments)]
async fn read_partition_amqp(
    hub: Ferrohub,
    partition: String,
    next: u64,
    run: u64,
    mut stop: watch::Receiver<Option<(u64, Instant)>>,
    received_total: Arc<AtomicU64>,
    counters: Arc<Counters>,
    attached: tokio::sync::oneshot::Sender<()>,
) -> ReaderReport {
    let mut report = ReaderReport {
        latency: stats::histogram(),
        received: 0,
        duplicates: 0,
        errors: 0,
        first_error: None,
    };
    let fail = |report: &mut ReaderReport, e: String| {
        report.errors += 1;
        report.first_error.get_or_insert(e);
    };
    let mut conn = match crate::amqp::connect_service(&hub).await {
        Ok(c) => c,
        Err(e) => {
            fail(&mut report, format!("{e:#}"));
            return report;
        }
    };
    let name = crate::amqp::event_hub_name(&hub);
    let source = crate::amqp::partition_source(&name, &partition, next);
    let link = match conn
        .attach_receiver(&format!("bench-e2e-{partition}"), source, None, AMQP_CREDIT)
        .await
    {
        Ok(l) => l,
        Err(e) => {
            fail(&mut report, format!("attaching the receiver: {e}"));
            return report;
        }
    };
    let _ = attached.send(());
    let mut seen = std::collections::HashSet::new();
    loop {
        if let Some((expected, deadline)) = *stop.borrow_and_update()
            && (received_total.load(Ordering::Relaxed) >= expected || Instant::now() >= deadline)
        {
            break;
        }
        // Once publishing is over, look at the totals every few milliseconds: the events this
        // reader waits for may all have come through the other partitions.
        let stopping = stop.borrow().is_some();
        let incoming = tokio::select! {
            changed = stop.changed() => {
                if changed.is_err() {
                    break;
                }
                continue;
            }
            () = async {
                if stopping {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                } else {
                    std::future::pending::<()>().await;
                }
            } => continue,
            incoming = conn.next() => incoming,
        };
        let now_ns = identity::unix_now_nanos();
        match incoming {
            Ok(i @ ferrohub_client::amqp::Incoming::Message { handle, .. }) if handle == link => {
                let Some(stamp) = i
                    .message()
                    .and_then(|m| Stamp::read(&crate::amqp::body(&m)))
                else {
                    continue;
                };
                if stamp.run != run || !stamp.in_window {
                    continue;
                }
                if !seen.insert(stamp.seq) {
                    report.duplicates += 1;
                    continue;
                }
                report.received += 1;
                received_total.fetch_add(1, Ordering::Relaxed);
                Counters::add(&counters.received, 1);
                stats::record(
                    &mut report.latency,
                    Duration::from_nanos(now_ns.saturating_sub(stamp.sent_unix_ns)),
                );
            }
            Ok(ferrohub_client::amqp::Incoming::Detached { error, .. }) => {
                fail(&mut report, format!("receiver detached: {error:?}"));
                break;
            }
            Ok(_) => {}
            Err(e) => {
                fail(&mut report, format!("{e}"));
                break;
            }
        }
    }
    let _ = conn.close().await;
    report
}

/// Runs the end-to-end workload against a Ferrohub. `cfg.stamp` is set here.
pub async fn run(
    hub: &Ferrohub,
    target_label: String,
    endpoint: &Endpoint,
    creds: &Credentials,
    cfg: &PublishConfig,
    read_timeout: Duration,
    via: ReadVia,
) -> anyhow::Result<E2eSummary> {
    if cfg.payload < Stamp::LEN {
        anyhow::bail!("e2e needs a payload of at least {} bytes", Stamp::LEN);
    }
    let run_id = Stamp::new_run_id()?;
    let http = hub.http_client()?;
    let token = hub.service_token()?;
    let base = hub.base_url();
    let info: EndpointInfo = {
        let url = format!(
            "{base}/messages/events/partitions?api-version={}",
            identity::API_VERSION
        );
        let response = http
            .get(&url)
            .header("Authorization", &token)
            .send()
            .await
            .context("listing partitions")?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            anyhow::bail!("listing partitions failed: {status}: {text}");
        }
        serde_json::from_str(&text).context("parsing partitions")?
    };
    let counters = Arc::new(Counters::default());
    let received_total = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = watch::channel(None);
    let mut readers = tokio::task::JoinSet::new();
    let mut attached = Vec::new();
    for p in &info.partitions {
        let start = u64::try_from(p.last_enqueued_sequence_number + 1).unwrap_or(0);
        match via {
            ReadVia::Http => {
                readers.spawn(read_partition(
                    http.clone(),
                    base.clone(),
                    token.clone(),
                    p.partition_id.clone(),
                    start,
                    run_id,
                    stop_rx.clone(),
                    received_total.clone(),
                    counters.clone(),
                ));
            }
            ReadVia::Amqp => {
                let (tx, rx) = tokio::sync::oneshot::channel();
                attached.push(rx);
                readers.spawn(read_partition_amqp(
                    hub.clone(),
                    p.partition_id.clone(),
                    start,
                    run_id,
                    stop_rx.clone(),
                    received_total.clone(),
                    counters.clone(),
                    tx,
                ));
            }
        }
    }
    // Publishing starts once every receiver is attached (or gave up).
    for rx in attached {
        let _ = rx.await;
    }
    let mut cfg = cfg.clone();
    cfg.stamp = Some(run_id);
    let published = publish::run(target_label, endpoint, creds, &cfg, counters.clone(), true).await;
    let expected = published.as_ref().map_or(0, |p| p.acked);
    let _ = stop_tx.send(Some((expected, Instant::now() + read_timeout)));
    let mut latency = stats::histogram();
    let (mut received, mut duplicates, mut errors, mut first_error) = (0, 0, 0, None);
    while let Some(joined) = readers.join_next().await {
        let Ok(r) = joined else {
            errors += 1;
            continue;
        };
        stats::merge(&mut latency, &r.latency);
        received += r.received;
        duplicates += r.duplicates;
        errors += r.errors;
        if first_error.is_none() {
            first_error = r.first_error;
        }
    }
    let published = published?;
    Ok(E2eSummary {
        workload: "e2e",
        publish: published,
        read_via: via,
        partitions: info.partitions.len(),
        expected,
        received,
        missing: expected.saturating_sub(received),
        duplicates,
        latency_us: LatencySummary::of(&latency),
        read_errors: errors,
        first_read_error: first_error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_decode_from_base64_or_text() {
        let stamp = Stamp {
            run: 5,
            seq: 6,
            sent_unix_ns: 7,
            in_window: true,
        };
        let mut payload = vec![0u8; 40];
        stamp.write(&mut payload);
        let event = Event {
            body: base64::engine::general_purpose::STANDARD.encode(&payload),
            body_encoding: "base64".into(),
        };
        let bytes = body_bytes(&event).expect("decodes");
        assert_eq!(Stamp::read(&bytes), Some(stamp));
        let text = Event {
            body: "hello".into(),
            body_encoding: "text".into(),
        };
        assert_eq!(body_bytes(&text).as_deref(), Some(&b"hello"[..]));
        let broken = Event {
            body: "***".into(),
            body_encoding: "base64".into(),
        };
        assert_eq!(body_bytes(&broken), None);
    }

    #[test]
    fn parses_a_read_batch() {
        let json = r#"{"events":[{"partition":"0","sequenceNumber":3,"offset":"99","enqueuedTimeUtc":"2026-01-01T00:00:00Z","systemProperties":{"iothub-connection-device-id":"bench-0"},"properties":{},"body":"aGk=","bodyEncoding":"base64"}],"nextSequenceNumber":4}"#;
        let batch: Batch = serde_json::from_str(json).expect("parses");
        assert_eq!(batch.next_sequence_number, 4);
        assert_eq!(body_bytes(&batch.events[0]).as_deref(), Some(&b"hi"[..]));
    }
}
