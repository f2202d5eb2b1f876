//! Cloud-to-device messaging over HTTPS.
//!
//! Service side (ServiceConnect): send a message to a device
//! (`POST /devices/{id}/messages/deviceBound`, the HTTPS counterpart of Azure's AMQP
//! `/messages/devicebound` sender), purge a device's queue (`DELETE /devices/{id}/commands`),
//! and receive, complete or abandon feedback (`/messages/serviceBound/feedback`).
//!
//! Device side (the device's own token): poll the queue
//! (`GET /devices/{id}/messages/deviceBound`), then complete (`DELETE …/{lock}`), reject
//! (`DELETE …/{lock}?reject`) or abandon (`POST …/{lock}/abandon`). Path segments match
//! case-insensitively (`deviceBound` / `devicebound`), as the SDKs differ.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use ferrohub_c2d::{AckMode, C2dError, FeedbackRecord, OutgoingMessage, QueuedMessage};
use ferrohub_types::{ErrorCode, Permission};

use super::error::ApiError;
use super::extract::DevicePath;
use super::{HubState, json};
use crate::hub::Hub;

impl From<C2dError> for ApiError {
    fn from(e: C2dError) -> Self {
        let code = e.error_code();
        if code.http_status() >= 500 {
            tracing::error!(error = %e, "C2D operation failed");
        }
        ApiError::new(code, e.to_string())
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
}

/// Reads a message from the service's request: the body, `iothub-*` headers for the system
/// properties and `iothub-app-*` for the application properties.
fn outgoing(headers: &HeaderMap, body: Bytes) -> Result<OutgoingMessage, ApiError> {
    let ack = match header(headers, "iothub-ack") {
        None => AckMode::None,
        Some(a) => a.parse().map_err(|_| {
            ApiError::invalid(format!(
                "iothub-ack must be none, positive, negative or full, not {a:?}."
            ))
        })?,
    };
    let expiry = match header(headers, "iothub-expiry") {
        None => None,
        Some(e) => Some(
            DateTime::parse_from_rfc3339(e)
                .map_err(|_| {
                    ApiError::invalid(format!("iothub-expiry {e:?} is not an RFC 3339 time."))
                })?
                .with_timezone(&Utc),
        ),
    };
    let mut properties = Vec::new();
    for (k, v) in headers {
        if let Some(name) = k.as_str().strip_prefix("iothub-app-") {
            let value = v
                .to_str()
                .map_err(|_| ApiError::invalid(format!("The value of {k} is not text.")))?;
            properties.push((name.to_owned(), value.to_owned()));
        }
    }
    let owned = |n: &str| header(headers, n).map(str::to_owned);
    Ok(OutgoingMessage {
        message_id: owned("iothub-messageid"),
        correlation_id: owned("iothub-correlationid"),
        user_id: owned("iothub-userid"),
        content_type: owned("iothub-contenttype"),
        content_encoding: owned("iothub-contentencoding"),
        expiry,
        ack,
        properties,
        body: body.to_vec(),
    })
}

/// Sends a cloud-to-device message. The body is the message; `iothub-messageid`,
/// `iothub-correlationid`, `iothub-userid`, `iothub-contenttype`, `iothub-contentencoding`,
/// `iothub-expiry` (RFC 3339), `iothub-ack` (none, positive, negative, full) and
/// `iothub-app-<name>` headers carry its properties. A connected MQTT device gets it at once.
#[utoipa::path(post, path = "/devices/{id}/messages/deviceBound", tag = "c2d",
    params(("id" = String, Path, description = "Device id")),
    request_body(content = String, description = "The message body"),
    responses((status = 200, body = ferrohub_api::C2dSendResult), (status = 403, body = ferrohub_api::ErrorBody),
              (status = 404, body = ferrohub_api::ErrorBody), (status = 413, body = ferrohub_api::ErrorBody)))]
pub(crate) async fn send(
    hub: HubState,
    uri: Uri,
    headers: HeaderMap,
    DevicePath(id): DevicePath,
    req: axum::extract::Request,
) -> Result<Response, ApiError> {
    hub.authorize_service(&headers, uri.path(), &[Permission::ServiceConnect])?;
    let body = super::extract::bytes(req).await?;
    let identity = hub.identity_current(&id, None).await.ok_or_else(|| {
        ApiError::new(
            ErrorCode::DeviceNotFound,
            format!("The device with ID '{id}' could not be found."),
        )
    })?;
    let msg = outgoing(&headers, body)?;
    // On its own task: a send may carry other sends to the same device with it (see
    // `C2dQueues::send`), so it must finish even if this request's client goes away.
    let queued = {
        let hub = Arc::clone(&hub);
        let id = id.clone();
        tokio::spawn(async move {
            let now = hub.now();
            hub.c2d.send(&id, &identity.generation_id, msg, now).await
        })
        .await
        .map_err(|e| ApiError::new(ErrorCode::ServerError, format!("sending failed: {e}")))??
    };
    hub.connections.notify_c2d(&id);
    metrics::counter!("ferrohub_c2d_sent_total").increment(1);
    let body = ferrohub_api::C2dSendResult {
        message_id: queued.message.message_id.clone().unwrap_or_default(),
        sequence_number: queued.sequence_number,
        expiry_time_utc: queued.expiry_time,
    };
    Ok(json(StatusCode::OK, &body, None))
}

/// Removes every message from a device's queue.
#[utoipa::path(delete, path = "/devices/{id}/commands", tag = "c2d",
    params(("id" = String, Path, description = "Device id")),
    responses((status = 200, body = ferrohub_api::PurgeMessageQueueResult), (status = 404, body = ferrohub_api::ErrorBody)))]
pub(crate) async fn purge(
    hub: HubState,
    uri: Uri,
    headers: HeaderMap,
    DevicePath(id): DevicePath,
) -> Result<Response, ApiError> {
    hub.authorize_service(&headers, uri.path(), &[Permission::ServiceConnect])?;
    if hub.identity_current(&id, None).await.is_none() {
        return Err(ApiError::new(
            ErrorCode::DeviceNotFound,
            format!("The device with ID '{id}' could not be found."),
        ));
    }
    let n = hub.c2d.purge(&id, hub.now()).await?;
    let body = ferrohub_api::PurgeMessageQueueResult {
        total_messages_purged: n,
        device_id: id.to_string(),
        module_id: None,
    };
    Ok(json(StatusCode::OK, &body, None))
}

fn feedback_json(r: &FeedbackRecord) -> ferrohub_api::FeedbackRecord {
    ferrohub_api::FeedbackRecord {
        original_message_id: r.original_message_id.clone(),
        enqueued_time_utc: r
            .enqueued_time_utc
            .to_rfc3339_opts(SecondsFormat::Millis, true),
        status_code: r.status_code.as_str().to_owned(),
        description: r.description.clone(),
        device_id: r.device_id.clone(),
        device_generation_id: r.device_generation_id.clone(),
    }
}

/// Receives a batch of feedback records (up to 64), locked under the quoted `ETag`; 204 when
/// there is none.
#[utoipa::path(get, path = "/messages/serviceBound/feedback", tag = "c2d",
    responses((status = 200, body = Vec<ferrohub_api::FeedbackRecord>), (status = 204)))]
pub(crate) async fn receive_feedback(
    hub: HubState,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    hub.authorize_service(&headers, uri.path(), &[Permission::ServiceConnect])?;
    let Some(batch) = hub.c2d.receive_feedback(hub.now()).await? else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    let records: Vec<ferrohub_api::FeedbackRecord> =
        batch.records.iter().map(feedback_json).collect();
    let mut resp = json(StatusCode::OK, &records, Some(&batch.lock_token));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/vnd.microsoft.iothub.feedback.json; charset=utf-8"),
    );
    Ok(resp)
}

/// Completes a feedback batch.
#[utoipa::path(delete, path = "/messages/serviceBound/feedback/{lock}", tag = "c2d",
    params(("lock" = String, Path, description = "The batch's lock token")),
    responses((status = 204), (status = 412, body = ferrohub_api::ErrorBody)))]
pub(crate) async fn complete_feedback(
    hub: HubState,
    uri: Uri,
    headers: HeaderMap,
    Path(lock): Path<String>,
) -> Result<Response, ApiError> {
    hub.authorize_service(&headers, uri.path(), &[Permission::ServiceConnect])?;
    hub.c2d
        .complete_feedback(lock.trim_matches('"'), hub.now())
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Abandons a feedback batch: its records become available again.
#[utoipa::path(post, path = "/messages/serviceBound/feedback/{lock}/abandon", tag = "c2d",
    params(("lock" = String, Path, description = "The batch's lock token")),
    responses((status = 204), (status = 412, body = ferrohub_api::ErrorBody)))]
pub(crate) async fn abandon_feedback(
    hub: HubState,
    uri: Uri,
    headers: HeaderMap,
    Path(lock): Path<String>,
) -> Result<Response, ApiError> {
    hub.authorize_service(&headers, uri.path(), &[Permission::ServiceConnect])?;
    hub.c2d
        .abandon_feedback(lock.trim_matches('"'), hub.now())
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// === device side ===

fn device_token(headers: &HeaderMap) -> Result<&str, ApiError> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::IotHubUnauthorizedAccess,
                "Unauthorized: the request carries no SharedAccessSignature.",
            )
        })
}

fn insert(resp: &mut Response, name: &str, value: &str) {
    if let (Ok(n), Ok(v)) = (
        HeaderName::from_bytes(name.as_bytes()),
        HeaderValue::from_str(value),
    ) {
        resp.headers_mut().insert(n, v);
    }
}

/// The HTTP response a device gets for a message (azure-contract §5.2).
fn device_message(m: &QueuedMessage) -> Response {
    let mut resp = (StatusCode::OK, m.message.body.clone()).into_response();
    let lock = m.lock_token.clone().unwrap_or_default();
    insert(&mut resp, "etag", &format!("\"{lock}\""));
    insert(
        &mut resp,
        "iothub-messageid",
        m.message.message_id.as_deref().unwrap_or(""),
    );
    insert(
        &mut resp,
        "iothub-sequencenumber",
        &m.sequence_number.to_string(),
    );
    insert(
        &mut resp,
        "iothub-to",
        &format!("/devices/{}/messages/deviceBound", m.device_id),
    );
    insert(
        &mut resp,
        "iothub-expiry",
        &m.expiry_time.to_rfc3339_opts(SecondsFormat::Millis, true),
    );
    insert(
        &mut resp,
        "iothub-correlationid",
        m.message.correlation_id.as_deref().unwrap_or(""),
    );
    if let Some(u) = &m.message.user_id {
        insert(&mut resp, "iothub-userid", u);
    }
    insert(&mut resp, "iothub-ack", m.message.ack.as_str());
    insert(
        &mut resp,
        "iothub-enqueuedtime",
        &m.enqueued_time.to_rfc3339_opts(SecondsFormat::Millis, true),
    );
    insert(
        &mut resp,
        "iothub-deliverycount",
        &m.delivery_count.to_string(),
    );
    if let Some(ct) = &m.message.content_type {
        insert(&mut resp, "iothub-contenttype", ct);
        insert(&mut resp, "content-type", ct);
    }
    if let Some(ce) = &m.message.content_encoding {
        insert(&mut resp, "iothub-contentencoding", ce);
    }
    for (k, v) in &m.message.properties {
        insert(&mut resp, &format!("iothub-app-{k}"), v);
    }
    resp
}

/// A device polls its queue: 204 when empty, else 200 with the message, locked for a minute
/// under the quoted `ETag`.
#[utoipa::path(get, path = "/devices/{id}/messages/deviceBound", tag = "device",
    params(("id" = String, Path, description = "Device id")),
    responses((status = 200, description = "A message"), (status = 204, description = "The queue is empty")))]
pub(crate) async fn device_receive(
    hub: HubState,
    headers: HeaderMap,
    DevicePath(id): DevicePath,
) -> Result<Response, ApiError> {
    let origin = hub
        .authenticate_device_current(device_token(&headers)?, &id, None)
        .await?;
    let now = hub.now();
    hub.touch(&(origin.device_id.clone(), None), now);
    match hub.c2d.receive(&id, now).await? {
        Some(m) => Ok(device_message(&m)),
        None => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

/// A device completes (`DELETE`) or rejects (`DELETE …?reject`) a message.
#[utoipa::path(delete, path = "/devices/{id}/messages/deviceBound/{etag}", tag = "device",
    params(("id" = String, Path, description = "Device id"), ("etag" = String, Path, description = "The lock token")),
    responses((status = 204), (status = 412, body = ferrohub_api::ErrorBody)))]
pub(crate) async fn device_settle(
    hub: HubState,
    headers: HeaderMap,
    Path((id, lock)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let id = ferrohub_types::DeviceId::new(id).map_err(|e| ApiError::invalid(e.to_string()))?;
    hub.authenticate_device_current(device_token(&headers)?, &id, None)
        .await?;
    let lock = lock.trim_matches('"');
    if q.contains_key("reject") {
        hub.c2d.reject(&id, lock, hub.now()).await?;
    } else {
        hub.c2d.complete(&id, lock, hub.now()).await?;
        // The device received the message.
        hub.touch(&(id.clone(), None), hub.now());
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A device abandons a message: it goes back to the queue (and is dead-lettered after too many
/// abandons).
#[utoipa::path(post, path = "/devices/{id}/messages/deviceBound/{etag}/abandon", tag = "device",
    params(("id" = String, Path, description = "Device id"), ("etag" = String, Path, description = "The lock token")),
    responses((status = 204), (status = 412, body = ferrohub_api::ErrorBody)))]
pub(crate) async fn device_abandon(
    hub: HubState,
    headers: HeaderMap,
    Path((id, lock)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let id = ferrohub_types::DeviceId::new(id).map_err(|e| ApiError::invalid(e.to_string()))?;
    hub.authenticate_device_current(device_token(&headers)?, &id, None)
        .await?;
    hub.c2d
        .abandon(&id, lock.trim_matches('"'), hub.now())
        .await?;
    hub.connections.notify_c2d(&id);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The device's queue depth, for `cloudToDeviceMessageCount`.
pub(crate) async fn depth(hub: &Hub, id: &ferrohub_types::DeviceId) -> u32 {
    hub.c2d
        .depth(id, hub.now())
        .await
        .ok()
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(0)
}
