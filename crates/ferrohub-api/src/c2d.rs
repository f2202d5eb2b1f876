//! Cloud-to-device messaging: send results, purge results, feedback records.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /devices/{id}/messages/deviceBound`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct C2dSendResult {
    /// The message id (as given, else empty).
    pub message_id: String,
    /// The message's sequence number in the device's queue.
    pub sequence_number: u64,
    /// When the message expires.
    pub expiry_time_utc: DateTime<Utc>,
}

/// `DELETE /devices/{id}/commands`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PurgeMessageQueueResult {
    /// How many messages were removed.
    pub total_messages_purged: u64,
    /// The device.
    pub device_id: String,
    /// Always null: modules have no cloud-to-device queue.
    pub module_id: Option<String>,
}

/// One feedback record (azure-contract §7.2), in `GET /messages/serviceBound/feedback`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FeedbackRecord {
    /// The `message-id` of the message the record is about.
    pub original_message_id: String,
    /// When the outcome happened.
    pub enqueued_time_utc: String,
    /// `Success`, `Expired`, `DeliveryCountExceeded`, `Rejected` or `Purged`.
    pub status_code: String,
    /// A description of the outcome.
    pub description: String,
    /// The device.
    pub device_id: String,
    /// The device's generation id.
    pub device_generation_id: String,
}
