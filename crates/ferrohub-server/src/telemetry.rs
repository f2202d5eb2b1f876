//! Device-to-cloud messages on their way into the event log: the one path every endpoint
//! (MQTT, HTTPS, AMQP) appends through.
//!
//! The hub stamps its own system properties (who sent it, how they authenticated, when it was
//! enqueued) and never takes them from the device; a device only sets the properties Azure lets
//! devices set (message id, correlation id, content type, …).

use std::borrow::Cow;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use ferrohub_log::{Position, RecordIn};
use ferrohub_types::{DeviceId, ErrorCode, ModuleId};

use crate::eventlog::BoxFuture;
use crate::hub::HubError;

/// Azure's limit on one device-to-cloud message: body, system property values and application
/// property names and values together.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// The system properties a device may set (Azure's names, as consumers see them).
pub const DEVICE_SYSTEM_PROPERTIES: [&str; 10] = [
    "message-id",
    "correlation-id",
    "user-id",
    "to",
    "content-type",
    "content-encoding",
    "absolute-expiry-time",
    "iothub-creation-time-utc",
    "dt-subject",
    "iothub-interface-id",
];

/// How a device proved who it is; goes into `iothub-connection-auth-method`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthScope {
    /// A token signed with the device's own key.
    Device,
    /// A token signed with the module's own key.
    Module,
    /// A token signed with a shared access policy's key (a token service or gateway).
    Hub,
}

/// The authenticated sender of a message.
#[derive(Debug, Clone)]
pub struct Origin {
    /// The device.
    pub device_id: DeviceId,
    /// The module, when a module sent it.
    pub module_id: Option<ModuleId>,
    /// How it authenticated.
    pub auth_scope: AuthScope,
    /// The identity's generation id.
    pub generation_id: String,
    /// The Plug and Play model id given at connect, if any.
    pub model_id: Option<String>,
}

/// A message as a device sent it.
#[derive(Debug, Clone, Default)]
pub struct DeviceMessage {
    /// Device-settable system properties (names from [`DEVICE_SYSTEM_PROPERTIES`]); others are
    /// dropped.
    pub system: Vec<(String, String)>,
    /// Application properties, passed through unchanged.
    pub application: Vec<(String, String)>,
    /// The body.
    pub body: Bytes,
}

impl DeviceMessage {
    /// The size Azure counts against [`MAX_MESSAGE_BYTES`].
    pub fn size(&self) -> usize {
        self.body.len()
            + self.system.iter().map(|(_, v)| v.len()).sum::<usize>()
            + self
                .application
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
    }
}

/// Builds the log record for `msg`, stamping the hub's properties.
pub fn record(origin: &Origin, msg: DeviceMessage, now: DateTime<Utc>) -> RecordIn {
    let enqueued_ms = now.timestamp_millis();
    let mut system: Vec<(Cow<'static, str>, Cow<'static, str>)> =
        Vec::with_capacity(msg.system.len() + 7);
    system.extend(
        msg.system
            .into_iter()
            .filter(|(k, _)| DEVICE_SYSTEM_PROPERTIES.contains(&k.as_str()))
            .map(|(k, v)| (Cow::Owned(k), Cow::Owned(v))),
    );
    system.push((
        "iothub-connection-device-id".into(),
        origin.device_id.to_string().into(),
    ));
    if let Some(m) = &origin.module_id {
        system.push(("iothub-connection-module-id".into(), m.to_string().into()));
    }
    system.push((
        "iothub-connection-auth-generation-id".into(),
        origin.generation_id.clone().into(),
    ));
    let auth_method = match origin.auth_scope {
        AuthScope::Device => {
            r#"{"scope":"device","type":"sas","issuer":"iothub","acceptingIpFilterRule":null}"#
        }
        AuthScope::Module => {
            r#"{"scope":"module","type":"sas","issuer":"iothub","acceptingIpFilterRule":null}"#
        }
        AuthScope::Hub => {
            r#"{"scope":"hub","type":"sas","issuer":"iothub","acceptingIpFilterRule":null}"#
        }
    };
    system.push(("iothub-connection-auth-method".into(), auth_method.into()));
    system.push(("iothub-enqueuedtime".into(), enqueued_ms.to_string().into()));
    system.push(("iothub-message-source".into(), "Telemetry".into()));
    if let Some(model) = &origin.model_id {
        system.push(("dt-dataschema".into(), model.clone().into()));
    }
    RecordIn {
        enqueued_ms,
        system_properties: system,
        application_properties: msg.application,
        body: msg.body.to_vec(),
    }
}

impl crate::hub::Hub {
    /// Submits `messages` from `origin` to the device's partition and returns a future that
    /// resolves once they are durable. Submission happens now, so a device's messages keep the
    /// order of the calls. Each message must be within [`MAX_MESSAGE_BYTES`], and the batch too.
    pub fn submit(
        &self,
        origin: &Origin,
        messages: Vec<DeviceMessage>,
    ) -> Result<BoxFuture<'static, Result<Vec<Position>, HubError>>, HubError> {
        let total: usize = messages.iter().map(DeviceMessage::size).sum();
        if total > MAX_MESSAGE_BYTES {
            return Err(HubError::new(
                ErrorCode::MessageTooLarge,
                format!("The message is {total} bytes; the limit is {MAX_MESSAGE_BYTES}."),
            ));
        }
        let now = self.now();
        let records: Vec<RecordIn> = messages
            .into_iter()
            .map(|m| record(origin, m, now))
            .collect();
        let count = records.len() as u64;
        let partition = self.events.partition_for(origin.device_id.as_str());
        let append = self.events.append(partition, records);
        self.touch(&(origin.device_id.clone(), origin.module_id.clone()), now);
        Ok(Box::pin(async move {
            let positions = append
                .await
                .map_err(|e| HubError::unavailable("Appending to the event log", &e))?;
            metrics::counter!("ferrohub_d2c_messages_total").increment(count);
            Ok(positions)
        }))
    }

    /// [`Hub::submit`], then waits until the messages are durable.
    pub async fn ingest(
        &self,
        origin: &Origin,
        messages: Vec<DeviceMessage>,
    ) -> Result<Vec<Position>, HubError> {
        self.submit(origin, messages)?.await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_properties_are_stamped_and_device_ones_filtered() {
        let origin = Origin {
            device_id: DeviceId::new("d1").expect("id"),
            module_id: None,
            auth_scope: AuthScope::Device,
            generation_id: "637388855582764406".into(),
            model_id: Some("dtmi:com:example:Thermostat;1".into()),
        };
        let msg = DeviceMessage {
            system: vec![
                ("message-id".into(), "m1".into()),
                ("iothub-connection-device-id".into(), "spoofed".into()),
            ],
            application: vec![("iothub-connection-device-id".into(), "app".into())],
            body: Bytes::from_static(b"{}"),
        };
        let now = DateTime::from_timestamp_millis(1_603_288_810_715).expect("time");
        let r = record(&origin, msg, now);
        let get = |k: &str| {
            r.system_properties
                .iter()
                .filter(|(n, _)| n == k)
                .map(|(_, v)| v.as_ref())
                .collect::<Vec<_>>()
        };
        assert_eq!(get("iothub-connection-device-id"), vec!["d1"]);
        assert_eq!(get("message-id"), vec!["m1"]);
        assert_eq!(get("iothub-enqueuedtime"), vec!["1603288810715"]);
        assert_eq!(get("iothub-message-source"), vec!["Telemetry"]);
        assert_eq!(get("dt-dataschema"), vec!["dtmi:com:example:Thermostat;1"]);
        assert_eq!(
            get("iothub-connection-auth-method"),
            vec![
                r#"{"scope":"device","type":"sas","issuer":"iothub","acceptingIpFilterRule":null}"#
            ]
        );
        assert!(get("iothub-connection-module-id").is_empty());
        assert_eq!(r.enqueued_ms, 1_603_288_810_715);
        assert_eq!(
            r.application_properties,
            vec![("iothub-connection-device-id".to_owned(), "app".to_owned())],
            "application properties are the device's own namespace"
        );
    }
}
