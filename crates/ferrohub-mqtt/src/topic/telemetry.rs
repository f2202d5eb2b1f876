//! Device-to-cloud telemetry topics:
//! `devices/{deviceId}[/modules/{moduleId}]/messages/events/[{property bag}][/]`.

use crate::topic::{PropertyBag, PropertyBagError};

/// Why a topic is not a telemetry topic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryTopicError {
    /// The topic does not have the telemetry shape (or has an empty device or module id). Likely
    /// cause: a publish to a topic Azure IoT Hub does not support.
    #[error("not a telemetry topic")]
    NotTelemetry,
    /// The topic has the telemetry shape but its property bag cannot be decoded.
    #[error("invalid telemetry property bag: {0}")]
    Properties(#[from] PropertyBagError),
}

/// A parsed telemetry topic. The ids are not percent-decoded: SDKs send them as they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryTopic<'a> {
    /// The device id from the topic (the caller checks it against the connection's identity).
    pub device_id: &'a str,
    /// The module id, for `devices/{d}/modules/{m}/messages/events/…`.
    pub module_id: Option<&'a str>,
    /// The decoded property bag.
    pub properties: PropertyBag,
}

impl<'a> TelemetryTopic<'a> {
    /// Parses a telemetry topic.
    ///
    /// Tolerates what the SDKs send: an empty bag, a missing `/` after `events`, and one trailing
    /// `/` after a non-empty bag (C#). Keys may arrive as `%24.mid`; `+` is not a space.
    pub fn parse(topic: &'a str) -> Result<Self, TelemetryTopicError> {
        let not = || TelemetryTopicError::NotTelemetry;
        let rest = topic.strip_prefix("devices/").ok_or_else(not)?;
        let (device_id, rest) = rest.split_once('/').ok_or_else(not)?;
        let (module_id, rest) = match rest.strip_prefix("modules/") {
            Some(rest) => {
                let (module_id, rest) = rest.split_once('/').ok_or_else(not)?;
                (Some(module_id), rest)
            }
            None => (None, rest),
        };
        if device_id.is_empty() || module_id.is_some_and(str::is_empty) {
            return Err(not());
        }
        let bag = match rest.strip_prefix("messages/events") {
            Some("") => "",
            Some(tail) => tail.strip_prefix('/').ok_or_else(not)?,
            None => return Err(not()),
        };
        let bag = bag.strip_suffix('/').unwrap_or(bag);
        Ok(Self {
            device_id,
            module_id,
            properties: PropertyBag::parse(bag)?,
        })
    }
}
