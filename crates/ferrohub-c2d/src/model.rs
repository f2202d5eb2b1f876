//! The values that flow through a cloud-to-device queue: what the service sends
//! ([`OutgoingMessage`]), what sits in a device's queue ([`QueuedMessage`]) and what the service
//! hears back ([`FeedbackRecord`], [`FeedbackBatch`]).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use ferrohub_types::DeviceId;

use crate::error::C2dError;

/// Which outcomes of a message the service wants to hear about (`iothub-ack`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AckMode {
    /// No feedback (Azure's default).
    #[default]
    None,
    /// Feedback when the device completes the message.
    Positive,
    /// Feedback when the message is dead-lettered: expired, rejected, delivered too often or
    /// purged.
    Negative,
    /// Both.
    Full,
}

impl AckMode {
    /// Every mode, in Azure's order.
    pub const ALL: [AckMode; 4] = [
        AckMode::None,
        AckMode::Positive,
        AckMode::Negative,
        AckMode::Full,
    ];

    /// The wire form: `none`, `positive`, `negative` or `full`.
    pub const fn as_str(self) -> &'static str {
        match self {
            AckMode::None => "none",
            AckMode::Positive => "positive",
            AckMode::Negative => "negative",
            AckMode::Full => "full",
        }
    }

    /// Whether an outcome with this status produces a feedback record under this mode.
    pub const fn wants(self, status: FeedbackStatus) -> bool {
        match self {
            AckMode::None => false,
            AckMode::Positive => matches!(status, FeedbackStatus::Success),
            AckMode::Negative => !matches!(status, FeedbackStatus::Success),
            AckMode::Full => true,
        }
    }
}

impl fmt::Display for AckMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AckMode {
    type Err = C2dError;

    /// Parses the wire form, ignoring ASCII case.
    fn from_str(s: &str) -> Result<Self, C2dError> {
        Self::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                C2dError::InvalidArgument(format!(
                    "The value '{s}' of iothub-ack is not one of none, positive, negative, full."
                ))
            })
    }
}

/// A message the service sends to a device, as it arrived (system properties, application
/// properties, body).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OutgoingMessage {
    /// `message-id`; feedback refers to the message by it (the empty string when absent).
    pub message_id: Option<String>,
    /// `correlation-id`.
    pub correlation_id: Option<String>,
    /// `user-id`.
    pub user_id: Option<String>,
    /// `content-type`.
    pub content_type: Option<String>,
    /// `content-encoding`.
    pub content_encoding: Option<String>,
    /// `absolute-expiry-time`; when absent the queue's default time to live applies.
    pub expiry: Option<DateTime<Utc>>,
    /// `iothub-ack`.
    pub ack: AckMode,
    /// Application properties, in the order given; names may repeat.
    pub properties: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl OutgoingMessage {
    /// A message with this body and nothing else set.
    pub fn new(body: impl Into<Vec<u8>>) -> Self {
        OutgoingMessage {
            body: body.into(),
            ..Self::default()
        }
    }

    /// The size the queue's limit applies to, in bytes: the body, every application property's
    /// name and value, and the values of the string system properties (`message-id`,
    /// `correlation-id`, `user-id`, `content-type`, `content-encoding`), as Azure counts it.
    pub fn size(&self) -> usize {
        let system = [
            &self.message_id,
            &self.correlation_id,
            &self.user_id,
            &self.content_type,
            &self.content_encoding,
        ]
        .into_iter()
        .flatten()
        .map(String::len)
        .sum::<usize>();
        let properties = self
            .properties
            .iter()
            .map(|(k, v)| k.len().saturating_add(v.len()))
            .fold(0usize, usize::saturating_add);
        self.body
            .len()
            .saturating_add(system)
            .saturating_add(properties)
    }
}

/// A message in a device's queue.
///
/// It is *Enqueued* while `lock_token` is `None` or its lock has expired, and *Invisible* while
/// locked. Completed and dead-lettered messages leave the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedMessage {
    /// The device whose queue holds it.
    pub device_id: DeviceId,
    /// Its number in the device's queue: 1 for the device's first message, then increasing,
    /// never reused (it survives restarts and emptied queues; deleting the device starts over).
    pub sequence_number: u64,
    /// When it was sent.
    pub enqueued_time: DateTime<Utc>,
    /// When it expires: the message's own expiry or the send time plus the default time to live.
    pub expiry_time: DateTime<Utc>,
    /// How often it was abandoned.
    pub delivery_count: u32,
    /// How often it was locked and handed out; more than one on the message a receive returns
    /// means a redelivery (MQTT `DUP`).
    pub deliveries: u32,
    /// The lock's token while locked: a random GUID in its hyphenated lowercase form.
    pub lock_token: Option<String>,
    /// When the lock expires.
    pub locked_until: Option<DateTime<Utc>>,
    /// The message as sent.
    pub message: OutgoingMessage,
    /// The device's generation id at send time, for feedback.
    pub device_generation_id: String,
}

/// The outcome a feedback record reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FeedbackStatus {
    /// The device completed the message.
    Success,
    /// The message expired before it was completed.
    Expired,
    /// The device abandoned it as often as allowed.
    DeliveryCountExceeded,
    /// The device rejected it.
    Rejected,
    /// The service purged the device's queue.
    Purged,
}

impl FeedbackStatus {
    /// Every status.
    pub const ALL: [FeedbackStatus; 5] = [
        FeedbackStatus::Success,
        FeedbackStatus::Expired,
        FeedbackStatus::DeliveryCountExceeded,
        FeedbackStatus::Rejected,
        FeedbackStatus::Purged,
    ];

    /// Azure's string, as in the feedback JSON's `statusCode`.
    pub const fn as_str(self) -> &'static str {
        match self {
            FeedbackStatus::Success => "Success",
            FeedbackStatus::Expired => "Expired",
            FeedbackStatus::DeliveryCountExceeded => "DeliveryCountExceeded",
            FeedbackStatus::Rejected => "Rejected",
            FeedbackStatus::Purged => "Purged",
        }
    }

    /// Parses Azure's string (exact case).
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

impl fmt::Display for FeedbackStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One outcome of one message. Its serde form is one element of Azure's feedback JSON array.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FeedbackRecord {
    /// The message's `message-id`, or the empty string when it had none.
    pub original_message_id: String,
    /// The device the message was for.
    pub device_id: String,
    /// The device's generation id when the message was sent.
    pub device_generation_id: String,
    /// When the outcome happened.
    pub enqueued_time_utc: DateTime<Utc>,
    /// The outcome.
    pub status_code: FeedbackStatus,
    /// Text for people; Ferrohub writes the status's name.
    pub description: String,
}

/// Feedback records handed out together under one lock (one feedback message on the wire).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedbackBatch {
    /// Settles the batch: a random GUID in its hyphenated lowercase form.
    pub lock_token: String,
    /// When the batch was formed.
    pub enqueued_time: DateTime<Utc>,
    /// The records, oldest first; never empty.
    pub records: Vec<FeedbackRecord>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_mode_parses_any_case() {
        for m in AckMode::ALL {
            assert_eq!(m.as_str().parse::<AckMode>().ok(), Some(m));
            assert_eq!(m.as_str().to_uppercase().parse::<AckMode>().ok(), Some(m));
        }
        assert!("sometimes".parse::<AckMode>().is_err());
        assert_eq!(AckMode::default(), AckMode::None);
    }

    #[test]
    fn ack_mode_selects_outcomes() {
        use FeedbackStatus::*;
        assert!(FeedbackStatus::ALL.iter().all(|s| !AckMode::None.wants(*s)));
        assert!(AckMode::Positive.wants(Success));
        assert!(!AckMode::Positive.wants(Expired));
        assert!(!AckMode::Negative.wants(Success));
        for s in [Expired, DeliveryCountExceeded, Rejected, Purged] {
            assert!(AckMode::Negative.wants(s));
        }
        assert!(FeedbackStatus::ALL.iter().all(|s| AckMode::Full.wants(*s)));
    }

    #[test]
    fn size_counts_body_properties_and_system_values() {
        let mut m = OutgoingMessage::new(vec![0u8; 10]);
        assert_eq!(m.size(), 10);
        m.properties.push(("ab".into(), "cde".into()));
        m.message_id = Some("1234".into());
        m.content_type = Some("json".into());
        assert_eq!(m.size(), 10 + 5 + 4 + 4);
    }

    #[test]
    fn feedback_json_has_azure_names() {
        let r = FeedbackRecord {
            original_message_id: "m1".into(),
            device_id: "d1".into(),
            device_generation_id: "g".into(),
            enqueued_time_utc: DateTime::from_timestamp(1_438_100_688, 789_000_000)
                .expect("valid time"),
            status_code: FeedbackStatus::DeliveryCountExceeded,
            description: "DeliveryCountExceeded".into(),
        };
        let json = serde_json::to_value(&r).expect("serialize");
        assert_eq!(json["originalMessageId"], "m1");
        assert_eq!(json["deviceGenerationId"], "g");
        assert_eq!(json["statusCode"], "DeliveryCountExceeded");
        assert_eq!(json["enqueuedTimeUtc"], "2015-07-28T16:24:48.789Z");
        let back: FeedbackRecord = serde_json::from_value(json).expect("deserialize");
        assert_eq!(back, r);
        for s in FeedbackStatus::ALL {
            assert_eq!(FeedbackStatus::from_name(s.as_str()), Some(s));
        }
    }
}
