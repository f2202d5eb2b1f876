//! [`C2dConfig`]: the limits and timings of the queues, with Azure IoT Hub's defaults and ranges.

use std::time::Duration;

/// Limits and timings of the cloud-to-device queues and of the feedback queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct C2dConfig {
    /// Most messages a device's queue holds (Enqueued and Invisible). Azure: 50.
    pub max_queue_depth: usize,
    /// Time to live of a message that names no expiry. Azure: 1 hour, 1 minute to 2 days.
    pub default_ttl: Duration,
    /// How often a message may be abandoned before it is dead-lettered. Azure: 10, 1 to 100.
    pub max_delivery_count: u32,
    /// How long a received message stays locked (Invisible). Azure: 1 minute.
    pub lock_duration: Duration,
    /// Largest message, counted as [`crate::OutgoingMessage::size`] does. Azure: 64 KiB.
    pub max_message_bytes: usize,
    /// How long a feedback record waits to be received. Azure: 1 hour, 1 minute to 2 days.
    pub feedback_ttl: Duration,
    /// How long a received feedback batch stays locked. Azure: 60 seconds, 5 to 300.
    pub feedback_lock_duration: Duration,
    /// How often a feedback record is handed out before it is dropped. Azure: 10, 1 to 100.
    pub feedback_max_delivery_count: u32,
    /// Most records in one feedback batch. Azure: 64.
    pub feedback_batch_size: usize,
}

/// The largest queue depth [`C2dConfig::validate`] accepts.
pub const MAX_QUEUE_DEPTH_LIMIT: usize = 1_000_000;
/// The largest message size limit [`C2dConfig::validate`] accepts (16 MiB).
pub const MAX_MESSAGE_BYTES_LIMIT: usize = 16 * 1024 * 1024;
/// The largest feedback batch [`C2dConfig::validate`] accepts.
pub const MAX_FEEDBACK_BATCH_LIMIT: usize = 10_000;

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const TWO_DAYS: Duration = Duration::from_secs(2 * 24 * 3600);

impl Default for C2dConfig {
    fn default() -> Self {
        C2dConfig {
            max_queue_depth: 50,
            default_ttl: HOUR,
            max_delivery_count: 10,
            lock_duration: MINUTE,
            max_message_bytes: 64 * 1024,
            feedback_ttl: HOUR,
            feedback_lock_duration: MINUTE,
            feedback_max_delivery_count: 10,
            feedback_batch_size: 64,
        }
    }
}

impl C2dConfig {
    /// Checks every value against its range; the message names the first that is out of range.
    ///
    /// Ranges: queue depth 1 to [`MAX_QUEUE_DEPTH_LIMIT`]; time to live and feedback time to live
    /// 1 minute to 2 days; delivery counts 1 to 100; lock duration 1 second to 1 hour; feedback
    /// lock duration 5 to 300 seconds; message size 1 byte to [`MAX_MESSAGE_BYTES_LIMIT`];
    /// feedback batch 1 to [`MAX_FEEDBACK_BATCH_LIMIT`].
    pub fn validate(&self) -> Result<(), String> {
        fn within<T: PartialOrd + std::fmt::Debug>(
            name: &str,
            value: T,
            min: T,
            max: T,
        ) -> Result<(), String> {
            if value < min || value > max {
                Err(format!(
                    "{name} is {value:?}; it must be between {min:?} and {max:?}"
                ))
            } else {
                Ok(())
            }
        }
        within(
            "max_queue_depth",
            self.max_queue_depth,
            1,
            MAX_QUEUE_DEPTH_LIMIT,
        )?;
        within("default_ttl", self.default_ttl, MINUTE, TWO_DAYS)?;
        within("max_delivery_count", self.max_delivery_count, 1, 100)?;
        within(
            "lock_duration",
            self.lock_duration,
            Duration::from_secs(1),
            HOUR,
        )?;
        within(
            "max_message_bytes",
            self.max_message_bytes,
            1,
            MAX_MESSAGE_BYTES_LIMIT,
        )?;
        within("feedback_ttl", self.feedback_ttl, MINUTE, TWO_DAYS)?;
        within(
            "feedback_lock_duration",
            self.feedback_lock_duration,
            Duration::from_secs(5),
            Duration::from_secs(300),
        )?;
        within(
            "feedback_max_delivery_count",
            self.feedback_max_delivery_count,
            1,
            100,
        )?;
        within(
            "feedback_batch_size",
            self.feedback_batch_size,
            1,
            MAX_FEEDBACK_BATCH_LIMIT,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_azure_and_valid() {
        let c = C2dConfig::default();
        assert_eq!(c.max_queue_depth, 50);
        assert_eq!(c.max_message_bytes, 65536);
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn out_of_range_values_are_named() {
        let cases: Vec<(&str, C2dConfig)> = vec![
            (
                "max_queue_depth",
                C2dConfig {
                    max_queue_depth: 0,
                    ..C2dConfig::default()
                },
            ),
            (
                "default_ttl",
                C2dConfig {
                    default_ttl: Duration::from_secs(59),
                    ..C2dConfig::default()
                },
            ),
            (
                "default_ttl",
                C2dConfig {
                    default_ttl: TWO_DAYS + Duration::from_secs(1),
                    ..C2dConfig::default()
                },
            ),
            (
                "max_delivery_count",
                C2dConfig {
                    max_delivery_count: 101,
                    ..C2dConfig::default()
                },
            ),
            (
                "lock_duration",
                C2dConfig {
                    lock_duration: Duration::ZERO,
                    ..C2dConfig::default()
                },
            ),
            (
                "max_message_bytes",
                C2dConfig {
                    max_message_bytes: 0,
                    ..C2dConfig::default()
                },
            ),
            (
                "feedback_lock_duration",
                C2dConfig {
                    feedback_lock_duration: Duration::from_secs(301),
                    ..C2dConfig::default()
                },
            ),
            (
                "feedback_max_delivery_count",
                C2dConfig {
                    feedback_max_delivery_count: 0,
                    ..C2dConfig::default()
                },
            ),
            (
                "feedback_batch_size",
                C2dConfig {
                    feedback_batch_size: 0,
                    ..C2dConfig::default()
                },
            ),
        ];
        for (name, c) in cases {
            let e = c.validate().expect_err(name);
            assert!(e.starts_with(name), "{e}");
        }
        let bigger = C2dConfig {
            max_queue_depth: 5000,
            max_delivery_count: 100,
            default_ttl: TWO_DAYS,
            ..C2dConfig::default()
        };
        assert_eq!(bigger.validate(), Ok(()));
    }
}
