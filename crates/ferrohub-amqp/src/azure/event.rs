//! Event Hubs event messages and the receiver link conventions around them (amqp-contract
//! §3.4–§3.7).
//!
//! An event goes to a consumer as one pre-settled transfer whose message carries the Event
//! Hubs annotations (`x-opt-sequence-number` long, `x-opt-offset` **string**,
//! `x-opt-enqueued-time` timestamp), IoT Hub's `iothub-*` annotations, the device's
//! properties and application properties as the device sent them, and the payload as one data
//! section. With the runtime-metric capability, delivery annotations describe the partition's
//! last event.

use bytes::Bytes;

use crate::message::{Annotations, ApplicationProperties, Body, Message, Properties};
use crate::performative::Attach;
use crate::types::{Symbol, Value};

/// `x-opt-sequence-number`, a `long`.
pub const SEQUENCE_NUMBER: Symbol = Symbol::from_static("x-opt-sequence-number");
/// `x-opt-offset`, a `string` (pyamqp decodes it as text: a `long` breaks resuming).
pub const OFFSET: Symbol = Symbol::from_static("x-opt-offset");
/// `x-opt-enqueued-time`, a `timestamp`.
pub const ENQUEUED_TIME: Symbol = Symbol::from_static("x-opt-enqueued-time");
/// `x-opt-partition-key`, a `string`.
pub const PARTITION_KEY: Symbol = Symbol::from_static("x-opt-partition-key");

/// The link property naming a receiver's epoch (owner level), a `long`.
pub const EPOCH: Symbol = Symbol::from_static("com.microsoft:epoch");
/// The link property of Python's receive timeout, a `long` (ms).
pub const TIMEOUT: Symbol = Symbol::from_static("com.microsoft:timeout");
/// The link property JS names its consumer with.
pub const RECEIVER_NAME: Symbol = Symbol::from_static("com.microsoft:receiver-name");
/// The capability both SDKs desire on receivers.
pub const GEOREPLICATION: Symbol = Symbol::from_static("com.microsoft:georeplication");
/// The capability asking for the runtime metric in delivery annotations.
pub const RUNTIME_METRIC: Symbol =
    Symbol::from_static("com.microsoft:enable-receiver-runtime-metric");

/// IoT Hub's annotations on a device-to-cloud event (amqp-contract §3.6); `None` fields are
/// left out.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IotHubAnnotations {
    /// `iothub-connection-device-id`.
    pub connection_device_id: Option<String>,
    /// `iothub-connection-module-id` (modules only).
    pub connection_module_id: Option<String>,
    /// `iothub-connection-auth-method`, a JSON string such as
    /// `{"scope":"device","type":"sas","issuer":"iothub","acceptingIpFilterRule":null}`.
    pub connection_auth_method: Option<String>,
    /// `iothub-connection-auth-generation-id`.
    pub connection_auth_generation_id: Option<String>,
    /// `iothub-enqueuedtime`, a timestamp (ms).
    pub enqueued_time: Option<i64>,
    /// `iothub-message-source` (`Telemetry`, …).
    pub message_source: Option<String>,
    /// `dt-dataschema`.
    pub dt_dataschema: Option<String>,
    /// `dt-subject`.
    pub dt_subject: Option<String>,
    /// `iothub-interface-name`.
    pub interface_name: Option<String>,
}

/// What an Event Hubs event is made of.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EventInput {
    /// The event's sequence number in its partition.
    pub sequence_number: i64,
    /// Its offset, as the hub writes offsets (and parses them back from a filter).
    pub offset: String,
    /// When it was enqueued, ms since the epoch.
    pub enqueued_time: i64,
    /// The partition key, if one was used.
    pub partition_key: Option<String>,
    /// IoT Hub's annotations.
    pub iothub: IotHubAnnotations,
    /// More message annotations, appended after the others as given.
    pub extra_annotations: Vec<(Symbol, Value)>,
    /// The properties section as the device sent it (ids keep their AMQP types).
    pub properties: Option<Properties>,
    /// The device's application properties, unchanged.
    pub application_properties: Option<ApplicationProperties>,
    /// The payload, sent as one data section.
    pub body: Bytes,
}

impl EventInput {
    /// The event as a message, annotations in the order the real service writes them.
    pub fn to_message(&self) -> Message {
        let mut a = Annotations::new();
        a.insert(SEQUENCE_NUMBER, Value::Long(self.sequence_number));
        a.insert(OFFSET, self.offset.as_str());
        a.insert(ENQUEUED_TIME, Value::Timestamp(self.enqueued_time));
        if let Some(key) = &self.partition_key {
            a.insert(PARTITION_KEY, key.as_str());
        }
        let i = &self.iothub;
        let strings = [
            ("iothub-connection-device-id", &i.connection_device_id),
            ("iothub-connection-module-id", &i.connection_module_id),
            ("iothub-connection-auth-method", &i.connection_auth_method),
            (
                "iothub-connection-auth-generation-id",
                &i.connection_auth_generation_id,
            ),
        ];
        for (key, value) in strings {
            if let Some(value) = value {
                a.insert(Symbol::from_static(key), value.as_str());
            }
        }
        if let Some(t) = i.enqueued_time {
            a.insert(
                Symbol::from_static("iothub-enqueuedtime"),
                Value::Timestamp(t),
            );
        }
        let strings = [
            ("iothub-message-source", &i.message_source),
            ("dt-dataschema", &i.dt_dataschema),
            ("dt-subject", &i.dt_subject),
            ("iothub-interface-name", &i.interface_name),
        ];
        for (key, value) in strings {
            if let Some(value) = value {
                a.insert(Symbol::from_static(key), value.as_str());
            }
        }
        for (key, value) in &self.extra_annotations {
            a.insert(key.clone(), value.clone());
        }
        Message {
            message_annotations: Some(a),
            properties: self.properties.clone(),
            application_properties: self.application_properties.clone(),
            body: Body::data(self.body.clone()),
            ..Message::default()
        }
    }
}

/// The partition's last event, for receivers that asked for [`RUNTIME_METRIC`]: sent as
/// delivery annotations on each event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeMetric {
    /// `last_enqueued_sequence_number`, a long.
    pub last_enqueued_sequence_number: i64,
    /// `last_enqueued_offset`, a string.
    pub last_enqueued_offset: String,
    /// `last_enqueued_time_utc`, a timestamp.
    pub last_enqueued_time_utc: i64,
    /// `runtime_info_retrieval_time_utc`, a timestamp: when these were read.
    pub retrieval_time_utc: i64,
}

impl RuntimeMetric {
    /// The delivery annotations.
    pub fn to_annotations(&self) -> Annotations {
        let mut a = Annotations::new();
        a.insert(
            Symbol::from_static("last_enqueued_sequence_number"),
            Value::Long(self.last_enqueued_sequence_number),
        );
        a.insert(
            Symbol::from_static("last_enqueued_offset"),
            self.last_enqueued_offset.as_str(),
        );
        a.insert(
            Symbol::from_static("last_enqueued_time_utc"),
            Value::Timestamp(self.last_enqueued_time_utc),
        );
        a.insert(
            Symbol::from_static("runtime_info_retrieval_time_utc"),
            Value::Timestamp(self.retrieval_time_utc),
        );
        a
    }
}

/// A receiver's epoch (owner level) from its ATTACH properties: a `long` in both SDKs; other
/// integer types are read too. `None` for a non-epoch receiver (or a value that is no
/// integer).
pub fn epoch(attach: &Attach) -> Option<i64> {
    let value = attach.properties.as_ref()?.get(EPOCH.as_str())?;
    value.as_integer().and_then(|i| i64::try_from(i).ok())
}

/// Whether a receiver asked for the runtime metric.
pub fn wants_runtime_metric(attach: &Attach) -> bool {
    attach
        .desired_capabilities
        .as_ref()
        .is_some_and(|caps| caps.contains(&RUNTIME_METRIC))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::MessageId;
    use crate::performative::{Fields, ReceiverSettleMode, Role, SenderSettleMode};
    use crate::types::TypeKind;

    #[test]
    fn events_carry_typed_annotations_properties_and_one_data_section() {
        let mut app = ApplicationProperties::new();
        app.insert("temperature", "20");
        let input = EventInput {
            sequence_number: 13_280,
            offset: "12890070640".into(),
            enqueued_time: 1_603_288_810_824,
            iothub: IotHubAnnotations {
                connection_device_id: Some("d1".into()),
                enqueued_time: Some(1_603_288_810_715),
                message_source: Some("Telemetry".into()),
                ..IotHubAnnotations::default()
            },
            properties: Some(Properties {
                message_id: Some(MessageId::Uuid([9; 16])),
                ..Properties::default()
            }),
            application_properties: Some(app),
            body: Bytes::from_static(b"{\"t\":20}"),
            ..EventInput::default()
        };
        let message = input.to_message();
        let a = message.message_annotations.as_ref().expect("annotations");
        let kinds: Vec<(String, TypeKind)> = a
            .iter()
            .map(|(k, v)| {
                (
                    k.as_symbol().map(|s| s.to_string()).unwrap_or_default(),
                    v.kind(),
                )
            })
            .collect();
        assert_eq!(
            kinds,
            [
                ("x-opt-sequence-number".into(), TypeKind::Long),
                ("x-opt-offset".into(), TypeKind::String),
                ("x-opt-enqueued-time".into(), TypeKind::Timestamp),
                ("iothub-connection-device-id".into(), TypeKind::String),
                ("iothub-enqueuedtime".into(), TypeKind::Timestamp),
                ("iothub-message-source".into(), TypeKind::String),
            ]
        );
        assert_eq!(message.body, Body::data(Bytes::from_static(b"{\"t\":20}")));
        // It encodes and decodes back unchanged.
        let bytes = message.to_bytes().expect("encodable");
        assert_eq!(Message::decode(bytes), Ok(message));
    }

    #[test]
    fn runtime_metric_annotations() {
        let a = RuntimeMetric {
            last_enqueued_sequence_number: 5,
            last_enqueued_offset: "500".into(),
            last_enqueued_time_utc: 6,
            retrieval_time_utc: 7,
        }
        .to_annotations();
        assert_eq!(
            a.get("last_enqueued_sequence_number"),
            Some(&Value::Long(5))
        );
        assert_eq!(a.get("last_enqueued_offset"), Some(&Value::from("500")));
        assert_eq!(
            a.get("runtime_info_retrieval_time_utc"),
            Some(&Value::Timestamp(7))
        );
    }

    #[test]
    fn receiver_link_properties() {
        let mut properties = Fields::new();
        properties.insert(EPOCH, Value::Long(3));
        let attach = Attach {
            name: "r".into(),
            handle: 0,
            role: Role::Receiver,
            snd_settle_mode: SenderSettleMode::Unsettled,
            rcv_settle_mode: ReceiverSettleMode::First,
            source: None,
            target: None,
            unsettled: None,
            incomplete_unsettled: false,
            initial_delivery_count: None,
            max_message_size: None,
            offered_capabilities: None,
            desired_capabilities: Some(vec![GEOREPLICATION, RUNTIME_METRIC]),
            properties: Some(properties),
        };
        assert_eq!(epoch(&attach), Some(3));
        assert!(wants_runtime_metric(&attach));
        let plain = Attach {
            properties: None,
            desired_capabilities: None,
            ..attach
        };
        assert_eq!(epoch(&plain), None);
        assert!(!wants_runtime_metric(&plain));
    }
}
