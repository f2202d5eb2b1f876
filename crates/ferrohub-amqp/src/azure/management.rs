//! The Event Hubs `$management` node: READ requests and responses (amqp-contract §3.3).
//!
//! The SDKs ask for the Event Hub's properties (`type = com.microsoft:eventhub`) and a
//! partition's (`type = com.microsoft:partition`, with `partition`), and read the answer from
//! an `amqp-value` map with exact key names and AMQP types: a data section, a list where an
//! array is expected, or a long where a string is expected breaks one SDK or another.

use crate::azure::{self, PropertyError};
use crate::message::{Body, Message, MessageId};
use crate::types::{Array, Symbol, Value};

/// The node's address.
pub const ADDRESS: &str = "$management";
/// The only operation the hub serves.
pub const READ: &str = "READ";
/// The `type` of an Event Hub READ.
pub const EVENTHUB_TYPE: &str = "com.microsoft:eventhub";
/// The `type` of a partition READ.
pub const PARTITION_TYPE: &str = "com.microsoft:partition";

/// What a READ asks about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadTarget {
    /// The Event Hub: its partition ids and creation time.
    EventHub,
    /// One partition: its sequence numbers, offsets and times.
    Partition {
        /// The partition id.
        partition: String,
    },
}

/// A READ request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRequest {
    /// The request's message-id, with its AMQP type.
    pub message_id: Option<MessageId>,
    /// The reply-to (JS sends the receiver link's name; informational).
    pub reply_to: Option<String>,
    /// The Event Hub's name as the client knows it.
    pub name: String,
    /// The Event Hub or one partition.
    pub target: ReadTarget,
    /// The token both SDKs repeat in the request (the one put on `$cbs`).
    pub security_token: Option<String>,
}

/// Why a `$management` request is not a READ the hub serves.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ManagementError {
    /// An operation other than READ.
    #[error("unsupported $management operation {0:?}")]
    UnsupportedOperation(String),
    /// A `type` other than the Event Hub and partition ones.
    #[error("unsupported $management type {0:?}")]
    UnsupportedType(String),
    /// A missing or mistyped application property.
    #[error(transparent)]
    Property(#[from] PropertyError),
}

impl ManagementError {
    /// The status code to answer with: 400, or 501 for what the hub lacks.
    pub fn status_code(&self) -> i32 {
        match self {
            Self::Property(_) => 400,
            _ => 501,
        }
    }
}

impl ReadRequest {
    /// Reads a `$management` request. The body is ignored (Python sends none, JS `[]`).
    pub fn parse(message: &Message) -> Result<Self, ManagementError> {
        let operation = azure::string_property(message, azure::OPERATION)?;
        if operation != READ {
            return Err(ManagementError::UnsupportedOperation(operation.to_owned()));
        }
        let kind = azure::string_property(message, "type")?;
        let target = match kind {
            EVENTHUB_TYPE => ReadTarget::EventHub,
            PARTITION_TYPE => ReadTarget::Partition {
                partition: azure::string_property(message, "partition")?.to_owned(),
            },
            other => return Err(ManagementError::UnsupportedType(other.to_owned())),
        };
        let name = azure::string_property(message, "name")?.to_owned();
        let security_token = match azure::string_property(message, "security_token") {
            Ok(token) => Some(token.to_owned()),
            Err(PropertyError::Missing(_)) => None,
            Err(e) => return Err(e.into()),
        };
        let properties = message.properties.as_ref();
        Ok(Self {
            message_id: properties.and_then(|p| p.message_id.clone()),
            reply_to: properties.and_then(|p| p.reply_to.clone()),
            name,
            target,
            security_token,
        })
    }

    /// A failure response (401 → Python's AuthenticationError, 404 → NotFound, …).
    pub fn error_response(
        &self,
        status_code: i32,
        description: &str,
        error_condition: Option<&Symbol>,
    ) -> Message {
        azure::response(
            self.message_id.as_ref(),
            status_code,
            description,
            error_condition,
            Body::Value(Value::Null),
        )
    }
}

/// An Event Hub's properties, for an Event Hub READ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventHubProperties {
    /// The Event Hub's name.
    pub name: String,
    /// When it was created, ms since the epoch.
    pub created_at: i64,
    /// Its partition ids, in order.
    pub partition_ids: Vec<String>,
    /// The geo-replication factor, if announced (JS reads `> 1` as geo-DR enabled).
    pub georeplication_factor: Option<i32>,
}

/// A partition's properties, for a partition READ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionProperties {
    /// The Event Hub's name.
    pub name: String,
    /// The partition id.
    pub partition: String,
    /// The first sequence number still retained.
    pub begin_sequence_number: i64,
    /// The last sequence number enqueued.
    pub last_enqueued_sequence_number: i64,
    /// The epoch of that sequence number (Microsoft's Rust client requires the key).
    pub last_enqueued_sequence_number_epoch: i64,
    /// The last offset enqueued, as the hub's offsets are written (a string).
    pub last_enqueued_offset: String,
    /// When the last event was enqueued, ms since the epoch.
    pub last_enqueued_time_utc: i64,
    /// Whether the partition retains no events.
    pub is_partition_empty: bool,
}

fn key(k: &str) -> Value {
    Value::String(k.to_owned())
}

impl EventHubProperties {
    /// The map §3.3 specifies: `name` string, `type` string, `created_at` timestamp,
    /// `partition_count` int, `partition_ids` array of strings, `georeplication_factor` int.
    pub fn to_value(&self) -> Value {
        let count = i32::try_from(self.partition_ids.len()).unwrap_or(i32::MAX);
        let mut map = vec![
            (key("name"), Value::from(self.name.as_str())),
            (key("type"), Value::from(EVENTHUB_TYPE)),
            (key("created_at"), Value::Timestamp(self.created_at)),
            (key("partition_count"), Value::Int(count)),
            (
                key("partition_ids"),
                Value::Array(Array::strings(self.partition_ids.iter().cloned())),
            ),
        ];
        if let Some(factor) = self.georeplication_factor {
            map.push((key("georeplication_factor"), Value::Int(factor)));
        }
        Value::Map(map)
    }

    /// The 200 response to `request`.
    pub fn response(&self, request: &ReadRequest) -> Message {
        ok_response(request, self.to_value())
    }
}

impl PartitionProperties {
    /// The map §3.3 specifies: sequence numbers `long`, the offset a string, times
    /// timestamps, `is_partition_empty` boolean.
    pub fn to_value(&self) -> Value {
        Value::Map(vec![
            (key("name"), Value::from(self.name.as_str())),
            (key("type"), Value::from(PARTITION_TYPE)),
            (key("partition"), Value::from(self.partition.as_str())),
            (
                key("begin_sequence_number"),
                Value::Long(self.begin_sequence_number),
            ),
            (
                key("last_enqueued_sequence_number"),
                Value::Long(self.last_enqueued_sequence_number),
            ),
            (
                key("last_enqueued_sequence_number_epoch"),
                Value::Long(self.last_enqueued_sequence_number_epoch),
            ),
            (
                key("last_enqueued_offset"),
                Value::from(self.last_enqueued_offset.as_str()),
            ),
            (
                key("last_enqueued_time_utc"),
                Value::Timestamp(self.last_enqueued_time_utc),
            ),
            (
                key("is_partition_empty"),
                Value::Bool(self.is_partition_empty),
            ),
        ])
    }

    /// The 200 response to `request`.
    pub fn response(&self, request: &ReadRequest) -> Message {
        ok_response(request, self.to_value())
    }
}

/// A 200 "OK" response whose body is an `amqp-value` (JS returns `response.body`, Python
/// `response.value`: a data section breaks both).
fn ok_response(request: &ReadRequest, value: Value) -> Message {
    azure::response(
        request.message_id.as_ref(),
        200,
        "OK",
        None,
        Body::Value(value),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{ApplicationProperties, Properties};
    use crate::types::TypeKind;

    fn request(kind: &str, partition: Option<&str>) -> Message {
        let mut app = ApplicationProperties::new();
        app.insert("operation", "READ");
        app.insert("type", kind);
        app.insert("name", "myhub");
        app.insert("security_token", "SharedAccessSignature sr=x");
        if let Some(p) = partition {
            app.insert("partition", p);
        }
        Message {
            properties: Some(Properties {
                message_id: Some(MessageId::Uuid([1; 16])),
                ..Properties::default()
            }),
            application_properties: Some(app),
            ..Message::default()
        }
    }

    #[test]
    fn eventhub_read_answers_with_an_array_of_partition_ids() {
        let req = ReadRequest::parse(&request(EVENTHUB_TYPE, None)).expect("a READ");
        assert_eq!(req.target, ReadTarget::EventHub);
        assert_eq!(
            req.security_token.as_deref(),
            Some("SharedAccessSignature sr=x")
        );
        let props = EventHubProperties {
            name: "myhub".into(),
            created_at: 1_600_000_000_000,
            partition_ids: vec!["0".into(), "1".into()],
            georeplication_factor: None,
        };
        let response = props.response(&req);
        assert_eq!(
            response.properties.and_then(|p| p.correlation_id),
            Some(MessageId::Uuid([1; 16]))
        );
        let Body::Value(Value::Map(map)) = &response.body else {
            panic!("not an amqp-value map");
        };
        let get = |k: &str| {
            map.iter()
                .find(|(key, _)| key.as_str() == Some(k))
                .map(|(_, v)| v)
        };
        assert_eq!(get("partition_count"), Some(&Value::Int(2)));
        assert_eq!(
            get("created_at"),
            Some(&Value::Timestamp(1_600_000_000_000))
        );
        let Some(Value::Array(ids)) = get("partition_ids") else {
            panic!("not an array");
        };
        assert_eq!(ids.kind(), TypeKind::String);
        // On the wire: 0xe0 with 0xa1 elements.
        let bytes = get("partition_ids").map(|v| v.to_bytes().expect("encodable"));
        assert_eq!(
            bytes.as_deref().map(|b| &b[..4]),
            Some(&[0xe0, 6, 2, 0xa1][..])
        );
    }

    #[test]
    fn partition_read_answers_with_longs_strings_and_timestamps() {
        let req = ReadRequest::parse(&request(PARTITION_TYPE, Some("1"))).expect("a READ");
        assert_eq!(
            req.target,
            ReadTarget::Partition {
                partition: "1".into()
            }
        );
        let props = PartitionProperties {
            name: "myhub".into(),
            partition: "1".into(),
            begin_sequence_number: 0,
            last_enqueued_sequence_number: 41,
            last_enqueued_sequence_number_epoch: 0,
            last_enqueued_offset: "8800".into(),
            last_enqueued_time_utc: 7,
            is_partition_empty: false,
        };
        let Value::Map(map) = props.to_value() else {
            panic!("not a map");
        };
        let kinds: Vec<(&str, TypeKind)> = map
            .iter()
            .map(|(k, v)| (k.as_str().unwrap_or_default(), v.kind()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("name", TypeKind::String),
                ("type", TypeKind::String),
                ("partition", TypeKind::String),
                ("begin_sequence_number", TypeKind::Long),
                ("last_enqueued_sequence_number", TypeKind::Long),
                ("last_enqueued_sequence_number_epoch", TypeKind::Long),
                ("last_enqueued_offset", TypeKind::String),
                ("last_enqueued_time_utc", TypeKind::Timestamp),
                ("is_partition_empty", TypeKind::Bool),
            ]
        );
    }

    #[test]
    fn other_requests_are_refused() {
        let err = ReadRequest::parse(&request("com.microsoft:queue", None)).expect_err("type");
        assert_eq!(err.status_code(), 501);
        let err = ReadRequest::parse(&request(PARTITION_TYPE, None)).expect_err("no partition");
        assert_eq!(
            err,
            ManagementError::Property(PropertyError::Missing("partition"))
        );
        assert_eq!(err.status_code(), 400);
    }
}
