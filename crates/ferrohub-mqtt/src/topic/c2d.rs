//! Cloud-to-device topics, as the hub publishes them:
//! `devices/{deviceId}/messages/devicebound/{property bag}`.

use crate::topic::{PropertyBag, TopicError, TopicName};

/// Why a C2D topic cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum C2dTopicError {
    /// The device id is empty or contains `/`, which would change the topic's shape.
    #[error("device id cannot be placed in a topic")]
    InvalidDeviceId,
    /// The result is not a valid topic name (too long, or the id has a wildcard or U+0000).
    #[error("invalid C2D topic: {0}")]
    Topic(#[from] TopicError),
}

/// Builds the topic a C2D message is published on.
///
/// The `/` after `devicebound` is always written, even for an empty bag: the Node SDK drops
/// messages without it. The bag is encoded with [`PropertyBag::encode`]. Callers should include
/// `$.to` (`/devices/{id}/messages/devicebound`): the C# SDK fails on a topic without a property
/// segment. The device id is written as is, like the hub does.
pub fn c2d_topic(device_id: &str, properties: &PropertyBag) -> Result<TopicName, C2dTopicError> {
    if device_id.is_empty() || device_id.contains('/') {
        return Err(C2dTopicError::InvalidDeviceId);
    }
    let bag = properties.encode();
    let mut topic = String::with_capacity(36 + device_id.len() + bag.len());
    topic.push_str("devices/");
    topic.push_str(device_id);
    topic.push_str("/messages/devicebound/");
    topic.push_str(&bag);
    Ok(TopicName::new(topic)?)
}
