//! The event read API: partitions, events, consumer groups and checkpoints.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `GET /messages/events/partitions`: the endpoint's partitions.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointInfo {
    /// The endpoint's path.
    pub name: String,
    /// Partition count.
    pub partition_count: u32,
    /// Partition ids, `"0"`, `"1"`, ….
    pub partition_ids: Vec<String>,
    /// Each partition's properties.
    pub partitions: Vec<PartitionProperties>,
}

/// A partition's properties (Event Hubs' partition runtime information).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PartitionProperties {
    /// Partition id.
    pub partition_id: String,
    /// Sequence number of the oldest retained event.
    pub begin_sequence_number: u64,
    /// Sequence number of the newest event (-1 when none was ever enqueued).
    pub last_enqueued_sequence_number: i64,
    /// Offset of the newest event (`"-1"` when none).
    pub last_enqueued_offset: String,
    /// Enqueued time of the newest event.
    pub last_enqueued_time_utc: Option<DateTime<Utc>>,
    /// Whether the partition holds no event.
    pub is_empty: bool,
}

/// One event as readers see it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventData {
    /// Partition id.
    pub partition: String,
    /// Dense per-partition sequence number.
    pub sequence_number: u64,
    /// Opaque, increasing offset.
    pub offset: String,
    /// When the hub enqueued it.
    pub enqueued_time_utc: Option<DateTime<Utc>>,
    /// System properties: the device's and the hub's (`iothub-connection-device-id`, …), plus
    /// the `x-opt-sequence-number`, `x-opt-offset` and `x-opt-enqueued-time` annotations.
    #[schema(value_type = Object)]
    pub system_properties: BTreeMap<String, serde_json::Value>,
    /// Application properties, as the device sent them.
    pub properties: BTreeMap<String, String>,
    /// The body: text when its content type or encoding says text or JSON, else base64.
    pub body: String,
    /// `text` or `base64`.
    pub body_encoding: String,
}

/// `GET …/events`: a batch of events and where the next read starts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventBatch {
    /// The events, oldest first.
    pub events: Vec<EventData>,
    /// Pass as `sequenceNumber` with `inclusive=true` to continue after this batch.
    pub next_sequence_number: u64,
}

/// A consumer group.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerGroupInfo {
    /// Its name.
    pub name: String,
    /// When it was created.
    pub created_time_utc: DateTime<Utc>,
}

/// A reader's stored position in one partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Checkpoint {
    /// The sequence number of the last event the reader processed.
    pub sequence_number: u64,
    /// That event's offset.
    pub offset: String,
    /// When the checkpoint was stored (absent in requests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_time_utc: Option<DateTime<Utc>>,
}
