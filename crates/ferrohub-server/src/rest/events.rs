//! The built-in event endpoint over HTTPS: partitions, reading by position with a long poll, a
//! live server-sent-events stream, and consumer groups with checkpoints. ServiceConnect.
//!
//! Events carry Azure's property names (`iothub-connection-device-id`, `iothub-enqueuedtime`,
//! `x-opt-sequence-number`, `x-opt-offset`, `x-opt-enqueued-time`, …) so a back end written for
//! the Event Hub–compatible endpoint finds what it expects.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use chrono::DateTime;
use ferrohub_log::{PartitionInfo, Record, StartPosition};
use ferrohub_types::{ErrorCode, Permission};
use futures_util::stream::Stream;

use ferrohub_api::{ConsumerGroupInfo, EndpointInfo, EventBatch, EventData, PartitionProperties};

use super::error::ApiError;
use super::extract;
use super::{HubState, json};
use crate::consumer_groups::{Checkpoint, GroupError};
use crate::hub::Hub;

/// Most events one read returns.
const MAX_BATCH: usize = 1000;
/// Longest long poll.
const MAX_WAIT: Duration = Duration::from_secs(60);

fn properties(info: &PartitionInfo) -> PartitionProperties {
    PartitionProperties {
        partition_id: info.partition.to_string(),
        begin_sequence_number: info.begin_sequence_number,
        last_enqueued_sequence_number: info
            .last_enqueued_sequence_number
            .and_then(|s| i64::try_from(s).ok())
            .unwrap_or(-1),
        last_enqueued_offset: info
            .last_enqueued_offset
            .map_or_else(|| "-1".to_owned(), |o| o.to_string()),
        last_enqueued_time_utc: info
            .last_enqueued_time_ms
            .and_then(DateTime::from_timestamp_millis),
        is_empty: info.is_empty,
    }
}

fn is_text(system: &[(String, String)]) -> bool {
    system.iter().any(|(k, v)| {
        let v = v.to_ascii_lowercase();
        (k == "content-type" && (v.starts_with("text/") || v.contains("json") || v.contains("xml")))
            || (k == "content-encoding" && v.starts_with("utf-"))
    })
}

pub(crate) fn event_data(partition: u32, r: Record) -> EventData {
    let mut system = BTreeMap::new();
    for (k, v) in &r.system_properties {
        let value = if k == "iothub-enqueuedtime" {
            v.parse::<i64>().map_or_else(
                |_| serde_json::Value::String(v.clone()),
                serde_json::Value::from,
            )
        } else {
            serde_json::Value::String(v.clone())
        };
        system.insert(k.clone(), value);
    }
    system.insert("x-opt-sequence-number".into(), r.sequence_number.into());
    system.insert("x-opt-offset".into(), r.offset.to_string().into());
    system.insert("x-opt-enqueued-time".into(), r.enqueued_ms.into());
    let (body, body_encoding) = match (is_text(&r.system_properties), String::from_utf8(r.body)) {
        (true, Ok(text)) => (text, "text"),
        (_, Ok(text)) => (
            base64::engine::general_purpose::STANDARD.encode(text.as_bytes()),
            "base64",
        ),
        (_, Err(e)) => (
            base64::engine::general_purpose::STANDARD.encode(e.as_bytes()),
            "base64",
        ),
    };
    EventData {
        partition: partition.to_string(),
        sequence_number: r.sequence_number,
        offset: r.offset.to_string(),
        enqueued_time_utc: DateTime::from_timestamp_millis(r.enqueued_ms),
        system_properties: system,
        properties: r.application_properties.into_iter().collect(),
        body,
        body_encoding: body_encoding.to_owned(),
    }
}

fn partition_param(hub: &Hub, p: &str) -> Result<u32, ApiError> {
    p.parse::<u32>()
        .ok()
        .filter(|n| *n < hub.events.partition_count())
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::GenericNotFound,
                format!(
                    "No partition '{p}'; the partitions are 0 to {}.",
                    hub.events.partition_count().saturating_sub(1)
                ),
            )
        })
}

fn group_error(e: GroupError) -> ApiError {
    match e {
        GroupError::NotFound(_) => ApiError::new(ErrorCode::GenericNotFound, e.to_string()),
        GroupError::InvalidName(_) | GroupError::DefaultGroup => ApiError::invalid(e.to_string()),
        GroupError::TooMany => ApiError::new(ErrorCode::IotHubQuotaExceeded, e.to_string()),
        GroupError::Io(_) => {
            tracing::error!(error = %e, "consumer group store failed");
            ApiError::new(ErrorCode::ServerError, e.to_string())
        }
    }
}

/// Where a read starts, from the query string.
fn start_position(
    hub: &Hub,
    partition: u32,
    q: &HashMap<String, String>,
) -> Result<StartPosition, ApiError> {
    let inclusive = match q.get("inclusive").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "inclusive must be true or false, not {other:?}."
            )));
        }
    };
    if let Some(s) = q.get("sequenceNumber") {
        let seq = s
            .parse()
            .map_err(|_| ApiError::invalid(format!("sequenceNumber {s:?} is not a number.")))?;
        return Ok(StartPosition::Sequence { seq, inclusive });
    }
    if let Some(s) = q.get("offset") {
        if s == "-1" {
            return Ok(StartPosition::Earliest);
        }
        let offset = s
            .parse()
            .map_err(|_| ApiError::invalid(format!("offset {s:?} is not a valid offset.")))?;
        return Ok(StartPosition::Offset { offset, inclusive });
    }
    if let Some(s) = q.get("enqueuedTime") {
        let ms = match s.parse::<i64>() {
            Ok(ms) => ms,
            Err(_) => DateTime::parse_from_rfc3339(s)
                .map_err(|_| {
                    ApiError::invalid(format!(
                        "enqueuedTime {s:?} is neither RFC 3339 nor milliseconds since the epoch."
                    ))
                })?
                .timestamp_millis(),
        };
        return Ok(StartPosition::EnqueuedTime(ms));
    }
    match q.get("from").map(String::as_str).unwrap_or("earliest") {
        "earliest" | "start" => Ok(StartPosition::Earliest),
        // "Latest" is pinned to the current end so a long poll returns what arrives meanwhile.
        "latest" | "end" => {
            let info = hub.events.info(partition).map_err(log_error)?;
            Ok(match info.last_enqueued_sequence_number {
                Some(seq) => StartPosition::Sequence {
                    seq,
                    inclusive: false,
                },
                None => StartPosition::Earliest,
            })
        }
        "checkpoint" => {
            let group = q
                .get("consumerGroup")
                .map_or(crate::consumer_groups::DEFAULT_GROUP, String::as_str);
            let cps = hub.groups.checkpoints(group).map_err(group_error)?;
            Ok(match cps.get(&partition) {
                Some(cp) => StartPosition::Sequence {
                    seq: cp.sequence_number,
                    inclusive: false,
                },
                None => StartPosition::Earliest,
            })
        }
        other => Err(ApiError::invalid(format!(
            "from must be earliest, latest or checkpoint, not {other:?}."
        ))),
    }
}

fn log_error(e: ferrohub_log::LogError) -> ApiError {
    tracing::error!(error = %e, "reading the event log failed");
    ApiError::new(
        ErrorCode::ServiceUnavailable,
        "The event log is unavailable.",
    )
}

fn next_position(records: &[Record], from: StartPosition) -> StartPosition {
    match records.last() {
        Some(r) => StartPosition::Sequence {
            seq: r.sequence_number,
            inclusive: false,
        },
        None => from,
    }
}

/// The endpoint's partitions and their properties.
#[utoipa::path(get, path = "/messages/events/partitions", tag = "events",
    responses((status = 200, body = EndpointInfo)))]
pub(crate) async fn partitions(
    hub: HubState,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    hub.authorize_service(&headers, uri.path(), &[Permission::ServiceConnect])?;
    let n = hub.events.partition_count();
    let mut parts = Vec::new();
    for p in 0..n {
        parts.push(properties(&hub.events.info(p).map_err(log_error)?));
    }
    let body = EndpointInfo {
        name: "messages/events".into(),
        partition_count: n,
        partition_ids: (0..n).map(|p| p.to_string()).collect(),
        partitions: parts,
    };
    Ok(json(StatusCode::OK, &body, None))
}

/// One partition's properties.
#[utoipa::path(get, path = "/messages/events/partitions/{partition}", tag = "events",
    params(("partition" = String, Path, description = "Partition id")),
    responses((status = 200, body = PartitionProperties), (status = 404, body = ferrohub_api::ErrorBody)))]
pub(crate) async fn partition(
    hub: HubState,
    uri: Uri,
    headers: HeaderMap,
    Path(p): Path<String>,
) -> Result<Response, ApiError> {
    hub.authorize_service(&headers, uri.path(), &[Permission::ServiceConnect])?;
    let p = partition_param(&hub, &p)?;
    let info = hub.events.info(p).map_err(log_error)?;
    Ok(json(StatusCode::OK, &properties(&info), None))
}

/// Reads a batch of events from a partition. Start at `from=earliest|latest|checkpoint` (with
/// `consumerGroup`), or at `offset`, `sequenceNumber` or `enqueuedTime` (RFC 3339 or ms),
/// exclusive unless `inclusive=true`. `max` (1–1000, default 100) bounds the batch; `wait`
/// (seconds, up to 60) waits for events when there are none yet.
#[utoipa::path(get, path = "/messages/events/partitions/{partition}/events", tag = "events",
    params(("partition" = String, Path, description = "Partition id"),
           ("from" = Option<String>, Query, description = "earliest (default), latest or checkpoint"),
           ("offset" = Option<String>, Query, description = "Start after this offset"),
           ("sequenceNumber" = Option<u64>, Query, description = "Start after this sequence number"),
           ("enqueuedTime" = Option<String>, Query, description = "Start at this time"),
           ("inclusive" = Option<bool>, Query, description = "Include the event at the position"),
           ("max" = Option<u32>, Query, description = "Most events (1–1000)"),
           ("wait" = Option<u32>, Query, description = "Seconds to wait for events (0–60)"),
           ("consumerGroup" = Option<String>, Query, description = "Group for from=checkpoint")),
    responses((status = 200, body = EventBatch), (status = 400, body = ferrohub_api::ErrorBody)))]
pub(crate) async fn read_events(
    hub: HubState,
    uri: Uri,
    headers: HeaderMap,
    Path(p): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    hub.authorize_service(&headers, uri.path(), &[Permission::ServiceConnect])?;
    let partition = partition_param(&hub, &p)?;
    let max = match q.get("max") {
        None => 100,
        Some(m) => m
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_BATCH).contains(n))
            .ok_or_else(|| ApiError::invalid(format!("max must be 1 to {MAX_BATCH}.")))?,
    };
    let wait = match q.get("wait") {
        None => Duration::ZERO,
        Some(w) => w
            .parse::<u64>()
            .ok()
            .map(Duration::from_secs)
            .filter(|d| *d <= MAX_WAIT)
            .ok_or_else(|| ApiError::invalid("wait must be 0 to 60 seconds."))?,
    };
    let from = start_position(&hub, partition, &q)?;
    let deadline = tokio::time::Instant::now() + wait;
    let mut changes = hub.events.watch();
    let records = loop {
        changes.borrow_and_update();
        let records = hub
            .events
            .read(partition, from, max)
            .await
            .map_err(log_error)?;
        if !records.is_empty() {
            break records;
        }
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        if remaining.is_zero() {
            break records;
        }
        if tokio::time::timeout(remaining, changes.changed())
            .await
            .is_err()
        {
            break Vec::new();
        }
    };
    let next = match next_position(&records, from) {
        StartPosition::Sequence { seq, inclusive } => seq + u64::from(!inclusive),
        _ => records.last().map_or(0, |r| r.sequence_number + 1),
    };
    let body = EventBatch {
        events: records
            .into_iter()
            .map(|r| event_data(partition, r))
            .collect(),
        next_sequence_number: next,
    };
    Ok(json(StatusCode::OK, &body, None))
}

/// A live stream of a partition's events as server-sent events (`data:` is an event's JSON,
/// `id:` its sequence number). Takes the same start parameters as the batch read.
#[utoipa::path(get, path = "/messages/events/partitions/{partition}/stream", tag = "events",
    params(("partition" = String, Path, description = "Partition id")),
    responses((status = 200, description = "text/event-stream of events")))]
pub(crate) async fn stream_events(
    hub: HubState,
    uri: Uri,
    headers: HeaderMap,
    Path(p): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    hub.authorize_service(&headers, uri.path(), &[Permission::ServiceConnect])?;
    let partition = partition_param(&hub, &p)?;
    let mut from = start_position(&hub, partition, &q)?;
    let hub = hub.0.clone();
    let stream = async_stream(move |tx| async move {
        let mut changes = hub.events.watch();
        loop {
            changes.borrow_and_update();
            let records = match hub.events.read(partition, from, 256).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "event stream read failed");
                    return;
                }
            };
            from = next_position(&records, from);
            for r in records {
                let id = r.sequence_number.to_string();
                let data = serde_json::to_string(&event_data(partition, r)).unwrap_or_default();
                if tx
                    .send(SseEvent::default().id(id).data(data))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            if changes.changed().await.is_err() {
                return;
            }
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// Turns a producer task into a stream; the task ends when the client goes away.
fn async_stream<F, Fut>(producer: F) -> impl Stream<Item = Result<SseEvent, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<SseEvent>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(producer(tx));
    futures_util::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) },
    )
}

/// The consumer groups.
#[utoipa::path(get, path = "/messages/events/consumergroups", tag = "events",
    responses((status = 200, body = Vec<ConsumerGroupInfo>)))]
pub(crate) async fn list_groups(
    hub: HubState,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    hub.authorize_service(&headers, uri.path(), &[Permission::ServiceConnect])?;
    let body: Vec<ConsumerGroupInfo> = hub
        .groups
        .list()
        .into_iter()
        .map(|(name, created_time_utc)| ConsumerGroupInfo {
            name,
            created_time_utc,
        })
        .collect();
    Ok(json(StatusCode::OK, &body, None))
}

/// Creates a consumer group (at most 20 besides `$Default`). 201 when created, 200 when it
/// existed.
#[utoipa::path(put, path = "/messages/events/consumergroups/{name}", tag = "events",
    params(("name" = String, Path, description = "Group name")),
    responses((status = 201), (status = 200), (status = 400, body = ferrohub_api::ErrorBody),
              (status = 403, body = ferrohub_api::ErrorBody)))]
pub(crate) async fn create_group(
    hub: HubState,
    uri: Uri,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    hub.authorize_service(&headers, uri.path(), &[Permission::ServiceConnect])?;
    let now = hub.now();
    let groups = hub.0.clone();
    let created = tokio::task::spawn_blocking(move || groups.groups.create(&name, now))
        .await
        .map_err(|e| ApiError::new(ErrorCode::ServerError, e.to_string()))?
        .map_err(group_error)?;
    groups_changed(&hub);
    Ok(if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    }
    .into_response())
}

/// Tells the other nodes of a cluster that the consumer groups changed.
fn groups_changed(hub: &crate::hub::Hub) {
    if hub.groups.is_shared() {
        hub.coordinator
            .publish(crate::cluster::ClusterEvent::GroupsChanged);
    }
}

/// Deletes a consumer group and its checkpoints.
#[utoipa::path(delete, path = "/messages/events/consumergroups/{name}", tag = "events",
    params(("name" = String, Path, description = "Group name")),
    responses((status = 204), (status = 404, body = ferrohub_api::ErrorBody)))]
pub(crate) async fn delete_group(
    hub: HubState,
    uri: Uri,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    hub.authorize_service(&headers, uri.path(), &[Permission::ServiceConnect])?;
    let groups = hub.0.clone();
    tokio::task::spawn_blocking(move || groups.groups.delete(&name))
        .await
        .map_err(|e| ApiError::new(ErrorCode::ServerError, e.to_string()))?
        .map_err(group_error)?;
    groups_changed(&hub);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A group's checkpoints.
#[utoipa::path(get, path = "/messages/events/consumergroups/{name}/checkpoints", tag = "events",
    params(("name" = String, Path, description = "Group name")),
    responses((status = 200, body = Object, description = "Checkpoints by partition id"), (status = 404, body = ferrohub_api::ErrorBody)))]
pub(crate) async fn checkpoints(
    hub: HubState,
    uri: Uri,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    hub.authorize_service(&headers, uri.path(), &[Permission::ServiceConnect])?;
    hub.groups.refresh().await;
    let cps = hub.groups.checkpoints(&name).map_err(group_error)?;
    let body: BTreeMap<String, ferrohub_api::Checkpoint> = cps
        .into_iter()
        .map(|(p, c)| {
            (
                p.to_string(),
                ferrohub_api::Checkpoint {
                    sequence_number: c.sequence_number,
                    offset: c.offset,
                    updated_time_utc: Some(c.updated_time_utc),
                },
            )
        })
        .collect();
    Ok(json(StatusCode::OK, &body, None))
}

/// Stores a group's checkpoint for a partition.
#[utoipa::path(put, path = "/messages/events/consumergroups/{name}/partitions/{partition}/checkpoint", tag = "events",
    params(("name" = String, Path, description = "Group name"), ("partition" = String, Path, description = "Partition id")),
    request_body = ferrohub_api::Checkpoint,
    responses((status = 204), (status = 404, body = ferrohub_api::ErrorBody)))]
pub(crate) async fn set_checkpoint(
    hub: HubState,
    uri: Uri,
    headers: HeaderMap,
    Path((name, p)): Path<(String, String)>,
    req: axum::extract::Request,
) -> Result<Response, ApiError> {
    hub.authorize_service(&headers, uri.path(), &[Permission::ServiceConnect])?;
    let body: ferrohub_api::Checkpoint = extract::json(req).await?;
    let partition = partition_param(&hub, &p)?;
    let cp = Checkpoint {
        sequence_number: body.sequence_number,
        offset: body.offset,
        updated_time_utc: hub.now(),
    };
    let groups = hub.0.clone();
    tokio::task::spawn_blocking(move || groups.groups.set_checkpoint(&name, partition, cp))
        .await
        .map_err(|e| ApiError::new(ErrorCode::ServerError, e.to_string()))?
        .map_err(group_error)?;
    groups_changed(&hub);
    Ok(StatusCode::NO_CONTENT.into_response())
}
