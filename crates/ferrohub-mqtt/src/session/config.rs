//! Limits and timeouts of one MQTT session, with the defaults Azure IoT Hub uses where it
//! documents one.

use std::time::Duration;

use crate::topic::MAX_TOPIC_LEN;

/// Azure IoT Hub's device-to-cloud message limit: 256 KB of payload and properties
/// (azure-contract §4.7, §6.1).
pub const MAX_TELEMETRY_SIZE: usize = 256 * 1024;

/// Default [`SessionConfig::max_packet_size`]: a 256 KiB payload plus the longest topic the wire
/// format can carry (2-byte length + 65535 bytes) and a packet identifier.
pub const DEFAULT_MAX_PACKET_SIZE: usize = MAX_TELEMETRY_SIZE + 2 + MAX_TOPIC_LEN + 2;

/// Default [`SessionConfig::max_keep_alive`]: Azure closes an idle connection after 1.5 × the
/// client's keep-alive, but never waits longer than 1767 s (azure-contract §4.3).
pub const DEFAULT_MAX_KEEP_ALIVE: Duration = Duration::from_secs(1767);

/// Default [`SessionConfig::connect_timeout`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Default [`SessionConfig::max_inflight_telemetry`].
pub const DEFAULT_MAX_INFLIGHT_TELEMETRY: usize = 64;

/// Default [`SessionConfig::max_subscriptions`]: Azure allows 5 subscriptions per device
/// (azure-contract §4.5). A device needs at most 4 (C2D, methods, twin responses, desired
/// properties); a module may add both input filters.
pub const DEFAULT_MAX_SUBSCRIPTIONS: usize = 5;

/// Limits and timeouts of one [`Session`](super::Session).
///
/// Odd values (zero timeouts, `Duration::MAX`) give well-defined behaviour and never a panic;
/// rejecting them is the job of the server's configuration layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// The largest remaining length the driver accepts from [`decode`](crate::codec::decode).
    /// The session does not use it itself; it lives here so the driver has one place to read
    /// every per-connection limit from.
    pub max_packet_size: usize,
    /// The longest a connected client may stay silent: the idle timeout is 1.5 × the client's
    /// keep-alive, capped at this, and a keep-alive of 0 (which MQTT calls "disabled") gets this
    /// value (azure-contract §4.3). Zero closes an idle connection at the first timeout.
    pub max_keep_alive: Duration,
    /// How long a new connection may take to send CONNECT [MQTT-3.1.0-1 only says it must be
    /// first; the bound is ours]. Nothing is sent back when it expires.
    pub connect_timeout: Duration,
    /// How many QoS 1 telemetry messages may wait for durability at once. When that many are
    /// waiting, [`Session::wants_read`](super::Session::wants_read) turns false until one is
    /// acknowledged, and the keep-alive is suspended meanwhile (the silence is the hub's doing,
    /// not the client's). 0 is treated as 1.
    pub max_inflight_telemetry: usize,
    /// The most subscriptions one session may hold; further filters are refused with 0x80.
    pub max_subscriptions: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            max_packet_size: DEFAULT_MAX_PACKET_SIZE,
            max_keep_alive: DEFAULT_MAX_KEEP_ALIVE,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_inflight_telemetry: DEFAULT_MAX_INFLIGHT_TELEMETRY,
            max_subscriptions: DEFAULT_MAX_SUBSCRIPTIONS,
        }
    }
}

/// The idle timeout for a client keep-alive of `keep_alive` seconds (azure-contract §4.3):
/// 1.5 × the keep-alive, capped at `max`; `max` when the keep-alive is 0.
pub(crate) fn idle_timeout(keep_alive: u16, max: Duration) -> Duration {
    if keep_alive == 0 {
        return max;
    }
    // 65535 × 1500 ms fits easily in a u64.
    Duration::from_millis(u64::from(keep_alive) * 1500).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_timeout_is_one_and_a_half_keep_alives_capped() {
        let max = DEFAULT_MAX_KEEP_ALIVE;
        assert_eq!(idle_timeout(60, max), Duration::from_secs(90));
        assert_eq!(idle_timeout(1, max), Duration::from_millis(1500));
        assert_eq!(idle_timeout(1177, max), Duration::from_millis(1_765_500));
        assert_eq!(idle_timeout(1178, max), max);
        assert_eq!(idle_timeout(u16::MAX, max), max);
        assert_eq!(idle_timeout(0, max), max);
        assert_eq!(idle_timeout(0, Duration::MAX), Duration::MAX);
    }

    #[test]
    fn default_packet_size_fits_a_full_telemetry_message() {
        assert_eq!(DEFAULT_MAX_PACKET_SIZE, 262_144 + 65_539);
    }
}
