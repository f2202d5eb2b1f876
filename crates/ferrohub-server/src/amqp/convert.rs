//! Between AMQP messages and the hub's own types: the service's C2D messages, device telemetry,
//! C2D messages to devices, feedback batches, Event Hubs events, and errors.
//!
//! The rules are amqp-contract §2.3 (C2D as each SDK builds it), §2.7 (feedback), §3.6 (events)
//! and §4.3–4.4 (the device endpoint).

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use ferrohub_amqp::azure::errors::azure_error;
use ferrohub_amqp::azure::event::{EventInput, IotHubAnnotations};
use ferrohub_amqp::condition;
use ferrohub_amqp::message::{
    Annotations, ApplicationProperties, Body, Message, MessageId, Properties,
};
use ferrohub_amqp::performative::AmqpError;
use ferrohub_amqp::types::{Symbol, Value};
use ferrohub_c2d::{AckMode, FeedbackBatch, OutgoingMessage, QueuedMessage};
use ferrohub_log::Record;
use ferrohub_types::ErrorCode;

use crate::hub::HubError;
use crate::telemetry::DeviceMessage;

/// The content type of a feedback batch.
pub(crate) const FEEDBACK_CONTENT_TYPE: &str = "application/vnd.microsoft.iothub.feedback.json";

/// A message or correlation id as text: strings as they are, UUIDs in their usual form,
/// numbers in decimal, binary in hex.
pub(crate) fn id_text(id: &MessageId) -> String {
    match id {
        MessageId::String(s) => s.clone(),
        MessageId::Uuid(u) => uuid_text(u),
        MessageId::Ulong(n) => n.to_string(),
        MessageId::Binary(b) => b.iter().map(|x| format!("{x:02x}")).collect(),
    }
}

/// A UUID's text form.
pub(crate) fn uuid_text(u: &[u8; 16]) -> String {
    let h: String = u.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// The 16 bytes of a UUID in text form, if it is one.
pub(crate) fn uuid_bytes(s: &str) -> Option<[u8; 16]> {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 || s.len() != 36 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// An id as the SDKs send it back: UUID-shaped text as an AMQP `uuid`, the rest as a string
/// (what Node's service SDK does, amqp-contract §2.3).
pub(crate) fn id_value(text: &str) -> MessageId {
    match uuid_bytes(text) {
        Some(u) => MessageId::Uuid(u),
        None => MessageId::String(text.to_owned()),
    }
}

/// A simple AMQP value as a property string: text as is, numbers and booleans in their usual
/// form, timestamps as ms, binary in hex.
fn value_text(v: &Value) -> Option<String> {
    if let Some(s) = v.as_text() {
        return Some(s.to_owned());
    }
    match v {
        Value::Null => None,
        Value::Bool(b) => Some(b.to_string()),
        Value::Float(f) => Some(f.to_string()),
        Value::Double(f) => Some(f.to_string()),
        Value::Char(c) => Some(c.to_string()),
        Value::Timestamp(t) => Some(t.to_string()),
        Value::Uuid(u) => Some(uuid_text(u)),
        Value::Binary(b) => Some(b.iter().map(|x| format!("{x:02x}")).collect()),
        other => other.as_integer().map(|i| i.to_string()),
    }
}

/// The body of a message that carries bytes: its data sections joined, or an `amqp-value`
/// string or binary.
pub(crate) fn body_bytes(message: &Message) -> Bytes {
    match &message.body {
        Body::Data(sections) if sections.len() == 1 => sections[0].clone(),
        Body::Data(sections) => sections.concat().into(),
        Body::Value(Value::String(s)) => Bytes::copy_from_slice(s.as_bytes()),
        Body::Value(Value::Binary(b)) => b.clone(),
        _ => Bytes::new(),
    }
}

fn ms_to_time(ms: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms)
}

/// A cloud-to-device message sent by the service (amqp-contract §2.3): the device from
/// `properties.to` (`/devices/{id}/messages/devicebound`), the ack mode from the `iothub-ack`
/// application property, every other application property as the message's own.
pub(crate) fn service_c2d(message: &Message) -> Result<(String, OutgoingMessage), HubError> {
    let props = message.properties.clone().unwrap_or_default();
    let to = props
        .to
        .as_deref()
        .ok_or_else(|| HubError::invalid("The message has no 'to' property naming its device."))?;
    let device = c2d_destination(to)?;
    let mut ack = AckMode::None;
    let mut properties = Vec::new();
    if let Some(app) = &message.application_properties {
        for (k, v) in app.iter() {
            let Some(text) = value_text(v) else { continue };
            if k.eq_ignore_ascii_case("iothub-ack") {
                ack = text.parse().map_err(|_| {
                    HubError::invalid(format!(
                        "iothub-ack must be none, positive, negative or full, not {text:?}."
                    ))
                })?;
            } else {
                properties.push((k.to_owned(), text));
            }
        }
    }
    Ok((
        device,
        OutgoingMessage {
            message_id: props.message_id.as_ref().map(id_text),
            correlation_id: props.correlation_id.as_ref().map(id_text),
            user_id: props
                .user_id
                .as_ref()
                .map(|u| String::from_utf8_lossy(u).into_owned()),
            content_type: props.content_type.as_ref().map(|s| s.to_string()),
            content_encoding: props.content_encoding.as_ref().map(|s| s.to_string()),
            expiry: props.absolute_expiry_time.and_then(ms_to_time),
            ack,
            properties,
            body: body_bytes(message).to_vec(),
        },
    ))
}

/// The device of a C2D `to` address: `/devices/{id}/messages/devicebound` (the id may be
/// percent-encoded, as Node sends it). Module destinations are refused: Azure has no C2D to
/// modules in these SDKs.
fn c2d_destination(to: &str) -> Result<String, HubError> {
    use ferrohub_amqp::azure::address::Address;
    match Address::parse(to) {
        Address::DeviceC2d {
            device_id,
            module_id: None,
        } => Ok(device_id),
        Address::DeviceC2d {
            module_id: Some(_), ..
        } => Err(HubError::invalid(
            "Cloud-to-device messages to modules are not supported.",
        )),
        _ => Err(HubError::invalid(format!(
            "The 'to' property {to:?} is not /devices/{{id}}/messages/devicebound."
        ))),
    }
}

/// A telemetry message from a device's `/messages/events` link (amqp-contract §4.3): the
/// properties the device may set, its application properties, and its body.
pub(crate) fn telemetry(message: &Message) -> DeviceMessage {
    let mut system = Vec::new();
    if let Some(p) = &message.properties {
        let mut push = |name: &str, value: Option<String>| {
            if let Some(v) = value {
                system.push((name.to_owned(), v));
            }
        };
        push("message-id", p.message_id.as_ref().map(id_text));
        push("correlation-id", p.correlation_id.as_ref().map(id_text));
        push(
            "user-id",
            p.user_id
                .as_ref()
                .map(|u| String::from_utf8_lossy(u).into_owned()),
        );
        push("to", p.to.clone());
        push(
            "content-type",
            p.content_type.as_ref().map(|s| s.to_string()),
        );
        push(
            "content-encoding",
            p.content_encoding.as_ref().map(|s| s.to_string()),
        );
        push(
            "absolute-expiry-time",
            p.absolute_expiry_time
                .and_then(ms_to_time)
                .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true)),
        );
    }
    if let Some(a) = &message.message_annotations {
        for (k, v) in a.iter() {
            let Some(key) = k.as_symbol() else { continue };
            let name = match key.as_str() {
                "iothub-interface-id" => "iothub-interface-id",
                "dt-subject" => "dt-subject",
                _ => continue,
            };
            if let Some(text) = value_text(v) {
                system.push((name.to_owned(), text));
            }
        }
    }
    let application = message
        .application_properties
        .as_ref()
        .map(|app| {
            app.iter()
                .filter_map(|(k, v)| value_text(v).map(|t| (k.to_owned(), t)))
                .collect()
        })
        .unwrap_or_default();
    DeviceMessage {
        system,
        application,
        body: body_bytes(message),
    }
}

/// A queued C2D message as a device gets it (amqp-contract §4.4).
pub(crate) fn device_c2d(m: &QueuedMessage) -> Message {
    let msg = &m.message;
    let properties = Properties {
        message_id: msg.message_id.as_deref().map(id_value),
        to: Some(format!("/devices/{}/messages/devicebound", m.device_id)),
        correlation_id: msg.correlation_id.as_deref().map(id_value),
        user_id: msg
            .user_id
            .as_ref()
            .map(|u| Bytes::copy_from_slice(u.as_bytes())),
        absolute_expiry_time: Some(m.expiry_time.timestamp_millis()),
        content_type: msg.content_type.as_ref().map(|s| Symbol::from(s.clone())),
        content_encoding: msg
            .content_encoding
            .as_ref()
            .map(|s| Symbol::from(s.clone())),
        ..Properties::default()
    };
    let mut app = ApplicationProperties::new();
    app.insert("iothub-ack", msg.ack.as_str());
    for (k, v) in &msg.properties {
        app.insert(k.clone(), v.as_str());
    }
    let mut a = Annotations::new();
    if let Some(lock) = &m.lock_token {
        a.insert(Symbol::from_static("x-opt-lock-token"), lock.as_str());
    }
    a.insert(
        Symbol::from_static("x-opt-sequence-number"),
        Value::Ulong(m.sequence_number),
    );
    a.insert(
        Symbol::from_static("iothub-enqueuedtime"),
        Value::Timestamp(m.enqueued_time.timestamp_millis()),
    );
    a.insert(
        Symbol::from_static("iothub-deliverycount"),
        Value::Ubyte(u8::try_from(m.delivery_count).unwrap_or(u8::MAX)),
    );
    a.insert(
        Symbol::from_static("iothub-connection-device-id"),
        m.device_id.as_str(),
    );
    Message {
        message_annotations: Some(a),
        properties: Some(properties),
        application_properties: Some(app),
        body: Body::data(Bytes::from(msg.body.clone())),
        ..Message::default()
    }
}

/// A feedback batch as the service's receiver gets it (amqp-contract §2.7): a data section
/// with the JSON array of records, the feedback content type, the hub's name as user id.
pub(crate) fn feedback(batch: &FeedbackBatch, hub_name: &str, now: DateTime<Utc>) -> Message {
    let records: Vec<serde_json::Value> = batch
        .records
        .iter()
        .map(|r| {
            serde_json::json!({
                "originalMessageId": r.original_message_id,
                "enqueuedTimeUtc": r.enqueued_time_utc.to_rfc3339_opts(SecondsFormat::Millis, true),
                "statusCode": r.status_code.as_str(),
                "description": r.description,
                "deviceId": r.device_id,
                "deviceGenerationId": r.device_generation_id,
            })
        })
        .collect();
    let body = serde_json::to_vec(&records).unwrap_or_default();
    let mut a = Annotations::new();
    a.insert(
        Symbol::from_static("iothub-enqueuedtime"),
        Value::Timestamp(now.timestamp_millis()),
    );
    Message {
        message_annotations: Some(a),
        properties: Some(Properties {
            message_id: Some(MessageId::String(crate::random_uuid())),
            user_id: Some(Bytes::copy_from_slice(hub_name.as_bytes())),
            content_type: Some(Symbol::from_static(FEEDBACK_CONTENT_TYPE)),
            ..Properties::default()
        }),
        body: Body::data(body),
        ..Message::default()
    }
}

/// An event of the log as an Event Hubs consumer gets it (amqp-contract §3.6): the hub's
/// annotations typed, the device's properties in the properties section, its application
/// properties unchanged, the body as one data section.
pub(crate) fn event(record: &Record) -> EventInput {
    let mut iothub = IotHubAnnotations::default();
    let mut properties = Properties::default();
    let mut has_properties = false;
    let mut app = ApplicationProperties::new();
    for (k, v) in &record.system_properties {
        match k.as_str() {
            "iothub-connection-device-id" => iothub.connection_device_id = Some(v.clone()),
            "iothub-connection-module-id" => iothub.connection_module_id = Some(v.clone()),
            "iothub-connection-auth-method" => iothub.connection_auth_method = Some(v.clone()),
            "iothub-connection-auth-generation-id" => {
                iothub.connection_auth_generation_id = Some(v.clone());
            }
            "iothub-enqueuedtime" => iothub.enqueued_time = v.parse().ok(),
            "iothub-message-source" => iothub.message_source = Some(v.clone()),
            "dt-dataschema" => iothub.dt_dataschema = Some(v.clone()),
            "dt-subject" => iothub.dt_subject = Some(v.clone()),
            "iothub-interface-id" => iothub.interface_name = Some(v.clone()),
            "message-id" => {
                properties.message_id = Some(id_value(v));
                has_properties = true;
            }
            "correlation-id" => {
                properties.correlation_id = Some(id_value(v));
                has_properties = true;
            }
            "user-id" => {
                properties.user_id = Some(Bytes::copy_from_slice(v.as_bytes()));
                has_properties = true;
            }
            "to" => {
                properties.to = Some(v.clone());
                has_properties = true;
            }
            "content-type" => {
                properties.content_type = Some(Symbol::from(v.clone()));
                has_properties = true;
            }
            "content-encoding" => {
                properties.content_encoding = Some(Symbol::from(v.clone()));
                has_properties = true;
            }
            "absolute-expiry-time" => {
                if let Ok(t) = DateTime::parse_from_rfc3339(v) {
                    properties.absolute_expiry_time = Some(t.timestamp_millis());
                    has_properties = true;
                }
            }
            "iothub-creation-time-utc" => app.insert(k.clone(), v.as_str()),
            _ => {}
        }
    }
    for (k, v) in &record.application_properties {
        app.insert(k.clone(), v.as_str());
    }
    EventInput {
        sequence_number: i64::try_from(record.sequence_number).unwrap_or(i64::MAX),
        offset: record.offset.to_string(),
        enqueued_time: record.enqueued_ms,
        partition_key: None,
        iothub,
        extra_annotations: Vec::new(),
        properties: has_properties.then_some(properties),
        application_properties: (!app.is_empty()).then_some(app),
        body: Bytes::copy_from_slice(&record.body),
    }
}

/// The AMQP error a hub failure is reported with (amqp-contract §2.4): the condition the SDKs
/// map, and Azure's JSON description with a fresh tracking id.
pub(crate) fn amqp_error(e: &HubError, now: DateTime<Utc>) -> AmqpError {
    use ferrohub_amqp::azure::errors as az;
    let condition = match e.code {
        ErrorCode::DeviceNotFound | ErrorCode::ModuleNotFound | ErrorCode::GenericNotFound => {
            condition::NOT_FOUND
        }
        ErrorCode::DeviceMaximumQueueDepthExceeded => condition::RESOURCE_LIMIT_EXCEEDED,
        ErrorCode::MessageTooLarge => condition::MESSAGE_SIZE_EXCEEDED,
        ErrorCode::ThrottlingException => az::DEVICE_CONTAINER_THROTTLED,
        ErrorCode::IotHubQuotaExceeded => az::QUOTA_EXCEEDED,
        ErrorCode::IotHubUnauthorizedAccess | ErrorCode::IotHubUnauthorized => {
            condition::UNAUTHORIZED_ACCESS
        }
        ErrorCode::ArgumentInvalid => az::ARGUMENT_ERROR,
        ErrorCode::PreconditionFailed | ErrorCode::DeviceMessageLockLost => az::PRECONDITION_FAILED,
        ErrorCode::ServiceUnavailable | ErrorCode::GatewayTimeout => az::TIMEOUT,
        _ => condition::INTERNAL_ERROR,
    };
    azure_error(
        condition,
        e.code.number(),
        &crate::random_hex(16),
        &e.message,
        now.timestamp_millis(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_round_trip_as_text() {
        let text = "0f8fad5b-d9cb-469f-a165-70867728950e";
        let bytes = uuid_bytes(text).expect("uuid");
        assert_eq!(uuid_text(&bytes), text);
        assert_eq!(id_value(text), MessageId::Uuid(bytes));
        assert_eq!(id_value("m1"), MessageId::String("m1".into()));
        assert!(uuid_bytes("0f8fad5bd9cb469fa16570867728950e").is_none());
    }

    #[test]
    fn service_messages_as_the_sdks_send_them() {
        // Node: the id percent-encoded in `to`, ack as an application property.
        let mut app = ApplicationProperties::new();
        app.insert("iothub-ack", "full");
        app.insert("k", "v");
        app.insert("n", Value::Int(3));
        let msg = Message {
            properties: Some(Properties {
                to: Some("/devices/a%20b/messages/devicebound".into()),
                message_id: Some(MessageId::Uuid([1; 16])),
                correlation_id: Some(MessageId::String("c".into())),
                content_type: Some(Symbol::from_static("text/plain")),
                ..Properties::default()
            }),
            application_properties: Some(app),
            body: Body::data(Bytes::from_static(b"hi")),
            ..Message::default()
        };
        let (device, out) = service_c2d(&msg).expect("valid");
        assert_eq!(device, "a b");
        assert_eq!(out.ack, AckMode::Full);
        assert_eq!(
            out.message_id.as_deref(),
            Some("01010101-0101-0101-0101-010101010101")
        );
        assert_eq!(out.correlation_id.as_deref(), Some("c"));
        assert_eq!(out.content_type.as_deref(), Some("text/plain"));
        assert_eq!(
            out.properties,
            vec![
                ("k".to_owned(), "v".to_owned()),
                ("n".to_owned(), "3".to_owned())
            ]
        );
        assert_eq!(out.body, b"hi");
        // Modules and other addresses are refused.
        let mut to_module = msg.clone();
        to_module.properties.as_mut().expect("props").to =
            Some("/devices/d/modules/m/messages/devicebound".into());
        assert!(service_c2d(&to_module).is_err());
        let mut no_to = msg;
        no_to.properties.as_mut().expect("props").to = None;
        assert!(service_c2d(&no_to).is_err());
    }

    #[test]
    fn events_keep_the_device_properties_and_type_the_hub_ones() {
        let record = Record {
            sequence_number: 7,
            offset: 4096,
            enqueued_ms: 1_603_288_810_824,
            system_properties: vec![
                ("message-id".into(), "m1".into()),
                ("content-type".into(), "application/json".into()),
                ("iothub-connection-device-id".into(), "d1".into()),
                ("iothub-enqueuedtime".into(), "1603288810715".into()),
                ("iothub-message-source".into(), "Telemetry".into()),
            ],
            application_properties: vec![("temp".into(), "21".into())],
            body: b"{}".to_vec(),
        };
        let e = event(&record);
        assert_eq!(e.sequence_number, 7);
        assert_eq!(e.offset, "4096");
        assert_eq!(e.iothub.connection_device_id.as_deref(), Some("d1"));
        assert_eq!(e.iothub.enqueued_time, Some(1_603_288_810_715));
        let p = e.properties.expect("properties");
        assert_eq!(p.message_id, Some(MessageId::String("m1".into())));
        assert_eq!(
            p.content_type,
            Some(Symbol::from_static("application/json"))
        );
        assert_eq!(
            e.application_properties.expect("app").get("temp"),
            Some(&Value::from("21"))
        );
    }
}
